"""Batch inference on Dask: :func:`predict` over a Dask array of padded sequences or a Dask bag
(or a list) of ragged sequences, on any Dask scheduler (``pip install fastrnn[dask]``).

The model travels as the bytes of its file (the safe format of :func:`fastrnn.load_model`,
never a pickle of the model) in one key of the task graph: each worker receives it once and
loads it once per process (a cache keyed by the bytes' SHA-256), however many chunks it runs.
Each task runs the engine on ``threads`` threads (:func:`fastrnn.set_num_threads`), 1 by
default: Dask already runs one task per core by default, and more engine threads per task would
oversubscribe the cores. With fewer Dask threads than cores on a machine, pass
``threads = cores // (workers * threads_per_worker)``.

Example::

    import dask.array as da, fastrnn, fastrnn.dask
    X = da.from_zarr("sensors.zarr")                 # (n, T, features), chunked by rows
    L = da.from_zarr("lengths.zarr")
    out = fastrnn.dask.predict(model, X, L)          # lazy: a Dask array (n, ...)
    out.to_zarr("scores.zarr")                       # any scheduler: local, distributed, ...
"""
import hashlib
import threading

import numpy as np

from ._validation import check_positive_int
from .distributed import model_from_bytes, model_to_bytes

_lock = threading.Lock()
_models = {}            # SHA-256 of a model's bytes -> the model loaded in this process
_threads = {"active": 0, "saved": None}


def _model(payload):
    """The model of ``payload`` (digest, bytes), loaded once per process."""
    digest, data = payload
    with _lock:
        model = _models.get(digest)
        if model is None:
            model = _models[digest] = model_from_bytes(data)
        return model


class _EngineThreads:
    """Run with the engine on ``n`` threads; the process's setting comes back when the last
    task running here ends (tasks of one call run in several threads of a process)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        from .engine.runtime import get_num_threads, set_num_threads

        with _lock:
            if _threads["active"] == 0:
                _threads["saved"] = get_num_threads()
                set_num_threads(self.n)
            _threads["active"] += 1

    def __exit__(self, *exc):
        from .engine.runtime import set_num_threads

        with _lock:
            _threads["active"] -= 1
            if _threads["active"] == 0:
                set_num_threads(_threads["saved"])


def _predict_block(payload, x, lengths, batch_size, padding, threads):
    with _EngineThreads(threads):
        return _model(payload).predict(x, lengths, batch_size=batch_size, padding=padding)


def _predict_partition(sequences, payload, batch_size, threads):
    sequences = list(sequences)
    if not sequences:
        return []
    with _EngineThreads(threads):
        out = _model(payload).predict(sequences, batch_size=batch_size)
    if out.ndim == 3:       # sequence outputs: each sequence's own steps
        return [out[i, :len(s)] for i, s in enumerate(sequences)]
    return list(out)


def predict(model, X, lengths=None, *, batch_size=256, padding="post", threads=1,
            partition_size=None):
    """``model.predict`` over data too large for one process, as a lazy Dask collection.

    Parameters
    ----------
    model : Sequential
        A stateless model (a stateful one carries states from batch to batch).
    X : dask.array.Array, dask.bag.Bag or list
        A Dask array ``(n, timesteps, ...)`` of padded sequences, chunked along the first
        (batch) axis only; or a bag or list of ragged sequences (each ``(T_i,)`` token ids or
        ``(T_i, features)``).
    lengths : dask.array.Array or array_like of int, optional
        With a Dask array ``X``: each sequence's valid steps (rechunked to ``X``'s rows).
    batch_size : int
        Sequences a task runs at once (as ``model.predict``'s).
    padding : {"post", "pre"}
        With a Dask array ``X``: as ``model.predict``'s.
    threads : int
        Engine threads of each task (see the module).
    partition_size : int, optional
        With a list ``X``: sequences per partition of the bag made from it (default
        ``batch_size``).

    Returns
    -------
    dask.array.Array or dask.bag.Bag
        For a Dask array, the Dask array ``(n, ...)`` that ``model.predict(X, lengths)`` returns
        on the whole data (chunked as ``X``); for ragged sequences, a bag with one output per
        sequence: ``model.predict(sequences)[i]``, trimmed to the sequence's own steps for
        sequence outputs. Call ``.compute()`` (or store it) on any scheduler.

    Raises
    ------
    TypeError
        If ``X`` is not one of those, or ``lengths`` comes with ragged sequences.
    ValueError
        If ``X`` is chunked along an axis other than the first, ``lengths`` does not have one
        value per row, or the model is stateful.
    """
    import dask
    import dask.array as da
    import dask.bag as db

    from .models.sequential import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastrnn.Sequential, got {type(model).__name__}")
    if model.stateful:
        raise ValueError("model is stateful: its outputs depend on the order of the batches; "
                         "predict with it in one process")
    batch_size = check_positive_int("batch_size", batch_size)
    threads = check_positive_int("threads", threads)
    data = model_to_bytes(model)
    payload = dask.delayed((hashlib.sha256(data).hexdigest(), data), pure=True,
                           traverse=False)
    if isinstance(X, da.Array):
        if X.ndim < 2:
            raise ValueError(f"X must have shape (n, timesteps, ...), got {X.shape}")
        if any(len(c) > 1 for c in X.chunks[1:]):
            raise ValueError(f"X must be chunked along its first (batch) axis only, got chunks "
                             f"{tuple(len(c) for c in X.chunks)} along its axes; rechunk it: "
                             f"X.rechunk({{{', '.join(f'{a}: -1' for a in range(1, X.ndim))}}})")
        if lengths is not None:
            lengths = da.asarray(lengths)
            if lengths.shape != X.shape[:1]:
                raise ValueError(f"lengths must have shape ({X.shape[0]},), one per row of X, "
                                 f"got {lengths.shape}")
            lengths = lengths.rechunk((X.chunks[0],))
        # the output's shape per row, from a one-row probe (no data read)
        probe = model.predict(np.zeros((1,) + X.shape[1:], X.dtype),
                              None if lengths is None else np.array([X.shape[1]]),
                              padding=padding)
        blocks = []
        xs = X.to_delayed().ravel()
        ls = [None] * len(xs) if lengths is None else lengths.to_delayed().ravel()
        predict_block = dask.delayed(_predict_block, pure=True)
        for rows, xb, lb in zip(X.chunks[0], xs, ls):
            blocks.append(da.from_delayed(
                predict_block(payload, xb, lb, batch_size, padding, threads),
                (rows,) + probe.shape[1:], probe.dtype))
        return da.concatenate(blocks, axis=0)
    if lengths is not None:
        raise TypeError("lengths is for a Dask array X; ragged sequences carry their own")
    if isinstance(X, list):
        X = db.from_sequence(X, partition_size=check_positive_int(
            "partition_size", batch_size if partition_size is None else partition_size))
    if not isinstance(X, db.Bag):
        raise TypeError(f"X must be a dask.array.Array, a dask.bag.Bag or a list of sequences, "
                        f"got {type(X).__name__}")
    return X.map_partitions(_predict_partition, payload, batch_size, threads)

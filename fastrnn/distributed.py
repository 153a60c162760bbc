"""Data-parallel training on MPI (mpi4py): every rank trains a copy of the model on its shard of
the data, and the gradients are averaged across ranks at every step.

Run a script under ``mpirun -n P python -m mpi4py train.py`` (or Slurm's ``srun``; ``-m mpi4py``
makes an exception on one rank abort the job instead of leaving the others waiting); in it, build the model
the same way on every rank and call :func:`fit` instead of ``model.fit``::

    import fastrnn, fastrnn.distributed as dist
    model = fastrnn.Sequential([fastrnn.LSTM(3, 32), fastrnn.Dense(32, 1)])
    dist.fit(model, X, y, loss="mse", optimizer=fastrnn.optim.Adam(1e-3), epochs=10,
             batch_size=32, callbacks=[fastrnn.callbacks.ModelCheckpoint("ckpt.npz")])

What :func:`fit` does (needs ``pip install fastrnn[mpi]``: mpi4py and an MPI library):

- rank 0's model (weights, optimizer state, epochs trained, dropout generators, loss, classes)
  is broadcast to every rank first, as the bytes of a model file (the safe format of
  :func:`fastrnn.load_model`, never a pickle), so a checkpoint loaded on rank 0 alone resumes
  the whole job;
- arrays ``X``, ``y`` (and ``lengths``) given whole to every rank are sharded: rank ``r`` trains
  on rows ``r::P`` (the last ``n % P`` rows are left out, with a warning, so that every rank
  has as many rows and batches); an iterable of batches is the rank's own data, read in
  lockstep (an epoch ends for all ranks when one rank's batches run out);
- after each backward pass the gradients are averaged with ``Allreduce``, one call per bucket
  of at most ``bucket_bytes`` (all the gradients flattened into one contiguous buffer per
  bucket, not one call per parameter), weighted by the number of loss terms of each rank's
  batch, so that a step equals the step of one process on the ranks' batches concatenated (the
  mean of per-rank means would equal it only for equal batches of equal valid steps);
- every rank then applies the same averaged gradients, so weights and optimizer state stay
  identical on every rank; :func:`check_in_sync` verifies it (and :func:`fit` calls it at the
  end);
- :class:`~fastrnn.callbacks.ModelCheckpoint` callbacks run on rank 0 only, the progress bar
  too; the epoch's logs (training loss, metrics, validation scores) are averaged across ranks
  before the callbacks see them, so early stopping decides the same everywhere, and the
  returned :class:`~fastrnn.models.training.History` holds the averages.

Stateful models with arrays (sharding would cut their streams) and truncated BPTT (ranks would
run different numbers of windows) are refused.
"""
import hashlib
import os
import tempfile
import warnings

import numpy as np

from . import losses as losses_module
from . import optim as optim_module
from .callbacks import ModelCheckpoint
from .models.training import is_batches

#: default largest bucket of gradients reduced by one Allreduce call (PyTorch DDP's 25 MiB)
BUCKET_BYTES = 25 * 2 ** 20


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:      # pragma: no cover - depends on the environment
        raise ImportError("fastrnn.distributed needs mpi4py and an MPI library: "
                          "pip install fastrnn[mpi]") from exc
    return MPI


def _comm(comm):
    return _mpi().COMM_WORLD if comm is None else comm


def model_to_bytes(model):
    """The bytes of ``model``'s file (:meth:`Sequential.save`'s format: arrays and JSON).

    Parameters
    ----------
    model : Sequential or EncoderDecoder

    Returns
    -------
    bytes
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data):
    """The model whose file bytes :func:`model_to_bytes` returned (read by
    :func:`fastrnn.load_model`, never unpickled).

    Parameters
    ----------
    data : bytes

    Returns
    -------
    Sequential or EncoderDecoder
    """
    from .models.saving import load_model

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        with open(path, "wb") as f:
            f.write(data)
        return load_model(path)


def broadcast_model(model, comm=None, root=0):
    """Make every rank's ``model`` a copy of rank ``root``'s, in place.

    Weights (into the live arrays), loss, optimizer and its state, epochs trained, ``info``,
    ``classes_`` and the dropout generators' states travel as the bytes of a model file.

    Parameters
    ----------
    model : Sequential
        Built with the same architecture on every rank.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    root : int
        The rank whose model the others receive.

    Raises
    ------
    ValueError
        If a rank's architecture does not match the root's (its parameters' names or shapes
        differ).
    """
    comm = _comm(comm)
    data = comm.bcast(model_to_bytes(model) if comm.Get_rank() == root else None, root=root)
    if comm.Get_rank() == root:
        return
    source = model_from_bytes(data)
    try:
        model.load_state_dict(source.state_dict())
    except ValueError as exc:
        raise ValueError(f"rank {comm.Get_rank()}: model does not have rank {root}'s "
                         f"architecture: {exc}") from None
    model.loss = source.loss
    if source.optimizer is None or type(model.optimizer) is not type(source.optimizer):
        model.optimizer = source.optimizer
    else:       # the same object: a schedule bound to it keeps working on every rank
        model.optimizer.load_state_dict(source.optimizer.state_dict())
    model.epochs_trained, model.info = source.epochs_trained, source.info
    model.classes_ = source.classes_
    for layer, src in zip(model.layers, source.layers):
        if hasattr(src, "rng_state"):
            layer.rng_state = src.rng_state


class GradientAverager:
    """Averages a model's gradients across ranks: one ``Allreduce`` per bucket.

    The gradients (named as :meth:`Sequential.grads`) are packed, in order, into contiguous
    buffers of at most ``bucket_bytes`` (one per dtype at least), each reduced by one in-place
    ``Allreduce(SUM)``; the first bucket also carries the batch's weight and weighted loss.
    This is what :func:`fit` installs as the training loop's gradient hook.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    summed : bool
        The loss is a sum (``reduction="sum"``): gradients add up across ranks. Otherwise it is
        a mean, and each rank's gradients count by its batch's weight (its number of loss
        terms).
    bucket_bytes : int
        Largest size of a bucket; a parameter larger than that has a bucket of its own.
    """

    def __init__(self, comm, summed=False, bucket_bytes=BUCKET_BYTES):
        if not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be a positive int, got {bucket_bytes!r}")
        self.comm, self.summed, self.bucket_bytes = comm, summed, int(bucket_bytes)
        self.buckets = None     # [(buffer, [(name, start, stop, shape)])], made at first call
        self.calls = 0          # Allreduce calls made

    def _plan(self, params):
        buckets, current = [], {}
        for name, p in params.items():
            dtype = np.dtype(p.dtype)
            slots = current.get(dtype)
            if slots is None or (slots and (slots[-1][2] + p.size) * dtype.itemsize >
                                 self.bucket_bytes):
                slots = current[dtype] = []
                buckets.append((dtype, slots))
            start = slots[-1][2] if slots else 0
            slots.append((name, start, start + p.size, p.shape))
        # the first bucket ends with two slots: the batch's weight and its weighted loss
        return [(np.zeros(slots[-1][2] + 2 * (i == 0), dtype), slots)
                for i, (dtype, slots) in enumerate(buckets)]

    def __call__(self, grads, loss, weight):
        """Replace ``grads``' values by their averages across ranks; return the global loss.

        Parameters
        ----------
        grads : dict of str to ndarray or None
            This rank's gradients (None: zero), changed in place.
        loss : float
            This rank's batch loss.
        weight : int
            The number of terms the batch's (mean) loss averages.

        Returns
        -------
        float
            The loss of the ranks' batches together.
        """
        MPI = _mpi()
        if self.buckets is None:
            self.buckets = self._plan(grads)
        w = 1.0 if self.summed else float(weight)
        for i, (buf, slots) in enumerate(self.buckets):
            for name, start, stop, _ in slots:
                g = grads[name]
                if g is None:
                    buf[start:stop] = 0
                else:
                    np.multiply(g.reshape(-1), w, out=buf[start:stop])
            if i == 0:
                buf[-2:] = (w, w * float(loss))
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            self.calls += 1
        first = self.buckets[0][0]
        total = 1.0 if self.summed else float(first[-2])
        for buf, slots in self.buckets:
            for name, start, stop, shape in slots:
                avg = buf[start:stop].reshape(shape) / buf.dtype.type(total) \
                    if total != 1.0 else buf[start:stop].reshape(shape).copy()
                if grads[name] is None:
                    grads[name] = avg
                else:
                    grads[name][...] = avg
        return float(first[-1]) / total


def shard(data, comm=None):
    """Rank ``r``'s rows of ``data``: rows ``r::P`` of the first ``n - n % P`` rows.

    Parameters
    ----------
    data : ndarray, list or None
        Rows along the first axis (a list of ragged sequences too).
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    ndarray, list or None
    """
    if data is None:
        return None
    comm = _comm(comm)
    size, rank = comm.Get_size(), comm.Get_rank()
    n = len(data) - len(data) % size
    if isinstance(data, list):
        return data[rank:n:size]
    return np.asarray(data)[rank:n:size]


class _Lockstep:
    """An iterable of batches read in step on every rank: before each batch, the ranks agree
    (one small allreduce) that each has one; the first rank to run out ends the epoch for all
    (so no rank waits for gradients that never come)."""

    def __init__(self, source, comm):
        self.source, self.comm = source, comm

    def set_epoch(self, epoch):
        """Pass the epoch on to the source (a :class:`fastrnn.data.Loader` shuffles by it)."""
        if callable(getattr(self.source, "set_epoch", None)):
            self.source.set_epoch(epoch)

    def __len__(self):
        return len(self.source)

    def __iter__(self):
        return _lockstep(iter(self.source), self.comm, close=True)


def _lockstep(it, comm, close=False):
    MPI = _mpi()
    try:
        while True:
            try:
                batch, have = next(it), 1
            except StopIteration:
                batch, have = None, 0
            if not comm.allreduce(have, op=MPI.MIN):
                return
            yield batch
    finally:
        if close and hasattr(it, "close"):
            it.close()


class _MeanLogs:
    """The first callback: replaces the epoch's logs by their means across ranks (so every
    rank's callbacks decide alike) and keeps them for the History."""

    def __init__(self, comm):
        self.comm, self.epochs = comm, []

    def on_epoch_end(self, model, epoch, logs):
        MPI = _mpi()
        keys = sorted(logs)
        values = np.array([logs[k] for k in keys], dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
        logs.update(zip(keys, (values / self.comm.Get_size()).tolist()))
        self.epochs.append(dict(logs))


def fit(model, X, y=None, *, comm=None, lengths=None, callbacks=(), verbose=1,
        bucket_bytes=BUCKET_BYTES, loss=None, optimizer=None, classes=None, **fit_kwargs):
    """Data-parallel :meth:`Sequential.fit` across the ranks of ``comm`` (see the module).

    Parameters
    ----------
    model : Sequential
        Built alike on every rank; rank 0's weights and training state are broadcast first.
    X, y, lengths : arrays, or an iterable of batches
        Arrays (or a ragged list) given whole to every rank are sharded: rank ``r`` trains on
        rows ``r::P``. An iterable of batches is taken as this rank's own data.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    callbacks : sequence
        As for ``fit``; :class:`~fastrnn.callbacks.ModelCheckpoint` runs on rank 0 only. The
        logs the callbacks see are the means across ranks.
    verbose : {0, 1, 2}
        Progress on rank 0 (the other ranks are silent).
    bucket_bytes : int
        Largest bucket of gradients reduced by one ``Allreduce``.
    loss, optimizer, classes, **fit_kwargs
        As for :meth:`Sequential.fit` (``epochs``, ``batch_size``, ``shuffle``, ``seed``,
        ``validation_data``, ``clip_norm``, ...). ``truncate`` is refused.

    Returns
    -------
    History
        The epochs' logs averaged across ranks (the same on every rank).

    Raises
    ------
    ValueError
        For ``truncate``, a stateful model with arrays, or a model whose architecture differs
        from rank 0's.
    RuntimeError
        If the ranks' weights or optimizer states differ at the end (they never should).
    """
    from .models.sequential import Sequential

    comm = _comm(comm)
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastrnn.Sequential, got {type(model).__name__}")
    if fit_kwargs.get("truncate") is not None:
        raise ValueError("truncate is not supported by fastrnn.distributed.fit (ranks would "
                         "run different numbers of windows per batch)")
    rank = comm.Get_rank()
    if loss is not None:
        model.loss = losses_module.get(loss)
    if optimizer is not None:
        model.optimizer = optim_module.get(optimizer)
    broadcast_model(model, comm)        # rank 0's loss and optimizer state (a resume) win
    model._set_training(None, None)     # (refuses a model without them)
    if is_batches(X):
        X = (_Lockstep(X, comm) if not hasattr(X, "__next__")
             else _lockstep(X, comm))
    else:
        if model.stateful:
            raise ValueError("a stateful model cannot have its arrays sharded by rows (that "
                             "would cut its streams): pass each rank's own iterable of batches "
                             "as X")
        # class labels from all the data, not one shard (which may lack some)
        classes = model._fit_classes(classes, y)
        n, size = len(X), comm.Get_size()
        if n % size:
            warnings.warn(f"{n % size} of the {n} rows of X left out, so that each of the "
                          f"{size} ranks has {n // size}", UserWarning, stacklevel=2)
        if n < size:
            raise ValueError(f"X has {n} rows, fewer than the {size} ranks")
        X, y, lengths = shard(X, comm), shard(y, comm), shard(lengths, comm)
    means = _MeanLogs(comm)
    callbacks = [means] + [c for c in (callbacks or ())
                           if rank == 0 or not isinstance(c, ModelCheckpoint)]
    model._reduce_gradients = GradientAverager(
        comm, summed=getattr(model.loss, "reduction", "mean") == "sum",
        bucket_bytes=bucket_bytes)
    try:
        history = model.fit(X, y, lengths=lengths, callbacks=callbacks,
                            verbose=verbose if rank == 0 else 0, classes=classes, **fit_kwargs)
    finally:
        del model._reduce_gradients
    for i, logs in enumerate(means.epochs):
        for k, v in logs.items():
            history.history[k][i] = v
    check_in_sync(model, comm)
    return history


def check_in_sync(model, comm=None):
    """Check that every rank holds the same weights and optimizer state, bit for bit.

    Parameters
    ----------
    model : Sequential
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    str
        The SHA-256 of the weights and optimizer buffers (the same on every rank).

    Raises
    ------
    RuntimeError
        Naming the ranks whose state differs from rank 0's.
    """
    comm = _comm(comm)
    h = hashlib.sha256()
    for name, p in model.parameters().items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(p).tobytes())
    if model.optimizer is not None:
        state = model.optimizer.state_dict()
        h.update(repr((state["step"], sorted(state["param_steps"].items()))).encode())
        for key in sorted(state["buffers"]):
            h.update(key.encode())
            h.update(np.ascontiguousarray(state["buffers"][key]).tobytes())
    digest = h.hexdigest()
    digests = comm.allgather(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RuntimeError(f"ranks {differ} hold weights or optimizer state that differ from "
                           f"rank 0's")
    return digest

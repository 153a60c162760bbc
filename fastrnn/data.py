"""Data pipelines for :meth:`Sequential.fit <fastrnn.Sequential.fit>`, ``evaluate`` and
``predict``: datasets of ragged sequences, batching, shuffling, bucketing by length and
background prefetching, in bounded memory.

- :class:`SequenceDataset`: sequences of different lengths (and their targets) read by index,
  from a list of arrays, a padded array, or a memory-mapped ``.npy`` file of all their steps
  (:meth:`SequenceDataset.from_npy`: data larger than memory).
- :class:`SequenceStream`: sequences that a callable yields, read in order (shards on disk, a
  database cursor); nothing but the batch being made is held.
- :class:`BatchSampler` and :class:`BucketSampler`: which sequences make each batch of an epoch.
  Bucketing puts sequences of similar lengths together, so little padding is computed (fastrnn
  computes none of it, so the saving is in the work of the batches' longest sequences).
- :class:`Loader`: batches ``(X, y, lengths)`` (``(X, lengths)`` without targets), each padded
  to its own longest sequence, shuffled by a seed and the epoch number (as ``fit`` shuffles
  arrays), optionally made ahead in a background thread.

Examples
--------
>>> import numpy as np
>>> from fastrnn.data import Loader, SequenceDataset
>>> rng = np.random.default_rng(0)
>>> data = SequenceDataset([rng.standard_normal((n, 3)) for n in (4, 9, 2, 7, 5)],
...                        targets=[0, 1, 0, 1, 1])
>>> loader = Loader(data, batch_size=2, shuffle=True, seed=0)
>>> len(loader)
3
>>> x, y, lengths = next(iter(loader))
>>> x.shape[0], x.shape[1] == int(lengths.max())
(2, True)
"""
import numbers
import os
import queue
import threading

import numpy as np

from ._validation import as_rng, check_bool, check_int, check_positive_int
from .text.sequences import pad_sequences

__all__ = ["BatchSampler", "BucketSampler", "Loader", "SequenceDataset", "SequenceStream"]


class SequenceDataset:
    """Sequences of different lengths, with optional targets, read by index.

    Parameters
    ----------
    sequences : list of array_like, or ndarray
        ``n`` sequences, each of shape ``(T_i,)`` (token ids) or ``(T_i, features)``; or an
        array ``(n, T)`` / ``(n, T, features)`` of padded sequences (with ``lengths``; without,
        all have ``T`` steps).
    targets : array_like or list of array_like, optional
        One target per sequence: an array whose first axis is the sequences (class ids,
        labels of any kind, values, one-hot rows; per-step targets of a padded array); or a
        list of per-step target sequences of lengths ``T_i`` (of different lengths: equal ones
        are rows), padded with their batch.
    lengths : array_like of int, optional
        Valid steps of each row of a padded array.

    Attributes
    ----------
    lengths : ndarray of int64
        ``(n,)``, the steps of each sequence, known without reading the data.

    Examples
    --------
    >>> import numpy as np
    >>> data = SequenceDataset([np.array([1, 2, 3]), np.array([4])], targets=["a", "b"])
    >>> len(data), data.lengths.tolist()
    (2, [3, 1])
    >>> data[1]
    (array([4]), np.str_('b'))
    """

    def __init__(self, sequences, targets=None, lengths=None):
        if isinstance(sequences, np.ndarray) and sequences.dtype != object:
            if sequences.ndim not in (2, 3) or sequences.shape[0] == 0:
                raise ValueError(f"sequences as an array must be (n, T) or (n, T, features) "
                                 f"with n >= 1, got shape {sequences.shape}")
            self.lengths = _lengths(lengths, sequences.shape[0], sequences.shape[1])
            self._get = lambda i: sequences[i, :self.lengths[i]]
        else:
            if lengths is not None:
                raise ValueError("lengths is for a padded array of sequences; a list of "
                                 "sequences has the lengths of its sequences")
            if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
                raise TypeError(f"sequences must be a list of arrays or an array, got "
                                f"{type(sequences).__name__}")
            seqs = [np.asarray(s) for s in sequences]
            for i, s in enumerate(seqs):
                if s.ndim not in (1, 2) or s.dtype.kind not in "biuf":
                    raise ValueError(f"sequences[{i}] must be numbers of shape (T,) or "
                                     f"(T, features), got {s.dtype} of shape {s.shape}")
            self.lengths = _lengths([len(s) for s in seqs], len(seqs), None)
            self._get = seqs.__getitem__
        self._targets = _targets(targets, self.lengths)

    @classmethod
    def from_npy(cls, path, lengths, targets=None):
        """A dataset on a memory-mapped ``.npy`` file of all the sequences' steps.

        Only the steps of the sequences of a batch are read, when the batch is made: the file
        may be larger than memory.

        Parameters
        ----------
        path : str or os.PathLike
            A ``.npy`` array ``(sum(lengths),)`` or ``(sum(lengths), features)``: the steps of
            sequence 0, then those of sequence 1, ... (``np.save(path, np.concatenate(seqs))``).
        lengths : array_like of int, or str or os.PathLike
            The steps of each sequence, or a ``.npy`` file of them.
        targets : array_like, or str or os.PathLike, optional
            One target per sequence (first axis), or a ``.npy`` file of them (memory-mapped).

        Returns
        -------
        SequenceDataset

        Examples
        --------
        >>> import numpy as np, os, tempfile
        >>> seqs = [np.ones((3, 2)), np.zeros((5, 2))]
        >>> path = os.path.join(tempfile.mkdtemp(), "steps.npy")
        >>> np.save(path, np.concatenate(seqs))
        >>> SequenceDataset.from_npy(path, lengths=[3, 5])[1].shape
        (5, 2)
        """
        steps = np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
        if isinstance(lengths, (str, os.PathLike)):
            lengths = np.load(os.fspath(lengths), allow_pickle=False)
        if isinstance(targets, (str, os.PathLike)):
            targets = np.load(os.fspath(targets), mmap_mode="r", allow_pickle=False)
        if steps.ndim not in (1, 2) or steps.dtype.kind not in "biuf":
            raise ValueError(f"{path} must hold numbers of shape (steps,) or (steps, "
                             f"features), got {steps.dtype} of shape {steps.shape}")
        lengths = np.asarray(lengths)
        lengths = _lengths(lengths, lengths.size, None)
        if int(lengths.sum()) != steps.shape[0]:
            raise ValueError(f"lengths add up to {int(lengths.sum())} steps, {path} holds "
                             f"{steps.shape[0]}")
        self = cls.__new__(cls)
        self.lengths = lengths
        starts = np.concatenate([[0], np.cumsum(lengths)])
        self._get = lambda i: np.asarray(steps[starts[i]:starts[i + 1]])
        self._targets = _targets(targets, lengths)
        return self

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        """Sequence ``i``, or ``(sequence, target)`` when the dataset has targets."""
        i = check_int("i", i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of a dataset of {len(self)}")
        i %= len(self)
        if self._targets is None:
            return self._get(i)
        return self._get(i), self._targets[i]

    def batch(self, indices):
        """The sequences ``indices`` as one padded batch.

        Parameters
        ----------
        indices : array_like of int

        Returns
        -------
        tuple
            ``(X, y, lengths)``, or ``(X, lengths)`` without targets: ``X`` padded with zeros
            to the batch's longest sequence.
        """
        indices = np.asarray(indices, dtype=np.int64)
        x, lengths = pad_sequences([self._get(i) for i in indices])
        if self._targets is None:
            return x, lengths
        if isinstance(self._targets, list):          # per-step target sequences
            y = pad_sequences([self._targets[i] for i in indices])[0]
        else:
            y = np.asarray(self._targets[indices])
        return x, y, lengths

    def __repr__(self):
        return (f"SequenceDataset({len(self)} sequences of {self.lengths.min()}.."
                f"{self.lengths.max()} steps{', with targets' if self._targets is not None else ''})")


class SequenceStream:
    """Sequences that a callable yields, read in order, one at a time.

    Parameters
    ----------
    source : callable
        ``source()`` returns an iterable of sequences (each ``(T_i,)`` or ``(T_i, features)``)
        or of ``(sequence, target)`` pairs; it is called again for each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> def read():
    ...     for n in (3, 1, 2):
    ...         yield np.arange(n), n % 2
    >>> [x.shape for x, y, lengths in Loader(SequenceStream(read), batch_size=2)]
    [(2, 3), (1, 2)]
    """

    def __init__(self, source):
        if not callable(source):
            raise TypeError(f"source must be a callable that returns an iterable of "
                            f"sequences, got {type(source).__name__}")
        self.source = source

    def __iter__(self):
        return iter(self.source())

    def __repr__(self):
        return f"SequenceStream({self.source!r})"


class BatchSampler:
    """Batches of sequence indices: all ``n`` in order, or shuffled.

    Parameters
    ----------
    n : int
        Sequences.
    batch_size : int
    shuffle : bool
        A permutation per epoch, made from ``seed`` and the epoch number only.
    seed : int
    drop_last : bool
        Leave out the last batch when it is smaller than ``batch_size``.

    Examples
    --------
    >>> [b.tolist() for b in BatchSampler(5, 2).batches(epoch=0)]
    [[0, 1], [2, 3], [4]]
    """

    def __init__(self, n, batch_size, shuffle=False, seed=0, drop_last=False):
        self.n = check_positive_int("n", n)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = _check_seed(seed)
        self.drop_last = check_bool("drop_last", drop_last)

    def _rng(self, epoch):
        return np.random.default_rng([self.seed, check_int("epoch", epoch, low=0)])

    def batches(self, epoch):
        """The batches of epoch ``epoch``.

        Parameters
        ----------
        epoch : int

        Returns
        -------
        list of ndarray of int64
        """
        order = self._rng(epoch).permutation(self.n) if self.shuffle else np.arange(self.n)
        return _cut(order, self.batch_size, self.drop_last)

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)


class BucketSampler(BatchSampler):
    """Batches of sequences of similar lengths.

    Each epoch, the sequences are shuffled (with ``shuffle``), cut into chunks of
    ``chunk * batch_size``, sorted by length within each chunk (stably) and cut into batches;
    then the batches are shuffled. Every sequence is in exactly one batch per epoch (but a
    smaller last batch with ``drop_last``). Larger chunks pad less and mix less.

    Parameters
    ----------
    lengths : array_like of int
        The steps of each sequence (:attr:`SequenceDataset.lengths`).
    batch_size : int
    chunk : int
        Batches per chunk sorted together (torchtext's bucket iterator pools 100). On lengths
        from a log-normal distribution, batches of 32 pad about 78% of their steps at random,
        55% with chunks of 4, 23% of 16 and 5% of 64.
    shuffle : bool
        Shuffle the sequences before chunking and the batches after, from ``seed`` and the
        epoch number only; without, chunks are taken in order and batches not shuffled.
    seed : int
    drop_last : bool
        Leave out the batch of each chunk smaller than ``batch_size``.

    Examples
    --------
    >>> sampler = BucketSampler([5, 1, 4, 2, 6, 3], batch_size=2, chunk=3, shuffle=False)
    >>> [b.tolist() for b in sampler.batches(epoch=0)]
    [[1, 3], [5, 2], [0, 4]]
    """

    def __init__(self, lengths, batch_size, chunk=50, shuffle=True, seed=0, drop_last=False):
        self.lengths = _lengths(lengths, np.size(lengths), None)
        super().__init__(len(self.lengths), batch_size, shuffle, seed, drop_last)
        self.chunk = check_positive_int("chunk", chunk)

    def batches(self, epoch):
        """The batches of epoch ``epoch``.

        Parameters
        ----------
        epoch : int

        Returns
        -------
        list of ndarray of int64
        """
        rng = self._rng(epoch)
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        size = self.chunk * self.batch_size
        batches = []
        for start in range(0, self.n, size):
            part = order[start:start + size]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += _cut(part, self.batch_size, self.drop_last)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self):
        size = self.chunk * self.batch_size
        full, rest = divmod(self.n, size)
        last = rest // self.batch_size if self.drop_last else -(-rest // self.batch_size)
        return full * self.chunk + last


class Loader:
    """Padded batches of a dataset, for ``fit``, ``evaluate`` and ``predict``.

    Iterating gives the batches of one epoch: ``(X, y, lengths)``, or ``(X, lengths)`` for a
    dataset without targets, ``X`` padded with zeros to the batch's longest sequence. Each
    ``iter()`` starts a new epoch; :meth:`Sequential.fit <fastrnn.Sequential.fit>` calls
    :meth:`set_epoch` first, so the order depends on ``seed`` and the epoch number only (and
    training resumed from a checkpoint sees the same batches).

    Parameters
    ----------
    dataset : SequenceDataset or SequenceStream
    batch_size : int
        Sequences per batch (ignored with ``sampler``).
    shuffle : bool
        Shuffle the sequences each epoch (a :class:`SequenceStream` shuffles the batches of
        each chunk, with ``bucket``).
    bucket : int, optional
        Group sequences of similar lengths: sort by length within chunks of ``bucket``
        batches (:class:`BucketSampler`). A :class:`SequenceStream` holds one chunk at a time.
    seed : int
    drop_last : bool
        Leave out batches smaller than ``batch_size``.
    sampler : BatchSampler or BucketSampler, optional
        Batches of indices of a :class:`SequenceDataset` (any object with
        ``batches(epoch)`` and ``len``), instead of ``batch_size``, ``shuffle``, ``bucket``,
        ``seed`` and ``drop_last``.
    prefetch : int
        Make up to this many batches ahead in a background thread (0: none). The thread
        stops when the iteration ends, is closed or is dropped; an exception in it is raised
        in the consumer.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> from fastrnn.data import Loader, SequenceDataset
    >>> rng = np.random.default_rng(0)
    >>> data = SequenceDataset([rng.integers(1, 9, size=n) for n in rng.integers(2, 30, 64)],
    ...                        targets=rng.integers(0, 2, 64))
    >>> train = Loader(data, batch_size=16, shuffle=True, bucket=4, prefetch=2)
    >>> model = fastrnn.Sequential([fastrnn.Embedding(9, 4), fastrnn.GRU(4, 8,
    ...                             return_sequences=False), fastrnn.Dense(8, 1)])
    >>> history = model.fit(train, loss="bce", optimizer="adam", epochs=2, verbose=0)
    >>> len(history.epoch)
    2
    """

    def __init__(self, dataset, batch_size=32, *, shuffle=False, bucket=None, seed=0,
                 drop_last=False, sampler=None, prefetch=0):
        if not isinstance(dataset, (SequenceDataset, SequenceStream)):
            raise TypeError(f"dataset must be a SequenceDataset or a SequenceStream, got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.prefetch = check_int("prefetch", prefetch, low=0)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.shuffle = check_bool("shuffle", shuffle)
        self.bucket = None if bucket is None else check_positive_int("bucket", bucket)
        self.seed = _check_seed(seed)
        self.drop_last = check_bool("drop_last", drop_last)
        if isinstance(dataset, SequenceStream):
            if sampler is not None:
                raise ValueError("sampler needs a SequenceDataset (indices); a SequenceStream "
                                 "is read in order")
            if self.shuffle and self.bucket is None:
                raise ValueError("shuffle=True on a SequenceStream shuffles the batches of "
                                 "each chunk, so it needs bucket=...; shuffle the stream at "
                                 "its source otherwise")
        elif sampler is None:
            sampler = (BatchSampler(len(dataset), batch_size, shuffle, seed, drop_last)
                       if self.bucket is None else
                       BucketSampler(dataset.lengths, batch_size, self.bucket, shuffle, seed,
                                     drop_last))
        elif not callable(getattr(sampler, "batches", None)):
            raise TypeError(f"sampler must have a batches(epoch) method, got "
                            f"{type(sampler).__name__}")
        self.sampler = sampler
        self._epoch = 0

    def set_epoch(self, epoch):
        """Make the next iteration the batches of epoch ``epoch``.

        Parameters
        ----------
        epoch : int
        """
        self._epoch = check_int("epoch", epoch, low=0)

    def __len__(self):
        if self.sampler is None:
            raise TypeError("a Loader on a SequenceStream has no length")
        return len(self.sampler)

    def __iter__(self):
        epoch, self._epoch = self._epoch, self._epoch + 1
        if self.sampler is not None:
            batches = (self.dataset.batch(b) for b in self.sampler.batches(epoch))
        else:
            batches = self._stream_batches(epoch)
        return _prefetched(batches, self.prefetch) if self.prefetch else batches

    def _stream_batches(self, epoch):
        """The batches of a stream: in order, or bucketed chunk by chunk."""
        rng = np.random.default_rng([self.seed, epoch])
        size = self.batch_size * (self.bucket or 1)
        chunk = []
        for item in self.dataset:
            chunk.append(item)
            if len(chunk) == size:
                yield from self._chunk_batches(chunk, rng)
                chunk = []
        if chunk:
            yield from self._chunk_batches(chunk, rng)

    def _chunk_batches(self, items, rng):
        pairs = [isinstance(item, tuple) and len(item) == 2 for item in items]
        if any(pairs) and not all(pairs):
            raise ValueError("a SequenceStream must yield sequences or (sequence, target) "
                             "pairs, not both")
        seqs = [item[0] for item in items] if pairs[0] else items
        data = SequenceDataset(seqs, [item[1] for item in items] if pairs[0] else None)
        sampler = (BucketSampler(data.lengths, self.batch_size, self.bucket, shuffle=False,
                                 drop_last=self.drop_last) if self.bucket else
                   BatchSampler(len(data), self.batch_size, drop_last=self.drop_last))
        batches = sampler.batches(0)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for b in batches:
            yield data.batch(b)

    def __repr__(self):
        return (f"Loader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"bucket={self.bucket}, prefetch={self.prefetch})")


# ---------------------------------------------------------------------------- helpers

def _check_seed(seed):
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    as_rng("seed", seed)
    return int(seed)


def _lengths(lengths, n, timesteps):
    """``lengths`` of ``n`` sequences as int64, each in ``1..timesteps`` (or >= 1); None:
    all ``timesteps``."""
    if lengths is None:
        return np.full(n, timesteps, dtype=np.int64)
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu" or arr.shape != (n,) or n == 0:
        raise ValueError(f"lengths must be {n} integers (at least one), got "
                         f"{arr.dtype} of shape {arr.shape}")
    if arr.min() < 1 or (timesteps is not None and arr.max() > timesteps):
        allowed = ">= 1" if timesteps is None else f"in 1..{timesteps} (the timesteps)"
        raise ValueError(f"lengths must be {allowed}, got values from {arr.min()} to "
                         f"{arr.max()} (a sequence has at least one step)")
    return arr.astype(np.int64)


def _targets(targets, lengths):
    """Targets as kept: None, an array (first axis: the sequences) or a list of per-step
    arrays (each of its sequence's length)."""
    if targets is None:
        return None
    if isinstance(targets, list) and targets and all(np.ndim(t) >= 1 for t in targets):
        per_step = [np.asarray(t) for t in targets]
        if len({len(t) for t in per_step}) > 1:     # ragged: per-step targets (equal-length
            if len(per_step) != len(lengths) or any(  # ones are rows, one-hot ones say)
                    len(t) != n for t, n in zip(per_step, lengths)):
                raise ValueError("targets of different lengths must be per-step targets, "
                                 "one of each sequence's length")
            return per_step
    if not isinstance(targets, np.ndarray):
        targets = np.asarray(targets)
    if targets.ndim == 0 or targets.shape[0] != len(lengths):
        raise ValueError(f"targets must have one entry per sequence ({len(lengths)}), or be a "
                         f"list of per-step targets of the sequences' lengths; got shape "
                         f"{targets.shape}")
    return targets


def _cut(order, batch_size, drop_last):
    """``order`` cut into batches of ``batch_size`` (a smaller last one unless ``drop_last``)."""
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


#: what the prefetch thread puts after the last batch
_END = object()


def _prefetched(batches, size):
    """Yield the items of ``batches``, made ahead in a background thread (at most ``size``
    waiting in a queue). An exception in the thread is raised here; closing (or dropping)
    this generator stops the thread and waits for it."""
    slots = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for batch in batches:
                if not put((None, batch)):
                    return
            put((None, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((exc, None))
        finally:
            batches.close() if hasattr(batches, "close") else None

    thread = threading.Thread(target=produce, name="fastrnn-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            exc, batch = slots.get()
            if exc is not None:
                raise exc
            if batch is _END:
                return
            yield batch
    finally:
        stop.set()
        thread.join()

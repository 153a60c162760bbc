"""Sequence helpers: one-hot encoding and padding of variable-length sequences.

:func:`one_hot` turns ids into one-hot vectors; :func:`pad_sequences` packs a list of sequences
of different lengths into one batch-first array plus the ``lengths`` that the layers take.
"""
import math

import numpy as np

from .._validation import check_choice, check_int, check_number, check_numeric_dtype


def one_hot(ids, num_classes, dtype="float32"):
    """One-hot encode integer ids.

    Parameters
    ----------
    ids : array_like of int
        Any shape (a scalar too); every id must be in ``0 .. num_classes - 1``.
    num_classes : int
        Length of the one-hot vectors, >= 1.
    dtype : dtype, default "float32"
        Any boolean, integer or floating dtype.

    Returns
    -------
    ndarray
        Shape ``ids.shape + (num_classes,)``, zeros with a one at each id.

    Raises
    ------
    TypeError
        If ``ids`` is not integer data or ``dtype`` is not numeric.
    ValueError
        If an id is negative or >= ``num_classes``.

    Examples
    --------
    >>> one_hot([[0, 2]], 3)
    array([[[1., 0., 0.],
            [0., 0., 1.]]], dtype=float32)
    """
    num_classes = check_int("num_classes", num_classes, low=1)
    dtype = check_numeric_dtype(dtype)
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"ids must be an array of integers: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be an array of integers, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    bad = (flat < 0) | (flat >= num_classes)
    if bad.any():
        pos = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape)
        raise ValueError(
            f"ids must be in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"got {int(arr[pos])} at index {tuple(int(p) for p in pos)}"
        )
    out = np.zeros((flat.size, num_classes), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(arr.shape + (num_classes,))


def pad_sequences(
    sequences,
    maxlen=None,
    padding="post",
    truncating="post",
    value=0,
    dtype=None,
):
    """Pack sequences of different lengths into one array, and return their lengths.

    Padding and truncation follow Keras' ``pad_sequences``; in addition the valid length of
    every sequence is returned, since the layers take ``lengths`` rather than masks.

    Parameters
    ----------
    sequences : sequence of array_like
        ``B`` sequences, each either 1-D of length ``T_i`` (for example token ids) or 2-D of
        shape ``(T_i, F)`` with the same ``F`` for all (feature vectors). Every ``T_i`` >= 1.
    maxlen : int, optional
        Number of timesteps ``T`` of the result; by default the longest ``T_i``. Longer
        sequences are truncated.
    padding : {"post", "pre"}, default "post"
        Put the padding after ("post") or before ("pre") each sequence. The layers'
        ``lengths`` assume that the valid steps come first, i.e. "post" padding.
    truncating : {"post", "pre"}, default "post"
        Drop the steps past ``maxlen`` at the end ("post", keeping the first ``maxlen``) or at
        the beginning ("pre", keeping the last ``maxlen``). Keras' default is "pre".
    value : int or float, default 0
        Fill value of the padding; must be representable in ``dtype``.
    dtype : dtype, optional
        dtype of the result. By default int64 if all sequences hold integers (or bools),
        otherwise the common floating dtype of the sequences (float32 arrays stay float32,
        Python floats give float64). Floating data is never cast to an integer dtype.

    Returns
    -------
    padded : ndarray
        Shape ``(B, T)`` for 1-D sequences or ``(B, T, F)`` for 2-D ones, C-contiguous.
    lengths : ndarray of int64
        Shape ``(B,)``: ``min(T_i, T)``, the number of valid steps of each row after
        truncation.

    Raises
    ------
    TypeError
        If ``sequences`` is not a sequence of numeric sequences, or floating data would be
        cast to an integer ``dtype``.
    ValueError
        If there are no sequences, a sequence is empty (the message names its index),
        the sequences mix 1-D and 2-D or differ in ``F``, ``maxlen`` < 1, ``value`` does not
        fit ``dtype``, or ``padding`` / ``truncating`` is not "pre" or "post".

    Examples
    --------
    >>> x, lengths = pad_sequences([[1, 2, 3], [4]], padding="pre")
    >>> x
    array([[1, 2, 3],
           [0, 0, 4]])
    >>> lengths
    array([3, 1])
    >>> pad_sequences([[1, 2, 3], [4]], maxlen=2, truncating="pre")[0]
    array([[2, 3],
           [4, 0]])
    """
    check_choice("padding", padding, ("post", "pre"))
    check_choice("truncating", truncating, ("post", "pre"))
    if maxlen is not None:
        maxlen = check_int("maxlen", maxlen, low=1)
    if isinstance(sequences, (str, bytes)):
        raise TypeError("sequences must be a sequence of numeric sequences, got a string")
    arrays, first, lens, src_dtype = _as_batch(sequences)
    out_dtype = _output_dtype(dtype, src_dtype)
    _check_representable(sequences if arrays is None else arrays, out_dtype)
    fill = _fill_value(value, out_dtype)

    T = int(lens.max()) if maxlen is None else maxlen
    out_lens = np.minimum(lens, T)
    padded = np.full((len(lens), T) + first.shape[1:], fill, dtype=out_dtype)
    _copy_in(padded, sequences if arrays is None else arrays, out_lens, padding, truncating)
    return padded, out_lens


def ragged_to_padded(sequences, dtype=None):
    """Pad a list of variable-length sequences at the end, for a model's fit and predict.

    Same as ``pad_sequences(sequences, dtype=dtype)``: post padding with zeros to the longest
    sequence, no truncation.

    Parameters
    ----------
    sequences : sequence of array_like
        ``B`` sequences of shape ``(T_i,)`` or ``(T_i, F)``, or an array ``(B, T[, F])`` (then
        all lengths are ``T``).
    dtype : dtype, optional
        dtype of ``x``; see :func:`pad_sequences`.

    Returns
    -------
    x : ndarray
        ``(B, T)`` or ``(B, T, F)`` with ``T = max(T_i)``.
    lengths : ndarray of int64
        ``(B,)``, the ``T_i``.

    See Also
    --------
    pad_sequences
    """
    return pad_sequences(sequences, dtype=dtype)


def _as_batch(sequences):
    """``(arrays, first, lengths, dtype)`` of the checked ``sequences``.

    ``arrays`` is the list of sequences as arrays, or None for a rectangular array (B sequences
    of equal length, copied without a per-row loop); ``first`` is the first sequence and
    ``dtype`` the common dtype of all.
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype != object and sequences.ndim >= 2:
        return _as_rectangular_batch(sequences)
    return _as_ragged_batch(sequences)


def _as_rectangular_batch(sequences):
    """:func:`_as_batch` of an array ``(B, T)`` or ``(B, T, F)``."""
    if sequences.ndim > 3:
        raise ValueError(
            f"sequences as an array must be 2-D (batch, timesteps) or 3-D "
            f"(batch, timesteps, features), got shape {sequences.shape}"
        )
    if sequences.shape[0] == 0:
        raise ValueError("sequences is empty; need at least one sequence")
    lens = np.full(sequences.shape[0], sequences.shape[1], dtype=np.int64)
    return None, _as_sequence(0, sequences[0]), lens, sequences.dtype


def _as_ragged_batch(sequences):
    """:func:`_as_batch` of a sequence of sequences, each ``(T_i,)`` or ``(T_i, F)``."""
    try:
        arrays = [_as_sequence(i, seq) for i, seq in enumerate(sequences)]
    except TypeError as exc:
        if "sequences[" in str(exc):
            raise
        raise TypeError(
            f"sequences must be a sequence of numeric sequences, got "
            f"{type(sequences).__name__}"
        ) from None
    if not arrays:
        raise ValueError("sequences is empty; need at least one sequence")
    first = arrays[0]
    for i, arr in enumerate(arrays):
        if arr.ndim != first.ndim or arr.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"all sequences must have the same number of dimensions and features: "
                f"sequences[0] has shape {first.shape}, sequences[{i}] has shape "
                f"{arr.shape}"
            )
    lens = np.array([arr.shape[0] for arr in arrays], dtype=np.int64)
    return arrays, first, lens, np.result_type(*arrays)


def _as_sequence(i, seq):
    """Sequence ``i`` as a 1-D or 2-D array of real numbers."""
    if isinstance(seq, (str, bytes)):
        raise TypeError(
            f"sequences[{i}] must be a sequence of numbers, got a {type(seq).__name__}; "
            f"encode texts with Vocabulary.encode first"
        )
    try:
        arr = np.asarray(seq)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"sequences[{i}] must be an array of real numbers: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"sequences[{i}] must hold real numbers (bool, integer or floating), "
            f"got dtype {arr.dtype}"
        )
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"sequences[{i}] must be 1-D (timesteps,) or 2-D (timesteps, features), "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(
            f"sequences[{i}] is empty; every sequence needs at least one timestep "
            f"(lengths must be >= 1)"
        )
    return arr


def _output_dtype(dtype, src_dtype):
    """The dtype of the result: ``dtype`` checked, or int64 / ``src_dtype`` by default."""
    if dtype is None:
        return np.dtype(np.int64) if src_dtype.kind in "biu" else src_dtype
    out_dtype = check_numeric_dtype(dtype)
    if src_dtype.kind == "f" and out_dtype.kind != "f":
        raise TypeError(
            f"sequences hold floating data ({src_dtype}), which would be truncated by "
            f"dtype={out_dtype}; pass a floating dtype"
        )
    return out_dtype


def _check_representable(sequences, out_dtype):
    """Refuse integer data that ``out_dtype`` (an integer dtype) cannot hold: a cast would wrap
    it silently (300 becomes 44 in uint8)."""
    if out_dtype.kind not in "iu":
        return
    arrays = [sequences] if isinstance(sequences, np.ndarray) else sequences
    low = min(int(a.min()) for a in arrays)
    high = max(int(a.max()) for a in arrays)
    info = np.iinfo(out_dtype)
    if low < info.min or high > info.max:
        raise ValueError(f"sequences hold values from {low} to {high}, which dtype {out_dtype} "
                         f"cannot hold ({info.min} to {info.max}); pass a wider dtype")


def _fill_value(value, out_dtype):
    """The padding ``value`` as a 0-d array of ``out_dtype``, if it is representable there."""
    check_number("value", value)
    if out_dtype.kind in "iu":
        info = np.iinfo(out_dtype)
        if not (math.isfinite(value) and value == int(value) and info.min <= value <= info.max):
            raise ValueError(f"value={value!r} cannot be represented in dtype {out_dtype}")
    fill = np.asarray(value).astype(out_dtype)
    if out_dtype.kind != "f" and fill != value:
        raise ValueError(f"value={value!r} cannot be represented in dtype {out_dtype}")
    return fill


def _copy_in(padded, sequences, lengths, padding, truncating):
    """Copy the first (or last) ``lengths`` steps of ``sequences`` into the rows of ``padded``,
    before (or after) the padding; ``sequences`` is a list of arrays or one array."""
    T = padded.shape[1]
    if isinstance(sequences, np.ndarray):          # all of one length: no loop over the rows
        src = sequences[:, :T] if truncating == "post" else sequences[:, -T:]
        if padding == "post":
            padded[:, : src.shape[1]] = src
        else:
            padded[:, T - src.shape[1]:] = src
        return
    for row, (arr, n) in enumerate(zip(sequences, lengths.tolist())):
        src = arr[:n] if truncating == "post" else arr[len(arr) - n:]
        if padding == "post":
            padded[row, :n] = src
        else:
            padded[row, T - n:] = src

"""Checks of user input at the API boundary, with messages that name the argument.

Everything a user passes goes through one of these functions once, before any engine sees it;
the engines assume valid, C-contiguous arrays of the layer's dtype.
"""
import math
import numbers
from collections.abc import Hashable

import numpy as np

#: dtypes a layer can compute in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype):
    """Return the NumPy dtype for ``dtype`` ("float32" or "float64"), or raise ValueError."""
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    # (not ``resolved in FLOAT_DTYPES`` alone: ``np.dtype("float64") == None`` is True)
    if resolved is None or resolved not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def check_numeric_dtype(dtype):
    """Return the NumPy dtype for ``dtype`` if it is boolean, integer or floating, else TypeError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a numeric dtype, got {dtype!r}: {exc}") from None
    if resolved.kind not in "biuf":
        raise TypeError(f"dtype must be a boolean, integer or floating dtype, got {resolved}")
    return resolved


def check_int(name, value, low=None):
    """Return ``value`` as an int if it is an integer (not a bool), else raise TypeError.

    Parameters
    ----------
    name : str
        The argument's name, used in the error messages.
    value : int or numpy integer
        The value to check.
    low : int, optional
        The smallest value allowed; ValueError ``"<name> must be >= <low>, got <value>"``
        below it. Without it every integer passes.

    Returns
    -------
    int
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def as_rng(name, seed):
    """A NumPy ``Generator`` from ``seed``: None (fresh entropy), a non-negative integer, or a
    ``Generator`` (used as it is); anything else raises TypeError/ValueError naming ``name``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"{name} must be a non-negative integer, a numpy Generator or None, "
                        f"got {type(seed).__name__} {seed!r}")
    return np.random.default_rng(None if seed is None else check_int(name, seed, low=0))


def check_positive_int(name, value):
    """Return ``value`` as an int if it is an integer >= 1, else raise TypeError/ValueError."""
    return check_int(name, value, low=1)


def check_number(name, value):
    """Return ``value`` unchanged if it is a real number (not a bool), else raise TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return value


def check_real(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a real number in an interval, else raise.

    Parameters
    ----------
    name : str
        The argument's name, used in the error messages.
    value : float or int
        The value to check; bools are refused.
    low, high : float
        The bounds of the interval; by default ``[0, inf]`` (most hyper-parameters are
        non-negative).
    low_open, high_open : bool
        Whether the bound itself is excluded.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``value`` is not a real number.
    ValueError
        If it is NaN or outside the interval: ``"<name> must be in [0.0, 1.0), got 1.0"``.
    """
    value = float(check_number(name, value))
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if math.isnan(value) or below or above:
        interval = (("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]"))
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_bool(name, value):
    """Return ``value`` as a Python bool if it is a boolean, else raise TypeError.

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    value : bool or numpy.bool_
        The flag. Integers (``0``, ``1``), strings and ``None`` are refused rather than
        interpreted by their truth value.

    Returns
    -------
    bool
        ``value`` as a built-in :class:`bool`.

    Raises
    ------
    TypeError
        If ``value`` is neither a :class:`bool` nor a :class:`numpy.bool_`; the message is
        ``"<name> must be True or False, got <value>"``.

    Examples
    --------
    >>> check_bool("bias", np.True_)
    True
    >>> check_bool("bias", 1)
    Traceback (most recent call last):
    ...
    TypeError: bias must be True or False, got 1
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def as_list(name, value, what):
    """``value`` as a list if it is an iterable other than a string, else TypeError
    ``"<name> must be a list of <what>, got ..."``."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of {what}, got {type(value).__name__} "
                        f"{value!r}") from None


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise ValueError."""
    if not isinstance(value, Hashable) or value not in choices:   # (an array is not hashable)
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_fraction(name, value):
    """Return ``value`` as a float if ``0 <= value < 1`` (a rate, e.g. a dropout probability),
    else raise TypeError/ValueError."""
    value = float(check_number(name, value))
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def check_index(name, value, size):
    """Return ``value`` as an int if it is an index into ``size`` entries (``0..size-1``),
    else raise TypeError/ValueError (a bool is not an index)."""
    value = check_int(name, value)
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in 0..{size - 1}, got {value}")
    return value


def check_string_tuple(name, value):
    """Return ``value`` as a tuple if it is a sequence of non-empty strings, else TypeError.

    A single string is refused rather than split into its characters.
    """
    if isinstance(value, str):
        raise TypeError(f"{name} must be a sequence of strings, got the string {value!r}")
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of strings, got {type(value).__name__}"
        ) from None
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise TypeError(f"{name}[{i}] must be a non-empty string, got {item!r}")
    return value


def check_mapping(name, value):
    """Raise TypeError unless ``value`` is a dict-like (it has ``keys`` and ``__getitem__``)."""
    if not hasattr(value, "keys") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{name} must be a dict of names to arrays, got {type(value).__name__}")


def check_float_ndarray(name, value, note=""):
    """Raise TypeError unless ``value`` is a float32 or float64 ndarray.

    Parameters
    ----------
    name : str
        The value's name in the message, e.g. ``"params['w']"``.
    value : object
        The value to check.
    note : str
        Said after the requirement, e.g. ``" (clipping works in place)"``.
    """
    if not isinstance(value, np.ndarray) or value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 ndarray{note}, got "
                        f"{getattr(value, 'dtype', type(value).__name__)}")


def as_real_array(name, value):
    """``value`` as an ndarray of real numbers (bool, integer or floating), else TypeError
    (complex, object or string data, ragged nested lists)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array of real numbers: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be an array of real numbers (bool, integer or floating), "
            f"got dtype {arr.dtype}"
        )
    return arr


def as_float_array(name, value, dtype, shape):
    """Convert ``value`` to a C-contiguous array of ``dtype`` with the expected ``shape``.

    Parameters
    ----------
    name : str
        The argument's name, used in error messages.
    value : array_like
        Real numbers (bool, integer or floating); complex, object or string data is refused.
        Floating data is cast to ``dtype`` (float64 input to a float32 layer is rounded).
    dtype : numpy.dtype
        float32 or float64.
    shape : tuple
        Expected shape; ``None`` entries accept any size.

    Returns
    -------
    ndarray
        C-contiguous, finite, of ``dtype`` and ``shape``; ``value`` itself when it already is.

    Raises
    ------
    TypeError
        If ``value`` is not an array of real numbers.
    ValueError
        If its shape differs from ``shape``, it is empty, or it contains NaN or Inf.
    """
    arr = as_real_array(name, value)
    if shape and shape[0] is Ellipsis:     # any number of leading dimensions, at least one
        if arr.ndim < len(shape) - 1 or arr.ndim == 0:
            raise ValueError(f"{name} must have shape {_describe(shape)}, got shape "
                             f"{arr.shape}")
        shape = (None,) * (arr.ndim - len(shape) + 1) + tuple(shape[1:])
    if arr.ndim != len(shape):
        raise ValueError(
            f"{name} must have {len(shape)} dimensions {_describe(shape)}, got shape {arr.shape}"
        )
    if any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        raise ValueError(f"{name} must have shape {_describe(shape)}, got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def _describe(shape):
    return "(" + ", ".join("..." if s is Ellipsis else "any" if s is None else str(s)
                           for s in shape) + ")"


def as_lengths(lengths, batch, timesteps, allow_empty=False):
    """Validate per-sequence lengths: integers of shape ``(batch,)``, each in ``1..timesteps``
    (``0..timesteps`` with ``allow_empty``).

    Parameters
    ----------
    lengths : array_like of int or None
    batch, timesteps : int
        The shape of the batch the lengths belong to.
    allow_empty : bool
        Accept 0, an empty sequence (for the callers that run one: the recurrent layers, whose
        final state is then the initial state, and the models made of them).

    Returns
    -------
    ndarray of int64, or None
        ``None`` when every sequence has all ``timesteps`` steps (so engines take their
        equal-length path).
    """
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {arr.shape}")
    low, high = arr.min(), arr.max()
    smallest = 0 if allow_empty else 1
    if low < smallest or high > timesteps:
        raise ValueError(
            f"lengths must be in {smallest}..{timesteps} (the number of timesteps), "
            f"got values from {low} to {high}"
        )
    if low == timesteps:
        return None
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_token_ids(name, tokens, num_tokens):
    """Validate integer token ids, each in ``0..num_tokens-1``.

    Parameters
    ----------
    name : str
        The argument's name, used in error messages.
    tokens : array_like of int
        Any shape.
    num_tokens : int
        The vocabulary size.

    Returns
    -------
    ndarray of int64

    Raises
    ------
    TypeError
        If ``tokens`` is not integers.
    ValueError
        If it is empty or holds an id outside ``0..num_tokens-1``.
    """
    try:
        arr = np.asarray(tokens)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array of integer token ids: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer token ids for an Embedding, "
                        f"got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= num_tokens:
        raise ValueError(f"{name} must hold token ids in 0..{num_tokens - 1}, "
                         f"got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64, copy=False)

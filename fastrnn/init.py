"""Weight initialisers for the recurrent layers.

An initialiser is a function ``init(shape, rng=None, dtype="float32") -> ndarray`` (``rng`` a
``numpy.random.Generator``, a seed or None). :func:`apply` re-initialises the live parameters of
an ``RNN``, ``LSTM`` or ``GRU`` layer in place::

    from fastrnn import init
    init.apply(lstm, weight_ih=init.glorot_uniform, weight_hh=init.orthogonal, bias=0.0,
               forget_bias=1.0, seed=0)

The weight matrices of the gates are stacked in ``weight_ih`` ``(G*H, I)`` and ``weight_hh``
``(G*H, H)`` (PyTorch's layout; G = 4 for LSTM, 3 for GRU, 1 for RNN); :func:`apply` initialises
each gate's ``(H, columns)`` block separately, so that :func:`orthogonal` gives every gate an
orthogonal ``H x H`` recurrent matrix, :func:`identity` an identity, and :func:`glorot_uniform`
takes ``fan_out = H`` (Keras, which initialises its ``(I, 4H)`` kernel in one piece, takes
``4H``).
"""
import numbers
import re

import numpy as np

from ._validation import as_rng, check_dtype, check_positive_int
from .cell_table import GATES


def _shape(shape, min_ndim=1):
    """Return ``shape`` as a tuple of positive ints with at least ``min_ndim`` entries."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of integers, got {shape!r}") from None
    for d in dims:
        check_positive_int("shape entries", d)
    if len(dims) < min_ndim:
        raise ValueError(f"shape must have at least {min_ndim} dimensions for this "
                         f"initialiser, got {dims}")
    return tuple(int(d) for d in dims)




def _fans(shape):
    """PyTorch's fan_in and fan_out: ``shape[1]`` and ``shape[0]`` times the receptive field."""
    receptive = int(np.prod(shape[2:], dtype=np.int64))
    return shape[1] * receptive, shape[0] * receptive


def zeros(shape, rng=None, dtype="float32"):
    """Zeros.

    Parameters
    ----------
    shape : tuple of int
    rng : numpy.random.Generator, int or None
        Unused; accepted for the initialiser signature.
    dtype : {"float32", "float64"}

    Returns
    -------
    ndarray
    """
    return np.zeros(_shape(shape), dtype=check_dtype(dtype))


def uniform_default(hidden_size):
    """PyTorch's default for recurrent layers: uniform in ``[-1/sqrt(H), 1/sqrt(H)]``.

    Parameters
    ----------
    hidden_size : int
        ``H``, the layer's hidden size.

    Returns
    -------
    callable
        An initialiser ``init(shape, rng=None, dtype="float32")``. Applied with
        :func:`apply` to all weights and biases with ``seed=s``, it reproduces the parameters
        of a layer built with ``seed=s``.

    Examples
    --------
    >>> w = uniform_default(16)((64, 16), rng=0)
    >>> bool(abs(w).max() <= 0.25)
    True
    """
    hidden_size = check_positive_int("hidden_size", hidden_size)
    bound = 1.0 / np.sqrt(hidden_size)

    def init(shape, rng=None, dtype="float32"):
        dtype = check_dtype(dtype)
        return as_rng("rng", rng).uniform(-bound, bound, size=_shape(shape)).astype(dtype)

    init.__name__ = f"uniform_default({hidden_size})"
    init.__doc__ = f"Uniform in [-{bound}, {bound}] (1/sqrt({hidden_size}))."
    return init


def glorot_uniform(shape, rng=None, dtype="float32", gain=1.0):
    """Glorot/Xavier uniform (Glorot and Bengio, 2010): ``U(-a, a)``, ``a = gain *
    sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
        At least two dimensions; ``fan_in = shape[1]``, ``fan_out = shape[0]`` (times the
        product of the other dimensions), as ``torch.nn.init.xavier_uniform_``.
    rng : numpy.random.Generator, int or None
    dtype : {"float32", "float64"}
    gain : float
        Scale factor.

    Returns
    -------
    ndarray
    """
    shape = _shape(shape, min_ndim=2)
    fan_in, fan_out = _fans(shape)
    bound = float(gain) * np.sqrt(6.0 / (fan_in + fan_out))
    return as_rng("rng", rng).uniform(-bound, bound, size=shape).astype(check_dtype(dtype))


def orthogonal(shape, rng=None, dtype="float32", gain=1.0):
    """A (semi-)orthogonal matrix (Saxe et al., 2014), as ``torch.nn.init.orthogonal_``.

    The QR decomposition of a standard normal matrix, with the signs fixed so that the
    distribution is uniform (Haar). For a square shape ``Q^T Q = I``; with more rows than
    columns the columns are orthonormal, with more columns the rows are.

    Parameters
    ----------
    shape : tuple of int
        At least two dimensions; ``shape[1:]`` are flattened into the columns.
    rng : numpy.random.Generator, int or None
    dtype : {"float32", "float64"}
    gain : float
        Scale factor.

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> q = orthogonal((8, 8), rng=0, dtype="float64")
    >>> bool(np.allclose(q.T @ q, np.eye(8)))
    True
    """
    shape = _shape(shape, min_ndim=2)
    rows, cols = shape[0], int(np.prod(shape[1:]))
    flat = as_rng("rng", rng).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)     # sign(diag(r)), with sign(0) taken as +1
    if rows < cols:
        q = q.T
    return (float(gain) * q).reshape(shape).astype(check_dtype(dtype))


def identity(shape, rng=None, dtype="float32", gain=1.0):
    """``gain`` times the identity matrix (``numpy.eye``, for non-square shapes too).

    With :func:`apply` on the recurrent weights of a ReLU RNN this is the IRNN of Le, Jaitly and
    Hinton (2015), "A simple way to initialize recurrent networks of rectified linear units"
    (they use ``gain=1``, inputs small random and zero biases; see :func:`apply`).

    Parameters
    ----------
    shape : tuple of int
        Two dimensions.
    rng : numpy.random.Generator, int or None
        Unused; accepted for the initialiser signature.
    dtype : {"float32", "float64"}
    gain : float
        Scale of the identity.

    Returns
    -------
    ndarray
    """
    shape = _shape(shape, min_ndim=2)
    if len(shape) != 2:
        raise ValueError(f"shape must have two dimensions for identity, got {shape}")
    return (float(gain) * np.eye(*shape)).astype(check_dtype(dtype))


_BY_NAME = {
    "zeros": zeros,
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "orthogonal": orthogonal,
    "identity": identity,
}

_PARAM_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _initialiser(arg_name, value, hidden_size):
    """Resolve an argument of :func:`apply` into a callable, a constant or None."""
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        if value == "uniform_default":
            return uniform_default(hidden_size)
        if value not in _BY_NAME:
            names = ", ".join(map(repr, [*_BY_NAME, "uniform_default"]))
            raise ValueError(f"{arg_name} must be an initialiser, a number or one of {names}, "
                             f"got {value!r}")
        return _BY_NAME[value]
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        if not np.isfinite(value):
            raise ValueError(f"{arg_name} must be finite, got {value}")
        return float(value)
    raise TypeError(f"{arg_name} must be an initialiser (callable), its name, a number or None, "
                    f"got {type(value).__name__}")


def _fill_gates(name, param, init, gates, rng):
    """Initialise ``param`` in place, one ``(H, ...)`` gate block at a time."""
    hidden = param.shape[0] // gates
    block_shape = (hidden,) + param.shape[1:]
    for g in range(gates):
        block = np.asarray(init(block_shape, rng, param.dtype))
        if block.shape != block_shape:
            raise ValueError(f"the initialiser for {name} returned shape {block.shape} for a "
                             f"gate block of shape {block_shape}")
        param[g * hidden:(g + 1) * hidden] = block


def apply(layer, weight_ih=None, weight_hh=None, bias=None, forget_bias=None, seed=None):
    """Re-initialise a recurrent layer's parameters in place.

    Every layer and direction is done, in the order of ``layer.parameters()``; an argument left
    at None leaves those parameters as they are.  The peephole weights of a peephole LSTM and
    the projection ``weight_hr_l{k}`` of an LSTM with ``proj_size > 0`` are left as they are
    (``weight_hh`` of a projected LSTM is ``(4 * hidden, proj_size)``: its gate blocks are
    ``(hidden, proj_size)``).

    Parameters
    ----------
    layer : RNN, LSTM or GRU
        Its live arrays ``layer.parameters()`` are overwritten (their dtype is kept).
    weight_ih, weight_hh : callable, str or float, optional
        Initialiser of the input and recurrent weights, called once per gate with the block
        shape ``(H, columns)``; or a name: "glorot_uniform", "orthogonal", "identity", "zeros",
        "uniform_default" (with the layer's hidden size); or a constant.
    bias : callable, str or float, optional
        Initialiser called for each of ``bias_ih`` and ``bias_hh`` (per gate, with shape
        ``(H,)``); or a constant ``c``, which sets ``bias_ih`` to ``c`` and ``bias_hh`` to 0 so
        that the bias each gate sees is ``c``.
    forget_bias : float, optional
        LSTM only (Jozefowicz et al., 2015; Keras' ``unit_forget_bias``): after ``bias``, rows
        ``H:2H`` (the forget gate) of every ``bias_ih`` are set to ``forget_bias`` and of every
        ``bias_hh`` to 0, so that the total forget-gate bias is exactly ``forget_bias`` (as in
        Keras' single bias vector) rather than ``forget_bias`` plus a random term.
    seed : int or numpy.random.Generator, optional
        Source of randomness; the same seed on the same layer configuration gives the same
        parameters.

    Returns
    -------
    layer
        The same layer, for chaining.

    Raises
    ------
    TypeError
        If ``layer`` is not a recurrent layer or an argument has the wrong type.
    ValueError
        For an unknown initialiser name, ``forget_bias`` on a non-LSTM layer, ``bias`` or
        ``forget_bias`` on a layer without biases, or an initialiser that does not fit a shape
        (e.g. :func:`orthogonal` on a bias). The layer is unchanged when the arguments are
        refused, but an initialiser failing midway leaves the parameters done so far changed.

    Examples
    --------
    >>> import fastrnn
    >>> lstm = fastrnn.LSTM(3, 4, seed=0)
    >>> _ = apply(lstm, weight_hh="orthogonal", bias=0.0, forget_bias=1.0, seed=0)
    >>> lstm.parameters()["bias_ih_l0"].tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if not all(hasattr(layer, a) for a in ("parameters", "hidden_size", "cell")):
        raise TypeError(f"layer must be a fastrnn RNN, LSTM or GRU layer, "
                        f"got {type(layer).__name__}")
    gates = GATES.get(layer.cell)
    if gates is None:
        raise ValueError(f"layer.cell must be one of {', '.join(map(repr, GATES))}, "
                         f"got {layer.cell!r}")
    hidden = layer.hidden_size
    params = layer.parameters()
    inits = {
        "weight_ih": _initialiser("weight_ih", weight_ih, hidden),
        "weight_hh": _initialiser("weight_hh", weight_hh, hidden),
        "bias": _initialiser("bias", bias, hidden),
    }
    has_bias = any(_PARAM_NAME.match(n) and n.startswith("bias") for n in params)
    if forget_bias is not None:
        if layer.cell not in ("lstm", "lstm_peephole"):
            raise ValueError(f"forget_bias applies to LSTM layers only, got a "
                             f"{layer.cell!r} layer")
        if isinstance(forget_bias, (bool, np.bool_)) or not isinstance(forget_bias,
                                                                       numbers.Real):
            raise TypeError(f"forget_bias must be a real number, got {forget_bias!r}")
        if not np.isfinite(forget_bias):
            raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    if not has_bias and (bias is not None or forget_bias is not None):
        raise ValueError("bias and forget_bias need a layer with biases (bias=True)")
    rng = as_rng("seed", seed)

    for name, param in params.items():
        match = _PARAM_NAME.match(name)
        if match is None:
            continue
        kind = match.group(1)
        init = inits["bias" if kind.startswith("bias") else kind]
        if init is None:
            continue
        if isinstance(init, float):
            param[...] = 0.0 if kind == "bias_hh" else init
        else:
            _fill_gates(name, param, init, gates, rng)
    if forget_bias is not None:
        for name, param in params.items():
            match = _PARAM_NAME.match(name)
            if match and match.group(1).startswith("bias"):
                param[hidden:2 * hidden] = forget_bias if match.group(1) == "bias_ih" else 0.0
    return layer


__all__ = ["apply", "glorot_uniform", "identity", "orthogonal", "uniform_default", "zeros"]

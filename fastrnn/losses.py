"""Loss functions: value and gradient with respect to the predictions, in one call.

Every loss is a callable object::

    loss = BinaryCrossentropy(from_logits=True)
    value, grad = loss(y_pred, y_true, mask=None)

``value`` is a Python float and ``grad`` is dL/dy_pred, with ``y_pred``'s shape and dtype
(float32 or float64; other real input is computed in float64).

Masks and reductions
--------------------
Per-timestep losses take ``y_pred`` of shape ``(batch, timesteps, ...)`` and a ``mask`` of shape
``(batch, timesteps)`` (in general: a leading part of the shape of the loss's *elements*, see
below) that marks the valid steps with True or 1 and the padded steps with False or 0. Padded
steps contribute nothing to the value or to the gradient, whatever ``y_pred`` and ``y_true`` hold
there (even NaN or out-of-range class ids).

The elements of a loss are the entries of ``y_pred`` for :class:`BinaryCrossentropy` and
:class:`MeanSquaredError`, and the positions ``y_pred.shape[:-1]`` (one distribution over the
classes each) for :class:`CategoricalCrossentropy`. ``reduction="mean"`` (the default) divides the
sum over the valid elements by their number, ``reduction="sum"`` returns the sum. When no element
is valid the value is 0.0 and the gradient is zero (PyTorch would return NaN).
"""
import numbers

import numpy as np

from ._validation import FLOAT_DTYPES, as_real_array, check_bool, check_choice

REDUCTIONS = ("mean", "sum")


# ---------------------------------------------------------------------------- shared checks

def as_prediction(name, value):
    """Return ``value`` as a float array, keeping float32/float64 and computing others in float64.

    Parameters
    ----------
    name : str
        The argument's name, used in error messages.
    value : array_like
        Real numbers, at least one dimension, not empty.

    Returns
    -------
    ndarray
        float32 or float64. NaN and Inf are kept: they come from a diverging model, not from
        the user's data, and propagate into the loss value.

    Raises
    ------
    TypeError
        If ``value`` is not an array of real numbers.
    ValueError
        If it is a scalar or empty.
    """
    arr = as_real_array(name, value)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if arr.dtype not in FLOAT_DTYPES:
        arr = arr.astype(np.float64)
    return arr


def as_mask(mask, shape, what="y_pred"):
    """Validate a mask of valid positions and broadcast it to ``shape``.

    Parameters
    ----------
    mask : array_like or None
        Booleans, or numbers that are all 0 or 1, of shape ``shape[:mask.ndim]`` (a leading part
        of ``shape``, e.g. ``(batch, timesteps)`` for ``shape == (batch, timesteps, features)``).
    shape : tuple of int
        The shape of the elements the mask selects.
    what : str
        How to describe ``shape`` in error messages.

    Returns
    -------
    ndarray of bool or None
        The mask broadcast to ``shape`` (a read-only view), or None when ``mask`` is None.

    Raises
    ------
    TypeError
        If ``mask`` is not booleans or real numbers.
    ValueError
        If its shape is not a leading part of ``shape`` or a value is neither 0 nor 1.
    """
    if mask is None:
        return None
    arr = as_real_array("mask", mask)
    if arr.ndim == 0 or arr.ndim > len(shape) or arr.shape != tuple(shape[:arr.ndim]):
        raise ValueError(f"mask must have shape {tuple(shape[:2])} or another leading part of "
                         f"{what}'s shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("mask must hold booleans or only the values 0 and 1")
        arr = arr != 0
    return np.broadcast_to(arr.reshape(arr.shape + (1,) * (len(shape) - arr.ndim)), shape)


def as_target(y_true, y_pred):
    """Validate real-valued targets against ``y_pred``: same shape, or ``y_pred.shape[:-1]``.

    The second form is for one output per sample, e.g. ``y_pred`` of shape ``(batch, 1)`` with
    labels of shape ``(batch,)``; the targets are then given the trailing axis of length 1.

    Parameters
    ----------
    y_true : array_like
        Real numbers.
    y_pred : ndarray
        The predictions, already validated.

    Returns
    -------
    ndarray
        Of ``y_pred``'s shape and dtype.

    Raises
    ------
    TypeError
        If ``y_true`` is not an array of real numbers.
    ValueError
        If its shape matches neither form.
    """
    arr = as_real_array("y_true", y_true)
    if arr.shape != y_pred.shape:
        if y_pred.shape[-1] == 1 and arr.shape == y_pred.shape[:-1]:
            arr = arr[..., np.newaxis]
        else:
            extra = f" or {y_pred.shape[:-1]}" if y_pred.shape[-1] == 1 else ""
            raise ValueError(f"y_true must have the shape of y_pred, {y_pred.shape}{extra}; "
                             f"got {arr.shape}")
    return arr.astype(y_pred.dtype, copy=False)


def _check_finite_where(name, arr, valid):
    values = arr if valid is None else arr[valid]
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or Inf")


def sigmoid(x):
    """The logistic function, without overflow for any finite ``x``; keeps ``x``'s dtype.

    Parameters
    ----------
    x : ndarray
        float32 or float64.

    Returns
    -------
    ndarray
    """
    e = np.exp(-np.abs(x))               # in (0, 1], never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` over ``axis``, stable for any finite ``x``; keeps ``x``'s dtype.

    Parameters
    ----------
    x : ndarray
        float32 or float64.
    axis : int
        The class axis.

    Returns
    -------
    ndarray
    """
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


# ---------------------------------------------------------------------------- losses

class Loss:
    """Base class of the losses: validation, masking and reduction.

    Subclasses implement ``_elementwise(y_pred, y_true, valid)``, which returns the loss of each
    element, its gradient with respect to ``y_pred`` and the valid elements (``valid`` narrowed
    further if the loss ignores some targets). Values at invalid elements are ignored.

    Parameters
    ----------
    reduction : {"mean", "sum"}
        Mean over the valid elements, or their sum.
    """

    #: True when the last axis of ``y_pred`` is a class axis that the loss sums over.
    _class_axis = False

    def __init__(self, reduction="mean"):
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def __call__(self, y_pred, y_true, mask=None):
        """Loss value and its gradient with respect to ``y_pred``.

        Parameters
        ----------
        y_pred : array_like
            Predictions (logits where the loss says so), e.g. ``(batch, outputs)`` or
            ``(batch, timesteps, outputs)``.
        y_true : array_like
            Targets; see the loss's class for the accepted forms.
        mask : array_like of bool, optional
            Valid positions, of shape ``(batch,)`` or ``(batch, timesteps)`` (any leading part of
            the elements' shape). Masked positions contribute nothing.

        Returns
        -------
        value : float
        grad : ndarray
            dvalue/dy_pred, of ``y_pred``'s shape and dtype (float64 for non-float input).

        Raises
        ------
        TypeError, ValueError
            For inputs of the wrong kind or shape, and for NaN or Inf in ``y_true``.
        """
        y_pred = as_prediction("y_pred", y_pred)
        if self._class_axis and y_pred.ndim < 2:
            raise ValueError(f"y_pred must have a class axis (shape (..., classes)), "
                             f"got shape {y_pred.shape}")
        shape = y_pred.shape[:-1] if self._class_axis else y_pred.shape
        valid = as_mask(mask, shape)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            elem_loss, elem_grad, valid = self._elementwise(y_pred, y_true, valid)
        count = elem_loss.size if valid is None else int(np.count_nonzero(valid))
        scale = 1.0 if self.reduction == "sum" else 1.0 / max(count, 1)
        if valid is not None:
            elem_loss = np.where(valid, elem_loss, 0)
            grad_valid = valid[..., np.newaxis] if self._class_axis else valid
            elem_grad = np.where(grad_valid, elem_grad, 0)
        value = float(np.sum(elem_loss, dtype=np.float64)) * scale
        grad = (elem_grad * scale).astype(y_pred.dtype, copy=False)
        return value, grad

    def _elementwise(self, y_pred, y_true, valid):
        raise NotImplementedError

    def get_config(self):
        """The constructor arguments, as JSON-able values.

        Returns
        -------
        dict
        """
        return {"reduction": self.reduction}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, by default from logits (as ``torch.nn.BCEWithLogitsLoss``).

    From a logit ``x`` and a target ``y`` in [0, 1]:
    ``softplus(x) - x * y = max(x, 0) - x * y + log1p(exp(-|x|))``, with gradient
    ``sigmoid(x) - y``; exact and finite for any finite logit (no ``log(sigmoid(x))``).

    Parameters
    ----------
    from_logits : bool
        True (the default, and what fastrnn's models output): ``y_pred`` holds logits.
        False: ``y_pred`` holds probabilities in [0, 1]; the logarithms are clamped at -100 as
        in ``torch.nn.BCELoss``, so the value stays finite at 0 and 1 (prefer logits).
    reduction : {"mean", "sum"}
        Mean over the valid elements, or their sum.

    Notes
    -----
    ``y_true`` has ``y_pred``'s shape, or ``y_pred.shape[:-1]`` when the last axis of ``y_pred``
    has length 1 (labels of shape ``(batch,)`` for outputs of shape ``(batch, 1)``). Its values
    are in [0, 1] (soft labels are allowed).

    Examples
    --------
    >>> import numpy as np
    >>> value, grad = BinaryCrossentropy()(np.array([[0.0]]), np.array([1.0]))
    >>> round(value, 6), grad.tolist()
    (0.693147, [[-0.5]])
    """

    def __init__(self, from_logits=True, reduction="mean"):
        super().__init__(reduction)
        self.from_logits = check_bool("from_logits", from_logits)

    def _elementwise(self, y_pred, y_true, valid):
        y = as_target(y_true, y_pred)
        _check_finite_where("y_true", y, valid)
        values = y if valid is None else y[valid]
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError("y_true must hold values in [0, 1] for binary cross-entropy, got "
                             f"values from {values.min()} to {values.max()}")
        x = y_pred
        if not self.from_logits:
            probs = x if valid is None else x[valid]
            if probs.size and not ((probs >= 0) & (probs <= 1)).all():
                raise ValueError("y_pred must hold probabilities in [0, 1] with "
                                 "from_logits=False (pass logits with from_logits=True)")
        if self.from_logits:
            loss = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
            grad = sigmoid(x) - y
        else:
            log_p = np.maximum(np.log(x), -100)
            log_1mp = np.maximum(np.log1p(-x), -100)
            loss = -(y * log_p + (1 - y) * log_1mp)
            grad = (x - y) / np.maximum(x * (1 - x), 1e-12)
        return loss, grad, valid

    def get_config(self):
        return {"from_logits": self.from_logits, **super().get_config()}


class CategoricalCrossentropy(Loss):
    """Cross-entropy from logits over the last axis (as ``torch.nn.CrossEntropyLoss``).

    With ``log_softmax(x) = x - logsumexp(x)`` (stable for any finite logits), the loss of one
    position is ``-sum(t * log_softmax(x))`` and its gradient ``softmax(x) * sum(t) - t``.

    Parameters
    ----------
    ignore_index : int, optional
        With integer targets, positions whose target equals it are left out like masked ones
        (e.g. padding tokens), as in PyTorch.
    reduction : {"mean", "sum"}
        Mean over the valid positions (not over the classes), or their sum.

    Notes
    -----
    ``y_pred`` has shape ``(..., classes)``. ``y_true`` is either

    - integer class ids in ``0..classes-1`` of shape ``y_pred.shape[:-1]`` (floats holding whole
      numbers are accepted too; this is Keras' "sparse" form), or
    - one-hot rows or class probabilities of ``y_pred``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> value, grad = CategoricalCrossentropy()(np.zeros((1, 4)), np.array([2]))
    >>> round(value, 6), grad.tolist()
    (1.386294, [[0.25, 0.25, -0.75, 0.25]])
    """

    _class_axis = True

    def __init__(self, ignore_index=None, reduction="mean"):
        super().__init__(reduction)
        if ignore_index is not None and (isinstance(ignore_index, (bool, np.bool_))
                                         or not isinstance(ignore_index, numbers.Integral)):
            raise TypeError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _elementwise(self, y_pred, y_true, valid):
        classes = y_pred.shape[-1]
        log_p = log_softmax(y_pred)
        t = as_real_array("y_true", y_true)
        if t.shape == y_pred.shape[:-1]:
            ids = self._class_ids(t, classes, valid)
            if self.ignore_index is not None:
                keep = ids != self.ignore_index
                valid = keep if valid is None else valid & keep
            ids = np.where(valid, ids, 0) if valid is not None else ids
            picked = np.take_along_axis(log_p, ids[..., np.newaxis], axis=-1)[..., 0]
            loss = -picked
            grad = np.exp(log_p)
            np.put_along_axis(grad, ids[..., np.newaxis],
                              np.take_along_axis(grad, ids[..., np.newaxis], axis=-1) - 1,
                              axis=-1)
        elif t.shape == y_pred.shape:
            if self.ignore_index is not None:
                raise ValueError("ignore_index applies only to integer class-id targets of "
                                 f"shape {y_pred.shape[:-1]}; use mask with one-hot targets")
            t = t.astype(y_pred.dtype, copy=False)
            _check_finite_where("y_true", t, valid)
            # 0 * log_p is 0 even where log_p is hugely negative (finite for finite logits).
            loss = -np.sum(t * log_p, axis=-1)
            grad = np.exp(log_p) * np.sum(t, axis=-1, keepdims=True) - t
        else:
            raise ValueError(f"y_true must be class ids of shape {y_pred.shape[:-1]} or one-hot "
                             f"/ probabilities of shape {y_pred.shape}, got {t.shape}")
        return loss, grad, valid

    def _class_ids(self, t, classes, valid):
        """Integer class ids from ``t``, checked at the valid positions."""
        if t.dtype.kind == "b":
            raise TypeError("y_true class ids must be integers, got dtype bool")
        if t.dtype.kind == "f":
            _check_finite_where("y_true", t, valid)
            checked = t if valid is None else t[valid]
            if not np.array_equal(checked, np.round(checked)):
                raise TypeError("y_true of shape y_pred.shape[:-1] must hold integer class ids, "
                                "got fractional values")
            t = np.where(np.isfinite(t), t, 0).astype(np.int64)
        checked = t if valid is None else t[valid]
        if self.ignore_index is not None:
            checked = checked[checked != self.ignore_index]
        if checked.size and (checked.min() < 0 or checked.max() >= classes):
            raise ValueError(f"y_true class ids must be in 0..{classes - 1} (y_pred has "
                             f"{classes} classes), got values from {checked.min()} to "
                             f"{checked.max()}")
        return t.astype(np.intp, copy=False)

    def get_config(self):
        return {"ignore_index": self.ignore_index, **super().get_config()}


class MeanSquaredError(Loss):
    """Squared error ``(y_pred - y_true) ** 2``, averaged over the valid elements.

    Parameters
    ----------
    reduction : {"mean", "sum"}
        Mean over the valid elements, or their sum.

    Notes
    -----
    ``y_true`` has ``y_pred``'s shape, or ``y_pred.shape[:-1]`` when the last axis of ``y_pred``
    has length 1.

    Examples
    --------
    >>> import numpy as np
    >>> value, grad = MeanSquaredError()(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    >>> value, grad.tolist()
    (5.0, [1.0, 3.0])
    """

    def _elementwise(self, y_pred, y_true, valid):
        y = as_target(y_true, y_pred)
        _check_finite_where("y_true", y, valid)
        diff = y_pred - y
        return diff * diff, 2 * diff, valid


#: Names accepted by :func:`get`, in lower case.
_ALIASES = {
    "bce": BinaryCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "cce": CategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": CategoricalCrossentropy,
    "crossentropy": CategoricalCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(name_or_obj):
    """Resolve a loss given by name, class or instance.

    Parameters
    ----------
    name_or_obj : str, Loss subclass, or callable
        A name (case-insensitive): "bce" / "binary_crossentropy" (from logits),
        "cce" / "categorical_crossentropy" / "sparse_categorical_crossentropy" (from logits,
        integer or one-hot targets), "mse" / "mean_squared_error"; a :class:`Loss` subclass
        (instantiated with its defaults); or a loss instance or any callable following the
        protocol ``value, grad = loss(y_pred, y_true, mask=None)``, returned as is.

    Returns
    -------
    callable

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.
    """
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower()
        if key not in _ALIASES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, _ALIASES))}, "
                             f"got {name_or_obj!r}")
        return _ALIASES[key]()
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Loss):
        return name_or_obj()
    if callable(name_or_obj) and not isinstance(name_or_obj, type):
        return name_or_obj
    raise TypeError(f"loss must be a name, a Loss or a callable, got {name_or_obj!r}")


__all__ = [
    "BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "MeanSquaredError", "get",
    "log_softmax", "sigmoid",
]

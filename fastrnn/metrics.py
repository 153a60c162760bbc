"""Metrics: plain functions ``metric(y_pred, y_true, mask=None) -> float``.

Predictions are what the models output: logits for classification. Masks mark valid positions
as in :mod:`fastrnn.losses` (shape ``(batch,)`` or ``(batch, timesteps)``, any leading part of the
positions' shape); masked positions are left out. A metric over no valid position is 0.0.

Every metric is a mean over the valid positions of one batch; to combine batches of different
sizes exactly, weight each batch's value by its number of valid positions.
"""
import numpy as np

from ._validation import as_list
from .losses import as_mask, as_prediction, as_target


def _masked_mean(values, valid):
    """Mean of ``values`` over ``valid`` (all when None), as a float; 0.0 over nothing."""
    if valid is not None:
        values = values[valid]
    return float(np.mean(values, dtype=np.float64)) if values.size else 0.0


def binary_accuracy(y_pred, y_true, mask=None):
    """Fraction of correct binary predictions from logits (threshold 0, i.e. probability 0.5).

    Parameters
    ----------
    y_pred : array_like
        Logits, any shape (e.g. ``(batch, 1)``, ``(batch, timesteps, 1)``, ``(batch, labels)``).
    y_true : array_like
        Labels 0/1 (or probabilities, true when > 0.5) of ``y_pred``'s shape, or of
        ``y_pred.shape[:-1]`` when the last axis of ``y_pred`` has length 1.
    mask : array_like of bool, optional
        Valid positions: a leading part of ``y_pred``'s shape.

    Returns
    -------
    float

    Examples
    --------
    >>> binary_accuracy([[2.0], [-1.0], [0.5]], [1, 1, 1])
    0.6666666666666666
    """
    y_pred = as_prediction("y_pred", y_pred)
    y_true = as_target(y_true, y_pred)
    valid = as_mask(mask, y_pred.shape)
    return _masked_mean((y_pred > 0) == (y_true > 0.5), valid)


def categorical_accuracy(y_pred, y_true, mask=None):
    """Fraction of positions whose largest logit is the target class.

    Parameters
    ----------
    y_pred : array_like
        Logits of shape ``(..., classes)``.
    y_true : array_like
        Class ids of shape ``y_pred.shape[:-1]``, or one-hot rows / probabilities of
        ``y_pred``'s shape (the target class is their argmax).
    mask : array_like of bool, optional
        Valid positions: a leading part of ``y_pred.shape[:-1]``.

    Returns
    -------
    float

    Examples
    --------
    >>> categorical_accuracy([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]], [1, 2])
    0.5
    """
    y_pred = as_prediction("y_pred", y_pred)
    if y_pred.ndim < 2:
        raise ValueError(f"y_pred must have a class axis (shape (..., classes)), "
                         f"got shape {y_pred.shape}")
    positions = y_pred.shape[:-1]
    valid = as_mask(mask, positions)
    y_true = np.asarray(y_true)
    if y_true.dtype.kind not in "biuf":
        raise TypeError(f"y_true must be an array of real numbers, got dtype {y_true.dtype}")
    if y_true.shape == y_pred.shape:
        y_true = np.argmax(y_true, axis=-1)
    elif y_true.shape != positions:
        raise ValueError(f"y_true must be class ids of shape {positions} or one-hot rows of "
                         f"shape {y_pred.shape}, got {y_true.shape}")
    return _masked_mean(np.argmax(y_pred, axis=-1) == y_true, valid)


def accuracy(y_pred, y_true, mask=None):
    """Accuracy from logits, binary or multi-class according to the shapes.

    - Binary (:func:`binary_accuracy`, threshold 0) when ``y_pred`` has one logit per position
      (last axis of length 1) or is one-dimensional (one logit per sample).
    - Multi-class (:func:`categorical_accuracy`, argmax) otherwise, with class ids of shape
      ``y_pred.shape[:-1]`` or one-hot targets of ``y_pred``'s shape.

    For several independent binary labels per position (multi-label), call
    :func:`binary_accuracy` directly.

    Parameters
    ----------
    y_pred : array_like
        Logits.
    y_true : array_like
        Targets, as above.
    mask : array_like of bool, optional
        Valid positions, e.g. ``(batch, timesteps)``.

    Returns
    -------
    float

    Examples
    --------
    >>> accuracy([[1.5], [-0.5]], [1, 1])
    0.5
    >>> accuracy([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]], [1, 0])
    1.0
    """
    y_pred = as_prediction("y_pred", y_pred)
    if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
        return binary_accuracy(y_pred, y_true, mask)
    return categorical_accuracy(y_pred, y_true, mask)


def mse(y_pred, y_true, mask=None):
    """Mean squared error over the valid elements.

    Parameters
    ----------
    y_pred : array_like
        Predictions.
    y_true : array_like
        Targets of ``y_pred``'s shape, or of ``y_pred.shape[:-1]`` when its last axis has
        length 1.
    mask : array_like of bool, optional
        Valid positions: a leading part of ``y_pred``'s shape.

    Returns
    -------
    float

    Examples
    --------
    >>> mse([1.0, 3.0], [0.0, 0.0])
    5.0
    """
    y_pred = as_prediction("y_pred", y_pred)
    diff = y_pred - as_target(y_true, y_pred)
    return _masked_mean(diff * diff, as_mask(mask, y_pred.shape))


def mae(y_pred, y_true, mask=None):
    """Mean absolute error over the valid elements.

    Parameters
    ----------
    y_pred : array_like
        Predictions.
    y_true : array_like
        Targets of ``y_pred``'s shape, or of ``y_pred.shape[:-1]`` when its last axis has
        length 1.
    mask : array_like of bool, optional
        Valid positions: a leading part of ``y_pred``'s shape.

    Returns
    -------
    float

    Examples
    --------
    >>> mae([1.0, -3.0], [0.0, 0.0])
    2.0
    """
    y_pred = as_prediction("y_pred", y_pred)
    diff = y_pred - as_target(y_true, y_pred)
    return _masked_mean(np.abs(diff), as_mask(mask, y_pred.shape))


_ALIASES = {
    "accuracy": accuracy,
    "acc": accuracy,
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": categorical_accuracy,
    "mse": mse,
    "mean_squared_error": mse,
    "mae": mae,
    "mean_absolute_error": mae,
}


def get(name):
    """Resolve a metric given by name (case-insensitive) or as a function.

    Parameters
    ----------
    name : str or callable
        "accuracy" / "acc", "binary_accuracy", "categorical_accuracy" /
        "sparse_categorical_accuracy", "mse" / "mean_squared_error", "mae" /
        "mean_absolute_error"; or a callable ``metric(y_pred, y_true, mask=None)``, returned
        as is.

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
    if isinstance(name, str):
        key = name.lower()
        if key not in _ALIASES:
            raise ValueError(f"metric must be one of {', '.join(map(repr, _ALIASES))}, "
                             f"got {name!r}")
        return _ALIASES[key]
    if callable(name):
        return name
    raise TypeError(f"metric must be a name or a callable, got {name!r}")


def get_all(metrics, argument="metrics"):
    """Resolve a sequence of metrics (names or callables) at once, before they are needed.

    Parameters
    ----------
    metrics : sequence of str or callable
    argument : str
        The argument's name in the error messages.

    Returns
    -------
    list of (str, callable)
        Each metric's name in the logs (a callable's ``__name__``) and its function.
    """
    metrics = as_list(argument, metrics, "metric names or callables, e.g. ('accuracy',)")
    named = []
    for i, metric in enumerate(metrics):
        try:
            function = get(metric)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{argument}[{i}]: {exc}") from None
        named.append((metric if isinstance(metric, str) else
                      getattr(metric, "__name__", f"metric_{i}"), function))
    return named


__all__ = ["accuracy", "binary_accuracy", "categorical_accuracy", "get", "get_all", "mae", "mse"]

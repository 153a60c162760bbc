"""Gradient clipping in place, as ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``."""
import math

import numpy as np

from .._validation import check_bool, check_float_ndarray, check_mapping, check_real


def _present(grads):
    """The gradient arrays of ``grads`` (None values skipped), each checked to be clippable."""
    check_mapping("grads", grads)
    arrays = []
    for name, g in grads.items():
        if g is None:
            continue
        check_float_ndarray(f"grads[{name!r}]", g, " (clipping works in place)")
        arrays.append(g)
    return arrays


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the norm is taken over all arrays together, and every
    array is multiplied by ``max_norm / (norm + 1e-6)`` when that factor is below 1 (that is,
    when ``norm + 1e-6 > max_norm``).

    Parameters
    ----------
    grads : dict of str to ndarray
        float32/float64 gradients, modified in place; None values are skipped.
    max_norm : float
        Largest allowed norm, >= 0.
    norm_type : float
        Order of the norm (2 for L2, ``math.inf`` for the largest absolute value), > 0.
    error_if_nonfinite : bool
        Raise ValueError, instead of scaling, when the norm is NaN or infinite.

    Returns
    -------
    float
        The global norm before clipping.

    Examples
    --------
    >>> import numpy as np
    >>> grads = {"w": np.array([3.0, 4.0])}
    >>> clip_grad_norm(grads, 1.0)
    5.0
    >>> np.round(grads["w"], 6).tolist()
    [0.6, 0.8]
    """
    max_norm = check_real("max_norm", max_norm)
    norm_type = check_real("norm_type", norm_type, low_open=True)
    error_if_nonfinite = check_bool("error_if_nonfinite", error_if_nonfinite)
    arrays = _present(grads)
    if not arrays:
        return 0.0
    if norm_type == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in arrays)
    else:
        per_array = np.array([np.linalg.norm(g.ravel(), ord=norm_type) for g in arrays],
                             dtype=np.float64)
        total = float(np.linalg.norm(per_array, ord=norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(f"the total norm of order {norm_type} of the gradients is "
                         f"{total}; they cannot be clipped")
    coef = max_norm / (total + 1e-6)
    if coef < 1 or math.isnan(coef):
        for g in arrays:
            g *= coef
    return total


def clip_grad_value(grads, clip_value):
    """Clip every gradient element in place to ``[-clip_value, clip_value]``.

    As ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    grads : dict of str to ndarray
        float32/float64 gradients, modified in place; None values are skipped.
    clip_value : float
        Largest allowed absolute value, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> grads = {"w": np.array([-3.0, 0.5, 2.0])}
    >>> clip_grad_value(grads, 1.0)
    >>> grads["w"].tolist()
    [-1.0, 0.5, 1.0]
    """
    clip_value = check_real("clip_value", clip_value)
    for g in _present(grads):
        np.clip(g, -clip_value, clip_value, out=g)

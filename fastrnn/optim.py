"""Optimizers, gradient clipping and learning-rate schedules, with PyTorch's exact formulas.

Parameters and gradients are dicts of NumPy arrays with the same keys (e.g.
``"0.weight_ih_l0"``)::

    opt = Adam(lr=1e-3)
    opt.step(params, grads)          # updates the arrays of ``params`` in place

Each optimizer performs, element for element, the update of its ``torch.optim`` namesake with the
same options (PyTorch's single-tensor CPU path), in the parameters' dtype (float32 or float64).
State (moment buffers, step counts) is kept per parameter name and can be saved and restored
with :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict`, so that training resumed
from a checkpoint continues exactly like uninterrupted training.
"""
import math
import numbers

import numpy as np

from ._validation import FLOAT_DTYPES, check_bool, check_choice


# ---------------------------------------------------------------------------- argument checks

def _real(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a real number in the interval, else raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if math.isnan(value) or below or above:
        interval = (("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]"))
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _count(name, value, low=0):
    """Return ``value`` as an int if it is an integer >= ``low``, else raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_mapping(name, value):
    if not hasattr(value, "keys") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{name} must be a dict of names to arrays, got {type(value).__name__}")


def _lerp_(start, end, weight):
    """``start += weight * (end - start)`` in place, rounded as ``torch.lerp``."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


# ---------------------------------------------------------------------------- optimizers

class Optimizer:
    """Base class of the optimizers: argument checks, per-parameter state, state dicts.

    Subclasses set ``_buffer_kinds`` (the names of their per-parameter buffers) and implement
    ``_update(name, param, grad, step)``, which changes ``param`` in place; ``step`` counts that
    parameter's updates, from 1.

    Parameters
    ----------
    lr : float
        Learning rate, >= 0; settable later through :attr:`lr` (e.g. by a schedule).
    """

    _buffer_kinds = ()

    def __init__(self, lr):
        self.lr = lr
        self.iterations = 0          # calls of step()
        self._steps = {}             # parameter name -> number of updates
        self._buffers = {}           # (kind, parameter name) -> ndarray

    @property
    def lr(self):
        """float: The learning rate used by the next :meth:`step`."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _real("lr", value)

    def get_config(self):
        """The constructor arguments, as JSON-able values.

        Returns
        -------
        dict
        """
        return {"lr": self.lr}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ stepping

    def step(self, params, grads):
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        params : dict of str to ndarray
            The live float32/float64 parameter arrays (writeable), by name.
        grads : dict of str to array_like
            Exactly the names of ``params``; each gradient has its parameter's shape and is
            cast to its dtype. A gradient of None leaves that parameter (and its state)
            unchanged, like a PyTorch parameter whose ``.grad`` is None.

        Raises
        ------
        TypeError
            If an argument is not a dict, a parameter is not a float ndarray, or a gradient is
            not real numbers.
        ValueError
            If the names differ, a shape differs, a parameter is read-only, or a saved buffer
            (from :meth:`load_state_dict`) does not match its parameter.
        """
        pairs = self._check(params, grads)
        for name, param, grad in pairs:
            step = self._steps.get(name, 0) + 1
            self._update(name, param, grad, step)
            self._steps[name] = step
        self.iterations += 1

    def _check(self, params, grads):
        """Validate everything before any parameter changes; return (name, param, grad)s."""
        _check_mapping("params", params)
        _check_mapping("grads", grads)
        missing = sorted(set(params) - set(grads))
        unexpected = sorted(set(grads) - set(params))
        if missing or unexpected:
            raise ValueError(f"grads must have the names of params: missing {missing}, "
                             f"unexpected {unexpected}")
        pairs = []
        for name, param in params.items():
            if not isinstance(param, np.ndarray) or param.dtype not in FLOAT_DTYPES:
                raise TypeError(f"params[{name!r}] must be a float32 or float64 ndarray, got "
                                f"{getattr(param, 'dtype', type(param).__name__)}")
            if not param.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only; optimizers update in place")
            grad = grads[name]
            if grad is None:
                continue
            grad = np.asarray(grad)
            if grad.dtype.kind not in "biuf":
                raise TypeError(f"grads[{name!r}] must be real numbers, got dtype {grad.dtype}")
            if grad.shape != param.shape:
                raise ValueError(f"grads[{name!r}] must have the shape of its parameter "
                                 f"{param.shape}, got {grad.shape}")
            for kind in self._buffer_kinds:
                buf = self._buffers.get((kind, name))
                if buf is not None and buf.shape != param.shape:
                    raise ValueError(f"optimizer state {kind}.{name} has shape {buf.shape}, "
                                     f"but the parameter has shape {param.shape}")
            pairs.append((name, param, grad.astype(param.dtype, copy=False)))
        return pairs

    def _buffer(self, kind, name, param, fill=0.0):
        """The ``kind`` buffer of parameter ``name``, created filled with ``fill``."""
        buf = self._buffers.get((kind, name))
        if buf is None:
            buf = self._buffers[(kind, name)] = np.full_like(param, fill)
        return buf

    def _update(self, name, param, grad, step):
        raise NotImplementedError

    # ------------------------------------------------------------------ state

    def state_dict(self):
        """The optimizer's configuration and state, as JSON-able values and NumPy arrays.

        Returns
        -------
        dict
            ``{"config": {"name": class name, "lr": ..., ...}, "step": int (calls of step),
            "param_steps": {parameter name: int}, "buffers": {"<kind>.<parameter name>":
            ndarray}}``; the arrays are copies.
        """
        return {
            "config": {"name": type(self).__name__, **self.get_config()},
            "step": self.iterations,
            "param_steps": dict(self._steps),
            "buffers": {f"{kind}.{name}": buf.copy() for (kind, name), buf in
                        self._buffers.items()},
        }

    def load_state_dict(self, state_dict):
        """Restore the configuration (learning rate included) and state of :meth:`state_dict`.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict` of the same optimizer class (possibly after a
            round trip through JSON and ``.npz`` files: lists are accepted for tuples).

        Raises
        ------
        TypeError, ValueError
            If it is not such a dict, names another optimizer class, or holds bad values.
            Nothing is changed then.
        """
        self.__dict__.update(type(self).from_state_dict(state_dict).__dict__)

    @classmethod
    def from_state_dict(cls, state_dict):
        """A new optimizer of this class with the configuration and state of ``state_dict``.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict` of an optimizer of this class.

        Returns
        -------
        Optimizer

        Raises
        ------
        TypeError, ValueError
            As :meth:`load_state_dict`.
        """
        _check_mapping("state_dict", state_dict)
        keys = {"config", "step", "param_steps", "buffers"}
        if set(state_dict) != keys:
            raise ValueError(f"state_dict must have the keys {sorted(keys)}, "
                             f"got {sorted(state_dict)}")
        _check_mapping("state_dict['config']", state_dict["config"])
        config = dict(state_dict["config"])
        name = config.pop("name", None)
        if name != cls.__name__:
            raise ValueError(f"state_dict is for optimizer {name!r}, not {cls.__name__}")
        if "betas" in config:
            config["betas"] = tuple(config["betas"])
        fresh = cls(**config)
        fresh.iterations = _count("state_dict['step']", state_dict["step"])
        _check_mapping("state_dict['param_steps']", state_dict["param_steps"])
        fresh._steps = {str(k): _count(f"state_dict['param_steps'][{k!r}]", v)
                        for k, v in state_dict["param_steps"].items()}
        _check_mapping("state_dict['buffers']", state_dict["buffers"])
        for key, value in state_dict["buffers"].items():
            kind, _, param_name = str(key).partition(".")
            if kind not in cls._buffer_kinds or not param_name:
                raise ValueError(f"state_dict['buffers'] has an unknown entry {key!r}; "
                                 f"{cls.__name__} keeps {list(cls._buffer_kinds)}")
            arr = np.array(value)     # a copy
            if arr.dtype not in FLOAT_DTYPES:
                raise TypeError(f"state_dict['buffers'][{key!r}] must be float32 or float64, "
                                f"got {arr.dtype}")
            fresh._buffers[(kind, param_name)] = arr
        return fresh


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    With ``g = grad + weight_decay * param``: ``buf = g`` at the first step, then
    ``buf = momentum * buf + (1 - dampening) * g``; the direction is ``g + momentum * buf`` with
    Nesterov, ``buf`` with momentum, ``g`` without; ``param -= lr * direction``.

    Parameters
    ----------
    lr : float
        Learning rate.
    momentum : float
        Momentum factor, >= 0.
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float
        L2 penalty added to the gradient, >= 0.
    dampening : float
        Dampening of the momentum, >= 0.
    """

    _buffer_kinds = ("momentum",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(lr)
        self.momentum = _real("momentum", momentum)
        self.nesterov = check_bool("nesterov", nesterov)
        self.weight_decay = _real("weight_decay", weight_decay)
        self.dampening = _real("dampening", dampening)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0, got "
                             f"momentum={self.momentum}, dampening={self.dampening}")

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "dampening": self.dampening}

    def _update(self, name, param, grad, step):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        if self.momentum != 0:
            buf = self._buffers.get(("momentum", name))
            if buf is None:
                buf = self._buffers[("momentum", name)] = grad.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), as ``torch.optim.Adam``; with ``decoupled`` decay, AdamW.

    With ``g = grad + weight_decay * param`` (L2 penalty, Adam) or ``param *= 1 - lr *
    weight_decay`` first (decoupled, :class:`AdamW`): ``m = lerp(m, g, 1 - beta1)``,
    ``v = beta2 * v + (1 - beta2) * g * g``, and
    ``param -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``
    (eps added after the bias correction of ``v``, as PyTorch does).

    Parameters
    ----------
    lr : float
        Learning rate.
    betas : tuple of two floats
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        L2 penalty added to the gradient, >= 0.
    amsgrad : bool
        Use the maximum of the second moments so far (Reddi et al., 2018).
    """

    _buffer_kinds = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (_real("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                      _real("betas[1]", betas[1], 0.0, 1.0, high_open=True))
        self.eps = _real("eps", eps)
        self.weight_decay = _real("weight_decay", weight_decay)
        self.amsgrad = check_bool("amsgrad", amsgrad)

    def get_config(self):
        return {**super().get_config(), "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad}

    def _update(self, name, param, grad, step):
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self._decoupled:
                param *= 1 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * param
        exp_avg = self._buffer("exp_avg", name, param)
        exp_avg_sq = self._buffer("exp_avg_sq", name, param)
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        if self.amsgrad:
            second = self._buffer("max_exp_avg_sq", name, param)
            np.maximum(second, exp_avg_sq, out=second)
        else:
            second = exp_avg_sq
        denom = np.sqrt(second) / bias_correction2_sqrt + self.eps
        param += (-step_size * exp_avg) / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019), as ``torch.optim.AdamW``.

    The parameters shrink by ``1 - lr * weight_decay`` before the Adam update, which itself
    uses the plain gradient.

    Parameters
    ----------
    lr : float
        Learning rate.
    betas : tuple of two floats
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        Decoupled weight decay coefficient, >= 0.
    amsgrad : bool
        Use the maximum of the second moments so far.
    """

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton), as ``torch.optim.RMSprop``.

    With ``g = grad + weight_decay * param``: ``sq = alpha * sq + (1 - alpha) * g * g``;
    ``avg = sqrt(sq) + eps`` (centered: ``sqrt(sq - mean_g**2) + eps`` with
    ``mean_g = lerp(mean_g, g, 1 - alpha)``); then ``param -= lr * g / avg``, or with momentum
    ``buf = momentum * buf + g / avg; param -= lr * buf``.

    Parameters
    ----------
    lr : float
        Learning rate.
    alpha : float
        Smoothing constant of the squared-gradient average, >= 0.
    eps : float
        Added to the denominator (outside the square root), >= 0.
    momentum : float
        Momentum factor, >= 0.
    weight_decay : float
        L2 penalty added to the gradient, >= 0.
    centered : bool
        Normalise by an estimate of the gradient's variance instead of its second moment.
    """

    _buffer_kinds = ("square_avg", "grad_avg", "momentum")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0,
                 centered=False):
        super().__init__(lr)
        self.alpha = _real("alpha", alpha)
        self.eps = _real("eps", eps)
        self.momentum = _real("momentum", momentum)
        self.weight_decay = _real("weight_decay", weight_decay)
        self.centered = check_bool("centered", centered)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "eps": self.eps,
                "momentum": self.momentum, "weight_decay": self.weight_decay,
                "centered": self.centered}

    def _update(self, name, param, grad, step):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        square_avg = self._buffer("square_avg", name, param)
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * grad * grad
        if self.centered:
            grad_avg = self._buffer("grad_avg", name, param)
            _lerp_(grad_avg, grad, 1 - self.alpha)
            avg = np.sqrt(square_avg + (-1 * grad_avg) * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += self.eps
        if self.momentum > 0:
            buf = self._buffer("momentum", name, param)
            buf *= self.momentum
            buf += grad / avg
            param -= self.lr * buf
        else:
            param += (-self.lr * grad) / avg


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), as ``torch.optim.Adagrad``.

    With ``g = grad + weight_decay * param``: ``sum += g * g``;
    ``param -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)``.

    Parameters
    ----------
    lr : float
        Learning rate.
    eps : float
        Added to the denominator, >= 0.
    lr_decay : float
        Learning-rate decay per step, >= 0.
    weight_decay : float
        L2 penalty added to the gradient, >= 0.
    initial_accumulator_value : float
        Starting value of the sum of squared gradients, >= 0.
    """

    _buffer_kinds = ("sum",)

    def __init__(self, lr=1e-2, eps=1e-10, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0):
        super().__init__(lr)
        self.eps = _real("eps", eps)
        self.lr_decay = _real("lr_decay", lr_decay)
        self.weight_decay = _real("weight_decay", weight_decay)
        self.initial_accumulator_value = _real("initial_accumulator_value",
                                               initial_accumulator_value)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "lr_decay": self.lr_decay,
                "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value}

    def _update(self, name, param, grad, step):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        clr = self.lr / (1 + (step - 1) * self.lr_decay)
        state_sum = self._buffer("sum", name, param, self.initial_accumulator_value)
        state_sum += grad * grad
        std = np.sqrt(state_sum)
        std += self.eps
        param += (-clr * grad) / std


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop,
               "adagrad": Adagrad}


def get(name_or_obj, **kwargs):
    """Resolve an optimizer given by name, class or instance.

    Parameters
    ----------
    name_or_obj : str, Optimizer subclass or Optimizer
        "sgd", "adam", "adamw", "rmsprop" or "adagrad" (case-insensitive), or a class: built
        with ``kwargs``; or an instance, returned as is (``kwargs`` must then be empty).
    **kwargs
        Constructor arguments, e.g. ``lr=0.1``.

    Returns
    -------
    Optimizer

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else, or keyword arguments given with an instance.
    """
    if isinstance(name_or_obj, Optimizer):
        if kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} cannot be applied to an "
                            "optimizer instance; pass its name or class instead")
        return name_or_obj
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower()
        if key not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, _OPTIMIZERS))}, "
                             f"got {name_or_obj!r}")
        return _OPTIMIZERS[key](**kwargs)
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Optimizer):
        return name_or_obj(**kwargs)
    raise TypeError(f"optimizer must be a name, an Optimizer class or instance, "
                    f"got {name_or_obj!r}")


# ---------------------------------------------------------------------------- clipping

def _present(grads):
    _check_mapping("grads", grads)
    arrays = []
    for name, g in grads.items():
        if g is None:
            continue
        if not isinstance(g, np.ndarray) or g.dtype not in FLOAT_DTYPES:
            raise TypeError(f"grads[{name!r}] must be a float32 or float64 ndarray (clipping "
                            f"works in place), got {getattr(g, 'dtype', type(g).__name__)}")
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
    max_norm = _real("max_norm", max_norm)
    norm_type = _real("norm_type", norm_type, low_open=True)
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
    if not math.isfinite(total):
        if error_if_nonfinite:
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
    clip_value = _real("clip_value", clip_value)
    for g in _present(grads):
        np.clip(g, -clip_value, clip_value, out=g)


# ---------------------------------------------------------------------------- schedules

class LRScheduler:
    """Base class of the learning-rate schedules, called once per epoch with :meth:`step`.

    As in PyTorch, building a schedule counts as epoch 0 and leaves the learning rate as it is;
    each :meth:`step` starts the next epoch and sets ``optimizer.lr``. Schedules are chainable:
    they scale the optimizer's current learning rate, so a change made by hand carries on.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastrnn Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self._last_lr = optimizer.lr

    def step(self, metric=None):
        """Start the next epoch and set the optimizer's learning rate.

        Parameters
        ----------
        metric : float, optional
            Ignored by the fixed schedules (accepted so that a training loop can pass its
            monitored value to any schedule).
        """
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(self.optimizer.lr)
        self._last_lr = self.optimizer.lr

    def _next_lr(self, lr):
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rate set by the last :meth:`step` (the initial one before any).

        Returns
        -------
        float
        """
        return self._last_lr

    def get_config(self):
        """The constructor arguments except the optimizer, as JSON-able values.

        Returns
        -------
        dict
        """
        return {}

    def _state(self):
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr,
                "last_lr": self._last_lr}

    def state_dict(self):
        """The schedule's configuration and progress, as JSON-able values.

        Returns
        -------
        dict
            ``{"config": {"name": class name, ...}, "state": {"last_epoch": int, ...}}``.
        """
        return {"config": {"name": type(self).__name__, **self.get_config()},
                "state": self._state()}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (the optimizer's lr is not touched).

        Parameters
        ----------
        state_dict : dict
            From :meth:`state_dict` of the same schedule class.

        Raises
        ------
        TypeError, ValueError
            If it does not come from this schedule class or holds bad values; nothing is
            changed then.
        """
        self.__dict__.update(
            type(self).from_state_dict(self.optimizer, state_dict).__dict__)

    @classmethod
    def from_state_dict(cls, optimizer, state_dict):
        """A new schedule of this class for ``optimizer``, restored from ``state_dict``.

        Parameters
        ----------
        optimizer : Optimizer
            The optimizer to schedule (its lr is not touched; restore it separately).
        state_dict : dict
            From :meth:`state_dict` of a schedule of this class.

        Returns
        -------
        LRScheduler

        Raises
        ------
        TypeError, ValueError
            As :meth:`load_state_dict`.
        """
        _check_mapping("state_dict", state_dict)
        if set(state_dict) != {"config", "state"}:
            raise ValueError(f"state_dict must have the keys ['config', 'state'], "
                             f"got {sorted(state_dict)}")
        _check_mapping("state_dict['config']", state_dict["config"])
        config = dict(state_dict["config"])
        name = config.pop("name", None)
        if name != cls.__name__:
            raise ValueError(f"state_dict is for schedule {name!r}, not {cls.__name__}")
        fresh = cls(optimizer, **config)
        _check_mapping("state_dict['state']", state_dict["state"])
        state = dict(state_dict["state"])
        expected = set(fresh._state())
        if set(state) != expected:
            raise ValueError(f"state_dict['state'] must have the keys {sorted(expected)}, "
                             f"got {sorted(state)}")
        fresh._set_state(state)
        return fresh

    def _set_state(self, state):
        self.last_epoch = _count("last_epoch", state["last_epoch"])
        self.base_lr = _real("base_lr", state["base_lr"])
        self._last_lr = _real("last_lr", state["last_lr"])


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs (``torch``'s StepLR).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    step_size : int
        Period of the decay, in epochs, >= 1.
    gamma : float
        Factor of the decay, >= 0.
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = _count("step_size", step_size, low=1)
        self.gamma = _real("gamma", gamma)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}

    def _next_lr(self, lr):
        return lr * self.gamma if self.last_epoch % self.step_size == 0 else lr


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every epoch (``torch``'s ExponentialLR).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    gamma : float
        Factor of the decay, >= 0.
    """

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = _real("gamma", gamma)

    def get_config(self):
        return {"gamma": self.gamma}

    def _next_lr(self, lr):
        return lr * self.gamma


class ReduceLROnPlateau(LRScheduler):
    """Reduce the learning rate when a monitored value stops improving (``torch``'s).

    Each :meth:`step` takes the epoch's value. It improves on the best so far when it is below
    ``best * (1 - threshold)`` (mode "min", threshold_mode "rel"; ``best - threshold`` with
    "abs"; above ``best * (1 + threshold)`` or ``best + threshold`` in mode "max"). After more
    than ``patience`` epochs in a row without improvement, the learning rate becomes
    ``max(lr * factor, min_lr)`` (unless that changes it by less than ``eps``), and the next
    ``cooldown`` epochs are not counted.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    mode : {"min", "max"}
        Whether the monitored value should decrease (a loss) or increase (an accuracy).
    factor : float
        Multiplier of the learning rate, in [0, 1).
    patience : int
        Epochs without improvement tolerated, >= 0.
    threshold : float
        Smallest significant improvement, >= 0.
    threshold_mode : {"rel", "abs"}
        Relative or absolute ``threshold``.
    cooldown : int
        Epochs to wait after a reduction before counting again, >= 0.
    min_lr : float
        Lower bound of the learning rate, >= 0.
    eps : float
        Smallest change of the learning rate that is applied, >= 0.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        super().__init__(optimizer)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.factor = _real("factor", factor, 0.0, 1.0, high_open=True)
        self.patience = _count("patience", patience)
        self.threshold = _real("threshold", threshold)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = _count("cooldown", cooldown)
        self.min_lr = _real("min_lr", min_lr)
        self.eps = _real("eps", eps)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def get_config(self):
        return {"mode": self.mode, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps}

    def _is_better(self, value):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < self.best * (1.0 - self.threshold)
            return value < self.best - self.threshold
        if self.threshold_mode == "rel":
            return value > self.best * (self.threshold + 1.0)
        return value > self.best + self.threshold

    def step(self, metric=None):
        """End an epoch with its monitored value, reducing the learning rate if it is time.

        Parameters
        ----------
        metric : float
            The epoch's monitored value (e.g. the validation loss). NaN counts as no
            improvement.

        Raises
        ------
        TypeError
            If ``metric`` is missing or not a real number.
        """
        if metric is None or isinstance(metric, (bool, np.bool_, str, bytes)):
            raise TypeError(f"ReduceLROnPlateau.step needs the monitored value as metric, "
                            f"got {metric!r}")
        try:
            value = float(metric)
        except (TypeError, ValueError):
            raise TypeError(f"metric must be a real number, got {metric!r}") from None
        self.last_epoch += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old_lr = self.optimizer.lr
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self.optimizer.lr

    def _state(self):
        # The initial best is +-inf, which JSON cannot hold: it is stored as None.
        best = self.best if math.isfinite(self.best) else None
        return {**super()._state(), "best": best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter}

    def _set_state(self, state):
        super()._set_state(state)
        if state["best"] is None:
            self.best = math.inf if self.mode == "min" else -math.inf
        else:
            self.best = float(state["best"])
        self.num_bad_epochs = _count("num_bad_epochs", state["num_bad_epochs"])
        self.cooldown_counter = _count("cooldown_counter", state["cooldown_counter"])


__all__ = [
    "Adagrad", "Adam", "AdamW", "ExponentialLR", "LRScheduler", "Optimizer", "RMSprop",
    "ReduceLROnPlateau", "SGD", "StepLR", "clip_grad_norm", "clip_grad_value", "get",
]

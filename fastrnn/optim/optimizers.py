"""The optimizers: SGD, Adam, AdamW, RMSprop and Adagrad, with PyTorch's exact formulas.

Each performs, element for element, the update of its ``torch.optim`` namesake with the same
options (PyTorch's single-tensor CPU path), in the parameters' dtype (float32 or float64).
"""
import numpy as np

from .._validation import (
    FLOAT_DTYPES,
    check_bool,
    check_float_ndarray,
    check_int,
    check_mapping,
    check_real,
)
from ._config import Configurable

_STATE_KEYS = ("config", "step", "param_steps", "buffers")


def _lerp_(start, end, weight):
    """``start += weight * (end - start)`` in place, rounded as ``torch.lerp``."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


def _l2_penalty(grad, param, weight_decay):
    """``grad + weight_decay * param`` (PyTorch's ``weight_decay``); ``grad`` itself at 0."""
    if weight_decay == 0:
        return grad
    return grad + weight_decay * param


class Optimizer(Configurable):
    """Base class of the optimizers: argument checks, per-parameter state, state dicts.

    Subclasses list their constructor arguments in ``_config`` (kept as attributes of those
    names), set ``_buffer_kinds`` (the names of their per-parameter buffers) and implement
    ``_update(name, param, grad, step)``, which changes ``param`` in place; ``step`` counts that
    parameter's updates, from 1.

    Parameters
    ----------
    lr : float
        Learning rate, >= 0; settable later through :attr:`lr` (e.g. by a schedule).
    """

    _config = ("lr",)
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
        self._lr = check_real("lr", value)

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
        check_mapping("params", params)
        check_mapping("grads", grads)
        missing = sorted(set(params) - set(grads))
        unexpected = sorted(set(grads) - set(params))
        if missing or unexpected:
            raise ValueError(f"grads must have the names of params: missing {missing}, "
                             f"unexpected {unexpected}")
        pairs = []
        for name, param in params.items():
            grad = self._checked_grad(name, param, grads[name])
            if grad is not None:
                pairs.append((name, param, grad))
        return pairs

    def _checked_grad(self, name, param, grad):
        """``grad`` cast to the dtype of ``param`` once both are checked (None stays None)."""
        check_float_ndarray(f"params[{name!r}]", param)
        if not param.flags.writeable:
            raise ValueError(f"params[{name!r}] is read-only; optimizers update in place")
        if grad is None:
            return None
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
        return grad.astype(param.dtype, copy=False)

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
            "config": self._saved_config(),
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
        config = cls._config_from(state_dict, _STATE_KEYS, "optimizer")
        if "betas" in config:
            config["betas"] = tuple(config["betas"])
        fresh = cls(**config)
        fresh.iterations = check_int("state_dict['step']", state_dict["step"], low=0)
        check_mapping("state_dict['param_steps']", state_dict["param_steps"])
        fresh._steps = {str(k): check_int(f"state_dict['param_steps'][{k!r}]", v, low=0)
                        for k, v in state_dict["param_steps"].items()}
        fresh._buffers = cls._read_buffers(state_dict["buffers"])
        return fresh

    @classmethod
    def _read_buffers(cls, buffers):
        """``{(kind, parameter name): array copy}`` of a state dict's ``"buffers"``."""
        check_mapping("state_dict['buffers']", buffers)
        out = {}
        for key, value in buffers.items():
            kind, _, param_name = str(key).partition(".")
            if kind not in cls._buffer_kinds or not param_name:
                raise ValueError(f"state_dict['buffers'] has an unknown entry {key!r}; "
                                 f"{cls.__name__} keeps {list(cls._buffer_kinds)}")
            arr = np.array(value)     # a copy
            if arr.dtype not in FLOAT_DTYPES:
                raise TypeError(f"state_dict['buffers'][{key!r}] must be float32 or float64, "
                                f"got {arr.dtype}")
            out[(kind, param_name)] = arr
        return out


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

    _config = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    _buffer_kinds = ("momentum",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(lr)
        self.momentum = check_real("momentum", momentum)
        self.nesterov = check_bool("nesterov", nesterov)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.dampening = check_real("dampening", dampening)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0, got "
                             f"momentum={self.momentum}, dampening={self.dampening}")

    def _update(self, name, param, grad, step):
        grad = _l2_penalty(grad, param, self.weight_decay)
        if self.momentum != 0:
            buf = self._buffers.get(("momentum", name))
            if buf is None:                      # PyTorch starts the momentum at the gradient
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

    _config = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    _buffer_kinds = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (check_real("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                      check_real("betas[1]", betas[1], 0.0, 1.0, high_open=True))
        self.eps = check_real("eps", eps)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.amsgrad = check_bool("amsgrad", amsgrad)

    def _update(self, name, param, grad, step):
        beta1, beta2 = self.betas
        if not self._decoupled:
            grad = _l2_penalty(grad, param, self.weight_decay)
        elif self.weight_decay != 0:
            param *= 1 - self.lr * self.weight_decay
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
    lr, betas, eps, amsgrad
        As for :class:`Adam`.
    weight_decay : float
        Decoupled weight decay coefficient, >= 0.
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

    _config = ("lr", "alpha", "eps", "momentum", "weight_decay", "centered")
    _buffer_kinds = ("square_avg", "grad_avg", "momentum")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0,
                 centered=False):
        super().__init__(lr)
        self.alpha = check_real("alpha", alpha)
        self.eps = check_real("eps", eps)
        self.momentum = check_real("momentum", momentum)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.centered = check_bool("centered", centered)

    def _update(self, name, param, grad, step):
        grad = _l2_penalty(grad, param, self.weight_decay)
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

    _config = ("lr", "eps", "lr_decay", "weight_decay", "initial_accumulator_value")
    _buffer_kinds = ("sum",)

    def __init__(self, lr=1e-2, eps=1e-10, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0):
        super().__init__(lr)
        self.eps = check_real("eps", eps)
        self.lr_decay = check_real("lr_decay", lr_decay)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.initial_accumulator_value = check_real("initial_accumulator_value",
                                                    initial_accumulator_value)

    def _update(self, name, param, grad, step):
        grad = _l2_penalty(grad, param, self.weight_decay)
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

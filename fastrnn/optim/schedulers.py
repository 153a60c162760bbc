"""Learning-rate schedules, stepped once per epoch, as their ``torch.optim.lr_scheduler`` twins."""
import math

import numpy as np

from .._validation import check_choice, check_int, check_mapping, check_real
from ._config import Configurable
from .optimizers import Optimizer


class LRScheduler(Configurable):
    """Base class of the learning-rate schedules, called once per epoch with :meth:`step`.

    As in PyTorch, building a schedule counts as epoch 0 and leaves the learning rate as it is;
    each :meth:`step` starts the next epoch and sets ``optimizer.lr``. Schedules are chainable:
    they scale the optimizer's current learning rate, so a change made by hand carries on.
    Subclasses list their constructor arguments but the optimizer in ``_config`` and implement
    ``_next_lr(lr)``.

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
        return {"config": self._saved_config(), "state": self._state()}

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
        fresh = cls(optimizer, **cls._config_from(state_dict, ("config", "state"), "schedule"))
        check_mapping("state_dict['state']", state_dict["state"])
        state = dict(state_dict["state"])
        expected = set(fresh._state())
        if set(state) != expected:
            raise ValueError(f"state_dict['state'] must have the keys {sorted(expected)}, "
                             f"got {sorted(state)}")
        fresh._set_state(state)
        return fresh

    def _set_state(self, state):
        self.last_epoch = check_int("last_epoch", state["last_epoch"], low=0)
        self.base_lr = check_real("base_lr", state["base_lr"])
        self._last_lr = check_real("last_lr", state["last_lr"])


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

    _config = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = check_int("step_size", step_size, low=1)
        self.gamma = check_real("gamma", gamma)

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

    _config = ("gamma",)

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = check_real("gamma", gamma)

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

    _config = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
               "min_lr", "eps")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        super().__init__(optimizer)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.factor = check_real("factor", factor, 0.0, 1.0, high_open=True)
        self.patience = check_int("patience", patience, low=0)
        self.threshold = check_real("threshold", threshold)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int("cooldown", cooldown, low=0)
        self.min_lr = check_real("min_lr", min_lr)
        self.eps = check_real("eps", eps)
        self.best = self._initial_best()
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _initial_best(self):
        return math.inf if self.mode == "min" else -math.inf

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
        value = self._metric_value(metric)
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
            self._reduce_lr()
        self._last_lr = self.optimizer.lr

    @staticmethod
    def _metric_value(metric):
        """``metric`` as a float; TypeError if it is missing or not a number."""
        if metric is None or isinstance(metric, (bool, np.bool_, str, bytes)):
            raise TypeError(f"ReduceLROnPlateau.step needs the monitored value as metric, "
                            f"got {metric!r}")
        try:
            return float(metric)
        except (TypeError, ValueError):
            raise TypeError(f"metric must be a real number, got {metric!r}") from None

    def _reduce_lr(self):
        """Lower the learning rate by ``factor`` (down to ``min_lr``) and start a cooldown."""
        old_lr = self.optimizer.lr
        new_lr = max(old_lr * self.factor, self.min_lr)
        if old_lr - new_lr > self.eps:
            self.optimizer.lr = new_lr
        self.cooldown_counter = self.cooldown
        self.num_bad_epochs = 0

    def _state(self):
        # The initial best is +-inf, which JSON cannot hold: it is stored as None.
        best = self.best if math.isfinite(self.best) else None
        return {**super()._state(), "best": best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter}

    def _set_state(self, state):
        super()._set_state(state)
        self.best = self._initial_best() if state["best"] is None else float(state["best"])
        self.num_bad_epochs = check_int("num_bad_epochs", state["num_bad_epochs"], low=0)
        self.cooldown_counter = check_int("cooldown_counter", state["cooldown_counter"],
                                          low=0)

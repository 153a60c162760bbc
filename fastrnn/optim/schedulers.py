"""Learning-rate schedules, as their ``torch.optim.lr_scheduler`` twins (the same recursive
formulas, so the same floats).

A schedule is stepped once per epoch by default; :class:`fastrnn.callbacks.LearningRateScheduler`
steps it for ``fit`` (``interval="step"``: after every batch instead, counting ``T_max``,
``total_iters``, ``step_size`` in batches) and saves its state in the model's checkpoints.
Warm-up then cosine decay, as in PyTorch::

    opt = Adam(lr=1e-3)
    warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
    cosine = CosineAnnealingLR(opt, T_max=45)
    schedule = SequentialLR(opt, [warmup, cosine], milestones=[5])
"""
import bisect
import math

import numpy as np

from .._validation import as_list, check_choice, check_int, check_mapping, check_real
from ._config import Configurable
from .optimizers import Optimizer


class LRScheduler(Configurable):
    """Base class of the learning-rate schedules, called once per epoch with :meth:`step`.

    As in PyTorch, building a schedule counts as epoch 0 and leaves the learning rate as it is
    (but :class:`LinearLR`, which starts it at ``start_factor`` times, as PyTorch's does); each
    :meth:`step` starts the next epoch and sets ``optimizer.lr``. Schedules are chainable:
    they scale the optimizer's current learning rate, so a change made by hand carries on.
    ``base_lr`` is the learning rate the optimizer had when the schedule was built (PyTorch's
    ``initial_lr``). Subclasses list their constructor arguments but the optimizer in
    ``_config`` and implement ``_next_lr(lr)`` (and ``_closed_form_lr()``, the learning rate of
    epoch ``last_epoch`` from ``base_lr``, which :class:`SequentialLR` restarts them with).

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

    def _initial_lr(self, lr):
        """The learning rate of epoch 0 when the optimizer's is ``lr`` (the same, but in
        LinearLR)."""
        return lr

    def _closed_form_lr(self):
        raise NotImplementedError(f"{type(self).__name__} has no closed form: SequentialLR "
                                  f"cannot restart it at a milestone")

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

        As in PyTorch, building a :class:`LinearLR` or a :class:`SequentialLR` sets the
        optimizer's lr: build the schedule before restoring the optimizer's state, or set
        ``optimizer.lr = schedule.get_last_lr()`` afterwards (which
        :class:`fastrnn.callbacks.LearningRateScheduler` does when ``fit`` resumes).

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
        if not isinstance(optimizer, Optimizer):    # (before its lr is read)
            raise TypeError(f"optimizer must be a fastrnn Optimizer, got "
                            f"{type(optimizer).__name__}")
        lr = optimizer.lr
        try:            # (building a LinearLR or a SequentialLR sets the lr)
            fresh = cls._from_config(
                optimizer, cls._config_from(state_dict, ("config", "state"), "schedule"))
            fresh._set_state(_checked_state(state_dict["state"], fresh._state(),
                                            "state_dict['state']"))
        finally:
            optimizer.lr = lr
        return fresh

    @classmethod
    def _from_config(cls, optimizer, config):
        """A new schedule from the constructor arguments ``config`` (JSON values)."""
        return cls(optimizer, **config)

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

    def _closed_form_lr(self):
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


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

    def _closed_form_lr(self):
        return self.base_lr * self.gamma ** self.last_epoch


class LinearLR(LRScheduler):
    """Warm-up: scale the learning rate linearly from ``start_factor`` to ``end_factor`` times
    ``base_lr`` over ``total_iters`` epochs (``torch``'s LinearLR).

    Building it sets the learning rate to ``start_factor * lr`` (epoch 0 trains with it); each
    step moves the factor by ``(end_factor - start_factor) / total_iters``, and after
    ``total_iters`` steps the learning rate stays. Combine it with a decay through
    :class:`SequentialLR`.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    start_factor : float
        Factor of the first epoch, in (0, 1].
    end_factor : float
        Factor reached after ``total_iters`` epochs, in [0, 1].
    total_iters : int
        Epochs of the ramp, >= 1.
    """

    _config = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        super().__init__(optimizer)
        self.start_factor = check_real("start_factor", start_factor, 0.0, 1.0, low_open=True)
        self.end_factor = check_real("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = check_int("total_iters", total_iters, low=1)
        self.optimizer.lr = self._last_lr = self._initial_lr(optimizer.lr)

    def _initial_lr(self, lr):
        return lr * self.start_factor

    def _next_lr(self, lr):
        if self.last_epoch > self.total_iters:
            return lr
        return lr * (1.0 + (self.end_factor - self.start_factor) /
                     (self.total_iters * self.start_factor +
                      (self.last_epoch - 1) * (self.end_factor - self.start_factor)))

    def _closed_form_lr(self):
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) *
                               min(self.total_iters, self.last_epoch) / self.total_iters)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (``torch``'s
    CosineAnnealingLR, its recursive form: without restarts, it climbs back over the next
    ``T_max`` epochs, and so on).

    The learning rate of epoch ``t`` is about
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled.
    T_max : int
        Epochs of the half cosine, >= 1.
    eta_min : float
        The learning rate reached after ``T_max`` epochs, >= 0.
    """

    _config = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = check_int("T_max", T_max, low=1)
        self.eta_min = check_real("eta_min", eta_min)

    def _next_lr(self, lr):
        t, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (t - 1 - t_max) % (2 * t_max) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return ((1 + math.cos(math.pi * t / t_max)) /
                (1 + math.cos(math.pi * (t - 1) / t_max)) * (lr - eta_min) + eta_min)

    def _closed_form_lr(self):
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2


class SequentialLR(LRScheduler):
    """Run schedules one after another, switching at the ``milestones`` epochs (``torch``'s
    SequentialLR): typically a :class:`LinearLR` warm-up, then a decay.

    Schedule ``k`` runs from epoch ``milestones[k - 1]`` (``0`` for the first), which restarts
    it at its own epoch 0 from ``base_lr`` (its closed form, as PyTorch does). Building it
    sets the optimizer's learning rate back to the first schedule's ``base_lr`` (the learning
    rate before any schedule was built, if the first one was built first) and starts the
    first schedule; every schedule uses that ``base_lr``.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` is scheduled; every schedule must be built on it.
    schedulers : sequence of LRScheduler
        The schedules (not :class:`ReduceLROnPlateau`, which needs a monitored value, nor
        another SequentialLR).
    milestones : sequence of int
        The epochs at which the next schedule takes over, increasing, one fewer than
        ``schedulers``.
    """

    def __init__(self, optimizer, schedulers, milestones):
        super().__init__(optimizer)
        schedulers = as_list("schedulers", schedulers, "schedules")
        milestones = [check_int(f"milestones[{i}]", m, low=1)
                      for i, m in enumerate(as_list("milestones", milestones, "epochs"))]
        if not schedulers:
            raise ValueError("schedulers must hold at least one schedule, got none")
        for i, schedule in enumerate(schedulers):
            if not isinstance(schedule, LRScheduler) or \
                    isinstance(schedule, (ReduceLROnPlateau, SequentialLR)):
                raise TypeError(f"schedulers[{i}] must be a schedule of fastrnn.optim other "
                                f"than ReduceLROnPlateau and SequentialLR, got "
                                f"{type(schedule).__name__}")
            if schedule.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}] ({type(schedule).__name__}) schedules "
                                 f"another optimizer than optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones must hold one epoch fewer than schedulers "
                             f"({len(schedulers) - 1}), got {len(milestones)}")
        if milestones != sorted(set(milestones)):
            raise ValueError(f"milestones must increase, got {milestones}")
        self.schedulers, self.milestones = schedulers, milestones
        self.base_lr = schedulers[0].base_lr
        for schedule in schedulers:
            schedule.base_lr, schedule.last_epoch = self.base_lr, 0
        first = schedulers[0]
        self.optimizer.lr = first._last_lr = self._last_lr = first._initial_lr(self.base_lr)

    def step(self, metric=None):
        """Start the next epoch: step the current schedule, or restart the next one at its
        milestone.

        Parameters
        ----------
        metric : float, optional
            Ignored (as by the fixed schedules).
        """
        self.last_epoch += 1
        index = bisect.bisect_right(self.milestones, self.last_epoch)
        schedule = self.schedulers[index]
        if index > 0 and self.milestones[index - 1] == self.last_epoch:
            schedule.last_epoch = 0
            self.optimizer.lr = schedule._last_lr = schedule._closed_form_lr()
        else:
            schedule.step()
        self._last_lr = schedule.get_last_lr()

    def get_config(self):
        """The milestones and the schedules' configurations, as JSON-able values.

        Returns
        -------
        dict
            ``{"schedulers": [{"name": class name, ...}, ...], "milestones": [...]}``.
        """
        return {"schedulers": [s._saved_config() for s in self.schedulers],
                "milestones": list(self.milestones)}

    @classmethod
    def _from_config(cls, optimizer, config):
        if set(config) != {"schedulers", "milestones"}:
            raise ValueError(f"state_dict['config'] of a SequentialLR must have the keys "
                             f"['milestones', 'name', 'schedulers'], got "
                             f"{sorted(config) + ['name']}")
        schedulers = []
        for i, child in enumerate(as_list("state_dict['config']['schedulers']",
                                          config["schedulers"], "schedule configs")):
            check_mapping(f"state_dict['config']['schedulers'][{i}]", child)
            child = dict(child)
            child_class = _schedule_class(child.pop("name", None))
            schedulers.append(child_class._from_config(optimizer, child))
        return cls(optimizer, schedulers, config["milestones"])

    def _state(self):
        return {**super()._state(), "schedulers": [s._state() for s in self.schedulers]}

    def _set_state(self, state):
        super()._set_state(state)
        states = as_list("state_dict['state']['schedulers']", state["schedulers"],
                         "schedule states")
        if len(states) != len(self.schedulers):
            raise ValueError(f"state_dict['state']['schedulers'] must hold "
                             f"{len(self.schedulers)} states, got {len(states)}")
        for i, (schedule, child) in enumerate(zip(self.schedulers, states)):
            schedule._set_state(_checked_state(child, schedule._state(),
                                               f"state_dict['state']['schedulers'][{i}]"))


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


def _schedule_class(name):
    """The schedule class of :mod:`fastrnn.optim` named ``name``; else ValueError."""
    cls = globals().get(name) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, LRScheduler) and cls is not LRScheduler):
        raise ValueError(f"unknown schedule class {name!r}")
    return cls


def _checked_state(state, expected, where):
    """``state`` as a dict once it is a mapping with the keys of ``expected``."""
    check_mapping(where, state)
    state = dict(state)
    if set(state) != set(expected):
        raise ValueError(f"{where} must have the keys {sorted(expected)}, got {sorted(state)}")
    return state

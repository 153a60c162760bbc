"""Callbacks for :meth:`fastrnn.Sequential.fit` and :meth:`fastrnn.EncoderDecoder.fit`: early
stopping, checkpoints, learning-rate schedules, and the :class:`Callback` base class.

A callback is any object with one or more of Keras's hooks, each called with the model first::

    on_train_begin(model, logs)           on_train_end(model, logs)
    on_epoch_begin(model, epoch, logs)    on_epoch_end(model, epoch, logs)
    on_train_batch_begin(model, batch, logs)    on_train_batch_end(model, batch, logs)

(only the hooks an object has are called; :class:`Callback` has them all, doing nothing).
``epoch`` counts from 0 over the whole training (a resumed ``fit`` goes on counting) and
``batch`` from 0 within the epoch. ``logs`` is ``{}`` at the beginnings; at an epoch's end it
holds the epoch's ``"loss"``, metrics and ``"val_"`` values (at the training's end, those of
its last epoch); at a batch's end the batch's ``"loss"`` and ``"size"`` (its sequences).
Setting ``model.stop_training = True`` ends training after the current batch (its epoch is
then ended, logged and called back) or, from ``on_train_begin``, before the first epoch.

The callbacks of an epoch's end run in the order given, but every :class:`ModelCheckpoint`
runs after the others, so that the file it writes holds their state at the end of that epoch.

Checkpoints and resuming: a model file holds the state of the callbacks of the model's last
``fit`` (each callback's ``state_dict()``: a schedule's progress, early stopping's counters).
:func:`fastrnn.load_model` keeps it in ``model.callback_states``, and the next ``fit`` gives it
back to its callbacks of the same classes, in the same order among those of a class (the
second EarlyStopping gets the second's state); then training resumed from any epoch's
checkpoint ends bit for bit where uninterrupted training ends (on the same number of engine
threads: see :func:`fastrnn.set_num_threads`). Set ``model.callback_states = None`` before
``fit`` to start the callbacks fresh instead.
"""
import math
import warnings

import numpy as np

from ._validation import as_list, check_choice, check_int, check_mapping, check_number

#: the hooks a callback may have, in the order of a training
HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end",
         "on_epoch_end", "on_train_end")


class Callback:
    """Base class of callbacks: every hook, doing nothing, and an empty state.

    Subclasses override the hooks they need, and, when they keep something that training
    resumed from a checkpoint needs, :meth:`state_dict` and :meth:`load_state_dict`.
    """

    def on_train_begin(self, model, logs):
        """Called when ``fit`` starts, before its first epoch.

        Parameters
        ----------
        model : Sequential or EncoderDecoder
        logs : dict
            Empty.
        """

    def on_train_end(self, model, logs):
        """Called when ``fit`` ends (not when it raises).

        Parameters
        ----------
        model : Sequential or EncoderDecoder
        logs : dict
            The last epoch's values (empty if no epoch was trained).
        """

    def on_epoch_begin(self, model, epoch, logs):
        """Called before each epoch's first batch.

        Parameters
        ----------
        model : Sequential or EncoderDecoder
        epoch : int
            The epoch, from 0 (counting the epochs trained before a resumed ``fit``).
        logs : dict
            Empty.
        """

    def on_epoch_end(self, model, epoch, logs):
        """Called after each epoch, with its values.

        Parameters
        ----------
        model : Sequential or EncoderDecoder
        epoch : int
        logs : dict
            ``"loss"``, the metrics, and the ``"val_"`` values when validating.
        """

    def on_train_batch_begin(self, model, batch, logs):
        """Called before each training batch.

        Parameters
        ----------
        model : Sequential or EncoderDecoder
        batch : int
            The batch's index within its epoch, from 0.
        logs : dict
            Empty.
        """

    def on_train_batch_end(self, model, batch, logs):
        """Called after each training batch (after the optimizer's step).

        Parameters
        ----------
        model : Sequential or EncoderDecoder
        batch : int
        logs : dict
            ``"loss"``: the batch's loss; ``"size"``: its sequences.
        """

    def state_dict(self):
        """What training resumed from a checkpoint needs of this callback (empty here).

        Returns
        -------
        dict
            JSON-able values and NumPy arrays.
        """
        return {}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state_dict : dict
        """


class CallbackList:
    """The callbacks of a ``fit``, checked before training: each hook calls, in order, the
    callbacks that have it (every :class:`ModelCheckpoint` after the others).

    Parameters
    ----------
    callbacks : sequence
        Objects with one or more of the hooks (see :mod:`fastrnn.callbacks`).

    Raises
    ------
    TypeError
        If ``callbacks`` is not a sequence, or one of them has none of the hooks.
    """

    def __init__(self, callbacks):
        self.callbacks = as_list("callbacks", callbacks, "callback objects")
        for i, callback in enumerate(self.callbacks):
            if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
                hint = (" (a learning-rate schedule goes in as LearningRateScheduler(schedule))"
                        if hasattr(callback, "get_last_lr") else "")
                raise TypeError(f"callbacks[{i}] has none of the callback methods "
                                f"{', '.join(HOOKS)}: {callback!r}{hint}")
        ordered = sorted(self.callbacks, key=lambda c: isinstance(c, ModelCheckpoint))
        self._hooks = {hook: [getattr(c, hook) for c in ordered
                              if callable(getattr(c, hook, None))] for hook in HOOKS}

    def call(self, hook, model, *args):
        """Call ``hook(model, *args)`` of every callback that has it."""
        for method in self._hooks[hook]:
            method(model, *args)

    def state(self):
        """The non-empty ``state_dict()`` of each callback that has one, for a model file.

        Returns
        -------
        list of dict
            ``{"class": class name, "state": state}`` in the callbacks' order.
        """
        states = []
        for callback in self.callbacks:
            if callable(getattr(callback, "state_dict", None)):
                state = callback.state_dict()
                if state:
                    states.append({"class": type(callback).__name__, "state": state})
        return states

    def restore(self, states):
        """Give each callback the state saved for the callback of its class at its place
        among those of its class; warn about states no callback takes.

        Parameters
        ----------
        states : list of dict or None
            What :meth:`state` returned when the model file was written.
        """
        if not states:
            return
        pending = {}
        for entry in states:
            pending.setdefault(entry["class"], []).append(entry["state"])
        seen = {}
        for callback in self.callbacks:
            name = type(callback).__name__
            k = seen[name] = seen.get(name, -1) + 1
            if k < len(pending.get(name, ())) and callable(getattr(callback, "load_state_dict",
                                                                   None)):
                callback.load_state_dict(pending[name][k])
        unused = [f"{name} ({len(saved) - seen.get(name, -1) - 1})"
                  for name, saved in pending.items() if len(saved) > seen.get(name, -1) + 1]
        if unused:
            warnings.warn(f"the model file holds the state of callbacks that this fit was not "
                          f"given: {', '.join(unused)}; it is dropped", UserWarning,
                          stacklevel=4)


class _Monitor(Callback):
    """Tracks the best value of ``logs[monitor]``; ``mode`` "min", "max" or "auto"."""

    def __init__(self, monitor, mode, min_delta):
        if mode not in ("min", "max", "auto"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def value(self, logs):
        if self.monitor not in logs:
            raise ValueError(f"monitor {self.monitor!r} is not among the logged values "
                             f"{sorted(logs)}")
        return logs[self.monitor]

    def improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _best_out(self):
        """``best`` for JSON: None while it is the initial infinity."""
        return float(self.best) if math.isfinite(self.best) else None

    def _best_in(self, value):
        if value is None:
            return math.inf if self.mode == "min" else -math.inf
        return float(check_number("state_dict['best']", value))


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the logs, e.g. ``"val_loss"`` or ``"val_accuracy"``.
    patience : int
        Epochs without improvement to tolerate.
    min_delta : float
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}
        "auto" maximises names containing "acc" and minimises the rest.
    restore_best_weights : bool
        At the stop, put back the weights of the best epoch.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.best_weights = None
        self.stopped_epoch = None

    def on_train_begin(self, model, logs):
        """End a ``fit`` before its first epoch if this callback has stopped training already
        (a resumed ``fit`` then ends where the stopped one ended), with a warning."""
        if self.stopped_epoch is not None:
            model.stop_training = True
            warnings.warn(f"EarlyStopping stopped training at epoch {self.stopped_epoch + 1}: "
                          f"no epoch is trained with it; to train on, pass a new "
                          f"EarlyStopping (after load_model, set model.callback_states = "
                          f"None before fit, or the saved state goes into it)", UserWarning,
                          stacklevel=5)

    def on_epoch_end(self, model, epoch, logs):
        """Count epochs without improvement; stop the model after ``patience`` of them."""
        value = self.value(logs)
        if self.improved(value):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = {k: p.copy() for k, p in model.parameters().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            model.stop_training = True
            self.stopped_epoch = epoch
            if self.best_weights is not None:
                for name, p in model.parameters().items():
                    p[...] = self.best_weights[name]

    def state_dict(self):
        """The counters, the best value, the epoch it stopped at (None) and the best weights
        (with ``restore_best_weights``).

        Returns
        -------
        dict
        """
        return {"wait": self.wait, "best": self._best_out(), "stopped_epoch": self.stopped_epoch,
                "best_weights": self.best_weights}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state_dict : dict

        Raises
        ------
        TypeError, ValueError
            If it lacks a key or holds a bad value.
        """
        state = _checked_state(state_dict, ("wait", "best", "stopped_epoch", "best_weights"))
        wait = check_int("state_dict['wait']", state["wait"], low=0)
        best = self._best_in(state["best"])
        stopped = state["stopped_epoch"]
        if stopped is not None:
            stopped = check_int("state_dict['stopped_epoch']", stopped, low=0)
        weights = state["best_weights"]
        if weights is not None:
            weights = {str(k): np.array(v) for k, v in dict(weights).items()}
        self.wait, self.best, self.stopped_epoch, self.best_weights = wait, best, stopped, \
            weights


class ModelCheckpoint(_Monitor):
    """Save the model (weights, optimizer state, epochs trained, the callbacks' state) after
    each epoch, after the epoch's other callbacks.

    Training resumed from such a file (:func:`fastrnn.load_model`, then ``fit`` with the same
    arguments and callbacks of the same kinds) ends bit for bit where uninterrupted training
    ends.

    Parameters
    ----------
    path : str or os.PathLike
        The file; may contain ``{epoch}`` (1-based) to keep one file per epoch.
    monitor : str
        With ``save_best_only``, the logged value that decides "best".
    save_best_only : bool
        Save only when ``monitor`` improved.
    mode : {"auto", "min", "max"}
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        super().__init__(monitor, mode, 0.0)
        self.path = path
        self.save_best_only = save_best_only

    def on_epoch_end(self, model, epoch, logs):
        """Write the checkpoint (atomically, so a crash never leaves a broken file).

        Weights holding a NaN or an infinity are never written (a warning says so): the last
        good checkpoint stays as it is.
        """
        if self.save_best_only:
            value = self.value(logs)
            if not math.isfinite(value) or not self.improved(value):
                return
        path = str(self.path).format(epoch=epoch + 1)
        bad = [name for name, p in model.parameters().items() if not np.isfinite(p).all()]
        if bad:
            warnings.warn(f"epoch {epoch + 1}: checkpoint {path} not written: the weights "
                          f"{', '.join(bad)} are not finite", RuntimeWarning, stacklevel=2)
            return
        if self.save_best_only:
            self.best = value
        model.save(path)

    def state_dict(self):
        """The best monitored value so far (None before any), for ``save_best_only``.

        Returns
        -------
        dict
        """
        return {"best": self._best_out()} if self.save_best_only else {}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state_dict : dict
        """
        if self.save_best_only:
            self.best = self._best_in(_checked_state(state_dict, ("best",))["best"])


class LearningRateScheduler(Callback):
    """Step a learning-rate schedule of :mod:`fastrnn.optim` during ``fit``, and keep its
    state in the model's checkpoints.

    This is where a schedule goes (as a Keras callback; a PyTorch user's
    ``scheduler.step()`` after each epoch is what it does): build the schedule on the optimizer
    the model trains with, wrap it here, pass it in ``callbacks``. To resume from a checkpoint,
    build the same schedule on the loaded model's optimizer (``load_model(path).optimizer``):
    ``fit`` restores its progress and the learning rate it had set.

    Parameters
    ----------
    schedule : LRScheduler
        A schedule of :mod:`fastrnn.optim` (StepLR, ExponentialLR, LinearLR,
        CosineAnnealingLR, SequentialLR, ReduceLROnPlateau), built on the model's optimizer.
    monitor : str
        For ``ReduceLROnPlateau``: the logged value it watches.
    interval : {"epoch", "step"}
        Step the schedule after every epoch (PyTorch's habit, the default), or after every
        batch (``T_max``, ``total_iters``, ``step_size``, milestones then count batches; a
        warm-up over the first few hundred updates). ReduceLROnPlateau steps per epoch only.
    """

    def __init__(self, schedule, monitor="val_loss", interval="epoch"):
        from .optim.schedulers import LRScheduler, ReduceLROnPlateau

        if not isinstance(schedule, LRScheduler):
            raise TypeError(f"schedule must be a learning-rate schedule of fastrnn.optim, got "
                            f"{type(schedule).__name__}")
        self.interval = check_choice("interval", interval, ("epoch", "step"))
        if interval == "step" and isinstance(schedule, ReduceLROnPlateau):
            raise ValueError("interval must be 'epoch' for ReduceLROnPlateau (it watches a "
                             "value logged per epoch), got 'step'")
        self.schedule = schedule
        self.monitor = monitor

    def on_train_begin(self, model, logs):
        """Check that the schedule drives the optimizer the model trains with."""
        if self.schedule.optimizer is not model.optimizer:
            raise ValueError(
                f"the schedule {type(self.schedule).__name__} of LearningRateScheduler is "
                f"built on another optimizer than the model's: build it on the optimizer "
                f"passed to fit (after load_model, on model.optimizer)")

    def on_train_batch_end(self, model, batch, logs):
        """With ``interval="step"``, advance the schedule one step."""
        if self.interval == "step":
            self.schedule.step()

    def on_epoch_end(self, model, epoch, logs):
        """With ``interval="epoch"``, advance the schedule one epoch."""
        from .optim.schedulers import ReduceLROnPlateau

        if self.interval != "epoch":
            return
        if isinstance(self.schedule, ReduceLROnPlateau):
            if self.monitor not in logs:
                raise ValueError(f"monitor {self.monitor!r} is not among the logged values "
                                 f"{sorted(logs)}")
            self.schedule.step(logs[self.monitor])
        else:
            self.schedule.step()

    def state_dict(self):
        """The schedule's ``state_dict()``.

        Returns
        -------
        dict
        """
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state_dict):
        """Restore the schedule's state, and the learning rate it had set on the optimizer
        (building a LinearLR or a SequentialLR on a loaded optimizer changed it).

        Parameters
        ----------
        state_dict : dict
            From :meth:`state_dict` of a LearningRateScheduler of the same kind of schedule.
        """
        self.schedule.load_state_dict(_checked_state(state_dict, ("schedule",))["schedule"])
        self.schedule.optimizer.lr = self.schedule.get_last_lr()


def _checked_state(state_dict, keys):
    """``state_dict`` as a dict once it is a mapping with exactly ``keys``."""
    check_mapping("state_dict", state_dict)
    if set(state_dict) != set(keys):
        raise ValueError(f"state_dict must have the keys {sorted(keys)}, got "
                         f"{sorted(state_dict)}")
    return dict(state_dict)

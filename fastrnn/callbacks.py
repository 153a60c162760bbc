"""Callbacks for :meth:`fastrnn.Sequential.fit` and :meth:`fastrnn.EncoderDecoder.fit`: early
stopping, checkpoints, schedules.

A callback is any object with ``on_epoch_end(model, epoch, logs)``; ``logs`` holds the epoch's
``"loss"``, metrics and ``"val_"`` values. Setting ``model.stop_training = True`` ends training.
"""
import math
import warnings

import numpy as np


class _Monitor:
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


class ModelCheckpoint(_Monitor):
    """Save the model (weights, optimizer state, epochs trained) after each epoch.

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


class LearningRateScheduler:
    """Step a learning-rate schedule from :mod:`fastrnn.optim` at the end of each epoch.

    Parameters
    ----------
    schedule : StepLR, ExponentialLR or ReduceLROnPlateau
        Bound to the optimizer given to ``fit``.
    monitor : str
        For ``ReduceLROnPlateau``: the logged value it watches.
    """

    def __init__(self, schedule, monitor="val_loss"):
        self.schedule = schedule
        self.monitor = monitor

    def on_epoch_end(self, model, epoch, logs):
        """Advance the schedule one epoch."""
        from .optim.schedulers import ReduceLROnPlateau

        if isinstance(self.schedule, ReduceLROnPlateau):
            if self.monitor not in logs:
                raise ValueError(f"monitor {self.monitor!r} is not among the logged values "
                                 f"{sorted(logs)}")
            self.schedule.step(logs[self.monitor])
        else:
            self.schedule.step()

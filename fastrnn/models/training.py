"""The training loop shared by the models: mini-batches, clipping, progress, history, and
truncated backpropagation through time.

:class:`History` is what ``fit`` returns. The models build on the private base ``_Model`` (named
parameters and gradients, the loss and optimizer, the epoch loop); :func:`train_truncated` runs
truncated BPTT over one batch, passing each window's final states explicitly to the next
window through the layers' ``model_forward(..., state=...)`` (the mechanism a stateful
:class:`~fastrnn.Sequential` uses from one batch to the next too). The epoch loop takes its
batches from :func:`row_batches` (in-memory arrays: seeded mini-batches of rows) or from a
:class:`BatchSource` (any iterable of batches: a generator, a :class:`fastrnn.data.Loader`).
"""
import collections.abc
import itertools
import math
import sys
import time
import warnings

import numpy as np

from .. import losses as losses_module
from .. import optim as optim_module
from ..callbacks import CallbackList
from .._validation import (as_float_array, as_rng, check_bool, check_choice, check_int,
                           check_mapping, check_positive_int, check_real)

#: what ``fit`` does on a non-finite loss or gradient (``on_nonfinite``)
NONFINITE_POLICIES = ("raise", "skip")


class History:
    """What :meth:`Sequential.fit` measured: ``history[name]`` is a list with one value per epoch.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"``, each metric, and their ``"val_"`` versions when validating.
    epoch : list of int
        The epochs these values belong to.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []

    def append(self, epoch, logs):
        """Record the values of one epoch.

        Parameters
        ----------
        epoch : int
        logs : dict of str to float
        """
        self.epoch.append(epoch)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

    def __getitem__(self, name):
        return self.history[name]

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


class _Progress:
    """A one-line progress bar on stderr: epoch, step, loss and sequences per second."""

    def __init__(self, verbose, epochs, steps, stream=None):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.stream = sys.stderr if stream is None else stream

    def start_epoch(self, epoch):
        self.epoch, self.seen, self.loss_sum, self.t0 = epoch, 0, 0.0, time.perf_counter()

    def update(self, step, batch, loss):
        self.seen += batch
        self.loss_sum += loss * batch
        if self.verbose == 1:
            width = 20
            if self.steps is None:          # an iterable of batches of unknown length
                where = f"{step}/?"
            else:
                done = int(width * step / self.steps)
                bar = "=" * done + ">" * (done < width) + " " * (width - done - 1)
                where = f"[{bar}] {step}/{self.steps}"
            self.stream.write(f"\repoch {self.epoch + 1}/{self.epochs} {where}"
                              f" loss {self.loss_sum / self.seen:.4f} {self._rate():.0f} seq/s")
            self.stream.flush()

    def end_epoch(self, logs):
        if self.verbose:
            values = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
            prefix = "\r" if self.verbose == 1 else ""
            self.stream.write(f"{prefix}epoch {self.epoch + 1}/{self.epochs} {values} "
                              f"{self._rate():.0f} seq/s" + " " * 10 + "\n")
            self.stream.flush()

    def _rate(self):
        return self.seen / max(time.perf_counter() - self.t0, 1e-9)


class _Model:
    """What every model shares: parameters by name, the training loop, the fit state."""

    #: data-parallel training (:mod:`fastrnn.distributed`) sets this on the instance:
    #: ``reduce_gradients(grads, loss, weight) -> loss`` averages the gradients (in the dict,
    #: in place or by replacing its values) and returns the global loss; None: one process
    _reduce_gradients = None

    def __init__(self):
        self.loss = None
        self.optimizer = None
        self.epochs_trained = 0
        self.stop_training = False
        #: the callbacks' states read from a model file, given to the next fit's callbacks
        self.callback_states = None
        self._callbacks = None          # the CallbackList of the running or last fit
        #: JSON-able facts about the model's data (a vocabulary, a scaling), saved with it
        self.info = {}

    def _named_layers(self):
        """``(name, layer)`` pairs; parameter names are ``"{name}.{parameter}"``."""
        raise NotImplementedError

    def parameters(self):
        """Every layer's live parameter arrays, named ``"{layer}.{parameter name}"``.

        Returns
        -------
        dict of str to ndarray
        """
        return {f"{prefix}.{name}": p for prefix, layer in self._named_layers()
                for name, p in layer.parameters().items()}

    def state_dict(self):
        """Copies of every parameter, named like :meth:`parameters` (``"{layer}.{name}"``,
        e.g. ``"0.weight_ih_l0"``, ``"1.weight"`` in a :class:`Sequential`: the names PyTorch's
        ``nn.Sequential`` gives its modules' parameters).

        Returns
        -------
        dict of str to ndarray
        """
        return {name: p.copy() for name, p in self.parameters().items()}

    def load_state_dict(self, state_dict):
        """Set every parameter from ``state_dict``, all or nothing.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Exactly the names of :meth:`parameters`, with the same shapes; values are cast to
            each layer's dtype and copied into the live arrays once every entry has passed.

        Raises
        ------
        ValueError
            If a name is missing or unexpected, a shape differs, or a value is not finite.
        TypeError
            If ``state_dict`` is not a mapping or a value is not real numbers.
        """
        check_mapping("state_dict", state_dict)
        params = self.parameters()
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the model's parameters: missing "
                             f"{missing}, unexpected {unexpected}")
        checked = {name: as_float_array(f"state_dict[{name!r}]", state_dict[name], p.dtype,
                                        p.shape) for name, p in params.items()}
        for name, value in checked.items():
            params[name][...] = value

    def grads(self):
        """The gradients of the last backward pass, named like :meth:`parameters`.

        Returns
        -------
        dict of str to ndarray
        """
        return {f"{prefix}.{name}": g for prefix, layer in self._named_layers()
                for name, g in layer.grads.items()}

    def callbacks_state_dict(self):
        """The callbacks' state a model file keeps: that of the callbacks of the running or
        last ``fit``, or before any, the states loaded with the model (``callback_states``).

        Returns
        -------
        list of dict or None
            ``{"class": class name, "state": the callback's state_dict()}`` for each callback
            with a non-empty state, in the callbacks' order.
        """
        return self.callback_states if self._callbacks is None else self._callbacks.state()

    def save(self, path):
        """Write the model to one file: architecture, weights, loss, optimizer state, epochs
        trained, ``info`` and the state of the last ``fit``'s callbacks.

        Parameters
        ----------
        path : str or os.PathLike

        Notes
        -----
        The file holds NumPy arrays and JSON only (never a pickle), and the write is atomic:
        an interrupted save leaves any previous file at ``path`` intact.
        :func:`fastrnn.load_model` reads it back, and training resumes from it bit for bit.
        """
        from .saving import save_model

        save_model(self, path)

    @staticmethod
    def _summary_table(rows, print_fn):
        """The table of :meth:`summary`: ``rows`` of ``(label, output shape, layer)``; prints
        it with ``print_fn`` (unless None) and returns it."""
        table = [("layer", "output shape", "weights", "biases")]
        total_w = total_b = 0
        for label, shape, layer in rows:
            params = layer.parameters()
            b = sum(p.size for name, p in params.items() if _is_bias(name))
            w = sum(p.size for p in params.values()) - b
            total_w, total_b = total_w + w, total_b + b
            table.append((label, _shape_str(shape), str(w), str(b)))
        widths = [max(len(r[c]) for r in table) for c in range(4)]
        line = "-" * (sum(widths) + 6)
        fmt = "  ".join(["{:<%d}" % widths[0], "{:<%d}" % widths[1]] +
                        ["{:>%d}" % w for w in widths[2:]])
        out = [fmt.format(*table[0]), line] + [fmt.format(*r) for r in table[1:]] + [line,
               f"weights: {total_w}  biases: {total_b}  total parameters: {total_w + total_b}"]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def _set_training(self, loss, optimizer):
        if loss is not None:
            self.loss = losses_module.get(loss)
        if optimizer is not None:
            self.optimizer = optim_module.get(optimizer)
        if self.loss is None or self.optimizer is None:
            raise ValueError("fit() needs a loss and an optimizer (none were given before)")

    def _first_epoch(self, initial_epoch):
        """The epoch ``fit`` starts from: ``initial_epoch``, by default the epochs trained."""
        if initial_epoch is None:
            return self.epochs_trained
        return check_int("initial_epoch", initial_epoch, low=0)

    def _fit_loop(self, batches, train_batch, epoch_logs, *, steps, epochs, verbose, callbacks,
                  clip_norm, clip_value, initial_epoch, on_nonfinite):
        """Mini-batch training over the epochs ``initial_epoch .. epochs - 1``.

        ``batches(epoch)`` gives the batches of an epoch (closed at the epoch's end when it has
        a ``close``); ``train_batch(batch, update)`` runs forward and backward, calls
        ``update(loss, weight)`` after each backward (which averages the gradients across
        ranks in data-parallel training, ``weight`` being the number of loss terms the
        batch's mean divides by; then checks that the loss and the gradients are finite,
        clips and steps the optimizer) and returns ``(batch loss, sequences)``;
        ``steps`` is the number of batches of an epoch, None if unknown. This loop also
        reports and calls back (after giving the callbacks the states of
        ``callback_states``, which a model file brought).

        A non-finite loss or gradient never reaches the weights: with ``on_nonfinite="raise"``
        training stops with a FloatingPointError (the weights are those of the last good step),
        with ``"skip"`` that update is left out (and its loss out of the epoch's mean).
        An epoch that gets no batch at all (a one-shot iterable used up) ends training with a
        warning.
        """
        epochs = check_positive_int("epochs", epochs)
        verbose = check_int("verbose", verbose)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        check_choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        callbacks = CallbackList(callbacks)
        for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None:
                check_real(name, value, 0.0, math.inf, low_open=True, high_open=True)
        start = self._first_epoch(initial_epoch)
        params = self.parameters()
        where = {}

        def update(loss, weight=1):
            grads = self.grads()
            if self._reduce_gradients is not None:      # data parallel: average across ranks
                loss = self._reduce_gradients(grads, loss, weight)
            what = _nonfinite(loss, grads)
            if what is not None:
                where["skipped"] = where.get("skipped", 0) + 1
                if on_nonfinite == "raise":
                    raise FloatingPointError(
                        f"{what} at epoch {where['epoch'] + 1}, step {where['step'] + 1}: "
                        f"training stopped before the update, so the model keeps the weights "
                        f"of the last finite step; lower the learning rate or clip the "
                        f"gradients (clip_norm=...), or pass on_nonfinite='skip'")
                return False
            if clip_norm is not None:
                optim_module.clip_grad_norm(grads, clip_norm)
            if clip_value is not None:
                optim_module.clip_grad_value(grads, clip_value)
            self.optimizer.step(params, grads)
            return True

        progress = _Progress(verbose, epochs, steps)
        history = History()
        self.stop_training = False
        callbacks.restore(self.callback_states)
        self.callback_states, self._callbacks = None, callbacks
        callbacks.call("on_train_begin", self, {})
        logs = {}
        if start >= epochs:
            since = " (by default the epochs this model has already trained)" \
                if initial_epoch is None else ""
            warnings.warn(
                f"fit trained no epochs: epochs={epochs} is the index of the last epoch to "
                f"train, as in Keras, and training starts at initial_epoch={start}{since}; to "
                f"train {epochs} more epochs, pass epochs={start + epochs}", UserWarning,
                stacklevel=3)
        for epoch in range(start, epochs):
            if self.stop_training:
                break
            callbacks.call("on_epoch_begin", self, epoch, {})
            progress.start_epoch(epoch)
            where.update(epoch=epoch, skipped=0)
            pulled = 0
            epoch_batches = batches(epoch)
            try:
                for step, batch in enumerate(epoch_batches):
                    where["step"], pulled = step, step + 1
                    skipped = where["skipped"]
                    callbacks.call("on_train_batch_begin", self, step, {})
                    value, size = train_batch(batch, update)
                    if where["skipped"] == skipped:
                        progress.update(step + 1, size, float(value))
                    callbacks.call("on_train_batch_end", self, step,
                                   {"loss": float(value), "size": size})
                    if self.stop_training:
                        break
            finally:
                if hasattr(epoch_batches, "close"):
                    epoch_batches.close()
            if not pulled:
                warnings.warn(f"epoch {epoch + 1}: the data gave no batches (a one-shot "
                              f"iterable used up?); training stopped", UserWarning, stacklevel=3)
                break
            if where["skipped"]:
                warnings.warn(f"epoch {epoch + 1}: {where['skipped']} update(s) skipped "
                              f"(non-finite loss or gradients)", RuntimeWarning, stacklevel=3)
            if not progress.seen:
                raise FloatingPointError(f"epoch {epoch + 1}: every update had a non-finite "
                                         f"loss or gradients; nothing was trained")
            logs = {"loss": progress.loss_sum / progress.seen}
            logs.update(epoch_logs())
            self.epochs_trained = epoch + 1
            history.append(epoch, logs)
            progress.end_epoch(logs)
            callbacks.call("on_epoch_end", self, epoch, logs)
            if self.stop_training:
                break
        callbacks.call("on_train_end", self, logs)
        return history



def row_batches(n, batch_size, shuffle, seed):
    """Mini-batches of the rows of in-memory data, for :meth:`_Model._fit_loop`.

    Parameters
    ----------
    n : int
        Rows of the data.
    batch_size : int
    shuffle : bool
        Shuffle the rows each epoch; the order is a permutation made from ``seed`` and the
        epoch number only, so resumed training sees the same batches.
    seed : int or None
        None draws a fresh, unreproducible seed.

    Returns
    -------
    steps : int
        Batches per epoch.
    batches : callable
        ``batches(epoch)`` yields the sorted row indices of each batch of that epoch.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    shuffle = check_bool("shuffle", shuffle)
    if isinstance(seed, np.random.Generator):
        raise TypeError("seed of fit must be a non-negative integer or None (the order of "
                        "each epoch is made from it and the epoch number), got a Generator")
    as_rng("seed", seed)
    if seed is None:    # a fresh order, not reproducible
        seed = np.random.SeedSequence().entropy
    steps = -(-n // batch_size)

    def batches(epoch):
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle \
            else np.arange(n)
        for step in range(steps):
            yield np.sort(order[step * batch_size:(step + 1) * batch_size])

    return steps, batches


def is_batches(value):
    """True if ``value`` is an iterable of batches (a generator, an iterator, a
    :class:`fastrnn.data.Loader`, any iterable object) rather than array-like data: arrays,
    lists and tuples (ragged lists of sequences), strings, mappings and objects with
    ``__array__`` (a DataFrame, a tensor) are data."""
    return (isinstance(value, collections.abc.Iterable)
            and not isinstance(value, (np.ndarray, list, tuple, str, bytes,
                                       collections.abc.Mapping))
            and not hasattr(value, "__array__") and not hasattr(value, "__array_interface__"))


class BatchSource:
    """An iterable of batches, read epoch by epoch one batch at a time (bounded memory).

    A re-iterable source (one whose ``iter()`` starts over, like a
    :class:`fastrnn.data.Loader`) is iterated afresh each epoch, after ``set_epoch(epoch)`` if
    it has one (so its shuffling depends on the epoch number, and resumed training sees the
    same batches); a one-shot iterator (a generator) is read on across epochs.

    Parameters
    ----------
    source : iterable
        The batches.
    name : str
        The argument's name, for messages.
    steps_per_epoch : int, optional
        Batches of an epoch; default: all the source gives (once, for a one-shot iterator).
    """

    def __init__(self, source, name, steps_per_epoch=None):
        self.source, self.name = source, name
        self.one_shot = isinstance(source, collections.abc.Iterator)
        self.steps_per_epoch = (None if steps_per_epoch is None else
                                check_positive_int("steps_per_epoch", steps_per_epoch))
        self.steps = self.steps_per_epoch
        if self.steps is None and not self.one_shot:
            try:
                self.steps = len(source)
            except TypeError:
                self.steps = None

    def check_epochs(self, epochs):
        """Refuse a one-shot iterator for more than one epoch without ``steps_per_epoch``."""
        if self.one_shot and self.steps_per_epoch is None and epochs > 1:
            raise ValueError(
                f"{self.name} is a one-shot iterator (a generator), which one epoch uses up, "
                f"and {epochs} epochs are to be trained: pass steps_per_epoch (the batches of "
                f"an epoch, read on across epochs), or a re-iterable source such as a "
                f"fastrnn.data.Loader, which starts over each epoch")

    def epoch(self, epoch):
        """Yield the batches of epoch ``epoch`` (None: one pass, as ``evaluate`` makes),
        pulling each only when it is asked for.

        Closing the generator early closes the source's iterator too (stopping a loader's
        prefetch thread), unless the source is a one-shot iterator that later epochs read on.
        """
        if self.one_shot:
            it = self.source
        else:
            if epoch is not None and callable(getattr(self.source, "set_epoch", None)):
                self.source.set_epoch(epoch)
            it = iter(self.source)
        try:
            for step in itertools.count():
                if step == self.steps_per_epoch:
                    return
                try:
                    batch = next(it)
                except StopIteration:
                    if self.steps_per_epoch is not None and step:
                        warnings.warn(f"{self.name} ran out of batches after {step} of "
                                      f"steps_per_epoch={self.steps_per_epoch}", UserWarning,
                                      stacklevel=2)
                    return
                yield batch
        finally:
            if not self.one_shot and hasattr(it, "close"):
                it.close()


def _is_bias(name):
    """True for a bias parameter: ``"bias_ih_l0"``, ``"bias"``, ``"self_attn.in_proj_bias"``."""
    return "bias" in name.rsplit(".", 1)[-1]


def _shape_str(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _nonfinite(loss, grads):
    """What is not finite among the batch loss and the gradients (None when all are).

    The gradients are checked through their sums: a NaN or an infinity in an array makes its
    sum non-finite (a sum of finite values overflows only past the dtype's range)."""
    if not math.isfinite(float(loss)):
        return f"the loss is {float(loss)}"
    for name, g in grads.items():
        if g is not None and not math.isfinite(float(np.sum(g))):
            return f"the gradient of {name} is not finite"
    return None


def _trim(x, lengths):
    """Drop timesteps that no sequence of the batch has (the batch's padding columns; one is
    kept when every sequence is empty)."""
    if lengths is None or x.ndim < 2:
        return x, lengths
    longest = max(int(lengths.max()), 1)
    x = x[:, :longest]
    return np.ascontiguousarray(x), (None if lengths.min() == longest else lengths)



def train_truncated(x, lengths, y, window, train_window, states=None):
    """Truncated BPTT over one batch: windows of ``window`` steps, the states carried across.

    Each window starts from the final states of the previous one (the first from ``states``),
    as constants: no gradient flows across windows. Sequences that have ended run on as empty
    sequences (length 0) in the later windows, which carries their states through unchanged;
    the batch ends with the first window in which every sequence has ended.

    Parameters
    ----------
    x : ndarray, shape (batch, timesteps, ...)
        The batch's validated input.
    lengths : ndarray of int or None
        Valid timesteps of each sequence.
    y : ndarray, shape (batch, timesteps, ...)
        Per-timestep targets.
    window : int
        Timesteps of a window.
    train_window : callable
        ``train_window(x_w, lengths_w, y_w, states) -> (loss, final_states)`` runs forward,
        backward and an update on one window; ``states`` is the list of per-layer states
        (None for stateless layers) the previous window returned, or for the first window
        ``states``.
    states : list, optional
        The states the first window starts from; None: the layers' initial states.

    Returns
    -------
    loss : float
        The loss averaged over the valid timesteps of the batch.
    states : list
        The final states of the last window run (every row's final state).
    """
    total = weight = 0.0
    for start in range(0, x.shape[1], window):
        width = min(window, x.shape[1] - start)
        lw = None if lengths is None else np.clip(lengths - start, 0, width)
        if lw is not None and not lw.any():
            break
        value, states = train_window(np.ascontiguousarray(x[:, start:start + width]),
                                     None if lw is None or (lw == width).all() else lw,
                                     y[:, start:start + width], states)
        steps = width * x.shape[0] if lw is None else lw.sum()
        total, weight = total + value * steps, weight + steps
    return total / max(weight, 1), states


def _take_rows(state, rows):
    """The batch rows ``rows`` of a state ``h``, ``(h, c)`` or None (axis 1 is the batch)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(None if s is None else s[:, rows] for s in state)
    return state[:, rows]

"""Models: a stack of layers trained with ``fit`` and used with ``evaluate`` / ``predict``.

:class:`Sequential` chains layers (``Embedding``, ``RNN``/``LSTM``/``GRU``, ``Dense``,
``Dropout``). Data is validated once, here; the layers then run on arrays they can trust.
Recurrent layers receive the batch's ``lengths``, so padding is never computed; losses on
sequence outputs mask the padded steps out.
"""
import sys
import time

import numpy as np

from . import losses as losses_module
from . import metrics as metrics_module
from . import optim as optim_module
from .layers import Dense, Dropout, Embedding, GRU, LSTM, RNN, _Recurrent
from ._validation import as_float_array, as_lengths, check_positive_int

#: layer classes a model file may name (nothing else is ever constructed from a file)
LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, Dropout, Embedding, GRU, LSTM, RNN)}


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
        """Record the values of one epoch."""
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
            done = int(width * step / self.steps)
            bar = "=" * done + ">" * (done < width) + " " * (width - done - 1)
            self.stream.write(f"\repoch {self.epoch + 1}/{self.epochs} [{bar}] {step}/{self.steps}"
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

    def __init__(self):
        self.loss = None
        self.optimizer = None
        self.epochs_trained = 0
        self.stop_training = False

    def _named_layers(self):
        """``(name, layer)`` pairs; parameter names are ``"{name}.{parameter}"``."""
        raise NotImplementedError

    def parameters(self):
        """Every layer's live parameter arrays, named ``"{layer}.{parameter name}"``."""
        return {f"{prefix}.{name}": p for prefix, layer in self._named_layers()
                for name, p in layer.parameters().items()}

    def grads(self):
        """The gradients of the last backward pass, named like :meth:`parameters`."""
        return {f"{prefix}.{name}": g for prefix, layer in self._named_layers()
                for name, g in layer.grads.items()}

    def _set_training(self, loss, optimizer):
        if loss is not None:
            self.loss = losses_module.get(loss)
        if optimizer is not None:
            self.optimizer = optim_module.get(optimizer)
        if self.loss is None or self.optimizer is None:
            raise ValueError("fit() needs a loss and an optimizer (none were given before)")

    def _fit_loop(self, n, train_batch, epoch_logs, *, epochs, batch_size, shuffle, seed,
                  verbose, callbacks, clip_norm, clip_value, initial_epoch):
        """Mini-batch training: ``train_batch(rows, update)`` runs forward and backward, calls
        ``update()`` after each backward (which clips and steps the optimizer) and returns the
        batch loss; this loop also reports and calls back."""
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        params = self.parameters()

        def update():
            grads = self.grads()
            if clip_norm is not None:
                optim_module.clip_grad_norm(grads, clip_norm)
            if clip_value is not None:
                optim_module.clip_grad_value(grads, clip_value)
            self.optimizer.step(params, grads)

        steps = -(-n // batch_size)
        progress = _Progress(verbose, epochs, steps)
        history = History()
        self.stop_training = False
        start = self.epochs_trained if initial_epoch is None else initial_epoch
        for epoch in range(start, epochs):
            progress.start_epoch(epoch)
            order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle \
                else np.arange(n)
            for step in range(steps):
                rows = np.sort(order[step * batch_size:(step + 1) * batch_size])
                value = train_batch(rows, update)
                progress.update(step + 1, len(rows), float(value))
            logs = {"loss": progress.loss_sum / progress.seen}
            logs.update(epoch_logs())
            self.epochs_trained = epoch + 1
            history.append(epoch, logs)
            progress.end_epoch(logs)
            for callback in callbacks:
                callback.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                break
        return history


class Sequential(_Model):
    """A stack of layers, each feeding the next.

    Parameters
    ----------
    layers : list
        ``Embedding``, ``RNN``, ``LSTM``, ``GRU``, ``Dense`` and ``Dropout`` layers. A recurrent
        layer passes on its output sequence, or with ``return_sequences=False`` its output at
        each sequence's last valid step.

    Examples
    --------
    >>> import fastrnn
    >>> model = fastrnn.Sequential([
    ...     fastrnn.Embedding(100, 16, padding_idx=0),
    ...     fastrnn.LSTM(16, 32, return_sequences=False),
    ...     fastrnn.Dense(32, 1, activation="sigmoid"),
    ... ])
    """

    def __init__(self, layers):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if type(layer).__name__ not in LAYER_CLASSES or not hasattr(layer, "_model_forward"):
                raise TypeError(f"layers[{i}] must be a fastrnn layer, got {type(layer).__name__}")
        super().__init__()
        self.layers = layers
        #: JSON-able facts about the model's data (a vocabulary, a scaling), saved with it
        self.info = {}

    def _named_layers(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    @property
    def dtype(self):
        """The floating dtype of the model's first layer that has one."""
        for layer in self.layers:
            if hasattr(layer, "dtype"):
                return layer.dtype
        return np.dtype(np.float32)

    # ------------------------------------------------------------------ inputs

    def _prepare(self, X, lengths, name="X"):
        """Validate the model input once: ``(x, lengths)`` as the first layer expects them."""
        first = self.layers[0]
        if isinstance(X, (list, tuple)) and len(X) and np.ndim(X[0]) >= 1 and \
                len({len(s) for s in X}) > 1:
            if lengths is not None:
                raise ValueError(f"{name} is ragged (sequences of different lengths), "
                                 f"so lengths must not be given too")
            from .text import pad_sequences
            is_tokens = isinstance(first, Embedding)
            X, lengths = pad_sequences(X, dtype="int64" if is_tokens else self.dtype.name)
        if isinstance(first, Embedding):
            x = first.check_tokens(X, name)
            sequence = x.ndim >= 2
        elif isinstance(first, _Recurrent):
            x = as_float_array(name, X, first.dtype, (None, None, first.input_size))
            sequence = True
        else:
            feature = first.in_features if isinstance(first, Dense) else None
            shape = (None,) * (np.ndim(X) - 1) + (feature,)
            x = as_float_array(name, X, self.dtype, shape)
            sequence = x.ndim == 3
        if lengths is not None and not sequence:
            raise ValueError(f"lengths needs sequence input, but {name} has shape {x.shape}")
        if sequence:
            lengths = as_lengths(lengths, x.shape[0], x.shape[1])
        return x, lengths

    def _targets(self, y, n):
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"y must be numbers (class ids, labels or values), got dtype {y.dtype}")
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"y must have one target per sequence ({n}), got shape {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or Inf")
        return y

    # ------------------------------------------------------------------ forward / backward

    def _logits_mode(self, loss):
        """True if ``loss`` takes logits, which the last Dense layer then passes on un-activated."""
        if not isinstance(loss, (losses_module.BinaryCrossentropy,
                                 losses_module.CategoricalCrossentropy)):
            return False
        last = self.layers[-1]
        wanted = "sigmoid" if isinstance(loss, losses_module.BinaryCrossentropy) else "softmax"
        if not isinstance(last, Dense) or last.activation not in (None, wanted):
            raise ValueError(
                f"loss {type(loss).__name__} is computed from logits: end the model with "
                f"Dense(..., activation=None or {wanted!r}), got {last!r}")
        return True

    def _forward(self, x, lengths, training, logits=False, trace=None):
        for i, layer in enumerate(self.layers[:-1]):
            if trace is not None:
                trace[i] = x                # the input of layer i
            x = layer._model_forward(x, lengths, training)
        last = self.layers[-1]
        if logits:
            out = last.linear(x)
            last._cache = (x, None) if training else None
            return out
        return last._model_forward(x, lengths, training)

    def _backward(self, grad, logits, trace=None):
        last = self.layers[-1]
        if trace is not None:
            trace[len(self.layers) - 1] = grad
        # the first layer's input is data: its gradient (a GEMM as large as dW_ih) is skipped
        n = len(self.layers)
        d = last._model_backward(grad, through_activation=False, input_grad=n > 1) if logits \
            else last._model_backward(grad, input_grad=n > 1)
        for i in reversed(range(n - 1)):
            if trace is not None:
                trace[i] = d                # the gradient of the loss at layer i's output
            d = self.layers[i]._model_backward(d, input_grad=i > 0)

    @staticmethod
    def _mask(out, lengths):
        """Valid steps ``(batch, timesteps)`` of a sequence output, or None."""
        if out.ndim != 3 or lengths is None:
            return None
        return np.arange(out.shape[1]) < lengths[:, None]

    def _run_batches(self, x, lengths, batch_size, logits):
        """Outputs for all of ``x`` (inference), computed batch by batch."""
        parts = []
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            xb, lb = _trim(x[sl], None if lengths is None else lengths[sl])
            parts.append(self._forward(xb, lb, training=False, logits=logits))
        if parts[0].ndim < 3:
            return np.concatenate(parts)
        # sequence outputs: each batch was trimmed to its longest sequence; pad back
        out = np.zeros((x.shape[0], x.shape[1], *parts[0].shape[2:]), parts[0].dtype)
        start = 0
        for part in parts:
            out[start:start + len(part), :part.shape[1]] = part
            start += len(part)
        return out

    # ------------------------------------------------------------------ public API

    def predict(self, X, lengths=None, batch_size=256):
        """Model outputs for ``X``, with the last layer's activation applied.

        Parameters
        ----------
        X : array_like or list of arrays
            Input batch (token ids for an ``Embedding`` first layer), or a ragged list of
            sequences of different lengths (padded here, and run on their lengths).
        lengths : array_like of int, optional
            Valid timesteps of each sequence.
        batch_size : int

        Returns
        -------
        ndarray
            ``(n, ...)``; 0 at padded steps of sequence outputs.
        """
        x, lengths = self._prepare(X, lengths)
        return self._run_batches(x, lengths, check_positive_int("batch_size", batch_size),
                                 logits=False)

    def evaluate(self, X, y, lengths=None, batch_size=256, loss=None, metrics=()):
        """Loss and metrics of the model on ``(X, y)``.

        Returns
        -------
        dict of str to float
            ``"loss"`` and each metric.
        """
        loss = losses_module.get(loss if loss is not None else self.loss)
        x, lengths = self._prepare(X, lengths)
        y = self._targets(y, x.shape[0])
        logits = self._logits_mode(loss)
        out = self._run_batches(x, lengths, check_positive_int("batch_size", batch_size), logits)
        mask = self._mask(out, lengths)
        value, _ = loss(out, y[:, :out.shape[1]] if mask is not None and y.ndim >= 2 else y, mask)
        logs = {"loss": float(value)}
        for name in metrics:
            logs[name] = float(metrics_module.get(name)(out, y, mask))
        return logs

    def fit(self, X, y, loss=None, optimizer=None, epochs=1, batch_size=32, lengths=None,
            validation_data=None, validation_split=0.0, shuffle=True, clip_norm=None,
            clip_value=None, callbacks=(), verbose=1, metrics=(), seed=0, initial_epoch=None,
            truncate=None):
        """Train the model with mini-batch gradient descent and BPTT.

        Parameters
        ----------
        X, y : array_like
            Inputs (or a ragged list of sequences) and targets, one per sequence (class ids,
            one-hot rows, labels or values; per timestep for sequence outputs).
        loss : str or loss object
            ``"bce"``, ``"cce"``, ``"mse"`` or an instance from :mod:`fastrnn.losses`; kept for
            later calls. Cross-entropies take logits: a last ``Dense`` with a sigmoid or
            softmax passes its logits to them.
        optimizer : str or optimizer object
            An instance from :mod:`fastrnn.optim` (or its name); kept, with its state.
        epochs : int
            Train until this many epochs have run in total (see ``initial_epoch``).
        batch_size : int
        lengths : array_like of int, optional
            Valid timesteps of each sequence; padded steps are neither computed nor counted.
        validation_data : tuple, optional
            ``(X_val, y_val)`` or ``(X_val, y_val, lengths_val)``.
        validation_split : float
            Fraction of the data held out (the last rows) when ``validation_data`` is None.
        shuffle : bool
            Shuffle the training rows each epoch (the order depends on ``seed`` and the epoch
            number only, so resumed training sees the same batches).
        clip_norm, clip_value : float, optional
            Clip the gradients by their global L2 norm, or elementwise, before each update.
        callbacks : sequence
            Objects with ``on_epoch_end(model, epoch, logs)`` (see :mod:`fastrnn.callbacks`).
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar, 2 one line per epoch.
        metrics : sequence of str
            Names from :mod:`fastrnn.metrics`, e.g. ``("accuracy",)``.
        seed : int
        initial_epoch : int, optional
            Epoch to start from; default: the epochs this model has already trained.
        truncate : int, optional
            Truncated BPTT: cut each batch into windows of this many timesteps, run forward,
            backward and an update on each in turn, and start each window from the states the
            previous one ended with (no gradient flows across windows). Memory is bounded by
            the window, however long the sequences. Needs per-timestep targets and
            unidirectional recurrent layers that return sequences.

        Returns
        -------
        History
        """
        self._set_training(loss, optimizer)
        if truncate is not None:
            truncate = check_positive_int("truncate", truncate)
            for layer in self.layers:
                if isinstance(layer, _Recurrent) and (layer.bidirectional
                                                      or not layer.return_sequences):
                    raise ValueError(f"truncate needs unidirectional recurrent layers that "
                                     f"return sequences, got {layer!r}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        x, lengths = self._prepare(X, lengths)
        y = self._targets(y, x.shape[0])
        if truncate is not None and (y.ndim < 2 or y.shape[1] != x.shape[1]):
            raise ValueError(f"truncate needs a target for every timestep, shape "
                             f"({x.shape[0]}, {x.shape[1]}, ...), got y of shape {y.shape}")
        if validation_data is None and validation_split > 0:
            n_val = int(round(x.shape[0] * validation_split))
            if not 0 < n_val < x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no rows for "
                                 f"training or for validation ({x.shape[0]} rows)")
            cut = x.shape[0] - n_val
            validation_data = (x[cut:], y[cut:]) + (() if lengths is None else (lengths[cut:],))
            x, y = x[:cut], y[:cut]
            lengths = None if lengths is None else lengths[:cut]
        logits = self._logits_mode(self.loss)

        def train_window(xw, lw, yw, update):
            out = self._forward(xw, lw, training=True, logits=logits)
            mask = self._mask(out, lw)
            if mask is not None and yw.ndim >= 2:
                yw = yw[:, :out.shape[1]]
            value, grad = self.loss(out, yw, mask)
            self._backward(grad.astype(out.dtype, copy=False), logits)
            update()
            return value

        def train_batch(idx, update):
            xb, lb = _trim(x[idx], None if lengths is None else lengths[idx])
            if truncate is None:
                return train_window(xb, lb, y[idx], update)
            return self._train_truncated(xb, lb, y[idx], truncate, train_window, update)

        def epoch_logs():
            logs = {}
            if metrics:
                train = self.evaluate(x, y, lengths, loss=self.loss, metrics=metrics)
                logs.update({k: v for k, v in train.items() if k != "loss"})
            if validation_data is not None:
                val = self.evaluate(*validation_data[:2], lengths=(validation_data[2] if len(
                    validation_data) > 2 else None), loss=self.loss, metrics=metrics)
                logs.update({"val_" + k: v for k, v in val.items()})
            return logs

        return self._fit_loop(x.shape[0], train_batch, epoch_logs, epochs=epochs,
                              batch_size=batch_size, shuffle=shuffle, seed=seed, verbose=verbose,
                              callbacks=callbacks, clip_norm=clip_norm, clip_value=clip_value,
                              initial_epoch=initial_epoch)

    def _train_truncated(self, x, lengths, y, window, train_window, update):
        """Truncated BPTT over one batch: windows of ``window`` steps, states carried."""
        recurrent = [layer for layer in self.layers if isinstance(layer, _Recurrent)]
        for layer in recurrent:                 # the first window starts from zeros
            layer._carried_state = layer._final_state = None
        rows = np.arange(x.shape[0])            # rows of the batch still running
        total = weight = 0.0
        try:
            for start in range(0, x.shape[1], window):
                width = min(window, x.shape[1] - start)
                lw = None if lengths is None else np.clip(lengths - start, 0, width)
                now = rows if lw is None else rows[lw[rows] > 0]
                if now.size == 0:
                    break
                keep = np.searchsorted(rows, now)   # the carried states of those rows
                for layer in recurrent:
                    if layer._final_state is not None:
                        h, c = layer._final_state
                        layer._carried_state = (h[:, keep], None if c is None else c[:, keep])
                lw_now = None if lw is None or (lw[now] == width).all() else lw[now]
                value = train_window(np.ascontiguousarray(x[now, start:start + width]), lw_now,
                                     y[now][:, start:start + width], update)
                steps = width * now.size if lw is None else lw[now].sum()
                total, weight = total + value * steps, weight + steps
                rows = now
        finally:
            for layer in recurrent:
                layer._carried_state = layer._final_state = None
        return total / weight

    # ------------------------------------------------------------------ generation

    def generate(self, start, steps, temperature=1.0, greedy=False, seed=None):
        """Generate tokens one step at a time (one-to-many), feeding each back as input.

        The model must map tokens to next-token logits: an ``Embedding`` first, unidirectional
        recurrent layers, a ``Dense`` over the vocabulary last.

        Parameters
        ----------
        start : array_like of int, shape (batch,) or (batch, prompt_length)
            Start token (or a prompt) of each sequence.
        steps : int
            Tokens to generate.
        temperature : float
            Softmax temperature of the sampling (lower: more conservative).
        greedy : bool
            Take the most likely token instead of sampling.
        seed : int, optional

        Returns
        -------
        ndarray of int64, shape (batch, steps)
        """
        first, last = self.layers[0], self.layers[-1]
        if not isinstance(first, Embedding) or not isinstance(last, Dense):
            raise ValueError("generate() needs a model from an Embedding to a Dense layer")
        tokens = first.check_tokens(start, "start")
        tokens = tokens[:, None] if tokens.ndim == 1 else tokens
        if tokens.ndim != 2:
            raise ValueError(f"start must have shape (batch,) or (batch, prompt_length), "
                             f"got {tokens.shape}")
        steps = check_positive_int("steps", steps)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        rng = np.random.default_rng(seed)
        states = [None] * len(self.layers)

        def next_logits(token):
            v = token
            for i, layer in enumerate(self.layers[:-1]):
                v, states[i] = layer._model_step(v, states[i])
            return last.linear(v)

        for t in range(tokens.shape[1]):
            logits = next_logits(tokens[:, t])
        out = np.empty((tokens.shape[0], steps), np.int64)
        for t in range(steps):
            if greedy:
                out[:, t] = logits.argmax(axis=1)
            else:
                z = logits.astype(np.float64) / temperature
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                u = rng.random((p.shape[0], 1))
                out[:, t] = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
            if t + 1 < steps:
                logits = next_logits(out[:, t])
        return out

    # ------------------------------------------------------------------ files

    def save(self, path):
        """Write the model to one file: architecture, weights, loss, optimizer state.

        The file holds NumPy arrays and JSON only (never a pickle), and the write is atomic:
        an interrupted save leaves any previous file at ``path`` intact.
        """
        from . import __version__
        from .io import save_bundle

        arrays = {f"param.{name}": p for name, p in self.parameters().items()}
        meta = {
            "model": "Sequential",
            "fastrnn_version": __version__,
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                       for layer in self.layers],
            "epochs_trained": self.epochs_trained,
            "info": self.info,
            "rng": {str(i): layer._rng.bit_generator.state for i, layer in
                    enumerate(self.layers) if isinstance(layer, Dropout)},
        }
        if self.loss is not None:
            meta["loss"] = {"class": type(self.loss).__name__, "config": self.loss.get_config()}
        if self.optimizer is not None:
            meta["optimizer"] = {"class": type(self.optimizer).__name__,
                                 "state": _arrays_out(self.optimizer.state_dict(), "optimizer",
                                                      arrays)}
        save_bundle(path, arrays, meta)

    # ------------------------------------------------------------------ description

    def summary(self, input_shape=None, print_fn=print):
        """Print and return a table of the layers: output shape, weights and biases.

        Parameters
        ----------
        input_shape : tuple, optional
            Shape of one batch of input, ``None`` for any size (the default assumes
            ``(None, None, features)`` for a recurrent first layer).
        print_fn : callable or None
            Where the table goes; None prints nothing.

        Returns
        -------
        str
        """
        shape = input_shape if input_shape is not None else _default_input_shape(self.layers[0])
        rows = [("layer", "output shape", "weights", "biases")]
        total_w = total_b = 0
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            params = layer.parameters()
            w = sum(p.size for name, p in params.items() if name.startswith("weight"))
            b = sum(p.size for name, p in params.items() if name.startswith("bias"))
            total_w, total_b = total_w + w, total_b + b
            rows.append((f"{i} {type(layer).__name__}", _shape_str(shape), str(w), str(b)))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)
        fmt = "  ".join(["{:<%d}" % widths[0], "{:<%d}" % widths[1]] +
                        ["{:>%d}" % w for w in widths[2:]])
        out = [fmt.format(*rows[0]), line] + [fmt.format(*r) for r in rows[1:]] + [line,
               f"weights: {total_w}  biases: {total_b}  total parameters: {total_w + total_b}"]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        return "Sequential([\n" + "".join(f"    {layer!r},\n" for layer in self.layers) + "])"


class EncoderDecoder(_Model):
    """Many-to-many of unequal lengths: an encoder reads the source sequence, its final state
    starts a decoder that writes the target sequence (sequence-to-sequence, e.g. translation).

    Trained with teacher forcing (the decoder reads the true previous target token); predicts
    with greedy decoding. Token 0 is padding in both vocabularies.

    Parameters
    ----------
    source_vocab, target_vocab : int
        Vocabulary sizes (token ids ``0..size-1``).
    embedding_dim, hidden_size : int
    cell : {"lstm", "gru", "rnn"}
    num_layers : int
    bos_id, eos_id : int
        Target tokens that start decoding and end a sequence.
    dtype : {"float32", "float64"}
    seed : int, optional
    backend : {"compiled", "reference"}
    """

    def __init__(self, source_vocab, target_vocab, embedding_dim, hidden_size, cell="gru",
                 num_layers=1, bos_id=1, eos_id=2, dtype="float32", seed=None,
                 backend=None):
        super().__init__()
        cells = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
        if cell not in cells:
            raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
        for name, token in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 < token < target_vocab:
                raise ValueError(f"{name} must be in 1..{target_vocab - 1}, got {token}")
        self.config = dict(source_vocab=source_vocab, target_vocab=target_vocab,
                           embedding_dim=embedding_dim, hidden_size=hidden_size, cell=cell,
                           num_layers=num_layers, bos_id=bos_id, eos_id=eos_id, dtype=dtype,
                           seed=seed, backend=backend)
        rng = np.random.default_rng(seed)
        seeds = rng.integers(0, 2**31, size=5)
        rec = dict(num_layers=num_layers, dtype=dtype, backend=backend)
        self.source_embedding = Embedding(source_vocab, embedding_dim, padding_idx=0, dtype=dtype,
                                          seed=seeds[0])
        self.encoder = cells[cell](embedding_dim, hidden_size, seed=seeds[1], **rec)
        self.target_embedding = Embedding(target_vocab, embedding_dim, padding_idx=0, dtype=dtype,
                                          seed=seeds[2])
        self.decoder = cells[cell](embedding_dim, hidden_size, seed=seeds[3], **rec)
        self.output = Dense(hidden_size, target_vocab, dtype=dtype, seed=seeds[4])
        self.bos_id, self.eos_id = bos_id, eos_id

    def _named_layers(self):
        return [("source_embedding", self.source_embedding), ("encoder", self.encoder),
                ("target_embedding", self.target_embedding), ("decoder", self.decoder),
                ("output", self.output)]

    def _tokens(self, name, tokens, lengths, embedding):
        if isinstance(tokens, (list, tuple)) and len({len(t) for t in tokens}) > 1:
            if lengths is not None:
                raise ValueError(f"{name} is ragged, so its lengths must not be given too")
            from .text import pad_sequences
            tokens, lengths = pad_sequences(tokens, dtype="int64")
        tokens = embedding.check_tokens(tokens, name)
        if tokens.ndim != 2:
            raise ValueError(f"{name} must have shape (batch, timesteps), got {tokens.shape}")
        return tokens, as_lengths(lengths, *tokens.shape)

    def _encode(self, src, src_lengths, training):
        e = self.source_embedding._forward(src, training)
        h0, c0 = self.encoder._check_state("state", None, src.shape[0])
        _, h_n, c_n = self.encoder._forward(e, h0, c0, src_lengths, training)
        return h_n, c_n

    def fit(self, source, target, source_lengths=None, target_lengths=None, optimizer=None,
            epochs=1, batch_size=32, shuffle=True, clip_norm=None, clip_value=None,
            callbacks=(), verbose=1, seed=0, initial_epoch=None):
        """Train with teacher forcing on pairs of token sequences.

        Parameters
        ----------
        source, target : array_like of int, or ragged lists
            ``(n, source_len)`` and ``(n, target_len)`` token ids; targets end with ``eos_id``.
        source_lengths, target_lengths : array_like of int, optional
        optimizer, epochs, batch_size, shuffle, clip_norm, clip_value, callbacks, verbose, seed,
        initial_epoch
            As for :meth:`Sequential.fit`. The loss is the categorical cross-entropy of every
            valid target token.

        Returns
        -------
        History
        """
        self._set_training(losses_module.CategoricalCrossentropy(), optimizer)
        src, src_len = self._tokens("source", source, source_lengths, self.source_embedding)
        tgt, tgt_len = self._tokens("target", target, target_lengths, self.target_embedding)
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"source and target must have as many sequences, got "
                             f"{src.shape[0]} and {tgt.shape[0]}")
        # teacher forcing: the decoder reads <bos> followed by the target shifted right
        dec_in = np.concatenate([np.full((tgt.shape[0], 1), self.bos_id), tgt[:, :-1]], axis=1)

        def train_batch(rows, update):
            sb, sl = _trim(src[rows], None if src_len is None else src_len[rows])
            tl_full = None if tgt_len is None else tgt_len[rows]
            db, tl = _trim(dec_in[rows], tl_full)
            yb = tgt[rows][:, :db.shape[1]]
            h_n, c_n = self._encode(sb, sl, True)
            d = self.target_embedding._forward(db, True)
            y, _, _ = self.decoder._forward(d, h_n, c_n, tl, True)
            logits = self.output.linear(y)
            self.output._cache = (y, None)
            value, grad = self.loss(logits, yb, self._target_mask(db.shape, tl))
            dy = self.output.backward(grad.astype(logits.dtype, copy=False),
                                      through_activation=False)
            dd, dh0, dc0 = self.decoder._backward(dy, None, None)
            self.target_embedding.backward(dd)
            de, _, _ = self.encoder._backward(None, dh0, dc0)
            self.source_embedding.backward(de)
            update()
            return value

        return self._fit_loop(src.shape[0], train_batch, dict, epochs=epochs,
                              batch_size=batch_size, shuffle=shuffle, seed=seed, verbose=verbose,
                              callbacks=callbacks, clip_norm=clip_norm, clip_value=clip_value,
                              initial_epoch=initial_epoch)

    @staticmethod
    def _target_mask(shape, lengths):
        return None if lengths is None else np.arange(shape[1]) < lengths[:, None]

    def predict(self, source, source_lengths=None, max_length=50):
        """Greedy decoding: the most likely token at each step, until ``eos_id``.

        Returns
        -------
        ndarray of int64, shape (n, max_length)
            Decoded tokens; after a sequence's ``eos_id`` (included) the rest is 0.
        """
        src, src_len = self._tokens("source", source, source_lengths, self.source_embedding)
        max_length = check_positive_int("max_length", max_length)
        h_n, c_n = self._encode(src, src_len, False)
        state = self.decoder._pack_state(h_n, c_n)
        token = np.full(src.shape[0], self.bos_id, np.int64)
        out = np.zeros((src.shape[0], max_length), np.int64)
        done = np.zeros(src.shape[0], bool)
        for t in range(max_length):
            y_t, state = self.decoder.step(self.target_embedding._forward(token, False), state)
            token = self.output.linear(y_t).argmax(axis=1)
            out[:, t] = np.where(done, 0, token)
            done |= token == self.eos_id
            if done.all():
                break
        return out


def _trim(x, lengths):
    """Drop timesteps that no sequence of the batch has (the batch's padding columns)."""
    if lengths is None or x.ndim < 2:
        return x, lengths
    longest = int(lengths.max())
    x = x[:, :longest]
    return np.ascontiguousarray(x), (None if lengths.min() == longest else lengths)


def _default_input_shape(first):
    if isinstance(first, _Recurrent):
        return (None, None, first.input_size)
    if isinstance(first, Dense):
        return (None, first.in_features)
    return (None, None)


def _shape_str(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _arrays_out(obj, prefix, arrays):
    """JSON-able copy of ``obj`` whose arrays move to ``arrays`` (replaced by their key)."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {str(k): _arrays_out(v, f"{prefix}.{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_arrays_out(v, f"{prefix}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _arrays_in(obj, arrays, path):
    """Inverse of :func:`_arrays_out`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays:
                raise ValueError(f"{path}: the model file lacks the array {key!r}")
            return arrays[key]
        return {k: _arrays_in(v, arrays, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays_in(v, arrays, path) for v in obj]
    return obj


def load_model(path):
    """Read a model written by :meth:`Sequential.save`.

    Nothing is unpickled: only the layer, loss and optimizer classes of fastrnn can be named by
    a file, built from their JSON configuration.

    Raises
    ------
    ValueError
        For a corrupt, truncated, foreign or newer-version file, or one whose contents do not
        fit together (unknown layer class, missing or misshapen weights).
    FileNotFoundError
        If ``path`` does not exist.
    """
    from .io import load_bundle

    arrays, meta = load_bundle(path)
    try:
        if meta.get("model") != "Sequential":
            raise ValueError(f"it holds a {meta.get('model')!r} model, not a Sequential one")
        layers = []
        for spec in meta["layers"]:
            cls = LAYER_CLASSES.get(spec["class"])
            if cls is None:
                raise ValueError(f"unknown layer class {spec['class']!r}")
            layers.append(cls(**spec["config"]))
        model = Sequential(layers)
        params = model.parameters()
        stored = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
        if set(stored) != set(params):
            raise ValueError(f"its weights {sorted(stored)} do not match the architecture's "
                             f"{sorted(params)}")
        for name, p in params.items():
            if stored[name].shape != p.shape:
                raise ValueError(f"weight {name!r} has shape {stored[name].shape}, the "
                                 f"architecture needs {p.shape}")
            p[...] = stored[name]
        for i, state in meta.get("rng", {}).items():
            layers[int(i)]._rng.bit_generator.state = state
        model.epochs_trained = int(meta.get("epochs_trained", 0))
        model.info = dict(meta.get("info", {}))
        if "loss" in meta:
            model.loss = _named(losses_module, meta["loss"]["class"], losses_module.Loss)(
                **meta["loss"]["config"])
        if "optimizer" in meta:
            cls = _named(optim_module, meta["optimizer"]["class"], optim_module.Optimizer)
            model.optimizer = cls.from_state_dict(
                _arrays_in(meta["optimizer"]["state"], arrays, path))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a valid fastrnn model file ({exc!r})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid fastrnn model file: {exc}") from None
    return model


def _named(module, name, base):
    """The class ``name`` of ``module`` if it is a subclass of ``base``; else ValueError."""
    cls = getattr(module, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"unknown {base.__name__.lower()} class {name!r}")
    return cls

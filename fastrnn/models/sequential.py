"""The :class:`Sequential` model: a stack of layers trained with ``fit`` and used with
``evaluate`` / ``predict`` / ``generate``.

:class:`Sequential` chains layers (``Embedding``, ``RNN``/``LSTM``/``GRU``, ``Dense``,
``Dropout``, and the attention layers ``PositionalEncoding``, ``MultiHeadAttention``,
``LayerNorm``, ``TransformerEncoderLayer``). Data is validated once, here; the layers then run
on arrays they can trust, through the layer protocol (:class:`fastrnn.layers.Layer`:
``model_forward``, ``model_backward``, ``step``). Recurrent layers receive the batch's
``lengths``, so padding is never computed; the attention layers mask the padded keys with them;
losses on sequence outputs mask the padded steps out.
"""
from typing import NamedTuple

import numpy as np

from .. import losses as losses_module
from .. import metrics as metrics_module
from .._validation import (as_float_array, as_lengths, as_rng, check_fraction,
                           check_positive_int)
from ..layers import (GRU, LSTM, RNN, Dense, Dropout, Embedding, GlobalAveragePooling1D,
                      Layer, LayerNorm, MultiHeadAttention, PositionalEncoding, Recurrent,
                      TransformerEncoderLayer)
from ..layers.base import training_hold
from .training import _Model, _trim, train_truncated

#: layer classes a model file may name (nothing else is ever constructed from a file)
LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, Dropout, Embedding, GRU, LSTM, RNN,
                                                LayerNorm, MultiHeadAttention,
                                                PositionalEncoding, TransformerEncoderLayer,
                                                GlobalAveragePooling1D)}
#: the attention layers: whole sequences ``(batch, timesteps, features)`` in, validated by
#: their ``check_input``
ATTENTION_LAYERS = (MultiHeadAttention, PositionalEncoding, TransformerEncoderLayer)


class Trace(NamedTuple):
    """What flowed between the layers in one forward and backward pass (:meth:`Sequential.trace`).

    Attributes
    ----------
    loss : float
        The loss of the batch.
    output : ndarray
        The model's output (logits when the loss takes logits).
    inputs : list of ndarray
        ``inputs[i]``: the input of layer ``i`` (``inputs[0]`` is the validated batch).
    output_grads : list of ndarray
        ``output_grads[i]``: the gradient of the loss with respect to layer ``i``'s output.
    lengths : ndarray of int or None
        The validated lengths of the batch.
    """

    loss: float
    output: np.ndarray
    inputs: list
    output_grads: list
    lengths: object


class Sequential(_Model):
    """A stack of layers, each feeding the next.

    Parameters
    ----------
    layers : list
        ``Embedding``, ``RNN``, ``LSTM``, ``GRU``, ``Dense``, ``Dropout``, ``LayerNorm``,
        ``PositionalEncoding``, ``MultiHeadAttention``, ``TransformerEncoderLayer`` and
        ``GlobalAveragePooling1D`` layers. A recurrent layer passes on its output sequence, or
        with ``return_sequences=False`` its output at each sequence's last valid step; the
        attention layers pass on sequences; ``GlobalAveragePooling1D`` passes on each
        sequence's mean over its valid steps.

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
            if type(layer).__name__ not in LAYER_CLASSES or not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastrnn layer, got {type(layer).__name__}")
        super().__init__()
        self.layers = layers

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
            from ..text.sequences import pad_sequences
            is_tokens = isinstance(first, Embedding)
            X, lengths = pad_sequences(X, dtype="int64" if is_tokens else self.dtype.name)
        if isinstance(first, Embedding):
            x = first.check_tokens(X, name)
            sequence = x.ndim >= 2
            after = self.layers[1] if len(self.layers) > 1 else None
            if isinstance(after, (Recurrent, *ATTENTION_LAYERS)) and x.ndim != 2:
                raise ValueError(f"{name} must be token ids of shape (batch, timesteps) for "
                                 f"the {type(after).__name__} layer after the Embedding, got "
                                 f"shape {x.shape}")
        elif isinstance(first, Recurrent):
            x = as_float_array(name, X, first.dtype, (None, None, first.input_size))
            sequence = True
        elif isinstance(first, (LayerNorm, GlobalAveragePooling1D, *ATTENTION_LAYERS)):
            x = first.check_input(X, name)
            sequence = x.ndim == 3
        else:
            feature = first.in_features if isinstance(first, Dense) else None
            x = as_float_array(name, X, self.dtype, (..., feature))
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

    def _forward(self, x, lengths, training, logits=False, states=None, inputs=None):
        """Run the layers on validated input: ``(output, final states)``.

        ``states`` holds each layer's initial state (None: zeros for all); the final states
        come back in a list of the same form. With ``logits`` the last layer (a Dense) returns
        its pre-activation. ``inputs``, a list, receives the input of each layer.
        """
        finals = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if inputs is not None:
                inputs.append(x)
            extra = {"logits": True} if logits and i == last else {}
            x, state = layer.model_forward(x, lengths, state=None if states is None
                                           else states[i], training=training, **extra)
            finals.append(state)
        return x, finals

    def _backward(self, grad, output_grads=None):
        """Backward through the layers of the last training forward; fills their grads.

        ``output_grads``, a list, receives at ``[i]`` the gradient at layer ``i``'s output.
        """
        if output_grads is not None:
            output_grads[:] = [None] * len(self.layers)
        d = grad
        for i in reversed(range(len(self.layers))):
            if output_grads is not None:
                output_grads[i] = d
            # the first layer's input is data: its gradient (a GEMM as large as dW_ih) is skipped
            d, _ = self.layers[i].model_backward(d, input_grad=i > 0)

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
            parts.append(self._forward(xb, lb, training=False, logits=logits)[0])
        if parts[0].ndim < 3:
            return np.concatenate(parts)
        # sequence outputs: each batch was trimmed to its longest sequence; pad back, and zero
        # the padded steps inside a batch too (a layer after the recurrent ones, a Dense with
        # a bias say, maps the recurrent zeros there to something else)
        out = np.zeros((x.shape[0], x.shape[1], *parts[0].shape[2:]), parts[0].dtype)
        start = 0
        for part in parts:
            out[start:start + len(part), :part.shape[1]] = part
            start += len(part)
        if lengths is not None:
            out[~self._mask(out, lengths)] = 0
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

        Notes
        -----
        Safe from several threads at once, and while another thread trains the model.
        """
        x, lengths = self._prepare(X, lengths)
        return self._run_batches(x, lengths, check_positive_int("batch_size", batch_size),
                                 logits=False)

    def evaluate(self, X, y, lengths=None, batch_size=256, loss=None, metrics=()):
        """Loss and metrics of the model on ``(X, y)``.

        Parameters
        ----------
        X, y : array_like
            Inputs (or a ragged list of sequences) and targets, as for :meth:`fit`.
        lengths : array_like of int, optional
            Valid timesteps of each sequence.
        batch_size : int
        loss : str or loss object, optional
            Default: the model's loss from :meth:`fit`.
        metrics : sequence of str
            Names from :mod:`fastrnn.metrics`.

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
        for name, metric in metrics_module.get_all(metrics):
            logs[name] = float(metric(out, y, mask))
        return logs

    def trace(self, X, y, lengths=None, loss=None):
        """One forward and backward pass on a batch, recording what flows between the layers.

        The pass is a training step without the update: the layers run with
        ``training=True`` (Dropout drops) and their ``grads`` are filled. This is what
        :func:`fastrnn.diagnostics.gradient_norms` looks at.

        Parameters
        ----------
        X, y : array_like
            A batch of inputs and targets, as for :meth:`fit`.
        lengths : array_like of int, optional
        loss : str or loss object, optional
            Default: the model's loss from :meth:`fit`.

        Returns
        -------
        Trace
            The loss, the output, each layer's input and the gradient at each layer's output.
        """
        loss = losses_module.get(loss if loss is not None else self.loss)
        x, lengths = self._prepare(X, lengths)
        y = self._targets(y, x.shape[0])
        logits = self._logits_mode(loss)
        inputs, output_grads = [], []
        with training_hold(self.layers):
            out, _ = self._forward(x, lengths, training=True, logits=logits, inputs=inputs)
            value, grad = loss(out, y, self._mask(out, lengths))
            self._backward(grad.astype(out.dtype, copy=False), output_grads)
        return Trace(float(value), out, inputs, output_grads, lengths)

    def fit(self, X, y, loss=None, optimizer=None, epochs=1, batch_size=32, lengths=None,
            validation_data=None, validation_split=0.0, shuffle=True, clip_norm=None,
            clip_value=None, callbacks=(), verbose=1, metrics=(), seed=0, initial_epoch=None,
            truncate=None, on_nonfinite="raise"):
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
        on_nonfinite : {"raise", "skip"}
            A batch whose loss or gradients are NaN or infinite never updates the weights:
            ``"raise"`` stops training with a FloatingPointError (the model keeps the weights
            of the last finite step), ``"skip"`` leaves that update out and warns once per
            epoch.

        Returns
        -------
        History

        Raises
        ------
        FloatingPointError
            With ``on_nonfinite="raise"``, at the first non-finite loss or gradient.
        RuntimeError
            If another thread trains this model or one of its layers at the time.

        Notes
        -----
        The layers are this thread's for the whole call: training them from another thread
        meanwhile (``fit``, ``trace``, a layer call with ``training=True``) raises a
        RuntimeError, while ``predict``, ``evaluate`` and ``generate`` from other threads run
        (on the weights of the moment).
        """
        metrics_module.get_all(metrics)        # refused now, not after the first epoch
        self._set_training(loss, optimizer)
        if truncate is not None:
            truncate = check_positive_int("truncate", truncate)
            for layer in self.layers:
                if isinstance(layer, Recurrent) and (layer.bidirectional
                                                      or not layer.return_sequences):
                    raise ValueError(f"truncate needs unidirectional recurrent layers that "
                                     f"return sequences, got {layer!r}")
                if isinstance(layer, ATTENTION_LAYERS):
                    raise ValueError(f"truncate cuts the sequences into windows, which "
                                     f"attention and positional encodings cannot see across; "
                                     f"got {layer!r}")
        check_fraction("validation_split", validation_split)
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

        def train_window(xw, lw, yw, update, states=None):
            out, finals = self._forward(xw, lw, training=True, logits=logits, states=states)
            if out.ndim == 3 and yw.ndim >= 2:
                yw = yw[:, :out.shape[1]]   # per-step targets of a batch trimmed to its longest
            value, grad = self.loss(out, yw, self._mask(out, lw))
            self._backward(grad.astype(out.dtype, copy=False))
            update(value)
            return value, finals

        def train_batch(idx, update):
            xb, lb = _trim(x[idx], None if lengths is None else lengths[idx])
            if truncate is None:
                return train_window(xb, lb, y[idx], update)[0]
            return train_truncated(xb, lb, y[idx], truncate,
                                   lambda xw, lw, yw, states: train_window(xw, lw, yw, update,
                                                                           states))

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

        with training_hold(self.layers):
            return self._fit_loop(x.shape[0], train_batch, epoch_logs, epochs=epochs,
                                  batch_size=batch_size, shuffle=shuffle, seed=seed,
                                  verbose=verbose, callbacks=callbacks, clip_norm=clip_norm,
                                  clip_value=clip_value, initial_epoch=initial_epoch,
                                  on_nonfinite=on_nonfinite)

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
        rng = as_rng("seed", seed)
        states = [None] * len(self.layers)

        def next_logits(token):
            v = token
            for i, layer in enumerate(self.layers[:-1]):
                v, states[i] = layer.step(v, states[i])
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
        rows = []
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            rows.append((f"{i} {type(layer).__name__}", shape, layer))
        return self._summary_table(rows, print_fn)

    def __repr__(self):
        return "Sequential([\n" + "".join(f"    {layer!r},\n" for layer in self.layers) + "])"



def _default_input_shape(first):
    if isinstance(first, Recurrent):
        return (None, None, first.input_size)
    if isinstance(first, Dense):
        return (None, first.in_features)
    if isinstance(first, LayerNorm):
        return (None, None, first.normalized_shape)
    if isinstance(first, TransformerEncoderLayer):
        return (None, None, first.d_model)
    if isinstance(first, ATTENTION_LAYERS):
        return (None, None, first.embed_dim)
    return (None, None)

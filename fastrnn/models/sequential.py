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
from .._masks import PADDINGS, to_post_padding, to_pre_padding
from .._validation import (as_float_array, as_lengths, as_rng, check_bool, check_choice,
                           check_fraction, check_positive_int)
from ..layers import (GRU, LSTM, RNN, Dense, Dropout, Embedding, GlobalAveragePooling1D,
                      Layer, LayerNorm, MultiHeadAttention, PositionalEncoding, Recurrent,
                      TransformerEncoderLayer)
from ..layers.base import training_hold
from ..layers.recurrent import _state_batch
from .training import _Model, _trim, train_truncated

#: layer classes a model file may name (nothing else is ever constructed from a file)
LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, Dropout, Embedding, GRU, LSTM, RNN,
                                                LayerNorm, MultiHeadAttention,
                                                PositionalEncoding, TransformerEncoderLayer,
                                                GlobalAveragePooling1D)}
#: the attention layers: whole sequences ``(batch, timesteps, features)`` in, validated by
#: their ``check_input``
ATTENTION_LAYERS = (MultiHeadAttention, PositionalEncoding, TransformerEncoderLayer)
#: the layers that cannot run an empty sequence (length 0): nothing to attend to or average
NO_EMPTY_SEQUENCES = (*ATTENTION_LAYERS, GlobalAveragePooling1D)


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
    stateful : bool
        Carry the recurrent layers' states from one batch to the next, as Keras'
        ``stateful=True``: row ``i`` of batch ``k + 1`` continues the stream of row ``i`` of
        batch ``k`` (a long stream cut into consecutive batches). :meth:`predict` and
        :meth:`evaluate` run their rows as consecutive batches of ``batch_size`` streams,
        starting from the states the model carries (:attr:`states`) and leaving theirs;
        :meth:`reset_states` goes back to the initial states. :meth:`fit` starts every epoch
        from the initial states, carries the states through the epoch's batches in order
        (``shuffle`` must be False, its default for a stateful model) without any gradient
        across batches, and leaves the model with the states of its last batch. The number
        of rows must be a multiple of the batch size; sequences of different lengths carry
        the state of their last valid step (an empty one, length 0, carries its state
        through). Needs unidirectional recurrent layers and no attention layers. A
        stateful model's ``predict`` and ``evaluate`` change it, so they are not for
        several threads at once.

    Examples
    --------
    >>> import fastrnn
    >>> model = fastrnn.Sequential([
    ...     fastrnn.Embedding(100, 16, padding_idx=0),
    ...     fastrnn.LSTM(16, 32, return_sequences=False),
    ...     fastrnn.Dense(32, 1, activation="sigmoid"),
    ... ])
    """

    def __init__(self, layers, stateful=False):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if type(layer).__name__ not in LAYER_CLASSES or not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastrnn layer, got {type(layer).__name__}")
        super().__init__()
        self.layers = layers
        self.stateful = check_bool("stateful", stateful)
        if self.stateful:
            self._check_carried_states("stateful=True", sequences=False)
        self._states = None

    def _check_carried_states(self, what, sequences):
        """Refuse a model whose states cannot be carried from one batch (or window) to the
        next: bidirectional recurrent layers (their reverse direction ends at step 0),
        attention layers (they see one batch's steps only) and, with ``sequences``,
        recurrent layers that do not return sequences."""
        for layer in self.layers:
            if isinstance(layer, Recurrent) and (layer.bidirectional or (
                    sequences and not layer.return_sequences)):
                raise ValueError(f"{what} needs unidirectional recurrent layers"
                                 f"{' that return sequences' if sequences else ''}, got "
                                 f"{layer!r}")
            if isinstance(layer, ATTENTION_LAYERS):
                raise ValueError(f"{what} cuts the sequences into "
                                 f"{'windows' if sequences else 'batches'}, which attention "
                                 f"and positional encodings cannot see across; got {layer!r}")

    # ------------------------------------------------------------------ stateful models

    @property
    def states(self):
        """The states a stateful model carries to its next batch: one entry per layer (the
        recurrent layers' final states ``h`` or ``(h, c)``, None for the others), or None for
        the initial states (after :meth:`reset_states`, and always for a stateless model).

        Returns
        -------
        list or None
        """
        return None if self._states is None else list(self._states)

    def reset_states(self):
        """Start the next batch of a stateful model from the initial states (zeros, or the
        learned initial states).

        Returns
        -------
        None
        """
        self._states = None

    def _stream_batch_size(self, n, batch_size, name="X", carried=True):
        """The batch size a call on ``n`` rows runs with: ``batch_size`` (at most ``n``); in
        a stateful model the number of streams, which must divide ``n`` and, with
        ``carried``, equal the batch of the states the model carries."""
        batch_size = min(check_positive_int("batch_size", batch_size), n)
        if not self.stateful:
            return batch_size
        if n % batch_size:
            raise ValueError(f"a stateful model runs the rows of {name} as consecutive batches "
                             f"of batch_size={batch_size} streams, so their number must be a "
                             f"multiple of it; got {n} rows")
        streams = next((_state_batch(s) for s in self._states or () if s is not None), None)
        if carried and streams is not None and streams != batch_size:
            raise ValueError(f"batch_size={batch_size} differs from the {streams} streams "
                             f"whose states the model carries; call reset_states() first to "
                             f"start new streams")
        return batch_size

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

    def _prepare(self, X, lengths, name="X", padding="post"):
        """Validate the model input once: ``(x, lengths)`` as the first layer expects them,
        post-padded (a pre-padded ``x`` is shifted, see :mod:`fastrnn._masks`)."""
        first = self.layers[0]
        check_choice("padding", padding, PADDINGS)
        mask_zero = isinstance(first, Embedding) and first.mask_zero
        if isinstance(X, (list, tuple)) and len(X) and np.ndim(X[0]) >= 1 and \
                len({len(s) for s in X}) > 1:
            if lengths is not None:
                raise ValueError(f"{name} is ragged (sequences of different lengths), "
                                 f"so lengths must not be given too")
            from ..text.sequences import pad_sequences
            is_tokens = isinstance(first, Embedding)
            X, lengths = pad_sequences(X, padding=padding,
                                       dtype="int64" if is_tokens else self.dtype.name)
            if mask_zero:
                lengths = None      # the zeros say where the padding is
        if isinstance(first, Embedding):
            x = first.check_tokens(X, name)
            sequence = x.ndim >= 2
            after = self.layers[1] if len(self.layers) > 1 else None
            if isinstance(after, (Recurrent, *ATTENTION_LAYERS)) and x.ndim != 2:
                raise ValueError(f"{name} must be token ids of shape (batch, timesteps) for "
                                 f"the {type(after).__name__} layer after the Embedding, got "
                                 f"shape {x.shape}")
            if mask_zero and lengths is None and x.ndim == 2:
                lengths = first.compute_lengths(x, padding, name)
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
            lengths = as_lengths(lengths, x.shape[0], x.shape[1], allow_empty=True)
            self._check_empty(lengths)
            if padding == "pre" and lengths is not None:
                x = to_post_padding(x, lengths)
        return x, lengths

    def _check_empty(self, lengths):
        """Refuse empty sequences (length 0) when a layer cannot run them."""
        if lengths is None or lengths.min() > 0:
            return
        for layer in self.layers:
            if isinstance(layer, NO_EMPTY_SEQUENCES):
                row = int(np.argmin(lengths))
                raise ValueError(f"lengths must be >= 1 for a model with a "
                                 f"{type(layer).__name__} layer (an empty sequence has no step "
                                 f"to attend to or average), got 0 at row {row}")

    def _targets(self, y, x, lengths, padding):
        """Validate the targets of a prepared batch ``x``; per-step targets of a pre-padded
        batch are shifted like ``x``."""
        n = x.shape[0]
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"y must be numbers (class ids, labels or values), got dtype {y.dtype}")
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"y must have one target per sequence ({n}), got shape {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or Inf")
        if padding == "pre" and lengths is not None and y.ndim >= 2 and \
                y.shape[1] == x.shape[1] and self._sequence_output(x.shape):
            y = to_post_padding(y, lengths)
        return y

    def _sequence_output(self, input_shape):
        """True if the model maps input of ``input_shape`` to a sequence."""
        shape = input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return len(shape) == 3

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

    def _run_batches(self, x, lengths, batch_size, logits, states=None):
        """Outputs for all of ``x`` (inference), computed batch by batch: ``(outputs, final
        states)``. A stateful model starts each batch from the states the previous one ended
        with (the first from ``states``) and returns the last batch's; a stateless one starts
        each from the initial states and returns None."""
        parts = []
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            xb, lb = _trim(x[sl], None if lengths is None else lengths[sl])
            out, finals = self._forward(xb, lb, training=False, logits=logits,
                                        states=states if self.stateful else None)
            states = finals if self.stateful else None
            parts.append(out)
        return self._join_batches(parts, x, lengths), states

    def _join_batches(self, parts, x, lengths):
        """The outputs of the batches of :meth:`_run_batches` as one array."""
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

    def predict(self, X, lengths=None, batch_size=256, padding="post"):
        """Model outputs for ``X``, with the last layer's activation applied.

        Parameters
        ----------
        X : array_like or list of arrays
            Input batch (token ids for an ``Embedding`` first layer), or a ragged list of
            sequences of different lengths (padded here, and run on their lengths).
        lengths : array_like of int, optional
            Valid timesteps of each sequence (0 for an empty one). Without them, a model
            that starts with an ``Embedding(mask_zero=True)`` computes them from the tokens.
        batch_size : int
            Rows per batch; in a stateful model the number of streams (see
            :class:`Sequential`).
        padding : {"post", "pre"}
            Where the padding of the sequences shorter than ``X``'s timesteps is: after
            their valid steps, or before them (Keras' ``pad_sequences`` default); sequence
            outputs are padded the same way.

        Returns
        -------
        ndarray
            ``(n, ...)``; 0 at padded steps of sequence outputs.

        Notes
        -----
        Safe from several threads at once, and while another thread trains the model
        (stateful models excepted: they carry their states from call to call).
        """
        x, lengths = self._prepare(X, lengths, padding=padding)
        batch_size = self._stream_batch_size(x.shape[0], batch_size)
        out, self._states = self._run_batches(x, lengths, batch_size, logits=False,
                                              states=self._states)
        if padding == "pre" and lengths is not None and out.ndim == 3:
            out = to_pre_padding(out, lengths)
        return out

    def evaluate(self, X, y, lengths=None, batch_size=256, loss=None, metrics=(),
                 padding="post"):
        """Loss and metrics of the model on ``(X, y)``.

        Parameters
        ----------
        X, y : array_like
            Inputs (or a ragged list of sequences) and targets, as for :meth:`fit`.
        lengths : array_like of int, optional
            Valid timesteps of each sequence (see :meth:`predict`).
        batch_size : int
            Rows per batch; in a stateful model the number of streams.
        loss : str or loss object, optional
            Default: the model's loss from :meth:`fit`.
        metrics : sequence of str
            Names from :mod:`fastrnn.metrics`.
        padding : {"post", "pre"}
            Where the padding of ``X`` (and of per-step targets ``y``) is; see
            :meth:`predict`.

        Returns
        -------
        dict of str to float
            ``"loss"`` and each metric.
        """
        loss = losses_module.get(loss if loss is not None else self.loss)
        x, lengths = self._prepare(X, lengths, padding=padding)
        y = self._targets(y, x, lengths, padding)
        batch_size = self._stream_batch_size(x.shape[0], batch_size)
        logs, self._states = self._evaluate(x, y, lengths, batch_size, loss, metrics,
                                            self._states)
        return logs

    def _evaluate(self, x, y, lengths, batch_size, loss, metrics, states=None):
        """:meth:`evaluate` on prepared arrays: ``(logs, final states)`` (see
        :meth:`_run_batches`)."""
        out, states = self._run_batches(x, lengths, batch_size, self._logits_mode(loss), states)
        mask = self._mask(out, lengths)
        value, _ = loss(out, y[:, :out.shape[1]] if mask is not None and y.ndim >= 2 else y, mask)
        logs = {"loss": float(value)}
        for name, metric in metrics_module.get_all(metrics):
            logs[name] = float(metric(out, y, mask))
        return logs, states

    def trace(self, X, y, lengths=None, loss=None, padding="post"):
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
        padding : {"post", "pre"}
            Where the padding of ``X`` is (see :meth:`predict`); what the trace records is
            post-padded.

        Returns
        -------
        Trace
            The loss, the output, each layer's input and the gradient at each layer's output
            (from the initial states, also in a stateful model).
        """
        loss = losses_module.get(loss if loss is not None else self.loss)
        x, lengths = self._prepare(X, lengths, padding=padding)
        y = self._targets(y, x, lengths, padding)
        logits = self._logits_mode(loss)
        inputs, output_grads = [], []
        with training_hold(self.layers):
            out, _ = self._forward(x, lengths, training=True, logits=logits, inputs=inputs)
            value, grad = loss(out, y, self._mask(out, lengths))
            self._backward(grad.astype(out.dtype, copy=False), output_grads)
        return Trace(float(value), out, inputs, output_grads, lengths)

    def fit(self, X, y, loss=None, optimizer=None, epochs=1, batch_size=32, lengths=None,
            validation_data=None, validation_split=0.0, shuffle=None, clip_norm=None,
            clip_value=None, callbacks=(), verbose=1, metrics=(), seed=0, initial_epoch=None,
            truncate=None, on_nonfinite="raise", padding="post"):
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
            Valid timesteps of each sequence (0 for an empty one); padded steps are neither
            computed nor counted. Without them, a model that starts with an
            ``Embedding(mask_zero=True)`` computes them from the tokens.
        validation_data : tuple, optional
            ``(X_val, y_val)`` or ``(X_val, y_val, lengths_val)``, padded like ``X``.
        validation_split : float
            Fraction of the data held out (the last rows) when ``validation_data`` is None.
        shuffle : bool, optional
            Shuffle the training rows each epoch (the order depends on ``seed`` and the epoch
            number only, so resumed training sees the same batches). Default: True, and
            False for a stateful model (which refuses True: its batches are consecutive).
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
        padding : {"post", "pre"}
            Where the padding of ``X`` (and of per-step targets ``y``) is: after each
            sequence's valid steps, or before them (Keras' ``pad_sequences`` default).

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
            self._check_carried_states("truncate", sequences=True)
        shuffle = not self.stateful if shuffle is None else check_bool("shuffle", shuffle)
        if self.stateful and shuffle:
            raise ValueError("shuffle must be False for a stateful model (batch k + 1 "
                             "continues the streams of batch k), got True")
        check_fraction("validation_split", validation_split)
        x, lengths = self._prepare(X, lengths, padding=padding)
        y = self._targets(y, x, lengths, padding)
        if truncate is not None and (y.ndim < 2 or y.shape[1] != x.shape[1]):
            raise ValueError(f"truncate needs a target for every timestep, shape "
                             f"({x.shape[0]}, {x.shape[1]}, ...), got y of shape {y.shape}")
        validation = None     # (x, y, lengths), prepared
        if validation_data is None and validation_split > 0:
            n_val = int(round(x.shape[0] * validation_split))
            if not 0 < n_val < x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no rows for "
                                 f"training or for validation ({x.shape[0]} rows)")
            cut = x.shape[0] - n_val
            validation = (x[cut:], y[cut:], None if lengths is None else lengths[cut:])
            x, y = x[:cut], y[:cut]
            lengths = None if lengths is None else lengths[:cut]
        elif validation_data is not None:
            x_val, l_val = self._prepare(validation_data[0], validation_data[2] if len(
                validation_data) > 2 else None, "validation_data[0]", padding)
            validation = (x_val, self._targets(validation_data[1], x_val, l_val, padding),
                          l_val)
        # (a stateful model evaluates in batches of its streams; a stateless one in 256s)
        batch_size = self._stream_batch_size(x.shape[0], batch_size, carried=False)
        eval_batch = val_batch = batch_size if self.stateful else 256
        if validation is not None:
            val_batch = self._stream_batch_size(validation[0].shape[0], val_batch,
                                                "the validation data", carried=False)
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
            # a stateful model's epoch starts from the initial states (its first batch)
            states = self._states if self.stateful and idx[0] > 0 else None
            if truncate is None:
                value, finals = train_window(xb, lb, y[idx], update, states)
            else:
                value, finals = train_truncated(
                    xb, lb, y[idx], truncate,
                    lambda xw, lw, yw, states: train_window(xw, lw, yw, update, states), states)
            if self.stateful:
                self._states = finals
            return value

        def epoch_logs():
            logs = {}     # (from the initial states, not touching a stateful model's states)
            if metrics:
                train, _ = self._evaluate(x, y, lengths, eval_batch, self.loss, metrics)
                logs.update({k: v for k, v in train.items() if k != "loss"})
            if validation is not None:
                val, _ = self._evaluate(*validation[:2], validation[2], val_batch, self.loss,
                                        metrics)
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

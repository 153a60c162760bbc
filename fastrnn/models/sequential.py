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
import math
import numbers
from typing import NamedTuple

import numpy as np

from .. import losses as losses_module
from .. import metrics as metrics_module
from .._masks import PADDINGS, to_post_padding, to_pre_padding
from .._validation import (as_float_array, as_lengths, as_list, as_rng, check_bool,
                           check_choice, check_fraction, check_positive_int)
from ..layers import (GRU, LSTM, RNN, Dense, Dropout, Embedding, GlobalAveragePooling1D,
                      Layer, LayerNorm, MultiHeadAttention, PositionalEncoding, Recurrent,
                      TransformerEncoderLayer)
from ..layers.base import training_hold
from ..layers.recurrent import _state_batch
from .training import (BatchSource, _Model, _trim, is_batches, row_batches,
                       train_truncated)

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
        #: the class labels of a classifier trained on labels that are not class ids (strings,
        #: say): ``classes_[i]`` is the label of class id ``i``; None when the targets are ids
        self.classes_ = None
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

    def _targets(self, y, x, lengths, loss, classes, padding="post"):
        """Validate the targets of a prepared batch ``x``; labels become class ids of
        ``classes``, per-step targets of a pre-padded batch are shifted like ``x``."""
        n = x.shape[0]
        y = np.asarray(y)
        if classes is not None or y.dtype.kind not in "biuf":
            y = _label_ids(y, loss, classes)
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
        out = _concat(parts, x.shape[1])
        # sequence outputs: zero the padded steps inside a batch too (a layer after the
        # recurrent ones, a Dense with a bias say, maps the recurrent zeros there to something
        # else)
        if out.ndim == 3 and lengths is not None:
            out[~self._mask(out, lengths)] = 0
        return out, states

    def _batch(self, batch, loss=None, classes=None, targets=True, padding="post"):
        """One batch of an iterable of batches, validated: ``(x, y, lengths)``.

        With ``targets`` a batch is ``(X, y)`` or ``(X, y, lengths)``; without (``predict``),
        ``X``, ``(X, lengths)`` or ``(X, y, lengths)`` (``y`` ignored, and None is returned).
        """
        if targets:
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise TypeError(f"each batch of X must be a tuple (X, y) or (X, y, lengths), "
                                f"got {_describe(batch)}")
            xb, yb, lb = (*batch, None)[:3]
        elif isinstance(batch, tuple) and len(batch) in (2, 3):
            xb, yb, lb = batch[0], None, batch[-1]
        else:
            xb, yb, lb = batch, None, None
        x, lengths = self._prepare(xb, lb, padding=padding)
        return x, None if not targets else self._targets(yb, x, lengths, loss, classes,
                                                          padding), lengths

    def _score(self, out, y, lengths, loss, named, means):
        """Add the loss (unless ``loss`` is None) and the metrics ``named`` of one output to
        ``means``, weighted by its valid positions."""
        mask = self._mask(out, lengths)
        if mask is not None and y.ndim >= 2:
            y = y[:, :out.shape[1]]        # per-step targets of a batch trimmed to its longest
        weight = int(np.count_nonzero(mask)) if mask is not None else \
            int(np.prod(out.shape[:2 if out.ndim == 3 else 1]))
        if loss is not None:
            value, _ = loss(out, y, mask)
            means.add("loss", value, weight, summed=getattr(loss, "reduction", "") == "sum")
        for name, metric in named:
            means.add(name, metric(out, y, mask), weight)

    def _scores(self, x, y, lengths, batch_size, loss, named, states=None):
        """Loss and metrics of validated arrays (the targets as class ids): ``(scores, final
        states)`` (see :meth:`_run_batches`)."""
        means = _Means()
        out, states = self._run_batches(x, lengths, batch_size, self._logits_mode(loss), states)
        self._score(out, y, lengths, loss, named, means)
        return means.result(), states

    def _scores_of_batches(self, source, loss, named, padding="post"):
        """Loss and metrics over an iterable of batches, read one batch at a time (a stateful
        model carries its states from batch to batch)."""
        means = _Means()
        logits = self._logits_mode(loss)
        batches = BatchSource(source, "X").epoch(None)
        try:
            for batch in batches:
                x, y, lengths = self._batch(batch, loss, self.classes_, padding=padding)
                xb, lb = _trim(x, lengths)
                out, finals = self._forward(xb, lb, training=False, logits=logits,
                                            states=self._states if self.stateful else None)
                if self.stateful:
                    self._states = finals
                self._score(out, y, lb, loss, named, means)
        finally:
            batches.close()
        if not means.values:
            raise ValueError("X gave no batches to evaluate")
        return means.result()

    # ------------------------------------------------------------------ public API

    def predict(self, X, lengths=None, batch_size=256, padding="post"):
        """Model outputs for ``X``, with the last layer's activation applied.

        Parameters
        ----------
        X : array_like, list of arrays, or iterable of batches
            Input batch (token ids for an ``Embedding`` first layer), or a ragged list of
            sequences of different lengths (padded here, and run on their lengths); or an
            iterable of batches (a generator, a :class:`fastrnn.data.Loader` without
            shuffling), each ``X``, ``(X, lengths)`` or ``(X, y, lengths)`` (``y`` ignored),
            read one batch at a time.
        lengths : array_like of int, optional
            Valid timesteps of each sequence (with arrays only; 0 for an empty one). Without
            them, a model that starts with an ``Embedding(mask_zero=True)`` computes them from
            the tokens.
        batch_size : int
            Sequences run at once (each batch of an iterable is cut to this size too); in a
            stateful model the number of streams (see :class:`Sequential`).
        padding : {"post", "pre"}
            Where the padding of the sequences shorter than ``X``'s timesteps is: after
            their valid steps, or before them (Keras' ``pad_sequences`` default); sequence
            outputs are padded the same way.

        Returns
        -------
        ndarray
            ``(n, ...)``; 0 at padded steps of sequence outputs. From an iterable of batches,
            the outputs of its batches in their order, sequence outputs padded to the longest
            sequence of all.

        Notes
        -----
        Safe from several threads at once, and while another thread trains the model
        (stateful models excepted: they carry their states from call to call).
        """
        batch_size = check_positive_int("batch_size", batch_size)
        if not is_batches(X):
            x, lengths = self._prepare(X, lengths, padding=padding)
            batch_size = self._stream_batch_size(x.shape[0], batch_size)
            out, self._states = self._run_batches(x, lengths, batch_size, logits=False,
                                                  states=self._states)
            return _padded_like(out, lengths, padding)
        _refuse_with_batches(lengths=lengths)
        parts, all_lengths = [], []
        batches = BatchSource(X, "X").epoch(None)
        try:
            for batch in batches:
                x, _, lb = self._batch(batch, targets=False, padding=padding)
                out, self._states = self._run_batches(
                    x, lb, self._stream_batch_size(x.shape[0], batch_size), logits=False,
                    states=self._states)
                parts.append(out)
                all_lengths.append(np.full(len(x), x.shape[1]) if lb is None else lb)
        finally:
            batches.close()
        if not parts:
            raise ValueError("X gave no batches to predict")
        return _padded_like(_concat(parts), np.concatenate(all_lengths), padding)

    def predict_classes(self, X, lengths=None, batch_size=256):
        """The most likely class of each sequence (or of each step, for sequence outputs).

        Parameters
        ----------
        X, lengths, batch_size
            As for :meth:`predict`.

        Returns
        -------
        ndarray
            Class labels (``classes_[id]``) if the model was trained on labels that are not
            class ids (strings, say), else the class ids: the argmax of a softmax output, or
            0/1 for one sigmoid output (1 when its probability is above 0.5). Padded steps of
            sequence outputs hold the class of a zero output.

        Raises
        ------
        ValueError
            If the model is not a classifier: its last layer is not a Dense with a softmax or
            a sigmoid activation (or without one, trained with a cross-entropy loss).

        Examples
        --------
        >>> import numpy as np, fastrnn
        >>> model = fastrnn.Sequential([fastrnn.GRU(2, 4, return_sequences=False, seed=0),
        ...                             fastrnn.Dense(4, 2, seed=0)])
        >>> x = np.random.default_rng(0).standard_normal((6, 3, 2))
        >>> _ = model.fit(x, ["cat", "dog"] * 3, loss="cce", optimizer="adam", verbose=0)
        >>> model.classes_.tolist()
        ['cat', 'dog']
        >>> model.predict_classes(x).shape
        (6,)
        """
        last = self.layers[-1]
        activation = getattr(last, "activation", None) if isinstance(last, Dense) else "none"
        if activation == "softmax" or (activation is None and isinstance(
                self.loss, losses_module.CategoricalCrossentropy)):
            out = self.predict(X, lengths, batch_size)
            ids = out.argmax(axis=-1)
        elif activation == "sigmoid" or (activation is None and isinstance(
                self.loss, losses_module.BinaryCrossentropy)):
            if last.out_features != 1:
                raise ValueError(f"predict_classes needs one sigmoid output (two classes), the "
                                 f"last layer has {last.out_features}: threshold predict() "
                                 f"for several independent labels")
            out = self.predict(X, lengths, batch_size)
            ids = (out[..., 0] > (0.5 if activation else 0.0)).astype(np.int64)
        else:
            raise ValueError(f"predict_classes needs a classifier: a last Dense with a "
                             f"softmax or sigmoid activation, or one without an activation "
                             f"trained with a cross-entropy loss; got {last!r} and loss "
                             f"{self.loss!r}")
        return ids if self.classes_ is None else self.classes_[ids]

    def evaluate(self, X, y=None, lengths=None, batch_size=256, loss=None, metrics=(),
                 padding="post"):
        """Loss and metrics of the model on ``(X, y)``.

        Parameters
        ----------
        X : array_like, list of arrays, or iterable of batches
            Inputs (or a ragged list of sequences), as for :meth:`fit`; or an iterable of
            batches ``(X, y)`` or ``(X, y, lengths)`` (a generator, a
            :class:`fastrnn.data.Loader`), read one batch at a time.
        y : array_like, optional
            Targets, as for :meth:`fit` (class labels if the model has ``classes_``); None
            with an iterable of batches.
        lengths : array_like of int, optional
            Valid timesteps of each sequence (with arrays only; see :meth:`predict`).
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
            ``"loss"`` and each metric. Over an iterable of batches, each is the mean of the
            batches' values weighted by their valid positions (sequences, or valid steps of
            sequence outputs): the value over all the data, up to rounding.
        """
        loss = losses_module.get(loss if loss is not None else self.loss)
        named = metrics_module.get_all(metrics)
        batch_size = check_positive_int("batch_size", batch_size)
        if is_batches(X):
            _refuse_with_batches(y=y, lengths=lengths)
            return self._scores_of_batches(X, loss, named, padding)
        x, lengths = self._prepare(X, lengths, padding=padding)
        y = self._targets(y, x, lengths, loss, self.classes_, padding)
        batch_size = self._stream_batch_size(x.shape[0], batch_size)
        scores, self._states = self._scores(x, y, lengths, batch_size, loss, named,
                                            self._states)
        return scores

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
        y = self._targets(y, x, lengths, loss, self.classes_, padding)
        logits = self._logits_mode(loss)
        inputs, output_grads = [], []
        with training_hold(self.layers):
            out, _ = self._forward(x, lengths, training=True, logits=logits, inputs=inputs)
            value, grad = loss(out, y, self._mask(out, lengths))
            self._backward(grad.astype(out.dtype, copy=False), output_grads)
        return Trace(float(value), out, inputs, output_grads, lengths)

    def fit(self, X, y=None, loss=None, optimizer=None, epochs=1, batch_size=32, lengths=None,
            validation_data=None, validation_split=0.0, shuffle=None, clip_norm=None,
            clip_value=None, callbacks=(), verbose=1, metrics=(), seed=0, initial_epoch=None,
            truncate=None, on_nonfinite="raise", steps_per_epoch=None, classes=None,
            padding="post"):
        """Train the model with mini-batch gradient descent and BPTT.

        Parameters
        ----------
        X : array_like, list of arrays, or iterable of batches
            Inputs (or a ragged list of sequences); or an iterable of batches ``(X, y)`` or
            ``(X, y, lengths)``, each validated like arrays, read one batch at a time and
            trained on as it comes (memory is bounded by a batch, however large the data):
            a :class:`fastrnn.data.Loader`, or any object whose ``iter()`` starts over, is
            read afresh each epoch (after ``set_epoch(epoch)`` if it has one); a one-shot
            iterator (a generator) is read on across epochs, and needs ``steps_per_epoch``
            to train more than one epoch. Lists and tuples are data, never batches.
        y : array_like, optional
            Targets, one per sequence (class ids, one-hot rows, labels or values; per
            timestep for sequence outputs); None with an iterable of batches. With a
            cross-entropy loss, class labels that are not numbers (strings, any hashable) are
            mapped to the ids of the sorted unique labels, kept in ``classes_``.
        loss : str or loss object
            ``"bce"``, ``"cce"``, ``"mse"`` or an instance from :mod:`fastrnn.losses`; kept for
            later calls. Cross-entropies take logits: a last ``Dense`` with a sigmoid or
            softmax passes its logits to them.
        optimizer : str or optimizer object
            An instance from :mod:`fastrnn.optim` (or its name); kept, with its state.
        epochs : int
            The index of the last epoch to train, as in Keras: training runs the epochs
            ``initial_epoch .. epochs - 1``. As ``initial_epoch`` defaults to the epochs the
            model has already trained, ``epochs`` is the total to reach: a model trained for 5
            epochs trains 5 more with ``epochs=10``, and none (with a warning that says so)
            with ``epochs=5``.
        batch_size : int
            Rows of a mini-batch (with arrays; an iterable's batches are as it makes them).
        lengths : array_like of int, optional
            Valid timesteps of each sequence (0 for an empty one); padded steps are neither
            computed nor counted. Without them, a model that starts with an
            ``Embedding(mask_zero=True)`` computes them from the tokens.
        validation_data : tuple or iterable of batches, optional
            ``(X_val, y_val)`` or ``(X_val, y_val, lengths_val)``, padded like ``X``, or a
            re-iterable of batches like ``X``'s (a :class:`fastrnn.data.Loader`), evaluated
            after each epoch.
        validation_split : float
            Fraction of the data held out (the last rows) when ``validation_data`` is None
            (with arrays only).
        shuffle : bool, optional
            Shuffle the training rows each epoch (the order depends on ``seed`` and the epoch
            number only, so resumed training sees the same batches). With arrays only: a
            :class:`fastrnn.data.Loader` shuffles with its own seed, per epoch too. Default:
            True, and False for a stateful model (which refuses True: its batches are
            consecutive).
        clip_norm, clip_value : float, optional
            Clip the gradients by their global L2 norm, or elementwise, before each update.
        callbacks : sequence
            Objects with some of Keras's hooks (``on_epoch_end(model, epoch, logs)``,
            ``on_train_batch_end(model, batch, logs)``, ...; see :mod:`fastrnn.callbacks`): a
            learning-rate schedule goes in as ``LearningRateScheduler(schedule)``. Their
            state is saved in the model files written during and after this call, and a
            ``fit`` after :func:`fastrnn.load_model` restores it into its callbacks of the
            same kinds (``callback_states``).
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar, 2 one line per epoch.
        metrics : sequence of str
            Names from :mod:`fastrnn.metrics`, e.g. ``("accuracy",)``. With arrays they are
            computed on all the training data after each epoch; with an iterable of batches
            (which may not be read twice) they are the means over the epoch's batches as they
            were trained (Keras's way).
        seed : int
        initial_epoch : int, optional
            Epoch to start from; default: the epochs this model has already trained (so
            training resumed from a checkpoint goes on where it stopped, bit for bit).
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
        steps_per_epoch : int, optional
            Batches of an epoch, with an iterable of batches; default: all it gives. A
            one-shot iterator that runs out ends training with a warning.
        classes : sequence, optional
            The class labels, in the order of the class ids (``classes_``), for a classifier
            trained on labels: needed with an iterable of batches of labels that are not
            numbers (its labels cannot be collected beforehand); with arrays, default: the
            sorted unique labels when they are not numbers. Once set, ``classes_`` stays: the
            targets of later calls are labels.
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

        Warns
        -----
        UserWarning
            When no epoch is to be trained (``initial_epoch >= epochs``), or an iterable of
            batches runs out.

        Notes
        -----
        The layers are this thread's for the whole call: training them from another thread
        meanwhile (``fit``, ``trace``, a layer call with ``training=True``) raises a
        RuntimeError, while ``predict``, ``evaluate`` and ``generate`` from other threads run
        (on the weights of the moment).
        """
        named = metrics_module.get_all(metrics)        # refused now, not after the first epoch
        self._set_training(loss, optimizer)
        if truncate is not None:
            truncate = check_positive_int("truncate", truncate)
            self._check_carried_states("truncate", sequences=True)
        shuffle = not self.stateful if shuffle is None else check_bool("shuffle", shuffle)
        if self.stateful and shuffle:
            raise ValueError("shuffle must be False for a stateful model (batch k + 1 "
                             "continues the streams of batch k), got True")
        check_choice("padding", padding, PADDINGS)
        check_fraction("validation_split", validation_split)
        logits = self._logits_mode(self.loss)
        batches_given = is_batches(X)
        classes = self._fit_classes(classes, None if batches_given else y)

        def train_window(xw, lw, yw, update, states=None):
            out, finals = self._forward(xw, lw, training=True, logits=logits, states=states)
            if out.ndim == 3 and yw.ndim >= 2:
                yw = yw[:, :out.shape[1]]   # per-step targets of a batch trimmed to its longest
            value, grad = self.loss(out, yw, self._mask(out, lw))
            if running is not None:
                self._score(out, yw, lw, None, named, running)
            self._backward(grad.astype(out.dtype, copy=False))
            update(value, _loss_weight(out, lw))
            return value, finals

        def check_targets(x, y):
            if truncate is not None and (y.ndim < 2 or y.shape[1] != x.shape[1]):
                raise ValueError(f"truncate needs a target for every timestep, shape "
                                 f"({x.shape[0]}, {x.shape[1]}, ...), got y of shape {y.shape}")

        def train_rows(x, lengths, y, update):
            """Train on one validated batch (a stateful model from the states the previous
            batch left); returns its loss."""
            xb, lb = _trim(x, lengths)
            states = self._states if self.stateful else None
            if truncate is None:
                value, finals = train_window(xb, lb, y, update, states)
            else:
                value, finals = train_truncated(
                    xb, lb, y, truncate,
                    lambda xw, lw, yw, states: train_window(xw, lw, yw, update, states), states)
            if self.stateful:
                self._states = finals
            return value

        if batches_given:
            _refuse_with_batches(y=y, lengths=lengths)
            if validation_split:
                raise ValueError("validation_split holds out rows of arrays; with an iterable "
                                 "of batches pass validation_data")
            source = BatchSource(X, "X", steps_per_epoch)
            source.check_epochs(check_positive_int("epochs", epochs) -
                                self._first_epoch(initial_epoch))
            steps, batches = source.steps, source.epoch
            running = _Means() if named else None
            validate = None

            def train_batch(batch, update):
                x, yb, lb = self._batch(batch, self.loss, classes, padding=padding)
                check_targets(x, yb)
                return train_rows(x, lb, yb, update), x.shape[0]

            def train_scores():
                scores = running.result()
                running.clear()
                return scores
        else:
            if steps_per_epoch is not None:
                raise ValueError("steps_per_epoch is for an iterable of batches; with arrays "
                                 "an epoch is all their rows (batch_size sets the batches)")
            x, lengths = self._prepare(X, lengths, padding=padding)
            y = self._targets(y, x, lengths, self.loss, classes, padding)
            check_targets(x, y)
            validate = None
            if validation_data is None and validation_split > 0:
                n_val = int(round(x.shape[0] * validation_split))
                if not 0 < n_val < x.shape[0]:
                    raise ValueError(f"validation_split={validation_split} leaves no rows for "
                                     f"training or for validation ({x.shape[0]} rows)")
                cut = x.shape[0] - n_val
                held = (x[cut:], y[cut:], None if lengths is None else lengths[cut:])
                x, y = x[:cut], y[:cut]
                lengths = None if lengths is None else lengths[:cut]

                held_batch = self._stream_batch_size(
                    len(held[0]), batch_size if self.stateful else 256, "the validation data",
                    carried=False)

                def validate():             # the rows held out, validated with the others
                    return self._scores(*held[:2], held[2], held_batch, self.loss, named)[0]
            # (a stateful model runs and evaluates in batches of its streams)
            batch_size = self._stream_batch_size(x.shape[0], batch_size, carried=False)
            eval_batch = batch_size if self.stateful else 256
            steps, batches = row_batches(x.shape[0], batch_size, shuffle, seed)
            running = None

            def train_batch(rows, update):
                return train_rows(x[rows], None if lengths is None else lengths[rows],
                                  y[rows], update), len(rows)

            def train_scores():     # (from the initial states: a stateful model's stay)
                return self._scores(x, y, lengths, eval_batch, self.loss, named)[0]

        if validation_data is not None:
            validate = self._validation(validation_data, classes, named, padding, batch_size)
        if self.stateful:           # every epoch starts from the initial states
            epoch_batches = batches

            def batches(epoch):
                self._states = None
                return epoch_batches(epoch)

        def epoch_logs():
            logs = {}
            if named:
                logs.update({k: v for k, v in train_scores().items() if k != "loss"})
            if validate is not None:
                logs.update({"val_" + k: v for k, v in validate().items()})
            return logs

        self.classes_ = classes
        with training_hold(self.layers):
            return self._fit_loop(batches, train_batch, epoch_logs, steps=steps, epochs=epochs,
                                  verbose=verbose, callbacks=callbacks, clip_norm=clip_norm,
                                  clip_value=clip_value, initial_epoch=initial_epoch,
                                  on_nonfinite=on_nonfinite)

    def _validation(self, validation_data, classes, named, padding, batch_size):
        """``validation_data`` checked now: a callable giving its scores.

        A tuple of arrays is validated once (targets as labels of ``classes``), an iterable of
        batches must be re-iterable (each epoch reads it again). A stateful model evaluates
        arrays in batches of ``batch_size`` streams from the initial states (its own states
        stay); a stateless one in batches of 256.
        """
        if is_batches(validation_data):
            if BatchSource(validation_data, "validation_data").one_shot:
                raise ValueError("validation_data is a one-shot iterator (a generator), which "
                                 "the first epoch would use up: pass arrays or a re-iterable "
                                 "source such as a fastrnn.data.Loader")
            def scores():
                if not self.stateful:
                    return self._scores_of_batches(validation_data, self.loss, named, padding)
                kept, self._states = self._states, None
                try:
                    return self._scores_of_batches(validation_data, self.loss, named, padding)
                finally:
                    self._states = kept
            return scores
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise TypeError(f"validation_data must be (X_val, y_val), (X_val, y_val, "
                            f"lengths_val) or an iterable of batches, got "
                            f"{_describe(validation_data)}")
        x, lengths = self._prepare(validation_data[0], (*validation_data, None)[2], "X_val",
                                   padding)
        y = self._targets(validation_data[1], x, lengths, self.loss, classes, padding)
        batch = self._stream_batch_size(x.shape[0], batch_size if self.stateful else 256,
                                        "the validation data", carried=False)
        return lambda: self._scores(x, y, lengths, batch, self.loss, named)[0]

    def _fit_classes(self, classes, y):
        """The class labels ``fit`` trains on: ``classes`` if given, the model's
        ``classes_``, or, for array targets ``y`` that are not numbers with a cross-entropy
        loss, their sorted unique labels; None for class ids. Checked against the model's
        outputs."""
        if classes is not None:
            classes = class_array(as_list("classes", classes, "class labels"))
            if len(set(classes.tolist())) != len(classes):
                raise ValueError(f"classes must be distinct labels, got {classes.tolist()}")
            if self.classes_ is not None and classes.tolist() != self.classes_.tolist():
                raise ValueError(f"classes {classes.tolist()} differ from the model's "
                                 f"classes_ {self.classes_.tolist()}, which its outputs learnt")
        elif self.classes_ is not None:
            return self.classes_
        elif y is not None and _is_classifier(self.loss):
            labels = np.asarray(y)
            if labels.dtype.kind in "biuf":
                return None
            classes = class_array(_sorted_labels(labels.ravel().tolist()))
        else:
            return None
        if not _is_classifier(self.loss):
            raise ValueError(f"classes is for a classifier (loss 'bce' or 'cce'), the loss is "
                             f"{self.loss!r}")
        units = self.layers[-1].out_features
        binary = isinstance(self.loss, losses_module.BinaryCrossentropy)
        if (binary and (len(classes) != 2 or units != 1)) or (not binary and
                                                              len(classes) != units):
            raise ValueError(
                f"the model's last Dense has {units} output(s), and the labels have "
                f"{len(classes)} classes {classes.tolist()[:10]}: a {type(self.loss).__name__} "
                f"needs {'2 classes and 1 output' if binary else 'one output per class'} "
                f"(pass classes=[...] to name classes that y lacks)")
        return classes

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



class _Means:
    """Weighted means of values over batches (each weighted by its valid positions), or sums
    of those added with ``summed=True``: what a loss or a metric over all the data is, from
    its values on the batches."""

    def __init__(self):
        self.values = {}

    def add(self, name, value, weight, summed=False):
        """Record ``value`` of ``name`` on a batch of ``weight`` valid positions."""
        self.values.setdefault(name, ([], [], summed))
        self.values[name][0].append(float(value))
        self.values[name][1].append(weight)

    def result(self):
        """The mean (or sum) of each name: ``dict`` of str to float."""
        out = {}
        for name, (values, weights, summed) in self.values.items():
            if summed:
                out[name] = math.fsum(values)
            elif len(values) == 1:
                out[name] = values[0]
            else:
                out[name] = float(np.average(values, weights=weights)) if sum(weights) else 0.0
        return out

    def clear(self):
        """Forget every value."""
        self.values.clear()


def _loss_weight(out, lengths):
    """The positions a batch's loss averages over: valid steps of a sequence output, rows
    otherwise (the weight of its mean in a mean over several batches, as data-parallel
    training takes)."""
    if out.ndim == 3 and lengths is not None:
        return int(lengths.sum())
    return int(np.prod(out.shape[:2 if out.ndim == 3 else 1]))


def _is_classifier(loss):
    return isinstance(loss, (losses_module.BinaryCrossentropy,
                             losses_module.CategoricalCrossentropy))


def _sorted_labels(labels):
    """The distinct ``labels`` in sorted order; TypeError if they cannot be ordered."""
    try:
        return sorted(set(labels))
    except TypeError as exc:
        if "unhashable" in str(exc):
            raise TypeError(f"class labels must be hashable: {exc}") from None
        raise TypeError(f"class labels must be of one kind that can be sorted (strings, "
                        f"numbers), got {sorted({type(v).__name__ for v in labels})}; or pass "
                        f"classes=[...] in the order you want") from None


def class_array(labels):
    """``labels`` (a list) as the array ``classes_`` holds: strings or numbers keep a NumPy
    dtype (``'<U5'``, ``int64``), other hashables are kept in an object array."""
    if labels and (all(isinstance(v, str) for v in labels) or all(
            isinstance(v, numbers.Real) for v in labels)):
        return np.array(labels)
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


def _label_ids(y, loss, classes):
    """Class ids (int64, ``y``'s shape) of the labels ``y`` among ``classes``."""
    if not _is_classifier(loss):
        raise TypeError(f"y must be numbers (class ids, labels or values), got dtype {y.dtype}: "
                        f"labels that are not numbers need a cross-entropy loss ('bce', 'cce'), "
                        f"which maps them to class ids")
    if classes is None:
        raise ValueError(f"y holds class labels that are not numbers (dtype {y.dtype}), and "
                         f"the model has no classes_ to map them to: with an iterable of "
                         f"batches pass fit(..., classes=[...]); fit on arrays finds them")
    index = {label: i for i, label in enumerate(classes.tolist())}
    flat = y.ravel().tolist()
    try:
        ids = np.fromiter((index[v] for v in flat), dtype=np.int64, count=len(flat))
    except KeyError as exc:
        raise ValueError(f"y holds the label {exc.args[0]!r}, which is not one of the model's "
                         f"classes_ {classes.tolist()[:20]}") from None
    except TypeError as exc:
        raise TypeError(f"y holds a label that is not hashable: {exc}") from None
    return ids.reshape(y.shape)


def _padded_like(out, lengths, padding):
    """Sequence outputs ``out`` (post-padded) padded as the caller's input was."""
    if padding == "pre" and lengths is not None and out.ndim == 3:
        return to_pre_padding(out, lengths)
    return out


def _refuse_with_batches(**given):
    """ValueError for arguments given beside an iterable of batches, which holds them."""
    for name, value in given.items():
        if value is not None:
            raise ValueError(f"X is an iterable of batches, which carry their own {name}: "
                             f"pass {name}=None")


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _concat(parts, timesteps=None):
    """Outputs of consecutive batches as one array; sequence outputs (each batch's trimmed
    to its longest sequence) padded with zeros to ``timesteps`` (default: the longest)."""
    if parts[0].ndim < 3:
        return np.concatenate(parts)
    timesteps = max(p.shape[1] for p in parts) if timesteps is None else timesteps
    out = np.zeros((sum(len(p) for p in parts), timesteps, *parts[0].shape[2:]), parts[0].dtype)
    start = 0
    for part in parts:
        out[start:start + len(part), :part.shape[1]] = part
        start += len(part)
    return out


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

"""Sequence to sequence: :class:`EncoderDecoder`, an encoder whose final state starts a decoder,
with or without attention over the encoder's outputs.

The model uses its layers through their public calls only: the recurrent and dense layers
through the layer protocol (:class:`fastrnn.layers.Layer`), the attention through
:class:`fastrnn.layers.CrossAttention`'s ``attend`` / ``attend_backward``. The encoder's final
state comes out of its ``model_forward`` and goes into the decoder's, and the gradient with
respect to the decoder's initial state flows back into the encoder's ``model_backward`` as
``dstate`` (with attention, together with the gradient with respect to the encoder's outputs).
"""
import numpy as np

from .. import losses as losses_module
from .. import metrics as metrics_module
from .._validation import (as_lengths, as_rng, check_bool, check_choice, check_dtype,
                           check_int, check_positive_int, check_real)
from ..layers import GRU, LSTM, RNN, CrossAttention, Dense, Embedding
from ..layers.attention import valid_steps
from ..layers.base import training_hold
from .training import _Model, _take_rows, _trim, row_batches

#: the recurrent cells of an :class:`EncoderDecoder`
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
#: ``attention`` of an :class:`EncoderDecoder`: its name -> the scores it allows (first: default)
ATTENTIONS = {None: (None,), "bahdanau": ("additive",), "luong": ("general", "dot")}


class EncoderDecoder(_Model):
    """Many-to-many of unequal lengths: an encoder reads the source sequence, its final state
    starts a decoder that writes the target sequence (sequence-to-sequence, e.g. translation),
    optionally attending over every encoder output.

    Trained with teacher forcing (the decoder reads the true previous target token); predicts
    with greedy decoding or beam search. Token 0 is padding in both vocabularies.

    Without attention the decoder's output at each step goes through ``output`` (a Dense over
    the target vocabulary). With attention (Luong et al. 2015's global attention), the decoder's
    output ``h_t`` at each step is the query of a :class:`~fastrnn.layers.CrossAttention` over
    the encoder's outputs ``m_s`` (padded source steps get weight 0):
    ``a_t = softmax(score(h_t, m_s))``, ``c_t = sum_s a_ts m_s``, and the logits are
    ``output(tanh(W_c [c_t; h_t]))`` (``combine`` holds ``W_c``, no bias).

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
    attention : {None, "bahdanau", "luong"}
        None: the decoder sees the source only through the encoder's final state.
        ``"bahdanau"``: the additive score ``v^T tanh(W_q h_t + W_k m_s + b)`` of Bahdanau et
        al. 2015; ``"luong"``: Luong et al. 2015's multiplicative scores. In both the query is
        the decoder's current output ``h_t`` and the context does not feed the decoder's next
        input (Luong's global attention without input feeding): the decoder then runs as one
        sequence call in training and the attention as a few batched matrix products over
        every step at once. (Bahdanau et al. query the previous state ``h_{t-1}`` and feed
        ``c_t`` into the recurrence, which makes training step by step.)
    attention_score : {"general", "dot"}, optional
        With ``attention="luong"``: ``h_t^T W m_s`` (``"general"``, the default) or
        ``h_t^T m_s`` (``"dot"``, no weights).

    Attributes
    ----------
    source_embedding, encoder, target_embedding, decoder, output : layers
    attention : CrossAttention or None
    combine : Dense or None
        ``tanh(W_c [c_t; h_t])`` (with attention only).

    Examples
    --------
    >>> import fastrnn
    >>> model = fastrnn.EncoderDecoder(12, 12, embedding_dim=8, hidden_size=16,
    ...                                attention="luong", seed=0)
    >>> model.predict([[3, 4, 5]], max_length=4).shape
    (1, 4)
    """

    def __init__(self, source_vocab, target_vocab, embedding_dim, hidden_size, cell="gru",
                 num_layers=1, bos_id=1, eos_id=2, dtype="float32", seed=None,
                 backend=None, attention=None, attention_score=None):
        super().__init__()
        check_choice("cell", cell, tuple(CELLS))
        sizes = {name: check_positive_int(name, value) for name, value in (
            ("source_vocab", source_vocab), ("target_vocab", target_vocab),
            ("embedding_dim", embedding_dim), ("hidden_size", hidden_size),
            ("num_layers", num_layers))}
        for name, token in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 < check_int(name, token) < target_vocab:
                raise ValueError(f"{name} must be in 1..{target_vocab - 1}, got {token}")
        check_choice("attention", attention, tuple(ATTENTIONS))
        scores = ATTENTIONS[attention]
        if attention_score is not None and attention_score not in scores:
            raise ValueError(f"attention_score must be one of {', '.join(map(repr, scores))} "
                             f"with attention={attention!r}, got {attention_score!r}")
        score = scores[0] if attention_score is None else attention_score
        dtype = check_dtype(dtype).name
        self.config = dict(sizes, cell=cell, bos_id=int(bos_id), eos_id=int(eos_id),
                           dtype=dtype, seed=seed, backend=backend, attention=attention,
                           attention_score=None if attention is None else score)
        rng = as_rng("seed", seed)
        seeds = rng.integers(0, 2**31, size=5)
        rec = dict(num_layers=num_layers, dtype=dtype, backend=backend)
        self.source_embedding = Embedding(source_vocab, embedding_dim, padding_idx=0, dtype=dtype,
                                          seed=seeds[0])
        self.encoder = CELLS[cell](embedding_dim, hidden_size, seed=seeds[1], **rec)
        self.target_embedding = Embedding(target_vocab, embedding_dim, padding_idx=0, dtype=dtype,
                                          seed=seeds[2])
        self.decoder = CELLS[cell](embedding_dim, hidden_size, seed=seeds[3], **rec)
        self.output = Dense(hidden_size, target_vocab, dtype=dtype, seed=seeds[4])
        self.attention = self.combine = None
        if attention is not None:
            more = rng.integers(0, 2**31, size=2)    # after the five: those stay as they were
            self.attention = CrossAttention(hidden_size, score, dtype=dtype, seed=more[0],
                                            backend=backend)
            self.combine = Dense(2 * hidden_size, hidden_size, activation="tanh", bias=False,
                                 dtype=dtype, seed=more[1])
        self.bos_id, self.eos_id = int(bos_id), int(eos_id)

    def get_config(self):
        """The constructor's arguments but ``seed``, as JSON: ``EncoderDecoder(**config)``
        builds the same architecture (what a model file stores besides the weights).

        Returns
        -------
        dict
        """
        return {k: v for k, v in self.config.items() if k != "seed"}

    def _named_layers(self):
        layers = [("source_embedding", self.source_embedding), ("encoder", self.encoder),
                  ("target_embedding", self.target_embedding), ("decoder", self.decoder)]
        if self.attention is not None:
            layers += [("attention", self.attention), ("combine", self.combine)]
        return layers + [("output", self.output)]

    # ------------------------------------------------------------------ inputs

    def _tokens(self, name, tokens, lengths, embedding):
        if isinstance(tokens, (list, tuple)) and all(np.ndim(t) == 1 for t in tokens) and \
                len({len(t) for t in tokens}) > 1:
            if lengths is not None:
                raise ValueError(f"{name} is ragged, so its lengths must not be given too")
            from ..text.sequences import pad_sequences
            tokens, lengths = pad_sequences(tokens, dtype="int64")
        tokens = embedding.check_tokens(tokens, name)
        if tokens.ndim != 2:
            raise ValueError(f"{name} must have shape (batch, timesteps), got {tokens.shape}")
        return tokens, as_lengths(lengths, *tokens.shape)

    def _pairs(self, source, target, source_lengths, target_lengths, what=""):
        """Validated ``(src, src_lengths, tgt, tgt_lengths)`` of as many sequences."""
        src, src_len = self._tokens(what + "source", source, source_lengths,
                                    self.source_embedding)
        tgt, tgt_len = self._tokens(what + "target", target, target_lengths,
                                    self.target_embedding)
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"{what}source and {what}target must have as many sequences, got "
                             f"{src.shape[0]} and {tgt.shape[0]}")
        return src, src_len, tgt, tgt_len

    def _decoder_input(self, tgt):
        """Teacher forcing: the decoder reads <bos> followed by the target shifted right."""
        return np.concatenate([np.full((tgt.shape[0], 1), self.bos_id), tgt[:, :-1]], axis=1)

    @staticmethod
    def _target_mask(shape, lengths):
        return None if lengths is None else np.arange(shape[1]) < lengths[:, None]

    # ------------------------------------------------------------------ forward / backward

    def _encode(self, src, src_lengths, training):
        """``(outputs, final state)`` of the encoder for validated source tokens."""
        e, _ = self.source_embedding.model_forward(src, training=training)
        return self.encoder.model_forward(e, src_lengths, training=training)

    def _attend(self, y, memory, training):
        """The attentional output ``tanh(W_c [c; y])`` of decoder outputs ``y`` over
        ``memory = (encoder outputs, keys or None, valid steps or None)``, and the weights."""
        outputs, keys, valid = memory
        context, weights = self.attention.attend(y, outputs, valid, keys=keys,
                                                 training=training)
        out, _ = self.combine.model_forward(np.concatenate([context, y], axis=-1),
                                            training=training)
        return out, weights

    def _logits(self, src, src_len, dec_in, tgt_len, training):
        """Teacher-forced logits ``(batch, target steps, target_vocab)`` and the attention
        weights (None without attention) of validated tokens."""
        outputs, state = self._encode(src, src_len, training)
        d, _ = self.target_embedding.model_forward(dec_in, training=training)
        y, _ = self.decoder.model_forward(d, tgt_len, state=state, training=training)
        weights = None
        if self.attention is not None:
            y, weights = self._attend(y, (outputs, None, valid_steps(src_len, src.shape[1])),
                                      training)
        logits, _ = self.output.model_forward(y, training=training, logits=True)
        return logits, weights

    def _backward(self, dlogits):
        """Backward pass of the last ``_logits(..., training=True)``; fills the grads."""
        dy, _ = self.output.model_backward(dlogits)
        doutputs = None
        if self.attention is not None:
            dcat, _ = self.combine.model_backward(dy)
            hidden = self.decoder.hidden_size
            dquery, doutputs = self.attention.attend_backward(
                np.ascontiguousarray(dcat[..., :hidden]))
            dy = dcat[..., hidden:] + dquery
        dd, dstate = self.decoder.model_backward(dy)
        self.target_embedding.model_backward(dd)
        de, _ = self.encoder.model_backward(doutputs, dstate=dstate)
        self.source_embedding.model_backward(de)

    def _train_step(self, src, src_len, tgt, tgt_len):
        """Forward and backward on one validated batch (its padding columns trimmed); fills
        the grads and returns the loss."""
        dec_in, tgt_len = _trim(self._decoder_input(tgt), tgt_len)
        src, src_len = _trim(src, src_len)
        logits, _ = self._logits(src, src_len, dec_in, tgt_len, True)
        value, grad = self.loss(logits, tgt[:, :dec_in.shape[1]],
                                self._target_mask(dec_in.shape, tgt_len))
        self._backward(grad.astype(logits.dtype, copy=False))
        return value

    # ------------------------------------------------------------------ training

    def fit(self, source, target, source_lengths=None, target_lengths=None, optimizer=None,
            epochs=1, batch_size=32, shuffle=True, clip_norm=None, clip_value=None,
            callbacks=(), verbose=1, seed=0, initial_epoch=None, on_nonfinite="raise",
            validation_data=None, metrics=()):
        """Train with teacher forcing on pairs of token sequences.

        Parameters
        ----------
        source, target : array_like of int, or ragged lists
            ``(n, source_len)`` and ``(n, target_len)`` token ids; targets end with ``eos_id``.
        source_lengths, target_lengths : array_like of int, optional
        optimizer, epochs, batch_size, shuffle, clip_norm, clip_value, callbacks, verbose, seed,
        initial_epoch, on_nonfinite
            As for :meth:`Sequential.fit`. The loss is the categorical cross-entropy of every
            valid target token.
        validation_data : tuple, optional
            ``(source, target)`` or ``(source, target, source_lengths, target_lengths)``:
            after each epoch its :meth:`evaluate` values are logged as ``"val_loss"`` and
            ``"val_<metric>"`` (what :class:`~fastrnn.callbacks.EarlyStopping` and
            :class:`~fastrnn.callbacks.ModelCheckpoint` watch by default).
        metrics : sequence of str
            Names from :mod:`fastrnn.metrics`, computed on the teacher-forced predictions
            of the valid target tokens (``"accuracy"``: the fraction of tokens right).

        Returns
        -------
        History
        """
        metrics_module.get_all(metrics)        # refused now, not after the first epoch
        self._set_training(losses_module.CategoricalCrossentropy(), optimizer)
        src, src_len, tgt, tgt_len = self._pairs(source, target, source_lengths,
                                                 target_lengths)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or \
                    len(validation_data) not in (2, 4):
                raise TypeError("validation_data must be (source, target) or (source, target, "
                                "source_lengths, target_lengths)")
            val = self._pairs(*validation_data, *(None, None)[len(validation_data) - 2:],
                              what="validation ")

        steps, batches = row_batches(src.shape[0], batch_size, shuffle, seed)

        def train_batch(rows, update):
            value = self._train_step(src[rows], None if src_len is None else src_len[rows],
                                     tgt[rows], None if tgt_len is None else tgt_len[rows])
            update(value)
            return value, len(rows)

        def epoch_logs():
            logs = {}
            if metrics:
                train = self._evaluate(src, src_len, tgt, tgt_len, 256, metrics)
                logs.update({k: v for k, v in train.items() if k != "loss"})
            if validation_data is not None:
                logs.update({"val_" + k: v
                             for k, v in self._evaluate(*val, 256, metrics).items()})
            return logs

        with training_hold(layer for _, layer in self._named_layers()):
            return self._fit_loop(batches, train_batch, epoch_logs, steps=steps, epochs=epochs,
                                  verbose=verbose, callbacks=callbacks, clip_norm=clip_norm,
                                  clip_value=clip_value, initial_epoch=initial_epoch,
                                  on_nonfinite=on_nonfinite)

    # ------------------------------------------------------------------ evaluation

    def _batched_logits(self, src, src_len, tgt, tgt_len, batch_size):
        """Teacher-forced logits of every pair, computed batch by batch (inference)."""
        dec_in = self._decoder_input(tgt)
        parts = []
        for start in range(0, src.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            sb, lb = _trim(src[sl], None if src_len is None else src_len[sl])
            parts.append(self._logits(sb, lb, dec_in[sl], None if tgt_len is None
                                      else as_lengths(tgt_len[sl], *dec_in[sl].shape),
                                      False)[0])
        return np.concatenate(parts)

    def _evaluate(self, src, src_len, tgt, tgt_len, batch_size, metrics):
        logits = self._batched_logits(src, src_len, tgt, tgt_len, batch_size)
        mask = self._target_mask(tgt.shape, tgt_len)
        value, _ = losses_module.CategoricalCrossentropy()(logits, tgt, mask)
        logs = {"loss": float(value)}
        for name, metric in metrics_module.get_all(metrics):
            logs[name] = float(metric(logits, tgt, mask))
        return logs

    def evaluate(self, source, target, source_lengths=None, target_lengths=None,
                 batch_size=256, metrics=()):
        """Loss and metrics on pairs of token sequences, with teacher forcing.

        Parameters
        ----------
        source, target : array_like of int, or ragged lists
            As for :meth:`fit`.
        source_lengths, target_lengths : array_like of int, optional
        batch_size : int
        metrics : sequence of str
            Names from :mod:`fastrnn.metrics` (``"accuracy"``: the fraction of valid target
            tokens predicted right when the decoder reads the true previous tokens).

        Returns
        -------
        dict of str to float
            ``"loss"`` (the mean cross-entropy of the valid target tokens) and each metric.

        Notes
        -----
        To measure what :meth:`predict` decodes (no teacher forcing), compare its output with
        the targets.
        """
        pairs = self._pairs(source, target, source_lengths, target_lengths)
        return self._evaluate(*pairs, check_positive_int("batch_size", batch_size), metrics)

    def log_likelihood(self, source, target, source_lengths=None, target_lengths=None,
                       batch_size=256):
        """The log-probability the model gives each target sequence: the sum over its valid
        tokens of ``log p(token | source, the tokens before it)``.

        Parameters
        ----------
        source, target : array_like of int, or ragged lists
            As for :meth:`fit` (targets end with ``eos_id``).
        source_lengths, target_lengths : array_like of int, optional
        batch_size : int

        Returns
        -------
        ndarray of float64, shape (n,)
        """
        src, src_len, tgt, tgt_len = self._pairs(source, target, source_lengths,
                                                 target_lengths)
        logits = self._batched_logits(src, src_len, tgt, tgt_len,
                                      check_positive_int("batch_size", batch_size))
        log_p = losses_module.log_softmax(logits.astype(np.float64))
        picked = np.take_along_axis(log_p, tgt[..., None], axis=-1)[..., 0]
        mask = self._target_mask(tgt.shape, tgt_len)
        return (picked if mask is None else np.where(mask, picked, 0.0)).sum(axis=1)

    # ------------------------------------------------------------------ decoding

    def _step(self, token, state, memory):
        """One decoding step: ``(logits, state, attention weights or None)``."""
        e_t, _ = self.target_embedding.step(token)
        y_t, state = self.decoder.step(e_t, state)
        weights = None
        if self.attention is not None:
            y_t, weights = self._attend(y_t[:, None], memory, False)
            y_t, weights = y_t[:, 0], weights[:, 0]
        return self.output.linear(y_t), state, weights

    def _memory(self, outputs, src_len, timesteps):
        """What the decoding steps attend over (None without attention)."""
        if self.attention is None:
            return None
        return outputs, self.attention.keys(outputs), valid_steps(src_len, timesteps)

    def predict(self, source, source_lengths=None, max_length=50, beam_width=None,
                length_penalty=0.0, return_attention=False, batch_size=256):
        """Decode the source sequences: greedily, or by beam search.

        Parameters
        ----------
        source : array_like of int, or a ragged list
            ``(n, source_len)`` source token ids.
        source_lengths : array_like of int, optional
        max_length : int
            Tokens to decode at most.
        beam_width : int, optional
            None: greedy decoding (the most likely token at each step). An int ``k``: beam
            search, which keeps the ``k`` best partial sequences at each step (``k=1`` gives
            the greedy result, through the beam search).
        length_penalty : float
            Beam search only: the hypotheses are ranked by ``log p(Y) / lp(Y)`` with Wu et al.
            2016's ``lp(Y) = ((5 + |Y|) / 6) ** length_penalty``, ``|Y|`` counting the tokens
            up to and including ``eos_id``. 0 ranks by ``log p(Y)`` itself (which favours short
            sequences); larger values favour longer ones.
        return_attention : bool
            Also return the attention weights (models with attention only).
        batch_size : int
            Sequences decoded at once (a beam search runs ``batch_size * beam_width`` rows).

        Returns
        -------
        tokens : ndarray of int64, shape (n, max_length)
            Decoded tokens; after a sequence's ``eos_id`` (included) the rest is 0.
        weights : ndarray, shape (n, max_length, source_len)
            Only with ``return_attention``: ``weights[i, t]`` is how the step that wrote
            ``tokens[i, t]`` spread its attention over the source (0 at padded source steps,
            and at the steps after ``eos_id``). :func:`fastrnn.plot.attention_heatmap` draws it.
        """
        src, src_len = self._tokens("source", source, source_lengths, self.source_embedding)
        max_length = check_positive_int("max_length", max_length)
        if beam_width is not None:
            beam_width = check_positive_int("beam_width", beam_width)
        length_penalty = check_real("length_penalty", length_penalty)
        if check_bool("return_attention", return_attention) and self.attention is None:
            raise ValueError("return_attention=True needs a model with attention (this one "
                             "was built with attention=None)")
        batch_size = check_positive_int("batch_size", batch_size)
        tokens = np.zeros((src.shape[0], max_length), np.int64)
        weights = np.zeros((src.shape[0], max_length, src.shape[1]), self.output.dtype) \
            if return_attention else None
        for start in range(0, src.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            sb, lb = _trim(src[rows], None if src_len is None else src_len[rows])
            outputs, state = self._encode(sb, lb, False)
            memory = self._memory(outputs, lb, sb.shape[1])
            if beam_width is None:
                tokens[rows], w = self._greedy(state, memory, sb.shape, max_length,
                                               return_attention)
            else:
                tokens[rows], w = self._beam_search(state, memory, sb.shape, max_length,
                                                    beam_width, length_penalty,
                                                    return_attention)
            if return_attention:
                weights[rows, :, :sb.shape[1]] = w
        return (tokens, weights) if return_attention else tokens

    def _greedy(self, state, memory, shape, max_length, keep_weights):
        n = shape[0]
        token = np.full(n, self.bos_id, np.int64)
        out = np.zeros((n, max_length), np.int64)
        attention = np.zeros((n, max_length, shape[1]), self.output.dtype) \
            if keep_weights else None
        done = np.zeros(n, bool)
        for t in range(max_length):
            logits, state, weights = self._step(token, state, memory)
            token = logits.argmax(axis=1)
            out[:, t] = np.where(done, 0, token)
            if keep_weights:
                attention[~done, t] = weights[~done]
            done |= token == self.eos_id
            if done.all():
                break
        return out, attention

    def _beam_search(self, state, memory, shape, max_length, k, alpha, keep_weights):
        """Beam search over ``n * k`` rows at once (row ``i * k + j`` is beam ``j`` of source
        ``i``); finished beams stay in the beam, extended by padding at no cost."""
        n, vocab = shape[0], self.output.out_features
        rows = np.repeat(np.arange(n), k)
        state = _take_rows(state, rows)
        if memory is not None:
            memory = tuple(None if a is None else a[rows] for a in memory)
        score = np.full((n, k), -np.inf)
        score[:, 0] = 0.0                  # one live beam to start from
        length = np.zeros((n, k), np.int64)
        finished = np.zeros((n, k), bool)
        out = np.zeros((n, k, max_length), np.int64)
        attention = np.zeros((n, k, max_length, shape[1]), self.output.dtype) \
            if keep_weights else None
        token = np.full(n * k, self.bos_id, np.int64)
        penalty = lambda steps: ((5.0 + steps) / 6.0) ** alpha    # noqa: E731  (Wu et al.)
        for t in range(max_length):
            logits, state, weights = self._step(token, state, memory)
            log_p = losses_module.log_softmax(logits.astype(np.float64)).reshape(n, k, vocab)
            log_p[finished] = -np.inf                        # a finished beam only pads
            log_p[finished, 0] = 0.0
            candidate = score[:, :, None] + log_p             # (n, k, vocab)
            steps = np.where(finished, length, t + 1)[:, :, None]
            rank = (candidate / penalty(steps)).reshape(n, k * vocab)
            best = np.argsort(-rank, axis=1, kind="stable")[:, :k]
            beam, token = best // vocab, best % vocab
            score = np.take_along_axis(candidate.reshape(n, k * vocab), best, axis=1)
            was_finished = np.take_along_axis(finished, beam, axis=1)
            length = np.where(was_finished, np.take_along_axis(length, beam, axis=1), t + 1)
            finished = was_finished | (token == self.eos_id)
            out = np.take_along_axis(out, beam[:, :, None], axis=1)
            out[:, :, t] = np.where(was_finished, 0, token)
            picked = (np.arange(n)[:, None] * k + beam).reshape(-1)
            if keep_weights:
                attention = np.take_along_axis(attention, beam[:, :, None, None], axis=1)
                attention[:, :, t] = np.where(was_finished[..., None], 0,
                                              weights[picked].reshape(n, k, -1))
            state = _take_rows(state, picked)
            token = token.reshape(-1)
            if finished.all():
                break
        top = np.argmax(score / penalty(length), axis=1)
        tokens = out[np.arange(n), top]
        return tokens, (None if attention is None else attention[np.arange(n), top])

    # ------------------------------------------------------------------ description

    def summary(self, print_fn=print):
        """Print and return a table of the layers: output shape, weights and biases.

        Parameters
        ----------
        print_fn : callable or None
            Where the table goes; None prints nothing.

        Returns
        -------
        str
        """
        shapes = {"source_embedding": (None, None), "target_embedding": (None, None)}
        rows = []
        previous = None
        for name, layer in self._named_layers():
            shape = layer.output_shape(shapes.get(name, previous))
            rows.append((f"{name} {type(layer).__name__}", shape, layer))
            previous = shape
        return self._summary_table(rows, print_fn)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"EncoderDecoder({args})"

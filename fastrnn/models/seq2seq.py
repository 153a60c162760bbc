"""Sequence to sequence: :class:`EncoderDecoder`, an encoder whose final state starts a decoder.

The model uses its layers through the layer protocol only (:class:`fastrnn.layers.Layer`): the
encoder's final state comes out of its ``model_forward`` and goes into the decoder's, and the
gradient with respect to the decoder's initial state flows back into the encoder's
``model_backward`` as ``dstate``.
"""
import numpy as np

from .. import losses as losses_module
from .._validation import as_lengths, as_rng, check_positive_int
from ..layers import Dense, Embedding, GRU, LSTM, RNN
from ..layers.base import training_hold
from .training import _Model, _trim


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
        rng = as_rng("seed", seed)
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
            from ..text.sequences import pad_sequences
            tokens, lengths = pad_sequences(tokens, dtype="int64")
        tokens = embedding.check_tokens(tokens, name)
        if tokens.ndim != 2:
            raise ValueError(f"{name} must have shape (batch, timesteps), got {tokens.shape}")
        return tokens, as_lengths(lengths, *tokens.shape)

    def _encode(self, src, src_lengths, training):
        """The encoder's final state for validated source tokens."""
        e, _ = self.source_embedding.model_forward(src, training=training)
        _, state = self.encoder.model_forward(e, src_lengths, training=training)
        return state

    def fit(self, source, target, source_lengths=None, target_lengths=None, optimizer=None,
            epochs=1, batch_size=32, shuffle=True, clip_norm=None, clip_value=None,
            callbacks=(), verbose=1, seed=0, initial_epoch=None, on_nonfinite="raise"):
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
            state = self._encode(sb, sl, True)
            d, _ = self.target_embedding.model_forward(db, training=True)
            y, _ = self.decoder.model_forward(d, tl, state=state, training=True)
            logits, _ = self.output.model_forward(y, training=True, logits=True)
            value, grad = self.loss(logits, yb, self._target_mask(db.shape, tl))
            dy, _ = self.output.model_backward(grad.astype(logits.dtype, copy=False))
            dd, dstate = self.decoder.model_backward(dy)
            self.target_embedding.model_backward(dd)
            de, _ = self.encoder.model_backward(None, dstate=dstate)
            self.source_embedding.model_backward(de)
            update(value)
            return value

        with training_hold(layer for _, layer in self._named_layers()):
            return self._fit_loop(src.shape[0], train_batch, dict, epochs=epochs,
                                  batch_size=batch_size, shuffle=shuffle, seed=seed,
                                  verbose=verbose, callbacks=callbacks, clip_norm=clip_norm,
                                  clip_value=clip_value, initial_epoch=initial_epoch,
                                  on_nonfinite=on_nonfinite)

    @staticmethod
    def _target_mask(shape, lengths):
        return None if lengths is None else np.arange(shape[1]) < lengths[:, None]

    def predict(self, source, source_lengths=None, max_length=50):
        """Greedy decoding: the most likely token at each step, until ``eos_id``.

        Parameters
        ----------
        source : array_like of int, or a ragged list
            ``(n, source_len)`` source token ids.
        source_lengths : array_like of int, optional
        max_length : int
            Tokens to decode at most.

        Returns
        -------
        ndarray of int64, shape (n, max_length)
            Decoded tokens; after a sequence's ``eos_id`` (included) the rest is 0.
        """
        src, src_len = self._tokens("source", source, source_lengths, self.source_embedding)
        max_length = check_positive_int("max_length", max_length)
        state = self._encode(src, src_len, False)
        token = np.full(src.shape[0], self.bos_id, np.int64)
        out = np.zeros((src.shape[0], max_length), np.int64)
        done = np.zeros(src.shape[0], bool)
        for t in range(max_length):
            e_t, _ = self.target_embedding.step(token)
            y_t, state = self.decoder.step(e_t, state)
            token = self.output.linear(y_t).argmax(axis=1)
            out[:, t] = np.where(done, 0, token)
            done |= token == self.eos_id
            if done.all():
                break
        return out

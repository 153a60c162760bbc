"""Attention: ``MultiHeadAttention`` (self-attention with PyTorch's parameters),
``PositionalEncoding`` (sinusoidal or learned positions added to the input), and
``CrossAttention`` (a decoder's attention over an encoder's outputs, additive or Luong's,
used by :class:`fastrnn.EncoderDecoder`).

The first two take batch-first sequences ``(batch, timesteps, embed_dim)``. In a model the batch's
``lengths`` mask the padding: ``MultiHeadAttention`` gives keys at or past a sequence's length
no weight and outputs 0 at those steps (like the recurrent layers); ``PositionalEncoding``
ignores them. Every product runs over ``(batch, heads, ...)`` at once (``np.matmul``).
"""
import math

import numpy as np

from .._validation import (
    as_float_array,
    as_lengths,
    as_rng,
    check_bool,
    check_choice,
    check_dtype,
    check_int,
    check_positive_int,
)
from ..engine import layer_ops
from ..reference.cells import affine
from .base import (_LayerBase, _resolve_backend, claim_parameter_bytes, constant_params,
                   uniform_params)


def valid_steps(lengths, timesteps):
    """The valid steps of sequences of ``lengths``.

    Parameters
    ----------
    lengths : ndarray of int, shape (batch,), or None
        As :func:`fastrnn._validation.as_lengths` returns them (None: every step is valid).
    timesteps : int

    Returns
    -------
    ndarray of bool, shape (batch, timesteps), or None
        None when ``lengths`` is None.
    """
    if lengths is None:
        return None
    return np.arange(timesteps) < lengths[:, None]


#: scores within +-this have an exp that neither overflows nor, for a whole row, underflows
#: (float32 holds e^88 and e^-87; a row of e^60's sums far below the largest float32)
EXP_SAFE = 60.0


def softmax_reference(scores, allowed):
    """The textbook masked softmax over the last axis: ``-inf`` where not ``allowed`` (None:
    everywhere allowed), minus each row's max (so that ``exp`` cannot overflow), ``exp``, over
    the row's sum. A new array; the specification :func:`_masked_softmax` is tested against."""
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _masked_softmax(scores, allowed):
    """Softmax over the last axis of ``scores`` (overwritten) where ``allowed`` (broadcast to
    it; None: everywhere), 0 elsewhere. Every row must allow at least one entry.

    :func:`softmax_reference`, faster: a softmax does not change when a row is shifted, and
    the shift by the row's max (a slow reduction over short rows) only keeps ``exp`` in
    range. When every score is within ``+-EXP_SAFE`` (two reductions over the whole array
    tell), ``exp`` runs on the scores as they are, and the masked entries are zeroed after
    it. The row sums are a matrix-vector product. The masked entries are set to 0 before the
    range is taken, so that they cannot choose the path (nor change the rounding of the rows).
    """
    if allowed is not None:
        np.copyto(scores, 0, where=~allowed)   # what is masked must not choose the path
    if -EXP_SAFE <= scores.min() and scores.max() <= EXP_SAFE:
        np.exp(scores, out=scores)
        if allowed is not None:
            np.copyto(scores, 0, where=~allowed)
    else:                                                   # also where a score is NaN
        if allowed is not None:
            np.copyto(scores, -np.inf, where=~allowed)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
    total = np.matmul(scores, np.ones(scores.shape[-1], scores.dtype))[..., None]
    scores *= np.reciprocal(total, out=total)
    return scores


class MultiHeadAttention(_LayerBase):
    """Multi-head scaled dot-product self-attention, as ``torch.nn.MultiheadAttention(embed_dim,
    num_heads, batch_first=True)`` called with ``query = key = value = x``.

    ``q, k, v = x W_q^T + b_q, x W_k^T + b_k, x W_v^T + b_v`` (``in_proj_weight`` holds the
    rows of ``W_q``, ``W_k``, ``W_v`` in that order) are split into ``num_heads`` heads of
    ``head_dim = embed_dim // num_heads`` features; each head computes
    ``softmax(q k^T / sqrt(head_dim)) v``, and the heads' outputs, side by side, go through
    ``out_proj``. Keys at or past a sequence's length get no weight, and the outputs there are
    0 (their gradients too); with ``causal``, step ``t`` attends to the steps ``<= t`` only.

    Parameters
    ----------
    embed_dim : int
        Features of each timestep, in and out.
    num_heads : int
        Attention heads; must divide ``embed_dim``.
    causal : bool
        Mask the future: each step attends to itself and the steps before it (which also makes
        :meth:`step` possible).
    bias : bool
        Whether the projections have biases (``in_proj_bias``, ``out_proj.bias``).
    dtype : {"float32", "float64"}
    seed : int or numpy.random.Generator, optional
        Initialisation as PyTorch's: ``in_proj_weight`` Glorot-uniform, ``out_proj.weight``
        uniform in ``+-1/sqrt(embed_dim)``, the biases 0.

    Attributes
    ----------
    head_dim : int
        ``embed_dim // num_heads``.

    Notes
    -----
    The parameters are PyTorch's state_dict entries: ``in_proj_weight``
    ``(3 * embed_dim, embed_dim)``, ``in_proj_bias`` ``(3 * embed_dim,)``, ``out_proj.weight``
    ``(embed_dim, embed_dim)`` and ``out_proj.bias`` ``(embed_dim,)``, so
    :meth:`load_state_dict` takes a PyTorch module's ``state_dict()`` (as NumPy arrays) and
    :meth:`state_dict` gives one it loads. PyTorch computes outputs at padded steps too (from
    the valid keys); this layer gives 0 there.
    """

    _config_names = ("embed_dim", "num_heads", "causal", "bias", "dtype")

    def __init__(self, embed_dim, num_heads, *, causal=False, bias=True, dtype="float32",
                 seed=None):
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads "
                             f"({self.num_heads})")
        self.head_dim = self.embed_dim // self.num_heads
        self.causal = check_bool("causal", causal)
        self.bias = check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        rng = as_rng("seed", seed)
        e = self.embed_dim
        params = uniform_params([("in_proj_weight", (3 * e, e))], math.sqrt(6.0 / (4 * e)),
                                self.dtype, rng)
        if self.bias:
            params.update(constant_params([("in_proj_bias", (3 * e,))], 0.0, self.dtype))
        params.update(uniform_params([("out_proj.weight", (e, e))], 1.0 / math.sqrt(e),
                                     self.dtype, rng))
        if self.bias:
            params.update(constant_params([("out_proj.bias", (e,))], 0.0, self.dtype))
        super().__init__(params)

    # ------------------------------------------------------------------ user calls

    def check_input(self, x, name="x"):
        """``x`` validated as :meth:`__call__` does.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, embed_dim)
        name : str
            The argument's name in error messages.

        Returns
        -------
        ndarray
            C-contiguous, of the layer's dtype.

        Raises
        ------
        TypeError, ValueError
            For anything but finite real numbers of that shape.
        """
        return as_float_array(name, x, self.dtype, (None, None, self.embed_dim))

    def __call__(self, x, lengths=None, training=False, *, return_weights=False):
        """Self-attention over a batch of sequences.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, embed_dim)
            Batch-first input; cast to the layer's dtype.
        lengths : array_like of int, shape (batch,), optional
            Valid timesteps of each sequence, each in ``1..timesteps``.
        training : bool
            Keep what :meth:`backward` needs.
        return_weights : bool
            Also return the attention weights.

        Returns
        -------
        y : ndarray, shape (batch, timesteps, embed_dim)
            0 at padded steps.
        weights : ndarray, shape (batch, num_heads, timesteps, timesteps)
            Only with ``return_weights``: ``weights[b, h, t]`` is how head ``h`` spreads step
            ``t`` over the keys (PyTorch's ``need_weights=True, average_attn_weights=False``);
            rows of padded steps are 0.
        """
        x = self.check_input(x)
        lengths = as_lengths(lengths, x.shape[0], x.shape[1])
        training = check_bool("training", training)
        y, weights = self._forward(x, lengths, training)
        if not check_bool("return_weights", return_weights):
            return y
        return y, (weights.copy() if training else weights)   # backward reads the cached ones

    def backward(self, dy, *, input_grad=True):
        """Gradient with respect to the input of the last call with ``training=True``; fills
        :attr:`grads`.

        Parameters
        ----------
        dy : array_like, shape (batch, timesteps, embed_dim)
            Gradient with respect to ``y`` (its entries at padded steps do not count).
        input_grad : bool
            False skips the input gradient and returns None.

        Returns
        -------
        ndarray or None
        """
        x = self._training_cache()[0]
        dy = as_float_array("dy", dy, self.dtype, x.shape)
        return self._backward(dy, bool(input_grad))

    # ------------------------------------------------------------------ the computation

    def _allowed(self, timesteps, valid):
        """Which keys each query may attend to, broadcastable to
        ``(batch, heads, timesteps, timesteps)``, or None for all."""
        allowed = np.tri(timesteps, dtype=bool) if self.causal else None
        if valid is not None:
            keys = valid[:, None, None, :]
            allowed = keys if allowed is None else allowed & keys
        return allowed

    def _forward(self, x, lengths, training):
        """``(y, weights)`` of validated ``x`` and ``lengths``; keeps the cache if training.

        One GEMM projects every step to ``q, k, v`` (``qkv`` of shape ``(batch, time, 3,
        heads, head_dim)``); the heads are strided views of it, which the batched products
        (``layer_ops.bmm``: the engine's GEMM on its threads) take as they are, and the context
        is written straight into the ``(batch, time, heads, head_dim)`` layout that
        ``out_proj`` reads (no transposed copies).
        """
        batch, timesteps, e = x.shape
        heads, d = self.num_heads, self.head_dim
        p = self._params
        fast = training and layer_ops.available()
        if training:     # the layer is this thread's until the backward pass: its buffers too
            self._trainer.claim()
        x2 = x.reshape(-1, e)
        qkv = layer_ops.linear(x2, p["in_proj_weight"], p.get("in_proj_bias"),
                               out=self._buffer("qkv", (x2.shape[0], 3 * e), x.dtype)
                               if training else None)
        qkv = qkv.reshape(batch, timesteps, 3, heads, d)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (batch, heads, time, d)
        valid = valid_steps(lengths, timesteps)
        shape = (batch, heads, timesteps, timesteps)
        weights = layer_ops.bmm(q, k, trans_b=True,
                                out=self._buffer("weights", shape, x.dtype) if training else None)
        if fast:
            # the scale, the masks and the softmax in one pass over each row of scores
            layer_ops.attention_softmax(weights, 1.0 / math.sqrt(d), lengths, self.causal)
        else:
            weights *= 1.0 / math.sqrt(d)
            if valid is not None:   # the padded queries' scores (of whatever x holds there)
                weights *= valid[:, None, :, None]   # are not the softmax's to see (its notes)
            _masked_softmax(weights, self._allowed(timesteps, valid))
            if valid is not None:
                weights *= valid[:, None, :, None]          # padded queries attend to nothing
        shape = (batch, timesteps, heads, d)
        context = self._buffer("context", shape, x.dtype) if training \
            else np.empty(shape, x.dtype)
        layer_ops.bmm(weights, v, out=context.transpose(0, 2, 1, 3))
        context = context.reshape(batch, timesteps, e)
        y = layer_ops.linear(context, p["out_proj.weight"], p.get("out_proj.bias"))
        if valid is not None:
            y *= valid[..., None]
        if training:
            self._keep_for_backward((x, qkv, weights, context, valid, fast))
        return y, weights

    def _backward_reads(self, cache):
        return {"x": cache[0], "parameter 'in_proj_weight'": self._params["in_proj_weight"],
                "parameter 'out_proj.weight'": self._params["out_proj.weight"]}

    def _backward(self, dy, input_grad):
        """:meth:`backward` on a ``dy`` of the output's shape and dtype.

        The chain rule of the forward, step by step: ``dcontext = dy W_o``, ``dweights =
        dcontext v^T``, ``dv = weights^T dcontext``, through the softmax ``dscores = weights *
        (dweights - rowsum(dweights * weights))``, through the scale, ``dq = dscores k``, ``dk =
        dscores^T q``. ``dq, dk, dv`` are written into one ``(batch, time, 3, heads, head_dim)``
        array laid out as ``qkv``, so that the in-projection's gradients are two GEMMs.
        """
        x, qkv, weights, context, valid, fast = self._training_cache()
        batch, timesteps, e = x.shape
        heads, d = self.num_heads, self.head_dim
        p = self._params
        if valid is not None:
            dy = dy * valid[..., None]
        dy2 = dy.reshape(-1, e)
        dcontext = layer_ops.matmul(dy2, p["out_proj.weight"],
                                    out=self._buffer("dcontext", dy2.shape, dy.dtype)) \
            .reshape(batch, timesteps, heads, d).transpose(0, 2, 1, 3)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        dqkv = self._buffer("dqkv", qkv.shape, qkv.dtype)
        dq, dk, dv = (dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        layer_ops.bmm(weights, dcontext, trans_a=True, out=dv)
        dscores = layer_ops.bmm(dcontext, v, trans_b=True,           # dweights, then dscores
                                out=self._buffer("dscores", weights.shape, weights.dtype))
        # through the softmax (masked entries have weight 0, hence gradient 0), then the scale
        if fast:
            layer_ops.attention_softmax_backward(dscores, weights, 1.0 / math.sqrt(d))
        else:
            dscores -= np.einsum("...i,...i->...", dscores, weights)[..., None]
            dscores *= weights
            dscores *= 1.0 / math.sqrt(d)
        layer_ops.bmm(dscores, k, out=dq)
        layer_ops.bmm(dscores, q, trans_a=True, out=dk)
        dqkv2 = dqkv.reshape(-1, 3 * e)
        grads = {"in_proj_weight": layer_ops.matmul(dqkv2, x.reshape(-1, e), trans_a=True)}
        if self.bias:
            grads["in_proj_bias"] = dqkv2.sum(axis=0)
        grads["out_proj.weight"] = layer_ops.matmul(dy2, context.reshape(-1, e), trans_a=True)
        if self.bias:
            grads["out_proj.bias"] = dy2.sum(axis=0)
        self.grads = grads
        dx = layer_ops.matmul(dqkv2, p["in_proj_weight"]).reshape(x.shape) if input_grad \
            else None
        self._backward_done()
        return dx

    # ------------------------------------------------------------------ in a model

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: the input shape."""
        return tuple(input_shape)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`: ``x`` is ``(batch, timesteps, embed_dim)``;
        ``lengths`` masks the padded keys, and ``y`` is 0 at the padded steps."""
        return self._forward(x, lengths, training)[0], None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`."""
        return self._backward(dy, input_grad), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: one timestep ``x_t`` ``(batch, embed_dim)`` attending to
        itself and the steps before it; ``causal=True`` layers only.

        The state is ``(keys, values)``, each ``(batch, num_heads, steps so far, head_dim)``
        (the keys and values of the steps seen, which a call with the whole sequence
        recomputes); None means no step yet.
        """
        if not self.causal:
            raise ValueError("step() needs causal=True: without the causal mask each step "
                             "attends to later steps, which are not known yet")
        x_t = as_float_array("x_t", x_t, self.dtype, (None, self.embed_dim))
        batch = x_t.shape[0]
        keys, values = self._check_step_state(state, batch)
        p = self._params
        qkv = affine(x_t, p["in_proj_weight"], p.get("in_proj_bias"))
        q, k, v = qkv.reshape(batch, 3, self.num_heads, 1, self.head_dim).transpose(1, 0, 2, 3, 4)
        keys = np.concatenate([keys, k], axis=2)
        values = np.concatenate([values, v], axis=2)
        scores = (q @ keys.swapaxes(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        context = (_masked_softmax(scores, None) @ values).reshape(batch, self.embed_dim)
        return affine(context, p["out_proj.weight"], p.get("out_proj.bias")), (keys, values)

    def _check_step_state(self, state, batch):
        """``(keys, values)`` of a :meth:`step` state (None: empty)."""
        shape = (batch, self.num_heads, None, self.head_dim)
        if state is None:
            empty = np.zeros((batch, self.num_heads, 0, self.head_dim), self.dtype)
            return empty, empty
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(f"state must be the tuple (keys, values) that step() returned, "
                            f"got {type(state).__name__}")
        keys = as_float_array("state[0] (keys)", state[0], self.dtype, shape)
        values = as_float_array("state[1] (values)", state[1], self.dtype, keys.shape)
        return keys, values

    def __repr__(self):
        return (f"MultiHeadAttention({self.embed_dim}, {self.num_heads}, causal={self.causal}, "
                f"bias={self.bias}, dtype={self.dtype.name!r})")


#: the encodings :class:`PositionalEncoding` knows
ENCODINGS = ("sinusoidal", "learned")


def sinusoidal_encoding(start, stop, embed_dim, dtype):
    """Rows ``start..stop-1`` of the sinusoidal encoding (Vaswani et al., 2017).

    ``P[t, 2i] = sin(t / 10000^(2i / embed_dim))`` and ``P[t, 2i + 1] = cos(t / 10000^(2i /
    embed_dim))`` (for an odd ``embed_dim`` the last column is a sine).

    Parameters
    ----------
    start, stop : int
    embed_dim : int
    dtype : numpy.dtype

    Returns
    -------
    ndarray, shape (stop - start, embed_dim)
    """
    column = np.arange(embed_dim)
    angle = np.arange(start, stop)[:, None] / 10000.0 ** ((column - column % 2) / embed_dim)
    return np.where(column % 2 == 0, np.sin(angle), np.cos(angle)).astype(dtype)


class PositionalEncoding(_LayerBase):
    """Positions added to a sequence: ``y[:, t] = x[:, t] + P[t]``.

    Parameters
    ----------
    max_len : int
        The longest sequence the layer takes; a longer one raises ValueError.
    embed_dim : int
        Features of each timestep.
    kind : {"sinusoidal", "learned"}
        ``"sinusoidal"``: the fixed encoding of :func:`sinusoidal_encoding`, no parameters.
        ``"learned"``: ``P`` is the parameter ``weight`` ``(max_len, embed_dim)``, initialised
        normal with standard deviation 0.02.
    dtype : {"float32", "float64"}
    seed : int or numpy.random.Generator, optional
        Seed of the learned encoding's initialisation.
    """

    _config_names = ("max_len", "embed_dim", "kind", "dtype")

    def __init__(self, max_len, embed_dim, *, kind="sinusoidal", dtype="float32", seed=None):
        self.max_len = check_positive_int("max_len", max_len)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.kind = check_choice("kind", kind, ENCODINGS)
        self.dtype = check_dtype(dtype)
        params = {}
        if self.kind == "learned":
            shape = (self.max_len, self.embed_dim)
            claim_parameter_bytes(math.prod(shape) * self.dtype.itemsize)
            params["weight"] = (0.02 * as_rng("seed", seed).standard_normal(shape)) \
                .astype(self.dtype)
        super().__init__(params)

    def check_input(self, x, name="x"):
        """``x`` validated as :meth:`__call__` does (see
        :meth:`MultiHeadAttention.check_input`), at most ``max_len`` timesteps long."""
        x = as_float_array(name, x, self.dtype, (None, None, self.embed_dim))
        self._check_timesteps(x.shape[1])
        return x

    def _check_timesteps(self, timesteps):
        if timesteps > self.max_len:
            raise ValueError(f"the sequences have {timesteps} timesteps, more than the "
                             f"PositionalEncoding's max_len={self.max_len}")

    def encoding(self, start=0, stop=None):
        """The encoding ``P`` of the positions ``start..stop-1``.

        Parameters
        ----------
        start : int
        stop : int, optional
            Default: ``max_len``.

        Returns
        -------
        ndarray, shape (stop - start, embed_dim)
            A new array (for ``"learned"`` a copy of those rows of ``weight``).
        """
        stop = self.max_len if stop is None else stop
        if self.kind == "learned":
            return self._params["weight"][start:stop].copy()
        return sinusoidal_encoding(start, stop, self.embed_dim, self.dtype)

    def __call__(self, x, training=False):
        """``x + P`` for ``x`` of shape ``(batch, timesteps, embed_dim)``, ``timesteps <=
        max_len``; keep a cache if ``training``.

        Returns
        -------
        ndarray, shape (batch, timesteps, embed_dim)
        """
        return self._forward(self.check_input(x), check_bool("training", training))

    def _forward(self, x, training):
        timesteps = x.shape[1]
        self._check_timesteps(timesteps)
        if self.kind == "learned":
            y = x + self._params["weight"][:timesteps]
        else:
            y = x + sinusoidal_encoding(0, timesteps, self.embed_dim, self.dtype)
        if training:
            self._keep_for_backward(timesteps)
        return y

    def backward(self, dy):
        """Gradient with respect to the input (``dy`` itself); fills :attr:`grads` (the
        learned encoding's ``weight``: ``dy`` summed over the batch, 0 past the sequences).

        Parameters
        ----------
        dy : ndarray, shape (batch, timesteps, embed_dim)
            Gradient with respect to the output of the last call with ``training=True``.

        Returns
        -------
        ndarray
        """
        timesteps = self._training_cache()
        dy = as_float_array("dy", dy, self.dtype, (None, timesteps, self.embed_dim))
        return self._backward(dy)

    def _backward(self, dy):
        timesteps = self._training_cache()
        self.grads = {}
        if self.kind == "learned":
            grad = np.zeros_like(self._params["weight"])
            grad[:timesteps] = dy.sum(axis=0)
            self.grads["weight"] = grad
        self._backward_done()
        return dy

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: the input shape."""
        return tuple(input_shape)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`: ``x + P``; ``lengths`` is ignored. A ValueError
        for sequences longer than ``max_len``."""
        return self._forward(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`: ``dx`` is ``dy``."""
        dx = self._backward(dy)
        return (dx if input_grad else None), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: ``x_t + P[position]`` for ``x_t`` ``(batch, embed_dim)``;
        the state is the position (an int, the timesteps seen so far; None means 0)."""
        x_t = as_float_array("x_t", x_t, self.dtype, (None, self.embed_dim))
        position = 0 if state is None else check_int("state", state, low=0)
        if position >= self.max_len:
            raise ValueError(f"step() at position {position} is past the "
                             f"PositionalEncoding's max_len={self.max_len}")
        return x_t + self.encoding(position, position + 1), position + 1

    def __repr__(self):
        return (f"PositionalEncoding({self.max_len}, {self.embed_dim}, kind={self.kind!r}, "
                f"dtype={self.dtype.name!r})")


#: the scores :class:`CrossAttention` knows
SCORES = ("additive", "general", "dot")


class CrossAttention(_LayerBase):
    """Attention of a decoder's states over an encoder's output sequence (global attention,
    Luong et al. 2015), the attention of :class:`fastrnn.EncoderDecoder`.

    Each query ``q_t`` (a decoder state) scores every memory step ``m_s`` (an encoder output),
    the scores of the valid steps go through a softmax, and the context is the weighted sum of
    the memory: ``a_t = softmax_s(score(q_t, m_s))``, ``c_t = sum_s a_ts m_s``. The scores:

    - ``"additive"`` (Bahdanau et al. 2015): ``v^T tanh(W_q q_t + W_k m_s + b)``;
    - ``"general"`` (Luong et al. 2015): ``q_t^T W m_s``;
    - ``"dot"`` (Luong et al. 2015): ``q_t^T m_s``.

    Every product runs over the whole batch at once (``np.matmul``). Unlike the layers of
    :class:`fastrnn.Sequential`, it takes two inputs (the queries and the memory), so it has
    its own calls, :meth:`attend` and :meth:`attend_backward`, instead of ``model_forward`` and
    ``model_backward``.

    Parameters
    ----------
    hidden_size : int
        Features of the queries and of the memory (and of the additive score's hidden layer).
    score : {"additive", "general", "dot"}
    dtype : {"float32", "float64"}
    seed : int or numpy.random.Generator, optional
        The weights are drawn uniform in ``+-1/sqrt(hidden_size)``.
    backend : {"compiled", "reference"}, optional
        Default: the compiled engine when it is available. With it, the additive score of a
        call with ``training=True`` and its backward pass run on fused kernels (the engine's
        ``tanh`` in float32; no ``(batch, query, memory, hidden)`` tensor is kept: the
        backward pass computes the ``tanh`` values again), and the matrix products on the
        engine's GEMM and threads; the reference runs NumPy's.

    Notes
    -----
    The parameters: ``"additive"`` has ``query_weight`` (``W_q``) and ``key_weight`` (``W_k``),
    both ``(hidden_size, hidden_size)``, ``bias`` (``b``) and ``score_weight`` (``v``), both
    ``(hidden_size,)``; ``"general"`` has ``weight`` (``W``, ``(hidden_size, hidden_size)``);
    ``"dot"`` has none.
    """

    _config_names = ("hidden_size", "score", "dtype", "backend")

    def __init__(self, hidden_size, score="additive", dtype="float32", seed=None, backend=None):
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.score = check_choice("score", score, SCORES)
        self.dtype = check_dtype(dtype)
        self.backend = _resolve_backend(backend)
        h = self.hidden_size
        shapes = {"additive": [("query_weight", (h, h)), ("key_weight", (h, h)),
                               ("bias", (h,)), ("score_weight", (h,))],
                  "general": [("weight", (h, h))], "dot": []}[self.score]
        super().__init__(uniform_params(shapes, 1.0 / math.sqrt(h), self.dtype, seed))

    # ------------------------------------------------------------------ products

    def _mm(self, a, b, trans_a=False, trans_b=False):
        """``op(a) @ op(b)`` of 2-D arrays, or over the leading axis of 3-D ones (``op(x)``:
        ``x`` with its last two axes swapped if ``trans_x``): the engine's GEMM with the
        compiled backend, NumPy's with the reference."""
        if self.backend == "compiled":
            if a.ndim == 2:
                return layer_ops.matmul(a, b, trans_a, trans_b)
            return layer_ops.bmm(a, b, trans_a, trans_b)
        return np.matmul(a.swapaxes(-1, -2) if trans_a else a,
                         b.swapaxes(-1, -2) if trans_b else b)

    def _rows(self, x, w, trans_w=False):
        """``x @ op(w)`` over the last axis of ``x`` (all rows in one GEMM)."""
        y = self._mm(x.reshape(-1, x.shape[-1]), w, trans_b=trans_w)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    # ------------------------------------------------------------------ user calls

    def __call__(self, query, memory, memory_lengths=None, training=False):
        """Attend from each query step over the memory.

        Parameters
        ----------
        query : array_like, shape (batch, query_steps, hidden_size)
        memory : array_like, shape (batch, memory_steps, hidden_size)
        memory_lengths : array_like of int, shape (batch,), optional
            Valid memory steps of each sequence (the steps past it get weight 0).
        training : bool
            Keep what :meth:`backward` needs.

        Returns
        -------
        context : ndarray, shape (batch, query_steps, hidden_size)
        weights : ndarray, shape (batch, query_steps, memory_steps)
            Each row sums to 1 over the valid memory steps.
        """
        h = self.hidden_size
        query = as_float_array("query", query, self.dtype, (None, None, h))
        memory = as_float_array("memory", memory, self.dtype, (query.shape[0], None, h))
        lengths = as_lengths(memory_lengths, memory.shape[0], memory.shape[1])
        context, weights = self.attend(query, memory, valid_steps(lengths, memory.shape[1]),
                                       training=check_bool("training", training))
        return context, (weights.copy() if training else weights)

    def backward(self, dcontext, *, input_grad=True):
        """Gradients with respect to the query and the memory of the last call with
        ``training=True``; fills :attr:`grads`.

        Parameters
        ----------
        dcontext : array_like, shape (batch, query_steps, hidden_size)
            Gradient with respect to ``context``.
        input_grad : bool
            False skips the gradients with respect to the inputs (returns ``(None, None)``).

        Returns
        -------
        dquery, dmemory : ndarray or None
        """
        query = self._training_cache()[0]
        dcontext = as_float_array("dcontext", dcontext, self.dtype, query.shape)
        return self.attend_backward(dcontext, input_grad=bool(input_grad))

    # ------------------------------------------------------------------ in a model

    def keys(self, memory):
        """What the scores compare the queries with, computed once for a memory (a decoder
        that attends step by step reuses it): ``W_k m + b`` (additive), ``m W^T`` (general),
        ``m`` itself (dot).

        Parameters
        ----------
        memory : ndarray, shape (batch, memory_steps, hidden_size)
            Validated, of the layer's dtype.

        Returns
        -------
        ndarray, shape (batch, memory_steps, hidden_size)
        """
        p = self._params
        if self.score == "additive":
            return self._rows(memory, p["key_weight"], trans_w=True) + p["bias"]
        if self.score == "general":
            return self._rows(memory, p["weight"], trans_w=True)
        return memory

    def attend(self, query, memory, valid=None, *, keys=None, training=False):
        """:meth:`__call__` on validated input (what a model calls).

        Parameters
        ----------
        query : ndarray, shape (batch, query_steps, hidden_size)
        memory : ndarray, shape (batch, memory_steps, hidden_size)
            Of the layer's dtype.
        valid : ndarray of bool, shape (batch, memory_steps), optional
            The valid memory steps (:func:`valid_steps`); None: all. Each row needs one.
        keys : ndarray, optional
            ``self.keys(memory)``, if already computed.
        training : bool
            Keep what :meth:`attend_backward` needs.

        Returns
        -------
        context : ndarray, shape (batch, query_steps, hidden_size)
        weights : ndarray, shape (batch, query_steps, memory_steps)
            0 at the steps that are not valid.
        """
        keys = self.keys(memory) if keys is None else keys
        hidden = projected = None
        if self.score == "additive":
            projected = self._rows(query, self._params["query_weight"], trans_w=True)
            if training and self.backend == "compiled":
                # fused: v . tanh(projected + keys) for every (query, memory) pair, no 4-D array
                scores = layer_ops.additive_scores(projected, keys, self._params["score_weight"])
            else:
                hidden = projected[:, :, None, :] + keys[:, None, :, :]   # (batch, query, memory, h)
                np.tanh(hidden, out=hidden)
                scores = (hidden.reshape(-1, hidden.shape[-1]) @ self._params["score_weight"]) \
                    .reshape(hidden.shape[:-1])                           # (batch, query, memory)
        else:
            scores = self._mm(query, keys, trans_b=True)
        weights = _masked_softmax(scores, None if valid is None else valid[:, None, :])
        context = self._mm(weights, memory)
        if training:
            self._keep_for_backward((query, memory, keys, hidden, weights, projected))
        return context, weights

    def _backward_reads(self, cache):
        reads = {"query": cache[0], "memory": cache[1]}
        reads.update({f"parameter {name!r}": p for name, p in self._params.items()})
        return reads

    def attend_backward(self, dcontext, *, input_grad=True):
        """Backward pass of the last :meth:`attend` with ``training=True``; fills
        :attr:`grads`.

        Parameters
        ----------
        dcontext : ndarray, shape (batch, query_steps, hidden_size)
            Gradient with respect to ``context``, of the layer's dtype.
        input_grad : bool
            False skips the gradients with respect to the inputs.

        Returns
        -------
        dquery, dmemory : ndarray or None
        """
        query, memory, keys, hidden, weights, projected = self._training_cache()
        h = self.hidden_size
        p = self._params
        dweights = self._mm(dcontext, memory, trans_b=True)
        dmemory = self._mm(weights, dcontext, trans_a=True)
        # through the softmax (steps that are not valid have weight 0, hence gradient 0)
        dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True))
        grads = {}
        if self.score == "additive" and hidden is None:     # the compiled backend's kernels
            dprojected, dkeys, grads["score_weight"] = layer_ops.additive_backward(
                projected, keys, p["score_weight"], dscores)
        elif self.score == "additive":
            dhidden = hidden * hidden               # one array of (batch, query, memory, h)
            np.subtract(1, dhidden, out=dhidden)
            dhidden *= p["score_weight"]
            dhidden *= dscores[..., None]
            grads["score_weight"] = dscores.reshape(-1) @ hidden.reshape(-1, h)
            dprojected = dhidden.sum(axis=2)                            # (batch, query, h)
            dkeys = dhidden.sum(axis=1)                                 # (batch, memory, h)
        if self.score == "additive":
            grads["query_weight"] = self._mm(dprojected.reshape(-1, h), query.reshape(-1, h),
                                             trans_a=True)
            grads["key_weight"] = self._mm(dkeys.reshape(-1, h), memory.reshape(-1, h),
                                           trans_a=True)
            grads["bias"] = dkeys.reshape(-1, h).sum(axis=0)
            dquery = self._rows(dprojected, p["query_weight"]) if input_grad else None
            dmemory += self._rows(dkeys, p["key_weight"])
        else:
            dquery = self._mm(dscores, keys) if input_grad else None
            dkeys = self._mm(dscores, query, trans_a=True)
            if self.score == "general":
                grads["weight"] = self._mm(dkeys.reshape(-1, h), memory.reshape(-1, h),
                                           trans_a=True)
                dmemory += self._rows(dkeys, p["weight"])
            else:
                dmemory += dkeys
        self.grads = {name: grads[name] for name in p}
        self._backward_done()
        return dquery, (dmemory if input_grad else None)

    def output_shape(self, input_shape):
        """The shape of ``context`` for queries of ``input_shape``: the same.

        Parameters
        ----------
        input_shape : tuple of int or None

        Returns
        -------
        tuple of int or None
        """
        return tuple(input_shape)

    def __repr__(self):
        return (f"CrossAttention({self.hidden_size}, score={self.score!r}, "
                f"dtype={self.dtype.name!r}, backend={self.backend!r})")

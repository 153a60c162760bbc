"""``TransformerEncoderLayer``: self-attention and a feed-forward block, with residuals and
layer norms, built from ``MultiHeadAttention``, ``Dense`` and ``LayerNorm``."""
import math

import numpy as np

from .._validation import (
    as_float_array,
    as_lengths,
    as_rng,
    check_bool,
    check_choice,
    check_dtype,
    check_fraction,
    check_positive_int,
    check_real,
)
from ..engine import layer_ops
from .attention import MultiHeadAttention, valid_steps
from .base import _LayerBase
from .dense import Dense
from .normalization import LayerNorm

# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
# (1969): erf on |x| <= 0.46875, erfc * exp(x^2) on 0.46875..4 and beyond 4.
_ERF_A = (3.16112374387056560e0, 1.13864154151050156e2, 3.77485237685302021e2,
          3.20937758913846947e3, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3,
          2.84423683343917062e3)
_ERFC_C = (5.64188496988670089e-1, 8.88314979438837594e0, 6.61191906371416295e1,
           2.98635138197400131e2, 8.81952221241769090e2, 1.71204761263407058e3,
           2.05107837782607147e3, 1.23033935479799725e3, 2.15311535474403846e-8)
_ERFC_D = (1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2,
           1.62138957456669019e3, 3.29079923573345963e3, 4.36261909014324716e3,
           3.43936767414372164e3, 1.23033935480374942e3)
_ERFC_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
           1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERFC_Q = (2.56852019228982242e0, 1.87295284992346047e0, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)
_ONE_OVER_SQRT_PI = 5.6418958354775628695e-1


def _ratio(z, num, den, terms):
    """Cody's rational function: ``(num[-1] z^(terms+1) + num[0] z^terms + ...) / (z^(terms+1)
    + den[0] z^terms + ...)``, written as his loops are."""
    n = num[-1] * z
    d = z
    for i in range(terms):
        n = (n + num[i]) * z
        d = (d + den[i]) * z
    return (n + num[terms]) / (d + den[terms])


def erf(x):
    """The error function of an array, to about 1e-16 in float64 (NumPy has none).

    Parameters
    ----------
    x : ndarray of float

    Returns
    -------
    ndarray, of ``x``'s shape and dtype
    """
    a = np.abs(x)
    out = np.empty_like(x)
    small = a <= 0.46875
    middle = (a > 0.46875) & (a <= 4.0)
    large = a > 4.0
    xs = x[small]
    out[small] = xs * _ratio(xs * xs, _ERF_A, _ERF_B, 3)
    am = a[middle]
    out[middle] = 1.0 - np.exp(-am * am) * _ratio(am, _ERFC_C, _ERFC_D, 7)
    al = a[large]
    z = 1.0 / (al * al)
    tail = (_ONE_OVER_SQRT_PI - z * _ratio(z, _ERFC_P, _ERFC_Q, 4)) / al
    out[large] = 1.0 - np.exp(-al * al) * tail
    np.copysign(out, x, out=out, where=~small)
    return out


def _gelu(u):
    return 0.5 * u * (1.0 + erf(u * math.sqrt(0.5)))


def _gelu_grad(u, dy):
    cdf = 0.5 * (1.0 + erf(u * math.sqrt(0.5)))
    return dy * (cdf + u * np.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi)))


#: ``name -> (activation, derivative from the pre-activation u and upstream dy)`` of the
#: feed-forward block (``"gelu"`` is the exact one, PyTorch's default); the derivative may
#: overwrite ``dy``
FEEDFORWARD_ACTIVATIONS = {
    "relu": (lambda u: np.maximum(u, 0), lambda u, dy: np.multiply(dy, u > 0, out=dy)),
    "gelu": (_gelu, _gelu_grad),
}


class TransformerEncoderLayer(_LayerBase):
    """A transformer encoder layer, as ``torch.nn.TransformerEncoderLayer(d_model, nhead,
    dim_feedforward, dropout=0.0, activation, layer_norm_eps, batch_first=True, norm_first,
    bias)``.

    With ``sa`` the self-attention and ``ff(x) = linear2(act(linear1(x)))``:
    post-norm (``norm_first=False``) ``h = norm1(x + sa(x)); y = norm2(h + ff(h))``, pre-norm
    ``h = x + sa(norm1(x)); y = h + ff(norm2(h))``. In a model the batch's ``lengths`` mask the
    padded keys of the attention, and ``y`` is 0 at padded steps (their gradients too).

    Parameters
    ----------
    d_model : int
        Features of each timestep, in and out.
    nhead : int
        Attention heads; must divide ``d_model``.
    dim_feedforward : int
        Width of the feed-forward block.
    dropout : float
        Only 0.0: dropout inside the layer is not supported (put :class:`fastrnn.Dropout`
        layers between the layers of a model instead). The argument is there so that
        PyTorch's configurations read the same.
    activation : {"relu", "gelu"}
        Of the feed-forward block (``"gelu"``: the exact, erf-based one).
    layer_norm_eps : float
    norm_first : bool
        Pre-norm (True) or post-norm (False, PyTorch's default).
    causal : bool
        Mask the future in the attention (PyTorch's ``is_causal=True`` with the causal
        ``src_mask``); it also makes :meth:`step` possible.
    bias : bool
        Whether the linear maps and the layer norms have biases.
    dtype : {"float32", "float64"}
    seed : int or numpy.random.Generator, optional
        Initialisation as PyTorch's (see :class:`MultiHeadAttention` and :class:`Dense`; the
        norms start at weight 1, bias 0).

    Attributes
    ----------
    self_attn : MultiHeadAttention
    linear1, linear2 : Dense
    norm1, norm2 : LayerNorm
        The parts, whose parameters are this layer's under PyTorch's names
        (``"self_attn.in_proj_weight"``, ``"linear1.weight"``, ``"norm2.bias"``, ...), so that
        :meth:`load_state_dict` takes a PyTorch module's ``state_dict()`` and
        :meth:`state_dict` gives one it loads.

    Notes
    -----
    PyTorch computes outputs at padded steps too (and its inference fast path, in eval mode
    without gradients, returns 0 there); this layer always gives 0 there.
    """

    _config_names = ("d_model", "nhead", "dim_feedforward", "dropout", "activation",
                     "layer_norm_eps", "norm_first", "causal", "bias", "dtype")

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, causal=False, bias=True,
                 dtype="float32", seed=None):
        self.d_model = check_positive_int("d_model", d_model)
        self.nhead = check_positive_int("nhead", nhead)
        self.dim_feedforward = check_positive_int("dim_feedforward", dim_feedforward)
        self.dropout = check_fraction("dropout", dropout)
        if self.dropout != 0.0:
            raise ValueError(f"dropout inside TransformerEncoderLayer is not supported, got "
                             f"{self.dropout}: pass dropout=0.0 and put fastrnn.Dropout layers "
                             f"between the layers of the model")
        self.activation = check_choice("activation", activation,
                                       tuple(FEEDFORWARD_ACTIVATIONS))
        self.layer_norm_eps = check_real("layer_norm_eps", layer_norm_eps, low_open=True,
                                         high_open=True)
        self.norm_first = check_bool("norm_first", norm_first)
        self.causal = check_bool("causal", causal)
        self.bias = check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        rng = as_rng("seed", seed)
        kw = {"bias": self.bias, "dtype": self.dtype}
        self.self_attn = MultiHeadAttention(self.d_model, self.nhead, causal=self.causal,
                                            seed=rng, **kw)
        self.linear1 = Dense(self.d_model, self.dim_feedforward, seed=rng, **kw)
        self.linear2 = Dense(self.dim_feedforward, self.d_model, seed=rng, **kw)
        self.norm1 = LayerNorm(self.d_model, self.layer_norm_eps, **kw)
        self.norm2 = LayerNorm(self.d_model, self.layer_norm_eps, **kw)
        super().__init__({f"{prefix}.{name}": p for prefix, part in self._parts()
                          for name, p in part.parameters().items()})

    def _parts(self):
        """``(name, layer)`` of the parts, in PyTorch's state_dict order."""
        return [("self_attn", self.self_attn), ("linear1", self.linear1),
                ("linear2", self.linear2), ("norm1", self.norm1), ("norm2", self.norm2)]

    # ------------------------------------------------------------------ user calls

    def check_input(self, x, name="x"):
        """``x`` validated as :meth:`__call__` does (see
        :meth:`MultiHeadAttention.check_input`; the features are ``d_model``)."""
        return as_float_array(name, x, self.dtype, (None, None, self.d_model))

    def __call__(self, x, lengths=None, training=False):
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, d_model)
            Batch-first input; cast to the layer's dtype.
        lengths : array_like of int, shape (batch,), optional
            Valid timesteps of each sequence, each in ``1..timesteps``.
        training : bool
            Keep what :meth:`backward` needs.

        Returns
        -------
        ndarray, shape (batch, timesteps, d_model)
            0 at padded steps.
        """
        x = self.check_input(x)
        lengths = as_lengths(lengths, x.shape[0], x.shape[1])
        return self._forward(x, lengths, check_bool("training", training))

    def backward(self, dy, *, input_grad=True):
        """Gradient with respect to the input of the last call with ``training=True``; fills
        :attr:`grads` (keyed like :meth:`parameters`).

        Parameters
        ----------
        dy : array_like, shape (batch, timesteps, d_model)
        input_grad : bool
            False returns None instead of the input gradient.

        Returns
        -------
        ndarray or None
        """
        valid, _, shape = self._training_cache()
        dy = as_float_array("dy", dy, self.dtype, shape)
        return self._backward(dy, bool(input_grad))

    # ------------------------------------------------------------------ the computation

    def _block(self, x, attend, training):
        """The layer's output before the padding mask, and the feed-forward block's
        pre-activation; ``attend(h)`` is the self-attention of ``h``."""
        def norm(layer, h):
            return layer.model_forward(h, training=training)[0]

        if self.norm_first:
            h = x + attend(norm(self.norm1, x))
            f, u = self._feedforward(norm(self.norm2, h), training)
            return h + f, u
        # the residual sums are made by the norms (in their pass over the rows)
        h = self.norm1._forward(x, training, residual=attend(x))
        f, u = self._feedforward(h, training)
        return self.norm2._forward(h, training, residual=f), u

    def _feedforward(self, h, training):
        """``(ff(h), what the backward pass needs)``: the pre-activation ``u``, or, for a
        training call of a relu block on the engine, ``(rows of h, relu output)``."""
        if training and self.activation == "relu" and layer_ops.available():
            return self._feedforward_fused(h)
        u = self.linear1.model_forward(h, training=training)[0]
        act = FEEDFORWARD_ACTIVATIONS[self.activation][0]
        return self.linear2.model_forward(act(u), training=training)[0], u

    def _feedforward_fused(self, h):
        """:meth:`_feedforward` of a training call (relu, on the engine): the two GEMMs into
        the layer's reused buffers, the bias and the relu in one pass; ``linear1`` and
        ``linear2`` are not called (:meth:`_feedforward_back_fused` fills their grads)."""
        rows = h.reshape(-1, self.d_model)
        p1, p2 = self.linear1.parameters(), self.linear2.parameters()
        a = layer_ops.matmul(rows, p1["weight"], trans_b=True,
                             out=self._buffer("ff_hidden", (rows.shape[0], self.dim_feedforward),
                                              h.dtype))
        layer_ops.bias_relu(a, p1.get("bias"))
        f = layer_ops.matmul(a, p2["weight"], trans_b=True,
                             out=self._buffer("ff_out", rows.shape, h.dtype))
        if self.bias:
            f += p2["bias"]
        return f.reshape(h.shape), (rows, a)

    def _feedforward_back_fused(self, df, rows, a):
        """The gradient on ``h`` of :meth:`_feedforward_fused` (a reused buffer) from ``df``;
        fills the grads of ``linear1`` and ``linear2``."""
        df2 = df.reshape(-1, self.d_model)
        p1, p2 = self.linear1.parameters(), self.linear2.parameters()
        self.linear2.grads = {"weight": layer_ops.matmul(df2, a, trans_a=True)}
        if self.bias:
            self.linear2.grads["bias"] = df2.sum(axis=0)
        da = layer_ops.matmul(df2, p2["weight"],
                              out=self._buffer("ff_dhidden", a.shape, a.dtype))
        layer_ops.relu_backward(da, a)
        self.linear1.grads = {"weight": layer_ops.matmul(da, rows, trans_a=True)}
        if self.bias:
            self.linear1.grads["bias"] = da.sum(axis=0)
        dh = layer_ops.matmul(da, p1["weight"], out=self._buffer("ff_dh", df2.shape, df.dtype))
        return dh.reshape(df.shape)

    def _backward_reads(self, cache):
        if not isinstance(cache[1], tuple):
            return {}
        # the fused feed-forward block reads these (linear1 and linear2 keep no copies then)
        return {f"parameter '{name}'": self._params[name]
                for name in ("linear1.weight", "linear2.weight")}

    def _forward(self, x, lengths, training):
        if training:
            self._trainer.claim()       # before the parts: a refused call leaves them alone
        y, u = self._block(x, lambda h: self.self_attn.model_forward(
            h, lengths, training=training)[0], training)
        valid = valid_steps(lengths, x.shape[1])
        if valid is not None:
            y *= valid[..., None]
        if training:
            self._keep_for_backward((valid, u, x.shape))
        return y

    def _backward(self, dy, input_grad):
        """:meth:`backward` on a ``dy`` of the output's shape and dtype."""
        valid, u, _ = self._training_cache()
        if valid is not None:
            dy = dy * valid[..., None]

        def back(layer, d):
            return layer.model_backward(d)[0]

        def feedforward_back(df):
            if isinstance(u, tuple):
                return self._feedforward_back_fused(df, *u)
            du = FEEDFORWARD_ACTIVATIONS[self.activation][1](u, back(self.linear2, df))
            return back(self.linear1, du)

        if self.norm_first:
            dh = dy + back(self.norm2, feedforward_back(dy))
            dx = dh + back(self.norm1, back(self.self_attn, dh))
        else:
            dz = back(self.norm2, dy)
            dh = feedforward_back(dz)
            dh += dz
            dw = back(self.norm1, dh)
            # the attention's input is the layer's: its gradient (a GEMM as large as the
            # in-projection's) only when the caller wants dx
            dx = self.self_attn.model_backward(dw, input_grad=input_grad)[0]
            dx = dw + dx if input_grad else None
        self.grads = {f"{prefix}.{name}": g for prefix, part in self._parts()
                      for name, g in part.grads.items()}
        self._backward_done()
        return dx if input_grad else None

    # ------------------------------------------------------------------ in a model

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: the input shape."""
        return tuple(input_shape)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`: ``x`` is ``(batch, timesteps, d_model)``;
        ``lengths`` masks the padded keys, and ``y`` is 0 at the padded steps."""
        return self._forward(x, lengths, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`."""
        return self._backward(dy, input_grad), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: one timestep ``x_t`` ``(batch, d_model)``; ``causal=True``
        layers only. The state is the self-attention's (see
        :meth:`MultiHeadAttention.step`)."""
        x_t = as_float_array("x_t", x_t, self.dtype, (None, self.d_model))
        states = []

        def attend(h):
            out, new = self.self_attn.step(h, state)
            states.append(new)
            return out

        y, _ = self._block(x_t, attend, False)
        return y, states[0]

    def __repr__(self):
        return (f"TransformerEncoderLayer({self.d_model}, {self.nhead}, "
                f"dim_feedforward={self.dim_feedforward}, activation={self.activation!r}, "
                f"norm_first={self.norm_first}, causal={self.causal}, bias={self.bias}, "
                f"dtype={self.dtype.name!r})")

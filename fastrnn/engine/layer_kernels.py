"""Numba kernels of the attention and normalization layers' training passes (private; imported
lazily, on a layer's first call with ``training=True``, by :mod:`fastrnn.engine.layer_ops`).

Importing this module imports Numba (about 0.45 s, which a call that trains pays anyway for its
backward pass). Every kernel is ``numba.njit(cache=True, nogil=True)`` and works on a range of
rows (``r0..r1``) of arrays that the caller allocated, so that :mod:`~fastrnn.engine.layer_ops`
can split the rows over the engine's OpenMP team. Both dtypes run through the same code:
float32 with the engine's own rational ``tanh`` (the C kernels', same coefficients, absolute
error below 5e-7) and a Cody-Waite ``exp`` (relative error about 1e-7), which the compiler
vectorises; float64 with libm's ``tanh`` and ``exp``.

The kernels and what they replace (each is tested against that NumPy formula):

- :func:`additive_scores`, :func:`additive_backward`: the additive score ``v^T tanh(q_t +
  k_s)`` of :class:`fastrnn.layers.CrossAttention` and its gradients, without the ``(batch,
  query, memory, hidden)`` tensor of ``tanh`` values (the backward pass computes them again);
- :func:`layer_norm_forward`, :func:`layer_norm_backward`: :class:`fastrnn.LayerNorm` in one
  pass over each row (mean and variance in float64, the variance from the centred values);
- :func:`attention_softmax`: the masked softmax of :class:`fastrnn.MultiHeadAttention`'s
  scores, with the scale, the key padding, the causal mask and the padded queries, in place.
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic, overload

#: what the kernels let the compiler do: contract to FMAs, reassociate sums (so that it can
#: vectorise them); no nnan/ninf (NaN and Inf stay honest), no approximate division
_FAST = {"nsz", "contract", "reassoc"}

#: as :data:`fastrnn.layers.attention.EXP_SAFE`: scores within +-this need no shift by the
#: row's max before ``exp``
EXP_SAFE = 60.0


def _jit(**options):
    """``numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", ...)``."""
    return numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy", **options)


# ----------------------------------------------------------------------------------------------
# tanh and exp: vectorisable float32 versions, libm's in float64
# ----------------------------------------------------------------------------------------------

def tanh(x):
    """The kernels' tanh (a stub that Numba replaces by type, see :func:`_tanh_impl`)."""
    raise NotImplementedError


def exp(x):
    """The kernels' exp (a stub that Numba replaces by type, see :func:`_exp_impl`)."""
    raise NotImplementedError


@overload(tanh, inline="always", fastmath=_FAST)
def _tanh_impl(x):
    """float32: the engine's odd [9/8] rational approximation on ``|x| <= 9`` (``fr_tanh_f``
    in ``kernels/fr_isa.c``, same coefficients), the result clamped to [-1, 1], NaN kept;
    float64: libm."""
    if x == types.float32:
        def impl(x):
            if x > np.float32(9.0):
                x = np.float32(9.0)
            if x < np.float32(-9.0):
                x = np.float32(-9.0)
            u = x * x
            p = ((((np.float32(1.318422325100594e-08) * u + np.float32(2.0471829302420864e-05))
                   * u + np.float32(0.0034865817761282497)) * u
                  + np.float32(0.13373197582110807)) * u + np.float32(0.999999906334163))
            q = ((((np.float32(7.702663020739875e-07) * u + np.float32(0.0003271385226798963))
                   * u + np.float32(0.02584197869851762)) * u
                  + np.float32(0.4670649444421864)) * u + np.float32(1.0))
            r = x * p / q
            if r > np.float32(1.0):
                r = np.float32(1.0)
            if r < np.float32(-1.0):
                r = np.float32(-1.0)
            return r
        return impl
    return lambda x: math.tanh(x)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@overload(exp, inline="always", fastmath=_FAST)
def _exp_impl(x):
    """float32: Cephes' ``expf`` (``x = n ln2 + r``, ``|r| <= ln2 / 2``, a degree-7 polynomial
    of ``r``, times ``2^n`` built from its exponent bits), 0 below -87.3, NaN kept (the
    kernels call it on ``x <= 0`` only); float64: libm."""
    if x == types.float32:
        def impl(x):
            z = x
            if z < np.float32(-87.3):
                z = np.float32(-87.3)
            if z > np.float32(88.0):
                z = np.float32(88.0)
            n = np.floor(z * np.float32(1.44269504088896341) + np.float32(0.5))
            r = z - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
            p = ((((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r
                     + np.float32(8.3334519073e-3)) * r + np.float32(4.1665795894e-2)) * r
                   + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)) * r * r
                 + r + np.float32(1.0))
            e = p * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
            if x < np.float32(-87.3):
                e = np.float32(0.0)
            if x != x:
                e = x
            return e
        return impl
    return lambda x: math.exp(x)


@_jit()
def tanh_array(x, out):
    """``out = tanh(x)`` elementwise on 1-D arrays (for the tests of the approximation)."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@_jit()
def exp_array(x, out):
    """``out = exp(x)`` elementwise on 1-D arrays (for the tests of the approximation)."""
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


# ----------------------------------------------------------------------------------------------
# the additive score
# ----------------------------------------------------------------------------------------------

@_jit()
def additive_scores(r0, r1, projected, keys, v, scores):
    """``scores[b, t, s] = v . tanh(projected[b, t] + keys[b, s])`` for the batch rows
    ``r0 <= b < r1``.

    projected (B, Tq, H), keys (B, Tk, H), v (H,): IN; scores (B, Tq, Tk): OUT.
    """
    H = v.shape[0]
    for b in range(r0, r1):
        for t in range(projected.shape[1]):
            q = projected[b, t]
            for s in range(keys.shape[1]):
                k = keys[b, s]
                acc = scores.dtype.type(0.0)
                for j in range(H):
                    acc += v[j] * tanh(q[j] + k[j])
                scores[b, t, s] = acc


@_jit()
def additive_backward(r0, r1, projected, keys, v, dscores, dprojected, dkeys, dv):
    """The gradients of :func:`additive_scores` for the batch rows ``r0 <= b < r1``:
    ``g = dscores[b, t, s] * v * (1 - tanh(projected[b, t] + keys[b, s])^2)`` summed over ``s``
    into ``dprojected[b, t]`` and over ``t`` into ``dkeys[b, s]``; ``dv += sum dscores * tanh``
    (float64, from sums over each batch row in the dtype). The ``tanh`` values are computed
    again; the pairs whose ``dscores`` is 0 (masked memory steps) are skipped.

    projected, keys, v, dscores: IN (as in :func:`additive_scores`); dprojected (B, Tq, H),
    dkeys (B, Tk, H): OUT, overwritten on the rows; dv (H,) float64: IN/OUT.
    """
    H = v.shape[0]
    one = v.dtype.type(1.0)
    g = np.empty(H, v.dtype)         # scratch rows: the compiler knows they alias nothing
    dq = np.empty(H, v.dtype)
    dvb = np.empty(H, v.dtype)
    for b in range(r0, r1):
        dkeys[b, :, :] = 0
        dvb[:] = 0
        for t in range(projected.shape[1]):
            q = projected[b, t]
            dq[:] = 0
            for s in range(keys.shape[1]):
                ds = dscores[b, t, s]
                if ds == 0:
                    continue
                k = keys[b, s]
                for j in range(H):
                    th = tanh(q[j] + k[j])
                    gj = ds * v[j] * (one - th * th)
                    g[j] = gj
                    dq[j] += gj
                    dvb[j] += ds * th
                dk = dkeys[b, s]
                for j in range(H):
                    dk[j] += g[j]
            dprojected[b, t, :] = dq
        for j in range(H):
            dv[j] += dvb[j]


# ----------------------------------------------------------------------------------------------
# layer normalization
# ----------------------------------------------------------------------------------------------

@_jit()
def layer_norm_forward(r0, r1, x, x2, weight, bias, eps, xhat, rstd, y):
    """For the rows ``r0 <= i < r1`` of ``z = x (+ x2)``: ``xhat = (z - mean) / sqrt(var +
    eps)``, ``y = xhat * weight + bias``, the mean and the biased variance of each row in
    float64 (the variance from the centred values).

    x (N, n), x2 (N, n) or (0, n) for none, weight, bias (n,): IN; xhat (N, n), rstd (N,),
    y (N, n): OUT (y may be xhat: then y is written last).
    """
    n = x.shape[1]
    add = x2.shape[0] != 0
    for i in range(r0, r1):
        row = xhat[i]
        total = 0.0
        for j in range(n):
            z = x[i, j] + x2[i, j] if add else x[i, j]
            row[j] = z
            total += z
        mean = total / n
        square = 0.0
        for j in range(n):
            c = row[j] - mean
            square += c * c
        r = 1.0 / math.sqrt(square / n + eps)
        rstd[i] = r
        m = row.dtype.type(mean)
        rr = row.dtype.type(r)
        out = y[i]
        for j in range(n):
            h = (row[j] - m) * rr
            row[j] = h
            out[j] = h * weight[j] + bias[j]


@_jit()
def layer_norm_backward(r0, r1, dy, xhat, rstd, weight, dx, dweight, dbias):
    """The gradients of :func:`layer_norm_forward` for the rows ``r0 <= i < r1``: ``dx = rstd
    * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))`` with ``dxhat = dy * weight``;
    ``dweight += sum dy * xhat``, ``dbias += sum dy`` (float64).

    dy, xhat (N, n), rstd (N,), weight (n,): IN; dx (N, n): OUT (may be dy); dweight,
    dbias (n,) float64: IN/OUT.
    """
    n = dy.shape[1]
    for i in range(r0, r1):
        g = dy[i]
        h = xhat[i]
        s1 = 0.0
        s2 = 0.0
        for j in range(n):
            d = g[j] * weight[j]
            s1 += d
            s2 += d * h[j]
            dweight[j] += g[j] * h[j]
            dbias[j] += g[j]
        m1 = dy.dtype.type(s1 / n)
        m2 = dy.dtype.type(s2 / n)
        r = dy.dtype.type(rstd[i])
        out = dx[i]
        for j in range(n):
            out[j] = r * (g[j] * weight[j] - m1 - h[j] * m2)


# ----------------------------------------------------------------------------------------------
# the masked softmax of self-attention
# ----------------------------------------------------------------------------------------------

@_jit()
def attention_softmax(r0, r1, scores, scale, lengths, causal):
    """In place, for the rows ``r0 <= r < r1`` of ``scores`` seen as ``(B * heads, T, T)``:
    ``softmax(scale * scores[r, t, :limit])`` with ``limit = lengths[b]`` (the valid keys of
    batch row ``b = r // heads``; ``lengths`` of length 0: all ``T``), and ``t + 1`` at most
    if ``causal``; 0 past the limit, and whole rows of 0 for the padded queries ``t >=
    lengths[b]``. A NaN score makes its row NaN.

    A row whose scaled scores are all within ``+-EXP_SAFE`` goes through ``exp`` as it is (a
    softmax does not change when its row is shifted; the shift by the row's max only keeps
    ``exp`` in range, and that max is a slow, unvectorised reduction); the others are shifted
    by their max.

    scores (B, heads, T, T): IN/OUT; lengths (B,) int64 or (0,).
    """
    heads = scores.shape[1]
    T = scores.shape[2]
    Tk = scores.shape[3]
    zero = scores.dtype.type(0.0)
    one = scores.dtype.type(1.0)
    sc = scores.dtype.type(scale)
    safe = scores.dtype.type(EXP_SAFE)
    for r in range(r0, r1):
        b = r // heads
        w = scores[b, r - b * heads]
        valid = Tk if lengths.shape[0] == 0 else lengths[b]
        for t in range(T):
            row = w[t]
            limit = valid
            if causal and t + 1 < limit:
                limit = t + 1
            if t >= valid:       # a padded query: attends to nothing
                limit = 0
            if limit > 0:
                for s in range(limit):
                    row[s] *= sc
                outside = False
                for s in range(limit):
                    x = row[s]
                    outside |= not (x >= -safe and x <= safe)    # NaN too
                top = zero
                if outside:
                    top = row[0]
                    nan = False
                    for s in range(limit):
                        if row[s] > top:
                            top = row[s]
                        nan |= row[s] != row[s]
                    if nan:
                        top = scores.dtype.type(np.nan)
                for s in range(limit):
                    row[s] = exp(row[s] - top)
                total = zero
                for s in range(limit):
                    total += row[s]
                inv = one / total
                for s in range(limit):
                    row[s] *= inv
            for s in range(limit, Tk):
                row[s] = zero


@_jit()
def attention_softmax_backward(r0, r1, dweights, weights, scale):
    """In place, for the rows ``r0 <= r < r1`` of ``(B * heads * T, T)``: the gradient on the
    scores (before the scale) from the gradient on the weights, ``dweights = scale * weights *
    (dweights - sum(dweights * weights))`` (entries of weight 0, masked, get 0).

    dweights (B, heads, T, T): IN/OUT; weights (B, heads, T, T): IN.
    """
    d = dweights.reshape(-1, dweights.shape[3])
    w = weights.reshape(-1, weights.shape[3])
    sc = dweights.dtype.type(scale)
    for r in range(r0, r1):
        g = d[r]
        a = w[r]
        total = dweights.dtype.type(0.0)
        for s in range(g.shape[0]):
            total += g[s] * a[s]
        for s in range(g.shape[0]):
            g[s] = sc * a[s] * (g[s] - total)


# ----------------------------------------------------------------------------------------------
# the feed-forward block's activation
# ----------------------------------------------------------------------------------------------

@_jit()
def bias_relu(r0, r1, a, bias):
    """In place, for the rows ``r0 <= i < r1``: ``a = relu(a + bias)`` (NaN kept, as
    ``np.maximum``). a (N, n): IN/OUT; bias (n,): IN."""
    zero = a.dtype.type(0.0)
    for i in range(r0, r1):
        row = a[i]
        for j in range(row.shape[0]):
            z = row[j] + bias[j]
            row[j] = zero if z < zero else z


@_jit()
def relu_backward(r0, r1, da, a):
    """In place, for the rows ``r0 <= i < r1``: ``da = da * (a > 0)``, ``a`` the relu's
    output. da (N, n): IN/OUT; a (N, n): IN."""
    zero = da.dtype.type(0.0)
    for i in range(r0, r1):
        g = da[i]
        out = a[i]
        for j in range(g.shape[0]):
            g[j] = g[j] if out[j] > zero else zero

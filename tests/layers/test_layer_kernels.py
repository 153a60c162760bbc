"""The Numba kernels of the attention and normalization layers' training passes
(``fastrnn.engine.layer_kernels`` through ``layer_ops``) against the NumPy formulas they
replace, in float32 and float64, on odd sizes, on one thread and split over two; and the layers
that use them against their NumPy path (``layer_ops.available`` off)."""
import numpy as np
import pytest

import fastrnn
from fastrnn import engine
from fastrnn.layers.attention import softmax_reference

pytestmark = pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")

if engine.AVAILABLE:
    from fastrnn.engine import layer_ops

DTYPES = ["float32", "float64"]
#: how close to the float64 formula: float32 rounding (and the engine's tanh, 5e-7) or float64
TOL = {"float32": 2e-5, "float64": 1e-12}


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    """The kernels on one thread, or split over two (every call, however small)."""
    before = engine.get_num_threads()
    engine.set_num_threads(request.param)
    monkeypatch.setattr(layer_ops, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(layer_ops, "USE_TEAM", True)
    yield request.param
    engine.set_num_threads(before)


def _close(got, want, dtype):
    want = np.asarray(want, np.float64)
    scale = max(np.abs(want).max(), 1e-30)
    assert np.abs(np.asarray(got, np.float64) - want).max() / scale < TOL[dtype]


# ---------------------------------------------------------------------- tanh and exp

def test_float32_tanh_and_exp_are_within_their_bounds():
    k = layer_ops.kernels()
    x = np.linspace(-20, 20, 400001).astype(np.float32)
    out = np.empty_like(x)
    k.tanh_array(x, out)
    assert np.abs(out - np.tanh(x.astype(np.float64))).max() < 5e-7
    assert np.abs(out).max() <= 1.0
    x = np.linspace(-87, 0.5, 400001).astype(np.float32)
    k.exp_array(x, out := np.empty_like(x))
    want = np.exp(x.astype(np.float64))
    assert (np.abs(out - want) / want).max() < 3e-7
    special = np.array([np.nan, -np.inf, -1e4, -88.0, 0.0], np.float32)
    k.exp_array(special, out := np.empty_like(special))
    assert np.isnan(out[0]) and out[1] == out[2] == out[3] == 0 and out[4] == 1
    k.tanh_array(np.array([np.nan, np.inf, -np.inf], np.float32), out := np.empty(3, np.float32))
    assert np.isnan(out[0]) and abs(out[1] - 1) < 5e-7 and abs(out[2] + 1) < 5e-7


def test_float64_tanh_and_exp_are_libm():
    k = layer_ops.kernels()
    x = np.linspace(-30, 5, 10001)
    out = np.empty_like(x)
    k.tanh_array(x, out)
    np.testing.assert_allclose(out, np.tanh(x), rtol=5e-16, atol=0)     # 1 ulp (NumPy's own)
    k.exp_array(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=4e-16, atol=0)


# ---------------------------------------------------------------------- additive score

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, tq, tk, h", [(1, 1, 1, 1), (3, 5, 7, 9), (2, 4, 3, 17)])
def test_additive_score_and_its_gradients_equal_the_formula(dtype, batch, tq, tk, h, threads,
                                                           rng):
    projected, keys = (rng.standard_normal((batch, n, h)).astype(dtype) for n in (tq, tk))
    v = rng.standard_normal(h).astype(dtype)
    dscores = rng.standard_normal((batch, tq, tk)).astype(dtype)
    dscores[:, :, -1] = 0                       # a masked memory step: skipped
    hidden = np.tanh(projected[:, :, None, :].astype(np.float64) + keys[:, None, :, :])
    _close(layer_ops.additive_scores(projected, keys, v), hidden @ v, dtype)
    dhidden = (1 - hidden * hidden) * v * dscores[..., None]
    dprojected, dkeys, dv = layer_ops.additive_backward(projected, keys, v, dscores)
    assert dprojected.dtype == dkeys.dtype == dv.dtype == np.dtype(dtype)
    _close(dprojected, dhidden.sum(axis=2), dtype)
    _close(dkeys, dhidden.sum(axis=1), dtype)
    _close(dv, (dscores[..., None] * hidden).sum(axis=(0, 1, 2)), dtype)


# ---------------------------------------------------------------------- layer norm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n", [(1, 1), (7, 13), (33, 128)])
@pytest.mark.parametrize("residual", [False, True])
def test_layer_norm_kernels_equal_the_formula(dtype, rows, n, residual, threads, rng):
    x = (3 * rng.standard_normal((rows, n)) + 2).astype(dtype)
    x2 = rng.standard_normal((rows, n)).astype(dtype) if residual else None
    weight, bias = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    z = x.astype(np.float64) + (0 if x2 is None else x2)
    rstd = 1 / np.sqrt(z.var(axis=1, keepdims=True) + 1e-3)
    xhat = (z - z.mean(axis=1, keepdims=True)) * rstd
    got_xhat, got_rstd, y = layer_ops.layer_norm_forward(x, x2, weight, bias, 1e-3)
    _close(got_xhat, xhat, dtype)
    _close(got_rstd, rstd[:, 0], dtype)
    _close(y, xhat * weight + bias, dtype)
    dy = rng.standard_normal((rows, n)).astype(dtype)
    dxhat = dy * weight.astype(np.float64)
    dx = rstd * (dxhat - dxhat.mean(axis=1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    got_dx, dweight, dbias = layer_ops.layer_norm_backward(dy, got_xhat, got_rstd, weight)
    assert got_dx.dtype == dweight.dtype == dbias.dtype == np.dtype(dtype)
    if n > 1:                                   # n == 1: dx is rounding noise around 0
        _close(got_dx, dx, dtype)
    _close(dweight, (dy * xhat).sum(axis=0), dtype)
    _close(dbias, dy.sum(axis=0), dtype)


def test_layer_norm_kernel_variance_survives_a_large_mean():
    """Rows of 1e4 + small noise in float32: the variance from the centred values, summed in
    float64, is the float64 one; sum(x^2) - mean^2 would have lost every digit."""
    rng = np.random.default_rng(0)
    x = (1e4 + 1e-2 * rng.standard_normal((5, 64))).astype(np.float32)
    _, rstd, _ = layer_ops.layer_norm_forward(x, None, np.ones(64, np.float32),
                                              np.zeros(64, np.float32), 1e-12)
    want = 1 / np.sqrt(x.astype(np.float64).var(axis=1) + 1e-12)
    np.testing.assert_allclose(rstd, want, rtol=1e-6)


# ---------------------------------------------------------------------- softmax

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_softmax_equals_the_reference(dtype, causal, padded, threads, rng):
    batch, heads, t = 3, 2, 7
    scores = (4 * rng.standard_normal((batch, heads, t, t))).astype(dtype)
    scores[0, 1, 2, 0] = 500.0                  # a row shifted by its max
    lengths = np.array([7, 1, 4]) if padded else None
    allowed = np.ones((batch, 1, t, t), bool)
    if padded:
        allowed &= (np.arange(t) < lengths[:, None])[:, None, None, :]
    if causal:
        allowed = allowed & np.tri(t, dtype=bool)
    want = softmax_reference(0.3 * scores.astype(np.float64), allowed)
    if padded:                                  # padded queries attend to nothing
        want = want * (np.arange(t) < lengths[:, None])[:, None, :, None]
    got = layer_ops.attention_softmax(scores.copy(), 0.3, lengths, causal)
    _close(got, want, dtype)
    dweights = rng.standard_normal(got.shape).astype(dtype)
    w = got.astype(np.float64)
    dscores = 0.3 * w * (dweights - (dweights * w).sum(axis=-1, keepdims=True))
    _close(layer_ops.attention_softmax_backward(dweights.copy(), got, 0.3), dscores, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_softmax_keeps_a_nan_in_its_row(dtype):
    scores = np.zeros((1, 1, 2, 3), dtype)
    scores[0, 0, 1, 2] = np.nan
    got = layer_ops.attention_softmax(scores, 1.0, None, False)
    np.testing.assert_allclose(got[0, 0, 0], 1 / 3)
    assert np.isnan(got[0, 0, 1]).all()


# ---------------------------------------------------------------------- relu

@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_and_its_backward_equal_numpy(dtype, threads, rng):
    a = rng.standard_normal((9, 11)).astype(dtype)
    a[0, :3] = [0.0, np.nan, -0.0]
    bias = rng.standard_normal(11).astype(dtype)
    bias[:3] = 0
    want = np.maximum(a + bias, 0)
    got = layer_ops.bias_relu(a.copy(), bias)
    np.testing.assert_array_equal(got, want)            # NaN where NumPy has it
    da = rng.standard_normal(a.shape).astype(dtype)
    np.testing.assert_array_equal(layer_ops.relu_backward(da.copy(), got), da * (want > 0))
    np.testing.assert_array_equal(layer_ops.bias_relu(a.copy(), None), np.maximum(a, 0))


# ---------------------------------------------------------------------- the products

@pytest.mark.parametrize("dtype", DTYPES)
def test_products_equal_numpy_on_any_layout(dtype, threads, rng):
    """``layer_ops.matmul``, ``linear`` and ``bmm`` (the layers' products on the engine's GEMM):
    transposed views, a last axis with a stride (copied), ``out`` with strided rows or a
    strided last axis; NumPy's product for what the engine does not take (mixed dtypes)."""
    def close(got, want):
        _close(got, want, dtype)

    a = rng.standard_normal((37, 70)).astype(dtype)
    w = rng.standard_normal((50, 70)).astype(dtype)
    close(layer_ops.matmul(a, w, trans_b=True), a @ w.T)
    close(layer_ops.matmul(a, w.T), a @ w.T)                       # a transposed view
    close(layer_ops.matmul(a.T, w.T, trans_a=True), a @ w.T)          # both
    close(layer_ops.matmul(a[:, ::2], w[:, ::2], trans_b=True), a[:, ::2] @ w[:, ::2].T)
    out = np.full((37, 60), np.nan, dtype)[:, 5:55]                  # strided rows
    assert layer_ops.matmul(a, w, trans_b=True, out=out) is out
    close(out, a @ w.T)
    out = np.full((50, 37), np.nan, dtype).T                          # a strided last axis
    layer_ops.matmul(a, w, trans_b=True, out=out)
    close(out, a @ w.T)
    x = rng.standard_normal((3, 4, 70)).astype(dtype)
    b = rng.standard_normal(50).astype(dtype)
    close(layer_ops.linear(x, w, b), x @ w.T + b)
    close(layer_ops.linear(x, w), x @ w.T)
    for out in (np.full((3, 4, 50), np.nan, dtype), np.full((4, 3, 50), np.nan, dtype)
                .transpose(1, 0, 2)):                                 # one matrix, or not
        assert layer_ops.linear(x, w, b, out=out) is out
        close(out, x @ w.T + b)
    q = rng.standard_normal((2, 5, 3, 9)).transpose(0, 2, 1, 3).astype(dtype)   # heads
    k = rng.standard_normal((2, 3, 6, 9)).astype(dtype)
    close(layer_ops.bmm(q, k, trans_b=True), q @ k.swapaxes(-1, -2))
    out = np.full((2, 6, 3, 5), np.nan, dtype).transpose(0, 2, 3, 1)           # strided
    layer_ops.bmm(q, k, trans_b=True, out=out)
    close(out, q @ k.swapaxes(-1, -2))
    close(layer_ops.bmm(k, k, trans_a=True), k.swapaxes(-1, -2) @ k)
    other = w.astype(np.float64 if dtype == "float32" else np.float32)
    mixed = layer_ops.matmul(a, other, trans_b=True)
    assert mixed.dtype == np.float64
    close(mixed, a.astype(np.float64) @ other.T.astype(np.float64))


# ---------------------------------------------------------------------- the layers

def _numpy_path(monkeypatch):
    monkeypatch.setattr(layer_ops, "available", lambda: False)


def _train(layer, x, dy, lengths=None):
    kw = {} if lengths is None else {"lengths": lengths}
    y = layer(x, training=True, **kw)
    dx = layer.backward(dy)
    return y, dx, {name: g.copy() for name, g in layer.grads.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda dtype: fastrnn.LayerNorm(7, dtype=dtype),
    lambda dtype: fastrnn.LayerNorm(7, elementwise_affine=False, dtype=dtype),
    lambda dtype: fastrnn.MultiHeadAttention(6, 3, dtype=dtype, seed=1),
    lambda dtype: fastrnn.MultiHeadAttention(6, 2, causal=True, bias=False, dtype=dtype, seed=1),
    lambda dtype: fastrnn.TransformerEncoderLayer(6, 2, 9, dtype=dtype, seed=1),
    lambda dtype: fastrnn.TransformerEncoderLayer(6, 3, 5, norm_first=True, bias=False,
                                                  dtype=dtype, seed=1),
], ids=["layernorm", "layernorm-plain", "mha", "mha-causal-nobias", "encoder",
        "encoder-prenorm-nobias"])
def test_training_calls_on_the_kernels_equal_the_numpy_path(make, dtype, monkeypatch, rng):
    layer = make(dtype)
    layer.load_state_dict({name: 0.5 * rng.standard_normal(p.shape)
                           for name, p in layer.parameters().items()})
    features = 7 if isinstance(layer, fastrnn.LayerNorm) else 6
    x = rng.standard_normal((3, 5, features))
    dy = rng.standard_normal((3, 5, features))
    lengths = None if isinstance(layer, fastrnn.LayerNorm) else np.array([5, 2, 4])
    fast = _train(layer, x, dy, lengths)
    with monkeypatch.context() as m:
        _numpy_path(m)
        slow = _train(layer, x, dy, lengths)
    for got, want in zip(fast[:2], slow[:2]):
        _close(got, want, dtype)
    assert list(fast[2]) == list(slow[2])
    for name in slow[2]:
        _close(fast[2][name], slow[2][name], dtype)


def test_what_a_training_call_returns_is_not_reused_by_the_next(rng):
    """The buffers a layer reuses between training calls never escape: outputs, input
    gradients, grads and returned attention weights of one step survive the next step."""
    for layer in (fastrnn.MultiHeadAttention(8, 2, seed=0),
                  fastrnn.TransformerEncoderLayer(8, 2, 16, seed=0)):
        x1, x2 = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
        kept = _train(layer, x1, np.ones_like(x1))
        copies = (kept[0].copy(), kept[1].copy(), {k: g.copy() for k, g in kept[2].items()})
        _train(layer, x2, -np.ones_like(x2))
        np.testing.assert_array_equal(kept[0], copies[0])
        np.testing.assert_array_equal(kept[1], copies[1])
        for name, g in kept[2].items():
            np.testing.assert_array_equal(g, copies[2][name])
    mha = fastrnn.MultiHeadAttention(8, 2, seed=0)
    _, weights = mha(x1, training=True, return_weights=True)
    before = weights.copy()
    mha.backward(np.ones_like(x1))
    mha(x2, training=True)
    np.testing.assert_array_equal(weights, before)


def test_a_copied_layer_shares_no_buffers(rng):
    import copy
    layer = fastrnn.MultiHeadAttention(8, 2, seed=0)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    _train(layer, x, np.ones_like(x))
    assert layer._workspace and not copy.deepcopy(layer)._workspace


@pytest.mark.parametrize("dtype", DTYPES)
def test_seq2seq_additive_attention_compiled_equals_reference(dtype, rng):
    """The compiled backend's fused additive score against the reference's 4-D tensor."""
    src = rng.integers(3, 9, size=(4, 7))
    tgt = rng.integers(3, 9, size=(4, 5))
    src_len, tgt_len = np.array([7, 3, 5, 1]), np.array([5, 2, 4, 1])
    out = []
    for backend in ("reference", "compiled"):
        model = fastrnn.EncoderDecoder(9, 9, 4, 6, attention="bahdanau", dtype=dtype, seed=3,
                                       backend=backend)
        for p in model.attention.parameters().values():
            p *= 3.0
        model._set_training("cce", "sgd")
        loss = model._train_step(src, src_len, tgt, tgt_len)
        out.append((loss, {k: g.copy() for k, g in model.grads().items()}))
    (loss_r, grads_r), (loss_c, grads_c) = out
    assert loss_c == pytest.approx(loss_r, rel=TOL[dtype])
    for name, g in grads_r.items():
        _close(grads_c[name], g, dtype)

"""One parity test per compiled entry point, against its reference twin, on every instruction
set this CPU runs: the forward (``engine.forward.forward`` / ``reference.forward``), BPTT
(``engine.bptt.backward`` / ``reference.backward``), streaming (``engine.stream.make_stepper``
/ the reference forward one step at a time) and the GEMMs (``engine.gemm.matmul``,
``engine.gemm.bmm`` / ``numpy.matmul``). The other files of ``tests/engine`` go deeper into
each; this one is the table, and ``test_every_entry_point_has_a_parity_test`` keeps it
complete."""
import numpy as np
import pytest

from conftest import has_c, VARIANTS, engine_cell, make_weights, rel_err, state_size

CELLS = VARIANTS            # the cells, and the projected LSTM
from fastrnn import reference

_compiled = pytest.importorskip("fastrnn.engine._compiled", reason="compiled engine not built")
from fastrnn.engine import bptt, forward, gemm, stream  # noqa: E402

pytestmark = pytest.mark.usefixtures("isa")

TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}
#: entry point -> its reference twin (the modules' __all__ must not name anything else)
TWINS = {
    "fastrnn.engine.forward.forward": "fastrnn.reference.forward",
    "fastrnn.engine.bptt.backward": "fastrnn.reference.backward",
    "fastrnn.engine.stream.make_stepper": "fastrnn.reference.forward, one step at a time",
    "fastrnn.engine.gemm.matmul": "numpy.matmul",
    "fastrnn.engine.gemm.bmm": "numpy.matmul over the leading axes",
}
#: public names of the engine modules that are not entry points into compiled code
NOT_ENTRY_POINTS = {"fastrnn.engine.stream.Stepper", "fastrnn.engine.gemm.SWAP_MAX_N",
                    "fastrnn.engine.bptt.workspace_from_reference",
                    "fastrnn.engine.forward.PackedWeights"}   # an argument of forward
#: (B, T, I, H, num_layers, bidirectional, variable lengths): batch 1, length 1, odd sizes,
#: stacked, both directions, lengths below T
SHAPES = [(1, 1, 1, 1, 1, False, False), (3, 5, 7, 9, 2, True, True), (4, 6, 17, 33, 1, False, True)]


def case(cell, dtype, shape, seed=0):
    B, T, I, H, L, bidi, varlen = shape
    rng = np.random.default_rng(seed)
    D = 2 if bidi else 1
    w = make_weights(cell, I, H, L, D, True, dtype, rng)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, state_size(cell, H))).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if has_c(cell) else None
    lengths = rng.integers(1, T + 1, B).astype(np.int64) if varlen else None
    return w, x, h0, c0, lengths, dict(num_layers=L, bidirectional=bidi), rng


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward(cell, dtype, shape):
    w, x, h0, c0, lengths, kw, _ = case(cell, dtype, shape)
    cell = engine_cell(cell)
    want = reference.forward(cell, x, w, h0, c0, lengths, **kw)
    packed = forward.PackedWeights()
    for how in ({}, {"packed": packed}, {"packed": packed}):  # packing, then reusing it
        got = forward.forward(cell, x, w, h0, c0, lengths, **kw, **how)
        for g, r in zip(got[:3], want[:3]):
            assert rel_err(g, r) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward(cell, dtype, shape):
    w, x, h0, c0, lengths, kw, rng = case(cell, dtype, shape)
    cell = engine_cell(cell)
    y, h_n, c_n, ws = forward.forward(cell, x, w, h0, c0, lengths, **kw, training=True)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    dc_n = rng.standard_normal(c_n.shape).astype(dtype) if has_c(cell) else None
    dx, dh0, dc0, grads = bptt.backward(cell, w, ws, dy, dh_n, dc_n)
    cache = reference.forward(cell, x, w, h0, c0, lengths, **kw)[3]
    want_dx, want_dh0, want_dc0, want_grads = reference.backward(cache, dy, dh_n, dc_n)
    tol = 50 * TOL[np.dtype(dtype)]      # sums over T and B steps
    for got_, want_ in ((dx, want_dx), (dh0, want_dh0), (dc0, want_dc0)):
        assert rel_err(got_, want_) <= tol
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        assert rel_err(g, want_grads[name], floor=1e-3) <= tol, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_stream(cell, dtype):
    w, x, h0, c0, _, kw, _ = case(cell, dtype, (3, 4, 5, 7, 2, False, False))
    cell = engine_cell(cell)
    stepper = stream.make_stepper(cell, w, kw["num_layers"])
    h, c, ys = h0, c0, []
    for t in range(x.shape[1]):
        y_t, h, c = stepper.step(np.ascontiguousarray(x[:, t]), h, c)
        ys.append(y_t)
    y, h_n, c_n, _ = reference.forward(cell, x, w, h0, c0, **kw)
    assert rel_err(np.stack(ys, axis=1), y) <= TOL[np.dtype(dtype)]
    assert rel_err(h, h_n) <= TOL[np.dtype(dtype)]
    assert rel_err(c, c_n) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (5, 3, 17), (33, 130, 65)])
def test_gemm(dtype, M, K, N):
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    assert rel_err(gemm.matmul(a, b), a @ b) <= TOL[np.dtype(dtype)] * K


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", [1, 2, 4, 6, 8])
def test_gemm_of_one_tile_of_rows_has_the_same_bits_in_consecutive_calls(dtype, M):
    """A thread's consecutive products of one tile of rows read the weight panels in
    alternating order (the cache keeps the last ones read): each call is right, and two calls
    in a row agree bit for bit (several panels and a ragged last one on every target)."""
    rng = np.random.default_rng(M)
    a = rng.standard_normal((M, 37)).astype(dtype)
    b = rng.standard_normal((37, 200)).astype(dtype)
    from fastrnn import engine
    threads = engine.get_num_threads()
    engine.set_num_threads(1)       # both calls on this thread
    try:
        first, second = gemm.matmul(a, b), gemm.matmul(a, b)
    finally:
        engine.set_num_threads(threads)
    assert rel_err(first, a @ b) <= TOL[np.dtype(dtype)] * 37
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(145, 257, 33), (300, 600, 70), (433, 129, 300)])
def test_gemm_across_blocks(dtype, M, K, N):
    """Shapes past one block of rows (128-144, by target) and of K (256-512): the packed micro-panels
    of A, the C tiles added to over several K blocks, the ragged last panel; transposed and
    accumulating too."""
    rng = np.random.default_rng(M * K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    tol = TOL[np.dtype(dtype)] * K
    assert rel_err(gemm.matmul(a, b), a @ b) <= tol
    at = np.ascontiguousarray(a.T)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    out = c0.copy()
    assert gemm.matmul(at, b, trans_a=True, out=out) is out
    assert rel_err(out, c0 + a @ b) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (7, 33, 19), (150, 600, 70)])
def test_gemm_transposed_b(dtype, M, K, N):
    """``op(b) = b.T`` (the layers' ``x @ W.T``), b's rows strided, op(a) plain and
    transposed: W^T packed from W's rows, K past one block, the ragged last panel."""
    rng = np.random.default_rng(M + 3 * K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((N, K + 5)).astype(dtype)[:, 2:K + 2]
    tol = TOL[np.dtype(dtype)] * K
    assert rel_err(gemm.matmul(a, b, trans_b=True), a @ b.T) <= tol
    assert rel_err(gemm.matmul(np.ascontiguousarray(a.T), b, trans_a=True, trans_b=True),
                   a @ b.T) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("lead, M, K, N", [((1,), 1, 1, 1), ((3, 2), 5, 7, 9),
                                           ((2, 4), 64, 32, 64), ((5,), 13, 600, 40)])
def test_bmm(dtype, trans_a, trans_b, lead, M, K, N):
    """``bmm`` = ``np.matmul`` over one or two leading axes (attention's heads), on strided
    views (every axis but the last) and into a strided ``out``."""
    rng = np.random.default_rng(M * K + N)
    a = rng.standard_normal(lead + ((K, M + 3) if trans_a else (M, K + 3))).astype(dtype)
    a = a[..., 1:M + 1] if trans_a else a[..., 1:K + 1]
    b = rng.standard_normal(lead + ((N, K) if trans_b else (K, N))).astype(dtype)
    b = b.swapaxes(0, 1).copy().swapaxes(0, 1) if len(lead) == 2 else b
    want = np.matmul(a.swapaxes(-1, -2) if trans_a else a, b.swapaxes(-1, -2) if trans_b else b)
    tol = TOL[np.dtype(dtype)] * K
    assert rel_err(gemm.bmm(a, b, trans_a, trans_b), want) <= tol
    out = np.full(lead + (M, N + 3), np.nan, dtype)[..., 2:N + 2]     # rows N + 3 apart
    assert gemm.bmm(a, b, trans_a, trans_b, out=out) is out
    assert rel_err(out, want) <= tol


def test_every_entry_point_has_a_parity_test():
    """A new public name in an engine module needs a twin here (or a reason in
    NOT_ENTRY_POINTS)."""
    public = {f"{m.__name__}.{name}" for m in (forward, bptt, stream, gemm) for name in m.__all__}
    assert public == set(TWINS) | NOT_ENTRY_POINTS

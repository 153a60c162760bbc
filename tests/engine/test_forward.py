"""The compiled forward engine (fastrnn.engine.forward, .stream, ._compiled) equals the NumPy reference.

Tolerances: float64 max abs error <= 1e-10 relative to the max abs of the output (the engine uses
exact libm activations in float64); float32 <= 1e-5 (the float32 tanh/sigmoid approximations are
bounded separately below).  Weights use PyTorch's default scale U(-1/sqrt(H), 1/sqrt(H)), under
which float32 itself is well conditioned (with much larger weights a tanh RNN becomes chaotic and
float32 rounding alone, in the reference as much as here, exceeds 1e-5).
"""
import math
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrnn import reference
from fastrnn.cell_table import cell_spec, state_sizes

_compiled = pytest.importorskip("fastrnn.engine._compiled", reason="compiled engine not built")
from fastrnn import engine  # noqa: E402  (only reached when the extension is built)
from fastrnn.engine import bptt, gemm, stream  # noqa: E402,F401
from fastrnn.engine import plan as engine_plan  # noqa: E402,F401
from fastrnn.engine.forward import PackedWeights  # noqa: E402
from fastrnn.engine.forward import forward as engine_forward  # noqa: E402,F401

#: every test here runs on the kernels of every instruction set this CPU can run
pytestmark = pytest.mark.usefixtures("isa")

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "rnn_leaky_relu", "lstm_peephole",
         "gru_reset_before", "lstm_proj"]
from conftest import has_c, GATES, engine_cell, make_weights, rel_err, state_size
TOL = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.fixture(autouse=True)
def _restore_threads():
    n = engine.get_num_threads()
    yield
    engine.set_num_threads(n)


def make_case(cell, B, T, I, H, L, D, dtype, rng, *, varlen=False, init=False, bias=True):
    w = make_weights(cell, I, H, L, D, bias, dtype, rng)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, state_size(cell, H))).astype(dtype) if init else None
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if init and has_c(cell) else None
    lengths = None
    if varlen:
        lengths = rng.integers(1, T + 1, B).astype(np.int64)
        lengths[rng.integers(B)] = T if T > 1 else 1
        rng.shuffle(lengths)
    return x, w, h0, c0, lengths


def check_against_reference(cell, x, w, h0, c0, lengths, L, D, *, plan=None, training=True):
    dtype = x.dtype.type
    cell = engine_cell(cell)        # (the projected LSTM: "lstm" with weight_hr_l{k})
    ref = reference.forward(cell, x, w, h0, c0, lengths, num_layers=L, bidirectional=D == 2)
    out = engine_forward(cell, x, w, h0, c0, lengths, num_layers=L, bidirectional=D == 2,
                          training=training, _plan_override=plan)
    y, h_n, c_n, ws = out
    assert y.dtype == x.dtype and h_n.dtype == x.dtype
    assert y.shape == ref[0].shape and h_n.shape == ref[1].shape
    assert rel_err(y, ref[0]) <= TOL[dtype]
    assert rel_err(h_n, ref[1]) <= TOL[dtype]
    if has_c(cell):
        assert c_n.shape == ref[2].shape
        assert rel_err(c_n, ref[2]) <= TOL[dtype]
    else:
        assert c_n is None
    if lengths is not None:
        T = x.shape[1]
        pad = np.arange(T)[None, :] >= lengths[:, None]
        assert np.all(y[pad] == 0)
    if training:
        check_workspace(cell, x, w, h0, c0, lengths, L, D, y, ws)
    else:
        assert ws is None
    return out


def check_workspace(cell, x, w, h0, c0, lengths, L, D, y, ws):
    """The workspace is what BPTT needs, and it is self-consistent with the cell equations."""
    B, T, _ = x.shape
    H, P = state_sizes(w)           # P: the width of h (a projected LSTM's proj_size)
    G = GATES[cell]
    tol = TOL[x.dtype.type] * 10
    assert ws["num_layers"] == L and ws["num_directions"] == D and ws["hidden_size"] == H
    assert ws["proj_size"] == P
    assert ws["cell"] == cell and ws["x"] is x and ws["h0"] is h0
    assert ws["c0"] is (c0 if has_c(cell) else None)
    assert len(ws["outputs"]) == L and ws["outputs"][-1] is y
    lens = ws["lengths"]
    valid = np.arange(T)[None, :] < lens[:, None]
    inp = x
    for layer in range(L):
        out = ws["outputs"][layer]
        assert out.shape == (B, T, D * P)
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            hseq = out[:, :, d * P:(d + 1) * P]
            # previous state of every valid step: h at t-1 (forward) / t+1 (reverse), or h0
            hprev = np.zeros_like(hseq)
            init = h0[layer * D + d] if h0 is not None else np.zeros((B, P), x.dtype)
            for b in range(B):
                n = lens[b]
                if d == 0:
                    hprev[b, 0] = init[b]
                    hprev[b, 1:n] = hseq[b, :n - 1]
                else:
                    hprev[b, n - 1] = init[b]
                    hprev[b, :n - 1] = hseq[b, 1:n]
            zx = inp @ w["weight_ih" + sfx].T.astype(np.float64)
            zh = hprev @ w["weight_hh" + sfx].T.astype(np.float64)
            if "bias_ih" + sfx in w:
                zx = zx + w["bias_ih" + sfx]
                zh = zh + w["bias_hh" + sfx]
            if cell.startswith("rnn"):
                assert ws["gates"] is None
                z = zx + zh
                act = {"rnn_tanh": np.tanh(z), "rnn_relu": np.maximum(z, 0),
                       "rnn_leaky_relu": np.where(z < 0, 0.01 * z, z)}[cell]
                assert np.abs((act - hseq)[valid]).max() <= tol
                continue
            gates = ws["gates"][layer][d]
            assert gates.shape == (B, T, G * H)
            assert np.all(gates[~valid] == 0)
            sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
            if has_c(cell):
                z = zx + zh
                c = ws["c"][layer][d]
                if cell == "lstm_peephole":     # i, f read c_{t-1}; o reads c_t
                    cprev = np.zeros_like(c)
                    cinit = c0[layer * D + d] if c0 is not None else np.zeros((B, H), x.dtype)
                    for b in range(B):
                        n = lens[b]
                        if d == 0:
                            cprev[b, 0], cprev[b, 1:n] = cinit[b], c[b, :n - 1]
                        else:
                            cprev[b, n - 1], cprev[b, :n - 1] = cinit[b], c[b, 1:n]
                    p = w["weight_peephole" + sfx]
                    z = z + np.concatenate([p[:H] * cprev, p[H:2 * H] * cprev, 0 * cprev,
                                            p[2 * H:] * c], axis=-1)
                expect = np.concatenate([sig(z[..., :2 * H]), np.tanh(z[..., 2 * H:3 * H]),
                                         sig(z[..., 3 * H:])], axis=-1)
                assert np.abs((gates - expect)[valid]).max() <= tol
                assert np.all(c[~valid] == 0)
                o = gates[..., 3 * H:]
                m = o * np.tanh(c)
                if P != H:                  # h = m W_hr^T
                    m = m @ w["weight_hr" + sfx].T.astype(np.float64)
                assert np.abs((m - hseq)[valid]).max() <= tol
                assert ws["hn"] is None
            else:
                hn = ws["hn"][layer][d]
                r = sig(zx[..., :H] + zh[..., :H])
                zz = sig(zx[..., H:2 * H] + zh[..., H:2 * H])
                if cell == "gru_reset_before":  # hn keeps r * h_prev, which W_hn reads
                    assert np.abs((hn - r * hprev)[valid]).max() <= tol
                    w_hn = w["weight_hh" + sfx][2 * H:].T.astype(np.float64)
                    b_hn = w["bias_hh" + sfx][2 * H:] if "bias_hh" + sfx in w else 0
                    n = np.tanh(zx[..., 2 * H:] + (r * hprev) @ w_hn + b_hn)
                else:
                    assert np.abs((hn - zh[..., 2 * H:])[valid]).max() <= tol
                    n = np.tanh(zx[..., 2 * H:] + r * zh[..., 2 * H:])
                expect = np.concatenate([r, zz, n], axis=-1)
                assert np.abs((gates - expect)[valid]).max() <= tol
                assert np.abs(((1 - zz) * n + zz * hprev - hseq)[valid]).max() <= tol
                assert ws["c"] is None
        inp = out


# (B, T, I, H, L, D, varlen, init, bias)
SHAPES = [
    (1, 1, 1, 1, 1, 1, False, False, True),       # smallest possible
    (1, 1, 5, 3, 1, 2, False, True, True),        # one timestep, bidirectional
    (1, 9, 4, 17, 1, 1, False, True, False),      # batch 1, odd H, no bias
    (3, 7, 5, 33, 2, 2, True, True, True),        # lengths, stacked, bidirectional
    (5, 6, 3, 17, 3, 1, True, False, True),       # three layers, lengths
    (6, 5, 7, 70, 1, 2, True, True, False),       # H > one kernel panel, unit split
    (9, 4, 6, 130, 2, 1, False, True, True),      # unit-block split with 2 threads
    (17, 5, 3, 24, 1, 1, True, True, True),       # batch-block split with 2 threads
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}I{}H{}L{}D{}{}{}{}".format(
    *s[:6], "v" if s[6] else "", "s" if s[7] else "", "" if s[8] else "nb"))
def test_forward_matches_reference(cell, dtype, shape):
    B, T, I, H, L, D, varlen, init, bias = shape
    rng = np.random.default_rng(zlib.crc32(repr((cell, shape)).encode()))  # deterministic
    x, w, h0, c0, lengths = make_case(cell, B, T, I, H, L, D, dtype, rng, varlen=varlen,
                                      init=init, bias=bias)
    check_against_reference(cell, x, w, h0, c0, lengths, L, D)


# every execution plan: (batch blocks, unit blocks, recurrent GEMM mode[, input projected in
# each step]) x threads; modes: 0 panel kernel, 1 dot kernel
PLANS = [(1, 1, 0), (1, 1, 1), (2, 1, 0), (2, 1, 1), (1, 2, 0), (1, 2, 1), (2, 2, 1), (2, 2, 0),
         (3, 2, 0), (5, 1, 0), (4, 1, 1),   # more batch blocks than threads: claimed one by one
         (1, 1, 0, True), (2, 1, 0, True), (1, 2, 0, True), (2, 2, 1, True), (3, 2, 0, True),
         (5, 1, 1, True)]


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("plan", PLANS, ids=str)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu", "lstm_proj"])
def test_all_plans_match_reference(cell, plan, nthreads):
    rng = np.random.default_rng(7)
    engine.set_num_threads(nthreads)
    for dtype in (np.float64, np.float32):
        x, w, h0, c0, lengths = make_case(cell, 7, 6, 5, 40, 1, 2, dtype, rng, varlen=True,
                                          init=True)
        check_against_reference(cell, x, w, h0, c0, lengths, 1, 2, plan=plan)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("plan", PLANS, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_zero_initial_state_skips_only_a_zero_product(cell, plan, nthreads):
    """From a zero initial state (None, or zeros as the layers pass) the first step has no
    recurrent GEMM (h0 @ W_hh^T is zero): the results are the reference's on every plan, with
    and without lengths, with recurrent dropout, workspace included; None and zeros agree bit
    for bit."""
    rng = np.random.default_rng(zlib.crc32(repr((cell, plan, "zero h0")).encode()))
    engine.set_num_threads(nthreads)
    for dtype in (np.float64, np.float32):
        x, w, _, _, lengths = make_case(cell, 7, 6, 5, 40, 2, 2, dtype, rng, varlen=True)
        H, P = state_sizes(w)
        h0 = np.zeros((4, 7, P), dtype)
        c0 = np.zeros((4, 7, H), dtype) if has_c(cell) else None
        masks = (rng.random((4, 7, P)) < 0.7).astype(dtype) / dtype(0.7)
        for lens in (None, lengths):
            got = check_against_reference(cell, x, w, h0, c0, lens, 2, 2, plan=plan)
            kw = {"num_layers": 2, "bidirectional": True, "recurrent_masks": masks}
            ref = reference.forward(engine_cell(cell), x, w, None, None, lens, **kw)
            out = engine_forward(engine_cell(cell), x, w, None, None, lens, **kw,
                                 _plan_override=plan)
            assert rel_err(out[0], ref[0]) <= TOL[dtype]
            assert rel_err(out[1], ref[1]) <= TOL[dtype]
            out = engine_forward(engine_cell(cell), x, w, None, None, lens, num_layers=2,
                                 bidirectional=True, training=True, _plan_override=plan)
            for a, b in zip(got[:3], out[:3]):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES[2:], ids=lambda s: "B{}T{}I{}H{}L{}D{}".format(*s[:6]))
def test_prepacked_weights_give_the_same_results(cell, dtype, shape):
    """One PackedWeights over calls with and without lengths and on every kind of plan (its
    recurrent weights are packed per unit split): bit for bit the results of packing in each
    call."""
    B, T, I, H, L, D, varlen, init, bias = shape
    rng = np.random.default_rng(zlib.crc32(repr((cell, shape, "packed")).encode()))
    x, w, h0, c0, lengths = make_case(cell, B, T, I, H, L, D, dtype, rng, varlen=True,
                                      init=init, bias=bias)
    packed = PackedWeights()
    for lens in (None, lengths):
        for plan in (None, (1, 1, 0), (1, 2, 0), (2, 1, 0), (1, 2, 1), (1, 1, 0, True),
                     (1, 2, 0, True), (2, 1, 1, True)):
            args = (engine_cell(cell), x, w, h0, c0, lens)
            kw = {"num_layers": L, "bidirectional": D == 2, "_plan_override": plan}
            want = engine_forward(*args, **kw)
            got = engine_forward(*args, **kw, packed=packed)
            for a, b in zip(want[:3], got[:3]):
                np.testing.assert_array_equal(a, b)
    assert {key[0] for key in packed._entries} == {engine.isa(), "biases"}


@pytest.mark.parametrize("in_step", [False, True], ids=["projection", "in_step"])
@pytest.mark.parametrize("mode", [0, 1])
def test_forward_stack_reads_the_packed_copy_only_where_it_fits(mode, in_step):
    """A call reads the packed copy (edits of the weights since do not show), but W_hh only
    for the panel kernel (mode 0) and the unit blocks it was packed for, W_ih's unit blocks
    (input projected in each step) only for those unit blocks, and nothing packed for other
    kernels than those in use: there it packs the live weights itself."""
    from fastrnn.engine import _compiled

    rng = np.random.default_rng(3)
    x, w, _, _, _ = make_case("lstm", 4, 6, 5, 40, 1, 1, np.float32, rng)
    two, one = engine_plan.unit_blocks(40, 2), engine_plan.unit_blocks(40, 1)
    made = _compiled.pack_forward_weights([w["weight_ih_l0"]], [w["weight_hh_l0"]], 4, two,
                                          True, True, in_step)
    assert (made[4] is not None) == in_step and made[2] is not None and made[3] is not None
    layout = engine_plan.batch_layout(None, 4, 6, 1)
    bx, bhn = engine_plan.fold_biases(w, "_l0", cell_spec("lstm"), 40, np.float32)

    def call(packed, units=two):
        return _compiled.forward_stack(
            cell_spec("lstm").code, x, [w["weight_ih_l0"]], [w["weight_hh_l0"]], [bx], [bhn],
            None, None, layout.lengths, layout.order, layout.blocks, units, False, 1, 1,
            False, 1, mode, 1, packed, in_step)[0]

    def without_hh(packed):
        return packed[:3] + (None,) + packed[4:]

    before = call(None)
    for name in ("weight_ih_l0", "weight_hh_l0"):
        w[name] *= 0.5
    after = call(None)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(call(("other",) + made[1:]), after)
    if mode == 0:
        np.testing.assert_array_equal(call(made), before)
    old_ih = call(without_hh(made))           # the old W_ih, the live W_hh
    assert not np.array_equal(old_ih, before) and not np.array_equal(old_ih, after)
    np.testing.assert_array_equal(call(made, one), call(without_hh(made), one))
    if in_step:                 # W_ih's blocks were packed for two unit blocks, not one
        np.testing.assert_array_equal(call(made, one), call(None, one))
    if mode == 1:
        np.testing.assert_array_equal(call(made), old_ih)


@pytest.mark.parametrize("cell", CELLS)
def test_threads_do_not_change_results(cell, monkeypatch):
    rng = np.random.default_rng(3)
    # one projection GEMM whatever the thread count (a GEMM split differently need not be
    # bit-identical)
    monkeypatch.setattr(engine_plan, "MIN_PARALLEL_PROJ_WORK", 1 << 62)
    x, w, h0, c0, lengths = make_case(cell, 16, 12, 8, 96, 2, 2, np.float32, rng, varlen=True,
                                      init=True)
    outs = {}
    for n in (1, 2):
        engine.set_num_threads(n)
        assert engine.get_num_threads() == n
        outs[n] = engine_forward(engine_cell(cell), x, w, h0, c0, lengths, num_layers=2,
                                 bidirectional=True)
        # the same plan on 1 or 2 threads: bit-identical
        fixed = engine_forward(engine_cell(cell), x, w, h0, c0, lengths, num_layers=2,
                               bidirectional=True,
                                _plan_override=(2, 2, 0))
        outs[(n, "fixed")] = fixed
    for a, b in zip(outs[1][:3], outs[2][:3]):
        if a is not None:
            assert rel_err(a, b) <= 1e-5
    for a, b in zip(outs[(1, "fixed")][:3], outs[(2, "fixed")][:3]):
        if a is not None:
            assert np.array_equal(a, b)


@pytest.mark.parametrize("B,T,I,H", [(2, 20, 300, 300),   # projection split by columns
                                     (64, 20, 64, 64)])   # projection split by rows
def test_parallel_input_projection(B, T, I, H):
    assert B * T * I * 4 * H >= engine_plan.MIN_PARALLEL_PROJ_WORK
    engine.set_num_threads(2)
    for dtype in (np.float64, np.float32):
        rng = np.random.default_rng(B)
        x, w, h0, c0, lengths = make_case("lstm", B, T, I, H, 1, 1, dtype, rng, varlen=True)
        check_against_reference("lstm", x, w, h0, c0, lengths, 1, 1, training=False)


def test_many_threads_are_clamped():
    rng = np.random.default_rng(9)
    x, w, h0, c0, lengths = make_case("gru", 70, 3, 4, 40, 1, 1, np.float32, rng, varlen=True)
    engine.set_num_threads(100)
    check_against_reference("gru", x, w, h0, c0, lengths, 1, 1)
    check_against_reference("gru", x, w, h0, c0, lengths, 1, 1, plan=(70, 9, 0))


def test_set_num_threads_rejects_bad_values():
    with pytest.raises(ValueError, match="n must be >= 1"):
        engine.set_num_threads(0)


def test_not_training_returns_no_workspace_and_padding_is_zero():
    rng = np.random.default_rng(5)
    x, w, h0, c0, lengths = make_case("lstm", 6, 8, 4, 10, 2, 2, np.float32, rng, varlen=True)
    y, h_n, c_n, ws = engine_forward("lstm", x, w, None, None, lengths, num_layers=2,
                                      bidirectional=True)
    assert ws is None
    for b in range(6):
        assert np.all(y[b, lengths[b]:] == 0)


def test_final_state_is_state_at_last_valid_step():
    rng = np.random.default_rng(11)
    x, w, _, _, _ = make_case("gru", 4, 9, 3, 8, 1, 1, np.float64, rng)
    lengths = np.array([9, 2, 5, 1], dtype=np.int64)
    y, h_n, _, _ = engine_forward("gru", x, w, lengths=lengths)
    for b in range(4):
        assert np.array_equal(h_n[0, b], y[b, lengths[b] - 1])
        # and equals running the truncated sequence alone
        yb, hb, _, _ = engine_forward("gru", np.ascontiguousarray(x[b:b + 1, :lengths[b]]), w)
        assert np.allclose(hb[0, 0], h_n[0, b], rtol=0, atol=1e-14)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cell=st.sampled_from(CELLS), dtype=st.sampled_from([np.float64, np.float32]),
       B=st.integers(1, 6), T=st.integers(1, 7), I=st.integers(1, 9), H=st.integers(1, 35),
       L=st.integers(1, 3), D=st.integers(1, 2), varlen=st.booleans(), init=st.booleans(),
       bias=st.booleans(), nthreads=st.integers(1, 2), seed=st.integers(0, 2**31 - 1))
def test_hypothesis_random_configurations(cell, dtype, B, T, I, H, L, D, varlen, init, bias,
                                          nthreads, seed):
    rng = np.random.default_rng(seed)
    engine.set_num_threads(nthreads)
    x, w, h0, c0, lengths = make_case(cell, B, T, I, H, L, D, dtype, rng, varlen=varlen,
                                      init=init, bias=bias)
    check_against_reference(cell, x, w, h0, c0, lengths, L, D, training=bool(seed % 2))


# ---------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,I,H,L,init", [(1, 3, 1, 1, False), (1, 5, 17, 2, True),
                                          (3, 7, 33, 3, True), (4, 70, 130, 1, False),
                                          (2, 256, 256, 2, True)])   # two unit blocks (LSTM, GRU)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_step_over_time_equals_forward(cell, dtype, B, I, H, L, init, nthreads):
    engine.set_num_threads(nthreads)
    rng = np.random.default_rng(B * 100 + H)
    T = 6
    x, w, h0, c0, _ = make_case(cell, B, T, I, H, L, 1, dtype, rng, init=init)
    P = state_size(cell, H)
    y, h_n, c_n, _ = reference.forward(engine_cell(cell), x, w, h0, c0, num_layers=L)
    stepper = stream.make_stepper(engine_cell(cell), w, L)
    if GATES[cell] * H * (I + H) >= engine_plan.STEP_PARALLEL_MIN_WORK:
        # (the reset-before GRU's n gate reads r of every unit, the projection m: one block)
        assert stepper._kernel.unit_blocks == (1 if cell in ("gru_reset_before", "lstm_proj")
                                               else 2)
    h0_in = None if h0 is None else h0.copy()
    h, c = h0, c0
    ys = []
    for t in range(T):
        yt, h, c = stepper.step(np.ascontiguousarray(x[:, t]), h, c)
        assert yt.shape == (B, P) and h.shape == (L, B, P)
        assert c is None or c.shape == (L, B, H)
        ys.append(yt)
    assert rel_err(np.stack(ys, 1), y) <= TOL[dtype]
    assert rel_err(h, h_n) <= TOL[dtype]
    if has_c(cell):
        assert rel_err(c, c_n) <= TOL[dtype]
    else:
        assert c is None
    if h0 is not None:
        assert np.array_equal(h0, h0_in)  # inputs are never modified


def test_stepper_snapshots_weights():
    rng = np.random.default_rng(2)
    x, w, _, _, _ = make_case("lstm", 2, 1, 4, 8, 1, 1, np.float32, rng)
    stepper = stream.make_stepper("lstm", w, 1)
    before = stepper.step(np.ascontiguousarray(x[:, 0]))[0].copy()
    for v in w.values():
        v *= 2
    after = stepper.step(np.ascontiguousarray(x[:, 0]))[0]
    assert np.array_equal(before, after)


def test_step_rejects_wrong_shapes():
    rng = np.random.default_rng(2)
    _, w, _, _, _ = make_case("gru", 2, 1, 4, 8, 2, 1, np.float32, rng)
    stepper = stream.make_stepper("gru", w, 2)
    with pytest.raises(ValueError, match="x_t"):
        stepper.step(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="x_t"):
        stepper.step(np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match="h"):
        stepper.step(np.zeros((2, 4), np.float32), np.zeros((1, 2, 8), np.float32))


# ---------------------------------------------------------------------------------------------
# activation approximations
# ---------------------------------------------------------------------------------------------

def test_float32_activation_error_bounds():
    x = np.concatenate([np.linspace(-12, 12, 2_000_001), np.geomspace(1e-30, 20, 200_001),
                        -np.geomspace(1e-30, 20, 200_001), [0.0, np.inf, -np.inf]])
    x32 = x.astype(np.float32)
    exact = np.tanh(x32.astype(np.float64))
    out = np.empty_like(x32)
    _compiled.tanh_approx(x32, out)
    assert np.abs(out - exact).max() <= _compiled.TANH_F32_MAX_ABS_ERR
    assert np.all(np.abs(out) <= 1.0)
    assert np.array_equal(np.sign(out), np.sign(x32))
    # near zero the error is relative, so tiny pre-activations are not flushed
    small = np.abs(x32) < 1e-3
    assert np.all(np.abs(out[small] - exact[small]) <= 3e-7 * np.abs(exact[small]))
    _compiled.sigmoid_approx(x32, out)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-x32.astype(np.float64)))
    assert np.abs(out - exact).max() <= _compiled.SIGMOID_F32_MAX_ABS_ERR
    assert np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_propagate_nan(dtype):
    """NaN in whole vectors (the vector code, any lane) and in the elements left over."""
    x = np.linspace(-3, 3, 37).astype(dtype)
    nan = [0, 5, 8, 17, 31, 36]
    x[nan] = np.nan
    x[[3, 20]] = np.inf, -np.inf
    out = np.empty_like(x)
    for fn in (_compiled.tanh_approx, _compiled.sigmoid_approx):
        fn(x, out)
        assert np.array_equal(np.flatnonzero(np.isnan(out)), nan)
    tol = _compiled.SIGMOID_F32_MAX_ABS_ERR if dtype == np.float32 else 0.0
    assert abs(out[3] - 1.0) <= tol and abs(out[20]) <= tol   # sigmoid(+inf), sigmoid(-inf)


def test_float64_activations_are_exact():
    x = np.linspace(-40, 40, 100_001)
    out = np.empty_like(x)
    _compiled.tanh_approx(x, out)
    assert np.abs(out - np.tanh(x)).max() <= 1e-15
    _compiled.sigmoid_approx(x, out)
    assert np.abs(out - 1 / (1 + np.exp(-x))).max() <= 1e-15


# ---------------------------------------------------------------------------------------------
# GEMM micro-kernels
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 17, 3), (3, 5, 70), (4, 16, 64), (5, 33, 130),
                                   (9, 64, 257), (2, 300, 9)])
def test_gemm_kernels_match_numpy(dtype, M, K, N):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)   # PyTorch layout (outputs, inputs)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    expect = c0.astype(np.float64) + a.astype(np.float64) @ w.T.astype(np.float64)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    c = c0.copy()
    _compiled.dot_gemm(a, w, c)
    assert np.abs(c - expect).max() <= tol * max(1.0, np.abs(expect).max())
    packed = np.empty(_compiled.packed_size(K, N, dtype), dtype=dtype)
    _compiled.pack_panels(w, 1, 0, N, packed)
    c = c0.copy()
    _compiled.small_gemm(a, packed, c)
    assert np.abs(c - expect).max() <= tol * max(1.0, np.abs(expect).max())


def test_engine_guards_against_malformed_input():
    """The layers validate; the engine still refuses input that would read out of bounds."""
    rng = np.random.default_rng(4)
    x, w, _, _, _ = make_case("lstm", 3, 4, 5, 6, 1, 1, np.float32, rng)
    with pytest.raises(ValueError, match="lengths"):
        engine_forward("lstm", x, w, lengths=np.array([1, 2, 5], dtype=np.int64))
    # the planner lays out int64 lengths whatever integer dtype they came in
    y32 = engine_forward("lstm", x, w, lengths=np.array([1, 2, 3], dtype=np.int32))[0]
    y64 = engine_forward("lstm", x, w, lengths=np.array([1, 2, 3], dtype=np.int64))[0]
    np.testing.assert_array_equal(y32, y64)
    with pytest.raises(ValueError, match="w_ih|w_hh|bias_ih_l0"):
        engine_forward("lstm", x, dict(w, weight_hh_l0=w["weight_hh_l0"][:, :5].copy()))
    with pytest.raises(ValueError, match="w_ih"):
        engine_forward("lstm", x, dict(w, weight_ih_l0=w["weight_ih_l0"].astype(np.float64)))
    with pytest.raises(ValueError, match="h0"):
        engine_forward("lstm", x, w, h0=np.zeros((1, 2, 6), np.float32))
    with pytest.raises(ValueError, match="x must be"):
        engine_forward("lstm", np.asfortranarray(x), w)


def test_large_steppers_split_units():
    rng = np.random.default_rng(12)
    for cell in ("lstm", "gru"):
        _, w, _, _, _ = make_case(cell, 1, 1, 256, 256, 1, 1, np.float32, rng)
        assert stream.make_stepper(cell, w, 1)._kernel.unit_blocks == 2


def _plan(B, H, G, nthreads, T):
    """(batch blocks, unit blocks, mode) that the planner picks for a one-layer forward."""
    p = engine_plan.forward_plan(B, T, H, H, G, 1, nthreads)
    rows = -(-B // min(p.batch_blocks, nthreads))     # a thread's rows decide the projection
    assert p.input_in_step == (p.mode == engine_plan.MODE_PANEL and engine_plan.INPUT_IN_STEP_MIN_ROWS
                               <= rows <= engine_plan.INPUT_IN_STEP_MAX_ROWS
                               and 2 * H * G * H <= engine_plan.INPUT_IN_STEP_MAX_WEIGHTS)
    return p.batch_blocks, p.unit_blocks, p.mode


def test_plan_choices():
    """The plan heuristics (documented in engine.plan.forward_plan) pick what was measured fastest."""
    assert _plan(1, 64, 4, 2, 100) == (1, 1, engine_plan.MODE_PANEL)    # tiny: one thread
    assert _plan(32, 64, 4, 2, 100) == (2, 1, engine_plan.MODE_PANEL)   # batch blocks
    assert _plan(1, 256, 4, 2, 150) == (1, 2, engine_plan.MODE_PANEL)   # unit blocks
    assert _plan(4, 512, 4, 2, 25) == (1, 2, engine_plan.MODE_PANEL)    # packing pays
    assert _plan(1, 512, 4, 2, 10) == (1, 2, engine_plan.MODE_DOT)      # no packing
    assert _plan(2, 1024, 4, 2, 30) == (1, 2, engine_plan.MODE_DOT)
    assert _plan(64, 512, 4, 1, 50) == (1, 1, engine_plan.MODE_PANEL)   # one thread
    # large H, 16 rows a thread or more: batch blocks (no barrier a step)
    assert _plan(32, 512, 4, 2, 50) == (2, 1, engine_plan.MODE_PANEL)
    assert _plan(32, 256, 4, 2, 50) == (2, 1, engine_plan.MODE_PANEL)
    assert _plan(16, 512, 4, 2, 50) == (1, 2, engine_plan.MODE_PANEL)
    assert _plan(32, 1024, 4, 2, 25) == (2, 1, engine_plan.MODE_PANEL)
    # two batch blocks a thread where each keeps 16 rows (claimed one at a time), else one
    assert _plan(64, 128, 4, 2, 50) == (4, 1, engine_plan.MODE_PANEL)
    assert _plan(63, 128, 3, 2, 50) == (2, 1, engine_plan.MODE_PANEL)
    assert _plan(64, 181, 4, 2, 50) == (4, 1, engine_plan.MODE_PANEL)   # W_hh 131044
    # ... but one a thread for a W_hh larger than that (a block of 16 rows streams it)
    assert _plan(64, 182, 4, 2, 50) == (2, 1, engine_plan.MODE_PANEL)
    assert _plan(64, 512, 4, 2, 50) == (2, 1, engine_plan.MODE_PANEL)
    assert _plan(96, 64, 4, 3, 50) == (6, 1, engine_plan.MODE_PANEL)
    # the input projected in each step for 8 to 16 rows a batch block and weights that stay
    # in a core's cache, else one GEMM before
    assert engine_plan.forward_plan(32, 50, 128, 128, 4, 1, 2).input_in_step    # 2 x 16 rows
    assert engine_plan.forward_plan(16, 50, 32, 64, 4, 1, 2).input_in_step      # 2 x 8 rows
    assert not engine_plan.forward_plan(32, 50, 512, 512, 4, 1, 2).input_in_step  # 8 MiB
    assert not engine_plan.forward_plan(32, 50, 128, 256, 4, 1, 2).input_in_step  # 1.5 MiB
    # a bidirectional stack's upper layers read 2H inputs
    assert engine_plan.forward_plan(32, 50, 32, 128, 4, 1, 2).input_in_step
    assert not engine_plan.forward_plan(32, 50, 32, 128, 4, 2, 2).input_in_step
    assert not engine_plan.forward_plan(14, 50, 32, 64, 4, 1, 2).input_in_step  # 2 x 7
    assert not engine_plan.forward_plan(64, 50, 128, 128, 4, 1, 2).input_in_step  # 2 x 32
    assert not engine_plan.forward_plan(1, 150, 256, 256, 4, 1, 2).input_in_step


def test_layout_of_a_shape_is_made_once_and_shared_read_only():
    """Calls without lengths share one layout per shape (planning runs every call); its arrays
    are read-only, so no call can change another's; with lengths, each call gets its own."""
    a = engine_plan.batch_layout(None, 5, 7, 2)
    assert engine_plan.batch_layout(None, 5, 7, 2) is a
    assert not (a.lengths.flags.writeable or a.order.flags.writeable or a.blocks.flags.writeable)
    assert a.lengths.tolist() == [7] * 5 and a.blocks.tolist() == [0, 3, 5] and not a.partial
    assert sorted(a.order.tolist()) == list(range(5))
    lengths = np.array([3, 7, 7, 1, 5], dtype=np.int64)
    b = engine_plan.batch_layout(lengths, 5, 7, 2)
    assert b.partial and b is not engine_plan.batch_layout(lengths.copy(), 5, 7, 2)
    assert b.order.tolist() == [1, 4, 3, 2, 0]    # sorted 1, 2, 4, 0, 3 dealt into two blocks
    assert not engine_plan.unit_blocks(100, 2).flags.writeable
    assert engine_plan.unit_blocks(100, 2).tolist() == [0, 64, 100]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 5, 7), (5, 130, 65), (130, 257, 31),
                                   (261, 129, 130), (64, 64, 64)])
@pytest.mark.parametrize("threads", [1, 2])
def test_engine_matmul_matches_numpy(dtype, trans_a, M, K, N, threads):
    """``gemm.matmul`` (BPTT's dense GEMMs): edges of every blocking (rows past 4 and 128,
    K past a 128 block, N off the panel width), strided rows, both dtypes and thread counts."""
    rng = np.random.default_rng(M * 7 + K * 3 + N)
    engine.set_num_threads(threads)
    big_a = rng.standard_normal((K + 3, M + 5) if trans_a else (M + 3, K + 5)).astype(dtype)
    a = big_a[1:K + 1, 2:M + 2] if trans_a else big_a[1:M + 1, 2:K + 2]   # strided rows
    b = rng.standard_normal((K, N + 9)).astype(dtype)[:, 4:N + 4]
    got = gemm.matmul(a, b, trans_a=trans_a)
    want = (a.T if trans_a else a).astype(np.float64) @ b.astype(np.float64)
    assert got.shape == (M, N) and got.dtype == dtype and got.flags.c_contiguous
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()) * math.sqrt(K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M1,M2,K,N", [(1, 1, 1, 1), (3, 5, 7, 9), (130, 6, 257, 65),
                                       (64, 64, 300, 512), (0, 5, 4, 3), (5, 0, 4, 3),
                                       (126, 131, 33, 70)])
@pytest.mark.parametrize("threads", [1, 2])
def test_engine_matmul_pair_matches_numpy(dtype, M1, M2, K, N, threads):
    """``matmul(a, b, trans_a=True, a2=a2)`` = ``[a | a2].T @ b`` (BPTT's fused dW_ih, dW_hh):
    the row split between the threads falls inside either operand or on their border."""
    rng = np.random.default_rng(M1 * 5 + M2 * 3 + K + N)
    engine.set_num_threads(threads)
    a = rng.standard_normal((K, M1 + 3)).astype(dtype)[:, 1:M1 + 1]
    a2 = rng.standard_normal((K, M2 + 4)).astype(dtype)[:, 2:M2 + 2]
    b = rng.standard_normal((K, N + 9)).astype(dtype)[:, 4:N + 4]
    got = gemm.matmul(a, b, trans_a=True, a2=a2)
    want = np.concatenate([a, a2], axis=1).T.astype(np.float64) @ b.astype(np.float64)
    assert got.shape == (M1 + M2, N) and got.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()) * math.sqrt(K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_engine_matmul_adds_into_out(dtype, trans_a, threads):
    """``matmul(..., out=c)`` adds the product to ``c`` (no swap of roles, none of ``c``'s
    values lost), also for the two-operand form and for an empty inner dimension."""
    rng = np.random.default_rng(3)
    engine.set_num_threads(threads)
    a = rng.standard_normal((37, 133) if trans_a else (133, 37)).astype(dtype)
    b = rng.standard_normal((37, 70)).astype(dtype)
    c0 = rng.standard_normal((133, 70)).astype(dtype)
    c = c0.copy()
    assert gemm.matmul(a, b, trans_a=trans_a, out=c) is c
    want = c0 + (a.T if trans_a else a).astype(np.float64) @ b
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(c - want).max() <= tol * np.abs(want).max() * 10
    if trans_a:
        a2 = rng.standard_normal((37, 9)).astype(dtype)
        c2 = np.ones((142, 70), dtype)
        gemm.matmul(a, b, trans_a=True, a2=a2, out=c2)
        want = 1 + np.concatenate([a, a2], axis=1).T.astype(np.float64) @ b
        assert np.abs(c2 - want).max() <= tol * np.abs(want).max() * 10
    c3 = c0.copy()
    gemm.matmul(np.ones((133, 0), dtype), np.ones((0, 70), dtype), out=c3)
    np.testing.assert_array_equal(c3, c0)


def test_engine_matmul_rejects_what_it_cannot_read():
    a = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        gemm.matmul(a, np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match="unit column"):
        gemm.matmul(a[:, ::2], np.ones((3, 3), np.float32))
    assert gemm.matmul(np.ones((0, 3), np.float32), np.ones((3, 2), np.float32)).shape == (0, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_propagates_nan_like_the_reference(dtype):
    """A NaN pre-activation stays NaN through the relu (forward and streaming), as in the
    reference and PyTorch, instead of becoming 0."""
    rng = np.random.default_rng(2)
    x, w, _, _, _ = make_case("rnn_relu", 2, 3, 4, 5, 1, 1, dtype, rng)
    w["weight_ih_l0"][1, 2] = np.nan
    want = reference.forward("rnn_relu", x, w)[0]
    got = engine_forward("rnn_relu", x, w)[0]
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    y_t, h, _ = stream.make_stepper("rnn_relu", w, 1).step(np.ascontiguousarray(x[:, 0]))
    np.testing.assert_array_equal(np.isnan(y_t), np.isnan(want[:, 0]))

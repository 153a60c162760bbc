"""The compiled BPTT (fastrnn.engine.bptt) against the NumPy reference.

Gradients must equal the reference's to ``1e-8`` (float64) / ``1e-4`` (float32), relative to the
largest absolute value of each gradient.  The workspace comes from the compiled training forward
(``fastrnn.engine.forward``) when it is built, and from the reference forward
(``bptt.workspace_from_reference``) always, so the backward is checked on its own too.
"""
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

import fastrnn
from conftest import has_c, VARIANTS, engine_cell, make_weights, rel_err, state_size

CELLS = VARIANTS            # the cells, and the projected LSTM
from fastrnn import reference

try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

from fastrnn import engine
from fastrnn.engine import plan as engine_plan

if engine.AVAILABLE:
    from fastrnn.engine import _compiled, bptt
    from fastrnn.engine.forward import forward as engine_forward

#: every test here runs on the kernels of every instruction set this CPU can run
pytestmark = pytest.mark.usefixtures("isa")

@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests that set the engine's threads leave them as they found them."""
    if not engine.AVAILABLE:
        yield
        return
    n = engine.get_num_threads()
    yield
    engine.set_num_threads(n)


TOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}
#: each gradient is compared relative to its own largest entry, or to this fraction of the
#: largest entry of all the gradients where that is larger: a gradient far smaller than the
#: others is a difference of larger terms and carries their absolute rounding (in float32, one
#: bias gradient 300 times smaller than the largest, a sum over steps that cancels, was found
#: 1.8e-4 off relative to itself and 6e-7 relative to the largest)
FLOOR = {np.dtype(np.float64): 1e-3, np.dtype(np.float32): 1e-2}
SOURCES = ["reference"] + (["engine"] if engine.AVAILABLE else [])


def run_case(cell, B, T, I, H, L, D, bias, dtype, lengths, states, mode, source, rng):
    """Forward + backward by the reference and by the compiled BPTT; return the max errors."""
    dtype = np.dtype(dtype)
    w = make_weights(cell, I, H, L, D, bias, dtype, rng, scale=0.5, normal=True)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    is_lstm = has_c(cell)
    h0 = rng.standard_normal((L * D, B, state_size(cell, H))).astype(dtype) if states else None
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if states and is_lstm else None
    cell = engine_cell(cell)
    y, h_n, c_n, cache = reference.forward(cell, x, w, h0, c0, lengths, num_layers=L,
                                           bidirectional=D == 2)
    dy = rng.standard_normal(y.shape).astype(dtype) if mode in ("dy", "both") else None
    dh_n = rng.standard_normal(h_n.shape).astype(dtype) if mode in ("dstate", "both") else None
    dc_n = (rng.standard_normal(c_n.shape).astype(dtype)
            if mode in ("dstate", "both") and is_lstm else None)
    want = reference.backward(cache, dy, dh_n, dc_n)
    if source == "engine":
        _, _, _, ws = engine_forward(cell, x, w, h0, c0, lengths, num_layers=L,
                                      bidirectional=D == 2, training=True)
        got = bptt.backward(cell, w, ws, dy, dh_n, dc_n, x=x, h0=h0, c0=c0)
    else:
        ws = bptt.workspace_from_reference(cache, x, h0, c0)
        got = bptt.backward(cell, w, ws, dy, dh_n, dc_n)
    arrays = [a for a in want[:3] if a is not None] + list(want[3].values())
    floor = FLOOR[dtype] * max(float(np.max(np.abs(a), initial=0.0)) for a in arrays) + 1e-30
    errs = {"dx": rel_err(got[0], want[0], floor), "dh0": rel_err(got[1], want[1], floor),
            "dc0": rel_err(got[2], want[2], floor)}
    assert sorted(got[3]) == sorted(want[3])
    for name in want[3]:
        errs[name] = rel_err(got[3][name], want[3][name], floor)
    return errs


def check(errs, dtype):
    bad = {k: v for k, v in errs.items() if not v <= TOL[np.dtype(dtype)]}
    assert not bad, bad


# ------------------------------------------------------------------------------ parametrised

SHAPES = [  # B, T, I, H, L, D
    (1, 1, 1, 1, 1, 1),
    (1, 1, 2, 3, 1, 2),
    (3, 5, 4, 6, 1, 1),
    (4, 7, 3, 17, 2, 2),
    (5, 6, 4, 3, 3, 1),
    (6, 4, 5, 8, 1, 2),
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}I{}H{}L{}D{}".format(*s))
def test_matches_reference(cell, dtype, shape, source):
    rng = np.random.default_rng(zlib.crc32(repr((cell, shape, dtype)).encode()))
    B, T, I, H, L, D = shape
    for k, (lens, states, mode, bias) in enumerate([
        (False, True, "both", True), (True, False, "dy", True),
        (True, True, "dstate", False), (False, False, "dy", False),
    ]):
        lengths = rng.permutation(np.linspace(1, T, B).round().astype(np.int64)) if lens else None
        errs = run_case(cell, B, T, I, H, L, D, bias, dtype, lengths, states, mode, source, rng)
        check(errs, dtype)


@pytest.mark.parametrize("H", [32, 130])
@pytest.mark.parametrize("cell", CELLS)
def test_larger_batch_threads_and_lengths(cell, H):
    """A larger batch with shuffled lengths, stacked, both directions: batch blocks on two
    threads of the engine's team (small H, and H above two panels)."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 13, 40).astype(np.int64)
    if engine.AVAILABLE:
        assert engine_plan.bptt_plan(1, 40, H, 2) == (2, 1)
        engine.set_num_threads(2)
    for source in SOURCES:
        for D in (1, 2):
            errs = run_case(cell, 40, 12, 9, H, 2, D, True, np.float64, lengths, True, "both",
                            source, rng)
            check(errs, np.float64)


@pytest.mark.parametrize("lengths", [[6, 5, 5, 3, 1, 1, 1, 1], [6] * 8, [6, 2, 6, 2, 6, 2, 6, 2]],
                         ids=["sorted", "equal", "alternating"])
@pytest.mark.parametrize("cell", CELLS)
def test_batch_blocks_over_length_patterns(cell, lengths):
    """Batch blocks on two threads over lengths already sorted, all equal, or alternating
    (blocks with rows at a fixed stride, or not); the active rows shrink step by step."""
    rng = np.random.default_rng(11)
    lengths = np.array(lengths, dtype=np.int64)
    for source in SOURCES:
        for D in (1, 2):
            errs = run_case(cell, 8, 6, 5, 7, 1, D, True, np.float64, lengths, True, "both",
                            source, rng)
            check(errs, np.float64)


@pytest.mark.parametrize("length", [1, 3, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_one_sequence_against_padding(cell, length):
    """A batch of one sequence of length 1, 3 or 5 in T=5 steps (the tail of padded steps,
    each direction's first step at its own end), both directions, with and without initial
    states, both dtypes."""
    rng = np.random.default_rng(length)
    lengths = np.array([length], dtype=np.int64)
    for source in SOURCES:
        for dtype in (np.float64, np.float32):
            for D in (1, 2):
                for states in (False, True):
                    errs = run_case(cell, 1, 5, 3, 4, 1, D, True, dtype, lengths, states,
                                    "both", source, rng)
                    check(errs, dtype)


@pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")
def test_kernels_take_the_config_fields_in_order():
    """``kernel(items, *config)``: every kernel's parameters are BpttConfig's fields, in order
    (a kernel reads its config by position)."""
    import inspect

    from fastrnn.engine import bptt_kernels
    for kernel in set(bptt_kernels.KERNELS) | set(bptt_kernels.PROJECTED_KERNELS.values()):
        params = list(inspect.signature(kernel.py_func).parameters)
        assert params == ["items", *bptt_kernels.BpttConfig._fields]


@pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [70, 130])
def test_step_gemm_split_over_threads(cell, dtype, H):
    """Every step's dh GEMM split by column panels over 2 threads (threshold forced to 0),
    with H off the panel width, variable lengths, both directions (a batch of 5: too small
    for batch blocks, so one direction splits its steps)."""
    assert engine_plan.bptt_plan(1, 5, H, 2) == (1, 2)
    rng = np.random.default_rng(H)
    lengths = rng.integers(1, 7, 5).astype(np.int64)
    engine.set_num_threads(2)
    _compiled.set_dh_parallel_min_work(0)
    try:
        for D in (1, 2):
            errs = run_case(cell, 5, 6, 7, H, 1, D, True, dtype, lengths, True, "both",
                            "engine", rng)
            check(errs, dtype)
    finally:
        _compiled.set_dh_parallel_min_work(_compiled.DH_PARALLEL_MIN_WORK)


@pytest.mark.parametrize("cell", CELLS)
def test_dy_past_lengths_is_ignored_and_workspace_untouched(cell):
    rng = np.random.default_rng(3)
    dtype = np.float64
    B, T, I, H = 4, 6, 3, 5
    w = make_weights(cell, I, H, 2, 2, True, dtype, rng, scale=0.5, normal=True)
    x = rng.standard_normal((B, T, I))
    lengths = np.array([2, 6, 1, 4], dtype=np.int64)
    P, cell = state_size(cell, H), engine_cell(cell)
    _, _, _, cache = reference.forward(cell, x, w, lengths=lengths, num_layers=2,
                                       bidirectional=True)
    ws = bptt.workspace_from_reference(cache, x)
    before = [a.copy() for a in ws["outputs"]]
    dy = rng.standard_normal((B, T, 2 * P))
    mask = np.arange(T)[None, :, None] < lengths[:, None, None]
    g1 = bptt.backward(cell, w, ws, dy)
    g2 = bptt.backward(cell, w, ws, dy * mask)
    for a, b in zip(before, ws["outputs"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g1[0], g2[0])
    np.testing.assert_array_equal(g1[1], g2[1])
    for k in g1[3]:
        np.testing.assert_array_equal(g1[3][k], g2[3][k])
    assert np.all(g1[0][~np.broadcast_to(mask[:, :, :1], (B, T, 1))[:, :, 0]] == 0)


@pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")
@pytest.mark.parametrize("cell", CELLS)
def test_engine_workspace_matches_layout(cell):
    """The compiled forward's workspace holds what workspace_from_reference builds."""
    rng = np.random.default_rng(11)
    w = make_weights(cell, 3, 4, 2, 2, True, np.float64, rng, scale=0.5, normal=True)
    x = rng.standard_normal((3, 5, 3))
    h0 = rng.standard_normal((4, 3, state_size(cell, 4)))
    c0 = rng.standard_normal((4, 3, 4)) if has_c(cell) else None
    lengths = np.array([5, 2, 3], dtype=np.int64)
    cell = engine_cell(cell)
    _, _, _, cache = reference.forward(cell, x, w, h0, c0, lengths, num_layers=2,
                                       bidirectional=True)
    want = bptt.workspace_from_reference(cache, x, h0, c0)
    _, _, _, got = engine_forward(cell, x, w, h0, c0, lengths, num_layers=2,
                                   bidirectional=True, training=True)
    for key in ("cell", "num_layers", "num_directions", "hidden_size", "proj_size"):
        assert got[key] == want[key]
    np.testing.assert_array_equal(got["lengths"], want["lengths"])
    for key in ("outputs", "gates", "c", "hn"):
        if want[key] is None:
            assert got[key] is None
            continue
        for a, b in zip(got[key], want[key]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ hypothesis

if given is not None:
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cell=st.sampled_from(CELLS), dtype=st.sampled_from([np.float32, np.float64]),
           B=st.integers(1, 5), T=st.integers(1, 6), I=st.integers(1, 5),
           H=st.sampled_from([1, 2, 3, 5, 17]), L=st.integers(1, 3), D=st.integers(1, 2),
           bias=st.booleans(), states=st.booleans(), lens=st.booleans(),
           mode=st.sampled_from(["dy", "dstate", "both"]),
           source=st.sampled_from(SOURCES), seed=st.integers(0, 2**32 - 1))
    def test_hypothesis_matches_reference(cell, dtype, B, T, I, H, L, D, bias, states, lens,
                                          mode, source, seed):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(1, T + 1, B).astype(np.int64) if lens else None
        errs = run_case(cell, B, T, I, H, L, D, bias, dtype, lengths, states, mode, source, rng)
        check(errs, dtype)


# ------------------------------------------------------------------------------ lazy numba

def test_import_and_forward_do_not_import_numba(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import fastrnn\n"
        "from fastrnn import reference\n"
        "x = np.ones((2, 3, 4), np.float32)\n"
        "for cls in (fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN):\n"
        "    for backend in ('reference', 'compiled'):\n"
        "        try:\n"
        "            layer = cls(4, 5, backend=backend)\n"
        "        except ValueError:\n"
        "            continue\n"
        "        layer(x)\n"
        "try:\n"
        "    from fastrnn.engine.forward import forward as engine_forward\n"
        "    engine_forward('lstm', x, {'weight_ih_l0': np.ones((20, 4), np.float32),\n"
        "                    'weight_hh_l0': np.ones((20, 5), np.float32)}, training=True)\n"
        "except ImportError:\n"
        "    pass\n"
        "import fastrnn.engine.bptt\n"
        "assert 'numba' not in sys.modules, 'numba was imported'\n"
        "print('ok')\n"
    )
    # the fastrnn this test imported (installed, or a built checkout), run from elsewhere
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")




def test_kernels_load_from_cache_in_a_new_process(tmp_path):
    """The kernels call the engine's C GEMM by symbol name: a new process must load them from
    Numba's cache (no recompilation) and still get the reference's gradients."""
    backward_once = (
        "import numpy as np\n"
        "import fastrnn\n"
        "from fastrnn import reference\n"
        "rng = np.random.default_rng(0)\n"
        "layer = fastrnn.LSTM(5, 7, num_layers=1, seed=1)\n"
        "x = rng.standard_normal((3, 4, 5)).astype(np.float32)\n"
        "y, _ = layer(x, training=True)\n"
        "dy = rng.standard_normal(y.shape).astype(np.float32)\n"
        "dx, _ = layer.backward(dy)\n"
        "_, _, _, cache = reference.forward('lstm', x, layer.parameters())\n"
        "want = reference.backward(cache, dy)[0]\n"
        "err = np.abs(dx - want).max() / np.abs(want).max()\n"
        "assert err < 1e-4, err\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    first = subprocess.run([sys.executable, "-c", backward_once], capture_output=True,
                           text=True, timeout=600, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", backward_once], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path,
                            env=dict(env, NUMBA_DEBUG_CACHE="1"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().endswith("ok")
    assert "[cache] data loaded" in second.stdout + second.stderr
    assert "[cache] data saved" not in second.stdout + second.stderr


def test_denormal_flush_does_not_leak_into_the_caller():
    """The kernels flush denormals to zero inside, and restore the caller's floating-point
    mode afterwards (checked on the calling thread, which runs one of the work items)."""
    rng = np.random.default_rng(5)
    for cell in CELLS:
        run_case(cell, 6, 5, 4, 8, 1, 2, True, np.float32, None, False, "dy", "reference", rng)
        tiny = np.array([1e-39], dtype=np.float32)
        assert (tiny * np.float32(1.0))[0] != 0.0


@pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")
def test_run_on_team_runs_every_call_once_and_reraises():
    """The helper that runs BPTT work items on the engine's OpenMP team: every call exactly
    once, on distinct threads when the team has them, and an exception reaches the caller
    after all calls finished."""
    import threading
    seen = []
    _compiled.note_contention(0)    # a busy machine may have switched the engine to one thread
    _compiled.run_on_team([lambda i=i: seen.append((i, threading.get_ident())) for i in range(2)])
    assert sorted(i for i, _ in seen) == [0, 1]
    assert len({t for _, t in seen}) == 2
    done = []

    def boom():
        raise ValueError("item failed")

    with pytest.raises(ValueError, match="item failed"):
        _compiled.run_on_team([boom, lambda: done.append(1)])
    assert done == [1]
    _compiled.run_on_team([])


# ------------------------------------------------------------------------------ dropout masks

@pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,I,H,L,D,plan", [
    (5, 6, 3, 7, 3, 1, None), (9, 5, 4, 33, 2, 2, None),
    (9, 5, 4, 20, 2, 1, (2, 1, 0, True)), (6, 4, 3, 40, 2, 2, (1, 2, 0)),
    (4, 3, 5, 40, 1, 2, (1, 2, 1)), (10, 4, 2, 17, 2, 1, (2, 1, 0))],
    ids=lambda v: str(v))
def test_dropout_masks_compiled_match_reference(cell, dtype, B, T, I, H, L, D, plan):
    """Fixed dropout masks between the layers and on h_{t-1} (recurrent dropout): the compiled
    forward and BPTT give the reference's outputs, states and gradients, on every plan."""
    rng = np.random.default_rng(zlib.crc32(repr((cell, B, T, I, H, L, D, plan)).encode()))
    w = make_weights(cell, I, H, L, D, True, dtype, rng, scale=0.5, normal=True)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    P, cell = state_size(cell, H), engine_cell(cell)
    h0 = rng.standard_normal((L * D, B, P)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if has_c(cell) else None
    p = 0.3
    lmasks = [((rng.random((B, T, D * P)) >= p) / (1 - p)).astype(dtype) for _ in range(L - 1)]
    rmasks = ((rng.random((L * D, B, P)) >= p) / (1 - p)).astype(dtype)
    kw = dict(num_layers=L, bidirectional=D == 2, layer_masks=lmasks, recurrent_masks=rmasks)
    y, h_n, c_n, cache = reference.forward(cell, x, w, h0, c0, lengths, **kw)
    got = engine_forward(cell, x, w, h0, c0, lengths, training=True, _plan_override=plan, **kw)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert rel_err(got[0], y) <= tol and rel_err(got[1], h_n) <= tol
    plain = engine_forward(cell, x, w, h0, c0, lengths, num_layers=L, bidirectional=D == 2)
    assert not np.allclose(plain[0], got[0])          # the masks did something
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    want = reference.backward(cache, dy, dh_n, None)
    back = bptt.backward(cell, w, got[3], dy, dh_n, None, x=x, h0=h0, c0=c0)
    floor = FLOOR[np.dtype(dtype)] * max(float(np.max(np.abs(a))) for a in [want[0], want[1]] +
                       list(want[3].values())) + 1e-30
    errs = {"dx": rel_err(back[0], want[0], floor), "dh0": rel_err(back[1], want[1], floor)}
    errs.update({n: rel_err(back[3][n], want[3][n], floor) for n in want[3]})
    check(errs, dtype)

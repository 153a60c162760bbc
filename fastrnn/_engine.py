"""Thin Python driver of the compiled forward engine (``fastrnn._forward``).

Inputs arrive validated by the layers (C-contiguous arrays of one dtype, float32 or float64;
``lengths`` int64 or None).  This module picks an execution plan and hands everything to one
Cython call (``_forward.forward_stack``), which allocates every buffer once, sorts
variable-length batches and runs kernels that never allocate in the time loop.

Private-package API
-------------------
forward(cell, x, weights, h0=None, c0=None, lengths=None, *, num_layers=1,
        bidirectional=False, training=False) -> (y, h_n, c_n, workspace)
make_stepper(cell, weights, num_layers=1) -> Stepper;  Stepper.step(x_t, h=None, c=None)
set_num_threads(n), get_num_threads()

Kernels: the C kernels are compiled once per instruction set (``_forward.compiled_isas()``:
x86-64 baseline, AVX2 + FMA, AVX-512; NEON on aarch64); at import the best one this CPU can run
is used, or the one named by the environment variable ``FASTRNN_ISA`` (``baseline``, ``avx2``,
``avx512``, ``neon``), which can force a lower path but never one the CPU lacks.
``fastrnn.show_config()`` says which is in use.

Threads: the engine uses ``get_num_threads()`` OpenMP threads (default: the CPU count); its
GEMMs are its own kernels, no BLAS is called.  Neither forward nor a Stepper keeps state
between calls except the Stepper's weight snapshot and scratch buffers, so one Stepper must not
be used from two threads at once (forward may be).
"""
import contextlib
import importlib.metadata
import os
import platform

import numpy as np

from . import _forward

__all__ = ["forward", "make_stepper", "Stepper", "set_num_threads", "get_num_threads", "matmul",
           "isa", "supported_isas", "compiled_isas", "use_isa", "show_config", "config",
           "TANH_F32_MAX_ABS_ERR", "SIGMOID_F32_MAX_ABS_ERR"]

#: documented bounds of the float32 activation approximations (float64 uses exact libm)
TANH_F32_MAX_ABS_ERR = _forward.TANH_F32_MAX_ABS_ERR
SIGMOID_F32_MAX_ABS_ERR = _forward.SIGMOID_F32_MAX_ABS_ERR

_CELLS = {"rnn_tanh": (0, 1), "rnn_relu": (1, 1), "lstm": (2, 4), "gru": (3, 3)}

# ----------------------------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------------------------

_num_threads = max(1, min(os.cpu_count() or 1, _forward.max_threads()))
_forward.set_threads(_num_threads)


def set_num_threads(n):
    """Set the number of threads the engine uses (>= 1)."""
    global _num_threads
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n
    _forward.set_threads(n)


def get_num_threads():
    """Number of threads the engine uses."""
    return _num_threads


# ----------------------------------------------------------------------------------------------
# instruction sets
# ----------------------------------------------------------------------------------------------

compiled_isas = _forward.compiled_isas
supported_isas = _forward.supported_isas
isa = _forward.isa


def _select_isa_from_environment():
    """Honour ``FASTRNN_ISA`` (at import): a clear error for a name this build or this CPU
    cannot run, never an illegal instruction."""
    want = os.environ.get("FASTRNN_ISA", "").strip().lower()
    if not want or want in ("auto", "best"):
        return
    if want not in compiled_isas():
        raise ValueError(f"FASTRNN_ISA={want!r}: not an instruction set of this build "
                         f"(it has: {', '.join(compiled_isas())}; or 'auto')")
    if want not in supported_isas():
        raise ValueError(f"FASTRNN_ISA={want!r}: this CPU cannot run it (it can run: "
                         f"{', '.join(supported_isas())})")
    _forward.set_isa(want)


_select_isa_from_environment()


@contextlib.contextmanager
def use_isa(name):
    """Run the engine on the kernels of instruction set ``name`` inside the block (for tests and
    benchmarks; not while another thread runs the engine)."""
    old = _forward.isa()
    _forward.set_isa(name)
    try:
        yield
    finally:
        _forward.set_isa(old)


def cpu_model():
    """The CPU's model name as the OS reports it (``/proc/cpuinfo`` on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def config():
    """What the engine runs on, as a dict (see :func:`show_config`)."""
    from . import __version__

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    info = _forward.isa_info()
    return {
        "fastrnn": __version__,
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "isa": isa(),
        "isa_forced": os.environ.get("FASTRNN_ISA") or None,
        "compiled_isas": compiled_isas(),
        "supported_isas": supported_isas(),
        "register_tile": f"{info['tile_rows']} rows x {info['tile_vectors']} vectors of "
                         f"{info['vector_bytes']} bytes",
        "panel_width": {"float32": info["panel_width_float32"],
                        "float64": info["panel_width_float64"]},
        "threads": get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": version("numba"),
    }


def show_config(mode="stdout"):
    """Print (``mode="stdout"``) or return (``mode="dicts"``) the engine's configuration.

    In the spirit of ``numpy.show_config()``: the instruction set whose kernels are in use
    (and whether ``FASTRNN_ISA`` forced it), the sets compiled into this build and those this
    CPU can run, the register tile, the engine's thread count and the versions that matter.

    Parameters
    ----------
    mode : {"stdout", "dicts"}
        Print a readable summary, or return it as a dict.
    """
    info = config()
    if mode == "dicts":
        return info
    if mode != "stdout":
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts', got {mode!r}")
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:<{width}}  {value if value is not None else '-'}")
    return None


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------

#: below this many multiply-adds per recurrent step, one thread is faster than any split
MIN_PARALLEL_STEP_WORK = 1 << 15
#: below this many multiply-adds the input projection runs on one thread
MIN_PARALLEL_PROJ_WORK = 1 << 22


#: the dot-product kernel on un-packed weights (mode 1) is the default for hidden sizes from
#: DOT_KERNEL_MIN_H when a call has fewer than H / DOT_KERNEL_H_PER_ROW rows (batch x
#: timesteps): then packing W_hh (a transpose of G*H*H elements) is not amortised by the steps.
#: Measured with the per-target kernels (Zen 5, AVX2 and AVX-512 alike, 2 threads): LSTM
#: B=1 T=10 H=512 and B=2 T=30 H=1024 are 15-40% faster without packing; B=4 T=25 H=512,
#: B=1 T=50 H=256 and B=8 T=10 H=256 are 10-30% faster with it.
DOT_KERNEL_MIN_H = 256
DOT_KERNEL_H_PER_ROW = 8

#: recurrent GEMM modes (the third element of a plan)
MODE_PANEL, MODE_DOT = 0, 1


def _plan(B, H, G, nthreads, T=None):
    """Choose (nb, nu, mode): batch blocks, unit blocks, recurrent GEMM kernel.

    Kernels: ``MODE_PANEL`` (the engine's register-tiled kernel on weights panel-packed once
    per call; best for small and medium H), ``MODE_DOT`` (dot-product kernel on the weights as
    given: no per-call transpose of a large W_hh).  Two ways to use several cores:

    * batch blocks (nb > 1): independent sequences per thread, no synchronisation; each core
      reads all of W_hh, so it suits small H with enough batch rows;
    * unit blocks (nu > 1): each core owns a slice of the hidden units (and of W_hh, which then
      stays in its own L2) and the threads meet at one barrier per step; for large H or small B.
    """
    few_rows = T is not None and B * T * DOT_KERNEL_H_PER_ROW < H
    mode = MODE_DOT if H >= DOT_KERNEL_MIN_H and few_rows else MODE_PANEL
    if nthreads <= 1 or B * G * H * H < MIN_PARALLEL_STEP_WORK:
        return 1, 1, mode
    if H >= 256 or B < 4 * nthreads:
        return 1, nthreads, mode
    return nthreads, 1, mode


def _biases(weights, sfx, cell_code, G, H, dtype):
    """(bx, bhn): bias added to the input projection, and the GRU b_hn term."""
    b_ih = weights.get("bias_ih" + sfx)
    b_hh = weights.get("bias_hh" + sfx)
    bx = np.zeros(G * H, dtype=dtype)
    bhn = np.zeros(H if cell_code == 3 else 1, dtype=dtype)
    if b_ih is not None:
        bx += b_ih
    if b_hh is not None:
        if cell_code == 3:
            bx[:2 * H] += b_hh[:2 * H]
            bhn[:] = b_hh[2 * H:]
        else:
            bx += b_hh
    return bx, bhn


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------

def forward(cell, x, weights, h0=None, c0=None, lengths=None, *, num_layers=1,
            bidirectional=False, training=False, _plan_override=None):
    """Compiled forward pass of a stacked (bi)directional RNN / LSTM / GRU.

    Parameters
    ----------
    cell : {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    x : ndarray (B, T, I), float32 or float64, C-contiguous (validated by the caller)
    weights : dict of ndarray
        PyTorch names and layouts: ``weight_ih_l{k}`` (G*H, I_k), ``weight_hh_l{k}`` (G*H, H),
        optional ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), ``_reverse`` suffix for direction 1.
    h0, c0 : ndarray (num_layers*D, B, H) or None (zeros); c0 only for LSTM
    lengths : int64 ndarray (B,) with values in 1..T, any order, or None (all T)
    num_layers, bidirectional : stacking / directions (D = 2 if bidirectional)
    training : bool
        If True, also return the workspace that BPTT needs.

    Returns
    -------
    y : ndarray (B, T, D*H); zeros at t >= lengths[b]
    h_n : ndarray (num_layers*D, B, H), state after each sequence's last valid step
    c_n : ndarray like h_n (LSTM) or None
    workspace : dict or None
        None unless ``training``.  Otherwise (all arrays in the caller's batch order, indexed by
        the real time index t, zeros at t >= lengths[b]; direction d = 0 forward, 1 reverse)::

            "cell", "num_layers", "num_directions", "hidden_size": as given
            "lengths":  int64 (B,)
            "x", "h0", "c0": the call's input and initial states (references, not copies;
                        None where not given / not LSTM)
            "outputs":  list over layers of (B, T, D*H) -- layer l's output, i.e. the hidden
                        state sequence h_t of (l, d) is outputs[l][:, :, d*H:(d+1)*H] and the
                        input of layer l+1; outputs[-1] is y itself (no copy)
            "gates":    list over layers of (D, B, T, G*H), gate activations *after* the
                        nonlinearity at step t: LSTM [sig(i), sig(f), tanh(g), sig(o)],
                        GRU [r, z, n]; None for the plain RNN (its activation is h_t itself)
            "c":        LSTM: list over layers of (D, B, T, H) cell state after step t; else None
            "hn":       GRU: list over layers of (D, B, T, H), h_{t-1} W_hn^T + b_hn; else None

        The state *before* step t is h at t-1 (forward) / t+1 (reverse) or h0/c0 at each
        sequence's first step.  Size: L*B*T*(D*H + D*G*H [+ D*H]) elements (plus c / hn).
    """
    code, G = _CELLS[cell]
    B, T, I = x.shape
    D = 2 if bidirectional else 1
    H = weights["weight_hh_l0"].shape[1]
    nthreads = _num_threads
    if _plan_override is not None:
        nb, nu, mode = _plan_override
    else:
        nb, nu, mode = _plan(B, H, G, nthreads, T)
    w_ih, w_hh, b_ih, b_hh = [], [], [], []
    for layer in range(num_layers):
        for d in range(D):
            sfx = f"_l{layer}_reverse" if d else f"_l{layer}"
            w_ih.append(weights["weight_ih" + sfx])
            w_hh.append(weights["weight_hh" + sfx])
            b_ih.append(weights.get("bias_ih" + sfx))
            b_hh.append(weights.get("bias_hh" + sfx))
    proj_threads = nthreads if B * T * max(I, H * D) * G * H >= MIN_PARALLEL_PROJ_WORK else 1
    y, h_n, c_n, ws = _forward.forward_stack(
        code, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, num_layers, D, training,
        nthreads, nb, nu, int(mode), proj_threads)
    if ws is not None:
        ws.update(cell=cell, num_layers=num_layers, num_directions=D, hidden_size=H,
                  x=x, h0=h0, c0=c0 if code == 2 else None)
    return y, h_n, c_n, ws


# ----------------------------------------------------------------------------------------------
# GEMM for the dense parts of BPTT
# ----------------------------------------------------------------------------------------------

#: ``matmul(a, b, trans_a=True)`` computes ``(b.T @ a).T`` when b has at most this many columns
SWAP_MAX_N = 128


def matmul(a, b, trans_a=False, a2=None, out=None):
    """``a @ b`` (``a.T @ b`` if ``trans_a``) on the engine's own kernel and threads.

    ``a``, ``b``: 2-D arrays of one dtype (float32 or float64) with unit column stride (rows may
    be strided, e.g. column slices).  Returns a new C-contiguous array, or ``out`` (C-contiguous,
    the product's shape) with the product added to it.  Used by BPTT for its large GEMMs over
    all timesteps, so that they run at the FMA rate of our kernels and on the engine's threads
    (no second thread pool spinning beside ours).  With ``a2`` (``trans_a`` only, same rows as
    ``a``): ``[a | a2].T @ b``, both products on one packing of ``b``.
    """
    if out is not None:
        _forward.gemm(a, b, out, bool(trans_a), _num_threads, a2, True)
        return out
    if a2 is not None:
        out = np.empty((a.shape[1] + a2.shape[1], b.shape[1]), dtype=a.dtype)
        _forward.gemm(a, b, out, True, _num_threads, a2)
        return out
    if trans_a and b.shape[1] <= SWAP_MAX_N and b.shape[1] < a.shape[1] \
            and a.shape[0] == b.shape[0]:
        # a.T @ b = (b.T @ a).T: the transposed operand is packed into micro-panels of the
        # tile's rows, at a cost proportional to its size, and b's few columns would fill the
        # column panels (``_forward.panel_width``: 64 float32 on AVX-512) only partly; then b
        # takes that role.  Measured (AVX-512, 2 threads, float32): 256 x 3200 x 32 from 66 to
        # 246 GFLOP/s; with wide b (512 columns) it loses.
        out_t = np.empty((b.shape[1], a.shape[1]), dtype=a.dtype)
        _forward.gemm(b, a, out_t, True, _num_threads)
        return np.ascontiguousarray(out_t.T)
    m = a.shape[1] if trans_a else a.shape[0]
    out = np.empty((m, b.shape[1]), dtype=a.dtype)
    _forward.gemm(a, b, out, bool(trans_a), _num_threads)
    return out


# ----------------------------------------------------------------------------------------------
# streaming
# ----------------------------------------------------------------------------------------------

#: multiply-adds per step from which the streaming step splits hidden units over two threads
STEP_PARALLEL_MIN_WORK = 1 << 18   # measured: LSTM H=256 3x faster on 2 threads, H=128 not


class Stepper:
    """One-timestep-at-a-time inference of a stacked unidirectional RNN / LSTM / GRU.

    ``make_stepper(cell, weights, num_layers)`` prepares (transposes and packs) the weights
    once.  The stepper holds a *snapshot*: changing the caller's weight arrays afterwards does
    not affect it; rebuilding after a weight update is the caller's business.

    ``y_t, h_new, c_new = stepper.step(x_t, h=None, c=None)``

    * ``x_t`` (B, I); ``h``, ``c`` (num_layers, B, H) C-contiguous of the weights' dtype, or
      None for zeros (``c`` is ignored unless LSTM).
    * returns newly allocated ``h_new`` (and ``c_new`` for LSTM, else None); ``y_t`` is the view
      ``h_new[-1]`` (B, H).  The inputs are never modified, so the previous state stays valid.
    * uses the engine's own register-tiled kernel on weights packed at construction (no BLAS);
      small steps run on the calling thread (about a microsecond of overhead plus the
      arithmetic), large ones split the hidden units over two threads.
    """

    def __init__(self, cell, weights, num_layers=1):
        code, G = _CELLS[cell]
        H = weights["weight_hh_l0"].shape[1]
        I = weights["weight_ih_l0"].shape[1]
        dtype = weights["weight_hh_l0"].dtype
        w_ih, w_hh, bxs, bhns = [], [], [], []
        for layer in range(num_layers):
            sfx = f"_l{layer}"
            w_ih.append(weights["weight_ih" + sfx])
            w_hh.append(weights["weight_hh" + sfx])
            bx, bhn = _biases(weights, sfx, code, G, H, dtype)
            bxs.append(bx)
            bhns.append(bhn)
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = H
        self.dtype = dtype
        # two unit blocks (one per core) once a step is worth a thread hand-off
        blocks = 2 if G * H * (I + H) >= STEP_PARALLEL_MIN_WORK and H >= 64 else 1
        self._kernel = _forward.StepKernel(code, w_ih, w_hh, bxs, bhns, blocks,
                                           STEP_PARALLEL_MIN_WORK)
        self.step = self._kernel.step   # bound C method: no Python wrapper frame per call

    def step(self, x_t, h=None, c=None):  # pragma: no cover - replaced per instance in __init__
        return self._kernel.step(x_t, h, c)


def make_stepper(cell, weights, num_layers=1):
    """Build a :class:`Stepper` (weights snapshotted and packed once)."""
    return Stepper(cell, weights, num_layers)

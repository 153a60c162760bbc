"""Thin Python driver of the compiled forward engine (``fastrnn._forward``).

Inputs arrive validated by the layers (C-contiguous arrays of one dtype, float32 or float64;
``lengths`` int64 or None).  This module allocates every buffer once, sorts variable-length
batches, prepares weights and calls the Cython kernels, which never allocate in the time loop.

Public (private-package) API
----------------------------
forward(cell, x, weights, h0=None, c0=None, lengths=None, *, num_layers=1,
        bidirectional=False, training=False) -> (y, h_n, c_n, workspace)
make_stepper(cell, weights, num_layers=1) -> Stepper
set_num_threads(n), get_num_threads()
"""
import os
import threading
from contextlib import contextmanager

import numpy as np

from . import _forward

__all__ = ["forward", "make_stepper", "Stepper", "set_num_threads", "get_num_threads",
           "TANH_F32_MAX_ABS_ERR", "SIGMOID_F32_MAX_ABS_ERR"]

#: documented bounds of the float32 activation approximations (float64 uses exact libm)
TANH_F32_MAX_ABS_ERR = _forward.TANH_F32_MAX_ABS_ERR
SIGMOID_F32_MAX_ABS_ERR = _forward.SIGMOID_F32_MAX_ABS_ERR

_CELLS = {"rnn_tanh": (0, 1), "rnn_relu": (1, 1), "lstm": (2, 4), "gru": (3, 3)}

# ----------------------------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------------------------

_num_threads = max(1, min(os.cpu_count() or 1, _forward.max_threads()))


def set_num_threads(n):
    """Set the number of threads the engine uses (>= 1).  BLAS stays single-threaded inside."""
    global _num_threads
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n


def get_num_threads():
    """Number of threads the engine uses."""
    return _num_threads


_blas_lock = threading.Lock()
_blas_fns = None          # (get, set) ctypes functions of scipy's OpenBLAS (the one cython_blas uses)


def _scipy_blas_fns():
    """ctypes (get_num_threads, set_num_threads) of scipy's OpenBLAS, or None if not found.

    threadpoolctl (when installed) locates the library once; the calls themselves then cost
    about a microsecond, unlike a ``threadpool_limits`` context (hundreds of microseconds).
    """
    global _blas_fns
    if _blas_fns is None:
        with _blas_lock:
            if _blas_fns is None:
                fns = ()
                try:
                    from threadpoolctl import ThreadpoolController
                    import scipy.linalg.cython_blas  # noqa: F401  (make sure it is loaded)
                    for c in ThreadpoolController().lib_controllers:
                        folder = os.path.basename(os.path.dirname(c.filepath))
                        if c.internal_api != "openblas" or "scipy" not in folder:
                            continue
                        for prefix in ("scipy_openblas", "openblas"):
                            get = getattr(c.dynlib, prefix + "_get_num_threads", None)
                            put = getattr(c.dynlib, prefix + "_set_num_threads", None)
                            if get is not None and put is not None:
                                fns = (get, put)
                                break
                        if fns:
                            break
                except Exception:  # threadpoolctl missing or unusable: leave BLAS alone
                    fns = ()
                _blas_fns = fns
    return _blas_fns or None


@contextmanager
def _single_threaded_blas():
    """Keep scipy's OpenBLAS single-threaded while the engine calls it from its own threads."""
    fns = _scipy_blas_fns()
    if fns is None:
        yield
        return
    get, put = fns
    old = get()
    if old == 1:
        yield
        return
    put(1)
    try:
        yield
    finally:
        put(old)


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------

#: below this many multiply-adds per recurrent step, one thread is faster than any split
MIN_PARALLEL_STEP_WORK = 1 << 15


def _plan(B, H, G, nthreads):
    """Choose (nb, nu, use_blas): batch blocks, unit blocks, recurrent GEMM backend.

    The recurrent GEMM uses the engine's own panel-packed kernel (measured on par with or
    faster than single-threaded OpenBLAS on these skinny shapes, and free of per-call
    packing).  Two ways to use several cores:

    * batch blocks (nb > 1): independent sequences per thread, no synchronisation; each core
      reads all of W_hh, so it suits small H with enough batch rows;
    * unit blocks (nu > 1): each core owns a slice of the hidden units (and of W_hh, which then
      stays in its own L2) and the threads meet at one barrier per step; for large H or small B.
    """
    if nthreads <= 1 or B * G * H * H < MIN_PARALLEL_STEP_WORK:
        return 1, 1, False
    if H >= 256 or B < 4 * nthreads:
        return 1, nthreads, False
    return nthreads, 1, False


def _split(n, parts, align):
    """Boundaries of ``parts`` contiguous chunks of range(n), chunk sizes multiples of align."""
    if parts <= 1 or n < 2 * align:
        return np.array([0, n], dtype=np.int64)
    step = -(-n // parts)
    step = -(-step // align) * align
    bounds = list(range(0, n, step)) + [n]
    return np.array(bounds, dtype=np.int64)


def _panels(wt):
    """Panel-pack W (K, N) for the small GEMM kernel: column panels of width NR, each (K, nr)."""
    K, N = wt.shape
    nr = _forward.panel_width(wt.dtype)
    if N <= nr:
        return np.ascontiguousarray(wt).ravel()
    return np.concatenate([np.ascontiguousarray(wt[:, j:j + nr]).ravel() for j in range(0, N, nr)])


def _pack_small(w_hh, G, H, ublk):
    """Recurrent weights for the small kernel: per unit block, W_hh^T restricted to the block's
    units, (H, G*nj) with columns [gate 0 units | gate 1 units | ...], panel-packed;
    blocks concatenated (block j starts at H*G*ublk[j])."""
    w3 = w_hh.reshape(G, H, H)
    parts = []
    for j in range(len(ublk) - 1):
        u0, u1 = int(ublk[j]), int(ublk[j + 1])
        parts.append(_panels(w3[:, u0:u1, :].transpose(2, 0, 1).reshape(H, G * (u1 - u0))))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
    B, T, _ = x.shape
    D = 2 if bidirectional else 1
    H = weights["weight_hh_l0"].shape[1]
    dtype = x.dtype
    nthreads = _num_threads
    partial = lengths is not None and bool((lengths != T).any())
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    tmax = int(lengths.max()) if B else 0

    nb, nu, use_blas = _plan_override if _plan_override is not None else _plan(B, H, G, nthreads)
    nb = max(1, min(nb, B))
    ublk = _split(H, nu, 16 if H >= 32 else 1)
    nu = len(ublk) - 1
    srt = np.argsort(-lengths, kind="stable")
    if nb > 1:
        blocks = [srt[i::nb] for i in range(nb)]
        order = np.ascontiguousarray(np.concatenate(blocks), dtype=np.int64)
        bblk = np.cumsum([0] + [len(b_) for b_ in blocks]).astype(np.int64)
    else:
        order = np.ascontiguousarray(srt, dtype=np.int64)
        bblk = np.array([0, B], dtype=np.int64)
    rows = int(np.max(np.diff(bblk)))
    max_nj = int(np.max(np.diff(ublk)))
    ldr = (G + (1 if code == 3 else 0)) * max_nj
    scratch = np.empty((len(bblk) - 1) * nu * rows * ldr, dtype=dtype).reshape(-1, rows * ldr)
    alloc = np.zeros if partial else np.empty

    h_n = np.empty((num_layers * D, B, H), dtype=dtype)
    c_n = np.empty((num_layers * D, B, H), dtype=dtype) if code == 2 else None
    dummy = np.zeros((1, 1), dtype=dtype)
    hbuf = np.empty((2, B, H), dtype=dtype)
    cbuf = np.empty((B, H), dtype=dtype) if code == 2 else dummy
    ws = None
    if training:
        ws = {"cell": cell, "num_layers": num_layers, "num_directions": D, "hidden_size": H,
              "lengths": lengths.copy(), "outputs": [],
              "gates": [] if code >= 2 else None,
              "c": [] if code == 2 else None, "hn": [] if code == 3 else None}

    inp = x
    with _single_threaded_blas():
        for layer in range(num_layers):
            I_l = inp.shape[2]
            y_l = alloc((B, T, D * H), dtype=dtype)
            xp = np.empty((B * T, D * G * H), dtype=dtype)
            x2 = inp.reshape(B * T, I_l)
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                _forward.input_projection(x2, weights["weight_ih" + sfx], xp, d * G * H, nthreads)
            if training:
                ws["outputs"].append(y_l)
                wg_l = alloc((D, B, T, G * H), dtype=dtype) if code >= 2 else None
                wc_l = alloc((D, B, T, H), dtype=dtype) if code == 2 else None
                whn_l = alloc((D, B, T, H), dtype=dtype) if code == 3 else None
                if code >= 2:
                    ws["gates"].append(wg_l)
                if code == 2:
                    ws["c"].append(wc_l)
                if code == 3:
                    ws["hn"].append(whn_l)
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                idx = layer * D + d
                w_hh = weights["weight_hh" + sfx]
                whh = w_hh.reshape(-1) if use_blas else _pack_small(w_hh, G, H, ublk)
                bx, bhn = _biases(weights, sfx, code, G, H, dtype)
                if h0 is None:
                    hbuf[0].fill(0)
                else:
                    np.take(h0[idx], order, axis=0, out=hbuf[0])
                if code == 2:
                    if c0 is None:
                        cbuf.fill(0)
                    else:
                        np.take(c0[idx], order, axis=0, out=cbuf)
                if training and code >= 2:
                    wg = wg_l[d].reshape(B * T, G * H)
                    wc = wc_l[d].reshape(B * T, H) if code == 2 else dummy
                    whn = whn_l[d].reshape(B * T, H) if code == 3 else dummy
                else:
                    wg = wc = whn = dummy
                _forward.recurrence(code, d == 1, tmax, xp, d * G * H, bx, bhn, whh, use_blas,
                                    ublk, bblk, order, lengths, hbuf,
                                    cbuf, y_l.reshape(B * T, D * H), d * H, h_n[idx],
                                    c_n[idx] if code == 2 else dummy, scratch, ldr,
                                    training and code >= 2, wg, wc, whn, nthreads)
            inp = y_l
    return inp, h_n, c_n, ws


# ----------------------------------------------------------------------------------------------
# streaming
# ----------------------------------------------------------------------------------------------

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
    * runs on the calling thread with the engine's own small GEMM kernel (no BLAS, no thread
      start-up); per call overhead is about a microsecond plus the arithmetic.
    """

    def __init__(self, cell, weights, num_layers=1):
        code, G = _CELLS[cell]
        H = weights["weight_hh_l0"].shape[1]
        dtype = weights["weight_hh_l0"].dtype
        wih_t, whh_t, bxs, bhns = [], [], [], []
        for layer in range(num_layers):
            sfx = f"_l{layer}"
            wih_t.append(_panels(weights["weight_ih" + sfx].T))
            whh_t.append(_panels(weights["weight_hh" + sfx].T))
            bx, bhn = _biases(weights, sfx, code, G, H, dtype)
            bxs.append(bx)
            bhns.append(bhn)
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = H
        self.dtype = dtype
        I = weights["weight_ih_l0"].shape[1]
        self._kernel = _forward.StepKernel(code, I, H, wih_t, whh_t, bxs, bhns)
        self.step = self._kernel.step   # bound C method: no Python wrapper frame per call

    def step(self, x_t, h=None, c=None):  # pragma: no cover - replaced per instance in __init__
        return self._kernel.step(x_t, h, c)


def make_stepper(cell, weights, num_layers=1):
    """Build a :class:`Stepper` (weights snapshotted and packed once)."""
    return Stepper(cell, weights, num_layers)

"""Numba kernels of the compiled BPTT (private; imported lazily by :mod:`fastrnn.engine.bptt`).

Importing this module imports Numba (about 0.45 s) and registers the C entry points of the
engine that the kernels call by symbol name (``_compiled.bptt_symbols``: the engine's GEMM and
its denormal switch), so that a kernel loaded from Numba's cache finds them in a new process
too.  Every kernel is ``numba.njit(cache=True, nogil=True)``.

One time-loop skeleton (:func:`make_kernel`) walks one layer's timesteps backwards for a list
of work items (direction, rows); what differs between cells is the gate function inlined into
it (the backward math of one row and step, e.g. :func:`_lstm_step`) and a few compile-time
facts (which rows of the workspace it reads, whether it has a cell state).  Every kernel is
called as ``kernel(items, *config)``, ``config`` a :class:`BpttConfig` of one layer's arrays;
both dtypes run through the same code (Numba compiles one specialisation per dtype).
"""
from collections import namedtuple

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic, register_jitable

from ..cell_table import (GRU, GRU_RESET_BEFORE, LSTM, LSTM_PEEPHOLE, RNN_LEAKY_RELU, RNN_RELU,
                          RNN_TANH)
from . import _compiled

for _name, _address in _compiled.bptt_symbols().items():
    llvm.add_symbol(_name, _address)

_ext_gemm_f32 = types.ExternalFunction(
    "fastrnn_dh_gemm_f32", types.void(types.intp, types.intp, types.intp, types.uintp,
                                      types.uintp, types.uintp, types.intp, types.intp))
_ext_gemm_f64 = types.ExternalFunction(
    "fastrnn_dh_gemm_f64", types.void(types.intp, types.intp, types.intp, types.uintp,
                                      types.uintp, types.uintp, types.intp, types.intp))
_ext_ftz_on = types.ExternalFunction("fastrnn_ftz_on", types.uintp())
_ext_ftz_off = types.ExternalFunction("fastrnn_ftz_off", types.uintp(types.uintp))


def _jit(**options):
    """``numba.njit(cache=True, nogil=True, **options)``."""
    return numba.njit(cache=True, nogil=True, **options)


@intrinsic
def _prefetch_line(typingctx, address, write):
    """LLVM's prefetch of one cache line into all cache levels (``write``: 1 for a line about
    to be written); compiled into the kernels, so cached kernels need nothing at load time."""
    def codegen(context, builder, signature, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        ptr = builder.inttoptr(args[0], i8p)
        rw = builder.trunc(args[1], i32)
        # the rw operand must be a constant: pick between two calls
        with builder.if_else(builder.icmp_unsigned("!=", rw, i32(0))) as (then, other):
            with then:
                builder.call(fn, [ptr, i32(1), i32(3), i32(1)])
            with other:
                builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(types.uintp, types.intp), codegen


@_jit(inline="always")
def _prefetch(a, write):
    """Prefetch the cache lines of the 1-D contiguous array ``a`` (its next use is a step
    away: the rows of the next timestep are scattered, 1-2 KiB each, too short for the
    hardware prefetcher to start on before the loop needs them)."""
    base = a.ctypes.data
    end = base + a.size * a.itemsize
    p = base & ~np.uintp(63)
    while p < end:
        _prefetch_line(p, write)
        p += 64


# ----------------------------------------------------------------------------------------------
# The configuration of one layer's kernel call
# ----------------------------------------------------------------------------------------------

BpttConfig = namedtuple("BpttConfig", [
    "one", "H", "GH", "relu", "slope", "order", "lengths",
    "outputs", "gates", "cells", "hn", "init", "has_init", "dy", "has_dy", "dh_n", "dc_n",
    "w_packed", "is32", "gemm_threads", "zeros", "rmask", "has_rmask", "peep", "w_split",
    "da", "dah", "dh0", "dc0", "dbias", "dpeep", "P", "w_hr", "dg", "mo",
])
BpttConfig.__doc__ = """Everything one layer's BPTT kernel reads and writes.

A kernel is called as ``kernel(items, *config)`` and takes these fields as its parameters, in
this order (Numba types a namedtuple argument in Python on every call, 2 us; separate arrays in
C).  ``D`` is the layer's number of directions; arrays are C-contiguous, in the layer's dtype
unless said otherwise, and an array a cell does not have is a placeholder of the same number of
dimensions (``(D, B, T, 0)`` for the workspace arrays).

one, H, GH, relu, slope
    1 in the dtype (types the arithmetic); hidden size; gate columns per direction (G * H); the
    RNN's nonlinearity is a relu (else tanh), of negative slope ``slope`` (in the dtype: 0, or
    the leaky relu's).
order, lengths : int64 (B,)
    The rows as the planner laid them out; the sequences' lengths.
outputs, gates, cells, hn
    The forward's workspace: (B, T, D*H) h_t; (D, B, T, GH) gate activations (LSTM, GRU);
    (D, B, T, H) LSTM c_t; (D, B, T, H) GRU ``h_{t-1} W_hn^T + b_hn``.
init, has_init
    (D, B, H) the state before the first step (LSTM c0, else h0); without one, zeros.
dy, has_dy, dh_n, dc_n
    (B, T, D*H) the gradient on the outputs (without one, zeros); (D, B, H) the gradients on
    the final h and c.
w_packed, is32, gemm_threads
    (D, packed) W_hh packed by ``_compiled.pack_rows``; float32?; threads of each step's GEMM.
zeros : (H,)
    A row of zeros, standing for absent inputs.
rmask, has_rmask
    (D, B, H) the recurrent dropout masks (W_hh read ``h_{t-1} * rmask``: the gradient that
    comes back through W_hh is multiplied by them); without them, not read.
peep
    (D, 3H) the peephole LSTM's peephole weights ``p_i, p_f, p_o`` ((D, 0) for other cells).
w_split
    The reset-before GRU: where in ``w_packed[d]`` its W_hn panels start (its W_hr, W_hz
    panels come first); 0 for the other cells.
da, dah, dh0, dc0, dbias
    OUT: (B, T, D*GH) the gate pre-activation gradients; the GRU's recurrent-side ones (``da``
    itself for the other cells); (D, B, H) the gradients on h0 and c0; float64 (items, GH, or
    4H for the GRU) bias-gradient sums per work item.
dpeep
    OUT: float64 (items, 3H) the peephole LSTM's peephole-gradient sums per work item
    ((items, 0) for other cells).
P, w_hr, dg, mo
    The width of h (the outputs, dy, dh_n, dh0, rmask): H, or a projected LSTM's proj_size;
    then also (D, packed) W_hr (P, H) packed by ``_compiled.pack_rows`` (``dm = g @ W_hr``),
    and OUT the operands of ``dW_hr = dg^T mo``: (B, T, D*P) the gradient on h_t (dy + what
    comes back from step t+1) and (B, T, D*H) ``m_t = o_t * tanh(c_t)``, recomputed from the
    workspace's gates and cell states (placeholders for the other cells).
"""


# ----------------------------------------------------------------------------------------------
# Shared pieces of the time loop
# ----------------------------------------------------------------------------------------------

_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}   # no nnan/ninf: keep NaN/Inf honest


@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _store_row(da, da_out, acc):
    """Copy the scratch row to its ``(b, t)`` place and add it to the bias-gradient sums."""
    for k in range(np.uint64(da.shape[0])):
        v = da[k]
        da_out[k] = v
        acc[k] += v


@_jit(inline="always")
def _dh_gemm(is32, M, N, K, a, bp, c, accumulate, nthreads):
    """``c[:M*N] (+)= a[:M*K] @ B`` (row-major), B panel-packed by ``_compiled.pack_rows``: the
    engine's register-tiled C kernel, at the FMA rate whatever BLAS the machine has, split over
    ``nthreads`` OpenMP threads when large enough."""
    if is32:
        _ext_gemm_f32(M, N, K, a.ctypes.data, bp.ctypes.data, c.ctypes.data, accumulate,
                      nthreads)
    else:
        _ext_gemm_f64(M, N, K, a.ctypes.data, bp.ctypes.data, c.ctypes.data, accumulate,
                      nthreads)


@_jit(fastmath=_FAST)
def _active(rev, t, n, nact, lens):
    """Number of rows with ``lens > t`` (prefix of the sorted rows), updated from ``nact``."""
    if not rev:
        while nact < n and lens[nact] > t:
            nact += 1
    else:
        while nact > 0 and lens[nact - 1] <= t:
            nact -= 1
    return nact


@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _mask_row(dh, mask, direct, add_direct):
    """``dh = dh * mask`` (+ ``direct``): a row's gradient on h_{t-1} under recurrent dropout."""
    for j in range(np.uint64(dh.shape[0])):
        v = dh[j] * mask[j]
        dh[j] = v + direct[j] if add_direct else v


@_jit(fastmath=_FAST)
def _zero_tail(da, b, L, xo, GH):
    """Zero ``da[b, t, xo:xo+GH]`` for the steps ``t >= L`` that a sequence never computed."""
    for t in range(L, da.shape[1]):
        da[b, t, xo:xo + GH] = 0


# ----------------------------------------------------------------------------------------------
# Gate functions: the backward math of one cell, for one row (batch row b, direction d) and step
# ----------------------------------------------------------------------------------------------
#
# ``step(one, H, relu, slope, h, gate, hn, prev, dy, dh, dc, da_row, dx_row, da_out, dah_out, acc,
#         peep, ct, pacc)``
#   one, H, relu, slope  as in BpttConfig
#   h, gate, hn   the step's rows of the workspace: h_t (H,), the gate activations (GH,), the
#                 GRU's hn (H,); zero-length rows for a cell without them
#   prev          (H,) the state before the step that the cell reads: LSTM c_{t-1}, else h_{t-1}
#   dy, dh        (H,) the gradients on the step's output and on h_t
#   dc            (H,) LSTM: dc_t in, dc_{t-1} out; GRU: out, the direct gradient on h_{t-1}
#   da_row        (GH,) out: the recurrent-side gate pre-activation gradients, the operand of the
#                 step's dh GEMM
#   dx_row        (GH,) GRU: scratch for the input-side ones
#   da_out, dah_out, acc   the (b, t) rows of da and dah where they are stored; the bias sums
#   peep, ct, pacc  the peephole LSTM's p_i, p_f, p_o (3H,), c_t, and its peephole-gradient sums
#
# Every array is a row (a view) that the kernel makes: views of the layer's arrays made inside
# an inlined function kept their reference counting (pairs of atomic calls) in the time loop
# (16 pairs per row and step with the layer's arrays passed in as one tuple: GRU 9% slower).
# Each loop walks views indexed by the loop counter alone (no
# ``k * H + j``: Numba's negative-index wraparound would then block SIMD) with ``H`` as its
# bound (not a view's length: 4% slower at H=32), gates addressed by *unsigned* offsets, with
# no data-dependent branches besides selects, so LLVM vectorises it (LSTM, H=128 float32: 3.2 ns
# per unit, against 7.1 with a view per gate).
#
# They are ``register_jitable`` functions rather than ``njit`` ones: a kernel made by
# :func:`make_kernel` closes over one, Numba's cache keys a closure on its pickled cell
# contents, and a dispatcher pickles with a per-process UUID (the cache would miss in every new
# process), a plain function by its name.  The price: Numba compiles each once more on its own
# to type it, 0.2-0.3 s of a kernel's first compile (4-5 s); a cached kernel does not pay it.

def _gate_fn(fn):
    """Register ``fn`` as a gate function the kernels inline (``register_jitable``)."""
    return register_jitable(inline="always", fastmath=_FAST, error_model="numpy")(fn)


@_gate_fn
def _rnn_step(one, H, relu, slope, h, gate, hn, prev, dy, dh, dc, da_row, dx_row, da_out,
              dah_out, acc, peep, ct, pacc):
    """Vanilla RNN: ``da = (dh + dy) * act'(a)`` from the output ``h = act(a)`` (a relu's
    output is positive exactly where its input is)."""
    zero = one - one
    for j in range(np.uint64(H)):
        g = dh[j] + dy[j]
        hv = h[j]
        if relu:
            da_row[j] = g if hv > zero else (g * slope if slope != zero else zero)
        else:
            da_row[j] = g * (one - hv * hv)
    _store_row(da_row, da_out, acc)


@_gate_fn
def _lstm_step(one, H, relu, slope, h, gate, hn, prev, dy, dh, dc, da_row, dx_row, da_out,
               dah_out, acc, peep, ct, pacc):
    """LSTM gates ``i, f, g, o``: their pre-activation gradients side by side, ``dc`` ->
    ``dc_{t-1}`` in place; ``tanh(c_t) = h_t / o_t``, ``prev`` is ``c_{t-1}``."""
    zero = one - one
    n = np.uint64(H)
    for j in range(n):
        g = dh[j] + dy[j]
        i = gate[j]
        f = gate[n + j]
        gv = gate[2 * n + j]
        o = gate[3 * n + j]
        tc = h[j] / o if o != zero else zero
        dcj = dc[j] + g * o * (one - tc * tc)
        dc[j] = dcj * f
        da_row[j] = dcj * gv * i * (one - i)
        da_row[n + j] = dcj * prev[j] * f * (one - f)
        da_row[2 * n + j] = dcj * i * (one - gv * gv)
        da_row[3 * n + j] = g * tc * o * (one - o)
    _store_row(da_row, da_out, acc)


@_gate_fn
def _lstm_peephole_step(one, H, relu, slope, h, gate, hn, prev, dy, dh, dc, da_row, dx_row,
                        da_out, dah_out, acc, peep, ct, pacc):
    """The peephole LSTM: :func:`_lstm_step` with the paths from ``c_t`` to ``o`` and from
    ``c_{t-1}`` (``prev``) to ``i`` and ``f`` through ``peep``, whose gradients ``pacc`` sums."""
    zero = one - one
    n = np.uint64(H)
    for j in range(n):
        g = dh[j] + dy[j]
        i = gate[j]
        f = gate[n + j]
        gv = gate[2 * n + j]
        o = gate[3 * n + j]
        tc = h[j] / o if o != zero else zero
        dao = g * tc * o * (one - o)
        dcj = dc[j] + g * o * (one - tc * tc) + dao * peep[2 * n + j]
        dai = dcj * gv * i * (one - i)
        daf = dcj * prev[j] * f * (one - f)
        dc[j] = dcj * f + dai * peep[j] + daf * peep[n + j]
        da_row[j] = dai
        da_row[n + j] = daf
        da_row[2 * n + j] = dcj * i * (one - gv * gv)
        da_row[3 * n + j] = dao
        pacc[j] += dai * prev[j]
        pacc[n + j] += daf * prev[j]
        pacc[2 * n + j] += dao * ct[j]
    _store_row(da_row, da_out, acc)


@_gate_fn
def _gru_step(one, H, relu, slope, h, gate, hn, prev, dy, dh, dc, da_row, dx_row, da_out,
              dah_out, acc, peep, ct, pacc):
    """GRU gates ``r, z, n`` (linear before reset), ``prev`` is ``h_{t-1}``: the input-side
    gradient ``[dr, dz, dn]`` (``dx_row``, stored at ``da_out``), the recurrent-side one
    ``[dr, dz, dn * r]`` (``da_row``, stored at ``dah_out``), ``dh * z`` (the direct path to
    ``h_{t-1}``) into ``dc``; the bias sums ``acc`` (4H) take ``[dr, dz, dn, dn * r]``."""
    n3 = np.uint64(H)
    for j in range(n3):
        g = dh[j] + dy[j]
        r = gate[j]
        z = gate[n3 + j]
        n = gate[2 * n3 + j]
        dn = g * (one - z) * (one - n * n)
        dz = g * (prev[j] - n) * z * (one - z)
        dr = dn * hn[j] * r * (one - r)
        dx_row[j] = dr
        dx_row[n3 + j] = dz
        dx_row[2 * n3 + j] = dn
        da_row[j] = dr
        da_row[n3 + j] = dz
        da_row[2 * n3 + j] = dn * r
        dc[j] = g * z
    G3 = np.uint64(3 * H)
    _store_row(dx_row, da_out, acc[:G3])
    for k in range(G3):
        dah_out[k] = da_row[k]
    for j in range(n3):
        acc[G3 + j] += da_row[2 * n3 + j]


# ----------------------------------------------------------------------------------------------
# The time-loop skeleton: one layer, a list of work items (direction, rows).
# Each item is an independent set of sequences walked backwards in time; the rows of an item are
# sorted by length (descending), so the active rows of a step are a prefix and one GEMM call
# per step pushes dh through W_hh for exactly those rows.
# ----------------------------------------------------------------------------------------------

def make_kernel(step, reads, carries_c=False, direct_dh=False, projected=False):
    """The BPTT kernel of one cell from its gate function.

    Parameters
    ----------
    step : function
        The cell's gate function (see above), inlined into the time loop.
    reads : set of str
        The rows of the workspace the gate function reads, among ``"h"``, ``"gates"``,
        ``"hn"`` and ``"prev"``: the kernel prefetches those of the step it walks next (and
        ``da``, ``dy``, the GRU's ``dah``), and selects ``prev`` only for a cell that reads it.
    carries_c : bool
        The cell has a cell state: ``dc`` runs from ``dc_n`` through the steps to ``dc0``, and
        ``prev`` is the cell state (LSTM).
    direct_dh : bool
        The gate function also writes a gradient on ``h_{t-1}`` outside W_hh (into ``dc``),
        added to the GEMM's result, and a recurrent-side ``dA`` of its own, ``dah`` (GRU).
    projected : bool
        An LSTM with a projection (``h_t = m_t W_hr^T``, ``P`` units): each step first forms
        the gradient ``g`` on ``h_t`` (kept in ``dg``) and ``dm = g @ W_hr`` (one more GEMM),
        recomputes ``m_t = o_t * tanh(c_t)`` (kept in ``mo``) and hands the gate function
        ``dm`` and ``m_t`` where it reads ``dh + dy`` and ``h_t``; W_hh's GEMM gives ``dh``
        of ``P`` units.

    Returns
    -------
    numba dispatcher
        ``kernel(items, *config)``: ``items`` int64 (n, 4), rows ``(direction, p0, p1, slot)``
        (the batch rows ``order[p0:p1]``, bias sums into ``dbias[slot]``); ``config`` a
        :class:`BpttConfig`.
    """
    unknown = set(reads) - {"h", "gates", "hn", "prev"}
    if unknown:
        raise ValueError(f"make_kernel: unknown rows {sorted(unknown)}")
    reads_h, reads_gates, reads_hn, reads_prev = (
        name in reads for name in ("h", "gates", "hn", "prev"))
    accumulate = 1 if direct_dh else 0

    @_jit(fastmath=_FAST, error_model="numpy")
    def kernel(items, one, H, GH, relu, slope, order, lengths,
               outputs, gates, cells, hn, init, has_init, dy, has_dy, dh_n, dc_n,
               w_packed, is32, gemm_threads, zeros, rmask, has_rmask, peep, w_split,
               da, dah, dh0, dc0, dbias, dpeep, P, w_hr, dg, mo):
        csr = _ext_ftz_on()          # denormals flushed to zero, as in the forward
        for w in range(items.shape[0]):
            d, p0, p1, slot = items[w, 0], items[w, 1], items[w, 2], items[w, 3]
            acc = dbias[slot]
            acc[:] = 0
            pacc = dpeep[slot]
            pacc[:] = 0
            n = p1 - p0
            rev = d == 1
            xo, ho, mh = d * GH, d * P, d * H
            dhb = np.empty(n * P, dtype=da.dtype)      # dh of each row
            dcb = np.empty(n * H, dtype=da.dtype)      # dc of each row (see the gate functions)
            dab = np.empty(n * GH, dtype=da.dtype)     # the step's GEMM operand, row by row
            dxr = np.empty(GH, dtype=da.dtype)         # scratch row
            gb = np.empty(n * P if projected else 0, dtype=da.dtype)    # dh + dy of each row
            dmb = np.empty(n * H if projected else 0, dtype=da.dtype)   # dm = (dh + dy) W_hr
            lens = np.empty(n, dtype=np.int64)
            for r in range(n):
                b = order[p0 + r]
                lens[r] = lengths[b]
                dhb[r * P:(r + 1) * P] = dh_n[d, b]
                if carries_c:
                    dcb[r * H:(r + 1) * H] = dc_n[d, b]
                _zero_tail(da, b, lens[r], xo, GH)
                if direct_dh:
                    _zero_tail(dah, b, lens[r], xo, GH)
            tmax = lens[0] if n > 0 else 0
            nact = n if rev else 0
            for s in range(tmax):
                t = s if rev else tmax - 1 - s
                nact = _active(rev, t, n, nact, lens)
                tn = t + 1 if rev else t - 1     # the step before t, walked next
                if projected and nact > 0:       # g = dh + dy, dm = g W_hr
                    for r in range(nact):
                        b = order[p0 + r]
                        gr = dg[b, t, ho:ho + P]
                        for j in range(P):
                            gr[j] = dhb[r * P + j] + dy[b, t, ho + j] if has_dy else \
                                dhb[r * P + j]
                        gb[r * P:(r + 1) * P] = gr
                    _dh_gemm(is32, nact, H, P, gb, w_hr[d], dmb, 0, gemm_threads)
                for r in range(nact):
                    b = order[p0 + r]
                    if 0 <= tn < lens[r]:        # prefetch its rows; prev is the state after it
                        if reads_gates:
                            _prefetch(gates[d, b, tn], 0)
                        if reads_hn:
                            _prefetch(hn[d, b, tn], 0)
                        if reads_h and not projected:
                            _prefetch(outputs[b, tn, ho:ho + H], 0)
                        _prefetch(da[b, tn, xo:xo + GH], 1)
                        if direct_dh:
                            _prefetch(dah[b, tn, xo:xo + GH], 1)
                        if reads_prev:
                            tc = tn + 1 if rev else tn - 1
                            if 0 <= tc < lens[r]:
                                _prefetch(cells[d, b, tc] if carries_c
                                          else outputs[b, tc, ho:ho + H], 0)
                        if has_dy:
                            _prefetch(dy[b, tn, ho:ho + P], 0)
                    if not reads_prev:
                        prev = zeros
                    elif 0 <= tn < lens[r]:
                        prev = cells[d, b, tn] if carries_c else outputs[b, tn, ho:ho + H]
                    elif has_init:
                        prev = init[d, b]
                    else:
                        prev = zeros
                    if projected:                # m_t = o_t * tanh(c_t), what W_hr read
                        m = mo[b, t, mh:mh + H]
                        gate, ct = gates[d, b, t], cells[d, b, t]
                        for j in range(H):
                            m[j] = gate[3 * H + j] * np.tanh(ct[j])
                        step(one, H, relu, slope, m, gate, hn[d, b, t], prev, zeros,
                             dmb[r * H:(r + 1) * H], dcb[r * H:(r + 1) * H],
                             dab[r * GH:(r + 1) * GH], dxr, da[b, t, xo:xo + GH],
                             dah[b, t, xo:xo + GH], acc, peep[d], ct, pacc)
                    else:
                        step(one, H, relu, slope, outputs[b, t, ho:ho + H], gates[d, b, t],
                             hn[d, b, t], prev, dy[b, t, ho:ho + H] if has_dy else zeros,
                             dhb[r * H:(r + 1) * H], dcb[r * H:(r + 1) * H],
                             dab[r * GH:(r + 1) * GH], dxr, da[b, t, xo:xo + GH],
                             dah[b, t, xo:xo + GH], acc, peep[d],
                             cells[d, b, t] if carries_c else zeros, pacc)
                if nact > 0 and not has_rmask:
                    if direct_dh:
                        dhb[:nact * P] = dcb[:nact * P]
                    _dh_gemm(is32, nact, P, GH, dab, w_packed[d], dhb, accumulate, gemm_threads)
                elif nact > 0:          # recurrent dropout: the GEMM's part through the mask
                    _dh_gemm(is32, nact, P, GH, dab, w_packed[d], dhb, 0, gemm_threads)
                    for r in range(nact):
                        _mask_row(dhb[r * P:(r + 1) * P], rmask[d, order[p0 + r]],
                                  dcb[r * P:(r + 1) * P], direct_dh)
            for r in range(n):
                b = order[p0 + r]
                dh0[d, b] = dhb[r * P:(r + 1) * P]
                if carries_c:
                    dc0[d, b] = dcb[r * H:(r + 1) * H]
        _ext_ftz_off(csr)

    return kernel


@_jit(fastmath=_FAST, error_model="numpy")
def _gru_reset_before_kernel(items, one, H, GH, relu, slope, order, lengths,
                             outputs, gates, cells, hn, init, has_init, dy, has_dy, dh_n, dc_n,
                             w_packed, is32, gemm_threads, zeros, rmask, has_rmask, peep,
                             w_split, da, dah, dh0, dc0, dbias, dpeep, P, w_hr, dg, mo):
    """BPTT of the reset-before GRU (``n = tanh(x_n + (r * h) W_hn^T + b_hn)``): two GEMMs a
    step, as the reset gate sits between ``W_hn`` and ``h``. ``dn`` first gives
    ``d(r * h) = dn W_hn``, which ``dr`` needs; then ``[dr, dz] [W_hr; W_hz]`` and
    ``d(r * h) * r`` reach ``h_{t-1}`` (through the recurrent dropout mask), and ``dh * z``
    directly. ``da`` takes ``[dr, dz, dn]`` (the recurrent side's too); the caller forms
    ``dW_hn`` from the kept ``r * h_{t-1}`` (``hn``)."""
    csr = _ext_ftz_on()
    for w in range(items.shape[0]):
        d, p0, p1, slot = items[w, 0], items[w, 1], items[w, 2], items[w, 3]
        acc = dbias[slot]
        acc[:] = 0
        n = p1 - p0
        rev = d == 1
        xo, ho = d * GH, d * H
        dhb = np.empty(n * H, dtype=da.dtype)      # dh of each row
        gb = np.empty(n * H, dtype=da.dtype)       # the step's dh + dy
        dnb = np.empty(n * H, dtype=da.dtype)      # dn: the first GEMM's operand
        drh = np.empty(n * H, dtype=da.dtype)      # d(r * h) = dn W_hn
        drz = np.empty(n * 2 * H, dtype=da.dtype)  # [dr, dz]: the second GEMM's operand
        lens = np.empty(n, dtype=np.int64)
        for r in range(n):
            b = order[p0 + r]
            lens[r] = lengths[b]
            dhb[r * H:(r + 1) * H] = dh_n[d, b]
            _zero_tail(da, b, lens[r], xo, GH)
        tmax = lens[0] if n > 0 else 0
        nact = n if rev else 0
        for s in range(tmax):
            t = s if rev else tmax - 1 - s
            nact = _active(rev, t, n, nact, lens)
            tn = t + 1 if rev else t - 1
            for r in range(nact):
                b = order[p0 + r]
                prev = outputs[b, tn, ho:ho + H] if 0 <= tn < lens[r] else (
                    init[d, b] if has_init else zeros)
                gate = gates[d, b, t]
                dyr = dy[b, t, ho:ho + H] if has_dy else zeros
                for j in range(H):
                    g = dhb[r * H + j] + dyr[j]
                    z = gate[H + j]
                    nv = gate[2 * H + j]
                    gb[r * H + j] = g
                    dnb[r * H + j] = g * (one - z) * (one - nv * nv)
                    drz[r * 2 * H + H + j] = g * (prev[j] - nv) * z * (one - z)
            if nact == 0:
                continue
            _dh_gemm(is32, nact, H, H, dnb, w_packed[d, w_split:], drh, 0, gemm_threads)
            for r in range(nact):
                b = order[p0 + r]
                prev = outputs[b, tn, ho:ho + H] if 0 <= tn < lens[r] else (
                    init[d, b] if has_init else zeros)
                gate = gates[d, b, t]
                m = rmask[d, b] if has_rmask else zeros
                dar = da[b, t, xo:xo + GH]
                for j in range(H):
                    rv = gate[j]
                    hr = prev[j] * m[j] if has_rmask else prev[j]
                    dr = drh[r * H + j] * hr * rv * (one - rv)
                    drz[r * 2 * H + j] = dr
                    dhb[r * H + j] = drh[r * H + j] * rv
                    dar[j] = dr
                    dar[H + j] = drz[r * 2 * H + H + j]
                    dar[2 * H + j] = dnb[r * H + j]
                for k in range(GH):
                    acc[k] += dar[k]
            _dh_gemm(is32, nact, H, 2 * H, drz, w_packed[d], dhb, 1, gemm_threads)
            for r in range(nact):
                b = order[p0 + r]
                gate = gates[d, b, t]
                m = rmask[d, b] if has_rmask else zeros
                for j in range(H):
                    v = dhb[r * H + j] * m[j] if has_rmask else dhb[r * H + j]
                    dhb[r * H + j] = v + gb[r * H + j] * gate[H + j]
        for r in range(n):
            b = order[p0 + r]
            dh0[d, b] = dhb[r * H:(r + 1) * H]
    _ext_ftz_off(csr)


_rnn_kernel = make_kernel(_rnn_step, reads={"h"})
#: the LSTM with a projection (PyTorch's proj_size), by the code of its cell
PROJECTED_KERNELS = {
    LSTM: make_kernel(_lstm_step, reads={"gates", "prev"}, carries_c=True, projected=True),
}
_KERNEL_OF = {
    RNN_TANH: _rnn_kernel,
    RNN_RELU: _rnn_kernel,
    RNN_LEAKY_RELU: _rnn_kernel,
    LSTM_PEEPHOLE: make_kernel(_lstm_peephole_step, reads={"h", "gates", "prev"}, carries_c=True),
    GRU_RESET_BEFORE: _gru_reset_before_kernel,
    LSTM: make_kernel(_lstm_step, reads={"h", "gates", "prev"}, carries_c=True),
    GRU: make_kernel(_gru_step, reads={"gates", "hn", "prev"}, direct_dh=True),
}

#: the kernel of each cell code (``KERNELS[code]``)
KERNELS = tuple(_KERNEL_OF[code] for code in range(len(_KERNEL_OF)))

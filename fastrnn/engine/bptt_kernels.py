"""Numba kernels of the compiled BPTT (private; imported lazily by :mod:`fastrnn.engine.bptt`).

Importing this module imports Numba (about 0.45 s) and registers the C entry points of the
engine that the kernels call by symbol name (``_compiled.bptt_symbols``: the engine's GEMM and
its denormal switch), so that a kernel loaded from Numba's cache finds them in a new process
too.  Every kernel is ``numba.njit(cache=True, nogil=True)``.

One kernel per cell family walks one layer's timesteps backwards for a list of work items
(direction, rows); the gate derivative math of one row of H units is a function per cell
(``_rnn_row``, ``_lstm_row``, ``_gru_row``), inlined into the kernel.
"""
import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

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
# Gate derivative math, one row of H units (shared by the kernel; inlined by Numba)
# ----------------------------------------------------------------------------------------------

_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}   # no nnan/ninf: keep NaN/Inf honest


# Each function walks one row of H units.  Every array it touches is a view indexed by the loop
# counter alone (no ``k * H + j``: Numba's negative-index wraparound would then block SIMD), and
# there are no data-dependent branches besides selects, so LLVM vectorises the loop.
# Absent inputs (no dy, zero initial state) arrive as rows of zeros.

@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _rnn_row(one, H, relu, dh, dy, h, da):
    """``da = (dh + dy) * act'(a)`` from the output ``h = act(a)``, into the scratch row."""
    zero = one - one
    for j in range(np.uint64(H)):
        g = dh[j] + dy[j]
        hv = h[j]
        if relu:
            da[j] = g if hv > zero else zero
        else:
            da[j] = g * (one - hv * hv)


@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _lstm_row(one, H, dh, dc, dy, gate, h, c_prev, da):
    """LSTM gates ``i, f, g, o``: pre-activation gradients into ``da`` (the scratch row, gates
    side by side), ``dc`` -> ``dc_prev`` in place.

    One array per role, gates addressed by offset with *unsigned* indices (no negative-index
    wraparound), so that LLVM vectorises the loop: 2.2x faster than with a view per gate
    (measured, H=128 float32: 3.2 against 7.1 ns per unit)."""
    zero = one - one
    n = np.uint64(H)
    for j in range(n):
        g = dh[j] + dy[j]
        i = gate[j]
        f = gate[n + j]
        gv = gate[2 * n + j]
        o = gate[3 * n + j]
        tc = h[j] / o if o != zero else zero          # tanh(c_t) = h_t / o_t
        dcj = dc[j] + g * o * (one - tc * tc)
        dc[j] = dcj * f
        da[j] = dcj * gv * i * (one - i)
        da[n + j] = dcj * c_prev[j] * f * (one - f)
        da[2 * n + j] = dcj * i * (one - gv * gv)
        da[3 * n + j] = g * tc * o * (one - o)


@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _store_row(da, da_out, acc):
    """Copy the scratch row to its ``(b, t)`` place and add it to the bias-gradient sums."""
    for k in range(np.uint64(da.shape[0])):
        v = da[k]
        da_out[k] = v
        acc[k] += v


@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _gru_row(one, H, dh, dy, gate, hn, h_prev, dax, dah, dh_direct):
    """GRU gates ``r, z, n`` (linear before reset).

    Writes the input-side gradient ``[dr, dz, dn]`` to ``dax``, the recurrent-side one
    ``[dr, dz, dn * r]`` to ``dah`` (both scratch rows) and ``dh * z`` (the direct path to
    ``h_prev``) to ``dh_direct``.  Unsigned gate offsets, as in :func:`_lstm_row`, so that the
    loop vectorises.
    """
    n3 = np.uint64(H)
    for j in range(n3):
        g = dh[j] + dy[j]
        r = gate[j]
        z = gate[n3 + j]
        n = gate[2 * n3 + j]
        dn = g * (one - z) * (one - n * n)
        dz = g * (h_prev[j] - n) * z * (one - z)
        dr = dn * hn[j] * r * (one - r)
        dax[j] = dr
        dax[n3 + j] = dz
        dax[2 * n3 + j] = dn
        dah[j] = dr
        dah[n3 + j] = dz
        dah[2 * n3 + j] = dn * r
        dh_direct[j] = g * z


@_jit(inline="always", fastmath=_FAST, error_model="numpy")
def _store_gru_row(H, dax, dah, dax_out, dah_out, acc):
    """Copy both scratch rows to their ``(b, t)`` places; add ``[dr, dz, dn, dn * r]`` to the
    bias-gradient sums ``acc`` (4H)."""
    G3 = np.uint64(3 * H)
    _store_row(dax, dax_out, acc[:G3])
    n = np.uint64(H)
    for k in range(G3):
        dah_out[k] = dah[k]
    for j in range(n):
        acc[G3 + j] += dah[2 * n + j]


# ----------------------------------------------------------------------------------------------
# The sequential kernels: one layer, a list of work items (direction, rows), one per cell family.
# Each item is an independent set of sequences walked backwards in time; the rows of an item are
# sorted by length (descending), so the active rows of a step are a prefix and one GEMM call
# per step pushes dh through W_hh for exactly those rows.
# ----------------------------------------------------------------------------------------------

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


@_jit(fastmath=_FAST)
def _zero_tail(da, b, L, xo, GH):
    """Zero ``da[b, t, xo:xo+GH]`` for the steps ``t >= L`` that a sequence never computed."""
    for t in range(L, da.shape[1]):
        da[b, t, xo:xo + GH] = 0


@_jit(fastmath=_FAST, error_model="numpy")
def _bptt_rnn(items, one, relu, H, order, lengths,   # IN  work items, rows, lengths
              y, dy, has_dy, dhn,                     # IN  outputs, grads on outputs / final h
              whh, wpk, is32, gth,                    # IN  W_hh (D, H, H), packed; f32?; threads
              da, dh0, dbias):                        # OUT (B, T, D*H) pre-act grads, (D, B, H),
                                                      #     (items, H) bias-grad sums
    """BPTT through the time loop of a vanilla RNN layer (tanh or relu)."""
    GH = whh.shape[1]
    csr = _ext_ftz_on()          # denormals flushed to zero, as in the forward
    for w in range(items.shape[0]):
        d, p0, p1, slot = items[w, 0], items[w, 1], items[w, 2], items[w, 3]
        acc = dbias[slot]
        acc[:] = 0
        n = p1 - p0
        rev = d == 1
        xo, ho = d * GH, d * H
        dhb = np.empty(n * H, dtype=whh.dtype)
        dab = np.empty(n * GH, dtype=whh.dtype)
        zrow = np.zeros(H, dtype=whh.dtype)
        lens = np.empty(n, dtype=np.int64)
        for r in range(n):
            b = order[p0 + r]
            lens[r] = lengths[b]
            dhb[r * H:(r + 1) * H] = dhn[d, b]
            _zero_tail(da, b, lens[r], xo, GH)
        tmax = lens[0] if n > 0 else 0
        nact = n if rev else 0
        for s in range(tmax):
            t = s if rev else tmax - 1 - s
            nact = _active(rev, t, n, nact, lens)
            tn = t + 1 if rev else t - 1         # the next step's rows, for the prefetch
            for r in range(nact):
                b = order[p0 + r]
                if 0 <= tn and tn < lens[r]:
                    _prefetch(y[b, tn, ho:ho + H], 0)
                    _prefetch(da[b, tn, xo:xo + GH], 1)
                    if has_dy:
                        _prefetch(dy[b, tn, ho:ho + H], 0)
                dyr = dy[b, t, ho:ho + H] if has_dy else zrow
                dar = dab[r * GH:(r + 1) * GH]
                _rnn_row(one, H, relu, dhb[r * H:(r + 1) * H], dyr, y[b, t, ho:ho + H], dar)
                _store_row(dar, da[b, t, xo:xo + GH], acc)
            if nact > 0:
                _dh_gemm(is32, nact, H, GH, dab, wpk[d], dhb, 0, gth)
        for r in range(n):
            dh0[d, order[p0 + r]] = dhb[r * H:(r + 1) * H]
    _ext_ftz_off(csr)


@_jit(fastmath=_FAST, error_model="numpy")
def _bptt_lstm(items, one, H, order, lengths,        # IN  work items, rows, lengths
               gates, cst, y, c0, has_c0,             # IN  workspace, (D, B, H) initial c
               dy, has_dy, dhn, dcn,                  # IN  grads on outputs / final h, c
               whh, wpk, is32, gth,                   # IN  W_hh (D, 4H, H), packed; f32?; threads
               da, dh0, dc0, dbias):                  # OUT (B, T, D*4H), (D, B, H) x2, (items, 4H)
    """BPTT through the time loop of an LSTM layer."""
    GH = whh.shape[1]
    csr = _ext_ftz_on()          # denormals flushed to zero, as in the forward
    for w in range(items.shape[0]):
        d, p0, p1, slot = items[w, 0], items[w, 1], items[w, 2], items[w, 3]
        acc = dbias[slot]
        acc[:] = 0
        n = p1 - p0
        rev = d == 1
        xo, ho = d * GH, d * H
        dhb = np.empty(n * H, dtype=whh.dtype)
        dcb = np.empty(n * H, dtype=whh.dtype)
        dab = np.empty(n * GH, dtype=whh.dtype)
        zrow = np.zeros(H, dtype=whh.dtype)
        lens = np.empty(n, dtype=np.int64)
        for r in range(n):
            b = order[p0 + r]
            lens[r] = lengths[b]
            dhb[r * H:(r + 1) * H] = dhn[d, b]
            dcb[r * H:(r + 1) * H] = dcn[d, b]
            _zero_tail(da, b, lens[r], xo, GH)
        tmax = lens[0] if n > 0 else 0
        nact = n if rev else 0
        for s in range(tmax):
            t = s if rev else tmax - 1 - s
            nact = _active(rev, t, n, nact, lens)
            tn = t + 1 if rev else t - 1         # the next step's rows, for the prefetch
            for r in range(nact):
                b = order[p0 + r]
                if 0 <= tn and tn < lens[r]:
                    _prefetch(gates[d, b, tn], 0)
                    _prefetch(y[b, tn, ho:ho + H], 0)
                    _prefetch(da[b, tn, xo:xo + GH], 1)
                    tc = tn + 1 if rev else tn - 1
                    if 0 <= tc and tc < lens[r]:
                        _prefetch(cst[d, b, tc], 0)
                    if has_dy:
                        _prefetch(dy[b, tn, ho:ho + H], 0)
                if rev:
                    has_prev = t < lens[r] - 1
                    tp = t + 1
                else:
                    has_prev = t > 0
                    tp = t - 1
                if has_prev:
                    cp = cst[d, b, tp]
                elif has_c0:
                    cp = c0[d, b]
                else:
                    cp = zrow
                dyr = dy[b, t, ho:ho + H] if has_dy else zrow
                dar = dab[r * GH:(r + 1) * GH]
                _lstm_row(one, H, dhb[r * H:(r + 1) * H], dcb[r * H:(r + 1) * H], dyr,
                          gates[d, b, t], y[b, t, ho:ho + H], cp, dar)
                _store_row(dar, da[b, t, xo:xo + GH], acc)
            if nact > 0:
                _dh_gemm(is32, nact, H, GH, dab, wpk[d], dhb, 0, gth)
        for r in range(n):
            b = order[p0 + r]
            dh0[d, b] = dhb[r * H:(r + 1) * H]
            dc0[d, b] = dcb[r * H:(r + 1) * H]
    _ext_ftz_off(csr)


@_jit(fastmath=_FAST, error_model="numpy")
def _bptt_gru(items, one, H, order, lengths,         # IN  work items, rows, lengths
              gates, hnw, y, h0, has_h0,              # IN  workspace, (D, B, H) initial h
              dy, has_dy, dhn,                        # IN  grads on outputs / final h
              whh, wpk, is32, gth,                    # IN  W_hh (D, 3H, H), packed; f32?; threads
              da, dah, dh0, dbias):                   # OUT (B, T, D*3H) x2, (D, B, H), (items, 4H)
    """BPTT through the time loop of a GRU layer (``da`` input side, ``dah`` recurrent side)."""
    GH = whh.shape[1]
    csr = _ext_ftz_on()          # denormals flushed to zero, as in the forward
    for w in range(items.shape[0]):
        d, p0, p1, slot = items[w, 0], items[w, 1], items[w, 2], items[w, 3]
        acc = dbias[slot]
        acc[:] = 0
        n = p1 - p0
        rev = d == 1
        xo, ho = d * GH, d * H
        dhb = np.empty(n * H, dtype=whh.dtype)
        ddb = np.empty(n * H, dtype=whh.dtype)
        dab = np.empty(n * GH, dtype=whh.dtype)
        dxr = np.empty(GH, dtype=whh.dtype)       # input-side scratch row
        zrow = np.zeros(H, dtype=whh.dtype)
        lens = np.empty(n, dtype=np.int64)
        for r in range(n):
            b = order[p0 + r]
            lens[r] = lengths[b]
            dhb[r * H:(r + 1) * H] = dhn[d, b]
            _zero_tail(da, b, lens[r], xo, GH)
            _zero_tail(dah, b, lens[r], xo, GH)
        tmax = lens[0] if n > 0 else 0
        nact = n if rev else 0
        for s in range(tmax):
            t = s if rev else tmax - 1 - s
            nact = _active(rev, t, n, nact, lens)
            tn = t + 1 if rev else t - 1         # the next step's rows, for the prefetch
            for r in range(nact):
                b = order[p0 + r]
                if 0 <= tn and tn < lens[r]:
                    _prefetch(gates[d, b, tn], 0)
                    _prefetch(hnw[d, b, tn], 0)
                    _prefetch(da[b, tn, xo:xo + GH], 1)
                    _prefetch(dah[b, tn, xo:xo + GH], 1)
                    tc = tn + 1 if rev else tn - 1
                    if 0 <= tc and tc < lens[r]:
                        _prefetch(y[b, tc, ho:ho + H], 0)
                    if has_dy:
                        _prefetch(dy[b, tn, ho:ho + H], 0)
                if rev:
                    has_prev = t < lens[r] - 1
                    tp = t + 1
                else:
                    has_prev = t > 0
                    tp = t - 1
                if has_prev:
                    hp = y[b, tp, ho:ho + H]
                elif has_h0:
                    hp = h0[d, b, :]
                else:
                    hp = zrow
                dyr = dy[b, t, ho:ho + H] if has_dy else zrow
                dar = dab[r * GH:(r + 1) * GH]
                _gru_row(one, H, dhb[r * H:(r + 1) * H], dyr, gates[d, b, t],
                         hnw[d, b, t], hp, dxr, dar, ddb[r * H:(r + 1) * H])
                _store_gru_row(H, dxr, dar, da[b, t, xo:xo + GH], dah[b, t, xo:xo + GH], acc)
            if nact > 0:
                dhb[:nact * H] = ddb[:nact * H]
                _dh_gemm(is32, nact, H, GH, dab, wpk[d], dhb, 1, gth)
        for r in range(n):
            dh0[d, order[p0 + r]] = dhb[r * H:(r + 1) * H]
    _ext_ftz_off(csr)


#: the kernel of each cell code
KERNELS = (_bptt_rnn, _bptt_rnn, _bptt_lstm, _bptt_gru)

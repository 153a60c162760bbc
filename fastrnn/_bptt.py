"""Compiled backpropagation through time (BPTT) for RNN / LSTM / GRU (private).

:func:`backward` consumes the *workspace* of the compiled training forward
(``fastrnn._engine.forward(..., training=True)``) and returns what
:func:`fastrnn.reference.backward` returns: ``(dx, dh0, dc0, grads)``.

Only the ``dh`` (and LSTM ``dc``) recurrence is sequential.  It runs in one Numba kernel per
layer (one per cell family) that walks the timesteps backwards, turns the stored gate
activations into the gate pre-activation gradients ``dA`` (no forward recomputation) and pushes
``dh`` through ``W_hh`` with one call of the engine's C GEMM kernel per step (W_hh packed once)
on the *active* rows only (rows sorted by length, descending, so the active rows of a step are a
prefix: a padded batch costs what its valid steps cost).  Two cores share the work either as
independent items (batch blocks, or the two directions) on two threads of the engine's OpenMP
team, or, for a batch too small to split, by splitting each step's GEMM by column panels in the
C kernel (see :func:`_plan`).  No BLAS is called.  Denormals are flushed to zero inside the
kernels, as in the forward, and the rows of the next step are prefetched while the current one
runs.  Every step's ``dA`` is also stored at its ``(b, t)`` place and the bias gradients are
summed on the fly, so the weight gradients and the input gradient of *all* timesteps are a few
large GEMMs (the engine's own kernel and threads, ``fastrnn._engine.matmul``)::

    dW_ih = dA^T @ X          dx = dA @ W_ih (both directions in one GEMM; skipped for
                                              layer 0 with ``input_grad=False``)
    dW_hh = dA_h^T @ H_prev   (the output sequence shifted by one step, see _dw_hh; LSTM and
                               RNN with narrow X and H: one GEMM [X | H_prev]^T @ dA)

Numba is imported lazily, by the first :func:`backward` call, so ``import fastrnn`` and the
forward pass never pay for it.  All kernels are compiled with ``cache=True``.

Workspace layout consumed
-------------------------
A dict, arrays in the caller's batch order, indexed by the real time index ``t`` (``G`` gates:
1 RNN, 4 LSTM, 3 GRU; ``D`` directions; ``L`` layers)::

    "cell", "num_layers", "num_directions", "hidden_size"
    "lengths"  int64 (B,), 1..T
    "x"        (B, T, I) the network input (layer 0's input)                 [*]
    "h0"       (L*D, B, H) initial hidden state, or None (zeros)              [*]
    "c0"       (L*D, B, H) initial LSTM cell state, or None (zeros)           [*]
    "outputs"  list over layers of (B, T, D*H): h_t of (layer, d) in columns d*H:(d+1)*H,
               zeros at t >= lengths[b]
    "gates"    list over layers of (D, B, T, G*H) gate activations after the nonlinearity
               (LSTM i, f, g, o; GRU r, z, n); None for the plain RNN
    "c"        LSTM: list over layers of (D, B, T, H) cell state after step t
    "hn"       GRU: list over layers of (D, B, T, H), h_prev W_hn^T + b_hn

This is ``fastrnn._engine``'s documented training workspace, plus the entries marked ``[*]``
which :func:`backward` also accepts as keyword arguments (``x=``, ``h0=``, ``c0=``).
``tanh(c_t)`` is not stored: it is ``h_t / o_t`` (exact to rounding; where ``o_t == 0`` every
term that uses it is multiplied by ``o_t`` and vanishes).  :func:`workspace_from_reference`
builds the same layout from the NumPy reference forward (for tests).

Gradient clipping lives in :mod:`fastrnn.optim` (``clip_grad_norm``, ``clip_grad_value``).
"""
import threading

import numpy as np

from . import _engine, _forward

__all__ = ["backward", "workspace_from_reference", "warmup"]

_CELLS = {"rnn_tanh": (0, 1), "rnn_relu": (1, 1), "lstm": (2, 4), "gru": (3, 3)}

# ----------------------------------------------------------------------------------------------
# Lazy Numba: the functions below marked @_jit are plain Python until _compiled() rebinds them
# (in this module's globals, so kernels find each other) to numba.njit(cache=True) dispatchers.
# ----------------------------------------------------------------------------------------------

_JIT_SPECS = []          # (name, options) in definition order (callees before callers)
_jit_lock = threading.Lock()
_jit_ready = False


def _jit(**options):
    def mark(func):
        _JIT_SPECS.append((func.__name__, options))
        return func
    return mark


def _compiled():
    """Import numba and turn the marked functions into cached njit dispatchers (once).

    The kernels call the engine's C GEMM kernel and its denormal switch by symbol name
    (``_forward.bptt_symbols``, registered with LLVM here), so a kernel loaded from Numba's
    cache finds them in a new process too.
    """
    global _jit_ready
    if not _jit_ready:
        with _jit_lock:
            if not _jit_ready:
                import llvmlite.binding as llvm
                import numba
                from numba import types
                for name, address in _forward.bptt_symbols().items():
                    llvm.add_symbol(name, address)
                g = globals()
                sz, ptr = types.intp, types.uintp
                for bits in (32, 64):
                    g[f"_ext_gemm_f{bits}"] = types.ExternalFunction(
                        f"fastrnn_dh_gemm_f{bits}",
                        types.void(sz, sz, sz, ptr, ptr, ptr, sz, sz))
                g["_ext_ftz_on"] = types.ExternalFunction("fastrnn_ftz_on", ptr())
                g["_ext_ftz_off"] = types.ExternalFunction("fastrnn_ftz_off", ptr(ptr))
                g["_prefetch_line"] = _prefetch_intrinsic()
                for name, options in _JIT_SPECS:
                    g[name] = numba.njit(cache=True, nogil=True, **options)(g[name])
                _jit_ready = True
    return globals()


def _prefetch_intrinsic():
    """A Numba intrinsic ``_prefetch_line(address, write)``: LLVM's prefetch of one cache
    line into all cache levels (``write`` a compile-time flag: 1 for a line about to be
    written).  Compiled into the kernels, so cached kernels need nothing at load time."""
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def _prefetch_line(typingctx, address, write):
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

    return _prefetch_line


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
    """``c[:M*N] (+)= a[:M*K] @ B`` (row-major), B panel-packed by ``_forward.pack_rows``: the
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
def _bptt_rnn(one, relu, H, items, order, lengths,   # IN  work items (d, p0, p1), rows, lengths
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
def _bptt_lstm(one, H, items, order, lengths,        # IN  work items (d, p0, p1), rows, lengths
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
def _bptt_gru(one, H, items, order, lengths,         # IN  work items (d, p0, p1), rows, lengths
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


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------

#: fewest batch rows per thread for which the threads take independent batch blocks
ITEM_MIN_ROWS = 4


def _plan(D, B, H, nthreads):
    """(item threads, GEMM threads) of one layer's BPTT.

    Two ways to use two cores: the batch split into interleaved blocks (or, bidirectional, the
    two directions) as independent work items, one per thread of the engine's OpenMP team,
    each step's GEMM on its own thread (no synchronisation at all); or, for a batch too small
    to split, the steps one after the other with each step's GEMM split by column panels over
    the team (a fork and a join per step, the gate math on one thread).  Items win at every
    hidden size once they run on the team rather than on a thread of their own (measured,
    float32, 2 cores, medians of a training step, items against split: LSTM B=64 H=128 9.7
    against 10.8 ms, GRU 8.2 against 10.3; LSTM B=16 H=256 21.3 against 22.0; LSTM B=32
    H=512 25.9 against 26.3; B=8 H=512 within 2%).
    """
    if nthreads > 1 and (D > 1 or B >= ITEM_MIN_ROWS * nthreads):
        return min(2, nthreads), 1
    return 1, nthreads


def _items(D, lengths, nblocks):
    """Work items ``(direction, p0, p1, slot)`` over ``order`` (rows sorted by length,
    descending, in ``nblocks`` interleaved blocks per direction, so that the active rows of a
    step are a prefix of a block and every block gets long and short sequences alike)."""
    srt = np.argsort(-lengths, kind="stable")
    blocks = [srt[i::nblocks] for i in range(nblocks)]
    order = np.ascontiguousarray(np.concatenate(blocks), dtype=np.int64)
    bounds = np.cumsum([0] + [len(b) for b in blocks])
    items = np.array([(d, bounds[i], bounds[i + 1], d * nblocks + i) for d in range(D)
                      for i in range(nblocks)], dtype=np.int64).reshape(-1, 4)
    return order, items


def _run_items(kernel, args, pos, items, nthreads):
    """Run ``kernel(*args)`` with ``args[pos]`` set to the work items, split over ``nthreads``
    threads of the engine's OpenMP team (``_forward.run_on_team``; the kernels release the GIL
    and call no BLAS)."""
    groups = [np.ascontiguousarray(items[i::nthreads]) for i in range(min(nthreads, len(items)))]
    calls = [args[:pos] + (g,) + args[pos + 1:] for g in groups]
    if len(calls) == 1:
        kernel(*calls[0])
    else:
        _forward.run_on_team([lambda c=c: kernel(*c) for c in calls])


# ----------------------------------------------------------------------------------------------
# Dense parts: weight gradients over all timesteps at once
# ----------------------------------------------------------------------------------------------

def _shift(d, n):
    """Rows of the flattened ``(b, t)`` order that pair each step with the state before it:
    ``(rows of dA and x, rows of the outputs holding h_prev, the one row of dA left out)``.

    ``h_prev`` of row ``(b, t)`` is the output row before it (forward) or after it (reverse),
    except at the rows where sequences start (see :func:`_h0_fix`).
    """
    if d == 0:
        return slice(1, n), slice(0, n - 1), 0
    return slice(0, n - 1), slice(1, n), n - 1


def _h0_fix(dah3, y3, d, H, GH, h0d, lengths):
    """``(first, corr)`` with ``first^T @ corr`` the correction of the shifted GEMM of
    :func:`_shift`: at the row where a sequence starts it paired dA with the neighbouring
    sequence's output (or a zero output past a shorter sequence's end, or nothing at the row
    left out) instead of ``h0[b]``.  ``first`` (B, GH) are those dA rows, ``corr`` (B, H) is
    ``h0 - what was used``."""
    B, T = y3.shape[0], y3.shape[1]
    wrong = np.zeros((B, H), dtype=y3.dtype)
    if d == 0:
        first = dah3[:, 0, :GH]                           # rows (b, 0) start the sequences
        wrong[1:] = y3[:-1, T - 1, :H]
    else:
        first = dah3[np.arange(B), lengths - 1, d * GH:(d + 1) * GH]
        full = np.flatnonzero(lengths[:-1] == T)
        wrong[full] = y3[full + 1, 0, d * H:(d + 1) * H]
    return first, (-wrong if h0d is None else h0d - wrong)


def _dw_hh(dah3, y3, d, D, H, GH, h0d, lengths):
    """``sum_(b,t) dA_h[b,t]^T h_prev[b,t]`` as one GEMM on the output sequence shifted by one
    step (:func:`_shift`) and one small GEMM for the sequence starts (:func:`_h0_fix`)."""
    B, T = y3.shape[0], y3.shape[1]
    rd, ry, _ = _shift(d, B * T)
    da2 = dah3.reshape(B * T, D * GH)[:, d * GH:(d + 1) * GH]
    y2 = y3.reshape(B * T, D * H)[:, d * H:(d + 1) * H]
    dw = _engine.matmul(da2[rd], y2[ry], trans_a=True)
    first, corr = _h0_fix(dah3, y3, d, H, GH, h0d, lengths)
    return _engine.matmul(first, corr, trans_a=True, out=dw)


def _dw_ih_hh(da3, x2, y3, d, D, H, GH, h0d, lengths):
    """``(dW_ih, dW_hh)`` of direction ``d`` when both take the same dA (LSTM, RNN).

    With narrow inputs and states (at most ``SWAP_MAX_N`` columns, where dA is the operand
    that gets packed): one GEMM ``[x | h_prev]^T @ dA`` on one packing of dA, the rows shifted
    as in :func:`_dw_hh`, and the row that the shift leaves out added to dW_ih as an outer
    product (measured: 10-20% faster than two GEMMs at I = H = 64 and 128).  Otherwise two
    GEMMs ``dA^T @ x`` and :func:`_dw_hh`, which write the gradients in place (the fused
    result would need transposing: slower at H = 512).
    """
    B, T = y3.shape[0], y3.shape[1]
    I = x2.shape[1]
    da2 = da3.reshape(B * T, D * GH)[:, d * GH:(d + 1) * GH]
    if max(I, H) > _engine.SWAP_MAX_N:
        return (_engine.matmul(da2, x2, trans_a=True),
                _dw_hh(da3, y3, d, D, H, GH, h0d, lengths))
    rd, ry, miss = _shift(d, B * T)
    y2 = y3.reshape(B * T, D * H)[:, d * H:(d + 1) * H]
    w = _engine.matmul(x2[rd], da2[rd], trans_a=True, a2=y2[ry])     # (I + H, GH)
    w[:I] += np.outer(x2[miss], da2[miss])
    first, corr = _h0_fix(da3, y3, d, H, GH, h0d, lengths)
    _engine.matmul(corr, first, trans_a=True, out=w[I:])
    return np.ascontiguousarray(w[:I].T), np.ascontiguousarray(w[I:].T)


# ----------------------------------------------------------------------------------------------
# Public entry
# ----------------------------------------------------------------------------------------------

def backward(cell, weights, workspace, dy=None, dh_n=None, dc_n=None, *, x=None, h0=None,
             c0=None, input_grad=True):
    """BPTT of a compiled training forward: gradients of inputs, initial states and weights.

    Parameters
    ----------
    cell : {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    weights : dict of str to ndarray
        The parameters the forward used, PyTorch names and shapes.
    workspace : dict
        From ``fastrnn._engine.forward(..., training=True)`` (layout in the module docstring).
    dy : ndarray (B, T, D*H), optional
        Gradient on the output sequence; ``None`` means zeros.  Values at ``t >= lengths[b]``
        are ignored.
    dh_n, dc_n : ndarray (L*D, B, H), optional
        Gradients on the final states; ``None`` means zeros (``dc_n`` LSTM only).
    x, h0, c0 : ndarray, optional
        The forward's input and initial states, if the workspace does not carry them
        (``"x"``, ``"h0"``, ``"c0"``); ``h0`` / ``c0`` ``None`` mean zeros.
    input_grad : bool
        False skips the input gradient of layer 0 (its GEMM ``dA @ W_ih``); ``dx`` is None.

    Returns
    -------
    dx : ndarray (B, T, I) or None
    dh0 : ndarray (L*D, B, H)
    dc0 : ndarray (L*D, B, H) or None (not LSTM)
    grads : dict of str to ndarray, keyed like ``weights``
    """
    if cell not in _CELLS:
        raise ValueError(f"backward: cell must be one of {sorted(_CELLS)}, got {cell!r}")
    if workspace.get("cell", cell) != cell:
        raise ValueError(f"backward: the workspace is of a {workspace['cell']!r} forward, "
                         f"not {cell!r}")
    if x is None and "x" not in workspace:
        raise ValueError("backward: the forward's input is needed; pass x= (the workspace "
                         "has no 'x' entry)")
    code, G = _CELLS[cell]
    kernel = _compiled()[("_bptt_rnn", "_bptt_rnn", "_bptt_lstm", "_bptt_gru")[code]]
    ws = workspace
    if x is None:
        x = ws["x"]
    if h0 is None:
        h0 = ws.get("h0")
    if c0 is None and code == 2:
        c0 = ws.get("c0")
    L = int(ws["num_layers"])
    D = int(ws["num_directions"])
    H = int(ws["hidden_size"])
    GH = G * H
    B, T = x.shape[0], x.shape[1]
    dtype = x.dtype
    lengths = np.ascontiguousarray(ws["lengths"], dtype=np.int64)
    item_threads, gemm_threads = _plan(D, B, H, _engine.get_num_threads())
    order, items = _items(D, lengths, item_threads if D == 1 else 1)

    def c_(a):
        return np.ascontiguousarray(a, dtype=dtype)

    dummy4 = np.zeros((1, 1, 1, 1), dtype=dtype)
    zero3 = np.zeros((D, 1, 1), dtype=dtype)
    dh0 = np.empty((L * D, B, H), dtype=dtype)
    dc0 = np.empty((L * D, B, H), dtype=dtype) if code == 2 else None
    dhn_all = None if dh_n is None else c_(dh_n)
    dcn_all = None if (dc_n is None or code != 2) else c_(dc_n)
    zstate = np.zeros((D, B, H), dtype=dtype)
    grads = {}
    dout = None if dy is None else c_(dy)
    dc0_dummy = np.empty((D, 1, 1), dtype=dtype)

    for layer in reversed(range(L)):
        sl = slice(layer * D, (layer + 1) * D)
        inp = x if layer == 0 else ws["outputs"][layer - 1]
        inp = c_(inp)
        I_l = inp.shape[2]
        y3 = ws["outputs"][layer]
        gates = ws["gates"][layer] if code >= 2 else dummy4
        cst = ws["c"][layer] if code == 2 else dummy4
        hnw = ws["hn"][layer] if code == 3 else dummy4
        sfx = [f"_l{layer}" + ("_reverse" if d else "") for d in range(D)]
        wl = [np.ascontiguousarray(weights["weight_hh" + s], dtype=dtype) for s in sfx]
        whh = wl[0][None] if D == 1 else np.stack(wl)
        wpk = np.empty((D, _forward.packed_size(GH, H, dtype)), dtype=dtype)
        for d in range(D):
            _forward.pack_rows(wl[d], wpk[d])         # W_hh as (GH, H) panels
        is32 = dtype == np.float32
        da = np.empty((B, T, D * GH), dtype=dtype)      # the kernels zero the unused steps
        dah = np.empty((B, T, D * GH), dtype=dtype) if code == 3 else da
        dbias = np.empty((len(items), GH if code != 3 else 4 * H), dtype=np.float64)
        h0l = c_(h0[sl]) if h0 is not None else zero3
        c0l = c_(c0[sl]) if (c0 is not None and code == 2) else zero3
        dhnl = dhn_all[sl] if dhn_all is not None else zstate
        dcnl = dcn_all[sl] if dcn_all is not None else zstate
        dyl = dout if dout is not None else np.zeros((1, 1, D * H), dtype=dtype)
        dh0l = dh0[sl]
        dc0l = dc0[sl] if code == 2 else dc0_dummy
        one = dtype.type(1)
        if code <= 1:
            args = (one, code == 1, H, items, order, lengths, y3, dyl, dout is not None, dhnl,
                    whh, wpk, is32, gemm_threads, da, dh0l, dbias)
        elif code == 2:
            args = (one, H, items, order, lengths, gates, cst, y3, c0l, c0 is not None,
                    dyl, dout is not None, dhnl, dcnl, whh, wpk, is32, gemm_threads, da, dh0l, dc0l, dbias)
        else:
            args = (one, H, items, order, lengths, gates, hnw, y3, h0l, h0 is not None,
                    dyl, dout is not None, dhnl, whh, wpk, is32, gemm_threads, da, dah, dh0l, dbias)
        _run_items(kernel, args, 3 if code <= 1 else 2, items, item_threads)

        # dense parts: all timesteps at once
        da2 = da.reshape(B * T, D * GH)
        x2 = inp.reshape(B * T, I_l)
        if code == 3:       # GRU: dW_hh takes its own dA (dn * r in the n gate)
            dwih = _engine.matmul(da2, x2, trans_a=True)          # (D*GH, I)
        if layer > 0 or input_grad:
            if D == 1:
                wih = weights["weight_ih" + sfx[0]]
            else:
                wih = np.concatenate([weights["weight_ih" + s] for s in sfx], axis=0)
            dout = _engine.matmul(da2, np.ascontiguousarray(wih, dtype=dtype)).reshape(B, T, I_l)
        else:
            dout = None
        dbd = dbias.reshape(D, -1, dbias.shape[1]).sum(axis=1)    # per direction
        dbx = dbd[:, :GH]
        dbh = dbx if code != 3 else np.concatenate([dbd[:, :2 * H], dbd[:, 3 * H:]], axis=1)
        has_bih = ("bias_ih" + sfx[0]) in weights
        has_bhh = ("bias_hh" + sfx[0]) in weights
        for d in range(D):
            s = sfx[d]
            h0d = None if h0 is None else h0[layer * D + d]
            if code == 3:
                grads["weight_ih" + s] = dwih[d * GH:(d + 1) * GH]
                grads["weight_hh" + s] = _dw_hh(dah, y3, d, D, H, GH, h0d, lengths)
            else:
                grads["weight_ih" + s], grads["weight_hh" + s] = _dw_ih_hh(
                    da, x2, y3, d, D, H, GH, h0d, lengths)
            if has_bih:
                grads["bias_ih" + s] = dbx[d].astype(dtype)
            if has_bhh:
                grads["bias_hh" + s] = dbh[d].astype(dtype)
    return dout, dh0, dc0, grads


def warmup():
    """Compile (or load from Numba's cache) the kernels for float32 and float64 now."""
    for dtype in (np.float32, np.float64):
        for cell in ("lstm",):
            rng = np.random.default_rng(0)
            x = rng.standard_normal((2, 2, 2)).astype(dtype)
            w = {"weight_ih_l0": np.ones((8, 2), dtype), "weight_hh_l0": np.ones((8, 2), dtype)}
            from . import reference
            _, _, _, cache = reference.forward(cell, x, w)
            backward(cell, w, workspace_from_reference(cache, x))


# ----------------------------------------------------------------------------------------------
# Workspace from the NumPy reference forward (tests, and the reference of the layout)
# ----------------------------------------------------------------------------------------------

def workspace_from_reference(cache, x, h0=None, c0=None):
    """Build the workspace layout of the module docstring from a reference forward cache.

    Parameters
    ----------
    cache : fastrnn.reference.ForwardCache
        From ``fastrnn.reference.forward(cell, x, weights, h0, c0, lengths, ...)``.
    x, h0, c0 : ndarray
        The same input and initial states (``None`` for zeros).
    """
    cell = cache.cell
    code, G = _CELLS[cell]
    L, D = cache.num_layers, cache.num_directions
    H = cache.weights["weight_hh_l0"].shape[1]
    B, T = x.shape[0], x.shape[1]
    dtype = x.dtype
    lengths = np.zeros(B, dtype=np.int64)
    for t, active, _ in cache.steps[0, 0]:
        lengths[active] = np.maximum(lengths[active], t + 1)
    ws = {"cell": cell, "num_layers": L, "num_directions": D, "hidden_size": H,
          "lengths": lengths, "x": x, "h0": h0, "c0": c0 if code == 2 else None,
          "outputs": [], "gates": [] if code >= 2 else None,
          "c": [] if code == 2 else None, "hn": [] if code == 3 else None}
    for layer in range(L):
        out = np.zeros((B, T, D * H), dtype=dtype)
        gates = np.zeros((D, B, T, G * H), dtype=dtype)
        cs = np.zeros((D, B, T, H), dtype=dtype)
        hn = np.zeros((D, B, T, H), dtype=dtype)
        for d in range(D):
            for t, active, cc in cache.steps[layer, d]:
                if code <= 1:
                    _, _, h_new = cc
                elif code == 2:
                    _, _, c_prev, i, f, g, o, tanh_c = cc
                    gates[d, active, t] = np.concatenate([i, f, g, o], axis=1)
                    h_new = o * tanh_c
                    # c_t from c' = f c + i g (the reference keeps tanh(c') only)
                    cs[d, active, t] = f * c_prev + i * g
                else:
                    _, h_prev, r, z, n, h_n = cc
                    gates[d, active, t] = np.concatenate([r, z, n], axis=1)
                    hn[d, active, t] = h_n
                    h_new = (1 - z) * n + z * h_prev
                out[active, t, d * H:(d + 1) * H] = h_new
        ws["outputs"].append(out)
        if code >= 2:
            ws["gates"].append(gates)
        if code == 2:
            ws["c"].append(cs)
        if code == 3:
            ws["hn"].append(hn)
    return ws

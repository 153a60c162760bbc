# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled forward kernels for fastrnn (private).

Everything here takes preallocated, C-contiguous arrays of one floating dtype (float32 or
float64, the fused type ``floating``) and never allocates inside the time loop.  Validation,
casting, sorting by length and allocation happen once, in ``fastrnn._engine``.

Cell codes: 0 = tanh RNN, 1 = relu RNN, 2 = LSTM (gates i, f, g, o), 3 = GRU (gates r, z, n).

Data layout seen by the kernels
-------------------------------
* ``xp`` (B*T, LX): the input projection ``x W_ih^T`` of all timesteps, row ``b*T + t``, rows
  in the caller's batch order; direction ``d`` occupies columns ``xoff .. xoff + G*H``
  (biases are *not* included, they are added while the recurrent buffer is prefilled).
* recurrent state ``hbuf`` (2, B, H): double buffer, rows in *sorted-and-blocked* order
  (``order[p]`` is the caller's row of sorted position ``p``); step ``s`` reads
  ``hbuf[s % 2]`` and writes ``hbuf[(s + 1) % 2]``.
* the recurrent GEMM of a step writes into a per-work-item scratch row laid out as
  ``[gate_0 | gate_1 | ... ]`` (each ``nj`` wide, ``nj`` = units of the item's unit block),
  prefilled with ``xp + bias`` (GRU: the n slot is prefilled with ``b_hn`` and the x part
  ``x W_in^T + b_in`` goes to a fourth slot), so that one GEMM with beta=1 finishes the gate
  pre-activations.

Parallelism: the batch is split into ``nb`` blocks and the hidden units into ``nu`` blocks;
work item ``w = bi*nu + uj``.  With ``nu == 1`` the items are independent sequences (no
synchronisation at all); with ``nu > 1`` all threads meet at one OpenMP barrier per timestep.
BLAS (scipy's OpenBLAS) is called single-threaded from inside the threads; the Python side
limits OpenBLAS to one thread around the call.

Activations (float32): ``tanh`` is a [9/8] odd rational minimax approximation
``x P(x^2) / Q(x^2)`` on ``|x| <= 9`` (clamped outside), fitted for this project; measured max
absolute error against the exact tanh, evaluated in float32 on a dense grid, is 3.4e-7
(documented bound: 5e-7); ``sigmoid(x) = 0.5 tanh(x/2) + 0.5`` (bound 2.5e-7 + rounding,
documented bound 4e-7).  float64 uses exact libm ``tanh`` / ``exp``.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport parallel
cimport openmp
from libc.math cimport tanh as libm_tanh, exp as libm_exp
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #if defined(__SSE__) || defined(_M_X64) || defined(_M_AMD64)
    #include <xmmintrin.h>
    static unsigned int fr_ftz_enter(void) {
        unsigned int old = _mm_getcsr();
        _mm_setcsr(old | 0x8040u);   /* flush-to-zero + denormals-are-zero */
        return old;
    }
    static void fr_ftz_exit(unsigned int old) { _mm_setcsr(old); }
    #else
    static unsigned int fr_ftz_enter(void) { return 0u; }
    static void fr_ftz_exit(unsigned int old) { (void)old; }
    #endif
    static void fr_omp_barrier(void) {
    #ifdef _OPENMP
    #pragma omp barrier
    #endif
    }
    """
    unsigned int fr_ftz_enter() noexcept nogil
    void fr_ftz_exit(unsigned int old) noexcept nogil
    void fr_omp_barrier() noexcept nogil


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

# tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= 9 (least-squares/Lawson minimax fit, see module doc)

TANH_F32_MAX_ABS_ERR = 5e-7
SIGMOID_F32_MAX_ABS_ERR = 4e-7


cdef inline float _tanh_f32(float x) noexcept nogil:
    cdef float u, p, q
    x = x if x < <float>9.0 else <float>9.0
    x = x if x > <float>(-9.0) else <float>(-9.0)
    u = x * x
    p = ((((<float>1.318422325100594e-08) * u + <float>2.0471829302420864e-05) * u + <float>0.0034865817761282497) * u + <float>0.13373197582110807) * u + <float>0.999999906334163
    q = ((((<float>7.702663020739875e-07) * u + <float>0.0003271385226798963) * u + <float>0.02584197869851762) * u + <float>0.4670649444421864) * u + <float>1.0
    return x * p / q


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return _tanh_f32(x)
    else:
        return libm_tanh(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    if floating is float:
        return <float>0.5 * _tanh_f32(<float>0.5 * x) + <float>0.5
    else:
        return 1.0 / (1.0 + libm_exp(-x))


cdef inline void _sigmoid_inplace(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        a[j] = _sigmoid(a[j])


cdef inline void _tanh_inplace(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        a[j] = _tanh(a[j])


def tanh_approx(const floating[::1] x,  # IN
                floating[::1] out):     # OUT
    """Apply the engine's tanh to ``x`` (for testing the approximation bound)."""
    cdef Py_ssize_t j
    for j in range(x.shape[0]):
        out[j] = _tanh(x[j])


def sigmoid_approx(const floating[::1] x,  # IN
                   floating[::1] out):     # OUT
    """Apply the engine's sigmoid to ``x`` (for testing the approximation bound)."""
    cdef Py_ssize_t j
    for j in range(x.shape[0]):
        out[j] = _sigmoid(x[j])


# ---------------------------------------------------------------------------------------------
# GEMM helpers (row-major wrappers around Fortran BLAS, and a small register-friendly kernel)
# ---------------------------------------------------------------------------------------------

cdef inline void _blas_gemm(char ta, char tb, int m, int n, int k, floating alpha,
                            const floating* a, int lda, const floating* b, int ldb,
                            floating beta, floating* c, int ldc) noexcept nogil:
    """Column-major C(m, n) = alpha op(A) op(B) + beta C (plain Fortran BLAS semantics)."""
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb, &beta, c, &ldc)


cdef inline void _small_gemm_acc(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                                 const floating* A, Py_ssize_t lda,   # IN (M, K) row-major
                                 const floating* W, Py_ssize_t ldw,   # IN (K, N) row-major
                                 floating* C, Py_ssize_t ldc) noexcept nogil:  # INOUT (M, N)
    """C += A @ W for small sizes (no call overhead; the j loop vectorises)."""
    cdef Py_ssize_t m, k, j
    cdef floating a0, a1
    cdef floating* c0
    cdef floating* c1
    cdef const floating* w
    m = 0
    while m + 1 < M:
        c0 = C + m * ldc
        c1 = c0 + ldc
        for k in range(K):
            a0 = A[m * lda + k]
            a1 = A[(m + 1) * lda + k]
            w = W + k * ldw
            for j in range(N):
                c0[j] += a0 * w[j]
                c1[j] += a1 * w[j]
        m += 2
    if m < M:
        c0 = C + m * ldc
        for k in range(K):
            a0 = A[m * lda + k]
            w = W + k * ldw
            for j in range(N):
                c0[j] += a0 * w[j]


# ---------------------------------------------------------------------------------------------
# Input projection: xp[:, off:off+N] = X @ W^T  (one GEMM over all B*T rows, split by rows)
# ---------------------------------------------------------------------------------------------

cdef void _proj_rows(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t K, Py_ssize_t N,
                     const floating* X, Py_ssize_t ldx, const floating* W,
                     floating* Y, Py_ssize_t ldy, bint use_blas) noexcept nogil:
    cdef Py_ssize_t r
    if r1 <= r0:
        return
    if use_blas:
        # row-major Y(rows, N) = X(rows, K) W(N, K)^T  <=>  col-major Y^T = W^T(col) ... :
        # Y^T (N, rows) = op(A) B with A = W viewed col-major (K, N) -> transa 'T', B = X^T (K, rows)
        _blas_gemm(c'T', c'N', <int>N, <int>(r1 - r0), <int>K, <floating>1.0, W, <int>K,
                   X + r0 * ldx, <int>ldx, <floating>0.0, Y + r0 * ldy, <int>ldy)
    else:
        # small path: W is given transposed (K, N) by the caller in this mode
        for r in range(r0, r1):
            memset(Y + r * ldy, 0, N * sizeof(floating))
        _small_gemm_acc(r1 - r0, N, K, X + r0 * ldx, ldx, W, N, Y + r0 * ldy, ldy)


def input_projection(const floating[:, ::1] x,   # IN  (R, K) layer input, rows b*T + t
                     const floating[:, ::1] w,   # IN  (N, K) weight_ih (PyTorch layout)
                     floating[:, ::1] out,       # OUT (R, LX); columns off .. off+N written
                     Py_ssize_t off,
                     int nthreads):
    """``out[:, off:off+N] = x @ w.T`` as one GEMM, rows split over ``nthreads`` threads."""
    cdef Py_ssize_t R = x.shape[0], K = x.shape[1], N = w.shape[0], ldy = out.shape[1]
    cdef Py_ssize_t chunk, r0
    cdef int tid, nth
    cdef unsigned int csr
    if R == 0 or N == 0:
        return
    if K == 0:
        for r0 in range(R):
            memset(&out[r0, off], 0, N * sizeof(floating))
        return
    if nthreads <= 1 or R < 2 * 16:
        with nogil:
            csr = fr_ftz_enter()
            _proj_rows(0, R, K, N, &x[0, 0], K, &w[0, 0], &out[0, off], ldy, True)
            fr_ftz_exit(csr)
        return
    with nogil, parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        chunk = (R + nth - 1) // nth
        r0 = tid * chunk
        csr = fr_ftz_enter()
        _proj_rows(r0, min(r0 + chunk, R), K, N, &x[0, 0], K, &w[0, 0], &out[0, off], ldy, True)
        fr_ftz_exit(csr)


# ---------------------------------------------------------------------------------------------
# One timestep of one work item (batch block x unit block): prefill, recurrent GEMM, gate math
# ---------------------------------------------------------------------------------------------

cdef void _step_item(
        int cell, bint reverse, Py_ssize_t s, Py_ssize_t T, Py_ssize_t H, Py_ssize_t G,
        Py_ssize_t p0, Py_ssize_t na,            # first sorted position of the block, active rows
        Py_ssize_t u0, Py_ssize_t nj,            # unit block
        const floating* xp, Py_ssize_t LX,       # IN  input projection (caller rows), dir offset applied
        const floating* bx,                      # IN  (G*H) bias added to xp (GRU n: b_in)
        const floating* bhn,                     # IN  (H)  GRU b_hn
        const floating* whh,                     # IN  recurrent weights: BLAS: weight_hh (G*H, H);
                                                 #     small: packed block (H, G*nj) for this unit block
        bint use_blas,
        const int64_t* order, const int64_t* lengths,  # IN
        const floating* cur,                     # IN  (na, H) previous h, rows of the block
        floating* nxt,                           # OUT (na, H) new h (only units u0..u0+nj)
        floating* cst,                           # INOUT (na, H) LSTM cell state (units of block)
        floating* y, Py_ssize_t LY,              # OUT y rows (caller rows), dir offset applied
        floating* hN, floating* cN,              # OUT (B, H) final states, caller rows
        floating* rec,                           # scratch (na, ldr)
        Py_ssize_t ldr,
        bint store, floating* wg, floating* wc, floating* whn  # OUT workspace (caller rows)
        ) noexcept nogil:
    cdef Py_ssize_t r, k, j, b, t, L, row, GH = G * H, N = G * nj
    cdef floating* rr
    cdef const floating* xr
    cdef const floating* hp
    cdef floating* hq
    cdef floating* cr
    cdef floating cn, hv, nv, zv
    # 1. prefill: rec[r] = xp[row] + bias (GRU: n slot <- b_hn, 4th slot <- x_n + b_in)
    for r in range(na):
        b = order[p0 + r]
        L = lengths[b]
        t = (L - 1 - s) if reverse else s
        xr = xp + (b * T + t) * LX
        rr = rec + r * ldr
        if cell == 3:
            for j in range(nj):
                rr[j] = xr[u0 + j] + bx[u0 + j]
            for j in range(nj):
                rr[nj + j] = xr[H + u0 + j] + bx[H + u0 + j]
            for j in range(nj):
                rr[2 * nj + j] = bhn[u0 + j]
            for j in range(nj):
                rr[3 * nj + j] = xr[2 * H + u0 + j] + bx[2 * H + u0 + j]
        else:
            for k in range(G):
                for j in range(nj):
                    rr[k * nj + j] = xr[k * H + u0 + j] + bx[k * H + u0 + j]
    # 2. recurrent GEMM, accumulated: rec[:, :N] += cur @ W_hh[block]^T
    if use_blas:
        # rec^T (nj, na) for gate k = W_hh[k*H+u0 : k*H+u0+nj, :] (row-major (nj, H) -> 'T')
        #                              times cur^T (H, na)
        if u0 == 0 and nj == H:
            _blas_gemm(c'T', c'N', <int>N, <int>na, <int>H, <floating>1.0, whh, <int>H,
                       cur, <int>H, <floating>1.0, rec, <int>ldr)
        else:
            for k in range(G):
                _blas_gemm(c'T', c'N', <int>nj, <int>na, <int>H, <floating>1.0,
                           whh + (k * H + u0) * H, <int>H, cur, <int>H, <floating>1.0,
                           rec + k * nj, <int>ldr)
    else:
        _small_gemm_acc(na, N, H, cur, H, whh, N, rec, ldr)
    # 3. gate math, state update, outputs
    for r in range(na):
        b = order[p0 + r]
        L = lengths[b]
        t = (L - 1 - s) if reverse else s
        row = b * T + t
        rr = rec + r * ldr
        hp = cur + r * H + u0
        hq = nxt + r * H + u0
        if cell == 0:
            for j in range(nj):
                hq[j] = _tanh(rr[j])
        elif cell == 1:
            for j in range(nj):
                hv = rr[j]
                hq[j] = hv if hv > 0 else <floating>0.0
        elif cell == 2:
            cr = cst + r * H + u0
            _sigmoid_inplace(rr, 2 * nj)
            _tanh_inplace(rr + 2 * nj, nj)
            _sigmoid_inplace(rr + 3 * nj, nj)
            for j in range(nj):
                cn = rr[nj + j] * cr[j] + rr[j] * rr[2 * nj + j]
                cr[j] = cn
                hq[j] = rr[3 * nj + j] * _tanh(cn)
            if store:
                memcpy(wc + row * H + u0, cr, nj * sizeof(floating))
        else:
            _sigmoid_inplace(rr, 2 * nj)
            if store:
                memcpy(whn + row * H + u0, rr + 2 * nj, nj * sizeof(floating))
            for j in range(nj):
                nv = _tanh(rr[3 * nj + j] + rr[j] * rr[2 * nj + j])
                rr[2 * nj + j] = nv
                zv = rr[nj + j]
                hq[j] = nv + zv * (hp[j] - nv)
        if store and cell >= 2:
            for k in range(G):
                memcpy(wg + row * GH + k * H + u0, rr + k * nj, nj * sizeof(floating))
        memcpy(y + row * LY + u0, hq, nj * sizeof(floating))
        if s == L - 1:
            memcpy(hN + b * H + u0, hq, nj * sizeof(floating))
            if cell == 2:
                memcpy(cN + b * H + u0, cst + r * H + u0, nj * sizeof(floating))


cdef inline Py_ssize_t _active(Py_ssize_t na, Py_ssize_t s, Py_ssize_t p0,
                               const int64_t* order, const int64_t* lengths) noexcept nogil:
    """Shrink the active prefix of a length-sorted block to the rows with length > s."""
    while na > 0 and lengths[order[p0 + na - 1]] <= s:
        na -= 1
    return na


cdef void _worker(int tid, int nth, int cell, bint reverse, Py_ssize_t T, Py_ssize_t tmax,
                  Py_ssize_t B, Py_ssize_t H, Py_ssize_t G,
                  const floating* xp, Py_ssize_t LX, const floating* bx, const floating* bhn,
                  const floating* whh, bint use_blas,
                  const int64_t* ublk, Py_ssize_t nu, const int64_t* bblk, Py_ssize_t nb,
                  const int64_t* order, const int64_t* lengths,
                  floating* hbuf, floating* cbuf, floating* y, Py_ssize_t LY,
                  floating* hN, floating* cN, floating* scratch, Py_ssize_t scr_stride,
                  Py_ssize_t ldr, bint store, floating* wg, floating* wc, floating* whn
                  ) noexcept nogil:
    cdef Py_ssize_t w, s, bi, uj, p0, na, u0, nj, nitems = nb * nu
    cdef Py_ssize_t BH = B * H
    cdef const floating* wblk
    cdef floating* cur
    cdef floating* nxt
    cdef unsigned int csr = fr_ftz_enter()
    cdef Py_ssize_t na_local[64]          # per-item active counts (nitems <= 64 enforced by caller)
    for w in range(nitems):
        na_local[w] = bblk[w // nu + 1] - bblk[w // nu]
    if nu == 1:
        # independent batch blocks: each runs its own time loop, no synchronisation
        w = tid
        while w < nitems:
            p0 = bblk[w]
            na = na_local[w]
            for s in range(tmax):
                na = _active(na, s, p0, order, lengths)
                if na == 0:
                    break
                cur = hbuf + (s & 1) * BH + p0 * H
                nxt = hbuf + ((s + 1) & 1) * BH + p0 * H
                _step_item(cell, reverse, s, T, H, G, p0, na, 0, H, xp, LX, bx, bhn, whh,
                           use_blas, order, lengths, cur, nxt, cbuf + p0 * H, y, LY, hN, cN,
                           scratch + w * scr_stride, ldr, store, wg, wc, whn)
            w += nth
    else:
        for s in range(tmax):
            w = tid
            while w < nitems:
                bi = w // nu
                uj = w - bi * nu
                p0 = bblk[bi]
                na = _active(na_local[w], s, p0, order, lengths)
                na_local[w] = na
                if na > 0:
                    u0 = ublk[uj]
                    nj = ublk[uj + 1] - u0
                    cur = hbuf + (s & 1) * BH + p0 * H
                    nxt = hbuf + ((s + 1) & 1) * BH + p0 * H
                    if use_blas:
                        wblk = whh
                    else:
                        wblk = whh + H * G * u0
                    _step_item(cell, reverse, s, T, H, G, p0, na, u0, nj, xp, LX, bx, bhn,
                               wblk, use_blas, order, lengths, cur, nxt, cbuf + p0 * H, y, LY,
                               hN, cN, scratch + w * scr_stride, ldr, store, wg, wc, whn)
                w += nth
            fr_omp_barrier()
    fr_ftz_exit(csr)


def recurrence(int cell, bint reverse, Py_ssize_t tmax,
               const floating[:, ::1] xp,        # IN  (B*T, LX) input projection, caller rows
               Py_ssize_t xoff,                  #     column offset of this direction in xp
               const floating[::1] bx,           # IN  (G*H) bias added to the x part
               const floating[::1] bhn,          # IN  (H) GRU b_hn (any length >= 1 otherwise)
               const floating[::1] whh,          # IN  BLAS: weight_hh (G*H*H, PyTorch layout);
                                                 #     small kernel: packed blocks (see _engine)
               bint use_blas,
               const int64_t[::1] ublk,          # IN  (nu+1) unit block boundaries
               const int64_t[::1] bblk,          # IN  (nb+1) batch block boundaries (sorted pos.)
               const int64_t[::1] order,         # IN  (B) caller row of each sorted position
               const int64_t[::1] lengths,       # IN  (B) lengths, caller order
               floating[:, :, ::1] hbuf,         # INOUT (2, B, H); hbuf[0] = h0 (sorted order)
               floating[:, ::1] cbuf,            # INOUT (B, H) LSTM c0 (sorted order) / dummy
               floating[:, ::1] y,               # OUT (B*T, LY) outputs, caller rows
               Py_ssize_t yoff,                  #     column offset of this direction in y
               floating[:, ::1] hN,              # OUT (B, H) final h, caller order
               floating[:, ::1] cN,              # OUT (B, H) final c (LSTM) / dummy
               floating[:, ::1] scratch,         # scratch (nb*nu, >= rows*ldr)
               Py_ssize_t ldr,                   #     scratch row stride (>= (G + gru) * max nj)
               bint store,                       #     write the training workspace
               floating[:, ::1] wg,              # OUT (B*T, G*H) gate activations / dummy
               floating[:, ::1] wc,              # OUT (B*T, H) LSTM cell states / dummy
               floating[:, ::1] whn,             # OUT (B*T, H) GRU h W_hn^T + b_hn / dummy
               int nthreads):
    """Run one layer-direction over time (see the module docstring for the layout)."""
    cdef Py_ssize_t B = hbuf.shape[1], H = hbuf.shape[2]
    cdef Py_ssize_t T = xp.shape[0] // B if B > 0 else 0
    cdef Py_ssize_t G = 4 if cell == 2 else (3 if cell == 3 else 1)
    cdef Py_ssize_t nu = ublk.shape[0] - 1, nb = bblk.shape[0] - 1
    cdef int tid, nth
    if B == 0 or tmax == 0:
        return
    if nb * nu > 64:
        raise ValueError("too many work items")
    if nthreads <= 1:
        with nogil:
            _worker(0, 1, cell, reverse, T, tmax, B, H, G, &xp[0, xoff], xp.shape[1], &bx[0],
                    &bhn[0], &whh[0], use_blas, &ublk[0], nu, &bblk[0], nb, &order[0],
                    &lengths[0], &hbuf[0, 0, 0], &cbuf[0, 0], &y[0, yoff], y.shape[1],
                    &hN[0, 0], &cN[0, 0], &scratch[0, 0], scratch.shape[1], ldr, store,
                    &wg[0, 0], &wc[0, 0], &whn[0, 0])
        return
    with nogil, parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        _worker(tid, nth, cell, reverse, T, tmax, B, H, G, &xp[0, xoff], xp.shape[1], &bx[0],
                &bhn[0], &whh[0], use_blas, &ublk[0], nu, &bblk[0], nb, &order[0],
                &lengths[0], &hbuf[0, 0, 0], &cbuf[0, 0], &y[0, yoff], y.shape[1],
                &hN[0, 0], &cN[0, 0], &scratch[0, 0], scratch.shape[1], ldr, store,
                &wg[0, 0], &wc[0, 0], &whn[0, 0])


def max_threads():
    """Number of threads OpenMP would use by default."""
    return openmp.omp_get_max_threads()

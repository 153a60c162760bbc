# The engine's GEMM on its threads, packing, and the C entry points of the Numba BPTT
# kernels; included by _compiled.pyx.

# ---------------------------------------------------------------------------------------------
# GEMM on the engine's threads
# ---------------------------------------------------------------------------------------------

cdef inline void _row_share(Py_ssize_t M, Py_ssize_t mr, int tid, int nth, Py_ssize_t* r0,
                            Py_ssize_t* r1) noexcept nogil:
    """Thread ``tid`` of ``nth``'s rows ``r0 .. r1`` of ``M``: whole tiles of ``mr`` rows from
    row 0, so that every row lies in the same tile on any number of threads (same bits)."""
    cdef Py_ssize_t chunk = (M + nth - 1) // nth
    chunk = ((chunk + mr - 1) // mr) * mr
    r0[0] = min(tid * chunk, M)
    r1[0] = min(r0[0] + chunk, M)


cdef void _gemm_rows(const fr_kernels_t* kt, int tid, int nth,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, bint trans_a,
                     const floating* Bp,                  # IN packed, shared by the threads
                     floating* C, Py_ssize_t ldc,
                     const floating* A2=NULL, Py_ssize_t lda2=0,   # IN second operand
                     Py_ssize_t M1=0, bint accumulate=False) noexcept nogil:
    """Thread ``tid`` of ``nth``: ``C = op(A) @ B`` for its share of the rows (_row_share).
    With ``A2`` (transposed, like A): rows ``M1 ..`` of C come from ``A2`` (``C = [A | A2]^T
    @ B``, one packing of B for both); each thread takes its share of A's rows and of A2's."""
    cdef Py_ssize_t r0, r1
    if A2 == NULL:
        _row_share(M, kt.mr, tid, nth, &r0, &r1)
        _gemm_range(kt, M, r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
    else:
        _row_share(M1, kt.mr, tid, nth, &r0, &r1)
        _gemm_range(kt, M1, r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
        _row_share(M - M1, kt.mr, tid, nth, &r0, &r1)
        _gemm_range(kt, M - M1, r0, r1, N, K, A2, lda2, trans_a, Bp, C + M1 * ldc, ldc, accumulate)


#: below this many multiply-adds a product (or a batch of them) runs on one thread (a team
#: costs ~10 us)
PAR_WORK = 1 << 18


cdef inline void _pack_op_b(const fr_kernels_t* kt, const floating* B, Py_ssize_t ldb,
                            bint trans_b, Py_ssize_t K, Py_ssize_t N, floating* bp,
                            Py_ssize_t pfirst, Py_ssize_t pstep) noexcept nogil:
    """Panel-pack op(B) (K, N): B itself, or B^T from B stored (N, K) (its rows, ``ldb``
    apart, are the columns of op(B)); panels pfirst, pfirst + pstep, ..."""
    if trans_b:
        _pack_panels(kt, B, K, 1, N, 0, N, bp, pfirst, pstep, ldb)
    else:
        _pack_rows(kt, B, ldb, K, N, bp, pfirst, pstep)


cdef void _gemm_part(const fr_kernels_t* kt, int tid, int nth,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, bint trans_a,
                     const floating* B, Py_ssize_t ldb, bint trans_b,
                     floating* C, Py_ssize_t ldc, floating* bp,
                     const floating* A2, Py_ssize_t lda2, Py_ssize_t M1,
                     bint accumulate, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``nth`` of ``gemm``: its share of packing op(B), a barrier, its C rows,
    the join."""
    cdef fr_member_t me
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    _pack_op_b(kt, B, ldb, trans_b, K, N, bp, tid, nth)
    fr_barrier_wait(bar, nth, &me)
    _gemm_rows(kt, tid, nth, M, N, K, A, lda, trans_a, bp, C, ldc, A2, lda2, M1, accumulate)
    fr_team_leave(bar, nth, &me)
    fr_ftz_exit(csr)


def gemm(const floating[:, :] a,     # IN  (M, K), or (K, M) if trans_a; unit column stride
         const floating[:, :] b,     # IN  (K, N), or (N, K) if trans_b; unit column stride
         floating[:, :] c,           # OUT (M, N), or (M + M2, N) with a2; unit column stride
         bint trans_a, int nthreads,
         const floating[:, :] a2=None,   # IN  (K, M2), transposed like a (trans_a only)
         bint accumulate=False, bint trans_b=False):
    """``c[:] = op(a) @ op(b)`` with the engine's own kernel on ``nthreads`` threads (``op(a)``
    is ``a.T`` if ``trans_a``, ``op(b)`` is ``b.T`` if ``trans_b``): op(b) panel-packed once
    (the threads share it), the rows of c split between the threads.  Rows of ``a``, ``b`` and
    ``c`` may be strided (column slices of a matrix).  With ``a2`` (``trans_a`` only): ``c =
    [a | a2].T @ op(b)``, two products on one packing of b (BPTT's dW_ih and dW_hh).
    ``accumulate``: ``c += ...`` instead."""
    cdef Py_ssize_t M1 = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t M = c.shape[0], N = c.shape[1]
    cdef Py_ssize_t K = b.shape[1] if trans_b else b.shape[0], lda, ldb, ldc, lda2 = 0
    cdef const floating* a2p = NULL
    cdef int tid, nth
    if a2 is not None:
        if not trans_a or a2.shape[0] != K or M1 + a2.shape[1] != M:
            raise ValueError("gemm: shapes do not match")
        if a2.strides[1] != sizeof(floating):
            raise ValueError("gemm: a2 needs a unit column stride")
    elif M1 != M:
        raise ValueError("gemm: shapes do not match")
    if (a.shape[0] if trans_a else a.shape[1]) != K or \
            (b.shape[0] if trans_b else b.shape[1]) != N:
        raise ValueError("gemm: shapes do not match")
    if M == 0 or N == 0:
        return
    if c.strides[1] != sizeof(floating):
        raise ValueError("gemm: c needs a unit column stride")
    if K == 0:
        if not accumulate:
            c[:, :] = 0
        return
    if a.strides[1] != sizeof(floating) or b.strides[1] != sizeof(floating):
        raise ValueError("gemm: a and b need unit column strides")
    if a2 is not None and a2.shape[1] == 0:      # an empty operand: one product
        a2 = None
    elif a2 is not None and M1 == 0:
        a, a2, M1 = a2, None, M
    lda = a.strides[0] // sizeof(floating)
    ldb = b.strides[0] // sizeof(floating)
    ldc = c.strides[0] // sizeof(floating)
    if a2 is not None:
        a2p = &a2[0, 0]
        lda2 = a2.strides[0] // sizeof(floating)
    cdef const fr_kernels_t* kt = g_kt
    bp_arr = np.empty(_packed_size(kt, K, N, sizeof(floating)),
                      dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] bp = bp_arr
    cdef const floating* ap = &a[0, 0]
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    if nthreads > 1 and (M < 8 or M * N * K < PAR_WORK):
        nthreads = 1
    nthreads = _threads(nthreads)
    with nogil:
        if nthreads <= 1:
            _gemm_part(kt, 0, 1, M, N, K, ap, lda, trans_a, &b[0, 0], ldb, trans_b, &c[0, 0],
                       ldc, &bp[0], a2p, lda2, M1, accumulate, &bar)
        else:
            with parallel(num_threads=nthreads):
                tid = openmp.omp_get_thread_num()
                nth = openmp.omp_get_num_threads()
                _gemm_part(kt, tid, nth, M, N, K, ap, lda, trans_a, &b[0, 0], ldb, trans_b,
                           &c[0, 0], ldc, &bp[0], a2p, lda2, M1, accumulate, &bar)
            fr_team_done(&bar)


cdef void _bmm_part(const fr_kernels_t* kt, int tid, int nth, Py_ssize_t S1, Py_ssize_t S2,
                    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    const floating* A, Py_ssize_t as1, Py_ssize_t as2, Py_ssize_t lda,
                    bint trans_a,
                    const floating* B, Py_ssize_t bs1, Py_ssize_t bs2, Py_ssize_t ldb,
                    bint trans_b,
                    floating* C, Py_ssize_t cs1, Py_ssize_t cs2, Py_ssize_t ldc,
                    floating* bp, bint accumulate, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``nth`` of ``bmm``: the products ``tid, tid + nth, ...`` (in the order
    of the two leading indices), each op(B) packed into this thread's ``bp``; the join."""
    cdef fr_member_t me
    cdef unsigned long csr = fr_ftz_enter()
    cdef Py_ssize_t s, i, j
    fr_member_init(&me)
    s = tid
    while s < S1 * S2:
        i = s // S2
        j = s - i * S2
        _pack_op_b(kt, B + i * bs1 + j * bs2, ldb, trans_b, K, N, bp, 0, 1)
        _gemm_range(kt, M, 0, M, N, K, A + i * as1 + j * as2, lda, trans_a, bp,
                    C + i * cs1 + j * cs2, ldc, accumulate)
        s += nth
    fr_team_leave(bar, nth, &me)
    fr_ftz_exit(csr)


def bmm(const floating[:, :, :, :] a,   # IN  (S1, S2, M, K), or (S1, S2, K, M) if trans_a
        const floating[:, :, :, :] b,   # IN  (S1, S2, K, N), or (S1, S2, N, K) if trans_b
        floating[:, :, :, :] c,         # OUT (S1, S2, M, N)
        bint trans_a, bint trans_b, int nthreads, bint accumulate=False):
    """``c[i, j] = op(a[i, j]) @ op(b[i, j])`` for every ``(i, j)`` (``c +=`` with
    ``accumulate``), the products split between ``nthreads`` threads (each packs its own
    op(b[i, j])).  Any strides, except a unit stride along the last axis of each array (the
    heads of attention are strided views).  A product's bits do not depend on the thread
    count."""
    cdef Py_ssize_t S1 = c.shape[0], S2 = c.shape[1], M = c.shape[2], N = c.shape[3]
    cdef Py_ssize_t K = a.shape[2] if trans_a else a.shape[3]
    cdef Py_ssize_t e = sizeof(floating), psize
    cdef Py_ssize_t as1, as2, lda, bs1, bs2, ldb, cs1, cs2, ldc
    cdef int tid, nth
    if (a.shape[0] != S1 or a.shape[1] != S2 or b.shape[0] != S1 or b.shape[1] != S2
            or (a.shape[3] if trans_a else a.shape[2]) != M
            or (b.shape[3] if trans_b else b.shape[2]) != K
            or (b.shape[2] if trans_b else b.shape[3]) != N):
        raise ValueError("bmm: shapes do not match")
    if S1 == 0 or S2 == 0 or M == 0 or N == 0:
        return
    if c.strides[3] != e:
        raise ValueError("bmm: c needs a unit stride along its last axis")
    if K == 0:
        if not accumulate:
            c[:, :, :, :] = 0
        return
    if a.strides[3] != e or b.strides[3] != e:
        raise ValueError("bmm: a and b need a unit stride along their last axis")
    as1, as2, lda = a.strides[0] // e, a.strides[1] // e, a.strides[2] // e
    bs1, bs2, ldb = b.strides[0] // e, b.strides[1] // e, b.strides[2] // e
    cs1, cs2, ldc = c.strides[0] // e, c.strides[1] // e, c.strides[2] // e
    cdef const fr_kernels_t* kt = g_kt
    if S1 * S2 * M * N * K < PAR_WORK:
        nthreads = 1
    nthreads = _threads(<int>min(<Py_ssize_t>nthreads, S1 * S2))
    psize = _packed_size(kt, K, N, e)
    bp_arr = np.empty(nthreads * psize, dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] bp = bp_arr
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    with nogil:
        if nthreads <= 1:
            _bmm_part(kt, 0, 1, S1, S2, M, N, K, &a[0, 0, 0, 0], as1, as2, lda, trans_a,
                      &b[0, 0, 0, 0], bs1, bs2, ldb, trans_b, &c[0, 0, 0, 0], cs1, cs2, ldc,
                      &bp[0], accumulate, &bar)
        else:
            with parallel(num_threads=nthreads):
                tid = openmp.omp_get_thread_num()
                nth = openmp.omp_get_num_threads()
                _bmm_part(kt, tid, nth, S1, S2, M, N, K, &a[0, 0, 0, 0], as1, as2, lda,
                          trans_a, &b[0, 0, 0, 0], bs1, bs2, ldb, trans_b, &c[0, 0, 0, 0], cs1,
                          cs2, ldc, &bp[tid * psize], accumulate, &bar)
            fr_team_done(&bar)


def pack_rows(const floating[:, ::1] b, out=None):
    """Panel-pack ``b`` (K, N) itself for the GEMM kernel in use (C = A @ b); see _pack_rows.
    Into ``out`` (1-D, ``packed_size(K, N)`` elements of b's dtype) if given; returns the
    packed array."""
    cdef Py_ssize_t K = b.shape[0], N = b.shape[1]
    cdef const fr_kernels_t* kt = g_kt
    if out is None:
        out = np.empty(_packed_size(kt, K, N, sizeof(floating)),
                       dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] o = out
    if o.shape[0] != _packed_size(kt, K, N, sizeof(floating)):
        raise ValueError("pack_rows: out has the wrong size")
    if K > 0 and N > 0:
        with nogil:
            _pack_rows(kt, &b[0, 0], N, K, N, &o[0], 0, 1)
    return out


# Entry points for the Numba BPTT kernels (fastrnn._bptt), which call them by symbol name
# (llvmlite.binding.add_symbol; a cached kernel refers to the name, not to an address).
# Every argument is an integer: sizes, addresses of C-contiguous buffers, flags.

#: multiply-adds of one BPTT step GEMM from which it is split over the engine's threads
DH_PARALLEL_MIN_WORK = 1 << 19
cdef Py_ssize_t g_dh_par_work = DH_PARALLEL_MIN_WORK


def set_dh_parallel_min_work(Py_ssize_t n):
    """Set the size (multiply-adds) from which a BPTT step GEMM runs on several threads."""
    global g_dh_par_work
    g_dh_par_work = n


cdef void _dh_cols(const fr_kernels_t* kt, int tid, int nth, Py_ssize_t M, Py_ssize_t N,
                   Py_ssize_t K, const floating* A, const floating* Bp, floating* C,
                   bint accumulate) noexcept nogil:
    """Thread ``tid`` of ``nth``: C[:, its panels] (+)= A @ B[:, its panels] (whole panels, so
    each thread streams only its share of B)."""
    cdef Py_ssize_t NR = _panel_width(kt, sizeof(floating))
    cdef Py_ssize_t npan = (N + NR - 1) // NR, per, c0, c1, r
    per = (npan + nth - 1) // nth
    c0 = min(tid * per * NR, N)
    c1 = min(c0 + per * NR, N)
    if c1 <= c0:
        return
    if not accumulate:
        for r in range(M):
            memset(C + r * N + c0, 0, (c1 - c0) * sizeof(floating))
    _gemm_acc(kt, M, c1 - c0, K, A, K, Bp + K * c0, C + c0, N)


cdef void _dh_gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                   const floating* Bp, floating* C, bint accumulate, int nt) noexcept nogil:
    """C (M, N) [+]= A (M, K) @ B, B panel-packed by pack_rows; split by column panels over
    ``nt`` threads when the product has at least ``g_dh_par_work`` multiply-adds."""
    cdef int tid, nth
    cdef const fr_kernels_t* kt = g_kt
    cdef Py_ssize_t NR = _panel_width(kt, sizeof(floating))
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    if nt > 1 and M * N * K >= g_dh_par_work and N > NR and _threads(nt) > 1:
        with parallel(num_threads=nt):
            tid = openmp.omp_get_thread_num()
            nth = openmp.omp_get_num_threads()
            _dh_part(kt, tid, nth, M, N, K, A, Bp, C, accumulate, &bar)
        fr_team_done(&bar)
    else:
        _dh_cols(kt, 0, 1, M, N, K, A, Bp, C, accumulate)


cdef void _dh_part(const fr_kernels_t* kt, int tid, int nth, Py_ssize_t M, Py_ssize_t N,
                   Py_ssize_t K, const floating* A, const floating* Bp, floating* C,
                   bint accumulate, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``nth`` of ``_dh_gemm``: its column panels, then the join."""
    cdef fr_member_t me
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    _dh_cols(kt, tid, nth, M, N, K, A, Bp, C, accumulate)
    fr_team_leave(bar, nth, &me)
    fr_ftz_exit(csr)


cdef void _dh_gemm_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, size_t A, size_t Bp, size_t C,
                     Py_ssize_t accumulate, Py_ssize_t nthreads) noexcept nogil:
    """float32 ``_dh_gemm`` (all arguments integers, for the Numba kernels)."""
    _dh_gemm(M, N, K, <const float*>A, <const float*>Bp, <float*>C, accumulate != 0,
             <int>nthreads)


cdef void _dh_gemm_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, size_t A, size_t Bp, size_t C,
                     Py_ssize_t accumulate, Py_ssize_t nthreads) noexcept nogil:
    """float64 ``_dh_gemm`` (all arguments integers, for the Numba kernels)."""
    _dh_gemm(M, N, K, <const double*>A, <const double*>Bp, <double*>C, accumulate != 0,
             <int>nthreads)


cdef size_t _ftz_on() noexcept nogil:
    """Flush denormals to zero in this thread; returns the previous control word."""
    return fr_ftz_enter()


cdef size_t _ftz_off(size_t old) noexcept nogil:
    """Restore the control word that _ftz_on returned."""
    fr_ftz_exit(<unsigned long>old)
    return 0


def bptt_symbols():
    """{symbol name: address} of the C entry points that the Numba BPTT kernels call."""
    return {"fastrnn_dh_gemm_f32": <size_t>&_dh_gemm_f,
            "fastrnn_dh_gemm_f64": <size_t>&_dh_gemm_d,
            "fastrnn_ftz_on": <size_t>&_ftz_on,
            "fastrnn_ftz_off": <size_t>&_ftz_off}


def dot_gemm(const floating[:, ::1] a,    # IN  (M, K)
             const floating[:, ::1] w,    # IN  (N, K)
             floating[:, ::1] c):         # INOUT (M, N): c += a @ w.T
    """The engine's dot-product GEMM kernel, exposed for tests and benchmarks."""
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = w.shape[0]
    if c.shape[0] != M or c.shape[1] != N or w.shape[1] != K:
        raise ValueError("dot_gemm: shapes do not match")
    if M == 0 or N == 0 or K == 0:
        return
    with nogil:
        _dot_gemm_acc(g_kt, M, N, K, &a[0, 0], K, &w[0, 0], K, &c[0, 0], N)


def pack_panels(const floating[:, ::1] w,      # IN  (G*H, K) PyTorch layout
                Py_ssize_t G, Py_ssize_t u0, Py_ssize_t nj,
                floating[::1] out):            # OUT (packed_size(K, G*nj, dtype))
    """Panel-pack the rows of one unit block of ``w`` (see _pack_panels)."""
    cdef Py_ssize_t K = w.shape[1], H = w.shape[0] // G
    if out.shape[0] != _packed_size(g_kt, K, G * nj, sizeof(floating)) or u0 + nj > H:
        raise ValueError("pack_panels: shapes do not match")
    if out.shape[0] == 0:
        return
    with nogil:
        _pack_panels(g_kt, &w[0, 0], K, G, H, u0, nj, &out[0])


def packed_size(Py_ssize_t K, Py_ssize_t N, dtype):
    """Elements of a (K, N) matrix panel-packed for the GEMM kernel in use."""
    return _packed_size(g_kt, K, N, np.dtype(dtype).itemsize)


def panel_width(dtype):
    """Column panel width of the GEMM kernel in use for ``dtype`` (see fr_kernels.h)."""
    return _panel_width(g_kt, np.dtype(dtype).itemsize)



def small_gemm(const floating[:, ::1] a,    # IN  (M, K)
               const floating[::1] wp,      # IN  W (K, N) panel-packed (see pack_rows)
               floating[:, ::1] c):         # INOUT (M, N): c += a @ W
    """The engine's register-tiled GEMM kernel, exposed for tests and benchmarks."""
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = c.shape[1]
    if c.shape[0] != M or wp.shape[0] != _packed_size(g_kt, K, N, sizeof(floating)):
        raise ValueError("small_gemm: shapes do not match")
    if M == 0 or N == 0 or K == 0:
        return
    with nogil:
        _gemm_acc(g_kt, M, N, K, &a[0, 0], K, &wp[0], &c[0, 0], N)

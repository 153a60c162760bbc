# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled forward driver of fastrnn (private).

Entry points: ``forward_stack`` (the whole stacked, (bi)directional forward in one call, driven
by ``fastrnn._engine.forward``), ``StepKernel`` (streaming, one timestep per call), ``gemm``
(the engine's GEMM, for BPTT's dense products) and the C entry points of the Numba BPTT
kernels (``bptt_symbols``).  The arithmetic itself lives in C, in ``fastrnn/engine/kernels/``:
one source compiled once per instruction set (x86-64 baseline, AVX2 + FMA, AVX-512; NEON on
aarch64), each exporting a table of kernels (``fr_kernels.h``).  At import the best table this
CPU can run is chosen (``FASTRNN_ISA`` forces a lower one, see ``fastrnn._engine``); this module
only plans, allocates, sorts, splits the work over threads and calls the table.  Kernels take
raw pointers to C-contiguous buffers of one floating dtype (float32 or float64: the fused type
``floating``, one code path here) and never allocate in the time loop.

Cell codes: 0 = tanh RNN, 1 = relu RNN, 2 = LSTM (gates i, f, g, o), 3 = GRU (gates r, z, n).

Algorithm per layer and direction
---------------------------------
1. Input projection ``xp = x W_ih^T`` of all timesteps as one GEMM (rows ``b*T + t``;
   with variable lengths only the valid rows, compacted, so padding costs nothing).  Biases are
   not included; they are added when the recurrent buffer is prefilled.  The GEMM is the
   engine's own panel kernel (``_projection``), rows split over the threads.
2. Time loop.  The batch is sorted by length (descending) into ``order``; at step ``s`` only
   the still-active prefix of each batch block is computed (the reverse direction of row b
   processes t = len[b]-1-s).  The recurrent state ``hbuf`` (2, B, H) is double-buffered in
   sorted order; outputs, final states and the workspace are written in the caller's order.
3. Per step and work item: prefill a scratch row ``[gate_0 | gate_1 | ...]`` (each ``nj``
   wide) with ``xp + bias`` (GRU: the n slot with ``b_hn``, and ``x W_in^T + b_in`` in a fourth
   slot), accumulate ``h W_hh^T`` with one GEMM, then the fused gate math (the table's
   ``gates``).

Recurrent GEMM modes: 0 = the register-tiled kernel on W_hh^T panel-packed once per call
(default), 1 = the dot-product kernel on W_hh as given (no packing).

Parallelism: the batch is split into ``nb`` blocks and the hidden units into ``nu`` blocks;
work item ``w = bi*nu + uj``.  With ``nu == 1`` the items are independent sequences (no
synchronisation at all); with ``nu > 1`` all threads meet at one barrier per timestep (a
sense-reversing spin barrier that yields the core after a short spin).  Packing of W_hh is
shared between the threads.  No BLAS is called anywhere: the kernels run at the FMA rate of the
target whatever kernels a BLAS would pick.

Activations (float32): ``tanh`` is an odd [9/8] rational approximation (max absolute error
3.1e-7 measured, documented bound ``TANH_F32_MAX_ABS_ERR``), ``sigmoid(x) = 0.5 tanh(x/2) +
0.5`` (bound ``SIGMOID_F32_MAX_ABS_ERR``); float64 uses libm.  Denormals are flushed to zero
inside the kernels (MXCSR FTZ/DAZ on x86, FPCR.FZ on aarch64; restored on exit).
"""
cimport cython
from cython cimport floating
from cython.parallel cimport parallel
cimport openmp
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "fr_kernels.h" nogil:
    ctypedef Py_ssize_t fr_idx
    ctypedef struct fr_kernels_t:
        const char* name
        int vector_bytes, mr, nv
        fr_idx nr_f, nr_d
        void (*gemm_acc_f)(fr_idx M, fr_idx N, fr_idx K, const float* A, fr_idx lda,
                           const float* Wp, float* C, fr_idx ldc) noexcept nogil
        void (*gemm_acc_d)(fr_idx M, fr_idx N, fr_idx K, const double* A, fr_idx lda,
                           const double* Wp, double* C, fr_idx ldc) noexcept nogil
        void (*gemm_range_f)(fr_idx r0, fr_idx r1, fr_idx N, fr_idx K, const float* A,
                             fr_idx lda, int trans_a, const float* Bp, float* C, fr_idx ldc,
                             int accumulate) noexcept nogil
        void (*gemm_range_d)(fr_idx r0, fr_idx r1, fr_idx N, fr_idx K, const double* A,
                             fr_idx lda, int trans_a, const double* Bp, double* C, fr_idx ldc,
                             int accumulate) noexcept nogil
        void (*dot_gemm_acc_f)(fr_idx M, fr_idx N, fr_idx K, const float* A, fr_idx lda,
                               const float* W, fr_idx ldw, float* C, fr_idx ldc) noexcept nogil
        void (*dot_gemm_acc_d)(fr_idx M, fr_idx N, fr_idx K, const double* A, fr_idx lda,
                               const double* W, fr_idx ldw, double* C,
                               fr_idx ldc) noexcept nogil
        void (*pack_panels_f)(const float* W, fr_idx K, fr_idx G, fr_idx H, fr_idx u0,
                              fr_idx nj, float* out, fr_idx pfirst, fr_idx pstep) noexcept nogil
        void (*pack_panels_d)(const double* W, fr_idx K, fr_idx G, fr_idx H, fr_idx u0,
                              fr_idx nj, double* out, fr_idx pfirst,
                              fr_idx pstep) noexcept nogil
        void (*pack_rows_f)(const float* B, fr_idx ldb, fr_idx K, fr_idx N, float* out,
                            fr_idx pfirst, fr_idx pstep) noexcept nogil
        void (*pack_rows_d)(const double* B, fr_idx ldb, fr_idx K, fr_idx N, double* out,
                            fr_idx pfirst, fr_idx pstep) noexcept nogil
        void (*gates_f)(int cell, float* rec, fr_idx nj, const float* h_prev, float* c,
                        float* h_out, float* hn_out) noexcept nogil
        void (*gates_d)(int cell, double* rec, fr_idx nj, const double* h_prev, double* c,
                        double* h_out, double* hn_out) noexcept nogil
        void (*tanh_f)(const float* x, float* out, fr_idx n) noexcept nogil
        void (*tanh_d)(const double* x, double* out, fr_idx n) noexcept nogil
        void (*sigmoid_f)(const float* x, float* out, fr_idx n) noexcept nogil
        void (*sigmoid_d)(const double* x, double* out, fr_idx n) noexcept nogil
    fr_idx fr_packed_size(fr_idx K, fr_idx N, fr_idx nr)
    const fr_kernels_t* const* fr_compiled_tables()
    int fr_cpu_can_run(const fr_kernels_t* k)
    const fr_kernels_t* fr_best_table()
    unsigned long fr_ftz_enter()
    void fr_ftz_exit(unsigned long old)
    ctypedef struct fr_barrier_t:
        int count
        int sense
        int stalled
        int preempted
        double t_start
    ctypedef struct fr_member_t:
        int sense
        double t_last
        long preemptions
    void fr_barrier_init(fr_barrier_t* b)
    void fr_member_init(fr_member_t* m)
    void fr_barrier_wait(fr_barrier_t* b, int n, fr_member_t* m)
    void fr_team_leave(fr_barrier_t* b, int n, fr_member_t* m)
    double fr_now()
    int fr_team_done(const fr_barrier_t* b)
    int fr_contended()
    void fr_note_contention(double hold_seconds)
    double FR_CONTENDED_WAIT
    double FR_CONTENDED_HOLD
    int FR_CONTENDED_REGIONS
    double FR_IDLE
    double FR_WAKING
    long fr_thread_preemptions()


# ---------------------------------------------------------------------------------------------
# Threads under contention
# ---------------------------------------------------------------------------------------------
# Every thread's share of a parallel region ends with fr_team_leave (the join: a barrier of the
# engine's own, which notices a thread that waited long and a thread that the OS preempted),
# and fr_team_done follows the region (fr_kernels.h): after FR_CONTENDED_REGIONS contended
# regions in a row, entry points run on one thread for a while (_threads).

cdef inline int _threads(int n) noexcept nogil:
    """The number of threads to use for a parallel part asking for ``n``: one while another
    process keeps the engine's threads from running together."""
    return 1 if n > 1 and fr_contended() else n


def contended():
    """True while the engine runs on one thread because another process competes for the
    cores (in ``CONTENDED_REGIONS`` parallel regions in a row a thread waited more than
    ``CONTENDED_WAIT`` s for a team mate that the OS had preempted, less than
    ``CONTENDED_HOLD`` s ago)."""
    return bool(fr_contended())


def note_contention(double hold_seconds):
    """Act as if contention had just been seen, for ``hold_seconds`` (0: forget it); for
    tests."""
    fr_note_contention(hold_seconds)


CONTENDED_WAIT = FR_CONTENDED_WAIT
CONTENDED_REGIONS = FR_CONTENDED_REGIONS
#: regions starting less than WAKING s after IDLE s without one do not count
IDLE = FR_IDLE
WAKING = FR_WAKING


def preemptions_known():
    """True where the OS counts each thread's involuntary context switches (Linux), so that a
    stalled region is contended only if a thread was preempted."""
    return fr_thread_preemptions() >= 0
CONTENDED_HOLD = FR_CONTENDED_HOLD


cdef void _probe_part(int tid, int nth, double delay, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``_team_probe``: thread 1 arrives ``delay`` seconds late."""
    cdef fr_member_t me
    cdef double t0
    fr_member_init(&me)
    if tid == 1:
        t0 = fr_now()
        while fr_now() - t0 < delay:
            pass
    fr_team_leave(bar, nth, &me)


def _team_probe(double delay, bint preempted=True):
    """Run a two-thread region whose second thread arrives ``delay`` seconds late at the join,
    as if preempted by another process (``preempted``) or not (an idle core waking up): the
    contention detector's test (the preemption count of the region is set, not measured, so
    that a stray preemption on an idle machine cannot decide it).  Returns (team size,
    whether the region counted as contended)."""
    cdef int tid, nth
    cdef int team[1]
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    team[0] = 1
    with nogil, parallel(num_threads=2):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        if tid == 0:
            team[0] = nth
        _probe_part(tid, nth, delay, &bar)
    bar.preempted = preempted       # what the OS would have counted, made deterministic
    return team[0], bool(fr_team_done(&bar))



# ---------------------------------------------------------------------------------------------
# Kernel tables (run-time dispatch)
# ---------------------------------------------------------------------------------------------

#: the kernel table in use; every entry point reads it once per call (a StepKernel keeps the
#: one it packed its weights for)
cdef const fr_kernels_t* g_kt = fr_best_table()


cdef const fr_kernels_t* _table(str name) except NULL:
    cdef const fr_kernels_t* const* t = fr_compiled_tables()
    cdef int i = 0
    while t[i] != NULL:
        if t[i].name.decode() == name:
            return t[i]
        i += 1
    raise ValueError(f"no kernels for {name!r} in this build (it has: {', '.join(compiled_isas())})")


def compiled_isas():
    """Names of the instruction sets compiled into this build, best first."""
    cdef const fr_kernels_t* const* t = fr_compiled_tables()
    cdef int i = 0
    names = []
    while t[i] != NULL:
        names.append(t[i].name.decode())
        i += 1
    return names


def supported_isas():
    """The compiled instruction sets that this CPU can run, best first."""
    return [n for n in compiled_isas() if fr_cpu_can_run(_table(n))]


def isa():
    """Name of the instruction set whose kernels are in use."""
    return g_kt.name.decode()


def set_isa(str name):
    """Use the kernels of instruction set ``name`` (one of ``supported_isas()``) from now on.

    Not to be called while another thread runs the engine: a call in flight keeps the kernels
    it started with, but weights packed for one table must not meet the other's kernels.
    """
    global g_kt
    cdef const fr_kernels_t* t = _table(name)
    if not fr_cpu_can_run(t):
        raise ValueError(f"this CPU cannot run the {name!r} kernels (it can run: "
                         f"{', '.join(supported_isas())})")
    g_kt = t


def isa_info(name=None):
    """Register tile and panel widths of the kernels of ``name`` (default: those in use)."""
    cdef const fr_kernels_t* t = g_kt if name is None else _table(name)
    return {"name": t.name.decode(), "vector_bytes": t.vector_bytes, "tile_rows": t.mr,
            "tile_vectors": t.nv, "panel_width_float32": t.nr_f,
            "panel_width_float64": t.nr_d}


# The table's kernels for the fused floating type (one wrapper each, no logic of their own)

cdef inline Py_ssize_t _panel_width(const fr_kernels_t* kt, Py_ssize_t elsize) noexcept nogil:
    """Columns of one panel of ``kt``'s packed matrices for elements of ``elsize`` bytes."""
    return kt.nr_d if elsize == 8 else kt.nr_f


cdef inline Py_ssize_t _packed_size(const fr_kernels_t* kt, Py_ssize_t K, Py_ssize_t N,
                                    Py_ssize_t elsize) noexcept nogil:
    """Elements of a (K, N) matrix panel-packed for ``kt``'s GEMM (N rounded up to panels)."""
    return fr_packed_size(K, N, _panel_width(kt, elsize))


cdef inline Py_ssize_t _block_offset(const fr_kernels_t* kt, Py_ssize_t K, Py_ssize_t G,
                                     Py_ssize_t u0, Py_ssize_t step,
                                     Py_ssize_t elsize) noexcept nogil:
    """Offset of unit block u0 (blocks of ``step`` units, each packed separately as G*step
    columns) in an array of packed blocks."""
    return (u0 // step) * _packed_size(kt, K, G * step, elsize) if u0 > 0 else 0


cdef inline void _gemm_acc(const fr_kernels_t* kt, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                           const floating* A, Py_ssize_t lda,   # IN (M, K) row-major
                           const floating* Wp,                  # IN (K, N) panel-packed
                           floating* C, Py_ssize_t ldc) noexcept nogil:  # INOUT (M, N)
    """C += A @ W (register-tiled kernel)."""
    if floating is float:
        kt.gemm_acc_f(M, N, K, A, lda, Wp, C, ldc)
    else:
        kt.gemm_acc_d(M, N, K, A, lda, Wp, C, ldc)


cdef inline void _gemm_range(const fr_kernels_t* kt, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t N, Py_ssize_t K,
                             const floating* A, Py_ssize_t lda, bint trans_a,  # IN op(A)
                             const floating* Bp,                 # IN packed, shared
                             floating* C, Py_ssize_t ldc,        # OUT rows r0 .. r1
                             bint accumulate) noexcept nogil:
    """Rows ``r0 .. r1`` of ``C (+)= op(A) @ B``."""
    if floating is float:
        kt.gemm_range_f(r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
    else:
        kt.gemm_range_d(r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)


cdef inline void _dot_gemm_acc(const fr_kernels_t* kt, Py_ssize_t M, Py_ssize_t N,
                               Py_ssize_t K,
                               const floating* A, Py_ssize_t lda,  # IN (M, K)
                               const floating* W, Py_ssize_t ldw,  # IN (N, K) PyTorch layout
                               floating* C, Py_ssize_t ldc) noexcept nogil:  # INOUT (M, N)
    """C += A @ W^T on un-packed weights (dot-product kernel)."""
    if floating is float:
        kt.dot_gemm_acc_f(M, N, K, A, lda, W, ldw, C, ldc)
    else:
        kt.dot_gemm_acc_d(M, N, K, A, lda, W, ldw, C, ldc)


cdef inline void _pack_panels(const fr_kernels_t* kt, const floating* W, Py_ssize_t K,
                              Py_ssize_t G, Py_ssize_t H, Py_ssize_t u0, Py_ssize_t nj,
                              floating* out,          # OUT (K * G*nj) panel-packed
                              Py_ssize_t pfirst=0, Py_ssize_t pstep=1) noexcept nogil:
    """Panel-pack W[rows]^T (K, G*nj): column g*nj + uu is row g*H + u0 + uu of W; only
    panels pfirst, pfirst + pstep, ... (to share the work between threads)."""
    if floating is float:
        kt.pack_panels_f(W, K, G, H, u0, nj, out, pfirst, pstep)
    else:
        kt.pack_panels_d(W, K, G, H, u0, nj, out, pfirst, pstep)


cdef inline void _pack_rows(const fr_kernels_t* kt, const floating* B, Py_ssize_t ldb,
                            Py_ssize_t K, Py_ssize_t N,
                            floating* out,            # OUT packed panels
                            Py_ssize_t pfirst, Py_ssize_t pstep) noexcept nogil:
    """Panel-pack B (K, N) itself (row copies); panels pfirst, pfirst + pstep, ..."""
    if floating is float:
        kt.pack_rows_f(B, ldb, K, N, out, pfirst, pstep)
    else:
        kt.pack_rows_d(B, ldb, K, N, out, pfirst, pstep)


cdef inline void _gates(const fr_kernels_t* kt, int cell, floating* rec, Py_ssize_t nj,
                        const floating* h_prev, floating* c, floating* h_out,
                        floating* hn_out) noexcept nogil:
    """Gate math of one row of a unit block (see fr_kernels.h)."""
    if floating is float:
        kt.gates_f(cell, rec, nj, h_prev, c, h_out, hn_out)
    else:
        kt.gates_d(cell, rec, nj, h_prev, c, h_out, hn_out)


# ---------------------------------------------------------------------------------------------
# Activations (exposed for the tests of their error bounds)
# ---------------------------------------------------------------------------------------------

TANH_F32_MAX_ABS_ERR = 5e-7
SIGMOID_F32_MAX_ABS_ERR = 4e-7


cdef _activation(bint sigmoid, str name, const floating[::1] x, floating[::1] out):
    """out = the engine's tanh or sigmoid of x (one element loop of the table)."""
    if x.shape[0] != out.shape[0]:
        raise ValueError(f"{name}: x and out differ in length")
    if x.shape[0] == 0:
        return
    if floating is float:
        (g_kt.sigmoid_f if sigmoid else g_kt.tanh_f)(&x[0], &out[0], x.shape[0])
    else:
        (g_kt.sigmoid_d if sigmoid else g_kt.tanh_d)(&x[0], &out[0], x.shape[0])


def tanh_approx(const floating[::1] x,  # IN
                floating[::1] out):     # OUT
    """Apply the engine's tanh to ``x`` (for testing the approximation bound)."""
    _activation(False, "tanh_approx", x, out)


def sigmoid_approx(const floating[::1] x,  # IN
                   floating[::1] out):     # OUT
    """Apply the engine's sigmoid to ``x`` (for testing the approximation bound)."""
    _activation(True, "sigmoid_approx", x, out)


# ---------------------------------------------------------------------------------------------
# GEMM on the engine's threads
# ---------------------------------------------------------------------------------------------

cdef void _gemm_rows(const fr_kernels_t* kt, int tid, int nth,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, bint trans_a,
                     const floating* Bp,                  # IN packed, shared by the threads
                     floating* C, Py_ssize_t ldc,
                     const floating* A2=NULL, Py_ssize_t lda2=0,   # IN second operand
                     Py_ssize_t M1=0, bint accumulate=False) noexcept nogil:
    """Thread ``tid`` of ``nth``: ``C = op(A) @ B`` for its share of the rows (multiples of the
    tile's rows).
    With ``A2`` (transposed, like A): rows ``M1 ..`` of C come from ``A2`` (``C = [A | A2]^T
    @ B``, one packing of B for both)."""
    cdef Py_ssize_t chunk, r0, r1
    chunk = (M + nth - 1) // nth
    chunk = ((chunk + kt.mr - 1) // kt.mr) * kt.mr
    r0 = min(tid * chunk, M)
    r1 = min(r0 + chunk, M)
    if A2 == NULL:
        _gemm_range(kt, r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
    else:
        _gemm_range(kt, r0, min(r1, M1), N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
        _gemm_range(kt, max(r0, M1) - M1, r1 - M1, N, K, A2, lda2, trans_a, Bp, C + M1 * ldc,
                    ldc, accumulate)


cdef void _gemm_part(const fr_kernels_t* kt, int tid, int nth,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, bint trans_a,
                     const floating* B, Py_ssize_t ldb,
                     floating* C, Py_ssize_t ldc, floating* bp,
                     const floating* A2, Py_ssize_t lda2, Py_ssize_t M1,
                     bint accumulate, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``nth`` of ``gemm``: its share of packing B, a barrier, its C rows,
    the join."""
    cdef fr_member_t me
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    _pack_rows(kt, B, ldb, K, N, bp, tid, nth)
    fr_barrier_wait(bar, nth, &me)
    _gemm_rows(kt, tid, nth, M, N, K, A, lda, trans_a, bp, C, ldc, A2, lda2, M1, accumulate)
    fr_team_leave(bar, nth, &me)
    fr_ftz_exit(csr)


def gemm(const floating[:, :] a,     # IN  (M, K), or (K, M) if trans_a; unit column stride
         const floating[:, :] b,     # IN  (K, N), unit column stride
         floating[:, ::1] c,         # OUT (M, N), or (M + M2, N) with a2
         bint trans_a, int nthreads,
         const floating[:, :] a2=None,   # IN  (K, M2), transposed like a (trans_a only)
         bint accumulate=False):
    """``c[:] = op(a) @ b`` with the engine's own kernel on ``nthreads`` threads (``op(a)`` is
    ``a.T`` if ``trans_a``): b panel-packed once (the threads share it), the rows of c split
    between the threads.  Rows of ``a`` and ``b`` may be strided (column slices of a matrix).
    With ``a2`` (``trans_a`` only): ``c = [a | a2].T @ b``, two products on one packing of b
    (BPTT's dW_ih and dW_hh).  ``accumulate``: ``c += ...`` instead."""
    cdef Py_ssize_t M1 = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t M = c.shape[0], N = c.shape[1]
    cdef Py_ssize_t K = b.shape[0], lda, ldb, lda2 = 0
    cdef const floating* a2p = NULL
    cdef int tid, nth
    if a2 is not None:
        if not trans_a or a2.shape[0] != K or M1 + a2.shape[1] != M:
            raise ValueError("gemm: shapes do not match")
        if a2.strides[1] != sizeof(floating):
            raise ValueError("gemm: a2 needs a unit column stride")
    elif M1 != M:
        raise ValueError("gemm: shapes do not match")
    if (a.shape[0] if trans_a else a.shape[1]) != K or b.shape[1] != N:
        raise ValueError("gemm: shapes do not match")
    if M == 0 or N == 0:
        return
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
    if nthreads > 1 and M < 8:
        nthreads = 1
    nthreads = _threads(nthreads)
    with nogil:
        if nthreads <= 1:
            _gemm_part(kt, 0, 1, M, N, K, ap, lda, trans_a, &b[0, 0], ldb, &c[0, 0], N,
                       &bp[0], a2p, lda2, M1, accumulate, &bar)
        else:
            with parallel(num_threads=nthreads):
                tid = openmp.omp_get_thread_num()
                nth = openmp.omp_get_num_threads()
                _gemm_part(kt, tid, nth, M, N, K, ap, lda, trans_a, &b[0, 0], ldb,
                           &c[0, 0], N, &bp[0], a2p, lda2, M1, accumulate, &bar)
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


def run_on_team(list calls):
    """Call ``calls[i]()`` on thread ``i`` of the engine's OpenMP team (``len(calls)`` threads),
    each holding the GIL only while it starts its call: meant for Numba ``nogil`` kernels, which
    release it at once.  Under contention (see ``contended``) the calls run on the caller.  The kernels then run on the threads that run every other part of the
    engine, instead of beside them (libgomp's idle workers spin for a while after each parallel
    region and would compete with a thread of another pool for the core).  Re-raises the first
    exception after every call returned.  Runs the calls one after the other if the team cannot
    have that many threads."""
    cdef int n = len(calls), tid, got
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    errors = [None] * n
    if n == 0:
        return
    if _threads(n) == 1:
        _team_call(calls, errors, 0, 1)
    else:
        with nogil, parallel(num_threads=n):
            tid = openmp.omp_get_thread_num()
            got = openmp.omp_get_num_threads()
            _team_part(calls, errors, tid, got, &bar)
        fr_team_done(&bar)
    for e in errors:
        if e is not None:
            raise e


cdef void _team_part(list calls, list errors, int tid, int got,
                     fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``run_on_team``: its calls (holding the GIL to start each), the join."""
    cdef fr_member_t me
    fr_member_init(&me)
    with gil:
        _team_call(calls, errors, tid, got)
    fr_team_leave(bar, got, &me)


cdef void _team_call(list calls, list errors, int tid, int got):
    """Thread ``tid`` of a team of ``got``: its share of ``calls`` (all of them if alone)."""
    cdef int i
    for i in range(tid, len(calls), got):
        try:
            calls[i]()
        except BaseException as e:
            errors[i] = e


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


# ---------------------------------------------------------------------------------------------
# Input projection: xp[:, off:off+N] = X @ W^T  (one GEMM over all B*T rows, split by rows)
# ---------------------------------------------------------------------------------------------

cdef void _proj_part(const fr_kernels_t* kt, int tid, int nth,
                     Py_ssize_t R, Py_ssize_t K, Py_ssize_t N,
                     const floating* X, const floating* W, floating* Y, Py_ssize_t ldy,
                     floating* wpk, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``nth``: its share of packing W^T, a barrier, its rows of Y, the
    join."""
    cdef fr_member_t me
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    _pack_panels(kt, W, K, 1, N, 0, N, wpk, tid, nth)
    fr_barrier_wait(bar, nth, &me)
    _gemm_rows(kt, tid, nth, R, N, K, X, K, False, wpk, Y, ldy)
    fr_team_leave(bar, nth, &me)
    fr_ftz_exit(csr)


cdef void _projection(const fr_kernels_t* kt, Py_ssize_t R, Py_ssize_t K, Py_ssize_t N,
                      const floating* X,            # IN  (R, K) layer input, rows b*T + t
                      const floating* W,            # IN  (N, K) weight_ih (PyTorch layout)
                      floating* Y, Py_ssize_t ldy,  # OUT (R, ldy): columns 0 .. N written
                      int nthreads,
                      floating* wpk) noexcept nogil:  # scratch (_packed_size(K, N))
    """``Y[:, :N] = X @ W.T`` as one GEMM with the engine's own kernel: W^T panel-packed once
    (the threads share the packing), then the rows split over ``nthreads`` threads in blocks
    of 128."""
    cdef int tid, nth
    cdef Py_ssize_t r0
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    if R == 0 or N == 0:
        return
    if K == 0:
        for r0 in range(R):
            memset(Y + r0 * ldy, 0, N * sizeof(floating))
        return
    if _threads(nthreads) <= 1 or R < 2 * 16:
        _proj_part(kt, 0, 1, R, K, N, X, W, Y, ldy, wpk, &bar)
        return
    with parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        _proj_part(kt, tid, nth, R, K, N, X, W, Y, ldy, wpk, &bar)
    fr_team_done(&bar)


# ---------------------------------------------------------------------------------------------
# One timestep of one work item (batch block x unit block): prefill, recurrent GEMM, gate math
# ---------------------------------------------------------------------------------------------

cdef void _step_item(
        const fr_kernels_t* kt,                  # IN  the kernels
        int cell, bint reverse, Py_ssize_t s, Py_ssize_t T, Py_ssize_t H, Py_ssize_t G,
        Py_ssize_t p0, Py_ssize_t na,            # first sorted position of the block, active rows
        Py_ssize_t u0, Py_ssize_t nj,            # unit block
        const floating* xp, Py_ssize_t LX,       # IN  input projection (caller rows), dir offset applied
        const floating* bx,                      # IN  (G*H) bias added to xp (GRU n: b_in)
        const floating* bhn,                     # IN  (H)  GRU b_hn
        const floating* whh,                     # IN  recurrent weights: mode 0: W_hh^T block
                                                 #     (H, G*nj) of this unit block, panel-packed;
                                                 #     mode 1: weight_hh (G*H, H) as given
        int mode,                                #     GEMM: 0 panel kernel, 1 dot kernel
        const int64_t* order, const int64_t* lengths,  # IN
        const floating* cur,                     # IN  (na, H) previous h, rows of the block
        floating* nxt,                           # OUT (na, H) new h (only units u0..u0+nj)
        floating* cst,                           # INOUT (na, H) LSTM cell state (units of block)
        floating* y, Py_ssize_t LY,              # OUT y rows (caller rows), dir offset applied
        floating* hN, floating* cN,              # OUT (B, H) final states, caller rows
        floating* rec,                           # scratch (na, ldr)
        Py_ssize_t ldr,
        bint store, floating* wg, floating* wc, floating* whn,  # OUT workspace (caller rows)
        const floating* xin=NULL, Py_ssize_t Kx=0,   # IN  streaming: raw input rows (na, Kx)
        const floating* wx1=NULL,                    # IN  its packed W_ih^T block (gates of the
        const floating* wx2=NULL,                    #     block; GRU: r,z in wx1, n in wx2)
        const int64_t* xrow=NULL                     # IN  row of (b, t=0) in xp (compacted
        ) noexcept nogil:                            #     variable-length input), else b*T
    """One timestep of one work item: prefill, recurrent GEMM, gate math, outputs.

    Forward mode: ``xp`` holds the precomputed input projection.  Streaming mode (``xp`` NULL):
    the prefill is the bias only and ``rec += xin @ W_ih^T[block]`` is done here with the panel
    kernel, before the recurrent GEMM.
    """
    cdef Py_ssize_t r, k, j, b, t, L, row, GH = G * H, N = G * nj
    cdef floating* rr
    cdef const floating* xr
    cdef const floating* hp
    cdef floating* hq
    cdef floating* cr
    # 1. prefill: rec[r] = xp[row] + bias (GRU: n slot <- b_hn, 4th slot <- x_n + b_in)
    if xp == NULL:
        for r in range(na):
            rr = rec + r * ldr
            for k in range(G):
                for j in range(nj):
                    rr[k * nj + j] = bx[k * H + u0 + j]
            if cell == 3:
                for j in range(nj):
                    rr[2 * nj + j] = bhn[u0 + j]
                for j in range(nj):
                    rr[3 * nj + j] = bx[2 * H + u0 + j]
        if cell == 3:
            _gemm_acc(kt, na, 2 * nj, Kx, xin, Kx, wx1, rec, ldr)
            _gemm_acc(kt, na, nj, Kx, xin, Kx, wx2, rec + 3 * nj, ldr)
        else:
            _gemm_acc(kt, na, N, Kx, xin, Kx, wx1, rec, ldr)
    for r in range(na if xp != NULL else 0):
        b = order[p0 + r]
        L = lengths[b]
        t = (L - 1 - s) if reverse else s
        xr = xp + ((xrow[b] if xrow != NULL else b * T) + t) * LX
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
    if mode == 0:
        _gemm_acc(kt, na, N, H, cur, H, whh, rec, ldr)
    else:
        # per gate k: rows k*H + u0 .. k*H + u0 + nj of W_hh feed rec columns k*nj ..
        for k in range(G):
            _dot_gemm_acc(kt, na, nj, H, cur, H, whh + (k * H + u0) * H, H, rec + k * nj, ldr)
    # 3. gate math, state update, outputs
    for r in range(na):
        b = order[p0 + r]
        L = lengths[b]
        t = (L - 1 - s) if reverse else s
        row = b * T + t
        rr = rec + r * ldr
        hp = cur + r * H + u0
        hq = nxt + r * H + u0
        cr = cst + r * H + u0
        _gates(kt, cell, rr, nj, hp, cr, hq,
               whn + row * H + u0 if store and cell == 3 else NULL)
        if store and cell == 2:
            memcpy(wc + row * H + u0, cr, nj * sizeof(floating))
        if store and cell >= 2:
            if nj == H:     # all units: the gates are one contiguous row
                memcpy(wg + row * GH, rr, GH * sizeof(floating))
            else:
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


cdef void _worker(const fr_kernels_t* kt, int tid, int nth, int cell, bint reverse, Py_ssize_t T, Py_ssize_t tmax,
                  Py_ssize_t B, Py_ssize_t H, Py_ssize_t G,
                  const floating* xp, Py_ssize_t LX, const floating* bx, const floating* bhn,
                  const floating* whh, int mode,
                  const int64_t* ublk, Py_ssize_t nu, const int64_t* bblk, Py_ssize_t nb,
                  const int64_t* order, const int64_t* lengths,
                  floating* hbuf, floating* cbuf, floating* y, Py_ssize_t LY,
                  floating* hN, floating* cN, floating* scratch, Py_ssize_t scr_stride,
                  Py_ssize_t ldr, bint store, floating* wg, floating* wc, floating* whn,
                  fr_barrier_t* bar, const floating* w_src,
                  const int64_t* xrow) noexcept nogil:
    """Thread ``tid`` of ``nth``: (mode 0, ``w_src`` given) first pack W_hh into ``whh``
    (each thread its own unit blocks, or a share of the panels of the single block), then run
    its work items over time."""
    cdef Py_ssize_t w, s, bi, uj, p0, na, u0, nj, nitems = nb * nu
    cdef fr_member_t me
    cdef Py_ssize_t BH = B * H
    cdef const floating* wblk
    cdef floating* cur
    cdef floating* nxt
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    cdef Py_ssize_t na_local[64]          # per-item active counts (nitems <= 64 enforced by caller)
    for w in range(nitems):
        na_local[w] = bblk[w // nu + 1] - bblk[w // nu]
    if mode == 0 and w_src != NULL:
        if nu > 1:
            w = tid
            while w < nu:
                _pack_panels(kt, w_src, H, G, H, ublk[w], ublk[w + 1] - ublk[w],
                             <floating*>whh + _block_offset(kt, H, G, ublk[w], ublk[1],
                                                            sizeof(floating)))
                w += nth
        else:
            _pack_panels(kt, w_src, H, G, H, 0, H, <floating*>whh, tid, nth)
        fr_barrier_wait(bar, nth, &me)
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
                _step_item(kt, cell, reverse, s, T, H, G, p0, na, 0, H, xp, LX, bx, bhn, whh,
                           mode, order, lengths, cur, nxt, cbuf + p0 * H, y, LY, hN, cN,
                           scratch + w * scr_stride, ldr, store, wg, wc, whn,
                           NULL, 0, NULL, NULL, xrow)
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
                    wblk = (whh + _block_offset(kt, H, G, u0, ublk[1], sizeof(floating))
                            if mode == 0 else whh)
                    _step_item(kt, cell, reverse, s, T, H, G, p0, na, u0, nj, xp, LX, bx, bhn,
                               wblk, mode, order, lengths, cur, nxt, cbuf + p0 * H, y, LY,
                               hN, cN, scratch + w * scr_stride, ldr, store, wg, wc, whn,
                               NULL, 0, NULL, NULL, xrow)
                w += nth
            fr_barrier_wait(bar, nth, &me)
    fr_team_leave(bar, nth, &me)        # the join (see _threads)
    fr_ftz_exit(csr)


cdef void _recurrence(const fr_kernels_t* kt, int cell, bint reverse, Py_ssize_t B, Py_ssize_t T, Py_ssize_t H,
                      Py_ssize_t G, Py_ssize_t tmax,
                      const floating* xp, Py_ssize_t LX,      # IN  input projection, dir offset applied
                      const floating* bx, const floating* bhn,  # IN biases (see _step_item)
                      const floating* whh, int mode,          # IN  recurrent weights (see _step_item)
                      const int64_t* ublk, Py_ssize_t nu,     # IN  unit blocks
                      const int64_t* bblk, Py_ssize_t nb,     # IN  batch blocks (sorted positions)
                      const int64_t* order, const int64_t* lengths,  # IN
                      floating* hbuf,                         # INOUT (2, B, H), hbuf[0] = h0 sorted
                      floating* cbuf,                         # INOUT (B, H) LSTM c0 sorted
                      floating* y, Py_ssize_t LY,             # OUT outputs, dir offset applied
                      floating* hN, floating* cN,             # OUT (B, H) final states
                      floating* scratch, Py_ssize_t scr_stride, Py_ssize_t ldr,
                      bint store, floating* wg, floating* wc, floating* whn,  # OUT workspace
                      int nthreads,
                      const floating* w_src=NULL,   # IN mode 0: W_hh to pack into whh first
                      const int64_t* xrow=NULL) noexcept nogil:   # IN xp row of (b, 0)
    """Run one layer-direction over time, on min(nthreads, nb*nu) threads."""
    cdef int tid, nth
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    if B == 0 or tmax == 0:
        return
    if nthreads > nb * nu:
        nthreads = <int>(nb * nu)
    nthreads = _threads(nthreads)
    if nthreads <= 1:
        _worker(kt, 0, 1, cell, reverse, T, tmax, B, H, G, xp, LX, bx, bhn, whh, mode, ublk, nu,
                bblk, nb, order, lengths, hbuf, cbuf, y, LY, hN, cN, scratch, scr_stride, ldr,
                store, wg, wc, whn, &bar, w_src, xrow)
        return
    with parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        _worker(kt, tid, nth, cell, reverse, T, tmax, B, H, G, xp, LX, bx, bhn, whh, mode, ublk,
                nu, bblk, nb, order, lengths, hbuf, cbuf, y, LY, hN, cN, scratch, scr_stride,
                ldr, store, wg, wc, whn, &bar, w_src, xrow)
    fr_team_done(&bar)


# ---------------------------------------------------------------------------------------------
# The whole stacked (bi)directional forward in one call
# ---------------------------------------------------------------------------------------------

cdef int _check_arr(cnp.ndarray a, str name, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                    Py_ssize_t d2, bint is_double) except -1:
    """Cheap guard against memory errors (the layers validate properly beforehand)."""
    cdef int want = cnp.NPY_FLOAT64 if is_double else cnp.NPY_FLOAT32
    if (cnp.PyArray_NDIM(a) != ndim or cnp.PyArray_TYPE(a) != want
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_DIM(a, 0) != d0
            or (ndim >= 2 and cnp.PyArray_DIM(a, 1) != d1)
            or (ndim == 3 and cnp.PyArray_DIM(a, 2) != d2)):
        raise ValueError(f"{name} must be a C-contiguous "
                         f"{'float64' if is_double else 'float32'} array of shape "
                         f"{(d0, d1, d2)[:ndim]}, got {(<object>a).dtype} {(<object>a).shape}")
    return 0


cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef object _new(int nd, Py_ssize_t d0, Py_ssize_t d1, Py_ssize_t d2, Py_ssize_t d3,
                 int typenum, bint zero):
    cdef cnp.npy_intp dims[4]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    dims[3] = d3
    if zero:
        return cnp.PyArray_ZEROS(nd, dims, typenum, 0)
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef object _forward_impl(floating tag, int cell, cnp.ndarray x, list w_ih, list w_hh,
                          list b_ih, list b_hh, object h0, object c0, object lengths,
                          Py_ssize_t L, Py_ssize_t D, bint training, int nthreads,
                          Py_ssize_t nb, Py_ssize_t nu, int mode, int proj_threads):
    cdef int typenum = cnp.NPY_FLOAT64 if floating is double else cnp.NPY_FLOAT32
    cdef Py_ssize_t B = cnp.PyArray_DIM(x, 0), T = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t I = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t H = cnp.PyArray_DIM(<cnp.ndarray>w_hh[0], 1)
    cdef Py_ssize_t G = 4 if cell == 2 else (3 if cell == 3 else 1)
    cdef Py_ssize_t GH = G * H, BH = B * H, BT = B * T
    cdef Py_ssize_t layer, d, idx, i, j, p, b, tmax, rows, max_nj, ldr, step, align, I_l
    cdef Py_ssize_t nitems, LX, GHp
    cdef bint partial = False, store
    cdef int64_t* lens
    cdef int64_t* order
    cdef int64_t* bblk_p
    cdef int64_t* ublk_p
    cdef const int64_t* srt
    cdef const floating* src
    cdef const floating* bi_p
    cdef const floating* bh_p
    cdef floating* bx_p
    cdef floating* bhn_p
    cdef floating* hb
    cdef floating* cb
    cdef floating* wpk_p
    cdef floating* wpi_p
    cdef const floating* whh_p
    cdef floating* xp_p
    cdef floating* y_p
    cdef floating* inp_p
    cdef floating* wg_p
    cdef floating* wc_p
    cdef floating* whn_p
    cdef floating* cN_p
    cdef floating* hN_p
    cdef floating* scr_p
    cdef const floating* wih_p
    cdef const floating* wsrc_p
    cdef floating* xc_p = NULL
    cdef int64_t* xrow
    cdef Py_ssize_t R
    cdef const fr_kernels_t* kt = g_kt

    # cheap guards against memory errors (the layers validate properly beforehand)
    for layer in range(L):
        for d in range(D):
            idx = layer * D + d
            _check_arr(w_ih[idx], f"w_ih[{idx}]", 2, GH, I if layer == 0 else D * H, 0,
                       floating is double)
            _check_arr(w_hh[idx], f"w_hh[{idx}]", 2, GH, H, 0, floating is double)
            for bias in (b_ih[idx], b_hh[idx]):
                if bias is not None:
                    _check_arr(bias, "bias", 1, GH, 0, 0, floating is double)
    if h0 is not None:
        _check_arr(h0, "h0", 3, L * D, B, H, floating is double)
    if c0 is not None and cell == 2:
        _check_arr(c0, "c0", 3, L * D, B, H, floating is double)
    if lengths is not None:
        if (cnp.PyArray_TYPE(<cnp.ndarray>lengths) != cnp.NPY_INT64
                or cnp.PyArray_NDIM(<cnp.ndarray>lengths) != 1
                or cnp.PyArray_DIM(<cnp.ndarray>lengths, 0) != B
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>lengths)):
            raise ValueError(f"lengths must be a contiguous int64 array of shape ({B},)")
        lens = <int64_t*>_ptr(lengths)
        for b in range(B):
            if not 1 <= lens[b] <= T:
                raise ValueError(f"lengths must be in 1..{T}, got {lens[b]} at index {b}")

    # lengths, order (sorted by length, descending, stable; interleaved into nb blocks)
    lens_arr = _new(1, B, 0, 0, 0, cnp.NPY_INT64, False)
    lens = <int64_t*>_ptr(lens_arr)
    if lengths is None:
        for b in range(B):
            lens[b] = T
    else:
        memcpy(lens, _ptr(lengths), B * sizeof(int64_t))
        for b in range(B):
            if lens[b] != T:
                partial = True
    tmax = 0
    for b in range(B):
        tmax = max(tmax, lens[b])
    nb = max(1, min(nb, B, 64))           # at most 64 work items (see _worker)
    nu = max(1, min(nu, H, 64 // nb))
    order_arr = _new(1, B, 0, 0, 0, cnp.NPY_INT64, False)
    order = <int64_t*>_ptr(order_arr)
    if partial:
        srt_arr = np.argsort(-np.asarray(lens_arr), kind="stable").astype(np.int64, copy=False)
        srt = <const int64_t*>_ptr(srt_arr)
    else:
        srt_arr = None
        srt = NULL
    bblk_arr = _new(1, nb + 1, 0, 0, 0, cnp.NPY_INT64, False)
    bblk_p = <int64_t*>_ptr(bblk_arr)
    p = 0
    for i in range(nb):
        bblk_p[i] = p
        j = i
        while j < B:
            order[p] = srt[j] if srt != NULL else j
            p += 1
            j += nb
    bblk_p[nb] = B
    rows = (B + nb - 1) // nb
    # unit blocks: nu chunks, sizes multiples of 16 units when H allows
    align = 16 if H >= 32 else 1
    if nu <= 1 or H < 2 * align:
        nu = 1
        step = H
    else:
        step = (H + nu - 1) // nu
        step = ((step + align - 1) // align) * align
        nu = (H + step - 1) // step
    ublk_arr = _new(1, nu + 1, 0, 0, 0, cnp.NPY_INT64, False)
    ublk_p = <int64_t*>_ptr(ublk_arr)
    for i in range(nu):
        ublk_p[i] = i * step
    ublk_p[nu] = H
    max_nj = step
    ldr = (G + (1 if cell == 3 else 0)) * max_nj
    ldr = ((ldr + 15) // 16) * 16         # scratch rows start on 64-byte lines
    nitems = nb * nu

    h_n = _new(3, L * D, B, H, 0, typenum, False)
    c_n = _new(3, L * D, B, H, 0, typenum, False) if cell == 2 else None
    cN_dummy = _new(1, BH if BH > 0 else 1, 0, 0, 0, typenum, False)
    hbuf = _new(1, 2 * BH, 0, 0, 0, typenum, False)
    cbuf = _new(1, BH if BH > 0 else 1, 0, 0, 0, typenum, False)
    scratch = _new(1, nitems * rows * ldr, 0, 0, 0, typenum, False)
    bx = _new(1, GH, 0, 0, 0, typenum, False)
    bhn = _new(1, H, 0, 0, 0, typenum, False)
    wpk = (_new(1, nu * _packed_size(kt, H, G * step, sizeof(floating)), 0, 0, 0, typenum,
                False) if mode == 0 else None)
    wpi = _new(1, _packed_size(kt, max(I, D * H), GH, sizeof(floating)), 0, 0, 0, typenum,
               False)
    # variable lengths: the input projection only covers valid steps; sequence b's rows are
    # compacted to xc[xrow[b] : xrow[b] + lens[b]] (one copy of the layer input, then one GEMM)
    R = BT
    xrow_arr = None
    xrow = NULL
    if partial:
        xrow_arr = _new(1, B, 0, 0, 0, cnp.NPY_INT64, False)
        xrow = <int64_t*>_ptr(xrow_arr)
        R = 0
        for b in range(B):
            xrow[b] = R
            R += lens[b]
        xc = _new(1, R * max(I, D * H), 0, 0, 0, typenum, False)
        xc_p = <floating*>_ptr(xc)
    # rows of the projection (and each direction's block) start on 64-byte lines: the GEMM's
    # vector stores then never straddle two lines
    GHp = ((GH + 15) // 16) * 16
    xp = _new(2, R, D * GHp, 0, 0, typenum, False)
    hb = <floating*>_ptr(hbuf)
    cb = <floating*>_ptr(cbuf)
    bx_p = <floating*>_ptr(bx)
    bhn_p = <floating*>_ptr(bhn)
    xp_p = <floating*>_ptr(xp)
    LX = D * GHp
    ws = None
    if training:
        ws = {"outputs": [], "gates": [] if cell >= 2 else None,
              "c": [] if cell == 2 else None, "hn": [] if cell == 3 else None,
              "lengths": lens_arr}
    inp = x
    for layer in range(L):
        I_l = I if layer == 0 else D * H
        inp_p = <floating*>_ptr(inp)
        if partial:
            for b in range(B):
                memcpy(xc_p + xrow[b] * I_l, inp_p + b * T * I_l, lens[b] * I_l * sizeof(floating))
            inp_p = xc_p
        y = _new(3, B, T, D * H, 0, typenum, partial)
        y_p = <floating*>_ptr(y)
        wg_p = wc_p = whn_p = NULL
        if training:
            ws["outputs"].append(y)
            if cell >= 2:
                a = _new(4, D, B, T, GH, typenum, partial)
                ws["gates"].append(a)
                wg_p = <floating*>_ptr(a)
            if cell == 2:
                a = _new(4, D, B, T, H, typenum, partial)
                ws["c"].append(a)
                wc_p = <floating*>_ptr(a)
            if cell == 3:
                a = _new(4, D, B, T, H, typenum, partial)
                ws["hn"].append(a)
                whn_p = <floating*>_ptr(a)
        for d in range(D):
            wih_p = <const floating*>_ptr(w_ih[layer * D + d])
            wpi_p = <floating*>_ptr(wpi)
            with nogil:
                _projection(kt, R, I_l, GH, inp_p, wih_p, xp_p + d * GHp, LX, proj_threads,
                            wpi_p)
        for d in range(D):
            idx = layer * D + d
            # biases: bx = b_ih + b_hh (GRU: b_hh only for r, z), bhn = GRU b_hn
            bi_p = <const floating*>_ptr(b_ih[idx]) if b_ih[idx] is not None else NULL
            bh_p = <const floating*>_ptr(b_hh[idx]) if b_hh[idx] is not None else NULL
            for j in range(GH):
                bx_p[j] = (bi_p[j] if bi_p != NULL else 0) + (
                    bh_p[j] if bh_p != NULL and (cell != 3 or j < 2 * H) else 0)
            for j in range(H):
                bhn_p[j] = bh_p[2 * H + j] if bh_p != NULL and cell == 3 else 0
            # initial state, gathered into sorted order
            if h0 is None:
                memset(hb, 0, BH * sizeof(floating))
            else:
                src = <const floating*>_ptr(h0) + idx * BH
                for p in range(B):
                    memcpy(hb + p * H, src + order[p] * H, H * sizeof(floating))
            if cell == 2:
                if c0 is None:
                    memset(cb, 0, BH * sizeof(floating))
                else:
                    src = <const floating*>_ptr(c0) + idx * BH
                    for p in range(B):
                        memcpy(cb + p * H, src + order[p] * H, H * sizeof(floating))
            whh_p = <const floating*>_ptr(w_hh[idx])
            wsrc_p = NULL
            if mode == 0:
                # packed inside the parallel region, each thread its own share
                wsrc_p = whh_p
                whh_p = <floating*>_ptr(wpk)
            store = training and cell >= 2
            cN_p = <floating*>_ptr(c_n) + idx * BH if cell == 2 else <floating*>_ptr(cN_dummy)
            hN_p = <floating*>_ptr(h_n) + idx * BH
            scr_p = <floating*>_ptr(scratch)
            with nogil:
                _recurrence(kt, cell, d == 1, B, T, H, G, tmax, xp_p + d * GHp, LX, bx_p, bhn_p,
                            whh_p, mode, ublk_p, nu, bblk_p, nb, order, lens, hb, cb,
                            y_p + d * H, D * H, hN_p, cN_p, scr_p, rows * ldr, ldr, store,
                            wg_p + d * BT * GH if wg_p != NULL else NULL,
                            wc_p + d * BT * H if wc_p != NULL else NULL,
                            whn_p + d * BT * H if whn_p != NULL else NULL, nthreads, wsrc_p,
                            xrow)
        inp = y
    return inp, h_n, c_n, ws


def forward_stack(int cell, cnp.ndarray x not None, list w_ih, list w_hh, list b_ih, list b_hh,
                  object h0, object c0, object lengths, Py_ssize_t num_layers,
                  Py_ssize_t num_directions, bint training, int nthreads, Py_ssize_t nb,
                  Py_ssize_t nu, int mode, int proj_threads):
    """Stacked (bi)directional forward in one call (see ``fastrnn._engine.forward``).

    Arrays must be validated C-contiguous arrays of x's dtype (lengths int64 or None); the
    parameter lists are indexed by ``layer * num_directions + direction`` (bias entries None
    when absent).  ``nb`` / ``nu``: batch / unit blocks; ``mode``: recurrent GEMM 0 panel
    kernel (weights packed once per call), 1 dot kernel (un-packed).
    Returns (y, h_n, c_n, workspace-or-None).
    """
    if mode not in (0, 1):
        raise ValueError(f"mode must be 0 (panel kernel) or 1 (dot kernel), got {mode}")
    if (cnp.PyArray_NDIM(x) != 3 or not cnp.PyArray_IS_C_CONTIGUOUS(x)
            or cnp.PyArray_TYPE(x) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        raise ValueError("x must be a C-contiguous float32 or float64 array of shape (B, T, I)")
    if len(w_ih) != num_layers * num_directions or len(w_hh) != len(w_ih) \
            or len(b_ih) != len(w_ih) or len(b_hh) != len(w_ih):
        raise ValueError("one weight per layer and direction expected")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        return _forward_impl(<double>0, cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths,
                             num_layers, num_directions, training, nthreads, nb, nu, mode,
                             proj_threads)
    return _forward_impl(<float>0, cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths,
                         num_layers, num_directions, training, nthreads, nb, nu, mode,
                         proj_threads)


def max_threads():
    """Number of threads OpenMP would use by default."""
    return openmp.omp_get_max_threads()


# ---------------------------------------------------------------------------------------------
# Streaming: one timestep of a stacked unidirectional network, weights prepared once
# ---------------------------------------------------------------------------------------------

cdef int g_num_threads = 1      # the engine's thread count (fastrnn._engine.set_num_threads)


def set_threads(int n):
    """Set the engine's thread count as seen by the streaming kernels."""
    global g_num_threads
    g_num_threads = max(1, n)


cdef void _stack_step_worker(const fr_kernels_t* kt, int tid, int nth, int cell, Py_ssize_t L, Py_ssize_t B,
                             Py_ssize_t I, Py_ssize_t H, Py_ssize_t G,
                             const floating* x,        # IN  (B, I)
                             void** wih1, void** wih2, # IN  per layer packed W_ih^T blocks
                             void** whh,               # IN  per layer packed W_hh^T blocks
                             void** bx, void** bhn,    # IN  per layer biases
                             const int64_t* ublk, Py_ssize_t nu,
                             const int64_t* order, const int64_t* ones,  # IN identity, all 1
                             const floating* h,        # IN  (L, B, H)
                             floating* h_out,          # OUT (L, B, H)
                             floating* c_out,          # INOUT (L, B, H): c on entry, c' on exit
                             floating* hs, floating* cs,            # scratch (B, H) each
                             floating* rec, Py_ssize_t rec_stride, Py_ssize_t ldr,
                             fr_barrier_t* bar) noexcept nogil:
    """One timestep of a stacked unidirectional network; thread ``tid`` of ``nth`` handles unit
    blocks tid, tid+nth, ... of every layer, with a barrier between layers."""
    cdef Py_ssize_t l, w, u0, nj, I_l, n1
    cdef fr_member_t me
    cdef const floating* inp = x
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    n1 = 2 if cell == 3 else G
    for l in range(L):
        I_l = I if l == 0 else H
        w = tid
        while w < nu:
            u0 = ublk[w]
            nj = ublk[w + 1] - u0
            _step_item(kt, cell, False, 0, 1, H, G, 0, B, u0, nj, NULL, 0,
                       <const floating*>bx[l], <const floating*>bhn[l],
                       <const floating*>whh[l] + _block_offset(kt, H, G, u0, ublk[1],
                                                               sizeof(floating)), 0, order, ones,
                       h + l * B * H, hs, c_out + l * B * H, h_out + l * B * H, H,
                       h_out + l * B * H, cs, rec + w * rec_stride, ldr, False, NULL, NULL, NULL,
                       inp, I_l,
                       <const floating*>wih1[l] + _block_offset(kt, I_l, n1, u0, ublk[1],
                                                                sizeof(floating)),
                       <const floating*>wih2[l] + _block_offset(kt, I_l, 1, u0, ublk[1],
                                                                sizeof(floating))
                       if cell == 3 else NULL)
            w += nth
        if l == L - 1:
            fr_team_leave(bar, nth, &me)    # the join (see _threads)
        else:
            fr_barrier_wait(bar, nth, &me)
        inp = h_out + l * B * H
    fr_ftz_exit(csr)


cdef class StepKernel:
    """Prepared weights of a stacked unidirectional cell, advanced one timestep per call.

    Built by ``fastrnn._engine.make_stepper``; the weights are *copied* (packed) at
    construction, so later changes to the caller's arrays are not seen (rebuild instead).
    The packing is that of the kernels in use at construction (``isa``), which every step uses.
    Hidden units are split into ``unit_blocks`` blocks (2 for large layers); a call runs on
    min(engine threads, unit_blocks) threads when the step is big enough to pay for it.
    """
    cdef readonly int cell
    cdef readonly Py_ssize_t num_layers, input_size, hidden_size, gates, unit_blocks
    cdef readonly object dtype
    cdef readonly str isa
    cdef const fr_kernels_t* _kt
    cdef bint is_double
    cdef Py_ssize_t par_work
    cdef list _keep
    cdef void* _wih1[64]
    cdef void* _wih2[64]
    cdef void* _whh[64]
    cdef void* _bx[64]
    cdef void* _bhn[64]
    cdef Py_ssize_t _bcap, _ldr
    cdef object _ublk, _order, _ones, _hs, _cs, _rec, _hzero

    def __init__(self, int cell, list w_ih, list w_hh, list bx, list bhn,
                 Py_ssize_t unit_blocks, Py_ssize_t parallel_min_work):
        """w_ih / w_hh: per layer weights in PyTorch layout; bx, bhn: per layer biases as in
        ``fastrnn._engine._biases``; unit_blocks: number of hidden-unit blocks."""
        cdef Py_ssize_t l, j, u0, nj, H, G, I_l, step, n1, nb, o
        self._kt = g_kt           # the weights are packed for these kernels
        self.isa = isa()
        self.cell = cell
        G = self.gates = 4 if cell == 2 else (3 if cell == 3 else 1)
        self.num_layers = len(w_ih)
        if not 1 <= self.num_layers <= 64:
            raise ValueError("num_layers must be in 1..64")
        H = self.hidden_size = w_hh[0].shape[1]
        self.input_size = w_ih[0].shape[1]
        self.dtype = np.dtype(w_hh[0].dtype)
        self.is_double = self.dtype == np.float64
        self.par_work = parallel_min_work
        # unit blocks, multiples of 16 units
        nu = max(1, unit_blocks)
        if nu > 1 and H >= 32:
            step = (H + nu - 1) // nu             # (C division semantics here: no -(-a // b))
            step = ((step + 15) // 16) * 16
            bounds = list(range(0, H, step)) + [H]
        else:
            bounds = [0, H]
        self._ublk = np.array(bounds, dtype=np.int64)
        self.unit_blocks = len(bounds) - 1
        self._ldr = (G + (1 if cell == 3 else 0)) * (bounds[1] - bounds[0])
        self._keep = []
        for l in range(self.num_layers):
            wi = np.ascontiguousarray(w_ih[l], dtype=self.dtype)
            wh = np.ascontiguousarray(w_hh[l], dtype=self.dtype)
            I_l = wi.shape[1]
            n1 = 2 if cell == 3 else G
            step = bounds[1]
            nb = self.unit_blocks
            p_ih1 = np.zeros(nb * packed_size(I_l, n1 * step, self.dtype), dtype=self.dtype)
            p_ih2 = np.zeros(nb * packed_size(I_l, step, self.dtype) if cell == 3 else 1,
                             dtype=self.dtype)
            p_hh = np.zeros(nb * packed_size(H, G * step, self.dtype), dtype=self.dtype)
            for j in range(nb):
                u0 = bounds[j]
                nj = bounds[j + 1] - u0
                o = j * packed_size(H, G * step, self.dtype)
                pack_panels(wh, G, u0, nj, p_hh[o:o + packed_size(H, G * nj, self.dtype)])
                o = j * packed_size(I_l, n1 * step, self.dtype)
                pack_panels(wi[:n1 * H], n1, u0, nj,
                            p_ih1[o:o + packed_size(I_l, n1 * nj, self.dtype)])
                if cell == 3:
                    o = j * packed_size(I_l, step, self.dtype)
                    pack_panels(wi[2 * H:], 1, u0, nj,
                                p_ih2[o:o + packed_size(I_l, nj, self.dtype)])
            b1 = np.ascontiguousarray(bx[l], dtype=self.dtype)
            b2 = np.ascontiguousarray(bhn[l], dtype=self.dtype)
            self._keep.extend([p_ih1, p_ih2, p_hh, b1, b2])
            self._wih1[l] = cnp.PyArray_DATA(<cnp.ndarray>p_ih1)
            self._wih2[l] = cnp.PyArray_DATA(<cnp.ndarray>p_ih2)
            self._whh[l] = cnp.PyArray_DATA(<cnp.ndarray>p_hh)
            self._bx[l] = cnp.PyArray_DATA(<cnp.ndarray>b1)
            self._bhn[l] = cnp.PyArray_DATA(<cnp.ndarray>b2)
        self._bcap = 0

    cdef _reserve(self, Py_ssize_t B):
        cdef Py_ssize_t H = self.hidden_size
        if B <= self._bcap:
            return
        self._order = np.arange(B, dtype=np.int64)
        self._ones = np.ones(B, dtype=np.int64)
        self._hs = np.empty(B * H, dtype=self.dtype)
        self._cs = np.empty(B * H, dtype=self.dtype)
        self._rec = np.empty(self.unit_blocks * B * self._ldr, dtype=self.dtype)
        self._hzero = np.zeros((self.num_layers, B, H), dtype=self.dtype)
        self._bcap = B

    def step(self, cnp.ndarray x_t, cnp.ndarray h=None, cnp.ndarray c=None):
        """Advance one timestep: ``(y_t, h_new, c_new) = step(x_t, h=None, c=None)``.

        ``x_t`` (B, I), ``h`` / ``c`` (num_layers, B, H) C-contiguous of the stepper's dtype, or
        None for zeros.  Returns *new* arrays ``h_new`` / ``c_new`` (c_new None unless LSTM);
        ``y_t`` is the view ``h_new[-1]``.  Inputs are not modified.
        """
        cdef Py_ssize_t B = cnp.PyArray_DIM(x_t, 0), H = self.hidden_size, G = self.gates
        cdef Py_ssize_t L = self.num_layers, nu = self.unit_blocks
        cdef cnp.ndarray h_out, c_out = None
        cdef cnp.npy_intp dims[3]
        cdef void* cptr = NULL
        cdef int typenum = cnp.NPY_FLOAT64 if self.is_double else cnp.NPY_FLOAT32
        cdef int nt = g_num_threads, tid, nth
        cdef void* xq
        cdef void* hq
        cdef void* ho
        cdef void* hsq
        cdef void* csq
        cdef void* recq
        cdef const int64_t* ordq
        cdef const int64_t* oneq
        cdef const int64_t* ubq
        cdef Py_ssize_t I = self.input_size, ldr = self._ldr
        cdef fr_barrier_t bar
        fr_barrier_init(&bar)
        _check_arr(x_t, "x_t", 2, B, self.input_size, 0, self.is_double)
        if h is not None:
            _check_arr(h, "h", 3, L, B, H, self.is_double)
        if c is not None and self.cell == 2:
            _check_arr(c, "c", 3, L, B, H, self.is_double)
        self._reserve(B)
        if h is None:
            h = <cnp.ndarray>self._hzero
        dims[0] = L
        dims[1] = B
        dims[2] = H
        h_out = cnp.PyArray_EMPTY(3, dims, typenum, 0)
        if self.cell == 2:
            if c is None:
                c_out = cnp.PyArray_ZEROS(3, dims, typenum, 0)
            else:
                c_out = cnp.PyArray_NewCopy(c, cnp.NPY_CORDER)
            cptr = cnp.PyArray_DATA(c_out)
        else:
            cptr = cnp.PyArray_DATA(<cnp.ndarray>self._cs)
        xq = cnp.PyArray_DATA(x_t)
        hq = cnp.PyArray_DATA(h)
        ho = cnp.PyArray_DATA(h_out)
        hsq = cnp.PyArray_DATA(<cnp.ndarray>self._hs)
        csq = cnp.PyArray_DATA(<cnp.ndarray>self._cs)
        recq = cnp.PyArray_DATA(<cnp.ndarray>self._rec)
        ordq = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._order)
        oneq = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._ones)
        ubq = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._ublk)
        if nt > nu:
            nt = <int>nu
        if B * G * H * (I + H) < self.par_work:
            nt = 1
        nt = _threads(nt)
        with nogil:
            if nt <= 1:
                if self.is_double:
                    _stack_step_worker(self._kt, 0, 1, self.cell, L, B, I, H, G, <const double*>xq,
                                       self._wih1, self._wih2, self._whh, self._bx, self._bhn,
                                       ubq, nu, ordq, oneq, <const double*>hq, <double*>ho,
                                       <double*>cptr, <double*>hsq, <double*>csq,
                                       <double*>recq, B * ldr, ldr, &bar)
                else:
                    _stack_step_worker(self._kt, 0, 1, self.cell, L, B, I, H, G, <const float*>xq,
                                       self._wih1, self._wih2, self._whh, self._bx, self._bhn,
                                       ubq, nu, ordq, oneq, <const float*>hq, <float*>ho,
                                       <float*>cptr, <float*>hsq, <float*>csq,
                                       <float*>recq, B * ldr, ldr, &bar)
            else:
                with parallel(num_threads=nt):
                    tid = openmp.omp_get_thread_num()
                    nth = openmp.omp_get_num_threads()
                    if self.is_double:
                        _stack_step_worker(self._kt, tid, nth, self.cell, L, B, I, H, G, <const double*>xq,
                                           self._wih1, self._wih2, self._whh, self._bx,
                                           self._bhn, ubq, nu, ordq, oneq, <const double*>hq,
                                           <double*>ho, <double*>cptr, <double*>hsq,
                                           <double*>csq, <double*>recq, B * ldr, ldr, &bar)
                    else:
                        _stack_step_worker(self._kt, tid, nth, self.cell, L, B, I, H, G, <const float*>xq,
                                           self._wih1, self._wih2, self._whh, self._bx,
                                           self._bhn, ubq, nu, ordq, oneq, <const float*>hq,
                                           <float*>ho, <float*>cptr, <float*>hsq,
                                           <float*>csq, <float*>recq, B * ldr, ldr, &bar)
                fr_team_done(&bar)
        return h_out[L - 1], h_out, c_out


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

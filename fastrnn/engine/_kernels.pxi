# The kernel table in use (run-time dispatch), typed wrappers of its entries and the
# activations; included by _compiled.pyx.

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
                           floating* C, Py_ssize_t ldc,         # INOUT (M, N)
                           bint accumulate=True) noexcept nogil:
    """C += A @ W, or C = A @ W without reading C (register-tiled kernel, A as given)."""
    if floating is float:
        kt.gemm_f(M, N, K, A, lda, Wp, C, ldc, accumulate)
    else:
        kt.gemm_d(M, N, K, A, lda, Wp, C, ldc, accumulate)


cdef inline void _gemm_range(const fr_kernels_t* kt, Py_ssize_t M,
                             Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t N, Py_ssize_t K,
                             const floating* A, Py_ssize_t lda, bint trans_a,  # IN op(A)
                             const floating* Bp,                 # IN packed, shared
                             floating* C, Py_ssize_t ldc,        # OUT rows r0 .. r1
                             bint accumulate) noexcept nogil:
    """Rows ``r0 .. r1`` of ``C (+)= op(A) @ B`` (``M`` rows in all)."""
    if floating is float:
        kt.gemm_range_f(M, r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
    else:
        kt.gemm_range_d(M, r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)


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
                              Py_ssize_t pfirst=0, Py_ssize_t pstep=1,
                              Py_ssize_t ldw=0) noexcept nogil:
    """Panel-pack W[rows]^T (K, G*nj): column g*nj + uu is row g*H + u0 + uu of W (rows
    ``ldw`` apart, 0: K); only panels pfirst, pfirst + pstep, ... (to share the work between
    threads)."""
    if ldw == 0:
        ldw = K
    if floating is float:
        kt.pack_panels_f(W, ldw, K, G, H, u0, nj, out, pfirst, pstep)
    else:
        kt.pack_panels_d(W, ldw, K, G, H, u0, nj, out, pfirst, pstep)


cdef inline void _pack_rows(const fr_kernels_t* kt, const floating* B, Py_ssize_t ldb,
                            Py_ssize_t K, Py_ssize_t N,
                            floating* out,            # OUT packed panels
                            Py_ssize_t pfirst, Py_ssize_t pstep) noexcept nogil:
    """Panel-pack B (K, N) itself (row copies); panels pfirst, pfirst + pstep, ..."""
    if floating is float:
        kt.pack_rows_f(B, ldb, K, N, out, pfirst, pstep)
    else:
        kt.pack_rows_d(B, ldb, K, N, out, pfirst, pstep)


cdef inline void _sigmoid_arr(const fr_kernels_t* kt, const floating* x, floating* out,
                              Py_ssize_t n) noexcept nogil:
    """out = the engine's sigmoid of x (n elements)."""
    if floating is float:
        kt.sigmoid_f(x, out, n)
    else:
        kt.sigmoid_d(x, out, n)


cdef inline bint _has_c(int cell) noexcept nogil:
    """True for the cells whose state is (h, c): the LSTMs."""
    return cell == FR_LSTM or cell == FR_LSTM_PEEPHOLE


cdef inline bint _has_gates(int cell) noexcept nogil:
    """True for the gated cells, whose gate activations the training forward keeps."""
    return _has_c(cell) or _is_gru(cell)


cdef inline bint _is_gru(int cell) noexcept nogil:
    """True for the GRUs: rec rows of 4 slots (r, z, the n slot of h, the n slot of x)."""
    return cell == FR_GRU or cell == FR_GRU_RESET_BEFORE


cdef inline Py_ssize_t _hh_block_size(const fr_kernels_t* kt, int cell, Py_ssize_t K,
                                      Py_ssize_t G, Py_ssize_t step,
                                      Py_ssize_t elsize) noexcept nogil:
    """Elements of one packed unit block of W_hh, whose rows have ``K`` columns (the width of
    h: the hidden size, or a projected LSTM's proj_size); the reset-before GRU: its r, z
    panels and its n panels apart."""
    if cell == FR_GRU_RESET_BEFORE:
        return _packed_size(kt, K, 2 * step, elsize) + _packed_size(kt, K, step, elsize)
    return _packed_size(kt, K, G * step, elsize)


cdef inline Py_ssize_t _rec_width(int cell, Py_ssize_t G, Py_ssize_t nj,
                                  bint projected) noexcept nogil:
    """Columns of a work item's scratch rows (``rec``) for unit blocks of ``nj`` units: the
    gates (GRUs: a fourth slot, x's part of n; the reset-before GRU: a fifth, r * h_prev; a
    projected LSTM: a fifth, m = o * tanh(c)), rounded up so that rows start on 64-byte
    lines."""
    cdef Py_ssize_t slots = G + (1 if _is_gru(cell) else 0) + (
        1 if cell == FR_GRU_RESET_BEFORE or projected else 0)
    return ((slots * nj + 15) // 16) * 16


cdef inline void _gates(const fr_kernels_t* kt, int cell, floating* rec, Py_ssize_t nj,
                        const floating* xin, const floating* bias, const floating* bhn,
                        Py_ssize_t gs, const floating* h_prev, floating* c, floating* h_out,
                        floating* hn_out, const floating* peep) noexcept nogil:
    """Gate math of one row of a unit block (see fr_kernels.h)."""
    if floating is float:
        kt.gates_f(cell, rec, nj, xin, bias, bhn, gs, h_prev, c, h_out, hn_out, peep)
    else:
        kt.gates_d(cell, rec, nj, xin, bias, bhn, gs, h_prev, c, h_out, hn_out, peep)


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


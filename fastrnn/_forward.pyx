# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled forward kernels for fastrnn (private).

Entry points: ``forward_stack`` (the whole stacked, (bi)directional forward in one call, driven
by ``fastrnn._engine.forward``) and ``StepKernel`` (streaming, one timestep per call).  Inner
kernels take raw pointers to C-contiguous buffers of one floating dtype (float32 or float64:
the fused type ``floating``, one code path) and never allocate; all allocation happens once per
call in ``forward_stack`` / once per stepper.

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
   slot), accumulate ``h W_hh^T`` with one GEMM, then the fused gate math.

Recurrent GEMM modes: 0 = the engine's register-tiled kernel on W_hh^T panel-packed once per
call (``_small_gemm_acc``; default), 1 = dot-product kernel on W_hh as given (no packing),
2 = scipy's BLAS per step.

Parallelism: the batch is split into ``nb`` blocks and the hidden units into ``nu`` blocks;
work item ``w = bi*nu + uj``.  With ``nu == 1`` the items are independent sequences (no
synchronisation at all); with ``nu > 1`` all threads meet at one barrier per timestep (a
sense-reversing spin barrier that yields the core after a short spin).  Packing of W_hh is
shared between the threads.  BLAS is only called in recurrent mode 2 (from inside the threads;
``fastrnn._engine`` keeps scipy's OpenBLAS single-threaded around the call).  Our own kernels
need no BLAS: they run at the FMA rate whatever kernels OpenBLAS picked for the machine (on
a Zen 5 VM with ``OPENBLAS_CORETYPE=Haswell``, sgemm gets half of the AVX-512 rate they get).

Activations (float32): ``tanh`` is an odd [9/8] rational approximation ``x P(x^2) / Q(x^2)``
on ``|x| <= 9`` (clamped outside; the result is clamped to [-1, 1]; NaN propagates), fitted
for this project (Lawson-weighted least squares).  Measured max absolute error against the exact
tanh, evaluated in float32 on a dense grid: 3.1e-7 (documented bound 5e-7); relative error
near 0 below 3e-7.  ``sigmoid(x) = 0.5 tanh(x/2) + 0.5``: measured 1.6e-7 (bound 4e-7).
float64 uses exact libm ``tanh`` / ``exp``.  Denormals are flushed to zero inside the kernels
(MXCSR FTZ/DAZ, restored on exit).
"""
cimport cython
from cython cimport floating
from cython.parallel cimport parallel
cimport openmp
from libc.math cimport tanh as libm_tanh, exp as libm_exp
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm
cimport numpy as cnp
import numpy as np

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
    /* Register micro-kernels of the small GEMM (see _small_gemm_acc).  GCC/Clang vector
       extensions: 64-byte vectors (one AVX-512 register; split into narrower registers by the
       compiler on machines without AVX-512).  A tile is 4 rows (or 1 row) x 4 vectors of
       columns of a panel-packed W (row stride NR = 4 vectors); the accumulators are named
       variables so that they live in registers across the k loop. */
    /* Keep loaded vectors in registers: without this GCC folds every use of a weight vector
       into its FMA as a memory operand, so a 4 x 4 tile issues 20 loads per 16 FMAs and runs
       load-bound at about half the FMA rate (measured on Zen 5: 90 vs 200 GFLOP/s a core). */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX512F__)
    /* only where a 64-byte vector is one register (else "impossible constraint") */
    #define FR_IN_REGS4(a, b, c, d) __asm__("" : "+v"(a), "+v"(b), "+v"(c), "+v"(d))
    #else
    #define FR_IN_REGS4(a, b, c, d) ((void)0)
    #endif
    #define FR_TILES(T, S)                                                                    \
    typedef T fr_v_##S __attribute__((vector_size(64)));                                      \
    typedef T fr_vu_##S __attribute__((vector_size(64), aligned(sizeof(T))));                 \
    enum { FR_VL_##S = 64 / sizeof(T) };                                                      \
    static inline fr_v_##S fr_ld_##S(const T* p) { return *(const fr_vu_##S*)p; }             \
    static inline void fr_st_##S(T* p, fr_v_##S v) { *(fr_vu_##S*)p = v; }                   \
    static inline void fr_tile4_##S(Py_ssize_t k0, Py_ssize_t k1, const T* A, Py_ssize_t lda, \
                                    Py_ssize_t aks, const T* wpan, T* c, Py_ssize_t ldc) {    \
        const Py_ssize_t V = FR_VL_##S, NR = 4 * FR_VL_##S;                                   \
        fr_v_##S c00 = fr_ld_##S(c), c01 = fr_ld_##S(c + V), c02 = fr_ld_##S(c + 2 * V),      \
                 c03 = fr_ld_##S(c + 3 * V);                                                  \
        fr_v_##S c10 = fr_ld_##S(c + ldc), c11 = fr_ld_##S(c + ldc + V),                      \
                 c12 = fr_ld_##S(c + ldc + 2 * V), c13 = fr_ld_##S(c + ldc + 3 * V);          \
        fr_v_##S c20 = fr_ld_##S(c + 2 * ldc), c21 = fr_ld_##S(c + 2 * ldc + V),              \
                 c22 = fr_ld_##S(c + 2 * ldc + 2 * V), c23 = fr_ld_##S(c + 2 * ldc + 3 * V);  \
        fr_v_##S c30 = fr_ld_##S(c + 3 * ldc), c31 = fr_ld_##S(c + 3 * ldc + V),              \
                 c32 = fr_ld_##S(c + 3 * ldc + 2 * V), c33 = fr_ld_##S(c + 3 * ldc + 3 * V);  \
        const T* ap = A + k0 * aks;                                                           \
        for (Py_ssize_t k = k0; k < k1; ++k, ap += aks) {                                     \
            const T* w = wpan + k * NR;                                                       \
            fr_v_##S w0 = fr_ld_##S(w), w1 = fr_ld_##S(w + V), w2 = fr_ld_##S(w + 2 * V),     \
                     w3 = fr_ld_##S(w + 3 * V);                                               \
            FR_IN_REGS4(w0, w1, w2, w3);                                                      \
            T a0 = ap[0], a1 = ap[lda], a2 = ap[2 * lda], a3 = ap[3 * lda];                   \
            c00 += a0 * w0; c01 += a0 * w1; c02 += a0 * w2; c03 += a0 * w3;                   \
            c10 += a1 * w0; c11 += a1 * w1; c12 += a1 * w2; c13 += a1 * w3;                   \
            c20 += a2 * w0; c21 += a2 * w1; c22 += a2 * w2; c23 += a2 * w3;                   \
            c30 += a3 * w0; c31 += a3 * w1; c32 += a3 * w2; c33 += a3 * w3;                   \
        }                                                                                     \
        fr_st_##S(c, c00); fr_st_##S(c + V, c01); fr_st_##S(c + 2 * V, c02);                  \
        fr_st_##S(c + 3 * V, c03);                                                            \
        fr_st_##S(c + ldc, c10); fr_st_##S(c + ldc + V, c11);                                 \
        fr_st_##S(c + ldc + 2 * V, c12); fr_st_##S(c + ldc + 3 * V, c13);                     \
        fr_st_##S(c + 2 * ldc, c20); fr_st_##S(c + 2 * ldc + V, c21);                         \
        fr_st_##S(c + 2 * ldc + 2 * V, c22); fr_st_##S(c + 2 * ldc + 3 * V, c23);             \
        fr_st_##S(c + 3 * ldc, c30); fr_st_##S(c + 3 * ldc + V, c31);                         \
        fr_st_##S(c + 3 * ldc + 2 * V, c32); fr_st_##S(c + 3 * ldc + 3 * V, c33);             \
    }                                                                                         \
    static inline void fr_tile1_##S(Py_ssize_t k0, Py_ssize_t k1, const T* A, Py_ssize_t aks, \
                                    const T* wpan, T* c) {                                    \
        const Py_ssize_t V = FR_VL_##S, NR = 4 * FR_VL_##S;                                   \
        fr_v_##S c0 = fr_ld_##S(c), c1 = fr_ld_##S(c + V), c2 = fr_ld_##S(c + 2 * V),         \
                 c3 = fr_ld_##S(c + 3 * V);                                                   \
        fr_v_##S d0 = {0}, d1 = {0}, d2 = {0}, d3 = {0};                                      \
        Py_ssize_t k = k0;                                                                    \
        for (; k + 1 < k1; k += 2) {                                                          \
            const T* w = wpan + k * NR;                                                       \
            T a0 = A[k * aks], a1 = A[(k + 1) * aks];                                         \
            c0 += a0 * fr_ld_##S(w); c1 += a0 * fr_ld_##S(w + V);                             \
            c2 += a0 * fr_ld_##S(w + 2 * V); c3 += a0 * fr_ld_##S(w + 3 * V);                 \
            d0 += a1 * fr_ld_##S(w + NR); d1 += a1 * fr_ld_##S(w + NR + V);                   \
            d2 += a1 * fr_ld_##S(w + NR + 2 * V); d3 += a1 * fr_ld_##S(w + NR + 3 * V);       \
        }                                                                                     \
        if (k < k1) {                                                                         \
            const T* w = wpan + k * NR;                                                       \
            T a0 = A[k * aks];                                                                \
            c0 += a0 * fr_ld_##S(w); c1 += a0 * fr_ld_##S(w + V);                             \
            c2 += a0 * fr_ld_##S(w + 2 * V); c3 += a0 * fr_ld_##S(w + 3 * V);                 \
        }                                                                                     \
        fr_st_##S(c, c0 + d0); fr_st_##S(c + V, c1 + d1);                                     \
        fr_st_##S(c + 2 * V, c2 + d2); fr_st_##S(c + 3 * V, c3 + d3);                         \
    }
    /* Dot-product micro-kernels on un-packed weights (PyTorch layout, one output per row):
       C[i, j] += sum_k A[i, k] W[j, k] for tiles of 4 or 1 rows i x 4 or 1 outputs j; the
       k loop runs over whole vectors, the horizontal sums and the k tail are scalar. */
    #define FR_DOTS(T, S)                                                                     \
    static void fr_dot4x4_##S(Py_ssize_t K, const T* A, Py_ssize_t lda, const T* W,           \
                              Py_ssize_t ldw, T* C, Py_ssize_t ldc) {                         \
        const Py_ssize_t V = FR_VL_##S, kv = K - K % FR_VL_##S;                               \
        fr_v_##S z = {0};                                                                     \
        fr_v_##S s00 = z, s01 = z, s02 = z, s03 = z, s10 = z, s11 = z, s12 = z, s13 = z;      \
        fr_v_##S s20 = z, s21 = z, s22 = z, s23 = z, s30 = z, s31 = z, s32 = z, s33 = z;      \
        for (Py_ssize_t k = 0; k < kv; k += V) {                                              \
            fr_v_##S a0 = fr_ld_##S(A + k), a1 = fr_ld_##S(A + lda + k),                      \
                     a2 = fr_ld_##S(A + 2 * lda + k), a3 = fr_ld_##S(A + 3 * lda + k);        \
            fr_v_##S w0 = fr_ld_##S(W + k), w1 = fr_ld_##S(W + ldw + k),                      \
                     w2 = fr_ld_##S(W + 2 * ldw + k), w3 = fr_ld_##S(W + 3 * ldw + k);        \
            FR_IN_REGS4(a0, a1, a2, a3);                                                      \
            FR_IN_REGS4(w0, w1, w2, w3);                                                      \
            s00 += a0 * w0; s01 += a0 * w1; s02 += a0 * w2; s03 += a0 * w3;                   \
            s10 += a1 * w0; s11 += a1 * w1; s12 += a1 * w2; s13 += a1 * w3;                   \
            s20 += a2 * w0; s21 += a2 * w1; s22 += a2 * w2; s23 += a2 * w3;                   \
            s30 += a3 * w0; s31 += a3 * w1; s32 += a3 * w2; s33 += a3 * w3;                   \
        }                                                                                     \
        fr_v_##S acc[16] = {s00, s01, s02, s03, s10, s11, s12, s13,                           \
                            s20, s21, s22, s23, s30, s31, s32, s33};                          \
        for (int i = 0; i < 4; ++i)                                                           \
            for (int j = 0; j < 4; ++j) {                                                     \
                T t = fr_hsum_##S(acc[4 * i + j]);                                            \
                for (Py_ssize_t k = kv; k < K; ++k) t += A[i * lda + k] * W[j * ldw + k];     \
                C[i * ldc + j] += t;                                                          \
            }                                                                                 \
    }                                                                                         \
    static void fr_dot1x4_##S(Py_ssize_t K, const T* A, const T* W, Py_ssize_t ldw, T* C) {   \
        const Py_ssize_t V = FR_VL_##S, kv = K - K % FR_VL_##S;                               \
        fr_v_##S z = {0};                                                                     \
        fr_v_##S s0 = z, s1 = z, s2 = z, s3 = z;                                              \
        for (Py_ssize_t k = 0; k < kv; k += V) {                                              \
            fr_v_##S a = fr_ld_##S(A + k);                                                    \
            s0 += a * fr_ld_##S(W + k); s1 += a * fr_ld_##S(W + ldw + k);                     \
            s2 += a * fr_ld_##S(W + 2 * ldw + k); s3 += a * fr_ld_##S(W + 3 * ldw + k);       \
        }                                                                                     \
        fr_v_##S acc[4] = {s0, s1, s2, s3};                                                   \
        for (int j = 0; j < 4; ++j) {                                                         \
            T t = fr_hsum_##S(acc[j]);                                                        \
            for (Py_ssize_t k = kv; k < K; ++k) t += A[k] * W[j * ldw + k];                   \
            C[j] += t;                                                                        \
        }                                                                                     \
    }                                                                                         \
    static void fr_dot1x1_##S(Py_ssize_t K, const T* A, const T* W, T* C) {                   \
        const Py_ssize_t V = FR_VL_##S, kv = K - K % FR_VL_##S;                               \
        fr_v_##S s0 = {0};                                                                    \
        for (Py_ssize_t k = 0; k < kv; k += V) s0 += fr_ld_##S(A + k) * fr_ld_##S(W + k);     \
        T t = fr_hsum_##S(s0);                                                                \
        for (Py_ssize_t k = kv; k < K; ++k) t += A[k] * W[k];                                 \
        C[0] += t;                                                                            \
    }
    /* Narrow edge tiles: 4 rows (or 1) x ONE vector of a padded edge panel (row stride NR),
       for an edge of at most one vector of real columns (e.g. 4H = 516 at H = 129): a quarter
       of the full tile's work, which would mostly multiply padding. */
    #define FR_EDGE(T, S)                                                                     \
    static inline void fr_edge4_##S(Py_ssize_t k0, Py_ssize_t k1, const T* A, Py_ssize_t lda, \
                                    Py_ssize_t aks, const T* wpan, T* c, Py_ssize_t ldc) {    \
        const Py_ssize_t NR = 4 * FR_VL_##S;                                                  \
        fr_v_##S c0 = fr_ld_##S(c), c1 = fr_ld_##S(c + ldc), c2 = fr_ld_##S(c + 2 * ldc),     \
                 c3 = fr_ld_##S(c + 3 * ldc);                                                 \
        const T* ap = A + k0 * aks;                                                           \
        for (Py_ssize_t k = k0; k < k1; ++k, ap += aks) {                                     \
            fr_v_##S w = fr_ld_##S(wpan + k * NR);                                            \
            c0 += ap[0] * w; c1 += ap[lda] * w; c2 += ap[2 * lda] * w; c3 += ap[3 * lda] * w; \
        }                                                                                     \
        fr_st_##S(c, c0); fr_st_##S(c + ldc, c1); fr_st_##S(c + 2 * ldc, c2);                 \
        fr_st_##S(c + 3 * ldc, c3);                                                           \
    }                                                                                         \
    static inline void fr_edge1_##S(Py_ssize_t k0, Py_ssize_t k1, const T* A, Py_ssize_t aks, \
                                    const T* wpan, T* c) {                                    \
        const Py_ssize_t NR = 4 * FR_VL_##S;                                                  \
        fr_v_##S c0 = fr_ld_##S(c);                                                           \
        for (Py_ssize_t k = k0; k < k1; ++k) c0 += A[k * aks] * fr_ld_##S(wpan + k * NR);     \
        fr_st_##S(c, c0);                                                                     \
    }
    FR_TILES(float, f)
    FR_TILES(double, d)
    FR_EDGE(float, f)
    FR_EDGE(double, d)
    #if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    typedef float fr_v8_f __attribute__((vector_size(32)));
    typedef float fr_v4_f __attribute__((vector_size(16)));
    typedef double fr_v4_d __attribute__((vector_size(32)));
    typedef double fr_v2_d __attribute__((vector_size(16)));
    static inline float fr_hsum_f(fr_v_f v) {       /* halving tree: 16 -> 8 -> 4 -> 1 */
        fr_v8_f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                  + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
        fr_v4_f b = __builtin_shufflevector(a, a, 0, 1, 2, 3)
                  + __builtin_shufflevector(a, a, 4, 5, 6, 7);
        return (b[0] + b[2]) + (b[1] + b[3]);
    }
    static inline double fr_hsum_d(fr_v_d v) {      /* 8 -> 4 -> 2 -> 1 */
        fr_v4_d a = __builtin_shufflevector(v, v, 0, 1, 2, 3)
                  + __builtin_shufflevector(v, v, 4, 5, 6, 7);
        fr_v2_d b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
        return b[0] + b[1];
    }
    /* V x V block transpose for panel packing: rows i of the block are V consecutive k of
       source row src[c0 + i]; after the butterfly (stages h = V/2 .. 1, each a two-input
       shuffle of rows r and r+h) row j holds element k0 + j of the V source rows, which is
       stored as V consecutive columns of panel row k0 + j. */
    #define FR_HAVE_TRANSPOSE 1
    static inline void fr_pack_block_f(const float* const* src, Py_ssize_t k0, float* dst,
                                       Py_ssize_t ldd) {
        fr_v_f r[16], t[16];
        for (int i = 0; i < 16; ++i) r[i] = fr_ld_f(src[i] + k0);
        #define FR_ST_F(h, LO, HI) \
            for (int i = 0; i < 16; ++i) { if (i & h) continue; \
                t[i] = __builtin_shufflevector(r[i], r[i + h], LO); \
                t[i + h] = __builtin_shufflevector(r[i], r[i + h], HI); } \
            for (int i = 0; i < 16; ++i) r[i] = t[i];
        #define L8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
        #define H8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
        #define L4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
        #define H4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
        #define L2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
        #define H2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
        #define L1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
        #define H1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
        FR_ST_F(8, L8, H8)
        FR_ST_F(4, L4, H4)
        FR_ST_F(2, L2, H2)
        FR_ST_F(1, L1, H1)
        #undef L8
        #undef H8
        #undef L4
        #undef H4
        #undef L2
        #undef H2
        #undef L1
        #undef H1
        for (int j = 0; j < 16; ++j) fr_st_f(dst + (k0 + j) * ldd, r[j]);
    }
    static inline void fr_pack_block_d(const double* const* src, Py_ssize_t k0, double* dst,
                                       Py_ssize_t ldd) {
        fr_v_d r[8], t[8];
        for (int i = 0; i < 8; ++i) r[i] = fr_ld_d(src[i] + k0);
        #define FR_ST_D(h, LO, HI) \
            for (int i = 0; i < 8; ++i) { if (i & h) continue; \
                t[i] = __builtin_shufflevector(r[i], r[i + h], LO); \
                t[i + h] = __builtin_shufflevector(r[i], r[i + h], HI); } \
            for (int i = 0; i < 8; ++i) r[i] = t[i];
        #define DL4 0, 1, 2, 3, 8, 9, 10, 11
        #define DH4 4, 5, 6, 7, 12, 13, 14, 15
        #define DL2 0, 1, 8, 9, 4, 5, 12, 13
        #define DH2 2, 3, 10, 11, 6, 7, 14, 15
        #define DL1 0, 8, 2, 10, 4, 12, 6, 14
        #define DH1 1, 9, 3, 11, 5, 13, 7, 15
        FR_ST_D(4, DL4, DH4)
        FR_ST_D(2, DL2, DH2)
        FR_ST_D(1, DL1, DH1)
        for (int j = 0; j < 8; ++j) fr_st_d(dst + (k0 + j) * ldd, r[j]);
    }
    #else
    #define FR_HAVE_TRANSPOSE 0
    static inline void fr_pack_block_f(const float* const* src, Py_ssize_t k0, float* dst,
                                       Py_ssize_t ldd) {
        for (int j = 0; j < 16; ++j) for (int i = 0; i < 16; ++i)
            dst[(k0 + j) * ldd + i] = src[i][k0 + j];
    }
    static inline void fr_pack_block_d(const double* const* src, Py_ssize_t k0, double* dst,
                                       Py_ssize_t ldd) {
        for (int j = 0; j < 8; ++j) for (int i = 0; i < 8; ++i)
            dst[(k0 + j) * ldd + i] = src[i][k0 + j];
    }
    static inline float fr_hsum_f(fr_v_f v) {
        float s = 0; for (int i = 0; i < FR_VL_f; ++i) s += v[i]; return s; }
    static inline double fr_hsum_d(fr_v_d v) {
        double s = 0; for (int i = 0; i < FR_VL_d; ++i) s += v[i]; return s; }
    #endif
    FR_DOTS(float, f)
    FR_DOTS(double, d)

    /* A sense-reversing spin barrier for the per-timestep synchronisation of the unit-split
       plan: a short spin (cheap when both cores are ours), then sched_yield() so that on an
       oversubscribed machine the waiting thread hands its core to the one it waits for. */
    #include <sched.h>
    typedef struct { int count; int sense; } fr_barrier_t;
    static void fr_barrier_init(fr_barrier_t* b) { b->count = 0; b->sense = 0; }
    static void fr_barrier_wait(fr_barrier_t* b, int n, int* local_sense) {
        int s = !*local_sense, spins = 0;
        *local_sense = s;
        if (n <= 1) return;
        if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
            __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
            return;
        }
        while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s) {
            if (++spins >= 200) { sched_yield(); spins = 0; }
    #if defined(__x86_64__) || defined(__i386__)
            else __builtin_ia32_pause();
    #endif
        }
    }

    static void fr_omp_barrier(void) {
    #ifdef _OPENMP
    #pragma omp barrier
    #endif
    }
    """
    void fr_tile4_f(Py_ssize_t k0, Py_ssize_t k1, const float* A, Py_ssize_t lda,
                    Py_ssize_t aks, const float* wpan, float* c, Py_ssize_t ldc) noexcept nogil
    void fr_tile4_d(Py_ssize_t k0, Py_ssize_t k1, const double* A, Py_ssize_t lda,
                    Py_ssize_t aks, const double* wpan, double* c, Py_ssize_t ldc) noexcept nogil
    void fr_tile1_f(Py_ssize_t k0, Py_ssize_t k1, const float* A, Py_ssize_t aks,
                    const float* wpan, float* c) noexcept nogil
    void fr_tile1_d(Py_ssize_t k0, Py_ssize_t k1, const double* A, Py_ssize_t aks,
                    const double* wpan, double* c) noexcept nogil
    void fr_edge4_f(Py_ssize_t k0, Py_ssize_t k1, const float* A, Py_ssize_t lda,
                    Py_ssize_t aks, const float* wpan, float* c, Py_ssize_t ldc) noexcept nogil
    void fr_edge4_d(Py_ssize_t k0, Py_ssize_t k1, const double* A, Py_ssize_t lda,
                    Py_ssize_t aks, const double* wpan, double* c, Py_ssize_t ldc) noexcept nogil
    void fr_edge1_f(Py_ssize_t k0, Py_ssize_t k1, const float* A, Py_ssize_t aks,
                    const float* wpan, float* c) noexcept nogil
    void fr_edge1_d(Py_ssize_t k0, Py_ssize_t k1, const double* A, Py_ssize_t aks,
                    const double* wpan, double* c) noexcept nogil
    void fr_dot4x4_f(Py_ssize_t K, const float* A, Py_ssize_t lda, const float* W,
                     Py_ssize_t ldw, float* C, Py_ssize_t ldc) noexcept nogil
    void fr_dot4x4_d(Py_ssize_t K, const double* A, Py_ssize_t lda, const double* W,
                     Py_ssize_t ldw, double* C, Py_ssize_t ldc) noexcept nogil
    void fr_dot1x4_f(Py_ssize_t K, const float* A, const float* W, Py_ssize_t ldw,
                     float* C) noexcept nogil
    void fr_dot1x4_d(Py_ssize_t K, const double* A, const double* W, Py_ssize_t ldw,
                     double* C) noexcept nogil
    void fr_dot1x1_f(Py_ssize_t K, const float* A, const float* W, float* C) noexcept nogil
    void fr_dot1x1_d(Py_ssize_t K, const double* A, const double* W, double* C) noexcept nogil
    void fr_pack_block_f(const float* const* src, Py_ssize_t k0, float* dst,
                         Py_ssize_t ldd) noexcept nogil
    void fr_pack_block_d(const double* const* src, Py_ssize_t k0, double* dst,
                         Py_ssize_t ldd) noexcept nogil
    unsigned int fr_ftz_enter() noexcept nogil
    void fr_ftz_exit(unsigned int old) noexcept nogil
    void fr_omp_barrier() noexcept nogil
    ctypedef struct fr_barrier_t:
        int count
        int sense
    void fr_barrier_init(fr_barrier_t* b) noexcept nogil
    void fr_barrier_wait(fr_barrier_t* b, int n, int* local_sense) noexcept nogil


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

# tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= 9 (least-squares/Lawson minimax fit, see module doc)

TANH_F32_MAX_ABS_ERR = 5e-7
SIGMOID_F32_MAX_ABS_ERR = 4e-7


cdef inline float _tanh_f32(float x) noexcept nogil:
    cdef float u, p, q
    # clamp written so that NaN propagates (a comparison with NaN is false)
    x = <float>9.0 if x > <float>9.0 else x
    x = <float>(-9.0) if x < <float>(-9.0) else x
    u = x * x
    p = ((((<float>1.318422325100594e-08) * u + <float>2.0471829302420864e-05) * u + <float>0.0034865817761282497) * u + <float>0.13373197582110807) * u + <float>0.999999906334163
    q = ((((<float>7.702663020739875e-07) * u + <float>0.0003271385226798963) * u + <float>0.02584197869851762) * u + <float>0.4670649444421864) * u + <float>1.0
    p = x * p / q
    p = <float>1.0 if p > <float>1.0 else p
    return <float>(-1.0) if p < <float>(-1.0) else p


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


cdef void _small_gemm_acc(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                          const floating* A, Py_ssize_t lda,   # IN (M, K) row-major
                          const floating* Wp,                  # IN (K, N) panel-packed
                          floating* C, Py_ssize_t ldc,         # INOUT (M, N)
                          bint trans_a=False,                  # A stored (K, M), row stride lda
                          floating* apack=NULL) noexcept nogil:  # scratch (128 * 128), see below
    """C += A @ W with the engine's own register-tiled kernel (no call or packing overhead).

    ``Wp`` holds W (K, N) as consecutive column panels of width NR (``panel_width(dtype)``:
    four 512-bit vectors, 64 float32 / 32 float64): panel p = columns p*NR .. p*NR+NR as a
    contiguous (K, NR) row-major block, the last one padded with zero columns (its size:
    ``_packed_size(K, N)``), so the kernel streams weights sequentially and the ragged edge runs
    the same vector tiles, through a small buffer for its C rows.  Loop order: K blocks of KC rows (a KC x NR block of a panel,
    32 KiB, stays in L1) > panels > tiles of 4 (then 1) rows; the tiles are the C micro-kernels
    ``fr_tile4_*`` / ``fr_tile1_*`` (vector extensions, accumulators in registers).

    A transposed A (``trans_a``) with ``apack`` given (and 4 < M <= 128) is packed per K block
    into 4-row micro-panels (``apack[tile*4*kc + k*4 + i]``), so that a tile reads its four A
    values from one place instead of four rows ``lda`` apart (which, with lda a multiple of
    1 KiB, all fall into one L1 set: 290 against 400 GFLOP/s on 2 threads, measured).
    """
    cdef Py_ssize_t NR = 256 // sizeof(floating), V = 64 // sizeof(floating)
    cdef Py_ssize_t KC = 32768 // (NR * sizeof(floating))
    cdef Py_ssize_t m, k0, k1, j0, nfull, nr, i
    cdef const floating* wpan
    cdef floating ctile[4 * 64]            # the edge panel's C rows, NR wide (NR <= 64)
    # element (m, k) of A at A[m * ars + k * aks]
    cdef Py_ssize_t ars = 1 if trans_a else lda, aks = lda if trans_a else 1
    cdef bint pa = trans_a and apack != NULL and 4 < M <= 128
    cdef Py_ssize_t kk0, kk1, ar, ak, k, t, ntile = M // 4
    cdef const floating* at
    cdef const floating* src
    cdef floating* dst
    nfull = (N // NR) * NR
    nr = N - nfull
    if M <= 4:
        KC = K      # a single row tile: no reuse of a W block, stream each panel straight through
    k0 = 0
    while k0 < K:
        k1 = min(k0 + KC, K)
        if pa:      # 4-row micro-panels of this K block of A
            for k in range(k1 - k0):
                src = A + (k0 + k) * lda
                for t in range(ntile):
                    dst = apack + t * 4 * (k1 - k0) + k * 4
                    dst[0] = src[4 * t]
                    dst[1] = src[4 * t + 1]
                    dst[2] = src[4 * t + 2]
                    dst[3] = src[4 * t + 3]
            kk0, kk1, ar, ak = 0, k1 - k0, 1, 4
        else:
            kk0, kk1, ar, ak = k0, k1, ars, aks
        j0 = 0
        while j0 < nfull:
            wpan = Wp + K * j0
            m = 0
            while m + 3 < M:
                at = apack + m * (k1 - k0) if pa else A + m * ars
                if floating is float:
                    fr_tile4_f(kk0, kk1, at, ar, ak, wpan + (k0 - kk0) * NR, C + m * ldc + j0,
                               ldc)
                else:
                    fr_tile4_d(kk0, kk1, at, ar, ak, wpan + (k0 - kk0) * NR, C + m * ldc + j0,
                               ldc)
                m += 4
            while m < M:
                if floating is float:
                    fr_tile1_f(k0, k1, A + m * ars, aks, wpan, C + m * ldc + j0)
                else:
                    fr_tile1_d(k0, k1, A + m * ars, aks, wpan, C + m * ldc + j0)
                m += 1
            j0 += NR
        if nr > 0:
            wpan = Wp + K * nfull
            m = 0
            while m < M:
                for i in range(min(4, M - m)):
                    memcpy(ctile + i * NR, C + (m + i) * ldc + nfull, nr * sizeof(floating))
                if m + 3 < M:
                    at = apack + m * (k1 - k0) if pa else A + m * ars
                    if floating is float:
                        if nr <= V:
                            fr_edge4_f(kk0, kk1, at, ar, ak, wpan + (k0 - kk0) * NR, ctile, NR)
                        else:
                            fr_tile4_f(kk0, kk1, at, ar, ak, wpan + (k0 - kk0) * NR, ctile, NR)
                    else:
                        if nr <= V:
                            fr_edge4_d(kk0, kk1, at, ar, ak, wpan + (k0 - kk0) * NR, ctile, NR)
                        else:
                            fr_tile4_d(kk0, kk1, at, ar, ak, wpan + (k0 - kk0) * NR, ctile, NR)
                else:
                    for i in range(M - m):
                        if floating is float:
                            if nr <= V:
                                fr_edge1_f(k0, k1, A + (m + i) * ars, aks, wpan, ctile + i * NR)
                            else:
                                fr_tile1_f(k0, k1, A + (m + i) * ars, aks, wpan, ctile + i * NR)
                        else:
                            if nr <= V:
                                fr_edge1_d(k0, k1, A + (m + i) * ars, aks, wpan, ctile + i * NR)
                            else:
                                fr_tile1_d(k0, k1, A + (m + i) * ars, aks, wpan, ctile + i * NR)
                for i in range(min(4, M - m)):
                    memcpy(C + (m + i) * ldc + nfull, ctile + i * NR, nr * sizeof(floating))
                m += 4
        k0 = k1


cdef inline Py_ssize_t _packed_size(Py_ssize_t K, Py_ssize_t N, Py_ssize_t elsize) noexcept nogil:
    """Elements of a (K, N) matrix panel-packed for _small_gemm_acc (N rounded up to NR)."""
    cdef Py_ssize_t NR = 256 // elsize
    return K * ((N + NR - 1) // NR) * NR


cdef inline Py_ssize_t _block_offset(Py_ssize_t K, Py_ssize_t G, Py_ssize_t u0, Py_ssize_t step,
                                     Py_ssize_t elsize) noexcept nogil:
    """Offset of unit block u0 (blocks of ``step`` units, each packed separately as G*step
    columns) in an array of packed blocks."""
    return (u0 // step) * _packed_size(K, G * step, elsize) if u0 > 0 else 0


cdef void _dot_gemm_acc(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        const floating* A, Py_ssize_t lda,   # IN (M, K) row-major
                        const floating* W, Py_ssize_t ldw,   # IN (N, K) row-major (PyTorch layout)
                        floating* C, Py_ssize_t ldc) noexcept nogil:  # INOUT (M, N)
    """C += A @ W^T on un-packed weights (dot-product micro-kernels ``fr_dot*``).

    No packing at all, at the price of one horizontal sum per output; used for large K (hidden
    sizes >= 256) where the sum is amortised and packing W per call would cost a transpose of
    the whole matrix.  Loop order: 4 outputs (a 4 x K block of W, reused from L1) > 4 rows.
    Rows left over go one at a time; outputs left over one at a time.
    """
    cdef Py_ssize_t m, n
    n = 0
    while n + 3 < N:
        m = 0
        while m + 3 < M:
            if floating is float:
                fr_dot4x4_f(K, A + m * lda, lda, W + n * ldw, ldw, C + m * ldc + n, ldc)
            else:
                fr_dot4x4_d(K, A + m * lda, lda, W + n * ldw, ldw, C + m * ldc + n, ldc)
            m += 4
        while m < M:
            if floating is float:
                fr_dot1x4_f(K, A + m * lda, W + n * ldw, ldw, C + m * ldc + n)
            else:
                fr_dot1x4_d(K, A + m * lda, W + n * ldw, ldw, C + m * ldc + n)
            m += 1
        n += 4
    while n < N:
        for m in range(M):
            if floating is float:
                fr_dot1x1_f(K, A + m * lda, W + n * ldw, C + m * ldc + n)
            else:
                fr_dot1x1_d(K, A + m * lda, W + n * ldw, C + m * ldc + n)
        n += 1


cdef void _pack_panels(const floating* W, Py_ssize_t K,      # IN (rows, K) PyTorch layout
                       Py_ssize_t G, Py_ssize_t H, Py_ssize_t u0, Py_ssize_t nj,
                       floating* out,                        # OUT (K * G*nj) panel-packed
                       Py_ssize_t pfirst=0, Py_ssize_t pstep=1) noexcept nogil:
    """Panel-pack M = W[rows]^T (K, G*nj) for _small_gemm_acc, where column g*nj + uu of M is
    row g*H + u0 + uu of W (the gates of one unit block; u0=0, nj=H, G=1 packs all rows).
    Only panels pfirst, pfirst + pstep, ... are written (to share the work between threads).
    Every panel is NR columns wide; the last one's padding columns are zeroed."""
    cdef Py_ssize_t NR = 256 // sizeof(floating)
    cdef Py_ssize_t N = G * nj, p0, nr, c, g, k, k0, V, kfull
    cdef const floating* src[64]
    cdef floating* dst
    p0 = pfirst * NR
    while p0 < N:
        nr = min(NR, N - p0)
        dst = out + K * p0
        if nr < NR:
            for k in range(K):
                memset(dst + k * NR + nr, 0, (NR - nr) * sizeof(floating))
        for c in range(nr):
            g = (p0 + c) // nj
            src[c] = W + (g * H + u0 + (p0 + c - g * nj)) * K
        # V x V blocks (V = one vector: 16 float32 / 8 float64) transposed in registers,
        # then the edges element by element
        V = 64 // sizeof(floating)
        kfull = (K // V) * V
        k0 = 0
        while k0 < kfull:           # V whole panel rows at a time: contiguous writes
            c = 0
            while c + V <= nr:
                if floating is float:
                    fr_pack_block_f(<const float* const*>&src[c], k0, dst + c, NR)
                else:
                    fr_pack_block_d(<const double* const*>&src[c], k0, dst + c, NR)
                c += V
            k0 += V
        for k in range(kfull):
            for c in range((nr // V) * V, nr):
                dst[k * NR + c] = src[c][k]
        for k in range(kfull, K):
            for c in range(nr):
                dst[k * NR + c] = src[c][k]
        p0 += pstep * NR


cdef void _pack_rows(const floating* B, Py_ssize_t ldb,   # IN (K, N) row-major, row stride ldb
                     Py_ssize_t K, Py_ssize_t N,
                     floating* out,                      # OUT (_packed_size(K, N)) panels
                     Py_ssize_t pfirst, Py_ssize_t pstep) noexcept nogil:
    """Panel-pack B (K, N) itself (no transpose: row copies); panels pfirst, pfirst+pstep, ..."""
    cdef Py_ssize_t NR = 256 // sizeof(floating)
    cdef Py_ssize_t p0 = pfirst * NR, nr, k
    cdef floating* dst
    while p0 < N:
        nr = min(NR, N - p0)
        dst = out + K * p0
        for k in range(K):
            memcpy(dst + k * NR, B + k * ldb + p0, nr * sizeof(floating))
            if nr < NR:
                memset(dst + k * NR + nr, 0, (NR - nr) * sizeof(floating))
        p0 += pstep * NR


cdef void _gemm_range(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t N, Py_ssize_t K,
                      const floating* A, Py_ssize_t lda, bint trans_a,
                      const floating* Bp,                  # IN packed, shared by the threads
                      floating* C, Py_ssize_t ldc, bint accumulate=False) noexcept nogil:
    """Rows ``r0 .. r1`` of ``C (+)= op(A) @ B`` in blocks of 128 rows (``_small_gemm_acc``;
    a transposed A through micro-panels)."""
    cdef Py_ssize_t MC = 128, m0, r
    cdef Py_ssize_t ars = 1 if trans_a else lda
    cdef floating* apack
    if r1 <= r0:
        return
    apack = <floating*>malloc(MC * 128 * sizeof(floating)) if trans_a else NULL
    for r in range(r0, r1 if not accumulate else r0):
        memset(C + r * ldc, 0, N * sizeof(floating))
    m0 = r0
    while m0 < r1:
        _small_gemm_acc(min(MC, r1 - m0), N, K, A + m0 * ars, lda, Bp, C + m0 * ldc, ldc,
                        trans_a, apack)
        m0 += MC
    free(apack)


cdef void _gemm_rows(int tid, int nth, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, bint trans_a,
                     const floating* Bp,                  # IN packed, shared by the threads
                     floating* C, Py_ssize_t ldc,
                     const floating* A2=NULL, Py_ssize_t lda2=0,   # IN second operand
                     Py_ssize_t M1=0, bint accumulate=False) noexcept nogil:
    """Thread ``tid`` of ``nth``: ``C = op(A) @ B`` for its share of the rows (multiples of 4).
    With ``A2`` (transposed, like A): rows ``M1 ..`` of C come from ``A2`` (``C = [A | A2]^T
    @ B``, one packing of B for both)."""
    cdef Py_ssize_t chunk, r0, r1
    chunk = (M + nth - 1) // nth
    chunk = ((chunk + 3) // 4) * 4
    r0 = min(tid * chunk, M)
    r1 = min(r0 + chunk, M)
    if A2 == NULL:
        _gemm_range(r0, r1, N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
    else:
        _gemm_range(r0, min(r1, M1), N, K, A, lda, trans_a, Bp, C, ldc, accumulate)
        _gemm_range(max(r0, M1) - M1, r1 - M1, N, K, A2, lda2, trans_a, Bp, C + M1 * ldc, ldc,
                    accumulate)


cdef void _gemm_part(int tid, int nth, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, bint trans_a,
                     const floating* B, Py_ssize_t ldb,
                     floating* C, Py_ssize_t ldc, floating* bp,
                     const floating* A2, Py_ssize_t lda2, Py_ssize_t M1,
                     bint accumulate) noexcept nogil:
    """Thread ``tid`` of ``nth`` of ``gemm``: its share of packing B, a barrier, its C rows."""
    _pack_rows(B, ldb, K, N, bp, tid, nth)
    if nth > 1:
        fr_omp_barrier()
    _gemm_rows(tid, nth, M, N, K, A, lda, trans_a, bp, C, ldc, A2, lda2, M1, accumulate)


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
    cdef unsigned int csr
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
    bp_arr = np.empty(_packed_size(K, N, sizeof(floating)),
                      dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] bp = bp_arr
    cdef const floating* ap = &a[0, 0]
    if nthreads > 1 and M < 8:
        nthreads = 1
    with nogil:
        if nthreads <= 1:
            csr = fr_ftz_enter()
            _gemm_part(0, 1, M, N, K, ap, lda, trans_a, &b[0, 0], ldb, &c[0, 0], N,
                       &bp[0], a2p, lda2, M1, accumulate)
            fr_ftz_exit(csr)
        else:
            with parallel(num_threads=nthreads):
                tid = openmp.omp_get_thread_num()
                nth = openmp.omp_get_num_threads()
                csr = fr_ftz_enter()
                _gemm_part(tid, nth, M, N, K, ap, lda, trans_a, &b[0, 0], ldb,
                           &c[0, 0], N, &bp[0], a2p, lda2, M1, accumulate)
                fr_ftz_exit(csr)


def pack_rows(const floating[:, ::1] b, out=None):
    """Panel-pack ``b`` (K, N) itself for the small GEMM kernel (C = A @ b); see _pack_rows.
    Into ``out`` (1-D, ``packed_size(K, N)`` elements of b's dtype) if given; returns the
    packed array."""
    cdef Py_ssize_t K = b.shape[0], N = b.shape[1]
    if out is None:
        out = np.empty(_packed_size(K, N, sizeof(floating)),
                       dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] o = out
    if o.shape[0] != _packed_size(K, N, sizeof(floating)):
        raise ValueError("pack_rows: out has the wrong size")
    if K > 0 and N > 0:
        with nogil:
            _pack_rows(&b[0, 0], N, K, N, &o[0], 0, 1)
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


cdef void _dh_cols(int tid, int nth, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   const floating* A, const floating* Bp, floating* C,
                   bint accumulate) noexcept nogil:
    """Thread ``tid`` of ``nth``: C[:, its panels] (+)= A @ B[:, its panels] (whole panels, so
    each thread streams only its share of B)."""
    cdef Py_ssize_t NR = 256 // sizeof(floating)
    cdef Py_ssize_t npan = (N + NR - 1) // NR, per, c0, c1, r
    per = (npan + nth - 1) // nth
    c0 = min(tid * per * NR, N)
    c1 = min(c0 + per * NR, N)
    if c1 <= c0:
        return
    if not accumulate:
        for r in range(M):
            memset(C + r * N + c0, 0, (c1 - c0) * sizeof(floating))
    _small_gemm_acc(M, c1 - c0, K, A, K, Bp + K * c0, C + c0, N)


cdef void _dh_gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                   const floating* Bp, floating* C, bint accumulate, int nt) noexcept nogil:
    """C (M, N) [+]= A (M, K) @ B, B panel-packed by pack_rows; split by column panels over
    ``nt`` threads when the product has at least ``g_dh_par_work`` multiply-adds."""
    cdef int tid, nth
    cdef unsigned int csr
    cdef Py_ssize_t NR = 256 // sizeof(floating)
    if nt > 1 and M * N * K >= g_dh_par_work and N > NR:
        with parallel(num_threads=nt):
            tid = openmp.omp_get_thread_num()
            nth = openmp.omp_get_num_threads()
            csr = fr_ftz_enter()
            _dh_cols(tid, nth, M, N, K, A, Bp, C, accumulate)
            fr_ftz_exit(csr)
    else:
        _dh_cols(0, 1, M, N, K, A, Bp, C, accumulate)


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
    """Flush denormals to zero in this thread; returns the previous MXCSR."""
    return fr_ftz_enter()


cdef size_t _ftz_off(size_t old) noexcept nogil:
    """Restore the MXCSR that _ftz_on returned."""
    fr_ftz_exit(<unsigned int>old)
    return 0


def run_on_team(list calls):
    """Call ``calls[i]()`` on thread ``i`` of the engine's OpenMP team (``len(calls)`` threads),
    each holding the GIL only while it starts its call: meant for Numba ``nogil`` kernels, which
    release it at once.  The kernels then run on the threads that run every other part of the
    engine, instead of beside them (libgomp's idle workers spin for a while after each parallel
    region and would compete with a thread of another pool for the core).  Re-raises the first
    exception after every call returned.  Runs the calls one after the other if the team cannot
    have that many threads."""
    cdef int n = len(calls), tid, got
    errors = [None] * n
    if n == 0:
        return
    with nogil, parallel(num_threads=n):
        tid = openmp.omp_get_thread_num()
        got = openmp.omp_get_num_threads()
        with gil:
            _team_call(calls, errors, tid, got)
    for e in errors:
        if e is not None:
            raise e


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
        _dot_gemm_acc(M, N, K, &a[0, 0], K, &w[0, 0], K, &c[0, 0], N)


def pack_panels(const floating[:, ::1] w,      # IN  (G*H, K) PyTorch layout
                Py_ssize_t G, Py_ssize_t u0, Py_ssize_t nj,
                floating[::1] out):            # OUT (packed_size(K, G*nj, dtype))
    """Panel-pack the rows of one unit block of ``w`` (see _pack_panels)."""
    cdef Py_ssize_t K = w.shape[1], H = w.shape[0] // G
    if out.shape[0] != _packed_size(K, G * nj, sizeof(floating)) or u0 + nj > H:
        raise ValueError("pack_panels: shapes do not match")
    if out.shape[0] == 0:
        return
    with nogil:
        _pack_panels(&w[0, 0], K, G, H, u0, nj, &out[0])


def packed_size(Py_ssize_t K, Py_ssize_t N, dtype):
    """Elements of a (K, N) matrix panel-packed for the small GEMM kernel (see _small_gemm_acc)."""
    return _packed_size(K, N, np.dtype(dtype).itemsize)


def panel_width(dtype):
    """Column panel width NR of the small GEMM kernel for ``dtype`` (see _small_gemm_acc)."""
    return 256 // np.dtype(dtype).itemsize


# ---------------------------------------------------------------------------------------------
# Input projection: xp[:, off:off+N] = X @ W^T  (one GEMM over all B*T rows, split by rows)
# ---------------------------------------------------------------------------------------------

cdef void _proj_part(int tid, int nth, Py_ssize_t R, Py_ssize_t K, Py_ssize_t N,
                     const floating* X, const floating* W, floating* Y, Py_ssize_t ldy,
                     floating* wpk) noexcept nogil:
    """Thread ``tid`` of ``nth``: its share of packing W^T, a barrier, then its rows of Y."""
    _pack_panels(W, K, 1, N, 0, N, wpk, tid, nth)
    if nth > 1:
        fr_omp_barrier()
    _gemm_rows(tid, nth, R, N, K, X, K, False, wpk, Y, ldy)


cdef void _projection(Py_ssize_t R, Py_ssize_t K, Py_ssize_t N,
                      const floating* X,            # IN  (R, K) layer input, rows b*T + t
                      const floating* W,            # IN  (N, K) weight_ih (PyTorch layout)
                      floating* Y, Py_ssize_t ldy,  # OUT (R, ldy): columns 0 .. N written
                      int nthreads,
                      floating* wpk) noexcept nogil:  # scratch (_packed_size(K, N))
    """``Y[:, :N] = X @ W.T`` as one GEMM with the engine's own kernel: W^T panel-packed once
    (the threads share the packing), then the rows split over ``nthreads`` threads in blocks
    of 128 (no BLAS: the kernel runs at the FMA rate whatever kernels BLAS would pick)."""
    cdef int tid, nth
    cdef unsigned int csr
    cdef Py_ssize_t r0
    if R == 0 or N == 0:
        return
    if K == 0:
        for r0 in range(R):
            memset(Y + r0 * ldy, 0, N * sizeof(floating))
        return
    if nthreads <= 1 or R < 2 * 16:
        csr = fr_ftz_enter()
        _proj_part(0, 1, R, K, N, X, W, Y, ldy, wpk)
        fr_ftz_exit(csr)
        return
    with parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        csr = fr_ftz_enter()
        _proj_part(tid, nth, R, K, N, X, W, Y, ldy, wpk)
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
        const floating* whh,                     # IN  recurrent weights: mode 0: W_hh^T block
                                                 #     (H, G*nj) of this unit block, panel-packed;
                                                 #     modes 1, 2: weight_hh (G*H, H) as given
        int mode,                                #     GEMM: 0 panel kernel, 1 dot kernel, 2 BLAS
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
    cdef floating cn, hv, nv, zv
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
            _small_gemm_acc(na, 2 * nj, Kx, xin, Kx, wx1, rec, ldr)
            _small_gemm_acc(na, nj, Kx, xin, Kx, wx2, rec + 3 * nj, ldr)
        else:
            _small_gemm_acc(na, N, Kx, xin, Kx, wx1, rec, ldr)
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
        _small_gemm_acc(na, N, H, cur, H, whh, rec, ldr)
    elif mode == 2 and u0 == 0 and nj == H:
        # rec^T (N, na) = W_hh (row-major (N, H) -> 'T') times cur^T (H, na)
        _blas_gemm(c'T', c'N', <int>N, <int>na, <int>H, <floating>1.0, whh, <int>H,
                   cur, <int>H, <floating>1.0, rec, <int>ldr)
    else:
        # per gate k: rows k*H + u0 .. k*H + u0 + nj of W_hh feed rec columns k*nj ..
        for k in range(G):
            if mode == 1:
                _dot_gemm_acc(na, nj, H, cur, H, whh + (k * H + u0) * H, H, rec + k * nj, ldr)
            else:
                _blas_gemm(c'T', c'N', <int>nj, <int>na, <int>H, <floating>1.0,
                           whh + (k * H + u0) * H, <int>H, cur, <int>H, <floating>1.0,
                           rec + k * nj, <int>ldr)
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


cdef void _worker(int tid, int nth, int cell, bint reverse, Py_ssize_t T, Py_ssize_t tmax,
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
    cdef int sense = 0
    cdef Py_ssize_t BH = B * H
    cdef const floating* wblk
    cdef floating* cur
    cdef floating* nxt
    cdef unsigned int csr = fr_ftz_enter()
    cdef Py_ssize_t na_local[64]          # per-item active counts (nitems <= 64 enforced by caller)
    for w in range(nitems):
        na_local[w] = bblk[w // nu + 1] - bblk[w // nu]
    if mode == 0 and w_src != NULL:
        if nu > 1:
            w = tid
            while w < nu:
                _pack_panels(w_src, H, G, H, ublk[w], ublk[w + 1] - ublk[w],
                             <floating*>whh + _block_offset(H, G, ublk[w], ublk[1],
                                                            sizeof(floating)))
                w += nth
        else:
            _pack_panels(w_src, H, G, H, 0, H, <floating*>whh, tid, nth)
        fr_barrier_wait(bar, nth, &sense)
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
                    wblk = (whh + _block_offset(H, G, u0, ublk[1], sizeof(floating))
                            if mode == 0 else whh)
                    _step_item(cell, reverse, s, T, H, G, p0, na, u0, nj, xp, LX, bx, bhn,
                               wblk, mode, order, lengths, cur, nxt, cbuf + p0 * H, y, LY,
                               hN, cN, scratch + w * scr_stride, ldr, store, wg, wc, whn,
                               NULL, 0, NULL, NULL, xrow)
                w += nth
            fr_barrier_wait(bar, nth, &sense)
    fr_ftz_exit(csr)


cdef void _recurrence(int cell, bint reverse, Py_ssize_t B, Py_ssize_t T, Py_ssize_t H,
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
    if nthreads <= 1:
        _worker(0, 1, cell, reverse, T, tmax, B, H, G, xp, LX, bx, bhn, whh, mode, ublk, nu,
                bblk, nb, order, lengths, hbuf, cbuf, y, LY, hN, cN, scratch, scr_stride, ldr,
                store, wg, wc, whn, &bar, w_src, xrow)
        return
    with parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        _worker(tid, nth, cell, reverse, T, tmax, B, H, G, xp, LX, bx, bhn, whh, mode, ublk,
                nu, bblk, nb, order, lengths, hbuf, cbuf, y, LY, hN, cN, scratch, scr_stride,
                ldr, store, wg, wc, whn, &bar, w_src, xrow)


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
    wpk = (_new(1, nu * _packed_size(H, G * step, sizeof(floating)), 0, 0, 0, typenum, False)
           if mode == 0 else None)
    wpi = _new(1, _packed_size(max(I, D * H), GH, sizeof(floating)), 0, 0, 0, typenum, False)
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
                _projection(R, I_l, GH, inp_p, wih_p, xp_p + d * GHp, LX, proj_threads, wpi_p)
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
                _recurrence(cell, d == 1, B, T, H, G, tmax, xp_p + d * GHp, LX, bx_p, bhn_p,
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
    kernel (weights packed once per call), 1 dot kernel (un-packed), 2 BLAS.
    Returns (y, h_n, c_n, workspace-or-None).
    """
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


cdef void _stack_step_worker(int tid, int nth, int cell, Py_ssize_t L, Py_ssize_t B,
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
    cdef int sense = 0
    cdef const floating* inp = x
    cdef unsigned int csr = fr_ftz_enter()
    n1 = 2 if cell == 3 else G
    for l in range(L):
        I_l = I if l == 0 else H
        w = tid
        while w < nu:
            u0 = ublk[w]
            nj = ublk[w + 1] - u0
            _step_item(cell, False, 0, 1, H, G, 0, B, u0, nj, NULL, 0,
                       <const floating*>bx[l], <const floating*>bhn[l],
                       <const floating*>whh[l] + _block_offset(H, G, u0, ublk[1],
                                                               sizeof(floating)), 0, order, ones,
                       h + l * B * H, hs, c_out + l * B * H, h_out + l * B * H, H,
                       h_out + l * B * H, cs, rec + w * rec_stride, ldr, False, NULL, NULL, NULL,
                       inp, I_l,
                       <const floating*>wih1[l] + _block_offset(I_l, n1, u0, ublk[1],
                                                                sizeof(floating)),
                       <const floating*>wih2[l] + _block_offset(I_l, 1, u0, ublk[1],
                                                                sizeof(floating))
                       if cell == 3 else NULL)
            w += nth
        fr_barrier_wait(bar, nth, &sense)
        inp = h_out + l * B * H
    fr_ftz_exit(csr)


cdef class StepKernel:
    """Prepared weights of a stacked unidirectional cell, advanced one timestep per call.

    Built by ``fastrnn._engine.make_stepper``; the weights are *copied* (packed) at
    construction, so later changes to the caller's arrays are not seen (rebuild instead).
    Hidden units are split into ``unit_blocks`` blocks (2 for large layers); a call runs on
    min(engine threads, unit_blocks) threads when the step is big enough to pay for it.
    """
    cdef readonly int cell
    cdef readonly Py_ssize_t num_layers, input_size, hidden_size, gates, unit_blocks
    cdef readonly object dtype
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
        with nogil:
            if nt <= 1:
                if self.is_double:
                    _stack_step_worker(0, 1, self.cell, L, B, I, H, G, <const double*>xq,
                                       self._wih1, self._wih2, self._whh, self._bx, self._bhn,
                                       ubq, nu, ordq, oneq, <const double*>hq, <double*>ho,
                                       <double*>cptr, <double*>hsq, <double*>csq,
                                       <double*>recq, B * ldr, ldr, &bar)
                else:
                    _stack_step_worker(0, 1, self.cell, L, B, I, H, G, <const float*>xq,
                                       self._wih1, self._wih2, self._whh, self._bx, self._bhn,
                                       ubq, nu, ordq, oneq, <const float*>hq, <float*>ho,
                                       <float*>cptr, <float*>hsq, <float*>csq,
                                       <float*>recq, B * ldr, ldr, &bar)
            else:
                with parallel(num_threads=nt):
                    tid = openmp.omp_get_thread_num()
                    nth = openmp.omp_get_num_threads()
                    if self.is_double:
                        _stack_step_worker(tid, nth, self.cell, L, B, I, H, G, <const double*>xq,
                                           self._wih1, self._wih2, self._whh, self._bx,
                                           self._bhn, ubq, nu, ordq, oneq, <const double*>hq,
                                           <double*>ho, <double*>cptr, <double*>hsq,
                                           <double*>csq, <double*>recq, B * ldr, ldr, &bar)
                    else:
                        _stack_step_worker(tid, nth, self.cell, L, B, I, H, G, <const float*>xq,
                                           self._wih1, self._wih2, self._whh, self._bx,
                                           self._bhn, ubq, nu, ordq, oneq, <const float*>hq,
                                           <float*>ho, <float*>cptr, <float*>hsq,
                                           <float*>csq, <float*>recq, B * ldr, ldr, &bar)
        return h_out[L - 1], h_out, c_out


def small_gemm(const floating[:, ::1] a,    # IN  (M, K)
               const floating[::1] wp,      # IN  W (K, N) panel-packed (see _small_gemm_acc)
               floating[:, ::1] c):         # INOUT (M, N): c += a @ W
    """The engine's small GEMM kernel, exposed for tests and benchmarks."""
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = c.shape[1]
    if c.shape[0] != M or wp.shape[0] != _packed_size(K, N, sizeof(floating)):
        raise ValueError("small_gemm: shapes do not match")
    if M == 0 or N == 0 or K == 0:
        return
    with nogil:
        _small_gemm_acc(M, N, K, &a[0, 0], K, &wp[0], &c[0, 0], N)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled half of fastrnn's engine (private): one extension module, in five files.

``fastrnn.engine`` (Python) plans every call and hands this module arrays that are validated,
C-contiguous, of one dtype, with the plan (length order, batch and unit blocks, folded biases)
already made; this module allocates, splits the work over the engine's OpenMP threads and calls
the C kernels, which never allocate in the time loop.  The arithmetic lives in C, in
``kernels/``: one source compiled once per instruction set (x86-64 baseline, AVX2 + FMA,
AVX-512; NEON on aarch64), each exporting a table of kernels (``fr_kernels.h``); at import the
best table this CPU can run is chosen (``FASTRNN_ISA`` forces a lower one).

The files, included here in this order (one module, so that the kernel table in use and the
runtime's contention state exist once):

- ``_kernels.pxi``   the kernel table in use (dispatch), typed wrappers of its entries, the
                     activations exposed for their error-bound tests;
- ``_team.pxi``      the thread team: thread count, contention, ``run_on_team``;
- ``_gemm.pxi``      the engine's GEMM on its threads, packing, and the C entry points of the
                     Numba BPTT kernels (``bptt_symbols``);
- ``_forward.pxi``   the forward driver: input projection, one timestep of one work item,
                     the time loop, the stacked (bi)directional forward (``forward_stack``);
- ``_stream.pxi``    streaming: ``StepKernel``, one timestep of a stacked network per call.

Cell codes are the C enum ``FR_RNN_TANH, FR_RNN_RELU, FR_LSTM, FR_GRU`` (0-3, also in
``fastrnn.cell_table``).  Denormals are flushed to zero inside the kernels (MXCSR FTZ/DAZ on
x86, FPCR.FZ on aarch64; restored on exit).  Float32 activations: ``tanh`` is an odd [9/8]
rational approximation (bound ``TANH_F32_MAX_ABS_ERR``), ``sigmoid(x) = 0.5 tanh(x/2) + 0.5``
(``SIGMOID_F32_MAX_ABS_ERR``); float64 uses libm.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport parallel
cimport openmp
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy, memset
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "fr_kernels.h" nogil:
    enum:
        FR_RNN_TANH
        FR_RNN_RELU
        FR_LSTM
        FR_GRU
        FR_RNN_LEAKY_RELU
        FR_LSTM_PEEPHOLE
        FR_GRU_RESET_BEFORE
    double FR_LEAKY_RELU_SLOPE
    ctypedef Py_ssize_t fr_idx
    void fr_prefetch(const void* p, fr_idx nbytes)
    ctypedef struct fr_kernels_t:
        const char* name
        int vector_bytes, mr, nv
        fr_idx nr_f, nr_d
        void (*gemm_f)(fr_idx M, fr_idx N, fr_idx K, const float* A, fr_idx lda,
                       const float* Wp, float* C, fr_idx ldc, int accumulate) noexcept nogil
        void (*gemm_d)(fr_idx M, fr_idx N, fr_idx K, const double* A, fr_idx lda,
                       const double* Wp, double* C, fr_idx ldc, int accumulate) noexcept nogil
        void (*gemm_range_f)(fr_idx M, fr_idx r0, fr_idx r1, fr_idx N, fr_idx K, const float* A,
                             fr_idx lda, int trans_a, const float* Bp, float* C, fr_idx ldc,
                             int accumulate) noexcept nogil
        void (*gemm_range_d)(fr_idx M, fr_idx r0, fr_idx r1, fr_idx N, fr_idx K, const double* A,
                             fr_idx lda, int trans_a, const double* Bp, double* C, fr_idx ldc,
                             int accumulate) noexcept nogil
        void (*dot_gemm_acc_f)(fr_idx M, fr_idx N, fr_idx K, const float* A, fr_idx lda,
                               const float* W, fr_idx ldw, float* C, fr_idx ldc) noexcept nogil
        void (*dot_gemm_acc_d)(fr_idx M, fr_idx N, fr_idx K, const double* A, fr_idx lda,
                               const double* W, fr_idx ldw, double* C,
                               fr_idx ldc) noexcept nogil
        void (*pack_panels_f)(const float* W, fr_idx ldw, fr_idx K, fr_idx G, fr_idx H, fr_idx u0,
                              fr_idx nj, float* out, fr_idx pfirst, fr_idx pstep) noexcept nogil
        void (*pack_panels_d)(const double* W, fr_idx ldw, fr_idx K, fr_idx G, fr_idx H,
                              fr_idx u0,
                              fr_idx nj, double* out, fr_idx pfirst,
                              fr_idx pstep) noexcept nogil
        void (*pack_rows_f)(const float* B, fr_idx ldb, fr_idx K, fr_idx N, float* out,
                            fr_idx pfirst, fr_idx pstep) noexcept nogil
        void (*pack_rows_d)(const double* B, fr_idx ldb, fr_idx K, fr_idx N, double* out,
                            fr_idx pfirst, fr_idx pstep) noexcept nogil
        void (*gates_f)(int cell, float* rec, fr_idx nj, const float* xin, const float* bias,
                        const float* bhn, fr_idx gs, const float* h_prev, float* c,
                        float* h_out, float* hn_out, const float* peep) noexcept nogil
        void (*gates_d)(int cell, double* rec, fr_idx nj, const double* xin,
                        const double* bias, const double* bhn, fr_idx gs,
                        const double* h_prev, double* c, double* h_out, double* hn_out,
                        const double* peep) noexcept nogil
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
        int late
        double t_start
    ctypedef struct fr_member_t:
        int sense
        double t_last
        long preemptions
    void fr_barrier_init(fr_barrier_t* b)
    int fr_claim(int* next)
    void fr_member_init(fr_member_t* m)
    void fr_barrier_wait(fr_barrier_t* b, int n, fr_member_t* m)
    void fr_team_leave(fr_barrier_t* b, int n, fr_member_t* m)
    double fr_now()
    int fr_team_done(const fr_barrier_t* b)
    int fr_region_waking(const fr_barrier_t* b)
    int fr_contended()
    void fr_note_contention(double hold_seconds)
    double FR_CONTENDED_WAIT
    double FR_CONTENDED_HOLD
    double FR_RECONTENDED_FOR
    double FR_CONTENDED_WINDOW
    int FR_CONTENDED_REGIONS
    double FR_IDLE
    double FR_WAKING
    long fr_thread_preemptions()



#: the cell codes of the kernels, for the check against ``fastrnn.cell_table``
CELL_CODES = {"rnn_tanh": FR_RNN_TANH, "rnn_relu": FR_RNN_RELU, "lstm": FR_LSTM, "gru": FR_GRU,
              "rnn_leaky_relu": FR_RNN_LEAKY_RELU, "lstm_peephole": FR_LSTM_PEEPHOLE,
              "gru_reset_before": FR_GRU_RESET_BEFORE}
#: the kernels' negative slope of the leaky-relu RNN, for the check against the cell table
LEAKY_RELU_SLOPE = FR_LEAKY_RELU_SLOPE

include "_kernels.pxi"
include "_team.pxi"
include "_gemm.pxi"
include "_forward.pxi"
include "_stream.pxi"

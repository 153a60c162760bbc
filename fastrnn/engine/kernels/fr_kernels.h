/* fastrnn's compiled kernels: the interface seen by the driver (fastrnn/_forward.pyx).
 *
 * The arithmetic kernels (register-tiled GEMM, its packing, the dot-product GEMM on un-packed
 * weights, the gate math of every cell and the activations) are written once, in
 * fr_kernels_impl.h, and compiled once per instruction-set target (fr_isa.c with that
 * target's flags; blocking constants in fr_config.h).  Each target exports one table of
 * function pointers, fr_kernels_<target>; fr_runtime.c (compiled for the baseline) asks the CPU
 * what it can run and hands out the best table, or the one that FASTRNN_ISA names.
 *
 * Conventions: all matrices are row-major with explicit row strides (in elements); kernels
 * never allocate except fr gemm_range's scratch, never validate (the Python layers do), and
 * accumulate into C (C += ...).  A "panel-packed" (K, N) matrix is stored as consecutive
 * column panels of nr columns (nr = the table's nr_f / nr_d): panel p holds columns
 * p*nr .. p*nr+nr-1 as a contiguous (K, nr) row-major block, the last panel padded with zero
 * columns (fr_packed_size elements in all).
 */
#ifndef FR_KERNELS_H
#define FR_KERNELS_H

#include <stddef.h>

typedef ptrdiff_t fr_idx;

/* cell codes */
enum { FR_RNN_TANH = 0, FR_RNN_RELU = 1, FR_LSTM = 2, FR_GRU = 3, FR_RNN_LEAKY_RELU = 4,
       FR_LSTM_PEEPHOLE = 5, FR_GRU_RESET_BEFORE = 6 };
/* the negative slope of FR_RNN_LEAKY_RELU (fastrnn.cell_table.LEAKY_RELU_SLOPE) */
#define FR_LEAKY_RELU_SLOPE 0.01

#define FR_KERNEL_SIGNATURES(T, S)                                                            \
    /* C (M, N) += A (M, K) @ W, or C = A @ W (C not read) unless accumulate; W panel-packed,  \
       A read as given (no packing, no allocation: for the small products of a time step) */   \
    void (*gemm_##S)(fr_idx M, fr_idx N, fr_idx K, const T* A, fr_idx lda, const T* Wp, T* C,   \
                     fr_idx ldc, int accumulate);                                              \
    /* rows r0..r1 of C (M, N) (+)= op(A) @ B, B panel-packed; op(A) = A^T (A stored (K, M))  \
       if trans_a; C rows zeroed first unless accumulate.  Each element's bits depend on M, \
       K and its tile (rows from 0 in FR_MR), not on r0 and r1 */                              \
    void (*gemm_range_##S)(fr_idx M, fr_idx r0, fr_idx r1, fr_idx N, fr_idx K, const T* A,      \
                           fr_idx lda, int trans_a, const T* Bp, T* C, fr_idx ldc,             \
                           int accumulate);                                                     \
    /* C (M, N) += A (M, K) @ W^T, W (N, K) as given (PyTorch layout) */                       \
    void (*dot_gemm_acc_##S)(fr_idx M, fr_idx N, fr_idx K, const T* A, fr_idx lda,              \
                             const T* W, fr_idx ldw, T* C, fr_idx ldc);                         \
    /* panel-pack W[rows]^T (K, G*nj): column g*nj + u is row g*H + u0 + u of W (K columns,    \
       rows ldw apart); only panels pfirst, pfirst + pstep, ... (the threads share the work) */ \
    void (*pack_panels_##S)(const T* W, fr_idx ldw, fr_idx K, fr_idx G, fr_idx H, fr_idx u0,    \
                            fr_idx nj, T* out, fr_idx pfirst, fr_idx pstep);                    \
    /* panel-pack B (K, N) itself (row stride ldb); panels pfirst, pfirst + pstep, ... */      \
    void (*pack_rows_##S)(const T* B, fr_idx ldb, fr_idx K, fr_idx N, T* out, fr_idx pfirst,    \
                          fr_idx pstep);                                                        \
    /* gate math of one row of one unit block of nj units.  With xin NULL, rec holds the       \
       pre-activations [gate 0 | gate 1 | ...] (each nj wide; GRU: r, z, h W_hn^T + b_hn,      \
       x W_in^T + b_in; FR_GRU_RESET_BEFORE: r, z, (r * h) W_hn^T + b_hn, x W_in^T + b_in).     \
       With xin (the row's input projection) rec holds the recurrent products alone and gate   \
       k's pre-activation is rec[k*nj + j] + xin[k*gs + j] + bias[k*gs + j] (GRU: the n slot    \
       is h W_hn^T, + bhn[j]; the n input term xin[2gs + j] + bias[2gs + j]; not              \
       FR_GRU_RESET_BEFORE).  rec is overwritten with the activations (GRU: r, z, n); h_prev   \
       (GRU) / c (LSTM, updated in place) and h_out are the block's units; hn_out (GRU, may be \
       NULL) receives the h W_hn^T + b_hn term; peep (FR_LSTM_PEEPHOLE) the block's peephole   \
       weights p_i at peep[j], p_f at peep[gs + j], p_o at peep[2gs + j] */                    \
    void (*gates_##S)(int cell, T* rec, fr_idx nj, const T* xin, const T* bias, const T* bhn,   \
                      fr_idx gs, const T* h_prev, T* c, T* h_out, T* hn_out, const T* peep);   \
    /* the engine's activations over an array (for tests of their error bounds) */             \
    void (*tanh_##S)(const T* x, T* out, fr_idx n);                                            \
    void (*sigmoid_##S)(const T* x, T* out, fr_idx n);

typedef struct fr_kernels {
    const char* name;       /* "baseline", "avx2", "avx512", "neon" */
    int vector_bytes;       /* bytes of one vector register */
    int mr, nv;             /* register tile: rows x vectors */
    fr_idx nr_f, nr_d;      /* panel width (columns) of packed float32 / float64 matrices */
    FR_KERNEL_SIGNATURES(float, f)
    FR_KERNEL_SIGNATURES(double, d)
} fr_kernels_t;

/* elements of a (K, N) matrix panel-packed with panel width nr */
static inline fr_idx fr_packed_size(fr_idx K, fr_idx N, fr_idx nr) {
    return K * ((N + nr - 1) / nr) * nr;
}

/* Ask for the cache lines of p[0 .. bytes) ahead of their use (a hint: no fault, no effect on
   results).  The time loop reads each step's rows of the input projection from rows T apart,
   too many streams for the hardware prefetcher: it asks for the next step's while the
   recurrent GEMM of this one runs. */
#if defined(__GNUC__) || defined(__clang__)
#  define FR_PREFETCH_READ(p) __builtin_prefetch((p), 0, 3)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#  include <xmmintrin.h>
#  define FR_PREFETCH_READ(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
#else
#  define FR_PREFETCH_READ(p) ((void)0)
#endif
static inline void fr_prefetch(const void* p, fr_idx bytes) {
    const char* c = (const char*)p;
    for (fr_idx o = 0; o < bytes; o += 64) FR_PREFETCH_READ(c + o);
    if (bytes > 0) FR_PREFETCH_READ(c + bytes - 1);
}

/* ---- fr_runtime.c (baseline code) ---- */

/* the tables compiled into this build, best first, NULL-terminated */
const fr_kernels_t* const* fr_compiled_tables(void);
/* 1 if this CPU (and its OS) can run the table's instructions */
int fr_cpu_can_run(const fr_kernels_t* k);
/* the best table this CPU can run */
const fr_kernels_t* fr_best_table(void);

/* flush denormals to zero (and treat denormal inputs as zero) in this thread; returns the
   previous control word for fr_ftz_exit */
unsigned long fr_ftz_enter(void);
void fr_ftz_exit(unsigned long old);

/* A sense-reversing barrier for n threads: a spin of FR_SPIN_WAIT seconds (none when n is more
   than the CPUs online), then the core is yielded, so that a waiting thread on an
   oversubscribed machine hands its core to the one it waits for.  Each thread passes its own
   fr_member_t (fr_member_init once at the start of its share). */
#define FR_SPIN_WAIT 50e-6
typedef struct { int count; int sense; int stalled; int preempted; int late; double t_start; } fr_barrier_t;
typedef struct { int sense; double t_first; double t_last; long preemptions; } fr_member_t;
void fr_barrier_init(fr_barrier_t* b);
/* Work items handed out on demand: each call returns the next unclaimed index of *next
   (0, 1, 2, ...; set *next to 0 before the team starts), so that a thread held up by another
   process takes fewer items and the others take the rest. */
int fr_claim(int* next);
void fr_member_init(fr_member_t* m);
void fr_barrier_wait(fr_barrier_t* b, int n, fr_member_t* m);
/* the last barrier of a region (the join): also notes whether this thread was preempted */
void fr_team_leave(fr_barrier_t* b, int n, fr_member_t* m);

/* Contention: another process busy on the cores that the engine's threads run on.  A thread
   that waits at a barrier longer than FR_CONTENDED_WAIT seconds, and longer than it worked
   since its last barrier, marks the region stalled; a thread that the OS preempted during the
   region (an involuntary context switch, counted per thread on Linux; elsewhere assumed)
   marks it preempted, and a thread whose share began more than FR_CONTENDED_WAIT seconds after
   the region did (it waited for a core: short regions of ~1 ms were held up that way beside a
   busy process, with no preemption counted) marks it late.  A region stalled, and preempted or
   late, was held up by another process; after FR_CONTENDED_REGIONS such regions within
   FR_CONTENDED_WINDOW seconds (whatever regions ran between them: a call's short regions may
   run clean beside a busy process while its long one stalls) the engine runs on one thread for
   FR_CONTENDED_HOLD seconds (fr_contended), instead of waiting a scheduler time slice at every
   synchronisation; for FR_RECONTENDED_FOR seconds after that hold, one contended region is
   enough to switch again (the load that was there is likely still there).  Regions that start
   less than FR_WAKING seconds after an idle pause (no region for FR_IDLE seconds, the hold's
   parts on one thread counting as regions) never count: then the cores are waking up, and on
   these virtual machines the regions of the next ~40 ms can stall for milliseconds (measured:
   after 20 ms or more of idleness, 4 and 12 ms in the next two regions, and stalls in a
   training step up to 40 ms after the pause, the engine's threads preempting each other while
   the scheduler spreads them over the cores).  fr_barrier_init starts a region, each thread
   ends its share with fr_team_leave, and fr_team_done is called once after the region; it
   returns 1 if the region counted as contended. */
#define FR_CONTENDED_WAIT 2e-3
#define FR_CONTENDED_REGIONS 3
#define FR_CONTENDED_WINDOW 0.5
#define FR_CONTENDED_HOLD 1.0
#define FR_RECONTENDED_FOR 2.0
#define FR_IDLE 5e-3
#define FR_WAKING 60e-3
double fr_now(void);               /* monotonic clock, seconds */
long fr_thread_preemptions(void);  /* this thread's involuntary context switches, or -1 */
int fr_team_done(const fr_barrier_t* b);
/* after fr_team_done: whether the region began in the waking window after an idle pause */
int fr_region_waking(const fr_barrier_t* b);
int fr_contended(void);
void fr_note_contention(double hold_seconds);

#endif

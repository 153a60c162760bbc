/* One instruction-set target of the kernels.
 *
 * setup.py compiles this file once per target, each time with that target's compiler flags
 * and -DFR_TARGET=<name> (baseline, avx2, avx512, neon); the result exports one symbol, the
 * table fr_kernels_<name> (fr_kernels.h).  Everything else here is static, so the copies never
 * meet.  The vector type is one register of the target (FR_VBYTES, fr_config.h): GCC/Clang
 * vector extensions where the compiler has them, a struct of lanes otherwise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fr_config.h"
#include "fr_kernels.h"

#define FR_CAT_(a, b) a##b
#define FR_CAT(a, b) FR_CAT_(a, b)
#define FR_STR_(a) #a
#define FR_STR(a) FR_STR_(a)

#ifndef FR_TARGET
#  error "compile with -DFR_TARGET=<target> (see setup.py)"
#endif
#define FR_ID_baseline 0
#define FR_ID_avx2 1
#define FR_ID_avx512 2
#define FR_ID_neon 3
#if FR_CAT(FR_ID_, FR_TARGET) != FR_TARGET_ID
#  error "the compiler flags do not enable the instruction set that FR_TARGET names"
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#  define FR_INLINE static __forceinline
#  define FR_RESTRICT __restrict
#  define FR_UNROLL
#  define FR_THREAD_LOCAL __declspec(thread)
#else
#  define FR_INLINE inline __attribute__((always_inline))
#  define FR_RESTRICT __restrict__
#  define FR_THREAD_LOCAL _Thread_local
#  if defined(__clang__)
#    define FR_UNROLL _Pragma("unroll")
#  else
#    define FR_UNROLL _Pragma("GCC unroll 64")
#  endif
#endif

#if defined(__GNUC__) || defined(__clang__)
/* ---- GCC / Clang vector extensions: V is one register ---- */
#  define FR_VTYPES(T, S)                                                                       \
    typedef T fr_v_##S __attribute__((vector_size(FR_VBYTES)));                                  \
    typedef T fr_vu_##S __attribute__((vector_size(FR_VBYTES), aligned(sizeof(T))));
FR_VTYPES(float, f)
FR_VTYPES(double, d)
#  define FR_VLOAD(v, p) ((v) = *(const FR_CAT(fr_vu_, FR_S)*)(p))
#  define FR_VSTORE(p, v) (*(FR_CAT(fr_vu_, FR_S)*)(p) = (v))
#  define FR_VZERO(VT) ((VT){0})
#  define FR_VMADD_S(acc, s, v) ((acc) += (s) * (v))
#  define FR_VMADD_V(acc, a, b) ((acc) += (a) * (b))
#  define FR_VADD(acc, v) ((acc) += (v))
#  define FR_VLANE(v, i) ((v)[i])
/* Keep a loaded vector in a register: without this GCC folds each use of a weight vector into
   its FMA as a memory operand, and a 4 x 4 tile issues 20 loads per 16 FMAs (load-bound at
   about half the FMA rate, measured on Zen 5). */
#  if defined(__x86_64__) || defined(__i386__)
#    define FR_KEEP(v) __asm__("" : "+v"(v))
#  elif defined(__aarch64__)
#    define FR_KEEP(v) __asm__("" : "+w"(v))
#  else
#    define FR_KEEP(v) ((void)0)
#  endif
#  define FR_PREFETCH(p) __builtin_prefetch((p), 1, 3)
#  define FR_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#  if defined(__clang__) || __GNUC__ >= 12
#    define FR_HAVE_SHUFFLE 1
#  else
#    define FR_HAVE_SHUFFLE 0
#  endif
#else
/* ---- any other C compiler: a struct of lanes, loops the compiler may vectorise ---- */
#  define FR_VTYPES(T, S) typedef struct { T e[FR_VBYTES / sizeof(T)]; } fr_v_##S;
FR_VTYPES(float, f)
FR_VTYPES(double, d)
#  define FR_NLANES(v) ((int)(sizeof((v).e) / sizeof((v).e[0])))
#  define FR_VLOAD(v, p) memcpy(&(v), (p), sizeof(v))
#  define FR_VSTORE(p, v) memcpy((p), &(v), sizeof(v))
#  define FR_VZERO(VT) fr_vzero_##VT()
static fr_v_f fr_vzero_fr_v_f(void) { fr_v_f v; memset(&v, 0, sizeof v); return v; }
static fr_v_d fr_vzero_fr_v_d(void) { fr_v_d v; memset(&v, 0, sizeof v); return v; }
#  define FR_VMADD_S(acc, s, v) do { for (int l_ = 0; l_ < FR_NLANES(acc); ++l_) (acc).e[l_] += (s) * (v).e[l_]; } while (0)
#  define FR_VMADD_V(acc, a, b) do { for (int l_ = 0; l_ < FR_NLANES(acc); ++l_) (acc).e[l_] += (a).e[l_] * (b).e[l_]; } while (0)
#  define FR_VADD(acc, v) do { for (int l_ = 0; l_ < FR_NLANES(acc); ++l_) (acc).e[l_] += (v).e[l_]; } while (0)
#  define FR_VLANE(v, i) ((v).e[i])
#  define FR_KEEP(v) ((void)0)
#  define FR_PREFETCH(p) ((void)0)
#  define FR_PREFETCH_L2(p) ((void)0)
#  define FR_HAVE_SHUFFLE 0
#endif

/* ---- in-register transpose of a VL x VL block (pack_panels) ----
   Stage h (VL/2, ..., 1) combines rows i and i + h (i without bit h) by two-input shuffles
   taking alternate blocks of h lanes; after the last stage row j holds lane j of every input. */
#if FR_VBYTES == 64
#  define FR_TRANSPOSE_f FR_TRANSPOSE_16
#  define FR_TRANSPOSE_d FR_TRANSPOSE_8
#elif FR_VBYTES == 32
#  define FR_TRANSPOSE_f FR_TRANSPOSE_8
#  define FR_TRANSPOSE_d FR_TRANSPOSE_4
#else
#  define FR_TRANSPOSE_f FR_TRANSPOSE_4
#  define FR_TRANSPOSE_d FR_TRANSPOSE_2
#endif
#define FR_LO(h, p, n) (((p) / (2 * (h))) * 2 * (h) + (p) % (h) + (((p) / (h)) % 2 ? (n) : 0))
#define FR_HI(h, p, n) (FR_LO(h, p, n) + (h))
#define FR_IDX2(F, h, n) F(h, 0, n), F(h, 1, n)
#define FR_IDX4(F, h, n) FR_IDX2(F, h, n), F(h, 2, n), F(h, 3, n)
#define FR_IDX8(F, h, n) FR_IDX4(F, h, n), F(h, 4, n), F(h, 5, n), F(h, 6, n), F(h, 7, n)
#define FR_IDX16(F, h, n) FR_IDX8(F, h, n), F(h, 8, n), F(h, 9, n), F(h, 10, n), F(h, 11, n), \
                          F(h, 12, n), F(h, 13, n), F(h, 14, n), F(h, 15, n)
#define FR_STAGE(r, n, h)                                                                        \
    do {                                                                                         \
        __typeof__(r[0]) t_[n];                                                                  \
        FR_UNROLL for (int i = 0; i < n; ++i) {                                                  \
            if (i & (h)) continue;                                                               \
            t_[i] = __builtin_shufflevector(r[i], r[i + (h)], FR_IDX##n(FR_LO, h, n));           \
            t_[i + (h)] = __builtin_shufflevector(r[i], r[i + (h)], FR_IDX##n(FR_HI, h, n));     \
        }                                                                                        \
        FR_UNROLL for (int i = 0; i < n; ++i) r[i] = t_[i];                                      \
    } while (0)
#define FR_TRANSPOSE_16(r) do { FR_STAGE(r, 16, 8); FR_STAGE(r, 16, 4); FR_STAGE(r, 16, 2); \
                                FR_STAGE(r, 16, 1); } while (0)
#define FR_TRANSPOSE_8(r) do { FR_STAGE(r, 8, 4); FR_STAGE(r, 8, 2); FR_STAGE(r, 8, 1); } while (0)
#define FR_TRANSPOSE_4(r) do { FR_STAGE(r, 4, 2); FR_STAGE(r, 4, 1); } while (0)
#define FR_TRANSPOSE_2(r) FR_STAGE(r, 2, 1)

/* ---- activations ----
   float32 tanh: an odd [9/8] rational approximation x P(x^2) / Q(x^2) on |x| <= 9 (clamped
   outside, the result clamped to [-1, 1], NaN propagates), fitted for this project
   (Lawson-weighted least squares): measured max absolute error 3.1e-7 on a dense float32 grid
   (documented bound 5e-7).  sigmoid(x) = 0.5 tanh(x / 2) + 0.5 (bound 4e-7).  float64: libm. */
/* x P(x^2) / Q(x^2), for a float or a float vector x (u = x * x) */
#define FR_TANH_RATIONAL(x, u)                                                                    \
    ((x) * ((((1.318422325100594e-08f * (u) + 2.0471829302420864e-05f) * (u)                   \
              + 0.0034865817761282497f) * (u) + 0.13373197582110807f) * (u) + 0.999999906334163f) \
     / ((((7.702663020739875e-07f * (u) + 0.0003271385226798963f) * (u)                         \
          + 0.02584197869851762f) * (u) + 0.4670649444421864f) * (u) + 1.0f))
static FR_INLINE float fr_tanh_f(float x) {
    x = x > 9.0f ? 9.0f : x;            /* comparisons with NaN are false: NaN propagates */
    x = x < -9.0f ? -9.0f : x;
    float r = FR_TANH_RATIONAL(x, x * x);
    r = r > 1.0f ? 1.0f : r;
    return r < -1.0f ? -1.0f : r;
}
static FR_INLINE float fr_sigmoid_f(float x) { return 0.5f * fr_tanh_f(0.5f * x) + 0.5f; }

/* The same on whole vectors, where the target has a min/max instruction that returns its
   second operand when either is NaN (x86 minps/maxps; NEON's return NaN): each clamp is one
   instruction.  The compilers turn the scalar clamps above, vectorised, into compares and
   blends (7 instructions for the two clamps of the input), which made the LSTM gate math
   about twice as slow.  FR_VACT_F is 0 where there is none (the scalar loops then serve). */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__SSE2__) || defined(__ARM_NEON))
#  define FR_VACT_F 1
#  if defined(__ARM_NEON)
#    include <arm_neon.h>
#    define FR_VMIN_F(a, b) ((fr_v_f)vminq_f32((float32x4_t)(a), (float32x4_t)(b)))
#    define FR_VMAX_F(a, b) ((fr_v_f)vmaxq_f32((float32x4_t)(a), (float32x4_t)(b)))
#  else
#    include <immintrin.h>
#    if FR_VBYTES == 64
#      define FR_VMIN_F(a, b) ((fr_v_f)_mm512_min_ps((__m512)(a), (__m512)(b)))
#      define FR_VMAX_F(a, b) ((fr_v_f)_mm512_max_ps((__m512)(a), (__m512)(b)))
#    elif FR_VBYTES == 32
#      define FR_VMIN_F(a, b) ((fr_v_f)_mm256_min_ps((__m256)(a), (__m256)(b)))
#      define FR_VMAX_F(a, b) ((fr_v_f)_mm256_max_ps((__m256)(a), (__m256)(b)))
#    else
#      define FR_VMIN_F(a, b) ((fr_v_f)_mm_min_ps((__m128)(a), (__m128)(b)))
#      define FR_VMAX_F(a, b) ((fr_v_f)_mm_max_ps((__m128)(a), (__m128)(b)))
#    endif
#  endif
static FR_INLINE fr_v_f fr_vtanh_f(fr_v_f x) {
    const fr_v_f lim = (fr_v_f){0} + 9.0f, one = (fr_v_f){0} + 1.0f;
    x = FR_VMAX_F(-lim, FR_VMIN_F(lim, x));     /* min(a, x), max(a, x): NaN x propagates */
    const fr_v_f r = FR_TANH_RATIONAL(x, x * x);
    return FR_VMAX_F(-one, FR_VMIN_F(one, r));
}
static FR_INLINE fr_v_f fr_vsigmoid_f(fr_v_f x) { return 0.5f * fr_vtanh_f(0.5f * x) + 0.5f; }
#else
#  define FR_VACT_F 0
#endif
static FR_INLINE double fr_tanh_d(double x) { return tanh(x); }
static FR_INLINE double fr_sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---- the kernels, once per floating type ---- */
#define FR_T float
#define FR_S f
#define FR_VACT FR_VACT_F
#include "fr_kernels_impl.h"
#undef FR_T
#undef FR_S
#undef FR_VACT
#define FR_T double
#define FR_S d
#define FR_VACT 0   /* float64: libm, element by element */
#include "fr_kernels_impl.h"
#undef FR_T
#undef FR_S
#undef FR_VACT

#define FR_TABLE_ENTRIES(S)                                                                      \
    gemm_##S, gemm_range_##S, dot_gemm_acc_##S, pack_panels_##S, pack_rows_##S, gates_##S,   \
    tanh_arr_##S, sigmoid_arr_##S

const fr_kernels_t FR_CAT(fr_kernels_, FR_TARGET) = {
    FR_TARGET_NAME, FR_VBYTES, FR_MR, FR_NV,
    FR_NV * (FR_VBYTES / (fr_idx)sizeof(float)), FR_NV * (FR_VBYTES / (fr_idx)sizeof(double)),
    FR_TABLE_ENTRIES(f),
    FR_TABLE_ENTRIES(d),
};

/* Blocking constants of the compiled kernels, one set per instruction-set target.
 *
 * fr_isa.c is compiled once per target with that target's flags (setup.py: TARGETS); the
 * compiler's predefined macros (__AVX512F__, __AVX2__, __ARM_NEON, ...) then select one block
 * below.  A register tile is FR_MR rows x FR_NV vectors of FR_VBYTES bytes: its accumulators,
 * the FR_NV weight vectors loaded per k and one broadcast must fit the register file, or the
 * compiler spills (BLIS's shapes are the guide: AVX2 sgemm 6x16, AVX-512 6x64 / 4x64, ARMv8
 * 8x12).  The dot-product tile (un-packed weights) keeps FR_DR x FR_DC accumulators plus
 * FR_DR + FR_DC operand vectors.  FR_KC_BYTES: one K block of a weight panel (FR_KC rows x
 * the panel width) is meant to stay in L1; FR_MC (default 128): rows of A per block of a large
 * GEMM (packed: FR_MC x FR_KC elements meant to stay in L2), a multiple of FR_MR.
 */
#ifndef FR_CONFIG_H
#define FR_CONFIG_H

#if defined(__AVX512F__)
/* 32 zmm: 16 accumulators + 4 weights + 1 broadcast (4 x 64 floats) */
#  define FR_TARGET_NAME "avx512"
#  define FR_TARGET_ID 2
#  define FR_VBYTES 64
#  define FR_MR 4
#  define FR_NV 4
#  define FR_DR 4
#  define FR_DC 4
#  define FR_KC_BYTES 32768
#  define FR_MC 64     /* Xeon (family 6 model 207), with W's next block prefetched: one thread
                          512x2048x2048 +10%, 1600x2048x512 +6%, 3200x1024x256 +6% against 128;
                          two threads 2-5% faster, the forward even */
#elif defined(__AVX2__) && (defined(__FMA__) || defined(_MSC_VER))   /* MSVC: /arch:AVX2 */
/* 16 ymm: 12 accumulators + 2 weights + 1 broadcast (6 x 16 floats, BLIS's haswell sgemm) */
#  define FR_TARGET_NAME "avx2"
#  define FR_TARGET_ID 1
#  define FR_VBYTES 32
#  define FR_MR 6
#  define FR_NV 2
#  define FR_DR 3
#  define FR_DC 3
#  define FR_KC_BYTES 32768   /* 512 rows of a float panel: 3-5% faster than 256 (Zen 4) */
#  define FR_MC 144    /* 24 tiles of 6 rows (128 left a 2-row tile per block: 2.5-7% slower) */
#elif defined(__aarch64__) || defined(_M_ARM64)
/* 32 q registers with FMA: 24 accumulators + 3 weights + 1 broadcast (8 x 12 floats) */
#  define FR_TARGET_NAME "neon"
#  define FR_TARGET_ID 3
#  define FR_VBYTES 16
#  define FR_MR 8
#  define FR_NV 3
#  define FR_DR 4
#  define FR_DC 4
#  define FR_KC_BYTES 16384
#else
/* x86-64 baseline (SSE2) or any other CPU: 16 registers of 16 bytes, no FMA, so a product
   needs a temporary: 8 accumulators + 2 weights + 1 broadcast + 1 temporary (4 x 8 floats) */
#  define FR_TARGET_NAME "baseline"
#  define FR_TARGET_ID 0
#  define FR_VBYTES 16
#  define FR_MR 4
#  define FR_NV 2
#  define FR_DR 2
#  define FR_DC 2
#  define FR_KC_BYTES 16384
#endif

#ifndef FR_MC
#  define FR_MC 128
#endif
#if FR_MC % FR_MR != 0
#  error "FR_MC must be a multiple of FR_MR (a block of whole tiles)"
#endif

/* independent FMA chains a tile needs to hide the FMA latency (2 units x 4 cycles): tiles
   with fewer accumulators split the k loop into several accumulator sets */
#define FR_CHAINS 8

#endif

/* The arithmetic kernels, written once for one floating type.
 *
 * Included by fr_isa.c twice per target, with FR_T = float, FR_S = f and FR_T = double,
 * FR_S = d; fr_isa.c defines the vector type V (FR_VBYTES bytes: one register of the target),
 * its loads, stores and FR_KEEP (keep a vector in a register), and FR_UNROLL.  Blocking
 * constants come from fr_config.h.  See fr_kernels.h for what each kernel computes.
 */
#define FN(name) FR_CAT(name##_, FR_S)
#define V FR_CAT(fr_v_, FR_S)
#define VL ((fr_idx)(FR_VBYTES / sizeof(FR_T)))   /* lanes of one vector */
#define NR (FR_NV * VL)                           /* panel width */
#define KC ((fr_idx)(FR_KC_BYTES / (NR * sizeof(FR_T))))   /* rows of a K block */
#define MC ((fr_idx)FR_MC)                        /* rows of A per block of gemm_range */
#define LINE ((fr_idx)(64 / sizeof(FR_T)))        /* elements of a 64-byte cache line */
/* accumulators of a tile: the full tile, or FR_CHAINS for the small ones split in k */
#define FR_ACC (FR_MR * FR_NV > FR_CHAINS ? FR_MR * FR_NV : FR_CHAINS)

static FR_INLINE V FN(vld)(const FR_T* p) { V v; FR_VLOAD(v, p); return v; }
static FR_INLINE void FN(vst)(FR_T* p, V v) { FR_VSTORE(p, v); }

/* ---------------------------------------------------------------------------------------------
 * Register tile: c (R rows, row stride ldc, NVV vectors wide) += A[R rows, k0:k1] @ P[k0:k1, :]
 * with P a column panel (row stride NR) and element (i, k) of A at A[i*lda + k*aks].  R, NVV and
 * KS are compile-time constants at every call (FR_INLINE + constant arguments), so the arrays
 * below become named registers.  KS accumulator sets take alternate k (a tile with few
 * accumulators needs several independent chains to hide the FMA latency).  Step k also
 * prefetches line k of pf into L2, for k < npf (the caller's next block of W, see gemm_core).
 * ------------------------------------------------------------------------------------------- */
static FR_INLINE void FN(tile)(const int R, const int NVV, const int KS, fr_idx k0, fr_idx k1,
                               const FR_T* A, fr_idx lda, fr_idx aks, const FR_T* pan,
                               FR_T* c, fr_idx ldc, const int add_c, const FR_T* pf, fr_idx npf) {
    /* accumulator (s, i, j) is acc[(s * R + i) * NVV + j]: KS * R * NVV <= FR_ACC of them */
    V acc[FR_ACC];
    fr_idx k = k0;
    /* C is added at the end, not loaded first: its rows (often out of cache, ldc apart) are
       prefetched now and arrive while the k loop runs, as in BLIS's micro-kernels */
    FR_UNROLL for (int i = 0; i < R; ++i) {
        FR_PREFETCH(c + i * ldc);
        FR_PREFETCH(c + i * ldc + NVV * VL - 1);
        FR_UNROLL for (int j = 0; j < NVV; ++j)
            FR_UNROLL for (int s = 0; s < KS; ++s) acc[(s * R + i) * NVV + j] = FR_VZERO(V);
    }
    for (; k + KS <= k1; k += KS) {
        FR_UNROLL for (int s = 0; s < KS; ++s) {
            if (k + s < npf) FR_PREFETCH_L2(pf + (k + s) * LINE);
            const FR_T* w = pan + (k + s) * NR;
            const FR_T* a = A + (k + s) * aks;
            V wv[FR_NV];
            FR_UNROLL for (int j = 0; j < NVV; ++j) { wv[j] = FN(vld)(w + j * VL); FR_KEEP(wv[j]); }
            FR_UNROLL for (int i = 0; i < R; ++i) {
                const FR_T ai = a[i * lda];
                FR_UNROLL for (int j = 0; j < NVV; ++j)
                    FR_VMADD_S(acc[(s * R + i) * NVV + j], ai, wv[j]);
            }
        }
    }
    for (; k < k1; ++k) {
        const FR_T* w = pan + k * NR;
        const FR_T* a = A + k * aks;
        FR_UNROLL for (int i = 0; i < R; ++i) {
            const FR_T ai = a[i * lda];
            FR_UNROLL for (int j = 0; j < NVV; ++j)
                FR_VMADD_S(acc[i * NVV + j], ai, FN(vld)(w + j * VL));
        }
    }
    FR_UNROLL for (int i = 0; i < R; ++i)
        FR_UNROLL for (int j = 0; j < NVV; ++j) {
            FR_UNROLL for (int s = 1; s < KS; ++s)
                FR_VADD(acc[i * NVV + j], acc[(s * R + i) * NVV + j]);
            if (add_c) FR_VADD(acc[i * NVV + j], FN(vld)(c + i * ldc + j * VL));
            FN(vst)(c + i * ldc + j * VL, acc[i * NVV + j]);
        }
}

/* accumulator sets for a tile of r rows x nv vectors */
#define FR_KSETS(r, nv) ((r) * (nv) >= FR_CHAINS ? 1 : FR_CHAINS / ((r) * (nv)))

/* one tile of r (1..FR_MR) rows and nv (1..FR_NV) vectors, dispatched to its constant shape */
static void FN(tile_any)(int r, int nv, fr_idx k0, fr_idx k1, const FR_T* A, fr_idx lda,
                         fr_idx aks, const FR_T* pan, FR_T* c, fr_idx ldc, int add_c,
                         const FR_T* pf, fr_idx npf) {
#define FR_TILE_CASE(RR, NN)                                                                     \
    case (RR) * 16 + (NN):                                                                       \
        FN(tile)(RR, NN, FR_KSETS(RR, NN), k0, k1, A, lda, aks, pan, c, ldc, add_c, pf, npf);    \
        return;
#if FR_NV >= 2
#  define FR_TILE_CASE2(RR) FR_TILE_CASE(RR, 2)
#else
#  define FR_TILE_CASE2(RR)
#endif
#if FR_NV >= 3
#  define FR_TILE_CASE3(RR) FR_TILE_CASE(RR, 3)
#else
#  define FR_TILE_CASE3(RR)
#endif
#if FR_NV >= 4
#  define FR_TILE_CASE4(RR) FR_TILE_CASE(RR, 4)
#else
#  define FR_TILE_CASE4(RR)
#endif
#define FR_TILE_ROW(RR) FR_TILE_CASE(RR, 1) FR_TILE_CASE2(RR) FR_TILE_CASE3(RR) FR_TILE_CASE4(RR)
    switch (r * 16 + nv) {
        FR_TILE_ROW(1)
#if FR_MR >= 2
        FR_TILE_ROW(2)
#endif
#if FR_MR >= 3
        FR_TILE_ROW(3)
#endif
#if FR_MR >= 4
        FR_TILE_ROW(4)
#endif
#if FR_MR >= 5
        FR_TILE_ROW(5)
#endif
#if FR_MR >= 6
        FR_TILE_ROW(6)
#endif
#if FR_MR >= 7
        FR_TILE_ROW(7)
#endif
#if FR_MR >= 8
        FR_TILE_ROW(8)
#endif
        default: return;
    }
#undef FR_TILE_ROW
#undef FR_TILE_CASE
#undef FR_TILE_CASE2
#undef FR_TILE_CASE3
#undef FR_TILE_CASE4
}

/* A product's K block: one block when its M rows are one tile (which reuses no block of W:
   each panel streamed whole; measured: KC blocks were 6-11% slower in a forward step of 2-4
   rows at H = 600-768, 7% in a 4-row GEMM with K = 3200), else KC.  Decided by the rows of the
   whole product, never those of a thread's share: a block's partial sums pass through C, so
   that would make C's bits depend on the thread count. */
static FR_INLINE fr_idx FN(k_block)(fr_idx M, fr_idx K) { return M <= FR_MR ? K : KC; }

/* A micro-panels only for K above this: below, the copy costs more than it saves (attention's
   batched products of 64 x 64 x 32 and 64 x 32 x 64: 9-27% faster without, Zen 4 AVX2) */
#define APACK_MIN_K 64

/* ---------------------------------------------------------------------------------------------
 * Register-tiled GEMM on a panel-packed W:  C (M, N) += op(A) (M, K) @ W (K, N), or C = ...
 * unless accumulate (the first K block then writes C without reading it); K in blocks of kc.
 * Loop order: K blocks of KC rows (a KC x NR block of a panel stays in L1) > panels > tiles of
 * FR_MR rows (the rows left over: one tile of fewer rows).  Each element of C is summed in an
 * order fixed by K, kc and its tile's shape alone: callers that split the rows between threads
 * at multiples of FR_MR get the same bits on any number of threads.  The last panel's ragged
 * columns go through a small buffer of C rows NR wide, with a tile only as many vectors wide as
 * needed.
 * With apack (FR_MR < M <= MC; gemm_range gives one when K > APACK_MIN_K) the tiles' rows of
 * A are first copied into FR_MR-row micro-panels per K block, so that a tile reads its FR_MR
 * values from one place instead of FR_MR rows (or, transposed, columns) lda apart, which with
 * lda a multiple of 1 KiB all fall in one L1 set.  Element (m, k) of A is at A[m * ars + k * aks].
 * ------------------------------------------------------------------------------------------- */
static void FN(gemm_core)(fr_idx M, fr_idx N, fr_idx K, const FR_T* A, fr_idx ars, fr_idx aks,
                          const FR_T* Wp, FR_T* C, fr_idx ldc, FR_T* apack, int accumulate,
                          fr_idx kc) {
    /* A product of one tile of rows (a forward step of a few sequences) reads each panel
       once; a thread's consecutive ones alternate the order of the panels, so that the panels
       it read last are read first, while still in cache (when W a little exceeds L1 or L2:
       F1's 64 KiB W_hh, F5's 1 MiB on one thread: 2-8% faster).  The panels are independent:
       the same bits in either order. */
    static FR_THREAD_LOCAL int backwards = 0;
    FR_T ctile[FR_MR * NR];
    const fr_idx nfull = (N / NR) * NR, nr = N - nfull, ntile = M / FR_MR;
    const fr_idx npanels = nfull / NR + (nr != 0);
    const int nv_edge = (int)((nr + VL - 1) / VL);
    const int pa = apack != NULL && M > FR_MR && M <= MC;
    const fr_idx tiles = (M + FR_MR - 1) / FR_MR;
    int reverse = 0;
    if (M <= FR_MR) reverse = backwards = !backwards;
    for (fr_idx k0 = 0; k0 < K; k0 += kc) {
        const fr_idx k1 = k0 + kc < K ? k0 + kc : K, kn = k1 - k0;
        const int add_c = accumulate || k0 > 0;   /* else the first K block writes C */
        if (pa) {
            if (aks == 1) {         /* A row-major: read each row's K block in order */
                for (fr_idx t = 0; t < ntile; ++t)
                    for (int i = 0; i < FR_MR; ++i) {
                        const FR_T* src = A + (t * FR_MR + i) * ars + k0;
                        FR_T* dst = apack + t * FR_MR * kn + i;
                        for (fr_idx k = 0; k < kn; ++k) dst[k * FR_MR] = src[k];
                    }
            } else {                /* A transposed: a K row holds consecutive m */
                for (fr_idx k = 0; k < kn; ++k) {
                    const FR_T* src = A + (k0 + k) * aks;
                    for (fr_idx t = 0; t < ntile; ++t)
                        for (int i = 0; i < FR_MR; ++i)
                            apack[t * FR_MR * kn + k * FR_MR + i] = src[(t * FR_MR + i) * ars];
                }
            }
        }
        for (fr_idx q = 0; q < npanels; ++q) {
            const fr_idx j0 = (reverse ? npanels - 1 - q : q) * NR;
            const int edge = j0 == nfull;
            const FR_T* pan = Wp + K * j0 + k0 * NR;
            /* the block read next (the next panel's, or the next K block's first) is fetched
               into L2 while this one's tiles run, one line a k step, tile t taking lines
               t * kn on: a W larger than L2 comes from L3, and the first tile of a block would
               otherwise wait for it.  Measured on a Xeon (family 6 model 207, 2 MiB L2),
               AVX-512, one thread: a 16-row product with a 4 MiB W (a forward step) +35-45%,
               32 rows +15-20%, 2048^3 +9%; W in L2 even.  With one tile (then M <= FR_MR:
               kc = K, whole panels in turn) the hardware's stream prefetch serves. */
            const FR_T* next = NULL;
            fr_idx next_rows = 0;
            if (tiles > 1) {   /* M > FR_MR: the panels in order */
                if (q + 1 < npanels) {
                    next = Wp + K * (j0 + NR) + k0 * NR;
                    next_rows = kn;
                } else if (k1 < K) {
                    next = Wp + k1 * NR;
                    next_rows = (k1 + kc < K ? k1 + kc : K) - k1;
                }
            }
            const fr_idx next_lines = next_rows * NR / LINE;
            for (fr_idx m = 0; m < M; m += FR_MR) {
                const int r = (int)(M - m < FR_MR ? M - m : FR_MR);
                const fr_idx l0 = (m / FR_MR) * kn;
                const fr_idx npf = next_lines > l0 ? (next_lines - l0 < kn ? next_lines - l0 : kn) : 0;
                const FR_T* pf = npf > 0 ? next + l0 * LINE : NULL;
                const FR_T* a;
                fr_idx lda, ak;
                if (pa && r == FR_MR) {
                    a = apack + m * kn; lda = 1; ak = FR_MR;
                } else {
                    a = A + m * ars + k0 * aks; lda = ars; ak = aks;
                }
                if (!edge && pa && r == FR_MR) {
                    /* the common case: constant strides, so a tile's FR_MR values of A are
                       one address plus constant offsets */
                    FN(tile)(FR_MR, FR_NV, 1, 0, kn, a, 1, FR_MR, pan, C + m * ldc + j0, ldc,
                             add_c, pf, npf);
                } else if (!edge) {
                    FN(tile_any)(r, FR_NV, 0, kn, a, lda, ak, pan, C + m * ldc + j0, ldc, add_c,
                                 pf, npf);
                } else {
                    if (add_c)
                        for (int i = 0; i < r; ++i)
                            memcpy(ctile + i * NR, C + (m + i) * ldc + nfull, nr * sizeof(FR_T));
                    FN(tile_any)(r, nv_edge, 0, kn, a, lda, ak, pan, ctile, NR, add_c, pf, npf);
                    for (int i = 0; i < r; ++i)
                        memcpy(C + (m + i) * ldc + nfull, ctile + i * NR, nr * sizeof(FR_T));
                }
            }
        }
    }
}

static void FN(gemm)(fr_idx M, fr_idx N, fr_idx K, const FR_T* A, fr_idx lda, const FR_T* Wp,
                     FR_T* C, fr_idx ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K > 0) FN(gemm_core)(M, N, K, A, lda, 1, Wp, C, ldc, NULL, accumulate, FN(k_block)(M, K));
    else if (!accumulate)
        for (fr_idx m = 0; m < M; ++m) memset(C + m * ldc, 0, N * sizeof(FR_T));
}

static void FN(gemm_range)(fr_idx M, fr_idx r0, fr_idx r1, fr_idx N, fr_idx K, const FR_T* A,
                           fr_idx lda, int trans_a, const FR_T* Bp, FR_T* C, fr_idx ldc,
                           int accumulate) {
    const fr_idx ars = trans_a ? 1 : lda, aks = trans_a ? lda : 1;
    FR_T* apack = NULL;
    if (r1 <= r0 || N <= 0) return;
    if (K <= 0) {   /* else the first K block writes C (no memset) unless accumulate */
        if (!accumulate)
            for (fr_idx r = r0; r < r1; ++r) memset(C + r * ldc, 0, N * sizeof(FR_T));
        return;
    }
    if (r1 - r0 > FR_MR && K > APACK_MIN_K)
        apack = (FR_T*)malloc(MC * (K < KC ? K : KC) * sizeof(FR_T));
    for (fr_idx m0 = r0; m0 < r1; m0 += MC) {
        const fr_idx m = r1 - m0 < MC ? r1 - m0 : MC;
        FN(gemm_core)(m, N, K, A + m0 * ars, ars, aks, Bp, C + m0 * ldc, ldc, apack, accumulate,
                      FN(k_block)(M, K));   /* the whole product's M, not the range's */
    }
    free(apack);
}

/* ---------------------------------------------------------------------------------------------
 * Dot-product GEMM on un-packed weights: C (M, N) += A (M, K) @ W^T, W (N, K).  No packing at
 * all, at the price of one horizontal sum per output: for large K where packing W per call
 * would cost a transpose of the whole matrix.  Tiles of FR_DR rows x FR_DC outputs (a block of
 * W reused from L1); rows and outputs left over one at a time.
 * ------------------------------------------------------------------------------------------- */
static FR_INLINE FR_T FN(hsum)(V v) {
    FR_T s = 0;
    FR_UNROLL for (int i = 0; i < (int)VL; ++i) s += FR_VLANE(v, i);
    return s;
}

static FR_INLINE void FN(dot_tile)(const int R, const int DC, fr_idx K, const FR_T* A,
                                   fr_idx lda, const FR_T* W, fr_idx ldw, FR_T* C, fr_idx ldc) {
    const fr_idx kv = K - K % VL;
    V s[FR_DR][FR_DC];
    FR_UNROLL for (int i = 0; i < R; ++i)
        FR_UNROLL for (int j = 0; j < DC; ++j) s[i][j] = FR_VZERO(V);
    for (fr_idx k = 0; k < kv; k += VL) {
        V a[FR_DR], w[FR_DC];
        FR_UNROLL for (int i = 0; i < R; ++i) { a[i] = FN(vld)(A + i * lda + k); FR_KEEP(a[i]); }
        FR_UNROLL for (int j = 0; j < DC; ++j) { w[j] = FN(vld)(W + j * ldw + k); FR_KEEP(w[j]); }
        FR_UNROLL for (int i = 0; i < R; ++i)
            FR_UNROLL for (int j = 0; j < DC; ++j) FR_VMADD_V(s[i][j], a[i], w[j]);
    }
    FR_UNROLL for (int i = 0; i < R; ++i)
        FR_UNROLL for (int j = 0; j < DC; ++j) {
            FR_T t = FN(hsum)(s[i][j]);
            for (fr_idx k = kv; k < K; ++k) t += A[i * lda + k] * W[j * ldw + k];
            C[i * ldc + j] += t;
        }
}

static void FN(dot_gemm_acc)(fr_idx M, fr_idx N, fr_idx K, const FR_T* A, fr_idx lda,
                             const FR_T* W, fr_idx ldw, FR_T* C, fr_idx ldc) {
    fr_idx n = 0;
    if (M <= 0 || N <= 0 || K < VL) {
        for (fr_idx m = 0; m < M; ++m)
            for (fr_idx j = 0; j < N; ++j) {
                FR_T t = 0;
                for (fr_idx k = 0; k < K; ++k) t += A[m * lda + k] * W[j * ldw + k];
                C[m * ldc + j] += t;
            }
        return;
    }
    for (; n + FR_DC <= N; n += FR_DC) {
        fr_idx m = 0;
        for (; m + FR_DR <= M; m += FR_DR)
            FN(dot_tile)(FR_DR, FR_DC, K, A + m * lda, lda, W + n * ldw, ldw, C + m * ldc + n, ldc);
        for (; m < M; ++m)
            FN(dot_tile)(1, FR_DC, K, A + m * lda, lda, W + n * ldw, ldw, C + m * ldc + n, ldc);
    }
    for (; n < N; ++n)
        for (fr_idx m = 0; m < M; ++m)
            FN(dot_tile)(1, 1, K, A + m * lda, lda, W + n * ldw, ldw, C + m * ldc + n, ldc);
}

/* ---------------------------------------------------------------------------------------------
 * Packing.  pack_panels transposes VL x VL blocks in registers (FR_TRANSPOSE, a butterfly of
 * two-input shuffles, where the compiler has them), then the edges element by element.
 * ------------------------------------------------------------------------------------------- */
static FR_INLINE void FN(pack_block)(const FR_T* const* src, fr_idx k0, FR_T* dst, fr_idx ldd) {
#if FR_HAVE_SHUFFLE
    V r[VL];
    FR_UNROLL for (int i = 0; i < (int)VL; ++i) r[i] = FN(vld)(src[i] + k0);
    FR_CAT(FR_TRANSPOSE_, FR_S)(r);
    FR_UNROLL for (int j = 0; j < (int)VL; ++j) FN(vst)(dst + (k0 + j) * ldd, r[j]);
#else
    for (fr_idx j = 0; j < VL; ++j)
        for (fr_idx i = 0; i < VL; ++i) dst[(k0 + j) * ldd + i] = src[i][k0 + j];
#endif
}

static void FN(pack_panels)(const FR_T* W, fr_idx ldw, fr_idx K, fr_idx G, fr_idx H, fr_idx u0,
                            fr_idx nj, FR_T* out, fr_idx pfirst, fr_idx pstep) {
    const fr_idx N = G * nj, kfull = (K / VL) * VL;
    const FR_T* src[NR];
    for (fr_idx p0 = pfirst * NR; p0 < N; p0 += pstep * NR) {
        const fr_idx nr = N - p0 < NR ? N - p0 : NR;
        FR_T* dst = out + K * p0;
        if (nr < NR)
            for (fr_idx k = 0; k < K; ++k) memset(dst + k * NR + nr, 0, (NR - nr) * sizeof(FR_T));
        for (fr_idx c = 0; c < nr; ++c) {
            const fr_idx g = (p0 + c) / nj;
            src[c] = W + (g * H + u0 + (p0 + c - g * nj)) * ldw;
        }
        for (fr_idx k0 = 0; k0 < kfull; k0 += VL)
            for (fr_idx c = 0; c + VL <= nr; c += VL) FN(pack_block)(&src[c], k0, dst + c, NR);
        for (fr_idx k = 0; k < kfull; ++k)
            for (fr_idx c = (nr / VL) * VL; c < nr; ++c) dst[k * NR + c] = src[c][k];
        for (fr_idx k = kfull; k < K; ++k)
            for (fr_idx c = 0; c < nr; ++c) dst[k * NR + c] = src[c][k];
    }
}

static void FN(pack_rows)(const FR_T* B, fr_idx ldb, fr_idx K, fr_idx N, FR_T* out,
                          fr_idx pfirst, fr_idx pstep) {
    for (fr_idx p0 = pfirst * NR; p0 < N; p0 += pstep * NR) {
        const fr_idx nr = N - p0 < NR ? N - p0 : NR;
        FR_T* dst = out + K * p0;
        if (nr == NR)   /* whole panel rows: FR_NV vector moves each, not a call to memcpy */
            for (fr_idx k = 0; k < K; ++k)
                FR_UNROLL for (int j = 0; j < FR_NV; ++j)
                    FN(vst)(dst + k * NR + j * VL, FN(vld)(B + k * ldb + p0 + j * VL));
        else
            for (fr_idx k = 0; k < K; ++k) {
                memcpy(dst + k * NR, B + k * ldb + p0, nr * sizeof(FR_T));
                memset(dst + k * NR + nr, 0, (NR - nr) * sizeof(FR_T));
            }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Activations and gate math.  Plain loops over restrict pointers: the compiler vectorises them
 * for the target (float32: the rational tanh below; float64: libm).
 * ------------------------------------------------------------------------------------------- */
static FR_INLINE FR_T FN(act_tanh)(FR_T x) { return FR_CAT(fr_tanh_, FR_S)(x); }
static FR_INLINE FR_T FN(act_sigmoid)(FR_T x) { return FR_CAT(fr_sigmoid_, FR_S)(x); }

/* Each loop below first runs over whole vectors where the target has vector activations
   (FR_VACT: fr_vtanh_f, fr_vsigmoid_f), then element by element over what is left. */
#if FR_VACT
#  define FR_VLOOP(j, n) for (; (j) + VL <= (n); (j) += VL)
#  define FR_VEND(n) ((n) - (n) % VL)
#  define VTANH(v) FR_CAT(fr_vtanh_, FR_S)(v)
#  define VSIGMOID(v) FR_CAT(fr_vsigmoid_, FR_S)(v)
#else
#  define FR_VLOOP(j, n) for (; 0;)
#  define FR_VEND(n) 0
#  define VTANH(v) (v)
#  define VSIGMOID(v) (v)
#endif

static void FN(tanh_arr)(const FR_T* FR_RESTRICT x, FR_T* FR_RESTRICT out, fr_idx n) {
    fr_idx j = 0;
    FR_VLOOP(j, n) FN(vst)(out + j, VTANH(FN(vld)(x + j)));
    for (; j < n; ++j) out[j] = FN(act_tanh)(x[j]);
}

static void FN(sigmoid_arr)(const FR_T* FR_RESTRICT x, FR_T* FR_RESTRICT out, fr_idx n) {
    fr_idx j = 0;
    FR_VLOOP(j, n) FN(vst)(out + j, VSIGMOID(FN(vld)(x + j)));
    for (; j < n; ++j) out[j] = FN(act_sigmoid)(x[j]);
}

/* Gate k's pre-activation at unit j (see gates in fr_kernels.h): rec alone, or rec plus the
   row's input projection and bias (the step's GEMM then wrote rec without reading it). */
static FR_INLINE V FN(vpre)(const FR_T* rec, fr_idx nj, const FR_T* xin, const FR_T* bias,
                            fr_idx gs, int k, fr_idx j) {
    V v = FN(vld)(rec + k * nj + j);
    if (xin != NULL) v += FN(vld)(xin + k * gs + j) + FN(vld)(bias + k * gs + j);
    return v;
}
static FR_INLINE FR_T FN(spre)(const FR_T* rec, fr_idx nj, const FR_T* xin, const FR_T* bias,
                               fr_idx gs, int k, fr_idx j) {
    FR_T v = rec[k * nj + j];
    if (xin != NULL) v += xin[k * gs + j] + bias[k * gs + j];
    return v;
}
/* The GRU's two n terms: h W_hn^T + b_hn (slot 2) and x W_in^T + b_in (slot 3, or the input) */
#define FR_GRU_HN(P, j) (xin != NULL ? P(rec + 2 * nj + (j)) + P(bhn + (j)) : P(rec + 2 * nj + (j)))
#define FR_GRU_XN(P, j) (xin != NULL ? P(xin + 2 * gs + (j)) + P(bias + 2 * gs + (j))        \
                                         : P(rec + 3 * nj + (j)))
#define FR_SLD(p) (*(p))

static void FN(gates_tail)(int cell, FR_T* rec, fr_idx nj, fr_idx j0, const FR_T* xin,
                           const FR_T* bias, const FR_T* bhn, fr_idx gs, const FR_T* h_prev,
                           FR_T* c, FR_T* h_out, FR_T* hn_out, const FR_T* peep);

/* units past the last whole vector from which gates runs them as one more vector (gates_tail)
   instead of element by element.  Measured in-process, Zen 4, two threads, B=32 T=50: with
   15 left (H=127 on AVX-512, whose gate math took 14% of a call against 6% at H=128) LSTM -5%,
   GRU -4%, B=1 -4%; with 8 (H=120) -1..-2%; with 4 (H=100, AVX2 too) +1..3%: the copies in and
   out cost more than four scalar activations */
#define FR_VTAIL_MIN 8

/* The gate math of one row.  On whole vectors the gated cells first run one loop per gate that
   needs only its pre-activation (stored back in rec), then one loop for what reads them (c,
   h; the GRU's n).  In one loop each vector chained up to five activations (an LSTM: sigmoid
   -> c -> tanh -> h, ~90 cycles of latency in ~160 instructions) and the out-of-order window
   overlapped only two vectors; and a loop over several gates' slices, nj apart, read and wrote
   addresses 4 KiB apart when nj is a multiple of 1024 (4K aliasing: loads wait for unrelated
   stores).  Measured on a Zen 4 (AVX2), LSTM: 15% faster at H = 512, 29% at H = 1024; the
   same arithmetic, so the same bits. */
static void FN(gates)(int cell, FR_T* FR_RESTRICT rec, fr_idx nj, const FR_T* FR_RESTRICT xin,
                      const FR_T* FR_RESTRICT bias, const FR_T* FR_RESTRICT bhn, fr_idx gs,
                      const FR_T* FR_RESTRICT h_prev, FR_T* FR_RESTRICT c,
                      FR_T* FR_RESTRICT h_out, FR_T* FR_RESTRICT hn_out,
                      const FR_T* FR_RESTRICT peep) {
    fr_idx j = 0;
    const fr_idx jv = FR_VEND(nj);      /* units in whole vectors */
    /* the units left over: element by element, or as one vector by gates_tail */
    const int vtail = FR_VACT && nj - jv >= FR_VTAIL_MIN && cell != FR_RNN_RELU
                      && cell != FR_RNN_LEAKY_RELU;
    const fr_idx nj_s = vtail ? jv : nj;
#define VPRE(k) FN(vpre)(rec, nj, xin, bias, gs, (k), j)
#define SPRE(k) FN(spre)(rec, nj, xin, bias, gs, (k), j)
/* one gate over the whole vectors: dst = ACT(its pre-activation EXTRA), in a loop of its own */
#define FR_GATE_PASS(dst, k, ACT, EXTRA)                                                          \
    for (fr_idx v = 0; v < jv; v += VL)                                                           \
        FN(vst)((dst) + v, ACT(FN(vpre)(rec, nj, xin, bias, gs, (k), v) EXTRA))
    switch (cell) {
    case FR_RNN_TANH:
        FR_VLOOP(j, nj) FN(vst)(h_out + j, VTANH(VPRE(0)));
        for (; j < nj_s; ++j) h_out[j] = FN(act_tanh)(SPRE(0));
        break;
    case FR_RNN_RELU:   /* written so that NaN propagates, as in the reference */
        for (j = 0; j < nj; ++j) { const FR_T v = SPRE(0); h_out[j] = v < 0 ? (FR_T)0 : v; }
        break;
    case FR_RNN_LEAKY_RELU:
        for (j = 0; j < nj; ++j) {
            const FR_T v = SPRE(0);
            h_out[j] = v < 0 ? (FR_T)FR_LEAKY_RELU_SLOPE * v : v;
        }
        break;
    case FR_LSTM: {
        FR_T* FR_RESTRICT gi = rec;
        FR_T* FR_RESTRICT gf = rec + nj;
        FR_T* FR_RESTRICT gg = rec + 2 * nj;
        FR_T* FR_RESTRICT go = rec + 3 * nj;
        FR_GATE_PASS(gi, 0, VSIGMOID, );
        FR_GATE_PASS(gf, 1, VSIGMOID, );
        FR_GATE_PASS(gg, 2, VTANH, );
        FR_GATE_PASS(go, 3, VSIGMOID, );
        for (fr_idx v = 0; v < jv; v += VL) {
            const V cn = FN(vld)(gf + v) * FN(vld)(c + v) + FN(vld)(gi + v) * FN(vld)(gg + v);
            FN(vst)(c + v, cn);
            FN(vst)(h_out + v, FN(vld)(go + v) * VTANH(cn));
        }
        for (j = jv; j < nj_s; ++j) {
            const FR_T i = FN(act_sigmoid)(SPRE(0)), f = FN(act_sigmoid)(SPRE(1));
            const FR_T g = FN(act_tanh)(SPRE(2)), o = FN(act_sigmoid)(SPRE(3));
            const FR_T cn = f * c[j] + i * g;
            gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
            c[j] = cn;
            h_out[j] = o * FN(act_tanh)(cn);
        }
        break;
    }
    case FR_LSTM_PEEPHOLE: {   /* the input and forget gates read c, the output gate c' */
        FR_T* FR_RESTRICT gi = rec;
        FR_T* FR_RESTRICT gf = rec + nj;
        FR_T* FR_RESTRICT gg = rec + 2 * nj;
        FR_T* FR_RESTRICT go = rec + 3 * nj;
        const FR_T* FR_RESTRICT pi = peep;
        const FR_T* FR_RESTRICT pf = peep + gs;
        const FR_T* FR_RESTRICT po = peep + 2 * gs;
        FR_GATE_PASS(gi, 0, VSIGMOID, + FN(vld)(pi + v) * FN(vld)(c + v));   /* i, f, g */
        FR_GATE_PASS(gf, 1, VSIGMOID, + FN(vld)(pf + v) * FN(vld)(c + v));
        FR_GATE_PASS(gg, 2, VTANH, );
        FR_GATE_PASS(go, 3, , );        /* o reads c': its pre-activation, for the next pass */
        for (fr_idx v = 0; v < jv; v += VL) {
            const V cn = FN(vld)(gf + v) * FN(vld)(c + v) + FN(vld)(gi + v) * FN(vld)(gg + v);
            const V o = VSIGMOID(FN(vld)(go + v) + FN(vld)(po + v) * cn);
            FN(vst)(go + v, o);
            FN(vst)(c + v, cn);
            FN(vst)(h_out + v, o * VTANH(cn));
        }
        for (j = jv; j < nj_s; ++j) {
            const FR_T i = FN(act_sigmoid)(SPRE(0) + pi[j] * c[j]);
            const FR_T f = FN(act_sigmoid)(SPRE(1) + pf[j] * c[j]);
            const FR_T g = FN(act_tanh)(SPRE(2));
            const FR_T cn = f * c[j] + i * g;
            const FR_T o = FN(act_sigmoid)(SPRE(3) + po[j] * cn);
            gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
            c[j] = cn;
            h_out[j] = o * FN(act_tanh)(cn);
        }
        break;
    }
    case FR_GRU: {
        FR_T* FR_RESTRICT gr = rec;
        FR_T* FR_RESTRICT gz = rec + nj;
        FR_T* FR_RESTRICT ghn = rec + 2 * nj;
        FR_GATE_PASS(gr, 0, VSIGMOID, );     /* r and z; then n, which reads r, and h */
        FR_GATE_PASS(gz, 1, VSIGMOID, );
        for (fr_idx v = 0; v < jv; v += VL) {
            const V hn = FR_GRU_HN(FN(vld), v);
            const V n = VTANH(FR_GRU_XN(FN(vld), v) + FN(vld)(gr + v) * hn);
            if (hn_out != NULL) FN(vst)(hn_out + v, hn);
            FN(vst)(ghn + v, n);
            FN(vst)(h_out + v, n + FN(vld)(gz + v) * (FN(vld)(h_prev + v) - n));
        }
        for (j = jv; j < nj_s; ++j) {
            const FR_T r = FN(act_sigmoid)(SPRE(0)), z = FN(act_sigmoid)(SPRE(1));
            const FR_T hn = FR_GRU_HN(FR_SLD, j);
            const FR_T n = FN(act_tanh)(FR_GRU_XN(FR_SLD, j) + r * hn);
            if (hn_out != NULL) hn_out[j] = hn;
            gr[j] = r; gz[j] = z; ghn[j] = n;
            h_out[j] = n + z * (h_prev[j] - n);
        }
        break;
    }
    case FR_GRU_RESET_BEFORE: {   /* the reset gate is inside the n slot already (xin NULL) */
        FR_T* FR_RESTRICT gr = rec;
        FR_T* FR_RESTRICT gz = rec + nj;
        FR_T* FR_RESTRICT ghn = rec + 2 * nj;
        const FR_T* FR_RESTRICT gxn = rec + 3 * nj;
        FR_VLOOP(j, nj) {
            const V r = VSIGMOID(FN(vld)(gr + j)), z = VSIGMOID(FN(vld)(gz + j));
            const V n = VTANH(FN(vld)(gxn + j) + FN(vld)(ghn + j));
            FN(vst)(gr + j, r); FN(vst)(gz + j, z); FN(vst)(ghn + j, n);
            FN(vst)(h_out + j, n + z * (FN(vld)(h_prev + j) - n));
        }
        for (; j < nj_s; ++j) {
            const FR_T r = FN(act_sigmoid)(gr[j]), z = FN(act_sigmoid)(gz[j]);
            const FR_T n = FN(act_tanh)(gxn[j] + ghn[j]);
            gr[j] = r; gz[j] = z; ghn[j] = n;
            h_out[j] = n + z * (h_prev[j] - n);
        }
        break;
    }
    default:
        break;
    }
    if (nj_s < nj)
        FN(gates_tail)(cell, rec, nj, nj_s, xin, bias, bhn, gs, h_prev, c, h_out, hn_out, peep);
#undef VPRE
#undef SPRE
#undef FR_GATE_PASS
}

/* Units j0..nj-1 (fewer than a vector) of a row as one vector: what gates reads of them is
   copied into a row of one vector a slot (zeros past them: finite activations), gates runs its
   vector code on it, and what it writes is copied back (the gates' activations in rec, c, h,
   the GRU's h W_hn^T + b_hn).  The vector activations are the scalar ones' arithmetic: the same
   bits (outputs of every cell at H = 12, 44, 127, both target sets, compared before and after). */
static void FN(gates_tail)(int cell, FR_T* rec, fr_idx nj, fr_idx j0, const FR_T* xin,
                           const FR_T* bias, const FR_T* bhn, fr_idx gs, const FR_T* h_prev,
                           FR_T* c, FR_T* h_out, FR_T* hn_out, const FR_T* peep) {
    FR_T r[4 * VL], x[4 * VL], b[4 * VL], bn[VL], hp[VL], cc[VL], ho[VL], hno[VL], pp[3 * VL];
    const size_t n = (size_t)(nj - j0) * sizeof(FR_T);
    const int slots = cell == FR_RNN_TANH ? 1 : (cell == FR_GRU && xin != NULL) ? 3 : 4;
    const int xslots = cell == FR_RNN_TANH ? 1 : cell == FR_GRU ? 3 : 4;
    memset(r, 0, sizeof r); memset(x, 0, sizeof x); memset(b, 0, sizeof b);
    memset(bn, 0, sizeof bn); memset(hp, 0, sizeof hp); memset(cc, 0, sizeof cc);
    memset(pp, 0, sizeof pp);
    for (int k = 0; k < slots; ++k) memcpy(r + k * VL, rec + k * nj + j0, n);
    if (xin != NULL)
        for (int k = 0; k < xslots; ++k) {
            memcpy(x + k * VL, xin + k * gs + j0, n);
            memcpy(b + k * VL, bias + k * gs + j0, n);
        }
    if (bhn != NULL) memcpy(bn, bhn + j0, n);
    if (h_prev != NULL) memcpy(hp, h_prev + j0, n);
    if (c != NULL) memcpy(cc, c + j0, n);
    if (peep != NULL)
        for (int k = 0; k < 3; ++k) memcpy(pp + k * VL, peep + k * gs + j0, n);
    FN(gates)(cell, r, VL, xin != NULL ? x : NULL, xin != NULL ? b : NULL,
              bhn != NULL ? bn : NULL, VL, h_prev != NULL ? hp : NULL, c != NULL ? cc : NULL, ho,
              hn_out != NULL ? hno : NULL, peep != NULL ? pp : NULL);
    for (int k = 0; k < slots; ++k) memcpy(rec + k * nj + j0, r + k * VL, n);
    if (c != NULL) memcpy(c + j0, cc, n);
    memcpy(h_out + j0, ho, n);
    if (hn_out != NULL) memcpy(hn_out + j0, hno, n);
}

#undef FR_GRU_HN
#undef FR_GRU_XN
#undef FR_SLD
#undef FR_VLOOP
#undef FR_VEND
#undef VTANH
#undef VSIGMOID
#undef FN
#undef V
#undef VL
#undef NR
#undef KC
#undef APACK_MIN_K
#undef MC
#undef LINE
#undef FR_KSETS
#undef FR_ACC

/* Checks one target's kernel table against plain C loops, with no Python: for a target this
 * machine cannot run (NEON, cross-compiled and run under qemu by test_emulated_kernels.py).
 * Compile together with fastrnn/engine/kernels/fr_isa.c and -DFR_TARGET=<target>.  Prints one
 * line per failed check and exits non-zero if any failed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fr_kernels.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
extern const fr_kernels_t CAT(fr_kernels_, FR_TARGET);

static int failures = 0;

static void check(int ok, const char* what, double got, double bound) {
    if (!ok) {
        printf("FAILED %s: %g (bound %g)\n", what, got, bound);
        ++failures;
    }
}

/* deterministic values in [-1, 1) */
static double value(long i) { return ((i * 2654435761u) % 2001) / 1000.0 - 1.0; }

static void activations(const fr_kernels_t* k) {
    enum { N = 200001 };
    static float x[N], y[N];
    double err = 0, serr = 0;
    for (long i = 0; i < N; ++i) x[i] = (float)(-12.0 + 24.0 * i / (N - 1));
    k->tanh_f(x, y, N);
    for (long i = 0; i < N; ++i) err = fmax(err, fabs(y[i] - tanh((double)x[i])));
    k->sigmoid_f(x, y, N);
    for (long i = 0; i < N; ++i) serr = fmax(serr, fabs(y[i] - 1 / (1 + exp(-(double)x[i]))));
    check(err <= 5e-7, "tanh_f max abs error", err, 5e-7);
    check(serr <= 4e-7, "sigmoid_f max abs error", serr, 4e-7);
    /* NaN propagates in every vector lane and in the elements left over */
    float z[37], o[37];
    int nan_ok = 1;
    for (int i = 0; i < 37; ++i) z[i] = (i % 5 == 0 || i == 36) ? NAN : (float)value(i);
    k->tanh_f(z, o, 37);
    for (int i = 0; i < 37; ++i) nan_ok &= isnan(z[i]) == isnan(o[i]);
    k->sigmoid_f(z, o, 37);
    for (int i = 0; i < 37; ++i) nan_ok &= isnan(z[i]) == isnan(o[i]);
    check(nan_ok, "NaN propagation of the activations", 0, 0);
}

/* C (M, N) += A (M, K) @ B (K, N): gemm_range (with and without accumulate, A transposed
   too), gemm (with and without accumulate) and dot_gemm_acc against a double loop */
static void gemm(const fr_kernels_t* k, long M, long N, long K) {
    float* A = malloc(M * K * sizeof *A);
    float* At = malloc(M * K * sizeof *At);
    float* B = malloc(K * N * sizeof *B);
    float* Bt = malloc(K * N * sizeof *Bt);
    float* Bp = malloc(fr_packed_size(K, N, k->nr_f) * sizeof *Bp);
    float* C = malloc(M * N * sizeof *C);
    double* E = malloc(M * N * sizeof *E);
    for (long i = 0; i < M * K; ++i) A[i] = (float)value(i);
    for (long i = 0; i < K * N; ++i) B[i] = (float)value(i + 7);
    for (long m = 0; m < M; ++m)
        for (long q = 0; q < K; ++q) At[q * M + m] = A[m * K + q];
    for (long q = 0; q < K; ++q)
        for (long j = 0; j < N; ++j) Bt[j * K + q] = B[q * N + j];
    for (long m = 0; m < M; ++m)
        for (long j = 0; j < N; ++j) {
            double s = 0;
            for (long q = 0; q < K; ++q) s += (double)A[m * K + q] * B[q * N + j];
            E[m * N + j] = s;
        }
    k->pack_rows_f(B, N, K, N, Bp, 0, 1);
    const double bound = 1e-6 * K;
    char what[96];
    for (int variant = 0; variant < 6; ++variant) {
        /* without accumulate C must be written, never read: it starts as NaN */
        const int acc = variant >= 2 && variant <= 4;
        double base = acc ? 1.0 : 0.0, err = 0;
        for (long i = 0; i < M * N; ++i) C[i] = acc ? (float)base : NAN;
        if (variant == 0) k->gemm_range_f(M, 0, M, N, K, A, K, 0, Bp, C, N, 0);
        if (variant == 1) k->gemm_range_f(M, 0, M, N, K, At, M, 1, Bp, C, N, 0);
        if (variant == 2) k->gemm_range_f(M, 0, M, N, K, A, K, 0, Bp, C, N, 1);
        if (variant == 3) k->gemm_f(M, N, K, A, K, Bp, C, N, 1);
        if (variant == 4) k->dot_gemm_acc_f(M, N, K, A, K, Bt, K, C, N);
        if (variant == 5) k->gemm_f(M, N, K, A, K, Bp, C, N, 0);
        for (long i = 0; i < M * N; ++i)
            err = isnan(C[i]) ? INFINITY : fmax(err, fabs(C[i] - base - E[i]));
        snprintf(what, sizeof what, "GEMM variant %d, M=%ld N=%ld K=%ld", variant, M, N, K);
        check(err <= bound, what, err, bound);
    }
    /* rows split at a multiple of the tile (as between threads): the same bits as in one go */
    float* C2 = malloc(M * N * sizeof *C2);
    for (long split = k->mr; split < M; split += 7 * k->mr) {
        k->gemm_range_f(M, 0, M, N, K, At, M, 1, Bp, C, N, 0);
        k->gemm_range_f(M, split, M, N, K, At, M, 1, Bp, C2, N, 0);
        k->gemm_range_f(M, 0, split, N, K, At, M, 1, Bp, C2, N, 0);
        snprintf(what, sizeof what, "GEMM rows split at %ld, M=%ld N=%ld K=%ld", split, M, N, K);
        check(memcmp(C, C2, M * N * sizeof *C) == 0, what, 0, 0);
    }
    free(A); free(At); free(B); free(Bt); free(Bp); free(C); free(C2); free(E);
}

int main(void) {
    const fr_kernels_t* k = &CAT(fr_kernels_, FR_TARGET);
    static const long shapes[][3] = {{1, 1, 1}, {1, 300, 64}, {5, 33, 130}, {9, 70, 257},
                                     {145, 129, 600}, {300, 65, 33}, {40, 1100, 37},
                                     {64, 64, 70}, {64, 32, 64}};
    activations(k);
    for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
        gemm(k, shapes[s][0], shapes[s][1], shapes[s][2]);
    printf("%s kernels (tile %d x %d): %d failed checks\n", k->name, k->mr, k->nv, failures);
    return failures != 0;
}

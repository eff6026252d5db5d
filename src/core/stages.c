/* Stage accounting (include/sqz/core.h) and the GEMM rates it is judged against. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqz/core.h"

static const char *const kStageName[SQZ_STAGE_COUNT] = {"forward", "backward", "grams",  "scoring",
                                                        "gptq",    "pruning",  "writing"};

const char *sqz_stage_name(int stage) { return stage >= 0 && stage < SQZ_STAGE_COUNT ? kStageName[stage] : "?"; }

void sqz_stage_add(sqz_stage_times *t, int stage, double seconds, double flops) {
    if (!t || stage < 0 || stage >= SQZ_STAGE_COUNT) return;
    t->seconds[stage] += seconds;
    t->flops[stage] += flops;
}

void sqz_stage_merge(sqz_stage_times *t, const sqz_stage_times *u) {
    for (int s = 0; s < SQZ_STAGE_COUNT; s++) sqz_stage_add(t, s, u->seconds[s], u->flops[s]);
}

#define RATE_N 1024
#define RATE_REPS 4

int sqz_gemm_rates(int n_threads, double *sgemm_gflops, double *dgemm_gflops, sqz_err *err) {
    const int n = RATE_N;
    const size_t nn = (size_t)n * n;
    float *a = malloc(3 * nn * sizeof(float));
    double *d = malloc(3 * nn * sizeof(double));
    if (!a || !d) {
        free(a); free(d);
        return sqz_fail(err, "gemm rates: out of memory");
    }
    for (size_t i = 0; i < 3 * nn; i++) { /* any finite values: the rate does not depend on them */
        a[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        d[i] = a[i];
    }
    int saved = openblas_get_num_threads();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    openblas_set_num_threads(n_threads > 0 ? n_threads : (int)(cores > 0 ? cores : 1));
    const double flops = 2.0 * n * (double)n * n;
    double best_s = 0, best_d = 0;
    for (int r = 0; r < RATE_REPS; r++) { /* the first of each warms caches and threads */
        double t0 = sqz_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, a + nn, n, 0.0f, a + 2 * nn, n);
        double dt = sqz_now() - t0;
        if (dt > 0 && flops / dt > best_s) best_s = flops / dt;
        t0 = sqz_now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, d, n, d + nn, n, 0.0, d + 2 * nn, n);
        dt = sqz_now() - t0;
        if (dt > 0 && flops / dt > best_d) best_d = flops / dt;
    }
    openblas_set_num_threads(saved);
    free(a); free(d);
    *sgemm_gflops = best_s / 1e9;
    *dgemm_gflops = best_d / 1e9;
    return SQZ_OK;
}

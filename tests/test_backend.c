/* The compute backend (sqz/backend.h).
 *  - --device parsing; CUDA on a build without it is a one-line error;
 *  - the CPU backend's Gram sum over several windows against a double-precision sum of
 *    the same products, and its GPTQ factor byte-identical to sqz_gptq_factor_init;
 *  - with the CUDA backend (cmake -DSQZ_CUDA=ON, on a machine with a GPU): its Grams
 *    against the CPU's (relative 1e-5 of the largest entry), its GPTQ factor against the
 *    CPU's (1e-8 of the largest entry) and GPTQ with it (output error within 0.1%), at
 *    widths 256, 1536 and 8960 (the 1.5B model's ffn_down); wall times of both printed;
 *    out of GPU memory is an error naming the sizes, not a crash.
 * A CUDA build on a machine without a GPU exits 77 (skipped) after the CPU checks, saying
 * which comparisons did not run. */
#include <math.h>
#include <string.h>

#include "sqz/backend.h"
#include "sqz/calib.h"
#include "sqz/quant.h"
#include "sqz/tensor.h"
#include "testutil.h"

/* T × n inputs with a few strong directions, as activations have. */
static float *make_inputs(tu_rng *r, int64_t T, int64_t n) {
    float *x = malloc((size_t)(T * n) * sizeof(float));
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++)
            x[t * n + i] = (float)(tu_gauss(r) * (i % 97 == 0 ? 8.0 : 1.0) + (i % 5 == 0 ? 0.5 : 0.0));
    return x;
}

static double max_abs(const double *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* G ← Σ over the windows via the backend. */
static int backend_gram(sqz_backend *b, const float *x, int nwin, int64_t T, int64_t n, double *G, double *sec) {
    sqz_err err;
    sqz_gram_acc *g = NULL;
    memset(G, 0, (size_t)(n * n) * sizeof(double));
    double t0 = sqz_now();
    int rc = sqz_gram_open(b, NULL, n, G, &g, &err);
    for (int w = 0; rc == 0 && w < nwin; w++) rc = sqz_gram_add(g, x + (int64_t)w * T * n, T, &err);
    if (rc == 0) rc = sqz_gram_finish(g, &err);
    sqz_gram_close(g);
    *sec = sqz_now() - t0;
    CHECK(rc == 0, "%s Gram of width %lld: %s", sqz_backend_describe(b), (long long)n, err.msg);
    return rc;
}

static void test_parse(void) {
    sqz_device d;
    sqz_err err;
    CHECK(sqz_device_parse("cpu", &d, &err) == 0 && d == SQZ_DEVICE_CPU, "cpu");
    CHECK(sqz_device_parse("cuda", &d, &err) == 0 && d == SQZ_DEVICE_CUDA, "cuda");
    CHECK(sqz_device_parse("gpu", &d, &err) != 0 && strstr(err.msg, "'gpu'") && strstr(err.msg, "cpu or cuda"),
          "gpu: %s", err.msg);
    if (!sqz_cuda_built()) {
        sqz_backend *b = NULL;
        CHECK(sqz_backend_create(SQZ_DEVICE_CUDA, NULL, &b, &err) != 0 && b == NULL &&
                  strstr(err.msg, "built without CUDA") && !strchr(err.msg, '\n'),
              "--device cuda on a CPU build: %s", err.msg);
    }
}

/* Σ xᵀx of x [rows, n] in double, every product in order: the reference (calloc'd). */
static double *reference_gram(const float *x, int64_t rows, int64_t n) {
    double *R = calloc((size_t)(n * n), sizeof(double));
    for (int64_t t = 0; R && t < rows; t++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) R[i * n + j] += (double)x[t * n + i] * x[t * n + j];
    return R;
}

/* The CPU backend against a double sum of the same products. */
static void test_cpu(sqz_pool *pool) {
    tu_rng r = {11};
    const int64_t n = 200, T = 64;
    const int nwin = 3;
    float *x = make_inputs(&r, nwin * T, n);
    double *G = malloc((size_t)(n * n) * sizeof(double)), *R = reference_gram(x, nwin * T, n);
    sqz_backend *b = NULL;
    sqz_err err;
    CHECK(sqz_backend_create(SQZ_DEVICE_CPU, pool, &b, &err) == 0, "%s", err.msg);
    double sec, worst = 0;
    if (b && backend_gram(b, x, nwin, T, n, G, &sec) == 0) {
        for (int64_t i = 0; i < n * n; i++) worst = fmax(worst, fabs(G[i] - R[i]));
        CHECK(worst <= 1e-6 * max_abs(R, n * n), "CPU Gram off by %g (largest entry %g)", worst, max_abs(R, n * n));
        /* a second finish adds nothing: the sum restarted */
        sqz_gram_acc *g = NULL;
        memset(G, 0, (size_t)(n * n) * sizeof(double));
        CHECK(sqz_gram_open(b, NULL, n, G, &g, &err) == 0, "%s", err.msg);
        CHECK(g && sqz_gram_finish(g, &err) == 0 && max_abs(G, n * n) == 0, "an empty sum is not zero");
        sqz_gram_close(g);
    }
    /* the factor: the same bytes as sqz_gptq_factor_init */
    for (int64_t i = 0; i < n; i++) R[i * n + i] += 1.0;
    sqz_gptq_opts o = {0.01, 0, 1, 0.0, 0, NULL};
    sqz_gptq_factor a, c;
    CHECK(sqz_gptq_factor_init(&a, R, n, &o, &err) == 0, "%s", err.msg);
    CHECK(sqz_backend_gptq_factor(b, R, n, &o, &c, &err) == 0, "%s", err.msg);
    CHECK(a.U && c.U && memcmp(a.U, c.U, (size_t)(n * n) * sizeof(double)) == 0, "CPU backend factor differs");
    sqz_gptq_factor_free(&a);
    sqz_gptq_factor_free(&c);
    printf("test_backend: cpu Gram (%lld wide, %d windows) within %.2e (relative) of a double sum; factor identical\n",
           (long long)n, nwin, worst / max_abs(R, n * n));
    sqz_backend_free(b);
    free(x); free(G); free(R);
}

/* CUDA against the CPU at one width: Grams, factor, GPTQ with the factor. */
static void compare_cuda(sqz_backend *cpu, sqz_backend *gpu, sqz_pool *pool, int64_t n, int64_t T, int nwin) {
    tu_rng r = {(uint64_t)n};
    float *x = make_inputs(&r, nwin * T, n);
    double *Gc = malloc((size_t)(n * n) * sizeof(double)), *Gg = malloc((size_t)(n * n) * sizeof(double));
    double tc, tg, worst = 0;
    if (backend_gram(cpu, x, nwin, T, n, Gc, &tc) || backend_gram(gpu, x, nwin, T, n, Gg, &tg)) goto done;
    for (int64_t i = 0; i < n * n; i++) worst = fmax(worst, fabs(Gc[i] - Gg[i]));
    double big = max_abs(Gc, n * n);
    CHECK(worst <= 1e-5 * big, "width %lld: CUDA Gram off by %g (largest entry %g)", (long long)n, worst, big);
    printf("test_backend: width %5lld, %d × %lld tokens: Gram max |cuda - cpu| / max |G| = %.2e  (cpu %.3f s, "
           "cuda %.3f s)\n", (long long)n, nwin, (long long)T, worst / big, tc, tg);
    for (int64_t i = 0; i < n * n; i++) Gc[i] /= (double)(nwin * T);
    for (int single = 0; single <= 1; single++) { /* the factor in double, then in single precision */
        sqz_gptq_opts o = {0.01, 0, 1, 0.0, single, pool}; /* the CPU factor on the pool */
        sqz_gptq_factor a, c;
        sqz_err err;
        double t0 = sqz_now();
        int ra = sqz_gptq_factor_init(&a, Gc, n, &o, &err);
        CHECK(ra == 0, "%s", err.msg);
        double t1 = sqz_now();
        int rg = sqz_backend_gptq_factor(gpu, Gc, n, &o, &c, &err);
        CHECK(rg == 0, "%s", err.msg);
        double t2 = sqz_now(), du = 0, ub = 0;
        if (ra == 0 && rg == 0) {
            CHECK(single ? a.Uf && c.Uf : a.U && c.U, "width %lld: factor in the wrong precision", (long long)n);
            for (int64_t i = 0; i < n * n && (single ? a.Uf && c.Uf : a.U && c.U); i++) {
                double x = single ? a.Uf[i] : a.U[i], y = single ? c.Uf[i] : c.U[i];
                du = fmax(du, fabs(x - y));
                ub = fmax(ub, fabs(x));
            }
            /* float: potrf's blocking differs between LAPACK and cuSOLVER, each entry a
             * sum of ~n rounded terms */
            double tol = single ? 1e-3 : 1e-8;
            CHECK(du <= tol * ub, "width %lld: CUDA factor (%s) off by %g (largest entry %g)", (long long)n,
                  single ? "single" : "double", du, ub);
            /* GPTQ (Q4_K) with either factor on 64 rows: output errors within 0.1% (double), 1% (single) */
            const int64_t rows = 64;
            float *W = malloc((size_t)(rows * n) * sizeof(float)), *q = malloc((size_t)(rows * n) * sizeof(float));
            size_t rb;
            sqz_type_row_bytes(SQZ_TYPE_Q4_K, n, &rb, &err);
            uint8_t *dst = malloc(rb * (size_t)rows);
            for (int64_t i = 0; i < rows * n; i++) W[i] = (float)(0.02 * tu_gauss(&r));
            double e[2];
            for (int k = 0; k < 2; k++) {
                CHECK(sqz_gptq_quantize_factored(SQZ_TYPE_Q4_K, W, rows, k ? &c : &a, pool, dst, q, NULL, NULL, &err) == 0,
                      "%s", err.msg);
                double rw;
                CHECK(sqz_gptq_errors(W, q, rows, n, Gc, pool, &rw, &e[k], &err) == 0, "%s", err.msg);
            }
            CHECK(fabs(e[1] - e[0]) <= (single ? 1e-2 : 1e-3) * e[0], "width %lld: GPTQ (%s) output error %.6e with "
                  "the CUDA factor, %.6e with the CPU's", (long long)n, single ? "single" : "double", e[1], e[0]);
            printf("test_backend: width %5lld: %s factor max |cuda - cpu| / max |U| = %.2e  (cpu %.3f s, cuda %.3f "
                   "s); Q4_K GPTQ output error %.6e (cuda factor) vs %.6e (cpu)\n", (long long)n,
                   single ? "single" : "double", du / ub, t1 - t0, t2 - t1, e[1], e[0]);
            free(W); free(q); free(dst);
        }
        sqz_gptq_factor_free(&a);
        sqz_gptq_factor_free(&c);
    }
done:
    free(x); free(Gc); free(Gg);
}

/* Windows that straddle the CPU's batches (SQZ_GRAM_BATCH rows): every row counted once. */
static void test_cpu_batches(sqz_pool *pool) {
    tu_rng r = {12};
    const int64_t n = 40, T = 700;
    const int nwin = 4; /* 2800 rows: a full batch and a part, one window split between them */
    float *x = make_inputs(&r, nwin * T, n);
    double *G = malloc((size_t)(n * n) * sizeof(double)), *R = reference_gram(x, nwin * T, n);
    sqz_backend *b = NULL;
    sqz_err err;
    double sec, worst = 0;
    CHECK(sqz_backend_create(SQZ_DEVICE_CPU, pool, &b, &err) == 0, "%s", err.msg);
    if (b && backend_gram(b, x, nwin, T, n, G, &sec) == 0) {
        for (int64_t i = 0; i < n * n; i++) worst = fmax(worst, fabs(G[i] - R[i]));
        CHECK(worst <= 1e-5 * max_abs(R, n * n), "CPU Gram over %lld rows off by %g (largest entry %g)",
              (long long)(nwin * T), worst, max_abs(R, n * n));
    }
    printf("test_backend: cpu Gram over %lld rows (batches of %d) within %.2e (relative) of a double sum\n",
           (long long)(nwin * T), SQZ_GRAM_BATCH, worst / max_abs(R, n * n));
    sqz_backend_free(b);
    free(x);
    free(G);
    free(R);
}

/* Out of GPU memory: Grams of the largest width until one does not fit; the error must
 * name what was asked for. */
static void cuda_oom(sqz_backend *gpu) {
    sqz_gram_acc *g[8] = {0};
    sqz_err err;
    double dummy = 0; /* never finished: no sum is written */
    int k, failed = 0;
    for (k = 0; k < 8; k++)
        if (sqz_gram_open(gpu, NULL, 65536, &dummy, &g[k], &err)) {
            failed = 1;
            break;
        }
    CHECK(failed && strstr(err.msg, "out of memory for a 65536 × 65536 Gram") && strstr(err.msg, "MiB free"),
          "out of GPU memory after %d Grams: %s", k, failed ? err.msg : "(never failed)");
    printf("test_backend: the %d-th 65536-wide Gram: %s\n", k + 1, err.msg);
    for (int i = 0; i < 8; i++) sqz_gram_close(g[i]);
    /* and the backend still works afterwards */
    sqz_gram_acc *h = NULL;
    CHECK(sqz_gram_open(gpu, NULL, 64, &dummy, &h, &err) == 0, "after out of memory: %s", err.msg);
    sqz_gram_close(h);
}

int main(void) {
    sqz_err err;
    sqz_pool *pool = sqz_pool_create(0, &err);
    test_parse();
    test_cpu_batches(pool);
    test_cpu(pool);
    int skipped = 0;
    if (sqz_cuda_built()) {
        sqz_backend *cpu = NULL, *gpu = NULL;
        sqz_backend_create(SQZ_DEVICE_CPU, pool, &cpu, &err);
        if (sqz_backend_create(SQZ_DEVICE_CUDA, pool, &gpu, &err)) {
            CHECK(!strchr(err.msg, '\n') && strstr(err.msg, "--device cuda"), "no GPU: %s", err.msg);
            printf("test_backend: SKIPPED the CUDA comparisons: %s\n", err.msg);
            skipped = 1;
        } else {
            printf("test_backend: %s against %s\n", sqz_backend_describe(gpu), sqz_backend_describe(cpu));
            compare_cuda(cpu, gpu, pool, 256, 512, 4);
            compare_cuda(cpu, gpu, pool, 1536, 512, 4);
            compare_cuda(cpu, gpu, pool, 8960, 512, 2);
            printf("test_backend: peak GPU memory %.1f MiB\n", (double)sqz_backend_peak_bytes(gpu) / 1048576.0);
            cuda_oom(gpu);
        }
        sqz_backend_free(gpu);
        sqz_backend_free(cpu);
    } else {
        printf("test_backend: CPU build: the CUDA comparisons need cmake -DSQZ_CUDA=ON and a GPU\n");
    }
    sqz_pool_free(pool);
    int rc = tu_done("test_backend");
    return rc ? rc : skipped ? 77 : 0;
}

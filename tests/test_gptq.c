/* GPTQ into ggml blocks (src/quant/gptq.c).
 *
 * Unit test on random W and H = XᵀX/T from correlated random inputs X:
 *  - GPTQ's H-weighted output error is below RTN's (sqz_quantize_row with w = diag H)
 *    for every quantizable type of the type table (traits.quantize), plain and act-order;
 *  - the bytes written dequantize (the type table's dequantizer) to the Ŵ reported;
 *  - identity H: no error is propagated, so GPTQ equals RTN with uniform weights;
 *  - the result does not depend on the thread count; bad input fails cleanly.
 * `test_gptq --emit DIR` writes W, H, the chosen block params and levels for a few types
 * for tests/py/gptq_reference.py, an independent numpy GPTQ (tests/t_gptq_ref.sh).
 * `test_gptq --bench ROWS COLS` times a large run (e.g. 4096 11008). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/gptq.h"
#include "sqz/quant.h"
#include "testutil.h"

/* The quantizable types, read from the type table in main (kTypes[0..N_TYPES)). */
static int kTypes[SQZ_TYPE_COUNT];
static int N_TYPES;

static void load_types(void) {
    N_TYPES = tu_quant_types(kTypes);
    CHECK(N_TYPES >= 11, "only %d quantizable types in the table", N_TYPES);
}

static tu_rng rng = {0x243F6A8885A308D3ull};

/* W: Gaussian rows with a few heavy columns. H = XᵀX/T with X = Z·M + per-column scales,
 * M a random mixing with a strong shared component, so H has real off-diagonal mass. */
static void make_problem(int64_t rows, int64_t cols, float *W, double *H) {
    for (int64_t i = 0; i < rows * cols; i++) W[i] = (float)(0.02 * tu_gauss(&rng) * (i % 17 == 0 ? 3.0 : 1.0));
    int64_t T = 2 * cols, k = cols / 4;
    double *Z = malloc((size_t)(T * k) * sizeof(double)), *M = malloc((size_t)(k * cols) * sizeof(double));
    double *X = malloc((size_t)(T * cols) * sizeof(double)), *sc = malloc((size_t)cols * sizeof(double));
    for (int64_t i = 0; i < T * k; i++) Z[i] = tu_gauss(&rng);
    for (int64_t i = 0; i < k * cols; i++) M[i] = tu_gauss(&rng);
    for (int64_t j = 0; j < cols; j++) sc[j] = 0.2 + 2.0 * tu_urand(&rng) * tu_urand(&rng);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < cols; j++) {
            double s = 0.3 * tu_gauss(&rng);
            for (int64_t a = 0; a < k; a++) s += Z[t * k + a] * M[a * cols + j] / sqrt((double)k);
            X[t * cols + j] = s * sc[j];
        }
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = i; j < cols; j++) {
            double s = 0;
            for (int64_t t = 0; t < T; t++) s += X[t * cols + i] * X[t * cols + j];
            H[i * cols + j] = H[j * cols + i] = s / (double)T;
        }
    free(Z); free(M); free(X); free(sc);
}

static int rtn(int type, const float *W, int64_t rows, int64_t cols, const double *H, float *what) {
    size_t rb;
    sqz_err err;
    if (sqz_type_row_bytes(type, cols, &rb, &err)) return -1;
    float *w = malloc((size_t)cols * sizeof(float));
    uint8_t *q = malloc(rb);
    for (int64_t j = 0; j < cols; j++) w[j] = (float)H[j * cols + j];
    int rc = 0;
    for (int64_t r = 0; r < rows && !rc; r++) {
        if (sqz_quantize_row(type, W + r * cols, q, cols, w, &err)) rc = -1;
        sqz_type_get(type)->dequantize(q, what + r * cols, cols);
    }
    free(w); free(q);
    return rc;
}

/* Dequantizes rows × cols of dst through a temporary sqz_tensor, compares with what. */
static int64_t mismatches(int type, const void *dst, size_t bytes, const float *what, int64_t rows, int64_t cols) {
    sqz_tensor t = {.name = "w", .type = type, .n_dims = 2, .ne = {cols, rows, 1, 1}, .data = dst, .nbytes = bytes};
    float *y = malloc((size_t)(rows * cols) * sizeof(float));
    sqz_err err;
    int64_t bad = 0;
    if (sqz_tensor_rows_f32(&t, 0, rows, y, &err)) bad = rows * cols;
    else
        for (int64_t i = 0; i < rows * cols; i++) bad += memcmp(&y[i], &what[i], sizeof(float)) != 0;
    free(y);
    return bad;
}

static void test_types(sqz_pool *pool) {
    const int64_t rows = 48, cols = 512;
    float *W = malloc((size_t)(rows * cols) * sizeof(float));
    double *H = malloc((size_t)(cols * cols) * sizeof(double));
    float *what = malloc((size_t)(rows * cols) * sizeof(float)), *rq = malloc((size_t)(rows * cols) * sizeof(float));
    make_problem(rows, cols, W, H);
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = kTypes[ti];
        const char *name = sqz_type_get(type)->name;
        size_t rb;
        sqz_err err;
        sqz_type_row_bytes(type, cols, &rb, &err);
        uint8_t *dst = malloc(rb * (size_t)rows), *dst1 = malloc(rb * (size_t)rows);
        double rw, ro;
        CHECK(rtn(type, W, rows, cols, H, rq) == 0, "%s: rtn", name);
        CHECK(sqz_gptq_errors(W, rq, rows, cols, H, pool, &rw, &ro, &err) == 0, "%s", err.msg);
        for (int act = 0; act < 2; act++) {
            sqz_gptq_opts o = {0.01, act, 0, 0, 0, NULL};
            sqz_gptq_stats st;
            int rc = sqz_gptq_quantize(type, W, rows, cols, H, &o, pool, dst, what, NULL, NULL, &st, &err);
            CHECK(rc == 0, "%s act %d: %s", name, act, err.msg);
            if (rc) continue;
            printf("%-7s act=%d  out err GPTQ %.4e  RTN %.4e  (ratio %.3f)  weight err GPTQ %.4f RTN %.4f\n", name,
                   act, st.rel_output_err, ro, st.rel_output_err / ro, st.rel_weight_err, rw);
            CHECK(st.rel_output_err < ro, "%s act %d: GPTQ output error %g not below RTN's %g", name, act,
                  st.rel_output_err, ro);
            int64_t bad = mismatches(type, dst, rb * (size_t)rows, what, rows, cols);
            CHECK(bad == 0, "%s act %d: %lld values of the bytes differ from the reported Ŵ", name, act, (long long)bad);
            /* single-threaded gives the same bytes */
            CHECK(sqz_gptq_quantize(type, W, rows, cols, H, &o, NULL, dst1, NULL, NULL, NULL, NULL, &err) == 0, "%s",
                  err.msg);
            CHECK(memcmp(dst, dst1, rb * (size_t)rows) == 0, "%s act %d: bytes depend on the thread count", name, act);
            /* the estimate's single-precision GPTQ: nearly the same output error */
            sqz_gptq_opts os = o;
            os.single = 1;
            sqz_gptq_stats ss;
            CHECK(sqz_gptq_quantize(type, W, rows, cols, H, &os, pool, dst1, NULL, NULL, NULL, &ss, &err) == 0, "%s",
                  err.msg);
            CHECK(fabs(ss.rel_output_err - st.rel_output_err) <= 0.01 * st.rel_output_err,
                  "%s act %d: single-precision GPTQ output error %.6e, double %.6e (more than 1%% apart)", name, act,
                  ss.rel_output_err, st.rel_output_err);
        }
        free(dst); free(dst1);
    }
    free(W); free(H); free(what); free(rq);
}

/* GPTQ into a codebook i-quant (IQ3_S, IQ3_XXS, IQ2_XXS: a grid point per 4 or 8 consecutive columns): output
 * error below the same search's round to nearest (weighted by diag(H)), the bytes
 * dequantize to the reported Ŵ, the same bytes on one thread, act-order refused by name;
 * with H = I nothing propagates and GPTQ writes the round-to-nearest bytes. */
static void test_codebook(sqz_pool *pool, int type) {
    const int64_t rows = 48, cols = 512;
    const char *name = sqz_type_get(type)->name;
    float *W = malloc((size_t)(rows * cols) * sizeof(float)), *what = malloc((size_t)(rows * cols) * sizeof(float));
    float *rq = malloc((size_t)(rows * cols) * sizeof(float)), *ones = malloc((size_t)cols * sizeof(float));
    double *H = malloc((size_t)(cols * cols) * sizeof(double)), *I = calloc((size_t)(cols * cols), sizeof(double));
    make_problem(rows, cols, W, H);
    size_t rb;
    sqz_err err;
    sqz_type_row_bytes(type, cols, &rb, &err);
    uint8_t *dst = malloc(rb * (size_t)rows), *dst1 = malloc(rb * (size_t)rows);
    float *w = malloc((size_t)cols * sizeof(float));
    for (int64_t j = 0; j < cols; j++) w[j] = (float)H[j * cols + j], ones[j] = 1.0f, I[j * cols + j] = 1.0;
    for (int64_t r = 0; r < rows; r++) {
        CHECK(sqz_convert_row(type, W + r * cols, dst1 + r * rb, cols, w, &err) == 0, "%s rtn: %s", name, err.msg);
        sqz_type_get(type)->dequantize(dst1 + r * rb, rq + r * cols, cols);
    }
    double rw, ro;
    CHECK(sqz_gptq_errors(W, rq, rows, cols, H, pool, &rw, &ro, &err) == 0, "%s", err.msg);
    sqz_gptq_opts o = {0.01, 0, 0, 0, 0, NULL};
    sqz_gptq_stats st;
    int rc = sqz_gptq_quantize(type, W, rows, cols, H, &o, pool, dst, what, NULL, NULL, &st, &err);
    CHECK(rc == 0, "%s GPTQ: %s", name, err.msg);
    if (rc == 0) {
        printf("%-7s act=0  out err GPTQ %.4e  RTN %.4e  (ratio %.3f)  weight err GPTQ %.4f RTN %.4f\n",
               name, st.rel_output_err, ro, st.rel_output_err / ro, st.rel_weight_err, rw);
        CHECK(st.rel_output_err < 0.8 * ro, "%s: GPTQ output error %g not well below RTN's %g", name, st.rel_output_err, ro);
        int64_t bad = mismatches(type, dst, rb * (size_t)rows, what, rows, cols);
        CHECK(bad == 0, "%s: %lld values of the bytes differ from the reported Ŵ", name, (long long)bad);
        CHECK(sqz_gptq_quantize(type, W, rows, cols, H, &o, NULL, dst1, NULL, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
        CHECK(memcmp(dst, dst1, rb * (size_t)rows) == 0, "%s: bytes depend on the thread count", name);
    }
    sqz_gptq_opts oa = {0.01, 1, 0, 0, 0, NULL};
    CHECK(sqz_gptq_quantize(type, W, rows, cols, H, &oa, pool, dst, NULL, NULL, NULL, NULL, &err) != 0 &&
              strstr(err.msg, name) && strstr(err.msg, "act-order"),
          "%s with act-order: %s", name, err.msg);
    /* IQ3_XXS's GPTQ completes each 8's sign parity in its second group of 4 (the first is
     * committed by then), its round to nearest over all 8: not the same bytes (IQ2_XXS's
     * 8 are one group: the same) */
    sqz_gptq_opts oi = {0.0, 0, 0, 0, 0, NULL};
    CHECK(sqz_gptq_quantize(type, W, rows, cols, I, &oi, pool, dst, NULL, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    for (int64_t r = 0; r < rows; r++) sqz_convert_row(type, W + r * cols, dst1 + r * rb, cols, ones, &err);
    CHECK(type == SQZ_TYPE_IQ3_XXS || memcmp(dst, dst1, rb * (size_t)rows) == 0,
          "%s: GPTQ with H = I differs from round to nearest", name);
    free(W); free(what); free(rq); free(ones); free(H); free(I); free(dst); free(dst1); free(w);
}

/* GPTQ with options o must write exactly the bytes of RTN with per-column importance w,
 * for every quantizable type: the cases below have no error feedback at all. */
static void expect_gptq_is_rtn(const char *what, const float *W, int64_t rows, int64_t cols, const double *H,
                               const sqz_gptq_opts *o, sqz_pool *pool, const float *w) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = kTypes[ti];
        size_t rb;
        sqz_err err;
        sqz_type_row_bytes(type, cols, &rb, &err);
        uint8_t *a = malloc(rb * (size_t)rows), *b = malloc(rb * (size_t)rows);
        CHECK(sqz_gptq_quantize(type, W, rows, cols, H, o, pool, a, NULL, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
        for (int64_t r = 0; r < rows; r++) sqz_quantize_row(type, W + r * cols, b + r * rb, cols, w, &err);
        CHECK(memcmp(a, b, rb * (size_t)rows) == 0, "%s: %s: GPTQ differs from RTN", sqz_type_get(type)->name, what);
        free(a); free(b);
    }
}

/* H = I: U is diagonal, nothing propagates, and every block's scales come from the
 * original row with uniform importance, so GPTQ is RTN with uniform weights. */
static void test_identity(void) {
    const int64_t rows = 8, cols = 512;
    float *W = malloc((size_t)(rows * cols) * sizeof(float)), *w = malloc((size_t)cols * sizeof(float));
    double *H = calloc((size_t)(cols * cols), sizeof(double));
    for (int64_t i = 0; i < rows * cols; i++) W[i] = (float)(0.02 * tu_gauss(&rng));
    for (int64_t i = 0; i < cols; i++) {
        H[i * cols + i] = 1.0;
        w[i] = 1.01f; /* diag(H) + the dampening, as GPTQ's importance */
    }
    expect_gptq_is_rtn("identity H", W, rows, cols, H, NULL, NULL, w);
    free(W); free(w); free(H);
}

/* shrink = 1 leaves diag(H): no error feedback, and every block's scales come from the
 * original row with diag(H) + damp as importance, so GPTQ is exactly RTN with those
 * weights, even for a strongly correlated H. */
static void test_shrink_one(sqz_pool *pool) {
    const int64_t rows = 8, cols = 512;
    float *W = malloc((size_t)(rows * cols) * sizeof(float)), *w = malloc((size_t)cols * sizeof(float));
    double *H = malloc((size_t)(cols * cols) * sizeof(double));
    make_problem(rows, cols, W, H);
    double mean = 0;
    for (int64_t i = 0; i < cols; i++) mean += H[i * cols + i];
    double damp = 0.01 * mean / (double)cols;
    for (int64_t i = 0; i < cols; i++) w[i] = (float)(H[i * cols + i] + damp);
    const sqz_gptq_opts one = {0.01, 0, 1, 1.0, 0, NULL};
    expect_gptq_is_rtn("shrink 1 (RTN with diag(H) + damp)", W, rows, cols, H, &one, pool, w);
    sqz_err err;
    uint8_t dst[8 * 512];
    const double bad[3] = {-0.1, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        sqz_gptq_opts o = {0.01, 0, 1, bad[i], 0, NULL};
        CHECK(sqz_gptq_quantize(SQZ_TYPE_Q4_0, W, 1, cols, H, &o, NULL, dst, NULL, NULL, NULL, NULL, &err) != 0,
              "shrink %g must be refused", bad[i]);
        CHECK(strstr(err.msg, "shrink") != NULL, "message: %s", err.msg);
    }
    free(W); free(w); free(H);
}

/* (UᵀU (H + λI)) off the identity, the largest entry; U's largest entry below its diagonal
 * in *below. U in double (Ud) or float (Uf). */
static double factor_residual(const double *Ud, const float *Uf, const double *H, double damp, int64_t cols,
                              double *below) {
    double *M = calloc((size_t)(cols * cols), sizeof(double)), worst = 0.0;
    *below = 0.0;
    for (int64_t r = 0; r < cols; r++)
        for (int64_t i = 0; i < cols; i++) {
            double u = Ud ? Ud[r * cols + i] : Uf[r * cols + i];
            if (i < r) *below = fmax(*below, fabs(u));
            if (u == 0.0) continue;
            for (int64_t k = 0; k < cols; k++) M[i * cols + k] += u * (Ud ? Ud[r * cols + k] : Uf[r * cols + k]);
        }
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) {
            double v = 0.0;
            for (int64_t k = 0; k < cols; k++) v += M[i * cols + k] * (H[k * cols + j] + (k == j ? damp : 0.0));
            worst = fmax(worst, fabs(v - (i == j ? 1.0 : 0.0)));
        }
    free(M);
    return worst;
}

/* The shared factor: U upper with UᵀU (H + λI) = I (shrink 0, no act-order), 1e-9 of
 * the identity (1e-3 in single precision), on one tile and on three (600 columns: tiles
 * of 256, 256, 88); the same bits on the pool as on one thread; and quantizing with it
 * gives the bytes sqz_gptq_quantize writes. */
static void test_factor(sqz_pool *pool) {
    const int64_t rows = 8, sizes[2] = {96, 600};
    sqz_err err;
    for (int si = 0; si < 2; si++) {
        const int64_t cols = sizes[si];
        float *W = malloc((size_t)(rows * cols) * sizeof(float));
        double *H = malloc((size_t)(cols * cols) * sizeof(double));
        make_problem(rows, cols, W, H);
        for (int single = 0; single < 2; single++) {
            sqz_gptq_opts o = {0.01, 0, 1, 0.0, single, NULL}, op = o;
            op.pool = pool;
            sqz_gptq_factor f, fp;
            CHECK(sqz_gptq_factor_init(&f, H, cols, &o, &err) == 0, "%s", err.msg);
            CHECK(sqz_gptq_factor_init(&fp, H, cols, &op, &err) == 0, "%s", err.msg);
            double below, worst = factor_residual(f.U, f.Uf, H, f.damp, cols, &below), lim = single ? 1e-3 : 1e-9;
            printf("factor %lld columns, %s: UᵀU(H + λI) - I at most %.3g (limit %g)\n", (long long)cols,
                   single ? "single" : "double", worst, lim);
            CHECK(below == 0.0, "%lld columns: U has %g below its diagonal", (long long)cols, below);
            CHECK(worst < lim, "%lld columns: UᵀU(H + λI) is off the identity by %g", (long long)cols, worst);
            size_t n2 = (size_t)(cols * cols) * (single ? sizeof(float) : sizeof(double));
            CHECK(memcmp(single ? (void *)f.Uf : (void *)f.U, single ? (void *)fp.Uf : (void *)fp.U, n2) == 0,
                  "%lld columns: the factor's bits depend on the thread count", (long long)cols);
            sqz_gptq_factor_free(&fp);
            if (single || si == 1) {
                sqz_gptq_factor_free(&f);
                continue;
            }
            size_t rb;
            CHECK(sqz_type_row_bytes(SQZ_TYPE_Q4_0, cols, &rb, &err) == 0, "%s", err.msg);
            uint8_t *a = malloc(rb * rows), *b = malloc(rb * rows);
            CHECK(sqz_gptq_quantize(SQZ_TYPE_Q4_0, W, rows, cols, H, &o, pool, a, NULL, NULL, NULL, NULL, &err) == 0,
                  "%s", err.msg);
            CHECK(sqz_gptq_quantize_factored(SQZ_TYPE_Q4_0, W, rows, &f, pool, b, NULL, NULL, NULL, &err) == 0, "%s",
                  err.msg);
            CHECK(memcmp(a, b, rb * rows) == 0, "the shared factor gave other bytes");
            sqz_gptq_factor_free(&f);
            free(a); free(b);
        }
        free(W); free(H);
    }
}

static void test_bad(void) {
    float W[64] = {0};
    double H[32 * 32] = {0};
    uint8_t dst[1024];
    sqz_err err;
    CHECK(sqz_gptq_quantize(SQZ_TYPE_Q4_K, W, 2, 32, H, NULL, NULL, dst, NULL, NULL, NULL, NULL, &err) != 0,
          "32 columns into Q4_K must fail");
    CHECK(strstr(err.msg, "multiple of 256") != NULL, "message: %s", err.msg);
    CHECK(sqz_gptq_quantize(SQZ_TYPE_F16, W, 2, 32, H, NULL, NULL, dst, NULL, NULL, NULL, NULL, &err) != 0, "F16");
    CHECK(sqz_gptq_quantize(SQZ_TYPE_Q8_K, W, 2, 32, H, NULL, NULL, dst, NULL, NULL, NULL, NULL, &err) != 0, "Q8_K");
    for (int i = 0; i < 32; i++) H[i * 32 + i] = 1;
    H[5] = NAN;
    CHECK(sqz_gptq_quantize(SQZ_TYPE_Q4_0, W, 2, 32, H, NULL, NULL, dst, NULL, NULL, NULL, NULL, &err) != 0, "NaN H");
    CHECK(strstr(err.msg, "not finite") != NULL, "message: %s", err.msg);
    H[5] = 0;
    /* all-dead H: every weight becomes 0 and the call still succeeds */
    memset(H, 0, sizeof H);
    for (int i = 0; i < 64; i++) W[i] = (float)i;
    sqz_gptq_stats st;
    CHECK(sqz_gptq_quantize(SQZ_TYPE_Q8_0, W, 2, 32, H, NULL, NULL, dst, NULL, NULL, NULL, &st, &err) == 0, "%s",
          err.msg);
    CHECK(st.n_dead == 32, "dead columns %lld", (long long)st.n_dead);
}

/* ---------------- --emit DIR ---------------- */

static int write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) != 0 || w != n ? -1 : 0;
}

static int emit(const char *dir) {
    const int64_t rows = 64, cols = 512;
    float *W = malloc((size_t)(rows * cols) * sizeof(float));
    double *H = malloc((size_t)(cols * cols) * sizeof(double));
    make_problem(rows, cols, W, H);
    if (write_file(dir, "W.f32", W, (size_t)(rows * cols) * sizeof(float)) ||
        write_file(dir, "H.f64", H, (size_t)(cols * cols) * sizeof(double)))
        return fprintf(stderr, "test_gptq --emit: cannot write into %s\n", dir), 1;
    const struct { int type, act; } cases[] = {{SQZ_TYPE_Q4_0, 0}, {SQZ_TYPE_IQ4_NL, 0}, {SQZ_TYPE_Q4_K, 0},
                                               {SQZ_TYPE_Q6_K, 0}, {SQZ_TYPE_Q3_K, 0}, {SQZ_TYPE_Q4_K, 1},
                                               {SQZ_TYPE_Q5_0, 1}, {SQZ_TYPE_Q4_1, 0}, {SQZ_TYPE_Q5_1, 1}};
    char list[4096] = "";
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int type = cases[ci].type;
        const sqz_type_traits *tt = sqz_type_get(type);
        int64_t nblk = cols / tt->block_size;
        size_t rb;
        sqz_err err;
        sqz_type_row_bytes(type, cols, &rb, &err);
        uint8_t *dst = malloc(rb * (size_t)rows);
        sqz_qparams *P = malloc((size_t)(rows * nblk) * sizeof *P);
        int8_t *L = malloc((size_t)(rows * cols));
        float *what = malloc((size_t)(rows * cols) * sizeof(float));
        /* per row, per block, per sub-block: scale, min (floats) */
        float *sm = malloc((size_t)(rows * nblk * 2 * SQZ_QSUB_MAX) * sizeof(float));
        sqz_gptq_opts o = {0.01, cases[ci].act, 0, 0, 0, NULL};
        sqz_gptq_stats st;
        if (sqz_gptq_quantize(type, W, rows, cols, H, &o, NULL, dst, what, P, L, &st, &err))
            return fprintf(stderr, "test_gptq --emit: %s\n", err.msg), 1;
        int lmin, lmax;
        sqz_quant_level_range(type, &lmin, &lmax, &err);
        int n_sub = P[0].n_sub, sub = P[0].sub_size;
        for (int64_t i = 0; i < rows * nblk; i++)
            for (int j = 0; j < n_sub; j++) {
                sm[(i * n_sub + j) * 2] = P[i].scale[j];
                sm[(i * n_sub + j) * 2 + 1] = P[i].min[j];
            }
        char base[256], name[300];
        snprintf(base, sizeof base, "%s_act%d", tt->name, cases[ci].act);
        snprintf(name, sizeof name, "%s.params.f32", base);
        write_file(dir, name, sm, (size_t)(rows * nblk * n_sub * 2) * sizeof(float));
        snprintf(name, sizeof name, "%s.levels.i8", base);
        write_file(dir, name, L, (size_t)(rows * cols));
        snprintf(name, sizeof name, "%s.what.f32", base);
        write_file(dir, name, what, (size_t)(rows * cols) * sizeof(float));
        char line[512];
        snprintf(line, sizeof line, "%s %s %d %lld %lld %d %d %d %d %.17g %.17g\n", base, tt->name, cases[ci].act,
                 (long long)rows, (long long)cols, (int)tt->block_size, sub, lmin, lmax, 0.01, st.rel_output_err);
        strncat(list, line, sizeof list - strlen(list) - 1);
        free(dst); free(P); free(L); free(what); free(sm);
    }
    /* one line per case: name type act rows cols block sub lmin lmax percdamp rel_output_err */
    if (write_file(dir, "cases.txt", list, strlen(list))) return 1;
    free(W); free(H);
    return 0;
}

/* ---------------- --bench ROWS COLS ---------------- */

static int bench(int64_t rows, int64_t cols, int type) {
    sqz_err err;
    sqz_pool *pool = sqz_pool_create(0, &err);
    float *W = malloc((size_t)(rows * cols) * sizeof(float));
    double *H = malloc((size_t)(cols * cols) * sizeof(double));
    size_t rb;
    if (!pool || !W || !H || sqz_type_row_bytes(type, cols, &rb, &err)) return 1;
    /* H = diagonal-dominant random SPD built cheaply: a low-rank part plus a diagonal */
    for (int64_t i = 0; i < rows * cols; i++) W[i] = (float)(0.02 * tu_gauss(&rng));
    int64_t k = 64;
    double *Z = malloc((size_t)(k * cols) * sizeof(double));
    for (int64_t i = 0; i < k * cols; i++) Z[i] = tu_gauss(&rng);
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = i; j < cols; j++) {
            double s = i == j ? 1.0 + tu_urand(&rng) : 0.0;
            for (int64_t a = 0; a < k; a++) s += Z[a * cols + i] * Z[a * cols + j] / (double)k;
            H[i * cols + j] = H[j * cols + i] = s;
        }
    uint8_t *dst = malloc(rb * (size_t)rows);
    sqz_gptq_stats st;
    double t0 = sqz_now();
    if (sqz_gptq_quantize(type, W, rows, cols, H, NULL, pool, dst, NULL, NULL, NULL, &st, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    double t = sqz_now() - t0;
    double macs = (double)cols * cols * cols / 3.0 + (double)rows * cols * cols;
    printf("gptq %s %lld x %lld on %d threads: %.2f s total (factor %.2f s, sweep %.2f s, stats %.2f s); "
           "%.3g MACs (cols^3/3 + rows*cols^2) -> %.1f GMAC/s; out err %.4e weight err %.4f\n",
           sqz_type_get(type)->name, (long long)rows, (long long)cols, sqz_pool_threads(pool), t, st.seconds_factor,
           st.seconds_sweep, t - st.seconds_factor - st.seconds_sweep, macs,
           macs / (st.seconds_factor + st.seconds_sweep) / 1e9, st.rel_output_err, st.rel_weight_err);
    free(W); free(H); free(Z); free(dst);
    sqz_pool_free(pool);
    return 0;
}

int main(int argc, char **argv) {
    load_types();
    if (argc == 3 && strcmp(argv[1], "--emit") == 0) return emit(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "--bench") == 0)
        return bench(atoll(argv[2]), atoll(argv[3]), argc > 4 ? sqz_type_from_name(argv[4]) : SQZ_TYPE_Q4_K);
    sqz_err err;
    sqz_pool *pool = sqz_pool_create(2, &err);
    CHECK(pool != NULL, "pool: %s", err.msg);
    test_types(pool);
    test_codebook(pool, SQZ_TYPE_IQ3_S);
    test_codebook(pool, SQZ_TYPE_IQ3_XXS);
    test_codebook(pool, SQZ_TYPE_IQ2_XXS);
    test_codebook(pool, SQZ_TYPE_IQ2_XS);
    test_codebook(pool, SQZ_TYPE_IQ2_S);
    test_codebook(pool, SQZ_TYPE_IQ1_S);
    test_codebook(pool, SQZ_TYPE_IQ1_M);
    test_codebook(pool, SQZ_TYPE_TQ2_0);
    test_codebook(pool, SQZ_TYPE_TQ1_0);
    test_identity();
    test_shrink_one(pool);
    test_factor(pool);
    test_bad();
    sqz_pool_free(pool);
    return tu_done("test_gptq");
}

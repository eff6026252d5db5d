/* GPTQ into ggml blocks: see include/sqz/gptq.h for the algorithm.
 *
 * The factorization is LAPACK's (OpenBLAS): potrf of the reversed H and trtri give the
 * upper Cholesky factor of the dampened H⁻¹ (chol_inverse_upper). Rows are independent
 * given that factor, so the sweep runs over chunks of rows on the pool, each chunk with
 * its own copy of its rows and one DGEMM per lazy batch (double: float32 sweeps flip a
 * few levels per thousand against an exact sweep, each flip then steering the rest of
 * its row; OpenBLAS single-threaded inside, the pool is the only source of threads).
 * The sensitivity estimate asks for both in single precision (sqz_gptq_opts.single):
 * gptq_kernels.inc holds them once for either. */
#include "sqz/gptq.h"

#include <cblas.h>
#include <lapack.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) && !defined(SQZ_NO_SIMD)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_NO_SIMD)
#include <immintrin.h>
#define GPTQ_AVX2 1 /* the sweep's in-batch updates in 256-bit vectors where the CPU has AVX2 */
#else
#define GPTQ_AVX2 0
#endif

#include "sqz/tensor.h"

/* Rows swept together: enough for the batch DGEMM to be efficient (OpenBLAS packs the
 * U block once per call: at 32 rows that packing was a large part of the sweep), at most
 * an even share of the threads. Rows are independent, so this changes no bit. */
#define GPTQ_ROWS 128

/* Tile of the factorization (chol_inverse_upper): its trailing products are GEMMs of
 * 256-deep panels, near OpenBLAS's single-threaded rate. */
#define CHOL_TILE 256

static int64_t sweep_grain(int64_t rows, const sqz_pool *pool) {
    int64_t nt = sqz_pool_threads(pool), share = (rows + nt - 1) / nt;
    return share < 32 ? 32 : share > GPTQ_ROWS ? GPTQ_ROWS : share;
}

/* The error statistics use every row while rows·cols² <= GPTQ_STATS_MACS, else as many
 * evenly spaced rows as fit it (at least GPTQ_STATS_MIN_ROWS). */
#define GPTQ_STATS_MACS 1073741824.0
#define GPTQ_STATS_MIN_ROWS 128

typedef struct {
    int type, bs, act;
    int codebook;          /* a codebook i-quant: grid points for groups of 4 consecutive columns */
    int64_t rows, cols, nblk, batch;
    size_t row_bytes;
    const float *W;
    const double *U;       /* cols × cols upper Cholesky factor of H⁻¹, in sweep order */
    const float *Uf;       /* the same in single precision (the estimate's sweeps), or NULL */
    const float *imp;      /* cols importances, original column order */
    const int64_t *perm;   /* sweep position → original column; NULL for identity */
    const uint8_t *dead;   /* original column order */
    uint8_t *dst;
    float *what;
    sqz_qparams *params;
    int8_t *levels;
    int failed;
    sqz_err err;
} sweep_ctx;

#define REAL double
#define SFX _d
#define UF U
#define GEMM cblas_dgemm
#define POTRF LAPACK_dpotrf
#define TRTRI LAPACK_dtrtri
#define TRSM cblas_dtrsm
#define TRMM cblas_dtrmm
#define GPTQ_IS_DOUBLE 1
#include "gptq_kernels.inc"
#define REAL float
#define SFX _f
#define UF Uf
#define GEMM cblas_sgemm
#define POTRF LAPACK_spotrf
#define TRTRI LAPACK_strtri
#define TRSM cblas_strsm
#define TRMM cblas_strmm
#define GPTQ_IS_DOUBLE 0
#include "gptq_kernels.inc"

/* ---------------------------------------------------------------- errors */

typedef struct {
    const float *W, *what;
    const double *H;
    int64_t cols;
    double *num, *den, *wn, *dn; /* per row */
    int failed;
} err_ctx;

static void err_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    err_ctx *c = vctx;
    const int64_t cols = c->cols;
    int64_t R = e - b;
    double *X = calloc((size_t)(2 * R * cols), sizeof(double)); /* calloc: gcc cannot see the loop fills it */
    double *Y = malloc((size_t)(2 * R * cols) * sizeof(double));
    if (!X || !Y) {
        c->failed = 1;
        free(X); free(Y);
        return;
    }
    /* rows 0..R-1 of X: W − Ŵ; rows R..2R-1: W; then Y = X·H and the row-wise x·Hxᵀ */
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < cols; j++) {
            double w = c->W[(b + r) * cols + j], q = c->what[(b + r) * cols + j];
            X[r * cols + j] = w - q;
            X[(R + r) * cols + j] = w;
        }
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)(2 * R), (int)cols, 1.0, c->H, (int)cols, X, (int)cols,
                0.0, Y, (int)cols);
    for (int64_t r = 0; r < R; r++) {
        double n = 0, d = 0, wn = 0, dn = 0;
        for (int64_t j = 0; j < cols; j++) {
            double dx = X[r * cols + j], wx = X[(R + r) * cols + j];
            n += dx * Y[r * cols + j];
            d += wx * Y[(R + r) * cols + j];
            dn += dx * dx;
            wn += wx * wx;
        }
        c->num[b + r] = n; c->den[b + r] = d; c->dn[b + r] = dn; c->wn[b + r] = wn;
    }
    free(X); free(Y);
}

int sqz_gptq_errors(const float *W, const float *what, int64_t rows, int64_t cols, const double *H,
                    sqz_pool *pool, double *rel_weight_err, double *rel_output_err, sqz_err *err) {
    if (rows <= 0 || cols <= 0 || cols > INT32_MAX / 2 || rows > INT32_MAX / 2)
        return sqz_fail(err, "gptq: errors: bad shape %lld × %lld", (long long)rows, (long long)cols);
    double *acc = calloc((size_t)(4 * rows), sizeof(double));
    if (!acc) return sqz_fail(err, "gptq: errors: out of memory");
    err_ctx c = {W, what, H, cols, acc, acc + rows, acc + 2 * rows, acc + 3 * rows, 0};
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    sqz_pool_for(pool, rows, 16, err_task, &c);
    openblas_set_num_threads(blas_threads);
    if (c.failed) {
        free(acc);
        return sqz_fail(err, "gptq: errors: out of memory for %lld columns", (long long)cols);
    }
    /* summed in row order, so the result does not depend on the thread count */
    double num = 0, den = 0, wn = 0, dn = 0;
    for (int64_t r = 0; r < rows; r++) {
        num += c.num[r]; den += c.den[r]; wn += c.wn[r]; dn += c.dn[r];
    }
    free(acc);
    *rel_weight_err = wn > 0 ? sqrt(dn / wn) : 0.0;
    *rel_output_err = den > 0 ? num / den : 0.0;
    return SQZ_OK;
}

/* ---------------------------------------------------------------- GPTQ */

typedef struct {
    double key;
    int64_t idx;
} keyed;

static int by_key_desc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* ties keep column order */
}

/* The type, the shape and W as GPTQ takes them: a quantizable type whose block divides
 * cols, and finite weights. */
static int check_input(int type, const float *W, int64_t rows, int64_t cols, sqz_err *err) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt || !sqz_gptq_supported(type))
        return sqz_fail(err, "gptq: type %d (%s) cannot be quantized into", type, tt ? tt->name : "unknown");
    if (rows <= 0 || cols <= 0 || rows > INT32_MAX / 2 || cols > 65536 || cols % tt->block_size != 0)
        return sqz_fail(err, "gptq: %s: shape %lld × %lld (expected rows >= 1 and 1 <= cols <= 65536 a multiple of %lld)",
                        tt->name, (long long)rows, (long long)cols, (long long)tt->block_size);
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(W[i]))
            return sqz_fail(err, "gptq: W[%lld, %lld] = %g is not finite", (long long)(i / cols), (long long)(i % cols),
                            (double)W[i]);
    return SQZ_OK;
}

void sqz_gptq_factor_free(sqz_gptq_factor *f) {
    if (!f) return;
    free(f->U); free(f->Uf); free(f->imp); free(f->perm); free(f->dead);
    memset(f, 0, sizeof *f);
}

/* The matrix to factor, rows [b, e): H permuted, its diagonal dampened, the rest shrunk. */
typedef struct {
    const double *H, *diag;
    const int64_t *perm;
    double keep;
    int64_t cols;
    double *U;
    float *Uf;
} fill_ctx;

static void fill_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const fill_ctx *c = vctx;
    const int64_t n = c->cols, *perm = c->perm;
    for (int64_t i = b; i < e; i++) {
        const double *h = c->H + perm[i] * n;
        for (int64_t j = 0; j < n; j++) {
            double v = i == j ? c->diag[perm[i]] : c->keep * h[perm[j]];
            if (c->Uf) c->Uf[i * n + j] = (float)v;
            else c->U[i * n + j] = v;
        }
    }
}

int sqz_gptq_factor_init(sqz_gptq_factor *f, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                         sqz_err *err) {
    return sqz_gptq_factor_init_with(f, H, cols, opts, NULL, NULL, err);
}

int sqz_gptq_factor_init_with(sqz_gptq_factor *f, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                              sqz_chol_fn chol, void *chol_ctx, sqz_err *err) {
    memset(f, 0, sizeof *f);
    if (cols <= 0 || cols > 65536) return sqz_fail(err, "gptq: H of %lld columns (expected 1 .. 65536)", (long long)cols);
    sqz_gptq_opts o = opts ? *opts : (sqz_gptq_opts){0};
    double percdamp = o.percdamp > 0 ? o.percdamp : 0.01;
    if (!(o.shrink >= 0 && o.shrink <= 1)) return sqz_fail(err, "gptq: shrink %g is outside [0, 1]", o.shrink);
    const double keep = 1.0 - o.shrink;
    for (int64_t i = 0; i < cols * cols; i++)
        if (!isfinite(H[i]))
            return sqz_fail(err, "gptq: H[%lld, %lld] = %g is not finite", (long long)(i / cols), (long long)(i % cols),
                            H[i]);
    const size_t n2 = (size_t)cols * (size_t)cols;
    double t0 = sqz_now();
    f->cols = cols;
    f->act_order = o.act_order;
    f->shrink = o.shrink;
    f->single = o.single;
    if (o.single) f->Uf = malloc(n2 * sizeof(float));
    else f->U = malloc(n2 * sizeof(double));
    f->imp = malloc((size_t)cols * sizeof(float));
    f->perm = malloc((size_t)cols * sizeof(int64_t));
    f->dead = calloc((size_t)cols, 1);
    double *diag = malloc((size_t)cols * sizeof(double));
    if ((!f->U && !f->Uf) || !f->imp || !f->perm || !f->dead || !diag) {
        free(diag);
        sqz_gptq_factor_free(f);
        return sqz_fail(err, "gptq: out of memory for H of %lld × %lld", (long long)cols, (long long)cols);
    }
    double mean = 0;
    for (int64_t i = 0; i < cols; i++) {
        diag[i] = H[i * cols + i];
        if (diag[i] == 0) {
            f->dead[i] = 1;
            diag[i] = 1;
            f->n_dead++;
        }
        mean += diag[i];
    }
    f->damp = percdamp * mean / (double)cols;
    for (int64_t i = 0; i < cols; i++) {
        diag[i] += f->damp;
        f->imp[i] = (float)diag[i];
        f->perm[i] = i;
    }
    if (o.act_order) {
        keyed *k = malloc((size_t)cols * sizeof *k);
        if (!k) {
            free(diag);
            sqz_gptq_factor_free(f);
            return sqz_fail(err, "gptq: out of memory");
        }
        for (int64_t i = 0; i < cols; i++) k[i] = (keyed){diag[i], i};
        qsort(k, (size_t)cols, sizeof *k, by_key_desc);
        for (int64_t i = 0; i < cols; i++) f->perm[i] = k[i].idx;
        free(k);
    }
    fill_ctx fc = {H, diag, f->perm, keep, cols, f->U, f->Uf};
    sqz_pool_for(o.pool, cols, 64, fill_task, &fc);
    free(diag);
    if (o.single) {
        float *A = f->Uf;
        if (chol ? chol(chol_ctx, A, cols, 1, err) : chol_inverse_upper_f(A, cols, o.pool, err)) {
            sqz_gptq_factor_free(f);
            return SQZ_ERR;
        }
    } else {
        double *A = f->U;
        if (chol ? chol(chol_ctx, A, cols, 0, err) : chol_inverse_upper_d(A, cols, o.pool, err)) {
            sqz_gptq_factor_free(f);
            return SQZ_ERR;
        }
    }
    f->seconds = sqz_now() - t0;
    return SQZ_OK;
}

int sqz_gptq_quantize_factored(int type, const float *W, int64_t rows, const sqz_gptq_factor *f, sqz_pool *pool,
                               void *dst, float *what, sqz_qparams *params, int8_t *levels, sqz_err *err) {
    const int64_t cols = f->cols;
    if (check_input(type, W, rows, cols, err)) return SQZ_ERR;
    const sqz_type_traits *tt = sqz_type_get(type);
    size_t row_bytes;
    if (sqz_type_row_bytes(type, cols, &row_bytes, err)) return SQZ_ERR;
    if (tt->codebook && f->act_order)
        return sqz_fail(err, "gptq: %s: act-order cannot be used (its levels are chosen %d consecutive column%s at a "
                        "time, in order)", tt->name, tt->codebook, tt->codebook > 1 ? "s" : "");
    sweep_ctx c = {type, (int)tt->block_size, f->act_order, tt->codebook, rows, cols, cols / tt->block_size,
                   tt->block_size > 128 ? tt->block_size : 128, row_bytes, W, f->U, f->Uf, f->imp,
                   f->act_order ? f->perm : NULL, f->dead, dst, what, params, levels, 0, {{0}}};
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    sqz_pool_for(pool, rows, sweep_grain(rows, pool), f->Uf ? sweep_task_f : sweep_task_d, &c);
    openblas_set_num_threads(blas_threads);
    if (c.failed) {
        *err = c.err;
        return SQZ_ERR;
    }
    return SQZ_OK;
}

int sqz_gptq_quantize(int type, const float *W, int64_t rows, int64_t cols, const double *H,
                      const sqz_gptq_opts *opts, sqz_pool *pool, void *dst, float *what, sqz_qparams *params,
                      int8_t *levels, sqz_gptq_stats *stats, sqz_err *err) {
    if (check_input(type, W, rows, cols, err)) return SQZ_ERR;
    sqz_gptq_factor f;
    sqz_gptq_opts fo = opts ? *opts : (sqz_gptq_opts){0};
    if (!fo.pool) fo.pool = pool;
    if (sqz_gptq_factor_init(&f, H, cols, &fo, err)) return SQZ_ERR;
    int no_stats = opts ? opts->no_stats : 0;
    int rc = sqz_gptq_finish(type, W, rows, H, &f, no_stats, pool, dst, what, params, levels, stats, err);
    sqz_gptq_factor_free(&f);
    return rc;
}

int sqz_gptq_finish(int type, const float *W, int64_t rows, const double *H, const sqz_gptq_factor *f, int no_stats,
                    sqz_pool *pool, void *dst, float *what, sqz_qparams *params, int8_t *levels,
                    sqz_gptq_stats *stats, sqz_err *err) {
    const int64_t cols = f->cols;
    double t1 = sqz_now();
    if (sqz_gptq_quantize_factored(type, W, rows, f, pool, dst, what, params, levels, err)) return SQZ_ERR;
    double t2 = sqz_now();
    if (!stats) return SQZ_OK;
    memset(stats, 0, sizeof *stats);
    stats->damp = f->damp;
    stats->shrink = f->shrink;
    stats->n_dead = f->n_dead;
    stats->seconds_factor = f->seconds;
    stats->seconds_sweep = t2 - t1;
    if (no_stats) return SQZ_OK;
    /* Ŵ is needed: the caller's, or dequantized from dst */
    float *q = what;
    if (!q) {
        size_t row_bytes;
        if (sqz_type_row_bytes(type, cols, &row_bytes, err)) return SQZ_ERR;
        q = malloc((size_t)(rows * cols) * sizeof(float));
        sqz_tensor t = {.name = "gptq", .type = type, .n_dims = 2, .ne = {cols, rows, 1, 1}, .data = dst,
                        .nbytes = row_bytes * (size_t)rows};
        if (!q) return sqz_fail(err, "gptq: out of memory for Ŵ");
        if (sqz_tensor_rows_f32(&t, 0, rows, q, err)) {
            free(q);
            return SQZ_ERR;
        }
    }
    double t3 = sqz_now();
    /* a large matrix's ratios from evenly spaced rows: the statistics are a report, and
     * all of an 8960-wide ffn_down's rows would cost 4× its sweep */
    int64_t n = rows;
    double fit = GPTQ_STATS_MACS / ((double)cols * (double)cols);
    if ((double)rows > fit) n = fit < GPTQ_STATS_MIN_ROWS ? GPTQ_STATS_MIN_ROWS : (int64_t)fit;
    if (n > rows) n = rows;
    int e;
    if (n == rows) {
        e = sqz_gptq_errors(W, q, rows, cols, H, pool, &stats->rel_weight_err, &stats->rel_output_err, err);
    } else {
        float *Ws = malloc((size_t)(2 * n * cols) * sizeof(float));
        if (!Ws) {
            if (q != what) free(q);
            return sqz_fail(err, "gptq: out of memory for the error statistics");
        }
        for (int64_t k = 0; k < n; k++) {
            int64_t r = k * rows / n;
            memcpy(Ws + k * cols, W + r * cols, (size_t)cols * sizeof(float));
            memcpy(Ws + (n + k) * cols, q + r * cols, (size_t)cols * sizeof(float));
        }
        e = sqz_gptq_errors(Ws, Ws + n * cols, n, cols, H, pool, &stats->rel_weight_err, &stats->rel_output_err, err);
        free(Ws);
    }
    stats->stats_rows = n;
    stats->seconds_stats = sqz_now() - t3;
    if (q != what) free(q);
    return e ? SQZ_ERR : SQZ_OK;
}

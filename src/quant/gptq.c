/* GPTQ into ggml blocks: see include/sqz/gptq.h for the algorithm.
 *
 * The factorization is LAPACK's (OpenBLAS): potrf of the reversed H and trtri give the
 * upper Cholesky factor of the dampened H⁻¹ (chol_inverse_upper). Rows are independent
 * given that factor, so the sweep runs over chunks of rows on the pool, each chunk with
 * its own copy of its rows and one DGEMM per lazy batch (double: float32 sweeps flip a
 * few levels per thousand against an exact sweep, each flip then steering the rest of
 * its row; OpenBLAS single-threaded inside, the pool is the only source of threads). */
#include "sqz/gptq.h"

#include <cblas.h>
#include <lapack.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) && !defined(SQZ_NO_SIMD)
#include <emmintrin.h>
#endif

#include "sqz/tensor.h"

/* Rows swept together: enough for the batch DGEMM to be efficient (OpenBLAS packs the
 * U block once per call: at 32 rows that packing was a large part of the sweep), at most
 * an even share of the threads. Rows are independent, so this changes no bit. */
#define GPTQ_ROWS 128

static int64_t sweep_grain(int64_t rows, const sqz_pool *pool) {
    int64_t nt = sqz_pool_threads(pool), share = (rows + nt - 1) / nt;
    return share < 32 ? 32 : share > GPTQ_ROWS ? GPTQ_ROWS : share;
}

/* The error statistics use every row while rows·cols² <= GPTQ_STATS_MACS, else as many
 * evenly spaced rows as fit it (at least GPTQ_STATS_MIN_ROWS). */
#define GPTQ_STATS_MACS 4294967296.0
#define GPTQ_STATS_MIN_ROWS 256

typedef struct {
    int type, bs, act;
    int64_t rows, cols, nblk, batch;
    size_t row_bytes;
    const float *W;
    const double *U;       /* cols × cols upper Cholesky factor of H⁻¹, in sweep order */
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

/* w[0..n) -= e · u[0..n): the error of one column spread over the rest of its batch,
 * element by element as the plain loop (two at a time where SSE2 is there). */
static inline void axpy_neg(double *restrict w, const double *restrict u, double e, int64_t n) {
    int64_t j = 0;
#if defined(__SSE2__) && !defined(SQZ_NO_SIMD)
    const __m128d ve = _mm_set1_pd(e);
    for (; j + 2 <= n; j += 2) _mm_storeu_pd(w + j, _mm_sub_pd(_mm_loadu_pd(w + j), _mm_mul_pd(ve, _mm_loadu_pd(u + j))));
#endif
    for (; j < n; j++) w[j] -= e * u[j];
}

/* GPTQ over rows [r0, r0+R): copies the rows (permuted), fixes block params, sweeps. */
static int sweep_rows(sweep_ctx *c, int64_t r0, int64_t R, double *Wc, double *Err, sqz_qparams *P, int8_t *L,
                      float *Q, sqz_err *err) {
    const int64_t cols = c->cols, nblk = c->nblk, B = c->batch;
    const int bs = c->bs;
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < cols; j++) {
            int64_t o = c->perm ? c->perm[j] : j;
            Wc[r * cols + j] = c->dead[o] ? 0.0f : c->W[(r0 + r) * cols + o];
        }
    if (c->act) { /* static groups: every block's scales from the original (dead-zeroed) W */
        float xb[SQZ_QBLOCK_MAX];
        for (int64_t r = 0; r < R; r++)
            for (int64_t b = 0; b < nblk; b++) {
                for (int i = 0; i < bs; i++) {
                    int64_t o = b * bs + i;
                    xb[i] = c->dead[o] ? 0.0f : c->W[(r0 + r) * cols + o];
                }
                if (sqz_quant_block_params(c->type, xb, c->imp + b * bs, &P[r * nblk + b], err)) return SQZ_ERR;
            }
    }
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        int64_t i2 = i1 + B < cols ? i1 + B : cols;
        for (int64_t i = i1; i < i2; i++) {
            if (!c->act && i % bs == 0)
                for (int64_t r = 0; r < R; r++) {
                    float xb[SQZ_QBLOCK_MAX];
                    for (int k = 0; k < bs; k++) xb[k] = (float)Wc[r * cols + i + k];
                    if (sqz_quant_block_params(c->type, xb, c->imp + i, &P[r * nblk + i / bs], err)) return SQZ_ERR;
                }
            const double *Ui = c->U + i * cols;
            const double d = Ui[i];
            const int64_t o = c->perm ? c->perm[i] : i;
            for (int64_t r = 0; r < R; r++) {
                double *w = Wc + r * cols;
                int8_t lev;
                double x = w[i];
                float q = sqz_quant_round_with_params(&P[r * nblk + o / bs], (int)(o % bs), (float)x, &lev);
                L[r * cols + o] = lev;
                Q[r * cols + o] = q;
                double e = (x - q) / d;
                Err[r * B + (i - i1)] = e;
                axpy_neg(w + i + 1, Ui + i + 1, e, i2 - i - 1);
            }
        }
        if (i2 < cols) /* lazy update of every later column: W[:, i2:] -= Err · U[i1:i2, i2:] */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)(cols - i2), (int)(i2 - i1), -1.0,
                        Err, (int)B, c->U + i1 * cols + i2, (int)cols, 1.0, Wc + i2, (int)cols);
    }
    for (int64_t r = 0; r < R; r++) {
        uint8_t *row = c->dst + (size_t)(r0 + r) * c->row_bytes;
        size_t bb = c->row_bytes / (size_t)nblk;
        for (int64_t b = 0; b < nblk; b++) sqz_quant_pack_block(&P[r * nblk + b], L + r * cols + b * bs, row + b * bb);
    }
    if (c->what) memcpy(c->what + r0 * cols, Q, (size_t)(R * cols) * sizeof(float));
    if (c->levels) memcpy(c->levels + r0 * cols, L, (size_t)(R * cols));
    if (c->params) memcpy(c->params + r0 * nblk, P, (size_t)(R * nblk) * sizeof(sqz_qparams));
    return SQZ_OK;
}

static void sweep_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    sweep_ctx *c = vctx;
    const int64_t cols = c->cols;
    double *Wc = malloc((size_t)(GPTQ_ROWS * cols) * sizeof(double));
    float *Q = malloc((size_t)(GPTQ_ROWS * cols) * sizeof(float));
    double *Err = malloc((size_t)(GPTQ_ROWS * c->batch) * sizeof(double));
    int8_t *L = malloc((size_t)(GPTQ_ROWS * cols));
    sqz_qparams *P = malloc((size_t)(GPTQ_ROWS * c->nblk) * sizeof(sqz_qparams));
    sqz_err err;
    if (!Wc || !Q || !Err || !L || !P) {
        c->failed = 1;
        sqz_fail(&c->err, "gptq: out of memory for a chunk of %d rows × %lld columns", GPTQ_ROWS, (long long)cols);
    } else {
        for (int64_t r0 = b; r0 < e && !c->failed; r0 += GPTQ_ROWS) {
            int64_t R = e - r0 < GPTQ_ROWS ? e - r0 : GPTQ_ROWS;
            if (sweep_rows(c, r0, R, Wc, Err, P, L, Q, &err)) {
                c->failed = 1; /* a benign race: any one message will do */
                c->err = err;
            }
        }
    }
    free(Wc); free(Q); free(Err); free(L); free(P);
}

/* A ← U, the upper Cholesky factor of A⁻¹ (UᵀU = A⁻¹, row-major; A holds the dampened H
 * on entry). With J the reversal, J A J = L Lᵀ (Cholesky) gives A = R Rᵀ, R = J L J upper,
 * so A⁻¹ = (R⁻¹)ᵀ R⁻¹ and U = R⁻¹ = J L⁻¹ J: one Cholesky and one triangular inverse,
 * 2/3·n³ flops where factor / invert / factor again take 4/3·n³. */
static int chol_inverse_upper(double *A, int64_t n, sqz_err *err) {
    /* J A J: A[i][j] ↔ A[n-1-i][n-1-j] is the flat array reversed */
    for (int64_t a = 0, b = n * n - 1; a < b; a++, b--) {
        double t = A[a];
        A[a] = A[b];
        A[b] = t;
    }
    char lo = 'L', diag = 'N';
    lapack_int N = (lapack_int)n, info = 0;
    LAPACK_dpotrf(&lo, &N, A, &N, &info); /* column-major lower L = row-major upper Lᵀ */
    if (info != 0)
        return sqz_fail(err, "gptq: H (%lld × %lld) is not positive definite after dampening (potrf info %d)",
                        (long long)n, (long long)n, (int)info);
    LAPACK_dtrtri(&lo, &diag, &N, A, &N, &info);
    if (info != 0) return sqz_fail(err, "gptq: cannot invert the Cholesky factor of H (trtri info %d)", (int)info);
    /* row-major M[a][b] = L⁻¹[b][a] (b >= a); U[i][j] = L⁻¹[n-1-i][n-1-j] = M[n-1-j][n-1-i]:
     * an anti-transpose of the upper triangle, in place (pairs swapped once), then the
     * lower triangle cleared */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            int64_t pi = n - 1 - j, pj = n - 1 - i;
            if (pi < i || (pi == i && pj <= j)) continue;
            double t = A[i * n + j];
            A[i * n + j] = A[pi * n + pj];
            A[pi * n + pj] = t;
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) A[i * n + j] = 0.0;
    return SQZ_OK;
}

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
    if (!tt || !sqz_quant_supported(type))
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
    free(f->U); free(f->imp); free(f->perm); free(f->dead);
    memset(f, 0, sizeof *f);
}

int sqz_gptq_factor_init(sqz_gptq_factor *f, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                         sqz_err *err) {
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
    f->U = malloc(n2 * sizeof(double));
    f->imp = malloc((size_t)cols * sizeof(float));
    f->perm = malloc((size_t)cols * sizeof(int64_t));
    f->dead = calloc((size_t)cols, 1);
    double *diag = malloc((size_t)cols * sizeof(double));
    if (!f->U || !f->imp || !f->perm || !f->dead || !diag) {
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
    double *A = f->U;
    const int64_t *perm = f->perm;
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) A[i * cols + j] = i == j ? diag[perm[i]] : keep * H[perm[i] * cols + perm[j]];
    free(diag);
    if (chol_inverse_upper(A, cols, err)) {
        sqz_gptq_factor_free(f);
        return SQZ_ERR;
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
    sweep_ctx c = {type, (int)tt->block_size, f->act_order, rows, cols, cols / tt->block_size,
                   tt->block_size > 128 ? tt->block_size : 128, row_bytes, W, f->U, f->imp,
                   f->act_order ? f->perm : NULL, f->dead, dst, what, params, levels, 0, {{0}}};
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    sqz_pool_for(pool, rows, sweep_grain(rows, pool), sweep_task, &c);
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
    if (sqz_gptq_factor_init(&f, H, cols, opts, err)) return SQZ_ERR;
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

/* The CPU's Gram products (include/sqz/backend.h, "Grams"): the upper triangle of
 * Σ xᵀx in blocks of columns, single-precision products added into a double sum. */
#include <cblas.h>
#include <stdlib.h>

#include "sqz/backend.h"

/* Gram columns are done in fixed blocks, each only down to its own last row (the upper
 * triangle and the diagonal block): half the products of the full matrix. A block's
 * products are one SGEMM over the window's tokens (single precision, twice DGEMM's rate;
 * a window is a few hundred tokens, so each entry's relative error stays ~1e-6) added
 * into the double sum; each entry is one dot product over the tokens in order whatever
 * the thread count. */
#define GRAM_BLOCK 128 /* 64 spent a fifth more time in OpenBLAS's packing, 256 balances worse */

typedef struct {
    const float *x;
    double *g;
    int64_t T, w;
    int failed;
} syrk_ctx;

static void gram_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    syrk_ctx *c = vctx;
    const int64_t nblk = (c->w + GRAM_BLOCK - 1) / GRAM_BLOCK;
    float *p = malloc((size_t)c->w * GRAM_BLOCK * sizeof(float));
    if (!p) {
        c->failed = 1; /* a benign race: every writer stores 1 */
        return;
    }
    for (int64_t k = b; k < e; k++) {
        const int64_t blk = nblk - 1 - k; /* the widest (last) blocks first: better balance */
        int64_t c0 = blk * GRAM_BLOCK, c1 = c0 + GRAM_BLOCK < c->w ? c0 + GRAM_BLOCK : c->w, nb = c1 - c0;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c1, (int)nb, (int)c->T, 1.0f, c->x, (int)c->w,
                    c->x + c0, (int)c->w, 0.0f, p, (int)nb);
        for (int64_t r = 0; r < c1; r++)
            for (int64_t j = 0; j < nb; j++) c->g[r * c->w + c0 + j] += p[r * nb + j];
    }
    free(p);
}

int sqz_gram_upper_add(sqz_pool *pool, const float *x, int64_t T, int64_t n, double *G, sqz_err *err) {
    syrk_ctx c = {x, G, T, n, 0};
    /* the pool is the parallelism; OpenBLAS's own threads would also change its kernels'
     * summation order with the caller's setting */
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    sqz_pool_for(pool, (n + GRAM_BLOCK - 1) / GRAM_BLOCK, 1, gram_task, &c);
    openblas_set_num_threads(blas_threads);
    return c.failed ? sqz_fail(err, "calibration: out of memory for a %lld-wide Gram block", (long long)n) : SQZ_OK;
}

typedef struct {
    double *G;
    int64_t n;
} mirror_ctx;

/* Row bands of 64 [b, e) (band index): each band's lower part read from the upper
 * triangle in 64 × 64 tiles (a column-strided read row by row costs a cache miss per
 * element on an 8960-wide Gram). */
static void mirror_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const mirror_ctx *c = vctx;
    double *G = c->G;
    const int64_t n = c->n;
    for (int64_t band = b; band < e; band++) {
        int64_t i0 = band * 64, i1 = i0 + 64 < n ? i0 + 64 : n;
        for (int64_t j0 = 0; j0 < i1; j0 += 64)
            for (int64_t i = i0; i < i1; i++) {
                int64_t j1 = j0 + 64 < i ? j0 + 64 : i;
                for (int64_t j = j0; j < j1; j++) G[i * n + j] = G[j * n + i];
            }
    }
}

void sqz_gram_mirror(sqz_pool *pool, double *G, int64_t n) {
    mirror_ctx c = {G, n};
    sqz_pool_for(pool, (n + 63) / 64, 1, mirror_task, &c);
}

double sqz_gram_flops(int64_t T, int64_t n) {
    double f = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += GRAM_BLOCK) {
        int64_t c1 = c0 + GRAM_BLOCK < n ? c0 + GRAM_BLOCK : n;
        f += 2.0 * (double)T * (double)c1 * (double)(c1 - c0);
    }
    return f;
}

/* The compute backend (include/sqz/backend.h): the CPU implementation, and the dispatch
 * to src/cuda/ when the build has it. */
#include "sqz/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#ifdef SQZ_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

struct sqz_backend {
    sqz_device device;
    sqz_pool *pool;
    char desc[160];
#ifdef SQZ_HAVE_CUDA
    sqz_cuda *cuda;
#endif
};

struct sqz_gram_acc {
    sqz_pool *pool; /* the CPU's threads */
    int64_t n;
    double *G;     /* the caller's sum: the CPU adds each batch into its upper triangle */
    float *stage;  /* CPU: rows waiting for the next batch (SQZ_GRAM_BATCH × n), made on first use */
    int64_t staged;
#ifdef SQZ_HAVE_CUDA
    sqz_cuda_gram *cuda;
#endif
};

int sqz_device_parse(const char *s, sqz_device *d, sqz_err *err) {
    if (s && !strcmp(s, "cpu")) *d = SQZ_DEVICE_CPU;
    else if (s && !strcmp(s, "cuda")) *d = SQZ_DEVICE_CUDA;
    else return sqz_fail(err, "--device '%s': expected cpu or cuda", s ? s : "");
    return SQZ_OK;
}

const char *sqz_device_name(sqz_device d) { return d == SQZ_DEVICE_CUDA ? "cuda" : "cpu"; }

int sqz_cuda_built(void) {
#ifdef SQZ_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int sqz_backend_create(sqz_device d, sqz_pool *pool, sqz_backend **out, sqz_err *err) {
    *out = NULL;
    if (d != SQZ_DEVICE_CPU && d != SQZ_DEVICE_CUDA) return sqz_fail(err, "backend: unknown device %d", (int)d);
#ifndef SQZ_HAVE_CUDA
    if (d == SQZ_DEVICE_CUDA)
        return sqz_fail(err, "--device cuda: this sqz was built without CUDA (configure with cmake -DSQZ_CUDA=ON "
                             "on a machine with the CUDA toolkit)");
#endif
    sqz_backend *b = calloc(1, sizeof *b);
    if (!b) return sqz_fail(err, "backend: out of memory");
    b->device = d;
    b->pool = pool;
    if (d == SQZ_DEVICE_CPU) {
        snprintf(b->desc, sizeof b->desc, "cpu, %d threads", pool ? sqz_pool_threads(pool) : 1);
    } else {
#ifdef SQZ_HAVE_CUDA
        if (sqz_cuda_open(0, &b->cuda, b->desc, sizeof b->desc, err)) {
            free(b);
            return SQZ_ERR;
        }
#endif
    }
    *out = b;
    return SQZ_OK;
}

void sqz_backend_free(sqz_backend *b) {
    if (!b) return;
#ifdef SQZ_HAVE_CUDA
    sqz_cuda_close(b->cuda);
#endif
    free(b);
}

sqz_device sqz_backend_device(const sqz_backend *b) { return b ? b->device : SQZ_DEVICE_CPU; }
const char *sqz_backend_describe(const sqz_backend *b) { return b ? b->desc : "cpu"; }

uint64_t sqz_backend_peak_bytes(const sqz_backend *b) {
#ifdef SQZ_HAVE_CUDA
    if (b && b->cuda) return sqz_cuda_peak_bytes(b->cuda);
#endif
    (void)b;
    return 0;
}

/* ---------------------------------------------------------------- Grams */

/* A sum of width n into G: the symmetric Gram, or (cross) the GPU-only cross Gram. */
static int gram_open(sqz_backend *b, sqz_pool *pool, int64_t n, double *G, int cross, sqz_gram_acc **out,
                     sqz_err *err) {
    const char *what = cross ? "cross gram" : "gram";
    *out = NULL;
    if (n <= 0 || n > 65536) return sqz_fail(err, "%s: width %lld (expected 1 .. 65536)", what, (long long)n);
    if (!G) return sqz_fail(err, "%s: no sum to add into", what);
    if (cross && !(b && sqz_backend_device(b) == SQZ_DEVICE_CUDA))
        return sqz_fail(err, "cross gram: only on the GPU (the CPU's passes form these products themselves)");
    sqz_gram_acc *g = calloc(1, sizeof *g);
    if (!g) return sqz_fail(err, "%s: out of memory", what);
    g->pool = b ? b->pool : pool;
    g->n = n;
    g->G = G;
#ifdef SQZ_HAVE_CUDA
    if (b && b->cuda && (cross ? sqz_cuda_xgram_open : sqz_cuda_gram_open)(b->cuda, n, &g->cuda, err)) {
        free(g);
        return SQZ_ERR;
    }
#endif
    *out = g;
    return SQZ_OK;
}

int sqz_gram_open(sqz_backend *b, sqz_pool *pool, int64_t n, double *G, sqz_gram_acc **out, sqz_err *err) {
    return gram_open(b, pool, n, G, 0, out, err);
}

int sqz_xgram_open(sqz_backend *b, int64_t n, double *C, sqz_gram_acc **out, sqz_err *err) {
    return gram_open(b, NULL, n, C, 1, out, err);
}

/* The staged rows' products into G's upper triangle. */
static int flush(sqz_gram_acc *g, sqz_err *err) {
    if (!g->staged) return SQZ_OK;
    int rc = sqz_gram_upper_add(g->pool, g->stage, g->staged, g->n, g->G, err);
    g->staged = 0;
    return rc;
}

int sqz_gram_add(sqz_gram_acc *g, const float *x, int64_t T, sqz_err *err) {
    if (T <= 0) return SQZ_OK;
#ifdef SQZ_HAVE_CUDA
    if (g->cuda) return sqz_cuda_gram_add(g->cuda, x, T, err);
#endif
    if (!g->stage && !(g->stage = malloc((size_t)SQZ_GRAM_BATCH * (size_t)g->n * sizeof(float))))
        return sqz_fail(err, "gram: out of memory for %d × %lld staged rows", SQZ_GRAM_BATCH, (long long)g->n);
    while (T > 0) {
        int64_t k = SQZ_GRAM_BATCH - g->staged < T ? SQZ_GRAM_BATCH - g->staged : T;
        memcpy(g->stage + g->staged * g->n, x, (size_t)(k * g->n) * sizeof(float));
        g->staged += k;
        x += k * g->n;
        T -= k;
        if (g->staged == SQZ_GRAM_BATCH && flush(g, err)) return SQZ_ERR;
    }
    return SQZ_OK;
}

int sqz_gram_finish(sqz_gram_acc *g, sqz_err *err) {
#ifdef SQZ_HAVE_CUDA
    if (g->cuda) return sqz_cuda_gram_finish(g->cuda, g->G, err);
#endif
    if (flush(g, err)) return SQZ_ERR;
    sqz_gram_mirror(g->pool, g->G, g->n);
    free(g->stage); /* the Grams' consumer (scoring, GPTQ) needs the memory more */
    g->stage = NULL;
    return SQZ_OK;
}

void sqz_gram_close(sqz_gram_acc *g) {
    if (!g) return;
#ifdef SQZ_HAVE_CUDA
    sqz_cuda_gram_close(g->cuda);
#endif
    free(g->stage);
    free(g);
}

/* ---------------------------------------------------------------- GPTQ */

#ifdef SQZ_HAVE_CUDA
static int cuda_chol(void *ctx, void *A, int64_t n, int single, sqz_err *err) {
    return sqz_cuda_chol_inverse_upper(ctx, A, n, single, err);
}
#endif

int sqz_backend_gptq_factor(sqz_backend *b, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                            sqz_gptq_factor *f, sqz_err *err) {
#ifdef SQZ_HAVE_CUDA
    if (b && b->cuda) return sqz_gptq_factor_init_with(f, H, cols, opts, cuda_chol, b->cuda, err);
#endif
    (void)b;
    return sqz_gptq_factor_init(f, H, cols, opts, err);
}

/* ---------------------------------------------------------------- decoder blocks */

struct sqz_block_pass {
#ifdef SQZ_HAVE_CUDA
    sqz_cuda_block *cuda;
#endif
    int unused;
};

int sqz_block_pass_open(sqz_backend *b, int64_t max_T, const sqz_block_desc *widest, sqz_block_pass **out,
                        sqz_err *err) {
    *out = NULL;
#ifdef SQZ_HAVE_CUDA
    if (b && b->cuda) {
        sqz_block_pass *p = calloc(1, sizeof *p);
        if (!p) return sqz_fail(err, "block pass: out of memory");
        if (sqz_cuda_block_open(b->cuda, max_T, widest, &p->cuda, err)) {
            free(p);
            return SQZ_ERR;
        }
        *out = p;
        return SQZ_OK;
    }
#endif
    (void)b;
    (void)max_T;
    (void)widest;
    return sqz_fail(err, "block pass: the CPU backend runs blocks through sqz_forward_layer");
}

int sqz_block_pass_load(sqz_block_pass *p, const sqz_block_desc *d, sqz_err *err) {
#ifdef SQZ_HAVE_CUDA
    return sqz_cuda_block_load(p->cuda, d, err);
#else
    (void)p;
    (void)d;
    return sqz_fail(err, "block pass: not in this build");
#endif
}

#define SQZ_BLOCK_MAX_WSITES 16 /* as sqz_cuda_block_io's arrays */

#ifdef SQZ_HAVE_CUDA
static int gpu_acc(sqz_gram_acc *g, const char *what, int s, sqz_cuda_gram **out, sqz_err *err) {
    if (!g->cuda) return sqz_fail(err, "block pass: site %d's %s is not on the GPU", s, what);
    if (g->staged) return sqz_fail(err, "block pass: site %d's %s has CPU rows waiting", s, what);
    *out = g->cuda;
    return SQZ_OK;
}
#endif

int sqz_block_pass_run(sqz_block_pass *p, float *x, int64_t T, const sqz_block_io *io, sqz_err *err) {
#ifdef SQZ_HAVE_CUDA
    sqz_cuda_block_io c;
    memset(&c, 0, sizeof c);
    if (io) {
        for (int s = 0; s < SQZ_BLOCK_SITES; s++) {
            if (io->sites && io->sites[s] && gpu_acc(io->sites[s], "Gram", s, &c.sites[s], err)) return SQZ_ERR;
            if (io->xsites && io->xsites[s] && gpu_acc(io->xsites[s], "cross Gram", s, &c.xsites[s], err))
                return SQZ_ERR;
        }
        if (io->n_wsites < 0 || io->n_wsites > SQZ_BLOCK_MAX_WSITES)
            return sqz_fail(err, "block pass: %d weighted Grams (at most %d)", io->n_wsites, SQZ_BLOCK_MAX_WSITES);
        for (int i = 0; i < io->n_wsites; i++) {
            const sqz_block_wsite *ws = &io->wsites[i];
            if (ws->site < 0 || ws->site >= SQZ_BLOCK_SITES || !ws->w || !ws->acc)
                return sqz_fail(err, "block pass: weighted Gram %d (site %d) without weights or sum", i, ws->site);
            if (gpu_acc(ws->acc, "weighted Gram", ws->site, &c.wacc[i], err)) return SQZ_ERR;
            c.wsite_of[i] = ws->site, c.w[i] = ws->w;
        }
        c.n_w = io->n_wsites;
        c.save = io->save;
        c.stop_at_down_in = io->stop_at_down_in;
    }
    return sqz_cuda_block_run(p->cuda, x, T, &c, err);
#else
    (void)p;
    (void)x;
    (void)T;
    (void)io;
    return sqz_fail(err, "block pass: not in this build");
#endif
}

int sqz_block_pass_backward(sqz_block_pass *p, const float *x_in, float *dx, int64_t T, sqz_block_grad_hook hook,
                            void *ctx, sqz_err *err) {
#ifdef SQZ_HAVE_CUDA
    return sqz_cuda_block_backward(p->cuda, x_in, dx, T, hook, ctx, err);
#else
    (void)p;
    (void)x_in;
    (void)dx;
    (void)T;
    (void)hook;
    (void)ctx;
    return sqz_fail(err, "block pass: not in this build");
#endif
}

void sqz_block_pass_close(sqz_block_pass *p) {
    if (!p) return;
#ifdef SQZ_HAVE_CUDA
    sqz_cuda_block_close(p->cuda);
#endif
    free(p);
}

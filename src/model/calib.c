/* Calibration windows and per-layer input Grams: see include/sqz/calib.h. */
#include "sqz/calib.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: a small, well-mixed generator whose whole state is one integer. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int sqz_calib_windows(const int32_t *tokens, int64_t n_tokens, int nsamples, int seqlen, uint64_t seed,
                      int32_t *out, sqz_err *err) {
    if (nsamples <= 0 || seqlen <= 0)
        return sqz_fail(err, "calibration: nsamples %d and seqlen %d must both be >= 1", nsamples, seqlen);
    if (n_tokens < seqlen)
        return sqz_fail(err, "calibration: the text has %lld tokens, fewer than one window of seqlen %d",
                        (long long)n_tokens, seqlen);
    uint64_t s = seed;
    uint64_t range = (uint64_t)(n_tokens - seqlen) + 1;
    for (int i = 0; i < nsamples; i++) {
        /* rejection keeps the start uniform: drop draws from the incomplete last range */
        uint64_t limit = UINT64_MAX - UINT64_MAX % range, r;
        do r = splitmix64(&s);
        while (r >= limit);
        memcpy(out + (int64_t)i * seqlen, tokens + r % range, (size_t)seqlen * sizeof(int32_t));
    }
    return SQZ_OK;
}

/* Windows from separate sequences: see sqz_calib_split. */
static int split_sequences(const int32_t *ids, int64_t n_ids, const int64_t *starts, int n_seq, int nsamples,
                           int heldout, int64_t L, int32_t *w, int32_t *h, sqz_err *err) {
    int n_held = n_seq / 10 > 1 ? n_seq / 10 : 1, n_cal = n_seq - n_held;
    if (n_cal < 1)
        return sqz_fail(err, "%d sequences: need at least two (one for calibration, one held out)", n_seq);
    for (int q = 0; q < n_seq; q++) {
        int64_t len = (q + 1 < n_seq ? starts[q + 1] : n_ids) - starts[q];
        if (len < L)
            return sqz_fail(err, "sequence %d has %lld tokens, fewer than --seqlen %lld", q, (long long)len,
                            (long long)L);
    }
    for (int64_t i = 0; i < nsamples; i++) memcpy(w + i * L, ids + starts[i % n_cal], (size_t)L * sizeof(int32_t));
    for (int64_t i = 0; i < heldout; i++)
        memcpy(h + i * L, ids + starts[n_cal + i % n_held], (size_t)L * sizeof(int32_t));
    return SQZ_OK;
}

int sqz_calib_split(const int32_t *ids, int64_t n_ids, const int64_t *starts, int n_seq, int nsamples, int heldout,
                    int seqlen, uint64_t seed, int32_t **windows, int32_t **held, sqz_err *err) {
    *windows = NULL, *held = NULL;
    if (nsamples <= 0 || heldout <= 0 || seqlen <= 0)
        return sqz_fail(err, "calibration: nsamples %d, heldout %d and seqlen %d must all be >= 1", nsamples, heldout,
                        seqlen);
    int64_t L = seqlen, held_len = n_ids / 10 > L ? n_ids / 10 : L, cal_len = n_ids - held_len;
    if (!starts && cal_len < L)
        return sqz_fail(err, "%lld calibration tokens: need at least two windows of --seqlen %lld (one for "
                        "calibration, one held out)", (long long)n_ids, (long long)L);
    int32_t *w = malloc((size_t)(nsamples * L) * sizeof(int32_t)), *h = malloc((size_t)(heldout * L) * sizeof(int32_t));
    int rc = !w || !h ? sqz_fail(err, "out of memory for the calibration windows")
             : starts ? split_sequences(ids, n_ids, starts, n_seq, nsamples, heldout, L, w, h, err)
                      : (sqz_calib_windows(ids, cal_len, nsamples, seqlen, seed, w, err) ||
                         sqz_calib_windows(ids + cal_len, held_len, heldout, seqlen, seed + 1, h, err))
                            ? SQZ_ERR
                            : SQZ_OK;
    if (rc) {
        free(w);
        free(h);
        return SQZ_ERR;
    }
    *windows = w, *held = h;
    return SQZ_OK;
}

/* ---------------------------------------------------------------- Grams */

typedef struct {
    sqz_pool *pool;
    sqz_layer_grams g;
    float *xw;    /* the hooked activations, row t scaled by √w_t */
    size_t xw_n;
    const float *const *weights; /* [n_layer·7][T] or NULL */
    int64_t tok0; /* the window's first token in the weights */
    sqz_stage_times *times; /* or NULL */
    double hook_seconds;    /* in the Gram hook, this layer */
    /* this layer's sums into g (sqz/backend.h), NULL where there is none */
    sqz_gram_acc *acc[SQZ_SITE_COUNT], *accw[SQZ_CALIB_KINDS];
} acc_ctx;

static void accs_close(acc_ctx *a) {
    for (int s = 0; s < SQZ_SITE_COUNT; s++) sqz_gram_close(a->acc[s]);
    for (int k = 0; k < SQZ_CALIB_KINDS; k++) sqz_gram_close(a->accw[k]);
    memset(a->acc, 0, sizeof a->acc);
    memset(a->accw, 0, sizeof a->accw);
}

/* Completes every sum of the layer into its Gram. */
static int accs_finish(acc_ctx *a, sqz_err *err) {
    for (int s = 0; s < SQZ_SITE_COUNT; s++)
        if (a->acc[s] && sqz_gram_finish(a->acc[s], err)) return SQZ_ERR;
    for (int k = 0; k < SQZ_CALIB_KINDS; k++)
        if (a->accw[k] && sqz_gram_finish(a->accw[k], err)) return SQZ_ERR;
    return SQZ_OK;
}

static const int kSiteOfKind[SQZ_CALIB_KINDS] = {SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN,
                                                SQZ_SITE_ATTN_O_IN, SQZ_SITE_FFN_IN, SQZ_SITE_FFN_IN,
                                                SQZ_SITE_FFN_DOWN_IN};

int sqz_calib_site_of(int kind) { return kind >= 0 && kind < SQZ_CALIB_KINDS ? kSiteOfKind[kind] : -1; }


static int gram_hook(void *vctx, int layer, int site, const float *x, int64_t T, int64_t width, sqz_err *err) {
    acc_ctx *a = vctx;
    if (site < 0 || site >= SQZ_SITE_COUNT || a->g.n[site] != width)
        return sqz_fail(err, "calibration: layer %d site %d: width %lld, expected %lld", layer, site, (long long)width,
                        (long long)(site >= 0 && site < SQZ_SITE_COUNT ? a->g.n[site] : -1));
    size_t n = (size_t)T * (size_t)width;
    if (a->weights && n > a->xw_n) {
        float *p = realloc(a->xw, n * sizeof(float));
        if (!p) return sqz_fail(err, "calibration: out of memory for %lld × %lld activations", (long long)T,
                                (long long)width);
        a->xw = p;
        a->xw_n = n;
    }
    double t0 = sqz_now(), fl = sqz_gram_flops(T, width);
    if (sqz_gram_add(a->acc[site], x, T, err)) return SQZ_ERR;
    for (int k = 0; k < SQZ_CALIB_KINDS && a->weights; k++) {
        const float *w = a->weights[layer * SQZ_CALIB_KINDS + k];
        if (kSiteOfKind[k] != site || !w || !a->accw[k]) continue;
        for (int64_t t = 0; t < T; t++) {
            float r = (float)sqrt((double)w[a->tok0 + t]);
            for (int64_t i = 0; i < width; i++) a->xw[t * width + i] = r * x[t * width + i];
        }
        if (sqz_gram_add(a->accw[k], a->xw, T, err)) return SQZ_ERR;
        fl += sqz_gram_flops(T, width);
    }
    double dt = sqz_now() - t0;
    a->hook_seconds += dt;
    sqz_stage_add(a->times, SQZ_STAGE_GRAMS, dt, fl);
    return SQZ_OK;
}

static void grams_free(sqz_layer_grams *g) {
    for (int s = 0; s < SQZ_SITE_COUNT; s++) free(g->g[s]);
    for (int k = 0; k < SQZ_CALIB_KINDS; k++) free(g->gw[k]);
    memset(g, 0, sizeof *g);
}

/* Widths of layer l's Grams; 0 for absent blocks. */
static void layer_widths(const sqz_model *m, int l, int64_t n[SQZ_SITE_COUNT]) {
    const sqz_llama_config *c = &m->cfg;
    int nh = c->layer_n_head[l], nff = c->layer_n_ff[l];
    n[SQZ_SITE_ATTN_IN] = nh > 0 ? c->dim : 0;
    n[SQZ_SITE_ATTN_O_IN] = nh > 0 ? (int64_t)nh * c->head_dim : 0;
    n[SQZ_SITE_FFN_IN] = nff > 0 ? c->dim : 0;
    n[SQZ_SITE_FFN_DOWN_IN] = nff;
}

int sqz_calib_run(const sqz_model *m, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen,
                  sqz_calib_layer_fn fn, void *ctx, sqz_stage_times *times, sqz_err *err) {
    return sqz_calib_run_weighted(m, NULL, pool, windows, nsamples, seqlen, NULL, fn, ctx, times, err);
}

/* The calibration stream of one model, advanced a layer at a time (sqz/calib.h). */
struct sqz_calib_stepper {
    const sqz_model *m;
    sqz_backend *backend;
    int nsamples, seqlen;
    int next;              /* the next layer to step */
    float *X;              /* [T, dim]: every window's residual stream at layer `next` */
    sqz_fwd_ws *ws;        /* each layer's weights dequantized once for all windows (CPU) */
    sqz_block_pass *bp;    /* or: the layers run on the backend's GPU, Grams summed there */
    acc_ctx a;
    int64_t gw_n[SQZ_CALIB_KINDS];
};

int sqz_calib_begin(const sqz_model *m, sqz_backend *backend, sqz_pool *pool, const int32_t *windows, int nsamples,
                    int seqlen, const float *const *weights, sqz_stage_times *times, sqz_calib_stepper **out,
                    sqz_err *err) {
    *out = NULL;
    if (nsamples <= 0 || seqlen <= 0)
        return sqz_fail(err, "calibration: nsamples %d and seqlen %d must both be >= 1", nsamples, seqlen);
    const int64_t dim = m->cfg.dim, T = (int64_t)nsamples * seqlen;
    size_t nx, bytes;
    if (sqz_mul_size((size_t)T, (size_t)dim, &nx) || sqz_mul_size(nx, sizeof(float), &bytes))
        return sqz_fail(err, "calibration: %d × %d tokens × dim %lld overflows", nsamples, seqlen, (long long)dim);
    sqz_calib_stepper *st = calloc(1, sizeof *st);
    if (!st) return sqz_fail(err, "calibration: out of memory");
    st->m = m, st->backend = backend, st->nsamples = nsamples, st->seqlen = seqlen;
    st->a.pool = pool;
    st->a.weights = weights;
    st->a.times = times;
    if (!(st->X = malloc(bytes))) {
        sqz_calib_end(st);
        return sqz_fail(err, "calibration: out of memory for %zu bytes of activations", bytes);
    }
    for (int s = 0; s < nsamples; s++)
        if (sqz_forward_embed(m, windows + (int64_t)s * seqlen, seqlen, st->X + (int64_t)s * seqlen * dim, err)) {
            sqz_calib_end(st);
            return SQZ_ERR;
        }
    int rc;
    if (backend && sqz_backend_device(backend) == SQZ_DEVICE_CUDA) {
        sqz_block_desc widest; /* pruned layers are narrower */
        sqz_block_desc_widest(m, &widest);
        rc = sqz_block_pass_open(backend, seqlen, &widest, &st->bp, err);
    } else {
        rc = sqz_fwd_ws_create(m, pool, seqlen, &st->ws, err);
    }
    if (rc) {
        sqz_calib_end(st);
        return SQZ_ERR;
    }
    *out = st;
    return SQZ_OK;
}

/* Layer l over every window on the GPU: its weights as f32 copies loaded once, each window
 * in and out of the device, every Gram (plain and token-weighted) summed there. The Grams'
 * products run inside the pass, so their time and flops (*gram_flops) count as the
 * forward's (SQZ_STAGE_FORWARD: "forward with Grams" on the GPU). */
static int gpu_layer(sqz_calib_stepper *st, int l, double *gram_flops, sqz_err *err) {
    const sqz_model *m = st->m;
    acc_ctx *a = &st->a;
    const int64_t dim = m->cfg.dim, seqlen = st->seqlen;
    if (sqz_block_load_layer(st->bp, m, l, st->a.pool, err)) return SQZ_ERR;
    double fl = 0;
    for (int s = 0; s < SQZ_SITE_COUNT; s++)
        if (a->acc[s]) fl += st->nsamples * sqz_gram_flops(seqlen, a->g.n[s]);
    for (int k = 0; k < SQZ_CALIB_KINDS; k++)
        if (a->accw[k]) fl += st->nsamples * sqz_gram_flops(seqlen, a->g.n[kSiteOfKind[k]]);
    for (int s = 0; s < st->nsamples; s++) {
        sqz_block_wsite ws[SQZ_CALIB_KINDS];
        int n_ws = 0;
        for (int k = 0; k < SQZ_CALIB_KINDS; k++) {
            if (!a->accw[k]) continue;
            ws[n_ws++] = (sqz_block_wsite){kSiteOfKind[k], a->weights[l * SQZ_CALIB_KINDS + k] + (int64_t)s * seqlen,
                                           a->accw[k]};
        }
        sqz_block_io io = {.sites = a->acc, .wsites = ws, .n_wsites = n_ws};
        if (sqz_block_pass_run(st->bp, st->X + (int64_t)s * seqlen * dim, seqlen, &io, err)) return SQZ_ERR;
    }
    *gram_flops = fl;
    return SQZ_OK;
}

int sqz_calib_step(sqz_calib_stepper *st, sqz_layer_grams **g, sqz_err *err) {
    const sqz_model *m = st->m;
    const int l = st->next, nsamples = st->nsamples, seqlen = st->seqlen;
    const int64_t dim = m->cfg.dim;
    acc_ctx *a = &st->a;
    if (l >= m->cfg.n_layer) return sqz_fail(err, "calibration: stepped past the last layer (%d)", m->cfg.n_layer);
    int64_t n[SQZ_SITE_COUNT];
    layer_widths(m, l, n);
    for (int s = 0; s < SQZ_SITE_COUNT; s++) {
        if (n[s] != a->g.n[s]) {
            free(a->g.g[s]);
            a->g.g[s] = NULL;
            a->g.n[s] = n[s];
            if (n[s] > 0 && !(a->g.g[s] = malloc((size_t)(n[s] * n[s]) * sizeof(double))))
                return sqz_fail(err, "calibration: out of memory for a %lld × %lld Gram", (long long)n[s],
                                (long long)n[s]);
        }
        if (n[s] > 0) memset(a->g.g[s], 0, (size_t)(n[s] * n[s]) * sizeof(double));
        if (n[s] > 0 && sqz_gram_open(st->backend, a->pool, n[s], a->g.g[s], &a->acc[s], err)) return SQZ_ERR;
    }
    for (int k = 0; k < SQZ_CALIB_KINDS; k++) { /* weighted Grams where this layer has weights */
        int64_t w = n[kSiteOfKind[k]];
        int want = a->weights && a->weights[l * SQZ_CALIB_KINDS + k] && w > 0;
        /* kept from layer to layer while the width stays: fresh pages of an 8960-wide
         * Gram cost more to fault in than to clear */
        if (!want || st->gw_n[k] != w) {
            free(a->g.gw[k]);
            a->g.gw[k] = NULL;
            st->gw_n[k] = 0;
        }
        if (!want) continue;
        if (!a->g.gw[k] && !(a->g.gw[k] = malloc((size_t)(w * w) * sizeof(double))))
            return sqz_fail(err, "calibration: out of memory for a %lld × %lld Gram", (long long)w, (long long)w);
        st->gw_n[k] = w;
        memset(a->g.gw[k], 0, (size_t)(w * w) * sizeof(double));
        if (sqz_gram_open(st->backend, a->pool, w, a->g.gw[k], &a->accw[k], err)) return SQZ_ERR;
    }
    double t0 = sqz_now();
    a->hook_seconds = 0.0;
    double gpu_gram_flops = 0.0;
    if (st->bp) {
        if (gpu_layer(st, l, &gpu_gram_flops, err)) return SQZ_ERR;
    } else {
        for (int s = 0; s < nsamples; s++) {
            a->tok0 = (int64_t)s * seqlen;
            if (sqz_forward_layer_ws(st->ws, m, l, st->X + (int64_t)s * seqlen * dim, seqlen, gram_hook, a, err))
                return SQZ_ERR;
        }
    }
    double t1 = sqz_now();
    int frc = accs_finish(a, err);
    accs_close(a);
    sqz_stage_add(a->times, SQZ_STAGE_GRAMS, sqz_now() - t1, 0.0); /* the last batches (flops counted per add) */
    if (frc) return SQZ_ERR;
    sqz_stage_add(a->times, SQZ_STAGE_FORWARD, t1 - t0 - a->hook_seconds,
                  (double)nsamples * sqz_forward_flops(m, l, seqlen) + gpu_gram_flops);
    if (st->ws) sqz_fwd_ws_forget(st->ws); /* the layer's f32 weights: the caller needs the memory more */
    st->next = l + 1;
    *g = &a->g;
    return SQZ_OK;
}

int sqz_calib_next(const sqz_calib_stepper *st) { return st->next; }

void sqz_calib_end(sqz_calib_stepper *st) {
    if (!st) return;
    free(st->X);
    free(st->a.xw);
    accs_close(&st->a);
    grams_free(&st->a.g);
    sqz_fwd_ws_free(st->ws);
    sqz_block_pass_close(st->bp);
    free(st);
}

int sqz_calib_run_weighted(const sqz_model *m, sqz_backend *backend, sqz_pool *pool, const int32_t *windows,
                           int nsamples, int seqlen, const float *const *weights, sqz_calib_layer_fn fn, void *ctx,
                           sqz_stage_times *times, sqz_err *err) {
    sqz_calib_stepper *st;
    if (sqz_calib_begin(m, backend, pool, windows, nsamples, seqlen, weights, times, &st, err)) return SQZ_ERR;
    const int64_t T = (int64_t)nsamples * seqlen;
    int rc = SQZ_OK;
    for (int l = 0; l < m->cfg.n_layer && rc == SQZ_OK; l++) {
        sqz_layer_grams *g;
        rc = sqz_calib_step(st, &g, err) || fn(ctx, l, g, T, err) ? SQZ_ERR : SQZ_OK;
    }
    sqz_calib_end(st);
    return rc;
}

/* ---------------------------------------------------------------- all in memory */

static int keep_layer(void *ctx, int layer, sqz_layer_grams *g, int64_t n_tokens, sqz_err *err) {
    sqz_model_grams *out = ctx;
    sqz_layer_grams *d = &out->layers[layer];
    out->n_tokens = n_tokens;
    for (int s = 0; s < SQZ_SITE_COUNT; s++) {
        d->n[s] = g->n[s];
        if (g->n[s] == 0) continue;
        size_t bytes = (size_t)(g->n[s] * g->n[s]) * sizeof(double);
        if (!(d->g[s] = malloc(bytes))) return sqz_fail(err, "calibration: out of memory for layer %d's Grams", layer);
        memcpy(d->g[s], g->g[s], bytes);
    }
    return SQZ_OK;
}

int sqz_calib_grams(const sqz_model *m, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen,
                    sqz_model_grams *out, sqz_err *err) {
    memset(out, 0, sizeof *out);
    out->layers = calloc((size_t)m->cfg.n_layer, sizeof *out->layers);
    if (!out->layers) return sqz_fail(err, "calibration: out of memory");
    out->n_layer = m->cfg.n_layer;
    if (sqz_calib_run(m, pool, windows, nsamples, seqlen, keep_layer, out, NULL, err)) {
        sqz_calib_grams_free(out);
        return SQZ_ERR;
    }
    return SQZ_OK;
}

void sqz_calib_grams_free(sqz_model_grams *g) {
    if (g->layers)
        for (int l = 0; l < g->n_layer; l++) grams_free(&g->layers[l]);
    free(g->layers);
    memset(g, 0, sizeof *g);
}

/* End-to-end tuning of a quantized model's row scales (see include/sqz/tune.h). */
#include "sqz/tune.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/grad.h"
#include "sqz/quant.h"

#define TILE_ROWS 64 /* rows of a weight per task of the hook's products */

/* One tuned weight: its bytes as read (orig, in the input's mapping), the working copy
 * the model reads (work = orig with each row's scales times exp(theta)), and Adam's state. */
typedef struct {
    sqz_tensor *t;
    int is_norm;      /* an RMSNorm's F32 gain vector: one θ per element (w_i·e^θ_i) */
    const uint8_t *orig;
    uint8_t *work;
    int64_t rows, cols;
    size_t row_bytes;
    int64_t blocks_per_row;
    double *theta, *best, *grad, *m, *v;
} tuned;

typedef struct {
    sqz_model q;
    int have_q;
    tuned *tt;
    int n_tt;
    int *index;   /* [n_layer · 7]: the tuned tensor of (layer, kind), or -1 */
    int *norm_index; /* [n_layer · 2]: the tuned attention / FFN norm of a layer, or -1 */
    int out_index, embd_index; /* the tuned output head and token embedding (the same one when tied), or -1 */
    float *erow;  /* [dim]: an embedding row */
    sqz_pool *pool;
    int n_threads;
    float *wbuf, *ybuf; /* per thread: TILE_ROWS × widest row, seqlen × TILE_ROWS */
    int64_t wide, seqlen;
    /* the hook's current site */
    const sqz_grad_site *site;
    const tuned *cur;
    int failed;
} tune_ctx;

/* Rows [b, e) of tiles: Ŵ's rows dequantized, y = x Ŵᵀ for them, grad_j += Σ_t g_tj y_tj. */
static void grad_task(void *vctx, int64_t b, int64_t e, int thread) {
    tune_ctx *c = vctx;
    const sqz_grad_site *s = c->site;
    const tuned *u = c->cur;
    float *W = c->wbuf + (int64_t)thread * TILE_ROWS * c->wide, *Y = c->ybuf + (int64_t)thread * c->seqlen * TILE_ROWS;
    for (int64_t tile = b; tile < e; tile++) {
        int64_t r0 = tile * TILE_ROWS, n = u->rows - r0 < TILE_ROWS ? u->rows - r0 : TILE_ROWS;
        sqz_err err;
        if (sqz_tensor_rows_f32(u->t, r0, n, W, &err)) {
            c->failed = 1;
            return;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->n, (int)n, (int)u->cols, 1.0f, s->x, (int)s->in,
                    W, (int)u->cols, 0.0f, Y, (int)n);
        for (int64_t j = 0; j < n; j++) {
            double acc = 0.0;
            for (int64_t t = 0; t < s->n; t++) acc += (double)s->g[t * s->out + r0 + j] * Y[t * n + j];
            u->grad[r0 + j] += acc;
        }
    }
}

static int tune_hook(void *vctx, const sqz_grad_site *s, sqz_err *err) {
    tune_ctx *c = vctx;
    if (s->kind == SQZ_LIN_EMBD) { /* row v moves the stream's input wherever token v stands */
        if (c->embd_index < 0) return SQZ_OK;
        tuned *u = &c->tt[c->embd_index];
        for (int64_t t = 0; t < s->n; t++) {
            int64_t v = s->tokens[t];
            if (sqz_tensor_rows_f32(u->t, v, 1, c->erow, err)) return SQZ_ERR;
            double acc = 0.0;
            for (int64_t i = 0; i < s->out; i++) acc += (double)s->g[t * s->out + i] * c->erow[i];
            u->grad[v] += acc;
        }
        return SQZ_OK;
    }
    int i = s->kind == SQZ_LIN_OUTPUT ? c->out_index
            : s->layer >= 0 && s->kind < SQZ_LIN_PER_LAYER ? c->index[s->layer * SQZ_LIN_PER_LAYER + s->kind] : -1;
    if (i < 0) return SQZ_OK;
    c->site = s;
    c->cur = &c->tt[i];
    c->failed = 0;
    sqz_pool_for(c->pool, (c->tt[i].rows + TILE_ROWS - 1) / TILE_ROWS, 1, grad_task, c);
    if (c->failed) return sqz_fail(err, "tune: cannot dequantize tensor '%s'", c->tt[i].t->name);
    return SQZ_OK;
}

/* The norms' sites: x the norm's output, g its gradient; ∂L/∂θ_i = Σ_t g_ti x_ti. */
static int norm_hook(void *vctx, const sqz_grad_site *s, sqz_err *err) {
    (void)err;
    tune_ctx *c = vctx;
    int i = c->norm_index[s->layer * 2 + (s->kind == SQZ_GRAD_NORM_FFN)];
    if (i < 0) return SQZ_OK;
    tuned *u = &c->tt[i];
    for (int64_t t = 0; t < s->n; t++)
        for (int64_t k = 0; k < u->rows; k++) u->grad[k] += (double)s->g[t * s->out + k] * s->x[t * s->in + k];
    return SQZ_OK;
}

/* work ← orig with row j's scales times exp(theta_j) (a norm: element j). */
static void apply(tuned *u, const double *theta) {
    if (u->is_norm) {
        const float *o = (const float *)u->orig;
        float *w = (float *)u->work;
        for (int64_t j = 0; j < u->rows; j++) w[j] = theta[j] != 0.0 ? (float)((double)o[j] * exp(theta[j])) : o[j];
        return;
    }
    memcpy(u->work, u->orig, u->t->nbytes);
    for (int64_t j = 0; j < u->rows; j++)
        if (theta[j] != 0.0) sqz_scale_blocks(u->t->type, u->work + j * u->row_bytes, u->blocks_per_row, exp(theta[j]));
}

/* The reference's next-token probabilities on n windows of T tokens: [n][T][V]. */
static int ref_probs(const sqz_model *ref, sqz_pool *pool, const int32_t *windows, int n, int64_t T, float *out,
                     sqz_err *err) {
    const int64_t V = ref->cfg.n_vocab;
    for (int w = 0; w < n; w++) {
        float *z = out + (int64_t)w * T * V;
        if (sqz_forward(ref, pool, windows + (int64_t)w * T, T, 0, z, err)) return SQZ_ERR;
        for (int64_t t = 0; t < T; t++) {
            float *r = z + t * V, mx = r[0];
            for (int64_t j = 1; j < V; j++) mx = r[j] > mx ? r[j] : mx;
            double sum = 0.0;
            for (int64_t j = 0; j < V; j++) sum += exp((double)r[j] - mx);
            for (int64_t j = 0; j < V; j++) r[j] = (float)(exp((double)r[j] - mx) / sum);
        }
    }
    return SQZ_OK;
}

/* Mean KL over the scored positions of n windows (probs their targets). */
static int mean_kl(sqz_grad *g, const int32_t *windows, int n, int64_t T, const float *probs, double *out,
                   sqz_err *err) {
    double total = 0.0;
    sqz_grad_set_targets(g, probs);
    if (sqz_grad_windows(g, windows, n, T, 1.0, NULL, NULL, &total, NULL, err)) return SQZ_ERR;
    *out = total / ((double)n * (double)(T - 1));
    return SQZ_OK;
}

static void ctx_free(tune_ctx *c) {
    for (int i = 0; c->tt && i < c->n_tt; i++) {
        tuned *u = &c->tt[i];
        if (u->t) u->t->data = u->orig; /* the model is freed next; its tensors point back into the map */
        free(u->work); free(u->theta); free(u->best); free(u->grad); free(u->m); free(u->v);
    }
    free(c->tt);
    free(c->index);
    free(c->norm_index);
    free(c->erow);
    free(c->wbuf);
    free(c->ybuf);
    if (c->have_q) sqz_model_free(&c->q);
}

/* The model's own (mutable) entry of one of its tensors. */
static sqz_tensor *entry_of(sqz_model *q, const sqz_tensor *ct) {
    for (int64_t k = 0; ct && k < q->gguf.n_tensors; k++)
        if (&q->gguf.tensors[k] == ct) return &q->gguf.tensors[k];
    return NULL;
}

static int add_tuned(tune_ctx *c, sqz_tensor *t, int is_norm, sqz_err *err) {
    tuned *u = &c->tt[c->n_tt];
    u->t = t;
    u->is_norm = is_norm;
    u->orig = t->data;
    u->rows = is_norm ? t->ne[0] : t->ne[1], u->cols = is_norm ? 1 : t->ne[0];
    u->row_bytes = t->nbytes / (size_t)u->rows;
    u->blocks_per_row = is_norm ? 1 : u->cols / sqz_type_get(t->type)->block_size;
    u->work = malloc(t->nbytes);
    u->theta = calloc((size_t)u->rows, sizeof(double));
    u->best = calloc((size_t)u->rows, sizeof(double));
    u->grad = calloc((size_t)u->rows, sizeof(double));
    u->m = calloc((size_t)u->rows, sizeof(double));
    u->v = calloc((size_t)u->rows, sizeof(double));
    if (!u->work || !u->theta || !u->best || !u->grad || !u->m || !u->v)
        return sqz_fail(err, "tune: out of memory for tensor '%s'", t->name);
    memcpy(u->work, u->orig, t->nbytes);
    t->data = u->work;
    if (u->cols > c->wide) c->wide = u->cols;
    return c->n_tt++;
}

static int has_scales(const sqz_tensor *t) {
    const sqz_type_traits *tr = t ? sqz_type_get(t->type) : NULL;
    return tr && tr->n_scales && t->n_dims == 2;
}

/* The tensors to tune: every per-layer linear whose type has linear scale fields, (norms)
 * every layer's F32 RMSNorm gains, (head) the output head's and the token embedding's
 * rows when their types have scale fields. */
static int select_tensors(tune_ctx *c, int norms, int head, sqz_err *err) {
    sqz_model *q = &c->q;
    const int n = q->cfg.n_layer * SQZ_LIN_PER_LAYER;
    c->index = malloc((size_t)n * sizeof(int));
    c->norm_index = malloc((size_t)q->cfg.n_layer * 2 * sizeof(int));
    c->tt = calloc((size_t)(n + 2 * q->cfg.n_layer + 2), sizeof(tuned));
    c->erow = malloc((size_t)q->cfg.dim * sizeof(float));
    c->out_index = c->embd_index = -1;
    if (!c->index || !c->norm_index || !c->tt || !c->erow) return sqz_fail(err, "tune: out of memory");
    if (head && has_scales(q->output) && (c->out_index = add_tuned(c, entry_of(q, q->output), 0, err)) < 0)
        return SQZ_ERR;
    if (head && q->tok_embd == q->output) c->embd_index = c->out_index;
    else if (head && has_scales(q->tok_embd) && (c->embd_index = add_tuned(c, entry_of(q, q->tok_embd), 0, err)) < 0)
        return SQZ_ERR;
    const int n_head = c->n_tt;
    for (int l = 0; l < q->cfg.n_layer; l++) {
        const sqz_tensor *nt[2] = {q->layers[l].attn_norm, q->layers[l].ffn_norm};
        for (int k = 0; k < 2; k++) {
            c->norm_index[l * 2 + k] = -1;
            sqz_tensor *t = norms && nt[k] && nt[k]->type == SQZ_TYPE_F32 ? entry_of(q, nt[k]) : NULL;
            if (t && (c->norm_index[l * 2 + k] = add_tuned(c, t, 1, err)) < 0) return SQZ_ERR;
        }
    }
    const int n_norms = c->n_tt - n_head;
    for (int i = 0; i < n; i++) {
        c->index[i] = -1;
        const sqz_tensor *ct = sqz_linear_tensor(q, i / SQZ_LIN_PER_LAYER, i % SQZ_LIN_PER_LAYER);
        if (!has_scales(ct)) continue;
        sqz_tensor *t = entry_of(q, ct);
        if (t && (c->index[i] = add_tuned(c, t, 0, err)) < 0) return SQZ_ERR;
    }
    if (c->n_tt == n_head + n_norms)
        return sqz_fail(err, "%s: tune: no linear weight has a type with scale fields (k-quants, i-quants, Q4_0 …)",
                        q->path);
    return SQZ_OK;
}

/* The input's bytes with every tuned tensor's working copy in its place. */
static int write_out(const tune_ctx *c, const char *out_path, sqz_err *err) {
    const sqz_map *map = &c->q.gguf.map;
    int *order = malloc((size_t)c->n_tt * sizeof(int));
    if (!order) return sqz_fail(err, "tune: out of memory");
    for (int i = 0; i < c->n_tt; i++) order[i] = i;
    for (int i = 1; i < c->n_tt; i++) /* by file offset (insertion sort: a few hundred tensors) */
        for (int j = i; j > 0 && c->tt[order[j]].orig < c->tt[order[j - 1]].orig; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    sqz_out out;
    int rc = sqz_out_open(&out, out_path, err);
    size_t at = 0;
    for (int i = 0; rc == SQZ_OK && i < c->n_tt; i++) {
        const tuned *u = &c->tt[order[i]];
        size_t off = (size_t)(u->orig - map->data);
        rc = sqz_out_write(&out, map->data + at, off - at, err) || sqz_out_write(&out, u->work, u->t->nbytes, err);
        at = off + u->t->nbytes;
    }
    if (rc == SQZ_OK) rc = sqz_out_write(&out, map->data + at, map->size - at, err) || sqz_out_commit(&out, err);
    if (rc) sqz_out_abort(&out);
    free(order);
    return rc ? SQZ_ERR : SQZ_OK;
}

void sqz_tune_report_free(sqz_tune_report *rep) {
    if (!rep) return;
    free(rep->train_kl);
    free(rep->held_kl);
    memset(rep, 0, sizeof *rep);
}

int sqz_tune(const sqz_model *ref, const char *in_path, const char *out_path, const sqz_tune_opts *o,
             sqz_pool *pool, sqz_tune_report *rep, sqz_err *err) {
    sqz_tune_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    const int64_t T = o->seqlen;
    if (o->steps < 1 || o->nsamples < 1 || o->n_held < 1 || T < 2 || !o->windows || !o->held)
        return sqz_fail(err, "tune: needs at least one step, one calibration and one held-out window of 2+ tokens");
    double t_start = sqz_now();
    tune_ctx c;
    memset(&c, 0, sizeof c);
    c.pool = pool;
    c.n_threads = pool ? sqz_pool_threads(pool) : 1;
    c.seqlen = T;
    if (sqz_model_load(&c.q, in_path, 0, err)) return SQZ_ERR;
    c.have_q = 1;
    const int64_t V = ref->cfg.n_vocab;
    int rc = SQZ_OK;
    if (c.q.source != SQZ_SRC_GGUF)
        rc = sqz_fail(err, "%s: tune: expected a quantized GGUF file", in_path);
    else if (c.q.cfg.n_vocab != V || c.q.cfg.dim != ref->cfg.dim || c.q.cfg.n_layer != ref->cfg.n_layer)
        rc = sqz_fail(err, "%s: tune: vocabulary %lld, dim %lld, %d layers; the reference %s has %lld, %lld, %d", in_path,
                      (long long)c.q.cfg.n_vocab, (long long)c.q.cfg.dim, c.q.cfg.n_layer, ref->path, (long long)V,
                      (long long)ref->cfg.dim, ref->cfg.n_layer);
    uint64_t target_bytes = (uint64_t)(o->nsamples + o->n_held) * (uint64_t)T * (uint64_t)V * sizeof(float);
    if (rc == SQZ_OK && target_bytes > SQZ_TUNE_MAX_TARGET_BYTES)
        rc = sqz_fail(err, "tune: the reference's probabilities would take %.1f GiB ((%d + %d windows) × %lld tokens × "
                      "%lld vocabulary floats; at most %.0f GiB): use fewer or shorter windows",
                      (double)target_bytes / 1073741824.0, o->nsamples, o->n_held, (long long)T, (long long)V,
                      (double)SQZ_TUNE_MAX_TARGET_BYTES / 1073741824.0);
    if (rc == SQZ_OK) rc = select_tensors(&c, o->norms, o->head, err);
    float *p_cal = NULL, *p_held = NULL;
    if (rc == SQZ_OK) {
        p_cal = malloc((size_t)o->nsamples * (size_t)T * (size_t)V * sizeof(float));
        p_held = malloc((size_t)o->n_held * (size_t)T * (size_t)V * sizeof(float));
        c.wbuf = malloc((size_t)c.n_threads * TILE_ROWS * (size_t)c.wide * sizeof(float));
        c.ybuf = malloc((size_t)c.n_threads * (size_t)T * TILE_ROWS * sizeof(float));
        rep->train_kl = calloc((size_t)o->steps + 1, sizeof(double));
        rep->held_kl = calloc((size_t)o->steps + 1, sizeof(double));
        if (!p_cal || !p_held || !c.wbuf || !c.ybuf || !rep->train_kl || !rep->held_kl)
            rc = sqz_fail(err, "tune: out of memory for the reference's probabilities (%.1f GiB)",
                          (double)target_bytes / 1073741824.0);
    }
    double t0 = sqz_now();
    if (rc == SQZ_OK)
        rc = ref_probs(ref, pool, o->windows, o->nsamples, T, p_cal, err) ||
             ref_probs(ref, pool, o->held, o->n_held, T, p_held, err);
    double ref_flops = sqz_forward_flops(ref, -1, T); /* a window's: the head and every layer (a pruned one's own) */
    for (int l = 0; l < ref->cfg.n_layer; l++) ref_flops += sqz_forward_flops(ref, l, T);
    sqz_stage_add(&rep->times, SQZ_STAGE_FORWARD, sqz_now() - t0, (double)(o->nsamples + o->n_held) * ref_flops);
    sqz_grad *g = NULL;
    if (rc == SQZ_OK) rc = sqz_grad_create_on(&g, &c.q, pool, o->backend, T, err);
    if (rc == SQZ_OK) sqz_grad_set_norm_hook(g, norm_hook, &c);
    for (int i = 0; rc == SQZ_OK && i < c.n_tt; i++) {
        rep->n_params += c.tt[i].rows;
        rep->n_norms += c.tt[i].is_norm;
    }
    rep->n_tensors = c.n_tt - rep->n_norms;
    double best = 0.0;
    if (rc == SQZ_OK) rc = mean_kl(g, o->held, o->n_held, T, p_held, &best, err);
    if (rc == SQZ_OK) rep->held_kl[0] = best;
    const double lr = o->lr > 0 ? o->lr : SQZ_TUNE_LR, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const int patience = o->patience > 0 ? o->patience : 2;
    const double scale = 1.0 / ((double)o->nsamples * (double)(T - 1));
    sqz_progress prog;
    sqz_progress_begin(&prog, "tune", o->steps, "steps", 0);
    if (!o->progress) prog.out = NULL;
    for (int s = 1; rc == SQZ_OK && s <= o->steps; s++) {
        for (int i = 0; i < c.n_tt; i++) memset(c.tt[i].grad, 0, (size_t)c.tt[i].rows * sizeof(double));
        double total = 0.0;
        sqz_grad_set_targets(g, p_cal);
        rc = sqz_grad_windows(g, o->windows, o->nsamples, T, scale, tune_hook, &c, &total, NULL, err);
        if (rc) break;
        rep->train_kl[s - 1] = total * scale;
        const double c1 = 1.0 - pow(b1, s), c2 = 1.0 - pow(b2, s);
        for (int i = 0; i < c.n_tt; i++) {
            tuned *u = &c.tt[i];
            for (int64_t j = 0; j < u->rows; j++) {
                double gr = u->grad[j];
                u->m[j] = b1 * u->m[j] + (1 - b1) * gr;
                u->v[j] = b2 * u->v[j] + (1 - b2) * gr * gr;
                u->theta[j] -= lr * (u->m[j] / c1) / (sqrt(u->v[j] / c2) + eps);
            }
            apply(u, u->theta);
        }
        if (c.out_index >= 0 && (rc = sqz_grad_reload_head(g, err))) break;
        double held = 0.0;
        rc = mean_kl(g, o->held, o->n_held, T, p_held, &held, err);
        rep->held_kl[s] = held;
        rep->n_steps = s;
        if (rc) break;
        if (held < best) {
            best = held;
            rep->best_step = s;
            for (int i = 0; i < c.n_tt; i++) memcpy(c.tt[i].best, c.tt[i].theta, (size_t)c.tt[i].rows * sizeof(double));
        }
        char extra[96];
        snprintf(extra, sizeof extra, "KL %.5f, held-out %.5f (best %.5f at %d)", rep->train_kl[s - 1], held, best,
                 rep->best_step);
        sqz_progress_update(&prog, s, extra);
        if (s - rep->best_step >= patience) break;
    }
    sqz_progress_end(&prog);
    if (rc == SQZ_OK && rep->n_steps > 0) { /* the last step's calibration KL, for the record */
        double kl = 0.0;
        rc = mean_kl(g, o->windows, o->nsamples, T, p_cal, &kl, err);
        rep->train_kl[rep->n_steps] = kl;
    }
    if (g) sqz_grad_times(g, &rep->times);
    sqz_grad_free(g);
    for (int i = 0; rc == SQZ_OK && i < c.n_tt; i++) apply(&c.tt[i], c.tt[i].best);
    if (rc == SQZ_OK) rc = write_out(&c, out_path, err);
    free(p_cal);
    free(p_held);
    ctx_free(&c);
    rep->seconds = sqz_now() - t_start;
    if (rep == &local) sqz_tune_report_free(rep);
    return rc ? SQZ_ERR : SQZ_OK;
}

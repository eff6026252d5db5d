/* Per-(tensor, type) loss-change predictions (see include/sqz/sensitivity.h). */
#include "sqz/sensitivity.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/calib.h"
#include "sqz/backend.h"
#include "sqz/gptq.h"
#include "sqz/grad.h"
#include "sqz/quant.h"

int sqz_sens_count(const sqz_model *m) { return m->cfg.n_layer * SQZ_LIN_PER_LAYER + 1 + (m->output != m->tok_embd); }

int sqz_sens_index(const sqz_model *m, int layer, int kind) {
    if (kind == SQZ_LIN_OUTPUT) return m->cfg.n_layer * SQZ_LIN_PER_LAYER;
    if (kind == SQZ_LIN_EMBD) return m->output == m->tok_embd ? -1 : m->cfg.n_layer * SQZ_LIN_PER_LAYER + 1;
    if (layer < 0 || layer >= m->cfg.n_layer || kind < 0 || kind >= SQZ_LIN_PER_LAYER) return -1;
    return layer * SQZ_LIN_PER_LAYER + kind;
}

void sqz_sens_free(sqz_sens *s) {
    for (int i = 0; s->t && i < s->n_tensors; i++)
        for (int o = 0; o < s->t[i].n_options; o++) free(s->t[i].opt[o].what);
    for (int l = 0; s->widths && l < s->n_widths; l++) sqz_layer_widths_free(&s->widths[l]);
    free(s->widths);
    free(s->t);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- gradient statistics */

typedef struct {
    const sqz_model *m;
    int n;           /* tensors */
    double **s;      /* [n][rows] Σ g² per output row (the head's by vocab row) */
    float **F;       /* [n][rows × cols] diagonal Fisher, or NULL */
    double *e_tok;   /* [n_vocab] Σ over positions holding token v of ‖∂L/∂x_t‖² */
    float *Fe;       /* [n_vocab × dim] diagonal Fisher of the embedding rows, or NULL */
    double *count;   /* [n_vocab] positions holding token v */
    double *H_out;   /* [dim × dim] Σ of the head's inputs x xᵀ */
    double *H_outw;  /* [dim × dim] Σ_t w_t x_t x_tᵀ, w_t = Σ_v g_tv² (the head's token weights) */
    float **tw;      /* [n_layer·7][T] token weights w_t = Σ_j g_tj² of every per-layer linear */
    int64_t seqlen;  /* tokens per window: window w's first token in tw is w · seqlen */
    float *tmp;      /* scratch */
    size_t tmp_n;
    int64_t n_rows_out; /* tokens seen by the head */
} stats;

static int grow(stats *st, size_t n, sqz_err *err) {
    if (n <= st->tmp_n) return SQZ_OK;
    float *t = realloc(st->tmp, n * sizeof(float));
    if (!t) return sqz_fail(err, "sensitivity: out of memory");
    st->tmp = t;
    st->tmp_n = n;
    return SQZ_OK;
}

static int stats_hook(void *vctx, const sqz_grad_site *s, sqz_err *err) {
    stats *st = vctx;
    int64_t n = s->n;
    if (s->kind == SQZ_LIN_EMBD) {
        int64_t dim = s->out;
        for (int64_t t = 0; t < n; t++) {
            double q = 0.0;
            const float *g = s->g + t * dim;
            for (int64_t i = 0; i < dim; i++) q += (double)g[i] * g[i];
            st->e_tok[s->tokens[t]] += q;
            st->count[s->tokens[t]] += 1.0;
            if (st->Fe)
                for (int64_t i = 0; i < dim; i++) st->Fe[(int64_t)s->tokens[t] * dim + i] += g[i] * g[i];
        }
        return SQZ_OK;
    }
    int idx = sqz_sens_index(st->m, s->layer, s->kind);
    double *sj = st->s[idx];
    float *tw = s->kind == SQZ_LIN_OUTPUT ? NULL : st->tw[idx] + (int64_t)s->window * st->seqlen + s->row0;
    if (s->kind == SQZ_LIN_OUTPUT && grow(st, (size_t)(s->in * s->in + n * s->in + n), err)) return SQZ_ERR;
    if (s->kind == SQZ_LIN_OUTPUT) tw = st->tmp + s->in * s->in + n * s->in;
    for (int64_t t = 0; t < n; t++) {
        const float *g = s->g + t * s->out;
        double q = 0.0;
        for (int64_t j = 0; j < s->out; j++) {
            sj[j] += (double)g[j] * g[j];
            q += (double)g[j] * g[j];
        }
        tw[t] = (float)q;
    }
    if (s->kind == SQZ_LIN_OUTPUT) { /* the head's Grams: its calibration inputs are the final states */
        float *G = st->tmp, *xw = st->tmp + s->in * s->in;
        for (int pass = 0; pass < 2; pass++) {
            const float *x = s->x;
            double *acc = pass ? st->H_outw : st->H_out;
            if (pass) {
                for (int64_t t = 0; t < n; t++)
                    for (int64_t i = 0; i < s->in; i++) xw[t * s->in + i] = sqrtf(tw[t]) * s->x[t * s->in + i];
                x = xw;
            }
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)s->in, (int)n, 1.0f, x, (int)s->in, 0.0f, G,
                        (int)s->in);
            for (int64_t a = 0; a < s->in; a++)
                for (int64_t b = a; b < s->in; b++) {
                    acc[a * s->in + b] += G[a * s->in + b];
                    if (b != a) acc[b * s->in + a] += G[a * s->in + b];
                }
        }
        st->n_rows_out += n;
    }
    if (st->F[idx]) { /* F += (g²)ᵀ (x²) */
        size_t need = (size_t)(n * (s->out + s->in));
        if (grow(st, need, err)) return SQZ_ERR;
        float *g2 = st->tmp, *x2 = st->tmp + n * s->out;
        for (int64_t i = 0; i < n * s->out; i++) g2[i] = s->g[i] * s->g[i];
        for (int64_t i = 0; i < n * s->in; i++) x2[i] = s->x[i] * s->x[i];
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s->out, (int)s->in, (int)n, 1.0f, g2, (int)s->out,
                    x2, (int)s->in, 1.0f, st->F[idx], (int)s->in);
    }
    return SQZ_OK;
}

static void stats_free(stats *st) {
    for (int i = 0; st->s && i < st->n; i++) free(st->s[i]);
    for (int i = 0; st->F && i < st->n; i++) free(st->F[i]);
    for (int i = 0; st->tw && i < st->m->cfg.n_layer * SQZ_LIN_PER_LAYER; i++) free(st->tw[i]);
    free(st->s); free(st->F); free(st->e_tok); free(st->Fe); free(st->count); free(st->H_out); free(st->H_outw);
    free(st->tw); free(st->tmp);
    memset(st, 0, sizeof *st);
}

static const sqz_tensor *tensor_at(const sqz_model *m, int idx) {
    int per = m->cfg.n_layer * SQZ_LIN_PER_LAYER;
    if (idx < per) return sqz_linear_tensor(m, idx / SQZ_LIN_PER_LAYER, idx % SQZ_LIN_PER_LAYER);
    return idx == per ? m->output : m->tok_embd;
}

static int stats_collect(stats *st, const sqz_model *m, sqz_pool *pool, const sqz_sens_opts *o, double *loss,
                         int64_t *n_scored, sqz_stage_times *times, sqz_err *err) {
    memset(st, 0, sizeof *st);
    st->m = m;
    st->n = sqz_sens_count(m);
    int64_t V = m->cfg.n_vocab, dim = m->cfg.dim;
    st->s = calloc((size_t)st->n, sizeof *st->s);
    st->F = calloc((size_t)st->n, sizeof *st->F);
    st->e_tok = calloc((size_t)V, sizeof(double));
    st->count = calloc((size_t)V, sizeof(double));
    st->H_out = calloc((size_t)(dim * dim), sizeof(double));
    st->H_outw = calloc((size_t)(dim * dim), sizeof(double));
    st->tw = calloc((size_t)(m->cfg.n_layer * SQZ_LIN_PER_LAYER), sizeof *st->tw);
    if (!st->s || !st->F || !st->e_tok || !st->count || !st->H_out || !st->H_outw || !st->tw)
        return sqz_fail(err, "sensitivity: out of memory");
    for (int i = 0; i < m->cfg.n_layer * SQZ_LIN_PER_LAYER; i++)
        if (!(st->tw[i] = calloc((size_t)o->nsamples * (size_t)o->seqlen, sizeof(float))))
            return sqz_fail(err, "sensitivity: out of memory for the token weights");
    for (int i = 0; i < st->n; i++) {
        const sqz_tensor *t = tensor_at(m, i);
        if (i == st->n - 1 && m->output != m->tok_embd) continue; /* the untied embedding: e_tok */
        if (!(st->s[i] = calloc((size_t)t->ne[1], sizeof(double)))) return sqz_fail(err, "sensitivity: out of memory");
        if (o->diag_fisher && !(st->F[i] = calloc((size_t)sqz_tensor_nelements(t), sizeof(float))))
            return sqz_fail(err, "sensitivity: out of memory for the diagonal Fisher (one float per weight)");
    }
    if (o->diag_fisher && !(st->Fe = calloc((size_t)(V * dim), sizeof(float))))
        return sqz_fail(err, "sensitivity: out of memory");
    sqz_grad *g = NULL;
    if (sqz_grad_create_on(&g, m, pool, o->backend, o->seqlen, err)) return SQZ_ERR;
    sqz_progress prog;
    sqz_progress_begin(&prog, "gradients", o->nsamples, "windows", 0);
    if (!o->progress) prog.out = NULL;
    double total = 0.0;
    st->seqlen = o->seqlen;
    int rc = sqz_grad_windows(g, o->windows, o->nsamples, o->seqlen, 1.0, stats_hook, st, &total, &prog, err);
    sqz_progress_end(&prog);
    sqz_grad_times(g, times);
    sqz_grad_free(g);
    *n_scored = (int64_t)o->nsamples * (o->seqlen - 1);
    *loss = total / (double)*n_scored;
    return rc;
}

/* ---------------------------------------------------------------- scoring options */

/* The error sums run in single precision (SGEMM, about twice DGEMM's rate): a float
 * copy of each Gram, products summed in double per row. They are estimates whose
 * options differ by far more than float rounding moves them. */
typedef struct {
    const float *H;
    const float *D; /* δW rows × cols */
    int64_t cols;
    double *E;      /* [rows] δw_jᵀ H δw_j */
} quad_ctx;

/* Rows per GEMM with H: OpenBLAS packs H once per call, so 32-row calls spent about as
 * long packing as multiplying (profiled on a 1.5B model); 256 rows at most, and at most
 * QUAD_FLOATS floats of scratch per buffer. Each product's bits do not depend on the
 * rows per call (OpenBLAS splits m and n, never k). */
#define QUAD_ROWS 256
#define QUAD_FLOATS 4194304

static int64_t quad_rows(int64_t n) {
    int64_t r = QUAD_FLOATS / (n > 0 ? n : 1);
    return r < 32 ? 32 : r > QUAD_ROWS ? QUAD_ROWS : r;
}

/* Rows per pool task: quad_rows, but no more than an even share of the threads. */
static int64_t quad_grain(int64_t rows, int64_t n, int threads) {
    int64_t share = (rows + threads - 1) / (threads > 0 ? threads : 1), r = quad_rows(n);
    return share < r ? (share > 0 ? share : 1) : r;
}

/* E_j for rows [b, e): blocks of quad_rows rows as one DGEMM with H (BLAS-3, not a
 * matrix-vector product per row). */
static void quad_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const quad_ctx *c = vctx;
    int64_t n = c->cols, blk = quad_rows(n);
    float *y = malloc((size_t)(blk * n) * sizeof(float));
    if (!y) {
        for (int64_t j = b; j < e; j++) c->E[j] = NAN;
        return;
    }
    for (int64_t j0 = b; j0 < e; j0 += blk) {
        int64_t m = e - j0 < blk ? e - j0 : blk;
        const float *d = c->D + j0 * n;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)n, 1.0f, d, (int)n, c->H, (int)n,
                    0.0f, y, (int)n);
        for (int64_t r = 0; r < m; r++) {
            double q = 0.0;
            for (int64_t i = 0; i < n; i++) q += (double)d[r * n + i] * y[r * n + i];
            c->E[j0 + r] = q;
        }
    }
    free(y);
}

typedef struct {
    int type;
    const float *W;
    float *what;
    uint8_t *dst;
    size_t row_bytes;
    int64_t cols;
    int failed;
    sqz_err err;
} conv_ctx;

/* Round-to-nearest (or a float conversion) row by row, then back to f32. */
static void conv_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    conv_ctx *c = vctx;
    const sqz_type_traits *tt = sqz_type_get(c->type);
    for (int64_t r = b; r < e && !c->failed; r++) {
        uint8_t *d = c->dst + (size_t)r * c->row_bytes;
        if (sqz_convert_row(c->type, c->W + r * c->cols, d, c->cols, NULL, &c->err)) c->failed = 1;
        else tt->dequantize(d, c->what + r * c->cols, c->cols);
    }
}

typedef struct {
    const sqz_model *sm, *wm; /* statistics, weights */
    sqz_pool *pool;
    const sqz_sens_opts *o;
    stats *st;
    sqz_sens *out;
    sqz_progress prog;
    int64_t N;    /* scored tokens */
    double flops; /* of the scoring so far */
    float *hf;    /* the float copy of the current H, kept from layer to layer (fresh pages of
                     an 8960-wide copy cost more to fault in than to fill) */
    size_t hf_cap;
} score_ctx;

static int keep_what(const sqz_sens_opts *o, int idx, int type) {
    for (int i = 0; i < o->n_keep; i++)
        if (o->keep[2 * i] == idx && o->keep[2 * i + 1] == type) return 1;
    return 0;
}

/* Fills the options of tensor idx from its weights W and its input Gram H (Σ x xᵀ / T;
 * NULL for an untied embedding). */
/* Rows scored of a large tensor (the output head: one row per vocabulary entry; the
 * wide matrices of a 1.5B+ model). GPTQ treats rows independently given H, so a row's
 * error is the same quantized alone or with the others: the top half of the scored rows
 * by weight (s_j, plus e_v for embedding rows) are exact, the other half an evenly spaced
 * sample of the rest scaled up to its count. Every candidate type of a tensor is scored
 * on the same rows, so the comparison between types is paired.
 * How many: all rows while rows·cols² (the multiply-adds of one error sum) is at most
 * SENS_ROW_MACS, else as many as fit it, between SENS_MIN_ROWS and SENS_MAX_ROWS. Each
 * type costs about 5·rows·cols² flops (GPTQ's sweep and two error sums): without this a
 * 1.5B model's 28 ffn_down (1536 × 8960) alone cost 200 TFLOP over 12 types. SmolLM2's
 * tensors are all scored whole but its head (8192 of 49152 rows, as before). */
#define SENS_ROW_MACS 4294967296.0
#define SENS_MIN_ROWS 256
#define SENS_MAX_ROWS 8192

static int any_keep(const sqz_sens_opts *o, int idx) {
    for (int i = 0; i < o->n_keep; i++)
        if (o->keep[2 * i] == idx) return 1;
    return 0;
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const double *w = ctx;
    double x = w[*(const int64_t *)a], y = w[*(const int64_t *)b];
    if (x != y) return x > y ? -1 : 1;
    return *(const int64_t *)a < *(const int64_t *)b ? -1 : 1;
}

/* Fills map[nsel] (original row of each scored row) and scale[nsel]; all rows when the
 * tensor is small or its Ŵ is kept. Returns nsel, or -1 when out of memory. */
static int64_t choose_rows(const score_ctx *c, int idx, int64_t rows, int64_t cols, int embd_part, int64_t *map,
                           double *scale) {
    double fit = SENS_ROW_MACS / ((double)cols * (double)cols);
    int64_t want = fit >= (double)SENS_MAX_ROWS ? SENS_MAX_ROWS : fit <= SENS_MIN_ROWS ? SENS_MIN_ROWS : (int64_t)fit;
    if ((double)rows <= fit || rows <= want || any_keep(c->o, idx)) {
        for (int64_t j = 0; j < rows; j++) map[j] = j, scale[j] = 1.0;
        return rows;
    }
    double *w = malloc((size_t)rows * sizeof(double));
    int64_t *order = malloc((size_t)rows * sizeof(int64_t));
    char *top = calloc((size_t)rows, 1);
    if (!w || !order || !top) {
        free(w); free(order); free(top);
        return -1;
    }
    const double *s = c->st->s[idx];
    for (int64_t j = 0; j < rows; j++) {
        w[j] = (s ? s[j] : 0.0) + (embd_part ? c->st->e_tok[j] : 0.0);
        order[j] = j;
    }
    qsort_r(order, (size_t)rows, sizeof *order, cmp_desc, w);
    int64_t n = 0;
    int64_t n_exact = want / 2, n_sample = want - n_exact;
    for (int64_t k = 0; k < n_exact; k++) top[order[k]] = 1;
    for (int64_t j = 0; j < rows; j++)
        if (top[j]) map[n] = j, scale[n++] = 1.0;
    int64_t rest = rows - n_exact, stride = (rest + n_sample - 1) / n_sample, seen = 0;
    int64_t first = n;
    for (int64_t j = 0; j < rows; j++) {
        if (top[j]) continue;
        if (seen++ % stride == 0) map[n++] = j;
    }
    for (int64_t k = first; k < n; k++) scale[k] = (double)rest / (double)(n - first);
    free(w); free(order); free(top);
    return n;
}

/* The row of the statistics model that holds weight row `row` of tensor idx: the same,
 * except for q/k when one model is a Hugging Face folder (rotate-half rows) and the other
 * a GGUF file (rows permuted to adjacent pairs, as llama.cpp's converter writes them). */
static int64_t stats_row(const score_ctx *c, int idx, int64_t row) {
    const sqz_sens_tensor *t = &c->out->t[idx];
    if (c->sm->cfg.rope_mode == c->wm->cfg.rope_mode || (t->kind != SQZ_LIN_Q && t->kind != SQZ_LIN_K)) return row;
    int64_t d = c->wm->cfg.head_dim, half = d / 2, h = row / d, k = row % d;
    int64_t j = k / half, i = k % half; /* rotate-half: k = j·d/2 + i; adjacent: 2i + j */
    if (c->wm->cfg.rope_mode == SQZ_ROPE_HALF) return h * d + 2 * i + j;
    return h * d + (k % 2) * half + k / 2; /* weights adjacent, statistics rotate-half */
}

/* Ŵ (what) of the nsel rows of W (nsel × cols) in type, packed in dst (row_bytes per row):
 * GPTQ with H's factor F where the type has it (and F is given), else round to nearest. */
static int quantize_rows(score_ctx *c, const char *name, int type, const float *W, int64_t nsel, int64_t cols,
                         const sqz_gptq_factor *F, size_t row_bytes, uint8_t *dst, float *what, sqz_err *err) {
    if (F && sqz_gptq_supported(type)) {
        c->flops += (double)nsel * (double)cols * (double)cols; /* the sweep's updates */
        if (sqz_gptq_quantize_factored(type, W, nsel, F, c->pool, dst, what, NULL, NULL, err)) {
            sqz_fail_prefix(err, "%s: ", name);
            return SQZ_ERR;
        }
        return SQZ_OK;
    }
    conv_ctx cc = {type, W, what, dst, row_bytes, cols, 0, {{0}}};
    sqz_pool_for(c->pool, nsel, 16, conv_task, &cc);
    return cc.failed ? sqz_fail(err, "%s: %s", name, cc.err.msg) : SQZ_OK;
}

/* The linear-layer sums of an error D (nsel × cols, rows map[r] of tensor idx, weights
 * scale[r]) into sum[0..3]: Σ s_j δwᵀHδw (grad), Σ s_j δwᵀH_wδw (gradtw), Σ δwᵀHδw (local),
 * Σ F δw² (diag; the statistics' rows are ld long). E, Ew: nsel doubles of scratch. */
static void error_sums(score_ctx *c, int idx, const float *D, int64_t nsel, int64_t cols, int64_t ld,
                       const float *H, const float *Hw, const int64_t *map, const double *scale, double *E,
                       double *Ew, double sum[4]) {
    quad_ctx qc = {H, D, cols, E}, qw = {Hw, D, cols, Ew};
    int plain = !c->o->weighted_only;
    c->flops += (plain ? 2.0 : 1.0) * 2.0 * (double)nsel * (double)cols * (double)cols;
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1); /* the pool is the parallelism */
    const int64_t grain = quad_grain(nsel, cols, sqz_pool_threads(c->pool));
    if (plain) sqz_pool_for(c->pool, nsel, grain, quad_task, &qc);
    else memset(E, 0, (size_t)nsel * sizeof(double));
    sqz_pool_for(c->pool, nsel, grain, quad_task, &qw);
    openblas_set_num_threads(blas_threads);
    const double *s = c->st->s[idx];
    const float *F = c->st->F[idx];
    for (int64_t r = 0; r < nsel; r++) {
        int64_t sr = stats_row(c, idx, map[r]);
        sum[0] += scale[r] * s[sr] * E[r];
        sum[1] += scale[r] * s[sr] * Ew[r];
        sum[2] += scale[r] * E[r];
        if (F)
            for (int64_t i = 0; i < cols; i++)
                sum[3] += scale[r] * (double)F[sr * ld + i] * D[r * cols + i] * D[r * cols + i];
    }
}

/* Whether any candidate type is quantized by GPTQ (then each Gram gets its factor). */
static int any_gptq(const sqz_sens_opts *o) {
    for (int k = 0; k < o->n_types; k++)
        if (sqz_gptq_supported(o->types[k])) return 1;
    return 0;
}

/* F ← the GPTQ factor of H (cols × cols) with the estimate's options, in single
 * precision; F->Uf NULL when no type takes GPTQ. */
static int factor_of(score_ctx *c, const double *H, int64_t cols, sqz_gptq_factor *F, sqz_err *err) {
    memset(F, 0, sizeof *F);
    if (!any_gptq(c->o)) return SQZ_OK;
    sqz_gptq_opts go = {c->o->percdamp, 0, 1, c->o->shrink, 1, c->pool};
    c->flops += 2.0 / 3.0 * (double)cols * (double)cols * (double)cols; /* potrf, trtri */
    return sqz_backend_gptq_factor(c->o->backend, H, cols, &go, F, err);
}

/* The options of a pruned ffn_down's row lengths that its full rows do not fit
 * (sqz_sens_tensor.narrow, listed by sqz_sens_add_narrow): each type is scored on the
 * first cols' columns it fits (W's and H's leading block), its changes scaled by
 * cols / cols'. */
static int score_narrow(score_ctx *c, int idx, const float *W, int64_t nsel, const int64_t *map,
                        const double *scale, const double *H, const float *Hf, const float *Hw, sqz_err *err) {
    sqz_sens_tensor *t = &c->out->t[idx];
    int64_t cols = t->cols;
    if (!H || !Hf || !Hw) return SQZ_OK;
    int rc = SQZ_OK;
    for (int k = 0; k < t->n_narrow && rc == SQZ_OK; k++) {
        int type = t->narrow[k].type;
        const sqz_type_traits *tt = sqz_type_get(type);
        int64_t cf = cols / tt->block_size * tt->block_size;
        size_t row_bytes;
        if (sqz_type_row_bytes(type, cf, &row_bytes, err)) return SQZ_ERR;
        float *Wn = malloc((size_t)(nsel * cf) * 3 * sizeof(float)), *what = Wn ? Wn + nsel * cf : NULL;
        float *D = what ? what + nsel * cf : NULL;
        double *Hn = malloc((size_t)(cf * cf) * sizeof(double));
        float *Hfn = malloc((size_t)(cf * cf) * 2 * sizeof(float)), *Hwn = Hfn ? Hfn + cf * cf : NULL;
        double *E = malloc((size_t)nsel * 2 * sizeof(double)), *Ew = E ? E + nsel : NULL;
        uint8_t *dst = malloc(row_bytes * (size_t)nsel);
        if (!Wn || !Hn || !Hfn || !E || !dst) {
            rc = sqz_fail(err, "sensitivity: out of memory for %s", t->name);
        } else {
            for (int64_t r = 0; r < nsel; r++) memcpy(Wn + r * cf, W + r * cols, (size_t)cf * sizeof(float));
            for (int64_t i = 0; i < cf; i++) {
                memcpy(Hn + i * cf, H + i * cols, (size_t)cf * sizeof(double));
                memcpy(Hfn + i * cf, Hf + i * cols, (size_t)cf * sizeof(float));
                memcpy(Hwn + i * cf, Hw + i * cols, (size_t)cf * sizeof(float));
            }
            sqz_gptq_factor F; /* of H's leading cf × cf block */
            rc = factor_of(c, Hn, cf, &F, err);
            if (rc == SQZ_OK) rc = quantize_rows(c, t->name, type, Wn, nsel, cf, F.Uf ? &F : NULL, row_bytes, dst, what, err);
            sqz_gptq_factor_free(&F);
        }
        if (rc == SQZ_OK) {
            for (int64_t i = 0; i < nsel * cf; i++) D[i] = Wn[i] - what[i];
            double sum[4] = {0, 0, 0, 0}, f = (double)cols / (double)cf;
            error_sums(c, idx, D, nsel, cf, cols, Hfn, Hwn, map, scale, E, Ew, sum);
            sqz_sens_option *op = &t->narrow[k];
            op->dl_grad = 0.5 * sum[0] / (double)c->N * f;
            op->dl_gradtw = 0.5 * sum[1] / (double)c->N * f;
            op->dl_local = 0.5 * sum[2] * f;
            op->dl_diag = c->o->diag_fisher ? 0.5 * sum[3] / (double)c->N * f : NAN;
            if (c->o->weighted_only) op->dl_grad = op->dl_local = NAN;
            if (!isfinite(op->dl_gradtw) ||
                (!c->o->weighted_only && (!isfinite(op->dl_grad) || !isfinite(op->dl_local))))
                rc = sqz_fail(err, "sensitivity: %s in %s (narrowed): prediction is not finite", t->name, tt->name);
        }
        free(Wn); free(Hn); free(Hfn); free(E); free(dst);
    }
    return rc;
}

/* Fills the options of tensor idx from its weights W, its input Gram H (Σ x xᵀ / T; NULL
 * for an untied embedding) with Hf its float copy, H's GPTQ factor F (NULL: none of the
 * types takes GPTQ) and its token-weighted Gram Hw (Σ w_t x xᵀ / Σ w_t, float). */
static int score_tensor(score_ctx *c, int idx, const double *H, const float *Hf, const sqz_gptq_factor *F,
                        const float *Hw, sqz_err *err) {
    const sqz_sens_opts *o = c->o;
    sqz_sens_tensor *t = &c->out->t[idx];
    const sqz_tensor *src = tensor_at(c->wm, idx);
    int64_t rows = t->rows, cols = t->cols;
    int tied = c->wm->output == c->wm->tok_embd, is_embd = t->kind == SQZ_LIN_EMBD;
    int has_embd_part = is_embd || (tied && t->kind == SQZ_LIN_OUTPUT);
    int64_t *map = malloc((size_t)rows * sizeof(int64_t));
    double *scale = malloc((size_t)rows * sizeof(double));
    float *W = NULL, *what = NULL, *D = NULL;
    double *E = NULL, *Ew = NULL;
    uint8_t *dst = NULL;
    int rc = SQZ_ERR;
    int64_t nsel = map && scale ? choose_rows(c, idx, rows, cols, has_embd_part, map, scale) : -1, n;
    if (nsel < 0) {
        sqz_fail(err, "sensitivity: out of memory for %s", t->name);
        goto done;
    }
    n = nsel * cols;
    W = malloc((size_t)n * sizeof(float));
    what = malloc((size_t)n * sizeof(float));
    D = malloc((size_t)n * sizeof(float));
    E = malloc((size_t)nsel * sizeof(double));
    Ew = malloc((size_t)nsel * sizeof(double));
    if (!W || !what || !D || !E || !Ew) {
        sqz_fail(err, "sensitivity: out of memory for %s", t->name);
        goto done;
    }
    if (nsel == rows) {
        if (sqz_tensor_rows_f32(src, 0, rows, W, err)) goto done;
    } else {
        for (int64_t r = 0; r < nsel; r++)
            if (sqz_tensor_rows_f32(src, map[r], 1, W + r * cols, err)) goto done;
    }
    for (int k = 0; k < t->n_options; k++) {
        sqz_sens_option *op = &t->opt[k];
        size_t row_bytes = (size_t)(op->bytes / (uint64_t)rows);
        free(dst);
        if (!(dst = malloc(row_bytes * (size_t)nsel))) {
            sqz_fail(err, "sensitivity: out of memory for %s", t->name);
            goto done;
        }
        if (quantize_rows(c, t->name, op->type, W, nsel, cols, H ? F : NULL, row_bytes, dst, what, err)) goto done;
        for (int64_t i = 0; i < n; i++) D[i] = W[i] - what[i];
        double sum[4] = {0, 0, 0, 0};
        if (!is_embd) error_sums(c, idx, D, nsel, cols, cols, Hf, Hw, map, scale, E, Ew, sum);
        double grad = sum[0], gradtw = sum[1], local = sum[2], diag = sum[3];
        if (has_embd_part) { /* the lookup rows (see the header) */
            double eg = 0.0, el = 0.0, ed = 0.0;
            for (int64_t r = 0; r < nsel; r++) {
                int64_t v = map[r];
                if (c->st->count[v] == 0) continue;
                double q = 0.0;
                for (int64_t i = 0; i < cols; i++) q += (double)D[r * cols + i] * D[r * cols + i];
                eg += scale[r] * c->st->e_tok[v] * q / (double)cols;
                el += scale[r] * c->st->count[v] / (double)c->N * q;
                if (c->st->Fe)
                    for (int64_t i = 0; i < cols; i++)
                        ed += scale[r] * (double)c->st->Fe[v * cols + i] * D[r * cols + i] * D[r * cols + i];
            }
            grad += eg;
            gradtw += eg;
            local += el;
            diag += ed;
        }
        op->dl_grad = 0.5 * grad / (double)c->N;
        op->dl_gradtw = 0.5 * gradtw / (double)c->N;
        op->dl_local = 0.5 * local;
        op->dl_diag = o->diag_fisher ? 0.5 * diag / (double)c->N : NAN;
        if (o->weighted_only) op->dl_grad = op->dl_local = NAN;
        if (!isfinite(op->dl_gradtw) || (!o->weighted_only && (!isfinite(op->dl_grad) || !isfinite(op->dl_local)))) {
            sqz_fail(err, "sensitivity: %s in %s: prediction is not finite", t->name, sqz_type_get(op->type)->name);
            goto done;
        }
        if (keep_what(o, idx, op->type)) { /* kept tensors are scored on all rows (choose_rows) */
            if (!(op->what = malloc((size_t)n * sizeof(float)))) {
                sqz_fail(err, "sensitivity: out of memory");
                goto done;
            }
            memcpy(op->what, what, (size_t)n * sizeof(float));
        }
    }
    if (score_narrow(c, idx, W, nsel, map, scale, H, Hf, Hw, err)) goto done;
    rc = SQZ_OK;
done:
    free(map); free(scale); free(W); free(what); free(D); free(E); free(Ew); free(dst);
    return rc;
}

static const int kSiteOf[SQZ_LIN_PER_LAYER] = {SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_O_IN,
                                               SQZ_SITE_FFN_IN,  SQZ_SITE_FFN_IN,  SQZ_SITE_FFN_DOWN_IN};

/* Σ_t w_t of a tensor's token weights: they sum its s_j. */
static double weight_sum(const stats *st, int idx, int64_t rows) {
    double sum = 0.0;
    for (int64_t j = 0; j < rows; j++) sum += st->s[idx][j];
    return sum;
}

/* The layer's width options: removal of heads (o_proj's columns) and channels (ffn_down's),
 * from the layer's Grams already divided by the token count. */
static int widths_of(score_ctx *c, int layer, const sqz_layer_grams *g, sqz_err *err) {
    int64_t no = g->n[SQZ_SITE_ATTN_O_IN], nd = g->n[SQZ_SITE_FFN_DOWN_IN];
    int io = layer * SQZ_LIN_PER_LAYER + SQZ_LIN_O, id = layer * SQZ_LIN_PER_LAYER + SQZ_LIN_DOWN;
    return sqz_prune_layer_options(c->wm, layer, g->g[SQZ_SITE_ATTN_O_IN], no ? c->st->s[io] : NULL,
                                   g->g[SQZ_SITE_FFN_DOWN_IN], nd ? c->st->s[id] : NULL, (double)c->N,
                                   c->o->percdamp, c->o->shrink, c->o->prune_magnitude, c->o->prune_ffn_step,
                                   &c->out->widths[layer], err);
}

/* A float copy of n doubles, or NULL when out of memory. */
static float *to_float(const double *x, int64_t n) {
    float *y = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; y && i < n; i++) y[i] = (float)x[i];
    return y;
}

static int layer_cb(void *vctx, int layer, sqz_layer_grams *g, int64_t n_tokens, sqz_err *err) {
    score_ctx *c = vctx;
    sqz_gptq_factor F = {0};
    float *Hf = NULL; /* H's float copy for the error sums */
    int F_site = -1;  /* q, k, v share their input's factor and Hf, as do gate and up */
    /* H = g / T and Hw = gw / Σw are made in place: the Grams are not needed after this
     * layer, and copies of ffn_down's would double the largest buffers (each Hw is
     * narrowed to float in its own buffer, too) */
    for (int site = 0; site < SQZ_SITE_COUNT; site++)
        for (int64_t i = 0; g->g[site] && i < g->n[site] * g->n[site]; i++) g->g[site][i] /= (double)n_tokens;
    /* the weights' layer arrives (a streamed pruned model) */
    if (c->o->layer_hook && c->o->layer_hook(c->o->layer_hook_ctx, layer, 0, err)) return SQZ_ERR;
    double t0 = sqz_now();
    int rc = c->o->prune_ffn_step > 0 ? widths_of(c, layer, g, err) : SQZ_OK;
    double t1 = sqz_now(), f0 = c->flops;
    sqz_stage_add(&c->out->times, SQZ_STAGE_PRUNING, t1 - t0, 0.0);
    for (int k = 0; k < SQZ_LIN_PER_LAYER && rc == SQZ_OK && c->o->n_types > 0; k++) {
        int site = kSiteOf[k], idx = layer * SQZ_LIN_PER_LAYER + k;
        int64_t w = g->n[site];
        if (!g->g[site] || w == 0) continue;
        if (!g->gw[k]) {
            rc = sqz_fail(err, "sensitivity: layer %d %s has no token-weighted Gram", layer, sqz_linear_kind_name(k));
            break;
        }
        double *H = g->g[site], *Hw = g->gw[k];
        float *Hwf = (float *)Hw; /* in place: element i's float lies at or before its double */
        double sw = weight_sum(c->st, idx, c->out->t[idx].rows);
        for (int64_t i = 0; i < w * w; i++) Hwf[i] = (float)(sw > 0 ? Hw[i] / sw : H[i]);
        if (site != F_site) {
            sqz_gptq_factor_free(&F);
            F_site = -1;
            if ((size_t)(w * w) > c->hf_cap) {
                free(c->hf);
                c->hf_cap = 0;
                if (!(c->hf = malloc((size_t)(w * w) * sizeof(float)))) {
                    rc = sqz_fail(err, "sensitivity: out of memory for layer %d's Gram", layer);
                    break;
                }
                c->hf_cap = (size_t)(w * w);
            }
            Hf = c->hf;
            for (int64_t i = 0; i < w * w; i++) Hf[i] = (float)H[i];
            if ((rc = factor_of(c, H, w, &F, err))) break;
            F_site = site;
        }
        rc = score_tensor(c, idx, H, Hf, F.Uf ? &F : NULL, Hwf, err);
    }
    sqz_gptq_factor_free(&F);
    sqz_stage_add(&c->out->times, SQZ_STAGE_SCORING, sqz_now() - t1, c->flops - f0);
    if (rc == SQZ_OK && c->o->layer_hook) rc = c->o->layer_hook(c->o->layer_hook_ctx, layer, 1, err);
    sqz_progress_update(&c->prog, layer + 1, NULL);
    return rc;
}

/* ---------------------------------------------------------------- the whole estimate */

static int is_option(const sqz_sens_tensor *t, int type) {
    for (int k = 0; k < t->n_options; k++)
        if (t->opt[k].type == type) return 1;
    return 0;
}

void sqz_sens_add_narrow(sqz_sens *s, const int *types, int n_types) {
    for (int i = 0; i < s->n_tensors; i++) {
        sqz_sens_tensor *t = &s->t[i];
        t->n_narrow = 0;
        if (t->kind != SQZ_LIN_DOWN || t->layer < 0) continue;
        for (int k = 0; k < n_types && t->n_narrow < SQZ_SENS_MAX_OPTIONS; k++) {
            const sqz_type_traits *tt = sqz_type_get(types[k]);
            int64_t bs = tt ? tt->block_size : 0;
            /* the types the full rows do not take: a block that does not divide them, or a
             * 32-block type left to the k-quants (narrowed rows may leave the k-quants) */
            if (!bs || t->cols < bs || is_option(t, types[k])) continue;
            sqz_sens_option *op = &t->narrow[t->n_narrow++];
            memset(op, 0, sizeof *op);
            op->type = types[k];
        }
    }
}

/* Whether a 32-value block type yields to the k-quants on rows they fit: each has a
 * k-quant of its size or one a step either side (Q4_0, IQ4_NL ~ Q4_K at 4.5 bpw; Q5_0 ~
 * Q5_K at 5.5; Q4_1 5.0, Q5_1 6.0 between Q4_K, Q5_K, Q6_K) that llama.cpp itself writes
 * there. Q8_0 has no k-quant near it and stays. */
static int yields_to_kquants(int type) {
    return type == SQZ_TYPE_Q4_0 || type == SQZ_TYPE_Q4_1 || type == SQZ_TYPE_Q5_0 || type == SQZ_TYPE_Q5_1 ||
           type == SQZ_TYPE_IQ4_NL;
}

int sqz_sens_options(const sqz_model *m, const int *types, int n_types, int all_types, sqz_sens *out,
                     sqz_err *err) {
    memset(out, 0, sizeof *out);
    out->n_tensors = sqz_sens_count(m);
    if (!(out->t = calloc((size_t)out->n_tensors, sizeof *out->t))) return sqz_fail(err, "sensitivity: out of memory");
    int tied = m->output == m->tok_embd;
    for (int i = 0; i < out->n_tensors; i++) {
        sqz_sens_tensor *t = &out->t[i];
        const sqz_tensor *src = tensor_at(m, i);
        int per = m->cfg.n_layer * SQZ_LIN_PER_LAYER;
        t->layer = i < per ? i / SQZ_LIN_PER_LAYER : -1;
        t->kind = i < per ? i % SQZ_LIN_PER_LAYER : i == per ? SQZ_LIN_OUTPUT : SQZ_LIN_EMBD;
        if (i < per) snprintf(t->name, sizeof t->name, "blk.%d.%s.weight", t->layer, sqz_linear_kind_name(t->kind));
        else snprintf(t->name, sizeof t->name, "%s", (i == per && !tied) ? "output.weight" : "token_embd.weight");
        t->rows = src->ne[1];
        t->cols = src->ne[0];
        int kquant_fits = 0; /* a listed k-quant fits these rows */
        for (int k = 0; k < n_types; k++) {
            const sqz_type_traits *tt = sqz_type_get(types[k]);
            if (tt && tt->block_size == 256 && t->cols % 256 == 0) kquant_fits = 1;
        }
        for (int k = 0; k < n_types; k++) {
            const sqz_type_traits *tt = sqz_type_get(types[k]);
            size_t rb;
            if (!tt || !sqz_type_writable(types[k]) || !tt->dequantize)
                return sqz_fail(err, "sensitivity: candidate type %d cannot be written and read back", types[k]);
            if (t->cols % tt->block_size) continue;
            if (!all_types && kquant_fits && yields_to_kquants(types[k])) continue;
            if (sqz_type_row_bytes(types[k], t->cols, &rb, err)) return SQZ_ERR;
            sqz_sens_option *op = &t->opt[t->n_options++];
            op->type = types[k];
            op->bytes = (uint64_t)rb * (uint64_t)t->rows;
            op->dl_diag = NAN;
        }
        if (t->n_options == 0) { /* rows no candidate fits stay F16, as llama-quantize's last fallback */
            size_t rb;
            if (sqz_type_row_bytes(SQZ_TYPE_F16, t->cols, &rb, err)) return SQZ_ERR;
            t->opt[0].type = SQZ_TYPE_F16;
            t->opt[0].bytes = (uint64_t)rb * (uint64_t)t->rows;
            t->opt[0].dl_diag = NAN;
            t->n_options = 1;
        }
    }
    return SQZ_OK;
}

int sqz_sensitivity(const sqz_model *sm, const sqz_model *wm, sqz_pool *pool, const sqz_sens_opts *o, sqz_sens *out,
                    sqz_err *err) {
    memset(out, 0, sizeof *out);
    if (o->n_types < (o->prune_ffn_step > 0 ? 0 : 1) || o->n_types > SQZ_SENS_MAX_OPTIONS)
        return sqz_fail(err, "sensitivity: %d candidate types (expected 1 .. %d)", o->n_types, SQZ_SENS_MAX_OPTIONS);
    if (o->prune_ffn_step > 0 && sm != wm)
        return sqz_fail(err, "sensitivity: width options need the statistics of the weights' own model");
    if (!o->windows || o->nsamples < 1 || o->seqlen < 2)
        return sqz_fail(err, "sensitivity: needs calibration windows of at least 2 tokens");
    if (sm->cfg.n_layer != wm->cfg.n_layer || sm->cfg.dim != wm->cfg.dim || sm->cfg.n_vocab != wm->cfg.n_vocab ||
        (sm->output == sm->tok_embd) != (wm->output == wm->tok_embd))
        return sqz_fail(err, "sensitivity: %s and %s do not have the same shapes", sm->path, wm->path);
    if (sqz_sens_options(wm, o->types, o->n_types, o->all_types, out, err)) goto fail;
    if (o->prune_ffn_step > 0) {
        sqz_sens_add_narrow(out, o->types, o->n_types);
        if (!(out->widths = calloc((size_t)wm->cfg.n_layer, sizeof *out->widths))) {
            sqz_fail(err, "sensitivity: out of memory");
            goto fail;
        }
        out->n_widths = wm->cfg.n_layer;
    }
    /* the pool is the parallelism: OpenBLAS threads on top only spin (profiled: 16% of the
     * time in sched_yield) */
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    stats st;
    double t0 = sqz_now();
    if (stats_collect(&st, sm, pool, o, &out->loss, &out->n_scored, &out->times, err)) {
        stats_free(&st);
        openblas_set_num_threads(blas_threads);
        goto fail;
    }
    out->seconds_grad = sqz_now() - t0;
    t0 = sqz_now();
    score_ctx c = {sm, wm, pool, o, &st, out, {0}, out->n_scored, 0.0, NULL, 0};
    sqz_progress_begin(&c.prog, "options", sm->cfg.n_layer + 1, "layers", 0);
    if (!o->progress) c.prog.out = NULL;
    int rc = sqz_calib_run_weighted(sm, o->backend, pool, o->windows, o->nsamples, o->seqlen, (const float *const *)st.tw,
                                    layer_cb, &c, &out->times, err);
    if (rc == SQZ_OK && o->n_types > 0) {
        int64_t dim = sm->cfg.dim;
        int head = sqz_sens_index(wm, -1, SQZ_LIN_OUTPUT);
        double sw = weight_sum(&st, head, out->t[head].rows);
        for (int64_t i = 0; i < dim * dim; i++) st.H_out[i] /= (double)st.n_rows_out;
        for (int64_t i = 0; i < dim * dim; i++) st.H_outw[i] = sw > 0 ? st.H_outw[i] / sw : st.H_out[i];
        sqz_gptq_factor F = {0};
        double t1 = sqz_now(), f0 = c.flops;
        float *Hf = to_float(st.H_out, dim * dim), *Hwf = to_float(st.H_outw, dim * dim);
        if (!Hf || !Hwf) rc = sqz_fail(err, "sensitivity: out of memory for the head's Grams");
        if (rc == SQZ_OK) rc = factor_of(&c, st.H_out, dim, &F, err);
        if (rc == SQZ_OK) rc = score_tensor(&c, head, st.H_out, Hf, F.Uf ? &F : NULL, Hwf, err);
        sqz_gptq_factor_free(&F);
        free(Hf);
        free(Hwf);
        if (rc == SQZ_OK && wm->output != wm->tok_embd)
            rc = score_tensor(&c, sqz_sens_index(wm, -1, SQZ_LIN_EMBD), NULL, NULL, NULL, NULL, err);
        sqz_stage_add(&out->times, SQZ_STAGE_SCORING, sqz_now() - t1, c.flops - f0);
    }
    sqz_progress_update(&c.prog, sm->cfg.n_layer + 1, NULL);
    sqz_progress_end(&c.prog);
    free(c.hf);
    stats_free(&st);
    openblas_set_num_threads(blas_threads);
    out->seconds_quant = sqz_now() - t0;
    if (rc == SQZ_OK) return SQZ_OK;
fail:
    sqz_sens_free(out);
    return SQZ_ERR;
}

/* ---------------------------------------------------------------- measuring */

int sqz_mean_loss(const sqz_model *m, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen, double *loss,
                  sqz_err *err) {
    sqz_grad *g = NULL;
    if (sqz_grad_create(&g, m, pool, seqlen, err)) return SQZ_ERR;
    double total = 0.0;
    int rc = sqz_grad_windows(g, windows, nsamples, seqlen, 1.0, NULL, NULL, &total, NULL, err);
    sqz_grad_free(g);
    *loss = total / ((double)nsamples * (seqlen - 1));
    return rc;
}

static int cmp_idx(const void *a, const void *b, void *ctx) {
    const double *v = ctx;
    double x = v[*(const int *)a], y = v[*(const int *)b];
    return x < y ? -1 : x > y ? 1 : 0;
}

static void ranks(const double *v, int n, double *r, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_idx, (void *)v);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) j++;
        for (int k = i; k <= j; k++) r[idx[k]] = 0.5 * (i + j) + 1;
        i = j + 1;
    }
}

double sqz_spearman(const double *a, const double *b, int n) {
    if (n < 2) return NAN;
    double *ra = malloc((size_t)n * 2 * sizeof(double));
    int *idx = malloc((size_t)n * sizeof(int));
    if (!ra || !idx) {
        free(ra);
        free(idx);
        return NAN;
    }
    double *rb = ra + n;
    ranks(a, n, ra, idx);
    ranks(b, n, rb, idx);
    double ma = 0, mb = 0;
    for (int i = 0; i < n; i++) ma += ra[i], mb += rb[i];
    ma /= n;
    mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    free(ra);
    free(idx);
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

/* A decoder block on the backend (sqz_block_pass, sqz/backend.h) against the CPU's forward
 * pass (sqz_forward_layer), block by block:
 *  - every build: sqz_block_desc_f32 gives the block's shapes and weights (each weight
 *    equal to sqz_tensor_rows_f32 of its tensor) on the three architecture fixtures
 *    (llama3 with rope_freqs, qwen2 with q/k/v biases, qwen3 with q/k norms), and the CPU
 *    backend refuses a block pass with a one-line error;
 *  - with the CUDA backend on a machine with a GPU: on those fixtures, stories260K and
 *    (when present) the default model SmolLM2, each block run on the GPU over windows of
 *    the same residual stream the CPU block gets, its output within 1e-4 of the CPU's
 *    (max |Δ| relative to the largest |x|; f32 products in another order, expf instead of
 *    the CPU's polynomial) and the Grams of its four input sites within 1e-4 of the CPU's
 *    (relative to the largest entry); the next block starts from the CPU's output so errors
 *    do not compound. Two windows of different lengths per block: a shorter window than
 *    the pass holds must work as well. And the calibration stepper (sqz_calib_begin/step)
 *    on the GPU backend, which runs its layers through the block pass: every layer's
 *    plain and token-weighted Grams within 1e-3 of the CPU stepper's. And the backward
 *    pass (sqz_grad_windows) on the GPU against the CPU's: loss, every linear's input and
 *    output gradient, and the gradient statistics s_j and w_t (compare_grad).
 * A CUDA build on a machine without a GPU exits 77 (skipped) after the CPU checks. */
#include <math.h>
#include <string.h>

#include "sqz/backend.h"
#include "sqz/calib.h"
#include "sqz/grad.h"
#include "sqz/model.h"
#include "testutil.h"

#define T_MAX 96

static const char *const kSite[SQZ_BLOCK_SITES] = {"attn in", "o in", "ffn in", "down in"};

/* The CPU's Grams at the sites, through the forward pass's hook. */
typedef struct {
    sqz_gram_acc *acc[SQZ_BLOCK_SITES];
    int failed;
} hook_ctx;

static int gram_hook(void *vctx, int layer, int site, const float *x, int64_t T, int64_t width, sqz_err *err) {
    (void)layer;
    (void)width;
    hook_ctx *c = vctx;
    return c->acc[site] ? sqz_gram_add(c->acc[site], x, T, err) : SQZ_OK;
}

static int64_t site_width(const sqz_model *m, int l, int s) {
    const sqz_llama_config *c = &m->cfg;
    switch (s) {
    case 0: case 2: return c->dim;
    case 1: return (int64_t)c->layer_n_head[l] * c->head_dim;
    default: return c->layer_n_ff[l];
    }
}

static void check_desc(const char *path) {
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, path, 0, &err)) {
        CHECK(0, "%s: %s", path, err.msg);
        return;
    }
    for (int l = 0; l < m.cfg.n_layer; l++) {
        sqz_block_desc d;
        float *buf = NULL;
        if (sqz_block_desc_f32(&m, l, NULL, &d, &buf, &err)) {
            CHECK(0, "%s block %d: %s", path, l, err.msg);
            continue;
        }
        const sqz_layer *L = &m.layers[l];
        CHECK(d.dim == m.cfg.dim && d.n_head == m.cfg.layer_n_head[l] && d.n_ff == m.cfg.layer_n_ff[l] &&
                  d.head_dim == m.cfg.head_dim && (d.bq != NULL) == (L->bq != NULL) &&
                  (d.q_norm != NULL) == (L->q_norm != NULL) && d.rope_freqs == m.cfg.rope_freqs,
              "%s block %d: shapes", path, l);
        const sqz_tensor *t[] = {L->wq, L->wk, L->w_down, L->bq, L->q_norm};
        const float *p[] = {d.wq, d.wk, d.w_down, d.bq, d.q_norm};
        for (int i = 0; i < 5; i++) {
            if (!t[i]) continue;
            int64_t n = sqz_tensor_nelements(t[i]);
            float *ref = malloc((size_t)n * sizeof(float));
            CHECK(sqz_tensor_rows_f32(t[i], 0, n / t[i]->ne[0], ref, &err) == 0 && p[i] &&
                      !memcmp(ref, p[i], (size_t)n * sizeof(float)),
                  "%s block %d: %s differs from its tensor", path, l, t[i]->name);
            free(ref);
        }
        free(buf);
    }
    sqz_model_free(&m);
}

static void check_cpu_refuses(void) {
    sqz_backend *b = NULL;
    sqz_block_pass *p = NULL;
    sqz_err err;
    sqz_block_desc w = {.dim = 64, .n_head = 4, .n_head_kv = 4, .head_dim = 16, .n_ff = 128};
    CHECK(sqz_backend_create(SQZ_DEVICE_CPU, NULL, &b, &err) == 0, "%s", err.msg);
    CHECK(sqz_block_pass_open(b, 32, &w, &p, &err) != 0 && p == NULL && strstr(err.msg, "CPU") && !strchr(err.msg, '\n'),
          "a block pass on the CPU backend: %s", err.msg);
    sqz_backend_free(b);
}

/* Every block of the model on the GPU against the CPU; returns 0, or 77 without a GPU. */
static void compare_model(sqz_backend *gpu, sqz_pool *pool, const char *path) {
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, path, 0, &err)) {
        CHECK(0, "%s: %s", path, err.msg);
        return;
    }
    const int64_t dim = m.cfg.dim;
    const int64_t Ts[2] = {T_MAX, T_MAX / 2 + 7};
    int64_t T_all = Ts[0] + Ts[1];
    int32_t *tok = malloc((size_t)T_all * sizeof(int32_t));
    tu_rng r = {7};
    for (int64_t i = 0; i < T_all; i++) tok[i] = (int32_t)(tu_urand(&r) * (m.cfg.n_vocab - 1));
    float *x = malloc((size_t)(T_all * dim) * sizeof(float)), *y = malloc((size_t)(T_all * dim) * sizeof(float));
    /* the widest block */
    sqz_block_desc widest;
    sqz_block_desc_widest(&m, &widest);
    sqz_block_pass *p = NULL;
    int ok = sqz_forward_embed(&m, tok, Ts[0], x, &err) == 0 &&
             sqz_forward_embed(&m, tok + Ts[0], Ts[1], x + Ts[0] * dim, &err) == 0;
    CHECK(ok, "%s: embed: %s", path, err.msg);
    ok = ok && sqz_block_pass_open(gpu, T_MAX, &widest, &p, &err) == 0;
    CHECK(!ok || p, "%s: block pass: %s", path, err.msg);
    double worst_x = 0, worst_g = 0;
    for (int l = 0; ok && l < m.cfg.n_layer; l++) {
        double *Gc[SQZ_BLOCK_SITES] = {0}, *Gg[SQZ_BLOCK_SITES] = {0};
        hook_ctx hc = {{0}, 0};
        sqz_gram_acc *ga[SQZ_BLOCK_SITES] = {0};
        for (int s = 0; s < SQZ_BLOCK_SITES; s++) {
            int64_t n = site_width(&m, l, s);
            if (n <= 0) continue;
            Gc[s] = calloc((size_t)(n * n), sizeof(double));
            Gg[s] = calloc((size_t)(n * n), sizeof(double));
            ok = ok && sqz_gram_open(NULL, pool, n, Gc[s], &hc.acc[s], &err) == 0 &&
                 sqz_gram_open(gpu, pool, n, Gg[s], &ga[s], &err) == 0;
        }
        ok = ok && sqz_block_load_layer(p, &m, l, pool, &err) == 0;
        memcpy(y, x, (size_t)(T_all * dim) * sizeof(float));
        for (int w = 0, off = 0; ok && w < 2; off += (int)Ts[w], w++) {
            ok = sqz_forward_layer(&m, pool, l, x + off * dim, Ts[w], gram_hook, &hc, &err) == 0 &&
                 sqz_block_pass_run(p, y + off * dim, Ts[w], &(sqz_block_io){.sites = ga}, &err) == 0;
        }
        for (int s = 0; ok && s < SQZ_BLOCK_SITES; s++)
            if (hc.acc[s]) ok = sqz_gram_finish(hc.acc[s], &err) == 0 && sqz_gram_finish(ga[s], &err) == 0;
        CHECK(ok, "%s block %d: %s", path, l, err.msg);
        if (ok) {
            double mx = 0, dx = 0;
            for (int64_t i = 0; i < T_all * dim; i++) mx = fmax(mx, fabs(x[i])), dx = fmax(dx, fabs(x[i] - y[i]));
            CHECK(dx <= 1e-4 * mx, "%s block %d: output max |gpu - cpu| %.3e, max |x| %.3e", path, l, dx, mx);
            worst_x = fmax(worst_x, dx / mx);
            for (int s = 0; s < SQZ_BLOCK_SITES; s++) {
                if (!Gc[s]) continue;
                int64_t n = site_width(&m, l, s);
                double gm = 0, dg = 0;
                for (int64_t i = 0; i < n * n; i++) gm = fmax(gm, fabs(Gc[s][i])), dg = fmax(dg, fabs(Gc[s][i] - Gg[s][i]));
                CHECK(dg <= 1e-4 * gm, "%s block %d: %s Gram max |gpu - cpu| %.3e, largest %.3e", path, l, kSite[s], dg,
                      gm);
                worst_g = fmax(worst_g, dg / gm);
            }
        }
        for (int s = 0; s < SQZ_BLOCK_SITES; s++) {
            sqz_gram_close(hc.acc[s]);
            sqz_gram_close(ga[s]);
            free(Gc[s]);
            free(Gg[s]);
        }
    }
    printf("test_block: %s: %d blocks, outputs within %.2e and Grams within %.2e (relative) of the CPU's\n", path,
           m.cfg.n_layer, worst_x, worst_g);
    sqz_block_pass_close(p);
    free(tok); free(x); free(y);
    sqz_model_free(&m);
}

/* The calibration stepper (sqz/calib.h) on the GPU against the CPU: every layer's plain
 * and token-weighted Grams, the stream carried by each device itself (so block errors
 * compound over the layers: bound 1e-3 of the largest entry). */
static void compare_stepper(sqz_backend *gpu, sqz_pool *pool, const char *path) {
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, path, 0, &err)) {
        CHECK(0, "%s: %s", path, err.msg);
        return;
    }
    const int nsamples = 3, seqlen = 40, nl = m.cfg.n_layer;
    const int64_t T = (int64_t)nsamples * seqlen;
    int32_t *tok = malloc((size_t)T * sizeof(int32_t));
    tu_rng r = {11};
    for (int64_t i = 0; i < T; i++) tok[i] = (int32_t)(tu_urand(&r) * (m.cfg.n_vocab - 1));
    /* weights for some kinds of some layers (q, o, down of even layers; gate of odd) */
    float **w = calloc((size_t)nl * SQZ_CALIB_KINDS, sizeof(float *));
    for (int l = 0; l < nl; l++)
        for (int k = 0; k < SQZ_CALIB_KINDS; k++) {
            if (!((l % 2 == 0 && (k == 0 || k == 3 || k == 6)) || (l % 2 == 1 && k == 4))) continue;
            w[l * SQZ_CALIB_KINDS + k] = malloc((size_t)T * sizeof(float));
            for (int64_t t = 0; t < T; t++) w[l * SQZ_CALIB_KINDS + k][t] = (float)(tu_urand(&r) * 3.0);
        }
    sqz_calib_stepper *sc = NULL, *sg = NULL;
    int ok = sqz_calib_begin(&m, NULL, pool, tok, nsamples, seqlen, (const float *const *)w, NULL, &sc, &err) == 0 &&
             sqz_calib_begin(&m, gpu, pool, tok, nsamples, seqlen, (const float *const *)w, NULL, &sg, &err) == 0;
    CHECK(ok, "%s: stepper: %s", path, err.msg);
    double worst = 0, worst_w = 0;
    int n_w = 0;
    for (int l = 0; ok && l < nl; l++) {
        sqz_layer_grams *gc, *gg;
        ok = sqz_calib_step(sc, &gc, &err) == 0;
        /* gc's buffers stay until sc's next step */
        ok = ok && sqz_calib_step(sg, &gg, &err) == 0;
        CHECK(ok, "%s layer %d: %s", path, l, err.msg);
        if (!ok) break;
        for (int s = 0; s < SQZ_SITE_COUNT + SQZ_CALIB_KINDS; s++) {
            int weighted = s >= SQZ_SITE_COUNT;
            int k = s - SQZ_SITE_COUNT;
            const double *a = weighted ? gc->gw[k] : gc->g[s], *b = weighted ? gg->gw[k] : gg->g[s];
            int64_t n = weighted ? gc->n[sqz_calib_site_of(k)] : gc->n[s];
            CHECK((a == NULL) == (b == NULL), "%s layer %d: Gram %d present on one device only", path, l, s);
            if (!a || !b) continue;
            n_w += weighted;
            double gm = 0, dg = 0;
            for (int64_t i = 0; i < n * n; i++) gm = fmax(gm, fabs(a[i])), dg = fmax(dg, fabs(a[i] - b[i]));
            CHECK(dg <= 1e-3 * gm, "%s layer %d: %s Gram %d: max |gpu - cpu| %.3e, largest %.3e", path, l,
                  weighted ? "weighted" : "plain", weighted ? k : s, dg, gm);
            if (weighted) worst_w = fmax(worst_w, dg / gm);
            else worst = fmax(worst, dg / gm);
        }
    }
    printf("test_block: %s: calibration stepper, %d layers: plain Grams within %.2e, %d token-weighted within %.2e "
           "(relative) of the CPU's\n", path, nl, worst, n_w, worst_w);
    CHECK(!ok || n_w > 0, "%s: no token-weighted Gram compared", path);
    sqz_calib_end(sc);
    sqz_calib_end(sg);
    for (int i = 0; i < nl * SQZ_CALIB_KINDS; i++) free(w[i]);
    free(w);
    free(tok);
    sqz_model_free(&m);
}

/* ---------------------------------------------------------------- the backward pass */

/* What the CPU's backward handed each hook (per window, layer and kind), for the GPU's
 * to be compared with: x and g element by element, and the statistics sensitivity.c
 * forms from them, s_j = Σ_t g_tj² (per output) and w_t = Σ_j g_tj² (per token). */
#define G_KINDS SQZ_LIN_COUNT
typedef struct {
    const sqz_model *m;
    int64_t T;
    int nsamples, gpu;
    float **x, **g;   /* [window][slot] copies (CPU run) */
    double **s[2];    /* [slot] Σ_t g² per output, per device */
    double **tw[2];   /* [slot][window·T + t] Σ_j g² per token, per device */
    double worst_g, worst_x;
    int n_sites[2];
    int failed;
} grad_cap;

static int slot_of(const grad_cap *c, int layer, int kind) {
    return layer < 0 ? c->m->cfg.n_layer * G_KINDS + kind : layer * G_KINDS + kind;
}

static int grad_cap_hook(void *vctx, const sqz_grad_site *st, sqz_err *err) {
    (void)err;
    grad_cap *c = vctx;
    /* the RMSNorms' sites (sqz_grad_set_norm_hook) in a layer's unused slots 7 and 8 */
    const int kind = st->kind >= SQZ_GRAD_NORM_ATTN ? st->kind - SQZ_GRAD_NORM_ATTN + 7 : st->kind;
    const int nslots = (c->m->cfg.n_layer + 1) * G_KINDS, slot = slot_of(c, st->layer, kind);
    const int64_t in = st->kind == SQZ_LIN_EMBD ? 0 : st->in, out = st->out, T = c->T;
    const int dev = c->gpu;
    float **xs = &c->x[(int64_t)st->window * nslots + slot], **gs = &c->g[(int64_t)st->window * nslots + slot];
    if (!c->s[dev][slot]) {
        c->s[dev][slot] = calloc((size_t)out, sizeof(double));
        c->tw[dev][slot] = calloc((size_t)(c->nsamples * T), sizeof(double));
    }
    if (!dev && !*gs) {
        *gs = calloc((size_t)(T * out), sizeof(float));
        *xs = in ? calloc((size_t)(T * in), sizeof(float)) : NULL;
    }
    c->n_sites[dev]++;
    double gmax = 0, gd = 0, xmax = 0, xd = 0;
    for (int64_t t = 0; t < st->n; t++) {
        const float *g = st->g + t * out, *x = in ? st->x + t * in : NULL;
        float *gr = *gs + (st->row0 + t) * out, *xr = in ? *xs + (st->row0 + t) * in : NULL;
        double q = 0;
        for (int64_t j = 0; j < out; j++) {
            q += (double)g[j] * g[j];
            c->s[dev][slot][j] += (double)g[j] * g[j];
            if (dev) gmax = fmax(gmax, fabs(gr[j])), gd = fmax(gd, fabs(gr[j] - g[j]));
            else gr[j] = g[j];
        }
        c->tw[dev][slot][(int64_t)st->window * T + st->row0 + t] = q;
        for (int64_t i = 0; i < in; i++) {
            if (dev) xmax = fmax(xmax, fabs(xr[i])), xd = fmax(xd, fabs(xr[i] - x[i]));
            else xr[i] = x[i];
        }
    }
    if (dev && gmax > 0) {
        CHECK(gd <= 1e-3 * gmax, "window %d layer %d %s: gradient max |gpu - cpu| %.3e, largest %.3e", st->window,
              st->layer, kind >= 7 && st->layer >= 0 ? "norm" : sqz_linear_kind_name(kind), gd, gmax);
        c->worst_g = fmax(c->worst_g, gd / gmax);
    }
    if (dev && xmax > 0) {
        CHECK(xd <= 1e-3 * xmax, "window %d layer %d %s: input max |gpu - cpu| %.3e, largest %.3e", st->window,
              st->layer, kind >= 7 && st->layer >= 0 ? "norm" : sqz_linear_kind_name(kind), xd, xmax);
        c->worst_x = fmax(c->worst_x, xd / xmax);
    }
    return SQZ_OK;
}

/* Relative max difference of two arrays (to the larger array's largest entry). */
static double rel_diff(const double *a, const double *b, int64_t n) {
    double mx = 0, d = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fmax(fabs(a[i]), fabs(b[i]))), d = fmax(d, fabs(a[i] - b[i]));
    return mx > 0 ? d / mx : 0;
}

/* sqz_grad_windows on the GPU (a group of windows layer by layer) against the CPU (window
 * after window): the loss within 1e-5, every hook's input and gradient within 1e-3 of
 * that site's largest entry, and s_j, w_t within 1e-3. */
static void compare_grad(sqz_backend *gpu, sqz_pool *pool, const char *path) {
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, path, 0, &err)) {
        CHECK(0, "%s: %s", path, err.msg);
        return;
    }
    const int nsamples = 3;
    const int64_t T = 40;
    int32_t *tok = malloc((size_t)(nsamples * T) * sizeof(int32_t));
    tu_rng r = {13};
    for (int64_t i = 0; i < nsamples * T; i++) tok[i] = (int32_t)(tu_urand(&r) * (m.cfg.n_vocab - 1));
    const int nslots = (m.cfg.n_layer + 1) * G_KINDS;
    grad_cap c = {&m, T, nsamples, 0, calloc((size_t)(nsamples * nslots), sizeof(float *)),
                  calloc((size_t)(nsamples * nslots), sizeof(float *)), {calloc((size_t)nslots, sizeof(double *)),
                  calloc((size_t)nslots, sizeof(double *))}, {calloc((size_t)nslots, sizeof(double *)),
                  calloc((size_t)nslots, sizeof(double *))}, 0, 0, {0, 0}, 0};
    double loss[2] = {0, 0};
    for (int dev = 0; dev < 2; dev++) {
        sqz_grad *g = NULL;
        c.gpu = dev;
        int ok = sqz_grad_create_on(&g, &m, pool, dev ? gpu : NULL, T, &err) == 0;
        if (ok) sqz_grad_set_norm_hook(g, grad_cap_hook, &c);
        ok = ok && sqz_grad_windows(g, tok, nsamples, T, 1.0 / (double)(T - 1), grad_cap_hook, &c, &loss[dev], NULL,
                                  &err) == 0;
        CHECK(ok, "%s: backward on the %s: %s", path, dev ? "GPU" : "CPU", err.msg);
        sqz_grad_free(g);
    }
    CHECK(c.n_sites[0] == c.n_sites[1], "%s: %d hooked sites on the CPU, %d on the GPU", path, c.n_sites[0],
          c.n_sites[1]);
    double dl = fabs(loss[1] - loss[0]) / fabs(loss[0]), ws = 0, wt = 0;
    CHECK(dl <= 1e-5, "%s: loss %.8f on the GPU, %.8f on the CPU", path, loss[1], loss[0]);
    for (int i = 0; i < nslots; i++) {
        if (!c.s[0][i] || !c.s[1][i]) {
            CHECK(!c.s[0][i] && !c.s[1][i], "%s: site %d hooked on one device only", path, i);
            continue;
        }
        int kind = i % G_KINDS, layer = i / G_KINDS;
        int is_norm = layer < m.cfg.n_layer && kind >= 7;
        const sqz_tensor *t = is_norm ? NULL : sqz_linear_tensor(&m, layer < m.cfg.n_layer ? layer : -1, kind);
        int64_t out = is_norm || kind == SQZ_LIN_EMBD ? m.cfg.dim : kind == SQZ_LIN_OUTPUT ? m.cfg.n_vocab : t->ne[1];
        double a = rel_diff(c.s[0][i], c.s[1][i], out), b = rel_diff(c.tw[0][i], c.tw[1][i], nsamples * T);
        CHECK(a <= 1e-3 && b <= 1e-3, "%s: layer %d %s: s_j within %.2e, w_t within %.2e", path, layer,
              is_norm ? (kind == 7 ? "attn_norm" : "ffn_norm") : sqz_linear_kind_name(kind), a, b);
        ws = fmax(ws, a), wt = fmax(wt, b);
    }
    printf("test_block: %s: backward, %d windows × %lld: loss within %.1e, gradients within %.2e, inputs within "
           "%.2e, s_j within %.2e, w_t within %.2e (relative) of the CPU's\n",
           path, nsamples, (long long)T, dl, c.worst_g, c.worst_x, ws, wt);
    for (int i = 0; i < nsamples * nslots; i++) free(c.x[i]), free(c.g[i]);
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < nslots; i++) free(c.s[d][i]), free(c.tw[d][i]);
        free(c.s[d]);
        free(c.tw[d]);
    }
    free(c.x);
    free(c.g);
    free(tok);
    sqz_model_free(&m);
}

int main(void) {
    const char *fx[] = {"arch/llama3.gguf", "arch/qwen2.gguf", "arch/qwen3.gguf"};
    char *paths[5] = {0};
    int n = 0;
    for (int i = 0; i < 3; i++) paths[n++] = tu_fixture(fx[i]);
    paths[n++] = tu_shared("models/stories260K");
    check_cpu_refuses();
    for (int i = 0; i < n; i++) check_desc(paths[i]);
    int skipped = 0;
    if (sqz_cuda_built()) {
        sqz_pool *pool = NULL;
        sqz_backend *gpu = NULL;
        sqz_err err;
        pool = sqz_pool_create(2, &err);
        if (sqz_backend_create(SQZ_DEVICE_CUDA, pool, &gpu, &err)) {
            printf("test_block: skipped the GPU comparisons: %s\n", err.msg);
            skipped = 1;
        } else {
            char *def = tu_default_model();
            if (def) paths[n++] = def;
            for (int i = 0; i < n; i++) compare_model(gpu, pool, paths[i]);
            for (int i = 0; i < n; i++) compare_stepper(gpu, pool, paths[i]);
            for (int i = 0; i < n; i++) compare_grad(gpu, pool, paths[i]);
            printf("test_block: %s, peak %.1f MiB\n", sqz_backend_describe(gpu),
                   (double)sqz_backend_peak_bytes(gpu) / 1048576.0);
            sqz_backend_free(gpu);
        }
        sqz_pool_free(pool);
    }
    for (int i = 0; i < n; i++) free(paths[i]);
    int rc = tu_done("test_block");
    return rc ? rc : skipped ? 77 : 0;
}

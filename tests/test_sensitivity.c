/* The loss-change proxies (src/plan/sensitivity.c).
 *
 * 1. sqz_spearman on hand-checked series (ties get average ranks).
 * 2. The plumbing of sqz_sensitivity on stories260K: for a few (tensor, type) pairs the
 *    three predictions are recomputed here from scratch — s_j and the diagonal Fisher from
 *    the backward pass's g and x (sqz_grad_window), H from sqz_calib_grams, Ŵ from
 *    sqz_gptq_quantize with the same options — and must agree to 1e-6 (relative).
 * 4. Statistics from a GGUF copy of the model (q/k rows permuted) give the same predictions
 *    for the Hugging Face weights (compress re-estimates on its own GGUF output): within
 *    2% (measured 0.5%: float differences of the two RoPE layouts flip a few GPTQ roundings
 *    of Q8_0); without the row mapping for q/k they differ by 10%.
 * 3. Lossless options predict 0: F16 of weights that are exactly F16 values, and the
 *    predictions rise as the type gets coarser (Q8_0 < Q5_0 < Q4_0 for every tensor). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sqz/calib.h"
#include "sqz/gptq.h"
#include "sqz/grad.h"
#include "sqz/quant.h"
#include "sqz/sensitivity.h"
#include "testutil.h"

static void test_spearman(void) {
    double a[5] = {1, 2, 3, 4, 5}, b[5] = {10, 20, 30, 40, 50}, c[5] = {5, 4, 3, 2, 1};
    CHECK(fabs(sqz_spearman(a, b, 5) - 1.0) < 1e-12, "identical order");
    CHECK(fabs(sqz_spearman(a, c, 5) + 1.0) < 1e-12, "reversed order");
    double t1[4] = {1, 2, 2, 3}, t2[4] = {1, 3, 2, 4}; /* ranks 1 2.5 2.5 4 vs 1 3 2 4 */
    double r = sqz_spearman(t1, t2, 4);                 /* Pearson of the ranks: 0.9486833 */
    CHECK(fabs(r - 0.9486832981) < 1e-9, "ties: %.10f", r);
    CHECK(isnan(sqz_spearman(a, b, 1)), "one point has no correlation");
    double k[3] = {2, 2, 2};
    CHECK(isnan(sqz_spearman(a, k, 3)), "a constant series has no correlation");
}

/* ---------------------------------------------------------------- recomputation */

typedef struct {
    int layer, kind;
    int64_t rows, cols, T;
    double *s, *F, *H; /* [rows], [rows × cols], [cols × cols] */
    double *Hw, wsum;  /* Σ_t w_t x_t x_tᵀ from the backward pass's own inputs, Σ_t w_t */
} ref_stats;

static int ref_hook(void *vctx, const sqz_grad_site *st, sqz_err *err) {
    (void)err;
    ref_stats *r = vctx;
    if (st->layer != r->layer || st->kind != r->kind) return SQZ_OK;
    for (int64_t t = 0; t < st->n; t++) {
        const float *g = st->g + t * st->out, *x = st->x + t * st->in;
        double w = 0;
        for (int64_t j = 0; j < st->out; j++) {
            r->s[j] += (double)g[j] * g[j];
            w += (double)g[j] * g[j];
            for (int64_t i = 0; i < st->in; i++) r->F[j * st->in + i] += (double)g[j] * g[j] * x[i] * x[i];
        }
        for (int64_t a = 0; a < st->in; a++)
            for (int64_t b = 0; b < st->in; b++) r->Hw[a * st->in + b] += w * x[a] * x[b];
        r->wsum += w;
    }
    r->T += st->n;
    return SQZ_OK;
}

/* The reference statistics of (layer, kind): s, F and H_w from the backward pass's own
 * inputs (ref_hook), H as sqz_sensitivity takes it, from the forward pass's Grams
 * (sqz_calib_grams). Free with ref_free. */
static ref_stats ref_collect(const sqz_model *m, int layer, int kind, const int32_t *win, int ns, int L) {
    static const int kSite[SQZ_LIN_PER_LAYER] = {SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN,
                                                 SQZ_SITE_ATTN_O_IN, SQZ_SITE_FFN_IN, SQZ_SITE_FFN_IN,
                                                 SQZ_SITE_FFN_DOWN_IN};
    const sqz_tensor *t = sqz_linear_tensor(m, layer, kind);
    int64_t rows = t->ne[1], cols = t->ne[0];
    ref_stats r = {layer, kind, rows, cols, 0, calloc((size_t)rows, sizeof(double)),
                   calloc((size_t)(rows * cols), sizeof(double)), calloc((size_t)(cols * cols), sizeof(double)),
                   calloc((size_t)(cols * cols), sizeof(double)), 0};
    sqz_err err;
    sqz_grad *g = NULL;
    CHECK(sqz_grad_create(&g, m, NULL, L, &err) == 0, "%s", err.msg);
    for (int s = 0; s < ns; s++)
        CHECK(sqz_grad_window(g, win + s * L, L, 1.0, ref_hook, &r, NULL, &err) == 0, "%s", err.msg);
    sqz_grad_free(g);
    sqz_model_grams mg;
    CHECK(sqz_calib_grams(m, NULL, win, ns, L, &mg, &err) == 0, "%s", err.msg);
    int site = kSite[kind];
    CHECK(mg.layers[layer].n[site] == cols, "Gram width");
    for (int64_t i = 0; i < cols * cols; i++) r.H[i] = mg.layers[layer].g[site][i] / (double)mg.n_tokens;
    sqz_calib_grams_free(&mg);
    return r;
}

static void ref_free(ref_stats *r) {
    free(r->s); free(r->F); free(r->H); free(r->Hw);
}

static void test_plumbing(void) {
    char *dir = tu_shared("models/stories260K"), *ids_path = tu_shared("models/stories260K/reference_greedy_tokens.json");
    sqz_model m;
    sqz_err err;
    int rc = sqz_model_load(&m, dir, 0, &err);
    CHECK(rc == 0, "load: %s", err.msg);
    cJSON *j = rc == 0 ? tu_read_json(ids_path) : NULL;
    if (!j) goto out;
    int64_t n_ids = 0;
    int32_t *ids = tu_json_ids(j, &n_ids);
    enum { NS = 3, L = 48 };
    int32_t win[NS * L];
    for (int s = 0; s < NS; s++) memcpy(win + s * L, ids + 20 * s, L * sizeof(int32_t));
    int types[4] = {SQZ_TYPE_Q4_0, SQZ_TYPE_Q5_0, SQZ_TYPE_Q8_0, SQZ_TYPE_F16};
    sqz_sens_opts o = {win, NS, L, types, 4, 0.01, 0.75, 1, NULL, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL};
    sqz_sens sens;
    rc = sqz_sensitivity(&m, &m, NULL, &o, &sens, &err);
    CHECK(rc == 0, "sensitivity: %s", err.msg);
    if (rc) goto out_ids;
    CHECK(sens.n_tensors == sqz_sens_count(&m), "%d tensors", sens.n_tensors);
    /* (layer, kind) pairs whose rows fit 32-blocks: q (64 wide), gate (64), o (64) */
    const int cases[3][2] = {{0, SQZ_LIN_Q}, {2, SQZ_LIN_GATE}, {4, SQZ_LIN_O}};
    for (int c = 0; c < 3; c++) {
        int layer = cases[c][0], kind = cases[c][1], idx = sqz_sens_index(&m, layer, kind);
        const sqz_tensor *t = sqz_linear_tensor(&m, layer, kind);
        int64_t rows = t->ne[1], cols = t->ne[0];
        ref_stats r = ref_collect(&m, layer, kind, win, NS, L);
        double N = (double)NS * (L - 1);
        float *W = malloc((size_t)(rows * cols) * sizeof(float)), *what = malloc((size_t)(rows * cols) * sizeof(float));
        CHECK(sqz_tensor_rows_f32(t, 0, rows, W, &err) == 0, "%s", err.msg);
        for (int k = 0; k < 3; k++) { /* the quantized candidates */
            const sqz_sens_option *op = NULL;
            for (int q = 0; q < sens.t[idx].n_options; q++)
                if (sens.t[idx].opt[q].type == types[k]) op = &sens.t[idx].opt[q];
            CHECK(op != NULL, "%s has no %d option", sens.t[idx].name, types[k]);
            if (!op) continue;
            size_t rb;
            sqz_type_row_bytes(types[k], cols, &rb, &err);
            void *dst = malloc(rb * (size_t)rows);
            sqz_gptq_opts go = {0.01, 0, 1, 0.75, 1, NULL}; /* the estimate's single-precision GPTQ */
            CHECK(sqz_gptq_quantize(types[k], W, rows, cols, r.H, &go, NULL, dst, what, NULL, NULL, NULL, &err) == 0,
                  "%s", err.msg);
            double grad = 0, gradtw = 0, local = 0, diag = 0;
            for (int64_t row = 0; row < rows; row++) {
                double e = 0, ew = 0;
                for (int64_t a = 0; a < cols; a++) {
                    double da = (double)W[row * cols + a] - what[row * cols + a];
                    diag += r.F[row * cols + a] * da * da;
                    for (int64_t b = 0; b < cols; b++) {
                        double db = (double)W[row * cols + b] - what[row * cols + b];
                        e += da * r.H[a * cols + b] * db;
                        ew += da * r.Hw[a * cols + b] / r.wsum * db;
                    }
                }
                grad += r.s[row] * e;
                gradtw += r.s[row] * ew;
                local += e;
            }
            grad *= 0.5 / N, gradtw *= 0.5 / N, local *= 0.5, diag *= 0.5 / N;
            /* the backward pass's inputs and the calibration pass's are computed apart:
             * float summation order differs, so 1e-5 rather than 1e-6 */
            CHECK(fabs(op->dl_gradtw - gradtw) <= 1e-5 * fabs(gradtw), "%s %d: gradtw %.9g, recomputed %.9g",
                  sens.t[idx].name, types[k], op->dl_gradtw, gradtw);
            CHECK(fabs(op->dl_gradtw - op->dl_grad) > 1e-3 * fabs(grad), "%s %d: gradtw %.9g equals grad %.9g",
                  sens.t[idx].name, types[k], op->dl_gradtw, op->dl_grad);
            CHECK(fabs(op->dl_grad - grad) <= 1e-6 * fabs(grad), "%s %d: grad %.9g, recomputed %.9g", sens.t[idx].name,
                  types[k], op->dl_grad, grad);
            CHECK(fabs(op->dl_local - local) <= 1e-6 * fabs(local), "%s: local %.9g, recomputed %.9g",
                  sens.t[idx].name, op->dl_local, local);
            CHECK(fabs(op->dl_diag - diag) <= 1e-5 * fabs(diag), "%s: diag %.9g, recomputed %.9g", sens.t[idx].name,
                  op->dl_diag, diag);
            free(dst);
        }
        free(W); free(what);
        ref_free(&r);
    }
    /* 2a. weighted_only: the same gradtw for every option, grad and local NaN */
    {
        sqz_sens_opts ow = o;
        ow.diag_fisher = 0, ow.weighted_only = 1;
        sqz_sens sw;
        CHECK(sqz_sensitivity(&m, &m, NULL, &ow, &sw, &err) == 0, "weighted only: %s", err.msg);
        int bad = 0, n = 0;
        for (int i = 0; i < sw.n_tensors && i < sens.n_tensors; i++)
            for (int k = 0; k < sw.t[i].n_options; k++, n++) {
                const sqz_sens_option *a = &sw.t[i].opt[k], *b = &sens.t[i].opt[k];
                if (a->dl_gradtw != b->dl_gradtw || !isnan(a->dl_grad) || !isnan(a->dl_local)) bad++;
            }
        CHECK(n > 0 && bad == 0, "weighted only: %d of %d options differ from the full estimate", bad, n);
        sqz_sens_free(&sw);
    }
    /* 2b. with width options, ffn_down (172 wide: no 32-block type fits) also gets the
     * types a narrowed row fits, scored on its first 160 columns and scaled by 172/160 */
    {
        sqz_sens_opts on = o;
        on.diag_fisher = 0, on.prune_ffn_step = 32;
        sqz_sens sn;
        int layer = 1, idx = sqz_sens_index(&m, layer, SQZ_LIN_DOWN);
        CHECK(sqz_sensitivity(&m, &m, NULL, &on, &sn, &err) == 0, "sensitivity with widths: %s", err.msg);
        const sqz_sens_tensor *st = &sn.t[idx];
        CHECK(st->cols == 172 && st->n_options == 1 && st->opt[0].type == SQZ_TYPE_F16 && st->n_narrow == 3,
              "%s: %d options, %d narrow", st->name, st->n_options, st->n_narrow);
        const sqz_tensor *t = sqz_linear_tensor(&m, layer, SQZ_LIN_DOWN);
        int64_t rows = t->ne[1], cols = t->ne[0], cf = 160;
        ref_stats r = ref_collect(&m, layer, SQZ_LIN_DOWN, win, NS, L);
        double *Hp = malloc((size_t)(cf * cf) * sizeof(double));
        for (int64_t a = 0; a < cf; a++) memcpy(Hp + a * cf, r.H + a * cols, (size_t)cf * sizeof(double));
        float *W = malloc((size_t)(rows * cols) * sizeof(float)), *Wp = malloc((size_t)(rows * cf) * sizeof(float));
        float *what = malloc((size_t)(rows * cf) * sizeof(float));
        CHECK(sqz_tensor_rows_f32(t, 0, rows, W, &err) == 0, "%s", err.msg);
        for (int64_t row = 0; row < rows; row++) memcpy(Wp + row * cf, W + row * cols, (size_t)cf * sizeof(float));
        for (int q = 0; q < st->n_narrow; q++) {
            size_t rb;
            sqz_type_row_bytes(st->narrow[q].type, cf, &rb, &err);
            void *dst = malloc(rb * (size_t)rows);
            sqz_gptq_opts go = {0.01, 0, 1, 0.75, 1, NULL}; /* the estimate's single-precision GPTQ */
            CHECK(sqz_gptq_quantize(st->narrow[q].type, Wp, rows, cf, Hp, &go, NULL, dst, what, NULL, NULL, NULL,
                                    &err) == 0, "%s", err.msg);
            double grad = 0;
            for (int64_t row = 0; row < rows; row++) {
                double e = 0;
                for (int64_t a = 0; a < cf; a++)
                    for (int64_t b = 0; b < cf; b++)
                        e += ((double)Wp[row * cf + a] - what[row * cf + a]) * Hp[a * cf + b] *
                             ((double)Wp[row * cf + b] - what[row * cf + b]);
                grad += r.s[row] * e;
            }
            grad *= 0.5 / ((double)NS * (L - 1)) * (double)cols / (double)cf;
            CHECK(grad > 0 && fabs(st->narrow[q].dl_grad - grad) <= 1e-6 * grad, "%s narrowed %d: grad %.9g, "
                  "recomputed %.9g", st->name, st->narrow[q].type, st->narrow[q].dl_grad, grad);
            free(dst);
        }
        free(W); free(Wp); free(what); free(Hp);
        ref_free(&r);
        sqz_sens_free(&sn);
    }
    /* 3. coarser types predict more; F16 of stories260K's f32 weights is nearly free */
    int ordered = 0, checked = 0;
    for (int i = 0; i < sens.n_tensors; i++) {
        double v[4] = {NAN, NAN, NAN, NAN};
        for (int q = 0; q < sens.t[i].n_options; q++)
            for (int k = 0; k < 4; k++)
                if (sens.t[i].opt[q].type == types[k]) v[k] = sens.t[i].opt[q].dl_grad;
        if (isnan(v[0])) continue;
        checked++;
        ordered += v[0] > v[1] && v[1] > v[2] && v[2] > v[3] && v[3] >= 0;
    }
    CHECK(checked > 20 && ordered == checked, "Q4_0 > Q5_0 > Q8_0 > F16 >= 0 for %d of %d tensors", ordered, checked);
    /* 4. statistics from the same weights as a GGUF file (q/k rows in llama.cpp's order,
     * tests/fixtures/stories260K/stories260K-F32.gguf): the same predictions */
    char *gpath = tu_fixture("stories260K/stories260K-F32.gguf");
    sqz_model gm;
    if (sqz_model_load(&gm, gpath, 0, &err) == 0) {
        sqz_sens s2;
        o.diag_fisher = 0;
        CHECK(sqz_sensitivity(&gm, &m, NULL, &o, &s2, &err) == 0, "%s", err.msg);
        double worst = 0;
        for (int i = 0; i < sens.n_tensors && i < s2.n_tensors; i++)
            for (int q = 0; q < sens.t[i].n_options; q++) {
                double a = sens.t[i].opt[q].dl_grad, b = s2.t[i].opt[q].dl_grad;
                double d = fabs(a - b) / fmax(fabs(a), 1e-12);
                if (d > worst) worst = d;
            }
        CHECK(worst < 2e-2, "statistics from the GGUF copy: predictions differ by %.2e (relative)", worst);
        sqz_sens_free(&s2);
        sqz_model_free(&gm);
    } else {
        CHECK(0, "load %s: %s", gpath, err.msg);
    }
    free(gpath);
    sqz_sens_free(&sens);
out_ids:
    free(ids);
out:
    cJSON_Delete(j);
    if (rc == 0 || m.path) sqz_model_free(&m);
    free(dir);
    free(ids_path);
}

int main(void) {
    test_spearman();
    test_plumbing();
    return tu_done("test_sensitivity");
}

/* End-to-end tuning of row scales (sqz_tune, src/pipeline/tune.c) and the KL targets of
 * the backward pass (sqz_grad_set_targets), on the Qwen2 architecture fixture (biases:
 * the tuned product must leave them out) quantized to Q4_0:
 *
 * 1. The KL objective's gradient: for one tensor, Σ_j ∂L/∂θ_j over all rows — built here
 *    from the hook's x and g with plain loops, Σ_t g_tj (W_j · x_t) — equals the central
 *    difference (L(θ+δ) − L(θ−δ)) / 2δ (δ and δ/2, Richardson) of the mean KL, within 1%.
 *    On the F32 model (its rows scale exactly; the f16 scale fields of a quantized one
 *    round a small move away), against the Q4_0 model's probabilities (against its own
 *    the KL and its gradient are 0). Checks grad.c's KL targets (loss and logit
 *    gradient) and the formula tune.c's hook uses. The same for two RMSNorm gain vectors
 *    through the norm hook (Σ_t g_ti x_ti, x the norm's output), and the output head's and
 *    the (untied) token embedding's rows.
 * 2. sqz_tune: the calibration KL falls over the steps; the held-out KL written is at most
 *    the input's; the file has the input's size and differs from it only inside the scale
 *    fields of the tuned tensors' blocks; loading the written file and measuring its
 *    held-out KL gives the report's best value (within 1e-6); a second run writes the same
 *    bytes.
 * 3. Bad input: an F32 file (no scale fields) is refused naming the file. */
#include <math.h>
#include <string.h>

#include "sqz/grad.h"
#include "sqz/model.h"
#include "sqz/quant.h"
#include "sqz/quantize_model.h"
#include "sqz/tune.h"
#include "testutil.h"

#define T 32
#define N_CAL 3
#define N_HELD 2

/* softmax(logits) of ref on n windows: [n][T][V]. */
static float *probs_of(const sqz_model *ref, const int32_t *tok, int n) {
    const int64_t V = ref->cfg.n_vocab;
    float *p = malloc((size_t)(n * T * V) * sizeof(float));
    sqz_err err;
    for (int w = 0; w < n; w++) {
        float *z = p + (int64_t)w * T * V;
        CHECK(sqz_forward(ref, NULL, tok + w * T, T, 0, z, &err) == 0, "forward: %s", err.msg);
        for (int64_t t = 0; t < T; t++) {
            float *r = z + t * V, mx = r[0];
            for (int64_t j = 1; j < V; j++) mx = fmaxf(mx, r[j]);
            double s = 0;
            for (int64_t j = 0; j < V; j++) s += exp((double)r[j] - mx);
            for (int64_t j = 0; j < V; j++) r[j] = (float)(exp((double)r[j] - mx) / s);
        }
    }
    return p;
}

static double kl_of(const sqz_model *m, const int32_t *tok, int n, const float *p) {
    sqz_grad *g = NULL;
    sqz_err err;
    double total = NAN;
    CHECK(sqz_grad_create(&g, m, NULL, T, &err) == 0, "%s", err.msg);
    if (!g) return NAN;
    sqz_grad_set_targets(g, p);
    CHECK(sqz_grad_windows(g, tok, n, T, 1.0, NULL, NULL, &total, NULL, &err) == 0, "%s", err.msg);
    sqz_grad_free(g);
    return total / (double)(n * (T - 1));
}

typedef struct {
    const sqz_tensor *t;
    int layer, kind;
    double sum; /* Σ_j Σ_t g_tj (Ŵ_j · x_t) */
} dir_ctx;

static int dir_hook(void *vctx, const sqz_grad_site *s, sqz_err *err) {
    (void)err;
    dir_ctx *c = vctx;
    if (s->layer != c->layer || s->kind != c->kind) return SQZ_OK;
    int64_t rows = c->t->ne[1], cols = c->t->ne[0];
    float *W = malloc((size_t)(rows * cols) * sizeof(float));
    sqz_err e2;
    CHECK(sqz_tensor_rows_f32(c->t, 0, rows, W, &e2) == 0, "%s", e2.msg);
    if (s->kind == SQZ_LIN_EMBD) { /* Σ_t g_t · e_{tok_t}: the stream's input moves with the rows */
        for (int64_t t = 0; t < s->n; t++)
            for (int64_t i = 0; i < cols; i++) c->sum += (double)s->g[t * s->out + i] * W[s->tokens[t] * cols + i];
        free(W);
        return SQZ_OK;
    }
    for (int64_t t = 0; t < s->n; t++)
        for (int64_t j = 0; j < rows; j++) {
            double y = 0;
            for (int64_t i = 0; i < cols; i++) y += (double)W[j * cols + i] * s->x[t * s->in + i];
            c->sum += (double)s->g[t * s->out + j] * y;
        }
    free(W);
    return SQZ_OK;
}

/* The model's tensor entry (mutable) for (layer, kind). */
static sqz_tensor *entry(sqz_model *m, int layer, int kind) {
    const sqz_tensor *ct = sqz_linear_tensor(m, layer, kind);
    for (int64_t k = 0; k < m->gguf.n_tensors; k++)
        if (&m->gguf.tensors[k] == ct) return &m->gguf.tensors[k];
    return NULL;
}

/* A hook that takes nothing (the backward runs in full only with one). */
static int null_hook(void *ctx, const sqz_grad_site *s, sqz_err *err) {
    (void)ctx, (void)s, (void)err;
    return SQZ_OK;
}
#define NULL_HOOK null_hook

/* On the F32 model m (its rows scale exactly: Σ_j ∂L/∂θ_j is the derivative of the loss
 * along every row of the tensor times e^δ), the targets another model's probabilities. */
static double kl_scaled(sqz_model *m, sqz_tensor *t, double delta, const int32_t *tok, const float *p) {
    const void *orig = t->data;
    int64_t n = sqz_tensor_nelements(t);
    float *buf = malloc((size_t)n * sizeof(float));
    const float *src = orig;
    for (int64_t i = 0; i < n; i++) buf[i] = (float)((double)src[i] * exp(delta));
    t->data = buf;
    double L = kl_of(m, tok, N_CAL, p);
    t->data = orig;
    free(buf);
    return L;
}

typedef struct {
    int layer, kind;
    double sum; /* Σ_t Σ_i g_ti x_ti at the norm's site */
} norm_ctx;

static int norm_dir_hook(void *vctx, const sqz_grad_site *s, sqz_err *err) {
    (void)err;
    norm_ctx *c = vctx;
    if (s->layer != c->layer || s->kind != c->kind) return SQZ_OK;
    for (int64_t i = 0; i < s->n * s->in; i++) c->sum += (double)s->g[i] * s->x[i];
    return SQZ_OK;
}

/* One backward pass of the KL with the given hooks (lin for the linears, norm for the
 * RMSNorms; the backward runs in full only with a linear hook). */
static void hooked_pass(sqz_model *m, const int32_t *tok, const float *p, sqz_grad_hook lin, sqz_grad_hook norm,
                        void *ctx) {
    sqz_err err;
    sqz_grad *g = NULL;
    double total = 0;
    CHECK(sqz_grad_create(&g, m, NULL, T, &err) == 0, "%s", err.msg);
    if (!g) return;
    sqz_grad_set_targets(g, p);
    if (norm) sqz_grad_set_norm_hook(g, norm, ctx);
    CHECK(sqz_grad_windows(g, tok, N_CAL, T, 1.0 / (N_CAL * (T - 1)), lin, norm ? NULL : ctx, &total, NULL, &err) == 0,
          "%s", err.msg);
    sqz_grad_free(g);
}

/* The derivative of the KL along t's values times e^δ: central differences at δ and δ/2,
 * combined by Richardson extrapolation, against the hook's value. */
static void compare_derivative(sqz_model *m, sqz_tensor *t, const int32_t *tok, const float *p, double hooked,
                               const char *what) {
    const double delta = 2e-3;
    double d1 = (kl_scaled(m, t, delta, tok, p) - kl_scaled(m, t, -delta, tok, p)) / (2 * delta);
    double d2 = (kl_scaled(m, t, delta / 2, tok, p) - kl_scaled(m, t, -delta / 2, tok, p)) / delta;
    double fd = (4 * d2 - d1) / 3;
    CHECK(fabs(fd - hooked) <= 1e-2 * fabs(fd) && fabs(fd) > 0,
          "%s: directional derivative %.6e from the %s, %.6e by central difference", t->name, hooked, what, fd);
    printf("test_tune: %s: dKL/dlog(scale) %.6e (%s) vs %.6e (central difference)\n", t->name, hooked, what, fd);
}

/* The same for an RMSNorm's gain vector (every element times e^δ). */
static void check_norm_gradient(sqz_model *m, const int32_t *tok, const float *p, int layer, int ffn) {
    const sqz_layer *L = &m->layers[layer];
    sqz_tensor *t = NULL;
    for (int64_t k = 0; k < m->gguf.n_tensors; k++)
        if (&m->gguf.tensors[k] == (ffn ? L->ffn_norm : L->attn_norm)) t = &m->gguf.tensors[k];
    CHECK(t && t->type == SQZ_TYPE_F32, "layer %d: an F32 norm", layer);
    if (!t) return;
    norm_ctx d = {layer, ffn ? SQZ_GRAD_NORM_FFN : SQZ_GRAD_NORM_ATTN, 0};
    hooked_pass(m, tok, p, NULL_HOOK, norm_dir_hook, &d);
    compare_derivative(m, t, tok, p, d.sum, "norm hook");
}

static void check_gradient(sqz_model *m, const int32_t *tok, const float *p) {
    const int cases[5][2] = {{0, SQZ_LIN_Q}, {1, SQZ_LIN_DOWN}, {1, SQZ_LIN_V}, {-1, SQZ_LIN_OUTPUT}, {-1, SQZ_LIN_EMBD}};
    for (int c = 0; c < 5; c++) {
        sqz_tensor *t = entry(m, cases[c][0], cases[c][1]);
        CHECK(t && t->type == SQZ_TYPE_F32, "layer %d kind %d: an F32 tensor", cases[c][0], cases[c][1]);
        if (!t || t->type != SQZ_TYPE_F32) continue;
        dir_ctx d = {t, cases[c][0], cases[c][1], 0};
        hooked_pass(m, tok, p, dir_hook, NULL, &d);
        compare_derivative(m, t, tok, p, d.sum, "hook");
    }
}

/* Every tensor of b equals a's, except bytes inside scale fields of blocks with them. */
static void check_only_scales(const char *a_path, const char *b_path, int *n_changed) {
    sqz_gguf a, b;
    sqz_err err;
    *n_changed = 0;
    if (sqz_gguf_open(&a, a_path, &err) || sqz_gguf_open(&b, b_path, &err)) {
        CHECK(0, "%s", err.msg);
        return;
    }
    CHECK(a.map.size == b.map.size && a.n_tensors == b.n_tensors && a.data_offset == b.data_offset,
          "the tuned file's size and layout");
    CHECK(!memcmp(a.map.data, b.map.data, a.data_offset), "the tuned file's header and metadata");
    for (int64_t k = 0; k < a.n_tensors && k < b.n_tensors; k++) {
        const sqz_tensor *ta = &a.tensors[k], *tb = &b.tensors[k];
        CHECK(ta->type == tb->type && ta->nbytes == tb->nbytes, "%s: type and size", ta->name);
        if (!memcmp(ta->data, tb->data, ta->nbytes)) continue;
        (*n_changed)++;
        const sqz_type_traits *tr = sqz_type_get(ta->type);
        if (ta->type == SQZ_TYPE_F32 && ta->n_dims == 1 && strstr(ta->name, "_norm.")) continue; /* a tuned gain */
        const uint8_t *pa = ta->data, *pb = tb->data;
        int bad = !tr->n_scales;
        for (size_t i = 0; i < ta->nbytes && !bad; i++) {
            if (pa[i] == pb[i]) continue;
            size_t in_block = i % tr->block_bytes;
            int ok = 0;
            for (int s = 0; s < tr->n_scales; s++) ok |= in_block == (size_t)tr->scale_at[s] || in_block == (size_t)tr->scale_at[s] + 1;
            bad = !ok;
        }
        CHECK(!bad, "%s: bytes outside the scale fields changed", ta->name);
    }
    sqz_gguf_close(&a);
    sqz_gguf_close(&b);
}

int main(void) {
    char *src = tu_fixture("arch/qwen2.gguf"), *q = tu_tmp("tune-q40.gguf"), *o1 = tu_tmp("tune-1.gguf"),
         *o2 = tu_tmp("tune-2.gguf");
    sqz_model ref;
    sqz_err err;
    if (sqz_model_load(&ref, src, 0, &err)) {
        CHECK(0, "%s", err.msg);
        return tu_done("test_tune");
    }
    sqz_qmodel_opts qo;
    memset(&qo, 0, sizeof qo);
    qo.type = SQZ_TYPE_Q4_0, qo.method = SQZ_QMETHOD_RTN, qo.output_type = -1, qo.embd_type = -1;
    CHECK(sqz_quantize_model(&ref, q, &qo, NULL, NULL, &err) == 0, "quantize: %s", err.msg);
    int32_t tok[(N_CAL + N_HELD) * T];
    tu_rng r = {5};
    for (int i = 0; i < (N_CAL + N_HELD) * T; i++) tok[i] = (int32_t)(tu_urand(&r) * (ref.cfg.n_vocab - 1));
    const int32_t *held = tok + N_CAL * T;
    float *p_cal = probs_of(&ref, tok, N_CAL), *p_held = probs_of(&ref, held, N_HELD);

    sqz_model qm; /* the quantized model's probabilities: targets the F32 model is differentiated against */
    if (sqz_model_load(&qm, q, 0, &err) == 0) {
        float *p_q = probs_of(&qm, tok, N_CAL);
        check_gradient(&ref, tok, p_q);
        check_norm_gradient(&ref, tok, p_q, 0, 0);
        check_norm_gradient(&ref, tok, p_q, 1, 1);
        free(p_q);
        sqz_model_free(&qm);
    } else {
        CHECK(0, "%s", err.msg);
    }

    sqz_tune_opts o = {tok, N_CAL, T, held, N_HELD, 6, 0.01, 3, 0, NULL, 1, 1};
    sqz_tune_report rep;
    int rc = sqz_tune(&ref, q, o1, &o, NULL, &rep, &err);
    CHECK(rc == 0, "tune: %s", err.msg);
    if (rc == 0) {
        printf("test_tune: %d tensors, %lld factors; calibration KL", rep.n_tensors, (long long)rep.n_params);
        for (int s = 0; s <= rep.n_steps; s++) printf(" %.5f", rep.train_kl[s]);
        printf("; held-out");
        for (int s = 0; s <= rep.n_steps; s++) printf(" %.5f", rep.held_kl[s]);
        printf("; best step %d\n", rep.best_step);
        CHECK(rep.n_tensors == 2 * 7 + 2 && rep.n_norms == 2 * 2 && rep.n_steps >= 1, "tuned %d tensors, %d norms in %d steps",
              rep.n_tensors, rep.n_norms, rep.n_steps);
        CHECK(rep.train_kl[1] < rep.train_kl[0] && rep.train_kl[rep.n_steps] < rep.train_kl[0],
              "calibration KL %.6f -> %.6f (step 1) -> %.6f", rep.train_kl[0], rep.train_kl[1],
              rep.train_kl[rep.n_steps]);
        CHECK(rep.held_kl[rep.best_step] <= rep.held_kl[0], "held-out KL written %.6f, input %.6f",
              rep.held_kl[rep.best_step], rep.held_kl[0]);
        int changed = 0;
        check_only_scales(q, o1, &changed);
        CHECK(rep.best_step == 0 ? changed == 0 : changed > 0, "%d tensors changed (best step %d)", changed,
              rep.best_step);
        sqz_model tm;
        if (sqz_model_load(&tm, o1, 0, &err) == 0) {
            double kl = kl_of(&tm, held, N_HELD, p_held);
            CHECK(fabs(kl - rep.held_kl[rep.best_step]) <= 1e-6 * fabs(kl), "the written file's held-out KL %.8f, "
                  "reported %.8f", kl, rep.held_kl[rep.best_step]);
            sqz_model_free(&tm);
        } else {
            CHECK(0, "%s", err.msg);
        }
        sqz_tune_report rep2;
        CHECK(sqz_tune(&ref, q, o2, &o, NULL, &rep2, &err) == 0, "tune again: %s", err.msg);
        size_t n1 = 0, n2 = 0;
        char *b1 = tu_slurp(o1, &n1), *b2 = tu_slurp(o2, &n2);
        CHECK(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1), "two runs wrote different bytes");
        free(b1);
        free(b2);
        sqz_tune_report_free(&rep2);
    }
    sqz_tune_report_free(&rep);
    /* an F32 file has nothing to tune */
    rc = sqz_tune(&ref, src, o2, &o, NULL, NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "qwen2.gguf") && strstr(err.msg, "scale") && !strchr(err.msg, '\n'),
          "an F32 input: %s", rc ? err.msg : "accepted");
    free(p_cal);
    free(p_held);
    sqz_model_free(&ref);
    free(src); free(q); free(o1); free(o2);
    return tu_done("test_tune");
}

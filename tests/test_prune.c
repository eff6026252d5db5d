/* Structured pruning (src/prune/prune.c):
 *  1. the removal cost with compensation equals Σ_j s_j δw_jᵀ H δw_j recomputed from the
 *     compensated matrix, is below the plain cost, and the compensation solves the
 *     normal equations H_SS δ_S = H_SR w_R (shrink 0);
 *  2. on stories260K, a pruned file written without compensation gives the same logits as
 *     the original model with the removed heads' o_proj columns and the removed channels'
 *     ffn_down columns set to zero (kept query heads still read their own kv heads:
 *     grouped-query order), kv heads removed in one layer, query heads in another;
 *  3. the Hugging Face export of the same pruning reloads and gives the same logits. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/grad.h"
#include "sqz/model.h"
#include "sqz/pipeline.h"
#include "sqz/prune.h"
#include "testutil.h"

static void test_algebra(void) {
    enum { ROWS = 7, N = 12, T = 40 };
    tu_rng r = {42};
    float W[ROWS * N];
    double X[T * N], H[N * N] = {0}, s[ROWS];
    for (int i = 0; i < ROWS * N; i++) W[i] = (float)tu_gauss(&r);
    for (int t = 0; t < T; t++) /* correlated inputs, so compensation has something to do */
        for (int i = 0; i < N; i++) X[t * N + i] = tu_gauss(&r) + (i ? 0.8 * X[t * N + i - 1] : 0.0);
    for (int t = 0; t < T; t++)
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) H[a * N + b] += X[t * N + a] * X[t * N + b] / T;
    for (int j = 0; j < ROWS; j++) s[j] = 0.5 + tu_urand(&r);
    unsigned char removed[N] = {0};
    int keep[N], nk = 0;
    removed[2] = removed[3] = removed[7] = removed[11] = 1;
    for (int i = 0; i < N; i++)
        if (!removed[i]) keep[nk++] = i;
    sqz_err err;
    double with = NAN, plain = NAN;
    double damp = 1e-9; /* next to nothing: the exact least-squares solution */
    CHECK(sqz_prune_removal_cost(W, ROWS, N, H, s, removed, damp, 0.0, &with, &plain, &err) == 0, "%s", err.msg);
    float Wk[ROWS * N];
    CHECK(sqz_prune_columns(W, ROWS, N, H, keep, nk, damp, 0.0, 1, Wk, &err) == 0, "%s", err.msg);
    double rec = 0.0, rec_plain = 0.0, worst_ne = 0.0, scale_ne = 0.0;
    for (int j = 0; j < ROWS; j++) {
        double d[N], dp[N];
        for (int i = 0; i < N; i++) d[i] = dp[i] = removed[i] ? -(double)W[j * N + i] : 0.0;
        for (int a = 0; a < nk; a++) d[keep[a]] = (double)Wk[j * nk + a] - W[j * N + keep[a]];
        double q = 0.0, qp = 0.0;
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) q += d[a] * H[a * N + b] * d[b], qp += dp[a] * H[a * N + b] * dp[b];
        rec += s[j] * q;
        rec_plain += s[j] * qp;
        for (int a = 0; a < nk; a++) { /* normal equations: (H δ)_S = 0 for δ = d */
            double g = 0.0;
            for (int b = 0; b < N; b++) g += H[keep[a] * N + b] * d[b];
            worst_ne = fabs(g) > worst_ne ? fabs(g) : worst_ne;
            scale_ne += fabs(H[keep[a] * N + keep[a]] * W[j * N + keep[a]]);
        }
    }
    CHECK(fabs(with - rec) <= 1e-4 * rec, "compensated cost %.9g, recomputed %.9g", with, rec);
    CHECK(fabs(plain - rec_plain) <= 1e-9 * rec_plain, "plain cost %.9g, recomputed %.9g", plain, rec_plain);
    CHECK(with < 0.9 * plain, "compensation lowers the cost: %.6g vs %.6g", with, plain);
    CHECK(worst_ne < 1e-4 * scale_ne / (ROWS * nk), "normal equations: residual %.3g", worst_ne);
    /* shrink 1: no compensation at all */
    double w1 = NAN;
    CHECK(sqz_prune_removal_cost(W, ROWS, N, H, s, removed, 0.01, 1.0, &w1, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(w1 - plain) <= 1e-12 * plain, "shrink 1 is plain removal: %.9g vs %.9g", w1, plain);
}

/* logits of m on ids (n tokens) */
static float *logits_of(const sqz_model *m, const int32_t *ids, int n) {
    float *lg = malloc((size_t)n * (size_t)m->cfg.n_vocab * sizeof(float));
    sqz_err err;
    if (lg && sqz_forward(m, NULL, ids, n, 0, lg, &err)) {
        CHECK(0, "forward: %s", err.msg);
        free(lg);
        return NULL;
    }
    return lg;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double w = 0.0;
    for (size_t i = 0; i < n; i++) w = fabs((double)a[i] - b[i]) > w ? fabs((double)a[i] - b[i]) : w;
    return w;
}

static void test_model(void) {
    char *dir = tu_shared("models/stories260K"), *ids_path = tu_shared("models/stories260K/reference_greedy_tokens.json");
    char *out = tu_tmp("test_prune.gguf"), *hf = tu_tmp("test_prune_hf");
    sqz_model m;
    sqz_err err;
    int rc = sqz_model_load(&m, dir, 0, &err);
    CHECK(rc == 0, "load: %s", err.msg);
    cJSON *j = rc == 0 ? tu_read_json(ids_path) : NULL;
    if (!j) goto out;
    int64_t n_ids = 0;
    int32_t *ids = tu_json_ids(j, &n_ids);
    enum { L = 48 };
    int nl = m.cfg.n_layer, d = m.cfg.head_dim, dim = m.cfg.dim;
    sqz_layer_keep *keep = calloc((size_t)nl, sizeof *keep);
    for (int l = 0; l < nl; l++) CHECK(sqz_layer_keep_all(&m, l, &keep[l], &err) == 0, "%s", err.msg);
    /* layer 1: kv heads 1 and 3 with both their query heads (2, 3, 6, 7); layer 3: every kv
     * head with its second query head (1, 3, 5, 7); FFN: every third channel goes in
     * layers 0 and 4 */
    int h1[4] = {2, 3, 6, 7}, kv1[2] = {1, 3}, h3[4] = {1, 3, 5, 7};
    keep[1].n_head = 4, keep[1].n_head_kv = 2;
    memcpy(keep[1].head, h1, sizeof h1), memcpy(keep[1].head_kv, kv1, sizeof kv1);
    keep[3].n_head = 4;
    memcpy(keep[3].head, h3, sizeof h3);
    for (int l = 0; l < nl; l += 4) {
        int k = 0;
        for (int i = 0; i < m.cfg.layer_n_ff[l]; i++)
            if (i % 3 != 1) keep[l].ff[k++] = i;
        keep[l].n_ff = k;
    }
    rc = sqz_prune_write(&m, NULL, keep, NULL, 0, 0, 0.01, 0.75, 0, out, &err);
    CHECK(rc == 0, "prune write: %s", err.msg);
    rc = rc || sqz_prune_write_hf(&m, NULL, keep, NULL, 0, 0, 0.01, 0.75, 0, hf, &err);
    CHECK(rc == 0, "prune write (hf): %s", err.msg);
    sqz_model pm, hm;
    int have_pm = rc == 0 && sqz_model_load(&pm, out, 0, &err) == 0;
    CHECK(have_pm, "load the pruned file: %s", err.msg);
    int have_hm = rc == 0 && sqz_model_load(&hm, hf, 0, &err) == 0;
    CHECK(have_hm, "load the Hugging Face export: %s", err.msg);
    if (have_pm) {
        CHECK(pm.cfg.layer_n_head[1] == 4 && pm.cfg.layer_n_head_kv[1] == 2 && pm.cfg.layer_n_head[3] == 4 &&
                  pm.cfg.layer_n_head_kv[3] == 4 && pm.cfg.layer_n_ff[0] == keep[0].n_ff && pm.cfg.layer_n_ff[2] == 172,
              "pruned shapes: layer 1 %d/%d, layer 3 %d/%d, ffn %d", pm.cfg.layer_n_head[1], pm.cfg.layer_n_head_kv[1],
              pm.cfg.layer_n_head[3], pm.cfg.layer_n_head_kv[3], pm.cfg.layer_n_ff[0]);
    }
    /* the reference: the original model with the removed columns zeroed */
    float *wo[5] = {0}, *wd[5] = {0};
    sqz_tensor to[5], td[5];
    for (int l = 0; l < nl && l < 5; l++) {
        const sqz_layer *Ly = &m.layers[l];
        int64_t no = Ly->wo->ne[0], nd = Ly->w_down->ne[0];
        wo[l] = malloc((size_t)(dim * no) * sizeof(float));
        wd[l] = malloc((size_t)(dim * nd) * sizeof(float));
        CHECK(sqz_tensor_rows_f32(Ly->wo, 0, dim, wo[l], &err) == 0, "%s", err.msg);
        CHECK(sqz_tensor_rows_f32(Ly->w_down, 0, dim, wd[l], &err) == 0, "%s", err.msg);
        for (int64_t c = 0; c < no; c++) {
            int kept = 0;
            for (int i = 0; i < keep[l].n_head; i++) kept |= keep[l].head[i] == c / d;
            if (!kept)
                for (int r = 0; r < dim; r++) wo[l][r * no + c] = 0.0f;
        }
        for (int64_t c = 0; c < nd; c++) {
            int kept = 0;
            for (int i = 0; i < keep[l].n_ff; i++) kept |= keep[l].ff[i] == c;
            if (!kept)
                for (int r = 0; r < dim; r++) wd[l][r * nd + c] = 0.0f;
        }
        to[l] = *Ly->wo, td[l] = *Ly->w_down;
        to[l].type = td[l].type = SQZ_TYPE_F32;
        to[l].data = wo[l], td[l].data = wd[l];
        to[l].nbytes = (size_t)(dim * no) * sizeof(float), td[l].nbytes = (size_t)(dim * nd) * sizeof(float);
        m.layers[l].wo = &to[l];
        m.layers[l].w_down = &td[l];
    }
    float *ref = logits_of(&m, ids, L), *got = have_pm ? logits_of(&pm, ids, L) : NULL,
          *goth = have_hm ? logits_of(&hm, ids, L) : NULL;
    size_t nlog = (size_t)L * (size_t)m.cfg.n_vocab;
    if (ref && got) {
        double dm = max_diff(ref, got, nlog);
        CHECK(dm < 1e-4, "pruned file vs zeroed columns: max |logit diff| %.3g", dm);
        printf("test_prune: pruned file vs original with zeroed columns: max |logit diff| %.3g\n", dm);
    }
    if (got && goth) {
        double dm = max_diff(got, goth, nlog);
        CHECK(dm < 1e-4, "Hugging Face export vs GGUF: max |logit diff| %.3g", dm);
        printf("test_prune: Hugging Face export vs GGUF: max |logit diff| %.3g\n", dm);
    }
    /* and zeroing matters: the unpruned model differs */
    float *full = NULL;
    if (ref) {
        sqz_model m2;
        if (sqz_model_load(&m2, dir, 0, &err) == 0) {
            full = logits_of(&m2, ids, L);
            if (full) CHECK(max_diff(ref, full, nlog) > 1e-2, "the pruning changed nothing");
            sqz_model_free(&m2);
        }
    }
    free(ref); free(got); free(goth); free(full);
    for (int l = 0; l < 5; l++) free(wo[l]), free(wd[l]);
    if (have_pm) sqz_model_free(&pm);
    if (have_hm) sqz_model_free(&hm);
    for (int l = 0; l < nl; l++) sqz_layer_keep_free(&keep[l]);
    free(keep);
    free(ids);
    cJSON_Delete(j);
out:
    if (rc == 0 || j) sqz_model_free(&m);
    free(dir); free(ids_path); free(out); free(hf);
}

int main(void) {
    test_algebra();
    test_model();
    return tu_done("test_prune");
}

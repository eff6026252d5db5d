/* Structured pruning with least-squares compensation: see include/sqz/prune.h. */
#include "sqz/prune.h"

#include <cblas.h>
#include <lapack.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sqz_layer_keep_free(sqz_layer_keep *k) {
    free(k->head); free(k->head_kv); free(k->ff);
    memset(k, 0, sizeof *k);
}

static int *iota_ints(int n) {
    int *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int i = 0; v && i < n; i++) v[i] = i;
    return v;
}

int sqz_layer_keep_all(const sqz_model *m, int l, sqz_layer_keep *k, sqz_err *err) {
    memset(k, 0, sizeof *k);
    k->n_head = m->cfg.layer_n_head[l];
    k->n_head_kv = m->cfg.layer_n_head_kv[l];
    k->n_ff = m->cfg.layer_n_ff[l];
    k->head = iota_ints(k->n_head);
    k->head_kv = iota_ints(k->n_head_kv);
    k->ff = iota_ints(k->n_ff);
    if (!k->head || !k->head_kv || !k->ff) {
        sqz_layer_keep_free(k);
        return sqz_fail(err, "prune: out of memory");
    }
    return SQZ_OK;
}

void sqz_layer_widths_free(sqz_layer_widths *w) {
    for (int i = 0; w->attn && i < w->n_attn; i++) free(w->attn[i].keep), free(w->attn[i].keep_kv);
    for (int i = 0; w->ffn && i < w->n_ffn; i++) free(w->ffn[i].keep);
    free(w->attn); free(w->ffn);
    memset(w, 0, sizeof *w);
}

static int *copy_ints(const int *src, int n) {
    int *d = malloc((size_t)(n + 1) * sizeof(int));
    if (d && n > 0) memcpy(d, src, (size_t)n * sizeof(int));
    return d;
}

int sqz_layer_keep_set(sqz_layer_keep *k, const sqz_width_option *attn, const sqz_width_option *ffn, sqz_err *err) {
    memset(k, 0, sizeof *k);
    k->n_head = attn->n_keep;
    k->n_head_kv = attn->n_keep_kv;
    k->n_ff = ffn->n_keep;
    k->head = copy_ints(attn->keep, attn->n_keep);
    k->head_kv = copy_ints(attn->keep_kv, attn->n_keep_kv);
    k->ff = copy_ints(ffn->keep, ffn->n_keep);
    if (!k->head || !k->head_kv || !k->ff) return sqz_fail(err, "prune: out of memory");
    return SQZ_OK;
}

/* ---------------------------------------------------------------- the algebra */

static double damp_of(const double *H, int64_t n, double percdamp) {
    double tr = 0.0;
    for (int64_t i = 0; i < n; i++) tr += H[i * n + i];
    double d = (percdamp > 0 ? percdamp : 0.01) * tr / (double)n;
    return d > 0 ? d : 1e-8;
}

/* Ct (nr × nk, row-major) = ((H_SS + λI)⁻¹ H_SR)ᵀ: the compensation of the kept columns
 * S for the removed R, W_S += W_R Ct. */
static int comp_matrix(const double *H, int64_t n, const int *S, int nk, const int *R, int nr, double lambda,
                       double shrink, double *Ct, sqz_err *err) {
    double off = 1.0 - shrink; /* H's off-diagonal entries shrunk toward diag(H), as GPTQ's */
    double *A = malloc((size_t)nk * (size_t)nk * sizeof(double));
    if (!A) return sqz_fail(err, "prune: out of memory for a %d × %d Gram", nk, nk);
    for (int a = 0; a < nk; a++) {
        for (int b = 0; b < nk; b++) A[(int64_t)a * nk + b] = off * H[(int64_t)S[a] * n + S[b]];
        A[(int64_t)a * nk + a] = H[(int64_t)S[a] * n + S[a]] + lambda;
    }
    /* column-major B (nk × nr) is row-major Ct */
    for (int r = 0; r < nr; r++)
        for (int a = 0; a < nk; a++) Ct[(int64_t)r * nk + a] = off * H[(int64_t)S[a] * n + R[r]];
    char lo = 'L';
    lapack_int N = nk, NR = nr, info = 0;
    LAPACK_dposv(&lo, &N, &NR, A, &N, Ct, &N, &info);
    free(A);
    if (info != 0) return sqz_fail(err, "prune: the kept inputs' Gram is not positive definite (dposv info %d)", (int)info);
    return SQZ_OK;
}

/* dS (rows × nk) = W_R Ct: the change of the kept columns S that compensates removing R
 * (Ct from comp_matrix, then one DGEMM). */
static int compensation(const float *W, int64_t rows, int64_t n, const double *H, const int *S, int nk, const int *R,
                        int nr, double percdamp, double shrink, double *dS, sqz_err *err) {
    double *Ct = malloc((size_t)nr * (size_t)nk * sizeof(double));
    double *WR = malloc((size_t)rows * (size_t)nr * sizeof(double));
    int rc = SQZ_ERR;
    if (!Ct || !WR) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    if (comp_matrix(H, n, S, nk, R, nr, damp_of(H, n, percdamp), shrink, Ct, err)) goto done;
    for (int64_t j = 0; j < rows; j++)
        for (int r = 0; r < nr; r++) WR[j * nr + r] = W[j * n + R[r]];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, nk, nr, 1.0, WR, nr, Ct, nk, 0.0, dS, nk);
    rc = SQZ_OK;
done:
    free(Ct); free(WR);
    return rc;
}

/* Σ_j s_j d_jᵀ H d_j over the rows of D (rows × n). */
static double quad_sum(const double *D, int64_t rows, int64_t n, const double *H, const double *s) {
    double *Y = malloc((size_t)(rows * n) * sizeof(double));
    if (!Y) return NAN;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)n, (int)n, 1.0, D, (int)n, H, (int)n, 0.0,
                Y, (int)n);
    double sum = 0.0;
    for (int64_t j = 0; j < rows; j++) {
        double q = 0.0;
        for (int64_t i = 0; i < n; i++) q += D[j * n + i] * Y[j * n + i];
        sum += (s ? s[j] : 1.0) * q;
    }
    free(Y);
    return sum;
}

/* Splits 0..n-1 by removed[] into S (kept) and R; returns nk, or -1 when out of memory. */
static int split(const unsigned char *removed, int64_t n, int **S, int **R, int *nr) {
    *S = malloc((size_t)(n + 1) * sizeof(int));
    *R = malloc((size_t)(n + 1) * sizeof(int));
    if (!*S || !*R) return -1;
    int nk = 0;
    *nr = 0;
    for (int64_t i = 0; i < n; i++) {
        if (removed[i]) (*R)[(*nr)++] = (int)i;
        else (*S)[nk++] = (int)i;
    }
    return nk;
}

int sqz_prune_removal_cost(const float *W, int64_t rows, int64_t n, const double *H, const double *s,
                           const unsigned char *removed, double percdamp, double shrink, double *with, double *plain,
                           sqz_err *err) {
    int *S = NULL, *R = NULL, nr = 0;
    double *D = NULL, *dS = NULL;
    int rc = SQZ_ERR;
    int nk = split(removed, n, &S, &R, &nr);
    D = malloc((size_t)(rows * n) * sizeof(double));
    if (nk < 0 || !D) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    if (nr == 0) { /* nothing removed */
        if (with) *with = 0.0;
        if (plain) *plain = 0.0;
        rc = SQZ_OK;
        goto done;
    }
    memset(D, 0, (size_t)(rows * n) * sizeof(double));
    for (int64_t j = 0; j < rows; j++)
        for (int r = 0; r < nr; r++) D[j * n + R[r]] = -(double)W[j * n + R[r]];
    if (plain) *plain = quad_sum(D, rows, n, H, s);
    if (with) {
        if (nk > 0) {
            if (!(dS = malloc((size_t)rows * (size_t)nk * sizeof(double)))) {
                sqz_fail(err, "prune: out of memory");
                goto done;
            }
            if (compensation(W, rows, n, H, S, nk, R, nr, percdamp, shrink, dS, err)) goto done;
            for (int64_t j = 0; j < rows; j++) /* δw_S = W_R Ct (the compensation) */
                for (int a = 0; a < nk; a++) D[j * n + S[a]] = dS[j * nk + a];
        }
        *with = quad_sum(D, rows, n, H, s);
    }
    rc = (with && !isfinite(*with)) || (plain && !isfinite(*plain)) ? sqz_fail(err, "prune: out of memory") : SQZ_OK;
done:
    free(S); free(R); free(D); free(dS);
    return rc;
}

int sqz_prune_columns(const float *W, int64_t rows, int64_t n, const double *H, const int *keep, int n_keep,
                      double percdamp, double shrink, int compensate, float *W_out, sqz_err *err) {
    unsigned char *removed = malloc((size_t)n + 1);
    int *S = NULL, *R = NULL, nr = 0;
    double *dS = NULL;
    int rc = SQZ_ERR;
    if (!removed) return sqz_fail(err, "prune: out of memory");
    memset(removed, 1, (size_t)n);
    for (int a = 0; a < n_keep; a++) {
        if (keep[a] < 0 || keep[a] >= n || (a > 0 && keep[a] <= keep[a - 1])) {
            sqz_fail(err, "prune: kept column %d of %lld is out of range or out of order", keep[a], (long long)n);
            goto done;
        }
        removed[keep[a]] = 0;
    }
    int nk = split(removed, n, &S, &R, &nr);
    if (nk < 0) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    for (int64_t j = 0; j < rows; j++)
        for (int a = 0; a < nk; a++) W_out[j * nk + a] = W[j * n + S[a]];
    if (compensate && nr > 0 && nk > 0) {
        if (!(dS = malloc((size_t)rows * (size_t)nk * sizeof(double)))) {
            sqz_fail(err, "prune: out of memory");
            goto done;
        }
        if (compensation(W, rows, n, H, S, nk, R, nr, percdamp, shrink, dS, err)) goto done;
        for (int64_t i = 0; i < rows * nk; i++) W_out[i] = (float)((double)W_out[i] + dS[i]);
    }
    rc = SQZ_OK;
done:
    free(removed); free(S); free(R); free(dS);
    return rc;
}

/* ---------------------------------------------------------------- width options */

/* Indices sorted by decreasing cost (the most important first); ties by index. */
static int cmp_cost_desc(const void *a, const void *b, void *vctx) {
    const double *c = vctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (c[i] != c[j]) return c[i] > c[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static int *by_cost(const double *cost, int n) {
    int *o = iota_ints(n);
    if (o) qsort_r(o, (size_t)n, sizeof(int), cmp_cost_desc, (void *)cost);
    return o;
}

/* Removal cost (with, plain) of the columns whose removed[] is set, scaled to ΔL. */
static int option_cost(const float *W, int64_t rows, int64_t n, const double *H, const double *s,
                       const unsigned char *removed, double percdamp, double shrink, double scale,
                       sqz_width_option *o, sqz_err *err) {
    double with = 0.0, plain = 0.0;
    if (sqz_prune_removal_cost(W, rows, n, H, s, removed, percdamp, shrink, &with, &plain, err)) return SQZ_ERR;
    o->dl = scale * with;
    o->dl_plain = scale * plain;
    return SQZ_OK;
}

static int attn_options(const sqz_model *m, int l, const double *H, const double *s, double scale, double percdamp,
                        double shrink, int magnitude, sqz_layer_widths *out, sqz_err *err) {
    const sqz_layer *L = &m->layers[l];
    int nh = m->cfg.layer_n_head[l], nkv = m->cfg.layer_n_head_kv[l], d = m->cfg.head_dim;
    int64_t rows = m->cfg.dim, n = (int64_t)nh * d;
    if (nh == 0) { /* no block: one option, nothing to remove */
        if (!(out->attn = calloc(1, sizeof *out->attn))) return sqz_fail(err, "prune: out of memory");
        out->n_attn = 1;
        return SQZ_OK;
    }
    int G = nh / nkv, rc = SQZ_ERR;
    float *W = malloc((size_t)(rows * n) * sizeof(float));
    unsigned char *removed = malloc((size_t)n);
    double *hc = calloc((size_t)nh, sizeof(double)), *gc = calloc((size_t)nkv, sizeof(double));
    int *horder = NULL, *gorder = NULL;
    out->attn = calloc((size_t)(nkv * G + 1), sizeof *out->attn);
    if (!W || !removed || !hc || !gc || !out->attn) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    if (sqz_tensor_rows_f32(L->wo, 0, rows, W, err)) goto done;
    sqz_width_option tmp;
    for (int h = 0; h < nh; h++) { /* each head alone */
        memset(removed, 0, (size_t)n);
        memset(removed + (int64_t)h * d, 1, (size_t)d);
        if (option_cost(W, rows, n, H, s, removed, percdamp, shrink, scale, &tmp, err)) goto done;
        hc[h] = magnitude ? tmp.dl_plain : tmp.dl;
    }
    for (int g = 0; g < nkv; g++) { /* each kv group with all its query heads */
        memset(removed, 0, (size_t)n);
        memset(removed + (int64_t)g * G * d, 1, (size_t)G * d);
        if (option_cost(W, rows, n, H, s, removed, percdamp, shrink, scale, &tmp, err)) goto done;
        gc[g] = magnitude ? tmp.dl_plain : tmp.dl;
    }
    if (!(horder = by_cost(hc, nh)) || !(gorder = by_cost(gc, nkv))) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    for (int a = nkv; a >= 0; a--)
        for (int b = G; b >= (a ? 1 : G); b--) { /* a = 0: one option, the block removed */
            sqz_width_option *o = &out->attn[out->n_attn];
            o->n_keep = a * b;
            o->n_keep_kv = a;
            o->keep = malloc((size_t)(a * b + 1) * sizeof(int));
            o->keep_kv = malloc((size_t)(a + 1) * sizeof(int));
            if (!o->keep || !o->keep_kv) {
                sqz_fail(err, "prune: out of memory");
                goto done;
            }
            out->n_attn++;
            for (int i = 0; i < a; i++) o->keep_kv[i] = gorder[i];
            qsort(o->keep_kv, (size_t)a, sizeof(int), cmp_int);
            int nk = 0;
            for (int i = 0; i < a; i++) { /* the b most important heads of each kept group */
                int g = o->keep_kv[i], got = 0;
                for (int r = 0; r < nh && got < b; r++)
                    if (horder[r] / G == g) o->keep[nk++] = horder[r], got++;
            }
            qsort(o->keep, (size_t)nk, sizeof(int), cmp_int);
            memset(removed, 1, (size_t)n);
            for (int i = 0; i < nk; i++) memset(removed + (int64_t)o->keep[i] * d, 0, (size_t)d);
            if (option_cost(W, rows, n, H, s, removed, percdamp, shrink, scale, o, err)) goto done;
        }
    rc = SQZ_OK;
done:
    free(W); free(removed); free(hc); free(gc); free(horder); free(gorder);
    return rc;
}

/* The FFN width after k: k - step rounded down to a multiple of 32 (ffn_down's rows then
 * fit 32-blocks even when n_ff does not: 172 -> 128, 96, ...), down to 0. */
static int narrower_ffn(int k, int nff, int step) {
    int next = k - step;
    if (nff >= 64) next = next / 32 * 32;
    return next > 0 ? next : 0;
}

static int ffn_options(const sqz_model *m, int l, const double *H, const double *s, double scale, double percdamp,
                       double shrink, int magnitude, int step, sqz_layer_widths *out, sqz_err *err) {
    const sqz_layer *L = &m->layers[l];
    int nff = m->cfg.layer_n_ff[l];
    int64_t rows = m->cfg.dim, n = nff;
    if (nff == 0) {
        if (!(out->ffn = calloc(1, sizeof *out->ffn))) return sqz_fail(err, "prune: out of memory");
        out->n_ffn = 1;
        return SQZ_OK;
    }
    if (step < 1) step = 1;
    int n_opt = (nff + step - 1) / step + 1, rc = SQZ_ERR;
    float *W = malloc((size_t)(rows * n) * sizeof(float));
    unsigned char *removed = malloc((size_t)n);
    double *Hi = malloc((size_t)(n * n) * sizeof(double)), *cc = calloc((size_t)n, sizeof(double));
    int *order = NULL;
    out->ffn = calloc((size_t)n_opt, sizeof *out->ffn);
    if (!W || !removed || !Hi || !cc || !out->ffn) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    if (sqz_tensor_rows_f32(L->w_down, 0, rows, W, err)) goto done;
    /* single-channel cost, OBS: Σ_j s_j w_ji² / [(H + λI)⁻¹]_ii */
    memcpy(Hi, H, (size_t)(n * n) * sizeof(double));
    double lambda = damp_of(H, n, percdamp);
    for (int64_t i = 0; i < n; i++) Hi[i * n + i] += lambda;
    char lo = 'L';
    lapack_int N = (lapack_int)n, info = 0;
    LAPACK_dpotrf(&lo, &N, Hi, &N, &info);
    if (info == 0) LAPACK_dpotri(&lo, &N, Hi, &N, &info);
    if (info != 0) {
        sqz_fail(err, "prune: layer %d: ffn_down's input Gram is not positive definite (info %d)", l, (int)info);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        double q = 0.0;
        for (int64_t j = 0; j < rows; j++) q += (s ? s[j] : 1.0) * (double)W[j * n + i] * W[j * n + i];
        cc[i] = scale * q * (magnitude ? H[i * n + i] : 1.0 / Hi[i * n + i]);
    }
    if (!(order = by_cost(cc, nff))) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    for (int k = nff;; k = narrower_ffn(k, nff, step)) {
        sqz_width_option *o = &out->ffn[out->n_ffn];
        o->n_keep = k;
        if (!(o->keep = malloc((size_t)(k + 1) * sizeof(int)))) {
            sqz_fail(err, "prune: out of memory");
            goto done;
        }
        out->n_ffn++;
        memcpy(o->keep, order, (size_t)k * sizeof(int));
        qsort(o->keep, (size_t)k, sizeof(int), cmp_int);
        memset(removed, 1, (size_t)n);
        for (int i = 0; i < k; i++) removed[o->keep[i]] = 0;
        if (option_cost(W, rows, n, H, s, removed, percdamp, shrink, scale, o, err)) goto done;
        if (k == 0) break;
    }
    rc = SQZ_OK;
done:
    free(W); free(removed); free(Hi); free(cc); free(order);
    return rc;
}

int sqz_prune_layer_options(const sqz_model *m, int l, const double *H_o, const double *s_o, const double *H_down,
                            const double *s_down, double N, double percdamp, double shrink, int magnitude,
                            int ffn_step, sqz_layer_widths *out, sqz_err *err) {
    memset(out, 0, sizeof *out);
    double scale = 0.5 / (N > 0 ? N : 1.0);
    if (magnitude) s_o = s_down = NULL; /* layer-local: s_j = 1 */
    if (attn_options(m, l, H_o, s_o, scale, percdamp, shrink, magnitude, out, err) ||
        ffn_options(m, l, H_down, s_down, scale, percdamp, shrink, magnitude, ffn_step, out, err)) {
        sqz_fail_prefix(err, "layer %d: ", l);
        sqz_layer_widths_free(out);
        return SQZ_ERR;
    }
    return SQZ_OK;
}

/* ---------------------------------------------------------------- writing the pruned model */

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "sqz/calib.h"
#include "sqz/gguf_write.h"
#include "sqz/quantize_model.h"

/* The output: a GGUF file, or a Hugging Face folder (model.safetensors + config.json). */
typedef struct {
    const sqz_model *m;
    const sqz_layer_keep *keep;
    sqz_gguf_writer w;
    double percdamp, shrink;
    int compensate;
    int hf;          /* 1: safetensors */
    sqz_out st;
    cJSON *header;   /* the safetensors header being built */
    uint64_t st_off; /* its data offset so far */
} prune_writer;

static int sink_write(prune_writer *p, const void *data, size_t n, sqz_err *err) {
    return p->hf ? sqz_out_write(&p->st, data, n, err) : sqz_gguf_write_data(&p->w, data, n, err);
}

/* The Hugging Face name of a GGUF tensor name. */
static void hf_name(const char *g, char *out, size_t cap) {
    static const char *const map[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"}};
    static const char *const norms[][2] = {{"attn_q_norm", "self_attn.q_norm"}, {"attn_k_norm", "self_attn.k_norm"}};
    int l;
    char what[64], kind[16];
    if (sscanf(g, "blk.%d.%63[a-z_].%15[a-z]", &l, what, kind) == 3) {
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(what, map[i][0])) {
                snprintf(out, cap, "model.layers.%d.%s.%s", l, map[i][1], kind);
                return;
            }
        for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++)
            if (!strcmp(what, norms[i][0])) {
                snprintf(out, cap, "model.layers.%d.%s.%s", l, norms[i][1], kind);
                return;
            }
    }
    snprintf(out, cap, "%s", !strcmp(g, "token_embd.weight") ? "model.embed_tokens.weight"
                             : !strcmp(g, "output_norm.weight") ? "model.norm.weight"
                             : !strcmp(g, "output.weight") ? "lm_head.weight" : g);
}

/* Rows of t as F32: blocks of `block` rows, the kept block indices idx[n]; perm_d > 0
 * permutes each block (one head of perm_d rows) from rotate-half to adjacent pairs (a
 * Hugging Face q/k into GGUF, as sqz quantize does), perm_d < 0 back (GGUF into a
 * Hugging Face folder). */
static int copy_row_blocks(prune_writer *p, const sqz_tensor *t, int64_t block, const int *idx, int n, int perm_d,
                           sqz_err *err) {
    int64_t cols = t->ne[0];
    float *row = malloc((size_t)cols * sizeof(float));
    if (!row) return sqz_fail(err, "prune: out of memory");
    for (int i = 0; i < n; i++)
        for (int64_t r = 0; r < block; r++) {
            int64_t src = r;
            if (perm_d > 0) { /* rotate-half rows to adjacent pairs */
                int64_t half = perm_d / 2, k = r / 2, j = r % 2;
                src = j * half + k;
            } else if (perm_d < 0) { /* adjacent pairs to rotate-half: row j·d/2 + i is old 2i + j */
                int64_t half = -perm_d / 2, j = r / half, k = r % half;
                src = 2 * k + j;
            }
            if (sqz_tensor_rows_f32(t, (int64_t)idx[i] * block + src, 1, row, err) ||
                sink_write(p, row, (size_t)cols * sizeof(float), err)) {
                free(row);
                return SQZ_ERR;
            }
        }
    free(row);
    return SQZ_OK;
}

/* The row-permutation of copy_row_blocks on one vector (a q/k/v bias): elements in blocks
 * of `block`, the kept blocks idx[n], perm_d as there. */
static int copy_vec_blocks(prune_writer *p, const sqz_tensor *t, int64_t block, const int *idx, int n, int perm_d,
                           sqz_err *err) {
    int64_t len = t->ne[0];
    float *v = malloc((size_t)len * sizeof(float)), *o = malloc((size_t)(n > 0 ? n : 1) * (size_t)block * sizeof(float));
    int rc = SQZ_ERR;
    if (!v || !o) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    if (sqz_tensor_rows_f32(t, 0, 1, v, err)) goto done;
    for (int i = 0; i < n; i++)
        for (int64_t r = 0; r < block; r++) {
            int64_t src = r;
            if (perm_d > 0) src = (r % 2) * (perm_d / 2) + r / 2;
            else if (perm_d < 0) src = 2 * (r % (-perm_d / 2)) + r / (-perm_d / 2);
            o[(int64_t)i * block + r] = v[(int64_t)idx[i] * block + src];
        }
    rc = sink_write(p, o, (size_t)n * (size_t)block * sizeof(float), err);
done:
    free(v);
    free(o);
    return rc;
}

/* A whole tensor as F32. */
static int copy_whole(prune_writer *p, const sqz_tensor *t, sqz_err *err) {
    int64_t rows = t->n_dims > 1 ? sqz_tensor_nelements(t) / t->ne[0] : 1;
    int *idx = malloc((size_t)rows * sizeof(int));
    if (!idx) return sqz_fail(err, "prune: out of memory");
    for (int64_t r = 0; r < rows; r++) idx[r] = (int)r;
    int rc = copy_row_blocks(p, t, 1, idx, (int)rows, 0, err);
    free(idx);
    return rc;
}

/* The consumer matrix W (rows × n) without the removed columns, as F32. */
static int write_consumer(prune_writer *p, const sqz_tensor *t, const double *H, const int *keep, int n_keep,
                          sqz_err *err) {
    int64_t n = t->ne[0], rows = t->ne[1];
    float *W = malloc((size_t)(rows * n) * sizeof(float)), *Wk = malloc((size_t)(rows * (n_keep + 1)) * sizeof(float));
    int rc = SQZ_ERR;
    if (!W || !Wk) {
        sqz_fail(err, "prune: out of memory for %s", t->name);
        goto done;
    }
    if (sqz_tensor_rows_f32(t, 0, rows, W, err) ||
        sqz_prune_columns(W, rows, n, H, keep, n_keep, p->percdamp, p->shrink, p->compensate && H, Wk, err) ||
        sink_write(p, Wk, (size_t)(rows * n_keep) * sizeof(float), err))
        goto done;
    rc = SQZ_OK;
done:
    free(W); free(Wk);
    return rc;
}

static int write_layer(prune_writer *p, int l, const double *H_o, const double *H_down, sqz_err *err) {
    const sqz_model *m = p->m;
    const sqz_layer *L = &m->layers[l];
    const sqz_layer_keep *k = &p->keep[l];
    int d = m->cfg.head_dim;
    /* q/k rows (and their biases) between the two RoPE layouts: a Hugging Face folder is
     * rotate-half, a GGUF file llama/deci, so adjacent pairs */
    int src_half = m->cfg.rope_mode == SQZ_ROPE_HALF, out_half = p->hf;
    int perm = src_half == out_half ? 0 : out_half ? -d : d;
    if (k->n_head > 0) {
        int *cols = malloc((size_t)k->n_head * (size_t)d * sizeof(int));
        if (!cols) return sqz_fail(err, "prune: out of memory");
        for (int i = 0; i < k->n_head; i++)
            for (int j = 0; j < d; j++) cols[i * d + j] = k->head[i] * d + j;
        int rc = copy_whole(p, L->attn_norm, err) || copy_row_blocks(p, L->wq, d, k->head, k->n_head, perm, err) ||
                 copy_row_blocks(p, L->wk, d, k->head_kv, k->n_head_kv, perm, err) ||
                 copy_row_blocks(p, L->wv, d, k->head_kv, k->n_head_kv, 0, err) ||
                 write_consumer(p, L->wo, H_o, cols, k->n_head * d, err) ||
                 (L->bq && (copy_vec_blocks(p, L->bq, d, k->head, k->n_head, perm, err) ||
                            copy_vec_blocks(p, L->bk, d, k->head_kv, k->n_head_kv, perm, err) ||
                            copy_vec_blocks(p, L->bv, d, k->head_kv, k->n_head_kv, 0, err))) ||
                 (L->q_norm && (copy_whole(p, L->q_norm, err) || copy_whole(p, L->k_norm, err)));
        free(cols);
        if (rc) return SQZ_ERR;
    }
    if (k->n_ff > 0 &&
        (copy_whole(p, L->ffn_norm, err) || copy_row_blocks(p, L->w_gate, 1, k->ff, k->n_ff, 0, err) ||
         copy_row_blocks(p, L->w_up, 1, k->ff, k->n_ff, 0, err) ||
         write_consumer(p, L->w_down, H_down, k->ff, k->n_ff, err)))
        return SQZ_ERR;
    return SQZ_OK;
}

static int layer_grams_cb(void *vctx, int layer, sqz_layer_grams *g, int64_t n_tokens, sqz_err *err) {
    (void)n_tokens; /* H's scale does not matter: the dampening is relative */
    return write_layer(vctx, layer, g->g[SQZ_SITE_ATTN_O_IN], g->g[SQZ_SITE_FFN_DOWN_IN], err);
}

static int add(prune_writer *p, const char *name, const sqz_tensor *t, int type, int64_t ne0, int64_t ne1,
               sqz_err *err) {
    int64_t ne[2] = {ne0, ne1};
    int nd = t->n_dims > 1 ? 2 : 1;
    if (!p->hf) return sqz_gguf_add_tensor(&p->w, name, type, nd, ne, err);
    char hn[128];
    hf_name(name, hn, sizeof hn);
    cJSON *e = cJSON_CreateObject();
    double shape[2] = {(double)(nd == 2 ? ne1 : ne0), (double)ne0};
    uint64_t bytes = (uint64_t)ne0 * (uint64_t)(nd == 2 ? ne1 : 1) * sizeof(float);
    double off[2] = {(double)p->st_off, (double)(p->st_off + bytes)};
    if (!e || !cJSON_AddStringToObject(e, "dtype", "F32") ||
        !cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(shape, nd)) ||
        !cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(off, 2))) {
        cJSON_Delete(e);
        return sqz_fail(err, "prune: out of memory");
    }
    cJSON_AddItemToObject(p->header, hn, e);
    p->st_off += bytes;
    return SQZ_OK;
}

static int check_keep(const sqz_model *m, const sqz_layer_keep *keep, sqz_err *err) {
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const sqz_layer_keep *k = &keep[l];
        int nh = m->cfg.layer_n_head[l], nkv = m->cfg.layer_n_head_kv[l], nff = m->cfg.layer_n_ff[l];
        if (k->n_head < 0 || k->n_head > nh || k->n_head_kv < 0 || k->n_head_kv > nkv || k->n_ff < 0 || k->n_ff > nff)
            return sqz_fail(err, "prune: layer %d keeps %d/%d heads, %d/%d kv heads, %d/%d channels: out of range", l,
                            k->n_head, nh, k->n_head_kv, nkv, k->n_ff, nff);
        if ((k->n_head == 0) != (k->n_head_kv == 0) || (k->n_head_kv && k->n_head % k->n_head_kv))
            return sqz_fail(err, "prune: layer %d keeps %d query heads for %d kv heads: not a whole number per kv head "
                                 "(grouped-query attention)", l, k->n_head, k->n_head_kv);
        int G = nkv ? nh / nkv : 1, b = k->n_head_kv ? k->n_head / k->n_head_kv : 0;
        for (int i = 0; i < k->n_head; i++) /* query head i of the pruned layer reads kv head i / b */
            if (k->head[i] / G != k->head_kv[i / b] || (i && k->head[i] <= k->head[i - 1]))
                return sqz_fail(err, "prune: layer %d: kept query head %d does not belong to kept kv head %d in order",
                                l, k->head[i], k->head_kv[i / b]);
        for (int i = 0; i < k->n_ff; i++)
            if (k->ff[i] < 0 || k->ff[i] >= nff || (i && k->ff[i] <= k->ff[i - 1]))
                return sqz_fail(err, "prune: layer %d: kept channel %d out of range or order", l, k->ff[i]);
    }
    return SQZ_OK;
}

/* The safetensors file's header (u64 length + JSON padded to 8 bytes) into dir. */
static int st_begin(prune_writer *p, const char *dir, sqz_err *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return sqz_fail(err, "%s: cannot create the folder: %s", dir, strerror(errno));
    cJSON *meta = cJSON_CreateObject();
    if (!meta || !cJSON_AddStringToObject(meta, "format", "pt")) {
        cJSON_Delete(meta);
        return sqz_fail(err, "prune: out of memory");
    }
    cJSON_AddItemToObject(p->header, "__metadata__", meta);
    char *h = cJSON_PrintUnformatted(p->header), path[4200];
    if (!h) return sqz_fail(err, "prune: out of memory");
    size_t n = strlen(h), padded = (n + 7) / 8 * 8;
    char *buf = malloc(padded + 8);
    if (!buf) {
        free(h);
        return sqz_fail(err, "prune: out of memory");
    }
    uint64_t len = padded;
    for (int i = 0; i < 8; i++) buf[i] = (char)(len >> (8 * i) & 0xff);
    memcpy(buf + 8, h, n);
    memset(buf + 8 + n, ' ', padded - n);
    free(h);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = sqz_out_open(&p->st, path, err) || sqz_out_write(&p->st, buf, padded + 8, err);
    free(buf);
    return rc ? SQZ_ERR : SQZ_OK;
}

/* config.json of the pruned model: LlamaForCausalLM's keys plus the per-layer counts
 * (num_attention_heads_per_layer, num_key_value_heads_per_layer,
 * intermediate_size_per_layer) that sqz's loader reads. */
static int st_config(const sqz_model *m, const int *nh, const int *nkv, const int *nff, const char *dir, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    int maxh = 0, maxkv = 0, maxff = 0;
    for (int l = 0; l < c->n_layer; l++) {
        maxh = nh[l] > maxh ? nh[l] : maxh;
        maxkv = nkv[l] > maxkv ? nkv[l] : maxkv;
        maxff = nff[l] > maxff ? nff[l] : maxff;
    }
    cJSON *j = cJSON_CreateObject();
    const char *arch[1] = {c->arch == SQZ_ARCH_QWEN2 ? "Qwen2ForCausalLM"
                           : c->arch == SQZ_ARCH_QWEN3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"};
    cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddStringToObject(j, "model_type", sqz_arch_name(c->arch));
    cJSON_AddNumberToObject(j, "hidden_size", c->dim);
    cJSON_AddNumberToObject(j, "intermediate_size", maxff > 0 ? maxff : 1);
    cJSON_AddNumberToObject(j, "num_attention_heads", maxh > 0 ? maxh : 1);
    cJSON_AddNumberToObject(j, "num_key_value_heads", maxkv > 0 ? maxkv : 1);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layer);
    cJSON_AddNumberToObject(j, "vocab_size", c->n_vocab);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->norm_eps);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->n_ctx_train);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", m->output == m->tok_embd);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
    if (c->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    cJSON_AddItemToObject(j, "num_attention_heads_per_layer", cJSON_CreateIntArray(nh, c->n_layer));
    cJSON_AddItemToObject(j, "num_key_value_heads_per_layer", cJSON_CreateIntArray(nkv, c->n_layer));
    cJSON_AddItemToObject(j, "intermediate_size_per_layer", cJSON_CreateIntArray(nff, c->n_layer));
    char *txt = cJSON_Print(j), path[4200];
    cJSON_Delete(j);
    if (!txt) return sqz_fail(err, "prune: out of memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    sqz_out o;
    int rc = sqz_out_open(&o, path, err) || sqz_out_write(&o, txt, strlen(txt), err) || sqz_out_write(&o, "\n", 1, err) ||
             sqz_out_commit(&o, err);
    if (rc) sqz_out_abort(&o);
    free(txt);
    return rc ? SQZ_ERR : SQZ_OK;
}

static int prune_write(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                       int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *path,
                       int hf, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    if (check_keep(m, keep, err)) return SQZ_ERR;
    if (compensate && (!windows || nsamples < 1 || seqlen < 1))
        return sqz_fail(err, "prune: compensation needs calibration windows");
    prune_writer p = {m, keep, {0}, percdamp, shrink, compensate, hf, {0}, NULL, 0};
    sqz_gguf_writer_init(&p.w);
    int *nh = malloc((size_t)c->n_layer * 3 * sizeof(int)), rc = SQZ_ERR;
    if (hf) p.header = cJSON_CreateObject();
    if (!nh || (hf && !p.header)) {
        free(nh);
        cJSON_Delete(p.header);
        sqz_gguf_writer_free(&p.w);
        return sqz_fail(err, "prune: out of memory");
    }
    int *nkv = nh + c->n_layer, *nff = nkv + c->n_layer;
    for (int l = 0; l < c->n_layer; l++) nh[l] = keep[l].n_head, nkv[l] = keep[l].n_head_kv, nff[l] = keep[l].n_ff;
    if (!hf && sqz_model_write_gguf_meta_shapes(m, nh, nkv, nff, &p.w, 0 /* ALL_F32 */, err)) goto done;
    int tied = m->output == m->tok_embd;
    int64_t dim = c->dim, d = c->head_dim;
    char name[96];
    if (add(&p, "token_embd.weight", m->tok_embd, SQZ_TYPE_F32, dim, c->n_vocab, err)) goto done;
    for (int l = 0; l < c->n_layer; l++) {
        const sqz_layer *L = &m->layers[l];
        const sqz_layer_keep *k = &keep[l];
        if (k->n_head > 0) {
            struct { const char *n; const sqz_tensor *t; int type; int64_t ne0, ne1; } a[5] = {
                {"attn_norm", L->attn_norm, SQZ_TYPE_F32, dim, 1},
                {"attn_q", L->wq, SQZ_TYPE_F32, dim, k->n_head * d},
                {"attn_k", L->wk, SQZ_TYPE_F32, dim, k->n_head_kv * d},
                {"attn_v", L->wv, SQZ_TYPE_F32, dim, k->n_head_kv * d},
                {"attn_output", L->wo, SQZ_TYPE_F32, k->n_head * d, dim}};
            for (int i = 0; i < 5; i++) {
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, a[i].n);
                if (add(&p, name, a[i].t, a[i].type, a[i].ne0, a[i].ne1, err)) goto done;
            }
            /* vectors in write_layer's order: q/k/v biases (pruned with their rows), q/k norms */
            struct { const char *n; const sqz_tensor *t; int64_t ne0; } v[5] = {
                {"attn_q.bias", L->bq, k->n_head * d}, {"attn_k.bias", L->bk, k->n_head_kv * d},
                {"attn_v.bias", L->bv, k->n_head_kv * d}, {"attn_q_norm.weight", L->q_norm, d},
                {"attn_k_norm.weight", L->k_norm, d}};
            for (int i = 0; i < 5; i++) {
                if (!v[i].t) continue;
                snprintf(name, sizeof name, "blk.%d.%s", l, v[i].n);
                if (add(&p, name, v[i].t, SQZ_TYPE_F32, v[i].ne0, 1, err)) goto done;
            }
        }
        if (k->n_ff > 0) {
            struct { const char *n; const sqz_tensor *t; int type; int64_t ne0, ne1; } a[4] = {
                {"ffn_norm", L->ffn_norm, SQZ_TYPE_F32, dim, 1},
                {"ffn_gate", L->w_gate, SQZ_TYPE_F32, dim, k->n_ff},
                {"ffn_up", L->w_up, SQZ_TYPE_F32, dim, k->n_ff},
                {"ffn_down", L->w_down, SQZ_TYPE_F32, k->n_ff, dim}};
            for (int i = 0; i < 4; i++) {
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, a[i].n);
                if (add(&p, name, a[i].t, a[i].type, a[i].ne0, a[i].ne1, err)) goto done;
            }
        }
    }
    if (add(&p, "output_norm.weight", m->out_norm, SQZ_TYPE_F32, dim, 1, err) ||
        (!tied && add(&p, "output.weight", m->output, SQZ_TYPE_F32, dim, c->n_vocab, err)))
        goto done;
    /* Llama-3's frequency divisors: a GGUF tensor; config.json would need the
     * rope_scaling parameters they came from */
    sqz_tensor rope_t = {(char *)"rope_freqs.weight", SQZ_TYPE_F32, 1, {d / 2, 1, 1, 1}, c->rope_freqs,
                         (size_t)(d / 2) * sizeof(float)};
    if (c->rope_freqs && hf) {
        sqz_fail(err, "%s: rope_freqs (Llama-3 rope scaling) cannot be written to a Hugging Face config yet; write GGUF",
                 m->path);
        goto done;
    }
    if (c->rope_freqs && add(&p, "rope_freqs.weight", &rope_t, SQZ_TYPE_F32, d / 2, 1, err)) goto done;
    if ((hf ? st_begin(&p, path, err) : sqz_gguf_write_begin(&p.w, path, err)) || copy_whole(&p, m->tok_embd, err))
        goto done;
    if (compensate) {
        if (sqz_calib_run(m, pool, windows, nsamples, seqlen, layer_grams_cb, &p, NULL, err)) goto done;
    } else {
        for (int l = 0; l < c->n_layer; l++)
            if (write_layer(&p, l, NULL, NULL, err)) goto done;
    }
    if (copy_whole(&p, m->out_norm, err) || (!tied && copy_whole(&p, m->output, err)) ||
        (c->rope_freqs && copy_whole(&p, &rope_t, err)) ||
        (hf ? sqz_out_commit(&p.st, err) || st_config(m, nh, nkv, nff, path, err) : sqz_gguf_write_end(&p.w, err)))
        goto done;
    rc = SQZ_OK;
done:
    free(nh);
    if (hf) sqz_out_abort(&p.st);
    cJSON_Delete(p.header);
    sqz_gguf_writer_free(&p.w);
    return rc;
}

int sqz_prune_write(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                    int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *path,
                    sqz_err *err) {
    return prune_write(m, pool, keep, windows, nsamples, seqlen, percdamp, shrink, compensate, path, 0, err);
}

int sqz_prune_write_hf(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                       int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *dir,
                       sqz_err *err) {
    return prune_write(m, pool, keep, windows, nsamples, seqlen, percdamp, shrink, compensate, dir, 1, err);
}

int sqz_prune_layer_shapes(const sqz_model *m, int l, int ffn_step, sqz_layer_widths *out, sqz_err *err) {
    memset(out, 0, sizeof *out);
    int nh = m->cfg.layer_n_head[l], nkv = m->cfg.layer_n_head_kv[l], nff = m->cfg.layer_n_ff[l];
    int G = nkv ? nh / nkv : 1, step = ffn_step < 1 ? 1 : ffn_step;
    out->attn = calloc((size_t)(nkv * G + 1), sizeof *out->attn);
    out->ffn = calloc((size_t)((nff + step - 1) / step + 1), sizeof *out->ffn);
    if (!out->attn || !out->ffn) {
        sqz_layer_widths_free(out);
        return sqz_fail(err, "prune: out of memory");
    }
    if (nh == 0) out->attn[out->n_attn++].n_keep = 0;
    else
        for (int a = nkv; a >= 0; a--) /* the order of sqz_prune_layer_options */
            for (int b = G; b >= (a ? 1 : G); b--) {
                out->attn[out->n_attn].n_keep = a * b;
                out->attn[out->n_attn++].n_keep_kv = a;
            }
    for (int k = nff;; k = narrower_ffn(k, nff, step)) {
        out->ffn[out->n_ffn++].n_keep = k;
        if (k == 0) break;
    }
    return SQZ_OK;
}

int sqz_prune_ffn_step(int n_ff) {
    int s = n_ff / 6;
    if (s >= 256) return s / 256 * 256;
    if (s >= 32) return s / 32 * 32;
    return n_ff >= 64 ? 32 : 1; /* a small FFN: still 32-blocks, fewer options */
}

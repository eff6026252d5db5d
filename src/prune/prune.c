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

/* The backward pass of the Llama model (see include/sqz/grad.h).
 *
 * Forward: embed, then every layer from its saved input, keeping x_l (the input of
 * layer l) for all l; head and loss in chunks of rows. Backward, layer L-1 down to 0:
 * recompute the layer from x_l keeping its activations, then
 *   FFN:  y = down(silu(gate(n)) ⊙ up(n)),  n = rmsnorm(x_mid)
 *   attn: y = o(softmax(q kᵀ/√d) v),        q, k rotated (RoPE), n = rmsnorm(x_l)
 *         (Qwen2: q, k, v with biases, which move no gradient; Qwen3: q and k each
 *         RMS-normed per head before RoPE, whose backward runs before the hooks)
 * with the residual gradient passing through unchanged. Products are SGEMMs in fixed
 * tiles over the pool (OpenBLAS single-threaded), so results do not depend on the thread
 * count; sums of squares and softmax normalizers are in double. */
#include "sqz/grad.h"

#include "sqz/backend.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE_ROWS 256
#define TILE_COLS 192
#define HEAD_ROWS 64 /* rows of logits formed at once */
/* The most the kept FFN activations may take: all 28 layers of a 1.5B model at 512
 * tokens per window (1.03 GB), 23 of 32 for a 7B one. */
#define SQZ_GRAD_KEEP_BYTES ((size_t)1280 << 20)
/* Host memory for a GPU group's kept streams (n_layer + 2 per window): 8 windows of 2048
 * tokens of a 7B model. */
#define SQZ_GRAD_GROUP_BYTES ((size_t)9 << 30)

const char *sqz_linear_kind_name(int kind) {
    static const char *const names[SQZ_LIN_COUNT] = {"attn_q", "attn_k",  "attn_v", "attn_output", "ffn_gate",
                                                      "ffn_up", "ffn_down", "output", "token_embd"};
    return kind >= 0 && kind < SQZ_LIN_COUNT ? names[kind] : "?";
}

const sqz_tensor *sqz_linear_tensor(const sqz_model *m, int layer, int kind) {
    if (kind == SQZ_LIN_OUTPUT) return m->output;
    if (kind == SQZ_LIN_EMBD) return m->tok_embd;
    if (layer < 0 || layer >= m->cfg.n_layer) return NULL;
    const sqz_layer *L = &m->layers[layer];
    const sqz_tensor *t[SQZ_LIN_PER_LAYER] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
    return kind >= 0 && kind < SQZ_LIN_PER_LAYER ? t[kind] : NULL;
}

struct sqz_grad {
    const sqz_model *m;
    sqz_pool *pool;
    int n_threads;
    int64_t max_T, qmax, kvmax, ffmax;
    float *resid;            /* [n_layer + 1, T, dim] inputs of every layer, then the final stream */
    float *x_mid;            /* [T, dim] stream between attention and FFN */
    float *xtmp;             /* [T, dim] a recomputed layer's output (unused) */
    float *nb_a, *nb_f;      /* [T, dim] normed inputs of the attention / FFN */
    float *q, *k, *v;        /* rotated q, k and v */
    float *q_pre, *k_pre;    /* [T, qmax] / [T, kvmax] q, k before the per-head norm (qk_norm) */
    float *vecbuf;           /* [qmax + 2 kvmax + 2 head_dim] biases and q/k norm weights as f32 */
    float *att;              /* [T, qmax] attention output (input of o) */
    float *gate, *up, *act;  /* [T, ffmax] */
    float *dx, *dn;          /* [T, dim] gradient of the stream / of a normed input */
    float *dbig;             /* [T, max(qmax, ffmax)] gradient of att or act */
    float *dgate, *dup;      /* [T, ffmax] */
    float *dq, *dk, *dv;     /* [T, qmax] / [T, kvmax] */
    float *dk_h, *dv_h;      /* [n_head, T, head_dim] per query head, summed per group after */
    float *scores, *dscores; /* n_threads × [T, T] per (head) task */
    float *rope_cos, *rope_sin;
    float *w[SQZ_LIN_PER_LAYER]; /* dequantized weights of one layer (NULL when used in place) */
    const float *wl[SQZ_LIN_PER_LAYER];
    float *head_w;           /* [n_vocab, dim] when the head is not F32 */
    const float *head;
    float *logits;           /* [HEAD_ROWS, n_vocab] */
    float *normw;            /* [dim] */
    /* The FFN's gate and up outputs of the first n_kept layers, kept from a hooked
     * window's forward for its backward (each [T, 2·ffmax]): the recomputation then skips
     * gate/up/down, about 85% of a layer's products. Within SQZ_GRAD_KEEP_BYTES. */
    float **kept;
    int n_kept;
    int blas_threads;
    int window;              /* the window the hooks are told of (sqz_grad_site.window) */
    const float *targets;    /* [windows][T][n_vocab] target probabilities (sqz_grad_set_targets), or NULL */
    sqz_grad_hook norm_hook; /* the RMSNorms' sites (sqz_grad_set_norm_hook), or NULL */
    void *norm_ctx;
    /* On a GPU backend (sqz_grad_create_on): the layers run in a block pass, a group of
     * windows at a time, each layer's weights loaded once per group and direction. */
    sqz_block_pass *bp;
    float *gresid;           /* [group][n_layer + 1][T][dim] every layer's input per window */
    float *gdx;              /* [group][T][dim] each window's stream gradient */
    int64_t group;           /* windows per group (0: not yet sized) */
    sqz_stage_times times;   /* forward (with the head's loss) and backward (with the hooks) */
};

static float *falloc(int64_t a, int64_t b) {
    size_t n, bytes;
    if (a <= 0 || b <= 0) return malloc(sizeof(float));
    if (sqz_mul_size((size_t)a, (size_t)b, &n) || sqz_mul_size(n, sizeof(float), &bytes)) return NULL;
    return malloc(bytes);
}

static int in_place(const sqz_tensor *t) {
    return t->type == SQZ_TYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
}

void sqz_grad_free(sqz_grad *g) {
    if (!g) return;
    if (g->blas_threads > 0) openblas_set_num_threads(g->blas_threads);
    float *bufs[] = {g->resid, g->x_mid, g->xtmp, g->nb_a, g->nb_f, g->q,    g->k,     g->v,      g->att,      g->gate,
                     g->up,    g->act,   g->dx,   g->dn,   g->dbig, g->dgate, g->dup,    g->dq,       g->dk,
                     g->dv,    g->dk_h,  g->dv_h, g->scores, g->dscores, g->rope_cos, g->rope_sin, g->head_w,
                     g->q_pre, g->k_pre, g->vecbuf,
                     g->logits, g->normw};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    for (int i = 0; i < SQZ_LIN_PER_LAYER; i++) free(g->w[i]);
    for (int i = 0; i < g->n_kept; i++) free(g->kept[i]);
    free(g->kept);
    sqz_block_pass_close(g->bp);
    free(g->gresid);
    free(g->gdx);
    free(g);
}

/* ---------------------------------------------------------------- dequantization */

/* The whole of t as f32: in place, or dequantized into buf. */
static const float *tensor_f32(sqz_pool *pool, const sqz_tensor *t, float *buf, sqz_err *err) {
    if (in_place(t)) return t->data;
    return sqz_tensor_f32_pool(pool, t, buf, err) ? NULL : buf;
}

int sqz_grad_create(sqz_grad **out, const sqz_model *m, sqz_pool *pool, int64_t max_T, sqz_err *err) {
    *out = NULL;
    const sqz_llama_config *c = &m->cfg;
    if (max_T < 2 || max_T > (1 << 20))
        return sqz_fail(err, "%s: backward: %lld tokens per window (expected 2 .. %d)", m->path, (long long)max_T,
                        1 << 20);
    sqz_grad *g = calloc(1, sizeof *g);
    if (!g) return sqz_fail(err, "%s: backward: out of memory", m->path);
    g->m = m;
    g->pool = pool;
    g->n_threads = pool ? sqz_pool_threads(pool) : 1;
    g->max_T = max_T;
    int64_t wmax[SQZ_LIN_PER_LAYER] = {0};
    for (int l = 0; l < c->n_layer; l++) {
        int64_t q = (int64_t)c->layer_n_head[l] * c->head_dim, kv = (int64_t)c->layer_n_head_kv[l] * c->head_dim;
        if (q > g->qmax) g->qmax = q;
        if (kv > g->kvmax) g->kvmax = kv;
        if (c->layer_n_ff[l] > g->ffmax) g->ffmax = c->layer_n_ff[l];
        for (int k = 0; k < SQZ_LIN_PER_LAYER; k++) {
            const sqz_tensor *t = sqz_linear_tensor(m, l, k);
            if (t && !in_place(t) && sqz_tensor_nelements(t) > wmax[k]) wmax[k] = sqz_tensor_nelements(t);
        }
    }
    int64_t T = max_T, dim = c->dim, big = g->qmax > g->ffmax ? g->qmax : g->ffmax;
    int ok = (g->resid = falloc((int64_t)(c->n_layer + 1) * T, dim)) && (g->x_mid = falloc(T, dim)) && (g->xtmp = falloc(T, dim)) &&
             (g->nb_a = falloc(T, dim)) && (g->nb_f = falloc(T, dim)) && (g->q = falloc(T, g->qmax)) &&
             (g->k = falloc(T, g->kvmax)) && (g->v = falloc(T, g->kvmax)) && (g->att = falloc(T, g->qmax)) &&
             (g->gate = falloc(T, g->ffmax)) && (g->up = falloc(T, g->ffmax)) && (g->act = falloc(T, g->ffmax)) &&
             (g->dx = falloc(T, dim)) && (g->dn = falloc(T, dim)) && (g->dbig = falloc(T, big)) &&
             (g->dgate = falloc(T, g->ffmax)) && (g->dup = falloc(T, g->ffmax)) && (g->dq = falloc(T, g->qmax)) &&
             (g->dk = falloc(T, g->kvmax)) && (g->dv = falloc(T, g->kvmax)) && (g->dk_h = falloc(T, g->qmax)) &&
             (g->dv_h = falloc(T, g->qmax)) && (g->scores = falloc((int64_t)g->n_threads * T, T)) &&
             (g->dscores = falloc((int64_t)g->n_threads * T, T)) && (g->rope_cos = falloc(T, c->head_dim / 2)) &&
             (g->rope_sin = falloc(T, c->head_dim / 2)) && (g->logits = falloc(HEAD_ROWS, c->n_vocab)) &&
             (g->normw = falloc(dim, 1)) &&
             (g->vecbuf = falloc(g->qmax + 2 * g->kvmax + 2 * (int64_t)c->head_dim, 1)) &&
             (!c->qk_norm || ((g->q_pre = falloc(T, g->qmax)) && (g->k_pre = falloc(T, g->kvmax))));
    for (int k = 0; ok && k < SQZ_LIN_PER_LAYER; k++)
        if (wmax[k] && !(g->w[k] = falloc(wmax[k], 1))) ok = 0;
    if (ok && !in_place(m->output) && !(g->head_w = falloc(c->n_vocab, dim))) ok = 0;
    if (!ok) {
        sqz_grad_free(g);
        return sqz_fail(err, "%s: backward: out of memory for windows of %lld tokens", m->path, (long long)T);
    }
    if (!(g->head = tensor_f32(pool, m->output, g->head_w, err))) {
        sqz_grad_free(g);
        return SQZ_ERR;
    }
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double freq = pow(c->rope_theta, -2.0 * i / c->head_dim) / (c->rope_freqs ? (double)c->rope_freqs[i] : 1.0);
        for (int64_t p = 0; p < T; p++) {
            g->rope_cos[p * half + i] = (float)cos((double)p * freq);
            g->rope_sin[p * half + i] = (float)sin((double)p * freq);
        }
    }
    g->blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    *out = g;
    return SQZ_OK;
}

/* ---------------------------------------------------------------- tiled products */

/* C[M×N] = A[M×K] · op(B) + beta·C, op(B) = Bᵀ (B is N×K) or B (K×N); one SGEMM per
 * fixed tile of C, so the result is the same for any thread count. */
typedef struct {
    int trans_b;
    int64_t M, N, K, lda, ldb, ldc;
    const float *A, *B;
    float *C;
    float beta;
    int64_t col_tiles;
} gemm_ctx;

static void gemm_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const gemm_ctx *c = vctx;
    for (int64_t p = b; p < e; p++) {
        int64_t i0 = (p / c->col_tiles) * TILE_ROWS, j0 = (p % c->col_tiles) * TILE_COLS;
        int64_t m = c->M - i0 < TILE_ROWS ? c->M - i0 : TILE_ROWS, n = c->N - j0 < TILE_COLS ? c->N - j0 : TILE_COLS;
        const float *Bt = c->trans_b ? c->B + j0 * c->ldb : c->B + j0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, c->trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)c->K,
                    1.0f, c->A + i0 * c->lda, (int)c->lda, Bt, (int)c->ldb, c->beta, c->C + i0 * c->ldc + j0,
                    (int)c->ldc);
    }
}

static void gemm(sqz_pool *pool, int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float *C, int64_t ldc, float beta) {
    gemm_ctx c = {trans_b, M, N, K, lda, ldb, ldc, A, B, C, beta, (N + TILE_COLS - 1) / TILE_COLS};
    sqz_pool_for(pool, ((M + TILE_ROWS - 1) / TILE_ROWS) * c.col_tiles, 1, gemm_task, &c);
}

/* y[T, out] = x[T, in] · Wᵀ (W out × in). */
static void linear_fwd(sqz_pool *pool, float *y, const float *x, const float *W, int64_t T, int64_t in, int64_t out) {
    gemm(pool, 1, T, out, in, x, in, W, in, y, out, 0.0f);
}

/* dx[T, in] (+)= dy[T, out] · W. */
static void linear_bwd(sqz_pool *pool, float *dx, const float *dy, const float *W, int64_t T, int64_t in, int64_t out,
                       int accumulate) {
    gemm(pool, 0, T, in, out, dy, out, W, in, dx, in, accumulate ? 1.0f : 0.0f);
}

/* ---------------------------------------------------------------- element-wise pieces */

static float rms_scale(const float *x, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return (float)(1.0 / sqrt(ss / (double)n + (double)eps));
}

/* y = x·r·w, r = (mean x² + eps)^-½ per row. */
static void rmsnorm_rows(float *y, const float *x, const float *w, int64_t T, int64_t n, float eps) {
    for (int64_t t = 0; t < T; t++) {
        float r = rms_scale(x + t * n, n, eps);
        for (int64_t i = 0; i < n; i++) y[t * n + i] = x[t * n + i] * r * w[i];
    }
}

/* dx (+)= ∂(x·r·w)/∂x applied to dy: r·u − r³·x·(u·x)/n with u = dy ⊙ w. */
static void rmsnorm_rows_bwd(float *dx, const float *x, const float *w, const float *dy, int64_t T, int64_t n,
                             float eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * n, *dyr = dy + t * n;
        double ss = 0.0, ux = 0.0;
        for (int64_t i = 0; i < n; i++) {
            ss += (double)xr[i] * xr[i];
            ux += (double)dyr[i] * w[i] * xr[i];
        }
        double r = 1.0 / sqrt(ss / (double)n + (double)eps);
        float a = (float)r, b = (float)(r * r * r * ux / (double)n);
        for (int64_t i = 0; i < n; i++) dx[t * n + i] += a * dyr[i] * w[i] - b * xr[i];
    }
}

/* Rotates the heads of one row by +angle (sign 1) or -angle (sign -1, the transpose,
 * used on gradients). */
static void rope_row(float *vec, int n_heads, int head_dim, const float *cs, const float *sn, int mode, float sign) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = mode == SQZ_ROPE_HALF ? i : 2 * i, b = mode == SQZ_ROPE_HALF ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b], s = sign * sn[i];
            v[a] = x0 * cs[i] - x1 * s;
            v[b] = x1 * cs[i] + x0 * s;
        }
    }
}

static void rope_all(sqz_grad *g, float *x, int64_t T, int n_heads, float sign) {
    const sqz_llama_config *c = &g->m->cfg;
    int half = c->head_dim / 2;
    int64_t w = (int64_t)n_heads * c->head_dim;
    for (int64_t t = 0; t < T; t++)
        rope_row(x + t * w, n_heads, c->head_dim, g->rope_cos + t * half, g->rope_sin + t * half, c->rope_mode, sign);
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---------------------------------------------------------------- attention */

typedef struct {
    sqz_grad *g;
    int64_t T;
    int n_head, n_head_kv, hd;
    int backward;
} att_ctx;

/* P = softmax(scale·Q Kᵀ) row by row with the causal mask, into sc [T, T]. */
static void att_probs(const att_ctx *c, int h, float *sc) {
    sqz_grad *g = c->g;
    int64_t T = c->T, qw = (int64_t)c->n_head * c->hd, kvw = (int64_t)c->n_head_kv * c->hd;
    int kvh = h / (c->n_head / c->n_head_kv);
    float scale = 1.0f / sqrtf((float)c->hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, c->hd, scale, g->q + (int64_t)h * c->hd,
                (int)qw, g->k + (int64_t)kvh * c->hd, (int)kvw, 0.0f, sc, (int)T);
    for (int64_t i = 0; i < T; i++) {
        float *row = sc + i * T, mx = row[0];
        for (int64_t j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j <= i; j++) sum += (row[j] = expf(row[j] - mx));
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j <= i; j++) row[j] *= inv;
        for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

/* One query head: forward (att = P V) or backward (dq, dk_h, dv_h from datt). */
static void att_task(void *vctx, int64_t b, int64_t e, int thread) {
    const att_ctx *c = vctx;
    sqz_grad *g = c->g;
    int64_t T = c->T, hd = c->hd, qw = (int64_t)c->n_head * hd, kvw = (int64_t)c->n_head_kv * hd;
    float *P = g->scores + (int64_t)thread * T * T, *dP = g->dscores + (int64_t)thread * T * T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t h = b; h < e; h++) {
        int kvh = (int)h / (c->n_head / c->n_head_kv);
        const float *V = g->v + kvh * hd, *K = g->k + kvh * hd, *Q = g->q + h * hd;
        att_probs(c, (int)h, P);
        if (!c->backward) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, P, (int)T, V,
                        (int)kvw, 0.0f, g->att + h * hd, (int)qw);
            continue;
        }
        const float *dO = g->dbig + h * hd;
        float *dKh = g->dk_h + h * T * hd, *dVh = g->dv_h + h * T * hd;
        /* dV = Pᵀ dO; dP = dO Vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = s·dS K; dK = s·dSᵀ Q */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, P, (int)T, dO, (int)qw,
                    0.0f, dVh, (int)hd);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hd, 1.0f, dO, (int)qw, V, (int)kvw,
                    0.0f, dP, (int)T);
        for (int64_t i = 0; i < T; i++) {
            float *p = P + i * T, *dp = dP + i * T;
            double d = 0.0;
            for (int64_t j = 0; j <= i; j++) d += (double)p[j] * dp[j];
            for (int64_t j = 0; j <= i; j++) dp[j] = p[j] * (dp[j] - (float)d);
            for (int64_t j = i + 1; j < T; j++) dp[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd, (int)T, scale, dP, (int)T, K,
                    (int)kvw, 0.0f, g->dq + h * hd, (int)qw);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hd, (int)T, scale, dP, (int)T, Q, (int)qw,
                    0.0f, dKh, (int)hd);
    }
}

/* ---------------------------------------------------------------- one layer */

static int load_layer(sqz_grad *g, int l, sqz_err *err) {
    for (int k = 0; k < SQZ_LIN_PER_LAYER; k++) {
        const sqz_tensor *t = sqz_linear_tensor(g->m, l, k);
        g->wl[k] = NULL;
        if (t && !(g->wl[k] = tensor_f32(g->pool, t, g->w[k], err))) return SQZ_ERR;
    }
    return SQZ_OK;
}

static const float *vec_f32(const sqz_tensor *t, float *buf, sqz_err *err) {
    if (in_place(t)) return t->data;
    if (sqz_tensor_rows_f32(t, 0, 1, buf, err)) return NULL;
    return buf;
}

static const float *norm_f32(sqz_grad *g, const sqz_tensor *t, sqz_err *err) { return vec_f32(t, g->normw, err); }

/* x[T, width] += b[width] per row. */
static void add_bias(float *x, const float *b, int64_t T, int64_t width) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < width; i++) x[t * width + i] += b[i];
}

/* Qwen3's per-head norm weights of layer l as f32 (q at [0], k at [1]). */
static int qk_norm_f32(sqz_grad *g, const sqz_layer *L, const float *w[2], sqz_err *err) {
    int64_t hd = g->m->cfg.head_dim;
    float *buf = g->vecbuf + g->qmax + 2 * g->kvmax;
    if (!(w[0] = vec_f32(L->q_norm, buf, err)) || !(w[1] = vec_f32(L->k_norm, buf + hd, err))) return SQZ_ERR;
    return SQZ_OK;
}

/* Runs layer l on x_in (T rows) into x_out, keeping the activations in g. */
/* kept: layer l's gate and up outputs from an earlier forward of the same window, or
 * NULL. With them the FFN's products are not redone and x_out is not written (a
 * recomputation for the backward pass needs only the activations). */
static int layer_fwd(sqz_grad *g, int l, const float *x_in, float *x_out, int64_t T, const float *kept,
                     sqz_err *err) {
    const sqz_llama_config *c = &g->m->cfg;
    const sqz_layer *L = &g->m->layers[l];
    int64_t dim = c->dim, nh = c->layer_n_head[l], nkv = c->layer_n_head_kv[l], nff = c->layer_n_ff[l];
    int64_t qw = nh * c->head_dim, kvw = nkv * c->head_dim;
    const float *w;
    memcpy(g->x_mid, x_in, (size_t)(T * dim) * sizeof(float));
    if (nh > 0) {
        if (!(w = norm_f32(g, L->attn_norm, err))) return SQZ_ERR;
        rmsnorm_rows(g->nb_a, x_in, w, T, dim, c->norm_eps);
        linear_fwd(g->pool, g->q, g->nb_a, g->wl[SQZ_LIN_Q], T, dim, qw);
        linear_fwd(g->pool, g->k, g->nb_a, g->wl[SQZ_LIN_K], T, dim, kvw);
        linear_fwd(g->pool, g->v, g->nb_a, g->wl[SQZ_LIN_V], T, dim, kvw);
        if (L->bq) {
            const float *bq, *bk, *bv;
            if (!(bq = vec_f32(L->bq, g->vecbuf, err)) || !(bk = vec_f32(L->bk, g->vecbuf + qw, err)) ||
                !(bv = vec_f32(L->bv, g->vecbuf + qw + kvw, err)))
                return SQZ_ERR;
            add_bias(g->q, bq, T, qw);
            add_bias(g->k, bk, T, kvw);
            add_bias(g->v, bv, T, kvw);
        }
        if (L->q_norm) {
            const float *nw[2];
            if (qk_norm_f32(g, L, nw, err)) return SQZ_ERR;
            memcpy(g->q_pre, g->q, (size_t)(T * qw) * sizeof(float));
            memcpy(g->k_pre, g->k, (size_t)(T * kvw) * sizeof(float));
            rmsnorm_rows(g->q, g->q_pre, nw[0], T * nh, c->head_dim, c->norm_eps);
            rmsnorm_rows(g->k, g->k_pre, nw[1], T * nkv, c->head_dim, c->norm_eps);
        }
        rope_all(g, g->q, T, (int)nh, 1.0f);
        rope_all(g, g->k, T, (int)nkv, 1.0f);
        att_ctx ac = {g, T, (int)nh, (int)nkv, c->head_dim, 0};
        sqz_pool_for(g->pool, nh, 1, att_task, &ac);
        linear_fwd(g->pool, g->dn, g->att, g->wl[SQZ_LIN_O], T, qw, dim);
        for (int64_t i = 0; i < T * dim; i++) g->x_mid[i] = x_in[i] + g->dn[i];
    }
    if (!kept) memcpy(x_out, g->x_mid, (size_t)(T * dim) * sizeof(float));
    if (nff > 0) {
        if (!(w = norm_f32(g, L->ffn_norm, err))) return SQZ_ERR;
        rmsnorm_rows(g->nb_f, g->x_mid, w, T, dim, c->norm_eps);
        if (kept) {
            memcpy(g->gate, kept, (size_t)(T * nff) * sizeof(float));
            memcpy(g->up, kept + T * nff, (size_t)(T * nff) * sizeof(float));
            for (int64_t i = 0; i < T * nff; i++) g->act[i] = g->gate[i] * sigmoid(g->gate[i]) * g->up[i];
            return SQZ_OK;
        }
        linear_fwd(g->pool, g->gate, g->nb_f, g->wl[SQZ_LIN_GATE], T, dim, nff);
        linear_fwd(g->pool, g->up, g->nb_f, g->wl[SQZ_LIN_UP], T, dim, nff);
        for (int64_t i = 0; i < T * nff; i++) g->act[i] = g->gate[i] * sigmoid(g->gate[i]) * g->up[i];
        linear_fwd(g->pool, g->dn, g->act, g->wl[SQZ_LIN_DOWN], T, nff, dim);
        for (int64_t i = 0; i < T * dim; i++) x_out[i] += g->dn[i];
    }
    return SQZ_OK;
}

static int call_hook(const sqz_grad *g, sqz_grad_hook hook, void *ctx, int layer, int kind, const float *x,
                     const float *gr, const int32_t *tokens, int64_t row0, int64_t n, int64_t in, int64_t out,
                     sqz_err *err) {
    sqz_grad_site s = {layer, kind, x, gr, tokens, row0, n, in, out, g->window};
    return hook(ctx, &s, err);
}

/* g->dx holds dL/d(output of layer l); on return dL/d(input of layer l). Needs the
 * activations of layer_fwd(l). */
static int layer_bwd(sqz_grad *g, int l, const float *x_in, const int32_t *tokens, int64_t T, sqz_grad_hook hook,
                     void *hctx, sqz_err *err) {
    const sqz_llama_config *c = &g->m->cfg;
    const sqz_layer *L = &g->m->layers[l];
    int64_t dim = c->dim, hd = c->head_dim, nh = c->layer_n_head[l], nkv = c->layer_n_head_kv[l];
    int64_t nff = c->layer_n_ff[l], qw = nh * hd, kvw = nkv * hd;
    const float *w;
    if (nff > 0) {
        if (call_hook(g, hook, hctx, l, SQZ_LIN_DOWN, g->act, g->dx, tokens, 0, T, nff, dim, err)) return SQZ_ERR;
        float *dact = g->dbig;
        linear_bwd(g->pool, dact, g->dx, g->wl[SQZ_LIN_DOWN], T, nff, dim, 0);
        for (int64_t i = 0; i < T * nff; i++) {
            float s = sigmoid(g->gate[i]), silu = g->gate[i] * s;
            g->dup[i] = dact[i] * silu;
            g->dgate[i] = dact[i] * g->up[i] * s * (1.0f + g->gate[i] * (1.0f - s));
        }
        if (call_hook(g, hook, hctx, l, SQZ_LIN_GATE, g->nb_f, g->dgate, tokens, 0, T, dim, nff, err) ||
            call_hook(g, hook, hctx, l, SQZ_LIN_UP, g->nb_f, g->dup, tokens, 0, T, dim, nff, err))
            return SQZ_ERR;
        linear_bwd(g->pool, g->dn, g->dgate, g->wl[SQZ_LIN_GATE], T, dim, nff, 0);
        linear_bwd(g->pool, g->dn, g->dup, g->wl[SQZ_LIN_UP], T, dim, nff, 1);
        if (!(w = norm_f32(g, L->ffn_norm, err))) return SQZ_ERR;
        if (g->norm_hook && call_hook(g, g->norm_hook, g->norm_ctx, l, SQZ_GRAD_NORM_FFN, g->nb_f, g->dn, tokens, 0, T,
                                      dim, dim, err))
            return SQZ_ERR;
        rmsnorm_rows_bwd(g->dx, g->x_mid, w, g->dn, T, dim, c->norm_eps);
    }
    if (nh > 0) {
        if (call_hook(g, hook, hctx, l, SQZ_LIN_O, g->att, g->dx, tokens, 0, T, qw, dim, err)) return SQZ_ERR;
        linear_bwd(g->pool, g->dbig, g->dx, g->wl[SQZ_LIN_O], T, qw, dim, 0); /* dbig = d att, [T, qw] */
        att_ctx ac = {g, T, (int)nh, (int)nkv, (int)hd, 1};
        sqz_pool_for(g->pool, nh, 1, att_task, &ac);
        /* sum the per-query-head dK, dV of each group into [T, kvw] */
        int group = (int)(nh / nkv);
        memset(g->dk, 0, (size_t)(T * kvw) * sizeof(float));
        memset(g->dv, 0, (size_t)(T * kvw) * sizeof(float));
        for (int64_t h = 0; h < nh; h++) {
            int64_t kvh = h / group;
            for (int64_t t = 0; t < T; t++)
                for (int64_t i = 0; i < hd; i++) {
                    g->dk[t * kvw + kvh * hd + i] += g->dk_h[(h * T + t) * hd + i];
                    g->dv[t * kvw + kvh * hd + i] += g->dv_h[(h * T + t) * hd + i];
                }
        }
        rope_all(g, g->dq, T, (int)nh, -1.0f);
        rope_all(g, g->dk, T, (int)nkv, -1.0f);
        if (L->q_norm) { /* through the per-head norms; dk_h, dv_h are free again */
            const float *nw[2];
            if (qk_norm_f32(g, L, nw, err)) return SQZ_ERR;
            memcpy(g->dk_h, g->dq, (size_t)(T * qw) * sizeof(float));
            memcpy(g->dv_h, g->dk, (size_t)(T * kvw) * sizeof(float));
            memset(g->dq, 0, (size_t)(T * qw) * sizeof(float));
            memset(g->dk, 0, (size_t)(T * kvw) * sizeof(float));
            rmsnorm_rows_bwd(g->dq, g->q_pre, nw[0], g->dk_h, T * nh, hd, c->norm_eps);
            rmsnorm_rows_bwd(g->dk, g->k_pre, nw[1], g->dv_h, T * nkv, hd, c->norm_eps);
        }
        if (call_hook(g, hook, hctx, l, SQZ_LIN_Q, g->nb_a, g->dq, tokens, 0, T, dim, qw, err) ||
            call_hook(g, hook, hctx, l, SQZ_LIN_K, g->nb_a, g->dk, tokens, 0, T, dim, kvw, err) ||
            call_hook(g, hook, hctx, l, SQZ_LIN_V, g->nb_a, g->dv, tokens, 0, T, dim, kvw, err))
            return SQZ_ERR;
        linear_bwd(g->pool, g->dn, g->dq, g->wl[SQZ_LIN_Q], T, dim, qw, 0);
        linear_bwd(g->pool, g->dn, g->dk, g->wl[SQZ_LIN_K], T, dim, kvw, 1);
        linear_bwd(g->pool, g->dn, g->dv, g->wl[SQZ_LIN_V], T, dim, kvw, 1);
        if (!(w = norm_f32(g, L->attn_norm, err))) return SQZ_ERR;
        if (g->norm_hook && call_hook(g, g->norm_hook, g->norm_ctx, l, SQZ_GRAD_NORM_ATTN, g->nb_a, g->dn, tokens, 0, T,
                                      dim, dim, err))
            return SQZ_ERR;
        rmsnorm_rows_bwd(g->dx, x_in, w, g->dn, T, dim, c->norm_eps);
    }
    return SQZ_OK;
}

/* ---------------------------------------------------------------- the window */

/* Final norm, logits in chunks of rows, the loss, and (with a hook) dL/d(final stream)
 * into g->dx. */
static int head_pass(sqz_grad *g, const float *xL, const int32_t *tokens, int64_t T, double scale, sqz_grad_hook hook,
                     void *hctx, double *loss_sum, sqz_err *err) {
    const sqz_llama_config *c = &g->m->cfg;
    int64_t dim = c->dim, V = c->n_vocab;
    const float *w = norm_f32(g, g->m->out_norm, err);
    if (!w) return SQZ_ERR;
    memcpy(g->nb_f, w, (size_t)dim * sizeof(float)); /* keep the norm weights: normw is reused */
    rmsnorm_rows(g->nb_a, xL, g->nb_f, T, dim, c->norm_eps);
    double loss = 0.0;
    for (int64_t r0 = 0; r0 < T; r0 += HEAD_ROWS) {
        int64_t n = T - r0 < HEAD_ROWS ? T - r0 : HEAD_ROWS;
        linear_fwd(g->pool, g->logits, g->nb_a + r0 * dim, g->head, n, dim, V);
        for (int64_t i = 0; i < n; i++) {
            int64_t t = r0 + i;
            float *z = g->logits + i * V;
            if (t == T - 1) { /* the last position predicts nothing */
                memset(z, 0, (size_t)V * sizeof(float));
                continue;
            }
            float mx = z[0];
            for (int64_t j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
            double sum = 0.0;
            for (int64_t j = 0; j < V; j++) sum += exp((double)z[j] - mx);
            const double lse = log(sum) + mx;
            double inv = scale / sum;
            if (g->targets) { /* KL(p ‖ softmax z) = Σ p (log p − z + lse); its gradient softmax z − p */
                const float *p = g->targets + ((int64_t)g->window * T + t) * V;
                double kl = 0.0;
                for (int64_t j = 0; j < V; j++)
                    if (p[j] > 0.0f) kl += (double)p[j] * (log((double)p[j]) - z[j] + lse);
                loss += kl;
                for (int64_t j = 0; j < V; j++) z[j] = (float)(exp((double)z[j] - mx) * inv - scale * p[j]);
                continue;
            }
            loss += lse - z[tokens[t + 1]];
            for (int64_t j = 0; j < V; j++) z[j] = (float)(exp((double)z[j] - mx) * inv);
            z[tokens[t + 1]] -= (float)scale;
        }
        if (!hook) continue;
        if (call_hook(g, hook, hctx, -1, SQZ_LIN_OUTPUT, g->nb_a + r0 * dim, g->logits, tokens + r0, r0, n, dim, V, err))
            return SQZ_ERR;
        linear_bwd(g->pool, g->dn + r0 * dim, g->logits, g->head, n, dim, V, 0);
    }
    if (loss_sum) *loss_sum = loss;
    if (hook) {
        memset(g->dx, 0, (size_t)(T * dim) * sizeof(float));
        rmsnorm_rows_bwd(g->dx, xL, g->nb_f, g->dn, T, dim, c->norm_eps);
    }
    return SQZ_OK;
}

/* Room for the kept FFN activations of as many leading layers as SQZ_GRAD_KEEP_BYTES
 * holds (made on the first hooked window; a plain loss pass never needs it). */
static int keep_alloc(sqz_grad *g, sqz_err *err) {
    if (g->kept) return SQZ_OK;
    const sqz_llama_config *c = &g->m->cfg;
    if (!(g->kept = calloc((size_t)c->n_layer, sizeof *g->kept))) return sqz_fail(err, "backward: out of memory");
    size_t used = 0;
    for (int l = 0; l < c->n_layer; l++) {
        size_t bytes = (size_t)g->max_T * 2 * (size_t)c->layer_n_ff[l] * sizeof(float);
        if (used + bytes > SQZ_GRAD_KEEP_BYTES || !(g->kept[l] = malloc(bytes ? bytes : 1))) break;
        used += bytes;
        g->n_kept = l + 1;
    }
    return SQZ_OK;
}

/* A window's length against the buffers made at create. */
static int check_window(const sqz_grad *g, int64_t T, sqz_err *err) {
    if (T >= 2 && T <= g->max_T) return SQZ_OK;
    return sqz_fail(err, "%s: backward: window of %lld tokens (expected 2 .. %lld)", g->m->path, (long long)T,
                    (long long)g->max_T);
}

int sqz_grad_window(sqz_grad *g, const int32_t *tokens, int64_t T, double scale, sqz_grad_hook hook, void *hctx,
                    double *loss_sum, sqz_err *err) {
    const sqz_model *m = g->m;
    const sqz_llama_config *c = &m->cfg;
    int64_t dim = c->dim;
    if (check_window(g, T, err)) return SQZ_ERR;
    /* the head pass is counted here whole: its logits and, with a hook, their input gradient */
    double t0 = sqz_now(), fl = (hook ? 2.0 : 1.0) * sqz_forward_flops(m, -1, T);
    if (sqz_forward_embed(m, tokens, T, g->resid, err)) return SQZ_ERR;
    if (hook && keep_alloc(g, err)) return SQZ_ERR;
    for (int l = 0; l < c->n_layer; l++) {
        if (load_layer(g, l, err) ||
            layer_fwd(g, l, g->resid + (int64_t)l * T * dim, g->resid + (int64_t)(l + 1) * T * dim, T, NULL, err))
            return SQZ_ERR;
        if (hook && l < g->n_kept) {
            int64_t nff = c->layer_n_ff[l];
            memcpy(g->kept[l], g->gate, (size_t)(T * nff) * sizeof(float));
            memcpy(g->kept[l] + T * nff, g->up, (size_t)(T * nff) * sizeof(float));
        }
        fl += sqz_forward_flops(m, l, T);
    }
    if (head_pass(g, g->resid + (int64_t)c->n_layer * T * dim, tokens, T, scale, hook, hctx, loss_sum, err))
        return SQZ_ERR;
    double t1 = sqz_now();
    sqz_stage_add(&g->times, SQZ_STAGE_FORWARD, t1 - t0, fl);
    if (!hook) return SQZ_OK;
    /* each layer's forward is recomputed (its attention alone where the FFN's activations
     * were kept), then its input gradient takes about as much as the forward again */
    fl = 0.0;
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const float *x_in = g->resid + (int64_t)l * T * dim;
        const float *kept = l < g->n_kept ? g->kept[l] : NULL;
        if (load_layer(g, l, err) || layer_fwd(g, l, x_in, g->xtmp, T, kept, err)) return SQZ_ERR;
        if (layer_bwd(g, l, x_in, tokens, T, hook, hctx, err)) return SQZ_ERR;
        fl += 2.0 * sqz_forward_flops(m, l, T) - (kept ? 6.0 * (double)T * dim * (double)c->layer_n_ff[l] : 0.0);
    }
    int rc = call_hook(g, hook, hctx, -1, SQZ_LIN_EMBD, NULL, g->dx, tokens, 0, T, c->n_vocab, dim, err);
    sqz_stage_add(&g->times, SQZ_STAGE_BACKWARD, sqz_now() - t1, fl);
    return rc;
}

void sqz_grad_times(const sqz_grad *g, sqz_stage_times *out) { sqz_stage_merge(out, &g->times); }

void sqz_grad_set_targets(sqz_grad *g, const float *probs) { g->targets = probs; }

int sqz_grad_reload_head(sqz_grad *g, sqz_err *err) {
    const float *h = tensor_f32(g->pool, g->m->output, g->head_w, err);
    if (!h) return SQZ_ERR;
    g->head = h;
    return SQZ_OK;
}

void sqz_grad_set_norm_hook(sqz_grad *g, sqz_grad_hook hook, void *ctx) {
    g->norm_hook = hook;
    g->norm_ctx = ctx;
}

/* ---------------------------------------------------------------- on a backend */

int sqz_grad_create_on(sqz_grad **out, const sqz_model *m, sqz_pool *pool, sqz_backend *backend, int64_t max_T,
                       sqz_err *err) {
    if (sqz_grad_create(out, m, pool, max_T, err)) return SQZ_ERR;
    if (!backend || sqz_backend_device(backend) != SQZ_DEVICE_CUDA) return SQZ_OK;
    sqz_block_desc widest;
    sqz_block_desc_widest(m, &widest);
    if (sqz_block_pass_open(backend, max_T, &widest, &(*out)->bp, err)) {
        sqz_grad_free(*out);
        *out = NULL;
        return SQZ_ERR;
    }
    return SQZ_OK;
}

typedef struct {
    sqz_grad *g;
    sqz_grad_hook hook;
    void *hctx;
    int layer;
    const int32_t *tokens;
    int64_t T;
} block_hook_ctx;

static int block_hook(void *vctx, int kind, const float *x, const float *gr, int64_t in, int64_t out, sqz_err *err) {
    block_hook_ctx *c = vctx;
    if (kind == SQZ_BLOCK_NORM_ATTN || kind == SQZ_BLOCK_NORM_FFN) {
        if (!c->g->norm_hook) return SQZ_OK;
        return call_hook(c->g, c->g->norm_hook, c->g->norm_ctx, c->layer,
                         kind == SQZ_BLOCK_NORM_ATTN ? SQZ_GRAD_NORM_ATTN : SQZ_GRAD_NORM_FFN, x, gr, c->tokens, 0,
                         c->T, in, out, err);
    }
    return call_hook(c->g, c->hook, c->hctx, c->layer, kind, x, gr, c->tokens, 0, c->T, in, out, err);
}

/* The windows per group: as many as SQZ_GRAD_GROUP_BYTES of kept streams hold, at least 1. */
static int group_alloc(sqz_grad *g, int64_t T, int nsamples, sqz_err *err) {
    const sqz_llama_config *c = &g->m->cfg;
    size_t per = (size_t)(c->n_layer + 2) * (size_t)T * (size_t)c->dim * sizeof(float);
    int64_t want = (int64_t)(SQZ_GRAD_GROUP_BYTES / per);
    if (want < 1) want = 1;
    if (want > nsamples) want = nsamples;
    if (g->group >= want) return SQZ_OK;
    free(g->gresid);
    free(g->gdx);
    g->gresid = falloc(want * (c->n_layer + 1) * T, c->dim);
    g->gdx = falloc(want * T, c->dim);
    if (!g->gresid || !g->gdx) {
        g->group = 0;
        return sqz_fail(err, "%s: backward: out of memory for %lld windows' streams (%.1f GiB)", g->m->path,
                        (long long)want, (double)(want * per) / 1073741824.0);
    }
    g->group = want;
    return SQZ_OK;
}

/* Windows w0 .. w0+n-1 on the block pass: every layer forward over all of them, the head
 * (on the CPU), then every layer backward over all of them. */
static int gpu_group(sqz_grad *g, const int32_t *windows, int w0, int n, int64_t T, double scale, sqz_grad_hook hook,
                     void *hctx, double *loss_sum, sqz_err *err) {
    const sqz_model *m = g->m;
    const sqz_llama_config *c = &m->cfg;
    const int64_t dim = c->dim, per = (int64_t)(c->n_layer + 1) * T * dim;
    double t0 = sqz_now(), fl = 0.0;
    for (int i = 0; i < n; i++)
        if (sqz_forward_embed(m, windows + (int64_t)(w0 + i) * T, T, g->gresid + i * per, err)) return SQZ_ERR;
    for (int l = 0; l < c->n_layer; l++) {
        if (sqz_block_load_layer(g->bp, m, l, g->pool, err)) return SQZ_ERR;
        for (int i = 0; i < n; i++) {
            float *x = g->gresid + i * per + (int64_t)(l + 1) * T * dim;
            memcpy(x, x - T * dim, (size_t)(T * dim) * sizeof(float));
            if (sqz_block_pass_run(g->bp, x, T, NULL, err)) return SQZ_ERR;
        }
        fl += n * sqz_forward_flops(m, l, T);
    }
    for (int i = 0; i < n; i++) {
        const int32_t *tokens = windows + (int64_t)(w0 + i) * T;
        double l = 0.0;
        g->window = w0 + i;
        if (head_pass(g, g->gresid + i * per + (int64_t)c->n_layer * T * dim, tokens, T, scale, hook, hctx, &l, err))
            return SQZ_ERR;
        *loss_sum += l;
        if (hook) memcpy(g->gdx + i * T * dim, g->dx, (size_t)(T * dim) * sizeof(float));
        fl += (hook ? 2.0 : 1.0) * sqz_forward_flops(m, -1, T);
    }
    double t1 = sqz_now();
    sqz_stage_add(&g->times, SQZ_STAGE_FORWARD, t1 - t0, fl);
    if (!hook) return SQZ_OK;
    fl = 0.0;
    for (int l = c->n_layer - 1; l >= 0; l--) {
        if (sqz_block_load_layer(g->bp, m, l, g->pool, err)) return SQZ_ERR;
        for (int i = 0; i < n; i++) {
            g->window = w0 + i;
            block_hook_ctx bc = {g, hook, hctx, l, windows + (int64_t)(w0 + i) * T, T};
            if (sqz_block_pass_backward(g->bp, g->gresid + i * per + (int64_t)l * T * dim, g->gdx + i * T * dim, T,
                                        block_hook, &bc, err))
                return SQZ_ERR;
        }
        fl += n * 3.0 * sqz_forward_flops(m, l, T); /* the forward again, then twice its products */
    }
    for (int i = 0; i < n; i++) {
        g->window = w0 + i;
        if (call_hook(g, hook, hctx, -1, SQZ_LIN_EMBD, NULL, g->gdx + i * T * dim, windows + (int64_t)(w0 + i) * T, 0,
                      T, c->n_vocab, dim, err))
            return SQZ_ERR;
    }
    sqz_stage_add(&g->times, SQZ_STAGE_BACKWARD, sqz_now() - t1, fl);
    return SQZ_OK;
}

int sqz_grad_windows(sqz_grad *g, const int32_t *windows, int nsamples, int64_t T, double scale, sqz_grad_hook hook,
                     void *hctx, double *loss_sum, sqz_progress *prog, sqz_err *err) {
    double total = 0.0;
    if (!g->bp) {
        for (int w = 0; w < nsamples; w++) {
            double l = 0.0;
            g->window = w;
            if (sqz_grad_window(g, windows + (int64_t)w * T, T, scale, hook, hctx, &l, err)) return SQZ_ERR;
            total += l;
            if (prog) sqz_progress_update(prog, w + 1, NULL);
        }
    } else {
        if (check_window(g, T, err)) return SQZ_ERR;
        if (group_alloc(g, T, nsamples, err)) return SQZ_ERR;
        for (int w0 = 0; w0 < nsamples; w0 += (int)g->group) {
            int n = nsamples - w0 < g->group ? nsamples - w0 : (int)g->group;
            if (gpu_group(g, windows, w0, n, T, scale, hook, hctx, &total, err)) return SQZ_ERR;
            if (prog) sqz_progress_update(prog, w0 + n, NULL);
        }
    }
    if (loss_sum) *loss_sum = total;
    return SQZ_OK;
}

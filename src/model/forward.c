/* The decoder forward pass on the CPU, read top to bottom like the paper:
 *   embed → for each layer: RMSNorm → q,k,v (+ bias: Qwen2) → per-head RMSNorm of q, k
 *                           (Qwen3) → RoPE → causal GQA attention → o → residual
 *                           → RMSNorm → SwiGLU MLP → residual
 *         → final RMSNorm → output head.
 * Linear layers are one SGEMM over the whole sequence (X[T×in] · Wᵀ), split by output
 * columns over the thread pool with OpenBLAS itself single-threaded, so the pool is the
 * only source of threads. F32 weights are used in place from the mapped file; any other
 * type is dequantized one matrix at a time into a scratch buffer. */
#include "sqz/model.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Rows of the output head dequantized at once when it is not F32. */
#define HEAD_CHUNK_ROWS 4096
/* Query rows per attention task: small enough to spread heads × blocks over threads and
 * to skip the masked upper triangle block by block. */
#define ATT_BLOCK 64
/* Dequantized weights a workspace keeps: a layer's seven linears and one to spare. */
#define WS_SLOTS 8

/* ---------------------------------------------------------------- activations */

typedef struct fwd_state {
    int64_t T;          /* tokens in the sequence */
    int n_threads;
    float *x;           /* [T, dim] residual stream */
    float *xb;          /* [T, dim] normed input of a block */
    float *q;           /* [T, max q width] */
    float *k, *v;       /* [T, max kv width] */
    float *att;         /* [T, max q width] attention output before o */
    float *hb, *hb2;    /* [T, max ffn] gate and up */
    float *rope_cos, *rope_sin; /* [T, head_dim/2] */
    float *scores;      /* n_threads × [ATT_BLOCK, T] */
    float *wbuf;        /* dequantized weight scratch */
    size_t wbuf_n;
    /* A layer pass's workspace (sqz_fwd_ws) keeps dequantized weights here instead of
     * wbuf, so the windows after the first of a layer skip the dequantization */
    int cache;
    struct wslot {
        const sqz_tensor *t;
        const void *data;
        float *buf;
        size_t cap;
    } wslot[WS_SLOTS];
    int wslot_next;     /* the slot to fill next (round robin) */
    float *normbuf;     /* [dim] a norm's weights as f32 when stored otherwise */
    float *biasbuf;     /* [max q width + 2 · max kv width] q, k, v biases as f32 */
    float *qknbuf;      /* [2 · head_dim] q_norm, k_norm weights as f32 */
    float *xr;          /* [T, max input width] activations rounded as llama.cpp does (act_rounding) */
    int blas_threads;   /* OpenBLAS's thread count before the pass, restored after */
} fwd_state;

static void state_free(fwd_state *s) {
    free(s->x); free(s->xb); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->hb); free(s->hb2); free(s->rope_cos); free(s->rope_sin); free(s->scores); free(s->wbuf);
    free(s->normbuf);
    free(s->biasbuf);
    free(s->qknbuf);
    free(s->xr);
    for (int i = 0; i < WS_SLOTS; i++) free(s->wslot[i].buf);
    memset(s, 0, sizeof *s);
}

/* malloc of a×b floats with an overflow check; NULL on failure (also for 0 elements,
 * which callers never request). */
static float *alloc_f32(int64_t a, int64_t b) {
    size_t n, bytes;
    if (a <= 0 || b <= 0) return malloc(sizeof(float));
    if (sqz_mul_size((size_t)a, (size_t)b, &n) || sqz_mul_size(n, sizeof(float), &bytes)) return NULL;
    return malloc(bytes);
}

static int needs_copy(const sqz_tensor *t) {
    /* SGEMM wants float-aligned data; safetensors data need not be 4-byte aligned. */
    return t->type != SQZ_TYPE_F32 || ((uintptr_t)t->data % sizeof(float)) != 0;
}

static int state_alloc(fwd_state *s, const sqz_model *m, int64_t T, int n_threads, int cache, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    int64_t qmax = 0, kvmax = 0, ffmax = 0;
    size_t wmax = 0;
    for (int l = 0; l < c->n_layer; l++) {
        int64_t q = (int64_t)c->layer_n_head[l] * c->head_dim, kv = (int64_t)c->layer_n_head_kv[l] * c->head_dim;
        if (q > qmax) qmax = q;
        if (kv > kvmax) kvmax = kv;
        if (c->layer_n_ff[l] > ffmax) ffmax = c->layer_n_ff[l];
        /* q,k,v (and gate,up) are multiplied together, so their copies coexist. */
        const sqz_layer *L = &m->layers[l];
        const sqz_tensor *groups[4][3] = {{L->wq, L->wk, L->wv}, {L->wo}, {L->w_gate, L->w_up}, {L->w_down}};
        for (int g = 0; g < 4; g++) {
            size_t need = 0;
            for (int i = 0; i < 3; i++)
                if (groups[g][i] && needs_copy(groups[g][i])) need += (size_t)sqz_tensor_nelements(groups[g][i]);
            if (need > wmax) wmax = need;
        }
    }
    if (needs_copy(m->output)) {
        size_t head = (size_t)HEAD_CHUNK_ROWS * (size_t)c->dim;
        if (head > wmax) wmax = head;
    }
    if (cache) wmax = 0; /* the slots instead (layers only: a workspace never runs the head) */
    s->cache = cache;
    s->T = T;
    s->n_threads = n_threads;
    s->x = alloc_f32(T, c->dim);
    s->xb = alloc_f32(T, c->dim);
    s->q = alloc_f32(T, qmax);
    s->k = alloc_f32(T, kvmax);
    s->v = alloc_f32(T, kvmax);
    s->att = alloc_f32(T, qmax);
    s->hb = alloc_f32(T, ffmax);
    s->hb2 = alloc_f32(T, ffmax);
    s->rope_cos = alloc_f32(T, c->head_dim / 2);
    s->rope_sin = alloc_f32(T, c->head_dim / 2);
    s->scores = alloc_f32((int64_t)n_threads * ATT_BLOCK, T);
    s->wbuf_n = wmax;
    s->wbuf = wmax ? alloc_f32((int64_t)wmax, 1) : NULL;
    s->normbuf = alloc_f32(c->dim, 1);
    s->biasbuf = alloc_f32(qmax + 2 * kvmax, 1);
    s->qknbuf = alloc_f32(2 * (int64_t)c->head_dim, 1);
    if (m->act_rounding) {
        int64_t inmax = c->dim > qmax ? c->dim : qmax;
        if (ffmax > inmax) inmax = ffmax;
        if (!(s->xr = alloc_f32(T, inmax))) return sqz_fail(err, "%s: forward: out of memory", m->path);
    }
    if (!s->normbuf || !s->biasbuf || !s->qknbuf || !s->x || !s->xb || !s->q || !s->k || !s->v || !s->att || !s->hb || !s->hb2 || !s->rope_cos ||
        !s->rope_sin || !s->scores || (wmax && !s->wbuf))
        return sqz_fail(err, "%s: forward: out of memory for %lld tokens", m->path, (long long)T);
    return SQZ_OK;
}

/* ---------------------------------------------------------------- kernels */

/* out = x / sqrt(mean(x²) + eps) * w; the sum of squares in double. */
void sqz_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* cos/sin of pos·θ^(-2i/d) / f_i for every position and pair, computed in double;
 * f (head_dim/2 divisors, Llama-3's rope_freqs) may be NULL. */
static void rope_table(float *cosv, float *sinv, int64_t T, int head_dim, double theta, const float *f) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double freq = pow(theta, -2.0 * i / head_dim) / (f ? (double)f[i] : 1.0);
        for (int64_t p = 0; p < T; p++) {
            double a = (double)p * freq;
            cosv[p * half + i] = (float)cos(a);
            sinv[p * half + i] = (float)sin(a);
        }
    }
}

/* Rotates the n_heads heads of one token's q or k vector. HALF pairs (i, i + d/2) as
 * Hugging Face's rotate_half; ADJACENT pairs (2i, 2i+1) as ggml's normal RoPE mode. */
static void rope(float *vec, int n_heads, int head_dim, const float *cosv, const float *sinv, int mode) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = mode == SQZ_ROPE_HALF ? i : 2 * i;
            int b = mode == SQZ_ROPE_HALF ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cosv[i] - x1 * sinv[i];
            v[b] = x1 * cosv[i] + x0 * sinv[i];
        }
    }
}

/* exp(x) without a libm call, so the loops below vectorize (profiling showed scalar
 * expf at ~10% of prefill). Cephes' single-precision scheme: x = n·ln2 + r with ln2 split
 * in two for exactness, a degree-6 polynomial for e^r on |r| <= ln2/2, and 2^n put into the
 * exponent bits. Relative error about 2e-7; inputs are clamped to the normal range. */
static inline float exp_approx(float x) {
    x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* In-place softmax over n values, max subtracted first; the sum in double. */
static void softmax(float *x, int64_t n) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) x[i] = exp_approx(x[i] - mx);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static inline float silu(float x) { return x / (1.0f + exp_approx(-x)); }

/* ---------------------------------------------------------------- weights */

typedef struct {
    const sqz_tensor *t;
    int64_t row0;
    float *dst;
    int failed;
} dequant_ctx;

static void dequant_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    dequant_ctx *c = vctx;
    sqz_err err;
    if (sqz_tensor_rows_f32(c->t, c->row0 + b, e - b, c->dst + b * c->t->ne[0], &err)) c->failed = 1;
}

/* Rows [row0, row0+n_rows) of t as f32: the mapped data itself for an aligned F32 tensor,
 * otherwise dequantized (in parallel) into scratch. */
static const float *weight_rows(float *scratch, sqz_pool *pool, const sqz_tensor *t, int64_t row0, int64_t n_rows,
                                sqz_err *err) {
    if (!needs_copy(t)) return (const float *)t->data + row0 * t->ne[0];
    dequant_ctx c = {t, row0, scratch, 0};
    sqz_pool_for(pool, n_rows, 16, dequant_task, &c);
    if (c.failed) {
        sqz_fail(err, "tensor '%s': cannot dequantize type %d", t->name, t->type);
        return NULL;
    }
    return scratch;
}

/* ---------------------------------------------------------------- matmul */

/* Products go to SGEMM in fixed tiles of MATMUL_ROWS tokens × MATMUL_COLS output columns,
 * the same tiles for any thread count: OpenBLAS picks kernels by shape, so splitting by
 * thread count would change the last bits of the result with the number of threads
 * (calibration Grams must not). Tiles this size keep the re-packing of the shared input
 * small next to the arithmetic (64-column strips re-packed x nine times per matrix). */
#define MATMUL_ROWS 256
#define MATMUL_COLS 192
#define MATMUL_MAX 3

/* Up to three products sharing one input x[T, in]: out_i[T, n_out_i] = x · w_iᵀ. They
 * run as one parallel loop over all their pieces, so small ones (k, v) do not leave a
 * thread idle. */
typedef struct {
    const float *x;
    int64_t T, in;
    int n;
    float *out[MATMUL_MAX];
    const float *w[MATMUL_MAX];
    int64_t n_out[MATMUL_MAX];
    int64_t ldo[MATMUL_MAX]; /* row stride of out */
    int64_t first_piece[MATMUL_MAX + 1];
} matmul_ctx;

/* One SGEMM per tile. Merging neighbouring tiles into one wider call would pack fewer
 * times, but OpenBLAS's results then depend on the grouping, i.e. on the thread count
 * (test_calib catches that: its Grams must be bit-identical for 1 and 3 threads). */
static void matmul_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const matmul_ctx *c = vctx;
    int64_t col_tiles[MATMUL_MAX];
    for (int g = 0; g < c->n; g++) col_tiles[g] = (c->n_out[g] + MATMUL_COLS - 1) / MATMUL_COLS;
    for (int64_t p = b; p < e; p++) {
        int g = 0;
        while (p >= c->first_piece[g + 1]) g++;
        int64_t local = p - c->first_piece[g];
        int64_t i0 = (local / col_tiles[g]) * MATMUL_ROWS, j0 = (local % col_tiles[g]) * MATMUL_COLS;
        int64_t m = c->T - i0 < MATMUL_ROWS ? c->T - i0 : MATMUL_ROWS;
        int64_t n = c->n_out[g] - j0 < MATMUL_COLS ? c->n_out[g] - j0 : MATMUL_COLS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)c->in, 1.0f, c->x + i0 * c->in,
                    (int)c->in, c->w[g] + j0 * c->in, (int)c->in, 0.0f, c->out[g] + i0 * c->ldo[g] + j0,
                    (int)c->ldo[g]);
    }
}

/* Tiles of a product: row tiles × column tiles. */
static int64_t matmul_tiles(int64_t T, int64_t n_out) {
    return ((T + MATMUL_ROWS - 1) / MATMUL_ROWS) * ((n_out + MATMUL_COLS - 1) / MATMUL_COLS);
}

static void matmul_run(sqz_pool *pool, matmul_ctx *c) {
    sqz_pool_for(pool, c->first_piece[c->n], 1, matmul_task, c);
}

/* ---------------------------------------------------------------- llama.cpp's activation rounding */

/* The type llama.cpp's CPU backend converts activations to before a dot product with a
 * weight of type `type` (its vec_dot_type); -1 when it keeps them in f32. */
static int act_type_of(int type) {
    switch (type) {
    case SQZ_TYPE_Q4_0: case SQZ_TYPE_Q5_0: case SQZ_TYPE_Q8_0: case SQZ_TYPE_IQ4_NL: return SQZ_TYPE_Q8_0;
    case SQZ_TYPE_Q4_1: case SQZ_TYPE_Q5_1: return SQZ_TYPE_Q8_1;
    case SQZ_TYPE_Q2_K: case SQZ_TYPE_Q3_K: case SQZ_TYPE_Q4_K: case SQZ_TYPE_Q5_K: case SQZ_TYPE_Q6_K:
    case SQZ_TYPE_IQ4_XS:
    case 16: case 17: case 18: case 19: case 21: case 22: case 29: /* IQ2_XXS IQ2_XS IQ3_XXS IQ1_S IQ3_S IQ2_S IQ1_M */
    case 34: case 35:                                               /* TQ1_0 TQ2_0 */
        return SQZ_TYPE_Q8_K;
    case SQZ_TYPE_F16: return SQZ_TYPE_F16;
    case SQZ_TYPE_BF16: return SQZ_TYPE_BF16;
    default: return -1;
    }
}

/* y = x rounded to `act` and back, n values (a multiple of the block). Q8_0/Q8_1: blocks
 * of 32, d = amax/127 stored as f16, levels x·(127/amax) rounded half to even (ggml's
 * AVX path; these details move a perplexity by tenths of a percent); Q8_K: blocks of 256, scale
 * -127/max (max the signed value of largest magnitude) kept in f32. */
static void round_acts(int act, const float *x, float *y, int64_t n) {
    if (act == SQZ_TYPE_F16) {
        for (int64_t i = 0; i < n; i++) y[i] = sqz_f16_to_f32(sqz_f32_to_f16(x[i]));
        return;
    }
    if (act == SQZ_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) y[i] = sqz_bf16_to_f32(sqz_f32_to_bf16(x[i]));
        return;
    }
    int64_t bs = act == SQZ_TYPE_Q8_K ? 256 : 32;
    for (int64_t b = 0; b < n; b += bs) {
        const float *xb = x + b;
        float *yb = y + b;
        float amax = 0.0f, max = 0.0f;
        for (int64_t j = 0; j < bs; j++)
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
        if (act == SQZ_TYPE_Q8_K) {
            if (amax == 0.0f) { memset(yb, 0, (size_t)bs * sizeof(float)); continue; }
            const float iscale = -127.0f / max, d = 1.0f / iscale;
            for (int64_t j = 0; j < bs; j++) {
                float v = nearbyintf(iscale * xb[j]);
                yb[j] = d * (v > 127.0f ? 127.0f : v);
            }
        } else {
            /* as ggml's x86 quantize_row_q8_0: id = 127/amax, rounding half to even */
            const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
            const float dh = sqz_f16_to_f32(sqz_f32_to_f16(d));
            for (int64_t j = 0; j < bs; j++) yb[j] = dh * nearbyintf(xb[j] * id);
        }
    }
}

typedef struct {
    int act;
    const float *x;
    float *y;
    int64_t in;
} round_ctx;

static void round_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const round_ctx *c = vctx;
    round_acts(c->act, c->x + b * c->in, c->y + b * c->in, (e - b) * c->in);
}

/* The input of a product with weights of type `type`: x itself, or x rounded into
 * s->xr when act_rounding asks for llama.cpp's numerics. */
static const float *product_input(fwd_state *s, sqz_pool *pool, const float *x, int64_t T, int64_t in, int type) {
    int act = s->xr ? act_type_of(type) : -1;
    if (act < 0 || (act != SQZ_TYPE_F16 && act != SQZ_TYPE_BF16 && in % (act == SQZ_TYPE_Q8_K ? 256 : 32))) return x;
    round_ctx c = {act, x, s->xr, in};
    sqz_pool_for(pool, T, 16, round_task, &c);
    return s->xr;
}

/* t as f32 from the workspace's slots: dequantized on first use (the mapped data itself
 * for an aligned F32 tensor). A slot is known by the tensor's address and data pointer. */
static const float *cached_weights(fwd_state *s, sqz_pool *pool, const sqz_tensor *t, sqz_err *err) {
    if (!needs_copy(t)) return t->data;
    for (int i = 0; i < WS_SLOTS; i++)
        if (s->wslot[i].t == t && s->wslot[i].data == t->data) return s->wslot[i].buf;
    struct wslot *w = &s->wslot[s->wslot_next];
    s->wslot_next = (s->wslot_next + 1) % WS_SLOTS;
    size_t n = (size_t)sqz_tensor_nelements(t);
    w->t = NULL;
    if (n > w->cap) {
        free(w->buf);
        w->cap = 0;
        if (!(w->buf = malloc(n * sizeof(float)))) {
            sqz_fail(err, "tensor '%s': out of memory for its f32 copy", t->name);
            return NULL;
        }
        w->cap = n;
    }
    if (!weight_rows(w->buf, pool, t, 0, t->ne[1], err)) return NULL;
    w->t = t;
    w->data = t->data;
    return w->buf;
}

/* y_i[T, rows of t_i] = x · t_iᵀ for n (<= 3) weight tensors with the same row length;
 * non-F32 weights are dequantized side by side into the scratch buffer first. */
static int linear_group(fwd_state *s, sqz_pool *pool, const float *x, int n, float *const *y,
                        const sqz_tensor *const *t, sqz_err *err) {
    if (s->xr) { /* llama.cpp's numerics: one rounded input per weight type */
        for (int i = 1; i < n; i++)
            if (act_type_of(t[i]->type) != act_type_of(t[0]->type)) {
                for (int k = 0; k < n; k++)
                    if (linear_group(s, pool, x, 1, &y[k], &t[k], err)) return SQZ_ERR;
                return SQZ_OK;
            }
        x = product_input(s, pool, x, s->T, t[0]->ne[0], t[0]->type);
    }
    matmul_ctx c = {.x = x, .T = s->T, .in = t[0]->ne[0], .n = n};
    float *scratch = s->wbuf;
    for (int i = 0; i < n; i++) {
        const float *w = s->cache ? cached_weights(s, pool, t[i], err) : weight_rows(scratch, pool, t[i], 0, t[i]->ne[1], err);
        if (!w) return SQZ_ERR;
        if (w == scratch) scratch += sqz_tensor_nelements(t[i]);
        c.out[i] = y[i];
        c.w[i] = w;
        c.n_out[i] = c.ldo[i] = t[i]->ne[1];
        c.first_piece[i + 1] = c.first_piece[i] + matmul_tiles(c.T, c.n_out[i]);
    }
    matmul_run(pool, &c);
    return SQZ_OK;
}

/* y[T, rows of t] = x · tᵀ for a whole weight tensor. */
static int linear(fwd_state *s, sqz_pool *pool, float *y, const float *x, const sqz_tensor *t, sqz_err *err) {
    return linear_group(s, pool, x, 1, &y, &t, err);
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    fwd_state *s;
    int n_head, n_head_kv, head_dim;
    int64_t n_blocks;
} att_ctx;

/* One (head, block of query rows): scores = Q·Kᵀ/√d over the keys up to the block's
 * last row, causal mask, softmax, then ·V. */
static void attention_task(void *vctx, int64_t b, int64_t e, int thread) {
    const att_ctx *c = vctx;
    fwd_state *s = c->s;
    int hd = c->head_dim;
    int64_t qw = (int64_t)c->n_head * hd, kvw = (int64_t)c->n_head_kv * hd;
    float *sc = s->scores + (int64_t)thread * ATT_BLOCK * s->T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t task = b; task < e; task++) {
        int h = (int)(task / c->n_blocks);
        int64_t r0 = (task % c->n_blocks) * ATT_BLOCK;
        int64_t r1 = r0 + ATT_BLOCK < s->T ? r0 + ATT_BLOCK : s->T;
        int64_t nq = r1 - r0, nk = r1; /* keys 0..r1-1 are the only ones any row can see */
        int kvh = h / (c->n_head / c->n_head_kv);
        const float *Q = s->q + r0 * qw + (int64_t)h * hd;
        const float *K = s->k + (int64_t)kvh * hd;
        const float *V = s->v + (int64_t)kvh * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, hd, scale, Q, (int)qw, K, (int)kvw,
                    0.0f, sc, (int)nk);
        for (int64_t i = 0; i < nq; i++) {
            float *row = sc + i * nk;
            int64_t seen = r0 + i + 1;
            softmax(row, seen);
            for (int64_t j = seen; j < nk; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, hd, (int)nk, 1.0f, sc, (int)nk, V, (int)kvw,
                    0.0f, s->att + r0 * qw + (int64_t)h * hd, (int)qw);
    }
}

/* ---------------------------------------------------------------- forward */

typedef struct {
    const sqz_model *m;
    fwd_state *s;
    const sqz_layer *L;
    const float *norm_w; /* f32 norm weights of this block */
    int n_head, n_head_kv;
    const float *bq, *bk, *bv; /* f32 biases or NULL */
    const float *qn, *kn;      /* f32 per-head norm weights or NULL */
} rows_ctx;

static void norm_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const rows_ctx *c = vctx;
    int64_t dim = c->m->cfg.dim;
    for (int64_t t = b; t < e; t++)
        sqz_rmsnorm(c->s->xb + t * dim, c->s->x + t * dim, c->norm_w, dim, c->m->cfg.norm_eps);
}

static void rope_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const rows_ctx *c = vctx;
    const sqz_llama_config *cfg = &c->m->cfg;
    int hd = cfg->head_dim, half = hd / 2;
    int64_t qw = (int64_t)c->n_head * hd, kvw = (int64_t)c->n_head_kv * hd;
    for (int64_t t = b; t < e; t++) {
        float *q = c->s->q + t * qw, *k = c->s->k + t * kvw, *v = c->s->v + t * kvw;
        if (c->bq) {
            for (int64_t i = 0; i < qw; i++) q[i] += c->bq[i];
            for (int64_t i = 0; i < kvw; i++) k[i] += c->bk[i], v[i] += c->bv[i];
        }
        if (c->qn) {
            for (int h = 0; h < c->n_head; h++) sqz_rmsnorm(q + (int64_t)h * hd, q + (int64_t)h * hd, c->qn, hd, cfg->norm_eps);
            for (int h = 0; h < c->n_head_kv; h++)
                sqz_rmsnorm(k + (int64_t)h * hd, k + (int64_t)h * hd, c->kn, hd, cfg->norm_eps);
        }
        const float *cs = c->s->rope_cos + t * half, *sn = c->s->rope_sin + t * half;
        rope(q, c->n_head, hd, cs, sn, cfg->rope_mode);
        rope(k, c->n_head_kv, hd, cs, sn, cfg->rope_mode);
    }
}

typedef struct {
    float *hb;
    const float *hb2;
} swiglu_ctx;

static void swiglu_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const swiglu_ctx *c = vctx;
    for (int64_t i = b; i < e; i++) c->hb[i] = silu(c->hb[i]) * c->hb2[i];
}

static void residual_add(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* Small vectors (norm weights) as f32, into a caller buffer of ne[0] floats. */
static const float *vector_f32(const sqz_tensor *t, float *buf, sqz_err *err) {
    if (!needs_copy(t)) return t->data;
    if (sqz_tensor_rows_f32(t, 0, 1, buf, err)) return NULL;
    return buf;
}

/* One transformer block on s->x. hook (may be NULL) sees the input of each group of
 * linear layers before it is used (sqz_fwd_site). */
static int forward_layer(const sqz_model *m, fwd_state *s, sqz_pool *pool, int l, sqz_fwd_hook hook,
                         void *hook_ctx, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    const sqz_layer *L = &m->layers[l];
    int64_t T = s->T, dim = c->dim;
    int nh = c->layer_n_head[l], nkv = c->layer_n_head_kv[l], nff = c->layer_n_ff[l];
    rows_ctx rc = {m, s, L, NULL, nh, nkv, NULL, NULL, NULL, NULL, NULL};
    int hr; /* a hook's SQZ_ERR or SQZ_FWD_STOP, passed up */

    if (nh > 0) {
        if (!(rc.norm_w = vector_f32(L->attn_norm, s->normbuf, err))) return SQZ_ERR;
        sqz_pool_for(pool, T, 16, norm_task, &rc);
        if (hook && (hr = hook(hook_ctx, l, SQZ_SITE_ATTN_IN, s->xb, T, dim, err))) return hr;
        float *qkv_out[3] = {s->q, s->k, s->v};
        const sqz_tensor *qkv_w[3] = {L->wq, L->wk, L->wv};
        if (linear_group(s, pool, s->xb, 3, qkv_out, qkv_w, err)) return SQZ_ERR;
        if (L->bq) {
            int64_t qw = (int64_t)nh * c->head_dim, kvw = (int64_t)nkv * c->head_dim;
            if (!(rc.bq = vector_f32(L->bq, s->biasbuf, err)) || !(rc.bk = vector_f32(L->bk, s->biasbuf + qw, err)) ||
                !(rc.bv = vector_f32(L->bv, s->biasbuf + qw + kvw, err)))
                return SQZ_ERR;
        }
        if (L->q_norm && (!(rc.qn = vector_f32(L->q_norm, s->qknbuf, err)) ||
                          !(rc.kn = vector_f32(L->k_norm, s->qknbuf + c->head_dim, err))))
            return SQZ_ERR;
        sqz_pool_for(pool, T, 16, rope_task, &rc);
        att_ctx ac = {s, nh, nkv, c->head_dim, (T + ATT_BLOCK - 1) / ATT_BLOCK};
        sqz_pool_for(pool, (int64_t)nh * ac.n_blocks, 1, attention_task, &ac);
        if (hook && (hr = hook(hook_ctx, l, SQZ_SITE_ATTN_O_IN, s->att, T, (int64_t)nh * c->head_dim, err))) return hr;
        if (linear(s, pool, s->xb, s->att, L->wo, err)) return SQZ_ERR;
        residual_add(s->x, s->xb, T * dim);
    }
    if (nff > 0) {
        if (!(rc.norm_w = vector_f32(L->ffn_norm, s->normbuf, err))) return SQZ_ERR;
        sqz_pool_for(pool, T, 16, norm_task, &rc);
        if (hook && (hr = hook(hook_ctx, l, SQZ_SITE_FFN_IN, s->xb, T, dim, err))) return hr;
        float *gate_up_out[2] = {s->hb, s->hb2};
        const sqz_tensor *gate_up_w[2] = {L->w_gate, L->w_up};
        if (linear_group(s, pool, s->xb, 2, gate_up_out, gate_up_w, err)) return SQZ_ERR;
        swiglu_ctx sc = {s->hb, s->hb2};
        sqz_pool_for(pool, T * nff, 4096, swiglu_task, &sc);
        if (hook && (hr = hook(hook_ctx, l, SQZ_SITE_FFN_DOWN_IN, s->hb, T, nff, err))) return hr;
        if (linear(s, pool, s->xb, s->hb, L->w_down, err)) return SQZ_ERR;
        residual_add(s->x, s->xb, T * dim);
    }
    return SQZ_OK;
}

static int embed(const sqz_model *m, float *x, const int32_t *tokens, int64_t T, sqz_err *err) {
    const sqz_tensor *e = m->tok_embd;
    int64_t dim = m->cfg.dim;
    for (int64_t t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= m->cfg.n_vocab)
            return sqz_fail(err, "%s: forward: token %d at position %lld outside the vocabulary [0, %d)", m->path,
                            tokens[t], (long long)t, m->cfg.n_vocab);
        if (!needs_copy(e))
            memcpy(x + t * dim, (const float *)e->data + (int64_t)tokens[t] * dim, (size_t)dim * sizeof(float));
        else if (sqz_tensor_rows_f32(e, tokens[t], 1, x + t * dim, err))
            return SQZ_ERR;
    }
    return SQZ_OK;
}

/* Final norm and output head for rows [from, T); a non-F32 head in chunks of rows. */
static int head(const sqz_model *m, fwd_state *s, sqz_pool *pool, int64_t from, float *logits, sqz_err *err) {
    int64_t dim = m->cfg.dim, V = m->cfg.n_vocab, n = s->T - from;
    if (n <= 0) return SQZ_OK;
    const float *w = vector_f32(m->out_norm, s->normbuf, err);
    if (!w) return SQZ_ERR;
    for (int64_t t = from; t < s->T; t++)
        sqz_rmsnorm(s->xb + (t - from) * dim, s->x + t * dim, w, dim, m->cfg.norm_eps);
    const float *xin = s->xr ? product_input(s, pool, s->xb, n, dim, m->output->type) : s->xb;
    int64_t chunk = needs_copy(m->output) ? HEAD_CHUNK_ROWS : V;
    for (int64_t r0 = 0; r0 < V; r0 += chunk) {
        int64_t nr = r0 + chunk < V ? chunk : V - r0;
        const float *wr = weight_rows(s->wbuf, pool, m->output, r0, nr, err);
        if (!wr) return SQZ_ERR;
        matmul_ctx c = {.x = xin, .T = n, .in = dim, .n = 1, .out = {logits + r0}, .w = {wr}, .n_out = {nr},
                        .ldo = {V}, .first_piece = {0, matmul_tiles(n, nr)}};
        matmul_run(pool, &c);
    }
    return SQZ_OK;
}

static int check_tokens(const sqz_model *m, int64_t n_tokens, sqz_err *err) {
    if (n_tokens <= 0 || n_tokens > INT32_MAX / 2)
        return sqz_fail(err, "%s: forward: %lld tokens (expected 1 .. %d)", m->path, (long long)n_tokens, INT32_MAX / 2);
    return SQZ_OK;
}

/* Set-up shared by the whole-model and the per-layer entry points: buffers, RoPE table,
 * and OpenBLAS single-threaded (the pool provides all parallelism; OpenBLAS threads on
 * top would oversubscribe). fwd_end undoes it; it is safe after a failed fwd_begin. */
static int fwd_begin(fwd_state *s, const sqz_model *m, sqz_pool *pool, int64_t n_tokens, sqz_err *err) {
    memset(s, 0, sizeof *s);
    s->blas_threads = -1;
    if (check_tokens(m, n_tokens, err)) return SQZ_ERR;
    if (state_alloc(s, m, n_tokens, pool ? sqz_pool_threads(pool) : 1, 0, err)) return SQZ_ERR;
    s->blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    rope_table(s->rope_cos, s->rope_sin, n_tokens, m->cfg.head_dim, m->cfg.rope_theta, m->cfg.rope_freqs);
    return SQZ_OK;
}

static void fwd_end(fwd_state *s) {
    if (s->blas_threads > 0) openblas_set_num_threads(s->blas_threads);
    state_free(s);
}

int sqz_forward(const sqz_model *m, sqz_pool *pool, const int32_t *tokens, int64_t n_tokens, int64_t logits_from,
                float *logits, sqz_err *err) {
    if (logits_from < 0 || logits_from > n_tokens)
        return sqz_fail(err, "%s: forward: logits_from %lld outside [0, %lld]", m->path, (long long)logits_from,
                        (long long)n_tokens);
    fwd_state s;
    int rc = SQZ_ERR;
    if (fwd_begin(&s, m, pool, n_tokens, err)) goto done;
    if (embed(m, s.x, tokens, n_tokens, err)) goto done;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (forward_layer(m, &s, pool, l, NULL, NULL, err)) goto done;
    if (head(m, &s, pool, logits_from, logits, err)) goto done;
    rc = SQZ_OK;
done:
    fwd_end(&s);
    return rc;
}

/* ---------------------------------------------------------------- per layer */

int sqz_forward_embed(const sqz_model *m, const int32_t *tokens, int64_t n_tokens, float *x, sqz_err *err) {
    if (check_tokens(m, n_tokens, err)) return SQZ_ERR;
    return embed(m, x, tokens, n_tokens, err);
}

int sqz_forward_layer(const sqz_model *m, sqz_pool *pool, int layer, float *x, int64_t n_tokens, sqz_fwd_hook hook,
                      void *hook_ctx, sqz_err *err) {
    if (layer < 0 || layer >= m->cfg.n_layer)
        return sqz_fail(err, "%s: forward: layer %d outside [0, %d)", m->path, layer, m->cfg.n_layer);
    fwd_state s;
    int rc = SQZ_ERR;
    if (fwd_begin(&s, m, pool, n_tokens, err)) goto done;
    memcpy(s.x, x, (size_t)(n_tokens * m->cfg.dim) * sizeof(float));
    rc = forward_layer(m, &s, pool, layer, hook, hook_ctx, err);
    if (rc == SQZ_FWD_STOP) rc = SQZ_OK; /* x stays as it came in */
    else if (rc == SQZ_OK) memcpy(x, s.x, (size_t)(n_tokens * m->cfg.dim) * sizeof(float));
done:
    fwd_end(&s);
    return rc;
}

struct sqz_fwd_ws {
    sqz_pool *pool;
    int64_t max_T;
    sqz_llama_config cfg; /* the shapes it was made for */
    fwd_state s;
};

int sqz_fwd_ws_create(const sqz_model *m, sqz_pool *pool, int64_t max_tokens, sqz_fwd_ws **out, sqz_err *err) {
    *out = NULL;
    if (check_tokens(m, max_tokens, err)) return SQZ_ERR;
    sqz_fwd_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return sqz_fail(err, "%s: forward: out of memory", m->path);
    ws->pool = pool;
    ws->max_T = max_tokens;
    ws->cfg = m->cfg;
    if (state_alloc(&ws->s, m, max_tokens, pool ? sqz_pool_threads(pool) : 1, 1, err)) {
        sqz_fwd_ws_free(ws);
        return SQZ_ERR;
    }
    rope_table(ws->s.rope_cos, ws->s.rope_sin, max_tokens, m->cfg.head_dim, m->cfg.rope_theta, m->cfg.rope_freqs);
    *out = ws;
    return SQZ_OK;
}

void sqz_fwd_ws_free(sqz_fwd_ws *ws) {
    if (!ws) return;
    state_free(&ws->s);
    free(ws);
}

void sqz_fwd_ws_forget(sqz_fwd_ws *ws) {
    for (int i = 0; ws && i < WS_SLOTS; i++) {
        free(ws->s.wslot[i].buf);
        memset(&ws->s.wslot[i], 0, sizeof ws->s.wslot[i]);
    }
}

int sqz_forward_layer_ws(sqz_fwd_ws *ws, const sqz_model *m, int layer, float *x, int64_t n_tokens, sqz_fwd_hook hook,
                         void *hook_ctx, sqz_err *err) {
    if (layer < 0 || layer >= m->cfg.n_layer)
        return sqz_fail(err, "%s: forward: layer %d outside [0, %d)", m->path, layer, m->cfg.n_layer);
    if (n_tokens < 1 || n_tokens > ws->max_T || m->cfg.dim != ws->cfg.dim || m->cfg.n_layer != ws->cfg.n_layer ||
        m->cfg.layer_n_ff[layer] > ws->cfg.layer_n_ff[layer] || m->cfg.layer_n_head[layer] > ws->cfg.layer_n_head[layer])
        return sqz_fail(err, "%s: forward: %lld tokens or shapes beyond the workspace's (%lld tokens)", m->path,
                        (long long)n_tokens, (long long)ws->max_T);
    fwd_state *s = &ws->s;
    s->T = n_tokens; /* the rope table covers max_T positions; a window uses its first T */
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    memcpy(s->x, x, (size_t)(n_tokens * m->cfg.dim) * sizeof(float));
    int rc = forward_layer(m, s, ws->pool, layer, hook, hook_ctx, err);
    if (rc == SQZ_FWD_STOP) rc = SQZ_OK; /* x stays as it came in */
    else if (rc == SQZ_OK) memcpy(x, s->x, (size_t)(n_tokens * m->cfg.dim) * sizeof(float));
    openblas_set_num_threads(blas_threads);
    return rc;
}

double sqz_forward_flops(const sqz_model *m, int layer, int64_t T) {
    const sqz_llama_config *c = &m->cfg;
    double t = (double)T;
    if (layer < 0) return 2.0 * t * c->dim * (double)c->n_vocab;
    double nh = c->layer_n_head[layer], nkv = c->layer_n_head_kv[layer], hd = c->head_dim, ff = c->layer_n_ff[layer];
    double lin = (double)c->dim * (nh * hd * 2 + nkv * hd * 2) + 3.0 * c->dim * ff; /* q, o; k, v; gate, up, down */
    return 2.0 * t * lin + 2.0 * nh * hd * t * (t + 1); /* QKᵀ and PV: 2 · hd · T(T+1)/2 each */
}

/* ---------------------------------------------------------------- a block for a backend */

int sqz_block_load_layer(sqz_block_pass *p, const sqz_model *m, int layer, sqz_pool *pool, sqz_err *err) {
    sqz_block_desc d;
    float *buf = NULL;
    int rc = sqz_block_desc_f32(m, layer, pool, &d, &buf, err) || sqz_block_pass_load(p, &d, err);
    free(buf);
    return rc ? SQZ_ERR : SQZ_OK;
}

void sqz_block_desc_widest(const sqz_model *m, sqz_block_desc *w) {
    memset(w, 0, sizeof *w);
    w->dim = m->cfg.dim;
    w->head_dim = m->cfg.head_dim;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        if (m->cfg.layer_n_head[l] > w->n_head) w->n_head = m->cfg.layer_n_head[l];
        if (m->cfg.layer_n_head_kv[l] > w->n_head_kv) w->n_head_kv = m->cfg.layer_n_head_kv[l];
        if (m->cfg.layer_n_ff[l] > w->n_ff) w->n_ff = m->cfg.layer_n_ff[l];
    }
}

/* Rows [b, e) of one tensor into its f32 copy, on a pool thread. */
typedef struct {
    const sqz_tensor *t;
    float *dst;
    int failed;
} desc_rows_job;

static void desc_rows_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    desc_rows_job *j = vctx;
    sqz_err err;
    if (sqz_tensor_rows_f32(j->t, b, e - b, j->dst + b * j->t->ne[0], &err)) j->failed = 1;
}

int sqz_tensor_f32_pool(sqz_pool *pool, const sqz_tensor *t, float *dst, sqz_err *err) {
    int64_t rows = sqz_tensor_nelements(t) / t->ne[0];
    desc_rows_job j = {t, dst, 0};
    sqz_pool_for(pool, rows, 16, desc_rows_task, &j);
    if (j.failed) return sqz_fail(err, "tensor '%s': cannot dequantize type %d", t->name, t->type);
    return SQZ_OK;
}

int sqz_block_desc_f32(const sqz_model *m, int layer, sqz_pool *pool, sqz_block_desc *d, float **buf, sqz_err *err) {
    *buf = NULL;
    memset(d, 0, sizeof *d);
    if (layer < 0 || layer >= m->cfg.n_layer)
        return sqz_fail(err, "%s: block %d of %d layers", m->path, layer, m->cfg.n_layer);
    const sqz_llama_config *c = &m->cfg;
    const sqz_layer *L = &m->layers[layer];
    d->dim = c->dim;
    d->n_head = c->layer_n_head[layer];
    d->n_head_kv = c->layer_n_head_kv[layer];
    d->head_dim = c->head_dim;
    d->n_ff = c->layer_n_ff[layer];
    d->norm_eps = c->norm_eps;
    d->rope_half = c->rope_mode == SQZ_ROPE_HALF;
    d->rope_theta = c->rope_theta;
    d->rope_freqs = c->rope_freqs;
    /* every tensor the block has, in one buffer */
    const sqz_tensor *src[14] = {NULL};
    const float **dst[14] = {NULL};
    int n = 0;
    if (d->n_head > 0) {
        const sqz_tensor *t[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->q_norm, L->k_norm};
        const float **p[] = {&d->attn_norm, &d->wq, &d->wk, &d->wv, &d->wo, &d->bq, &d->bk, &d->bv, &d->q_norm, &d->k_norm};
        for (int i = 0; i < 10; i++)
            if (t[i]) src[n] = t[i], dst[n++] = p[i];
    }
    if (d->n_ff > 0) {
        const sqz_tensor *t[] = {L->ffn_norm, L->w_gate, L->w_up, L->w_down};
        const float **p[] = {&d->ffn_norm, &d->w_gate, &d->w_up, &d->w_down};
        for (int i = 0; i < 4; i++)
            if (t[i]) src[n] = t[i], dst[n++] = p[i];
    }
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += sqz_tensor_nelements(src[i]);
    float *b = malloc((size_t)(total > 0 ? total : 1) * sizeof(float));
    if (!b) return sqz_fail(err, "%s: block %d: out of memory for its f32 weights (%lld floats)", m->path, layer,
                            (long long)total);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (sqz_tensor_f32_pool(pool, src[i], b + off, err)) {
            free(b);
            return SQZ_ERR;
        }
        *dst[i] = b + off;
        off += sqz_tensor_nelements(src[i]);
    }
    *buf = b;
    return SQZ_OK;
}

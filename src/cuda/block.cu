/* A decoder block's forward pass on the GPU (include/sqz/backend.h, sqz_block_pass):
 * the same steps as src/model/forward.c's forward_layer, in the same precision —
 *   RMSNorm → q, k, v (+ bias) → per-head RMSNorm of q, k → RoPE → causal GQA attention
 *   → o → residual → RMSNorm → gate, up → SiLU(gate)·up → down → residual —
 * with the seven products and attention's two as cuBLAS SGEMMs (FP32, no TF32: the
 * handle is in pedantic math mode) and the rest as small kernels. One block's weights are
 * resident (loaded once, run over every window); the window's activations and the
 * attention scores of all its heads live in a workspace sized at open.
 *
 * Layouts: activations row-major [T, width], as on the CPU. cuBLAS is column-major, so a
 * row-major [T, w] array is a w × T matrix: Y = X·Wᵀ is Yᶜ(out × T) = Wᶜᵀ(out × in)·Xᶜ(in × T)
 * with W row-major [out, in] = Wᶜ (in × out). */
#include "cuda_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 256
#define SQZ_CUDA_MAX_W 16 /* token-weighted Grams per run (backend.c's SQZ_BLOCK_MAX_WSITES) */

struct sqz_cuda_block {
    sqz_cuda *c;
    int64_t max_T;
    sqz_block_desc widest;
    sqz_block_desc cur;      /* the loaded block's shapes (its host pointers are never read after load) */
    int loaded, has_bias, has_qk_norm;
    /* weights, device */
    float *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *q_norm, *k_norm, *wo;
    float *ffn_norm, *w_gate, *w_up, *w_down;
    /* activations, device */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *scores;
    float *rope_cos, *rope_sin; /* [max_T, head_dim/2] for the loaded block's RoPE */
    float *wts;                 /* [SQZ_CUDA_MAX_W, max_T]: the window's token weights */
    float *xw;                  /* [max_T, widest site]: a site's rows scaled by √w_t */
    float *saved[SQZ_BLOCK_SITES]; /* [max_T, site width]: inputs kept by a run with save (made then) */
    int64_t saved_T;            /* the tokens of the saved window (0: none) */
    const sqz_cuda_block_io *io;   /* this run's Grams */
    /* the backward pass's (made by its first call): kept activations, gradients, and the
     * host arrays a hook reads */
    int grad_ready;
    float *xm, *nb_f, *act, *q_pre, *k_pre; /* x after attention, FFN's normed input, SiLU(gate)·up */
    float *dxd, *dn, *dgate, *dup, *datt, *dq, *dk, *dv, *dtmp, *dscores;
    float *hx, *hg;             /* pinned host, [max_T, widest of dim, q width, ffn] each */
    size_t host_bytes;
    double rope_theta;          /* what the tables were made for (NaN: none yet) */
    const float *rope_freqs_of; /* host pointer the tables were made from */
    /* every allocation with its size, for freeing */
    struct alloc { void **p; size_t bytes; } allocs[64];
    int n_allocs;
};

/* ---------------------------------------------------------------- kernels */

/* The sum of v over the block's threads (THREADS of them), in every thread. */
static __device__ double block_sum(double v, double *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    double r = shared[0];
    __syncthreads();
    return r;
}

static __device__ float block_max(float v, float *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

/* One row of n per block: out = x / sqrt(mean(x²) + eps) · w, the sum of squares in
 * double (sqz_rmsnorm). out may be x. */
static __global__ void k_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    __shared__ double sh[THREADS];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *yr = out + (int64_t)blockIdx.x * n;
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += THREADS) ss += (double)xr[i] * xr[i];
    ss = block_sum(ss, sh);
    const float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = threadIdx.x; i < n; i += THREADS) yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

/* y[r, i] += b[i] for rows × w. */
static __global__ void k_add_bias(float *y, const float *b, int64_t rows, int64_t w) {
    int64_t i = (int64_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < rows * w) y[i] += b[i % w];
}

/* One token per block: its n_heads heads rotated by the token's angles. */
/* sign 1 rotates by +angle; -1 by -angle (the transpose, on gradients). */
static __global__ void k_rope(float *v, int64_t width, int n_heads, int head_dim, const float *cosv,
                              const float *sinv, int rope_half, float sign) {
    const int half = head_dim / 2;
    float *row = v + (int64_t)blockIdx.x * width;
    const float *cs = cosv + (int64_t)blockIdx.x * half, *sn = sinv + (int64_t)blockIdx.x * half;
    for (int k = threadIdx.x; k < n_heads * half; k += THREADS) {
        int h = k / half, i = k % half;
        int a = rope_half ? i : 2 * i, b = rope_half ? i + half : 2 * i + 1;
        float *hv = row + (int64_t)h * head_dim;
        float x0 = hv[a], x1 = hv[b], s = sign * sn[i];
        hv[a] = __fsub_rn(__fmul_rn(x0, cs[i]), __fmul_rn(x1, s));
        hv[b] = __fadd_rn(__fmul_rn(x1, cs[i]), __fmul_rn(x0, s));
    }
}

/* Row i of head h's scores (grid: T rows × n_head): softmax over keys 0..i, the max
 * subtracted first and the sum in double; keys after i (the causal mask) set to 0. */
static __global__ void k_softmax_causal(float *scores, int64_t T) {
    __shared__ double shd[THREADS];
    __shared__ float shf[THREADS];
    const int64_t i = blockIdx.x;
    float *row = scores + ((int64_t)blockIdx.y * T + i) * T;
    const int64_t seen = i + 1;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < seen; j += THREADS) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, shf);
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < seen; j += THREADS) {
        float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    sum = block_sum(sum, shd);
    const float inv = (float)(1.0 / sum);
    for (int64_t j = threadIdx.x; j < T; j += THREADS) row[j] = j < seen ? row[j] * inv : 0.0f;
}

/* out = silu(gate) · up, elementwise (out may be gate). */
static __global__ void k_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = __fmul_rn(g / (1.0f + expf(-g)), up[i]);
    }
}

/* The SwiGLU's backward, as grad.c's: with s = σ(g), d up = d act · g·s and
 * d gate = d act · up · s · (1 + g·(1 − s)); dgate may be dact. */
static __global__ void k_swiglu_bwd(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                                    int64_t n) {
    int64_t i = (int64_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g)), da = dact[i];
        dup[i] = da * (g * s);
        dgate[i] = da * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

/* One row of n per block: dx += ∂(x·r·w)/∂x applied to dy, r·u − r³·x·(u·x)/n with
 * u = dy ⊙ w, the sums in double (grad.c's rmsnorm_rows_bwd). */
static __global__ void k_rmsnorm_bwd(float *dx, const float *x, const float *w, const float *dy, int64_t n,
                                     float eps) {
    __shared__ double sh[THREADS];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * n, *dyr = dy + r * n;
    float *dxr = dx + r * n;
    double ss = 0.0, ux = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += THREADS) {
        ss += (double)xr[i] * xr[i];
        ux += (double)dyr[i] * w[i] * xr[i];
    }
    ss = block_sum(ss, sh);
    ux = block_sum(ux, sh);
    const double rs = 1.0 / sqrt(ss / (double)n + (double)eps);
    const float a = (float)rs, b = (float)(rs * rs * rs * ux / (double)n);
    for (int64_t i = threadIdx.x; i < n; i += THREADS) dxr[i] += a * dyr[i] * w[i] - b * xr[i];
}

/* Row i of head h (grid: T rows × n_head): dS = P ⊙ (dP − Σ_j P·dP) over keys 0..i, in
 * place of dP; keys after i 0. */
static __global__ void k_softmax_bwd(float *dscores, const float *scores, int64_t T) {
    __shared__ double sh[THREADS];
    const int64_t i = blockIdx.x;
    const float *p = scores + ((int64_t)blockIdx.y * T + i) * T;
    float *dp = dscores + ((int64_t)blockIdx.y * T + i) * T;
    double d = 0.0;
    for (int64_t j = threadIdx.x; j <= i; j += THREADS) d += (double)p[j] * dp[j];
    const float df = (float)block_sum(d, sh);
    for (int64_t j = threadIdx.x; j < T; j += THREADS) dp[j] = j <= i ? p[j] * (dp[j] - df) : 0.0f;
}

/* x += y, elementwise. */
/* out[t, i] = √w[t] · x[t, i], the root in double then rounded, as calib.c's CPU path. */
static __global__ void k_scale_rows(float *out, const float *x, const float *w, int64_t T, int64_t width) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * width) return;
    out[i] = (float)sqrt((double)w[i / width]) * x[i];
}

static __global__ void k_add(float *x, const float *y, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) x[i] += y[i];
}

static unsigned blocks_for(int64_t n) { return (unsigned)((n + THREADS - 1) / THREADS); }

/* ---------------------------------------------------------------- memory */

static int palloc(sqz_cuda_block *p, float **ptr, int64_t n_floats, const char *what, sqz_err *err) {
    *ptr = NULL;
    if (n_floats <= 0) return SQZ_OK;
    if (p->n_allocs == (int)(sizeof p->allocs / sizeof p->allocs[0]))
        return sqz_fail(err, "cuda: block pass: too many buffers");
    size_t bytes = (size_t)n_floats * sizeof(float);
    if (sqz_cu_alloc(p->c, (void **)ptr, bytes, what, err)) return SQZ_ERR;
    p->allocs[p->n_allocs].p = (void **)ptr;
    p->allocs[p->n_allocs].bytes = bytes;
    p->n_allocs++;
    return SQZ_OK;
}

void sqz_cuda_block_close(sqz_cuda_block *p) {
    if (!p) return;
    for (int i = 0; i < p->n_allocs; i++) sqz_cu_free(p->c, *p->allocs[i].p, p->allocs[i].bytes);
    if (p->hx) cudaFreeHost(p->hx);
    if (p->hg) cudaFreeHost(p->hg);
    free(p);
}

int sqz_cuda_block_open(sqz_cuda *c, int64_t max_T, const sqz_block_desc *w, sqz_cuda_block **out, sqz_err *err) {
    *out = NULL;
    if (max_T <= 0 || w->dim <= 0 || w->n_head < 0 || w->n_head_kv < 0 || w->n_ff < 0 ||
        (w->n_head > 0 && (w->head_dim <= 0 || w->head_dim % 2 || w->n_head_kv <= 0 || w->n_head % w->n_head_kv)))
        return sqz_fail(err, "cuda: block pass: bad shapes (T %lld, dim %lld, heads %d/%d of %d, ffn %lld)",
                        (long long)max_T, (long long)w->dim, w->n_head, w->n_head_kv, w->head_dim,
                        (long long)w->n_ff);
    sqz_cuda_block *p = (sqz_cuda_block *)calloc(1, sizeof *p);
    if (!p) return sqz_fail(err, "cuda: out of host memory");
    p->c = c;
    p->max_T = max_T;
    p->widest = *w;
    p->rope_theta = NAN;
    const int64_t T = max_T, dim = w->dim, hd = w->head_dim, ff = w->n_ff;
    const int64_t qw = (int64_t)w->n_head * hd, kvw = (int64_t)w->n_head_kv * hd;
    char what[160];
    snprintf(what, sizeof what, "a decoder block's weights (dim %lld, q %lld, kv %lld, ffn %lld)", (long long)dim,
             (long long)qw, (long long)kvw, (long long)ff);
    int bad = palloc(p, &p->attn_norm, qw ? dim : 0, what, err) || palloc(p, &p->wq, qw * dim, what, err) ||
              palloc(p, &p->wk, kvw * dim, what, err) || palloc(p, &p->wv, kvw * dim, what, err) ||
              palloc(p, &p->bq, qw, what, err) || palloc(p, &p->bk, kvw, what, err) ||
              palloc(p, &p->bv, kvw, what, err) || palloc(p, &p->q_norm, qw ? hd : 0, what, err) ||
              palloc(p, &p->k_norm, qw ? hd : 0, what, err) || palloc(p, &p->wo, dim * qw, what, err) ||
              palloc(p, &p->ffn_norm, ff ? dim : 0, what, err) || palloc(p, &p->w_gate, ff * dim, what, err) ||
              palloc(p, &p->w_up, ff * dim, what, err) || palloc(p, &p->w_down, dim * ff, what, err);
    if (!bad) {
        snprintf(what, sizeof what, "a window's activations (%lld tokens, %d heads: scores %.1f MiB)", (long long)T,
                 w->n_head, (double)w->n_head * (double)T * (double)T * 4.0 / 1048576.0);
        bad = palloc(p, &p->x, T * dim, what, err) || palloc(p, &p->xb, T * dim, what, err) ||
              palloc(p, &p->q, T * qw, what, err) || palloc(p, &p->k, T * kvw, what, err) ||
              palloc(p, &p->v, T * kvw, what, err) || palloc(p, &p->att, T * qw, what, err) ||
              palloc(p, &p->hb, T * ff, what, err) || palloc(p, &p->hb2, T * ff, what, err) ||
              palloc(p, &p->scores, (int64_t)w->n_head * T * T, what, err) ||
              palloc(p, &p->rope_cos, qw ? T * (hd / 2) : 0, what, err) ||
              palloc(p, &p->rope_sin, qw ? T * (hd / 2) : 0, what, err);
    }
    if (!bad) {
        int64_t wide = dim > qw ? dim : qw;
        if (ff > wide) wide = ff;
        snprintf(what, sizeof what, "token-weighted rows (%lld tokens, width %lld)", (long long)T, (long long)wide);
        bad = palloc(p, &p->wts, SQZ_CUDA_MAX_W * T, what, err) || palloc(p, &p->xw, T * wide, what, err);
    }
    if (bad) {
        sqz_cuda_block_close(p);
        return SQZ_ERR;
    }
    *out = p;
    return SQZ_OK;
}

/* ---------------------------------------------------------------- load */

static int upload(sqz_cuda_block *p, float *dst, const float *src, int64_t n, const char *what, sqz_err *err) {
    if (n <= 0) return SQZ_OK;
    if (!src) return sqz_fail(err, "cuda: block pass: %s missing", what);
    cudaError_t e = cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, p->c->stream);
    if (e != cudaSuccess) {
        char stage[96];
        snprintf(stage, sizeof stage, "copying %s (%lld floats) to the GPU", what, (long long)n);
        return sqz_cu_fail(err, stage, e);
    }
    return SQZ_OK;
}

/* The RoPE tables for positions 0..max_T-1, as src/model/forward.c's rope_table: the
 * angles in double, stored as float. */
static int rope_tables(sqz_cuda_block *p, const sqz_block_desc *d, sqz_err *err) {
    if (p->rope_theta == d->rope_theta && p->rope_freqs_of == d->rope_freqs) return SQZ_OK;
    const int hd = d->head_dim, half = hd / 2;
    const int64_t T = p->max_T;
    float *cs = (float *)malloc((size_t)(T * half) * 2 * sizeof(float));
    if (!cs) return sqz_fail(err, "cuda: out of host memory for the RoPE tables");
    float *sn = cs + T * half;
    for (int i = 0; i < half; i++) {
        double freq = pow(d->rope_theta, -2.0 * i / hd) / (d->rope_freqs ? (double)d->rope_freqs[i] : 1.0);
        for (int64_t t = 0; t < T; t++) {
            double a = (double)t * freq;
            cs[t * half + i] = (float)cos(a);
            sn[t * half + i] = (float)sin(a);
        }
    }
    int rc = upload(p, p->rope_cos, cs, T * half, "the RoPE cosines", err) ||
             upload(p, p->rope_sin, sn, T * half, "the RoPE sines", err);
    cudaError_t e = cudaStreamSynchronize(p->c->stream); /* cs is freed next */
    free(cs);
    if (rc) return SQZ_ERR;
    if (e != cudaSuccess) return sqz_cu_fail(err, "copying the RoPE tables", e);
    p->rope_theta = d->rope_theta;
    p->rope_freqs_of = d->rope_freqs;
    return SQZ_OK;
}

int sqz_cuda_block_load(sqz_cuda_block *p, const sqz_block_desc *d, sqz_err *err) {
    const sqz_block_desc *w = &p->widest;
    if (d->dim != w->dim || d->n_head > w->n_head || d->n_head_kv > w->n_head_kv || d->n_ff > w->n_ff ||
        (d->n_head > 0 && (d->head_dim != w->head_dim || d->n_head_kv <= 0 || d->n_head % d->n_head_kv)))
        return sqz_fail(err,
                        "cuda: block pass: a block of dim %lld, heads %d/%d of %d, ffn %lld does not fit the pass "
                        "(dim %lld, heads %d/%d of %d, ffn %lld)",
                        (long long)d->dim, d->n_head, d->n_head_kv, d->head_dim, (long long)d->n_ff,
                        (long long)w->dim, w->n_head, w->n_head_kv, w->head_dim, (long long)w->n_ff);
    p->loaded = 0;
    const int64_t dim = d->dim, hd = d->head_dim, ff = d->n_ff;
    const int64_t qw = (int64_t)d->n_head * hd, kvw = (int64_t)d->n_head_kv * hd;
    if (qw > 0) {
        if (upload(p, p->attn_norm, d->attn_norm, dim, "attn_norm", err) ||
            upload(p, p->wq, d->wq, qw * dim, "attn_q", err) || upload(p, p->wk, d->wk, kvw * dim, "attn_k", err) ||
            upload(p, p->wv, d->wv, kvw * dim, "attn_v", err) || upload(p, p->wo, d->wo, dim * qw, "attn_output", err))
            return SQZ_ERR;
        if ((d->bq || d->bk || d->bv) &&
            (upload(p, p->bq, d->bq, qw, "attn_q bias", err) || upload(p, p->bk, d->bk, kvw, "attn_k bias", err) ||
             upload(p, p->bv, d->bv, kvw, "attn_v bias", err)))
            return SQZ_ERR;
        if ((d->q_norm || d->k_norm) && (upload(p, p->q_norm, d->q_norm, hd, "attn_q_norm", err) ||
                                         upload(p, p->k_norm, d->k_norm, hd, "attn_k_norm", err)))
            return SQZ_ERR;
        if (rope_tables(p, d, err)) return SQZ_ERR;
    }
    if (ff > 0 && (upload(p, p->ffn_norm, d->ffn_norm, dim, "ffn_norm", err) ||
                   upload(p, p->w_gate, d->w_gate, ff * dim, "ffn_gate", err) ||
                   upload(p, p->w_up, d->w_up, ff * dim, "ffn_up", err) ||
                   upload(p, p->w_down, d->w_down, dim * ff, "ffn_down", err)))
        return SQZ_ERR;
    /* the host arrays may go once load returns */
    cudaError_t e = cudaStreamSynchronize(p->c->stream);
    if (e != cudaSuccess) return sqz_cu_fail(err, "block pass: loading a block", e);
    p->cur = *d;
    p->has_bias = d->bq != NULL;
    p->has_qk_norm = d->q_norm != NULL;
    p->loaded = 1;
    return SQZ_OK;
}

/* ---------------------------------------------------------------- run */

/* y[T, out] = x[T, in] · Wᵀ with W row-major [out, in] (all on the device). */
static int linear(sqz_cuda_block *p, float *y, const float *x, const float *W, int64_t T, int64_t in, int64_t out,
                  const char *what, sqz_err *err) {
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = cublasSgemm(p->c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)T, (int)in, &one, W, (int)in,
                                   x, (int)in, &zero, y, (int)out);
    if (s != CUBLAS_STATUS_SUCCESS) {
        char stage[128];
        snprintf(stage, sizeof stage, "block pass: %s (%lld × %lld by %lld tokens)", what, (long long)out,
                 (long long)in, (long long)T);
        return sqz_cu_blas_fail(err, stage, s);
    }
    return SQZ_OK;
}

static int launched(const char *what, sqz_err *err) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return SQZ_OK;
    char stage[96];
    snprintf(stage, sizeof stage, "block pass: %s", what);
    return sqz_cu_fail(err, stage, e);
}

/* The block's input x[T, width] at site s: into its Gram, every token-weighted Gram of
 * that site (rows scaled by √w_t into xw first), its cross Gram against the saved input,
 * and kept as the saved input when the run saves. */
static int site(sqz_cuda_block *p, int s, const float *x, int64_t T, int64_t width, sqz_err *err) {
    const sqz_cuda_block_io *io = p->io;
    if (io->sites[s] && sqz_cuda_gram_add_dev(io->sites[s], x, T, err)) return SQZ_ERR;
    for (int i = 0; i < io->n_w; i++) {
        if (io->wsite_of[i] != s) continue;
        k_scale_rows<<<blocks_for(T * width), THREADS, 0, p->c->stream>>>(p->xw, x, p->wts + (int64_t)i * p->max_T,
                                                                          T, width);
        if (launched("token-weighted rows", err) || sqz_cuda_gram_add_dev(io->wacc[i], p->xw, T, err)) return SQZ_ERR;
    }
    if (io->xsites[s]) {
        if (p->saved_T != T || !p->saved[s])
            return sqz_fail(err, "cuda: block pass: a cross Gram at site %d without a saved window of %lld tokens", s,
                            (long long)T);
        if (sqz_cuda_xgram_add_dev(io->xsites[s], p->saved[s], x, T, err)) return SQZ_ERR;
    }
    if (io->save) {
        if (!p->saved[s]) {
            const sqz_block_desc *w = &p->widest;
            int64_t wide = s == 0 || s == 2 ? w->dim : s == 1 ? (int64_t)w->n_head * w->head_dim : w->n_ff;
            if (palloc(p, &p->saved[s], p->max_T * wide, "a window's saved block inputs", err)) return SQZ_ERR;
        }
        cudaError_t e = cudaMemcpyAsync(p->saved[s], x, (size_t)(T * width) * sizeof(float), cudaMemcpyDeviceToDevice,
                                        p->c->stream);
        if (e != cudaSuccess) return sqz_cu_fail(err, "block pass: saving a window's inputs", e);
    }
    return SQZ_OK;
}

/* Causal attention of q (roped) over k, v into att, every head: per group member g of
 * the GQA groups, one strided batch over the kv heads for Q·Kᵀ and one for P·V. */
static int attention(sqz_cuda_block *p, int64_t T, sqz_err *err) {
    const sqz_block_desc *d = &p->cur;
    const int hd = d->head_dim, nh = d->n_head, nkv = d->n_head_kv, group = nh / nkv;
    const int64_t qw = (int64_t)nh * hd, kvw = (int64_t)nkv * hd, TT = T * T;
    const float scale = 1.0f / sqrtf((float)hd), one = 1.0f, zero = 0.0f;
    for (int g = 0; g < group; g++) {
        /* scores of head h = kvh·group + g, column i = query i: Sᶜ(j, i) = Σ_d K[j, d] Q[i, d] */
        cublasStatus_t s = cublasSgemmStridedBatched(
            p->c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)T, (int)T, hd, &scale, p->k, (int)kvw, (long long)hd,
            p->q + (int64_t)g * hd, (int)qw, (long long)group * hd, &zero, p->scores + (int64_t)g * TT, (int)T,
            (long long)group * TT, nkv);
        if (s != CUBLAS_STATUS_SUCCESS) return sqz_cu_blas_fail(err, "block pass: attention scores", s);
    }
    dim3 grid((unsigned)T, (unsigned)nh);
    k_softmax_causal<<<grid, THREADS, 0, p->c->stream>>>(p->scores, T);
    if (launched("attention softmax", err)) return SQZ_ERR;
    for (int g = 0; g < group; g++) {
        /* attᶜ(d, i) of head h = Σ_j Vᶜ(d, j) Sᶜ(j, i) */
        cublasStatus_t s = cublasSgemmStridedBatched(
            p->c->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, (int)T, (int)T, &one, p->v, (int)kvw, (long long)hd,
            p->scores + (int64_t)g * TT, (int)T, (long long)group * TT, &zero, p->att + (int64_t)g * hd, (int)qw,
            (long long)group * hd, nkv);
        if (s != CUBLAS_STATUS_SUCCESS) return sqz_cu_blas_fail(err, "block pass: attention values", s);
    }
    return SQZ_OK;
}

/* The end of a run that leaves x as it was: the queued work done. */
static int finish_run(sqz_cuda_block *p, int64_t T, sqz_err *err) {
    cudaError_t e = cudaStreamSynchronize(p->c->stream);
    if (e != cudaSuccess) return sqz_cu_fail(err, "block pass: the window's pass", e);
    p->saved_T = p->io->save ? T : p->saved_T;
    return SQZ_OK;
}

int sqz_cuda_block_run(sqz_cuda_block *p, float *x, int64_t T, const sqz_cuda_block_io *io, sqz_err *err) {
    if (!p->loaded) return sqz_fail(err, "cuda: block pass: run before a block was loaded");
    if (T <= 0 || T > p->max_T)
        return sqz_fail(err, "cuda: block pass: a window of %lld tokens (the pass holds %lld)", (long long)T,
                        (long long)p->max_T);
    if (io->n_w < 0 || io->n_w > SQZ_CUDA_MAX_W)
        return sqz_fail(err, "cuda: block pass: %d token-weighted Grams (at most %d)", io->n_w, SQZ_CUDA_MAX_W);
    const sqz_block_desc *d = &p->cur;
    cudaStream_t st = p->c->stream;
    const int64_t dim = d->dim, hd = d->head_dim, ff = d->n_ff;
    const int64_t qw = (int64_t)d->n_head * hd, kvw = (int64_t)d->n_head_kv * hd;
    cudaError_t e = cudaMemcpyAsync(p->x, x, (size_t)(T * dim) * sizeof(float), cudaMemcpyHostToDevice, st);
    if (e != cudaSuccess) return sqz_cu_fail(err, "block pass: copying the window to the GPU", e);
    p->io = io;
    for (int i = 0; i < io->n_w; i++) {
        e = cudaMemcpyAsync(p->wts + (int64_t)i * p->max_T, io->w[i], (size_t)T * sizeof(float),
                            cudaMemcpyHostToDevice, st);
        if (e != cudaSuccess) return sqz_cu_fail(err, "block pass: copying token weights to the GPU", e);
    }
    if (qw > 0) {
        k_rmsnorm<<<(unsigned)T, THREADS, 0, st>>>(p->xb, p->x, p->attn_norm, dim, d->norm_eps);
        if (launched("attn_norm", err) || site(p, 0, p->xb, T, dim, err) ||
            linear(p, p->q, p->xb, p->wq, T, dim, qw, "attn_q", err) ||
            linear(p, p->k, p->xb, p->wk, T, dim, kvw, "attn_k", err) ||
            linear(p, p->v, p->xb, p->wv, T, dim, kvw, "attn_v", err))
            return SQZ_ERR;
        if (p->has_bias) {
            k_add_bias<<<blocks_for(T * qw), THREADS, 0, st>>>(p->q, p->bq, T, qw);
            k_add_bias<<<blocks_for(T * kvw), THREADS, 0, st>>>(p->k, p->bk, T, kvw);
            k_add_bias<<<blocks_for(T * kvw), THREADS, 0, st>>>(p->v, p->bv, T, kvw);
            if (launched("q/k/v biases", err)) return SQZ_ERR;
        }
        if (p->has_qk_norm) {
            k_rmsnorm<<<(unsigned)(T * d->n_head), THREADS, 0, st>>>(p->q, p->q, p->q_norm, hd, d->norm_eps);
            k_rmsnorm<<<(unsigned)(T * d->n_head_kv), THREADS, 0, st>>>(p->k, p->k, p->k_norm, hd, d->norm_eps);
            if (launched("q/k norms", err)) return SQZ_ERR;
        }
        k_rope<<<(unsigned)T, THREADS, 0, st>>>(p->q, qw, d->n_head, (int)hd, p->rope_cos, p->rope_sin, d->rope_half,
                                               1.0f);
        k_rope<<<(unsigned)T, THREADS, 0, st>>>(p->k, kvw, d->n_head_kv, (int)hd, p->rope_cos, p->rope_sin,
                                               d->rope_half, 1.0f);
        if (launched("RoPE", err) || attention(p, T, err) || site(p, 1, p->att, T, qw, err) ||
            linear(p, p->xb, p->att, p->wo, T, qw, dim, "attn_output", err))
            return SQZ_ERR;
        k_add<<<blocks_for(T * dim), THREADS, 0, st>>>(p->x, p->xb, T * dim);
        if (launched("attention residual", err)) return SQZ_ERR;
    }
    if (ff > 0) {
        k_rmsnorm<<<(unsigned)T, THREADS, 0, st>>>(p->xb, p->x, p->ffn_norm, dim, d->norm_eps);
        if (launched("ffn_norm", err) || site(p, 2, p->xb, T, dim, err) ||
            linear(p, p->hb, p->xb, p->w_gate, T, dim, ff, "ffn_gate", err) ||
            linear(p, p->hb2, p->xb, p->w_up, T, dim, ff, "ffn_up", err))
            return SQZ_ERR;
        k_swiglu<<<blocks_for(T * ff), THREADS, 0, st>>>(p->hb, p->hb, p->hb2, T * ff);
        if (launched("SwiGLU", err) || site(p, 3, p->hb, T, ff, err)) return SQZ_ERR;
        if (io->stop_at_down_in) return finish_run(p, T, err);
        if (linear(p, p->xb, p->hb, p->w_down, T, ff, dim, "ffn_down", err)) return SQZ_ERR;
        k_add<<<blocks_for(T * dim), THREADS, 0, st>>>(p->x, p->xb, T * dim);
        if (launched("FFN residual", err)) return SQZ_ERR;
    }
    if (io->stop_at_down_in) return finish_run(p, T, err);
    e = cudaMemcpyAsync(x, p->x, (size_t)(T * dim) * sizeof(float), cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) return sqz_cu_fail(err, "block pass: the window's pass", e);
    p->saved_T = io->save ? T : p->saved_T;
    return SQZ_OK;
}

/* ---------------------------------------------------------------- backward */

/* The backward's buffers, made by its first call: about 3·T·(dim + ffn) + 4·T·q + n_head·T²
 * floats more than the forward's. */
static int grad_alloc(sqz_cuda_block *p, sqz_err *err) {
    if (p->grad_ready) return SQZ_OK;
    const sqz_block_desc *w = &p->widest;
    const int64_t T = p->max_T, dim = w->dim, ff = w->n_ff, hd = w->head_dim;
    const int64_t qw = (int64_t)w->n_head * hd, kvw = (int64_t)w->n_head_kv * hd;
    const int qk_norm = 1; /* a later block may have q/k norms: q_pre, k_pre are small */
    char what[160];
    snprintf(what, sizeof what, "the backward's activations and gradients (%lld tokens, dim %lld, ffn %lld, %d heads)",
             (long long)T, (long long)dim, (long long)ff, w->n_head);
    if (palloc(p, &p->xm, T * dim, what, err) || palloc(p, &p->nb_f, T * dim, what, err) ||
        palloc(p, &p->act, T * ff, what, err) || palloc(p, &p->q_pre, qk_norm ? T * qw : 0, what, err) ||
        palloc(p, &p->k_pre, qk_norm ? T * kvw : 0, what, err) || palloc(p, &p->dxd, T * dim, what, err) ||
        palloc(p, &p->dn, T * dim, what, err) || palloc(p, &p->dgate, T * ff, what, err) ||
        palloc(p, &p->dup, T * ff, what, err) || palloc(p, &p->datt, T * qw, what, err) ||
        palloc(p, &p->dq, T * qw, what, err) || palloc(p, &p->dk, T * kvw, what, err) ||
        palloc(p, &p->dv, T * kvw, what, err) || palloc(p, &p->dtmp, T * qw, what, err) ||
        palloc(p, &p->dscores, (int64_t)w->n_head * T * T, what, err))
        return SQZ_ERR;
    int64_t wide = dim > qw ? dim : qw;
    if (ff > wide) wide = ff;
    p->host_bytes = (size_t)(T * wide) * sizeof(float);
    cudaError_t e = cudaMallocHost((void **)&p->hx, p->host_bytes);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&p->hg, p->host_bytes);
    if (e != cudaSuccess) {
        char stage[128];
        snprintf(stage, sizeof stage, "backward: pinned host arrays for the hooks (2 × %.1f MiB)",
                 (double)p->host_bytes / 1048576.0);
        return sqz_cu_fail(err, stage, e);
    }
    p->grad_ready = 1;
    return SQZ_OK;
}

/* A generic product on the device, column-major as cuBLAS sees it, with the stage named. */
static int gemm(sqz_cuda_block *p, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                int64_t ldc, const char *what, sqz_err *err) {
    cublasStatus_t s = cublasSgemm(p->c->blas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, (int)lda, B, (int)ldb, &beta,
                                   C, (int)ldc);
    if (s != CUBLAS_STATUS_SUCCESS) {
        char stage[128];
        snprintf(stage, sizeof stage, "backward: %s (%lld × %lld by %lld)", what, (long long)m, (long long)n,
                 (long long)k);
        return sqz_cu_blas_fail(err, stage, s);
    }
    return SQZ_OK;
}

/* dx[T, in] (+)= dy[T, out] · W, W row-major [out, in]: dxᶜ(in × T) = Wᶜ(in × out) · dyᶜ. */
static int linear_bwd(sqz_cuda_block *p, float *dx, const float *dy, const float *W, int64_t T, int64_t in, int64_t out,
                      int accumulate, const char *what, sqz_err *err) {
    return gemm(p, CUBLAS_OP_N, CUBLAS_OP_N, in, T, out, 1.0f, W, in, dy, out, accumulate ? 1.0f : 0.0f, dx, in, what,
                err);
}

/* The loaded block's forward from p->x, keeping what the backward reads: the attention's
 * normed input (xb), q/k before their norms, the rotated q, k and v, every head's
 * probabilities (scores), att, the stream after attention (xm), the FFN's normed input
 * (nb_f), gate (hb), up (hb2) and their product (act). The block's output is not formed. */
static int forward_keep(sqz_cuda_block *p, int64_t T, sqz_err *err) {
    const sqz_block_desc *d = &p->cur;
    cudaStream_t st = p->c->stream;
    const int64_t dim = d->dim, hd = d->head_dim, ff = d->n_ff;
    const int64_t qw = (int64_t)d->n_head * hd, kvw = (int64_t)d->n_head_kv * hd;
    cudaError_t e;
    if (qw > 0) {
        k_rmsnorm<<<(unsigned)T, THREADS, 0, st>>>(p->xb, p->x, p->attn_norm, dim, d->norm_eps);
        if (launched("attn_norm", err) || linear(p, p->q, p->xb, p->wq, T, dim, qw, "attn_q", err) ||
            linear(p, p->k, p->xb, p->wk, T, dim, kvw, "attn_k", err) ||
            linear(p, p->v, p->xb, p->wv, T, dim, kvw, "attn_v", err))
            return SQZ_ERR;
        if (p->has_bias) {
            k_add_bias<<<blocks_for(T * qw), THREADS, 0, st>>>(p->q, p->bq, T, qw);
            k_add_bias<<<blocks_for(T * kvw), THREADS, 0, st>>>(p->k, p->bk, T, kvw);
            k_add_bias<<<blocks_for(T * kvw), THREADS, 0, st>>>(p->v, p->bv, T, kvw);
            if (launched("q/k/v biases", err)) return SQZ_ERR;
        }
        if (p->has_qk_norm) {
            e = cudaMemcpyAsync(p->q_pre, p->q, (size_t)(T * qw) * sizeof(float), cudaMemcpyDeviceToDevice, st);
            if (e == cudaSuccess)
                e = cudaMemcpyAsync(p->k_pre, p->k, (size_t)(T * kvw) * sizeof(float), cudaMemcpyDeviceToDevice, st);
            if (e != cudaSuccess) return sqz_cu_fail(err, "backward: keeping q and k", e);
            k_rmsnorm<<<(unsigned)(T * d->n_head), THREADS, 0, st>>>(p->q, p->q_pre, p->q_norm, hd, d->norm_eps);
            k_rmsnorm<<<(unsigned)(T * d->n_head_kv), THREADS, 0, st>>>(p->k, p->k_pre, p->k_norm, hd, d->norm_eps);
            if (launched("q/k norms", err)) return SQZ_ERR;
        }
        k_rope<<<(unsigned)T, THREADS, 0, st>>>(p->q, qw, d->n_head, (int)hd, p->rope_cos, p->rope_sin, d->rope_half,
                                               1.0f);
        k_rope<<<(unsigned)T, THREADS, 0, st>>>(p->k, kvw, d->n_head_kv, (int)hd, p->rope_cos, p->rope_sin,
                                               d->rope_half, 1.0f);
        if (launched("RoPE", err) || attention(p, T, err) ||
            linear(p, p->dn, p->att, p->wo, T, qw, dim, "attn_output", err))
            return SQZ_ERR;
        e = cudaMemcpyAsync(p->xm, p->x, (size_t)(T * dim) * sizeof(float), cudaMemcpyDeviceToDevice, st);
        if (e != cudaSuccess) return sqz_cu_fail(err, "backward: the stream after attention", e);
        k_add<<<blocks_for(T * dim), THREADS, 0, st>>>(p->xm, p->dn, T * dim);
        if (launched("attention residual", err)) return SQZ_ERR;
    } else {
        e = cudaMemcpyAsync(p->xm, p->x, (size_t)(T * dim) * sizeof(float), cudaMemcpyDeviceToDevice, st);
        if (e != cudaSuccess) return sqz_cu_fail(err, "backward: the stream after attention", e);
    }
    if (ff > 0) {
        k_rmsnorm<<<(unsigned)T, THREADS, 0, st>>>(p->nb_f, p->xm, p->ffn_norm, dim, d->norm_eps);
        if (launched("ffn_norm", err) || linear(p, p->hb, p->nb_f, p->w_gate, T, dim, ff, "ffn_gate", err) ||
            linear(p, p->hb2, p->nb_f, p->w_up, T, dim, ff, "ffn_up", err))
            return SQZ_ERR;
        k_swiglu<<<blocks_for(T * ff), THREADS, 0, st>>>(p->act, p->hb, p->hb2, T * ff);
        if (launched("SwiGLU", err)) return SQZ_ERR;
    }
    return SQZ_OK;
}

/* A linear's input x [T, in] and output gradient g [T, out] to the host, then the hook. */
static int hook_site(sqz_cuda_block *p, sqz_block_grad_hook hook, void *ctx, int kind, const float *x, const float *g,
                     int64_t T, int64_t in, int64_t out, sqz_err *err) {
    if (!hook) return SQZ_OK;
    cudaStream_t st = p->c->stream;
    cudaError_t e = cudaMemcpyAsync(p->hx, x, (size_t)(T * in) * sizeof(float), cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaMemcpyAsync(p->hg, g, (size_t)(T * out) * sizeof(float), cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) {
        char stage[128];
        snprintf(stage, sizeof stage, "backward: a linear's input and gradient to the host (%lld tokens, %lld → %lld)",
                 (long long)T, (long long)in, (long long)out);
        return sqz_cu_fail(err, stage, e);
    }
    return hook(ctx, kind, p->hx, p->hg, in, out, err);
}

/* Attention's backward from datt (dL/d att) into dq, dk, dv (before RoPE's transpose):
 *   dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dQ = s·dS K, dK = s·dSᵀ Q,
 * dK and dV summed over each GQA group (β = 1 after its first member). */
static int attention_bwd(sqz_cuda_block *p, int64_t T, sqz_err *err) {
    const sqz_block_desc *d = &p->cur;
    const int hd = d->head_dim, nh = d->n_head, nkv = d->n_head_kv, group = nh / nkv;
    const int64_t qw = (int64_t)nh * hd, kvw = (int64_t)nkv * hd, TT = T * T;
    const float scale = 1.0f / sqrtf((float)hd), one = 1.0f, zero = 0.0f;
    cublasHandle_t h = p->c->blas;
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    for (int g = 0; g < group && s == CUBLAS_STATUS_SUCCESS; g++) {
        const float beta = g ? 1.0f : 0.0f;
        /* dVᶜ(d, j) += Σ_i dOᶜ(d, i) Sᶜ(j, i) */
        s = cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, hd, (int)T, (int)T, &one, p->datt + (int64_t)g * hd,
                                      (int)qw, (long long)group * hd, p->scores + (int64_t)g * TT, (int)T,
                                      (long long)group * TT, &beta, p->dv, (int)kvw, (long long)hd, nkv);
        /* dPᶜ(j, i) = Σ_d Vᶜ(d, j) dOᶜ(d, i) */
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)T, (int)T, hd, &one, p->v, (int)kvw,
                                          (long long)hd, p->datt + (int64_t)g * hd, (int)qw, (long long)group * hd,
                                          &zero, p->dscores + (int64_t)g * TT, (int)T, (long long)group * TT, nkv);
    }
    if (s != CUBLAS_STATUS_SUCCESS) return sqz_cu_blas_fail(err, "backward: attention's dV and dP", s);
    dim3 grid((unsigned)T, (unsigned)nh);
    k_softmax_bwd<<<grid, THREADS, 0, p->c->stream>>>(p->dscores, p->scores, T);
    if (launched("softmax backward", err)) return SQZ_ERR;
    for (int g = 0; g < group && s == CUBLAS_STATUS_SUCCESS; g++) {
        const float beta = g ? 1.0f : 0.0f;
        /* dQᶜ(d, i) = s Σ_j Kᶜ(d, j) dSᶜ(j, i) */
        s = cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, hd, (int)T, (int)T, &scale, p->k, (int)kvw,
                                      (long long)hd, p->dscores + (int64_t)g * TT, (int)T, (long long)group * TT,
                                      &zero, p->dq + (int64_t)g * hd, (int)qw, (long long)group * hd, nkv);
        /* dKᶜ(d, j) += s Σ_i Qᶜ(d, i) dSᶜ(j, i) */
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, hd, (int)T, (int)T, &scale,
                                          p->q + (int64_t)g * hd, (int)qw, (long long)group * hd,
                                          p->dscores + (int64_t)g * TT, (int)T, (long long)group * TT, &beta, p->dk,
                                          (int)kvw, (long long)hd, nkv);
    }
    if (s != CUBLAS_STATUS_SUCCESS) return sqz_cu_blas_fail(err, "backward: attention's dQ and dK", s);
    return SQZ_OK;
}

int sqz_cuda_block_backward(sqz_cuda_block *p, const float *x_in, float *dx, int64_t T, sqz_block_grad_hook hook,
                            void *ctx, sqz_err *err) {
    if (!p->loaded) return sqz_fail(err, "cuda: backward before a block was loaded");
    if (T <= 0 || T > p->max_T)
        return sqz_fail(err, "cuda: backward: a window of %lld tokens (the pass holds %lld)", (long long)T,
                        (long long)p->max_T);
    if (grad_alloc(p, err)) return SQZ_ERR;
    const sqz_block_desc *d = &p->cur;
    cudaStream_t st = p->c->stream;
    const int64_t dim = d->dim, hd = d->head_dim, ff = d->n_ff;
    const int64_t qw = (int64_t)d->n_head * hd, kvw = (int64_t)d->n_head_kv * hd;
    cudaError_t e = cudaMemcpyAsync(p->x, x_in, (size_t)(T * dim) * sizeof(float), cudaMemcpyHostToDevice, st);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(p->dxd, dx, (size_t)(T * dim) * sizeof(float), cudaMemcpyHostToDevice, st);
    if (e != cudaSuccess) return sqz_cu_fail(err, "backward: copying the window and its gradient to the GPU", e);
    if (forward_keep(p, T, err)) return SQZ_ERR;
    if (ff > 0) {
        if (hook_site(p, hook, ctx, 6, p->act, p->dxd, T, ff, dim, err) ||
            linear_bwd(p, p->dgate, p->dxd, p->w_down, T, ff, dim, 0, "ffn_down", err))
            return SQZ_ERR;
        k_swiglu_bwd<<<blocks_for(T * ff), THREADS, 0, st>>>(p->dgate, p->dup, p->dgate, p->hb, p->hb2, T * ff);
        if (launched("SwiGLU backward", err) || hook_site(p, hook, ctx, 4, p->nb_f, p->dgate, T, dim, ff, err) ||
            hook_site(p, hook, ctx, 5, p->nb_f, p->dup, T, dim, ff, err) ||
            linear_bwd(p, p->dn, p->dgate, p->w_gate, T, dim, ff, 0, "ffn_gate", err) ||
            linear_bwd(p, p->dn, p->dup, p->w_up, T, dim, ff, 1, "ffn_up", err) ||
            hook_site(p, hook, ctx, SQZ_BLOCK_NORM_FFN, p->nb_f, p->dn, T, dim, dim, err))
            return SQZ_ERR;
        k_rmsnorm_bwd<<<(unsigned)T, THREADS, 0, st>>>(p->dxd, p->xm, p->ffn_norm, p->dn, dim, d->norm_eps);
        if (launched("ffn_norm backward", err)) return SQZ_ERR;
    }
    if (qw > 0) {
        if (hook_site(p, hook, ctx, 3, p->att, p->dxd, T, qw, dim, err) ||
            linear_bwd(p, p->datt, p->dxd, p->wo, T, qw, dim, 0, "attn_output", err) || attention_bwd(p, T, err))
            return SQZ_ERR;
        k_rope<<<(unsigned)T, THREADS, 0, st>>>(p->dq, qw, d->n_head, (int)hd, p->rope_cos, p->rope_sin,
                                               d->rope_half, -1.0f);
        k_rope<<<(unsigned)T, THREADS, 0, st>>>(p->dk, kvw, d->n_head_kv, (int)hd, p->rope_cos, p->rope_sin,
                                               d->rope_half, -1.0f);
        if (launched("RoPE backward", err)) return SQZ_ERR;
        if (p->has_qk_norm) { /* through the per-head norms: dtmp holds the incoming gradient */
            float *pairs[2][3] = {{p->dq, p->q_pre, p->q_norm}, {p->dk, p->k_pre, p->k_norm}};
            const int64_t rows[2] = {T * d->n_head, T * d->n_head_kv};
            for (int i = 0; i < 2; i++) {
                size_t bytes = (size_t)(rows[i] * hd) * sizeof(float);
                e = cudaMemcpyAsync(p->dtmp, pairs[i][0], bytes, cudaMemcpyDeviceToDevice, st);
                if (e == cudaSuccess) e = cudaMemsetAsync(pairs[i][0], 0, bytes, st);
                if (e != cudaSuccess) return sqz_cu_fail(err, "backward: q/k norms", e);
                k_rmsnorm_bwd<<<(unsigned)rows[i], THREADS, 0, st>>>(pairs[i][0], pairs[i][1], pairs[i][2], p->dtmp,
                                                                     hd, d->norm_eps);
                if (launched("q/k norms backward", err)) return SQZ_ERR;
            }
        }
        if (hook_site(p, hook, ctx, 0, p->xb, p->dq, T, dim, qw, err) ||
            hook_site(p, hook, ctx, 1, p->xb, p->dk, T, dim, kvw, err) ||
            hook_site(p, hook, ctx, 2, p->xb, p->dv, T, dim, kvw, err) ||
            linear_bwd(p, p->dn, p->dq, p->wq, T, dim, qw, 0, "attn_q", err) ||
            linear_bwd(p, p->dn, p->dk, p->wk, T, dim, kvw, 1, "attn_k", err) ||
            linear_bwd(p, p->dn, p->dv, p->wv, T, dim, kvw, 1, "attn_v", err) ||
            hook_site(p, hook, ctx, SQZ_BLOCK_NORM_ATTN, p->xb, p->dn, T, dim, dim, err))
            return SQZ_ERR;
        k_rmsnorm_bwd<<<(unsigned)T, THREADS, 0, st>>>(p->dxd, p->x, p->attn_norm, p->dn, dim, d->norm_eps);
        if (launched("attn_norm backward", err)) return SQZ_ERR;
    }
    e = cudaMemcpyAsync(dx, p->dxd, (size_t)(T * dim) * sizeof(float), cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) return sqz_cu_fail(err, "backward: the input gradient to the host", e);
    return SQZ_OK;
}

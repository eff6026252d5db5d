/* The compute backend: where the heavy operations of calibration and quantization run.
 *
 * One interface, two implementations: the CPU (OpenBLAS/LAPACK on the thread pool, always
 * built) and CUDA (src/cuda/, cuBLAS/cuSOLVER; built with cmake -DSQZ_CUDA=ON). A caller
 * makes one backend per run and passes it down; everything it hands in and gets back is
 * host memory, so a stage moves to the GPU without its callers changing.
 *
 * Operations so far:
 *   Grams      Σ x xᵀ over calibration tokens, accumulated across windows in double
 *              (the GPU keeps the sum resident and returns it once per layer);
 *   GPTQ factor  the upper Cholesky factor of the dampened H⁻¹ (sqz_gptq_factor).
 *   blocks     a decoder block's forward pass over a window, its Gram inputs summed on
 *              the device, and its backward pass (sqz_block_pass; CUDA only: the CPU
 *              runs src/model/forward.c and grad.c), used by the calibration passes and
 *              the gradient pass (sqz_grad_create_on).
 * Still on the CPU whatever the backend (the seam's next steps, docs/architecture.md):
 * the output head's logits and loss, the gradient statistics (from the hook's host
 * arrays), the option scoring, GPTQ's sweep, pruning. */
#ifndef SQZ_BACKEND_H
#define SQZ_BACKEND_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/gptq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SQZ_DEVICE_CPU = 0, SQZ_DEVICE_CUDA = 1 } sqz_device;

/* "cpu" or "cuda" into *d; SQZ_ERR (with a message naming the value) for anything else. */
int sqz_device_parse(const char *s, sqz_device *d, sqz_err *err);
const char *sqz_device_name(sqz_device d);
/* 1 when this build has the CUDA backend (cmake -DSQZ_CUDA=ON). */
int sqz_cuda_built(void);

typedef struct sqz_backend sqz_backend;

/* A backend on device d. pool: the CPU's threads (the CPU backend's parallelism, the
 * CUDA backend's for host-side work); may be NULL. CUDA on a build without it, or on a
 * machine without a usable GPU, is a one-line error. */
int sqz_backend_create(sqz_device d, sqz_pool *pool, sqz_backend **out, sqz_err *err);
void sqz_backend_free(sqz_backend *b);
sqz_device sqz_backend_device(const sqz_backend *b);
/* "cpu, 2 threads" or "cuda: NVIDIA H200 (139.8 GiB, compute 9.0)" */
const char *sqz_backend_describe(const sqz_backend *b);
/* The most device memory this backend has held at once (bytes; 0 on the CPU). */
uint64_t sqz_backend_peak_bytes(const sqz_backend *b);

/* ---------------------------------------------------------------- Grams */

/* One n × n Gram summed into the caller's G (n × n, row-major double, symmetric on
 * entry, usually zero): open on G, add windows, finish. The CPU stages rows and adds
 * the products of each SQZ_GRAM_BATCH of them into G's upper triangle (one SGEMM per
 * block of columns over the whole batch: longer products than a window's, and a
 * fourth of the double additions); the GPU keeps its own sum. Rows are batched in the
 * order they come, so the sum is the same bytes for any thread count. */
#define SQZ_GRAM_BATCH 2048
typedef struct sqz_gram_acc sqz_gram_acc;

/* b NULL: the CPU, on pool's threads (pool may be NULL: the calling thread). */
int sqz_gram_open(sqz_backend *b, sqz_pool *pool, int64_t n, double *G, sqz_gram_acc **out, sqz_err *err);
/* Σ += xᵀx for x (T × n, row-major floats): products in single precision (SGEMM / cuBLAS
 * SSYRK), added into a double sum. */
int sqz_gram_add(sqz_gram_acc *g, const float *x, int64_t T, sqz_err *err);
/* G += the rows' sum since open or the last finish (both triangles); the accumulator
 * starts from zero again. */
int sqz_gram_finish(sqz_gram_acc *g, sqz_err *err);
void sqz_gram_close(sqz_gram_acc *g);

/* The CPU's products (what the accumulator's batches call).
 * G (n × n, row-major, double) += xᵀx for x [T, n]: the upper triangle and the diagonal
 * blocks only (half the products; sqz_gram_mirror fills the rest once the sum is
 * complete), each block's products one SGEMM over the T rows added in double.
 * Bit-identical for any thread count. */
int sqz_gram_upper_add(sqz_pool *pool, const float *x, int64_t T, int64_t n, double *G, sqz_err *err);
/* G's lower triangle ← its upper triangle (on the pool's threads; NULL: the caller's). */
void sqz_gram_mirror(sqz_pool *pool, double *G, int64_t n);
/* The flops of one sqz_gram_upper_add. */
double sqz_gram_flops(int64_t T, int64_t n);

/* ---------------------------------------------------------------- GPTQ */

/* sqz_gptq_factor_init on the backend: the same factor (within float rounding of the
 * factorization's order) in host memory, usable by every sweep. */
int sqz_backend_gptq_factor(sqz_backend *b, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                            sqz_gptq_factor *f, sqz_err *err);

/* A cross Gram on the GPU: C (n × n, host, row-major) += Σ_t a_t b_tᵀ of two streams'
 * inputs at one site, fed only by a block pass (sqz_block_io.xsites) and completed by
 * sqz_gram_finish. The CPU backend refuses: its passes form these products themselves
 * (src/pipeline/quantize_model.c). */
int sqz_xgram_open(sqz_backend *b, int64_t n, double *C, sqz_gram_acc **out, sqz_err *err);

/* ---------------------------------------------------------------- decoder blocks */

/* The input sites of a block, in the order of include/sqz/model.h's sqz_fwd_site: q/k/v's
 * normed input, o's input, gate/up's normed input, down's input. */
#define SQZ_BLOCK_SITES 4

/* One decoder block as a backend runs it: its shapes and f32 weights in host memory
 * (matrices row-major [out][in], as GGUF stores them); NULL where the block has none. */
typedef struct sqz_block_desc {
    int64_t dim;
    int n_head, n_head_kv, head_dim; /* n_head 0: no attention block */
    int64_t n_ff;                    /* 0: no FFN block */
    float norm_eps;
    int rope_half;                   /* 1: pairs (i, i + d/2) (NEOX, rotate-half); 0: (2i, 2i+1) */
    double rope_theta;
    const float *rope_freqs;         /* head_dim/2 divisors of the frequencies (Llama-3), or NULL */
    const float *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *q_norm, *k_norm, *wo;
    const float *ffn_norm, *w_gate, *w_up, *w_down;
} sqz_block_desc;

/* Decoder blocks run on the backend over windows of up to max_T tokens, one block's
 * weights resident at a time. CUDA only: on the CPU the forward pass itself
 * (sqz_forward_layer) is the implementation, and open says so. `widest` gives the
 * largest widths any loaded block will have (its weights are not read). */
typedef struct sqz_block_pass sqz_block_pass;
int sqz_block_pass_open(sqz_backend *b, int64_t max_T, const sqz_block_desc *widest, sqz_block_pass **out,
                        sqz_err *err);
/* Copies block d's weights to the device (they stay until the next load). */
int sqz_block_pass_load(sqz_block_pass *p, const sqz_block_desc *d, sqz_err *err);
/* A token-weighted Gram fed by a block pass: acc += Σ_t w[t] x_t x_tᵀ over the input x of
 * site `site` (0..SQZ_BLOCK_SITES-1), w the window's T weights (host, ≥ 0), each row
 * scaled by √w[t] in float as src/model/calib.c's CPU path scales it. */
typedef struct sqz_block_wsite {
    int site;
    const float *w;
    sqz_gram_acc *acc;
} sqz_block_wsite;

/* What one run of a block pass feeds besides its output (every field may be 0/NULL). */
typedef struct sqz_block_io {
    sqz_gram_acc *const *sites;     /* [SQZ_BLOCK_SITES]: Σ x xᵀ of each site's input */
    const sqz_block_wsite *wsites;  /* token-weighted Grams */
    int n_wsites;
    int save;                       /* keep each site's input of this window on the device... */
    sqz_gram_acc *const *xsites;    /* ...for a later run's cross Grams (sqz_xgram_open):
                                       C += savedᵀ · this run's input, per site */
    int stop_at_down_in;            /* end once ffn_down's input is summed; x is left as it was */
} sqz_block_io;

/* x[T, dim] (host) ← the loaded block applied to it, one causal sequence from position 0,
 * as sqz_forward_layer computes it (f32 products, no TF32); io (may be NULL): the Grams
 * that receive the block's inputs, straight from the device (accumulators of this
 * backend, sqz_gram_open). */
int sqz_block_pass_run(sqz_block_pass *p, float *x, int64_t T, const sqz_block_io *io, sqz_err *err);

/* What the backward pass hands on per linear layer: kind as sqz_linear_kind (sqz/grad.h:
 * 0..6 = q, k, v, o, gate, up, down), x [T, in] its input and g [T, out] the gradient of
 * its output, host arrays valid during the call; and per RMSNorm (kinds
 * SQZ_BLOCK_NORM_ATTN / _FFN) x its output and g the gradient with respect to it. */
#define SQZ_BLOCK_NORM_ATTN 7
#define SQZ_BLOCK_NORM_FFN 8
typedef int (*sqz_block_grad_hook)(void *ctx, int kind, const float *x, const float *g, int64_t in, int64_t out,
                                   sqz_err *err);
/* The loaded block's backward over one window, as src/model/grad.c's layer_bwd: x_in
 * [T, dim] the block's input (host), dx [T, dim] dL/d(its output) on entry and dL/d(its
 * input) on return. The forward is recomputed from x_in on the device (f32 products, no
 * TF32); each linear reaches hook in grad.c's order: down, gate, up, ffn norm, o, q, k, v,
 * attention norm. */
int sqz_block_pass_backward(sqz_block_pass *p, const float *x_in, float *dx, int64_t T, sqz_block_grad_hook hook,
                            void *ctx, sqz_err *err);
void sqz_block_pass_close(sqz_block_pass *p);

#ifdef __cplusplus
}
#endif
#endif

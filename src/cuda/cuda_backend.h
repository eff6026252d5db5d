/* The CUDA backend's C interface (src/cuda/, the .cu files), called by src/backend/backend.c only
 * when the build has it (SQZ_HAVE_CUDA). Every function returns SQZ_OK or SQZ_ERR with a
 * message naming the stage, the sizes and CUDA's own error text. */
#ifndef SQZ_CUDA_BACKEND_H
#define SQZ_CUDA_BACKEND_H

#include <stdint.h>

#include "sqz/backend.h"
#include "sqz/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sqz_cuda sqz_cuda;
typedef struct sqz_cuda_gram sqz_cuda_gram;

int sqz_cuda_open(int device, sqz_cuda **out, char *desc, size_t desc_cap, sqz_err *err);
void sqz_cuda_close(sqz_cuda *c);
uint64_t sqz_cuda_peak_bytes(const sqz_cuda *c);

int sqz_cuda_gram_open(sqz_cuda *c, int64_t n, sqz_cuda_gram **out, sqz_err *err);
int sqz_cuda_gram_add(sqz_cuda_gram *g, const float *x, int64_t T, sqz_err *err);
/* G (n × n, host, both triangles) += the sum; the sum restarts from zero. */
int sqz_cuda_gram_finish(sqz_cuda_gram *g, double *G, sqz_err *err);
void sqz_cuda_gram_close(sqz_cuda_gram *g);

/* A (n × n, host, row-major, the dampened and permuted H; floats when single, else
 * doubles) ← U, the upper Cholesky factor of A⁻¹, as gptq.c's chol_inverse_upper
 * computes it: potrf of the reversed matrix and trtri (cuSOLVER's 64-bit API) in that
 * precision. */
int sqz_cuda_chol_inverse_upper(sqz_cuda *c, void *A, int64_t n, int single, sqz_err *err);

/* A cross Gram (sqz_xgram_open): C += Aᵀ B of a, b [T, n] on the device. */
int sqz_cuda_xgram_open(sqz_cuda *c, int64_t n, sqz_cuda_gram **out, sqz_err *err);
int sqz_cuda_xgram_add_dev(sqz_cuda_gram *g, const float *a, const float *b, int64_t T, sqz_err *err);

/* As sqz_cuda_gram_add with x [T, n] already on the device. */
int sqz_cuda_gram_add_dev(sqz_cuda_gram *g, const float *x, int64_t T, sqz_err *err);

/* The block pass of include/sqz/backend.h (src/cuda/block.cu); sites as there, each
 * NULL or an open Gram of the site's width. */
typedef struct sqz_cuda_block sqz_cuda_block;
int sqz_cuda_block_open(sqz_cuda *c, int64_t max_T, const sqz_block_desc *widest, sqz_cuda_block **out,
                        sqz_err *err);
int sqz_cuda_block_load(sqz_cuda_block *p, const sqz_block_desc *d, sqz_err *err);
/* The run of sqz_block_pass_run with io's accumulators as CUDA Grams: sites[4] and
 * xsites[4] (NULL entries: none), wsite_of[i], w[i], wacc[i] for i < n_w. */
typedef struct sqz_cuda_block_io {
    sqz_cuda_gram *sites[SQZ_BLOCK_SITES], *xsites[SQZ_BLOCK_SITES];
    int n_w, wsite_of[16];
    const float *w[16];
    sqz_cuda_gram *wacc[16];
    int save, stop_at_down_in;
} sqz_cuda_block_io;
int sqz_cuda_block_run(sqz_cuda_block *p, float *x, int64_t T, const sqz_cuda_block_io *io, sqz_err *err);
/* sqz_block_pass_backward's work on the device. */
int sqz_cuda_block_backward(sqz_cuda_block *p, const float *x_in, float *dx, int64_t T, sqz_block_grad_hook hook,
                            void *ctx, sqz_err *err);
void sqz_cuda_block_close(sqz_cuda_block *p);

#ifdef __cplusplus
}
#endif
#endif

/* GPTQ (Frantar et al. 2022) into ggml's exact block formats.
 *
 * A linear layer's weight W (rows = output channels, cols = inputs, row-major f32) is
 * quantized given H = XᵀX/T of its calibration inputs (cols × cols, double, both
 * triangles filled). Columns are swept left to right with the upper Cholesky factor U
 * of the dampened H⁻¹: each column is rounded onto its block's grid and its error,
 * divided by U_ii, is spread over the later columns with row i of U (lazy batches, one
 * DGEMM per batch for the columns after it; the sweep is in double).
 *
 * A quantization block's scales are fixed when the sweep reaches the block's first
 * column, by sqz_quant_block_params on the current (error-updated) weights with
 * diag(H) (dampened) of the block's columns as importance. Batches are 128 columns for
 * 32-value blocks and 256 for super-blocks, so a block never straddles two batches and
 * all of its columns hold their current values when its scales are chosen.
 *
 * Act-order: columns are swept by decreasing diag(H); the block scales are then fixed
 * up front from the original W ("static groups"), so the blocks stay ggml blocks.
 *
 * Dead inputs (H_ii == 0) get H_ii = 1 and their weights are set to 0 before the sweep,
 * as the reference implementation does.
 *
 * Shrinkage: H measured on a few thousand tokens is a noisy estimate of the inputs' true
 * second moments, worst in the directions of small variance, which are exactly where
 * GPTQ puts its error; heavy-tailed activations (a window's first token can carry 99% of
 * a layer's trace) shrink the effective sample further. GPTQ then fits the calibration
 * set and loses out of sample: on SmolLM2 (8×512 tokens) plain GPTQ cut the in-sample
 * H-weighted error of Q2_K to 0.4× RTN's but the held-out (WikiText-2) error only to
 * 1.04×. opts.shrink scales H's off-diagonal entries by (1 − shrink) before dampening,
 * a shrinkage toward diag(H): 1 leaves no error feedback (RTN with diag(H) importance),
 * 0 is plain GPTQ. WikiText-2 perplexity, SmolLM2 Q2_K, 8×512 calibration tokens:
 * shrink 0 51.4, 0.6 42.5, 0.75 42.0, 0.9 42.2, 1 43.4 (RTN 43.5). Entry-wise
 * Ledoit–Wolf estimates of the intensity (per token or per window) came out at
 * 0.001–0.13 and perplexity 47–48: they judge the entries of H, not its inverse, which
 * is what GPTQ uses. */
#ifndef SQZ_GPTQ_H
#define SQZ_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"
#include "sqz/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sqz_gptq_opts {
    double percdamp; /* λ = percdamp · mean(diag H); <= 0 means 0.01 */
    int act_order;   /* 1: sweep columns by decreasing diag(H), static groups */
    int no_stats;    /* 1: skip the error statistics (they cost another rows·cols² MACs) */
    double shrink;   /* 0..1: H's off-diagonal entries are scaled by (1 − shrink); 0 = plain GPTQ */
    int single;      /* 1: factor and sweep in single precision (about twice as fast; a few
                        levels per thousand differ from the double sweep): for estimates */
    sqz_pool *pool;  /* the factorization's threads (NULL: the caller's alone); its bits do not
                        depend on their number */
} sqz_gptq_opts;

typedef struct sqz_gptq_stats {
    double rel_weight_err; /* ‖W − Ŵ‖_F / ‖W‖_F */
    double rel_output_err; /* tr((W−Ŵ) H (W−Ŵ)ᵀ) / tr(W H Wᵀ), with the caller's H */
    double damp;           /* the λ added to diag(H) */
    double shrink;         /* the shrinkage applied to H's off-diagonal entries */
    int64_t n_dead;        /* inputs with H_ii == 0 */
    double seconds_factor; /* wall time of the Cholesky part */
    double seconds_sweep;  /* wall time of the column sweep */
    double seconds_stats;  /* wall time of the error statistics */
    int64_t stats_rows;    /* rows the two errors were measured on: all while rows·cols² <= 2^30, else
                              that many evenly spaced ones (>= 128) */
} sqz_gptq_stats;

/* Quantizes W (rows × cols) into `type` (sqz_quant_supported; cols a multiple of its
 * block size). dst receives rows × sqz_type_row_bytes(type, cols) bytes, ggml's layout.
 * Optional outputs (NULL to skip): what (rows × cols, the dequantized Ŵ, bit-identical to
 * what ggml computes from dst), params (rows × cols/block_size, the block scales chosen,
 * row-major by row then block), levels (rows × cols integer levels), stats.
 * opts may be NULL (defaults). pool may be NULL. Fails for a bad type or shape,
 * non-finite inputs, or an H that stays singular after dampening. */
int sqz_gptq_quantize(int type, const float *W, int64_t rows, int64_t cols, const double *H,
                      const sqz_gptq_opts *opts, sqz_pool *pool, void *dst, float *what, sqz_qparams *params,
                      int8_t *levels, sqz_gptq_stats *stats, sqz_err *err);

/* The part of GPTQ that depends on H alone: the dampened, shrunk H's inverse as its
 * upper Cholesky factor (in sweep order), the importances and dead inputs. Every linear
 * layer with the same input (q/k/v; gate/up) and every candidate type of one matrix
 * shares it, so it is computed once per Gram (1.3 cols³ flops: for an 8960-wide ffn_down,
 * as much as the sweep of ~900 rows). */
typedef struct sqz_gptq_factor {
    int64_t cols;
    double *U;      /* cols × cols, row-major upper (NULL when single) */
    float *Uf;      /* the same in single precision when single, else NULL */
    int single;
    float *imp;     /* dampened diag(H), original column order */
    int64_t *perm;  /* sweep position → original column */
    uint8_t *dead;  /* H_ii == 0, original column order */
    int act_order;
    double damp, shrink;
    int64_t n_dead;
    double seconds; /* wall time of the factorization */
} sqz_gptq_factor;

/* Fills f from H (cols × cols, both triangles) and the options' percdamp, act_order and
 * shrink. Fails for a non-finite or (after dampening) singular H. */
int sqz_gptq_factor_init(sqz_gptq_factor *f, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                         sqz_err *err);
/* sqz_gptq_factor_init with the factorization done by chol (A ← the upper Cholesky
 * factor of A⁻¹, in place, n × n row-major, floats when single else doubles; a
 * backend's, see sqz/backend.h); NULL: LAPACK's. */
typedef int (*sqz_chol_fn)(void *ctx, void *A, int64_t n, int single, sqz_err *err);
int sqz_gptq_factor_init_with(sqz_gptq_factor *f, const double *H, int64_t cols, const sqz_gptq_opts *opts,
                              sqz_chol_fn chol, void *chol_ctx, sqz_err *err);
void sqz_gptq_factor_free(sqz_gptq_factor *f);

/* sqz_gptq_quantize with a prepared factor, without statistics: the same bytes as
 * sqz_gptq_quantize with the options the factor was made with. */
int sqz_gptq_quantize_factored(int type, const float *W, int64_t rows, const sqz_gptq_factor *f, sqz_pool *pool,
                               void *dst, float *what, sqz_qparams *params, int8_t *levels, sqz_err *err);

/* sqz_gptq_quantize_factored, then stats (may be NULL) as sqz_gptq_quantize fills them;
 * H is the Gram the factor came from (for the error statistics; unused when no_stats). */
int sqz_gptq_finish(int type, const float *W, int64_t rows, const double *H, const sqz_gptq_factor *f, int no_stats,
                    sqz_pool *pool, void *dst, float *what, sqz_qparams *params, int8_t *levels,
                    sqz_gptq_stats *stats, sqz_err *err);

/* The error statistics of an approximation Ŵ of W under H (as in sqz_gptq_stats):
 * relative Frobenius error and relative H-weighted output error, both in double. */
int sqz_gptq_errors(const float *W, const float *what, int64_t rows, int64_t cols, const double *H,
                    sqz_pool *pool, double *rel_weight_err, double *rel_output_err, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

/* Quantizers into ggml's block formats: Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, IQ4_NL (32-value
 * blocks) and Q6_K, Q5_K, Q4_K, Q3_K, Q2_K (256-value super-blocks): the types whose
 * sqz_type_traits.quantize is set in the type table (src/quant/types.c).
 *
 * The bytes written are ggml's exact block layouts (ggml-common.h), so llama.cpp and
 * gguf-py dequantize them as sqz does (the dequantizers live in src/quant/types.c).
 *
 * Every block's scales (and mins) come from a search that minimizes the weighted squared
 * error  sum_i w_i (x_i - xhat_i)^2  of the values as they will be dequantized (f16 super
 * scales and integer sub-block scales included): candidate scales around max/|qmax|,
 * each refined in closed form (least squares) for its fixed rounding, then the sub-block
 * scales are fitted onto the super-block grid with a local search and the super scales
 * refined in closed form again. w is a per-column importance (e.g. diag(H) of the
 * layer's inputs, or llama.cpp's imatrix); NULL means uniform weights.
 *
 * For GPTQ-style use the search and the rounding are separate:
 *   sqz_quant_block_params   fixes a block's scales from the current values;
 *   sqz_quant_round_with_params  rounds one value of that block onto its grid;
 *   sqz_quant_pack_block     writes the block's bytes from the chosen levels.
 * sqz_quantize_row is exactly params + round every value + pack, block after block.
 * sqz_convert_row writes any writable type: the float types F32/F16/BF16 by conversion,
 * the quantized ones through sqz_quantize_row. */
#ifndef SQZ_QUANT_H
#define SQZ_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"
#include "sqz/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQZ_QBLOCK_MAX 256 /* the largest block (a k-quant super-block) */
#define SQZ_QSUB_MAX 16    /* the most sub-blocks with their own scale in one block */

/* The fixed scales of one block, as stored and as used by the dequantizer.
 * A value of sub-block j with integer level l dequantizes to
 *     scale[j] * l - min[j]          (IQ4_NL: scale[0] * kvalues_iq4nl[l])
 * computed in float exactly as ggml does, so xhat is bit-identical to llama.cpp's.
 * Q4_1/Q5_1 dequantize to l * d + m with the block's min m added (m of either sign);
 * min[0] holds -m, and d*l - (-m) equals d*l + m bit for bit. */
typedef struct sqz_qparams {
    int type;          /* sqz_type */
    int block_size;    /* 32 or 256 values */
    int sub_size;      /* values sharing one scale: 32 or 16 */
    int n_sub;         /* block_size / sub_size */
    uint16_t d;        /* f16 bits of the (super-)scale */
    uint16_t dmin;     /* f16 bits of the super-scale of the mins (Q2_K, Q4_K, Q5_K), of the
                          block's min m (Q4_1, Q5_1: added, either sign), else 0 */
    int16_t sc[SQZ_QSUB_MAX]; /* integer sub-block scales (k-quants), as stored minus any offset */
    int16_t m[SQZ_QSUB_MAX];  /* integer sub-block mins (Q2_K, Q4_K, Q5_K) */
    float scale[SQZ_QSUB_MAX]; /* effective step of sub-block j: f16(d) * sc[j] (or f16(d)) */
    float min[SQZ_QSUB_MAX];   /* effective offset of sub-block j: f16(dmin) * m[j]; Q4_1/Q5_1:
                                  -f16(dmin); else 0 */
} sqz_qparams;

/* 1 when sqz can quantize into type (the eleven types above: the type table's quantize
 * flag), else 0. F32/F16/BF16 are writable (sqz_convert_row) but not quantized: 0. */
int sqz_quant_supported(int type);

/* The range of integer levels l of a type: Q4_0 -8..7, Q5_0 -16..15, Q4_1 0..15, Q5_1
 * 0..31, Q8_0 -127..127 (ggml never writes -128, which some of its SIMD dot products
 * mishandle), IQ4_NL 0..15 (an index into the non-linear grid), Q2_K 0..3, Q3_K -4..3,
 * Q4_K 0..15, Q5_K 0..31, Q6_K -32..31. Returns SQZ_ERR for an unsupported type. */
int sqz_quant_level_range(int type, int *lmin, int *lmax, sqz_err *err);

/* Fixes the scales of one block of p->block_size values x (block_size of the type: 32 or
 * 256) by the weighted search described above. w: block_size non-negative importances, or
 * NULL for uniform. Fails for an unsupported type or a non-finite x or w. */
int sqz_quant_block_params(int type, const float *x, const float *w, sqz_qparams *p, sqz_err *err);

/* Rounds value x at position i (0 <= i < block_size) of a block onto the block's grid:
 * stores the level in *level and returns the dequantized value (bit-identical to what
 * llama.cpp will compute). The nearest grid value is chosen, so for fixed scales this
 * minimizes every weighted error term independently. */
float sqz_quant_round_with_params(const sqz_qparams *p, int i, float x, int8_t *level);

/* Writes one block in ggml's layout from the params and block_size levels (each within
 * sqz_quant_level_range; out-of-range levels are clamped). dst receives the type's
 * block_bytes. */
void sqz_quant_pack_block(const sqz_qparams *p, const int8_t *levels, void *dst);

/* Quantizes one row of n values (n a multiple of the type's block size) into dst, which
 * must hold the row's bytes (sqz_type_row_bytes). weights: n per-column importances or
 * NULL. Errors name the type, the row length or the offending column. */
int sqz_quantize_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err);

/* Writes one row of n values into dst in any type sqz can write (sqz_type_writable): F32
 * (a copy), F16 and BF16 (the table's from_float: round to nearest even, as ggml converts;
 * no value is rejected, |x| >= 65520 becomes an F16 inf) and every sqz_quant_supported
 * type (sqz_quantize_row, with the weights), and the codebook i-quants (the type table's
 * codebook field: IQ3_S, IQ3_XXS, the IQ2 and IQ1 types, TQ2_0, TQ1_0; sqz_iquant_row). n must be a multiple
 * of the type's block size; dst holds sqz_type_row_bytes bytes. Fails for a type sqz cannot write (e.g. Q8_K)
 * or as sqz_quantize_row does. */
int sqz_convert_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err);

/* Block rescaling: the scales of each group of SQZ_RESCALE_GROUP values (one 256-value
 * super-block; eight 32-value blocks; a row's last group may be shorter) — the type
 * table's scale_at fields: d, and dmin or m — are multiplied by f = (Σ x² / Σ x·q)^power
 * over the group, clamped to [SQZ_RESCALE_MIN, SQZ_RESCALE_MAX], q the values as written
 * (row, n values of `type`) and x the values they were made from; the codes are
 * unchanged, the bytes stay the same size. (A factor per 32 values follows the noise of
 * so few values: on SmolLM2's Q4_0 it cost perplexity.)
 * Why: a least-squares fit of the scale to codes this coarse shrinks the block (its
 * projection on x is ‖q‖², below ‖x‖²; on Qwen2.5-1.5B at 2 bits the matrices come out
 * ~10% short of their originals along themselves), and that shortfall is the same
 * direction in every row, so it reaches the model's output coherently where the rest of
 * the error averages out. power 1 makes Σ x·q' = Σ x² (the block unbiased along
 * itself); 0.5 keeps ‖q'‖ ≈ ‖x‖ when q was the least-squares fit (its energy).
 * Types without such fields (the float types, IQ1_M) and power 0 leave the row as is.
 * Blocks whose Σ x·q is not positive are left as they are. */
#define SQZ_RESCALE_GROUP 256
#define SQZ_RESCALE_MIN 0.5
#define SQZ_RESCALE_MAX 2.0
int sqz_rescale_row(int type, const float *x, void *row, int64_t n, double power, sqz_err *err);
/* The blocks of a quantized run of values (nb blocks of `type`) times factor: each
 * block's linear f16 scale fields (the type table's scale_at) multiplied and rounded to
 * f16, codes unchanged, so every value moves by the factor up to that rounding. Returns
 * 0 when the type has no such fields (nothing changes), else 1. */
int sqz_scale_blocks(int type, void *blocks, int64_t nb, double factor);

/* One row into a codebook i-quant (src/quant/iquant.c: IQ3_S, IQ3_XXS, IQ2_S, IQ2_XS,
 * IQ2_XXS, IQ1_M, IQ1_S; and the ternary levels of TQ2_0, TQ1_0): each group's grid point
 * and each scale by a search in the weights' metric (weights: n importances >= 0, or NULL
 * for uniform); n a multiple of 256. Errors name the type and the value. */
int sqz_iquant_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err);

/* GPTQ into a codebook i-quant, whose grid points cover groups of G values (the type's
 * codebook field: 4 for IQ3_S and IQ3_XXS, 8 for the IQ2 and IQ1 types, 1 for TQ2_0 and TQ1_0):
 * the block's scales from its current values (sqz_qparams: d, sc[j] the 4-bit scale,
 * scale[j] = f16(d)·(1 + 2·sc[j]) the step of 32-value sub-block j); the grid point of the
 * G values x starting at value `first` of the block (w: their importances or NULL), as
 * levels ±(grid value) and the values q they dequantize to (IQ3_XXS, IQ2_XXS, IQ2_XS: called in
 * order within a row, lev[-(first % 8) .. -1] holding the earlier levels of the 8-span, so
 * that each 8's signs keep their even parity; IQ1_S and IQ1_M: levels 8g ± 1, the value in
 * units of step/8 - grid value g of {-1, 0, 1} and the shift ±1/8, which IQ1_S keeps per
 * 32 values in m[j] = ±1 and IQ1_M chooses per group); the block's bytes from its levels.
 * sqz_gptq_supported says which types GPTQ takes. */
int sqz_iquant_block_params(int type, const float *x, const float *w, sqz_qparams *p, sqz_err *err);
void sqz_iquant_round_group(const sqz_qparams *p, int first, const float *x, const float *w, int8_t *lev, float *q);
void sqz_iquant_pack_block(const sqz_qparams *p, const int8_t *levels, void *dst);
/* 1 when GPTQ can quantize into type: sqz_quant_supported, or a codebook type. */
int sqz_gptq_supported(int type);

#ifdef __cplusplus
}
#endif
#endif

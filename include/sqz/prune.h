/* Structured pruning: removing attention heads and FFN channels (DESIGN.md §6).
 *
 * Removing query head h is removing columns [h·d, (h+1)·d) of o_proj (its rows of q_proj
 * go with it); removing FFN channel i is removing column i of ffn_down (row i of gate
 * and up go with it). What the consumer loses is repaired by least squares on the
 * calibration inputs (OBS, SparseGPT-style): with H the consumer's input Gram, R the
 * removed and S the kept columns,
 *
 *   W_S ← W_S + W_R H_RS H_SS⁻¹,
 *
 * and the output error left, per row j, is w_jRᵀ (H_RR − H_RS H_SS⁻¹ H_SR) w_jR (the
 * Schur complement: what the kept inputs cannot explain of the removed ones). Scored
 * with the gradient statistics of the consumer's rows (sensitivity.h), the predicted
 * loss change of a removal is
 *
 *   ΔL ≈ ½/N Σ_j s_j w_jRᵀ (H_RR − H_RS H_SS⁻¹ H_SR) w_jR,
 *
 * the same gradient-scaled form as a quantization option, so both compete on one scale.
 *
 * Grouped-query attention: query heads h·G .. h·G+G−1 share kv head h (G = n_head /
 * n_head_kv). A layer keeps a kv heads and b query heads in each of them (b ≤ G): the
 * pruned layer has n_head = a·b, n_head_kv = a, an integer ratio as llama.cpp needs.
 * a = 0 removes the attention block, an FFN width of 0 the FFN block (llama.cpp's deci
 * architecture builds such layers). */
#ifndef SQZ_PRUNE_H
#define SQZ_PRUNE_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one layer keeps, as original indices in ascending order. */
typedef struct sqz_layer_keep {
    int n_head, n_head_kv, n_ff;
    int *head;    /* [n_head] query heads */
    int *head_kv; /* [n_head_kv] kv heads */
    int *ff;      /* [n_ff] FFN channels */
} sqz_layer_keep;

void sqz_layer_keep_free(sqz_layer_keep *k);
/* Everything kept (the unpruned layer l of m). */
int sqz_layer_keep_all(const sqz_model *m, int l, sqz_layer_keep *k, sqz_err *err);

/* One width option of a block: the kept units and the predicted ΔL of removing the
 * rest, with compensation (dl) and without (dl_plain). */
typedef struct sqz_width_option {
    int n_keep, n_keep_kv; /* attention: query heads, kv heads; FFN: channels, 0 */
    int *keep, *keep_kv;   /* owned; keep_kv NULL for the FFN */
    double dl, dl_plain;
} sqz_width_option;

typedef struct sqz_layer_widths {
    int n_attn, n_ffn;
    sqz_width_option *attn; /* from all heads kept (dl 0) down to none */
    sqz_width_option *ffn;  /* from all channels kept down to none */
} sqz_layer_widths;

void sqz_layer_widths_free(sqz_layer_widths *w);

/* k = what the attention option attn and the FFN option ffn of one layer keep (copies;
 * free with sqz_layer_keep_free, also after a failure). */
int sqz_layer_keep_set(sqz_layer_keep *k, const sqz_width_option *attn, const sqz_width_option *ffn, sqz_err *err);

/* Σ_j s_j δw_jᵀ H δw_j of removing the columns with removed[i] != 0 from W (rows × n,
 * row-major), with compensation (*with) and without (*plain; both may be NULL). H is
 * n × n (any positive scale); the compensation solves with H's off-diagonal entries
 * scaled by 1 − shrink and its diagonal dampened by percdamp · mean(diag H), as GPTQ
 * does (a Gram of a few thousand tokens is fitted, not estimated, without them: shrink
 * 1 is plain removal); the cost is measured with H itself. s NULL means s_j = 1. */
int sqz_prune_removal_cost(const float *W, int64_t rows, int64_t n, const double *H, const double *s,
                           const unsigned char *removed, double percdamp, double shrink, double *with, double *plain,
                           sqz_err *err);

/* W_out (rows × n_keep) = the kept columns of W after compensation (compensate = 1) or
 * as they are (0). keep: ascending column indices. */
int sqz_prune_columns(const float *W, int64_t rows, int64_t n, const double *H, const int *keep, int n_keep,
                      double percdamp, double shrink, int compensate, float *W_out, sqz_err *err);

/* The width options of layer l of m: H_o and H_down are the inputs Grams of o_proj and
 * ffn_down (normalized, Σ x xᵀ / T), s_o and s_down Σ_t g_tj² of their output rows, N the
 * scored tokens (ΔL = ½/N Σ ...). Attention options: a kv heads kept (the a with the
 * largest removal cost), b query heads in each (their b largest), every (a, b); FFN
 * options: channels ranked by their single-channel removal cost, all of them, then
 * n_ff - j·ffn_step rounded down to a multiple of 32 (when n_ff >= 64) down to none.
 * magnitude = 1: the baseline of the literature instead, activation-weighted magnitude
 * (Wanda-like): s_j = 1, heads ranked by their plain removal cost Σ_j w_jRᵀ H_RR w_jR,
 * channels by H_ii Σ_j w_ji². */
int sqz_prune_layer_options(const sqz_model *m, int l, const double *H_o, const double *s_o, const double *H_down,
                            const double *s_down, double N, double percdamp, double shrink, int magnitude,
                            int ffn_step, sqz_layer_widths *out, sqz_err *err);

/* The same widths without their costs or kept units (n_keep, n_keep_kv only): the shapes a
 * plan can take, known before any estimate (the smallest reachable size). */
int sqz_prune_layer_shapes(const sqz_model *m, int l, int ffn_step, sqz_layer_widths *out, sqz_err *err);

/* The FFN width step compress uses: a sixth of n_ff rounded down to a multiple of 256
 * (ffn_down's rows then still fit the k-quants' 256-blocks), else of 32, else 32 when
 * n_ff >= 64 (fewer options, rows that fit 32-blocks), else 1. */
int sqz_prune_ffn_step(int n_ff);

#ifdef __cplusplus
}
#endif
#endif

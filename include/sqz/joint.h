/* Joint allocation of widths and types under one byte budget (DESIGN.md §5-§6).
 *
 * A layer's attention block (q, k, v, o) and FFN block (gate, up, down) are each one
 * knapsack item. An option of a block is a width (which heads or channels it keeps,
 * prune.h) together with a type for each of its matrices; its bytes are the exact bytes
 * of the pruned matrices in those types, its cost the predicted ΔL of the removal (after
 * compensation) plus the matrices' quantization ΔL, each scaled by the fraction of the
 * matrix that is kept (the proxy is a sum over rows; o and down lose columns, which the
 * sum over their inputs scales the same way to first order).
 *
 * For a price λ on bytes the best types of a block do not depend on its width (every
 * term of a matrix scales with the same kept fraction), so the Lagrangian choices of a
 * block at one width are the merged breakpoints of its matrices' lower convex hulls in
 * (bytes, ΔL): those are the options listed per width, and the multiple-choice knapsack
 * (plan.h) chooses among all of them, trading a byte of format against a byte of width.
 * The output head and an untied embedding stay one item each, as without pruning. */
#ifndef SQZ_JOINT_H
#define SQZ_JOINT_H

#include "sqz/core.h"
#include "sqz/model.h"
#include "sqz/plan.h"
#include "sqz/prune.h"
#include "sqz/sensitivity.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The cost of a type option (which proxy form). */
typedef double (*sqz_option_cost)(const sqz_sens_option *o);

typedef struct sqz_joint {
    int n_layer, n_items;  /* items: layer l's attention at 2l, its FFN at 2l + 1, then the head (and embedding) */
    sqz_alloc_item *items; /* [n_items] */
    sqz_alloc_option *opts; /* every option, item by item */
    int *width;            /* [per option] width index into the layer's attn or ffn options (-1: a tensor item) */
    int *types;            /* [per option × 4] the block's types in kind order (q k v o | gate up down) */
    double *quant_dl;      /* [per option] the quantization part of its cost */
    int *first;            /* [n_items] index of each item's first option */
} sqz_joint;

/* Builds the items from an estimate with width options (sens->widths). min_keep in
 * [0, 1): widths keeping less than this fraction of a block's heads or channels are left
 * out (0 allows removing whole blocks). */
int sqz_joint_build(const sqz_model *m, const sqz_sens *sens, sqz_option_cost cost, double min_keep, sqz_joint *j,
                    sqz_err *err);
void sqz_joint_free(sqz_joint *j);

/* The pruned structure and the types of a choice (one option index per item, as
 * sqz_alloc_solve fills it): keep[n_layer] (allocated; sqz_layer_keep_free each) and
 * plan[n_layer·7 + 2] (sqz_qmodel_opts.tensor_types of the pruned model). */
int sqz_joint_decode(const sqz_joint *j, const sqz_sens *sens, const int *choice, sqz_layer_keep *keep, int *plan,
                     sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

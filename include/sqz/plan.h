/* Mixed precision under an exact byte budget: a multiple-choice knapsack.
 *
 * Every item (a weight matrix) has a few options (a type each): its exact bytes and a
 * cost (the predicted rise of the loss, ΔL). Exactly one option per item is chosen so
 * that the bytes sum to at most the budget and the costs sum to as little as possible.
 *
 * sqz_alloc_solve: Lagrangian relaxation, then a greedy fill.
 *   1. For a price λ ≥ 0 on bytes every item independently takes the option minimizing
 *      cost + λ·bytes (ties: fewer bytes, then the lower index). Total bytes fall as λ
 *      rises; λ is bisected (in double, to the smallest representable gap) to the
 *      cheapest price whose choice fits the budget.
 *   2. The budget λ leaves unspent is filled greedily: among all single-item moves to an
 *      option with lower cost that still fit, the one with the largest cost drop per
 *      extra byte (a move that saves bytes first) is applied, until none fits.
 * This is optimal for the relaxed problem and, on the knapsack, within one option step
 * of the optimum; sqz_alloc_exact (a DP over bytes, for small problems) checks it in
 * tests. Neither ever returns a choice above the budget. */
#ifndef SQZ_PLAN_H
#define SQZ_PLAN_H

#include <stdint.h>

#include "sqz/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sqz_alloc_option {
    uint64_t bytes; /* exact bytes of the tensor in this option */
    double cost;    /* predicted ΔL (finite; any sign) */
} sqz_alloc_option;

typedef struct sqz_alloc_item {
    int n_options;                   /* >= 1 */
    const sqz_alloc_option *options; /* n_options */
} sqz_alloc_item;

typedef struct sqz_alloc_result {
    uint64_t bytes;     /* of the choice */
    double cost;        /* of the choice */
    uint64_t min_bytes; /* every item at its smallest option */
    double lambda;      /* the price found in step 1 (0 when the cheapest-cost choice fits) */
} sqz_alloc_result;

/* Fills choice[n_items] (option index per item) and res (may be NULL). Fails, stating
 * the minimum, when even the smallest options exceed the budget; fails for an item
 * without options or a non-finite cost. */
int sqz_alloc_solve(const sqz_alloc_item *items, int n_items, uint64_t budget, int *choice, sqz_alloc_result *res,
                    sqz_err *err);

/* The exact optimum by dynamic programming over bytes (O(n_items · budget · options)
 * time, O(n_items · budget) memory): for tests and small problems only; fails when
 * budget > max_budget (it refuses rather than allocating gigabytes). */
int sqz_alloc_exact(const sqz_alloc_item *items, int n_items, uint64_t budget, uint64_t max_budget, int *choice,
                    sqz_alloc_result *res, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

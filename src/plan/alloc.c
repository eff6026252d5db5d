/* The byte-budget knapsack of include/sqz/plan.h: Lagrangian bisection + greedy fill,
 * and the exact DP that tests hold it against. */
#include "sqz/plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int check_items(const sqz_alloc_item *items, int n_items, uint64_t *min_bytes, sqz_err *err) {
    if (n_items < 0 || (n_items > 0 && !items)) return sqz_fail(err, "alloc: %d items", n_items);
    uint64_t sum = 0;
    for (int i = 0; i < n_items; i++) {
        const sqz_alloc_item *it = &items[i];
        if (it->n_options < 1 || !it->options) return sqz_fail(err, "alloc: item %d has no options", i);
        uint64_t mn = UINT64_MAX;
        for (int k = 0; k < it->n_options; k++) {
            if (!isfinite(it->options[k].cost))
                return sqz_fail(err, "alloc: item %d option %d: cost %g is not finite", i, k, it->options[k].cost);
            if (it->options[k].bytes < mn) mn = it->options[k].bytes;
        }
        if (sum > UINT64_MAX - mn) return sqz_fail(err, "alloc: the smallest options overflow 64 bits");
        sum += mn;
    }
    *min_bytes = sum;
    return SQZ_OK;
}

/* The option minimizing cost + λ·bytes; ties: fewer bytes, then the lower index. */
static int pick(const sqz_alloc_item *it, double lambda) {
    int best = 0;
    double bv = it->options[0].cost + lambda * (double)it->options[0].bytes;
    for (int k = 1; k < it->n_options; k++) {
        const sqz_alloc_option *o = &it->options[k];
        double v = o->cost + lambda * (double)o->bytes;
        if (v < bv || (v == bv && o->bytes < it->options[best].bytes)) best = k, bv = v;
    }
    return best;
}

static uint64_t pick_all(const sqz_alloc_item *items, int n, double lambda, int *choice) {
    uint64_t b = 0;
    for (int i = 0; i < n; i++) {
        choice[i] = pick(&items[i], lambda);
        b += items[i].options[choice[i]].bytes;
    }
    return b;
}

static void summarize(const sqz_alloc_item *items, int n, const int *choice, uint64_t min_bytes, double lambda,
                      sqz_alloc_result *res) {
    if (!res) return;
    memset(res, 0, sizeof *res);
    for (int i = 0; i < n; i++) {
        res->bytes += items[i].options[choice[i]].bytes;
        res->cost += items[i].options[choice[i]].cost;
    }
    res->min_bytes = min_bytes;
    res->lambda = lambda;
}

int sqz_alloc_solve(const sqz_alloc_item *items, int n_items, uint64_t budget, int *choice, sqz_alloc_result *res,
                    sqz_err *err) {
    uint64_t min_bytes;
    if (check_items(items, n_items, &min_bytes, err)) return SQZ_ERR;
    if (min_bytes > budget)
        return sqz_fail(err, "alloc: budget %llu bytes is below the smallest reachable size %llu bytes (every "
                             "tensor at its smallest option)", (unsigned long long)budget,
                        (unsigned long long)min_bytes);
    /* 1. the cheapest price on bytes whose independent choices fit */
    double lo = 0.0, hi = 0.0;
    if (pick_all(items, n_items, 0.0, choice) > budget) {
        /* above every break-even price, each item takes its smallest option */
        for (int i = 0; i < n_items; i++) {
            const sqz_alloc_item *it = &items[i];
            for (int a = 0; a < it->n_options; a++)
                for (int b = 0; b < it->n_options; b++) {
                    const sqz_alloc_option *x = &it->options[a], *y = &it->options[b];
                    if (y->bytes > x->bytes) {
                        double p = (x->cost - y->cost) / (double)(y->bytes - x->bytes);
                        if (p > hi) hi = p;
                    }
                }
        }
        hi = hi * 2.0 + 1e-300;
        for (int it = 0; it < 2000; it++) {
            double mid = lo + (hi - lo) / 2;
            if (mid <= lo || mid >= hi) break; /* adjacent doubles */
            if (pick_all(items, n_items, mid, choice) <= budget) hi = mid;
            else lo = mid;
        }
        lo = hi;
        pick_all(items, n_items, hi, choice);
    }
    /* 2. spend what is left: best cost drop per extra byte among the moves that fit */
    uint64_t used = 0;
    for (int i = 0; i < n_items; i++) used += items[i].options[choice[i]].bytes;
    for (;;) {
        int bi = -1, bk = -1;
        double best = 0.0;
        for (int i = 0; i < n_items; i++) {
            const sqz_alloc_option *cur = &items[i].options[choice[i]];
            for (int k = 0; k < items[i].n_options; k++) {
                const sqz_alloc_option *o = &items[i].options[k];
                if (!(o->cost < cur->cost)) continue;
                double gain;
                if (o->bytes <= cur->bytes) gain = INFINITY; /* cheaper and no larger: always */
                else if (o->bytes - cur->bytes > budget - used) continue;
                else gain = (cur->cost - o->cost) / (double)(o->bytes - cur->bytes);
                if (bi < 0 || gain > best) bi = i, bk = k, best = gain;
            }
        }
        if (bi < 0) break;
        used = used - items[bi].options[choice[bi]].bytes + items[bi].options[bk].bytes;
        choice[bi] = bk;
    }
    summarize(items, n_items, choice, min_bytes, lo, res);
    return SQZ_OK;
}

int sqz_alloc_exact(const sqz_alloc_item *items, int n_items, uint64_t budget, uint64_t max_budget, int *choice,
                    sqz_alloc_result *res, sqz_err *err) {
    uint64_t min_bytes;
    if (check_items(items, n_items, &min_bytes, err)) return SQZ_ERR;
    if (min_bytes > budget)
        return sqz_fail(err, "alloc: budget %llu bytes is below the smallest reachable size %llu bytes",
                        (unsigned long long)budget, (unsigned long long)min_bytes);
    if (budget > max_budget)
        return sqz_fail(err, "alloc: exact DP refused: budget %llu > %llu", (unsigned long long)budget,
                        (unsigned long long)max_budget);
    size_t B = (size_t)budget + 1;
    double *prev = malloc(B * sizeof(double)), *cur = malloc(B * sizeof(double));
    int *arg = malloc((size_t)(n_items > 0 ? n_items : 1) * B * sizeof(int));
    if (!prev || !cur || !arg) {
        free(prev); free(cur); free(arg);
        return sqz_fail(err, "alloc: out of memory for the DP (%d × %zu)", n_items, B);
    }
    for (size_t b = 0; b < B; b++) prev[b] = 0.0; /* no items: cost 0 within any bytes */
    for (int i = 0; i < n_items; i++) {
        for (size_t b = 0; b < B; b++) {
            cur[b] = INFINITY;
            arg[(size_t)i * B + b] = -1;
            for (int k = 0; k < items[i].n_options; k++) {
                uint64_t ob = items[i].options[k].bytes;
                if (ob > b || prev[b - ob] == INFINITY) continue;
                double v = prev[b - ob] + items[i].options[k].cost;
                if (v < cur[b]) cur[b] = v, arg[(size_t)i * B + b] = k;
            }
        }
        double *t = prev; prev = cur; cur = t;
    }
    size_t b = budget;
    for (int i = n_items - 1; i >= 0; i--) {
        int k = arg[(size_t)i * B + b];
        choice[i] = k; /* >= 0: the budget holds the minimum */
        b -= items[i].options[k].bytes;
    }
    free(prev); free(cur); free(arg);
    summarize(items, n_items, choice, min_bytes, 0.0, res);
    return SQZ_OK;
}

/* The byte-budget allocator (include/sqz/plan.h) against the exact DP, and both against
 * brute force.
 *  - separable convex instances (each item's cost convex and decreasing in equal byte
 *    steps): Lagrangian + greedy must equal the optimum exactly;
 *  - arbitrary random instances: never above the budget, never below the optimum, and
 *    within one option step of it; the share of exact optima is printed;
 *  - brute force on small instances (3-6 items x 2-4 options, every combination
 *    enumerated; a reference that shares no code with sqz_alloc_exact): the DP must find
 *    exactly the enumerated optimum; the allocator's choice must be within the budget,
 *    its reported bytes and cost those of the options it chose, no single item able to
 *    move to a cheaper option that still fits, exactly optimal on convex
 *    instances, and on the others (monotone: bytes up, cost down; arbitrary) no more
 *    above the optimum than the largest step along one item's lower convex hull (the
 *    Lagrangian bound: one item left between two hull options). The allocator is NOT
 *    optimal on every such instance (a knapsack integrality gap: e.g. items
 *    {(1 B, 6), (6 B, 1)} and {(4 B, 5), (5 B, 2)} at budget 10 give 8, the optimum is
 *    6); the share of exact optima is printed;
 *  - a budget below the minimum fails and states the minimum; an ample budget takes the
 *    cheapest option of every item. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/plan.h"
#include "testutil.h"

static tu_rng rng = {0x9E3779B97F4A7C15ull};

#define MAX_ITEMS 10
#define MAX_OPT 6

typedef struct {
    int n;
    sqz_alloc_item items[MAX_ITEMS];
    sqz_alloc_option opt[MAX_ITEMS][MAX_OPT];
} instance;

static void make_convex(instance *in) {
    in->n = 1 + (int)(tu_urand(&rng) * MAX_ITEMS) % MAX_ITEMS;
    const uint64_t step = 4;
    for (int i = 0; i < in->n; i++) {
        int no = 2 + (int)(tu_urand(&rng) * (MAX_OPT - 1)) % (MAX_OPT - 1);
        double scale = 0.1 + 10.0 * tu_urand(&rng), decay = 0.3 + 0.6 * tu_urand(&rng);
        uint64_t base = (uint64_t)(tu_urand(&rng) * 8);
        for (int k = 0; k < no; k++) /* cost scale·decay^k: convex, decreasing */
            in->opt[i][k] = (sqz_alloc_option){base + step * (uint64_t)k, scale * pow(decay, k)};
        in->items[i] = (sqz_alloc_item){no, in->opt[i]};
    }
}

static void make_random(instance *in) {
    in->n = 1 + (int)(tu_urand(&rng) * MAX_ITEMS) % MAX_ITEMS;
    for (int i = 0; i < in->n; i++) {
        int no = 1 + (int)(tu_urand(&rng) * MAX_OPT) % MAX_OPT;
        for (int k = 0; k < no; k++)
            in->opt[i][k] = (sqz_alloc_option){(uint64_t)(tu_urand(&rng) * 30), 10.0 * tu_urand(&rng) - 1.0};
        in->items[i] = (sqz_alloc_item){no, in->opt[i]};
    }
}

static uint64_t max_bytes(const instance *in) {
    uint64_t s = 0;
    for (int i = 0; i < in->n; i++) {
        uint64_t m = 0;
        for (int k = 0; k < in->items[i].n_options; k++) if (in->opt[i][k].bytes > m) m = in->opt[i][k].bytes;
        s += m;
    }
    return s;
}

/* The largest cost difference between two options of one item. */
static double max_step(const instance *in) {
    double s = 0;
    for (int i = 0; i < in->n; i++)
        for (int a = 0; a < in->items[i].n_options; a++)
            for (int b = 0; b < in->items[i].n_options; b++) s = fmax(s, in->opt[i][a].cost - in->opt[i][b].cost);
    return s;
}

static void run(int convex, int cases) {
    int exact_hits = 0, n_run = 0;
    for (int c = 0; c < cases; c++) {
        instance in;
        if (convex) make_convex(&in);
        else make_random(&in);
        int ch[MAX_ITEMS], ce[MAX_ITEMS];
        sqz_alloc_result rs, re;
        sqz_err err;
        uint64_t mx = max_bytes(&in);
        /* find the minimum through the error path, then pick a budget above it */
        uint64_t mn = 0;
        for (int i = 0; i < in.n; i++) {
            uint64_t m = UINT64_MAX;
            for (int k = 0; k < in.items[i].n_options; k++) if (in.opt[i][k].bytes < m) m = in.opt[i][k].bytes;
            mn += m;
        }
        uint64_t budget = mn + (uint64_t)(tu_urand(&rng) * (double)(mx - mn + 6));
        CHECK(sqz_alloc_solve(in.items, in.n, budget, ch, &rs, &err) == 0, "case %d: %s", c, err.msg);
        CHECK(sqz_alloc_exact(in.items, in.n, budget, 1u << 20, ce, &re, &err) == 0, "case %d: %s", c, err.msg);
        CHECK(rs.bytes <= budget, "case %d: %llu bytes above the budget %llu", c, (unsigned long long)rs.bytes,
              (unsigned long long)budget);
        CHECK(rs.min_bytes == mn, "case %d: min_bytes %llu, expected %llu", c, (unsigned long long)rs.min_bytes,
              (unsigned long long)mn);
        CHECK(rs.cost >= re.cost - 1e-9, "case %d: cost %.12g below the optimum %.12g", c, rs.cost, re.cost);
        if (convex)
            CHECK(fabs(rs.cost - re.cost) <= 1e-9 * (1 + fabs(re.cost)), "convex case %d (%d items, budget %llu): "
                  "cost %.12g, optimum %.12g", c, in.n, (unsigned long long)budget, rs.cost, re.cost);
        else
            CHECK(rs.cost <= re.cost + max_step(&in) + 1e-9, "case %d: cost %.12g more than one step above %.12g",
                  c, rs.cost, re.cost);
        exact_hits += fabs(rs.cost - re.cost) <= 1e-9 * (1 + fabs(re.cost));
        n_run++;
    }
    printf("%s instances: %d of %d at the exact optimum\n", convex ? "convex" : "random", exact_hits, n_run);
}

/* ---- brute force on small instances ---- */
#define BF_ITEMS 6
#define BF_OPT 4

typedef enum { BF_CONVEX, BF_MONOTONE, BF_ARBITRARY } bf_kind;

static int urange(int lo, int hi) { /* uniform integer in [lo, hi] */
    int v = lo + (int)(tu_urand(&rng) * (hi - lo + 1));
    return v > hi ? hi : v;
}

static void make_small(instance *in, bf_kind kind) {
    in->n = urange(3, BF_ITEMS);
    /* convex: one byte step for all items (with unequal steps it is a knapsack again) */
    const uint64_t step = (uint64_t)urange(1, 8);
    for (int i = 0; i < in->n; i++) {
        int no = urange(2, BF_OPT);
        uint64_t b = (uint64_t)urange(1, 20);
        double c = 10.0 * tu_urand(&rng), decay = 0.2 + 0.7 * tu_urand(&rng);
        for (int k = 0; k < no; k++) {
            sqz_alloc_option *o = &in->opt[i][k];
            if (kind == BF_CONVEX) { /* equal byte steps, cost c·decay^k */
                *o = (sqz_alloc_option){b + step * (uint64_t)k, c};
                c *= decay;
            } else if (kind == BF_MONOTONE) { /* more bytes, lower cost, any shape */
                *o = (sqz_alloc_option){b, c};
                b += (uint64_t)urange(1, 20);
                c *= tu_urand(&rng);
            } else { /* any bytes (ties included), any sign */
                *o = (sqz_alloc_option){(uint64_t)urange(0, 40), 10.0 * tu_urand(&rng) - 2.0};
            }
        }
        in->items[i] = (sqz_alloc_item){no, in->opt[i]};
    }
}

/* Every combination: the least cost within the budget (INFINITY if none fits). */
static double brute_optimum(const instance *in, uint64_t budget) {
    int idx[BF_ITEMS] = {0};
    double best = INFINITY;
    for (;;) {
        uint64_t b = 0;
        double c = 0;
        for (int i = 0; i < in->n; i++) b += in->opt[i][idx[i]].bytes, c += in->opt[i][idx[i]].cost;
        if (b <= budget && c < best) best = c;
        int i = 0;
        while (i < in->n && ++idx[i] == in->items[i].n_options) idx[i++] = 0;
        if (i == in->n) return best;
    }
}

/* The largest cost drop between consecutive options of one item's lower convex hull
 * (from its smallest option, always to the option with the steepest cost drop per byte). */
static double max_hull_step(const instance *in) {
    double s = 0;
    for (int i = 0; i < in->n; i++) {
        const sqz_alloc_option *o = in->opt[i];
        int no = in->items[i].n_options, cur = 0;
        for (int k = 1; k < no; k++)
            if (o[k].bytes < o[cur].bytes || (o[k].bytes == o[cur].bytes && o[k].cost < o[cur].cost)) cur = k;
        for (;;) {
            int nx = -1;
            double best = 0;
            for (int k = 0; k < no; k++) {
                if (!(o[k].cost < o[cur].cost)) continue;
                double slope = o[k].bytes > o[cur].bytes
                                   ? (o[cur].cost - o[k].cost) / (double)(o[k].bytes - o[cur].bytes) : INFINITY;
                if (nx < 0 || slope > best) nx = k, best = slope;
            }
            if (nx < 0) break;
            s = fmax(s, o[cur].cost - o[nx].cost);
            cur = nx;
        }
    }
    return s;
}

static void run_brute(bf_kind kind, int cases) {
    static const char *names[] = {"convex", "monotone", "arbitrary"};
    int exact_hits = 0;
    double worst_gap = 0;
    for (int c = 0; c < cases; c++) {
        instance in;
        make_small(&in, kind);
        uint64_t mn = 0, mx = 0;
        for (int i = 0; i < in.n; i++) {
            uint64_t lo = UINT64_MAX, hi = 0;
            for (int k = 0; k < in.items[i].n_options; k++) {
                if (in.opt[i][k].bytes < lo) lo = in.opt[i][k].bytes;
                if (in.opt[i][k].bytes > hi) hi = in.opt[i][k].bytes;
            }
            mn += lo, mx += hi;
        }
        uint64_t budget = mn + (uint64_t)urange(0, (int)(mx - mn) + 2);
        double opt = brute_optimum(&in, budget), tol = 1e-9 * (1 + fabs(opt));
        int ch[BF_ITEMS], ce[BF_ITEMS];
        sqz_alloc_result rs, re;
        sqz_err err;
        CHECK(isfinite(opt), "%s case %d: brute force found nothing within budget %llu >= minimum %llu", names[kind],
              c, (unsigned long long)budget, (unsigned long long)mn);
        if (sqz_alloc_exact(in.items, in.n, budget, 1u << 20, ce, &re, &err) == 0)
            CHECK(re.bytes <= budget && fabs(re.cost - opt) <= tol, "%s case %d: DP cost %.12g (%llu bytes), brute "
                  "force %.12g within %llu", names[kind], c, re.cost, (unsigned long long)re.bytes, opt,
                  (unsigned long long)budget);
        else
            CHECK(0, "%s case %d: sqz_alloc_exact: %s", names[kind], c, err.msg);
        if (sqz_alloc_solve(in.items, in.n, budget, ch, &rs, &err) != 0) {
            CHECK(0, "%s case %d: sqz_alloc_solve: %s", names[kind], c, err.msg);
            continue;
        }
        /* the choice itself, summed here: in range, within the budget, as reported */
        uint64_t b = 0;
        double cost = 0;
        int in_range = 1;
        for (int i = 0; i < in.n; i++) {
            if (ch[i] < 0 || ch[i] >= in.items[i].n_options) { in_range = 0; break; }
            b += in.opt[i][ch[i]].bytes, cost += in.opt[i][ch[i]].cost;
        }
        CHECK(in_range, "%s case %d: an option index out of range", names[kind], c);
        if (!in_range) continue;
        CHECK(b <= budget, "%s case %d: the choice has %llu bytes, budget %llu", names[kind], c,
              (unsigned long long)b, (unsigned long long)budget);
        CHECK(b == rs.bytes && fabs(cost - rs.cost) <= tol, "%s case %d: reported %llu bytes / cost %.12g, the "
              "choice has %llu / %.12g", names[kind], c, (unsigned long long)rs.bytes, rs.cost,
              (unsigned long long)b, cost);
        /* no single item can move to a cheaper option that still fits (any optimum and
         * the greedy fill's end state share this) */
        int mi = -1, mk = -1;
        for (int i = 0; i < in.n && mi < 0; i++)
            for (int k = 0; k < in.items[i].n_options && mi < 0; k++) {
                const sqz_alloc_option *cur = &in.opt[i][ch[i]], *o = &in.opt[i][k];
                if (o->cost < cur->cost - tol && b - cur->bytes + o->bytes <= budget) mi = i, mk = k;
            }
        CHECK(mi < 0, "%s case %d: item %d could move from option %d to the cheaper %d within the budget",
              names[kind], c, mi, mi < 0 ? -1 : ch[mi], mk);
        double gap = cost - opt;
        CHECK(gap >= -tol, "%s case %d: cost %.12g below the enumerated optimum %.12g", names[kind], c, cost, opt);
        if (kind == BF_CONVEX)
            CHECK(gap <= tol, "convex case %d (%d items, budget %llu): cost %.12g, optimum %.12g", c, in.n,
                  (unsigned long long)budget, cost, opt);
        else
            CHECK(gap <= max_hull_step(&in) + tol, "%s case %d (%d items, budget %llu): cost %.12g, optimum %.12g: "
                  "more than the largest hull step %.12g above it", names[kind], c, in.n,
                  (unsigned long long)budget, cost, opt, max_hull_step(&in));
        exact_hits += gap <= tol;
        worst_gap = fmax(worst_gap, gap);
    }
    printf("brute force, %s instances (3-6 items x 2-4 options): %d of %d at the exact optimum, largest gap %.4g\n",
           names[kind], exact_hits, cases, worst_gap);
}

static void test_edges(void) {
    sqz_alloc_option o[2][3] = {{{10, 5.0}, {20, 1.0}, {30, 0.5}}, {{7, 3.0}, {9, 2.0}, {40, 0.1}}};
    sqz_alloc_item it[2] = {{3, o[0]}, {3, o[1]}};
    int ch[2];
    sqz_alloc_result r;
    sqz_err err;
    CHECK(sqz_alloc_solve(it, 2, 16, ch, &r, &err) != 0, "budget 16 < minimum 17 must fail");
    CHECK(strstr(err.msg, "17 bytes") != NULL, "the message must state the minimum: %s", err.msg);
    CHECK(sqz_alloc_solve(it, 2, 17, ch, &r, &err) == 0 && ch[0] == 0 && ch[1] == 0 && r.bytes == 17,
          "budget = minimum: the smallest options");
    CHECK(sqz_alloc_solve(it, 2, 1000, ch, &r, &err) == 0 && ch[0] == 2 && ch[1] == 2 && r.lambda == 0.0,
          "ample budget: the cheapest options, λ 0");
    /* the integrality gap of the header's comment: optimum 6 (10 bytes), the allocator's
     * choice within the budget and at most the largest hull step (5) above it */
    sqz_alloc_option g[2][2] = {{{1, 6.0}, {6, 1.0}}, {{4, 5.0}, {5, 2.0}}};
    sqz_alloc_item ig[2] = {{2, g[0]}, {2, g[1]}};
    CHECK(sqz_alloc_solve(ig, 2, 10, ch, &r, &err) == 0 && r.bytes <= 10 && r.cost >= 6.0 && r.cost <= 11.0,
          "gap example: %llu bytes, cost %g (optimum 6, bound 11)", (unsigned long long)r.bytes, r.cost);
    printf("gap example: allocator cost %g, optimum 6\n", r.cost);
    sqz_alloc_option bad[1] = {{1, NAN}};
    sqz_alloc_item ib[1] = {{1, bad}};
    CHECK(sqz_alloc_solve(ib, 1, 10, ch, &r, &err) != 0 && strstr(err.msg, "not finite"), "NaN cost");
    sqz_alloc_item none[1] = {{0, NULL}};
    CHECK(sqz_alloc_solve(none, 1, 10, ch, &r, &err) != 0 && strstr(err.msg, "no options"), "no options");
    CHECK(sqz_alloc_exact(it, 2, 1u << 30, 1u << 20, ch, &r, &err) != 0, "DP must refuse a huge budget");
}

int main(void) {
    run(1, 400);
    run(0, 400);
    run_brute(BF_CONVEX, 2000);
    run_brute(BF_MONOTONE, 2000);
    run_brute(BF_ARBITRARY, 2000);
    test_edges();
    return tu_done("test_alloc");
}

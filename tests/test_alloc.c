/* The byte-budget allocator (include/sqz/plan.h) against the exact DP.
 *  - separable convex instances (each item's cost convex and decreasing in equal byte
 *    steps): Lagrangian + greedy must equal the optimum exactly;
 *  - arbitrary random instances: never above the budget, never below the optimum, and
 *    within one option step of it; the share of exact optima is printed;
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
    test_edges();
    return tu_done("test_alloc");
}

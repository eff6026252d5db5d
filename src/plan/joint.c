/* Joint width and type options of every block: see include/sqz/joint.h. */
#include "sqz/joint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/grad.h"
#include "sqz/quant.h"

#define BLOCK_MAX 4 /* matrices per block */

void sqz_joint_free(sqz_joint *j) {
    free(j->items); free(j->opts); free(j->width); free(j->types); free(j->quant_dl); free(j->first);
    memset(j, 0, sizeof *j);
}

/* One matrix of a block at one width: its candidate points and their lower hull. */
typedef struct {
    int n;                               /* points */
    int type[2 * SQZ_SENS_MAX_OPTIONS]; /* the options and the narrow ones */
    double bytes[2 * SQZ_SENS_MAX_OPTIONS], cost[2 * SQZ_SENS_MAX_OPTIONS];
    int hull[2 * SQZ_SENS_MAX_OPTIONS], nh; /* point indices, fewest bytes first */
} mat_pts;

static void lower_hull(mat_pts *p) {
    int idx[SQZ_SENS_MAX_OPTIONS], n = p->n;
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++) /* by bytes, then cost */
        for (int k = i; k > 0; k--) {
            int a = idx[k - 1], b = idx[k];
            if (p->bytes[a] < p->bytes[b] || (p->bytes[a] == p->bytes[b] && p->cost[a] <= p->cost[b])) break;
            idx[k - 1] = b, idx[k] = a;
        }
    /* the Pareto staircase (more bytes must buy less cost), then its convex part */
    p->nh = 0;
    for (int i = 0; i < n; i++) {
        int c = idx[i];
        if (p->nh > 0 && p->cost[c] >= p->cost[p->hull[p->nh - 1]]) continue;
        while (p->nh >= 2) {
            int a = p->hull[p->nh - 2], b = p->hull[p->nh - 1];
            /* b is above the segment a-c: not a Lagrangian choice */
            double cross = (p->bytes[b] - p->bytes[a]) * (p->cost[c] - p->cost[a]) -
                           (p->cost[b] - p->cost[a]) * (p->bytes[c] - p->bytes[a]);
            if (cross > 0) break;
            p->nh--;
        }
        p->hull[p->nh++] = c;
    }
}

/* Matrix k of layer l's block at a width keeping `rows_keep` of its rows (or, for o and
 * down, columns `cols_keep`): every type that fits, with exact bytes and scaled cost. */
static int fill_points(const sqz_sens_tensor *t, sqz_option_cost cost, int64_t rows, int64_t cols, double frac,
                       mat_pts *p, sqz_err *err) {
    p->n = 0;
    for (int k = 0; k < t->n_options + t->n_narrow; k++) { /* the narrow ones fit only narrowed rows */
        const sqz_sens_option *o = k < t->n_options ? &t->opt[k] : &t->narrow[k - t->n_options];
        const sqz_type_traits *tt = sqz_type_get(o->type);
        size_t rb;
        if (!tt || cols % tt->block_size) continue;
        if (sqz_type_row_bytes(o->type, cols, &rb, err)) return SQZ_ERR;
        p->type[p->n] = o->type;
        p->bytes[p->n] = (double)rb * (double)rows;
        p->cost[p->n] = cost(o) * frac;
        p->n++;
    }
    if (p->n == 0) { /* no candidate fits the new row length: F16, as sqz_sens_options does */
        size_t rb;
        if (sqz_type_row_bytes(SQZ_TYPE_F16, cols, &rb, err)) return SQZ_ERR;
        double c = INFINITY;
        for (int k = 0; k < t->n_options; k++) /* the finest candidate's cost stands for it */
            if (cost(&t->opt[k]) < c) c = cost(&t->opt[k]);
        p->type[0] = SQZ_TYPE_F16;
        p->bytes[0] = (double)rb * (double)rows;
        p->cost[0] = (isfinite(c) ? c : 0.0) * frac;
        p->n = 1;
    }
    lower_hull(p);
    return SQZ_OK;
}

typedef struct {
    sqz_joint *j;
    int cap;  /* options allocated */
    int n;    /* options used */
} builder;

static int push(builder *b, uint64_t bytes, double cost, int width, const int *types, double qdl, sqz_err *err) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 1024;
        sqz_alloc_option *o = realloc(b->j->opts, (size_t)cap * sizeof *o);
        if (o) b->j->opts = o;
        int *w = o ? realloc(b->j->width, (size_t)cap * sizeof *w) : NULL;
        if (w) b->j->width = w;
        int *t = w ? realloc(b->j->types, (size_t)cap * BLOCK_MAX * sizeof *t) : NULL;
        if (t) b->j->types = t;
        double *q = t ? realloc(b->j->quant_dl, (size_t)cap * sizeof *q) : NULL;
        if (q) b->j->quant_dl = q;
        if (!q) return sqz_fail(err, "joint allocation: out of memory");
        b->cap = cap;
    }
    b->j->opts[b->n].bytes = bytes;
    b->j->opts[b->n].cost = cost;
    b->j->width[b->n] = width;
    for (int i = 0; i < BLOCK_MAX; i++) b->j->types[(size_t)b->n * BLOCK_MAX + i] = types ? types[i] : -1;
    b->j->quant_dl[b->n] = qdl;
    b->n++;
    return SQZ_OK;
}

/* The Lagrangian options of one block at one width: all matrices at their least-cost
 * hull point, then one hull step at a time in order of rising price. */
static int block_options(builder *b, mat_pts *mp, int nm, double removal, int width, sqz_err *err) {
    int at[BLOCK_MAX], types[BLOCK_MAX] = {-1, -1, -1, -1};
    for (int i = 0; i < nm; i++) at[i] = mp[i].nh - 1;
    for (;;) {
        double bytes = 0.0, q = 0.0;
        for (int i = 0; i < nm; i++) {
            int p = mp[i].hull[at[i]];
            bytes += mp[i].bytes[p];
            q += mp[i].cost[p];
            types[i] = mp[i].type[p];
        }
        if (push(b, (uint64_t)bytes, removal + q, width, types, q, err)) return SQZ_ERR;
        int best = -1; /* the next breakpoint: the smallest price at which a matrix steps down */
        double best_l = INFINITY;
        for (int i = 0; i < nm; i++) {
            if (at[i] == 0) continue;
            int hi = mp[i].hull[at[i]], lo = mp[i].hull[at[i] - 1];
            double l = (mp[i].cost[lo] - mp[i].cost[hi]) / (mp[i].bytes[hi] - mp[i].bytes[lo]);
            if (l < best_l) best_l = l, best = i;
        }
        if (best < 0) return SQZ_OK;
        at[best]--;
    }
}

int sqz_joint_build(const sqz_model *m, const sqz_sens *sens, sqz_option_cost cost, double min_keep, sqz_joint *j,
                    sqz_err *err) {
    memset(j, 0, sizeof *j);
    const sqz_llama_config *c = &m->cfg;
    if (!sens->widths || sens->n_widths != c->n_layer)
        return sqz_fail(err, "joint allocation: the estimate has no width options");
    int per = c->n_layer * SQZ_LIN_PER_LAYER, n_glob = sens->n_tensors - per;
    j->n_layer = c->n_layer;
    j->n_items = 2 * c->n_layer + n_glob;
    j->items = calloc((size_t)j->n_items, sizeof *j->items);
    j->first = calloc((size_t)j->n_items, sizeof *j->first);
    if (!j->items || !j->first) return sqz_fail(err, "joint allocation: out of memory");
    builder b = {j, 0, 0};
    int64_t d = c->head_dim, dim = c->dim;
    mat_pts mp[BLOCK_MAX];
    for (int l = 0; l < c->n_layer; l++) {
        const sqz_layer_widths *w = &sens->widths[l];
        int nh = c->layer_n_head[l], nkv = c->layer_n_head_kv[l], nff = c->layer_n_ff[l];
        const sqz_sens_tensor *t = &sens->t[l * SQZ_LIN_PER_LAYER];
        j->first[2 * l] = b.n;
        for (int i = 0; i < w->n_attn; i++) {
            const sqz_width_option *o = &w->attn[i];
            if (o->n_keep < nh && (double)o->n_keep < min_keep * nh) continue;
            if (o->n_keep == 0) {
                if (push(&b, 0, o->dl, i, NULL, 0.0, err)) goto fail;
                continue;
            }
            double fq = (double)o->n_keep / nh, fkv = (double)o->n_keep_kv / nkv;
            if (fill_points(&t[SQZ_LIN_Q], cost, o->n_keep * d, dim, fq, &mp[0], err) ||
                fill_points(&t[SQZ_LIN_K], cost, o->n_keep_kv * d, dim, fkv, &mp[1], err) ||
                fill_points(&t[SQZ_LIN_V], cost, o->n_keep_kv * d, dim, fkv, &mp[2], err) ||
                fill_points(&t[SQZ_LIN_O], cost, dim, o->n_keep * d, fq, &mp[3], err) ||
                block_options(&b, mp, 4, o->dl, i, err))
                goto fail;
        }
        j->first[2 * l + 1] = b.n;
        for (int i = 0; i < w->n_ffn; i++) {
            const sqz_width_option *o = &w->ffn[i];
            if (o->n_keep < nff && (double)o->n_keep < min_keep * nff) continue;
            if (o->n_keep == 0) {
                if (push(&b, 0, o->dl, i, NULL, 0.0, err)) goto fail;
                continue;
            }
            double f = (double)o->n_keep / nff;
            if (fill_points(&t[SQZ_LIN_GATE], cost, o->n_keep, dim, f, &mp[0], err) ||
                fill_points(&t[SQZ_LIN_UP], cost, o->n_keep, dim, f, &mp[1], err) ||
                fill_points(&t[SQZ_LIN_DOWN], cost, dim, o->n_keep, f, &mp[2], err) ||
                block_options(&b, mp, 3, o->dl, i, err))
                goto fail;
        }
    }
    for (int g = 0; g < n_glob; g++) { /* the head (and an untied embedding): their own options */
        const sqz_sens_tensor *t = &sens->t[per + g];
        j->first[2 * c->n_layer + g] = b.n;
        for (int k = 0; k < t->n_options; k++) {
            int types[BLOCK_MAX] = {t->opt[k].type, -1, -1, -1};
            double q = cost(&t->opt[k]);
            if (push(&b, t->opt[k].bytes, q, -1, types, q, err)) goto fail;
        }
    }
    for (int i = 0; i < j->n_items; i++) {
        int end = i + 1 < j->n_items ? j->first[i + 1] : b.n;
        j->items[i].n_options = end - j->first[i];
        j->items[i].options = j->opts + j->first[i];
        if (j->items[i].n_options < 1) {
            sqz_fail(err, "joint allocation: item %d has no option (min_keep %.2f leaves none)", i, min_keep);
            goto fail;
        }
    }
    return SQZ_OK;
fail:
    sqz_joint_free(j);
    return SQZ_ERR;
}

int sqz_joint_decode(const sqz_joint *j, const sqz_sens *sens, const int *choice, sqz_layer_keep *keep, int *plan,
                     sqz_err *err) {
    int nl = j->n_layer, per = nl * SQZ_LIN_PER_LAYER;
    for (int i = 0; i < per + 2; i++) plan[i] = -1;
    memset(keep, 0, (size_t)nl * sizeof *keep);
    for (int l = 0; l < nl; l++) {
        int oa = j->first[2 * l] + choice[2 * l], of = j->first[2 * l + 1] + choice[2 * l + 1];
        const sqz_width_option *a = &sens->widths[l].attn[j->width[oa]], *f = &sens->widths[l].ffn[j->width[of]];
        if (sqz_layer_keep_set(&keep[l], a, f, err)) return SQZ_ERR;
        for (int k = 0; k < 4; k++) plan[l * SQZ_LIN_PER_LAYER + k] = j->types[(size_t)oa * BLOCK_MAX + k];
        for (int k = 0; k < 3; k++) plan[l * SQZ_LIN_PER_LAYER + 4 + k] = j->types[(size_t)of * BLOCK_MAX + k];
    }
    for (int g = 0; g < sens->n_tensors - per; g++) plan[per + g] = j->types[(size_t)(j->first[2 * nl + g] + choice[2 * nl + g]) * BLOCK_MAX];
    return SQZ_OK;
}

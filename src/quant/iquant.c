/* Writers of ggml's codebook i-quants (include/sqz/quant.h): a weighted search over the
 * format's grid points for groups of values and over the scales. Round to nearest in the
 * importance-weighted metric (sqz_convert_row), or the same steps for GPTQ's sweep
 * (src/quant/gptq_kernels.inc): the block's scales from its current values
 * (sqz_iquant_block_params), then one group's grid point at a time from the values the
 * earlier columns' errors have moved (sqz_iquant_round_group), packed at the end.
 *
 * IQ3_S (3.4375 bits per weight): a 256-value block has an f16 d; each sub-block of 32 a
 * 4-bit scale s (step d·(1 + 2s)); each group of 4 values one of 512 grid points (values
 * in {1, 3, ..., 15}) and a free sign per value.
 * IQ3_XXS (3.0625): the same layout of d, 4-bit scales (step d·(0.5 + s)·0.5) and groups
 * of 4, 256 grid points (values in {4, 12, ..., 52, 62}); the signs come in groups of 8
 * with an even count of minus signs (7 bits stored, the 8th implied).
 * IQ2_XXS (2.0625), IQ2_XS (2.3125), IQ2_S (2.5625): groups of 8 values, grid points of
 * {8, 25, 43} (256, 512, 1024 of them), step d·(0.5 + s)·0.25 per 32 values (IQ2_XXS) or
 * per 16; signs with even parity per 8 (IQ2_XXS, IQ2_XS) or free (IQ2_S).
 * Both searched alike: per sub-block its best step over a few candidates around
 * max|x|/(largest grid value) (each: every group's nearest grid point among the
 * neighbours of its cell of rounded levels, src/format/iq_grids.h, then a least-squares
 * step for those points and the points again); then the block's d over candidates around
 * the largest step/31, each sub-block's integer scale the better of the two either side
 * of its ideal; finally d refitted once for the chosen points and scales. For IQ3_XXS a
 * group of 8 whose count of minus signs is odd turns one value's sign: the value (and its
 * group's point, re-searched for the turned target) that costs least. */
#include "sqz/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/iq_grids.h"

#define QK_BLOCK 256 /* values per block: every type written here (ggml's QK_K) */

/* What the codebooks differ in. */
typedef struct book {
    int type, block_bytes;
    int G, levels;                     /* values per grid point; levels per value */
    const uint32_t *grid4;             /* G 4: value j in byte j */
    const uint64_t *grid8;             /* G 8 */
    const uint16_t *cell, *near;       /* the neighbours of each cell of levels */
    float v0, inv_dv;                  /* level k of grid value v: round((v - v0) / dv) */
    float top, cand_dv;                /* the largest grid value; the steps tried below it */
    float mul;                         /* step = d · mul · (1 + 2s) */
    float smul;                        /* 0: step d·(1 + 2s); else d·(0.5 + s)·smul (the dequantizer's order) */
    int parity;                        /* signs in 8s with an even count of minus signs */
    int sub;                           /* values per 4-bit scale: 32, or 16 (IQ2_XS, IQ2_S) */
    int int8;                          /* grid values are int8 (IQ1's {-1, 0, 1}), else uint8 */
} book;

static const book kIQ3S = {SQZ_TYPE_IQ3_S, 110, 4, 8, sqz_iq3s_grid, NULL, sqz_iq3s_cell, sqz_iq3s_near,
                           1.0f, 0.5f, 15.0f, 1.0f, 1.0f, 0.0f, 0, 32, 0};
static const book kIQ3XXS = {SQZ_TYPE_IQ3_XXS, 98, 4, 8, sqz_iq3xxs_grid, NULL, sqz_iq3xxs_cell, sqz_iq3xxs_near,
                             4.0f, 0.125f, 62.0f, 4.0f, 0.25f, 0.5f, 1, 32, 0};
static const book kIQ2XXS = {SQZ_TYPE_IQ2_XXS, 66, 8, 3, NULL, sqz_iq2xxs_grid, sqz_iq2xxs_cell, sqz_iq2xxs_near,
                             8.0f, 1.0f / 17.5f, 43.0f, 4.0f, 0.125f, 0.25f, 1, 32, 0};
static const book kIQ2XS = {SQZ_TYPE_IQ2_XS, 74, 8, 3, NULL, sqz_iq2xs_grid, sqz_iq2xs_cell, sqz_iq2xs_near,
                            8.0f, 1.0f / 17.5f, 43.0f, 4.0f, 0.125f, 0.25f, 1, 16, 0};
static const book kIQ2S = {SQZ_TYPE_IQ2_S, 82, 8, 3, NULL, sqz_iq2s_grid, sqz_iq2s_cell, sqz_iq2s_near,
                           8.0f, 1.0f / 17.5f, 43.0f, 4.0f, 0.125f, 0.25f, 0, 16, 0};

static const book *book_of(int type) {
    return type == SQZ_TYPE_IQ3_S     ? &kIQ3S
           : type == SQZ_TYPE_IQ3_XXS ? &kIQ3XXS
           : type == SQZ_TYPE_IQ2_XXS ? &kIQ2XXS
           : type == SQZ_TYPE_IQ2_XS  ? &kIQ2XS
           : type == SQZ_TYPE_IQ2_S   ? &kIQ2S
                                      : NULL;
}

/* The step of scale s, as the dequantizer computes it (types.c). */
static float step_of(const book *b, float d, int s) {
    return b->smul > 0.0f ? d * (0.5f + (float)s) * b->smul : d * (float)(1 + 2 * s);
}

static float grid_value(const book *b, unsigned point, int j) {
    const uint8_t byte = (uint8_t)(b->grid8 ? b->grid8[point] >> (8 * j) : b->grid4[point] >> (8 * j));
    return b->int8 ? (float)(int8_t)byte : (float)byte;
}

/* The level of target t (in grid values) or of a grid value: its cell coordinate. */
static int level_of(const book *b, float t) {
    const float k = (t - b->v0) * b->inv_dv;
    const int l = k > 0.0f ? (int)(k + 0.5f) : 0;
    return l > b->levels - 1 ? b->levels - 1 : l;
}

/* The grid point nearest to the G targets a (magnitudes; a negative one is a value whose
 * sign was turned) with weights w at step `step`, among the neighbours of their cell; its
 * weighted squared error in *e. */
static unsigned nearest(const book *b, const float *a, const float *w, float step, double *e) {
    const float inv = step > 0.0f ? 1.0f / step : 0.0f;
    int cell = 0;
    for (int j = 0, m = 1; j < b->G; j++, m *= b->levels) cell += level_of(b, a[j] * inv) * m;
    unsigned best = b->near[b->cell[cell]];
    double be = INFINITY;
    /* the innermost loop of every writer here: each point's bytes read once, the
     * type's branches out of the loop (the same doubles as grid_value's) */
    double ad[8], wd[8];
    const double st = step;
    for (int j = 0; j < b->G; j++) ad[j] = a[j], wd[j] = w[j];
    const int first = b->cell[cell], last = b->cell[cell + 1];
    for (int i = first; i < last; i++) {
        const unsigned p = b->near[i];
        const uint64_t bits = b->grid8 ? b->grid8[p] : b->grid4[p];
        double err = 0.0;
        if (b->int8)
            for (int j = 0; j < b->G; j++) {
                const double d = ad[j] - st * (double)(int8_t)(uint8_t)(bits >> (8 * j));
                err += wd[j] * d * d;
            }
        else
            for (int j = 0; j < b->G; j++) {
                const double d = ad[j] - st * (double)(uint8_t)(bits >> (8 * j));
                err += wd[j] * d * d;
            }
        if (err < be) be = err, best = p;
    }
    *e = be;
    return best;
}

/* nearest() for the G targets a with target j's sign turned (its magnitude made negative):
 * the point a group takes when value j's sign must turn to keep the parity. */
static unsigned nearest_turned(const book *b, const float *a, const float *w, float step, int j, double *e) {
    float t[8];
    memcpy(t, a, (size_t)b->G * sizeof(float));
    t[j] = -t[j];
    return nearest(b, t, w, step, e);
}

/* A lower bound of nearest_turned's error for a value of magnitude a, weight w: its own
 * term alone, at the smallest grid value (v0 of these unsigned grids), computed as
 * nearest() computes that term, so a value whose bound reaches the best turn so far is
 * skipped without changing the choice. */
static double turned_bound(const book *b, float a, float w, float step) {
    const double d = (double)-a - (double)step * (double)b->v0;
    return (double)w * d * d;
}

/* The groups of a sub-block (b->sub values x, weights w) at a step: points into pt
 * (sub/G of them), the error returned; with sign parity, turn[h] the value (0..7) of
 * 8-span h whose sign turns, or -1. */
static double sub_points(const book *b, const float *x, const float *w, float step, unsigned *pt, int *turn) {
    const int G = b->G;
    float a[32];
    double e[8], total = 0.0;
    for (int i = 0; i < b->sub; i++) a[i] = fabsf(x[i]);
    for (int g = 0; g < b->sub / G; g++) {
        pt[g] = nearest(b, a + G * g, w + G * g, step, &e[g]);
        total += e[g];
    }
    if (!b->parity) return total;
    for (int h = 0; h < b->sub / 8; h++) {
        turn[h] = -1;
        int neg = 0;
        for (int i = 0; i < 8; i++) neg += x[8 * h + i] < 0.0f;
        if (!(neg & 1)) continue;
        double best = INFINITY;
        unsigned bp = 0;
        for (int i = 0; i < 8; i++) {
            const int v = 8 * h + i, g = v / G;
            if (turned_bound(b, a[v], w[v], step) - e[g] >= best) continue; /* cannot win */
            double et;
            const unsigned p = nearest_turned(b, a + G * g, w + G * g, step, v % G, &et);
            if (et - e[g] < best) best = et - e[g], bp = p, turn[h] = i;
        }
        pt[(8 * h + turn[h]) / G] = bp;
        total += best;
    }
    return total;
}

/* The value of x[i] a sub-block's choice gives: ±step·(grid value). */
static float chosen(const book *b, const float *x, const unsigned *pt, const int *turn, float step, int i, int *neg) {
    *neg = (x[i] < 0.0f) != (b->parity && turn[i / 8] == i % 8);
    const float g = grid_value(b, pt[i / b->G], i % b->G);
    return step * g * (*neg ? -1.0f : 1.0f);
}

/* The least-squares step of a sub-block for fixed points (0 when they carry no weight). */
static float lsq_step(const book *b, const float *x, const float *w, const unsigned *pt, const int *turn) {
    double sag = 0.0, sgg = 0.0;
    for (int i = 0; i < b->sub; i++) {
        int neg;
        const double g = chosen(b, x, pt, turn, 1.0f, i, &neg);
        sag += (double)w[i] * x[i] * g, sgg += (double)w[i] * g * g;
    }
    return sgg > 0.0 ? (float)(sag / sgg) : 0.0f;
}

/* A sub-block's best step (its ideal before the block's d quantizes it). */
static float sub_step(const book *b, const float *x, const float *w) {
    float amax = 0.0f;
    for (int i = 0; i < b->sub; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (amax == 0.0f) return 0.0f;
    unsigned pt[8];
    int turn[4];
    double best = INFINITY;
    float bs = amax / b->top;
    for (int c = 0; c < 7; c++) {
        float s = amax / (b->top - (float)c * b->cand_dv);
        for (int it = 0; it < 2; it++) {
            const double e = sub_points(b, x, w, s, pt, turn);
            if (e < best) best = e, bs = s;
            const float r = lsq_step(b, x, w, pt, turn);
            if (!(r > 0.0f) || r == s) break;
            s = r;
        }
    }
    return bs;
}

/* For the block's d: each sub-block's scale (the two integers either side of its ideal),
 * points and turned signs; the total error. */
static double eval_d(const book *b, const float *x, const float *w, const float *steps, float d, int *sc,
                     unsigned *pt, int *turn) {
    double total = 0.0;
    for (int ib = 0; ib < QK_BLOCK / b->sub; ib++) {
        const float r = d > 0.0f ? (steps[ib] / (d * b->mul) - 1.0f) * 0.5f : 0.0f;
        int lo = (int)floorf(r);
        lo = lo < 0 ? 0 : (lo > 15 ? 15 : lo);
        const int hi = lo < 15 ? lo + 1 : lo;
        double best = INFINITY;
        unsigned tp[8];
        int tt[4];
        for (int s = lo; s <= hi; s++) {
            const double e = sub_points(b, x + b->sub * ib, w + b->sub * ib, step_of(b, d, s), tp, tt);
            if (e < best) {
                best = e, sc[ib] = s;
                memcpy(pt + 8 * ib, tp, sizeof tp);
                memcpy(turn + 4 * ib, tt, sizeof tt);
            }
        }
        total += best;
    }
    return total;
}

static float f16_round(float v) { return sqz_f16_to_f32(sqz_f32_to_f16(v)); }

/* The importances of a block as the search uses them (quantize.c's convention: a tiny
 * floor keeps zero-importance values on a sensible grid; no weights, or all zero, is
 * uniform). */
static void block_weights(const float *wi, float *w) {
    double wsum = 0.0;
    for (int i = 0; i < QK_BLOCK; i++) wsum += wi ? wi[i] : 0.0;
    const float floor_w = wi && wsum > 0.0 ? (float)(1e-6 * wsum / QK_BLOCK) : 1.0f;
    for (int i = 0; i < QK_BLOCK; i++) w[i] = (wi && wsum > 0.0 ? wi[i] : 0.0f) + floor_w;
}

/* A block's d and sub-block scales from its current values (x, importances wi or NULL). */
static void block_params(const book *b, const float *x, const float *wi, sqz_qparams *p) {
    const int nsub = QK_BLOCK / b->sub, sub = b->sub;
    float w[QK_BLOCK], steps[16];
    block_weights(wi, w);
    float smax = 0.0f;
    for (int ib = 0; ib < nsub; ib++) {
        steps[ib] = sub_step(b, x + sub * ib, w + sub * ib);
        smax = fmaxf(smax, steps[ib]);
    }
    int sc[16] = {0}, tsc[16], turn[64], tturn[64];
    unsigned pt[128] = {0}, tpt[128];
    float bd = 0.0f;
    double best = INFINITY;
    if (smax > 0.0f) {
        static const float f[6] = {31.0f, 30.0f, 32.0f, 29.0f, 33.0f, 27.0f};
        for (int c = 0; c < 6; c++) {
            const float d = f16_round(smax / (f[c] * b->mul));
            if (!(d > 0.0f)) continue;
            const double e = eval_d(b, x, w, steps, d, tsc, tpt, tturn);
            if (e < best) {
                best = e, bd = d;
                memcpy(sc, tsc, sizeof sc), memcpy(pt, tpt, sizeof pt), memcpy(turn, tturn, sizeof turn);
            }
        }
        /* d refitted once for the chosen scales and points */
        double sxa = 0.0, saa = 0.0;
        for (int i = 0; i < QK_BLOCK; i++) {
            int neg;
            const double v = chosen(b, x + sub * (i / sub), pt + 8 * (i / sub), turn + 4 * (i / sub),
                                    step_of(b, 1.0f, sc[i / sub]), i % sub, &neg);
            sxa += (double)w[i] * x[i] * v, saa += (double)w[i] * v * v;
        }
        const float d = saa > 0.0 ? f16_round((float)(sxa / saa)) : 0.0f;
        if (d > 0.0f && d != bd) {
            const double e = eval_d(b, x, w, steps, d, tsc, tpt, tturn);
            if (e < best) best = e, bd = d, memcpy(sc, tsc, sizeof sc);
        }
    }
    memset(p, 0, sizeof *p);
    p->type = b->type;
    p->block_size = QK_BLOCK;
    p->sub_size = sub;
    p->n_sub = nsub;
    p->d = sqz_f32_to_f16(bd);
    const float d16 = sqz_f16_to_f32(p->d);
    for (int ib = 0; ib < nsub; ib++) p->sc[ib] = (int16_t)sc[ib], p->scale[ib] = step_of(b, d16, sc[ib]);
}

/* The G values x of group `first / G` (first: the group's first value in the block):
 * their grid point at the sub-block's step, in the importances' metric, and a sign each;
 * levels ±(grid value) and the values they give. With sign parity the group that ends an
 * 8-span completes its parity (an earlier group of the span, IQ3_XXS's first 4, has its
 * levels in lev[-(first % 8) .. -1], already chosen): when the count of minus signs would
 * be odd, the value of this group whose turned sign costs least turns. */
static void round_group(const book *b, const sqz_qparams *p, int first, const float *x, const float *w, int8_t *lev,
                        float *q) {
    const int G = b->G, before = first % 8;
    float a[8], wg[8];
    for (int j = 0; j < G; j++) a[j] = fabsf(x[j]), wg[j] = w ? w[j] : 1.0f;
    const float step = p->scale[first / b->sub];
    double e;
    unsigned pt = nearest(b, a, wg, step, &e);
    int turn = -1;
    if (b->parity && before + G == 8) {
        int neg = 0;
        for (int j = 0; j < before; j++) neg += lev[j - before] < 0;
        for (int j = 0; j < G; j++) neg += x[j] < 0.0f;
        if (neg & 1) {
            double best = INFINITY;
            for (int j = 0; j < G; j++) {
                if (turned_bound(b, a[j], wg[j], step) >= best) continue; /* cannot win */
                double et;
                const unsigned pj = nearest_turned(b, a, wg, step, j, &et);
                if (et < best) best = et, pt = pj, turn = j;
            }
        }
    }
    for (int j = 0; j < G; j++) {
        const int g = (int)grid_value(b, pt, j), neg = (x[j] < 0.0f) != (turn == j);
        lev[j] = (int8_t)(neg ? -g : g);
        /* as the dequantizer: step · g · ±1 */
        q[j] = step * (float)g * (neg ? -1.0f : 1.0f);
    }
}

/* A grid point's index from its G values (each a grid value). */
static unsigned point_index(const book *b, const int8_t *lev) {
    int cell = 0;
    for (int j = 0, m = 1; j < b->G; j++, m *= b->levels) cell += level_of(b, (float)abs(lev[j])) * m;
    return b->near[b->cell[cell]]; /* a grid point's cell lists only itself */
}

static void pack(const book *b, const sqz_qparams *p, const int8_t *lev, uint8_t *out) {
    memset(out, 0, (size_t)b->block_bytes);
    out[0] = (uint8_t)(p->d & 0xFF);
    out[1] = (uint8_t)(p->d >> 8);
    if (b->type == SQZ_TYPE_IQ3_S) { /* f16 d; qs[64]; qh[8]; signs[32]; scales[4] (types.c's dq_iq3_s) */
        for (int k = 0; k < 64; k++) {
            const unsigned pt = point_index(b, lev + 4 * k);
            out[2 + k] = (uint8_t)(pt & 0xFF);
            out[66 + k / 8] |= (uint8_t)(((pt >> 8) & 1) << (k % 8));
        }
        for (int i = 0; i < QK_BLOCK; i++)
            if (lev[i] < 0) out[74 + i / 8] |= (uint8_t)(1u << (i % 8));
        for (int ib = 0; ib < 8; ib++) out[106 + ib / 2] |= (uint8_t)(p->sc[ib] << (4 * (ib % 2)));
        return;
    }
    if (b->sub == 16) { /* IQ2_XS, IQ2_S (types.c's dq_iq2_xs, dq_iq2_s) */
        for (int k = 0; k < 32; k++) {
            const unsigned pt = point_index(b, lev + 8 * k);
            unsigned bits = 0;
            for (int i = 0; i < 8; i++) bits |= (unsigned)(lev[8 * k + i] < 0) << i;
            if (b->parity) { /* u16 qs[32]: 9-bit index, 7-bit sign index */
                const unsigned v = pt | (bits & 127) << 9;
                out[2 + 2 * k] = (uint8_t)(v & 0xFF);
                out[2 + 2 * k + 1] = (uint8_t)(v >> 8);
            } else { /* qs[32] low index bits, signs[32], qh[8] two high bits per group */
                out[2 + k] = (uint8_t)(pt & 0xFF);
                out[34 + k] = (uint8_t)bits;
                out[66 + k / 4] |= (uint8_t)(((pt >> 8) & 3) << (2 * (k % 4)));
            }
        }
        const int sc_at = b->parity ? 66 : 74;
        for (int ib = 0; ib < 16; ib++) out[sc_at + ib / 2] |= (uint8_t)(p->sc[ib] << (4 * (ib % 2)));
        return;
    }
    /* IQ3_XXS: f16 d; qs[64]; per sub-block a u32: four 7-bit sign indices, scale in the
     * top 4 bits. IQ2_XXS: f16 d; per sub-block four point indices (bytes), then that u32 */
    const int two = b->G == 8;
    for (int k = 0; k < 256 / b->G; k++) out[2 + (two ? 8 * (k / 4) + k % 4 : k)] = (uint8_t)point_index(b, lev + b->G * k);
    for (int ib = 0; ib < 8; ib++) {
        uint32_t aux = (uint32_t)p->sc[ib] << 28;
        for (int h = 0; h < 4; h++) {
            unsigned bits = 0;
            for (int i = 0; i < 8; i++) bits |= (unsigned)(lev[32 * ib + 8 * h + i] < 0) << i;
            aux |= (uint32_t)(bits & 127) << (7 * h);
        }
        for (int k = 0; k < 4; k++) out[(two ? 2 + 8 * ib + 4 : 66 + 4 * ib) + k] = (uint8_t)(aux >> (8 * k));
    }
}

static void quantize_block(const book *b, const float *x, const float *wi, uint8_t *out) {
    sqz_qparams p;
    int8_t lev[QK_BLOCK];
    float w[QK_BLOCK];
    block_params(b, x, wi, &p);
    block_weights(wi, w);
    const int G = b->G, sub = b->sub;
    if (!b->parity) {
        float q[QK_BLOCK];
        for (int g = 0; g < QK_BLOCK / G; g++) round_group(b, &p, G * g, x + G * g, w + G * g, lev + G * g, q + G * g);
    } else {
        for (int ib = 0; ib < QK_BLOCK / sub; ib++) {
            unsigned pt[8];
            int turn[4];
            sub_points(b, x + sub * ib, w + sub * ib, p.scale[ib], pt, turn);
            for (int i = 0; i < sub; i++) {
                int neg;
                chosen(b, x + sub * ib, pt, turn, 1.0f, i, &neg);
                const int g = (int)grid_value(b, pt[i / G], i % G);
                lev[sub * ib + i] = (int8_t)(neg ? -g : g);
            }
        }
    }
    pack(b, &p, lev, out);
}

/* ---------------------------------------------------------------- TQ2_0 */

/* TQ2_0 (2.0625 bits per weight) and TQ1_0 (1.6875): a 256-value block of ternary
 * levels q ∈ {-1, 0, 1} and one f16 d, value q·d (TQ2_0 2 bits a level, TQ1_0 5 levels a
 * byte in base 3). For a set S of nonzero levels the best d is Σ_S w|x| / Σ_S w and
 * the error Σ w x² − (Σ_S w|x|)² / Σ_S w, so S is the k largest |x| for the k that
 * maximizes (Σ_S w|x|)² / Σ_S w; d is rounded to f16 and each level is then the nearest
 * of {−d, 0, d}. */
#define TQ2_BYTES 66
#define TQ1_BYTES 54

typedef struct tq2_item {
    float a, w;
    int i;
} tq2_item;

static int tq2_desc(const void *pa, const void *pb) {
    const tq2_item *a = pa, *b = pb;
    if (a->a != b->a) return a->a < b->a ? 1 : -1;
    return a->i - b->i; /* ties in index order: the same bytes from any qsort */
}

static void tq2_params(int type, const float *x, const float *wi, sqz_qparams *p) {
    float w[QK_BLOCK];
    tq2_item v[QK_BLOCK];
    block_weights(wi, w);
    for (int i = 0; i < QK_BLOCK; i++) v[i] = (tq2_item){fabsf(x[i]), w[i], i};
    qsort(v, QK_BLOCK, sizeof v[0], tq2_desc);
    double sa = 0.0, sw = 0.0, best = 0.0;
    float bd = 0.0f;
    for (int k = 0; k < QK_BLOCK && v[k].a > 0.0f; k++) {
        sa += (double)v[k].w * v[k].a, sw += v[k].w;
        const double gain = sa * sa / sw;
        if (gain > best) best = gain, bd = (float)(sa / sw);
    }
    memset(p, 0, sizeof *p);
    p->type = type;
    p->block_size = QK_BLOCK;
    p->sub_size = QK_BLOCK;
    p->n_sub = 1;
    p->d = sqz_f32_to_f16(bd);
    p->scale[0] = sqz_f16_to_f32(p->d);
}

/* The level of x at step d (the nearest of −d, 0, d) and the value it gives, as the
 * dequantizer computes it. */
static float tq2_level(float x, float d, int8_t *q) {
    *q = (int8_t)(d > 0.0f && fabsf(x) > 0.5f * d ? (x < 0.0f ? -1 : 1) : 0);
    return (float)*q * d;
}

static void tq2_pack(const sqz_qparams *p, const int8_t *lev, uint8_t *out) {
    /* qs[64]: value 128h + 32k + m in bits 2k..2k+1 of qs[32h + m], as q + 1; then f16 d */
    memset(out, 0, TQ2_BYTES);
    for (int i = 0; i < QK_BLOCK; i++) {
        const int h = i / 128, k = i % 128 / 32, m = i % 32;
        out[32 * h + m] |= (uint8_t)((lev[i] + 1) << (2 * k));
    }
    out[64] = (uint8_t)(p->d & 0xFF);
    out[65] = (uint8_t)(p->d >> 8);
}

/* A byte of TQ1_0: the base-3 number of up to 5 levels (the first most significant, q + 1
 * each; 4 levels are shifted up one digit) as ⌈v·256/243⌉, types.c's tq1_digit reversed. */
static uint8_t tq1_byte(const int8_t *lev, int stride, int n) {
    unsigned v = 0;
    for (int k = 0; k < n; k++) v = 3 * v + (unsigned)(lev[k * stride] + 1);
    for (int k = n; k < 5; k++) v *= 3;
    return (uint8_t)((v * 256 + 242) / 243);
}

static void tq1_pack(const sqz_qparams *p, const int8_t *lev, uint8_t *out) {
    /* qs[0..31]: digit k of byte m is value 32k + m; qs[32..47]: 160 + 16k + m; qh[0..3]:
     * 240 + 4k + m (4 digits); then f16 d */
    for (int m = 0; m < 32; m++) out[m] = tq1_byte(lev + m, 32, 5);
    for (int m = 0; m < 16; m++) out[32 + m] = tq1_byte(lev + 160 + m, 16, 5);
    for (int m = 0; m < 4; m++) out[48 + m] = tq1_byte(lev + 240 + m, 4, 4);
    out[52] = (uint8_t)(p->d & 0xFF);
    out[53] = (uint8_t)(p->d >> 8);
}

static void ternary_pack(const sqz_qparams *p, const int8_t *lev, uint8_t *out) {
    if (p->type == SQZ_TYPE_TQ1_0) tq1_pack(p, lev, out);
    else tq2_pack(p, lev, out);
}

static void tq2_block(int type, const float *x, const float *wi, uint8_t *out) {
    sqz_qparams p;
    int8_t lev[QK_BLOCK];
    tq2_params(type, x, wi, &p);
    for (int i = 0; i < QK_BLOCK; i++) tq2_level(x[i], p.scale[0], &lev[i]);
    ternary_pack(&p, lev, out);
}

static int is_ternary(int type) { return type == SQZ_TYPE_TQ2_0 || type == SQZ_TYPE_TQ1_0; }

/* ---------------------------------------------------------------- IQ1_S, IQ1_M */

/* IQ1_S (1.5625 bits per weight): a 256-value block has an f16 d; each sub-block of 32 a
 * 3-bit scale s (step d·(2s + 1)) and a shift δ = ±1/8; each group of 8 one of 2048 grid
 * points of {-1, 0, 1}⁸; value step·(g + δ). IQ1_M (1.75): a 3-bit scale per 16 values,
 * δ's sign per group of 8, and d's f16 bits in the top nibbles of the four u16 scale
 * words. No sign bits: the targets are x/step − δ, searched among the neighbours of their
 * cell of rounded levels like the codebooks above. Per scale span its best step over
 * candidates below max|x|/(1 + 1/8) (most values of a ternary grid sit at 0 and ±1, so the
 * best step is well below the largest value), each refined by least squares for its
 * points; then the block's d over candidates around the largest step/15, each span's
 * integer scale the better of the two either side of its ideal; d refitted once. The
 * shift is chosen with the points: per 32 values (IQ1_S) or per group (IQ1_M), the better
 * sign. A value's level is 8g ± 1, the value in units of step/8 (g and δ's sign in one). */
#define IQ1_SHIFT 0.125f
#define IQ1S_BYTES 50
#define IQ1M_BYTES 56

static const book kIQ1 = {SQZ_TYPE_IQ1_S, IQ1S_BYTES, 8, 3, NULL, sqz_iq1s_grid, sqz_iq1s_cell, sqz_iq1s_near,
                          -1.0f, 1.0f, 1.0f, 0.0f, 1.0f, 0.0f, 0, 32, 1};

static int iq1_scale_span(int type) { return type == SQZ_TYPE_IQ1_S ? 32 : 16; }
static int iq1_shift_span(int type) { return type == SQZ_TYPE_IQ1_S ? 32 : 8; }

/* The grid point nearest to 8 values x (weights w) at a step with the shift's sign neg
 * (δ = −1/8 when set): the targets x − step·δ; its error in *e. */
static unsigned iq1_group_point(const float *x, const float *w, float step, int neg, double *e) {
    const float shift = step * (neg ? -IQ1_SHIFT : IQ1_SHIFT);
    float a[8];
    for (int j = 0; j < 8; j++) a[j] = x[j] - shift;
    return nearest(&kIQ1, a, w, step, e);
}

/* One shift span (n values, n/8 groups) at a step: each group's point for either shift
 * sign, the better sign (neg: δ = −1/8) and points kept; the error returned. */
static double iq1_shift_points(const float *x, const float *w, int n, float step, unsigned *pt, int *neg) {
    double best = INFINITY;
    for (int sgn = 0; sgn < 2; sgn++) {
        unsigned tp[4];
        double total = 0.0;
        for (int g = 0; g < n / 8; g++) {
            double e;
            tp[g] = iq1_group_point(x + 8 * g, w + 8 * g, step, sgn, &e);
            total += e;
        }
        if (total < best) best = total, *neg = sgn, memcpy(pt, tp, (size_t)(n / 8) * sizeof *pt);
    }
    return best;
}

/* A scale span's points and shifts at a step (pt: span/8 points; neg: one per shift span). */
static double iq1_span_points(int type, const float *x, const float *w, float step, unsigned *pt, int *neg) {
    const int span = iq1_scale_span(type), sh = iq1_shift_span(type);
    double total = 0.0;
    for (int k = 0; k < span / sh; k++) total += iq1_shift_points(x + sh * k, w + sh * k, sh, step, pt + sh / 8 * k, neg + k);
    return total;
}

/* Value i of a span as its points and shifts give it, in units of the step: g + δ. */
static float iq1_unit(int type, const unsigned *pt, const int *neg, int i) {
    return grid_value(&kIQ1, pt[i / 8], i % 8) + (neg[i / iq1_shift_span(type)] ? -IQ1_SHIFT : IQ1_SHIFT);
}

/* A span's best step (its ideal before the block's d quantizes it). */
static float iq1_span_step(int type, const float *x, const float *w) {
    const int span = iq1_scale_span(type);
    float amax = 0.0f;
    for (int i = 0; i < span; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (amax == 0.0f) return 0.0f;
    static const float f[8] = {1.0f, 0.85f, 0.72f, 0.62f, 0.53f, 0.45f, 0.38f, 0.32f};
    unsigned pt[4];
    int neg[4];
    double best = INFINITY;
    float bs = amax / (1.0f + IQ1_SHIFT);
    for (int c = 0; c < 8; c++) {
        float s = f[c] * amax / (1.0f + IQ1_SHIFT);
        for (int it = 0; it < 2; it++) {
            const double e = iq1_span_points(type, x, w, s, pt, neg);
            if (e < best) best = e, bs = s;
            double sxv = 0.0, svv = 0.0; /* least squares for these points */
            for (int i = 0; i < span; i++) {
                const double v = iq1_unit(type, pt, neg, i);
                sxv += (double)w[i] * x[i] * v, svv += (double)w[i] * v * v;
            }
            const float r = svv > 0.0 ? (float)(sxv / svv) : 0.0f;
            if (!(r > 0.0f) || r == s) break;
            s = r;
        }
    }
    return bs;
}

/* For the block's d: each span's scale (the two integers either side of its ideal), points
 * and shifts; the total error. */
static double iq1_eval_d(int type, const float *x, const float *w, const float *steps, float d, int *sc, unsigned *pt,
                         int *neg) {
    const int span = iq1_scale_span(type), nsh = span / iq1_shift_span(type);
    double total = 0.0;
    for (int ib = 0; ib < QK_BLOCK / span; ib++) {
        const float r = d > 0.0f ? (steps[ib] / d - 1.0f) * 0.5f : 0.0f;
        int lo = (int)floorf(r);
        lo = lo < 0 ? 0 : (lo > 7 ? 7 : lo);
        const int hi = lo < 7 ? lo + 1 : lo;
        double best = INFINITY;
        for (int s = lo; s <= hi; s++) {
            unsigned tp[4];
            int tn[4];
            const double e = iq1_span_points(type, x + span * ib, w + span * ib, d * (float)(2 * s + 1), tp, tn);
            if (e < best) {
                best = e, sc[ib] = s;
                memcpy(pt + span / 8 * ib, tp, (size_t)(span / 8) * sizeof *tp);
                memcpy(neg + nsh * ib, tn, (size_t)nsh * sizeof *tn);
            }
        }
        total += best;
    }
    return total;
}

/* A block's d, scales and (IQ1_S) shifts from its current values; the points and shifts
 * chosen for them in pt/neg when not NULL. */
static void iq1_params(int type, const float *x, const float *wi, sqz_qparams *p, unsigned *pt_out, int *neg_out) {
    const int span = iq1_scale_span(type), nspan = QK_BLOCK / span, nsh = span / iq1_shift_span(type);
    float w[QK_BLOCK], steps[16];
    block_weights(wi, w);
    float smax = 0.0f;
    for (int ib = 0; ib < nspan; ib++) {
        steps[ib] = iq1_span_step(type, x + span * ib, w + span * ib);
        smax = fmaxf(smax, steps[ib]);
    }
    int sc[16] = {0}, tsc[16], neg[32] = {0}, tneg[32];
    unsigned pt[32] = {0}, tpt[32];
    float bd = 0.0f;
    double best = INFINITY;
    if (smax > 0.0f) {
        static const float f[7] = {15.0f, 14.0f, 13.0f, 16.0f, 12.0f, 11.0f, 10.0f};
        for (int c = 0; c < 7; c++) {
            const float d = f16_round(smax / f[c]);
            if (!(d > 0.0f)) continue;
            const double e = iq1_eval_d(type, x, w, steps, d, tsc, tpt, tneg);
            if (e < best) {
                best = e, bd = d;
                memcpy(sc, tsc, sizeof sc), memcpy(pt, tpt, sizeof pt), memcpy(neg, tneg, sizeof neg);
            }
        }
        /* d refitted once for the chosen scales, points and shifts */
        double sxv = 0.0, svv = 0.0;
        for (int i = 0; i < QK_BLOCK; i++) {
            const int ib = i / span;
            const double v = (2 * sc[ib] + 1) * (double)iq1_unit(type, pt + span / 8 * ib, neg + nsh * ib, i % span);
            sxv += (double)w[i] * x[i] * v, svv += (double)w[i] * v * v;
        }
        const float d = svv > 0.0 ? f16_round((float)(sxv / svv)) : 0.0f;
        if (d > 0.0f && d != bd) {
            const double e = iq1_eval_d(type, x, w, steps, d, tsc, tpt, tneg);
            if (e < best) {
                best = e, bd = d;
                memcpy(sc, tsc, sizeof sc), memcpy(pt, tpt, sizeof pt), memcpy(neg, tneg, sizeof neg);
            }
        }
    }
    memset(p, 0, sizeof *p);
    p->type = type;
    p->block_size = QK_BLOCK;
    p->sub_size = span;
    p->n_sub = nspan;
    p->d = sqz_f32_to_f16(bd);
    const float d16 = sqz_f16_to_f32(p->d);
    for (int ib = 0; ib < nspan; ib++) {
        p->sc[ib] = (int16_t)sc[ib], p->scale[ib] = d16 * (float)(2 * sc[ib] + 1);
        /* IQ1_S's shift is the span's (m: -1 for −1/8, else +1); IQ1_M's is each group's */
        if (type == SQZ_TYPE_IQ1_S) p->m[ib] = (int16_t)(neg[ib] ? -1 : 1), p->min[ib] = p->scale[ib] * (neg[ib] ? -IQ1_SHIFT : IQ1_SHIFT);
    }
    if (pt_out) memcpy(pt_out, pt, sizeof pt);
    if (neg_out) memcpy(neg_out, neg, sizeof neg);
}

/* The 8 values x of group `first / 8` at its span's step: the grid point (and, for IQ1_M,
 * the shift) nearest in the importances' metric; levels 8g ± 1 and the values they give,
 * as the dequantizer computes them: step · (g + δ). */
static void iq1_round_group(const sqz_qparams *p, int first, const float *x, const float *w, int8_t *lev, float *q) {
    const int ib = first / p->sub_size;
    const float step = p->scale[ib];
    float wg[8];
    for (int j = 0; j < 8; j++) wg[j] = w ? w[j] : 1.0f;
    unsigned pt;
    int neg;
    if (p->type == SQZ_TYPE_IQ1_S) {
        double e;
        neg = p->m[ib] < 0;
        pt = iq1_group_point(x, wg, step, neg, &e);
    } else {
        iq1_shift_points(x, wg, 8, step, &pt, &neg);
    }
    const float shift = neg ? -IQ1_SHIFT : IQ1_SHIFT;
    for (int j = 0; j < 8; j++) {
        const int g = (int)grid_value(&kIQ1, pt, j);
        lev[j] = (int8_t)(8 * g + (neg ? -1 : 1));
        q[j] = step * ((float)g + shift);
    }
}

/* The grid value g of a level 8g ± 1 (rounded toward the nearest multiple of 8). */
static int iq1_grid_of(int lev) { return (lev + (lev > 0 ? 4 : -4)) / 8; }

/* A group's grid index and shift sign from its levels 8g ± 1. */
static unsigned iq1_point(const int8_t *lev, int *neg) {
    int cell = 0;
    for (int j = 0, m = 1; j < 8; j++, m *= 3) cell += (iq1_grid_of(lev[j]) + 1) * m;
    *neg = lev[0] - 8 * iq1_grid_of(lev[0]) < 0;
    return kIQ1.near[kIQ1.cell[cell]]; /* a grid point's cell lists only itself */
}

static void iq1_pack(const sqz_qparams *p, const int8_t *lev, uint8_t *out) {
    if (p->type == SQZ_TYPE_IQ1_S) { /* f16 d; qs[32]; u16 qh[8]: 3 high bits per group, scale, shift sign */
        memset(out, 0, IQ1S_BYTES);
        out[0] = (uint8_t)(p->d & 0xFF);
        out[1] = (uint8_t)(p->d >> 8);
        for (int ib = 0; ib < 8; ib++) {
            unsigned qh = (unsigned)p->sc[ib] << 12;
            int neg = 0;
            for (int l = 0; l < 4; l++) {
                const unsigned pt = iq1_point(lev + 32 * ib + 8 * l, &neg);
                out[2 + 4 * ib + l] = (uint8_t)(pt & 0xFF);
                qh |= (pt >> 8) << (3 * l);
            }
            qh |= (unsigned)(p->m[ib] < 0) << 15;
            out[34 + 2 * ib] = (uint8_t)(qh & 0xFF);
            out[34 + 2 * ib + 1] = (uint8_t)(qh >> 8);
        }
        return;
    }
    /* IQ1_M: qs[32]; qh[16] (a nibble per group: 3 high bits, shift sign); u16 scales[4] */
    memset(out, 0, IQ1M_BYTES);
    unsigned sc[4] = {0};
    for (int k = 0; k < 32; k++) {
        int neg;
        const unsigned pt = iq1_point(lev + 8 * k, &neg);
        out[k] = (uint8_t)(pt & 0xFF);
        out[32 + k / 2] |= (uint8_t)(((pt >> 8) | (unsigned)neg << 3) << (4 * (k % 2)));
    }
    for (int j = 0; j < 16; j++) sc[j / 4] |= (unsigned)p->sc[j] << (3 * (j % 4));
    for (int k = 0; k < 4; k++) {
        sc[k] |= ((unsigned)p->d >> (4 * k) & 0xF) << 12;
        out[48 + 2 * k] = (uint8_t)(sc[k] & 0xFF);
        out[48 + 2 * k + 1] = (uint8_t)(sc[k] >> 8);
    }
}

static void iq1_block(int type, const float *x, const float *wi, uint8_t *out) {
    sqz_qparams p;
    unsigned pt[32];
    int neg[32];
    int8_t lev[QK_BLOCK];
    iq1_params(type, x, wi, &p, pt, neg);
    const int span = iq1_scale_span(type), nsh = span / iq1_shift_span(type);
    for (int i = 0; i < QK_BLOCK; i++) {
        const int ib = i / span, k = i % span;
        const int g = (int)grid_value(&kIQ1, pt[span / 8 * ib + k / 8], k % 8);
        lev[i] = (int8_t)(8 * g + (neg[nsh * ib + k / iq1_shift_span(type)] ? -1 : 1));
    }
    iq1_pack(&p, lev, out);
}

static int is_iq1(int type) { return type == SQZ_TYPE_IQ1_S || type == SQZ_TYPE_IQ1_M; }

/* ---------------------------------------------------------------- for GPTQ (quant.h) */

int sqz_iquant_block_params(int type, const float *x, const float *w, sqz_qparams *p, sqz_err *err) {
    const book *b = book_of(type);
    if (!b && !is_ternary(type) && !is_iq1(type)) return sqz_fail(err, "quantize: no codebook writer for type id %d", type);
    for (int i = 0; i < QK_BLOCK; i++)
        if (!isfinite(x[i]))
            return sqz_fail(err, "quantize %s: value %d of the block is not finite", sqz_type_get(type)->name, i);
    if (b) block_params(b, x, w, p);
    else if (is_iq1(type)) iq1_params(type, x, w, p, NULL, NULL);
    else tq2_params(type, x, w, p);
    return SQZ_OK;
}

void sqz_iquant_round_group(const sqz_qparams *p, int first, const float *x, const float *w, int8_t *lev, float *q) {
    if (is_ternary(p->type)) q[0] = tq2_level(x[0], p->scale[0], &lev[0]);
    else if (is_iq1(p->type)) iq1_round_group(p, first, x, w, lev, q);
    else round_group(book_of(p->type), p, first, x, w, lev, q);
}

void sqz_iquant_pack_block(const sqz_qparams *p, const int8_t *levels, void *dst) {
    if (is_ternary(p->type)) ternary_pack(p, levels, dst);
    else if (is_iq1(p->type)) iq1_pack(p, levels, dst);
    else pack(book_of(p->type), p, levels, dst);
}

int sqz_iquant_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err) {
    const book *b = book_of(type);
    if (!b && !is_ternary(type) && !is_iq1(type)) return sqz_fail(err, "quantize: no codebook writer for type id %d", type);
    const char *name = sqz_type_get(type)->name;
    if (n < 0 || n % QK_BLOCK)
        return sqz_fail(err, "quantize %s: row length %lld is not a multiple of %d", name, (long long)n, QK_BLOCK);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return sqz_fail(err, "quantize %s: value %lld of the row is not finite", name, (long long)i);
    if (weights)
        for (int64_t i = 0; i < n; i++)
            if (!(weights[i] >= 0.0f && isfinite(weights[i])))
                return sqz_fail(err, "quantize %s: weight %lld is %g, expected a finite value >= 0", name, (long long)i,
                                (double)weights[i]);
    uint8_t *out = dst;
    for (int64_t k = 0; k < n / QK_BLOCK; k++) {
        const float *wk = weights ? weights + k * QK_BLOCK : NULL;
        if (b) quantize_block(b, x + k * QK_BLOCK, wk, out + k * b->block_bytes);
        else if (is_iq1(type)) iq1_block(type, x + k * QK_BLOCK, wk, out + k * (type == SQZ_TYPE_IQ1_S ? IQ1S_BYTES : IQ1M_BYTES));
        else tq2_block(type, x + k * QK_BLOCK, wk, out + k * (type == SQZ_TYPE_TQ1_0 ? TQ1_BYTES : TQ2_BYTES));
    }
    return SQZ_OK;
}

/* Writers of ggml's codebook i-quants (include/sqz/quant.h): a weighted search over the
 * format's grid points for groups of values and over the scales. Round to nearest in the
 * importance-weighted metric (sqz_convert_row), or the same steps for GPTQ's sweep
 * (src/quant/gptq_kernels.inc): the block's scales from its current values
 * (sqz_iquant_block_params), then one group's grid point at a time from the values the
 * earlier columns' errors have moved (sqz_iquant_round_group), packed at the end.
 *
 * IQ3_S (3.4375 bits per weight): a 256-value block has an f16 d; each sub-block of 32 a
 * 4-bit scale s (step d·(1 + 2s)); each group of 4 values one of 512 grid points (values
 * in {1, 3, ..., 15}) and a free sign per value. Per sub-block: its best step over a few
 * candidates around max|x|/15 (each: every group's nearest grid point among the
 * neighbours of its cell of rounded levels, src/format/iq_grids.h, then a least-squares
 * step for those points and the points again); then the block's d over candidates around
 * the largest step/31, each sub-block's integer scale the better of the two either side
 * of its ideal; finally d refitted once for the chosen points and scales. */
#include "sqz/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/iq_grids.h"

#define IQ3S_BLOCK 256
#define IQ3S_BYTES 110

static float iq3s_value(unsigned point, int j) { return (float)(uint8_t)(sqz_iq3s_grid[point] >> (8 * j)); }

/* The grid point nearest to the 4 magnitudes a (weights w) at step `step`, among the
 * neighbours of their cell; its weighted squared error in *e. */
static unsigned iq3s_nearest(const float *a, const float *w, float step, double *e) {
    const float inv = step > 0.0f ? 1.0f / step : 0.0f;
    int cell = 0;
    for (int j = 0; j < 4; j++) {
        float t = (a[j] * inv - 1.0f) * 0.5f;
        int k = t > 0.0f ? (int)(t + 0.5f) : 0;
        cell += (k > 7 ? 7 : k) << (3 * j);
    }
    unsigned best = sqz_iq3s_near[sqz_iq3s_cell[cell]];
    double be = INFINITY;
    for (int i = sqz_iq3s_cell[cell]; i < sqz_iq3s_cell[cell + 1]; i++) {
        const unsigned p = sqz_iq3s_near[i];
        double err = 0.0;
        for (int j = 0; j < 4; j++) {
            const double d = (double)a[j] - (double)step * iq3s_value(p, j);
            err += (double)w[j] * d * d;
        }
        if (err < be) be = err, best = p;
    }
    *e = be;
    return best;
}

/* The 8 groups of a sub-block at a step: points into pt, the error returned. */
static double iq3s_sub_points(const float *a, const float *w, float step, unsigned *pt) {
    double total = 0.0, e;
    for (int g = 0; g < 8; g++) {
        pt[g] = iq3s_nearest(a + 4 * g, w + 4 * g, step, &e);
        total += e;
    }
    return total;
}

/* The least-squares step of a sub-block for fixed points (0 when they carry no weight). */
static float iq3s_lsq_step(const float *a, const float *w, const unsigned *pt) {
    double sag = 0.0, sgg = 0.0;
    for (int i = 0; i < 32; i++) {
        const double g = iq3s_value(pt[i / 4], i % 4);
        sag += (double)w[i] * a[i] * g, sgg += (double)w[i] * g * g;
    }
    return sgg > 0.0 ? (float)(sag / sgg) : 0.0f;
}

/* A sub-block's best step (its ideal before the block's d quantizes it). */
static float iq3s_sub_step(const float *a, const float *w) {
    float amax = 0.0f;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, a[i]);
    if (amax == 0.0f) return 0.0f;
    static const float top[7] = {15.0f, 14.0f, 13.0f, 12.0f, 11.0f, 10.0f, 9.0f};
    unsigned pt[8];
    double best = INFINITY;
    float bs = amax / 15.0f;
    for (int c = 0; c < 7; c++) {
        float s = amax / top[c];
        for (int it = 0; it < 2; it++) {
            const double e = iq3s_sub_points(a, w, s, pt);
            if (e < best) best = e, bs = s;
            const float r = iq3s_lsq_step(a, w, pt);
            if (!(r > 0.0f) || r == s) break;
            s = r;
        }
    }
    return bs;
}

/* For the block's d: each sub-block's scale (the two integers either side of its ideal)
 * and points; the total error. */
static double iq3s_eval(const float *a, const float *w, const float *steps, float d, int *sc, unsigned *pt) {
    double total = 0.0;
    for (int ib = 0; ib < 8; ib++) {
        const float r = d > 0.0f ? (steps[ib] / d - 1.0f) * 0.5f : 0.0f;
        int lo = (int)floorf(r);
        lo = lo < 0 ? 0 : (lo > 15 ? 15 : lo);
        const int hi = lo < 15 ? lo + 1 : lo;
        double best = INFINITY;
        unsigned tp[8];
        for (int s = lo; s <= hi; s++) {
            const double e = iq3s_sub_points(a + 32 * ib, w + 32 * ib, d * (float)(1 + 2 * s), tp);
            if (e < best) {
                best = e, sc[ib] = s;
                memcpy(pt + 8 * ib, tp, sizeof tp);
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
static void iq3s_weights(const float *wi, float *w) {
    double wsum = 0.0;
    for (int i = 0; i < IQ3S_BLOCK; i++) wsum += wi ? wi[i] : 0.0;
    const float floor_w = wi && wsum > 0.0 ? (float)(1e-6 * wsum / IQ3S_BLOCK) : 1.0f;
    for (int i = 0; i < IQ3S_BLOCK; i++) w[i] = (wi && wsum > 0.0 ? wi[i] : 0.0f) + floor_w;
}

/* A block's d and sub-block scales from its current values (x, importances wi or NULL). */
static void iq3s_params(const float *x, const float *wi, sqz_qparams *p) {
    float a[IQ3S_BLOCK], w[IQ3S_BLOCK], steps[8];
    for (int i = 0; i < IQ3S_BLOCK; i++) a[i] = fabsf(x[i]);
    iq3s_weights(wi, w);
    float smax = 0.0f;
    for (int ib = 0; ib < 8; ib++) {
        steps[ib] = iq3s_sub_step(a + 32 * ib, w + 32 * ib);
        smax = fmaxf(smax, steps[ib]);
    }
    int sc[8] = {0}, tsc[8];
    unsigned pt[64] = {0}, tpt[64];
    float bd = 0.0f;
    double best = INFINITY;
    if (smax > 0.0f) {
        static const float f[6] = {31.0f, 30.0f, 32.0f, 29.0f, 33.0f, 27.0f};
        for (int c = 0; c < 6; c++) {
            const float d = f16_round(smax / f[c]);
            if (!(d > 0.0f)) continue;
            const double e = iq3s_eval(a, w, steps, d, tsc, tpt);
            if (e < best) best = e, bd = d, memcpy(sc, tsc, sizeof sc), memcpy(pt, tpt, sizeof pt);
        }
        /* d refitted once for the chosen scales and points */
        double sxa = 0.0, saa = 0.0;
        for (int i = 0; i < IQ3S_BLOCK; i++) {
            const double v = (double)(1 + 2 * sc[i / 32]) * iq3s_value(pt[i / 4], i % 4);
            sxa += (double)w[i] * a[i] * v, saa += (double)w[i] * v * v;
        }
        const float d = saa > 0.0 ? f16_round((float)(sxa / saa)) : 0.0f;
        if (d > 0.0f && d != bd) {
            const double e = iq3s_eval(a, w, steps, d, tsc, tpt);
            if (e < best) best = e, bd = d, memcpy(sc, tsc, sizeof sc);
        }
    }
    memset(p, 0, sizeof *p);
    p->type = SQZ_TYPE_IQ3_S;
    p->block_size = IQ3S_BLOCK;
    p->sub_size = 32;
    p->n_sub = 8;
    p->d = sqz_f32_to_f16(bd);
    const float d16 = sqz_f16_to_f32(p->d);
    for (int ib = 0; ib < 8; ib++) p->sc[ib] = (int16_t)sc[ib], p->scale[ib] = d16 * (float)(1 + 2 * sc[ib]);
}

/* The 4 values x of group `first / 4` (first: the group's first value in the block):
 * their grid point at the sub-block's step, in the importances' metric, and a sign each;
 * levels ±(grid value) and the values they give. */
static void iq3s_group(const sqz_qparams *p, int first, const float *x, const float *w, int8_t *lev, float *q) {
    float a[4], wg[4];
    for (int j = 0; j < 4; j++) a[j] = fabsf(x[j]), wg[j] = w ? w[j] : 1.0f;
    double e;
    const unsigned pt = iq3s_nearest(a, wg, p->scale[first / 32], &e);
    for (int j = 0; j < 4; j++) {
        const int g = (int)iq3s_value(pt, j);
        lev[j] = (int8_t)(x[j] < 0.0f ? -g : g);
        /* as the dequantizer: (d·(1 + 2s)) · g · ±1 */
        q[j] = p->scale[first / 32] * (float)g * (x[j] < 0.0f ? -1.0f : 1.0f);
    }
}

/* A grid point's index from its 4 values (each a grid value 1..15). */
static unsigned iq3s_index(const int8_t *lev) {
    int cell = 0;
    for (int j = 0; j < 4; j++) cell += ((abs(lev[j]) - 1) / 2) << (3 * j);
    return sqz_iq3s_near[sqz_iq3s_cell[cell]]; /* a grid point's cell lists only itself */
}

static void iq3s_pack(const sqz_qparams *p, const int8_t *lev, uint8_t *out) {
    /* f16 d; qs[64]; qh[8]; signs[32]; scales[4] (types.c's dq_iq3_s) */
    memset(out, 0, IQ3S_BYTES);
    out[0] = (uint8_t)(p->d & 0xFF);
    out[1] = (uint8_t)(p->d >> 8);
    for (int k = 0; k < 64; k++) {
        const unsigned pt = iq3s_index(lev + 4 * k);
        out[2 + k] = (uint8_t)(pt & 0xFF);
        out[66 + k / 8] |= (uint8_t)(((pt >> 8) & 1) << (k % 8));
    }
    for (int i = 0; i < IQ3S_BLOCK; i++)
        if (lev[i] < 0) out[74 + i / 8] |= (uint8_t)(1u << (i % 8));
    for (int ib = 0; ib < 8; ib++) out[106 + ib / 2] |= (uint8_t)(p->sc[ib] << (4 * (ib % 2)));
}

static void iq3s_block(const float *x, const float *wi, uint8_t *out) {
    sqz_qparams p;
    int8_t lev[IQ3S_BLOCK];
    float q[IQ3S_BLOCK], w[IQ3S_BLOCK];
    iq3s_params(x, wi, &p);
    iq3s_weights(wi, w);
    for (int g = 0; g < IQ3S_BLOCK / 4; g++) iq3s_group(&p, 4 * g, x + 4 * g, w + 4 * g, lev + 4 * g, q + 4 * g);
    iq3s_pack(&p, lev, out);
}

/* ---------------------------------------------------------------- for GPTQ (quant.h) */

int sqz_iquant_block_params(int type, const float *x, const float *w, sqz_qparams *p, sqz_err *err) {
    if (type != SQZ_TYPE_IQ3_S) return sqz_fail(err, "quantize: no codebook writer for type id %d", type);
    for (int i = 0; i < IQ3S_BLOCK; i++)
        if (!isfinite(x[i])) return sqz_fail(err, "quantize IQ3_S: value %d of the block is not finite", i);
    iq3s_params(x, w, p);
    return SQZ_OK;
}

void sqz_iquant_round_group(const sqz_qparams *p, int first, const float *x, const float *w, int8_t *lev, float *q) {
    iq3s_group(p, first, x, w, lev, q);
}

void sqz_iquant_pack_block(const sqz_qparams *p, const int8_t *levels, void *dst) { iq3s_pack(p, levels, dst); }

int sqz_iquant_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err) {
    if (type != SQZ_TYPE_IQ3_S) return sqz_fail(err, "quantize: no codebook writer for type id %d", type);
    if (n < 0 || n % IQ3S_BLOCK)
        return sqz_fail(err, "quantize IQ3_S: row length %lld is not a multiple of %d", (long long)n, IQ3S_BLOCK);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return sqz_fail(err, "quantize IQ3_S: value %lld of the row is not finite", (long long)i);
    if (weights)
        for (int64_t i = 0; i < n; i++)
            if (!(weights[i] >= 0.0f && isfinite(weights[i])))
                return sqz_fail(err, "quantize IQ3_S: weight %lld is %g, expected a finite value >= 0", (long long)i,
                                (double)weights[i]);
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / IQ3S_BLOCK; b++)
        iq3s_block(x + b * IQ3S_BLOCK, weights ? weights + b * IQ3S_BLOCK : NULL, out + b * IQ3S_BYTES);
    return SQZ_OK;
}

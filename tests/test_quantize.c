/* Quantizers: ggml block layouts, the weighted scale search, and the GPTQ helpers.
 *
 * Run without arguments it is a unit test. Bit-exactness with llama.cpp is checked
 * elsewhere (tests/t_quant_gguf_py.sh): `test_quantize --emit FILE` writes a GGUF (through
 * sqz's GGUF writer) holding random and heavy-tailed rows, sqz's quantization of them for
 * every quantizable type (and their F16/BF16 conversion, plus a row of edge values) and
 * sqz's dequantization, which tests/py/check_quant_gguf_py.py compares with gguf-py's
 * dequantizers and with gguf-py's and llama.cpp's own quantizers.
 *
 * The types are the type table's: every type whose traits have `quantize` set (no list
 * of them here). Levels reconstructed by sqz_quant_round_with_params must equal the type
 * table's dequantizer (src/quant/types.c) bit for bit; the search must beat (or tie) the
 * plain ggml reference rounding (absmax for Q4_0/Q5_0/Q8_0, min/max for Q4_1/Q5_1),
 * re-implemented below from ggml-quants.c's *_ref functions; weights must pull the error
 * onto the important columns; sqz_convert_row must write every writable type; bad input
 * must fail cleanly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/gguf_write.h"
#include "sqz/quant.h"
#include "testutil.h"

/* The quantizable types, read from the type table once in main (kTypes[0..N_TYPES)). */
static int kTypes[SQZ_TYPE_COUNT];
static int N_TYPES;

static void load_types(void) {
    N_TYPES = tu_quant_types(kTypes);
    for (int i = 0; i < N_TYPES; i++) {
        const int t = kTypes[i];
        const sqz_type_traits *tt = sqz_type_get(t);
        sqz_err err = {{0}};
        int lo, hi;
        /* a quantizable type must be readable, writable (through sqz_quantize_row, not a
         * float writer), and known to the quantizer */
        CHECK(tt->dequantize != NULL && tt->from_float == NULL && sqz_type_writable(t), "%s: quantize set without "
              "dequantize or with another writer", tt->name);
        CHECK(sqz_quant_supported(t) && sqz_quant_level_range(t, &lo, &hi, &err) == SQZ_OK, "%s: %s", tt->name,
              err.msg);
        CHECK(tt->block_size == 32 || tt->block_size == 256, "%s: block size %lld", tt->name,
              (long long)tt->block_size);
    }
    CHECK(N_TYPES >= 11, "only %d quantizable types in the table", N_TYPES);
    printf("quantizable types:");
    for (int i = 0; i < N_TYPES; i++) printf(" %s", sqz_type_get(kTypes[i])->name);
    printf("\n");
}

/* Upper bounds on the relative RMSE for N(0, 0.02^2) data: llama.cpp's own quantizers
 * (ggml_quantize_chunk, measured by tests/py/check_quant_gguf_py.py on such data) reach
 * these; sqz's search must not be worse. A new quantizable type needs its bound here. */
static double max_rel_of(int type) {
    switch (type) {
    case SQZ_TYPE_Q8_0: return 0.00545;
    case SQZ_TYPE_Q5_1: return 0.0387;
    case SQZ_TYPE_Q5_0: return 0.04345;
    case SQZ_TYPE_Q4_1: return 0.0799;
    case SQZ_TYPE_Q4_0: return 0.0874;
    case SQZ_TYPE_IQ4_NL: return 0.0774;
    case SQZ_TYPE_IQ4_XS: return 0.0780;
    case SQZ_TYPE_Q6_K: return 0.01805;
    case SQZ_TYPE_Q5_K: return 0.0370;
    case SQZ_TYPE_Q4_K: return 0.0726;
    case SQZ_TYPE_Q3_K: return 0.1543;
    case SQZ_TYPE_Q2_K: return 0.3026;
    default: return -1.0;
    }
}

/* ---------------- random numbers ---------------- */

static tu_rng rng = {0x9E3779B97F4A7C15ull};

/* Student-t with 3 degrees of freedom: heavy tails like real weight rows. */
static double student3(void) {
    const double z = tu_gauss(&rng);
    double c = 0.0;
    for (int k = 0; k < 3; k++) {
        const double g = tu_gauss(&rng);
        c += g * g;
    }
    return z / sqrt(c / 3.0);
}

static void fill(float *x, int64_t n, int dist) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(0.02 * (dist == 0 ? tu_gauss(&rng) : student3()));
}

/* ---------------- helpers ---------------- */

static int dequant(int type, const void *q, float *y, int64_t n) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt || !tt->dequantize) return -1;
    tt->dequantize(q, y, n);
    return 0;
}

static double wsse(const float *x, const float *y, const float *w, int64_t n) {
    double e = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)x[i] - y[i];
        e += (w ? w[i] : 1.0) * d * d;
    }
    return e;
}

static int nearest(float v) { return (int)lrintf(v); }

/* ggml's quantize_row_q4_1_ref / q5_1_ref, re-implemented as a baseline: d = (max-min)/15
 * (31), m = min, levels (x - min)/d + 0.5 truncated; dequantized as l*f16(d) + f16(m). */
static void ref_q_1(int type, const float *x, float *y, int64_t n) {
    const int lmax = type == SQZ_TYPE_Q4_1 ? 15 : 31;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float mn = xb[0], mx = xb[0];
        for (int j = 1; j < 32; j++) mn = fminf(mn, xb[j]), mx = fmaxf(mx, xb[j]);
        const float d = (mx - mn) / (float)lmax, id = d ? 1.0f / d : 0.0f;
        const float dh = sqz_f16_to_f32(sqz_f32_to_f16(d)), mh = sqz_f16_to_f32(sqz_f32_to_f16(mn));
        for (int j = 0; j < 32; j++) {
            int l = (int)((xb[j] - mn) * id + 0.5f);
            l = l < 0 ? 0 : (l > lmax ? lmax : l);
            y[32 * b + j] = (float)l * dh + mh;
        }
    }
}

/* The plain ggml rounding of the 32-block types that have one, or 0 (none here). */
static int ref_naive(int type, const float *x, float *y, int64_t n);

/* ggml's quantize_row_q4_0_ref / q5_0_ref / q8_0_ref, re-implemented as a baseline: the
 * largest |x| is mapped to -8 (-16) or to +-127 without any search. */
static void ref_q_0(int type, const float *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
        float d, id;
        int lo, hi, bias;
        if (type == SQZ_TYPE_Q8_0) {
            d = amax / 127.0f, lo = -127, hi = 127, bias = 0;
        } else {
            const int half = type == SQZ_TYPE_Q4_0 ? 8 : 16;
            d = max / -(float)half, lo = 0, hi = 2 * half - 1, bias = half;
        }
        id = d ? 1.0f / d : 0.0f;
        const float dh = sqz_f16_to_f32(sqz_f32_to_f16(d));
        for (int j = 0; j < 32; j++) {
            int l;
            if (type == SQZ_TYPE_Q8_0) {
                l = nearest(xb[j] * id);
            } else {
                l = (int)(xb[j] * id + (float)bias + 0.5f); /* ggml truncates after +0.5 */
            }
            l = l < lo ? lo : (l > hi ? hi : l);
            y[32 * b + j] = (float)(l - bias) * dh;
        }
    }
}

static int ref_naive(int type, const float *x, float *y, int64_t n) {
    switch (type) {
    case SQZ_TYPE_Q4_0:
    case SQZ_TYPE_Q5_0:
    case SQZ_TYPE_Q8_0: ref_q_0(type, x, y, n); return 1;
    case SQZ_TYPE_Q4_1:
    case SQZ_TYPE_Q5_1: ref_q_1(type, x, y, n); return 1;
    default: return 0;
    }
}

/* ---------------- checks ---------------- */

/* Quantizes rows, checks the reconstruction against the table's dequantizer, returns the
 * weighted SSE of the result (or -1 on failure). */
static double quantize_check(int type, const float *x, int64_t n, const float *w, uint8_t *q, float *y) {
    sqz_err err = {{0}};
    const sqz_type_traits *tt = sqz_type_get(type);
    if (sqz_quantize_row(type, x, q, n, w, &err) != SQZ_OK) {
        CHECK(0, "%s: quantize failed: %s", tt->name, err.msg);
        return -1;
    }
    if (dequant(type, q, y, n) != 0) {
        CHECK(0, "%s: no dequantizer in the type table", tt->name);
        return -1;
    }
    /* the same blocks through the GPTQ helpers must give identical bytes and values */
    uint8_t blk[512];
    int mism_bytes = 0, mism_vals = 0;
    for (int64_t b = 0; b < n / tt->block_size; b++) {
        sqz_qparams p;
        int8_t L[SQZ_QBLOCK_MAX];
        const float *xb = x + b * tt->block_size;
        CHECK(sqz_quant_block_params(type, xb, w ? w + b * tt->block_size : NULL, &p, &err) == SQZ_OK, "%s", err.msg);
        for (int i = 0; i < tt->block_size; i++) {
            const float v = sqz_quant_round_with_params(&p, i, xb[i], &L[i]);
            const float ref = y[b * tt->block_size + i];
            if (memcmp(&v, &ref, sizeof v) != 0 && !(v == 0.0f && ref == 0.0f)) mism_vals++;
        }
        sqz_quant_pack_block(&p, L, blk);
        if (memcmp(blk, q + (size_t)b * tt->block_bytes, tt->block_bytes) != 0) mism_bytes++;
    }
    CHECK(mism_vals == 0, "%s: %d values from round_with_params differ from the table's dequantizer", tt->name,
          mism_vals);
    CHECK(mism_bytes == 0, "%s: %d blocks packed by the helpers differ from sqz_quantize_row", tt->name, mism_bytes);
    return wsse(x, y, w, n);
}

static void test_types(void) {
    const int64_t n = 4096;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *yr = malloc(n * sizeof(float));
    float *w = malloc(n * sizeof(float));
    uint8_t *q = malloc(n * 2);
    for (int t = 0; t < N_TYPES; t++) {
        const int type = kTypes[t];
        const char *name = sqz_type_get(type)->name;
        const double max_rel = max_rel_of(type);
        CHECK(max_rel > 0, "%s: no RMSE bound in max_rel_of", name);
        /* dist 2: the Gaussian rows shifted by +0.03, so that most blocks lie off zero (a min
         * of either sign matters for Q4_1/Q5_1) */
        for (int dist = 0; dist < 3; dist++) {
            fill(x, n, dist == 1);
            if (dist == 2)
                for (int64_t i = 0; i < n; i++) x[i] += 0.03f;
            const double e = quantize_check(type, x, n, NULL, q, y);
            double sx2 = 0.0;
            for (int64_t i = 0; i < n; i++) sx2 += (double)x[i] * x[i];
            const double rel = sqrt(e / sx2);
            if (dist == 0) CHECK(rel < max_rel, "%s: relative RMSE %.4f above %.4f", name, rel, max_rel);
            double er = -1.0;
            if (ref_naive(type, x, yr, n)) {
                er = wsse(x, yr, NULL, n);
                CHECK(e <= er, "%s dist %d: searched SSE %.6g above ggml reference rounding %.6g", name, dist, e, er);
            }
            printf("  %-6s %-7s bpw %5.2f  rel rmse %.5f", name, dist == 0 ? "gauss" : dist == 1 ? "student" : "shifted",
                   sqz_type_bpw(type), rel);
            if (er >= 0) printf("  (ggml's plain rounding %.5f)", sqrt(er / sx2));
            printf("\n");
        }
        /* importance weights: heavy on a quarter of the columns */
        fill(x, n, 1);
        for (int64_t i = 0; i < n; i++) w[i] = (i % 4 == 0) ? 100.0f : 1.0f;
        const double ew = quantize_check(type, x, n, w, q, y);
        quantize_check(type, x, n, NULL, q, yr);
        const double eu = wsse(x, yr, w, n);
        CHECK(ew <= eu, "%s: weighted search gives weighted SSE %.6g, above the unweighted quantization's %.6g", name,
              ew, eu);
        if (ref_naive(type, x, yr, n)) {
            const double er = wsse(x, yr, w, n);
            CHECK(ew <= er, "%s: weighted SSE %.6g above ggml's plain rounding's %.6g", name, ew, er);
        }
    }
    free(x), free(y), free(yr), free(w), free(q);
}

static void test_special_blocks(void) {
    float x[256], y[256];
    uint8_t q[512];
    for (int t = 0; t < N_TYPES; t++) {
        const int type = kTypes[t];
        const char *name = sqz_type_get(type)->name;
        const int bs = (int)sqz_type_get(type)->block_size;
        memset(x, 0, sizeof x);
        quantize_check(type, x, bs, NULL, q, y);
        int nz = 0;
        for (int i = 0; i < bs; i++) nz += y[i] != 0.0f;
        CHECK(nz == 0, "%s: all-zero block dequantizes to %d non-zeros", name, nz);
        /* a constant block and a single spike must be represented closely */
        for (int i = 0; i < bs; i++) x[i] = -0.5f;
        const double ec = quantize_check(type, x, bs, NULL, q, y);
        CHECK(sqrt(ec / bs) < 0.5 * 0.05, "%s: constant block rmse %.4g", name, sqrt(ec / bs));
        memset(x, 0, sizeof x);
        x[bs / 2 + 3] = 3.0f;
        quantize_check(type, x, bs, NULL, q, y);
        CHECK(fabsf(y[bs / 2 + 3] - 3.0f) < 0.15f, "%s: spike 3.0 dequantizes to %g", name, (double)y[bs / 2 + 3]);
        /* all-zero weights fall back to something finite and sensible */
        fill(x, bs, 0);
        float w0[256] = {0};
        quantize_check(type, x, bs, w0, q, y);
        CHECK(sqrt(wsse(x, y, NULL, bs) / bs) < 0.02, "%s: zero-weight block rmse %.4g", name,
              sqrt(wsse(x, y, NULL, bs) / bs));
    }
}

static void test_errors(void) {
    sqz_err err = {{0}};
    float x[64] = {0};
    uint8_t q[256];
    CHECK(sqz_quantize_row(SQZ_TYPE_Q4_K, x, q, 64, NULL, &err) == SQZ_ERR && strstr(err.msg, "multiple"),
          "row of 64 for Q4_K accepted: %s", err.msg);
    CHECK(sqz_quantize_row(SQZ_TYPE_Q4_0, x, q, 48, NULL, &err) == SQZ_ERR, "row of 48 for Q4_0 accepted");
    CHECK(sqz_quantize_row(SQZ_TYPE_Q8_K, x, q, 256, NULL, &err) == SQZ_ERR && strstr(err.msg, "Q8_K"),
          "Q8_K should be unsupported: %s", err.msg);
    CHECK(sqz_quantize_row(SQZ_TYPE_F16, x, q, 32, NULL, &err) == SQZ_ERR && strstr(err.msg, "F16"),
          "F16 is converted, not quantized: %s", err.msg);
    CHECK(!sqz_quant_supported(SQZ_TYPE_F16) && !sqz_quant_supported(SQZ_TYPE_Q8_K) &&
              !sqz_quant_supported(SQZ_TYPE_Q8_1) && !sqz_quant_supported(-1) && !sqz_quant_supported(SQZ_TYPE_COUNT) &&
              sqz_quant_supported(SQZ_TYPE_Q2_K) && sqz_quant_supported(SQZ_TYPE_Q4_1) &&
              sqz_quant_supported(SQZ_TYPE_Q5_1),
          "sqz_quant_supported");
    x[37] = NAN;
    CHECK(sqz_quantize_row(SQZ_TYPE_Q8_0, x, q, 64, NULL, &err) == SQZ_ERR && strstr(err.msg, "[32, 64)"),
          "NaN accepted or not located: %s", err.msg);
    x[37] = 0.0f;
    float w[64];
    for (int i = 0; i < 64; i++) w[i] = 1.0f;
    w[3] = -1.0f;
    CHECK(sqz_quantize_row(SQZ_TYPE_Q8_0, x, q, 64, w, &err) == SQZ_ERR && strstr(err.msg, "weight"),
          "negative weight accepted: %s", err.msg);
    int lo, hi;
    CHECK(sqz_quant_level_range(SQZ_TYPE_Q3_K, &lo, &hi, &err) == SQZ_OK && lo == -4 && hi == 3, "Q3_K levels");
    CHECK(sqz_quant_level_range(SQZ_TYPE_Q8_0, &lo, &hi, &err) == SQZ_OK && lo == -127 && hi == 127, "Q8_0 levels");
    CHECK(sqz_quant_level_range(SQZ_TYPE_Q4_1, &lo, &hi, &err) == SQZ_OK && lo == 0 && hi == 15, "Q4_1 levels");
    CHECK(sqz_quant_level_range(SQZ_TYPE_Q5_1, &lo, &hi, &err) == SQZ_OK && lo == 0 && hi == 31, "Q5_1 levels");
    CHECK(sqz_quant_level_range(SQZ_TYPE_BF16, &lo, &hi, &err) == SQZ_ERR, "BF16 has no levels");
}

/* Q4_1/Q5_1: the min is stored as is (added by the dequantizer) and may be negative or
 * positive; blocks entirely above or below zero are represented to within half a step. */
static void test_affine(void) {
    static const int types[2] = {SQZ_TYPE_Q4_1, SQZ_TYPE_Q5_1};
    for (int t = 0; t < 2; t++) {
        const int type = types[t];
        const char *name = sqz_type_get(type)->name;
        for (int sign = -1; sign <= 1; sign += 2) {
            float x[32], y[32];
            uint8_t q[32];
            for (int i = 0; i < 32; i++) x[i] = (float)sign * (1.0f + 0.25f * (float)tu_urand(&rng));
            quantize_check(type, x, 32, NULL, q, y);
            sqz_qparams p;
            sqz_err err = {{0}};
            CHECK(sqz_quant_block_params(type, x, NULL, &p, &err) == SQZ_OK, "%s", err.msg);
            const float m = sqz_f16_to_f32(p.dmin), d = sqz_f16_to_f32(p.d);
            /* the stored min: bytes 2..3 of the block, and min[0] = -m */
            CHECK((uint16_t)(q[2] | (q[3] << 8)) == p.dmin && p.min[0] == -m && p.scale[0] == d,
                  "%s: stored d/m differ from the params", name);
            CHECK(sign < 0 ? m < -0.9f : m > 0.9f, "%s sign %d: min %g", name, sign, (double)m);
            double emax = 0.0;
            for (int i = 0; i < 32; i++) emax = fmax(emax, fabs((double)x[i] - y[i]));
            CHECK(emax <= 0.5 * d * 1.001 + 1e-3, "%s sign %d: max error %g above half a step %g", name, sign, emax,
                  0.5 * (double)d);
        }
        /* the level range is unsigned: a spread block uses both ends, 0 and lmax */
        float x[32];
        for (int i = 0; i < 32; i++) x[i] = -0.3f + 0.02f * (float)i;
        sqz_qparams p;
        sqz_err err = {{0}};
        int lo, hi, seen_lo = 0, seen_hi = 0;
        sqz_quant_level_range(type, &lo, &hi, &err);
        CHECK(sqz_quant_block_params(type, x, NULL, &p, &err) == SQZ_OK, "%s", err.msg);
        for (int i = 0; i < 32; i++) {
            int8_t l;
            sqz_quant_round_with_params(&p, i, x[i], &l);
            seen_lo |= l == lo, seen_hi |= l == hi;
        }
        CHECK(seen_lo && seen_hi && sqz_f16_to_f32(p.dmin) < -0.25f, "%s: a ramp from -0.3 uses levels %d and %d: %d %d, "
              "min %g", name, lo, hi, seen_lo, seen_hi, (double)sqz_f16_to_f32(p.dmin));
    }
}

/* sqz_convert_row writes every writable type (sqz_type_writable): the float types bit for bit as
 * sqz_f32_to_f16 / sqz_f32_to_bf16 (round to nearest even), the quantized ones as
 * sqz_quantize_row; every writable type reads back through its dequantizer. */
static void test_convert(void) {
    enum { N = 512 };
    float x[N], y[N], w[N];
    uint8_t a[4 * N], b[4 * N];
    sqz_err err = {{0}};
    fill(x, N, 1);
    /* edge values for the conversions: ties, subnormals, overflow, inf, signed zero */
    const float edge[] = {0.0f, -0.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f,
                          65504.0f, 65519.0f, 65520.0f, -1e9f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-14f, 3e-39f,
                          INFINITY, -INFINITY, 1e30f};
    memcpy(x, edge, sizeof edge);
    for (int i = 0; i < N; i++) w[i] = 1.0f + (float)(i % 3);
    int n_writable = 0;
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
        const sqz_type_traits *tt = sqz_type_get(t);
        if (!tt) continue;
        const int64_t n = tt->block_size == 1 ? N : 256;
        if (!sqz_type_writable(t)) {
            CHECK(sqz_convert_row(t, x, a, n - n % tt->block_size, NULL, &err) == SQZ_ERR && strstr(err.msg, tt->name),
                  "%s: not writable, yet converted: %s", tt->name, err.msg);
            continue;
        }
        n_writable++;
        CHECK(tt->dequantize != NULL, "%s: writable but not readable", tt->name);
        size_t rb;
        CHECK(sqz_type_row_bytes(t, n, &rb, &err) == SQZ_OK && rb <= sizeof a, "%s", err.msg);
        if (tt->quantize) {
            float xs[256];
            fill(xs, 256, 1);
            CHECK(sqz_convert_row(t, xs, a, 256, w, &err) == SQZ_OK, "%s: %s", tt->name, err.msg);
            CHECK(sqz_quantize_row(t, xs, b, 256, w, &err) == SQZ_OK, "%s: %s", tt->name, err.msg);
            CHECK(memcmp(a, b, rb) == 0, "%s: sqz_convert_row differs from sqz_quantize_row", tt->name);
            continue;
        }
        if (tt->codebook) { /* a grid search (its quality: t_quant_gguf_py); a non-finite value is refused */
            float xs[256];
            fill(xs, 256, 1);
            CHECK(sqz_convert_row(t, xs, a, 256, w, &err) == SQZ_OK, "%s: %s", tt->name, err.msg);
            CHECK(sqz_convert_row(t, x, a, n, w, &err) == SQZ_ERR && strstr(err.msg, tt->name) &&
                      strstr(err.msg, "not finite"),
                  "%s: the edge row (infinities, NaN): %s", tt->name, err.msg);
            continue;
        }
        CHECK(sqz_convert_row(t, x, a, n, w, &err) == SQZ_OK, "%s: %s", tt->name, err.msg);
        tt->dequantize(a, y, n);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            uint32_t want;
            if (t == SQZ_TYPE_F32) {
                memcpy(&want, &x[i], 4);
            } else {
                const uint16_t h = t == SQZ_TYPE_F16 ? sqz_f32_to_f16(x[i]) : sqz_f32_to_bf16(x[i]);
                const float v = t == SQZ_TYPE_F16 ? sqz_f16_to_f32(h) : sqz_bf16_to_f32(h);
                bad += (a[2 * i] | (a[2 * i + 1] << 8)) != h;
                memcpy(&want, &v, 4);
            }
            uint32_t got;
            memcpy(&got, &y[i], 4);
            bad += got != want;
        }
        CHECK(bad == 0, "%s: %d converted values differ", tt->name, bad);
    }
    CHECK(n_writable >= N_TYPES + 3, "%d writable types", n_writable);
    /* round to nearest even, spot checks */
    CHECK(sqz_f32_to_f16(1.0f + 0x1p-11f) == 0x3C00 && sqz_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3C02 &&
              sqz_f32_to_f16(65520.0f) == 0x7C00 && sqz_f32_to_bf16(1.0f + 0x1p-8f) == 0x3F80 &&
              sqz_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3F82,
          "round to nearest even");
    CHECK(sqz_convert_row(SQZ_TYPE_Q4_0, x, a, 48, NULL, &err) == SQZ_ERR && strstr(err.msg, "multiple"),
          "row of 48 for Q4_0: %s", err.msg);
    CHECK(sqz_convert_row(4, x, a, 32, NULL, &err) == SQZ_ERR, "type id 4 is unknown");
    CHECK(sqz_convert_row(SQZ_TYPE_F16, x, a, -1, NULL, &err) == SQZ_ERR, "negative length");
    CHECK(sqz_convert_row(SQZ_TYPE_F16, x, a, 0, NULL, &err) == SQZ_OK, "empty row: %s", err.msg);
}

/* GPTQ use: fix the scales from the block, then round values that have moved a little;
 * each rounding must be the nearest grid value of the fixed grid. */
static void test_fixed_params(void) {
    float x[256];
    for (int t = 0; t < N_TYPES; t++) {
        const int type = kTypes[t];
        const sqz_type_traits *tt = sqz_type_get(type);
        sqz_err err = {{0}};
        sqz_qparams p;
        fill(x, tt->block_size, 0);
        CHECK(sqz_quant_block_params(type, x, NULL, &p, &err) == SQZ_OK, "%s", err.msg);
        int lo, hi, bad = 0;
        sqz_quant_level_range(type, &lo, &hi, &err);
        for (int i = 0; i < tt->block_size; i++) {
            const float v = x[i] + (float)(0.01 * tu_gauss(&rng));
            int8_t l;
            const float r = sqz_quant_round_with_params(&p, i, v, &l);
            /* no other level of this sub-block is closer */
            for (int k = lo; k <= hi; k++) {
                const int j = i / p.sub_size;
                float alt;
                if (type == SQZ_TYPE_IQ4_NL || type == SQZ_TYPE_IQ4_XS) {
                    static const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
                    alt = p.scale[j] * (float)kv[k];
                } else {
                    alt = p.scale[j] * (float)k - p.min[j];
                }
                if (fabsf(v - alt) < fabsf(v - r) * (1.0f - 1e-6f) - 1e-12f) bad++;
            }
        }
        CHECK(bad == 0, "%s: %d roundings were not the nearest grid value", tt->name, bad);
    }
}

/* ---------------- --emit: the input of check_quant_gguf_py.py ---------------- */

/* The edge row of the float conversions: ties to even for F16 and BF16, subnormals,
 * overflow, infinities, signed zeros, quiet NaNs, then random bit patterns over the whole
 * exponent range (no NaNs: their payloads differ between converters). */
static void fill_edge(float *x, int64_t n) {
    static const float e[] = {0.0f, -0.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -1.0f - 0x1p-11f, 1.0f + 0x1p-8f,
                              1.0f + 3 * 0x1p-8f, 65504.0f, 65519.0f, 65520.0f, -65520.0f, 1e9f, 0x1p-24f, 0x1p-25f,
                              0x1.8p-25f, 0x1.8p-24f, 0x1p-14f, 0x1.ff8p-15f, 3e-39f, -1e-45f, INFINITY, -INFINITY,
                              NAN, -NAN, 3.4e38f, 0x1.0101p0f, 0x1.0180p0f, 0x1.0080p0f};
    const int64_t ne = (int64_t)(sizeof e / sizeof e[0]);
    for (int64_t i = 0; i < n; i++) {
        if (i < ne) {
            x[i] = e[i];
            continue;
        }
        uint32_t u;
        do {
            u = (uint32_t)(tu_urand(&rng) * 4294967296.0);
            if (i % 2) u = (u & 0x807FFFFFu) | ((uint32_t)(96 + (int)(tu_urand(&rng) * 64)) << 23); /* near f16 range */
            /* exact F16 values (i % 8 == 1) and F16 ties (half of i % 8 == 5); BF16 ties
             * (i % 8 == 3) and exact BF16 values (i % 8 == 7) */
            if (i % 4 == 1) u &= i % 8 == 1 ? 0xFFFFE000u : 0xFFFFF000u;
            if (i % 4 == 3) u = (u & 0xFFFF0000u) | (i % 8 == 3 ? 0x8000u : 0u);
        } while ((u & 0x7F800000u) == 0x7F800000u);
        memcpy(&x[i], &u, 4);
    }
}

static int emit(const char *path) {
    enum { ROWS = 16, COLS = 1024 };
    /* the cases: quantized types get gauss, student and tw (student weighted); the float
     * conversions gauss, student and edge (fill_edge) */
    static const char *qcases[3] = {"gauss", "student", "tw"}, *fcases[3] = {"gauss", "student", "edge"};
    static const int ftypes[2] = {SQZ_TYPE_F16, SQZ_TYPE_BF16};
    int types[SQZ_TYPE_COUNT], nt = 0;
    for (int t = 0; t < N_TYPES; t++) types[nt++] = kTypes[t];
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) /* the codebook i-quants (IQ3_S): quantized cases too */
        if (sqz_type_get(t) && sqz_type_get(t)->codebook) types[nt++] = t;
    for (int t = 0; t < 2; t++) types[nt++] = ftypes[t];
    sqz_err err = {{0}};
    sqz_gguf_writer w;
    sqz_gguf_writer_init(&w);
    float *src[3], *wt = malloc(COLS * sizeof(float));
    for (int d = 0; d < 3; d++) {
        src[d] = malloc(ROWS * COLS * sizeof(float));
        if (d < 2) fill(src[d], (int64_t)ROWS * COLS, d);
        else fill_edge(src[d], (int64_t)ROWS * COLS);
    }
    for (int i = 0; i < COLS; i++) wt[i] = (float)exp(1.5 * tu_gauss(&rng)); /* log-normal importances */
    int ok = sqz_gguf_set_str(&w, "general.architecture", "sqztest", &err) == SQZ_OK &&
             sqz_gguf_set_u32(&w, "sqztest.rows", ROWS, &err) == SQZ_OK &&
             sqz_gguf_set_u32(&w, "sqztest.cols", COLS, &err) == SQZ_OK;
    const int64_t ne_src[2] = {COLS, ROWS}, ne_w[1] = {COLS};
    char name[64];
    ok = ok && sqz_gguf_add_tensor(&w, "src.gauss", SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
    ok = ok && sqz_gguf_add_tensor(&w, "src.student", SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
    ok = ok && sqz_gguf_add_tensor(&w, "src.edge", SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
    ok = ok && sqz_gguf_add_tensor(&w, "weights", SQZ_TYPE_F32, 1, ne_w, &err) == SQZ_OK;
    for (int t = 0; ok && t < nt; t++) {
        const sqz_type_traits *tt = sqz_type_get(types[t]);
        for (int d = 0; ok && d < 3; d++) {
            const char *c = tt->block_size > 1 ? qcases[d] : fcases[d];
            snprintf(name, sizeof name, "q.%s.%s", tt->name, c);
            ok = sqz_gguf_add_tensor(&w, name, types[t], 2, ne_src, &err) == SQZ_OK;
            snprintf(name, sizeof name, "deq.%s.%s", tt->name, c);
            ok = ok && sqz_gguf_add_tensor(&w, name, SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
        }
    }
    ok = ok && sqz_gguf_write_begin(&w, path, &err) == SQZ_OK;
    for (int d = 0; ok && d < 3; d++) ok = sqz_gguf_write_data(&w, src[d], ROWS * COLS * sizeof(float), &err) == SQZ_OK;
    ok = ok && sqz_gguf_write_data(&w, wt, COLS * sizeof(float), &err) == SQZ_OK;
    uint8_t *q = malloc(COLS * 4);
    float *y = malloc(ROWS * COLS * sizeof(float));
    for (int t = 0; ok && t < nt; t++) {
        const sqz_type_traits *tt = sqz_type_get(types[t]);
        for (int d = 0; ok && d < 3; d++) {
            /* quantized: gauss, student, student weighted; float: gauss, student, edge */
            const float *x = src[d == 0 ? 0 : (d == 1 || tt->block_size > 1 ? 1 : 2)];
            const size_t rb = (size_t)(COLS / tt->block_size) * tt->block_bytes;
            for (int r = 0; ok && r < ROWS; r++) { /* streamed row by row */
                ok = sqz_convert_row(types[t], x + (size_t)r * COLS, q, COLS, d == 2 ? wt : NULL, &err) == SQZ_OK &&
                     sqz_gguf_write_data(&w, q, rb, &err) == SQZ_OK;
                if (ok) tt->dequantize(q, y + (size_t)r * COLS, COLS);
            }
            ok = ok && sqz_gguf_write_data(&w, y, ROWS * COLS * sizeof(float), &err) == SQZ_OK;
        }
    }
    ok = ok && sqz_gguf_write_end(&w, &err) == SQZ_OK;
    sqz_gguf_writer_free(&w);
    free(q), free(y), free(wt), free(src[0]), free(src[1]), free(src[2]);
    if (!ok) {
        fprintf(stderr, "test_quantize --emit: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* Block rescaling (sqz_rescale_row): only the scale fields change, every value of a block
 * is multiplied by one factor (so the fields are the ones the dequantizer is linear in),
 * and with power 1 each block's projection on its source equals the source's energy;
 * power 0 and types without such fields leave the bytes alone. */
static void test_rescale(void) {
    enum { N = 512 };
    float x[N], qa[N], qb[N];
    uint8_t a[4 * N], b[4 * N];
    sqz_err err = {{0}};
    int n_scaled = 0;
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
        const sqz_type_traits *tt = sqz_type_get(t);
        if (!tt || !(tt->quantize || tt->codebook)) continue;
        size_t rb;
        fill(x, N, 1);
        CHECK(sqz_type_row_bytes(t, N, &rb, &err) == SQZ_OK && sqz_convert_row(t, x, a, N, NULL, &err) == SQZ_OK,
              "%s: %s", tt->name, err.msg);
        memcpy(b, a, rb);
        CHECK(sqz_rescale_row(t, x, b, N, 0.0, &err) == SQZ_OK && memcmp(a, b, rb) == 0, "%s: power 0 changed bytes",
              tt->name);
        for (int k = 0; k < 2; k++) {
            const double power = k ? 0.5 : 1.0;
            memcpy(b, a, rb);
            CHECK(sqz_rescale_row(t, x, b, N, power, &err) == SQZ_OK, "%s: %s", tt->name, err.msg);
            if (!tt->n_scales) {
                CHECK(memcmp(a, b, rb) == 0, "%s: no scale fields, yet bytes changed", tt->name);
                continue;
            }
            int other = 0, prop = 0, target = 0, moved = 0;
            double maxdev = 0.0; /* the largest |f - 1|: below f16's step no field moves */
            tt->dequantize(a, qa, N);
            tt->dequantize(b, qb, N);
            for (int64_t blk = 0; blk < N / tt->block_size; blk++) {
                const uint8_t *pa = a + blk * tt->block_bytes, *pb = b + blk * tt->block_bytes;
                for (size_t i = 0; i < tt->block_bytes; i++) {
                    int field = 0;
                    for (int f = 0; f < tt->n_scales; f++) field |= i == (size_t)tt->scale_at[f] || i == (size_t)tt->scale_at[f] + 1;
                    other += !field && pa[i] != pb[i];
                    moved += field && pa[i] != pb[i];
                }
                double sxx = 0, sxa = 0, sxb = 0, amax = 0;
                const int64_t i0 = blk * tt->block_size;
                const int64_t g0 = i0 / SQZ_RESCALE_GROUP * SQZ_RESCALE_GROUP; /* the factor's group */
                for (int64_t i = g0; i < g0 + SQZ_RESCALE_GROUP; i++) {
                    sxx += (double)x[i] * x[i], sxa += (double)x[i] * qa[i], sxb += (double)x[i] * qb[i];
                    amax = fabs(qa[i]) > amax ? fabs(qa[i]) : amax;
                }
                const double f = pow(sxx / sxa, power);
                maxdev = fabs(f - 1.0) > maxdev ? fabs(f - 1.0) : maxdev;
                for (int64_t i = i0; i < i0 + tt->block_size; i++) prop += fabs(qb[i] - f * qa[i]) > 2e-3 * amax;
                if (i0 != g0) continue; /* one target check per group */
                /* the f16 fields' rounding: 2^-11 relative each */
                target += fabs(sxb / (sxa * f) - 1.0) > 2e-3;
            }
            CHECK(other == 0, "%s: rescaling changed %d bytes outside the scale fields", tt->name, other);
            CHECK(moved > 0 || maxdev < 2e-3, "%s: no scale field changed (factors up to 1 +- %g)", tt->name, maxdev);
            CHECK(prop == 0, "%s (power %g): %d values not scaled by their block's factor", tt->name, power, prop);
            CHECK(target == 0, "%s (power %g): %d blocks off the target projection", tt->name, power, target);
            n_scaled += k == 0;
        }
    }
    CHECK(n_scaled >= 20, "only %d types rescaled", n_scaled);
    CHECK(sqz_rescale_row(SQZ_TYPE_Q4_K, x, b, 100, 1.0, &err) == SQZ_ERR && strstr(err.msg, "multiple"),
          "row of 100 for Q4_K: %s", err.msg);
    CHECK(sqz_rescale_row(4, x, b, 32, 1.0, &err) == SQZ_ERR, "type id 4 is unknown");
}

int main(int argc, char **argv) {
    load_types();
    if (argc == 3 && strcmp(argv[1], "--emit") == 0) return emit(argv[2]);
    test_types();
    test_special_blocks();
    test_errors();
    test_affine();
    test_convert();
    test_fixed_params();
    test_rescale();
    return tu_done("test_quantize");
}

/* Quantizers: ggml block layouts, the weighted scale search, and the GPTQ helpers.
 *
 * Run without arguments it is a unit test. Bit-exactness with llama.cpp is checked
 * elsewhere (tests/t_quant_gguf_py.sh): `test_quantize --emit FILE` writes a GGUF (through
 * sqz's GGUF writer) holding random and heavy-tailed rows, sqz's quantization of them for
 * every type and sqz's dequantization, which tests/py/check_quant_gguf_py.py compares
 * with gguf-py's dequantizers and with gguf-py's and llama.cpp's own quantizers.
 *
 * Here: levels reconstructed by sqz_quant_round_with_params must equal the type table's
 * dequantizer (src/quant/types.c) bit for bit; the search must beat (or tie) the plain
 * ggml reference rounding, re-implemented below from ggml-quants.c's *_ref functions;
 * weights must pull the error onto the important columns; bad input must fail cleanly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/gguf_write.h"
#include "sqz/quant.h"
#include "testutil.h"

static const int kTypes[] = {SQZ_TYPE_Q8_0, SQZ_TYPE_Q5_0, SQZ_TYPE_Q4_0, SQZ_TYPE_IQ4_NL, SQZ_TYPE_Q6_K,
                             SQZ_TYPE_Q5_K, SQZ_TYPE_Q4_K, SQZ_TYPE_Q3_K, SQZ_TYPE_Q2_K};
#define N_TYPES ((int)(sizeof(kTypes) / sizeof(kTypes[0])))

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
    /* Upper bounds on the relative RMSE for N(0, 0.02^2) data: llama.cpp's own quantizers
     * (ggml_quantize_chunk, measured by tests/py/check_quant_gguf_py.py on such data) reach
     * these; sqz's search must not be worse. */
    static const double max_rel[N_TYPES] = {0.00545, 0.04345, 0.0874, 0.0774, 0.01805, 0.0370, 0.0726, 0.1543, 0.3026};
    for (int t = 0; t < N_TYPES; t++) {
        const int type = kTypes[t];
        const char *name = sqz_type_get(type)->name;
        for (int dist = 0; dist < 2; dist++) {
            fill(x, n, dist);
            const double e = quantize_check(type, x, n, NULL, q, y);
            double sx2 = 0.0;
            for (int64_t i = 0; i < n; i++) sx2 += (double)x[i] * x[i];
            const double rel = sqrt(e / sx2);
            if (dist == 0) CHECK(rel < max_rel[t], "%s: relative RMSE %.4f above %.4f", name, rel, max_rel[t]);
            if (type == SQZ_TYPE_Q4_0 || type == SQZ_TYPE_Q5_0 || type == SQZ_TYPE_Q8_0) {
                ref_q_0(type, x, yr, n);
                const double er = wsse(x, yr, NULL, n);
                CHECK(e <= er, "%s dist %d: searched SSE %.6g above ggml reference rounding %.6g", name, dist, e, er);
            }
            printf("  %-6s %-7s bpw %5.2f  rel rmse %.5f\n", name, dist ? "student" : "gauss", sqz_type_bpw(type), rel);
        }
        /* importance weights: heavy on a quarter of the columns */
        fill(x, n, 1);
        for (int64_t i = 0; i < n; i++) w[i] = (i % 4 == 0) ? 100.0f : 1.0f;
        const double ew = quantize_check(type, x, n, w, q, y);
        quantize_check(type, x, n, NULL, q, yr);
        const double eu = wsse(x, yr, w, n);
        CHECK(ew <= eu, "%s: weighted search gives weighted SSE %.6g, above the unweighted quantization's %.6g", name,
              ew, eu);
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
    CHECK(sqz_quantize_row(SQZ_TYPE_Q4_1, x, q, 32, NULL, &err) == SQZ_ERR && strstr(err.msg, "Q4_1"),
          "Q4_1 should be unsupported: %s", err.msg);
    CHECK(!sqz_quant_supported(SQZ_TYPE_F16) && sqz_quant_supported(SQZ_TYPE_Q2_K), "sqz_quant_supported");
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
                if (type == SQZ_TYPE_IQ4_NL) {
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

static int emit(const char *path) {
    enum { ROWS = 16, COLS = 1024 };
    static const char *dists[3] = {"gauss", "student", "tw"};
    sqz_err err = {{0}};
    sqz_gguf_writer w;
    sqz_gguf_writer_init(&w);
    float *src[2], *wt = malloc(COLS * sizeof(float));
    for (int d = 0; d < 2; d++) {
        src[d] = malloc(ROWS * COLS * sizeof(float));
        fill(src[d], (int64_t)ROWS * COLS, d);
    }
    for (int i = 0; i < COLS; i++) wt[i] = (float)exp(1.5 * tu_gauss(&rng)); /* log-normal importances */
    int ok = sqz_gguf_set_str(&w, "general.architecture", "sqztest", &err) == SQZ_OK &&
             sqz_gguf_set_u32(&w, "sqztest.rows", ROWS, &err) == SQZ_OK &&
             sqz_gguf_set_u32(&w, "sqztest.cols", COLS, &err) == SQZ_OK;
    const int64_t ne_src[2] = {COLS, ROWS}, ne_w[1] = {COLS};
    char name[64];
    ok = ok && sqz_gguf_add_tensor(&w, "src.gauss", SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
    ok = ok && sqz_gguf_add_tensor(&w, "src.student", SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
    ok = ok && sqz_gguf_add_tensor(&w, "weights", SQZ_TYPE_F32, 1, ne_w, &err) == SQZ_OK;
    for (int t = 0; ok && t < N_TYPES; t++) {
        for (int d = 0; ok && d < 3; d++) {
            snprintf(name, sizeof name, "q.%s.%s", sqz_type_get(kTypes[t])->name, dists[d]);
            ok = sqz_gguf_add_tensor(&w, name, kTypes[t], 2, ne_src, &err) == SQZ_OK;
            snprintf(name, sizeof name, "deq.%s.%s", sqz_type_get(kTypes[t])->name, dists[d]);
            ok = ok && sqz_gguf_add_tensor(&w, name, SQZ_TYPE_F32, 2, ne_src, &err) == SQZ_OK;
        }
    }
    ok = ok && sqz_gguf_write_begin(&w, path, &err) == SQZ_OK;
    for (int d = 0; ok && d < 2; d++) ok = sqz_gguf_write_data(&w, src[d], ROWS * COLS * sizeof(float), &err) == SQZ_OK;
    ok = ok && sqz_gguf_write_data(&w, wt, COLS * sizeof(float), &err) == SQZ_OK;
    uint8_t *q = malloc(COLS * 2);
    float *y = malloc(ROWS * COLS * sizeof(float));
    for (int t = 0; ok && t < N_TYPES; t++) {
        const sqz_type_traits *tt = sqz_type_get(kTypes[t]);
        for (int d = 0; ok && d < 3; d++) {
            const float *x = src[d == 0 ? 0 : 1];
            const size_t rb = (size_t)(COLS / tt->block_size) * tt->block_bytes;
            for (int r = 0; ok && r < ROWS; r++) { /* streamed row by row */
                ok = sqz_quantize_row(kTypes[t], x + (size_t)r * COLS, q, COLS, d == 2 ? wt : NULL, &err) == SQZ_OK &&
                     sqz_gguf_write_data(&w, q, rb, &err) == SQZ_OK;
                if (ok) tt->dequantize(q, y + (size_t)r * COLS, COLS);
            }
            ok = ok && sqz_gguf_write_data(&w, y, ROWS * COLS * sizeof(float), &err) == SQZ_OK;
        }
    }
    ok = ok && sqz_gguf_write_end(&w, &err) == SQZ_OK;
    sqz_gguf_writer_free(&w);
    free(q), free(y), free(wt), free(src[0]), free(src[1]);
    if (!ok) {
        fprintf(stderr, "test_quantize --emit: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--emit") == 0) return emit(argv[2]);
    test_types();
    test_special_blocks();
    test_errors();
    test_fixed_params();
    return tu_done("test_quantize");
}

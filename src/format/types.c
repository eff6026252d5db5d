/* The ggml type-traits table and the dequantizers.
 *
 * Block layouts follow ggml's ggml-common.h exactly (little-endian, packed), and each
 * dequantizer performs the same float operations in the same order as ggml's reference
 * dequantize_row_* so the results are bit-identical: a product d * sc is formed first,
 * then multiplied by the integer quant, then the min is subtracted (Q4_1/Q5_1: q * d + m,
 * the block's min added). Blocks are read
 * through byte offsets and memcpy, never through casts, so unaligned tensor data
 * (safetensors does not align) is fine. */
#include "sqz/tensor.h"

#include <string.h>
#include <strings.h>

#define QK_K 256

static float rd_f16(const uint8_t *p) { return sqz_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---------------- plain floats ---------------- */

static void dq_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

static void dq_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = rd_f16(p + 2 * i);
}

static void dq_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = sqz_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}

/* The writers of the float types (the quantized ones are quant's sqz_quantize_row). F16 and BF16
 * round to nearest even, as ggml's conversions do; nothing is rejected: NaN and inf pass
 * through and |x| >= 65520 becomes an F16 inf, as in ggml. Weights are ignored. */
static int wr_float(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err) {
    (void)weights;
    if (n < 0) return sqz_fail(err, "convert: row length %lld is negative", (long long)n);
    uint8_t *p = dst;
    switch (type) {
    case SQZ_TYPE_F32:
        if (n > 0) memcpy(dst, x, (size_t)n * sizeof(float));
        return SQZ_OK;
    case SQZ_TYPE_F16:
    case SQZ_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = type == SQZ_TYPE_F16 ? sqz_f32_to_f16(x[i]) : sqz_f32_to_bf16(x[i]);
            p[2 * i] = (uint8_t)(h & 0xFF);
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return SQZ_OK;
    default:
        return sqz_fail(err, "convert: type id %d is not a float type", type);
    }
}

/* ---------------- 32-value blocks ---------------- */

/* block_q4_0: f16 d; u8 qs[16]. Low nibbles are values 0..15, high nibbles 16..31. */
static void dq_q4_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 18, dst += 32) {
        const float d = rd_f16(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((qs[j] & 0x0F) - 8) * d;
            dst[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* block_q4_1: f16 d, f16 m; u8 qs[16]. */
static void dq_q4_1(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 20, dst += 32) {
        const float d = rd_f16(b), m = rd_f16(b + 2);
        const uint8_t *qs = b + 4;
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)(qs[j] & 0x0F) * d + m;
            dst[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* block_q5_0: f16 d; u32 qh (bit j = 5th bit of value j); u8 qs[16]. */
static void dq_q5_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 22, dst += 32) {
        const float d = rd_f16(b);
        const uint32_t qh = rd_u32(b + 2);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = (float)(((qs[j] & 0x0F) | h0) - 16) * d;
            dst[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

/* block_q5_1: f16 d, f16 m; u32 qh; u8 qs[16]. */
static void dq_q5_1(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 24, dst += 32) {
        const float d = rd_f16(b), m = rd_f16(b + 2);
        const uint32_t qh = rd_u32(b + 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = (float)((qs[j] & 0x0F) | h0) * d + m;
            dst[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
        }
    }
}

/* block_q8_0: f16 d; i8 qs[32]. */
static void dq_q8_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 34, dst += 32) {
        const float d = rd_f16(b);
        for (int j = 0; j < 32; j++) dst[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* block_iq4_nl: f16 d; u8 qs[16] indexing a fixed non-linear 16-entry grid. */
static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void dq_iq4_nl(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += 18, dst += 32) {
        const float d = rd_f16(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)kvalues_iq4nl[qs[j] & 0x0F];
            dst[j + 16] = d * (float)kvalues_iq4nl[qs[j] >> 4];
        }
    }
}

/* ---------------- 256-value super-blocks (k-quants, IQ4_XS) ---------------- */

/* block_iq4_xs: f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]. Sub-block j (32 values)
 * has the 6-bit scale ls = (nibble j of scales_l) | (bits 2j..2j+1 of scales_h) << 4 and
 * step d·(ls − 32); its 16 bytes of qs index IQ4_NL's grid as IQ4_NL's block does. */
static void dq_iq4_xs(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 136) {
        const float d = rd_f16(b);
        const unsigned scales_h = (unsigned)b[2] | (unsigned)b[3] << 8;
        const uint8_t *scales_l = b + 4, *qs = b + 8;
        for (int j = 0; j < 8; j++, qs += 16, dst += 32) {
            const int ls = ((scales_l[j / 2] >> (4 * (j % 2))) & 0x0F) | (int)(((scales_h >> (2 * j)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            for (int k = 0; k < 16; k++) {
                dst[k] = dl * (float)kvalues_iq4nl[qs[k] & 0x0F];
                dst[k + 16] = dl * (float)kvalues_iq4nl[qs[k] >> 4];
            }
        }
    }
}

/* block_q2_K: u8 scales[16] (low nibble scale, high nibble min); u8 qs[64] (2 bits);
 * f16 d; f16 dmin. Each 128 values use 32 bytes of qs, shifted by 0,2,4,6. */
static void dq_q2_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 84) {
        const uint8_t *sc = b, *q = b + 16;
        const float d = rd_f16(b + 80), dmin = rd_f16(b + 82);
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t s = sc[is++];
                    const float dl = d * (float)(s & 0x0F), ml = dmin * (float)(s >> 4);
                    for (int l = 0; l < 16; l++) *dst++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* block_q3_K: u8 hmask[32]; u8 qs[64]; u8 scales[12] (16 six-bit scales, offset 32); f16 d.
 * Scale j: low 4 bits from byte j (j < 8) or the high nibble of byte j-8, high 2 bits
 * from byte 8 + j%4 at bit 2*(j/4). A value loses 4 when its hmask bit is clear. */
static void dq_q3_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 110) {
        const uint8_t *hm = b, *q = b + 32, *s = b + 96;
        const float d = rd_f16(b + 108);
        int8_t scales[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (s[j] & 0x0F) : (s[j - 8] >> 4);
            const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            scales[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        int is = 0;
        uint8_t m = 1;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d * (float)scales[is++];
                    for (int l = 0; l < 16; l++) {
                        const int k = l + 16 * half;
                        const int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
                        *dst++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* The 8 six-bit (scale, min) pairs of Q4_K/Q5_K packed in 12 bytes. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* block_q4_K: f16 d; f16 dmin; u8 scales[12]; u8 qs[128]. 64 values per 32 bytes. */
static void dq_q4_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 144) {
        const float d = rd_f16(b), dmin = rd_f16(b + 2);
        const uint8_t *s = b + 4, *q = b + 16;
        for (int is = 0; is < 8; is += 2, q += 32) {
            int sc, m;
            scale_min_k4(is, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, s, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)(q[l] & 0x0F) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* block_q5_K: f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]. */
static void dq_q5_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 176) {
        const float d = rd_f16(b), dmin = rd_f16(b + 2);
        const uint8_t *s = b + 4, *qh = b + 16, *ql = b + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            int sc, m;
            scale_min_k4(is, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, s, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)((ql[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
    }
}

/* block_q6_K: u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. */
static void dq_q6_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = rd_f16(b + 208);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, dst += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)sc[is] * (float)q1;
                dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* block_q8_K: f32 d; i8 qs[256]; i16 bsums[16] (the sums only serve dot products). */
static void dq_q8_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 292, dst += QK_K) {
        float d;
        memcpy(&d, b, 4);
        for (int j = 0; j < QK_K; j++) dst[j] = d * (float)(int8_t)b[4 + j];
    }
}

/* The quantized types sqz writes: quantize is set (quant's sqz_quantize_row writes them). */
#define QUANT .quantize = 1

/* ---------------- i-quants and ternary types (read only) ---------------- */

/* Their grids (the formats' definition, checked against gguf-py by tests/py/iq_grids.py). */
#include "iq_grids.h"

static unsigned rd_u16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

/* Value j of a grid point: byte j (unsigned for IQ2/IQ3, signed for IQ1). */
static float gval(uint64_t point, int j) { return (float)(uint8_t)(point >> (8 * j)); }
static float gval1(uint64_t point, int j) { return (float)(int8_t)(uint8_t)(point >> (8 * j)); }

/* The step of an IQ2 group with 4-bit scale s: d·(0.5 + s)/4, in ggml's float order. */
static float iq2_step(float d, unsigned s) { return d * (0.5f + (float)s) * 0.25f; }

/* 8 values db·grid·(±1): sign bit j of `signs` negates value j. */
static void put8(float *y, float db, uint64_t point, unsigned signs) {
    for (int j = 0; j < 8; j++) y[j] = db * gval(point, j) * (signs >> j & 1 ? -1.0f : 1.0f);
}

/* block_iq2_xxs (66 bytes): f16 d; per 32 values two u32: four grid indices (bytes), then
 * four 7-bit sign indices (into sqz_iq_signs) and a 4-bit scale in the top bits. */
static void dq_iq2_xxs(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 66) {
        const float d = rd_f16(b);
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *q = b + 2 + 8 * ib;
            const uint32_t aux = rd_u32(q + 4);
            const float db = iq2_step(d, aux >> 28);
            for (int l = 0; l < 4; l++, dst += 8) put8(dst, db, sqz_iq2xxs_grid[q[l]], sqz_iq_signs[(aux >> (7 * l)) & 127]);
        }
    }
}

/* block_iq2_xs (74 bytes): f16 d; u16 qs[32] (9-bit grid index, 7-bit sign index); u8
 * scales[8] (a 4-bit scale per 16 values). */
static void dq_iq2_xs(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 74) {
        const float d = rd_f16(b);
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t sc = b[66 + ib];
            const float db[2] = {iq2_step(d, sc & 0x0F), iq2_step(d, sc >> 4)};
            for (int l = 0; l < 4; l++, dst += 8) {
                const unsigned q = rd_u16(b + 2 + 2 * (4 * ib + l));
                put8(dst, db[l / 2], sqz_iq2xs_grid[q & 511], sqz_iq_signs[q >> 9]);
            }
        }
    }
}

/* block_iq2_s (82 bytes): f16 d; u8 qs[32] (grid index, low 8 bits); u8 signs[32]; u8
 * qh[8] (2 high index bits per group of 8); u8 scales[8]. */
static void dq_iq2_s(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 82) {
        const float d = rd_f16(b);
        const uint8_t *qs = b + 2, *signs = b + 34, *qh = b + 66, *scales = b + 74;
        for (int ib = 0; ib < 8; ib++) {
            const float db[2] = {iq2_step(d, scales[ib] & 0x0F), iq2_step(d, scales[ib] >> 4)};
            for (int l = 0; l < 4; l++, dst += 8) {
                const unsigned idx = qs[4 * ib + l] | ((unsigned)(qh[ib] >> (2 * l)) & 3) << 8;
                put8(dst, db[l / 2], sqz_iq2s_grid[idx], signs[4 * ib + l]);
            }
        }
    }
}

/* block_iq3_xxs (98 bytes): f16 d; u8 qs[64] (grid indices of 4 values); per 32 values a
 * u32 of four 7-bit sign indices and a 4-bit scale. */
static void dq_iq3_xxs(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 98) {
        const float d = rd_f16(b);
        const uint8_t *qs = b + 2;
        for (int ib = 0; ib < 8; ib++) {
            const uint32_t aux = rd_u32(b + 66 + 4 * ib);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++, dst += 8) {
                const uint64_t point = sqz_iq3xxs_grid[qs[8 * ib + 2 * l]] | (uint64_t)sqz_iq3xxs_grid[qs[8 * ib + 2 * l + 1]] << 32;
                put8(dst, db, point, sqz_iq_signs[(aux >> (7 * l)) & 127]);
            }
        }
    }
}

/* block_iq3_s (110 bytes): f16 d; u8 qs[64] (grid index, low 8 bits); u8 qh[8] (9th
 * bits); u8 signs[32]; u8 scales[4] (a 4-bit scale per 32 values: step d·(1 + 2s)). */
static void dq_iq3_s(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 110) {
        const float d = rd_f16(b);
        const uint8_t *qs = b + 2, *qh = b + 66, *signs = b + 74, *scales = b + 106;
        for (int ib = 0; ib < 8; ib++) {
            const float db = d * (float)(1 + 2 * ((scales[ib / 2] >> (4 * (ib % 2))) & 0x0F));
            for (int l = 0; l < 4; l++, dst += 8) {
                const int k = 8 * ib + 2 * l;
                const unsigned i0 = qs[k] | ((unsigned)(qh[ib] >> (2 * l)) & 1) << 8;
                const unsigned i1 = qs[k + 1] | ((unsigned)(qh[ib] >> (2 * l + 1)) & 1) << 8;
                put8(dst, db, sqz_iq3s_grid[i0] | (uint64_t)sqz_iq3s_grid[i1] << 32, signs[4 * ib + l]);
            }
        }
    }
}

#define IQ1_DELTA 0.125f

/* block_iq1_s (50 bytes): f16 d; u8 qs[32] (grid index, low 8 bits); u16 qh[8] per 32
 * values: 3 high index bits per group of 8, a 3-bit scale (step d·(2s + 1)) and the sign
 * of the shift ±1/8 added to every grid value. */
static void dq_iq1_s(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 50) {
        const float d = rd_f16(b);
        for (int ib = 0; ib < 8; ib++) {
            const unsigned qh = rd_u16(b + 34 + 2 * ib);
            const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
            const float delta = qh & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
            for (int l = 0; l < 4; l++, dst += 8) {
                const uint64_t point = sqz_iq1s_grid[b[2 + 4 * ib + l] | ((qh >> (3 * l)) & 7) << 8];
                for (int j = 0; j < 8; j++) dst[j] = dl * (gval1(point, j) + delta);
            }
        }
    }
}

/* block_iq1_m (56 bytes): u8 qs[32]; u8 qh[16] (per group of 8: 3 high index bits and the
 * shift's sign bit, a nibble each); u16 scales[4]: twelve bits of 3-bit scales (one per 16
 * values) and, in the top nibbles of the four, the f16 super scale. */
static void dq_iq1_m(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 56) {
        unsigned sc[4];
        for (int k = 0; k < 4; k++) sc[k] = rd_u16(b + 48 + 2 * k);
        const uint16_t dh = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000));
        const float d = sqz_f16_to_f32(dh);
        for (int ib = 0; ib < 8; ib++) {
            const float dl[2] = {d * (float)(2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 7) + 1),
                                 d * (float)(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) + 1)};
            for (int l = 0; l < 4; l++, dst += 8) {
                const unsigned h = b[32 + 2 * ib + l / 2] >> (4 * (l % 2));
                const uint64_t point = sqz_iq1s_grid[b[4 * ib + l] | (h & 7) << 8];
                const float delta = h & 8 ? -IQ1_DELTA : IQ1_DELTA;
                for (int j = 0; j < 8; j++) dst[j] = dl[l / 2] * (gval1(point, j) + delta);
            }
        }
    }
}

/* The base-3 digit of TQ1_0: byte q holds digits in fixed point (q = ⌈v·256/243⌉ of the
 * number v they form); digit n is the top digit of q·3ⁿ mod 256. */
static float tq1_digit(uint8_t q, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t v = (uint8_t)(q * pow3[n]);
    return (float)((int)(((unsigned)v * 3) >> 8) - 1);
}

/* block_tq1_0 (54 bytes): u8 qs[48] (5 ternary digits a byte); u8 qh[4] (4 a byte); f16 d.
 * Values: digit n of qs[0..31] (32 values per digit), then of qs[32..47] (16 per digit),
 * then digit n of qh[0..3]. */
static void dq_tq1_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 54) {
        const float d = rd_f16(b + 52);
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 32; m++) *dst++ = tq1_digit(b[m], k) * d;
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 16; m++) *dst++ = tq1_digit(b[32 + m], k) * d;
        for (int k = 0; k < 4; k++)
            for (int m = 0; m < 4; m++) *dst++ = tq1_digit(b[48 + m], k) * d;
    }
}

/* block_tq2_0 (66 bytes): u8 qs[64] (2 bits a value, 0..2 for −1..1); f16 d. Value
 * 128h + 32k + m: bits 2k of qs[32h + m]. */
static void dq_tq2_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 66) {
        const float d = rd_f16(b + 64);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int m = 0; m < 32; m++) *dst++ = (float)((int)((b[32 * h + m] >> (2 * k)) & 3) - 1) * d;
    }
}

/* Indexed by ggml type id; ids ggml retired stay empty (name NULL). Adding a format is
 * adding a row; sizes are ggml's (checked against gguf-py's GGML_QUANT_SIZES). A type is
 * readable when it has a dequantizer, writable when it has from_float (the float types) or
 * quantize set (the block types quant quantizes into by the scale search and GPTQ;
 * sqz_quant_supported reads that flag). */
/* The linear f16 fields of a block (sqz_type_traits.scale_at): d at its offset, or d and
 * the scaled minimum (ggml's block structs) */
#define S1(a) .n_scales = 1, .scale_at = {a, 0}
#define S2(a, b) .n_scales = 2, .scale_at = {a, b}
static const sqz_type_traits type_table[SQZ_TYPE_COUNT] = {
    [SQZ_TYPE_F32] = {.name = "F32", .block_size = 1, .block_bytes = 4, .dequantize = dq_f32, .from_float = wr_float},
    [SQZ_TYPE_F16] = {.name = "F16", .block_size = 1, .block_bytes = 2, .dequantize = dq_f16, .from_float = wr_float},
    [SQZ_TYPE_Q4_0] = {.name = "Q4_0", .block_size = 32, .block_bytes = 18, .dequantize = dq_q4_0, QUANT, S1(0)},
    [SQZ_TYPE_Q4_1] = {.name = "Q4_1", .block_size = 32, .block_bytes = 20, .dequantize = dq_q4_1, QUANT, S2(0, 2)},
    [SQZ_TYPE_Q5_0] = {.name = "Q5_0", .block_size = 32, .block_bytes = 22, .dequantize = dq_q5_0, QUANT, S1(0)},
    [SQZ_TYPE_Q5_1] = {.name = "Q5_1", .block_size = 32, .block_bytes = 24, .dequantize = dq_q5_1, QUANT, S2(0, 2)},
    [SQZ_TYPE_Q8_0] = {.name = "Q8_0", .block_size = 32, .block_bytes = 34, .dequantize = dq_q8_0, QUANT, S1(0)},
    [SQZ_TYPE_Q8_1] = {.name = "Q8_1", .block_size = 32, .block_bytes = 36, .dequantize = NULL},
    [SQZ_TYPE_Q2_K] = {.name = "Q2_K", .block_size = QK_K, .block_bytes = 84, .dequantize = dq_q2_k, QUANT, S2(80, 82)},
    [SQZ_TYPE_Q3_K] = {.name = "Q3_K", .block_size = QK_K, .block_bytes = 110, .dequantize = dq_q3_k, QUANT, S1(108)},
    [SQZ_TYPE_Q4_K] = {.name = "Q4_K", .block_size = QK_K, .block_bytes = 144, .dequantize = dq_q4_k, QUANT, S2(0, 2)},
    [SQZ_TYPE_Q5_K] = {.name = "Q5_K", .block_size = QK_K, .block_bytes = 176, .dequantize = dq_q5_k, QUANT, S2(0, 2)},
    [SQZ_TYPE_Q6_K] = {.name = "Q6_K", .block_size = QK_K, .block_bytes = 210, .dequantize = dq_q6_k, QUANT, S1(208)},
    [SQZ_TYPE_Q8_K] = {.name = "Q8_K", .block_size = QK_K, .block_bytes = 292, .dequantize = dq_q8_k},
    [SQZ_TYPE_IQ2_XXS] = {.name = "IQ2_XXS", .block_size = QK_K, .block_bytes = 66, .dequantize = dq_iq2_xxs, .codebook = 8, S1(0)},
    [SQZ_TYPE_IQ2_XS] = {.name = "IQ2_XS", .block_size = QK_K, .block_bytes = 74, .dequantize = dq_iq2_xs, .codebook = 8, S1(0)},
    [SQZ_TYPE_IQ3_XXS] = {.name = "IQ3_XXS", .block_size = QK_K, .block_bytes = 98, .dequantize = dq_iq3_xxs, .codebook = 4, S1(0)},
    [SQZ_TYPE_IQ1_S] = {.name = "IQ1_S", .block_size = QK_K, .block_bytes = 50, .dequantize = dq_iq1_s, .codebook = 8, S1(0)},
    [SQZ_TYPE_IQ4_NL] = {.name = "IQ4_NL", .block_size = 32, .block_bytes = 18, .dequantize = dq_iq4_nl, QUANT, S1(0)},
    [SQZ_TYPE_IQ3_S] = {.name = "IQ3_S", .block_size = QK_K, .block_bytes = 110, .dequantize = dq_iq3_s, .codebook = 4, S1(0)},
    [SQZ_TYPE_IQ2_S] = {.name = "IQ2_S", .block_size = QK_K, .block_bytes = 82, .dequantize = dq_iq2_s, .codebook = 8, S1(0)},
    [SQZ_TYPE_IQ4_XS] = {.name = "IQ4_XS", .block_size = QK_K, .block_bytes = 136, .dequantize = dq_iq4_xs, QUANT, S1(0)},
    [24] = {.name = "I8", .block_size = 1, .block_bytes = 1},
    [25] = {.name = "I16", .block_size = 1, .block_bytes = 2},
    [26] = {.name = "I32", .block_size = 1, .block_bytes = 4},
    [27] = {.name = "I64", .block_size = 1, .block_bytes = 8},
    [28] = {.name = "F64", .block_size = 1, .block_bytes = 8},
    [SQZ_TYPE_IQ1_M] = {.name = "IQ1_M", .block_size = QK_K, .block_bytes = 56, .dequantize = dq_iq1_m, .codebook = 8},
    [SQZ_TYPE_BF16] = {.name = "BF16", .block_size = 1, .block_bytes = 2, .dequantize = dq_bf16,
                       .from_float = wr_float},
    [SQZ_TYPE_TQ1_0] = {.name = "TQ1_0", .block_size = QK_K, .block_bytes = 54, .dequantize = dq_tq1_0, .codebook = 1, S1(52)},
    [SQZ_TYPE_TQ2_0] = {.name = "TQ2_0", .block_size = QK_K, .block_bytes = 66, .dequantize = dq_tq2_0, .codebook = 1, S1(64)},
    [39] = {.name = "MXFP4", .block_size = 32, .block_bytes = 17},
};
#undef QUANT
#undef S1
#undef S2

const sqz_type_traits *sqz_type_get(int type) {
    if (type < 0 || type >= SQZ_TYPE_COUNT || !type_table[type].name) return NULL;
    return &type_table[type];
}

int sqz_type_writable(int type) {
    const sqz_type_traits *tt = sqz_type_get(type);
    return tt && (tt->from_float || tt->quantize || tt->codebook) ? 1 : 0;
}

int sqz_type_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
        if (type_table[t].name && strcasecmp(type_table[t].name, name) == 0) return t;
    }
    return -1;
}

double sqz_type_bpw(int type) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt) return 0.0;
    return (double)tt->block_bytes * 8.0 / (double)tt->block_size;
}

int sqz_type_row_bytes(int type, int64_t n, size_t *out, sqz_err *err) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt) return sqz_fail(err, "unknown tensor type id %d", type);
    if (n < 0) return sqz_fail(err, "row length %lld is negative", (long long)n);
    if (n % tt->block_size != 0)
        return sqz_fail(err, "row length %lld is not a multiple of %s's block size %lld", (long long)n, tt->name,
                        (long long)tt->block_size);
    if (sqz_mul_size((size_t)(n / tt->block_size), tt->block_bytes, out) != 0)
        return sqz_fail(err, "row of %lld %s values overflows size_t", (long long)n, tt->name);
    return SQZ_OK;
}

int64_t sqz_tensor_nelements(const sqz_tensor *t) {
    if (t->n_dims == 0 && t->ne[0] == 0 && t->ne[1] == 0 && t->ne[2] == 0 && t->ne[3] == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < SQZ_MAX_DIMS; i++) n *= t->ne[i]; /* parsers checked this product fits */
    return n;
}

int sqz_tensor_rows_f32(const sqz_tensor *t, int64_t row0, int64_t n_rows, float *dst, sqz_err *err) {
    const sqz_type_traits *tt = sqz_type_get(t->type);
    const char *name = t->name ? t->name : "?";
    if (!tt) return sqz_fail(err, "tensor '%s': unknown type id %d", name, t->type);
    if (!tt->dequantize) return sqz_fail(err, "tensor '%s': type %s cannot be read yet", name, tt->name);
    const int64_t ne0 = t->ne[0];
    int64_t rows = 1;
    for (int i = 1; i < SQZ_MAX_DIMS; i++) rows *= t->ne[i];
    if (row0 < 0 || n_rows < 0 || row0 > rows || n_rows > rows - row0)
        return sqz_fail(err, "tensor '%s': %lld rows from row %lld are outside its %lld rows", name,
                        (long long)n_rows, (long long)row0, (long long)rows);
    size_t rb, need, off;
    if (sqz_type_row_bytes(t->type, ne0, &rb, err) != SQZ_OK) return sqz_fail_prefix(err, "tensor '%s'", name);
    if (sqz_mul_size(rb, (size_t)(row0 + n_rows), &need) != 0 || need > t->nbytes)
        return sqz_fail(err, "tensor '%s': %lld rows of %zu bytes exceed its %zu bytes", name,
                        (long long)(row0 + n_rows), rb, t->nbytes);
    if (n_rows == 0 || ne0 == 0) return SQZ_OK;
    off = rb * (size_t)row0;
    /* one call over contiguous rows: every row starts on a block boundary */
    tt->dequantize((const uint8_t *)t->data + off, dst, n_rows * ne0);
    return SQZ_OK;
}

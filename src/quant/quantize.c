/* Quantizers into ggml's block formats, searching each block's scales for the smallest
 * weighted squared error of the values as llama.cpp will dequantize them.
 *
 * The idea is llama.cpp's imatrix path (make_qx_quants, make_qkx3_quants, make_qp_quants
 * in ggml-quants.c): try candidate scales around max/|qmax|, refit each in closed form
 * for its fixed rounding. Two things are done differently, on purpose:
 *  - every candidate is judged by the error after the scale has been stored (f16, or an
 *    integer sub-block scale times an f16 super scale), not before;
 *  - a k-quant's sub-block scales are not just rounded onto the super-block grid: each
 *    sub-block tries its neighbouring integer scales (and mins) and keeps the best, and
 *    the super scales are then refitted in closed form for the chosen integers.
 * The weights are the caller's importances as given (uniform when NULL): the objective
 * is exactly sum_i w_i (x_i - xhat_i)^2. Sums are accumulated in double.
 *
 * Which types are quantized is the type table's decision (sqz_type_traits.quantize in
 * src/format/types.c); the table below only holds each format's level and scale ranges. */
#include "sqz/quant.h"

#include <math.h>
#include <string.h>
/* SIMD paths compute, lane by lane, exactly what the plain loops compute (the written
 * bytes do not depend on the instruction set). SQZ_NO_SIMD builds the plain loops only:
 * the test t_quant_simd quantizes the same rows with both builds and compares bytes. */
#if defined(__SSE2__) && !defined(SQZ_NO_SIMD)
#define SQZ_SSE2 1
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_NO_SIMD)
#include <immintrin.h>
#define SQZ_AVX2 1 /* the candidate sums also in eight lanes where the CPU has AVX2 */

/* The compiler's run-time checks (they read a table filled once at start-up). clang's
 * __builtin_cpu_supports does not know "f16c": there (the fuzzing build) the errors take
 * the plain path, which gives the same bits. */
static int have_avx2(void) { return __builtin_cpu_supports("avx2"); }
static int have_avx2_f16c(void) {
#if defined(__clang__)
    return 0;
#else
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif
}
#endif

/* The non-linear grid of IQ4_NL (a format constant of ggml's block_iq4_nl). */
static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

typedef struct qfmt {
    int block, sub;   /* values per block and per scale; 0 = no quantizer for this id */
    int lmin, lmax;   /* integer levels */
    int smin, smax;   /* integer sub-block scales of the k-quants */
    int mmax;         /* integer sub-block mins are 0..mmax; 0 = the type has no mins */
    int two_level;    /* k-quant: sub-block scales on an f16 super scale */
    int nonlinear;    /* IQ4_NL: levels index kvalues_iq4nl */
    int affine;       /* Q4_1/Q5_1: x = d*l + m, f16 d >= 0 and an f16 min m of either sign */
} qfmt;

/* Indexed by type id. */
static const qfmt fmts[SQZ_TYPE_COUNT] = {
    [SQZ_TYPE_Q4_0] = {.block = 32, .sub = 32, .lmin = -8, .lmax = 7},
    [SQZ_TYPE_Q4_1] = {.block = 32, .sub = 32, .lmin = 0, .lmax = 15, .affine = 1},
    [SQZ_TYPE_Q5_0] = {.block = 32, .sub = 32, .lmin = -16, .lmax = 15},
    [SQZ_TYPE_Q5_1] = {.block = 32, .sub = 32, .lmin = 0, .lmax = 31, .affine = 1},
    [SQZ_TYPE_Q8_0] = {.block = 32, .sub = 32, .lmin = -127, .lmax = 127},
    [SQZ_TYPE_IQ4_NL] = {.block = 32, .sub = 32, .lmin = 0, .lmax = 15, .nonlinear = 1},
    [SQZ_TYPE_Q2_K] = {.block = 256, .sub = 16, .lmin = 0, .lmax = 3, .smax = 15, .mmax = 15, .two_level = 1},
    [SQZ_TYPE_Q3_K] = {.block = 256, .sub = 16, .lmin = -4, .lmax = 3, .smin = -32, .smax = 31, .two_level = 1},
    [SQZ_TYPE_Q4_K] = {.block = 256, .sub = 32, .lmin = 0, .lmax = 15, .smax = 63, .mmax = 63, .two_level = 1},
    [SQZ_TYPE_Q5_K] = {.block = 256, .sub = 32, .lmin = 0, .lmax = 31, .smax = 63, .mmax = 63, .two_level = 1},
    /* IQ4_NL's grid in sub-blocks of 32 on signed 6-bit scales of an f16 super scale */
    [SQZ_TYPE_IQ4_XS] = {.block = 256, .sub = 32, .lmin = 0, .lmax = 15, .smin = -32, .smax = 31, .two_level = 1,
                         .nonlinear = 1},
    /* ggml's own Q6_K quantizer maps the largest sub-scale to -128; +128 does not fit */
    [SQZ_TYPE_Q6_K] = {.block = 256, .sub = 16, .lmin = -32, .lmax = 31, .smin = -128, .smax = 127, .two_level = 1},
};

/* The format of a type the type table marks quantizable, else NULL. */
static const qfmt *fmt_of(int type) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt || !tt->quantize || fmts[type].block == 0) return NULL;
    return &fmts[type];
}

static const char *type_name(int type) {
    const sqz_type_traits *tt = sqz_type_get(type);
    return tt ? tt->name : "?";
}

/* ---------------- rounding and error ---------------- */

static float level_value(const qfmt *f, int l) { return f->nonlinear ? (float)kvalues_iq4nl[l] : (float)l; }

/* The dequantized value, with ggml's float operations: (d*sc)*l - dmin*m. Q4_1/Q5_1
 * dequantize to l*d + m; off holds -m, and d*l - (-m) is d*l + m bit for bit (IEEE
 * subtraction of a negation is the addition, signed zeros included). */
static float recon(const qfmt *f, float step, float off, int l) {
    if (f->nonlinear) return step * (float)kvalues_iq4nl[l];
    return step * (float)l - off;
}

/* IQ4_NL's grid index nearest to t, the midpoints between neighbours deciding (t on a
 * midpoint takes the lower index). Every midpoint is a multiple of 0.5, so the index is
 * constant on each interval (k/2, (k+1)/2]: kNearestHalf holds it for k = -256..255 (made
 * by counting the midpoints below each interval's centre), and the interval of t is
 * found in double, where 256 − 2t is exact for any float t. */
static const uint8_t kNearestHalf[512] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
};

static inline int nearest_iq4nl(float t) {
    if (t <= -128.0f) return 0;
    if (t > 128.0f) return 15;
    return kNearestHalf[511 - (int)(256.0 - 2.0 * (double)t)];
}

/* lrintf of a float already clamped to the level range: the nearest integer, ties to
 * even (the default rounding mode). cvtss2si is that instruction; lrintf is a libm call
 * unless errno handling is off. */
static inline int round_int(float t) {
#ifdef SQZ_SSE2
    return _mm_cvtss_si32(_mm_set_ss(t));
#else
    return (int)lrintf(t);
#endif
}

/* The level nearest to x for xhat = step * v(l) - off, given inv = 1/step (0 when step
 * is 0). Clamps before converting to int, so huge or NaN quotients cannot overflow. */
static inline int round_level_inv(const qfmt *f, float x, float inv, float off) {
    if (f->nonlinear) {
        if (inv == 0.0f) return 8; /* every level gives 0; 8 is the one nearest 0 */
        const float t = x * inv;
        return t == t ? nearest_iq4nl(t) : 8;
    }
    if (inv == 0.0f) return f->lmin > 0 ? f->lmin : (f->lmax < 0 ? f->lmax : 0);
    float t = (x + off) * inv;
    if (!(t >= (float)f->lmin)) t = (float)f->lmin; /* also catches NaN */
    if (t > (float)f->lmax) t = (float)f->lmax;
    return round_int(t);
}

static inline float inverse(float step) { return step != 0.0f ? 1.0f / step : 0.0f; }

static int round_level(const qfmt *f, float x, float step, float off) {
    return round_level_inv(f, x, inverse(step), off);
}

/* Weighted squared error of n values for a fixed (step, off); the levels go to L.
 * The sum runs in four double lanes (value i into lane i mod 4, the lanes added
 * pairwise at the end, a tail of n mod 4 values after): the SSE2 path adds a whole
 * vector of terms per step instead of waiting on one long chain of double additions,
 * and the plain loop keeps the same lanes, so both give the same bits. */
#ifdef SQZ_AVX2
/* sub_err's linear rounding of n values (n % 8 == 0) eight at a time: term i goes into
 * double lane i mod 4 in increasing i, the lanes are added pairwise in registers, (l0 + l1)
 * + (l2 + l3), the plain loop's order (storing the lanes and reloading them stalled on
 * store forwarding). */
__attribute__((target("avx2"))) static double sub_err_avx2(const float *x, const float *w, int n, float step,
                                                           float inv, float off, float lmin, float lmax,
                                                           int8_t *L) {
    const __m256 vi = _mm256_set1_ps(inv), vo = _mm256_set1_ps(off), vs = _mm256_set1_ps(step);
    const __m256 lo = _mm256_set1_ps(lmin), hi = _mm256_set1_ps(lmax);
    __m256d acc = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        const __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_add_ps(xv, vo), vi), lo), hi);
        const __m256i li = _mm256_cvtps_epi32(t);
        const __m256 d = _mm256_sub_ps(xv, _mm256_sub_ps(_mm256_mul_ps(vs, _mm256_cvtepi32_ps(li)), vo));
        const __m256 term = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(w + i), d), d);
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(term)));
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(term, 1)));
        const __m128i l16 = _mm_packs_epi32(_mm256_castsi256_si128(li), _mm256_extracti128_si256(li, 1));
        _mm_storel_epi64((__m128i *)(L + i), _mm_packs_epi16(l16, l16));
    }
    const __m128d h = _mm_hadd_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
#endif

/* Weighted squared error of n values for a fixed (step, off); the levels go to L.
 * The sum runs in four double lanes (value i into lane i mod 4, the lanes added
 * pairwise at the end, a tail of n mod 4 values after): the SIMD paths add a whole
 * vector of terms per step instead of waiting on one long chain of double additions,
 * and the plain loop keeps the same lanes, so all give the same bits. */
static double sub_err(const qfmt *f, const float *x, const float *w, int n, float step, float off, int8_t *L) {
    const float inv = inverse(step);
    const int n4 = n & ~3;
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
#ifdef SQZ_AVX2
    if (!f->nonlinear && inv != 0.0f && n >= 8 && n % 8 == 0 && have_avx2()) /* every block and sub-block */
        return sub_err_avx2(x, w, n, step, inv, off, (float)f->lmin, (float)f->lmax, L);
#endif
#ifdef SQZ_SSE2
    if (!f->nonlinear && inv != 0.0f) {
        const __m128 vi = _mm_set1_ps(inv), vo = _mm_set1_ps(off), vs = _mm_set1_ps(step);
        const __m128 lo = _mm_set1_ps((float)f->lmin), hi = _mm_set1_ps((float)f->lmax);
        __m128d a01 = _mm_loadu_pd(lane), a23 = _mm_loadu_pd(lane + 2);
        for (; i < n4; i += 4) {
            const __m128 xv = _mm_loadu_ps(x + i);
            /* max(t, lo) is lo for a NaN t, as the scalar clamp */
            const __m128 t = _mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_add_ps(xv, vo), vi), lo), hi);
            const __m128i li = _mm_cvtps_epi32(t);
            const __m128 d = _mm_sub_ps(xv, _mm_sub_ps(_mm_mul_ps(vs, _mm_cvtepi32_ps(li)), vo));
            const __m128 term = _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(w + i), d), d);
            a01 = _mm_add_pd(a01, _mm_cvtps_pd(term));
            a23 = _mm_add_pd(a23, _mm_cvtps_pd(_mm_movehl_ps(term, term)));
            const __m128i l16 = _mm_packs_epi32(li, li);
            const int32_t l4 = _mm_cvtsi128_si32(_mm_packs_epi16(l16, l16));
            memcpy(L + i, &l4, 4);
        }
        _mm_storeu_pd(lane, a01);
        _mm_storeu_pd(lane + 2, a23);
    }
#endif
    for (; i < n; i++) {
        const int l = round_level_inv(f, x[i], inv, off);
        L[i] = (int8_t)l;
        const float d = x[i] - recon(f, step, off, l);
        const double term = (double)(w[i] * d * d);
        if (i < n4) lane[i & 3] += term;
        else lane[0] = i == n4 ? (lane[0] + lane[1]) + (lane[2] + lane[3]) + term : lane[0] + term;
    }
    if (n == n4) return (lane[0] + lane[1]) + (lane[2] + lane[3]);
    return lane[0];
}

#ifdef SQZ_AVX2
/* F16C's round-to-nearest-even equals sqz_f32_to_f16 on every float in range (see
 * candidate_errors_avx2); one instruction each way instead of two calls. */
__attribute__((target("f16c"))) static float f16_round_f16c(float s) {
    return _cvtsh_ss(_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif

/* f32 -> f16 -> f32, saturating at the largest finite half so no scale becomes inf. */
static float to_f16(float s) {
    if (s > 65504.0f) s = 65504.0f;
    if (s < -65504.0f) s = -65504.0f;
#ifdef SQZ_AVX2
    if (have_avx2_f16c() && s == s) return f16_round_f16c(s);
#endif
    return sqz_f16_to_f32(sqz_f32_to_f16(s));
}

static float clampf(float v, float lo, float hi) {
    if (!(v >= lo)) return lo;
    return v > hi ? hi : v;
}

/* ---------------- one scale, no min (32-blocks; Q3_K/Q6_K sub-blocks) ---------------- */

#ifdef SQZ_AVX2
/* lsq_scale's and fit_scale's sums on a linear grid four values a step, value i in lane
 * i mod 4 with the plain loops' double operations: the same bits. n % 4 == 0. */
__attribute__((target("avx2"))) static void lsq_sums_avx2(const float *x, const float *w, int n, const int8_t *L,
                                                          double *sxl, double *sll) {
    __m256d a = _mm256_setzero_pd(), b = a;
    for (int i = 0; i < n; i += 4) {
        int32_t l4;
        memcpy(&l4, L + i, 4);
        const __m256d v = _mm256_cvtepi32_pd(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(l4)));
        const __m256d wd = _mm256_cvtps_pd(_mm_loadu_ps(w + i)), xd = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        a = _mm256_add_pd(a, _mm256_mul_pd(_mm256_mul_pd(wd, xd), v));
        b = _mm256_add_pd(b, _mm256_mul_pd(_mm256_mul_pd(wd, v), v));
    }
    _mm256_storeu_pd(sxl, a), _mm256_storeu_pd(sll, b);
}

/* fit_scale's Σ w x² (lane i mod 4, as the plain loop) and max |x|. n % 4 == 0. */
__attribute__((target("avx2"))) static void wxx_amax_avx2(const float *x, const float *w, int n, double *sxx,
                                                          float *amax) {
    const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m256d a = _mm256_setzero_pd();
    __m128 m = _mm_setzero_ps();
    for (int i = 0; i < n; i += 4) {
        const __m128 xv = _mm_loadu_ps(x + i);
        const __m256d wd = _mm256_cvtps_pd(_mm_loadu_ps(w + i)), xd = _mm256_cvtps_pd(xv);
        a = _mm256_add_pd(a, _mm256_mul_pd(_mm256_mul_pd(wd, xd), xd));
        m = _mm_max_ps(m, _mm_and_ps(xv, abs_mask));
    }
    _mm256_storeu_pd(sxx, a);
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    *amax = _mm_cvtss_f32(m);
}
#endif

/* Least-squares scale for fixed levels: argmin_s sum w (x - s v(l))^2. */
static float lsq_scale(const qfmt *f, const float *x, const float *w, int n, const int8_t *L) {
    double sxl[4] = {0.0, 0.0, 0.0, 0.0}, sll[4] = {0.0, 0.0, 0.0, 0.0}; /* four chains: n % 4 == 0 */
#ifdef SQZ_AVX2
    if (!f->nonlinear && have_avx2()) {
        lsq_sums_avx2(x, w, n, L, sxl, sll);
        n = 0;
    }
#endif
    for (int i = 0; i < n; i++) {
        const double v = f->nonlinear ? (double)kvalues_iq4nl[L[i]] : (double)L[i];
        sxl[i & 3] += (double)w[i] * x[i] * v;
        sll[i & 3] += (double)w[i] * v * v;
    }
    const double a = (sxl[0] + sxl[1]) + (sxl[2] + sxl[3]), b = (sll[0] + sll[1]) + (sll[2] + sll[3]);
    return b > 0.0 ? (float)(a / b) : 0.0f;
}

#define FIT_CANDIDATES 16 /* fit_scale's coarse pass: 2 ends × 7, padded to a multiple of 8 */

#ifdef SQZ_AVX2
/* candidate_sums' lanes eight wide, sixteen candidates a pass (two registers: independent
 * sums hide the add latency): the same operations per lane as the SSE2 and plain loops.
 * Returns how many candidates it did (a multiple of 8: sixteen a pass, then eight). */
__attribute__((target("avx2"))) static int candidate_sums_avx2(const qfmt *f, const float *x, const float *wx,
                                                               const float *w, int n, const float *inv, int nc,
                                                               float *sxl, float *sll) {
    const __m256 lo = _mm256_set1_ps((float)f->lmin), hi = _mm256_set1_ps((float)f->lmax);
    int c = 0;
    for (; c + 16 <= nc; c += 16) {
        const __m256 vi0 = _mm256_loadu_ps(inv + c), vi1 = _mm256_loadu_ps(inv + c + 8);
        __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        for (int i = 0; i < n; i++) {
            const __m256 xv = _mm256_set1_ps(x[i]), wxv = _mm256_set1_ps(wx[i]), wv = _mm256_set1_ps(w[i]);
            const __m256 v0 =
                _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, vi0), lo), hi)));
            const __m256 v1 =
                _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, vi1), lo), hi)));
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(wxv, v0));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(wxv, v1));
            b0 = _mm256_add_ps(b0, _mm256_mul_ps(_mm256_mul_ps(wv, v0), v0));
            b1 = _mm256_add_ps(b1, _mm256_mul_ps(_mm256_mul_ps(wv, v1), v1));
        }
        _mm256_storeu_ps(sxl + c, a0), _mm256_storeu_ps(sxl + c + 8, a1);
        _mm256_storeu_ps(sll + c, b0), _mm256_storeu_ps(sll + c + 8, b1);
    }
    for (; c + 8 <= nc; c += 8) {
        const __m256 vi0 = _mm256_loadu_ps(inv + c);
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;
        for (int i = 0; i < n; i++) {
            const __m256 xv = _mm256_set1_ps(x[i]), wxv = _mm256_set1_ps(wx[i]), wv = _mm256_set1_ps(w[i]);
            const __m256 v0 =
                _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, vi0), lo), hi)));
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(wxv, v0));
            b0 = _mm256_add_ps(b0, _mm256_mul_ps(_mm256_mul_ps(wv, v0), v0));
        }
        _mm256_storeu_ps(sxl + c, a0), _mm256_storeu_ps(sll + c, b0);
    }
    return c;
}

/* fit_scale_min's 24 candidate lanes (21 used) in one pass of three eight-wide groups. */
__attribute__((target("avx2"))) static void min_sums_avx2(const float *x, const float *w, int n, float mn, float lmax,
                                                          const float *iscale, float *sl, float *sll, float *sxl) {
    const __m256 vm = _mm256_set1_ps(mn), lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(lmax);
    const __m256 vi0 = _mm256_loadu_ps(iscale), vi1 = _mm256_loadu_ps(iscale + 8), vi2 = _mm256_loadu_ps(iscale + 16);
    __m256 a0 = lo, b0 = lo, c0 = lo, a1 = lo, b1 = lo, c1 = lo, a2 = lo, b2 = lo, c2 = lo;
    for (int i = 0; i < n; i++) {
        const __m256 xm = _mm256_sub_ps(_mm256_set1_ps(x[i]), vm), wv = _mm256_set1_ps(w[i]),
                     wxv = _mm256_set1_ps(w[i] * x[i]);
        const __m256 l0 = _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xm, vi0), lo), hi)));
        const __m256 l1 = _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xm, vi1), lo), hi)));
        const __m256 l2 = _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xm, vi2), lo), hi)));
        const __m256 wl0 = _mm256_mul_ps(wv, l0), wl1 = _mm256_mul_ps(wv, l1), wl2 = _mm256_mul_ps(wv, l2);
        a0 = _mm256_add_ps(a0, wl0), a1 = _mm256_add_ps(a1, wl1), a2 = _mm256_add_ps(a2, wl2);
        b0 = _mm256_add_ps(b0, _mm256_mul_ps(wl0, l0)), b1 = _mm256_add_ps(b1, _mm256_mul_ps(wl1, l1));
        b2 = _mm256_add_ps(b2, _mm256_mul_ps(wl2, l2));
        c0 = _mm256_add_ps(c0, _mm256_mul_ps(wxv, l0)), c1 = _mm256_add_ps(c1, _mm256_mul_ps(wxv, l1));
        c2 = _mm256_add_ps(c2, _mm256_mul_ps(wxv, l2));
    }
    _mm256_storeu_ps(sl, a0), _mm256_storeu_ps(sl + 8, a1), _mm256_storeu_ps(sl + 16, a2);
    _mm256_storeu_ps(sll, b0), _mm256_storeu_ps(sll + 8, b1), _mm256_storeu_ps(sll + 16, b2);
    _mm256_storeu_ps(sxl, c0), _mm256_storeu_ps(sxl + 8, c1), _mm256_storeu_ps(sxl + 16, c2);
}
#endif

/* For each candidate inverse step inv[c] (c < nc), the sums fit_scale ranks it by:
 * sxl[c] = Σ w x v(l), sll[c] = Σ w v(l)², l the level nearest x·inv[c]. n <= 32 terms:
 * float is plenty to rank candidates. Each candidate's sums run value by value in index
 * order with the scalar roundings, so the SIMD paths (one candidate per lane: AVX2 sixteen
 * a pass, then SSE2 eight) give the bits of the plain loop, which takes any rest, and the
 * written files do not depend on the instruction set. */
static void candidate_sums(const qfmt *f, const float *x, const float *w, int n, const float *inv, int nc, float *sxl,
                           float *sll) {
    int c = 0;
#ifdef SQZ_SSE2
    if (!f->nonlinear) {
        float wx[SQZ_QBLOCK_MAX];
        for (int i = 0; i < n; i++) wx[i] = w[i] * x[i];
#ifdef SQZ_AVX2
        if (have_avx2()) c = candidate_sums_avx2(f, x, wx, w, n, inv, nc, sxl, sll);
#endif
        const __m128 lo = _mm_set1_ps((float)f->lmin), hi = _mm_set1_ps((float)f->lmax);
        for (; c + 8 <= nc; c += 8) { /* two groups of four: independent sums hide the add latency */
            const __m128 vi0 = _mm_loadu_ps(inv + c), vi1 = _mm_loadu_ps(inv + c + 4);
            __m128 a0 = _mm_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
            for (int i = 0; i < n; i++) {
                const __m128 xv = _mm_set1_ps(x[i]), wxv = _mm_set1_ps(wx[i]), wv = _mm_set1_ps(w[i]);
                const __m128 v0 = _mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(xv, vi0), lo), hi)));
                const __m128 v1 = _mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(xv, vi1), lo), hi)));
                a0 = _mm_add_ps(a0, _mm_mul_ps(wxv, v0));
                a1 = _mm_add_ps(a1, _mm_mul_ps(wxv, v1));
                b0 = _mm_add_ps(b0, _mm_mul_ps(_mm_mul_ps(wv, v0), v0));
                b1 = _mm_add_ps(b1, _mm_mul_ps(_mm_mul_ps(wv, v1), v1));
            }
            _mm_storeu_ps(sxl + c, a0), _mm_storeu_ps(sxl + c + 4, a1);
            _mm_storeu_ps(sll + c, b0), _mm_storeu_ps(sll + c + 4, b1);
        }
    }
#endif
    for (; c < nc; c++) {
        float a = 0.0f, b = 0.0f;
        for (int i = 0; i < n; i++) {
            const float v = level_value(f, round_level_inv(f, x[i], inv[c], 0.0f));
            a += w[i] * x[i] * v;
            b += w[i] * v * v;
        }
        sxl[c] = a, sll[c] = b;
    }
}

#ifdef SQZ_AVX2
/* candidate_errors eight candidates at a time: the same float division, f16 rounding
 * (F16C's round-to-nearest-even equals sqz_f32_to_f16 on every float in range: checked
 * on all 2^32) and double operations in the same order. */
__attribute__((target("avx2,f16c"))) static void candidate_errors_avx2(double sxx, const float *sxl, const float *sll,
                                                                       int nc, int f16, float *s_out, double *e_out) {
    const __m256 zero = _mm256_setzero_ps(), hi = _mm256_set1_ps(65504.0f), lo = _mm256_set1_ps(-65504.0f);
    const __m256d two = _mm256_set1_pd(2.0), vxx = _mm256_set1_pd(sxx);
    for (int c = 0; c < nc; c += 8) {
        const __m256 a = _mm256_loadu_ps(sxl + c), b = _mm256_loadu_ps(sll + c);
        const __m256 valid = _mm256_cmp_ps(b, zero, _CMP_GT_OQ);
        __m256 s = _mm256_div_ps(a, b);
        if (f16) {
            s = _mm256_min_ps(_mm256_max_ps(s, lo), hi);
            s = _mm256_cvtph_ps(_mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        s = _mm256_and_ps(s, valid);
        _mm256_storeu_ps(s_out + c, s);
        for (int h = 0; h < 2; h++) {
            const __m256d sd = _mm256_cvtps_pd(h ? _mm256_extractf128_ps(s, 1) : _mm256_castps256_ps128(s));
            const __m256d ad = _mm256_cvtps_pd(h ? _mm256_extractf128_ps(a, 1) : _mm256_castps256_ps128(a));
            const __m256d bd = _mm256_cvtps_pd(h ? _mm256_extractf128_ps(b, 1) : _mm256_castps256_ps128(b));
            const __m256d ek = _mm256_add_pd(_mm256_sub_pd(vxx, _mm256_mul_pd(_mm256_mul_pd(two, sd), ad)),
                                             _mm256_mul_pd(_mm256_mul_pd(sd, sd), bd));
            _mm256_storeu_pd(e_out + c + 4 * h, ek);
        }
    }
}
#endif

/* For each candidate's sums, its least-squares scale s = Σwxv / Σwv² (stored as f16 when
 * f16 is set) and the error of that scale for the candidate's levels, in closed form:
 * E = Σwx² - 2 s Σwxv + s² Σwv². s_out[c] = 0 marks a candidate to skip (no levels, or a
 * scale that rounds to 0). nc: a multiple of 8. */
static void candidate_errors(double sxx, const float *sxl, const float *sll, int nc, int f16, float *s_out,
                             double *e_out) {
#ifdef SQZ_AVX2
    if (have_avx2_f16c()) {
        candidate_errors_avx2(sxx, sxl, sll, nc, f16, s_out, e_out);
        return;
    }
#endif
    for (int c = 0; c < nc; c++) {
        s_out[c] = 0.0f;
        if (!(sll[c] > 0.0f)) continue;
        float s = sxl[c] / sll[c];
        if (f16) s = to_f16(s);
        s_out[c] = s;
        e_out[c] = sxx - 2.0 * s * sxl[c] + (double)s * s * sll[c];
    }
}

/* The candidates' sums, errors and the best of them: *best and *s_best are updated when
 * one beats *best; returns its index, or -1. nc <= FIT_CANDIDATES. */
static int best_candidate(const qfmt *f, const float *x, const float *w, int n, int f16, double sxx, float *inv,
                          int nc, double *best, float *s_best) {
    float sxl[FIT_CANDIDATES], sll[FIT_CANDIDATES], sc[FIT_CANDIDATES];
    double ec[FIT_CANDIDATES];
    /* pad to a multiple of 8 with the last candidate (the padding's sums go unread) */
    int np = nc, found = -1;
    while (nc > 0 && np % 8) inv[np] = inv[nc - 1], np++;
    candidate_sums(f, x, w, n, inv, np, sxl, sll);
    candidate_errors(sxx, sxl, sll, np, f16, sc, ec);
    double b = *best;
    for (int c = 0; c < nc; c++) /* the first strictly smallest (no branch to mispredict) */
        if (sc[c] != 0.0f && ec[c] < b) b = ec[c], found = c;
    if (found >= 0) *best = b, *s_best = sc[found];
    return found;
}

/* Searches the scale s of n values (xhat = s * v(l)); with f16 set, every candidate is
 * judged with s rounded to f16 (the stored scale). For each candidate rounding the best
 * scale and its error follow in closed form: s = Sxl/Sll, E = Sxx - 2 s Sxl + s^2 Sll.
 * The candidates map the largest |x| onto either end of the level range and 25 steps
 * around it; they are searched coarse to fine (every fourth step, then the three on either
 * side of the best of those: 20 sums instead of 50, two passes of the SIMD sums instead of
 * four; the errors of SmolLM2's tensors within 0.02% of trying all 50). Returns s, levels
 * in L, the error in *err. */
static float fit_scale(const qfmt *f, const float *x, const float *w, int n, int f16, int8_t *L, double *err) {
    int8_t Lt[SQZ_QBLOCK_MAX];
    float amax = 0.0f, M = 0.0f;
    double sxx4[4] = {0.0, 0.0, 0.0, 0.0}; /* four chains: n % 4 == 0 */
#ifdef SQZ_AVX2
    if (have_avx2()) wxx_amax_avx2(x, w, n, sxx4, &amax);
    else
#endif
    {
        for (int i = 0; i < n; i++) sxx4[i & 3] += (double)w[i] * x[i] * x[i];
        for (int i = 0; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    }
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) == amax) {
            M = x[i];
            break;
        }
    const double sxx = (sxx4[0] + sxx4[1]) + (sxx4[2] + sxx4[3]);
    double best = sxx; /* s = 0: everything rounds to 0 */
    float s_best = 0.0f;
    if (amax == 0.0f) {
        sub_err(f, x, w, n, 0.0f, 0.0f, L);
        *err = 0.0;
        return 0.0f;
    }
    const float ends[2] = {level_value(f, f->lmin), level_value(f, f->lmax)}, iM = 1.0f / M;
    float step[2], inv[FIT_CANDIDATES];
    int cand_e[FIT_CANDIDATES], cand_k[FIT_CANDIDATES], nc = 0;
    /* On a symmetric grid (Q8_0's -127..127) the second end's candidates are the first's
     * negated: the same sums up to sign, the same errors, and the strict comparison below
     * never takes them; they are not computed. */
    const int n_ends = !f->nonlinear && f->lmin == -f->lmax ? 1 : 2;
    for (int e = 0; e < n_ends; e++) {
        const float E = ends[e];
        step[e] = fmaxf(0.1f, fabsf(E) / 80.0f);
        if (fabsf(E) < 0.5f) continue;
        for (int k = -12; k <= 12; k += 4) {
            const float t = E + copysignf(step[e] * (float)k, E);
            if (fabsf(t) < 0.5f || (t > 0) != (E > 0)) continue;
            cand_e[nc] = e, cand_k[nc] = k, inv[nc++] = t * iM;
        }
    }
    const int c = best_candidate(f, x, w, n, f16, sxx, inv, nc, &best, &s_best);
    if (c >= 0) { /* the three steps on either side of the best coarse candidate */
        const int e = cand_e[c], k0 = cand_k[c];
        const float E = ends[e];
        int nf = 0;
        for (int k = k0 - 3; k <= k0 + 3; k++) {
            const float t = E + copysignf(step[e] * (float)k, E);
            if (k == k0 || k < -12 || k > 12 || fabsf(t) < 0.5f || (t > 0) != (E > 0)) continue;
            inv[nf++] = t * iM;
        }
        best_candidate(f, x, w, n, f16, sxx, inv, nf, &best, &s_best);
    }
    /* Re-round with the best scale, then alternate refit and re-round while it helps. */
    best = sub_err(f, x, w, n, s_best, 0.0f, L);
    for (int it = 0; it < 4 && s_best != 0.0f; it++) {
        float s = lsq_scale(f, x, w, n, L);
        if (f16) s = to_f16(s);
        if (s == 0.0f || s == s_best) break;
        const double ek = sub_err(f, x, w, n, s, 0.0f, Lt);
        if (!(ek < best)) break;
        best = ek, s_best = s, memcpy(L, Lt, (size_t)n);
    }
    *err = best;
    return s_best;
}

/* ---------------- scale and min (Q2_K/Q4_K/Q5_K sub-blocks) ---------------- */

/* Weighted least squares for x ~ s*l - off with off >= 0 (ggml's mins are subtracted and
 * non-negative). Returns 0 when the fit is degenerate. */
static int lsq_scale_min(const float *x, const float *w, int n, const int8_t *L, float *s, float *off) {
    double q[5][4] = {{0}}; /* Σw, Σwl, Σwl², Σwx, Σwxl in four chains each (n % 4 == 0) */
    for (int i = 0; i < n; i++) {
        const double l = L[i], wi = w[i];
        q[0][i & 3] += wi, q[1][i & 3] += wi * l, q[2][i & 3] += wi * l * l, q[3][i & 3] += wi * x[i],
            q[4][i & 3] += wi * x[i] * l;
    }
    double t[5];
    for (int k = 0; k < 5; k++) t[k] = (q[k][0] + q[k][1]) + (q[k][2] + q[k][3]);
    const double sw = t[0], sl = t[1], sll = t[2], sx = t[3], sxl = t[4];
    const double D = sw * sll - sl * sl;
    if (!(D > 0.0)) return 0;
    double a = (sw * sxl - sx * sl) / D, b = (sll * sx - sl * sxl) / D; /* x ~ a l + b */
    if (b > 0.0) b = 0.0, a = sll > 0.0 ? sxl / sll : 0.0;
    if (!(a > 0.0)) return 0;
    *s = (float)a;
    *off = (float)-b;
    return 1;
}

static void fit_scale_min(const qfmt *f, const float *x, const float *w, int n, float *s_out, float *off_out) {
    int8_t L[SQZ_QBLOCK_MAX], Lt[SQZ_QBLOCK_MAX];
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) mn = x[i] < mn ? x[i] : mn, mx = x[i] > mx ? x[i] : mx; /* finite values */
    if (mn > 0.0f) mn = 0.0f;
    if (!(mx > mn)) { /* all values equal mn <= 0: the min alone represents them */
        *s_out = 0.0f, *off_out = -mn;
        return;
    }
    double sxx = 0.0;
    for (int i = 0; i < n; i++) sxx += (double)w[i] * x[i] * x[i];
    float s_best = (mx - mn) / (float)f->lmax, off_best = -mn;
    double best = sub_err(f, x, w, n, s_best, off_best, L);
    /* one pass of sums per candidate; the least-squares (s, off) and its error follow in
     * closed form. Σw and Σwx do not depend on the candidate. */
    float sw = 0, sx = 0, sl_c[24], sll_c[24], sxl_c[24], iscale_c[24];
    for (int i = 0; i < n; i++) sw += w[i], sx += w[i] * x[i];
    for (int k = 0; k < 24; k++) iscale_c[k] = ((float)f->lmax - 1.0f + 0.1f * (float)(k <= 20 ? k : 20)) / (mx - mn);
    int k0 = 0;
#ifdef SQZ_AVX2
    if (have_avx2()) {
        min_sums_avx2(x, w, n, mn, (float)f->lmax, iscale_c, sl_c, sll_c, sxl_c);
        k0 = 24;
    }
#endif
#ifdef SQZ_SSE2
    if (k0 == 0) { /* four candidates side by side, each summed in index order: the plain loop's bits */
        const __m128 vm = _mm_set1_ps(mn), lo = _mm_setzero_ps(), hi = _mm_set1_ps((float)f->lmax);
        for (; k0 < 21; k0 += 8) { /* two groups of four at a time, as in candidate_sums */
            const __m128 vi0 = _mm_loadu_ps(iscale_c + k0), vi1 = _mm_loadu_ps(iscale_c + k0 + 4);
            __m128 a0 = lo, b0 = lo, c0 = lo, a1 = lo, b1 = lo, c1 = lo;
            for (int i = 0; i < n; i++) {
                const __m128 xm = _mm_sub_ps(_mm_set1_ps(x[i]), vm), wv = _mm_set1_ps(w[i]),
                             wxv = _mm_set1_ps(w[i] * x[i]);
                const __m128 l0 = _mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(xm, vi0), lo), hi)));
                const __m128 l1 = _mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(xm, vi1), lo), hi)));
                const __m128 wl0 = _mm_mul_ps(wv, l0), wl1 = _mm_mul_ps(wv, l1);
                a0 = _mm_add_ps(a0, wl0), a1 = _mm_add_ps(a1, wl1);
                b0 = _mm_add_ps(b0, _mm_mul_ps(wl0, l0)), b1 = _mm_add_ps(b1, _mm_mul_ps(wl1, l1));
                c0 = _mm_add_ps(c0, _mm_mul_ps(wxv, l0)), c1 = _mm_add_ps(c1, _mm_mul_ps(wxv, l1));
            }
            _mm_storeu_ps(sl_c + k0, a0), _mm_storeu_ps(sll_c + k0, b0), _mm_storeu_ps(sxl_c + k0, c0);
            _mm_storeu_ps(sl_c + k0 + 4, a1), _mm_storeu_ps(sll_c + k0 + 4, b1), _mm_storeu_ps(sxl_c + k0 + 4, c1);
        }
    }
#endif
    for (; k0 <= 20; k0++) {
        float sl = 0, sll = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            const float l = rintf(clampf((x[i] - mn) * iscale_c[k0], 0.0f, (float)f->lmax)), wi = w[i];
            sl += wi * l, sll += wi * l * l, sxl += wi * x[i] * l;
        }
        sl_c[k0] = sl, sll_c[k0] = sll, sxl_c[k0] = sxl;
    }
    for (int k = 0; k <= 20; k++) {
        const float sl = sl_c[k], sll = sll_c[k], sxl = sxl_c[k];
        const float D = sw * sll - sl * sl;
        if (!(D > 0.0f)) continue;
        float a = (sw * sxl - sx * sl) / D, b = (sll * sx - sl * sxl) / D; /* x ~ a l + b */
        if (b > 0.0f) b = 0.0f, a = sxl / sll;
        if (!(a > 0.0f)) continue;
        const double ek = sxx - 2.0 * a * sxl - 2.0 * b * sx + (double)a * a * sll + 2.0 * a * b * sl + (double)b * b * sw;
        if (ek < best) best = ek, s_best = a, off_best = -b;
    }
    best = sub_err(f, x, w, n, s_best, off_best, L);
    for (int it = 0; it < 4; it++) {
        float s, off;
        if (!lsq_scale_min(x, w, n, L, &s, &off)) break;
        const double ek = sub_err(f, x, w, n, s, off, Lt);
        if (!(ek < best)) break;
        best = ek, s_best = s, off_best = off, memcpy(L, Lt, (size_t)n);
    }
    *s_out = s_best;
    *off_out = off_best;
}

/* ---------------- scale and free min (Q4_1/Q5_1 blocks) ---------------- */

#define AFFINE_CANDIDATES 16 /* fit_affine's coarse pass: 13, padded to a multiple of 8 */

#ifdef SQZ_AVX2
/* fit_affine's candidate sums in double, four candidates per register and two registers
 * a pass, each lane summing value by value in index order with the plain loop's float
 * rounding and double products: the same bits. nc: a multiple of 8. */
__attribute__((target("avx2"))) static void affine_sums_avx2(const float *x, const float *w, int n, float mn,
                                                             float lmax, const float *iscale, int nc, double *sl,
                                                             double *sll, double *sxl) {
    const __m128 vm = _mm_set1_ps(mn), lo = _mm_setzero_ps(), hi = _mm_set1_ps(lmax);
    for (int k = 0; k < nc; k += 8) {
        const __m128 vi0 = _mm_loadu_ps(iscale + k), vi1 = _mm_loadu_ps(iscale + k + 4);
        __m256d a0 = _mm256_setzero_pd(), b0 = a0, c0 = a0, a1 = a0, b1 = a0, c1 = a0;
        for (int i = 0; i < n; i++) {
            const __m128 xm = _mm_sub_ps(_mm_set1_ps(x[i]), vm);
            const __m256d l0 = _mm256_cvtps_pd(_mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(xm, vi0), lo), hi))));
            const __m256d l1 = _mm256_cvtps_pd(_mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(xm, vi1), lo), hi))));
            const double wi = w[i];
            const __m256d wv = _mm256_set1_pd(wi), wxv = _mm256_set1_pd(wi * x[i]);
            const __m256d wl0 = _mm256_mul_pd(wv, l0), wl1 = _mm256_mul_pd(wv, l1);
            a0 = _mm256_add_pd(a0, wl0), a1 = _mm256_add_pd(a1, wl1);
            b0 = _mm256_add_pd(b0, _mm256_mul_pd(wl0, l0)), b1 = _mm256_add_pd(b1, _mm256_mul_pd(wl1, l1));
            c0 = _mm256_add_pd(c0, _mm256_mul_pd(wxv, l0)), c1 = _mm256_add_pd(c1, _mm256_mul_pd(wxv, l1));
        }
        _mm256_storeu_pd(sl + k, a0), _mm256_storeu_pd(sl + k + 4, a1);
        _mm256_storeu_pd(sll + k, b0), _mm256_storeu_pd(sll + k + 4, b1);
        _mm256_storeu_pd(sxl + k, c0), _mm256_storeu_pd(sxl + k + 4, c1);
    }
}
#endif

/* The affine fit's candidates k < nc (inverse steps iscale[k]): for each the weighted
 * least-squares (d, m) of its rounding, d rounded to f16 and m refitted for that d and
 * rounded too, and the error of that stored pair in closed form. The best pair below
 * *best goes to *best, *d_c, *m_c; returns its index, or -1. */
static int affine_candidates(const float *x, const float *w, int n, float mn, float lmax, double sw, double sx,
                             double sxx, float *iscale, int nc, double *best, float *d_c, float *m_c) {
    double sl_c[AFFINE_CANDIDATES], sll_c[AFFINE_CANDIDATES], sxl_c[AFFINE_CANDIDATES];
    int np = nc, k0 = 0, found = -1;
    while (nc > 0 && np % 8) iscale[np] = iscale[nc - 1], np++; /* padding: its sums go unread */
#ifdef SQZ_AVX2
    if (have_avx2()) affine_sums_avx2(x, w, n, mn, lmax, iscale, np, sl_c, sll_c, sxl_c), k0 = np;
#endif
    for (; k0 < nc; k0++) {
        double sl = 0, sll = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            const double l = rintf(clampf((x[i] - mn) * iscale[k0], 0.0f, lmax)), wi = w[i];
            sl += wi * l, sll += wi * l * l, sxl += wi * x[i] * l;
        }
        sl_c[k0] = sl, sll_c[k0] = sll, sxl_c[k0] = sxl;
    }
    for (int k = 0; k < nc; k++) {
        const double sl = sl_c[k], sll = sll_c[k], sxl = sxl_c[k];
        const double D = sw * sll - sl * sl;
        if (!(D > 0.0)) continue;
        const double a = (sw * sxl - sx * sl) / D;
        if (!(a > 0.0)) continue;
        const float d = to_f16((float)a);
        if (d == 0.0f) continue;
        const float m = to_f16((float)((sx - (double)d * sl) / sw));
        const double ek = sxx - 2.0 * d * sxl - 2.0 * m * sx + (double)d * d * sll + 2.0 * (double)d * m * sl +
                          (double)m * m * sw;
        if (ek < *best) *best = ek, *d_c = d, *m_c = m, found = k;
    }
    return found;
}

/* Searches x ~ d*l + m, l in 0..lmax, d >= 0 and m of either sign, both stored as f16,
 * like fit_scale: candidate roundings from (x - min)*iscale with iscale around lmax/range
 * (37 steps of 0.05 levels, searched coarse to fine: every third, then the two on either
 * side of the best), for each the stored pair's error in closed form (affine_candidates).
 * The best pair is then re-rounded, and refit / re-round alternate while the error falls.
 * ggml's own min/max rounding (d = range/lmax, m = min) is the first candidate, so the
 * result is never worse than it. Returns the f16 d and m as floats, their levels in L. */
static void fit_affine(const qfmt *f, const float *x, const float *w, int n, float *d_out, float *m_out, int8_t *L) {
    int8_t Lt[SQZ_QBLOCK_MAX];
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) mn = x[i] < mn ? x[i] : mn, mx = x[i] > mx ? x[i] : mx; /* finite values */
    if (!(mx > mn)) { /* a constant block: the min alone */
        *d_out = 0.0f, *m_out = to_f16(mn);
        sub_err(f, x, w, n, 0.0f, -*m_out, L);
        return;
    }
    double sw = 0, sx = 0, sxx = 0;
    for (int i = 0; i < n; i++) sw += w[i], sx += (double)w[i] * x[i], sxx += (double)w[i] * x[i] * x[i];
    const float lmax = (float)f->lmax, irange = 1.0f / (mx - mn);
    float d_best = to_f16((mx - mn) / lmax), m_best = to_f16(mn);
    double best = sub_err(f, x, w, n, d_best, -m_best, L);
    float d_c = d_best, m_c = m_best;
    double best_c = INFINITY;
    float iscale[AFFINE_CANDIDATES];
    int nc = 0;
    for (int k = 0; k <= 36; k += 3) iscale[nc++] = (lmax + 0.05f * (float)(k - 18)) * irange;
    const int c = affine_candidates(x, w, n, mn, lmax, sw, sx, sxx, iscale, nc, &best_c, &d_c, &m_c);
    if (c >= 0) {
        const int k0 = 3 * c;
        nc = 0;
        for (int k = k0 - 2; k <= k0 + 2; k++)
            if (k != k0 && k >= 0 && k <= 36) iscale[nc++] = (lmax + 0.05f * (float)(k - 18)) * irange;
        affine_candidates(x, w, n, mn, lmax, sw, sx, sxx, iscale, nc, &best_c, &d_c, &m_c);
    }
    /* the closed form is the error of the candidate's levels; re-rounding only lowers it */
    if (best_c < INFINITY) {
        const double ek = sub_err(f, x, w, n, d_c, -m_c, Lt);
        if (ek < best) best = ek, d_best = d_c, m_best = m_c, memcpy(L, Lt, (size_t)n);
    }
    for (int it = 0; it < 4; it++) {
        double sl = 0, sll = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            const double l = L[i], wi = w[i];
            sl += wi * l, sll += wi * l * l, sxl += wi * x[i] * l;
        }
        const double D = sw * sll - sl * sl;
        if (!(D > 0.0)) break;
        const double a = (sw * sxl - sx * sl) / D;
        if (!(a > 0.0)) break;
        const float d = to_f16((float)a);
        const float m = to_f16((float)((sx - (double)d * sl) / sw));
        if (d == d_best && m == m_best) break;
        const double ek = sub_err(f, x, w, n, d, -m, Lt);
        if (!(ek < best)) break;
        best = ek, d_best = d, m_best = m, memcpy(L, Lt, (size_t)n);
    }
    *d_out = d_best;
    *m_out = m_best;
}

/* ---------------- k-quant super-blocks ---------------- */

/* The integers either side of r (floor and floor + 1), clamped to [lo, hi]: 1 or 2. */
static int int_candidates(float r, int lo, int hi, int *c) {
    const float rc = clampf(r, (float)lo, (float)hi);
    const int r0 = (int)floorf(rc);
    c[0] = r0;
    if (r0 + 1 > hi) return 1;
    c[1] = r0 + 1;
    return 2;
}

/* For fixed f16 super scales d and dmin, picks each sub-block's integer scale (and min)
 * among the two integers either side of its ideal s/d (off/dmin), with its levels;
 * returns the error. (A third neighbour cost five roundings a sub-block instead of three
 * and lowered the error of SmolLM2's Q2_K and Q6_K tensors by 0.05% on average, at most
 * 0.5%.) */
static double kq_eval(const qfmt *f, const float *x, const float *w, const float *s, const float *off, float d,
                      float dmin, sqz_qparams *p, int8_t *L) {
    int8_t Lt[32];
    double total = 0.0;
    const int nsub = f->block / f->sub;
    for (int j = 0; j < nsub; j++) {
        const float *xj = x + j * f->sub, *wj = w + j * f->sub;
        int cs[2], cm[2] = {0}, ns, nm = 1;
        if (d != 0.0f) {
            ns = int_candidates(s[j] / d, f->smin, f->smax, cs);
        } else {
            cs[0] = 0, ns = 1;
        }
        if (f->mmax && dmin != 0.0f) nm = int_candidates(off[j] / dmin, 0, f->mmax, cm);
        /* coordinate search: the scale with the nearest min first, then the other mins */
        const int mid = nm == 2 && off[j] / dmin - (float)cm[0] > 0.5f ? 1 : 0;
        double best = INFINITY;
        int ba = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int a = 0; a < ns; a++) {
                for (int b = 0; b < nm; b++) {
                    if (pass == 0 ? b != mid : (a != ba || b == mid)) continue;
                    const float step = d * (float)cs[a], o = dmin * (float)cm[b];
                    const double e = sub_err(f, xj, wj, f->sub, step, o, Lt);
                    if (e < best) {
                        best = e, ba = a;
                        p->sc[j] = (int16_t)cs[a], p->m[j] = (int16_t)cm[b];
                        p->scale[j] = step, p->min[j] = o;
                        memcpy(L + j * f->sub, Lt, (size_t)f->sub);
                    }
                }
            }
        }
        total += best;
    }
    return total;
}

static void set_super(sqz_qparams *p, float d, float dmin) {
    p->d = sqz_f32_to_f16(d);
    p->dmin = sqz_f32_to_f16(dmin);
}

/* A k-quant super-block's parameters; the levels they give in Lb. */
static void kquant_params(const qfmt *f, const float *x, const float *w, sqz_qparams *p, int8_t *Lb) {
    float s[SQZ_QSUB_MAX] = {0}, off[SQZ_QSUB_MAX] = {0};
    int8_t L[SQZ_QBLOCK_MAX];
    const int nsub = f->block / f->sub;
    for (int j = 0; j < nsub; j++) {
        off[j] = 0.0f;
        if (f->mmax) {
            fit_scale_min(f, x + j * f->sub, w + j * f->sub, f->sub, &s[j], &off[j]);
        } else {
            double e;
            s[j] = fit_scale(f, x + j * f->sub, w + j * f->sub, f->sub, 0, L, &e);
        }
    }
    sqz_qparams cur = *p, bestp = *p; /* Lb: the levels of the best so far */
    double best = INFINITY;
    float bd = 0.0f, bdm = 0.0f;

    if (!f->mmax) {
        float S = 0.0f;
        for (int j = 0; j < nsub; j++)
            if (fabsf(s[j]) > fabsf(S)) S = s[j];
        best = kq_eval(f, x, w, s, off, 0.0f, 0.0f, &bestp, Lb);
        if (S != 0.0f) {
            static const float ks[6] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f};
            const int ends[2] = {f->smin, f->smax};
            for (int e = 0; e < 2; e++) {
                for (int k = 0; k < 6; k++) {
                    const float t = (float)ends[e] - copysignf(ks[k], (float)ends[e]);
                    const float d = to_f16(S / t);
                    if (d == 0.0f) continue;
                    const double ek = kq_eval(f, x, w, s, off, d, 0.0f, &cur, L);
                    if (ek < best) best = ek, bestp = cur, bd = d, memcpy(Lb, L, (size_t)f->block);
                }
            }
        }
        /* Closed-form refit of d for the chosen integers a = sc * l, then re-pick. */
        for (int it = 0; it < 3 && bd != 0.0f; it++) {
            double q[2][4] = {{0}}; /* four chains each */
            for (int i = 0; i < f->block; i++) {
                const double a = (double)bestp.sc[i / f->sub] * Lb[i];
                q[0][i & 3] += (double)w[i] * x[i] * a, q[1][i & 3] += (double)w[i] * a * a;
            }
            const double sxa = (q[0][0] + q[0][1]) + (q[0][2] + q[0][3]), saa = (q[1][0] + q[1][1]) + (q[1][2] + q[1][3]);
            if (!(saa > 0.0)) break;
            const float d = to_f16((float)(sxa / saa));
            if (d == 0.0f || d == bd) break;
            const double ek = kq_eval(f, x, w, s, off, d, 0.0f, &cur, L);
            if (!(ek < best)) break;
            best = ek, bestp = cur, bd = d, memcpy(Lb, L, (size_t)f->block);
        }
    } else {
        float S = 0.0f, Mo = 0.0f;
        for (int j = 0; j < nsub; j++) S = fmaxf(S, s[j]), Mo = fmaxf(Mo, off[j]);
        /* coordinate search: the super scale's two candidates at the first min scale, then
         * the second min scale at the better of them: three roundings of the block, not the
         * eight of a 4 × 2 grid (SmolLM2's Q2_K tensors: error +0.02% on average) */
        static const float kd[2] = {0.0f, 1.0f}, km[2] = {0.0f, 1.0f};
        float d_c[2], dm_c[2];
        for (int a = 0; a < 2; a++) d_c[a] = S > 0.0f ? to_f16(S / ((float)f->smax - kd[a])) : 0.0f;
        for (int b = 0; b < 2; b++) dm_c[b] = Mo > 0.0f ? to_f16(Mo / ((float)f->mmax - km[b])) : 0.0f;
        for (int k = 0; k < 3; k++) {
            const float d = k < 2 ? d_c[k] : bd, dm = k < 2 ? dm_c[0] : dm_c[1];
            const double ek = kq_eval(f, x, w, s, off, d, dm, &cur, L);
            if (ek < best) best = ek, bestp = cur, bd = d, bdm = dm, memcpy(Lb, L, (size_t)f->block);
        }
        /* Closed-form refit of (d, dmin) for the chosen integers: x ~ d*(sc*l) - dmin*m.
         * Once: two more rounds lowered SmolLM2's Q2_K errors by 0.01% and took 7% of RTN's
         * time. */
        do {
            double q[5][4] = {{0}}; /* four chains each */
            for (int i = 0; i < f->block; i++) {
                const double a = (double)bestp.sc[i / f->sub] * Lb[i], b = -(double)bestp.m[i / f->sub], wi = w[i];
                q[0][i & 3] += wi * a * a, q[1][i & 3] += wi * a * b, q[2][i & 3] += wi * b * b,
                    q[3][i & 3] += wi * x[i] * a, q[4][i & 3] += wi * x[i] * b;
            }
            double t[5];
            for (int k = 0; k < 5; k++) t[k] = (q[k][0] + q[k][1]) + (q[k][2] + q[k][3]);
            const double saa = t[0], sab = t[1], sbb = t[2], sxa = t[3], sxb = t[4];
            const double D = saa * sbb - sab * sab;
            double d, dm;
            if (D > 1e-30 * (saa * sbb + 1e-300)) {
                d = (sxa * sbb - sxb * sab) / D, dm = (saa * sxb - sab * sxa) / D;
            } else {
                d = saa > 0.0 ? sxa / saa : 0.0, dm = 0.0;
            }
            if (dm < 0.0) dm = 0.0, d = saa > 0.0 ? sxa / saa : 0.0;
            if (d < 0.0) d = 0.0;
            const float fd = to_f16((float)d), fdm = to_f16((float)dm);
            if (fd == bd && fdm == bdm) break;
            const double ek = kq_eval(f, x, w, s, off, fd, fdm, &cur, L);
            if (!(ek < best)) break;
            best = ek, bestp = cur, bd = fd, bdm = fdm, memcpy(Lb, L, (size_t)f->block);
        } while (0);
    }
    *p = bestp;
    set_super(p, bd, bdm);
    (void)best;
}

/* ---------------- public: params, rounding, packing ---------------- */

int sqz_gptq_supported(int type) {
    const sqz_type_traits *tt = sqz_type_get(type);
    return tt && (tt->quantize || tt->codebook) ? 1 : 0;
}

int sqz_quant_supported(int type) {
    const sqz_type_traits *tt = sqz_type_get(type);
    return tt && tt->quantize ? 1 : 0;
}

int sqz_quant_level_range(int type, int *lmin, int *lmax, sqz_err *err) {
    const qfmt *f = fmt_of(type);
    if (!f) return sqz_fail(err, "quantize: type %s (id %d) is not supported", type_name(type), type);
    *lmin = f->lmin;
    *lmax = f->lmax;
    return SQZ_OK;
}

/* A block's parameters and the levels they give its values (L: the rounding
 * sqz_quant_round_with_params would make; the searches end with it). */
static int block_params(int type, const float *x, const float *w, sqz_qparams *p, int8_t *L, sqz_err *err) {
    const qfmt *f = fmt_of(type);
    if (!f) return sqz_fail(err, "quantize: type %s (id %d) is not supported", type_name(type), type);
    float wb[SQZ_QBLOCK_MAX];
    double wsum = 0.0;
    uint32_t nonfinite = 0; /* exponent bits all ones: inf or nan (one pass, no early exit) */
    for (int i = 0; i < f->block; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        nonfinite |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    if (nonfinite)
        for (int i = 0; i < f->block; i++)
            if (!isfinite(x[i]))
                return sqz_fail(err, "quantize %s: value %d of the block is not finite", type_name(type), i);
    if (w) {
        for (int i = 0; i < f->block; i++) {
            if (!(w[i] >= 0.0f && isfinite(w[i])))
                return sqz_fail(err, "quantize %s: weight %d of the block is %g, expected a finite value >= 0",
                                type_name(type), i, (double)w[i]);
            wb[i] = w[i];
            wsum += wb[i];
        }
        /* A tiny floor keeps zero-importance columns on a sensible grid (it breaks ties
         * only); an all-zero weight block falls back to uniform. */
        const float floor_w = wsum > 0.0 ? (float)(1e-6 * wsum / f->block) : 1.0f;
        for (int i = 0; i < f->block; i++) wb[i] += floor_w;
    } else {
        const float one = 1.0f + 1e-6f; /* uniform, with the floor above */
        for (int i = 0; i < f->block; i++) wb[i] = one;
    }

    memset(p, 0, sizeof(*p));
    p->type = type;
    p->block_size = f->block;
    p->sub_size = f->sub;
    p->n_sub = f->block / f->sub;
    if (f->affine) {
        float d, m;
        fit_affine(f, x, wb, f->block, &d, &m, L);
        p->d = sqz_f32_to_f16(d);
        p->dmin = sqz_f32_to_f16(m); /* the block's min as stored (added) */
        p->scale[0] = sqz_f16_to_f32(p->d);
        p->min[0] = -sqz_f16_to_f32(p->dmin);
        return SQZ_OK;
    }
    if (!f->two_level) {
        double e;
        const float d = fit_scale(f, x, wb, f->block, 1, L, &e);
        p->d = sqz_f32_to_f16(d);
        p->scale[0] = sqz_f16_to_f32(p->d);
        return SQZ_OK;
    }
    kquant_params(f, x, wb, p, L);
    return SQZ_OK;
}

int sqz_quant_block_params(int type, const float *x, const float *w, sqz_qparams *p, sqz_err *err) {
    int8_t L[SQZ_QBLOCK_MAX];
    return block_params(type, x, w, p, L, err);
}

float sqz_quant_round_with_params(const sqz_qparams *p, int i, float x, int8_t *level) {
    const qfmt *f = fmt_of(p->type);
    if (!f || i < 0 || i >= p->block_size) {
        *level = 0;
        return 0.0f;
    }
    const int j = i / p->sub_size;
    const int l = round_level(f, x, p->scale[j], p->min[j]);
    *level = (int8_t)l;
    return recon(f, p->scale[j], p->min[j], l);
}

static void put_f16(uint8_t *b, uint16_t h) {
    b[0] = (uint8_t)(h & 0xFF);
    b[1] = (uint8_t)(h >> 8);
}

/* The 8 six-bit (scale, min) pairs of Q4_K/Q5_K in 12 bytes: pairs 0..3 in the low 6 bits
 * of bytes 0..3 (scale) and 4..7 (min); pairs 4..7 as nibbles of bytes 8..11 with their
 * top 2 bits in the high bits of bytes 0..7. */
static void pack_scale_min_k4(const sqz_qparams *p, uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        const int sc = p->sc[j], m = p->m[j];
        if (j < 4) {
            s[j] |= (uint8_t)sc;
            s[j + 4] |= (uint8_t)m;
        } else {
            s[j + 4] = (uint8_t)((sc & 0x0F) | ((m & 0x0F) << 4));
            s[j - 4] |= (uint8_t)((sc >> 4) << 6);
            s[j] |= (uint8_t)((m >> 4) << 6);
        }
    }
}

void sqz_quant_pack_block(const sqz_qparams *p, const int8_t *levels, void *dst) {
    const qfmt *f = fmt_of(p->type);
    if (!f) return;
    uint8_t *b = dst;
    int c[SQZ_QBLOCK_MAX];
    for (int i = 0; i < f->block; i++) {
        int l = levels[i];
        c[i] = l < f->lmin ? f->lmin : (l > f->lmax ? f->lmax : l);
    }
    switch (p->type) {
    case SQZ_TYPE_Q4_0: /* f16 d; qs[16]: value j in the low nibble of byte j, j+16 high */
    case SQZ_TYPE_IQ4_NL: {
        const int bias = p->type == SQZ_TYPE_Q4_0 ? 8 : 0;
        put_f16(b, p->d);
        for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)((c[j] + bias) | ((c[j + 16] + bias) << 4));
        break;
    }
    case SQZ_TYPE_Q4_1: /* f16 d; f16 m; qs[16] as Q4_0's, levels unbiased */
        put_f16(b, p->d);
        put_f16(b + 2, p->dmin);
        for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(c[j] | (c[j + 16] << 4));
        break;
    case SQZ_TYPE_Q5_0:   /* f16 d; u32 qh (bit j = 5th bit of value j); qs[16] */
    case SQZ_TYPE_Q5_1: { /* f16 d; f16 m; u32 qh; qs[16], levels unbiased */
        const int bias = p->type == SQZ_TYPE_Q5_0 ? 16 : 0, o = p->type == SQZ_TYPE_Q5_0 ? 2 : 4;
        uint32_t qh = 0;
        put_f16(b, p->d);
        if (p->type == SQZ_TYPE_Q5_1) put_f16(b + 2, p->dmin);
        for (int j = 0; j < 32; j++) qh |= (uint32_t)(((c[j] + bias) >> 4) & 1) << j;
        for (int k = 0; k < 4; k++) b[o + k] = (uint8_t)(qh >> (8 * k));
        for (int j = 0; j < 16; j++)
            b[o + 4 + j] = (uint8_t)(((c[j] + bias) & 0x0F) | (((c[j + 16] + bias) & 0x0F) << 4));
        break;
    }
    case SQZ_TYPE_Q8_0: /* f16 d; i8 qs[32] */
        put_f16(b, p->d);
        for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)c[j];
        break;
    case SQZ_TYPE_Q2_K: { /* scales[16] (scale | min<<4); qs[64]; f16 d; f16 dmin */
        memset(b, 0, 84);
        for (int j = 0; j < 16; j++) b[j] = (uint8_t)(p->sc[j] | (p->m[j] << 4));
        /* value e: byte 32*(e/128) + e%32 of qs, bits 2*((e%128)/32) */
        for (int e = 0; e < 256; e++) b[16 + 32 * (e / 128) + e % 32] |= (uint8_t)(c[e] << (2 * ((e % 128) / 32)));
        put_f16(b + 80, p->d);
        put_f16(b + 82, p->dmin);
        break;
    }
    case SQZ_TYPE_Q3_K: { /* hmask[32]; qs[64]; scales[12]; f16 d */
        memset(b, 0, 110);
        for (int e = 0; e < 256; e++) {
            const int u = c[e] + 4; /* 0..7: low 2 bits in qs, the 3rd in hmask */
            b[32 + 32 * (e / 128) + e % 32] |= (uint8_t)((u & 3) << (2 * ((e % 128) / 32)));
            b[e % 32] |= (uint8_t)(((u >> 2) & 1) << (e / 32));
        }
        uint8_t *s = b + 96;
        for (int j = 0; j < 16; j++) {
            const int v = p->sc[j] + 32;
            if (j < 8)
                s[j] |= (uint8_t)(v & 0x0F);
            else
                s[j - 8] |= (uint8_t)((v & 0x0F) << 4);
            s[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
        }
        put_f16(b + 108, p->d);
        break;
    }
    case SQZ_TYPE_Q4_K: { /* f16 d; f16 dmin; scales[12]; qs[128] */
        memset(b, 0, 144);
        put_f16(b, p->d);
        put_f16(b + 2, p->dmin);
        pack_scale_min_k4(p, b + 4);
        /* value e = 64g + 32t + l: nibble t of byte 32g + l */
        for (int e = 0; e < 256; e++) b[16 + 32 * (e / 64) + e % 32] |= (uint8_t)(c[e] << (4 * ((e % 64) / 32)));
        break;
    }
    case SQZ_TYPE_Q5_K: { /* f16 d; f16 dmin; scales[12]; qh[32]; qs[128] */
        memset(b, 0, 176);
        put_f16(b, p->d);
        put_f16(b + 2, p->dmin);
        pack_scale_min_k4(p, b + 4);
        for (int e = 0; e < 256; e++) {
            const int g = e / 64, t = (e % 64) / 32, l = e % 32;
            b[48 + 32 * g + l] |= (uint8_t)((c[e] & 0x0F) << (4 * t));
            b[16 + l] |= (uint8_t)(((c[e] >> 4) & 1) << (2 * g + t));
        }
        break;
    }
    case SQZ_TYPE_IQ4_XS: { /* f16 d; u16 scales_h; u8 scales_l[4]; qs[128] (types.c's dq_iq4_xs) */
        memset(b, 0, 136);
        put_f16(b, p->d);
        unsigned scales_h = 0;
        for (int j = 0; j < 8; j++) {
            const int ls = p->sc[j] + 32;
            b[4 + j / 2] |= (uint8_t)((ls & 0x0F) << (4 * (j % 2)));
            scales_h |= (unsigned)((ls >> 4) & 3) << (2 * j);
            for (int k = 0; k < 16; k++) b[8 + 16 * j + k] = (uint8_t)(c[32 * j + k] | (c[32 * j + k + 16] << 4));
        }
        b[2] = (uint8_t)(scales_h & 0xFF);
        b[3] = (uint8_t)(scales_h >> 8);
        break;
    }
    case SQZ_TYPE_Q6_K: { /* ql[128]; qh[64]; i8 scales[16]; f16 d */
        memset(b, 0, 210);
        for (int e = 0; e < 256; e++) {
            const int u = c[e] + 32, h = e / 128, g = (e % 128) / 32, l = e % 32;
            /* groups 0,1 use the low nibbles of ql[64h + 32*(g&1) + l], groups 2,3 the high */
            b[64 * h + 32 * (g & 1) + l] |= (uint8_t)((u & 0x0F) << (4 * (g >> 1)));
            b[128 + 32 * h + l] |= (uint8_t)((u >> 4) << (2 * g));
        }
        for (int j = 0; j < 16; j++) b[192 + j] = (uint8_t)(int8_t)p->sc[j];
        put_f16(b + 208, p->d);
        break;
    }
    default:
        break;
    }
}

int sqz_quantize_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err) {
    const qfmt *f = fmt_of(type);
    if (!f) return sqz_fail(err, "quantize: type %s (id %d) is not supported", type_name(type), type);
    if (n < 0 || n % f->block != 0)
        return sqz_fail(err, "quantize %s: row length %lld is not a multiple of the block size %d", type_name(type),
                        (long long)n, f->block);
    const sqz_type_traits *tt = sqz_type_get(type);
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / f->block; b++) {
        const float *xb = x + b * f->block;
        const float *wb = weights ? weights + b * f->block : NULL;
        sqz_qparams p;
        int8_t L[SQZ_QBLOCK_MAX]; /* the levels sqz_quant_round_with_params gives: the search's own */
        if (block_params(type, xb, wb, &p, L, err) != SQZ_OK)
            return sqz_fail_prefix(err, "row columns [%lld, %lld)", (long long)(b * f->block),
                                   (long long)((b + 1) * f->block));
        sqz_quant_pack_block(&p, L, out + (size_t)b * tt->block_bytes);
    }
    return SQZ_OK;
}

int sqz_convert_row(int type, const float *x, void *dst, int64_t n, const float *weights, sqz_err *err) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt) return sqz_fail(err, "convert: unknown type id %d", type);
    if (!sqz_type_writable(type)) return sqz_fail(err, "convert: sqz cannot write type %s (id %d)", tt->name, type);
    if (n < 0 || n % tt->block_size != 0)
        return sqz_fail(err, "convert %s: row length %lld is not a multiple of the block size %lld", tt->name,
                        (long long)n, (long long)tt->block_size);
    /* the table (src/format) holds the float types' writers; the block types are ours */
    if (tt->quantize) return sqz_quantize_row(type, x, dst, n, weights, err);
    if (tt->codebook) return sqz_iquant_row(type, x, dst, n, weights, err);
    return tt->from_float(type, x, dst, n, weights, err);
}

/* ---------------------------------------------------------------- block rescaling */

int sqz_scale_blocks(int type, void *blocks, int64_t nb, double factor) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt || !tt->n_scales) return 0;
    uint8_t *b = blocks;
    for (int64_t k = 0; k < nb; k++)
        for (int s = 0; s < tt->n_scales; s++) {
            uint8_t *p = b + k * (int64_t)tt->block_bytes + tt->scale_at[s];
            float v = sqz_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
            uint16_t h = sqz_f32_to_f16((float)(v * factor));
            p[0] = (uint8_t)(h & 0xff);
            p[1] = (uint8_t)(h >> 8);
        }
    return 1;
}

int sqz_rescale_row(int type, const float *x, void *row, int64_t n, double power, sqz_err *err) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt || !tt->dequantize) return sqz_fail(err, "rescale: unknown or unreadable type id %d", type);
    if (n < 0 || n % tt->block_size != 0)
        return sqz_fail(err, "rescale %s: row length %lld is not a multiple of the block size %lld", tt->name,
                        (long long)n, (long long)tt->block_size);
    if (!tt->n_scales || power == 0.0) return SQZ_OK; /* nothing the format lets us scale */
    if (tt->block_size > SQZ_RESCALE_GROUP)
        return sqz_fail(err, "rescale %s: blocks of %lld values", tt->name, (long long)tt->block_size);
    float q[SQZ_RESCALE_GROUP];
    uint8_t *b = row;
    for (int64_t g0 = 0; g0 < n; g0 += SQZ_RESCALE_GROUP) {
        const int64_t len = n - g0 < SQZ_RESCALE_GROUP ? n - g0 : SQZ_RESCALE_GROUP;
        const int64_t nb = len / tt->block_size;
        tt->dequantize(b, q, len);
        double sxx = 0.0, sxq = 0.0;
        for (int64_t i = 0; i < len; i++) {
            sxx += (double)x[g0 + i] * x[g0 + i];
            sxq += (double)x[g0 + i] * q[i];
        }
        if (sxq > 0.0 && sxx > 0.0) { /* else an empty group, or codes against its signs: left alone */
            double f = pow(sxx / sxq, power);
            f = f < SQZ_RESCALE_MIN ? SQZ_RESCALE_MIN : f > SQZ_RESCALE_MAX ? SQZ_RESCALE_MAX : f;
            sqz_scale_blocks(type, b, nb, f);
        }
        b += nb * (int64_t)tt->block_bytes;
    }
    return SQZ_OK;
}

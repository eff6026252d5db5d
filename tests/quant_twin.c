/* quant_twin OUT: quantizes a fixed battery of rows with every type sqz quantizes (round
 * to nearest with and without importances, and GPTQ with a random H) and writes the bytes
 * to OUT. Built twice: against the library as shipped (SIMD paths) and against one built
 * with SQZ_NO_SIMD (plain loops only); t_quant_simd requires the two files to be equal,
 * since the SIMD paths promise the plain loops' bits. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/gptq.h"
#include "sqz/quant.h"

enum { COLS = 512, ROWS = 24 };

static uint64_t next(uint64_t *s) { /* xorshift64*: the same numbers on every machine */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static double uniform(uint64_t *s) { return (double)(next(s) >> 11) / 9007199254740992.0; }

static double gauss(uint64_t *s) {
    double u = uniform(s) + 1e-300, v = uniform(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Row r of the battery: each a different trap for a scale search. */
static void make_row(int r, uint64_t *s, float *x) {
    for (int i = 0; i < COLS; i++) {
        double g = gauss(s);
        switch (r % 8) {
        case 0: x[i] = (float)(0.02 * g); break;                         /* plain weights */
        case 1: x[i] = (float)(uniform(s) * 2.0 - 1.0); break;           /* uniform */
        case 2: x[i] = (float)(0.01 * g / (fabs(gauss(s)) + 0.05)); break; /* heavy tails */
        case 3: x[i] = (i % 7) ? 0.0f : (float)g; break;                 /* mostly zeros */
        case 4: x[i] = (float)(-fabs(g) - 0.5); break;                   /* all negative, offset */
        case 5: x[i] = (float)(3e4 * g); break;                          /* near the f16 range's end */
        case 6: x[i] = (float)(1e-6 * g); break;                         /* tiny */
        default: x[i] = (i / 32) % 2 ? 0.25f : (float)(0.1 * g); break;  /* constant blocks */
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: quant_twin OUT\n");
        return 2;
    }
    FILE *out = fopen(argv[1], "wb");
    if (!out) {
        fprintf(stderr, "quant_twin: cannot write %s\n", argv[1]);
        return 1;
    }
    float *W = malloc(sizeof(float) * ROWS * COLS), *imp = malloc(sizeof(float) * COLS);
    double *H = malloc(sizeof(double) * COLS * COLS);
    uint8_t *dst = malloc((size_t)ROWS * COLS * 4);
    if (!W || !imp || !H || !dst) return 1;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int r = 0; r < ROWS; r++) make_row(r, &s, W + r * COLS);
    for (int i = 0; i < COLS; i++) imp[i] = (i % 11 == 0) ? 0.0f : (float)(uniform(&s) * uniform(&s) * 10.0);
    /* H = Σ x xᵀ over 2·COLS random inputs with a few strong channels */
    memset(H, 0, sizeof(double) * COLS * COLS);
    double *xin = malloc(sizeof(double) * COLS);
    if (!xin) return 1;
    for (int t = 0; t < 2 * COLS; t++) {
        for (int i = 0; i < COLS; i++) xin[i] = gauss(&s) * (i % 61 == 0 ? 8.0 : 1.0);
        for (int i = 0; i < COLS; i++)
            for (int j = 0; j < COLS; j++) H[i * COLS + j] += xin[i] * xin[j];
    }
    int n_types = 0;
    for (int type = 0; type < SQZ_TYPE_COUNT; type++) {
        if (!sqz_quant_supported(type)) continue;
        const sqz_type_traits *tt = sqz_type_get(type);
        size_t row_bytes = (size_t)(COLS / tt->block_size) * tt->block_bytes;
        sqz_err err;
        for (int weighted = 0; weighted < 2; weighted++)
            for (int r = 0; r < ROWS; r++) {
                if (sqz_quantize_row(type, W + r * COLS, dst, COLS, weighted ? imp : NULL, &err)) {
                    fprintf(stderr, "quant_twin: %s row %d: %s\n", tt->name, r, err.msg);
                    return 1;
                }
                fwrite(dst, 1, row_bytes, out);
            }
        for (int single = 0; single < 2; single++) { /* the quantizer's double and the estimate's float */
            sqz_gptq_opts go = {0.01, 0, 1, 0.5, single, NULL};
            if (sqz_gptq_quantize(type, W, ROWS, COLS, H, &go, NULL, dst, NULL, NULL, NULL, NULL, &err)) {
                fprintf(stderr, "quant_twin: GPTQ %s%s: %s\n", tt->name, single ? " (single)" : "", err.msg);
                return 1;
            }
            fwrite(dst, 1, row_bytes * ROWS, out);
        }
        n_types++;
    }
    free(W); free(imp); free(H); free(dst); free(xin);
    if (fclose(out)) return 1;
    printf("quant_twin: %d types, %d rows each (RTN, weighted RTN, GPTQ in double and in single precision)\n", n_types, ROWS);
    return n_types > 0 ? 0 : 1;
}

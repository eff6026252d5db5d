/* The grids of ggml's i-quants (iq_grids.c, generated from gguf-py's tables by
 * tests/py/iq_grids.py and checked against them): what the dequantizers in types.c and
 * the i-quant writers in src/quant/ share. Internal to libsqz. */
#ifndef SQZ_IQ_GRIDS_H
#define SQZ_IQ_GRIDS_H

#include <stdint.h>

/* sqz_iq_signs[i]: bits 0..6 = i, bit 7 set when i has an odd number of bits (an even
 * count of minus signs over 8 values) */
extern const uint8_t sqz_iq_signs[128];
/* grid points, value j in byte j: IQ2_XXS/IQ2_XS/IQ2_S 8 values of {8, 25, 43}; IQ3_XXS
 * 4 values of {4, 12, ..., 62}; IQ3_S 4 values of {1, 3, ..., 15}; IQ1_S/IQ1_M 8 int8
 * values of {-1, 0, 1} */
extern const uint64_t sqz_iq2xxs_grid[256];
extern const uint64_t sqz_iq2xs_grid[512];
extern const uint64_t sqz_iq2s_grid[1024];
extern const uint32_t sqz_iq3xxs_grid[256];
extern const uint32_t sqz_iq3s_grid[512];
extern const uint64_t sqz_iq1s_grid[2048];
/* IQ3_S's quantizer: the cell of level indices k0 + 8·k1 + 64·k2 + 512·k3 (coordinate j
 * of value 2·k_j + 1) has the grid points sqz_iq3s_near[sqz_iq3s_cell[c] ..
 * sqz_iq3s_cell[c + 1]), the nearest (in index distance) first: itself when it is one,
 * else those within the nearest's squared distance + 1. */
extern const uint16_t sqz_iq3s_cell[4097];
extern const uint16_t sqz_iq3s_near[];
/* IQ3_XXS's, the same with level k of grid value v = (v - 4) / 8 (62 → 7) */
extern const uint16_t sqz_iq3xxs_cell[4097];
extern const uint16_t sqz_iq3xxs_near[];
/* IQ2_XXS's: 3⁸ cells of 8 values, level k = round((v - 8) / 17.5) of {8, 25, 43}, cell
 * Σ k_j·3^j */
extern const uint16_t sqz_iq2xxs_cell[6562];
extern const uint16_t sqz_iq2xxs_near[];
/* IQ2_XS's and IQ2_S's, the same over their grids */
extern const uint16_t sqz_iq2xs_cell[6562];
extern const uint16_t sqz_iq2xs_near[];
extern const uint16_t sqz_iq2s_cell[6562];
extern const uint16_t sqz_iq2s_near[];
/* IQ1_S's and IQ1_M's (one grid): level k = v + 1 of {-1, 0, 1}, cell Σ k_j·3^j; only the
 * points at the nearest's distance (no + 1) */
extern const uint16_t sqz_iq1s_cell[6562];
extern const uint16_t sqz_iq1s_near[];

#endif

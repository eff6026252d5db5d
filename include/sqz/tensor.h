/* Tensor metadata and the ggml type-traits table (src/format: format facts only, below io
 * and quant; the quantizers live in src/quant).
 *
 * Type ids are ggml's own (the values stored in GGUF files), so a tensor's type can be
 * written to and read from GGUF without translation. Shapes use ggml order: ne[0] is the
 * row length (the input dimension of a linear layer, contiguous in memory), ne[1] the
 * number of rows. A Hugging Face weight of shape [out, in] has ne[0] = in, ne[1] = out. */
#ifndef SQZ_TENSOR_H
#define SQZ_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sqz_type {
    SQZ_TYPE_F32 = 0,
    SQZ_TYPE_F16 = 1,
    SQZ_TYPE_Q4_0 = 2,
    SQZ_TYPE_Q4_1 = 3,
    SQZ_TYPE_Q5_0 = 6,
    SQZ_TYPE_Q5_1 = 7,
    SQZ_TYPE_Q8_0 = 8,
    SQZ_TYPE_Q8_1 = 9,
    SQZ_TYPE_Q2_K = 10,
    SQZ_TYPE_Q3_K = 11,
    SQZ_TYPE_Q4_K = 12,
    SQZ_TYPE_Q5_K = 13,
    SQZ_TYPE_Q6_K = 14,
    SQZ_TYPE_Q8_K = 15,
    SQZ_TYPE_IQ2_XXS = 16,
    SQZ_TYPE_IQ2_XS = 17,
    SQZ_TYPE_IQ3_XXS = 18,
    SQZ_TYPE_IQ1_S = 19,
    SQZ_TYPE_IQ4_NL = 20,
    SQZ_TYPE_IQ3_S = 21,
    SQZ_TYPE_IQ2_S = 22,
    SQZ_TYPE_IQ4_XS = 23,
    SQZ_TYPE_IQ1_M = 29,
    SQZ_TYPE_BF16 = 30,
    SQZ_TYPE_TQ1_0 = 34,
    SQZ_TYPE_TQ2_0 = 35,
    SQZ_TYPE_COUNT = 40 /* upper bound of ids the table knows about */
} sqz_type;

/* Dequantizes n values (n a multiple of block_size) from src into dst. */
typedef void (*sqz_dequant_fn)(const void *src, float *dst, int64_t n);

/* Writes n values of x (n a multiple of block_size) into dst (the row's bytes, see
 * sqz_type_row_bytes) in the layout of `type`. weights: n per-column importances or NULL
 * (the float types ignore them). Returns SQZ_OK or SQZ_ERR with err set. */
typedef int (*sqz_from_float_fn)(int type, const float *x, void *dst, int64_t n, const float *weights,
                                 sqz_err *err);

typedef struct sqz_type_traits {
    const char *name;       /* ggml's name: "F32", "Q4_K", ... */
    int64_t block_size;     /* values per block */
    size_t block_bytes;     /* bytes per block */
    sqz_dequant_fn dequantize; /* NULL when sqz cannot read this type yet */
    sqz_from_float_fn from_float; /* the float types' writer (F32/F16/BF16 convert); NULL for the
                                     others: the quantized ones are written by quant (sqz_quantize_row,
                                     sqz_convert_row), which sits above this table */
    int quantize;           /* 1: a block type sqz quantizes into by the weighted scale search
                               (sqz_quant_supported, sqz_quant_block_params, GPTQ); else 0 */
    int codebook;           /* a codebook i-quant sqz writes by its grid search (sqz_convert_row,
                               sqz_iquant_*; GPTQ a group of columns at a time): the values per
                               grid point (4: IQ3_S, IQ3_XXS; 8: IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M; 1: TQ2_0,
                               TQ1_0, whose ternary levels take one value each); else 0 */
    /* The block's f16 fields every value is linear in (d; and dmin or m where the block
     * subtracts a scaled minimum): n_scales of them at byte offsets scale_at[]. Scaling
     * them all by f scales every value of the block by f (sqz_rescale_row). 0 for the
     * float types and for IQ1_M, whose d is spread over its sub-block scales' top bits. */
    int n_scales;
    int scale_at[2];
} sqz_type_traits;

/* The traits of a type id, or NULL for an id sqz does not know. */
const sqz_type_traits *sqz_type_get(int type);
/* The type id for a name such as "Q4_K" (case-insensitive), or -1. */
int sqz_type_from_name(const char *name);
/* 1 when sqz can write the type (from_float, quantize or codebook set; sqz_convert_row), else 0. */
int sqz_type_writable(int type);
/* Bits per weight of a type (block_bytes * 8 / block_size). */
double sqz_type_bpw(int type);
/* Bytes of one row of n values; fails when n is not a multiple of the block size or the
 * product overflows. */
int sqz_type_row_bytes(int type, int64_t n, size_t *out, sqz_err *err);

#define SQZ_MAX_DIMS 4

typedef struct sqz_tensor {
    char *name;             /* owned by the file object that holds the tensor */
    int type;               /* sqz_type */
    int n_dims;
    int64_t ne[SQZ_MAX_DIMS]; /* ggml order; unused dims are 1 */
    const void *data;       /* points into a mapped file (not owned) */
    size_t nbytes;
} sqz_tensor;

/* Number of elements (product of ne); 0 when n_dims is 0 and no dims are set. */
int64_t sqz_tensor_nelements(const sqz_tensor *t);

/* Dequantizes rows [row0, row0 + n_rows) of a 2-D (or 1-D, one row) tensor into dst
 * (n_rows * ne[0] floats). Fails for types without a dequantizer. */
int sqz_tensor_rows_f32(const sqz_tensor *t, int64_t row0, int64_t n_rows, float *dst, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

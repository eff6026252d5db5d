/* File formats: safetensors (single and sharded Hugging Face folders), GGUF v3, and the
 * Hugging Face config.json of a Llama model.
 *
 * Every parser validates what it reads against the file's size before using it (magic,
 * header lengths, counts, offsets, overlaps, dtypes) and reports the file and the field
 * that is wrong. Tensor data stays in the mapped file; nothing is copied. */
#ifndef SQZ_IO_H
#define SQZ_IO_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"
#include "sqz/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------- safetensors ---------------- */
typedef struct sqz_st_file {
    sqz_map map;
    int64_t n_tensors;
    sqz_tensor *tensors; /* names owned here; data points into map */
} sqz_st_file;

/* Parses a safetensors image held in memory (data, size). `path` is used in messages
 * only. On success tensors point into data, which must outlive the file object. */
int sqz_st_parse(sqz_st_file *f, const uint8_t *data, size_t size, const char *path, sqz_err *err);
/* Maps and parses a file. */
int sqz_st_open(sqz_st_file *f, const char *path, sqz_err *err);
void sqz_st_close(sqz_st_file *f);
const sqz_tensor *sqz_st_find(const sqz_st_file *f, const char *name);

/* ---------------- GGUF ---------------- */
typedef enum sqz_gguf_type {
    SQZ_GGUF_UINT8 = 0, SQZ_GGUF_INT8 = 1, SQZ_GGUF_UINT16 = 2, SQZ_GGUF_INT16 = 3,
    SQZ_GGUF_UINT32 = 4, SQZ_GGUF_INT32 = 5, SQZ_GGUF_FLOAT32 = 6, SQZ_GGUF_BOOL = 7,
    SQZ_GGUF_STRING = 8, SQZ_GGUF_ARRAY = 9, SQZ_GGUF_UINT64 = 10, SQZ_GGUF_INT64 = 11,
    SQZ_GGUF_FLOAT64 = 12
} sqz_gguf_type;

typedef struct sqz_gguf_kv {
    char *key;
    int type;          /* sqz_gguf_type */
    /* scalars, converted: integers and bools in i64 (u64 for UINT64 too), floats in f64 */
    int64_t i64;
    uint64_t u64;
    double f64;
    char *str;         /* STRING: NUL-terminated copy (may contain no NULs inside) */
    size_t str_len;
    /* ARRAY */
    int arr_type;      /* element type */
    uint64_t arr_n;
    void *arr;         /* numeric elements in their native size (e.g. float for FLOAT32) */
    char **arr_str;    /* string elements, NUL-terminated copies */
} sqz_gguf_kv;

typedef struct sqz_gguf {
    sqz_map map;
    uint32_t version;
    int64_t n_kv;
    sqz_gguf_kv *kv;
    int64_t n_tensors;
    sqz_tensor *tensors;
    size_t alignment;
    size_t data_offset;
    const char *path; /* = map.path, or the path given to sqz_gguf_parse */
    char *path_owned;
} sqz_gguf;

int sqz_gguf_parse(sqz_gguf *g, const uint8_t *data, size_t size, const char *path, sqz_err *err);
int sqz_gguf_open(sqz_gguf *g, const char *path, sqz_err *err);
void sqz_gguf_close(sqz_gguf *g);
const sqz_gguf_kv *sqz_gguf_find(const sqz_gguf *g, const char *key);
const sqz_tensor *sqz_gguf_find_tensor(const sqz_gguf *g, const char *name);
/* Typed getters: fail with "<file>: metadata <key>: missing" or "...: expected <type>". */
int sqz_gguf_get_i64(const sqz_gguf *g, const char *key, int64_t *out, sqz_err *err);
int sqz_gguf_get_f64(const sqz_gguf *g, const char *key, double *out, sqz_err *err);
int sqz_gguf_get_str(const sqz_gguf *g, const char *key, const char **out, sqz_err *err);
const char *sqz_gguf_type_name(int type);

/* ---------------- Hugging Face model folder ---------------- */
/* A folder with config.json and model.safetensors, or model.safetensors.index.json plus
 * shards. Tensors are looked up by their Hugging Face names. */
typedef struct sqz_hf {
    char *dir;
    char *config_json;   /* contents of config.json, NUL-terminated */
    size_t config_len;
    int n_shards;
    sqz_st_file *shards;
} sqz_hf;

int sqz_hf_open(sqz_hf *h, const char *dir, sqz_err *err);
void sqz_hf_close(sqz_hf *h);
const sqz_tensor *sqz_hf_find(const sqz_hf *h, const char *name);

#ifdef __cplusplus
}
#endif
#endif

/* GGUF v3 writer.
 *
 * Metadata (key/values of every GGUF type, strings and numeric or string arrays) and
 * tensor infos are collected in memory first; then the file is written in one pass:
 * header, key/values, tensor infos, padding, and the tensor data, which the caller
 * supplies tensor by tensor, in the order the tensors were added, in as many pieces as
 * it likes (a row at a time is fine: the whole model never has to be in memory).
 *
 * Layout written: "GGUF", u32 3, u64 n_tensors, u64 n_kv; each key/value as
 * (string key, u32 type, value); each tensor info as (string name, u32 n_dims,
 * i64 ne[n_dims], u32 type, u64 offset); zero padding to the alignment; the data section,
 * each tensor at its offset (relative to the data section) padded with zeros to the
 * alignment. Strings are u64 length + bytes. The alignment is 32 unless a
 * "general.alignment" (UINT32, a power of two) key is set.
 *
 * The output goes through sqz_out (temporary file + rename): a failed or abandoned write
 * leaves nothing at the path. Typical use:
 *     sqz_gguf_writer w; sqz_gguf_writer_init(&w);
 *     sqz_gguf_set_str(&w, "general.architecture", "llama", err); ...
 *     sqz_gguf_add_tensor(&w, "token_embd.weight", SQZ_TYPE_Q8_0, 2, ne, err); ...
 *     sqz_gguf_write_begin(&w, path, err);
 *     for each tensor, for each row: sqz_gguf_write_data(&w, bytes, n, err);
 *     sqz_gguf_write_end(&w, err);   (commits the file)
 *     sqz_gguf_writer_free(&w);      (always; aborts an unfinished file)
 * Every function returns SQZ_OK or SQZ_ERR with a message naming the key, the tensor or
 * the file. */
#ifndef SQZ_GGUF_WRITE_H
#define SQZ_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"
#include "sqz/io.h"
#include "sqz/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQZ_GGUF_MAX_NAME 63 /* llama.cpp rejects tensor names of 64 bytes or more */

typedef struct sqz_gguf_wtensor {
    char *name;                /* owned */
    int type;                  /* sqz_type */
    int n_dims;
    int64_t ne[SQZ_MAX_DIMS];
    size_t nbytes;             /* from the type and the shape */
    uint64_t offset;           /* in the data section, aligned */
} sqz_gguf_wtensor;

typedef struct sqz_gguf_writer {
    /* key/values, already serialized in GGUF form */
    uint8_t *kv_buf;
    size_t kv_len, kv_cap;
    int64_t n_kv;
    char **keys;               /* owned copies, to refuse duplicates */
    size_t alignment;
    /* tensors, in write order */
    int64_t n_tensors, cap_tensors;
    sqz_gguf_wtensor *tensors;
    uint64_t data_size;        /* the data section's size so far (aligned) */
    /* streaming state */
    sqz_out out;
    int writing;               /* 1 between write_begin and write_end */
    int failed;                /* a write failed: only free is allowed */
    int64_t cur;               /* the tensor being written */
    size_t cur_written;        /* bytes of it written so far */
} sqz_gguf_writer;

void sqz_gguf_writer_init(sqz_gguf_writer *w);
/* Frees everything; an output that was begun but not ended is removed. */
void sqz_gguf_writer_free(sqz_gguf_writer *w);

/* Scalar key/values. Keys must be unique and non-empty. Setting "general.alignment"
 * (through sqz_gguf_set_u32, a power of two) changes the alignment of the data. All
 * keys must be set before sqz_gguf_write_begin. */
int sqz_gguf_set_u8(sqz_gguf_writer *w, const char *key, uint8_t v, sqz_err *err);
int sqz_gguf_set_i8(sqz_gguf_writer *w, const char *key, int8_t v, sqz_err *err);
int sqz_gguf_set_u16(sqz_gguf_writer *w, const char *key, uint16_t v, sqz_err *err);
int sqz_gguf_set_i16(sqz_gguf_writer *w, const char *key, int16_t v, sqz_err *err);
int sqz_gguf_set_u32(sqz_gguf_writer *w, const char *key, uint32_t v, sqz_err *err);
int sqz_gguf_set_i32(sqz_gguf_writer *w, const char *key, int32_t v, sqz_err *err);
int sqz_gguf_set_u64(sqz_gguf_writer *w, const char *key, uint64_t v, sqz_err *err);
int sqz_gguf_set_i64(sqz_gguf_writer *w, const char *key, int64_t v, sqz_err *err);
int sqz_gguf_set_f32(sqz_gguf_writer *w, const char *key, float v, sqz_err *err);
int sqz_gguf_set_f64(sqz_gguf_writer *w, const char *key, double v, sqz_err *err);
int sqz_gguf_set_bool(sqz_gguf_writer *w, const char *key, int v, sqz_err *err);
/* A NUL-terminated string (copied). */
int sqz_gguf_set_str(sqz_gguf_writer *w, const char *key, const char *v, sqz_err *err);
/* A numeric or bool array: elem_type is a scalar sqz_gguf_type (not STRING or ARRAY);
 * data holds n elements in their native size (bool: one byte each, 0 or 1), copied. */
int sqz_gguf_set_arr(sqz_gguf_writer *w, const char *key, int elem_type, const void *data, uint64_t n,
                     sqz_err *err);
/* An array of n NUL-terminated strings (copied). */
int sqz_gguf_set_arr_str(sqz_gguf_writer *w, const char *key, const char *const *v, uint64_t n, sqz_err *err);

/* Declares the next tensor: a unique name (at most SQZ_GGUF_MAX_NAME bytes), a type the
 * table knows, 1..4 dims in ggml order (ne[0] a multiple of the type's block size). */
int sqz_gguf_add_tensor(sqz_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                        sqz_err *err);

/* Opens path (through a temporary file) and writes everything up to the data section. */
int sqz_gguf_write_begin(sqz_gguf_writer *w, const char *path, sqz_err *err);

/* A place in a partial file where writing can go on: a tensor's start. */
typedef struct sqz_gguf_resume_point {
    uint64_t offset; /* bytes of the file written */
    int64_t cur;     /* the next tensor */
} sqz_gguf_resume_point;
/* sqz_gguf_write_begin into tmp_path, a stable name that an interrupted run leaves in
 * place (sqz_out_open_resume). rp NULL: from the start; else the partial file is reopened
 * at rp, after checking that it begins with this writer's header (same tensors, types and
 * offsets: a one-line error otherwise). */
int sqz_gguf_write_begin_resumable(sqz_gguf_writer *w, const char *path, const char *tmp_path,
                                   const sqz_gguf_resume_point *rp, sqz_err *err);
/* Flushes and fsyncs the data so far and fills rp; only between tensors. */
int sqz_gguf_write_checkpoint(sqz_gguf_writer *w, sqz_gguf_resume_point *rp, sqz_err *err);
/* Appends n bytes of tensor data: they belong to the current tensor and may complete it
 * and continue into the next ones (padding between tensors is inserted here). Fails when
 * more bytes are given than the tensors declared. */
int sqz_gguf_write_data(sqz_gguf_writer *w, const void *data, size_t n, sqz_err *err);
/* As write_data, but leaves the n bytes unwritten: a hole of the file (no disk blocks)
 * that the caller fills later through its own descriptor (a pruned model streamed into
 * the quantizer, src/pipeline/prune_write.c). The file must end with written data. */
int sqz_gguf_write_skip(sqz_gguf_writer *w, size_t n, sqz_err *err);
/* Checks that every tensor received all its bytes and commits the file. */
int sqz_gguf_write_end(sqz_gguf_writer *w, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

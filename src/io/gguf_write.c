/* GGUF v3 writer: metadata and tensor infos built in memory, tensor data streamed.
 * The byte layout is described in include/sqz/gguf_write.h (and matches gguf-py's
 * GGUFWriter and ggml's gguf.cpp). All integers are little-endian. */
#include "sqz/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32

void sqz_gguf_writer_init(sqz_gguf_writer *w) {
    memset(w, 0, sizeof(*w));
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
}

void sqz_gguf_writer_free(sqz_gguf_writer *w) {
    if (!w) return;
    sqz_out_abort(&w->out);
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv_buf);
    for (int64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    memset(w, 0, sizeof(*w));
}

/* ---------------- serialized key/values ---------------- */

static int kv_reserve(sqz_gguf_writer *w, size_t extra, sqz_err *err) {
    size_t need;
    if (sqz_add_size(w->kv_len, extra, &need) != 0) return sqz_fail(err, "gguf writer: metadata size overflows");
    if (need <= w->kv_cap) return SQZ_OK;
    size_t cap = w->kv_cap ? w->kv_cap : 4096;
    while (cap < need) {
        if (sqz_mul_size(cap, 2, &cap) != 0) return sqz_fail(err, "gguf writer: metadata size overflows");
    }
    uint8_t *b = realloc(w->kv_buf, cap);
    if (!b) return sqz_fail(err, "gguf writer: out of memory for %zu bytes of metadata", cap);
    w->kv_buf = b;
    w->kv_cap = cap;
    return SQZ_OK;
}

static int put_bytes(sqz_gguf_writer *w, const void *p, size_t n, sqz_err *err) {
    if (kv_reserve(w, n, err) != SQZ_OK) return SQZ_ERR;
    if (n) memcpy(w->kv_buf + w->kv_len, p, n);
    w->kv_len += n;
    return SQZ_OK;
}

static void le_bytes(uint8_t *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static int put_uint(sqz_gguf_writer *w, uint64_t v, int n, sqz_err *err) {
    uint8_t b[8];
    le_bytes(b, v, n);
    return put_bytes(w, b, (size_t)n, err);
}

static int put_str(sqz_gguf_writer *w, const char *s, sqz_err *err) {
    const size_t n = strlen(s);
    if (put_uint(w, n, 8, err) != SQZ_OK) return SQZ_ERR;
    return put_bytes(w, s, n, err);
}

/* Bytes of one scalar of a GGUF type, or 0 for STRING/ARRAY/unknown. */
static size_t scalar_size(int type) {
    switch (type) {
    case SQZ_GGUF_UINT8: case SQZ_GGUF_INT8: case SQZ_GGUF_BOOL: return 1;
    case SQZ_GGUF_UINT16: case SQZ_GGUF_INT16: return 2;
    case SQZ_GGUF_UINT32: case SQZ_GGUF_INT32: case SQZ_GGUF_FLOAT32: return 4;
    case SQZ_GGUF_UINT64: case SQZ_GGUF_INT64: case SQZ_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Checks the key and writes "key, u32 type"; on any later failure the caller restores
 * kv_len to drop the partial entry. */
static int begin_kv(sqz_gguf_writer *w, const char *key, int type, size_t *mark, sqz_err *err) {
    if (w->writing || w->failed) return sqz_fail(err, "gguf writer: key '%s' set after writing began", key ? key : "");
    if (!key || !*key) return sqz_fail(err, "gguf writer: empty metadata key");
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return sqz_fail(err, "gguf writer: metadata key '%s' set twice", key);
    *mark = w->kv_len;
    if (put_str(w, key, err) != SQZ_OK || put_uint(w, (uint64_t)type, 4, err) != SQZ_OK) {
        w->kv_len = *mark;
        return sqz_fail_prefix(err, "key '%s'", key);
    }
    return SQZ_OK;
}

static int end_kv(sqz_gguf_writer *w, const char *key, size_t mark, sqz_err *err) {
    char **keys = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof(char *));
    char *k = strdup(key);
    if (keys) w->keys = keys;
    if (!keys || !k) {
        free(k);
        w->kv_len = mark;
        return sqz_fail(err, "gguf writer: key '%s': out of memory", key);
    }
    w->keys[w->n_kv++] = k;
    return SQZ_OK;
}

static int set_scalar(sqz_gguf_writer *w, const char *key, int type, uint64_t bits, sqz_err *err) {
    size_t mark;
    if (begin_kv(w, key, type, &mark, err) != SQZ_OK) return SQZ_ERR;
    if (put_uint(w, bits, (int)scalar_size(type), err) != SQZ_OK) {
        w->kv_len = mark;
        return SQZ_ERR;
    }
    return end_kv(w, key, mark, err);
}

int sqz_gguf_set_u8(sqz_gguf_writer *w, const char *key, uint8_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_UINT8, v, err);
}
int sqz_gguf_set_i8(sqz_gguf_writer *w, const char *key, int8_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_INT8, (uint8_t)v, err);
}
int sqz_gguf_set_u16(sqz_gguf_writer *w, const char *key, uint16_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_UINT16, v, err);
}
int sqz_gguf_set_i16(sqz_gguf_writer *w, const char *key, int16_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_INT16, (uint16_t)v, err);
}
int sqz_gguf_set_u32(sqz_gguf_writer *w, const char *key, uint32_t v, sqz_err *err) {
    if (key && strcmp(key, "general.alignment") == 0) {
        if (v == 0 || (v & (v - 1)) != 0)
            return sqz_fail(err, "gguf writer: general.alignment %u is not a power of two", (unsigned)v);
        if (w->n_tensors > 0)
            return sqz_fail(err, "gguf writer: general.alignment must be set before the first tensor is added");
    }
    if (set_scalar(w, key, SQZ_GGUF_UINT32, v, err) != SQZ_OK) return SQZ_ERR;
    if (strcmp(key, "general.alignment") == 0) w->alignment = v;
    return SQZ_OK;
}
int sqz_gguf_set_i32(sqz_gguf_writer *w, const char *key, int32_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_INT32, (uint32_t)v, err);
}
int sqz_gguf_set_u64(sqz_gguf_writer *w, const char *key, uint64_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_UINT64, v, err);
}
int sqz_gguf_set_i64(sqz_gguf_writer *w, const char *key, int64_t v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_INT64, (uint64_t)v, err);
}
int sqz_gguf_set_f32(sqz_gguf_writer *w, const char *key, float v, sqz_err *err) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return set_scalar(w, key, SQZ_GGUF_FLOAT32, u, err);
}
int sqz_gguf_set_f64(sqz_gguf_writer *w, const char *key, double v, sqz_err *err) {
    uint64_t u;
    memcpy(&u, &v, 8);
    return set_scalar(w, key, SQZ_GGUF_FLOAT64, u, err);
}
int sqz_gguf_set_bool(sqz_gguf_writer *w, const char *key, int v, sqz_err *err) {
    return set_scalar(w, key, SQZ_GGUF_BOOL, v ? 1 : 0, err);
}

int sqz_gguf_set_str(sqz_gguf_writer *w, const char *key, const char *v, sqz_err *err) {
    size_t mark;
    if (!v) return sqz_fail(err, "gguf writer: key '%s': NULL string", key ? key : "");
    if (begin_kv(w, key, SQZ_GGUF_STRING, &mark, err) != SQZ_OK) return SQZ_ERR;
    if (put_str(w, v, err) != SQZ_OK) {
        w->kv_len = mark;
        return SQZ_ERR;
    }
    return end_kv(w, key, mark, err);
}

int sqz_gguf_set_arr(sqz_gguf_writer *w, const char *key, int elem_type, const void *data, uint64_t n,
                     sqz_err *err) {
    const size_t es = scalar_size(elem_type);
    size_t mark, bytes;
    if (es == 0)
        return sqz_fail(err, "gguf writer: key '%s': array element type %d is not a numeric or bool type",
                        key ? key : "", elem_type);
    if (n > SIZE_MAX || sqz_mul_size((size_t)n, es, &bytes) != 0)
        return sqz_fail(err, "gguf writer: key '%s': array of %llu elements overflows", key ? key : "",
                        (unsigned long long)n);
    if (n && !data) return sqz_fail(err, "gguf writer: key '%s': NULL array data", key ? key : "");
    if (begin_kv(w, key, SQZ_GGUF_ARRAY, &mark, err) != SQZ_OK) return SQZ_ERR;
    if (put_uint(w, (uint64_t)elem_type, 4, err) != SQZ_OK || put_uint(w, n, 8, err) != SQZ_OK ||
        kv_reserve(w, bytes, err) != SQZ_OK) {
        w->kv_len = mark;
        return SQZ_ERR;
    }
    /* element by element, so the file is little-endian whatever the host */
    const uint8_t *p = data;
    for (uint64_t i = 0; i < n; i++, p += es) {
        uint64_t v = 0;
        if (es == 1) v = p[0];
        else if (es == 2) { uint16_t t; memcpy(&t, p, 2); v = t; }
        else if (es == 4) { uint32_t t; memcpy(&t, p, 4); v = t; }
        else memcpy(&v, p, 8);
        if (elem_type == SQZ_GGUF_BOOL) v = v ? 1 : 0;
        le_bytes(w->kv_buf + w->kv_len, v, (int)es);
        w->kv_len += es;
    }
    return end_kv(w, key, mark, err);
}

int sqz_gguf_set_arr_str(sqz_gguf_writer *w, const char *key, const char *const *v, uint64_t n, sqz_err *err) {
    size_t mark;
    if (n && !v) return sqz_fail(err, "gguf writer: key '%s': NULL string array", key ? key : "");
    for (uint64_t i = 0; i < n; i++)
        if (!v[i]) return sqz_fail(err, "gguf writer: key '%s': string %llu is NULL", key ? key : "", (unsigned long long)i);
    if (begin_kv(w, key, SQZ_GGUF_ARRAY, &mark, err) != SQZ_OK) return SQZ_ERR;
    int ok = put_uint(w, SQZ_GGUF_STRING, 4, err) == SQZ_OK && put_uint(w, n, 8, err) == SQZ_OK;
    for (uint64_t i = 0; ok && i < n; i++) ok = put_str(w, v[i], err) == SQZ_OK;
    if (!ok) {
        w->kv_len = mark;
        return sqz_fail_prefix(err, "key '%s'", key);
    }
    return end_kv(w, key, mark, err);
}

/* ---------------- tensors ---------------- */

static uint64_t align_up(uint64_t v, size_t a) { return (v + a - 1) / a * a; }

int sqz_gguf_add_tensor(sqz_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                        sqz_err *err) {
    if (w->writing || w->failed) return sqz_fail(err, "gguf writer: tensor '%s' added after writing began", name ? name : "");
    if (!name || !*name) return sqz_fail(err, "gguf writer: empty tensor name");
    if (strlen(name) > SQZ_GGUF_MAX_NAME)
        return sqz_fail(err, "gguf writer: tensor name '%s' is %zu bytes, at most %d allowed", name, strlen(name),
                        SQZ_GGUF_MAX_NAME);
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt) return sqz_fail(err, "gguf writer: tensor '%s': unknown type id %d", name, type);
    if (n_dims < 1 || n_dims > SQZ_MAX_DIMS)
        return sqz_fail(err, "gguf writer: tensor '%s': %d dims, expected 1..%d", name, n_dims, SQZ_MAX_DIMS);
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return sqz_fail(err, "gguf writer: tensor '%s' added twice", name);
    size_t row_bytes, nbytes;
    for (int d = 0; d < n_dims; d++)
        if (ne[d] <= 0) return sqz_fail(err, "gguf writer: tensor '%s': ne[%d] = %lld, expected > 0", name, d, (long long)ne[d]);
    if (sqz_type_row_bytes(type, ne[0], &row_bytes, err) != SQZ_OK) return sqz_fail_prefix(err, "gguf writer: tensor '%s'", name);
    nbytes = row_bytes;
    for (int d = 1; d < n_dims; d++)
        if (sqz_mul_size(nbytes, (size_t)ne[d], &nbytes) != 0)
            return sqz_fail(err, "gguf writer: tensor '%s': size overflows", name);
    if (w->n_tensors == w->cap_tensors) {
        const int64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        sqz_gguf_wtensor *t = realloc(w->tensors, (size_t)cap * sizeof(*t));
        if (!t) return sqz_fail(err, "gguf writer: tensor '%s': out of memory", name);
        w->tensors = t;
        w->cap_tensors = cap;
    }
    sqz_gguf_wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (!t->name) return sqz_fail(err, "gguf writer: tensor '%s': out of memory", name);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < SQZ_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    t->offset = w->data_size;
    w->data_size = align_up(w->data_size + nbytes, w->alignment);
    w->n_tensors++;
    return SQZ_OK;
}

/* ---------------- writing ---------------- */

static int out_write(sqz_gguf_writer *w, const void *p, size_t n, sqz_err *err) {
    if (sqz_out_write(&w->out, p, n, err) != SQZ_OK) {
        w->failed = 1;
        sqz_out_abort(&w->out);
        return SQZ_ERR;
    }
    return SQZ_OK;
}

static int out_zeros(sqz_gguf_writer *w, size_t n, sqz_err *err) {
    static const uint8_t zeros[256];
    while (n > 0) {
        const size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
        if (out_write(w, zeros, k, err) != SQZ_OK) return SQZ_ERR;
        n -= k;
    }
    return SQZ_OK;
}

/* Skips tensors of 0 bytes and moves past completed ones (writing their padding). */
static int advance(sqz_gguf_writer *w, sqz_err *err) {
    while (w->cur < w->n_tensors && w->cur_written == w->tensors[w->cur].nbytes) {
        const sqz_gguf_wtensor *t = &w->tensors[w->cur];
        const uint64_t end = t->offset + t->nbytes;
        if (out_zeros(w, (size_t)(align_up(end, w->alignment) - end), err) != SQZ_OK) return SQZ_ERR;
        w->cur++;
        w->cur_written = 0;
    }
    return SQZ_OK;
}

/* The header, the key/values, the tensor infos and the padding before the data. */
static int header_bytes(const sqz_gguf_writer *w, uint8_t **out, size_t *len) {
    size_t cap = 24 + w->kv_len + (size_t)w->n_tensors * (8 + SQZ_GGUF_MAX_NAME + 4 + 8 * SQZ_MAX_DIMS + 4 + 8) +
                 w->alignment;
    uint8_t *h = malloc(cap);
    if (!h) return SQZ_ERR;
    memcpy(h, "GGUF", 4);
    le_bytes(h + 4, 3, 4);
    le_bytes(h + 8, (uint64_t)w->n_tensors, 8);
    le_bytes(h + 16, (uint64_t)w->n_kv, 8);
    size_t k = 24;
    if (w->kv_len) memcpy(h + k, w->kv_buf, w->kv_len); /* none: kv_buf may be NULL */
    k += w->kv_len;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        const sqz_gguf_wtensor *t = &w->tensors[i];
        const size_t nl = strlen(t->name);
        le_bytes(h + k, nl, 8), k += 8;
        memcpy(h + k, t->name, nl), k += nl;
        le_bytes(h + k, (uint64_t)t->n_dims, 4), k += 4;
        for (int d = 0; d < t->n_dims; d++) le_bytes(h + k, (uint64_t)t->ne[d], 8), k += 8;
        le_bytes(h + k, (uint64_t)t->type, 4), k += 4;
        le_bytes(h + k, t->offset, 8), k += 8;
    }
    size_t end = (size_t)align_up(k, w->alignment);
    memset(h + k, 0, end - k);
    *out = h;
    *len = end;
    return SQZ_OK;
}

static int begin(sqz_gguf_writer *w, const char *path, const char *tmp_path, const sqz_gguf_resume_point *rp,
                 sqz_err *err) {
    if (w->writing || w->failed) return sqz_fail(err, "%s: gguf writer already used", path);
    uint8_t *h = NULL;
    size_t hn = 0;
    if (header_bytes(w, &h, &hn)) return sqz_fail(err, "%s: out of memory for the header", path);
    int rc = tmp_path ? sqz_out_open_resume(&w->out, path, tmp_path, rp ? rp->offset : 0, err)
                      : sqz_out_open(&w->out, path, err);
    if (rc) {
        free(h);
        return SQZ_ERR;
    }
    w->writing = 1;
    w->cur = 0;
    w->cur_written = 0;
    if (!rp) {
        rc = out_write(w, h, hn, err);
        free(h);
        return rc ? SQZ_ERR : advance(w, err);
    }
    /* resuming: the partial file must start with this very header (the same tensors,
     * types and offsets), and the checkpoint must sit at a tensor's start */
    uint8_t *old = malloc(hn);
    int same = old && pread(fileno(w->out.f), old, hn, 0) == (ssize_t)hn && memcmp(old, h, hn) == 0;
    free(old);
    free(h);
    if (!same) {
        w->failed = 1;
        sqz_out_abort(&w->out);
        return sqz_fail(err, "%s: the partial file's header differs from this run's (other tensors or types)",
                        tmp_path);
    }
    if (rp->cur < 0 || rp->cur > w->n_tensors ||
        rp->offset != hn + (rp->cur < w->n_tensors ? w->tensors[rp->cur].offset : w->data_size)) {
        w->failed = 1;
        sqz_out_abort(&w->out);
        return sqz_fail(err, "%s: checkpoint at byte %llu is not the start of tensor %lld", tmp_path,
                        (unsigned long long)rp->offset, (long long)rp->cur);
    }
    w->cur = rp->cur;
    return advance(w, err);
}

int sqz_gguf_write_begin(sqz_gguf_writer *w, const char *path, sqz_err *err) {
    return begin(w, path, NULL, NULL, err);
}

int sqz_gguf_write_begin_resumable(sqz_gguf_writer *w, const char *path, const char *tmp_path,
                                   const sqz_gguf_resume_point *rp, sqz_err *err) {
    return begin(w, path, tmp_path, rp, err);
}

int sqz_gguf_write_checkpoint(sqz_gguf_writer *w, sqz_gguf_resume_point *rp, sqz_err *err) {
    if (!w->writing || w->failed) return sqz_fail(err, "gguf writer: checkpoint outside writing");
    if (w->cur_written != 0) return sqz_fail(err, "%s: checkpoint inside tensor %lld", w->out.path, (long long)w->cur);
    rp->cur = w->cur;
    return sqz_out_sync(&w->out, &rp->offset, err);
}

/* n bytes of tensor data across tensor boundaries (padding written between them): from
 * data, or with data NULL left unwritten, a hole (the file position moves on). what: the
 * public call, for the messages. */
static int put_data(sqz_gguf_writer *w, const uint8_t *data, size_t n, const char *what, sqz_err *err) {
    if (!w->writing || w->failed)
        return sqz_fail(err, "gguf writer: %s before write_begin or after a failure", what);
    while (n > 0) {
        if (w->cur >= w->n_tensors)
            return sqz_fail(err, "%s: %zu bytes of tensor data beyond the %lld declared tensors", w->out.path, n,
                            (long long)w->n_tensors);
        const sqz_gguf_wtensor *t = &w->tensors[w->cur];
        size_t k = t->nbytes - w->cur_written;
        if (k > n) k = n;
        if (data) {
            if (out_write(w, data, k, err) != SQZ_OK) return SQZ_ERR;
            data += k;
        } else if (!w->out.f || fseeko(w->out.f, (off_t)k, SEEK_CUR) != 0) {
            sqz_fail(err, "%s: seek failed: %s", w->out.path, strerror(errno));
            w->failed = 1;
            sqz_out_abort(&w->out);
            return SQZ_ERR;
        }
        w->cur_written += k;
        n -= k;
        if (advance(w, err) != SQZ_OK) return SQZ_ERR;
    }
    return SQZ_OK;
}

int sqz_gguf_write_data(sqz_gguf_writer *w, const void *data, size_t n, sqz_err *err) {
    return put_data(w, data, n, "write_data", err);
}

int sqz_gguf_write_skip(sqz_gguf_writer *w, size_t n, sqz_err *err) {
    return put_data(w, NULL, n, "write_skip", err);
}

int sqz_gguf_write_end(sqz_gguf_writer *w, sqz_err *err) {
    if (!w->writing || w->failed) return sqz_fail(err, "gguf writer: write_end before write_begin or after a failure");
    if (w->cur < w->n_tensors) {
        const sqz_gguf_wtensor *t = &w->tensors[w->cur];
        sqz_fail(err, "%s: tensor '%s' got %zu of its %zu bytes (and %lld tensors after it none)", w->out.path,
                 t->name, w->cur_written, t->nbytes, (long long)(w->n_tensors - w->cur - 1));
        w->failed = 1;
        sqz_out_abort(&w->out);
        return SQZ_ERR;
    }
    w->writing = 0;
    if (sqz_out_commit(&w->out, err) != SQZ_OK) {
        w->failed = 1;
        return SQZ_ERR;
    }
    return SQZ_OK;
}

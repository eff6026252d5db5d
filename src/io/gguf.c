/* GGUF reader (versions 2 and 3).
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv key/value pairs,
 * n_tensors tensor infos (name, u32 n_dims, i64 ne[n_dims], u32 type, u64 offset), padding
 * to general.alignment, and the data section; tensor offsets are relative to its start.
 * Every length and count is checked against the bytes left before it is used, so a file
 * that lies about them fails with a message instead of reading past the end. */
#include "sqz/io.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct reader {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const char *path;
    sqz_err *err;
} reader;

static size_t left(const reader *r) { return r->size - r->pos; }

static int rd_bytes(reader *r, void *dst, size_t n, const char *what) {
    if (n > left(r))
        return sqz_fail(r->err, "%s: %s: needs %zu bytes at offset %zu but the file has %zu", r->path, what, n,
                        r->pos, r->size);
    memcpy(dst, r->data + r->pos, n);
    r->pos += n;
    return SQZ_OK;
}

static int rd_u32(reader *r, uint32_t *v, const char *what) {
    uint8_t b[4] = {0};
    if (rd_bytes(r, b, 4, what) != SQZ_OK) return SQZ_ERR;
    *v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    return SQZ_OK;
}

static int rd_u64(reader *r, uint64_t *v, const char *what) {
    uint8_t b[8] = {0};
    if (rd_bytes(r, b, 8, what) != SQZ_OK) return SQZ_ERR;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | b[i];
    *v = x;
    return SQZ_OK;
}

/* A GGUF string: u64 length and bytes, copied into a new NUL-terminated buffer. */
static int rd_str(reader *r, char **out, size_t *out_len, const char *what) {
    uint64_t n;
    *out = NULL;
    if (rd_u64(r, &n, what) != SQZ_OK) return SQZ_ERR;
    if (n > left(r))
        return sqz_fail(r->err, "%s: %s: string length %llu exceeds the %zu bytes left in the file", r->path, what,
                        (unsigned long long)n, left(r));
    char *s = malloc((size_t)n + 1);
    if (!s) return sqz_fail(r->err, "%s: %s: out of memory for a %llu-byte string", r->path, what, (unsigned long long)n);
    memcpy(s, r->data + r->pos, (size_t)n);
    s[n] = 0;
    r->pos += (size_t)n;
    *out = s;
    if (out_len) *out_len = (size_t)n;
    return SQZ_OK;
}

/* Size of a scalar value of a KV type; 0 for STRING/ARRAY, -1 for an unknown type. */
static int scalar_size(int type) {
    switch (type) {
    case SQZ_GGUF_UINT8: case SQZ_GGUF_INT8: case SQZ_GGUF_BOOL: return 1;
    case SQZ_GGUF_UINT16: case SQZ_GGUF_INT16: return 2;
    case SQZ_GGUF_UINT32: case SQZ_GGUF_INT32: case SQZ_GGUF_FLOAT32: return 4;
    case SQZ_GGUF_UINT64: case SQZ_GGUF_INT64: case SQZ_GGUF_FLOAT64: return 8;
    case SQZ_GGUF_STRING: case SQZ_GGUF_ARRAY: return 0;
    default: return -1;
    }
}

const char *sqz_gguf_type_name(int type) {
    static const char *names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                  "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
    if (type < 0 || type >= (int)(sizeof names / sizeof names[0])) return "unknown";
    return names[type];
}

/* Decodes one little-endian scalar of `type` at p into the kv's converted fields. */
static void set_scalar(sqz_gguf_kv *kv, int type, const uint8_t *p) {
    uint64_t u = 0;
    int n = scalar_size(type);
    for (int i = n - 1; i >= 0; i--) u = (u << 8) | p[i];
    switch (type) {
    case SQZ_GGUF_UINT8: case SQZ_GGUF_UINT16: case SQZ_GGUF_UINT32: case SQZ_GGUF_BOOL:
        kv->i64 = (int64_t)u; kv->u64 = u; kv->f64 = (double)u; break;
    case SQZ_GGUF_INT8: kv->i64 = (int8_t)u; break;
    case SQZ_GGUF_INT16: kv->i64 = (int16_t)u; break;
    case SQZ_GGUF_INT32: kv->i64 = (int32_t)u; break;
    case SQZ_GGUF_INT64: kv->i64 = (int64_t)u; break;
    case SQZ_GGUF_UINT64:
        kv->u64 = u; kv->f64 = (double)u;
        kv->i64 = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        break;
    case SQZ_GGUF_FLOAT32: { uint32_t b = (uint32_t)u; float f; memcpy(&f, &b, 4); kv->f64 = f; break; }
    case SQZ_GGUF_FLOAT64: memcpy(&kv->f64, &u, 8); break;
    default: break;
    }
    if (type == SQZ_GGUF_INT8 || type == SQZ_GGUF_INT16 || type == SQZ_GGUF_INT32 || type == SQZ_GGUF_INT64) {
        kv->u64 = (uint64_t)kv->i64;
        kv->f64 = (double)kv->i64;
    }
}

static int rd_kv(reader *r, sqz_gguf_kv *kv, int64_t index) {
    char what[320];
    snprintf(what, sizeof what, "metadata #%lld key", (long long)index);
    if (rd_str(r, &kv->key, NULL, what) != SQZ_OK) return SQZ_ERR;
    uint32_t type;
    snprintf(what, sizeof what, "metadata %.256s: type", kv->key);
    if (rd_u32(r, &type, what) != SQZ_OK) return SQZ_ERR;
    if (scalar_size((int)type) < 0)
        return sqz_fail(r->err, "%s: metadata %s: unknown value type %u (expected 0..12)", r->path, kv->key, type);
    kv->type = (int)type;
    snprintf(what, sizeof what, "metadata %.256s: value", kv->key);
    if (type == SQZ_GGUF_STRING) return rd_str(r, &kv->str, &kv->str_len, what);
    if (type != SQZ_GGUF_ARRAY) {
        uint8_t b[8] = {0};
        if (rd_bytes(r, b, (size_t)scalar_size((int)type), what) != SQZ_OK) return SQZ_ERR;
        set_scalar(kv, (int)type, b);
        return SQZ_OK;
    }
    uint32_t et;
    uint64_t n;
    if (rd_u32(r, &et, what) != SQZ_OK || rd_u64(r, &n, what) != SQZ_OK) return SQZ_ERR;
    if (et == SQZ_GGUF_ARRAY)
        return sqz_fail(r->err, "%s: metadata %s: arrays of arrays are not supported", r->path, kv->key);
    if (scalar_size((int)et) < 0)
        return sqz_fail(r->err, "%s: metadata %s: unknown array element type %u (expected 0..12)", r->path, kv->key, et);
    kv->arr_type = (int)et;
    /* the smallest encoding of one element (a string is at least its 8-byte length) bounds
     * the count by the bytes left, before anything is allocated */
    size_t min_elem = et == SQZ_GGUF_STRING ? 8 : (size_t)scalar_size((int)et);
    if (n > left(r) / min_elem)
        return sqz_fail(r->err, "%s: metadata %s: array of %llu %s elements exceeds the %zu bytes left in the file",
                        r->path, kv->key, (unsigned long long)n, sqz_gguf_type_name((int)et), left(r));
    if (et == SQZ_GGUF_STRING) {
        kv->arr_str = calloc(n ? (size_t)n : 1, sizeof(char *));
        if (!kv->arr_str) return sqz_fail(r->err, "%s: metadata %s: out of memory", r->path, kv->key);
        kv->arr_n = n;
        for (uint64_t i = 0; i < n; i++) {
            snprintf(what, sizeof what, "metadata %.256s: element %llu", kv->key, (unsigned long long)i);
            if (rd_str(r, &kv->arr_str[i], NULL, what) != SQZ_OK) return SQZ_ERR;
        }
        return SQZ_OK;
    }
    size_t nb = (size_t)n * min_elem;
    kv->arr = malloc(nb ? nb : 1);
    if (!kv->arr) return sqz_fail(r->err, "%s: metadata %s: out of memory", r->path, kv->key);
    kv->arr_n = n;
    /* numeric elements are kept in their native little-endian layout (the host's) */
    return rd_bytes(r, kv->arr, nb, what);
}

static void free_contents(sqz_gguf *g) {
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            sqz_gguf_kv *kv = &g->kv[i];
            free(kv->key);
            free(kv->str);
            free(kv->arr);
            if (kv->arr_str)
                for (uint64_t j = 0; j < kv->arr_n; j++) free(kv->arr_str[j]);
            free(kv->arr_str);
        }
        free(g->kv);
    }
    if (g->tensors) {
        for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
        free(g->tensors);
    }
    free(g->path_owned);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct span {
    const uint8_t *start;
    size_t nbytes;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* Fails when two names in the list are equal; `what` names the list in the message. */
static int check_unique(char **names, int64_t n, const char *path, const char *what, sqz_err *err) {
    if (n < 2) return SQZ_OK;
    char **s = malloc((size_t)n * sizeof *s);
    if (!s) return sqz_fail(err, "%s: out of memory", path);
    memcpy(s, names, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_str_ptr);
    for (int64_t i = 1; i < n; i++) {
        if (strcmp(s[i - 1], s[i]) == 0) {
            sqz_fail(err, "%s: duplicate %s '%s'", path, what, s[i]);
            free(s);
            return SQZ_ERR;
        }
    }
    free(s);
    return SQZ_OK;
}

static int rd_tensor_info(reader *r, sqz_gguf *g, sqz_tensor *t, uint64_t *offset, int64_t index) {
    char what[320];
    snprintf(what, sizeof what, "tensor info #%lld name", (long long)index);
    size_t name_len;
    if (rd_str(r, &t->name, &name_len, what) != SQZ_OK) return SQZ_ERR;
    if (strlen(t->name) != name_len)
        return sqz_fail(r->err, "%s: tensor #%lld: name contains a NUL byte", r->path, (long long)index);
    uint32_t n_dims, type;
    snprintf(what, sizeof what, "tensor '%.256s' n_dims", t->name);
    if (rd_u32(r, &n_dims, what) != SQZ_OK) return SQZ_ERR;
    if (n_dims > SQZ_MAX_DIMS)
        return sqz_fail(r->err, "%s: tensor '%s': n_dims %u exceeds the maximum of %d", r->path, t->name, n_dims,
                        SQZ_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t nel = 1;
    for (int i = 0; i < SQZ_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        uint64_t v;
        snprintf(what, sizeof what, "tensor '%.256s' ne[%u]", t->name, i);
        if (rd_u64(r, &v, what) != SQZ_OK) return SQZ_ERR;
        if (v > (uint64_t)INT64_MAX)
            return sqz_fail(r->err, "%s: tensor '%s': ne[%u] = %lld is negative", r->path, t->name, i, (long long)v);
        t->ne[i] = (int64_t)v;
        if (t->ne[i] != 0 && nel > INT64_MAX / t->ne[i])
            return sqz_fail(r->err, "%s: tensor '%s': ne product overflows (ne[%u] = %lld)", r->path, t->name, i,
                            (long long)t->ne[i]);
        nel *= t->ne[i];
    }
    snprintf(what, sizeof what, "tensor '%.256s' type", t->name);
    if (rd_u32(r, &type, what) != SQZ_OK) return SQZ_ERR;
    const sqz_type_traits *tt = sqz_type_get((int)type);
    if (!tt) return sqz_fail(r->err, "%s: tensor '%s': unknown type id %u", r->path, t->name, type);
    t->type = (int)type;
    snprintf(what, sizeof what, "tensor '%.256s' offset", t->name);
    if (rd_u64(r, offset, what) != SQZ_OK) return SQZ_ERR;
    if (*offset % g->alignment != 0)
        return sqz_fail(r->err, "%s: tensor '%s': offset %llu is not a multiple of the alignment %zu", r->path,
                        t->name, (unsigned long long)*offset, g->alignment);
    size_t row_bytes, nb;
    if (sqz_type_row_bytes(t->type, t->ne[0], &row_bytes, r->err) != SQZ_OK)
        return sqz_fail_prefix(r->err, "%s: tensor '%s': ne[0]", r->path, t->name);
    /* nel fits int64, and the row count divides it (or ne[0] is 0) */
    int64_t rows = t->ne[0] ? nel / t->ne[0] : 0;
    if (sqz_mul_size(row_bytes, (size_t)rows, &nb) != 0)
        return sqz_fail(r->err, "%s: tensor '%s': byte size overflows", r->path, t->name);
    t->nbytes = nb;
    return SQZ_OK;
}

int sqz_gguf_parse(sqz_gguf *g, const uint8_t *data, size_t size, const char *path, sqz_err *err) {
    memset(g, 0, sizeof *g);
    if (!path) path = "<memory>";
    g->path_owned = strdup(path);
    if (!g->path_owned) return sqz_fail(err, "%s: out of memory", path);
    g->path = g->path_owned;
    path = g->path_owned;
    reader r = {data, data ? size : 0, 0, path, err};
    uint8_t magic[4] = {0};
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if (rd_bytes(&r, magic, 4, "magic") != SQZ_OK) goto fail;
    if (memcmp(magic, "GGUF", 4) != 0) {
        sqz_fail(err, "%s: magic: expected \"GGUF\", found %02x %02x %02x %02x", path, magic[0], magic[1], magic[2],
                 magic[3]);
        goto fail;
    }
    if (rd_u32(&r, &version, "version") != SQZ_OK) goto fail;
    if (version != 2 && version != 3) {
        sqz_fail(err, "%s: version: %u is not supported (expected 2 or 3)", path, version);
        goto fail;
    }
    g->version = version;
    if (rd_u64(&r, &n_tensors, "n_tensors") != SQZ_OK || rd_u64(&r, &n_kv, "n_kv") != SQZ_OK) goto fail;
    /* smallest encodings: a KV is 8 (key length) + 4 (type) + 1 (u8 value) bytes; a tensor
     * info 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes */
    if (n_kv > left(&r) / 13) {
        sqz_fail(err, "%s: n_kv: %llu key/value pairs cannot fit in the %zu bytes left", path,
                 (unsigned long long)n_kv, left(&r));
        goto fail;
    }
    if (n_tensors > (left(&r) - n_kv * 13) / 24) {
        sqz_fail(err, "%s: n_tensors: %llu tensor infos cannot fit in the %zu bytes left", path,
                 (unsigned long long)n_tensors, left(&r));
        goto fail;
    }
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        sqz_fail(err, "%s: out of memory", path);
        goto fail;
    }
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if (rd_kv(&r, &g->kv[i], i) != SQZ_OK) goto fail;
        if (strlen(g->kv[i].key) == 0) {
            sqz_fail(err, "%s: metadata #%lld: empty key", path, (long long)i);
            goto fail;
        }
    }
    {
        char **keys = malloc((size_t)(g->n_kv ? g->n_kv : 1) * sizeof *keys);
        if (!keys) {
            sqz_fail(err, "%s: out of memory", path);
            goto fail;
        }
        for (int64_t i = 0; i < g->n_kv; i++) keys[i] = g->kv[i].key;
        int rc = check_unique(keys, g->n_kv, path, "metadata key", err);
        free(keys);
        if (rc != SQZ_OK) goto fail;
    }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const sqz_gguf_kv *al = sqz_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != SQZ_GGUF_UINT32 && al->type != SQZ_GGUF_UINT64 && al->type != SQZ_GGUF_INT32 &&
            al->type != SQZ_GGUF_UINT16 && al->type != SQZ_GGUF_UINT8) {
            sqz_fail(err, "%s: metadata general.alignment: expected UINT32, found %s", path,
                     sqz_gguf_type_name(al->type));
            goto fail;
        }
        if (al->i64 <= 0 || (al->i64 & (al->i64 - 1)) != 0 || al->i64 > (1 << 30)) {
            sqz_fail(err, "%s: metadata general.alignment: %lld is not a power of two (at most 2^30)", path,
                     (long long)al->i64);
            goto fail;
        }
        g->alignment = (size_t)al->i64;
    }

    uint64_t *offsets = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *offsets);
    if (!offsets) {
        sqz_fail(err, "%s: out of memory", path);
        goto fail;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if (rd_tensor_info(&r, g, &g->tensors[i], &offsets[i], i) != SQZ_OK) {
            free(offsets);
            goto fail;
        }
    }
    /* the data section starts at the next multiple of the alignment */
    size_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_offset = r.pos + pad;
    if (g->n_tensors > 0 && g->data_offset > r.size) {
        sqz_fail(err, "%s: data section: starts at %zu, past the end of the %zu-byte file", path, g->data_offset,
                 r.size);
        free(offsets);
        goto fail;
    }
    size_t data_size = g->data_offset <= r.size ? r.size - g->data_offset : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        sqz_tensor *t = &g->tensors[i];
        if (offsets[i] > data_size || t->nbytes > data_size - offsets[i]) {
            sqz_fail(err, "%s: tensor '%s': data [%llu, %llu + %zu) lies past the end of the %zu-byte data section",
                     path, t->name, (unsigned long long)offsets[i], (unsigned long long)offsets[i], t->nbytes,
                     data_size);
            free(offsets);
            goto fail;
        }
        t->data = data + g->data_offset + offsets[i];
    }
    free(offsets);

    {
        char **names = malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *names);
        span *spans = malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *spans);
        if (!names || !spans) {
            free(names);
            free(spans);
            sqz_fail(err, "%s: out of memory", path);
            goto fail;
        }
        for (int64_t i = 0; i < g->n_tensors; i++) {
            names[i] = g->tensors[i].name;
            spans[i] = (span){g->tensors[i].data, g->tensors[i].nbytes, g->tensors[i].name};
        }
        int rc = check_unique(names, g->n_tensors, path, "tensor name", err);
        free(names);
        if (rc == SQZ_OK && g->n_tensors > 1) {
            /* overlap: sorted by start, each tensor must end before the next begins */
            qsort(spans, (size_t)g->n_tensors, sizeof *spans, cmp_span);
            const span *prev = NULL; /* the non-empty tensor reaching furthest so far */
            for (int64_t k = 0; k < g->n_tensors && rc == SQZ_OK; k++) {
                const span *b = &spans[k];
                if (b->nbytes == 0) continue;
                if (prev && (size_t)(b->start - prev->start) < prev->nbytes)
                    rc = sqz_fail(err, "%s: tensor '%s' overlaps tensor '%s' in the data section", path, prev->name,
                                  b->name);
                if (!prev || b->start + b->nbytes > prev->start + prev->nbytes) prev = b;
            }
        }
        free(spans);
        if (rc != SQZ_OK) goto fail;
    }
    return SQZ_OK;

fail:
    free_contents(g);
    memset(g, 0, sizeof *g);
    return SQZ_ERR;
}

int sqz_gguf_open(sqz_gguf *g, const char *path, sqz_err *err) {
    sqz_map map;
    memset(g, 0, sizeof *g);
    if (sqz_map_open(&map, path, err) != SQZ_OK) return SQZ_ERR;
    if (sqz_gguf_parse(g, map.data, map.size, path, err) != SQZ_OK) {
        sqz_map_close(&map);
        return SQZ_ERR;
    }
    g->map = map;
    return SQZ_OK;
}

void sqz_gguf_close(sqz_gguf *g) {
    if (!g) return;
    free_contents(g);
    sqz_map_close(&g->map);
    memset(g, 0, sizeof *g);
}

const sqz_gguf_kv *sqz_gguf_find(const sqz_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const sqz_tensor *sqz_gguf_find_tensor(const sqz_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static const char *path_of(const sqz_gguf *g) { return g->path ? g->path : "<gguf>"; }

int sqz_gguf_get_i64(const sqz_gguf *g, const char *key, int64_t *out, sqz_err *err) {
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    if (!kv) return sqz_fail(err, "%s: metadata %s: missing", path_of(g), key);
    int s = scalar_size(kv->type);
    if (s <= 0 || kv->type == SQZ_GGUF_FLOAT32 || kv->type == SQZ_GGUF_FLOAT64)
        return sqz_fail(err, "%s: metadata %s: expected an integer, found %s", path_of(g), key,
                        sqz_gguf_type_name(kv->type));
    if (kv->type == SQZ_GGUF_UINT64 && kv->u64 > (uint64_t)INT64_MAX)
        return sqz_fail(err, "%s: metadata %s: %llu does not fit in int64", path_of(g), key,
                        (unsigned long long)kv->u64);
    *out = kv->i64;
    return SQZ_OK;
}

int sqz_gguf_get_f64(const sqz_gguf *g, const char *key, double *out, sqz_err *err) {
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    if (!kv) return sqz_fail(err, "%s: metadata %s: missing", path_of(g), key);
    /* integers are accepted too: some writers store e.g. rope.freq_base as one */
    if (scalar_size(kv->type) <= 0 || kv->type == SQZ_GGUF_BOOL)
        return sqz_fail(err, "%s: metadata %s: expected a number, found %s", path_of(g), key,
                        sqz_gguf_type_name(kv->type));
    *out = kv->f64;
    return SQZ_OK;
}

int sqz_gguf_get_str(const sqz_gguf *g, const char *key, const char **out, sqz_err *err) {
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    if (!kv) return sqz_fail(err, "%s: metadata %s: missing", path_of(g), key);
    if (kv->type != SQZ_GGUF_STRING)
        return sqz_fail(err, "%s: metadata %s: expected STRING, found %s", path_of(g), key,
                        sqz_gguf_type_name(kv->type));
    *out = kv->str;
    return SQZ_OK;
}

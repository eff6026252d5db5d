/* safetensors reader.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [out, in], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"k": "v"}}
 * then the data section; offsets are relative to its start (byte 8 + N). Shapes are
 * row-major, so they are reversed into ggml order (ne[0] = last dim). */
#include "sqz/io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* The reference implementation refuses headers above 100 MB; a bigger one is a lie. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static int dtype_to_type(const char *dtype) {
    if (strcmp(dtype, "F32") == 0) return SQZ_TYPE_F32;
    if (strcmp(dtype, "F16") == 0) return SQZ_TYPE_F16;
    if (strcmp(dtype, "BF16") == 0) return SQZ_TYPE_BF16;
    return -1;
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

typedef struct span {
    size_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const sqz_tensor *)a)->name, ((const sqz_tensor *)b)->name);
}

static void free_tensors(sqz_st_file *f) {
    if (f->tensors)
        for (int64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    f->tensors = NULL;
    f->n_tensors = 0;
}

/* Fills t from one header entry; data_start/data_size describe the data section. */
static int parse_entry(const cJSON *e, sqz_tensor *t, span *sp, const uint8_t *data_start, size_t data_size,
                       const char *path, sqz_err *err) {
    const char *name = t->name;
    if (!cJSON_IsObject(e)) return sqz_fail(err, "%s: header: tensor '%s': expected an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return sqz_fail(err, "%s: header: tensor '%s': missing or non-string dtype", path, name);
    if (!cJSON_IsArray(sh)) return sqz_fail(err, "%s: header: tensor '%s': missing or non-array shape", path, name);
    if (!cJSON_IsArray(of))
        return sqz_fail(err, "%s: header: tensor '%s': missing or non-array data_offsets", path, name);
    int type = dtype_to_type(dt->valuestring);
    if (type < 0)
        return sqz_fail(err, "%s: header: unsupported dtype '%.32s' for tensor '%s' (expected F32, F16 or BF16)",
                        path, dt->valuestring, name);
    t->type = type;
    int nd = cJSON_GetArraySize(sh);
    if (nd > SQZ_MAX_DIMS)
        return sqz_fail(err, "%s: header: tensor '%s': shape has %d dims (at most %d supported)", path, name, nd,
                        SQZ_MAX_DIMS);
    t->n_dims = nd;
    for (int i = 0; i < SQZ_MAX_DIMS; i++) t->ne[i] = 1;
    size_t nel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (json_uint(cJSON_GetArrayItem(sh, i), &v) != 0)
            return sqz_fail(err, "%s: header: tensor '%s': shape[%d] is not a non-negative integer", path, name, i);
        t->ne[nd - 1 - i] = (int64_t)v;
        if (sqz_mul_size(nel, (size_t)v, &nel) != 0 || nel > (size_t)INT64_MAX)
            return sqz_fail(err, "%s: header: tensor '%s': shape product overflows", path, name);
    }
    uint64_t b, en;
    if (cJSON_GetArraySize(of) != 2 || json_uint(cJSON_GetArrayItem(of, 0), &b) != 0 ||
        json_uint(cJSON_GetArrayItem(of, 1), &en) != 0 || b > en)
        return sqz_fail(err, "%s: header: tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", path,
                        name);
    if (en > data_size)
        return sqz_fail(err, "%s: header: tensor '%s' data_offsets [%llu, %llu) exceed data size %zu", path, name,
                        (unsigned long long)b, (unsigned long long)en, data_size);
    size_t want;
    size_t esize = sqz_type_get(type)->block_bytes;
    if (sqz_mul_size(nel, esize, &want) != 0 || want != (size_t)(en - b))
        return sqz_fail(err, "%s: header: tensor '%s': data_offsets span %llu bytes but shape x %s needs %zu x %zu",
                        path, name, (unsigned long long)(en - b), dt->valuestring, nel, esize);
    t->data = data_start + b;
    t->nbytes = (size_t)(en - b);
    *sp = (span){(size_t)b, (size_t)en, name};
    return SQZ_OK;
}

int sqz_st_parse(sqz_st_file *f, const uint8_t *data, size_t size, const char *path, sqz_err *err) {
    memset(f, 0, sizeof *f);
    if (!path) path = "<memory>";
    if (!data || size < 8) return sqz_fail(err, "%s: file is %zu bytes, shorter than the 8-byte header length", path, data ? size : 0);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > ST_MAX_HEADER)
        return sqz_fail(err, "%s: header length %llu is absurd (limit %u)", path, (unsigned long long)n, ST_MAX_HEADER);
    if (n > size - 8)
        return sqz_fail(err, "%s: header length %llu exceeds the %zu bytes after it", path, (unsigned long long)n,
                        size - 8);
    if (n < 2) return sqz_fail(err, "%s: header: %llu bytes cannot hold a JSON object", path, (unsigned long long)n);
    const uint8_t *data_start = data + 8 + n;
    size_t data_size = size - 8 - (size_t)n;

    cJSON *root = cJSON_ParseWithLength((const char *)data + 8, (size_t)n);
    if (!root) return sqz_fail(err, "%s: header: not valid JSON", path);
    span *spans = NULL;
    int rc = SQZ_ERR;
    if (!cJSON_IsObject(root)) {
        sqz_fail(err, "%s: header: expected a JSON object", path);
        goto done;
    }
    int64_t count = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            sqz_fail(err, "%s: header: entry without a name", path);
            goto done;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e) && !cJSON_IsNull(e)) {
                sqz_fail(err, "%s: header: __metadata__: expected an object of strings", path);
                goto done;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    sqz_fail(err, "%s: header: __metadata__ '%s': expected a string value", path,
                             m->string ? m->string : "?");
                    goto done;
                }
            continue;
        }
        count++;
    }
    f->tensors = calloc(count ? (size_t)count : 1, sizeof *f->tensors);
    spans = calloc(count ? (size_t)count : 1, sizeof *spans);
    if (!f->tensors || !spans) {
        sqz_fail(err, "%s: out of memory", path);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        sqz_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(e->string);
        if (!t->name) {
            sqz_fail(err, "%s: out of memory", path);
            goto done;
        }
        f->n_tensors++;
        if (parse_entry(e, t, &spans[f->n_tensors - 1], data_start, data_size, path, err) != SQZ_OK) goto done;
    }
    if (f->n_tensors > 1) {
        qsort(spans, (size_t)f->n_tensors, sizeof *spans, cmp_span);
        const span *prev = NULL; /* the non-empty tensor reaching furthest so far */
        for (int64_t k = 0; k < f->n_tensors; k++) {
            const span *s = &spans[k];
            if (s->begin == s->end) continue;
            if (prev && s->begin < prev->end) {
                sqz_fail(err, "%s: header: tensor '%s' data_offsets [%zu, %zu) overlap tensor '%s' [%zu, %zu)", path,
                         s->name, s->begin, s->end, prev->name, prev->begin, prev->end);
                goto done;
            }
            if (!prev || s->end > prev->end) prev = s;
        }
        /* duplicate names (JSON allows repeated keys): sort a copy by name */
        sqz_tensor *byname = malloc((size_t)f->n_tensors * sizeof *byname);
        if (!byname) {
            sqz_fail(err, "%s: out of memory", path);
            goto done;
        }
        memcpy(byname, f->tensors, (size_t)f->n_tensors * sizeof *byname);
        qsort(byname, (size_t)f->n_tensors, sizeof *byname, cmp_name);
        for (int64_t k = 1; k < f->n_tensors; k++)
            if (strcmp(byname[k - 1].name, byname[k].name) == 0) {
                sqz_fail(err, "%s: header: duplicate tensor name '%s'", path, byname[k].name);
                free(byname);
                goto done;
            }
        free(byname);
    }
    rc = SQZ_OK;
done:
    free(spans);
    cJSON_Delete(root);
    if (rc != SQZ_OK) free_tensors(f);
    return rc;
}

int sqz_st_open(sqz_st_file *f, const char *path, sqz_err *err) {
    sqz_map map;
    memset(f, 0, sizeof *f);
    if (sqz_map_open(&map, path, err) != SQZ_OK) return SQZ_ERR;
    if (sqz_st_parse(f, map.data, map.size, path, err) != SQZ_OK) {
        sqz_map_close(&map);
        return SQZ_ERR;
    }
    f->map = map;
    return SQZ_OK;
}

void sqz_st_close(sqz_st_file *f) {
    if (!f) return;
    free_tensors(f);
    sqz_map_close(&f->map);
    memset(f, 0, sizeof *f);
}

const sqz_tensor *sqz_st_find(const sqz_st_file *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

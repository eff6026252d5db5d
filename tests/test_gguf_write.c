/* GGUF writer: every metadata type, tensor infos, alignment, streaming, and failures.
 *
 * The file is read back with sqz's GGUF reader (src/io/gguf.c) here; `test_gguf_write
 * --emit FILE` writes the same file for tests/py/check_quant_gguf_py.py, which reads it
 * with gguf-py's GGUFReader and compares it with the same specification, written out
 * independently there (keep the two in step). Its bytes are also checked against the
 * GGUF layout computed by hand below (header, first key, data offsets). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqz/gguf_write.h"
#include "sqz/io.h"
#include "testutil.h"

/* ---------------- the specification ---------------- */

static const uint8_t a_u8[] = {1, 2, 255};
static const int8_t a_i8[] = {-128, 0, 127};
static const uint16_t a_u16[] = {0, 65535};
static const int16_t a_i16[] = {-32768, 32767};
static const uint32_t a_u32[] = {0, 4294967295u};
static const int32_t a_i32[] = {INT32_MIN, 5};
static const uint64_t a_u64[] = {0, UINT64_MAX};
static const int64_t a_i64[] = {INT64_MIN, INT64_MAX};
static const float a_f32[] = {0.5f, -1.5f, 1e30f};
static const double a_f64[] = {0.1, -2.5e-300};
static const uint8_t a_bool[] = {1, 0, 1};
static const char *const a_str[] = {"a", "", "\xc3\xbcn\xc3\xaf", "tokenizer ggml"};
static const char *const k_str = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93";

/* tensors: name, type, dims, ne; data bytes are byte_pattern(tensor index, i) */
typedef struct spec_tensor {
    const char *name;
    int type, n_dims;
    int64_t ne[4];
} spec_tensor;

static const spec_tensor kTensors[] = {
    {"a.f32", SQZ_TYPE_F32, 1, {7, 1, 1, 1}},
    {"b.f16", SQZ_TYPE_F16, 2, {8, 3, 1, 1}},
    {"c.q8_0", SQZ_TYPE_Q8_0, 2, {64, 2, 1, 1}},
    {"d.q4_k", SQZ_TYPE_Q4_K, 3, {256, 2, 2, 1}},
    {"e.bias_of_a_rather_long_name_with_exactly_63_bytes_0123456789ab", SQZ_TYPE_F32, 1, {3, 1, 1, 1}},
};
#define N_SPEC_TENSORS 5

static uint8_t byte_pattern(int t, size_t i) { return (uint8_t)((i * 7 + (size_t)t * 31 + 1) % 251); }

static size_t spec_nbytes(const spec_tensor *s) {
    const sqz_type_traits *tt = sqz_type_get(s->type);
    size_t n = (size_t)(s->ne[0] / tt->block_size) * tt->block_bytes;
    for (int d = 1; d < s->n_dims; d++) n *= (size_t)s->ne[d];
    return n;
}

static int set_spec_kvs(sqz_gguf_writer *w, uint32_t alignment, sqz_err *err) {
    int ok = sqz_gguf_set_str(w, "general.architecture", "sqztest", err) == SQZ_OK;
    if (alignment) ok = ok && sqz_gguf_set_u32(w, "general.alignment", alignment, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_u8(w, "t.u8", 200, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_i8(w, "t.i8", -100, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_u16(w, "t.u16", 60000, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_i16(w, "t.i16", -30000, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_u32(w, "t.u32", 4000000000u, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_i32(w, "t.i32", -2000000000, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_u64(w, "t.u64", 18000000000000000000ull, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_i64(w, "t.i64", -9000000000000000000ll, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_f32(w, "t.f32", 3.25f, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_f64(w, "t.f64", -1.0e-300, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_bool(w, "t.bool_t", 1, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_bool(w, "t.bool_f", 0, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_str(w, "t.str", k_str, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_str(w, "t.empty_str", "", err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_u8", SQZ_GGUF_UINT8, a_u8, 3, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_i8", SQZ_GGUF_INT8, a_i8, 3, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_u16", SQZ_GGUF_UINT16, a_u16, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_i16", SQZ_GGUF_INT16, a_i16, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_u32", SQZ_GGUF_UINT32, a_u32, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_i32", SQZ_GGUF_INT32, a_i32, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_u64", SQZ_GGUF_UINT64, a_u64, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_i64", SQZ_GGUF_INT64, a_i64, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_f32", SQZ_GGUF_FLOAT32, a_f32, 3, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_f64", SQZ_GGUF_FLOAT64, a_f64, 2, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_bool", SQZ_GGUF_BOOL, a_bool, 3, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr_str(w, "t.arr_str", a_str, 4, err) == SQZ_OK;
    ok = ok && sqz_gguf_set_arr(w, "t.arr_empty", SQZ_GGUF_INT32, NULL, 0, err) == SQZ_OK;
    return ok ? SQZ_OK : SQZ_ERR;
}
#define N_SPEC_KV(alignment) ((alignment) ? 29 : 28)

/* Writes the spec file, feeding tensor data in pieces of `chunk` bytes that cross tensor
 * boundaries (0 = one call per tensor). */
static int write_spec(const char *path, uint32_t alignment, size_t chunk, sqz_err *err) {
    sqz_gguf_writer w;
    sqz_gguf_writer_init(&w);
    int ok = set_spec_kvs(&w, alignment, err) == SQZ_OK;
    size_t total = 0;
    for (int t = 0; ok && t < N_SPEC_TENSORS; t++) {
        ok = sqz_gguf_add_tensor(&w, kTensors[t].name, kTensors[t].type, kTensors[t].n_dims, kTensors[t].ne, err) ==
             SQZ_OK;
        total += spec_nbytes(&kTensors[t]);
    }
    uint8_t *all = malloc(total);
    size_t k = 0;
    for (int t = 0; t < N_SPEC_TENSORS; t++)
        for (size_t i = 0; i < spec_nbytes(&kTensors[t]); i++) all[k++] = byte_pattern(t, i);
    ok = ok && sqz_gguf_write_begin(&w, path, err) == SQZ_OK;
    if (chunk == 0) {
        k = 0;
        for (int t = 0; ok && t < N_SPEC_TENSORS; t++) {
            ok = sqz_gguf_write_data(&w, all + k, spec_nbytes(&kTensors[t]), err) == SQZ_OK;
            k += spec_nbytes(&kTensors[t]);
        }
    } else {
        for (k = 0; ok && k < total; k += chunk)
            ok = sqz_gguf_write_data(&w, all + k, total - k < chunk ? total - k : chunk, err) == SQZ_OK;
    }
    ok = ok && sqz_gguf_write_end(&w, err) == SQZ_OK;
    sqz_gguf_writer_free(&w);
    free(all);
    return ok ? SQZ_OK : SQZ_ERR;
}

/* ---------------- checks through sqz's reader ---------------- */

static const sqz_gguf_kv *kv_of(const sqz_gguf *g, const char *key, int type) {
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    CHECK(kv != NULL, "key %s missing", key);
    if (kv) CHECK(kv->type == type, "key %s: type %d, expected %d", key, kv->type, type);
    return kv && kv->type == type ? kv : NULL;
}

static void check_arr(const sqz_gguf *g, const char *key, int et, const void *data, uint64_t n, size_t es) {
    const sqz_gguf_kv *kv = kv_of(g, key, SQZ_GGUF_ARRAY);
    if (!kv) return;
    CHECK(kv->arr_type == et && kv->arr_n == n, "%s: array type %d n %llu", key, kv->arr_type,
          (unsigned long long)kv->arr_n);
    if (kv->arr_type == et && kv->arr_n == n && n) CHECK(memcmp(kv->arr, data, n * es) == 0, "%s: elements differ", key);
}

static void check_spec_file(const char *path, uint32_t alignment) {
    sqz_gguf g;
    sqz_err err = {{0}};
    memset(&g, 0, sizeof g);
    if (sqz_gguf_open(&g, path, &err) != SQZ_OK) {
        CHECK(0, "sqz_gguf_open(%s): %s", path, err.msg);
        return;
    }
    CHECK(g.version == 3, "version %u", g.version);
    CHECK(g.n_kv == N_SPEC_KV(alignment), "n_kv %lld", (long long)g.n_kv);
    CHECK(g.alignment == (alignment ? alignment : 32), "alignment %zu", g.alignment);
    CHECK(g.data_offset % g.alignment == 0, "data offset %zu not aligned", g.data_offset);
    const sqz_gguf_kv *kv;
    if ((kv = kv_of(&g, "general.architecture", SQZ_GGUF_STRING))) CHECK(strcmp(kv->str, "sqztest") == 0, "arch");
    if ((kv = kv_of(&g, "t.u8", SQZ_GGUF_UINT8))) CHECK(kv->i64 == 200, "u8");
    if ((kv = kv_of(&g, "t.i8", SQZ_GGUF_INT8))) CHECK(kv->i64 == -100, "i8");
    if ((kv = kv_of(&g, "t.u16", SQZ_GGUF_UINT16))) CHECK(kv->i64 == 60000, "u16");
    if ((kv = kv_of(&g, "t.i16", SQZ_GGUF_INT16))) CHECK(kv->i64 == -30000, "i16");
    if ((kv = kv_of(&g, "t.u32", SQZ_GGUF_UINT32))) CHECK(kv->u64 == 4000000000u, "u32");
    if ((kv = kv_of(&g, "t.i32", SQZ_GGUF_INT32))) CHECK(kv->i64 == -2000000000, "i32");
    if ((kv = kv_of(&g, "t.u64", SQZ_GGUF_UINT64))) CHECK(kv->u64 == 18000000000000000000ull, "u64");
    if ((kv = kv_of(&g, "t.i64", SQZ_GGUF_INT64))) CHECK(kv->i64 == -9000000000000000000ll, "i64");
    if ((kv = kv_of(&g, "t.f32", SQZ_GGUF_FLOAT32))) CHECK(kv->f64 == 3.25, "f32");
    if ((kv = kv_of(&g, "t.f64", SQZ_GGUF_FLOAT64))) CHECK(kv->f64 == -1.0e-300, "f64");
    if ((kv = kv_of(&g, "t.bool_t", SQZ_GGUF_BOOL))) CHECK(kv->i64 == 1, "bool_t");
    if ((kv = kv_of(&g, "t.bool_f", SQZ_GGUF_BOOL))) CHECK(kv->i64 == 0, "bool_f");
    if ((kv = kv_of(&g, "t.str", SQZ_GGUF_STRING))) CHECK(strcmp(kv->str, k_str) == 0, "str '%s'", kv->str);
    if ((kv = kv_of(&g, "t.empty_str", SQZ_GGUF_STRING))) CHECK(kv->str_len == 0, "empty str");
    check_arr(&g, "t.arr_u8", SQZ_GGUF_UINT8, a_u8, 3, 1);
    check_arr(&g, "t.arr_i8", SQZ_GGUF_INT8, a_i8, 3, 1);
    check_arr(&g, "t.arr_u16", SQZ_GGUF_UINT16, a_u16, 2, 2);
    check_arr(&g, "t.arr_i16", SQZ_GGUF_INT16, a_i16, 2, 2);
    check_arr(&g, "t.arr_u32", SQZ_GGUF_UINT32, a_u32, 2, 4);
    check_arr(&g, "t.arr_i32", SQZ_GGUF_INT32, a_i32, 2, 4);
    check_arr(&g, "t.arr_u64", SQZ_GGUF_UINT64, a_u64, 2, 8);
    check_arr(&g, "t.arr_i64", SQZ_GGUF_INT64, a_i64, 2, 8);
    check_arr(&g, "t.arr_f32", SQZ_GGUF_FLOAT32, a_f32, 3, 4);
    check_arr(&g, "t.arr_f64", SQZ_GGUF_FLOAT64, a_f64, 2, 8);
    check_arr(&g, "t.arr_bool", SQZ_GGUF_BOOL, a_bool, 3, 1);
    check_arr(&g, "t.arr_empty", SQZ_GGUF_INT32, NULL, 0, 4);
    if ((kv = kv_of(&g, "t.arr_str", SQZ_GGUF_ARRAY))) {
        CHECK(kv->arr_type == SQZ_GGUF_STRING && kv->arr_n == 4, "arr_str type/n");
        for (uint64_t i = 0; kv->arr_type == SQZ_GGUF_STRING && i < 4 && i < kv->arr_n; i++)
            CHECK(strcmp(kv->arr_str[i], a_str[i]) == 0, "arr_str[%llu] '%s'", (unsigned long long)i, kv->arr_str[i]);
    }
    CHECK(g.n_tensors == N_SPEC_TENSORS, "n_tensors %lld", (long long)g.n_tensors);
    size_t expect_off = 0;
    for (int t = 0; t < N_SPEC_TENSORS; t++) {
        const spec_tensor *s = &kTensors[t];
        const sqz_tensor *x = sqz_gguf_find_tensor(&g, s->name);
        CHECK(x != NULL, "tensor %s missing", s->name);
        if (!x) continue;
        CHECK(x->type == s->type && x->n_dims == s->n_dims, "%s: type %d dims %d", s->name, x->type, x->n_dims);
        for (int d = 0; d < 4; d++) CHECK(x->ne[d] == s->ne[d], "%s: ne[%d] = %lld", s->name, d, (long long)x->ne[d]);
        const size_t nb = spec_nbytes(s);
        CHECK(x->nbytes == nb, "%s: nbytes %zu, expected %zu", s->name, x->nbytes, nb);
        const size_t off = (size_t)((const uint8_t *)x->data - g.map.data) - g.data_offset;
        CHECK(off == expect_off, "%s: offset %zu, expected %zu", s->name, off, expect_off);
        int bad = 0;
        for (size_t i = 0; i < nb && i < x->nbytes; i++) bad += ((const uint8_t *)x->data)[i] != byte_pattern(t, i);
        CHECK(bad == 0, "%s: %d data bytes differ", s->name, bad);
        expect_off = (expect_off + nb + g.alignment - 1) / g.alignment * g.alignment;
    }
    /* the file ends with the last tensor's padding */
    CHECK(g.map.size == g.data_offset + expect_off, "file size %zu, expected %zu", g.map.size,
          g.data_offset + expect_off);
    /* header bytes by hand: magic, version, counts, then the first key */
    const uint8_t *b = g.map.data;
    CHECK(memcmp(b, "GGUF\x03\x00\x00\x00", 8) == 0, "magic/version bytes");
    CHECK(b[8] == N_SPEC_TENSORS && b[16] == N_SPEC_KV(alignment), "count bytes %u %u", b[8], b[16]);
    CHECK(b[24] == 20 && memcmp(b + 32, "general.architecture", 20) == 0 && b[52] == SQZ_GGUF_STRING,
          "first key bytes");
    sqz_gguf_close(&g);
}

static void test_roundtrip(void) {
    sqz_err err = {{0}};
    char *path = tu_tmp("test_gguf_write.gguf");
    static const size_t chunks[] = {0, 1, 3, 1000, 100000};
    static const uint32_t aligns[] = {0, 64, 1};
    for (int a = 0; a < 3; a++) {
        for (int c = 0; c < 5; c++) {
            CHECK(write_spec(path, aligns[a], chunks[c], &err) == SQZ_OK, "write (align %u chunk %zu): %s", aligns[a],
                  chunks[c], err.msg);
            check_spec_file(path, aligns[a]);
        }
    }
    unlink(path);
    free(path);
}

static void test_failures(void) {
    sqz_err err = {{0}};
    char *path = tu_tmp("test_gguf_write_fail.gguf");
    unlink(path);
    sqz_gguf_writer w;
    const int64_t ne[2] = {64, 2}, bad_ne[1] = {48};
    sqz_gguf_writer_init(&w);
    CHECK(sqz_gguf_set_u32(&w, "general.alignment", 48, &err) == SQZ_ERR && strstr(err.msg, "power of two"),
          "alignment 48 accepted: %s", err.msg);
    CHECK(sqz_gguf_set_u8(&w, "k", 1, &err) == SQZ_OK, "%s", err.msg);
    CHECK(sqz_gguf_set_u8(&w, "k", 2, &err) == SQZ_ERR && strstr(err.msg, "'k'"), "duplicate key accepted: %s",
          err.msg);
    CHECK(sqz_gguf_set_str(&w, "", "x", &err) == SQZ_ERR, "empty key accepted");
    CHECK(sqz_gguf_set_arr(&w, "arr", SQZ_GGUF_STRING, "x", 1, &err) == SQZ_ERR, "string via set_arr accepted");
    CHECK(sqz_gguf_add_tensor(&w, "t", SQZ_TYPE_Q8_0, 2, ne, &err) == SQZ_OK, "%s", err.msg);
    CHECK(sqz_gguf_add_tensor(&w, "t", SQZ_TYPE_Q8_0, 2, ne, &err) == SQZ_ERR, "duplicate tensor accepted");
    CHECK(sqz_gguf_add_tensor(&w, "u", SQZ_TYPE_Q8_0, 1, bad_ne, &err) == SQZ_ERR && strstr(err.msg, "u"),
          "row of 48 for Q8_0 accepted: %s", err.msg);
    CHECK(sqz_gguf_add_tensor(&w, "v", 999, 1, ne, &err) == SQZ_ERR, "unknown type accepted");
    CHECK(sqz_gguf_add_tensor(&w, "w", SQZ_TYPE_F32, 5, ne, &err) == SQZ_ERR, "5 dims accepted");
    CHECK(sqz_gguf_add_tensor(&w, "x234567890123456789012345678901234567890123456789012345678901234", SQZ_TYPE_F32, 1,
                              ne, &err) == SQZ_ERR,
          "64-byte name accepted");
    CHECK(sqz_gguf_set_u32(&w, "general.alignment", 64, &err) == SQZ_ERR, "alignment after a tensor accepted");
    /* too few bytes: write_end fails and leaves no file */
    uint8_t buf[200] = {0};
    CHECK(sqz_gguf_write_begin(&w, path, &err) == SQZ_OK, "%s", err.msg);
    CHECK(sqz_gguf_set_u8(&w, "late", 1, &err) == SQZ_ERR, "key after write_begin accepted");
    CHECK(sqz_gguf_write_data(&w, buf, 100, &err) == SQZ_OK, "%s", err.msg);
    CHECK(sqz_gguf_write_end(&w, &err) == SQZ_ERR && strstr(err.msg, "100 of its 136"), "short tensor accepted: %s",
          err.msg);
    CHECK(access(path, F_OK) != 0, "a failed write left %s", path);
    sqz_gguf_writer_free(&w);
    /* too many bytes */
    sqz_gguf_writer_init(&w);
    CHECK(sqz_gguf_add_tensor(&w, "t", SQZ_TYPE_Q8_0, 2, ne, &err) == SQZ_OK, "%s", err.msg);
    CHECK(sqz_gguf_write_begin(&w, path, &err) == SQZ_OK, "%s", err.msg);
    CHECK(sqz_gguf_write_data(&w, buf, 137, &err) == SQZ_ERR && strstr(err.msg, "beyond"), "extra bytes accepted: %s",
          err.msg);
    sqz_gguf_writer_free(&w); /* abandoned: removes the temporary file */
    CHECK(access(path, F_OK) != 0, "an abandoned write left %s", path);
    /* an unwritable path fails at begin */
    sqz_gguf_writer_init(&w);
    CHECK(sqz_gguf_write_begin(&w, "/nonexistent-dir/x.gguf", &err) == SQZ_ERR, "unwritable path accepted");
    sqz_gguf_writer_free(&w);
    free(path);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--emit") == 0) {
        sqz_err err = {{0}};
        if (write_spec(argv[2], 64, 1000, &err) != SQZ_OK) {
            fprintf(stderr, "test_gguf_write --emit: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    test_roundtrip();
    test_failures();
    return tu_done("test_gguf_write");
}

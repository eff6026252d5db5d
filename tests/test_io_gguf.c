/* GGUF reader: a valid file built in memory (tu_gguf.h) is parsed and checked field by
 * field, then broken in each way the parser must catch (message checked for the field),
 * truncated at every length, and real vocab GGUFs from ../shared/tokenizers are opened. */
#include <math.h>
#include <string.h>

#include "sqz/io.h"
#include "testutil.h"
#include "tu_gguf.h"

typedef struct valid {
    tbuf b;
    size_t pos_version, pos_n_tensors, pos_n_kv, pos_key0_len, pos_align_val, pos_f32_type, pos_arr_elem_type;
    size_t pos_arr_n, pos_u8_key, pos_t_ndims[3], pos_t_ne[3], pos_t_type[3], pos_t_name[3];
} valid;

static const char *tok_strs[] = {"a", "bc", "", "def"};

/* Builds the reference file. alignment: value of general.alignment (32 for the default). */
static void build(valid *v, uint32_t version) {
    memset(v, 0, sizeof *v);
    tbuf *b = &v->b;
    tb_put(b, "GGUF", 4);
    v->pos_version = b->n;
    tb_u32(b, version);
    v->pos_n_tensors = b->n;
    tb_u64(b, 3);
    v->pos_n_kv = b->n;
    tb_u64(b, 17);
    v->pos_key0_len = b->n;
    kv_str(b, "general.architecture", "llama");
    tb_str(b, "general.alignment");
    tb_u32(b, 4);
    v->pos_align_val = b->n;
    tb_u32(b, 32);
    v->pos_u8_key = b->n;
    tb_str(b, "test.u8"); tb_u32(b, 0); tb_u8(b, 200);
    tb_str(b, "test.i8"); tb_u32(b, 1); tb_u8(b, (uint8_t)-3);
    tb_str(b, "test.u16"); tb_u32(b, 2); tb_u8(b, 0x60); tb_u8(b, 0xea); /* 60000 */
    tb_str(b, "test.i16"); tb_u32(b, 3); tb_u8(b, 0xd0); tb_u8(b, 0x8a); /* -30000 */
    kv_u32(b, "test.u32", 4000000000u);
    kv_i32(b, "test.i32", -2000000000);
    v->pos_f32_type = b->n + 8 + strlen("test.f32");
    kv_f32(b, "test.f32", 1.5f);
    tb_str(b, "test.bool"); tb_u32(b, 7); tb_u8(b, 1);
    tb_str(b, "test.u64"); tb_u32(b, 10); tb_u64(b, (1ull << 63) + 5);
    tb_str(b, "test.i64"); tb_u32(b, 11); tb_u64(b, (uint64_t)(int64_t)-5000000000000000ll);
    {
        double d = 0.25;
        uint64_t u;
        memcpy(&u, &d, 8);
        tb_str(b, "test.f64"); tb_u32(b, 12); tb_u64(b, u);
    }
    v->pos_arr_elem_type = b->n + 8 + strlen("tokenizer.ggml.tokens") + 4;
    v->pos_arr_n = v->pos_arr_elem_type + 4;
    kv_arr_str(b, "tokenizer.ggml.tokens", tok_strs, 4);
    int32_t ff[2] = {64, 32};
    kv_arr_i32(b, "llama.feed_forward_length", ff, 2);
    tb_str(b, "test.arr_f32"); tb_u32(b, 9); tb_u32(b, 6); tb_u64(b, 2);
    {
        float f[2] = {1.0f, -2.0f};
        uint32_t u[2];
        memcpy(u, f, 8);
        tb_u32(b, u[0]);
        tb_u32(b, u[1]);
    }
    kv_str(b, "test.empty", "");

    static const char *names[3] = {"a.weight", "b.weight", "c.weight"};
    int64_t ne[3][2] = {{4, 2}, {32, 2}, {8, 1}};
    int nd[3] = {2, 2, 1};
    uint32_t type[3] = {0, 8, 1};
    uint64_t off[3] = {0, 32, 128};
    for (int i = 0; i < 3; i++) {
        v->pos_t_name[i] = b->n + 8;
        v->pos_t_ndims[i] = b->n + 8 + strlen(names[i]);
        v->pos_t_ne[i] = v->pos_t_ndims[i] + 4;
        v->pos_t_type[i] = ti_add(b, names[i], nd[i], ne[i], type[i], off[i]);
    }
    tb_pad(b, 32);
    /* data: a = 0..7 (f32), b = two Q8_0 blocks (d = 0.5, q = j - 16), c = f16 1.0 .. 8.0 */
    for (int i = 0; i < 8; i++) {
        float f = (float)i;
        uint32_t u;
        memcpy(&u, &f, 4);
        tb_u32(b, u);
    }
    for (int blk = 0; blk < 2; blk++) {
        tb_u8(b, 0x00);
        tb_u8(b, 0x38);
        for (int j = 0; j < 32; j++) tb_u8(b, (uint8_t)(int8_t)(j - 16 + blk));
    }
    tb_pad(b, 32);
    for (int i = 0; i < 8; i++) {
        uint16_t h = sqz_f32_to_f16((float)(i + 1));
        tb_u8(b, (uint8_t)h);
        tb_u8(b, (uint8_t)(h >> 8));
    }
}

/* Parses a copy (exact size, so ASan sees any read past the end) and expects failure
 * with `want` (and the path) in the message. */
static void expect_fail(const uint8_t *data, size_t n, const char *want, const char *label) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, data, n);
    sqz_gguf g;
    sqz_err err = {{0}};
    int rc = sqz_gguf_parse(&g, copy, n, "mem.gguf", &err);
    CHECK(rc == SQZ_ERR, "%s: parse should fail", label);
    if (rc == SQZ_ERR) {
        CHECK(strstr(err.msg, "mem.gguf") != NULL, "%s: message names the file: %s", label, err.msg);
        CHECK(!want || strstr(err.msg, want) != NULL, "%s: message '%s' lacks '%s'", label, err.msg, want);
    } else {
        sqz_gguf_close(&g);
    }
    sqz_gguf_close(&g); /* safe on the zeroed object a failed parse leaves */
    free(copy);
}

static void test_valid(uint32_t version) {
    valid v;
    build(&v, version);
    sqz_gguf g;
    sqz_err err = {{0}};
    int rc = sqz_gguf_parse(&g, v.b.p, v.b.n, "mem.gguf", &err);
    CHECK(rc == SQZ_OK, "v%u: parse: %s", version, err.msg);
    if (rc != SQZ_OK) {
        free(v.b.p);
        return;
    }
    CHECK(g.version == version && g.n_kv == 17 && g.n_tensors == 3 && g.alignment == 32, "header fields");
    CHECK(strcmp(g.path, "mem.gguf") == 0, "path");
    int64_t i64;
    double f64;
    const char *s;
    CHECK(sqz_gguf_get_str(&g, "general.architecture", &s, &err) == SQZ_OK && strcmp(s, "llama") == 0, "arch");
    CHECK(sqz_gguf_get_i64(&g, "test.u8", &i64, &err) == SQZ_OK && i64 == 200, "u8");
    CHECK(sqz_gguf_get_i64(&g, "test.i8", &i64, &err) == SQZ_OK && i64 == -3, "i8");
    CHECK(sqz_gguf_get_i64(&g, "test.u16", &i64, &err) == SQZ_OK && i64 == 60000, "u16");
    CHECK(sqz_gguf_get_i64(&g, "test.i16", &i64, &err) == SQZ_OK && i64 == -30000, "i16");
    CHECK(sqz_gguf_get_i64(&g, "test.u32", &i64, &err) == SQZ_OK && i64 == 4000000000ll, "u32");
    CHECK(sqz_gguf_get_i64(&g, "test.i32", &i64, &err) == SQZ_OK && i64 == -2000000000ll, "i32");
    CHECK(sqz_gguf_get_i64(&g, "test.bool", &i64, &err) == SQZ_OK && i64 == 1, "bool");
    CHECK(sqz_gguf_get_i64(&g, "test.i64", &i64, &err) == SQZ_OK && i64 == -5000000000000000ll, "i64");
    CHECK(sqz_gguf_get_i64(&g, "test.u64", &i64, &err) == SQZ_ERR && strstr(err.msg, "test.u64"),
          "u64 above INT64_MAX: %s", err.msg);
    const sqz_gguf_kv *kv = sqz_gguf_find(&g, "test.u64");
    CHECK(kv && kv->type == SQZ_GGUF_UINT64 && kv->u64 == (1ull << 63) + 5, "u64 value");
    CHECK(sqz_gguf_get_f64(&g, "test.f32", &f64, &err) == SQZ_OK && f64 == 1.5, "f32");
    CHECK(sqz_gguf_get_f64(&g, "test.f64", &f64, &err) == SQZ_OK && f64 == 0.25, "f64");
    CHECK(sqz_gguf_get_str(&g, "test.empty", &s, &err) == SQZ_OK && s[0] == 0, "empty string");
    CHECK(sqz_gguf_get_i64(&g, "test.f32", &i64, &err) == SQZ_ERR && strstr(err.msg, "test.f32") &&
              strstr(err.msg, "FLOAT32"),
          "type mismatch: %s", err.msg);
    CHECK(sqz_gguf_get_str(&g, "test.u8", &s, &err) == SQZ_ERR && strstr(err.msg, "expected STRING"), "str: %s",
          err.msg);
    CHECK(sqz_gguf_get_i64(&g, "no.such", &i64, &err) == SQZ_ERR && strstr(err.msg, "no.such: missing"),
          "missing: %s", err.msg);
    kv = sqz_gguf_find(&g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->type == SQZ_GGUF_ARRAY && kv->arr_type == SQZ_GGUF_STRING && kv->arr_n == 4, "string array");
    if (kv && kv->arr_n == 4)
        for (int i = 0; i < 4; i++) CHECK(strcmp(kv->arr_str[i], tok_strs[i]) == 0, "token %d", i);
    kv = sqz_gguf_find(&g, "llama.feed_forward_length");
    CHECK(kv && kv->arr_type == SQZ_GGUF_INT32 && kv->arr_n == 2 && ((int32_t *)kv->arr)[1] == 32, "int array");
    kv = sqz_gguf_find(&g, "test.arr_f32");
    CHECK(kv && kv->arr_type == SQZ_GGUF_FLOAT32 && kv->arr_n == 2 && ((float *)kv->arr)[1] == -2.0f, "float array");
    CHECK(strcmp(sqz_gguf_type_name(SQZ_GGUF_FLOAT64), "FLOAT64") == 0 && strcmp(sqz_gguf_type_name(99), "unknown") == 0,
          "type names");

    const sqz_tensor *a = sqz_gguf_find_tensor(&g, "a.weight"), *bt = sqz_gguf_find_tensor(&g, "b.weight"),
                     *c = sqz_gguf_find_tensor(&g, "c.weight");
    CHECK(a && bt && c && !sqz_gguf_find_tensor(&g, "d.weight"), "find tensors");
    if (a && bt && c) {
        CHECK(a->type == SQZ_TYPE_F32 && a->n_dims == 2 && a->ne[0] == 4 && a->ne[1] == 2 && a->ne[2] == 1 &&
                  a->nbytes == 32,
              "a shape");
        CHECK(bt->type == SQZ_TYPE_Q8_0 && bt->ne[0] == 32 && bt->nbytes == 68, "b shape");
        CHECK(c->type == SQZ_TYPE_F16 && c->n_dims == 1 && c->ne[0] == 8 && c->ne[1] == 1 && c->nbytes == 16, "c shape");
        CHECK((const uint8_t *)a->data == v.b.p + g.data_offset && g.data_offset % 32 == 0, "data offset");
        CHECK((const uint8_t *)c->data + c->nbytes == v.b.p + v.b.n, "c ends the file");
        float out[64];
        CHECK(sqz_tensor_rows_f32(a, 1, 1, out, &err) == SQZ_OK && out[0] == 4.0f && out[3] == 7.0f, "a row 1");
        CHECK(sqz_tensor_rows_f32(bt, 0, 2, out, &err) == SQZ_OK && out[0] == -8.0f && out[32] == -7.5f && out[33] == -7.0f, "b rows");
        CHECK(sqz_tensor_rows_f32(c, 0, 1, out, &err) == SQZ_OK && out[7] == 8.0f, "c row");
    }
    sqz_gguf_close(&g);
    free(v.b.p);
}

static void test_bad(void) {
    valid v;
    build(&v, 3);
    tbuf *b = &v.b;
    uint8_t *orig = malloc(b->n);
    memcpy(orig, b->p, b->n);
#define RESET() memcpy(b->p, orig, b->n)

    RESET(); b->p[0] = 'X';
    expect_fail(b->p, b->n, "magic", "bad magic");
    RESET(); tb_set_u32(b, v.pos_version, 1);
    expect_fail(b->p, b->n, "version", "version 1");
    RESET(); tb_set_u32(b, v.pos_version, 4);
    expect_fail(b->p, b->n, "version", "version 4");
    RESET(); tb_set_u64(b, v.pos_n_tensors, 1ull << 40);
    expect_fail(b->p, b->n, "n_tensors", "n_tensors lie");
    RESET(); tb_set_u64(b, v.pos_n_kv, UINT64_MAX);
    expect_fail(b->p, b->n, "n_kv", "n_kv lie");
    RESET(); tb_set_u64(b, v.pos_n_kv, 18); /* one more than there are: the tensor infos get misread */
    expect_fail(b->p, b->n, NULL, "n_kv off by one");
    RESET(); tb_set_u64(b, v.pos_n_tensors, 4);
    expect_fail(b->p, b->n, NULL, "n_tensors off by one");
    RESET(); tb_set_u64(b, v.pos_key0_len, 1ull << 62);
    expect_fail(b->p, b->n, "string length", "key length past end");
    RESET(); tb_set_u64(b, v.pos_arr_n + 8, 1ull << 40); /* first token's length */
    expect_fail(b->p, b->n, "tokenizer.ggml.tokens", "array string length past end");
    RESET(); tb_set_u32(b, v.pos_f32_type, 13);
    expect_fail(b->p, b->n, "test.f32: unknown value type 13", "unknown KV type");
    RESET(); tb_set_u32(b, v.pos_arr_elem_type, 9);
    expect_fail(b->p, b->n, "arrays of arrays", "nested arrays");
    RESET(); tb_set_u32(b, v.pos_arr_elem_type, 42);
    expect_fail(b->p, b->n, "unknown array element type 42", "unknown array element type");
    RESET(); tb_set_u64(b, v.pos_arr_n, 1ull << 60);
    expect_fail(b->p, b->n, "tokenizer.ggml.tokens: array of", "array count lie");
    RESET(); tb_set_u32(b, v.pos_align_val, 48);
    expect_fail(b->p, b->n, "general.alignment", "alignment not a power of two");
    RESET(); tb_set_u32(b, v.pos_align_val, 0);
    expect_fail(b->p, b->n, "general.alignment", "alignment 0");
    RESET(); tb_set_u32(b, v.pos_align_val - 4, 8); /* general.alignment stored as STRING */
    expect_fail(b->p, b->n, NULL, "alignment of the wrong type");
    RESET(); memcpy(b->p + v.pos_u8_key + 8, "test.i8", 7); /* duplicate key */
    expect_fail(b->p, b->n, "duplicate metadata key 'test.i8'", "duplicate key");
    RESET(); tb_set_u32(b, v.pos_t_type[1], 4);
    expect_fail(b->p, b->n, "tensor 'b.weight': unknown type id 4", "removed type id");
    RESET(); tb_set_u32(b, v.pos_t_type[1], 1000);
    expect_fail(b->p, b->n, "unknown type id 1000", "unknown type id");
    RESET(); tb_set_u32(b, v.pos_t_ndims[0], 5);
    expect_fail(b->p, b->n, "n_dims", "n_dims 5");
    RESET(); tb_set_u64(b, v.pos_t_type[1] + 4, 33);
    expect_fail(b->p, b->n, "not a multiple of the alignment", "unaligned offset");
    RESET(); tb_set_u64(b, v.pos_t_type[2] + 4, 4096);
    expect_fail(b->p, b->n, "past the end", "data past end");
    RESET(); tb_set_u64(b, v.pos_t_type[2] + 4, UINT64_MAX - 31);
    expect_fail(b->p, b->n, NULL, "offset near 2^64");
    RESET(); tb_set_u64(b, v.pos_t_type[1] + 4, 0);
    expect_fail(b->p, b->n, "overlaps", "overlapping tensors");
    RESET(); b->p[v.pos_t_name[1]] = 'a';
    expect_fail(b->p, b->n, "duplicate tensor name 'a.weight'", "duplicate tensor names");
    RESET(); tb_set_u64(b, v.pos_t_ne[0], 1ull << 40); tb_set_u64(b, v.pos_t_ne[0] + 8, 1ull << 40);
    expect_fail(b->p, b->n, "overflow", "ne product overflow");
    RESET(); tb_set_u64(b, v.pos_t_ne[0], (uint64_t)-1);
    expect_fail(b->p, b->n, "negative", "negative ne");
    RESET(); tb_set_u64(b, v.pos_t_ne[1], 48); /* Q8_0 row of 48 values */
    expect_fail(b->p, b->n, "block size", "row not a multiple of the block");
    RESET(); tb_set_u64(b, v.pos_t_ne[0], 1ull << 61); /* F32 row bytes overflow */
    expect_fail(b->p, b->n, NULL, "row bytes overflow");
    RESET(); b->p[v.pos_t_name[2] + 1] = 0; /* NUL inside a tensor name */
    expect_fail(b->p, b->n, "NUL", "NUL in tensor name");

    /* every truncation fails cleanly (c.weight ends the file, so every prefix is short) */
    RESET();
    int bad = 0;
    for (size_t n = 0; n < b->n; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b->p, n);
        sqz_gguf g;
        sqz_err err = {{0}};
        if (sqz_gguf_parse(&g, copy, n, "mem.gguf", &err) != SQZ_ERR || !strstr(err.msg, "mem.gguf")) {
            if (bad++ < 3) CHECK(0, "truncated at %zu: parse did not fail cleanly (%s)", n, err.msg);
            sqz_gguf_close(&g);
        }
        free(copy);
    }
    CHECK(bad == 0, "%d of %zu truncations were accepted", bad, b->n);
    expect_fail(NULL, 0, "magic", "empty input");
#undef RESET
    free(orig);
    free(v.b.p);
}

static void test_shared_vocab(const char *rel, uint64_t n_tokens, const char *model) {
    char *p = tu_shared(rel);
    sqz_gguf g;
    sqz_err err = {{0}};
    int rc = sqz_gguf_open(&g, p, &err);
    CHECK(rc == SQZ_OK, "open %s: %s", p, err.msg);
    if (rc == SQZ_OK) {
        const sqz_gguf_kv *kv = sqz_gguf_find(&g, "tokenizer.ggml.tokens");
        CHECK(kv && kv->type == SQZ_GGUF_ARRAY && kv->arr_type == SQZ_GGUF_STRING && kv->arr_n == n_tokens,
              "%s: %llu tokens", rel, kv ? (unsigned long long)kv->arr_n : 0ull);
        const char *s = NULL;
        CHECK(sqz_gguf_get_str(&g, "tokenizer.ggml.model", &s, &err) == SQZ_OK && strcmp(s, model) == 0,
              "%s: tokenizer model %s", rel, s ? s : err.msg);
        CHECK(strcmp(g.path, p) == 0, "path kept");
    }
    sqz_gguf_close(&g);
    free(p);
    rc = sqz_gguf_open(&g, "/nonexistent/x.gguf", &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "/nonexistent/x.gguf"), "missing file: %s", err.msg);
}

/* The default model (written by llama.cpp's converter) against gguf-py's reading of it
 * (tests/fixtures/quant/smollm2_gguf_py.txt, made by tests/py/make_quant_fixture.py). */
static void test_smollm2(void) {
    char *model = tu_default_model();
    char *ipath = tu_fixture("quant/smollm2_gguf_py.txt");
    FILE *fi = fopen(ipath, "r");
    CHECK(model != NULL, "default model not found (scripts/default_model.sh)");
    CHECK(fi != NULL, "cannot open %s", ipath);
    sqz_gguf g;
    sqz_err err = {{0}};
    int rc = model ? sqz_gguf_open(&g, model, &err) : SQZ_ERR;
    CHECK(rc == SQZ_OK, "open %s: %s", model ? model : "?", err.msg);
    if (rc != SQZ_OK || !fi) goto out;
    char line[4096];
    int n_tensor_lines = 0, n_rows = 0, n_kv_lines = 0;
    while (fgets(line, sizeof line, fi)) {
        char name[256];
        long long a, b2, c, d, e;
        unsigned long long off, nb;
        int type, nd;
        if (sscanf(line, "file %lld n_kv %lld n_tensors %lld data_offset %lld alignment %lld", &a, &b2, &c, &d, &e) == 5) {
            CHECK((long long)g.map.size == a, "model size %zu, fixture made from %lld bytes (regenerate it)", g.map.size, a);
            CHECK(g.n_kv == b2 && g.n_tensors == c && (long long)g.data_offset == d && (long long)g.alignment == e,
                  "header: kv %lld tensors %lld data_offset %zu alignment %zu", (long long)g.n_kv,
                  (long long)g.n_tensors, g.data_offset, g.alignment);
        } else if (sscanf(line, "kvi %255s %lld", name, &a) == 2 && strncmp(line, "kvi", 3) == 0) {
            int64_t v = -1;
            n_kv_lines++;
            CHECK(sqz_gguf_get_i64(&g, name, &v, &err) == SQZ_OK && v == a, "%s = %lld, gguf-py %lld", name, (long long)v, a);
        } else if (strncmp(line, "kvf ", 4) == 0) {
            char hex[64];
            double v = 0;
            n_kv_lines++;
            if (sscanf(line, "kvf %255s %63s", name, hex) == 2)
                CHECK(sqz_gguf_get_f64(&g, name, &v, &err) == SQZ_OK && (float)v == (float)strtod(hex, NULL),
                      "%s = %.9g, gguf-py %s", name, v, hex);
        } else if (sscanf(line, "tensor %255s %d %d %lld %lld %lld %lld %llu %llu", name, &type, &nd, &a, &b2, &c, &d,
                          &off, &nb) == 9) {
            n_tensor_lines++;
            const sqz_tensor *t = sqz_gguf_find_tensor(&g, name);
            CHECK(t != NULL, "tensor %s missing", name);
            if (t)
                CHECK(t->type == type && t->n_dims == nd && t->ne[0] == a && t->ne[1] == b2 && t->ne[2] == c &&
                          t->ne[3] == d && (const uint8_t *)t->data == g.map.data + off && t->nbytes == nb,
                      "tensor %s: type %d dims %d ne %lld %lld offset %td bytes %zu", name, t->type, t->n_dims,
                      (long long)t->ne[0], (long long)t->ne[1], (const uint8_t *)t->data - g.map.data, t->nbytes);
        } else if (strncmp(line, "row ", 4) == 0) {
            long long row;
            int pos = 0;
            if (sscanf(line, "row %255s %lld %n", name, &row, &pos) < 2) continue;
            const sqz_tensor *t = sqz_gguf_find_tensor(&g, name);
            if (!t) continue;
            float *buf = malloc((size_t)t->ne[0] * sizeof *buf);
            rc = sqz_tensor_rows_f32(t, row, 1, buf, &err);
            CHECK(rc == SQZ_OK, "%s row %lld: %s", name, row, err.msg);
            char *q = line + pos;
            for (int i = 0; i < 12 && rc == SQZ_OK; i++) {
                float want = strtof(q, &q);
                int64_t k = i < 8 ? i : t->ne[0] - 12 + i;
                CHECK(buf[k] == want, "%s row %lld [%lld]: sqz %a, gguf-py %a", name, row, (long long)k, buf[k], want);
            }
            free(buf);
            n_rows++;
        }
    }
    CHECK(n_tensor_lines == 272 && n_rows == 3 && n_kv_lines >= 10, "fixture lines: %d tensors, %d rows, %d kv",
          n_tensor_lines, n_rows, n_kv_lines);
out:
    if (rc == SQZ_OK) sqz_gguf_close(&g);
    if (fi) fclose(fi);
    free(model);
    free(ipath);
}

int main(void) {
    test_valid(3);
    test_valid(2);
    test_bad();
    test_shared_vocab("tokenizers/ggml-vocab-llama-spm.gguf", 32000, "llama");
    test_shared_vocab("tokenizers/ggml-vocab-gpt-2.gguf", 50257, "gpt2");
    test_smollm2();
    return tu_done("test_io_gguf");
}

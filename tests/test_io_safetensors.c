/* safetensors reader and Hugging Face folders: a valid file built in memory, each kind
 * of broken header (message must name the field), truncation at every length, the real
 * stories260K model, and sharded/broken folders written to $SQZ_TMP. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "sqz/io.h"
#include "testutil.h"
#include "tu_gguf.h"

/* header JSON + data bytes -> file image (8-byte length, header, data) */
static tbuf st_image(const char *json, size_t data_len) {
    tbuf b = {0};
    tb_u64(&b, strlen(json));
    tb_put(&b, json, strlen(json));
    for (size_t i = 0; i < data_len; i++) tb_u8(&b, (uint8_t)i);
    return b;
}

#define GOOD_JSON                                                                      \
    "{\"__metadata__\":{\"format\":\"pt\"},"                                           \
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"               \
    "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"                \
    "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,2,2],\"data_offsets\":[32,40]},"           \
    "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[40,40]}}"

static void expect_fail_img(const uint8_t *p, size_t n, const char *want, const char *label) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, p, n);
    sqz_st_file f;
    sqz_err err = {{0}};
    int rc = sqz_st_parse(&f, copy, n, "mem.safetensors", &err);
    CHECK(rc == SQZ_ERR, "%s: parse should fail", label);
    if (rc == SQZ_ERR) {
        CHECK(strstr(err.msg, "mem.safetensors") != NULL, "%s: message names the file: %s", label, err.msg);
        CHECK(!want || strstr(err.msg, want), "%s: message '%s' lacks '%s'", label, err.msg, want);
        CHECK(f.n_tensors == 0 && f.tensors == NULL, "%s: nothing left allocated", label);
    }
    sqz_st_close(&f);
    free(copy);
}

static void expect_fail_json(const char *json, size_t data_len, const char *want, const char *label) {
    tbuf b = st_image(json, data_len);
    expect_fail_img(b.p, b.n, want, label);
    free(b.p);
}

static void test_valid(void) {
    tbuf b = st_image(GOOD_JSON, 40);
    sqz_st_file f;
    sqz_err err = {{0}};
    int rc = sqz_st_parse(&f, b.p, b.n, "mem.safetensors", &err);
    CHECK(rc == SQZ_OK, "parse: %s", err.msg);
    if (rc == SQZ_OK) {
        CHECK(f.n_tensors == 4, "4 tensors (metadata skipped), got %lld", (long long)f.n_tensors);
        const sqz_tensor *a = sqz_st_find(&f, "a"), *bt = sqz_st_find(&f, "b"), *c = sqz_st_find(&f, "c"),
                         *e = sqz_st_find(&f, "e");
        CHECK(a && bt && c && e && !sqz_st_find(&f, "__metadata__") && !sqz_st_find(&f, "d"), "find");
        size_t data0 = 8 + strlen(GOOD_JSON);
        if (a && bt && c && e) {
            CHECK(a->type == SQZ_TYPE_F32 && a->n_dims == 2 && a->ne[0] == 3 && a->ne[1] == 2 && a->ne[2] == 1 &&
                      a->nbytes == 24 && (const uint8_t *)a->data == b.p + data0,
                  "a: ggml order ne = [3, 2]");
            CHECK(bt->type == SQZ_TYPE_F16 && bt->n_dims == 1 && bt->ne[0] == 4 && bt->ne[1] == 1 &&
                      (const uint8_t *)bt->data == b.p + data0 + 24,
                  "b");
            CHECK(c->type == SQZ_TYPE_BF16 && c->n_dims == 3 && c->ne[0] == 2 && c->ne[1] == 2 && c->ne[2] == 1, "c");
            CHECK(e->nbytes == 0 && e->ne[0] == 5 && e->ne[1] == 0 && sqz_tensor_nelements(e) == 0, "empty tensor");
            float out[6];
            /* a's bytes are 0..23: element 0 is the float with bytes 00 01 02 03 */
            uint8_t raw[4] = {0, 1, 2, 3};
            float want;
            memcpy(&want, raw, 4);
            CHECK(sqz_tensor_rows_f32(a, 0, 2, out, &err) == SQZ_OK && memcmp(&out[0], &want, 4) == 0, "a data");
        }
    }
    sqz_st_close(&f);
    free(b.p);
}

static void test_bad(void) {
    expect_fail_img((const uint8_t *)"\x05\0\0\0\0\0\0", 7, "shorter than", "7-byte file");
    expect_fail_img(NULL, 0, "shorter than", "empty file");
    {
        tbuf b = st_image(GOOD_JSON, 40);
        tb_set_u64(&b, 0, b.n - 7);
        expect_fail_img(b.p, b.n, "header length", "header length past end");
        tb_set_u64(&b, 0, 1ull << 62);
        expect_fail_img(b.p, b.n, "absurd", "absurd header length");
        tb_set_u64(&b, 0, 0);
        expect_fail_img(b.p, b.n, "header", "empty header");
        free(b.p);
    }
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",", 0, "not valid JSON", "truncated JSON");
    expect_fail_json("[1,2,3]", 0, "expected a JSON object", "array header");
    expect_fail_json("{\"a\":5}", 0, "tensor 'a': expected an object", "entry not an object");
    expect_fail_json("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-string dtype",
                     "missing dtype");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-array shape",
                     "missing shape");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a': missing or non-array data_offsets",
                     "missing data_offsets");
    expect_fail_json("{\"x\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                     "unsupported dtype 'I64' for tensor 'x'", "I64");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "data_offsets",
                     "begin > end");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets", "one offset");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 9, "data_offsets",
                     "three offsets");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "data_offsets",
                     "negative offset");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 8, "data_offsets",
                     "string offset");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8]}}", 8, "data_offsets",
                     "fractional offset");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12,
                     "tensor 'a' data_offsets [0, 16) exceed data size 12", "end past data");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,24]}}", 24, "tensor 'a'",
                     "size != shape product");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000000000000,1000000000000000],\"data_offsets\":[0,8]}}",
                     8, "overflow", "shape product overflow");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8, "tensor 'a'",
                     "element bytes overflow");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]",
                     "negative dim");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "5 dims",
                     "too many dims");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]}}",
                     20, "overlap", "overlapping tensors");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                     "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                     "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]}}",
                     20, "overlap", "overlap hidden behind an empty tensor");
    expect_fail_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                     8, "duplicate tensor name 'a'", "duplicate names");
    expect_fail_json("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__", "metadata value not a string");

    /* truncation at every length: the last tensor ends the file */
    tbuf b = st_image(GOOD_JSON, 40);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        if (n) memcpy(copy, b.p, n);
        sqz_st_file f;
        sqz_err err = {{0}};
        if (sqz_st_parse(&f, copy, n, "mem.safetensors", &err) != SQZ_ERR || !strstr(err.msg, "mem.safetensors")) {
            if (bad++ < 3) CHECK(0, "truncated at %zu accepted (%s)", n, err.msg);
            sqz_st_close(&f);
        }
        free(copy);
    }
    CHECK(bad == 0, "%d of %zu truncations accepted", bad, b.n);
    free(b.p);
}

static void test_stories(void) {
    char *p = tu_shared("models/stories260K/model.safetensors");
    sqz_st_file f;
    sqz_err err = {{0}};
    int rc = sqz_st_open(&f, p, &err);
    CHECK(rc == SQZ_OK, "open %s: %s", p, err.msg);
    if (rc == SQZ_OK) {
        /* 5 layers x 9 + embed + norm + lm_head (safetensors' own listing: 48) */
        CHECK(f.n_tensors == 48, "stories260K: %lld tensors", (long long)f.n_tensors);
        const sqz_tensor *e = sqz_st_find(&f, "model.embed_tokens.weight");
        const sqz_tensor *d = sqz_st_find(&f, "model.layers.4.mlp.down_proj.weight");
        const sqz_tensor *n = sqz_st_find(&f, "model.layers.0.input_layernorm.weight");
        const sqz_tensor *k = sqz_st_find(&f, "model.layers.2.self_attn.k_proj.weight");
        CHECK(e && e->type == SQZ_TYPE_F32 && e->ne[0] == 64 && e->ne[1] == 512, "embed [512,64] -> ne [64,512]");
        CHECK(d && d->ne[0] == 172 && d->ne[1] == 64, "down_proj [64,172] -> ne [172,64]");
        CHECK(n && n->n_dims == 1 && n->ne[0] == 64, "norm [64]");
        CHECK(k && k->ne[0] == 64 && k->ne[1] == 32, "k_proj (4 kv heads x 8) -> ne [64,32]");
    }
    sqz_st_close(&f);
    free(p);
    CHECK(sqz_st_open(&f, "/nonexistent/m.safetensors", &err) == SQZ_ERR && strstr(err.msg, "/nonexistent"),
          "missing file: %s", err.msg);
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

static void write_json(const char *dir, const char *name, const char *text) {
    char *p = join(dir, name);
    write_file(p, text, strlen(text));
    free(p);
}

static void write_st(const char *dir, const char *name, const char *json, size_t data_len) {
    tbuf b = st_image(json, data_len);
    char *p = join(dir, name);
    write_file(p, b.p, b.n);
    free(p);
    free(b.p);
}

static void test_hf(void) {
    sqz_hf h;
    sqz_err err = {{0}};
    char *dir = tu_shared("models/stories260K");
    int rc = sqz_hf_open(&h, dir, &err);
    CHECK(rc == SQZ_OK, "hf open %s: %s", dir, err.msg);
    if (rc == SQZ_OK) {
        CHECK(h.n_shards == 1 && h.config_json && strstr(h.config_json, "LlamaForCausalLM") &&
                  h.config_len == strlen(h.config_json),
              "config text kept");
        CHECK(sqz_hf_find(&h, "lm_head.weight") != NULL && sqz_hf_find(&h, "nope") == NULL, "hf find");
    }
    sqz_hf_close(&h);
    sqz_hf_close(&h); /* twice is fine */
    free(dir);

    /* a sharded folder: two shards, index naming both */
    char *sh = tu_tmp("io_hf_sharded");
    mkdir(sh, 0755);
    write_json(sh, "config.json", "{\"architectures\":[\"LlamaForCausalLM\"]}");
    write_st(sh, "model-00001-of-00002.safetensors",
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"y\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]}}",
             12);
    write_st(sh, "model-00002-of-00002.safetensors", "{\"z\":{\"dtype\":\"BF16\",\"shape\":[3,1],\"data_offsets\":[0,6]}}",
             6);
    write_json(sh, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":18},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
               "\"z\":\"model-00002-of-00002.safetensors\",\"y\":\"model-00001-of-00002.safetensors\"}}");
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_OK, "sharded open: %s", err.msg);
    if (rc == SQZ_OK) {
        CHECK(h.n_shards == 2, "each shard opened once: %d", h.n_shards);
        const sqz_tensor *z = sqz_hf_find(&h, "z");
        CHECK(sqz_hf_find(&h, "x") && sqz_hf_find(&h, "y") && z && z->type == SQZ_TYPE_BF16 && z->ne[0] == 1 &&
                  z->ne[1] == 3,
              "tensors from both shards");
    }
    sqz_hf_close(&h);

    /* index names a tensor its shard lacks */
    write_json(sh, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\",\"w\":\"model-00002-of-00002.safetensors\"}}");
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "'w'") && strstr(err.msg, "model-00002-of-00002.safetensors"),
          "missing tensor in shard: %s", err.msg);
    sqz_hf_close(&h);
    /* index names a shard that does not exist */
    write_json(sh, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"model-00009.safetensors\"}}");
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "model-00009.safetensors"), "missing shard: %s", err.msg);
    /* shard names must stay in the folder */
    write_json(sh, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"../model.safetensors\"}}");
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "weight_map"), "shard outside folder: %s", err.msg);
    write_json(sh, "model.safetensors.index.json", "{\"weight_map\":[1]}");
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "weight_map"), "weight_map not an object: %s", err.msg);
    write_json(sh, "model.safetensors.index.json", "{\"weight_map\":");
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "index.json") && strstr(err.msg, "JSON"), "bad index JSON: %s", err.msg);

    /* no weights at all */
    char *p = join(sh, "model.safetensors.index.json");
    remove(p);
    free(p);
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, sh) && strstr(err.msg, "model.safetensors"), "no weights: %s", err.msg);
    /* no config.json */
    p = join(sh, "config.json");
    remove(p);
    free(p);
    rc = sqz_hf_open(&h, sh, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "config.json") && strstr(err.msg, sh), "no config: %s", err.msg);
    rc = sqz_hf_open(&h, "/nonexistent/folder", &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "/nonexistent/folder"), "not a folder: %s", err.msg);
    free(sh);
}

int main(void) {
    test_valid();
    test_bad();
    test_stories();
    test_hf();
    return tu_done("test_io_safetensors");
}

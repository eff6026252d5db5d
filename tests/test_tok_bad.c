/* Malformed tokenizer inputs fail with a message naming the file and the field; random
 * bytes encode without error and (byte-level BPE, SPM with byte fallback) decode back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sqz/io.h"
#include "sqz/tok.h"
#include "testutil.h"
#include "tu_gguf.h"

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* Loading must fail and the message must contain each of the given fragments. */
static void expect_json_error(const char *name, const char *json, const char *frag) {
    char *p = tu_tmp(name);
    write_file(p, json, strlen(json));
    sqz_tokenizer *t = NULL;
    sqz_err err = {{0}};
    int rc = sqz_tok_load_hf_json(&t, p, &err);
    CHECK(rc == SQZ_ERR && t == NULL, "%s: loaded", name);
    CHECK(strstr(err.msg, p) && strstr(err.msg, frag), "%s: message '%s' lacks '%s' or the path", name, err.msg, frag);
    sqz_tok_free(t);
    free(p);
}

static void expect_spm_error(const char *name, const void *data, size_t n, const char *frag) {
    char *p = tu_tmp(name);
    write_file(p, data, n);
    sqz_tokenizer *t = NULL;
    sqz_err err = {{0}};
    int rc = sqz_tok_load_spm_model(&t, p, &err);
    CHECK(rc == SQZ_ERR && t == NULL, "%s (%zu bytes): loaded", name, n);
    CHECK(rc == SQZ_OK || (strstr(err.msg, p) && (!frag || strstr(err.msg, frag))), "%s: message '%s' lacks '%s'", name,
          err.msg, frag ? frag : "the path");
    sqz_tok_free(t);
    free(p);
}

static void expect_gguf_error(const char *name, tbuf *b, const char *frag) {
    sqz_gguf g = {0};
    sqz_tokenizer *t = NULL;
    sqz_err err = {{0}};
    int rc = sqz_gguf_parse(&g, b->p, b->n, name, &err);
    CHECK(rc == SQZ_OK, "%s: the test file itself does not parse: %s", name, err.msg);
    if (rc == SQZ_OK) {
        rc = sqz_tok_load_gguf(&t, &g, &err);
        CHECK(rc == SQZ_ERR && t == NULL, "%s: loaded", name);
        CHECK(strstr(err.msg, name) && strstr(err.msg, frag), "%s: message '%s' lacks '%s'", name, err.msg, frag);
    }
    sqz_tok_free(t);
    sqz_gguf_close(&g);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void gguf_begin(tbuf *b, uint64_t n_kv) {
    tb_put(b, "GGUF", 4);
    tb_u32(b, 3);
    tb_u64(b, 0);
    tb_u64(b, n_kv);
}

static void roundtrip_random(const char *what, const sqz_tokenizer *t) {
    uint64_t x = 88172645463325252ull;
    int ok = 0, n = 200;
    for (int it = 0; it < n; it++) {
        char buf[256];
        size_t len = (size_t)(it % 97) + 1;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* a mix of ASCII, spaces and arbitrary (often invalid UTF-8) bytes */
            buf[i] = (char)(x % 3 == 0 ? ' ' : x % 3 == 1 ? 'a' + (x >> 8) % 26 : (x >> 16) & 0xff);
        }
        int32_t *ids = NULL;
        int64_t ni = 0;
        char *back = NULL;
        size_t bl = 0;
        sqz_err err = {{0}};
        int rc = sqz_tok_encode(t, buf, len, 0, &ids, &ni, &err);
        CHECK(rc == SQZ_OK, "%s: %s", what, err.msg);
        rc = rc == SQZ_OK ? sqz_tok_decode(t, ids, ni, &back, &bl, &err) : rc;
        ok += rc == SQZ_OK && bl == len && memcmp(back, buf, len) == 0;
        free(ids);
        free(back);
    }
    CHECK(ok == n, "%s: %d of %d random byte strings round-trip", what, ok, n);
}

int main(void) {
    sqz_err err = {{0}};
    sqz_tokenizer *t = NULL;

    /* ---- tokenizer.json ---- */
    char *missing = tu_tmp("tok_bad_nonexistent/tokenizer.json");
    CHECK(sqz_tok_load_hf_json(&t, missing, &err) == SQZ_ERR && strstr(err.msg, missing), "missing: '%s'", err.msg);
    free(missing);
    expect_json_error("tok_bad_garbled.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", "not valid JSON");
    expect_json_error("tok_bad_array.json", "[1, 2]", "top level");
    expect_json_error("tok_bad_nomodel.json", "{\"version\": \"1.0\"}", "model");
    expect_json_error("tok_bad_unigram.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "Unigram");
    expect_json_error("tok_bad_noverge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "model.merges");
    expect_json_error("tok_bad_id.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}",
                      "model.vocab['a']");
    expect_json_error("tok_bad_dupid.json",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                      "id 0");
    expect_json_error("tok_bad_merge.json",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                      "model.merges[0]");
    expect_json_error("tok_bad_merge2.json",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                      "merges[0]");
    expect_json_error("tok_bad_pre.json",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"Metaspace\"}}",
                      "Metaspace");
    expect_json_error("tok_bad_regex.json",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": "
                      "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, "
                      "\"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\"}]}}",
                      "regex");
    expect_json_error("tok_bad_norm.json",
                      "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                      "\"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                      "NFKC");

    /* ---- folders ---- */
    char *empty = tu_tmp("tok_bad_emptydir");
    mkdir(empty, 0755);
    CHECK(sqz_tok_load_dir(&t, empty, &err) == SQZ_ERR && strstr(err.msg, empty), "empty folder: '%s'", err.msg);
    free(empty);
    CHECK(sqz_tok_load_dir(&t, "/nonexistent/sqz", &err) == SQZ_ERR && strstr(err.msg, "/nonexistent/sqz"),
          "missing folder: '%s'", err.msg);

    /* ---- tokenizer.model: truncations, lies, unsupported kinds ---- */
    char *mp = tu_fixture("tok/spm/tokenizer.model");
    sqz_map m = {0};
    CHECK(sqz_map_open(&m, mp, &err) == SQZ_OK, "%s", err.msg);
    if (m.data) {
        size_t cuts[] = {0, 1, 2, 3, 5, 10, 100, 1000, 4096, m.size / 3, m.size / 2, m.size - 40000};
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++)
            expect_spm_error("tok_bad_trunc.model", m.data, cuts[k], NULL);
        /* the last bytes: any cut must fail cleanly or load (a cut between two whole
         * messages is a valid, smaller model); never crash */
        for (size_t n = m.size - 64; n < m.size; n++) {
            char *p = tu_tmp("tok_bad_tail.model");
            write_file(p, m.data, n);
            if (sqz_tok_load_spm_model(&t, p, &err) == SQZ_OK) sqz_tok_free(t);
            else CHECK(strstr(err.msg, p) != NULL, "tail cut %zu: '%s'", n, err.msg);
            free(p);
        }
        /* a piece whose length runs past the end of the file */
        uint8_t *lie = malloc(m.size);
        memcpy(lie, m.data, m.size);
        CHECK(lie[0] == 0x0a, "first field is pieces");
        lie[1] = 0xff; /* pieces[0]: length varint now huge */
        lie[2] |= 0x80;
        lie[3] = 0x7f;
        expect_spm_error("tok_bad_lie.model", lie, m.size, "exceeds");
        free(lie);
    }
    sqz_map_close(&m);
    free(mp);
    {
        /* pieces { piece "a" } trainer_spec { model_type: UNIGRAM } */
        static const uint8_t uni[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x18, 0x01};
        expect_spm_error("tok_bad_unigram.model", uni, sizeof uni, "UNIGRAM");
        static const uint8_t nopieces[] = {0x12, 0x02, 0x18, 0x02};
        expect_spm_error("tok_bad_nopieces.model", nopieces, sizeof nopieces, "pieces");
        static const uint8_t badtype[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x09, 0x12, 0x02, 0x18, 0x02};
        expect_spm_error("tok_bad_type.model", badtype, sizeof badtype, "pieces[0].type");
        static const uint8_t badvarint[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x01, 0x18};
        expect_spm_error("tok_bad_varint.model", badvarint, sizeof badvarint, "varint");
        static const uint8_t badbos[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x04, 0x18, 0x02, 0xc8, 0x02, 0x05};
        (void)badbos; /* field 41 needs a 2-byte key: built below */
        static const uint8_t bos7[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x05, 0x18, 0x02, 0xc8, 0x02, 0x07};
        expect_spm_error("tok_bad_bos.model", bos7, sizeof bos7, "bos_id");
    }

    /* ---- GGUF metadata ---- */
    tbuf b = {0};
    gguf_begin(&b, 1);
    kv_str(&b, "general.architecture", "llama");
    expect_gguf_error("no_tokenizer.gguf", &b, "tokenizer.ggml.model: missing");
    gguf_begin(&b, 1);
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    expect_gguf_error("no_tokens.gguf", &b, "tokenizer.ggml.tokens: missing");
    const char *toks[3] = {"a", "b", "ab"};
    gguf_begin(&b, 2);
    kv_str(&b, "tokenizer.ggml.model", "bert");
    kv_arr_str(&b, "tokenizer.ggml.tokens", toks, 3);
    expect_gguf_error("bert.gguf", &b, "'bert' is not supported");
    gguf_begin(&b, 2);
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_arr_str(&b, "tokenizer.ggml.tokens", toks, 3);
    expect_gguf_error("no_merges.gguf", &b, "tokenizer.ggml.merges: missing");
    int32_t types[2] = {1, 1};
    gguf_begin(&b, 3);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_arr_str(&b, "tokenizer.ggml.tokens", toks, 3);
    kv_arr_i32(&b, "tokenizer.ggml.token_type", types, 2);
    expect_gguf_error("short_types.gguf", &b, "tokenizer.ggml.token_type: 2 elements");
    gguf_begin(&b, 2);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_u32(&b, "tokenizer.ggml.tokens", 7);
    expect_gguf_error("tokens_not_array.gguf", &b, "tokenizer.ggml.tokens: expected an array");
    gguf_begin(&b, 3);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_arr_str(&b, "tokenizer.ggml.tokens", toks, 3);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 99);
    expect_gguf_error("bos_range.gguf", &b, "bos id 99");
    const char *merges[1] = {"a b"};
    gguf_begin(&b, 4);
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_arr_str(&b, "tokenizer.ggml.tokens", toks, 3);
    kv_arr_str(&b, "tokenizer.ggml.merges", merges, 1);
    kv_str(&b, "tokenizer.ggml.pre", "no-such-pre");
    expect_gguf_error("bad_pre.gguf", &b, "no-such-pre");

    /* ---- decode of ids outside the vocab; random bytes ---- */
    char *jp = tu_fixture("tok/smollm2/tokenizer.json");
    if (sqz_tok_load_hf_json(&t, jp, &err) == SQZ_OK) {
        int32_t bad[2] = {5, 1 << 20};
        char *s = NULL;
        size_t sl = 0;
        CHECK(sqz_tok_decode(t, bad, 2, &s, &sl, &err) == SQZ_ERR && strstr(err.msg, "1048576"), "decode: '%s'", err.msg);
        free(s);
        sqz_tok_free(t);
    } else {
        CHECK(0, "%s", err.msg);
    }
    free(jp);
    /* GPT-2's vocab spells all 256 bytes, so any byte string survives the round trip */
    char *gp = tu_shared("tokenizers/ggml-vocab-gpt-2.gguf");
    sqz_gguf g = {0};
    if (sqz_gguf_open(&g, gp, &err) == SQZ_OK && sqz_tok_load_gguf(&t, &g, &err) == SQZ_OK) {
        roundtrip_random("bpe", t);
        sqz_tok_free(t);
    } else {
        CHECK(0, "%s", err.msg);
    }
    sqz_gguf_close(&g);
    free(gp);
    char *sp = tu_fixture("tok/spm/tokenizer.model");
    if (sqz_tok_load_spm_model(&t, sp, &err) == SQZ_OK) {
        roundtrip_random("spm", t);
        sqz_tok_free(t);
    } else {
        CHECK(0, "%s", err.msg);
    }
    free(sp);
    return tu_done("test_tok_bad");
}

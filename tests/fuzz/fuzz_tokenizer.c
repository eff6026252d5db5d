/* libFuzzer target for the tokenizers. The first byte picks what the rest is:
 *   0: a tokenizer.json   -> load it; if it loads, encode and decode sample text and the input
 *   1: a tokenizer.model  -> same, SentencePiece protobuf
 *   2: text               -> encode and decode it with the committed SmolLM2 tokenizer.json
 *                            and SentencePiece tokenizer.model (tests/fixtures/tok)
 * Loading may fail; nothing may crash, leak or hit undefined behaviour, and whatever
 * loads must encode anything and decode its own ids. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sqz/tok.h"

static void exercise(const sqz_tokenizer *t, const uint8_t *text, size_t len) {
    static const char sample[] = "Hello  world! 123 <|im_start|> caf\xc3\xa9 \xf0\x9f\xa6\x99\n\t x";
    const char *texts[2] = {sample, (const char *)text};
    size_t lens[2] = {sizeof sample - 1, len};
    for (int k = 0; k < 2; k++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        char *back = NULL;
        size_t bl = 0;
        sqz_err err;
        /* a regex may give up on a pathological input (PCRE2's match limit): an error, not a crash */
        if (sqz_tok_encode(t, texts[k], lens[k], 1, &ids, &n, &err) == SQZ_OK) {
            if (n < 0 || (n > 0 && !ids)) __builtin_trap();
            if (sqz_tok_decode(t, ids, n, &back, &bl, &err) != SQZ_OK) __builtin_trap();
            if (!back || back[bl] != 0) __builtin_trap();
        }
        free(ids);
        free(back);
    }
}

static char *tmp_path(const char *name) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/sqz_fuzz_tok_%d", (int)getpid());
        mkdir(dir, 0700);
    }
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *fixture(const char *rel) {
    /* SQZ_FIXTURES, else tests/fixtures next to this source file */
    const char *base = getenv("SQZ_FIXTURES");
    char buf[4096];
    if (!base || !*base) {
        snprintf(buf, sizeof buf, "%s", __FILE__);
        char *s = strrchr(buf, '/');
        if (s) *s = 0;
        s = strrchr(buf, '/');
        if (s) *s = 0;
        strncat(buf, "/fixtures", sizeof buf - strlen(buf) - 1);
        base = buf;
    }
    size_t n = strlen(base) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", base, rel);
    return p;
}

static sqz_tokenizer *g_bpe, *g_spm;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] % 3;
    data++;
    size--;
    sqz_err err;
    if (mode == 2) {
        static int loaded;
        if (!loaded) {
            loaded = 1;
            char *j = fixture("tok/smollm2/tokenizer.json"), *m = fixture("tok/spm/tokenizer.model");
            if (!j || !m || sqz_tok_load_hf_json(&g_bpe, j, &err) || sqz_tok_load_spm_model(&g_spm, m, &err)) {
                fprintf(stderr, "fuzz_tokenizer: cannot load the fixtures: %s\n", err.msg);
                abort();
            }
            free(j);
            free(m);
        }
        exercise(g_bpe, data, size);
        exercise(g_spm, data, size);
        return 0;
    }
    char *p = tmp_path(mode == 0 ? "tokenizer.json" : "tokenizer.model");
    if (!p) return 0;
    FILE *f = fopen(p, "wb");
    if (!f) {
        free(p);
        return 0;
    }
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    sqz_tokenizer *t = NULL;
    int rc = mode == 0 ? sqz_tok_load_hf_json(&t, p, &err) : sqz_tok_load_spm_model(&t, p, &err);
    if (rc == SQZ_OK) {
        const sqz_vocab *v = sqz_tok_vocab(t);
        if (!v || v->n_tokens <= 0) __builtin_trap();
        exercise(t, data, size);
        sqz_tok_free(t);
    } else if (t || !err.msg[0]) {
        __builtin_trap(); /* a failure leaves nothing behind and says why */
    }
    free(p);
    return 0;
}

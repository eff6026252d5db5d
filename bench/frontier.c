/* bench_frontier: perplexity against file size ("the frontier") of three families of
 * compressed files of one model, on WikiText-2 test.
 *
 *   bench_frontier [--model GGUF] [--ctx 512] [--chunks 8] [--nsamples 8] [--seqlen 512]
 *                  [--rounds 1] [--bpw 2.2,3.0,4.3,4.8,5.25,5.6,6.1,6.5] [--threads N]
 *                  [--llama-types LIST] [--sqz-types LIST] [--text FILE] [--calib FILE]
 *                  [--sqz PATH] [--llama-bin DIR] [--log-y]
 *                  [--fresh] [--fresh-sqz] [--skip-compress] [--no-append]
 *
 * Families:
 *   (a) llama.cpp   its own mixes with an importance matrix: `llama-quantize
 *                   --allow-requantize MODEL F32.gguf F32`, `llama-imatrix -m F32.gguf -f CALIB
 *                   -o imatrix.gguf -c L -b L --chunks N --no-ppl` (once), then
 *                   `llama-quantize --imatrix imatrix.gguf F32.gguf out.gguf T` for
 *                   T in Q2_K Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K;
 *   (b) sqz quantize one type everywhere: `sqz quantize MODEL -o out.gguf --type T --method
 *                   gptq --calib CALIB --nsamples N --seqlen L --seed 0` for T in Q2_K Q3_K
 *                   Q4_K Q5_K Q6_K Q8_0 (576-wide rows fall back as llama-quantize does);
 *   (c) sqz compress at a budget: `sqz compress MODEL -o out.gguf --target-bpw B --calib CALIB
 *                   --nsamples N --seqlen L --seed 0 --rounds R --threads T --json out.gguf.json
 *                   --quiet`;
 *                   a budget below the model's smallest reachable size is a point
 *                   "unreachable (min X bpw)", X parsed from sqz's message.
 * Every perplexity: `sqz ppl FILE TEXT --ctx C --protocol gptq --chunks K`, the F32 file's
 * as the reference. bpw = 8 · file bytes / n_params of `sqz info MODEL --json`.
 *
 * Output: a markdown table (sorted by bpw within each family), the sqz points against
 * llama.cpp's curve interpolated at their size, and an SVG plot (ppl against bpw). Unless
 * --no-append or a point failed, the section goes to bench/RESULTS.md under the usual
 * machine/commit/date heading and the plot to bench/frontier.svg; the plot is always also
 * written beside the cached files.
 *
 * Files are cached in $SQZ_BENCH_DIR, else frontier/ beside the program (build/frontier),
 * one folder per model: a step counts as done when its marker (<file>.done, holding the
 * wall time) is newer than what the file was made from. --fresh redoes every step,
 * --fresh-sqz only families (b) and (c). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define PROG "bench_frontier" /* message prefix, also of bench_util.h's helpers */
#include "bench_util.h"
#include "sqz/core.h"
#include "sqz/tensor.h"

#define MAX_POINTS 64

/* ------------------------------------------------------------------ options and state */

typedef struct {
    const char *model_arg, *text_arg, *calib_arg, *sqz_arg, *llama_bin_arg;
    const char *bpw_arg, *llama_types_arg, *sqz_types_arg, *pure_types_arg;
    long long ctx, chunks, nsamples, seqlen, rounds, threads;
    int fresh, fresh_sqz, skip_compress, append, log_y;
} opts_t;

enum { FAM_F32, FAM_LLAMA, FAM_LLAMA_PURE, FAM_SQZ, FAM_COMPRESS, N_FAM };

static const char *const FAM_NAME[N_FAM] = {"F32", "llama.cpp + imatrix", "llama.cpp + imatrix (one type, --pure)",
                                            "sqz quantize GPTQ (one type)", "sqz compress"};
static const char *const FAM_COLOR[N_FAM] = {"#555555", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"};

/* One point of the frontier. */
typedef struct {
    int family;
    char label[48];
    double target;    /* sqz compress: the budget in bpw */
    int state;        /* 1 measured, -1 failed, 2 unreachable */
    char why[96];     /* failed: short reason */
    double min_bpw;   /* unreachable: the smallest reachable size sqz named (NAN if none) */
    long long bytes;  /* file size */
    double bpw, ppl, seconds;
} point_t;

typedef struct {
    opts_t o;
    char *root, *shared, *sqz, *llama_bin, *dir, *model, *text, *calib;
    char text_key[256], calib_key[320];
    long long n_params, seqlen;
    int have_quantize, have_compress;
    double sens_seconds; /* the shared sqz sensitivity estimate's time (NaN: none) */
    point_t pts[MAX_POINTS];
    int n_pts;
} run_t;

/* ------------------------------------------------------------------ small helpers */

/* Perplexity of gguf on the evaluation text, cached beside it (valid while newer than the
 * file's marker). */
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
            fprintf(stderr, "%s: %s ppl: cached %.4f\n", PROG, label, p);
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
    fprintf(stderr, "%s: %s ppl: running (log %s)\n", PROG, label, log);
    double dt = run_logged(cmd, log, 0);
    free(cmd);
    if (dt < 0) return -1;
    cJSON *j = read_json(json);
    double p = j ? json_num(j, "ppl", NAN) : NAN;
    if (n_scored) *n_scored = j ? json_num(j, "n_scored", NAN) : NAN;
    cJSON_Delete(j);
    if (!isfinite(p)) {
        fprintf(stderr, "%s: %s ppl: no \"ppl\" in %s\n", PROG, label, json);
        return -1;
    }
    *ppl = p;
    fprintf(stderr, "%s: %s ppl: %.4f (%.0f s)\n", PROG, label, p, dt);
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
    return p;
}

static void point_fail(point_t *p, const char *why) {
    p->state = -1;
    tfmt(p->why, sizeof p->why, "%s", why);
}

/* After a file is made: its size, bpw and perplexity. */
static void point_measure(run_t *R, point_t *p, const char *file, const char *label) {
    p->bytes = file_size(file);
    p->bpw = 8.0 * (double)p->bytes / (double)R->n_params;
    if (measure_ppl(R, label, file, &p->ppl, NULL)) point_fail(p, "ppl failed");
    else p->state = 1;
}

/* ------------------------------------------------------------------ the three families */

/* The F32 point (file and perplexity) and the importance matrix made from the F32 file.
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
        if (measure_ppl(R, "F32", f32, &p->ppl, n_scored)) point_fail(p, "ppl failed");
        else p->state = 1;
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

/* (c) sqz compress at each budget. A budget below the smallest reachable size is a point
 * of its own ("unreachable"), remembered in <file>.unreachable.json until --fresh. */
static void family_compress(run_t *R, const double *bpw, char **names, int n) {
    char *qs = shq(R->sqz), *qm = shq(R->model), *qc = shq(R->calib);
    /* The first round's estimate does not depend on the budget: one `sqz sensitivity`
     * serves every point (compress --sensitivity); its time is reported once. */
    char sens[PATH_MAX], scmd[4 * PATH_MAX], *qsens = NULL;
    double sens_s = NAN;
    xfmt(sens, sizeof sens, "%s/sensitivity-%s.json", R->dir, R->calib_key);
    qsens = shq(sens);
    xfmt(scmd, sizeof scmd,
         "%s sensitivity %s --calib %s --nsamples %lld --seqlen %lld --seed 0 --no-diag --threads %lld --quiet "
         "--json %s",
         qs, qm, qc, R->o.nsamples, R->seqlen, R->o.threads, qsens);
    if (R->have_compress &&
        make_step("[sqz sensitivity]", sens, NULL, NULL, R->o.fresh || R->o.fresh_sqz, scmd, 0, &sens_s, NULL)) {
        fprintf(stderr, "%s: sqz sensitivity failed: every compress point estimates on its own\n", PROG);
        free(qsens);
        qsens = NULL;
    } else if (R->have_compress) {
        fprintf(stderr, "%s: shared estimate %s (%.1f s)\n", PROG, sens, sens_s);
        R->sens_seconds = sens_s;
    }
    for (int i = 0; i < n; i++) {
        char label[128], name[48], file[PATH_MAX], json[PATH_MAX + 8], unr[PATH_MAX + 24], cmd[4 * PATH_MAX];
        tfmt(name, sizeof name, "%s bpw", names[i]);
        point_t *p = add_point(R, FAM_COMPRESS, name);
        p->target = bpw[i];
        tfmt(label, sizeof label, "[sqz compress %s bpw]", names[i]);
        if (!R->have_compress) { point_fail(p, "no sqz compress"); continue; }
        xfmt(file, sizeof file, "%s/compress-b%g-r%lld-%s.gguf", R->dir, bpw[i], R->o.rounds, R->calib_key);
        xfmt(json, sizeof json, "%s.json", file);
        xfmt(unr, sizeof unr, "%s.unreachable.json", file);
        int fresh = R->o.fresh || R->o.fresh_sqz;
        if (!fresh && file_exists(unr)) {
            cJSON *j = read_json(unr);
            if (j) {
                p->state = 2;
                p->min_bpw = json_num(j, "min_bpw", NAN);
                cJSON_Delete(j);
                fprintf(stderr, "%s: %s: cached: unreachable (min %.3f bpw)\n", PROG, label, p->min_bpw);
                continue;
            }
        }
        unlink(unr);
        char *qo = shq(file), *qj = shq(json);
        xfmt(cmd, sizeof cmd,
             "%s compress %s -o %s --target-bpw %g --calib %s --nsamples %lld --seqlen %lld --seed 0 --rounds %lld "
             "--threads %lld --json %s --quiet%s%s",
             qs, qm, qo, bpw[i], qc, R->o.nsamples, R->seqlen, R->o.rounds, R->o.threads, qj,
             qsens ? " --sensitivity " : "", qsens ? qsens : "");
        free(qo); free(qj);
        if (make_step(label, file, NULL, NULL, fresh, cmd, 1, &p->seconds, NULL)) {
            char log[PATH_MAX + 8];
            xfmt(log, sizeof log, "%s.log", file);
            char *text = slurp(log);
            if (text && strstr(text, "below the smallest reachable size")) {
                p->state = 2;
                p->min_bpw = parse_min_bpw(text);
                p->seconds = NAN;
                fprintf(stderr, "%s: %s: unreachable (min %.3f bpw)\n", PROG, label, p->min_bpw);
                cJSON *j = cJSON_CreateObject();
                if (isfinite(p->min_bpw)) cJSON_AddNumberToObject(j, "min_bpw", p->min_bpw);
                char *s = cJSON_Print(j);
                if (s) write_text(unr, s);
                free(s);
                cJSON_Delete(j);
            } else {
                fprintf(stderr, "%s: %s: FAILED; the end of %s:\n", PROG, label, log);
                char *ql = shq(log);
                char tail[PATH_MAX + 64];
                xfmt(tail, sizeof tail, "tail -n 5 %s | sed 's/^/    /' >&2", ql);
                free(ql);
                if (system(tail) != 0) fprintf(stderr, "    (cannot read the log)\n");
                point_fail(p, "compress failed");
            }
            free(text);
            continue;
        }
        point_measure(R, p, file, label);
    }
    free(qsens);
    free(qs); free(qm); free(qc);
}

/* ------------------------------------------------------------------ comparison */

static int by_family_bpw(const void *a, const void *b) {
    const point_t *x = a, *y = b;
    if (x->family != y->family) return x->family - y->family;
    double bx = x->state == 1 ? x->bpw : x->target, by = y->state == 1 ? y->bpw : y->target;
    if (isnan(bx) || isnan(by)) return isnan(bx) - isnan(by);
    return (bx > by) - (bx < by);
}

/* llama.cpp's ppl at `bpw`, linear in bpw between its two neighbouring measured points
 * (points sorted by bpw); NAN outside their range. */
static double llama_interp(const run_t *R, double bpw, int family) {
    const point_t *prev = NULL;
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        if (p->family != family || p->state != 1) continue;
        if (p->bpw == bpw) return p->ppl;
        if (prev && prev->bpw < bpw && bpw < p->bpw)
            return prev->ppl + (p->ppl - prev->ppl) * (bpw - prev->bpw) / (p->bpw - prev->bpw);
        prev = p;
    }
    return NAN;
}

static void fmt_ppl(char *out, size_t cap, const point_t *p) {
    if (p->state == 1) xfmt(out, cap, "%.4f", p->ppl);
    else if (p->state == 2 && isfinite(p->min_bpw)) xfmt(out, cap, "unreachable (min %.3f bpw)", p->min_bpw);
    else if (p->state == 2) xfmt(out, cap, "unreachable");
    else xfmt(out, cap, "%s", p->why[0] ? p->why : "-");
}

static void make_table(strbuf *b, const run_t *R, double f32_ppl) {
    sb_printf(b, "| family | label | file MiB | bpw | ppl | Δppl vs F32 | seconds |\n"
                 "|---|---|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        char mib[32] = "-", bpw[32] = "-", ppl[96], d[64] = "-", s[32] = "-";
        if (p->bytes > 0) {
            xfmt(mib, sizeof mib, "%.2f", (double)p->bytes / 1048576.0);
            xfmt(bpw, sizeof bpw, "%.3f", p->bpw);
        }
        fmt_ppl(ppl, sizeof ppl, p);
        if (p->state == 1 && isfinite(f32_ppl) && p->family != FAM_F32)
            xfmt(d, sizeof d, "%+.4f (%+.2f%%)", p->ppl - f32_ppl, 100 * (p->ppl / f32_ppl - 1));
        if (isfinite(p->seconds) && (p->state == 1 || p->bytes > 0)) xfmt(s, sizeof s, "%.1f", p->seconds);
        sb_printf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", FAM_NAME[p->family], p->label, mib, bpw, ppl, d, s);
    }
    if (isfinite(R->sens_seconds))
        sb_printf(b, "\nThe sqz compress points share one first-round estimate (`sqz sensitivity`, %.1f s, not in their "
                     "seconds above; `compress --sensitivity`).\n", R->sens_seconds);
}

/* The sqz points against llama.cpp's curve at the same size. Returns how many measured
 * sqz compress points miss the goal (below llama.cpp; at <= 3.0 bpw, ratio <= 0.6). */
static int make_comparison(strbuf *b, const run_t *R, double f32_ppl) {
    int missed = 0;
    sb_printf(b, "| sqz point | bpw | sqz ppl | llama.cpp mixes ppl (interpolated) | (sqz − F32) / (llama.cpp − F32) "
                 "| goal | llama.cpp one type ppl (interpolated) | ratio to it |\n"
                 "|---|---:|---:|---:|---:|---|---:|---:|\n");
    for (int i = 0; i < R->n_pts; i++) {
        const point_t *p = &R->pts[i];
        if (p->family != FAM_SQZ && p->family != FAM_COMPRESS) continue;
        char name[96], bpw[32] = "-", ppl[96], lp[32] = "n/a", ratio[48] = "n/a", goal[64] = "-";
        char pp[32] = "n/a", pr[32] = "n/a";
        tfmt(name, sizeof name, "%s %s", p->family == FAM_SQZ ? "quantize" : "compress", p->label);
        fmt_ppl(ppl, sizeof ppl, p);
        if (p->state == 1) {
            xfmt(bpw, sizeof bpw, "%.3f", p->bpw);
            double lpure = llama_interp(R, p->bpw, FAM_LLAMA_PURE);
            if (isfinite(lpure)) {
                xfmt(pp, sizeof pp, "%.4f", lpure);
                if (lpure > f32_ppl) xfmt(pr, sizeof pr, "%.3f", (p->ppl - f32_ppl) / (lpure - f32_ppl));
            }
            double l = llama_interp(R, p->bpw, FAM_LLAMA);
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
        y0 = fmin(y0, p->ppl); y1 = fmax(y1, p->ppl);
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
              "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">perplexity%s</text>\n",
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
            sb_printf(&pl, "%s%.1f,%.1f", n ? " " : "", SX(p->bpw), SY(p->ppl));
            n++;
        }
        if (n > 1)
            sb_printf(b, "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"/>\n", pl.s,
                      FAM_COLOR[f]);
        free(pl.s);
        for (int i = 0; i < R->n_pts; i++) {
            const point_t *p = &R->pts[i];
            if (p->family != f || p->state != 1) continue;
            double x = SX(p->bpw), y = SY(p->ppl);
            if (f == FAM_LLAMA || f == FAM_LLAMA_PURE)
                sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", x, y, FAM_COLOR[f]);
            else if (f == FAM_SQZ)
                sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"%s\"/>\n", x - 4, y - 4,
                          FAM_COLOR[f]);
            else
                sb_printf(b, "<path d=\"M%.1f %.1f L%.1f %.1f L%.1f %.1f Z\" fill=\"%s\"/>\n", x, y - 5, x + 5,
                          y + 4, x - 5, y + 4, FAM_COLOR[f]);
            /* Points of one family at the same size and ppl (e.g. two llama.cpp mixes that pick
             * the same tensor types) share one label "A = B". */
            int dup = 0;
            char lab[256];
            tfmt(lab, sizeof lab, "%s", p->label);
            for (int k = 0; k < R->n_pts; k++) {
                const point_t *q = &R->pts[k];
                if (k == i || q->family != f || q->state != 1 || q->bytes != p->bytes || q->ppl != p->ppl) continue;
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
    double lx = ml + pw - 250, ly = mt + 10;
    if (n_shown)
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"240\" height=\"%d\" fill=\"white\" stroke=\"#999\"/>\n",
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
        if (f == FAM_LLAMA || f == FAM_LLAMA_PURE)
            sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", lx + 22, y, FAM_COLOR[f]);
        else if (f == FAM_SQZ)
            sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"%s\"/>\n", lx + 18, y - 4,
                      FAM_COLOR[f]);
        else if (f == FAM_COMPRESS)
            sb_printf(b, "<path d=\"M%.1f %.1f L%.1f %.1f L%.1f %.1f Z\" fill=\"%s\"/>\n", lx + 22, y - 5, lx + 27,
                      y + 4, lx + 17, y + 4, FAM_COLOR[f]);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\">%s%s</text>\n", lx + 44, y + 4, FAM_NAME[f],
                  f == FAM_F32 ? " (reference)" : "");
    }
    sb_printf(b, "</svg>\n");
#undef SX
#undef SY
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_frontier [options]\n"
            "  --model GGUF       the model (default: scripts/default_model.sh)\n"
            "  --ctx N            evaluation window (default 512)\n"
            "  --chunks K         evaluate the first K windows (default 8)\n"
            "  --nsamples N       calibration windows (default 8; llama-imatrix --chunks N)\n"
            "  --seqlen L         calibration window length (default 512; llama-imatrix -c L)\n"
            "  --rounds R         sqz compress --rounds (default 1)\n"
            "  --bpw LIST         sqz compress budgets (default 2.2,3.0,4.3,4.8,5.25,5.6,6.1,6.5)\n"
            "  --llama-types LIST llama-quantize mixes (default Q2_K,Q3_K_S,Q3_K_M,Q4_K_S,Q4_K_M,Q5_K_M,Q6_K)\n"
            "  --llama-pure-types LIST  llama-quantize --pure types, output/embedding at the type's\n"
            "                     fallback for their rows (default Q2_K,Q3_K,Q4_K,Q5_K)\n"
            "  --sqz-types LIST   sqz quantize types (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0)\n"
            "  --threads N        threads for every tool (default: all CPUs)\n"
            "  --text FILE        evaluation text (default ../shared/data/wikitext-2-raw-test.txt)\n"
            "  --calib FILE       calibration text (default ../shared/data/calib-state-of-the-union.txt)\n"
            "  --sqz PATH         the sqz program (default: sqz beside this program)\n"
            "  --llama-bin DIR    llama.cpp bin dir (default $LLAMA_BIN or scripts/build_llamacpp.sh's)\n"
            "  --log-y            log-scale perplexity axis in the plot\n"
            "  --fresh            redo every cached step ($SQZ_BENCH_DIR or build/frontier)\n"
            "  --fresh-sqz        redo the sqz quantize and sqz compress points only\n"
            "  --skip-compress    families (a) and (b) only\n"
            "  --no-append        print only: neither bench/RESULTS.md nor bench/frontier.svg\n");
}



/* Splits a list at commas and spaces (in place). */
static int split_list(char *s, char **out, int cap) {
    int n = 0;
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

int main(int argc, char **argv) {
    run_t *R = calloc(1, sizeof *R);
    if (!R) return 1;
    opts_t *o = &R->o;
    o->ctx = 512;
    o->chunks = 8;
    o->nsamples = 8;
    o->seqlen = 512;
    o->rounds = 1;
    o->append = 1;
    o->bpw_arg = "2.2,3.0,4.3,4.8,5.25,5.6,6.1,6.5";
    o->llama_types_arg = "Q2_K,Q3_K_S,Q3_K_M,Q4_K_S,Q4_K_M,Q5_K_M,Q6_K";
    o->pure_types_arg = "Q2_K,Q3_K,Q4_K,Q5_K";
    o->sqz_types_arg = "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0";
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
        else if (!v) { fprintf(stderr, "%s: %s needs a value\n", PROG, a); usage(stderr); return 2; }
        else if (!strcmp(a, "--model")) o->model_arg = v;
        else if (!strcmp(a, "--text")) o->text_arg = v;
        else if (!strcmp(a, "--calib")) o->calib_arg = v;
        else if (!strcmp(a, "--sqz")) o->sqz_arg = v;
        else if (!strcmp(a, "--llama-bin")) o->llama_bin_arg = v;
        else if (!strcmp(a, "--bpw")) o->bpw_arg = v;
        else if (!strcmp(a, "--llama-types")) o->llama_types_arg = v;
        else if (!strcmp(a, "--llama-pure-types")) o->pure_types_arg = v;
        else if (!strcmp(a, "--sqz-types")) o->sqz_types_arg = v;
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
    char *pt_buf = strdup(o->pure_types_arg);
    char *bpw_s[MAX_POINTS], *ltypes[MAX_POINTS], *stypes[MAX_POINTS], *ptypes[MAX_POINTS];
    double bpw[MAX_POINTS];
    int n_bpw = split_list(bpw_buf, bpw_s, 24), n_lt = split_list(lt_buf, ltypes, 24),
        n_st = split_list(st_buf, stypes, 12), n_pt = split_list(pt_buf, ptypes, 12);
    if (n_bpw < 0 || n_lt < 0 || n_st < 0 || n_pt < 0) { fprintf(stderr, "%s: a list is too long\n", PROG); return 2; }
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
    xfmt(p, sizeof p, "%s/data/calib-state-of-the-union.txt", R->shared);
    R->calib = strdup(o->calib_arg ? o->calib_arg : p);
    R->model = o->model_arg ? strdup(o->model_arg) : default_model(R->root);
    if (!R->model) { fprintf(stderr, "%s: no --model and no default model (scripts/default_model.sh)\n", PROG); goto out; }
    if (!file_exists(R->model)) { fprintf(stderr, "%s: model %s not found (a GGUF file)\n", PROG, R->model); goto out; }
    if (!file_exists(R->sqz)) { fprintf(stderr, "%s: %s not found (build sqz, or pass --sqz)\n", PROG, R->sqz); goto out; }
    if (!file_exists(R->text)) { fprintf(stderr, "%s: evaluation text %s not found\n", PROG, R->text); goto out; }
    if (!file_exists(R->calib)) { fprintf(stderr, "%s: calibration text %s not found\n", PROG, R->calib); goto out; }
    {
        char rt[PATH_MAX], rcal[PATH_MAX];
        if (realpath(R->text, rt) && realpath(R->calib, rcal) && !strcmp(rt, rcal)) {
            fprintf(stderr, "%s: the calibration text must not be the evaluation text (%s)\n", PROG, rt);
            goto out;
        }
    }
    R->llama_bin = llama_bin_dir(R->root, o->llama_bin_arg, "llama-quantize", PROG);
    if (!R->llama_bin) goto out;
    xfmt(p, sizeof p, "%s/llama-imatrix", R->llama_bin);
    if (!file_exists(p)) { fprintf(stderr, "%s: %s not found\n", PROG, p); goto out; }
    R->have_quantize = sqz_has(R->sqz, "quantize");
    R->have_compress = o->skip_compress ? 0 : sqz_has(R->sqz, "compress");
    R->sens_seconds = NAN;
    if (!R->have_quantize) fprintf(stderr, "%s: %s has no `quantize` command: family (b) will fail\n", PROG, R->sqz);
    if (!o->skip_compress && !R->have_compress)
        fprintf(stderr, "%s: %s has no `compress` command yet: family (c) will fail (--skip-compress leaves it out)\n",
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
    char f32[PATH_MAX], imat[PATH_MAX];
    xfmt(f32, sizeof f32, "%s/F32.gguf", R->dir);
    xfmt(imat, sizeof imat, "%s/imatrix-%s.gguf", R->dir, R->calib_key);
    double imat_s = NAN, n_scored = NAN;
    int imat_ok = make_f32_and_imatrix(R, f32, imat, &imat_s, &n_scored);
    family_llama(R, ltypes, n_lt, f32, imat, imat_ok);
    family_llama_pure(R, ptypes, n_pt, f32, imat, imat_ok, dim);
    family_sqz(R, stypes, n_st);
    if (!o->skip_compress) family_compress(R, bpw, bpw_s, n_bpw);

    /* Report. */
    qsort(R->pts, (size_t)R->n_pts, sizeof R->pts[0], by_family_bpw);
    double f32_ppl = NAN;
    int failed = 0;
    for (int i = 0; i < R->n_pts; i++) {
        if (R->pts[i].family == FAM_F32 && R->pts[i].state == 1) f32_ppl = R->pts[i].ppl;
        failed += R->pts[i].state == -1;
    }
    strbuf tab = {0}, cmp = {0}, svg = {0}, notes = {0};
    make_table(&tab, R, f32_ppl);
    int missed = make_comparison(&cmp, R, f32_ppl);
    char bench[256], heading[1024], title[512];
    tfmt(bench, sizeof bench, "frontier (%s, GPTQ protocol, ctx %lld, chunks %lld)", base_name(R->text), o->ctx,
         o->chunks);
    /* The heading runs `git status`: no opportunistic index refresh in a shared tree. */
    setenv("GIT_OPTIONAL_LOCKS", "0", 1);
    results_heading(R->root, bench, heading, sizeof heading);
    {
        char mname[256];
        tfmt(mname, sizeof mname, "%s", base_name(R->model));
        char *dot = strstr(mname, ".gguf");
        if (dot) *dot = '\0';
        tfmt(title, sizeof title, "%s: perplexity (%s, ctx %lld, %lld chunks) vs size", mname, base_name(R->text),
             o->ctx, o->chunks);
        for (char *c = title; *c; c++)
            if (*c == '<' || *c == '>' || *c == '&' || *c == '"') *c = '_'; /* the title goes into XML */
    }
    make_svg(&svg, R, f32_ppl, o->log_y, title);
    char imat_desc[64] = "failed";
    if (isfinite(imat_s)) xfmt(imat_desc, sizeof imat_desc, "%.1f s", imat_s);
    char scored[64] = "";
    if (isfinite(n_scored)) xfmt(scored, sizeof scored, " (%.0f tokens scored)", n_scored);
    char compress_desc[512] = "";
    if (!o->skip_compress)
        tfmt(compress_desc, sizeof compress_desc,
             " sqz compress: `sqz compress MODEL -o OUT --target-bpw B --calib CALIB --nsamples %lld --seqlen %lld "
             "--seed 0 --rounds %lld --threads T` (a budget below the model's smallest reachable size: "
             "\"unreachable\").",
             o->nsamples, R->seqlen, o->rounds);
    sb_printf(&notes,
              "Model %s, %lld parameters; bpw = 8 · file bytes / parameters (`sqz info`). Perplexity: `sqz ppl FILE "
              "%s --ctx %lld --protocol gptq --chunks %lld`%s for every point. Calibration: %s, %lld × %lld tokens, "
              "never the evaluation text. F32: `llama-quantize --allow-requantize MODEL F32.gguf F32`. llama.cpp: "
              "`llama-imatrix -m F32.gguf -f CALIB -c %lld -b %lld --chunks %lld --no-ppl` (its first %lld chunks; "
              "%s), then `llama-quantize --imatrix imatrix.gguf F32.gguf OUT T` (llama.cpp's own mix for T); one type: the same with `--pure --output-tensor-type X --token-embedding-type X`, X = T's fallback for the embedding's rows (what sqz quantize writes). sqz "
              "quantize: `sqz quantize MODEL -o OUT --type T --method gptq --calib CALIB --nsamples %lld --seqlen "
              "%lld --seed 0` (rows that do not fit T fall back as llama-quantize does: bpw column).%s Seconds: wall time of the command that made the file on %lld threads (cached files "
              "keep the time of the run that made them). llama.cpp's ppl at an sqz point: linear in bpw between "
              "its two neighbouring points.\n",
              base_name(R->model), R->n_params, base_name(R->text), o->ctx, o->chunks, scored, base_name(R->calib),
              o->nsamples, R->seqlen, R->seqlen, R->seqlen, o->nsamples, o->nsamples, imat_desc, o->nsamples,
              R->seqlen, compress_desc, o->threads);

    char svg_path[PATH_MAX];
    xfmt(svg_path, sizeof svg_path, "%s/frontier.svg", R->dir);
    if (svg.s && write_text(svg_path, svg.s) == 0) fprintf(stderr, "%s: plot written to %s\n", PROG, svg_path);
    else fprintf(stderr, "%s: cannot write %s\n", PROG, svg_path);

    printf("%s\n\n%s\n![frontier](frontier.svg)\n\nsqz against llama.cpp at the same size:\n\n%s\n%s", heading,
           tab.s ? tab.s : "", cmp.s ? cmp.s : "", notes.s ? notes.s : "");
    if (failed) printf("\n%d point(s) failed (see stderr).\n", failed);
    if (missed) printf("\n%d sqz compress point(s) miss the goal.\n", missed);
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
                sb_printf(&all, "\n%s\n\n%s\n![frontier](frontier.svg)\n\nsqz against llama.cpp at the same size:\n\n%s\n%s",
                          heading, tab.s, cmp.s ? cmp.s : "", notes.s ? notes.s : "");
                if (all.s) append_results(R->root, all.s, PROG);
                free(all.s);
            }
        }
    }
    free(tab.s); free(cmp.s); free(svg.s); free(notes.s);
    rc = failed ? 1 : 0;

out:
    free(R->root); free(R->shared); free(R->sqz); free(R->llama_bin); free(R->dir); free(R->model);
    free(R->text); free(R->calib);
    free(R);
    free(bpw_buf); free(lt_buf); free(st_buf); free(pt_buf);
    return rc;
}

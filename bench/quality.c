/* bench_quality: perplexity after quantization, sqz (RTN and GPTQ) against llama.cpp
 * (llama-imatrix + llama-quantize), at equal file size, on WikiText-2 test.
 *
 *   bench_quality [--models LIST] [--types Q8_0,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K]
 *                 [--ctx N] [--chunks K] [--calib FILE] [--nsamples 128] [--seqlen 512]
 *                 [--threads N] [--text FILE] [--sqz PATH] [--llama-bin DIR]
 *                 [--fresh] [--fresh-sqz] [--only-llamacpp] [--no-append]
 *
 * Per model:
 *   F32 baseline  `llama-quantize --allow-requantize MODEL F32.gguf F32` (a Hugging Face
 *                 folder goes through llama.cpp's convert_hf_to_gguf.py --outtype f32, or
 *                 `sqz quantize --type F32` when that cannot run), so the baseline does
 *                 not depend on sqz's writer.
 * Per model and type T:
 *   sqz RTN       `sqz quantize F32.gguf -o out.gguf --type T --method rtn --calib CALIB
 *                  --nsamples N --seqlen L --seed 0 --json rep.json`
 *   sqz GPTQ      the same with --method gptq
 *   llama.cpp     `llama-imatrix -m F32.gguf -f CALIB -o imatrix.gguf -c L -b L --chunks N
 *                  --no-ppl` (once per model) and `llama-quantize --imatrix imatrix.gguf --pure
 *                  --output-tensor-type X --token-embedding-type Y F32.gguf out.gguf T`,
 *                 X and Y the types sqz's report gives output.weight / token_embd.weight, so
 *                 both files hold the same tensor types; their sizes must agree within 0.5%.
 * Every perplexity: `sqz ppl FILE TEXT --ctx C --protocol gptq [--chunks K] --json j.json`.
 *
 * Every intermediate file is cached under <build>/bench-cache/quality/<model>/, keyed by
 * model, type, calibration and evaluation settings; a cell counts as done when its
 * marker file (<file>.done, holding the wall time) is newer than what it was made from.
 * --fresh redoes everything, --fresh-sqz only the sqz RTN/GPTQ files (after a change to
 * sqz quantize). Progress lines go to stderr, the table to stdout and, unless
 * --no-append or a cell failed, to bench/RESULTS.md. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define PROG "bench_quality" /* message prefix, also of bench_util.h's helpers */
#include "bench_util.h"
#include "sqz/core.h"
#include "sqz/tensor.h"

#define MAX_TYPES 16
#define MAX_MODELS 32

/* ------------------------------------------------------------------ options */

typedef struct {
    const char *models_arg, *types_arg, *calib_arg, *text_arg, *sqz_arg, *llama_bin_arg;
    long long ctx, chunks, nsamples, seqlen, threads;
    int fresh, fresh_sqz, only_llamacpp, append;
} opts_t;

/* Everything a run needs, resolved. */
typedef struct {
    opts_t o;
    char *root, *shared, *sqz, *llama_bin, *cache, *text, *calib;
    char text_key[256], calib_key[256];
    int have_quantize; /* `sqz quantize` exists */
} run_t;

typedef struct {
    char *path; /* GGUF file or Hugging Face folder */
    char *name; /* for the table */
    char *key;  /* cache folder name */
    int is_dir;
} model_t;

/* One quantized file and its perplexity. */
typedef struct {
    int state;       /* 0 not run, 1 done, -1 failed, 2 skipped */
    const char *why; /* failed/skipped: short reason for the table */
    double ppl, seconds;
    long long bytes;
} cell_t;

typedef struct {
    const char *model;
    char type[16];
    int ctx;
    cell_t f32, rtn, gptq, llama;
    double imatrix_s;
    int imatrix_state;
    char out_type[16], embd_type[16]; /* what llama-quantize was told */
    int size_ok;                      /* 1 ok, 0 mismatch, -1 not compared */
    double size_diff;
    long long n_params;
} row_t;

/* ------------------------------------------------------------------ small helpers */













/* Perplexity of gguf on the evaluation text, cached beside it (valid while newer than
 * the file's marker). */
static int measure_ppl(run_t *R, const char *label, const char *gguf, int ctx, double *ppl, double *n_scored) {
    char json[PATH_MAX];
    xfmt(json, sizeof json, "%s.ppl-%s-c%d-k%lld.json", gguf, R->text_key, ctx, R->o.chunks);
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
    char chunks[64] = "";
    if (R->o.chunks > 0) xfmt(chunks, sizeof chunks, " --chunks %lld", R->o.chunks);
    size_t n = strlen(qs) + strlen(qg) + strlen(qt) + strlen(qj) + 256;
    char *cmd = malloc(n);
    if (cmd)
        xfmt(cmd, n, "%s ppl %s %s --ctx %d --protocol gptq%s --threads %lld --json %s", qs, qg, qt, ctx, chunks,
             R->o.threads, qj);
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

/* From a sqz quantize report: the types written for output.weight and token_embd.weight
 * (a tied model has only token_embd, which is also the output). 0 when found. */
static int report_types(const char *report, char *out_type, char *embd_type, size_t cap) {
    cJSON *j = read_json(report);
    if (!j) return -1;
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "tensors"), *t;
    out_type[0] = embd_type[0] = '\0';
    cJSON_ArrayForEach(t, ts) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        if (!cJSON_IsString(name) || !cJSON_IsString(type)) continue;
        if (!strcmp(name->valuestring, "output.weight")) xfmt(out_type, cap, "%s", type->valuestring);
        else if (!strcmp(name->valuestring, "token_embd.weight")) xfmt(embd_type, cap, "%s", type->valuestring);
    }
    cJSON_Delete(j);
    if (!embd_type[0]) return -1;
    if (!out_type[0]) xfmt(out_type, cap, "%s", embd_type);
    return 0;
}

/* ------------------------------------------------------------------ models */

static int has_tokenizer_dir(const char *dir) {
    char p[PATH_MAX];
    xfmt(p, sizeof p, "%s/tokenizer.json", dir);
    if (file_exists(p)) return 1;
    xfmt(p, sizeof p, "%s/tokenizer.model", dir);
    return file_exists(p);
}

/* `sqz info --json` of a model: n_params, dim, n_ctx_train, tokenizer. NULL on failure. */
static cJSON *model_info(const run_t *R, const char *model, const char *json_path) {
    char *qs = shq(R->sqz), *qm = shq(model), *qj = shq(json_path);
    char cmd[3 * PATH_MAX + 64];
    xfmt(cmd, sizeof cmd, "%s info %s --json %s > /dev/null 2>&1", qs, qm, qj);
    free(qs); free(qm); free(qj);
    if (system(cmd) != 0) return NULL;
    return read_json(json_path);
}

static int add_model(model_t *ms, int *n, const char *path) {
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        fprintf(stderr, "%s: model %s: %s\n", PROG, path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < *n; i++) {
        char other[PATH_MAX];
        if (realpath(ms[i].path, other) && !strcmp(other, real)) return 0;
    }
    if (*n >= MAX_MODELS) return -1;
    model_t *m = &ms[(*n)++];
    m->path = strdup(path);
    m->is_dir = sqz_path_is_dir(path);
    const char *base = strrchr(real, '/');
    base = base && base[1] ? base + 1 : real;
    m->name = strdup(base);
    char *dot = m->is_dir ? NULL : strstr(m->name, ".gguf");
    if (dot) *dot = '\0';
    char key[256];
    path_key(real, key, sizeof key);
    m->key = strdup(key);
    return 0;
}

/* The default list: the default model, then every model under <shared>/models that has
 * a tokenizer (a folder with tokenizer.json / tokenizer.model, a GGUF whose sqz info
 * shows one). */
static int default_models(run_t *R, model_t *ms, int *n) {
    char *def = default_model(R->root);
    if (def) {
        add_model(ms, n, def);
        free(def);
    } else {
        fprintf(stderr, "%s: no default model (scripts/default_model.sh failed)\n", PROG);
    }
    char dir[PATH_MAX];
    xfmt(dir, sizeof dir, "%s/models", R->shared);
    char *qd = shq(dir);
    char cmd[PATH_MAX + 64];
    xfmt(cmd, sizeof cmd, "ls -1 %s 2>/dev/null", qd);
    free(qd);
    char *list = run_capture(cmd);
    for (char *line = list ? strtok(list, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char p[PATH_MAX];
        xfmt(p, sizeof p, "%s/%s", dir, line);
        size_t l = strlen(line);
        if (sqz_path_is_dir(p)) {
            if (has_tokenizer_dir(p)) add_model(ms, n, p);
            else fprintf(stderr, "%s: skipping %s: no tokenizer\n", PROG, p);
        } else if (l > 5 && !strcmp(line + l - 5, ".gguf")) {
            char tmp[PATH_MAX];
            xfmt(tmp, sizeof tmp, "%s/info-probe.json", R->cache);
            cJSON *j = model_info(R, p, tmp);
            const cJSON *tk = j ? cJSON_GetObjectItemCaseSensitive(j, "tokenizer") : NULL;
            if (cJSON_IsObject(tk)) add_model(ms, n, p);
            else fprintf(stderr, "%s: skipping %s: no tokenizer\n", PROG, p);
            cJSON_Delete(j);
            unlink(tmp);
        }
    }
    free(list);
    return *n > 0 ? 0 : -1;
}

/* --models: comma-separated paths, names of entries under <shared>/models, or "default". */
static int parse_models(run_t *R, model_t *ms, int *n) {
    char *list = strdup(R->o.models_arg);
    int rc = 0;
    for (char *it = strtok(list, ","); it; it = strtok(NULL, ",")) {
        if (!strcmp(it, "default")) {
            char *def = default_model(R->root);
            if (!def) { fprintf(stderr, "%s: no default model\n", PROG); rc = -1; continue; }
            add_model(ms, n, def);
            free(def);
            continue;
        }
        char p[PATH_MAX];
        xfmt(p, sizeof p, "%s", it);
        if (!sqz_path_exists(p)) xfmt(p, sizeof p, "%s/models/%s", R->shared, it);
        if (!sqz_path_exists(p)) {
            fprintf(stderr, "%s: --models: %s is neither a path nor a model under %s/models\n", PROG, it, R->shared);
            rc = -1;
            continue;
        }
        if (add_model(ms, n, p)) rc = -1;
    }
    free(list);
    return rc;
}

/* ------------------------------------------------------------------ one model */

/* Makes the F32 baseline with llama.cpp. */
static int make_f32(run_t *R, const model_t *m, const char *f32, double *secs) {
    char *qsrc = shq(m->path), *qout = shq(f32), *qbin = shq(R->llama_bin);
    char cmd[4 * PATH_MAX];
    int cached, rc;
    if (!m->is_dir) {
        xfmt(cmd, sizeof cmd, "%s/llama-quantize --allow-requantize %s %s F32 %lld", qbin, qsrc, qout,
             R->o.threads);
        rc = make_step("F32 (llama-quantize)", f32, NULL, NULL, R->o.fresh, cmd, 0, secs, &cached);
    } else {
        /* llama.cpp's converter lives two levels above its bin dir (the source tree). */
        char conv[PATH_MAX];
        xfmt(conv, sizeof conv, "%s/../../convert_hf_to_gguf.py", R->llama_bin);
        rc = -1;
        if (file_exists(conv)) {
            char *qc = shq(conv);
            xfmt(cmd, sizeof cmd, "python3 %s %s --outtype f32 --outfile %s", qc, qsrc, qout);
            free(qc);
            rc = make_step("F32 (convert_hf_to_gguf.py)", f32, NULL, NULL, R->o.fresh, cmd, 0, secs, &cached);
        }
        if (rc) {
            char *qs = shq(R->sqz);
            xfmt(cmd, sizeof cmd, "%s quantize %s -o %s --type F32", qs, qsrc, qout);
            free(qs);
            fprintf(stderr, "%s: %s: llama.cpp's converter failed; F32 baseline from sqz quantize instead\n", PROG,
                    m->name);
            rc = make_step("F32 (sqz quantize)", f32, NULL, NULL, 1, cmd, 0, secs, &cached);
        }
    }
    free(qsrc); free(qout); free(qbin);
    return rc;
}

static int run_model(run_t *R, const model_t *m, char **types, int n_types, row_t *rows, int *n_rows,
                     char *ctx_note, size_t ctx_note_cap) {
    char dir[PATH_MAX];
    xfmt(dir, sizeof dir, "%s/%s", R->cache, m->key);
    char *qd = shq(dir);
    char cmd[4 * PATH_MAX];
    xfmt(cmd, sizeof cmd, "mkdir -p %s", qd);
    free(qd);
    if (system(cmd) != 0) { fprintf(stderr, "%s: cannot create %s\n", PROG, dir); return -1; }
    fprintf(stderr, "%s: == %s (%s), cache %s\n", PROG, m->name, m->path, dir);
    if (m->is_dir && !has_tokenizer_dir(m->path)) {
        fprintf(stderr, "%s: %s has no tokenizer (tokenizer.json / tokenizer.model): no perplexity possible\n", PROG,
                m->path);
        return -1;
    }

    char f32[PATH_MAX], info_path[PATH_MAX];
    xfmt(f32, sizeof f32, "%s/F32.gguf", dir);
    xfmt(info_path, sizeof info_path, "%s/F32.info.json", dir);
    double f32_s = 0;
    if (make_f32(R, m, f32, &f32_s)) return -1;
    cJSON *info = model_info(R, f32, info_path);
    if (!info) { fprintf(stderr, "%s: sqz info %s failed\n", PROG, f32); return -1; }
    long long n_params = (long long)json_num(info, "n_params", 0);
    long long dim = (long long)json_num(info, "dim", 0);
    int ctx = R->o.ctx > 0 ? (int)R->o.ctx : (int)json_num(info, "n_ctx_train", 0);
    cJSON *info_keep = info;
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(info, "tokenizer"))) {
        fprintf(stderr, "%s: %s has no tokenizer: no perplexity possible\n", PROG, m->path);
        cJSON_Delete(info);
        return -1;
    }
    if (n_params <= 0 || ctx < 2) {
        fprintf(stderr, "%s: %s: no parameter count or context length in sqz info\n", PROG, m->name);
        cJSON_Delete(info);
        return -1;
    }
    size_t nl = strlen(ctx_note);
    tfmt(ctx_note + nl, ctx_note_cap - nl, "%s%s %d", nl ? ", " : "", m->name, ctx);

    cell_t f32c = {0, NULL, NAN, f32_s, file_size(f32)};
    double n_scored = NAN;
    if (measure_ppl(R, "F32", f32, ctx, &f32c.ppl, &n_scored) == 0) f32c.state = 1;
    else { f32c.state = -1; f32c.why = "ppl failed"; }
    if (isfinite(n_scored)) {
        nl = strlen(ctx_note);
        tfmt(ctx_note + nl, ctx_note_cap - nl, " (%.0f tokens scored)", n_scored);
    }

    /* Calibration windows no longer than the model's context. */
    long long n_ctx_train = (long long)json_num(info_keep, "n_ctx_train", 0);
    long long seqlen = R->o.seqlen;
    if (n_ctx_train > 0 && seqlen > n_ctx_train) {
        fprintf(stderr, "%s: %s: --seqlen %lld capped to the model's context %lld\n", PROG, m->name, seqlen,
                n_ctx_train);
        seqlen = n_ctx_train;
    }
    char calib_key[320];
    xfmt(calib_key, sizeof calib_key, "%s-n%lld-l%lld-s0", R->calib_key, R->o.nsamples, seqlen);
    cJSON_Delete(info_keep);
    char *qs = shq(R->sqz), *qbin = shq(R->llama_bin), *qf32 = shq(f32), *qcal = shq(R->calib);
    const char *f32_dep[] = {f32, NULL};

    /* The importance matrix, once per model and calibration setting. */
    char imat[PATH_MAX];
    xfmt(imat, sizeof imat, "%s/imatrix-%s.gguf", dir, calib_key);
    double imat_s = NAN;
    int imat_state = 0;
    {
        char *qi = shq(imat);
        xfmt(cmd, sizeof cmd, "%s/llama-imatrix -m %s -f %s -o %s -c %lld -b %lld --chunks %lld --no-ppl -t %lld",
             qbin, qf32, qcal, qi, seqlen, seqlen, R->o.nsamples, R->o.threads);
        free(qi);
        int cached;
        imat_state = make_step("llama-imatrix", imat, NULL, f32_dep, R->o.fresh, cmd, 0, &imat_s, &cached) ? -1 : 1;
    }

    for (int ti = 0; ti < n_types; ti++) {
        const char *T = types[ti];
        row_t *r = &rows[(*n_rows)++];
        memset(r, 0, sizeof *r);
        r->model = m->name;
        xfmt(r->type, sizeof r->type, "%s", T);
        r->ctx = ctx;
        r->f32 = f32c;
        r->n_params = n_params;
        r->imatrix_s = imat_s;
        r->imatrix_state = imat_state;
        r->size_ok = -1;
        char label[1024];

        /* sqz RTN and GPTQ. */
        static const char *const methods[2] = {"rtn", "gptq"};
        char sqz_file[2][PATH_MAX], report[2][PATH_MAX + 16];
        for (int k = 0; k < 2; k++) {
            cell_t *c = k ? &r->gptq : &r->rtn;
            xfmt(sqz_file[k], sizeof sqz_file[k], "%s/sqz-%s-%s-%s.gguf", dir, T, methods[k], calib_key);
            xfmt(report[k], sizeof report[k], "%s.report.json", sqz_file[k]);
            xfmt(label, sizeof label, "[%s %s] sqz %s", m->name, T, k ? "GPTQ" : "RTN");
            if (R->o.only_llamacpp) { c->state = 2; c->why = "skipped"; continue; }
            if (!R->have_quantize) {
                fprintf(stderr, "%s: %s: `%s quantize` does not exist yet: cell not measured\n", PROG, label, R->sqz);
                c->state = -1;
                c->why = "no sqz quantize";
                continue;
            }
            char *qo = shq(sqz_file[k]), *qr = shq(report[k]);
            xfmt(cmd, sizeof cmd,
                 "%s quantize %s -o %s --type %s --method %s --calib %s --nsamples %lld --seqlen %lld --seed 0 "
                 "--threads %lld --json %s",
                 qs, qf32, qo, T, methods[k], qcal, R->o.nsamples, seqlen, R->o.threads, qr);
            free(qo); free(qr);
            int cached;
            if (make_step(label, sqz_file[k], report[k], f32_dep, R->o.fresh || R->o.fresh_sqz, cmd, 0, &c->seconds,
                          &cached)) {
                c->state = -1;
                c->why = "quantize failed";
                continue;
            }
            c->bytes = file_size(sqz_file[k]);
            if (measure_ppl(R, label, sqz_file[k], ctx, &c->ppl, NULL)) { c->state = -1; c->why = "ppl failed"; }
            else c->state = 1;
        }

        /* llama.cpp with the imatrix, output/embedding types as sqz chose them. */
        xfmt(label, sizeof label, "[%s %s] llama.cpp", m->name, T);
        int have_types = 0;
        for (int k = 1; k >= 0 && !have_types; k--)
            if ((k ? r->gptq : r->rtn).state == 1 || file_exists(report[k]))
                have_types = report_types(report[k], r->out_type, r->embd_type, sizeof r->out_type) == 0;
        if (!have_types) {
            /* What sqz quantize does by default: T for both, with llama-quantize's fallback. */
            xfmt(r->out_type, sizeof r->out_type, "%s", fallback_type(T, dim));
            xfmt(r->embd_type, sizeof r->embd_type, "%s", fallback_type(T, dim));
            fprintf(stderr, "%s: %s: no sqz report: output/embedding type %s (sqz's default for row length %lld)\n",
                    PROG, label, r->out_type, dim);
        }
        if (imat_state != 1) {
            r->llama.state = -1;
            r->llama.why = "imatrix failed";
        } else {
            char lf[PATH_MAX];
            xfmt(lf, sizeof lf, "%s/llama-%s-out%s-emb%s-%s.gguf", dir, T, r->out_type, r->embd_type,
                 calib_key);
            char *qi = shq(imat), *qo = shq(lf);
            xfmt(cmd, sizeof cmd,
                 "%s/llama-quantize --imatrix %s --pure --output-tensor-type %s --token-embedding-type %s %s %s %s "
                 "%lld",
                 qbin, qi, r->out_type, r->embd_type, qf32, qo, T, R->o.threads);
            free(qi); free(qo);
            const char *deps[] = {f32, imat, NULL};
            int cached;
            if (make_step(label, lf, NULL, deps, R->o.fresh, cmd, 0, &r->llama.seconds, &cached)) {
                r->llama.state = -1;
                r->llama.why = "quantize failed";
            } else {
                r->llama.bytes = file_size(lf);
                if (measure_ppl(R, label, lf, ctx, &r->llama.ppl, NULL)) {
                    r->llama.state = -1;
                    r->llama.why = "ppl failed";
                } else {
                    r->llama.state = 1;
                }
            }
        }

        /* Equal size: every sqz file against llama.cpp's, within 0.5%. */
        if (r->llama.bytes > 0) {
            for (int k = 0; k < 2; k++) {
                const cell_t *c = k ? &r->gptq : &r->rtn;
                if (c->bytes <= 0) continue;
                double d = (double)(c->bytes - r->llama.bytes) / (double)r->llama.bytes;
                if (fabs(d) > fabs(r->size_diff)) r->size_diff = d;
                int ok = fabs(d) <= 0.005;
                r->size_ok = (r->size_ok == 0) ? 0 : ok;
                fprintf(stderr, "%s: [%s %s] size: sqz %s %lld bytes (%.4f bpw), llama.cpp %lld bytes (%.4f bpw): "
                                "%+.3f%%%s\n",
                        PROG, m->name, T, k ? "GPTQ" : "RTN", c->bytes, 8.0 * (double)c->bytes / (double)n_params,
                        r->llama.bytes, 8.0 * (double)r->llama.bytes / (double)n_params, 100 * d,
                        ok ? "" : "  <-- SIZE MISMATCH (more than 0.5%)");
            }
        }
    }
    free(qs); free(qbin); free(qf32); free(qcal);
    return 0;
}

/* ------------------------------------------------------------------ table */

static void fmt_ppl(char *out, size_t cap, const cell_t *c) {
    if (c->state == 1) xfmt(out, cap, "%.4f", c->ppl);
    else xfmt(out, cap, "%s", c->why ? c->why : "-");
}

static void fmt_secs(char *out, size_t cap, int ok, double s) {
    if (ok && isfinite(s)) xfmt(out, cap, "%.1f", s);
    else xfmt(out, cap, "-");
}

static void fmt_size(char *out, size_t cap, long long bytes, long long n_params, int bpw) {
    if (bytes <= 0) xfmt(out, cap, "-");
    else if (bpw) xfmt(out, cap, "%.3f", 8.0 * (double)bytes / (double)n_params);
    else xfmt(out, cap, "%.2f", (double)bytes / 1048576.0);
}

static void make_table(strbuf *b, const row_t *rows, int n) {
    sb_printf(b, "| model | type | ctx | sqz MiB | sqz bpw | llama.cpp MiB | llama.cpp bpw | F32 ppl | sqz RTN ppl | "
                 "sqz GPTQ ppl | llama.cpp+imatrix ppl | sqz RTN s | sqz GPTQ s | llama-imatrix s | llama-quantize s |\n"
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const row_t *r = &rows[i];
        /* sqz's size: GPTQ's file (RTN's when GPTQ has none); both are the same size. */
        long long sb = r->gptq.bytes > 0 ? r->gptq.bytes : r->rtn.bytes;
        char s_mib[32], s_bpw[48], l_mib[32], l_bpw[32], f32[32], rtn[32], gptq[32], lc[32], t1[32], t2[32], t3[32],
            t4[32];
        fmt_size(s_mib, sizeof s_mib, sb, r->n_params, 0);
        fmt_size(s_bpw, sizeof s_bpw, sb, r->n_params, 1);
        fmt_size(l_mib, sizeof l_mib, r->llama.bytes, r->n_params, 0);
        fmt_size(l_bpw, sizeof l_bpw, r->llama.bytes, r->n_params, 1);
        if (r->size_ok == 0) {
            size_t l = strlen(s_bpw);
            xfmt(s_bpw + l, sizeof s_bpw - l, " (size %+.2f%%!)", 100 * r->size_diff);
        }
        fmt_ppl(f32, sizeof f32, &r->f32);
        fmt_ppl(rtn, sizeof rtn, &r->rtn);
        fmt_ppl(gptq, sizeof gptq, &r->gptq);
        fmt_ppl(lc, sizeof lc, &r->llama);
        fmt_secs(t1, sizeof t1, r->rtn.state == 1 || r->rtn.bytes > 0, r->rtn.seconds);
        fmt_secs(t2, sizeof t2, r->gptq.state == 1 || r->gptq.bytes > 0, r->gptq.seconds);
        fmt_secs(t3, sizeof t3, r->imatrix_state == 1, r->imatrix_s);
        fmt_secs(t4, sizeof t4, r->llama.bytes > 0, r->llama.seconds);
        sb_printf(b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r->model,
                  r->type, r->ctx, s_mib, s_bpw, l_mib, l_bpw, f32, rtn, gptq, lc, t1, t2, t3, t4);
    }
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_quality [options]\n"
            "  --models LIST    comma-separated GGUF files / HF folders / names under ../shared/models / 'default'\n"
            "                   (default: the default model + every model in ../shared/models with a tokenizer)\n"
            "  --types LIST     default Q8_0,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K\n"
            "  --ctx N          evaluation window (default: each model's context length)\n"
            "  --chunks K       evaluate the first K windows only (default: all)\n"
            "  --text FILE      evaluation text (default ../shared/data/wikitext-2-raw-test.txt)\n"
            "  --calib FILE     calibration text (default ../shared/data/calib-state-of-the-union.txt)\n"
            "  --nsamples N     calibration windows (default 128; llama-imatrix --chunks N)\n"
            "  --seqlen L       calibration window length (default 512, capped at the model context; imatrix -c L)\n"
            "  --threads N      threads for every tool (default: all CPUs)\n"
            "  --sqz PATH       the sqz program (default: sqz beside this program)\n"
            "  --llama-bin DIR  llama.cpp bin dir (default $LLAMA_BIN or where scripts/build_llamacpp.sh built them)\n"
            "  --fresh          ignore the cache (build/bench-cache/quality) and redo every cell\n"
            "  --fresh-sqz      redo the sqz RTN/GPTQ cells only (after changing sqz quantize)\n"
            "  --only-llamacpp  debug: F32 and llama.cpp cells only (implies --no-append)\n"
            "  --no-append      do not append the table to bench/RESULTS.md\n");
}



int main(int argc, char **argv) {
    run_t R;
    memset(&R, 0, sizeof R);
    opts_t *o = &R.o;
    o->types_arg = "Q8_0,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K";
    o->nsamples = 128;
    o->seqlen = 512;
    o->append = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        long long *num = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--no-append")) { o->append = 0; continue; }
        else if (!strcmp(a, "--fresh")) { o->fresh = 1; continue; }
        else if (!strcmp(a, "--fresh-sqz")) { o->fresh_sqz = 1; continue; }
        else if (!strcmp(a, "--only-llamacpp")) { o->only_llamacpp = 1; o->append = 0; continue; }
        else if (!v) { fprintf(stderr, "%s: %s needs a value\n", PROG, a); usage(stderr); return 2; }
        else if (!strcmp(a, "--models")) o->models_arg = v;
        else if (!strcmp(a, "--types")) o->types_arg = v;
        else if (!strcmp(a, "--calib")) o->calib_arg = v;
        else if (!strcmp(a, "--text")) o->text_arg = v;
        else if (!strcmp(a, "--sqz")) o->sqz_arg = v;
        else if (!strcmp(a, "--llama-bin")) o->llama_bin_arg = v;
        else if (!strcmp(a, "--ctx")) num = &o->ctx;
        else if (!strcmp(a, "--chunks")) num = &o->chunks;
        else if (!strcmp(a, "--nsamples")) num = &o->nsamples;
        else if (!strcmp(a, "--seqlen")) num = &o->seqlen;
        else if (!strcmp(a, "--threads")) num = &o->threads;
        else { fprintf(stderr, "%s: unknown option %s\n", PROG, a); usage(stderr); return 2; }
        if (num && parse_ll(v, 1, 1LL << 30, num)) {
            fprintf(stderr, "%s: %s '%s': expected a positive integer\n", PROG, a, v);
            return 2;
        }
        i++;
    }
    if (o->threads <= 0) o->threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    if (o->ctx == 1) { fprintf(stderr, "%s: --ctx must be at least 2\n", PROG); return 2; }

    /* Types. */
    char *types_buf = strdup(o->types_arg), *types[MAX_TYPES];
    int n_types = 0;
    for (char *t = strtok(types_buf, ","); t; t = strtok(NULL, ",")) {
        int id = sqz_type_from_name(t);
        const sqz_type_traits *tt = id >= 0 ? sqz_type_get(id) : NULL;
        if (!tt || !tt->quantize || n_types >= MAX_TYPES) {
            fprintf(stderr, "%s: --types: '%s' is not a block type sqz quantizes into\n", PROG, t);
            free(types_buf);
            return 2;
        }
        types[n_types++] = (char *)tt->name;
    }
    if (!n_types) { fprintf(stderr, "%s: --types is empty\n", PROG); free(types_buf); return 2; }

    int rc = 1;
    model_t models[MAX_MODELS];
    int n_models = 0;
    row_t *rows = NULL;
    int n_rows = 0;
    memset(models, 0, sizeof models);
    R.root = repo_root();
    const char *env_shared = getenv("SQZ_SHARED");
    if (env_shared && env_shared[0]) R.shared = strdup(env_shared);
    else {
        R.shared = malloc(strlen(R.root) + 16);
        if (R.shared) sprintf(R.shared, "%s/../shared", R.root);
    }
    char *exe = exe_dir();
    if (o->sqz_arg) R.sqz = strdup(o->sqz_arg);
    else {
        R.sqz = malloc(strlen(exe) + 8);
        if (R.sqz) sprintf(R.sqz, "%s/sqz", exe);
    }
    R.cache = malloc(strlen(exe) + 32);
    if (R.cache) sprintf(R.cache, "%s/bench-cache/quality", exe);
    free(exe);
    {
        char p[PATH_MAX];
        xfmt(p, sizeof p, "%s/data/wikitext-2-raw-test.txt", R.shared);
        R.text = strdup(o->text_arg ? o->text_arg : p);
        xfmt(p, sizeof p, "%s/data/calib-state-of-the-union.txt", R.shared);
        R.calib = strdup(o->calib_arg ? o->calib_arg : p);
    }
    if (!file_exists(R.sqz)) { fprintf(stderr, "%s: %s not found (build sqz, or pass --sqz)\n", PROG, R.sqz); goto out; }
    if (!file_exists(R.text)) { fprintf(stderr, "%s: evaluation text %s not found\n", PROG, R.text); goto out; }
    if (!file_exists(R.calib)) { fprintf(stderr, "%s: calibration text %s not found\n", PROG, R.calib); goto out; }
    {
        char rt[PATH_MAX], rc_[PATH_MAX];
        if (realpath(R.text, rt) && realpath(R.calib, rc_) && !strcmp(rt, rc_)) {
            fprintf(stderr, "%s: the calibration text must not be the evaluation text (%s)\n", PROG, rt);
            goto out;
        }
    }
    R.llama_bin = llama_bin_dir(R.root, o->llama_bin_arg, "llama-quantize", PROG);
    if (!R.llama_bin) goto out;
    {
        char probe[PATH_MAX];
        xfmt(probe, sizeof probe, "%s/llama-imatrix", R.llama_bin);
        if (!file_exists(probe)) { fprintf(stderr, "%s: %s not found\n", PROG, probe); goto out; }
        char *q = shq(R.cache);
        char cmd[PATH_MAX + 16];
        xfmt(cmd, sizeof cmd, "mkdir -p %s", q);
        free(q);
        if (system(cmd) != 0) { fprintf(stderr, "%s: cannot create %s\n", PROG, R.cache); goto out; }
        /* Does `sqz quantize` exist? (`sqz quantize --help` exits 0 only then.) */
        q = shq(R.sqz);
        xfmt(cmd, sizeof cmd, "%s quantize --help > /dev/null 2>&1", q);
        free(q);
        R.have_quantize = system(cmd) == 0;
        if (!R.have_quantize && !o->only_llamacpp)
            fprintf(stderr, "%s: %s has no `quantize` command yet: the sqz RTN/GPTQ cells will fail "
                            "(--only-llamacpp measures the rest)\n", PROG, R.sqz);
    }
    path_key(R.text, R.text_key, sizeof R.text_key);
    path_key(R.calib, R.calib_key, sizeof R.calib_key);
    if (o->models_arg ? parse_models(&R, models, &n_models) : default_models(&R, models, &n_models)) {
        if (!n_models) { fprintf(stderr, "%s: no models to measure\n", PROG); goto out; }
    }

    rows = calloc((size_t)(n_models * n_types), sizeof *rows);
    if (!rows) goto out;
    char ctx_note[4096] = "";
    int model_failures = 0;
    for (int i = 0; i < n_models; i++)
        if (run_model(&R, &models[i], types, n_types, rows, &n_rows, ctx_note, sizeof ctx_note)) model_failures++;

    /* Report. */
    int failed = model_failures, mismatched = 0;
    for (int i = 0; i < n_rows; i++) {
        const cell_t *cs[] = {&rows[i].f32, &rows[i].rtn, &rows[i].gptq, &rows[i].llama};
        for (int k = 0; k < 4; k++) failed += cs[k]->state == -1;
        mismatched += rows[i].size_ok == 0;
    }
    strbuf tab = {0};
    make_table(&tab, rows, n_rows);
    char ctx_desc[64], chunks_desc[64], chunks_flag[64] = "";
    if (o->ctx > 0) xfmt(ctx_desc, sizeof ctx_desc, "ctx %lld", o->ctx);
    else xfmt(ctx_desc, sizeof ctx_desc, "ctx = model context");
    if (o->chunks > 0) xfmt(chunks_flag, sizeof chunks_flag, " --chunks %lld", o->chunks);
    if (o->chunks > 0) xfmt(chunks_desc, sizeof chunks_desc, "chunks %lld", o->chunks);
    else xfmt(chunks_desc, sizeof chunks_desc, "all chunks");
    char bench[256];
    tfmt(bench, sizeof bench, "quality (%s, GPTQ protocol, %s, %s)", base_name(R.text), ctx_desc, chunks_desc);
    char heading[1024];
    results_heading(R.root, bench, heading, sizeof heading);
    strbuf notes = {0};
    sb_printf(&notes,
              "Perplexity: `sqz ppl FILE %s --ctx C --protocol gptq%s` (ctx per model: %s). "
              "Calibration: %s, %lld × %lld tokens (sqz quantize: random windows, --seed 0; llama-imatrix: "
              "its first %lld chunks of %lld tokens, -b %lld --no-ppl), never the evaluation text. "
              "F32: `llama-quantize --allow-requantize MODEL F32.gguf F32`. sqz: `sqz quantize F32.gguf --type T "
              "--method rtn|gptq --calib ... --nsamples %lld --seqlen %lld --seed 0` (other options default). "
              "llama.cpp: `llama-quantize --imatrix imatrix.gguf --pure --output-tensor-type X "
              "--token-embedding-type Y F32.gguf out.gguf T`, X/Y the types sqz wrote for the output head / token "
              "embedding. bpw = 8 · file bytes / parameters (sqz info). Times are wall seconds of each command "
              "on %lld threads (cached cells keep the time of the run that made them).\n",
              base_name(R.text), chunks_flag, ctx_note,
              base_name(R.calib), o->nsamples, o->seqlen, o->nsamples, o->seqlen, o->seqlen, o->nsamples, o->seqlen,
              o->threads);
    printf("%s\n\n%s\n%s", heading, tab.s ? tab.s : "", notes.s ? notes.s : "");
    if (failed || mismatched)
        printf("\n%d cell(s) failed, %d row(s) with sizes more than 0.5%% apart (see stderr).\n", failed, mismatched);
    if (o->append && tab.s) {
        if (failed || mismatched) {
            fprintf(stderr, "%s: not appended to bench/RESULTS.md: %d failed cell(s), %d size mismatch(es)\n", PROG,
                    failed, mismatched);
        } else {
            strbuf all = {0};
            sb_printf(&all, "\n%s\n\n%s\n%s", heading, tab.s, notes.s ? notes.s : "");
            if (all.s) append_results(R.root, all.s, PROG);
            free(all.s);
        }
    }
    free(tab.s);
    free(notes.s);
    rc = (failed || mismatched) ? 1 : 0;

out:
    for (int i = 0; i < n_models; i++) {
        free(models[i].path);
        free(models[i].name);
        free(models[i].key);
    }
    free(rows);
    free(types_buf);
    free(R.root); free(R.shared); free(R.sqz); free(R.llama_bin); free(R.cache); free(R.text); free(R.calib);
    return rc;
}

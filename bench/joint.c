/* bench_joint: joint pruning + quantization against quantization alone and against
 * pruning first, then quantizing, at budgets below 3 bits per weight of the original
 * model (bench/README.md).
 *
 *   bench_joint [--model M ...] [--bpw 2.25,2.5,2.75] [--ctx 512] [--chunks 8] [--nsamples 8]
 *               [--seqlen 512] [--prune auto] [--rounds 1] [--threads N] [--text FILE] [--calib FILE]
 *               [--sqz PATH] [--llama-bin DIR] [--fresh] [--no-append]
 *
 * Models (--model, repeatable): by default the default model and, when present,
 * ../shared/models/stories260K. A model without a tokenizer is measured on token ids
 * sampled from the unpruned model itself (temperature 1, each sequence from BOS, seed
 * fixed): its perplexity on them is exp(H(p) + KL(p || q)), so it rises exactly as the
 * compressed model q departs from the original p. Calibration for such a model: other
 * samples (another seed); --ctx and --seqlen become the sample length (256).
 *
 * Per budget B (bytes = floor(B · n_params / 8) of the original model):
 *   joint      `sqz compress MODEL --target-size BYTES --prune P` (widths and types in one
 *              knapsack, compensated removal, GPTQ);
 *   quant-only `sqz compress MODEL --target-size BYTES`: below the model's smallest
 *              quantized size it is "unreachable (min X bpw)", from sqz's message;
 *   two-step   uniform widths from the joint file's kept fractions of query heads and FFN
 *              channels, scaled down (by 5% steps) until the uniformly pruned model's smallest
 *              quantized size is at most 90% of the budget (FFN widths in multiples of the
 *              joint's step; also the next wider FFN, and that with one query head fewer
 *              per layer, when their smallest size is within 98% of the budget: the best
 *              file counts),
 *              chosen by activation-weighted magnitude and removed without compensation:
 *              `sqz prune MODEL --attn-keep FA --ffn-keep FF --select magnitude
 *              --no-compensate`, then `sqz compress PRUNED --target-size BYTES`.
 * Every perplexity: `sqz ppl FILE TEXT --ctx C --protocol gptq --chunks K`. Calibration
 * for all: the same --calib windows (--nsamples × --seqlen, seed 0).
 * Speed: llama-bench prefill (pp512, 3 repetitions) of Q8_0 files of the two-step
 * pruned model and of the unpruned model, quantized the same way (`sqz quantize --type
 * Q8_0 --method rtn`): the pruned file's tokens/s over the unpruned one's.
 *
 * Files are cached in $SQZ_BENCH_DIR, else joint/ beside the program, one folder per model
 * (a step is redone when its marker is older than its inputs' or with --fresh). The
 * table goes to bench/RESULTS.md unless --no-append or a step failed. */
#define PROG "bench_joint"
#include "bench_util.h"
#include "sqz/model.h"

typedef struct {
    const char *models[8];
    int n_models;
    const char *text, *calib, *sqz, *llama_bin, *bpw, *prune;
    long long ctx, chunks, nsamples, seqlen, threads, rounds;
    int fresh, append;
} opts_t;

typedef struct {
    double bpw_target;
    long long budget;
    int state[3];       /* per method: 1 measured, 2 unreachable, -1 failed */
    double ppl[3], bpw[3], min_bpw[3];
    double kept_params; /* joint: weights after pruning */
    double fa, ff;      /* joint: kept fractions of query heads and FFN channels */
    double pp_pruned, pp_full; /* llama-bench prefill tokens/s, two-step widths vs unpruned, Q8_0 */
} row_t;

static const char *const METHOD[3] = {"joint prune+quant", "quant-only", "two-step (magnitude prune, then quant)"};

static char *g_sqz, *g_text, *g_calib, *g_dir;
static opts_t g_o;
static long long g_ctx, g_chunks, g_seqlen; /* this model's: the options, or the sample length */

static int ppl_of(const char *gguf, double *ppl) {
    char json[PATH_MAX], cmd[4 * PATH_MAX], log[PATH_MAX + 8];
    xfmt(json, sizeof json, "%s.ppl-c%lld-k%lld.json", gguf, g_ctx, g_chunks);
    xfmt(log, sizeof log, "%s.log", json);
    char mk[PATH_MAX];
    xfmt(mk, sizeof mk, "%s.done", gguf);
    if (!g_o.fresh && file_exists(json) && mtime_of(json) >= mtime_of(mk)) {
        cJSON *j = read_json(json);
        *ppl = j ? json_num(j, "ppl", NAN) : NAN;
        cJSON_Delete(j);
        if (isfinite(*ppl)) return 0;
    }
    char *qs = shq(g_sqz), *qg = shq(gguf), *qt = shq(g_text), *qj = shq(json);
    xfmt(cmd, sizeof cmd, "%s ppl %s %s --ctx %lld --protocol gptq --chunks %lld --threads %lld --json %s", qs, qg, qt,
         g_ctx, g_chunks, g_o.threads, qj);
    free(qs); free(qg); free(qt); free(qj);
    fprintf(stderr, "%s: ppl %s\n", PROG, base_name(gguf));
    if (run_logged(cmd, log, 0) < 0) return -1;
    cJSON *j = read_json(json);
    *ppl = j ? json_num(j, "ppl", NAN) : NAN;
    cJSON_Delete(j);
    return isfinite(*ppl) ? 0 : -1;
}

/* sqz compress SRC to OUT at `budget` bytes (extra: more flags); 0 made, 2 unreachable
 * (*min_bpw from the message, relative to n_params), -1 failed. */
static int compress(const char *label, const char *src, const char *out, long long budget, const char *extra,
                    const char *const *deps, long long n_params, double *min_bpw) {
    char cmd[6 * PATH_MAX], unr[PATH_MAX + 32];
    xfmt(unr, sizeof unr, "%s.unreachable", out);
    if (!g_o.fresh && file_exists(unr) && mtime_of(unr) >= (deps && deps[0] ? mtime_of(deps[0]) : 0)) {
        cJSON *j = read_json(unr);
        *min_bpw = j ? json_num(j, "min_bpw", NAN) : NAN;
        cJSON_Delete(j);
        fprintf(stderr, "%s: %s: cached: unreachable\n", PROG, label);
        return 2;
    }
    unlink(unr);
    char json[PATH_MAX + 8];
    xfmt(json, sizeof json, "%s.json", out);
    char *qs = shq(g_sqz), *qm = shq(src), *qo = shq(out), *qc = shq(g_calib), *qj = shq(json);
    xfmt(cmd, sizeof cmd,
         "%s compress %s -o %s --target-size %lld --calib %s --nsamples %lld --seqlen %lld --seed 0 --threads %lld "
         "--rounds %lld --json %s --quiet %s",
         qs, qm, qo, budget, qc, g_o.nsamples, g_seqlen, g_o.threads, g_o.rounds, qj, extra ? extra : "");
    free(qs); free(qm); free(qo); free(qc); free(qj);
    double sec;
    if (make_step(label, out, json, deps, g_o.fresh, cmd, 1, &sec, NULL) == 0) return 0;
    char log[PATH_MAX + 8];
    xfmt(log, sizeof log, "%s.log", out);
    char *txt = slurp(log);
    const char *p = txt ? strstr(txt, "minimum ") : NULL;
    long long minb = 0;
    if (p && sscanf(p, "minimum %lld bytes", &minb) == 1) {
        *min_bpw = 8.0 * (double)minb / (double)n_params;
        char js[128];
        xfmt(js, sizeof js, "{\"min_bpw\": %.6f}\n", *min_bpw);
        write_text(unr, js);
        free(txt);
        fprintf(stderr, "%s: %s: unreachable (min %.3f bpw)\n", PROG, label, *min_bpw);
        return 2;
    }
    if (txt) fprintf(stderr, "%s: %s failed:\n%s\n", PROG, label, txt);
    free(txt);
    return -1;
}

/* llama-bench prefill tokens/s of gguf (pp512), or NaN. */
static double prefill(const char *gguf) {
    char cmd[3 * PATH_MAX];
    char *qb = shq(g_o.llama_bin), *qg = shq(gguf);
    xfmt(cmd, sizeof cmd, "%s/llama-bench -m %s -p 512 -n 0 -r 3 -t %lld -o json 2>/dev/null", qb, qg, g_o.threads);
    free(qb); free(qg);
    char *out = run_capture(cmd);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    free(out);
    double v = NAN;
    const cJSON *it = cJSON_IsArray(j) ? cJSON_GetArrayItem(j, 0) : NULL;
    if (it) v = json_num(it, "avg_ts", NAN);
    cJSON_Delete(j);
    return v;
}

/* Token ids sampled from the model itself at temperature 1: n_seq sequences of len tokens,
 * each from BOS, written to out (via a temporary file) as a JSON array of sequences
 * (calibration windows then start at BOS, as ppl's windows of --ctx len do). Deterministic
 * for a seed. Each step reruns the prefix (no KV cache): fine for the small models that
 * lack a tokenizer. */
static int sample_ids(const char *model, int n_seq, int len, uint64_t seed, const char *out) {
    if (file_exists(out) && !g_o.fresh) return 0;
    sqz_err err;
    sqz_model m;
    if (sqz_model_load(&m, model, 0, &err)) {
        fprintf(stderr, "%s: %s\n", PROG, err.msg);
        return -1;
    }
    sqz_pool *pool = sqz_pool_create((int)g_o.threads, &err);
    int32_t *toks = malloc((size_t)len * sizeof(int32_t));
    float *logits = malloc((size_t)m.cfg.n_vocab * sizeof(float));
    cJSON *arr = cJSON_CreateArray();
    int rc = (!pool || !toks || !logits || !arr || m.cfg.bos_id < 0) ? -1 : 0;
    if (rc) fprintf(stderr, "%s: %s: cannot sample (%s)\n", PROG, model, m.cfg.bos_id < 0 ? "no BOS id" : err.msg);
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    fprintf(stderr, "%s: sampling %d x %d tokens from %s (seed %llu)\n", PROG, n_seq, len, base_name(model),
            (unsigned long long)seed);
    for (int q = 0; q < n_seq && !rc; q++) {
        toks[0] = m.cfg.bos_id;
        for (int t = 1; t < len && !rc; t++) {
            if (sqz_forward(&m, pool, toks, t, t - 1, logits, &err)) {
                fprintf(stderr, "%s: %s\n", PROG, err.msg);
                rc = -1;
                break;
            }
            double mx = -INFINITY, z = 0;
            for (int v = 0; v < m.cfg.n_vocab; v++) mx = logits[v] > mx ? logits[v] : mx;
            for (int v = 0; v < m.cfg.n_vocab; v++) z += exp(logits[v] - mx);
            /* splitmix64 -> uniform in [0, 1) */
            uint64_t x = (st += 0x9E3779B97F4A7C15ull);
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
            x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
            x ^= x >> 31;
            double u = (double)(x >> 11) * 0x1.0p-53 * z, c = 0;
            int pick = m.cfg.n_vocab - 1;
            for (int v = 0; v < m.cfg.n_vocab; v++) {
                c += exp(logits[v] - mx);
                if (u < c) { pick = v; break; }
            }
            toks[t] = pick;
        }
        cJSON *seq = cJSON_CreateIntArray(toks, len);
        if (!seq) rc = -1;
        else cJSON_AddItemToArray(arr, seq);
    }
    if (!rc) {
        char *txt = cJSON_PrintUnformatted(arr);
        rc = txt && write_text(out, txt) == 0 ? 0 : -1;
        free(txt);
    }
    cJSON_Delete(arr);
    free(toks);
    free(logits);
    sqz_pool_free(pool);
    sqz_model_free(&m);
    return rc;
}

/* dst = src in Q8_0 by round to nearest (the speed comparison's files), as a cached step. */
static int q8_of(const char *label, const char *src, const char *dst, const char *const *deps) {
    char cmd[4 * PATH_MAX];
    char *qs = shq(g_sqz), *qm = shq(src), *qo = shq(dst);
    xfmt(cmd, sizeof cmd, "%s quantize %s -o %s --type Q8_0 --method rtn --quiet", qs, qm, qo);
    free(qs); free(qm); free(qo);
    double sec;
    return make_step(label, dst, NULL, deps, g_o.fresh, cmd, 0, &sec, NULL);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_joint [--model M ...] [--bpw 2.25,2.5,2.75] [--ctx 512] [--chunks 8] [--nsamples 8]\n"
                    "                   [--seqlen 512] [--prune auto] [--rounds 1] [--threads N] [--text FILE] [--calib FILE]\n"
                    "                   [--sqz PATH] [--llama-bin DIR] [--fresh] [--no-append]\n");
    return 2;
}

/* One model's rows: writes its section to b; returns nonzero when a step failed. */
static int bench_model(const char *root, const char *model, strbuf *b) {
    opts_t *o = &g_o;
    char p[PATH_MAX];
    char *exe = exe_dir();
    const char *base_dir = getenv("SQZ_BENCH_DIR");
    char bd[PATH_MAX], mkey[256];
    xfmt(bd, sizeof bd, "%s/joint", exe);
    free(exe);
    path_key(model, mkey, sizeof mkey);
    xfmt(p, sizeof p, "%s/%s", base_dir && base_dir[0] ? base_dir : bd, mkey);
    free(g_dir);
    g_dir = strdup(p);
    {
        char *q = shq(g_dir), cmd[PATH_MAX + 16];
        xfmt(cmd, sizeof cmd, "mkdir -p %s", q);
        free(q);
        if (system(cmd) != 0) return 1;
    }
    fprintf(stderr, "%s: == %s, files in %s\n", PROG, model, g_dir);
    long long n_params = 0;
    int has_tok = 0;
    {
        char info[PATH_MAX], cmd[3 * PATH_MAX + 64];
        xfmt(info, sizeof info, "%s/model.info.json", g_dir);
        char *qs = shq(g_sqz), *qm = shq(model), *qi = shq(info);
        xfmt(cmd, sizeof cmd, "%s info %s --json %s > /dev/null 2>&1", qs, qm, qi);
        free(qs); free(qm); free(qi);
        cJSON *j = system(cmd) == 0 ? read_json(info) : NULL;
        n_params = j ? (long long)json_num(j, "n_params", 0) : 0;
        has_tok = j && cJSON_IsObject(cJSON_GetObjectItem(j, "tokenizer"));
        cJSON_Delete(j);
        if (n_params <= 0) return 1;
    }
    free(g_text);
    free(g_calib);
    g_ctx = o->ctx, g_chunks = o->chunks, g_seqlen = o->seqlen;
    if (has_tok) {
        xfmt(p, sizeof p, "%s/../shared/data/wikitext-2-raw-test.txt", root);
        g_text = strdup(o->text ? o->text : p);
        xfmt(p, sizeof p, "%s/../shared/data/calib-state-of-the-union.txt", root);
        g_calib = strdup(o->calib ? o->calib : p);
    } else { /* no tokenizer: the model's own samples (see the top) */
        int len = 256, n_eval = 16, n_cal = 40; /* the last tenth held out: 4 */
        g_ctx = g_seqlen = len, g_chunks = n_eval;
        xfmt(p, sizeof p, "%s/samples-eval-%dx%d.seq.json", g_dir, n_eval, len);
        g_text = strdup(p);
        xfmt(p, sizeof p, "%s/samples-calib-%dx%d.seq.json", g_dir, n_cal, len);
        g_calib = strdup(p);
        if (sample_ids(model, n_eval, len, 1, g_text) || sample_ids(model, n_cal, len, 2, g_calib)) return 1;
    }
    if (!file_exists(g_text) || !file_exists(g_calib)) {
        fprintf(stderr, "%s: missing %s or %s\n", PROG, g_text, g_calib);
        return 1;
    }
    double ppl_model = NAN;
    int failed = ppl_of(model, &ppl_model) != 0;
    /* the unpruned Q8_0 file for the speed comparison */
    char full_q8[PATH_MAX];
    xfmt(full_q8, sizeof full_q8, "%s/full-Q8_0.gguf", g_dir);
    if (q8_of("unpruned Q8_0", model, full_q8, NULL)) failed = 1;
    row_t rows[16];
    int n_rows = 0;
    char list[256];
    xfmt(list, sizeof list, "%s", o->bpw);
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok && n_rows < 16; tok = strtok_r(NULL, ",", &save)) {
        row_t *r = &rows[n_rows++];
        memset(r, 0, sizeof *r);
        r->bpw_target = atof(tok);
        r->budget = (long long)floor(r->bpw_target * (double)n_params / 8.0);
        for (int k = 0; k < 3; k++) r->ppl[k] = r->bpw[k] = r->min_bpw[k] = NAN;
        r->pp_pruned = r->pp_full = r->fa = r->ff = r->kept_params = NAN;
        char out[3][PATH_MAX], label[128], extra[256], rs[32] = "";
        if (o->rounds > 1) xfmt(rs, sizeof rs, "-r%lld", o->rounds);
        xfmt(out[0], sizeof out[0], "%s/joint-b%s-%s%s.gguf", g_dir, tok, o->prune, rs);
        xfmt(out[1], sizeof out[1], "%s/quant-b%s%s.gguf", g_dir, tok, rs);
        xfmt(out[2], sizeof out[2], "%s/twostep-b%s-%s%s.gguf", g_dir, tok, o->prune, rs);
        xfmt(extra, sizeof extra, "--prune %s", o->prune);
        xfmt(label, sizeof label, "joint at %s bpw", tok);
        int st = compress(label, model, out[0], r->budget, extra, NULL, n_params, &r->min_bpw[0]);
        r->state[0] = st == 0 ? 1 : st;
        xfmt(label, sizeof label, "quant-only at %s bpw", tok);
        st = compress(label, model, out[1], r->budget, NULL, NULL, n_params, &r->min_bpw[1]);
        r->state[1] = st == 0 ? 1 : st;
        r->state[2] = -1;
        if (r->state[0] == 2) r->state[2] = 2, r->min_bpw[2] = r->min_bpw[0]; /* pruning cannot reach it either */
        if (r->state[0] == 1) { /* the joint file's kept fractions give the two-step's widths */
            char json[PATH_MAX + 8];
            xfmt(json, sizeof json, "%s.json", out[0]);
            cJSON *j = read_json(json), *pj = j ? cJSON_GetObjectItem(j, "prune") : NULL;
            const cJSON *ls = pj ? cJSON_GetObjectItem(pj, "layers") : NULL, *it;
            double h = 0, f = 0;
            int nl = 0;
            cJSON_ArrayForEach(it, ls) {
                h += json_num(it, "n_head", 0);
                f += json_num(it, "n_ff", 0);
                nl++;
            }
            r->kept_params = pj ? json_num(pj, "params_after", NAN) : NAN;
            double step = pj ? json_num(pj, "ffn_step", 32) : 32;
            cJSON_Delete(j);
            cJSON *info = NULL;
            xfmt(p, sizeof p, "%s/model.info.json", g_dir);
            info = read_json(p);
            const cJSON *l0 = info ? cJSON_GetArrayItem(cJSON_GetObjectItem(info, "layers"), 0) : NULL;
            double nh = l0 ? json_num(l0, "n_head", 0) : 0, nff = l0 ? json_num(l0, "n_ff", 0) : 0;
            double nkv = l0 ? json_num(l0, "n_head_kv", 0) : 0, hdim = l0 ? json_num(l0, "head_dim", 0) : 0;
            double dim = info ? json_num(info, "dim", 0) : 0, n_vocab = info ? json_num(info, "n_vocab", 0) : 0;
            cJSON_Delete(info);
            if (nl > 0 && nh > 0 && nff > 0 && dim > 0 && step >= 1) {
                /* the joint file's fractions, scaled down until a uniformly pruned model can
                 * reach the budget with room to spare (its smallest size, every matrix at
                 * the smallest type its rows fit, at most 90% of the budget); FFN widths in
                 * multiples of the joint's step (256 where ffn_down then fits Q2_K). The FFN
                 * step is coarse (a sixth of n_ff), so wider FFNs are tried too (below): the
                 * best file counts. */
                /* bytes per weight of the smallest type a row of n fits: Q2_K, Q4_0, else F16 */
#define BPW_OF(n) ((long long)(n) % 256 == 0 ? 84.0 / 256.0 : (long long)(n) % 32 == 0 ? 18.0 / 32.0 : 2.0)
#define MIN_BYTES(hk, kf) (nl * ((hk) * hdim * dim * BPW_OF(dim) + dim * (hk) * hdim * BPW_OF((hk) * hdim) + \
                                 2.0 * nkv * hdim * dim * BPW_OF(dim) + 2.0 * (kf) * dim * BPW_OF(dim) +   \
                                 dim * (kf) * BPW_OF(kf)) + (double)n_vocab * dim * BPW_OF(dim))
                double fa0 = h / (nl * nh), ff0 = f / (nl * nff), fa = fa0, kf = step;
                for (double sc = 1.0; sc > 0.05; sc -= 0.05) {
                    fa = fa0 * sc;
                    kf = floor(ff0 * sc * nff / step) * step;
                    if (kf < step) kf = step;
                    if (MIN_BYTES((double)lround(fa * nh), kf) <= 0.9 * (double)r->budget) break;
                }
                /* candidates: that; the next wider FFN; the next wider FFN with one query
                 * head fewer per layer (heads and channels traded): those whose smallest size
                 * is within 98% of the budget */
                double cand_fa[3] = {fa, fa, fa - 1.0 / nh}, cand_kf[3] = {kf, kf + step, kf + step};
                int n_cand = 0;
                for (int c = 0; c < 3; c++) {
                    double hk = (double)lround(cand_fa[c] * nh);
                    if (c == 0 || (cand_kf[c] < nff && hk >= 1 &&
                                   MIN_BYTES(hk, cand_kf[c]) <= 0.98 * (double)r->budget))
                        cand_fa[n_cand] = cand_fa[c], cand_kf[n_cand++] = cand_kf[c];
                }
#undef MIN_BYTES
#undef BPW_OF
                double best = INFINITY;
                for (int c = 0; c < n_cand; c++) {
                    double ffc = cand_kf[c] / nff;
                    fa = cand_fa[c];
                    char pruned[PATH_MAX], cmd[6 * PATH_MAX], outc[PATH_MAX];
                    /* the widths in the name: a changed rule makes a new file, not a stale hit */
                    xfmt(pruned, sizeof pruned, "%s/twostep-b%s-%s%s-a%.4f-f%.4f.pruned.gguf", g_dir, tok, o->prune,
                         rs, fa, ffc);
                    if (c == 0) xfmt(outc, sizeof outc, "%s", out[2]);
                    else xfmt(outc, sizeof outc, "%s/twostep-b%s-%s%s-a%.4f-f%.4f.gguf", g_dir, tok, o->prune, rs, fa, ffc);
                    char *qs = shq(g_sqz), *qm = shq(model), *qo = shq(pruned), *qc = shq(g_calib);
                    xfmt(cmd, sizeof cmd,
                         "%s prune %s -o %s --calib %s --nsamples %lld --seqlen %lld --seed 0 --threads %lld "
                         "--attn-keep %.4f --ffn-keep %.4f --select magnitude --no-compensate --quiet",
                         qs, qm, qo, qc, o->nsamples, g_seqlen, o->threads, fa, ffc);
                    free(qs); free(qm); free(qo); free(qc);
                    double sec, pc = NAN, minc = NAN;
                    xfmt(label, sizeof label, "two-step prune at %s bpw (heads %.3f, FFN %.0f)", tok, fa, cand_kf[c]);
                    const char *deps[] = {out[0], NULL};
                    if (make_step(label, pruned, NULL, deps, o->fresh, cmd, 0, &sec, NULL) != 0) continue;
                    const char *deps2[] = {pruned, NULL};
                    xfmt(label, sizeof label, "two-step quantize at %s bpw (heads %.3f, FFN %.0f)", tok, fa, cand_kf[c]);
                    st = compress(label, pruned, outc, r->budget, NULL, deps2, n_params, &minc);
                    if (st == 0 && ppl_of(outc, &pc) == 0 && pc < best) {
                        best = pc;
                        r->state[2] = 1, r->fa = fa, r->ff = ffc;
                        xfmt(out[2], sizeof out[2], "%s", outc);
                    } else if (st == 2 && r->state[2] != 1) {
                        r->state[2] = 2, r->min_bpw[2] = minc;
                    }
                    if (st != 0 || pc != best) continue;
                    /* speed: the same widths, the same type */
                    char pq8[PATH_MAX + 16];
                    xfmt(pq8, sizeof pq8, "%s.Q8_0.gguf", pruned);
                    xfmt(label, sizeof label, "two-step Q8_0 at %s bpw (heads %.3f, FFN %.0f)", tok, fa, cand_kf[c]);
                    if (o->llama_bin && q8_of(label, pruned, pq8, deps2) == 0) {
                        r->pp_pruned = prefill(pq8);
                        r->pp_full = prefill(full_q8);
                    }
                }
            }
        }
        for (int k = 0; k < 3; k++) {
            if (r->state[k] == 1) {
                r->bpw[k] = 8.0 * (double)file_size(out[k]) / (double)n_params;
                if (ppl_of(out[k], &r->ppl[k])) r->state[k] = -1;
            }
            if (r->state[k] < 0) failed = 1;
        }
    }
    if (has_tok)
        sb_printf(b, "\nModel %s, %lld parameters, perplexity %.4f. Perplexity: `sqz ppl FILE %s --ctx %lld --protocol "
                  "gptq --chunks %lld`. Calibration: %s, %lld × %lld tokens, seed 0, the same for every method.\n\n",
                  base_name(model), n_params, ppl_model, base_name(g_text), g_ctx, g_chunks, base_name(g_calib),
                  o->nsamples, g_seqlen);
    else
        sb_printf(b, "\nModel %s (no tokenizer), %lld parameters. Perplexity on %lld sequences of %lld token ids "
                  "sampled from the unpruned model (temperature 1, from BOS, seed 1; its own perplexity on them "
                  "%.4f = exp of their entropy): `sqz ppl FILE %s --ctx %lld --protocol gptq`. Calibration: other "
                  "samples (seed 2), %lld × %lld tokens, seed 0, the same for every method.\n\n",
                  base_name(model), n_params, g_chunks, g_ctx, ppl_model, base_name(g_text), g_ctx, o->nsamples,
                  g_seqlen);
    sb_printf(b, "| budget bpw | %s | %s | %s | two-step heads / channels kept | joint weights kept |\n|---:|---:|---:|---:|---:|---:|\n",
              METHOD[0], METHOD[1], METHOD[2]);
    for (int i = 0; i < n_rows; i++) {
        row_t *r = &rows[i];
        sb_printf(b, "| %.3g |", r->bpw_target);
        double best = INFINITY;
        for (int k = 0; k < 3; k++)
            if (r->state[k] == 1 && r->ppl[k] < best) best = r->ppl[k];
        for (int k = 0; k < 3; k++) {
            const char *em = r->state[k] == 1 && r->ppl[k] == best ? "**" : "";
            if (r->state[k] == 1) sb_printf(b, " %s%.3f%s (%.3f bpw) |", em, r->ppl[k], em, r->bpw[k]);
            else if (r->state[k] == 2) sb_printf(b, " unreachable (min %.3f bpw) |", r->min_bpw[k]);
            else sb_printf(b, " failed |");
        }
        if (isfinite(r->fa)) sb_printf(b, " %.1f%% / %.1f%% |", 100 * r->fa, 100 * r->ff);
        else sb_printf(b, " - |");
        if (isfinite(r->kept_params)) sb_printf(b, " %.1f%% |\n", 100 * r->kept_params / n_params);
        else sb_printf(b, " - |\n");
    }
    sb_printf(b, "\nPrefill speed in llama.cpp (`llama-bench -p 512 -n 0 -r 3 -t %lld`), Q8_0 files (`sqz quantize "
              "--type Q8_0 --method rtn`) of the two-step widths against the unpruned model:\n\n"
              "| budget bpw | pruned t/s | unpruned t/s | ratio |\n|---:|---:|---:|---:|\n", o->threads);
    for (int i = 0; i < n_rows; i++)
        sb_printf(b, "| %.3g | %.1f | %.1f | %.2f |\n", rows[i].bpw_target, rows[i].pp_pruned, rows[i].pp_full,
                  rows[i].pp_pruned / rows[i].pp_full);
    return failed;
}

int main(int argc, char **argv) {
    opts_t *o = &g_o;
    memset(o, 0, sizeof *o);
    o->bpw = "2.25,2.5,2.75";
    o->prune = "auto";
    o->ctx = 512, o->chunks = 8, o->nsamples = 8, o->seqlen = 512, o->append = 1, o->rounds = 1;
    o->threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long *ll = !strcmp(a, "--ctx") ? &o->ctx : !strcmp(a, "--chunks") ? &o->chunks
                      : !strcmp(a, "--nsamples") ? &o->nsamples : !strcmp(a, "--seqlen") ? &o->seqlen
                      : !strcmp(a, "--threads") ? &o->threads : !strcmp(a, "--rounds") ? &o->rounds : NULL;
        const char **str = !strcmp(a, "--bpw") ? &o->bpw
                         : !strcmp(a, "--prune") ? &o->prune : !strcmp(a, "--text") ? &o->text
                         : !strcmp(a, "--calib") ? &o->calib : !strcmp(a, "--sqz") ? &o->sqz
                         : !strcmp(a, "--llama-bin") ? &o->llama_bin : NULL;
        if (ll) {
            if (!v || parse_ll(v, 1, 1 << 20, ll)) return usage();
            i++;
        } else if (str) {
            if (!v) return usage();
            *str = v;
            i++;
        } else if (!strcmp(a, "--model")) {
            if (!v || o->n_models == 8) return usage();
            o->models[o->n_models++] = v;
            i++;
        } else if (!strcmp(a, "--fresh")) {
            o->fresh = 1;
        } else if (!strcmp(a, "--no-append")) {
            o->append = 0;
        } else {
            return usage();
        }
    }
    char *root = repo_root(), p[PATH_MAX];
    if (!root) return 1;
    char *def = NULL, *stories = NULL;
    if (!o->n_models) {
        if (!(def = default_model(root))) {
            fprintf(stderr, "%s: no model: run scripts/setup.sh or pass --model\n", PROG);
            return 1;
        }
        o->models[o->n_models++] = def;
        xfmt(p, sizeof p, "%s/../shared/models/stories260K/config.json", root);
        if (file_exists(p)) {
            xfmt(p, sizeof p, "%s/../shared/models/stories260K", root);
            o->models[o->n_models++] = stories = strdup(p);
        }
    }
    char *exe = exe_dir();
    xfmt(p, sizeof p, "%s/sqz", exe);
    free(exe);
    g_sqz = strdup(o->sqz ? o->sqz : p);
    o->llama_bin = llama_bin_dir(root, o->llama_bin, "llama-bench", PROG);
    if (!file_exists(g_sqz)) {
        fprintf(stderr, "%s: missing %s\n", PROG, g_sqz);
        return 1;
    }
    strbuf b = {0};
    char head[1024];
    results_heading(root, "bench_joint", head, sizeof head);
    sb_printf(&b, "\n%s\n\nBudgets in bits per weight of the original model (8 · bytes / its parameters). Every "
              "`sqz compress` below runs `--rounds %lld`. Joint: "
              "`sqz compress --prune %s` (widths and types in one knapsack, compensated removal, GPTQ); quant-only: "
              "`sqz compress` (below the smallest quantized size: unreachable); two-step: uniform widths (the joint "
              "file's kept fractions, scaled down until the pruned model's smallest quantized size is at most 90%% "
              "of the budget; also the next wider FFN, and that with one query head fewer per layer, when their "
              "smallest size is within 98%% of the budget: the best file counts), chosen by activation-weighted magnitude and removed without compensation (`sqz "
              "prune --select magnitude --no-compensate`), then `sqz compress` to the same byte budget. Best of a "
              "row in bold.\n", head, o->rounds, o->prune);
    int failed = 0;
    for (int i = 0; i < o->n_models; i++) failed |= bench_model(root, o->models[i], &b) != 0;
    fputs(b.s ? b.s : "", stdout);
    if (o->append && !failed) append_results(root, b.s, PROG);
    else if (failed) fprintf(stderr, "%s: a step failed: not appended to bench/RESULTS.md\n", PROG);
    free(b.s);
    free(def);
    free(stories);
    free(root);
    return failed;
}

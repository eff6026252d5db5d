/* sqz quantize: a model into a GGUF file, RTN or GPTQ, from calibration text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib_args.h"
#include "cli.h"
#include "sqz/calib.h"
#include "sqz/core.h"
#include "sqz/model.h"
#include "sqz/quant.h"
#include "sqz/quantize_model.h"
#include "sqz/tok.h"

const char HELP_QUANTIZE[] =
    "usage: sqz quantize MODEL -o OUT.gguf --type T [--method rtn|gptq]\n"
    "                    [--calib TEXT_FILE] [--nsamples N] [--seqlen L] [--seed S]\n"
    "                    [--no-sequential | --target-original] [--act-order] [--gptq-double]\n"
    "                    [--damp F]\n"
    "                    [--shrink F] [--rescale off|energy|unbiased|P]\n"
    "                    [--output-type T | --keep-output-type] [--embd-type T]\n"
    "                    [--device cpu|cuda] [--threads N] [--quiet] [--json REPORT]\n"
    "                    [--resume] [--checkpoint-every S]\n"
    "\n"
    "Quantizes MODEL (a Hugging Face folder or a .gguf file) into a GGUF file that\n"
    "llama.cpp loads unchanged. Every linear weight gets type T; norms stay F32.\n"
    "  -o, --output OUT   the GGUF file to write (via a temporary file and rename)\n"
    "  --type T           Q8_0 Q6_K Q5_K Q4_K Q3_K Q2_K Q5_1 Q5_0 Q4_1 Q4_0 IQ4_NL\n"
    "                     IQ4_XS IQ3_S IQ3_XXS IQ2_S IQ2_XS IQ2_XXS IQ1_M IQ1_S TQ2_0 TQ1_0\n"
    "                     F16 BF16 F32. A tensor whose rows do not fit T's block falls back as\n"
    "                     llama-quantize does (Q2_K,Q3_K->Q4_0, Q4_K->Q5_0, Q5_K->Q5_1,\n"
    "                     Q6_K->Q8_0, the IQ types->IQ4_NL); the report lists them.\n"
    "                     IQ3_S, IQ3_XXS (the IQ2 and IQ1 types): each group of 4 (8) weights\n"
    "                     one grid point, chosen jointly (GPTQ spreads each weight's error;\n"
    "                     IQ3_XXS, IQ2_XXS, IQ2_XS keep an even count of minus signs per 8;\n"
    "                     IQ1_S/IQ1_M: points of {-1,0,1} shifted by +-1/8 per 32 or per 8).\n"
    "                     TQ2_0, TQ1_0: ternary levels, one f16 scale per 256 (for models\n"
    "                     trained ternary; any other model loses most of its accuracy)\n"
    "  --method M         rtn: round to nearest with the best block scales, weighted by\n"
    "                     diag(H) of the calibration inputs when --calib is given (the\n"
    "                     codebook i-quants: diag(H) * sqrt(s2 + x^2) per value, s2 the\n"
    "                     mean square of its 256 values);\n"
    "                     gptq: error-compensating GPTQ with H (needs --calib).\n"
    "                     Default: gptq with --calib, rtn without\n"
    "  --calib FILE       calibration text (UTF-8), tokenized with the model's tokenizer,\n"
    "                     or a .json array of token ids (a model without a tokenizer)\n"
    "  --nsamples N       random windows of the text (default 128)\n"
    "  --seqlen L         tokens per window (default 512, at most the model's context)\n"
    "  --seed S           seed of the window positions (default 0)\n"
    "  --no-sequential    GPTQ: calibrate every layer on the original model's inputs\n"
    "                     (default: layer l sees the inputs of the already quantized\n"
    "                     layers 0..l-1)\n"
    "  --target-original  GPTQ, sequential: fit the original model's outputs instead\n"
    "                     of the quantized inputs' (needs a large calibration set;\n"
    "                     see docs/architecture.md)\n"
    "  --act-order        GPTQ: columns by decreasing H_ii (static groups)\n"
    "  --gptq-double      GPTQ's factor and sweep in double precision (default single,\n"
    "                     as GPTQ's reference: twice as fast on the CPU; a few levels per\n"
    "                     thousand differ, and with them the file's bytes)\n"
    "  --damp F           GPTQ dampening, fraction of mean(diag H) (default 0.01)\n"
    "  --shrink F         GPTQ: scale H's off-diagonal entries by 1-F before the sweep,\n"
    "                     so a small calibration set is not overfitted (0: plain GPTQ,\n"
    "                     1: no error feedback; default 0.75)\n"
    "  --rescale R        for types below 4 bits per weight: after quantizing, the\n"
    "                     scales of each 256 values times (sum x^2 / sum x*q)^P, the\n"
    "                     codes kept (x the weights they were made from, q as written):\n"
    "                     unbiased (P = 1, default: the written values' projection on\n"
    "                     the original equals its norm), energy (P = 0.5), off (P = 0),\n"
    "                     or P in [0, 1]. Least-squares scales shrink low-bit blocks\n"
    "                     by ~10%, and the shortfall adds up through the layers\n"
    "                     (docs/architecture.md, 'Rescaling')\n"
    "  --output-type T    type of the output head (default: T); with a tied embedding\n"
    "                     this is the embedding's type too\n"
    "  --keep-output-type the output head keeps its source type and bytes\n"
    "  --embd-type T      type of an untied token embedding (default: T)\n"
    "  --device D         cpu (default) or cuda: where GPTQ's layer passes (with their\n"
    "                     Grams) and factors run (a build with cmake -DSQZ_CUDA=ON and\n"
    "                     a GPU; the sweeps stay on the CPU for now)\n"
    "  --threads N        worker threads (default: all CPUs)\n"
    "  --quiet            no progress bar (it is shown only on a terminal anyway)\n"
    "  --json REPORT      per-tensor report: type, bytes, relative weight error,\n"
    "                     H-weighted output error; totals: file bytes, bits per weight\n"
    "  --resume           a resumable run: checkpoints go to OUT.part and OUT.state, and\n"
    "                     a run stopped (killed or interrupted) goes on from them when\n"
    "                     the same command is given again, writing the same bytes as an\n"
    "                     uninterrupted run; a checkpoint of another model, other\n"
    "                     calibration or other options is refused, naming which. Without\n"
    "                     it an interrupted run leaves nothing\n"
    "  --checkpoint-every S  seconds between checkpoints, taken after a layer (default\n"
    "                     60; 0: after every layer); implies checkpoints\n";

static int parse_type(const char *cmd, const char *flag, const char *v, int *out) {
    int t = v ? sqz_type_from_name(v) : -1;
    int ok = t >= 0 && sqz_type_writable(t);
    if (!ok) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s '%%s': expected one of Q8_0 Q6_K Q5_K Q4_K Q3_K Q2_K Q5_1 Q5_0 Q4_1 Q4_0 "
                                  "IQ4_NL IQ4_XS IQ3_S IQ3_XXS IQ2_S IQ2_XS IQ2_XXS IQ1_M IQ1_S TQ2_0 TQ1_0 F16 BF16 F32", flag);
        return usage_fail(cmd, msg, v ? v : "");
    }
    *out = t;
    return 0;
}

static const char *type_name(int t) { return sqz_type_get(t) ? sqz_type_get(t)->name : "?"; }

static cJSON *report_json(const char *model, const char *out, const sqz_qmodel_opts *o, const char *calib,
                          unsigned long long seed, const sqz_qmodel_report *r, int threads) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddStringToObject(root, "output", out);
    cJSON_AddStringToObject(root, "type", type_name(o->type));
    cJSON_AddStringToObject(root, "method", o->method == SQZ_QMETHOD_GPTQ ? "gptq" : "rtn");
    cJSON_AddBoolToObject(root, "sequential", o->windows && o->sequential && o->method == SQZ_QMETHOD_GPTQ);
    cJSON_AddBoolToObject(root, "target_original", o->windows && o->sequential && o->target_original);
    cJSON_AddBoolToObject(root, "act_order", o->act_order);
    cJSON_AddBoolToObject(root, "gptq_double", o->gptq_double);
    cJSON_AddNumberToObject(root, "rescale", o->rescale);
    cJSON_AddNumberToObject(root, "damp", o->percdamp);
    cJSON_AddNumberToObject(root, "shrink", o->shrink);
    cJSON_AddNumberToObject(root, "threads", threads);
    if (calib) {
        cJSON *c = cJSON_AddObjectToObject(root, "calib");
        cJSON_AddStringToObject(c, "file", calib);
        cJSON_AddNumberToObject(c, "nsamples", o->nsamples);
        cJSON_AddNumberToObject(c, "seqlen", o->seqlen);
        cJSON_AddNumberToObject(c, "seed", (double)seed);
        cJSON_AddNumberToObject(c, "tokens", (double)r->calib_tokens);
    } else {
        cJSON_AddNullToObject(root, "calib");
    }
    cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
    for (int i = 0; i < r->n_tensors; i++) {
        const sqz_qtensor_report *t = &r->tensors[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "name", t->name);
        cJSON_AddStringToObject(j, "type", type_name(t->type));
        cJSON_AddStringToObject(j, "requested", t->kept ? type_name(t->type) : type_name(t->requested));
        cJSON_AddBoolToObject(j, "fallback", t->fallback);
        cJSON_AddBoolToObject(j, "kept", t->kept);
        cJSON *ne = cJSON_AddArrayToObject(j, "ne");
        for (int d = 0; d < t->n_dims; d++) cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)t->ne[d]));
        cJSON_AddNumberToObject(j, "bytes", (double)t->bytes);
        if (t->rel_weight_err == t->rel_weight_err) cJSON_AddNumberToObject(j, "rel_weight_err", t->rel_weight_err);
        else cJSON_AddNullToObject(j, "rel_weight_err");
        if (t->rel_output_err == t->rel_output_err) cJSON_AddNumberToObject(j, "rel_output_err", t->rel_output_err);
        else cJSON_AddNullToObject(j, "rel_output_err");
        cJSON_AddItemToArray(arr, j);
    }
    cJSON *tot = cJSON_AddObjectToObject(root, "totals");
    cJSON_AddNumberToObject(tot, "file_bytes", (double)r->file_bytes);
    cJSON_AddNumberToObject(tot, "tensor_bytes", (double)r->tensor_bytes);
    cJSON_AddNumberToObject(tot, "n_params", (double)r->n_params);
    cJSON_AddNumberToObject(tot, "bpw", r->bpw);
    cJSON_AddNumberToObject(tot, "n_fallback", r->n_fallback);
    cJSON *sec = cJSON_AddObjectToObject(root, "seconds");
    cJSON_AddNumberToObject(sec, "calib", r->seconds_calib);
    cJSON_AddNumberToObject(sec, "quantize", r->seconds_quant);
    cJSON_AddNumberToObject(sec, "total", r->seconds_total);
    return root;
}

/* Per written type: tensor count and bytes, and the fallbacks by name. */
static void print_summary(const sqz_qmodel_report *r) {
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
        int n = 0;
        uint64_t bytes = 0;
        for (int i = 0; i < r->n_tensors; i++)
            if (r->tensors[i].type == t) {
                n++;
                bytes += r->tensors[i].bytes;
            }
        if (n) printf("  %-7s %4d tensors %12llu bytes\n", type_name(t), n, (unsigned long long)bytes);
    }
    /* fallbacks, one line per (row length, requested, written) with a count */
    for (int i = 0; i < r->n_tensors; i++) {
        const sqz_qtensor_report *t = &r->tensors[i];
        int seen = 0, n = 0;
        for (int k = 0; k < r->n_tensors && !seen; k++) {
            const sqz_qtensor_report *u = &r->tensors[k];
            int same = u->fallback && u->ne[0] == t->ne[0] && u->requested == t->requested && u->type == t->type;
            if (same && k < i) seen = 1;
            n += same;
        }
        if (t->fallback && !seen)
            printf("  fallback: %d tensor%s (e.g. %s): row length %lld is not a multiple of %s's block of %lld -> %s\n",
                   n, n == 1 ? "" : "s", t->name, (long long)t->ne[0], type_name(t->requested),
                   (long long)sqz_type_get(t->requested)->block_size, type_name(t->type));
    }
}

int cmd_quantize(args *a) {
    const char *model = NULL, *out = NULL, *json = NULL, *calib = NULL, *method = NULL;
    int type = -1, output_type = -1, embd_type = -1, keep = 0, seq = 1, act = 0, quiet = 0, tgt = 0, rc = 0;
    long long nsamples = 0, seqlen = 0, seed = 0, threads = 0;
    int seed_set = 0, resume = 0, gptq_double = 0;
    double damp = 0.01, shrink = 0.75, ckpt_every = -1.0, rescale = 1.0; /* -1: not given */
    sqz_device device = SQZ_DEVICE_CPU;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            if (!(out = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--calib")) {
            if (!(calib = opt_value(a))) return usage_fail(a->cmd, "%s needs a text file", s);
        } else if (!strcmp(s, "--type")) {
            if ((rc = parse_type(a->cmd, s, opt_value(a), &type))) return rc;
        } else if (!strcmp(s, "--output-type")) {
            if ((rc = parse_type(a->cmd, s, opt_value(a), &output_type))) return rc;
        } else if (!strcmp(s, "--embd-type")) {
            if ((rc = parse_type(a->cmd, s, opt_value(a), &embd_type))) return rc;
        } else if (!strcmp(s, "--method")) {
            method = opt_value(a);
            if (!method || (strcmp(method, "rtn") && strcmp(method, "gptq")))
                return usage_fail(a->cmd, "--method '%s': expected rtn or gptq", method ? method : "");
        } else if (!strcmp(s, "--nsamples")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1 << 20, &nsamples))
                return usage_fail(a->cmd, "--nsamples '%s': expected a positive number", v ? v : "");
        } else if (!strcmp(s, "--seqlen")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1 << 24, &seqlen))
                return usage_fail(a->cmd, "--seqlen '%s': expected a positive number of tokens", v ? v : "");
        } else if (!strcmp(s, "--seed")) {
            v = opt_value(a);
            char *end;
            if (!v || !*v || (seed = strtoll(v, &end, 10), *end) || seed < 0)
                return usage_fail(a->cmd, "--seed '%s': expected a number >= 0", v ? v : "");
            seed_set = 1;
        } else if (gptq_flag(a, &damp, &shrink, &rc)) {
            if (rc) return rc;
        } else if (device_flag(a, &device, &rc)) {
            if (rc) return rc;
        } else if (rescale_flag(a, &rescale, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "--threads")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1024, &threads))
                return usage_fail(a->cmd, "--threads '%s': expected 1 to 1024", v ? v : "");
        } else if (!strcmp(s, "--keep-output-type")) {
            keep = 1;
        } else if (resume_flag(a, &resume, &ckpt_every, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "--no-sequential")) {
            seq = 0;
        } else if (!strcmp(s, "--target-original")) {
            tgt = 1;
        } else if (!strcmp(s, "--act-order")) {
            act = 1;
        } else if (!strcmp(s, "--gptq-double")) {
            gptq_double = 1;
        } else if (!strcmp(s, "--quiet")) {
            quiet = 1;
        } else if (s[0] == '-' && s[1]) {
            return usage_fail(a->cmd, "unknown option '%s'", s);
        } else if (!model) {
            model = s;
        } else {
            return usage_fail(a->cmd, "unexpected argument '%s'", s);
        }
    }
    if (!model) return usage_fail(a->cmd, "%s", "missing MODEL");
    if (!out) return usage_fail(a->cmd, "%s", "missing -o OUT.gguf");
    if (type < 0) return usage_fail(a->cmd, "%s", "--type T is required (e.g. --type Q4_K)");
    if (keep && output_type >= 0)
        return usage_fail(a->cmd, "%s", "--keep-output-type and --output-type contradict each other");
    if (!calib && (nsamples || seqlen || seed_set))
        return usage_fail(a->cmd, "%s", "--nsamples, --seqlen and --seed choose calibration windows: they need --calib");
    if (method && !strcmp(method, "gptq") && !calib)
        return usage_fail(a->cmd, "%s", "--method gptq needs calibration text (--calib FILE)");
    if (!calib && (!seq || act || tgt || gptq_double || damp != 0.01 || shrink != 0.75))
        return usage_fail(a->cmd, "%s",
                          "--no-sequential, --target-original, --act-order, --gptq-double, --damp and --shrink are GPTQ options: "
                          "they need --calib");
    if (tgt && !seq) return usage_fail(a->cmd, "%s", "--target-original is a sequential mode: drop --no-sequential");
    sqz_qmodel_opts o;
    sqz_qmodel_opts_default(&o);
    o.type = type;
    o.output_type = output_type;
    o.embd_type = embd_type;
    o.keep_output_type = keep;
    o.method = method ? (!strcmp(method, "gptq") ? SQZ_QMETHOD_GPTQ : SQZ_QMETHOD_RTN)
                      : (calib ? SQZ_QMETHOD_GPTQ : SQZ_QMETHOD_RTN);
    o.sequential = seq;
    o.target_original = tgt;
    o.act_order = act;
    o.gptq_double = gptq_double;
    o.percdamp = damp;
    o.shrink = shrink;
    o.rescale = rescale;
    o.nsamples = nsamples ? (int)nsamples : 128;
    o.seqlen = seqlen ? (int)seqlen : 512;
    o.progress = !quiet;
    /* resumable runs only when asked: otherwise an interrupted run leaves nothing */
    o.checkpoint = resume || ckpt_every >= 0 ? out : NULL; /* OUT.part, OUT.state */
    o.resume = resume;
    o.checkpoint_every_s = ckpt_every >= 0 ? ckpt_every : 60.0;

    sqz_err err;
    char *text = NULL;
    size_t text_len = 0;
    int32_t *ids = NULL, *windows = NULL;
    int64_t n_ids = 0;
    sqz_pool *pool = NULL;
    sqz_backend *backend = NULL;
    sqz_qmodel_report rep;
    memset(&rep, 0, sizeof rep);
    sqz_model m;
    int calib_ids = calib && is_token_ids_path(calib); /* token ids: no tokenizer needed */
    if (calib && !calib_ids && (rc = read_text(calib, &text, &text_len))) return rc;
    if (sqz_model_load(&m, model, calib != NULL && !calib_ids, &err)) {
        free(text);
        return fail(err.msg);
    }
    rc = 0;
    if (calib) {
        if (!seqlen && m.cfg.n_ctx_train > 0 && o.seqlen > m.cfg.n_ctx_train) o.seqlen = m.cfg.n_ctx_train;
        if (calib_ids) {
            if ((rc = read_token_ids(calib, m.cfg.n_vocab, &ids, &n_ids, NULL, NULL))) goto done;
        } else if (sqz_tok_encode(m.tok, text, text_len, 0, &ids, &n_ids, &err)) {
            rc = fail(err.msg);
            goto done;
        }
        if (n_ids < o.seqlen) {
            char msg[1200];
            snprintf(msg, sizeof msg, "%s: calibration text has %lld tokens, fewer than one window of --seqlen %d",
                     calib, (long long)n_ids, o.seqlen);
            rc = fail(msg);
            goto done;
        }
        if (!(windows = malloc((size_t)o.nsamples * (size_t)o.seqlen * sizeof(int32_t)))) {
            rc = fail("out of memory for the calibration windows");
            goto done;
        }
        if (sqz_calib_windows(ids, n_ids, o.nsamples, o.seqlen, (uint64_t)seed, windows, &err)) {
            rc = fail(err.msg);
            goto done;
        }
        o.windows = windows;
    }
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto done;
    }
    if (sqz_backend_create(device, pool, &backend, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    o.backend = backend;
    if ((rc = guard_output(out))) goto done;
    if (sqz_quantize_model(&m, out, &o, pool, &rep, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    printf("wrote %s: %llu bytes, %.4f bits per weight (%lld weights), %s %s%s in %.1f s\n", out,
           (unsigned long long)rep.file_bytes, rep.bpw, (long long)rep.n_params, type_name(o.type),
           o.method == SQZ_QMETHOD_GPTQ ? "GPTQ" : "RTN",
           o.method == SQZ_QMETHOD_GPTQ ? (!o.sequential ? " (parallel)" : tgt ? " (sequential, original targets)" : " (sequential)") : "", rep.seconds_total);
    if (rep.resumed_layer > 0)
        printf("resumed from %s.state: layers 0..%d were done before\n", out, rep.resumed_layer - 1);
    print_summary(&rep);
    if (json) {
        cJSON *root = report_json(model, out, &o, calib, (unsigned long long)seed, &rep, sqz_pool_threads(pool));
        rc = root ? write_json(json, root) : fail("out of memory while writing JSON");
        cJSON_Delete(root);
    }
done:
    sqz_qmodel_report_free(&rep);
    sqz_backend_free(backend);
    sqz_pool_free(pool);
    free(windows);
    free(ids);
    free(text);
    sqz_model_free(&m);
    return rc;
}

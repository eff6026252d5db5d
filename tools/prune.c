/* sqz prune: flags, printing and JSON around the library's sqz_prune_run
 * (include/sqz/pipeline.h): structured pruning of attention heads and FFN channels at a
 * given width, with least-squares compensation (DESIGN.md §6). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib_args.h"
#include "cli.h"
#include "sqz/core.h"
#include "sqz/model.h"
#include "sqz/pipeline.h"
#include "sqz/prune.h"

const char HELP_PRUNE[] =
    "usage: sqz prune MODEL (-o OUT.gguf | --hf-out DIR) --calib FILE [--attn-keep F] [--ffn-keep F]\n"
    "                 [--nsamples N] [--seqlen L] [--seed S] [--heldout N] [--no-compensate]\n"
    "                 [--select grad|magnitude] [--damp F] [--shrink F] [--threads N]\n"
    "                 [--hf-out DIR] [--quiet] [--json OUT]\n"
    "\n"
    "Removes attention heads and FFN channels from every layer and writes the unquantized\n"
    "result as GGUF (architecture deci when layers differ: llama.cpp loads it). Which ones\n"
    "go is decided by the predicted loss change of removing them after compensation,\n"
    "1/2N sum_j s_j w_jR^T (H_RR - H_RS H_SS^-1 H_SR) w_jR (s_j from the backward pass,\n"
    "H the consumer's input Gram); o_proj and ffn_down are then compensated by least\n"
    "squares, W_S += W_R H_RS H_SS^-1. Every tensor is written in F32 (unquantized;\n"
    "sqz quantize or compress make it small).\n"
    "  --attn-keep F   fraction of query heads kept per layer (default 1); with grouped-\n"
    "                  query attention the layer keeps a kv heads and b query heads in\n"
    "                  each: the fewest a*b >= round(F*n_head), then the cheapest\n"
    "  --ffn-keep F    fraction of FFN channels kept per layer (default 1; rounded to a\n"
    "                  multiple of 32 so that ffn_down's rows still fit 32-blocks)\n"
    "  --calib FILE    calibration text, or .json token ids: one array, or an array of\n"
    "                  sequences (windows at their starts); the last tenth is held out:\n"
    "                  the held-out perplexity before and after is printed\n"
    "  --nsamples N    calibration windows (default 16)   --seqlen L  tokens each (512)\n"
    "  --heldout N     held-out windows (default 4)\n"
    "  --no-compensate remove without the least-squares update (for comparison)\n"
    "  --select S      grad (default): by the gradient-scaled removal cost above;\n"
    "                  magnitude: by activation-weighted magnitude (Wanda-like, s_j = 1,\n"
    "                  no compensation in the ranking), the usual baseline\n"
    "  --damp F        dampening of H, fraction of its mean diagonal (default 0.01)\n"
    "  --shrink F      H's off-diagonal entries scaled by 1-F in the compensation (default\n"
    "                  0.75, as GPTQ's: a Gram of a few thousand tokens is otherwise\n"
    "                  fitted, not estimated; 1 = plain removal)\n"
    "  --hf-out DIR    (also) write the pruned model as a Hugging Face style folder\n"
    "                  (model.safetensors in F32 + config.json with per-layer head counts\n"
    "                  and FFN widths, which sqz loads; no tokenizer files)\n"
    "  --json OUT      per-layer widths, predicted and measured changes as JSON\n";

cJSON *layer_keep_json(const struct sqz_layer_keep *keep, int n_layer) {
    cJSON *arr = cJSON_CreateArray();
    for (int l = 0; arr && l < n_layer; l++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "n_head", keep[l].n_head);
        cJSON_AddNumberToObject(o, "n_head_kv", keep[l].n_head_kv);
        cJSON_AddNumberToObject(o, "n_ff", keep[l].n_ff);
        cJSON_AddItemToObject(o, "heads", cJSON_CreateIntArray(keep[l].head, keep[l].n_head));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static int parse_frac(const char *v, double lo, double *out) {
    char *end;
    if (!v || !*v) return -1;
    *out = strtod(v, &end);
    return *end || !(*out >= lo && *out <= 1.0) ? -1 : 0;
}

int cmd_prune(args *a) {
    const char *model = NULL, *out = NULL, *json = NULL, *hf_out = NULL;
    calib_set cs = {NULL, 16, 512, 0, 4, NULL, 0, NULL, NULL};
    long long threads = 0;
    double attn_keep = 1.0, ffn_keep = 1.0, damp = 0.01, shrink = 0.75;
    int quiet = 0, compensate = 1, rc = 0, magnitude = 0;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (calib_flag(a, &cs, &rc)) {
            if (rc) return rc;
        } else if (gptq_flag(a, &damp, &shrink, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            if (!(out = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--hf-out")) {
            if (!(hf_out = opt_value(a))) return usage_fail(a->cmd, "%s needs a folder name", s);
        } else if (!strcmp(s, "--attn-keep")) {
            if (parse_frac(v = opt_value(a), 0.0, &attn_keep))
                return usage_fail(a->cmd, "--attn-keep '%s': expected a fraction in [0, 1]", v ? v : "");
        } else if (!strcmp(s, "--ffn-keep")) {
            if (parse_frac(v = opt_value(a), 0.0, &ffn_keep))
                return usage_fail(a->cmd, "--ffn-keep '%s': expected a fraction in [0, 1]", v ? v : "");
        } else if (!strcmp(s, "--no-compensate")) {
            compensate = 0;
        } else if (!strcmp(s, "--select")) {
            v = opt_value(a);
            if (!v || (strcmp(v, "grad") && strcmp(v, "magnitude")))
                return usage_fail(a->cmd, "--select '%s': expected grad or magnitude", v ? v : "");
            magnitude = !strcmp(v, "magnitude");
        } else if (!strcmp(s, "--threads")) {
            if (parse_pos_int(opt_value(a), 1024, &threads)) return usage_fail(a->cmd, "%s: expected 1..1024", s);
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
    if (!model) return usage_fail(a->cmd, "no model given%s", "");
    if (!out && !hf_out) return usage_fail(a->cmd, "no output given (-o OUT.gguf and/or --hf-out DIR)%s", "");
    if (!cs.path) return usage_fail(a->cmd, "no calibration text given (--calib FILE)%s", "");
    if (out && (rc = guard_output(out))) return rc;

    sqz_err err;
    sqz_model m;
    sqz_pool *pool = NULL;
    sqz_prune_report rep;
    memset(&rep, 0, sizeof rep);
    cJSON *root = NULL;
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    if ((rc = calib_load(&cs, &m))) goto done;
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto done;
    }
    sqz_prune_opts po = {attn_keep, ffn_keep, cs.windows, (int)cs.nsamples, (int)cs.seqlen, cs.held, (int)cs.heldout,
                         damp, shrink, compensate, magnitude, !quiet};
    if (sqz_prune_run(&m, out, hf_out, &po, pool, &rep, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    double pred = rep.predicted, pred_plain = rep.predicted_plain, base = rep.loss_before, after = rep.loss_after;
    int64_t p0 = rep.params_before, p1 = rep.params_after;
    printf("prune %s: kept %lld of %lld query heads, %lld of %lld FFN channels; %lld of %lld weights (%.1f%%)%s\n",
           model, (long long)rep.heads, (long long)rep.heads_before, (long long)rep.channels,
           (long long)rep.channels_before, (long long)p1, (long long)p0, 100.0 * (double)p1 / (double)p0,
           compensate ? "" : "; not compensated");
    printf("predicted dL %.5f with compensation, %.5f without; held-out loss %.5f -> %.5f (dL %.5f), perplexity "
           "%.4f -> %.4f\nwrote %s\n", pred, pred_plain, base, after, after - base, exp(base), exp(after),
           out ? out : hf_out);
    if (json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "output", out ? out : hf_out);
        cJSON_AddBoolToObject(root, "compensated", compensate);
        cJSON_AddNumberToObject(root, "params_before", (double)p0);
        cJSON_AddNumberToObject(root, "params_after", (double)p1);
        cJSON_AddNumberToObject(root, "predicted_dL", compensate ? pred : pred_plain);
        cJSON_AddNumberToObject(root, "predicted_dL_compensated", pred);
        cJSON_AddNumberToObject(root, "predicted_dL_plain", pred_plain);
        cJSON_AddNumberToObject(root, "heldout_tokens", (double)(cs.heldout * (cs.seqlen - 1)));
        cJSON_AddNumberToObject(root, "heldout_loss_before", base);
        cJSON_AddNumberToObject(root, "heldout_loss_after", after);
        cJSON_AddNumberToObject(root, "heldout_ppl_before", exp(base));
        cJSON_AddNumberToObject(root, "heldout_ppl_after", exp(after));
        cJSON_AddItemToObject(root, "layers", layer_keep_json(rep.keep, rep.n_layer));
        rc = write_json(json, root);
    }
done:
    cJSON_Delete(root);
    sqz_prune_report_free(&rep);
    sqz_pool_free(pool);
    sqz_model_free(&m);
    calib_free(&cs);
    return rc;
}

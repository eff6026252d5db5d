/* sqz prune: structured pruning of attention heads and FFN channels at a given width,
 * with least-squares compensation (DESIGN.md §6). The heads and channels removed are
 * those whose removal the gradient-scaled proxy predicts to cost least. */
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
#include "sqz/sensitivity.h"

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

/* The attention option of layer l with the fewest heads >= target, then the cheapest
 * (by the plain removal cost when ranking by magnitude). */
static int pick_attn(const sqz_layer_widths *w, int target, int magnitude) {
    int best = 0;
    for (int i = 1; i < w->n_attn; i++) {
        const sqz_width_option *a = &w->attn[i], *b = &w->attn[best];
        double ca = magnitude ? a->dl_plain : a->dl, cb = magnitude ? b->dl_plain : b->dl;
        if (a->n_keep < target) continue;
        if (a->n_keep < b->n_keep || (a->n_keep == b->n_keep && ca < cb)) best = i;
    }
    return best;
}

static int pick_ffn(const sqz_layer_widths *w, int target) {
    for (int i = 0; i < w->n_ffn; i++)
        if (w->ffn[i].n_keep == target) return i;
    return 0;
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
    sqz_model m, pm;
    int have_m = 0, have_pm = 0;
    sqz_pool *pool = NULL;
    sqz_sens sens = {0};
    sqz_layer_keep *keep = NULL;
    cJSON *root = NULL;
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    have_m = 1;
    int nl = m.cfg.n_layer;
    if ((rc = calib_load(&cs, &m))) goto done;
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto done;
    }
    /* the FFN widths: one step from full to the target keeps the estimate to the two
     * options used (every layer of a Llama has the same n_ff before pruning) */
    int nff0 = m.cfg.layer_n_ff[0], ffn_target = (int)lround(ffn_keep * nff0 / 32.0) * 32;
    if (nff0 < 64) ffn_target = (int)lround(ffn_keep * nff0);
    if (ffn_target > nff0) ffn_target = nff0;
    for (int l = 0; l < nl; l++)
        if (m.cfg.layer_n_ff[l] != nff0) {
            rc = fail("prune: the model's layers have different FFN widths already (a pruned model)");
            goto done;
        }
    int step = nff0 - ffn_target > 0 ? nff0 - ffn_target : nff0;
    sqz_sens_opts so = {cs.windows, (int)cs.nsamples, (int)cs.seqlen, NULL, 0, damp, shrink, 0, NULL, 0, !quiet, step,
                        magnitude, 0, 0};
    if (sqz_sensitivity(&m, &m, pool, &so, &sens, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    if (!(keep = calloc((size_t)nl, sizeof *keep))) {
        rc = fail("out of memory");
        goto done;
    }
    double pred = 0.0, pred_plain = 0.0;
    int64_t heads = 0, heads0 = 0, ch = 0, ch0 = 0;
    for (int l = 0; l < nl; l++) {
        const sqz_layer_widths *w = &sens.widths[l];
        int nh = m.cfg.layer_n_head[l];
        const sqz_width_option *ao = &w->attn[pick_attn(w, (int)lround(attn_keep * nh), magnitude)];
        const sqz_width_option *fo = &w->ffn[pick_ffn(w, ffn_target)];
        if (sqz_layer_keep_set(&keep[l], ao, fo, &err)) {
            rc = fail(err.msg);
            goto done;
        }
        pred += ao->dl + fo->dl;
        pred_plain += ao->dl_plain + fo->dl_plain;
        heads += ao->n_keep, heads0 += nh, ch += fo->n_keep, ch0 += m.cfg.layer_n_ff[l];
    }
    if (out &&
        sqz_prune_write(&m, pool, keep, cs.windows, (int)cs.nsamples, (int)cs.seqlen, damp, shrink, compensate, out, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    if (hf_out && sqz_prune_write_hf(&m, pool, keep, cs.windows, (int)cs.nsamples, (int)cs.seqlen, damp, shrink,
                                     compensate, hf_out, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    double base = NAN, after = NAN;
    if (sqz_mean_loss(&m, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &base, &err) ||
        sqz_model_load(&pm, out ? out : hf_out, 0, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    have_pm = 1;
    if (sqz_mean_loss(&pm, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &after, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    int64_t p0 = sqz_model_n_params(&m), p1 = sqz_model_n_params(&pm);
    printf("prune %s: kept %lld of %lld query heads, %lld of %lld FFN channels; %lld of %lld weights (%.1f%%)%s\n",
           model, (long long)heads, (long long)heads0, (long long)ch, (long long)ch0, (long long)p1, (long long)p0,
           100.0 * (double)p1 / (double)p0, compensate ? "" : "; not compensated");
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
        cJSON_AddItemToObject(root, "layers", layer_keep_json(keep, nl));
        rc = write_json(json, root);
    }
done:
    cJSON_Delete(root);
    for (int l = 0; keep && l < nl; l++) sqz_layer_keep_free(&keep[l]);
    free(keep);
    sqz_sens_free(&sens);
    sqz_pool_free(pool);
    if (have_pm) sqz_model_free(&pm);
    if (have_m) sqz_model_free(&m);
    calib_free(&cs);
    return rc;
}

/* sqz sensitivity and sqz compress: flags, printing and JSON around the library's
 * sqz_sensitivity_run and sqz_compress (include/sqz/pipeline.h, DESIGN.md §4-§5). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib_args.h"
#include "cli.h"
#include "report_html.h"
#include "sqz/core.h"
#include "sqz/grad.h"
#include "sqz/model.h"
#include "sqz/pipeline.h"
#include "sqz/quant.h"
#include "sqz/tok.h"

static const char *type_name(int t) { return sqz_type_get(t) ? sqz_type_get(t)->name : "?"; }

static int parse_types(const char *cmd, const char *list, int *types, int *n) {
    char buf[512];
    if (!list || strlen(list) >= sizeof buf) return usage_fail(cmd, "--types '%s': expected a comma-separated list", list ? list : "");
    strcpy(buf, list);
    *n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int t = sqz_type_from_name(tok);
        const sqz_type_traits *tt = t >= 0 ? sqz_type_get(t) : NULL;
        if (!tt || !sqz_type_writable(t) || !tt->dequantize || t == SQZ_TYPE_F32)
            return usage_fail(cmd, "--types: '%s' is not a type sqz writes (Q2_K Q3_K Q4_K Q5_K Q6_K Q8_0 Q4_0 Q4_1 "
                                   "Q5_0 Q5_1 IQ4_NL IQ4_XS IQ3_S IQ3_XXS IQ2_S IQ2_XS IQ2_XXS IQ1_M IQ1_S TQ2_0 TQ1_0 F16 BF16)", tok);
        if (*n >= SQZ_SENS_MAX_OPTIONS) return usage_fail(cmd, "--types: more than %s types", "16");
        types[(*n)++] = t;
    }
    if (*n == 0) return usage_fail(cmd, "--types '%s': no type given", list);
    return 0;
}

/* ---------------------------------------------------------------- sqz sensitivity */

const char HELP_SENSITIVITY[] =
    "usage: sqz sensitivity MODEL --calib FILE [--nsamples N] [--seqlen L] [--seed S]\n"
    "                       [--types LIST] [--all-types] [--validate K] [--heldout N] [--no-diag]\n"
    "                       [--weighted-only] [--prune]\n"
    "                       [--damp F] [--shrink F] [--device cpu|cuda] [--threads N] [--quiet]\n"
    "                       [--json OUT]\n"
    "\n"
    "Predicts, for every weight matrix and candidate type, how much the model's mean\n"
    "cross-entropy rises when that matrix alone is quantized (GPTQ, as compress does):\n"
    "  grad   ½/N Σ_j s_j δw_jᵀ H δw_j, s_j = Σ_t g_tj² from the backward pass\n"
    "  gradtw the same with H_w = Σ_t w_t x_t x_tᵀ / Σ_t w_t, w_t = Σ_j g_tj² (tokens\n"
    "         weighted by their gradient's size)\n"
    "  diag   ½/N Σ F_ji δw_ji², the diagonal Fisher\n"
    "  local  ½ Σ_j δw_jᵀ H δw_j (s_j = 1, layer-local as GPTQ/imatrix)\n"
    "  --calib FILE    calibration text, or .json token ids: one array (windows anywhere)\n"
    "                  or an array of sequences (windows at their starts); the last\n"
    "                  tenth is held out for --validate\n"
    "  --nsamples N    calibration windows (default 16)   --seqlen L  tokens each (512)\n"
    "  --types LIST    candidate types (default " "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,\n"
    "                  Q5_0,Q5_1,IQ4_NL,F16,IQ3_S,IQ4_XS; each tensor keeps the ones its\n"
    "                  rows fit, and on rows a k-quant fits Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL\n"
    "                  yield to it)\n"
    "  --all-types     every listed type its rows fit on every tensor\n"
    "  --validate K    apply K random (tensor, quantized type) options one at a time,\n"
    "                  measure the true loss change on held-out windows (and its\n"
    "                  symmetric part, (L(W-dW)+L(W+dW))/2-L(W), free of the first-order\n"
    "                  noise) and print the Spearman rank correlation of each form\n"
    "  --validate-types LIST  draw the validated options among these types only\n"
    "                  (e.g. the low-bit ones, whose effect stands out of the noise)\n"
    "  --heldout N     held-out windows for --validate (default 4)\n"
    "  --no-diag       skip the diagonal Fisher (it holds one float per weight)\n"
    "  --weighted-only only gradtw, compress's default (grad, local and diag are null):\n"
    "                  the plain-Gram error sums are 40% of the scoring arithmetic\n"
    "  --prune         also every layer's width options (heads, FFN channels) as\n"
    "                  'compress --prune' estimates them, saved with the JSON: then one\n"
    "                  file serves compress with and without --prune\n"
    "  --device D      cpu (default) or cuda: where the decoder layers' forward (with\n"
    "                  the calibration Grams) and backward run (a build with cmake\n"
    "                  -DSQZ_CUDA=ON and a GPU; the output head, the gradient\n"
    "                  statistics and the scoring stay on the CPU for now)\n"
    "  --json OUT      every prediction (and measurement) as JSON, with each stage's\n"
    "                  wall time and GFLOP/s beside the machine's SGEMM/DGEMM rates\n";

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* The GEMM each stage's arithmetic is held against: single precision for the model's
 * passes, the Grams' products, the option scoring (its GPTQ and error sums run in float)
 * and GPTQ (double with --gptq-double), double for pruning's solves; none for writing. */
static const char *stage_ref(int s, int gptq_double) {
    return s == SQZ_STAGE_FORWARD || s == SQZ_STAGE_BACKWARD || s == SQZ_STAGE_GRAMS || s == SQZ_STAGE_SCORING ||
                   (s == SQZ_STAGE_GPTQ && !gptq_double)
               ? "sgemm"
           : s == SQZ_STAGE_WRITING ? NULL
                                    : "dgemm";
}

/* Stage s's GFLOP/s and the rate of the GEMM it is held against (0: none). */
static double stage_rate(const sqz_stage_times *t, int s, int gptq_double, double sgemm, double dgemm,
                         double *peak) {
    const char *ref = stage_ref(s, gptq_double);
    *peak = !ref ? 0.0 : ref[0] == 's' ? sgemm : dgemm;
    return t->seconds[s] > 0 ? t->flops[s] / t->seconds[s] / 1e9 : 0.0;
}

/* Each stage's wall time, GFLOP/s and the fraction of the machine's GEMM rate; the rest
 * of the wall time (loading, held-out and --eval measurements, the knapsack) as "other". */
static void print_stages(const sqz_stage_times *t, int gptq_double, double sgemm, double dgemm, double total) {
    double sum = 0.0;
    printf("%-9s %9s %9s %9s %s\n", "stage", "seconds", "GFLOP", "GFLOP/s", "of the machine's GEMM rate");
    for (int s = 0; s < SQZ_STAGE_COUNT; s++) {
        sum += t->seconds[s];
        if (t->seconds[s] <= 0 && t->flops[s] <= 0) continue;
        double peak, rate = stage_rate(t, s, gptq_double, sgemm, dgemm, &peak);
        printf("%-9s %9.1f %9.1f %9.1f", sqz_stage_name(s), t->seconds[s], t->flops[s] / 1e9, rate);
        if (t->flops[s] > 0 && peak > 0)
            printf(" %5.1f%% of %s %.1f", 100.0 * rate / peak, stage_ref(s, gptq_double), peak);
        printf("\n");
    }
    printf("%-9s %9.1f\n%-9s %9.1f\n", "other", total - sum, "total", total);
}

static cJSON *stages_json(const sqz_stage_times *t, int gptq_double, double sgemm, double dgemm, int threads,
                          double total) {
    cJSON *o = cJSON_CreateObject();
    cJSON *g = cJSON_AddObjectToObject(o, "gemm_rates");
    cJSON_AddNumberToObject(g, "sgemm_gflops", sgemm);
    cJSON_AddNumberToObject(g, "dgemm_gflops", dgemm);
    cJSON_AddNumberToObject(g, "threads", threads);
    double sum = 0.0;
    for (int s = 0; s < SQZ_STAGE_COUNT; s++) {
        cJSON *e = cJSON_AddObjectToObject(o, sqz_stage_name(s));
        const char *ref = stage_ref(s, gptq_double);
        double peak, rate = stage_rate(t, s, gptq_double, sgemm, dgemm, &peak);
        sum += t->seconds[s];
        cJSON_AddNumberToObject(e, "seconds", t->seconds[s]);
        cJSON_AddNumberToObject(e, "gflop", t->flops[s] / 1e9);
        cJSON_AddNumberToObject(e, "gflops", rate);
        if (ref) {
            cJSON_AddStringToObject(e, "reference", ref);
            cJSON_AddItemToObject(e, "fraction_of_reference", num_or_null(peak > 0 && t->flops[s] > 0 ? rate / peak : NAN));
        }
    }
    cJSON_AddNumberToObject(o, "other_seconds", total - sum);
    cJSON_AddNumberToObject(o, "total_seconds", total);
    return o;
}

int cmd_sensitivity(args *a) {
    const char *model = NULL, *json = NULL, *types_arg = SQZ_COMPRESS_DEFAULT_TYPES, *vtypes_arg = NULL;
    calib_set cs = {NULL, 16, 512, 0, 4, NULL, 0, NULL, NULL};
    long long validate = 0, threads = 0;
    int quiet = 0, diag = 1, weighted_only = 0, all_types = 0, prune = 0, rc = 0;
    sqz_device device = SQZ_DEVICE_CPU;
    sqz_backend *backend = NULL;
    double damp = 0.01, shrink = 0.75;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (calib_flag(a, &cs, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--types")) {
            if (!(types_arg = opt_value(a))) return usage_fail(a->cmd, "%s needs a list", s);
        } else if (!strcmp(s, "--validate-types")) {
            if (!(vtypes_arg = opt_value(a))) return usage_fail(a->cmd, "%s needs a list", s);
        } else if (!strcmp(s, "--validate")) {
            v = opt_value(a);
            if (parse_pos_int(v, 100000, &validate)) return usage_fail(a->cmd, "--validate '%s': expected a count", v ? v : "");
        } else if (!strcmp(s, "--threads")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1024, &threads)) return usage_fail(a->cmd, "--threads '%s': expected 1 to 1024", v ? v : "");
        } else if (gptq_flag(a, &damp, &shrink, &rc)) {
            if (rc) return rc;
        } else if (device_flag(a, &device, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "--no-diag")) {
            diag = 0;
        } else if (!strcmp(s, "--weighted-only")) {
            weighted_only = 1;
        } else if (!strcmp(s, "--all-types")) {
            all_types = 1;
        } else if (!strcmp(s, "--prune")) {
            prune = 1;
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
    if (!cs.path) return usage_fail(a->cmd, "%s", "--calib FILE is required (the gradients come from it)");
    if (prune && validate) return usage_fail(a->cmd, "%s", "--prune cannot be used with --validate (it validates types only)");
    int types[SQZ_SENS_MAX_OPTIONS], n_types = 0, vtypes[SQZ_SENS_MAX_OPTIONS], n_vtypes = 0;
    if ((rc = parse_types(a->cmd, types_arg, types, &n_types))) return rc;
    if (vtypes_arg && (rc = parse_types(a->cmd, vtypes_arg, vtypes, &n_vtypes))) return rc;

    if (weighted_only && validate) return usage_fail(a->cmd, "%s", "--weighted-only cannot be used with --validate (it compares every form)");

    sqz_err err;
    sqz_model m;
    double t_start = sqz_now(), sgemm_rate = 0.0, dgemm_rate = 0.0;
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    sqz_pool *pool = NULL;
    sqz_sens_report rep;
    memset(&rep, 0, sizeof rep);
    cJSON *root = NULL;
    if ((rc = calib_load(&cs, &m))) goto done;
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto done;
    }
    if (sqz_backend_create(device, pool, &backend, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    if (sqz_gemm_rates(sqz_pool_threads(pool), &sgemm_rate, &dgemm_rate, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    sqz_sens_run_opts ro = {{cs.windows, (int)cs.nsamples, (int)cs.seqlen, types, n_types, damp, shrink,
                             diag && !weighted_only, NULL, 0, !quiet, prune ? sqz_prune_ffn_step(m.cfg.n_ff) : 0, 0,
                             weighted_only, all_types, backend, NULL, NULL},
                            cs.held, (int)cs.heldout, (int)validate, vtypes, n_vtypes, (uint64_t)cs.seed};
    if (sqz_sensitivity_run(&m, pool, &ro, &rep, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    const sqz_sens *sens = &rep.sens;
    int n_keep = rep.n_valid;
    const int *keep = rep.valid;
    printf("sensitivity of %s: mean loss %.5f on %lld calibration tokens (gradients %.1f s, options %.1f s)\n", model,
           sens->loss, (long long)sens->n_scored, sens->seconds_grad, sens->seconds_quant);
    printf("%-28s %-7s %12s %12s %12s %12s %12s\n", "tensor", "type", "bytes", "dL grad", "dL gradtw", "dL diag",
           "dL local");
    for (int i = 0; i < sens->n_tensors; i++)
        for (int k = 0; k < sens->t[i].n_options; k++) {
            const sqz_sens_option *o = &sens->t[i].opt[k];
            printf("%-28s %-7s %12llu %12.4e %12.4e %12.4e %12.4e\n", sens->t[i].name, type_name(o->type),
                   (unsigned long long)o->bytes, o->dl_grad, o->dl_gradtw, o->dl_diag, o->dl_local);
        }
    if (n_keep) {
        printf("\nvalidation: %d options applied one at a time, loss change on %lld held-out tokens (base loss %.5f);\n"
               "'symmetric' is (L(W - dW) + L(W + dW))/2 - L(W): the change without its first-order part, which on a\n"
               "finite held-out sample is noise of zero mean (what the second-order proxies predict)\n",
               n_keep, cs.heldout * (cs.seqlen - 1), rep.base_loss);
        printf("%-28s %-7s %12s %12s", "tensor", "type", "measured", "symmetric");
        for (int f = 0; f < SQZ_PROXY_COUNT; f++) printf(" %12s", sqz_proxy_name(f));
        printf("\n");
        for (int i = 0; i < n_keep; i++) {
            printf("%-28s %-7s %12.4e %12.4e", sens->t[keep[2 * i]].name, type_name(keep[2 * i + 1]), rep.measured[i],
                   rep.symmetric[i]);
            for (int f = 0; f < SQZ_PROXY_COUNT; f++) printf(" %12.4e", rep.predicted[n_keep * f + i]);
            printf("\n");
        }
        printf("Spearman rank correlation with the measured change: ");
        for (int f = 0; f < SQZ_PROXY_COUNT; f++) printf(" %s %.4f", sqz_proxy_name(f), rep.rho[f]);
        printf("\nSpearman rank correlation with its symmetric part:  ");
        for (int f = 0; f < SQZ_PROXY_COUNT; f++) printf(" %s %.4f", sqz_proxy_name(f), rep.rho_sym[f]);
        printf("\n");
    }
    double total_seconds = sqz_now() - t_start;
    if (!quiet) print_stages(&sens->times, 0, sgemm_rate, dgemm_rate, total_seconds);
    if (json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddNumberToObject(root, "loss", sens->loss);
        cJSON_AddItemToObject(root, "stages",
                              stages_json(&sens->times, 0, sgemm_rate, dgemm_rate, sqz_pool_threads(pool), total_seconds));
        cJSON_AddNumberToObject(root, "calib_tokens", (double)sens->n_scored);
        cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
        for (int i = 0; i < sens->n_tensors; i++) {
            cJSON *t = cJSON_CreateObject(), *ops = NULL;
            cJSON_AddStringToObject(t, "name", sens->t[i].name);
            cJSON_AddNumberToObject(t, "layer", sens->t[i].layer);
            cJSON_AddStringToObject(t, "kind", sqz_linear_kind_name(sens->t[i].kind));
            ops = cJSON_AddArrayToObject(t, "options");
            for (int k = 0; k < sens->t[i].n_options; k++) {
                const sqz_sens_option *o = &sens->t[i].opt[k];
                cJSON *oj = cJSON_CreateObject();
                cJSON_AddStringToObject(oj, "type", type_name(o->type));
                cJSON_AddNumberToObject(oj, "bytes", (double)o->bytes);
                for (int f = 0; f < SQZ_PROXY_COUNT; f++) {
                    double x = sqz_proxy_cost(o, f);
                    if (isfinite(x)) cJSON_AddNumberToObject(oj, sqz_proxy_key(f), x);
                    else cJSON_AddNullToObject(oj, sqz_proxy_key(f));
                }
                cJSON_AddItemToArray(ops, oj);
            }
            cJSON_AddItemToArray(arr, t);
        }
        if (prune) { /* the width options, as compress --sensitivity reads them back */
            char *wt = sqz_sens_widths_json(sens, sqz_prune_ffn_step(m.cfg.n_ff), &err);
            cJSON *wj = wt ? cJSON_Parse(wt) : NULL, *it, *next;
            free(wt);
            if (!wj) {
                rc = fail(wt ? "sensitivity: cannot parse the width options' JSON" : err.msg);
                goto done;
            }
            for (it = wj->child; it; it = next) { /* move prune_ffn_step, widths, narrow into root */
                next = it->next;
                cJSON_AddItemToObject(root, it->string, cJSON_DetachItemViaPointer(wj, it));
            }
            cJSON_Delete(wj);
        }
        if (n_keep) {
            cJSON *v = cJSON_AddObjectToObject(root, "validation");
            cJSON *sp = cJSON_AddObjectToObject(v, "spearman"), *ss = cJSON_AddObjectToObject(v, "spearman_symmetric");
            for (int f = 0; f < SQZ_PROXY_COUNT; f++) {
                cJSON_AddItemToObject(sp, sqz_proxy_name(f), num_or_null(rep.rho[f]));
                cJSON_AddItemToObject(ss, sqz_proxy_name(f), num_or_null(rep.rho_sym[f]));
            }
            cJSON_AddNumberToObject(v, "heldout_tokens", (double)(cs.heldout * (cs.seqlen - 1)));
            cJSON *pts = cJSON_AddArrayToObject(v, "options");
            for (int i = 0; i < n_keep; i++) {
                cJSON *p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "tensor", sens->t[keep[2 * i]].name);
                cJSON_AddStringToObject(p, "type", type_name(keep[2 * i + 1]));
                cJSON_AddNumberToObject(p, "measured", rep.measured[i]);
                cJSON_AddNumberToObject(p, "symmetric", rep.symmetric[i]);
                for (int f = 0; f < SQZ_PROXY_COUNT; f++) {
                    double x = rep.predicted[n_keep * f + i];
                    if (isfinite(x)) cJSON_AddNumberToObject(p, sqz_proxy_name(f), x);
                    else cJSON_AddNullToObject(p, sqz_proxy_name(f));
                }
                cJSON_AddItemToArray(pts, p);
            }
        }
        rc = write_json(json, root);
    }
done:
    cJSON_Delete(root);
    sqz_sens_report_free(&rep);
    sqz_backend_free(backend);
    sqz_pool_free(pool);
    calib_free(&cs);
    sqz_model_free(&m);
    return rc;
}

/* ---------------------------------------------------------------- sqz compress */

const char HELP_COMPRESS[] =
    "usage: sqz compress MODEL -o OUT.gguf (--target-bpw B | --target-size SIZE)\n"
    "                    --calib FILE [--nsamples N] [--seqlen L] [--seed S] [--heldout N]\n"
    "                    [--rounds R] [--types LIST] [--all-types] [--eval TEXT] [--eval-ctx C]\n"
    "                    [--eval-chunks K] [--measure K] [--proxy grad|gradtw|diag] [--damp F] [--shrink F]\n"
    "                    [--prune auto|none|max=F] [--keep-pruned F32.gguf] [--device cpu|cuda]\n"
    "                    [--threads N] [--resume] [--checkpoint-every S] [--gptq-double]\n"
    "                    [--rescale off|energy|unbiased|P] [--tune-steps N] [--tune-lr F]\n"
    "                    [--quiet] [--json REPORT]\n"
    "                    [--html REPORT.html]\n"
    "\n"
    "Mixed precision under an exact size budget. Each round: estimate every (tensor,\n"
    "type) option's loss change from gradients (see 'sqz help sensitivity'), choose one\n"
    "type per weight matrix (embedding and output head included) minimizing the total\n"
    "predicted change within the budget (a multiple-choice knapsack: Lagrangian\n"
    "bisection + greedy fill), quantize with sequential GPTQ, measure perplexity on\n"
    "held-out calibration windows. Rounds after the first re-estimate the gradients and\n"
    "input statistics on the previous round's compressed model. The round with the\n"
    "lowest held-out perplexity is written to OUT (via a temporary file).\n"
    "  --target-bpw B     budget in bits per weight of the whole file (8 * bytes / params)\n"
    "  --target-size S    budget in bytes; suffixes K M G (10^3..), KiB MiB GiB (2^10..)\n"
    "  --calib FILE       calibration text, or .json token ids: one array, or an array of\n"
    "                     sequences (windows at their starts); the last tenth is held\n"
    "                     out for the per-round perplexity\n"
    "  --nsamples N       calibration windows (default 16), --seqlen L tokens (512)\n"
    "  --heldout N        held-out windows (default 4)\n"
    "  --rounds R         estimate -> allocate -> quantize rounds (default 1)\n"
    "  --proxy P          gradtw (default): the gradient-scaled Gram form s_j H_w with\n"
    "                     the token-weighted Gram (tokens weighted by their gradient's\n"
    "                     size; it ranked best on SmolLM2, see docs/architecture.md);\n"
    "                     grad: s_j H with the plain Gram; diag: the diagonal Fisher (one\n"
    "                     float per weight in memory while estimating); only the chosen\n"
    "                     form is computed\n"
    "  --sensitivity F    round 1 from the predictions of 'sqz sensitivity --json F'\n"
    "                     (same model, types, calibration: the estimate does not depend\n"
    "                     on the budget, so one file serves many budgets; with --prune\n"
    "                     a file made with 'sqz sensitivity --prune')\n"
    "  --types LIST       candidate types (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,\n"
    "                     Q4_1,Q5_0,Q5_1,IQ4_NL,F16,IQ3_S,IQ4_XS; a tensor keeps the ones\n"
    "                     its rows fit, and on rows a k-quant fits Q4_0 Q4_1 Q5_0 Q5_1\n"
    "                     IQ4_NL yield to it: llama.cpp writes the k-quant there, and\n"
    "                     each costs scoring). Below 3 bpw (and without --sensitivity)\n"
    "                     the default is Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,\n"
    "                     IQ4_NL,IQ4_XS,IQ3_S,IQ3_XXS,IQ2_S,IQ2_XS,IQ2_XXS\n"
    "  --all-types        every listed type its rows fit on every tensor\n"
    "  --eval TEXT        also perplexity on TEXT after each round (GPTQ protocol,\n"
    "                     --eval-ctx 512, --eval-chunks 8 windows)\n"
    "  --prune P          none (default); auto or max=F (F in [0, 0.9]): also remove\n"
    "                     attention heads and FFN channels, chosen jointly with the types\n"
    "                     in the same knapsack (each layer's attention and FFN block is\n"
    "                     one item whose options are a width and the types of its\n"
    "                     matrices; removed units are compensated by least squares, see\n"
    "                     'sqz help prune'); a block keeps at least 1-F of its heads or\n"
    "                     channels (auto: none when the types alone fit in 95% of the\n"
    "                     budget - pruning lost to them there, measured - else F = 0.5\n"
    "                     when the smallest size at 0.5 is within 95% of the budget, else\n"
    "                     0.75). Later rounds keep round 1's widths\n"
    "                     and re-allocate the types on the pruned model. The output is a\n"
    "                     llama.cpp 'deci' GGUF when layers differ\n"
    "  --keep-pruned F    with --prune: also keep the pruned, compensated model before\n"
    "                     quantization as F (F32 GGUF), to measure pruning alone; it is\n"
    "                     then written whole first (without it the pruned layers reach\n"
    "                     the quantizer one at a time: the same output bytes)\n"
    "  --device D         cpu (default) or cuda: where the decoder layers' forward\n"
    "                     (with the estimate's and GPTQ's Grams) and backward and\n"
    "                     GPTQ's factors run (a build with cmake -DSQZ_CUDA=ON and a\n"
    "                     GPU; the output head, the scoring and the sweeps stay on the\n"
    "                     CPU for now)\n"
    "  --measure K        after the last round, apply K of the chosen tensors alone to the\n"
    "                     original model and measure their loss change (for the report)\n"
    "  --json REPORT      plan, predictions, bytes and perplexity per round; each stage's\n"
    "                     wall time and GFLOP/s beside this machine's SGEMM/DGEMM rates,\n"
    "                     measured at the start (the table is also printed at the end)\n"
    "  --html REPORT      the same as a self-contained page (inline SVG)\n"
    "  --resume           a resumable run: checkpoints beside OUT (OUT.estimate.json:\n"
    "                     round 1's estimate; OUT.round<r>.part and .state: the round's\n"
    "                     quantization), and a run stopped (killed or interrupted) goes\n"
    "                     on from them when the same command is given again: after the\n"
    "                     estimate and the last checkpointed layer, writing the same bytes\n"
    "                     as an uninterrupted run. Checkpoints of another model, other\n"
    "                     calibration or other options are refused, naming which. With\n"
    "                     --prune the estimate is made again. Without it an interrupted\n"
    "                     run leaves nothing\n"
    "  --gptq-double      GPTQ's factor and sweep in double precision (default single,\n"
    "                     as GPTQ's reference; the estimate stays single)\n"
    "  --tune-steps N     then tune the written file end to end, at most N steps (sqz\n"
    "                     help tune: one factor per row, codes fixed, KL to MODEL over\n"
    "                     the calibration windows, held-out KL picking the step; each\n"
    "                     step is a forward and backward pass over every window)\n"
    "  --tune-lr F        the tuning's Adam step (default 0.002)\n"
    "  --rescale R        the chosen tensors of types below 4 bits per weight: after\n"
    "                     quantizing, each 256 values' scales times (sum x^2 / sum\n"
    "                     x*q)^P, the codes kept: unbiased (P = 1, default), energy\n"
    "                     (0.5), off (0) or P in [0, 1] (sqz help quantize; the\n"
    "                     estimate predicts the unrescaled values)\n"
    "  --checkpoint-every S  seconds between the quantization's checkpoints, taken\n"
    "                     after a layer (default 60; 0: after every layer); implies\n"
    "                     checkpoints\n";

/* Bytes from "123", "1.5G", "800MiB"...; 0 on success, -1 with unknown units. */
static int parse_size(const char *s, double *out) {
    if (!s || !*s) return -1;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    static const struct { const char *u; double f; } units[] = {
        {"", 1}, {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"M", 1e6}, {"MB", 1e6}, {"G", 1e9}, {"GB", 1e9},
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].u)) {
            *out = floor(v * units[i].f);
            return 0;
        }
    return -1;
}

static int note_temp(void *ctx, const char *path) {
    (void)ctx;
    return guard_extra(path);
}

static void print_progress(void *ctx, int round, const sqz_compress_report *rep) {
    const char *const *names = ctx; /* model, eval text */
    double bpw_of = 8.0 / (double)rep->n_params;
    if (round == 0) {
        if (rep->over_max)
            fprintf(stderr, "sqz: note: budget of %llu bytes (%.3f bpw) is above the unquantized size, %llu bytes "
                    "(%.3f bpw, every tensor at its largest candidate type); writing the best file that fits\n",
                    (unsigned long long)rep->budget, rep->budget * bpw_of, (unsigned long long)rep->max_bytes,
                    rep->max_bytes * bpw_of);
        printf("compress %s: %lld weights, budget %llu bytes (%.3f bpw; reachable %.3f .. %.3f bpw); held-out "
               "perplexity of the model %.4f%s\n", names[0], (long long)rep->n_params, (unsigned long long)rep->budget,
               rep->budget * bpw_of, rep->min_bytes * bpw_of, rep->max_bytes * bpw_of, rep->base_heldout_ppl, "");
    } else {
        const sqz_compress_round *ri = &rep->rounds[round - 1];
        printf("round %d: predicted dL %.5f, %llu bytes (%.4f bpw), held-out perplexity %.4f", round, ri->predicted,
               (unsigned long long)ri->file_bytes, ri->bpw, ri->heldout_ppl);
        if (names[1]) printf(", %s perplexity %.4f", names[1], ri->eval_ppl);
        printf(" (%.1f s)\n", ri->seconds);
    }
    fflush(stdout);
}

static cJSON *compress_json(const sqz_compress_report *rep, const char *model, const char *out, const calib_set *cs,
                            const sqz_compress_opts *o, double sgemm, double dgemm, int threads, double total) {
    cJSON *root = cJSON_CreateObject();
    double bpw_of = 8.0 / (double)rep->n_params;
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddStringToObject(root, "output", out);
    cJSON_AddNumberToObject(root, "n_params", (double)rep->n_params);
    cJSON_AddNumberToObject(root, "budget_bytes", (double)rep->budget);
    cJSON_AddNumberToObject(root, "budget_bpw", rep->budget * bpw_of);
    cJSON_AddNumberToObject(root, "min_bytes", (double)rep->min_bytes);
    cJSON_AddNumberToObject(root, "max_bytes", (double)rep->max_bytes);
    cJSON *cj = cJSON_AddObjectToObject(root, "calib");
    cJSON_AddStringToObject(cj, "file", cs->path);
    cJSON_AddNumberToObject(cj, "nsamples", (double)cs->nsamples);
    cJSON_AddNumberToObject(cj, "seqlen", (double)cs->seqlen);
    cJSON_AddNumberToObject(cj, "heldout_nsamples", (double)cs->heldout);
    cJSON_AddNumberToObject(cj, "seed", (double)cs->seed);
    cJSON_AddStringToObject(root, "proxy", sqz_proxy_name(o->proxy));
    cJSON_AddNumberToObject(root, "damp", o->damp);
    cJSON_AddNumberToObject(root, "shrink", o->shrink);
    cJSON_AddNumberToObject(root, "rescale", o->rescale);
    cJSON_AddItemToObject(root, "base_heldout_ppl", num_or_null(rep->base_heldout_ppl));
    cJSON_AddItemToObject(root, "base_eval_ppl", num_or_null(rep->base_eval_ppl));
    cJSON *rs = cJSON_AddArrayToObject(root, "rounds");
    for (int r = 0; r < rep->n_rounds; r++) {
        const sqz_compress_round *ri = &rep->rounds[r];
        cJSON *oj = cJSON_CreateObject();
        cJSON_AddNumberToObject(oj, "round", ri->round);
        cJSON_AddNumberToObject(oj, "predicted_dL", ri->predicted);
        cJSON_AddNumberToObject(oj, "tensor_bytes", (double)ri->tensor_bytes);
        cJSON_AddNumberToObject(oj, "file_bytes", (double)ri->file_bytes);
        cJSON_AddNumberToObject(oj, "bpw", ri->bpw);
        cJSON_AddItemToObject(oj, "heldout_ppl", num_or_null(ri->heldout_ppl));
        cJSON_AddItemToObject(oj, "eval_ppl", num_or_null(ri->eval_ppl));
        cJSON_AddNumberToObject(oj, "seconds", ri->seconds);
        cJSON_AddItemToArray(rs, oj);
    }
    cJSON_AddNumberToObject(root, "best_round", rep->best_round);
    if (rep->tuned) {
        tune_json(cJSON_AddObjectToObject(root, "tune"), &rep->tune);
    }
    cJSON_AddItemToObject(root, "stages", stages_json(&rep->times, o->gptq_double, sgemm, dgemm, threads, total));
    if (rep->prune_skipped) cJSON_AddStringToObject(root, "prune_auto", "none: the types alone fit in 95% of the budget");
    if (rep->prune_max >= 0) {
        cJSON *pj = cJSON_AddObjectToObject(root, "prune");
        cJSON_AddNumberToObject(pj, "max_fraction", rep->prune_max);
        cJSON_AddNumberToObject(pj, "ffn_step", rep->ffn_step);
        cJSON_AddNumberToObject(pj, "params_after", (double)rep->params_after);
        cJSON_AddItemToObject(pj, "layers", layer_keep_json(rep->keep, rep->n_layer));
    }
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (int i = 0; i < rep->n_tensors; i++) {
        const sqz_compress_tensor *t = &rep->tensors[i];
        cJSON *oj = cJSON_CreateObject();
        cJSON_AddStringToObject(oj, "name", t->name);
        cJSON_AddNumberToObject(oj, "layer", t->layer);
        cJSON_AddStringToObject(oj, "kind", sqz_linear_kind_name(t->kind));
        cJSON_AddStringToObject(oj, "type", type_name(t->type));
        cJSON_AddNumberToObject(oj, "n_params", t->n_params);
        cJSON_AddNumberToObject(oj, "bytes", t->bytes);
        cJSON_AddNumberToObject(oj, "bpw", t->n_params > 0 ? 8.0 * t->bytes / t->n_params : 0.0);
        cJSON_AddItemToObject(oj, "predicted_dL", num_or_null(t->predicted_dl));
        cJSON_AddItemToObject(oj, "measured_dL", o->measure ? num_or_null(t->measured_dl) : cJSON_CreateNull());
        cJSON *os = cJSON_AddArrayToObject(oj, "options");
        for (int k = 0; k < t->n_options; k++) {
            cJSON *op = cJSON_CreateObject();
            cJSON_AddStringToObject(op, "type", type_name(t->opt[k].type));
            cJSON_AddNumberToObject(op, "bytes", (double)t->opt[k].bytes);
            cJSON_AddNumberToObject(op, "predicted_dL", sqz_proxy_cost(&t->opt[k], o->proxy));
            cJSON_AddItemToArray(os, op);
        }
        cJSON_AddItemToArray(ts, oj);
    }
    return root;
}

int cmd_compress(args *a) {
    const char *model = NULL, *out = NULL, *json = NULL, *html = NULL, *types_arg = SQZ_COMPRESS_DEFAULT_TYPES;
    int types_given = 0; /* --types: else the default list, by the target (SQZ_COMPRESS_LOWBIT_BPW) */
    const char *eval = NULL;
    const char *keep_pruned = NULL;
    const char *size_arg = NULL, *bpw_arg = NULL, *sens_in = NULL;
    calib_set cs = {NULL, 16, 512, 0, 4, NULL, 0, NULL, NULL};
    long long rounds = 1, threads = 0, eval_ctx = 512, eval_chunks = 8, measure = 0;
    int quiet = 0, rc = 0, form = SQZ_PROXY_GRADTW, all_types = 0;
    double prune_max = -1.0; /* --prune: the largest fraction of a block's heads or channels removed; < 0: none */
    int prune_auto = 0;      /* --prune auto: 0.5 when the budget leaves room at it, else 0.75 */
    sqz_device device = SQZ_DEVICE_CPU;
    double damp = 0.01, shrink = 0.75, ckpt_every = -1.0; /* -1: not given */
    double rescale = -1.0; /* -1: the library's default (sqz_compress_opts_default) */
    int resume = 0, gptq_double = 0;
    long long tune_steps = 0;
    double tune_lr = 0.0;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (calib_flag(a, &cs, &rc)) {
            if (rc) return rc;
        } else if (tune_flag(a, "--tune-lr", &tune_steps, &tune_lr, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            if (!(out = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--html")) {
            if (!(html = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--keep-pruned")) {
            if (!(keep_pruned = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--eval")) {
            if (!(eval = opt_value(a))) return usage_fail(a->cmd, "%s needs a text file", s);
        } else if (!strcmp(s, "--sensitivity")) {
            if (!(sens_in = opt_value(a))) return usage_fail(a->cmd, "%s needs a JSON file", s);
        } else if (!strcmp(s, "--proxy")) {
            const char *pv = opt_value(a);
            form = -1;
            for (int f = 0; f < SQZ_PROXY_LOCAL && pv; f++)
                if (!strcmp(pv, sqz_proxy_name(f))) form = f;
            if (form < 0) return usage_fail(a->cmd, "--proxy '%s': expected grad, gradtw or diag", pv ? pv : "");
        } else if (!strcmp(s, "--all-types")) {
            all_types = 1;
        } else if (!strcmp(s, "--types")) {
            if (!(types_arg = opt_value(a))) return usage_fail(a->cmd, "%s needs a list", s);
            types_given = 1;
        } else if (!strcmp(s, "--prune")) {
            const char *pv = opt_value(a);
            char *end = NULL;
            if (pv && !strcmp(pv, "none")) prune_max = -1.0;
            else if (pv && !strcmp(pv, "auto")) prune_max = 0.75, prune_auto = 1;
            else if (pv && !strncmp(pv, "max=", 4) && pv[4] && (prune_max = strtod(pv + 4, &end), !*end) &&
                     prune_max >= 0.0 && prune_max <= 0.9)
                ;
            else
                return usage_fail(a->cmd, "--prune '%s': expected auto, none or max=F with F in [0, 0.9]",
                                  pv ? pv : "");
        } else if (!strcmp(s, "--target-bpw")) {
            if (!(bpw_arg = opt_value(a))) return usage_fail(a->cmd, "%s needs a number", s);
        } else if (!strcmp(s, "--target-size")) {
            if (!(size_arg = opt_value(a))) return usage_fail(a->cmd, "%s needs a size", s);
        } else if (!strcmp(s, "--rounds") || !strcmp(s, "--threads") || !strcmp(s, "--eval-ctx") ||
                   !strcmp(s, "--eval-chunks") || !strcmp(s, "--measure")) {
            long long *dst = !strcmp(s, "--rounds") ? &rounds : !strcmp(s, "--threads") ? &threads
                           : !strcmp(s, "--eval-ctx") ? &eval_ctx : !strcmp(s, "--measure") ? &measure : &eval_chunks;
            v = opt_value(a);
            if (parse_pos_int(v, !strcmp(s, "--rounds") ? 16 : 1 << 20, dst))
                return usage_fail(a->cmd, "%s: expected a positive number", s);
        } else if (gptq_flag(a, &damp, &shrink, &rc)) {
            if (rc) return rc;
        } else if (device_flag(a, &device, &rc)) {
            if (rc) return rc;
        } else if (resume_flag(a, &resume, &ckpt_every, &rc)) {
            if (rc) return rc;
        } else if (rescale_flag(a, &rescale, &rc)) {
            if (rc) return rc;
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
    if (!!size_arg == !!bpw_arg) return usage_fail(a->cmd, "%s", "give exactly one of --target-bpw B and --target-size SIZE");
    if (!cs.path) return usage_fail(a->cmd, "%s", "--calib FILE is required (the plan is estimated from it)");
    if (keep_pruned && prune_max < 0) return usage_fail(a->cmd, "%s", "--keep-pruned needs --prune auto or max=F");
    if (prune_max >= 0 && measure)
        return usage_fail(a->cmd, "%s", "--measure cannot be used with --prune (the tensors change shape)");
    double target_bpw = NAN, target_size = NAN;
    if (bpw_arg) {
        char *end;
        target_bpw = strtod(bpw_arg, &end);
        if (*end || !(target_bpw > 0 && target_bpw <= 64))
            return usage_fail(a->cmd, "--target-bpw '%s': expected bits per weight in (0, 64]", bpw_arg);
    } else if (parse_size(size_arg, &target_size)) {
        return usage_fail(a->cmd, "--target-size '%s': expected a number of bytes with an optional unit B, K, KB, M, "
                                  "MB, G, GB, KiB, MiB or GiB", size_arg);
    }
    int types[SQZ_SENS_MAX_OPTIONS], n_types = 0;
    if ((rc = parse_types(a->cmd, types_arg, types, &n_types))) return rc;

    sqz_err err;
    char msg[1600];
    sqz_model m;
    double t_start = sqz_now(), sgemm_rate = 0.0, dgemm_rate = 0.0;
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    sqz_backend *backend = NULL;
    sqz_pool *pool = NULL;
    int32_t *eval_ids = NULL;
    int64_t n_eval = 0;
    cJSON *root = NULL;
    sqz_compress_report rep;
    memset(&rep, 0, sizeof rep);
    int64_t n_params = sqz_model_n_params(&m);
    uint64_t budget = bpw_arg ? (uint64_t)floor(target_bpw * (double)n_params / 8.0) : (uint64_t)target_size;
    /* below 3 bpw the default candidates reach down with the 2-bit i-quants (a saved
     * estimate keeps the types it was made with) */
    int lowbit = !types_given && !sens_in && n_params > 0 &&
                 8.0 * (double)budget / (double)n_params < SQZ_COMPRESS_LOWBIT_BPW;
    if (lowbit && (rc = parse_types(a->cmd, SQZ_COMPRESS_LOWBIT_TYPES, types, &n_types))) goto done;

    if ((rc = calib_load(&cs, &m))) goto done;
    if (eval) {
        char *text = NULL;
        size_t len = 0;
        if ((rc = read_text(eval, &text, &len))) goto done;
        if (!m.tok) {
            free(text);
            rc = fail("--eval needs a model with a tokenizer");
            goto done;
        }
        int r = sqz_tok_encode(m.tok, text, len, sqz_tok_vocab(m.tok)->add_bos, &eval_ids, &n_eval, &err);
        free(text);
        if (r) {
            rc = fail(err.msg);
            goto done;
        }
    }
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto done;
    }
    if (sqz_backend_create(device, pool, &backend, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    if ((rc = guard_output(out))) goto done;
    if (sqz_gemm_rates(sqz_pool_threads(pool), &sgemm_rate, &dgemm_rate, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    const char *names[2] = {model, eval};
    sqz_compress_opts co;
    sqz_compress_opts_default(&co);
    co.budget = budget;
    co.windows = cs.windows;
    co.nsamples = (int)cs.nsamples;
    co.seqlen = (int)cs.seqlen;
    co.held = cs.held;
    co.heldout = (int)cs.heldout;
    co.eval_ids = eval_ids;
    co.n_eval = n_eval;
    co.eval_ctx = (int)eval_ctx;
    co.eval_chunks = (int)eval_chunks;
    co.rounds = (int)rounds;
    co.types = types;
    co.n_types = n_types;
    co.all_types = all_types;
    co.proxy = form;
    co.damp = damp;
    co.shrink = shrink;
    if (rescale >= 0) co.rescale = rescale;
    co.prune_max = prune_max;
    co.prune_auto = prune_auto;
    co.keep_pruned = keep_pruned;
    co.sensitivity = sens_in;
    co.measure = (int)measure;
    co.progress = !quiet;
    co.backend = backend;
    /* resumable runs only when asked: otherwise an interrupted run leaves nothing */
    co.checkpoint = resume || ckpt_every >= 0; /* OUT.estimate.json, OUT.round<r>.part/.state */
    co.resume = resume;
    co.gptq_double = gptq_double;
    co.tune_steps = (int)tune_steps;
    co.tune_lr = tune_lr;
    co.checkpoint_every_s = ckpt_every >= 0 ? ckpt_every : 60.0;
    co.temp_file = note_temp;
    co.notify = print_progress;
    co.ctx = names;
    if (sqz_compress(&m, out, &co, pool, &rep, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    int best = rep.best_round - 1;
    printf("wrote %s: round %d, %llu bytes, %.4f bits per weight, held-out perplexity %.4f (model %.4f)\n", out,
           best + 1, (unsigned long long)rep.rounds[best].file_bytes, rep.rounds[best].bpw,
           rep.rounds[best].heldout_ppl, rep.base_heldout_ppl);
    if (rep.tuned)
        printf("tuned: %d tensors and %d norms, %lld factors, held-out KL to the model %.5f -> %.5f (step %d of %d)\n",
               rep.tune.n_tensors, rep.tune.n_norms, (long long)rep.tune.n_params, rep.tune.held_kl[0],
               rep.tune.held_kl[rep.tune.best_step], rep.tune.best_step, rep.tune.n_steps);
    if (rep.prune_skipped)
        printf("--prune auto: no pruning, the types alone fit in 95%% of the budget%s\n",
               keep_pruned ? " (--keep-pruned: nothing written)" : "");
    if (rep.resumed_estimate || rep.resumed_layer > 0)
        printf("resumed: %s%s", rep.resumed_estimate ? "round 1's estimate from the checkpoint" : "",
               rep.resumed_layer > 0 ? (rep.resumed_estimate ? ", quantization after layer " : "quantization after layer ")
                                     : "\n");
    if (rep.resumed_layer > 0) printf("%d\n", rep.resumed_layer - 1);
    double total_seconds = sqz_now() - t_start;
    if (!quiet) print_stages(&rep.times, co.gptq_double, sgemm_rate, dgemm_rate, total_seconds);
    if (!quiet && sqz_backend_device(backend) == SQZ_DEVICE_CUDA)
        printf("%s: peak device memory %.1f MiB\n", sqz_backend_describe(backend),
               (double)sqz_backend_peak_bytes(backend) / 1048576.0);
    if (json || html) {
        root = compress_json(&rep, model, out, &cs, &co, sgemm_rate, dgemm_rate, sqz_pool_threads(pool),
                             total_seconds);
        cJSON_AddStringToObject(root, "device", sqz_backend_describe(backend));
        cJSON_AddNumberToObject(root, "device_peak_bytes", (double)sqz_backend_peak_bytes(backend));
        if (json && (rc = write_json(json, root))) goto done;
        if (html && report_html_write(root, html, msg, sizeof msg)) {
            rc = fail(msg);
            goto done;
        }
    }
done:
    cJSON_Delete(root);
    sqz_compress_report_free(&rep);
    free(eval_ids);
    sqz_backend_free(backend);
    sqz_pool_free(pool);
    calib_free(&cs);
    sqz_model_free(&m);
    return rc;
}

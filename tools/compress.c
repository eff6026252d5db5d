/* sqz sensitivity and sqz compress: predicted loss changes of every (tensor, type)
 * option, and mixed precision under a byte budget from them (DESIGN.md §4-§5). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calib_args.h"
#include "cli.h"
#include "report_html.h"
#include "sqz/calib.h"
#include "sqz/core.h"
#include "sqz/eval.h"
#include "sqz/gguf_write.h"
#include "sqz/grad.h"
#include "sqz/joint.h"
#include "sqz/model.h"
#include "sqz/pipeline.h"
#include "sqz/plan.h"
#include "sqz/prune.h"
#include "sqz/quant.h"
#include "sqz/quantize_model.h"
#include "sqz/sensitivity.h"
#include "sqz/tok.h"

/* Candidate types of a plan: every block type llama.cpp's CPU backend runs, and F16. */
static const char *const kDefaultTypes = "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,IQ4_NL,F16";

static const char *type_name(int t) { return sqz_type_get(t) ? sqz_type_get(t)->name : "?"; }

static int parse_types(const char *cmd, const char *list, int *types, int *n) {
    char buf[512];
    if (!list || strlen(list) >= sizeof buf) return usage_fail(cmd, "--types '%s': expected a comma-separated list", list ? list : "");
    strcpy(buf, list);
    *n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int t = sqz_type_from_name(tok);
        const sqz_type_traits *tt = t >= 0 ? sqz_type_get(t) : NULL;
        if (!tt || !tt->from_float || !tt->dequantize || t == SQZ_TYPE_F32)
            return usage_fail(cmd, "--types: '%s' is not a type sqz writes (Q2_K Q3_K Q4_K Q5_K Q6_K Q8_0 Q4_0 Q4_1 "
                                   "Q5_0 Q5_1 IQ4_NL F16 BF16)", tok);
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
    "                       [--weighted-only]\n"
    "                       [--damp F] [--shrink F] [--threads N] [--quiet] [--json OUT]\n"
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
    "                  Q5_0,Q5_1,IQ4_NL,F16; each tensor keeps the ones its rows fit, and\n"
    "                  on rows a k-quant fits Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL yield to it)\n"
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
    "  --json OUT      every prediction (and measurement) as JSON, with each stage's\n"
    "                  wall time and GFLOP/s beside the machine's SGEMM/DGEMM rates\n";

/* Replaces tensor idx of m by an F32 tensor over `data` (the caller keeps the original
 * in *saved_* and restores it with restore_tensor). */
typedef struct {
    int idx;
    sqz_tensor tmp;
    const sqz_tensor *orig_a, *orig_b;
} swap_t;

static const sqz_tensor **slot_of(sqz_model *m, int idx, const sqz_tensor ***second) {
    int per = m->cfg.n_layer * SQZ_LIN_PER_LAYER;
    *second = NULL;
    if (idx < per) {
        sqz_layer *L = &m->layers[idx / SQZ_LIN_PER_LAYER];
        const sqz_tensor **s[SQZ_LIN_PER_LAYER] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        return s[idx % SQZ_LIN_PER_LAYER];
    }
    if (idx == per) {
        if (m->output == m->tok_embd) *second = &m->tok_embd;
        return &m->output;
    }
    return &m->tok_embd;
}

static void swap_in(sqz_model *m, swap_t *s, int idx, const float *data) {
    const sqz_tensor **b, **a = slot_of(m, idx, &b);
    s->idx = idx;
    s->orig_a = *a;
    s->orig_b = b ? *b : NULL;
    s->tmp = **a;
    s->tmp.type = SQZ_TYPE_F32;
    s->tmp.data = data;
    s->tmp.nbytes = (size_t)sqz_tensor_nelements(*a) * sizeof(float);
    *a = &s->tmp;
    if (b) *b = &s->tmp;
}

static void swap_out(sqz_model *m, swap_t *s) {
    const sqz_tensor **b, **a = slot_of(m, s->idx, &b);
    *a = s->orig_a;
    if (b) *b = s->orig_b;
}

/* A quantized candidate, and one of --validate-types when given. */
static int validatable(int type, const int *vtypes, int n_vtypes) {
    if (!sqz_quant_supported(type)) return 0;
    for (int i = 0; i < n_vtypes; i++)
        if (vtypes[i] == type) return 1;
    return n_vtypes == 0;
}

/* The proxy forms of sqz_sens_option, in the order they are printed. */
enum { FORM_GRAD, FORM_GRADTW, FORM_DIAG, FORM_LOCAL, N_FORMS };
static const char *const kFormName[N_FORMS] = {"grad", "gradtw", "diag", "local"};
static const char *const kFormKey[N_FORMS] = {"dl_grad", "dl_gradtw", "dl_diag", "dl_local"};

static double cost_of(const sqz_sens_option *o, int form) {
    return form == FORM_GRAD ? o->dl_grad : form == FORM_GRADTW ? o->dl_gradtw : form == FORM_DIAG ? o->dl_diag
                                                                                                   : o->dl_local;
}

static double cost_grad(const sqz_sens_option *o) { return o->dl_grad; }
static double cost_gradtw(const sqz_sens_option *o) { return o->dl_gradtw; }
static double cost_diag(const sqz_sens_option *o) { return o->dl_diag; }
static sqz_option_cost cost_fn(int form) {
    return form == FORM_GRADTW ? cost_gradtw : form == FORM_DIAG ? cost_diag : cost_grad;
}

static void set_cost(sqz_sens_option *o, int form, double v) {
    if (form == FORM_GRAD) o->dl_grad = v;
    else if (form == FORM_GRADTW) o->dl_gradtw = v;
    else if (form == FORM_DIAG) o->dl_diag = v;
    else o->dl_local = v;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* The GEMM each stage's arithmetic is held against: single precision for the model's
 * passes, double for the Grams and everything solved on them; none for writing. */
static const char *stage_ref(int s) {
    return s == SQZ_STAGE_FORWARD || s == SQZ_STAGE_BACKWARD ? "sgemm" : s == SQZ_STAGE_WRITING ? NULL : "dgemm";
}

/* Stage s's GFLOP/s and the rate of the GEMM it is held against (0: none). */
static double stage_rate(const sqz_stage_times *t, int s, double sgemm, double dgemm, double *peak) {
    const char *ref = stage_ref(s);
    *peak = !ref ? 0.0 : ref[0] == 's' ? sgemm : dgemm;
    return t->seconds[s] > 0 ? t->flops[s] / t->seconds[s] / 1e9 : 0.0;
}

/* Each stage's wall time, GFLOP/s and the fraction of the machine's GEMM rate; the rest
 * of the wall time (loading, held-out and --eval measurements, the knapsack) as "other". */
static void print_stages(const sqz_stage_times *t, double sgemm, double dgemm, double total) {
    double sum = 0.0;
    printf("%-9s %9s %9s %9s %s\n", "stage", "seconds", "GFLOP", "GFLOP/s", "of the machine's GEMM rate");
    for (int s = 0; s < SQZ_STAGE_COUNT; s++) {
        sum += t->seconds[s];
        if (t->seconds[s] <= 0 && t->flops[s] <= 0) continue;
        double peak, rate = stage_rate(t, s, sgemm, dgemm, &peak);
        printf("%-9s %9.1f %9.1f %9.1f", sqz_stage_name(s), t->seconds[s], t->flops[s] / 1e9, rate);
        if (t->flops[s] > 0 && peak > 0) printf(" %5.1f%% of %s %.1f", 100.0 * rate / peak, stage_ref(s), peak);
        printf("\n");
    }
    printf("%-9s %9.1f\n%-9s %9.1f\n", "other", total - sum, "total", total);
}

static cJSON *stages_json(const sqz_stage_times *t, double sgemm, double dgemm, int threads, double total) {
    cJSON *o = cJSON_CreateObject();
    cJSON *g = cJSON_AddObjectToObject(o, "gemm_rates");
    cJSON_AddNumberToObject(g, "sgemm_gflops", sgemm);
    cJSON_AddNumberToObject(g, "dgemm_gflops", dgemm);
    cJSON_AddNumberToObject(g, "threads", threads);
    double sum = 0.0;
    for (int s = 0; s < SQZ_STAGE_COUNT; s++) {
        cJSON *e = cJSON_AddObjectToObject(o, sqz_stage_name(s));
        const char *ref = stage_ref(s);
        double peak, rate = stage_rate(t, s, sgemm, dgemm, &peak);
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
    const char *model = NULL, *json = NULL, *types_arg = kDefaultTypes, *vtypes_arg = NULL;
    calib_set cs = {NULL, 16, 512, 0, 4, NULL, 0, NULL, NULL};
    long long validate = 0, threads = 0;
    int quiet = 0, diag = 1, weighted_only = 0, all_types = 0, rc = 0;
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
        } else if (!strcmp(s, "--no-diag")) {
            diag = 0;
        } else if (!strcmp(s, "--weighted-only")) {
            weighted_only = 1;
        } else if (!strcmp(s, "--all-types")) {
            all_types = 1;
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
    int types[SQZ_SENS_MAX_OPTIONS], n_types = 0, vtypes[SQZ_SENS_MAX_OPTIONS], n_vtypes = 0;
    if ((rc = parse_types(a->cmd, types_arg, types, &n_types))) return rc;
    if (vtypes_arg && (rc = parse_types(a->cmd, vtypes_arg, vtypes, &n_vtypes))) return rc;

    sqz_err err;
    sqz_model m;
    double t_start = sqz_now(), sgemm_rate = 0.0, dgemm_rate = 0.0;
    sqz_stage_times times;
    memset(&times, 0, sizeof times);
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    sqz_pool *pool = NULL;
    sqz_sens sens;
    memset(&sens, 0, sizeof sens);
    int *keep = NULL, n_keep = 0;
    double *meas = NULL;
    cJSON *root = NULL;
    if ((rc = calib_load(&cs, &m))) goto done;
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto done;
    }
    if (sqz_gemm_rates(sqz_pool_threads(pool), &sgemm_rate, &dgemm_rate, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    /* the options to validate, drawn before the estimate so their Ŵ are kept */
    if (validate) {
        sqz_sens shape;
        if (sqz_sens_options(&m, types, n_types, all_types, &shape, &err)) {
            rc = fail(err.msg);
            goto done;
        }
        int total = 0;
        for (int i = 0; i < shape.n_tensors; i++)
            for (int k = 0; k < shape.t[i].n_options; k++) total += validatable(shape.t[i].opt[k].type, vtypes, n_vtypes);
        int *all = malloc((size_t)total * 2 * sizeof(int));
        keep = malloc((size_t)(validate < total ? validate : total) * 2 * sizeof(int));
        int j = 0;
        for (int i = 0; i < shape.n_tensors; i++)
            for (int k = 0; k < shape.t[i].n_options; k++)
                if (validatable(shape.t[i].opt[k].type, vtypes, n_vtypes))
                    all[2 * j] = i, all[2 * j + 1] = shape.t[i].opt[k].type, j++;
        uint64_t st = (uint64_t)cs.seed * 0x9E3779B97F4A7C15ull + 12345;
        for (int i = total - 1; i > 0; i--) { /* Fisher-Yates with splitmix64 */
            st += 0x9E3779B97F4A7C15ull;
            uint64_t z = st;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            int r = (int)(z % (uint64_t)(i + 1));
            int t0 = all[2 * i], t1 = all[2 * i + 1];
            all[2 * i] = all[2 * r], all[2 * i + 1] = all[2 * r + 1];
            all[2 * r] = t0, all[2 * r + 1] = t1;
        }
        n_keep = (int)(validate < total ? validate : total);
        memcpy(keep, all, (size_t)n_keep * 2 * sizeof(int));
        free(all);
        sqz_sens_free(&shape);
    }
    if (weighted_only && validate) return usage_fail(a->cmd, "%s", "--weighted-only cannot be used with --validate (it compares every form)");
    sqz_sens_opts so = {cs.windows, (int)cs.nsamples, (int)cs.seqlen, types, n_types, damp, shrink,
                        diag && !weighted_only, keep, n_keep, !quiet, 0, 0, weighted_only, all_types};
    if (sqz_sensitivity(&m, &m, pool, &so, &sens, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    times = sens.times;
    printf("sensitivity of %s: mean loss %.5f on %lld calibration tokens (gradients %.1f s, options %.1f s)\n", model,
           sens.loss, (long long)sens.n_scored, sens.seconds_grad, sens.seconds_quant);
    printf("%-28s %-7s %12s %12s %12s %12s %12s\n", "tensor", "type", "bytes", "dL grad", "dL gradtw", "dL diag",
           "dL local");
    for (int i = 0; i < sens.n_tensors; i++)
        for (int k = 0; k < sens.t[i].n_options; k++) {
            const sqz_sens_option *o = &sens.t[i].opt[k];
            printf("%-28s %-7s %12llu %12.4e %12.4e %12.4e %12.4e\n", sens.t[i].name, type_name(o->type),
                   (unsigned long long)o->bytes, o->dl_grad, o->dl_gradtw, o->dl_diag, o->dl_local);
        }
    double rho[N_FORMS], rho_sym[N_FORMS];
    for (int f = 0; f < N_FORMS; f++) rho[f] = rho_sym[f] = NAN;
    if (n_keep) {
        double base;
        if (sqz_mean_loss(&m, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &base, &err)) {
            rc = fail(err.msg);
            goto done;
        }
        /* meas: [measured | each form | symmetric part] × n_keep */
        meas = calloc((size_t)n_keep * (N_FORMS + 2), sizeof(double));
        double *sym = meas + (N_FORMS + 1) * n_keep;
        sqz_progress prog;
        sqz_progress_begin(&prog, "validate", n_keep, "options", 0);
        if (quiet) prog.out = NULL;
        for (int i = 0; i < n_keep; i++) {
            const sqz_sens_tensor *t = &sens.t[keep[2 * i]];
            const sqz_sens_option *o = NULL;
            for (int k = 0; k < t->n_options; k++)
                if (t->opt[k].type == keep[2 * i + 1]) o = &t->opt[k];
            int64_t n = t->rows * t->cols;
            float *mirror = malloc((size_t)n * sizeof(float));
            const sqz_tensor **b2, **slot = slot_of(&m, keep[2 * i], &b2);
            if (!mirror || sqz_tensor_rows_f32(*slot, 0, t->rows, mirror, &err)) {
                free(mirror);
                rc = fail(mirror ? err.msg : "out of memory");
                goto done;
            }
            for (int64_t e = 0; e < n; e++) mirror[e] = 2.0f * mirror[e] - o->what[e]; /* W + (W − Ŵ) */
            double l[2];
            int r = 0;
            for (int side = 0; side < 2 && !r; side++) {
                swap_t sw;
                swap_in(&m, &sw, keep[2 * i], side ? mirror : o->what);
                r = sqz_mean_loss(&m, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &l[side], &err);
                swap_out(&m, &sw);
            }
            free(mirror);
            if (r) {
                rc = fail(err.msg);
                goto done;
            }
            meas[i] = l[0] - base;
            sym[i] = 0.5 * (l[0] + l[1]) - base;
            for (int f = 0; f < N_FORMS; f++) meas[n_keep * (f + 1) + i] = cost_of(o, f);
            sqz_progress_update(&prog, i + 1, NULL);
        }
        sqz_progress_end(&prog);
        printf("\nvalidation: %d options applied one at a time, loss change on %lld held-out tokens (base loss %.5f);\n"
               "'symmetric' is (L(W - dW) + L(W + dW))/2 - L(W): the change without its first-order part, which on a\n"
               "finite held-out sample is noise of zero mean (what the second-order proxies predict)\n",
               n_keep, cs.heldout * (cs.seqlen - 1), base);
        printf("%-28s %-7s %12s %12s", "tensor", "type", "measured", "symmetric");
        for (int f = 0; f < N_FORMS; f++) printf(" %12s", kFormName[f]);
        printf("\n");
        for (int i = 0; i < n_keep; i++) {
            printf("%-28s %-7s %12.4e %12.4e", sens.t[keep[2 * i]].name, type_name(keep[2 * i + 1]), meas[i], sym[i]);
            for (int f = 0; f < N_FORMS; f++) printf(" %12.4e", meas[n_keep * (f + 1) + i]);
            printf("\n");
        }
        for (int f = 0; f < N_FORMS; f++) rho_sym[f] = sqz_spearman(sym, meas + n_keep * (f + 1), n_keep);
        for (int f = 0; f < N_FORMS; f++) rho[f] = sqz_spearman(meas, meas + n_keep * (f + 1), n_keep);
        printf("Spearman rank correlation with the measured change: ");
        for (int f = 0; f < N_FORMS; f++) printf(" %s %.4f", kFormName[f], rho[f]);
        printf("\nSpearman rank correlation with its symmetric part:  ");
        for (int f = 0; f < N_FORMS; f++) printf(" %s %.4f", kFormName[f], rho_sym[f]);
        printf("\n");
    }
    double total_seconds = sqz_now() - t_start;
    if (!quiet) print_stages(&times, sgemm_rate, dgemm_rate, total_seconds);
    if (json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddNumberToObject(root, "loss", sens.loss);
        cJSON_AddItemToObject(root, "stages",
                              stages_json(&times, sgemm_rate, dgemm_rate, sqz_pool_threads(pool), total_seconds));
        cJSON_AddNumberToObject(root, "calib_tokens", (double)sens.n_scored);
        cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
        for (int i = 0; i < sens.n_tensors; i++) {
            cJSON *t = cJSON_CreateObject(), *ops = NULL;
            cJSON_AddStringToObject(t, "name", sens.t[i].name);
            cJSON_AddNumberToObject(t, "layer", sens.t[i].layer);
            cJSON_AddStringToObject(t, "kind", sqz_linear_kind_name(sens.t[i].kind));
            ops = cJSON_AddArrayToObject(t, "options");
            for (int k = 0; k < sens.t[i].n_options; k++) {
                const sqz_sens_option *o = &sens.t[i].opt[k];
                cJSON *oj = cJSON_CreateObject();
                cJSON_AddStringToObject(oj, "type", type_name(o->type));
                cJSON_AddNumberToObject(oj, "bytes", (double)o->bytes);
                for (int f = 0; f < N_FORMS; f++) {
                    double x = cost_of(o, f);
                    if (isfinite(x)) cJSON_AddNumberToObject(oj, kFormKey[f], x);
                    else cJSON_AddNullToObject(oj, kFormKey[f]);
                }
                cJSON_AddItemToArray(ops, oj);
            }
            cJSON_AddItemToArray(arr, t);
        }
        if (n_keep) {
            cJSON *v = cJSON_AddObjectToObject(root, "validation");
            cJSON *sp = cJSON_AddObjectToObject(v, "spearman"), *ss = cJSON_AddObjectToObject(v, "spearman_symmetric");
            for (int f = 0; f < N_FORMS; f++) {
                cJSON_AddItemToObject(sp, kFormName[f],
                                      isfinite(rho[f]) ? cJSON_CreateNumber(rho[f]) : cJSON_CreateNull());
                cJSON_AddItemToObject(ss, kFormName[f],
                                      isfinite(rho_sym[f]) ? cJSON_CreateNumber(rho_sym[f]) : cJSON_CreateNull());
            }
            cJSON_AddNumberToObject(v, "heldout_tokens", (double)(cs.heldout * (cs.seqlen - 1)));
            cJSON *pts = cJSON_AddArrayToObject(v, "options");
            for (int i = 0; i < n_keep; i++) {
                cJSON *p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "tensor", sens.t[keep[2 * i]].name);
                cJSON_AddStringToObject(p, "type", type_name(keep[2 * i + 1]));
                cJSON_AddNumberToObject(p, "measured", meas[i]);
                cJSON_AddNumberToObject(p, "symmetric", meas[(N_FORMS + 1) * n_keep + i]);
                for (int f = 0; f < N_FORMS; f++) {
                    double x = meas[n_keep * (f + 1) + i];
                    if (isfinite(x)) cJSON_AddNumberToObject(p, kFormName[f], x);
                    else cJSON_AddNullToObject(p, kFormName[f]);
                }
                cJSON_AddItemToArray(pts, p);
            }
        }
        rc = write_json(json, root);
    }
done:
    cJSON_Delete(root);
    free(meas);
    free(keep);
    sqz_sens_free(&sens);
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
    "                    [--prune auto|none|max=F] [--keep-pruned F32.gguf] [--threads N]\n"
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
    "                     on the budget, so one file serves many budgets)\n"
    "  --types LIST       candidate types (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,\n"
    "                     Q4_1,Q5_0,Q5_1,IQ4_NL,F16; a tensor keeps the ones its rows fit,\n"
    "                     and on rows a k-quant fits Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL yield to\n"
    "                     it: llama.cpp writes the k-quant there, and each costs scoring)\n"
    "  --all-types        every listed type its rows fit on every tensor\n"
    "  --eval TEXT        also perplexity on TEXT after each round (GPTQ protocol,\n"
    "                     --eval-ctx 512, --eval-chunks 8 windows)\n"
    "  --prune P          none (default); auto or max=F (F in [0, 0.9]): also remove\n"
    "                     attention heads and FFN channels, chosen jointly with the types\n"
    "                     in the same knapsack (each layer's attention and FFN block is\n"
    "                     one item whose options are a width and the types of its\n"
    "                     matrices; removed units are compensated by least squares, see\n"
    "                     'sqz help prune'); a block keeps at least 1-F of its heads or\n"
    "                     channels (auto: F = 0.5 when the smallest size at 0.5 is within\n"
    "                     95% of the budget, else 0.75). Later rounds keep round 1's widths\n"
    "                     and re-allocate the types on the pruned model. The output is a\n"
    "                     llama.cpp 'deci' GGUF when layers differ\n"
    "  --keep-pruned F    with --prune: also keep the pruned, compensated model before\n"
    "                     quantization as F (F32 GGUF), to measure pruning alone\n"
    "  --measure K        after the last round, apply K of the chosen tensors alone to the\n"
    "                     original model and measure their loss change (for the report)\n"
    "  --json REPORT      plan, predictions, bytes and perplexity per round; each stage's\n"
    "                     wall time and GFLOP/s beside this machine's SGEMM/DGEMM rates,\n"
    "                     measured at the start (the table is also printed at the end)\n"
    "  --html REPORT      the same as a self-contained page (inline SVG)\n";

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

typedef struct {
    int round;
    double predicted, heldout_ppl, eval_ppl, seconds;
    uint64_t tensor_bytes, file_bytes;
    double bpw;
} round_info;

/* Bytes every plan has, an upper bound: the norms (F32), the GGUF header (the
 * metadata serialized exactly as the writer will, the tensor descriptions) and one
 * alignment's padding per tensor. The first written file then gives the exact figure. */
static int fixed_bytes(const sqz_model *m, uint64_t *out, sqz_err *err) {
    sqz_gguf_writer w;
    sqz_gguf_writer_init(&w);
    if (sqz_model_write_gguf_meta(m, &w, 7, err)) {
        sqz_gguf_writer_free(&w);
        return SQZ_ERR;
    }
    uint64_t header = 24 + w.kv_len, align = w.alignment ? w.alignment : 32, n_tensors = 0;
    sqz_gguf_writer_free(&w);
    char name[96];
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int k = 0; k < 9; k++) { /* 7 linears + 2 norms: blk.L.<name>.weight, 2-D at most */
            static const char *const nm[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
            header += 8 + (uint64_t)snprintf(name, sizeof name, "blk.%d.%s.weight", l, nm[k]) + 4 + 16 + 4 + 8;
            n_tensors++;
        }
    /* F32 vectors besides the norms: q/k/v biases, q/k norms, rope_freqs */
    uint64_t vec_bytes = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const sqz_layer *L = &m->layers[l];
        const sqz_tensor *v[5] = {L->bq, L->bk, L->bv, L->q_norm, L->k_norm};
        for (int k = 0; k < 5; k++) {
            if (!v[k]) continue;
            vec_bytes += 4 * (uint64_t)v[k]->ne[0];
            header += 8 + 32 + 4 + 8 + 4 + 8;
            n_tensors++;
        }
    }
    if (m->cfg.rope_freqs) {
        vec_bytes += 4 * (uint64_t)(m->cfg.head_dim / 2);
        header += 8 + 17 + 4 + 8 + 4 + 8;
        n_tensors++;
    }
    header += 3 * (8 + 20 + 4 + 16 + 4 + 8);
    n_tensors += 3;
    *out = (uint64_t)m->cfg.dim * 4 * (uint64_t)(1 + 2 * m->cfg.n_layer) + vec_bytes + header + align * (n_tensors + 1);
    return SQZ_OK;
}

/* The predictions of a `sqz sensitivity --json` file as the first round's estimate: every
 * tensor and option of this model and these types must be in it with the same bytes. */
static int load_sensitivity(const char *path, const sqz_model *m, const int *types, int n_types, int all_types,
                            int form, sqz_sens *out) {
    char msg[1600];
    sqz_err err;
    char *text = NULL;
    size_t len = 0;
    if (sqz_read_file(path, MAX_TEXT_BYTES, &text, &len, &err)) return fail(err.msg);
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *arr = root ? cJSON_GetObjectItem(root, "tensors") : NULL;
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(root);
        snprintf(msg, sizeof msg, "%s: not a 'sqz sensitivity --json' file (no \"tensors\" array)", path);
        return fail(msg);
    }
    if (sqz_sens_options(m, types, n_types, all_types, out, &err)) {
        cJSON_Delete(root);
        return fail(err.msg);
    }
    for (int i = 0; i < out->n_tensors; i++) {
        sqz_sens_tensor *t = &out->t[i];
        const cJSON *tj = NULL, *it;
        cJSON_ArrayForEach(it, arr) {
            const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(it, "name"));
            if (n && !strcmp(n, t->name)) tj = it;
        }
        for (int k = 0; k < t->n_options; k++) {
            const cJSON *oj = NULL, *ops = tj ? cJSON_GetObjectItem(tj, "options") : NULL;
            cJSON_ArrayForEach(it, ops) {
                const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(it, "type"));
                if (ty && !strcmp(ty, type_name(t->opt[k].type))) oj = it;
            }
            const cJSON *dl = oj ? cJSON_GetObjectItem(oj, kFormKey[form]) : NULL;
            double bytes = oj ? cJSON_GetNumberValue(cJSON_GetObjectItem(oj, "bytes")) : -1;
            if (!cJSON_IsNumber(dl) || bytes != (double)t->opt[k].bytes) {
                snprintf(msg, sizeof msg, "%s: no prediction for %s in %s with %llu bytes (made for another model "
                         "or other --types / --all-types?)", path, t->name, type_name(t->opt[k].type),
                         (unsigned long long)t->opt[k].bytes);
                cJSON_Delete(root);
                sqz_sens_free(out);
                return fail(msg);
            }
            set_cost(&t->opt[k], form, cJSON_GetNumberValue(dl));
        }
    }
    cJSON_Delete(root);
    return 0;
}


int cmd_compress(args *a) {
    const char *model = NULL, *out = NULL, *json = NULL, *html = NULL, *types_arg = kDefaultTypes, *eval = NULL;
    const char *keep_pruned = NULL;
    const char *size_arg = NULL, *bpw_arg = NULL, *sens_in = NULL;
    calib_set cs = {NULL, 16, 512, 0, 4, NULL, 0, NULL, NULL};
    long long rounds = 1, threads = 0, eval_ctx = 512, eval_chunks = 8, measure = 0;
    int quiet = 0, rc = 0, form = FORM_GRADTW, all_types = 0;
    double prune_max = -1.0; /* --prune: the largest fraction of a block's heads or channels removed; < 0: none */
    int prune_auto = 0;      /* --prune auto: 0.5 when the budget leaves room at it, else 0.75 */
    double damp = 0.01, shrink = 0.75;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (calib_flag(a, &cs, &rc)) {
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
            for (int f = 0; f < FORM_LOCAL && pv; f++)
                if (!strcmp(pv, kFormName[f])) form = f;
            if (form < 0) return usage_fail(a->cmd, "--proxy '%s': expected grad, gradtw or diag", pv ? pv : "");
        } else if (!strcmp(s, "--all-types")) {
            all_types = 1;
        } else if (!strcmp(s, "--types")) {
            if (!(types_arg = opt_value(a))) return usage_fail(a->cmd, "%s needs a list", s);
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
    if (prune_max >= 0 && sens_in)
        return usage_fail(a->cmd, "%s", "--sensitivity cannot be used with --prune (a saved estimate has no widths)");
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
    sqz_model m, rm, pm; /* the model, a round's output, the pruned unquantized model (--prune) */
    int have_rm = 0, have_pm = 0;
    sqz_joint jt = {0};
    sqz_layer_keep *keep = NULL;
    char *pruned_path = NULL;
    double *best_bytes = NULL, *best_params = NULL;
    double t_start = sqz_now(), sgemm_rate = 0.0, dgemm_rate = 0.0;
    sqz_stage_times times;
    memset(&times, 0, sizeof times);
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    sqz_pool *pool = NULL;
    sqz_sens sens, shape;
    memset(&sens, 0, sizeof sens);
    memset(&shape, 0, sizeof shape);
    round_info *ri = calloc((size_t)rounds, sizeof *ri);
    int *plan = NULL, *best_plan = NULL, *choice = NULL, best = -1;
    sqz_alloc_item *items = NULL;
    char **paths = calloc((size_t)rounds, sizeof *paths);
    int32_t *eval_ids = NULL;
    int64_t n_eval = 0;
    cJSON *root = NULL;
    double *best_pred = NULL, *measured = NULL;
    if (!ri || !paths) {
        rc = fail("out of memory");
        goto done;
    }

    /* sizes first: a budget outside what the model allows fails before any work */
    if (sqz_sens_options(&m, types, n_types, all_types, &shape, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    int64_t n_params = sqz_model_n_params(&m);
    uint64_t fixed;
    if (fixed_bytes(&m, &fixed, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    uint64_t min_b = fixed, max_b = fixed;
    for (int i = 0; i < shape.n_tensors; i++) {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int k = 0; k < shape.t[i].n_options; k++) {
            lo = shape.t[i].opt[k].bytes < lo ? shape.t[i].opt[k].bytes : lo;
            hi = shape.t[i].opt[k].bytes > hi ? shape.t[i].opt[k].bytes : hi;
        }
        min_b += lo;
        max_b += hi;
    }
    uint64_t budget = bpw_arg ? (uint64_t)floor(target_bpw * (double)n_params / 8.0) : (uint64_t)target_size;
    int ffn_step = sqz_prune_ffn_step(m.cfg.n_ff);
    if (prune_max >= 0) { /* the smallest widths at the smallest types */
        if (!(shape.widths = calloc((size_t)m.cfg.n_layer, sizeof *shape.widths))) {
            rc = fail("out of memory");
            goto done;
        }
        shape.n_widths = m.cfg.n_layer;
        sqz_sens_add_narrow(&shape, types, n_types);
        for (int l = 0; l < m.cfg.n_layer; l++)
            if (sqz_prune_layer_shapes(&m, l, ffn_step, &shape.widths[l], &err)) {
                rc = fail(err.msg);
                goto done;
            }
        /* auto: removing at most half of a block when the budget allows it with 5% to spare.
         * The predicted changes add up per block and are second-order; larger removals in
         * a few blocks are where they fail (SmolLM2 at 3.0 bpw: max 0.75 cut layers 14-29
         * to a third and measured WikiText 723, held-out 66.5; max 0.5: 469, 64.7) */
        const double ladder[2] = {0.5, 0.75};
        for (int f = prune_auto ? 0 : 1; f < 2; f++) {
            double fmax = prune_auto ? ladder[f] : prune_max;
            sqz_joint js;
            if (sqz_joint_build(&m, &shape, cost_fn(FORM_GRAD), 1.0 - fmax, &js, &err)) {
                rc = fail(err.msg);
                goto done;
            }
            min_b = fixed;
            for (int i = 0; i < js.n_items; i++) {
                uint64_t lo = UINT64_MAX;
                for (int k = 0; k < js.items[i].n_options; k++)
                    if (js.items[i].options[k].bytes < lo) lo = js.items[i].options[k].bytes;
                min_b += lo;
            }
            sqz_joint_free(&js);
            prune_max = fmax;
            if ((double)min_b <= 0.95 * (double)budget) break;
        }
    }
    double bpw_of = 8.0 / (double)n_params;
    if (budget < min_b) {
        snprintf(msg, sizeof msg, "budget of %llu bytes (%.3f bpw) is below the smallest reachable size: minimum "
                 "%llu bytes (%.3f bpw), every tensor at its smallest candidate type%s",
                 (unsigned long long)budget, budget * bpw_of, (unsigned long long)min_b, min_b * bpw_of,
                 prune_max >= 0 ? " and every block at its narrowest width that --prune allows" : "");
        rc = fail(msg);
        goto done;
    }
    if (budget >= max_b)
        fprintf(stderr, "sqz: note: budget of %llu bytes (%.3f bpw) is above the unquantized size, %llu bytes (%.3f "
                "bpw, every tensor at its largest candidate type); writing the best file that fits\n",
                (unsigned long long)budget, budget * bpw_of, (unsigned long long)max_b, max_b * bpw_of);

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
    if ((rc = guard_output(out))) goto done;
    if (sqz_gemm_rates(sqz_pool_threads(pool), &sgemm_rate, &dgemm_rate, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    int n_t = shape.n_tensors, n_plan = m.cfg.n_layer * SQZ_LIN_PER_LAYER + 2;
    plan = malloc((size_t)n_plan * sizeof(int));
    best_plan = malloc((size_t)n_plan * sizeof(int));
    choice = malloc((size_t)(n_t + 2 * m.cfg.n_layer) * sizeof(int));
    best_bytes = calloc((size_t)n_t, sizeof(double));
    best_params = calloc((size_t)n_t, sizeof(double));
    if (prune_max >= 0) {
        keep = calloc((size_t)m.cfg.n_layer, sizeof *keep);
        char p2[4200];
        snprintf(p2, sizeof p2, "%s.pruned.tmp.%ld", out, (long)getpid());
        char inner[4300];
        snprintf(inner, sizeof inner, "%s.tmp.%ld", p2, (long)getpid());
        if (!keep || (rc = guard_extra(p2)) || (rc = guard_extra(inner)) || !(pruned_path = strdup(p2))) {
            if (!rc) rc = fail("out of memory");
            goto done;
        }
    }
    items = calloc((size_t)n_t, sizeof *items);
    best_pred = calloc((size_t)n_t, sizeof(double));
    sqz_alloc_option *opts = calloc((size_t)n_t * SQZ_SENS_MAX_OPTIONS, sizeof *opts);
    if (!plan || !best_plan || !choice || !items || !best_pred || !opts || !best_bytes || !best_params) {
        free(opts);
        rc = fail("out of memory");
        goto done;
    }
    double base_held = NAN, base_eval = NAN;
    {
        double l;
        if (sqz_mean_loss(&m, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &l, &err)) {
            free(opts);
            rc = fail(err.msg);
            goto done;
        }
        base_held = exp(l);
    }
    sqz_ppl_opts po = {eval_ctx, SQZ_PPL_GPTQ, eval_chunks, 0};
    if (eval) {
        sqz_ppl_result pr;
        if (sqz_perplexity(&m, pool, eval_ids, n_eval, &po, &pr, &err)) {
            free(opts);
            rc = fail(err.msg);
            goto done;
        }
        base_eval = pr.ppl;
    }
    printf("compress %s: %lld weights, budget %llu bytes (%.3f bpw; reachable %.3f .. %.3f bpw); held-out "
           "perplexity of the model %.4f%s\n", model, (long long)n_params, (unsigned long long)budget,
           budget * bpw_of, min_b * bpw_of, max_b * bpw_of, base_held, "");
    for (int r = 0; r < rounds; r++) {
        double t0 = sqz_now();
        /* --prune: round 1 allocates widths and types jointly on the model; later rounds
         * keep its widths and re-allocate types on the pruned model (same shapes as the
         * rounds' outputs, whose statistics they use) */
        int joint = prune_max >= 0 && r == 0;
        const sqz_model *wm = have_pm ? &pm : &m;
        const sqz_model *stats_m = have_rm ? &rm : wm;
        sqz_sens_opts so = {cs.windows, (int)cs.nsamples, (int)cs.seqlen, types, n_types, damp, shrink,
                            form == FORM_DIAG, NULL, 0, !quiet, joint ? ffn_step : 0, 0, form == FORM_GRADTW,
                            all_types};
        sqz_sens_free(&sens);
        if (r == 0 && sens_in) { /* round 1 from a saved estimate of the same model and types */
            if ((rc = load_sensitivity(sens_in, &m, types, n_types, all_types, form, &sens))) {
                free(opts);
                goto done;
            }
        } else if (sqz_sensitivity(stats_m, wm, pool, &so, &sens, &err)) {
            free(opts);
            rc = fail(err.msg);
            goto done;
        }
        sqz_stage_merge(&times, &sens.times);
        sqz_joint_free(&jt);
        if (joint && sqz_joint_build(&m, &sens, cost_fn(form), 1.0 - prune_max, &jt, &err)) {
            free(opts);
            rc = fail(err.msg);
            goto done;
        }
        for (int i = 0; i < n_t; i++) {
            items[i].n_options = sens.t[i].n_options;
            items[i].options = opts + (size_t)i * SQZ_SENS_MAX_OPTIONS;
            for (int k = 0; k < sens.t[i].n_options; k++) {
                opts[(size_t)i * SQZ_SENS_MAX_OPTIONS + k].bytes = sens.t[i].opt[k].bytes;
                opts[(size_t)i * SQZ_SENS_MAX_OPTIONS + k].cost = cost_of(&sens.t[i].opt[k], form);
            }
        }
        /* room for the tensors: the budget less the fixed part; if the written file
         * still comes out larger (an underestimated header), shrink by the excess */
        sqz_qmodel_report rep;
        memset(&rep, 0, sizeof rep);
        sqz_alloc_result ar;
        for (int attempt = 0;; attempt++) {
            uint64_t room = budget > fixed ? budget - fixed : 0;
            if (sqz_alloc_solve(joint ? jt.items : items, joint ? jt.n_items : n_t, room, choice, &ar, &err)) {
                free(opts);
                snprintf(msg, sizeof msg, "round %d: %s", r + 1, err.msg);
                rc = fail(msg);
                goto done;
            }
            for (int i = 0; i < n_plan; i++) plan[i] = -1;
            if (joint) { /* widths and types; the pruned, compensated model is written unquantized */
                for (int l = 0; l < m.cfg.n_layer; l++) sqz_layer_keep_free(&keep[l]);
                if (have_pm) sqz_model_free(&pm);
                have_pm = 0;
                double tp = sqz_now();
                int prc = sqz_joint_decode(&jt, &sens, choice, keep, plan, &err) ||
                          sqz_prune_write(&m, pool, keep, cs.windows, (int)cs.nsamples, (int)cs.seqlen, damp, shrink,
                                          1, pruned_path, &err);
                sqz_stage_add(&times, SQZ_STAGE_PRUNING, sqz_now() - tp, 0.0);
                if (prc || sqz_model_load(&pm, pruned_path, 0, &err)) {
                    free(opts);
                    rc = fail(err.msg);
                    goto done;
                }
                have_pm = 1;
            } else {
                for (int i = 0; i < n_t; i++) plan[i] = sens.t[i].opt[choice[i]].type;
            }
            char path[4200];
            snprintf(path, sizeof path, "%s.round%d.tmp.%ld", out, r + 1, (long)getpid());
            if (!paths[r]) {
                char inner[4300];
                snprintf(inner, sizeof inner, "%s.tmp.%ld", path, (long)getpid());
                if ((rc = guard_extra(path)) || (rc = guard_extra(inner)) || !(paths[r] = strdup(path))) {
                    free(opts);
                    if (!rc) rc = fail("out of memory");
                    goto done;
                }
            }
            sqz_qmodel_opts qo;
            sqz_qmodel_opts_default(&qo);
            qo.type = SQZ_TYPE_Q8_0;
            qo.method = SQZ_QMETHOD_GPTQ;
            qo.windows = cs.windows;
            qo.nsamples = (int)cs.nsamples;
            qo.seqlen = (int)cs.seqlen;
            qo.percdamp = damp;
            qo.shrink = shrink;
            qo.progress = !quiet;
            qo.tensor_types = plan;
            sqz_qmodel_report_free(&rep);
            if (sqz_quantize_model(have_pm ? &pm : &m, paths[r], &qo, pool, &rep, &err)) {
                free(opts);
                rc = fail(err.msg);
                goto done;
            }
            sqz_stage_merge(&times, &rep.times);
            uint64_t exact_fixed = rep.file_bytes - ar.bytes;
            if (rep.file_bytes <= budget || attempt >= 2) {
                fixed = exact_fixed;
                if (rep.file_bytes > budget) {
                    sqz_qmodel_report_free(&rep);
                    free(opts);
                    snprintf(msg, sizeof msg, "round %d: the file came out at %llu bytes, above the budget",
                             r + 1, (unsigned long long)rep.file_bytes);
                    rc = fail(msg);
                    goto done;
                }
                break;
            }
            fixed = exact_fixed + (rep.file_bytes - budget);
        }
        ri[r].round = r + 1;
        ri[r].predicted = ar.cost;
        ri[r].tensor_bytes = rep.tensor_bytes;
        ri[r].file_bytes = rep.file_bytes;
        ri[r].bpw = rep.file_bytes * bpw_of;
        /* this round's tensors as written (with --prune their shapes changed) */
        double *rb = calloc((size_t)n_t * 2, sizeof(double));
        if (!rb) {
            sqz_qmodel_report_free(&rep);
            free(opts);
            rc = fail("out of memory");
            goto done;
        }
        for (int k = 0; k < rep.n_tensors; k++)
            for (int i = 0; i < n_t; i++)
                if (!strcmp(rep.tensors[k].name, sens.t[i].name)) {
                    rb[i] = (double)rep.tensors[k].bytes;
                    rb[n_t + i] = (double)rep.tensors[k].ne[0] * (double)rep.tensors[k].ne[1];
                }
        sqz_qmodel_report_free(&rep);
        /* measure the round's file as written */
        if (have_rm) sqz_model_free(&rm);
        have_rm = 0;
        if (sqz_model_load(&rm, paths[r], 0, &err)) {
            free(opts);
            rc = fail(err.msg);
            goto done;
        }
        have_rm = 1;
        double l;
        if (sqz_mean_loss(&rm, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &l, &err)) {
            free(opts);
            rc = fail(err.msg);
            goto done;
        }
        ri[r].heldout_ppl = exp(l);
        ri[r].eval_ppl = NAN;
        if (eval) {
            sqz_ppl_result pr;
            if (sqz_perplexity(&rm, pool, eval_ids, n_eval, &po, &pr, &err)) {
                free(opts);
                rc = fail(err.msg);
                goto done;
            }
            ri[r].eval_ppl = pr.ppl;
        }
        ri[r].seconds = sqz_now() - t0;
        printf("round %d: predicted dL %.5f, %llu bytes (%.4f bpw), held-out perplexity %.4f", r + 1,
               ri[r].predicted, (unsigned long long)ri[r].file_bytes, ri[r].bpw, ri[r].heldout_ppl);
        if (eval) printf(", %s perplexity %.4f", eval, ri[r].eval_ppl);
        printf(" (%.1f s)\n", ri[r].seconds);
        fflush(stdout);
        if (best < 0 || ri[r].heldout_ppl < ri[best].heldout_ppl) {
            if (best >= 0) unlink(paths[best]);
            best = r;
            memcpy(best_plan, plan, (size_t)n_plan * sizeof(int));
            memcpy(best_bytes, rb, (size_t)n_t * sizeof(double));
            memcpy(best_params, rb + n_t, (size_t)n_t * sizeof(double));
            for (int i = 0; i < n_t; i++) {
                if (!joint) {
                    best_pred[i] = cost_of(&sens.t[i].opt[choice[i]], form);
                    continue;
                }
                /* the type's predicted change on the unpruned matrix, times the part kept */
                const sqz_sens_tensor *t = &sens.t[i];
                best_pred[i] = NAN;
                for (int k = 0; k < t->n_options + t->n_narrow; k++) {
                    const sqz_sens_option *op = k < t->n_options ? &t->opt[k] : &t->narrow[k - t->n_options];
                    if (op->type == plan[i] && isnan(best_pred[i]))
                        best_pred[i] = cost_of(op, form) * rb[n_t + i] / (double)(t->rows * t->cols);
                }
            }
        } else {
            unlink(paths[r]);
        }
        free(rb);
    }
    free(opts);
    /* --measure: chosen tensors of the best file, alone in the original model */
    if (measure) {
        if (have_rm) sqz_model_free(&rm);
        have_rm = 0;
        if (sqz_model_load(&rm, paths[best], 0, &err)) {
            rc = fail(err.msg);
            goto done;
        }
        have_rm = 1;
        measured = malloc((size_t)n_t * sizeof(double));
        int *order = malloc((size_t)n_t * sizeof(int));
        double base;
        if (!measured || !order || sqz_mean_loss(&m, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &base, &err)) {
            free(order);
            rc = fail(measured && order ? err.msg : "out of memory");
            goto done;
        }
        for (int i = 0; i < n_t; i++) measured[i] = NAN, order[i] = i;
        for (int i = 1; i < n_t; i++) /* by predicted change; then evenly spaced picks */
            for (int j = i; j > 0 && best_pred[order[j]] < best_pred[order[j - 1]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        int k_n = (int)(measure < n_t ? measure : n_t);
        for (int k = 0; k < k_n; k++) {
            int i = order[k_n > 1 ? (int)((int64_t)k * (n_t - 1) / (k_n - 1)) : n_t - 1];
            int per = m.cfg.n_layer * SQZ_LIN_PER_LAYER;
            const sqz_tensor *qt = i < per ? sqz_linear_tensor(&rm, i / SQZ_LIN_PER_LAYER, i % SQZ_LIN_PER_LAYER)
                                           : i == per ? rm.output : rm.tok_embd;
            int64_t n = sqz_tensor_nelements(qt);
            float *w = malloc((size_t)n * sizeof(float));
            if (!w || sqz_tensor_rows_f32(qt, 0, qt->ne[1], w, &err)) {
                free(w);
                free(order);
                rc = fail(w ? err.msg : "out of memory");
                goto done;
            }
            swap_t sw;
            swap_in(&m, &sw, i, w);
            double l;
            int r2 = sqz_mean_loss(&m, pool, cs.held, (int)cs.heldout, (int)cs.seqlen, &l, &err);
            swap_out(&m, &sw);
            free(w);
            if (r2) {
                free(order);
                rc = fail(err.msg);
                goto done;
            }
            measured[i] = l - base;
        }
        free(order);
    }
    /* the best round becomes OUT */
    if (rename(paths[best], out)) {
        snprintf(msg, sizeof msg, "%s: cannot rename %s into place", out, paths[best]);
        rc = fail(msg);
        goto done;
    }
    printf("wrote %s: round %d, %llu bytes, %.4f bits per weight, held-out perplexity %.4f (model %.4f)\n", out,
           best + 1, (unsigned long long)ri[best].file_bytes, ri[best].bpw, ri[best].heldout_ppl, base_held);
    double total_seconds = sqz_now() - t_start;
    if (!quiet) print_stages(&times, sgemm_rate, dgemm_rate, total_seconds);
    if (json || html) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "output", out);
        cJSON_AddNumberToObject(root, "n_params", (double)n_params);
        cJSON_AddNumberToObject(root, "budget_bytes", (double)budget);
        cJSON_AddNumberToObject(root, "budget_bpw", budget * bpw_of);
        cJSON_AddNumberToObject(root, "min_bytes", (double)min_b);
        cJSON_AddNumberToObject(root, "max_bytes", (double)max_b);
        cJSON *cj = cJSON_AddObjectToObject(root, "calib");
        cJSON_AddStringToObject(cj, "file", cs.path);
        cJSON_AddNumberToObject(cj, "nsamples", (double)cs.nsamples);
        cJSON_AddNumberToObject(cj, "seqlen", (double)cs.seqlen);
        cJSON_AddNumberToObject(cj, "heldout_nsamples", (double)cs.heldout);
        cJSON_AddNumberToObject(cj, "seed", (double)cs.seed);
        cJSON_AddStringToObject(root, "proxy", kFormName[form]);
        cJSON_AddNumberToObject(root, "damp", damp);
        cJSON_AddNumberToObject(root, "shrink", shrink);
        cJSON_AddItemToObject(root, "base_heldout_ppl", num_or_null(base_held));
        cJSON_AddItemToObject(root, "base_eval_ppl", num_or_null(base_eval));
        cJSON *rs = cJSON_AddArrayToObject(root, "rounds");
        for (int r = 0; r < rounds; r++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "round", ri[r].round);
            cJSON_AddNumberToObject(o, "predicted_dL", ri[r].predicted);
            cJSON_AddNumberToObject(o, "tensor_bytes", (double)ri[r].tensor_bytes);
            cJSON_AddNumberToObject(o, "file_bytes", (double)ri[r].file_bytes);
            cJSON_AddNumberToObject(o, "bpw", ri[r].bpw);
            cJSON_AddItemToObject(o, "heldout_ppl", num_or_null(ri[r].heldout_ppl));
            cJSON_AddItemToObject(o, "eval_ppl", num_or_null(ri[r].eval_ppl));
            cJSON_AddNumberToObject(o, "seconds", ri[r].seconds);
            cJSON_AddItemToArray(rs, o);
        }
        cJSON_AddNumberToObject(root, "best_round", best + 1);
        cJSON_AddItemToObject(root, "stages",
                              stages_json(&times, sgemm_rate, dgemm_rate, sqz_pool_threads(pool), total_seconds));
        if (prune_max >= 0) {
            cJSON *pj = cJSON_AddObjectToObject(root, "prune");
            cJSON_AddNumberToObject(pj, "max_fraction", prune_max);
            cJSON_AddNumberToObject(pj, "ffn_step", ffn_step);
            cJSON_AddNumberToObject(pj, "params_after", (double)(have_pm ? sqz_model_n_params(&pm) : n_params));
            cJSON_AddItemToObject(pj, "layers", layer_keep_json(keep, m.cfg.n_layer));
        }
        cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
        for (int i = 0; i < n_t; i++) {
            const sqz_sens_tensor *t = &sens.t[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddNumberToObject(o, "layer", t->layer);
            cJSON_AddStringToObject(o, "kind", sqz_linear_kind_name(t->kind));
            cJSON_AddStringToObject(o, "type", type_name(best_plan[i]));
            cJSON_AddNumberToObject(o, "n_params", best_params[i]);
            cJSON_AddNumberToObject(o, "bytes", best_bytes[i]);
            cJSON_AddNumberToObject(o, "bpw", best_params[i] > 0 ? 8.0 * best_bytes[i] / best_params[i] : 0.0);
            cJSON_AddItemToObject(o, "predicted_dL", num_or_null(best_pred[i]));
            cJSON_AddItemToObject(o, "measured_dL", measured ? num_or_null(measured[i]) : cJSON_CreateNull());
            cJSON *os = cJSON_AddArrayToObject(o, "options");
            for (int k = 0; k < t->n_options; k++) {
                cJSON *op = cJSON_CreateObject();
                cJSON_AddStringToObject(op, "type", type_name(t->opt[k].type));
                cJSON_AddNumberToObject(op, "bytes", (double)t->opt[k].bytes);
                cJSON_AddNumberToObject(op, "predicted_dL", cost_of(&t->opt[k], form));
                cJSON_AddItemToArray(os, op);
            }
            cJSON_AddItemToArray(ts, o);
        }
        if (json && (rc = write_json(json, root))) goto done;
        if (html && report_html_write(root, html, msg, sizeof msg)) {
            rc = fail(msg);
            goto done;
        }
    }
done:
    for (int r = 0; paths && r < rounds; r++) {
        if (paths[r] && (rc || r != best)) unlink(paths[r]);
        free(paths[r]);
    }
    free(paths);
    cJSON_Delete(root);
    free(measured);
    free(best_pred);
    free(ri);
    free(plan);
    free(best_plan);
    free(choice);
    free(items);
    free(eval_ids);
    free(best_bytes);
    free(best_params);
    sqz_joint_free(&jt);
    for (int l = 0; keep && l < m.cfg.n_layer; l++) sqz_layer_keep_free(&keep[l]);
    free(keep);
    if (have_pm) sqz_model_free(&pm);
    if (pruned_path && !rc && keep_pruned && rename(pruned_path, keep_pruned) != 0) {
        char msg2[4400];
        snprintf(msg2, sizeof msg2, "cannot rename %s to %s: %s", pruned_path, keep_pruned, strerror(errno));
        rc = fail(msg2);
    }
    if (pruned_path) unlink(pruned_path);
    free(pruned_path);
    sqz_sens_free(&sens);
    sqz_sens_free(&shape);
    sqz_pool_free(pool);
    calib_free(&cs);
    if (have_rm) sqz_model_free(&rm);
    sqz_model_free(&m);
    return rc;
}

/* sqz_sensitivity_run: the estimate of every (tensor, type) option, and its validation
 * against measured loss changes. See include/sqz/pipeline.h. */
#include "sqz/pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline_impl.h"
#include "sqz/quant.h"

void sqz_sens_report_free(sqz_sens_report *r) {
    if (!r) return;
    sqz_sens_free(&r->sens);
    free(r->valid);
    free(r->measured);
    memset(r, 0, sizeof *r);
}

/* A quantized candidate, and one of vtypes when given. */
static int validatable(int type, const int *vtypes, int n_vtypes) {
    if (!sqz_quant_supported(type)) return 0;
    for (int i = 0; i < n_vtypes; i++)
        if (vtypes[i] == type) return 1;
    return n_vtypes == 0;
}

/* The options to validate: k (tensor, type) pairs of m's candidates, a seeded shuffle. */
static int draw_options(const sqz_model *m, const sqz_sens_run_opts *o, int **keep, int *n_keep, sqz_err *err) {
    sqz_sens shape;
    if (sqz_sens_options(m, o->sens.types, o->sens.n_types, o->sens.all_types, &shape, err)) return SQZ_ERR;
    int total = 0;
    for (int i = 0; i < shape.n_tensors; i++)
        for (int k = 0; k < shape.t[i].n_options; k++) total += validatable(shape.t[i].opt[k].type, o->vtypes, o->n_vtypes);
    int n = o->validate < total ? o->validate : total;
    int *all = malloc((size_t)(total > 0 ? total : 1) * 2 * sizeof(int));
    *keep = malloc((size_t)(n > 0 ? n : 1) * 2 * sizeof(int));
    if (!all || !*keep) {
        free(all);
        sqz_sens_free(&shape);
        return sqz_fail(err, "sensitivity: out of memory");
    }
    int j = 0;
    for (int i = 0; i < shape.n_tensors; i++)
        for (int k = 0; k < shape.t[i].n_options; k++)
            if (validatable(shape.t[i].opt[k].type, o->vtypes, o->n_vtypes))
                all[2 * j] = i, all[2 * j + 1] = shape.t[i].opt[k].type, j++;
    uint64_t st = o->seed * 0x9E3779B97F4A7C15ull + 12345;
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
    *n_keep = n;
    memcpy(*keep, all, (size_t)n * 2 * sizeof(int));
    free(all);
    sqz_sens_free(&shape);
    return SQZ_OK;
}

int sqz_sensitivity_run(sqz_model *m, sqz_pool *pool, const sqz_sens_run_opts *o, sqz_sens_report *rep,
                        sqz_err *err) {
    memset(rep, 0, sizeof *rep);
    for (int f = 0; f < SQZ_PROXY_COUNT; f++) rep->rho[f] = rep->rho_sym[f] = NAN;
    int *keep = NULL, n_keep = 0;
    if (o->validate > 0) {
        if (!o->held || o->heldout < 1) return sqz_fail(err, "sensitivity: validation needs held-out windows");
        if (draw_options(m, o, &keep, &n_keep, err)) return SQZ_ERR;
    }
    rep->valid = keep;
    rep->n_valid = n_keep;
    sqz_sens_opts so = o->sens;
    so.keep = keep;
    so.n_keep = n_keep;
    if (sqz_sensitivity(m, m, pool, &so, &rep->sens, err)) return SQZ_ERR;
    if (!n_keep) return SQZ_OK;
    const sqz_sens *sens = &rep->sens;
    const int seqlen = o->sens.seqlen;
    double base;
    if (sqz_mean_loss(m, pool, o->held, o->heldout, seqlen, &base, err)) return SQZ_ERR;
    rep->base_loss = base;
    /* [measured | each form | symmetric part] × n_keep */
    double *meas = calloc((size_t)n_keep * (SQZ_PROXY_COUNT + 2), sizeof(double));
    if (!meas) return sqz_fail(err, "sensitivity: out of memory");
    rep->measured = meas;
    rep->predicted = meas + n_keep;
    rep->symmetric = meas + (SQZ_PROXY_COUNT + 1) * n_keep;
    double *sym = rep->symmetric;
    sqz_progress prog;
    sqz_progress_begin(&prog, "validate", n_keep, "options", 0);
    if (!o->sens.progress) prog.out = NULL;
    for (int i = 0; i < n_keep; i++) {
        const sqz_sens_tensor *t = &sens->t[keep[2 * i]];
        const sqz_sens_option *op = NULL;
        for (int k = 0; k < t->n_options; k++)
            if (t->opt[k].type == keep[2 * i + 1]) op = &t->opt[k];
        int64_t n = t->rows * t->cols;
        float *mirror = malloc((size_t)n * sizeof(float));
        if (!mirror) return sqz_fail(err, "out of memory");
        if (sqz_tensor_rows_f32(sqz_pipe_tensor(m, keep[2 * i]), 0, t->rows, mirror, err)) {
            free(mirror);
            return SQZ_ERR;
        }
        for (int64_t e = 0; e < n; e++) mirror[e] = 2.0f * mirror[e] - op->what[e]; /* W + (W − Ŵ) */
        double l[2];
        int r = 0;
        for (int side = 0; side < 2 && !r; side++) {
            sqz_pipe_swap sw;
            sqz_pipe_swap_in(m, &sw, keep[2 * i], side ? mirror : op->what);
            r = sqz_mean_loss(m, pool, o->held, o->heldout, seqlen, &l[side], err);
            sqz_pipe_swap_out(m, &sw);
        }
        free(mirror);
        if (r) return SQZ_ERR;
        meas[i] = l[0] - base;
        sym[i] = 0.5 * (l[0] + l[1]) - base;
        for (int f = 0; f < SQZ_PROXY_COUNT; f++) meas[n_keep * (f + 1) + i] = sqz_proxy_cost(op, f);
        sqz_progress_update(&prog, i + 1, NULL);
    }
    sqz_progress_end(&prog);
    for (int f = 0; f < SQZ_PROXY_COUNT; f++) rep->rho_sym[f] = sqz_spearman(sym, meas + n_keep * (f + 1), n_keep);
    for (int f = 0; f < SQZ_PROXY_COUNT; f++) rep->rho[f] = sqz_spearman(meas, meas + n_keep * (f + 1), n_keep);
    return SQZ_OK;
}

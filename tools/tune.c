/* sqz tune: end-to-end tuning of a quantized file's row scales against its reference
 * (the library call is sqz_tune, include/sqz/tune.h); flags, printing and JSON only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib_args.h"
#include "cli.h"
#include "sqz/tune.h"

const char HELP_TUNE[] =
    "usage: sqz tune REFERENCE QUANTIZED.gguf -o OUT.gguf --calib FILE [options]\n"
    "\n"
    "Tunes one factor per row of every linear weight of QUANTIZED whose type has f16\n"
    "scale fields (k-quants, i-quants, Q4_0 ...) and the RMSNorm gains, with the\n"
    "integer codes fixed, so that\n"
    "the model's next-token distributions come closer to REFERENCE's (the model it was\n"
    "made from): Adam on the log-factors, minimizing the mean KL(reference || quantized)\n"
    "over the calibration windows with sqz's backward pass; after each step the mean KL\n"
    "on held-out windows decides, and the best step's factors are written. OUT has the\n"
    "same size and layout as QUANTIZED; only the scale fields differ.\n"
    "\n"
    "  -o OUT             the tuned file (written via a temporary file)\n"
    "  --calib FILE       calibration text (or .json token ids); its last tenth gives\n"
    "                     the held-out windows\n"
    "  --nsamples N       calibration windows (default 8)\n"
    "  --seqlen L         tokens per window (default 256)\n"
    "  --heldout N        held-out windows (default 2)\n"
    "  --seed S           which windows (default 0)\n"
    "  --tune-steps N     at most N steps (default 10); each is a forward and backward\n"
    "                     pass over every calibration window\n"
    "  --lr F             Adam's step on the log-factors (default 0.002)\n"
    "  --patience N       stop after N steps without a held-out improvement (default 2)\n"
    "  --no-norms         leave the RMSNorm gains as they are (by default each layer's\n"
    "                     F32 norm gains are tuned too, one factor per element)\n"
    "  --no-head          leave the output head and the token embedding as they are (by\n"
    "                     default their rows get factors too, when their types have\n"
    "                     scale fields)\n"
    "  --device D         cpu (default) or cuda: where the decoder layers' forward and\n"
    "                     backward run\n"
    "  --threads N        worker threads (default: all CPUs)\n"
    "  --quiet            no progress line (shown only on a terminal anyway)\n"
    "  --json REPORT      tensors and factors tuned, KL before each step, held-out KL\n"
    "                     after each, the best step, times\n"
    "\n"
    "Memory: the reference's probabilities, (nsamples + heldout) x seqlen x vocabulary\n"
    "floats (1.2 GiB for 10 windows of 256 tokens of a 151,936-token vocabulary).\n";

int cmd_tune(args *a) {
    const char *ref_path = NULL, *in_path = NULL, *out = NULL, *json = NULL;
    calib_set cs = {NULL, 8, 256, 0, 2, NULL, 0, NULL, NULL};
    long long steps = 10, threads = 0, patience = 2;
    double lr = SQZ_TUNE_LR;
    int quiet = 0, rc = 0, norms = 1, head = 1;
    sqz_device device = SQZ_DEVICE_CPU;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (calib_flag(a, &cs, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "-o")) {
            if (!(out = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (tune_flag(a, "--lr", &steps, &lr, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "--patience")) {
            v = opt_value(a);
            if (parse_pos_int(v, 100000, &patience)) return usage_fail(a->cmd, "--patience '%s': expected a positive count", v ? v : "");
        } else if (!strcmp(s, "--threads")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1024, &threads)) return usage_fail(a->cmd, "--threads '%s': expected 1 to 1024", v ? v : "");
        } else if (device_flag(a, &device, &rc)) {
            if (rc) return rc;
        } else if (!strcmp(s, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(s, "--no-norms")) {
            norms = 0;
        } else if (!strcmp(s, "--no-head")) {
            head = 0;
        } else if (s[0] == '-' && s[1]) {
            return usage_fail(a->cmd, "unknown option '%s'", s);
        } else if (!ref_path) {
            ref_path = s;
        } else if (!in_path) {
            in_path = s;
        } else {
            return usage_fail(a->cmd, "unexpected argument '%s'", s);
        }
    }
    if (!ref_path || !in_path) return usage_fail(a->cmd, "%s", "expected REFERENCE and QUANTIZED.gguf");
    if (!out) return usage_fail(a->cmd, "%s", "-o OUT.gguf is required");
    if (!cs.path) return usage_fail(a->cmd, "%s", "--calib FILE is required");
    if ((rc = guard_output(out))) return rc;
    sqz_err err;
    sqz_model ref;
    if (sqz_model_load(&ref, ref_path, 0, &err)) return fail(err.msg);
    sqz_pool *pool = NULL;
    sqz_backend *backend = NULL;
    sqz_tune_report rep;
    memset(&rep, 0, sizeof rep);
    if ((rc = calib_load(&cs, &ref))) goto done;
    if (!(pool = sqz_pool_create((int)threads, &err)) || sqz_backend_create(device, pool, &backend, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    sqz_tune_opts o = {cs.windows, (int)cs.nsamples, (int)cs.seqlen, cs.held, (int)cs.heldout, (int)steps, lr,
                       (int)patience, !quiet, backend, norms, head};
    if (sqz_tune(&ref, in_path, out, &o, pool, &rep, &err)) {
        rc = fail(err.msg);
        goto done;
    }
    printf("tuned %s: %d tensors and %d norms, %lld factors; held-out KL %.5f -> %.5f (best of %d steps: %d), calibration "
           "KL %.5f -> %.5f, %.1f s; wrote %s\n",
           in_path, rep.n_tensors, rep.n_norms, (long long)rep.n_params, rep.held_kl[0], rep.held_kl[rep.best_step], rep.n_steps,
           rep.best_step, rep.train_kl[0], rep.train_kl[rep.n_steps], rep.seconds, out);
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "reference", ref_path);
        cJSON_AddStringToObject(root, "input", in_path);
        cJSON_AddStringToObject(root, "output", out);
        cJSON_AddNumberToObject(root, "lr", lr);
        cJSON_AddStringToObject(root, "device", sqz_backend_describe(backend));
        tune_json(root, &rep);
        rc = write_json(json, root);
        cJSON_Delete(root);
    }
done:
    sqz_tune_report_free(&rep);
    sqz_backend_free(backend);
    sqz_pool_free(pool);
    calib_free(&cs);
    sqz_model_free(&ref);
    return rc;
}

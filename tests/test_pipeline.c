/* The pipeline as a library, without the CLI (include/sqz/pipeline.h), on stories260K:
 *  1. sqz_compress with a budget below every reachable size fails naming the minimum and
 *     still reports the sizes; with a budget between them, two rounds write a file of
 *     the reported size within the budget, announce their temporary files and progress,
 *     and leave no temporary file behind;
 *  2. sqz_sensitivity_run validates the options it drew: measured changes and each
 *     form's prediction are finite;
 *  3. sqz_prune_run keeps fewer heads and channels than the model has and measures the
 *     written model;
 *  4. sqz_calib_split: a stream's held-out part is its last tenth (windows as
 *     sqz_calib_windows cuts them there), sequences give their first tokens in order and
 *     cycle; too few sequences or a short one fail. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sqz/calib.h"
#include "sqz/pipeline.h"
#include "sqz/quant.h"
#include "testutil.h"

typedef struct {
    int n_temp, n_notify, last_round;
    char temp[8][4400];
} calls;

static int on_temp(void *ctx, const char *path) {
    calls *c = ctx;
    if (c->n_temp < 8) snprintf(c->temp[c->n_temp], sizeof c->temp[0], "%s", path);
    c->n_temp++;
    return 0;
}

static void on_notify(void *ctx, int round, const sqz_compress_report *rep) {
    calls *c = ctx;
    (void)rep;
    c->n_notify++;
    c->last_round = round;
}

int main(void) {
    char *dir = tu_shared("models/stories260K"), *ids_path = tu_shared("models/stories260K/reference_greedy_tokens.json");
    char *out = tu_tmp("test_pipeline.gguf"), *pruned = tu_tmp("test_pipeline_pruned.gguf");
    sqz_model m;
    sqz_err err;
    int rc = sqz_model_load(&m, dir, 0, &err);
    CHECK(rc == 0, "load: %s", err.msg);
    cJSON *j = rc == 0 ? tu_read_json(ids_path) : NULL;
    if (!j) return tu_done("test_pipeline");
    int64_t n_ids = 0;
    int32_t *ids = tu_json_ids(j, &n_ids);
    enum { NS = 4, NH = 2, L = 32 };
    int32_t win[NS * L], held[NH * L];
    CHECK(sqz_calib_windows(ids, n_ids, NS, L, 0, win, &err) == 0, "%s", err.msg);
    CHECK(sqz_calib_windows(ids, n_ids, NH, L, 1, held, &err) == 0, "%s", err.msg);
    sqz_pool *pool = sqz_pool_create(2, &err);
    CHECK(pool != NULL, "%s", err.msg);
    const int types[3] = {SQZ_TYPE_Q4_0, SQZ_TYPE_Q8_0, SQZ_TYPE_F16};

    /* 1. compress */
    calls c = {0};
    sqz_compress_opts co;
    sqz_compress_opts_default(&co);
    co.windows = win, co.nsamples = NS, co.seqlen = L, co.held = held, co.heldout = NH;
    co.types = types, co.n_types = 3, co.rounds = 2;
    co.temp_file = on_temp, co.notify = on_notify, co.ctx = &c;
    co.budget = 1000;
    sqz_compress_report rep;
    rc = sqz_compress(&m, out, &co, pool, &rep, &err);
    CHECK(rc != 0 && strstr(err.msg, "below the smallest reachable size"), "a 1000-byte budget: rc %d, %s", rc, err.msg);
    CHECK(rep.min_bytes > 1000 && rep.max_bytes > rep.min_bytes, "sizes on failure: %llu .. %llu",
          (unsigned long long)rep.min_bytes, (unsigned long long)rep.max_bytes);
    CHECK(access(out, F_OK) != 0 && c.n_temp == 0, "a failed budget check created files");
    uint64_t budget = rep.min_bytes + (rep.max_bytes - rep.min_bytes) / 2;
    sqz_compress_report_free(&rep);
    co.budget = budget;
    rc = sqz_compress(&m, out, &co, pool, &rep, &err);
    CHECK(rc == 0, "compress: %s", err.msg);
    if (rc == 0) {
        FILE *f = fopen(out, "rb");
        long size = -1;
        if (f && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (f) fclose(f);
        const sqz_compress_round *best = &rep.rounds[rep.best_round - 1];
        CHECK(rep.n_rounds == 2 && rep.best_round >= 1 && rep.best_round <= 2, "rounds %d, best %d", rep.n_rounds,
              rep.best_round);
        CHECK(size > 0 && (uint64_t)size == best->file_bytes && (uint64_t)size <= budget,
              "file %ld bytes, report %llu, budget %llu", size, (unsigned long long)best->file_bytes,
              (unsigned long long)budget);
        CHECK(isfinite(rep.base_heldout_ppl) && isfinite(best->heldout_ppl), "perplexities %g %g",
              rep.base_heldout_ppl, best->heldout_ppl);
        CHECK(rep.n_tensors == sqz_sens_count(&m), "%d tensors reported", rep.n_tensors);
        CHECK(c.n_notify == 3 && c.last_round == 2, "notify: %d calls, last round %d", c.n_notify, c.last_round);
        CHECK(c.n_temp == 4, "%d temporary files announced (2 rounds, each with sqz_out's)", c.n_temp);
        for (int i = 0; i < c.n_temp && i < 8; i++)
            CHECK(access(c.temp[i], F_OK) != 0, "temporary file %s left behind", c.temp[i]);
    }
    sqz_compress_report_free(&rep);

    /* 2. sensitivity with validation */
    sqz_sens_run_opts so;
    memset(&so, 0, sizeof so);
    so.sens.windows = win, so.sens.nsamples = NS, so.sens.seqlen = L, so.sens.types = types, so.sens.n_types = 3;
    so.sens.percdamp = 0.01, so.sens.shrink = 0.75;
    so.held = held, so.heldout = NH, so.validate = 3, so.seed = 0;
    sqz_sens_report sr;
    rc = sqz_sensitivity_run(&m, pool, &so, &sr, &err);
    CHECK(rc == 0, "sensitivity: %s", err.msg);
    if (rc == 0) {
        CHECK(sr.n_valid == 3 && sr.sens.n_tensors == sqz_sens_count(&m), "%d validated, %d tensors", sr.n_valid,
              sr.sens.n_tensors);
        for (int i = 0; i < sr.n_valid; i++) {
            CHECK(isfinite(sr.measured[i]) && isfinite(sr.symmetric[i]), "option %d: measured %g, symmetric %g", i,
                  sr.measured[i], sr.symmetric[i]);
            CHECK(isfinite(sr.predicted[SQZ_PROXY_GRAD * sr.n_valid + i]) &&
                      sr.predicted[SQZ_PROXY_GRADTW * sr.n_valid + i] >= 0,
                  "option %d: predictions", i);
        }
    }
    sqz_sens_report_free(&sr);

    /* 3. prune */
    sqz_prune_opts po = {0.5, 0.75, win, NS, L, held, NH, 0.01, 0.75, 1, 0, 0};
    sqz_prune_report pr;
    rc = sqz_prune_run(&m, pruned, NULL, &po, pool, &pr, &err);
    CHECK(rc == 0, "prune: %s", err.msg);
    if (rc == 0) {
        CHECK(pr.heads < pr.heads_before && pr.channels < pr.channels_before && pr.params_after < pr.params_before,
              "kept %lld/%lld heads, %lld/%lld channels", (long long)pr.heads, (long long)pr.heads_before,
              (long long)pr.channels, (long long)pr.channels_before);
        CHECK(isfinite(pr.loss_before) && isfinite(pr.loss_after) && pr.predicted >= 0, "losses %g -> %g",
              pr.loss_before, pr.loss_after);
    }
    sqz_prune_report_free(&pr);

    /* 4. sqz_calib_split */
    int32_t *w = NULL, *h = NULL, ref[NS * L];
    int64_t held_len = n_ids / 10 > L ? n_ids / 10 : L;
    rc = sqz_calib_split(ids, n_ids, NULL, 0, NS, NH, L, 5, &w, &h, &err);
    CHECK(rc == 0, "split: %s", err.msg);
    if (rc == 0) {
        CHECK(sqz_calib_windows(ids, n_ids - held_len, NS, L, 5, ref, &err) == 0 &&
                  !memcmp(w, ref, sizeof(int32_t) * NS * L), "calibration windows differ from sqz_calib_windows'");
        CHECK(sqz_calib_windows(ids + n_ids - held_len, held_len, NH, L, 6, ref, &err) == 0 &&
                  !memcmp(h, ref, sizeof(int32_t) * NH * L), "held-out windows differ");
    }
    free(w), free(h);
    int64_t starts[3] = {0, L, 2 * L};
    rc = n_ids >= 3 * L ? sqz_calib_split(ids, 3 * L, starts, 3, 3, 2, L, 0, &w, &h, &err) : -1;
    CHECK(rc == 0, "split sequences: %s", err.msg);
    if (rc == 0)
        CHECK(!memcmp(w, ids, sizeof(int32_t) * L) && !memcmp(w + L, ids + L, sizeof(int32_t) * L) &&
                  !memcmp(w + 2 * L, ids, sizeof(int32_t) * L) && !memcmp(h, ids + 2 * L, sizeof(int32_t) * L) &&
                  !memcmp(h + L, ids + 2 * L, sizeof(int32_t) * L),
              "sequence windows: two for calibration (cycling), the last held out");
    free(w), free(h);
    rc = sqz_calib_split(ids, L, starts, 1, 1, 1, L, 0, &w, &h, &err);
    CHECK(rc != 0 && strstr(err.msg, "need at least two") && !w && !h, "one sequence: rc %d, %s", rc, err.msg);
    int64_t short_starts[2] = {0, L - 1};
    rc = sqz_calib_split(ids, 2 * L, short_starts, 2, 1, 1, L, 0, &w, &h, &err);
    CHECK(rc != 0 && strstr(err.msg, "sequence 0 has"), "a short sequence: rc %d, %s", rc, err.msg);

    unlink(out);
    unlink(pruned);
    sqz_pool_free(pool);
    free(ids);
    cJSON_Delete(j);
    sqz_model_free(&m);
    free(dir), free(ids_path), free(out), free(pruned);
    return tu_done("test_pipeline");
}

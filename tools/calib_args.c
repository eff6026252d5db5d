/* The calibration flags shared by several subcommands: see calib_args.h. */
#include "calib_args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/calib.h"
#include "sqz/core.h"
#include "sqz/tok.h"

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Reads the calibration tokens and cuts the windows: the last tenth of the tokens (at
 * least one window) is kept apart for held-out measurements. */
int calib_load(calib_set *c, const sqz_model *m) {
    char msg[1400];
    sqz_err err;
    char *text = NULL;
    size_t len = 0;
    int rc;
    if (ends_with(c->path, ".json")) {
        if (sqz_read_file(c->path, MAX_TEXT_BYTES, &text, &len, &err)) return fail(err.msg);
        cJSON *root = cJSON_Parse(text), *arr = root;
        free(text);
        if (root && cJSON_IsObject(root)) arr = cJSON_GetObjectItem(root, "tokens");
        if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
            cJSON_Delete(root);
            snprintf(msg, sizeof msg, "%s: expected a JSON array of token ids (or an object with \"tokens\")", c->path);
            return fail(msg);
        }
        c->n_ids = cJSON_GetArraySize(arr);
        c->ids = malloc((size_t)c->n_ids * sizeof(int32_t));
        int64_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            double v = cJSON_GetNumberValue(it);
            if (!cJSON_IsNumber(it) || v < 0 || v >= m->cfg.n_vocab || v != floor(v)) {
                snprintf(msg, sizeof msg, "%s: entry %lld is not a token id in [0, %d)", c->path, (long long)i,
                         m->cfg.n_vocab);
                cJSON_Delete(root);
                return fail(msg);
            }
            c->ids[i++] = (int32_t)v;
        }
        cJSON_Delete(root);
    } else {
        if ((rc = read_text(c->path, &text, &len))) return rc;
        if (!m->tok) {
            free(text);
            snprintf(msg, sizeof msg, "%s has no tokenizer: give --calib a .json array of token ids", m->path);
            return fail(msg);
        }
        rc = sqz_tok_encode(m->tok, text, len, 0, &c->ids, &c->n_ids, &err);
        free(text);
        if (rc) return fail(err.msg);
    }
    int64_t L = c->seqlen, held_len = c->n_ids / 10 > L ? c->n_ids / 10 : L, cal_len = c->n_ids - held_len;
    if (cal_len < L) {
        snprintf(msg, sizeof msg, "%s: %lld calibration tokens: need at least two windows of --seqlen %lld (one "
                 "for calibration, one held out)", c->path, (long long)c->n_ids, (long long)L);
        return fail(msg);
    }
    c->windows = malloc((size_t)(c->nsamples * L) * sizeof(int32_t));
    c->held = malloc((size_t)(c->heldout * L) * sizeof(int32_t));
    if (!c->windows || !c->held) return fail("out of memory for the calibration windows");
    if (sqz_calib_windows(c->ids, cal_len, (int)c->nsamples, (int)L, (uint64_t)c->seed, c->windows, &err) ||
        sqz_calib_windows(c->ids + cal_len, held_len, (int)c->heldout, (int)L, (uint64_t)c->seed + 1, c->held, &err))
        return fail(err.msg);
    return 0;
}

void calib_free(calib_set *c) {
    free(c->ids);
    free(c->windows);
    free(c->held);
}

/* Shared option parsing of the calibration flags; returns 1 when argv[i] was one. */
int calib_flag(args *a, calib_set *c, int *rc) {
    const char *s = a->argv[a->i], *v;
    long long *dst = NULL, max = 1 << 20;
    if (!strcmp(s, "--calib")) {
        if (!(c->path = opt_value(a))) *rc = usage_fail(a->cmd, "%s needs a text file", s);
        return 1;
    }
    if (!strcmp(s, "--nsamples")) dst = &c->nsamples;
    else if (!strcmp(s, "--seqlen")) dst = &c->seqlen, max = 1 << 20;
    else if (!strcmp(s, "--heldout")) dst = &c->heldout;
    else if (!strcmp(s, "--seed")) {
        v = opt_value(a);
        char *end;
        if (!v || !*v || (c->seed = strtoll(v, &end, 10), *end) || c->seed < 0)
            *rc = usage_fail(a->cmd, "--seed '%s': expected a number >= 0", v ? v : "");
        return 1;
    } else return 0;
    v = opt_value(a);
    if (parse_pos_int(v, max, dst)) *rc = usage_fail(a->cmd, "%s: expected a positive number", s);
    return 1;
}


/* The calibration flags shared by several subcommands: see calib_args.h. */
#include "calib_args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/calib.h"
#include "sqz/core.h"
#include "sqz/tok.h"

int is_token_ids_path(const char *path) {
    size_t a = strlen(path);
    return a >= 5 && !strcmp(path + a - 5, ".json");
}

/* Reads a .json array of token ids, an array of such arrays (sequences), or an object
 * whose "tokens" is either; every id checked against the vocabulary size. */
int read_token_ids(const char *path, int n_vocab, int32_t **ids_out, int64_t *n_out, int64_t **starts_out,
                   int *n_seq_out) {
    char msg[1400];
    sqz_err err;
    char *text = NULL;
    size_t len = 0;
    *ids_out = NULL, *n_out = 0;
    if (starts_out) *starts_out = NULL, *n_seq_out = 0;
    if (sqz_read_file(path, MAX_TEXT_BYTES, &text, &len, &err)) return fail(err.msg);
    cJSON *root = cJSON_Parse(text), *arr = root;
    free(text);
    if (root && cJSON_IsObject(root)) arr = cJSON_GetObjectItem(root, "tokens");
    int nested = cJSON_IsArray(arr) && cJSON_IsArray(cJSON_GetArrayItem(arr, 0)), n_seq = 0;
    int64_t n = 0, i = 0;
    const cJSON *it, *sq;
    if (cJSON_IsArray(arr)) {
        if (!nested) n = cJSON_GetArraySize(arr);
        else
            cJSON_ArrayForEach(sq, arr) n += cJSON_IsArray(sq) ? cJSON_GetArraySize(sq) : 0, n_seq++;
    }
    if (n == 0) {
        cJSON_Delete(root);
        snprintf(msg, sizeof msg, "%s: expected a JSON array of token ids, an array of such arrays, or an object "
                 "with \"tokens\"", path);
        return fail(msg);
    }
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    int64_t *starts = nested ? malloc((size_t)n_seq * sizeof(int64_t)) : NULL;
    if (!ids || (nested && !starts)) {
        cJSON_Delete(root);
        free(ids);
        free(starts);
        return fail("out of memory for the token ids");
    }
    int q = 0;
    for (const cJSON *seq = nested ? arr->child : arr; seq; seq = nested ? seq->next : NULL) {
        if (nested && !cJSON_IsArray(seq)) {
            snprintf(msg, sizeof msg, "%s: sequence %d is not an array of token ids", path, q);
            goto bad;
        }
        if (nested) starts[q++] = i;
        cJSON_ArrayForEach(it, seq) {
            double v = cJSON_GetNumberValue(it);
            if (!cJSON_IsNumber(it) || v < 0 || v >= n_vocab || v != floor(v)) {
                snprintf(msg, sizeof msg, "%s: entry %lld is not a token id in [0, %d)", path, (long long)i, n_vocab);
                goto bad;
            }
            ids[i++] = (int32_t)v;
        }
        if (!nested) break;
    }
    cJSON_Delete(root);
    *ids_out = ids, *n_out = n;
    if (starts_out) *starts_out = starts, *n_seq_out = n_seq;
    else free(starts);
    return 0;
bad:
    cJSON_Delete(root);
    free(ids);
    free(starts);
    return fail(msg);
}

/* Windows from separate sequences (a model trained with BOS first sees each window as
 * it was trained): the last tenth of the sequences (at least one) is held out; windows
 * are the first seqlen tokens of sequences in order, cycling when there are fewer. */
static int windows_from_sequences(calib_set *c, const int64_t *starts, int n_seq) {
    char msg[1400];
    int64_t L = c->seqlen;
    int n_held = n_seq / 10 > 1 ? n_seq / 10 : 1, n_cal = n_seq - n_held;
    if (n_cal < 1) {
        snprintf(msg, sizeof msg, "%s: %d sequences: need at least two (one for calibration, one held out)", c->path,
                 n_seq);
        return fail(msg);
    }
    for (int q = 0; q < n_seq; q++) {
        int64_t len = (q + 1 < n_seq ? starts[q + 1] : c->n_ids) - starts[q];
        if (len < L) {
            snprintf(msg, sizeof msg, "%s: sequence %d has %lld tokens, fewer than --seqlen %lld", c->path, q,
                     (long long)len, (long long)L);
            return fail(msg);
        }
    }
    c->windows = malloc((size_t)(c->nsamples * L) * sizeof(int32_t));
    c->held = malloc((size_t)(c->heldout * L) * sizeof(int32_t));
    if (!c->windows || !c->held) return fail("out of memory for the calibration windows");
    for (int64_t i = 0; i < c->nsamples; i++)
        memcpy(c->windows + i * L, c->ids + starts[i % n_cal], (size_t)L * sizeof(int32_t));
    for (int64_t i = 0; i < c->heldout; i++)
        memcpy(c->held + i * L, c->ids + starts[n_cal + i % n_held], (size_t)L * sizeof(int32_t));
    return 0;
}

/* Reads the calibration tokens and cuts the windows: the last tenth of the tokens (at
 * least one window) is kept apart for held-out measurements. */
int calib_load(calib_set *c, const sqz_model *m) {
    char msg[1400];
    sqz_err err;
    char *text = NULL;
    size_t len = 0;
    int rc;
    if (is_token_ids_path(c->path)) {
        int64_t *starts = NULL;
        int n_seq = 0;
        if ((rc = read_token_ids(c->path, m->cfg.n_vocab, &c->ids, &c->n_ids, &starts, &n_seq))) return rc;
        if (starts) {
            rc = windows_from_sequences(c, starts, n_seq);
            free(starts);
            return rc;
        }
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


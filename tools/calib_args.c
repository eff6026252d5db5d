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

/* Reads the calibration tokens and cuts the windows: the last tenth of the tokens (at
 * least one window) is kept apart for held-out measurements. */
int calib_load(calib_set *c, const sqz_model *m) {
    char msg[1400];
    sqz_err err;
    char *text = NULL;
    size_t len = 0;
    int rc;
    int64_t *starts = NULL;
    int n_seq = 0;
    if (is_token_ids_path(c->path)) {
        if ((rc = read_token_ids(c->path, m->cfg.n_vocab, &c->ids, &c->n_ids, &starts, &n_seq))) return rc;
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
    rc = sqz_calib_split(c->ids, c->n_ids, starts, n_seq, (int)c->nsamples, (int)c->heldout, (int)c->seqlen,
                         (uint64_t)c->seed, &c->windows, &c->held, &err);
    free(starts);
    if (rc) {
        snprintf(msg, sizeof msg, "%s: %s", c->path, err.msg);
        return fail(msg);
    }
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


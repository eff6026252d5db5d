/* The calibration flags shared by sqz sensitivity, compress and prune: --calib FILE
 * (text, or a .json array of token ids), --nsamples, --seqlen, --seed, --heldout. */
#ifndef SQZ_TOOLS_CALIB_ARGS_H
#define SQZ_TOOLS_CALIB_ARGS_H

#include <stdint.h>

#include "cli.h"
#include "sqz/model.h"

typedef struct {
    const char *path;            /* text, or .json token ids (models without a tokenizer): one array,
                                  * or an array of sequences (windows start at their starts) */
    long long nsamples, seqlen, seed, heldout;
    int32_t *ids;
    int64_t n_ids;
    int32_t *windows, *held;     /* nsamples × seqlen from the first part, heldout × seqlen from the rest */
} calib_set;

/* Reads the calibration tokens and cuts the windows: the last tenth of the tokens (at
 * least one window) is kept apart for held-out measurements. Returns 0 or an exit code. */
int calib_load(calib_set *c, const sqz_model *m);
void calib_free(calib_set *c);
/* Reads a .json array of token ids, an array of such arrays (sequences, concatenated in
 * *ids; their offsets in *starts when starts is not NULL, else dropped), or an object whose
 * "tokens" is either; every id in [0, n_vocab). *ids and *starts are the caller's.
 * Returns 0 or an exit code (message printed). */
int read_token_ids(const char *path, int n_vocab, int32_t **ids, int64_t *n_ids, int64_t **starts, int *n_seq);
/* 1 when path names token ids (ends in .json) rather than text. */
int is_token_ids_path(const char *path);
/* Parses argv[i] when it is one of the calibration flags: returns 1 (with *rc set to a
 * usage error's exit code when its value is bad), else 0. */
int calib_flag(args *a, calib_set *c, int *rc);

#endif

/* Calibration: random token windows and the input Gram matrices of every linear layer.
 *
 * H = XᵀX over the calibration tokens, per layer and per group of linear layers sharing
 * an input (q/k/v, o, gate/up, down), accumulated in double (each window's products in
 * single precision, sqz_gram_upper_add). The model runs layer by
 * layer over all windows (sqz_forward_layer), so memory is the windows' activations
 * (nsamples · seqlen · dim floats) plus one layer's Grams; each finished layer is handed
 * to a callback. The same windows give bit-identical Grams for any thread count. */
#ifndef SQZ_CALIB_H
#define SQZ_CALIB_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/backend.h"
#include "sqz/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Picks nsamples windows of seqlen consecutive tokens at random start positions in
 * tokens[0..n_tokens) (splitmix64 from seed: same seed, same windows) into
 * out[nsamples * seqlen]. Fails when the text is shorter than one window. */
int sqz_calib_windows(const int32_t *tokens, int64_t n_tokens, int nsamples, int seqlen, uint64_t seed,
                      int32_t *out, sqz_err *err);

/* The calibration and held-out windows of one token stream, cut as sqz's commands cut
 * them. Without sequences (starts NULL): the last tenth of ids (at least one window) is
 * held out; nsamples windows at random starts in the rest (sqz_calib_windows, seed) and
 * heldout windows in the held-out part (seed + 1). With sequences (starts: the n_seq
 * offsets into ids where each begins; a model trained with BOS first then sees each
 * window as in training): the last tenth of the sequences (at least one) is held out and
 * windows are the first seqlen tokens of the sequences in order, cycling when there are
 * fewer. *windows (nsamples × seqlen) and *held (heldout × seqlen) are malloc'd and the
 * caller's; both NULL on failure. */
int sqz_calib_split(const int32_t *ids, int64_t n_ids, const int64_t *starts, int n_seq, int nsamples, int heldout,
                    int seqlen, uint64_t seed, int32_t **windows, int32_t **held, sqz_err *err);

#define SQZ_CALIB_KINDS 7 /* linear kinds per layer (SQZ_LIN_PER_LAYER in grad.h) */

/* The Grams of one layer: g[site] is n[site] × n[site], Σ x xᵀ over all tokens (both
 * triangles), NULL with n 0 when the layer has no such block (pruned heads or FFN). */
typedef struct sqz_layer_grams {
    int64_t n[SQZ_SITE_COUNT];
    double *g[SQZ_SITE_COUNT];
    /* sqz_calib_run_weighted only: per linear kind k (q, k, v, o, gate, up, down), Σ w_t x_t x_tᵀ
     * over its input site with that kind's token weights, or NULL where none were given */
    double *gw[SQZ_CALIB_KINDS];
} sqz_layer_grams;

/* The input site of linear kind k (0..6: q, k, v, o, gate, up, down). */
int sqz_calib_site_of(int kind);

/* Receives each layer's Grams once they are complete (the buffers are reused after the
 * call returns, so the callback may scale them in place instead of copying: an 8960-wide
 * Gram is 640 MB). n_tokens is the token count: H = g / n_tokens. */
typedef int (*sqz_calib_layer_fn)(void *ctx, int layer, sqz_layer_grams *g, int64_t n_tokens, sqz_err *err);

/* Runs the model on windows[nsamples * seqlen] (each window one sequence from position
 * 0) layer by layer and calls fn for every layer in order. */
int sqz_calib_run(const sqz_model *m, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen,
                  sqz_calib_layer_fn fn, void *ctx, sqz_stage_times *times, sqz_err *err);

/* As sqz_calib_run, plus token-weighted Grams: weights[l·7 + k] is NULL or the T =
 * nsamples·seqlen weights (window-major, as windows) of the tokens seen by layer l's
 * linear k; the callback then also gets gw[k] = Σ_t w_t x_t x_tᵀ (not normalized). The
 * Gram products run on backend (NULL: the CPU), the layer passes on the CPU. */
int sqz_calib_run_weighted(const sqz_model *m, sqz_backend *backend, sqz_pool *pool, const int32_t *windows,
                           int nsamples, int seqlen, const float *const *weights, sqz_calib_layer_fn fn, void *ctx,
                           sqz_stage_times *times, sqz_err *err);

/* The same run a layer at a time, for a caller that needs layer l's Grams at its own
 * pace (a pruned layer made just before the quantizer reaches it): begin embeds the
 * windows; each step runs the next layer (0, 1, ...) over every window and points *g at
 * its Grams (valid until the next step or end; the stepper owns them); end frees. One
 * layer's weights and Grams and the windows' stream are held, as in sqz_calib_run. */
typedef struct sqz_calib_stepper sqz_calib_stepper;
int sqz_calib_begin(const sqz_model *m, sqz_backend *backend, sqz_pool *pool, const int32_t *windows, int nsamples,
                    int seqlen, const float *const *weights, sqz_stage_times *times, sqz_calib_stepper **out,
                    sqz_err *err);
int sqz_calib_step(sqz_calib_stepper *st, sqz_layer_grams **g, sqz_err *err);
int sqz_calib_next(const sqz_calib_stepper *st); /* the layer the next step runs */
void sqz_calib_end(sqz_calib_stepper *st);

/* times (may be NULL) of both: the layer passes go to SQZ_STAGE_FORWARD, the Grams to
 * SQZ_STAGE_GRAMS; the callback's own time to neither. */

/* The Gram products themselves (sqz_gram_upper_add, sqz_gram_mirror, sqz_gram_flops)
 * are the CPU backend's: include/sqz/backend.h. */

/* Every layer's Grams kept in memory (for small models and tests). */
typedef struct sqz_model_grams {
    int n_layer;
    int64_t n_tokens;
    sqz_layer_grams *layers; /* n_layer, owned */
} sqz_model_grams;

int sqz_calib_grams(const sqz_model *m, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen,
                    sqz_model_grams *out, sqz_err *err);
void sqz_calib_grams_free(sqz_model_grams *g);

#ifdef __cplusplus
}
#endif
#endif

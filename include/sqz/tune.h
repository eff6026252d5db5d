/* End-to-end tuning of a quantized model's scales against its reference (issue 16 item 3c).
 *
 * The integer codes of a quantized GGUF stay as they are; what moves is one factor α_j
 * per row of every linear weight whose type has linear f16 scale fields (sqz_scale_blocks:
 * the k-quants' d and dmin, the i-quants' d, Q4_0's d, …): row j's values become α_j·Ŵ_j.
 * The objective is the mean KL(p_ref ‖ p_q) of the next-token distributions over the
 * calibration windows, p_ref the reference model's (computed once, kept in memory:
 * windows × seqlen × n_vocab floats). Its gradient with respect to θ_j = log α_j is
 *
 *   ∂L/∂θ_j = Σ_t g_tj · y_tj,   y_t = Ŵ(α) x_t the linear's output without bias,
 *
 * from sqz's own backward pass (sqz_grad_windows with KL targets, its hook giving x and
 * g). Adam on θ, each step over every calibration window; after each step the mean KL on
 * held-out windows decides: the best step's factors are written, and tuning stops after
 * `patience` steps without improvement. The output file is the input's bytes with only
 * the tuned tensors' scale fields changed (same size, same layout).
 *
 * Why rows: a factor per row is what the format can carry without new bytes and few
 * enough parameters (one per 1,536–8,960 weights on a 1.5B model) for a few thousand
 * calibration tokens not to overfit them; per-256 groups (rescaling's granularity) would
 * be 6–35 times as many. With opts.norms the RMSNorms' gains move too (F32 in the file:
 * w_i·e^θ_i exactly; ∂L/∂θ_i = Σ_t g_ti x̂w_ti from the backward pass's norm hook), a
 * factor per input column of q/k/v and gate/up to go with the rows'. Biases are not
 * tuned yet. With opts.head the output head's rows (∂L/∂θ_v = Σ_t g_tv·(ŵ_v·x_t), g the
 * logits' gradient) and the token embedding's (Σ over the positions holding token v of
 * g_t·ê_v, g the gradient of the stream's input) move as well; a tied embedding is one
 * tensor, both parts of its gradient summed. */
#ifndef SQZ_TUNE_H
#define SQZ_TUNE_H

#include <stdint.h>

#include "sqz/backend.h"
#include "sqz/core.h"
#include "sqz/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sqz_tune_opts {
    const int32_t *windows; /* nsamples × seqlen calibration tokens: every step uses them all */
    int nsamples, seqlen;
    const int32_t *held;    /* n_held × seqlen held-out tokens: the stopping criterion */
    int n_held;
    int steps;              /* at most this many steps (>= 1) */
    double lr;              /* Adam's step on θ = log α (<= 0: SQZ_TUNE_LR) */
    int patience;           /* steps without a held-out improvement before stopping (<= 0: 2) */
    int progress;           /* 1: a progress line on a terminal (step, KL, held-out KL, ETA) */
    sqz_backend *backend;   /* where the decoder layers' forward and backward run; NULL: CPU */
    int norms;              /* 1: also every layer's RMSNorm gains (F32 in the file), one factor each */
    int head;               /* 1: also the output head's rows and the token embedding's (one
                               tensor when tied), when their types have scale fields */
} sqz_tune_opts;

#define SQZ_TUNE_LR 0.002
/* The reference probabilities' memory bound (bytes): windows × seqlen × n_vocab floats. */
#define SQZ_TUNE_MAX_TARGET_BYTES ((uint64_t)8 << 30)

typedef struct sqz_tune_report {
    int n_tensors;        /* weight tensors tuned (row factors) */
    int n_norms;          /* RMSNorm gain vectors tuned (one factor per element) */
    int64_t n_params;     /* factors: rows and gains */
    int n_steps;          /* steps run */
    int best_step;        /* 0: no step improved the held-out KL (the input's scales written) */
    double *train_kl;     /* [n_steps + 1] mean KL on the calibration windows before step s (owned) */
    double *held_kl;      /* [n_steps + 1] mean held-out KL after step s ([0]: the input's) */
    double seconds;
    sqz_stage_times times; /* forward (with the reference's) and backward (with the hooks' products) */
} sqz_tune_report;

/* Tunes the quantized GGUF in_path against ref (the same architecture and vocabulary;
 * any source) and writes out_path (atomically). rep may be NULL. */
int sqz_tune(const sqz_model *ref, const char *in_path, const char *out_path, const sqz_tune_opts *o,
             sqz_pool *pool, sqz_tune_report *rep, sqz_err *err);
void sqz_tune_report_free(sqz_tune_report *rep);

#ifdef __cplusplus
}
#endif
#endif

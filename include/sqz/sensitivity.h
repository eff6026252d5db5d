/* Predicting the loss change of every (weight matrix, type) option on one scale
 * (DESIGN.md §4).
 *
 * For a linear layer z = W x, calibration inputs x_t and output gradients g_t = ∂L/∂z_t
 * (L the sum of a window's token losses), a change δW of W raises the mean loss by about
 *
 *   grad-scaled:   ΔL ≈ ½/N Σ_j s_j δw_jᵀ H δw_j,   s_j = Σ_t g_tj²,  H = Σ_t x_t x_tᵀ / T
 *   token-weighted: ΔL ≈ ½/N Σ_j s_j δw_jᵀ H_w δw_j, H_w = Σ_t w_t x_t x_tᵀ / Σ_t w_t,
 *                  w_t = Σ_j g_tj²
 *   diagonal:      ΔL ≈ ½/N Σ_j Σ_i F_ji δw_ji²,   F_ji = Σ_t g_tj² x_ti²   (diagonal Fisher)
 *   layer-local:   ΔL ≈ ½ Σ_j δw_jᵀ H δw_j          (s_j = 1: what GPTQ and imatrix minimize)
 *
 * N is the number of scored tokens. The gradient-scaled form makes errors of different
 * layers comparable; the other two are the baselines it is judged against.
 *
 * Both gradient-scaled forms approximate the row Fisher F_j = Σ_t g_tj² x_t x_tᵀ by s_j
 * times a Gram. With H that assumes the gradient's size independent of the token; H_w
 * assumes only that g_tj² factors as a_j·b_t (exact then): a token whose input is large
 * but whose output hardly moves the loss (the attention sink's) weighs less. Both equal
 * when w_t is constant.
 *
 * A token embedding row v is looked up, not multiplied: its change δe_v moves the input
 * of layer 0 at every position holding token v, so ΔL ≈ ½/N Σ_v e_v ‖δe_v‖² / dim with
 * e_v = Σ_{t: tok_t = v} ‖∂L/∂x_t‖² (the isotropic form of the same Fisher term); with
 * tied embeddings that part is added to the output head's.
 *
 * δW is what compress would write: GPTQ (with the given dampening and shrinkage) for the
 * linear layers and the output head, round-to-nearest for an untied embedding, a plain
 * conversion for F16. Two passes over the calibration windows: a backward pass (s_j,
 * F, e_v, the output head's Gram) and the layer-by-layer Gram pass (sqz_calib_run), in
 * whose callback every matrix of the layer is quantized into every candidate type and
 * scored, so memory is one layer's Grams at a time (plus F when asked for: one float per
 * weight).
 *
 * A large tensor is scored on some of its rows (GPTQ quantizes rows independently given
 * H): all while rows·cols² <= 2^32, else n = 2^32/cols² rows (256 <= n <= 8192), the n/2
 * of largest s_j (+ e_v) exactly and an evenly spaced sample of n/2 of the others scaled
 * to their count, unless its Ŵ is kept. SmolLM2: every tensor whole but the head (8192
 * of 49152 rows); Qwen2.5-1.5B: gate/up 1820 of 8960 rows, ffn_down 256 of 1536.
 *
 * Statistics can come from one model and the weights from another (stats_model and
 * weights_model): compress re-estimates s_j and H on the already compressed model while
 * the options are always quantizations of the original weights. */
#ifndef SQZ_SENSITIVITY_H
#define SQZ_SENSITIVITY_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/model.h"
#include "sqz/prune.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SQZ_SENS_MAX_OPTIONS 16

typedef struct sqz_sens_option {
    int type;
    uint64_t bytes;  /* the tensor's exact bytes in this type */
    double dl_grad;  /* gradient-scaled prediction, s_j · H */
    double dl_gradtw; /* gradient-scaled with the token-weighted Gram, s_j · H_w */
    double dl_diag;  /* diagonal Fisher (NaN unless opts.diag_fisher) */
    double dl_local; /* layer-local, s_j = 1 */
    float *what;     /* Ŵ (rows × cols) when opts.keep asked for it, else NULL (owned) */
} sqz_sens_option;

/* Tensors are indexed as sqz_qmodel_opts.tensor_types: layer l's linear k (q, k, v, o,
 * gate, up, down) at l·7 + k, the output head at n_layer·7 (a tied embedding is this one
 * tensor), an untied embedding at n_layer·7 + 1. */
typedef struct sqz_sens_tensor {
    char name[64]; /* GGUF name (blk.3.attn_q.weight, output.weight, token_embd.weight) */
    int layer;     /* -1 for the head and the embedding */
    int kind;      /* sqz_linear_kind */
    int64_t rows, cols;
    int n_options; /* candidate types that fit the row length (F16 alone when none does) */
    sqz_sens_option opt[SQZ_SENS_MAX_OPTIONS];
    /* With width options (prune_ffn_step > 0), ffn_down only: candidate types its rows fit
     * only once narrowed (172 channels: no 32-block type; 160: all of them). Costs from
     * the largest prefix of columns each type fits, scaled to the whole row; bytes 0 (the
     * joint allocation counts them per width). */
    int n_narrow;
    sqz_sens_option narrow[SQZ_SENS_MAX_OPTIONS];
} sqz_sens_tensor;

typedef struct sqz_sens_opts {
    const int32_t *windows; /* nsamples × seqlen calibration tokens */
    int nsamples, seqlen;
    const int *types;       /* candidate types (writable; each tensor keeps those its rows fit) */
    int n_types;            /* <= SQZ_SENS_MAX_OPTIONS */
    double percdamp;        /* GPTQ's, as compress will quantize (<= 0: 0.01) */
    double shrink;          /* GPTQ's shrinkage (sqz_gptq_opts.shrink) */
    int diag_fisher;        /* 1: also the diagonal-Fisher form (one float per weight) */
    const int *keep;        /* n_keep pairs (tensor index, type): keep their Ŵ */
    int n_keep;
    int progress;           /* 1: a progress bar on a terminal */
    int prune_ffn_step;     /* > 0: also every layer's width options (prune.h), FFN widths in these steps;
                               n_types may then be 0 (width options only) */
    int prune_magnitude;    /* the width options ranked by activation-weighted magnitude (prune.h) */
    int weighted_only;      /* 1: only the token-weighted form (dl_gradtw, compress's default); dl_grad
                               and dl_local are NaN: the plain-Gram error sums are 2 of the 5 flops per
                               candidate type */
    int all_types;          /* sqz_sens_options' all_types (0: 32-block types yield to the k-quants) */
    struct sqz_backend *backend; /* where the calibration Grams are summed (sqz/backend.h); NULL: the CPU */
    /* Called before the weights' layer l is read (done = 0) and after its options are
     * scored (done = 1), in layer order: a weights model whose layers arrive as needed
     * (a pruned model streamed from its source, sqz_prune_stream_*); NULL: none. */
    int (*layer_hook)(void *ctx, int layer, int done, sqz_err *err);
    void *layer_hook_ctx;
} sqz_sens_opts;

typedef struct sqz_sens {
    int n_tensors;
    sqz_sens_tensor *t; /* owned */
    double loss;        /* mean cross-entropy of stats_model on the windows */
    int64_t n_scored;
    double seconds_grad, seconds_quant;
    sqz_stage_times times;    /* forward, backward, grams, scoring (pruning: the width options) */
    sqz_layer_widths *widths; /* [n_widths = n_layer] width options when opts.prune_ffn_step > 0, else NULL */
    int n_widths;
} sqz_sens;

int sqz_sensitivity(const sqz_model *stats_model, const sqz_model *weights_model, sqz_pool *pool,
                    const sqz_sens_opts *opts, sqz_sens *out, sqz_err *err);
void sqz_sens_free(sqz_sens *s);
/* Only the tensors and their options with exact bytes (no estimate: predictions are 0),
 * e.g. to know the smallest and largest reachable sizes before any work. A tensor's
 * options are the listed types its rows fit, except that on rows a listed k-quant fits
 * the 32-value block types Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL are left out (all_types 0; each
 * sits at or between k-quant sizes, where llama.cpp writes the k-quant): on a 1.5B
 * model they were 5 of 12 candidates' scoring time. all_types 1: every listed type. */
int sqz_sens_options(const sqz_model *m, const int *types, int n_types, int all_types, sqz_sens *out,
                     sqz_err *err);
/* Lists each ffn_down's narrow types (sqz_sens_tensor.narrow, predictions 0): the
 * candidates its rows fit only once narrowed. sqz_sensitivity does it with width options. */
void sqz_sens_add_narrow(sqz_sens *s, const int *types, int n_types);
/* Index of a tensor (as above) for (layer, kind); -1 when the model has no such tensor. */
int sqz_sens_index(const sqz_model *m, int layer, int kind);
/* Number of tensors: n_layer·7 + 1, + 1 with an untied embedding. */
int sqz_sens_count(const sqz_model *m);

/* Mean cross-entropy of m on windows (nsamples × seqlen tokens, each one sequence). */
int sqz_mean_loss(const sqz_model *m, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen,
                  double *loss, sqz_err *err);

/* Spearman rank correlation of two series (average ranks for ties); NaN for n < 2. */
double sqz_spearman(const double *a, const double *b, int n);

#ifdef __cplusplus
}
#endif
#endif

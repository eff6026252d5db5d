/* The backward pass: cross-entropy loss of a token window and its gradient with respect
 * to the output of every linear layer, on the CPU.
 *
 * Per window (one causal sequence of T tokens at positions 0..T-1):
 *   loss_sum = Σ_{t=0}^{T-2} CE(logits_t, tok_{t+1})     (in double)
 * and the gradients are those of scale · loss_sum (scale = 1/(T-1) gives the mean loss,
 * what transformers computes with labels = input_ids).
 *
 * Memory: the forward pass keeps only each layer's input (the residual stream, n_layer ×
 * T × dim floats) and recomputes a layer's activations when the backward sweep reaches
 * it (activation checkpointing), so a window costs about two forward passes. Weights are
 * used in place when F32, otherwise dequantized one layer at a time; the output head is
 * dequantized once per context (n_vocab × dim floats).
 *
 * Weight gradients are not formed: a hook receives, per linear layer, its input x and
 * the gradient g of its output (dL/dW = gᵀx), which is all a sensitivity estimate needs
 * (s_j = Σ_t g_tj², diagonal Fisher Σ_t g_tj² x_ti²). */
#ifndef SQZ_GRAD_H
#define SQZ_GRAD_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The weight matrices of the model, per layer and then the two global ones. */
typedef enum sqz_linear_kind {
    SQZ_LIN_Q = 0,
    SQZ_LIN_K = 1,
    SQZ_LIN_V = 2,
    SQZ_LIN_O = 3,
    SQZ_LIN_GATE = 4,
    SQZ_LIN_UP = 5,
    SQZ_LIN_DOWN = 6,
    SQZ_LIN_PER_LAYER = 7, /* kinds 0..6 are per layer */
    SQZ_LIN_OUTPUT = 7,    /* output head: x = final normed hidden state, g = dL/dlogits */
    SQZ_LIN_EMBD = 8,      /* token embedding: x = NULL, g = dL/d(embedding output) */
    SQZ_LIN_COUNT = 9
} sqz_linear_kind;

/* GGUF-style short name of a kind: attn_q … ffn_down, output, token_embd. */
const char *sqz_linear_kind_name(int kind);
/* The model's tensor of (layer, kind); layer is ignored for OUTPUT and EMBD. */
const sqz_tensor *sqz_linear_tensor(const sqz_model *m, int layer, int kind);

/* What a hook sees: rows [row0, row0 + n) of one window. The output head is reported in
 * chunks of rows; every other site once per window with all T rows. */
typedef struct sqz_grad_site {
    int layer;             /* -1 for OUTPUT and EMBD */
    int kind;              /* sqz_linear_kind */
    const float *x;        /* [n, in] the linear's input (NULL for EMBD) */
    const float *g;        /* [n, out] gradient of scale · loss_sum with respect to its output */
    const int32_t *tokens; /* [n] the window's tokens at these rows */
    int64_t row0, n, in, out;
    int window;            /* which window of sqz_grad_windows (0 for sqz_grad_window) */
} sqz_grad_site;

/* Called on the calling thread (the pool is idle); returns SQZ_OK or SQZ_ERR (err set). */
typedef int (*sqz_grad_hook)(void *ctx, const sqz_grad_site *site, sqz_err *err);

typedef struct sqz_grad sqz_grad;

/* Buffers for windows of up to max_tokens tokens; dequantizes the output head. */
int sqz_grad_create(sqz_grad **out, const sqz_model *m, sqz_pool *pool, int64_t max_tokens, sqz_err *err);
void sqz_grad_free(sqz_grad *g);
/* Forward and backward over one window. loss_sum (may be NULL) receives Σ CE over the
 * T-1 scored positions; hook may be NULL (then only the loss is computed, backward
 * skipped). */
int sqz_grad_window(sqz_grad *g, const int32_t *tokens, int64_t n_tokens, double scale, sqz_grad_hook hook,
                    void *hook_ctx, double *loss_sum, sqz_err *err);
/* The same on a backend: a CUDA one runs the decoder layers' forward and backward on its
 * GPU (sqz_block_pass; the output head, the loss and the hooks stay on the CPU); the CPU
 * backend or NULL is sqz_grad_create. */
int sqz_grad_create_on(sqz_grad **out, const sqz_model *m, sqz_pool *pool, sqz_backend *backend,
                       int64_t max_tokens, sqz_err *err);
/* Forward and backward over nsamples windows of T tokens each (windows: row after row):
 * what sqz_grad_window does to each, with sqz_grad_site.window naming it. On the CPU,
 * window after window (the same hooks in the same order); on a GPU, a group of windows at
 * a time, layer by layer, so each layer's weights cross once per group and direction (the
 * hooks of one layer come for every window of the group before the next layer's).
 * loss_sum (may be NULL): Σ over the windows, summed in window order. prog (may be
 * NULL): updated with the windows done. */
int sqz_grad_windows(sqz_grad *g, const int32_t *windows, int nsamples, int64_t T, double scale, sqz_grad_hook hook,
                     void *hook_ctx, double *loss_sum, sqz_progress *prog, sqz_err *err);
/* Distillation instead of next-token cross-entropy: probs [windows][T][n_vocab] (window
 * w of sqz_grad_windows at probs + w·T·n_vocab; sqz_grad_window reads window 0), a
 * reference model's next-token probabilities at every position. Each scored position t
 * (0..T-2) then adds KL(p_t ‖ softmax z_t) to the loss and scale·(softmax z_t − p_t) to
 * the logits' gradient. NULL: back to cross-entropy. The caller keeps probs alive. */
void sqz_grad_set_targets(sqz_grad *g, const float *probs);
/* The output head is read once, at create; after its values change (its tensor's data
 * replaced or rewritten) this reads it again. */
int sqz_grad_reload_head(sqz_grad *g, sqz_err *err);
/* A second hook for the decoder's RMSNorms (NULL: none): per layer and window, site.kind
 * SQZ_GRAD_NORM_ATTN or SQZ_GRAD_NORM_FFN, x [T, dim] the norm's output (x̂·w) and g
 * [T, dim] the gradient of the loss with respect to it; Σ_t g_ti x_ti is then ∂L/∂log w_i
 * of the norm's gain w. Called after the linears that read the norm (and, for the
 * attention's, after their hooks). */
#define SQZ_GRAD_NORM_ATTN 16
#define SQZ_GRAD_NORM_FFN 17
void sqz_grad_set_norm_hook(sqz_grad *g, sqz_grad_hook hook, void *ctx);
/* Adds the forward and backward time and arithmetic of every window so far to out. */
void sqz_grad_times(const sqz_grad *g, sqz_stage_times *out);

#ifdef __cplusplus
}
#endif
#endif

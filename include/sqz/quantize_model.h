/* Quantizing a whole model into a GGUF file that llama.cpp runs.
 *
 * One pass over the layers, in order. Each layer's calibration inputs are collected by
 * running that layer alone over the calibration windows (sqz_forward_layer), its seven
 * weight matrices are quantized (RTN with diag(H) importance, or GPTQ with H) and
 * written to the output at once, so memory is one layer's weights and Grams plus the
 * calibration activations, never a second copy of the model.
 *
 * Sequential mode (GPTQ's default, as in the GPTQ paper's code): the calibration
 * stream runs through the already-quantized layers 0..l-1, so layer l is quantized for
 * the inputs X_q it will really get; its target is W X_q. Two passes per layer (collect
 * with the original layer, then advance through the quantized one).
 *
 * With target_original, a second stream runs through the original model and the
 * target becomes the original output W X_o: minimizing ‖W X_o − Ŵ X_q‖² + λ‖Ŵ − W‖²
 * equals GPTQ of W* = W (C + λI)(H_q + λI)⁻¹ under H_q (C = X_o X_qᵀ, H_q = X_q X_qᵀ,
 * λ GPTQ's dampening). Three passes per layer. W* is a least-squares fit of the
 * upstream quantization error from X_q; with calibration sets of a few thousand tokens
 * it fits noise and compounds over layers (SmolLM2, Q4_K, 8×512 tokens: perplexity 32.0
 * plain sequential vs 98.9 with λ = 0.1·mean diag H), so it is off by default.
 *
 * Tensor types: every linear weight gets opts->type; the token embedding opts->embd_type
 * and the output head opts->output_type (-1: opts->type as well); norms stay F32. A
 * tensor whose row length is not a multiple of its type's block size falls back per
 * tensor exactly as llama-quantize does (Q2_K, Q3_K → Q4_0; Q4_K → Q5_0; Q5_K → Q5_1;
 * Q6_K → Q8_0; anything else → F16) and the report says so. With a tied embedding the
 * one tensor is both: it is quantized last, as the output head (GPTQ on the final
 * hidden states), and its type is output_type. */
#ifndef SQZ_QUANTIZE_MODEL_H
#define SQZ_QUANTIZE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"
#include "sqz/gguf_write.h"
#include "sqz/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sqz_qmethod { SQZ_QMETHOD_RTN = 0, SQZ_QMETHOD_GPTQ = 1 } sqz_qmethod;

typedef struct sqz_qmodel_opts {
    int type;             /* sqz_type of the linear weights */
    int method;           /* sqz_qmethod; GPTQ needs calibration windows */
    int output_type;      /* -1: type */
    int embd_type;        /* -1: type (untied embeddings only) */
    int keep_output_type; /* 1: the output head (and a tied embedding) keeps its source type and bytes */
    int sequential;       /* GPTQ: calibrate layer l on the quantized model's inputs (see above) */
    int target_original;  /* with sequential: the original model's outputs as targets (W*, see above) */
    int act_order;        /* GPTQ: columns by decreasing diag(H), static groups */
    double percdamp;      /* GPTQ dampening, fraction of mean(diag H); <= 0: 0.01 */
    double shrink;        /* GPTQ: H's off-diagonal entries scaled by 1 − shrink (sqz_gptq_opts.shrink),
                             in [0, 1]; default 0.75 (see include/sqz/gptq.h) */
    /* Rescaling after quantization (sqz_rescale_row), for tensors whose type has fewer
     * than SQZ_RESCALE_BELOW_BPW bits per weight: each 256 values' scales times
     * (Σ x² / Σ x·q)^rescale against the values they were made from (GPTQ: the layer's
     * target weights), the codes kept. 1 (default): unbiased along the original; 0.5:
     * the original's energy; 0: off. The quantized stream of a sequential run sees the
     * rescaled weights; the report's GPTQ errors are the sweep's, before it. Measured
     * (Qwen2.5-1.5B, WikiText-2, KL to F32): GPTQ IQ2_XXS perplexity 76.7 -> 63.0, KL
     * 1.56 -> 1.36; compress at 2.8 and 3.5 bpw KL -16% and -14%; at 4 bits and
     * above no gain (SmolLM2 Q4_0: +0.5..1.6% perplexity), hence the bound. */
    double rescale;
    const int32_t *windows; /* nsamples × seqlen calibration tokens, or NULL (RTN without importance) */
    int nsamples, seqlen;
    int progress;         /* 1: a progress bar on stderr when it is a terminal */
    /* A per-tensor plan (sqz compress), or NULL: n_layer·7 + 2 type ids, -1 = the defaults
     * above. Index l·7 + k for layer l's linear k (sqz_linear_kind order: q, k, v, o, gate,
     * up, down), n_layer·7 the output head (with a tied embedding: the one tensor),
     * n_layer·7 + 1 an untied embedding. Block-size fallbacks still apply. */
    const int *tensor_types;
    /* Where Grams and GPTQ's factors are computed (sqz/backend.h); NULL: the CPU, as a
     * CPU backend. Same plan and sizes either way; the bytes can differ by rounding. */
    struct sqz_backend *backend;
    /* GPTQ's factor and sweep in double precision. Default 0: single precision (as
     * GPTQ's reference and GPTQModel run it; about twice as fast on the CPU, a few levels
     * per thousand differ), on either backend. */
    int gptq_double;
    /* A resumable run (sqz quantize/compress --resume). The output goes to
     * "<checkpoint>.part" (left in place if the run stops) and, after a layer, at least
     * checkpoint_every_s seconds after the last one (0: after every layer), the state to go
     * on from (the quantized stream, the report so far, where the file stands) to
     * "<checkpoint>.state". With resume set and a state there, the run goes on after its
     * last layer and writes the same bytes as an uninterrupted run; a state from another
     * model, other calibration tokens or other options is refused, naming which. Both
     * files are gone once the output is complete. NULL: neither. */
    const char *checkpoint;
    int resume;
    double checkpoint_every_s;
    /* Called before layer l is read (done = 0) and after it is written (done = 1), in
     * layer order, for a model whose layers arrive as they are needed (a pruned model
     * streamed from its source, sqz_prune_stream_*); NULL: none. A non-zero return stops
     * the run with err. */
    int (*layer_hook)(void *ctx, int layer, int done, sqz_err *err);
    void *layer_hook_ctx;
} sqz_qmodel_opts;

#define SQZ_RESCALE_BELOW_BPW 4.0

/* Sets the defaults: Q4_K, RTN, no calibration, sequential on, percdamp 0.01, shrink
 * 0.75, rescale 1. */
void sqz_qmodel_opts_default(sqz_qmodel_opts *o);

typedef struct sqz_qtensor_report {
    char name[SQZ_GGUF_MAX_NAME + 1];
    int type;              /* the type written */
    int requested;         /* the type the options asked for */
    int fallback;          /* 1: row length did not fit `requested` */
    int kept;              /* 1: source bytes copied unchanged (keep_output_type) */
    int n_dims;
    int64_t ne[4];
    uint64_t bytes;
    double rel_weight_err; /* ‖W − Ŵ‖_F / ‖W‖_F (NaN for norms and kept tensors) */
    double rel_output_err; /* tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) against the layer's target; NaN without H (GPTQ:
                              from evenly spaced rows when rows·cols² > 2^30, sqz_gptq_stats) */
} sqz_qtensor_report;

typedef struct sqz_qmodel_report {
    int n_tensors;
    sqz_qtensor_report *tensors; /* owned */
    int n_fallback;
    uint64_t tensor_bytes;  /* all tensor data (without padding) */
    uint64_t file_bytes;    /* the GGUF file */
    int64_t n_params;       /* elements of all tensors written (tied output once) */
    double bpw;             /* 8 · file_bytes / n_params */
    int64_t calib_tokens;
    double seconds_calib;   /* layer passes collecting inputs */
    double seconds_quant;   /* RTN / GPTQ */
    double seconds_total;
    sqz_stage_times times;  /* forward, grams, gptq (RTN too), writing */
    int resumed_layer;      /* > 0: went on from a checkpoint, layers before this one were done */
} sqz_qmodel_report;

void sqz_qmodel_report_free(sqz_qmodel_report *r);

/* The type a tensor of row length ncols gets when `type` is asked for (itself when it
 * fits; else llama-quantize's fallback). */
int sqz_qmodel_fallback_type(int type, int64_t ncols);

/* Quantizes m into a GGUF file at out_path (through a temporary file; nothing is left
 * at out_path on failure). rep (may be NULL) receives the per-tensor report. */
int sqz_quantize_model(const sqz_model *m, const char *out_path, const sqz_qmodel_opts *opts, sqz_pool *pool,
                       sqz_qmodel_report *rep, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

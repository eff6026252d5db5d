/* The whole-model drivers: the stages below (model, quant, prune, plan) put together into
 * the runs the CLI offers, so a program linking libsqz compresses a model without it.
 *
 * This module is the top floor of the library: it calls model, quant, prune and plan;
 * none of them calls it. Its functions take a loaded model, calibration windows (token
 * ids, see sqz_calib_split in calib.h) and an options struct, write their output files through
 * sqz_out (temporary name + rename: nothing is left on failure) and fill a report of
 * plain data, which the caller owns and frees with its _free function. Nothing here
 * prints; progress bars on stderr only when asked (opts.progress) and stderr is a
 * terminal, as everywhere in the library.
 *
 * The quantizer of a whole model (sqz_quantize_model) has its own header,
 * include/sqz/quantize_model.h; it is part of this module. */
#ifndef SQZ_PIPELINE_H
#define SQZ_PIPELINE_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/model.h"
#include "sqz/prune.h"
#include "sqz/quantize_model.h"
#include "sqz/sensitivity.h"
#include "sqz/tune.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sqz_compress_report;

/* ---------------------------------------------------------------- pruned models */

/* Writes m with layer l keeping keep[l] to path (GGUF, architecture "deci" when any
 * layer differs from layer 0's shape or lacks a block, else "llama"), unquantized: every
 * tensor in F32 (a quantized source's values exactly); q, k, v, gate and up lose rows,
 * o_proj and ffn_down columns, compensated on the calibration windows' Grams when
 * compensate = 1. Streams: one layer's Grams and two matrices at a time. */
int sqz_prune_write(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                    int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *path,
                    sqz_err *err);

/* sqz_prune_write streamed into its consumer, so no model-sized F32 file exists at once:
 * begin writes path with the embeddings, norms and head but every layer's tensors left
 * as holes (a sparse file), and starts a calibration run of m (sqz_calib_begin). The
 * caller loads path (sqz_model_load) and hands the model to attach; then, layer by layer
 * in order, fill(l) writes the pruned, compensated layer l into the file (the loaded
 * model sees it through its map) and release(l) punches it out again (where the file
 * system cannot, the layer stays: the file grows as sqz_prune_write's would). Layers
 * skipped by fill's caller are stepped over. The bytes filled equal sqz_prune_write's. */
typedef struct sqz_prune_stream sqz_prune_stream;
int sqz_prune_stream_begin(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                           int nsamples, int seqlen, double percdamp, double shrink, const char *path,
                           sqz_prune_stream **out, sqz_err *err);
int sqz_prune_stream_attach(sqz_prune_stream *ps, const sqz_model *pruned, sqz_err *err);
int sqz_prune_stream_fill(sqz_prune_stream *ps, int layer, sqz_err *err);
int sqz_prune_stream_release(sqz_prune_stream *ps, int layer, sqz_err *err);
void sqz_prune_stream_end(sqz_prune_stream *ps);

/* The same as a Hugging Face folder dir (created if absent): model.safetensors (F32,
 * transformers' Llama names, q/k rows in the rotate-half layout) and config.json with
 * the per-layer counts as num_attention_heads_per_layer, num_key_value_heads_per_layer
 * and intermediate_size_per_layer, which sqz_model_load reads (transformers' Llama does
 * not: its layers are all alike). No tokenizer files are written. */
int sqz_prune_write_hf(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                       int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *dir,
                       sqz_err *err);

/* What sqz_prune_run is told to do. */
typedef struct sqz_prune_opts {
    double attn_keep;         /* fraction of query heads kept per layer: the layer keeps a kv heads and b
                                 query heads in each, the fewest a·b >= round(attn_keep·n_head), then the
                                 cheapest */
    double ffn_keep;          /* fraction of FFN channels kept per layer (rounded to a multiple of 32 when
                                 n_ff >= 64) */
    const int32_t *windows;   /* nsamples × seqlen calibration tokens */
    int nsamples, seqlen;
    const int32_t *held;      /* heldout × seqlen held-out tokens (the loss before and after) */
    int heldout;
    double damp, shrink;      /* of the compensation (sqz_prune_columns) */
    int compensate;           /* 0: plain removal */
    int magnitude;            /* 1: rank by activation-weighted magnitude (the baseline), not the proxy */
    int progress;             /* progress bars on stderr (a terminal only) */
} sqz_prune_opts;

typedef struct sqz_prune_report {
    int n_layer;
    sqz_layer_keep *keep;     /* [n_layer] what each layer keeps (owned) */
    double predicted, predicted_plain; /* summed predicted ΔL with and without compensation */
    int64_t heads, heads_before, channels, channels_before;
    int64_t params_before, params_after;
    double loss_before, loss_after; /* mean held-out loss of the model and of the written one */
} sqz_prune_report;

void sqz_prune_report_free(sqz_prune_report *r);

/* Prunes m to the widths asked for (the width options of sqz_sensitivity, the cheapest
 * at each width) and writes it to out (GGUF, sqz_prune_write) and/or hf_out (a Hugging
 * Face folder, sqz_prune_write_hf; either may be NULL, not both); then loads the result
 * and measures it on the held-out windows. The layers of m must all have the same FFN
 * width (an unpruned model). rep is the caller's (sqz_prune_report_free, also after a
 * failure). */
int sqz_prune_run(const sqz_model *m, const char *out, const char *hf_out, const sqz_prune_opts *o, sqz_pool *pool,
                  sqz_prune_report *rep, sqz_err *err);

/* ---------------------------------------------------------------- the proxy forms */

/* The forms of a predicted loss change in sqz_sens_option (see sensitivity.h). */
typedef enum sqz_proxy { SQZ_PROXY_GRAD = 0, SQZ_PROXY_GRADTW = 1, SQZ_PROXY_DIAG = 2, SQZ_PROXY_LOCAL = 3,
                         SQZ_PROXY_COUNT = 4 } sqz_proxy;

/* "grad", "gradtw", "diag", "local"; "?" for another value. */
const char *sqz_proxy_name(int proxy);
/* The key of that form in 'sqz sensitivity --json' options: "dl_grad", "dl_gradtw", ... */
const char *sqz_proxy_key(int proxy);
/* The form's prediction of option o. */
double sqz_proxy_cost(const sqz_sens_option *o, int proxy);

/* ---------------------------------------------------------------- sensitivity with validation */

typedef struct sqz_sens_run_opts {
    sqz_sens_opts sens;         /* the estimate; keep and n_keep are the run's (set them to NULL, 0) */
    const int32_t *held;        /* heldout × sens.seqlen held-out tokens (validation only) */
    int heldout;
    int validate;               /* options to validate: K random (tensor, quantized type) pairs */
    const int *vtypes;          /* draw them among these types only (n_vtypes 0: any quantized candidate) */
    int n_vtypes;
    uint64_t seed;              /* of the draw */
} sqz_sens_run_opts;

typedef struct sqz_sens_report {
    sqz_sens sens;              /* every prediction (sqz_sensitivity) */
    int n_valid;                /* options validated */
    int *valid;                 /* [2·n_valid]: (tensor index, type) pairs (owned) */
    double base_loss;           /* held-out loss of the model */
    /* [n_valid] each, one block owned through `measured`: the measured loss change of each
     * option applied alone, its symmetric part (L(W − δW) + L(W + δW))/2 − L(W) (free of the
     * first-order term, zero-mean noise on a finite sample), and each form's prediction
     * (predicted + f·n_valid for sqz_proxy f) */
    double *measured, *symmetric, *predicted;
    double rho[SQZ_PROXY_COUNT], rho_sym[SQZ_PROXY_COUNT]; /* Spearman of each form with measured / symmetric */
} sqz_sens_report;

void sqz_sens_report_free(sqz_sens_report *r);

/* sqz_sensitivity of m on itself, then (o->validate > 0) the options drawn before the
 * estimate (so their Ŵ are kept) applied one at a time to m (restored after each) and
 * measured on the held-out windows. rep is the caller's (sqz_sens_report_free, also after
 * a failure). */
int sqz_sensitivity_run(sqz_model *m, sqz_pool *pool, const sqz_sens_run_opts *o, sqz_sens_report *rep,
                        sqz_err *err);

/* ---------------------------------------------------------------- compress */

/* Candidate types of a plan when none are given: the k-quants, the 32-blocks, F16 and
 * the i-quants sqz writes (IQ4_NL, IQ4_XS, IQ3_S). With IQ3_S and IQ4_XS among them the
 * 1.5B model's Q3_K_S-size file went from 0.68 to 0.43 of llama.cpp's perplexity
 * increase (bench/RESULTS.md). */
#define SQZ_COMPRESS_DEFAULT_TYPES "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,IQ4_NL,F16,IQ3_S,IQ4_XS"
/* compress's candidates below SQZ_COMPRESS_LOWBIT_BPW (without --types and a saved
 * estimate): the 2-3-bit i-quants in, F16 and Q5_1 out (no tensor takes them there; the
 * 32-value types stay for rows that fit no 256-value block) */
#define SQZ_COMPRESS_LOWBIT_TYPES \
    "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,IQ4_NL,IQ4_XS,IQ3_S,IQ3_XXS,IQ2_S,IQ2_XS,IQ2_XXS"
#define SQZ_COMPRESS_LOWBIT_BPW 3.0

/* What sqz_compress is told to do. Token arrays stay the caller's. */
typedef struct sqz_compress_opts {
    uint64_t budget;          /* bytes of the whole output file */
    const int32_t *windows;   /* nsamples × seqlen calibration tokens (the estimate, GPTQ) */
    int nsamples, seqlen;
    const int32_t *held;      /* heldout × seqlen held-out tokens (per-round perplexity) */
    int heldout;
    const int32_t *eval_ids;  /* n_eval tokens: also a perplexity on them per round (GPTQ protocol,
                                 eval_ctx, eval_chunks), or NULL */
    int64_t n_eval;
    int eval_ctx, eval_chunks;
    int rounds;               /* estimate → allocate → quantize rounds, >= 1 */
    const int *types;         /* candidate types, n_types <= SQZ_SENS_MAX_OPTIONS */
    int n_types;
    int all_types;            /* sqz_sens_options' all_types */
    int proxy;                /* sqz_proxy: GRAD, GRADTW or DIAG (only that form is computed) */
    double damp, shrink;      /* GPTQ's dampening and shrinkage (sqz_qmodel_opts) */
    double rescale;           /* block rescaling after quantization (sqz_qmodel_opts.rescale) */
    double prune_max;         /* < 0: no pruning; else the largest fraction of a block's heads or
                                 channels removed, chosen jointly with the types */
    int prune_auto;           /* with prune_max: none when quantization alone leaves 5% room in
                                 the budget (keep_pruned is then not written), else 0.5 when
                                 the budget leaves 5% room at it, else 0.75 */
    const char *keep_pruned;  /* with pruning: keep the pruned unquantized model there (F32 GGUF), or NULL */
    const char *sensitivity;  /* round 1 from a 'sqz sensitivity --json' file, or NULL (sqz_sens_load) */
    int measure;              /* after the last round, measure this many chosen tensors alone */
    int progress;             /* progress bars on stderr (a terminal only) */
    struct sqz_backend *backend; /* where GPTQ's Grams and factors run (sqz/backend.h); NULL: the CPU */
    /* Resumable runs (sqz compress --resume): checkpoint 1 keeps the round-1 estimate in
     * "<out>.estimate.json" once made and quantizes each round resumably into
     * "<out>.round<r>" (sqz_qmodel_opts.checkpoint: ".part" and ".state" beside it, every
     * checkpoint_every_s seconds). resume goes on from them: the estimate is read back
     * (refused, naming why, when its model, calibration, types or proxy differ) and the
     * round's quantization continues after its last checkpointed layer. All of them are
     * removed once OUT is written. The estimate is not kept with pruning (it has widths):
     * a resumed pruning run makes it again. */
    int checkpoint, resume;
    double checkpoint_every_s;
    int gptq_double;          /* GPTQ's factor and sweep in double (sqz_qmodel_opts.gptq_double) */
    /* > 0: the best round's file tuned end to end before it becomes OUT (sqz_tune: row
     * scales against m, at most tune_steps steps over the calibration windows, the
     * held-out windows choosing the step; tune_lr <= 0: SQZ_TUNE_LR). */
    int tune_steps;
    double tune_lr;
    /* Called with each temporary file's path before it is created (a round's file, the
     * pruned model, and sqz_out's "<path>.tmp.<pid>" of each), e.g. to remove them on a
     * signal; nonzero refuses it and fails the run. May be NULL. */
    int (*temp_file)(void *ctx, const char *path);
    /* Called when the sizes and the model's held-out perplexity are known
     * (round == 0) and after each round r (1-based, rep->rounds[r − 1] filled). May be NULL. */
    void (*notify)(void *ctx, int round, const struct sqz_compress_report *rep);
    void *ctx;
} sqz_compress_opts;

/* Sets the defaults: 1 round, proxy gradtw, damp 0.01, shrink 0.75, no pruning,
 * eval_ctx 512, eval_chunks 8; budget, windows and types left empty. */
void sqz_compress_opts_default(sqz_compress_opts *o);

typedef struct sqz_compress_round {
    int round;               /* 1-based */
    double predicted;        /* the plan's summed predicted ΔL */
    double heldout_ppl, eval_ppl; /* eval_ppl NaN without eval_ids */
    double seconds;
    uint64_t tensor_bytes, file_bytes;
    double bpw;              /* 8 · file_bytes / the model's weights */
} sqz_compress_round;

typedef struct sqz_compress_tensor {
    char name[64];
    int layer, kind;         /* as sqz_sens_tensor */
    int type;                /* the type written in the best round */
    double n_params, bytes;  /* as written (pruned shapes with pruning) */
    double predicted_dl;     /* the chosen option's prediction (times the kept part when pruned) */
    double measured_dl;      /* NaN unless measured (opts.measure) */
    int n_options;
    sqz_sens_option opt[SQZ_SENS_MAX_OPTIONS]; /* the last round's options (what: NULL) */
} sqz_compress_tensor;

typedef struct sqz_compress_report {
    int64_t n_params;        /* weights of the model */
    uint64_t budget, min_bytes, max_bytes; /* reachable sizes: every tensor at its smallest / largest */
    int over_max;            /* 1: the budget is at or above max_bytes (the best file that fits is written) */
    double base_heldout_ppl, base_eval_ppl; /* the model's (base_eval_ppl NaN without eval_ids) */
    int n_rounds;            /* rounds done */
    sqz_compress_round *rounds; /* [opts.rounds] (owned) */
    int best_round;          /* 1-based; its file became the output */
    double prune_max;        /* the fraction used (auto resolved); < 0 without pruning */
    int prune_skipped;       /* 1: prune_auto resolved to no pruning (types alone fit) */
    int ffn_step;
    int64_t params_after;    /* weights after pruning (n_params without) */
    int n_layer;
    sqz_layer_keep *keep;    /* [n_layer] kept widths with pruning, else NULL (owned) */
    int n_tensors;
    sqz_compress_tensor *tensors; /* [n_tensors] (owned) */
    sqz_stage_times times;   /* every stage of every round */
    int resumed_estimate;    /* 1: round 1's estimate was read back from the checkpoint */
    int resumed_layer;       /* > 0: a round's quantization went on from this layer (the last such round) */
    int tuned;               /* 1: OUT is the best round's file tuned (opts.tune_steps) */
    sqz_tune_report tune;    /* that tuning (owned) */
} sqz_compress_report;

void sqz_compress_report_free(sqz_compress_report *r);

/* Mixed precision (and with prune_max >= 0 structured pruning) of m under a byte budget
 * (DESIGN.md §4-§6, docs/architecture.md): each round estimates every (tensor, type)
 * option's ΔL, picks one per tensor within the budget (sqz_alloc_solve), quantizes with
 * sequential GPTQ into "<out>.round<r>.tmp.<pid>" and measures its held-out perplexity;
 * the best round is renamed to out, the others removed. m is changed during the run
 * (tensors swapped in for opts.measure) and restored. rep is filled on success and as
 * far as it got on failure; free it with sqz_compress_report_free either way. */
int sqz_compress(sqz_model *m, const char *out, const sqz_compress_opts *opts, sqz_pool *pool,
                 sqz_compress_report *rep, sqz_err *err);

/* The predictions of a 'sqz sensitivity --json' file (path) in the shape of
 * sqz_sens_options(m, types, n_types, all_types): every tensor and option must be there
 * with the same bytes; the form `proxy` is read. ffn_step > 0: also the width options
 * and narrowed-row costs that 'sqz sensitivity --prune' saves (sqz_sens_widths_json),
 * made with that FFN step (sqz_prune_ffn_step). out is the caller's (sqz_sens_free). */
int sqz_sens_load(const char *path, const sqz_model *m, const int *types, int n_types, int all_types, int proxy,
                  int ffn_step, sqz_sens *out, sqz_err *err);

/* The width options of an estimate made with prune_ffn_step = ffn_step, and its
 * narrowed-row costs (every form), as the text of a JSON object {"prune_ffn_step",
 * "widths", "narrow"} that sqz_sens_load reads back exactly (malloc'd; NULL on failure). */
char *sqz_sens_widths_json(const sqz_sens *s, int ffn_step, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

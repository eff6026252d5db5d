/* The whole-model drivers: the stages below (model, quant, prune, plan) put together into
 * the runs the CLI offers, so a program linking libsqz compresses a model without it.
 *
 * This module is the top floor of the library: it calls model, quant, prune and plan;
 * none of them calls it. Its functions take a loaded model, calibration windows (token
 * ids, see sqz_calib_windows) and an options struct, write their output files through
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

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- pruned models */

/* Writes m with layer l keeping keep[l] to path (GGUF, architecture "deci" when any
 * layer differs from layer 0's shape or lacks a block, else "llama"), unquantized: every
 * tensor in F32 (a quantized source's values exactly); q, k, v, gate and up lose rows,
 * o_proj and ffn_down columns, compensated on the calibration windows' Grams when
 * compensate = 1. Streams: one layer's Grams and two matrices at a time. */
int sqz_prune_write(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                    int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *path,
                    sqz_err *err);

/* The same as a Hugging Face folder dir (created if absent): model.safetensors (F32,
 * transformers' Llama names, q/k rows in the rotate-half layout) and config.json with
 * the per-layer counts as num_attention_heads_per_layer, num_key_value_heads_per_layer
 * and intermediate_size_per_layer, which sqz_model_load reads (transformers' Llama does
 * not: its layers are all alike). No tokenizer files are written. */
int sqz_prune_write_hf(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                       int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *dir,
                       sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

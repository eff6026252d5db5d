/* The Llama model: hyper-parameters, weights (pointers into mapped files, any readable
 * type), and the CPU forward pass.
 *
 * Weights are never converted as a whole: the forward pass dequantizes one layer at a
 * time into a scratch buffer (F32 tensors are used in place), so memory stays at the
 * mapped file plus one layer in f32 plus the activations. */
#ifndef SQZ_MODEL_H
#define SQZ_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/backend.h"
#include "sqz/core.h"
#include "sqz/gguf_write.h"
#include "sqz/io.h"
#include "sqz/tensor.h"
#include "sqz/tok.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How q and k rows are laid out for rotary embeddings. Hugging Face checkpoints use
 * rotate-half (pairs i and i + head_dim/2); GGUF "llama" files have the rows permuted by
 * the converter so pairs are adjacent (2i, 2i+1), which is what ggml's normal mode reads. */
typedef enum sqz_rope_mode { SQZ_ROPE_HALF = 0, SQZ_ROPE_ADJACENT = 1 } sqz_rope_mode;

/* The decoder families sqz runs. All are pre-norm RMSNorm + RoPE + grouped-query
 * attention + SwiGLU; they differ in a few extras:
 *   LLAMA  (GGUF "llama", or "deci" for per-layer widths): none; optional rope_freqs
 *          (Llama-3 frequency factors);
 *   QWEN2  q, k, v biases; GGUF keeps Hugging Face's rotate-half rows (llama.cpp's NEOX
 *          RoPE type);
 *   QWEN3  per-head RMSNorm of q and k (q_norm, k_norm, [head_dim]) before RoPE, no
 *          biases, head_dim free of hidden/heads; NEOX RoPE as QWEN2. */
typedef enum sqz_arch { SQZ_ARCH_LLAMA = 0, SQZ_ARCH_QWEN2 = 1, SQZ_ARCH_QWEN3 = 2 } sqz_arch;

/* GGUF's name of an architecture ("llama", "qwen2", "qwen3"). */
const char *sqz_arch_name(int arch);

typedef struct sqz_llama_config {
    int n_vocab;
    int dim;            /* hidden size */
    int n_layer;
    int n_head;         /* query heads (of layer 0; per-layer values below) */
    int n_head_kv;
    int head_dim;
    int n_ff;           /* FFN width (of layer 0) */
    int n_ctx_train;    /* max_position_embeddings / context_length */
    float rope_theta;
    float norm_eps;
    int tie_embeddings;
    int bos_id, eos_id; /* -1 when absent */
    int rope_mode;      /* sqz_rope_mode */
    int arch;           /* sqz_arch */
    int attn_bias;      /* q, k, v have biases (QWEN2; a llama/deci GGUF that carries them) */
    int qk_norm;        /* per-head q_norm / k_norm before RoPE (QWEN3) */
    /* Llama-3 rope scaling: head_dim/2 divisors of the rotation frequencies (llama.cpp's
     * rope_freqs tensor, or computed from config.json's rope_scaling), owned; NULL: none. */
    float *rope_freqs;
    /* Per-layer shapes (n_layer each, owned). Equal to the scalars above for an unpruned
     * model; 0 heads means no attention block, 0 FFN width no FFN block. */
    int *layer_n_head;
    int *layer_n_head_kv;
    int *layer_n_ff;
} sqz_llama_config;

/* Fills cfg from the text of a Hugging Face config.json (LlamaForCausalLM,
 * Qwen2ForCausalLM, Qwen3ForCausalLM). `path` is used in messages only. */
int sqz_config_from_hf_json(sqz_llama_config *cfg, const char *json, size_t len, const char *path, sqz_err *err);
/* Fills cfg from GGUF metadata (general.architecture llama, deci, qwen2 or qwen3;
 * per-layer arrays allowed). rope_freqs is filled later by the loader (a tensor). */
int sqz_config_from_gguf(sqz_llama_config *cfg, const sqz_gguf *g, sqz_err *err);
void sqz_config_free(sqz_llama_config *cfg);

typedef struct sqz_layer {
    const sqz_tensor *attn_norm;             /* [dim] */
    const sqz_tensor *wq, *wk, *wv, *wo;     /* ne = [dim, n_head*head_dim], ..., wo: [n_head*head_dim, dim] */
    const sqz_tensor *ffn_norm;              /* [dim] */
    const sqz_tensor *w_gate, *w_up, *w_down; /* gate/up: [dim, n_ff], down: [n_ff, dim] */
    const sqz_tensor *bq, *bk, *bv;          /* [n_head*head_dim], [kv width] ×2; NULL without attn_bias */
    const sqz_tensor *q_norm, *k_norm;       /* [head_dim]; NULL without qk_norm */
} sqz_layer;

typedef enum sqz_model_source { SQZ_SRC_HF = 1, SQZ_SRC_GGUF = 2 } sqz_model_source;

typedef struct sqz_model {
    sqz_llama_config cfg;
    const sqz_tensor *tok_embd;  /* [dim, n_vocab] */
    const sqz_tensor *out_norm;  /* [dim] */
    const sqz_tensor *output;    /* [dim, n_vocab]; == tok_embd when tied */
    sqz_layer *layers;           /* n_layer */
    sqz_tokenizer *tok;          /* NULL when the model has none (load with need_tokenizer = 0) */
    int source;                  /* sqz_model_source */
    char *path;
    sqz_hf hf;                   /* when source == SQZ_SRC_HF */
    sqz_gguf gguf;               /* when source == SQZ_SRC_GGUF */
    /* SQZ_ACT_LLAMACPP: before each product with a quantized weight, round the
     * activations as llama.cpp's CPU backend does (to Q8_0 blocks for Q4_0/Q5_0/Q8_0/
     * IQ4_NL weights, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants, F16 for F16 weights),
     * so sqz reproduces llama.cpp's numbers on a file; SQZ_ACT_EXACT (0, the default):
     * f32 activations. Set by the caller after loading. */
    int act_rounding;
} sqz_model;

enum { SQZ_ACT_EXACT = 0, SQZ_ACT_LLAMACPP = 1 };

/* Loads a Hugging Face folder or a .gguf file. Checks every tensor's presence, type and
 * shape against the config. need_tokenizer: fail when no tokenizer is found (otherwise
 * m->tok stays NULL). */
int sqz_model_load(sqz_model *m, const char *path, int need_tokenizer, sqz_err *err);
void sqz_model_free(sqz_model *m);
/* Number of parameters in all weight tensors (tied output counted once). */
int64_t sqz_model_n_params(const sqz_model *m);

/* Runs the model on n_tokens tokens at positions 0..n_tokens-1 (one causal sequence) and
 * writes logits for positions [logits_from, n_tokens) into logits
 * ((n_tokens - logits_from) * n_vocab floats, row-major). pool may be NULL. */
int sqz_forward(const sqz_model *m, sqz_pool *pool, const int32_t *tokens, int64_t n_tokens,
                int64_t logits_from, float *logits, sqz_err *err);


/* ---- the forward pass one layer at a time (calibration, sequential quantization) ----
 * sqz_forward is embed + every layer + head through the same code. */

/* Where a hook sees the input of a group of linear layers, [T, width] row-major. */
typedef enum sqz_fwd_site {
    SQZ_SITE_ATTN_IN = 0,     /* normed input of q, k, v: width dim */
    SQZ_SITE_ATTN_O_IN = 1,   /* attention output, input of o: width n_head * head_dim */
    SQZ_SITE_FFN_IN = 2,      /* normed input of gate, up: width dim */
    SQZ_SITE_FFN_DOWN_IN = 3, /* silu(gate) * up, input of down: width n_ff */
    SQZ_SITE_COUNT = 4
} sqz_fwd_site;

/* Called from the calling thread (the pool is idle); returns SQZ_OK, SQZ_ERR (err set) or
 * SQZ_FWD_STOP: the caller has seen what it needs, and the layer stops there (x is left
 * as it came in; sqz_forward_layer then returns SQZ_OK). */
#define SQZ_FWD_STOP 2
typedef int (*sqz_fwd_hook)(void *ctx, int layer, int site, const float *x, int64_t n_tokens, int64_t width,
                            sqz_err *err);

/* out[n] = x / sqrt(mean(x²) + eps) · w, the sum of squares in double, exactly as the
 * forward pass normalizes (out may be x). */
void sqz_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* x[n_tokens, dim] = the embeddings of tokens. */
int sqz_forward_embed(const sqz_model *m, const int32_t *tokens, int64_t n_tokens, float *x, sqz_err *err);
/* Runs block `layer` on the residual stream x[n_tokens, dim] in place (one causal
 * sequence at positions 0..n_tokens-1). hook may be NULL; a hook error stops the layer,
 * as does SQZ_FWD_STOP (without an error, x unchanged). */
int sqz_forward_layer(const sqz_model *m, sqz_pool *pool, int layer, float *x, int64_t n_tokens, sqz_fwd_hook hook,
                      void *hook_ctx, sqz_err *err);

/* A workspace for layer-by-layer passes (calibration, GPTQ): the activations of up to
 * max_tokens tokens, made once, and the dequantized weights of the layer it last ran, so
 * that running one layer over many windows dequantizes its weights once. A weight is
 * known by its tensor's address and data pointer: a caller that gives a tensor struct
 * other data at the same address (or frees and reallocates it) calls sqz_fwd_ws_forget
 * first, which also gives their memory back (a layer's f32 weights: 185 MB on a 1.5B
 * model). sqz_forward_layer_ws is sqz_forward_layer through the workspace; m may be any
 * model of the shapes it was made for (a quantized view of the same model). */
typedef struct sqz_fwd_ws sqz_fwd_ws;
int sqz_fwd_ws_create(const sqz_model *m, sqz_pool *pool, int64_t max_tokens, sqz_fwd_ws **out, sqz_err *err);
void sqz_fwd_ws_free(sqz_fwd_ws *ws);
void sqz_fwd_ws_forget(sqz_fwd_ws *ws);
int sqz_forward_layer_ws(sqz_fwd_ws *ws, const sqz_model *m, int layer, float *x, int64_t n_tokens,
                         sqz_fwd_hook hook, void *hook_ctx, sqz_err *err);

/* Block `layer` of m as a backend's block descriptor (sqz/backend.h, sqz_block_pass):
 * shapes from the config, every weight an f32 copy in one buffer *buf (malloc'd, the
 * caller's; free it once the block is loaded), dequantized on pool's threads (NULL: the
 * caller's; the same bytes either way). */
int sqz_block_desc_f32(const sqz_model *m, int layer, sqz_pool *pool, sqz_block_desc *d, float **buf, sqz_err *err);
/* Every row of t as f32 into dst (nelements floats), rows spread over pool's threads
 * (NULL: the caller's); the same bytes as sqz_tensor_rows_f32 of the whole tensor. */
int sqz_tensor_f32_pool(sqz_pool *pool, const sqz_tensor *t, float *dst, sqz_err *err);
/* Block `layer` of m loaded into a block pass (sqz_block_desc_f32, then
 * sqz_block_pass_load; the f32 copies freed once they are on the device). */
int sqz_block_load_layer(sqz_block_pass *p, const sqz_model *m, int layer, sqz_pool *pool, sqz_err *err);
/* The shapes of m's widest block (most heads, kv heads, FFN width over its layers; no
 * weights): what a block pass that runs every layer of m is opened with. */
void sqz_block_desc_widest(const sqz_model *m, sqz_block_desc *w);

/* Multiply-adds × 2 of the dense products of block `layer` on one causal window of T
 * tokens (the seven linears, and QKᵀ and PV over the T(T+1)/2 visible pairs per head);
 * layer -1: the output head on T positions. For stage accounting (sqz_stage_times). */
double sqz_forward_flops(const sqz_model *m, int layer, int64_t T);

/* ---- GGUF metadata of a model (src/model/gguf_meta.c), for the writers above model */

/* Writes the GGUF metadata of m into w: general.*, llama.* hyper-parameters and the
 * tokenizer (tokenizer.ggml.*). A GGUF source has its key/values copied (except the
 * file type, quantization version and alignment, which describe the new file); a
 * Hugging Face source has them built from its config and tokenizer. A model without a
 * tokenizer gets tokenizer.ggml.model "no_vocab". file_type: llama.cpp's ftype id. */
int sqz_model_write_gguf_meta(const sqz_model *m, sqz_gguf_writer *w, int file_type, sqz_err *err);
/* The same for m with per-layer shapes changed (a pruned model, n_layer values each):
 * architecture "deci" when a layer lacks a block or differs from layer 0 (always for
 * qwen2; an error for qwen3, which deci cannot express), else the source's;
 * the source architecture's keys are renamed to it, the per-layer counts written as
 * arrays, and key_length/value_length always set. */
int sqz_model_write_gguf_meta_shapes(const sqz_model *m, const int *n_head, const int *n_head_kv, const int *n_ff,
                                     sqz_gguf_writer *w, int file_type, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

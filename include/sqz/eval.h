/* Evaluation: perplexity under the two protocols of DESIGN.md §10.
 *  - GPTQ: tokens (BOS once at the start) split into non-overlapping windows of ctx;
 *    every token but the first of each window is scored.
 *  - llama.cpp (as llama-perplexity does it): windows of ctx whose first token is
 *    replaced by BOS when the vocab adds one; only the second half of each window is
 *    scored.
 * With a base model (sqz_perplexity_kl) the base runs on exactly the same windows and
 * every scored position also gives KL(p_base ‖ q_model), as llama-perplexity
 * --kl-divergence does. */
#ifndef SQZ_EVAL_H
#define SQZ_EVAL_H

#include <stdint.h>

#include "sqz/core.h"
#include "sqz/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sqz_ppl_protocol { SQZ_PPL_GPTQ = 0, SQZ_PPL_LLAMACPP = 1 } sqz_ppl_protocol;

typedef struct sqz_ppl_opts {
    int64_t ctx;        /* window length in tokens */
    int protocol;       /* sqz_ppl_protocol */
    int64_t max_windows; /* 0 = all */
    int show_progress;  /* progress bar on a terminal */
} sqz_ppl_opts;

typedef struct sqz_ppl_result {
    double ppl;
    double nll_mean;
    double nll_stderr;  /* standard error of the mean NLL */
    int64_t n_tokens;   /* tokens in the text */
    int64_t n_windows;
    int64_t n_scored;
    double seconds;
    double tokens_per_s; /* tokens run through the model(s) per second (both with a base) */
} sqz_ppl_result;

/* Per scored position t: KL_t = Σ_i p_i log(p_i / q_i) in nats, p = softmax of the
 * base's logits, q = the model's, over the whole vocabulary, in double. Percentiles are
 * llama-perplexity's: sorted values interpolated linearly at f·(n−1). */
typedef struct sqz_kl_result {
    double kl_mean, kl_stderr; /* mean KL per scored token and its standard error */
    double kl_median, kl_p90, kl_p99, kl_max;
    double same_top;        /* fraction of scored positions whose argmax (first maximum) agrees */
    double same_top_stderr; /* sqrt(f(1-f)/(n-1)) */
    double base_ppl, base_nll_mean, base_nll_stderr; /* the base's perplexity on the same tokens */
    int64_t n_scored;
} sqz_kl_result;

int sqz_perplexity(const sqz_model *m, sqz_pool *pool, const int32_t *tokens, int64_t n_tokens,
                   const sqz_ppl_opts *opts, sqz_ppl_result *res, sqz_err *err);

/* Perplexity of m (into res, as sqz_perplexity) and, when base is not NULL, the KL
 * divergence from base (into kl): base runs on the same windows (BOS, when the llama.cpp
 * protocol puts one, is m's) and the same positions are scored. Fails when the two
 * n_vocab differ (the message names base->path and the field). Memory: one window's
 * logits of each model and one double per scored token. kl may be NULL without a base. */
int sqz_perplexity_kl(const sqz_model *m, const sqz_model *base, sqz_pool *pool, const int32_t *tokens,
                      int64_t n_tokens, const sqz_ppl_opts *opts, sqz_ppl_result *res, sqz_kl_result *kl,
                      sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

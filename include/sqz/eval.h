/* Evaluation: perplexity under the two protocols of DESIGN.md §10.
 *  - GPTQ: tokens (BOS once at the start) split into non-overlapping windows of ctx;
 *    every token but the first of each window is scored.
 *  - llama.cpp (as llama-perplexity does it): windows of ctx whose first token is
 *    replaced by BOS when the vocab adds one; only the second half of each window is
 *    scored. */
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
    double tokens_per_s; /* tokens run through the model per second */
} sqz_ppl_result;

int sqz_perplexity(const sqz_model *m, sqz_pool *pool, const int32_t *tokens, int64_t n_tokens,
                   const sqz_ppl_opts *opts, sqz_ppl_result *res, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

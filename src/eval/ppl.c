/* Perplexity under the GPTQ and llama.cpp protocols (DESIGN.md §10).
 *
 * GPTQ: the tokens (BOS once at the start, added by the caller's tokenization) are cut
 * into n_tokens / ctx windows; in each window, the logits at positions 0..ctx-2 score the
 * tokens at 1..ctx-1.
 * llama.cpp: as llama-perplexity's perplexity(): chunk i covers tokens [i·ctx, (i+1)·ctx)
 * with its first token replaced by BOS when the vocab adds one; logits at positions
 * first..ctx-2 (first = ctx/2) score tokens first+1..ctx-1. llama-perplexity refuses
 * texts shorter than 2·ctx tokens, and so do we. */
#include "sqz/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* -log softmax(logits)[target], in double, max subtracted first. */
static double token_nll(const float *logits, int64_t n_vocab, int32_t target) {
    float mx = logits[0];
    for (int64_t i = 1; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    return log(sum) - ((double)logits[target] - mx);
}

int sqz_perplexity(const sqz_model *m, sqz_pool *pool, const int32_t *tokens, int64_t n_tokens,
                   const sqz_ppl_opts *opts, sqz_ppl_result *res, sqz_err *err) {
    memset(res, 0, sizeof *res);
    int64_t ctx = opts->ctx, V = m->cfg.n_vocab;
    int llamacpp = opts->protocol == SQZ_PPL_LLAMACPP;
    if (opts->protocol != SQZ_PPL_GPTQ && !llamacpp)
        return sqz_fail(err, "perplexity: unknown protocol %d", opts->protocol);
    if (ctx < 2) return sqz_fail(err, "perplexity: ctx %lld: expected at least 2", (long long)ctx);
    if (n_tokens < ctx)
        return sqz_fail(err, "perplexity: the text has %lld tokens, fewer than one window of ctx %lld", (long long)n_tokens,
                        (long long)ctx);
    if (llamacpp && n_tokens < 2 * ctx)
        return sqz_fail(err, "perplexity: the llama.cpp protocol needs at least 2*ctx = %lld tokens, the text has %lld",
                        (long long)(2 * ctx), (long long)n_tokens);
    int bos = -1;
    if (llamacpp) {
        /* llama-perplexity puts BOS first when the vocab adds one */
        const sqz_vocab *voc = m->tok ? sqz_tok_vocab(m->tok) : NULL;
        if (voc ? voc->add_bos : m->cfg.bos_id >= 0) bos = voc ? voc->bos_id : m->cfg.bos_id;
    }
    int64_t n_windows = n_tokens / ctx;
    if (opts->max_windows > 0 && opts->max_windows < n_windows) n_windows = opts->max_windows;
    int64_t first = llamacpp ? ctx / 2 : 0; /* first position whose logits score a token */

    float *logits = NULL;
    int32_t *win = malloc((size_t)ctx * sizeof *win);
    size_t nl;
    if (!win || sqz_mul_size((size_t)(ctx - first), (size_t)V, &nl) || !(logits = malloc(nl * sizeof(float)))) {
        free(win);
        return sqz_fail(err, "perplexity: out of memory for ctx %lld", (long long)ctx);
    }
    sqz_progress prog;
    sqz_progress_begin(&prog, "perplexity", n_windows * ctx, "tok", 0);
    if (!opts->show_progress) prog.out = NULL;
    double t0 = sqz_now();
    /* sum and sum of squares of the NLL, in double */
    double nll = 0.0, nll2 = 0.0;
    int64_t count = 0;
    int rc = SQZ_OK;
    for (int64_t w = 0; w < n_windows; w++) {
        memcpy(win, tokens + w * ctx, (size_t)ctx * sizeof *win);
        if (bos >= 0) win[0] = bos;
        if (sqz_forward(m, pool, win, ctx, first, logits, err)) {
            rc = SQZ_ERR;
            break;
        }
        for (int64_t p = first; p < ctx - 1; p++) {
            double v = token_nll(logits + (p - first) * V, V, tokens[w * ctx + p + 1]);
            nll += v;
            nll2 += v * v;
            count++;
        }
        char extra[64];
        snprintf(extra, sizeof extra, "ppl %.4f", exp(nll / (double)count));
        sqz_progress_update(&prog, (w + 1) * ctx, extra);
    }
    sqz_progress_end(&prog);
    free(win);
    free(logits);
    if (rc) return SQZ_ERR;
    res->seconds = sqz_now() - t0;
    res->n_tokens = n_tokens;
    res->n_windows = n_windows;
    res->n_scored = count;
    res->nll_mean = nll / (double)count;
    res->ppl = exp(res->nll_mean);
    double var = nll2 / (double)count - res->nll_mean * res->nll_mean;
    res->nll_stderr = var > 0 && count > 1 ? sqrt(var / (double)(count - 1)) : 0.0;
    res->tokens_per_s = res->seconds > 0 ? (double)(n_windows * ctx) / res->seconds : 0.0;
    return SQZ_OK;
}

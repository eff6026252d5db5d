/* Perplexity under the GPTQ and llama.cpp protocols (DESIGN.md §10), and the KL
 * divergence from a base model over the same windows.
 *
 * GPTQ: the tokens (BOS once at the start, added by the caller's tokenization) are cut
 * into n_tokens / ctx windows; in each window, the logits at positions 0..ctx-2 score the
 * tokens at 1..ctx-1.
 * llama.cpp: as llama-perplexity's perplexity(): chunk i covers tokens [i·ctx, (i+1)·ctx)
 * with its first token replaced by BOS when the vocab adds one; logits at positions
 * first..ctx-2 (first = ctx/2) score tokens first+1..ctx-1. llama-perplexity refuses
 * texts shorter than 2·ctx tokens, and so do we.
 *
 * KL: both models run on each window in turn (one window's logits of each are held);
 * every scored position gives KL(p_base ‖ q_model) in double, kept for the percentiles
 * (one double per scored token, as llama-perplexity keeps one float). */
#include "sqz/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One window's scoring: positions are independent, so they run on the pool, each
 * writing its own slot; the sums are then taken in position order (bit-identical for
 * any thread count). */
typedef struct score_job {
    const float *lq, *lp;   /* model / base logits of the scored positions, [n][V] */
    const int32_t *targets; /* token scored by each position */
    int64_t V;
    double *nll, *nll_base, *kl; /* per position; the last two only with a base */
    unsigned char *same_top;
} score_job;

/* max and first argmax of a logit row */
static float row_max(const float *x, int64_t n, int32_t *arg) {
    float mx = x[0];
    int32_t im = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > mx) {
            mx = x[i];
            im = (int32_t)i;
        }
    *arg = im;
    return mx;
}

/* KL(p ‖ q) = Σ p_i (log p_i − log q_i) with log p_i = b_i − mb − log Sb and
 * log q_i = a_i − lse_q: one pass gives Sb = Σ e_i, e_i = exp(b_i − mb), and
 * T = Σ e_i (b_i − a_i); since Σ e_i / Sb = 1, KL = T / Sb − (mb + log Sb) + lse_q.
 * Everything in double, over the whole vocabulary. llama-perplexity stores the base's
 * log-probabilities in 16 bits and drops base probabilities below e^-16; on the same
 * logits (SmolLM2 Q4_0 against Q4_1, 1020 tokens) its algorithm gives a mean 0.1% above
 * this one, at most 2e-3 nats apart on a token, and the same top-1 agreement. For
 * identical logits T = 0 and the two log-sum-exps are the same operations: KL is
 * exactly 0. */
static void score_task(void *ctx, int64_t begin, int64_t end, int thread) {
    (void)thread;
    const score_job *j = ctx;
    int64_t V = j->V;
    for (int64_t p = begin; p < end; p++) {
        const float *a = j->lq + p * V;
        int32_t top_q;
        float mq = row_max(a, V, &top_q);
        double sq = 0.0;
        for (int64_t i = 0; i < V; i++) sq += exp((double)a[i] - mq);
        j->nll[p] = log(sq) - ((double)a[j->targets[p]] - mq);
        if (!j->lp) continue;
        const float *b = j->lp + p * V;
        int32_t top_p;
        float mp = row_max(b, V, &top_p);
        double sp = 0.0, t = 0.0;
        for (int64_t i = 0; i < V; i++) {
            double e = exp((double)b[i] - mp);
            sp += e;
            t += e * ((double)b[i] - (double)a[i]);
        }
        double lse_q = (double)mq + log(sq), lse_p = (double)mp + log(sp);
        j->nll_base[p] = log(sp) - ((double)b[j->targets[p]] - mp);
        j->kl[p] = t / sp - lse_p + lse_q;
        j->same_top[p] = top_p == top_q;
    }
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* llama-perplexity's percentile of sorted values: linear interpolation at f·(n−1). */
static double percentile(const double *v, int64_t n, double f) {
    if (f <= 0) return v[0];
    if (f >= 1) return v[n - 1];
    double pos = f * (double)(n - 1);
    int64_t i = (int64_t)pos;
    double fr = pos - (double)i;
    return (1 - fr) * v[i] + fr * v[i + 1 < n ? i + 1 : n - 1];
}

/* mean and standard error of the mean from a sum and a sum of squares */
static void mean_stderr(double sum, double sum2, int64_t n, double *mean, double *se) {
    *mean = sum / (double)n;
    double var = sum2 / (double)n - *mean * *mean;
    *se = var > 0 && n > 1 ? sqrt(var / (double)(n - 1)) : 0.0;
}

int sqz_perplexity_kl(const sqz_model *m, const sqz_model *base, sqz_pool *pool, const int32_t *tokens,
                      int64_t n_tokens, const sqz_ppl_opts *opts, sqz_ppl_result *res, sqz_kl_result *kl,
                      sqz_err *err) {
    memset(res, 0, sizeof *res);
    if (kl) memset(kl, 0, sizeof *kl);
    if (base && !kl) return sqz_fail(err, "perplexity: a base model needs a KL result");
    int64_t ctx = opts->ctx, V = m->cfg.n_vocab;
    if (base && base->cfg.n_vocab != m->cfg.n_vocab)
        return sqz_fail(err, "%s: n_vocab: %d, expected %d (as %s)", base->path ? base->path : "base model",
                        base->cfg.n_vocab, m->cfg.n_vocab, m->path ? m->path : "the model");
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
    int64_t n_pos = ctx - 1 - first;        /* scored positions per window */

    /* one window's logits of each model, per-position scores, and every KL value */
    size_t nl, nkl = 0;
    float *lq = NULL, *lp = NULL;
    int32_t *win = malloc((size_t)ctx * sizeof *win);
    double *pos = malloc((size_t)ctx * 3 * sizeof *pos), *kl_all = NULL;
    unsigned char *same = malloc((size_t)ctx);
    int oom = !win || !pos || !same || sqz_mul_size((size_t)(ctx - first), (size_t)V, &nl) ||
              !(lq = malloc(nl * sizeof(float)));
    if (!oom && base)
        oom = sqz_mul_size((size_t)n_windows, (size_t)n_pos, &nkl) || !(lp = malloc(nl * sizeof(float))) ||
              !(kl_all = malloc((nkl ? nkl : 1) * sizeof *kl_all));
    if (oom) {
        free(win), free(pos), free(same), free(lq), free(lp), free(kl_all);
        return sqz_fail(err, "perplexity: out of memory for ctx %lld%s", (long long)ctx,
                        base ? " (two models' logits and the KL values)" : "");
    }
    score_job job = {lq, lp, NULL, V, pos, pos + ctx, pos + 2 * ctx, same};

    sqz_progress prog;
    sqz_progress_begin(&prog, base ? "perplexity + KL" : "perplexity", n_windows * ctx, "tok", 0);
    if (!opts->show_progress) prog.out = NULL;
    double t0 = sqz_now();
    /* sums of the NLL, the base's NLL and the KL and of their squares, in double */
    double nll = 0.0, nll2 = 0.0, bnll = 0.0, bnll2 = 0.0, kls = 0.0, kls2 = 0.0;
    int64_t count = 0, n_same = 0;
    int rc = SQZ_OK;
    for (int64_t w = 0; w < n_windows; w++) {
        memcpy(win, tokens + w * ctx, (size_t)ctx * sizeof *win);
        if (bos >= 0) win[0] = bos;
        if (sqz_forward(m, pool, win, ctx, first, lq, err) || (base && sqz_forward(base, pool, win, ctx, first, lp, err))) {
            rc = SQZ_ERR;
            break;
        }
        job.targets = tokens + w * ctx + first + 1;
        sqz_pool_for(pool, n_pos, 8, score_task, &job);
        for (int64_t p = 0; p < n_pos; p++) {
            double v = job.nll[p];
            nll += v;
            nll2 += v * v;
            if (base) {
                double b = job.nll_base[p], k = job.kl[p];
                bnll += b;
                bnll2 += b * b;
                kls += k;
                kls2 += k * k;
                n_same += job.same_top[p];
                kl_all[count] = k;
            }
            count++;
        }
        char extra[96];
        if (base) snprintf(extra, sizeof extra, "ppl %.4f KL %.5f", exp(nll / (double)count), kls / (double)count);
        else snprintf(extra, sizeof extra, "ppl %.4f", exp(nll / (double)count));
        sqz_progress_update(&prog, (w + 1) * ctx, extra);
    }
    sqz_progress_end(&prog);
    free(win), free(pos), free(same), free(lq), free(lp);
    if (rc) {
        free(kl_all);
        return SQZ_ERR;
    }
    res->seconds = sqz_now() - t0;
    res->n_tokens = n_tokens;
    res->n_windows = n_windows;
    res->n_scored = count;
    mean_stderr(nll, nll2, count, &res->nll_mean, &res->nll_stderr);
    res->ppl = exp(res->nll_mean);
    res->tokens_per_s = res->seconds > 0 ? (double)(n_windows * ctx * (base ? 2 : 1)) / res->seconds : 0.0;
    if (base) {
        kl->n_scored = count;
        mean_stderr(bnll, bnll2, count, &kl->base_nll_mean, &kl->base_nll_stderr);
        kl->base_ppl = exp(kl->base_nll_mean);
        mean_stderr(kls, kls2, count, &kl->kl_mean, &kl->kl_stderr);
        qsort(kl_all, (size_t)count, sizeof *kl_all, cmp_double);
        kl->kl_median = percentile(kl_all, count, 0.5);
        kl->kl_p90 = percentile(kl_all, count, 0.90);
        kl->kl_p99 = percentile(kl_all, count, 0.99);
        kl->kl_max = kl_all[count - 1];
        kl->same_top = (double)n_same / (double)count;
        kl->same_top_stderr = count > 1 ? sqrt(kl->same_top * (1 - kl->same_top) / (double)(count - 1)) : 0.0;
    }
    free(kl_all);
    return SQZ_OK;
}

int sqz_perplexity(const sqz_model *m, sqz_pool *pool, const int32_t *tokens, int64_t n_tokens,
                   const sqz_ppl_opts *opts, sqz_ppl_result *res, sqz_err *err) {
    return sqz_perplexity_kl(m, NULL, pool, tokens, n_tokens, opts, res, NULL, err);
}

/* sqz: the command-line program. Each subcommand is a row of the COMMANDS table (name,
 * function, one-line summary, full help); adding one is adding a row.
 *
 * Exit status: 0 on success, 1 on an error (one line "sqz: error: <message>" on stderr),
 * 2 on a usage error (unknown flag, missing or invalid argument). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "calib_args.h"
#include "cli.h"
#include "sqz/core.h"
#include "sqz/eval.h"
#include "sqz/model.h"
#include "sqz/tok.h"

#define SQZ_VERSION "0.1.0"

/* ---------------------------------------------------------------- sqz info */

static const char HELP_INFO[] =
    "usage: sqz info MODEL [--json OUT]\n"
    "\n"
    "Describes a model (a Hugging Face folder or a .gguf file): architecture, source,\n"
    "per-layer shapes (heads, key/value heads, head_dim, FFN width), parameter count,\n"
    "tensor types (count and bytes per type), tokenizer, RoPE layout, context length.\n"
    "\n"
    "  --json OUT   also write the description as JSON to OUT\n";

typedef struct {
    int64_t count;
    double bytes;
} type_stat;

static void add_tensor_stat(type_stat *st, const sqz_tensor *t) {
    if (!t || t->type < 0 || t->type >= SQZ_TYPE_COUNT) return;
    st[t->type].count++;
    st[t->type].bytes += (double)t->nbytes;
}

static int cmd_info(args *a) {
    const char *model = NULL, *json = NULL;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (s[0] == '-' && s[1]) {
            return usage_fail(a->cmd, "unknown option '%s'", s);
        } else if (!model) {
            model = s;
        } else {
            return usage_fail(a->cmd, "unexpected argument '%s'", s);
        }
    }
    if (!model) return usage_fail(a->cmd, "%s", "missing MODEL");

    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, model, 0, &err)) return fail(err.msg);
    const sqz_llama_config *c = &m.cfg;
    const char *arch = sqz_arch_name(c->arch);
    if (m.source == SQZ_SRC_GGUF) {
        const sqz_gguf_kv *kv = sqz_gguf_find(&m.gguf, "general.architecture");
        if (kv && kv->type == SQZ_GGUF_STRING) arch = kv->str;
    }
    type_stat st[SQZ_TYPE_COUNT];
    memset(st, 0, sizeof st);
    add_tensor_stat(st, m.tok_embd);
    add_tensor_stat(st, m.out_norm);
    if (m.output != m.tok_embd) add_tensor_stat(st, m.output);
    for (int l = 0; l < c->n_layer; l++) {
        const sqz_layer *L = &m.layers[l];
        const sqz_tensor *ts[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->ffn_norm, L->w_gate, L->w_up, L->w_down,
                                  L->bq, L->bk, L->bv, L->q_norm, L->k_norm};
        for (int i = 0; i < 14; i++)
            if (ts[i]) add_tensor_stat(st, ts[i]);
    }
    int64_t n_params = sqz_model_n_params(&m);
    const sqz_vocab *voc = m.tok ? sqz_tok_vocab(m.tok) : NULL;
    const char *rope = c->rope_mode == SQZ_ROPE_HALF ? "half (rotate_half: Hugging Face, GGUF qwen2/qwen3)"
                                                     : "adjacent (GGUF llama)";
    const char *src = m.source == SQZ_SRC_HF ? "hf" : "gguf";

    printf("model:        %s\n", model);
    printf("source:       %s\n", m.source == SQZ_SRC_HF ? "Hugging Face folder (safetensors)" : "GGUF file");
    printf("architecture: %s\n", arch);
    printf("parameters:   %lld (%.1f M)\n", (long long)n_params, (double)n_params / 1e6);
    printf("hidden:       %d, layers %d, vocab %d, context length %d\n", c->dim, c->n_layer, c->n_vocab, c->n_ctx_train);
    printf("rope:         %s, theta %g%s; rms norm eps %g; tied embeddings: %s\n", rope, (double)c->rope_theta,
           c->rope_freqs ? ", llama3 frequency factors" : "", (double)c->norm_eps, c->tie_embeddings ? "yes" : "no");
    if (c->attn_bias || c->qk_norm)
        printf("attention:    %s%s%s\n", c->attn_bias ? "q/k/v biases" : "", c->attn_bias && c->qk_norm ? ", " : "",
               c->qk_norm ? "per-head q/k RMSNorm" : "");
    if (m.tok)
        printf("tokenizer:    %s, vocab %d, bos %d, eos %d\n", sqz_tok_kind_name(m.tok), voc->n_tokens, voc->bos_id,
               voc->eos_id);
    else
        printf("tokenizer:    none\n");
    /* runs of identical layers on one line */
    for (int l = 0; l < c->n_layer;) {
        int e = l + 1;
        while (e < c->n_layer && c->layer_n_head[e] == c->layer_n_head[l] &&
               c->layer_n_head_kv[e] == c->layer_n_head_kv[l] && c->layer_n_ff[e] == c->layer_n_ff[l])
            e++;
        char range[32];
        if (e - l > 1) snprintf(range, sizeof range, "layers %d-%d:", l, e - 1);
        else snprintf(range, sizeof range, "layer %d:", l);
        printf("%-14s heads %d, kv heads %d, head_dim %d, ffn %d\n", range, c->layer_n_head[l], c->layer_n_head_kv[l],
               c->head_dim, c->layer_n_ff[l]);
        l = e;
    }
    printf("tensor types:\n");
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
        if (!st[t].count) continue;
        const sqz_type_traits *tr = sqz_type_get(t);
        printf("  %-6s %5lld tensors, %.0f bytes (%.2f MiB)\n", tr ? tr->name : "?", (long long)st[t].count, st[t].bytes,
               st[t].bytes / 1048576.0);
    }

    int rc = 0;
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "source", src);
        cJSON_AddStringToObject(root, "architecture", arch);
        cJSON_AddNumberToObject(root, "n_params", (double)n_params);
        cJSON_AddNumberToObject(root, "n_vocab", c->n_vocab);
        cJSON_AddNumberToObject(root, "dim", c->dim);
        cJSON_AddNumberToObject(root, "n_layer", c->n_layer);
        cJSON_AddNumberToObject(root, "head_dim", c->head_dim);
        cJSON_AddNumberToObject(root, "n_ctx_train", c->n_ctx_train);
        cJSON_AddNumberToObject(root, "rope_theta", c->rope_theta);
        cJSON_AddStringToObject(root, "rope_mode", c->rope_mode == SQZ_ROPE_HALF ? "half" : "adjacent");
        cJSON_AddBoolToObject(root, "rope_freq_factors", c->rope_freqs != NULL);
        cJSON_AddBoolToObject(root, "attn_bias", c->attn_bias);
        cJSON_AddBoolToObject(root, "qk_norm", c->qk_norm);
        cJSON_AddNumberToObject(root, "norm_eps", c->norm_eps);
        cJSON_AddBoolToObject(root, "tied_embeddings", c->tie_embeddings);
        cJSON *layers = cJSON_AddArrayToObject(root, "layers");
        for (int l = 0; l < c->n_layer; l++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "n_head", c->layer_n_head[l]);
            cJSON_AddNumberToObject(o, "n_head_kv", c->layer_n_head_kv[l]);
            cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
            cJSON_AddNumberToObject(o, "n_ff", c->layer_n_ff[l]);
            cJSON_AddItemToArray(layers, o);
        }
        cJSON *types = cJSON_AddObjectToObject(root, "tensor_types");
        for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
            if (!st[t].count) continue;
            const sqz_type_traits *tr = sqz_type_get(t);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "count", (double)st[t].count);
            cJSON_AddNumberToObject(o, "bytes", st[t].bytes);
            cJSON_AddItemToObject(types, tr ? tr->name : "?", o);
        }
        if (m.tok) {
            cJSON *tk = cJSON_AddObjectToObject(root, "tokenizer");
            cJSON_AddStringToObject(tk, "kind", sqz_tok_kind_name(m.tok));
            cJSON_AddNumberToObject(tk, "n_vocab", voc->n_tokens);
            cJSON_AddNumberToObject(tk, "bos_id", voc->bos_id);
            cJSON_AddNumberToObject(tk, "eos_id", voc->eos_id);
        } else {
            cJSON_AddNullToObject(root, "tokenizer");
        }
        rc = write_json(json, root);
        cJSON_Delete(root);
    }
    sqz_model_free(&m);
    return rc;
}

/* ---------------------------------------------------------------- sqz ppl */

static const char HELP_PPL[] =
    "usage: sqz ppl MODEL TEXT_FILE --ctx N [--protocol gptq|llamacpp] [--chunks K]\n"
    "               [--numerics exact|llamacpp] [--kl-base SRC] [--threads T]\n"
    "               [--json OUT]\n"
    "\n"
    "Perplexity of MODEL on a UTF-8 text file, tokenized with the model's tokenizer,\n"
    "or on a .json array of token ids taken as they are (models without a tokenizer).\n"
    "  --ctx N        window length in tokens (required)\n"
    "  --protocol P   gptq (default): text tokenized once (BOS first if the vocab adds\n"
    "                 one), non-overlapping windows,\n"
    "                 every token but the first of each window scored;\n"
    "                 llamacpp: as llama-perplexity, first token of each window replaced\n"
    "                 by BOS when the vocab adds one, only the second half scored\n"
    "  --chunks K     use only the first K windows (default: all)\n"
    "  --numerics N   exact (default): f32 activations; llamacpp: round activations\n"
    "                 before each product with a quantized weight as llama.cpp's CPU\n"
    "                 backend does (8-bit blocks), to reproduce its numbers on a file\n"
    "  --kl-base SRC  also run SRC, a model with the same vocabulary (e.g. the\n"
    "                 unquantized one), on the same windows and report over the\n"
    "                 scored positions KL(p_SRC || q_MODEL) in nats (mean, median,\n"
    "                 90%, 99%, max), the fraction where both argmax agree (same\n"
    "                 top) and SRC's perplexity, as llama-perplexity --kl-divergence\n"
    "                 does; --numerics applies to both models\n"
    "  --threads T    worker threads (default: all CPUs)\n"
    "  --json OUT     also write the result as JSON to OUT\n";

/* --kl-base scores base and model on the same token ids: the vocabularies must agree in
 * size (the field llama-perplexity checks) and, when both carry a tokenizer, token by
 * token and in BOS (the llama.cpp protocol's first token is the model's BOS). */
static int check_same_vocab(const sqz_model *base, const char *base_path, const sqz_model *m, const char *model_path) {
    char msg[1400];
    if (base->cfg.n_vocab != m->cfg.n_vocab) {
        snprintf(msg, sizeof msg, "%s: n_vocab: %d, expected %d (as %s)", base_path, base->cfg.n_vocab,
                 m->cfg.n_vocab, model_path);
        return fail(msg);
    }
    if (!base->tok || !m->tok) return 0;
    const sqz_vocab *vb = sqz_tok_vocab(base->tok), *vm = sqz_tok_vocab(m->tok);
    if (vb->n_tokens != vm->n_tokens) {
        snprintf(msg, sizeof msg, "%s: tokenizer: %d tokens, expected %d (as %s)", base_path, vb->n_tokens,
                 vm->n_tokens, model_path);
        return fail(msg);
    }
    for (int32_t i = 0; i < vb->n_tokens; i++)
        if (strcmp(vb->tokens[i], vm->tokens[i])) {
            snprintf(msg, sizeof msg, "%s: tokenizer: token %d is '%.200s', expected '%.200s' (as %s)", base_path, i,
                     vb->tokens[i], vm->tokens[i], model_path);
            return fail(msg);
        }
    if (vb->bos_id != vm->bos_id) {
        snprintf(msg, sizeof msg, "%s: tokenizer: bos_id %d, expected %d (as %s)", base_path, vb->bos_id, vm->bos_id,
                 model_path);
        return fail(msg);
    }
    return 0;
}



static int cmd_ppl(args *a) {
    const char *model = NULL, *text_path = NULL, *json = NULL, *protocol = "gptq", *numerics = "exact";
    const char *kl_base = NULL;
    long long ctx = 0, chunks = 0, threads = 0;
    for (a->i = 0; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i], *v;
        if (!strcmp(s, "--json")) {
            if (!(json = opt_value(a))) return usage_fail(a->cmd, "%s needs a file name", s);
        } else if (!strcmp(s, "--protocol")) {
            if (!(protocol = opt_value(a))) return usage_fail(a->cmd, "%s needs gptq or llamacpp", s);
            if (strcmp(protocol, "gptq") && strcmp(protocol, "llamacpp"))
                return usage_fail(a->cmd, "--protocol '%s': expected gptq or llamacpp", protocol);
        } else if (!strcmp(s, "--numerics")) {
            if (!(numerics = opt_value(a))) return usage_fail(a->cmd, "%s needs exact or llamacpp", s);
            if (strcmp(numerics, "exact") && strcmp(numerics, "llamacpp"))
                return usage_fail(a->cmd, "--numerics '%s': expected exact or llamacpp", numerics);
        } else if (!strcmp(s, "--kl-base")) {
            if (kl_base) return usage_fail(a->cmd, "%s", "--kl-base given twice (one base model)");
            if (!(kl_base = opt_value(a))) return usage_fail(a->cmd, "%s needs a model (GGUF file or folder)", s);
        } else if (!strcmp(s, "--ctx")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1 << 24, &ctx))
                return usage_fail(a->cmd, "--ctx '%s': expected a positive number of tokens", v ? v : "");
        } else if (!strcmp(s, "--chunks")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1LL << 40, &chunks))
                return usage_fail(a->cmd, "--chunks '%s': expected a positive number", v ? v : "");
        } else if (!strcmp(s, "--threads")) {
            v = opt_value(a);
            if (parse_pos_int(v, 1024, &threads))
                return usage_fail(a->cmd, "--threads '%s': expected 1 to 1024", v ? v : "");
        } else if (s[0] == '-' && s[1]) {
            return usage_fail(a->cmd, "unknown option '%s'", s);
        } else if (!model) {
            model = s;
        } else if (!text_path) {
            text_path = s;
        } else {
            return usage_fail(a->cmd, "unexpected argument '%s'", s);
        }
    }
    if (!model) return usage_fail(a->cmd, "%s", "missing MODEL");
    if (!text_path) return usage_fail(a->cmd, "%s", "missing TEXT_FILE");
    if (!ctx) return usage_fail(a->cmd, "%s", "--ctx N is required");
    if (ctx < 2) return usage_fail(a->cmd, "--ctx %s: expected at least 2", "1");

    sqz_err err;
    char *text = NULL;
    size_t text_len = 0;
    int is_ids = is_token_ids_path(text_path), rc = 0;
    if (!is_ids && (rc = read_text(text_path, &text, &text_len))) return rc;
    sqz_model m;
    if (sqz_model_load(&m, model, !is_ids, &err)) {
        free(text);
        return fail(err.msg);
    }
    m.act_rounding = !strcmp(numerics, "llamacpp") ? SQZ_ACT_LLAMACPP : SQZ_ACT_EXACT;
    sqz_model base;
    memset(&base, 0, sizeof base);
    int have_base = 0;
    if (kl_base) {
        if (sqz_model_load(&base, kl_base, 0, &err)) {
            free(text);
            sqz_model_free(&m);
            return fail(err.msg);
        }
        have_base = 1;
        base.act_rounding = m.act_rounding;
        if ((rc = check_same_vocab(&base, kl_base, &m, model))) {
            free(text);
            sqz_model_free(&base);
            sqz_model_free(&m);
            return rc;
        }
    }
    sqz_ppl_opts opts = {ctx, !strcmp(protocol, "llamacpp") ? SQZ_PPL_LLAMACPP : SQZ_PPL_GPTQ, chunks, 1};
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    sqz_pool *pool = NULL;
    sqz_ppl_result res;
    sqz_kl_result kl;
    double t_tok = sqz_now();
    if (is_ids) { /* token ids as given: a BOS is the file's to include */
        if ((rc = read_token_ids(text_path, m.cfg.n_vocab, &ids, &n_ids, NULL, NULL))) goto out;
    } else {
        /* The text is tokenized once as the tokenizer does by default (as GPTQ's scripts
         * and llama-perplexity do): BOS at the start only when the vocab adds one. */
        int add_bos = sqz_tok_vocab(m.tok)->add_bos;
        if (sqz_tok_encode(m.tok, text, text_len, add_bos, &ids, &n_ids, &err)) {
            rc = fail(err.msg);
            goto out;
        }
    }
    t_tok = sqz_now() - t_tok;
    if (n_ids < ctx * (opts.protocol == SQZ_PPL_LLAMACPP ? 2 : 1)) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s: the text has %lld tokens, too few for --ctx %lld%s", text_path, (long long)n_ids,
                 ctx, opts.protocol == SQZ_PPL_LLAMACPP ? " with the llamacpp protocol (needs 2*ctx)" : "");
        rc = fail(msg);
        goto out;
    }
    if (!(pool = sqz_pool_create((int)threads, &err))) {
        rc = fail(err.msg);
        goto out;
    }
    if (sqz_perplexity_kl(&m, have_base ? &base : NULL, pool, ids, n_ids, &opts, &res, &kl, &err)) {
        rc = fail(err.msg);
        goto out;
    }
    printf("perplexity (protocol %s, ctx %lld): %.4f +/- %.4f\n", protocol, ctx, res.ppl, res.ppl * res.nll_stderr);
    printf("scored %lld tokens in %lld windows of %lld (text: %lld tokens)\n", (long long)res.n_scored,
           (long long)res.n_windows, ctx, (long long)res.n_tokens);
    if (have_base) {
        printf("kl-divergence base: %s (perplexity %.4f +/- %.4f)\n", kl_base, kl.base_ppl,
               kl.base_ppl * kl.base_nll_stderr);
        printf("mean KLD:   %.6f +/- %.6f  (KL(base || model), nats per scored token)\n", kl.kl_mean, kl.kl_stderr);
        printf("median KLD: %.6f\n", kl.kl_median);
        printf("90.0%% KLD:  %.6f\n", kl.kl_p90);
        printf("99.0%% KLD:  %.6f\n", kl.kl_p99);
        printf("max KLD:    %.6f\n", kl.kl_max);
        printf("same top:   %.3f +/- %.3f %%\n", 100.0 * kl.same_top, 100.0 * kl.same_top_stderr);
    }
    printf("speed: %.1f tokens/s (%d threads, %.2f s%s; tokenizing %.2f s)\n", res.tokens_per_s, sqz_pool_threads(pool),
           res.seconds, have_base ? ", both models" : "", t_tok);
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "text", text_path);
        cJSON_AddStringToObject(root, "protocol", protocol);
        cJSON_AddStringToObject(root, "numerics", numerics);
        cJSON_AddNumberToObject(root, "ctx", (double)ctx);
        cJSON_AddNumberToObject(root, "ppl", res.ppl);
        cJSON_AddNumberToObject(root, "nll_mean", res.nll_mean);
        cJSON_AddNumberToObject(root, "nll_stderr", res.nll_stderr);
        cJSON_AddNumberToObject(root, "n_tokens", (double)res.n_tokens);
        cJSON_AddNumberToObject(root, "n_windows", (double)res.n_windows);
        cJSON_AddNumberToObject(root, "n_scored", (double)res.n_scored);
        cJSON_AddNumberToObject(root, "seconds", res.seconds);
        cJSON_AddNumberToObject(root, "tokens_per_s", res.tokens_per_s);
        cJSON_AddNumberToObject(root, "threads", sqz_pool_threads(pool));
        if (have_base) {
            cJSON *k = cJSON_AddObjectToObject(root, "kl_base");
            cJSON_AddStringToObject(k, "model", kl_base);
            cJSON_AddNumberToObject(k, "ppl", kl.base_ppl);
            cJSON_AddNumberToObject(k, "nll_mean", kl.base_nll_mean);
            cJSON_AddNumberToObject(k, "nll_stderr", kl.base_nll_stderr);
            cJSON_AddNumberToObject(k, "kl_mean", kl.kl_mean);
            cJSON_AddNumberToObject(k, "kl_stderr", kl.kl_stderr);
            cJSON_AddNumberToObject(k, "kl_median", kl.kl_median);
            cJSON_AddNumberToObject(k, "kl_p90", kl.kl_p90);
            cJSON_AddNumberToObject(k, "kl_p99", kl.kl_p99);
            cJSON_AddNumberToObject(k, "kl_max", kl.kl_max);
            cJSON_AddNumberToObject(k, "same_top", kl.same_top);
            cJSON_AddNumberToObject(k, "same_top_stderr", kl.same_top_stderr);
            cJSON_AddNumberToObject(k, "n_scored", (double)kl.n_scored);
        } else {
            cJSON_AddNullToObject(root, "kl_base");
        }
        rc = write_json(json, root);
        cJSON_Delete(root);
    }
out:
    sqz_pool_free(pool);
    free(ids);
    free(text);
    if (have_base) sqz_model_free(&base);
    sqz_model_free(&m);
    return rc;
}

/* ---------------------------------------------------------------- command table */

typedef struct {
    const char *name;
    int (*fn)(args *a);
    const char *summary;
    const char *help;
} command;

static const command COMMANDS[] = {
    {"info", cmd_info, "describe a model (shapes, types, tokenizer)", HELP_INFO},
    {"ppl", cmd_ppl, "perplexity on a text file (GPTQ or llama.cpp protocol)", HELP_PPL},
    {"quantize", cmd_quantize, "quantize a model into a GGUF file (RTN or GPTQ, calibrated)", HELP_QUANTIZE},
    {"compress", cmd_compress, "mixed precision under a size budget from gradient sensitivities", HELP_COMPRESS},
    {"prune", cmd_prune, "remove attention heads and FFN channels, with least-squares compensation", HELP_PRUNE},
    {"sensitivity", cmd_sensitivity, "predicted loss change of every (tensor, type) option; --validate", HELP_SENSITIVITY},
    {"tune", cmd_tune, "tune a quantized file's row scales end to end (KL to its reference)", HELP_TUNE},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof COMMANDS[0]))

static const command *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(COMMANDS[i].name, name)) return &COMMANDS[i];
    return NULL;
}

static void print_usage(FILE *f) {
    fprintf(f, "usage: sqz COMMAND [ARGS]   (sqz help COMMAND, sqz COMMAND --help)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "  %-11s %s\n", "help", "help on a command");
    fprintf(f, "\noptions: --help, --version\n");
}

int main(int argc, char **argv) {
    sqz_blas_fix_kernels(argv);
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (is_help(name)) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) {
        printf("sqz %s\n", SQZ_VERSION);
        return 0;
    }
    if (!strcmp(name, "help")) {
        if (argc < 3) {
            print_usage(stdout);
            return 0;
        }
        const command *c = find_command(argv[2]);
        if (!c) {
            fprintf(stderr, "sqz: error: unknown command '%s' (see 'sqz --help')\n", argv[2]);
            return EXIT_USAGE;
        }
        fputs(c->help, stdout);
        return 0;
    }
    const command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "sqz: error: unknown command '%s' (see 'sqz --help')\n", name);
        return EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++)
        if (is_help(argv[i])) {
            fputs(c->help, stdout);
            return 0;
        }
    args a = {c->name, argc - 2, 0, argv + 2};
    return c->fn(&a);
}

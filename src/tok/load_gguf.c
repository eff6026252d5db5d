/* Tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp's llama_vocab::load reads it. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

static const char *gpath(const sqz_gguf *g) { return g->path ? g->path : "<gguf>"; }

/* An optional array of n elements of one of the given element types; NULL when absent. */
static int get_array(const sqz_gguf *g, const char *key, int t1, int t2, uint64_t n, const sqz_gguf_kv **out,
                     sqz_err *err) {
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    *out = NULL;
    if (!kv) return SQZ_OK;
    if (kv->type != SQZ_GGUF_ARRAY || (kv->arr_type != t1 && kv->arr_type != t2))
        return sqz_fail(err, "%s: metadata %s: expected an array of %s, found %s%s%s", gpath(g), key,
                        sqz_gguf_type_name(t1), sqz_gguf_type_name(kv->type), kv->type == SQZ_GGUF_ARRAY ? " of " : "",
                        kv->type == SQZ_GGUF_ARRAY ? sqz_gguf_type_name(kv->arr_type) : "");
    if (n != UINT64_MAX && kv->arr_n != n)
        return sqz_fail(err, "%s: metadata %s: %llu elements, expected one per token (%llu)", gpath(g), key,
                        (unsigned long long)kv->arr_n, (unsigned long long)n);
    *out = kv;
    return SQZ_OK;
}

/* Optional token id: -1 when absent. */
static int get_id(const sqz_gguf *g, const char *key, int32_t *id, sqz_err *err) {
    int64_t v;
    if (!sqz_gguf_find(g, key)) return SQZ_OK;
    if (sqz_gguf_get_i64(g, key, &v, err)) return SQZ_ERR;
    if (v < -1 || v > INT32_MAX) return sqz_fail(err, "%s: metadata %s: %lld is not a token id", gpath(g), key, (long long)v);
    *id = (int32_t)v;
    return SQZ_OK;
}

static int get_bool(const sqz_gguf *g, const char *key, int *out, sqz_err *err) {
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    if (!kv) return SQZ_OK;
    if (kv->type != SQZ_GGUF_BOOL)
        return sqz_fail(err, "%s: metadata %s: expected BOOL, found %s", gpath(g), key, sqz_gguf_type_name(kv->type));
    *out = kv->i64 != 0;
    return SQZ_OK;
}

int sqz_tok_load_gguf(sqz_tokenizer **out, const sqz_gguf *g, sqz_err *err) {
    const char *model, *path = gpath(g);
    *out = NULL;
    if (!sqz_gguf_find(g, "tokenizer.ggml.model"))
        return sqz_fail(err, "%s: metadata tokenizer.ggml.model: missing (the file has no tokenizer)", path);
    if (sqz_gguf_get_str(g, "tokenizer.ggml.model", &model, err)) return SQZ_ERR;
    int kind = strcmp(model, "llama") == 0 ? SQZ_TOK_SPM : strcmp(model, "gpt2") == 0 ? SQZ_TOK_BPE : 0;
    if (!kind)
        return sqz_fail(err, "%s: metadata tokenizer.ggml.model: '%s' is not supported (expected 'llama' or 'gpt2')",
                        path, model);
    const sqz_gguf_kv *tokens, *scores, *types, *merges;
    if (get_array(g, "tokenizer.ggml.tokens", SQZ_GGUF_STRING, SQZ_GGUF_STRING, UINT64_MAX, &tokens, err))
        return SQZ_ERR;
    if (!tokens) return sqz_fail(err, "%s: metadata tokenizer.ggml.tokens: missing (the file has no vocabulary)", path);
    if (tokens->arr_n == 0 || tokens->arr_n > INT32_MAX)
        return sqz_fail(err, "%s: metadata tokenizer.ggml.tokens: %llu tokens, expected 1..%d", path,
                        (unsigned long long)tokens->arr_n, INT32_MAX);
    uint64_t n = tokens->arr_n;
    if (get_array(g, "tokenizer.ggml.scores", SQZ_GGUF_FLOAT32, SQZ_GGUF_FLOAT32, n, &scores, err) ||
        get_array(g, "tokenizer.ggml.token_type", SQZ_GGUF_INT32, SQZ_GGUF_UINT32, n, &types, err) ||
        get_array(g, "tokenizer.ggml.merges", SQZ_GGUF_STRING, SQZ_GGUF_STRING, UINT64_MAX, &merges, err))
        return SQZ_ERR;
    if (kind == SQZ_TOK_BPE && !merges)
        return sqz_fail(err, "%s: metadata tokenizer.ggml.merges: missing (needed by a gpt2 tokenizer)", path);

    sqz_tokenizer *t = tok_new();
    if (!t) return sqz_fail(err, "%s: out of memory", path);
    sqz_vocab *v = &t->v;
    v->kind = kind;
    if (tok_alloc_tokens(t, (int32_t)n, path, err)) goto fail;
    for (uint64_t i = 0; i < n; i++) {
        if (!(v->tokens[i] = tok_strdup(tokens->arr_str[i]))) goto oom;
        if (scores) v->scores[i] = ((const float *)scores->arr)[i];
        if (types) v->types[i] = ((const int32_t *)types->arr)[i];
    }
    if (merges) {
        if (merges->arr_n > INT32_MAX) {
            sqz_fail(err, "%s: metadata tokenizer.ggml.merges: %llu merges is too many", path,
                     (unsigned long long)merges->arr_n);
            goto fail;
        }
        v->n_merges = (int32_t)merges->arr_n;
        if (!(v->merges = calloc(merges->arr_n ? merges->arr_n : 1, sizeof(char *)))) goto oom;
        for (uint64_t i = 0; i < merges->arr_n; i++)
            if (!(v->merges[i] = tok_strdup(merges->arr_str[i]))) goto oom;
    }
    const sqz_gguf_kv *pre = sqz_gguf_find(g, "tokenizer.ggml.pre");
    if (pre) {
        if (pre->type != SQZ_GGUF_STRING) {
            sqz_fail(err, "%s: metadata tokenizer.ggml.pre: expected STRING, found %s", path, sqz_gguf_type_name(pre->type));
            goto fail;
        }
        if (!(v->pre = tok_strdup(pre->str))) goto oom;
    }
    if (get_id(g, "tokenizer.ggml.bos_token_id", &v->bos_id, err) ||
        get_id(g, "tokenizer.ggml.eos_token_id", &v->eos_id, err) ||
        get_id(g, "tokenizer.ggml.unknown_token_id", &v->unk_id, err) ||
        get_id(g, "tokenizer.ggml.padding_token_id", &v->pad_id, err))
        goto fail;
    /* llama.cpp's defaults: SPM vocabs start with BOS and a space, BPE ones with neither
     * (Llama-3 style vocabs start with BOS) */
    v->add_bos = kind == SQZ_TOK_SPM;
    v->add_space_prefix = kind == SQZ_TOK_SPM;
    if (kind == SQZ_TOK_BPE) {
        if (tok_set_pre_by_name(t, v->pre, path, err)) goto fail;
        v->add_bos = t->ignore_merges; /* the llama-bpe family */
    }
    if (get_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, err) ||
        get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err))
        goto fail;
    if (kind == SQZ_TOK_SPM && v->unk_id < 0) v->unk_id = 0;
    if (tok_finish(t, path, err)) goto fail;
    *out = t;
    return SQZ_OK;
oom:
    sqz_fail(err, "%s: out of memory reading the tokenizer", path);
fail:
    sqz_tok_free(t);
    return SQZ_ERR;
}

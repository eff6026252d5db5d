/* GGUF metadata of a model being written: see sqz_model_write_gguf_meta in
 * include/sqz/quantize_model.h. The key names are llama.cpp's (gguf-py constants). */
#include "sqz/quantize_model.h"

#include <string.h>

/* Keys of the source that describe the old file, not the model: replaced or dropped. */
static int key_describes_file(const char *key) {
    return !strcmp(key, "general.file_type") || !strcmp(key, "general.quantization_version") ||
           !strcmp(key, "general.alignment");
}

static int copy_kv(sqz_gguf_writer *w, const sqz_gguf_kv *kv, const char *path, sqz_err *err) {
    const char *k = kv->key;
    switch (kv->type) {
    case SQZ_GGUF_UINT8: return sqz_gguf_set_u8(w, k, (uint8_t)kv->i64, err);
    case SQZ_GGUF_INT8: return sqz_gguf_set_i8(w, k, (int8_t)kv->i64, err);
    case SQZ_GGUF_UINT16: return sqz_gguf_set_u16(w, k, (uint16_t)kv->i64, err);
    case SQZ_GGUF_INT16: return sqz_gguf_set_i16(w, k, (int16_t)kv->i64, err);
    case SQZ_GGUF_UINT32: return sqz_gguf_set_u32(w, k, (uint32_t)kv->i64, err);
    case SQZ_GGUF_INT32: return sqz_gguf_set_i32(w, k, (int32_t)kv->i64, err);
    case SQZ_GGUF_UINT64: return sqz_gguf_set_u64(w, k, kv->u64, err);
    case SQZ_GGUF_INT64: return sqz_gguf_set_i64(w, k, kv->i64, err);
    case SQZ_GGUF_FLOAT32: return sqz_gguf_set_f32(w, k, (float)kv->f64, err);
    case SQZ_GGUF_FLOAT64: return sqz_gguf_set_f64(w, k, kv->f64, err);
    case SQZ_GGUF_BOOL: return sqz_gguf_set_bool(w, k, kv->i64 != 0, err);
    case SQZ_GGUF_STRING: return sqz_gguf_set_str(w, k, kv->str, err);
    case SQZ_GGUF_ARRAY:
        if (kv->arr_type == SQZ_GGUF_STRING)
            return sqz_gguf_set_arr_str(w, k, (const char *const *)kv->arr_str, kv->arr_n, err);
        if (kv->arr_type == SQZ_GGUF_ARRAY)
            return sqz_fail(err, "%s: metadata %s: nested arrays cannot be copied", path, k);
        return sqz_gguf_set_arr(w, k, kv->arr_type, kv->arr, kv->arr_n, err);
    default: return sqz_fail(err, "%s: metadata %s: unknown value type %d", path, k, kv->type);
    }
}

static int meta_from_gguf(const sqz_model *m, sqz_gguf_writer *w, sqz_err *err) {
    for (int64_t i = 0; i < m->gguf.n_kv; i++) {
        const sqz_gguf_kv *kv = &m->gguf.kv[i];
        if (key_describes_file(kv->key)) continue;
        if (copy_kv(w, kv, m->path, err)) return SQZ_ERR;
    }
    return SQZ_OK;
}

/* A per-layer value as one number when all layers agree, else as an INT32 array
 * (llama.cpp reads both forms). */
static int set_layer_ints(sqz_gguf_writer *w, const char *key, const int *v, int n, sqz_err *err) {
    int same = 1;
    for (int i = 1; i < n; i++) same &= v[i] == v[0];
    if (same) return sqz_gguf_set_u32(w, key, (uint32_t)v[0], err);
    return sqz_gguf_set_arr(w, key, SQZ_GGUF_INT32, v, (uint64_t)n, err);
}

static int tokenizer_meta(const sqz_vocab *v, sqz_gguf_writer *w, sqz_err *err) {
    int spm = v->kind == SQZ_TOK_SPM;
    if (sqz_gguf_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", err)) return SQZ_ERR;
    if (!spm && sqz_gguf_set_str(w, "tokenizer.ggml.pre", v->pre ? v->pre : "default", err)) return SQZ_ERR;
    if (sqz_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, (uint64_t)v->n_tokens, err))
        return SQZ_ERR;
    if (spm && sqz_gguf_set_arr(w, "tokenizer.ggml.scores", SQZ_GGUF_FLOAT32, v->scores, (uint64_t)v->n_tokens, err))
        return SQZ_ERR;
    if (sqz_gguf_set_arr(w, "tokenizer.ggml.token_type", SQZ_GGUF_INT32, v->types, (uint64_t)v->n_tokens, err))
        return SQZ_ERR;
    if (!spm && sqz_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                                     (uint64_t)v->n_merges, err))
        return SQZ_ERR;
    const struct { const char *key; int32_t id; } ids[] = {
        {"tokenizer.ggml.bos_token_id", v->bos_id}, {"tokenizer.ggml.eos_token_id", v->eos_id},
        {"tokenizer.ggml.unknown_token_id", v->unk_id}, {"tokenizer.ggml.padding_token_id", v->pad_id}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].id >= 0 && sqz_gguf_set_u32(w, ids[i].key, (uint32_t)ids[i].id, err)) return SQZ_ERR;
    if (sqz_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos, err)) return SQZ_ERR;
    if (spm && sqz_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix, err)) return SQZ_ERR;
    return SQZ_OK;
}

static int meta_from_hf(const sqz_model *m, sqz_gguf_writer *w, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    const char *base = strrchr(m->path, '/');
    base = base && base[1] ? base + 1 : m->path;
    if (sqz_gguf_set_str(w, "general.architecture", "llama", err) || sqz_gguf_set_str(w, "general.name", base, err) ||
        sqz_gguf_set_u32(w, "llama.context_length", (uint32_t)c->n_ctx_train, err) ||
        sqz_gguf_set_u32(w, "llama.embedding_length", (uint32_t)c->dim, err) ||
        sqz_gguf_set_u32(w, "llama.block_count", (uint32_t)c->n_layer, err) ||
        set_layer_ints(w, "llama.feed_forward_length", c->layer_n_ff, c->n_layer, err) ||
        set_layer_ints(w, "llama.attention.head_count", c->layer_n_head, c->n_layer, err) ||
        set_layer_ints(w, "llama.attention.head_count_kv", c->layer_n_head_kv, c->n_layer, err) ||
        sqz_gguf_set_f32(w, "llama.rope.freq_base", c->rope_theta, err) ||
        sqz_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps, err) ||
        sqz_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim, err) ||
        sqz_gguf_set_u32(w, "llama.vocab_size", (uint32_t)c->n_vocab, err))
        return SQZ_ERR;
    if (c->head_dim * c->n_head != c->dim &&
        (sqz_gguf_set_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim, err) ||
         sqz_gguf_set_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim, err)))
        return SQZ_ERR;
    if (!m->tok) return sqz_gguf_set_str(w, "tokenizer.ggml.model", "no_vocab", err);
    return tokenizer_meta(sqz_tok_vocab(m->tok), w, err);
}

int sqz_model_write_gguf_meta(const sqz_model *m, sqz_gguf_writer *w, int file_type, sqz_err *err) {
    if (m->source == SQZ_SRC_GGUF) {
        if (meta_from_gguf(m, w, err)) return SQZ_ERR;
    } else if (meta_from_hf(m, w, err)) {
        return SQZ_ERR;
    }
    if (sqz_gguf_set_u32(w, "general.quantization_version", 2, err)) return SQZ_ERR;
    return sqz_gguf_set_u32(w, "general.file_type", (uint32_t)file_type, err);
}

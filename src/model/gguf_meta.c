/* GGUF metadata of a model being written: see sqz_model_write_gguf_meta in
 * include/sqz/model.h. The key names are llama.cpp's (gguf-py constants). */
#include "sqz/model.h"

#include <stdio.h>
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

/* The shapes being written: the model's own, or a pruned model's. */
typedef struct {
    const int *n_head, *n_head_kv, *n_ff;
    int reshaped; /* 1: the shapes are not the source's */
} shapes;

static int set_layer_ints(sqz_gguf_writer *w, const char *key, const int *v, int n, sqz_err *err);

/* "deci" when a layer lacks a block or differs from layer 0 (plain llama and the Qwen
 * families take their shapes from layer 0 alone, DESIGN.md §6), else the model's own
 * architecture. */
static const char *arch_of(const sqz_llama_config *c, const shapes *sh) {
    /* llama.cpp's qwen2 graph sizes q/o by n_embd and its qwen3 by layer 0: a pruned Qwen2
     * is a deci file (it reads the q/k/v biases; rows are permuted to its adjacent RoPE);
     * deci has no per-head q/k norms, so a pruned Qwen3 has no llama.cpp architecture. */
    if (sh->reshaped && c->arch == SQZ_ARCH_QWEN2) return "deci";
    if (sh->reshaped && c->arch == SQZ_ARCH_QWEN3) return NULL;
    for (int l = 0; l < c->n_layer; l++)
        if (sh->n_head[l] == 0 || sh->n_ff[l] == 0 || sh->n_head[l] != sh->n_head[0] ||
            sh->n_head_kv[l] != sh->n_head_kv[0] || sh->n_ff[l] != sh->n_ff[0])
            return "deci";
    return sqz_arch_name(c->arch);
}

static int shape_meta(const sqz_model *m, const shapes *sh, const char *arch, sqz_gguf_writer *w, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    char k[3][96];
    snprintf(k[0], sizeof k[0], "%s.feed_forward_length", arch);
    snprintf(k[1], sizeof k[1], "%s.attention.head_count", arch);
    snprintf(k[2], sizeof k[2], "%s.attention.head_count_kv", arch);
    return set_layer_ints(w, k[0], sh->n_ff, c->n_layer, err) || set_layer_ints(w, k[1], sh->n_head, c->n_layer, err) ||
           set_layer_ints(w, k[2], sh->n_head_kv, c->n_layer, err);
}

/* A reshaped model's keys that the shapes replace: the three per-layer ones and the head
 * sizes (always written then: layer 0 may have lost its heads). */
static int reshaped_key(const char *suffix) {
    return !strcmp(suffix, "feed_forward_length") || !strcmp(suffix, "attention.head_count") ||
           !strcmp(suffix, "attention.head_count_kv") || !strcmp(suffix, "attention.key_length") ||
           !strcmp(suffix, "attention.value_length");
}

static int meta_from_gguf(const sqz_model *m, const shapes *sh, sqz_gguf_writer *w, sqz_err *err) {
    if (!sh->reshaped) {
        for (int64_t i = 0; i < m->gguf.n_kv; i++) {
            const sqz_gguf_kv *kv = &m->gguf.kv[i];
            if (key_describes_file(kv->key)) continue;
            if (copy_kv(w, kv, m->path, err)) return SQZ_ERR;
        }
        return SQZ_OK;
    }
    const char *src_arch = NULL, *arch = arch_of(&m->cfg, sh);
    if (!arch)
        return sqz_fail(err, "%s: a pruned qwen3 model cannot be written as GGUF (llama.cpp's deci architecture has no "
                             "q_norm/k_norm; use --hf-out)", m->path);
    for (int64_t i = 0; i < m->gguf.n_kv; i++)
        if (!strcmp(m->gguf.kv[i].key, "general.architecture")) src_arch = m->gguf.kv[i].str;
    size_t pl = src_arch ? strlen(src_arch) : 0;
    for (int64_t i = 0; i < m->gguf.n_kv; i++) {
        const sqz_gguf_kv *kv = &m->gguf.kv[i];
        if (key_describes_file(kv->key)) continue;
        if (!strcmp(kv->key, "general.architecture")) {
            if (sqz_gguf_set_str(w, kv->key, arch, err)) return SQZ_ERR;
            continue;
        }
        if (src_arch && !strncmp(kv->key, src_arch, pl) && kv->key[pl] == '.') { /* renamed to the new arch */
            if (reshaped_key(kv->key + pl + 1)) continue;
            char key[256];
            snprintf(key, sizeof key, "%s.%s", arch, kv->key + pl + 1);
            sqz_gguf_kv renamed = *kv;
            renamed.key = key;
            if (copy_kv(w, &renamed, m->path, err)) return SQZ_ERR;
            continue;
        }
        if (copy_kv(w, kv, m->path, err)) return SQZ_ERR;
    }
    char kl[96], vl[96];
    snprintf(kl, sizeof kl, "%s.attention.key_length", arch);
    snprintf(vl, sizeof vl, "%s.attention.value_length", arch);
    return shape_meta(m, sh, arch, w, err) || sqz_gguf_set_u32(w, kl, (uint32_t)m->cfg.head_dim, err) ||
           sqz_gguf_set_u32(w, vl, (uint32_t)m->cfg.head_dim, err);
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

static int meta_from_hf(const sqz_model *m, const shapes *sh, sqz_gguf_writer *w, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    const char *base = strrchr(m->path, '/'), *arch = arch_of(c, sh);
    if (!arch)
        return sqz_fail(err, "%s: a pruned qwen3 model cannot be written as GGUF (llama.cpp's deci architecture has no "
                             "q_norm/k_norm; use --hf-out)", m->path);
    base = base && base[1] ? base + 1 : m->path;
    char k[8][96];
    const char *suffix[8] = {"context_length", "embedding_length", "block_count", "rope.freq_base",
                             "attention.layer_norm_rms_epsilon", "rope.dimension_count", "vocab_size",
                             "attention.key_length"};
    for (int i = 0; i < 8; i++) snprintf(k[i], sizeof k[i], "%s.%s", arch, suffix[i]);
    if (sqz_gguf_set_str(w, "general.architecture", arch, err) || sqz_gguf_set_str(w, "general.name", base, err) ||
        sqz_gguf_set_u32(w, k[0], (uint32_t)c->n_ctx_train, err) || sqz_gguf_set_u32(w, k[1], (uint32_t)c->dim, err) ||
        sqz_gguf_set_u32(w, k[2], (uint32_t)c->n_layer, err) || shape_meta(m, sh, arch, w, err) ||
        sqz_gguf_set_f32(w, k[3], c->rope_theta, err) || sqz_gguf_set_f32(w, k[4], c->norm_eps, err) ||
        sqz_gguf_set_u32(w, k[5], (uint32_t)c->head_dim, err) || sqz_gguf_set_u32(w, k[6], (uint32_t)c->n_vocab, err))
        return SQZ_ERR;
    if ((sh->reshaped || c->head_dim * c->n_head != c->dim)) {
        char vl[96];
        snprintf(vl, sizeof vl, "%s.attention.value_length", arch);
        if (sqz_gguf_set_u32(w, k[7], (uint32_t)c->head_dim, err) || sqz_gguf_set_u32(w, vl, (uint32_t)c->head_dim, err))
            return SQZ_ERR;
    }
    if (!m->tok) return sqz_gguf_set_str(w, "tokenizer.ggml.model", "no_vocab", err);
    return tokenizer_meta(sqz_tok_vocab(m->tok), w, err);
}

static int write_meta(const sqz_model *m, const shapes *sh, sqz_gguf_writer *w, int file_type, sqz_err *err) {
    if (m->source == SQZ_SRC_GGUF) {
        if (meta_from_gguf(m, sh, w, err)) return SQZ_ERR;
    } else if (meta_from_hf(m, sh, w, err)) {
        return SQZ_ERR;
    }
    if (sqz_gguf_set_u32(w, "general.quantization_version", 2, err)) return SQZ_ERR;
    return sqz_gguf_set_u32(w, "general.file_type", (uint32_t)file_type, err);
}

int sqz_model_write_gguf_meta(const sqz_model *m, sqz_gguf_writer *w, int file_type, sqz_err *err) {
    shapes sh = {m->cfg.layer_n_head, m->cfg.layer_n_head_kv, m->cfg.layer_n_ff, 0};
    return write_meta(m, &sh, w, file_type, err);
}

int sqz_model_write_gguf_meta_shapes(const sqz_model *m, const int *n_head, const int *n_head_kv, const int *n_ff,
                                     sqz_gguf_writer *w, int file_type, sqz_err *err) {
    shapes sh = {n_head, n_head_kv, n_ff, 1};
    return write_meta(m, &sh, w, file_type, err);
}

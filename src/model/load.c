/* Loading a Llama model from a Hugging Face folder or a GGUF file: the config, one
 * pointer per weight tensor (into the mapped files), and the tokenizer when present.
 * Every tensor is checked for presence, a readable type and its exact shape, so the
 * forward pass can trust the shapes it reads. */
#include "sqz/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Names of one tensor in both sources; "%d" stands for the layer index. */
typedef struct {
    const char *hf;
    const char *gguf;
} tensor_names;

static const tensor_names NAME_EMBD = {"model.embed_tokens.weight", "token_embd.weight"};
static const tensor_names NAME_OUT_NORM = {"model.norm.weight", "output_norm.weight"};
static const tensor_names NAME_OUTPUT = {"lm_head.weight", "output.weight"};
static const tensor_names NAME_ATTN_NORM = {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight"};
static const tensor_names NAME_WQ = {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight"};
static const tensor_names NAME_WK = {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight"};
static const tensor_names NAME_WV = {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight"};
static const tensor_names NAME_WO = {"model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight"};
static const tensor_names NAME_FFN_NORM = {"model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight"};
static const tensor_names NAME_GATE = {"model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight"};
static const tensor_names NAME_UP = {"model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight"};
static const tensor_names NAME_DOWN = {"model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight"};
static const tensor_names NAME_BQ = {"model.layers.%d.self_attn.q_proj.bias", "blk.%d.attn_q.bias"};
static const tensor_names NAME_BK = {"model.layers.%d.self_attn.k_proj.bias", "blk.%d.attn_k.bias"};
static const tensor_names NAME_BV = {"model.layers.%d.self_attn.v_proj.bias", "blk.%d.attn_v.bias"};
static const tensor_names NAME_QNORM = {"model.layers.%d.self_attn.q_norm.weight", "blk.%d.attn_q_norm.weight"};
static const tensor_names NAME_KNORM = {"model.layers.%d.self_attn.k_norm.weight", "blk.%d.attn_k_norm.weight"};
/* Llama-3 frequency divisors: GGUF only (a Hugging Face config gives rope_scaling) */
static const tensor_names NAME_ROPE_FREQS = {"rope_freqs.weight", "rope_freqs.weight"};

static const sqz_tensor *find_raw(const sqz_model *m, const char *name) {
    return m->source == SQZ_SRC_HF ? sqz_hf_find(&m->hf, name) : sqz_gguf_find_tensor(&m->gguf, name);
}

static void format_name(const sqz_model *m, const tensor_names *nm, int layer, char *buf, size_t n) {
    const char *fmt = m->source == SQZ_SRC_HF ? nm->hf : nm->gguf;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(buf, n, fmt, layer);
#pragma GCC diagnostic pop
}

static void format_shape(const sqz_tensor *t, char *buf, size_t n) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n - used, "[");
    for (int d = 0; d < t->n_dims && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* Finds a tensor and checks it: present (unless optional), a type sqz can dequantize,
 * and shape exactly [ne0] (ne1 == 0) or [ne0, ne1] in ggml order. */
static int get_tensor(const sqz_model *m, const tensor_names *nm, int layer, int64_t ne0, int64_t ne1,
                      int optional, const sqz_tensor **out, sqz_err *err) {
    char name[160];
    format_name(m, nm, layer, name, sizeof name);
    const sqz_tensor *t = find_raw(m, name);
    *out = t;
    if (!t) {
        if (optional) return SQZ_OK;
        return sqz_fail(err, "%s: tensor '%s': missing", m->path, name);
    }
    const sqz_type_traits *tr = sqz_type_get(t->type);
    if (!tr || !tr->dequantize)
        return sqz_fail(err, "%s: tensor '%s': type %s (id %d) cannot be read by sqz", m->path, name,
                        tr ? tr->name : "unknown", t->type);
    int want_dims = ne1 > 0 ? 2 : 1;
    int ok = 1;
    if (t->n_dims != want_dims) {
        /* a trailing dim of 1 is the same shape (some writers store [dim, 1] vectors) */
        int extra_ok = t->n_dims > want_dims;
        for (int d = want_dims; d < t->n_dims; d++)
            if (t->ne[d] != 1) extra_ok = 0;
        if (!extra_ok) ok = 0;
    }
    if (t->ne[0] != ne0 || (want_dims == 2 && t->ne[1] != ne1)) ok = 0;
    if (!ok) {
        char got[96];
        format_shape(t, got, sizeof got);
        if (want_dims == 2)
            return sqz_fail(err, "%s: tensor '%s': shape %s expected [%lld, %lld]", m->path, name, got,
                            (long long)ne0, (long long)ne1);
        return sqz_fail(err, "%s: tensor '%s': shape %s expected [%lld]", m->path, name, got, (long long)ne0);
    }
    return SQZ_OK;
}

/* A tensor that must NOT exist (a pruned block with 0 heads or 0 FFN width). */
static int check_absent(const sqz_model *m, const tensor_names *nm, int layer, const char *why, sqz_err *err) {
    char name[160];
    format_name(m, nm, layer, name, sizeof name);
    if (find_raw(m, name))
        return sqz_fail(err, "%s: tensor '%s': present although layer %d has %s", m->path, name, layer, why);
    return SQZ_OK;
}

static int check_config(const sqz_model *m, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    if (c->dim <= 0 || c->n_layer <= 0 || c->head_dim <= 0 || c->n_vocab <= 0)
        return sqz_fail(err, "%s: config: dim %d, n_layer %d, head_dim %d, n_vocab %d: all must be positive",
                        m->path, c->dim, c->n_layer, c->head_dim, c->n_vocab);
    if (c->head_dim % 2)
        return sqz_fail(err, "%s: config: head_dim %d must be even for rotary embeddings", m->path, c->head_dim);
    if (!c->layer_n_head || !c->layer_n_head_kv || !c->layer_n_ff)
        return sqz_fail(err, "%s: config: per-layer shapes missing", m->path);
    for (int l = 0; l < c->n_layer; l++) {
        int nh = c->layer_n_head[l], nkv = c->layer_n_head_kv[l], nff = c->layer_n_ff[l];
        if (nh < 0 || nkv < 0 || nff < 0)
            return sqz_fail(err, "%s: config: layer %d: negative head count or FFN width", m->path, l);
        if ((nh == 0) != (nkv == 0) || (nkv > 0 && nh % nkv))
            return sqz_fail(err, "%s: config: layer %d: %d query heads not a multiple of %d key/value heads",
                            m->path, l, nh, nkv);
    }
    return SQZ_OK;
}

static int bind_tensors(sqz_model *m, sqz_err *err) {
    sqz_llama_config *c = &m->cfg;
    int64_t dim = c->dim, hd = c->head_dim;
    /* GGUF files may omit the vocab size; the embedding says it. */
    if (c->n_vocab <= 0) {
        char name[160];
        format_name(m, &NAME_EMBD, 0, name, sizeof name);
        const sqz_tensor *e = find_raw(m, name);
        if (e && e->n_dims >= 2 && e->ne[1] > 0 && e->ne[1] < INT32_MAX) c->n_vocab = (int)e->ne[1];
    }
    if (check_config(m, err)) return SQZ_ERR;
    if (get_tensor(m, &NAME_EMBD, 0, dim, c->n_vocab, 0, &m->tok_embd, err)) return SQZ_ERR;
    if (get_tensor(m, &NAME_OUT_NORM, 0, dim, 0, 0, &m->out_norm, err)) return SQZ_ERR;
    m->output = NULL;
    if (!c->tie_embeddings && get_tensor(m, &NAME_OUTPUT, 0, dim, c->n_vocab, 1, &m->output, err)) return SQZ_ERR;
    if (!m->output) {
        m->output = m->tok_embd; /* absent head = tied, as llama.cpp and transformers do */
        c->tie_embeddings = 1;
    }
    if (m->source == SQZ_SRC_GGUF) {
        const sqz_tensor *rf = NULL;
        if (get_tensor(m, &NAME_ROPE_FREQS, 0, hd / 2, 0, 1, &rf, err)) return SQZ_ERR;
        if (rf) {
            free(c->rope_freqs);
            if (!(c->rope_freqs = malloc((size_t)rf->ne[0] * sizeof(float))))
                return sqz_fail(err, "%s: out of memory", m->path);
            if (sqz_tensor_rows_f32(rf, 0, 1, c->rope_freqs, err)) return sqz_fail_prefix(err, "%s", m->path);
            for (int64_t i = 0; i < hd / 2; i++)
                if (!(c->rope_freqs[i] > 0.0f) || !isfinite(c->rope_freqs[i]))
                    return sqz_fail(err, "%s: tensor 'rope_freqs.weight': entry %lld is %g (expected a positive divisor)",
                                    m->path, (long long)i, (double)c->rope_freqs[i]);
        }
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return sqz_fail(err, "%s: out of memory for %d layers", m->path, c->n_layer);
    /* A llama/deci GGUF may carry q/k/v biases (llama.cpp's llama graph adds them when
     * present; a pruned Qwen2 model is such a file): then every attention layer has them. */
    if (m->source == SQZ_SRC_GGUF && c->arch == SQZ_ARCH_LLAMA) {
        for (int l = 0; l < c->n_layer && !c->attn_bias; l++) {
            char name[160];
            format_name(m, &NAME_BQ, l, name, sizeof name);
            if (find_raw(m, name)) c->attn_bias = 1;
        }
    }
    for (int l = 0; l < c->n_layer; l++) {
        sqz_layer *L = &m->layers[l];
        int64_t q = (int64_t)c->layer_n_head[l] * hd, kv = (int64_t)c->layer_n_head_kv[l] * hd;
        int64_t ff = c->layer_n_ff[l];
        if (get_tensor(m, &NAME_ATTN_NORM, l, dim, 0, 0, &L->attn_norm, err)) return SQZ_ERR;
        if (get_tensor(m, &NAME_FFN_NORM, l, dim, 0, 0, &L->ffn_norm, err)) return SQZ_ERR;
        if (q > 0) {
            if (get_tensor(m, &NAME_WQ, l, dim, q, 0, &L->wq, err)) return SQZ_ERR;
            if (get_tensor(m, &NAME_WK, l, dim, kv, 0, &L->wk, err)) return SQZ_ERR;
            if (get_tensor(m, &NAME_WV, l, dim, kv, 0, &L->wv, err)) return SQZ_ERR;
            if (get_tensor(m, &NAME_WO, l, q, dim, 0, &L->wo, err)) return SQZ_ERR;
            if (c->attn_bias && (get_tensor(m, &NAME_BQ, l, q, 0, 0, &L->bq, err) ||
                                 get_tensor(m, &NAME_BK, l, kv, 0, 0, &L->bk, err) ||
                                 get_tensor(m, &NAME_BV, l, kv, 0, 0, &L->bv, err)))
                return SQZ_ERR;
            if (c->qk_norm && (get_tensor(m, &NAME_QNORM, l, hd, 0, 0, &L->q_norm, err) ||
                               get_tensor(m, &NAME_KNORM, l, hd, 0, 0, &L->k_norm, err)))
                return SQZ_ERR;
        } else {
            const tensor_names *att[] = {&NAME_WQ, &NAME_WK, &NAME_WV, &NAME_WO, &NAME_BQ, &NAME_BK, &NAME_BV,
                                         &NAME_QNORM, &NAME_KNORM};
            for (int i = 0; i < 9; i++)
                if (check_absent(m, att[i], l, "0 attention heads", err)) return SQZ_ERR;
        }
        if (ff > 0) {
            if (get_tensor(m, &NAME_GATE, l, dim, ff, 0, &L->w_gate, err)) return SQZ_ERR;
            if (get_tensor(m, &NAME_UP, l, dim, ff, 0, &L->w_up, err)) return SQZ_ERR;
            if (get_tensor(m, &NAME_DOWN, l, ff, dim, 0, &L->w_down, err)) return SQZ_ERR;
        } else {
            const tensor_names *ffn[] = {&NAME_GATE, &NAME_UP, &NAME_DOWN};
            for (int i = 0; i < 3; i++)
                if (check_absent(m, ffn[i], l, "FFN width 0", err)) return SQZ_ERR;
        }
    }
    return SQZ_OK;
}

static int load_hf(sqz_model *m, const char *path, int need_tokenizer, sqz_err *err) {
    m->source = SQZ_SRC_HF;
    if (sqz_hf_open(&m->hf, path, err)) return SQZ_ERR;
    char *cfg_path = sqz_path_join(path, "config.json");
    int rc = sqz_config_from_hf_json(&m->cfg, m->hf.config_json, m->hf.config_len, cfg_path ? cfg_path : path, err);
    free(cfg_path);
    if (rc) return SQZ_ERR;
    m->cfg.rope_mode = SQZ_ROPE_HALF; /* Hugging Face checkpoints: rotate_half layout */
    if (bind_tensors(m, err)) return SQZ_ERR;
    char *tj = sqz_path_join(path, "tokenizer.json"), *tm = sqz_path_join(path, "tokenizer.model");
    int has_tok = (tj && sqz_path_exists(tj)) || (tm && sqz_path_exists(tm));
    free(tj);
    free(tm);
    if (has_tok) {
        if (sqz_tok_load_dir(&m->tok, path, err)) return SQZ_ERR;
    } else if (need_tokenizer) {
        return sqz_fail(err, "%s: no tokenizer (neither tokenizer.json nor tokenizer.model in the folder)", path);
    }
    return SQZ_OK;
}

static int load_gguf(sqz_model *m, int need_tokenizer, sqz_err *err) {
    m->source = SQZ_SRC_GGUF;
    if (sqz_gguf_open(&m->gguf, m->path, err)) return SQZ_ERR;
    if (sqz_config_from_gguf(&m->cfg, &m->gguf, err)) return SQZ_ERR;
    if (bind_tensors(m, err)) return SQZ_ERR;
    const sqz_gguf_kv *tm = sqz_gguf_find(&m->gguf, "tokenizer.ggml.model");
    /* "no_vocab": written by sqz (and llama.cpp) for a model without a tokenizer */
    int no_vocab = tm && tm->type == SQZ_GGUF_STRING && !strcmp(tm->str, "no_vocab");
    if (tm && !no_vocab) {
        if (sqz_tok_load_gguf(&m->tok, &m->gguf, err)) return sqz_fail_prefix(err, "%s", m->path);
    } else if (need_tokenizer) {
        return sqz_fail(err, "%s: no tokenizer (metadata tokenizer.ggml.model %s)", m->path,
                        no_vocab ? "is 'no_vocab'" : "missing");
    }
    return SQZ_OK;
}

int sqz_model_load(sqz_model *m, const char *path, int need_tokenizer, sqz_err *err) {
    memset(m, 0, sizeof *m);
    if (!path || !*path) return sqz_fail(err, "model path is empty");
    m->path = strdup(path);
    if (!m->path) return sqz_fail(err, "%s: out of memory", path);
    int rc;
    if (sqz_path_is_dir(path)) {
        rc = load_hf(m, path, need_tokenizer, err);
    } else if (!sqz_path_exists(path)) {
        rc = sqz_fail(err, "%s: no such file or folder", path);
    } else {
        rc = load_gguf(m, need_tokenizer, err);
    }
    if (rc) {
        sqz_model_free(m);
        return SQZ_ERR;
    }
    return SQZ_OK;
}

void sqz_model_free(sqz_model *m) {
    if (!m) return;
    if (m->tok) sqz_tok_free(m->tok);
    free(m->layers);
    sqz_config_free(&m->cfg);
    if (m->source == SQZ_SRC_HF) sqz_hf_close(&m->hf);
    if (m->source == SQZ_SRC_GGUF) sqz_gguf_close(&m->gguf);
    free(m->path);
    memset(m, 0, sizeof *m);
}

int64_t sqz_model_n_params(const sqz_model *m) {
    int64_t n = 0;
    if (m->tok_embd) n += sqz_tensor_nelements(m->tok_embd);
    if (m->out_norm) n += sqz_tensor_nelements(m->out_norm);
    if (m->output && m->output != m->tok_embd) n += sqz_tensor_nelements(m->output);
    for (int l = 0; m->layers && l < m->cfg.n_layer; l++) {
        const sqz_layer *L = &m->layers[l];
        const sqz_tensor *ts[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->ffn_norm, L->w_gate, L->w_up, L->w_down,
                                  L->bq, L->bk, L->bv, L->q_norm, L->k_norm};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            if (ts[i]) n += sqz_tensor_nelements(ts[i]);
    }
    return n;
}

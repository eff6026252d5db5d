/* Decoder hyper-parameters (Llama, Qwen2, Qwen3) from a Hugging Face config.json or
 * from GGUF metadata.
 *
 * Defaults follow transformers' LlamaConfig / Qwen2Config / Qwen3Config where a field may
 * be absent (head_dim = hidden/heads, num_key_value_heads = heads, rope_theta 10000,
 * rms_norm_eps 1e-6, max_position_embeddings 2048, tie_word_embeddings false, hidden_act
 * silu); anything sqz's forward pass does not implement (rope scaling other than
 * Llama-3's, an output-projection bias, sliding windows, other activations) is refused
 * here, with the field named, rather than computed wrongly later. */
#include "sqz/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define CFG_MAX_LAYERS 4096
#define CFG_MAX_DIM (1 << 20)
#define CFG_MAX_VOCAB (1 << 24)

void sqz_config_free(sqz_llama_config *cfg) {
    if (!cfg) return;
    free(cfg->layer_n_head);
    free(cfg->layer_n_head_kv);
    free(cfg->layer_n_ff);
    free(cfg->rope_freqs);
    memset(cfg, 0, sizeof *cfg);
}

const char *sqz_arch_name(int arch) {
    switch (arch) {
    case SQZ_ARCH_QWEN2: return "qwen2";
    case SQZ_ARCH_QWEN3: return "qwen3";
    default: return "llama";
    }
}

static int alloc_layers(sqz_llama_config *c, const char *path, sqz_err *err) {
    c->layer_n_head = calloc((size_t)c->n_layer, sizeof(int));
    c->layer_n_head_kv = calloc((size_t)c->n_layer, sizeof(int));
    c->layer_n_ff = calloc((size_t)c->n_layer, sizeof(int));
    if (!c->layer_n_head || !c->layer_n_head_kv || !c->layer_n_ff) return sqz_fail(err, "%s: out of memory", path);
    return SQZ_OK;
}

/* Range checks shared by both sources; the per-layer arrays are filled. */
static int validate(const sqz_llama_config *c, const char *path, const char *(*field)(int), sqz_err *err) {
    /* field(k) gives the source's name for: 0 dim, 1 n_layer, 2 n_head, 3 n_head_kv,
     * 4 head_dim, 5 n_ff, 6 n_vocab, 7 eps, 8 rope_theta, 9 n_ctx */
    if (c->dim <= 0 || c->dim > CFG_MAX_DIM) return sqz_fail(err, "%s: %s: %d is out of range (expected 1..%d)", path, field(0), c->dim, CFG_MAX_DIM);
    if (c->n_layer <= 0 || c->n_layer > CFG_MAX_LAYERS)
        return sqz_fail(err, "%s: %s: %d is out of range (expected 1..%d)", path, field(1), c->n_layer, CFG_MAX_LAYERS);
    if (c->head_dim <= 0 || c->head_dim > CFG_MAX_DIM || c->head_dim % 2 != 0)
        return sqz_fail(err, "%s: %s: %d must be a positive even number (RoPE rotates pairs)", path, field(4), c->head_dim);
    if (c->n_vocab < 0 || c->n_vocab > CFG_MAX_VOCAB)
        return sqz_fail(err, "%s: %s: %d is out of range (expected 1..%d)", path, field(6), c->n_vocab, CFG_MAX_VOCAB);
    if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f))
        return sqz_fail(err, "%s: %s: %g is out of range (expected 0 < eps < 1)", path, field(7), (double)c->norm_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return sqz_fail(err, "%s: %s: %g must be positive", path, field(8), (double)c->rope_theta);
    if (c->n_ctx_train < 0) return sqz_fail(err, "%s: %s: %d must not be negative", path, field(9), c->n_ctx_train);
    int any_head = 0;
    for (int l = 0; l < c->n_layer; l++) {
        int h = c->layer_n_head[l], kv = c->layer_n_head_kv[l], ff = c->layer_n_ff[l];
        if (h < 0 || (int64_t)h * c->head_dim > CFG_MAX_DIM)
            return sqz_fail(err, "%s: %s: layer %d: %d is out of range", path, field(2), l, h);
        if (kv < 0 || kv > h)
            return sqz_fail(err, "%s: %s: layer %d: %d is out of range (expected 0..%d query heads)", path, field(3), l, kv, h);
        if (h > 0 && kv == 0)
            return sqz_fail(err, "%s: %s: layer %d: 0 key/value heads with %d query heads (linear attention) is not supported",
                            path, field(3), l, h);
        if (h == 0 && kv != 0)
            return sqz_fail(err, "%s: %s: layer %d: %d key/value heads without query heads", path, field(3), l, kv);
        if (kv > 0 && h % kv != 0)
            return sqz_fail(err, "%s: %s: layer %d: %d query heads is not a multiple of %s %d", path, field(2), l, h, field(3), kv);
        if (ff < 0 || ff > CFG_MAX_DIM * 16) return sqz_fail(err, "%s: %s: layer %d: %d is out of range", path, field(5), l, ff);
        any_head |= h > 0;
    }
    (void)any_head;
    return SQZ_OK;
}

/* ---------------- Hugging Face config.json ---------------- */

static const char *hf_field(int k) {
    static const char *names[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                  "head_dim", "intermediate_size", "vocab_size", "rms_norm_eps", "rope_theta",
                                  "max_position_embeddings"};
    return names[k];
}

/* An integer field: absent or null gives def (or an error when required). */
static int hf_int(const cJSON *root, const char *key, int required, int def, int *out, const char *path, sqz_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return sqz_fail(err, "%s: %s: missing (expected an integer)", path, key);
        *out = def;
        return SQZ_OK;
    }
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || v->valuedouble < -2147483648.0 ||
        v->valuedouble > 2147483647.0)
        return sqz_fail(err, "%s: %s: expected an integer", path, key);
    *out = (int)v->valuedouble;
    return SQZ_OK;
}

static int hf_num(const cJSON *root, const char *key, double def, double *out, const char *path, sqz_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return SQZ_OK;
    }
    if (!cJSON_IsNumber(v)) return sqz_fail(err, "%s: %s: expected a number", path, key);
    *out = v->valuedouble;
    return SQZ_OK;
}

static int hf_bool(const cJSON *root, const char *key, int def, int *out, const char *path, sqz_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return SQZ_OK;
    }
    if (!cJSON_IsBool(v)) return sqz_fail(err, "%s: %s: expected true or false", path, key);
    *out = cJSON_IsTrue(v);
    return SQZ_OK;
}

/* bos/eos: an integer, null/absent (-1), or a list (its first element). */
static int hf_token_id(const cJSON *root, const char *key, int *out, const char *path, sqz_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return SQZ_OK;
    if (cJSON_IsArray(v)) {
        v = cJSON_GetArrayItem(v, 0);
        if (!v) return SQZ_OK;
    }
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || v->valuedouble < 0 ||
        v->valuedouble > 2147483647.0)
        return sqz_fail(err, "%s: %s: expected a non-negative integer or a list of them", path, key);
    *out = (int)v->valuedouble;
    return SQZ_OK;
}

/* A number inside a rope_scaling object: required. */
static int rope_num(const cJSON *obj, const char *parent, const char *key, double *out, const char *path,
                    sqz_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v)) return sqz_fail(err, "%s: %s.%s: missing or not a number (rope type llama3)", path, parent, key);
    *out = v->valuedouble;
    return SQZ_OK;
}

/* Llama-3's rope scaling as llama.cpp's converter turns it into rope_freqs: pairs whose
 * wavelength is above original/low_freq_factor rotate `factor` times slower, those below
 * original/high_freq_factor are unchanged, and the band between blends the two. The
 * divisors match transformers' _compute_llama3_parameters (inv_freq / inv_freq_llama). */
static int llama3_freqs(const cJSON *v, const char *key, double theta, int head_dim, float **out, const char *path,
                        sqz_err *err) {
    double factor = 0, lo = 0, hi = 0, orig = 0;
    if (rope_num(v, key, "factor", &factor, path, err) || rope_num(v, key, "low_freq_factor", &lo, path, err) ||
        rope_num(v, key, "high_freq_factor", &hi, path, err) ||
        rope_num(v, key, "original_max_position_embeddings", &orig, path, err))
        return SQZ_ERR;
    if (!(factor > 0) || !(lo > 0) || !(hi > lo) || !(orig > 0))
        return sqz_fail(err, "%s: %s: expected factor > 0, 0 < low_freq_factor < high_freq_factor, "
                             "original_max_position_embeddings > 0", path, key);
    if (head_dim <= 0 || head_dim % 2) return SQZ_OK; /* validate() reports the head size */
    int half = head_dim / 2;
    float *f = malloc((size_t)half * sizeof(float));
    if (!f) return sqz_fail(err, "%s: out of memory", path);
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < half; i++) {
        double freq = pow(theta, -2.0 * i / head_dim), wavelen = 2.0 * pi / freq;
        double d;
        if (wavelen < orig / hi) d = 1.0;
        else if (wavelen > orig / lo) d = factor;
        else {
            double smooth = (orig / wavelen - lo) / (hi - lo);
            d = 1.0 / ((1.0 - smooth) / factor + smooth);
        }
        f[i] = (float)d;
    }
    free(*out);
    *out = f;
    return SQZ_OK;
}

/* rope_scaling / rope_parameters: plain RoPE ("default", or no type) and Llama-3's
 * frequency scaling ("llama3"). The theta inside rope_parameters (transformers >= 5)
 * wins over the top-level rope_theta. */
static int hf_rope(const cJSON *root, double *theta, int head_dim, float **freqs, const char *path, sqz_err *err) {
    static const char *keys[] = {"rope_scaling", "rope_parameters"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsObject(v)) return sqz_fail(err, "%s: %s: expected an object or null", path, keys[k]);
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(v, "rope_theta");
        if (th) {
            if (!cJSON_IsNumber(th)) return sqz_fail(err, "%s: %s.rope_theta: expected a number", path, keys[k]);
            *theta = th->valuedouble;
        }
    }
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (!cJSON_IsObject(v)) continue;
        const char *field = "rope_type";
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "rope_type");
        if (!t) t = cJSON_GetObjectItemCaseSensitive(v, field = "type");
        if (t && !cJSON_IsString(t)) return sqz_fail(err, "%s: %s.%s: expected a string", path, keys[k], field);
        const char *type = t ? t->valuestring : NULL;
        /* transformers >= 5 writes {"rope_type": "default", "rope_theta": ...} for plain RoPE */
        if (type ? strcmp(type, "default") == 0 : (k == 1)) continue;
        if (type && strcmp(type, "llama3") == 0) {
            if (llama3_freqs(v, keys[k], *theta, head_dim, freqs, path, err)) return SQZ_ERR;
            continue;
        }
        return sqz_fail(err, "%s: %s.%s: '%s' is not supported (expected default or llama3)", path, keys[k], field,
                        type ? type : "(none)");
    }
    return SQZ_OK;
}

int sqz_config_from_hf_json(sqz_llama_config *cfg, const char *json, size_t len, const char *path, sqz_err *err) {
    memset(cfg, 0, sizeof *cfg);
    if (!path) path = "config.json";
    cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
    if (!root) return sqz_fail(err, "%s: not valid JSON", path);
    int rc = SQZ_ERR;
    sqz_llama_config c = {0};
    if (!cJSON_IsObject(root)) {
        sqz_fail(err, "%s: expected a JSON object", path);
        goto done;
    }
    /* architecture: a known *ForCausalLM in architectures, or its model_type */
    static const struct { const char *cls, *model_type; int arch; } known[] = {
        {"LlamaForCausalLM", "llama", SQZ_ARCH_LLAMA},
        {"Qwen2ForCausalLM", "qwen2", SQZ_ARCH_QWEN2},
        {"Qwen3ForCausalLM", "qwen3", SQZ_ARCH_QWEN3}};
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    int found = -1;
    const char *first_arch = NULL;
    if (cJSON_IsArray(arch)) {
        for (const cJSON *a = arch->child; a && found < 0; a = a->next) {
            if (!cJSON_IsString(a)) continue;
            if (!first_arch) first_arch = a->valuestring;
            for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
                if (strcmp(a->valuestring, known[i].cls) == 0) found = known[i].arch;
        }
    }
    for (size_t i = 0; found < 0 && !first_arch && cJSON_IsString(mt) && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(mt->valuestring, known[i].model_type) == 0) found = known[i].arch;
    if (found < 0) {
        sqz_fail(err, "%s: architectures: expected LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM (or their "
                      "model_type), found %s%s%s", path,
                 first_arch ? "'" : "", first_arch ? first_arch : (cJSON_IsString(mt) ? mt->valuestring : "none"),
                 first_arch ? "'" : "");
        goto done;
    }
    c.arch = found;
    if (hf_int(root, "hidden_size", 1, 0, &c.dim, path, err) || hf_int(root, "intermediate_size", 1, 0, &c.n_ff, path, err) ||
        hf_int(root, "num_hidden_layers", 1, 0, &c.n_layer, path, err) ||
        hf_int(root, "num_attention_heads", 1, 0, &c.n_head, path, err) ||
        hf_int(root, "num_key_value_heads", 0, c.n_head, &c.n_head_kv, path, err) ||
        hf_int(root, "vocab_size", 1, 0, &c.n_vocab, path, err) ||
        hf_int(root, "max_position_embeddings", 0, 2048, &c.n_ctx_train, path, err))
        goto done;
    if (c.n_head <= 0) {
        sqz_fail(err, "%s: num_attention_heads: %d must be positive", path, c.n_head);
        goto done;
    }
    if (c.n_vocab <= 0) {
        sqz_fail(err, "%s: vocab_size: %d must be positive", path, c.n_vocab);
        goto done;
    }
    if (c.n_ff <= 0) {
        sqz_fail(err, "%s: intermediate_size: %d must be positive", path, c.n_ff);
        goto done;
    }
    if (hf_int(root, "head_dim", 0, c.n_head > 0 ? c.dim / c.n_head : 0, &c.head_dim, path, err)) goto done;
    if (!cJSON_GetObjectItemCaseSensitive(root, "head_dim") && c.dim % c.n_head != 0) {
        sqz_fail(err, "%s: hidden_size: %d is not a multiple of num_attention_heads %d (and head_dim is absent)", path,
                 c.dim, c.n_head);
        goto done;
    }
    double eps, theta;
    if (hf_num(root, "rms_norm_eps", 1e-6, &eps, path, err) || hf_num(root, "rope_theta", 10000.0, &theta, path, err))
        goto done;
    if (hf_rope(root, &theta, c.head_dim, &c.rope_freqs, path, err)) goto done;
    c.norm_eps = (float)eps;
    c.rope_theta = (float)theta;
    if (hf_bool(root, "tie_word_embeddings", 0, &c.tie_embeddings, path, err)) goto done;
    int bias;
    /* Qwen2 always has q/k/v biases (its config has no field for them); Llama's
     * attention_bias would also put one on o_proj, which sqz does not implement. */
    if (hf_bool(root, "attention_bias", 0, &bias, path, err)) goto done;
    if (bias && c.arch != SQZ_ARCH_QWEN2) {
        sqz_fail(err, "%s: attention_bias: true is not supported (it adds an o_proj bias; expected false)", path);
        goto done;
    }
    c.attn_bias = c.arch == SQZ_ARCH_QWEN2;
    c.qk_norm = c.arch == SQZ_ARCH_QWEN3;
    int sliding;
    if (hf_bool(root, "use_sliding_window", 0, &sliding, path, err)) goto done;
    if (sliding) {
        sqz_fail(err, "%s: use_sliding_window: true is not supported (expected false)", path);
        goto done;
    }
    if (hf_bool(root, "mlp_bias", 0, &bias, path, err)) goto done;
    if (bias) {
        sqz_fail(err, "%s: mlp_bias: true is not supported (expected false)", path);
        goto done;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !cJSON_IsNull(act) && !(cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0)) {
        sqz_fail(err, "%s: hidden_act: expected \"silu\", found %s", path,
                 cJSON_IsString(act) ? act->valuestring : "a non-string");
        goto done;
    }
    if (hf_token_id(root, "bos_token_id", &c.bos_id, path, err) || hf_token_id(root, "eos_token_id", &c.eos_id, path, err))
        goto done;
    c.rope_mode = SQZ_ROPE_HALF;
    if (c.n_layer <= 0 || c.n_layer > CFG_MAX_LAYERS) {
        sqz_fail(err, "%s: num_hidden_layers: %d is out of range (expected 1..%d)", path, c.n_layer, CFG_MAX_LAYERS);
        goto done;
    }
    if (c.n_head_kv <= 0) {
        sqz_fail(err, "%s: num_key_value_heads: %d must be positive", path, c.n_head_kv);
        goto done;
    }
    if (alloc_layers(&c, path, err)) goto done;
    for (int l = 0; l < c.n_layer; l++) {
        c.layer_n_head[l] = c.n_head;
        c.layer_n_head_kv[l] = c.n_head_kv;
        c.layer_n_ff[l] = c.n_ff;
    }
    /* a pruned model (sqz prune --hf-out): per-layer counts as arrays of num_hidden_layers */
    const char *per_layer[3] = {"num_attention_heads_per_layer", "num_key_value_heads_per_layer",
                                "intermediate_size_per_layer"};
    int *dst[3] = {c.layer_n_head, c.layer_n_head_kv, c.layer_n_ff};
    for (int k = 0; k < 3; k++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, per_layer[k]);
        if (!arr) continue;
        if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != c.n_layer) {
            sqz_fail(err, "%s: %s: expected an array of %d integers (num_hidden_layers)", path, per_layer[k], c.n_layer);
            goto done;
        }
        for (int l = 0; l < c.n_layer; l++) {
            const cJSON *v = cJSON_GetArrayItem(arr, l);
            double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (!(x >= 0 && x <= CFG_MAX_DIM) || x != floor(x)) {
                sqz_fail(err, "%s: %s[%d]: expected an integer >= 0", path, per_layer[k], l);
                goto done;
            }
            dst[k][l] = (int)x;
        }
    }
    if (validate(&c, path, hf_field, err)) goto done;
    rc = SQZ_OK;
done:
    cJSON_Delete(root);
    if (rc == SQZ_OK)
        *cfg = c;
    else
        sqz_config_free(&c);
    return rc;
}

/* ---------------- GGUF metadata ---------------- */

static const char *gguf_field(int k) {
    static const char *names[] = {"embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
                                  "attention.key_length", "feed_forward_length", "vocab_size",
                                  "attention.layer_norm_rms_epsilon", "rope.freq_base", "context_length"};
    return names[k];
}

static int kv_is_int(int type) {
    return type == SQZ_GGUF_UINT8 || type == SQZ_GGUF_INT8 || type == SQZ_GGUF_UINT16 || type == SQZ_GGUF_INT16 ||
           type == SQZ_GGUF_UINT32 || type == SQZ_GGUF_INT32 || type == SQZ_GGUF_UINT64 || type == SQZ_GGUF_INT64;
}

/* Element i of an integer array, widened. */
static int64_t arr_int(const sqz_gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->arr;
    switch (kv->arr_type) {
    case SQZ_GGUF_UINT8: return p[i];
    case SQZ_GGUF_INT8: return (int8_t)p[i];
    case SQZ_GGUF_UINT16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case SQZ_GGUF_INT16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case SQZ_GGUF_UINT32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case SQZ_GGUF_INT32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case SQZ_GGUF_UINT64: { uint64_t v; memcpy(&v, p + 8 * i, 8); return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v; }
    default: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    }
}

static int fit_int(int64_t v, int *out) {
    if (v < 0 || v > 2147483647) return -1;
    *out = (int)v;
    return 0;
}

/* "<arch>.<name>" as a scalar integer; absent gives def, or an error when required. */
static int g_int(const sqz_gguf *g, const char *arch, const char *name, int required, int def, int *out, sqz_err *err) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    if (!kv) {
        if (required) return sqz_fail(err, "%s: metadata %s: missing", g->path, key);
        *out = def;
        return SQZ_OK;
    }
    int64_t v;
    if (sqz_gguf_get_i64(g, key, &v, err)) return SQZ_ERR;
    if (fit_int(v, out)) return sqz_fail(err, "%s: metadata %s: %lld is out of range", g->path, key, (long long)v);
    return SQZ_OK;
}

/* "<arch>.<name>" as one integer for all layers or an array of n_layer integers. */
static int g_layers(const sqz_gguf *g, const char *arch, const char *name, int n_layer, const int *def, int *out,
                    sqz_err *err) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    const sqz_gguf_kv *kv = sqz_gguf_find(g, key);
    if (!kv) {
        if (!def) return sqz_fail(err, "%s: metadata %s: missing", g->path, key);
        memcpy(out, def, (size_t)n_layer * sizeof(int));
        return SQZ_OK;
    }
    if (kv->type == SQZ_GGUF_ARRAY) {
        if (!kv_is_int(kv->arr_type))
            return sqz_fail(err, "%s: metadata %s: expected an array of integers, found an array of %s", g->path, key,
                            sqz_gguf_type_name(kv->arr_type));
        if (kv->arr_n != (uint64_t)n_layer)
            return sqz_fail(err, "%s: metadata %s: array has %llu entries, expected block_count = %d", g->path, key,
                            (unsigned long long)kv->arr_n, n_layer);
        for (int l = 0; l < n_layer; l++)
            if (fit_int(arr_int(kv, (uint64_t)l), &out[l]))
                return sqz_fail(err, "%s: metadata %s: layer %d: %lld is out of range", g->path, key, l,
                                (long long)arr_int(kv, (uint64_t)l));
        return SQZ_OK;
    }
    int v;
    if (g_int(g, arch, name, 1, 0, &v, err)) return SQZ_ERR;
    for (int l = 0; l < n_layer; l++) out[l] = v;
    return SQZ_OK;
}

int sqz_config_from_gguf(sqz_llama_config *cfg, const sqz_gguf *g, sqz_err *err) {
    memset(cfg, 0, sizeof *cfg);
    const char *path = g->path ? g->path : "<gguf>";
    const char *arch;
    sqz_llama_config c = {0};
    if (sqz_gguf_get_str(g, "general.architecture", &arch, err)) return SQZ_ERR;
    if (!strcmp(arch, "qwen2"))
        c.arch = SQZ_ARCH_QWEN2;
    else if (!strcmp(arch, "qwen3"))
        c.arch = SQZ_ARCH_QWEN3;
    else if (strcmp(arch, "llama") != 0 && strcmp(arch, "deci") != 0)
        return sqz_fail(err, "%s: metadata general.architecture: '%s' is not supported (expected llama, deci, qwen2 "
                             "or qwen3)", path, arch);
    if (g_int(g, arch, "embedding_length", 1, 0, &c.dim, err) || g_int(g, arch, "block_count", 1, 0, &c.n_layer, err) ||
        g_int(g, arch, "context_length", 0, 0, &c.n_ctx_train, err))
        return SQZ_ERR;
    if (c.n_layer <= 0 || c.n_layer > CFG_MAX_LAYERS)
        return sqz_fail(err, "%s: metadata %s.block_count: %d is out of range (expected 1..%d)", path, arch, c.n_layer,
                        CFG_MAX_LAYERS);
    if (alloc_layers(&c, path, err)) goto fail;
    if (g_layers(g, arch, "attention.head_count", c.n_layer, NULL, c.layer_n_head, err) ||
        g_layers(g, arch, "attention.head_count_kv", c.n_layer, c.layer_n_head, c.layer_n_head_kv, err) ||
        g_layers(g, arch, "feed_forward_length", c.n_layer, NULL, c.layer_n_ff, err))
        goto fail;
    c.n_head = c.layer_n_head[0];
    c.n_head_kv = c.layer_n_head_kv[0];
    c.n_ff = c.layer_n_ff[0];
    /* head_dim: key_length when given; else the rotated dims (= head_dim for llama); else
     * dim over the first non-zero head count */
    int max_head = 0;
    for (int l = 0; l < c.n_layer; l++)
        if (c.layer_n_head[l] > max_head) max_head = c.layer_n_head[l];
    for (int l = 0; l < c.n_layer && !c.n_head; l++) c.n_head = c.layer_n_head[l];
    for (int l = 0; l < c.n_layer && !c.n_head_kv; l++) c.n_head_kv = c.layer_n_head_kv[l];
    if (c.n_head == 0) c.n_head = c.layer_n_head[0];
    if (g_int(g, arch, "rope.dimension_count", 0, max_head > 0 ? c.dim / max_head : 0, &c.head_dim, err) ||
        g_int(g, arch, "attention.key_length", 0, c.head_dim, &c.head_dim, err))
        goto fail;
    {
        char key[256];
        const sqz_gguf_kv *kv;
        double eps, theta = 10000.0;
        snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
        if (sqz_gguf_get_f64(g, key, &eps, err)) goto fail;
        snprintf(key, sizeof key, "%s.rope.freq_base", arch);
        if (sqz_gguf_find(g, key) && sqz_gguf_get_f64(g, key, &theta, err)) goto fail;
        c.norm_eps = (float)eps;
        c.rope_theta = (float)theta;
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        kv = sqz_gguf_find(g, key);
        if (kv && !(kv->type == SQZ_GGUF_STRING && strcmp(kv->str, "none") == 0)) {
            sqz_fail(err, "%s: metadata %s: rope scaling '%s' is not supported yet", path, key,
                     kv->type == SQZ_GGUF_STRING ? kv->str : "?");
            goto fail;
        }
        /* vocabulary size: explicit, else the tokenizer's token list; 0 lets the loader
         * take it from token_embd */
        snprintf(key, sizeof key, "%s.vocab_size", arch);
        if (sqz_gguf_find(g, key)) {
            if (g_int(g, arch, "vocab_size", 1, 0, &c.n_vocab, err)) goto fail;
        } else if ((kv = sqz_gguf_find(g, "tokenizer.ggml.tokens")) && kv->type == SQZ_GGUF_ARRAY) {
            if (kv->arr_n > CFG_MAX_VOCAB) {
                sqz_fail(err, "%s: metadata tokenizer.ggml.tokens: %llu tokens is out of range", path,
                         (unsigned long long)kv->arr_n);
                goto fail;
            }
            c.n_vocab = (int)kv->arr_n;
        }
        c.bos_id = c.eos_id = -1;
        static const char *tok_keys[2] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
        int *tok_out[2] = {&c.bos_id, &c.eos_id};
        for (int k = 0; k < 2; k++) {
            int64_t v;
            if (!sqz_gguf_find(g, tok_keys[k])) continue;
            if (sqz_gguf_get_i64(g, tok_keys[k], &v, err)) goto fail;
            if (fit_int(v, tok_out[k])) {
                sqz_fail(err, "%s: metadata %s: %lld is out of range", path, tok_keys[k], (long long)v);
                goto fail;
            }
        }
    }
    /* llama.cpp's converter permutes llama q/k rows to adjacent pairs; the Qwen families
     * keep Hugging Face's rotate-half rows (ggml's NEOX mode). */
    c.rope_mode = c.arch == SQZ_ARCH_LLAMA ? SQZ_ROPE_ADJACENT : SQZ_ROPE_HALF;
    c.attn_bias = c.arch == SQZ_ARCH_QWEN2; /* a llama/deci file may carry them too: the loader looks */
    c.qk_norm = c.arch == SQZ_ARCH_QWEN3;
    c.tie_embeddings = 0;
    if (validate(&c, path, gguf_field, err)) goto fail;
    *cfg = c;
    return SQZ_OK;
fail:
    sqz_config_free(&c);
    return SQZ_ERR;
}

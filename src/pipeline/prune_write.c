/* Writing a pruned model (GGUF or a Hugging Face folder), and sqz_prune_run, which picks
 * the widths and writes it: see include/sqz/pipeline.h. */
#include "sqz/pipeline.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sqz/calib.h"
#include "sqz/gguf_write.h"

/* The output: a GGUF file, or a Hugging Face folder (model.safetensors + config.json). */
typedef struct {
    const sqz_model *m;
    const sqz_layer_keep *keep;
    sqz_gguf_writer w;
    double percdamp, shrink;
    int compensate;
    int hf;          /* 1: safetensors */
    sqz_out st;
    cJSON *header;   /* the safetensors header being built */
    uint64_t st_off; /* its data offset so far */
    /* a streamed file (sqz_prune_stream_*): the layers' tensors are left as holes at
     * first (their index ranges in layer_first, NULL for a file written whole), later
     * written into the loaded model's tensors dst[] through fd (-1 otherwise) */
    int64_t *layer_first; /* [n_layer + 1]: the writer's tensor index where layer l begins */
    int fd;
    const uint8_t *base;  /* the loaded file's map: a tensor's file offset = data - base */
    const sqz_tensor *dst[16];
    int n_dst, cur_dst;
    size_t dst_written;
} prune_writer;

/* Into the loaded file's tensors dst[], in order, at their offsets. */
static int fill_write(prune_writer *p, const uint8_t *data, size_t n, sqz_err *err) {
    while (n > 0) {
        if (p->cur_dst >= p->n_dst) return sqz_fail(err, "prune stream: %zu bytes beyond the layer's tensors", n);
        const sqz_tensor *t = p->dst[p->cur_dst];
        size_t k = t->nbytes - p->dst_written;
        if (k > n) k = n;
        off_t off = (off_t)((const uint8_t *)t->data - p->base) + (off_t)p->dst_written;
        for (size_t done = 0; done < k;) {
            ssize_t r = pwrite(p->fd, data + done, k - done, off + (off_t)done);
            if (r <= 0) return sqz_fail(err, "prune stream: writing %s: %s", t->name, strerror(errno));
            done += (size_t)r;
        }
        p->dst_written += k, data += k, n -= k;
        if (p->dst_written == t->nbytes) p->cur_dst++, p->dst_written = 0;
    }
    return SQZ_OK;
}

static int sink_write(prune_writer *p, const void *data, size_t n, sqz_err *err) {
    if (p->fd >= 0) return fill_write(p, data, n, err);
    return p->hf ? sqz_out_write(&p->st, data, n, err) : sqz_gguf_write_data(&p->w, data, n, err);
}

/* The Hugging Face name of a GGUF tensor name. */
static void hf_name(const char *g, char *out, size_t cap) {
    static const char *const map[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"}};
    static const char *const norms[][2] = {{"attn_q_norm", "self_attn.q_norm"}, {"attn_k_norm", "self_attn.k_norm"}};
    int l;
    char what[64], kind[16];
    if (sscanf(g, "blk.%d.%63[a-z_].%15[a-z]", &l, what, kind) == 3) {
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(what, map[i][0])) {
                snprintf(out, cap, "model.layers.%d.%s.%s", l, map[i][1], kind);
                return;
            }
        for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++)
            if (!strcmp(what, norms[i][0])) {
                snprintf(out, cap, "model.layers.%d.%s.%s", l, norms[i][1], kind);
                return;
            }
    }
    snprintf(out, cap, "%s", !strcmp(g, "token_embd.weight") ? "model.embed_tokens.weight"
                             : !strcmp(g, "output_norm.weight") ? "model.norm.weight"
                             : !strcmp(g, "output.weight") ? "lm_head.weight" : g);
}

/* Rows of t as F32: blocks of `block` rows, the kept block indices idx[n]; perm_d > 0
 * permutes each block (one head of perm_d rows) from rotate-half to adjacent pairs (a
 * Hugging Face q/k into GGUF, as sqz quantize does), perm_d < 0 back (GGUF into a
 * Hugging Face folder). */
static int copy_row_blocks(prune_writer *p, const sqz_tensor *t, int64_t block, const int *idx, int n, int perm_d,
                           sqz_err *err) {
    int64_t cols = t->ne[0];
    float *row = malloc((size_t)cols * sizeof(float));
    if (!row) return sqz_fail(err, "prune: out of memory");
    for (int i = 0; i < n; i++)
        for (int64_t r = 0; r < block; r++) {
            int64_t src = r;
            if (perm_d > 0) { /* rotate-half rows to adjacent pairs */
                int64_t half = perm_d / 2, k = r / 2, j = r % 2;
                src = j * half + k;
            } else if (perm_d < 0) { /* adjacent pairs to rotate-half: row j·d/2 + i is old 2i + j */
                int64_t half = -perm_d / 2, j = r / half, k = r % half;
                src = 2 * k + j;
            }
            if (sqz_tensor_rows_f32(t, (int64_t)idx[i] * block + src, 1, row, err) ||
                sink_write(p, row, (size_t)cols * sizeof(float), err)) {
                free(row);
                return SQZ_ERR;
            }
        }
    free(row);
    return SQZ_OK;
}

/* The row-permutation of copy_row_blocks on one vector (a q/k/v bias): elements in blocks
 * of `block`, the kept blocks idx[n], perm_d as there. */
static int copy_vec_blocks(prune_writer *p, const sqz_tensor *t, int64_t block, const int *idx, int n, int perm_d,
                           sqz_err *err) {
    int64_t len = t->ne[0];
    float *v = malloc((size_t)len * sizeof(float)), *o = malloc((size_t)(n > 0 ? n : 1) * (size_t)block * sizeof(float));
    int rc = SQZ_ERR;
    if (!v || !o) {
        sqz_fail(err, "prune: out of memory");
        goto done;
    }
    if (sqz_tensor_rows_f32(t, 0, 1, v, err)) goto done;
    for (int i = 0; i < n; i++)
        for (int64_t r = 0; r < block; r++) {
            int64_t src = r;
            if (perm_d > 0) src = (r % 2) * (perm_d / 2) + r / 2;
            else if (perm_d < 0) src = 2 * (r % (-perm_d / 2)) + r / (-perm_d / 2);
            o[(int64_t)i * block + r] = v[(int64_t)idx[i] * block + src];
        }
    rc = sink_write(p, o, (size_t)n * (size_t)block * sizeof(float), err);
done:
    free(v);
    free(o);
    return rc;
}

/* A whole tensor as F32. */
static int copy_whole(prune_writer *p, const sqz_tensor *t, sqz_err *err) {
    int64_t rows = t->n_dims > 1 ? sqz_tensor_nelements(t) / t->ne[0] : 1;
    int *idx = malloc((size_t)rows * sizeof(int));
    if (!idx) return sqz_fail(err, "prune: out of memory");
    for (int64_t r = 0; r < rows; r++) idx[r] = (int)r;
    int rc = copy_row_blocks(p, t, 1, idx, (int)rows, 0, err);
    free(idx);
    return rc;
}

/* The consumer matrix W (rows × n) without the removed columns, as F32. */
static int write_consumer(prune_writer *p, const sqz_tensor *t, const double *H, const int *keep, int n_keep,
                          sqz_err *err) {
    int64_t n = t->ne[0], rows = t->ne[1];
    float *W = malloc((size_t)(rows * n) * sizeof(float)), *Wk = malloc((size_t)(rows * (n_keep + 1)) * sizeof(float));
    int rc = SQZ_ERR;
    if (!W || !Wk) {
        sqz_fail(err, "prune: out of memory for %s", t->name);
        goto done;
    }
    if (sqz_tensor_rows_f32(t, 0, rows, W, err) ||
        sqz_prune_columns(W, rows, n, H, keep, n_keep, p->percdamp, p->shrink, p->compensate && H, Wk, err) ||
        sink_write(p, Wk, (size_t)(rows * n_keep) * sizeof(float), err))
        goto done;
    rc = SQZ_OK;
done:
    free(W); free(Wk);
    return rc;
}

static int write_layer(prune_writer *p, int l, const double *H_o, const double *H_down, sqz_err *err) {
    const sqz_model *m = p->m;
    const sqz_layer *L = &m->layers[l];
    const sqz_layer_keep *k = &p->keep[l];
    int d = m->cfg.head_dim;
    /* q/k rows (and their biases) between the two RoPE layouts: a Hugging Face folder is
     * rotate-half, a GGUF file llama/deci, so adjacent pairs */
    int src_half = m->cfg.rope_mode == SQZ_ROPE_HALF, out_half = p->hf;
    int perm = src_half == out_half ? 0 : out_half ? -d : d;
    if (k->n_head > 0) {
        int *cols = malloc((size_t)k->n_head * (size_t)d * sizeof(int));
        if (!cols) return sqz_fail(err, "prune: out of memory");
        for (int i = 0; i < k->n_head; i++)
            for (int j = 0; j < d; j++) cols[i * d + j] = k->head[i] * d + j;
        int rc = copy_whole(p, L->attn_norm, err) || copy_row_blocks(p, L->wq, d, k->head, k->n_head, perm, err) ||
                 copy_row_blocks(p, L->wk, d, k->head_kv, k->n_head_kv, perm, err) ||
                 copy_row_blocks(p, L->wv, d, k->head_kv, k->n_head_kv, 0, err) ||
                 write_consumer(p, L->wo, H_o, cols, k->n_head * d, err) ||
                 (L->bq && (copy_vec_blocks(p, L->bq, d, k->head, k->n_head, perm, err) ||
                            copy_vec_blocks(p, L->bk, d, k->head_kv, k->n_head_kv, perm, err) ||
                            copy_vec_blocks(p, L->bv, d, k->head_kv, k->n_head_kv, 0, err))) ||
                 (L->q_norm && (copy_whole(p, L->q_norm, err) || copy_whole(p, L->k_norm, err)));
        free(cols);
        if (rc) return SQZ_ERR;
    }
    if (k->n_ff > 0 &&
        (copy_whole(p, L->ffn_norm, err) || copy_row_blocks(p, L->w_gate, 1, k->ff, k->n_ff, 0, err) ||
         copy_row_blocks(p, L->w_up, 1, k->ff, k->n_ff, 0, err) ||
         write_consumer(p, L->w_down, H_down, k->ff, k->n_ff, err)))
        return SQZ_ERR;
    return SQZ_OK;
}

static int layer_grams_cb(void *vctx, int layer, sqz_layer_grams *g, int64_t n_tokens, sqz_err *err) {
    (void)n_tokens; /* H's scale does not matter: the dampening is relative */
    return write_layer(vctx, layer, g->g[SQZ_SITE_ATTN_O_IN], g->g[SQZ_SITE_FFN_DOWN_IN], err);
}

static int add(prune_writer *p, const char *name, const sqz_tensor *t, int type, int64_t ne0, int64_t ne1,
               sqz_err *err) {
    int64_t ne[2] = {ne0, ne1};
    int nd = t->n_dims > 1 ? 2 : 1;
    if (!p->hf) return sqz_gguf_add_tensor(&p->w, name, type, nd, ne, err);
    char hn[128];
    hf_name(name, hn, sizeof hn);
    cJSON *e = cJSON_CreateObject();
    double shape[2] = {(double)(nd == 2 ? ne1 : ne0), (double)ne0};
    uint64_t bytes = (uint64_t)ne0 * (uint64_t)(nd == 2 ? ne1 : 1) * sizeof(float);
    double off[2] = {(double)p->st_off, (double)(p->st_off + bytes)};
    if (!e || !cJSON_AddStringToObject(e, "dtype", "F32") ||
        !cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(shape, nd)) ||
        !cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(off, 2))) {
        cJSON_Delete(e);
        return sqz_fail(err, "prune: out of memory");
    }
    cJSON_AddItemToObject(p->header, hn, e);
    p->st_off += bytes;
    return SQZ_OK;
}

static int check_keep(const sqz_model *m, const sqz_layer_keep *keep, sqz_err *err) {
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const sqz_layer_keep *k = &keep[l];
        int nh = m->cfg.layer_n_head[l], nkv = m->cfg.layer_n_head_kv[l], nff = m->cfg.layer_n_ff[l];
        if (k->n_head < 0 || k->n_head > nh || k->n_head_kv < 0 || k->n_head_kv > nkv || k->n_ff < 0 || k->n_ff > nff)
            return sqz_fail(err, "prune: layer %d keeps %d/%d heads, %d/%d kv heads, %d/%d channels: out of range", l,
                            k->n_head, nh, k->n_head_kv, nkv, k->n_ff, nff);
        if ((k->n_head == 0) != (k->n_head_kv == 0) || (k->n_head_kv && k->n_head % k->n_head_kv))
            return sqz_fail(err, "prune: layer %d keeps %d query heads for %d kv heads: not a whole number per kv head "
                                 "(grouped-query attention)", l, k->n_head, k->n_head_kv);
        int G = nkv ? nh / nkv : 1, b = k->n_head_kv ? k->n_head / k->n_head_kv : 0;
        for (int i = 0; i < k->n_head; i++) /* query head i of the pruned layer reads kv head i / b */
            if (k->head[i] / G != k->head_kv[i / b] || (i && k->head[i] <= k->head[i - 1]))
                return sqz_fail(err, "prune: layer %d: kept query head %d does not belong to kept kv head %d in order",
                                l, k->head[i], k->head_kv[i / b]);
        for (int i = 0; i < k->n_ff; i++)
            if (k->ff[i] < 0 || k->ff[i] >= nff || (i && k->ff[i] <= k->ff[i - 1]))
                return sqz_fail(err, "prune: layer %d: kept channel %d out of range or order", l, k->ff[i]);
    }
    return SQZ_OK;
}

/* The safetensors file's header (u64 length + JSON padded to 8 bytes) into dir. */
static int st_begin(prune_writer *p, const char *dir, sqz_err *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return sqz_fail(err, "%s: cannot create the folder: %s", dir, strerror(errno));
    cJSON *meta = cJSON_CreateObject();
    if (!meta || !cJSON_AddStringToObject(meta, "format", "pt")) {
        cJSON_Delete(meta);
        return sqz_fail(err, "prune: out of memory");
    }
    cJSON_AddItemToObject(p->header, "__metadata__", meta);
    char *h = cJSON_PrintUnformatted(p->header), path[4200];
    if (!h) return sqz_fail(err, "prune: out of memory");
    size_t n = strlen(h), padded = (n + 7) / 8 * 8;
    char *buf = malloc(padded + 8);
    if (!buf) {
        free(h);
        return sqz_fail(err, "prune: out of memory");
    }
    uint64_t len = padded;
    for (int i = 0; i < 8; i++) buf[i] = (char)(len >> (8 * i) & 0xff);
    memcpy(buf + 8, h, n);
    memset(buf + 8 + n, ' ', padded - n);
    free(h);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = sqz_out_open(&p->st, path, err) || sqz_out_write(&p->st, buf, padded + 8, err);
    free(buf);
    return rc ? SQZ_ERR : SQZ_OK;
}

/* config.json of the pruned model: LlamaForCausalLM's keys plus the per-layer counts
 * (num_attention_heads_per_layer, num_key_value_heads_per_layer,
 * intermediate_size_per_layer) that sqz's loader reads. */
static int st_config(const sqz_model *m, const int *nh, const int *nkv, const int *nff, const char *dir, sqz_err *err) {
    const sqz_llama_config *c = &m->cfg;
    int maxh = 0, maxkv = 0, maxff = 0;
    for (int l = 0; l < c->n_layer; l++) {
        maxh = nh[l] > maxh ? nh[l] : maxh;
        maxkv = nkv[l] > maxkv ? nkv[l] : maxkv;
        maxff = nff[l] > maxff ? nff[l] : maxff;
    }
    cJSON *j = cJSON_CreateObject();
    const char *arch[1] = {c->arch == SQZ_ARCH_QWEN2 ? "Qwen2ForCausalLM"
                           : c->arch == SQZ_ARCH_QWEN3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"};
    cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddStringToObject(j, "model_type", sqz_arch_name(c->arch));
    cJSON_AddNumberToObject(j, "hidden_size", c->dim);
    cJSON_AddNumberToObject(j, "intermediate_size", maxff > 0 ? maxff : 1);
    cJSON_AddNumberToObject(j, "num_attention_heads", maxh > 0 ? maxh : 1);
    cJSON_AddNumberToObject(j, "num_key_value_heads", maxkv > 0 ? maxkv : 1);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layer);
    cJSON_AddNumberToObject(j, "vocab_size", c->n_vocab);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->norm_eps);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->n_ctx_train);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", m->output == m->tok_embd);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
    if (c->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    cJSON_AddItemToObject(j, "num_attention_heads_per_layer", cJSON_CreateIntArray(nh, c->n_layer));
    cJSON_AddItemToObject(j, "num_key_value_heads_per_layer", cJSON_CreateIntArray(nkv, c->n_layer));
    cJSON_AddItemToObject(j, "intermediate_size_per_layer", cJSON_CreateIntArray(nff, c->n_layer));
    char *txt = cJSON_Print(j), path[4200];
    cJSON_Delete(j);
    if (!txt) return sqz_fail(err, "prune: out of memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    sqz_out o;
    int rc = sqz_out_open(&o, path, err) || sqz_out_write(&o, txt, strlen(txt), err) || sqz_out_write(&o, "\n", 1, err) ||
             sqz_out_commit(&o, err);
    if (rc) sqz_out_abort(&o);
    free(txt);
    return rc ? SQZ_ERR : SQZ_OK;
}

/* The pruned model into path through p (set up by the caller; p->w is initialized and
 * freed here). With p->layer_first set every layer's tensors are left as holes and their
 * index ranges go there (a GGUF file for sqz_prune_stream_*). */
static int prune_write_to(prune_writer *pp, sqz_pool *pool, const int32_t *windows, int nsamples, int seqlen,
                          const char *path, sqz_err *err) {
    prune_writer p = *pp;
    const sqz_model *m = p.m;
    const sqz_layer_keep *keep = p.keep;
    const sqz_llama_config *c = &m->cfg;
    const int hf = p.hf, compensate = p.compensate;
    sqz_gguf_writer_init(&p.w);
    int *nh = malloc((size_t)c->n_layer * 3 * sizeof(int)), rc = SQZ_ERR;
    if (hf) p.header = cJSON_CreateObject();
    if (!nh || (hf && !p.header)) {
        free(nh);
        cJSON_Delete(p.header);
        sqz_gguf_writer_free(&p.w);
        return sqz_fail(err, "prune: out of memory");
    }
    int *nkv = nh + c->n_layer, *nff = nkv + c->n_layer;
    for (int l = 0; l < c->n_layer; l++) nh[l] = keep[l].n_head, nkv[l] = keep[l].n_head_kv, nff[l] = keep[l].n_ff;
    if (!hf && sqz_model_write_gguf_meta_shapes(m, nh, nkv, nff, &p.w, 0 /* ALL_F32 */, err)) goto done;
    int tied = m->output == m->tok_embd;
    int64_t dim = c->dim, d = c->head_dim;
    char name[96];
    if (add(&p, "token_embd.weight", m->tok_embd, SQZ_TYPE_F32, dim, c->n_vocab, err)) goto done;
    for (int l = 0; l < c->n_layer; l++) {
        const sqz_layer *L = &m->layers[l];
        const sqz_layer_keep *k = &keep[l];
        if (p.layer_first) p.layer_first[l] = p.w.n_tensors;
        if (k->n_head > 0) {
            struct { const char *n; const sqz_tensor *t; int type; int64_t ne0, ne1; } a[5] = {
                {"attn_norm", L->attn_norm, SQZ_TYPE_F32, dim, 1},
                {"attn_q", L->wq, SQZ_TYPE_F32, dim, k->n_head * d},
                {"attn_k", L->wk, SQZ_TYPE_F32, dim, k->n_head_kv * d},
                {"attn_v", L->wv, SQZ_TYPE_F32, dim, k->n_head_kv * d},
                {"attn_output", L->wo, SQZ_TYPE_F32, k->n_head * d, dim}};
            for (int i = 0; i < 5; i++) {
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, a[i].n);
                if (add(&p, name, a[i].t, a[i].type, a[i].ne0, a[i].ne1, err)) goto done;
            }
            /* vectors in write_layer's order: q/k/v biases (pruned with their rows), q/k norms */
            struct { const char *n; const sqz_tensor *t; int64_t ne0; } v[5] = {
                {"attn_q.bias", L->bq, k->n_head * d}, {"attn_k.bias", L->bk, k->n_head_kv * d},
                {"attn_v.bias", L->bv, k->n_head_kv * d}, {"attn_q_norm.weight", L->q_norm, d},
                {"attn_k_norm.weight", L->k_norm, d}};
            for (int i = 0; i < 5; i++) {
                if (!v[i].t) continue;
                snprintf(name, sizeof name, "blk.%d.%s", l, v[i].n);
                if (add(&p, name, v[i].t, SQZ_TYPE_F32, v[i].ne0, 1, err)) goto done;
            }
        }
        if (k->n_ff > 0) {
            struct { const char *n; const sqz_tensor *t; int type; int64_t ne0, ne1; } a[4] = {
                {"ffn_norm", L->ffn_norm, SQZ_TYPE_F32, dim, 1},
                {"ffn_gate", L->w_gate, SQZ_TYPE_F32, dim, k->n_ff},
                {"ffn_up", L->w_up, SQZ_TYPE_F32, dim, k->n_ff},
                {"ffn_down", L->w_down, SQZ_TYPE_F32, k->n_ff, dim}};
            for (int i = 0; i < 4; i++) {
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, a[i].n);
                if (add(&p, name, a[i].t, a[i].type, a[i].ne0, a[i].ne1, err)) goto done;
            }
        }
    }
    if (p.layer_first) p.layer_first[c->n_layer] = p.w.n_tensors;
    if (add(&p, "output_norm.weight", m->out_norm, SQZ_TYPE_F32, dim, 1, err) ||
        (!tied && add(&p, "output.weight", m->output, SQZ_TYPE_F32, dim, c->n_vocab, err)))
        goto done;
    /* Llama-3's frequency divisors: a GGUF tensor; config.json would need the
     * rope_scaling parameters they came from */
    sqz_tensor rope_t = {(char *)"rope_freqs.weight", SQZ_TYPE_F32, 1, {d / 2, 1, 1, 1}, c->rope_freqs,
                         (size_t)(d / 2) * sizeof(float)};
    if (c->rope_freqs && hf) {
        sqz_fail(err, "%s: rope_freqs (Llama-3 rope scaling) cannot be written to a Hugging Face config yet; write GGUF",
                 m->path);
        goto done;
    }
    if (c->rope_freqs && add(&p, "rope_freqs.weight", &rope_t, SQZ_TYPE_F32, d / 2, 1, err)) goto done;
    if ((hf ? st_begin(&p, path, err) : sqz_gguf_write_begin(&p.w, path, err)) || copy_whole(&p, m->tok_embd, err))
        goto done;
    if (p.layer_first) { /* holes: the layers are written later (sqz_prune_stream_fill) */
        size_t bytes = 0;
        for (int64_t i = p.layer_first[0]; i < p.layer_first[c->n_layer]; i++) bytes += p.w.tensors[i].nbytes;
        if (sqz_gguf_write_skip(&p.w, bytes, err)) goto done;
    } else if (compensate) {
        if (sqz_calib_run(m, pool, windows, nsamples, seqlen, layer_grams_cb, &p, NULL, err)) goto done;
    } else {
        for (int l = 0; l < c->n_layer; l++)
            if (write_layer(&p, l, NULL, NULL, err)) goto done;
    }
    if (copy_whole(&p, m->out_norm, err) || (!tied && copy_whole(&p, m->output, err)) ||
        (c->rope_freqs && copy_whole(&p, &rope_t, err)) ||
        (hf ? sqz_out_commit(&p.st, err) || st_config(m, nh, nkv, nff, path, err) : sqz_gguf_write_end(&p.w, err)))
        goto done;
    rc = SQZ_OK;
done:
    free(nh);
    if (hf) sqz_out_abort(&p.st);
    cJSON_Delete(p.header);
    sqz_gguf_writer_free(&p.w);
    return rc;
}

static int prune_write(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                       int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *path,
                       int hf, sqz_err *err) {
    if (check_keep(m, keep, err)) return SQZ_ERR;
    if (compensate && (!windows || nsamples < 1 || seqlen < 1))
        return sqz_fail(err, "prune: compensation needs calibration windows");
    prune_writer p = {.m = m, .keep = keep, .percdamp = percdamp, .shrink = shrink, .compensate = compensate,
                      .hf = hf, .fd = -1};
    return prune_write_to(&p, pool, windows, nsamples, seqlen, path, err);
}

struct sqz_prune_stream {
    prune_writer p; /* its layer_first and fd are the stream's */
    sqz_calib_stepper *st;
    const sqz_model *pm; /* the loaded pruned file */
};

void sqz_prune_stream_end(sqz_prune_stream *ps) {
    if (!ps) return;
    sqz_calib_end(ps->st);
    if (ps->p.fd >= 0) close(ps->p.fd);
    free(ps->p.layer_first);
    free(ps);
}

int sqz_prune_stream_begin(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                           int nsamples, int seqlen, double percdamp, double shrink, const char *path,
                           sqz_prune_stream **out, sqz_err *err) {
    *out = NULL;
    if (check_keep(m, keep, err)) return SQZ_ERR;
    if (!windows || nsamples < 1 || seqlen < 1) return sqz_fail(err, "prune: compensation needs calibration windows");
    sqz_prune_stream *ps = calloc(1, sizeof *ps);
    int64_t *first = calloc((size_t)m->cfg.n_layer + 1, sizeof(int64_t));
    if (!ps || !first) {
        free(ps);
        free(first);
        return sqz_fail(err, "prune: out of memory");
    }
    ps->p = (prune_writer){.m = m, .keep = keep, .percdamp = percdamp, .shrink = shrink, .compensate = 1,
                           .layer_first = first, .fd = -1};
    if (prune_write_to(&ps->p, pool, windows, nsamples, seqlen, path, err) ||
        sqz_calib_begin(m, NULL, pool, windows, nsamples, seqlen, NULL, NULL, &ps->st, err)) {
        sqz_prune_stream_end(ps);
        return SQZ_ERR;
    }
    if ((ps->p.fd = open(path, O_WRONLY)) < 0) {
        sqz_fail(err, "%s: cannot open for writing: %s", path, strerror(errno));
        sqz_prune_stream_end(ps);
        return SQZ_ERR;
    }
    *out = ps;
    return SQZ_OK;
}

int sqz_prune_stream_attach(sqz_prune_stream *ps, const sqz_model *pruned, sqz_err *err) {
    if (pruned->source != SQZ_SRC_GGUF || !pruned->gguf.map.data)
        return sqz_fail(err, "prune stream: the pruned model is not the mapped GGUF file");
    ps->pm = pruned;
    ps->p.base = pruned->gguf.map.data;
    return SQZ_OK;
}

/* The loaded model's tensors of layer l in write_layer's order. */
static int layer_dst(const sqz_prune_stream *ps, int l, const sqz_tensor **dst) {
    const sqz_layer *L = &ps->pm->layers[l];
    const sqz_layer_keep *k = &ps->p.keep[l];
    int n = 0;
    if (k->n_head > 0) {
        const sqz_tensor *a[10] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->q_norm, L->k_norm};
        for (int i = 0; i < 10; i++)
            if (a[i]) dst[n++] = a[i];
    }
    if (k->n_ff > 0) dst[n++] = L->ffn_norm, dst[n++] = L->w_gate, dst[n++] = L->w_up, dst[n++] = L->w_down;
    return n;
}

int sqz_prune_stream_fill(sqz_prune_stream *ps, int layer, sqz_err *err) {
    if (!ps->pm) return sqz_fail(err, "prune stream: fill before attach");
    if (layer < sqz_calib_next(ps->st) || layer >= ps->p.m->cfg.n_layer)
        return sqz_fail(err, "prune stream: layer %d asked for after layer %d (layers go in order)", layer,
                        sqz_calib_next(ps->st) - 1);
    sqz_layer_grams *g = NULL;
    while (sqz_calib_next(ps->st) <= layer) /* the original model's stream up to `layer` */
        if (sqz_calib_step(ps->st, &g, err)) return SQZ_ERR;
    ps->p.n_dst = layer_dst(ps, layer, ps->p.dst);
    ps->p.cur_dst = 0, ps->p.dst_written = 0;
    if (write_layer(&ps->p, layer, g->g[SQZ_SITE_ATTN_O_IN], g->g[SQZ_SITE_FFN_DOWN_IN], err)) return SQZ_ERR;
    if (ps->p.cur_dst != ps->p.n_dst) return sqz_fail(err, "prune stream: layer %d: %d of %d tensors written", layer,
                                                      ps->p.cur_dst, ps->p.n_dst);
    return SQZ_OK;
}

int sqz_prune_stream_release(sqz_prune_stream *ps, int layer, sqz_err *err) {
    const sqz_tensor *dst[16];
    int n = layer_dst(ps, layer, dst);
    for (int i = 0; i < n; i++) {
        off_t off = (off_t)((const uint8_t *)dst[i]->data - ps->p.base);
        if (fallocate(ps->p.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, (off_t)dst[i]->nbytes) != 0) {
            if (errno == EOPNOTSUPP) return SQZ_OK; /* kept: the file grows as an unstreamed one */
            return sqz_fail(err, "prune stream: releasing %s: %s", dst[i]->name, strerror(errno));
        }
    }
    return SQZ_OK;
}

int sqz_prune_write(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                    int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *path,
                    sqz_err *err) {
    return prune_write(m, pool, keep, windows, nsamples, seqlen, percdamp, shrink, compensate, path, 0, err);
}

int sqz_prune_write_hf(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const int32_t *windows,
                       int nsamples, int seqlen, double percdamp, double shrink, int compensate, const char *dir,
                       sqz_err *err) {
    return prune_write(m, pool, keep, windows, nsamples, seqlen, percdamp, shrink, compensate, dir, 1, err);
}


/* ---------------------------------------------------------------- sqz_prune_run */

void sqz_prune_report_free(sqz_prune_report *r) {
    if (!r) return;
    for (int l = 0; r->keep && l < r->n_layer; l++) sqz_layer_keep_free(&r->keep[l]);
    free(r->keep);
    memset(r, 0, sizeof *r);
}

/* The attention option of layer l with the fewest heads >= target, then the cheapest
 * (by the plain removal cost when ranking by magnitude). */
static int pick_attn(const sqz_layer_widths *w, int target, int magnitude) {
    int best = 0;
    for (int i = 1; i < w->n_attn; i++) {
        const sqz_width_option *a = &w->attn[i], *b = &w->attn[best];
        double ca = magnitude ? a->dl_plain : a->dl, cb = magnitude ? b->dl_plain : b->dl;
        if (a->n_keep < target) continue;
        if (a->n_keep < b->n_keep || (a->n_keep == b->n_keep && ca < cb)) best = i;
    }
    return best;
}

static int pick_ffn(const sqz_layer_widths *w, int target) {
    for (int i = 0; i < w->n_ffn; i++)
        if (w->ffn[i].n_keep == target) return i;
    return 0;
}

int sqz_prune_run(const sqz_model *m, const char *out, const char *hf_out, const sqz_prune_opts *o, sqz_pool *pool,
                  sqz_prune_report *rep, sqz_err *err) {
    memset(rep, 0, sizeof *rep);
    if (!out && !hf_out) return sqz_fail(err, "prune: no output given");
    int nl = m->cfg.n_layer, rc = SQZ_OK, have_pm = 0;
    sqz_model pm;
    sqz_sens sens = {0};
    /* the FFN widths: one step from full to the target keeps the estimate to the two
     * options used (every layer of a Llama has the same n_ff before pruning) */
    int nff0 = m->cfg.layer_n_ff[0], ffn_target = (int)lround(o->ffn_keep * nff0 / 32.0) * 32;
    if (nff0 < 64) ffn_target = (int)lround(o->ffn_keep * nff0);
    if (ffn_target > nff0) ffn_target = nff0;
    for (int l = 0; l < nl; l++)
        if (m->cfg.layer_n_ff[l] != nff0)
            return sqz_fail(err, "prune: the model's layers have different FFN widths already (a pruned model)");
    int step = nff0 - ffn_target > 0 ? nff0 - ffn_target : nff0;
    sqz_sens_opts so = {o->windows, o->nsamples, o->seqlen, NULL, 0, o->damp, o->shrink, 0, NULL, 0, o->progress,
                        step, o->magnitude, 0, 0, NULL, NULL, NULL};
    if (sqz_sensitivity(m, m, pool, &so, &sens, err)) return SQZ_ERR;
    if (!(rep->keep = calloc((size_t)nl, sizeof *rep->keep))) {
        rc = sqz_fail(err, "prune: out of memory");
        goto done;
    }
    rep->n_layer = nl;
    for (int l = 0; l < nl; l++) {
        const sqz_layer_widths *w = &sens.widths[l];
        int nh = m->cfg.layer_n_head[l];
        const sqz_width_option *ao = &w->attn[pick_attn(w, (int)lround(o->attn_keep * nh), o->magnitude)];
        const sqz_width_option *fo = &w->ffn[pick_ffn(w, ffn_target)];
        if (sqz_layer_keep_set(&rep->keep[l], ao, fo, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        rep->predicted += ao->dl + fo->dl;
        rep->predicted_plain += ao->dl_plain + fo->dl_plain;
        rep->heads += ao->n_keep, rep->heads_before += nh;
        rep->channels += fo->n_keep, rep->channels_before += m->cfg.layer_n_ff[l];
    }
    if (out && sqz_prune_write(m, pool, rep->keep, o->windows, o->nsamples, o->seqlen, o->damp, o->shrink,
                               o->compensate, out, err)) {
        rc = SQZ_ERR;
        goto done;
    }
    if (hf_out && sqz_prune_write_hf(m, pool, rep->keep, o->windows, o->nsamples, o->seqlen, o->damp, o->shrink,
                                     o->compensate, hf_out, err)) {
        rc = SQZ_ERR;
        goto done;
    }
    if (sqz_mean_loss(m, pool, o->held, o->heldout, o->seqlen, &rep->loss_before, err) ||
        sqz_model_load(&pm, out ? out : hf_out, 0, err)) {
        rc = SQZ_ERR;
        goto done;
    }
    have_pm = 1;
    if (sqz_mean_loss(&pm, pool, o->held, o->heldout, o->seqlen, &rep->loss_after, err)) {
        rc = SQZ_ERR;
        goto done;
    }
    rep->params_before = sqz_model_n_params(m);
    rep->params_after = sqz_model_n_params(&pm);
done:
    sqz_sens_free(&sens);
    if (have_pm) sqz_model_free(&pm);
    return rc;
}

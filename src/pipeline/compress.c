/* sqz_compress: mixed precision (and structured pruning) under a byte budget, and the
 * pieces it shares with the CLI's sensitivity run. See include/sqz/pipeline.h. */
#include "sqz/pipeline.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/pipeline_impl.h"
#include "sqz/eval.h"
#include "sqz/gguf_write.h"
#include "sqz/grad.h"
#include "sqz/joint.h"
#include "sqz/plan.h"
#include "sqz/quant.h"

static const char *type_name(int t) { return sqz_type_get(t) ? sqz_type_get(t)->name : "?"; }

/* ---------------------------------------------------------------- the proxy forms */

static const char *const kProxyName[SQZ_PROXY_COUNT] = {"grad", "gradtw", "diag", "local"};
static const char *const kProxyKey[SQZ_PROXY_COUNT] = {"dl_grad", "dl_gradtw", "dl_diag", "dl_local"};

const char *sqz_proxy_name(int proxy) { return proxy >= 0 && proxy < SQZ_PROXY_COUNT ? kProxyName[proxy] : "?"; }
const char *sqz_proxy_key(int proxy) { return proxy >= 0 && proxy < SQZ_PROXY_COUNT ? kProxyKey[proxy] : "?"; }

double sqz_proxy_cost(const sqz_sens_option *o, int proxy) {
    return proxy == SQZ_PROXY_GRAD     ? o->dl_grad
           : proxy == SQZ_PROXY_GRADTW ? o->dl_gradtw
           : proxy == SQZ_PROXY_DIAG   ? o->dl_diag
                                       : o->dl_local;
}

static double cost_grad(const sqz_sens_option *o) { return o->dl_grad; }
static double cost_gradtw(const sqz_sens_option *o) { return o->dl_gradtw; }
static double cost_diag(const sqz_sens_option *o) { return o->dl_diag; }
static sqz_option_cost cost_fn(int proxy) {
    return proxy == SQZ_PROXY_GRADTW ? cost_gradtw : proxy == SQZ_PROXY_DIAG ? cost_diag : cost_grad;
}

static void set_cost(sqz_sens_option *o, int proxy, double v) {
    if (proxy == SQZ_PROXY_GRAD) o->dl_grad = v;
    else if (proxy == SQZ_PROXY_GRADTW) o->dl_gradtw = v;
    else if (proxy == SQZ_PROXY_DIAG) o->dl_diag = v;
    else o->dl_local = v;
}

/* ---------------------------------------------------------------- one tensor swapped in */

static const sqz_tensor **slot_of(sqz_model *m, int idx, const sqz_tensor ***second) {
    int per = m->cfg.n_layer * SQZ_LIN_PER_LAYER;
    *second = NULL;
    if (idx < per) {
        sqz_layer *L = &m->layers[idx / SQZ_LIN_PER_LAYER];
        const sqz_tensor **s[SQZ_LIN_PER_LAYER] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        return s[idx % SQZ_LIN_PER_LAYER];
    }
    if (idx == per) {
        if (m->output == m->tok_embd) *second = &m->tok_embd;
        return &m->output;
    }
    return &m->tok_embd;
}

const sqz_tensor *sqz_pipe_tensor(sqz_model *m, int idx) {
    const sqz_tensor **b;
    return *slot_of(m, idx, &b);
}

void sqz_pipe_swap_in(sqz_model *m, sqz_pipe_swap *s, int idx, const float *data) {
    const sqz_tensor **b, **a = slot_of(m, idx, &b);
    s->idx = idx;
    s->orig_a = *a;
    s->orig_b = b ? *b : NULL;
    s->tmp = **a;
    s->tmp.type = SQZ_TYPE_F32;
    s->tmp.data = data;
    s->tmp.nbytes = (size_t)sqz_tensor_nelements(*a) * sizeof(float);
    *a = &s->tmp;
    if (b) *b = &s->tmp;
}

void sqz_pipe_swap_out(sqz_model *m, sqz_pipe_swap *s) {
    const sqz_tensor **b, **a = slot_of(m, s->idx, &b);
    *a = s->orig_a;
    if (b) *b = s->orig_b;
}

/* ---------------------------------------------------------------- sizes */

/* Bytes every plan has, an upper bound: the norms (F32), the GGUF header (the
 * metadata serialized exactly as the writer will, the tensor descriptions) and one
 * alignment's padding per tensor. The first written file then gives the exact figure. */
static int fixed_bytes(const sqz_model *m, uint64_t *out, sqz_err *err) {
    sqz_gguf_writer w;
    sqz_gguf_writer_init(&w);
    if (sqz_model_write_gguf_meta(m, &w, 7, err)) {
        sqz_gguf_writer_free(&w);
        return SQZ_ERR;
    }
    uint64_t header = 24 + w.kv_len, align = w.alignment ? w.alignment : 32, n_tensors = 0;
    sqz_gguf_writer_free(&w);
    char name[96];
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int k = 0; k < 9; k++) { /* 7 linears + 2 norms: blk.L.<name>.weight, 2-D at most */
            static const char *const nm[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
            header += 8 + (uint64_t)snprintf(name, sizeof name, "blk.%d.%s.weight", l, nm[k]) + 4 + 16 + 4 + 8;
            n_tensors++;
        }
    /* F32 vectors besides the norms: q/k/v biases, q/k norms, rope_freqs */
    uint64_t vec_bytes = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const sqz_layer *L = &m->layers[l];
        const sqz_tensor *v[5] = {L->bq, L->bk, L->bv, L->q_norm, L->k_norm};
        for (int k = 0; k < 5; k++) {
            if (!v[k]) continue;
            vec_bytes += 4 * (uint64_t)v[k]->ne[0];
            header += 8 + 32 + 4 + 8 + 4 + 8;
            n_tensors++;
        }
    }
    if (m->cfg.rope_freqs) {
        vec_bytes += 4 * (uint64_t)(m->cfg.head_dim / 2);
        header += 8 + 17 + 4 + 8 + 4 + 8;
        n_tensors++;
    }
    header += 3 * (8 + 20 + 4 + 16 + 4 + 8);
    n_tensors += 3;
    *out = (uint64_t)m->cfg.dim * 4 * (uint64_t)(1 + 2 * m->cfg.n_layer) + vec_bytes + header + align * (n_tensors + 1);
    return SQZ_OK;
}

/* ---------------------------------------------------------------- width options in a saved estimate */

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *width_json(const sqz_width_option *w, int attn) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n_keep", w->n_keep);
    cJSON_AddItemToObject(o, "keep", int_array(w->keep, w->n_keep));
    if (attn) {
        cJSON_AddNumberToObject(o, "n_keep_kv", w->n_keep_kv);
        cJSON_AddItemToObject(o, "keep_kv", int_array(w->keep_kv, w->n_keep_kv));
    }
    cJSON_AddNumberToObject(o, "dl", w->dl);
    cJSON_AddNumberToObject(o, "dl_plain", w->dl_plain);
    return o;
}

char *sqz_sens_widths_json(const sqz_sens *s, int ffn_step, sqz_err *err) {
    if (!s->widths || ffn_step <= 0) return sqz_fail(err, "sensitivity: no width options to save"), NULL;
    cJSON *root = cJSON_CreateObject(), *ws = cJSON_AddArrayToObject(root, "widths");
    cJSON *nar = cJSON_AddArrayToObject(root, "narrow");
    cJSON_AddNumberToObject(root, "prune_ffn_step", ffn_step);
    for (int l = 0; l < s->n_widths; l++) {
        const sqz_layer_widths *w = &s->widths[l];
        cJSON *lj = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(lj, "attn"), *f = cJSON_AddArrayToObject(lj, "ffn");
        cJSON_AddNumberToObject(lj, "layer", l);
        for (int k = 0; k < w->n_attn; k++) cJSON_AddItemToArray(a, width_json(&w->attn[k], 1));
        for (int k = 0; k < w->n_ffn; k++) cJSON_AddItemToArray(f, width_json(&w->ffn[k], 0));
        cJSON_AddItemToArray(ws, lj);
    }
    for (int i = 0; i < s->n_tensors; i++) {
        const sqz_sens_tensor *t = &s->t[i];
        if (!t->n_narrow) continue;
        cJSON *tj = cJSON_CreateObject(), *ops = cJSON_AddArrayToObject(tj, "options");
        cJSON_AddStringToObject(tj, "name", t->name);
        for (int k = 0; k < t->n_narrow; k++) {
            cJSON *oj = cJSON_CreateObject();
            cJSON_AddStringToObject(oj, "type", type_name(t->narrow[k].type));
            for (int f = 0; f < SQZ_PROXY_COUNT; f++) {
                double x = sqz_proxy_cost(&t->narrow[k], f);
                if (isfinite(x)) cJSON_AddNumberToObject(oj, sqz_proxy_key(f), x);
                else cJSON_AddNullToObject(oj, sqz_proxy_key(f));
            }
            cJSON_AddItemToArray(ops, oj);
        }
        cJSON_AddItemToArray(nar, tj);
    }
    char *text = cJSON_PrintUnformatted(root); /* 17 significant digits: read back exactly */
    cJSON_Delete(root);
    if (!text) sqz_fail(err, "sensitivity: out of memory for the width options' JSON");
    return text;
}

/* n ascending indices in [0, bound) from a JSON array into *out (malloc'd); -1 when not. */
static int read_keep(const cJSON *a, int n, int bound, int **out) {
    *out = NULL;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n || n < 0) return -1;
    if (n == 0) return 0;
    int *v = malloc((size_t)n * sizeof(int)), i = 0, prev = -1;
    const cJSON *it;
    if (!v) return -1;
    cJSON_ArrayForEach(it, a) {
        double x = cJSON_GetNumberValue(it);
        if (!cJSON_IsNumber(it) || x != (double)(int)x || (int)x <= prev || (int)x >= bound) {
            free(v);
            return -1;
        }
        v[i++] = prev = (int)x;
    }
    *out = v;
    return 0;
}

static int read_widths(const cJSON *arr, int attn, int bound, int bound_kv, sqz_width_option **out, int *n) {
    *out = NULL;
    *n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (*n < 1) return -1;
    sqz_width_option *w = calloc((size_t)*n, sizeof *w);
    if (!w) return -1;
    *out = w; /* freed by sqz_layer_widths_free with what it holds, also on failure */
    const cJSON *it;
    int k = 0;
    cJSON_ArrayForEach(it, arr) {
        sqz_width_option *o = &w[k++];
        const cJSON *dl = cJSON_GetObjectItem(it, "dl"), *dp = cJSON_GetObjectItem(it, "dl_plain");
        o->n_keep = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "n_keep"));
        if (!cJSON_IsNumber(dl) || !cJSON_IsNumber(dp) || read_keep(cJSON_GetObjectItem(it, "keep"), o->n_keep, bound, &o->keep))
            return -1;
        o->dl = cJSON_GetNumberValue(dl), o->dl_plain = cJSON_GetNumberValue(dp);
        if (attn) {
            o->n_keep_kv = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(it, "n_keep_kv"));
            if (read_keep(cJSON_GetObjectItem(it, "keep_kv"), o->n_keep_kv, bound_kv, &o->keep_kv)) return -1;
        }
    }
    return 0;
}

/* The width options and the narrow types' costs of a saved estimate into out (whose
 * tensors sqz_sens_options made): the file's prune_ffn_step must be ffn_step. */
static int load_widths(const char *path, const cJSON *root, const sqz_model *m, const int *types, int n_types,
                       int proxy, int ffn_step, sqz_sens *out, sqz_err *err) {
    const cJSON *step = cJSON_GetObjectItem(root, "prune_ffn_step"), *ws = cJSON_GetObjectItem(root, "widths");
    if (!cJSON_IsNumber(step) || !cJSON_IsArray(ws))
        return sqz_fail(err, "%s: no width options (\"widths\", \"prune_ffn_step\"): made without "
                        "'sqz sensitivity --prune', which compress --prune needs", path);
    if ((int)cJSON_GetNumberValue(step) != ffn_step)
        return sqz_fail(err, "%s: prune_ffn_step %d, expected %d (made for another model?)", path,
                        (int)cJSON_GetNumberValue(step), ffn_step);
    const int L = m->cfg.n_layer;
    if (cJSON_GetArraySize(ws) != L)
        return sqz_fail(err, "%s: \"widths\" has %d layers, expected %d", path, cJSON_GetArraySize(ws), L);
    if (!(out->widths = calloc((size_t)L, sizeof *out->widths))) return sqz_fail(err, "compress: out of memory");
    out->n_widths = L;
    for (int l = 0; l < L; l++) {
        const cJSON *lj = cJSON_GetArrayItem(ws, l);
        sqz_layer_widths *w = &out->widths[l];
        if (read_widths(cJSON_GetObjectItem(lj, "attn"), 1, m->cfg.layer_n_head[l], m->cfg.layer_n_head_kv[l], &w->attn,
                        &w->n_attn) ||
            read_widths(cJSON_GetObjectItem(lj, "ffn"), 0, m->cfg.layer_n_ff[l], 0, &w->ffn, &w->n_ffn))
            return sqz_fail(err, "%s: widths of layer %d: expected attn and ffn arrays of options with n_keep, "
                            "ascending keep indices within the layer's heads or channels, dl and dl_plain", path, l);
    }
    sqz_sens_add_narrow(out, types, n_types);
    const cJSON *nar = cJSON_GetObjectItem(root, "narrow"), *it;
    for (int i = 0; i < out->n_tensors; i++) {
        sqz_sens_tensor *t = &out->t[i];
        const cJSON *tj = NULL;
        cJSON_ArrayForEach(it, nar) {
            const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(it, "name"));
            if (n && !strcmp(n, t->name)) tj = it;
        }
        for (int k = 0; k < t->n_narrow; k++) {
            const cJSON *oj = NULL;
            const cJSON *ops = tj ? cJSON_GetObjectItem(tj, "options") : NULL;
            cJSON_ArrayForEach(it, ops) {
                const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(it, "type"));
                if (ty && !strcmp(ty, type_name(t->narrow[k].type))) oj = it;
            }
            const cJSON *dl = oj ? cJSON_GetObjectItem(oj, sqz_proxy_key(proxy)) : NULL;
            if (!cJSON_IsNumber(dl))
                return sqz_fail(err, "%s: no narrowed-row prediction for %s in %s", path, t->name,
                                type_name(t->narrow[k].type));
            set_cost(&t->narrow[k], proxy, cJSON_GetNumberValue(dl));
        }
    }
    return SQZ_OK;
}

/* Largest 'sqz sensitivity --json' file read (a 70B model's is a few MB). */
#define SENS_MAX_BYTES ((size_t)1 << 30)

int sqz_sens_load(const char *path, const sqz_model *m, const int *types, int n_types, int all_types, int proxy,
                  int ffn_step, sqz_sens *out, sqz_err *err) {
    char *text = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    if (sqz_read_file(path, SENS_MAX_BYTES, &text, &len, err)) return SQZ_ERR;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *arr = root ? cJSON_GetObjectItem(root, "tensors") : NULL;
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(root);
        return sqz_fail(err, "%s: not a 'sqz sensitivity --json' file (no \"tensors\" array)", path);
    }
    if (sqz_sens_options(m, types, n_types, all_types, out, err)) {
        cJSON_Delete(root);
        return SQZ_ERR;
    }
    for (int i = 0; i < out->n_tensors; i++) {
        sqz_sens_tensor *t = &out->t[i];
        const cJSON *tj = NULL, *it;
        cJSON_ArrayForEach(it, arr) {
            const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(it, "name"));
            if (n && !strcmp(n, t->name)) tj = it;
        }
        for (int k = 0; k < t->n_options; k++) {
            const cJSON *oj = NULL, *ops = tj ? cJSON_GetObjectItem(tj, "options") : NULL;
            cJSON_ArrayForEach(it, ops) {
                const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(it, "type"));
                if (ty && !strcmp(ty, type_name(t->opt[k].type))) oj = it;
            }
            const cJSON *dl = oj ? cJSON_GetObjectItem(oj, sqz_proxy_key(proxy)) : NULL;
            double bytes = oj ? cJSON_GetNumberValue(cJSON_GetObjectItem(oj, "bytes")) : -1;
            if (!cJSON_IsNumber(dl) || bytes != (double)t->opt[k].bytes) {
                sqz_fail(err, "%s: no prediction for %s in %s with %llu bytes (made for another model or other "
                         "--types / --all-types?)", path, t->name, type_name(t->opt[k].type),
                         (unsigned long long)t->opt[k].bytes);
                cJSON_Delete(root);
                sqz_sens_free(out);
                return SQZ_ERR;
            }
            set_cost(&t->opt[k], proxy, cJSON_GetNumberValue(dl));
        }
    }
    int rc = ffn_step > 0 ? load_widths(path, root, m, types, n_types, proxy, ffn_step, out, err) : SQZ_OK;
    cJSON_Delete(root);
    if (rc) sqz_sens_free(out);
    return rc;
}

/* ---------------------------------------------------------------- the estimate's checkpoint */

/* What the estimate was made from, in three parts, hex: the model (shapes, types, the
 * first bytes of every weight matrix), the calibration tokens, the types and proxy. */
static void estimate_keys(const sqz_model *m, const sqz_compress_opts *o, char keys[3][17]) {
    uint64_t h = sqz_hash64(SQZ_HASH64_SEED, &m->cfg.dim, sizeof m->cfg.dim);
    h = sqz_hash64(h, &m->cfg.n_layer, sizeof m->cfg.n_layer);
    for (int i = 0; i < sqz_sens_count(m); i++) {
        const sqz_tensor *t = sqz_pipe_tensor((sqz_model *)m, i); /* read only */
        h = sqz_hash64(h, &t->type, sizeof t->type);
        h = sqz_hash64(h, t->ne, sizeof t->ne);
        if (t->data) h = sqz_hash64(h, t->data, t->nbytes < 256 ? t->nbytes : 256);
    }
    snprintf(keys[0], 17, "%016llx", (unsigned long long)h);
    h = sqz_hash64(SQZ_HASH64_SEED, o->windows, (size_t)o->nsamples * (size_t)o->seqlen * sizeof(int32_t));
    h = sqz_hash64(h, &o->nsamples, sizeof o->nsamples);
    snprintf(keys[1], 17, "%016llx", (unsigned long long)sqz_hash64(h, &o->seqlen, sizeof o->seqlen));
    h = sqz_hash64(SQZ_HASH64_SEED, o->types, (size_t)o->n_types * sizeof(int));
    int v[2] = {o->all_types, o->proxy};
    h = sqz_hash64(h, v, sizeof v);
    double g[2] = {o->damp, o->shrink};
    snprintf(keys[2], 17, "%016llx", (unsigned long long)sqz_hash64(h, g, sizeof g));
}

static const char *const kEstimateKey[3] = {"model", "calibration", "types_proxy_gptq"};

/* The estimate as sqz_sens_load reads it (only the proxy's predictions), with its keys. */
static int estimate_save(const char *path, const sqz_model *m, const sqz_compress_opts *o, const sqz_sens *sens,
                         sqz_err *err) {
    char keys[3][17];
    estimate_keys(m, o, keys);
    cJSON *root = cJSON_CreateObject(), *ck = cJSON_AddObjectToObject(root, "checkpoint");
    cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
    for (int k = 0; k < 3; k++) cJSON_AddStringToObject(ck, kEstimateKey[k], keys[k]);
    for (int i = 0; i < sens->n_tensors; i++) {
        const sqz_sens_tensor *t = &sens->t[i];
        cJSON *tj = cJSON_CreateObject(), *ops = cJSON_AddArrayToObject(tj, "options");
        cJSON_AddStringToObject(tj, "name", t->name);
        for (int k = 0; k < t->n_options; k++) {
            cJSON *oj = cJSON_CreateObject();
            cJSON_AddStringToObject(oj, "type", type_name(t->opt[k].type));
            cJSON_AddNumberToObject(oj, "bytes", (double)t->opt[k].bytes);
            cJSON_AddNumberToObject(oj, sqz_proxy_key(o->proxy), sqz_proxy_cost(&t->opt[k], o->proxy));
            cJSON_AddItemToArray(ops, oj);
        }
        cJSON_AddItemToArray(arr, tj);
    }
    char *text = cJSON_PrintUnformatted(root); /* doubles printed with 17 digits: read back exactly */
    cJSON_Delete(root);
    if (!text) return sqz_fail(err, "compress: out of memory for the estimate's checkpoint");
    sqz_out out;
    int rc = sqz_out_open(&out, path, err) || sqz_out_write(&out, text, strlen(text), err) || sqz_out_commit(&out, err);
    if (rc) sqz_out_abort(&out);
    free(text);
    return rc ? SQZ_ERR : SQZ_OK;
}

/* 1 and *sens filled when path holds this run's estimate; 0 when there is none; an
 * estimate from other inputs is an error naming which. */
static int estimate_load(const char *path, const sqz_model *m, const sqz_compress_opts *o, sqz_sens *sens,
                         sqz_err *err) {
    if (!sqz_path_exists(path)) return 0;
    char *text = NULL, keys[3][17];
    size_t len = 0;
    if (sqz_read_file(path, SENS_MAX_BYTES, &text, &len, err)) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *ck = root ? cJSON_GetObjectItem(root, "checkpoint") : NULL;
    estimate_keys(m, o, keys);
    for (int k = 0; k < 3; k++) {
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(ck, kEstimateKey[k]));
        if (!v || strcmp(v, keys[k])) {
            cJSON_Delete(root);
            sqz_fail(err, "%s: the checkpoint's estimate was made with another %s (field checkpoint.%s)", path,
                     k == 0 ? "model" : k == 1 ? "calibration (text, --nsamples, --seqlen or --seed)"
                                               : "set of types, proxy or GPTQ settings", kEstimateKey[k]);
            return -1;
        }
    }
    cJSON_Delete(root);
    return sqz_sens_load(path, m, o->types, o->n_types, o->all_types, o->proxy, 0, sens, err) ? -1 : 1;
}

/* ---------------------------------------------------------------- compress */

void sqz_compress_opts_default(sqz_compress_opts *o) {
    memset(o, 0, sizeof *o);
    o->rounds = 1;
    o->proxy = SQZ_PROXY_GRADTW;
    o->damp = 0.01;
    o->shrink = 0.75;
    o->rescale = 1.0;
    o->prune_max = -1.0;
    o->eval_ctx = 512;
    o->eval_chunks = 8;
}

void sqz_compress_report_free(sqz_compress_report *r) {
    if (!r) return;
    for (int l = 0; r->keep && l < r->n_layer; l++) sqz_layer_keep_free(&r->keep[l]);
    free(r->keep);
    free(r->rounds);
    free(r->tensors);
    sqz_tune_report_free(&r->tune);
    memset(r, 0, sizeof *r);
}

/* Registers a temporary file and the one sqz_out writes it through. */
static int temp_file(const sqz_compress_opts *o, const char *path, sqz_err *err) {
    if (!o->temp_file) return SQZ_OK;
    char inner[4300];
    snprintf(inner, sizeof inner, "%s.tmp.%ld", path, (long)getpid());
    if (o->temp_file(o->ctx, path) || o->temp_file(o->ctx, inner))
        return sqz_fail(err, "%s: the temporary file was refused", path);
    return SQZ_OK;
}

/* The quantizer's layer hook for a streamed pruned model: fill layer l before it is
 * read, punch it out after (the time counts as pruning). */
typedef struct {
    sqz_prune_stream *ps;
    sqz_stage_times *times;
} prune_stream_ctx;

static int prune_hook(void *vctx, int layer, int done, sqz_err *err) {
    prune_stream_ctx *c = vctx;
    double t0 = sqz_now();
    int rc = done ? sqz_prune_stream_release(c->ps, layer, err) : sqz_prune_stream_fill(c->ps, layer, err);
    sqz_stage_add(c->times, SQZ_STAGE_PRUNING, sqz_now() - t0, 0.0);
    return rc;
}

/* A fresh stream of the pruned model at path (its layers holes again, the original
 * model's calibration stream back at layer 0) and pm reloaded from it: each later round
 * reads the pruned weights twice, in its estimate and in its quantization. */
static int restream(const sqz_model *m, sqz_pool *pool, const sqz_layer_keep *keep, const sqz_compress_opts *o,
                    const char *path, prune_stream_ctx *ps, sqz_model *pm, int *have_pm, sqz_err *err) {
    double t0 = sqz_now();
    sqz_prune_stream_end(ps->ps);
    ps->ps = NULL;
    if (*have_pm) sqz_model_free(pm);
    *have_pm = 0;
    int rc = sqz_prune_stream_begin(m, pool, keep, o->windows, o->nsamples, o->seqlen, o->damp, o->shrink, path,
                                    &ps->ps, err);
    if (rc == SQZ_OK && (rc = sqz_model_load(pm, path, 0, err)) == SQZ_OK) {
        *have_pm = 1;
        rc = sqz_prune_stream_attach(ps->ps, pm, err);
    }
    sqz_stage_add(ps->times, SQZ_STAGE_PRUNING, sqz_now() - t0, 0.0);
    return rc;
}

int sqz_compress(sqz_model *m, const char *out, const sqz_compress_opts *o, sqz_pool *pool,
                 sqz_compress_report *rep, sqz_err *err) {
    memset(rep, 0, sizeof *rep);
    rep->prune_max = -1.0;
    rep->prune_skipped = 0;
    if (o->rounds < 1) return sqz_fail(err, "compress: rounds %d, expected at least 1", o->rounds);
    if (!o->windows || o->nsamples < 1 || o->seqlen < 2 || !o->held || o->heldout < 1)
        return sqz_fail(err, "compress: calibration and held-out windows are required");
    if (o->proxy != SQZ_PROXY_GRAD && o->proxy != SQZ_PROXY_GRADTW && o->proxy != SQZ_PROXY_DIAG)
        return sqz_fail(err, "compress: proxy %d, expected grad, gradtw or diag", o->proxy);
    if (o->prune_max >= 0 && o->measure)
        return sqz_fail(err, "compress: measuring tensors cannot be combined with pruning (the tensors change shape)");
    const int proxy = o->proxy, rounds = o->rounds;
    /* pruned layers stream into the estimate and the quantizer unless --keep-pruned asks
     * for the whole pruned model (t_prune: both ways give the same bytes) */
    const int stream = !o->keep_pruned;
    double prune_max = o->prune_max;
    int rc = SQZ_OK;
    sqz_model rm, pm; /* a round's output, the pruned unquantized model (pruning) */
    int have_rm = 0, have_pm = 0;
    sqz_joint jt = {0};
    sqz_layer_keep *keep = NULL;
    char *pruned_path = NULL, *estimate_path = NULL;
    prune_stream_ctx ps = {NULL, NULL};
    double *best_bytes = NULL, *best_params = NULL;
    sqz_sens sens, shape;
    memset(&sens, 0, sizeof sens);
    memset(&shape, 0, sizeof shape);
    sqz_compress_round *ri = calloc((size_t)rounds, sizeof *ri);
    int *plan = NULL, *best_plan = NULL, *choice = NULL, best = -1;
    sqz_alloc_item *items = NULL;
    sqz_alloc_option *opts = NULL;
    char **paths = calloc((size_t)rounds, sizeof *paths);
    double *best_pred = NULL, *measured = NULL;
    rep->rounds = ri;
    rep->n_layer = m->cfg.n_layer;
    if (o->checkpoint && (estimate_path = malloc(strlen(out) + 16)))
        sprintf(estimate_path, "%s.estimate.json", out);
    if (!ri || !paths || (o->checkpoint && !estimate_path)) {
        rc = sqz_fail(err, "compress: out of memory");
        goto done;
    }

    /* sizes first: a budget outside what the model allows fails before any work */
    if (sqz_sens_options(m, o->types, o->n_types, o->all_types, &shape, err)) {
        rc = SQZ_ERR;
        goto done;
    }
    int64_t n_params = sqz_model_n_params(m);
    uint64_t fixed;
    if (fixed_bytes(m, &fixed, err)) {
        rc = SQZ_ERR;
        goto done;
    }
    uint64_t min_b = fixed, max_b = fixed;
    for (int i = 0; i < shape.n_tensors; i++) {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int k = 0; k < shape.t[i].n_options; k++) {
            lo = shape.t[i].opt[k].bytes < lo ? shape.t[i].opt[k].bytes : lo;
            hi = shape.t[i].opt[k].bytes > hi ? shape.t[i].opt[k].bytes : hi;
        }
        min_b += lo;
        max_b += hi;
    }
    uint64_t budget = o->budget;
    int ffn_step = sqz_prune_ffn_step(m->cfg.n_ff);
    /* auto: no pruning where quantization alone reaches the budget with 5% to spare (the
     * 1.5B model at llama.cpp's IQ2_XS size, 0.94 of it: pruned 38.24, types alone 26.04
     * WikiText perplexity; every size where pruning won was below quantization's reach) */
    if (prune_max >= 0 && o->prune_auto && (double)min_b <= 0.95 * (double)budget) {
        prune_max = -1.0;
        rep->prune_skipped = 1;
    }
    if (prune_max >= 0) { /* the smallest widths at the smallest types */
        if (!(shape.widths = calloc((size_t)m->cfg.n_layer, sizeof *shape.widths))) {
            rc = sqz_fail(err, "compress: out of memory");
            goto done;
        }
        shape.n_widths = m->cfg.n_layer;
        sqz_sens_add_narrow(&shape, o->types, o->n_types);
        for (int l = 0; l < m->cfg.n_layer; l++)
            if (sqz_prune_layer_shapes(m, l, ffn_step, &shape.widths[l], err)) {
                rc = SQZ_ERR;
                goto done;
            }
        /* auto: removing at most half of a block when the budget allows it with 5% to spare.
         * The predicted changes add up per block and are second-order; larger removals in
         * a few blocks are where they fail (SmolLM2 at 3.0 bpw: max 0.75 cut layers 14-29
         * to a third and measured WikiText 723, held-out 66.5; max 0.5: 469, 64.7) */
        const double ladder[2] = {0.5, 0.75};
        for (int f = o->prune_auto ? 0 : 1; f < 2; f++) {
            double fmax = o->prune_auto ? ladder[f] : prune_max;
            sqz_joint js;
            if (sqz_joint_build(m, &shape, cost_fn(SQZ_PROXY_GRAD), 1.0 - fmax, &js, err)) {
                rc = SQZ_ERR;
                goto done;
            }
            min_b = fixed;
            for (int i = 0; i < js.n_items; i++) {
                uint64_t lo = UINT64_MAX;
                for (int k = 0; k < js.items[i].n_options; k++)
                    if (js.items[i].options[k].bytes < lo) lo = js.items[i].options[k].bytes;
                min_b += lo;
            }
            sqz_joint_free(&js);
            prune_max = fmax;
            if ((double)min_b <= 0.95 * (double)budget) break;
        }
    }
    double bpw_of = 8.0 / (double)n_params;
    rep->n_params = n_params;
    rep->params_after = n_params;
    rep->budget = budget;
    rep->min_bytes = min_b;
    rep->max_bytes = max_b;
    rep->over_max = budget >= max_b;
    rep->prune_max = prune_max;
    rep->ffn_step = ffn_step;
    if (budget < min_b) {
        rc = sqz_fail(err, "budget of %llu bytes (%.3f bpw) is below the smallest reachable size: minimum "
                      "%llu bytes (%.3f bpw), every tensor at its smallest candidate type%s",
                      (unsigned long long)budget, budget * bpw_of, (unsigned long long)min_b, min_b * bpw_of,
                      prune_max >= 0 ? " and every block at its narrowest width that pruning allows" : "");
        goto done;
    }

    int n_t = shape.n_tensors, n_plan = m->cfg.n_layer * SQZ_LIN_PER_LAYER + 2;
    plan = malloc((size_t)n_plan * sizeof(int));
    best_plan = malloc((size_t)n_plan * sizeof(int));
    choice = malloc((size_t)(n_t + 2 * m->cfg.n_layer) * sizeof(int));
    best_bytes = calloc((size_t)n_t, sizeof(double));
    best_params = calloc((size_t)n_t, sizeof(double));
    if (prune_max >= 0) {
        keep = calloc((size_t)m->cfg.n_layer, sizeof *keep);
        rep->keep = keep;
        char p2[4200];
        snprintf(p2, sizeof p2, "%s.pruned.tmp.%ld", out, (long)getpid());
        if (!keep || !(pruned_path = strdup(p2))) {
            rc = sqz_fail(err, "compress: out of memory");
            goto done;
        }
        if (temp_file(o, p2, err)) {
            rc = SQZ_ERR;
            goto done;
        }
    }
    items = calloc((size_t)n_t, sizeof *items);
    best_pred = calloc((size_t)n_t, sizeof(double));
    opts = calloc((size_t)n_t * SQZ_SENS_MAX_OPTIONS, sizeof *opts);
    if (!plan || !best_plan || !choice || !items || !best_pred || !opts || !best_bytes || !best_params) {
        rc = sqz_fail(err, "compress: out of memory");
        goto done;
    }
    double base_held = NAN, base_eval = NAN;
    {
        double l;
        if (sqz_mean_loss(m, pool, o->held, o->heldout, o->seqlen, &l, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        base_held = exp(l);
    }
    sqz_ppl_opts po = {o->eval_ctx, SQZ_PPL_GPTQ, o->eval_chunks, 0};
    if (o->eval_ids) {
        sqz_ppl_result pr;
        if (sqz_perplexity(m, pool, o->eval_ids, o->n_eval, &po, &pr, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        base_eval = pr.ppl;
    }
    rep->base_heldout_ppl = base_held;
    rep->base_eval_ppl = base_eval;
    if (o->notify) o->notify(o->ctx, 0, rep);
    for (int r = 0; r < rounds; r++) {
        double t0 = sqz_now();
        /* pruning: round 1 allocates widths and types jointly on the model; later rounds
         * keep its widths and re-allocate types on the pruned model (same shapes as the
         * rounds' outputs, whose statistics they use) */
        int joint = prune_max >= 0 && r == 0;
        const sqz_model *wm = have_pm ? &pm : m;
        const sqz_model *stats_m = have_rm ? &rm : wm;
        sqz_sens_opts so = {o->windows, o->nsamples, o->seqlen, o->types, o->n_types, o->damp, o->shrink,
                            proxy == SQZ_PROXY_DIAG, NULL, 0, o->progress, joint ? ffn_step : 0, 0,
                            proxy == SQZ_PROXY_GRADTW, o->all_types, o->backend, NULL, NULL};
        ps.times = &rep->times;
        if (stream && have_pm && r > 0) { /* a later round's estimate reads the pruned layers */
            if (restream(m, pool, keep, o, pruned_path, &ps, &pm, &have_pm, err)) {
                rc = SQZ_ERR;
                goto done;
            }
            so.layer_hook = prune_hook, so.layer_hook_ctx = &ps;
        }
        sqz_sens_free(&sens);
        int resumed = 0; /* round 1's estimate from this run's checkpoint */
        if (r == 0 && estimate_path && o->resume && !joint) {
            if ((resumed = estimate_load(estimate_path, m, o, &sens, err)) < 0) {
                rc = SQZ_ERR;
                goto done;
            }
        }
        if (resumed) {
            rep->resumed_estimate = 1;
        } else if (r == 0 && o->sensitivity) { /* round 1 from a saved estimate of the same model and types */
            if (sqz_sens_load(o->sensitivity, m, o->types, o->n_types, o->all_types, proxy, joint ? ffn_step : 0, &sens,
                              err)) {
                rc = SQZ_ERR;
                goto done;
            }
        } else if (sqz_sensitivity(stats_m, wm, pool, &so, &sens, err)) {
            rc = SQZ_ERR;
            goto done;
        } else if (r == 0 && estimate_path && !joint && estimate_save(estimate_path, m, o, &sens, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        sqz_stage_merge(&rep->times, &sens.times);
        sqz_joint_free(&jt);
        if (joint && sqz_joint_build(m, &sens, cost_fn(proxy), 1.0 - prune_max, &jt, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        for (int i = 0; i < n_t; i++) {
            items[i].n_options = sens.t[i].n_options;
            items[i].options = opts + (size_t)i * SQZ_SENS_MAX_OPTIONS;
            for (int k = 0; k < sens.t[i].n_options; k++) {
                opts[(size_t)i * SQZ_SENS_MAX_OPTIONS + k].bytes = sens.t[i].opt[k].bytes;
                opts[(size_t)i * SQZ_SENS_MAX_OPTIONS + k].cost = sqz_proxy_cost(&sens.t[i].opt[k], proxy);
            }
        }
        /* room for the tensors: the budget less the fixed part; if the written file
         * still comes out larger (an underestimated header), shrink by the excess */
        sqz_qmodel_report qrep;
        memset(&qrep, 0, sizeof qrep);
        sqz_alloc_result ar;
        for (int attempt = 0;; attempt++) {
            uint64_t room = budget > fixed ? budget - fixed : 0;
            if (sqz_alloc_solve(joint ? jt.items : items, joint ? jt.n_items : n_t, room, choice, &ar, err)) {
                sqz_fail_prefix(err, "round %d: ", r + 1);
                rc = SQZ_ERR;
                goto done;
            }
            for (int i = 0; i < n_plan; i++) plan[i] = -1;
            if (joint) { /* widths and types; the pruned, compensated model is written unquantized */
                for (int l = 0; l < m->cfg.n_layer; l++) sqz_layer_keep_free(&keep[l]);
                if (have_pm) sqz_model_free(&pm);
                have_pm = 0;
                double tp = sqz_now();
                sqz_prune_stream_end(ps.ps);
                ps.ps = NULL;
                /* without --keep-pruned the layers stream into the quantizer (the file
                 * holds one layer at a time); with it the whole pruned model is written */
                int prc = sqz_joint_decode(&jt, &sens, choice, keep, plan, err) ||
                          (stream ? sqz_prune_stream_begin(m, pool, keep, o->windows, o->nsamples, o->seqlen, o->damp,
                                                           o->shrink, pruned_path, &ps.ps, err)
                                  : sqz_prune_write(m, pool, keep, o->windows, o->nsamples, o->seqlen, o->damp,
                                                    o->shrink, 1, pruned_path, err));
                sqz_stage_add(&rep->times, SQZ_STAGE_PRUNING, sqz_now() - tp, 0.0);
                if (prc || sqz_model_load(&pm, pruned_path, 0, err) ||
                    (ps.ps && sqz_prune_stream_attach(ps.ps, &pm, err))) {
                    rc = SQZ_ERR;
                    goto done;
                }
                have_pm = 1;
            } else {
                for (int i = 0; i < n_t; i++) plan[i] = sens.t[i].opt[choice[i]].type;
            }
            char path[4200];
            if (o->checkpoint) snprintf(path, sizeof path, "%s.round%d", out, r + 1); /* stable: resumable */
            else snprintf(path, sizeof path, "%s.round%d.tmp.%ld", out, r + 1, (long)getpid());
            if (!paths[r]) {
                if (!o->checkpoint && temp_file(o, path, err)) {
                    rc = SQZ_ERR;
                    goto done;
                }
                if (!(paths[r] = strdup(path))) {
                    rc = sqz_fail(err, "compress: out of memory");
                    goto done;
                }
            }
            sqz_qmodel_opts qo;
            sqz_qmodel_opts_default(&qo);
            qo.type = SQZ_TYPE_Q8_0;
            qo.method = SQZ_QMETHOD_GPTQ;
            qo.windows = o->windows;
            qo.nsamples = o->nsamples;
            qo.seqlen = o->seqlen;
            qo.percdamp = o->damp;
            qo.shrink = o->shrink;
            qo.rescale = o->rescale;
            qo.progress = o->progress;
            qo.tensor_types = plan;
            qo.backend = o->backend;
            qo.checkpoint = o->checkpoint ? paths[r] : NULL;
            qo.gptq_double = o->gptq_double;
            qo.resume = o->resume;
            qo.checkpoint_every_s = o->checkpoint_every_s;
            if (ps.ps) qo.layer_hook = prune_hook, qo.layer_hook_ctx = &ps;
            sqz_qmodel_report_free(&qrep);
            if (stream && have_pm && !joint) { /* a later round: the stream again from layer 0 */
                if (restream(m, pool, keep, o, pruned_path, &ps, &pm, &have_pm, err)) {
                    rc = SQZ_ERR;
                    goto done;
                }
                qo.layer_hook = prune_hook, qo.layer_hook_ctx = &ps;
            }
            if (sqz_quantize_model(have_pm ? &pm : m, paths[r], &qo, pool, &qrep, err)) {
                rc = SQZ_ERR;
                goto done;
            }
            sqz_prune_stream_end(ps.ps); /* its layers are gone from the file: pm is done with */
            ps.ps = NULL;
            sqz_stage_merge(&rep->times, &qrep.times);
            if (qrep.resumed_layer > 0) rep->resumed_layer = qrep.resumed_layer;
            uint64_t exact_fixed = qrep.file_bytes - ar.bytes;
            if (qrep.file_bytes <= budget || attempt >= 2) {
                fixed = exact_fixed;
                if (qrep.file_bytes > budget) {
                    rc = sqz_fail(err, "round %d: the file came out at %llu bytes, above the budget", r + 1,
                                  (unsigned long long)qrep.file_bytes);
                    sqz_qmodel_report_free(&qrep);
                    goto done;
                }
                break;
            }
            fixed = exact_fixed + (qrep.file_bytes - budget);
        }
        ri[r].round = r + 1;
        ri[r].predicted = ar.cost;
        ri[r].tensor_bytes = qrep.tensor_bytes;
        ri[r].file_bytes = qrep.file_bytes;
        ri[r].bpw = qrep.file_bytes * bpw_of;
        /* this round's tensors as written (with pruning their shapes changed) */
        double *rb = calloc((size_t)n_t * 2, sizeof(double));
        if (!rb) {
            sqz_qmodel_report_free(&qrep);
            rc = sqz_fail(err, "compress: out of memory");
            goto done;
        }
        for (int k = 0; k < qrep.n_tensors; k++)
            for (int i = 0; i < n_t; i++)
                if (!strcmp(qrep.tensors[k].name, sens.t[i].name)) {
                    rb[i] = (double)qrep.tensors[k].bytes;
                    rb[n_t + i] = (double)qrep.tensors[k].ne[0] * (double)qrep.tensors[k].ne[1];
                }
        sqz_qmodel_report_free(&qrep);
        /* measure the round's file as written */
        if (have_rm) sqz_model_free(&rm);
        have_rm = 0;
        if (sqz_model_load(&rm, paths[r], 0, err)) {
            free(rb);
            rc = SQZ_ERR;
            goto done;
        }
        have_rm = 1;
        double l;
        if (sqz_mean_loss(&rm, pool, o->held, o->heldout, o->seqlen, &l, err)) {
            free(rb);
            rc = SQZ_ERR;
            goto done;
        }
        ri[r].heldout_ppl = exp(l);
        ri[r].eval_ppl = NAN;
        if (o->eval_ids) {
            sqz_ppl_result pr;
            if (sqz_perplexity(&rm, pool, o->eval_ids, o->n_eval, &po, &pr, err)) {
                free(rb);
                rc = SQZ_ERR;
                goto done;
            }
            ri[r].eval_ppl = pr.ppl;
        }
        ri[r].seconds = sqz_now() - t0;
        rep->n_rounds = r + 1;
        if (o->notify) o->notify(o->ctx, r + 1, rep);
        if (best < 0 || ri[r].heldout_ppl < ri[best].heldout_ppl) {
            if (best >= 0) unlink(paths[best]);
            best = r;
            memcpy(best_plan, plan, (size_t)n_plan * sizeof(int));
            memcpy(best_bytes, rb, (size_t)n_t * sizeof(double));
            memcpy(best_params, rb + n_t, (size_t)n_t * sizeof(double));
            for (int i = 0; i < n_t; i++) {
                if (!joint) {
                    best_pred[i] = sqz_proxy_cost(&sens.t[i].opt[choice[i]], proxy);
                    continue;
                }
                /* the type's predicted change on the unpruned matrix, times the part kept */
                const sqz_sens_tensor *t = &sens.t[i];
                best_pred[i] = NAN;
                for (int k = 0; k < t->n_options + t->n_narrow; k++) {
                    const sqz_sens_option *op = k < t->n_options ? &t->opt[k] : &t->narrow[k - t->n_options];
                    if (op->type == plan[i] && isnan(best_pred[i]))
                        best_pred[i] = sqz_proxy_cost(op, proxy) * rb[n_t + i] / (double)(t->rows * t->cols);
                }
            }
        } else {
            unlink(paths[r]);
        }
        free(rb);
    }
    /* measure: chosen tensors of the best file, alone in the original model */
    if (o->measure) {
        if (have_rm) sqz_model_free(&rm);
        have_rm = 0;
        if (sqz_model_load(&rm, paths[best], 0, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        have_rm = 1;
        measured = malloc((size_t)n_t * sizeof(double));
        int *order = malloc((size_t)n_t * sizeof(int));
        double base;
        if (!measured || !order) {
            free(order);
            rc = sqz_fail(err, "compress: out of memory");
            goto done;
        }
        if (sqz_mean_loss(m, pool, o->held, o->heldout, o->seqlen, &base, err)) {
            free(order);
            rc = SQZ_ERR;
            goto done;
        }
        for (int i = 0; i < n_t; i++) measured[i] = NAN, order[i] = i;
        for (int i = 1; i < n_t; i++) /* by predicted change; then evenly spaced picks */
            for (int j = i; j > 0 && best_pred[order[j]] < best_pred[order[j - 1]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        int k_n = o->measure < n_t ? o->measure : n_t;
        for (int k = 0; k < k_n; k++) {
            int i = order[k_n > 1 ? (int)((int64_t)k * (n_t - 1) / (k_n - 1)) : n_t - 1];
            int per = m->cfg.n_layer * SQZ_LIN_PER_LAYER;
            const sqz_tensor *qt = i < per ? sqz_linear_tensor(&rm, i / SQZ_LIN_PER_LAYER, i % SQZ_LIN_PER_LAYER)
                                           : i == per ? rm.output : rm.tok_embd;
            int64_t n = sqz_tensor_nelements(qt);
            float *w = malloc((size_t)n * sizeof(float));
            if (!w) {
                free(order);
                rc = sqz_fail(err, "compress: out of memory");
                goto done;
            }
            if (sqz_tensor_rows_f32(qt, 0, qt->ne[1], w, err)) {
                free(w);
                free(order);
                rc = SQZ_ERR;
                goto done;
            }
            sqz_pipe_swap sw;
            sqz_pipe_swap_in(m, &sw, i, w);
            double l;
            int r2 = sqz_mean_loss(m, pool, o->held, o->heldout, o->seqlen, &l, err);
            sqz_pipe_swap_out(m, &sw);
            free(w);
            if (r2) {
                free(order);
                rc = SQZ_ERR;
                goto done;
            }
            measured[i] = l - base;
        }
        free(order);
    }
    /* the best round becomes OUT, tuned end to end first when asked */
    if (o->tune_steps > 0) {
        sqz_tune_opts to = {o->windows, o->nsamples, o->seqlen, o->held, o->heldout, o->tune_steps, o->tune_lr, 0,
                            o->progress, o->backend, 1, 1};
        if (temp_file(o, out, err) || sqz_tune(m, paths[best], out, &to, pool, &rep->tune, err)) {
            rc = SQZ_ERR;
            goto done;
        }
        sqz_stage_merge(&rep->times, &rep->tune.times);
        rep->tuned = 1;
        unlink(paths[best]);
    } else if (rename(paths[best], out)) {
        rc = sqz_fail(err, "%s: cannot rename %s into place", out, paths[best]);
        goto done;
    }
    rep->best_round = best + 1;
    if (have_pm) rep->params_after = sqz_model_n_params(&pm);
    rep->n_tensors = n_t;
    if (!(rep->tensors = calloc((size_t)n_t, sizeof *rep->tensors))) {
        rc = sqz_fail(err, "compress: out of memory");
        goto done;
    }
    for (int i = 0; i < n_t; i++) {
        const sqz_sens_tensor *t = &sens.t[i];
        sqz_compress_tensor *ct = &rep->tensors[i];
        memcpy(ct->name, t->name, sizeof ct->name);
        ct->layer = t->layer;
        ct->kind = t->kind;
        ct->type = best_plan[i];
        ct->n_params = best_params[i];
        ct->bytes = best_bytes[i];
        ct->predicted_dl = best_pred[i];
        ct->measured_dl = measured ? measured[i] : NAN;
        ct->n_options = t->n_options;
        for (int k = 0; k < t->n_options; k++) {
            ct->opt[k] = t->opt[k];
            ct->opt[k].what = NULL;
        }
    }
done:
    for (int r = 0; paths && r < rounds; r++) {
        if (paths[r] && (rc || r != best)) unlink(paths[r]);
        free(paths[r]);
    }
    free(paths);
    free(measured);
    free(best_pred);
    free(plan);
    free(best_plan);
    free(choice);
    free(items);
    free(opts);
    free(best_bytes);
    free(best_params);
    sqz_joint_free(&jt);
    if (have_pm) sqz_model_free(&pm);
    if (pruned_path && !rc && o->keep_pruned && rename(pruned_path, o->keep_pruned) != 0)
        rc = sqz_fail(err, "cannot rename %s to %s: %s", pruned_path, o->keep_pruned, strerror(errno));
    sqz_prune_stream_end(ps.ps);
    if (pruned_path) unlink(pruned_path);
    free(pruned_path);
    if (estimate_path && !rc) unlink(estimate_path); /* OUT is written: nothing to resume */
    free(estimate_path);
    sqz_sens_free(&sens);
    sqz_sens_free(&shape);
    if (have_rm) sqz_model_free(&rm);
    return rc;
}

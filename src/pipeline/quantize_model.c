/* Whole-model quantization into GGUF: see include/sqz/quantize_model.h.
 *
 * Reading order: the plan (one entry per output tensor: name, source, type), the
 * calibration state (residual streams and per-site Grams), the per-matrix quantizer,
 * then sqz_quantize_model, which walks embedding → layers → head and writes each
 * tensor as soon as it is final. */
#include "sqz/quantize_model.h"

#include <cblas.h>
#include <lapack.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqz/backend.h"
#include "sqz/calib.h"
#include "sqz/gptq.h"
#include "sqz/quant.h"

/* ---------------------------------------------------------------- the plan */

enum { ROLE_NORM, ROLE_LINEAR, ROLE_EMBD, ROLE_OUTPUT };

/* The linear layers of a block, in the order they are written. */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT };
static const char *const kLinName[LIN_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                "ffn_gate", "ffn_up", "ffn_down"};
static const int kLinSite[LIN_COUNT] = {SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_IN, SQZ_SITE_ATTN_O_IN,
                                        SQZ_SITE_FFN_IN, SQZ_SITE_FFN_IN, SQZ_SITE_FFN_DOWN_IN};

typedef struct plan_tensor {
    const sqz_tensor *src;
    int role;
    int perm_heads;   /* >0: rows are rotate-half q/k of this many heads, written in adjacent order */
    size_t row_bytes; /* of the written type */
    int64_t rows, cols;
} plan_tensor;

static const sqz_tensor *layer_linear(const sqz_layer *L, int i) {
    const sqz_tensor *t[LIN_COUNT] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
    return t[i];
}

int sqz_qmodel_fallback_type(int type, int64_t ncols) {
    const sqz_type_traits *tt = sqz_type_get(type);
    if (!tt || ncols % tt->block_size == 0) return type;
    int fb;
    switch (type) {
    case SQZ_TYPE_Q2_K:
    case SQZ_TYPE_Q3_K: fb = SQZ_TYPE_Q4_0; break;
    case SQZ_TYPE_Q4_K: fb = SQZ_TYPE_Q5_0; break;
    case SQZ_TYPE_Q5_K: fb = SQZ_TYPE_Q5_1; break;
    case SQZ_TYPE_Q6_K: fb = SQZ_TYPE_Q8_0; break;
    case SQZ_TYPE_IQ4_XS:
    case SQZ_TYPE_IQ3_S:
    case SQZ_TYPE_IQ3_XXS:
    case SQZ_TYPE_IQ2_XXS:
    case SQZ_TYPE_IQ2_XS:
    case SQZ_TYPE_IQ2_S:
    case SQZ_TYPE_IQ1_S:
    case SQZ_TYPE_IQ1_M: fb = SQZ_TYPE_IQ4_NL; break;
    default: fb = SQZ_TYPE_F16; break;
    }
    if (ncols % sqz_type_get(fb)->block_size != 0) fb = SQZ_TYPE_F16;
    return fb;
}

/* llama.cpp's ftype id for a file whose main type is `type` (the "_S" variant of the
 * k-quants: llama.cpp prints it; nothing reads it to decode). */
static int ftype_of(int type) {
    switch (type) {
    case SQZ_TYPE_F32: return 0;
    case SQZ_TYPE_F16: return 1;
    case SQZ_TYPE_Q4_0: return 2;
    case SQZ_TYPE_Q4_1: return 3;
    case SQZ_TYPE_Q8_0: return 7;
    case SQZ_TYPE_Q5_0: return 8;
    case SQZ_TYPE_Q5_1: return 9;
    case SQZ_TYPE_Q2_K: return 10;
    case SQZ_TYPE_Q3_K: return 11;
    case SQZ_TYPE_Q4_K: return 14;
    case SQZ_TYPE_Q5_K: return 16;
    case SQZ_TYPE_Q6_K: return 18;
    case SQZ_TYPE_IQ4_NL: return 25;
    case SQZ_TYPE_IQ4_XS: return 30;
    case SQZ_TYPE_IQ3_S: return 26;
    case SQZ_TYPE_IQ3_XXS: return 23;
    case SQZ_TYPE_IQ2_S: return 28;
    case SQZ_TYPE_IQ2_XS: return 20;
    case SQZ_TYPE_IQ2_XXS: return 19;
    case SQZ_TYPE_IQ1_M: return 31;
    case SQZ_TYPE_IQ1_S: return 24;
    case SQZ_TYPE_TQ2_0: return 37;
    case SQZ_TYPE_TQ1_0: return 36;
    case SQZ_TYPE_BF16: return 32;
    default: return 1024; /* "guessed" */
    }
}

static int writable(int type) {
    return sqz_type_writable(type);
}

typedef struct qm {
    const sqz_model *m;
    const sqz_qmodel_opts *o;
    sqz_pool *pool;
    sqz_qmodel_report *rep;
    plan_tensor *plan;         /* rep->n_tensors */
    int tied;
    int idx_embd, idx_out, idx_out_norm; /* plan indices; idx_embd == idx_out when tied */
    int *idx_layer;            /* n_layer: the plan index of the layer's attn_norm */
    int *n_extra;              /* n_layer: vectors after the layer's 9 tensors (biases, q/k norms) */
    int idx_rope;              /* plan index of rope_freqs.weight, -1 when none */
    sqz_tensor rope_t;         /* rope_freqs as a tensor over cfg.rope_freqs */
    sqz_gguf_writer w;
    sqz_progress prog;
    /* calibration */
    int calib;                 /* windows given */
    int seq;                   /* sequential (GPTQ only) */
    int target;                /* seq with the original model's outputs as targets (W*) */
    int grams_only;            /* the hook ends the layer's forward after the last site */
    sqz_fwd_ws *ws;            /* the layer passes' activations and dequantized weights (CPU) */
    sqz_block_pass *bp;        /* or: the layer passes on the backend's GPU, Grams summed there */
    sqz_gram_acc *cacc[SQZ_SITE_COUNT]; /* C's running sums on the GPU (seq with targets) */
    int64_t T;                 /* calibration tokens */
    float *xo, *xq;            /* [T, dim] original / quantized streams (xq only when seq) */
    int64_t gn[SQZ_SITE_COUNT];
    double *H[SQZ_SITE_COUNT]; /* Σ x_q x_qᵀ (or x_o when not seq) */
    sqz_gram_acc *gacc[SQZ_SITE_COUNT]; /* H's running sums on a GPU backend (NULL: on the CPU, in H) */
    double *C[SQZ_SITE_COUNT]; /* Σ x_o x_qᵀ (seq) */
    float *so[SQZ_SITE_COUNT]; /* one window's original site inputs (seq) */
    double *da, *db;           /* activations in double */
    size_t dn;
    int hook_mode;             /* HOOK_SAVE or HOOK_ACC */
    double gram_seconds;       /* in accumulate() since collect_layer began */
    /* the quantized model's view: layers with quantized tensors swapped in */
    sqz_model view;
    sqz_layer *view_layers;
    sqz_tensor qt[LIN_COUNT];
    void *qdata[LIN_COUNT];
    size_t qcap[LIN_COUNT];    /* their sizes */
} qm;

static int add_tensor(qm *q, int *idx, const char *name, const sqz_tensor *src, int role, int requested, int perm,
                      int keep, sqz_err *err) {
    sqz_qmodel_report *r = q->rep;
    int i = r->n_tensors++;
    sqz_qtensor_report *t = &r->tensors[i];
    plan_tensor *p = &q->plan[i];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    p->src = src;
    p->role = role;
    p->perm_heads = perm;
    p->cols = src->ne[0];
    p->rows = src->n_dims > 1 ? sqz_tensor_nelements(src) / src->ne[0] : 1;
    t->requested = requested;
    t->kept = keep;
    t->type = keep ? src->type : sqz_qmodel_fallback_type(requested, p->cols);
    t->fallback = !keep && t->type != requested;
    r->n_fallback += t->fallback;
    t->n_dims = src->n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < src->n_dims ? src->ne[d] : 1;
    t->rel_weight_err = t->rel_output_err = NAN;
    if (sqz_type_row_bytes(t->type, p->cols, &p->row_bytes, err)) return SQZ_ERR;
    t->bytes = (uint64_t)p->row_bytes * (uint64_t)p->rows;
    r->tensor_bytes += t->bytes;
    r->n_params += sqz_tensor_nelements(src);
    if (idx) *idx = i;
    return sqz_gguf_add_tensor(&q->w, t->name, t->type, src->n_dims, src->ne, err);
}

/* Declares every tensor in write order. The embedding is written first when it is its
 * own tensor; a tied embedding is the output head and goes last, after the layers that
 * produce its calibration inputs. */
static int plan_build(qm *q, sqz_err *err) {
    const sqz_model *m = q->m;
    const sqz_llama_config *c = &m->cfg;
    const sqz_qmodel_opts *o = q->o;
    int out_type = o->output_type >= 0 ? o->output_type : o->type;
    int embd_type = o->embd_type >= 0 ? o->embd_type : o->type;
    const int *tt = o->tensor_types; /* a per-tensor plan overrides the above where >= 0 */
    int n_lin = c->n_layer * LIN_COUNT;
    if (tt && tt[n_lin] >= 0) out_type = tt[n_lin];
    if (tt && tt[n_lin + 1] >= 0) embd_type = tt[n_lin + 1];
    /* q/k rows to llama.cpp's adjacent-pair layout: Hugging Face llama only (the Qwen
     * families keep rotate-half rows in GGUF too) */
    int perm = m->source == SQZ_SRC_HF && c->rope_mode != SQZ_ROPE_ADJACENT && c->arch == SQZ_ARCH_LLAMA;
    int n_max = 4 + c->n_layer * 14;
    q->rep->tensors = calloc((size_t)n_max, sizeof *q->rep->tensors);
    q->plan = calloc((size_t)n_max, sizeof *q->plan);
    q->idx_layer = calloc((size_t)c->n_layer, sizeof *q->idx_layer);
    q->n_extra = calloc((size_t)c->n_layer, sizeof *q->n_extra);
    q->idx_rope = -1;
    if (!q->rep->tensors || !q->plan || !q->idx_layer || !q->n_extra) return sqz_fail(err, "quantize: out of memory");
    if (perm && c->attn_bias)
        return sqz_fail(err, "%s: q/k biases of a Hugging Face llama model cannot be written yet", m->path);
    q->tied = m->output == m->tok_embd;
    if (!q->tied && add_tensor(q, &q->idx_embd, "token_embd.weight", m->tok_embd, ROLE_EMBD, embd_type, 0, 0, err))
        return SQZ_ERR;
    char name[96];
    for (int l = 0; l < c->n_layer; l++) {
        const sqz_layer *L = &m->layers[l];
        if (c->layer_n_head[l] == 0 || c->layer_n_ff[l] == 0)
            return sqz_fail(err, "%s: layer %d has no attention or no FFN block; llama.cpp's llama architecture "
                                 "cannot load that", m->path, l);
        q->idx_layer[l] = q->rep->n_tensors;
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if (add_tensor(q, NULL, name, L->attn_norm, ROLE_NORM, SQZ_TYPE_F32, 0, 0, err)) return SQZ_ERR;
        for (int i = 0; i < LIN_COUNT; i++) {
            if (i == LIN_GATE) {
                snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
                if (add_tensor(q, NULL, name, L->ffn_norm, ROLE_NORM, SQZ_TYPE_F32, 0, 0, err)) return SQZ_ERR;
            }
            int heads = !perm ? 0 : i == LIN_Q ? c->layer_n_head[l] : i == LIN_K ? c->layer_n_head_kv[l] : 0;
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, kLinName[i]);
            int type = tt && tt[l * LIN_COUNT + i] >= 0 ? tt[l * LIN_COUNT + i] : o->type;
            if (add_tensor(q, NULL, name, layer_linear(L, i), ROLE_LINEAR, type, heads, 0, err)) return SQZ_ERR;
        }
        /* biases and per-head norms: F32 vectors after the block's matrices */
        const struct { const char *name; const sqz_tensor *t; } extra[5] = {
            {"attn_q.bias", L->bq}, {"attn_k.bias", L->bk}, {"attn_v.bias", L->bv},
            {"attn_q_norm.weight", L->q_norm}, {"attn_k_norm.weight", L->k_norm}};
        for (int i = 0; i < 5; i++) {
            if (!extra[i].t) continue;
            snprintf(name, sizeof name, "blk.%d.%s", l, extra[i].name);
            if (add_tensor(q, NULL, name, extra[i].t, ROLE_NORM, SQZ_TYPE_F32, 0, 0, err)) return SQZ_ERR;
            q->n_extra[l]++;
        }
    }
    if (add_tensor(q, &q->idx_out_norm, "output_norm.weight", m->out_norm, ROLE_NORM, SQZ_TYPE_F32, 0, 0, err))
        return SQZ_ERR;
    if (add_tensor(q, &q->idx_out, q->tied ? "token_embd.weight" : "output.weight", m->output, ROLE_OUTPUT, out_type,
                   0, o->keep_output_type, err))
        return SQZ_ERR;
    if (q->tied) q->idx_embd = q->idx_out;
    if (c->rope_freqs) { /* Llama-3's frequency divisors, as llama.cpp's converter writes them */
        sqz_tensor *t = &q->rope_t;
        memset(t, 0, sizeof *t);
        t->name = (char *)"rope_freqs.weight";
        t->type = SQZ_TYPE_F32;
        t->n_dims = 1;
        for (int d = 0; d < SQZ_MAX_DIMS; d++) t->ne[d] = 1;
        t->ne[0] = c->head_dim / 2;
        t->data = c->rope_freqs;
        t->nbytes = (size_t)t->ne[0] * sizeof(float);
        if (add_tensor(q, &q->idx_rope, "rope_freqs.weight", t, ROLE_NORM, SQZ_TYPE_F32, 0, 0, err)) return SQZ_ERR;
    }
    return SQZ_OK;
}

/* ---------------------------------------------------------------- writing */

/* Writes a tensor's rows (row-major bytes of the written type), permuting q/k rows from
 * rotate-half to adjacent pairs: new row h·d + 2i + j = old row h·d + j·d/2 + i. */
static int write_rows(qm *q, const plan_tensor *p, const uint8_t *data, sqz_err *err) {
    double t0 = sqz_now();
    int rc = SQZ_OK;
    if (!p->perm_heads) {
        rc = sqz_gguf_write_data(&q->w, data, p->row_bytes * (size_t)p->rows, err);
    } else {
        int64_t d = p->rows / p->perm_heads, half = d / 2;
        for (int64_t r = 0; r < p->rows && rc == SQZ_OK; r++) {
            int64_t h = r / d, i = (r % d) / 2, j = r % 2;
            int64_t old = h * d + j * half + i;
            rc = sqz_gguf_write_data(&q->w, data + (size_t)old * p->row_bytes, p->row_bytes, err);
        }
    }
    sqz_stage_add(&q->rep->times, SQZ_STAGE_WRITING, sqz_now() - t0, 0.0);
    return rc;
}

/* A norm: its weights as F32. */
static int write_norm(qm *q, int idx, sqz_err *err) {
    const plan_tensor *p = &q->plan[idx];
    float *v = malloc((size_t)p->cols * sizeof(float));
    if (!v) return sqz_fail(err, "quantize: out of memory");
    int rc = sqz_tensor_rows_f32(p->src, 0, 1, v, err) || write_rows(q, p, (const uint8_t *)v, err);
    free(v);
    return rc ? SQZ_ERR : SQZ_OK;
}

/* ---------------------------------------------------------------- matrices */

typedef struct rows_job {
    int type;
    const float *W;
    int64_t cols;
    const float *imp; /* per-column importance or NULL */
    uint8_t *dst;
    size_t row_bytes;
    double rescale;   /* sqz_qmodel_opts.rescale */
    int failed;
    sqz_err err;      /* the first failure (written once, under `failed`) */
} rows_job;

/* A codebook type's value weights for one row: imp_i · sqrt(σ² + x_i²), σ² the mean square
 * of the row's 256 values around i. diag(H) alone weighs a column's values equally
 * whatever their size; on a 2-bit grid that loses the large weights (Qwen2.5-1.5B, RTN
 * IQ2_XXS: perplexity 168.4 with diag(H), 114.7 with this; bench/RESULTS.md 18:41). */
static void value_weights(const float *x, const float *imp, int64_t n, float *out) {
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        const int64_t len = n - i0 < 256 ? n - i0 : 256;
        double ss = 0.0;
        for (int64_t i = i0; i < i0 + len; i++) ss += (double)x[i] * x[i];
        const double sigma2 = ss / (double)len;
        for (int64_t i = i0; i < i0 + len; i++) out[i] = (float)(imp[i] * sqrt(sigma2 + (double)x[i] * x[i]));
    }
}

static void rtn_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    rows_job *j = vctx;
    const sqz_type_traits *tt = sqz_type_get(j->type);
    float *vw = NULL; /* the row's value weights (codebook types with importances) */
    if (j->imp && tt && tt->codebook && !(vw = malloc((size_t)j->cols * sizeof(float)))) {
        if (!__atomic_exchange_n(&j->failed, 1, __ATOMIC_SEQ_CST)) sqz_fail(&j->err, "quantize: out of memory");
        return;
    }
    for (int64_t r = b; r < e; r++) {
        sqz_err e1;
        const float *w = j->W + r * j->cols;
        uint8_t *d = j->dst + (size_t)r * j->row_bytes;
        if (vw) value_weights(w, j->imp, j->cols, vw);
        if (sqz_convert_row(j->type, w, d, j->cols, vw ? vw : j->imp, &e1) ||
            sqz_rescale_row(j->type, w, d, j->cols, j->rescale, &e1)) {
            if (!__atomic_exchange_n(&j->failed, 1, __ATOMIC_SEQ_CST)) j->err = e1;
            break;
        }
    }
    free(vw);
}

/* The rescaling power for a tensor of `type`: the option's below SQZ_RESCALE_BELOW_BPW,
 * else 0 (see include/sqz/quantize_model.h). */
static double rescale_of(const sqz_qmodel_opts *o, int type) {
    return sqz_type_bpw(type) < SQZ_RESCALE_BELOW_BPW ? o->rescale : 0.0;
}

/* Rows already in dst (GPTQ's sweep) rescaled against W: rtn_task without the rounding. */
static void rescale_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    rows_job *j = vctx;
    for (int64_t r = b; r < e; r++) {
        sqz_err e1;
        if (sqz_rescale_row(j->type, j->W + r * j->cols, j->dst + (size_t)r * j->row_bytes, j->cols, j->rescale, &e1)) {
            if (!__atomic_exchange_n(&j->failed, 1, __ATOMIC_SEQ_CST)) j->err = e1;
            return;
        }
    }
}

typedef struct deq_job {
    int type;
    const uint8_t *src;
    size_t row_bytes;
    int64_t cols;
    float *dst;
} deq_job;

static void deq_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    deq_job *j = vctx;
    const sqz_type_traits *tt = sqz_type_get(j->type);
    for (int64_t r = b; r < e; r++) tt->dequantize(j->src + (size_t)r * j->row_bytes, j->dst + r * j->cols, j->cols);
}

/* RTN without calibration, straight from the source tensor: each task reads its rows
 * into its own scratch, rounds them and sums their errors row by row. No tensor-sized W
 * or Ŵ: on an F32 source those copies, their fresh pages and a serial error sum took
 * about as long as the rounding itself. */
#define RTN_ROWS 16

typedef struct {
    int type;
    const sqz_tensor *src;
    int64_t row0, cols; /* task row r is the source's row0 + r */
    uint8_t *dst;
    size_t row_bytes;
    float *scratch;    /* per thread: 2 · RTN_ROWS · cols */
    double *num, *den; /* per row: ‖w − ŵ‖², ‖w‖² */
    double rescale;    /* sqz_qmodel_opts.rescale */
    int failed;
    sqz_err err;
} rtn_src_job;

static void rtn_src_task(void *vctx, int64_t b, int64_t e, int thread) {
    rtn_src_job *j = vctx;
    const int64_t cols = j->cols;
    const sqz_type_traits *tt = sqz_type_get(j->type);
    float *W = j->scratch + (size_t)thread * 2 * RTN_ROWS * (size_t)cols, *Wq = W + RTN_ROWS * cols;
    for (int64_t r0 = b; r0 < e && !j->failed; r0 += RTN_ROWS) {
        int64_t n = e - r0 < RTN_ROWS ? e - r0 : RTN_ROWS;
        sqz_err e1;
        if (sqz_tensor_rows_f32(j->src, j->row0 + r0, n, W, &e1)) {
            if (!__atomic_exchange_n(&j->failed, 1, __ATOMIC_SEQ_CST)) j->err = e1;
            return;
        }
        for (int64_t r = 0; r < n; r++) {
            uint8_t *d = j->dst + (size_t)(r0 + r) * j->row_bytes;
            const float *w = W + r * cols;
            if (sqz_convert_row(j->type, w, d, cols, NULL, &e1) || sqz_rescale_row(j->type, w, d, cols, j->rescale, &e1)) {
                if (!__atomic_exchange_n(&j->failed, 1, __ATOMIC_SEQ_CST)) j->err = e1;
                return;
            }
            tt->dequantize(d, Wq, cols);
            double num[4] = {0, 0, 0, 0}, den[4] = {0, 0, 0, 0}; /* four chains: no latency-bound sum */
            for (int64_t i = 0; i < cols; i++) {
                double dd = (double)w[i] - Wq[i];
                num[i & 3] += dd * dd;
                den[i & 3] += (double)w[i] * w[i];
            }
            j->num[r0 + r] = (num[0] + num[1]) + (num[2] + num[3]);
            j->den[r0 + r] = (den[0] + den[1]) + (den[2] + den[3]);
        }
    }
}

/* Rows [row0, row0 + n) of tensor idx of the plan rounded to nearest from its source into
 * dst, their errors added to num and den in row order (the same bits for any thread
 * count). */
static int rtn_rows(qm *q, int idx, int64_t row0, int64_t n, uint8_t *dst, double *num, double *den, sqz_err *err) {
    const plan_tensor *p = &q->plan[idx];
    const sqz_qtensor_report *t = &q->rep->tensors[idx];
    int nt = sqz_pool_threads(q->pool);
    rtn_src_job j = {t->type, p->src, row0, p->cols, dst, p->row_bytes, NULL, NULL, NULL, rescale_of(q->o, t->type),
                     0, {{0}}};
    j.scratch = malloc((size_t)(nt > 0 ? nt : 1) * 2 * RTN_ROWS * (size_t)p->cols * sizeof(float));
    j.num = malloc((size_t)n * 2 * sizeof(double));
    if (!j.scratch || !j.num) {
        free(j.scratch); free(j.num);
        return sqz_fail(err, "quantize: out of memory for %s", t->name);
    }
    j.den = j.num + n;
    sqz_pool_for(q->pool, n, RTN_ROWS, rtn_src_task, &j);
    for (int64_t r = 0; !j.failed && r < n; r++) *num += j.num[r], *den += j.den[r];
    free(j.scratch); free(j.num);
    if (j.failed) return sqz_fail(err, "%s: %s", t->name, j.err.msg);
    return SQZ_OK;
}

/* The whole tensor idx by rtn_rows into dst, with the report's weight error. */
static int rtn_from_source(qm *q, int idx, uint8_t *dst, sqz_err *err) {
    sqz_qtensor_report *t = &q->rep->tensors[idx];
    double t0 = sqz_now(), num = 0, den = 0;
    if (rtn_rows(q, idx, 0, q->plan[idx].rows, dst, &num, &den, err)) return SQZ_ERR;
    t->rel_weight_err = den > 0 ? sqrt(num / den) : 0.0;
    q->rep->seconds_quant += sqz_now() - t0;
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GPTQ, sqz_now() - t0, 0.0);
    return SQZ_OK;
}

/* Quantizes W (rows × cols) into dst by the tensor's type and the chosen method, with
 * the calibration's H (cols × cols, Σ x xᵀ; without calibration rtn_from_source rounds
 * instead). F: H's GPTQ factor, made here on first use (F->U
 * NULL) and kept for the next matrix of the same input; the caller frees it. Fills the
 * report's error columns. */
static int quantize_matrix(qm *q, int idx, const float *W, const double *H, sqz_gptq_factor *F, uint8_t *dst,
                           sqz_err *err) {
    const plan_tensor *p = &q->plan[idx];
    sqz_qtensor_report *t = &q->rep->tensors[idx];
    int64_t rows = p->rows, cols = p->cols;
    double t0 = sqz_now(), flops = 0.0;
    int gptq = q->o->method == SQZ_QMETHOD_GPTQ && sqz_gptq_supported(t->type);
    if (gptq) {
        int single = !q->o->gptq_double;
        sqz_gptq_opts go = {q->o->percdamp, q->o->act_order, 0, q->o->shrink, single, q->pool};
        sqz_gptq_stats st;
        if (!F->U && !F->Uf) {
            if (sqz_backend_gptq_factor(q->o->backend, H, cols, &go, F, err))
                return sqz_fail(err, "%s: %s", t->name, err->msg);
            flops += 2.0 / 3.0 * (double)cols * (double)cols * (double)cols; /* potrf, trtri */
        }
        flops += (double)rows * (double)cols * (double)cols; /* the sweep's updates */
        if (F->cols != cols) return sqz_fail(err, "%s: GPTQ factor of %lld columns for %lld", t->name,
                                             (long long)F->cols, (long long)cols);
        if (sqz_gptq_finish(t->type, W, rows, H, F, 0, q->pool, dst, NULL, NULL, NULL, &st, err))
            return sqz_fail(err, "%s: %s", t->name, err->msg);
        flops += 4.0 * (double)st.stats_rows * (double)cols * (double)cols; /* the statistics' DSYMM */
        t->rel_weight_err = st.rel_weight_err;
        t->rel_output_err = st.rel_output_err;
        rows_job rj = {t->type, W, cols, NULL, dst, p->row_bytes, rescale_of(q->o, t->type), 0, {{0}}};
        if (rj.rescale != 0.0) { /* the sweep's codes kept, each group's scales refitted */
            sqz_pool_for(q->pool, rows, 16, rescale_task, &rj);
            if (rj.failed) return sqz_fail(err, "%s: %s", t->name, rj.err.msg);
        }
    } else {
        float *imp = NULL;
        if (sqz_gptq_supported(t->type)) { /* the block types weigh their search by diag(H) */
            if (!(imp = malloc((size_t)cols * sizeof(float)))) return sqz_fail(err, "quantize: out of memory");
            for (int64_t i = 0; i < cols; i++) imp[i] = (float)H[i * cols + i];
        }
        rows_job j = {t->type, W, cols, imp, dst, p->row_bytes, rescale_of(q->o, t->type), 0, {{0}}};
        sqz_pool_for(q->pool, rows, 16, rtn_task, &j);
        free(imp);
        if (j.failed) return sqz_fail(err, "%s: %s", t->name, j.err.msg);
        float *Wq = malloc((size_t)rows * (size_t)cols * sizeof(float));
        if (!Wq) return sqz_fail(err, "quantize: out of memory for %s", t->name);
        deq_job dj = {t->type, dst, p->row_bytes, cols, Wq};
        sqz_pool_for(q->pool, rows, 64, deq_task, &dj);
        int rc = sqz_gptq_errors(W, Wq, rows, cols, H, q->pool, &t->rel_weight_err, &t->rel_output_err, err);
        free(Wq);
        if (rc) return SQZ_ERR;
    }
    if (!gptq) flops += 4.0 * (double)rows * (double)cols * (double)cols; /* the statistics' DSYMM */
    q->rep->seconds_quant += sqz_now() - t0;
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GPTQ, sqz_now() - t0, flops);
    return SQZ_OK;
}

/* ---------------------------------------------------------------- calibration */

enum { HOOK_SAVE, HOOK_ACC };

typedef struct gemm_job {
    const double *a, *b; /* [T, n] */
    double *g;           /* [n, n] += aᵀ b */
    int64_t T, n;
} gemm_job;

/* G[:, b:e] += Aᵀ B[:, b:e]. Each thread owns whole output columns and each entry is one
 * dot product over the tokens in order, so the thread count does not change a bit. */
static void gram_cols_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const gemm_job *j = vctx;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)j->n, (int)(e - b), (int)j->T, 1.0, j->a, (int)j->n,
                j->b + b, (int)j->n, 1.0, j->g + b, (int)j->n);
}

static int ensure_dbuf(qm *q, size_t n, sqz_err *err) {
    if (n <= q->dn) return SQZ_OK;
    double *a = realloc(q->da, n * sizeof(double));
    if (a) q->da = a;
    double *b = a ? realloc(q->db, n * sizeof(double)) : NULL;
    if (b) q->db = b;
    if (!a || !b) return sqz_fail(err, "quantize: out of memory for %zu activations", n);
    q->dn = n;
    return SQZ_OK;
}

/* H += xᵀx and, when xo is given, C += xoᵀx (x, xo: [T, n] floats). */
static int accumulate(qm *q, int site, const float *x, const float *xo, int64_t T, int64_t n, sqz_err *err) {
    size_t cnt = (size_t)T * (size_t)n;
    if (xo && ensure_dbuf(q, cnt, err)) return SQZ_ERR;
    double t0 = sqz_now(), flops = sqz_gram_flops(T, n);
    /* complete (mirrored, or fetched from the GPU) once the layer's windows are in */
    if (sqz_gram_add(q->gacc[site], x, T, err)) return SQZ_ERR;
    if (xo) {
        for (size_t i = 0; i < cnt; i++) q->da[i] = x[i];
        for (size_t i = 0; i < cnt; i++) q->db[i] = xo[i];
        gemm_job jc = {q->db, q->da, q->C[site], T, n};
        sqz_pool_for(q->pool, n, 16, gram_cols_task, &jc);
        flops += 2.0 * (double)T * (double)n * (double)n;
    }
    double dt = sqz_now() - t0;
    q->gram_seconds += dt;
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GRAMS, dt, flops);
    return SQZ_OK;
}

static int site_hook(void *vctx, int layer, int site, const float *x, int64_t T, int64_t width, sqz_err *err) {
    qm *q = vctx;
    if (width != q->gn[site])
        return sqz_fail(err, "quantize: layer %d site %d: width %lld, expected %lld", layer, site, (long long)width,
                        (long long)q->gn[site]);
    if (q->hook_mode == HOOK_SAVE) {
        memcpy(q->so[site], x, (size_t)T * (size_t)width * sizeof(float));
        return SQZ_OK;
    }
    if (accumulate(q, site, x, q->target ? q->so[site] : NULL, T, width, err)) return SQZ_ERR;
    /* the quantized stream's pass through the original layer is only for its Grams:
     * ffn_down's input is the last, its product would be thrown away */
    return q->grams_only && site == SQZ_SITE_FFN_DOWN_IN ? SQZ_FWD_STOP : SQZ_OK;
}

/* (Re)allocates and zeroes the Grams for widths n[]. */
static int grams_reset(qm *q, const int64_t n[SQZ_SITE_COUNT], sqz_err *err) {
    for (int s = 0; s < SQZ_SITE_COUNT; s++) {
        if (n[s] != q->gn[s]) {
            free(q->H[s]); free(q->C[s]); free(q->so[s]);
            q->H[s] = q->C[s] = NULL;
            q->so[s] = NULL;
            q->gn[s] = n[s];
            size_t nn = (size_t)n[s] * (size_t)n[s];
            q->H[s] = malloc(nn * sizeof(double));
            if (q->target) {
                q->C[s] = malloc(nn * sizeof(double));
                /* the CPU pass keeps a window's original site inputs here; the GPU's stay on the device */
                if (!q->bp) q->so[s] = malloc((size_t)q->o->seqlen * (size_t)n[s] * sizeof(float));
            }
            if (!q->H[s] || (q->target && (!q->C[s] || (!q->bp && !q->so[s]))))
                return sqz_fail(err, "quantize: out of memory for %lld × %lld Grams", (long long)n[s], (long long)n[s]);
            sqz_gram_close(q->gacc[s]);
            sqz_gram_close(q->cacc[s]);
            q->gacc[s] = q->cacc[s] = NULL;
            if (n[s] > 0 && sqz_gram_open(q->o->backend, q->pool, n[s], q->H[s], &q->gacc[s], err)) return SQZ_ERR;
            if (n[s] > 0 && q->bp && q->target && sqz_xgram_open(q->o->backend, n[s], q->C[s], &q->cacc[s], err))
                return SQZ_ERR;
        }
        memset(q->H[s], 0, (size_t)n[s] * (size_t)n[s] * sizeof(double));
        if (q->target) memset(q->C[s], 0, (size_t)n[s] * (size_t)n[s] * sizeof(double));
    }
    return SQZ_OK;
}

/* collect_layer on the GPU: the same passes through the block pass, H and C summed on the
 * device (the original window's site inputs kept there for C), the Grams-only passes
 * stopping at ffn_down's input without touching the stream. */
static int collect_layer_gpu(qm *q, int l, sqz_err *err) {
    const sqz_llama_config *c = &q->m->cfg;
    const int64_t L = q->o->seqlen, dim = c->dim;
    double t0 = sqz_now(), flops = 0.0;
    if (sqz_block_load_layer(q->bp, q->m, l, q->pool, err)) return SQZ_ERR;
    for (int s = 0; s < q->o->nsamples; s++) {
        float *xo = q->xo + (int64_t)s * L * dim, *xq = q->xq ? q->xq + (int64_t)s * L * dim : NULL;
        if (!q->seq) {
            if (sqz_block_pass_run(q->bp, xo, L, &(sqz_block_io){.sites = q->gacc}, err)) return SQZ_ERR;
            flops += sqz_forward_flops(q->m, l, L);
            continue;
        }
        if (q->target) {
            if (sqz_block_pass_run(q->bp, xo, L, &(sqz_block_io){.save = 1}, err)) return SQZ_ERR;
            flops += sqz_forward_flops(q->m, l, L);
        }
        sqz_block_io io = {.sites = q->gacc, .xsites = q->target ? q->cacc : NULL, .stop_at_down_in = 1};
        if (sqz_block_pass_run(q->bp, xq, L, &io, err)) return SQZ_ERR;
        flops += sqz_forward_flops(q->m, l, L) - 2.0 * (double)L * (double)dim * (double)c->layer_n_ff[l];
    }
    for (int s = 0; s < SQZ_SITE_COUNT; s++) {
        double per = q->gacc[s] ? sqz_gram_flops(L, q->gn[s]) : 0.0;
        if (q->cacc[s]) per += 2.0 * (double)L * (double)q->gn[s] * (double)q->gn[s];
        flops += q->o->nsamples * per;
    }
    double t1 = sqz_now();
    int rc = SQZ_OK;
    for (int s = 0; s < SQZ_SITE_COUNT && rc == SQZ_OK; s++) {
        if (q->gacc[s]) rc = sqz_gram_finish(q->gacc[s], err);
        if (rc == SQZ_OK && q->cacc[s]) rc = sqz_gram_finish(q->cacc[s], err);
    }
    double t2 = sqz_now();
    q->rep->seconds_calib += t2 - t0;
    /* the Grams' products ran inside the passes: their time and flops count as forward's */
    sqz_stage_add(&q->rep->times, SQZ_STAGE_FORWARD, t1 - t0, flops);
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GRAMS, t2 - t1, 0.0);
    return rc;
}

/* Runs layer l over every window, collecting its Grams: the original stream advances
 * through the original layer; in sequential mode the quantized stream's inputs to the
 * same (still original) layer are collected too, against the saved original ones. */
static int collect_layer(qm *q, int l, sqz_err *err) {
    const sqz_llama_config *c = &q->m->cfg;
    int64_t n[SQZ_SITE_COUNT] = {c->dim, (int64_t)c->layer_n_head[l] * c->head_dim, c->dim, c->layer_n_ff[l]};
    if (grams_reset(q, n, err)) return SQZ_ERR;
    if (q->bp) return collect_layer_gpu(q, l, err);
    double t0 = sqz_now();
    int64_t L = q->o->seqlen, dim = c->dim;
    float *tmp = NULL;
    if (q->seq && !(tmp = malloc((size_t)(L * dim) * sizeof(float)))) return sqz_fail(err, "quantize: out of memory");
    int rc = SQZ_OK, passes = 0;
    q->gram_seconds = 0.0;
    for (int s = 0; s < q->o->nsamples && rc == SQZ_OK; s++) {
        float *xo = q->xo + (int64_t)s * L * dim;
        passes += !q->seq ? 1 : q->target ? 2 : 1;
        if (!q->seq) { /* one stream: the original model's, which also gives H */
            q->hook_mode = HOOK_ACC;
            rc = sqz_forward_layer_ws(q->ws, q->m, l, xo, L, site_hook, q, err);
            continue;
        }
        if (q->target) { /* the original stream advances and lends its inputs to C */
            q->hook_mode = HOOK_SAVE;
            rc = sqz_forward_layer_ws(q->ws, q->m, l, xo, L, site_hook, q, err);
        }
        if (rc == SQZ_OK && q->seq) {
            memcpy(tmp, q->xq + (int64_t)s * L * dim, (size_t)(L * dim) * sizeof(float));
            q->hook_mode = HOOK_ACC;
            q->grams_only = 1;
            rc = sqz_forward_layer_ws(q->ws, q->m, l, tmp, L, site_hook, q, err);
            q->grams_only = 0;
        }
    }
    free(tmp);
    double t1 = sqz_now();
    for (int s = 0; s < SQZ_SITE_COUNT && rc == SQZ_OK; s++)
        if (q->gacc[s]) rc = sqz_gram_finish(q->gacc[s], err);
    q->gram_seconds += sqz_now() - t1;
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GRAMS, sqz_now() - t1, 0.0); /* the last batches */
    q->rep->seconds_calib += sqz_now() - t0;
    /* the Grams-only passes (one per window in sequential mode) skip ffn_down's product */
    double down = q->seq ? 2.0 * (double)L * (double)dim * (double)c->layer_n_ff[l] * q->o->nsamples : 0.0;
    sqz_stage_add(&q->rep->times, SQZ_STAGE_FORWARD, sqz_now() - t0 - q->gram_seconds,
                  passes * sqz_forward_flops(q->m, l, L) - down);
    return rc;
}

/* Runs the quantized layer l (swapped into the view) over the quantized stream. */
static int advance_quantized(qm *q, int l, sqz_err *err) {
    if (q->ws) sqz_fwd_ws_forget(q->ws); /* the view's tensor structs are reused layer to layer */
    double t0 = sqz_now();
    int64_t L = q->o->seqlen, dim = q->m->cfg.dim;
    /* the view: layer l's quantized tensors swapped in */
    if (q->bp && sqz_block_load_layer(q->bp, &q->view, l, q->pool, err)) return SQZ_ERR;
    for (int s = 0; s < q->o->nsamples; s++)
        if (q->bp ? sqz_block_pass_run(q->bp, q->xq + (int64_t)s * L * dim, L, NULL, err)
                  : sqz_forward_layer_ws(q->ws, &q->view, l, q->xq + (int64_t)s * L * dim, L, NULL, NULL, err))
            return SQZ_ERR;
    q->rep->seconds_calib += sqz_now() - t0;
    sqz_stage_add(&q->rep->times, SQZ_STAGE_FORWARD, sqz_now() - t0, q->o->nsamples * sqz_forward_flops(q->m, l, L));
    return SQZ_OK;
}

typedef struct wstar_job {
    const float *W;
    const float *A; /* [n, n] */
    float *out;
    int64_t rows, n;
} wstar_job;

#define WSTAR_ROWS 64 /* fixed row chunks: the same SGEMM shapes for any thread count */

static void wstar_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const wstar_job *j = vctx;
    for (int64_t c = b; c < e; c++) {
        int64_t r0 = c * WSTAR_ROWS, nr = j->rows - r0 < WSTAR_ROWS ? j->rows - r0 : WSTAR_ROWS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)j->n, (int)j->n, 1.0f,
                    j->W + r0 * j->n, (int)j->n, j->A, (int)j->n, 0.0f, j->out + r0 * j->n, (int)j->n);
    }
}

/* A = (C + λI)(H + λI)⁻¹ (n × n, float), λ = percdamp · mean(diag H): the map that
 * turns W into the target W* = W A of sequential mode. W* minimizes
 * ‖W X_o − W* X_q‖² + λ‖W* − W‖²: the ridge term pulls W* towards W, not towards 0, in
 * the directions the calibration inputs barely reach (without it those directions of
 * W are wiped out and the model breaks on other text). */
static int target_map(qm *q, int site, float *A, sqz_err *err) {
    int64_t n = q->gn[site];
    double t0 = sqz_now();
    size_t nn = (size_t)n * (size_t)n;
    double *Hd = malloc(nn * sizeof(double)), *B = malloc(nn * sizeof(double));
    if (!Hd || !B) {
        free(Hd); free(B);
        return sqz_fail(err, "quantize: out of memory");
    }
    memcpy(Hd, q->H[site], nn * sizeof(double));
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += Hd[i * n + i];
    mean /= (double)n;
    double damp = (q->o->percdamp > 0 ? q->o->percdamp : 0.01) * (mean > 0 ? mean : 1.0);
    for (int64_t i = 0; i < n; i++) {
        if (Hd[i * n + i] == 0) Hd[i * n + i] = 1; /* a dead input, as GPTQ treats it */
        Hd[i * n + i] += damp;
    }
    /* Column-major, B holds Cᵀ (C's row-major buffer); solving Hd X = Cᵀ gives
     * X = Hd⁻¹ Cᵀ = Aᵀ column-major, i.e. A row-major. */
    memcpy(B, q->C[site], nn * sizeof(double));
    for (int64_t i = 0; i < n; i++) B[i * n + i] += damp;
    char lo = 'L';
    lapack_int N = (lapack_int)n, info = 0;
    LAPACK_dpotrf(&lo, &N, Hd, &N, &info);
    if (info == 0) LAPACK_dpotrs(&lo, &N, &N, Hd, &N, B, &N, &info);
    if (info == 0)
        for (size_t i = 0; i < nn; i++) A[i] = (float)B[i];
    free(Hd);
    free(B);
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GPTQ, sqz_now() - t0, 7.0 / 3.0 * (double)n * (double)n * (double)n);
    if (info != 0) return sqz_fail(err, "quantize: the Gram of site %d is not positive definite (LAPACK info %d)", site,
                                   (int)info);
    return SQZ_OK;
}

/* W ← W A in place (rows × n), through a scratch copy. */
static int apply_target_map(qm *q, float *W, int64_t rows, int64_t n, const float *A, sqz_err *err) {
    float *out = malloc((size_t)rows * (size_t)n * sizeof(float));
    if (!out) return sqz_fail(err, "quantize: out of memory");
    wstar_job j = {W, A, out, rows, n};
    double t0 = sqz_now();
    sqz_pool_for(q->pool, (rows + WSTAR_ROWS - 1) / WSTAR_ROWS, 1, wstar_task, &j);
    sqz_stage_add(&q->rep->times, SQZ_STAGE_GPTQ, sqz_now() - t0, 2.0 * (double)rows * (double)n * (double)n);
    memcpy(W, out, (size_t)rows * (size_t)n * sizeof(float));
    free(out);
    return SQZ_OK;
}

/* ---------------------------------------------------------------- one layer */

static int do_layer(qm *q, int l, sqz_err *err) {
    const sqz_model *m = q->m;
    int base = q->idx_layer[l];
    /* plan order: attn_norm, q, k, v, o, ffn_norm, gate, up, down */
    const int lin_idx[LIN_COUNT] = {base + 1, base + 2, base + 3, base + 4, base + 6, base + 7, base + 8};
    if (q->calib && collect_layer(q, l, err)) return SQZ_ERR;
    if (write_norm(q, base, err)) return SQZ_ERR;
    float *A = NULL;
    int A_site = -1, rc = SQZ_ERR;
    sqz_gptq_factor F = {0}; /* of H[F_site]: q, k, v share one, as do gate and up */
    int F_site = -1;
    for (int i = 0; i < LIN_COUNT; i++) {
        if (i == LIN_GATE && write_norm(q, base + 5, err)) goto done;
        const plan_tensor *p = &q->plan[lin_idx[i]];
        const sqz_qtensor_report *t = &q->rep->tensors[lin_idx[i]];
        int site = kLinSite[i];
        if ((size_t)t->bytes > q->qcap[i]) { /* kept from layer to layer: fresh pages cost */
            free(q->qdata[i]);
            q->qcap[i] = 0;
            if (!(q->qdata[i] = malloc((size_t)t->bytes))) {
                sqz_fail(err, "quantize: out of memory for %s", t->name);
                goto done;
            }
            q->qcap[i] = (size_t)t->bytes;
        }
        if (!q->calib) { /* round to nearest from the source, no copy of W */
            if (rtn_from_source(q, lin_idx[i], q->qdata[i], err) || write_rows(q, p, q->qdata[i], err)) goto done;
            continue;
        }
        size_t nW = (size_t)p->rows * (size_t)p->cols;
        float *W = malloc(nW * sizeof(float));
        if (!W) {
            sqz_fail(err, "quantize: out of memory for %s", t->name);
            goto done;
        }
        int bad = sqz_tensor_rows_f32(p->src, 0, p->rows, W, err);
        if (!bad && q->target) {
            if (A_site != site) {
                free(A);
                A = malloc((size_t)q->gn[site] * (size_t)q->gn[site] * sizeof(float));
                if (!A) bad = sqz_fail(err, "quantize: out of memory");
                else bad = target_map(q, site, A, err);
                A_site = bad ? -1 : site;
            }
            if (!bad) bad = apply_target_map(q, W, p->rows, p->cols, A, err);
        }
        if (site != F_site) {
            sqz_gptq_factor_free(&F);
            F_site = site;
        }
        if (!bad) bad = quantize_matrix(q, lin_idx[i], W, q->H[site], &F, q->qdata[i], err);
        free(W);
        if (bad || write_rows(q, p, q->qdata[i], err)) goto done;
        /* the quantized tensor, as the quantized stream's forward reads it */
        sqz_tensor *qt = &q->qt[i];
        *qt = *p->src;
        qt->type = t->type;
        qt->data = q->qdata[i];
        qt->nbytes = (size_t)t->bytes;
    }
    if (q->seq) {
        sqz_layer *V = &q->view_layers[l];
        V->wq = &q->qt[LIN_Q]; V->wk = &q->qt[LIN_K]; V->wv = &q->qt[LIN_V]; V->wo = &q->qt[LIN_O];
        V->w_gate = &q->qt[LIN_GATE]; V->w_up = &q->qt[LIN_UP]; V->w_down = &q->qt[LIN_DOWN];
        int arc = advance_quantized(q, l, err);
        *V = m->layers[l]; /* the buffers are reused by the next layer */
        if (arc) goto done;
    }
    for (int i = 0; i < q->n_extra[l]; i++)
        if (write_norm(q, base + 9 + i, err)) goto done;
    rc = SQZ_OK;
done:
    free(A);
    sqz_gptq_factor_free(&F);
    return rc;
}

/* ---------------------------------------------------------------- head */

/* x ← rmsnorm(x) · w over T rows, as the forward pass computes it. */
static void rmsnorm_rows(float *x, const float *w, int64_t T, int64_t dim, float eps) {
    for (int64_t t = 0; t < T; t++) sqz_rmsnorm(x + t * dim, x + t * dim, w, dim, eps);
}

static int do_output(qm *q, sqz_err *err) {
    const sqz_model *m = q->m;
    const sqz_llama_config *c = &m->cfg;
    const plan_tensor *p = &q->plan[q->idx_out];
    sqz_qtensor_report *t = &q->rep->tensors[q->idx_out];
    if (write_norm(q, q->idx_out_norm, err)) return SQZ_ERR;
    if (t->kept) return write_rows(q, p, p->src->data, err);
    if (!q->calib) { /* round to nearest from the source, no copy of W */
        uint8_t *d = malloc((size_t)t->bytes);
        if (!d) return sqz_fail(err, "quantize: out of memory for %s", t->name);
        int rc = rtn_from_source(q, q->idx_out, d, err) || write_rows(q, p, d, err) ? SQZ_ERR : SQZ_OK;
        free(d);
        return rc;
    }
    int64_t dim = c->dim;
    /* Targets from the original model only when the tensor is not also the input
     * embedding: W* would move the embedding rows away from W. */
    int use_target = q->target && !q->tied;
    int rc = SQZ_ERR;
    float *W = NULL, *A = NULL, *nw = malloc((size_t)dim * sizeof(float));
    uint8_t *dst = malloc((size_t)t->bytes);
    if (!nw || !dst) {
        sqz_fail(err, "quantize: out of memory");
        goto done;
    }
    if (sqz_tensor_rows_f32(m->out_norm, 0, 1, nw, err)) goto done;
    if (q->calib) {
        int64_t one[SQZ_SITE_COUNT] = {dim, 0, 0, 0};
        if (grams_reset(q, one, err)) goto done;
        int64_t L = q->o->seqlen;
        double t0 = sqz_now();
        for (int s = 0; s < q->o->nsamples; s++) {
            float *xo = q->xo + (int64_t)s * L * dim;
            rmsnorm_rows(xo, nw, L, dim, c->norm_eps);
            float *xq = NULL;
            if (q->seq && q->xq == q->xo) {
                xq = xo;
            } else if (q->seq) {
                xq = q->xq + (int64_t)s * L * dim;
                rmsnorm_rows(xq, nw, L, dim, c->norm_eps);
            }
            if (accumulate(q, 0, q->seq ? xq : xo, use_target ? xo : NULL, L, dim, err)) goto done;
        }
        if (sqz_gram_finish(q->gacc[0], err)) goto done;
        q->rep->seconds_calib += sqz_now() - t0;
    }
    size_t nW = (size_t)p->rows * (size_t)p->cols;
    if (!(W = malloc(nW * sizeof(float)))) {
        sqz_fail(err, "quantize: out of memory for the %lld × %lld output head", (long long)p->rows,
                 (long long)p->cols);
        goto done;
    }
    if (sqz_tensor_rows_f32(p->src, 0, p->rows, W, err)) goto done;
    if (use_target) {
        if (!(A = malloc((size_t)dim * (size_t)dim * sizeof(float)))) {
            sqz_fail(err, "quantize: out of memory");
            goto done;
        }
        if (target_map(q, 0, A, err) || apply_target_map(q, W, p->rows, p->cols, A, err)) goto done;
    }
    sqz_gptq_factor F = {0};
    int qrc = quantize_matrix(q, q->idx_out, W, q->H[0], &F, dst, err);
    sqz_gptq_factor_free(&F);
    if (qrc) goto done;
    if (write_rows(q, p, dst, err)) goto done;
    rc = SQZ_OK;
done:
    free(W); free(A); free(nw); free(dst);
    return rc;
}

/* An untied embedding: RTN (a lookup table has no input Gram), rows in chunks. In
 * sequential mode the quantized stream's embeddings are taken from the rows as they are
 * quantized. */
static int do_embedding(qm *q, sqz_err *err) {
    const plan_tensor *p = &q->plan[q->idx_embd];
    const sqz_qtensor_report *t = &q->rep->tensors[q->idx_embd];
    const int64_t chunk = 1024;
    float *W = malloc((size_t)chunk * (size_t)p->cols * sizeof(float)), *Wq = NULL;
    uint8_t *dst = malloc((size_t)chunk * p->row_bytes);
    double num = 0, den = 0;
    int rc = SQZ_ERR;
    if (!W || !dst || !(Wq = malloc((size_t)chunk * (size_t)p->cols * sizeof(float)))) {
        sqz_fail(err, "quantize: out of memory");
        goto done;
    }
    for (int64_t r0 = 0; r0 < p->rows; r0 += chunk) {
        int64_t nr = p->rows - r0 < chunk ? p->rows - r0 : chunk;
        if (!q->seq) { /* no stream to feed: round from the source on the pool */
            if (rtn_rows(q, q->idx_embd, r0, nr, dst, &num, &den, err) ||
                sqz_gguf_write_data(&q->w, dst, p->row_bytes * (size_t)nr, err))
                goto done;
            continue;
        }
        if (sqz_tensor_rows_f32(p->src, r0, nr, W, err)) goto done;
        rows_job j = {t->type, W, p->cols, NULL, dst, p->row_bytes, rescale_of(q->o, t->type), 0, {{0}}};
        sqz_pool_for(q->pool, nr, 16, rtn_task, &j);
        if (j.failed) {
            sqz_fail(err, "%s: %s", t->name, j.err.msg);
            goto done;
        }
        deq_job dj = {t->type, dst, p->row_bytes, p->cols, Wq};
        sqz_pool_for(q->pool, nr, 64, deq_task, &dj);
        for (int64_t i = 0; i < nr * p->cols; i++) {
            double d = (double)W[i] - Wq[i];
            num += d * d;
            den += (double)W[i] * W[i];
        }
        if (q->seq) /* the quantized stream starts from the quantized rows */
            for (int64_t t = 0; t < q->T; t++) {
                int64_t id = q->o->windows[t];
                if (id >= r0 && id < r0 + nr)
                    memcpy(q->xq + t * p->cols, Wq + (id - r0) * p->cols, (size_t)p->cols * sizeof(float));
            }
        /* this chunk's rows only (an embedding is never permuted) */
        if (sqz_gguf_write_data(&q->w, dst, p->row_bytes * (size_t)nr, err)) goto done;
    }
    q->rep->tensors[q->idx_embd].rel_weight_err = den > 0 ? sqrt(num / den) : 0;
    rc = SQZ_OK;
done:
    free(W); free(Wq); free(dst);
    return rc;
}

/* ---------------------------------------------------------------- checkpoints */

/* A checkpoint's state file: what the run was made from (three hashes, each naming a
 * part of the inputs), where the partial file stands, the report so far and the
 * streams. Native byte order: it is read back by the same build on the same machine. */
#define CKPT_MAGIC "SQZCKPT1"
typedef struct {
    char magic[8];
    uint64_t key_model, key_calib, key_opts;
    int32_t next_layer, target;
    uint64_t offset;
    int64_t cur, n_tensors, T, dim;
    uint64_t report_bytes;
} ckpt_head;

/* The model as far as a checkpoint can tell cheaply: shapes, types and the first and
 * last bytes of every tensor of the plan. */
static uint64_t key_model(const qm *q) {
    const sqz_llama_config *c = &q->m->cfg;
    uint64_t h = sqz_hash64(SQZ_HASH64_SEED, &c->dim, sizeof c->dim);
    h = sqz_hash64(h, &c->n_layer, sizeof c->n_layer);
    h = sqz_hash64(h, &c->n_vocab, sizeof c->n_vocab);
    for (int i = 0; i < q->rep->n_tensors; i++) {
        const sqz_tensor *t = q->plan[i].src;
        if (!t) continue;
        h = sqz_hash64(h, &t->type, sizeof t->type);
        h = sqz_hash64(h, t->ne, sizeof t->ne);
        size_t k = t->nbytes < 256 ? t->nbytes : 256;
        if (t->data && k) h = sqz_hash64(sqz_hash64(h, t->data, k), (const uint8_t *)t->data + t->nbytes - k, k);
    }
    return h;
}

static uint64_t key_calib(const sqz_qmodel_opts *o) {
    uint64_t h = sqz_hash64(SQZ_HASH64_SEED, &o->nsamples, sizeof o->nsamples);
    h = sqz_hash64(h, &o->seqlen, sizeof o->seqlen);
    if (o->windows) h = sqz_hash64(h, o->windows, (size_t)o->nsamples * (size_t)o->seqlen * sizeof(int32_t));
    return h;
}

static uint64_t key_opts(const qm *q) {
    const sqz_qmodel_opts *o = q->o;
    int v[] = {o->type, o->method, o->output_type, o->embd_type, o->keep_output_type, o->sequential,
               o->target_original, o->act_order, o->gptq_double, (int)sqz_backend_device(o->backend)};
    uint64_t h = sqz_hash64(SQZ_HASH64_SEED, v, sizeof v);
    h = sqz_hash64(h, &o->percdamp, sizeof o->percdamp);
    h = sqz_hash64(h, &o->shrink, sizeof o->shrink);
    h = sqz_hash64(h, &o->rescale, sizeof o->rescale);
    for (int i = 0; i < q->rep->n_tensors; i++) h = sqz_hash64(h, &q->rep->tensors[i].type, sizeof(int));
    return h;
}

static char *ckpt_path(const char *base, const char *ext) {
    size_t n = strlen(base) + strlen(ext) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", base, ext);
    return p;
}

/* The state after layer next_layer - 1, written atomically next to the partial file. */
static int ckpt_save(qm *q, int next_layer, sqz_err *err) {
    sqz_gguf_resume_point rp;
    if (sqz_gguf_write_checkpoint(&q->w, &rp, err)) return SQZ_ERR;
    char *path = ckpt_path(q->o->checkpoint, ".state");
    if (!path) return sqz_fail(err, "quantize: out of memory");
    ckpt_head h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CKPT_MAGIC, 8);
    h.key_model = key_model(q), h.key_calib = key_calib(q->o), h.key_opts = key_opts(q);
    h.next_layer = next_layer, h.target = q->target;
    h.offset = rp.offset, h.cur = rp.cur;
    h.n_tensors = q->rep->n_tensors, h.T = q->T, h.dim = q->m->cfg.dim;
    h.report_bytes = (uint64_t)q->rep->n_tensors * sizeof(sqz_qtensor_report);
    size_t ns = (size_t)q->T * (size_t)h.dim * sizeof(float);
    sqz_out out;
    int rc = sqz_out_open(&out, path, err) || sqz_out_write(&out, &h, sizeof h, err) ||
             sqz_out_write(&out, q->rep->tensors, h.report_bytes, err) ||
             (q->seq && sqz_out_write(&out, q->xq, ns, err)) ||
             (q->target && sqz_out_write(&out, q->xo, ns, err)) || sqz_out_commit(&out, err);
    if (rc) sqz_out_abort(&out);
    free(path);
    return rc ? SQZ_ERR : SQZ_OK;
}

/* Reads the state into q when there is one: *next_layer and *rp from it (next_layer 0 and
 * rp NULL-equivalent when none). A state from other inputs is an error naming which. */
static int ckpt_load(qm *q, int *next_layer, sqz_gguf_resume_point *rp, int *have, sqz_err *err) {
    *have = 0;
    *next_layer = 0;
    char *path = ckpt_path(q->o->checkpoint, ".state");
    if (!path) return sqz_fail(err, "quantize: out of memory");
    FILE *f = fopen(path, "rb");
    if (!f) {
        free(path);
        return SQZ_OK; /* nothing to resume: from the start */
    }
    ckpt_head h;
    int rc = SQZ_ERR;
    size_t ns = (size_t)q->T * (size_t)q->m->cfg.dim * sizeof(float);
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, CKPT_MAGIC, 8)) {
        sqz_fail(err, "%s: not a checkpoint of this sqz (magic)", path);
    } else if (h.key_model != key_model(q)) {
        sqz_fail(err, "%s: the checkpoint was made from another model (not %s)", path, q->m->path);
    } else if (h.key_calib != key_calib(q->o) || h.T != q->T) {
        sqz_fail(err, "%s: the checkpoint was made with other calibration tokens (text, --nsamples, --seqlen or "
                      "--seed)", path);
    } else if (h.key_opts != key_opts(q) || h.target != q->target || h.n_tensors != q->rep->n_tensors) {
        sqz_fail(err, "%s: the checkpoint was made with other options (types, plan, GPTQ settings or device)", path);
    } else if (h.next_layer < 1 || h.next_layer > q->m->cfg.n_layer || h.dim != q->m->cfg.dim ||
               h.report_bytes != (uint64_t)h.n_tensors * sizeof(sqz_qtensor_report)) {
        sqz_fail(err, "%s: field next_layer %d or its sizes are out of range", path, (int)h.next_layer);
    } else {
        sqz_qtensor_report *saved = malloc(h.report_bytes);
        if (!saved || fread(saved, 1, h.report_bytes, f) != h.report_bytes ||
            (q->seq && fread(q->xq, 1, ns, f) != ns) || (q->target && fread(q->xo, 1, ns, f) != ns)) {
            sqz_fail(err, "%s: truncated (expected the report and %zu bytes of stream)", path, ns);
        } else {
            memcpy(q->rep->tensors, saved, h.report_bytes);
            *next_layer = h.next_layer;
            rp->offset = h.offset;
            rp->cur = h.cur;
            *have = 1;
            rc = SQZ_OK;
        }
        free(saved);
    }
    fclose(f);
    free(path);
    return rc;
}

/* ---------------------------------------------------------------- driver */

void sqz_qmodel_opts_default(sqz_qmodel_opts *o) {
    memset(o, 0, sizeof *o);
    o->type = SQZ_TYPE_Q4_K;
    o->method = SQZ_QMETHOD_RTN;
    o->output_type = -1;
    o->embd_type = -1;
    o->sequential = 1;
    o->percdamp = 0.01;
    o->shrink = 0.75;
    o->rescale = 1.0;
}

void sqz_qmodel_report_free(sqz_qmodel_report *r) {
    free(r->tensors);
    memset(r, 0, sizeof *r);
}

static int check_opts(const sqz_model *m, const sqz_qmodel_opts *o, sqz_err *err) {
    const int types[3] = {o->type, o->output_type, o->embd_type};
    const char *what[3] = {"type", "output type", "embedding type"};
    for (int i = 0; i < 3; i++) {
        if (i > 0 && types[i] < 0) continue;
        const sqz_type_traits *tt = sqz_type_get(types[i]);
        if (!tt || !writable(types[i]))
            return sqz_fail(err, "quantize: %s %s cannot be written by sqz", what[i], tt ? tt->name : "(unknown)");
    }
    for (int i = 0; o->tensor_types && i < m->cfg.n_layer * LIN_COUNT + 2; i++) {
        int t = o->tensor_types[i];
        if (t >= 0 && (!sqz_type_get(t) || !writable(t)))
            return sqz_fail(err, "quantize: plan entry %d: type id %d cannot be written by sqz", i, t);
    }
    if (o->method != SQZ_QMETHOD_RTN && o->method != SQZ_QMETHOD_GPTQ)
        return sqz_fail(err, "quantize: unknown method %d", o->method);
    if (o->method == SQZ_QMETHOD_GPTQ && !o->windows)
        return sqz_fail(err, "quantize: GPTQ needs calibration text (--calib)");
    if (!(o->shrink >= 0 && o->shrink <= 1))
        return sqz_fail(err, "quantize: shrink %g: expected a value in [0, 1]", o->shrink);
    if (!(o->rescale >= 0 && o->rescale <= 1))
        return sqz_fail(err, "quantize: rescale power %g: expected a value in [0, 1]", o->rescale);
    if (o->windows && (o->nsamples <= 0 || o->seqlen <= 0))
        return sqz_fail(err, "quantize: nsamples %d and seqlen %d must both be >= 1", o->nsamples, o->seqlen);
    if (o->windows && o->seqlen > m->cfg.n_ctx_train && m->cfg.n_ctx_train > 0)
        return sqz_fail(err, "quantize: seqlen %d is longer than the model's context %d", o->seqlen,
                        m->cfg.n_ctx_train);
    return SQZ_OK;
}

int sqz_quantize_model(const sqz_model *m, const char *out_path, const sqz_qmodel_opts *opts, sqz_pool *pool,
                       sqz_qmodel_report *rep, sqz_err *err) {
    sqz_qmodel_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (check_opts(m, opts, err)) return SQZ_ERR;
    double t_start = sqz_now();
    qm q;
    memset(&q, 0, sizeof q);
    q.m = m;
    q.o = opts;
    q.pool = pool;
    q.rep = rep;
    q.calib = opts->windows != NULL;
    q.seq = q.calib && opts->sequential && opts->method == SQZ_QMETHOD_GPTQ;
    q.target = q.seq && opts->target_original;
    sqz_gguf_writer_init(&q.w);
    int rc = SQZ_ERR;
    char *part_path = NULL, *state_path = NULL;
    const sqz_llama_config *c = &m->cfg;
    int main_type = opts->type;
    if (sqz_model_write_gguf_meta(m, &q.w, ftype_of(main_type), err) || plan_build(&q, err)) goto done;
    if (q.calib) {
        q.T = (int64_t)opts->nsamples * opts->seqlen;
        size_t n = (size_t)q.T * (size_t)c->dim;
        /* sequential without original targets needs only the quantized stream */
        if (!(q.xo = malloc(n * sizeof(float))) || (q.target && !(q.xq = malloc(n * sizeof(float))))) {
            sqz_fail(err, "quantize: out of memory for %lld calibration tokens", (long long)q.T);
            goto done;
        }
        for (int s = 0; s < opts->nsamples; s++)
            if (sqz_forward_embed(m, opts->windows + (int64_t)s * opts->seqlen, opts->seqlen,
                                  q.xo + (int64_t)s * opts->seqlen * c->dim, err))
                goto done;
        rep->calib_tokens = q.T;
        if (q.seq && !q.target) q.xq = q.xo;
        if (opts->backend && sqz_backend_device(opts->backend) == SQZ_DEVICE_CUDA) {
            sqz_block_desc widest;
            sqz_block_desc_widest(m, &widest);
            if (sqz_block_pass_open(opts->backend, opts->seqlen, &widest, &q.bp, err)) goto done;
        } else if (sqz_fwd_ws_create(m, pool, opts->seqlen, &q.ws, err)) {
            goto done;
        }
    }
    if (q.seq) {
        q.view = *m;
        if (!(q.view_layers = malloc((size_t)c->n_layer * sizeof *q.view_layers))) {
            sqz_fail(err, "quantize: out of memory");
            goto done;
        }
        memcpy(q.view_layers, m->layers, (size_t)c->n_layer * sizeof *q.view_layers);
        q.view.layers = q.view_layers;
    }
    int first = 0; /* the first layer to quantize: after a resumed checkpoint's */
    if (opts->checkpoint) {
        sqz_gguf_resume_point rp = {0, 0};
        int have = 0;
        if (!(part_path = ckpt_path(opts->checkpoint, ".part")) || !(state_path = ckpt_path(opts->checkpoint, ".state"))) {
            sqz_fail(err, "quantize: out of memory");
            goto done;
        }
        if (opts->resume ? ckpt_load(&q, &first, &rp, &have, err) : (unlink(state_path), SQZ_OK)) goto done;
        rep->resumed_layer = first;
        if (sqz_gguf_write_begin_resumable(&q.w, out_path, part_path, have ? &rp : NULL, err)) goto done;
    } else if (sqz_gguf_write_begin(&q.w, out_path, err)) {
        goto done;
    }
    sqz_progress_begin(&q.prog, "quantize", c->n_layer + 2, "step", 0);
    if (!opts->progress) q.prog.out = NULL;
    if (first == 0) {
        if (!q.tied && do_embedding(&q, err)) goto done;
        if (q.seq && q.tied && q.xq != q.xo) memcpy(q.xq, q.xo, (size_t)q.T * (size_t)c->dim * sizeof(float));
    }
    sqz_progress_update(&q.prog, 1, "embedding");
    char extra[64];
    double last_ckpt = sqz_now();
    for (int l = first; l < c->n_layer; l++) {
        if (opts->layer_hook && opts->layer_hook(opts->layer_hook_ctx, l, 0, err)) goto done;
        if (do_layer(&q, l, err)) goto done;
        if (opts->layer_hook && opts->layer_hook(opts->layer_hook_ctx, l, 1, err)) goto done;
        if (opts->checkpoint && l + 1 < c->n_layer && sqz_now() - last_ckpt >= opts->checkpoint_every_s) {
            if (ckpt_save(&q, l + 1, err)) goto done;
            last_ckpt = sqz_now();
        }
        snprintf(extra, sizeof extra, "layer %d/%d", l + 1, c->n_layer);
        sqz_progress_update(&q.prog, 2 + l, extra);
    }
    if (do_output(&q, err)) goto done;
    if (q.idx_rope >= 0 && write_norm(&q, q.idx_rope, err)) goto done;
    sqz_progress_update(&q.prog, c->n_layer + 2, "output");
    sqz_progress_end(&q.prog);
    if (sqz_gguf_write_end(&q.w, err)) goto done;
    if (state_path) unlink(state_path); /* the output is complete: nothing to resume */
    rep->file_bytes = 0;
    {
        FILE *f = fopen(out_path, "rb");
        if (f && fseek(f, 0, SEEK_END) == 0) rep->file_bytes = (uint64_t)ftell(f);
        if (f) fclose(f);
    }
    rep->bpw = rep->n_params > 0 ? 8.0 * (double)rep->file_bytes / (double)rep->n_params : 0;
    rc = SQZ_OK;
done:
    if (rc) sqz_progress_end(&q.prog);
    rep->seconds_total = sqz_now() - t_start;
    sqz_gguf_writer_free(&q.w);
    for (int s = 0; s < SQZ_SITE_COUNT; s++) {
        free(q.H[s]); free(q.C[s]); free(q.so[s]);
        sqz_gram_close(q.gacc[s]);
        sqz_gram_close(q.cacc[s]);
    }
    for (int i = 0; i < LIN_COUNT; i++) free(q.qdata[i]);
    if (q.xq == q.xo) q.xq = NULL;
    free(q.da); free(q.db); free(q.xo); free(q.xq); free(q.view_layers); free(q.plan); free(q.idx_layer); free(q.n_extra);
    free(part_path); free(state_path);
    sqz_fwd_ws_free(q.ws);
    sqz_block_pass_close(q.bp);
    if (rc || rep == &local) sqz_qmodel_report_free(rep);
    return rc;
}

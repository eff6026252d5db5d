/* bench_gptq_speed: wall time of sqz_gptq_quantize on one large linear layer, by default
 * Llama-7B's gate/up projection (4096 inputs, 11008 outputs), with a sanity column: the
 * H-weighted output error of GPTQ against round-to-nearest into the same type.
 *
 *   bench_gptq_speed [--rows 11008] [--cols 4096] [--type Q4_K] [--threads N]
 *                    [--tokens T] [--seed S] [--act-order] [--no-append]
 *
 * Inputs (seeded, reproducible):
 *   W (rows × cols, f32): i.i.d. N(0, 0.02²), the scale of a trained Llama's weights.
 *   H = XᵀX / T (cols × cols, double) of T = 2·cols synthetic activations, each
 *       x = s ⊙ (z + Vᵀa): z ~ N(0, I); a shared low-rank part Vᵀa that correlates the
 *       channels (16 fixed random directions V ~ N(0, I), per-token weights
 *       a ~ N(0, I/4)); per-channel scales s, log-normal (σ = 0.5) with 1 channel in
 *       128 ×10 (LLM activations have a few outlier channels). T = 2·cols keeps H
 *       positive definite; one DSYRK (T·cols²/2 MACs) makes it, timed on stderr only.
 * GPTQ: sqz_gptq_quantize(type, W, H) on a pool of --threads workers (OpenBLAS gets the
 *   same thread count for the factorization); its own statistics are switched off so
 *   the total is factor + sweep. factor and sweep are sqz_gptq_stats' wall times.
 *   Work counted as in the GPTQ speed issue: cols³/3 + rows·cols² multiply-adds.
 * RTN: sqz_quantize_row per row with diag(H) as the per-column importance (what
 *   `sqz quantize --method rtn --calib` does), on the same pool.
 * Both rel_output_err = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) come from sqz_gptq_errors.
 * The table goes to stdout and, unless --no-append, to bench/RESULTS.md. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench_util.h"
#include "sqz/core.h"
#include "sqz/gptq.h"
#include "sqz/quant.h"
#include "sqz/tensor.h"

/* ---- seeded Gaussian numbers: splitmix64 + Box-Muller ---- */
typedef struct {
    uint64_t s;
    int have;
    double spare;
} rng;

static uint64_t rng_u64(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(rng *r) { return ((double)(rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double rng_gauss(rng *r) {
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double u = rng_unit(r), v = rng_unit(r);
    double m = sqrt(-2.0 * log(u));
    r->spare = m * sin(2.0 * M_PI * v);
    r->have = 1;
    return m * cos(2.0 * M_PI * v);
}

/* Row blocks are filled in parallel, each from its own stream (seed, block), so the
 * numbers do not depend on the thread count. */
#define GEN_ROWS 64

typedef struct {
    uint64_t seed;
    int64_t cols, k;
    float *W;        /* W: rows × cols, or NULL */
    double *X;       /* X: T × cols, or NULL */
    const double *s; /* channel scales */
    const double *V; /* k × cols shared directions */
} gen_ctx;

static void gen_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    gen_ctx *c = vctx;
    double a[64];
    for (int64_t r0 = b; r0 < e; r0 += GEN_ROWS) {
        rng g = {c->seed * 0x100000001B3ull + (uint64_t)(r0 / GEN_ROWS) + 1, 0, 0};
        int64_t r1 = r0 + GEN_ROWS < e ? r0 + GEN_ROWS : e;
        for (int64_t r = r0; r < r1; r++) {
            if (c->W) {
                for (int64_t j = 0; j < c->cols; j++) c->W[r * c->cols + j] = (float)(0.02 * rng_gauss(&g));
            } else {
                double *x = c->X + r * c->cols;
                for (int64_t q = 0; q < c->k; q++) a[q] = 0.5 * rng_gauss(&g);
                for (int64_t j = 0; j < c->cols; j++) {
                    double v = rng_gauss(&g);
                    for (int64_t q = 0; q < c->k; q++) v += a[q] * c->V[q * c->cols + j];
                    x[j] = c->s[j] * v;
                }
            }
        }
    }
}

/* ---- RTN with diag(H) importance, row-parallel ---- */
typedef struct {
    int type;
    int64_t cols;
    size_t row_bytes;
    const float *W;
    const float *imp;
    uint8_t *dst;
    int failed;
    sqz_err err;
} rtn_ctx;

static void rtn_task(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    rtn_ctx *c = vctx;
    sqz_err err;
    for (int64_t r = b; r < e && !c->failed; r++)
        if (sqz_quantize_row(c->type, c->W + r * c->cols, c->dst + (size_t)r * c->row_bytes, c->cols, c->imp, &err)) {
            c->failed = 1;
            c->err = err;
        }
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_gptq_speed [options]\n"
            "  --rows N       output channels (default 11008: Llama-7B gate/up)\n"
            "  --cols N       input channels (default 4096)\n"
            "  --type T       Q8_0 Q6_K Q5_K Q4_K Q3_K Q2_K Q5_0 Q4_0 IQ4_NL (default Q4_K)\n"
            "  --threads N    pool workers and OpenBLAS threads (default: all CPUs)\n"
            "  --tokens T     synthetic activations behind H (default 2*cols)\n"
            "  --seed S       seed of W and H (default 1)\n"
            "  --act-order    GPTQ with act-order (static groups)\n"
            "  --no-append    do not append the table to bench/RESULTS.md\n");
}

static int parse_int(const char *v, long long lo, long long hi, long long *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int main(int argc, char **argv) {
    sqz_blas_fix_kernels(argv);
    long long rows = 11008, cols = 4096, threads = 0, tokens = 0, seed = 1;
    const char *type_name = "Q4_K";
    int append = 1, act_order = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        long long *dst = NULL, lo = 1, hi = 1LL << 20;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--no-append")) { append = 0; continue; }
        else if (!strcmp(a, "--act-order")) { act_order = 1; continue; }
        else if (!v) { fprintf(stderr, "bench_gptq_speed: %s needs a value\n", a); usage(stderr); return 2; }
        else if (!strcmp(a, "--type")) { type_name = v; i++; continue; }
        else if (!strcmp(a, "--rows")) dst = &rows;
        else if (!strcmp(a, "--cols")) { dst = &cols; hi = 65536; }
        else if (!strcmp(a, "--threads")) { dst = &threads; hi = 1024; }
        else if (!strcmp(a, "--tokens")) dst = &tokens;
        else if (!strcmp(a, "--seed")) { dst = &seed; lo = 0; hi = 1LL << 62; }
        else { fprintf(stderr, "bench_gptq_speed: unknown option %s\n", a); usage(stderr); return 2; }
        if (parse_int(v, lo, hi, dst)) {
            fprintf(stderr, "bench_gptq_speed: %s '%s': expected an integer in [%lld, %lld]\n", a, v, lo, hi);
            return 2;
        }
        i++;
    }
    int type = sqz_type_from_name(type_name);
    if (type < 0 || !sqz_quant_supported(type)) {
        fprintf(stderr, "bench_gptq_speed: --type '%s': not a type sqz quantizes into\n", type_name);
        return 2;
    }
    const sqz_type_traits *tt = sqz_type_get(type);
    type_name = tt->name;
    if (cols % tt->block_size) {
        fprintf(stderr, "bench_gptq_speed: --cols %lld is not a multiple of %s's block of %lld\n", cols, type_name,
                (long long)tt->block_size);
        return 2;
    }
    if (!tokens) tokens = 2 * cols;

    int rc = 1;
    sqz_err err = {0};
    char *root = repo_root();
    sqz_pool *pool = sqz_pool_create((int)threads, &err);
    if (!pool) { fprintf(stderr, "bench_gptq_speed: %s\n", err.msg); free(root); return 1; }
    int nthr = sqz_pool_threads(pool);
    openblas_set_num_threads(nthr);

    size_t row_bytes = 0;
    sqz_type_row_bytes(type, cols, &row_bytes, &err);
    const size_t nW = (size_t)rows * (size_t)cols, nH = (size_t)cols * (size_t)cols;
    const int64_t K = 16;
    float *W = malloc(nW * sizeof *W), *what = malloc(nW * sizeof *what), *imp = malloc((size_t)cols * sizeof *imp);
    double *H = malloc(nH * sizeof *H), *X = malloc((size_t)tokens * (size_t)cols * sizeof *X);
    double *s = malloc((size_t)cols * sizeof *s), *V = malloc((size_t)(K * cols) * sizeof *V);
    uint8_t *q_gptq = malloc(row_bytes * (size_t)rows), *q_rtn = malloc(row_bytes * (size_t)rows);
    if (!W || !what || !imp || !H || !X || !s || !V || !q_gptq || !q_rtn) {
        fprintf(stderr, "bench_gptq_speed: out of memory for a %lld x %lld layer\n", rows, cols);
        goto done;
    }

    /* Inputs. */
    double t0 = sqz_now();
    rng g = {(uint64_t)seed ^ 0xC0FFEEull, 0, 0};
    for (int64_t j = 0; j < cols; j++) s[j] = exp(0.5 * rng_gauss(&g)) * (j % 128 == 77 ? 10.0 : 1.0);
    for (int64_t j = 0; j < K * cols; j++) V[j] = rng_gauss(&g);
    gen_ctx gw = {(uint64_t)seed * 2 + 1, cols, K, W, NULL, s, V};
    sqz_pool_for(pool, rows, GEN_ROWS, gen_task, &gw);
    gen_ctx gx = {(uint64_t)seed * 2 + 2, cols, K, NULL, X, s, V};
    sqz_pool_for(pool, tokens, GEN_ROWS, gen_task, &gx);
    double t1 = sqz_now();
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)tokens, 1.0 / (double)tokens, X, (int)cols, 0.0,
                H, (int)cols);
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < i; j++) H[i * cols + j] = H[j * cols + i];
    free(X);
    X = NULL;
    double t2 = sqz_now();
    fprintf(stderr, "bench_gptq_speed: W %lld x %lld and %lld activations in %.2f s, H by DSYRK in %.2f s (%d threads)\n",
            rows, cols, tokens, t1 - t0, t2 - t1, nthr);

    /* RTN with diag(H). */
    for (int64_t j = 0; j < cols; j++) imp[j] = (float)H[j * cols + j];
    rtn_ctx rc_ = {type, cols, row_bytes, W, imp, q_rtn, 0, {{0}}};
    double r0 = sqz_now();
    sqz_pool_for(pool, rows, 16, rtn_task, &rc_);
    double t_rtn = sqz_now() - r0;
    if (rc_.failed) { fprintf(stderr, "bench_gptq_speed: RTN: %s\n", rc_.err.msg); goto done; }
    sqz_tensor tq = {.name = "rtn", .type = type, .n_dims = 2, .ne = {cols, rows, 1, 1}, .data = q_rtn,
                     .nbytes = row_bytes * (size_t)rows};
    double rtn_w = 0, rtn_o = 0;
    if (sqz_tensor_rows_f32(&tq, 0, rows, what, &err) ||
        sqz_gptq_errors(W, what, rows, cols, H, pool, &rtn_w, &rtn_o, &err)) {
        fprintf(stderr, "bench_gptq_speed: RTN errors: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "bench_gptq_speed: RTN %s in %.2f s: rel_output_err %.4e\n", type_name, t_rtn, rtn_o);

    /* GPTQ. */
    sqz_gptq_opts opts = {0.01, act_order, 1, 0, 0, NULL};
    sqz_gptq_stats st;
    memset(&st, 0, sizeof st);
    double g0 = sqz_now();
    if (sqz_gptq_quantize(type, W, rows, cols, H, &opts, pool, q_gptq, NULL, NULL, NULL, &st, &err)) {
        fprintf(stderr, "bench_gptq_speed: GPTQ: %s\n", err.msg);
        goto done;
    }
    double t_gptq = sqz_now() - g0;
    tq.data = q_gptq;
    double gq_w = 0, gq_o = 0;
    double e0 = sqz_now();
    if (sqz_tensor_rows_f32(&tq, 0, rows, what, &err) ||
        sqz_gptq_errors(W, what, rows, cols, H, pool, &gq_w, &gq_o, &err)) {
        fprintf(stderr, "bench_gptq_speed: GPTQ errors: %s\n", err.msg);
        goto done;
    }
    double t_err = sqz_now() - e0;
    double macs = (double)cols * cols * cols / 3.0 + (double)rows * cols * cols;
    fprintf(stderr, "bench_gptq_speed: GPTQ %s in %.2f s (factor %.2f, sweep %.2f); error statistics %.2f s\n",
            type_name, t_gptq, st.seconds_factor, st.seconds_sweep, t_err);

    strbuf tab = {0};
    sb_printf(&tab,
              "| out × in | type | threads | factor s | sweep s | total s | G MAC | GMAC/s | rel_output_err GPTQ | "
              "rel_output_err RTN | GPTQ / RTN | RTN s |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
              "| %lld × %lld | %s%s | %d | %.2f | %.2f | %.2f | %.1f | %.1f | %.4e | %.4e | %.3f | %.2f |\n",
              rows, cols, type_name, act_order ? " act-order" : "", nthr, st.seconds_factor, st.seconds_sweep, t_gptq,
              macs / 1e9, macs / 1e9 / t_gptq, gq_o, rtn_o, rtn_o > 0 ? gq_o / rtn_o : 0.0, t_rtn);
    char notes[1024];
    snprintf(notes, sizeof notes,
             "W ~ N(0, 0.02²) (seed %lld); H = XᵀX/T of T = %lld synthetic activations (16-direction shared part, "
             "log-normal channel scales, 1/128 outlier channels); damp 0.01. G MAC = in³/3 + out·in² "
             "(factorization + sweep); GMAC/s over the total. RTN: sqz_quantize_row with diag(H) importance.\n",
             seed, tokens);
    char heading[1024];
    results_heading(root ? root : ".", "gptq_speed", heading, sizeof heading);
    printf("%s\n\n%s\n%s", heading, tab.s ? tab.s : "", notes);
    if (append && tab.s) {
        strbuf all = {0};
        sb_printf(&all, "\n%s\n\n%s\n%s", heading, tab.s, notes);
        if (all.s) append_results(root ? root : ".", all.s, "bench_gptq_speed");
        free(all.s);
    }
    free(tab.s);
    rc = 0;

done:
    free(W); free(what); free(imp); free(H); free(X); free(s); free(V); free(q_gptq); free(q_rtn);
    sqz_pool_free(pool);
    free(root);
    return rc;
}

/* bench_gpu: the whole `sqz compress` of a 7B-shaped model on the machine's GPU (issue 15
 * item 5), stage by stage.
 *
 *   bench_gpu [--shape 7b|8b|tiny] [--nsamples 128] [--seqlen 2048] [--target-bpw 3]
 *             [--device cuda|cpu] [--threads N] [--dir DIR] [--sqz PATH] [--seed S]
 *             [--keep] [--no-append]
 *
 * 1. The model: a Llama of the shape's sizes with synthetic weights, written once as an
 *    F16 GGUF to DIR (default /tmp/sqz-bench-gpu; 13.5 GB for 7b, 16 GB for 8b) and
 *    read by sqz as a user's file would be, so its reading is part of the timed run.
 *    Weights N(0, 0.02²) from a splitmix64 stream per tensor row (the same file for the
 *    same seed), norms 1; no tokenizer ("no_vocab"), so the calibration is a .json array
 *    of random token ids (nsamples · seqlen · 10/9 of them: compress holds a tenth out).
 *      7b:   dim 4096, FFN 11008, 32 layers, 32/32 heads, vocab 32000 (Llama-2-7B)
 *      8b:   dim 4096, FFN 14336, 32 layers, 32/8 heads, vocab 128256, rope θ 500000
 *            (Llama-3-8B)
 *      tiny: dim 256, FFN 768, 2 layers, 4/2 heads, vocab 1024 (a smoke test for any
 *            machine: `bench_gpu --shape tiny --device cpu --nsamples 4 --seqlen 64`)
 *    The file is made again only when its marker (<file>.done) is missing.
 * 2. `sqz compress MODEL -o OUT --target-bpw B --calib ids.json --nsamples N --seqlen L
 *    --seed 0 --rounds 1 --device D --threads T --json REPORT`: sensitivity (forward,
 *    backward, Grams, scoring), allocation, sequential GPTQ and writing in one command,
 *    its wall time measured here.
 * 3. A table: each stage's seconds, TFLOP/s and share of the wall time (the report's
 *    `stages`), the whole run's wall time, the device and its peak memory, beside the
 *    issue's anchor (PyTorch on an H200, 346 s for 32 layers of 7B shape over 262,144
 *    tokens) and goal (60 s). Appended to bench/RESULTS.md unless --no-append. The output
 *    model is deleted unless --keep. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROG "bench_gpu"
#include "bench_util.h"
#include "sqz/core.h"
#include "sqz/gguf_write.h"
#include "sqz/tensor.h"

typedef struct shape {
    const char *name;
    int64_t dim, ff, vocab;
    int layers, heads, kv_heads;
    double rope_theta;
    int ctx;
} shape;

static const shape kShapes[] = {
    {"7b", 4096, 11008, 32000, 32, 32, 32, 10000.0, 4096},
    {"8b", 4096, 14336, 128256, 32, 32, 8, 500000.0, 8192},
    {"tiny", 256, 768, 1024, 2, 4, 2, 10000.0, 2048},
};

typedef struct opts {
    const shape *sh;
    long long nsamples, seqlen, threads, seed;
    double target_bpw;
    const char *device, *dir, *sqz;
    int keep, no_append;
} opts;

/* ---------------------------------------------------------------- the synthetic model */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A standard normal from two uniforms (Box-Muller, one of the pair). */
static double gauss(uint64_t *s) {
    double u = ((double)(splitmix64(s) >> 11) + 0.5) * 0x1.0p-53, v = (double)(splitmix64(s) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

typedef struct {
    uint16_t *out;  /* rows × cols F16 */
    int64_t cols;
    uint64_t seed;  /* of the tensor; each row's stream starts from seed + row */
} fill_ctx;

static void fill_rows(void *vctx, int64_t b, int64_t e, int thread) {
    (void)thread;
    const fill_ctx *c = vctx;
    for (int64_t r = b; r < e; r++) {
        uint64_t s = c->seed * 0x100000001b3ULL + (uint64_t)r;
        uint16_t *o = c->out + r * c->cols;
        for (int64_t i = 0; i < c->cols; i++) o[i] = sqz_f32_to_f16((float)(0.02 * gauss(&s)));
    }
}

typedef struct {
    char name[64];
    int64_t ne0, ne1; /* ne1 1: a norm (F32 ones) */
} wt;

/* Every tensor of the model in file order. *n gets the count; malloc'd. */
static wt *tensor_list(const shape *sh, int *n) {
    int cap = 3 + 9 * sh->layers, k = 0;
    wt *t = calloc((size_t)cap, sizeof *t);
    const int64_t hd = sh->dim / sh->heads, qw = sh->dim, kvw = (int64_t)sh->kv_heads * hd;
#define ADD(nm, a, b) (snprintf(t[k].name, sizeof t[k].name, "%s", nm), t[k].ne0 = (a), t[k].ne1 = (b), k++)
    ADD("token_embd.weight", sh->dim, sh->vocab);
    for (int l = 0; l < sh->layers; l++) {
        char nm[64];
        const struct { const char *suffix; int64_t a, b; } per[] = {
            {"attn_norm.weight", sh->dim, 1}, {"attn_q.weight", sh->dim, qw},   {"attn_k.weight", sh->dim, kvw},
            {"attn_v.weight", sh->dim, kvw},  {"attn_output.weight", qw, sh->dim}, {"ffn_norm.weight", sh->dim, 1},
            {"ffn_gate.weight", sh->dim, sh->ff}, {"ffn_up.weight", sh->dim, sh->ff}, {"ffn_down.weight", sh->ff, sh->dim},
        };
        for (int i = 0; i < 9; i++) {
            snprintf(nm, sizeof nm, "blk.%d.%s", l, per[i].suffix);
            ADD(nm, per[i].a, per[i].b);
        }
    }
    ADD("output_norm.weight", sh->dim, 1);
    ADD("output.weight", sh->dim, sh->vocab);
#undef ADD
    *n = k;
    return t;
}

static int write_model(const opts *o, const char *path, sqz_pool *pool, sqz_err *err) {
    const shape *sh = o->sh;
    sqz_gguf_writer w;
    sqz_gguf_writer_init(&w);
    int n = 0, rc = SQZ_ERR;
    wt *t = tensor_list(sh, &n);
    uint16_t *buf = NULL;
    char name[64];
    snprintf(name, sizeof name, "synthetic Llama (%s shape)", sh->name);
    if (sqz_gguf_set_str(&w, "general.architecture", "llama", err) || sqz_gguf_set_str(&w, "general.name", name, err) ||
        sqz_gguf_set_u32(&w, "llama.context_length", (uint32_t)sh->ctx, err) ||
        sqz_gguf_set_u32(&w, "llama.embedding_length", (uint32_t)sh->dim, err) ||
        sqz_gguf_set_u32(&w, "llama.block_count", (uint32_t)sh->layers, err) ||
        sqz_gguf_set_u32(&w, "llama.feed_forward_length", (uint32_t)sh->ff, err) ||
        sqz_gguf_set_u32(&w, "llama.rope.dimension_count", (uint32_t)(sh->dim / sh->heads), err) ||
        sqz_gguf_set_u32(&w, "llama.attention.head_count", (uint32_t)sh->heads, err) ||
        sqz_gguf_set_u32(&w, "llama.attention.head_count_kv", (uint32_t)sh->kv_heads, err) ||
        sqz_gguf_set_f32(&w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, err) ||
        sqz_gguf_set_f32(&w, "llama.rope.freq_base", (float)sh->rope_theta, err) ||
        sqz_gguf_set_u32(&w, "llama.vocab_size", (uint32_t)sh->vocab, err) ||
        sqz_gguf_set_u32(&w, "general.file_type", 1, err) || /* mostly F16 */
        sqz_gguf_set_str(&w, "tokenizer.ggml.model", "no_vocab", err))
        goto done;
    int64_t most = 0;
    for (int i = 0; i < n; i++) {
        int norm = t[i].ne1 == 1;
        int64_t ne[2] = {t[i].ne0, t[i].ne1};
        if (sqz_gguf_add_tensor(&w, t[i].name, norm ? SQZ_TYPE_F32 : SQZ_TYPE_F16, norm ? 1 : 2, ne, err)) goto done;
        if (t[i].ne0 * t[i].ne1 > most) most = t[i].ne0 * t[i].ne1;
    }
    if (!(buf = malloc((size_t)most * sizeof(uint16_t) > 4 * (size_t)sh->dim ? (size_t)most * sizeof(uint16_t)
                                                                            : 4 * (size_t)sh->dim))) {
        sqz_fail(err, "out of memory for a tensor of %lld values", (long long)most);
        goto done;
    }
    if (sqz_gguf_write_begin(&w, path, err)) goto done;
    double t0 = sqz_now();
    for (int i = 0; i < n; i++) {
        if (t[i].ne1 == 1) {
            float *ones = (float *)buf;
            for (int64_t k = 0; k < t[i].ne0; k++) ones[k] = 1.0f;
            if (sqz_gguf_write_data(&w, ones, (size_t)t[i].ne0 * sizeof(float), err)) goto done;
            continue;
        }
        fill_ctx c = {buf, t[i].ne0, (uint64_t)o->seed * 1000003ULL + (uint64_t)i};
        sqz_pool_for(pool, t[i].ne1, 16, fill_rows, &c);
        if (sqz_gguf_write_data(&w, buf, (size_t)(t[i].ne0 * t[i].ne1) * sizeof(uint16_t), err)) goto done;
        if (isatty(2))
            fprintf(stderr, "\r%s: writing %s: tensor %d of %d (%.0f s)   ", PROG, path, i + 1, n, sqz_now() - t0);
    }
    if (isatty(2)) fprintf(stderr, "\n");
    rc = sqz_gguf_write_end(&w, err);
done:
    sqz_gguf_writer_free(&w);
    free(buf);
    free(t);
    return rc;
}

/* nsamples · seqlen · 10/9 random ids (a tenth is held out), as a JSON array. */
static int write_ids(const opts *o, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    long long n = o->nsamples * o->seqlen * 10 / 9 + o->seqlen;
    uint64_t s = (uint64_t)o->seed + 17;
    fputc('[', f);
    for (long long i = 0; i < n; i++)
        fprintf(f, "%s%lld", i ? "," : "", (long long)(splitmix64(&s) % (uint64_t)o->sh->vocab));
    fputs("]\n", f);
    return fclose(f) ? -1 : 0;
}

/* ---------------------------------------------------------------- the table */

static const char *const kStages[] = {"forward", "backward", "grams", "scoring", "gptq", "pruning", "writing"};

static void usage(void) {
    fprintf(stderr,
            "usage: %s [--shape 7b|8b|tiny] [--nsamples 128] [--seqlen 2048] [--target-bpw 3]\n"
            "       [--device cuda|cpu] [--threads N] [--dir DIR] [--sqz PATH] [--seed S] [--keep] [--no-append]\n",
            PROG);
}

int main(int argc, char **argv) {
    opts o = {&kShapes[0], 128, 2048, 0, 0, 3.0, "cuda", "/tmp/sqz-bench-gpu", NULL, 0, 0};
    o.threads = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep")) { o.keep = 1; continue; }
        if (!strcmp(a, "--no-append")) { o.no_append = 1; continue; }
        if (!v) { usage(); return 2; }
        i++;
        if (!strcmp(a, "--shape")) {
            o.sh = NULL;
            for (size_t k = 0; k < sizeof kShapes / sizeof kShapes[0]; k++)
                if (!strcmp(v, kShapes[k].name)) o.sh = &kShapes[k];
            if (!o.sh) { fprintf(stderr, "%s: --shape '%s': expected 7b, 8b or tiny\n", PROG, v); return 2; }
        } else if (!strcmp(a, "--nsamples") && !parse_ll(v, 1, 1 << 20, &o.nsamples)) {
        } else if (!strcmp(a, "--seqlen") && !parse_ll(v, 2, 1 << 20, &o.seqlen)) {
        } else if (!strcmp(a, "--threads") && !parse_ll(v, 1, 4096, &o.threads)) {
        } else if (!strcmp(a, "--seed") && !parse_ll(v, 0, 1LL << 40, &o.seed)) {
        } else if (!strcmp(a, "--target-bpw")) {
            char *end;
            o.target_bpw = strtod(v, &end);
            if (*end || !(o.target_bpw > 0 && o.target_bpw < 32)) { fprintf(stderr, "%s: --target-bpw '%s'\n", PROG, v); return 2; }
        } else if (!strcmp(a, "--device") && (!strcmp(v, "cuda") || !strcmp(v, "cpu"))) {
            o.device = v;
        } else if (!strcmp(a, "--dir")) {
            o.dir = v;
        } else if (!strcmp(a, "--sqz")) {
            o.sqz = v;
        } else {
            fprintf(stderr, "%s: bad flag or value: %s %s\n", PROG, a, v);
            usage();
            return 2;
        }
    }
    char *root = repo_root();
    char sqz_default[4096];
    if (!o.sqz) {
        char *d = exe_dir();
        xfmt(sqz_default, sizeof sqz_default, "%s/sqz", d ? d : ".");
        free(d);
        o.sqz = sqz_default;
    }
    if (!file_exists(o.sqz)) { fprintf(stderr, "%s: no sqz at %s (--sqz PATH)\n", PROG, o.sqz); return 1; }
    mkdir(o.dir, 0755);
    char model[4096], ids[4096], out[4096], report[4096], log[4096];
    xfmt(model, sizeof model, "%s/llama-%s-f16-s%lld.gguf", o.dir, o.sh->name, o.seed);
    xfmt(ids, sizeof ids, "%s/ids-%s-n%lld-l%lld-s%lld.json", o.dir, o.sh->name, o.nsamples, o.seqlen, o.seed);
    xfmt(out, sizeof out, "%s/out-%s.gguf", o.dir, o.sh->name);
    xfmt(report, sizeof report, "%s/out-%s.json", o.dir, o.sh->name);
    xfmt(log, sizeof log, "%s/out-%s.log", o.dir, o.sh->name);

    sqz_err err;
    sqz_pool *pool = sqz_pool_create((int)o.threads, &err);
    if (!pool) { fprintf(stderr, "%s: %s\n", PROG, err.msg); return 1; }
    double gen_s = NAN;
    if (!marker_valid(model, NULL, &gen_s)) {
        marker_remove(model);
        double t0 = sqz_now();
        if (write_model(&o, model, pool, &err)) {
            fprintf(stderr, "%s: %s\n", PROG, err.msg);
            sqz_pool_free(pool);
            return 1;
        }
        gen_s = sqz_now() - t0;
        marker_write(model, gen_s, "bench_gpu: the synthetic model");
        fprintf(stderr, "%s: wrote %s (%.1f GB) in %.1f s\n", PROG, model, (double)file_size(model) / 1e9, gen_s);
    } else {
        fprintf(stderr, "%s: %s: cached (%.1f GB)\n", PROG, model, (double)file_size(model) / 1e9);
    }
    sqz_pool_free(pool);
    if (!file_exists(ids) && write_ids(&o, ids)) { fprintf(stderr, "%s: cannot write %s\n", PROG, ids); return 1; }

    char *qs = shq(o.sqz), *qm = shq(model), *qi = shq(ids), *qo = shq(out), *qr = shq(report);
    char cmd[5 * 4096];
    xfmt(cmd, sizeof cmd,
         "%s compress %s -o %s --target-bpw %g --calib %s --nsamples %lld --seqlen %lld --seed 0 --rounds 1 "
         "--device %s --threads %lld --json %s",
         qs, qm, qo, o.target_bpw, qi, o.nsamples, o.seqlen, o.device, o.threads, qr);
    free(qs); free(qm); free(qi); free(qo); free(qr);
    fprintf(stderr, "%s: running (log %s)\n%s\n", PROG, log, cmd);
    double wall = run_logged(cmd, log, 0);
    if (wall < 0) return 1;
    cJSON *j = read_json(report);
    if (!j) { fprintf(stderr, "%s: no report %s\n", PROG, report); return 1; }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stages");
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(j, "device");
    double peak = json_num(j, "device_peak_bytes", NAN);

    strbuf b = {0};
    char head[512];
    results_heading(root, PROG, head, sizeof head);
    sb_printf(&b, "%s\n\n", head);
    sb_printf(&b, "`sqz compress` of a synthetic %s-shaped Llama (F16 GGUF on disk, read by sqz as a user's file), "
              "--target-bpw %g, %lld × %lld calibration tokens (random ids), --device %s, %lld threads; device: %s; "
              "peak device memory %.2f GiB. Model written in %.1f s (not in the run).\n\n",
              o.sh->name, o.target_bpw, o.nsamples, o.seqlen, o.device, o.threads,
              cJSON_IsString(dev) ? dev->valuestring : "?", peak / 1073741824.0, gen_s);
    sb_printf(&b, "| stage | seconds | share | TFLOP/s |\n|---|---:|---:|---:|\n");
    for (size_t k = 0; k < sizeof kStages / sizeof kStages[0]; k++) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(st, kStages[k]);
        double sec = json_num(s, "seconds", 0), gf = json_num(s, "gflops", 0);
        sb_printf(&b, "| %s | %.1f | %.1f%% | %s%.2f |\n", kStages[k], sec, 100.0 * sec / wall, gf > 0 ? "" : "~",
                  gf / 1000.0);
    }
    sb_printf(&b, "| other | %.1f | %.1f%% | - |\n", json_num(st, "other_seconds", 0),
              100.0 * json_num(st, "other_seconds", 0) / wall);
    sb_printf(&b, "| **whole compress (wall)** | **%.1f** | 100%% | - |\n\n", wall);
    sb_printf(&b, "Anchor (issue 15, PyTorch on an H200, 7B shape, 128 × 2048 tokens): 346 s for the 32 layers; goal "
              "under 60 s.\n");
    cJSON_Delete(j);
    fputs(b.s ? b.s : "", stdout);
    if (!o.no_append && append_results(root, b.s, PROG)) return 1;
    if (!o.keep) unlink(out);
    free(b.s);
    free(root);
    return 0;
}

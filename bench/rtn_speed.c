/* bench_rtn_speed: `sqz quantize --method rtn` against `llama-quantize` of the same type,
 * the same F32 source, the same thread count (no calibration on either side: llama.cpp
 * without an imatrix, sqz's search with uniform importances). Each command runs --runs
 * times; the table gives each side's fastest wall time and the ratio sqz / llama.cpp
 * (issue 14's bound: at most 3). The F32 source is llama-quantize's own expansion of the
 * model (default: the default model), cached beside this program.
 *
 *   bench_rtn_speed [--model GGUF] [--types LIST] [--threads N] [--runs R] [--no-append] */
#define PROG "bench_rtn_speed"
#include "bench_util.h"

int main(int argc, char **argv) {
    const char *model_arg = NULL, *types_arg = "Q8_0,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K,Q4_0", *llama_arg = NULL;
    long long threads = 2, runs = 3;
    int append = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-append")) { append = 0; continue; }
        if (!strcmp(a, "--help")) {
            printf("usage: %s [--model GGUF] [--types LIST] [--threads N (2)] [--runs R (3)] [--llama-bin DIR] "
                   "[--no-append]\n", PROG);
            return 0;
        }
        if (!v) { fprintf(stderr, "%s: %s needs a value\n", PROG, a); return 2; }
        if (!strcmp(a, "--model")) model_arg = v;
        else if (!strcmp(a, "--types")) types_arg = v;
        else if (!strcmp(a, "--llama-bin")) llama_arg = v;
        else if (!strcmp(a, "--threads")) { if (parse_ll(v, 1, 1024, &threads)) { fprintf(stderr, "%s: --threads '%s': expected 1..1024\n", PROG, v); return 2; } }
        else if (!strcmp(a, "--runs")) { if (parse_ll(v, 1, 100, &runs)) { fprintf(stderr, "%s: --runs '%s': expected 1..100\n", PROG, v); return 2; } }
        else { fprintf(stderr, "%s: unknown option '%s'\n", PROG, a); return 2; }
        i++;
    }
    char *root = repo_root();
    char *model = model_arg ? strdup(model_arg) : default_model(root);
    char *bin = llama_bin_dir(root, llama_arg, "llama-quantize", PROG);
    char *dir = exe_dir();
    if (!root || !model || !bin || !dir) {
        if (!model) fprintf(stderr, "%s: no model (pass --model or run scripts/setup.sh)\n", PROG);
        return 1;
    }
    char sqz[PATH_MAX], f32[PATH_MAX], log[PATH_MAX], cmd[4 * PATH_MAX];
    xfmt(sqz, sizeof sqz, "%s/sqz", dir);
    char key[64];
    path_key(model, key, sizeof key);
    xfmt(f32, sizeof f32, "%s/rtn_speed-%s-F32.gguf", dir, key);
    char *qb = shq(bin), *qm = shq(model), *qf = shq(f32), *qs = shq(sqz);
    if (!file_exists(f32)) {
        xfmt(cmd, sizeof cmd, "%s/llama-quantize --allow-requantize %s %s F32 %lld", qb, qm, qf, threads);
        xfmt(log, sizeof log, "%s.log", f32);
        fprintf(stderr, "%s: F32 expansion of %s\n", PROG, base_name(model));
        if (run_logged(cmd, log, 0) < 0) return 1;
    }
    char list[512];
    xfmt(list, sizeof list, "%s", types_arg);
    strbuf tab = {0};
    char head[1024];
    results_heading(root, PROG, head, sizeof head);
    sb_printf(&tab, "\n%s\n\n", head);
    sb_printf(&tab, "| type | llama-quantize s | sqz quantize --method rtn s | sqz / llama.cpp |\n|---|---:|---:|---:|\n");
    int bad = 0;
    for (char *t = strtok(list, ", "); t; t = strtok(NULL, ", ")) {
        double best[2] = {INFINITY, INFINITY};
        for (long long r = 0; r < runs; r++)
            for (int side = 0; side < 2; side++) {
                char out[PATH_MAX];
                xfmt(out, sizeof out, "%s/rtn_speed-%s-%s.gguf", dir, side ? "sqz" : "llama", t);
                char *qo = shq(out);
                if (side) xfmt(cmd, sizeof cmd, "%s quantize %s -o %s --type %s --method rtn --threads %lld --quiet", qs, qf, qo, t, threads);
                else xfmt(cmd, sizeof cmd, "%s/llama-quantize %s %s %s %lld", qb, qf, qo, t, threads);
                free(qo);
                xfmt(log, sizeof log, "%s.log", out);
                double dt = run_logged(cmd, log, 0);
                if (dt < 0) { bad = 1; continue; }
                if (dt < best[side]) best[side] = dt;
                unlink(out);
            }
        fprintf(stderr, "%s: %s: llama-quantize %.2f s, sqz %.2f s\n", PROG, t, best[0], best[1]);
        sb_printf(&tab, "| %s | %.2f | %.2f | %.2f |\n", t, best[0], best[1], best[1] / best[0]);
    }
    sb_printf(&tab, "\nModel %s expanded to F32 by llama-quantize; both sides quantize that file with %lld threads, "
              "no importance matrix (sqz: `sqz quantize F32.gguf --type T --method rtn`; llama.cpp: `llama-quantize "
              "F32.gguf out.gguf T`); fastest of %lld runs each, wall seconds including loading and writing. "
              "Rows that do not fit a type fall back on both sides as llama-quantize does.\n",
              base_name(model), threads, runs);
    fputs(tab.s, stdout);
    if (append && append_results(root, tab.s, PROG)) bad = 1;
    free(tab.s); free(qb); free(qm); free(qf); free(qs);
    free(root); free(model); free(bin); free(dir);
    return bad;
}

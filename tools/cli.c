/* Helpers shared by the subcommands: see tools/cli.h. */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/core.h"
#include "sqz/tune.h"

int fail(const char *msg) {
    fprintf(stderr, "sqz: error: %s\n", msg);
    return EXIT_ERR;
}

int usage_fail(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "sqz: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'sqz help %s')\n", cmd);
    return EXIT_USAGE;
}

/* ---------------------------------------------------------------- argument parsing */

int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

/* The value of option argv[i] ("--ctx N"); NULL (after a usage message) when missing. */
const char *opt_value(args *a) {
    if (a->i + 1 >= a->argc) return NULL;
    return a->argv[++a->i];
}

/* Parses a positive integer option value; returns 0 on success. */
int parse_pos_int(const char *s, long long max, long long *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0 || v > max) return -1;
    *out = v;
    return 0;
}

int gptq_flag(args *a, double *damp, double *shrink, int *rc) {
    const char *s = a->argv[a->i], *v;
    char *end;
    if (!strcmp(s, "--damp")) {
        v = opt_value(a);
        if (!v || !*v || (*damp = strtod(v, &end), *end) || !(*damp > 0 && *damp < 1))
            *rc = usage_fail(a->cmd, "--damp '%s': expected a number in (0, 1)", v ? v : "");
        return 1;
    }
    if (!strcmp(s, "--shrink")) {
        v = opt_value(a);
        if (!v || !*v || (*shrink = strtod(v, &end), *end) || !(*shrink >= 0 && *shrink <= 1))
            *rc = usage_fail(a->cmd, "--shrink '%s': expected a number in [0, 1]", v ? v : "");
        return 1;
    }
    return 0;
}

int rescale_flag(args *a, double *power, int *rc) {
    const char *s = a->argv[a->i], *v;
    char *end;
    if (strcmp(s, "--rescale")) return 0;
    v = opt_value(a);
    if (!v || !*v) *rc = usage_fail(a->cmd, "%s", "--rescale needs off, energy, unbiased or a power in [0, 1]");
    else if (!strcmp(v, "off")) *power = 0.0;
    else if (!strcmp(v, "energy")) *power = 0.5;
    else if (!strcmp(v, "unbiased")) *power = 1.0;
    else if ((*power = strtod(v, &end), *end) || !(*power >= 0 && *power <= 1))
        *rc = usage_fail(a->cmd, "--rescale '%s': expected off, energy, unbiased or a power in [0, 1]", v);
    return 1;
}

/* --resume, --checkpoint-every S: 1 when it was one of them (then *rc is 0 or the usage
 * error). */
int resume_flag(args *a, int *resume, double *every, int *rc) {
    const char *s = a->argv[a->i], *v;
    char *end;
    if (!strcmp(s, "--resume")) {
        *resume = 1;
        return 1;
    }
    if (!strcmp(s, "--checkpoint-every")) {
        v = opt_value(a);
        if (!v || !*v || (*every = strtod(v, &end), *end) || !(*every >= 0 && *every <= 1e9))
            *rc = usage_fail(a->cmd, "--checkpoint-every '%s': expected seconds >= 0", v ? v : "");
        return 1;
    }
    return 0;
}

int tune_flag(args *a, const char *lr_flag, long long *steps, double *lr, int *rc) {
    const char *s = a->argv[a->i], *v;
    char *end = NULL;
    if (!strcmp(s, "--tune-steps")) {
        v = opt_value(a);
        if (parse_pos_int(v, 100000, steps))
            *rc = usage_fail(a->cmd, "--tune-steps '%s': expected 1 to 100000", v ? v : "");
        return 1;
    }
    if (strcmp(s, lr_flag)) return 0;
    v = opt_value(a);
    *lr = v ? strtod(v, &end) : 0.0;
    if (!v || end == v || *end || !(*lr > 0.0 && *lr < 1.0)) {
        char fmt[64];
        snprintf(fmt, sizeof fmt, "%s '%%s': expected a number in (0, 1)", lr_flag);
        *rc = usage_fail(a->cmd, fmt, v ? v : "");
    }
    return 1;
}

void tune_json(cJSON *o, const sqz_tune_report *rep) {
    cJSON_AddNumberToObject(o, "tensors", rep->n_tensors);
    cJSON_AddNumberToObject(o, "norms", rep->n_norms);
    cJSON_AddNumberToObject(o, "factors", (double)rep->n_params);
    cJSON_AddNumberToObject(o, "best_step", rep->best_step);
    cJSON_AddNumberToObject(o, "seconds", rep->seconds);
    cJSON *st = cJSON_AddArrayToObject(o, "steps");
    for (int s = 0; s <= rep->n_steps; s++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "step", s);
        cJSON_AddNumberToObject(e, "calib_kl", rep->train_kl[s]);
        cJSON_AddNumberToObject(e, "heldout_kl", rep->held_kl[s]);
        cJSON_AddItemToArray(st, e);
    }
}

/* --device cpu|cuda: 1 when it was this flag (then *rc is 0 or the usage error). */
int device_flag(args *a, sqz_device *device, int *rc) {
    if (strcmp(a->argv[a->i], "--device")) return 0;
    const char *v = opt_value(a);
    sqz_err err;
    if (sqz_device_parse(v, device, &err)) *rc = usage_fail(a->cmd, "%s", err.msg);
    return 1;
}

/* ---------------------------------------------------------------- JSON output */

int write_json(const char *path, cJSON *root) {
    char *text = cJSON_Print(root);
    if (!text) return fail("out of memory while writing JSON");
    sqz_out o;
    sqz_err err;
    int rc = 0;
    if (sqz_out_open(&o, path, &err) || sqz_out_write(&o, text, strlen(text), &err) ||
        sqz_out_write(&o, "\n", 1, &err) || sqz_out_commit(&o, &err)) {
        sqz_out_abort(&o);
        rc = fail(err.msg);
    }
    free(text);
    return rc;
}

/* Text checks: a readable, non-empty, non-binary file. Returns 0 or an exit code. */
static int check_text(const char *path, const char *text, size_t len) {
    char msg[1200];
    if (len == 0) {
        snprintf(msg, sizeof msg, "%s: text file is empty", path);
        return fail(msg);
    }
    if (memchr(text, '\0', len)) {
        snprintf(msg, sizeof msg, "%s: not a text file (contains NUL bytes)", path);
        return fail(msg);
    }
    /* count bytes that are not part of a well-formed UTF-8 sequence */
    size_t bad = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80) ok = 0;
        if (ok) i += n;
        else { bad++; i++; }
    }
    if (bad * 10 > len) {
        snprintf(msg, sizeof msg, "%s: not a text file (%zu of %zu bytes are not valid UTF-8)", path, bad, len);
        return fail(msg);
    }
    return 0;
}

int read_text(const char *path, char **text, size_t *len) {
    sqz_err err;
    *text = NULL;
    if (sqz_read_file(path, MAX_TEXT_BYTES, text, len, &err)) return fail(err.msg);
    int rc = check_text(path, *text, *len);
    if (rc) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

/* The one piece of process-wide state of the CLI: the temporary name a signal handler
 * must remove. Set once before the output is opened, read only by the handler. */
static char g_tmp_path[4096];
/* Further files a stopped run must not leave behind (compress's per-round files). */
#define MAX_EXTRA 16
static char g_extra[MAX_EXTRA][4096];

static void remove_tmp_and_die(int sig) {
    if (g_tmp_path[0]) unlink(g_tmp_path); /* async-signal-safe */
    for (int i = 0; i < MAX_EXTRA; i++)
        if (g_extra[i][0]) unlink(g_extra[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

int guard_output(const char *path) {
    int n = snprintf(g_tmp_path, sizeof g_tmp_path, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof g_tmp_path) {
        g_tmp_path[0] = '\0';
        return fail("output path too long");
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = remove_tmp_and_die;
    sigemptyset(&sa.sa_mask);
    const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        struct sigaction old;
        /* a signal the caller chose to ignore (nohup, background jobs) stays ignored */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(sigs[i], &sa, NULL);
    }
    return 0;
}

int guard_extra(const char *path) {
    for (int i = 0; i < MAX_EXTRA; i++) {
        if (g_extra[i][0]) continue;
        int n = snprintf(g_extra[i], sizeof g_extra[i], "%s", path);
        if (n < 0 || (size_t)n >= sizeof g_extra[i]) {
            g_extra[i][0] = '\0';
            return fail("output path too long");
        }
        return 0;
    }
    return fail("too many temporary files to guard");
}

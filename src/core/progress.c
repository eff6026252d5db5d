/* A one-line progress bar: label, count, rate, ETA. Drawn only on a terminal so logs
 * stay quiet; redrawn at most ten times a second. */
#include "sqz/core.h"

#include <string.h>
#include <unistd.h>

void sqz_progress_begin(sqz_progress *p, const char *label, int64_t total, const char *unit, int force) {
    memset(p, 0, sizeof *p);
    p->out = (force || isatty(STDERR_FILENO)) ? stderr : NULL;
    p->label = label;
    p->total = total;
    p->unit = unit ? unit : "";
    p->t_start = p->t_last = sqz_now();
}

static void fmt_seconds(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

void sqz_progress_update(sqz_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (!p->out) return;
    double now = sqz_now();
    if (done < p->total && now - p->t_last < 0.1) return;
    p->t_last = now;
    double el = now - p->t_start;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : -1;
    char eta_s[32], el_s[32];
    fmt_seconds(eta_s, sizeof eta_s, eta);
    fmt_seconds(el_s, sizeof el_s, el);
    int pct = p->total > 0 ? (int)(100.0 * (double)done / (double)p->total) : 0;
    fprintf(p->out, "\r\033[K%s %3d%% %lld/%lld %s | %.1f %s/s | %s elapsed, ETA %s%s%s", p->label, pct,
            (long long)done, (long long)p->total, p->unit, rate, p->unit, el_s, eta_s, extra ? " | " : "",
            extra ? extra : "");
    fflush(p->out);
}

void sqz_progress_end(sqz_progress *p) {
    if (p->out) {
        fprintf(p->out, "\r\033[K");
        fflush(p->out);
    }
    p->out = NULL;
}

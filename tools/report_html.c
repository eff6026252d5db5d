/* HTML report of `sqz compress`: see tools/report_html.h. The page is built in memory
 * (hbuf), then written through sqz_out. Every chart is one inline <svg> element. */
#include "report_html.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/core.h"

/* ---------------------------------------------------------------- growing text buffer */

typedef struct {
    char *p;
    size_t len, cap;
    int oom; /* an allocation failed: later appends do nothing */
} hbuf;

static void hb_put(hbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void hb_puts(hbuf *b, const char *s) { hb_put(b, s, strlen(s)); }

static void hb_printf(hbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hb_printf(hbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        hb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    hb_put(b, big, (size_t)n);
    free(big);
}

/* Text into HTML (element content or a quoted attribute). */
static void hb_esc(hbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': hb_puts(b, "&amp;"); break;
        case '<': hb_puts(b, "&lt;"); break;
        case '>': hb_puts(b, "&gt;"); break;
        case '"': hb_puts(b, "&quot;"); break;
        case '\'': hb_puts(b, "&#39;"); break;
        default: hb_put(b, s, 1);
        }
    }
}

/* ---------------------------------------------------------------- report fields */

/* A finite number field of obj into *v; 0 when absent, null or not a number. */
static int jnum(const cJSON *obj, const char *key, double *v) {
    const cJSON *j = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble)) return 0;
    *v = j->valuedouble;
    return 1;
}

static const char *jstr(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsString(j) && j->valuestring ? j->valuestring : NULL;
}

static const cJSON *jarr(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsArray(j) ? j : NULL;
}

#define NOT_MEASURED "<span class=\"na\">not measured</span>"

/* A number as %.4g, or "not measured". */
static void put_num(hbuf *b, const cJSON *obj, const char *key) {
    double v;
    if (jnum(obj, key, &v)) hb_printf(b, "%.4g", v);
    else hb_puts(b, NOT_MEASURED);
}

/* A count as "89,500,000", with " (89.5 MB)" when it is bytes, or "not measured". */
static void put_count(hbuf *b, const cJSON *obj, const char *key, int is_bytes) {
    double v;
    if (!jnum(obj, key, &v)) {
        hb_puts(b, NOT_MEASURED);
        return;
    }
    if (v < 0 || v >= 1e18 || v != floor(v)) {
        hb_printf(b, "%.4g", v);
        return;
    }
    char digits[32], out[48];
    int n = snprintf(digits, sizeof digits, "%.0f", v), k = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) out[k++] = ',';
        out[k++] = digits[i];
    }
    out[k] = '\0';
    hb_puts(b, out);
    if (is_bytes) hb_printf(b, " (%.4g MB)", v / 1e6);
}

static void put_bytes(hbuf *b, const cJSON *obj, const char *key) { put_count(b, obj, key, 1); }

static void put_str(hbuf *b, const char *s) {
    if (s) hb_esc(b, s);
    else hb_puts(b, NOT_MEASURED);
}

/* The seven linear layers of a block, then the two tensors outside the blocks. */
enum { N_LAYER_KINDS = 7, KIND_EMBD = 7, KIND_OUT = 8, KIND_OTHER = 9, N_KINDS = 10 };
static const char *const KIND_NAMES[N_KINDS] = {"attn_q",   "attn_k", "attn_v", "attn_output", "ffn_gate",
                                                "ffn_up",   "ffn_down", "token_embd", "output", "other"};
/* Tableau 10: one colour per kind in the scatter and the bar chart. */
static const char *const KIND_COLORS[N_KINDS] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                                 "#edc948", "#b07aa1", "#9c755f", "#ff9da7", "#bab0ac"};
/* More layers than this are not drawn (the report would be wrong, not the page). */
#define MAX_LAYERS 4096

typedef struct {
    const char *name, *type; /* NULL when absent */
    int layer;               /* -1 outside the blocks or absent */
    int kind;                /* an index into KIND_NAMES */
    double bytes, bpw, pred, meas; /* NAN when absent */
} tinfo;

static void read_tensor(const cJSON *j, tinfo *t) {
    double v, np;
    t->name = jstr(j, "name");
    t->type = jstr(j, "type");
    t->layer = jnum(j, "layer", &v) && v >= 0 && v < MAX_LAYERS ? (int)v : -1;
    const char *kind = jstr(j, "kind");
    t->kind = KIND_OTHER;
    for (int k = 0; kind && k < KIND_OTHER; k++)
        if (!strcmp(kind, KIND_NAMES[k])) t->kind = k;
    if (t->kind < N_LAYER_KINDS && t->layer < 0) t->kind = KIND_OTHER;
    if (t->kind >= N_LAYER_KINDS) t->layer = -1;
    t->bytes = jnum(j, "bytes", &v) && v >= 0 ? v : NAN;
    t->bpw = jnum(j, "bpw", &v) && v > 0 ? v
             : isfinite(t->bytes) && jnum(j, "n_params", &np) && np > 0 ? t->bytes * 8 / np : NAN;
    t->pred = jnum(j, "predicted_dL", &v) ? v : NAN;
    t->meas = jnum(j, "measured_dL", &v) ? v : NAN;
}

/* ---------------------------------------------------------------- chart helpers */

/* A step of 1, 2 or 5 times a power of ten giving about n ticks over span. */
static double nice_step(double span, int n) {
    if (!(span > 0)) return 1;
    double raw = span / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/* Viridis over log2(bits per weight) from 2 to 16; *light says the text on it is dark. */
#define BPW_LO 2.0
#define BPW_HI 16.0
static double bpw_pos(double bpw) {
    double t = (log2(bpw) - log2(BPW_LO)) / (log2(BPW_HI) - log2(BPW_LO));
    return t < 0 ? 0 : t > 1 ? 1 : t;
}
static const unsigned char VIRIDIS[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
static void bpw_color(double bpw, char out[8], int *light) {
    double x = bpw_pos(bpw) * 4;
    int i = x >= 4 ? 3 : (int)x;
    double f = x - i;
    int c[3];
    for (int k = 0; k < 3; k++) c[k] = (int)lround(VIRIDIS[i][k] + f * (VIRIDIS[i + 1][k] - VIRIDIS[i][k]));
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
    *light = x > 2.4;
}

static void svg_open(hbuf *b, double w, double h, const char *label) {
    hb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                 "role=\"img\" aria-label=\"%s\" font-family=\"sans-serif\" font-size=\"11\">\n", w, h, w, h, label);
}

static void svg_text(hbuf *b, double x, double y, const char *anchor, const char *text) {
    hb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">%s</text>\n", x, y, anchor, text);
}

/* A legend of colour swatches, one per line, at (x, y). */
static void svg_legend(hbuf *b, double x, double y, int n, const char *const *names, const char *const *colors,
                       const int *dashed) {
    for (int i = 0; i < n; i++) {
        double yy = y + 16 * i;
        if (dashed)
            hb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                      x, yy + 5, x + 18, yy + 5, colors[i], dashed[i] ? " stroke-dasharray=\"5,3\"" : "");
        else
            hb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/>\n", x, yy, colors[i]);
        hb_printf(b, "<text x=\"%.1f\" y=\"%.1f\">", x + (dashed ? 24 : 14), yy + 9);
        hb_esc(b, names[i]);
        hb_puts(b, "</text>\n");
    }
}

/* ---------------------------------------------------------------- 1. summary */

static const cJSON *find_round(const cJSON *rounds, double want) {
    const cJSON *r;
    int i = 0;
    cJSON_ArrayForEach(r, rounds) {
        double v;
        if ((jnum(r, "round", &v) ? v : i + 1) == want) return r;
        i++;
    }
    return NULL;
}

static void summary(hbuf *b, const cJSON *rep) {
    const cJSON *rounds = jarr(rep, "rounds"), *calib = cJSON_GetObjectItemCaseSensitive(rep, "calib");
    int nr = rounds ? cJSON_GetArraySize(rounds) : 0;
    double best_no;
    const cJSON *best = rounds && jnum(rep, "best_round", &best_no) ? find_round(rounds, best_no) : NULL;
    hb_puts(b, "<h2>Summary</h2>\n<table class=\"kv\">\n<tr><th>model</th><td>");
    put_str(b, jstr(rep, "model"));
    hb_puts(b, "</td></tr>\n<tr><th>output</th><td>");
    put_str(b, jstr(rep, "output"));
    hb_puts(b, "</td></tr>\n<tr><th>parameters</th><td>");
    put_count(b, rep, "n_params", 0);
    hb_puts(b, "</td></tr>\n<tr><th>budget</th><td>");
    put_bytes(b, rep, "budget_bytes");
    hb_puts(b, ", ");
    put_num(b, rep, "budget_bpw");
    hb_puts(b, " bits per weight</td></tr>\n<tr><th>feasible sizes</th><td>");
    put_bytes(b, rep, "min_bytes");
    hb_puts(b, " to ");
    put_bytes(b, rep, "max_bytes");
    hb_puts(b, "</td></tr>\n<tr><th>calibration</th><td>");
    if (cJSON_IsObject(calib)) {
        put_str(b, jstr(calib, "file"));
        hb_puts(b, ": ");
        put_num(b, calib, "nsamples");
        hb_puts(b, " windows of ");
        put_num(b, calib, "seqlen");
        hb_puts(b, " tokens, ");
        put_num(b, calib, "heldout_nsamples");
        hb_puts(b, " held-out windows");
    } else {
        hb_puts(b, NOT_MEASURED);
    }
    hb_printf(b, "</td></tr>\n<tr><th>rounds</th><td>%d</td></tr>\n<tr><th>best round</th><td>", nr);
    put_num(b, best, "round");
    hb_puts(b, "</td></tr>\n<tr><th>achieved (best round)</th><td>tensors ");
    put_bytes(b, best, "tensor_bytes");
    hb_puts(b, "; file ");
    put_bytes(b, best, "file_bytes");
    hb_puts(b, "; ");
    put_num(b, best, "bpw");
    hb_puts(b, " bits per weight</td></tr>\n<tr><th>held-out perplexity</th><td>");
    put_num(b, rep, "base_heldout_ppl");
    hb_puts(b, " uncompressed &rarr; ");
    put_num(b, best, "heldout_ppl");
    hb_puts(b, " compressed</td></tr>\n<tr><th>eval perplexity</th><td>");
    put_num(b, rep, "base_eval_ppl");
    hb_puts(b, " uncompressed &rarr; ");
    put_num(b, best, "eval_ppl");
    hb_puts(b, " compressed</td></tr>\n</table>\n");
}

/* ---------------------------------------------------------------- 2. heat map */

static void heat_cell(hbuf *b, const tinfo *t, double x, double y, double w, double h, const char *label) {
    char col[8] = "#e8e8e8";
    int light = 1;
    if (t && isfinite(t->bpw)) bpw_color(t->bpw, col, &light);
    hb_printf(b, "<g><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" stroke=\"#fff\"/>",
              x, y, w, h, col);
    if (t) {
        hb_puts(b, "<title>");
        put_str(b, t->name);
        hb_puts(b, ": ");
        put_str(b, t->type);
        if (isfinite(t->bpw)) hb_printf(b, ", %.4g bits per weight", t->bpw);
        hb_printf(b, "</title><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">", x + w / 2,
                  y + h / 2 + 4, light ? "#000" : "#fff");
        if (label) hb_printf(b, "%s ", label);
        hb_esc(b, t->type ? t->type : "?");
        hb_puts(b, "</text>");
    }
    hb_puts(b, "</g>\n");
}

static void heat_map(hbuf *b, const tinfo *t, int nt, int n_layers) {
    const tinfo *embd = NULL, *out = NULL;
    for (int i = 0; i < nt; i++) {
        if (t[i].kind == KIND_EMBD) embd = &t[i];
        if (t[i].kind == KIND_OUT) out = &t[i];
    }
    hb_puts(b, "<h2>Types per layer</h2>\n");
    if (n_layers == 0 && !embd && !out) {
        hb_puts(b, "<p>No tensors in the report: types " NOT_MEASURED ".</p>\n");
        return;
    }
    const tinfo **cell = calloc((size_t)(n_layers > 0 ? n_layers : 1) * N_LAYER_KINDS, sizeof *cell);
    if (!cell) {
        b->oom = 1;
        return;
    }
    for (int i = 0; i < nt; i++)
        if (t[i].layer >= 0 && t[i].kind < N_LAYER_KINDS) cell[t[i].layer * N_LAYER_KINDS + t[i].kind] = &t[i];
    const double lm = 50, tm = 30, cw = 88, ch = n_layers > 40 ? 14 : 20;
    const double y_extra = tm + n_layers * ch + 10, y_leg = y_extra + 20 + 34, w = lm + N_LAYER_KINDS * cw + 20;
    svg_open(b, w, y_leg + 40, "type of every tensor per layer, coloured by bits per weight");
    for (int k = 0; k < N_LAYER_KINDS; k++) svg_text(b, lm + (k + 0.5) * cw, tm - 10, "middle", KIND_NAMES[k]);
    svg_text(b, lm - 8, tm - 10, "end", "layer");
    for (int l = 0; l < n_layers; l++) {
        hb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n", lm - 8,
                  tm + l * ch + ch / 2 + 4, l);
        for (int k = 0; k < N_LAYER_KINDS; k++)
            heat_cell(b, cell[l * N_LAYER_KINDS + k], lm + k * cw, tm + l * ch, cw, ch, NULL);
    }
    svg_text(b, lm - 8, y_extra + 14, "end", "other");
    heat_cell(b, embd, lm, y_extra, 3.5 * cw, 20, "token_embd");
    heat_cell(b, out, lm + 3.5 * cw, y_extra, 3.5 * cw, 20, "output");
    /* legend: the colour scale with ticks at common widths */
    const double lw = N_LAYER_KINDS * cw;
    hb_puts(b, "<defs><linearGradient id=\"bpwscale\">");
    for (int i = 0; i < 5; i++)
        hb_printf(b, "<stop offset=\"%d%%\" stop-color=\"#%02x%02x%02x\"/>", i * 25, VIRIDIS[i][0], VIRIDIS[i][1],
                  VIRIDIS[i][2]);
    hb_puts(b, "</linearGradient></defs>\n");
    svg_text(b, lm, y_leg - 6, "start", "bits per weight (grey: not measured)");
    hb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"12\" fill=\"url(#bpwscale)\"/>\n", lm, y_leg, lw);
    static const int ticks[] = {2, 3, 4, 5, 6, 8, 12, 16};
    for (size_t i = 0; i < sizeof ticks / sizeof *ticks; i++) {
        double x = lm + bpw_pos(ticks[i]) * lw;
        char s[8];
        snprintf(s, sizeof s, "%d", ticks[i]);
        hb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\"/>\n", x, y_leg + 12, x,
                  y_leg + 16);
        svg_text(b, x, y_leg + 28, "middle", s);
    }
    hb_puts(b, "</svg>\n");
    free(cell);
}

/* ---------------------------------------------------------------- 3. predicted vs measured */

static void scatter(hbuf *b, const tinfo *t, int nt) {
    int n = 0, n_meas = 0, present[N_KINDS] = {0};
    double lo = INFINITY, hi = -INFINITY, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (int i = 0; i < nt; i++) {
        n_meas += !isnan(t[i].meas);
        if (!(t[i].pred > 0 && t[i].meas > 0)) continue; /* finite: read_tensor keeps only finite values */
        double x = log10(t[i].pred), y = log10(t[i].meas);
        lo = fmin(lo, fmin(x, y));
        hi = fmax(hi, fmax(x, y));
        sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y;
        present[t[i].kind] = 1;
        n++;
    }
    hb_puts(b, "<h2>Predicted vs measured &Delta;L per tensor</h2>\n");
    if (n == 0) {
        hb_printf(b, "<p>No tensor has both a positive predicted and a positive measured &Delta;L: measured &Delta;L "
                     NOT_MEASURED " (%d of %d tensors have a measured value).</p>\n", n_meas, nt);
        return;
    }
    double vx = sxx - sx * sx / n, vy = syy - sy * sy / n;
    hb_printf(b, "<p>%d tensors with both values positive (of %d measured, %d in all). Log-log axes; the dashed line "
                 "is y = x.", n, n_meas, nt);
    if (n > 2 && vx > 0 && vy > 0)
        hb_printf(b, " Correlation of log&nbsp;predicted and log&nbsp;measured: %.3f.",
                  (sxy - sx * sy / n) / sqrt(vx * vy));
    hb_puts(b, "</p>\n");
    int dlo = (int)floor(lo), dhi = (int)ceil(hi);
    if (dhi <= dlo) dhi = dlo + 1;
    int step = (dhi - dlo + 7) / 8;
    const double lm = 70, tm = 15, side = 400, w = lm + side + 150, h = tm + side + 50;
#define SX(v) (lm + ((v) - dlo) / (double)(dhi - dlo) * side)
#define SY(v) (tm + side - ((v) - dlo) / (double)(dhi - dlo) * side)
    svg_open(b, w, h, "predicted against measured loss increase per tensor, log-log");
    hb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#000\"/>\n", lm, tm,
              side, side);
    for (int d = dlo; d <= dhi; d += step) {
        char s[16];
        snprintf(s, sizeof s, "1e%d", d);
        hb_printf(b, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1f\" stroke=\"#ddd\"/>\n", SX(d), tm, tm + side, lm, SY(d),
                  lm + side);
        svg_text(b, SX(d), tm + side + 16, "middle", s);
        svg_text(b, lm - 6, SY(d) + 4, "end", s);
    }
    hb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"5,3\"/>\n",
              SX(dlo), SY(dlo), SX(dhi), SY(dhi));
    for (int i = 0; i < nt; i++) {
        if (!(t[i].pred > 0 && t[i].meas > 0)) continue;
        hb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" fill-opacity=\"0.8\"><title>",
                  SX(log10(t[i].pred)), SY(log10(t[i].meas)), KIND_COLORS[t[i].kind]);
        put_str(b, t[i].name);
        hb_printf(b, ": predicted %.4g, measured %.4g</title></circle>\n", t[i].pred, t[i].meas);
    }
#undef SX
#undef SY
    svg_text(b, lm + side / 2, h - 12, "middle", "predicted &#916;L");
    hb_printf(b, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">measured &#916;L</text>\n",
              tm + side / 2);
    const char *names[N_KINDS], *colors[N_KINDS];
    int nk = 0;
    for (int k = 0; k < N_KINDS; k++)
        if (present[k]) names[nk] = KIND_NAMES[k], colors[nk++] = KIND_COLORS[k];
    svg_legend(b, lm + side + 16, tm + 4, nk, names, colors, NULL);
    hb_puts(b, "</svg>\n<table>\n<tr><th>tensor</th><th>type</th><th>predicted &Delta;L</th><th>measured &Delta;L</th>"
               "<th>measured / predicted</th></tr>\n");
    for (int i = 0; i < nt; i++) {
        if (!(t[i].pred > 0 && t[i].meas > 0)) continue;
        hb_puts(b, "<tr><td>");
        put_str(b, t[i].name);
        hb_puts(b, "</td><td>");
        put_str(b, t[i].type);
        hb_printf(b, "</td><td>%.4g</td><td>%.4g</td><td>%.4g</td></tr>\n", t[i].pred, t[i].meas,
                  t[i].meas / t[i].pred);
    }
    hb_puts(b, "</table>\n");
}

/* ---------------------------------------------------------------- 4. bytes per layer */

static void bytes_chart(hbuf *b, const tinfo *t, int nt, int n_layers) {
    /* bars: the layers, then token_embd and output when the report has them */
    int has_embd = 0, has_out = 0;
    for (int i = 0; i < nt; i++) {
        has_embd |= t[i].kind == KIND_EMBD && isfinite(t[i].bytes);
        has_out |= t[i].kind == KIND_OUT && isfinite(t[i].bytes);
    }
    int nb = n_layers + has_embd + has_out;
    hb_puts(b, "<h2>Bytes per layer</h2>\n");
    double *v = calloc((size_t)(nb > 0 ? nb : 1) * N_KINDS, sizeof *v);
    if (!v) {
        b->oom = 1;
        return;
    }
    double top = 0;
    int present[N_KINDS] = {0};
    for (int i = 0; i < nt; i++) {
        if (!isfinite(t[i].bytes)) continue;
        int bar = t[i].layer >= 0 ? t[i].layer : t[i].kind == KIND_EMBD ? n_layers
                                              : t[i].kind == KIND_OUT ? n_layers + has_embd : -1;
        if (bar < 0) continue;
        v[bar * N_KINDS + t[i].kind] += t[i].bytes;
        present[t[i].kind] = 1;
    }
    for (int i = 0; i < nb; i++) {
        double s = 0;
        for (int k = 0; k < N_KINDS; k++) s += v[i * N_KINDS + k];
        top = fmax(top, s);
    }
    if (!(top > 0) || !isfinite(top)) {
        hb_puts(b, "<p>Bytes per tensor: " NOT_MEASURED ".</p>\n");
        free(v);
        return;
    }
    double ystep = nice_step(top / 1e6, 5) * 1e6, ymax = ceil(top / ystep) * ystep;
    const double lm = 70, tm = 15, pw = 560, ph = 300, w = lm + pw + 150, h = tm + ph + 50, slot = pw / nb;
    int every = (nb + 23) / 24;
    svg_open(b, w, h, "bytes per layer, stacked by tensor kind");
    for (int k = 0; k <= 20 && k * ystep <= ymax * (1 + 1e-9); k++) {
        double y = k * ystep, yy = tm + ph - y / ymax * ph;
        char s[32];
        snprintf(s, sizeof s, "%.4g", y / 1e6);
        hb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", lm, yy, lm + pw, yy);
        svg_text(b, lm - 6, yy + 4, "end", s);
    }
    for (int i = 0; i < nb; i++) {
        double y = tm + ph, x = lm + i * slot + slot * 0.1;
        for (int k = 0; k < N_KINDS; k++) {
            double hh = v[i * N_KINDS + k] / ymax * ph;
            if (!(hh > 0)) continue;
            y -= hh;
            hb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s: %.4g MB"
                         "</title></rect>\n",
                      x, y, slot * 0.8, hh, KIND_COLORS[k], KIND_NAMES[k], v[i * N_KINDS + k] / 1e6);
        }
        char s[16];
        if (i >= n_layers) snprintf(s, sizeof s, "%s", i == n_layers && has_embd ? "embd" : "out");
        else if (i % every == 0) snprintf(s, sizeof s, "%d", i);
        else continue;
        svg_text(b, lm + (i + 0.5) * slot, tm + ph + 14, "middle", s);
    }
    hb_printf(b, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#000\"/>\n", lm, tm, tm + ph, lm + pw);
    svg_text(b, lm + pw / 2, h - 12, "middle", "layer");
    hb_printf(b, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">MB (10^6 bytes)</text>\n",
              tm + ph / 2);
    const char *names[N_KINDS], *colors[N_KINDS];
    int nk = 0;
    for (int k = N_KINDS - 1; k >= 0; k--) /* top of the stack first */
        if (present[k]) names[nk] = KIND_NAMES[k], colors[nk++] = KIND_COLORS[k];
    svg_legend(b, lm + pw + 16, tm + 4, nk, names, colors, NULL);
    hb_puts(b, "</svg>\n");
    free(v);
}

/* ---------------------------------------------------------------- 5. perplexity per round */

static void ppl_chart(hbuf *b, const cJSON *rep) {
    const cJSON *rounds = jarr(rep, "rounds"), *r;
    int nr = rounds ? cJSON_GetArraySize(rounds) : 0;
    hb_puts(b, "<h2>Perplexity per round</h2>\n");
    if (nr == 0) {
        hb_puts(b, "<p>No rounds in the report: perplexity " NOT_MEASURED ".</p>\n");
        return;
    }
    double base[2], v, xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY, best_no = NAN;
    int has_base[2] = {jnum(rep, "base_heldout_ppl", &base[0]), jnum(rep, "base_eval_ppl", &base[1])}, has[2] = {0};
    const char *key[2] = {"heldout_ppl", "eval_ppl"}, *color[2] = {"#4e79a7", "#e15759"};
    jnum(rep, "best_round", &best_no);
    for (int s = 0; s < 2; s++)
        if (has_base[s]) ylo = fmin(ylo, base[s]), yhi = fmax(yhi, base[s]);
    int i = 0;
    cJSON_ArrayForEach(r, rounds) {
        double x = jnum(r, "round", &v) ? v : i + 1;
        xlo = fmin(xlo, x), xhi = fmax(xhi, x), i++;
        for (int s = 0; s < 2; s++)
            if (jnum(r, key[s], &v)) has[s] = 1, ylo = fmin(ylo, v), yhi = fmax(yhi, v);
    }
    if (!has[0] && !has[1]) {
        hb_puts(b, "<p>Perplexity of the rounds: " NOT_MEASURED ".</p>\n");
    } else {
        double span = yhi - ylo;
        if (!(span > 0)) span = fabs(yhi) > 0 ? fabs(yhi) * 0.1 : 1;
        ylo -= 0.08 * span, yhi += 0.08 * span;
        double ystep = nice_step(yhi - ylo, 5);
        xlo -= 0.5, xhi += 0.5;
        const double lm = 70, tm = 15, pw = 440, ph = 280, w = lm + pw + 200, h = tm + ph + 50;
#define PX(x) (lm + ((x) - xlo) / (xhi - xlo) * pw)
#define PY(y) (tm + ph - ((y) - ylo) / (yhi - ylo) * ph)
        svg_open(b, w, h, "perplexity per round");
        for (int k = 0; k <= 20 && ceil(ylo / ystep) * ystep + k * ystep <= yhi; k++) {
            double y = ceil(ylo / ystep) * ystep + k * ystep;
            char s[32];
            snprintf(s, sizeof s, "%.4g", fabs(y) < ystep * 1e-9 ? 0 : y);
            hb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", lm, PY(y),
                      lm + pw, PY(y));
            svg_text(b, lm - 6, PY(y) + 4, "end", s);
        }
        double xstep = ceil((xhi - xlo) / 20);
        for (int k = 0; k <= 25 && ceil(xlo) + k * xstep <= xhi; k++) {
            double x = ceil(xlo) + k * xstep;
            char s[32];
            snprintf(s, sizeof s, "%.4g", x);
            svg_text(b, PX(x), tm + ph + 14, "middle", s);
        }
        const char *names[4], *colors[4];
        int dashed[4], nl = 0;
        for (int s = 0; s < 2; s++) {
            if (!has_base[s]) continue;
            hb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"6,4\">"
                         "<title>uncompressed: %.4g</title></line>\n",
                      lm, PY(base[s]), lm + pw, PY(base[s]), color[s], base[s]);
            names[nl] = s ? "eval, uncompressed" : "held-out, uncompressed", colors[nl] = color[s], dashed[nl++] = 1;
        }
        for (int s = 0; s < 2; s++) {
            if (!has[s]) continue;
            hb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color[s]);
            i = 0;
            cJSON_ArrayForEach(r, rounds) {
                double x = jnum(r, "round", &v) ? v : i + 1;
                i++;
                if (jnum(r, key[s], &v)) hb_printf(b, "%.1f,%.1f ", PX(x), PY(v));
            }
            hb_puts(b, "\"/>\n");
            i = 0;
            cJSON_ArrayForEach(r, rounds) {
                double x = jnum(r, "round", &v) ? v : i + 1;
                i++;
                if (!jnum(r, key[s], &v)) continue;
                hb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"><title>round %.4g: %.4g</title>"
                             "</circle>\n", PX(x), PY(v), x == best_no ? "6" : "4", color[s], x, v);
            }
            names[nl] = s ? "eval" : "held-out", colors[nl] = color[s], dashed[nl++] = 0;
        }
#undef PX
#undef PY
        hb_printf(b, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#000\"/>\n", lm, tm, tm + ph, lm + pw);
        svg_text(b, lm + pw / 2, h - 12, "middle", "round (larger point: best round)");
        hb_printf(b, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">perplexity</text>\n",
                  tm + ph / 2);
        svg_legend(b, lm + pw + 16, tm + 4, nl, names, colors, dashed);
        hb_puts(b, "</svg>\n");
    }
    hb_puts(b, "<table>\n<tr><th>round</th><th>predicted &Delta;L</th><th>tensor bytes</th><th>file bytes</th>"
               "<th>bits per weight</th><th>held-out ppl</th><th>eval ppl</th><th>seconds</th></tr>\n");
    i = 0;
    cJSON_ArrayForEach(r, rounds) {
        double x = jnum(r, "round", &v) ? v : i + 1;
        i++;
        int is_best = x == best_no;
        hb_printf(b, "<tr%s><td>%.4g%s</td><td>", is_best ? " class=\"best\"" : "", x, is_best ? " (best)" : "");
        put_num(b, r, "predicted_dL");
        hb_puts(b, "</td><td>");
        put_bytes(b, r, "tensor_bytes");
        hb_puts(b, "</td><td>");
        put_bytes(b, r, "file_bytes");
        hb_puts(b, "</td><td>");
        put_num(b, r, "bpw");
        hb_puts(b, "</td><td>");
        put_num(b, r, "heldout_ppl");
        hb_puts(b, "</td><td>");
        put_num(b, r, "eval_ppl");
        hb_puts(b, "</td><td>");
        put_num(b, r, "seconds");
        hb_puts(b, "</td></tr>\n");
    }
    hb_puts(b, "<tr><td>uncompressed</td><td></td><td></td><td></td><td></td><td>");
    put_num(b, rep, "base_heldout_ppl");
    hb_puts(b, "</td><td>");
    put_num(b, rep, "base_eval_ppl");
    hb_puts(b, "</td><td></td></tr>\n</table>\n");
}

/* ---------------------------------------------------------------- the page */

static const char CSS[] =
    "body{font-family:sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}\n"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\n"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}\n"
    "th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left}\n"
    "td{font-variant-numeric:tabular-nums}table.kv th{background:#f4f4f4}\n"
    "tr.best{font-weight:bold}.na{color:#999;font-style:italic}svg{display:block;max-width:100%;height:auto}\n";

static void render(hbuf *b, const cJSON *rep, const tinfo *t, int nt) {
    int n_layers = 0;
    for (int i = 0; i < nt; i++)
        if (t[i].layer + 1 > n_layers) n_layers = t[i].layer + 1;
    const char *model = jstr(rep, "model");
    hb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>sqz compress: ");
    hb_esc(b, model ? model : "report");
    hb_printf(b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<h1>sqz compress: ", CSS);
    hb_esc(b, model ? model : "report");
    hb_puts(b, "</h1>\n");
    summary(b, rep);
    heat_map(b, t, nt, n_layers);
    scatter(b, t, nt);
    bytes_chart(b, t, nt, n_layers);
    ppl_chart(b, rep);
    hb_puts(b, "</body>\n</html>\n");
}

int report_html_write(const cJSON *report, const char *path, char *err, size_t err_len) {
    char dummy[1];
    if (!err || !err_len) err = dummy, err_len = sizeof dummy;
    if (!cJSON_IsObject(report)) {
        snprintf(err, err_len, "%s: the compress report is not a JSON object", path);
        return -1;
    }
    const cJSON *arr = jarr(report, "tensors"), *j;
    int nt = arr ? cJSON_GetArraySize(arr) : 0, i = 0;
    tinfo *t = calloc((size_t)(nt > 0 ? nt : 1), sizeof *t);
    hbuf b = {0};
    if (!t) b.oom = 1;
    else if (arr) cJSON_ArrayForEach(j, arr) read_tensor(j, &t[i++]);
    if (!b.oom) render(&b, report, t, nt);
    free(t);
    if (b.oom) {
        free(b.p);
        snprintf(err, err_len, "%s: out of memory while rendering the report", path);
        return -1;
    }
    sqz_out o;
    sqz_err e;
    int rc = 0;
    if (sqz_out_open(&o, path, &e) || sqz_out_write(&o, b.p, b.len, &e) || sqz_out_commit(&o, &e)) {
        sqz_out_abort(&o);
        snprintf(err, err_len, "%s", e.msg);
        rc = -1;
    }
    free(b.p);
    return rc;
}

/* The HTML report of `sqz compress` (tools/report_html.c, compiled in here: it lives with
 * the CLI, not in the library).
 *  - a full report (3 layers, 2 rounds, some tensors measured, one measured null, a name
 *    with "<&>"): one page, 4 inline SVG charts, nothing loaded from the network, every
 *    text escaped, every heat-map type shown, the same bytes twice, no temporary left;
 *  - an empty report, one without measurements and one with nonsense fields still
 *    render and say "not measured";
 *  - a path in a missing folder, and a report that is not an object, fail with a message. */
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../tools/report_html.c"
#include "testutil.h"

static const char *const KINDS[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
/* type per layer and kind: every layer differs so the heat map has something to show */
static const char *const TYPES[3][7] = {{"Q4_K", "Q6_K", "Q6_K", "Q4_K", "Q3_K", "Q3_K", "Q5_K"},
                                        {"Q2_K", "Q4_K", "Q8_0", "Q4_0", "Q3_K", "Q3_K", "Q6_K"},
                                        {"Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "Q4_K", "Q4_K", "Q6_K"}};

static double type_bpw(const char *t) {
    static const struct { const char *n; double b; } tab[] = {{"Q2_K", 2.625}, {"Q3_K", 3.4375}, {"Q4_K", 4.5},
        {"Q4_0", 4.5}, {"IQ4_NL", 4.5}, {"Q5_K", 5.5}, {"Q6_K", 6.5625}, {"Q8_0", 8.5}};
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (!strcmp(tab[i].n, t)) return tab[i].b;
    return 16;
}

static cJSON *tensor(const char *name, int layer, const char *kind, const char *type, double n_params, double pred,
                     double meas) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "name", name);
    cJSON_AddNumberToObject(t, "layer", layer);
    cJSON_AddStringToObject(t, "kind", kind);
    cJSON_AddStringToObject(t, "type", type);
    cJSON_AddNumberToObject(t, "n_params", n_params);
    cJSON_AddNumberToObject(t, "bytes", n_params * type_bpw(type) / 8);
    cJSON_AddNumberToObject(t, "bpw", type_bpw(type));
    cJSON_AddNumberToObject(t, "predicted_dL", pred);
    if (meas == meas) cJSON_AddNumberToObject(t, "measured_dL", meas);
    else cJSON_AddNullToObject(t, "measured_dL");
    cJSON *opts = cJSON_AddArrayToObject(t, "options");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Q4_0");
    cJSON_AddNumberToObject(o, "bytes", n_params * 4.5 / 8);
    cJSON_AddNumberToObject(o, "predicted_dL", pred * 2);
    cJSON_AddItemToArray(opts, o);
    return t;
}

static cJSON *round_obj(double no, double dl, double bytes, double held, double eval, double sec) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "round", no);
    cJSON_AddNumberToObject(r, "predicted_dL", dl);
    cJSON_AddNumberToObject(r, "tensor_bytes", bytes);
    cJSON_AddNumberToObject(r, "file_bytes", bytes + 500000);
    cJSON_AddNumberToObject(r, "bpw", bytes * 8 / 134515008.0);
    cJSON_AddNumberToObject(r, "heldout_ppl", held);
    if (eval == eval) cJSON_AddNumberToObject(r, "eval_ppl", eval);
    else cJSON_AddNullToObject(r, "eval_ppl");
    cJSON_AddNumberToObject(r, "seconds", sec);
    return r;
}

static cJSON *full_report(void) {
    cJSON *rep = cJSON_CreateObject();
    cJSON_AddStringToObject(rep, "model", "models/SmolLM2-135M");
    cJSON_AddStringToObject(rep, "output", "out/smol \"mixed\".gguf");
    cJSON_AddNumberToObject(rep, "n_params", 134515008);
    cJSON_AddNumberToObject(rep, "budget_bytes", 90000000);
    cJSON_AddNumberToObject(rep, "budget_bpw", 5.35);
    cJSON_AddNumberToObject(rep, "min_bytes", 45000000);
    cJSON_AddNumberToObject(rep, "max_bytes", 143000000);
    cJSON *c = cJSON_AddObjectToObject(rep, "calib");
    cJSON_AddStringToObject(c, "file", "data/wiki.train.raw");
    cJSON_AddNumberToObject(c, "nsamples", 8);
    cJSON_AddNumberToObject(c, "seqlen", 512);
    cJSON_AddNumberToObject(c, "heldout_nsamples", 4);
    cJSON *rounds = cJSON_AddArrayToObject(rep, "rounds");
    cJSON_AddItemToArray(rounds, round_obj(1, 0.031, 89000000, 25.1, 31.2, 120.5));
    cJSON_AddItemToArray(rounds, round_obj(2, 0.027, 89400000, 24.8, NAN, 98.25));
    cJSON_AddNumberToObject(rep, "best_round", 2);
    cJSON_AddNumberToObject(rep, "base_heldout_ppl", 24.0);
    cJSON_AddNumberToObject(rep, "base_eval_ppl", 30.5);
    cJSON *ts = cJSON_AddArrayToObject(rep, "tensors");
    for (int l = 0; l < 3; l++)
        for (int k = 0; k < 7; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight%s", l, KINDS[k], l == 1 && k == 1 ? "<&>" : "");
            double np = k < 4 ? 331776 : 884736, pred = 1e-4 * (1 + l) * (1 + k);
            /* measured: layer 0 all, layer 1 three, one of them null; layer 2 none */
            double meas = l == 0 ? pred * (0.5 + 0.2 * k) : l == 1 && k < 3 ? (k == 2 ? NAN : pred * 1.3) : NAN;
            cJSON_AddItemToArray(ts, tensor(name, l, KINDS[k], TYPES[l][k], np, pred, meas));
        }
    cJSON_AddItemToArray(ts, tensor("token_embd.weight", -1, "token_embd", "Q8_0", 28311552, 2e-3, 2.5e-3));
    cJSON_AddItemToArray(ts, tensor("output.weight", -1, "output", "Q6_K", 28311552, 3e-3, NAN));
    return rep;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* Renders rep to path; returns the page (malloc'd) or NULL after a failed check. */
static char *render_to(const cJSON *rep, const char *path) {
    char err[1024] = "";
    unlink(path);
    int rc = report_html_write(rep, path, err, sizeof err);
    CHECK(rc == 0, "%s: %s", path, err);
    if (rc) return NULL;
    size_t len;
    char *html = tu_slurp(path, &len);
    CHECK(html != NULL, "%s: not written", path);
    if (html) CHECK(strlen(html) == len, "%s: NUL bytes in the page", path);
    return html;
}

/* No "<name>.tmp*" is left in the folder of path. */
static void check_no_tmp(const char *path) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s.tmp", base);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "%s: cannot list", dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));)
        CHECK(strncmp(e->d_name, prefix, strlen(prefix)) != 0, "temporary file left: %s/%s", dir, e->d_name);
    closedir(d);
}

/* Only the SVG namespace may name a URL; nothing is loaded. */
static void check_offline(const char *html, const char *what) {
    CHECK(count(html, "http://") == count(html, "http://www.w3.org/2000/svg"), "%s: a link other than the SVG xmlns",
          what);
    CHECK(!strstr(html, "https://"), "%s: an https link", what);
    CHECK(!strstr(html, "<script") && !strstr(html, "<link") && !strstr(html, "@import") && !strstr(html, "src="),
          "%s: loads something", what);
    CHECK(count(html, "url(") == count(html, "url(#"), "%s: a CSS url() that is not a local reference", what);
}

/* Every <svg> is closed before the next opens. */
static void check_svg_balanced(const char *html, int want, const char *what) {
    int open = 0, n = 0, ok = 1;
    for (const char *p = html; (p = strchr(p, '<')); p++) {
        if (!strncmp(p, "<svg", 4)) ok &= open == 0, open = 1, n++;
        else if (!strncmp(p, "</svg>", 6)) ok &= open == 1, open = 0;
    }
    CHECK(ok && open == 0, "%s: <svg> and </svg> not balanced", what);
    CHECK(n == want && count(html, "</svg>") == want, "%s: %d svg elements, expected %d", what, n, want);
}

static void test_full(const char *path, const char *path2) {
    cJSON *rep = full_report();
    char *html = render_to(rep, path), *again = render_to(rep, path2);
    if (html) {
        check_no_tmp(path);
        CHECK(!strncmp(html, "<!DOCTYPE html>", 15), "the page must start with <!DOCTYPE html>");
        CHECK(strstr(html, "</html>") != NULL, "the page is not closed");
        check_svg_balanced(html, 4, "full report");
        check_offline(html, "full report");
        CHECK(strstr(html, "blk.1.attn_k.weight&lt;&amp;&gt;") != NULL, "the name with <&> is not escaped");
        CHECK(!strstr(html, "<&>"), "raw <&> in the page");
        CHECK(strstr(html, "smol &quot;mixed&quot;.gguf") != NULL, "the output path is not escaped");
        for (int l = 0; l < 3; l++)
            for (int k = 0; k < 7; k++) {
                char cell[64];
                snprintf(cell, sizeof cell, ">%s</text>", TYPES[l][k]);
                CHECK(strstr(html, cell) != NULL, "heat map: no cell %s", cell);
            }
        CHECK(strstr(html, "token_embd Q8_0</text>") && strstr(html, "output Q6_K</text>"),
              "heat map: no token_embd / output row");
        /* the summary names the size of the model, the best round and the budget */
        CHECK(strstr(html, "89,400,000 (89.4 MB)") && strstr(html, "90,000,000 (90 MB)") &&
                  strstr(html, "<td>134,515,008</td>"),
              "summary sizes missing");
        /* scatter: 7 measured tensors of layer 0, 2 of layer 1 (one null), token_embd */
        CHECK(strstr(html, "10 tensors with both values positive (of 10 measured, 23 in all)") != NULL,
              "scatter: wrong count of measured tensors");
        CHECK(count(html, "<circle") == 10 + 2 + 1, "10 scatter points + 2 held-out + 1 eval point expected, got %d",
              count(html, "<circle"));
        CHECK(count(html, "stroke-dasharray=\"6,4\"") == 2, "the two uncompressed perplexities are dashed lines");
        CHECK(strstr(html, "<tr class=\"best\"><td>2 (best)</td>") != NULL, "round 2 must be marked best");
        CHECK(strstr(html, "not measured") != NULL, "round 2's eval ppl is null: 'not measured'");
    }
    CHECK(html && again && !strcmp(html, again), "the same report must give the same bytes");
    free(html);
    free(again);
    cJSON_Delete(rep);
}

static void test_sparse(const char *path) {
    /* no tensors, no rounds */
    cJSON *rep = cJSON_CreateObject();
    char *html = render_to(rep, path);
    if (html) {
        CHECK(strstr(html, "not measured") != NULL, "an empty report must say 'not measured'");
        check_svg_balanced(html, 0, "empty report");
        check_offline(html, "empty report");
    }
    free(html);
    cJSON_Delete(rep);
    /* tensors without any measurement and rounds without perplexities */
    rep = full_report();
    cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(rep, "tensors")) cJSON_DeleteItemFromObject(t, "measured_dL");
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(rep, "rounds")) {
        cJSON_ReplaceItemInObject(r, "heldout_ppl", cJSON_CreateNull());
        cJSON_DeleteItemFromObject(r, "eval_ppl");
    }
    html = render_to(rep, path);
    if (html) {
        CHECK(strstr(html, "measured &Delta;L <span class=\"na\">not measured</span>") != NULL,
              "no measured tensor: the scatter section must say so");
        check_svg_balanced(html, 2, "unmeasured report"); /* heat map, bytes */
    }
    free(html);
    cJSON_Delete(rep);
    /* nonsense: wrong types, NaN and infinite numbers, absurd layers, nulls everywhere */
    rep = cJSON_CreateObject();
    cJSON_AddNumberToObject(rep, "model", 3);
    cJSON_AddStringToObject(rep, "n_params", "many");
    cJSON_AddNullToObject(rep, "calib");
    cJSON_AddNumberToObject(rep, "best_round", NAN);
    cJSON_AddNumberToObject(rep, "base_heldout_ppl", INFINITY);
    cJSON_AddStringToObject(rep, "rounds", "none");
    cJSON *ts = cJSON_AddArrayToObject(rep, "tensors");
    cJSON_AddItemToArray(ts, cJSON_CreateNull());
    cJSON_AddItemToArray(ts, cJSON_CreateString("x"));
    cJSON_AddItemToArray(ts, tensor("huge", 1 << 30, "attn_q", "Q4_K", 1e300, NAN, INFINITY));
    cJSON_AddItemToArray(ts, tensor("neg", -7, "ffn_up", "Q2_K", -5, -1, 0));
    cJSON_AddItemToArray(ts, tensor("nokind", 2, "mlp", "F16", 0, 1e-3, 1e-3));
    cJSON *odd = cJSON_CreateObject();
    cJSON_AddNumberToObject(odd, "layer", 1e300);
    cJSON_AddNumberToObject(odd, "bytes", 1e308);
    cJSON_AddItemToArray(ts, odd);
    html = render_to(rep, path);
    if (html) {
        CHECK(strstr(html, "not measured") != NULL, "a nonsense report must say 'not measured'");
        check_offline(html, "nonsense report");
    }
    free(html);
    cJSON_Delete(rep);
    /* rounds with huge and repeated numbers still give a finite chart */
    rep = cJSON_CreateObject();
    cJSON *rounds = cJSON_AddArrayToObject(rep, "rounds");
    cJSON_AddItemToArray(rounds, round_obj(1e17, 0, 1, 1e17, 1e17, 0));
    cJSON_AddItemToArray(rounds, round_obj(1e17, 0, 1, 1e17 + 16, NAN, 0));
    html = render_to(rep, path);
    if (html) check_svg_balanced(html, 1, "huge rounds");
    free(html);
    cJSON_Delete(rep);
}

static void test_errors(const char *tmpdir) {
    char path[1024], err[1024] = "";
    snprintf(path, sizeof path, "%s/no-such-dir-%ld/report.html", tmpdir, (long)getpid());
    cJSON *rep = full_report();
    CHECK(report_html_write(rep, path, err, sizeof err) == -1, "a missing folder must fail");
    CHECK(strstr(err, path) != NULL, "the message must name the path: %s", err);
    CHECK(report_html_write(rep, path, NULL, 0) == -1, "a NULL err must not crash");
    cJSON *arr = cJSON_CreateArray();
    snprintf(path, sizeof path, "%s/report-array.html", tmpdir);
    err[0] = '\0';
    CHECK(report_html_write(arr, path, err, sizeof err) == -1 && strstr(err, "not a JSON object"),
          "an array is not a report: %s", err);
    CHECK(access(path, F_OK) != 0, "a failed render must not leave a file");
    cJSON_Delete(arr);
    cJSON_Delete(rep);
}

int main(void) {
    char *path = tu_tmp("test_report_html.html"), *path2 = tu_tmp("test_report_html2.html"), *dir = tu_tmp("");
    dir[strlen(dir) - 1] = '\0'; /* drop the trailing '/' */
    test_full(path, path2);
    test_sparse(path2);
    test_errors(dir);
    unlink(path2);
    printf("page: %s\n", path);
    free(path);
    free(path2);
    free(dir);
    return tu_done("test_report_html");
}

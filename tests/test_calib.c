/* Calibration windows and per-layer input Grams (src/model/calib.c).
 *
 * The Grams of stories260K on fixed windows are compared with those of transformers
 * (forward pre-hooks on q_proj, o_proj, gate_proj, down_proj, accumulated in float64):
 * tests/fixtures/calib/stories260K_grams.bin, made by
 *   python3 tests/py/gptq_reference.py grams ../shared/models/stories260K \
 *       tests/fixtures/calib/windows.txt tests/fixtures/calib/stories260K_grams.bin
 * (torch is not needed to run this test). Also: the same windows give bit-identical
 * Grams for 1 and 3 threads; windows are deterministic in the seed and lie in the text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz/calib.h"
#include "testutil.h"

static void test_windows(void) {
    enum { N = 1000, S = 8, L = 50 };
    int32_t tok[N], a[S * L], b[S * L], c[S * L];
    sqz_err err;
    for (int i = 0; i < N; i++) tok[i] = i;
    CHECK(sqz_calib_windows(tok, N, S, L, 42, a, &err) == 0, "%s", err.msg);
    CHECK(sqz_calib_windows(tok, N, S, L, 42, b, &err) == 0, "%s", err.msg);
    CHECK(sqz_calib_windows(tok, N, S, L, 43, c, &err) == 0, "%s", err.msg);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, different windows");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds, same windows");
    for (int s = 0; s < S; s++) {
        CHECK(a[s * L] >= 0 && a[s * L] + L <= N, "window %d starts at %d", s, a[s * L]);
        for (int i = 1; i < L; i++) CHECK(a[s * L + i] == a[s * L] + i, "window %d not contiguous", s);
    }
    /* a text of exactly one window has one possible window */
    CHECK(sqz_calib_windows(tok, L, 3, L, 7, a, &err) == 0 && a[0] == 0 && a[2 * L] == 0, "one-window text");
    CHECK(sqz_calib_windows(tok, L - 1, 3, L, 7, a, &err) != 0, "short text accepted");
    CHECK(strstr(err.msg, "fewer than one window") != NULL, "message: %s", err.msg);
    CHECK(sqz_calib_windows(tok, N, 0, L, 7, a, &err) != 0, "nsamples 0 accepted");
}

static const char *kSite[SQZ_SITE_COUNT] = {"attn_in", "attn_o_in", "ffn_in", "ffn_down_in"};

static void test_grams(void) {
    char *mpath = tu_shared("models/stories260K"), *wpath = tu_fixture("calib/windows.txt"),
         *gpath = tu_fixture("calib/stories260K_grams.bin");
    sqz_model m;
    sqz_err err;
    int rc = sqz_model_load(&m, mpath, 0, &err);
    CHECK(rc == 0, "%s", err.msg);
    FILE *fw = fopen(wpath, "r"), *fg = fopen(gpath, "rb");
    CHECK(fw && fg, "cannot open %s or %s", wpath, gpath);
    if (rc || !fw || !fg) goto out;
    int nsamples = 0, seqlen = 0, nl = 0, lay[8];
    CHECK(fscanf(fg, "sqzgram %d %d %d", &nsamples, &seqlen, &nl) == 3 && nl >= 1 && nl <= 8, "fixture header");
    for (int i = 0; i < nl; i++) CHECK(fscanf(fg, "%d", &lay[i]) == 1, "fixture layers");
    fgetc(fg); /* the newline */
    int32_t *win = malloc((size_t)(nsamples * seqlen) * sizeof(int32_t));
    for (int i = 0; i < nsamples * seqlen; i++) CHECK(fscanf(fw, "%d", &win[i]) == 1, "windows.txt: token %d", i);

    sqz_pool *pool = sqz_pool_create(3, &err);
    sqz_model_grams g1, g3;
    CHECK(sqz_calib_grams(&m, NULL, win, nsamples, seqlen, &g1, &err) == 0, "%s", err.msg);
    CHECK(sqz_calib_grams(&m, pool, win, nsamples, seqlen, &g3, &err) == 0, "%s", err.msg);
    CHECK(g1.n_tokens == (int64_t)nsamples * seqlen, "n_tokens %lld", (long long)g1.n_tokens);
    for (int l = 0; l < m.cfg.n_layer; l++)
        for (int s = 0; s < SQZ_SITE_COUNT; s++) {
            int64_t n = g1.layers[l].n[s];
            CHECK(n == g3.layers[l].n[s] && n > 0, "layer %d %s: width %lld", l, kSite[s], (long long)n);
            if (n > 0 && n == g3.layers[l].n[s])
                CHECK(memcmp(g1.layers[l].g[s], g3.layers[l].g[s], (size_t)(n * n) * sizeof(double)) == 0,
                      "layer %d %s: 1 and 3 threads differ", l, kSite[s]);
        }
    /* the stepper (a layer at a time) gives the run's Grams bit for bit, and refuses a
     * step past the last layer */
    sqz_calib_stepper *st = NULL;
    CHECK(sqz_calib_begin(&m, NULL, pool, win, nsamples, seqlen, NULL, NULL, &st, &err) == 0, "%s", err.msg);
    for (int l = 0; st && l < m.cfg.n_layer; l++) {
        sqz_layer_grams *g = NULL;
        CHECK(sqz_calib_step(st, &g, &err) == 0, "step %d: %s", l, err.msg);
        for (int s = 0; g && s < SQZ_SITE_COUNT; s++) {
            int64_t n = g1.layers[l].n[s];
            CHECK(g->n[s] == n, "step %d %s: width %lld, run %lld", l, kSite[s], (long long)g->n[s], (long long)n);
            if (g->n[s] == n && n > 0)
                CHECK(memcmp(g->g[s], g1.layers[l].g[s], (size_t)(n * n) * sizeof(double)) == 0,
                      "step %d %s: Gram differs from sqz_calib_run's", l, kSite[s]);
        }
    }
    if (st) {
        sqz_layer_grams *g = NULL;
        CHECK(sqz_calib_step(st, &g, &err) != 0 && strstr(err.msg, "past the last layer"), "step past the end: %s",
              err.msg);
    }
    sqz_calib_end(st);
    for (int i = 0; i < nl; i++) {
        int l = lay[i];
        CHECK(l >= 0 && l < m.cfg.n_layer, "fixture layer %d", l);
        if (l < 0 || l >= m.cfg.n_layer) break;
        for (int s = 0; s < SQZ_SITE_COUNT; s++) {
            int64_t n = g1.layers[l].n[s];
            float *ref = malloc((size_t)(n * n) * sizeof(float));
            CHECK(fread(ref, sizeof(float), (size_t)(n * n), fg) == (size_t)(n * n), "fixture short at layer %d %s", l,
                  kSite[s]);
            double mx = 0, md = 0;
            for (int64_t k = 0; k < n * n; k++) {
                double ours = g1.layers[l].g[s][k] / (double)g1.n_tokens;
                mx = fabs(ref[k]) > mx ? fabs(ref[k]) : mx;
                md = fabs(ours - ref[k]) > md ? fabs(ours - ref[k]) : md;
            }
            printf("layer %d %-11s %3lld×%-3lld max|H| %.4e  max|sqz − transformers| %.3e (rel %.2e)\n", l, kSite[s],
                   (long long)n, (long long)n, mx, md, md / mx);
            CHECK(md <= 1e-4 * mx, "layer %d %s: Gram differs from transformers' by %g (max %g)", l, kSite[s], md, mx);
            free(ref);
        }
    }
    sqz_calib_grams_free(&g1);
    sqz_calib_grams_free(&g3);
    sqz_pool_free(pool);
    free(win);
    /* a token outside the vocabulary fails cleanly */
    int32_t bad[4] = {1, 2, 9999, 3};
    sqz_model_grams gb;
    CHECK(sqz_calib_grams(&m, NULL, bad, 1, 4, &gb, &err) != 0, "token 9999 accepted");
out:
    if (fw) fclose(fw);
    if (fg) fclose(fg);
    if (rc == 0) sqz_model_free(&m);
    free(mpath); free(wpath); free(gpath);
}

int main(void) {
    test_windows();
    test_grams();
    return tu_done("test_calib");
}

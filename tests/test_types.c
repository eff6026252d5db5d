/* The type table and dequantizers against gguf-py (tests/py/make_quant_fixture.py):
 * every tensor of tests/fixtures/quant/quant_types.gguf, dequantized by sqz, must equal
 * gguf-py's float32 values bit for bit; the half-float conversions must equal numpy's. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sqz/gguf_write.h"
#include "sqz/io.h"
#include "sqz/tensor.h"
#include "testutil.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_table(void) {
    /* sizes from ggml-common.h (static_asserts there) */
    struct { int id; const char *name; int64_t bs; size_t bb; int readable; } want[] = {
        {0, "F32", 1, 4, 1},      {1, "F16", 1, 2, 1},       {2, "Q4_0", 32, 18, 1},   {3, "Q4_1", 32, 20, 1},
        {6, "Q5_0", 32, 22, 1},   {7, "Q5_1", 32, 24, 1},    {8, "Q8_0", 32, 34, 1},   {9, "Q8_1", 32, 36, 0},
        {10, "Q2_K", 256, 84, 1}, {11, "Q3_K", 256, 110, 1}, {12, "Q4_K", 256, 144, 1}, {13, "Q5_K", 256, 176, 1},
        {14, "Q6_K", 256, 210, 1}, {15, "Q8_K", 256, 292, 1}, {20, "IQ4_NL", 32, 18, 1}, {30, "BF16", 1, 2, 1},
        {23, "IQ4_XS", 256, 136, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const sqz_type_traits *t = sqz_type_get(want[i].id);
        CHECK(t != NULL, "type %d missing", want[i].id);
        if (!t) continue;
        CHECK(strcmp(t->name, want[i].name) == 0, "type %d name %s", want[i].id, t->name);
        CHECK(t->block_size == want[i].bs && t->block_bytes == want[i].bb, "type %s sizes %lld/%zu", t->name,
              (long long)t->block_size, t->block_bytes);
        CHECK((t->dequantize != NULL) == want[i].readable, "type %s dequantize presence", t->name);
        CHECK(sqz_type_from_name(want[i].name) == want[i].id, "from_name %s", want[i].name);
    }
    CHECK(sqz_type_from_name("q4_k") == SQZ_TYPE_Q4_K, "case-insensitive name");
    CHECK(sqz_type_from_name("Q4_2") == -1 && sqz_type_from_name("") == -1, "unknown names");
    CHECK(sqz_type_get(4) == NULL && sqz_type_get(-1) == NULL && sqz_type_get(SQZ_TYPE_COUNT) == NULL, "unknown ids");
    CHECK(fabs(sqz_type_bpw(SQZ_TYPE_Q4_K) - 4.5) < 1e-12 && fabs(sqz_type_bpw(SQZ_TYPE_Q8_0) - 8.5) < 1e-12 &&
              fabs(sqz_type_bpw(SQZ_TYPE_Q6_K) - 6.5625) < 1e-12,
          "bpw");
    size_t rb = 0;
    sqz_err err = {{0}};
    CHECK(sqz_type_row_bytes(SQZ_TYPE_Q4_K, 512, &rb, &err) == SQZ_OK && rb == 288, "row bytes q4_k %zu", rb);
    CHECK(sqz_type_row_bytes(SQZ_TYPE_Q4_K, 576, &rb, &err) == SQZ_ERR && strstr(err.msg, "block size"),
          "576 is no multiple of 256: %s", err.msg);
    CHECK(sqz_type_row_bytes(4, 32, &rb, &err) == SQZ_ERR && strstr(err.msg, "type id 4"), "unknown id: %s", err.msg);
    CHECK(sqz_type_row_bytes(SQZ_TYPE_F32, INT64_MAX, &rb, &err) == SQZ_ERR, "row bytes overflow");

    sqz_tensor t = {0};
    CHECK(sqz_tensor_nelements(&t) == 0, "zeroed tensor has no elements");
    t.n_dims = 2;
    t.ne[0] = 3; t.ne[1] = 5; t.ne[2] = 1; t.ne[3] = 1;
    CHECK(sqz_tensor_nelements(&t) == 15, "nelements");
}

static void test_fixture(void) {
    char *gpath = tu_fixture("quant/quant_types.gguf");
    char *vpath = tu_fixture("quant/quant_types.f32");
    char *ipath = tu_fixture("quant/quant_types.txt");
    sqz_gguf g;
    sqz_err err = {{0}};
    int rc = sqz_gguf_open(&g, gpath, &err);
    CHECK(rc == SQZ_OK, "open %s: %s", gpath, err.msg);
    FILE *fv = fopen(vpath, "rb"), *fi = fopen(ipath, "r");
    CHECK(fv && fi, "fixture files %s %s", vpath, ipath);
    if (rc != SQZ_OK || !fv || !fi) goto out;
    char name[64];
    int tid, n_seen = 0;
    long long ne0, ne1, off;
    int seen_types[SQZ_TYPE_COUNT] = {0};
    while (fscanf(fi, "%63s %d %lld %lld %lld", name, &tid, &ne0, &ne1, &off) == 5) {
        n_seen++;
        const sqz_tensor *t = sqz_gguf_find_tensor(&g, name);
        CHECK(t != NULL, "tensor %s missing", name);
        if (!t) continue;
        CHECK(t->type == tid && t->ne[0] == ne0 && t->ne[1] == ne1, "%s: type %d ne %lld x %lld", name, t->type,
              (long long)t->ne[0], (long long)t->ne[1]);
        if (t->type != tid || t->ne[0] != ne0 || t->ne[1] != ne1) continue;
        size_t n = (size_t)(ne0 * ne1);
        float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        CHECK(fseek(fv, (long)off * 4, SEEK_SET) == 0 && fread(want, 4, n, fv) == n, "read reference of %s", name);
        /* all rows at once, then row by row from the middle (row offsets) */
        rc = sqz_tensor_rows_f32(t, 0, ne1, got, &err);
        CHECK(rc == SQZ_OK, "%s: %s", name, err.msg);
        int bad = 0;
        for (size_t i = 0; i < n && rc == SQZ_OK; i++)
            if (bits(got[i]) != bits(want[i])) {
                if (bad++ < 3)
                    CHECK(0, "%s[%zu]: sqz %.9g (0x%08x) vs gguf-py %.9g (0x%08x)", name, i, got[i], bits(got[i]),
                          want[i], bits(want[i]));
            }
        CHECK(bad == 0, "%s: %d values differ from gguf-py", name, bad);
        if (ne1 > 1) {
            rc = sqz_tensor_rows_f32(t, ne1 - 1, 1, got, &err);
            CHECK(rc == SQZ_OK && memcmp(got, want + (ne1 - 1) * ne0, (size_t)ne0 * 4) == 0, "%s: last row alone",
                  name);
        }
        CHECK(sqz_tensor_rows_f32(t, ne1, 1, got, &err) == SQZ_ERR && strstr(err.msg, name), "%s: row past end: %s",
              name, err.msg);
        if (tid >= 0 && tid < SQZ_TYPE_COUNT) seen_types[tid] = 1;
        free(want);
        free(got);
    }
    CHECK(n_seen == 17, "fixture index lists %d tensors", n_seen);
    int must[] = {SQZ_TYPE_F32, SQZ_TYPE_F16, SQZ_TYPE_BF16, SQZ_TYPE_Q8_0, SQZ_TYPE_Q4_0, SQZ_TYPE_Q4_1,
                  SQZ_TYPE_Q5_0, SQZ_TYPE_Q5_1, SQZ_TYPE_Q2_K, SQZ_TYPE_Q3_K, SQZ_TYPE_Q4_K, SQZ_TYPE_Q5_K,
                  SQZ_TYPE_Q6_K, SQZ_TYPE_IQ4_NL};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        CHECK(seen_types[must[i]], "type %d not covered by the fixture", must[i]);

    /* f32 -> f16/bf16 narrowing against numpy's astype(float16) and gguf-py's BF16 */
    const sqz_tensor *src = sqz_gguf_find_tensor(&g, "conv.src"), *h = sqz_gguf_find_tensor(&g, "conv.f16"),
                     *b = sqz_gguf_find_tensor(&g, "conv.bf16");
    CHECK(src && h && b, "conversion tensors present");
    if (src && h && b) {
        int64_t n = src->ne[0];
        const uint8_t *ps = src->data, *ph = h->data, *pb = b->data;
        int bad_h = 0, bad_b = 0;
        for (int64_t i = 0; i < n; i++) {
            float x;
            memcpy(&x, ps + 4 * i, 4);
            uint16_t want_h = (uint16_t)(ph[2 * i] | (ph[2 * i + 1] << 8));
            uint16_t want_b = (uint16_t)(pb[2 * i] | (pb[2 * i + 1] << 8));
            uint16_t got_h = sqz_f32_to_f16(x), got_b = sqz_f32_to_bf16(x);
            if (got_h != want_h && bad_h++ < 3)
                CHECK(0, "f32_to_f16(%.9g = 0x%08x) = 0x%04x, numpy 0x%04x", x, bits(x), got_h, want_h);
            if (got_b != want_b && bad_b++ < 3)
                CHECK(0, "f32_to_bf16(%.9g) = 0x%04x, gguf-py 0x%04x", x, got_b, want_b);
        }
        CHECK(bad_h == 0 && bad_b == 0, "%d f16 and %d bf16 narrowings differ", bad_h, bad_b);
        /* widening f16 -> f32 is checked bit-exactly above: conv.f16 dequantizes through
         * sqz_f16_to_f32 and is compared with numpy's astype(float32) */
        CHECK(isnan(sqz_f16_to_f32(sqz_f32_to_f16(NAN))) && isnan(sqz_bf16_to_f32(sqz_f32_to_bf16(NAN))),
              "NaN stays NaN");
    }
out:
    if (fv) fclose(fv);
    if (fi) fclose(fi);
    sqz_gguf_close(&g);
    free(gpath);
    free(vpath);
    free(ipath);
}

/* ---------------- --emit-read: the input of tests/py/check_read_types.py ---------------- */

/* The types sqz reads but does not write (the i-quants and ternary types): random blocks
 * with a valid f16 scale where the format keeps one, and sqz's dequantization of them. */
static const struct { int id, d_off; } kReadOnly[] = {
    {16, 0}, {17, 0}, {22, 0}, {18, 0}, {21, 0}, {19, 0}, {29, -1}, {34, 52}, {35, 64},
};

static uint16_t random_half(tu_rng *r) {
    float v = (float)((tu_urand(r) * 2.0 - 1.0) * 0.05);
    return sqz_f32_to_f16(v);
}

static int emit_read(const char *path) {
    enum { ROWS = 4, BLOCKS_PER_ROW = 8 };
    sqz_gguf_writer w;
    sqz_err err;
    tu_rng r = {99};
    sqz_gguf_writer_init(&w);
    const int n_types = (int)(sizeof kReadOnly / sizeof kReadOnly[0]);
    uint8_t *raw[16];
    float *deq[16];
    int rc = 1;
    for (int k = 0; k < n_types; k++) {
        const sqz_type_traits *tt = sqz_type_get(kReadOnly[k].id);
        const size_t nb = (size_t)ROWS * BLOCKS_PER_ROW, bytes = nb * tt->block_bytes;
        raw[k] = malloc(bytes);
        deq[k] = malloc(nb * (size_t)tt->block_size * sizeof(float));
        for (size_t i = 0; i < bytes; i++) raw[k][i] = (uint8_t)(tu_urand(&r) * 256.0);
        for (size_t b = 0; b < nb; b++) {
            uint8_t *blk = raw[k] + b * tt->block_bytes;
            const uint16_t h = random_half(&r);
            if (kReadOnly[k].d_off >= 0) {
                blk[kReadOnly[k].d_off] = (uint8_t)(h & 0xFF);
                blk[kReadOnly[k].d_off + 1] = (uint8_t)(h >> 8);
            } else { /* IQ1_M: the half's nibbles in the top nibbles of its four u16 scales */
                for (int q = 0; q < 4; q++) blk[48 + 2 * q + 1] = (uint8_t)((blk[48 + 2 * q + 1] & 0x0F) | (((h >> (4 * q)) & 0x0F) << 4));
            }
        }
        tt->dequantize(raw[k], deq[k], (int64_t)nb * tt->block_size);
        char name[64];
        int64_t ne[2] = {BLOCKS_PER_ROW * tt->block_size, ROWS};
        snprintf(name, sizeof name, "raw.%s", tt->name);
        if (sqz_gguf_add_tensor(&w, name, kReadOnly[k].id, 2, ne, &err)) goto done;
        snprintf(name, sizeof name, "deq.%s", tt->name);
        if (sqz_gguf_add_tensor(&w, name, SQZ_TYPE_F32, 2, ne, &err)) goto done;
    }
    if (sqz_gguf_write_begin(&w, path, &err)) goto done;
    for (int k = 0; k < n_types; k++) {
        const sqz_type_traits *tt = sqz_type_get(kReadOnly[k].id);
        const size_t nb = (size_t)ROWS * BLOCKS_PER_ROW;
        if (sqz_gguf_write_data(&w, raw[k], nb * tt->block_bytes, &err) ||
            sqz_gguf_write_data(&w, deq[k], nb * (size_t)tt->block_size * sizeof(float), &err))
            goto done;
    }
    rc = sqz_gguf_write_end(&w, &err) ? 1 : 0;
done:
    if (rc) fprintf(stderr, "test_types --emit-read: %s\n", err.msg);
    sqz_gguf_writer_free(&w);
    for (int k = 0; k < n_types; k++) free(raw[k]), free(deq[k]);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--emit-read") == 0) return emit_read(argv[2]);
    test_table();
    test_fixture();
    return tu_done("test_types");
}

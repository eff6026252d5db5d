/* A tiny in-memory GGUF writer for tests (header-only, static functions): builds files
 * byte by byte so tests can then break them on purpose. Records the offsets of fields
 * the tests mutate. Written from the GGUF spec, independent of src/io/gguf.c. */
#ifndef SQZ_TU_GGUF_H
#define SQZ_TU_GGUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tbuf {
    uint8_t *p;
    size_t n, cap;
} tbuf;

static inline void tb_put(tbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) abort();
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static inline void tb_u8(tbuf *b, uint8_t v) { tb_put(b, &v, 1); }
static inline void tb_u32(tbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    tb_put(b, x, 4);
}
static inline void tb_u64(tbuf *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    tb_put(b, x, 8);
}
static inline void tb_str(tbuf *b, const char *s) {
    tb_u64(b, strlen(s));
    tb_put(b, s, strlen(s));
}
static inline void tb_pad(tbuf *b, size_t align) {
    while (b->n % align) tb_u8(b, 0);
}
static inline void tb_set_u32(tbuf *b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) b->p[at + i] = (uint8_t)(v >> (8 * i));
}
static inline void tb_set_u64(tbuf *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) b->p[at + i] = (uint8_t)(v >> (8 * i));
}

/* KV helpers (types: 4 UINT32, 5 INT32, 6 FLOAT32, 8 STRING, 9 ARRAY) */
static inline void kv_u32(tbuf *b, const char *k, uint32_t v) { tb_str(b, k); tb_u32(b, 4); tb_u32(b, v); }
static inline void kv_i32(tbuf *b, const char *k, int32_t v) { tb_str(b, k); tb_u32(b, 5); tb_u32(b, (uint32_t)v); }
static inline void kv_f32(tbuf *b, const char *k, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    tb_str(b, k);
    tb_u32(b, 6);
    tb_u32(b, u);
}
static inline void kv_str(tbuf *b, const char *k, const char *v) { tb_str(b, k); tb_u32(b, 8); tb_str(b, v); }
static inline void kv_arr_i32(tbuf *b, const char *k, const int32_t *v, int n) {
    tb_str(b, k);
    tb_u32(b, 9);
    tb_u32(b, 5);
    tb_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) tb_u32(b, (uint32_t)v[i]);
}
static inline void kv_arr_str(tbuf *b, const char *k, const char *const *v, int n) {
    tb_str(b, k);
    tb_u32(b, 9);
    tb_u32(b, 8);
    tb_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) tb_str(b, v[i]);
}
/* A tensor info; returns the offset of its type field (name, n_dims, ne, TYPE, offset). */
static inline size_t ti_add(tbuf *b, const char *name, int n_dims, const int64_t *ne, uint32_t type, uint64_t offset) {
    tb_str(b, name);
    tb_u32(b, (uint32_t)n_dims);
    for (int i = 0; i < n_dims; i++) tb_u64(b, (uint64_t)ne[i]);
    size_t at = b->n;
    tb_u32(b, type);
    tb_u64(b, offset);
    return at;
}

#endif

/* Byte-level BPE (GPT-2, Llama-3, SmolLM): the text is cut into pre-tokens by the
 * pre-tokenizer's regexes, each pre-token's bytes are spelled with GPT-2's printable
 * byte alphabet, and the pair with the lowest merge rank (ties: leftmost) is merged until
 * no listed merge applies, as HF tokenizers' BPE model and llama.cpp's
 * llm_tokenizer_bpe_session do. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68
 * bytes take the code points 256, 257, ... in byte order. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (b <= 32) return 256 + b;
    if (b >= 127 && b <= 160) return 256 + 33 + (b - 127);
    if (b == 173) return 256 + 67;
    return b;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return tok_byte_to_cp((uint8_t)cp) == cp ? (int)cp : -1;
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(127 + k - 33);
    return k == 67 ? 173 : -1;
}

/* ---- pre-tokenization ---- */
typedef struct span {
    size_t a, b;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int spans_push(spans *s, size_t a, size_t b) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].a = a;
    s->v[s->n].b = b;
    s->n++;
    return 0;
}

/* Splits buf[a, b) by one regex step and appends the resulting pieces to out. */
static int split_piece(const tok_pre_step *st, const char *buf, size_t a, size_t b, pcre2_match_data *md,
                       spans *out, sqz_err *err) {
    const char *s = buf + a;
    size_t n = b - a, off = 0, last = 0;
    size_t first_out = out->n;
    int pending_next = 0; /* MERGED_NEXT: the last piece waits for the following one */
    while (off < n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, off, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sqz_fail(err, "tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* an empty match cuts nothing; step over one character */
            size_t l = tok_utf8_len((uint8_t)s[ms]);
            off = ms + (l > n - ms ? n - ms : l);
            continue;
        }
        /* segments: the gap before the match, then the match (roles swap when inverted) */
        for (int k = 0; k < 2; k++) {
            size_t x = k ? ms : last, y = k ? me : ms;
            if (y <= x) continue;
            int is_delim = k ^ st->invert;
            if (!is_delim) {
                if (pending_next) out->v[out->n - 1].b = a + y;
                else if (spans_push(out, a + x, a + y)) goto oom;
                pending_next = 0;
                continue;
            }
            switch (st->behavior) {
            case TOK_SPLIT_REMOVED:
                break;
            case TOK_SPLIT_MERGED_PREV:
                if (out->n > first_out && out->v[out->n - 1].b == a + x) out->v[out->n - 1].b = a + y;
                else if (spans_push(out, a + x, a + y)) goto oom;
                break;
            case TOK_SPLIT_MERGED_NEXT:
                if (pending_next) out->v[out->n - 1].b = a + y;
                else if (spans_push(out, a + x, a + y)) goto oom;
                pending_next = 1;
                continue;
            default:
                if (spans_push(out, a + x, a + y)) goto oom;
            }
            pending_next = 0;
        }
        last = off = me;
    }
    if (last < n) {
        int is_delim = st->invert;
        if (is_delim && st->behavior == TOK_SPLIT_REMOVED) return SQZ_OK;
        if (pending_next || (is_delim && st->behavior == TOK_SPLIT_MERGED_PREV && out->n > first_out &&
                             out->v[out->n - 1].b == a + last))
            out->v[out->n - 1].b = a + n;
        else if (spans_push(out, a + last, a + n))
            goto oom;
    }
    return SQZ_OK;
oom:
    return sqz_fail(err, "tokenizer: out of memory in the pre-tokenizer");
}

/* ---- BPE on one pre-token ---- */
typedef struct bpe_sym {
    int32_t id, prev, next;
} bpe_sym;

typedef struct bpe_pair {
    int32_t left, right, rank, lid, rid;
} bpe_pair;

typedef struct bpe_work {
    bpe_sym *sym;
    size_t sym_cap;
    bpe_pair *heap;
    size_t heap_n, heap_cap;
    char *word;
    size_t word_cap;
} bpe_work;

static int pair_better(const bpe_pair *a, const bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(bpe_work *w, bpe_pair x) {
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        bpe_pair *v = realloc(w->heap, cap * sizeof *v);
        if (!v) return -1;
        w->heap = v;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!pair_better(&x, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = x;
    return 0;
}

static bpe_pair heap_pop(bpe_work *w) {
    bpe_pair top = w->heap[0], x = w->heap[--w->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->heap_n) break;
        if (c + 1 < w->heap_n && pair_better(&w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_better(&w->heap[c], &x)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->heap_n) w->heap[i] = x;
    return top;
}

static int try_pair(const sqz_tokenizer *t, bpe_work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    int32_t a = w->sym[l].id, b = w->sym[r].id, m;
    if (a < 0 || b < 0) return 0;
    int32_t rank = tok_merge_rank(t, a, b, &m);
    if (rank < 0) return 0;
    bpe_pair p = {l, r, rank, a, b};
    return heap_push(w, p);
}

static int bpe_word(const sqz_tokenizer *t, bpe_work *w, const uint8_t *s, size_t n, tok_ids *out) {
    if (t->ignore_merges) {
        /* the whole pre-token spelled in the byte alphabet may be a vocab entry */
        if (w->word_cap < 2 * n) {
            char *p = realloc(w->word, 2 * n);
            if (!p) return -1;
            w->word = p;
            w->word_cap = 2 * n;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t cp = tok_byte_to_cp(s[i]);
            if (cp < 0x80) {
                w->word[k++] = (char)cp;
            } else {
                w->word[k++] = (char)(0xc0 | (cp >> 6));
                w->word[k++] = (char)(0x80 | (cp & 0x3f));
            }
        }
        int32_t id = tok_lookup(t, w->word, k);
        if (id >= 0) return tok_ids_push(out, id);
    }
    if (n == 1) {
        int32_t id = t->byte_char_id[s[0]] >= 0 ? t->byte_char_id[s[0]] : t->bpe_unk;
        return id >= 0 ? tok_ids_push(out, id) : 0;
    }
    if (w->sym_cap < n) {
        bpe_sym *p = realloc(w->sym, n * sizeof *p);
        if (!p) return -1;
        w->sym = p;
        w->sym_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        w->sym[i].id = t->byte_char_id[s[i]];
        w->sym[i].prev = (int32_t)i - 1;
        w->sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->heap_n = 0;
    for (size_t i = 1; i < n; i++)
        if (try_pair(t, w, (int32_t)i - 1, (int32_t)i)) return -1;
    while (w->heap_n) {
        bpe_pair p = heap_pop(w);
        bpe_sym *l = &w->sym[p.left], *r = &w->sym[p.right];
        /* stale: a side changed (ids only change by merging) or is gone */
        if (l->id != p.lid || r->id != p.rid || l->next != p.right || r->id < 0) continue;
        int32_t m;
        tok_merge_rank(t, p.lid, p.rid, &m);
        l->id = m;
        r->id = -2; /* merged away */
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = p.left;
        if (try_pair(t, w, l->prev, p.left) || try_pair(t, w, p.left, l->next)) return -1;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        int32_t id = w->sym[i].id >= 0 ? w->sym[i].id : t->bpe_unk;
        if (id >= 0 && tok_ids_push(out, id)) return -1;
    }
    return 0;
}

int tok_bpe_encode_fragment(const sqz_tokenizer *t, const char *text, size_t len, tok_ids *out, sqz_err *err) {
    spans cur = {0}, next = {0};
    char *buf = NULL;
    bpe_work w = {0};
    pcre2_match_data *md = NULL;
    int rc = SQZ_ERR;
    const char *src = text;

    if (spans_push(&cur, 0, len)) goto oom;
    for (int k = 0; k < t->n_pre; k++) {
        const tok_pre_step *st = &t->pre[k];
        next.n = 0;
        if (st->prefix_space) {
            /* ByteLevel(add_prefix_space): every piece not starting with a space gets one */
            size_t need = len + cur.n, o = 0;
            char *nb = malloc(need ? need : 1);
            if (!nb) goto oom;
            for (size_t i = 0; i < cur.n; i++) {
                size_t a = cur.v[i].a, b = cur.v[i].b, start = o;
                if (src[a] != ' ') nb[o++] = ' ';
                memcpy(nb + o, src + a, b - a);
                o += b - a;
                if (spans_push(&next, start, o)) {
                    free(nb);
                    goto oom;
                }
            }
            free(buf);
            src = buf = nb;
            len = o;
        } else {
            if (!md && !(md = pcre2_match_data_create(1, NULL))) goto oom;
            for (size_t i = 0; i < cur.n; i++)
                if (split_piece(st, src, cur.v[i].a, cur.v[i].b, md, &next, err)) goto done;
        }
        spans tmp = cur;
        cur = next;
        next = tmp;
    }
    for (size_t i = 0; i < cur.n; i++)
        if (cur.v[i].b > cur.v[i].a && bpe_word(t, &w, (const uint8_t *)src + cur.v[i].a, cur.v[i].b - cur.v[i].a, out))
            goto oom;
    rc = SQZ_OK;
    goto done;
oom:
    rc = sqz_fail(err, "tokenizer: out of memory encoding %zu bytes", len);
done:
    pcre2_match_data_free(md);
    free(cur.v);
    free(next.v);
    free(buf);
    free(w.sym);
    free(w.heap);
    free(w.word);
    return rc;
}

int tok_bpe_decode(const sqz_tokenizer *t, const int32_t *ids, int64_t n, char **text, size_t *len, sqz_err *err) {
    tok_buf b = {0};
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        int ty = t->v.types[id];
        const uint8_t *s = (const uint8_t *)t->v.tokens[id];
        size_t l = t->tok_len[id];
        if (ty == SQZ_TOKTYPE_CONTROL || ty == SQZ_TOKTYPE_UNUSED) continue;
        if (ty == SQZ_TOKTYPE_BYTE && l == 6 && memcmp(s, "<0x", 3) == 0) {
            char byte = (char)strtol((const char *)s + 3, NULL, 16);
            if (tok_buf_put(&b, &byte, 1)) goto oom;
            continue;
        }
        if (ty != SQZ_TOKTYPE_NORMAL) { /* added tokens hold their text verbatim */
            if (tok_buf_put(&b, s, l)) goto oom;
            continue;
        }
        for (size_t k = 0; k < l;) {
            size_t cl = tok_utf8_len(s[k]);
            if (cl > l - k) cl = l - k;
            uint32_t cp = cl == 1 ? s[k] : cl == 2 ? ((uint32_t)(s[k] & 0x1f) << 6) | (s[k + 1] & 0x3f) : 0xffffffffu;
            int byte = cl <= 2 ? tok_cp_to_byte(cp) : -1;
            if (byte >= 0) {
                char c = (char)byte;
                if (tok_buf_put(&b, &c, 1)) goto oom;
            } else if (tok_buf_put(&b, s + k, cl)) { /* not of the byte alphabet: keep as is */
                goto oom;
            }
            k += cl;
        }
    }
    if (!b.p && tok_buf_put(&b, "", 0)) goto oom;
    *text = b.p;
    *len = b.n;
    return SQZ_OK;
oom:
    free(b.p);
    return sqz_fail(err, "tokenizer: out of memory decoding %lld ids", (long long)n);
}

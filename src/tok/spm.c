/* SentencePiece-style BPE (Llama-2): spaces become U+2581, then adjacent pieces are merged,
 * always the pair whose merged piece has the highest score (ties: leftmost), until no
 * merged piece is in the vocab. Characters left outside the vocab fall back to <0xXX>
 * byte tokens. Follows llama.cpp's llm_tokenizer_spm_session and SentencePiece's
 * bpe_model.cc; a binary heap keeps it O(n log n). */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

typedef struct spm_sym {
    uint32_t off, n;     /* bytes of the escaped text; n = 0 once merged into its left neighbour */
    int32_t prev, next;
} spm_sym;

typedef struct spm_bigram {
    int32_t left, right;
    float score;
    uint32_t size;
} spm_bigram;

typedef struct spm_heap {
    spm_bigram *v;
    size_t n, cap;
} spm_heap;

static int bigram_better(const spm_bigram *a, const spm_bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(spm_heap *h, spm_bigram x) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        spm_bigram *v = realloc(h->v, cap * sizeof *v);
        if (!v) return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_better(&x, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = x;
    return 0;
}

static spm_bigram heap_pop(spm_heap *h) {
    spm_bigram top = h->v[0], x = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bigram_better(&h->v[c + 1], &h->v[c])) c++;
        if (!bigram_better(&h->v[c], &x)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = x;
    return top;
}

/* SentencePiece only merges into pieces it can emit: normal and user-defined ones
 * (control, unknown and byte pieces are reserved). */
static int32_t piece_id(const sqz_tokenizer *t, const char *s, size_t n) {
    int32_t id = tok_lookup(t, s, n);
    if (id < 0) return -1;
    int ty = t->v.types[id];
    return ty == SQZ_TOKTYPE_NORMAL || ty == SQZ_TOKTYPE_USER_DEFINED ? id : -1;
}

static int try_bigram(const sqz_tokenizer *t, const char *txt, const spm_sym *sym, int32_t l, int32_t r,
                      spm_heap *h) {
    if (l < 0 || r < 0) return 0;
    uint32_t size = sym[l].n + sym[r].n;
    int32_t id = piece_id(t, txt + sym[l].off, size);
    if (id < 0) return 0;
    spm_bigram b = {l, r, t->v.scores[id], size};
    return heap_push(h, b);
}

/* Collapses runs of spaces and trims them at both ends (NormalizerSpec.remove_extra_whitespaces). */
static size_t squeeze_spaces(char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' && (o == 0 || s[o - 1] == ' ')) continue;
        s[o++] = s[i];
    }
    while (o > 0 && s[o - 1] == ' ') o--;
    return o;
}

int tok_spm_encode_fragment(const sqz_tokenizer *t, const char *text, size_t len, int prefix_space,
                            tok_ids *out, sqz_err *err) {
    static const char WS[3] = {'\xe2', '\x96', '\x81'}; /* U+2581 */
    char *src = NULL, *txt = NULL;
    spm_sym *sym = NULL;
    spm_heap h = {0};
    int rc = SQZ_ERR;
    size_t cap;

    if (t->remove_extra_ws) {
        if (!(src = tok_strndup(text, len))) goto oom;
        len = squeeze_spaces(src, len);
        text = src;
        if (len == 0) {
            rc = SQZ_OK;
            goto done;
        }
    }
    /* escaped text: at most 3 bytes per input byte, plus the prefix */
    if (sqz_mul_size(len + 1, 3, &cap)) goto oom;
    if (!(txt = malloc(cap))) goto oom;
    size_t n = 0;
    if (prefix_space && t->v.add_space_prefix) {
        memcpy(txt, WS, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(txt + n, WS, 3);
            n += 3;
        } else {
            txt[n++] = text[i];
        }
    }

    /* one symbol per UTF-8 character (a stray byte is a character of its own) */
    if ((uint64_t)n > UINT32_MAX) {
        rc = sqz_fail(err, "tokenizer: text of %zu bytes is too long for one SentencePiece fragment", len);
        goto done;
    }
    if (!(sym = malloc((n ? n : 1) * sizeof *sym))) goto oom;
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t l = tok_utf8_len((uint8_t)txt[off]);
        /* a lead byte without its continuation bytes is a character of its own, so that
         * invalid UTF-8 cannot swallow the U+2581 that follows it */
        if (l > n - off) l = 1;
        for (size_t k = 1; k < l; k++)
            if (((uint8_t)txt[off + k] & 0xc0) != 0x80) l = 1;
        sym[ns].off = (uint32_t)off;
        sym[ns].n = (uint32_t)l;
        sym[ns].prev = ns - 1;
        off += l;
        sym[ns].next = off == n ? -1 : ns + 1;
        ns++;
    }
    for (int32_t i = 0, seg = 0; i <= ns; i++) {
        if (i < ns && !(sym[i].n == 1 && t->spm_split[(uint8_t)txt[sym[i].off]])) continue;
        for (int32_t j = seg + 1; j < i; j++)
            if (try_bigram(t, txt, sym, j - 1, j, &h)) goto oom;
        seg = i + 1;
        while (h.n) {
            spm_bigram b = heap_pop(&h);
            spm_sym *l = &sym[b.left], *r = &sym[b.right];
            /* stale: one side was merged away since this pair was queued */
            if (l->n == 0 || r->n == 0 || l->n + r->n != b.size || l->next != b.right) continue;
            l->n += r->n;
            r->n = 0;
            l->next = r->next;
            if (r->next >= 0) sym[r->next].prev = b.left;
            if (try_bigram(t, txt, sym, l->prev, b.left, &h)) goto oom;
            if (try_bigram(t, txt, sym, b.left, l->next, &h)) goto oom;
        }
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = sym[i].next) {
        int32_t id = piece_id(t, txt + sym[i].off, sym[i].n);
        if (id >= 0) {
            if (tok_ids_push(out, id)) goto oom;
            continue;
        }
        for (uint32_t k = 0; k < sym[i].n; k++) {
            int32_t b = t->byte_id[(uint8_t)txt[sym[i].off + k]];
            if (b < 0) {
                /* no byte fallback: the whole character is unknown */
                if (t->v.unk_id >= 0 && tok_ids_push(out, t->v.unk_id)) goto oom;
                break;
            }
            if (tok_ids_push(out, b)) goto oom;
        }
    }
    rc = SQZ_OK;
    goto done;
oom:
    rc = sqz_fail(err, "tokenizer: out of memory encoding %zu bytes", len);
done:
    free(src);
    free(txt);
    free(sym);
    free(h.v);
    return rc;
}

int tok_spm_decode(const sqz_tokenizer *t, const int32_t *ids, int64_t n, char **text, size_t *len,
                   sqz_err *err) {
    tok_buf b = {0};
    int first = 1;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        int ty = t->v.types[id];
        const char *s = t->v.tokens[id];
        if (ty == SQZ_TOKTYPE_CONTROL || ty == SQZ_TOKTYPE_UNUSED) continue;
        if (ty == SQZ_TOKTYPE_BYTE && t->tok_len[id] == 6) {
            char byte = (char)strtol(s + 3, NULL, 16);
            if (tok_buf_put(&b, &byte, 1)) goto oom;
            first = 0;
            continue;
        }
        /* the space the encoder put in front of the text is not part of it */
        if (first && ty == SQZ_TOKTYPE_NORMAL && t->v.add_space_prefix && strncmp(s, "\xe2\x96\x81", 3) == 0) s += 3;
        first = 0;
        for (; *s; s++) {
            if (strncmp(s, "\xe2\x96\x81", 3) == 0) {
                if (tok_buf_put(&b, " ", 1)) goto oom;
                s += 2;
            } else if (tok_buf_put(&b, s, 1)) {
                goto oom;
            }
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

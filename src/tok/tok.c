/* Tokenizer plumbing shared by both kinds: lookup tables, special-token splitting,
 * pre-tokenizer tables by name, encode/decode entry points. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

char *tok_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *tok_strdup(const char *s) { return tok_strndup(s, strlen(s)); }

int tok_ids_push(tok_ids *o, int32_t id) {
    if (o->n == o->cap) {
        int64_t cap = o->cap ? o->cap * 2 : 256;
        int32_t *v = realloc(o->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = id;
    return 0;
}

int tok_buf_put(tok_buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

sqz_tokenizer *tok_new(void) {
    sqz_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->v.bos_id = t->v.eos_id = t->v.unk_id = t->v.pad_id = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    t->bpe_unk = -1;
    return t;
}

int tok_alloc_tokens(sqz_tokenizer *t, int32_t n, const char *what, sqz_err *err) {
    if (n <= 0) return sqz_fail(err, "%s: vocabulary is empty", what);
    t->v.n_tokens = n;
    t->v.tokens = calloc((size_t)n, sizeof(char *));
    t->v.scores = calloc((size_t)n, sizeof(float));
    t->v.types = malloc((size_t)n * sizeof(int32_t));
    if (!t->v.tokens || !t->v.scores || !t->v.types)
        return sqz_fail(err, "%s: out of memory for %d tokens", what, (int)n);
    for (int32_t i = 0; i < n; i++) t->v.types[i] = SQZ_TOKTYPE_NORMAL;
    return SQZ_OK;
}

/* FNV-1a: token texts are short, so a simple byte hash is enough. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

int32_t tok_lookup(const sqz_tokenizer *t, const char *s, size_t len) {
    if (!t->map.slots) return -1;
    size_t i = hash_bytes(s, len) & t->map.mask;
    for (;;) {
        int32_t id = t->map.slots[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == len && memcmp(t->v.tokens[id], s, len) == 0) return id;
        i = (i + 1) & t->map.mask;
    }
}

static int build_strmap(sqz_tokenizer *t, const char *what, sqz_err *err) {
    size_t cap = 16;
    while (cap < (size_t)t->v.n_tokens * 2) cap *= 2;
    t->map.slots = malloc(cap * sizeof(int32_t));
    t->tok_len = malloc((size_t)t->v.n_tokens * sizeof(uint32_t));
    if (!t->map.slots || !t->tok_len) return sqz_fail(err, "%s: out of memory for the token map", what);
    memset(t->map.slots, 0xff, cap * sizeof(int32_t));
    t->map.mask = cap - 1;
    for (int32_t id = 0; id < t->v.n_tokens; id++) {
        const char *s = t->v.tokens[id];
        size_t len = strlen(s);
        if (len > UINT32_MAX) return sqz_fail(err, "%s: token %d is too long", what, (int)id);
        t->tok_len[id] = (uint32_t)len;
        size_t i = hash_bytes(s, len) & t->map.mask;
        /* a duplicate text maps to its last id, as llama.cpp's token_to_id does */
        while (t->map.slots[i] >= 0) {
            int32_t o = t->map.slots[i];
            if (t->tok_len[o] == len && memcmp(t->v.tokens[o], s, len) == 0) break;
            i = (i + 1) & t->map.mask;
        }
        t->map.slots[i] = id;
    }
    return SQZ_OK;
}

static int pair_find(const tok_pairmap *m, uint64_t key) {
    if (!m->keys) return -1;
    size_t i = hash_u64(key) & m->mask;
    for (;;) {
        if (m->keys[i] == UINT64_MAX) return -1;
        if (m->keys[i] == key) return (int)i;
        i = (i + 1) & m->mask;
    }
}

static int build_merges(sqz_tokenizer *t, const char *what, sqz_err *err) {
    int32_t n = t->v.n_merges;
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    tok_pairmap *m = &t->merges;
    m->keys = malloc(cap * sizeof(uint64_t));
    m->rank = malloc(cap * sizeof(int32_t));
    m->merged = malloc(cap * sizeof(int32_t));
    if (!m->keys || !m->rank || !m->merged) return sqz_fail(err, "%s: out of memory for merges", what);
    memset(m->keys, 0xff, cap * sizeof(uint64_t));
    m->mask = cap - 1;
    char *tmp = NULL;
    size_t tmp_cap = 0;
    for (int32_t r = 0; r < n; r++) {
        const char *s = t->v.merges[r];
        /* byte-level tokens never hold a plain space, so the first one separates the pair */
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1]) {
            free(tmp);
            return sqz_fail(err, "%s: merges[%d] '%s': expected \"left right\"", what, (int)r, s);
        }
        size_t ll = (size_t)(sp - s), rl = strlen(sp + 1);
        int32_t a = tok_lookup(t, s, ll), b = tok_lookup(t, sp + 1, rl);
        if (ll + rl + 1 > tmp_cap) {
            tmp_cap = (ll + rl + 1) * 2;
            char *p = realloc(tmp, tmp_cap);
            if (!p) {
                free(tmp);
                return sqz_fail(err, "%s: out of memory", what);
            }
            tmp = p;
        }
        memcpy(tmp, s, ll);
        memcpy(tmp + ll, sp + 1, rl);
        int32_t c = tok_lookup(t, tmp, ll + rl);
        /* a merge whose parts or result are not in the vocab can never apply (HF skips it too) */
        if (a < 0 || b < 0 || c < 0) continue;
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        size_t i = hash_u64(key) & m->mask;
        while (m->keys[i] != UINT64_MAX && m->keys[i] != key) i = (i + 1) & m->mask;
        if (m->keys[i] == key) continue; /* the first (lowest) rank wins */
        m->keys[i] = key;
        m->rank[i] = r;
        m->merged[i] = c;
    }
    free(tmp);
    return SQZ_OK;
}

int tok_merge_rank(const sqz_tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
    int i = pair_find(&t->merges, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
    if (i < 0) return -1;
    *merged = t->merges.merged[i];
    return t->merges.rank[i];
}

static int cmp_u64_desc(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a > b ? -1 : a < b;
}

static int is_special(const sqz_tokenizer *t, int32_t id) {
    int ty = t->v.types[id];
    if (t->tok_len[id] == 0) return 0;
    /* HF tokenizers matches every added token verbatim; SentencePiece (and llama.cpp
     * without parse_special) only the user-defined ones */
    if (ty == SQZ_TOKTYPE_USER_DEFINED) return 1;
    return t->v.kind == SQZ_TOK_BPE && ty == SQZ_TOKTYPE_CONTROL;
}

int tok_finish(sqz_tokenizer *t, const char *what, sqz_err *err) {
    sqz_vocab *v = &t->v;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (!v->tokens[i]) return sqz_fail(err, "%s: token %d has no text", what, (int)i);
        if (v->types[i] < SQZ_TOKTYPE_NORMAL || v->types[i] > SQZ_TOKTYPE_BYTE)
            return sqz_fail(err, "%s: token %d: type %d is not one of 1..6", what, (int)i, (int)v->types[i]);
    }
    int32_t *ids[4] = {&v->bos_id, &v->eos_id, &v->unk_id, &v->pad_id};
    static const char *names[4] = {"bos", "eos", "unk", "pad"};
    for (int k = 0; k < 4; k++)
        if (*ids[k] >= v->n_tokens)
            return sqz_fail(err, "%s: %s id %d is outside the vocabulary of %d tokens", what, names[k],
                            (int)*ids[k], (int)v->n_tokens);
    if (build_strmap(t, what, err)) return SQZ_ERR;
    if (v->kind == SQZ_TOK_BPE) {
        if (build_merges(t, what, err)) return SQZ_ERR;
        for (int b = 0; b < 256; b++) {
            uint32_t cp = tok_byte_to_cp((uint8_t)b);
            char u[2] = {(char)(cp < 0x80 ? cp : 0xc0 | (cp >> 6)), (char)(0x80 | (cp & 0x3f))};
            t->byte_char_id[b] = tok_lookup(t, u, cp < 0x80 ? 1 : 2);
        }
    }
    if (v->kind == SQZ_TOK_SPM) {
        for (int32_t i = 0; i < v->n_tokens; i++) {
            const char *s = v->tokens[i];
            if (v->types[i] != SQZ_TOKTYPE_BYTE || t->tok_len[i] != 6 || strncmp(s, "<0x", 3) || s[5] != '>')
                continue;
            char *end;
            long b = strtol(s + 3, &end, 16);
            if (end == s + 5 && b >= 0 && b < 256) t->byte_id[b] = i;
        }
        /* no merge can cross a character that no longer piece contains, so the text can be
         * merged in independent segments between such characters (same result, small heap) */
        for (int b = 0; b < 0x80; b++) t->spm_split[b] = 1;
        for (int32_t i = 0; i < v->n_tokens; i++) {
            int ty = v->types[i];
            if (t->tok_len[i] < 2 || (ty != SQZ_TOKTYPE_NORMAL && ty != SQZ_TOKTYPE_USER_DEFINED)) continue;
            for (uint32_t k = 0; k < t->tok_len[i]; k++) t->spm_split[(uint8_t)v->tokens[i][k]] = 0;
        }
    }
    int32_t n = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) n += is_special(t, i);
    if (n) {
        /* sort longest first (ties: lower id first) through (length, ~id) keys */
        uint64_t *keys = malloc((size_t)n * sizeof(uint64_t));
        t->special = malloc((size_t)n * sizeof(int32_t));
        if (!keys || !t->special) {
            free(keys);
            return sqz_fail(err, "%s: out of memory", what);
        }
        for (int32_t i = 0; i < v->n_tokens; i++)
            if (is_special(t, i)) {
                keys[t->n_special++] = ((uint64_t)t->tok_len[i] << 32) | (uint32_t)~(uint32_t)i;
                t->special_first[(uint8_t)v->tokens[i][0]] = 1;
            }
        qsort(keys, (size_t)n, sizeof(uint64_t), cmp_u64_desc);
        for (int32_t k = 0; k < n; k++) t->special[k] = (int32_t)~(uint32_t)(keys[k] & 0xffffffffu);
        free(keys);
    }
    return SQZ_OK;
}

/* ---- pre-tokenizers ---- */
int tok_add_regex(sqz_tokenizer *t, const char *pattern, size_t len, int literal, int behavior,
                  int invert, const char *what, sqz_err *err) {
    if (t->n_pre >= (int)(sizeof t->pre / sizeof t->pre[0]))
        return sqz_fail(err, "%s: pre_tokenizer: more than %d steps", what, (int)(sizeof t->pre / sizeof t->pre[0]));
    int ec;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &ec, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return sqz_fail(err, "%s: pre_tokenizer regex '%.*s': %s at offset %zu", what, (int)len, pattern,
                        (const char *)msg, (size_t)off);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is missing */
    tok_pre_step *s = &t->pre[t->n_pre++];
    s->re = re;
    s->behavior = behavior;
    s->invert = invert;
    s->prefix_space = 0;
    return SQZ_OK;
}

/* The pattern of HF's ByteLevel(use_regex) pre-tokenizer (GPT-2). */
static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Pre-tokenizer regexes per GGUF tokenizer.ggml.pre name, as llama.cpp's llama-vocab.cpp
 * lists them (each applied in turn to the pieces the previous one left). */
static const struct {
    const char *names;    /* space separated */
    const char *re[4];
    int ignore_merges;
} PRE_TABLE[] = {
    {"gpt2 gpt-2 phi-2 mpt olmo jais jina-es jina-de jina-v2-es jina-v2-de gigachat roberta-bpe exaone4", {RE_GPT2}, 0},
    {"llama3 llama-v3 llama-bpe falcon3 dbrx smaug-bpe", {RE_LLAMA3}, 1},
    {"smollm starcoder refact command-r codeshell exaone minerva-7b", {"\\p{N}", RE_GPT2}, 0},
    {"qwen2 deepseek-r1-qwen stablelm2", {RE_QWEN2}, 0},
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
      "\\p{N}+", "[0-9][0-9][0-9]"},
     0},
};

static int name_in(const char *names, const char *pre) {
    size_t n = strlen(pre);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, pre, n) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

int tok_set_pre_by_name(sqz_tokenizer *t, const char *pre, const char *what, sqz_err *err) {
    /* no name: GPT-2's own regex, which is what HF tokenizers applies to such vocabs */
    if (!pre || !*pre) pre = "gpt2";
    for (size_t k = 0; k < sizeof PRE_TABLE / sizeof PRE_TABLE[0]; k++) {
        if (!name_in(PRE_TABLE[k].names, pre)) continue;
        for (int j = 0; j < 4 && PRE_TABLE[k].re[j]; j++)
            if (tok_add_regex(t, PRE_TABLE[k].re[j], strlen(PRE_TABLE[k].re[j]), 0, TOK_SPLIT_ISOLATED, 0, what, err))
                return SQZ_ERR;
        t->ignore_merges = PRE_TABLE[k].ignore_merges;
        return SQZ_OK;
    }
    return sqz_fail(err, "%s: tokenizer.ggml.pre '%s' is not supported (known: gpt2, llama-bpe, smollm, qwen2, default and aliases)",
                    what, pre);
}

/* ---- public entry points ---- */
void sqz_tok_free(sqz_tokenizer *t) {
    if (!t) return;
    sqz_vocab *v = &t->v;
    if (v->tokens)
        for (int32_t i = 0; i < v->n_tokens; i++) free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    if (v->merges)
        for (int32_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->merges);
    free(v->pre);
    free(t->tok_len);
    free(t->map.slots);
    free(t->special);
    free(t->merges.keys);
    free(t->merges.rank);
    free(t->merges.merged);
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    free(t);
}

const sqz_vocab *sqz_tok_vocab(const sqz_tokenizer *t) { return &t->v; }

const char *sqz_tok_kind_name(const sqz_tokenizer *t) { return t->v.kind == SQZ_TOK_SPM ? "spm" : "bpe"; }

/* Longest special token starting at s[0], or -1. */
static int32_t match_special(const sqz_tokenizer *t, const char *s, size_t left) {
    for (int32_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        uint32_t l = t->tok_len[id];
        if (l <= left && (uint8_t)t->v.tokens[id][0] == (uint8_t)s[0] && memcmp(t->v.tokens[id], s, l) == 0)
            return id;
    }
    return -1;
}

static int encode_fragment(const sqz_tokenizer *t, const char *s, size_t n, int prefix_space, tok_ids *out,
                           sqz_err *err) {
    if (t->v.kind == SQZ_TOK_SPM) return tok_spm_encode_fragment(t, s, n, prefix_space, out, err);
    return n ? tok_bpe_encode_fragment(t, s, n, out, err) : SQZ_OK;
}

int sqz_tok_encode(const sqz_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
                   int64_t *n_ids, sqz_err *err) {
    tok_ids out = {0};
    *ids = NULL;
    *n_ids = 0;
    if (add_bos && t->v.bos_id >= 0 && tok_ids_push(&out, t->v.bos_id)) goto oom;
    /* split out special tokens first, then encode the plain text between them; SPM puts
     * its space prefix at the start and after each special token, as llama.cpp does */
    size_t start = 0;
    int prev_special = 1;
    for (size_t i = 0; i < len;) {
        int32_t id = t->special_first[(uint8_t)text[i]] ? match_special(t, text + i, len - i) : -1;
        if (id < 0) {
            i++;
            continue;
        }
        if (i > start) {
            if (encode_fragment(t, text + start, i - start, prev_special, &out, err)) goto fail;
            prev_special = 0;
        }
        if (tok_ids_push(&out, id)) goto oom;
        prev_special = 1;
        i += t->tok_len[id];
        start = i;
    }
    if (len > start && encode_fragment(t, text + start, len - start, prev_special, &out, err)) goto fail;
    if (!out.v && !(out.v = malloc(sizeof(int32_t)))) goto oom;
    *ids = out.v;
    *n_ids = out.n;
    return SQZ_OK;
oom:
    sqz_fail(err, "tokenizer: out of memory encoding %zu bytes", len);
fail:
    free(out.v);
    return SQZ_ERR;
}

int sqz_tok_decode(const sqz_tokenizer *t, const int32_t *ids, int64_t n_ids, char **text, size_t *len,
                   sqz_err *err) {
    *text = NULL;
    *len = 0;
    for (int64_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= t->v.n_tokens)
            return sqz_fail(err, "tokenizer: decode: id %d at position %lld is outside the vocabulary of %d tokens",
                            (int)ids[i], (long long)i, (int)t->v.n_tokens);
    if (t->v.kind == SQZ_TOK_SPM) return tok_spm_decode(t, ids, n_ids, text, len, err);
    return tok_bpe_decode(t, ids, n_ids, text, len, err);
}

/* Tokenizer from a SentencePiece tokenizer.model: a ModelProto protobuf, read by hand.
 *
 *   ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
 *                    NormalizerSpec normalizer_spec = 3; ... }
 *   SentencePiece  { string piece = 1; float score = 2; Type type = 3 (NORMAL = 1 ...); }
 *   TrainerSpec    { model_type = 3 (UNIGRAM = 1, BPE = 2, WORD, CHAR); byte_fallback = 35;
 *                    unk_id = 40; bos_id = 41; eos_id = 42; pad_id = 43; ... }
 *   NormalizerSpec { name = 1; precompiled_charsmap = 2; add_dummy_prefix = 3;
 *                    remove_extra_whitespaces = 4; escape_whitespaces = 5; }
 * Fields not listed are skipped. Every length is checked against the bytes left in the
 * enclosing message. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

typedef struct pb {
    const uint8_t *p;
    size_t pos, end;   /* absolute offsets in the file */
    const char *path;
    const char *msg;   /* message name, for errors */
} pb;

static int pb_varint(pb *r, uint64_t *v, sqz_err *err) {
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->pos >= r->end)
            return sqz_fail(err, "%s: %s: varint truncated at offset %zu", r->path, r->msg, r->pos);
        uint8_t b = r->p[r->pos++];
        if (shift < 64) x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return SQZ_OK;
        }
    }
    return sqz_fail(err, "%s: %s: varint longer than 10 bytes at offset %zu", r->path, r->msg, r->pos);
}

/* Reads a field key; *field = 0 at the end of the message. */
static int pb_key(pb *r, uint32_t *field, uint32_t *wire, sqz_err *err) {
    uint64_t k;
    *field = 0;
    if (r->pos >= r->end) return SQZ_OK;
    if (pb_varint(r, &k, err)) return SQZ_ERR;
    if ((k >> 3) == 0 || (k >> 3) > UINT32_MAX)
        return sqz_fail(err, "%s: %s: bad field number %llu at offset %zu", r->path, r->msg, (unsigned long long)(k >> 3), r->pos);
    *field = (uint32_t)(k >> 3);
    *wire = (uint32_t)(k & 7);
    return SQZ_OK;
}

/* A length-delimited field: the sub-range [*a, *b). */
static int pb_bytes(pb *r, size_t *a, size_t *b, const char *field, sqz_err *err) {
    uint64_t n;
    if (pb_varint(r, &n, err)) return SQZ_ERR;
    if (n > r->end - r->pos)
        return sqz_fail(err, "%s: %s.%s: length %llu exceeds the %zu bytes left in the message", r->path, r->msg, field,
                        (unsigned long long)n, r->end - r->pos);
    *a = r->pos;
    *b = r->pos + (size_t)n;
    r->pos = *b;
    return SQZ_OK;
}

static int pb_skip(pb *r, uint32_t field, uint32_t wire, sqz_err *err) {
    uint64_t v;
    size_t a, b;
    switch (wire) {
    case 0: return pb_varint(r, &v, err);
    case 1:
    case 5: {
        size_t n = wire == 1 ? 8 : 4;
        if (n > r->end - r->pos)
            return sqz_fail(err, "%s: %s: field %u truncated at offset %zu", r->path, r->msg, field, r->pos);
        r->pos += n;
        return SQZ_OK;
    }
    case 2: return pb_bytes(r, &a, &b, "(unknown field)", err);
    default:
        return sqz_fail(err, "%s: %s: field %u has wire type %u, which this reader does not know", r->path, r->msg,
                        field, wire);
    }
}

static int expect_wire(pb *r, const char *field, uint32_t wire, uint32_t want, sqz_err *err) {
    if (wire == want) return SQZ_OK;
    return sqz_fail(err, "%s: %s.%s: wire type %u, expected %u", r->path, r->msg, field, wire, want);
}

typedef struct spm_spec {
    int64_t model_type, unk_id, bos_id, eos_id, pad_id;
    int byte_fallback, add_dummy_prefix, remove_extra_ws, escape_ws, suffix_ws;
    size_t charsmap_len;
    char name[64];
} spm_spec;

static int parse_trainer(pb *r, spm_spec *s, sqz_err *err) {
    uint32_t f, w;
    uint64_t v;
    for (;;) {
        if (pb_key(r, &f, &w, err)) return SQZ_ERR;
        if (!f) return SQZ_OK;
        int64_t *dst = f == 3 ? &s->model_type : f == 40 ? &s->unk_id : f == 41 ? &s->bos_id
                     : f == 42 ? &s->eos_id : f == 43 ? &s->pad_id : NULL;
        int *flag = f == 35 ? &s->byte_fallback : f == 24 ? &s->suffix_ws : NULL;
        if (!dst && !flag) {
            if (pb_skip(r, f, w, err)) return SQZ_ERR;
            continue;
        }
        if (expect_wire(r, f == 3 ? "model_type" : "field", w, 0, err) || pb_varint(r, &v, err)) return SQZ_ERR;
        if (dst) *dst = (int64_t)(int32_t)(uint32_t)v; /* int32 fields: negatives are sign-extended */
        else *flag = v != 0;
    }
}

static int parse_normalizer(pb *r, spm_spec *s, sqz_err *err) {
    uint32_t f, w;
    uint64_t v;
    size_t a, b;
    for (;;) {
        if (pb_key(r, &f, &w, err)) return SQZ_ERR;
        if (!f) return SQZ_OK;
        if (f == 1 || f == 2) {
            if (expect_wire(r, f == 1 ? "name" : "precompiled_charsmap", w, 2, err) ||
                pb_bytes(r, &a, &b, f == 1 ? "name" : "precompiled_charsmap", err))
                return SQZ_ERR;
            if (f == 2) s->charsmap_len = b - a;
            else snprintf(s->name, sizeof s->name, "%.*s", (int)(b - a), (const char *)r->p + a);
        } else if (f >= 3 && f <= 5) {
            if (expect_wire(r, "flag", w, 0, err) || pb_varint(r, &v, err)) return SQZ_ERR;
            *(f == 3 ? &s->add_dummy_prefix : f == 4 ? &s->remove_extra_ws : &s->escape_ws) = v != 0;
        } else if (pb_skip(r, f, w, err)) {
            return SQZ_ERR;
        }
    }
}

typedef struct piece_list {
    char **text;
    float *score;
    int32_t *type;
    int32_t n, cap;
} piece_list;

static void pieces_free(piece_list *pl) {
    for (int32_t i = 0; i < pl->n; i++) free(pl->text[i]);
    free(pl->text);
    free(pl->score);
    free(pl->type);
}

static int parse_piece(pb *r, piece_list *pl, sqz_err *err) {
    if (pl->n == pl->cap) {
        if (pl->cap >= (1 << 24)) return sqz_fail(err, "%s: more than %d pieces", r->path, 1 << 24);
        int32_t cap = pl->cap ? pl->cap * 2 : 1024;
        char **t = realloc(pl->text, (size_t)cap * sizeof *t);
        if (t) pl->text = t;
        float *s = realloc(pl->score, (size_t)cap * sizeof *s);
        if (s) pl->score = s;
        int32_t *y = realloc(pl->type, (size_t)cap * sizeof *y);
        if (y) pl->type = y;
        if (!t || !s || !y) return sqz_fail(err, "%s: out of memory", r->path);
        pl->cap = cap;
    }
    int32_t i = pl->n;
    char *text = NULL;
    float score = 0;
    int64_t type = SQZ_TOKTYPE_NORMAL;
    uint32_t f, w;
    uint64_t v;
    size_t a, b;
    for (;;) {
        if (pb_key(r, &f, &w, err)) goto fail;
        if (!f) break;
        if (f == 1) {
            if (expect_wire(r, "piece", w, 2, err) || pb_bytes(r, &a, &b, "piece", err)) goto fail;
            if (memchr(r->p + a, 0, b - a)) {
                sqz_fail(err, "%s: pieces[%d].piece: contains a NUL byte", r->path, (int)i);
                goto fail;
            }
            free(text);
            if (!(text = tok_strndup((const char *)r->p + a, b - a))) {
                sqz_fail(err, "%s: out of memory", r->path);
                goto fail;
            }
        } else if (f == 2) {
            if (expect_wire(r, "score", w, 5, err)) goto fail;
            if (r->end - r->pos < 4) {
                sqz_fail(err, "%s: pieces[%d].score: truncated", r->path, (int)i);
                goto fail;
            }
            uint32_t u = (uint32_t)r->p[r->pos] | ((uint32_t)r->p[r->pos + 1] << 8) | ((uint32_t)r->p[r->pos + 2] << 16) |
                         ((uint32_t)r->p[r->pos + 3] << 24);
            memcpy(&score, &u, 4);
            r->pos += 4;
        } else if (f == 3) {
            if (expect_wire(r, "type", w, 0, err) || pb_varint(r, &v, err)) goto fail;
            type = (int64_t)v;
            if (type < SQZ_TOKTYPE_NORMAL || type > SQZ_TOKTYPE_BYTE) {
                sqz_fail(err, "%s: pieces[%d].type: %lld is not one of 1..6", r->path, (int)i, (long long)type);
                goto fail;
            }
        } else if (pb_skip(r, f, w, err)) {
            goto fail;
        }
    }
    if (!text) {
        sqz_fail(err, "%s: pieces[%d].piece: missing", r->path, (int)i);
        goto fail;
    }
    pl->text[i] = text;
    pl->score[i] = score;
    pl->type[i] = (int32_t)type;
    pl->n++;
    return SQZ_OK;
fail:
    free(text);
    return SQZ_ERR;
}

int sqz_tok_load_spm_model(sqz_tokenizer **out, const char *path, sqz_err *err) {
    sqz_map m = {0};
    piece_list pl = {0};
    sqz_tokenizer *t = NULL;
    spm_spec s = {.model_type = 1, .unk_id = 0, .bos_id = 1, .eos_id = 2, .pad_id = -1,
                  .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    *out = NULL;
    if (sqz_map_open(&m, path, err)) return SQZ_ERR;
    pb r = {m.data, 0, m.size, path, "ModelProto"};
    int n_trainer = 0;
    for (;;) {
        uint32_t f, w;
        size_t a, b;
        if (pb_key(&r, &f, &w, err)) goto fail;
        if (!f) break;
        if (f >= 1 && f <= 3) {
            static const char *names[] = {"", "pieces", "trainer_spec", "normalizer_spec"};
            if (expect_wire(&r, names[f], w, 2, err) || pb_bytes(&r, &a, &b, names[f], err)) goto fail;
            pb sub = {m.data, a, b, path, names[f]};
            int rc = f == 1 ? parse_piece(&sub, &pl, err) : f == 2 ? parse_trainer(&sub, &s, err)
                                                                   : parse_normalizer(&sub, &s, err);
            if (rc) goto fail;
            n_trainer += f == 2;
        } else if (pb_skip(&r, f, w, err)) {
            goto fail;
        }
    }
    if (pl.n == 0) {
        sqz_fail(err, "%s: pieces: none (not a SentencePiece model?)", path);
        goto fail;
    }
    if (s.model_type != 2) {
        static const char *kinds[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        sqz_fail(err, "%s: trainer_spec.model_type: %s is not supported (only BPE)%s", path,
                 s.model_type >= 1 && s.model_type <= 4 ? kinds[s.model_type] : "unknown",
                 n_trainer ? "" : " (no trainer_spec: the default is UNIGRAM)");
        goto fail;
    }
    if (s.charsmap_len) {
        sqz_fail(err, "%s: normalizer_spec.precompiled_charsmap: normalization rules ('%s') are not supported", path, s.name);
        goto fail;
    }
    if (!s.escape_ws || s.suffix_ws) {
        sqz_fail(err, "%s: normalizer_spec: %s is not supported", path,
                 !s.escape_ws ? "escape_whitespaces = false" : "treat_whitespace_as_suffix");
        goto fail;
    }
    if (!(t = tok_new())) {
        sqz_fail(err, "%s: out of memory", path);
        goto fail;
    }
    t->v.kind = SQZ_TOK_SPM;
    /* the arrays move into the vocab */
    t->v.n_tokens = pl.n;
    t->v.tokens = pl.text;
    t->v.scores = pl.score;
    t->v.types = pl.type;
    pl = (piece_list){0};
    int64_t ids[4] = {s.bos_id, s.eos_id, s.unk_id, s.pad_id};
    static const char *idn[4] = {"bos_id", "eos_id", "unk_id", "pad_id"};
    int32_t *dst[4] = {&t->v.bos_id, &t->v.eos_id, &t->v.unk_id, &t->v.pad_id};
    for (int k = 0; k < 4; k++) {
        if (ids[k] < -1 || ids[k] >= t->v.n_tokens) {
            sqz_fail(err, "%s: trainer_spec.%s: %lld is outside the %d pieces", path, idn[k], (long long)ids[k],
                     (int)t->v.n_tokens);
            goto fail;
        }
        *dst[k] = (int32_t)ids[k];
    }
    t->v.add_bos = t->v.bos_id >= 0; /* Llama convention; SentencePiece itself never adds it */
    t->v.add_space_prefix = s.add_dummy_prefix;
    t->remove_extra_ws = s.remove_extra_ws;
    if (tok_finish(t, path, err)) goto fail;
    if (!s.byte_fallback)
        for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    sqz_map_close(&m);
    *out = t;
    return SQZ_OK;
fail:
    pieces_free(&pl);
    sqz_tok_free(t);
    sqz_map_close(&m);
    return SQZ_ERR;
}

/* Private to src/tok: the tokenizer object shared by the loaders and the encoders. */
#ifndef SQZ_TOK_IMPL_H
#define SQZ_TOK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "sqz/tok.h"

/* How a Split pre-tokenizer treats the pieces its pattern matches (HF tokenizers'
 * SplitDelimiterBehavior). */
enum { TOK_SPLIT_ISOLATED = 0, TOK_SPLIT_REMOVED, TOK_SPLIT_MERGED_PREV, TOK_SPLIT_MERGED_NEXT };

/* One pre-tokenizer step: split every current piece with a regex, or (prefix_space)
 * give every piece a leading space, as ByteLevel(add_prefix_space) does. */
typedef struct tok_pre_step {
    pcre2_code *re;       /* NULL for a prefix-space step */
    int behavior;         /* TOK_SPLIT_* */
    int invert;           /* the pattern matches the pieces to keep, not the delimiters */
    int prefix_space;
} tok_pre_step;

/* Open-addressing hash from token text to id. */
typedef struct tok_strmap {
    int32_t *slots; /* -1 empty */
    size_t mask;
} tok_strmap;

/* Open-addressing hash from a (left id, right id) pair to its merge rank and result. */
typedef struct tok_pairmap {
    uint64_t *keys; /* UINT64_MAX empty */
    int32_t *rank;
    int32_t *merged;
    size_t mask;
} tok_pairmap;

struct sqz_tokenizer {
    sqz_vocab v;
    uint32_t *tok_len;       /* byte length of every token text */
    tok_strmap map;
    int32_t byte_id[256];    /* SPM: <0xXX> tokens; -1 when absent */
    /* tokens matched verbatim before any splitting, longest first */
    int32_t n_special;
    int32_t *special;
    uint8_t special_first[256]; /* 1 when some special token starts with this byte */
    /* BPE */
    tok_pairmap merges;
    int n_pre;
    tok_pre_step pre[8];
    int ignore_merges;       /* a pre-token that is a whole vocab entry is taken as is (Llama-3) */
    int32_t byte_char_id[256]; /* id of the one-character token of each byte's code point, or -1 */
    int32_t bpe_unk;         /* emitted for a byte whose character is not in the vocab; -1: dropped (HF) */
    /* SPM */
    int remove_extra_ws;     /* SentencePiece normalizer: collapse whitespace runs */
    uint8_t spm_split[256];  /* ASCII bytes no multi-character piece contains: merges never cross them */
};

/* ---- tok.c: shared plumbing ---- */
/* Allocates a zeroed tokenizer with ids set to -1. */
sqz_tokenizer *tok_new(void);
/* Allocates the token arrays of t->v for n tokens (texts NULL, scores 0, types NORMAL). */
int tok_alloc_tokens(sqz_tokenizer *t, int32_t n, const char *what, sqz_err *err);
/* Builds the lookup tables once the vocab is filled in; `what` names the source in errors. */
int tok_finish(sqz_tokenizer *t, const char *what, sqz_err *err);
int32_t tok_lookup(const sqz_tokenizer *t, const char *s, size_t len);
/* Rank of the merge (a, b) and the id it makes (*merged), or -1 when there is none. */
int tok_merge_rank(const sqz_tokenizer *t, int32_t a, int32_t b, int32_t *merged);
/* Adds a compiled pattern step (PCRE2, UTF + UCP). */
int tok_add_regex(sqz_tokenizer *t, const char *pattern, size_t len, int literal, int behavior,
                  int invert, const char *what, sqz_err *err);
/* Sets the pre-tokenizer steps that llama.cpp associates with a GGUF pre name. */
int tok_set_pre_by_name(sqz_tokenizer *t, const char *pre, const char *what, sqz_err *err);
char *tok_strdup(const char *s);
char *tok_strndup(const char *s, size_t n);

/* A growable id buffer. */
typedef struct tok_ids {
    int32_t *v;
    int64_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *o, int32_t id);

/* ---- spm.c / bpe.c: encoding of one fragment of plain text (no special tokens) ---- */
int tok_spm_encode_fragment(const sqz_tokenizer *t, const char *text, size_t len, int prefix_space,
                            tok_ids *out, sqz_err *err);
int tok_bpe_encode_fragment(const sqz_tokenizer *t, const char *text, size_t len, tok_ids *out,
                            sqz_err *err);
int tok_spm_decode(const sqz_tokenizer *t, const int32_t *ids, int64_t n, char **text, size_t *len,
                   sqz_err *err);
int tok_bpe_decode(const sqz_tokenizer *t, const int32_t *ids, int64_t n, char **text, size_t *len,
                   sqz_err *err);
/* GPT-2's byte <-> printable code point table. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 when cp is not one of the 256 */

/* A growable byte buffer. */
typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;
int tok_buf_put(tok_buf *b, const void *s, size_t n);

/* Length of the UTF-8 sequence that starts with byte c (1 for stray bytes), llama.cpp style. */
static inline size_t tok_utf8_len(uint8_t c) {
    static const uint8_t lut[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lut[c >> 4];
}

#endif

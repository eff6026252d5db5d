/* Tokenizers: SentencePiece-style BPE (Llama-2 `tokenizer.model`, GGUF "llama" vocab) and
 * byte-level BPE (GPT-2 / Llama-3 / SmolLM `tokenizer.json`, GGUF "gpt2" vocab).
 *
 * Both kinds keep their vocabulary in one plain struct (sqz_vocab) so that it can be
 * written back into GGUF metadata unchanged. */
#ifndef SQZ_TOK_H
#define SQZ_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "sqz/core.h"
#include "sqz/io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sqz_tok_kind { SQZ_TOK_SPM = 1, SQZ_TOK_BPE = 2 } sqz_tok_kind;

/* Token types, as GGUF's tokenizer.ggml.token_type stores them. */
enum {
    SQZ_TOKTYPE_NORMAL = 1, SQZ_TOKTYPE_UNKNOWN = 2, SQZ_TOKTYPE_CONTROL = 3,
    SQZ_TOKTYPE_USER_DEFINED = 4, SQZ_TOKTYPE_UNUSED = 5, SQZ_TOKTYPE_BYTE = 6
};

typedef struct sqz_vocab {
    int kind;             /* sqz_tok_kind */
    int32_t n_tokens;
    char **tokens;        /* token text as GGUF stores it (SPM: with U+2581; BPE: byte-level chars) */
    float *scores;        /* n_tokens (SPM merge priority; 0 for BPE) */
    int32_t *types;       /* n_tokens, SQZ_TOKTYPE_* */
    int32_t n_merges;     /* BPE only */
    char **merges;        /* "left right" */
    char *pre;            /* pre-tokenizer name as in GGUF tokenizer.ggml.pre ("gpt2", "smollm", "llama-bpe", ...) or NULL */
    int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos;          /* whether encoding a document starts with BOS */
    int add_space_prefix; /* SPM: prepend a space to the text (Llama-2: yes) */
} sqz_vocab;

typedef struct sqz_tokenizer sqz_tokenizer;

/* From GGUF metadata (tokenizer.ggml.*). */
int sqz_tok_load_gguf(sqz_tokenizer **out, const sqz_gguf *g, sqz_err *err);
/* From a Hugging Face tokenizer.json (byte-level BPE; tokenizer_config.json beside it, if
 * present, supplies add_bos). */
int sqz_tok_load_hf_json(sqz_tokenizer **out, const char *path, sqz_err *err);
/* From a SentencePiece tokenizer.model (protobuf). */
int sqz_tok_load_spm_model(sqz_tokenizer **out, const char *path, sqz_err *err);
/* From a Hugging Face folder: tokenizer.json if present, else tokenizer.model. Fails with
 * a message naming the folder when neither exists. */
int sqz_tok_load_dir(sqz_tokenizer **out, const char *dir, sqz_err *err);
void sqz_tok_free(sqz_tokenizer *t);

const sqz_vocab *sqz_tok_vocab(const sqz_tokenizer *t);
const char *sqz_tok_kind_name(const sqz_tokenizer *t); /* "spm" or "bpe" */

/* Encodes len bytes of UTF-8 text (invalid UTF-8 is encoded byte-wise, never rejected);
 * adds BOS first when add_bos is set and the vocab has one. *ids is malloc'd. */
int sqz_tok_encode(const sqz_tokenizer *t, const char *text, size_t len, int add_bos,
                   int32_t **ids, int64_t *n_ids, sqz_err *err);
/* Decodes ids to text (control tokens are skipped); *text is malloc'd and NUL-terminated. */
int sqz_tok_decode(const sqz_tokenizer *t, const int32_t *ids, int64_t n_ids,
                   char **text, size_t *len, sqz_err *err);

#ifdef __cplusplus
}
#endif
#endif

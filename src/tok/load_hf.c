/* Tokenizer from a Hugging Face tokenizer.json (byte-level BPE), with tokenizer_config.json
 * beside it for BOS/EOS and add_bos; and sqz_tok_load_dir, which picks the file. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

#define MAX_JSON_BYTES ((size_t)1 << 30)
#define MAX_TOKENS (1 << 24)

/* Patterns of the pre-tokenizers that have a GGUF name (see tok.c), as tokenizer.json
 * writes them. */
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct pre_parse {
    const char *path;
    char sig[64]; /* what was seen, to name the pre-tokenizer: d=Digits(individual) b=ByteLevel(regex)
                     B=ByteLevel(no regex) l=llama3 split q=qwen2 split s=other split */
    int byte_level;
} pre_parse;

static void sig_add(pre_parse *pp, char c) {
    size_t n = strlen(pp->sig);
    if (n + 1 < sizeof pp->sig) {
        pp->sig[n] = c;
        pp->sig[n + 1] = 0;
    }
}

static int json_bool(const cJSON *o, const char *key, int dflt) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(x) ? cJSON_IsTrue(x) : dflt;
}

static int parse_pre(sqz_tokenizer *t, const cJSON *p, pre_parse *pp, const char *where, sqz_err *err) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(type)) return sqz_fail(err, "%s: %s.type: expected a string", pp->path, where);
    const char *ty = type->valuestring;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(arr)) return sqz_fail(err, "%s: %s.pretokenizers: expected an array", pp->path, where);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char w[96];
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i);
            if (!cJSON_IsObject(c)) return sqz_fail(err, "%s: %s: expected an object", pp->path, w);
            if (parse_pre(t, c, pp, w, err)) return SQZ_ERR;
        }
        return SQZ_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        /* HF's defaults for absent fields: add_prefix_space true, use_regex true */
        if (json_bool(p, "add_prefix_space", 1)) {
            if (t->n_pre >= (int)(sizeof t->pre / sizeof t->pre[0]))
                return sqz_fail(err, "%s: %s: too many pre-tokenizer steps", pp->path, where);
            memset(&t->pre[t->n_pre], 0, sizeof t->pre[0]);
            t->pre[t->n_pre++].prefix_space = 1;
            sig_add(pp, 'p');
        }
        int re = json_bool(p, "use_regex", 1);
        if (re && tok_add_regex(t, RE_GPT2, strlen(RE_GPT2), 0, TOK_SPLIT_ISOLATED, 0, pp->path, err)) return SQZ_ERR;
        sig_add(pp, re ? 'b' : 'B');
        pp->byte_level = 1;
        return SQZ_OK;
    }
    if (strcmp(ty, "Digits") == 0) {
        int ind = json_bool(p, "individual_digits", 0);
        /* HF splits on char::is_numeric, i.e. the Unicode N categories */
        const char *re = ind ? "\\p{N}" : "\\p{N}+";
        if (tok_add_regex(t, re, strlen(re), 0, TOK_SPLIT_ISOLATED, 0, pp->path, err)) return SQZ_ERR;
        sig_add(pp, ind ? 'd' : 'D');
        return SQZ_OK;
    }
    if (strcmp(ty, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(rx) && !cJSON_IsString(str))
            return sqz_fail(err, "%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", pp->path, where);
        if (!cJSON_IsString(beh)) return sqz_fail(err, "%s: %s.behavior: expected a string", pp->path, where);
        static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"};
        int b = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(beh->valuestring, names[k]) == 0) b = k;
        if (b < 0)
            return sqz_fail(err, "%s: %s.behavior: '%s' is not supported (Isolated, Removed, MergedWithPrevious, MergedWithNext)",
                            pp->path, where, beh->valuestring);
        const char *s = rx ? rx->valuestring : str->valuestring;
        if (tok_add_regex(t, s, strlen(s), !rx, b, json_bool(p, "invert", 0), pp->path, err)) return SQZ_ERR;
        sig_add(pp, rx && b == 0 && strcmp(s, RE_LLAMA3) == 0 ? 'l' : rx && b == 0 && strcmp(s, RE_QWEN2) == 0 ? 'q' : 's');
        return SQZ_OK;
    }
    return sqz_fail(err, "%s: %s: pre-tokenizer type '%s' is not supported (ByteLevel, Split, Digits, Sequence)", pp->path,
                    where, ty);
}

/* A token given by text ("<s>") or by an AddedToken object ({"content": "<s>"}). */
static int32_t token_ref(const sqz_tokenizer *t, const cJSON *x) {
    if (cJSON_IsObject(x)) x = cJSON_GetObjectItemCaseSensitive(x, "content");
    if (!cJSON_IsString(x)) return -1;
    return tok_lookup(t, x->valuestring, strlen(x->valuestring));
}

/* Reads tokenizer_config.json in dir, if present, for BOS/EOS/UNK/PAD and add_bos_token. */
static int read_config(sqz_tokenizer *t, const char *dir, sqz_err *err) {
    char *path = sqz_path_join(dir, "tokenizer_config.json");
    if (!path) return sqz_fail(err, "%s: out of memory", dir);
    if (!sqz_path_exists(path)) {
        free(path);
        return SQZ_OK;
    }
    char *buf = NULL;
    size_t len = 0;
    if (sqz_read_file(path, MAX_JSON_BYTES, &buf, &len, err)) {
        free(path);
        return SQZ_ERR;
    }
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        sqz_fail(err, "%s: not a JSON object", path);
        free(path);
        return SQZ_ERR;
    }
    static const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t *ids[4] = {&t->v.bos_id, &t->v.eos_id, &t->v.unk_id, &t->v.pad_id};
    for (int k = 0; k < 4; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (!x || cJSON_IsNull(x)) continue;
        int32_t id = token_ref(t, x);
        if (id < 0) {
            sqz_fail(err, "%s: %s: not a string naming a token of the vocabulary", path, keys[k]);
            cJSON_Delete(root);
            free(path);
            return SQZ_ERR;
        }
        *ids[k] = id;
    }
    t->v.add_bos = json_bool(root, "add_bos_token", t->v.add_bos);
    cJSON_Delete(root);
    free(path);
    return SQZ_OK;
}

static char *dir_of(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? tok_strndup(path, (size_t)(s - path)) : tok_strdup(".");
}

/* The first SpecialToken of a TemplateProcessing "single" template is the BOS. */
static void read_post_processor(sqz_tokenizer *t, const cJSON *pp) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
    if (!cJSON_IsString(type)) return;
    if (strcmp(type->valuestring, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        for (const cJSON *c = arr ? arr->child : NULL; c; c = c->next) read_post_processor(t, c);
        return;
    }
    if (strcmp(type->valuestring, "TemplateProcessing") != 0) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(sp, "id");
    if (cJSON_IsString(id)) {
        int32_t b = tok_lookup(t, id->valuestring, strlen(id->valuestring));
        if (b >= 0) {
            t->v.bos_id = b;
            t->v.add_bos = 1;
        }
    }
}

static int set_token(sqz_tokenizer *t, int32_t id, const char *s, int type) {
    char *c = tok_strdup(s);
    if (!c) return -1;
    free(t->v.tokens[id]);
    t->v.tokens[id] = c;
    t->v.types[id] = type;
    return 0;
}

static int json_id(const cJSON *x, int32_t *id) {
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= MAX_TOKENS || x->valuedouble != (double)(int32_t)x->valuedouble)
        return -1;
    *id = (int32_t)x->valuedouble;
    return 0;
}

int sqz_tok_load_hf_json(sqz_tokenizer **out, const char *path, sqz_err *err) {
    char *buf = NULL, *dir = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    sqz_tokenizer *t = NULL;
    *out = NULL;
    if (sqz_read_file(path, MAX_JSON_BYTES, &buf, &len, err)) return SQZ_ERR;
    root = cJSON_ParseWithLength(buf, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t at = e && e >= buf && e <= buf + len ? (size_t)(e - buf) : 0;
        sqz_fail(err, "%s: not valid JSON (error near byte %zu)", path, at);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        sqz_fail(err, "%s: expected a JSON object at the top level", path);
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        sqz_fail(err, "%s: model: missing or not an object", path);
        goto fail;
    }
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (mtype && (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") != 0)) {
        sqz_fail(err, "%s: model.type: '%s' is not supported (only BPE)", path,
                 cJSON_IsString(mtype) ? mtype->valuestring : "?");
        goto fail;
    }
    if (json_bool(model, "byte_fallback", 0)) {
        sqz_fail(err, "%s: model.byte_fallback: SentencePiece-style BPE in tokenizer.json is not supported "
                      "(use the folder's tokenizer.model)", path);
        goto fail;
    }
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(norm, "type");
        sqz_fail(err, "%s: normalizer: type '%s' is not supported (only null)", path,
                 cJSON_IsString(nt) ? nt->valuestring : "?");
        goto fail;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) {
        sqz_fail(err, "%s: model.vocab: missing or not an object", path);
        goto fail;
    }
    if (!cJSON_IsArray(merges)) {
        sqz_fail(err, "%s: model.merges: missing or not an array", path);
        goto fail;
    }
    if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added)) {
        sqz_fail(err, "%s: added_tokens: expected an array", path);
        goto fail;
    }
    /* the vocab size is one past the largest id of the vocab and the added tokens */
    int32_t n = 0, id = 0;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        if (json_id(c, &id)) {
            sqz_fail(err, "%s: model.vocab['%s']: expected an id in 0..%d", path, c->string, MAX_TOKENS - 1);
            goto fail;
        }
        if (id + 1 > n) n = id + 1;
    }
    int ai = 0;
    for (const cJSON *c = cJSON_IsArray(added) ? added->child : NULL; c; c = c->next, ai++) {
        if (json_id(cJSON_GetObjectItemCaseSensitive(c, "id"), &id) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "content"))) {
            sqz_fail(err, "%s: added_tokens[%d]: expected {\"id\": 0..%d, \"content\": string}", path, ai, MAX_TOKENS - 1);
            goto fail;
        }
        if (id + 1 > n) n = id + 1;
    }
    if (!(t = tok_new())) goto oom;
    t->v.kind = SQZ_TOK_BPE;
    if (tok_alloc_tokens(t, n, path, err)) goto fail;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        json_id(c, &id);
        if (t->v.tokens[id]) {
            sqz_fail(err, "%s: model.vocab: id %d is given to both '%s' and '%s'", path, (int)id, t->v.tokens[id], c->string);
            goto fail;
        }
        if (set_token(t, id, c->string, SQZ_TOKTYPE_NORMAL)) goto oom;
    }
    for (const cJSON *c = cJSON_IsArray(added) ? added->child : NULL; c; c = c->next) {
        json_id(cJSON_GetObjectItemCaseSensitive(c, "id"), &id);
        int special = json_bool(c, "special", 0);
        const char *content = cJSON_GetObjectItemCaseSensitive(c, "content")->valuestring;
        if (set_token(t, id, content, special ? SQZ_TOKTYPE_CONTROL : SQZ_TOKTYPE_USER_DEFINED)) goto oom;
    }
    /* ids nobody names get a placeholder, as llama.cpp's converter writes them */
    for (int32_t i = 0; i < n; i++)
        if (!t->v.tokens[i]) {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "[PAD%d]", (int)i);
            if (set_token(t, i, tmp, SQZ_TOKTYPE_UNUSED)) goto oom;
        }
    int nm = cJSON_GetArraySize(merges);
    t->v.n_merges = nm;
    if (!(t->v.merges = calloc(nm ? (size_t)nm : 1, sizeof(char *)))) goto oom;
    int mi = 0;
    for (const cJSON *c = merges->child; c; c = c->next, mi++) {
        if (cJSON_IsString(c)) {
            if (!(t->v.merges[mi] = tok_strdup(c->valuestring))) goto oom;
        } else if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 && cJSON_IsString(c->child) &&
                   cJSON_IsString(c->child->next)) {
            size_t a = strlen(c->child->valuestring), b = strlen(c->child->next->valuestring);
            char *m = malloc(a + b + 2);
            if (!m) goto oom;
            memcpy(m, c->child->valuestring, a);
            m[a] = ' ';
            memcpy(m + a + 1, c->child->next->valuestring, b + 1);
            t->v.merges[mi] = m;
        } else {
            sqz_fail(err, "%s: model.merges[%d]: expected \"left right\" or [left, right]", path, mi);
            goto fail;
        }
    }
    t->ignore_merges = json_bool(model, "ignore_merges", 0);

    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    pre_parse pp = {path, {0}, 0};
    if (pre && !cJSON_IsNull(pre) && parse_pre(t, pre, &pp, "pre_tokenizer", err)) goto fail;
    if (!pp.byte_level) {
        sqz_fail(err, "%s: pre_tokenizer: no ByteLevel step, so this is not a byte-level BPE tokenizer", path);
        goto fail;
    }
    const char *name = strcmp(pp.sig, "b") == 0 ? "gpt2"
                     : strcmp(pp.sig, "db") == 0 ? "smollm"
                     : strcmp(pp.sig, "lB") == 0 ? "llama-bpe"
                     : strcmp(pp.sig, "qB") == 0 ? "qwen2" : NULL;
    if (name && !(t->v.pre = tok_strdup(name))) goto oom;
    if (tok_finish(t, path, err)) goto fail;

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) t->v.unk_id = t->bpe_unk = tok_lookup(t, unk->valuestring, strlen(unk->valuestring));
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (post) read_post_processor(t, post);
    if (!(dir = dir_of(path))) goto oom;
    if (read_config(t, dir, err)) goto fail;
    free(dir);
    free(buf);
    cJSON_Delete(root);
    *out = t;
    return SQZ_OK;
oom:
    sqz_fail(err, "%s: out of memory reading the tokenizer", path);
fail:
    free(dir);
    free(buf);
    cJSON_Delete(root);
    sqz_tok_free(t);
    return SQZ_ERR;
}

int sqz_tok_load_dir(sqz_tokenizer **out, const char *dir, sqz_err *err) {
    *out = NULL;
    if (!sqz_path_is_dir(dir)) return sqz_fail(err, "%s: not a folder", dir);
    char *js = sqz_path_join(dir, "tokenizer.json"), *sp = sqz_path_join(dir, "tokenizer.model");
    int rc = SQZ_ERR;
    if (!js || !sp) {
        rc = sqz_fail(err, "%s: out of memory", dir);
    } else if (sqz_path_exists(js)) {
        rc = sqz_tok_load_hf_json(out, js, err);
        /* a SentencePiece-style tokenizer.json usually ships with its tokenizer.model */
        if (rc != SQZ_OK && sqz_path_exists(sp)) {
            sqz_err e2;
            if (sqz_tok_load_spm_model(out, sp, &e2) == SQZ_OK) rc = SQZ_OK;
        }
    } else if (sqz_path_exists(sp)) {
        rc = sqz_tok_load_spm_model(out, sp, err);
    } else {
        rc = sqz_fail(err, "%s: no tokenizer.json or tokenizer.model in this folder", dir);
    }
    free(js);
    free(sp);
    return rc;
}

/* Llama config from config.json and from GGUF metadata: good configs (stories260K's
 * real config.json, whose values its README lists; minimal configs for transformers'
 * LlamaConfig defaults; GGUFs built in memory, llama and deci), then each bad case with
 * a check that the message names the field. */
#include <math.h>
#include <string.h>

#include "sqz/io.h"
#include "sqz/model.h"
#include "testutil.h"
#include "tu_gguf.h"

static int hf(sqz_llama_config *c, const char *json, sqz_err *err) {
    return sqz_config_from_hf_json(c, json, strlen(json), "cfg.json", err);
}

static void expect_hf_fail(const char *json, const char *want, const char *label) {
    sqz_llama_config c;
    sqz_err err = {{0}};
    int rc = hf(&c, json, &err);
    CHECK(rc == SQZ_ERR, "%s: should fail", label);
    if (rc == SQZ_ERR) {
        CHECK(strstr(err.msg, "cfg.json") && strstr(err.msg, want), "%s: message '%s' lacks '%s'", label, err.msg, want);
        CHECK(c.layer_n_head == NULL, "%s: nothing allocated on failure", label);
    }
    sqz_config_free(&c);
}

static void test_stories(void) {
    char *p = tu_shared("models/stories260K/config.json");
    char *text = NULL;
    size_t len = 0;
    sqz_err err = {{0}};
    CHECK(sqz_read_file(p, 1 << 20, &text, &len, &err) == SQZ_OK, "read %s: %s", p, err.msg);
    sqz_llama_config c;
    int rc = text ? sqz_config_from_hf_json(&c, text, len, p, &err) : SQZ_ERR;
    CHECK(rc == SQZ_OK, "stories260K config: %s", err.msg);
    if (rc == SQZ_OK) {
        /* ../shared/models/README.md: dim 64, FFN 172, 5 layers, 8 heads, 4 kv heads, head_dim 8,
         * vocab 512, max_seq_len 512, tied, eps 1e-5, theta 10000 */
        CHECK(c.dim == 64 && c.n_ff == 172 && c.n_layer == 5 && c.n_head == 8 && c.n_head_kv == 4 && c.head_dim == 8,
              "shapes");
        CHECK(c.n_vocab == 512 && c.n_ctx_train == 512 && c.tie_embeddings == 1, "vocab/ctx/tie");
        CHECK(c.norm_eps == 1e-5f && c.rope_theta == 10000.0f, "eps %g theta %g", (double)c.norm_eps,
              (double)c.rope_theta);
        CHECK(c.bos_id == 1 && c.eos_id == 2 && c.rope_mode == SQZ_ROPE_HALF, "ids and rope mode");
        int ok = 1;
        for (int l = 0; l < c.n_layer; l++)
            ok &= c.layer_n_head[l] == 8 && c.layer_n_head_kv[l] == 4 && c.layer_n_ff[l] == 172;
        CHECK(ok, "per-layer arrays filled");
    }
    sqz_config_free(&c);
    sqz_config_free(&c);
    free(text);
    free(p);
}

static void test_hf_defaults(void) {
    sqz_llama_config c;
    sqz_err err = {{0}};
    /* transformers' LlamaConfig defaults: kv heads = heads, head_dim = hidden/heads,
     * rope_theta 10000, rms_norm_eps 1e-6, max_position_embeddings 2048, untied */
    int rc = hf(&c,
                "{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,\"num_hidden_layers\":2,"
                "\"num_attention_heads\":4,\"vocab_size\":100}",
                &err);
    CHECK(rc == SQZ_OK, "minimal: %s", err.msg);
    if (rc == SQZ_OK)
        CHECK(c.n_head_kv == 4 && c.head_dim == 32 && c.rope_theta == 10000.0f && c.norm_eps == 1e-6f &&
                  c.n_ctx_train == 2048 && c.tie_embeddings == 0 && c.bos_id == -1 && c.eos_id == -1,
              "defaults: kv %d hd %d theta %g eps %g ctx %d tie %d bos %d eos %d", c.n_head_kv, c.head_dim,
              (double)c.rope_theta, (double)c.norm_eps, c.n_ctx_train, c.tie_embeddings, c.bos_id, c.eos_id);
    sqz_config_free(&c);
    /* transformers 5 style: rope_parameters; eos as a list; explicit nulls */
    rc = hf(&c,
            "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":96,\"intermediate_size\":256,"
            "\"num_hidden_layers\":3,\"num_attention_heads\":6,\"num_key_value_heads\":2,\"head_dim\":32,"
            "\"vocab_size\":1000,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":500000.0},"
            "\"rope_scaling\":null,\"eos_token_id\":[7,8],\"bos_token_id\":null,\"pad_token_id\":null,"
            "\"hidden_act\":\"silu\",\"attention_bias\":false,\"mlp_bias\":false,\"tie_word_embeddings\":true}",
            &err);
    CHECK(rc == SQZ_OK, "v5 style: %s", err.msg);
    if (rc == SQZ_OK)
        CHECK(c.rope_theta == 500000.0f && c.eos_id == 7 && c.bos_id == -1 && c.head_dim == 32 && c.n_head_kv == 2 &&
                  c.tie_embeddings == 1 && c.layer_n_head_kv[2] == 2,
              "v5 values");
    sqz_config_free(&c);
}

static void test_hf_bad(void) {
#define BASE "\"hidden_size\":128,\"intermediate_size\":256,\"num_hidden_layers\":2,\"vocab_size\":100"
    expect_hf_fail("{\"model_type\":\"llama\",", "not valid JSON", "malformed JSON");
    expect_hf_fail("[1]", "expected a JSON object", "not an object");
    expect_hf_fail("{\"model_type\":\"llama\",\"intermediate_size\":256,\"num_hidden_layers\":2,\"vocab_size\":100,"
                   "\"num_attention_heads\":4}",
                   "hidden_size: missing", "missing hidden_size");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE "}", "num_attention_heads: missing", "missing heads");
    expect_hf_fail("{\"architectures\":[\"MistralForCausalLM\"],\"model_type\":\"mistral\"," BASE
                   ",\"num_attention_heads\":4}",
                   "MistralForCausalLM", "wrong architecture");
    expect_hf_fail("{" BASE ",\"num_attention_heads\":4}", "architectures", "no architecture at all");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":6,\"num_key_value_heads\":4,\"head_dim\":16}",
                   "num_key_value_heads", "heads not dividing");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"rope_scaling\":{\"type\":\"linear\","
                   "\"factor\":2.0}}",
                   "rope_scaling", "linear rope scaling");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":"
                   "\"llama3\",\"factor\":8.0}}",
                   "low_freq_factor", "llama3 rope scaling without its factors");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"rope_parameters\":{\"rope_type\":"
                   "\"yarn\",\"rope_theta\":10000}}",
                   "rope_parameters", "yarn rope parameters");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"hidden_act\":\"gelu\"}", "hidden_act",
                   "gelu");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"attention_bias\":true}",
                   "attention_bias", "attention bias");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"mlp_bias\":true}", "mlp_bias",
                   "mlp bias");
    expect_hf_fail("{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,\"num_hidden_layers\":0,"
                   "\"vocab_size\":100,\"num_attention_heads\":4}",
                   "num_hidden_layers", "zero layers");
    expect_hf_fail("{\"model_type\":\"llama\",\"hidden_size\":-128,\"intermediate_size\":256,\"num_hidden_layers\":2,"
                   "\"vocab_size\":100,\"num_attention_heads\":4}",
                   "hidden_size", "negative hidden size");
    expect_hf_fail("{\"model_type\":\"llama\",\"hidden_size\":128.5,\"intermediate_size\":256,\"num_hidden_layers\":2,"
                   "\"vocab_size\":100,\"num_attention_heads\":4}",
                   "hidden_size: expected an integer", "fractional hidden size");
    expect_hf_fail("{\"model_type\":\"llama\",\"hidden_size\":128,\"intermediate_size\":256,\"num_hidden_layers\":2,"
                   "\"vocab_size\":\"many\",\"num_attention_heads\":4}",
                   "vocab_size", "string vocab size");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":5}", "num_attention_heads",
                   "hidden not divisible by heads");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"head_dim\":7}", "head_dim",
                   "odd head_dim");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"rms_norm_eps\":0}", "rms_norm_eps",
                   "zero eps");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"tie_word_embeddings\":1}",
                   "tie_word_embeddings", "tie not a bool");
    expect_hf_fail("{\"model_type\":\"llama\"," BASE ",\"num_attention_heads\":4,\"eos_token_id\":-2}", "eos_token_id",
                   "negative eos");
#undef BASE
    sqz_llama_config c;
    sqz_err err = {{0}};
    CHECK(sqz_config_from_hf_json(&c, NULL, 0, "cfg.json", &err) == SQZ_ERR, "NULL text");
}

/* A GGUF image with llama/deci metadata; `variant` selects the broken or special cases. */
static tbuf gguf_cfg(const char *arch, int variant) {
    tbuf b = {0};
    char k[128];
    int n_kv = 0;
    tbuf kv = {0};
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    kv_str(&kv, "general.architecture", arch), n_kv++;
    kv_u32(&kv, KEY("block_count"), 3), n_kv++;
    if (variant != 1) kv_u32(&kv, KEY("embedding_length"), 64), n_kv++;
    kv_u32(&kv, KEY("context_length"), 256), n_kv++;
    kv_f32(&kv, KEY("attention.layer_norm_rms_epsilon"), 1e-5f), n_kv++;
    if (variant == 0 || variant == 1 || variant == 3) {
        kv_u32(&kv, KEY("feed_forward_length"), 172), n_kv++;
        kv_u32(&kv, KEY("attention.head_count"), 8), n_kv++;
        kv_u32(&kv, KEY("attention.head_count_kv"), variant == 3 ? 3 : 4), n_kv++;
        kv_f32(&kv, KEY("rope.freq_base"), 500000.0f), n_kv++;
        kv_u32(&kv, KEY("rope.dimension_count"), 8), n_kv++;
        const char *toks[5] = {"<unk>", "<s>", "</s>", "a", "b"};
        kv_arr_str(&kv, "tokenizer.ggml.tokens", toks, 5), n_kv++;
        kv_u32(&kv, "tokenizer.ggml.bos_token_id", 1), n_kv++;
        kv_u32(&kv, "tokenizer.ggml.eos_token_id", 2), n_kv++;
    } else { /* per-layer arrays (deci): variant 2 good, 4 wrong length */
        int32_t heads[3] = {8, 0, 4}, kvh[3] = {2, 0, 4}, ff[3] = {172, 96, 0};
        kv_arr_i32(&kv, KEY("attention.head_count"), heads, 3), n_kv++;
        kv_arr_i32(&kv, KEY("attention.head_count_kv"), kvh, 3), n_kv++;
        kv_arr_i32(&kv, KEY("feed_forward_length"), ff, variant == 4 ? 2 : 3), n_kv++;
        kv_u32(&kv, KEY("attention.key_length"), 16), n_kv++;
        kv_u32(&kv, KEY("vocab_size"), 300), n_kv++;
    }
#undef KEY
    tb_put(&b, "GGUF", 4);
    tb_u32(&b, 3);
    tb_u64(&b, 0);
    tb_u64(&b, (uint64_t)n_kv);
    tb_put(&b, kv.p, kv.n);
    free(kv.p);
    return b;
}

static int gguf_config(tbuf *b, sqz_llama_config *c, sqz_err *err) {
    sqz_gguf g;
    int rc = sqz_gguf_parse(&g, b->p, b->n, "cfg.gguf", err);
    CHECK(rc == SQZ_OK, "metadata-only gguf parses: %s", err->msg);
    if (rc == SQZ_OK) rc = sqz_config_from_gguf(c, &g, err);
    else memset(c, 0, sizeof *c);
    sqz_gguf_close(&g);
    free(b->p);
    return rc;
}

static void test_gguf(void) {
    sqz_llama_config c;
    sqz_err err = {{0}};
    tbuf b = gguf_cfg("llama", 0);
    int rc = gguf_config(&b, &c, &err);
    CHECK(rc == SQZ_OK, "llama gguf: %s", err.msg);
    if (rc == SQZ_OK) {
        CHECK(c.dim == 64 && c.n_layer == 3 && c.n_head == 8 && c.n_head_kv == 4 && c.n_ff == 172 && c.head_dim == 8 &&
                  c.n_ctx_train == 256,
              "llama shapes");
        CHECK(c.rope_theta == 500000.0f && c.norm_eps == 1e-5f && c.n_vocab == 5 && c.bos_id == 1 && c.eos_id == 2,
              "llama scalars");
        CHECK(c.rope_mode == SQZ_ROPE_ADJACENT && c.tie_embeddings == 0, "rope mode adjacent, tie left to the loader");
        CHECK(c.layer_n_head[2] == 8 && c.layer_n_head_kv[2] == 4 && c.layer_n_ff[2] == 172, "per-layer filled");
    }
    sqz_config_free(&c);

    b = gguf_cfg("deci", 2);
    rc = gguf_config(&b, &c, &err);
    CHECK(rc == SQZ_OK, "deci gguf: %s", err.msg);
    if (rc == SQZ_OK) {
        CHECK(c.n_head == 8 && c.n_head_kv == 2 && c.n_ff == 172 && c.head_dim == 16 && c.n_vocab == 300, "deci scalars");
        CHECK(c.layer_n_head[1] == 0 && c.layer_n_head_kv[1] == 0 && c.layer_n_head[2] == 4 && c.layer_n_head_kv[2] == 4 &&
                  c.layer_n_ff[1] == 96 && c.layer_n_ff[2] == 0,
              "deci per-layer values");
        CHECK(c.rope_theta == 10000.0f && c.bos_id == -1 && c.eos_id == -1, "deci defaults");
    }
    sqz_config_free(&c);

    b = gguf_cfg("gpt2", 0);
    rc = gguf_config(&b, &c, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "general.architecture") && strstr(err.msg, "gpt2"), "wrong arch: %s",
          err.msg);
    b = gguf_cfg("llama", 1);
    rc = gguf_config(&b, &c, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "llama.embedding_length: missing"), "missing field: %s", err.msg);
    b = gguf_cfg("llama", 3);
    rc = gguf_config(&b, &c, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "head_count"), "heads not dividing: %s", err.msg);
    b = gguf_cfg("deci", 4);
    rc = gguf_config(&b, &c, &err);
    CHECK(rc == SQZ_ERR && strstr(err.msg, "deci.feed_forward_length") && strstr(err.msg, "block_count"),
          "per-layer array length: %s", err.msg);
    CHECK(c.layer_n_head == NULL, "nothing allocated on failure");

    /* the quant fixture says architecture llama but has no llama.* keys */
    char *p = tu_fixture("quant/quant_types.gguf");
    sqz_gguf g;
    rc = sqz_gguf_open(&g, p, &err);
    CHECK(rc == SQZ_OK, "open %s: %s", p, err.msg);
    if (rc == SQZ_OK) {
        rc = sqz_config_from_gguf(&c, &g, &err);
        CHECK(rc == SQZ_ERR && strstr(err.msg, "missing") && strstr(err.msg, p), "fixture without llama keys: %s",
              err.msg);
    }
    sqz_gguf_close(&g);
    free(p);
}

/* The default model's GGUF, written by llama.cpp's converter: ../shared/models/README.md
 * gives its shapes (30 layers, hidden 576, FFN 1536, 9 heads, 3 kv heads, vocab 49152);
 * theta 100000 and eps 1e-5 are the values gguf-py reads (tests/fixtures/quant/smollm2_gguf_py.txt). */
static void test_smollm2(void) {
    char *model = tu_default_model();
    CHECK(model != NULL, "default model not found (scripts/default_model.sh)");
    if (!model) return;
    sqz_gguf g;
    sqz_err err = {{0}};
    int rc = sqz_gguf_open(&g, model, &err);
    CHECK(rc == SQZ_OK, "open %s: %s", model, err.msg);
    if (rc == SQZ_OK) {
        sqz_llama_config c;
        rc = sqz_config_from_gguf(&c, &g, &err);
        CHECK(rc == SQZ_OK, "config: %s", err.msg);
        if (rc == SQZ_OK) {
            CHECK(c.n_layer == 30 && c.dim == 576 && c.n_ff == 1536 && c.n_head == 9 && c.n_head_kv == 3 &&
                      c.head_dim == 64 && c.n_vocab == 49152 && c.n_ctx_train == 8192,
                  "SmolLM2 shapes: %d %d %d %d %d %d %d", c.n_layer, c.dim, c.n_ff, c.n_head, c.n_head_kv, c.head_dim,
                  c.n_vocab);
            CHECK(c.rope_theta == 100000.0f && c.norm_eps == 1e-5f && c.bos_id == 1 && c.eos_id == 2 &&
                      c.rope_mode == SQZ_ROPE_ADJACENT,
                  "SmolLM2 scalars");
        }
        sqz_config_free(&c);
    }
    sqz_gguf_close(&g);
    free(model);
}

int main(void) {
    test_stories();
    test_hf_defaults();
    test_hf_bad();
    test_gguf();
    test_smollm2();
    return tu_done("test_config");
}

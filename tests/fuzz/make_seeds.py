#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/): small valid
inputs made by the reference writers (safetensors, gguf-py) so the fuzzers start from
well-formed files. Run: python3 tests/fuzz/make_seeds.py"""
import json
import os

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize
from safetensors.torch import save as st_save

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors_seeds():
    t = {
        "w": torch.randn(3, 4, dtype=torch.float32),
        "h": torch.randn(8, dtype=torch.float16),
        "b": torch.randn(2, 2, 2, dtype=torch.bfloat16),
    }
    out("fuzz_safetensors", "three_dtypes.safetensors", st_save(t, metadata={"format": "pt"}))
    out("fuzz_safetensors", "one.safetensors", st_save({"x": torch.zeros(1, dtype=torch.float32)}))
    out("fuzz_safetensors", "empty_tensor.safetensors", st_save({"e": torch.zeros(0, 5, dtype=torch.float16)}))


def gguf_bytes(build):
    path = os.path.join(HERE, "corpus", ".tmp.gguf")
    w = gguf.GGUFWriter(path, "llama")
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = open(path, "rb").read()
    os.remove(path)
    return data


def gguf_seeds():
    def llama(w):
        w.add_block_count(2)
        w.add_embedding_length(64)
        w.add_context_length(128)
        w.add_feed_forward_length(96)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(16)
        w.add_tokenizer_model("llama")
        w.add_token_list(["<unk>", "<s>", "</s>", "a", "b"])
        w.add_token_scores([0.0, 0.0, 0.0, -1.0, -2.0])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        x = rng.normal(0, 1, size=(2, 64)).astype(np.float32)
        w.add_tensor("token_embd.weight", quantize(x, T.Q8_0), raw_dtype=T.Q8_0)
        w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
        w.add_tensor("blk.0.attn_q.weight", x.astype(np.float16))
        w.add_tensor("blk.0.ffn_up.weight", quantize(x, T.Q4_1), raw_dtype=T.Q4_1)
        k = rng.integers(0, 256, size=(1, 144), dtype=np.uint8)
        k[0, 0:4] = np.array([0.01, 0.002], dtype=np.float16).view(np.uint8)
        w.add_tensor("blk.0.ffn_down.weight", k, raw_dtype=T.Q4_K)

    out("fuzz_gguf", "llama_small.gguf", gguf_bytes(llama))
    # gguf-py writes general.architecture itself; build the deci one with arch "deci"
    path = os.path.join(HERE, "corpus", ".tmp.gguf")
    w = gguf.GGUFWriter(path, "deci")
    w.add_uint32("deci.block_count", 3)
    w.add_uint32("deci.embedding_length", 64)
    w.add_array("deci.attention.head_count", [4, 0, 2])
    w.add_array("deci.attention.head_count_kv", [2, 0, 2])
    w.add_array("deci.feed_forward_length", [96, 64, 0])
    w.add_float32("deci.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32("deci.attention.key_length", 16)
    w.add_uint32("deci.vocab_size", 10)
    w.add_tensor("t", np.arange(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out("fuzz_gguf", "deci_arrays.gguf", open(path, "rb").read())
    os.remove(path)


def config_seeds():
    stories = open(os.path.join(HERE, "..", "..", "..", "shared", "models", "stories260K", "config.json"), "rb").read()
    out("fuzz_config", "stories260K.json", stories)
    out("fuzz_config", "minimal.json", json.dumps({
        "model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100}).encode())
    out("fuzz_config", "transformers5.json", json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 96, "intermediate_size": 256,
        "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 32,
        "vocab_size": 1000, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        "rope_scaling": None, "eos_token_id": [7, 8], "bos_token_id": None, "tie_word_embeddings": True}).encode())


if __name__ == "__main__":
    safetensors_seeds()
    gguf_seeds()
    config_seeds()

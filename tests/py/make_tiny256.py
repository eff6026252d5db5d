#!/usr/bin/env python3
"""A tiny Llama whose every matrix row is a multiple of 256 (so every k-quant and i-quant
fits), with random weights, written by gguf-py, and random calibration token ids.

usage: make_tiny256.py MODEL.gguf IDS.json [SEED]

dim 256, FFN 512, 2 layers, 4 query / 2 key-value heads (head_dim 64), vocabulary 256, no
tokenizer ("no_vocab"); weights N(0, 0.02²), norms 1, F32. IDS.json: 4,096 token ids
uniform over the vocabulary (for `--calib IDS.json`).
"""
import json
import sys

import numpy as np
import gguf

DIM, FF, LAYERS, HEADS, KV, VOCAB = 256, 512, 2, 4, 2, 256


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path, ids_path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) == 4 else 0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny256")
    w.add_context_length(256)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_rope_dimension_count(DIM // HEADS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("no_vocab")
    hd = DIM // HEADS

    def mat(rows, cols):  # gguf-py takes numpy's (rows, cols): ne = [cols, rows]
        return (0.02 * rng.standard_normal((rows, cols))).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(VOCAB, DIM))
    for l in range(LAYERS):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", np.ones(DIM, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(HEADS * hd, DIM))
        w.add_tensor(p + "attn_k.weight", mat(KV * hd, DIM))
        w.add_tensor(p + "attn_v.weight", mat(KV * hd, DIM))
        w.add_tensor(p + "attn_output.weight", mat(DIM, HEADS * hd))
        w.add_tensor(p + "ffn_norm.weight", np.ones(DIM, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(FF, DIM))
        w.add_tensor(p + "ffn_up.weight", mat(FF, DIM))
        w.add_tensor(p + "ffn_down.weight", mat(DIM, FF))
    w.add_tensor("output_norm.weight", np.ones(DIM, dtype=np.float32))
    w.add_tensor("output.weight", mat(VOCAB, DIM))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(ids_path, "w") as f:
        json.dump([int(t) for t in rng.integers(0, VOCAB, 4096)], f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

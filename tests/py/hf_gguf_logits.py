#!/usr/bin/env python3
"""transformers' logits of a GGUF model (loaded through gguf-py, dequantized to float32),
compared with sqz's (tests/tool_logits) on the same token ids.

    hf_gguf_logits.py MODEL.gguf TEXT_FILE SQZ_TOOL_LOGITS OUT_DIR [--positions 24]

Tokens: transformers' tokenizer (built from the GGUF) on the first characters of TEXT,
cut to --positions ids. Prints max |logit difference| over all positions and the
vocabulary, relative to the logits' standard deviation, and argmax agreement; exits 1
when the argmax differs anywhere or max |Δ| exceeds 2e-3 · std (the weights are the same
Q4_K/Q6_K values on both sides; what differs is float32 summation order over 28 layers).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("tool")
    ap.add_argument("out")
    ap.add_argument("--positions", type=int, default=24)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    d, f = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    with open(a.text, encoding="utf-8", errors="replace") as fh:
        text = fh.read(4000)
    ids = tok(text, add_special_tokens=False)["input_ids"][: a.positions]
    ids_path = os.path.join(a.out, "ids.json")
    with open(ids_path, "w") as fh:
        json.dump(ids, fh)
    sqz_path = os.path.join(a.out, "sqz.f32")
    subprocess.run([a.tool, a.model, ids_path, sqz_path], check=True)
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    ours = np.fromfile(sqz_path, dtype="<f4").reshape(ref.shape)
    diff = np.abs(ours - ref)
    std = float(ref.std())
    same = int((ours.argmax(-1) == ref.argmax(-1)).sum())
    print(f"{len(ids)} positions: max |Δ| {diff.max():.3e} (logit std {std:.3f}, ratio {diff.max() / std:.2e}), "
          f"mean |Δ| {diff.mean():.3e}, argmax equal at {same}/{len(ids)}")
    ok = same == len(ids) and diff.max() <= 2e-3 * std
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

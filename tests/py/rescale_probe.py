"""Rescale the blocks of an existing GGUF file against its source weights (an experiment
tool; the library's version is sqz_rescale_row, src/quant/quantize.c).

    python3 tests/py/rescale_probe.py SOURCE_F32.gguf IN.gguf OUT.gguf [POWER] [IMATRIX.gguf]

For every tensor of IN whose type has linear f16 scale fields (the k-quants, the 32-value
types, the i-quants but IQ1_M) and fewer than 4 bits per weight, the scale fields of each
256 values are multiplied by f**POWER, f = sum(w x^2) / sum(w x q): x the tensor in SOURCE,
q its values in IN (gguf-py's dequantizer), w the imatrix's column means when IMATRIX is
given, else 1. The codes are not touched; OUT has IN's size. Then `llama-perplexity -m
OUT ...` says what rescaling does to a file made by anyone (llama-quantize's included).
"""
import shutil, sys, os
import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

# byte offsets of each block's linear f16 fields (ggml's block structs)
FIELDS = {QT.IQ2_XXS: [0], QT.IQ2_XS: [0], QT.IQ2_S: [0], QT.IQ3_XXS: [0], QT.IQ3_S: [0], QT.IQ1_S: [0],
          QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.TQ1_0: [52], QT.TQ2_0: [64]}


def main():
    src_path, inp, out = sys.argv[1:4]
    power = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    imat = {}
    if len(sys.argv) > 5:
        imat = {t.name: np.array(t.data) for t in gguf.GGUFReader(sys.argv[5]).tensors}
    src = {t.name: t for t in gguf.GGUFReader(src_path).tensors}
    shutil.copyfile(inp, out + ".tmp")
    r = gguf.GGUFReader(out + ".tmp", "r+")
    done = {}
    for t in r.tensors:
        if t.tensor_type not in FIELDS or t.name not in src:
            continue
        bs, bb = gguf.GGML_QUANT_SIZES[t.tensor_type]
        W = np.array(src[t.name].data, dtype=np.float32)
        raw = t.data
        rows = raw.shape[0]
        if W.shape[0] != rows:  # a pruned tensor
            continue
        cols = W.shape[1]
        Q = gguf.quants.dequantize(np.array(raw), t.tensor_type).reshape(W.shape)
        w = np.ones(cols)
        if t.name + ".in_sum2" in imat:
            w = imat[t.name + ".in_sum2"] / imat[t.name + ".counts"][0]
        g = 256
        wb = np.broadcast_to(w, (rows, cols)).reshape(rows, -1, g)
        xb = W.reshape(rows, -1, g).astype(np.float64)
        qb = Q.reshape(rows, -1, g).astype(np.float64)
        num, den = (wb * xb * xb).sum(2), (wb * xb * qb).sum(2)
        ok = (den > 0) & (num > 0)
        f = np.clip(np.where(ok, num / np.where(ok, den, 1.0), 1.0) ** power, 0.5, 2.0)
        blocks = raw.reshape(rows, -1, bb)  # one block per 256 values for these types
        for off in FIELDS[t.tensor_type]:
            d = blocks[:, :, off:off + 2].copy().view(np.float16)[:, :, 0].astype(np.float64)
            blocks[:, :, off:off + 2] = (d * f).astype(np.float16).view(np.uint8).reshape(rows, -1, 2)
        done[t.tensor_type.name] = done.get(t.tensor_type.name, 0) + 1
    del r
    os.rename(out + ".tmp", out)
    print("rescaled:", done)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Makes tests/fixtures/quant/: a GGUF holding one small tensor of each ggml type sqz reads,
and gguf-py's own dequantization of each, so tests/test_types.c can require bit-exact
agreement with an independent implementation.

  quant_types.gguf   tensors "<TYPE>" (ne0 x ne1) plus "conv.src" (F32), "conv.f16" (F16),
                     "conv.bf16" (BF16) for the half-float conversion checks
  quant_types.f32    gguf-py's dequantized float32 values, tensor after tensor
  quant_types.txt    one line per tensor: name type_id ne0 ne1 offset_in_f32_file (floats)

Types gguf-py can quantize are made from random normal data with gguf.quants.quantize;
k-quants and IQ4_NL (gguf-py only dequantizes them) are random block bytes with sane
f16 scale fields. Run from anywhere: python3 tests/py/make_quant_fixture.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "quant")

rng = np.random.default_rng(12345)


def f16_bytes(vals):
    return np.asarray(vals, dtype=np.float16).view(np.uint8)


def random_kquant_blocks(qtype, n_blocks):
    """Random bytes for each block, with the f16 fields replaced by finite values."""
    bs, tsize = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, tsize), dtype=np.uint8)
    # byte offsets of f16 fields (d, dmin) in each block layout (ggml-common.h)
    f16_fields = {
        T.Q2_K: [80, 82],
        T.Q3_K: [108],
        T.Q4_K: [0, 2],
        T.Q5_K: [0, 2],
        T.Q6_K: [208],
        T.IQ4_NL: [0],
    }[qtype]
    for off in f16_fields:
        # mix of magnitudes and signs, including one exact zero and one subnormal
        vals = rng.normal(0, 0.05, size=n_blocks).astype(np.float16)
        vals[0] = np.float16(0.0)
        if n_blocks > 1:
            vals[1] = np.frombuffer(np.uint16(0x0123).tobytes(), dtype=np.float16)[0]
        b[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    return b


def main():
    os.makedirs(OUT, exist_ok=True)
    gguf_path = os.path.join(OUT, "quant_types.gguf")
    w = gguf.GGUFWriter(gguf_path, "llama")
    w.add_string("sqz.fixture", "quant types")
    refs = []   # (name, type_id, ne0, ne1, float32 values)

    # types gguf-py quantizes: random data, one row of all zeros, one with a large outlier
    for qt in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        ne0, ne1 = 64, 4
        x = rng.normal(0, 1, size=(ne1, ne0)).astype(np.float32)
        x[1, :] = 0
        x[2, 5] = 40.0
        if qt == T.F32:
            q = x
        elif qt == T.F16:
            q = x.astype(np.float16)
        else:
            q = quantize(x, qt)
        deq = dequantize(q, qt).astype(np.float32).reshape(ne1, ne0)
        w.add_tensor(qt.name, q, raw_dtype=qt if qt not in (T.F32, T.F16) else None)
        refs.append((qt.name, qt.value, ne0, ne1, deq))

    # types gguf-py only dequantizes: random block bytes
    for qt in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL):
        bs, tsize = gguf.GGML_QUANT_SIZES[qt]
        ne0 = 512 if bs == 256 else 64
        ne1 = 2
        n_blocks = ne0 * ne1 // bs
        blocks = random_kquant_blocks(qt, n_blocks)
        raw = blocks.reshape(ne1, (ne0 // bs) * tsize)
        deq = dequantize(raw, qt).astype(np.float32).reshape(ne1, ne0)
        w.add_tensor(qt.name, raw, raw_dtype=qt)
        refs.append((qt.name, qt.value, ne0, ne1, deq))

    # half-float conversions: specials, ties, subnormals, overflow
    special = np.array([
        0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, -65520.0, 1e9, -1e9,
        6.103515625e-05, 6.0975552e-05, 5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1e-10, -1e-10,
        1.0009765625, 1.00048828125, 1.00146484375, 1.0 + 2.0 ** -11 + 2.0 ** -20,
        np.inf, -np.inf, 3.14159265, -2.71828182, 1.0 / 3.0, 1e-5, 123.456,
        float.fromhex("0x1.01p+0"), float.fromhex("0x1.0080p+0"), float.fromhex("0x1.0180p+0"),
        float.fromhex("0x1.fffffep+127"), float.fromhex("-0x1.fffffep+127"), float.fromhex("0x1p-126"),
    ], dtype=np.float32)
    rand = (rng.normal(0, 1, size=256) * np.exp2(rng.integers(-30, 20, size=256))).astype(np.float32)
    src = np.concatenate([special, rand]).astype(np.float32)
    src = np.concatenate([src, np.zeros((-len(src)) % 32, dtype=np.float32)])
    n = len(src)
    w.add_tensor("conv.src", src)
    with np.errstate(over="ignore"):
        h = src.astype(np.float16)  # overflow to inf is what is being tested
    w.add_tensor("conv.f16", h)
    bf = quantize(src, T.BF16)
    w.add_tensor("conv.bf16", bf, raw_dtype=T.BF16)
    refs.append(("conv.src", T.F32.value, n, 1, src.reshape(1, n)))
    refs.append(("conv.f16", T.F16.value, n, 1, h.astype(np.float32).reshape(1, n)))
    refs.append(("conv.bf16", T.BF16.value, n, 1, dequantize(bf, T.BF16).astype(np.float32).reshape(1, n)))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    off = 0
    with open(os.path.join(OUT, "quant_types.f32"), "wb") as fv, open(os.path.join(OUT, "quant_types.txt"), "w") as ft:
        for name, tid, ne0, ne1, deq in refs:
            data = np.ascontiguousarray(deq, dtype="<f4")
            assert data.size == ne0 * ne1
            fv.write(data.tobytes())
            ft.write(f"{name} {tid} {ne0} {ne1} {off}\n")
            off += data.size
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT}: {len(refs)} tensors, {total} bytes", file=sys.stderr)


if __name__ == "__main__" and len(sys.argv) == 1:
    main()


def smollm2_index(model_path):
    """gguf-py's view of the default model (a real llama.cpp-written GGUF) for
    tests/test_io_gguf.c: header counts, the llama.* scalars, every tensor's type, shape,
    absolute data offset and size, and a few dequantized values (hex floats)."""
    from gguf import GGUFReader
    r = GGUFReader(model_path)
    n_kv = sum(1 for k in r.fields if not k.startswith("GGUF."))
    lines = [f"file {os.path.getsize(model_path)} n_kv {n_kv} n_tensors {len(r.tensors)} "
             f"data_offset {r.data_offset} alignment {r.alignment}"]
    for k, f in r.fields.items():
        if k.startswith("llama.") or k.endswith("_token_id"):
            v = f.contents()
            if isinstance(v, float):
                lines.append(f"kvf {k} {float(np.float32(v)).hex()}")
            elif isinstance(v, int):
                lines.append(f"kvi {k} {v}")
    for t in r.tensors:
        ne = list(int(x) for x in t.shape) + [1] * (4 - len(t.shape))
        lines.append(f"tensor {t.name} {t.tensor_type.value} {len(t.shape)} {ne[0]} {ne[1]} {ne[2]} {ne[3]} "
                     f"{t.data_offset} {t.n_bytes}")
    seen = set()
    for t in r.tensors:
        if t.tensor_type.name in seen:
            continue
        seen.add(t.tensor_type.name)
        ne0 = int(t.shape[0])
        rows = dequantize(t.data, t.tensor_type).reshape(-1, ne0)
        row = 1 if rows.shape[0] > 1 else 0
        vals = [float(v).hex() for v in rows[row, :8].astype(np.float32)] + \
               [float(v).hex() for v in rows[row, -4:].astype(np.float32)]
        lines.append(f"row {t.name} {row} " + " ".join(vals))
    path = os.path.join(OUT, "smollm2_gguf_py.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__" and len(sys.argv) > 1:
    smollm2_index(sys.argv[1])

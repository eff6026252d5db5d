#!/usr/bin/env python3
"""Independent checks of a GGUF file written by `sqz quantize`, with gguf-py and numpy only
(no sqz code): used by tests/t_quantize_hf.sh and tests/t_quantize_llamacpp.sh.

usage:
  gguf_to_hf.py compare GGUF HF_DIR (--exact | --tol REL) [--file-type N] [--report REP.json]
      Every GGUF tensor, dequantized by gguf-py, against the Hugging Face tensor it comes
      from (model.safetensors): attn_q / attn_k against the row permutation that llama.cpp's
      convert_hf_to_gguf.py applies (LlamaModel.permute: reshape(n_head, 2, hd/2, in)
      .swapaxes(1, 2)), the others unchanged. --exact: bit-equal (F32 output); --tol: relative
      Frobenius error below REL. Also: the metadata (general.architecture, llama.* from
      config.json, tokenizer.ggml.model == "no_vocab" for a folder without a tokenizer).
      --report: sqz's rel_weight_err of each quantized tensor must equal the error
      measured here (within 0.1%).
  gguf_to_hf.py logits GGUF TOKENS.json REF.f32 --tol ABS
      A float64 numpy Llama forward pass of the GGUF (llama.cpp's layout: adjacent-pair
      RoPE on the permuted q/k rows) over TOKENS; the logits must be within ABS of REF
      (T x V float32, e.g. transformers' logits from tests/fixtures).
  gguf_to_hf.py report GGUF REPORT.json --type T [--max-rel-err X] [--calib]
      sqz's --json report against the file itself: every tensor listed once with the
      file's type and byte count, block-size fallbacks as llama-quantize makes them
      (T -> fallback -> F16), totals (file_bytes = the file's size, n_params = the file's
      elements, bpw = 8 file_bytes / n_params), relative errors finite and < X for the
      quantized tensors (and the H-weighted ones too with --calib).
Exit status 0 when everything holds, 1 otherwise (each failure printed as "FAIL: ...").
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import gguf
from gguf import GGUFReader

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


# ------------------------------------------------------------------ names and layouts

HF_TO_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    p = hf.split(".")
    assert p[:2] == ["model", "layers"], hf
    return f"blk.{p[2]}.{HF_TO_GGUF_LAYER['.'.join(p[3:])]}"


def llama_permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute (n_head: the kv head count for k)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_f32(t):
    """A GGUF tensor dequantized by gguf-py, in row-major (rows, cols) numpy order."""
    shape = [int(x) for x in reversed([int(v) for v in t.shape])]
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape(shape)


def kv_value(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    v = f.contents()
    return v


BLOCK = {"F32": 1, "F16": 1, "BF16": 1}
for _n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"):
    BLOCK[_n] = 32
for _n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
    BLOCK[_n] = 256
# llama-quantize's fallback for rows that do not fit the block (sqz quantize --help)
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def expected_type(req, ncols):
    if ncols % BLOCK[req] == 0:
        return req
    fb = FALLBACK.get(req, "F16")
    return fb if ncols % BLOCK[fb] == 0 else "F16"


# ------------------------------------------------------------------ compare

def rel_err(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def cmd_compare(a):
    from safetensors.numpy import load_file
    cfg = json.load(open(os.path.join(a.hf_dir, "config.json")))
    hf = load_file(os.path.join(a.hf_dir, "model.safetensors"))
    r = GGUFReader(a.gguf)
    gt = {t.name: t for t in r.tensors}
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    tied = cfg.get("tie_word_embeddings", False)

    # metadata
    want = {
        "general.architecture": "llama",
        "llama.block_count": cfg["num_hidden_layers"],
        "llama.context_length": cfg["max_position_embeddings"],
        "llama.embedding_length": cfg["hidden_size"],
        "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.attention.head_count": nh,
        "llama.attention.head_count_kv": nkv,
        "llama.attention.layer_norm_rms_epsilon": cfg["rms_norm_eps"],
        "llama.rope.freq_base": cfg.get("rope_theta", 10000.0),
    }
    if not any(os.path.exists(os.path.join(a.hf_dir, f)) for f in ("tokenizer.json", "tokenizer.model")):
        want["tokenizer.ggml.model"] = "no_vocab"
    if a.file_type is not None:
        want["general.file_type"] = a.file_type
    for k, v in want.items():
        got = kv_value(r, k)
        ok = got is not None and (math.isclose(float(got), float(v), rel_tol=1e-6)
                                  if isinstance(v, (int, float)) and not isinstance(got, str) else got == v)
        if not ok:
            fail(f"metadata {k} = {got!r}, want {v!r}")
    hd = kv_value(r, "llama.rope.dimension_count")
    if hd is not None and hd != cfg["hidden_size"] // nh and hd != cfg.get("head_dim"):
        fail(f"llama.rope.dimension_count = {hd}, want the head dim {cfg.get('head_dim')}")
    print(f"  metadata: {len(want)} keys as expected" if not failures else "  metadata: see FAIL lines")

    # tensors
    expected = {}
    for name, w in hf.items():
        if name == "lm_head.weight" and tied:
            continue
        g = gguf_name(name)
        w = w.astype(np.float32)
        if name.endswith("q_proj.weight"):
            w = llama_permute(w, nh)
        elif name.endswith("k_proj.weight"):
            w = llama_permute(w, nkv)
        expected[g] = (name, w)
    extra = sorted(set(gt) - set(expected) - ({"output.weight"} if tied else set()))
    missing = sorted(set(expected) - set(gt))
    if extra:
        fail(f"tensors in the GGUF that the HF model does not have: {extra}")
    if missing:
        fail(f"HF tensors missing from the GGUF: {missing}")
    if tied and "output.weight" in gt:   # allowed, but then it must be the embedding
        expected["output.weight"] = ("model.embed_tokens.weight", hf["model.embed_tokens.weight"].astype(np.float32))

    rep = None
    if a.report:
        rep = {t["name"]: t for t in json.load(open(a.report)).get("tensors", [])}
    worst = (0.0, "")
    qk = []
    n_rep = 0
    for g, (src, w) in sorted(expected.items()):
        if g not in gt:
            continue
        got = tensor_f32(gt[g])
        if got.shape != w.shape:
            fail(f"{g}: shape {got.shape}, want {w.shape} (from {src})")
            continue
        if not np.all(np.isfinite(got)):
            fail(f"{g}: non-finite values after dequantization")
            continue
        e = rel_err(got, w)
        if e > worst[0]:
            worst = (e, g)
        if a.exact:
            if not np.array_equal(got, w):
                fail(f"{g}: not bit-equal to {src}{' (permuted)' if 'attn_q' in g or 'attn_k' in g else ''}: "
                     f"max|d| {float(np.abs(got - w).max()):.3g}")
        elif e >= a.tol:
            fail(f"{g} ({gt[g].tensor_type.name}): relative error {e:.4g} vs {src} >= {a.tol}")
        if rep is not None and gt[g].tensor_type.name != "F32":
            # sqz's own relative weight error must be the one gguf-py's dequantization gives
            v = rep.get(g, {}).get("rel_weight_err")
            if not (isinstance(v, (int, float)) and abs(v - e) <= 1e-3 * e + 1e-6):
                fail(f"{g}: report rel_weight_err {v!r}, gguf-py dequantization gives {e:.6g}")
            n_rep += 1
        if ".attn_q." in g or ".attn_k." in g:
            # the same tensor against the UNpermuted HF rows: must be far off, or the
            # permutation would not be tested at all
            raw = hf[src].astype(np.float32)
            qk.append((g, gt[g].tensor_type.name, e, rel_err(got, raw)))
    for g, ty, e, e_raw in qk:
        print(f"  {g:22s} {ty:5s} rel err vs permuted HF {e:.3g}   (vs unpermuted: {e_raw:.3g})")
        if e_raw < 0.5:
            fail(f"{g}: close to the UNpermuted HF rows too ({e_raw:.3g}): permutation not exercised")
    n = len([g for g in expected if g in gt])
    mode = "bit-equal" if a.exact else f"rel err < {a.tol}"
    print(f"  tensors: {n} compared with their HF sources ({mode}); worst rel err {worst[0]:.3g} ({worst[1]})")
    if rep is not None:
        print(f"  report: rel_weight_err of {n_rep} quantized tensors = the error of gguf-py's dequantization")


# ------------------------------------------------------------------ logits (numpy forward)

def cmd_logits(a):
    r = GGUFReader(a.gguf)
    W = {t.name: tensor_f32(t).astype(np.float64) for t in r.tensors}
    nl = int(kv_value(r, "llama.block_count"))
    nh = int(kv_value(r, "llama.attention.head_count"))
    nkv = int(kv_value(r, "llama.attention.head_count_kv"))
    eps = float(kv_value(r, "llama.attention.layer_norm_rms_epsilon"))
    base = float(kv_value(r, "llama.rope.freq_base") or 10000.0)
    tokens = json.load(open(a.tokens))
    if isinstance(tokens, dict):
        tokens = tokens.get("tokens") or tokens.get("ids")
    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    emb = W["token_embd.weight"]
    out_w = W.get("output.weight", emb)
    dim = emb.shape[1]
    hd = dim // nh

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    # GGML "normal" RoPE (llama): rotates adjacent pairs (2i, 2i+1) by pos * base^(-2i/hd)
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # x: (T, heads, hd)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * cos - x1 * sin
        y[..., 1::2] = x0 * sin + x1 * cos
        return y

    mask = np.triu(np.full((T, T), -np.inf), 1)
    x = emb[tokens]
    for l in range(nl):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, nh, hd))
        k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, nkv, hd))
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, nkv, hd)
        att = np.empty((T, nh, hd))
        for i in range(nh):
            j = i // (nh // nkv)
            s = q[:, i, :] @ k[:, j, :].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, i, :] = (s / s.sum(-1, keepdims=True)) @ v[:, j, :]
        x = x + att.reshape(T, dim) @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T
        u = h @ W[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "ffn_down.weight"].T
    logits = rms(x, W["output_norm.weight"]) @ out_w.T
    ref = np.fromfile(a.ref, dtype="<f4").astype(np.float64)
    if ref.size != logits.size:
        fail(f"{a.ref}: {ref.size} floats, want {T} x {logits.shape[1]}")
        return
    ref = ref.reshape(logits.shape)
    d = float(np.abs(logits - ref).max())
    top1 = float((logits.argmax(1) == ref.argmax(1)).mean())
    print(f"  numpy forward of {os.path.basename(a.gguf)} over {T} tokens vs {os.path.basename(a.ref)}: "
          f"max|d| {d:.3g} (limit {a.tol}), top-1 agreement {top1:.3f}, logit std {ref.std():.3g}")
    if not d <= a.tol:
        fail(f"logits differ from {a.ref} by {d:.4g} > {a.tol}")


# ------------------------------------------------------------------ report

def cmd_report(a):
    rep = json.load(open(a.report))
    r = GGUFReader(a.gguf)
    gt = {t.name: t for t in r.tensors}
    size = os.path.getsize(a.gguf)
    ts = rep.get("tensors") or []
    names = [t["name"] for t in ts]
    if len(set(names)) != len(names):
        fail("report lists a tensor twice")
    if set(names) != set(gt):
        fail(f"report tensors != file tensors: only in report {sorted(set(names) - set(gt))[:5]}, "
             f"only in file {sorted(set(gt) - set(names))[:5]}")
    n_fb = 0
    n_params = 0
    tensor_bytes = 0
    worst = {}
    fallbacks = {}
    for t in ts:
        name = t["name"]
        g = gt.get(name)
        if g is None:
            continue
        ne = [int(x) for x in g.shape]
        n_params += int(np.prod(ne))
        tensor_bytes += int(g.n_bytes)
        ftype = g.tensor_type.name
        if t["type"] != ftype:
            fail(f"{name}: report type {t['type']}, file type {ftype}")
        if t["bytes"] != int(g.n_bytes):
            fail(f"{name}: report bytes {t['bytes']}, file {int(g.n_bytes)}")
        if [int(x) for x in t["ne"]] != ne:
            fail(f"{name}: report ne {t['ne']}, file {ne}")
        if len(ne) == 1:
            want, req = "F32", "F32"
        else:
            req = a.type
            want = expected_type(req, ne[0])
        if ftype != want:
            fail(f"{name} (row length {ne[0]}): written as {ftype}, want {want} for --type {a.type}")
        fb = want != req
        if bool(t["fallback"]) != fb or (len(ne) > 1 and t["requested"] != req):
            fail(f"{name}: fallback {t['fallback']} requested {t['requested']}, want fallback {fb} requested {req}")
        if fb:
            n_fb += 1
            key = (ne[0], req, want)
            fallbacks.setdefault(key, []).append(name)
        if ftype != "F32":
            errs = [("rel_weight_err", t.get("rel_weight_err"))]
            if a.calib:
                errs.append(("rel_output_err", t.get("rel_output_err")))
            for k, v in errs:
                ok = isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < a.max_rel_err
                if not ok:
                    fail(f"{name}: {k} = {v!r}, want finite and < {a.max_rel_err}")
                elif v >= worst.get(k, (-1, ""))[0]:
                    worst[k] = (v, name)
    tot = rep.get("totals", {})
    checks = [("file_bytes", tot.get("file_bytes"), size), ("n_params", tot.get("n_params"), n_params),
              ("tensor_bytes", tot.get("tensor_bytes"), tensor_bytes), ("n_fallback", tot.get("n_fallback"), n_fb)]
    for k, got, want in checks:
        if got != want:
            fail(f"totals.{k} = {got}, want {want}")
    bpw = tot.get("bpw")
    want_bpw = 8.0 * size / n_params if n_params else float("nan")
    if not (isinstance(bpw, (int, float)) and math.isclose(bpw, want_bpw, rel_tol=1e-9)):
        fail(f"totals.bpw = {bpw}, want 8 * {size} / {n_params} = {want_bpw}")
    print(f"  report: {len(ts)} tensors (file: {len(gt)}), file_bytes {tot.get('file_bytes')} (actual {size}), "
          f"n_params {tot.get('n_params')} (file: {n_params}), bpw {bpw} (8*bytes/params {want_bpw:.6f})")
    for (ncols, req, want), ns in sorted(fallbacks.items()):
        print(f"  fallback: {len(ns)} tensors of row length {ncols}: {req} -> {want} (e.g. {ns[0]})")
    for k, (v, name) in sorted(worst.items()):
        print(f"  largest {k} {v:.4g} ({name}), limit {a.max_rel_err}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("gguf")
    c.add_argument("hf_dir")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--exact", action="store_true")
    g.add_argument("--tol", type=float)
    c.add_argument("--file-type", type=int)
    c.add_argument("--report", help="sqz's --json report: its rel_weight_err must match")
    lg = sub.add_parser("logits")
    lg.add_argument("gguf")
    lg.add_argument("tokens")
    lg.add_argument("ref")
    lg.add_argument("--tol", type=float, required=True)
    rp = sub.add_parser("report")
    rp.add_argument("gguf")
    rp.add_argument("report")
    rp.add_argument("--type", required=True)
    rp.add_argument("--max-rel-err", type=float, default=0.5)
    rp.add_argument("--calib", action="store_true")
    a = ap.parse_args()
    try:
        {"compare": cmd_compare, "logits": cmd_logits, "report": cmd_report}[a.cmd](a)
    except Exception as e:  # a file gguf-py cannot read is a failure, not a crash
        fail(f"{a.cmd}: {type(e).__name__}: {e}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference fixtures for the non-Llama-2 decoder variants sqz runs: Qwen2 (q/k/v
biases), Qwen3 (per-head q_norm/k_norm, free head_dim) and Llama-3 rope scaling.

Everything written here comes from Hugging Face transformers (PyTorch, float32, CPU,
eager attention), sentencepiece (a tiny tokenizer the converter needs), and llama.cpp's
own converter convert_hf_to_gguf.py (for the GGUF files). Nothing here calls sqz: the C
tests (tests/test_forward.c, tests/test_grad.c) compare sqz against these files.

Run by a developer (never by CI), from anywhere:

    python3 tools/make_arch_fixtures.py                  # all three models
    python3 tools/make_arch_fixtures.py --only qwen3
    python3 tools/make_arch_fixtures.py --llamacpp DIR   # llama.cpp source tree (converter)

Needs: torch, transformers (>= 5), sentencepiece, safetensors, numpy, gguf (gguf-py), and
llama.cpp's source tree (default ~/.cache/sqz/llama.cpp-<ver>, the one
scripts/build_llamacpp.sh unpacks; only its Python converter is used). Outputs, under
tests/fixtures/arch/ (see the README.md written there):

  <name>/              tiny random model saved by save_pretrained (float32, model.safetensors,
                       config.json, generation_config.json) + tokenizer.model (tiny
                       SentencePiece BPE, needed by the converter) + reference.json +
                       logits.f32 (T x V float32 LE, transformers' logits on reference.json's
                       tokens)
  <name>.gguf          the same weights converted by convert_hf_to_gguf.py --outtype f32
  <name>.grads.json    autograd dL/d(Linear outputs, logits, embeddings) of the mean
  <name>.grads.f32     next-token cross entropy, tests/fixtures/grads/ format (complete for
                       qwen2/qwen3, sampled in the JSON for llama3: GRAD_MODELS)
"""

import argparse
import copy
import hashlib
import importlib.metadata as im
import io
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import gguf
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "arch"
LLAMACPP_VER = "0.3.36"
T_TOKENS = 32
VOCAB = 256

# name: (model class, config class, config kwargs, seed, what the fixture exercises)
MODELS = {
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
        tie_word_embeddings=False, hidden_act="silu", use_sliding_window=False,
        bos_token_id=1, eos_token_id=2), 4242,
        "Qwen2ForCausalLM: q/k/v biases (random, std 0.5), untied head, GQA 4/2, rope_theta 1e6"),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config, dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
        tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
        use_sliding_window=False, bos_token_id=1, eos_token_id=2), 4343,
        "Qwen3ForCausalLM: per-head q_norm/k_norm (weights 1 + 0.2 N(0,1)), head_dim 32 != "
        "hidden/heads = 16, tied embeddings, GQA 4/2"),
    "llama3": (LlamaForCausalLM, LlamaConfig, dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32},
        rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
        mlp_bias=False, bos_token_id=1, eos_token_id=2), 4444,
        "LlamaForCausalLM with Llama-3 rope scaling (factor 8, low 1, high 4, original 32, "
        "theta 1e4, head_dim 16: divisors 1, ~3.3 and 8 all occur), tied embeddings, GQA 4/2; "
        "config.json in the classic rope_scaling + top-level rope_theta spelling of Meta's "
        "Llama-3.x checkpoints"),
}
# name: (tokens: the first T of the sequence, "full" = every entry (.f32) or "sampled" =
# GRAD_SAMPLES entries per tensor in the JSON, tests/fixtures/grads/smollm2.json style);
# T and the sampling keep tests/fixtures/arch/ under 3 MB
GRAD_MODELS = {"qwen2": (24, "full"), "qwen3": (24, "full"), "llama3": (32, "sampled")}
GRAD_SAMPLES = 64
BIAS_STD = 0.5

GRAD_KINDS = [  # (kind, HF submodule of model.model.layers[l]) in file order
    ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
]
GRAD_LOSS_DEF = ("L = mean over t = 0..T-2 of cross_entropy(logits[t], tok[t+1]) (natural log, "
                 "float32 logits) for one sequence tok[0..T-1] at positions 0..T-1, no padding, "
                 "no BOS added (= transformers' *ForCausalLM loss with labels = input_ids); "
                 "'loss' is recomputed in float64 from the float32 logits")
GRAD_FD_EPS = 1e-5


def versions():
    v = {k: im.version(k) for k in ("transformers", "torch", "numpy", "safetensors",
                                     "sentencepiece")}
    v["gguf-py"] = im.version("gguf")
    return v


def produced_by(extra=""):
    v = versions()
    s = ("tools/make_arch_fixtures.py: " + ", ".join(f"{k} {x}" for k, x in v.items()) +
         "; float32 on CPU, eager attention")
    return s + (f"; {extra}" if extra else "")


def write_f32(path, arr):
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


def write_json(path, obj, list_key=None):
    """One top-level key per line, values compact; the list under list_key one element
    per line."""
    items = []
    for k, v in obj.items():
        if k == list_key:
            body = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in v)
            items.append(f" {json.dumps(k)}: [\n{body}\n ]")
        else:
            items.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(items) + "\n}\n")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def mean_nll(logits, tokens):
    lg = torch.as_tensor(logits, dtype=torch.float64)
    lp = torch.log_softmax(lg[:-1], dim=-1)
    tgt = torch.as_tensor(tokens[1:], dtype=torch.long)
    return float(-lp.gather(1, tgt[:, None]).mean())


@torch.no_grad()
def run_logits(model, tokens):
    ids = torch.tensor([tokens], dtype=torch.long)
    return model(input_ids=ids).logits[0].float().numpy()


def dir_size(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------
# tokenizer: a tiny SentencePiece BPE (the converter needs a vocabulary; a byte-level BPE
# tokenizer.json would stop it: its pre-tokenizer hash is not one llama.cpp knows)
# --------------------------------------------------------------------------------------

def train_tokenizer(shared):
    import sentencepiece as spm
    text = (Path(shared) / "data" / "tinystories-valid-head.txt").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and ln.isascii()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=VOCAB, model_type="bpe",
        character_coverage=1.0, normalization_rule_name="identity", byte_fallback=False,
        num_threads=1, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    data = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=data)
    assert sp.vocab_size() == VOCAB, sp.vocab_size()
    return data


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------

@torch.no_grad()
def tiny_init(model, gen):
    """Scales that give peaked attention and logits (default init makes every logit ~0):
    projections std 1/sqrt(fan_in), embeddings/head std 0.25, every norm weight (incl.
    Qwen3's q_norm/k_norm) 1 + 0.2 N(0,1), Qwen2's q/k/v biases std BIAS_STD."""
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.copy_(BIAS_STD * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1:
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
        elif "embed_tokens" in name or "lm_head" in name:
            p.copy_(0.25 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def classic_llama3_config(d):
    """Rewrites config.json's transformers-5 rope_parameters as Meta's Llama-3.x
    checkpoints spell it: top-level rope_theta + rope_scaling {rope_type: llama3, ...}."""
    p = d / "config.json"
    cfg = json.loads(p.read_text())
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = {"factor": rp["factor"], "high_freq_factor": rp["high_freq_factor"],
                           "low_freq_factor": rp["low_freq_factor"],
                           "original_max_position_embeddings": rp["original_max_position_embeddings"],
                           "rope_type": "llama3"}
    p.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def rotary_divisors(model):
    """transformers' effective per-pair frequency divisors: default inv_freq / inv_freq."""
    rot = model.model.rotary_emb
    cfg = model.config
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = float(cfg.rope_parameters["rope_theta"])
    inv_default = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return (inv_default.double() / rot.inv_freq.double()).tolist(), float(rot.attention_scaling)


@torch.no_grad()
def sensitivity(model, tokens, ref):
    """max |Δ logits| when one of the new features is dropped from the model: a forward
    pass that ignores it cannot pass a 1e-4 check."""
    out = {}
    m = copy.deepcopy(model)
    names = dict(m.named_parameters())
    biases = [n for n in names if n.endswith(".bias")]
    if biases:
        for n in biases:
            names[n].zero_()
        out["q_k_v_biases_zeroed"] = float(np.abs(run_logits(m, tokens) - ref).max())
        for which in ("q_proj", "k_proj", "v_proj"):
            m2 = copy.deepcopy(model)
            for n, p in m2.named_parameters():
                if n.endswith(f"{which}.bias"):
                    p.zero_()
            out[f"{which}_bias_zeroed"] = float(np.abs(run_logits(m2, tokens) - ref).max())
    qk = [n for n in names if n.endswith(("q_norm.weight", "k_norm.weight"))]
    if qk:
        m = copy.deepcopy(model)
        for n, p in m.named_parameters():
            if n.endswith(("q_norm.weight", "k_norm.weight")):
                p.fill_(1.0)
        out["q_norm_k_norm_weights_set_to_1"] = float(np.abs(run_logits(m, tokens) - ref).max())
    if model.config.rope_parameters.get("rope_type") == "llama3":
        m = copy.deepcopy(model)
        rot = m.model.rotary_emb
        cfg = m.config
        dim = cfg.head_dim
        theta = float(cfg.rope_parameters["rope_theta"])
        rot.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        out["rope_scaling_ignored"] = float(np.abs(run_logits(m, tokens) - ref).max())
    return out


# --------------------------------------------------------------------------------------
# GGUF via llama.cpp's converter, checked tensor by tensor against the HF weights
# --------------------------------------------------------------------------------------

def llama_permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    parts = hf.split(".")
    assert parts[:2] == ["model", "layers"], hf
    return f"blk.{parts[2]}.{GGUF_LAYER['.'.join(parts[3:])]}"


def convert(llamacpp, d, out_path):
    conv = Path(llamacpp) / "convert_hf_to_gguf.py"
    tmp = out_path.with_suffix(".gguf.tmp")
    cmd = [sys.executable, str(conv), str(d), "--outtype", "f32", "--outfile", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed on {d}:\n{r.stdout}\n{r.stderr}")
    tmp.replace(out_path)
    out_path.chmod(0o644)
    return ["python3", "convert_hf_to_gguf.py", d.name, "--outtype", "f32", "--outfile", out_path.name]


def check_gguf(path, model, arch):
    """Every GGUF tensor equals the HF weight it came from (bit for bit: F32), q/k rows
    permuted for llama only; returns a summary with the metadata sqz reads."""
    r = gguf.GGUFReader(str(path))
    cfg = model.config
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    want = {gguf_name(k): k for k in sd}
    got = {}
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        got[t.name] = np.array(t.data).reshape([int(x) for x in reversed(t.shape)])
    extra = sorted(set(got) - set(want))
    assert set(got) >= set(want), sorted(set(want) - set(got))
    permuted = []
    for gname, hf in want.items():
        w = sd[hf].astype(np.float32)
        if arch == "llama" and hf.endswith(("q_proj.weight", "k_proj.weight")):
            nkv = cfg.num_attention_heads if "q_proj" in hf else cfg.num_key_value_heads
            w = llama_permute(w, cfg.num_attention_heads, nkv)
            permuted.append(gname)
        assert got[gname].shape == w.shape, (gname, got[gname].shape, w.shape)
        assert np.array_equal(got[gname], w), f"{path.name}: {gname} differs from {hf}"
    meta = {}
    for f in r.fields.values():
        if f.name.startswith(("general.architecture", f"{arch}.", "tokenizer.ggml.model",
                              "tokenizer.ggml.pre")):
            v = f.contents()
            meta[f.name] = v
    summary = {"tensors": len(got), "equal_to_hf_weights": True,
               "qk_rows_permuted_llama_style": permuted != [], "extra_tensors": extra,
               "metadata": meta}
    if "rope_freqs.weight" in got:
        summary["rope_freqs"] = [float(x) for x in got["rope_freqs.weight"]]
    return summary


# --------------------------------------------------------------------------------------
# gradients (autograd), with a float64 finite-difference self-check
# --------------------------------------------------------------------------------------

def grad_entries(model):
    ent = []
    for l, layer in enumerate(model.model.layers):
        for kind, sub in GRAD_KINDS:
            ent.append((f"blk.{l}.{kind}", l, kind, layer.get_submodule(sub)))
    ent.append(("output", -1, "output", model.lm_head))
    ent.append(("embd", -1, "embd", None))
    return ent


def output_grads(model, tokens):
    """Autograd dL/d(output) of every Linear (+ logits, + inputs_embeds). Returns
    (transformers' loss, float64 loss from the logits, {name: [T, width]})."""
    model.zero_grad(set_to_none=True)
    outs, handles = {}, []
    for name, _, _, mod in grad_entries(model):
        if mod is None:
            continue

        def hook(m, inp, out, name=name):
            out.retain_grad()
            outs[name] = out
        handles.append(mod.register_forward_hook(hook))
    try:
        ids = torch.tensor([tokens], dtype=torch.long)
        emb = model.model.embed_tokens(ids).detach().requires_grad_(True)
        res = model(inputs_embeds=emb, labels=ids, use_cache=False)
        loss = torch.nn.functional.cross_entropy(res.logits[0, :-1], ids[0, 1:])
        lv, lt = float(loss.detach()), float(res.loss.detach())
        assert abs(lv - lt) < 1e-5 * max(1.0, abs(lv)), (lv, lt)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    grads = {n: outs[n].grad[0].detach().numpy().copy() for n in outs}
    grads["embd"] = emb.grad[0].detach().numpy().copy()
    logits = outs["output"][0].detach().double()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    tgt = torch.as_tensor(tokens[1:], dtype=torch.long)
    return res.loss.detach(), float(-lp.gather(1, tgt[:, None]).mean()), grads


def make_exact_f64(model):
    """model.double() still rounds to float32 inside transformers (RMSNorm and the eager
    softmax upcast to float32; RoPE angles are float32), which leaves ~1e-8 noise in the
    loss and ruins finite differences. Patch those places (RMSNorm per instance, the
    modeling module's eager_attention_forward, the rotary embedding per instance) to
    compute in float64. Returns an undo function."""
    mod = sys.modules[type(model.model).__module__]
    orig_eager = mod.eager_attention_forward

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        if query.dtype != torch.float64:
            return orig_eager(module, query, key, value, attention_mask, scaling, dropout, **kw)
        k = mod.repeat_kv(key, module.num_key_value_groups)
        v = mod.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w

    def norm_fwd(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))

    rot = model.model.rotary_emb
    inv64 = rot.inv_freq.double().clone()
    scale = float(rot.attention_scaling)

    def rot_fwd(self, x, position_ids):
        f = position_ids[..., None].to(torch.float64) * inv64
        e = torch.cat((f, f), dim=-1)
        return (e.cos() * scale).to(x.dtype), (e.sin() * scale).to(x.dtype)

    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = types.MethodType(norm_fwd, m)
    rot.forward = types.MethodType(rot_fwd, rot)
    mod.eager_attention_forward = eager

    def undo():
        mod.eager_attention_forward = orig_eager
    return undo


@torch.no_grad()
def fd_loss(model, tokens, perturb=None):
    ids = torch.tensor([tokens], dtype=torch.long)
    emb = model.model.embed_tokens(ids)
    h = None
    if perturb is not None:
        mod, t, j, d = perturb
        if mod is None:
            emb = emb.clone()
            emb[0, t, j] += d
        else:
            def hook(m, inp, out):
                out = out.clone()
                out[0, t, j] += d
                return out
            h = mod.register_forward_hook(hook)
    try:
        logits = model(inputs_embeds=emb, use_cache=False).logits[0].double()
    finally:
        if h is not None:
            h.remove()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    tgt = torch.as_tensor(tokens[1:], dtype=torch.long)
    return float(-lp.gather(1, tgt[:, None]).mean())


def grad_rel_check(model, tokens, grads32, weight_params, output_names):
    """float32 autograd vs float64 autograd vs float64 central finite differences (same
    method as tools/make_fixtures.py's stories260K check)."""
    eps = GRAD_FD_EPS
    params32 = dict(model.named_parameters())
    picks = []
    for pn in weight_params:
        g = params32[pn].grad.detach().numpy()
        idx = np.unravel_index(int(np.abs(g).argmax()), g.shape)
        picks.append((pn, tuple(int(i) for i in idx), float(g[idx])))
    m64 = copy.deepcopy(model).double().eval()
    undo = make_exact_f64(m64)
    try:
        _, loss64, grads64 = output_grads(m64, tokens)
        params64 = dict(m64.named_parameters())
        worst = 0.0
        for n, g32 in grads32.items():
            g64 = grads64[n]
            worst = max(worst, float(np.abs(g32 - g64).max() / max(np.abs(g64).max(), 1e-30)))
        entries = []
        for pn, idx, ag in picks:
            p = params64[pn]
            ag64 = float(p.grad[idx])
            with torch.no_grad():
                w0 = float(p[idx])
                p[idx] = w0 + eps
                lp_ = fd_loss(m64, tokens)
                p[idx] = w0 - eps
                lm_ = fd_loss(m64, tokens)
                p[idx] = w0
            fd = (lp_ - lm_) / (2 * eps)
            entries.append({"what": "weight", "param": pn, "index": list(idx),
                            "autograd_f32": ag, "autograd_f64": ag64, "fd_f64": fd,
                            "rel_err_f32": abs(ag - fd) / abs(fd), "rel_err_f64": abs(ag64 - fd) / abs(fd)})
        mods64 = {n: m for n, _, _, m in grad_entries(m64)}
        for n in output_names:
            g = grads32[n]
            t, j = (int(x) for x in np.unravel_index(int(np.abs(g).argmax()), g.shape))
            fd = (fd_loss(m64, tokens, (mods64[n], t, j, eps)) -
                  fd_loss(m64, tokens, (mods64[n], t, j, -eps))) / (2 * eps)
            ag = float(g[t, j])
            entries.append({"what": "output", "tensor": n, "t": t, "j": j,
                            "autograd_f32": ag, "autograd_f64": float(grads64[n][t, j]), "fd_f64": fd,
                            "rel_err_f32": abs(ag - fd) / abs(fd),
                            "rel_err_f64": abs(float(grads64[n][t, j]) - fd) / abs(fd)})
    finally:
        undo()
    out = {
        "method": f"float64 central finite difference (eps {eps}) on model.double() (RMSNorm incl. "
                  "q_norm/k_norm, softmax and RoPE angles patched to float64 too), vs the float32 "
                  "autograd value (rel_err_f32) and float64 autograd (rel_err_f64); 'weight' "
                  "entries: dL/dW (or dL/db) at the entry of largest |grad| of that parameter (HF "
                  "name and index); 'output' entries: the stored value of largest |value| of that "
                  "tensor, FD by perturbing that Linear output / inputs_embeds entry",
        "loss_f64_model": loss64,
        "max_rel_err_f32": max(e["rel_err_f32"] for e in entries),
        "max_rel_err_f64": max(e["rel_err_f64"] for e in entries),
        "max_rel_diff_f32_vs_f64_autograd_all_tensors": worst,
        "entries": entries,
    }
    assert out["max_rel_err_f64"] < 1e-6, out
    assert out["max_rel_err_f32"] < 1e-3, out
    return out


def f32r(x):
    """Shortest decimal that round-trips the float32 value."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-")) \
        if abs(float(x)) >= 1e-4 or x == 0 else float(np.format_float_scientific(np.float32(x), unique=True))


def make_grads(name, model, tokens):
    T, layout = GRAD_MODELS[name]
    tokens = tokens[:T]
    assert len(tokens) == T
    loss_t, loss, grads = output_grads(model, tokens)
    assert abs(float(loss_t) - loss) < 1e-5, (float(loss_t), loss)
    L = model.config.num_hidden_layers
    wparams = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
               f"model.layers.{L - 1}.mlp.gate_proj.weight", f"model.layers.{L - 1}.self_attn.o_proj.weight"]
    pnames = dict(model.named_parameters())
    for extra in ("model.layers.0.self_attn.k_proj.bias", "model.layers.0.self_attn.q_norm.weight",
                  "model.layers.0.self_attn.k_norm.weight"):
        if extra in pnames:
            wparams.append(extra)
    # 1-D parameters: index as a 1-tuple
    rel = grad_rel_check(model, tokens, grads, wparams,
                         ["blk.0.attn_q", "blk.0.attn_k", f"blk.{L - 1}.attn_v", f"blk.{L - 1}.ffn_up",
                          "output", "embd"])
    tensors, chunks, off = [], [], 0
    half = GRAD_SAMPLES // 2
    for idx, (n, l, kind, _) in enumerate(grad_entries(model)):
        g = grads[n]
        assert g.shape[0] == T and np.isfinite(g).all(), n
        e = {"name": n, "layer": l, "kind": kind, "rows": T, "cols": int(g.shape[1])}
        if layout == "full":
            e["offset"] = off
            chunks.append(g.astype("<f4").ravel())
            off += g.size
        else:
            rng = np.random.default_rng(1234 + idx)
            flat = g.ravel()
            uni = rng.choice(flat.size, half, replace=False)
            k = max(half, int(math.ceil(0.05 * flat.size)))
            top = np.sort(np.argsort(-np.abs(flat), kind="stable")[:k])
            big = rng.choice(top, half, replace=False)
            e["max_abs"] = f32r(np.abs(g).max())
            e["samples"] = [[*divmod(int(fi), g.shape[1]), f32r(flat[fi])] for fi in list(uni) + list(big)]
            off += len(e["samples"])
        tensors.append(e)
    head = {"model": f"arch/{name} (HF folder; q/k columns in HF rotate_half order, unchanged)"}
    if layout == "full":
        write_f32(OUT / f"{name}.grads.f32", np.concatenate(chunks))
        head["data"] = f"{name}.grads.f32"
    else:
        (OUT / f"{name}.grads.f32").unlink(missing_ok=True)
        head["sampling"] = (f"per tensor (index i in this list): numpy default_rng(1234 + i); {half} "
                            f"entries uniform over [rows, cols] without replacement, then {half} without "
                            "replacement among the ceil(5%) entries of largest |value|; max_abs = the "
                            "tensor's largest |value|")
    write_json(OUT / f"{name}.grads.json", {
        **head,
        "tokens": tokens, "loss": loss, "loss_def": GRAD_LOSS_DEF,
        "produced_by": produced_by("gradients by torch autograd (float32); for attn_q/k/v the "
                                   "gradient of the Linear's output including its bias (= of the "
                                   "pre-bias product); for Qwen3 attn_q/attn_k it is the gradient "
                                   "before q_norm/k_norm"),
        "rel_check": rel,
        "tensors": tensors,
    }, list_key="tensors")
    print(f"  grads ({layout}): T {T}, loss {loss:.6f}, {off} values, FD max rel err f32 "
          f"{rel['max_rel_err_f32']:.3g} f64 {rel['max_rel_err_f64']:.3g}, f32 vs f64 autograd "
          f"{rel['max_rel_diff_f32_vs_f64_autograd_all_tensors']:.3g}")
    return rel


# --------------------------------------------------------------------------------------
# cross-check (optional): llama.cpp's own llama-perplexity on the GGUF vs transformers on
# the HF folder, same tokens, same protocol
# --------------------------------------------------------------------------------------

PPL_CTX, PPL_CHUNKS = 32, 8


def llamacpp_ppl_check(gguf_path, model, shared, bindir):
    import tempfile
    tok_exe, ppl_exe = Path(bindir) / "llama-tokenize", Path(bindir) / "llama-perplexity"
    if not (tok_exe.exists() and ppl_exe.exists()):
        return None
    # The tiny vocabulary has no byte pieces (llama.cpp's SPM tokenizer aborts on a
    # character it cannot place), so the text is the tokenizer's own training lines,
    # joined by spaces (no newlines).
    text = (Path(shared) / "data" / "tinystories-valid-head.txt").read_text(encoding="utf-8")
    text = " ".join(ln for ln in text.splitlines() if ln.strip() and ln.isascii())[:4000]
    with tempfile.TemporaryDirectory() as tmp:
        tp = Path(tmp) / "text.txt"
        tp.write_text(text, encoding="utf-8")
        r = subprocess.run([str(tok_exe), "-m", str(gguf_path), "-f", str(tp), "--ids", "--log-disable"],
                           capture_output=True, text=True, check=True)
        ids = json.loads(r.stdout.strip().splitlines()[-1])
        # llama.cpp's log thread at times loses the last lines when the output is a pipe
        # (rc 0, no "Final estimate"): try again
        ppl_cpp = None
        for _ in range(5):
            r = subprocess.run([str(ppl_exe), "-m", str(gguf_path), "-f", str(tp), "-c", str(PPL_CTX),
                                "-b", str(PPL_CTX), "--chunks", str(PPL_CHUNKS), "-ctk", "f32", "-ctv",
                                "f32", "-t", "2"], capture_output=True, text=True)
            for line in (r.stdout + r.stderr).splitlines():
                if "Final estimate: PPL" in line:
                    ppl_cpp = float(line.split("=")[1].split("+/-")[0])
            if ppl_cpp is not None:
                break
    if ppl_cpp is None:
        return {"error": "llama-perplexity printed no estimate", "rc": r.returncode}
    bos = model.config.bos_token_id
    assert ids[0] == bos, ids[:4]  # llama-tokenize adds BOS like llama-perplexity
    # tools/perplexity/perplexity.cpp: chunk i = ids[i*ctx, (i+1)*ctx), first token -> BOS,
    # logits at ctx/2 .. ctx-2 score the tokens at ctx/2+1 .. ctx-1
    nll, cnt, first = 0.0, 0, PPL_CTX // 2
    n = min(PPL_CHUNKS, len(ids) // PPL_CTX)
    for i in range(n):
        w = list(ids[i * PPL_CTX:(i + 1) * PPL_CTX])
        w[0] = bos
        lg = torch.as_tensor(run_logits(model, w), dtype=torch.float64)
        lp = torch.log_softmax(lg[first:PPL_CTX - 1], dim=-1)
        tgt = torch.as_tensor(w[first + 1:PPL_CTX], dtype=torch.long)
        nll += float(-lp.gather(1, tgt[:, None]).sum())
        cnt += PPL_CTX - 1 - first
    ppl_hf = math.exp(nll / cnt)
    rel = abs(ppl_cpp - ppl_hf) / ppl_hf
    assert rel < 1e-3, f"{gguf_path.name}: llama-perplexity {ppl_cpp} vs transformers {ppl_hf}"
    return {"what": f"llama.cpp's llama-perplexity -c {PPL_CTX} -b {PPL_CTX} --chunks {PPL_CHUNKS} "
                    "-ctk f32 -ctv f32 on the GGUF vs the same protocol in transformers on the HF "
                    "folder, tokens from llama-tokenize (BOS first) of the ASCII lines of "
                    "../shared/data/tinystories-valid-head.txt joined by spaces (first 4000 chars)",
            "chunks": n, "ppl_llama_cpp": ppl_cpp, "ppl_transformers": ppl_hf, "rel_diff": rel}


# --------------------------------------------------------------------------------------

def make_one(name, tok_model, llamacpp, do_grads, shared, bindir):
    cls, cfg_cls, kw, seed, what = MODELS[name]
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(seed)
    model = cls(cfg).float().eval()
    tiny_init(model, gen)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tokens = torch.randint(0, cfg.vocab_size, (T_TOKENS,), generator=gen).tolist()

    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    (d / "tokenizer.model").write_bytes(tok_model)
    if name == "llama3":
        classic_llama3_config(d)
    for p in d.iterdir():
        p.chmod(0o644)
    files = sorted(p.name for p in d.iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".index.json") for f in files), files
    if cfg.tie_word_embeddings:
        from safetensors import safe_open
        with safe_open(d / "model.safetensors", "pt") as f:
            assert "lm_head.weight" not in f.keys(), "tied model stored lm_head"

    # The reference is what transformers computes from the stored folder.
    back = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    logits = run_logits(back, tokens)
    assert logits.shape == (T_TOKENS, cfg.vocab_size)
    assert np.isfinite(logits).all()
    write_f32(d / "logits.f32", logits)
    divisors, att_scale = rotary_divisors(back)
    assert att_scale == 1.0, att_scale
    if name == "llama3":
        assert back.config.rope_parameters["rope_type"] == "llama3", back.config.rope_parameters
        rd = np.array(divisors)
        assert np.any(np.isclose(rd, 1.0)) and np.any(np.isclose(rd, 8.0)) and \
            np.any((rd > 1.01) & (rd < 7.99)), divisors
    sens = sensitivity(back, tokens, logits)

    gpath = OUT / f"{name}.gguf"
    cmd = convert(llamacpp, d, gpath)
    arch = {"qwen2": "qwen2", "qwen3": "qwen3", "llama3": "llama"}[name]
    gsum = check_gguf(gpath, back, arch)
    if name == "llama3":
        assert "rope_freqs" in gsum, "converter wrote no rope_freqs.weight"
        diff = float(np.abs(np.array(gsum["rope_freqs"]) - np.array(divisors)).max())
        gsum["rope_freqs_max_abs_diff_vs_transformers_divisors"] = diff
        assert diff < 1e-5, (gsum["rope_freqs"], divisors)
    conv = Path(llamacpp)
    gsum.update({"file": gpath.name, "bytes": gpath.stat().st_size, "sha256": sha256(gpath),
                 "converter": f"llama.cpp convert_hf_to_gguf.py from the llama-cpp-python "
                              f"{LLAMACPP_VER} source package (gguf-py {versions()['gguf-py']}), "
                              f"sha256 {sha256(conv / 'convert_hf_to_gguf.py')[:16]}",
                 "command": " ".join(cmd)})

    if bindir:
        xc = llamacpp_ppl_check(gpath, back, shared, bindir)
        if xc is not None:
            gsum["llama_cpp_cross_check"] = xc
            print(f"  llama.cpp cross-check: {xc}")

    nll = mean_nll(logits, tokens)
    ref = {
        "what": what,
        "tokens": tokens,
        "tokens_from": f"torch.Generator().manual_seed({seed}) after the weights, uniform over the vocab",
        "shape": [T_TOKENS, cfg.vocab_size],
        "logits": "logits.f32",
        "produced_by": produced_by(f"{cls.__name__}.from_pretrained of this folder"),
        "versions": versions(),
        "stored_dtype": "float32",
        "mean_nll": nll,
        "logit_std": float(logits.std()),
        "argmax": logits.argmax(1).tolist(),
        "rope_divisors": divisors,
        "sensitivity_max_abs_logit_change": sens,
        "tokenizer": {"file": "tokenizer.model", "sha256": sha256(d / "tokenizer.model"),
                      "how": "sentencepiece BPE, vocab 256, identity normalization, no byte "
                             "fallback, trained on the ASCII lines of "
                             "../shared/data/tinystories-valid-head.txt (only the converter "
                             "needs it; the logits use token ids directly)"},
        "gguf": gsum,
    }
    if do_grads:
        rel = make_grads(name, back, tokens)
        ref["grads"] = {"json": f"{name}.grads.json", "layout": GRAD_MODELS[name][1],
                        "tokens": GRAD_MODELS[name][0], "fd_max_rel_err_f32": rel["max_rel_err_f32"]}
    write_json(d / "reference.json", ref)
    xc = gsum.get("llama_cpp_cross_check") or {}
    row = (f"| {name:<8} | {max(sens.values()):.3g} | "
           f"{ref['grads']['fd_max_rel_err_f32']:.2g} | " if do_grads else f"| {name:<8} | - | ")
    row += (f"{xc['ppl_llama_cpp']} vs {xc['ppl_transformers']:.4f} ({xc['rel_diff']:.1e}) |"
            if "rel_diff" in xc else "not run |")
    print(f"arch/{name}: logit std {logits.std():.3f}, mean NLL {nll:.4f}, divisors "
          f"{[round(x, 4) for x in divisors]}, sensitivity {sens}, {dir_size(d)} + "
          f"{gpath.stat().st_size} bytes")
    return row


README = """# Architecture fixtures (`tests/fixtures/arch/`)

Written by `python3 tools/make_arch_fixtures.py` (never by CI). The numbers come from Hugging Face
transformers (float32, CPU, eager attention), the GGUF files from llama.cpp's own
`convert_hf_to_gguf.py --outtype f32`; sqz is never called. Checked by `tests/test_forward.c`
(logits from the HF folder and from the GGUF, max |diff| <= 1e-4, argmax equal at every position)
and `tests/test_grad.c` (backward vs autograd).

| model    | what it exercises |
|----------|-------------------|
{rows}

Per model `<name>`:

- `<name>/`: `save_pretrained` folder (config.json, generation_config.json, model.safetensors float32),
  `tokenizer.model` (a tiny SentencePiece BPE: the converter refuses a model without a vocabulary,
  and a byte-level BPE tokenizer.json would stop it too, its pre-tokenizer hash being one it does not
  know), `logits.f32` (T x V float32 LE: transformers' logits for `reference.json`'s `tokens`), and
  `reference.json` (tokens, versions, argmax, transformers' RoPE frequency divisors, the GGUF's
  check summary, and `sensitivity_max_abs_logit_change`: how much the logits move when the feature
  under test is dropped, e.g. biases zeroed, so a forward pass that ignores it cannot pass).
- `<name>.gguf`: the same weights converted by llama.cpp. The generator checks every tensor is
  bit-identical to the HF weight it came from (q/k rows permuted for `llama` only; Qwen keeps
  rotate-half rows: llama.cpp's NEOX RoPE), and for llama3 that `rope_freqs.weight` equals
  transformers' divisors (default inv_freq / llama3 inv_freq) within 1e-5. When llama.cpp's tools
  are built, `reference.json`'s `gguf.llama_cpp_cross_check` also compares llama.cpp's own
  `llama-perplexity` on the GGUF with transformers on the folder (same tokens, same protocol).
- `<name>.grads.json` (+ `<name>.grads.f32`): dL/d(output) of every Linear, the logits and the
  embeddings for the mean next-token cross entropy on the first T of `tokens` (the JSON's own
  `tokens`), in the format of `tests/fixtures/grads/` (README there): qwen2 and qwen3 complete
  (T = 24, like stories260K.json + .f32), llama3 sampled (T = 32, 64 entries per tensor, like
  smollm2.json; keeps the folder under 3 MB). q/k columns in HF order
  (sqz keeps the HF layout for both the folder and, for Qwen, the GGUF). Qwen2's attn_q/k/v
  gradient is the gradient of the biased output (equal to the pre-bias product's); Qwen3's
  attn_q/attn_k gradient is taken before q_norm/k_norm. `rel_check` is a float64
  finite-difference self-check of the autograd (incl. a k bias and q_norm/k_norm weights).

At generation time (largest logit change when the feature is dropped; autograd float32 vs float64
finite differences, worst relative error; llama.cpp's perplexity on the GGUF vs transformers'):

| model    | max sensitivity | FD rel err | llama-perplexity vs transformers (rel) |
|----------|-----------------|------------|----------------------------------------|
{results}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the ../shared folder")
    ap.add_argument("--llamacpp", default=os.path.expanduser(f"~/.cache/sqz/llama.cpp-{LLAMACPP_VER}"),
                    help="llama.cpp source tree (for convert_hf_to_gguf.py)")
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_BIN"),
                    help="llama.cpp's built tools (default: <--llamacpp>/build/bin), for the "
                         "llama-perplexity cross-check")
    ap.add_argument("--no-llamacpp-check", action="store_true", help="skip the llama-perplexity cross-check")
    args = ap.parse_args()
    bindir = None if args.no_llamacpp_check else (args.llama_bin or str(Path(args.llamacpp) / "build" / "bin"))
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = args.only.split(",")
    for n in names:
        if n not in MODELS:
            sys.exit(f"unknown model {n}")
    if not (Path(args.llamacpp) / "convert_hf_to_gguf.py").exists():
        sys.exit(f"{args.llamacpp}: no convert_hf_to_gguf.py (run scripts/build_llamacpp.sh or pass --llamacpp)")
    OUT.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(args.shared)
    results = [make_one(n, tok, args.llamacpp, n in GRAD_MODELS, args.shared, bindir) for n in names]
    rows = "\n".join(f"| {n:<8} | {MODELS[n][4]} |" for n in MODELS)
    if names == list(MODELS):  # a partial run leaves the README as it is
        (OUT / "README.md").write_text(README.format(rows=rows, results="\n".join(results)))
    print(f"{OUT.relative_to(ROOT)}: {dir_size(OUT)} bytes")


if __name__ == "__main__":
    main()

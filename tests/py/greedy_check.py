#!/usr/bin/env python3
"""Greedy tokens of a quantized file against the unquantized model's, both run by llama.cpp,
compared at every position where the reference's choice is clear.

    greedy_check.py LLAMA_BIN REF.gguf GOT.gguf SQZ_SOURCE.gguf TOOL_LOGITS WORKDIR PROMPT N
        [--margin 0.5]

1. llama-completion --temp 0 writes N tokens after PROMPT from REF.gguf (the reference);
   llama-tokenize gives their ids.
2. The reference model's own logits at those positions (sqz's exact-f32 forward on
   SQZ_SOURCE.gguf, the same weights as REF.gguf, through TOOL_LOGITS) give each
   position's top-1/top-2 logit margin, and sqz's argmax must equal llama.cpp's token
   wherever that margin is clear (an independent check of the ids and of sqz's forward).
3. llama-completion on GOT.gguf continues the reference's text; where its token differs
   from the reference's, the position must be a near-tie (margin < --margin: a Q8_0
   file's roundings and llama.cpp's 8-bit activations move logits by ~0.3 on SmolLM2),
   else the check fails; after a near-tie it continues from the reference's text with the
   reference's token, so every clear position is compared (teacher forcing).
Exit 0 when every clear position agrees, 1 otherwise (with the first difference printed).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def tokenize(bin_dir, model, text, work):
    """llama-tokenize's ids and pieces of TEXT (no BOS is added by these models)."""
    path = os.path.join(work, "tok.txt")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    r = run([os.path.join(bin_dir, "llama-tokenize"), "-m", model, "-f", path, "--log-disable"])
    if r.returncode:
        sys.exit(f"  FAIL: llama-tokenize exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
    out = r.stdout.decode("utf-8", "replace")
    toks = re.findall(r"^\s*(\d+) -> '(.*?)'\n(?=\s*\d+ -> '|\Z)", out, flags=re.S | re.M)
    if not toks:
        sys.exit(f"  FAIL: no tokens parsed from llama-tokenize's output: {out[:200]!r}")
    return [int(i) for i, _ in toks], [p for _, p in toks]


def complete(bin_dir, model, prompt, n, work, name):
    """llama-completion's greedy text after PROMPT (retried when its output came out short:
    llama.cpp's logger can lose the end of a run, see tests/lib_llamacpp.sh)."""
    path = os.path.join(work, f"prompt-{name}.txt")
    with open(path, "wb") as f:
        f.write(prompt.encode("utf-8"))
    cmd = [os.path.join(bin_dir, "llama-completion"), "-m", model, "-f", path, "-n", str(n),
           "--temp", "0", "-no-cnv", "-t", "1", "--no-warmup"]
    for attempt in range(3):
        r = run(cmd, stdin=subprocess.DEVNULL)
        log = r.stderr.decode(errors="replace")
        if r.returncode:
            sys.exit(f"  FAIL: llama-completion on {model} exited {r.returncode}: {log[-300:]}")
        if "common_perf_print: " in log and "total time" in log:
            break
    text = r.stdout.decode("utf-8", "replace")
    if not text.startswith(prompt):
        sys.exit(f"  FAIL: llama-completion's output on {model} does not start with the prompt: {text[:80]!r}")
    return text


def main():
    a = sys.argv[1:]
    margin_min = 0.5
    if "--margin" in a:
        i = a.index("--margin")
        margin_min = float(a[i + 1])
        del a[i:i + 2]
    if len(a) != 8:
        sys.exit(__doc__)
    bin_dir, ref_model, got_model, sqz_source, tool, work, prompt, n = a
    n = int(n)
    os.makedirs(work, exist_ok=True)

    prompt_ids, _ = tokenize(bin_dir, ref_model, prompt, work)
    P = len(prompt_ids)
    ref_text = complete(bin_dir, ref_model, prompt, n, work, "ref")
    ids, pieces = tokenize(bin_dir, ref_model, ref_text, work)
    if ids[:P] != prompt_ids:
        sys.exit(f"  FAIL: the reference text's ids do not start with the prompt's: {ids[:P]} vs {prompt_ids}")
    n = min(n, len(ids) - P)
    if n < 8:
        sys.exit(f"  FAIL: the reference wrote only {n} tokens: {ref_text!r}")
    ids, pieces = ids[:P + n], pieces[:P + n]

    # the reference model's margins at the n generated positions
    with open(os.path.join(work, "ids.json"), "w") as f:
        json.dump(ids, f)
    lg = os.path.join(work, "ref.f32")
    r = run([tool, sqz_source, os.path.join(work, "ids.json"), lg])
    if r.returncode:
        sys.exit(f"  FAIL: tool_logits exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
    logits = np.fromfile(lg, dtype=np.float32).reshape(len(ids), -1)
    margin, sqz_top = [], []
    for j in range(n):
        row = logits[P + j - 1]
        top2 = np.partition(row, -2)[-2:]
        margin.append(float(top2[1] - top2[0]))
        sqz_top.append(int(row.argmax()))
    clear = [j for j in range(n) if margin[j] >= margin_min]
    ok = True
    for j in clear:
        if sqz_top[j] != ids[P + j]:
            print(f"  FAIL: position {j}: llama.cpp's reference token {ids[P + j]} {pieces[P + j]!r}, "
                  f"sqz's argmax on the same weights {sqz_top[j]} (margin {margin[j]:.3f})")
            ok = False
    print(f"  reference (llama.cpp on the unquantized model): {ref_text[len(prompt):]!r}")
    print(f"  {len(clear)} of {n} positions clear (top-1/top-2 logit margin >= {margin_min}); "
          f"near-ties at {[j for j in range(n) if margin[j] < margin_min]}")

    # the file under test, teacher-forced through near-ties
    k, restarts, compared, ties_flipped = 0, 0, 0, []
    while ok and k < n:
        prefix = "".join(pieces[:P + k])
        got = complete(bin_dir, got_model, prefix, n - k, work, f"got{restarts}")
        gids, gpieces = tokenize(bin_dir, ref_model, got, work)
        if gids[:P + k] != ids[:P + k]:
            print(f"  FAIL: the continued prefix did not tokenize back to the reference's ids "
                  f"(restart {restarts}): {gids[:P + k]} vs {ids[:P + k]}")
            ok = False
            break
        d = next((i for i in range(P + k, P + n) if i >= len(gids) or gids[i] != ids[i]), None)
        compared += sum(1 for j in range(k, (d - P) if d is not None else n) if margin[j] >= margin_min)
        if d is None:
            break
        j = d - P
        g = (gids[d], gpieces[d]) if d < len(gids) else (None, "<end>")
        if margin[j] >= margin_min:
            print(f"  FAIL: position {j}: reference {ids[d]} {pieces[d]!r}, file under test {g[0]} {g[1]!r}, "
                  f"at a clear position (reference margin {margin[j]:.3f} >= {margin_min})")
            ok = False
            break
        ties_flipped.append((j, pieces[d], g[1], round(margin[j], 3)))
        k, restarts = j + 1, restarts + 1
    if ok:
        print(f"  the file under test writes the reference's token at all {compared} clear positions; "
              f"near-ties it chose otherwise (position, reference, file, margin): {ties_flipped}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

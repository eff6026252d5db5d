#!/usr/bin/env bash
# compress below 3 bpw with the default candidates (issue 16 item 4): on a tiny Llama whose
# rows are all multiples of 256 (tests/py/make_tiny256.py, random weights, token ids as
# calibration), `sqz compress --target-bpw 2.5` reaches the budget with the 2-3-bit
# i-quants among its options (IQ3_XXS, IQ2_S, IQ2_XS, IQ2_XXS), writes a file within it
# that gguf-py reads and dequantizes to finite values, and names those types in its
# report; the same run with the 3-bpw-and-up default list given by --types is refused
# (below its smallest size: the switch is what makes 2.5 reachable); at 4 bpw the default
# list is the usual one (no 2-bit i-quant among the options).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "${SQZ_TMP:-/tmp}"
T="${SQZ_TMP:-/tmp}/t_lowbit.$$"
rm -rf "$T"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
[[ -x "$sqz" ]] || { echo "t_lowbit: FAIL: sqz binary not found at $sqz"; exit 1; }
python3 "$root/tests/py/make_tiny256.py" "$T/m.gguf" "$T/ids.json" || { echo "t_lowbit: FAIL: make_tiny256.py"; exit 1; }
c=(--calib "$T/ids.json" --nsamples 8 --seqlen 64 --seed 0 --threads 2 --quiet)

"$sqz" compress "$T/m.gguf" -o "$T/a.gguf" --target-bpw 2.5 "${c[@]}" --json "$T/a.json" >"$T/a.log" 2>&1 ||
    bad "compress --target-bpw 2.5 with the default types failed: $(tail -n 2 "$T/a.log")"
python3 - "$T/a.gguf" "$T/a.json" <<'PY' || bad "the 2.5-bpw file or its report (above)"
import json, sys
import numpy as np
import gguf
from gguf import GGUFReader
path, rep = sys.argv[1], json.load(open(sys.argv[2]))
ok = True
low = {"IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS"}
opts = {o["type"] for t in rep["tensors"] for o in t["options"]}
used = {t["type"] for t in rep["tensors"]}
size = len(open(path, "rb").read())
print(f"  2.5 bpw: {size} bytes (budget {rep['budget_bytes']}); options {sorted(opts)}; chosen {sorted(used)}")
if not low <= opts: print(f"FAIL: options lack {sorted(low - opts)}"); ok = False
if not used & low: print("FAIL: no tensor took a 2-3-bit i-quant"); ok = False
if size > rep["budget_bytes"]: print("FAIL: the file is over the budget"); ok = False
r = GGUFReader(path)
for t in r.tensors:
    v = gguf.quants.dequantize(t.data, t.tensor_type)
    if not np.all(np.isfinite(v)): print(f"FAIL: {t.name} ({t.tensor_type.name}): non-finite values"); ok = False
    want = next((x["type"] for x in rep["tensors"] if x["name"] == t.name), None)
    if want and want != t.tensor_type.name: print(f"FAIL: {t.name}: file {t.tensor_type.name}, report {want}"); ok = False
sys.exit(0 if ok else 1)
PY

"$sqz" compress "$T/m.gguf" -o "$T/b.gguf" --target-bpw 2.5 "${c[@]}" \
    --types Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,IQ4_NL,F16,IQ3_S,IQ4_XS >"$T/b.log" 2>&1
st=$?
[[ $st == 1 && ! -e "$T/b.gguf" ]] && grep -q "below the smallest reachable size" "$T/b.log" ||
    bad "2.5 bpw with the 3-bpw-and-up list: exit $st, want 1 and 'below the smallest reachable size': $(tail -n 1 "$T/b.log")"

"$sqz" compress "$T/m.gguf" -o "$T/c.gguf" --target-bpw 4 "${c[@]}" --json "$T/c.json" >"$T/c.log" 2>&1 ||
    bad "compress --target-bpw 4 failed: $(tail -n 2 "$T/c.log")"
python3 -c 'import json,sys; o={x["type"] for t in json.load(open(sys.argv[1]))["tensors"] for x in t["options"]}; sys.exit(1 if o & {"IQ3_XXS","IQ2_S","IQ2_XS","IQ2_XXS"} else 0)' "$T/c.json" ||
    bad "at 4 bpw the default options include a 2-bit i-quant"

# the same compress, its file tuned end to end (--tune-steps): the same size and types,
# gguf-py reads every tensor, the held-out KL written is at most the untuned file's
"$sqz" compress "$T/m.gguf" -o "$T/d.gguf" --target-bpw 2.5 "${c[@]}" --tune-steps 3 --json "$T/d.json" >"$T/d.log" 2>&1 ||
    bad "compress --tune-steps 3 failed: $(tail -n 2 "$T/d.log")"
python3 - "$T/a.gguf" "$T/d.gguf" "$T/d.json" <<'PY' || bad "the tuned 2.5-bpw file (above)"
import json, sys
import numpy as np
import gguf
from gguf import GGUFReader
a, d, rep = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2]), json.load(open(sys.argv[3]))
ok = True
tune = rep.get("tune")
if not tune: print("FAIL: no 'tune' in the report"); sys.exit(1)
st = tune["steps"]
best = st[tune["best_step"]]["heldout_kl"]
print(f"  tuned: {tune['tensors']} tensors, {tune['factors']} factors, held-out KL {st[0]['heldout_kl']:.6f} -> {best:.6f} (step {tune['best_step']})")
if best > st[0]["heldout_kl"]: print("FAIL: the tuned file's held-out KL is above the input's"); ok = False
if len(open(sys.argv[1], "rb").read()) != len(open(sys.argv[2], "rb").read()): print("FAIL: sizes differ"); ok = False
ta = {t.name: t for t in a.tensors}
changed = 0
for t in d.tensors:
    u = ta[t.name]
    if u.tensor_type != t.tensor_type: print(f"FAIL: {t.name}: type {t.tensor_type.name}, untuned {u.tensor_type.name}"); ok = False
    v = gguf.quants.dequantize(t.data, t.tensor_type)
    if not np.all(np.isfinite(v)): print(f"FAIL: {t.name}: non-finite values"); ok = False
    changed += not np.array_equal(np.asarray(t.data), np.asarray(u.data))
if tune["best_step"] > 0 and changed == 0: print("FAIL: a best step > 0 but no tensor changed"); ok = False
sys.exit(0 if ok else 1)
PY

if [[ $fails -gt 0 ]]; then echo "t_lowbit: $fails failure(s)"; exit 1; fi
echo "t_lowbit: OK"

#!/usr/bin/env bash
# CPU/CUDA parity of the backend seam, run on the GPU machine (issue 15 item 4):
#   parity.sh BIN_DIR MODEL.gguf CALIB.txt TEXT.txt OUT_DIR
# BIN_DIR holds a CUDA build's sqz and test_backend (cmake -DSQZ_CUDA=ON).
#  1. test_backend: Grams and GPTQ factors of the CUDA backend against the CPU's (widths
#     256, 1536, 8960), GPTQ output error with either factor, out-of-memory handling;
#  2. sqz quantize MODEL --type Q4_K --method gptq (16 × 512 calibration tokens) with
#     --device cpu and --device cuda: the same sizes, `sqz ppl` (TEXT, ctx 512, 16 chunks)
#     within 0.1% of each other, each tensor's H-weighted output error within 1%;
#  3. sqz compress MODEL --target-bpw 4.5 (8 × 512 tokens) with either device: the same allocation plan
#     (every tensor's type) and perplexities within 0.1%.
# Prints the table and the wall times; exits 1 on any difference beyond those bounds.
set -uo pipefail
bin=$1 model=$2 calib=$3 text=$4 out=$5
mkdir -p "$out"
fails=0
bad() { echo "parity: FAIL: $*"; fails=$((fails + 1)); }

echo "== test_backend"
"$bin/test_backend" || bad "test_backend exited $?"

q_common=(quantize "$model" --type Q4_K --method gptq --calib "$calib" --nsamples 16 --seqlen 512 --quiet)
for dev in cpu cuda; do
    echo "== sqz ${q_common[*]:0:1} MODEL ${q_common[*]:2} --device $dev"
    t0=$SECONDS
    "$bin/sqz" "${q_common[@]}" -o "$out/q-$dev.gguf" --device $dev --json "$out/q-$dev.json" \
        >"$out/q-$dev.log" 2>&1 || bad "quantize --device $dev: $(tail -n 2 "$out/q-$dev.log")"
    echo "  $(head -n 1 "$out/q-$dev.log") [wall $((SECONDS - t0)) s]"
    "$bin/sqz" ppl "$out/q-$dev.gguf" "$text" --ctx 512 --chunks 16 --json "$out/ppl-q-$dev.json" \
        >"$out/ppl-q-$dev.log" 2>&1 || bad "ppl on q-$dev: $(tail -n 2 "$out/ppl-q-$dev.log")"
done

c_common=(compress "$model" --target-bpw 4.5 --calib "$calib" --nsamples 8 --seqlen 512 --quiet)
for dev in cpu cuda; do
    echo "== sqz ${c_common[*]:0:1} MODEL ${c_common[*]:2} --device $dev"
    t0=$SECONDS
    "$bin/sqz" "${c_common[@]}" -o "$out/c-$dev.gguf" --device $dev --json "$out/c-$dev.json" \
        >"$out/c-$dev.log" 2>&1 || bad "compress --device $dev: $(tail -n 2 "$out/c-$dev.log")"
    echo "  $(tail -n 1 "$out/c-$dev.log") [wall $((SECONDS - t0)) s]"
    "$bin/sqz" ppl "$out/c-$dev.gguf" "$text" --ctx 512 --chunks 16 --json "$out/ppl-c-$dev.json" \
        >"$out/ppl-c-$dev.log" 2>&1 || bad "ppl on c-$dev: $(tail -n 2 "$out/ppl-c-$dev.log")"
done

python3 - "$out" <<'EOF' || bad "see the table above"
import json, os, sys
d = sys.argv[1]
ok = True
def load(name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None
print("| run | cpu | cuda | rel. difference |")
print("|---|---:|---:|---:|")
for k in ("q", "c"):
    a, b = load(f"ppl-{k}-cpu.json"), load(f"ppl-{k}-cuda.json")
    if not a or not b:
        print(f"FAIL: {k}: a perplexity is missing"); ok = False; continue
    rel = abs(a["ppl"] - b["ppl"]) / a["ppl"]
    print(f"| {'quantize Q4_K GPTQ' if k == 'q' else 'compress 4.5 bpw'} ppl | {a['ppl']:.4f} | {b['ppl']:.4f} | {rel:.2e} |")
    if rel > 1e-3: print(f"FAIL: {k}: perplexities {rel:.2e} apart (bound 1e-3)"); ok = False
qa, qb = load("q-cpu.json"), load("q-cuda.json")
if qa and qb:
    ta = {t["name"]: t for t in qa["tensors"]}
    worst, name = 0.0, ""
    for t in qb["tensors"]:
        u = ta.get(t["name"])
        e1, e2 = (u or {}).get("rel_output_err"), t.get("rel_output_err")
        if isinstance(e1, (int, float)) and isinstance(e2, (int, float)) and e1 == e1 and e1 > 0:
            r = abs(e2 - e1) / e1
            if r > worst: worst, name = r, t["name"]
    print(f"| quantize: worst tensor output-error difference | | | {worst:.2e} ({name}) |")
    if worst > 0.01: print("FAIL: a tensor's GPTQ output error differs by more than 1%"); ok = False
    if qa["totals"]["file_bytes"] != qb["totals"]["file_bytes"]:
        print("FAIL: quantize: file sizes differ"); ok = False
ca, cb = load("c-cpu.json"), load("c-cuda.json")
if ca and cb:
    pa = {t["name"]: t["type"] for t in ca["tensors"]}
    pb = {t["name"]: t["type"] for t in cb["tensors"]}
    same = pa == pb
    print(f"| compress: the same plan (every tensor's type) | | | {'yes' if same else 'NO'} |")
    if not same: ok = False
sys.exit(0 if ok else 1)
EOF
if [[ $fails -gt 0 ]]; then echo "parity: $fails failure(s)"; exit 1; fi
echo "parity: OK"

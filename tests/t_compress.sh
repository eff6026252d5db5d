#!/usr/bin/env bash
# sqz compress on stories260K (calibration from its token ids, candidate types that fit
# 64/172-wide rows): the file never exceeds the budget and its size is what the report
# says; the tensors in the file (read by gguf-py) have the plan's types; two rounds are
# reported with finite held-out perplexities; --html writes a self-contained page;
# llama.cpp loads the file and runs it (llama-bench: prompt + generation) and its
# llama-perplexity agrees with sqz ppl on it (see below); sqz sensitivity's predictions
# rank-correlate with measured loss changes (see below); the same inputs give the same
# bytes. Then bad input: a budget below the smallest reachable size
# states that minimum; one above the unquantized size says so and writes a file that
# fits; unknown --target-size units are rejected; an interrupted run leaves nothing.
# Needs llama.cpp's tools (llama-bench, llama-perplexity, llama-quantize): without them the
# test FAILS, unless SQZ_NO_LLAMACPP=1, when their checks alone are skipped (and listed).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_llamacpp.sh"
mkdir -p "${SQZ_TMP:-/tmp}"
T="${SQZ_TMP:-/tmp}/t_compress.$$"
rm -rf "$T"
mkdir -p "$T/o"
bg_pid=
cleanup() {
    [[ -n "$bg_pid" ]] && kill -KILL "$bg_pid" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
checks=0
die() { echo "t_compress: FAIL: $*" >&2; exit 1; }
check() { # check DESCRIPTION CONDITION-STATUS
    checks=$((checks + 1))
    if [[ $2 -ne 0 ]]; then fails=$((fails + 1)); echo "FAIL: $1" >&2; else echo "ok: $1"; fi
}
[[ -x "$sqz" ]] || die "sqz binary not found at $sqz"
model="$shared/models/stories260K"
ids="$shared/models/stories260K/reference_greedy_tokens.json"
[[ -f "$ids" ]] || die "$ids not found"
llama="$(sqz_llama_bin)"
have_llama=1
sqz_want_llamacpp t_compress "$llama/llama-bench" "$llama/llama-perplexity" "$llama/llama-quantize" || have_llama=0

C=(--calib "$ids" --nsamples 4 --seqlen 64 --heldout 2 --types Q4_0,Q4_1,Q5_0,Q8_0,F16 --quiet)
OUT="$T/o/c.gguf"

# ---- a 2-round plan at 9 bpw
"$sqz" compress "$model" -o "$OUT" --target-bpw 9 --rounds 2 --measure 6 "${C[@]}" \
    --json "$T/rep.json" --html "$T/rep.html" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "compress --target-bpw 9 --rounds 2 exits 0 (got $rc: $(tail -n 2 "$T/stderr"))" $((rc != 0))
[[ $rc -eq 0 ]] || die "cannot go on without the file"
python3 - "$OUT" "$T/rep.json" <<'PY'
import json, os, sys, math
import gguf
path, rep = sys.argv[1], json.load(open(sys.argv[2]))
bad = []
size = os.path.getsize(path)
if size > rep["budget_bytes"]: bad.append(f"file {size} bytes > budget {rep['budget_bytes']}")
best = rep["rounds"][rep["best_round"] - 1]
if size != best["file_bytes"]: bad.append(f"file {size} bytes, report says {best['file_bytes']}")
if len(rep["rounds"]) != 2: bad.append(f"{len(rep['rounds'])} rounds reported")
for r in rep["rounds"]:
    if not (r["heldout_ppl"] and math.isfinite(r["heldout_ppl"])): bad.append(f"round {r['round']}: no perplexity")
    if r["file_bytes"] > rep["budget_bytes"]: bad.append(f"round {r['round']} over budget")
reader = gguf.GGUFReader(path)
types = {t.name: t.tensor_type.name for t in reader.tensors}
planned = {t["name"]: t["type"] for t in rep["tensors"]}
for n, ty in planned.items():
    if types.get(n) != ty: bad.append(f"{n}: file has {types.get(n)}, plan says {ty}")
if len(set(planned.values())) < 2: bad.append(f"a single type everywhere ({set(planned.values())}): no mix")
meas = [t for t in rep["tensors"] if t.get("measured_dL") is not None]
if len(meas) != 6: bad.append(f"{len(meas)} tensors measured, asked for 6")
for b in bad: print("FAIL:", b, file=sys.stderr)
print(f"file {size} bytes <= budget {rep['budget_bytes']}; types {sorted(set(planned.values()))}; "
      f"held-out ppl per round {[round(r['heldout_ppl'], 3) for r in rep['rounds']]}")
sys.exit(1 if bad else 0)
PY
check "the file, the report and the plan agree" $?
n_svg=$(grep -o "<svg" "$T/rep.html" | wc -l)
check "--html: a page with 4 inline SVG charts and no external links ($n_svg svg)" \
    $(( n_svg != 4 || $(grep -c -E 'src="http|href="http' "$T/rep.html") != 0 ))
left=$(cd "$T/o" && ls -A | grep -v '^c.gguf$' | tr '\n' ' ')
check "no temporary or per-round files left ($left)" $([[ -z "$left" ]]; echo $?)
if [[ $have_llama == 1 ]]; then
    "$llama/llama-bench" -m "$OUT" -p 16 -n 4 -t 1 -r 1 >"$T/bench.txt" 2>&1
    rc=$?
    check "llama.cpp loads and runs the file (llama-bench exit $rc)" $(( rc != 0 || $(grep -c "tg4" "$T/bench.txt") != 1 ))
else
    sqz_skip t_compress "llama-bench loads and runs the compressed file"
fi
# ---- llama.cpp's perplexity on the compressed file, and the proxy's rank correlation.
# The file has no tokenizer (stories260K's folder has none): tests/py/add_byte_vocab.py
# gives a copy of it (the same tensors) a byte-level vocabulary, so that llama-perplexity
# and sqz ppl read the same token ids from the TinyStories excerpt (the UTF-8 bytes).
# llama.cpp protocol, ctx 128, 16 chunks, F32 KV cache, one thread (llama.cpp's spinning
# barrier takes seconds on 2 busy cores for this tiny model), flash attention off (llama.cpp's
# CPU flash attention moves this model's perplexity by up to 1.5%: with it on, 1026.45
# against sqz's 1019.18 here; sqz computes attention as the plain path does):
#  - llama-perplexity on the file vs `sqz ppl --numerics llamacpp` (activations rounded as
#    llama.cpp's CPU backend does): within 0.5% (measured: 1020.67 vs 1019.18, 0.15%);
#  - llama-perplexity on its F32 expansion (llama-quantize) vs `sqz ppl`: within 0.1%
#    (measured 1007.5628 vs 1007.5620, 1e-6).
text="$shared/data/tinystories-valid-head.txt"
[[ -f "$text" ]] || die "$text not found"
python3 "$root/tests/py/add_byte_vocab.py" "$OUT" "$T/cv.gguf" >"$T/vocab.log" 2>&1
check "add_byte_vocab: a copy of the file with a byte-level vocabulary $(tail -n 1 "$T/vocab.log")" $?
sqz_ppl() { # sqz_ppl MODEL [ARGS]: the "ppl" of sqz ppl's JSON
    "$sqz" ppl "$1" "$text" --ctx 128 --chunks 16 --protocol llamacpp --threads 2 --json "$T/ppl.json" "${@:2}" \
        >"$T/ppl.log" 2>&1 && python3 -c 'import json,sys; print(repr(float(json.load(open(sys.argv[1]))["ppl"])))' "$T/ppl.json"
}
within() { # within A B TOL: |A/B - 1| <= TOL, printed
    python3 -c 'import sys; a, b, t = map(float, sys.argv[1:]); d = abs(a / b - 1); print(f"{d:.5f}"); sys.exit(not d <= t)' "$@"
}
if [[ $have_llama == 1 ]]; then
    llama_ppl() { # llama_ppl MODEL LOG
        sqz_llama_perplexity "$2" 16 "$llama/llama-perplexity" -m "$1" -f "$text" -c 128 --chunks 16 -t 1 \
            -ctk f32 -ctv f32 -fa off
    }
    ref="$(llama_ppl "$T/cv.gguf" "$T/llama-ppl.log")"
    ours="$(sqz_ppl "$T/cv.gguf" --numerics llamacpp)"
    d=$(within "${ours:-nan}" "${ref:-nan}" 0.005)
    check "llama-perplexity on the compressed file $ref, sqz ppl --numerics llamacpp $ours: relative difference $d (limit 0.005)" $?
    "$llama/llama-quantize" --allow-requantize "$T/cv.gguf" "$T/cv-f32.gguf" F32 >"$T/lq.log" 2>&1
    ref32="$(llama_ppl "$T/cv-f32.gguf" "$T/llama-ppl32.log")"
    ours32="$(sqz_ppl "$T/cv.gguf")"
    d=$(within "${ours32:-nan}" "${ref32:-nan}" 0.001)
    check "llama-perplexity on its F32 expansion $ref32, sqz ppl $ours32: relative difference $d (limit 0.001)" $?
    rm -f "$T/cv-f32.gguf"
else
    sqz_skip t_compress "llama-perplexity vs sqz ppl --numerics llamacpp on the compressed file (0.5%) and on its F32 expansion (0.1%)"
fi
# The proxy against measured loss changes: `sqz sensitivity --validate 24` on stories260K
# (the F32 fixture with the byte vocabulary) calibrated on the same excerpt. Its Spearman
# of compress's proxy (gradtw) with the measured change's symmetric part (first-order
# noise removed; the raw change is dominated by it on this off-distribution text: -0.14
# now) must be >= 0.35 (now 0.636 at seed 0; 0.50-0.64 over seeds 0-3), and must be the
# Spearman computed here from its JSON. Also printed, not required: the Spearman over the
# 6 tensors the 2-round compress above measured (--measure 6, 201 calibration tokens).
python3 "$root/tests/py/add_byte_vocab.py" "${SQZ_FIXTURES:-$root/tests/fixtures}/stories260K/stories260K-F32.gguf" \
    "$T/fv.gguf" >/dev/null 2>&1 &&
"$sqz" sensitivity "$T/fv.gguf" --calib "$text" --types Q4_0,Q4_1,Q5_0,Q8_0,F16 --nsamples 8 --seqlen 128 \
    --heldout 4 --validate 24 --seed 0 --quiet --json "$T/val.json" >"$T/val.log" 2>&1
rc=$?
check "sqz sensitivity --validate 24 (exit $rc: $(grep -m1 'symmetric part' "$T/val.log"))" $rc
python3 - "$T/val.json" "$T/rep.json" <<'PY'
import json, sys
import numpy as np
def ranks(v):
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    i = 0
    while i < len(v):  # ties share their mean rank
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2
        i = j + 1
    return r
def spearman(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])
val = json.load(open(sys.argv[1]))["validation"]
opts = val["options"]
sym = spearman([o["gradtw"] for o in opts], [o["symmetric"] for o in opts])
raw = spearman([o["gradtw"] for o in opts], [o["measured"] for o in opts])
bad = []
if len(opts) != 24: bad.append(f"{len(opts)} options validated, asked for 24")
if abs(sym - val["spearman_symmetric"]["gradtw"]) > 1e-6 or abs(raw - val["spearman"]["gradtw"]) > 1e-6:
    bad.append(f"sqz reports Spearman {val['spearman_symmetric']['gradtw']:.6f} / {val['spearman']['gradtw']:.6f}, "
               f"computed here {sym:.6f} / {raw:.6f}")
if not sym >= 0.35: bad.append(f"Spearman(gradtw, symmetric change) {sym:.4f} < 0.35")
rep = json.load(open(sys.argv[2]))
m = [t for t in rep["tensors"] if t.get("measured_dL") is not None]
cm = spearman([t["predicted_dL"] for t in m], [t["measured_dL"] for t in m]) if len(m) > 2 else float("nan")
print(f"Spearman of the gradtw proxy over {len(opts)} validated options: {sym:.4f} with the symmetric change "
      f"(limit 0.35), {raw:.4f} with the raw change; compress --measure 6: {cm:.4f} (not required)")
for b in bad: print("FAIL:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
check "the proxy's rank correlation with the measured loss change" $?
rm -f "$T/cv.gguf" "$T/fv.gguf"
"$sqz" compress "$model" -o "$T/o/again.gguf" --target-bpw 9 --rounds 2 "${C[@]}" >/dev/null 2>&1
cmp -s "$OUT" "$T/o/again.gguf"
check "same inputs, same bytes" $?
rm -f "$T/o/again.gguf"
# round 1 from a saved `sqz sensitivity --json` estimate: the same plan, the same bytes
"$sqz" sensitivity "$model" "${C[@]}" --json "$T/sens.json" >/dev/null 2>&1 &&
"$sqz" compress "$model" -o "$T/o/one.gguf" --target-bpw 9 "${C[@]}" >/dev/null 2>&1 &&
"$sqz" compress "$model" -o "$T/o/saved.gguf" --target-bpw 9 --sensitivity "$T/sens.json" "${C[@]}" >/dev/null 2>&1 &&
cmp -s "$T/o/one.gguf" "$T/o/saved.gguf"
check "compress --sensitivity (a saved estimate) writes the same file" $?
rm -f "$T/o/one.gguf" "$T/o/saved.gguf"
# the diagonal-Fisher proxy: a plan within the budget, reported as such
"$sqz" compress "$model" -o "$T/o/diag.gguf" --target-bpw 9 --proxy diag "${C[@]}" --json "$T/diag.json" >/dev/null 2>&1
rc=$?
python3 -c "
import json,os,sys; r=json.load(open('$T/diag.json'))
sys.exit(0 if r['proxy'] == 'diag' and os.path.getsize('$T/o/diag.gguf') <= r['budget_bytes'] else 1)" 2>/dev/null
check "compress --proxy diag (exit $rc): within the budget, reported" $(( rc != 0 || $? != 0 ))
rm -f "$T/o/diag.gguf"

# ---- bad input: nothing may be left in the output directory
expect() { # expect STATUS PATTERN ARGS...: exit status, stderr pattern, empty output dir
    local want=$1 pat=$2; shift 2
    rm -rf "$T/o"; mkdir -p "$T/o"
    "$sqz" compress "$model" -o "$OUT" "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? left
    left=$(ls -A "$T/o" | tr '\n' ' ')
    checks=$((checks + 1))
    if [[ $rc -ne $want ]] || ! grep -q -E -e "$pat" "$T/stderr" || [[ -n "$left" ]]; then
        fails=$((fails + 1))
        echo "FAIL: compress $* -> exit $rc (want $want), stderr: $(head -c 300 "$T/stderr"), left: $left" >&2
    else
        echo "ok: $* -> exit $rc: $(head -n 1 "$T/stderr")"
    fi
}
expect 1 "below the smallest reachable size: minimum [0-9]+ bytes \([0-9.]+ bpw\)" --target-bpw 2 "${C[@]}"
expect 2 "unit B, K, KB" --target-size 300XB "${C[@]}"
expect 2 "unit B, K, KB" --target-size 12.5parsecs "${C[@]}"
expect 2 "exactly one of" --target-bpw 5 --target-size 300K "${C[@]}"
expect 2 "exactly one of" "${C[@]}"
expect 2 "--calib FILE is required" --target-bpw 9
expect 2 "not a type sqz writes" --target-bpw 9 --calib "$ids" --types Q4_0,Q9_9
expect 2 "expected grad, gradtw or diag" --target-bpw 9 --proxy hessian "${C[@]}"

# a budget above the unquantized size: a note, and the best file that fits
rm -rf "$T/o"; mkdir -p "$T/o"
"$sqz" compress "$model" -o "$OUT" --target-bpw 40 "${C[@]}" --json "$T/big.json" >"$T/stdout" 2>"$T/stderr"
rc=$?
python3 -c "
import json,os,sys; r=json.load(open('$T/big.json'))
sys.exit(0 if os.path.getsize('$OUT') <= r['budget_bytes'] and r['budget_bytes'] > r['max_bytes'] else 1)" 2>/dev/null
ok=$?
check "--target-bpw 40: exit $rc, a note ($(grep -o 'above the unquantized size' "$T/stderr" | head -n 1)), a file within the budget" \
    $(( rc != 0 || ok != 0 || $(grep -c "above the unquantized size" "$T/stderr") != 1 ))
"$sqz" compress "$model" -o "$OUT" --target-size 300KiB "${C[@]}" >/dev/null 2>"$T/stderr"
rc=$?
sz=$(stat -c %s "$OUT" 2>/dev/null || echo 0)
check "--target-size 300KiB: exit $rc, $sz bytes <= 307200" $(( rc != 0 || sz > 307200 || sz == 0 ))

# ---- interrupted: SIGINT once a round's file is being written leaves nothing
rm -rf "$T/o"; mkdir -p "$T/o"
set -m
"$sqz" compress "$model" -o "$OUT" --target-bpw 9 --rounds 16 --calib "$ids" --nsamples 64 --seqlen 64 \
    --heldout 2 --types Q4_0,Q4_1,Q5_0,Q8_0,F16 --quiet >/dev/null 2>"$T/stderr" &
bg_pid=$!
set +m
started=0
for _ in $(seq 1 600); do
    if compgen -G "$OUT.round*" >/dev/null; then started=1; break; fi
    kill -0 "$bg_pid" 2>/dev/null || break
    sleep 0.05
done
running=0
kill -0 "$bg_pid" 2>/dev/null && running=1
kill -INT "$bg_pid" 2>/dev/null
for _ in $(seq 1 300); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 0.1; done
wait "$bg_pid" 2>/dev/null
rc=$?
bg_pid=
left=$(ls -A "$T/o" | tr '\n' ' ')
check "SIGINT during a round (started $started, running $running): exit $rc, nothing left ($left)" \
    $(( started != 1 || running != 1 || rc == 0 || ${#left} != 0 ))

sqz_skipped_summary t_compress
echo "t_compress: $checks checks, $fails failed"
[[ $fails -eq 0 ]]

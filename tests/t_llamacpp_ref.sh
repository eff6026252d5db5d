#!/usr/bin/env bash
# llama.cpp as a second independent reference for `sqz ppl` (llama.cpp protocol).
#
# The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) on WikiText-2 test, ctx 512,
# 8 chunks, F32 KV cache:
#   - llama-perplexity on the F32 GGUF that llama-quantize makes from it: the same
#     dequantized weights and f32 arithmetic as sqz, so the two must agree closely;
#   - llama-perplexity on the Q4_1 GGUF itself: llama.cpp then also quantizes the
#     activations (to Q8_1/Q8_0) inside its dot products, so it differs a little more.
# `sqz ppl` must agree with the first within 0.1% and with the second within 0.5%.
# (Measured with transformers standing in for sqz: 25.1754 vs 25.1747 (F32, 3e-5) and
# vs 25.2351 (Q4_1, 0.24%).) The text file has CRLF line ends: it must be read as bytes.
#
# Needs llama.cpp's tools (scripts/build_llamacpp.sh, or $LLAMA_BIN). Without them the
# test FAILS, unless SQZ_NO_LLAMACPP=1, when it exits 77 (skipped).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_llamacpp.sh"
tmp="${SQZ_TMP:-${TMPDIR:-/tmp}}/t_llamacpp_ref"
bin="$(sqz_llama_bin)"

fail() { echo "t_llamacpp_ref: FAIL: $*" >&2; exit 1; }

sqz_need_llamacpp t_llamacpp_ref "$bin/llama-perplexity" "$bin/llama-quantize"
[[ -x "$sqz" ]] || fail "sqz binary not found at $sqz"

model="$(sqz_default_model)" || fail "default model GGUF not found ('$model'): run scripts/setup.sh"
text="$shared/data/wikitext-2-raw-test.txt"
[[ -f "$text" ]] || fail "$text not found"

mkdir -p "$tmp"
f32="$tmp/default-F32.gguf"
if [[ ! -f "$f32" || "$f32" -ot "$model" ]]; then
    "$bin/llama-quantize" --allow-requantize "$model" "$f32" F32 >"$tmp/quantize.log" 2>&1 \
        || fail "llama-quantize to F32 failed: see $tmp/quantize.log"
fi

# llama-perplexity prints "Final estimate: PPL = 12.3456 +/- 0.12345" on stderr
# (sqz_llama_perplexity, tests/lib_llamacpp.sh: reruns when llama.cpp's log lost it).
llama_ppl() {
    local m="$1" log="$2"
    sqz_llama_perplexity "$log" 8 "$bin/llama-perplexity" -m "$m" -f "$text" -c 512 --chunks 8 -t 2 -ctk f32 -ctv f32
}
ref_f32="$(llama_ppl "$f32" "$tmp/ppl-f32.log")"
[[ -n "$ref_f32" ]] || fail "no 'Final estimate' in $tmp/ppl-f32.log"
ref_q="$(llama_ppl "$model" "$tmp/ppl-q.log")"
[[ -n "$ref_q" ]] || fail "no 'Final estimate' in $tmp/ppl-q.log"

rm -f "$tmp/sqz.json"
"$sqz" ppl "$model" "$text" --protocol llamacpp --ctx 512 --chunks 8 --threads 2 --json "$tmp/sqz.json" \
    >"$tmp/sqz.log" 2>&1 || fail "sqz ppl failed: $(tail -n 3 "$tmp/sqz.log")"
# The perplexity is the "ppl" number in sqz's JSON (searched at any depth).
ours="$(python3 - "$tmp/sqz.json" <<'EOF'
import json, sys
def find(o):
    if isinstance(o, dict):
        v = o.get("ppl")
        if isinstance(v, (int, float)):
            return v
        o = list(o.values())
    if isinstance(o, list):
        for x in o:
            r = find(x)
            if r is not None:
                return r
    return None
r = find(json.load(open(sys.argv[1])))
print("" if r is None else repr(float(r)))
EOF
)"
[[ -n "$ours" ]] || fail "no ppl number in $tmp/sqz.json"

echo "t_llamacpp_ref: wikitext-2 test, llama.cpp protocol, ctx 512, 8 chunks:"
echo "  sqz ppl (Q4_1 GGUF)            = $ours"
echo "  llama-perplexity (F32 of it)   = $ref_f32"
echo "  llama-perplexity (Q4_1 native) = $ref_q"
python3 - "$ours" "$ref_f32" "$ref_q" <<'EOF'
import sys
ours, f32, q = map(float, sys.argv[1:])
bad = 0
for name, ref, tol in (("F32", f32, 0.001), ("Q4_1", q, 0.005)):
    rel = abs(ours - ref) / ref
    print(f"  |sqz - llama.cpp {name}| / llama.cpp = {rel:.5f} (limit {tol})")
    bad |= rel > tol
sys.exit(1 if bad else 0)
EOF
echo "t_llamacpp_ref: OK"

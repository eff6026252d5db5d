#!/usr/bin/env bash
# `sqz quantize` from a Hugging Face folder (stories260K: GQA 8/4 heads, tied embedding,
# 172-wide FFN, no tokenizer), checked with gguf-py and numpy (tests/py/gguf_to_hf.py),
# never with sqz's own reader:
#  (a) --type F32: every tensor bit-equal to its safetensors source, attn_q / attn_k
#      equal to the row permutation llama.cpp's convert_hf_to_gguf.py applies
#      (reshape(n_head, 2, hd/2, in).swapaxes(1, 2); k with the 4 kv heads) and far from
#      the unpermuted rows; metadata general.architecture, llama.*, general.file_type 0 and
#      tokenizer.ggml.model "no_vocab"; a numpy forward pass of the file (llama.cpp's
#      adjacent-pair RoPE) gives transformers' logits (tests/fixtures/stories260K/
#      stories260K-F32.logits.f32) on reference_greedy_tokens.json within 1e-3;
#  (b) --type Q4_K --json: exit 0; the report shows the fallbacks llama-quantize makes
#      (64-wide rows -> Q5_0, ffn_down's 172-wide rows -> F16: 172 is no multiple of 32)
#      and agrees with the file; gguf-py dequantizes every tensor; each is within 10%
#      (relative Frobenius error) of its permuted HF source, and sqz's reported
#      rel_weight_err equals the error measured from gguf-py's dequantization.
set -uo pipefail

root="${SQZ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
shared="${SQZ_SHARED:-$root/../shared}"
fixtures="${SQZ_FIXTURES:-$root/tests/fixtures}"
sqz="${SQZ_BIN:-$root/build/sqz}"
tmp="${SQZ_TMP:-${TMPDIR:-/tmp}}/t_quantize_hf"
py="$root/tests/py/gguf_to_hf.py"

die() { echo "t_quantize_hf: FAIL: $*" >&2; exit 1; }
fails=0
bad() { echo "t_quantize_hf: FAIL: $*" >&2; fails=$((fails + 1)); }

[[ -x "$sqz" ]] || die "sqz binary not found at $sqz"
python3 -c "import gguf, numpy, safetensors" 2>/dev/null \
    || die "python3 cannot import gguf, numpy and safetensors (pip install gguf numpy safetensors)"
hf="$shared/models/stories260K"
tokens="$hf/reference_greedy_tokens.json"
ref="$fixtures/stories260K/stories260K-F32.logits.f32"
for f in "$hf/config.json" "$hf/model.safetensors" "$tokens" "$ref"; do
    [[ -f "$f" ]] || die "$f not found"
done

rm -rf "$tmp"
mkdir -p "$tmp"
t0=$SECONDS

# ---------------------------------------------------------------- (a) F32
echo "t_quantize_hf: (a) sqz quantize stories260K (HF folder) --type F32"
"$sqz" quantize "$hf" -o "$tmp/f32.gguf" --type F32 --json "$tmp/f32.json" >"$tmp/f32.log" 2>&1
rc=$?
sed 's/^/  /' "$tmp/f32.log"
if [[ $rc -ne 0 || ! -f "$tmp/f32.gguf" ]]; then
    bad "sqz quantize --type F32 exited $rc"
else
    python3 "$py" compare "$tmp/f32.gguf" "$hf" --exact --file-type 0 || bad "f32.gguf vs the HF tensors (see above)"
    python3 "$py" logits "$tmp/f32.gguf" "$tokens" "$ref" --tol 1e-3 || bad "f32.gguf's logits (see above)"
    python3 "$py" report "$tmp/f32.gguf" "$tmp/f32.json" --type F32 || bad "the F32 report (see above)"
fi

# ---------------------------------------------------------------- (b) Q4_K
echo "t_quantize_hf: (b) sqz quantize stories260K (HF folder) --type Q4_K"
"$sqz" quantize "$hf" -o "$tmp/q4k.gguf" --type Q4_K --json "$tmp/q4k.json" >"$tmp/q4k.log" 2>&1
rc=$?
sed 's/^/  /' "$tmp/q4k.log"
if [[ $rc -ne 0 || ! -f "$tmp/q4k.gguf" ]]; then
    bad "sqz quantize --type Q4_K exited $rc"
else
    grep -q 'row length 64 .* -> Q5_0' "$tmp/q4k.log" || bad "no 'row length 64 ... -> Q5_0' fallback line in the summary"
    grep -q 'row length 172 .* -> F16' "$tmp/q4k.log" || bad "no 'row length 172 ... -> F16' fallback line in the summary"
    python3 "$py" report "$tmp/q4k.gguf" "$tmp/q4k.json" --type Q4_K --max-rel-err 0.1 \
        || bad "the Q4_K report vs q4k.gguf (see above)"
    python3 "$py" compare "$tmp/q4k.gguf" "$hf" --tol 0.1 --file-type 14 --report "$tmp/q4k.json" \
        || bad "q4k.gguf vs the HF tensors (see above)"
    # the fallbacks by name: 31 tensors 64 wide (q k v o gate up per layer, the tied
    # embedding) -> Q5_0, 5 ffn_down -> F16
    python3 - "$tmp/q4k.json" <<'EOF' || bad "stories260K's expected fallbacks (see above)"
import collections, json, sys
r = json.load(open(sys.argv[1]))
c = collections.Counter((t["ne"][0], t["type"]) for t in r["tensors"] if t["fallback"])
want = {(64, "Q5_0"): 31, (172, "F16"): 5}
print(f"  fallbacks: {dict(c)} (want {want}); n_fallback {r['totals']['n_fallback']}")
ok = dict(c) == want and r["totals"]["n_fallback"] == 36
ok &= all(t["requested"] == "Q4_K" for t in r["tensors"] if t["fallback"])
sys.exit(0 if ok else 1)
EOF
fi

echo "t_quantize_hf: $((SECONDS - t0)) s"
if [[ $fails -ne 0 ]]; then
    echo "t_quantize_hf: $fails failure(s)" >&2
    exit 1
fi
echo "t_quantize_hf: OK"

#!/usr/bin/env bash
# llama.cpp runs what `sqz quantize` writes. On the default model (SmolLM2-135M-Instruct):
#  (a) sqz quantize --type Q4_K --method gptq on 4 windows of 128 calibration tokens, with
#      --json: the report agrees with the file (tests/py/gguf_to_hf.py report: every tensor
#      listed with the file's type and bytes; totals.file_bytes = the file's size;
#      bpw = 8 file_bytes / n_params; the 576-wide rows fall back to Q5_0, ffn_down's
#      1536-wide rows stay Q4_K; relative errors finite and < 0.5);
#  (b) `sqz ppl --protocol llamacpp` on that file (ctx 512, 8 chunks: 2,048 scored
#      tokens) against
#      llama-perplexity (F32 KV cache) on the F32 expansion llama-quantize makes of it
#      (llama.cpp's dequantizer on sqz's bytes, f32 arithmetic like sqz): within 0.1%;
#      `sqz ppl --numerics llamacpp` (activations rounded to 8 bits inside the
#      quantized dot products, as llama.cpp's CPU backend does) against
#      llama-perplexity on the file itself: within 0.5% (llama.cpp's own flash-attention
#      off/on spread printed beside it); and the quantized model is
#      still a language model: its
#      perplexity at most 1.25x the source model's;
#  (c) determinism: the same quantize command (Q8_0 RTN with calibration, to keep the
#      time down) with --threads 1 and with several threads writes byte-identical files;
#  (d) greedy generation against an independent reference: llama-completion (--temp 0,
#      16 tokens after "The capital of France is") on sqz's Q8_0 file of (c) must write
#      the token llama-completion writes on the unquantized model (the source's F32
#      expansion by llama-quantize) at every position whose reference logit margin is
#      clear (>= 0.5), teacher-forced through near-ties (tests/py/greedy_check.py).
#
# Needs llama.cpp's tools (scripts/build_llamacpp.sh, or $LLAMA_BIN): llama-perplexity,
# llama-quantize, llama-completion. Without them the test FAILS, unless SQZ_NO_LLAMACPP=1,
# when it runs (a), (c) and the sqz side of (b) and says which comparisons it skipped.
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_llamacpp.sh"
tmp="${SQZ_TMP:-${TMPDIR:-/tmp}}/t_quantize_llamacpp"
bin="$(sqz_llama_bin)"

die() { echo "t_quantize_llamacpp: FAIL: $*" >&2; exit 1; }
fails=0
bad() { echo "t_quantize_llamacpp: FAIL: $*" >&2; fails=$((fails + 1)); }

have_llama=1
sqz_want_llamacpp t_quantize_llamacpp "$bin/llama-perplexity" "$bin/llama-quantize" "$bin/llama-completion" \
    || have_llama=0
[[ -x "$sqz" ]] || die "sqz binary not found at $sqz"
python3 -c "import gguf, numpy" 2>/dev/null || die "python3 cannot import gguf and numpy (pip install gguf numpy)"

model="$(sqz_default_model)" || die "default model GGUF not found ('$model'): run scripts/setup.sh"
calib="$shared/data/calib-state-of-the-union.txt"
text="$shared/data/wikitext-2-raw-test.txt"
[[ -f "$calib" ]] || die "$calib not found"
[[ -f "$text" ]] || die "$text not found"

rm -rf "$tmp"
mkdir -p "$tmp"
q="$tmp/q.gguf"
t0=$SECONDS

# ---------------------------------------------------------------- (a) quantize + report
echo "t_quantize_llamacpp: (a) sqz quantize $(basename "$model") --type Q4_K --method gptq --nsamples 4 --seqlen 128"
"$sqz" quantize "$model" -o "$q" --type Q4_K --method gptq --calib "$calib" --nsamples 4 --seqlen 128 \
    --quiet --json "$tmp/rep.json" >"$tmp/quantize.log" 2>&1 \
    || die "sqz quantize failed: $(tail -n 3 "$tmp/quantize.log")"
sed 's/^/  /' "$tmp/quantize.log"
[[ -f "$q" && -f "$tmp/rep.json" ]] || die "sqz quantize exited 0 but $q or its report is missing"
left="$(cd "$tmp" && ls -A | grep -F '.tmp' || true)"
[[ -z "$left" ]] || bad "temporary files left after a successful run: $left"
python3 "$root/tests/py/gguf_to_hf.py" report "$q" "$tmp/rep.json" --type Q4_K --calib --max-rel-err 0.5 \
    || bad "the report does not agree with $q (see above)"
# SmolLM2 by name: everything 576 wide is Q5_0, every ffn_down (1536 wide) Q4_K
python3 - "$tmp/rep.json" <<'EOF' || bad "SmolLM2's expected types (see above)"
import json, sys
r = json.load(open(sys.argv[1]))
bad = 0
n = {"Q5_0": 0, "Q4_K": 0}
for t in r["tensors"]:
    if len(t["ne"]) < 2:
        continue
    want = ("Q4_K", False) if ".ffn_down." in t["name"] else ("Q5_0", True)
    if t["ne"][0] != (1536 if want[0] == "Q4_K" else 576) or (t["type"], t["fallback"]) != want:
        print(f"  FAIL: {t['name']} ne {t['ne']}: {t['type']} fallback {t['fallback']}, want {want}")
        bad = 1
    else:
        n[want[0]] += 1
print(f"  SmolLM2: {n['Q5_0']} tensors 576 wide -> Q5_0 (fallback), {n['Q4_K']} ffn_down -> Q4_K "
      f"(want 181 and 30)")
sys.exit(1 if bad or n != {"Q5_0": 181, "Q4_K": 30} else 0)
EOF
echo "  ($((SECONDS - t0)) s so far)"

# ---------------------------------------------------------------- (b) perplexity
# llama-perplexity prints "Final estimate: PPL = 12.3456 +/- 0.12345" on stderr
# (sqz_llama_perplexity: tests/lib_llamacpp.sh).
# Why 2,048 scored tokens and not fewer: llama.cpp's 8-bit activation rounding is a noise
# whose realisation any tiny change of arithmetic redraws, and on 512 tokens (ctx 256,
# 4 chunks) the perplexity moved that much between llama.cpp's own CPU configurations of
# one GPTQ Q4_K file (seed 1: 30.1054 default, 29.8465 with -fa off, 29.8302 with
# --no-repack), so a 0.5% bound against its default passed or failed by the file's seed
# (sqz 29.9908, 0.38%; seed 2: 0.54%). At ctx 512 × 8 chunks the same configurations
# span 26.08..26.24 and sqz is 0.04% from the default (seed 1; seed 2: see the log).
ctx=512
chunks=8
llama_ppl() {   # llama_ppl MODEL LOG -> the number, empty on failure
    sqz_llama_perplexity "$2" $chunks "$bin/llama-perplexity" -m "$1" -f "$text" -c $ctx --chunks $chunks -t 2 \
        -ctk f32 -ctv f32 "${@:3}"
}
ppl_of() {   # sqz ppl MODEL JSON [ARGS] -> the "ppl" number of the JSON
    "$sqz" ppl "$1" "$text" --ctx $ctx --chunks $chunks --protocol llamacpp --json "$2" "${@:3}" >"$2.log" 2>&1 \
        || { echo "sqz ppl $1 failed: $(tail -n 2 "$2.log")" >&2; return 1; }
    python3 -c 'import json,sys; print(repr(float(json.load(open(sys.argv[1]))["ppl"])))' "$2"
}
ref="" ref32="" refnofa=""
if [[ $have_llama == 1 ]]; then
    ref="$(llama_ppl "$q" "$tmp/llama-ppl.log")"
    [[ -n "$ref" ]] || bad "no 'Final estimate' from llama-perplexity on $q (see $tmp/llama-ppl.log)"
    refnofa="$(llama_ppl "$q" "$tmp/llama-ppl-nofa.log" -fa off)"
    [[ -n "$refnofa" ]] || bad "no 'Final estimate' from llama-perplexity -fa off on $q (see $tmp/llama-ppl-nofa.log)"
    # the same weights expanded to F32 by llama.cpp's own dequantizer: the arithmetic of sqz
    if "$bin/llama-quantize" --allow-requantize "$q" "$tmp/q-f32.gguf" F32 >"$tmp/llama-quantize.log" 2>&1; then
        ref32="$(llama_ppl "$tmp/q-f32.gguf" "$tmp/llama-ppl-f32.log")"
        [[ -n "$ref32" ]] || bad "no 'Final estimate' from llama-perplexity on the F32 expansion"
    else
        bad "llama-quantize could not expand $q to F32: $(tail -n 2 "$tmp/llama-quantize.log")"
    fi
    rm -f "$tmp/q-f32.gguf"
else
    sqz_skip t_quantize_llamacpp "(b) sqz ppl vs llama-perplexity on sqz's Q4_K file (0.5%) and on its F32 expansion (0.1%)"
fi
ours="$(ppl_of "$q" "$tmp/sqz-ppl.json")" || bad "sqz ppl on $q failed"
oursl="$(ppl_of "$q" "$tmp/sqz-ppl-l.json" --numerics llamacpp)" || bad "sqz ppl --numerics llamacpp on $q failed"
base="$(ppl_of "$model" "$tmp/sqz-ppl-source.json")" || bad "sqz ppl on $model failed"
echo "t_quantize_llamacpp: (b) wikitext-2 test, llama.cpp protocol, ctx $ctx, $chunks chunks:"
echo "  llama-perplexity (sqz's Q4_K file, native)      = ${ref:-?}"
echo "  llama-perplexity -fa off (llama.cpp's spread)   = ${refnofa:-?}"
echo "  llama-perplexity (its F32 expansion, llama.cpp) = ${ref32:-?}"
echo "  sqz ppl          (sqz's Q4_K file)              = ${ours:-?}"
echo "  sqz ppl --numerics llamacpp (sqz's Q4_K file)   = ${oursl:-?}"
echo "  sqz ppl          (source Q4_1)                  = ${base:-?}"
if [[ -n "$ours" && -n "$oursl" && -n "$base" && ( $have_llama == 0 || ( -n "$ref" && -n "$ref32" ) ) ]]; then
    python3 - "$ours" "$ref" "$base" "$ref32" "$oursl" "$have_llama" <<'EOF' || bad "perplexity (see above)"
import math, sys
ours, ref, base, ref32, oursl = (float(a) if a else math.nan for a in sys.argv[1:6])
have_llama = sys.argv[6] == "1"
ok = True
# Native: llama.cpp rounds the activations to 8 bits (Q8_0 / Q8_K) inside its Q5_0 and
# Q4_K dot products. With f32 activations sqz was ~1% off (llama.cpp's OWN Q4_K_S file of
# SmolLM2 at ctx 256 × 4 chunks: 30.6019 native vs 30.3026 on its F32 expansion);
# `--numerics llamacpp` rounds the activations as llama.cpp does and must land within
# 0.5%. The details matter: Q8_0 levels as x·(1/d) rounded half away moved one file's
# perplexity by 0.44%, as x·(127/amax) rounded half to even (ggml's AVX2 code) matched.
# The exact check is the F32 one below.
if have_llama:
    rel = abs(oursl - ref) / ref
    print(f"  |sqz(llamacpp numerics) - llama.cpp native| / llama.cpp = {rel:.5f} (limit 0.005)")
    ok &= rel <= 0.005
    rel32 = abs(ours - ref32) / ref32
    print(f"  |sqz - llama.cpp F32|    / llama.cpp = {rel32:.6f} (limit 0.001)")
    ok &= rel32 <= 0.001
ratio = ours / base
print(f"  quantized / source perplexity = {ratio:.4f} (limit 1.25)")
ok &= ratio <= 1.25
sys.exit(0 if ok else 1)
EOF
else
    bad "(b) a perplexity is missing, nothing compared (see above)"
fi
echo "  ($((SECONDS - t0)) s so far)"

# ---------------------------------------------------------------- (c) determinism
nt=$(nproc 2>/dev/null || echo 2)
(( nt >= 2 )) || nt=2
# Q8_0: near-lossless, so (d) generates from the --threads 1 file
det=(quantize "$model" --type Q8_0 --method rtn --calib "$calib" --nsamples 2 --seqlen 64 --seed 7 --quiet)
"$sqz" "${det[@]}" -o "$tmp/d1.gguf" --threads 1 >"$tmp/d1.log" 2>&1 || bad "sqz quantize --threads 1 failed: $(tail -n 2 "$tmp/d1.log")"
"$sqz" "${det[@]}" -o "$tmp/dn.gguf" --threads "$nt" >"$tmp/dn.log" 2>&1 || bad "sqz quantize --threads $nt failed: $(tail -n 2 "$tmp/dn.log")"
echo "t_quantize_llamacpp: (c) sqz ${det[*]:0:1} MODEL ${det[*]:2} with --threads 1 and --threads $nt:"
if [[ -f "$tmp/d1.gguf" && -f "$tmp/dn.gguf" ]]; then
    if cmp "$tmp/d1.gguf" "$tmp/dn.gguf" >"$tmp/cmp.log" 2>&1; then
        echo "  byte-identical ($(wc -c <"$tmp/d1.gguf") bytes)"
    else
        bad "--threads 1 and --threads $nt files differ: $(head -n 1 "$tmp/cmp.log")"
    fi
fi
echo "  ($((SECONDS - t0)) s so far)"

# ---------------------------------------------------------------- (d) generation
# Greedy tokens against an independent reference: llama.cpp on the unquantized model (the
# source's F32 expansion by llama-quantize) and llama.cpp on sqz's Q8_0 of the source
# ((c)'s --threads 1 file, near-lossless) must write the same token at every position
# where the reference's top-1/top-2 logit margin is >= 0.5 (tests/py/greedy_check.py:
# teacher-forced through near-ties, which any rounding may flip; SmolLM2 after
# "The capital of France is Paris.\n\nThe" has one at 0.22). One thread: llama.cpp's
# spinning thread barrier is very slow on a busy 2-core machine.
prompt="The capital of France is"
ngen=16
tool_logits="${SQZ_TOOL_LOGITS:-$(dirname "$sqz")/tests/tool_logits}"
if [[ $have_llama == 1 ]]; then
    gen_ok=1
    [[ -f "$tmp/d1.gguf" ]] || { bad "(d) no Q8_0 file from (c)"; gen_ok=0; }
    [[ -x "$tool_logits" ]] || { bad "(d) tool_logits not built ($tool_logits)"; gen_ok=0; }
    "$bin/llama-quantize" --allow-requantize "$model" "$tmp/src-f32.gguf" F32 >"$tmp/src-f32.log" 2>&1 \
        || { bad "llama-quantize could not expand $model to F32: $(tail -n 2 "$tmp/src-f32.log")"; gen_ok=0; }
    if [[ $gen_ok == 1 ]]; then
        echo "t_quantize_llamacpp: (d) llama-completion -n $ngen --temp 0 after '$prompt': sqz's Q8_0 file vs the unquantized model"
        python3 "$root/tests/py/greedy_check.py" "$bin" "$tmp/src-f32.gguf" "$tmp/d1.gguf" "$model" \
            "$tool_logits" "$tmp/greedy" "$prompt" $ngen \
            || bad "(d) greedy generation from sqz's Q8_0 file differs from the unquantized model's at a clear position (see above)"
    fi
    rm -f "$tmp/src-f32.gguf"
else
    sqz_skip t_quantize_llamacpp "(d) llama-completion's greedy tokens on sqz's Q8_0 file vs on the unquantized model"
fi
echo "  ($((SECONDS - t0)) s so far)"

sqz_skipped_summary t_quantize_llamacpp
echo "t_quantize_llamacpp: $((SECONDS - t0)) s"
if [[ $fails -ne 0 ]]; then
    echo "t_quantize_llamacpp: $fails failure(s)" >&2
    exit 1
fi
rm -f "$q" "$tmp"/d1.gguf "$tmp"/dn.gguf "$tmp"/q8.gguf
echo "t_quantize_llamacpp: OK"

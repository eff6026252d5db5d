#!/usr/bin/env bash
# Every command on the architectures beyond llama, on the tiny models of tests/fixtures/arch
# (Qwen2 with q/k/v biases, Qwen3 with per-head q/k norms, Llama with Llama-3 rope
# scaling; Hugging Face folders and llama.cpp's own GGUF conversions of them):
#   - info, ppl, sensitivity run;
#   - quantize (Q8_0) and compress keep the architecture: qwen2 stays qwen2 with F32
#     biases, qwen3 keeps its F32 q/k norms, llama3 keeps rope_freqs.weight (gguf-py reads
#     the files);
#   - prune of qwen2 (from the folder and from the GGUF) becomes a deci file whose q/k
#     rows and biases are permuted to deci's adjacent-pair RoPE; compress --prune too;
#   - every written file runs in llama.cpp, and llama-perplexity agrees with
#     `sqz ppl --numerics llamacpp` within 0.5% (measured: 0.002-0.24%);
#   - a pruned qwen3 as GGUF is refused by name (deci has no q/k norms); as a Hugging
#     Face folder it is written and sqz reads it back.
# The text is ASCII letters only: the tiny SentencePiece vocabularies have no byte
# fallback, and llama.cpp's tokenizer throws on what they cannot encode.
# Without llama.cpp the llama.cpp comparisons FAIL unless SQZ_NO_LLAMACPP=1 (then skipped).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_llamacpp.sh"
: "${SQZ_FIXTURES:=$root/tests/fixtures}"
A="$SQZ_FIXTURES/arch"
T="${SQZ_TMP:-/tmp}/t_arch_cli.$$"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fails=0
checks=0
ok() { checks=$((checks + 1)); echo "ok: $*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
run() { # WHAT CMD...: the command succeeds
    local what="$1"; shift
    if "$@" >"$T/o" 2>"$T/e"; then ok "$what"; else bad "$what: $(tail -n 2 "$T/e")"; return 1; fi
}

bin="$(sqz_llama_bin)"
have_llama=1
if [[ ! -x "$bin/llama-perplexity" ]]; then
    if [[ "${SQZ_NO_LLAMACPP:-0}" == 1 ]]; then
        have_llama=0
        echo "skipped: llama.cpp comparisons (SQZ_NO_LLAMACPP=1)"
    else
        bad "llama.cpp's llama-perplexity not found in $bin (scripts/build_llamacpp.sh)"
    fi
fi

text="$T/text.txt"
tr '\n\r' '  ' <"$shared/data/tinystories-valid-head.txt" | tr -cd 'a-zA-Z .,' | head -c 20000 >"$text"
[[ -s "$text" ]] || bad "no text from $shared/data/tinystories-valid-head.txt"
calib=(--calib "$text" --nsamples 4 --seqlen 64 --heldout 2)

# the llama.cpp comparison of one written file
against_llama() { # FILE WHAT
    [[ $have_llama == 1 ]] || return 0
    local ours theirs
    ours=$("$sqz" ppl "$1" "$text" --ctx 64 --chunks 8 --protocol llamacpp --numerics llamacpp --threads 1 2>&1 |
        sed -n 's/^perplexity (protocol llamacpp, ctx 64): \([0-9.]*\).*/\1/p')
    # (sqz_llama_perplexity, tests/lib_llamacpp.sh: robust to llama.cpp's log losing its end)
    theirs=$(sqz_llama_perplexity "$T/llama.log" 8 "$bin/llama-perplexity" -m "$1" -f "$text" -c 64 --chunks 8 -t 1 \
        -fa off -ctk f32 -ctv f32)
    if [[ -z "$ours" || -z "$theirs" ]]; then
        bad "$2: no perplexity (sqz '$ours', llama.cpp '$theirs': $(tail -c 300 "$T/llama.log"))"
        return
    fi
    if python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) / b > 0.005)' "$ours" "$theirs"; then
        ok "$2: llama.cpp runs it: sqz $ours vs llama-perplexity $theirs"
    else
        bad "$2: sqz $ours vs llama-perplexity $theirs (more than 0.5% apart)"
    fi
}

# gguf_has FILE ARCH PYTHON-CONDITION-ON-names/types: architecture and tensors of a file
gguf_has() {
    if python3 - "$@" <<'EOF' >"$T/g" 2>&1; then ok "$(cat "$T/g")"; else bad "$1: $(cat "$T/g")"; fi
import sys, gguf
path, arch, cond = sys.argv[1:4]
r = gguf.GGUFReader(path)
got = bytes(r.fields["general.architecture"].parts[-1]).decode()
types = {t.name: t.tensor_type.name for t in r.tensors}
names = set(types)
if got != arch or not eval(cond):
    print(f"architecture {got} (want {arch}), condition {cond} false; tensors {sorted(names)[:12]}...")
    sys.exit(1)
print(f"{path.rsplit('/', 1)[-1]}: {got}, {cond}")
EOF
}

for src in qwen2 qwen2.gguf qwen3 qwen3.gguf llama3 llama3.gguf; do
    run "info $src" "$sqz" info "$A/$src"
    run "ppl $src" "$sqz" ppl "$A/$src" "$text" --ctx 64 --chunks 2
done
run "sensitivity qwen3" "$sqz" sensitivity "$A/qwen3" "${calib[@]}" --types Q8_0,Q4_0
run "sensitivity qwen2.gguf" "$sqz" sensitivity "$A/qwen2.gguf" "${calib[@]}" --types Q8_0,Q4_0

# quantize keeps the architecture and its vectors
for m in qwen2 qwen3 llama3; do
    run "quantize $m Q8_0" "$sqz" quantize "$A/$m" -o "$T/$m-q8.gguf" --type Q8_0 || continue
    against_llama "$T/$m-q8.gguf" "$m Q8_0"
done
gguf_has "$T/qwen2-q8.gguf" qwen2 'all(types[f"blk.{l}.attn_{x}.bias"] == "F32" for l in (0, 1) for x in "qkv")'
gguf_has "$T/qwen3-q8.gguf" qwen3 'all(types[f"blk.{l}.attn_{x}_norm.weight"] == "F32" for l in (0, 1) for x in "qk")'
gguf_has "$T/llama3-q8.gguf" llama '"rope_freqs.weight" in names'
run "quantize qwen2.gguf GPTQ Q4_0" "$sqz" quantize "$A/qwen2.gguf" -o "$T/qwen2-gptq.gguf" --type Q4_0 --method gptq \
    --calib "$text" --nsamples 4 --seqlen 64 &&
    against_llama "$T/qwen2-gptq.gguf" "qwen2.gguf GPTQ Q4_0"

# prune: deci with permuted q/k rows and biases
for src in qwen2 qwen2.gguf; do
    run "prune $src" "$sqz" prune "$A/$src" -o "$T/pr-$src.gguf" --attn-keep 0.5 --ffn-keep 0.75 "${calib[@]}" || continue
    gguf_has "$T/pr-$src.gguf" deci '"blk.0.attn_q.bias" in names and "blk.1.attn_v.bias" in names'
    against_llama "$T/pr-$src.gguf" "pruned $src (deci)"
done
run "prune llama3" "$sqz" prune "$A/llama3" -o "$T/pr-llama3.gguf" --ffn-keep 0.5 "${calib[@]}" &&
    gguf_has "$T/pr-llama3.gguf" llama '"rope_freqs.weight" in names' && against_llama "$T/pr-llama3.gguf" "pruned llama3"

# compress, with and without pruning
run "compress qwen2.gguf" "$sqz" compress "$A/qwen2.gguf" -o "$T/c-qwen2.gguf" --target-bpw 6 "${calib[@]}" --quiet &&
    gguf_has "$T/c-qwen2.gguf" qwen2 '"blk.0.attn_q.bias" in names' && against_llama "$T/c-qwen2.gguf" "compress qwen2.gguf"
run "compress --prune qwen2" "$sqz" compress "$A/qwen2" -o "$T/cp-qwen2.gguf" --target-bpw 5 --prune auto "${calib[@]}" --quiet &&
    against_llama "$T/cp-qwen2.gguf" "compress --prune qwen2"
run "compress qwen3" "$sqz" compress "$A/qwen3" -o "$T/c-qwen3.gguf" --target-bpw 6 "${calib[@]}" --quiet &&
    against_llama "$T/c-qwen3.gguf" "compress qwen3"

# qwen3 pruned: no GGUF architecture for it; a Hugging Face folder is fine
"$sqz" prune "$A/qwen3" -o "$T/pr-qwen3.gguf" --attn-keep 0.5 "${calib[@]}" >"$T/o" 2>"$T/e"
rc=$?
if [[ $rc -eq 1 && $(wc -l <"$T/e") -eq 1 ]] && grep -q "qwen3" "$T/e" && grep -q "q_norm" "$T/e" && [[ ! -e "$T/pr-qwen3.gguf" ]]; then
    ok "pruned qwen3 GGUF refused: $(cat "$T/e")"
else
    bad "pruned qwen3 GGUF: exit $rc: $(head -c 300 "$T/e")"
fi
run "prune qwen3 --hf-out" "$sqz" prune "$A/qwen3" --hf-out "$T/pr-qwen3-hf" --attn-keep 0.5 "${calib[@]}" || true
if [[ -f "$T/pr-qwen3-hf/config.json" ]]; then
    cp "$A/qwen3/tokenizer.model" "$T/pr-qwen3-hf/" # the folder has no tokenizer files
    run "pruned qwen3 folder loads" "$sqz" ppl "$T/pr-qwen3-hf" "$text" --ctx 64 --chunks 2
fi

echo "t_arch_cli: $checks checks, $fails failed"
[[ $fails -eq 0 ]]

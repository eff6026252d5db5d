#!/usr/bin/env bash
# Bad input on the architectures beyond llama (tests/fixtures/arch: llama.cpp's own GGUF
# conversions of tiny Qwen2/Qwen3 models, and their Hugging Face folders), each damaged in
# one place:
#   - a qwen2 GGUF whose blk.0.attn_q.bias is one element short;
#   - a qwen3 GGUF without blk.0.attn_q_norm.weight (its name changed in place);
#   - a GGUF whose general.architecture is unknown ("qwen9");
#   - a config.json with rope_scaling of an unknown type ("yarn");
#   - a config.json of Llama-3 rope scaling without its factor;
#   - a qwen2 config.json asking for sliding-window attention.
# Every case: `sqz info` and `sqz quantize` exit 1 (not by a signal) with exactly one line
# "sqz: error: ..." naming the file and the field, and quantize leaves no output file.
# The undamaged files pass the same commands, so the damage is what is refused.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${SQZ_FIXTURES:=$root/tests/fixtures}"
T="${SQZ_TMP:-/tmp}/t_arch_bad.$$"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fails=0
checks=0
A="$SQZ_FIXTURES/arch"

# expect_error WHAT PATTERN... -- MODEL: info and quantize refuse MODEL, naming every PATTERN
expect_error() {
    local what="$1" model="$2"; shift 2
    local cmd
    for cmd in info quantize; do
        local out="$T/out.$cmd.gguf"
        rm -f "$out"
        if [[ $cmd == info ]]; then
            "$sqz" info "$model" >"$T/o" 2>"$T/e"
        else
            "$sqz" quantize "$model" -o "$out" --type Q8_0 >"$T/o" 2>"$T/e"
        fi
        local rc=$? lines pat ok=1
        lines=$(wc -l <"$T/e")
        [[ $rc -eq 1 && $lines -eq 1 ]] && head -1 "$T/e" | grep -q '^sqz: error: ' || ok=0
        for pat in "$@"; do grep -qF -- "$pat" "$T/e" || ok=0; done
        [[ -e "$out" ]] && ok=0
        ls "$T"/out.*.tmp.* >/dev/null 2>&1 && ok=0
        checks=$((checks + 1))
        if [[ $ok -eq 1 ]]; then
            echo "ok: $what: $cmd: $(cat "$T/e")"
        else
            fails=$((fails + 1))
            echo "FAIL: $what: sqz $cmd exit $rc, stderr ($lines lines): $(head -c 400 "$T/e") (want: $*; no output file)" >&2
        fi
    done
}
expect_ok() {
    checks=$((checks + 1))
    if "$sqz" info "$1" >"$T/o" 2>"$T/e"; then
        echo "ok: $2 loads"
    else
        fails=$((fails + 1))
        echo "FAIL: $2: the undamaged file is refused: $(head -c 300 "$T/e")" >&2
    fi
}

# patch SRC DST OLD NEW [ne0-of-tensor-NAME-minus-one]: a copy of a GGUF with a byte
# string replaced in place (same length), or one tensor's first dimension made one smaller.
patch_gguf() {
    python3 - "$@" <<'EOF'
import struct, sys
src, dst, mode, a = sys.argv[1:5]
b = bytearray(open(src, "rb").read())
if mode == "rename":
    old, new = a.split("=")
    i = b.find(old.encode())
    assert i > 0 and len(old) == len(new), (old, new)
    b[i:i + len(old)] = new.encode()
else:  # shrink: tensor info = name (u64 length + bytes), n_dims u32, ne[0] u64 ...
    name = a.encode()
    key = struct.pack("<Q", len(name)) + name
    i = b.find(key)
    assert i > 0, a
    j = i + len(key) + 4
    (ne0,) = struct.unpack_from("<Q", b, j)
    struct.pack_into("<Q", b, j, ne0 - 1)
open(dst, "wb").write(bytes(b))
EOF
}

for f in qwen2.gguf qwen3.gguf qwen2 qwen3 llama3; do expect_ok "$A/$f" "$f"; done

patch_gguf "$A/qwen2.gguf" "$T/qwen2-short-bias.gguf" shrink blk.0.attn_q.bias
expect_error "qwen2 bias of the wrong length" "$T/qwen2-short-bias.gguf" "qwen2-short-bias.gguf" "blk.0.attn_q.bias" "shape"

patch_gguf "$A/qwen3.gguf" "$T/qwen3-no-qnorm.gguf" rename blk.0.attn_q_norm.weight=blk.0.attn_q_nxrm.weight
expect_error "qwen3 without q_norm" "$T/qwen3-no-qnorm.gguf" "qwen3-no-qnorm.gguf" "blk.0.attn_q_norm.weight" "missing"

# general.architecture's value is the first "qwen2" string after its key
python3 - "$A/qwen2.gguf" "$T/arch-unknown.gguf" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
k = b.find(b"general.architecture")
i = b.find(b"qwen2", k + len("general.architecture"))
assert k > 0 and i > 0 and i - k < 48
b[i:i + 5] = b"qwen9"
open(sys.argv[2], "wb").write(bytes(b))
EOF
expect_error "unknown general.architecture" "$T/arch-unknown.gguf" "arch-unknown.gguf" "general.architecture" "qwen9"

hf_variant() { # SRC_DIR DST_DIR PYTHON-EXPRESSION-ON-cfg
    mkdir -p "$2"
    cp "$1"/model.safetensors "$1"/tokenizer.model "$2"/ 2>/dev/null
    python3 - "$1/config.json" "$2/config.json" "$3" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(cfg, open(sys.argv[2], "w"), indent=1)
EOF
}
hf_variant "$A/llama3" "$T/rope-yarn" 'cfg.pop("rope_parameters", None); cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}'
expect_error "rope_scaling of an unknown type" "$T/rope-yarn" "rope-yarn/config.json" "rope_scaling.rope_type" "yarn"
hf_variant "$A/llama3" "$T/rope-nofactor" 'rs = cfg.get("rope_scaling") or cfg.get("rope_parameters"); rs.pop("factor")'
expect_error "llama3 rope scaling without factor" "$T/rope-nofactor" "rope-nofactor/config.json" "factor"
hf_variant "$A/qwen2" "$T/qwen2-sliding" 'cfg["use_sliding_window"] = True; cfg["sliding_window"] = 16'
expect_error "qwen2 sliding window" "$T/qwen2-sliding" "qwen2-sliding/config.json" "use_sliding_window"

echo "t_arch_bad: $checks checks, $fails failed"
[[ $fails -eq 0 ]]

#!/usr/bin/env bash
# Bad input to the CLI: every case exits non-zero (1 for errors, 2 for usage errors), never
# by a signal, with one line "sqz: error: ..." on stderr naming the file or field.
set -u
: "${SQZ_BIN:?}" "${SQZ_SHARED:?}" "${SQZ_FIXTURES:?}" "${SQZ_TMP:=/tmp}"
mkdir -p "$SQZ_TMP"
T="$SQZ_TMP/t_bad_input.$$"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fails=0
checks=0

# expect_error CODE PATTERN cmd... : exits with CODE, stderr is one line starting with
# "sqz: error:" and containing PATTERN (a fixed string).
expect_error() {
    local want=$1 pat=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    checks=$((checks + 1))
    local lines; lines=$(wc -l <"$T/err")
    if [ "$rc" -ne "$want" ] || [ "$rc" -ge 128 ] || [ "$lines" -ne 1 ] || ! head -1 "$T/err" | grep -q '^sqz: error: ' ||
        ! grep -qF -- "$pat" "$T/err"; then
        fails=$((fails + 1))
        echo "FAIL: '$*': exit $rc (want $want), stderr ($lines lines): $(head -c 400 "$T/err") (want '$pat')" >&2
    else
        echo "ok: exit $rc: $(cat "$T/err")"
    fi
}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODEL="$(sqz_default_model)"
STORIES_HF="$SQZ_SHARED/models/stories260K"
WIKI="$SQZ_SHARED/data/wikitext-2-raw-test.txt"
SHORT="$SQZ_SHARED/data/tinystories-valid-head.txt"
if [ ! -f "$MODEL" ]; then
    echo "FAIL: default model missing ($MODEL): run the set-up script (scripts/setup.sh --deps-only)" >&2
    exit 1
fi

# ---- models
expect_error 1 "$T/nope.gguf" "$SQZ_BIN" info "$T/nope.gguf"
mkdir -p "$T/noconfig"
expect_error 1 "config.json" "$SQZ_BIN" info "$T/noconfig"
expect_error 1 "tokenizer" "$SQZ_BIN" ppl "$STORIES_HF" "$SHORT" --ctx 64
# truncated GGUF copies: inside the header, inside the tensor infos, inside the data
for n in 3 20 2000 100000 50000000; do
    head -c $n "$MODEL" >"$T/trunc.gguf"
    expect_error 1 "$T/trunc.gguf" "$SQZ_BIN" info "$T/trunc.gguf"
done
# a GGUF that is not one
printf 'this is not a model\n' >"$T/fake.gguf"
expect_error 1 "$T/fake.gguf" "$SQZ_BIN" info "$T/fake.gguf"
# truncated safetensors in an otherwise valid folder
for n in 4 100 600000; do
    mkdir -p "$T/st$n"
    cp "$STORIES_HF/config.json" "$T/st$n/"
    head -c $n "$STORIES_HF/model.safetensors" >"$T/st$n/model.safetensors"
    expect_error 1 "model.safetensors" "$SQZ_BIN" info "$T/st$n"
done
# a config that lies about the shapes
mkdir -p "$T/badshape"
cp "$STORIES_HF/model.safetensors" "$T/badshape/"
sed 's/"intermediate_size": 172/"intermediate_size": 176/' "$STORIES_HF/config.json" >"$T/badshape/config.json"
expect_error 1 "expected [64, 176]" "$SQZ_BIN" info "$T/badshape"

# ---- text files
: >"$T/empty.txt"
expect_error 1 "$T/empty.txt" "$SQZ_BIN" ppl "$MODEL" "$T/empty.txt" --ctx 64
head -c 4096 "$MODEL" >"$T/binary.txt"
expect_error 1 "$T/binary.txt" "$SQZ_BIN" ppl "$MODEL" "$T/binary.txt" --ctx 64
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(128,256))*40)" >"$T/latin.txt"
expect_error 1 "$T/latin.txt" "$SQZ_BIN" ppl "$MODEL" "$T/latin.txt" --ctx 64
expect_error 1 "$T/missing.txt" "$SQZ_BIN" ppl "$MODEL" "$T/missing.txt" --ctx 64
printf 'Once upon a time there was a cat.\n' >"$T/tiny.txt"
expect_error 1 "$T/tiny.txt" "$SQZ_BIN" ppl "$MODEL" "$T/tiny.txt" --ctx 512
expect_error 1 "$T/tiny.txt" "$SQZ_BIN" ppl "$MODEL" "$T/tiny.txt" --ctx 8 --protocol llamacpp

# ---- usage errors
expect_error 2 "--frob" "$SQZ_BIN" info "$MODEL" --frob
expect_error 2 "--frob" "$SQZ_BIN" ppl "$MODEL" "$WIKI" --ctx 64 --frob
expect_error 2 "--ctx" "$SQZ_BIN" ppl "$MODEL" "$WIKI" --ctx 0
expect_error 2 "--ctx" "$SQZ_BIN" ppl "$MODEL" "$WIKI" --ctx abc
expect_error 2 "--ctx" "$SQZ_BIN" ppl "$MODEL" "$WIKI"
expect_error 2 "--ctx" "$SQZ_BIN" ppl "$MODEL" "$WIKI" --ctx
expect_error 2 "--protocol" "$SQZ_BIN" ppl "$MODEL" "$WIKI" --ctx 64 --protocol wiki
expect_error 2 "--threads" "$SQZ_BIN" ppl "$MODEL" "$WIKI" --ctx 64 --threads -1
expect_error 2 "TEXT_FILE" "$SQZ_BIN" ppl "$MODEL"
expect_error 2 "MODEL" "$SQZ_BIN" info
expect_error 2 "unexpected argument" "$SQZ_BIN" info "$MODEL" extra
expect_error 1 "$T/out/dir/x.json" "$SQZ_BIN" info "$STORIES_HF" --json "$T/out/dir/x.json"

echo "t_bad_input: $checks checks, $fails failed"
[ "$fails" -eq 0 ]

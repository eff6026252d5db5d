#!/usr/bin/env bash
# sqz's quantizers, its dequantizers of the types it only reads (i-quants, ternary) and
# its GGUF writer against gguf-py and llama.cpp's ggml (its
# libggml-base.so, which scripts/build_llamacpp.sh builds; `--ggml-lib` prints its path,
# SQZ_GGML_LIB overrides it): tests/py/check_quant_gguf_py.py says what is checked.
# Without that library the test FAILS; with SQZ_NO_LLAMACPP=1 it then runs the gguf-py
# checks alone and prints which llama.cpp comparisons it skipped.
# The files come from the test programs' --emit modes, which the build puts in
# <build>/tests/ (set SQZ_TEST_BIN_DIR to look elsewhere).
set -euo pipefail

root="${SQZ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
sqz="${SQZ_BIN:-$root/build/sqz}"
bindir="${SQZ_TEST_BIN_DIR:-$(dirname "$sqz")/tests}"
tmp="${SQZ_TMP:-${TMPDIR:-/tmp}}/t_quant_gguf_py"

fail() { echo "t_quant_gguf_py: FAIL: $*" >&2; exit 1; }

for p in test_quantize test_gguf_write; do
    [[ -x "$bindir/$p" ]] || fail "$bindir/$p not built"
done
python3 -c "import gguf, numpy" 2>/dev/null || fail "python3 cannot import gguf and numpy (pip install gguf numpy)"

if [[ -z "${SQZ_GGML_LIB:-}" ]]; then
    if lib="$(bash "$root/scripts/build_llamacpp.sh" --ggml-lib 2>/dev/null)"; then
        export SQZ_GGML_LIB="$lib"
    elif [[ "${SQZ_NO_LLAMACPP:-0}" != 1 ]]; then
        fail "llama.cpp's libggml-base.so not built (scripts/build_llamacpp.sh --ggml-lib found none): run scripts/build_llamacpp.sh, set SQZ_GGML_LIB, or SQZ_NO_LLAMACPP=1 to skip the llama.cpp comparisons"
    fi
fi
[[ -z "${SQZ_GGML_LIB:-}" || -f "$SQZ_GGML_LIB" ]] || fail "SQZ_GGML_LIB=$SQZ_GGML_LIB: no such file"

mkdir -p "$tmp"
rm -f "$tmp/quant.gguf" "$tmp/spec.gguf" "$tmp/read.gguf"
"$bindir/test_quantize" --emit "$tmp/quant.gguf" || fail "test_quantize --emit failed"
"$bindir/test_gguf_write" --emit "$tmp/spec.gguf" || fail "test_gguf_write --emit failed"
python3 "$root/tests/py/check_quant_gguf_py.py" "$tmp/quant.gguf" "$tmp/spec.gguf" || fail "see the table above"
# the types sqz only reads (i-quants, ternary): dequantization and grids against gguf-py
[[ -x "$bindir/test_types" ]] || fail "$bindir/test_types not built"
"$bindir/test_types" --emit-read "$tmp/read.gguf" || fail "test_types --emit-read failed"
python3 "$root/tests/py/check_read_types.py" "$tmp/read.gguf" || fail "a read-only type's dequantization differs from gguf-py's"
python3 "$root/tests/py/iq_grids.py" check "$root/src/format/iq_grids.c" || fail "src/format/iq_grids.c differs from gguf-py's grids"
echo "t_quant_gguf_py: OK"

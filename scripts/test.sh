#!/usr/bin/env bash
# sqz's full check (what .ci/run calls):
#   1. dependencies (scripts/setup.sh --deps-only: quick when all is installed) and
#      llama.cpp's tools, the second reference (scripts/build_llamacpp.sh);
#   2. Release build in build/ and every test (ctest);
#   3. Debug build with AddressSanitizer + UBSan in build-asan/ and the tests again,
#      except those labelled "asan_slow" (the one mechanism for leaving a test out of
#      the sanitizer run: the LABELS set in tests/CMakeLists.txt, each with its reason);
#   4. the fuzz targets for FUZZ_SECONDS=15 each, when scripts/fuzz.sh exists;
#   5. the CUDA backend compiled (cmake -DSQZ_CUDA=ON in build-cuda/: the CLI,
#      test_backend and test_block) when the CUDA toolkit is there (nvcc on PATH or
#      /usr/local/cuda), and both tests run: their CPU checks always; their GPU
#      comparisons only where a GPU is (else each says so and exits 77, which this stage
#      reports as skipped).
# Every stage runs even when an earlier one failed: a stage's tests run whenever its own
# build succeeded (a failed llama.cpp build fails the llama.cpp comparisons, not the
# stage); the exit status is non-zero if any stage failed. Meant to finish well under
# 20 minutes on 2 cores.
# Env: JOBS (default 2), FUZZ_SECONDS (default 15),
#      SQZ_BUILD / SQZ_BUILD_ASAN / SQZ_BUILD_CUDA (build folders, default build /
#      build-asan / build-cuda),
#      SQZ_NO_LLAMACPP=1 (do not build llama.cpp: the tests still run everything that
#      needs no llama.cpp, print which llama.cpp comparisons they skipped, and
#      t_llamacpp_ref, which is nothing but such a comparison, reports itself skipped)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${JOBS:-2}"
bdir="${SQZ_BUILD:-build}"
adir="${SQZ_BUILD_ASAN:-build-asan}"
cdir="${SQZ_BUILD_CUDA:-build-cuda}"
failed=()
say() { printf '\n== %s\n' "$*"; }
stage() {  # stage NAME CMD...: run, remember a failure, go on
    local name="$1"; shift
    say "$name"
    local t0=$SECONDS
    if "$@"; then
        echo "-- $name: ok ($((SECONDS - t0)) s)"
    else
        echo "-- $name: FAILED ($((SECONDS - t0)) s)"
        failed+=("$name")
    fi
}

# Tests left out of the sanitizer run carry the ctest label "asan_slow" (ctest -LE
# asan_slow below); the list and the reason for each are in tests/CMakeLists.txt (e.g.
# t_llamacpp_ref and t_quantize_llamacpp: minutes of llama.cpp and SmolLM2 there, their
# sqz code runs under ASan in other tests). There is no other skip list. t_prune stays
# in: under SQZ_ASAN=1 it runs only its stories260K and bad-input parts.

bash scripts/setup.sh --deps-only

build_release() {
    cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
    cmake --build "$bdir" -j"$jobs"
}
# Only what the tests run (the CLI, the test programs and t_quant_simd's two builds of
# quant_twin): the benchmarks are built in the Release stage and never run under the
# sanitizers.
build_asan() {
    cmake -S . -B "$adir" -DCMAKE_BUILD_TYPE=Debug -DSQZ_SANITIZE=ON >/dev/null || return 1
    local targets
    targets=$(cmake --build "$adir" --target help | awk '/^\.\.\. (sqz|test_[A-Za-z0-9_]+|quant_twin[A-Za-z0-9_]*)$/ {print $2}')
    # shellcheck disable=SC2086  # one word per target
    cmake --build "$adir" -j"$jobs" --target $targets
}
ctest_asan() {
    local args=(--test-dir "$adir" --output-on-failure -j"$jobs" -LE asan_slow)
    # the label must be there: without it -LE would silently run the slow tests too
    ctest --test-dir "$adir" -N -L asan_slow | grep -q '^Total Tests: [1-9]' ||
        { echo "no test carries the ctest label asan_slow (tests/CMakeLists.txt)"; return 1; }
    SQZ_ASAN=1 ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest "${args[@]}"
}

# llama.cpp's tools are the second independent reference (tests/t_llamacpp_ref.sh);
# scripts/build_llamacpp.sh is quick when they are already built (first time: minutes).
# SQZ_NO_LLAMACPP=1 leaves them out (see the header).
if [[ "${SQZ_NO_LLAMACPP:-0}" != 1 && -f scripts/build_llamacpp.sh ]]; then
    stage "llama.cpp reference tools" bash scripts/build_llamacpp.sh
fi
stage_failed() {  # stage_failed NAME: did that stage fail?
    local f
    for f in "${failed[@]}"; do [[ "$f" == "$1" ]] && return 0; done
    return 1
}
stage "build (Release)" build_release
if ! stage_failed "build (Release)"; then
    stage "tests (Release)" ctest --test-dir "$bdir" --output-on-failure -j"$jobs"
fi
stage "build (Debug, ASan+UBSan)" build_asan
if ! stage_failed "build (Debug, ASan+UBSan)"; then
    stage "tests (ASan+UBSan)" ctest_asan
fi
if [[ -f scripts/fuzz.sh ]]; then
    stage "fuzz (${FUZZ_SECONDS:-15} s per target)" env FUZZ_SECONDS="${FUZZ_SECONDS:-15}" bash scripts/fuzz.sh
fi

# The CUDA sources must not rot on machines without a GPU: compile them (nothing runs
# them here but test_backend's CPU part and its "no GPU" path).
nvcc_bin="$(command -v nvcc || true)"
[[ -z "$nvcc_bin" && -x /usr/local/cuda/bin/nvcc ]] && nvcc_bin=/usr/local/cuda/bin/nvcc
build_cuda() {
    cmake -S . -B "$cdir" -DCMAKE_BUILD_TYPE=Release -DSQZ_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_bin" >/dev/null &&
    cmake --build "$cdir" -j"$jobs" --target sqz test_backend test_block
}
run_test_backend() { # test_backend and test_block of the CUDA build: their CPU parts here
    local rc=0 t
    for t in test_backend test_block; do
        rc=0
        SQZ_SHARED="${SQZ_SHARED:-$root/../shared}" SQZ_FIXTURES="$root/tests/fixtures" "$cdir/tests/$t" || rc=$?
        if [[ $rc == 77 ]]; then
            echo "$t: CPU checks passed; GPU comparisons skipped (no GPU here)"
        elif [[ $rc != 0 ]]; then
            return $rc
        fi
    done
    return 0
}
if [[ -n "$nvcc_bin" ]]; then
    cuda_stage="build (CUDA backend, $("$nvcc_bin" --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p'))"
    stage "$cuda_stage" build_cuda
    if ! stage_failed "$cuda_stage"; then
        stage "test_backend, test_block (CUDA build)" run_test_backend
    fi
else
    say "CUDA backend: no CUDA toolkit here (no nvcc): its sources were not compiled"
fi

say "summary"
if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all stages passed"

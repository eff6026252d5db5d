#!/usr/bin/env bash
# Builds every libFuzzer target (tests/fuzz/fuzz_*.c) with clang in build-fuzz and runs each
# for $FUZZ_SECONDS (default 20) from its seed corpus. Exits non-zero when any target
# crashes, leaks or trips a sanitizer; the crashing input is left in build-fuzz/artifacts/.
#   FUZZ_SECONDS=60 scripts/fuzz.sh            # all targets
#   scripts/fuzz.sh fuzz_gguf fuzz_config        # some targets
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${FUZZ_BUILD:-$ROOT/build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-20}"
JOBS="${FUZZ_JOBS:-2}"

mkdir -p "$BUILD"
CC=clang cmake -S "$ROOT" -B "$BUILD" -DSQZ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/configure.log" 2>&1 || {
    cat "$BUILD/configure.log"; echo "fuzz.sh: configure failed" >&2; exit 2; }
cmake --build "$BUILD" --target fuzz_all -j "$JOBS" || { echo "fuzz.sh: build failed" >&2; exit 2; }

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for src in "$ROOT"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
fi

mkdir -p "$BUILD/artifacts"
failed=()
for t in "${targets[@]}"; do
    bin="$BUILD/tests/fuzz/$t"
    [ -x "$bin" ] || { echo "fuzz.sh: $t was not built" >&2; failed+=("$t"); continue; }
    # a scratch corpus (new inputs land there), seeded from the committed one
    work="$BUILD/corpus/$t"
    mkdir -p "$work"
    seeds=()
    [ -d "$ROOT/tests/fuzz/corpus/$t" ] && seeds+=("$ROOT/tests/fuzz/corpus/$t")
    echo "== $t: ${SECONDS_EACH}s"
    if ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        "$bin" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$BUILD/artifacts/$t-" "$work" "${seeds[@]}" >"$BUILD/$t.log" 2>&1; then
        grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$BUILD/$t.log" | tr '\n' ' '
        echo
    else
        echo "fuzz.sh: $t FAILED (log: $BUILD/$t.log)" >&2
        grep -E "ERROR|runtime error|SUMMARY|Test unit written" "$BUILD/$t.log" | head -5 >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${SECONDS_EACH}s without a crash"

#!/usr/bin/env bash
# Bad input to `sqz quantize`: every case exits non-zero (2 for usage errors, 1 for
# runtime errors), never by a signal, with one line "sqz: error: ..." on stderr naming
# the problem, and leaves NOTHING in the output directory: no file at the -o path and no
# temporary file (sqz writes OUT.tmp.<pid> and renames it at the end).
# Last case: a run interrupted by SIGINT (Ctrl-C) must leave nothing behind either.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "${SQZ_TMP:-/tmp}"
T="${SQZ_TMP:-/tmp}/t_quantize_bad.$$"
rm -rf "$T"
mkdir -p "$T/in"
bg_pid=
cleanup() {
    [[ -n "$bg_pid" ]] && kill -KILL "$bg_pid" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
checks=0

die() { echo "t_quantize_bad: FAIL: $*" >&2; exit 1; }
[[ -x "$sqz" ]] || die "sqz binary not found at $sqz"

model="$(sqz_default_model)" || die "default model GGUF not found ('$model'): run scripts/setup.sh"
calib="$shared/data/calib-state-of-the-union.txt"
[[ -f "$calib" ]] || die "$calib not found"

O="$T/out"         # the only thing in here after a case must be nothing at all
OUT="$O/q.gguf"

# leftovers: prints what a case left in $O (the -o file, OUT.tmp.*, anything else)
leftovers() { (cd "$O" 2>/dev/null && find . -mindepth 1 | sed 's|^\./||' | tr '\n' ' '); }

# expect_error CODE 'PATTERN[|PATTERN...]' cmd... : exit status CODE, stderr exactly one
# line, starting with "sqz: error: " and containing every PATTERN (fixed strings; a
# pattern "re:X" is an extended regex X); nothing left in $O.
expect_error() {
    local want=$1 pats=$2; shift 2
    rm -rf "$O"; mkdir -p "$O"
    "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? why=""
    checks=$((checks + 1))
    local lines; lines=$(wc -l <"$T/stderr")
    [[ $rc -eq $want ]] || why+="exit $rc, want $want; "
    [[ $lines -eq 1 ]] || why+="$lines stderr lines, want 1; "
    head -n 1 "$T/stderr" | grep -q '^sqz: error: ' || why+="no 'sqz: error: ' line; "
    local IFS='|' p
    for p in $pats; do
        if [[ $p == re:* ]]; then
            grep -qE -- "${p#re:}" "$T/stderr" || why+="message lacks /${p#re:}/; "
        else
            grep -qF -- "$p" "$T/stderr" || why+="message lacks '$p'; "
        fi
    done
    unset IFS
    local left; left="$(leftovers)"
    [[ -z "$left" ]] || why+="left in the output directory: $left; "
    if [[ -n "$why" ]]; then
        fails=$((fails + 1))
        echo "FAIL: sqz ${*:2}" >&2
        echo "      $why" >&2
        echo "      stderr: $(head -c 600 "$T/stderr")" >&2
    else
        echo "ok: exit $rc: $(cat "$T/stderr")"
    fi
}

Q=("$sqz" quantize)

# ---- usage errors (exit 2)
expect_error 2 "Q9_K" "${Q[@]}" "$model" -o "$OUT" --type Q9_K
expect_error 2 "Q9_K|--output-type" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --output-type Q9_K
expect_error 2 "--type" "${Q[@]}" "$model" -o "$OUT"
expect_error 2 "missing -o" "${Q[@]}" "$model" --type Q4_K
expect_error 2 "MODEL" "${Q[@]}" -o "$OUT" --type Q4_K
expect_error 2 "--nsamples|--calib" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --nsamples 4
expect_error 2 "--seqlen|--calib" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --seqlen 64
expect_error 2 "--seed|--calib" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --seed 3
expect_error 2 "gptq|--calib" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --method gptq
expect_error 2 "--keep-output-type|--output-type" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --keep-output-type --output-type Q8_0
expect_error 2 "--damp|'2'" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --calib "$calib" --damp 2
expect_error 2 "--shrink|'1.5'" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --calib "$calib" --shrink 1.5
expect_error 2 "--shrink|'x'" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --calib "$calib" --shrink x
expect_error 2 "--shrink|--calib" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --shrink 0.5
expect_error 2 "--rescale|'1.5'" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --rescale 1.5
expect_error 2 "--rescale|'half'" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --rescale half
expect_error 2 "--rescale|needs" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --rescale
expect_error 2 "--threads|'0'" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --threads 0
expect_error 2 "--method|gptx" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --method gptx
expect_error 2 "--frob" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --frob

# ---- calibration text (exit 1)
printf 'Hello world, hello!\n' >"$T/in/short.txt"   # 20 bytes: a handful of tokens
[[ $(wc -c <"$T/in/short.txt") -eq 20 ]] || die "short.txt is not 20 bytes"
# the message must give the token count and the window length
expect_error 1 "$T/in/short.txt|re:[^0-9][1-9][0-9]? tokens|--seqlen 64" \
    "${Q[@]}" "$model" -o "$OUT" --type Q4_K --calib "$T/in/short.txt" --nsamples 4 --seqlen 64
expect_error 1 "$T/in/missing.txt" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --calib "$T/in/missing.txt"
head -c 4096 "$model" >"$T/in/binary.txt"
expect_error 1 "$T/in/binary.txt" "${Q[@]}" "$model" -o "$OUT" --type Q4_K --calib "$T/in/binary.txt"

# ---- models (exit 1)
expect_error 1 "$T/in/nope.gguf" "${Q[@]}" "$T/in/nope.gguf" -o "$OUT" --type Q4_K
for n in 2000 50000000; do   # inside the metadata, inside the tensor data
    head -c $n "$model" >"$T/in/trunc.gguf"
    expect_error 1 "$T/in/trunc.gguf" "${Q[@]}" "$T/in/trunc.gguf" -o "$OUT" --type Q4_K
done
rm -f "$T/in/trunc.gguf"

# ---- output (exit 1): a directory that does not exist, and -o naming a directory
expect_error 1 "$O/missing" "${Q[@]}" "$model" -o "$O/missing/q.gguf" --type Q8_0
[[ ! -e "$O/missing" ]] || { fails=$((fails + 1)); echo "FAIL: $O/missing was created" >&2; }
# (stories260K: the whole run happens before the final rename fails; it takes 0.1 s)
stories="$shared/models/stories260K"
[[ -f "$stories/config.json" ]] || die "$stories not found"
mkdir -p "$T/in/isdir"
expect_error 1 "$T/in/isdir" "${Q[@]}" "$stories" -o "$T/in/isdir" --type Q8_0
left="$(cd "$T/in/isdir" && ls -A)"
[[ -z "$left" ]] || { fails=$((fails + 1)); echo "FAIL: -o DIR left $left in it" >&2; }

# ---- calibration as token ids (stories260K has no tokenizer): an id outside the
# vocabulary is refused by name; valid ids quantize (GPTQ) and write the file
python3 -c "import json; json.dump([1] + [(7 * i) % 509 + 3 for i in range(1023)], open('$T/in/ids.json', 'w'))"
python3 -c "import json; json.dump([1, 5, 9999, 7], open('$T/in/badids.json', 'w'))"
expect_error 1 "$T/in/badids.json|entry 2|[0, 512)" "${Q[@]}" "$stories" -o "$OUT" --type Q8_0 --calib "$T/in/badids.json"
expect_error 1 "$stories|no tokenizer" "${Q[@]}" "$stories" -o "$OUT" --type Q8_0 --calib "$shared/data/wikitext-2-raw-test.txt"
rm -rf "$O"; mkdir -p "$O"
checks=$((checks + 1))
if "${Q[@]}" "$stories" -o "$OUT" --type Q8_0 --method gptq --calib "$T/in/ids.json" --nsamples 4 --seqlen 128 \
    --quiet >"$T/stdout" 2>"$T/stderr" && [[ -s "$OUT" ]]; then
    echo "ok: stories260K quantized with --calib token ids (GPTQ): $(head -n 1 "$T/stdout")"
else
    fails=$((fails + 1))
    echo "FAIL: quantize with --calib token ids: $(head -c 400 "$T/stderr")" >&2
fi

# ---- interrupted run: SIGINT while the output is being written leaves no file.
# (set -m: a background job of a non-interactive shell would otherwise ignore SIGINT.)
rm -rf "$O"; mkdir -p "$O"
checks=$((checks + 1))
set -m
"${Q[@]}" "$model" -o "$OUT" --type Q4_K --method gptq --calib "$calib" --nsamples 8 --seqlen 128 --threads 1 --quiet \
    >"$T/stdout" 2>"$T/stderr" &
bg_pid=$!
set +m
# wait until the temporary output exists (the run is writing), then 0.5 s more (GPTQ on
# one thread: the whole run takes tens of seconds, RTN now about one)
started=0
for _ in $(seq 1 600); do
    if compgen -G "$OUT.tmp*" >/dev/null; then started=1; break; fi
    kill -0 "$bg_pid" 2>/dev/null || break
    sleep 0.1
done
sleep 0.5
running=0
kill -0 "$bg_pid" 2>/dev/null && running=1
kill -INT "$bg_pid" 2>/dev/null
# give it 30 s to clean up and exit
for _ in $(seq 1 300); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$bg_pid" 2>/dev/null; then
    kill -KILL "$bg_pid" 2>/dev/null
    wait "$bg_pid" 2>/dev/null
    rc=timeout
else
    wait "$bg_pid"
    rc=$?
fi
bg_pid=
left="$(leftovers)"
why=""
[[ $started -eq 1 ]] || why+="the run never created $OUT.tmp* (it exited first?); "
[[ $running -eq 1 ]] || why+="the run had ended before SIGINT; "
[[ $rc != timeout ]] || why+="still running 30 s after SIGINT; "
[[ $rc == timeout || $rc -ne 0 ]] || why+="exit status 0 after SIGINT; "
[[ -z "$left" ]] || why+="left in the output directory: $left; "
if [[ -n "$why" ]]; then
    fails=$((fails + 1))
    echo "FAIL: SIGINT during 'sqz quantize MODEL -o $OUT --type Q4_K --method gptq --threads 1' (exit $rc): $why" >&2
    echo "      stderr: $(head -c 400 "$T/stderr")" >&2
else
    echo "ok: SIGINT 0.5 s into writing: exit $rc, nothing left in the output directory"
fi

echo "t_quantize_bad: $checks checks, $fails failed"
[[ $fails -eq 0 ]]

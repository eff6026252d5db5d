#!/usr/bin/env bash
# Resumable runs (sqz quantize / compress --resume) on the default model (SmolLM2): a run
# killed (SIGKILL) after it has checkpointed some layers leaves OUT.part and OUT.state and
# no OUT; the same command again goes on from the checkpoint (it says after which layer)
# and writes exactly the bytes of an uninterrupted run, leaving no checkpoint behind. For
# compress the estimate is read back too. A checkpoint made with other calibration is
# refused with a one-line error naming it, and nothing is written. Without --resume an
# interrupted run leaves nothing (t_compress checks that).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "${SQZ_TMP:-/tmp}"
T="${SQZ_TMP:-/tmp}/t_resume.$$"
rm -rf "$T"
mkdir -p "$T"
bg_pid=
cleanup() {
    [[ -n "$bg_pid" ]] && kill -KILL "$bg_pid" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
checks=0
die() { echo "t_resume: FAIL: $*" >&2; exit 1; }
check() { # check DESCRIPTION CONDITION-STATUS
    checks=$((checks + 1))
    if [[ $2 -ne 0 ]]; then fails=$((fails + 1)); echo "FAIL: $1" >&2; else echo "ok: $1"; fi
}
[[ -x "$sqz" ]] || die "sqz binary not found at $sqz"
model="$(sqz_default_model)" || die "default model missing ($model)"
calib="$shared/data/calib-state-of-the-union.txt"
[[ -f "$calib" ]] || die "$calib not found"

# start CMD...: runs it in the background; kill_after STATE: SIGKILL once STATE exists
# and the run has gone on for a while after it (more layers checkpointed), then waits.
start() {
    "$@" >"$T/bg.out" 2>"$T/bg.err" &
    bg_pid=$!
}
kill_after() {
    local state=$1 seen=0
    for _ in $(seq 1 3000); do
        [[ -f "$state" ]] && { seen=1; break; }
        kill -0 "$bg_pid" 2>/dev/null || break
        sleep 0.05
    done
    sleep 1.5 # a few more layers
    local running=0
    kill -0 "$bg_pid" 2>/dev/null && running=1
    kill -KILL "$bg_pid" 2>/dev/null
    wait "$bg_pid" 2>/dev/null
    bg_pid=
    echo "$seen $running"
}

q=(quantize "$model" --type Q4_K --method gptq --calib "$calib" --nsamples 4 --seqlen 256 --threads 2 --quiet)

# ---- quantize: uninterrupted, then killed and resumed
"$sqz" "${q[@]}" -o "$T/ref.gguf" >"$T/ref.log" 2>&1 || die "reference quantize failed: $(tail -n 2 "$T/ref.log")"
start "$sqz" "${q[@]}" -o "$T/q.gguf" --resume --checkpoint-every 0
read -r seen running < <(kill_after "$T/q.gguf.state")
kept=0
[[ -f "$T/q.gguf.part" && -f "$T/q.gguf.state" && ! -e "$T/q.gguf" ]] && kept=1
check "quantize killed after a checkpoint (state seen $seen, still running $running): OUT.part and OUT.state, no OUT" \
    $(( seen != 1 || running != 1 || kept != 1 ))
"$sqz" "${q[@]}" -o "$T/q.gguf" --resume --checkpoint-every 0 >"$T/q.log" 2>&1
rc=$?
layer=$(sed -n 's/^resumed from .*: layers 0\.\.\([0-9]*\) were done before$/\1/p' "$T/q.log")
cmp -s "$T/ref.gguf" "$T/q.gguf"
same=$?
check "quantize --resume: exit $rc, went on after layer ${layer:-?}, the same bytes as the uninterrupted run" \
    $(( rc != 0 || ${#layer} == 0 || same != 0 ))
left=$(ls "$T" | grep -c 'q\.gguf\.' || true)
check "quantize --resume: no checkpoint left ($left files)" $(( left != 0 ))

# ---- a checkpoint made with other calibration is refused by name
start "$sqz" "${q[@]}" -o "$T/m.gguf" --resume --checkpoint-every 0
read -r seen running < <(kill_after "$T/m.gguf.state")
q3=("${q[@]}")
q3[9]=3 # --nsamples 3
"$sqz" "${q3[@]}" -o "$T/m.gguf" --resume >"$T/m.log" 2>&1
rc=$?
msg=$(tail -n 1 "$T/m.log")
check "another --nsamples against the checkpoint: exit $rc, '$msg', no OUT" \
    $(( rc == 0 || seen != 1 || $(grep -c 'calibration' <<<"$msg") != 1 || $(wc -l <"$T/m.log") != 1 )) 
wrote=0
[[ -e "$T/m.gguf" ]] && wrote=1
check "nothing written at OUT after the refusal" $(( wrote != 0 ))

# ---- compress: uninterrupted, then killed in its quantization and resumed
c=(compress "$model" --target-bpw 6 --types Q4_0,Q8_0 --calib "$calib" --nsamples 2 --seqlen 256 --heldout 1
   --threads 2 --quiet)
"$sqz" "${c[@]}" -o "$T/cref.gguf" >"$T/cref.log" 2>&1 || die "reference compress failed: $(tail -n 2 "$T/cref.log")"
start "$sqz" "${c[@]}" -o "$T/c.gguf" --resume --checkpoint-every 0
read -r seen running < <(kill_after "$T/c.gguf.round1.state")
kept=0
[[ -f "$T/c.gguf.estimate.json" && -f "$T/c.gguf.round1.part" && ! -e "$T/c.gguf" ]] && kept=1
check "compress killed in round 1's quantization (state seen $seen, running $running): estimate and round checkpoints kept" \
    $(( seen != 1 || running != 1 || kept != 1 ))
"$sqz" "${c[@]}" -o "$T/c.gguf" --resume --checkpoint-every 0 >"$T/c.log" 2>&1
rc=$?
res=$(grep '^resumed:' "$T/c.log")
cmp -s "$T/cref.gguf" "$T/c.gguf"
same=$?
check "compress --resume: exit $rc, '$res', the same bytes as the uninterrupted run" \
    $(( rc != 0 || $(grep -c "estimate from the checkpoint, quantization after layer" <<<"$res") != 1 || same != 0 ))
left=$(ls "$T" | grep -c 'c\.gguf\.' || true)
check "compress --resume: no checkpoint left ($left files)" $(( left != 0 ))

echo "t_resume: $checks checks, $fails failed"
[[ $fails -eq 0 ]]

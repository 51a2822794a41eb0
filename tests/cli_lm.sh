# thermoe eval / generate / info --model on the reference checkpoints in tests/data/lm, and
# every kind of broken model directory exiting non-zero with the file and the problem named.
# usage: bash cli_lm.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_lm.sh path/to/thermoe}
HERE=$(cd "$(dirname "$0")" && pwd)
LM="$HERE/data/lm"
TMP=$(mktemp -d /tmp/thermoe-cli-lm-XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT
fails=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# expect CODE NEEDLE args...: run thermoe, check the exit code and that NEEDLE is in
# stdout (code 0) or stderr (code != 0)
expect() {
    local code=$1 needle=$2
    shift 2
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local where="$TMP/err"
    [ "$code" -eq 0 ] && where="$TMP/out"
    if [ "$rc" -ne "$code" ]; then
        fail "thermoe $* exited $rc, want $code; stderr: $(head -c 600 "$TMP/err")"
    elif ! grep -qF -- "$needle" "$where"; then
        fail "thermoe $*: '$needle' not in $( [ "$code" -eq 0 ] && echo stdout || echo stderr ): $(head -c 600 "$where")"
    fi
}

TOK="$LM/text.tokens"
# eval: text and JSON, the perplexity transformers computed (expected.json)
expect 0 "perplexity" eval --model "$LM/qwen2_moe" --tokens "$TOK" --seq-len 32
grep -q "95% CI over windows" "$TMP/out" || fail "no confidence interval in eval's text output"
grep -q "bits/byte" "$TMP/out" || fail "no bits per byte (the token file knows its bytes)"
for m in mixtral olmoe qwen2_moe qwen3_moe; do
    expect 0 '"perplexity"' eval --model "$LM/$m" --tokens "$TOK" --seq-len 32 --batch 3 --json
    got=$(sed -n 's/.*"perplexity": \([0-9.e+-]*\),.*/\1/p' "$TMP/out")
    want=$(sed -n 's/.*"perplexity": \([0-9.e+-]*\),.*/\1/p' "$LM/$m/expected.json")
    awk -v g="$got" -v w="$want" 'BEGIN { d = g / w - 1; if (d < 0) d = -d; exit !(d <= 1e-3) }' ||
        fail "$m: eval perplexity $got, transformers $want"
    grep -q '"tokens_scored": 310' "$TMP/out" || fail "$m: tokens_scored is not 310: $(cat "$TMP/out")"
    grep -q '"tokens_per_s"' "$TMP/out" || fail "$m: no tokens_per_s"
    # generate: transformers' greedy continuation of the first 10 ids
    expect 0 "" generate --model "$LM/$m" --tokens "$TOK" --prompt-tokens 10 --max-new 8
    want=$(tr -d ' \n' <"$LM/$m/expected.json" | sed -n 's/.*"greedy":\[\([0-9,]*\)\].*/\1/p' | tr ',' ' ')
    [ "$(cat "$TMP/out")" = "$want" ] || fail "$m: generate printed '$(cat "$TMP/out")', transformers '$want'"
done
# one window: no CI; a routing strategy runs per layer; q4 experts load and run
expect 0 '"perplexity_ci95": null' eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 32 --max-windows 1 --json
expect 0 '"routing_strategy": "kernel_aware_ttha"' eval --model "$LM/olmoe" --tokens "$TOK" \
    --seq-len 32 --max-windows 2 --routing-strategy kernel_aware_ttha --json
expect 0 '"expert_type": "q4"' eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 32 \
    --max-windows 2 --expert-type q4 --group-size 4 --json
expect 0 '"expert_type": "q2"' eval --model "$LM/mixtral" --tokens "$TOK" --seq-len 32 \
    --max-windows 2 --expert-type q2 --group-size 4 --impl unfused --json
expect 0 '"expert_type": "bf16"' eval --model "$LM/mixtral" --tokens "$TOK" --seq-len 32 \
    --max-windows 2 --expert-type bf16 --backend cpu --json
# one type per expert: a list of one type is that type, bit for bit; a mixed list loads each
# expert as its own type and routes on the costs of each; a list of the wrong length, bf16 in a
# list or an unknown entry are refused, naming the count or the entry
"$BIN" eval --model "$LM/mixtral" --tokens "$TOK" --seq-len 32 --max-windows 2 \
    --expert-type q4 --group-size 4 --json >"$TMP/one.json" 2>"$TMP/err" || fail "eval q4: $(cat "$TMP/err")"
"$BIN" eval --model "$LM/mixtral" --tokens "$TOK" --seq-len 32 --max-windows 2 \
    --expert-type q4,q4,q4,q4,q4 --group-size 4 --json >"$TMP/list.json" 2>"$TMP/err" ||
    fail "eval q4 list: $(cat "$TMP/err")"
ppl() { grep -o '"perplexity": [^,]*' "$1"; }
[ -n "$(ppl "$TMP/one.json")" ] && [ "$(ppl "$TMP/one.json")" = "$(ppl "$TMP/list.json")" ] ||
    fail "--expert-type q4,q4,q4,q4,q4 gave $(ppl "$TMP/list.json"), q4 gave $(ppl "$TMP/one.json")"
"$BIN" eval --model "$LM/mixtral" --tokens "$TOK" --seq-len 32 --max-windows 2 \
    --expert-type fp16,q4,q2,q4,fp16 --group-size 4 --json >"$TMP/mixed.json" 2>"$TMP/err" ||
    fail "eval mixed: $(cat "$TMP/err")"
[ -n "$(ppl "$TMP/mixed.json")" ] && [ "$(ppl "$TMP/mixed.json")" != "$(ppl "$TMP/one.json")" ] ||
    fail "a mixed list gave the perplexity of all-q4: $(ppl "$TMP/mixed.json")"
expect 0 '"expert_type": "fp16,q4,q2,q4,fp16"' eval --model "$LM/mixtral" --tokens "$TOK" \
    --seq-len 32 --max-windows 2 --expert-type fp16,q4,q2,q4,fp16 --group-size 4 \
    --routing-strategy hierarchical_adaptive --json
expect 1 "3 types given for a model of 5 experts" eval --model "$LM/mixtral" --tokens "$TOK" \
    --expert-type q4,q4,fp16 --group-size 4
expect 1 "expert 4 is bf16" eval --model "$LM/mixtral" --tokens "$TOK" \
    --expert-type q4,q4,q4,fp16,bf16 --group-size 4
expect 2 "entry 2 'q3'" eval --model "$LM/mixtral" --tokens "$TOK" --expert-type q4,q3,q4,q4,q4
# energy: only a GPU's, from NVML; on the CPU it is null with the reason, never 0
expect 0 '"energy_j": null' eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 32 \
    --max-windows 2 --backend cpu --json
grep -q '"energy_not_measured": "the decoder runs on the CPU"' "$TMP/out" ||
    fail "eval on the CPU: no reason for the missing energy: $(cat "$TMP/out")"
expect 0 "energy       not measured (--telemetry none)" eval --model "$LM/olmoe" --tokens "$TOK" \
    --seq-len 32 --max-windows 2 --telemetry none
expect 1 "measures the GPU" eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 32 \
    --max-windows 2 --backend cpu --telemetry nvml
expect 2 "no simulated GPU" eval --model "$LM/olmoe" --tokens "$TOK" --telemetry sim
# --windows-csv: one row per window, their token-weighted mean is eval's nll_mean
expect 0 '"nll_mean"' eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 16 --json \
    --windows-csv "$TMP/win.csv"
python3 - "$TMP/win.csv" "$TMP/out" <<'PY' || fail "--windows-csv does not add up to nll_mean"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
res = json.load(open(sys.argv[2]))
assert len(rows) == res["windows"] and [int(r["window"]) for r in rows] == list(range(len(rows)))
tok = sum(int(r["tokens"]) for r in rows)
assert tok == res["tokens_scored"]
m = sum(int(r["tokens"]) * float(r["nll_mean"]) for r in rows) / tok
assert abs(m - res["nll_mean"]) <= 1e-9 * abs(res["nll_mean"]), (m, res["nll_mean"])
PY
expect 1 "--windows-csv $TMP/no/such/dir/w.csv: cannot write" eval --model "$LM/olmoe" \
    --tokens "$TOK" --seq-len 16 --windows-csv "$TMP/no/such/dir/w.csv"

# info --model
expect 0 "family       qwen2_moe" info --model "$LM/qwen2_moe"
grep -q "layers       3: M D M" "$TMP/out" || fail "info: qwen2_moe layer kinds: $(cat "$TMP/out")"
grep -q "shared expert of size 16" "$TMP/out" || fail "info: no shared expert line"
grep -q "per token" "$TMP/out" || fail "info: no bytes per token"
expect 0 "5 shards" info --model "$LM/qwen3_moe"
expect 0 "head_dim 10" info --model "$LM/mixtral"
expect 0 "BF16" info --model "$LM/mixtral"

# flags and backends
# --backend cuda runs where a CUDA device answers; elsewhere it says why and exits 1
for sub in eval generate; do
    extra=""
    [ $sub = generate ] && extra="--prompt-tokens 8 --max-new 4"
    if "$BIN" $sub --model "$LM/olmoe" --tokens "$TOK" $extra --backend cuda >"$TMP/out" 2>"$TMP/err"; then
        [ $sub = generate ] || grep -q "backend cuda" "$TMP/out" ||
            fail "$sub --backend cuda: no 'backend cuda' in $(head -c 600 "$TMP/out")"
    elif ! grep -qi "cuda" "$TMP/err"; then
        fail "$sub --backend cuda failed without naming CUDA: $(head -c 600 "$TMP/err")"
    fi
done
expect 2 "--model DIR is required" eval --tokens "$TOK"
expect 2 "--tokens FILE is required" eval --model "$LM/olmoe"
head -c $((1024 + 20)) "$TOK" >"$TMP/short.tokens"   # 5 ids: header[2] = 5
printf '\005\000\000\000' | dd of="$TMP/short.tokens" bs=1 seek=8 conv=notrunc status=none
expect 1 "fewer than one window" eval --model "$LM/olmoe" --tokens "$TMP/short.tokens" --seq-len 8
expect 1 "beyond the model's max_position_embeddings" eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 300
expect 2 "unknown type 'q3'" eval --model "$LM/olmoe" --tokens "$TOK" --expert-type q3
expect 1 "q4 experts of this model" eval --model "$LM/olmoe" --tokens "$TOK" --expert-type q4
expect 1 "static_optimal" eval --model "$LM/olmoe" --tokens "$TOK" --seq-len 32 --routing-strategy static_optimal
expect 1 "exceed max_position_embeddings" generate --model "$LM/olmoe" --tokens "$TOK" --max-new 8
expect 0 "usage: thermoe eval" eval --help
expect 0 "--expert-type" generate --help
expect 0 "--model DIR" info --help

# broken model directories: each names the file and what is wrong
cp -r "$LM/mixtral" "$TMP/m_layers"
sed -i 's/"num_hidden_layers": 2/"num_hidden_layers": 3/' "$TMP/m_layers/config.json"
expect 1 "tensors that config.json implies are missing: model.layers.2.input_layernorm.weight" info --model "$TMP/m_layers"
grep -qF ", ..." "$TMP/err" || fail "missing tensors: the list is not cut after the first names"
cp -r "$LM/olmoe" "$TMP/m_shape"
sed -i 's/"intermediate_size": 20/"intermediate_size": 24/' "$TMP/m_shape/config.json"
expect 1 "model.safetensors: tensor 'model.layers.0.mlp.experts.0.gate_proj.weight' has shape [20, 36], but config.json implies [24, 36]" info --model "$TMP/m_shape"
cp -r "$LM/olmoe" "$TMP/m_type"
sed -i 's/"model_type": "olmoe"/"model_type": "deepseek_v3"/' "$TMP/m_type/config.json"
expect 1 "config.json: model_type 'deepseek_v3' is not supported" info --model "$TMP/m_type"
cp -r "$LM/qwen3_moe" "$TMP/m_trunc"
f="$TMP/m_trunc/model-00003-of-00005.safetensors"
truncate -s $(( $(stat -c %s "$f") - 100 )) "$f"
expect 1 "model-00003-of-00005.safetensors" info --model "$TMP/m_trunc"
grep -qiE "beyond|truncated|exceeds|outside" "$TMP/err" || fail "truncated shard: $(cat "$TMP/err")"
cp -r "$LM/qwen3_moe" "$TMP/m_noshard"
rm "$TMP/m_noshard/model-00002-of-00005.safetensors"
expect 1 "model.safetensors.index.json: points at $TMP/m_noshard/model-00002-of-00005.safetensors, which does not exist" info --model "$TMP/m_noshard"
mkdir "$TMP/m_empty"
echo '{"model_type": "olmoe", "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}' >"$TMP/m_empty/config.json"
expect 1 "neither model.safetensors nor model.safetensors.index.json" info --model "$TMP/m_empty"
expect 1 "config.json" info --model "$TMP/nowhere"
cp -r "$LM/olmoe" "$TMP/m_vocab"
sed -i 's/"vocab_size": 211/"vocab_size": 100/' "$TMP/m_vocab/config.json"
expect 1 "has shape [211, 36], but config.json implies [100, 36]" eval --model "$TMP/m_vocab" --tokens "$TOK"
printf 'not a token file' >"$TMP/bad.tokens"
expect 1 "bad.tokens" eval --model "$LM/olmoe" --tokens "$TMP/bad.tokens"

# tools/tokenize.py writes the token file that thermoe reads (where Python has tokenizers;
# THERMOE_PYTHON names another interpreter)
PY=${THERMOE_PYTHON:-python3}
if "$PY" -c "import tokenizers" 2>/dev/null; then
    "$PY" "$HERE/../tools/tokenize.py" --model "$LM/olmoe" --out "$TMP/t.tokens" "$LM/text.txt" >/dev/null ||
        fail "tools/tokenize.py failed"
    cmp -s "$TMP/t.tokens" "$TOK" || fail "tools/tokenize.py wrote a different token file than text.tokens"
else
    echo "skip: tools/tokenize.py ($PY has no tokenizers module)"
fi

if [ "$fails" -ne 0 ]; then
    echo "cli_lm: $fails failure(s)"
    exit 1
fi
echo "cli_lm: all passed"

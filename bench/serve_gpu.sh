#!/usr/bin/env bash
# The serving replay on a real GPU (docs/serve.md "On a GPU"): the trained default model on
# the CUDA backend, each MoE layer's selections also driving experts of Mixtral's shape
# (4096 x 14336, random weights, --expert-shape mixtral), NVML measuring every step in
# wall-clock time. The conversation trace (THERMOE_FIXTURES/traces/azure_llm_2023_conv.csv,
# or a copy in .devdeps/root/fixtures/traces when carried there, else the synthetic
# azure_conv fitted to it), time-scaled to keep the GPU
# busy; each strategy replays the requests arriving in the first DURATION seconds, the
# strategies interleaved over REPEATS passes (the order reversed every other pass) with a
# rest between replays; then a table per strategy vs baseline in $OUT/serve_table.md.
#
# usage (repo root, GPU machine, .devdeps carried):  bash bench/serve_gpu.sh
# env: STRATEGIES (baseline,predictive_thermal; an entry strategy@type, e.g. baseline@fp16,
#      predictive_thermal@q4, also sets --expert-type: replays at two types are compared with
#      baseline at the wider one), REPEATS (2), REPEAT_FIRST (1: the number of
#      the first pass, so that passes can run in separate calls into the same $OUT),
#      DURATION (s of arrivals per replay, 300), TIME_SCALE (4: at 8 the conversation trace
#      outruns an H100 from about 150 s on, bench/results/h100_serve_precision), REST (s
#      between replays, 30),
#      DRAIN (s a replay may run past DURATION before it is stopped and kept as interrupted,
#      120), MAX_CONTEXT (384), MAX_GENERATED (128), MAX_SEQS (64), MAX_BATCH_TOKENS (512),
#      EXTRA (more thermoe serve flags), OUT (/tmp/out)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
STRATEGIES=${STRATEGIES:-baseline,predictive_thermal}
REPEATS=${REPEATS:-2}
REPEAT_FIRST=${REPEAT_FIRST:-1}
DURATION=${DURATION:-300}
TIME_SCALE=${TIME_SCALE:-4}
REST=${REST:-30}
DRAIN=${DRAIN:-120}
mkdir -p "$OUT/serve"
source bench/gpu_build.sh
gpu_build thermoe || exit 1
conv="${THERMOE_FIXTURES:-../shared/fixtures}/traces/azure_llm_2023_conv.csv"
# a GPU machine has no ../shared: a copy carried in the ignored .devdeps/root/fixtures
[ -f "$conv" ] || [ -n "${THERMOE_FIXTURES:-}" ] || conv=.devdeps/root/fixtures/traces/azure_llm_2023_conv.csv
if [ -f "$conv" ]; then trace=(--trace "$conv"); else trace=(--synthetic azure_conv); fi
common=(--model models/default --expert-shape mixtral --backend cuda --telemetry nvml
        "${trace[@]}" --time-scale "$TIME_SCALE" --duration "$DURATION"
        --max-context "${MAX_CONTEXT:-384}" --max-generated "${MAX_GENERATED:-128}"
        --max-seqs "${MAX_SEQS:-64}" --max-batch-tokens "${MAX_BATCH_TOKENS:-512}" --quiet)
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && common+=(${EXTRA})
IFS=, read -r -a strat <<<"$STRATEGIES"
for ((rep = REPEAT_FIRST; rep < REPEAT_FIRST + REPEATS; rep++)); do
  order=("${strat[@]}")
  if ((rep % 2 == 0)); then # interleaved: every other pass in reverse order
    order=()
    for ((i = ${#strat[@]} - 1; i >= 0; i--)); do order+=("${strat[i]}"); done
  fi
  for e in "${order[@]}"; do
    s=${e%@*}
    flags=(--routing-strategy "$s") name="r${rep}_$s"
    [ "$e" != "$s" ] && flags+=(--expert-type "${e#*@}") && name+="_${e#*@}"
    echo "== $name: thermoe serve ${common[*]} ${flags[*]}" | tee "$OUT/serve/$name.cmd"
    # SIGTERM at the limit stops the replay after its step: its files say interrupted
    timeout -s TERM $((DURATION + DRAIN)) build-gpu/thermoe serve "${common[@]}" "${flags[@]}" \
      --out "$OUT/serve/$name" >"$OUT/serve/$name.log" 2>&1
    echo "$(el) $name rc=$? $(nvidia-smi --query-gpu=temperature.gpu,temperature.memory,power.draw --format=csv,noheader 2>&1)"
    grep -E "^(strategy|steady|no steady|MEASURED|SIMULATED|  TTFT|  TPOT|  energy|  power)" \
      "$OUT/serve/$name.log"
    sleep "$REST"
  done
done
python3 bench/serve_table.py "$OUT/serve" >"$OUT/serve_table.md" && cat "$OUT/serve_table.md"
pack_out "$OUT"
echo "$(el) done"

#!/usr/bin/env bash
# The quality side of expert-set selection: each budget on the trained default model and
# real text (data/corpus/test.tokens), CPU backend, energy from the simulated H100 at
# Mixtral's expert shape (the LM's default --expert-shape), baseline and predictive_thermal
# (which applies the base budget while the GPU is cool, so the budget alone is measured).
# Prints one table: energy per token change (simulated) and perplexity change (measured on
# the model) per budget and workload, with the repeats as the unit.
# usage: bash bench/budget_sweep.sh [BUILD_DIR] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-rel}
R=${2:-3}
OUT=${OUT:-/tmp/budget_sweep}
mkdir -p "$OUT"
echo "date $(date -u +%FT%TZ), host $(hostname), $(nproc) cores, commit $(git rev-parse --short HEAD)"
for cfg in "kl 0.003" "kl 0.01" "kl 0.03" "kl 0.1" "tau 0.95" "tau 0.8" "tau 0.6" "top1 -"; do
  set -- $cfg
  case $1 in
    kl) extra=(--budget kl --kl-base "$2" --kl-max 1);;
    tau) extra=(--budget tau --tau-base "$2" --tau-min 0.5);;
    top1) extra=(--budget top1);;
  esac
  name="$1_$2"
  cmd=("$B/thermoe" run --out "$OUT/$name" --no-analyze --backend cpu --telemetry sim --quiet
       --repeats "$R" --routing-strategy baseline,predictive_thermal
       --workloads standard,small_batch,large_batch "${extra[@]}")
  echo "== budget $1 $2: ${cmd[*]}"
  "${cmd[@]}" >"$OUT/$name.log" 2>&1
  grep -E "predictive_thermal" "$OUT/$name.log" | sed 's/^/   /'
done

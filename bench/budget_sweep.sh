#!/usr/bin/env bash
# The quality side of expert-set selection: each budget on the trained default model and
# real text (data/corpus/test.tokens), CPU backend, energy from the simulated H100 at
# Mixtral's expert shape (the LM's default --expert-shape), baseline and predictive_thermal
# (which applies the base budget while the GPU is cool, so the budget alone is measured).
# Then the comparisons (docs/strategies.md "Comparisons": top-k reduced by one, top-p,
# static pruning of the least-used experts, a capacity factor), each against baseline in a
# run of its own at one setting. bench/budget_sweep_table.py makes the table: energy per
# token change (simulated) and perplexity change (measured on the model) per run and
# workload. ONLY=budgets or ONLY=comparisons runs one half. STEPS=decode runs the decode load
# (--lm-steps decode: 16 windows a step, one position each) on the standard workload;
# WORKLOADS overrides the workload list.
# usage: bash bench/budget_sweep.sh [BUILD_DIR] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-rel}
R=${2:-3}
OUT=${OUT:-/tmp/budget_sweep}
mkdir -p "$OUT"
echo "date $(date -u +%FT%TZ), host $(hostname), $(nproc) cores, commit $(git rev-parse --short HEAD)"
ONLY=${ONLY:-all}
WL=${WORKLOADS:-standard,small_batch,large_batch}
STEP_FLAGS=()
if [ "${STEPS:-prefill}" = decode ]; then
  WL=${WORKLOADS:-standard}
  STEP_FLAGS=(--lm-steps decode --batch-size 16)
fi
BUDGETS=("kl 0.003" "kl 0.01" "kl 0.03" "kl 0.1" "tau 0.95" "tau 0.8" "tau 0.6" "top1 -")
[ "$ONLY" = comparisons ] && BUDGETS=()
for cfg in "${BUDGETS[@]}"; do
  set -- $cfg
  case $1 in
    kl) extra=(--budget kl --kl-base "$2" --kl-max 1);;
    tau) extra=(--budget tau --tau-base "$2" --tau-min 0.5);;
    top1) extra=(--budget top1);;
  esac
  name="$1_$2"
  cmd=("$B/thermoe" run --out "$OUT/$name" --no-analyze --backend cpu --telemetry sim --quiet
       --repeats "$R" --routing-strategy baseline,predictive_thermal
       --workloads "$WL" "${STEP_FLAGS[@]}" "${extra[@]}")
  echo "== budget $1 $2: ${cmd[*]}"
  "${cmd[@]}" >"$OUT/$name.log" 2>&1
  grep -E "predictive_thermal" "$OUT/$name.log" | sed 's/^/   /'
done
# the comparisons: strategy, then its flags (the run directory is named after both)
COMPARISONS=("topk_minus_one" "top_p --top-p 0.5" "top_p --top-p 0.8" "top_p --top-p 0.9"
             "expert_prune --prune-experts 1" "expert_prune --prune-experts 2"
             "expert_prune --prune-experts 4" "capacity --capacity-factor 1"
             "capacity --capacity-factor 1.5" "capacity --capacity-factor 1 --capacity-overflow next")
[ "$ONLY" = budgets ] && COMPARISONS=()
for cfg in "${COMPARISONS[@]}"; do
  set -- $cfg
  st=$1
  shift
  name="cmp_${st}$(printf '_%s' "$@" | sed 's/--//g; s/-/_/g')"
  [ $# -eq 0 ] && name="cmp_$st"
  cmd=("$B/thermoe" run --out "$OUT/$name" --no-analyze --backend cpu --telemetry sim --quiet
       --repeats "$R" --routing-strategy "baseline,$st"
       --workloads "$WL" "${STEP_FLAGS[@]}" "$@")
  echo "== comparison $st $*: ${cmd[*]}"
  "${cmd[@]}" >"$OUT/$name.log" 2>&1
  grep -E "^[a-z_]+ +$st " "$OUT/$name.log" | sed 's/^/   /'
done

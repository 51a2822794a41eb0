#!/usr/bin/env bash
# Expert-set selection on a real GPU (issue: routing that captures the energy): the random
# block at Mixtral's expert shape (d_model 4096, d_ff 14336, 8 experts, top-2, fp16), the MoE
# layer alone, a decode-sized batch (16 sequences x 1 token) in open loop, measured with NVML.
# Quality on this block is the output error against baseline routing (the perplexity cost of
# the same budgets is measured on the trained model: bench/results/energy_budget_*.md).
# One thermoe run per budget, each with --repeats (independent passes in a balanced order).
#
# usage (repo root, GPU machine, .devdeps carried): bash bench/energy_budget.sh [REPEATS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
REPEATS=${1:-3}
mkdir -p "$OUT"
source scripts/device-env.sh
t0=$(date +%s)
el() { echo "[$(( $(date +%s) - t0 )) s]"; }
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit,temperature.gpu,temperature.memory --format=csv; date -u; } \
  2>&1 | tee "$OUT/env.txt"
cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
  >"$OUT/build.log" 2>&1 && cmake --build build-gpu -j"$(nproc)" >>"$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "$(el) built"
for t in test_cuda_engine test_cuda_lm; do
  build-gpu/$t >"$OUT/$t.log" 2>&1; echo "$(el) $t rc=$?"
  grep -E "bandwidth|differ|FAILED|PASSED" "$OUT/$t.log" | head -8
done
common=(--model random --backend cuda --telemetry nvml --moe-only --d-model 4096 --n-heads 32
        --d-ff 14336 --num-experts 8 --top-k 2 --expert-type fp16 --batch-size 16 --seq-len 1
        --workloads standard,skewed --num-samples-per-workload 64 --epochs ${EPOCHS:-60}
        --arrival-rate ${RATE:-12000} --repeats "$REPEATS" --cooldown ${COOLDOWN:-5}
        --warmup-steady ${STEADY:-20} --trace-batches 0 --no-analyze)
run() { # name, extra flags...
  local name=$1; shift
  echo "== $name: thermoe run ${common[*]} $*" | tee "$OUT/$name.cmd"
  timeout ${RUN_LIMIT:-240} build-gpu/thermoe run --out "$OUT/$name" "${common[@]}" "$@" \
    >"$OUT/$name.log" 2>&1
  echo "$(el) $name rc=$?"
  grep -E "^(workload|standard|skewed) " "$OUT/$name.log" | head -20
  rm -rf "$OUT/$name/traces"
}
run kl_default --routing-strategy baseline,predictive_thermal,static_optimal,kernel_aware_ttha
run top1 --routing-strategy baseline,predictive_thermal --budget top1

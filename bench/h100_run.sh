#!/usr/bin/env bash
# GPU-machine runs of the harness (issue acceptance runs), one mode per call:
#   a: build, CUDA engine tests, NVML vs nvidia-smi check, then all strategies x standard and
#      large_batch at the mixtral shape with q4 experts (closed loop, real NVML)
#   b: open loop, 16000 tokens/s in batches of 16, fp16 mixtral experts, MoE layer only,
#      then one op under ncu (the ncu fixture)
# Everything under $OUT (at most 8 files come back: results are tarred).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
mode=${1:-a}
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw,power.limit --format=csv | tee "$OUT/env_$mode.txt"
if [ ! -x build-gpu/thermoe ] || [ "$mode" = a ]; then
  (cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
    && ninja -C build-gpu) > "$OUT/build_$mode.log" 2>&1 || { tail -30 "$OUT/build_$mode.log"; exit 1; }
fi
T=$PWD/build-gpu/thermoe
shape="--d-model 4096 --d-ff 14336 --num-experts 8 --top-k 2 --n-heads 32"
if [ "$mode" = a ]; then
  (cd build-gpu && timeout 240 ctest -R "test_cuda" --output-on-failure) 2>&1 | tail -4
  LOAD=20 REST=5 OUT=/tmp/tel bash bench/telemetry_h100.sh "$T" > /tmp/tel.log 2>&1
  cp /tmp/tel/result.txt "$OUT/telemetry_result.txt"; cat /tmp/tel/overhead.txt >> "$OUT/telemetry_result.txt"
  tail -12 "$OUT/telemetry_result.txt"
  cmd="$T run --backend cuda --telemetry nvml $shape --expert-type q4 --workloads standard,large_batch --routing-strategy all --num-samples-per-workload 200 --epochs 8 --repeats 2 --cooldown 3 --fidelity-every 10 --trace-batches 4 --out /tmp/h100_q4_closed"
else
  cmd="$T run --backend cuda --telemetry nvml $shape --expert-type fp16 --moe-only --batch-size 1 --seq-len 16 --workloads standard --routing-strategy all --arrival-rate 16000 --ttha-target-power 250 --num-samples-per-workload 500 --epochs 8 --repeats 2 --cooldown 5 --fidelity-every 0 --trace-batches 4 --out /tmp/h100_fp16_open"
fi
echo "command: $cmd" | tee "$OUT/command_$mode.txt"
start=$(date +%s)
$cmd > "$OUT/run_$mode.txt" 2> "$OUT/run_$mode.err"; rc=$?
echo "run rc=$rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/command_$mode.txt"
tail -5 "$OUT/run_$mode.err"
tar -C /tmp -czf "$OUT/results_$mode.tgz" $( [ "$mode" = a ] && echo h100_q4_closed || echo h100_fp16_open )
if [ "$mode" = b ]; then
  mkdir -p /tmp/ncu
  $T profile --with ncu --ops linear_fc1 --expert-types q4 --impls fused --tokens 16 $shape \
     --min-seconds 0.2 --out /tmp/ncu/ncu_cost.json --log-dir /tmp/ncu > /tmp/ncu/profile.txt 2>&1
  tail -3 /tmp/ncu/profile.txt
  tar -C /tmp -czf "$OUT/ncu.tgz" ncu
fi
cat "$OUT/run_$mode.txt" | tail -24

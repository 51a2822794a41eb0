#!/usr/bin/env bash
# One call on the GPU machine: the profiler's acceptance checks and the monitor's cost per
# NVML field set.
#  1. thermoe monitor --overhead (10 s at 20 Hz) with all fields and with subsets
#  2. the same profile twice (repeatability of latency and energy per op)
#  3. with --check-expert-sum: each whole expert forward against the sum of its ops
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/env.txt"
date -u | tee -a "$OUT/env.txt"
(cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
  && ninja -C build-gpu thermoe) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
T=build-gpu/thermoe
basic=gpu_temp_c,mem_temp_c,power_avg_w,sm_clock_mhz,gpu_util_pct,throttle_reasons
if [ "${FIELDS:-0}" = 1 ]; then
  for f in all $basic energy_mj power_instant_w,mem_clock_mhz,mem_util_pct,mem_used_bytes,mem_total_bytes pcie_rx_kbs,pcie_tx_kbs; do
    echo "fields $f: $($T monitor --telemetry nvml --fields $f --overhead --duration 10 2>/dev/null)"
  done | tee "$OUT/monitor_fields.txt"
fi
echo "defaults: $($T monitor --telemetry nvml --overhead --duration 30 2>/dev/null)" | tee "$OUT/monitor_default.txt"
sub="--expert-types fp16,q4 --tokens 1,16,256 --min-seconds ${MINSEC:-3} --rest-max 2 --moe-only --ops dequant_unpack,linear_fc1,relu,linear_fc2"
echo "command A: $T profile $sub --out rep_a.json --check-expert-sum expert_sum.md" | tee -a "$OUT/env.txt"
$T profile $sub --out "$OUT/rep_a.json" --check-expert-sum "$OUT/expert_sum.md" 2> "$OUT/rep_a.log" | tail -1
echo "command B: $T profile $sub --out rep_b.json" | tee -a "$OUT/env.txt"
$T profile $sub --out "$OUT/rep_b.json" 2> "$OUT/rep_b.log" | tail -1
python3 bench/compare_profiles.py "$OUT/rep_a.json" "$OUT/rep_b.json" | tee "$OUT/repeatability.md" | tail -3
cat "$OUT/expert_sum.md"

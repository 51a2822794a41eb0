#!/usr/bin/env bash
# One call on the GPU machine: build (Release, sm_90), CUDA tests, compute-sanitizer memcheck
# and racecheck on the kernel test, bench_moe and the PyTorch reference. Logs go to $OUT.
# Usage (repo root, GPU machine): bash bench/gpu_check.sh [--quick] [--no-san] [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
QUICK=""; SAN=1; BENCH=1; NCU=0
for a in "$@"; do
  case $a in --quick) QUICK=--quick ;; --no-san) SAN=0 ;; --no-bench) BENCH=0 ;; --ncu) NCU=1 ;; esac
done
source scripts/device-env.sh
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.limit,temperature.gpu --format=csv; date -u; } 2>&1 | tee "$OUT/env.txt"
t0=$(date +%s)
(cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
  && ninja -C build-gpu) > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
(cd build-gpu && ctest --output-on-failure -j4) > "$OUT/tests.log" 2>&1; trc=$?
tail -15 "$OUT/tests.log"
echo "ctest rc=$trc"
if [ $SAN = 1 ]; then
  { timeout 200 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 build-gpu/test_cuda_kernels; echo "memcheck kernels rc=$?";
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/test_cuda_engine; echo "memcheck engine rc=$?";
    timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 build-gpu/test_cuda_kernels; echo "racecheck kernels rc=$?"; } > "$OUT/sanitizer.log" 2>&1
  grep -E "rc=|ERROR SUMMARY|RACECHECK SUMMARY|Error|hazard" "$OUT/sanitizer.log" | head -20
fi
if [ $NCU = 1 ]; then
  ncu --csv --page raw -k regex:k_expert_linear -c 2 --metrics \
gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__issue_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size,launch__block_size \
    build-gpu/bench_moe --ncu > "$OUT/ncu.csv" 2>&1; echo "ncu rc=$?"
  python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if rows:
    h = rows[0]
    for r in rows[2:]:
        print("; ".join(f"{k.split('__')[-1][:40]}={v}" for k, v in zip(h, r) if "__" in k))
PY
fi
if [ $BENCH = 1 ]; then
  build-gpu/bench_moe $QUICK > "$OUT/bench_moe.md" 2> "$OUT/bench_moe.err"; echo "bench_moe rc=$?"
  PYTHONUNBUFFERED=1 python3 bench/ref/moe_ref.py $QUICK > "$OUT/torch_ref.md" 2> "$OUT/torch_ref.err"; echo "torch rc=$?"
  tail -3 "$OUT/bench_moe.err" "$OUT/torch_ref.err"
  echo "--- summary (median us) ---"
  grep -E "copy bandwidth" "$OUT/bench_moe.md" "$OUT/torch_ref.md"
  grep -E "^\| (expert|matrix|layer step|layer-step|MUL_MAT|dequant)" "$OUT/bench_moe.md" "$OUT/torch_ref.md" \
    | awk -F'|' '{printf "%s|%s|%s|%s|%s|%s|%s|%s\n",$2,$3,$4,$5,$6,$7,$9,$11}' | sed 's#/tmp/[^:]*/##' | cut -c1-150
fi

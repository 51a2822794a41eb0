#!/usr/bin/env bash
# One call on the GPU machine: build (Release, sm_90), CUDA tests, compute-sanitizer memcheck
# and racecheck on the kernel test, bench_moe and the PyTorch reference. Logs go to $OUT.
# Usage (repo root, GPU machine): bash bench/gpu_check.sh [--quick] [--no-san] [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
QUICK=""; SAN=1; BENCH=1
for a in "$@"; do
  case $a in --quick) QUICK=--quick ;; --no-san) SAN=0 ;; --no-bench) BENCH=0 ;; esac
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
if [ $BENCH = 1 ]; then
  build-gpu/bench_moe $QUICK > "$OUT/bench_moe.md" 2> "$OUT/bench_moe.err"; echo "bench_moe rc=$?"
  PYTHONUNBUFFERED=1 python3 bench/ref/moe_ref.py $QUICK > "$OUT/torch_ref.md" 2> "$OUT/torch_ref.err"; echo "torch rc=$?"
  tail -3 "$OUT/bench_moe.err" "$OUT/torch_ref.err"
  echo "--- summary (median us) ---"
  grep -E "copy bandwidth" "$OUT/bench_moe.md" "$OUT/torch_ref.md"
  grep -E "^\| (expert|matrix|layer step|layer-step|MUL_MAT|dequant)" "$OUT/bench_moe.md" "$OUT/torch_ref.md" \
    | awk -F'|' '{printf "%s|%s|%s|%s|%s|%s|%s|%s\n",$2,$3,$4,$5,$6,$7,$9,$11}' | sed 's#/tmp/[^:]*/##' | cut -c1-150
fi

#!/usr/bin/env bash
# One call on the GPU machine, ordered by what matters most if time runs out: build (Release,
# sm_90), every test on a real GPU (CUDA kernels and engine element by element against the CPU,
# the CUDA decoder LM against the CPU and transformers, the run with NVML telemetry),
# compute-sanitizer memcheck of the kernel test, then the decoder LM benchmark. The CUDA tests
# run first, then the rest of ctest. Logs to $OUT.
# usage (repo root, GPU machine, .devdeps carried): [QUICK=1] bash bench/gpu_session.sh [LM_LAYERS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LAYERS=${1:-2}
source scripts/device-env.sh
t0=$(date +%s)
el() { local s=$?; echo "[$(( $(date +%s) - t0 )) s]"; return $s; } # keeps $? for "$(el) rc=$?"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit,temperature.gpu --format=csv; date -u; } \
  2>&1 | tee "$OUT/env.txt"
cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
  >"$OUT/build.log" 2>&1 && cmake --build build-gpu -j"$(nproc)" ${QUICK:+--target test_cuda_kernels test_cuda_engine test_cuda_lm} >>"$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
echo "$(el) built"
for t in test_cuda_kernels test_cuda_engine test_cuda_lm; do
  build-gpu/$t >"$OUT/$t.log" 2>&1; echo "$(el) $t rc=$?"
  grep -E "x std|perplexity|closest|PASSED|FAILED|SKIPPED" "$OUT/$t.log" | head -12
done
[ -n "${QUICK:-}" ] && exit 0   # QUICK=1: the CUDA tests alone
(cd build-gpu && timeout 180 ctest --output-on-failure -j"$(nproc)" -E 'test_cuda') >"$OUT/tests.log" 2>&1
echo "$(el) ctest rc=$?"; grep -E "tests passed|\*\*\*|Failed|Skipped|Not Run" "$OUT/tests.log" | head -20
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/test_cuda_kernels \
  >"$OUT/memcheck.log" 2>&1; echo "$(el) memcheck kernels rc=$?"
grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1
timeout 200 bash bench/lm_bench.sh "$LAYERS" build-gpu >"$OUT/lm_bench.md" 2>&1; echo "$(el) lm_bench rc=$?"
tail -14 "$OUT/lm_bench.md"

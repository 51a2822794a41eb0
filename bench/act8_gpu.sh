#!/usr/bin/env bash
# The q4 / q2 int8-activation path on a GPU in one device call (repo root, GPU machine, .devdeps
# carried): the kernel round with ACT8=1 (the CUDA tests element by element, bench_moe --short
# without and with the path, compute-sanitizer at the default ring of 3), then, only if the
# kernel test passed, a serving pair with q4 experts: fp16 activations, then int8, DURATION s
# of the conversation trace each (bench/serve_gpu.sh, baseline routing).
# usage: [DURATION=60] [LIMIT=330] bash bench/act8_gpu.sh   (results under $OUT/kernels,
#        $OUT/serve_fp16, $OUT/serve_int8)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/kernels"
ACT8=1 SANITIZE_STAGES=3 LIMIT=${LIMIT:-330} OUT=$OUT/kernels bash bench/gpu_kernel_round.sh |
  tee "$OUT/kernel_round.txt"
grep -q "test_cuda_kernels rc=0" "$OUT/kernel_round.txt" ||
  { echo "the kernel test did not pass: no serving pair"; exit 1; }
for a in fp16 int8; do
  mkdir -p "$OUT/serve_$a"
  OUT=$OUT/serve_$a STRATEGIES=baseline@q4 REPEATS=1 DURATION=${DURATION:-60} DRAIN=30 REST=0 \
    EXTRA="--expert-activations $a" bash bench/serve_gpu.sh 2>&1 | tail -25
done

#!/usr/bin/env bash
# Diagnosis of the CUDA decoder on the bandwidth expert kernel (repo root, GPU machine,
# .devdeps carried): the fast-experts test twice (does its error move?), the production-shape
# test under compute-sanitizer's initcheck, racecheck and memcheck, and the trained model's
# perplexity on CUDA against the CPU on the same windows. Logs in $OUT.
# env: FAST_RUNS (2), TOOLS (initcheck racecheck memcheck), EVAL_BACKENDS (cuda cpu)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
source bench/gpu_build.sh
gpu_build "thermoe test_cuda_lm" || exit 1
for i in $(seq 1 "${FAST_RUNS:-2}"); do
  THERMOE_TEST_FILTER=test_fast_experts timeout 60 build-gpu/test_cuda_lm >"$OUT/fast$i.log" 2>&1
  echo "$(el) fast experts run $i rc=$?"; grep -E "x std|differ|OK \]|FAILED \]" "$OUT/fast$i.log" | head -6
done
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in ${TOOLS-initcheck racecheck memcheck}; do
  THERMOE_TEST_FILTER=test_shadow_experts timeout 70 "$san" --tool "$tool" build-gpu/test_cuda_lm \
    >"$OUT/san_$tool.log" 2>&1
  echo "$(el) $tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Uninitialized|Hazard|Invalid|at 0x|by thread" "$OUT/san_$tool.log" | head -8
done
for b in ${EVAL_BACKENDS-cuda cpu}; do
  timeout 60 build-gpu/thermoe eval --model models/default --tokens data/corpus/test.tokens \
    --backend "$b" --expert-type fp16 --seq-len 32 --max-windows 1024 --batch 16 --json \
    >"$OUT/eval_$b.json" 2>"$OUT/eval_$b.log"
  echo "$(el) eval $b rc=$? $(cat "$OUT/eval_$b.json")"
done

#!/usr/bin/env bash
# Our kernels and ggml's CUDA backend on the same card, back to back: bench_moe --short (the
# 4096 x 14336 matrix at 1/4/8/512 tokens, the fine-grained 768 x 2048 top-8-of-128
# projection at 1/8/64/512 tokens, fp16/bf16/q4/q2), then ggml's test-backend-ops perf mode on
# the MUL_MAT and MUL_MAT_ID cases of the same shapes, then one table (bench/ggml_table.py).
#
# GGML_TBO names a test-backend-ops binary that you built yourself from ggml's public source
# (github.com/ggml-org/ggml, CUDA backend for the card, e.g. sm_90); nothing of ggml is part
# of this repository. Without it, only bench_moe runs.
#
# usage (repo root, GPU machine):  GGML_TBO=/path/to/test-backend-ops bash bench/ggml_side_by_side.sh
# env: OUT (/tmp/out), BUILD (build-gpu: a Release CUDA build holding bench_moe)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
BUILD=${BUILD:-build-gpu}
mkdir -p "$OUT"
"$BUILD/bench_moe" --short >"$OUT/bench_moe_short.md" 2>"$OUT/bench_moe_short.err" ||
  { echo "bench_moe failed:"; tail -5 "$OUT/bench_moe_short.err"; exit 1; }
if [ -z "${GGML_TBO:-}" ] || [ ! -x "$GGML_TBO" ]; then
  echo "GGML_TBO unset or not executable: ggml's side not run"
  exit 0
fi
# ggml's perf loop repeats each op on one set of tensors (its weights may stay in L2);
# bench_moe --short reports both the rotated-copies row and a one-copy row for the matrix
"$GGML_TBO" perf -b CUDA0 -o MUL_MAT \
  -p 'type_a=(f16|bf16|q4_0|q4_K|q2_K),type_b=f32,m=4096,n=(1|4|8|512),k=14336,' \
  >"$OUT/ggml_perf.txt" 2>&1
"$GGML_TBO" perf -b CUDA0 -o MUL_MAT_ID \
  -p 'type_a=(f16|q4_0|q4_K),type_b=f32,n_mats=128,n_used=8,b=0,m=768,n=(1|8|64|512),k=2048$' \
  >>"$OUT/ggml_perf.txt" 2>&1
python3 bench/ggml_table.py "$OUT/bench_moe_short.md" "$OUT/ggml_perf.txt" >"$OUT/side_by_side.md" &&
  cat "$OUT/side_by_side.md"

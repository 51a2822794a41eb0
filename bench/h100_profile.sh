#!/usr/bin/env bash
# One call on the GPU machine: build thermoe (Release, sm_90) and profile every op of the
# mixtral-shape expert (fp16, q4, q2; fused and unfused) and of the block around it with the
# isolated-op method, writing the cost model to $OUT. Optionally run one op under ncu.
# Usage: bash bench/h100_profile.sh TOKENS_LIST OUT_NAME [--ncu]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
tokens=${1:-1,2,4,8,16,32,64,128,256,512,1024}
name=${2:-h100_cost_model}
source scripts/device-env.sh
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw,power.limit --format=csv; date -u; } | tee "$OUT/env.txt"
(cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
  && ninja -C build-gpu thermoe) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
T=build-gpu/thermoe
$T info | tee -a "$OUT/env.txt"
for a in "fp16 fused" "q4 fused" "q2 fused" "q4 unfused"; do
  set -- $a
  $T op --op linear_fc1 --tokens 1 --expert-type $1 --impl $2 --iters 200 | tee -a "$OUT/env.txt"
done
cmd="$T profile --tokens $tokens --min-seconds 1 --rest-max 2 --out $OUT/$name.json"
echo "command: $cmd" | tee -a "$OUT/env.txt"
$cmd 2> "$OUT/$name.log" | tail -3
tail -3 "$OUT/$name.log"
if [ "${3:-}" = "--ncu" ]; then
  mkdir -p "$OUT/ncu"
  $T profile --with ncu --ops linear_fc1 --expert-types q4 --impls fused --tokens 16 \
     --min-seconds 0.2 --out "$OUT/ncu/ncu_cost.json" --log-dir "$OUT/ncu" 2>&1 | tail -5
  ls "$OUT/ncu"
fi
$T cost show "$OUT/$name.json" | head -60

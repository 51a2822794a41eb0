#!/usr/bin/env bash
# Expert parallelism on a machine with 2+ GPUs (one host), one call:
#   1. build with CUDA, NCCL and MPI; compute-sanitizer memcheck of the expert-parallel step
#      at a small shape (2 ranks);
#   2. bench_ep: expert-parallel layer vs one GPU (output, top-k, step time, all-to-all) at
#      the mixtral shape, fp16 and q4, 16 and 1024 tokens per rank (fp16 also 64, 256, 4096),
#      each with the exchanges in one piece (--overlap-min -1) and overlapped (0);
#   3. thermoe run --expert-parallel, baseline and multi_gpu_aware in the same run, while a
#      background job (a matrix-product loop) loads GPU 1; then the same without the load.
# Usage: bash bench/h100_ep.sh [steps, default "1 2 3"]. Results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
steps=${1:-1 2 3}
source scripts/device-env.sh
export NCCL_NVLS_ENABLE=0 CUDA_DEVICE_ORDER=PCI_BUS_ID
ngpu=$(nvidia-smi -L | wc -l)
np=${NP:-$ngpu}
MPI="mpirun --allow-run-as-root --bind-to none -np $np -x NCCL_NVLS_ENABLE -x CUDA_DEVICE_ORDER -x LD_LIBRARY_PATH"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=index,name,driver_version,temperature.gpu,power.draw,power.limit --format=csv;
  nvidia-smi topo -m | head -4; mpirun --version | head -1; echo "ranks: $np"; } | tee "$OUT/env_ep.txt"
(cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
   -DTHERMOE_MPI=ON -DTHERMOE_NCCL=ON && ninja -C build-gpu thermoe bench_ep) > "$OUT/build_ep.log" 2>&1 \
  || { tail -30 "$OUT/build_ep.log"; exit 1; }
B=$PWD/build-gpu
small="--d-model 512 --d-ff 1024 --num-experts 8 --top-k 2"

if [[ " $steps " == *" 1 "* ]]; then
  echo "== memcheck (2 ranks, small shape)"
  for ov in -1 0; do   # exchanges in one piece, then overlapped round by round
    $MPI compute-sanitizer --tool memcheck --error-exitcode 9 $B/bench_ep $small --tokens 3,64 --iters 2 \
      --overlap-min $ov >> "$OUT/memcheck_ep.txt" 2>&1; echo "memcheck (overlap-min $ov) rc=$?"
  done
  grep -E "ERROR SUMMARY|\| (fp16|q4)" "$OUT/memcheck_ep.txt" | head -8
  grep -E "^=========" "$OUT/memcheck_ep.txt" | grep -vE "^========= +(at|Host Frame)" | sort | uniq -c | sort -rn | head -30
fi

if [[ " $steps " == *" 2 "* ]]; then
  for run in "fp16 -1" "fp16 0" "q4 -1" "q4 0"; do
    set -- $run; ty=$1; ov=$2
    toks=16,1024; [ $ty = fp16 ] && toks=16,64,256,1024,4096
    cmd="$MPI $B/bench_ep --type $ty --tokens $toks --iters 50 --overlap-min $ov"
    echo "== $cmd" | tee -a "$OUT/bench_ep.md"
    $cmd >> "$OUT/bench_ep.md" 2> "$OUT/bench_ep_$ty.err"; echo "rc=$?" >> "$OUT/bench_ep.md"
  done
  cat "$OUT/bench_ep.md"
fi

if [[ " $steps " == *" 3 "* ]]; then
  shape="--d-model 4096 --d-ff 14336 --num-experts 8 --top-k 2 --n-heads 32 --act swiglu --moe-only"
  run="$B/thermoe run --expert-parallel --backend cuda --telemetry nvml $shape --expert-type fp16 \
--workloads standard --routing-strategy baseline,multi_gpu_aware --num-samples-per-workload 64 \
--epochs 8 --repeats 2 --fidelity-every 0 --trace-batches 2 --no-analyze"
  for load in gpu1 none; do
    dir=/tmp/ep_run_$load
    rm -rf $dir
    bg=""
    if [ $load = gpu1 ]; then
      CUDA_VISIBLE_DEVICES=1 python3 -c "
import torch, time
a = torch.randn(8192, 8192, device='cuda', dtype=torch.half)
while True:
    for _ in range(20): b = a @ a
    torch.cuda.synchronize()
" > "$OUT/background.txt" 2>&1 &
      bg=$!
      sleep 8   # the load heats GPU 1 before the run starts
    fi
    echo "== load: $load; $MPI $run --out $dir" | tee -a "$OUT/ep_run_commands.txt"
    start=$(date +%s)
    $MPI $run --out $dir > "$OUT/ep_run_$load.txt" 2> "$OUT/ep_run_$load.err"; rc=$?
    echo "rc=$rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/ep_run_commands.txt"
    if [ -n "$bg" ]; then kill $bg 2>/dev/null; wait $bg 2>/dev/null; fi
    tail -3 "$OUT/ep_run_$load.err"
    python3 bench/ep_shift.py $dir/rank*/batches.csv | tee "$OUT/ep_shift_$load.txt"
    tar -C /tmp -czf "$OUT/ep_run_$load.tgz" ep_run_$load
    [ $load = gpu1 ] && sleep 20   # GPU 1 cools before the run without load
  done
fi

# everything in one file (the device tool returns few files)
(cd "$OUT" && tar -czf /tmp/ep_all.tgz . && find . -mindepth 1 -delete && mv /tmp/ep_all.tgz .)

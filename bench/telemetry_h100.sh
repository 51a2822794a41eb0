#!/usr/bin/env bash
# Compare `thermoe monitor --csv` with nvidia-smi on a GPU machine during a load:
#   idle REST s, load LOAD s, idle REST s; both tools sample every 100 ms.
# Then bench/compare_smi.py checks: power within 5%, the same temperature, the same SM clock
# (means over the steady part of the load), and the energy counter delta over the load
# against the trapezoid integral of the sampled power.
# usage: bench/telemetry_h100.sh [path/to/thermoe]   (env: LOAD_CMD, LOAD, REST, GPU, OUT)
# LOAD_CMD runs the load for $LOAD seconds; the default is a bf16 matmul loop in PyTorch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build/thermoe}
LOAD=${LOAD:-30}
REST=${REST:-10}
GPU=${GPU:-0}
OUT=${OUT:-telemetry_h100_$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: run this on a GPU machine" >&2; exit 1; }
[ -x "$bin" ] || { echo "thermoe not found at $bin (build it first)" >&2; exit 1; }
default_load="python3 -c 'import torch,time
a=torch.randn(8192,8192,device=\"cuda\",dtype=torch.bfloat16); b=torch.randn_like(a)
t=time.time()
while time.time()-t<$LOAD:
    for _ in range(20): c=a@b
    torch.cuda.synchronize()'"
LOAD_CMD=${LOAD_CMD:-$default_load}
total=$((LOAD + 2 * REST + 2))

"$bin" info >"$OUT/info.txt"
nvidia-smi -i "$GPU" --query-gpu=timestamp,power.draw,temperature.gpu,clocks.sm \
    --format=csv -lms 100 >"$OUT/smi.csv" &
smi=$!
date +%s.%N >"$OUT/monitor_start_epoch.txt"
"$bin" monitor --telemetry nvml --interval 100 --refresh 1000 \
    --duration "$total" --plain --csv "$OUT/thermoe.csv" >"$OUT/monitor_view.txt" \
    2>"$OUT/monitor_err.txt" &
mon=$!
sleep "$REST"
date +%s.%N >"$OUT/load_start_epoch.txt"
CUDA_VISIBLE_DEVICES=$GPU bash -c "$LOAD_CMD"
date +%s.%N >"$OUT/load_end_epoch.txt"
sleep "$REST"
wait "$mon"
kill "$smi"
wait "$smi" 2>/dev/null || true
"$bin" monitor --telemetry nvml --overhead --duration 30 >"$OUT/overhead.txt"
python3 "$here/compare_smi.py" "$OUT" "$GPU" | tee "$OUT/result.txt"
echo "commands and results in $OUT/"

#!/usr/bin/env bash
# The harness's A/A check and the precision comparison, in one device call (repo root, GPU
# machine, .devdeps carried): bench/energy_budget.sh's fp16_aa (baseline against
# predictive_thermal at a budget that changes no routing), the same with the windows' energy
# from the energy counter read every 100 ms (fp16_aa_counter), and the six processes of
# bench/results/h100_precision2 (fp16 and q4, seeds 1-3, balanced order), then
# bench/window_gap.py over every run folder (window_gap.md) and bench/precision_table.py over
# the printed summaries (precision.md). The run folders come back in out.tgz.
# usage: [RUNS=...] [REPEATS=2] bash bench/harness_check.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
W=/tmp/harness_runs # energy_budget.sh packs this folder into its out.tgz
mkdir -p "$OUT"
OUT=$W RUNS=${RUNS:-"fp16_aa fp16_aa_counter fp16_prec_1 q4_prec_1 q4_prec_2 fp16_prec_2 fp16_prec_3 q4_prec_3"} \
  BUILD_TARGETS=thermoe TESTS=0 TRACE_CHECK=0 SEQ_LEN=128 SAMPLES=6 COOLDOWN=2 STEADY=5 \
  RUN_LIMIT=90 bash bench/energy_budget.sh "${REPEATS:-2}" | tee "$OUT/call_output.txt"
(cd "$W" && tar xzf out.tgz) || exit 1
cp "$W/env.txt" "$OUT/" 2>/dev/null
for d in "$W"/*/; do
  [ -f "$d/batches.csv" ] && python3 bench/window_gap.py "$d"
done | sed "s|$W/||" | tee "$OUT/window_gap.md"
python3 bench/precision_table.py "$OUT/call_output.txt" | tee "$OUT/precision.md"
cp "$W/out.tgz" "$OUT/"

#!/usr/bin/env bash
# Lower-precision copies (thermoe run --expert-copy): hierarchical_adaptive on the trained
# default model and real text (data/corpus/test.tokens), CPU backend, energy from the
# simulated H100 at Mixtral's expert shape, on the decode load (--lm-steps decode
# --batch-size 16: every routing decision sees 16 tokens), with a power target 20% below
# baseline's simulated draw (measured first, run fp16_ref). Each run holds baseline (fp16, no
# copy runs) and hierarchical_adaptive:
#   copy_q4_<budget>   every expert has a q4 copy, budgets none, kl (default), tau, top1
#   copy_q4_hot4_<b>   only the 4 experts baseline used most (all layers) have one
#   copy_q2_none       q2 copies
#   nocopy_<budget>    no copies (the set budget and tiers alone)
#   static_q4/q2       every expert loaded as q4 / q2, baseline routing: the static choice
# bench/expert_copies_table.py compares every run with fp16_ref's baseline on the same tokens.
# GPU=1 runs the CUDA decoder with NVML telemetry and production-shape experts instead (the
# copies' runs at q4 with budgets none, tau and top1, nocopy_top1 and static_q4); EXTRA adds
# flags to every run (e.g. "--cooldown 0" to shorten the rests).
# usage: [GPU=1] [EXTRA="..."] bash bench/expert_copies.sh [BUILD_DIR] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-rel}
R=${2:-3}
OUT=${OUT:-/tmp/expert_copies}
mkdir -p "$OUT"
echo "date $(date -u +%FT%TZ), host $(hostname), $(nproc) cores, commit $(git rev-parse --short HEAD)"
WHERE=(--backend cpu --telemetry sim)
[ "${GPU:-0}" = 1 ] && WHERE=(--backend cuda --telemetry nvml)
# shellcheck disable=SC2206 # EXTRA is a list of flags
COMMON=(--no-analyze "${WHERE[@]}" --quiet --repeats "$R" --workloads standard
        --lm-steps decode --batch-size 16 ${EXTRA:-})
run() { # name, then flags
  local name=$1
  shift
  echo "== $name: $B/thermoe run --out $OUT/$name ${COMMON[*]} $*"
  "$B/thermoe" run --out "$OUT/$name" "${COMMON[@]}" "$@" >"$OUT/$name.log" 2>&1
}
run fp16_ref --routing-strategy baseline
read -r PT HOT <<<"$(python3 - "$OUT/fp16_ref/batches.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
p = sum(float(r["power_avg_w"]) for r in rows) / len(rows)
use = [0] * len(rows[0]["expert_usage_counts"].split(";"))
for r in rows:
    for e, n in enumerate(r["expert_usage_counts"].split(";")):
        use[e] += int(n)
order = sorted(range(len(use)), key=lambda e: -use[e])
print(f"{0.8 * p:.1f}", ",".join(str(e) for e in sorted(order[:4])))
PY
)"
echo "baseline draw: power target $PT W (80%); the 4 most used experts: $HOT"
# shellcheck disable=SC2054 # the strategy list is one comma-separated flag value
STRAT=(--routing-strategy baseline,hierarchical_adaptive --ttha-target-power "$PT")
if [ "${GPU:-0}" = 1 ]; then
  for b in none tau top1; do run "copy_q4_$b" "${STRAT[@]}" --expert-copy q4 --budget "$b"; done
  run nocopy_top1 "${STRAT[@]}" --budget top1
  run static_q4 --routing-strategy baseline --expert-type q4
  python3 bench/expert_copies_table.py "$OUT" "$PT"
  exit 0
fi
for b in none kl tau top1; do
  run "copy_q4_$b" "${STRAT[@]}" --expert-copy q4 --budget "$b"
  run "nocopy_$b" "${STRAT[@]}" --budget "$b"
done
# with copies of some experts only, the cost biases move tokens onto the copied experts: a
# budget bounds that (with none the biases run unbounded)
for b in none tau top1; do
  run "copy_q4_hot4_$b" "${STRAT[@]}" --expert-copy "q4:$HOT" --budget "$b"
done
run copy_q2_none "${STRAT[@]}" --expert-copy q2 --budget none
run static_q4 --routing-strategy baseline --expert-type q4
run static_q2 --routing-strategy baseline --expert-type q2
python3 bench/expert_copies_table.py "$OUT" "$PT"

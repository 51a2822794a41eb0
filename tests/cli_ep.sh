#!/usr/bin/env bash
# thermoe run --expert-parallel on a machine without GPUs: a single process is a group of one
# (the run is a plain run and says so in metadata.json). When this thermoe has MPI and mpirun
# is installed: ep_check (the expert-parallel CPU engine against one process, bit for bit) on
# 2 and 3 ranks; a 2-rank sweep writes one directory per rank and one summary; and a rank
# that fails after the engines started stops the group instead of leaving the other waiting.
set -u
BIN="$1"
SUPP="$(cd "$(dirname "$0")" && pwd)/lsan_mpi.supp"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$T" || fail "cd"

"$BIN" run --help | grep -q -- "--expert-parallel" || fail "--help lacks --expert-parallel"
"$BIN" version | grep -q "^expert parallelism: mpi " || fail "version lacks the expert-parallel line"
# Open MPI's own allocations outlive MPI_Finalize: suppressed by library, everything else
# (thermoe's) is still checked
export LSAN_OPTIONS="suppressions=$SUPP"
export ASAN_OPTIONS="${ASAN_OPTIONS:-protect_shadow_gap=0:detect_leaks=1}:fast_unwind_on_malloc=0"
RUN=(--backend cpu --telemetry sim --moe-only --num-samples-per-workload 2 --warmup-batches 0
     --trace-batches 0 --quiet --no-analyze --workloads standard --routing-strategy baseline)
"$BIN" run "${RUN[@]}" --expert-parallel --out one >one.log 2>&1 || fail "one process: $(tail -3 one.log)"
grep -q '"ranks": 1' one/metadata.json || fail "metadata lacks expert_parallel ranks 1"
[ "$(wc -l < one/batches.csv)" -eq 3 ] || fail "expected 2 rows"
"$BIN" sweep --emit bash --out sw --expert-parallel >/dev/null 2>sw.err && fail "sweep should refuse --expert-parallel"
grep -q "expert-parallel: use --ranks N" sw.err || fail "sweep message: $(cat sw.err)"
# sweeps of 2-rank tasks: the sbatch script asks for 2 tasks and starts them with srun; the
# bash loop with mpirun; every task passes --expert-parallel
"$BIN" sweep --emit slurm --out sws --ranks 2 --gpus 2 "${RUN[@]}" --routing-strategy baseline,multi_gpu_aware >/dev/null \
  || fail "emit slurm --ranks 2"
bash -n sws/sweep.sbatch || fail "bash -n sweep.sbatch"
grep -q '^#SBATCH --ntasks=2$' sws/sweep.sbatch || fail "ntasks"
grep -q '^launch=(srun)$' sws/sweep.sbatch || fail "srun launcher"
grep -q -- '--no-analyze --expert-parallel)$' sws/sweep.sbatch || fail "tasks lack --expert-parallel"
grep -q 'analyze .*/task_\*/rank0$' sws/sweep.sbatch || fail "merge line"

if ! "$BIN" version | grep -q "mpi built" || ! command -v mpirun >/dev/null; then
  echo "SKIP: 2-process part (thermoe without MPI or no mpirun)"
  exit 0
fi
# Open MPI refuses root without these
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
EPC="$(dirname "$BIN")/ep_check"
[ -x "$EPC" ] || fail "ep_check not built beside thermoe"
for n in 2 3; do
  timeout 300 mpirun -np $n "$EPC" >epc$n.log 2>&1 || fail "ep_check on $n ranks: $(tail -5 epc$n.log)"
  [ "$(grep -c '^ok:' epc$n.log)" -eq 4 ] || fail "ep_check on $n ranks: $(cat epc$n.log)"
done

# a sweep on 2 ranks of the cpu backend: one directory per rank, one summary
timeout 300 mpirun -np 2 "$BIN" run "${RUN[@]}" --expert-parallel --routing-strategy baseline,multi_gpu_aware \
  --num-samples-per-workload 8 --out two >two.log 2>&1 || fail "2 ranks: $(tail -8 two.log)"
# share of a rank's token copies routed to its own rank's experts, per strategy (device_tokens
# has one entry per rank)
share() { awk -F, -v st="$2" -v me="$3" 'NR == 1 {for (c = 1; c <= NF; c++) col[$c] = c; next}
  $col["strategy"] == st {n = split($col["device_tokens"], d, ";"); if (n != 2) bad = 1
                          for (i = 1; i <= n; i++) {all += d[i]; if (i - 1 == me) own += d[i]}}
  END {if (bad || all == 0) print -1; else printf "%.4f\n", own / all}' "$1"; }
for r in 0 1; do
  [ "$(wc -l < two/rank$r/batches.csv)" -eq 17 ] || fail "rank $r: expected 16 rows"
  grep -q '"ranks": 2' two/rank$r/metadata.json || fail "rank $r metadata lacks ranks 2"
  grep -q "\"rank\": $r" two/rank$r/metadata.json || fail "rank $r metadata lacks its rank"
  b=$(share two/rank$r/batches.csv baseline $r); m=$(share two/rank$r/batches.csv multi_gpu_aware $r)
  awk -v b="$b" -v m="$m" 'BEGIN {exit !(b >= 0 && m > b + 0.05)}' \
    || fail "rank $r: multi_gpu_aware should keep more copies on its own rank (link cost): baseline $b, multi_gpu_aware $m"
done
[ "$(grep -c '^files:' two.log)" -eq 1 ] || fail "expected one summary (rank 0): $(cat two.log)"

# the bash loop of a 2-rank sweep runs its tasks with mpirun; rank 0's directories merge
"$BIN" sweep --emit bash --out swb --ranks 2 "${RUN[@]}" --routing-strategy baseline,multi_gpu_aware >/dev/null \
  || fail "emit bash --ranks 2"
grep -q '^launch=(mpirun -np 2)$' swb/sweep.sh || fail "mpirun launcher"
timeout 300 bash swb/sweep.sh >swb.log 2>&1 || fail "2-rank sweep: $(tail -8 swb.log)"
for t in 0 1; do for r in 0 1; do
  [ -s swb/task_$t/rank$r/batches.csv ] || fail "task $t rank $r wrote nothing"
done; done
"$BIN" analyze --no-render --bootstrap 0 --out swb_rep swb/task_*/rank0 >swb_rep.log 2>&1 || fail "merge: $(tail -3 swb_rep.log)"
[ "$(tail -n +2 swb_rep/summary.csv | wc -l)" -eq 2 ] || fail "merge: expected 2 groups: $(cat swb_rep/summary.csv)"

# one rank fails after the engines started (its run directory cannot be made): the group stops
mkdir -p bad && : > bad/rank1
start=$(date +%s)
timeout 120 mpirun -np 2 "$BIN" run "${RUN[@]}" --expert-parallel --out bad >bad.log 2>&1
rc=$?
[ $rc -ne 124 ] || fail "2 ranks hung after one failed: $(tail -5 bad.log)"
[ $rc -ne 0 ] || fail "a failing rank should fail the run"
grep -q "bad/rank1" bad.log || fail "message: $(tail -8 bad.log)"
[ $(( $(date +%s) - start )) -lt 60 ] || fail "the failing rank did not stop the group promptly"
echo "PASS"

#!/usr/bin/env bash
# thermoe run --expert-parallel on a machine without GPUs: a single process is a group of one
# (the run is a plain run and says so in metadata.json); started by mpirun as 2 processes
# (when this thermoe has MPI and mpirun is installed) a backend that cannot spread experts
# stops every rank at once with the reason, instead of leaving the other rank waiting.
set -u
BIN="$1"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$T" || fail "cd"

"$BIN" run --help | grep -q -- "--expert-parallel" || fail "--help lacks --expert-parallel"
"$BIN" version | grep -q "^expert parallelism: mpi " || fail "version lacks the expert-parallel line"
# Open MPI's own allocations outlive MPI_Finalize: suppressed by library, everything else
# (thermoe's) is still checked
SUPP="$(cd "$(dirname "$0")" && pwd)/lsan_mpi.supp"
export LSAN_OPTIONS="suppressions=$SUPP"
export ASAN_OPTIONS="${ASAN_OPTIONS:-protect_shadow_gap=0:detect_leaks=1}:fast_unwind_on_malloc=0"
RUN=(--backend cpu --telemetry sim --moe-only --num-samples-per-workload 2 --warmup-batches 0
     --trace-batches 0 --quiet --no-analyze --workloads standard --routing-strategy baseline)
"$BIN" run "${RUN[@]}" --expert-parallel --out one >one.log 2>&1 || fail "one process: $(tail -3 one.log)"
grep -q '"ranks": 1' one/metadata.json || fail "metadata lacks expert_parallel ranks 1"
[ "$(wc -l < one/batches.csv)" -eq 3 ] || fail "expected 2 rows"
"$BIN" sweep --emit bash --out sw --expert-parallel >/dev/null 2>sw.err && fail "sweep should refuse --expert-parallel"
grep -q "expert-parallel: a task would need srun" sw.err || fail "sweep message: $(cat sw.err)"

if ! "$BIN" version | grep -q "mpi built" || ! command -v mpirun >/dev/null; then
  echo "SKIP: 2-process part (thermoe without MPI or no mpirun)"
  exit 0
fi
# Open MPI refuses root without these
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
start=$(date +%s)
timeout 120 mpirun -np 2 "$BIN" run "${RUN[@]}" --expert-parallel --out two >two.log 2>&1
rc=$?
[ $rc -ne 124 ] || fail "2 ranks hung: $(tail -5 two.log)"
[ $rc -ne 0 ] || fail "2 ranks on the cpu backend should fail"
grep -q "expert parallelism over 2 processes needs the cuda backend (got cpu)" two.log \
  || fail "message: $(tail -8 two.log)"
[ $(( $(date +%s) - start )) -lt 60 ] || fail "the failing rank did not stop the group promptly"
echo "PASS"

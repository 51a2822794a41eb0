#!/usr/bin/env bash
# thermoe sweep: flags and usage errors; the emitted sbatch array script passes bash -n and
# names every repeat x workload x strategy combination exactly once; its tasks, run one by
# one with the script itself (CPU backend, simulated telemetry), merge under thermoe analyze
# (row count = sum, every combination once, no inconsistency); a task run twice gives the
# same rows apart from run_id and the host-timed router_overhead_ms; the bash loop runs; with
# --seed-rule same the routing of the non-adaptive strategies equals one interleaved run's.
set -u
BIN="$1"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$T" || fail "cd"

"$BIN" sweep --help | grep -q -- "--seed-rule R.*default repeat" || fail "--help lacks --seed-rule and its default"
"$BIN" sweep --help | grep -q -- "--gpus N.*default 1" || fail "--help lacks --gpus default"
"$BIN" help | grep -q "sweep" || fail "sweep not in the command list"
"$BIN" sweep --out x >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing --emit should exit 2"
"$BIN" sweep --emit slurm >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing --out should exit 2"
"$BIN" sweep --emit pbs --out x >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --emit should exit 2"
"$BIN" sweep --emit slurm --out x --no-such-flag >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown flag should exit 2"
"$BIN" sweep --emit slurm --out x --config c.ini >/dev/null 2>&1; [ $? -eq 2 ] || fail "--config should exit 2"
"$BIN" sweep --emit slurm --out x --num-samples-per-workload 0 >/dev/null 2>"$T/e.log"
[ $? -ne 0 ] || fail "a bad run flag value should fail at emit time"
grep -q "num-samples-per-workload" "$T/e.log" || fail "bad run flag message: $(cat "$T/e.log")"
[ ! -e x/tasks.tsv ] || fail "a failed emit wrote a task table"

RUN=(--backend cpu --telemetry sim --moe-only --num-samples-per-workload 3 --warmup-batches 0
     --trace-batches 0 --fidelity-every 2 --quiet)
"$BIN" sweep --emit slurm --out sw --repeats 2 --seed 42 --workloads standard,skewed \
    --routing-strategy baseline,kernel_aware_ttha --time 00:10:00 --max-parallel 3 \
    --sbatch-opt "--mem=4G" "${RUN[@]}" >"$T/o.log" 2>&1 || fail "emit slurm: $(cat "$T/o.log")"
S=sw/sweep.sbatch
bash -n "$S" || fail "bash -n $S"
grep -q '^#SBATCH --array=0-7%3$' "$S" || fail "array line: $(grep array "$S")"
grep -q '^#SBATCH --time=00:10:00$' "$S" || fail "time line"
grep -q '^#SBATCH --mem=4G$' "$S" || fail "extra sbatch line"
grep -q '^#SBATCH --gres=gpu:1$' "$S" || fail "gres line"
grep -q "^#SBATCH --output=$T/sw/logs/task_%a.out$" "$S" || grep -q "logs/task_%a.out$" "$S" || fail "output line"
[ -d sw/logs ] || fail "no logs directory"
[ "$(tail -n +2 sw/tasks.tsv | wc -l)" -eq 8 ] || fail "tasks.tsv should have 8 tasks"
# every combination exactly once, in the table and in the script; seeds = 42 + repeat
for r in 0 1; do
  for w in standard skewed; do
    for s in baseline kernel_aware_ttha; do
      n=$(awk -F'\t' -v r=$r -v w=$w -v s=$s 'NR > 1 && $2 == r && $3 == w && $4 == s' sw/tasks.tsv | wc -l)
      [ "$n" -eq 1 ] || fail "tasks.tsv has ($r $w $s) $n times"
      n=$(grep -c -- "--first-repeat $r --workloads $w --routing-strategy $s --seed $((42 + r)))" "$S")
      [ "$n" -eq 1 ] || fail "script names ($r $w $s) $n times"
    done
  done
done
for i in 0 1 2 3 4 5 6 7; do
  [ "$(grep -c "^    $i) out=" "$S")" -eq 1 ] || fail "task $i arm"
done
"$BIN" sweep --emit slurm --out sw --repeats 2 "${RUN[@]}" >/dev/null 2>&1 && fail "overwrote a sweep without --force"
bash "$S" >/dev/null 2>&1 && fail "the script ran without SLURM_ARRAY_TASK_ID"
SLURM_ARRAY_TASK_ID=8 bash "$S" >/dev/null 2>&1; [ $? -eq 2 ] || fail "task 8 should not exist"

# run every task one by one, as Slurm would
for i in 0 1 2 3 4 5 6 7; do
  SLURM_ARRAY_TASK_ID=$i bash "$S" >"sw/logs/task_$i.out" 2>&1 || fail "task $i: $(tail -5 sw/logs/task_$i.out)"
  [ -s "sw/task_$i/batches.csv" ] || fail "task $i wrote no batches.csv"
done
total=0
for i in 0 1 2 3 4 5 6 7; do
  n=$(($(wc -l <"sw/task_$i/batches.csv") - 1))
  [ "$n" -eq 3 ] || fail "task $i has $n rows, expected 3"
  total=$((total + n))
  # the rows are the task's own combination, with its repeat number
  want=$(awk -F'\t' -v i=$i 'NR > 1 && $1 == i {print $2 "," $3 "," $4}' sw/tasks.tsv)
  got=$(awk -F, 'NR == 1 {for (c = 1; c <= NF; c++) col[$c] = c; next}
                 {print $col["repeat"] "," $col["workload"] "," $col["strategy"]}' "sw/task_$i/batches.csv" | sort -u)
  [ "$got" = "$want" ] || fail "task $i rows are ($got), expected ($want)"
done
# merge
out=$("$BIN" analyze --no-render --bootstrap 0 --out rep sw/task_* 2>"$T/aerr") || fail "analyze: $(cat "$T/aerr")"
echo "$out" | grep -q "^$total rows, 4 workload x strategy groups, 0 input problem(s)" || fail "merge: $out"
grep -qi "differ\|inconsistent" "$T/aerr" rep/report.html && fail "inconsistency reported: $(cat "$T/aerr")"
for w in standard skewed; do
  for s in baseline kernel_aware_ttha; do
    line=$(awk -F, -v w=$w -v s=$s '$1 == w && $2 == s {print $3 "," $5}' rep/summary.csv)
    [ "$line" = "2,6" ] || fail "summary ($w $s): n_units,n_batches = '$line', expected 2,6"
  done
done

# determinism per task: the same task again gives the same rows apart from run_id and the
# router's host wall time
mv sw/task_0 first0
SLURM_ARRAY_TASK_ID=0 bash "$S" >/dev/null 2>&1 || fail "task 0 rerun"
strip() { awk -F, 'NR == 1 {for (c = 1; c <= NF; c++) if ($c == "run_id" || $c == "router_overhead_ms") skip[c] = 1}
                   {s = ""; for (c = 1; c <= NF; c++) if (!skip[c]) s = s $c ","; print s}' "$1"; }
diff <(strip first0/batches.csv) <(strip sw/task_0/batches.csv) >"$T/d.log" || fail "task 0 is not deterministic: $(head -5 "$T/d.log")"
# a task whose directory already holds a complete run is resumed, not duplicated
SLURM_ARRAY_TASK_ID=0 bash "$S" >"$T/r.log" 2>&1 || fail "task 0 resume: $(tail -3 "$T/r.log")"
[ "$(($(wc -l <sw/task_0/batches.csv) - 1))" -eq 3 ] || fail "resume duplicated rows"

# the bash loop, seed rule same; against one interleaved run of the same sweep: the same
# groups and counts, and the routing of the strategies that do not read the hardware
# (baseline, static_optimal) is the same batch by batch (energy and temperature are not:
# the thermal history of one process differs from that of separate tasks)
"$BIN" sweep --emit bash --out lo --seed-rule same --seed 7 --repeats 2 --workloads skewed \
    --routing-strategy baseline,static_optimal "${RUN[@]}" >/dev/null 2>&1 || fail "emit bash"
bash -n lo/sweep.sh || fail "bash -n sweep.sh"
[ "$(awk -F'\t' 'NR > 1 && $5 != 7' lo/tasks.tsv | wc -l)" -eq 0 ] || fail "seed rule same: seeds differ"
bash lo/sweep.sh >"$T/lo.log" 2>&1 || fail "bash loop: $(tail -5 "$T/lo.log")"
"$BIN" run "${RUN[@]}" --seed 7 --repeats 2 --workloads skewed --routing-strategy baseline,static_optimal \
    --no-analyze --out one >"$T/one.log" 2>&1 || fail "single run: $(tail -5 "$T/one.log")"
key() { awk -F, 'FNR == 1 {for (c = 1; c <= NF; c++) col[$c] = c; next}
                 {print $col["repeat"], $col["workload"], $col["strategy"], $col["batch_idx"], $col["tokens"],
                        $col["expert_usage_counts"], $col["biases"], $col["topk_agreement_with_baseline"]}' "$@" | sort; }
diff <(key lo/task_*/batches.csv) <(key one/batches.csv) >"$T/d2.log" || fail "routing differs from one run: $(head -6 "$T/d2.log")"
"$BIN" analyze --no-render --bootstrap 0 --out rep_lo lo/task_* >/dev/null 2>&1 || fail "analyze tasks"
"$BIN" analyze --no-render --bootstrap 0 --out rep_one one >/dev/null 2>&1 || fail "analyze single run"
cols() { awk -F, '{print $1, $2, $3, $5}' "$1"; }
diff <(cols rep_lo/summary.csv) <(cols rep_one/summary.csv) >"$T/d3.log" || fail "groups differ: $(cat "$T/d3.log")"
echo "cli_sweep: ok"

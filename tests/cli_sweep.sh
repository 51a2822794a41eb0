#!/usr/bin/env bash
# thermoe sweep: flags and usage errors; the emitted sbatch array script passes bash -n and
# names every repeat x workload x strategy combination exactly once; its tasks, run one by
# one with the script itself (CPU backend, simulated telemetry), merge under thermoe analyze
# (row count = sum, every combination once, no inconsistency); a task run twice gives the
# same rows apart from run_id, the host-timed router_overhead_ms and the epoch
# wall_time_unix_s; the bash loop runs; with --seed-rule same the routing of the
# non-adaptive strategies equals one interleaved run's.
# Values that reach the scripts: a control character anywhere, or in an #SBATCH value what
# Slurm reads itself, is refused with exit 2 before anything is written; paths with $(...),
# backquotes, quotes and spaces are quoted, so running the scripts runs nothing of them.
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
# refused before anything is written: exit 2, the flag named
nl=$'\n'
refuse() { # refuse NEEDLE sweep-args...
    local needle=$1
    shift
    "$BIN" sweep "$@" >/dev/null 2>"$T/e.log"
    local rc=$?
    [ "$rc" -eq 2 ] || fail "sweep $* exited $rc, want 2: $(cat "$T/e.log")"
    grep -qF -- "$needle" "$T/e.log" || fail "sweep $*: '$needle' not in: $(cat "$T/e.log")"
}
refuse "--out holds a newline" --emit bash --out "nl${nl}touch PWNED"
refuse "--out holds a newline" --emit slurm --out "nl${nl}#SBATCH --wrap=touch PWNED"
refuse "--out holds a tab" --emit bash "--out=nl$(printf '\t')x"
refuse "--job-name holds a newline" --emit slurm --out rq --job-name "j${nl}touch PWNED"
refuse "--partition holds a carriage return" --emit slurm --out rq --partition "$(printf 'gpu\rx')"
refuse "--sbatch-opt holds a newline" --emit slurm --out rq --sbatch-opt "--mem=1G${nl}touch PWNED"
refuse "--launcher holds a newline" --emit bash --out rq --launcher "srun${nl}touch PWNED"
refuse "--thermoe holds a newline" --emit bash --out rq --thermoe "/bin/x${nl}touch PWNED"
refuse "--backend holds a newline" --emit bash --out rq --backend "cpu${nl}touch PWNED"
refuse "--kernel-cost-model-json holds an escape" --emit bash --out rq "--kernel-cost-model-json=a$(printf '\033')b"
refuse "cannot go into an #SBATCH line" --emit slurm --out "with space"
refuse "cannot go into an #SBATCH line" --emit slurm --out "pct%a"
refuse "cannot go into an #SBATCH line" --emit slurm --out rq --job-name 'a"b'
refuse "cannot go into an #SBATCH line" --emit slurm --out rq --time "1:00 x"
for d in nl* rq "with space" pct*; do [ -e "$d" ] && fail "a refused sweep created $d"; done
[ -e PWNED ] && fail "PWNED created"

# quoted: the program in a directory named with $(...), backquotes and quotes; --out the
# same; the scripts pass bash -n, the THERMOE line gives the path back unchanged, and the
# tasks run from another directory create nothing
W="$T/w \$(touch PWNED) it's \"q\" \`touch PWNED\`"
mkdir "$W" && cp "$BIN" "$W/thermoe" || fail "copy the program to $W"
O="$T/o \$(touch PWNED) \"x\" it's"
"$W/thermoe" sweep --emit bash --out "$O" --repeats 1 --workloads standard --routing-strategy baseline \
    "${RUN[@]}" >"$T/o.log" 2>&1 || fail "emit bash into $O: $(cat "$T/o.log")"
bash -n "$O/sweep.sh" || fail "bash -n on the quoted sweep.sh"
line=$(grep '^THERMOE=' "$O/sweep.sh")
got=$(cd "$T" && env -u THERMOE bash -c "$line"'; printf %s "$THERMOE"')
[ "$got" = "$W/thermoe" ] || fail "THERMOE line gives '$got', want '$W/thermoe' ($line)"
(cd / && bash "$O/sweep.sh") >"$T/q.log" 2>&1 || fail "quoted sweep.sh: $(tail -5 "$T/q.log")"
[ -s "$O/task_0/batches.csv" ] || fail "the quoted task wrote no batches.csv"
S2="$T/s\$(touch\${IFS}PWNED)\`touch\${IFS}PWNED\`"
"$W/thermoe" sweep --emit slurm --out "$S2" --repeats 1 --workloads standard --routing-strategy baseline \
    "${RUN[@]}" >"$T/o.log" 2>&1 || fail "emit slurm into $S2: $(cat "$T/o.log")"
bash -n "$S2/sweep.sbatch" || fail "bash -n on the quoted sweep.sbatch"
grep -qxF "#SBATCH --output=$S2/logs/task_%a.out" "$S2/sweep.sbatch" || fail "output line: $(grep output "$S2/sweep.sbatch")"
(cd / && SLURM_ARRAY_TASK_ID=0 bash "$S2/sweep.sbatch") >"$T/q.log" 2>&1 || fail "quoted sweep.sbatch: $(tail -5 "$T/q.log")"
[ -s "$S2/task_0/batches.csv" ] || fail "the quoted slurm task wrote no batches.csv"
# run flags and --launcher arrive as the same words
K="$T/k \$(touch PWNED) it's \"q\""
"$BIN" sweep --emit bash --out rf --launcher "env -u NOTHING" --kernel-cost-model-json "$K" \
    --repeats 1 "${RUN[@]}" >/dev/null 2>"$T/e.log" || fail "emit with quoted run flags: $(cat "$T/e.log")"
got=$(bash -c "$(grep -E '^(launch|common)=' rf/sweep.sh)"'; printf "%s|" "${launch[@]}" "${common[@]:0:2}"')
[ "$got" = "env|-u|NOTHING|--kernel-cost-model-json|$K|" ] || fail "launch/common words: '$got'"
[ -z "$(find "$T" / -maxdepth 1 -name PWNED 2>/dev/null; find "$T" -name PWNED)" ] || fail "a script ran a command from a path"

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
strip() { awk -F, 'NR == 1 {for (c = 1; c <= NF; c++) if ($c == "run_id" || $c == "router_overhead_ms" || $c == "wall_time_unix_s") skip[c] = 1}
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

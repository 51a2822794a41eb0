#!/usr/bin/env bash
# thermoe analyze from the command line: help, usage errors, a run with one good and one
# empty run directory (the good one is still analysed), and --no-render.
set -u
BIN="$1"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# gnuplot is optional: without it the render check below cannot run, and the test ends with
# ctest's skip status (77) once everything else has passed
have_gnuplot=1
command -v gnuplot >/dev/null || { have_gnuplot=0; echo "SKIP: gnuplot not installed: the render check does not run"; }

"$BIN" analyze --help | grep -q -- "--bootstrap N" || fail "--help lacks --bootstrap"
"$BIN" analyze --help | grep -q "default png" || fail "--help lacks the --format default"
"$BIN" analyze --help | grep -q "A run given twice" || fail "--help does not say how duplicates count"
"$BIN" analyze >/dev/null 2>&1; [ $? -eq 2 ] || fail "no directory should exit 2"
"$BIN" analyze --format gif "$T" >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --format should exit 2"
"$BIN" analyze --bootstrap 3 "$T" >/dev/null 2>&1; [ $? -eq 2 ] || fail "--bootstrap 3 should exit 2"

# a tiny run directory written by hand with the runlog.h header
mkdir -p "$T/run" "$T/empty"
HDR="time,run_id,repeat,workload,strategy,expert_type,impl,batch_idx,tokens,latency_ms,throughput_tokens_s,energy_j,energy_j_per_token,energy_method,power_avg_w,power_peak_w,gpu_temp_start_c,gpu_temp_end_c,gpu_temp_peak_c,mem_temp_c,sm_clock_mhz,throttle_reasons,gpu_util_pct,expert_usage_counts,expert_time_ms,predicted_energy_j,router_overhead_ms,ttha_power_loss,ttha_temp_loss,ttha_latency_penalty,ttha_throughput_bonus,ttha_fidelity,ttha_total_loss,ttha_lr,biases,topk_agreement_with_baseline,output_rel_error_vs_baseline,telemetry_source"
{
  echo "$HDR"
  for rep in 0 1 2; do
    for s in baseline kernel_aware_ttha; do
      for b in 0 1 2 3; do
        agr=$([ $s = baseline ] && echo "1.0,0.0" || echo "0.9,0.01")
        e=$(awk -v r=$rep -v b=$b -v s=$s 'BEGIN{m = (s=="baseline") ? 1.0 : 0.8; printf "%.6f", 0.02*m*(1+0.01*((r*7+b*3)%5-2))}')
        echo "$b.0,run$rep,$rep,standard,$s,q4,fused,$b,256,10.$b,25600,$(awk -v e=$e 'BEGIN{printf "%.5f", e*256}'),$e,counter,500,600,40,41,42,50,1410,0,97,10;20;30;40,1;2;3;4,5.0,0.2,nan,nan,nan,nan,nan,nan,nan,,$agr,sim"
      done
    done
  done
} > "$T/run/batches.csv"
echo '{"device": {"name": "simulated H100", "driver": "none"}, "telemetry_source": "sim", "git_commit": "abc"}' > "$T/run/metadata.json"
: > "$T/empty/batches.csv"

out=$("$BIN" analyze --no-render --out "$T/report" --seed 3 --bootstrap 200 "$T/run" "$T/empty" 2>"$T/err")
rc=$?
[ $rc -eq 0 ] || { cat "$T/err"; fail "analyze exited $rc"; }
grep -q "empty file" "$T/err" || fail "no message about the empty file: $(cat "$T/err")"
echo "$out" | grep -q "24 rows" || fail "expected 24 rows: $out"
[ -s "$T/report/report.html" ] || fail "no report.html"
[ -s "$T/report/summary.tex" ] || fail "no summary.tex"
[ -s "$T/report/figures/energy_per_token.gp" ] || fail "no figure script"
[ ! -e "$T/report/figures/energy_per_token.png" ] || fail "--no-render rendered"
grep -q "SIMULATED TELEMETRY" "$T/report/report.html" || fail "no simulated banner"
grep -q "kernel_aware_ttha used 20" "$T/report/report.html" || fail "summary sentence missing"
grep -q "paired by repeat, 3 pair(s)" "$T/report/report.html" || fail "3 repeats should pair"
grep -q "<b>power_peak (simulated telemetry).</b> Peak power per workload" "$T/report/report.html" \
  || fail "power_peak has another figure's caption"
# the headline forest plot (data with header rows), the table of contents and folded tables
head -1 "$T/report/figures/forest.dat" | grep -q '^# ' || fail "forest.dat has no header row"
grep -q "^0 -3\.99" "$T/report/figures/forest.dat" || fail "forest.dat lacks the kernel_aware_ttha row (-4 mJ/token)"
grep -q "<nav id=toc>" "$T/report/report.html" || fail "report.html has no table of contents"
grep -q "<details>" "$T/report/report.html" || fail "report.html does not fold the tables"
grep -q "no % of it" "$T/report/figures/overhead.gp" || fail "overhead on the simulated GPU is a % of simulated time"
# bench/frontier_table.py reads an analysed run: the strategy's row, its energy change and CI
if command -v python3 >/dev/null; then
  mkdir -p "$T/fr" && cp -r "$T/run" "$T/fr/run" && cp -r "$T/report" "$T/fr/run/report"
  SRC=$(cd "$(dirname "$0")/.." && pwd)
  fr=$(python3 "$SRC/bench/frontier_table.py" --plot "$T/fr/plot" "$T/fr/run") || fail "frontier_table.py: $fr"
  echo "$fr" | grep -q "| run | - | kernel_aware_ttha | -20.0% \[" || fail "frontier table: $fr"
  # no nll column in this run: no perplexity, so no point on the frontier plot
  grep -q "^# run strategy" "$T/fr/plot/frontier.dat" || fail "no frontier.dat"
  ! grep -q "kernel_aware_ttha" "$T/fr/plot/frontier.dat" || fail "a point without a perplexity"
fi

# outputs: parents of --out are made; an --out that is a file, or a FIFO where a table goes,
# is refused with a message (writing used to block on the FIFO)
"$BIN" analyze --no-render --bootstrap 0 --out "$T/deep/er/rep" "$T/run" >/dev/null 2>&1 || fail "--out with parents"
[ -s "$T/deep/er/rep/report.html" ] || fail "--out with parents: no report"
: > "$T/afile"
"$BIN" analyze --no-render --bootstrap 0 --out "$T/afile" "$T/run" >/dev/null 2>"$T/err8"; rc=$?
[ $rc -eq 1 ] || fail "--out a file: exit $rc"
grep -q "afile: exists and is not a directory" "$T/err8" || fail "--out a file: $(cat "$T/err8")"
mkdir -p "$T/fiforep" && mkfifo "$T/fiforep/summary.md"
timeout 60 "$BIN" analyze --no-render --bootstrap 0 --out "$T/fiforep" "$T/run" >/dev/null 2>"$T/err9"; rc=$?
[ $rc -eq 1 ] || fail "FIFO in the report directory: exit $rc"
grep -q "summary.md: is a FIFO; refusing to replace it" "$T/err9" || fail "FIFO: $(cat "$T/err9")"

# a directory of run directories: both children are read (b is another run: its own run ids)
mkdir -p "$T/results"
cp -r "$T/run" "$T/results/a"
cp -r "$T/run" "$T/results/b"
sed -i 's/,run\([0-9]\),/,other\1,/' "$T/results/b/batches.csv"
out=$("$BIN" analyze --no-render --out "$T/r3" --bootstrap 0 "$T/results" 2>"$T/err3") || fail "parent dir: $(cat "$T/err3")"
echo "$out" | grep -q "48 rows" || fail "expected 48 rows from two children: $out"
grep -q "n_units" "$T/r3/summary.csv" || fail "no summary.csv"
[ "$(awk -F, '$2 == "baseline" {print $3}' "$T/r3/summary.csv")" = 6 ] || fail "two children: expected 6 units"

# one run given several ways counts once: the same directory three times (one with a trailing
# slash, one through a symlink), the parent and its child, and a copy of the run (same run ids)
ln -s "$T/run" "$T/link"
cp -r "$T/run" "$T/copy"
out=$("$BIN" analyze --no-render --out "$T/r7" --bootstrap 0 "$T/run" "$T/run" "$T/run/" "$T/link" \
      "$T/results" "$T/results/a" "$T/copy" 2>"$T/err7") || fail "duplicates: $(cat "$T/err7")"
echo "$out" | grep -q "^48 rows" || fail "duplicates: expected 48 rows (run and results/b): $out"
[ "$(grep -c "(given twice); read once" "$T/err7")" -eq 4 ] || fail "duplicates: $(cat "$T/err7")"
grep -q "results/a/batches.csv: 24 row(s) repeat batches already read from $T/run (same run_id 'run0'" "$T/err7" \
  || fail "copy of a run: $(cat "$T/err7")"
grep -q "copy/batches.csv: 24 row(s) repeat batches" "$T/err7" || fail "copy of a run: $(cat "$T/err7")"
[ "$(awk -F, '$2 == "baseline" {print $3}' "$T/r7/summary.csv")" = 6 ] || fail "duplicates: expected 6 units"

# a relative --out renders too (gnuplot runs inside the figures directory), when gnuplot is here
if command -v gnuplot >/dev/null; then
  out=$(cd "$T" && "$BIN" analyze --out rel --bootstrap 0 run 2>"$T/err4") || fail "relative out: $(cat "$T/err4")"
  echo "$out" | grep -q " 0 failed" || fail "relative --out: renders failed: $out"
  [ -s "$T/rel/figures/energy_per_token.png" ] || fail "relative --out: no png"
fi

# a batch_idx beyond an int (it used to crash the figures) skips its row with a message
# naming file, line and column; the other rows are analysed and every figure rendered
mkdir -p "$T/big"
cp "$T/run/metadata.json" "$T/big/"
awk -F, 'BEGIN {OFS = ","} NR == 3 {$8 = "3000000000"} {print}' "$T/run/batches.csv" > "$T/big/batches.csv"
out=$("$BIN" analyze --out "$T/big_rep" --bootstrap 0 "$T/big" 2>"$T/err6"); rc=$?
[ $rc -eq 0 ] || fail "batch_idx 3000000000: exit $rc: $(cat "$T/err6")"
grep -q "big/batches.csv:3: column 'batch_idx': '3000000000' is outside \[0, 2147483647\]; row skipped" "$T/err6" \
  || fail "batch_idx 3000000000: message: $(cat "$T/err6")"
echo "$out" | grep -q "^23 rows" || fail "batch_idx 3000000000: $out"
echo "$out" | grep -q " 0 failed" || fail "batch_idx 3000000000: renders failed: $out"
[ -s "$T/big_rep/report.html" ] || fail "batch_idx 3000000000: no report.html"

# names from a log merged from elsewhere reach gnuplot scripts quoted, and gnuplot runs with
# no shell: a strategy and a workload that close the quote and call system() run nothing, a
# backslash is kept, and every figure renders (newlines, '/' and more: test_analyze_report)
command -v gnuplot >/dev/null || fail "gnuplot is not on PATH (a build dependency; this test renders)"
mkdir -p "$T/evil"
cp "$T/run/metadata.json" "$T/evil/"
sed -e "s/,kernel_aware_ttha,/,\"s'; system('id > PWNED'); t='\",/" \
    -e "s/,standard,/,\"w\\\\y'; system('id > PWNED'); '\",/" "$T/run/batches.csv" > "$T/evil/batches.csv"
grep -q "system('id > PWNED')" "$T/evil/batches.csv" || fail "test log not written"
out=$(cd "$T" && "$BIN" analyze --out evil_rep --bootstrap 0 evil 2>"$T/err5"); rc=$?
[ $rc -eq 0 ] || fail "hostile names: exit $rc: $(cat "$T/err5")"
[ -z "$(find "$T" -name PWNED)" ] || fail "a name from the log ran a command: $(find "$T" -name PWNED)"
echo "$out" | grep -q "24 rows, 2 workload x strategy groups" || fail "hostile names: $out"
echo "$out" | grep -q " 0 failed" || fail "hostile names: renders failed: $out"
[ -s "$T/evil_rep/report.html" ] || fail "hostile names: no report.html"
[ -s "$T/evil_rep/figures/energy_per_token.png" ] || fail "hostile names: no energy_per_token.png"
[ "$(ls "$T/evil_rep/figures/" | grep -c '^power_w_.*\.png$')" -eq 1 ] || fail "hostile names: no power figure"

# a log with 70 workloads: every group in the tables, figures for the first 64 workloads only
# (8 each without TTHA, plus the whole-run timeline, the 4 bar charts and predicted vs measured
# energy; no forest plot: nothing but the baseline ran), and the report says so
mkdir -p "$T/w70"
awk -F, 'BEGIN {OFS = ","} NR == 1 {print; next} $5 == "baseline" && $8 < 2 {
           for (w = 0; w < 70; w++) {$4 = sprintf("w%02d", w); print}}' "$T/run/batches.csv" > "$T/w70/batches.csv"
out=$("$BIN" analyze --no-render --bootstrap 0 --out "$T/w70_rep" "$T/w70" 2>"$T/err10") || fail "70 workloads: $(cat "$T/err10")"
echo "$out" | grep -q "^420 rows, 70 workload x strategy groups" || fail "70 workloads: $out"
echo "$out" | grep -q "^518 figures" || fail "70 workloads: expected 64 x 8 + 6 figures: $out"
[ "$(tail -n +2 "$T/w70_rep/summary.csv" | wc -l)" -eq 70 ] || fail "70 workloads: summary.csv lacks groups"
grep -q "the figures show the first 64 of each" "$T/w70_rep/report.html" || fail "70 workloads: no note in the report"

# nothing readable: clear error, exit 1
"$BIN" analyze --no-render --out "$T/r2" "$T/empty" 2>"$T/err2"; rc=$?
[ $rc -eq 1 ] || fail "only bad input should exit 1, got $rc"
grep -q "no usable rows" "$T/err2" || fail "unclear error: $(cat "$T/err2")"

# runs at two expert types: named strategy@type, said on the command line, compared with the
# baseline at the wider type
for t in fp16 q4; do
  "$BIN" run --model random --backend cpu --telemetry sim --moe-only --expert-type $t \
    --workloads standard --routing-strategy baseline,static_optimal --num-samples-per-workload 3 \
    --repeats 3 --cooldown 0 --warmup-steady 0 --trace-batches 0 --quiet --no-analyze \
    --out "$T/types_$t" >"$T/types_$t.log" 2>&1 || fail "run at $t: $(tail -3 "$T/types_$t.log")"
done
"$BIN" analyze --no-render --out "$T/rt" "$T/types_fp16" "$T/types_q4" >"$T/rt.log" 2>&1 ||
  fail "analyze at two types: $(cat "$T/rt.log")"
grep -qF "groups are named strategy@type, compared with baseline@fp16" "$T/rt.log" ||
  fail "analyze at two types does not say so: $(cat "$T/rt.log")"
grep -qF "| standard | baseline@q4 |" "$T/rt/comparisons.md" ||
  fail "no baseline@q4 comparison: $(head -8 "$T/rt/comparisons.md")"
[ $have_gnuplot = 1 ] || exit 77
echo "cli_analyze: ok"

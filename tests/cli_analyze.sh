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
        e=$(awk -v r=$rep -v b=$b -v s=$s 'BEGIN{m = (s=="baseline") ? 1.0 : 0.8; printf "%.6f", 0.02*m*(1+0.01*((r*7+b*3)%5-2))}')
        echo "$b.0,run$rep,$rep,standard,$s,q4,fused,$b,256,10.$b,25600,$(awk -v e=$e 'BEGIN{printf "%.5f", e*256}'),$e,counter,500,600,40,41,42,50,1410,0,97,10;20;30;40,1;2;3;4,5.0,0.2,nan,nan,nan,nan,nan,nan,nan,,1.0,0.0,sim"
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

# a directory of run directories: both children are read
mkdir -p "$T/results"
cp -r "$T/run" "$T/results/a"
cp -r "$T/run" "$T/results/b"
out=$("$BIN" analyze --no-render --out "$T/r3" --bootstrap 0 "$T/results" 2>"$T/err3") || fail "parent dir: $(cat "$T/err3")"
echo "$out" | grep -q "48 rows" || fail "expected 48 rows from two children: $out"

# a relative --out renders too (gnuplot runs inside the figures directory), when gnuplot is here
if command -v gnuplot >/dev/null; then
  out=$(cd "$T" && "$BIN" analyze --out rel --bootstrap 0 run 2>"$T/err4") || fail "relative out: $(cat "$T/err4")"
  echo "$out" | grep -q " 0 failed" || fail "relative --out: renders failed: $out"
  [ -s "$T/rel/figures/energy_per_token.png" ] || fail "relative --out: no png"
fi

# nothing readable: clear error, exit 1
"$BIN" analyze --no-render --out "$T/r2" "$T/empty" 2>"$T/err2"; rc=$?
[ $rc -eq 1 ] || fail "only bad input should exit 1, got $rc"
grep -q "no usable rows" "$T/err2" || fail "unclear error: $(cat "$T/err2")"
[ $have_gnuplot = 1 ] || exit 77
echo "cli_analyze: ok"

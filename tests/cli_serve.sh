#!/usr/bin/env bash
# thermoe serve: bad flag values exit 2, a malformed trace exits 1 naming file, line and
# field; a small replay writes requests.csv (one row per request), steps.csv, timeline.csv
# and a summary labelled sim; --expert-type q4 is recorded and costs less than fp16;
# --duration; no CUDA / no NVML errors; bench/serve_gpu.sh parses and its table reads a
# replay; with a fake libnvidia-ml, a wall-clock replay labelled nvml and one stopped by
# SIGINT (exit 130, files saying interrupted); SIGTERM sent twice, as timeout(1) does, stops
# a replay once.
set -u
BIN=${1:?usage: cli_serve.sh path/to/thermoe}
SRC=$(cd "$(dirname "$0")/.." && pwd)
D=$SRC/tests/data/serve
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BIN" serve --help | grep -q -- "--prefill-chunk" || fail "help"
"$BIN" serve --time-scale 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--time-scale 0 should exit 2"
"$BIN" serve --format csv >/dev/null 2>&1; [ $? -eq 2 ] || fail "--format csv should exit 2"
"$BIN" serve --routing-strategy nope >/dev/null 2>&1; [ $? -eq 2 ] || fail "strategy should exit 2"
"$BIN" serve --max-seqs 8 --max-batch-tokens 4 >/dev/null 2>&1; [ $? -eq 2 ] || fail "batch < seqs"
"$BIN" serve --slo-ttft-ms 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--slo-ttft-ms 0 should exit 2"
"$BIN" serve --slo-tpot-ms x >/dev/null 2>&1; [ $? -eq 2 ] || fail "--slo-tpot-ms x should exit 2"
"$BIN" serve --temp-target hot >/dev/null 2>&1; [ $? -eq 2 ] || fail "--temp-target should exit 2"
"$BIN" serve --backend gpu >/dev/null 2>&1; [ $? -eq 2 ] || fail "--backend gpu should exit 2"
"$BIN" serve --telemetry real >/dev/null 2>&1; [ $? -eq 2 ] || fail "--telemetry real should exit 2"
"$BIN" serve --device -1 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--device -1 should exit 2"
"$BIN" serve --duration soon >/dev/null 2>&1; [ $? -eq 2 ] || fail "--duration soon should exit 2"
"$BIN" serve --expert-type q3 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--expert-type q3 should exit 2"
"$BIN" serve --group-size 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--group-size 0 should exit 2"
# the routing knobs of thermoe run
"$BIN" serve --budget wide >/dev/null 2>&1; [ $? -eq 2 ] || fail "--budget wide should exit 2"
"$BIN" serve --tau-base 0.5 --tau-min 0.8 >/dev/null 2>&1; [ $? -eq 2 ] || fail "tau-min > tau-base should exit 2"
"$BIN" serve --help | grep -q -- "--budget B" || fail "help: --budget"
"$BIN" serve --help | grep -q -- "--backend B  *cpu (default)" || fail "help: the default backend"
"$BIN" serve --help | grep -q -- "--telemetry S  *sim (default" || fail "help: the default telemetry"
# the CUDA backend in a build without it, NVML without a GPU: clear errors, exit 1
if "$BIN" info 2>&1 | grep -q "cuda .*was not built"; then
    msg=$("$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" --backend cuda \
        --out "$OUT/c" 2>&1); rc=$?
    [ $rc -eq 1 ] || fail "--backend cuda without CUDA: exit $rc"
    echo "$msg" | grep -q -- "--backend cuda: backend cuda was not built" || fail "message: $msg"
fi
msg=$(THERMOE_NVML_LIB=/nonexistent/libnvidia-ml.so.1 "$BIN" serve --model "$SRC/models/default" \
    --trace "$D/small.csv" --telemetry nvml --out "$OUT/n" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "--telemetry nvml without NVML: exit $rc"
echo "$msg" | grep -q "starting telemetry: nvml: library not found" || fail "message: $msg"
msg=$("$BIN" serve --trace "$D/negative_length.csv" --out "$OUT/x" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "malformed trace: exit $rc"
echo "$msg" | grep -q "negative_length.csv:3: ContextTokens" || fail "message: $msg"
"$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" --time-scale 100 \
    --routing-strategy baseline --prefill-chunk 16 --slo-ttft-ms 5 --slo-tpot-ms 2 \
    --out "$OUT/r" >"$OUT/log" 2>&1 ||
    { cat "$OUT/log"; fail "replay"; }
grep -q "SIMULATED" "$OUT/log" || fail "summary not labelled SIMULATED"
[ "$(wc -l <"$OUT/r/requests.csv")" -eq 7 ] || fail "requests.csv rows"
[ -s "$OUT/r/steps.csv" ] || fail "steps.csv"
# the distinct experts a step's layers ran: between top-k (2) and min(experts (8), tokens x 2)
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "active_experts") a = i; if ($i == "tokens") t = i } next }
         { m = 2 * $t < 8 ? 2 * $t : 8; if (!a || $a < 2 || $a > m) bad++ }
         END { exit bad > 0 || NR < 2 }' "$OUT/r/steps.csv" || fail "steps.csv: active_experts"
grep -q '"source": "sim"' "$OUT/r/summary.json" || fail "summary.json source"
grep -q '"slo_ttft_s": 0.005' "$OUT/r/summary.json" || fail "summary.json: the SLO"
grep -q '"steady_state"' "$OUT/r/summary.json" || fail "summary.json: steady_state"
grep -q "no steady state" "$OUT/log" || fail "a six-request replay has no steady state: $(cat "$OUT/log")"
grep -q "WHOLE RUN" "$OUT/log" || fail "the whole-run figures are not flagged"
grep -q "goodput" "$OUT/log" || fail "no goodput"
[ "$(wc -l <"$OUT/r/timeline.csv")" -eq 201 ] || fail "timeline.csv rows"
grep -q '"simulated": true' "$OUT/r/summary.json" || fail "summary.json: simulated"
grep -q '"interrupted": false' "$OUT/r/summary.json" || fail "summary.json: interrupted"
grep -q '"backend": "cpu"' "$OUT/r/summary.json" || fail "summary.json: backend"
grep -q '"driver": "simulated"' "$OUT/r/summary.json" || fail "summary.json: driver"
# bench/serve_gpu.sh parses; its table script reads the replay (as a one-replay bench folder)
bash -n "$SRC/bench/serve_gpu.sh" || fail "bench/serve_gpu.sh does not parse"
if command -v python3 >/dev/null 2>&1; then
    mkdir -p "$OUT/tab" && cp -r "$OUT/r" "$OUT/tab/r1_baseline"
    python3 "$SRC/bench/serve_table.py" "$OUT/tab" >"$OUT/tab.md" || fail "serve_table.py"
    grep -q "^| baseline | 1 | .* | 0 of 1 | sim |$" "$OUT/tab.md" || fail "table: $(cat "$OUT/tab.md")"
    grep -q "SIMULATED, not measured" "$OUT/tab.md" || fail "table: not labelled simulated"
fi
# a set-selecting strategy with its budget from the flags, recorded in summary.json
"$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" --time-scale 100 \
    --routing-strategy static_optimal --budget top1 --ttha-target-temp 70 \
    --out "$OUT/b" >"$OUT/blog" 2>&1 || { cat "$OUT/blog"; fail "replay with --budget top1"; }
grep -q '"budget": "top1"' "$OUT/b/summary.json" || fail "summary.json: the budget"
grep -q '"temp_target_c": 70' "$OUT/b/summary.json" || fail "summary.json: the target follows T*"
# --expert-type q4: the LM's experts and the billed ones are q4, recorded; the same replay
# costs less energy per generated token than at fp16 (the q4 expert streams a quarter of the
# bytes); analyze names the runs strategy@type
"$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" --time-scale 100 \
    --routing-strategy baseline --prefill-chunk 16 --expert-type q4 --out "$OUT/q4" >"$OUT/q4log" 2>&1 || { cat "$OUT/q4log"; fail "q4 replay"; }
grep -q "strategy baseline, q4 experts" "$OUT/q4log" || fail "q4: $(cat "$OUT/q4log")"
grep -q '"expert_type": "q4"' "$OUT/q4/summary.json" || fail "summary.json: expert_type"
grep -q '"group_size": 128' "$OUT/q4/summary.json" || fail "summary.json: group_size"
grep -q '"expert_type": "fp16"' "$OUT/r/summary.json" || fail "summary.json: the default type"
jpt() { sed -n 's/.*"j_per_generated_token": \([0-9.e+-]*\).*/\1/p' "$1/summary.json" | tail -1; }
awk -v a="$(jpt "$OUT/q4")" -v b="$(jpt "$OUT/r")" 'BEGIN { exit !(a > 0 && a < b) }' ||
    fail "q4 J per generated token $(jpt "$OUT/q4") not below fp16's $(jpt "$OUT/r")"
"$BIN" analyze "$OUT/r" "$OUT/q4" --out "$OUT/repq" --no-render >"$OUT/alog" 2>&1 ||
    { cat "$OUT/alog"; fail "analyze fp16 and q4 replays"; }
grep -q "baseline@q4" "$OUT/repq/figures/serve_ttft_cdf.gp" || fail "analyze: no baseline@q4 legend"
grep -q "baseline@fp16" "$OUT/repq/figures/serve_ttft_cdf.gp" || fail "analyze: no baseline@fp16 legend"
# --expert-copy q4: under a power target far below the draw hierarchical_adaptive runs the
# q4 copies; recorded; the replay costs less energy per generated token than the same
# strategy without copies (same trace, same seed, no budget: the routing is the same)
for cp in "" "--expert-copy q4"; do
    d=$OUT/cp${cp:+_q4}
    # shellcheck disable=SC2086 # cp is empty or two words
    "$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" --time-scale 100 \
        --routing-strategy hierarchical_adaptive --budget none --ttha-target-power 20 $cp \
        --out "$d" >"$d.log" 2>&1 || { cat "$d.log"; fail "replay ${cp:-without copies}"; }
done
tr -d ' \n' <"$OUT/cp_q4/summary.json" | grep -q '"expert_copies":{"type":"q4","experts":\[0,1,2,3,4,5,6,7\]}' ||
    fail "summary.json: expert_copies"
grep -q '"expert_copies"' "$OUT/cp/summary.json" && fail "summary.json: expert_copies without copies"
awk -v a="$(jpt "$OUT/cp_q4")" -v b="$(jpt "$OUT/cp")" 'BEGIN { exit !(a > 0 && a < b) }' ||
    fail "copies: J per generated token $(jpt "$OUT/cp_q4") not below $(jpt "$OUT/cp")"
# SIGTERM twice, 50 ms apart, as timeout(1) sends it (to the process, then to its group):
# one stop, not a kill. A queue of thousands of requests makes the stop take long enough for
# the second signal to arrive while it runs: the replay still writes its files, exit 130.
"$BIN" serve --model "$SRC/models/default" --synthetic azure_conv --requests 20000 \
    --time-scale 2000 --max-context 384 --max-generated 128 --max-seqs 64 \
    --max-batch-tokens 512 --quiet --out "$OUT/dbl" >"$OUT/dlog" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do
    [ -f "$OUT/dbl/steps.csv" ] && [ "$(wc -l <"$OUT/dbl/steps.csv")" -ge 50 ] && break
    sleep 0.05
done
kill -TERM $pid 2>/dev/null || fail "double SIGTERM: the replay ended before it was signalled"
sleep 0.05
kill -TERM $pid 2>/dev/null
wait $pid; rc=$?
[ $rc -eq 130 ] || fail "double SIGTERM: exit $rc, want 130: $(tail -3 "$OUT/dlog")"
grep -q "interrupted after" "$OUT/dlog" || fail "double SIGTERM: $(cat "$OUT/dlog")"
grep -q '"interrupted": true' "$OUT/dbl/summary.json" || fail "double SIGTERM: summary.json"
# --duration: only the requests arriving before it (0, 1, 2 and 500 ms of the six)
"$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" --duration 0.6 \
    --out "$OUT/d" >"$OUT/dlog" 2>&1 || { cat "$OUT/dlog"; fail "--duration replay"; }
[ "$(wc -l <"$OUT/d/requests.csv")" -eq 5 ] || fail "--duration 0.6: requests.csv rows"
grep -Eq '"trace_duration_s": 0\.(6|59999)' "$OUT/d/summary.json" || fail "summary.json: the duration"
# thermoe analyze on the serve run: its figures (data with headers, scripts) and the table
"$BIN" analyze "$OUT/r" --out "$OUT/rep" --no-render >"$OUT/alog" 2>&1 ||
    { cat "$OUT/alog"; fail "analyze on a serve run"; }
grep -q "1 serve run(s)" "$OUT/alog" || fail "analyze: $(cat "$OUT/alog")"
for f in serve_ttft_cdf serve_tpot_cdf serve_energy_prompt serve_timeline; do
    [ -s "$OUT/rep/figures/$f.gp" ] || fail "analyze: no $f.gp"
    grep -q '^# ' "$OUT/rep/figures/$f.dat" || fail "analyze: $f.dat has no header"
done
[ "$(grep -vc '^#\|^$' "$OUT/rep/figures/serve_ttft_cdf.dat")" -eq 6 ] || fail "TTFT CDF points"
grep -q "Serving replays" "$OUT/rep/report.html" || fail "report: no serving section"
grep -q "no steady state" "$OUT/rep/report.html" || fail "report: the whole run not flagged"
# a serve run with a bad cell is skipped with a message naming file:line and column
cp -r "$OUT/r" "$OUT/bad"
sed -i '3s/^\([0-9]*\),[^,]*,/\1,soon,/' "$OUT/bad/requests.csv"
"$BIN" analyze "$OUT/r" "$OUT/bad" --out "$OUT/rep3" --no-render >"$OUT/alog" 2>&1 ||
    fail "analyze with a bad serve run: $(cat "$OUT/alog")"
grep -q "requests.csv:3: arrival_s: expected a number" "$OUT/alog" || fail "bad cell: $(cat "$OUT/alog")"
grep -q "1 serve run(s)" "$OUT/alog" || fail "the bad run was not skipped: $(cat "$OUT/alog")"
if command -v gnuplot >/dev/null 2>&1; then
    "$BIN" analyze "$OUT/r" --out "$OUT/rep2" >"$OUT/alog" 2>&1 || fail "analyze render"
    grep -q "4 figures: 4 rendered, 0 failed" "$OUT/alog" || fail "render: $(cat "$OUT/alog")"
    [ -s "$OUT/rep2/figures/serve_timeline.png" ] || fail "no serve_timeline.png"
fi
# real telemetry (a fake libnvidia-ml): the wall clock, every figure labelled nvml
FAKE="$(dirname "$BIN")/libfake_nvml.so"
if [ -f "$FAKE" ]; then
    THERMOE_NVML_LIB="$FAKE" "$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" \
        --time-scale 10 --telemetry nvml --out "$OUT/nv" >"$OUT/nlog" 2>&1 ||
        { cat "$OUT/nlog"; fail "nvml replay"; }
    grep -q "MEASURED by NVML" "$OUT/nlog" || fail "nvml summary: $(cat "$OUT/nlog")"
    grep -q '"source": "nvml"' "$OUT/nv/summary.json" || fail "nvml: summary.json source"
    grep -q '"simulated": false' "$OUT/nv/summary.json" || fail "nvml: simulated"
    grep -q '"clock": "wall-clock' "$OUT/nv/summary.json" || fail "nvml: the clock"
    grep -q '"device_name": "Fake H100' "$OUT/nv/summary.json" || fail "nvml: the device"
    grep -q "the CPU backend computed it" "$OUT/nv/summary.json" || fail "nvml: what was measured"
    [ "$(grep -c ',nvml$' "$OUT/nv/requests.csv")" -eq 6 ] || fail "nvml: requests.csv source"
    [ "$(grep -c ',sim$' "$OUT/nv/steps.csv")" -eq 0 ] || fail "nvml: steps.csv source"
    # the last request arrives 100 ms after the first: wall-clock time passed
    awk -F, 'NR > 1 && $5 + 0 > m { m = $5 + 0 } END { exit !(m >= 0.1) }' \
        "$OUT/nv/requests.csv" || fail "nvml: finished before the last arrival"
    # SIGINT during a wall-clock replay (arrivals at 0, 10, 20 ms, 5 s and 10 s): stop
    # after the step (or the wait) in progress, files over what ran, exit 130
    THERMOE_NVML_LIB="$FAKE" "$BIN" serve --model "$SRC/models/default" --trace "$D/small.csv" \
        --time-scale 0.1 --telemetry nvml --out "$OUT/int" >"$OUT/ilog" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do # the first steps, then into the wait for the request at 5 s
        [ -f "$OUT/int/steps.csv" ] && [ "$(wc -l <"$OUT/int/steps.csv")" -ge 2 ] && break
        sleep 0.1
    done
    sleep 0.5
    kill -INT $pid
    wait $pid; rc=$?
    [ $rc -eq 130 ] || { cat "$OUT/ilog"; fail "interrupted replay: exit $rc"; }
    grep -q "interrupted after" "$OUT/ilog" || fail "interrupted: $(cat "$OUT/ilog")"
    grep -q '"interrupted": true' "$OUT/int/summary.json" || fail "summary.json: interrupted"
    rows=$(($(wc -l <"$OUT/int/requests.csv") - 1))
    [ $rows -ge 1 ] && [ $rows -le 3 ] || fail "interrupted: $rows requests (expected 1-3 arrived)"
    steps=$(($(wc -l <"$OUT/int/steps.csv") - 1))
    grep -q "\"steps\": $steps," "$OUT/int/summary.json" || fail "summary.json: steps != steps.csv"
    [ "$(wc -l <"$OUT/int/timeline.csv")" -eq 201 ] || fail "interrupted: timeline.csv rows"
fi
echo ok

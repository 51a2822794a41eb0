#!/usr/bin/env bash
# thermoe serve: bad flag values exit 2, a malformed trace exits 1 naming file, line and
# field, and a small replay writes requests.csv (one row per request), steps.csv, timeline.csv and a
# summary labelled sim.
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
grep -q '"source": "sim"' "$OUT/r/summary.json" || fail "summary.json source"
grep -q '"slo_ttft_s": 0.005' "$OUT/r/summary.json" || fail "summary.json: the SLO"
grep -q '"steady_state"' "$OUT/r/summary.json" || fail "summary.json: steady_state"
grep -q "no steady state" "$OUT/log" || fail "a six-request replay has no steady state: $(cat "$OUT/log")"
grep -q "WHOLE RUN" "$OUT/log" || fail "the whole-run figures are not flagged"
grep -q "goodput" "$OUT/log" || fail "no goodput"
[ "$(wc -l <"$OUT/r/timeline.csv")" -eq 201 ] || fail "timeline.csv rows"
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
echo ok

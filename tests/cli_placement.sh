#!/usr/bin/env bash
# thermoe run --placement on two simulated GPUs: every expert on device 0 makes each step as
# long as all the experts' work in a row (never shorter than round robin, longer whenever
# device 1 had work), with the same routing; the placement is in metadata.json; a bad map is
# rejected with file:line; --placement file without a file is an error.
set -u
BIN="$1"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$T" || fail "cd"

"$BIN" run --help | grep -q -- "--placement-file F" || fail "--help lacks --placement-file"
RUN=(--backend cpu --telemetry sim --moe-only --num-samples-per-workload 4 --warmup-batches 0
     --trace-batches 0 --quiet --no-analyze --num-experts 8 --top-k 2 --sim-devices 2
     --workloads standard --routing-strategy baseline)
{ echo "# every expert on device 0"; for e in 7 6 5 4 3 2 1 0; do echo "$e 0"; done; } > all0.txt
"$BIN" run "${RUN[@]}" --out rr >"$T/rr.log" 2>&1 || fail "round robin run: $(tail -3 "$T/rr.log")"
"$BIN" run "${RUN[@]}" --placement-file all0.txt --out one >"$T/one.log" 2>&1 || fail "file run: $(tail -3 "$T/one.log")"
col() { awk -F, -v name="$2" 'NR == 1 {for (c = 1; c <= NF; c++) if ($c == name) k = c; next} {print $k}' "$1"; }
[ "$(col rr/batches.csv expert_usage_counts)" = "$(col one/batches.csv expert_usage_counts)" ] || fail "routing changed with the placement"
longer=$(paste -d' ' <(col rr/batches.csv latency_ms) <(col one/batches.csv latency_ms) |
         awk '$2 < $1 {bad = 1} $2 > $1 * 1.2 {n++} END {print bad ? -1 : n + 0}')
[ "$longer" -eq 4 ] || fail "all experts on one of two devices should make every step longer ($longer of 4)"
grep -q '"source": "all0.txt"' one/metadata.json || fail "metadata lacks the placement source"
grep -q '"source": "round_robin"' rr/metadata.json || fail "metadata lacks round_robin"

printf '0 0\n1 2\n' > bad.txt
"$BIN" run "${RUN[@]}" --placement-file bad.txt --out bad >/dev/null 2>"$T/e.log"; [ $? -eq 1 ] || fail "bad map should exit 1"
grep -q "bad.txt:2: device 2 out of range" "$T/e.log" || fail "message: $(cat "$T/e.log")"
"$BIN" run "${RUN[@]}" --placement file --out bad2 >/dev/null 2>"$T/e2.log"; [ $? -eq 2 ] || fail "--placement file alone should exit 2 (usage error)"
"$BIN" run "${RUN[@]}" --placement ring --out bad3 >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown --placement should exit 2 (usage error)"
echo "cli_placement: ok"

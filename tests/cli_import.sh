# thermoe import / thermoe cost: exit codes and the key output lines, on the project's own
# ncu files (tests/data/fixtures/ncu) and on nsys exports written here by the test
# generator (tests/nsys_synth_cli.c; its expected values are counted from the rows it wrote).
# The real nsys exports of ../shared/fixtures are checked by cli_import_nsys.sh.
# usage: [NSYS_SYNTH=path/to/nsys_synth] bash tests/cli_import.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_import.sh path/to/thermoe}
SYNTH=${NSYS_SYNTH:-$(dirname "$BIN")/nsys_synth}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$HERE/data/fixtures
[ -x "$SYNTH" ] || { echo "FAIL: no nsys_synth at $SYNTH (built with the tests; NSYS_SYNTH=PATH)"; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0

# expect CODE DESCRIPTION -- command...; output in $TMP/out
expect() {
    local want=$1 what=$2
    shift 3
    "$@" >"$TMP/out" 2>&1
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: $what: exit $got, want $want"; sed 's/^/    /' "$TMP/out" | head -20
        fails=$((fails + 1))
    fi
}
has() { # has DESCRIPTION TEXT: the last output contains TEXT
    if ! grep -qF -- "$2" "$TMP/out"; then
        echo "FAIL: $1: output lacks '$2'"; sed 's/^/    /' "$TMP/out" | head -20
        fails=$((fails + 1))
    fi
}

# nsys: a random 3-GPU export with the columns of a real one; the generator prints what it
# wrote ("total N NS", "device D N NS", "launched N", "nvtx_ranges N")
"$SYNTH" random "$TMP/synth.sqlite" 20261126 3 400 nvtx >"$TMP/want" || { echo "FAIL: nsys_synth random"; exit 1; }
want() { awk -v k="$1" '$1 == k' "$TMP/want"; }
expect 0 "nsys synthetic" -- "$BIN" import nsys "$TMP/synth.sqlite"
read -r _ n ns < <(want total)
has "nsys synthetic" "kernels: $n, $ns ns"
has "nsys synthetic names" "names from demangledName"
while read -r _ d k dns; do
    has "nsys synthetic dev$d" "device $d: $k kernels, $dns ns, energy - J"
done < <(want device)
read -r _ launched < <(want launched)
read -r _ ranges < <(want nvtx_ranges)
has "nsys synthetic nvtx" "nvtx ranges: $ranges, named after ops: 0; launches matched: $launched"
has "nsys synthetic missing" "tables not present: GPU_METRICS, TARGET_INFO_GPU_METRICS"
expect 1 "nsys --out without op ranges" -- "$BIN" import nsys "$TMP/synth.sqlite" --out "$TMP/x.json" --tokens 4
has "nsys no ranges" "no NVTX range is named after an op"
"$SYNTH" random "$TMP/nonvtx.sqlite" 5 1 2 no-nvtx >/dev/null || { echo "FAIL: nsys_synth random"; exit 1; }
expect 0 "nsys without NVTX" -- "$BIN" import nsys "$TMP/nonvtx.sqlite"
has "nsys without NVTX" "tables not present: NVTX_EVENTS"
expect 2 "nsys --out without --tokens" -- "$BIN" import nsys "$TMP/synth.sqlite" --out "$TMP/x.json"
head -c 5000 /dev/urandom >"$TMP/junk.sqlite"
expect 1 "nsys corrupt" -- "$BIN" import nsys "$TMP/junk.sqlite"
has "nsys corrupt" "not an SQLite database"
expect 1 "nsys absent" -- "$BIN" import nsys "$TMP/absent.sqlite"
expect 2 "import bad source" -- "$BIN" import perf "$TMP/x"
expect 2 "import bad flag" -- "$BIN" import nsys --bogus "$TMP/x"
expect 0 "import help" -- "$BIN" import --help
has "import help" "--expert-type"

# a row ending before it starts and one whose duration overflows: skipped and counted
"$SYNTH" sql "$TMP/neg.sqlite" <<'EOF' || { echo "FAIL: nsys_synth sql"; exit 1; }
INSERT INTO StringIds VALUES (1, 'k');
INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, demangledName, shortName,
    registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, staticSharedMemory, dynamicSharedMemory,
    localMemoryPerThread, localMemoryTotal, gridId) VALUES
    (100, 600, 0, 1, 7, 1, 1, 64, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 1),
    (900, 800, 0, 1, 7, 1, 1, 64, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 2),
    (-9223372036854775808, 9223372036854775807, 0, 1, 7, 1, 1, 64, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 3);
EOF
expect 0 "nsys bad durations" -- "$BIN" import nsys "$TMP/neg.sqlite"
has "nsys bad durations" "kernels: 1, 500 ns"
has "nsys bad durations skipped" "kernel rows skipped: 2"
# nsys with op ranges -> cost entries
"$SYNTH" sql "$TMP/ops.sqlite" <<'EOF' || { echo "FAIL: nsys_synth sql"; exit 1; }
INSERT INTO StringIds VALUES (1, 'nvjet_sm90_hsh_32x64_64x16_1x2_h_bz_splitK_NNN'), (2, 'relu_kernel');
INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid) VALUES
    (0, 1000, 59, 'thermoe:linear_fc1', 1), (2000, 3000, 59, 'thermoe:linear_fc1', 1), (4000, 5000, 59, 'relu', 1);
INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, demangledName, shortName,
    registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, staticSharedMemory, dynamicSharedMemory,
    localMemoryPerThread, localMemoryTotal, gridId) VALUES
    (100, 600, 0, 1, 7, 1, 1, 64, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 1),
    (2100, 2500, 0, 1, 7, 1, 1, 64, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 2),
    (4100, 4150, 0, 1, 7, 2, 2, 64, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 3);
EOF
expect 0 "nsys ops --out" -- "$BIN" import nsys "$TMP/ops.sqlite" --out "$TMP/cost.json" --tokens 16 --expert-type q4 --impl fused
has "nsys ops" "cost entries: 2 (q4/fused, tokens 16)"
has "nsys ops table" "linear_fc1            2        2"
expect 0 "cost show" -- "$BIN" cost show "$TMP/cost.json"
has "cost show" "2 entries"
# median of per-range kernel time: (500 + 400) / 2 ns = 0.00045 ms
has "cost show fc1" "linear_fc1      q4    fused        16    0.00045"
# ncu metrics into the entry whose kernel is the cuBLAS nvjet kernel
expect 0 "ncu merge" -- "$BIN" import ncu "$DATA/ncu/h100_ncu_raw.csv" --cost-model "$TMP/cost.json" --out "$TMP/merged.json"
has "ncu merge" "matched 1 of 2 cost entries"
expect 0 "cost show merged" -- "$BIN" cost show "$TMP/merged.json"
has "cost show merged" "14/79"
expect 0 "cost merge" -- "$BIN" cost merge "$TMP/all.json" "$TMP/cost.json" "$TMP/merged.json"
has "cost merge" "wrote $TMP/all.json: 2 entries from 2 files"
has "cost merge log" "linear_fc1/q4/fused tokens 16 from $TMP/merged.json replaces the earlier entry"

# ncu
expect 0 "ncu raw" -- "$BIN" import ncu "$DATA/ncu/h100_ncu_raw.csv"
has "ncu raw" "(raw layout): 17 kernels"
has "ncu raw nvjet" "    2        44672    14.12    78.82  nvjet_sm90_hsh_32x64_64x16_1x2_h_bz_splitK_NNN"
expect 0 "ncu details" -- "$BIN" import ncu "$DATA/ncu/h100_ncu_details.csv"
has "ncu details" "(details layout): 17 kernels"
printf '==PROF== Connected to process 1\n==ERROR== ERR_NVGPUCTRPERM - no permission for GPU performance counters\n' >"$TMP/err.csv"
expect 1 "ncu error-only" -- "$BIN" import ncu "$TMP/err.csv"
has "ncu error-only" "==ERROR== ERR_NVGPUCTRPERM - no permission"
expect 2 "ncu --out without --cost-model" -- "$BIN" import ncu "$DATA/ncu/h100_ncu_raw.csv" --out "$TMP/y.json"

# cost: malformed files
printf '{"schema": "thermoe.cost_model/1",\n "entries": [ }\n' >"$TMP/bad.json"
expect 1 "cost show syntax" -- "$BIN" cost show "$TMP/bad.json"
has "cost show syntax" "$TMP/bad.json:2:"
printf '{"schema": "thermoe.cost_model/9", "entries": []}\n' >"$TMP/schema.json"
expect 1 "cost show schema" -- "$BIN" cost show "$TMP/schema.json"
has "cost show schema" "schema: expected"
expect 2 "cost no action" -- "$BIN" cost
expect 2 "cost merge no inputs" -- "$BIN" cost merge "$TMP/o.json"
expect 0 "cost help" -- "$BIN" cost --help

# special files: refused at once with a message instead of read without end or waited on
# (timeout turns a hang into exit 124, a failure here)
mkfifo "$TMP/fifo"
expect 1 "cost show /dev/zero" -- timeout 10 "$BIN" cost show /dev/zero
has "cost show /dev/zero" "/dev/zero: is a character device; expected a regular file"
expect 1 "cost show FIFO" -- timeout 10 "$BIN" cost show "$TMP/fifo"
has "cost show FIFO" "$TMP/fifo: is a FIFO"
expect 1 "cost merge FIFO" -- timeout 10 "$BIN" cost merge "$TMP/m.json" "$TMP/fifo"
has "cost merge FIFO" "$TMP/fifo: is a FIFO"
expect 1 "cost show directory" -- timeout 10 "$BIN" cost show "$TMP"
has "cost show directory" "is a directory"
truncate -s 65M "$TMP/huge.json"
expect 1 "cost show huge" -- timeout 10 "$BIN" cost show "$TMP/huge.json"
has "cost show huge" "more than the limit"
expect 1 "ncu /dev/zero" -- timeout 10 "$BIN" import ncu /dev/zero
has "ncu /dev/zero" "/dev/zero: is a character device"
expect 1 "ncu FIFO" -- timeout 10 "$BIN" import ncu "$TMP/fifo"
has "ncu FIFO" "$TMP/fifo: is a FIFO"
expect 1 "nsys FIFO" -- timeout 10 "$BIN" import nsys "$TMP/fifo"
has "nsys FIFO" "$TMP/fifo: is a FIFO"
expect 1 "nsys /dev/zero" -- timeout 10 "$BIN" import nsys /dev/zero
has "nsys /dev/zero" "/dev/zero: is a character device"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "cli_import: all checks passed"

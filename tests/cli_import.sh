# thermoe import / thermoe cost on the real fixtures: exit codes and the key output lines.
# The ncu files are the project's own (tests/data/fixtures); the nsys exports are another
# project's (THERMOE_FIXTURES overrides their directory).
# usage: bash tests/cli_import.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_import.sh path/to/thermoe}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${THERMOE_FIXTURES:-$HERE/../../shared/fixtures}
[ -d "$FIX/nsys" ] || FIX=/work/shared/fixtures
DATA=$HERE/data/fixtures
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

# nsys: counts from sqlite3 FILE "select count(*), sum(end-start) from CUPTI_ACTIVITY_KIND_KERNEL"
expect 0 "nsys h100" -- "$BIN" import nsys "$FIX/nsys/h100_2gpu_1s.sqlite"
has "nsys h100" "kernels: 3442, 44829522 ns"
has "nsys h100 dev0" "device 0: 1721 kernels, 22385163 ns"
has "nsys h100 dev1" "device 1: 1721 kernels, 22444359 ns"
has "nsys h100 missing" "tables not present: GPU_METRICS"
expect 0 "nsys mock" -- "$BIN" import nsys "$FIX/nsys/nsys2026_mock.sqlite"
has "nsys mock" "kernels: 2, 4129 ns"
expect 1 "nsys --out without op ranges" -- "$BIN" import nsys "$FIX/nsys/nsys2026_mock.sqlite" --out "$TMP/x.json" --tokens 4
has "nsys no ranges" "no NVTX range is named after an op"
expect 2 "nsys --out without --tokens" -- "$BIN" import nsys "$FIX/nsys/nsys2026_mock.sqlite" --out "$TMP/x.json"
head -c 5000 /dev/urandom >"$TMP/junk.sqlite"
expect 1 "nsys corrupt" -- "$BIN" import nsys "$TMP/junk.sqlite"
has "nsys corrupt" "not an SQLite database"
expect 1 "nsys absent" -- "$BIN" import nsys "$TMP/absent.sqlite"
expect 2 "import bad source" -- "$BIN" import perf "$TMP/x"
expect 2 "import bad flag" -- "$BIN" import nsys --bogus "$TMP/x"
expect 0 "import help" -- "$BIN" import --help
has "import help" "--expert-type"

# nsys with op ranges -> cost entries (database made with the sqlite3 shell, when present)
if command -v sqlite3 >/dev/null; then
    sqlite3 "$TMP/ops.sqlite" "
      CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, deviceId INT, shortName INT);
      CREATE TABLE NVTX_EVENTS (start INT, end INT, eventType INT, text TEXT, textId INT, globalTid INT);
      INSERT INTO StringIds VALUES (1, 'nvjet_sm90_hsh_32x64_64x16_1x2_h_bz_splitK_NNN'), (2, 'relu_kernel');
      INSERT INTO NVTX_EVENTS VALUES (0, 1000, 59, 'thermoe:linear_fc1', NULL, 1), (2000, 3000, 59, 'thermoe:linear_fc1', NULL, 1),
                                     (4000, 5000, 59, 'relu', NULL, 1);
      INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (100, 600, 0, 1), (2100, 2500, 0, 1), (4100, 4150, 0, 2);"
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
fi

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

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "cli_import: all checks passed"

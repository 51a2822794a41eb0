# thermoe import nsys on the real exports of ../shared/fixtures/nsys (from another project,
# so not committed here): exit codes and the key output lines (counts from sqlite3 FILE
# "select count(*), sum(end-start) from CUPTI_ACTIVITY_KIND_KERNEL"). Exits 77 (ctest's
# skip) naming the missing file when the exports are not there.
# usage: [THERMOE_FIXTURES=DIR] bash tests/cli_import_nsys.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_import_nsys.sh path/to/thermoe}
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=${THERMOE_FIXTURES:-${THERMOE_FIXTURES_DIR:-$HERE/../../shared/fixtures}}
for f in nsys/h100_2gpu_1s.sqlite nsys/nsys2026_mock.sqlite; do
    if [ ! -r "$FIX/$f" ]; then
        echo "SKIP: fixture $FIX/$f not found (files from other projects are not committed;" \
             "set THERMOE_FIXTURES=DIR to a copy of shared/fixtures to run this test)"
        exit 77
    fi
done
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

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "cli_import_nsys: all checks passed"

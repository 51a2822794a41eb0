# Exit codes of every subcommand, as the README promises them: 0 success, 1 a failure (a file
# that is missing, unreadable or not a regular file), 2 a usage error (unknown flag, a bad
# flag value). Every command runs under `timeout 10`, so one that blocks (on a FIFO, say)
# fails with 124 instead of hanging the suite.
# usage: bash tests/cli_exitcodes.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_exitcodes.sh path/to/thermoe}
TMP=$(mktemp -d /tmp/thermoe-exit-XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT
fails=0

# expect CODE NEEDLE args...: thermoe ARGS exits CODE and NEEDLE is in its stdout + stderr
# (an empty NEEDLE checks the code only)
expect() {
    local code=$1 needle=$2
    shift 2
    timeout 10 "$BIN" "$@" >"$TMP/out" 2>&1 </dev/null
    local rc=$?
    if [ "$rc" -ne "$code" ]; then
        echo "FAIL: thermoe $* exited $rc, want $code:"
        head -c 600 "$TMP/out" | sed 's/^/    /'
        fails=$((fails + 1))
    elif [ -n "$needle" ] && ! grep -qF -- "$needle" "$TMP/out"; then
        echo "FAIL: thermoe $*: output lacks '$needle':"
        head -c 600 "$TMP/out" | sed 's/^/    /'
        fails=$((fails + 1))
    fi
}

# ---- special files: refused at once, named in the message ----------------------------------
mkfifo "$TMP/fifo"
expect 1 "$TMP/fifo: is a FIFO" forward --load "$TMP/fifo"
expect 1 "/dev/zero: is a character device" forward --load /dev/zero
expect 1 "is a directory" forward --load "$TMP"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "cli_exitcodes: all checks passed"

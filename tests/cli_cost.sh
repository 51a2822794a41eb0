# thermoe cost merge writes OUT whole or not at all: a write that fails part way (the file
# size limit fails it like a full disk) leaves an existing OUT byte for byte and no temporary;
# a device node or a directory as OUT is refused and left as it was; no success line then.
# usage: bash tests/cli_cost.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_cost.sh path/to/thermoe}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HERE/../data/h100_cost_model.json
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

[ -s "$MODEL" ] || { echo "FAIL: $MODEL missing" >&2; exit 1; }
printf '{"old": "contents"}\n' >"$TMP/out.json"
cp "$TMP/out.json" "$TMP/want.json"

# 1. the write fails part way: exit 1, the failure named, OUT unchanged, no temporary left
(ulimit -f 8 && trap '' XFSZ && exec "$BIN" cost merge "$TMP/out.json" "$MODEL") >"$TMP/o" 2>"$TMP/e"
rc=$?
[ "$rc" -eq 1 ] || fail "merge past the size limit exited $rc, want 1: $(cat "$TMP/e")"
cmp -s "$TMP/out.json" "$TMP/want.json" || fail "a failed merge changed OUT: $(head -c 200 "$TMP/out.json")"
grep -q "$TMP/out.json: write failed: File too large (left unchanged)" "$TMP/e" ||
    fail "no write failure message: $(cat "$TMP/e")"
grep -q "^wrote" "$TMP/o" && fail "success line after a failed write: $(cat "$TMP/o")"
ls "$TMP" | grep -q '^out\.json\.tmp' && fail "temporary left behind: $(ls "$TMP")"

# 2. a bad input: OUT unchanged
printf '{"schema": "nope"}' >"$TMP/bad.json"
"$BIN" cost merge "$TMP/out.json" "$MODEL" "$TMP/bad.json" >"$TMP/o" 2>"$TMP/e"
rc=$?
[ "$rc" -eq 1 ] || fail "merge of a bad input exited $rc, want 1"
cmp -s "$TMP/out.json" "$TMP/want.json" || fail "a merge of a bad input changed OUT"

# 3. the same merge without the limit replaces OUT
"$BIN" cost merge "$TMP/out.json" "$MODEL" >"$TMP/o" 2>"$TMP/e" || fail "merge: $(cat "$TMP/e")"
grep -q "^wrote $TMP/out.json: " "$TMP/o" || fail "no success line: $(cat "$TMP/o")"
"$BIN" cost show "$TMP/out.json" >/dev/null 2>&1 || fail "merged OUT does not load"

# 4. OUT is a device node or a directory: refused with its name and kind, left as it was
for dev in /dev/full /dev/null; do
    [ -c "$dev" ] || continue
    "$BIN" cost merge "$dev" "$MODEL" >"$TMP/o" 2>"$TMP/e"
    rc=$?
    [ "$rc" -eq 1 ] || fail "merge to $dev exited $rc, want 1"
    grep -q "$dev: is a character device; refusing to replace it" "$TMP/e" || fail "merge to $dev: $(cat "$TMP/e")"
    grep -q "^wrote" "$TMP/o" && fail "merge to $dev printed a success line"
    [ -c "$dev" ] || fail "$dev is no longer a character device"
done
mkdir "$TMP/dir"
"$BIN" cost merge "$TMP/dir" "$MODEL" >"$TMP/o" 2>"$TMP/e"
rc=$?
[ "$rc" -eq 1 ] || fail "merge to a directory exited $rc, want 1"
grep -q "$TMP/dir: is a directory" "$TMP/e" || fail "merge to a directory: $(cat "$TMP/e")"
[ -d "$TMP/dir" ] || fail "the directory was replaced"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "cli_cost: ok"

# thermoe profile --emit-scripts: the program's own path goes into every script as one quoted
# shell word. Run from a directory named with $(...), backquotes and quotes, the scripts pass
# bash -n, their THERMOE line gives the path back unchanged and runs nothing, and run through
# stand-in ncu / nsys programs they hand the path over as one argument and create nothing.
# A path with a newline cannot be carried into a script: refused, no script written.
# usage: bash tests/cli_profile_scripts.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_profile_scripts.sh path/to/thermoe}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
pwned() { find "$T" -name PWNED | grep -q . || [ -e /PWNED ]; }

# stand-ins for the profilers: record each argument on its own line, write nothing else
mkdir "$T/run" "$T/stub" || exit 1
for tool in ncu nsys; do
    printf '#!/bin/sh\nfor a in "$@"; do printf "%%s\\n" "$a"; done >>"%s/%s.args"\n' "$T" "$tool" \
        >"$T/stub/$tool"
    chmod +x "$T/stub/$tool"
done

# two program directories: $(...) alone (a script that runs it would create PWNED), and
# $(...) with backquotes and both kinds of quotes
k=0
for W in "$T/v \$(touch PWNED)" "$T/w \$(touch PWNED) it's \"q\" \`touch PWNED\`"; do
    k=$((k + 1))
    rm -f "$T/ncu.args" "$T/nsys.args"
    mkdir "$W" && cp "$BIN" "$W/thermoe" || { echo "FAIL: copy the program to $W" >&2; exit 1; }
    (cd "$T/run" && "$W/thermoe" profile --emit-scripts "$T/sc$k" --ops linear_fc1 --tokens 16 \
        --expert-types q4) >"$T/o.log" 2>&1 || fail "emit-scripts from $W: $(cat "$T/o.log")"
    grep -q "^wrote 4 scripts to $T/sc$k" "$T/o.log" || fail "emit-scripts output: $(cat "$T/o.log")"
    n=0
    for s in "$T/sc$k"/*.sh; do
        n=$((n + 1))
        bash -n "$s" || fail "bash -n $s"
        line=$(grep '^THERMOE=' "$s")
        got=$(cd "$T/run" && env -u THERMOE bash -c "$line"'; printf %s "$THERMOE"')
        [ "$got" = "$W/thermoe" ] || fail "$(basename "$s"): THERMOE line gives '$got' ($line)"
        got=$(cd "$T/run" && THERMOE=/opt/other bash -c "$line"'; printf %s "$THERMOE"')
        [ "$got" = /opt/other ] || fail "$(basename "$s"): THERMOE from the environment is not kept: '$got'"
        # the whole script, with the stand-ins: the import step fails (no profiler output),
        # but nothing of the path may run on the way
        (cd "$T/run" && env -u THERMOE PATH="$T/stub:$PATH" bash "$s") >"$T/s.log" 2>&1
    done
    [ "$n" -eq 4 ] || fail "expected 4 scripts from $W, found $n"
    for tool in ncu nsys; do
        grep -qxF "$W/thermoe" "$T/$tool.args" 2>/dev/null ||
            fail "$tool was not given '$W/thermoe' as one argument: $(head -c 600 "$T/$tool.args" 2>&1)"
    done
    pwned && fail "a generated script ran a command from the program's path $W"
done

# a newline in the program's path: refused (exit 1, said why), no script written
N="$T/nl
touch PWNED"
mkdir "$N" && cp "$BIN" "$N/thermoe" || fail "copy to a path with a newline"
(cd "$T/run" && "$N/thermoe" profile --emit-scripts "$T/scn" --ops linear_fc1 --tokens 16 \
    --expert-types q4) >"$T/o.log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "emit-scripts from a path with a newline exited $rc, want 1"
grep -q "this program's path holds a newline" "$T/o.log" || fail "newline message: $(cat "$T/o.log")"
[ -z "$(ls "$T/scn" 2>/dev/null)" ] || fail "scripts written from a path with a newline: $(ls "$T/scn")"
pwned && fail "PWNED created"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "cli_profile_scripts: ok"

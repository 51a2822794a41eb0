#!/usr/bin/env bash
# The scripts that only a GPU machine runs (bench/*.sh) and the repository's other shell and
# Python scripts parse: bash -n on every shell script, py_compile (into a temporary folder) on
# every Python one. A syntax error in a device script would otherwise first show on the
# machine, at the cost of a device call. Usage: check_scripts.sh [SOURCE_DIR]
set -uo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 1
bad=0 n=0
for f in bench/*.sh scripts/*.sh tests/*.sh .ci/run; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    bash -n "$f" || { echo "FAIL: $f does not parse (bash -n)"; bad=1; }
done
if command -v python3 >/dev/null 2>&1; then
    py=()
    for f in bench/*.py bench/ref/*.py tools/*.py python/thermoe/*.py tests/python/*.py; do
        [ -f "$f" ] && py+=("$f")
    done
    n=$((n + ${#py[@]}))
    python3 - "${py[@]}" <<'PY' || bad=1
import py_compile, sys, tempfile, os
bad = 0
with tempfile.TemporaryDirectory() as d:
    for f in sys.argv[1:]:
        try:
            py_compile.compile(f, cfile=os.path.join(d, "x.pyc"), doraise=True)
        except py_compile.PyCompileError as e:
            print(f"FAIL: {f} does not compile: {e.msg.strip()}")
            bad = 1
sys.exit(bad)
PY
fi
echo "$n scripts checked"
exit $bad

#!/usr/bin/env bash
# Every C, CUDA and header file of the repository is formatted by its .clang-format (the
# check CI runs). Skips (77) when clang-format is not installed; `bash tests/check_format.sh
# --fix` reformats in place. Usage: check_format.sh [--fix] [SOURCE_DIR]
set -uo pipefail
fix=0
[ "${1:-}" = --fix ] && { fix=1; shift; }
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 1
cf=$(command -v clang-format || command -v clang-format-14 || true)
[ -n "$cf" ] || { echo "SKIP: clang-format not installed (apt-get install clang-format)"; exit 77; }
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh' 2>/dev/null || find src include tests bench -name '*.[ch]' -o -name '*.cu' -o -name '*.cuh')
if [ $fix = 1 ]; then "$cf" -i "${files[@]}"; exit 0; fi
bad=0
for f in "${files[@]}"; do
  if ! "$cf" --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (bash tests/check_format.sh --fix)"; bad=$((bad + 1))
  fi
done
echo "$bad of ${#files[@]} files not formatted"
[ $bad = 0 ]

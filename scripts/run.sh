#!/usr/bin/env bash
# Build thermoe (release) and run its main job: `thermoe run` on its embedded default (the
# trained default model on the committed test split when models/default is there, else the
# random block; real GPU when one answers, else the CPU backend with the simulated H100), which
# ends with the analysis (tables, figures, report.html) of what it wrote.
# Extra arguments go to `thermoe run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
grep -E "^--   " "$build.configure.log" || true
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
cmake --build "$build" >/dev/null
exec "$build/thermoe" run "$@"

#!/usr/bin/env bash
# Build thermoe with AddressSanitizer + UndefinedBehaviorSanitizer and -Werror (the CUDA
# sources too, when nvcc is present) and run every test under ctest. Ends with ctest's
# summary, its list of skipped tests (a fixture from another project or gnuplot absent) and
# the reason each one printed. BUILD_DIR overrides the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --with-mpi
build=${BUILD_DIR:-build-test}
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHERMOE_SANITIZE=ON \
      -DTHERMOE_WERROR=ON -DTHERMOE_CUDA="${THERMOE_CUDA:-AUTO}" >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
grep -E "^--   " "$build.configure.log" || true
cmake --build "$build" -j "$jobs" 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
cmake --build "$build" -j "$jobs" >/dev/null   # fail here if the build failed
export ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$build"
# ctest's summary is the last thing printed. It names skipped tests; why each skipped (a
# "SKIP: ..." line naming the missing file or tool) is in Testing/Temporary/LastTest.log, and
# the configure summary above lists the fixtures that are absent.
exec ctest --output-on-failure -j "$jobs"

#!/usr/bin/env bash
# One device call for the kernels (repo root, GPU machine, .devdeps carried): a Release build
# for Hopper, the CUDA tests element by element against the CPU (kernels, engine, decoder LM),
# the side-by-side table with ggml (bench/ggml_side_by_side.sh; GGML_TBO names a
# test-backend-ops you built, default .devdeps/ggml/test-backend-ops when present),
# compute-sanitizer memcheck and racecheck of the expert kernel test, then CTEST_R (a ctest
# regex, with --output-on-failure). Everything under $OUT is packed into results.tgz at the end
# (the device returns few files); the summary goes to stdout.
# The sanitizers run the expert kernels with the weight ring of each depth in SANITIZE_STAGES
# (4; a list such as "3 0" runs them once a depth).
# STAGES_SWEEP (e.g. "0 3 4 6") also runs bench_moe --short once per depth of the expert
# kernel's weight ring and joins them (bench/stages_table.py) before the side by side.
# ACT8=1 also runs bench_moe --short with the q4/q2 int8 path (THERMOE_ACT8=1; q2 through
# registers, then through a ring of 3) beside the default and tabulates each against it
# (act8_1.md, act8_1r3.md).
# SPLITK_SWEEP (e.g. "2 4") runs bench_moe --short without split-K, then once per cluster size
# of the fp16 / bf16 split-K (THERMOE_EXPERT_SPLITK), each tabulated against the first
# (splitk_N.md); the sanitizers then also run with THERMOE_EXPERT_SPLITK=SANITIZE_SPLITK when set.
# NO_SIDE=1 skips the side by side with ggml.
# usage: [LIMIT=540] [STAGES_SWEEP="0 4"] [ACT8=1] [SPLITK_SWEEP="2 4"] bash bench/gpu_kernel_round.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
export OUT
# a carried binary may come xz-compressed (the carry limit); python3's lzma unpacks it
if [ -f .devdeps/ggml/test-backend-ops.xz ] && [ ! -x .devdeps/ggml/test-backend-ops ]; then
  python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[2], "wb") as o: shutil.copyfileobj(i, o)' \
    .devdeps/ggml/test-backend-ops.xz .devdeps/ggml/test-backend-ops &&
    chmod +x .devdeps/ggml/test-backend-ops
fi
[ -z "${GGML_TBO:-}" ] && [ -x .devdeps/ggml/test-backend-ops ] && GGML_TBO=$PWD/.devdeps/ggml/test-backend-ops
export GGML_TBO
[ -d .devdeps/ggml ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$PWD/.devdeps/ggml"
# shellcheck disable=SC2016 # expanded by the inner shell
timeout -s TERM "${LIMIT:-540}" bash -c '
  source bench/gpu_build.sh
  gpu_build "" || exit 1
  for t in test_cuda_kernels test_cuda_engine test_cuda_lm; do
    timeout 200 build-gpu/$t >"$OUT/$t.log" 2>&1; echo "$(el) $t rc=$?"
    grep -E "^\[  (FAILED|PASSED) |x std|seed" "$OUT/$t.log" | head -6
  done
  for st in ${STAGES_SWEEP:-}; do
    THERMOE_EXPERT_STAGES=$st timeout 120 build-gpu/bench_moe --short >"$OUT/bench_short_st$st.md" 2>&1
    echo "$(el) bench_moe --short, ring $st rc=$?"
  done
  [ -n "${STAGES_SWEEP:-}" ] && python3 bench/stages_table.py "$OUT" | tee "$OUT/stages.md"
  if [ "${ACT8:-0}" = 1 ]; then
    # without the path, with it (q2 through registers), with it and q2 through a ring of 3
    for a8 in 0 1 1r3; do
      THERMOE_ACT8=${a8%r3} THERMOE_ACT8_Q2_STAGES=$([ "$a8" = 1r3 ] && echo 3 || echo 0) \
        timeout 120 build-gpu/bench_moe --short >"$OUT/bench_short_a8_$a8.md" 2>&1
      echo "$(el) bench_moe --short, int8 activations $a8 rc=$?"
    done
    for a8 in 1 1r3; do
      python3 bench/stages_table.py --compare "$OUT/bench_short_a8_0.md" "$OUT/bench_short_a8_$a8.md" |
        tee "$OUT/act8_$a8.md" | grep -E "^\| (matrix|expert|MUL|layer)[^|]*\|[^|]*\| q[42]"
    done
  fi
  if [ -n "${SPLITK_SWEEP:-}" ]; then
    for sk in 1 $SPLITK_SWEEP; do
      THERMOE_EXPERT_SPLITK=$sk timeout 120 build-gpu/bench_moe --short >"$OUT/bench_short_sk$sk.md" 2>&1
      echo "$(el) bench_moe --short, split-K $sk rc=$?"
    done
    for sk in $SPLITK_SWEEP; do
      python3 bench/stages_table.py --compare "$OUT/bench_short_sk1.md" "$OUT/bench_short_sk$sk.md" |
        tee "$OUT/splitk_$sk.md" | grep -E "^\| (matrix|expert|layer)[^|]*\|[^|]*\| (fp16|bf16)"
    done
  fi
  if [ "${NO_SIDE:-0}" != 1 ]; then
    BUILD=build-gpu timeout 240 bash bench/ggml_side_by_side.sh >"$OUT/side_by_side.log" 2>&1
    echo "$(el) side by side rc=$?"; cat "$OUT/side_by_side.md" 2>/dev/null || tail -5 "$OUT/side_by_side.log"
    grep -E "^\| (matrix|MUL_MAT_ID|expert|layer)" "$OUT/bench_moe_short.md" | head -80
  fi
  for st in ${SANITIZE_STAGES:-4}; do
    for tool in memcheck racecheck; do
      THERMOE_TEST_FILTER=test_expert_linear THERMOE_EXPERT_STAGES=$st \
        THERMOE_EXPERT_SPLITK=${SANITIZE_SPLITK:-} timeout 120 compute-sanitizer --tool $tool \
        --error-exitcode 9 build-gpu/test_cuda_kernels >"$OUT/${tool}_st$st.log" 2>&1
      echo "$(el) $tool expert_linear ring $st rc=$?"; tail -2 "$OUT/${tool}_st$st.log"
    done
  done
  if [ -n "${CTEST_R:-}" ]; then
    (cd build-gpu && timeout 150 ctest -R "$CTEST_R" --output-on-failure) >"$OUT/ctest.log" 2>&1
    echo "$(el) ctest rc=$?"; grep -E "tests passed|Failed|\*\*\*" "$OUT/ctest.log" | head
  fi'
echo "kernel round rc=$?"
cd "$OUT" && tar czf /tmp/results.tgz . && find . -mindepth 1 -delete && mv /tmp/results.tgz "$OUT/"
ls -la "$OUT"

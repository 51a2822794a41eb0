#!/usr/bin/env bash
# One device call (repo root, GPU machine, .devdeps carried): the CUDA decoder tests, the
# expert-set selection run (bench/energy_budget.sh, short settings) and a short serving replay
# (bench/serve_gpu.sh), stopped by SIGTERM at LIMIT seconds (the runs keep what they
# measured), then everything under $OUT packed into results.tgz beside the logs (the device
# returns few files).
# usage: LIMIT=480 bash bench/gpu_round.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/out}
export OUT
# shellcheck disable=SC2016 # expanded by the inner shell
timeout -s TERM "${LIMIT:-480}" bash -c '
  BUILD_TARGETS="thermoe test_cuda_lm" TEST_LIST=test_cuda_lm RUNS=${RUNS:-fp16_kl} \
    SAMPLES=${SAMPLES:-6} COOLDOWN=2 STEADY=8 RUN_LIMIT=${RUN_LIMIT:-170} \
    bash bench/energy_budget.sh "${REPEATS:-3}" 2>&1 | tee "$OUT/main.log"
  STRATEGIES=baseline,predictive_thermal REPEATS=1 DURATION=${SERVE_S:-45} DRAIN=15 REST=3 \
    bash bench/serve_gpu.sh 2>&1 | tee "$OUT/serve.log"'
echo "gpu_round rc=$?"
cd "$OUT" && tar czf /tmp/results.tgz --exclude=main.log --exclude=serve.log --exclude=env.txt . &&
  find . -mindepth 1 ! -name main.log ! -name serve.log ! -name env.txt -delete &&
  mv /tmp/results.tgz "$OUT/"
ls -la "$OUT"

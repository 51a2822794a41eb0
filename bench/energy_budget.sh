#!/usr/bin/env bash
# Expert-set selection on a real GPU (docs/strategies.md): the trained default model scoring
# held-out text in decode steps (--lm-steps decode: every window fed one position a step, 16
# sequences a step over the KV cache), each MoE layer's selection also driving experts of
# Mixtral's shape (4096 x 14336, random weights, --expert-shape mixtral) on the CUDA backend,
# so time, energy and heat are those of production-size experts streaming from HBM while the
# perplexity is the trained model's own. NVML telemetry; each run holds baseline and the
# strategies in a balanced order over --repeats independent passes.
#
# usage (repo root, GPU machine, .devdeps carried):
#   bash bench/energy_budget.sh [REPEATS]        (RUNS="fp16_kl q4_kl ..." picks the runs)
# env: SAMPLES (windows per combination, 16), COOLDOWN (5 s), STEADY (20 s), RUN_LIMIT (s per
#      run, 240), RATE (open-loop tokens/s; unset: closed loop), TESTS=0 skips the CUDA tests,
#      TEST_LIST (before the runs), POST_TESTS (after them), BUILD_TARGETS (default all),
#      SEQ_LEN (32: decode steps a batch; longer batches give NVML longer energy windows)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
REPEATS=${1:-3}
RUNS=${RUNS:-fp16_kl}
mkdir -p "$OUT"
source bench/gpu_build.sh
gpu_build "${BUILD_TARGETS:-}" || exit 1
if [ "${TESTS:-1}" = 1 ]; then
  for t in ${TEST_LIST:-test_cuda_engine test_cuda_lm}; do
    build-gpu/$t >"$OUT/$t.log" 2>&1; echo "$(el) $t rc=$?"
    grep -E "^\[  (FAILED|PASSED) |differ|changed|mismatch" "$OUT/$t.log" | head -8
  done
fi
strategies=baseline,static_optimal,kernel_aware_ttha,predictive_thermal
# the comparisons (top-k - 1, top-p, static pruning, capacity), where this build has them
for s in topk_minus_one top_p expert_prune capacity; do
  build-gpu/thermoe run --help 2>&1 | grep -q "$s" && strategies+=",$s"
done
common=(--backend cuda --telemetry nvml --lm-steps decode --expert-shape mixtral
        --batch-size 16 --seq-len ${SEQ_LEN:-32} --workloads standard
        --num-samples-per-workload ${SAMPLES:-16} --repeats "$REPEATS" --cooldown ${COOLDOWN:-5}
        --warmup-steady ${STEADY:-20} --trace-batches 0 --no-analyze)
[ -n "${RATE:-}" ] && common+=(--arrival-rate "$RATE")
run() { # name, extra flags...
  local name=$1; shift
  echo "== $name: thermoe run ${common[*]} $*" | tee "$OUT/$name.cmd"
  timeout ${RUN_LIMIT:-240} build-gpu/thermoe run --out "$OUT/$name" "${common[@]}" "$@" \
    >"$OUT/$name.log" 2>&1
  echo "$(el) $name rc=$?"
  grep -E "^(workload|standard) " "$OUT/$name.log" | head -30
  rm -rf "$OUT/$name/traces"
}
if [ "${TRACE_CHECK:-1}" = 1 ]; then # CUDA kernels (CUPTI) in a run's batch traces
  build-gpu/thermoe run --out "$OUT/traced" --backend cuda --telemetry nvml --lm-steps decode \
    --batch-size 16 --routing-strategy baseline,predictive_thermal --workloads standard \
    --num-samples-per-workload 2 --cooldown 0 --warmup-steady 0 --trace-batches 1 --no-analyze \
    >"$OUT/traced.log" 2>&1
  echo "$(el) traced rc=$? kernel spans: $(zcat "$OUT"/traced/traces/r0_standard_baseline.json.gz | grep -c '"cat":"kernel"')"
  grep -i "kernels" "$OUT/traced.log" | head -3
fi
for r in $RUNS; do
  case $r in
    fp16_kl) run $r --expert-type fp16 --routing-strategy "$strategies" ;;
    q4_kl) run $r --expert-type q4 --routing-strategy "$strategies" ;;
    fp16_wide) run $r --expert-type fp16 --kl-base 0.05 --kl-max 0.3 \
                 --routing-strategy baseline,static_optimal,predictive_thermal ;;
    fp16_top1|q4_top1) run $r --expert-type "${r%_top1}" --budget top1 \
                         --routing-strategy baseline,predictive_thermal ;;
    fp16_m1|q4_m1) run $r --expert-type "${r%_m1}" --routing-strategy baseline,topk_minus_one ;;
    # one process of a precision comparison: the same strategies at fp16 or q4, run as
    # separate processes in a balanced order (fp16_prec_1 q4_prec_1 q4_prec_2 ...) and merged
    # by `thermoe analyze` (names strategy@type, docs/analysis.md). Process N scores the text
    # of seed N at both types: its own windows, the same at fp16 and q4.
    fp16_prec_*|q4_prec_*) run $r --expert-type "${r%%_prec_*}" --seed "${r##*_prec_}" \
                            --budget top1 \
                            --routing-strategy baseline,predictive_thermal,topk_minus_one ;;
    fp16_few|q4_few) run $r --expert-type "${r%_few}" \
                --routing-strategy baseline,static_optimal,kernel_aware_ttha,topk_minus_one ;;
    # one point of the budget frontier: predictive_thermal holds its base budget while the
    # GPU is below its target, so the run measures that budget against baseline
    fp16_b_kl_*) run $r --expert-type fp16 --budget kl --kl-base "${r#fp16_b_kl_}" --kl-max 1 \
                   --routing-strategy baseline,predictive_thermal ;;
    fp16_b_tau_*) run $r --expert-type fp16 --budget tau --tau-base "${r#fp16_b_tau_}" \
                    --tau-min 0.5 --routing-strategy baseline,predictive_thermal ;;
    # an A/A check of the harness: predictive_thermal at a budget that keeps every token's
    # whole top-k (tau 1 at every temperature) routes as baseline does, so its energy, time and
    # power must match baseline's (bench/results/h100_harness_gap)
    fp16_aa|q4_aa) run $r --expert-type "${r%_aa}" --budget tau --tau-base 1 --tau-min 1 \
                     --routing-strategy baseline,predictive_thermal ;;
    # the same with the windows' energy from the energy counter, read every 100 ms, instead
    # of integrated power samples: a second, independent reading of the same check
    fp16_aa_counter) run $r --expert-type fp16 --budget tau --tau-base 1 --tau-min 1 \
                       --energy-counter-ms 100 --routing-strategy baseline,predictive_thermal ;;
    *) echo "unknown run $r (fp16_kl q4_kl fp16_wide fp16_top1 q4_top1 fp16_m1 q4_m1 fp16_few" \
         "q4_few fp16_b_kl_X fp16_b_tau_X fp16_prec_N q4_prec_N fp16_aa q4_aa fp16_aa_counter)"
       exit 2 ;;
  esac
done
for t in ${POST_TESTS:-}; do # tests that may wait until the measurements are in
  build-gpu/$t >"$OUT/$t.log" 2>&1; echo "$(el) $t rc=$?"
  grep -E "^\[  (FAILED|PASSED) |differ|changed|mismatch" "$OUT/$t.log" | head -8
done
pack_out "$OUT"
echo "$(el) done"

#!/usr/bin/env bash
# thermoe run against hostile inputs and signals: --config given something that is not a
# config file (/dev/zero, a FIFO, a directory, a JSON array, a binary file) fails at once
# with a message instead of growing, blocking or being ignored; a JSON syntax error names
# line and column; an unknown key or a value too long is an error, not dropped or cut; a
# good config file still works, and the command line overrides it. A GPU lost during the
# run ends it complete_with_telemetry_faults with exit 1. A FIFO as the placement file, as
# metadata.json on resume or as a trace file is refused at once. SIGHUP and SIGTERM stop a run as
# an interrupt: whole rows, status "interrupted", exit 130, and --resume completes it.
set -u
BIN="$1"
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$T" || fail "cd"

RUN=(--backend cpu --telemetry sim --moe-only --num-experts 8 --top-k 2 --warmup-batches 0
     --trace-batches 0 --quiet --no-analyze --workloads standard --routing-strategy baseline)

# expect_config_error NAME FILE TEXT: run --config FILE fails with exit 1 within 20 s and its
# message holds TEXT
expect_config_error() {
    timeout -k 5 20 "$BIN" run "${RUN[@]}" --num-samples-per-workload 2 --config "$2" --out "cfg_$1" \
        >"$1.log" 2>&1
    local rc=$?
    [ $rc -ne 124 ] && [ $rc -ne 137 ] || fail "$1: --config $2 still running after 20 s"
    [ $rc -eq 1 ] || fail "$1: --config $2 exited $rc, want 1: $(head -c 600 "$1.log")"
    grep -qF -- "$3" "$1.log" || fail "$1: message lacks '$3': $(head -c 600 "$1.log")"
    [ ! -e "cfg_$1/batches.csv" ] || fail "$1: the run started anyway"
}

expect_config_error zero /dev/zero "character device"
mkfifo fifo.json
expect_config_error fifo fifo.json "FIFO"
mkdir dir.json
expect_config_error dir dir.json "directory"
printf '["--repeats", "2"]\n' > array.json
expect_config_error array array.json "JSON object"
printf '\x7fELF\x02\x01\x01\x00\x00\x00' > elf.bin
seq 1 2000 | gzip -9 -n -c >> elf.bin
expect_config_error elf elf.bin "elf.bin"
printf '# flags\nrepeats = 1\n\x00\x00\x00\n' > nul.ini
expect_config_error nul nul.ini "NUL"
printf '{\n  "repeats": 1,\n  "seed": 7,,\n}\n' > syntax.json
expect_config_error syntax syntax.json "syntax.json:3:"
printf '{"repeats": 1, "warp-speed": 9}\n' > unknown.json
expect_config_error unknown unknown.json "unknown key 'warp-speed'"
long=$(printf 'x%.0s' $(seq 1 5000))
printf '{"out": "%s"}\n' "$long" > long.json
expect_config_error long long.json "'out'"
grep -qF "5000" long.log || fail "long: the message should say how long the value is: $(head -c 300 long.log)"
printf 'repeats = 1\nout = %s\n' "$long" > long.ini
expect_config_error longini long.ini "long.ini:2"
printf '{"repeats": 1, "repeats": 2}\n' > dup.json
expect_config_error dup dup.json "dup.json:1:"
head -c 1048577 /dev/zero | tr '\0' ' ' > big.json
expect_config_error big big.json "limit"
printf '{"workloads": ["standard", 3]}\n' > item.json
expect_config_error item item.json "'workloads'"
printf 'repeats = 1\n\x01\x02 = 3\n' > ctrl.ini
expect_config_error ctrl ctrl.ini "ctrl.ini:2"

# the other files a run reads or writes that are not config files: a FIFO as the placement
# file, as metadata.json on --resume or as a trace file fails at once, naming it
expect_fifo_refused() { # NAME TEXT ARGS...: exit 1 within 20 s, the message holds TEXT
    local name=$1 text=$2
    shift 2
    timeout -k 5 20 "$BIN" run "${RUN[@]}" --num-samples-per-workload 2 "$@" >"$name.log" 2>&1
    local rc=$?
    [ $rc -ne 124 ] && [ $rc -ne 137 ] || fail "$name: still running after 20 s"
    [ $rc -eq 1 ] || fail "$name: exit $rc, want 1: $(tail -3 "$name.log")"
    grep -qF -- "$text" "$name.log" || fail "$name: message lacks '$text': $(tail -3 "$name.log")"
}
expect_fifo_refused placement "fifo.json: is a FIFO" --placement-file fifo.json --out fifo_placement
mkdir fifo_meta && mkfifo fifo_meta/metadata.json
expect_fifo_refused meta "metadata.json: is a FIFO" --resume --out fifo_meta
# traces are .json.gz with zlib, .json without: a FIFO at both names
mkdir -p fifo_trace/traces && mkfifo fifo_trace/traces/r0_standard_baseline.json{,.gz}
expect_fifo_refused trace "r0_standard_baseline.json" --trace-batches 1 --out fifo_trace
grep -q "is a FIFO" trace.log || fail "trace: $(tail -3 trace.log)"
grep -q '"status": "failed"' fifo_trace/metadata.json || fail "trace: the run should be recorded as failed"
mkdir -p fifo_runtrace/traces && mkfifo fifo_runtrace/traces/run.json{,.gz}
expect_fifo_refused runtrace "traces/run.json" --trace-batches 1 --out fifo_runtrace
grep -q '"status": "failed"' fifo_runtrace/metadata.json ||
    fail "run trace: the run should be recorded as failed"

# a good JSON and a good INI file work; the command line overrides them
printf '{"num-samples-per-workload": 3, "workloads": ["standard"], "load-balancer": false,\n "seed": 5}\n' > good.json
"$BIN" run "${RUN[@]}" --config good.json --out good >good.log 2>&1 || fail "good.json: $(tail -3 good.log)"
[ "$(($(wc -l < good/batches.csv) - 1))" -eq 3 ] || fail "good.json: want 3 rows"
grep -q '"rule": "configured"' good/metadata.json || fail "good.json: impl_choice.rule should be configured"
printf '# a config\n[run]\nnum-samples-per-workload = 4\nload-balancer = true\n' > good.ini
"$BIN" run "${RUN[@]}" --config good.ini --num-samples-per-workload 2 --impl fused --out goodini >goodini.log 2>&1 ||
    fail "good.ini: $(tail -3 goodini.log)"
[ "$(($(wc -l < goodini/batches.csv) - 1))" -eq 2 ] || fail "good.ini: the command line should override the file"
grep -q '"load_balancer": true' goodini/metadata.json || fail "good.ini: load-balancer not applied"
grep -q '"rule": "forced"' goodini/metadata.json || fail "good.ini: --impl should force the impl (impl_choice)"
# a GPU that is lost (the fake libnvidia-ml answers GPU_IS_LOST from its first read): every
# batch runs, but the run ends complete_with_telemetry_faults with exit 1, and says so
FAKE="$(dirname "$BIN")/libfake_nvml.so"
[ -f "$FAKE" ] || fail "$FAKE is missing (built with the tests)"
THERMOE_NVML_LIB="$FAKE" FAKE_NVML_LOST_AFTER=0 "$BIN" run "${RUN[@]}" \
    --telemetry nvml --num-samples-per-workload 3 --out lost >lost.log 2>&1
rc=$?
[ $rc -eq 1 ] || fail "lost GPU: exit $rc, want 1: $(tail -5 lost.log)"
grep -q '"status": "complete_with_telemetry_faults"' lost/metadata.json || fail "lost GPU: status: $(grep status lost/metadata.json)"
grep -q '"count": 3' lost/metadata.json || fail "lost GPU: want 3 faulted batches in metadata"
grep -q "telemetry failed on 3 of 3" lost.log || fail "lost GPU: message: $(tail -3 lost.log)"
[ "$(($(wc -l < lost/batches.csv) - 1))" -eq 3 ] || fail "lost GPU: every batch should still be logged"
# the decoder LM on real telemetry (the fake libnvidia-ml, CPU backend): plain baseline also
# runs the baseline-routing second forward and the host work on its logits (so the energy
# window after it follows the same work as every strategy's); its measured nll_baseline
# equals its nll and its logit error is 0 (the CPU's forward is deterministic), and another
# strategy's nll_baseline on a batch is baseline's nll on that batch (the same windows); every
# row after the first says how long the device idled before its window
THERMOE_NVML_LIB="$FAKE" "$BIN" run --backend cpu --telemetry nvml --expert-shape trained \
    --routing-strategy baseline,top_p --workloads standard --num-samples-per-workload 2 \
    --batch-size 2 --seq-len 16 --cooldown 0 --warmup-steady 0 --trace-batches 0 --quiet \
    --no-analyze --out lmnv >lmnv.log 2>&1 || fail "LM on nvml: $(tail -5 lmnv.log)"
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { key = $c["repeat"] "/" $c["batch_idx"]
      if ($c["telemetry_source"] != "nvml") bad = bad " source " $c["telemetry_source"]
      idle = $c["idle_before_window_s"]  # the gap before each window: every row but the first
      if (NR > 2 && (idle == "nan" || idle == "" || idle + 0 < 0)) bad = bad " idle " idle
      if ($c["strategy"] == "baseline") {
        if ($c["nll"] != $c["nll_baseline"] || $c["output_rel_error_vs_baseline"] != 0) bad = bad " baseline " key
        base[key] = $c["nll"] }
      else other[key] = $c["nll_baseline"] }
    END { n = 0; for (k in other) { n++; if (!(k in base) || base[k] != other[k]) bad = bad " pair " k }
          if (n != 2) bad = bad " rows " n; if (bad) { print bad; exit 1 } }' lmnv/batches.csv ||
    fail "LM on nvml: nll / nll_baseline do not pair"
# real telemetry: a strategy whose windows opened after a longer idle than baseline's is
# warned about (the rows' idle_before_window_s; a resumed run with nothing left summarises the
# rows as written, here with static_optimal's gaps set to 50 ms)
IF=(--backend cpu --telemetry nvml --model random --d-model 64 --d-ff 128 --workloads standard
    --routing-strategy baseline,static_optimal --num-samples-per-workload 2 --batch-size 2
    --seq-len 8 --cooldown 0 --warmup-steady 0 --trace-batches 0 --quiet --no-analyze --out idle)
THERMOE_NVML_LIB="$FAKE" "$BIN" run "${IF[@]}" >idle.log 2>&1 || fail "idle: $(tail -3 idle.log)"
# (the random block on real telemetry: plain baseline runs the fidelity pass too, measured 0)
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["strategy"] == "baseline" && $c["output_rel_error_vs_baseline"] != 0 { bad = 1 }
    END { exit bad }' idle/batches.csv || fail "idle: baseline's measured error is not 0"
grep -q "WARNING: standard static_optimal: its windows opened" idle.log &&
    fail "idle: warned with equal gaps: $(grep WARNING idle.log)"
awk -F, -v OFS=, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i }
    NR > 1 && $c["strategy"] == "static_optimal" { $c["idle_before_window_s"] = "0.05" } { print }' \
    idle/batches.csv >idle/b.csv && mv idle/b.csv idle/batches.csv
THERMOE_NVML_LIB="$FAKE" "$BIN" run "${IF[@]}" --resume >idle2.log 2>&1 ||
    fail "idle resume: $(tail -3 idle2.log)"
grep -q "WARNING: standard static_optimal: its windows opened after 50.0 ms of idle" idle2.log ||
    fail "idle: no warning: $(grep -A2 order idle2.log)"
# --energy-counter-ms 0: the monitor reads the energy counter at every sample, so a batch
# window of a second or so takes its energy from the counter rather than integrating power
THERMOE_NVML_LIB="$FAKE" "$BIN" run --backend cpu --telemetry nvml --model random --d-model 1024 \
    --d-ff 2048 --workloads standard --routing-strategy baseline --num-samples-per-workload 2 \
    --batch-size 4 --seq-len 32 --cooldown 0 --warmup-steady 0 --warmup-batches 0 \
    --trace-batches 0 --quiet --no-analyze --energy-counter-ms 0 --out ectr >ectr.log 2>&1 ||
    fail "energy counter: $(tail -3 ectr.log)"
grep -q '"energy_counter_ms": 0' ectr/metadata.json || fail "energy counter: not in metadata"
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["energy_method"] != "counter" { print $c["energy_method"], $c["energy_window_s"]; bad = 1 }
    END { exit bad }' ectr/batches.csv || fail "energy counter: windows did not use the counter"
# SIGHUP (a closed terminal or ssh session) and SIGTERM stop a run like Ctrl-C: the batch in
# progress finishes, every row is whole, metadata says "interrupted", exit 130; --resume
# then completes the run
for sig in HUP TERM; do
    out="sig$sig"
    "$BIN" run "${RUN[@]}" --num-samples-per-workload 200 --out "$out" >"$out.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        [ -f "$out/batches.csv" ] && [ "$(wc -l < "$out/batches.csv")" -gt 10 ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    kill -s "$sig" $pid 2>/dev/null || fail "SIG$sig: the run ended before it could be signalled"
    wait $pid
    rc=$?
    [ $rc -eq 130 ] || fail "SIG$sig: exit $rc, want 130: $(tail -3 "$out.log")"
    grep -q '"status": "interrupted"' "$out/metadata.json" ||
        fail "SIG$sig: status $(grep '"status"' "$out/metadata.json")"
    [ "$(tail -c 1 "$out/batches.csv" | od -An -c | tr -d ' ')" = '\n' ] || fail "SIG$sig: a torn last row"
    ncol=$(head -1 "$out/batches.csv" | awk -F, '{print NF}')
    bad=$(awk -F, -v n="$ncol" 'NF != n' "$out/batches.csv" | wc -l)
    [ "$bad" -eq 0 ] || fail "SIG$sig: $bad rows without the header's $ncol fields"
    rows=$(($(wc -l < "$out/batches.csv") - 1))
    [ "$rows" -lt 200 ] || fail "SIG$sig: the run was not stopped ($rows rows)"
    "$BIN" run "${RUN[@]}" --num-samples-per-workload 200 --out "$out" --resume >"$out.resume.log" 2>&1 ||
        fail "SIG$sig: resume: $(tail -3 "$out.resume.log")"
    [ "$(($(wc -l < "$out/batches.csv") - 1))" -eq 200 ] || fail "SIG$sig: resume should end with 200 rows"
done
# Reproducibility on the simulated GPU: the same flags and seed give a byte-identical
# batches.csv apart from the columns that are wall clock by nature (time stamps are the
# simulated clock and do match; run_id holds the start time; router_overhead_ms is host time
# spent routing; wall_time_unix_s is the epoch time a batch ended); no --seed is the same
# run as --seed 42, the default the help names.
REPRO=(--model random --backend cpu --telemetry sim --num-samples-per-workload 2 --workloads standard
       --routing-strategy baseline,kernel_aware_ttha --trace-batches 0 --quiet --no-analyze)
"$BIN" run --help | grep -q -- "--seed N .*(default 42)" || fail "repro: --help should name seed 42"
"$BIN" run "${REPRO[@]}" --out repro1 >repro1.log 2>&1 || fail "repro1: $(tail -3 repro1.log)"
"$BIN" run "${REPRO[@]}" --out repro2 >repro2.log 2>&1 || fail "repro2: $(tail -3 repro2.log)"
"$BIN" run "${REPRO[@]}" --seed 42 --out repro42 >repro42.log 2>&1 || fail "repro42: $(tail -3 repro42.log)"
"$BIN" run "${REPRO[@]}" --seed 7 --out repro7 >repro7.log 2>&1 || fail "repro7: $(tail -3 repro7.log)"
# the columns to blank, by name from the header
wallclock_cols() { head -1 "$1" | tr , '\n' | grep -nxE 'run_id|router_overhead_ms|wall_time_unix_s' | cut -d: -f1 | paste -sd, -; }
cols=$(wallclock_cols repro1/batches.csv)
[ "$(echo "$cols" | tr , '\n' | wc -l)" -eq 3 ] || fail "repro: run_id, router_overhead_ms or wall_time_unix_s not in the header"
strip() { awk -F, -v OFS=, -v c="$cols" 'BEGIN{n=split(c,k,",")} {for(i=1;i<=n;i++) $k[i]=""; print}' "$1"; }
rows=$(($(wc -l < repro1/batches.csv) - 1))
[ "$rows" -eq 4 ] || fail "repro: $rows rows, want 4"
cmp -s <(strip repro1/batches.csv) <(strip repro2/batches.csv) ||
    fail "repro: two runs with the same flags differ: $(diff <(strip repro1/batches.csv) <(strip repro2/batches.csv) | head -4)"
cmp -s <(strip repro1/batches.csv) <(strip repro42/batches.csv) ||
    fail "repro: no --seed and --seed 42 differ: $(diff <(strip repro1/batches.csv) <(strip repro42/batches.csv) | head -4)"
! cmp -s <(strip repro1/batches.csv) <(strip repro7/batches.csv) || fail "repro: --seed 7 made the same rows as 42"
grep -q '"weights_seed": 42' repro1/metadata.json || fail "repro: weights_seed is not the run's seed"

# --resume refuses a run directory made with another configuration and names each change;
# nothing is written to it
cp repro1/batches.csv repro1.before
"$BIN" run "${REPRO[@]}" --out repro1 --resume --d-model 256 --ttha-target-power 250 >resume_changed.log 2>&1
rc=$?
[ $rc -eq 1 ] || fail "resume changed: exit $rc, want 1: $(tail -3 resume_changed.log)"
grep -qF "model.d_model was 128, now 256" resume_changed.log || fail "resume changed: d_model not named: $(cat resume_changed.log)"
grep -qF "router.power_target_w was 400, now 250" resume_changed.log || fail "resume changed: target power not named: $(cat resume_changed.log)"
"$BIN" run "${REPRO[@]}" --out repro1 --resume --seed 7 --workloads skewed >resume_seed.log 2>&1 && fail "resume with another seed was accepted"
grep -qF "seed was 42, now 7" resume_seed.log && grep -qF "workloads was standard, now skewed" resume_seed.log ||
    fail "resume seed/workloads: $(cat resume_seed.log)"
cmp -s repro1/batches.csv repro1.before || fail "resume changed: batches.csv was modified by a refused resume"
"$BIN" run "${REPRO[@]}" --out repro1 --resume >resume_same.log 2>&1 || fail "resume same flags: $(tail -3 resume_same.log)"

# the decoder LM: the reference Mixtral checkpoint on its token file, through the CLI; the
# summary gives perplexity per strategy; baseline's nll equals nll_baseline in every row
LM=(--model "$SRC/tests/data/lm/mixtral" --tokens "$SRC/tests/data/lm/text.tokens" --backend cpu
    --telemetry sim --seq-len 8 --batch-size 2 --num-samples-per-workload 2 --warmup-batches 0
    --trace-batches 0 --cooldown 0 --warmup-steady 0 --no-analyze
    --routing-strategy baseline,static_optimal --workloads standard,skewed)
"$BIN" run "${LM[@]}" --out lm >lm.log 2>&1 || fail "lm run: $(tail -5 lm.log)"
grep -qF "quality (decoder LM" lm.log || fail "lm run: no perplexity table: $(tail -20 lm.log)"
grep -qE "^standard +static_optimal +[0-9]+ +[0-9.]+ +[0-9.]+ " lm.log ||
    fail "lm run: no perplexity row for static_optimal: $(grep -A8 quality lm.log)"
grep -qF "at expert shape mixtral 4096x14336" lm.log || fail "lm run: the summary does not name the shape"
col() { head -1 lm/batches.csv | tr , '\n' | grep -nx "$1" | cut -d: -f1; }
awk -F, -v s="$(col strategy)" -v a="$(col nll)" -v b="$(col nll_baseline)" \
    'NR > 1 && $s == "baseline" && $a != $b {bad = 1} NR > 1 && $a == "" {bad = 1} END {exit bad}' \
    lm/batches.csv || fail "lm run: a baseline row with nll != nll_baseline, or an empty nll"
grep -q '"kind": "lm"' lm/metadata.json || fail "lm run: metadata does not say the model is the LM"
# flags that do not fit the model are usage errors
"$BIN" run "${LM[@]}" --out lm_bad --d-model 64 >lm_bad.log 2>&1; rc=$?
[ $rc -eq 2 ] && grep -qF -- "--d-model applies to the random block" lm_bad.log || fail "lm + --d-model: exit $rc: $(cat lm_bad.log)"
"$BIN" run --model random --tokens x.tokens --out lm_bad2 >lm_bad2.log 2>&1; rc=$?
[ $rc -eq 2 ] && grep -qF -- "--tokens applies to a decoder LM" lm_bad2.log || fail "random + --tokens: exit $rc: $(cat lm_bad2.log)"
"$BIN" run "${LM[@]}" --out lm_bad3 --expert-shape 4096 >lm_bad3.log 2>&1; rc=$?
[ $rc -eq 2 ] && grep -qF "expected trained, mixtral" lm_bad3.log || fail "--expert-shape 4096: exit $rc: $(cat lm_bad3.log)"
"$BIN" run "${LM[@]}" --out lm_bad4 --tokens "$SRC/data/corpus/test.tokens" >lm_bad4.log 2>&1; rc=$?
[ $rc -eq 1 ] && grep -qF "vocabulary of 4096" lm_bad4.log && grep -qF "vocab_size 211" lm_bad4.log ||
    fail "a token file of another vocabulary: exit $rc: $(cat lm_bad4.log)"

# one type per expert (the random block): the run bills each expert at its own type and
# logs "mixed"; a list of the wrong length or a bad entry are usage errors
"$BIN" run "${RUN[@]}" --expert-type q4,q4,q4,q4,fp16,fp16,fp16,fp16 --num-samples-per-workload 2 \
    --routing-strategy baseline,hierarchical_adaptive --out mixed >mixed.log 2>&1 ||
    fail "mixed types: $(tail -3 mixed.log)"
awk -F, -v c="$(head -1 mixed/batches.csv | tr , '\n' | grep -nx expert_type | cut -d: -f1)" \
    'NR > 1 && $c != "mixed" {bad = 1} END {exit bad}' mixed/batches.csv ||
    fail "mixed types: expert_type is not 'mixed' in every row"
grep -qF '"expert_type": "mixed"' mixed/metadata.json || fail "mixed types: metadata: $(grep -A3 expert_type mixed/metadata.json | head -8)"
for bad in "q4,q4,fp16:3 types listed but --num-experts is 8" "q4,xx,q4,q4,q4,q4,q4,q4:entry 2 'xx'"; do
    "$BIN" run "${RUN[@]}" --expert-type "${bad%%:*}" --out mixed_bad >mixed_bad.log 2>&1; rc=$?
    [ $rc -eq 2 ] && grep -qF -- "${bad#*:}" mixed_bad.log || fail "--expert-type ${bad%%:*}: exit $rc: $(cat mixed_bad.log)"
done
# one type per expert on the decoder LM (its 5 experts, every MoE layer alike): rows "mixed",
# the types in metadata, hierarchical_adaptive's tiers move routing and cut the simulated
# energy per token; a list of another length than the model's experts is refused at load
LMX=(--model "$SRC/tests/data/lm/mixtral" --tokens "$SRC/tests/data/lm/text.tokens" --backend cpu
    --telemetry sim --seq-len 8 --batch-size 2 --num-samples-per-workload 2 --warmup-batches 0
    --trace-batches 0 --cooldown 0 --warmup-steady 0 --no-analyze --workloads standard
    --group-size 4 --routing-strategy baseline,hierarchical_adaptive)
"$BIN" run "${LMX[@]}" --expert-type fp16,q4,q2,q4,fp16 --out mixed_lm >mixed_lm.log 2>&1 ||
    fail "mixed types, LM: $(tail -5 mixed_lm.log)"
python3 - mixed_lm <<'PY' || fail "mixed types, LM: $(tail -12 mixed_lm.log)"
import csv, json, sys
meta = json.load(open(sys.argv[1] + "/metadata.json"))
types = meta["config"]["model"]["expert_types"]
assert types == ["fp16", "q4", "q2", "q4", "fp16"], "metadata expert_types %s" % types
rows = list(csv.DictReader(open(sys.argv[1] + "/batches.csv")))
assert rows and all(r["expert_type"] == "mixed" for r in rows), "expert_type not mixed"
def mean(s, k):
    v = [float(r[k]) for r in rows if r["strategy"] == s]
    return sum(v) / len(v)
assert mean("hierarchical_adaptive", "topk_agreement_with_baseline") < 1.0, "routing unchanged"
assert mean("hierarchical_adaptive", "energy_j_per_token") < mean("baseline", "energy_j_per_token"), \
    "hierarchical_adaptive does not lower the simulated energy per token"
PY
"$BIN" run "${LMX[@]}" --expert-type q4,q4,q4 --out mixed_lm_bad >mixed_lm_bad.log 2>&1; rc=$?
[ $rc -eq 1 ] && grep -qF -- "--expert-type lists 3 types, one per expert, but model" mixed_lm_bad.log ||
    fail "--expert-type LIST of 3 for a model of 5: exit $rc: $(cat mixed_lm_bad.log)"

# lower-precision copies (--expert-copy): under pressure (a power target far below the draw)
# hierarchical_adaptive runs every expert as its q4 copy at decode; with no budget, and every
# expert at one cost as run, the routing is the baseline's, the scores differ and the
# simulated energy per token falls
"$BIN" run "${LMX[@]}" --expert-type fp16 --expert-copy q4:0-4 --lm-steps decode --budget none \
    --ttha-target-power 20 --out copy_lm >copy_lm.log 2>&1 || fail "copies, LM: $(tail -5 copy_lm.log)"
python3 - copy_lm <<'PY' || fail "copies, LM: $(tail -12 copy_lm.log)"
import csv, json, sys
meta = json.load(open(sys.argv[1] + "/metadata.json"))
cp = meta["config"]["expert_copies"]
assert cp == {"type": "q4", "experts": [0, 1, 2, 3, 4]}, "metadata expert_copies %s" % cp
rows = list(csv.DictReader(open(sys.argv[1] + "/batches.csv")))
def mean(s, k):
    v = [float(r[k]) for r in rows if r["strategy"] == s]
    return sum(v) / len(v)
h = [r for r in rows if r["strategy"] == "hierarchical_adaptive"]
assert h and all(float(r["topk_agreement_with_baseline"]) == 1.0 for r in h), "routing changed"
assert all(float(r["copy_share"]) == 1.0 for r in h), "copy_share %s" % [r["copy_share"] for r in h]
assert all(float(r["copy_share"]) == 0.0 for r in rows if r["strategy"] == "baseline"), "baseline ran copies"
assert any(r["nll"] != r["nll_baseline"] for r in h), "no copy ran: the scores are the baseline's"
assert mean("hierarchical_adaptive", "energy_j_per_token") < 0.9 * mean("baseline", "energy_j_per_token"), \
    "the copies do not lower the simulated energy per token"
PY
for bad in "q4:7:1:expert 7, but model" "bf16:2:copy type 'bf16' is not fp16, q4 or q2" \
    "q4:x:2:'x' is not an expert" "q4::2:no expert listed"; do
    arg=${bad%:*:*}; want=${bad##*:}; code=${bad%:*}; code=${code##*:}
    "$BIN" run "${LMX[@]}" --expert-copy "$arg" --out copy_bad >copy_bad.log 2>&1; rc=$?
    [ $rc -eq "$code" ] && grep -qF -- "$want" copy_bad.log ||
        fail "--expert-copy $arg: exit $rc (want $code): $(cat copy_bad.log)"
done
# a copy type the cost model lacks is refused before the run starts
python3 - "$SRC/data/h100_cost_model.json" noq2.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["entries"] = [e for e in d["entries"] if e["expert_type"] != "q2"]
json.dump(d, open(sys.argv[2], "w"))
PY
"$BIN" run "${LMX[@]}" --kernel-cost-model-json noq2.json --expert-copy q2 --out copy_noq2 \
    >copy_noq2.log 2>&1; rc=$?
[ $rc -eq 1 ] && grep -qF "has no q2/fused expert" copy_noq2.log && [ ! -s copy_noq2/batches.csv ] ||
    fail "--expert-copy q2 without q2 in the cost model: exit $rc: $(tail -3 copy_noq2.log)"
"$BIN" run --model random --expert-copy q4 --out copy_rand >copy_rand.log 2>&1; rc=$?
[ $rc -eq 2 ] && grep -qF -- "--expert-copy applies to a decoder LM" copy_rand.log ||
    fail "--expert-copy on the random block: exit $rc: $(cat copy_rand.log)"

echo "cli_run: ok"

#!/usr/bin/env bash
# Train thermoe's default model and its dense baseline on one GPU (tools/train_moe.py), with
# nothing downloaded: the data folder (tools/prepare_default_data.sh makes .corpus/tokens)
# holds tokenizer.json and the token files.
#
#   bench/train_default_model.sh [DATA_DIR]          (default .corpus/tokens)
#
# PHASE=moe    the MoE (MixtralForCausalLM), schedule calibrated to MOE_BUDGET_S seconds
#              of training loop (default 420)
# PHASE=dense  the dense baseline (MistralForCausalLM, same active parameters) for the
#              MoE's number of steps (DENSE_STEPS, else read from the MoE's metrics.json in
#              WORK, else as many as fit), capped at DENSE_BUDGET_S seconds (default 240;
#              if the steps do not fit, the schedule is shortened to fit and metrics.json
#              says so)
# PHASE=all    both, one after the other (default)
# Each phase also scores the saved checkpoint (validation, test and test by domain) with
# transformers in fp32 and counts expert usage on the test files.
#
# Results go to $OUT (default out/default_model): per model NAME.tar (the checkpoint folder:
# config.json, model.safetensors in bf16, tokenizer.json, metrics.json, loss.csv and, for
# the MoE, expert_usage.svg), NAME-metrics.json and NAME.log; summary.txt with the table
# printed last. Checkpoints are written in WORK (default /tmp/thermoe_default_model) first.
# TRAIN_ARGS adds flags to both runs (e.g. a tiny configuration for a CPU smoke test);
# PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-.corpus/tokens}
PHASE=${PHASE:-all}
MOE_BUDGET_S=${MOE_BUDGET_S:-420}
DENSE_BUDGET_S=${DENSE_BUDGET_S:-240}
DENSE_STEPS=${DENSE_STEPS:-}
OUT=${OUT:-out/default_model}
WORK=${WORK:-/tmp/thermoe_default_model}
PY=${PYTHON:-python3}
TRAIN_ARGS=${TRAIN_ARGS:-}
MAX_FILE=$((16 * 1024 * 1024))

case "$PHASE" in all|moe|dense) ;; *) echo "PHASE must be all, moe or dense" >&2; exit 2;; esac
for f in tokenizer.json train.tokens validation.tokens test.tokens; do
  [ -f "$DATA/$f" ] || { echo "train_default_model: $DATA/$f is missing (run" \
                              "tools/prepare_default_data.sh and carry .corpus/tokens)" >&2; exit 1; }
done
sums=$(pwd)/data/corpus/TOKENS.sha256
if [ -f "$sums" ] && ! (cd "$DATA" && grep -E ' (tokenizer.json|train.tokens|validation.tokens|test.tokens)$' \
                        "$sums" | sha256sum --quiet -c -); then
  echo "train_default_model: $DATA differs from data/corpus/TOKENS.sha256 (going on)" >&2
fi
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  "$PY" -c 'import torch, transformers, sys; print("python", sys.version.split()[0], "torch",
torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
} | tee "$OUT/environment.txt"

# pack NAME: the checkpoint folder as NAME.tar (split into parts under 16 MiB if larger)
pack() {
  local name=$1
  tar -C "$WORK" -cf "$OUT/$name.tar" "$name"
  cp "$WORK/$name/metrics.json" "$OUT/$name-metrics.json"
  if [ "$(stat -c %s "$OUT/$name.tar")" -gt "$MAX_FILE" ]; then
    echo "train_default_model: $name.tar is over 16 MiB; splitting it" >&2
    split -b 15M -d "$OUT/$name.tar" "$OUT/$name.tar.part"
    rm "$OUT/$name.tar"
  fi
}

if [ "$PHASE" = all ] || [ "$PHASE" = moe ]; then
  rm -rf "$WORK/moe"
  # shellcheck disable=SC2086
  "$PY" tools/train_moe.py --data "$DATA" --out "$WORK/moe" --time-budget-s "$MOE_BUDGET_S" \
        $TRAIN_ARGS 2>&1 | tee "$OUT/moe.log"
  pack moe
fi

if [ "$PHASE" = all ] || [ "$PHASE" = dense ]; then
  if [ -z "$DENSE_STEPS" ] && [ -f "$WORK/moe/metrics.json" ]; then
    DENSE_STEPS=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"]["steps"])' \
                  "$WORK/moe/metrics.json")
  fi
  rm -rf "$WORK/dense"
  # shellcheck disable=SC2086
  "$PY" tools/train_moe.py --data "$DATA" --out "$WORK/dense" --dense \
        --time-budget-s "$DENSE_BUDGET_S" ${DENSE_STEPS:+--steps "$DENSE_STEPS"} \
        $TRAIN_ARGS 2>&1 | tee "$OUT/dense.log"
  pack dense
fi

"$PY" - "$WORK" <<'PYEOF' | tee "$OUT/summary.txt"
import json, os, sys
work = sys.argv[1]
rows = []
for name in ("moe", "dense"):
    p = os.path.join(work, name, "metrics.json")
    if not os.path.exists(p):
        continue
    m = json.load(open(p))
    t, e, n = m["training"], m["eval"], m["parameters"]
    ppl = lambda k: f"{e[k]['perplexity']:.3f}" if k in e else "-"  # noqa: E731
    rows.append([name, m["architecture"], f"{n['total'] / 1e6:.2f}M",
                 f"{n['active_per_token'] / 1e6:.2f}M",
                 f"{m['model_safetensors_bytes'] / 1e6:.2f}MB",
                 f"{t['steps']}/{t['schedule_steps']}", t["stop"],
                 f"{t['tokens'] / 1e6:.0f}M", f"{t['train_loop_s']:.0f}", ppl("validation"),
                 ppl("test"), ppl("test-kjv"), ppl("test-shakespeare"), m["device"]])
head = ["model", "class", "params", "active", "bf16", "steps/sched", "stop", "tokens",
        "train_s", "val_ppl", "test_ppl", "kjv_ppl", "shksp_ppl", "device"]
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
for r in rows:
    print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
PYEOF
ls -l "$OUT"
cat "$OUT/summary.txt"

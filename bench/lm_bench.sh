#!/usr/bin/env bash
# The decoder LM on one GPU against transformers and the bytes floor (docs/cuda.md "Decoder
# LM"): builds lm_bench and test_cuda_lm, runs the CUDA decoder tests, then a Mixtral-shaped
# model of LAYERS layers (default 4) with fp16 and q4 experts and transformers'
# MixtralForCausalLM of the same shape (bf16, random init), and prints one markdown table.
# About 4 minutes on an H100. usage: bash bench/lm_bench.sh [LAYERS] [BUILD_DIR]
set -euo pipefail
LAYERS=${1:-4}
BUILD=${2:-build-bench}
cd "$(dirname "$0")/.."
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTHERMOE_CUDA=ON >"$BUILD.cfg.log" 2>&1 ||
    { tail -20 "$BUILD.cfg.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target lm_bench test_cuda_lm thermoe 2>&1 | grep -v "ptxas warning" | tail -3
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
echo "== test_cuda_lm (CUDA decoder vs CPU reference and transformers) =="
"$BUILD/test_cuda_lm" 2>&1 | grep -E "x std|perplexity|PASSED|FAILED|OK|SKIPPED|ERROR" || true
echo
echo "== speed: Mixtral shape, $LAYERS layers, 32-token prompts =="
ROWS=$(mktemp)
for t in fp16 q4; do
    "$BUILD/lm_bench" --layers "$LAYERS" --type "$t" >>"$ROWS"
done
python3 bench/ref/lm_ref.py --layers "$LAYERS" >>"$ROWS" || echo "(transformers reference failed)" >&2
echo
echo "| implementation | measure | tokens/s | bytes floor tokens/s | of floor |"
echo "|---|---|---|---|---|"
cat "$ROWS"
rm -f "$ROWS"

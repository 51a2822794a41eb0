#!/usr/bin/env bash
# ctest's "python" test: pytest over tests/python with the interpreter CMake chose ($1).
# Skips (exit 77, saying why) when no interpreter with cffi, numpy, pandas and pytest was
# found at configure time; torch and transformers tests skip inside pytest when absent.
set -u
py="${1:-}"
if [ -z "$py" ]; then
    echo "SKIP: no python3 that imports cffi, numpy, pandas and pytest (bash scripts/deps.sh" \
         "installs python3-cffi python3-numpy python3-pandas python3-pytest; or configure" \
         "with -DTHERMOE_PYTHON=/path/to/python)"
    exit 77
fi
cd "$(dirname "$0")" || exit 1
exec "$py" -m pytest -q -p no:cacheprovider -rs .

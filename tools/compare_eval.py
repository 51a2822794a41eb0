#!/usr/bin/env python3
"""Compare `thermoe eval --json` with the perplexity transformers computed for the same
token file (tools/train_moe.py's metrics.json, "eval" section) and fail if they differ by
more than --tol (relative, default 0.5%) or scored a different number of tokens.

usage:
  thermoe eval --model models/default --tokens data/corpus/test.tokens --json > thermoe.json
  tools/compare_eval.py models/default/metrics.json thermoe.json [--split test] [--tol 0.005]
"""
import argparse
import json
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description="thermoe eval vs transformers perplexity")
    ap.add_argument("metrics", help="metrics.json written by tools/train_moe.py")
    ap.add_argument("thermoe", help="output of thermoe eval --json")
    ap.add_argument("--split", default="test", help="which token file (default test)")
    ap.add_argument("--tol", type=float, default=0.005, help="relative tolerance (0.005)")
    a = ap.parse_args(argv)
    with open(a.metrics) as f:
        ref = json.load(f)["eval"][a.split]
    with open(a.thermoe) as f:
        got = json.load(f)
    rel = got["perplexity"] / ref["perplexity"] - 1
    same_tokens = got["tokens_scored"] == ref["tokens_scored"] and got["seq_len"] == ref["seq_len"]
    print(f"{a.split}: thermoe {got['perplexity']:.6f} ({got['tokens_scored']} tokens, "
          f"seq_len {got['seq_len']}), transformers {ref['perplexity']:.6f} "
          f"({ref['tokens_scored']} tokens, seq_len {ref['seq_len']}): relative difference "
          f"{rel:+.3e} (tolerance {a.tol:g})")
    if not same_tokens:
        print("compare_eval: the two scored different windows", file=sys.stderr)
        return 1
    return 0 if abs(rel) <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())

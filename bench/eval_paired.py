#!/usr/bin/env python3
"""Two `thermoe eval --windows-csv` files of the same token file compared window by window: the
mean per-token NLL change B - A with its 95% t interval over windows (the windows are the unit,
as for eval's own interval), and the perplexity ratio exp(change) with its interval. The
windows must be the same (index and tokens); a mismatch is an error.

usage: python3 bench/eval_paired.py A.csv B.csv [--names A,B]
"""
import argparse
import csv
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tstats import mean_ci  # noqa: E402


def read(path):
    """{window: (tokens, nll_mean)} of one file"""
    out = {}
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        if r.fieldnames != ["window", "tokens", "nll_mean"]:
            sys.exit("eval_paired: %s: expected the header window,tokens,nll_mean" % path)
        for line, row in enumerate(r, start=2):
            try:
                out[int(row["window"])] = (int(row["tokens"]), float(row["nll_mean"]))
            except (TypeError, ValueError):
                sys.exit("eval_paired: %s:%d: expected window,tokens,nll_mean numbers" % (path, line))
    if not out:
        sys.exit("eval_paired: %s: no windows" % path)
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", default="A,B")
    args = ap.parse_args(argv[1:])
    na, nb = (args.names.split(",") + ["B"])[:2]
    a, b = read(args.a), read(args.b)
    if sorted(a) != sorted(b):
        sys.exit("eval_paired: the two files hold different windows (%d and %d)" % (len(a), len(b)))
    bad = [w for w in a if a[w][0] != b[w][0]]
    if bad:
        sys.exit("eval_paired: window %d scores %d tokens in one file and %d in the other"
                 % (bad[0], a[bad[0]][0], b[bad[0]][0]))
    d = [b[w][1] - a[w][1] for w in sorted(a)]
    m, h = mean_ci(d)
    tok = sum(t for t, _ in a.values())
    nll_a = sum(t * x for t, x in a.values()) / tok
    nll_b = sum(t * x for t, x in b.values()) / tok
    print("| | windows | nll %s | nll %s | change (nats/token, 95%% CI) | perplexity ratio (95%% CI) |"
          % (na, nb))
    print("|---|--:|--:|--:|---|---|")
    print("| %s vs %s | %d | %.6f | %.6f | %+.6f [%+.6f, %+.6f] | %+.4f%% [%+.4f%%, %+.4f%%] |"
          % (nb, na, len(d), nll_a, nll_b, m, m - h, m + h, 100 * math.expm1(m),
             100 * math.expm1(m - h), 100 * math.expm1(m + h)))


if __name__ == "__main__":
    main(sys.argv)

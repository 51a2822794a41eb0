#!/usr/bin/env python3
"""The expert kernel's weight ring, side by side: bench_moe --short run once per ring depth
(THERMOE_EXPERT_STAGES=S, written to bench_short_stS.md), one row per (what, shape, type,
path, tokens) with the median us at each depth and the change of the best depth against
depth 0 (the weights pipelined in registers). Rows at 512 tokens or more (no ring there) and
rows missing at some depth are left out.

usage: python3 bench/stages_table.py DIR   (reads DIR/bench_short_st*.md)
       python3 bench/stages_table.py --compare BASE.md OTHER.md
         (two bench_moe tables, e.g. without and with THERMOE_ACT8=1: the rows both have
         under 512 tokens, each one's us and OTHER's change against BASE)
"""
import glob
import os
import re
import sys


def read(path):
    """{(what, shape, type, path, tokens): median us} of one bench_moe table"""
    rows = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 10 or not cells[4].isdigit():
                continue
            try:
                us = float(cells[5])
            except ValueError:
                continue
            rows[tuple(cells[:4]) + (int(cells[4]),)] = us
    return rows


def compare(base_path, other_path):
    base, other = read(base_path), read(other_path)
    keys = [k for k in base if k[4] < 512 and k in other]
    if not keys:
        sys.exit("stages_table: no rows in common between %s and %s" % (base_path, other_path))
    print("| what | shape | type | path | tokens | us, %s | us, %s | change |"
          % (os.path.basename(base_path), os.path.basename(other_path)))
    print("|---|---|---|---|--:|--:|--:|--:|")
    for k in keys:
        change = 100.0 * (other[k] - base[k]) / base[k]
        print("| %s | %s | %s | %s | %d | " % k + "%.1f | %.1f | %+.1f%% |" % (base[k], other[k], change))


def main(argv):
    if len(argv) == 4 and argv[1] == "--compare":
        return compare(argv[2], argv[3])
    if len(argv) != 2:
        sys.exit("usage: stages_table.py DIR | --compare BASE.md OTHER.md")
    runs = {}
    for p in glob.glob(os.path.join(argv[1], "bench_short_st*.md")):
        m = re.search(r"bench_short_st(-?\d+)\.md$", p)
        if m:
            runs[int(m.group(1))] = read(p)
    if 0 not in runs or len(runs) < 2:
        sys.exit("stages_table: need bench_short_st0.md and at least one other depth in %s" % argv[1])
    depths = sorted(runs)
    keys = [k for k in runs[0] if k[4] < 512 and all(k in runs[d] for d in depths)]
    print("| what | shape | type | path | tokens | " + " | ".join("us, ring %d" % d for d in depths)
          + " | best | change |")
    print("|---|---|---|---|--:|" + "--:|" * len(depths) + "--:|--:|")
    for k in keys:
        us = [runs[d][k] for d in depths]
        best = min(range(len(depths)), key=lambda i: us[i])
        change = 100.0 * (us[best] - us[0]) / us[0]
        print("| %s | %s | %s | %s | %d | " % k + " | ".join("%.1f" % u for u in us)
              + " | %d | %+.1f%% |" % (depths[best], change))


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""How each strategy's energy window compares with baseline's in a `thermoe run` on real
telemetry, from batches.csv alone: per strategy, the window length (ms), the energy (J) and
power (W) of a batch and their change against baseline, the time between one batch's window
and the next ("outside", ms: the second forward, the host work after it, the router's update,
the next batch's preparation; the rows' idle_before_window_s where the run recorded it, else
the wall clock between windows of the same strategy and repeat), and the "offset": the strategy's
window energy minus baseline's measured power times the strategy's own window length (J, and
as % of baseline's window energy). A strategy that only makes the window shorter or longer at
baseline's power has an offset of 0; one whose power differs from baseline's for another
reason (a lower reading after a longer idle gap before the window, a routing that changes
the draw) has the offset of that difference. Means over every logged batch. Standard library
only.
usage: python3 bench/window_gap.py RUN_DIR|batches.csv[.gz]...
"""
import csv
import gzip
import os
import sys


def rows_of(path):
    if os.path.isdir(path):
        for name in ("batches.csv", "batches.csv.gz"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return path, list(csv.DictReader(f))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def mean(v):
    v = [x for x in v if x == x]
    return sum(v) / len(v) if v else float("nan")


def table(path):
    path, rows = rows_of(path)
    need = {"strategy", "repeat", "energy_j", "energy_window_s", "wall_time_unix_s"}
    if not rows or not need <= set(rows[0]):
        sys.exit(f"{path}: not a batches.csv with {', '.join(sorted(need))}")
    by = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r)
    if "baseline" not in by:
        sys.exit(f"{path}: no baseline rows")

    def agg(s):
        rr = by[s]
        win = mean([num(r["energy_window_s"]) * 1e3 for r in rr])
        e = mean([num(r["energy_j"]) for r in rr])
        gaps = []
        if "idle_before_window_s" in rr[0]:  # recorded by the run itself
            gaps = [num(r["idle_before_window_s"]) * 1e3 for r in rr]
        else:  # older runs: from the wall clock between windows of the same combination
            for a, b in zip(rows, rows[1:]):
                if a["strategy"] == b["strategy"] == s and a["repeat"] == b["repeat"]:
                    cyc = (num(b["wall_time_unix_s"]) - num(a["wall_time_unix_s"])) * 1e3
                    gaps.append(cyc - num(b["energy_window_s"]) * 1e3)
        return win, e, e / win * 1e3, mean(gaps), len(rr)

    tb, eb, pb, gb, _ = agg("baseline")
    out = [f"### {path}", "",
           "| strategy | batches | window (ms) | energy (J) | power (W) | time | energy | power "
           "| outside (ms) | offset (J) | offset / baseline energy |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for s in ["baseline"] + sorted(set(by) - {"baseline"}):
        t, e, p, g, n = agg(s)
        off = e - pb * t / 1e3
        rel = lambda a, b: f"{100 * (a / b - 1):+.1f}%"
        out.append(f"| {s} | {n} | {t:.1f} | {e:.2f} | {p:.1f} | {rel(t, tb)} | {rel(e, eb)} "
                   f"| {rel(p, pb)} | {g:.1f} | {off:+.1f} | {100 * off / eb:+.1f}% |")
    return "\n".join(out) + "\n"


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    print("\n".join(table(p) for p in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

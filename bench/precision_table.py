#!/usr/bin/env python3
"""Precision comparison from the processes' own printed summaries, for when their run folders
did not come back: bench/energy_budget.sh's fp16_prec_N / q4_prec_N processes (one
`thermoe run` each, --seed N: both types score the same text) print a summary per process;
this reads those lines from logs or a saved call output and compares every strategy@type with
baseline@fp16. The unit is the process (an independent repeat; its batches are not):
- energy per token: per-process means, Welch t interval of the relative change (delta method
  on the ratio of means is not used: the interval is of the difference, divided by the
  baseline mean);
- perplexity: paired by seed (the same text at both types), the per-seed percent change,
  t interval over the pairs;
- p99 latency: the mean of the per-process p99s, percent change;
- GPU / HBM peak: mean of per-process peaks, difference in degrees C;
- active experts per layer step: mean.
Where the folders did come back, `thermoe analyze` on them is the fuller analysis.
Standard library only.
usage: python3 bench/precision_table.py FILE...   (logs or output holding '== NAME: ...' lines)
"""
import math
import re
import statistics
import sys

from tstats import mean_ci, tq

def parse(paths):
    """{(strategy, type): {seed: {field: value}}} from the summary rows after each header."""
    runs, cur = {}, None
    head = re.compile(r"^== (\S+): thermoe run .*--expert-type (\S+) --seed (\d+)")
    for p in paths:
        with open(p, errors="replace") as f:
            for line in f:
                m = head.match(line)
                if m:
                    cur = (m.group(2), int(m.group(3)))
                    continue
                w = line.split()
                if cur is None or len(w) < 2 or w[0] != "standard":
                    continue
                etype, seed = cur
                d = runs.setdefault((w[1], etype), {}).setdefault(seed, {})
                if len(w) >= 6 and w[5].endswith("%"):  # perplexity row
                    d["ppl"] = float(w[3])
                elif len(w) == 12:  # energy row (run's console summary)
                    d.update(mj=float(w[3]), p99=float(w[6]), gpu=float(w[7]),
                             hbm=float(w[8]), experts=float(w[11]))
    return runs


def welch(a, b):
    """difference of means a - b and its 95% half-width (Welch-Satterthwaite df)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return statistics.mean(a) - statistics.mean(b), 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return statistics.mean(a) - statistics.mean(b), tq(df) * se


def main(paths):
    runs = parse(paths)
    base = runs.get(("baseline", "fp16"))
    if not base:
        sys.exit("no baseline fp16 process in the input")
    seeds = sorted(base)
    bm = [base[s]["mj"] for s in seeds]
    print(f"Against baseline@fp16 ({len(seeds)} processes, seeds {seeds}); unit: the process. "
          "Energy: Welch 95% CI over processes; perplexity: paired by seed (same text), t CI "
          "over the pairs; temperatures: mean peak difference in C.\n")
    print("| group | n | mJ/token | energy/token | perplexity | p99 latency | GPU peak | "
          "HBM peak | experts/layer step |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    order = {"fp16": 0, "bf16": 1, "q4": 2, "q2": 3}
    keys = sorted(runs, key=lambda k: (k[0] != "baseline", order.get(k[1], 9), k[0]))
    for st, et in keys:
        g = runs[(st, et)]
        ss = sorted(s for s in g if "mj" in g[s])
        mj = [g[s]["mj"] for s in ss]
        row = f"| {st}@{et} | {len(ss)} | {statistics.mean(mj):.2f} |"
        if (st, et) == ("baseline", "fp16"):
            e = "-"
            p = "-"
        else:
            d, h = welch(mj, bm) if len(mj) > 1 and len(bm) > 1 else (math.nan, math.nan)
            m0 = statistics.mean(bm)
            e = f"{100 * d / m0:+.1f}% [{100 * (d - h) / m0:+.1f}, {100 * (d + h) / m0:+.1f}]"
            pairs = [100 * (g[s]["ppl"] / base[s]["ppl"] - 1) for s in ss
                     if s in base and "ppl" in g[s] and "ppl" in base[s]]
            if len(pairs) > 1:
                pm, ph = mean_ci(pairs)
                p = f"{pm:+.2f}% [{pm - ph:+.2f}, {pm + ph:+.2f}] ({len(pairs)} pairs)"
            else:
                p = "n/a"
        mean = lambda k, src=g, sl=ss: statistics.mean(src[s][k] for s in sl)
        bmean = lambda k: statistics.mean(base[s][k] for s in seeds)
        lat = f"{100 * (mean('p99') / bmean('p99') - 1):+.1f}%"
        row += (f" {e} | {p} | {lat} | {mean('gpu') - bmean('gpu'):+.1f} C | "
                f"{mean('hbm') - bmean('hbm'):+.1f} C | {mean('experts'):.2f} |")
        print(row)
    print(f"\nbaseline@fp16: {statistics.mean(bm):.2f} mJ/token, GPU peak "
          f"{statistics.mean(base[s]['gpu'] for s in seeds):.1f} C, HBM peak "
          f"{statistics.mean(base[s]['hbm'] for s in seeds):.1f} C (means over processes)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

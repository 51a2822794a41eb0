#!/usr/bin/env python3
"""The energy-quality frontier of bench/energy_budget.sh's GPU runs: for every run folder
given (each analysed by `thermoe analyze RUN --out RUN/report`), one row per strategy
against the run's baseline: energy per token change, average power change, latency mean
change, perplexity change (each with its 95% CI over the independent repeats, from
comparisons.csv) and the peak GPU / HBM temperature change in degrees; the budget a run
used is read from its metadata. Then a gnuplot script of energy change against perplexity
change, one point set per run and strategy (frontier.gp, frontier.dat), when --plot DIR is
given. A RUN_DIR may also be a folder holding a merged report (`thermoe analyze RUN...
--out DIR/report`, e.g. runs at fp16 and q4: names strategy@type) and one run's
metadata.json. Standard library only.
usage: python3 bench/frontier_table.py [--plot DIR] RUN_DIR..."""
import csv
import json
import math
import os
import sys

def budget_of(run, strategy):
    """The budget a strategy ran at: predictive_thermal's base budget (it holds it while the
    GPU is below its target), static_optimal's fitted KL bound; the others set their own. A
    name from a merge of runs at several expert types ("predictive_thermal@q4") is its
    strategy's."""
    strategy = strategy.split("@")[0]
    with open(os.path.join(run, "metadata.json")) as f:
        cfg = json.load(f).get("config", {})
    r = cfg.get("router", cfg)
    if strategy == "static_optimal":
        return f"kl bound {r.get('kl_bound')}"
    if strategy != "predictive_thermal":
        return "-"
    kind = r.get("budget", "?")
    if kind == "kl":
        return f"kl {r.get('kl_base')}"
    if kind == "tau":
        return f"tau {r.get('tau_base')}"
    return str(kind)


def comparisons(run):
    p = os.path.join(run, "report", "comparisons.csv")
    if not os.path.isfile(p):
        sys.exit(f"{p}: missing (run `thermoe analyze {run} --out {run}/report` first)")
    out = {}
    with open(p, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["strategy"], {})[row["metric"]] = row
    return out


def pct(row):
    if row is None or row["pct_change"] in ("", "nan"):
        return "n/a", math.nan
    v = float(row["pct_change"])
    lo, hi = row["pct_ci_lo"], row["pct_ci_hi"]
    ci = f" [{float(lo):+.1f}, {float(hi):+.1f}]" if lo not in ("", "nan") else ""
    return f"{v:+.1f}%{ci}", v


def deg(row):
    if row is None or row["diff"] in ("", "nan"):
        return "n/a"
    return f"{float(row['diff']):+.1f} C"


def metric(rows, name):
    return rows.get(name)


def main(argv):
    plot = None
    if len(argv) > 2 and argv[1] == "--plot":
        plot, argv = argv[2], [argv[0]] + argv[3:]
    runs = argv[1:]
    if not runs:
        sys.exit(__doc__)
    print("| run | budget | strategy | energy/token | average power | latency mean | "
          "perplexity | peak GPU | peak HBM |")
    print("|---|---|---|--:|--:|--:|--:|--:|--:|")
    points = []
    for run in runs:
        for st, rows in sorted(comparisons(run).items()):
            b = budget_of(run, st)
            e, ev = pct(metric(rows, "energy_per_token"))
            pw, _ = pct(metric(rows, "power_avg"))
            la, _ = pct(metric(rows, "latency_mean"))
            q, qv = pct(metric(rows, "nll"))
            print(f"| {os.path.basename(run.rstrip('/'))} | {b} | {st} | {e} | {pw} | {la} | {q} "
                  f"| {deg(metric(rows, 'gpu_temp_peak'))} | {deg(metric(rows, 'mem_temp_peak'))} |")
            if not (math.isnan(ev) or math.isnan(qv)):
                points.append((os.path.basename(run.rstrip("/")), st, b, qv, ev))
    if plot:
        os.makedirs(plot, exist_ok=True)
        with open(os.path.join(plot, "frontier.dat"), "w") as f:
            f.write("# run strategy budget ppl_change_pct energy_change_pct\n")
            for p in points:
                f.write(f'"{p[0]}" "{p[1]}" "{p[2]}" {p[3]:.4f} {p[4]:.4f}\n')
        with open(os.path.join(plot, "frontier.gp"), "w") as f:
            f.write('set terminal pngcairo size 1000,600 noenhanced\nset output "frontier.png"\n'
                    'set xlabel "perplexity change vs baseline (%)"\n'
                    'set ylabel "energy per token change vs baseline (%)"\n'
                    'set grid\nset key outside right\n'
                    'plot "frontier.dat" using 4:5:(sprintf("%s %s %s", stringcolumn(1), '
                    'stringcolumn(2), stringcolumn(3))) with labels point pt 7 offset 1,0.5 font ",8" '
                    'notitle\n')


if __name__ == "__main__":
    main(sys.argv)

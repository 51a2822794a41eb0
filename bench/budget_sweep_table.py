#!/usr/bin/env python3
"""Table of bench/budget_sweep.sh's runs: per run (a budget of predictive_thermal, or a
comparison at one setting; each run holds baseline and that one strategy) and workload, the
change of energy per token vs baseline (simulated H100 at Mixtral's expert shape; mean over
repeats, the unit of the energy) and of perplexity (paired on the same tokens, 95% Student-t
CI over the distinct text samples, the unit of quality). Standard library only.
usage: python3 bench/budget_sweep_table.py OUT_DIR   (the folder budget_sweep.sh wrote)"""
import csv, math, os, statistics, sys

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df):
    return T975.get(df) or T975[max(k for k in T975 if k <= df)]


def rows(path):
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def main(out):
    print("| run | workload | energy/token vs baseline (sim, mean of repeats) | "
          "perplexity change (paired, 95% CI over text samples) | samples |")
    print("|---|---|---|---|---|")
    for name in sorted(os.listdir(out)):
        p = os.path.join(out, name, "batches.csv")
        if not os.path.isfile(p):
            continue
        meta = os.path.join(out, name, "metadata.json")
        ns = None
        if os.path.isfile(meta):
            import json
            ns = json.load(open(meta))["config"].get("num_samples_per_workload")
        e, q = {}, {}
        other = sorted({r["strategy"] for r in rows(p)} - {"baseline"})
        if len(other) != 1:
            sys.exit(f"{p}: expected baseline and one other strategy, found {other}")
        st = other[0]
        for r in rows(p):
            key = (r["workload"], r["strategy"], int(r["repeat"]))
            a = e.setdefault(key, [0.0, 0.0])
            a[0] += float(r["energy_j"])
            a[1] += float(r["tokens"])
            if r["strategy"] != "baseline" and r.get("nll") not in (None, "", "nan"):
                s = int(r["batch_idx"]) % ns if ns else int(r["batch_idx"])
                b = q.setdefault((r["workload"], s), [0.0, 0.0, 0.0])
                ts = float(r["tokens_scored"])
                b[0] += float(r["nll"]) * ts
                b[1] += float(r["nll_baseline"]) * ts
                b[2] += ts
        for wl in sorted({k[0] for k in e}):
            reps = sorted({k[2] for k in e if k[0] == wl})
            ch = []
            for rp in reps:
                s, b = e.get((wl, st, rp)), e.get((wl, "baseline", rp))
                if s and b:
                    ch.append(100 * ((s[0] / s[1]) / (b[0] / b[1]) - 1))
            v = [100 * (math.exp((a - b) / t) - 1) for (w, _), (a, b, t) in q.items() if w == wl]
            m = statistics.mean(v)
            h = t975(len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
            print(f"| {name} | {wl} | {statistics.mean(ch):+.1f}% ({len(ch)} repeats) | "
                  f"{m:+.2f}% [{m - h:+.2f}, {m + h:+.2f}] | {len(v)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/budget_sweep")

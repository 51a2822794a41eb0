#!/usr/bin/env python3
"""Table of bench/expert_copies.sh's runs against fp16_ref's baseline on the same tokens:
energy per token change (simulated H100; mean over repeats, the unit of energy), perplexity
change (paired on each text sample's tokens, 95% Student-t CI over the distinct samples, the
unit of quality), mean simulated power of the strategy's batches against the target, and
top-k agreement. The fp16 baselines of every run must score the same tokens as fp16_ref's to
the last bit (checked: the runs draw the same windows). Standard library only.
usage: python3 bench/expert_copies_table.py OUT_DIR POWER_TARGET_W"""
import csv, json, math, os, statistics, sys

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df):
    return T975.get(df) or T975[max(k for k in T975 if k <= df)]


def load(d):
    rows = list(csv.DictReader(open(os.path.join(d, "batches.csv"), newline="")))
    ns = json.load(open(os.path.join(d, "metadata.json")))["config"].get("num_samples_per_workload")
    return rows, ns


def by_key(rows, st):
    return {(int(r["repeat"]), int(r["batch_idx"])): r for r in rows if r["strategy"] == st}


def main(out, target):
    ref_rows, ns = load(os.path.join(out, "fp16_ref"))
    ref = by_key(ref_rows, "baseline")
    print("| run | strategy | energy/token vs fp16 baseline (sim, mean of repeats) | "
          "perplexity change (paired, 95% CI over text samples) | mean power, W (sim; target "
          f"{target:.0f}) | top-k agreement |")
    print("|---|---|--:|---|--:|--:|")
    for name in sorted(os.listdir(out)):
        d = os.path.join(out, name)
        if name == "fp16_ref" or not os.path.isfile(os.path.join(d, "batches.csv")):
            continue
        rows, _ = load(d)
        static = name.startswith("static_")
        st = "baseline" if static else "hierarchical_adaptive"
        if not static:  # the run's own fp16 baseline scored fp16_ref's tokens
            for k, r in by_key(rows, "baseline").items():
                if r["nll"] != ref[k]["nll"]:
                    sys.exit(f"{name}: baseline batch {k} scores {r['nll']}, fp16_ref {ref[k]['nll']}")
        mine = by_key(rows, st)
        ch, q = [], {}
        for rp in sorted({k[0] for k in mine}):
            e1 = sum(float(r["energy_j"]) for k, r in mine.items() if k[0] == rp)
            t1 = sum(float(r["tokens"]) for k, r in mine.items() if k[0] == rp)
            e0 = sum(float(r["energy_j"]) for k, r in ref.items() if k[0] == rp)
            t0 = sum(float(r["tokens"]) for k, r in ref.items() if k[0] == rp)
            ch.append(100 * ((e1 / t1) / (e0 / t0) - 1))
        for k, r in mine.items():
            s = k[1] % ns if ns else k[1]
            ts = float(r["tokens_scored"])
            if ts != float(ref[k]["tokens_scored"]):
                sys.exit(f"{name}: batch {k} scored {ts} tokens, fp16_ref {ref[k]['tokens_scored']}")
            b = q.setdefault(s, [0.0, 0.0, 0.0])
            b[0] += float(r["nll"]) * ts
            b[1] += float(ref[k]["nll"]) * ts
            b[2] += ts
        v = [100 * (math.exp((a - b) / t) - 1) for a, b, t in q.values()]
        m = statistics.mean(v)
        h = t975(len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        pw = statistics.mean(float(r["power_avg_w"]) for r in mine.values())
        ag = statistics.mean(float(r["topk_agreement_with_baseline"]) for r in mine.values())
        label = st + (" (" + name[7:] + " experts)" if static else "")
        print(f"| {name} | {label} | {statistics.mean(ch):+.1f}% ({len(ch)} repeats) | "
              f"{m:+.2f}% [{m - h:+.2f}, {m + h:+.2f}] | {pw:.0f} | {ag:.3f} |")
    p0 = statistics.mean(float(r["power_avg_w"]) for r in ref.values())
    print(f"\nfp16 baseline: mean power {p0:.0f} W (sim), {len(ref)} batches")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))

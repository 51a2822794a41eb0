#!/usr/bin/env python3
"""Where the token copies went, per strategy, in expert-parallel run directories.

usage: ep_shift.py DIR/rank*/batches.csv

For each rank's batches.csv (its metadata.json beside it gives the expert -> device
placement) and each strategy: the share of token copies sent to each device's experts, the
mean MoE step latency, and the per-device mean power and end temperature when the log has
the per-device columns. Standard library only."""
import csv
import json
import os
import sys
from collections import defaultdict


def mean(v):
    v = [x for x in v if x == x]
    return sum(v) / len(v) if v else float("nan")


def floats(cell):
    out = []
    for x in cell.split(";") if cell else []:
        try:
            out.append(float(x))
        except ValueError:
            out.append(float("nan"))
    return out


def main(paths):
    if not paths:
        print(__doc__)
        return 2
    for path in sorted(paths):
        meta = json.load(open(os.path.join(os.path.dirname(path), "metadata.json")))
        cfg = meta.get("config", meta)
        place = cfg["placement"]["expert_device"]
        ndev = max(place) + 1
        rank = cfg.get("expert_parallel", {}).get("rank", 0)
        stats = defaultdict(lambda: {"dev": [0.0] * ndev, "lat": [], "pw": defaultdict(list),
                                     "temp": defaultdict(list), "n": 0})
        with open(path) as f:
            for row in csv.DictReader(f):
                s = stats[row["strategy"]]
                s["n"] += 1
                for e, c in enumerate(floats(row["expert_usage_counts"])):
                    s["dev"][place[e]] += c
                s["lat"].append(float(row["latency_ms"]) if row["latency_ms"] else float("nan"))
                for d, p in enumerate(floats(row.get("device_power_avg_w", ""))):
                    s["pw"][d].append(p)
                for d, t in enumerate(floats(row.get("device_temp_end_c", ""))):
                    s["temp"][d].append(t)
        print(f"rank {rank} ({path})")
        hdr = "| strategy | batches | " + " | ".join(f"copies to GPU {d}" for d in range(ndev))
        hdr += " | step ms | " + " | ".join(f"GPU {d} W, C" for d in range(ndev)) + " |"
        print(hdr)
        print("|" + "---|" * (3 + 2 * ndev))
        for name, s in sorted(stats.items()):
            tot = sum(s["dev"]) or 1.0
            cells = [f"{100.0 * c / tot:.1f}%" for c in s["dev"]]
            hw = [f"{mean(s['pw'][d]):.0f}, {mean(s['temp'][d]):.1f}" for d in range(ndev)]
            print(f"| {name} | {s['n']} | " + " | ".join(cells) +
                  f" | {mean(s['lat']):.3f} | " + " | ".join(hw) + " |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

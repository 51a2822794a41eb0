#!/usr/bin/env python3
"""Table of bench/serve_gpu.sh's replays: per routing strategy (each replay one strategy, one
repeat, in its own directory with summary.json), over the steady-state window each replay
detected (or its whole run, flagged), the mean over repeats of J per generated token, TTFT
and TPOT p99, and GPU / HBM peak temperature, each against baseline (energy and latency in
percent, temperatures in degrees C); how many repeats found a steady state; and the source
of the figures (nvml: measured, sim: simulated). Replays at several expert types are named
strategy@type and compared with baseline at the widest type (as thermoe analyze does).
Standard library only.
usage: python3 bench/serve_table.py DIR   (the folder of replay directories)"""
import json, math, os, statistics, sys

COLS = [("j_per_generated_token", "J/generated token", "pct", "{:.4g}"),
        ("ttft_p99_s", "TTFT p99 (s)", "pct", "{:.4g}"),
        ("tpot_p99_s", "TPOT p99 (s)", "pct", "{:.4g}"),
        ("gpu_temp_peak_c", "GPU peak (C)", "abs", "{:.1f}"),
        ("mem_temp_peak_c", "HBM peak (C)", "abs", "{:.1f}")]


WIDTH = ["fp32", "fp16", "bf16", "q4", "q2"]  # widest first


def num(v):
    return float(v) if isinstance(v, (int, float)) else math.nan


def mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.mean(xs) if xs else math.nan


def load(root):
    runs = {}
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name, "summary.json")
        if not os.path.isfile(p):
            continue
        try:
            with open(p) as f:
                d = json.load(f)
            strategy = d["metadata"]["routing_strategy"]
            etype = d["metadata"].get("expert_type", "fp16")  # fp16: before the flag
            w = d["window"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"{p}: expected a thermoe serve summary.json ({e})")
        runs.setdefault((strategy, etype), []).append({
            "name": name, "w": w, "steady": bool(d.get("steady_state", {}).get("detected")),
            "source": d.get("source", "unknown"), "interrupted": bool(d.get("interrupted")),
            "device": d["metadata"].get("device_name", "unknown")})
    types = {t for _, t in runs}
    if len(types) <= 1:
        return {s: rs for (s, _), rs in runs.items()}, "baseline"
    widest = min(types, key=lambda t: WIDTH.index(t) if t in WIDTH else len(WIDTH))
    return {f"{s}@{t}": rs for (s, t), rs in runs.items()}, f"baseline@{widest}"


def cell(v, base, kind, fmt):
    if math.isnan(v):
        return "n/a"
    s = fmt.format(v)
    if base is None or math.isnan(base):
        return s
    if kind == "abs":
        return f"{s} ({v - base:+.1f} C)"
    return f"{s} ({100.0 * (v / base - 1.0):+.1f}%)" if base else s


def main(root):
    runs, bname = load(root)
    if not runs:
        sys.exit(f"{root}: no replay directories with a summary.json")
    means = {s: {k: mean([num(r["w"].get(k)) for r in rs]) for k, *_ in COLS}
             for s, rs in runs.items()}
    base = means.get(bname)
    sources = sorted({r["source"] for rs in runs.values() for r in rs})
    devices = sorted({r["device"] for rs in runs.values() for r in rs})
    print(f"Serving replays in {root}: {', '.join(devices)}; figures from "
          f"{', '.join(sources)}{' (SIMULATED, not measured)' if 'sim' in sources else ''}; "
          "mean over repeats of each replay's steady-state window (its whole run where none "
          "was found); in brackets the change against baseline.\n")
    print("| strategy | repeats | " + " | ".join(c[1] for c in COLS) +
          " | steady state | source |")
    print("|---|---|" + "---|" * len(COLS) + "---|---|")
    order = sorted(runs, key=lambda s: (s != bname, s))
    for s in order:
        rs = runs[s]
        cells = [cell(means[s][k], None if s == bname or not base else base[k], kind, fmt)
                 for k, _, kind, fmt in COLS]
        steady = f"{sum(r['steady'] for r in rs)} of {len(rs)}"
        src = ",".join(sorted({r["source"] for r in rs}))
        cut = sum(r["interrupted"] for r in rs)
        if cut:
            src += f" ({cut} interrupted)"
        print(f"| {s} | {len(rs)} | " + " | ".join(cells) + f" | {steady} | {src} |")
    if not base:
        print(f"\nNo {bname} replay: no changes shown.")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

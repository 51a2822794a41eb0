#!/usr/bin/env python3
"""Table of bench/serve_gpu.sh's replays: per routing strategy (each replay one strategy, one
repeat, in its own directory with summary.json), over the steady-state window each replay
detected (or its whole run, flagged), the mean over repeats of J per generated token, TTFT
and TPOT p99, GPU / HBM peak temperature and the distinct experts a layer step ran (n/a for
a summary from before that figure), each against baseline (energy and latency in percent,
temperatures in degrees C, experts as a difference); how many repeats found a steady state;
and the source of the figures (nvml: measured, sim: simulated). Replays at several expert types are named
strategy@type and compared with baseline at the widest type (as thermoe analyze does).
With two or more passes holding both a strategy and baseline (replay directories named
r<pass>_..., as bench/serve_gpu.sh writes them), a second table pairs them by pass (the
order alternates between passes): the mean change and its 95% t interval over passes, the
pass the unit. Standard library only.
usage: python3 bench/serve_table.py DIR   (the folder of replay directories)"""
import json, math, os, re, statistics, sys

from tstats import mean_ci

COLS = [("j_per_generated_token", "J/generated token", "pct", "{:.4g}"),
        ("ttft_p99_s", "TTFT p99 (s)", "pct", "{:.4g}"),
        ("tpot_p99_s", "TPOT p99 (s)", "pct", "{:.4g}"),
        ("gpu_temp_peak_c", "GPU peak (C)", "abs", "{:.1f}"),
        ("mem_temp_peak_c", "HBM peak (C)", "abs", "{:.1f}"),
        ("active_experts", "experts a layer step", "diff", "{:.2f}")]


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
            "name": name, "pass": (re.match(r"r(\d+)_", name) or [None, None])[1], "w": w, "steady": bool(d.get("steady_state", {}).get("detected")),
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
    if kind == "diff":
        return f"{s} ({v - base:+.2f})"
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
        return
    paired(runs, bname)


def paired(runs, bname):
    """the change against baseline paired by pass, where two or more passes hold both"""
    bp = {r["pass"]: r for r in runs[bname] if r["pass"]}
    rows = []
    for s in sorted(x for x in runs if x != bname):
        mine = {r["pass"]: r for r in runs[s] if r["pass"] in bp}
        if len(mine) < 2:
            continue
        cells = []
        for k, _, kind, _ in COLS:
            d = [num(r["w"].get(k)) - num(bp[p]["w"].get(k)) if kind in ("abs", "diff") else
                 100.0 * (num(r["w"].get(k)) / num(bp[p]["w"].get(k)) - 1.0)
                 for p, r in sorted(mine.items())]
            d = [x for x in d if not math.isnan(x)]
            if len(d) < 2:
                cells.append("n/a")
                continue
            m, h = mean_ci(d)
            unit = " C" if kind == "abs" else "" if kind == "diff" else "%"
            cells.append(f"{m:+.2f} [{m - h:+.2f}, {m + h:+.2f}]" if kind == "diff" else
                         f"{m:+.1f}{unit} [{m - h:+.1f}, {m + h:+.1f}]")
        rows.append(f"| {s} | {len(mine)} | " + " | ".join(cells) + " |")
    if rows:
        print(f"\nPaired by pass with {bname} (the pass the unit; 95% t interval over passes; "
              "temperatures as differences in C):\n")
        print("| strategy | passes | " + " | ".join(c[1] for c in COLS) + " |")
        print("|---|---|" + "---|" * len(COLS))
        print("\n".join(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

#!/usr/bin/env python3
"""Serving replays compared from their steps.csv alone (written row by row, so it survives a
replay that was killed before its summary.json; `thermoe analyze` and bench/serve_table.py
are the fuller analysis where the summary exists). Per replay, over a common window of the
replay's clock [--from, --to] s (a step counts when it starts and ends inside): the energy of
its steps, the decode and prefill tokens, J per decode token (each decode token is one
generated token; the first token of each request, made by its last prefill step, is not
counted: steps.csv does not say which step finished a prefill), average power (energy over
the steps' span), the step latency p50 / p99 over steps that decode, the GPU / HBM peak
temperatures, the longest queue and the distinct experts a layer step ran (mean over steps;
"-" for a steps.csv from before that column); the first replay named is the reference. With
--bins S, the same per S-second bin. Standard library only.
usage: python3 bench/serve_steps.py [--from A] [--to B] [--bins S] NAME=DIR...
"""
import argparse
import csv
import gzip
import os
import sys


def load(d):
    p = os.path.join(d, "steps.csv")
    if not os.path.exists(p) and os.path.exists(p + ".gz"):
        p += ".gz"
    op = gzip.open if p.endswith(".gz") else open
    try:
        with op(p, "rt") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"{p}: {e}")
    need = ["t_start_s", "t_end_s", "energy_j", "decode_tokens", "prefill_tokens", "latency_ms",
            "gpu_temp_peak_c", "mem_temp_peak_c", "waiting", "source"]
    if not rows or any(k not in rows[0] for k in need):
        sys.exit(f"{p}: expected a thermoe serve steps.csv with {', '.join(need)}")
    return rows


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))] if v else float("nan")


def stats(rows, lo, hi):
    w = [r for r in rows if float(r["t_start_s"]) >= lo and float(r["t_end_s"]) <= hi]
    if not w:
        return None
    e = sum(float(r["energy_j"]) for r in w)
    dec = sum(int(r["decode_tokens"]) for r in w)
    pre = sum(int(r["prefill_tokens"]) for r in w)
    span = float(w[-1]["t_end_s"]) - float(w[0]["t_start_s"])
    lat = [float(r["latency_ms"]) for r in w if int(r["decode_tokens"]) > 0]
    peak = lambda k: max((float(r[k]) for r in w if r[k] not in ("", "nan")),
                         default=float("nan"))
    return {"steps": len(w), "e": e, "dec": dec, "pre": pre, "jdec": e / dec if dec else
            float("nan"), "p": e / span if span > 0 else float("nan"), "p50": pct(lat, 50),
            "p99": pct(lat, 99), "gpu": peak("gpu_temp_peak_c"), "hbm": peak("mem_temp_peak_c"),
            "wait": max(int(r["waiting"]) for r in w),
            "act": (sum(float(r["active_experts"]) for r in w) / len(w)
                    if "active_experts" in w[0] else float("nan")),
            "src": ",".join(sorted({r["source"] for r in w}))}


def rel(v, b):
    return f" ({100.0 * (v / b - 1.0):+.1f}%)" if b and b == b and v == v else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="lo", type=float, default=0.0)
    ap.add_argument("--to", dest="hi", type=float, default=float("inf"))
    ap.add_argument("--bins", type=float, default=0.0)
    ap.add_argument("runs", nargs="+", metavar="NAME=DIR")
    a = ap.parse_args()
    runs = []
    for x in a.runs:
        name, _, d = x.partition("=")
        if not d:
            sys.exit(f"expected NAME=DIR, got '{x}'")
        runs.append((name, load(d)))
    print(f"Window {a.lo:g}..{a.hi:g} s of each replay's clock; in brackets the change "
          f"against {runs[0][0]} (temperatures: the difference in C).\n")
    print("| replay | steps | J/decode token | power (W) | decode / prefill tokens | "
          "step p50 / p99 (ms) | GPU peak (C) | HBM peak (C) | longest queue | "
          "experts a layer step | source |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    base = None
    for name, rows in runs:
        s = stats(rows, a.lo, a.hi)
        if s is None:
            print(f"| {name} | 0 | no step in the window ||||||||| ")
            continue
        b = base or s
        dt = lambda k: "" if s is b else f" ({s[k] - b[k]:+.1f})"
        print(f"| {name} | {s['steps']} | {s['jdec']:.4f}{'' if s is b else rel(s['jdec'], b['jdec'])}"
              f" | {s['p']:.1f}{'' if s is b else rel(s['p'], b['p'])} | {s['dec']} / {s['pre']} | "
              f"{s['p50']:.2f} / {s['p99']:.2f} | {s['gpu']:.0f}{dt('gpu')} | "
              f"{s['hbm']:.0f}{dt('hbm')} | {s['wait']} | "
              f"{'-' if s['act'] != s['act'] else format(s['act'], '.2f')} | {s['src']} |")
        base = base or s
    if a.bins > 0:
        end = max(float(r[-1]["t_end_s"]) for _, r in runs)
        print(f"\nPer {a.bins:g} s: power (W) / J per decode token / HBM peak (C) / queue")
        print("\n| from (s) | " + " | ".join(n for n, _ in runs) + " |")
        print("|--:|" + "---|" * len(runs))
        t = 0.0
        while t < end:
            cells = []
            for _, rows in runs:
                s = stats(rows, t, t + a.bins)
                cells.append("-" if s is None else
                             f"{s['e'] / a.bins:.0f} / {s['jdec']:.4f} / {s['hbm']:.0f} / {s['wait']}")
            print(f"| {t:g} | " + " | ".join(cells) + " |")
            t += a.bins


if __name__ == "__main__":
    main()

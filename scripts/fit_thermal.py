#!/usr/bin/env python3
"""Fit the simulated GPU's two-stage RC thermal model to the measured H100 trace
tests/data/fixtures/telemetry/h100_thermal_step.csv (pure Python, no numpy).

Model, per sensor s (GPU die, HBM), two stages i (fast, slow) sharing time constants:
    T_s(t) = T_amb + sum_i [ g_rest_si * u_i[P_rest](t) + g_mem_si * u_i[P_mem](t)
                             + x0_si * exp(-t / tau_i) ]
where u_i[P] is P passed through a first-order lag of time constant tau_i with unit gain
(zero-order hold between samples) and x0 is the stage's state at t = 0 (the trace starts
warm). P_mem is the memory-traffic (dynamic) part of the board power: instant power above
the clocks-up idle level during the device-to-device copy, 0 elsewhere; P_rest = P - P_mem.
For fixed (tau_fast, tau_slow) the model is linear in the other 7 parameters: ordinary
least squares; the time constants come from a grid search. Prints the fit and its RMS.
usage: scripts/fit_thermal.py [path/to/h100_thermal_step.csv]
"""
import csv, math, os, sys

IDLE_UP_W = 140.0  # clocks-up idle level the copy's memory power is measured from


def load(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append((float(r["t_s"]), r["phase"], float(r["power_instant_w"]),
                         float(r["gpu_temp_c"]), float(r["mem_temp_c"])))
    return rows


def lag(ts, p, tau):
    out, x = [], 0.0
    for n in range(len(ts)):
        out.append(x)
        if n + 1 < len(ts):
            a = math.exp(-(ts[n + 1] - ts[n]) / tau)
            x = x * a + p[n] * (1.0 - a)
    return out


def solve(A, b):
    n = len(b)
    M = [row[:] + [b[i]] for i, row in enumerate(A)]
    for c in range(n):
        piv = max(range(c, n), key=lambda r: abs(M[r][c]))
        M[c], M[piv] = M[piv], M[c]
        if abs(M[c][c]) < 1e-12:
            return None
        for r in range(n):
            if r != c:
                f = M[r][c] / M[c][c]
                for k in range(c, n + 1):
                    M[r][k] -= f * M[c][k]
    return [M[i][n] / M[i][i] for i in range(n)]


def fit(ts, cols, y):
    k = len(cols)
    A = [[sum(cols[i][n] * cols[j][n] for n in range(len(y))) for j in range(k)] for i in range(k)]
    b = [sum(cols[i][n] * y[n] for n in range(len(y))) for i in range(k)]
    w = solve(A, b)
    if w is None:
        return None, 1e9
    pred = [sum(w[i] * cols[i][n] for i in range(k)) for n in range(len(y))]
    rms = math.sqrt(sum((pred[n] - y[n]) ** 2 for n in range(len(y))) / len(y))
    return w, rms


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "tests", "data", "fixtures", "telemetry", "h100_thermal_step.csv")
    rows = load(path)
    ts = [r[0] for r in rows]
    pmem = [max(0.0, r[2] - IDLE_UP_W) if r[1] == "copy" else 0.0 for r in rows]
    prest = [r[2] - m for r, m in zip(rows, pmem)]
    one = [1.0] * len(ts)
    shared = None
    for name, yi in (("gpu", 3), ("hbm", 4)):
        y = [r[yi] for r in rows]
        best = None
        for tf in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0):
            for tsl in (15, 20, 25, 30, 35, 40, 50, 60, 80, 100, 130):
                cols = [one]
                for tau in (tf, tsl):
                    cols += [lag(ts, prest, tau), lag(ts, pmem, tau), [math.exp(-t / tau) for t in ts]]
                w, rms = fit(ts, cols, y)
                if w and (best is None or rms < best[0]):
                    best = (rms, tf, tsl, w)
        rms, tf, tsl, w = best
        # single stage for comparison
        one_best = None
        for tau in (5, 10, 15, 20, 25, 30, 40, 60):
            cols = [one, lag(ts, prest, tau), lag(ts, pmem, tau), [math.exp(-t / tau) for t in ts]]
            w1, r1 = fit(ts, cols, y)
            if w1 and (one_best is None or r1 < one_best[0]):
                one_best = (r1, tau)
        print(f"{name}: tau_fast {tf} s, tau_slow {tsl} s, rms {rms:.3f} C "
              f"(one stage: {one_best[0]:.3f} C at tau {one_best[1]} s)")
        print(f"  T_amb {w[0]:.3f}  fast: g_rest {w[1]:.5f} g_mem {w[2]:.5f} x0 {w[3]:.3f}"
              f"  slow: g_rest {w[4]:.5f} g_mem {w[5]:.5f} x0 {w[6]:.3f}  (C/W)")
        if shared is None:
            shared = (tf, tsl)
        else:  # the simulator uses the GPU's time constants for both sensors
            cols = [one]
            for tau in shared:
                cols += [lag(ts, prest, tau), lag(ts, pmem, tau), [math.exp(-t / tau) for t in ts]]
            w, rms = fit(ts, cols, y)
            print(f"  at the GPU's time constants {shared}: rms {rms:.3f} C")
            print(f"  T_amb {w[0]:.3f}  fast: g_rest {w[1]:.5f} g_mem {w[2]:.5f} x0 {w[3]:.3f}"
                  f"  slow: g_rest {w[4]:.5f} g_mem {w[5]:.5f} x0 {w[6]:.3f}  (C/W)")


if __name__ == "__main__":
    main()

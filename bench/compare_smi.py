#!/usr/bin/env python3
"""Compare thermoe monitor's CSV with nvidia-smi's over the steady part of a load
(the middle half of [load start, load end]); written by bench/telemetry_h100.sh.
Checks: mean power within 5%, mean GPU temperature within 1 C, mean SM clock within 2%,
and the energy counter delta over the load against the trapezoid of instant power (5%)."""
import csv, datetime, os, sys

out = sys.argv[1]
gpu = sys.argv[2] if len(sys.argv) > 2 else "0"
rd = lambda n: float(open(os.path.join(out, n)).read().strip())
mon0, l0, l1 = rd("monitor_start_epoch.txt"), rd("load_start_epoch.txt"), rd("load_end_epoch.txt")
a, b = l0 + 0.25 * (l1 - l0), l0 + 0.75 * (l1 - l0)


def num(x):
    try:
        return float(x.split()[0])
    except (ValueError, IndexError):
        return None


smi = []
with open(os.path.join(out, "smi.csv")) as f:
    r = csv.reader(f)
    next(r)
    for row in r:
        if len(row) < 4:
            continue
        ts = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        smi.append((ts, num(row[1]), num(row[2]), num(row[3])))
mon = []
with open(os.path.join(out, "thermoe.csv")) as f:
    for row in csv.DictReader(f):
        if row["device"] != gpu:
            continue
        g = lambda k: float(row[k]) if row[k] else None
        mon.append((mon0 + float(row["t_s"]), g("power_avg_w"), g("gpu_temp_c"), g("sm_clock_mhz"),
                    g("power_instant_w"), g("energy_mj")))


def mean(rows, k):
    v = [r[k] for r in rows if a <= r[0] <= b and r[k] is not None]
    return sum(v) / len(v) if v else float("nan")


ok = True
for name, ks, km, tol, rel in (("power W", 1, 1, 0.05, True), ("GPU temp C", 2, 2, 1.0, False),
                               ("SM clock MHz", 3, 3, 0.02, True)):
    s, m = mean(smi, ks), mean(mon, km)
    err = abs(m / s - 1) if rel else abs(m - s)
    good = err <= tol
    ok &= good
    print(f"{name:14s} nvidia-smi {s:9.2f}  thermoe {m:9.2f}  diff {err:.3f} "
          f"({'<=' if good else '>'} {tol}{' rel' if rel else ''})")
# energy over the load: counter delta vs trapezoid of instant power
load = [r for r in mon if l0 <= r[0] <= l1]
ctr = [r for r in load if r[5] is not None]
trap = sum(0.5 * (p[4] + q[4]) * (q[0] - p[0]) for p, q in zip(load, load[1:])
           if p[4] is not None and q[4] is not None)
if len(ctr) >= 2:
    e_ctr = (ctr[-1][5] - ctr[0][5]) / 1000 * (load[-1][0] - load[0][0]) / (ctr[-1][0] - ctr[0][0])
    good = abs(e_ctr / trap - 1) <= 0.05
    ok &= good
    print(f"energy J       counter {e_ctr:9.1f}  integrated {trap:9.1f}  diff {abs(e_ctr / trap - 1):.3f}")
else:
    print("energy: no counter samples in the load window")
    ok = False
print("RESULT:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)

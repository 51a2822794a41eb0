#!/usr/bin/env python3
"""Repeatability of two thermoe cost models of the same ops: per entry, the relative
difference of median latency and of board energy; prints a table and the worst cases."""
import json, sys

def load(p):
    m = json.load(open(p))
    return {(e['op'], e['expert_type'], e['impl'], e['tokens']): e for e in m['entries']}

a, b = load(sys.argv[1]), load(sys.argv[2])
rows = []
for k in sorted(a):
    if k not in b:
        continue
    la, lb = a[k]['latency_ms']['median'], b[k]['latency_ms']['median']
    ea, eb = a[k]['energy_j']['board'], b[k]['energy_j']['board']
    dl = abs(la - lb) / max(la, lb)
    de = abs(ea - eb) / max(ea, eb) if ea and eb else float('nan')
    rows.append((k, la, lb, dl, ea, eb, de))
print('| op | type | impl | tokens | ms A | ms B | diff | J A | J B | diff |')
print('|---|---|---|---|---|---|---|---|---|---|')
for k, la, lb, dl, ea, eb, de in rows:
    print(f'| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {la:.5f} | {lb:.5f} | {100*dl:.1f}% | {ea:.5f} | {eb:.5f} | {100*de:.1f}% |')
n = len(rows)
print(f'\n{n} entries; latency within 5%: {sum(r[3] <= 0.05 for r in rows)}/{n} (worst {100*max(r[3] for r in rows):.1f}%); '
      f'energy within 10%: {sum(r[6] <= 0.10 for r in rows)}/{n} (worst {100*max(r[6] for r in rows):.1f}%)')

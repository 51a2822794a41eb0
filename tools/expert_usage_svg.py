#!/usr/bin/env python3
"""Draw expert usage per layer as an SVG heat map (no plotting library needed).

Input: the metrics JSON that tools/train_moe.py writes beside a checkpoint; its
"expert_usage" maps a token file's name (e.g. test, test-kjv, test-shakespeare) to
{"fractions": [[...] per layer], ...}, each row the share of the layer's top-k selections
that went to each expert (a row sums to 1; uniform is 1/E). One panel per token file, a
row per layer, a column per expert, darker = more used; each cell prints its percentage.
When there are exactly two test-DOMAIN files, a last panel shows their difference (first
minus second, in percentage points; red = more used by the first domain, blue = by the
second): experts that specialise in a domain stand out there.

usage: tools/expert_usage_svg.py METRICS.json OUT.svg
"""
import json
import sys


def _color(v, vmax):
    """White (0) to dark blue (vmax)."""
    t = max(0.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
    r = round(255 + t * (8 - 255))
    g = round(255 + t * (48 - 255))
    b = round(255 + t * (107 - 255))
    return f"rgb({r},{g},{b})", ("white" if t > 0.55 else "black")


def _diverging(v, vmax):
    """Blue (-vmax) through white to red (+vmax)."""
    t = max(-1.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
    if t >= 0:
        rgb = (255 + t * (178 - 255), 255 + t * (24 - 255), 255 + t * (43 - 255))
    else:
        rgb = (255 - t * (33 - 255), 255 - t * (102 - 255), 255 - t * (172 - 255))
    return "rgb(%d,%d,%d)" % tuple(round(c) for c in rgb), ("white" if abs(t) > 0.55 else "black")


def render(panels, title, diff=None):
    """SVG text for panels: [(name, fractions (layers, experts))], and optionally a
    difference panel diff = (name, differences (layers, experts))."""
    cell_w, cell_h, gap, left, top = 44, 26, 36, 70, 58
    n_layers = max(len(f) for _, f in panels)
    n_exp = max(len(r) for _, f in panels for r in f)
    vmax = max(v for _, f in panels for r in f for v in r)
    dmax = max((abs(v) for r in diff[1] for v in r), default=0) if diff else 0
    if diff:
        panels = panels + [diff]
    panel_w = n_exp * cell_w
    width = left + len(panels) * panel_w + (len(panels) - 1) * gap + 20
    height = top + n_layers * cell_h + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">{title}</text>']
    for p, (name, frac) in enumerate(panels):
        x0 = left + p * (panel_w + gap)
        out.append(f'<text x="{x0 + panel_w / 2}" y="{top - 22}" text-anchor="middle" '
                   f'font-weight="bold">{name}</text>')
        for e in range(n_exp):
            out.append(f'<text x="{x0 + e * cell_w + cell_w / 2}" y="{top - 6}" '
                       f'text-anchor="middle">e{e}</text>')
        for li, row in enumerate(frac):
            y = top + li * cell_h
            if p == 0:
                out.append(f'<text x="{left - 8}" y="{y + cell_h / 2 + 4}" '
                           f'text-anchor="end">layer {li}</text>')
            for e, v in enumerate(row):
                is_diff = diff is not None and p == len(panels) - 1
                fill, ink = _diverging(v, dmax) if is_diff else _color(v, vmax)
                x = x0 + e * cell_w
                out.append(f'<rect x="{x}" y="{y}" width="{cell_w - 1}" height="{cell_h - 1}" '
                           f'fill="{fill}"/>')
                label = f"{100 * v:+.0f}" if is_diff else f"{100 * v:.0f}"
                out.append(f'<text x="{x + cell_w / 2}" y="{y + cell_h / 2 + 4}" '
                           f'text-anchor="middle" fill="{ink}">{label}</text>')
    out.append(f'<text x="{left}" y="{height - 20}">share of each layer\'s top-k selections '
               f'per expert, in percent (uniform = {100 / n_exp:.1f}); darkest = '
               f'{100 * vmax:.0f}' + (f'; last panel: difference in points, '
                                      f'strongest {100 * dmax:.0f}' if diff else '') + '</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(metrics, path):
    """Write the figure for a metrics dict (tools/train_moe.py's JSON)."""
    usage = metrics["expert_usage"]
    panels = [(name, u["fractions"]) for name, u in usage.items() if "fractions" in u]
    doms = [n for n in usage if n.startswith("test-")]
    diff = None
    if len(doms) == 2:
        p, q = usage[doms[0]]["fractions"], usage[doms[1]]["fractions"]
        diff = (f"{doms[0][5:]} - {doms[1][5:]}",
                [[a - b for a, b in zip(rp, rq)] for rp, rq in zip(p, q)])
    title = (f"Expert usage per layer, {metrics.get('model_type', 'mixtral')}, "
             f"top-{metrics.get('top_k', '?')} of {metrics.get('num_experts', '?')}")
    with open(path, "w") as f:
        f.write(render(panels, title, diff))


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        write(json.load(f), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Side-by-side table of bench_moe --short and ggml's test-backend-ops perf output (the
MUL_MAT 4096 x 14336 and MUL_MAT_ID 128-expert top-8 768 x 2048 cases), from one card, back
to back (bench/ggml_side_by_side.sh). Ratio = ggml's time / ours (> 1: ours faster).
Types: our fp16/bf16 against ggml's f16/bf16; our q4 (4.125 bits a weight: groups of 128,
fp16 scales) against q4_0 (4.5 bits) and q4_K (4.5); our q2 (2.125 bits) against q2_K
(2.625). Standard library only.
usage: python3 bench/ggml_table.py BENCH_MOE_SHORT.md GGML_PERF.txt"""
import re, sys

OURS_TO_GGML = {"fp16": ["f16"], "bf16": ["bf16"], "q4": ["q4_0", "q4_K"], "q2": ["q2_K"]}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
GGML_LINE = re.compile(r"(MUL_MAT(?:_ID)?)\((.*?)\):\s+(\d+) runs -\s+([\d.]+) us/run")


def ours(path):
    """(op, type, tokens, path) -> median us"""
    out = {}
    with open(path) as f:
        for line in f:
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            if len(c) < 6 or not c[4].isdigit():
                continue
            what, typ, p, n, us = c[0], c[2], c[3], int(c[4]), float(c[5])
            if what.startswith("matrix 4096x14336"):
                out[("MUL_MAT", typ, n, p)] = us
            elif what.startswith("MUL_MAT_ID 768x2048"):
                out[("MUL_MAT_ID", typ, n, p)] = us
    return out


def ggml(path):
    """(op, ggml type, tokens) -> us/run"""
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = GGML_LINE.search(ANSI.sub("", line))
            if not m:
                continue
            params = dict(kv.split("=", 1) for kv in re.split(r",(?![^\[]*\])", m.group(2)))
            out[(m.group(1), params["type_a"], int(params["n"]))] = float(m.group(4))
    return out


def main(ours_path, ggml_path):
    o, g = ours(ours_path), ggml(ggml_path)
    if not o:
        sys.exit(f"{ours_path}: no bench_moe rows")
    if not g:
        sys.exit(f"{ggml_path}: no test-backend-ops perf lines")
    print("| op | ours | ggml | tokens | ours us | ours us, one copy (L2-warm) | ggml us | "
          "ggml / ours | faster |")
    print("|---|---|---|---|--:|--:|--:|--:|---|")
    for op, paths in (("MUL_MAT", ("kernel", "kernel, one copy (L2-warm)")),
                      ("MUL_MAT_ID", ("kernel", None))):
        for typ in ("fp16", "bf16", "q4", "q2"):
            for n in sorted({k[2] for k in o if k[0] == op and k[1] == typ}):
                us = o.get((op, typ, n, paths[0]))
                warm = o.get((op, typ, n, paths[1])) if paths[1] else None
                for gt in OURS_TO_GGML[typ]:
                    gu = g.get((op, gt, n))
                    if us is None or gu is None:
                        continue
                    best = min(x for x in (us, warm) if x is not None)
                    ratio = gu / best
                    print(f"| {op} | {typ} | {gt} | {n} | {us:.1f} | "
                          f"{'' if warm is None else f'{warm:.1f}'} | {gu:.1f} | {ratio:.2f} | "
                          f"{'ours' if ratio > 1 else 'ggml'} |")
    print()
    print("ours: median of CUDA-event timings, weights rotated over copies (DRAM reads); the "
          "one-copy row reuses one set of weights as ggml's perf loop does. ggml: "
          "test-backend-ops perf, mean us/run over its loop. 'ggml / ours' takes our faster "
          "of the two rows where both exist.")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

"""bench/precision_table.py: reads the processes' printed summaries (the console format of
thermoe run) and compares each strategy@type with baseline@fp16, the process the unit:
perplexity paired by seed, energy by Welch."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "bench", "precision_table.py")

HEAD = ("workload         strategy               batches     mJ/token  vs base    p50 ms    "
        "p99 ms   GPU C   HBM C   top-k   out err experts\n")
PHEAD = ("workload         strategy                  tokens  perplexity    baseline    change"
         "                95% CI  CI unit\n")


def process(name, etype, seed, mj, ppl, hbm):
    """one process: baseline at mj[0] / ppl[0], predictive_thermal at mj[1] / ppl[1]"""
    s = (f"== {name}: thermoe run --backend cuda --expert-type {etype} --seed {seed} "
         "--budget top1 --routing-strategy baseline,predictive_thermal\n[1 s] x rc=0\n" + HEAD)
    s += (f"standard         baseline                    12     {mj[0]:.4f}        -  500.0  "
          f"510.0    50.0    {hbm:.1f}   1.000  0.00e+00    5.61\n")
    s += (f"standard         predictive_thermal          12     {mj[1]:.4f}   -20.0%  440.0  "
          f"450.0    50.0    {hbm - 1:.1f}   0.941  6.04e-02    4.75\n")
    s += PHEAD
    s += (f"standard         baseline                   24384     {ppl[0]:.4f}     {ppl[0]:.4f}"
          "   +0.000%                     -  the reference\n")
    s += (f"standard         predictive_thermal         24384     {ppl[1]:.4f}     {ppl[0]:.4f}"
          "   +1.000%     [+0.500, +1.500]%  6 text samples\n")
    return s


def test_paired_by_seed_and_welch(tmp_path):
    log = (process("fp16_prec_1", "fp16", 1, (100, 80), (30.0, 30.3), 60) +
           process("q4_prec_1", "q4", 1, (50, 40), (30.3, 30.9), 55) +
           process("q4_prec_2", "q4", 2, (52, 41), (40.4, 41.2), 56) +
           process("fp16_prec_2", "fp16", 2, (102, 81), (40.0, 40.4), 62))
    f = tmp_path / "out.txt"
    f.write_text(log)
    r = subprocess.run([sys.executable, TABLE, str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = {l.split("|")[1].strip(): l for l in r.stdout.splitlines() if l.startswith("| ")}
    # baseline@q4 against baseline@fp16 on the same text: +1.00% at both seeds, no spread
    q4 = rows["baseline@q4"]
    assert "+1.00% [+1.00, +1.00] (2 pairs)" in q4, q4
    # energy: (51 - 101) / 101 = -49.5%
    assert "-49.5%" in q4, q4
    # q4 + top1: pairs +3.00% (30.9 / 30) and +3.00% (41.2 / 40)
    assert "+3.00% [+3.00, +3.00] (2 pairs)" in rows["predictive_thermal@q4"]
    # temperatures as differences in degrees: HBM (55 + 56) / 2 - (60 + 62) / 2 = -5.5 C
    assert "-5.5 C" in q4, q4


def test_no_baseline(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text(process("q4_prec_1", "q4", 1, (50, 40), (30.3, 30.9), 55))
    r = subprocess.run([sys.executable, TABLE, str(f)], capture_output=True, text=True)
    assert r.returncode != 0 and "no baseline fp16" in r.stderr

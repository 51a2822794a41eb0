"""bench/eval_paired.py: two eval --windows-csv files compared window by window (the mean
change with its t interval over windows, the perplexity ratio), and different windows are an
error."""
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "eval_paired.py"


def write(path, rows):
    path.write_text("window,tokens,nll_mean\n" + "".join("%d,%d,%r\n" % r for r in rows))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True)


def test_paired_change(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write(a, [(0, 10, 3.0), (1, 10, 2.0), (2, 10, 4.0)])
    write(b, [(0, 10, 3.1), (1, 10, 2.2), (2, 10, 4.3)])  # changes 0.1, 0.2, 0.3
    r = run(a, b, "--names", "fp16,int8")
    assert r.returncode == 0, r.stderr
    row = [c.strip() for c in r.stdout.splitlines()[2].strip("|").split("|")]
    assert row[0] == "int8 vs fp16" and row[1] == "3"
    assert float(row[2]) == 3.0 and math.isclose(float(row[3]), 3.2)
    # mean 0.2, sd 0.1, t(2) 4.303: half-width 4.303 x 0.1 / sqrt(3) = 0.248434
    assert row[4] == "+0.200000 [-0.048434, +0.448434]"
    assert row[5].startswith("%+.4f%%" % (100 * math.expm1(0.2)))


def test_windows_must_match(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write(a, [(0, 10, 3.0), (1, 10, 2.0)])
    write(b, [(0, 10, 3.0)])
    r = run(a, b)
    assert r.returncode != 0 and "different windows" in r.stderr
    write(b, [(0, 10, 3.0), (1, 9, 2.0)])
    r = run(a, b)
    assert r.returncode != 0 and "window 1 scores 10 tokens" in r.stderr
    (tmp_path / "bad.csv").write_text("w,t,n\n0,1,2\n")
    r = run(a, tmp_path / "bad.csv")
    assert r.returncode != 0 and "expected the header" in r.stderr

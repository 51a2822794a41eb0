"""bench/window_gap.py: each strategy's window energy against baseline's power over the same
time (the offset), the change in time, energy and power, and the time outside the windows."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "window_gap.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True)


def write(path, rows):
    path.write_text("strategy,repeat,energy_j,energy_window_s,wall_time_unix_s\n" +
                    "".join("%s,%d,%r,%r,%r\n" % r for r in rows))


def test_offset(tmp_path):
    # baseline: 0.5 s windows of 250 J (500 W), one every 1.0 s; the strategy: 0.4 s windows of
    # 180 J (450 W), one every 1.1 s. At baseline's power its 0.4 s would cost 200 J: -20 J.
    rows = [("baseline", 0, 250.0, 0.5, 100.0), ("baseline", 0, 250.0, 0.5, 101.0),
            ("s", 0, 180.0, 0.4, 102.0), ("s", 0, 180.0, 0.4, 103.1)]
    write(tmp_path / "batches.csv", rows)
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    base = [c.strip() for c in lines[1].strip("|").split("|")]
    s = [c.strip() for c in lines[2].strip("|").split("|")]
    assert base[:5] == ["baseline", "2", "500.0", "250.00", "500.0"]
    assert base[8] == "500.0" and base[9] == "+0.0"
    assert s[:5] == ["s", "2", "400.0", "180.00", "450.0"]
    assert s[5:8] == ["-20.0%", "-28.0%", "-10.0%"]
    assert s[8] == "700.0" and s[9] == "-20.0" and s[10] == "-8.0%"


def test_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    r = run(tmp_path / "x.csv")
    assert r.returncode != 0 and "not a batches.csv" in r.stderr
    write(tmp_path / "batches.csv", [("s", 0, 1.0, 0.1, 1.0)])
    r = run(tmp_path)
    assert r.returncode != 0 and "no baseline rows" in r.stderr


def test_recorded_idle(tmp_path):
    """idle_before_window_s, where the run recorded it, is the "outside" column"""
    (tmp_path / "batches.csv").write_text(
        "strategy,repeat,energy_j,energy_window_s,wall_time_unix_s,idle_before_window_s\n"
        "baseline,0,250.0,0.5,100.0,nan\nbaseline,0,250.0,0.5,101.0,0.5\n"
        "s,0,200.0,0.5,102.0,0.6\ns,0,200.0,0.5,103.0,0.6\n")
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in r.stdout.splitlines() if line.startswith("| ")]
    assert rows[1][8] == "500.0" and rows[2][8] == "600.0"

"""bench/serve_steps.py: serving replays compared from steps.csv alone (plain or .gz), over a
common window, the first replay the reference."""
import gzip
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "bench", "serve_steps.py")
HEAD = ("step,t_start_s,t_end_s,running,waiting,seqs,prefill_tokens,decode_tokens,tokens,"
        "kv_tokens,latency_ms,energy_j,power_avg_w,power_peak_w,gpu_temp_peak_c,"
        "mem_temp_peak_c,source\n")


def steps(energy, hbm):
    """ten 1 s steps, 100 decode + 50 prefill tokens each"""
    rows = [f"{i},{i}.0,{i + 1}.0,4,{i},4,50,100,150,400,10.0,{energy},{energy},{energy},"
            f"50,{hbm + i},nvml\n" for i in range(10)]
    return HEAD + "".join(rows)


def test_window_and_reference(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "steps.csv").write_text(steps(200.0, 60))
    with gzip.open(tmp_path / "b" / "steps.csv.gz", "wt") as f:
        f.write(steps(150.0, 50))
    r = subprocess.run([sys.executable, TOOL, "--from", "2", "--to", "8", "--bins", "5",
                        f"fp16={tmp_path / 'a'}", f"q4={tmp_path / 'b'}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = {l.split("|")[1].strip(): l for l in r.stdout.splitlines() if l.startswith("| ")}
    # steps 2..7 lie in [2, 8]: 6 steps, 600 decode tokens; 1200 J -> 2 J per decode token
    assert "| fp16 | 6 | 2.0000 | 200.0 | 600 / 300 |" in rows["fp16"], rows["fp16"]
    # q4: 1.5 J per token (-25%), HBM peak 57 against 67 C
    assert "1.5000 (-25.0%)" in rows["q4"] and "57 (-10.0)" in rows["q4"], rows["q4"]
    assert "| 0 | 200 / 2.0000 / 64 / 4 |" in r.stdout  # the first 5 s bin of fp16
    assert "| 7 | - | nvml |" in rows["fp16"]  # no active_experts column: "-"


def test_active_experts(tmp_path):
    (tmp_path / "a").mkdir()
    head = HEAD.replace("mem_temp_peak_c,source", "mem_temp_peak_c,active_experts,source")
    rows = [f"{i},{i}.0,{i + 1}.0,4,0,4,50,100,150,400,10.0,100,100,100,50,60,{4 + i % 2},sim\n"
            for i in range(4)]
    (tmp_path / "a" / "steps.csv").write_text(head + "".join(rows))
    r = subprocess.run([sys.executable, TOOL, f"a={tmp_path / 'a'}"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "| 4.50 | sim |" in r.stdout, r.stdout  # mean of 4, 5, 4, 5


def test_not_a_steps_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "steps.csv").write_text("x,y\n1,2\n")
    r = subprocess.run([sys.executable, TOOL, f"a={tmp_path / 'a'}"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "expected a thermoe serve steps.csv" in r.stderr

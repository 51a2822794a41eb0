"""bench/serve_table.py: replays at two expert types named strategy@type against baseline at
the wider one, and, with two or more passes, the change paired by pass with a t interval."""
import json
import subprocess
import sys

from conftest import SOURCE

TABLE = SOURCE / "bench" / "serve_table.py"


def replay(root, name, strategy, etype, j, hbm, active=None):
    d = root / name
    d.mkdir()
    w = {"j_per_generated_token": j, "ttft_p99_s": 1.0, "tpot_p99_s": 0.01,
         "gpu_temp_peak_c": 60.0, "mem_temp_peak_c": hbm}
    if active is not None:
        w["active_experts"] = active
    (d / "summary.json").write_text(json.dumps({
        "metadata": {"routing_strategy": strategy, "expert_type": etype, "device_name": "X"},
        "window": w, "steady_state": {"detected": True}, "source": "nvml"}))


def test_types_and_passes(tmp_path):
    replay(tmp_path, "r1_baseline_fp16", "baseline", "fp16", 0.14, 70.0)
    replay(tmp_path, "r1_predictive_thermal_q4", "predictive_thermal", "q4", 0.12, 58.0)
    replay(tmp_path, "r2_baseline_fp16", "baseline", "fp16", 0.15, 71.0)
    replay(tmp_path, "r2_predictive_thermal_q4", "predictive_thermal", "q4", 0.126, 60.0)
    r = subprocess.run([sys.executable, str(TABLE), str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(l.startswith("| baseline@fp16 | 2 |") for l in lines), r.stdout
    # per pass -14.29% and -16.00%: mean -15.1%, t(1) interval [-26.0, -4.3]; HBM -12 and -11 C
    paired = [l for l in lines if l.startswith("| predictive_thermal@q4 | 2 | -15.1%")]
    assert paired and "[-26.0, -4.3]" in paired[0] and "-11.5 C [-17.9, -5.1]" in paired[0], r.stdout


def test_one_pass_has_no_paired_table(tmp_path):
    replay(tmp_path, "r1_baseline", "baseline", "fp16", 0.14, 70.0)
    replay(tmp_path, "r1_predictive_thermal", "predictive_thermal", "fp16", 0.12, 69.0)
    r = subprocess.run([sys.executable, str(TABLE), str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "Paired by pass" not in r.stdout
    assert "0.12 (-14.3%)" in r.stdout
    assert "| 69.0 (-1.0 C) | n/a |" in r.stdout  # no active_experts in these summaries


def test_active_experts(tmp_path):
    replay(tmp_path, "r1_baseline", "baseline", "fp16", 0.14, 70.0, 4.66)
    replay(tmp_path, "r1_predictive_thermal", "predictive_thermal", "fp16", 0.12, 69.0, 3.73)
    r = subprocess.run([sys.executable, str(TABLE), str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "| 4.66 |" in r.stdout and "| 3.73 (-0.93) |" in r.stdout, r.stdout

"""thermoe.load_run on a run that `thermoe run` writes on the simulated GPU: types from the
C schema, per-expert and per-device lists exploded, unknown cells NaN, metadata."""

import subprocess

import numpy as np
import pytest

import thermoe
from conftest import need_env


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    bin_ = need_env("THERMOE_BIN")
    out = tmp_path_factory.mktemp("run") / "r"
    subprocess.run([bin_, "run", "--backend", "cpu", "--telemetry", "sim", "--moe-only",
                    "--num-experts", "8", "--top-k", "2", "--warmup-batches", "0",
                    "--trace-batches", "0", "--quiet", "--no-analyze", "--workloads", "standard",
                    "--routing-strategy", "baseline,kernel_aware_ttha",
                    "--num-samples-per-workload", "3", "--out", str(out)],
                   check=True, timeout=300, capture_output=True)
    return out


def test_load_run(run_dir):
    run = thermoe.load_run(run_dir)
    b = run.batches
    assert len(b) == 6 and set(b["strategy"]) == {"baseline", "kernel_aware_ttha"}
    assert b["tokens"].dtype == "Int64" and b["energy_j"].dtype == float
    assert (b["telemetry_source"] == "sim").all() and (b["energy_j"] > 0).all()
    usage = b[[f"expert_usage_counts_{e}" for e in range(8)]]
    assert (usage.sum(axis=1) == b["tokens"] * 2).all()
    assert "expert_usage_counts" not in b.columns and "biases_7" in b.columns
    ex = run.experts
    assert len(ex) == 6 * 8 and list(ex["expert"][:8]) == list(range(8))
    per_batch = ex.groupby("row")["expert_usage_counts"].sum()
    assert (per_batch.to_numpy() == (b["tokens"] * 2).to_numpy()).all()
    assert set(ex.columns) >= {"strategy", "batch_idx", "expert_time_ms", "biases"}
    dev = run.devices
    assert len(dev) == 6 and (dev["device_energy_j"].to_numpy() == b["energy_j"].to_numpy()).all()
    assert run.metadata["telemetry"]["source"] == "sim" and run.metadata["status"] == "complete"
    assert thermoe.runlog.schema()["expert_usage_counts"] == "list_int"


def test_unknown_cells_are_nan(run_dir, tmp_path):
    text = (run_dir / "batches.csv").read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("latency_ms")] = "nan"
    row[header.index("energy_j")] = ""
    (tmp_path / "batches.csv").write_text("\n".join([text[0], ",".join(row)]) + "\n")
    b = thermoe.load_run(tmp_path).batches
    assert np.isnan(b["latency_ms"][0]) and np.isnan(b["energy_j"][0])
    assert b["tokens"][0] == int(row[header.index("tokens")])


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="batches.csv"):
        thermoe.load_run(tmp_path)
    (tmp_path / "batches.csv").write_text("time,tokens\n1.0,12\n2.0,twelve\n")
    with pytest.raises(ValueError, match="line 3, column tokens"):
        thermoe.load_run(tmp_path)

"""bench/ref/serve_ref.py (transformers with static batching on a serve replay's requests)
on the tiny Mixtral reference checkpoint: every request is counted once at its own length,
the step stamps give TTFT and TPOT, and a bad requests.csv names file and line. Skips when
torch or transformers is absent."""

import csv
import importlib.util
import json

import pytest

pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("transformers", reason="transformers is not installed")


def load(source_dir):
    spec = importlib.util.spec_from_file_location("serve_ref",
                                                  source_dir / "bench" / "ref" / "serve_ref.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_requests(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request", "arrival_s", "prompt_tokens", "generated_tokens"])
        for i, r in enumerate(rows):
            w.writerow([i, *r])


def test_static_batches(source_dir, tmp_path):
    mod = load(source_dir)
    req = tmp_path / "requests.csv"
    write_requests(req, [(0.0, 5, 3), (0.01, 9, 1), (0.02, 4, 6)])
    out = tmp_path / "ref.json"
    lm = source_dir / "tests" / "data" / "lm"
    mod.main(["--model", str(lm / "mixtral"), "--tokens", str(lm / "text.tokens"),
              "--requests", str(req), "--batch", "1,2", "--device", "cpu", "--dtype", "fp32",
              "--json", str(out)])
    runs = json.load(open(out))["runs"]
    assert [r["batch"] for r in runs] == [1, 2]
    for r in runs:
        assert r["requests"] == 3 and r["generated_tokens"] == 10
        assert r["tokens_per_s"] > 0 and r["seconds"] > 0
        assert 0 < r["tpot_s"]["50"] <= r["tpot_s"]["99"]
        assert r["ttft_s"]["50"] <= r["ttft_s"]["99"]


def test_bad_requests(source_dir, tmp_path):
    mod = load(source_dir)
    req = tmp_path / "requests.csv"
    write_requests(req, [(0.0, 5, 3), ("soon", 9, 1)])
    with pytest.raises(SystemExit) as e:
        mod.read_requests(str(req), 0)
    assert f"{req}:3:" in str(e.value)

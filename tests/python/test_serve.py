"""thermoe.serve and thermoe.load_serve: the replay from Python gives the command's figures
on the same arguments; every request is served once and never before it arrives; a bad
trace names file, line and field; the files it writes load back."""
import json
import subprocess

import numpy as np
import pytest

import thermoe
from conftest import SOURCE, need_env

ARGS = dict(model=str(SOURCE / "models" / "default"),
            tokens=str(SOURCE / "data" / "corpus" / "test.tokens"))


def test_matches_the_command(tmp_path):
    bin_ = need_env("THERMOE_BIN")
    out = tmp_path / "cli"
    subprocess.run([bin_, "serve", "--requests", "30", "--routing-strategy",
                    "predictive_thermal", "--expert-type", "q4", "--budget", "top1",
                    "--model", ARGS["model"], "--tokens", ARGS["tokens"], "--out", str(out),
                    "--quiet"], check=True, capture_output=True)
    cli = json.loads((out / "summary.json").read_text())
    r = thermoe.serve(requests=30, strategy="predictive_thermal", expert_type="q4",
                      router={"budget": "top1"}, **ARGS)
    assert r.summary["source"] == "sim" and not r.interrupted
    for k in ("j_per_generated_token", "ttft_p99_s", "tpot_p99_s", "energy_j"):
        assert r.summary["window"][k] == pytest.approx(cli["window"][k], rel=1e-12), k
    assert r.summary["steps"] == cli["steps"]


def test_requests_served_once_in_order(tmp_path):
    trace = SOURCE / "tests" / "data" / "serve" / "small.csv"
    r = thermoe.serve(trace, time_scale=100, max_seqs=4, max_batch_tokens=64,
                      out=tmp_path / "s", **ARGS)
    q = r.requests
    assert len(q) == 6 and r.summary["requests"] == 6
    assert np.all(np.isfinite(q.finish_s))  # every request finished
    assert np.all(q.first_token_s >= q.arrival_s) and np.all(q.finish_s >= q.first_token_s)
    assert np.all(q.admit_s >= q.arrival_s)
    assert int(q.gen.sum()) == r.summary["generated_tokens"]
    run = thermoe.load_serve(tmp_path / "s")
    assert len(run.requests) == 6 and run.summary["metadata"]["expert_type"] == "fp16"
    assert run.summary["metadata"]["argv"] == "python: thermoe.serve"
    assert (run.steps.source == "sim").all()


def test_int8_activations(tmp_path):
    """act8 (the command's --expert-activations int8) reaches the model and the metadata; it is
    an error for experts that are not q4 or q2"""
    r = thermoe.serve(requests=8, expert_type="q4", act8=1, out=tmp_path / "s", **ARGS)
    assert r.summary["requests"] == 8 and not r.interrupted
    meta = thermoe.load_serve(tmp_path / "s").summary["metadata"]
    assert meta["expert_type"] == "q4" and meta["expert_activations"] == "int8"
    with pytest.raises(thermoe.ThermoeError, match="int8 activations are for q4 or q2 experts"):
        thermoe.serve(requests=4, expert_type="fp16", act8=1, **ARGS)


def test_bad_trace_and_keywords():
    with pytest.raises(thermoe.ThermoeError, match=r"negative_length.csv:3: ContextTokens"):
        thermoe.serve(SOURCE / "tests" / "data" / "serve" / "negative_length.csv", **ARGS)
    with pytest.raises(TypeError, match="unknown keyword 'max_seq'"):
        thermoe.serve(requests=5, max_seq=4, **ARGS)
    with pytest.raises(ValueError, match="synthetic"):
        thermoe.serve(synthetic="poisson", **ARGS)
    with pytest.raises(ValueError, match="expert_type"):
        thermoe.serve(requests=5, expert_type="q3", **ARGS)


def test_load_serve_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="requests.csv"):
        thermoe.load_serve(tmp_path)


def test_ctrl_c_stops_after_the_step(tmp_path):
    """SIGINT to a Python process in the middle of a replay: the replay stops after its step
    and the partial result comes back (interrupted), the files cover what ran."""
    import os
    import signal
    import sys
    import time

    code = (
        "import signal, sys, thermoe\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # even where inherited ignored\n"
        "print('start', flush=True)\n"
        f"r = thermoe.serve(requests=20000, time_scale=2000, max_context=384, max_generated=128,"
        f" max_seqs=64, max_batch_tokens=512, out={str(tmp_path / 'i')!r}, model={ARGS['model']!r},"
        f" tokens={ARGS['tokens']!r})\n"
        "print('interrupted', r.interrupted, len(r.requests), r.summary['requests'], flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert p.stdout.readline().strip() == "start"
    steps = tmp_path / "i" / "steps.csv"
    for _ in range(600):  # until the replay has run some steps
        if steps.is_file() and steps.stat().st_size > 4000:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    words = out.split()
    assert words[:2] == ["interrupted", "True"], out + err
    # the rows are the requests that had arrived when it stopped, as the summary counts them
    assert 0 < int(words[2]) < 20000 and words[2] == words[3], out
    assert json.loads((tmp_path / "i" / "summary.json").read_text())["interrupted"] is True


def test_nvml_wall_clock(monkeypatch):
    """telemetry="nvml" (a fake libnvidia-ml): the wall clock, every figure labelled nvml; the
    default expert shape falls back to the trained one on the CPU backend, as the command's"""
    monkeypatch.setenv("THERMOE_NVML_LIB", need_env("THERMOE_FAKE_NVML"))
    trace = SOURCE / "tests" / "data" / "serve" / "small.csv"
    r = thermoe.serve(trace, time_scale=10, telemetry="nvml", **ARGS)
    assert r.summary["source"] == "nvml" and r.summary["requests"] == 6
    assert (r.requests.finish_s >= 0.1).any()  # the last request arrives 100 ms after the first

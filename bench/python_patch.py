#!/usr/bin/env python3
"""Perplexity and energy per token of each routing strategy, in transformers patched with
thermoe's routers (thermoe.integrations.transformers.patch) next to thermoe's own engine
(`thermoe eval`) on the same tokens. For a GPU machine (docs/python.md); writes
bench/results/python_patch/<date>.{md,json}.

Per strategy, transformers: the model (bf16 on the GPU) scores --max-windows windows of
--seq-len tokens with the strategy's router in every sparse block; a Monitor window around
the whole scoring gives the energy (its method and source are in the table), divided by the
scored tokens. thermoe's engine: `thermoe eval --backend cuda --routing-strategy S --json`
on the same token file and windows, inside a Monitor window of its own (so its energy
includes loading the model, which the table says). Strategies run interleaved over
--repeats, with --rest-s of rest before each, as DESIGN.md asks of GPU timings.

usage: python3 bench/python_patch.py [--model models/default] [--tokens data/corpus/test.tokens]
           [--strategies baseline,static_optimal,...] [--thermoe build-bench/thermoe] [--device cuda]
Needs: pip install .[transformers] (or THERMOE_LIBRARY / THERMOE_API and PYTHONPATH=python).
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

import thermoe
from thermoe._core import check, new_error
from thermoe._ffi import ffi, lib
from thermoe.integrations.transformers import find_moe_blocks, patch

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = "baseline,static_optimal,kernel_aware_ttha,hierarchical_adaptive,predictive_thermal"


def read_tokens(path):
    t, err = ffi.new("tmoe_tokens *"), new_error()
    check(lib.tmoe_tokens_read(os.fsencode(path), t, err), err)
    ids = np.frombuffer(ffi.buffer(t.ids, 4 * t.n), dtype=np.uint32).astype(np.int64)
    lib.tmoe_tokens_free(t)
    return ids


def windows(ids, seq_len, max_windows):
    n = len(ids) // seq_len
    if max_windows:
        n = min(n, max_windows)
    return torch.from_numpy(ids[: n * seq_len].reshape(n, seq_len))


def score(model, wins, device, batch):
    """Mean next-token NLL over every window (each token after the first)."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(wins), batch):
            x = wins[i : i + batch].to(device)
            logits = model(x).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll -= lp.gather(2, x[:, 1:, None]).sum().item()
            count += x[:, 1:].numel()
    return nll / count, count


def routers(strategy, cm, expert_type, profile_rows):
    def make(layer, block):
        E, k = block.gate.num_experts, block.gate.top_k
        r = thermoe.Router(strategy, E, k, cm, expert_types=expert_type)
        if strategy == "static_optimal":
            r.fit_static(profile_rows[block], 32)
        return r

    return make


def profile_logits(model, wins, device):
    """Gate logits of the first window per block, the static_optimal fit's profile."""
    rows, hooks = {}, []
    for block in find_moe_blocks(model).values():
        def hook(mod, args, out, block=block):
            rows.setdefault(block, out[0].detach().float().cpu().numpy())
        hooks.append(block.gate.register_forward_hook(hook))
    with torch.no_grad():
        model(wins[:1].to(device))
    for h in hooks:
        h.remove()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--tokens", default=str(ROOT / "data" / "corpus" / "test.tokens"))
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-windows", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--cost-model", default=str(ROOT / "data" / "h100_cost_model.json"))
    ap.add_argument("--expert-type", default="fp16", help="expert type the cost model prices")
    ap.add_argument("--thermoe", default=str(ROOT / "build-bench" / "thermoe"),
                    help="thermoe program for the engine's rows ('' to skip them)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--source", default="nvml", help="Monitor source: nvml, sim or auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rest-s", type=float, default=20.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "python_patch"))
    a = ap.parse_args()
    if a.seq_len < 2 or a.repeats < 1 or a.batch < 1:
        ap.error("--seq-len must be >= 2, --repeats and --batch >= 1")

    ids = read_tokens(a.tokens)
    wins = windows(ids, a.seq_len, a.max_windows)
    if len(wins) == 0:
        sys.exit(f"{a.tokens}: fewer than --seq-len {a.seq_len} tokens")
    cm = thermoe.CostModel.load(a.cost_model)
    mon = thermoe.Monitor(a.source)
    print(mon.choice, file=sys.stderr)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device).eval()
    prof = profile_logits(model, wins, a.device)
    strategies = a.strategies.split(",")
    rows = []
    for rep in range(a.repeats):
        order = strategies[rep % len(strategies):] + strategies[: rep % len(strategies)]
        for s in order:
            time.sleep(a.rest_s) if a.source != "sim" else None
            p = patch(model, router=routers(s, cm, a.expert_type, prof))
            mon.begin_window("tf")
            nll, n = score(model, wins, a.device, a.batch)
            m = mon.end_window("tf")
            p.restore()
            rows.append({"impl": "transformers+thermoe.patch", "strategy": s, "repeat": rep,
                         "tokens": n, "nll": nll, "ppl": math.exp(nll), "time_s": m.time,
                         "energy_j": m.total_energy, "energy_j_per_token": m.total_energy / n,
                         "energy_method": m.energy_method, "source": m.source,
                         "gpu_temp_peak_c": m.gpu_temp_peak_c, "mem_temp_peak_c": m.mem_temp_peak_c})
            print(json.dumps(rows[-1]), file=sys.stderr)
            if not a.thermoe or s == "static_optimal":  # thermoe eval has no static fit
                continue
            time.sleep(a.rest_s) if a.source != "sim" else None
            cmd = [a.thermoe, "eval", "--model", a.model, "--tokens", a.tokens, "--seq-len",
                   str(a.seq_len), "--max-windows", str(len(wins)), "--batch", str(a.batch),
                   "--backend", "cuda" if a.device == "cuda" else "cpu", "--expert-type", "fp16",
                   "--routing-strategy", s, "--kernel-cost-model-json", a.cost_model, "--json"]
            mon.begin_window("engine")
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            m = mon.end_window("engine")
            ev = json.loads(res.stdout)
            n_eng = ev.get("tokens_scored") or n
            rows.append({"impl": "thermoe eval (energy includes loading)", "strategy": s,
                         "repeat": rep, "tokens": n_eng, "nll": ev.get("nll_mean", math.nan),
                         "ppl": ev.get("perplexity", math.nan), "time_s": m.time,
                         "energy_j": m.total_energy, "energy_j_per_token": m.total_energy / n_eng,
                         "energy_method": m.energy_method, "source": m.source,
                         "gpu_temp_peak_c": m.gpu_temp_peak_c, "mem_temp_peak_c": m.mem_temp_peak_c})
            print(json.dumps(rows[-1]), file=sys.stderr)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    meta = {"model": a.model, "tokens": a.tokens, "seq_len": a.seq_len, "windows": len(wins),
            "cost_model": a.cost_model, "telemetry": mon.choice, "device": mon.device_info(),
            "torch": torch.__version__, "thermoe": thermoe.__version__, "repeats": a.repeats}
    (out / f"{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    lines = [f"# Perplexity and energy per token per strategy ({mon.choice})", "",
             "| implementation | strategy | repeats | perplexity | mJ/token (mean) | energy method | source |",
             "|---|---|---|---|---|---|---|"]
    for impl in dict.fromkeys(r["impl"] for r in rows):
        for s in strategies:
            rs = [r for r in rows if r["impl"] == impl and r["strategy"] == s]
            if rs:
                lines.append(f"| {impl} | {s} | {len(rs)} | {np.mean([r['ppl'] for r in rs]):.4f} | "
                             f"{1e3 * np.mean([r['energy_j_per_token'] for r in rs]):.3f} | "
                             f"{','.join(sorted({r['energy_method'] for r in rs}))} | {rs[0]['source']} |")
    (out / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""transformers with static batching on the requests of a `thermoe serve` replay: the
reference the serving issue compares continuous batching with.

The requests (arrival_s, prompt_tokens, generated_tokens of requests.csv, so the same
arrivals and lengths thermoe served) are taken in arrival order in batches of B; a batch
starts when its last request has arrived and the previous batch has finished (a static
batching server). Its prompts (consecutive ids of the token file) are left-padded to the
longest, and model.generate runs greedy for the batch's longest generated length (no early
stop: every request's length is fixed by the trace); a request is done at the step of its own
length, and the steps past it are the batch's waste. A logits processor stamps every step
(after a device synchronize), so per request: TTFT = first step - arrival, TPOT = (own last
step - first step) / (generated - 1). Per batch size: generated tokens/s over the makespan
(first arrival to last finish), TTFT and TPOT p50/p90/p99. One markdown row per batch size,
and --json FILE for all of them.

usage: python3 bench/ref/serve_ref.py --model DIR --tokens FILE --requests requests.csv
           [--batch 1,8,32] [--device cuda|cpu] [--dtype bf16|fp32] [--max-requests N]
           [--no-wait] [--json FILE]"""
import argparse
import csv
import importlib.util
import json
import os
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList


def _token_reader():
    """read_tokens of tools/tokenize.py, loaded by path (its name is also the standard
    library's tokenize, which torch has already imported)."""
    p = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                     "tokenize.py")
    spec = importlib.util.spec_from_file_location("thermoe_tokenize", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.read_tokens


class StepClock(LogitsProcessor):
    """Stamps the time each step's logits are ready (its token is then chosen)."""

    def __init__(self, sync):
        self.t = []
        self.sync = sync

    def __call__(self, input_ids, scores):
        if self.sync:
            torch.cuda.synchronize()
        self.t.append(time.perf_counter())
        return scores


def pct(v, p):
    """Percentile by linear interpolation between closest ranks (numpy's default)."""
    if not v:
        return float("nan")
    s = sorted(v)
    x = (len(s) - 1) * p / 100.0
    lo = int(x)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def read_requests(path, limit):
    reqs = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                r = (float(row["arrival_s"]), int(row["prompt_tokens"]),
                     int(row["generated_tokens"]))
            except (KeyError, ValueError) as e:
                sys.exit(f"{path}:{i}: arrival_s, prompt_tokens, generated_tokens expected: {e}")
            if r[1] < 1 or r[2] < 1:
                sys.exit(f"{path}:{i}: a request needs a prompt and a generated token")
            reqs.append(r)
    reqs.sort()
    return reqs[:limit] if limit else reqs


def replay(model, ids, reqs, B, dev, wait):
    sync = dev.startswith("cuda")
    at = 0  # next id of the token file
    ttft, tpot, done = [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(reqs), B):
        batch = reqs[i:i + B]
        if wait:
            lag = batch[-1][0] - (time.perf_counter() - t0)
            if lag > 0:
                time.sleep(lag)
        P = max(r[1] for r in batch)
        G = max(r[2] for r in batch)
        inp = torch.zeros((len(batch), P), dtype=torch.long)
        mask = torch.zeros((len(batch), P), dtype=torch.long)
        for j, r in enumerate(batch):
            if at + r[1] > len(ids):
                at = 0
            inp[j, P - r[1]:] = torch.tensor(ids[at:at + r[1]])
            mask[j, P - r[1]:] = 1
            at += r[1]
        clock = StepClock(sync)
        model.generate(inp.to(dev), attention_mask=mask.to(dev), max_new_tokens=G,
                       min_new_tokens=G, do_sample=False, pad_token_id=0,
                       logits_processor=LogitsProcessorList([clock]))
        if len(clock.t) != G:
            sys.exit(f"internal: {len(clock.t)} steps stamped for {G} generated tokens")
        for r in batch:
            first = clock.t[0] - t0
            fin = clock.t[r[2] - 1] - t0
            ttft.append(first - r[0])
            if r[2] > 1:
                tpot.append((fin - first) / (r[2] - 1))
            done.append(fin)
    span = max(done) - reqs[0][0]
    gen = sum(r[2] for r in reqs)
    return {"batch": B, "requests": len(reqs), "generated_tokens": gen, "seconds": span,
            "tokens_per_s": gen / span,
            "ttft_s": {p: pct(ttft, p) for p in (50, 90, 99)},
            "tpot_s": {p: pct(tpot, p) for p in (50, 90, 99)}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--requests", required=True, help="requests.csv of a thermoe serve run")
    ap.add_argument("--batch", default="1,8,32", help="static batch sizes to replay")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--max-requests", type=int, default=0)
    ap.add_argument("--no-wait", action="store_true", help="ignore arrivals (offline)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    sizes = [int(b) for b in a.batch.split(",")]
    if any(b < 1 for b in sizes):
        sys.exit("--batch: sizes must be positive")
    reqs = read_requests(a.requests, a.max_requests)
    if not reqs:
        sys.exit(f"{a.requests}: no requests")
    ids = _token_reader()(a.tokens)
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dt).to(a.device).eval()
    rows = []
    print("| implementation | batching | tokens/s | TTFT p50 / p99 s | TPOT p50 / p99 ms |")
    print("|---|---|--:|--:|--:|")
    with torch.inference_mode():
        replay(model, ids, reqs[:min(len(reqs), 2)], 2, a.device, False)  # warm-up
        for B in sizes:
            r = replay(model, ids, reqs, B, a.device, not a.no_wait)
            rows.append(r)
            print(f"| transformers {a.dtype} ({a.device}) | static, batch {B} | "
                  f"{r['tokens_per_s']:.1f} | {r['ttft_s'][50]:.3f} / {r['ttft_s'][99]:.3f} | "
                  f"{1e3 * r['tpot_s'][50]:.2f} / {1e3 * r['tpot_s'][99]:.2f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "requests_csv": a.requests, "device": a.device,
                       "dtype": a.dtype, "wait_for_arrivals": not a.no_wait,
                       "torch": torch.__version__,
                       "transformers": transformers.__version__, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""The serving replay from Python (docs/serve.md): ``serve`` replays a trace (Azure CSV,
Mooncake JSONL) or a synthetic fit to one against the decoder LM with continuous batching
(tmoe_serve_run, the library behind ``thermoe serve``), and ``load_serve`` reads a serve
directory into pandas. Every figure carries its source: "sim" (the simulated H100, simulated
seconds) or "nvml" (measured, wall-clock seconds)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import pandas as pd

from ._core import check, cstr, enum_value, new_error, set_field, struct_to_dict
from ._ffi import ffi, lib

_NP = {"double": np.float64, "int": np.int32, "long": np.int64, "float": np.float32}


def _request_dtype() -> np.dtype:
    """tmoe_serve_request as a numpy structured dtype, field offsets as the C compiler laid
    them out (from the headers: a new field shows up by itself)."""
    t = ffi.typeof("tmoe_serve_request")
    names = [n for n, _ in t.fields]
    return np.dtype({"names": names,
                     "formats": [_NP[f.type.cname] for _, f in t.fields],
                     "offsets": [f.offset for _, f in t.fields],
                     "itemsize": ffi.sizeof(t)})


@dataclass
class ServeResult:
    """One replay. ``summary``: tmoe_serve_summary as a dict (``window``: the figures over the
    steady state, or over the whole run when none was found, ``steady`` and ``steady_note``
    say which; ``run``: the whole run; ``source``; ``interrupted``). ``requests``: one row
    per request of the trace (arrival_s, admit_s, first_token_s, finish_s, energy_j, prompt,
    gen, steps; NaN where it did not happen). ``trace``: where the arrivals came from;
    ``capped``: requests whose lengths the scale or caps changed. ``out``: the directory
    written (None without ``out``)."""

    summary: Dict[str, Any]
    requests: pd.DataFrame
    trace: str
    capped: int
    out: Optional[str] = None

    @property
    def interrupted(self) -> bool:
        return bool(self.summary.get("interrupted"))


def _set(cfg: Any, ctype: str, name: str, value: Any, keep: list) -> None:
    set_field(cfg, ctype, name, value, keep, "serve")


def serve(
    trace: Union[str, os.PathLike, None] = None,
    *,
    format: str = "auto",
    synthetic: str = "azure_conv",
    requests: int = 2000,
    max_requests: int = 0,
    time_scale: float = 1.0,
    context_scale: float = 1.0,
    max_context: int = 96,
    max_generated: int = 32,
    duration: float = 0.0,
    strategy: str = "baseline",
    expert_type: str = "fp16",
    expert_shape: Optional[str] = None,
    model: Union[str, os.PathLike, None] = None,
    tokens: Union[str, os.PathLike, None] = None,
    out: Union[str, os.PathLike, None] = None,
    router: Optional[Mapping[str, Any]] = None,
    **config: Any,
) -> ServeResult:
    """Replay request arrivals as ``thermoe serve`` does (the same defaults)::

        res = thermoe.serve("azure_llm_2023_conv.csv", max_requests=500,
                            strategy="predictive_thermal", expert_type="q4",
                            router={"budget": "top1"})
        res.summary["window"]["j_per_generated_token"], res.requests.finish_s

    trace: a file (format auto, azure or mooncake); None replays the synthetic fit named
    ``synthetic`` (azure_conv, azure_code, mooncake) with ``requests`` requests (as many as
    arrive within ``duration`` when that is set and requests is 0). max_requests, time_scale,
    context_scale, max_context, max_generated and duration shape the arrivals as the
    command's flags do. strategy and expert_type pick the routing and the experts' type,
    expert_shape the experts billed or run beside the trained ones (mixtral, trained or DxF;
    None: mixtral, falling back to trained where that cannot run, as the command does);
    ``router`` sets tmoe_router_config fields by name (budget, kl_base, ...). Any other
    keyword sets the tmoe_serve_config field of that name (max_seqs, max_batch_tokens,
    prefill_chunk, kv_tokens, slo_ttft_s, slo_tpot_s, temp_target_c, backend, telemetry,
    device_id, seed, group_size, act8 (1: q4 / q2 experts with int8 activations, the command's
    --expert-activations int8), cost_model_path); an unknown one is a TypeError. With
    ``out`` the replay writes requests.csv, steps.csv, timeline.csv and summary.json there.
    A bad trace raises ThermoeError naming the file, the line and the field. Ctrl-C stops the
    replay after the step in progress; the partial result comes back with
    ``interrupted`` True (and the files, with ``out``, cover what ran)."""
    keep: list = []
    err = new_error()
    ao = ffi.new("tmoe_arrivals_opts *", lib.tmoe_arrivals_opts_default())
    ao.format = enum_value("tmoe_arrivals_format", format, "format")
    ao.max_requests = int(max_requests)
    ao.time_scale = float(time_scale)
    ao.context_scale = float(context_scale)
    ao.max_context = int(max_context)
    ao.max_generated = int(max_generated)
    ao.duration_s = float(duration)
    arr = ffi.new("tmoe_arrivals *")
    if trace is not None:
        check(lib.tmoe_arrivals_read(os.fsencode(trace), ao, arr, err), err)
    else:
        p = lib.tmoe_arrivals_synth_find(synthetic.encode())
        if p == ffi.NULL:
            raise ValueError(f"synthetic: expected azure_conv, azure_code or mooncake, got {synthetic!r}")
        n = 0 if duration > 0 and requests == 0 else int(requests)
        seed = int(config.get("seed", 42))
        check(lib.tmoe_arrivals_generate(p, n, seed, ao, arr, err), err)
    try:
        c = ffi.new("tmoe_serve_config *", lib.tmoe_serve_config_default())
        _set(c, "tmoe_serve_config", "model_dir", model or cstr(lib.tmoe_run_default_model()), keep)
        if tokens is not None:
            _set(c, "tmoe_serve_config", "tokens_path", tokens, keep)
        if out is not None:
            _set(c, "tmoe_serve_config", "out_dir", out, keep)
        c.strategy = enum_value("tmoe_route_strategy", strategy, "strategy")
        c.expert_type = enum_value("tmoe_etype", expert_type, "expert_type")
        if expert_shape is not None:  # else mixtral, or trained where that cannot run (as the command)
            check(lib.tmoe_expert_shape_parse(expert_shape.encode(), ffi.addressof(c, "expert_shape"), err), err)
            c.expert_shape_given = 1
        for name, value in (router or {}).items():
            _set(c.router, "tmoe_router_config", name, value, keep)
        temp_given = "temp_target_c" in config
        for name, value in config.items():
            _set(c, "tmoe_serve_config", name, value, keep)
        if not temp_given:
            c.temp_target_c = c.router.temp_target_c
        c.trace_time_scale = ao.time_scale
        c.trace_context_scale = ao.context_scale
        c.trace_max_context = ao.max_context
        c.trace_max_generated = ao.max_generated
        c.trace_duration_s = ao.duration_s
        line = ffi.new("char[]", b"python: thermoe.serve")
        keep.append(line)
        c.argv_line = line
        summ = ffi.new("tmoe_serve_summary *")
        reqp = ffi.new("tmoe_serve_request **")
        rc_box = [0]

        done = threading.Event()

        def work() -> None:
            try:
                rc_box[0] = lib.tmoe_serve_run(c, arr, summ, reqp, err)
            finally:
                done.set()

        # The replay runs in a thread (the C call releases the GIL) so that Ctrl-C reaches
        # this one: it asks the replay to stop after its step. The wait is on an Event, not
        # Thread.join, which an interrupt can leave believing the thread has ended; until the
        # replay returns, the memory it uses stays alive here.
        threading.Thread(target=work, name="thermoe-serve", daemon=True).start()
        stopping = False
        while not done.is_set():
            try:
                done.wait(0.2)
            except KeyboardInterrupt:
                if not stopping:
                    lib.tmoe_run_request_stop()
                    stopping = True
        rc = rc_box[0]
        if rc and rc != lib.TMOE_EINTR:
            check(rc, err)
        try:
            n = int(summ.requests) if summ.interrupted else int(arr.n)  # arrived, when stopped
            dt = _request_dtype()
            rows = np.frombuffer(ffi.buffer(reqp[0], n * dt.itemsize), dtype=dt).copy() if n else np.empty(0, dt)
            cols = {name: rows[name] for name in dt.names}
        finally:
            lib.tmoe_free(reqp[0])
        s = struct_to_dict(summ[0])
        s["source"] = cstr(summ.source)
        s["interrupted"] = bool(summ.interrupted)
        return ServeResult(s, pd.DataFrame(cols), cstr(arr.source), int(arr.capped),
                           os.fspath(out) if out is not None else None)
    finally:
        lib.tmoe_arrivals_free(arr)


@dataclass
class ServeRun:
    """A serve directory (``thermoe serve --out DIR``): ``requests``, ``steps`` and
    ``timeline`` as written (``nan`` cells are NaN, never 0), ``summary`` summary.json as a
    dict."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    timeline: pd.DataFrame
    summary: Dict[str, Any] = field(default_factory=dict)


def load_serve(path: Union[str, os.PathLike]) -> ServeRun:
    """Load a serve directory. Raises FileNotFoundError naming a missing file and ValueError
    for a summary.json that is not a serve summary."""
    d = Path(path)
    frames = {}
    for name in ("requests", "steps", "timeline"):
        p = d / f"{name}.csv"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file (expected a directory of thermoe serve)")
        frames[name] = pd.read_csv(p, na_values=["nan"], keep_default_na=False)
    sp = d / "summary.json"
    if not sp.is_file():
        raise FileNotFoundError(f"{sp}: no such file (a replay killed before its summary?)")
    with open(sp) as f:
        summary = json.load(f)
    if summary.get("schema") != "thermoe.serve/1":
        raise ValueError(f"{sp}: schema {summary.get('schema')!r}, expected 'thermoe.serve/1'")
    return ServeRun(frames["requests"], frames["steps"], frames["timeline"], summary)

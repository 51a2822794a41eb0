"""Reading a run directory (batches.csv + metadata.json, written by ``thermoe run``) into
pandas. The column types come from the C schema (tmoe_runlog_cols), so a column added to
the schema is parsed by its type without a change here."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import pandas as pd

from ._core import cstr
from ._ffi import MACROS, ffi, lib

# keys that identify a batch row in the long tables
_KEYS = ["run_id", "repeat", "workload", "strategy", "expert_type", "impl", "batch_idx"]


def schema() -> Dict[str, str]:
    """Column name -> type ("str", "int", "double", "list_int", "list_dbl"), file order."""
    out = {}
    for i in range(int(lib.TMOE_RL_NCOLS)):
        c = lib.tmoe_runlog_cols[i]
        out[cstr(c.name)] = ffi.typeof("tmoe_col_type").elements[c.type][len("TMOE_COL_"):].lower()
    return out


@dataclass
class Run:
    """One run directory. ``batches``: one row per batch; list cells (per expert, per
    device) exploded to columns ``<name>_<i>``. ``experts``: the per-expert lists in long
    form, one row per batch and expert (columns expert_usage_counts, expert_time_ms,
    biases), with the batch's identifying columns and ``row`` (its index in batches).
    ``devices``: the same per device. ``metadata``: metadata.json as a dict."""

    batches: pd.DataFrame
    experts: pd.DataFrame
    devices: pd.DataFrame
    metadata: Dict[str, Any] = field(default_factory=dict)


def _parse_list(cell: Any, conv: Any) -> List[Any]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell == "":
        return []
    return [conv(x) if x not in ("", "nan") else np.nan for x in str(cell).split(";")]


def load_run(path: Union[str, os.PathLike]) -> Run:
    """Load a run directory written by ``thermoe run --out DIR``. Unknown cells ("" or
    "nan") are NaN, never 0. Raises FileNotFoundError naming the missing file and
    ValueError naming file, line and column for a malformed cell."""
    d = Path(path)
    csv = d / MACROS.get("TMOE_RUNLOG_CSV", "batches.csv")
    meta_path = d / MACROS.get("TMOE_RUNLOG_METADATA", "metadata.json")
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: no such file (expected a run directory of thermoe run)")
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    types = schema()
    cols: Dict[str, Any] = {}
    lists: Dict[str, List[List[Any]]] = {}
    for name in raw.columns:
        kind = types.get(name, "str")
        s = raw[name]
        try:
            if kind in ("int", "double"):
                v = pd.to_numeric(s.replace({"": np.nan, "nan": np.nan}), errors="raise")
                cols[name] = v.astype("Int64") if kind == "int" else v.astype(float)
            elif kind in ("list_int", "list_dbl"):
                lists[name] = [_parse_list(c, float) for c in s]
            else:
                cols[name] = s
        except ValueError as e:
            bad = next(i for i, c in enumerate(s) if not _number_ok(c, kind))
            raise ValueError(f"{csv}: line {bad + 2}, column {name}: {e}") from None
    batches = pd.DataFrame(cols)
    for name, rows in lists.items():
        width = max((len(r) for r in rows), default=0)
        m = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            m[i, : len(r)] = r
        wide = pd.DataFrame(m, columns=[f"{name}_{i}" for i in range(width)], index=batches.index)
        if types.get(name) == "list_int":
            wide = wide.astype("Int64")
        batches = pd.concat([batches, wide], axis=1)
    metadata: Dict[str, Any] = {}
    if meta_path.is_file():
        metadata = json.loads(meta_path.read_text())
    keys = [k for k in _KEYS if k in batches.columns]
    experts = _long(batches, keys, lists, ["expert_usage_counts", "expert_time_ms", "biases"], "expert", types)
    devices = _long(batches, keys, lists, [n for n in lists if n.startswith("device_")], "device", types)
    return Run(batches=batches, experts=experts, devices=devices, metadata=metadata)


def _number_ok(cell: str, kind: str) -> bool:
    if cell in ("", "nan"):
        return True
    try:
        float(cell)
        return kind == "double" or float(cell).is_integer()
    except ValueError:
        return False


def _long(batches: pd.DataFrame, keys: List[str], lists: Dict[str, List[List[Any]]], names: List[str],
          index_name: str, types: Dict[str, str]) -> pd.DataFrame:
    names = [n for n in names if n in lists]
    rows: Dict[str, List[Any]] = {"row": [], index_name: [], **{k: [] for k in keys}, **{n: [] for n in names}}
    for i in range(len(batches)):
        width = max((len(lists[n][i]) for n in names), default=0)
        for j in range(width):
            rows["row"].append(i)
            rows[index_name].append(j)
            for k in keys:
                rows[k].append(batches[k].iloc[i])
            for n in names:
                r = lists[n][i]
                rows[n].append(r[j] if j < len(r) else np.nan)
    out = pd.DataFrame(rows)
    for n in names:
        if types.get(n) == "list_int":
            out[n] = out[n].astype("Int64")
    return out

"""The kernel cost model (JSON, schema thermoe.cost_model/1): lookups of what an op or a
whole expert costs at a token count, and the energy of a routing (compute_energy_loss)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ._core import as_array, check, cstr, enum_value, new_error, ptr, struct_to_dict
from ._ffi import ffi, lib

ExpertTypes = Union[str, Sequence[Union[str, int]], np.ndarray, None]


class CostModel:
    """A loaded cost model. ``CostModel.load(path)``; values are per call at the asked
    token count (latency in ms, energy in J, power in W, heating rate in C/s), interpolated
    in log(tokens) between measured counts; the model file says where it was measured
    (``meta``)."""

    def __init__(self, handle: Any) -> None:
        self._cm = handle

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "CostModel":
        """Load and validate a cost model file; a bad file raises ThermoeValueError naming
        the file, the entry and the field (or line:column for a syntax error)."""
        err, out = new_error(), ffi.new("tmoe_cost_model **")
        check(lib.tmoe_cost_load(os.fsencode(path), out, err), err)
        return cls(out[0])

    def close(self) -> None:
        lib.tmoe_cost_free(self._cm or ffi.NULL)
        self._cm = None

    def __del__(self) -> None:
        if getattr(self, "_cm", None) is not None:
            self.close()

    def __len__(self) -> int:
        return int(lib.tmoe_cost_count(self._cm))

    @property
    def source(self) -> str:
        """The file it was loaded from."""
        return cstr(lib.tmoe_cost_source(self._cm))

    @property
    def meta(self) -> Dict[str, Any]:
        """Device, telemetry, shape and idle power the costs were measured with."""
        return struct_to_dict(lib.tmoe_cost_get_meta(self._cm))

    @property
    def checksum(self) -> int:
        """FNV-1a 64 of the canonical JSON: identifies the costs a run used."""
        return int(lib.tmoe_cost_checksum(self._cm))

    def entries(self) -> "list[Dict[str, Any]]":
        """Every measured point, sorted by (op, expert_type, impl, tokens)."""
        out = []
        for i in range(len(self)):
            e = lib.tmoe_cost_entry_at(self._cm, i)
            d = struct_to_dict(e[0])
            d["kernels"] = [
                {"name": cstr(e.kernels[j].name), "count": e.kernels[j].count, "ms": e.kernels[j].ms}
                for j in range(e.n_kernels)
            ]
            out.append(d)
        return out

    def lookup(self, op: str, expert_type: str = "fp16", impl: str = "fused", tokens: float = 1) -> Dict[str, Any]:
        """Cost of one call of op (``"linear_fc1"``, ...) at tokens (>= 1)."""
        err, v = new_error(), ffi.new("tmoe_cost_value *")
        check(
            lib.tmoe_cost_lookup(
                self._cm,
                enum_value("tmoe_op", op, "op"),
                enum_value("tmoe_etype", expert_type, "expert_type"),
                enum_value("tmoe_impl", impl, "impl"),
                float(tokens),
                v,
                err,
            ),
            err,
        )
        return struct_to_dict(v[0])

    def expert(self, expert_type: str = "fp16", impl: str = "fused", tokens: float = 1) -> Dict[str, Any]:
        """Cost of one expert forward (its whole op sequence) for tokens tokens (0: zeros)."""
        err, v = new_error(), ffi.new("tmoe_cost_value *")
        check(
            lib.tmoe_cost_expert(
                self._cm,
                enum_value("tmoe_etype", expert_type, "expert_type"),
                enum_value("tmoe_impl", impl, "impl"),
                float(tokens),
                v,
                err,
            ),
            err,
        )
        return struct_to_dict(v[0])

    def energy_loss(
        self,
        expert_ids: Any,
        probs: Any,
        num_experts: Optional[int] = None,
        expert_types: ExpertTypes = "fp16",
        impl: str = "fused",
    ) -> float:
        """compute_energy_loss in J: the sum over tokens t and slots j of probs[t, j] times
        the board energy of expert expert_ids[t, j] at the number of (t, j) that chose it in
        this batch. expert_ids (T, k) ints in [0, num_experts) or -1 (dropped); probs (T, k);
        numpy arrays or torch tensors. expert_types: one type for every expert or one per
        expert; num_experts defaults to max(expert_ids) + 1 (or the length of expert_types)."""
        ids = as_array(expert_ids, np.int32, 2, "expert_ids")
        p = as_array(probs, np.float32, 2, "probs")
        if ids.shape != p.shape:
            raise ValueError(f"expert_ids shape {ids.shape} and probs shape {p.shape} differ")
        types = _expert_types(expert_types, num_experts, ids)
        err, out = new_error(), ffi.new("double *")
        check(
            lib.tmoe_cost_energy_loss(
                self._cm, ids.shape[0], ids.shape[1], ptr(ids, "int32_t *"), ptr(p, "float *"),
                len(types), ptr(types, "tmoe_etype *"), enum_value("tmoe_impl", impl, "impl"), out, err,
            ),
            err,
        )
        return float(out[0])

    def table(self, expert_types: ExpertTypes, num_experts: int, impl: str = "fused", max_tokens: int = 4096) -> "CostTable":
        """Per-expert cost tables over integer token counts (what the routers read)."""
        return CostTable(self, _expert_types(expert_types, num_experts, None), impl, max_tokens)


class CostTable:
    """tmoe_cost_table: every expert's cost at 0..max_tokens tokens, built once; the cost
    provider a Router reads. Keeps its cost model's values, not the model itself."""

    def __init__(self, cm: CostModel, types: np.ndarray, impl: str, max_tokens: int) -> None:
        err, out = new_error(), ffi.new("tmoe_cost_table **")
        check(
            lib.tmoe_cost_table_create(
                cm._cm, ptr(types, "tmoe_etype *"), len(types), enum_value("tmoe_impl", impl, "impl"),
                int(max_tokens), out, err,
            ),
            err,
        )
        self._t = out[0]
        self.expert_types = [cstr(lib.tmoe_etype_name(int(t))) for t in types]
        self.provider = lib.tmoe_cost_table_provider(self._t)

    def expert_cost(self, expert: int, tokens: float) -> Dict[str, float]:
        """Energy (J), latency (ms) and heating rate (C/s) of expert at tokens (real >= 0)."""
        err, c = new_error(), ffi.new("tmoe_expert_cost *")
        p = ffi.new("tmoe_cost_provider *", self.provider)
        check(lib.tmoe_route_cost_eval(p, int(expert), float(tokens), c, ffi.NULL, err), err)
        return struct_to_dict(c[0])

    def step_energy(self, expert_ids: Any) -> float:
        """Predicted energy of one MoE step in J (the run log's predicted_energy_j): the sum
        over the experts expert_ids touches of each one's energy at its number of token
        copies. expert_ids (T, k) ints in [0, num_experts), numpy array or torch tensor."""
        ids = as_array(expert_ids, np.int32, 2, "expert_ids")
        E = len(self.expert_types)
        if ids.size and (ids.min() < 0 or ids.max() >= E):
            raise ValueError(f"expert_ids must lie in [0, {E})")
        counts = np.bincount(ids.ravel(), minlength=E).astype(np.int32)
        err, out = new_error(), ffi.new("double *")
        p = ffi.new("tmoe_cost_provider *", self.provider)
        check(lib.tmoe_route_step_energy(p, ptr(counts, "int32_t *"), E, out, err), err)
        return float(out[0])

    def __del__(self) -> None:
        if getattr(self, "_t", None) is not None:
            lib.tmoe_cost_table_free(self._t)
            self._t = None


def _expert_types(expert_types: ExpertTypes, num_experts: Optional[int], ids: Optional[np.ndarray]) -> np.ndarray:
    if expert_types is None:
        expert_types = "fp16"
    if isinstance(expert_types, (str, int)):
        if num_experts is None:
            if ids is None:
                raise ValueError("num_experts is needed with a single expert type")
            num_experts = int(ids.max()) + 1 if ids.size else 1
        names = [expert_types] * int(num_experts)
    else:
        names = list(expert_types)
        if num_experts is not None and len(names) != num_experts:
            raise ValueError(f"expert_types has {len(names)} entries, num_experts is {num_experts}")
    return np.array([enum_value("tmoe_etype", t, "expert_types") for t in names], dtype=np.int32)


class AnalyticCost:
    """An analytic cost per expert e and field f: f_e(n) = fixed[e] + per_token[e] n +
    curve[e] log(1 + n) (energy in J, latency in ms, heating in C/s), for trying strategies
    without a measured cost model. Arrays (num_experts); missing ones are zeros."""

    _FIELDS = ("e_fixed", "e_per_token", "e_curve", "l_fixed", "l_per_token", "l_curve",
               "t_fixed", "t_per_token", "t_curve")

    def __init__(self, num_experts: int, **arrays: Any) -> None:
        unknown = set(arrays) - set(self._FIELDS)
        if unknown:
            raise TypeError(f"AnalyticCost: unknown {sorted(unknown)}; expected {list(self._FIELDS)}")
        self.num_experts = int(num_experts)
        self._keep = {}
        self._c = ffi.new("tmoe_analytic_cost *")
        self._c.num_experts = self.num_experts
        for name in self._FIELDS:
            a = np.ascontiguousarray(arrays.get(name, np.zeros(self.num_experts)), dtype=np.float64)
            if a.shape != (self.num_experts,):
                raise ValueError(f"AnalyticCost.{name}: expected shape ({self.num_experts},), got {a.shape}")
            self._keep[name] = a
            setattr(self._c, name, ptr(a, "double *"))
        self.provider = lib.tmoe_cost_analytic_provider(self._c)

"""thermoe's routers over numpy arrays and torch tensors: per-expert selection biases from
expert costs and the hardware state, the selection, and the test-time update."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ._core import as_array, check, enum_value, new_error, ptr, set_field, struct_to_dict
from ._ffi import ffi, lib
from .cost import AnalyticCost, CostModel, CostTable, ExpertTypes


@dataclass
class RouteResult:
    """One routed batch: selection (T, k) experts per token (int32, decreasing biased
    score), biases (E,) the total selection bias added to the logits (float32), and the
    cost model's energy of that selection in J (NaN without a cost model). selection and
    biases are torch tensors when the logits were, numpy arrays otherwise."""

    selection: Any
    biases: Any
    predicted_energy_j: float


def config_fields() -> List[str]:
    """Every field of tmoe_router_config (from the headers): the keywords Router takes."""
    return [name for name, _ in ffi.typeof("tmoe_router_config").fields]


class Router:
    """A thermoe router (tmoe_router)::

        cm = thermoe.CostModel.load("data/h100_cost_model.json")
        r = thermoe.Router("kernel_aware_ttha", num_experts=8, top_k=2, cost_model=cm,
                           power_target_w=350, temp_target_c=70)
        res = r.route(logits)            # numpy (T, E) or a torch tensor
        rec = r.update(measurement)      # a Monitor Measurement or a dict of observations

    strategy: baseline, static_optimal, kernel_aware_ttha, hierarchical_adaptive,
    predictive_thermal or multi_gpu_aware. cost_model with expert_types (one type for all
    experts or one per expert) and impl gives the expert costs; ``cost`` may instead be a
    CostTable or an AnalyticCost; with neither, every expert costs the same (nothing), so
    the cost-aware strategies leave the selection alone and predicted energies are NaN.
    Any other keyword sets the tmoe_router_config field of that name (targets such as
    power_target_w, the load balancer's lb_enabled, the budget fields of expert-set
    selection, ...): enum fields take their names, pointer fields a sequence of length
    num_experts. ``config_fields()`` lists them; an unknown keyword is a TypeError.

    Lower-precision copies (hierarchical_adaptive and kernel_aware_ttha run them under
    pressure; docs/strategies.md
    "Lower-precision copies"): copy_type ("q4", ...) with cost_model, and copy_experts (the
    experts that have a copy; default all). ``last_copies()`` says which experts the batch
    last routed runs as their copies."""

    def __init__(
        self,
        strategy: str = "baseline",
        num_experts: int = 8,
        top_k: int = 2,
        cost_model: Optional[CostModel] = None,
        *,
        expert_types: ExpertTypes = "fp16",
        impl: str = "fused",
        cost: Union[CostTable, AnalyticCost, None] = None,
        copy_type: Optional[str] = None,
        copy_experts: Optional[Sequence[int]] = None,
        **config: Any,
    ) -> None:
        self._r = None
        self._keep: List[Any] = []
        cfg = ffi.new("tmoe_router_config *", lib.tmoe_router_config_default())
        cfg.strategy = enum_value("tmoe_route_strategy", strategy, "strategy")
        cfg.num_experts = int(num_experts)
        cfg.top_k = int(top_k)
        for name, value in config.items():
            set_field(cfg, "tmoe_router_config", name, value, self._keep, "Router")  # copied at create
        if cost is not None and cost_model is not None:
            raise ValueError("give cost_model or cost, not both")
        if cost_model is not None:
            cost = cost_model.table(expert_types, num_experts, impl, max(1, int(cfg.max_tokens)))
        if copy_type is not None or copy_experts is not None:
            if copy_type is None or cost_model is None:
                raise ValueError("copies need copy_type and a cost_model (the copies' costs)")
            flags = np.zeros(int(num_experts), dtype=np.uint8)
            for e in range(int(num_experts)) if copy_experts is None else copy_experts:
                if not 0 <= int(e) < int(num_experts):
                    raise ValueError(f"copy_experts: expert {e} is not in 0..{int(num_experts) - 1}")
                flags[int(e)] = 1
            ctab = cost_model.table(copy_type, num_experts, impl, max(1, int(cfg.max_tokens)))
            cprov = ffi.new("tmoe_cost_provider *", ctab.provider)
            self._keep += [flags, ctab, cprov]  # the copy table is the provider's context
            cfg.expert_copy = ptr(flags, "unsigned char *")
            cfg.copy_cost = cprov
        self.has_costs = cost is not None
        if cost is None:
            cost = AnalyticCost(num_experts)
        self._cost = cost  # the provider's context must outlive the router
        prov = ffi.new("tmoe_cost_provider *", cost.provider)
        err, out = new_error(), ffi.new("tmoe_router **")
        check(lib.tmoe_router_create(cfg, prov, out, err), err)
        self._r = out[0]
        self.num_experts = int(cfg.num_experts)
        self.top_k = int(cfg.top_k)
        self.strategy = struct_to_dict(cfg[0])["strategy"]
        self._sel = np.empty((0, self.top_k), dtype=np.int32)
        self._bias = np.empty(self.num_experts, dtype=np.float32)

    def close(self) -> None:
        lib.tmoe_router_free(self._r or ffi.NULL)
        self._r = None

    def __del__(self) -> None:
        if getattr(self, "_r", None) is not None:
            self.close()

    @property
    def config(self) -> Dict[str, Any]:
        """The router's configuration as it runs (defaults filled in), field -> value."""
        return struct_to_dict(lib.tmoe_router_get_config(self._r)[0])

    def route(self, logits: Any, hw: Optional[Mapping[str, Any]] = None, unbiased_idx: Any = None) -> RouteResult:
        """Route one batch of gate logits (T, E): numpy, a torch tensor (CPU tensors are read
        through DLPack; CUDA ones are copied to the host), or lists. hw: the hardware
        snapshot (``Monitor.hw_state()`` or a dict of tmoe_hw_state fields; missing ones are
        unknown). unbiased_idx (T, k): the unbiased top-k if the caller has it."""
        is_torch = type(logits).__module__.startswith("torch")
        z = as_array(logits, np.float32, 2, "logits")
        T, E = z.shape
        if E != self.num_experts:
            raise ValueError(f"logits: {E} experts per row, the router has {self.num_experts}")
        sel = np.empty((T, self.top_k), dtype=np.int32)
        bias = np.empty(E, dtype=np.float32)
        ui = None if unbiased_idx is None else as_array(unbiased_idx, np.int32, 2, "unbiased_idx")
        if ui is not None and ui.shape != (T, self.top_k):
            raise ValueError(f"unbiased_idx: expected shape {(T, self.top_k)}, got {ui.shape}")
        energy = ffi.new("double *", math.nan)
        err = new_error()
        check(
            lib.tmoe_router_route(
                self._r, ptr(z, "float *"), T, ptr(ui, "int32_t *"), _hw_state(hw),
                ptr(bias, "float *"), ptr(sel, "int32_t *"),
                energy if self.has_costs else ffi.NULL, err,
            ),
            err,
        )
        e = float(energy[0]) if self.has_costs else math.nan
        if is_torch:
            import torch

            dev = logits.device
            return RouteResult(torch.from_numpy(sel).to(dev), torch.from_numpy(bias).to(dev), e)
        return RouteResult(sel, bias, e)

    def last_copies(self) -> np.ndarray:
        """(E,) bool: the experts the batch last routed runs as their lower-precision copies
        (all False without copies, and for every strategy but hierarchical_adaptive)."""
        out = np.zeros(self.num_experts, dtype=np.uint8)
        lib.tmoe_router_last_copies(self._r, ptr(out, "unsigned char *"))
        return out.astype(bool)

    def observe(self, idx: Any, w: Any = None) -> float:
        """With observe_selection=1: report the selection that ran for the batch last routed
        (idx (T, k), combine weights w (T, k) or None for 1/k); returns its predicted energy
        in J (NaN without a cost model)."""
        i = as_array(idx, np.int32, 2, "idx")
        ww = None if w is None else as_array(w, np.float32, 2, "w")
        out, err = ffi.new("double *", math.nan), new_error()
        check(lib.tmoe_router_observe(self._r, ptr(i, "int32_t *"), ptr(ww, "float *"), i.shape[0], out, err), err)
        return float(out[0]) if self.has_costs else math.nan

    def update(self, observation: Any = None, **values: float) -> Dict[str, Any]:
        """Feed what was observed for the batch last routed: a Monitor Measurement (power,
        end temperature and window length are taken from it), a dict, or keywords of
        tmoe_route_obs (power_w W, temp_c C, latency_ms, throughput tokens/s, period_s,
        dt_s); missing ones are unknown. kernel_aware_ttha takes an adapter step. Returns
        the TTHA record (loss terms, lr, grad_norm, predicted energy, biases); NaN where no
        step was taken."""
        obs = ffi.new("tmoe_route_obs *", lib.tmoe_route_obs_unknown())
        given: Dict[str, Any] = {}
        if observation is not None and hasattr(observation, "total_energy"):
            given.update(power_w=observation.power_avg_w, temp_c=observation.gpu_temp_end_c,
                         period_s=observation.time)
        elif observation is not None:
            given.update(dict(observation))
        given.update(values)
        fields = dict(ffi.typeof("tmoe_route_obs").fields)
        for k, v in given.items():
            if k not in fields:
                raise TypeError(f"update: unknown observation {k!r}; expected {sorted(fields)}")
            setattr(obs, k, float(v))
        rec, err = ffi.new("tmoe_ttha_record *"), new_error()
        check(lib.tmoe_router_update(self._r, obs, rec, err), err)
        return _record(rec[0], self.num_experts)

    def fit_static(self, logits: Any, tokens_per_batch: int) -> float:
        """static_optimal: fit the fixed biases to a profile of logit rows (N, E) standing for
        batches of tokens_per_batch tokens; returns the KL reached."""
        z = as_array(logits, np.float32, 2, "logits")
        kl, err = ffi.new("double *"), new_error()
        check(lib.tmoe_router_fit_static(self._r, ptr(z, "float *"), z.shape[0], int(tokens_per_batch), kl, err), err)
        return float(kl[0])

    def history(self) -> List[Dict[str, Any]]:
        """Every TTHA update taken so far, oldest first."""
        out, rec = [], ffi.new("tmoe_ttha_record *")
        for i in range(int(lib.tmoe_router_history_len(self._r))):
            if lib.tmoe_router_history_get(self._r, i, rec) == lib.TMOE_OK:
                out.append(_record(rec[0], self.num_experts))
        return out

    def save_ttha(self, path: Union[str, os.PathLike]) -> None:
        err = new_error()
        check(lib.tmoe_router_ttha_save(self._r, os.fsencode(path), err), err)

    def load_ttha(self, path: Union[str, os.PathLike]) -> None:
        err = new_error()
        check(lib.tmoe_router_ttha_load(self._r, os.fsencode(path), err), err)


def _record(rec: Any, E: int) -> Dict[str, Any]:
    d = struct_to_dict(rec)
    d["biases"] = None if rec.biases == ffi.NULL else np.frombuffer(ffi.buffer(rec.biases, 4 * E), dtype=np.float32).copy()
    return d


def _hw_state(hw: Optional[Mapping[str, Any]]) -> Any:
    if hw is None:
        return ffi.NULL
    s = ffi.new("tmoe_hw_state *", lib.tmoe_hw_state_unknown())
    fields = dict(ffi.typeof("tmoe_hw_state").fields)
    for k, v in hw.items():
        if k not in fields:
            raise TypeError(f"hw: unknown field {k!r}; tmoe_hw_state has {sorted(fields)}")
        ft = fields[k].type
        if ft.kind == "array":
            vals = list(v)
            if len(vals) > ft.length:
                raise ValueError(f"hw.{k}: at most {ft.length} entries, got {len(vals)}")
            for i, x in enumerate(vals):
                getattr(s, k)[i] = x
        elif ft.cname == "int":
            setattr(s, k, int(v))
        else:
            setattr(s, k, float(v))
    return s

"""thermoe's routers and monitor inside transformers' MoE models.

``patch(model, router=..., monitor=...)`` finds the sparse MoE blocks of Mixtral, OLMoE,
Qwen2-MoE and Qwen3-MoE models (transformers 5: a block with a ``gate`` top-k router that
returns (logits, combine weights, expert indices) and an ``experts`` module) and

* replaces each gate's selection by thermoe's: the gate's own logits go through
  ``Router.route``; the experts run on the router's selection; the combine weights stay
  the unbiased softmax probabilities of the chosen experts, renormalised as the model
  does (Mixtral always, OLMoE/Qwen when ``norm_topk_prob``), so a strategy changes which
  experts run, not how their outputs are weighed (DESIGN.md "Routing");
* meters every block forward in a Monitor window (``Patch.stats``). On the simulated GPU
  nothing runs on a GPU, so when a cost model is given each forward bills the simulator
  the cost model's latency and dynamic energy of the experts it ran, at their token counts
  (as ``thermoe run`` does); the figures then say source "sim".

The returned Patch undoes everything with ``restore()`` (or as a context manager).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from ..cost import CostModel, ExpertTypes
from ..monitor import Monitor
from ..router import Router

RouterArg = Union[Router, Callable[[int, Any], Router], None]


@dataclass
class BlockStats:
    """What one patched block did: forwards, tokens, token copies per expert, and the sum
    of its windows' time (s) and energy (J; NaN without a monitor, or once any window's
    energy was unknown), and the router's predicted energy (J, NaN without a cost model)."""

    name: str
    forwards: int = 0
    tokens: int = 0
    expert_counts: List[int] = field(default_factory=list)
    time_s: float = 0.0
    energy_j: float = 0.0
    energy_methods: Dict[str, int] = field(default_factory=dict)
    predicted_energy_j: float = 0.0


class Patch:
    """Handle of a patched model: ``stats`` per block, ``blocks`` (name -> module),
    ``routers`` (name -> Router), ``totals()``, ``reset_stats()`` and ``restore()``."""

    def __init__(self) -> None:
        self.blocks: Dict[str, Any] = {}
        self.routers: Dict[str, Optional[Router]] = {}
        self.stats: Dict[str, BlockStats] = {}
        self._undo: List[Callable[[], None]] = []
        self.source: str = ""

    def restore(self) -> None:
        """Put the original forwards back."""
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> "Patch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def reset_stats(self) -> None:
        for name, s in self.stats.items():
            z = 0.0 if self.source else math.nan
            self.stats[name] = BlockStats(name=name, expert_counts=[0] * len(s.expert_counts),
                                          time_s=z, energy_j=z)

    def totals(self) -> Dict[str, Any]:
        """Sums over the blocks: forwards, tokens (summed over blocks), time_s, energy_j,
        predicted_energy_j and the telemetry source."""
        s = list(self.stats.values())
        return {
            "blocks": len(s),
            "forwards": sum(b.forwards for b in s),
            "tokens": sum(b.tokens for b in s),
            "time_s": sum(b.time_s for b in s),
            "energy_j": sum(b.energy_j for b in s) if s else math.nan,
            "predicted_energy_j": sum(b.predicted_energy_j for b in s) if s else math.nan,
            "source": self.source,
        }


def find_moe_blocks(model: Any) -> Dict[str, Any]:
    """The sparse MoE blocks of model, by module name: modules with a ``gate`` that has a
    ``weight`` (E, hidden), ``top_k`` and ``num_experts``, and an ``experts`` module."""
    out = {}
    for name, mod in model.named_modules():
        gate = getattr(mod, "gate", None)
        if gate is None or not hasattr(mod, "experts"):
            continue
        if all(hasattr(gate, a) for a in ("weight", "top_k", "num_experts")):
            out[name] = mod
    return out


def patch(
    model: Any,
    router: RouterArg = None,
    monitor: Optional[Monitor] = None,
    *,
    cost_model: Optional[CostModel] = None,
    expert_types: ExpertTypes = "fp16",
    impl: str = "fused",
) -> Patch:
    """Route and meter model's sparse MoE blocks with thermoe.

    router: a Router used by every block, a function (layer index, block) -> Router for a
    router per block (each keeps its own load balancer and adapter state), or None to keep
    the model's own routing and only meter. monitor: a Monitor whose windows meter each
    block forward (None: no metering). cost_model/expert_types/impl: bill the simulated
    GPU for the experts each forward ran (only with a simulated monitor), and give the
    predicted energy per block. Raises ValueError when the model has no sparse MoE block.
    """
    import torch
    import torch.nn.functional as F

    blocks = find_moe_blocks(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__}: no sparse MoE block found (expected transformers' Mixtral, "
            "OLMoE, Qwen2-MoE or Qwen3-MoE blocks: a `gate` with weight, top_k, num_experts and "
            "an `experts` module)"
        )
    p = Patch()
    p.source = monitor.source if monitor is not None else ""
    for layer, (name, block) in enumerate(blocks.items()):
        gate = block.gate
        E, k = int(gate.num_experts), int(gate.top_k)
        r = router(layer, block) if callable(router) and not isinstance(router, Router) else router
        if r is not None and (r.num_experts != E or r.top_k != k):
            raise ValueError(f"{name}: the block has {E} experts, top-{k}; the router {r.num_experts}, top-{r.top_k}")
        p.blocks[name], p.routers[name] = block, r
        unmetered = math.nan if monitor is None else 0.0  # unknown without a monitor
        st = BlockStats(name=name, expert_counts=[0] * E, time_s=unmetered, energy_j=unmetered)
        p.stats[name] = st
        gate_forward, block_forward = gate.forward, block.forward
        last: Dict[str, Any] = {}

        def routed(hidden_states: Any, gate: Any = gate, r: Optional[Router] = r, last: Dict[str, Any] = last,
                   gate_forward: Any = gate_forward) -> Any:
            if r is None:
                logits, w, idx = gate_forward(hidden_states)
            else:
                hs = hidden_states.reshape(-1, gate.weight.shape[1])
                logits = F.linear(hs, gate.weight)
                probs = torch.softmax(logits.float(), dim=-1)
                res = r.route(logits.detach().float())
                idx = res.selection.to(device=logits.device, dtype=torch.long)
                w = probs.gather(1, idx)
                if getattr(gate, "norm_topk_prob", True):
                    w = w / w.sum(dim=-1, keepdim=True)
                if hasattr(gate, "norm_topk_prob"):
                    w = w.to(logits.dtype)
                last["predicted"] = res.predicted_energy_j
            last["idx"] = idx
            return logits, w, idx

        def metered(hidden_states: Any, *args: Any, st: BlockStats = st, block_forward: Any = block_forward,
                    last: Dict[str, Any] = last, key: str = name, E: int = E, **kwargs: Any) -> Any:
            if monitor is not None:
                monitor.begin_window(f"thermoe.patch:{key}")
            try:
                out = block_forward(hidden_states, *args, **kwargs)
                counts = torch.bincount(last["idx"].reshape(-1).cpu(), minlength=E).tolist()
                if monitor is not None and monitor.simulated and cost_model is not None:
                    _bill(monitor, cost_model, counts, expert_types, impl)
            except BaseException:
                if monitor is not None:
                    monitor.end_window(f"thermoe.patch:{key}", cancel=True)
                raise
            st.forwards += 1
            st.tokens += int(last["idx"].shape[0])
            st.expert_counts = [a + b for a, b in zip(st.expert_counts, counts)]
            st.predicted_energy_j += last.get("predicted", math.nan)
            if monitor is not None:
                m = monitor.end_window(f"thermoe.patch:{key}")
                st.time_s += m.time
                st.energy_j += m.total_energy
                st.energy_methods[m.energy_method] = st.energy_methods.get(m.energy_method, 0) + 1
            return out

        gate.forward = routed
        block.forward = metered
        p._undo.append(lambda g=gate, b=block: (_drop(g, "forward"), _drop(b, "forward")))
    return p


def _drop(obj: Any, attr: str) -> None:
    if attr in vars(obj):
        delattr(obj, attr)


def _bill(monitor: Monitor, cm: CostModel, counts: List[int], expert_types: ExpertTypes, impl: str) -> None:
    """Bill the simulated GPU the cost model's latency and dynamic energy of every expert
    that ran, at its token count; 0.85 of it memory traffic, as thermoe run bills experts
    (weights streamed)."""
    busy_s = dyn_j = 0.0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        et = expert_types if isinstance(expert_types, str) else expert_types[e]
        c = cm.expert(et, impl, n)
        busy_s += c["latency_ms"] / 1e3
        dyn_j += max(c["energy_dynamic_j"], 0.0)
    if busy_s > 0:
        monitor.bill(busy_s, dyn_j, 0.85)

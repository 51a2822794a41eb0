"""thermoe.integrations.transformers.patch on the tiny reference checkpoints of
tests/data/lm (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE): baseline routing leaves the logits
exactly as they were, a cost-aware strategy changes which experts run, every block forward
is metered, restore() undoes it. Skips when torch or transformers is absent."""

import math

import pytest

import thermoe

torch = pytest.importorskip("torch", reason="torch is not installed (the patch needs it)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from thermoe.integrations.transformers import find_moe_blocks, patch  # noqa: E402

FAMILIES = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"]


def load(source_dir, family):
    return transformers.AutoModelForCausalLM.from_pretrained(
        source_dir / "tests" / "data" / "lm" / family, dtype=torch.float32,
        attn_implementation="eager", experts_implementation="eager").eval()


def forward(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_patch(source_dir, cost_model_path, family):
    model = load(source_dir, family)
    ids = torch.arange(24).remainder(200)[None]
    ref = forward(model, ids)
    blocks = find_moe_blocks(model)
    sparse = [n for n, m in model.named_modules() if type(m).__name__.endswith("SparseMoeBlock")]
    assert list(blocks) == sparse and sparse  # Qwen models mix dense and sparse layers
    cm = thermoe.CostModel.load(cost_model_path)
    mon = thermoe.Monitor("sim")

    def baseline(layer, block):
        return thermoe.Router("baseline", block.gate.num_experts, block.gate.top_k, cm)

    with patch(model, router=baseline, monitor=mon, cost_model=cm) as p:
        out = forward(model, ids)
        t = p.totals()
    assert torch.equal(out, ref)  # same experts, same combine weights
    assert t["forwards"] == len(blocks) and t["tokens"] == 24 * len(blocks)
    assert t["source"] == "sim" and t["time_s"] > 0 and t["energy_j"] > 0
    assert t["predicted_energy_j"] > 0
    for s in p.stats.values():
        assert sum(s.expert_counts) == 24 * model.config.num_experts_per_tok
        assert s.energy_methods == {"sim_exact": 1}
    assert torch.equal(forward(model, ids), ref)  # restored

    E = next(iter(blocks.values())).gate.num_experts
    cheap = ["q2"] + ["fp16"] * (E - 1)
    r = thermoe.Router("static_optimal", E, model.config.num_experts_per_tok, cm,
                       expert_types=cheap, kl_bound=0.5)
    p = patch(model, router=r)
    out = forward(model, ids)
    base_counts = [0] * E
    with patch(model) as p0:  # no router: the model's own routing, counted
        forward(model, ids)
        for s in p0.stats.values():
            base_counts = [a + b for a, b in zip(base_counts, s.expert_counts)]
    p.restore()
    counts = [sum(c) for c in zip(*(s.expert_counts for s in p.stats.values()))]
    assert counts[0] > base_counts[0]  # the cheap expert is chosen more often
    assert not torch.equal(out, ref)
    assert p.totals()["source"] == "" and math.isnan(p.totals()["energy_j"])  # not metered


def test_patch_errors(source_dir):
    model = load(source_dir, "olmoe")
    with pytest.raises(ValueError, match="experts"):
        patch(model, router=thermoe.Router("baseline", 4, 2))
    with pytest.raises(ValueError, match="no sparse MoE block"):
        patch(torch.nn.Linear(2, 2))

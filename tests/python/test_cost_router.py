"""thermoe.CostModel (lookups, compute_energy_loss on numpy and torch) and thermoe.Router
(routing numpy arrays and torch tensors, config fields by name, update, observe)."""

import math

import numpy as np
import pytest

import thermoe


@pytest.fixture
def cm(cost_model_path):
    return thermoe.CostModel.load(cost_model_path)


def logits(T=32, E=8, seed=0):
    return np.random.default_rng(seed).normal(size=(T, E)).astype(np.float32)


def test_lookups(cm):
    assert len(cm) > 0 and cm.meta["device_name"].startswith("NVIDIA H100")
    v = cm.lookup("linear_fc1", "q4", "fused", 3)
    assert v["lo_tokens"] <= 3 <= v["hi_tokens"] and v["latency_ms"] > 0
    e = cm.expert("fp16", "fused", 4)
    parts = [cm.lookup(op, "fp16", "fused", 4) for op in ("linear_fc1", "relu", "linear_fc2")]
    assert e["energy_j"] == pytest.approx(sum(p["energy_j"] for p in parts), rel=1e-12)
    assert cm.expert("fp16", "fused", 0)["energy_j"] == 0
    entries = cm.entries()
    assert len(entries) == len(cm) and entries[0]["op"] in ("gate_linear", "gate_topk")
    with pytest.raises(thermoe.ThermoeValueError, match="linear_fc1"):
        cm.lookup("attn_qkv", "q2", "unfused", 1)  # the message lists what the model has


def test_energy_loss_numpy_and_torch(cm):
    ids = np.array([[0, 1], [0, 2], [3, -1]], dtype=np.int64)
    p = np.array([[0.6, 0.4], [0.5, 0.5], [1.0, 0.0]])
    types = ["fp16", "q4", "fp16", "q2"]
    want = (0.6 + 0.5) * cm.expert("fp16", "fused", 2)["energy_j"] \
        + 0.4 * cm.expert("q4", "fused", 1)["energy_j"] + 0.5 * cm.expert("fp16", "fused", 1)["energy_j"] \
        + 1.0 * cm.expert("q2", "fused", 1)["energy_j"]
    got = cm.energy_loss(ids, p, expert_types=types)
    assert got == pytest.approx(want, rel=1e-6)
    torch = pytest.importorskip("torch", reason="torch is not installed")
    assert cm.energy_loss(torch.from_numpy(ids), torch.from_numpy(p).float(), expert_types=types) == got
    with pytest.raises(ValueError, match="shape"):
        cm.energy_loss(ids, p[:2], expert_types=types)
    with pytest.raises(thermoe.ThermoeValueError):
        cm.energy_loss(np.array([[7, 0]]), np.ones((1, 2)), expert_types=types)  # expert 7 of 4


def test_router_baseline_is_top_k():
    z = logits()
    r = thermoe.Router("baseline", num_experts=8, top_k=2)
    res = r.route(z)
    assert res.selection.dtype == np.int32 and res.selection.shape == (32, 2)
    want = np.argsort(-z, axis=1, kind="stable")[:, :2]
    assert (res.selection == want).all() and (res.biases == 0).all()
    assert math.isnan(res.predicted_energy_j)  # no cost model: unknown, not 0


def test_router_costs_and_config_by_name(cm):
    types = ["q4"] * 4 + ["fp16"] * 4
    r = thermoe.Router("kernel_aware_ttha", 8, 2, cm, expert_types=types, power_target_w=300,
                       schedule="constant", lb_enabled=1, num_devices=2,
                       expert_device=[0, 1] * 4)
    c = r.config
    assert c["power_target_w"] == 300 and c["schedule"] == "constant" and c["lb_enabled"] == 1
    assert set(thermoe.config_fields()) >= {"power_target_w", "kl_bound", "lb_step"}
    res = r.route(logits())
    assert (res.biases[:4] > res.biases[4:].max()).all()  # q4 experts are the cheap ones
    assert res.predicted_energy_j > 0
    with pytest.raises(TypeError, match="unknown keyword 'power_cap'"):
        thermoe.Router("baseline", 8, 2, power_cap=1)
    with pytest.raises(ValueError, match="schedule"):
        thermoe.Router("baseline", 8, 2, schedule="linear")
    with pytest.raises(thermoe.ThermoeValueError, match="top_k 9"):
        thermoe.Router("baseline", 8, 9)


def test_router_copies(cm):
    """hierarchical_adaptive with q4 copies: none run while cool, the copies run (and the
    predicted energy falls, the routing unchanged at budget none) over the targets."""
    kw = dict(budget="none", power_target_w=400)
    r = thermoe.Router("hierarchical_adaptive", 8, 2, cm, copy_type="q4", **kw)
    plain = thermoe.Router("hierarchical_adaptive", 8, 2, cm, **kw)
    z = logits(T=4)
    cool, hot = {"power_w": 100.0, "gpu_temp_c": 40.0}, {"power_w": 450.0, "gpu_temp_c": 40.0}
    a, b = r.route(z, hw=cool), plain.route(z, hw=cool)
    assert not r.last_copies().any() and a.predicted_energy_j == pytest.approx(b.predicted_energy_j)
    a, b = r.route(z, hw=hot), plain.route(z, hw=hot)
    assert r.last_copies().all() and not plain.last_copies().any()
    assert (a.selection == b.selection).all()  # every expert copied: one cost, no bias
    assert a.predicted_energy_j < 0.8 * b.predicted_energy_j  # q4 reads a quarter of the bytes
    some = thermoe.Router("hierarchical_adaptive", 8, 2, cm, copy_type="q4", copy_experts=[1, 5], **kw)
    some.route(z, hw=hot)
    assert some.last_copies().tolist() == [e in (1, 5) for e in range(8)]
    with pytest.raises(ValueError, match="copy_type and a cost_model"):
        thermoe.Router("hierarchical_adaptive", 8, 2, copy_experts=[1])
    with pytest.raises(ValueError, match="expert 9"):
        thermoe.Router("hierarchical_adaptive", 8, 2, cm, copy_type="q4", copy_experts=[9])


def test_router_update_and_history(cm):
    r = thermoe.Router("kernel_aware_ttha", 8, 2, cm, power_target_w=200)
    mon = thermoe.Monitor("sim")
    r.route(logits())
    mon.begin_window("batch")
    mon.bill(0.05, 20.0)
    meas = mon.end_window("batch")
    rec = r.update(meas, latency_ms=50.0, throughput=640.0)
    assert rec["step"] == 0 and rec["power_loss"] > 0 and rec["biases"].shape == (8,)
    r.route(logits(seed=1))
    r.update({"power_w": 150.0, "temp_c": 40.0}, latency_ms=50.0)
    h = r.history()
    assert [x["step"] for x in h] == [0, 1] and h[1]["power_loss"] == 0
    with pytest.raises(TypeError, match="unknown observation"):
        r.update(watts=3)


def test_router_observe_and_static_fit(cm, tmp_path):
    r = thermoe.Router("baseline", 8, 2, cm, observe_selection=1, lb_enabled=1)
    z = logits()
    r.route(z)
    idx = np.argsort(-z, axis=1)[:, :2]
    e = r.observe(idx)
    # predicted_energy_j: the step's energy from the router's own cost table
    assert e == pytest.approx(cm.table("fp16", 8).step_energy(idx), rel=1e-9)
    assert e != pytest.approx(cm.energy_loss(idx, np.full(idx.shape, 0.5), num_experts=8), rel=1e-3)
    with pytest.raises(thermoe.ThermoeValueError):
        r.observe(idx)  # once per routed batch
    s = thermoe.Router("static_optimal", 8, 2, cm, expert_types=["q2"] + ["fp16"] * 7, kl_bound=0.1)
    kl = s.fit_static(logits(256), 32)
    assert 0 < kl <= 0.1 + 1e-6
    assert (s.route(z).selection == 0).sum() > (idx == 0).sum()


def test_router_torch_tensor():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    z = torch.from_numpy(logits(16))
    r = thermoe.Router("baseline", 8, 2)
    res = r.route(z)
    assert isinstance(res.selection, torch.Tensor) and res.selection.dtype == torch.int32
    assert torch.equal(res.selection.long(), torch.topk(z, 2, dim=1).indices)
    assert isinstance(res.biases, torch.Tensor) and res.biases.shape == (8,)
    r.route(z.to(torch.bfloat16))  # other dtypes are converted
    res2 = r.route(z.t().contiguous().t())  # a non-contiguous view
    assert torch.equal(res2.selection, res.selection)
    with pytest.raises(ValueError, match="experts per row"):
        r.route(torch.zeros(4, 6))

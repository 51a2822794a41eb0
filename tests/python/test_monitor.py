"""thermoe.Monitor on the simulated GPU and on the fake libnvidia-ml: Zeus's window calls,
the context managers, billed energy, temperatures, and a window that outlives a lost
device."""

import math
import os
import time

import pytest

import thermoe
from conftest import need_env


def test_sim_window_bills_energy():
    with thermoe.Monitor("sim", interval_ms=10) as mon:
        assert mon.source == "sim" and mon.simulated and "SIMULATED" in mon.choice
        mon.wait(1.0)
        mon.begin_window("idle")
        mon.wait(0.5)
        idle = mon.end_window("idle")
        idle_w = idle.total_energy / idle.time
        assert 60 < idle_w < 150  # the simulated H100 idles near 72 W
        mon.begin_window("work")
        mon.bill(0.2, 40.0)  # 0.2 s drawing 40 J above idle
        m = mon.end_window("work")
    assert m.time == pytest.approx(0.2, rel=1e-6)
    assert m.energy_method == "sim_exact" and m.source == "sim" and m.simulated
    assert m.gpu_energy.keys() == {0} and m.total_energy == m.gpu_energy[0]
    # the billed 40 J plus static power: the idle level at least, at most the ~140 W the
    # simulated H100 draws with clocks up and nothing to do (docs/telemetry.md)
    assert 40.0 + idle_w * 0.2 <= m.total_energy <= 40.0 + 140.0 * 0.2
    assert m.power_avg_w == pytest.approx(m.total_energy / m.time, rel=1e-9)
    assert m.power_peak_w >= m.power_avg_w
    assert m.gpu_temp_peak_c >= m.gpu_temp_start_c and m.mem_temp_peak_c > 0
    assert m.cpu_energy is None and m.dram_energy is None and not m.lost
    assert m.devices[0]["energy_j"] == m.gpu_energy[0]


def test_zeus_names_and_context_managers():
    mon = thermoe.Monitor(source="sim", sim_devices=2, gpu_indices=[1])
    with pytest.raises(ValueError, match="does not exist"):
        mon.end_window("never")
    mon.begin_window("outer")
    with pytest.raises(ValueError, match="already exists"):
        mon.begin_window("outer")
    with mon.window("inner") as w:
        mon.bill(0.1, 10.0, device=1)
    mon.bill(0.1, 10.0, device=0)
    outer = mon.end_window("outer")
    assert list(w.measurement.gpu_energy) == [1]  # gpu_indices
    assert outer.time == pytest.approx(w.measurement.time + 0.1, rel=1e-6)
    # device 1 idled through the last 0.1 s of the outer window
    extra = outer.gpu_energy[1] - w.measurement.gpu_energy[1]
    assert 60 * 0.1 < extra < 140 * 0.1
    mon.begin_window("dropped")
    assert mon.end_window("dropped", cancel=True).gpu_energy == {}
    with pytest.raises(RuntimeError):
        with mon.window("raises"):
            raise RuntimeError("inside")
    mon.begin_window("raises")  # the failed window was closed
    mon.end_window("raises")
    mon.close()
    with pytest.raises(thermoe.ThermoeError, match="closed"):
        mon.begin_window("x")


def test_samples_power_temperatures_and_hw_state():
    mon = thermoe.Monitor("sim", interval_ms=20)
    mon.bill(2.0, 600.0)
    mon.wait(2.0)
    s = mon.sample()
    assert s["power_avg_w"] > 200 and s["gpu_temp_c"] > 34
    assert s["mem_used_bytes"] is None or s["mem_used_bytes"] >= 0
    assert math.isnan(s["fan_pct"])  # not simulated: unknown, not 0
    assert mon.power() == s["power_avg_w"]
    assert mon.temperatures() == {"gpu_temp_c": s["gpu_temp_c"], "mem_temp_c": s["mem_temp_c"]}
    hw = mon.hw_state()
    assert hw["power_w"] == s["power_avg_w"] and 0 <= hw["gpu_util"] <= 1
    info = mon.device_info()
    assert info["power_limit_w"] == 700 and "H100" in info["name"]


def test_bad_arguments():
    with pytest.raises(thermoe.ThermoeValueError, match="auto"):
        thermoe.Monitor("gpu")
    with pytest.raises(ValueError, match="gpu_indices"):
        thermoe.Monitor("sim", gpu_indices=[3])
    with pytest.raises(ValueError, match="interval_ms"):
        thermoe.Monitor("sim", interval_ms=0)
    mon = thermoe.Monitor("sim")
    with pytest.raises(thermoe.ThermoeError, match="device=5"):
        mon.bill(0.1, 1.0, device=5)


def test_nvml_window_outlives_a_lost_device(monkeypatch):
    fake = need_env("THERMOE_FAKE_NVML")
    monkeypatch.setenv("FAKE_NVML_LOST_AFTER", "20")  # GPU_IS_LOST after 20 samples
    mon = thermoe.Monitor("nvml", interval_ms=2, nvml_lib=fake)
    assert mon.source == "nvml" and not mon.simulated
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            mon.sample()
            break
        except thermoe.ThermoeError:
            time.sleep(0.002)
    mon.begin_window("step")
    while not mon.device_lost() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert mon.device_lost()
    m = mon.end_window("step")
    assert m.lost and m.devices[0]["lost"]
    assert math.isnan(m.gpu_energy[0]) and math.isnan(m.total_energy)
    assert m.energy_method == "none" and math.isnan(m.power_avg_w)
    assert m.source == "nvml" and m.time > 0
    mon.close()


def test_auto_says_what_it_chose(monkeypatch):
    monkeypatch.setenv("THERMOE_NVML_LIB", os.devnull)
    mon = thermoe.Monitor("auto")
    assert mon.source == "sim" and "nvml" in mon.choice

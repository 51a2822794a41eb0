"""GPU energy and temperature windows: thermoe's telemetry (NVML or the simulated H100),
sampling monitor and meter behind the names of Zeus's ``ZeusMonitor``."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

from ._core import ThermoeError, check, cstr, new_error, struct_to_dict
from ._ffi import ffi, lib


@dataclass
class Measurement:
    """What a window measured. The first four fields have Zeus's names and meaning: ``time``
    in seconds, ``gpu_energy`` in joules per GPU index (NaN when unknown, e.g. a device lost
    inside the window), ``cpu_energy`` and ``dram_energy`` (thermoe measures neither: None).
    The rest is thermoe's: how the energy was obtained (``energy_method``: counter,
    integrated, latest_power or sim_exact; none when unknown), the telemetry ``source``
    ("nvml" or "sim": a simulated figure is never a measurement), power in W and GPU and HBM
    temperatures in C over the followed devices, and every value of the C reading per
    device (``devices``) and in total (``total``)."""

    time: float
    gpu_energy: Dict[int, float]
    cpu_energy: Optional[Dict[int, float]] = None
    dram_energy: Optional[Dict[int, float]] = None
    source: str = ""
    energy_method: str = "none"
    power_avg_w: float = math.nan
    power_peak_w: float = math.nan
    gpu_temp_start_c: float = math.nan
    gpu_temp_end_c: float = math.nan
    gpu_temp_peak_c: float = math.nan
    mem_temp_start_c: float = math.nan
    mem_temp_end_c: float = math.nan
    mem_temp_peak_c: float = math.nan
    lost: bool = False
    total: Dict[str, Any] = field(default_factory=dict)
    devices: Dict[int, Dict[str, Any]] = field(default_factory=dict)

    @property
    def total_energy(self) -> float:
        """Sum of gpu_energy in J (Zeus's name); NaN when any device's is unknown."""
        return float(sum(self.gpu_energy.values()))

    @property
    def simulated(self) -> bool:
        return self.source == "sim"


class Monitor:
    """Measures windows of work on the GPUs, like Zeus's ``ZeusMonitor``::

        mon = thermoe.Monitor(source="auto")
        mon.begin_window("step")
        ...                       # the work
        m = mon.end_window("step")
        print(m.time, m.total_energy, m.energy_method, m.gpu_temp_peak_c)

    source: "nvml" (libnvidia-ml loaded at run time; ``nvml_lib`` names another file),
    "sim" (the simulated H100: time moves only through ``bill``/``wait``, so a window of
    Python code that billed nothing lasts 0 s), or "auto" (NVML when a device answers, else
    the simulator; ``choice`` says which and why). interval_ms is the sampling period;
    energy_interval_ms how often the energy counter is read (each NVML read costs ~4 ms).
    gpu_indices limits which devices a Measurement reports (default: all). Windows are
    keyed by name, may nest and overlap. A Monitor is a context manager (closes at exit).
    Errors from the library raise ThermoeError with its message."""

    def __init__(
        self,
        source: str = "auto",
        interval_ms: float = 50.0,
        gpu_indices: Optional[Sequence[int]] = None,
        *,
        energy_interval_ms: float = 100.0,
        nvml_lib: Optional[str] = None,
        sim_devices: int = 1,
        sim_seed: Optional[int] = None,
    ) -> None:
        self._tel = self._mon = self._meter = None
        self._windows: Dict[str, Any] = {}
        if not interval_ms > 0 or not energy_interval_ms > 0:
            raise ValueError(
                f"interval_ms={interval_ms}, energy_interval_ms={energy_interval_ms}: "
                "expected positive milliseconds"
            )
        err = new_error()
        tc = ffi.new("tmoe_telemetry_config *", lib.tmoe_telemetry_config_default())
        kind = ffi.new("tmoe_telemetry_kind *")
        check(lib.tmoe_telemetry_kind_parse(source.encode(), kind, err), err)
        tc.kind = kind[0]
        tc.sim.n_devices = int(sim_devices)
        if sim_seed is not None:
            tc.sim.seed = int(sim_seed)
        self._nvml_lib = ffi.new("char[]", nvml_lib.encode()) if nvml_lib else ffi.NULL
        tc.nvml_lib = self._nvml_lib
        tel = ffi.new("tmoe_telemetry **")
        check(lib.tmoe_telemetry_open(tc, tel, err), err)
        self._tel = tel[0]
        self.source: str = cstr(lib.tmoe_telemetry_source_name(self._tel))
        self.choice: str = cstr(lib.tmoe_telemetry_choice(self._tel))
        mc = ffi.new("tmoe_monitor_config *", lib.tmoe_monitor_config_default())
        mc.mode = lib.TMOE_MONITOR_SYNC if self.simulated else lib.TMOE_MONITOR_THREAD
        mc.period_ns = int(interval_ms * 1e6)
        mc.energy_period_ns = int(energy_interval_ms * 1e6)
        mon = ffi.new("tmoe_monitor **")
        check(lib.tmoe_monitor_create(self._tel, mc, mon, err), err)
        self._mon = mon[0]
        meter = ffi.new("tmoe_meter **")
        check(lib.tmoe_meter_create(self._tel, self._mon, ffi.NULL, meter, err), err)
        self._meter = meter[0]
        n = self.device_count
        self.gpu_indices: List[int] = list(range(n)) if gpu_indices is None else list(gpu_indices)
        for i in self.gpu_indices:
            if not 0 <= i < n:
                self.close()
                raise ValueError(f"gpu_indices: {i} is not a device of {self.source} (0..{n - 1})")

    # ---- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop sampling and free the C objects (a closed Monitor refuses further calls)."""
        lib.tmoe_meter_free(self._meter or ffi.NULL)
        lib.tmoe_monitor_free(self._mon or ffi.NULL)
        lib.tmoe_telemetry_free(self._tel or ffi.NULL)
        self._tel = self._mon = self._meter = None

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_tel", None) is not None:
            self.close()

    def _live(self) -> None:
        if self._meter is None:
            raise ThermoeError(lib.TMOE_EINVAL, "this Monitor is closed")

    # ---- devices -----------------------------------------------------------------------
    @property
    def simulated(self) -> bool:
        """True when the figures come from the simulated GPU, not a measurement."""
        return bool(self._tel is not None and lib.tmoe_telemetry_is_simulated(self._tel))

    @property
    def device_count(self) -> int:
        self._live()
        return int(lib.tmoe_telemetry_device_count(self._tel))

    def device_info(self, device: int = 0) -> Dict[str, Any]:
        """Name, UUID, driver, power limit (W), slowdown/shutdown temperatures (C), ..."""
        self._live()
        err, info = new_error(), ffi.new("tmoe_device_info *")
        check(lib.tmoe_telemetry_device_info(self._tel, device, info, err), err)
        return struct_to_dict(info[0])

    def device_lost(self, device: int = 0) -> bool:
        self._live()
        return bool(lib.tmoe_monitor_device_lost(self._mon, device))

    def sample(self, device: int = 0) -> Dict[str, Any]:
        """The latest sample of device: temperatures (C), power (W), energy counter (mJ),
        clocks (MHz), ... Fields the device did not report are NaN (or None for integers).
        Raises ThermoeError (ENODEV) before the first sample."""
        self._live()
        s = ffi.new("tmoe_sample *")
        rc = lib.tmoe_monitor_latest(self._mon, device, s)
        if rc != lib.TMOE_OK:
            raise ThermoeError(rc, f"device {device}: no sample yet (or no such device)")
        d = struct_to_dict(s[0])
        for name, ftype in ffi.typeof("tmoe_sample").fields:
            bit = getattr(lib, "TMOE_F_" + _FIELD_BITS.get(name, "-"), None)
            if bit is not None and not s.valid & bit and ftype.type.cname != "double":
                d[name] = None
        return d

    def power(self, device: int = 0) -> float:
        """Board power of device now, W (~1 s average), NaN when unknown."""
        return float(self.sample(device)["power_avg_w"])

    def temperatures(self, device: int = 0) -> Dict[str, float]:
        """GPU die and HBM temperatures of device now, C (NaN when unknown)."""
        s = self.sample(device)
        return {"gpu_temp_c": s["gpu_temp_c"], "mem_temp_c": s["mem_temp_c"]}

    def hw_state(self, device: int = 0, horizon_s: float = 5.0) -> Dict[str, Any]:
        """The latest readings as the routers' hardware snapshot (tmoe_hw_state field names),
        for ``Router.route(logits, hw=...)``; unknown values NaN."""
        s = self.sample(device)
        power = s["power_avg_w"]
        pred = float(lib.tmoe_monitor_predict_thermal(self._mon, horizon_s, power)) if not math.isnan(power) else math.nan
        util = s["gpu_util_pct"]
        return {
            "gpu_temp_c": s["gpu_temp_c"],
            "mem_temp_c": s["mem_temp_c"],
            "power_w": power,
            "gpu_util": util / 100.0 if not math.isnan(util) else math.nan,
            "throttled": -1 if s["throttle_reasons"] is None else int(bool(s["throttle_reasons"] & ~1)),
            "pred_temp_c": pred,
            "pred_horizon_s": horizon_s,
        }

    # ---- windows (Zeus names) ----------------------------------------------------------
    def begin_window(self, key: str, sync_execution: bool = True) -> None:
        """Open window `key` now. sync_execution: first wait for queued GPU work (CUDA via
        torch when it is loaded; the simulator's billed work), as Zeus does."""
        self._live()
        if key in self._windows:
            raise ValueError(f"Measurement window '{key}' already exists")
        if sync_execution:
            self._sync()
        w = ffi.new("tmoe_meter_window *")
        lib.tmoe_meter_begin(self._meter, w)
        self._windows[key] = w

    def end_window(self, key: str, sync_execution: bool = True, cancel: bool = False) -> Measurement:
        """Close window `key` and return its Measurement (cancel: drop it, return an empty
        one, as Zeus does)."""
        self._live()
        if key not in self._windows:
            raise ValueError(f"Measurement window '{key}' does not exist")
        w = self._windows.pop(key)
        if cancel:
            return Measurement(time=0.0, gpu_energy={}, source=self.source)
        if sync_execution:
            self._sync()
        r, err = ffi.new("tmoe_meter_reading *"), new_error()
        check(lib.tmoe_meter_end(self._meter, w, r, err), err)
        return self._measurement(r)

    @contextlib.contextmanager
    def window(self, key: str, sync_execution: bool = True) -> Iterator["WindowResult"]:
        """``with mon.window("step") as w: ...`` then ``w.measurement``."""
        res = WindowResult()
        self.begin_window(key, sync_execution)
        try:
            yield res
        except BaseException:
            self.end_window(key, sync_execution=False, cancel=True)
            raise
        res.measurement = self.end_window(key, sync_execution)

    # ---- driving the simulated GPU -----------------------------------------------------
    def bill(self, busy_s: float, dynamic_j: float, mem_fraction: float = 0.9, device: int = 0) -> None:
        """Work done on device: busy_s seconds at full clock drawing dynamic_j above idle,
        mem_fraction of it moving memory. The simulated GPU runs it (time advances as it
        syncs); on NVML nothing happens (the real GPU bills itself)."""
        self._live()
        rc = lib.tmoe_meter_bill(self._meter, device, busy_s, dynamic_j, mem_fraction)
        if rc != lib.TMOE_OK:
            raise ThermoeError(rc, f"bill(device={device}, busy_s={busy_s}, dynamic_j={dynamic_j}, "
                               f"mem_fraction={mem_fraction}): expected a device of this "
                               "telemetry, busy_s >= 0, dynamic_j >= 0, mem_fraction in [0, 1]")

    def wait(self, seconds: float) -> None:
        """Let time pass with nothing billed (simulated time on the simulator)."""
        self._live()
        left = float(seconds)
        while left > 0:
            left = lib.tmoe_meter_wait(self._meter, left)

    def _sync(self) -> None:
        lib.tmoe_meter_sync(self._meter)
        if not self.simulated:
            import sys

            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()

    def _measurement(self, r: Any) -> Measurement:
        tot = struct_to_dict(r.total)
        devs = {i: struct_to_dict(r.dev[i]) for i in range(r.n_devices)}
        return Measurement(
            time=float(r.period_s),
            gpu_energy={i: devs[i]["energy_j"] for i in self.gpu_indices if i in devs},
            source=cstr(r.source),
            energy_method=tot["method"],
            power_avg_w=tot["power_avg_w"],
            power_peak_w=tot["power_peak_w"],
            gpu_temp_start_c=tot["gpu_temp_start_c"],
            gpu_temp_end_c=tot["gpu_temp_end_c"],
            gpu_temp_peak_c=tot["gpu_temp_peak_c"],
            mem_temp_start_c=tot["mem_temp_start_c"],
            mem_temp_end_c=tot["mem_temp_end_c"],
            mem_temp_peak_c=tot["mem_temp_peak_c"],
            lost=bool(tot["lost"]),
            total=tot,
            devices=devs,
        )


@dataclass
class WindowResult:
    """Filled when a ``Monitor.window`` block ends."""

    measurement: Optional[Measurement] = None


# tmoe_sample field -> TMOE_F_* bit name, for integer fields (doubles are NAN when unknown)
_FIELD_BITS = {
    "mem_used_bytes": "MEM_USED",
    "mem_total_bytes": "MEM_TOTAL",
    "throttle_reasons": "THROTTLE",
}

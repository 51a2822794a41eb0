"""thermoe: hardware-aware Mixture-of-Experts routing from Python.

The package wraps libthermoe (C) through cffi: ``Monitor`` measures energy, power and GPU/HBM
temperatures of windows of work (Zeus's ``begin_window``/``end_window``), ``CostModel`` reads
a kernel cost model, ``Router`` runs thermoe's routing strategies on numpy arrays and torch
tensors, ``load_run`` reads a run directory into pandas, and
``thermoe.integrations.transformers.patch`` puts the routers into transformers' MoE models,
``serve`` replays request arrivals with continuous batching (``thermoe serve``) and
``load_serve`` reads its directory.
Every figure says where it came from: ``source`` is "nvml" (measured) or "sim" (the
simulated H100). See docs/python.md.
"""

from ._core import ThermoeError, ThermoeValueError
from ._ffi import MACROS
from .cost import AnalyticCost, CostModel, CostTable
from .monitor import Measurement, Monitor
from .router import RouteResult, Router, config_fields
from .runlog import Run, load_run
from .serve import ServeResult, ServeRun, load_serve, serve

__version__: str = MACROS["TMOE_VERSION"]

__all__ = [
    "AnalyticCost",
    "CostModel",
    "CostTable",
    "Measurement",
    "Monitor",
    "RouteResult",
    "Router",
    "Run",
    "ServeResult",
    "ServeRun",
    "ThermoeError",
    "ThermoeValueError",
    "config_fields",
    "load_run",
    "load_serve",
    "serve",
]

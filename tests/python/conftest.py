"""Shared fixtures of the Python tests. ctest (tests/python/run.sh) sets THERMOE_LIBRARY,
THERMOE_API, THERMOE_BIN, THERMOE_FAKE_NVML and THERMOE_SOURCE_DIR from the build."""

import os
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("THERMOE_SOURCE_DIR", Path(__file__).resolve().parents[2]))


@pytest.fixture
def source_dir() -> Path:
    return SOURCE


@pytest.fixture
def cost_model_path() -> Path:
    return SOURCE / "data" / "h100_cost_model.json"


def need_env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        pytest.skip(f"{name} is not set (ctest sets it from the build)")
    return v

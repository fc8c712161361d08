"""run.memory_gb left out of a config: 2 GB a call on a CPU (as before, bit for bit), half the
device's memory limit on an accelerator (a fake GPU device here), 2 GB where none is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from moejax.sweep import load
from moejax.sweep.config import ConfigError
from moejax.sweep.simulate import (
    DEFAULT_MEMORY_GB,
    DEVICE_MEMORY_FRACTION,
    build_problem,
    held_lane_bytes,
    memory_budget_gb,
    plan,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"replicates": 3, "sizes.list": [1500, 2600], "run.block_rows": 64}


class FakeDevice:
    """What `memory_budget_gb` asks of a device: its platform and XLA's memory statistics."""

    def __init__(self, platform: str = "gpu", stats: object = None, fail: bool = False):
        self.platform = platform
        self._stats = stats
        self._fail = fail

    def memory_stats(self):
        if self._fail:
            raise RuntimeError("memory_stats is not supported on this device")
        return self._stats


def _cfg(**over):
    return load(ROOT / "sweeps/heterogeneous.toml", {**SMALL, **over})


def test_config_leaves_memory_gb_unset_and_refuses_bad_values():
    assert _cfg()["run"]["memory_gb"] is None
    assert _cfg(**{"run.memory_gb": 3})["run"]["memory_gb"] == 3.0
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match=r"run\.memory_gb"):
            _cfg(**{"run.memory_gb": bad})


def test_memory_budget_default_per_platform():
    gib = 2**30
    h200 = FakeDevice(stats={"bytes_limit": 106 * gib, "bytes_in_use": 0})
    assert memory_budget_gb({"memory_gb": None}, "gpu", h200) == DEVICE_MEMORY_FRACTION * 106
    assert memory_budget_gb({}, "tpu", FakeDevice("tpu", {"bytes_limit": 16 * gib})) == 8.0
    assert memory_budget_gb({"memory_gb": 3.5}, "gpu", h200) == 3.5  # the config's, when set
    assert memory_budget_gb({"memory_gb": None}, "cpu", h200) == DEFAULT_MEMORY_GB
    for unknown in (
        FakeDevice(stats=None),
        FakeDevice(stats={}),
        FakeDevice(stats={"bytes_limit": 0}),
        FakeDevice(fail=True),
    ):
        assert memory_budget_gb({"memory_gb": None}, "gpu", unknown) == DEFAULT_MEMORY_GB
    # no device given and no such backend here: the fallback
    assert memory_budget_gb({"memory_gb": None}, "no-such-backend") == DEFAULT_MEMORY_GB


def test_plan_uses_the_device_default_on_a_gpu_and_2gb_on_a_cpu():
    p = build_problem(_cfg())
    explicit = build_problem(_cfg(**{"run.memory_gb": 2.0}))
    # CPU: unchanged, the plan of an explicit 2 GB
    assert plan(p, 2, "cpu") == plan(explicit, 2, "cpu")
    assert plan(p, 2, "cpu").memory_gb == 2.0
    # GPU with 80 GiB of memory: a 40 GiB budget gives the full 2048 lanes
    big = FakeDevice(stats={"bytes_limit": 80 * 2**30})
    gp = plan(p, 1, "gpu", device=big)
    assert gp.memory_gb == 40.0
    assert gp == plan(build_problem(_cfg(**{"run.memory_gb": 40.0})), 1, "gpu")
    assert [c.lanes for c in gp.classes] == [2048]
    # the old 2 GB: fewer lanes
    assert plan(explicit, 1, "gpu", device=big).classes[0].lanes == min(
        2048, int(2 * 2**30 // held_lane_bytes(p, 2624))
    )
    # a device that reports nothing: 2 GB
    assert plan(p, 1, "gpu", device=FakeDevice(stats=None)) == plan(explicit, 1, "gpu")

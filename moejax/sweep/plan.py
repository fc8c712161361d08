"""The memory plan: lanes per call, buffer classes, held or streamed data and compute blocks,
all within run.memory_gb, decided before anything is compiled (`plan`)."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax

from moejax.mix.density import n_predictors
from moejax.mix.sampling import (
    DATA_BLOCK,
)
from moejax.sweep.lane import buffer_classes, choose_block
from moejax.sweep.problem import Problem

#: Lanes per device per compiled call when run.lanes = 0 (automatic), by platform, lowered
#: automatically for large buffers (`plan`). On a CPU the fused pass already fills the vector
#: units with one lane's 1024-row blocks, and a vmapped while-loop runs every lane of a call as
#: long as its slowest: measured (benchmarks/RESULTS.md) 1, 4 and 16 lanes give the same
#: throughput within noise and 64 is slower, so 4 (little padding of a size's last call, e.g.
#: none for 40 replicates on 1, 2, 5 or 10 devices). A GPU needs thousands of lanes.
DEFAULT_LANES: dict[str, int] = {"cpu": 4, "gpu": 2048, "tpu": 2048}


#: Lanes per part on disk when run.chunk = 0 (the resume granularity of `moejax sweep`).
DEFAULT_CHUNK_LANES = 64


class SweepPlanError(ValueError):
    """A sweep that cannot run within its memory budget (refused before anything is written)."""


def held_lane_bytes(problem: Problem, N: int) -> int:
    """Memory of one lane's held data in a buffer of N rows: X1, y, w and lf0 (d + 4 numbers
    a row) plus an EM posterior buffer (m + 1 numbers a row), counted twice for the buffers'
    copies."""
    d, m = problem.spec.d, problem.fit_spec.m
    return 8 * 2 * (d + 4 + m) * N


def streamed_lane_bytes(problem: Problem, B: int) -> int:
    """Working memory of one streamed lane: a block's draws, predictors, row-derivative planes
    and covariate products (B rows of about d + 6 + W + W^2 + (d + 2)^2 / 2 numbers, counted
    four times for temporaries)."""
    spec = problem.fit_spec  # the fit's predictors
    W = n_predictors(spec)
    return 8 * 4 * B * (spec.d + 6 + W + W * W + (spec.d + 2) ** 2 // 2)


class ClassPlan(NamedTuple):
    """How the lanes of one buffer class run: buffer rows N, its sizes, G lanes per device per
    compiled call, the devices one call uses, whether the data are streamed, and the compute
    block B (rows per step of every pass; a divisor of N)."""

    N: int
    sizes: tuple[int, ...]
    lanes: int
    devices: int
    streamed: bool
    block: int

    @property
    def per_call(self) -> int:
        return self.lanes * self.devices


class Plan(NamedTuple):
    """The grid's block (run.block_rows after the padding rule; classes may use a divisor of
    it, see `lane_block`), every buffer class's `ClassPlan`, and the memory budget of one
    device's call it was planned within (GB: run.memory_gb, or `memory_budget_gb`'s default)."""

    block: int
    classes: tuple[ClassPlan, ...]
    memory_gb: float = 2.0

    def class_of(self, n: int) -> ClassPlan:
        for c in self.classes:
            if n in c.sizes:
                return c
        raise ValueError(f"n: {n} is not a sample size of this plan")


#: run.memory_gb when the config leaves it out, on a CPU (and on an accelerator that does not
#: report its memory): the budget of one device's call, GB.
DEFAULT_MEMORY_GB = 2.0


#: run.memory_gb when the config leaves it out, on an accelerator (GPU, TPU): this fraction of
#: the device's memory limit (``device.memory_stats()["bytes_limit"]``, what XLA's allocator
#: may use). The plan's per-lane sizes are estimates of the arrays, not of XLA's temporaries
#: and fragmentation, hence half. (2 GB gave G = 102 lanes of sweeps/gpu/paper-d8.toml on a
#: GPU, far below the 2048 a GPU wants.)
DEVICE_MEMORY_FRACTION = 0.5


def memory_budget_gb(run: dict[str, Any], platform: str, device: Any = None) -> float:
    """The memory budget (GB) of one device's call: run.memory_gb when the config sets it;
    else `DEFAULT_MEMORY_GB` on a CPU, and on an accelerator `DEVICE_MEMORY_FRACTION` of
    ``device``'s memory limit (``device`` None: the first local device of ``platform``),
    `DEFAULT_MEMORY_GB` where the device reports none."""
    if run.get("memory_gb") is not None:
        return float(run["memory_gb"])
    if platform == "cpu":
        return DEFAULT_MEMORY_GB
    try:
        if device is None:
            device = jax.local_devices(backend=platform)[0]
        limit = int((device.memory_stats() or {}).get("bytes_limit", 0))
    except Exception:  # no such backend, or a device without memory statistics
        limit = 0
    return DEVICE_MEMORY_FRACTION * limit / 2**30 if limit > 0 else DEFAULT_MEMORY_GB


def host_memory_bytes() -> int:
    """Physical memory of this machine (0 if unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


#: Rows x lanes of one step of a pass on a CPU: a plane of that many float64 (128 KiB) keeps a
#: step's planes in cache. Measured at 256 lanes: 150 ns per row evaluation with 1024-row
#: blocks, 63 with 64- or 256-row blocks (benchmarks/RESULTS.md). Accelerators keep
#: run.block_rows (thousands of lanes x 1024 rows fill a GPU).
STEP_ELEMENTS = 16384


def lane_block(B: int, lanes: int) -> int:
    """The compute block of G = ``lanes`` lanes: the largest divisor of B that is a multiple of
    DATA_BLOCK with lanes x block <= STEP_ELEMENTS (B itself for few lanes; DATA_BLOCK at
    least)."""
    for k in range(1, B // DATA_BLOCK + 1):
        if B % k == 0 and (B // k) % DATA_BLOCK == 0 and lanes * (B // k) <= STEP_ELEMENTS:
            return B // k
    return DATA_BLOCK


def plan(problem: Problem, n_devices: int, platform: str | None = None, device: Any = None) -> Plan:
    """Plan every buffer class within run.memory_gb, before anything is compiled.

    run.memory_gb is the budget of one device's call (left out of the config: 2 GB on a CPU,
    half the memory limit of ``device`` on an accelerator, see `memory_budget_gb`). G (lanes
    per device per call) is run.lanes, or the platform's `DEFAULT_LANES` lowered to what fits
    the budget; a class whose G lanes' data do not fit is streamed (every pass draws its data
    again), and a budget that cannot hold even G streamed lanes is refused (`SweepPlanError`).
    G depends on the config and the buffer only, never on the device count or the chunk size,
    so neither changes any result. On a CPU the host devices share the machine's memory: a call
    uses at most as many of them as fit in half of it. The compute block is `lane_block` of G
    on a CPU."""
    cfg = problem.cfg
    run = cfg["run"]
    platform = platform or jax.default_backend()
    sizes = cfg["sizes"]["list"]
    B = choose_block(sizes, run["block_rows"], run["max_padding"])
    memory_gb = memory_budget_gb(run, platform, device)
    budget = memory_gb * 2**30
    starts = cfg["init"]["n_starts"] if cfg["init"]["mode"] == "multistart" else 1
    auto = DEFAULT_LANES.get(platform, DEFAULT_LANES["gpu"])
    host = host_memory_bytes() // 2 if platform == "cpu" else 0
    out = []
    for N, group in buffer_classes(sizes, B, run["buffer_ratio"]):
        held = held_lane_bytes(problem, N) * starts
        stream = streamed_lane_bytes(problem, B) * starts
        G = run["lanes"] or min(auto, max(1, int(budget // held)))
        streamed = G * held > budget
        if streamed:
            G = run["lanes"] or min(auto, max(1, int(budget // stream)))
            if G * stream > budget:
                raise SweepPlanError(
                    f"run.memory_gb = {_budget_text(run, memory_gb)}: {G} streamed lane(s) "
                    f"need about "
                    f"{G * stream / 2**20:.1f} MiB ({B}-row blocks); raise the budget or lower "
                    "run.block_rows or run.lanes"
                )
        one = G * (stream if streamed else held)
        D = n_devices if not host else max(1, min(n_devices, int(host // one)))
        block = lane_block(B, G) if platform == "cpu" else B
        out.append(ClassPlan(N, tuple(group), G, D, streamed, block))
    return Plan(B, tuple(out), memory_gb)


def _budget_text(run: dict[str, Any], memory_gb: float) -> str:
    if run.get("memory_gb") is not None:
        return f"{run['memory_gb']}"
    return f"{memory_gb:.4g} (default: not set in the config)"


def chunk_lanes(problem: Problem, cp: ClassPlan) -> int:
    """Lanes per chunk (one part on disk): run.chunk, or DEFAULT_CHUNK_LANES rounded up to
    whole calls."""
    c = problem.cfg["run"]["chunk"]
    if c:
        return int(c)
    return max(cp.per_call, -(-DEFAULT_CHUNK_LANES // cp.per_call) * cp.per_call)

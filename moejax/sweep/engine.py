"""The compiled engine: one program per buffer class, sharded over the devices, run on any
lanes (`Engine.submit` / `collect` / `run`). A lane's result depends on (seed, n, replicate)
alone, bitwise, whatever the chunk size or the device count."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.sweep.lane import EXECUTED, Buffers, empty_buffers, make_chunk_fn
from moejax.sweep.plan import ClassPlan, plan
from moejax.sweep.problem import Problem

#: XLA options of the engine's programs on a CPU: LLVM optimisation level 1 (measured: ~60% of
#: the default level's compile time, no slower to run). Passed with each compilation, so that
#: `simulate` in your Python and `moejax sweep` compile the same program (same results).
CPU_COMPILE_OPTIONS = {"xla_backend_optimization_level": 1}


def compile_options(device: Any) -> dict[str, Any] | None:
    return dict(CPU_COMPILE_OPTIONS) if device.platform == "cpu" else None


class Engine:
    """The compiled programs of one problem, and ``run(n, replicates)`` on any lanes.

    Every call runs exactly ``lanes x devices`` lanes of one sample size (the last call of a
    request is padded with copies of its last lane), sharded over the class's devices along
    the lane axis (`jax.sharding.NamedSharding`); programs are compiled on first use (one per
    buffer class) and kept. ``compile_s`` and ``compute_s`` accumulate the wall time of each.
    """

    def __init__(self, problem: Problem, devices: list[Any] | None = None) -> None:
        self.problem = problem
        self.devices = list(devices if devices is not None else jax.local_devices())
        self.plan = plan(problem, len(self.devices), self.devices[0].platform)
        self.compile_s = 0.0
        self.compute_s = 0.0
        self.passes_executed: float | None = 0.0
        self.passes_useful: int | None = 0
        self._programs: dict[int, Any] = {}
        self._bufs: dict[int, Any] = {}
        self._seed_host = np.uint32(problem.cfg["seed"])

    def _mesh(self, cp: ClassPlan):
        mesh = jax.sharding.Mesh(np.array(self.devices[: cp.devices]), ("lanes",))
        lanes = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("lanes"))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return mesh, lanes, replicated

    def program(self, cp: ClassPlan):
        """(compiled call, lane sharding, replicated sharding, (seed, truth)) of a class; its
        held buffers (donated to every call and handed back) live in ``self._bufs``."""
        if cp.N not in self._programs:
            mesh, lanes, rep = self._mesh(cp)
            spec, B = self.problem.spec, cp.block
            bufs_sh = None if cp.streamed else Buffers(lanes, lanes, lanes)
            # Each device runs the single-device program on its own G lanes (shard_map): no
            # collective, no loop that waits for another device's slowest lane. (Sharded by
            # the SPMD partitioner instead, the vmapped while-loop's "any lane left" test is an
            # all-reduce over the devices: every device then iterates as long as the slowest
            # lane of the whole call, and on host devices the all-reduce can deadlock.)
            P, lane_p = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("lanes")
            bufs_p = None if cp.streamed else Buffers(lane_p, lane_p, lane_p)
            local = jax.shard_map(
                make_chunk_fn(self.problem, cp.N, cp.streamed, cp.block),
                mesh=mesh,
                in_specs=(P, lane_p, P, P, bufs_p),
                out_specs=(lane_p, bufs_p),
                check_vma=False,
            )
            fn = jax.jit(
                local,
                in_shardings=(rep, lanes, rep, rep, bufs_sh),
                out_shardings=(lanes, bufs_sh),
                donate_argnums=() if cp.streamed else (4,),
            )
            spec_of = lambda a, sh: jax.ShapeDtypeStruct(
                np.shape(a), jnp.asarray(a).dtype, sharding=sh
            )
            truth = jax.tree_util.tree_map(lambda a: spec_of(a, rep), self.problem.truth)
            args = [
                jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
                jax.ShapeDtypeStruct((cp.per_call,), jnp.int32, sharding=lanes),
                jax.ShapeDtypeStruct((), jnp.uint32, sharding=rep),
                truth,
            ]
            if cp.streamed:
                args.append(None)
                bufs = None
            else:
                bufs = jax.device_put(empty_buffers(spec, cp.per_call, cp.N, B), lanes)
                args.append(jax.tree_util.tree_map(lambda a: spec_of(a, lanes), bufs))
            t0 = time.perf_counter()
            compiled = fn.lower(*args).compile(compiler_options=compile_options(self.devices[0]))
            self.compile_s += time.perf_counter() - t0
            consts = (jax.device_put(self._seed_host, rep), jax.device_put(self.problem.truth, rep))
            self._programs[cp.N] = (compiled, lanes, rep, consts)
            self._bufs[cp.N] = bufs
        return self._programs[cp.N]

    def _count_passes(self, cp: ClassPlan, share: np.ndarray, passes: np.ndarray) -> None:
        """Add a request's passes to ``passes_executed`` and ``passes_useful``, from every
        lane's ``share`` of its call (padding copies included, calls in order) and the real
        lanes' own ``passes``: each device's G lanes of a call executed G x the largest share
        of a lane (the shares of a lane's batch are equal when its loop compacts, and lockstep
        trips when not). A fit that does not count its passes (``passes`` -1) makes both
        counts None for the rest of the engine's life."""
        if self.passes_useful is None:
            return
        if np.any(passes < 0):
            self.passes_executed = self.passes_useful = None
            return
        G = cp.lanes
        per_device = np.asarray(share, np.float64).reshape(-1, G)  # (calls x devices, G)
        self.passes_executed += float(np.sum(G * per_device.max(axis=1)))
        self.passes_useful += int(passes.sum())

    def pass_counts(self) -> dict[str, Any]:
        """{"executed", "useful", "ratio"} of the passes over the data run so far (None where
        the estimator does not count them: EM, solvers other than Newton)."""
        ex, us = self.passes_executed, self.passes_useful
        ratio = ex / us if ex is not None and us else None
        return {"executed": ex, "useful": us, "ratio": ratio}

    def compile_all(self) -> None:
        for cp in self.plan.classes:
            self.program(cp)

    def submit(self, n: int, replicates: list[int] | np.ndarray) -> Pending:
        """Dispatch the calls that fit lanes (n, r) for r in ``replicates`` and return at once
        (JAX dispatches asynchronously): `collect` fetches the results. Submitting the next
        request before collecting this one keeps the device busy while the host writes."""
        rs = [int(r) for r in replicates]
        if not rs:
            raise ValueError("replicates: expected at least one replicate")
        cp = self.plan.class_of(int(n))
        compiled, lanes, rep, (seed, truth) = self.program(cp)
        C = cp.per_call
        padded = rs + [rs[-1]] * (-len(rs) % C)
        n_dev = jax.device_put(np.int32(n), rep)
        t0 = time.perf_counter()
        outs = []
        for i in range(0, len(padded), C):
            r_dev = jax.device_put(np.array(padded[i : i + C], np.int32), lanes)
            cols, self._bufs[cp.N] = compiled(n_dev, r_dev, seed, truth, self._bufs[cp.N])
            outs.append(cols)
        self.compute_s += time.perf_counter() - t0
        return Pending(int(n), rs, cp, outs)

    def collect(self, pending: Pending) -> dict[str, np.ndarray]:
        """The results of a `submit`: {column: (len(replicates),)} (the columns of `fit_lane`
        plus n and replicate). ``compute_s`` gains the time spent waiting for them."""
        t0 = time.perf_counter()
        got = jax.device_get(pending.outs)
        self.compute_s += time.perf_counter() - t0
        k = len(pending.replicates)
        full = {key: np.concatenate([np.asarray(o[key]) for o in got]) for key in got[0]}
        self._count_passes(pending.plan, full.pop(EXECUTED), full["passes"][:k])
        res = {key: v[:k] for key, v in full.items()}
        res["n"] = np.full(k, pending.n, np.int64)
        res["replicate"] = np.array(pending.replicates, np.int64)
        return res

    def run(self, n: int, replicates: list[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Fit lanes (n, r) for r in ``replicates``: `collect` of `submit`."""
        return self.collect(self.submit(n, replicates))


class Pending(NamedTuple):
    """A request `Engine.submit` dispatched: its n, replicates, class plan and the calls'
    device results (not yet fetched)."""

    n: int
    replicates: list[int]
    plan: ClassPlan
    outs: list[dict[str, jax.Array]]

"""The compacting while-loop (`moejax.estimation.lanes`): same results as lockstep, finished
lanes cost nothing, and the executed trips it reports are the trips it ran.

The executed count is checked against an independent count: from the lanes' own trip counts
k_i alone, trip t runs ceil(#{i : k_i > t} / C) chunks of C lanes, so the batch executes
sum_t ceil(a_t / C) C lane-trips (lockstep: G max_i k_i)."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moejax.estimation.estimators import fit_data, prepare_data
from moejax.estimation.init import init_near_truth
from moejax.estimation.lanes import lane_chunk, lane_while_loop
from moejax.estimation.solvers import ProjectedNewton
from moejax.mix.sampling import sample
from moejax.sweep import load
from moejax.sweep.simulate import build_problem

G = 37  # not a multiple of any chunk below


def halving(a: jax.Array, chunk: int, lockstep: bool = False):
    """A lane that halves x until x < 1e-3 (its data, closed over, shift every step): lane a
    needs about log2(a) + 10 trips."""
    data = jnp.arange(5.0) * a
    cond = lambda s: (s[0] > 1e-3) & (s[1] < 200)
    body = lambda s: (s[0] * 0.5 + 1e-6 * jnp.sum(jnp.sin(data)) ** 2, s[1] + 1)
    s0 = (a, jnp.int32(0))
    if lockstep:
        return jax.lax.while_loop(cond, body, s0), jnp.float64(0)
    return lane_while_loop(cond, body, s0, chunk)


A = jnp.exp(jnp.linspace(0.0, 20.0, G))


@functools.cache
def batched(chunk: int, lockstep: bool = False):
    (x, k), ex = jax.jit(jax.vmap(lambda a: halving(a, chunk, lockstep)))(A)
    return np.asarray(x), np.asarray(k), np.asarray(ex)


def expected_executed(k: np.ndarray, C: int) -> int:
    return int(sum(-(-np.sum(k > t) // C) * C for t in range(int(k.max()))))


def test_alone_it_is_a_while_loop_and_counts_its_trips() -> None:
    (x, k), ex = jax.jit(lambda a: halving(a, 0))(jnp.float64(300.0))
    (x0, k0), _ = jax.jit(lambda a: halving(a, 0, True))(jnp.float64(300.0))
    assert float(x) == float(x0) and int(k) == int(k0) and float(ex) == int(k) > 0


@pytest.mark.parametrize("chunk", [1, 4, 8, 16])
def test_compacted_lanes_run_their_own_trips_and_count_the_batch(chunk: int) -> None:
    x0, k0, _ = batched(G, lockstep=True)
    x, k, ex = batched(chunk)
    assert np.array_equal(k, k0)  # every lane stops exactly where it stops alone
    assert np.ptp(k0) >= 10  # lanes differ: lockstep would waste trips
    # the same values whatever the chunk (bit for bit), and lockstep's to rounding (XLA may
    # contract a multiply-add differently in the two programs: measured 1 ulp)
    assert np.array_equal(x, batched(4)[0])
    np.testing.assert_allclose(x, x0, rtol=4e-16, atol=0)
    assert np.all(ex == ex[0])  # every lane carries an equal share
    assert ex.sum() == pytest.approx(expected_executed(k, chunk), abs=1e-9)
    assert ex.sum() < G * k.max()  # finished lanes did not run


def test_a_chunk_of_the_whole_batch_is_lockstep_bit_for_bit() -> None:
    x0, k0, _ = batched(G, lockstep=True)
    x, k, ex = batched(G)
    assert np.array_equal(x, x0) and np.array_equal(k, k0)
    assert ex.sum() == pytest.approx(G * k.max())


def test_lane_chunk_rule() -> None:
    assert lane_chunk(4) == 4 and lane_chunk(127) == 127  # lockstep below 128 lanes
    assert lane_chunk(128) == 64 and lane_chunk(2048) == 64 and lane_chunk(4096) == 128
    assert lane_chunk(2048, 100) == 100 and lane_chunk(16, 100) == 16


# ----------------------------------------------------------------------------------------------
# Newton under vmap: compacted against lockstep

LANES, N = 16, 300


@functools.cache
def newton_program(chunk: int):
    """(jitted LANES vmapped direct fits with Newton's loop in chunks of ``chunk`` (LANES:
    lockstep), their arguments) on the tiny config."""
    cfg = load(
        "sweeps/heterogeneous.toml", {"model.d": 2, "sizes.list": [N], "truth.beta": "default"}
    )
    pb = build_problem(cfg)
    spec, ini = pb.fit_spec, cfg["init"]
    truth = pb.truth.at(N)
    kd, ki = jax.random.split(jax.random.key(3))
    X, y = jax.vmap(lambda k: sample(k, spec, truth, N))(jax.random.split(kd, LANES))
    data = jax.vmap(lambda X, y: prepare_data(spec, X, y))(X, y)
    inits = jax.vmap(
        lambda k: init_near_truth(
            k, spec, truth, N, 30 * ini["c_gate"], 30 * ini["c_expert"], ini["rho"]
        )
    )(jax.random.split(ki, LANES))
    solver = ProjectedNewton(lane_chunk=chunk)
    one = lambda dt, p: fit_data(spec, dt, p, "direct", solver, pb.bounds)
    return jax.jit(jax.vmap(one)), (data, inits)


@functools.cache
def newton_fits(chunk: int):
    fn, args = newton_program(chunk)
    return jax.tree.map(np.asarray, fn(*args))


def test_newton_compacted_equals_lockstep() -> None:
    lock, comp = newton_fits(LANES), newton_fits(5)
    assert np.ptp(lock.passes) >= 2, lock.passes  # the lanes need different numbers of passes
    same = lambda r: jax.tree.leaves(r._replace(executed=None))
    for a, b in zip(same(lock), same(comp), strict=True):
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-300)
        else:
            assert np.array_equal(a, b)
    assert np.all(lock.passes >= lock.n_iter + 1)  # a pass per iteration, backtracks on top
    assert lock.executed.sum() == pytest.approx(LANES * lock.passes.max())
    assert comp.executed.sum() == pytest.approx(expected_executed(comp.passes, 5))
    assert comp.executed.sum() < lock.executed.sum()


def test_the_compacted_loop_lowers_for_cuda() -> None:
    """The compacted program runs on a GPU unchanged: lowered for CUDA on this CPU, it sorts the
    lanes and scatters chunks back, and its only custom calls are the batched
    eigendecomposition and the fused pass's Triton kernel (no host callback)."""
    fn, args = newton_program(5)
    text = fn.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.sort" in text and "stablehlo.scatter" in text
    calls = set(re.findall(r"custom_call @([\w$.]+)", text))
    assert calls == {"cusolver_syevd_ffi", "__gpu$xla.gpu.triton"}

"""The lane program: a lane's keys and data (held buffers or blocks redrawn from keys), its fit
and its errors (`fit_lane`), and the program the engine compiles for a buffer class
(`make_chunk_fn`). Pure functions of arrays and a static problem."""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from moejax.estimation.bounds import pack
from moejax.estimation.data import DataSource
from moejax.estimation.estimators import best_start, fit_data
from moejax.estimation.information import bound_mask, params_standard_errors, standard_errors
from moejax.estimation.init import init_near_truth, random_inits
from moejax.estimation.lanes import lane_chunk
from moejax.estimation.objective import Blocks
from moejax.estimation.solvers import ProjectedNewton
from moejax.mix.density import class_probs_planes
from moejax.mix.sampling import (
    DATA_BLOCK,
    draw_planes,
    respond_planes,
    sample_block_planes,
    sample_covariates,
)
from moejax.mix.spec import MixSpec
from moejax.mix.truth import MixTruth
from moejax.sweep.problem import Problem
from moejax.voronoi import voronoi_errors


def block_padding(sizes: list[int], block: int) -> float:
    """Rows processed over real rows when each n is rounded up to whole blocks."""
    return sum(-(-n // block) * block for n in sizes) / sum(sizes)


def choose_block(sizes: list[int], block_rows: int, max_padding: float) -> int:
    """The compute block: the largest multiple of DATA_BLOCK <= block_rows, halving, whose
    padding stays <= max_padding. (The data do not depend on it: they are drawn in
    DATA_BLOCK-row blocks keyed by their index.)"""
    B = max(DATA_BLOCK, block_rows // DATA_BLOCK * DATA_BLOCK)
    while B > DATA_BLOCK and block_padding(sizes, B) > max_padding:
        B = max(DATA_BLOCK, B // 2 // DATA_BLOCK * DATA_BLOCK)
    return B


def buffer_classes(sizes: list[int], block: int, ratio: float) -> list[tuple[int, list[int]]]:
    """Group sorted sizes into buffer classes spanning at most a factor ``ratio`` each; a
    class's buffer holds its largest n rounded up to whole blocks. Returns [(N, sizes)].

    The work never depends on the buffer (loops run over active blocks only), but allocating
    and filling a buffer does: a few classes keep small n from paying for the largest buffer,
    at the price of one compiled program per class."""
    classes: list[tuple[int, list[int]]] = []
    for n in sorted(sizes):
        if classes and n <= classes[-1][1][0] * ratio:
            classes[-1][1].append(n)
        else:
            classes.append((0, [n]))
    return [(-(-max(g) // block) * block, g) for _, g in classes]


class LaneKeys(NamedTuple):
    """A lane's keys, folded from (seed, n, replicate) alone: its data, its initialisation and
    its density-error points."""

    data: jax.Array
    init: jax.Array
    dens: jax.Array


#: fold_in constant of a lane's estimator key (`fit_key`): a stream of its own, so that an
#: estimator that draws (a stochastic EM) changes none of the other keys' draws.
FIT_STREAM = 0x5EED


def fit_key(keys: LaneKeys) -> jax.Array:
    """The key a lane hands its estimator (`moejax.estimation.estimators.Estimator.fit`); the
    built-in estimators do not draw, so it changes nothing they compute."""
    return jax.random.fold_in(keys.init, FIT_STREAM)


def lane_keys(seed: jax.Array, n: jax.Array, r: jax.Array) -> LaneKeys:
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), n), r)
    return LaneKeys(*jax.random.split(key, 3))


Block = tuple[jax.Array, Any, jax.Array]  # (X1_b (d+1, B), (y_b (B,), lf0_b (B,)), w_b (B,))


def block_weights(n: jax.Array, b: jax.Array, B: int) -> jax.Array:
    """w_b (B,): 1 for the rows of block b below n, else 0."""
    return ((b * B + jnp.arange(B)) < n).astype(jnp.float64)


def draw_block(
    spec: MixSpec, tp: Any, k_data: jax.Array, n: jax.Array, b: jax.Array, B: int, radius
) -> Block:
    """Compute block b of a lane's data, rows b B .. (b+1) B - 1, as planes (rows last), from
    its DATA_BLOCK-row blocks `moejax.mix.sample_block(k_data, j, ...)` (the sampler's own
    draws: `moejax.mix.sample` reproduces them); rows past n are zeros of weight 0. Held and
    streamed lanes use these very blocks, so their data agree bit for bit."""
    keep = (b * B + jnp.arange(B)) < n
    if spec.regression:
        Xb, yb, lf0 = sample_block_planes(k_data, b, spec, tp, DATA_BLOCK, B, radius, n)
    else:
        # The draws come out of a cond (block b is active), so they are materialised once:
        # handed straight to their many consumers, XLA computes the normal sampler again in
        # each of them (measured: a streamed pass 9-21x a held one).
        zeros = lambda _: (jnp.zeros((spec.d, B)), jnp.zeros((B,)))
        draw = lambda b: draw_planes(k_data, b, spec, DATA_BLOCK, B, radius, n)
        Xb, u = jax.lax.cond(b < (n + B - 1) // B, draw, zeros, b)
        yb, lf0 = respond_planes(spec, tp, Xb, u)
    Xb = jnp.where(keep, Xb, 0.0)
    yb = jnp.where(keep, yb, 0).astype(spec.y_dtype)
    lf0 = jnp.where(keep, lf0, 0.0)
    X1b = jnp.concatenate([Xb, jnp.ones((1, B), Xb.dtype)], axis=0)
    return X1b, (yb, lf0), keep.astype(jnp.float64)


class Buffers(NamedTuple):
    """Held data of L lanes, block-major planes: X1 (L, N / B, d+1, B) covariate planes with a
    ones plane, y (L, N / B, B) labels or responses, lf0 (L, N / B, B) the frozen expert's
    log-density. Only a lane's first ceil(n / B) blocks are meaningful (rows past n: zeros);
    later blocks hold whatever an earlier call left there and are never read."""

    X1: jax.Array
    y: jax.Array
    lf0: jax.Array


def empty_buffers(spec: MixSpec, lanes: int, N: int, B: int) -> Buffers:
    """Zeroed `Buffers` for ``lanes`` lanes of N rows in blocks of B."""
    nb = N // B
    return Buffers(
        jnp.zeros((lanes, nb, spec.d + 1, B)),
        jnp.zeros((lanes, nb, B), spec.y_dtype),
        jnp.zeros((lanes, nb, B)),
    )


def fill_buffers(
    spec: MixSpec,
    tp: Any,
    k_data: jax.Array,
    n: jax.Array,
    B: int,
    radius: float | None,
    bufs: Buffers,
) -> Buffers:
    """Draw the ceil(n / B) active blocks of every lane into ``bufs`` (L lanes, keys k_data
    (L,)), in place: a loop over blocks, each block drawn for all lanes at once (vmap) and
    written along the block axis, so no lane ever pays for the buffer's length."""
    count = (n + B - 1) // B
    put = lambda buf, v, b: jax.lax.dynamic_update_index_in_dim(buf, v, b, axis=1)
    draw = jax.vmap(lambda k, b: draw_block(spec, tp, k, n, b, B, radius), in_axes=(0, None))

    def body(b, bufs):
        X1b, (yb, lf0b), _ = draw(k_data, b)
        return Buffers(put(bufs.X1, X1b, b), put(bufs.y, yb, b), put(bufs.lf0, lf0b, b))

    return jax.lax.fori_loop(0, count, body, bufs)


def held_source(
    n: jax.Array, B: int, X1: jax.Array, y: jax.Array, lf0: jax.Array, lane: Any = None
):
    """``source(b)`` of one lane's held blocks (X1 (N / B, d+1, B), y and lf0 (N / B, B)), or,
    with ``lane``, of lane ``lane`` of the whole buffers (a leading lane axis): each block is
    then read by index where it is used, never the lane's whole buffer at once."""
    if lane is None:
        return lambda b: (X1[b], (y[b], lf0[b]), block_weights(n, b, B))
    return lambda b: (X1[lane, b], (y[lane, b], lf0[lane, b]), block_weights(n, b, B))


def fit_lane(
    problem: Problem,
    n: jax.Array,
    tp: Any,
    keys: LaneKeys,
    source: Callable[[jax.Array], Block],
    blocks: Blocks,
) -> dict[str, jax.Array]:
    """One lane's fit and errors, its data read block by block from ``source`` (held or
    streamed): {column: ()} of fits.csv (pure; the engine vmaps it over the lanes)."""
    o = problem.options
    spec, fspec, bounds = problem.spec, problem.fit_spec, problem.bounds  # truth's, fitted
    solver = o.solver
    if solver == "newton":  # the loop's lane chunk (moejax.estimation.lanes)
        cap = o.max_iter if o.method == "direct" else o.inner_max_iter
        solver = ProjectedNewton(max_iter=cap, lane_chunk=o.lane_chunk)
    fit_kw = dict(
        method=o.method,
        solver=solver,
        bounds=bounds,
        max_iter=o.max_iter,
        tol=o.tol,
        inner_max_iter=o.inner_max_iter,
        em_accel=o.em_accel,
        switch_tol=o.switch_tol,
    )
    data = DataSource.blockwise(jnp.asarray(n, jnp.float64), True, source, blocks)
    if o.init_mode == "multistart":
        starts = random_inits(keys.init, fspec, o.n_starts, bounds, o.start_scale)
        one = lambda p: fit_data(fspec, data, p, **fit_kw, key=fit_key(keys))
        every = jax.vmap(one)(starts)
        start = best_start(every)
        res = jax.tree_util.tree_map(lambda a: a[start], every)
        if every.passes is not None:  # the lane's passes are every start's
            res = res._replace(passes=jnp.sum(every.passes), executed=jnp.sum(every.executed))
    else:
        init = (
            tp
            if o.init_mode == "truth"
            else init_near_truth(keys.init, fspec, tp, n, o.c_gate, o.c_expert, o.rho)
        )
        res = fit_data(fspec, data, init, **fit_kw, key=fit_key(keys))
        start = 0
    est = res.params
    err = voronoi_errors(est.beta, est.tau, est.eta, est.nu, tp.beta, tp.tau, tp.eta, tp.nu)
    if o.density_points > 0 and not spec.regression:
        Xh = sample_covariates(keys.dens, spec.d, o.density_points, o.design.for_points)
        dens = density_error(fspec, est, tp, Xh, true_spec=spec)
    else:
        dens = jnp.nan  # off, or regression: no closed-form Hellinger distance
    many = fspec.m > 1  # the Voronoi loss and its cells (m_hat = m* = 1: the plain errors)
    lo, hi = bounds.arrays(fspec)
    ses = standard_errors(res.info, pack(fspec, est), lo, hi)
    return {
        "err_beta": err.beta if spec.has_beta else jnp.nan,
        "err_exp_tau": err.exp_tau,
        "err_eta": err.eta,
        "err_density": dens,
        "err_nu": err.nu if spec.regression else jnp.nan,
        "err_voronoi": err.total if many else jnp.nan,
        "n_empty_cells": err.n_empty.astype(jnp.int32) if many else jnp.int32(0),
        "n_shared_cells": err.n_shared.astype(jnp.int32) if many else jnp.int32(0),
        **fit_columns(res),
        "start": jnp.asarray(start, jnp.int32),
        **kept_columns(fspec, est, tp, ses),
    }


def kept_columns(fspec: MixSpec, est: Any, tp: Any, ses: Any) -> dict[str, jax.Array]:
    """A fit's evidence as ``{"<group>.<leaf>": array}``: the estimate (MixParams of the fitted
    spec), its standard errors (`moejax.estimation.information`; NaN where not estimated, on a
    bound or not identified), its bound flags (int8) and the truth G*(n) (MixParams of the
    truth's spec)."""
    groups = {
        "estimate": est,
        "se": params_standard_errors(fspec, est, ses.se),
        "on_bound": jax.tree_util.tree_map(
            lambda a: a.astype(jnp.int8), bound_mask(fspec, ses.on_bound)
        ),
        "truth": tp,
    }
    return {f"{g}.{k}": v for g, p in groups.items() for k, v in p._asdict().items()}


def density_error(
    spec: MixSpec, est: Any, tp: Any, Xh: jax.Array, true_spec: MixSpec | None = None
) -> jax.Array:
    """Mean Hellinger distance between the fitted and the true class distributions over the
    points Xh (m, d): ``est`` (MixParams of ``spec``'s m_hat adapters) against ``tp``
    (MixParams of ``true_spec``'s m* adapters; default ``spec``, the exact-fitted case); a ()
    array. The points as planes, in blocks of at most 256, one scan over the blocks.
    (The scan's operand is the drawn points, so they are materialised once; handed to the
    class probabilities directly, XLA computes the normal sampler again in each consumer,
    measured 6 times over: a third of a fit at n = 2000.)"""
    m = Xh.shape[0]
    nb = -(-m // 256)
    size = -(-m // nb)
    pad = nb * size - m
    Xp = jnp.concatenate([Xh, jnp.zeros((pad, spec.d), Xh.dtype)]) if pad else Xh
    blocks = Xp.reshape(nb, size, spec.d).transpose(0, 2, 1)  # (nb, d, size) planes
    keep = (jnp.arange(nb * size) < m).reshape(nb, size)

    def body(acc, xs):
        Xb, kb = xs
        p = class_probs_planes(spec, est, Xb)
        q = class_probs_planes(spec if true_spec is None else true_spec, tp, Xb)
        sq = reduce(jnp.add, [(jnp.sqrt(a) - jnp.sqrt(b)) ** 2 for a, b in zip(p, q, strict=True)])
        return acc + jnp.sum(jnp.where(kb, jnp.sqrt(0.5 * sq), 0.0)), None

    return jax.lax.scan(body, jnp.zeros((), Xh.dtype), (blocks, keep))[0] / m


def make_chunk_fn(
    problem: Problem, N: int, streamed: bool = False, B: int | None = None
) -> Callable[..., Any]:
    """The engine's program for a buffer of N rows: ``chunk(n, rs, seed, truth, bufs) ->
    (columns, bufs)`` fits the lanes (n, r) for r in rs (L,) and returns {column: (L,)}.

    Held (``bufs`` a `Buffers` of L lanes, donated by the engine and handed back): the active
    blocks of every lane are drawn into the buffers, then the fits (vmapped over the lanes)
    read them block by block. Streamed (``bufs`` None): every pass of every fit draws its
    blocks again from their keys (same data; memory independent of n). Every pass over the
    data loops over the ceil(n / B) active blocks only, so one program serves every sample
    size of the class with work proportional to n; seed and truth are arguments, so the
    program (and JAX's persistent cache) is shared by configs that differ only in them."""
    cfg = problem.cfg  # read here, outside the traced program: the block size only
    spec, o = problem.spec, problem.options
    radius = o.design  # the covariate design (`moejax.mix.design.Design`)
    if B is None:
        B = choose_block(cfg["sizes"]["list"], cfg["run"]["block_rows"], cfg["run"]["max_padding"])
    if N % B:
        raise ValueError(f"N: buffer length {N} is not a multiple of the block size {B}")

    def chunk(n, rs, seed, truth, bufs):
        keys = jax.vmap(lambda r: lane_keys(seed, n, r))(rs)
        tp = truth.at(n)
        blocks = Blocks(B, (n + B - 1) // B)
        if streamed:

            def one(k: LaneKeys):
                src = lambda b: draw_block(spec, tp, k.data, n, b, B, radius)
                return fit_lane(problem, n, tp, k, src, blocks)

            return jax.vmap(one)(keys), None
        bufs = fill_buffers(spec, tp, keys.data, n, B, radius, bufs)
        L = rs.shape[0]
        if lane_chunk(L, o.lane_chunk) < L:
            # Newton's loop gathers the lanes still iterating (moejax.estimation.lanes): each
            # lane reads its blocks from the whole buffers by its index, so a chunk gathers
            # lane indices, and each pass only the blocks it reads (gathering per-lane
            # buffers would copy every lane's N rows on every trip).
            def one_indexed(k: LaneKeys, lane):
                return fit_lane(problem, n, tp, k, held_source(n, B, *bufs, lane), blocks)

            return jax.vmap(one_indexed)(keys, jnp.arange(L, dtype=jnp.int32)), bufs

        def one(k: LaneKeys, X1, y, lf0):
            return fit_lane(problem, n, tp, k, held_source(n, B, X1, y, lf0), blocks)

        return jax.vmap(one)(keys, *bufs), bufs

    return chunk


def lane_data(
    spec: MixSpec,
    truth: MixTruth,
    seed: jax.Array,
    n: jax.Array,
    r: jax.Array,
    N: int,
    B: int,
    radius: float | None,
) -> tuple[Buffers, Callable[[jax.Array], Block]]:
    """One lane's held buffers (L = 1, as the engine fills them) and its streamed source: the
    data of lane (seed, n, r) both ways (tests and benchmarks)."""
    keys = lane_keys(seed, n, r)
    tp = truth.at(n)
    bufs = fill_buffers(spec, tp, keys.data[None], n, B, radius, empty_buffers(spec, 1, N, B))
    return bufs, lambda b: draw_block(spec, tp, keys.data, n, b, B, radius)


#: A lane's share of the passes its call executed (`moejax.estimation.lanes`): the engine sums
#: it into its pass counts and drops it from the results (not a column of fits.csv).
EXECUTED = "passes_executed"


def fit_columns(res: Any) -> dict[str, jax.Array]:
    """The fits.csv columns that describe a fit's outcome (a `FitResult`), and `EXECUTED`.
    ``passes`` is -1 where the estimator does not count its passes (EM, solvers other than
    Newton)."""
    return {
        "loglik": res.loglik,
        "n_iter": res.n_iter,
        "inner_steps": res.inner_steps,
        "converged": res.converged.astype(jnp.int32),
        "at_bound": res.at_bound.astype(jnp.int32),
        "status_code": res.status,
        "grad_norm": res.grad_norm,
        "passes": jnp.int32(-1) if res.passes is None else res.passes.astype(jnp.int32),
        EXECUTED: jnp.nan if res.executed is None else res.executed,
    }

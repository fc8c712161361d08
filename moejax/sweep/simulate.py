"""The pure core of the engine: a problem -> every (sample size, replicate) lane -> arrays.

``simulate(config)`` runs every lane of a study through compiled, vmapped fits and returns the
per-fit columns of fits.csv as arrays of shape (sizes, replicates), touching no disk. The sweep
driver (`moejax.sweep.engine.run_sweep`) adds chunks on disk, resume and progress around the
same `Engine`.

A lane's data are generated inside the compiled function from a key folded from (seed, n,
replicate), block by block, so they depend on nothing else. A lane's *arithmetic* depends on
nothing else either: every compiled call runs exactly ``lanes`` lanes per device (G, a static
part of the plan chosen from the config, never from the chunk size or the device count), so
the same kernels of the same shapes compute every lane, wherever it sits in a call and however
many devices share the call. A sweep's results are therefore bitwise identical whatever its
chunk size and device count (tests/test_sweep.py checks chunks 1, 4, 8, 64 and 1, 2, 4 host
devices).

One program serves every sample size of a buffer class (sizes within a factor
``run.buffer_ratio``): data live in a buffer as long as the class's largest n, and every pass
over them loops over the active row blocks only (rows beyond n carry weight 0).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.estimation.bounds import Bounds, pack
from moejax.estimation.estimators import FitData, best_start, fit_data
from moejax.estimation.information import bound_mask, params_standard_errors, standard_errors
from moejax.estimation.init import init_near_truth, random_inits, split_assignment
from moejax.estimation.lanes import lane_chunk
from moejax.estimation.objective import Blocks
from moejax.estimation.solvers import STATUS_NAMES, ProjectedNewton
from moejax.mix.density import class_probs_planes
from moejax.mix.sampling import (
    DATA_BLOCK,
    draw_planes,
    respond_planes,
    sample_block_planes,
    sample_covariates,
)
from moejax.mix.spec import MixParams, MixSpec
from moejax.mix.truth import MixTruth, drifting_truth
from moejax.sweep import config as config_mod
from moejax.sweep.schema import KEPT_GROUPS
from moejax.voronoi import voronoi_errors

#: Lanes per device per compiled call when run.lanes = 0 (automatic), by platform, lowered
#: automatically for large buffers (`plan`). On a CPU the fused pass already fills the vector
#: units with one lane's 1024-row blocks, and a vmapped while-loop runs every lane of a call as
#: long as its slowest: measured (benchmarks/RESULTS.md) 1, 4 and 16 lanes give the same
#: throughput within noise and 64 is slower, so 4 (little padding of a size's last call, e.g.
#: none for 40 replicates on 1, 2, 5 or 10 devices). A GPU needs thousands of lanes.
DEFAULT_LANES: dict[str, int] = {"cpu": 4, "gpu": 2048, "tpu": 2048}
#: Lanes per part on disk when run.chunk = 0 (the resume granularity of `moejax sweep`).
DEFAULT_CHUNK_LANES = 64


@dataclass(frozen=True)
class Problem:
    """What a study needs: the model, its truth schedule, its box, and the resolved config
    sections the engine reads (``estimator``, ``init``, ``run``, ``sizes``, ``replicates``,
    ``seed``, ``model.radius``, ``truth.regime`` / ``gamma`` and ``name``).

    ``spec`` is the truth's model (m* adapters: the data are drawn from it); ``fit_spec`` the
    fitted model (m_hat >= m* adapters, otherwise the same gate, likelihood, experts and box;
    None: ``spec``, the exact-fitted case)."""

    spec: MixSpec
    truth: MixTruth
    bounds: Bounds
    cfg: dict[str, Any]
    fit_spec: MixSpec | None = None

    @property
    def regime(self) -> str:
        """The truth's regime, "heterogeneous" or "homogeneous" (``truth.regime``)."""
        return self.cfg["truth"]["regime"]

    @property
    def gamma(self) -> float | None:
        """The drift exponent of a homogeneous truth (None for a heterogeneous one, as in a
        run's manifest)."""
        return float(self.cfg["truth"]["gamma"]) if self.regime == "homogeneous" else None

    @property
    def model(self) -> dict[str, Any]:
        """The model config as a run's manifest records it (``config["model"]``), with at least
        ``gate``, ``adapters`` (m*) and ``fitted_adapters`` (m_hat): what the report reads to
        pick its hypotheses (`moejax.report.theory.theory_regime`)."""
        fit = self.fit_spec if self.fit_spec is not None else self.spec
        return {
            **self.cfg.get("model", {}),
            "gate": self.spec.gate,
            "adapters": self.spec.m,
            "fitted_adapters": fit.m,
        }

    def __post_init__(self) -> None:
        if self.fit_spec is None:
            object.__setattr__(self, "fit_spec", self.spec)
        elif self.fit_spec != fitted_spec(self.spec, self.fit_spec.m):
            raise ValueError(
                "fit_spec: must be the truth's spec with adapters >= "
                f"{self.spec.m} (only the number of adapters may differ)"
            )


def fitted_spec(spec: MixSpec, fitted_adapters: int) -> MixSpec:
    """The fitted model of a truth ``spec`` (m* adapters) with ``fitted_adapters`` = m_hat >= m*
    adapters: the same gate, likelihood, experts and output maps (``spec`` itself when
    m_hat = m*). Raises ValueError naming ``fitted_adapters`` otherwise."""
    if isinstance(fitted_adapters, bool) or not isinstance(fitted_adapters, int | np.integer):
        raise ValueError(f"fitted_adapters: expected an integer, got {fitted_adapters!r}")
    if fitted_adapters < spec.m:
        raise ValueError(
            f"fitted_adapters: must be >= the truth's {spec.m} adapter(s) (spec.adapters), "
            f"got {fitted_adapters}"
        )
    if fitted_adapters == spec.m:
        return spec
    # A MixSpec of the same fields (the paper face's ModelSpec has no adapters argument).
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(MixSpec) if f.init}
    return MixSpec(**{**fields, "adapters": int(fitted_adapters)})


def build_problem(cfg: dict[str, Any]) -> Problem:
    """The model (any member of the family), its truth schedule and its box from a resolved
    config."""
    m, t, b = cfg["model"], cfg["truth"], cfg["bounds"]
    spec = MixSpec(
        d=m["d"],
        K=m["K"],
        frozen=m["frozen"],
        adapter=m["adapter"],
        eta0=m["eta0"],
        adapters=m["adapters"],
        gate=m["gate"],
        likelihood=m["likelihood"],
        frozen_likelihood=m["frozen_likelihood"],
        nu0=m["nu0"],
        scale=m["scale"],
        frozen_scale=m["frozen_scale"],
        bias=m["bias"],
        frozen_bias=m["frozen_bias"],
    )
    p = spec.params(t["beta"], t["tau"], t["eta"], t["nu"])
    nu_delta = t["nu_delta"] if spec.regression else np.zeros(spec.m)
    truth = drifting_truth(p, np.asarray(t["delta"]), np.asarray(nu_delta), t["gamma"])
    bounds = Bounds(*(tuple(b[f]) for f in Bounds._fields)).validate()
    fit = fitted_spec(spec, m.get("fitted_adapters") or m["adapters"])
    return Problem(spec, truth, bounds, cfg, fit)


def problem(
    spec: MixSpec,
    truth: MixTruth,
    *,
    bounds: Bounds | None = None,
    estimator: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    sizes: Iterable[int] | None = None,
    replicates: int = 40,
    seed: int = 0,
    radius: float | None = None,
    name: str = "problem",
    fitted_adapters: int | None = None,
) -> Problem:
    """A study built in Python: any model of the family (a `moejax.ModelSpec` or a
    `moejax.mix.MixSpec`, user activations included), a truth schedule (`moejax.Truth`,
    `moejax.mix.fixed_truth` / `drifting_truth`), the box, and the estimator / init / run
    options of a sweep config as dicts (keys and defaults of the ``[estimator]``, ``[init]``
    and ``[run]`` tables). ``sizes`` defaults to the config default (20 log-spaced sizes in
    [1e3, 1e5]). ``fitted_adapters`` (m_hat, default the spec's m*): fit m_hat >= m* adapters
    to data from the m*-adapter truth (`fitted_spec`; the config's ``model.fitted_adapters``).
    Bad options raise ValueError naming the field."""
    if not isinstance(spec, MixSpec):
        raise ValueError(f"spec: expected a ModelSpec or MixSpec, got {type(spec).__name__}")
    if not isinstance(truth, MixTruth):
        raise ValueError(
            "truth: expected a truth schedule (moejax.Truth, moejax.mix.fixed_truth or "
            f"drifting_truth), got {type(truth).__name__}"
        )
    truth = MixTruth(*truth)  # the paper face's Truth gives Params: the engine needs MixParams
    try:
        spec.check_params(truth.at(1.0))
    except ValueError as err:
        raise ValueError(f"truth: does not fit the spec ({err})") from None
    fit = fitted_spec(spec, spec.m if fitted_adapters is None else fitted_adapters)
    bounds = (Bounds() if bounds is None else Bounds(*bounds)).validate()
    raw = {
        "name": name,
        "seed": seed,
        "replicates": replicates,
        "estimator": dict(estimator or {}),
        "init": dict(init or {}),
        "run": dict(run or {}),
        "sizes": {"list": [int(v) for v in sizes]} if sizes is not None else {},
    }
    if radius is not None and not radius > 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    cfg = config_mod.resolve_engine(raw, min_size=fit.n_params)
    if cfg["init"]["mode"] == "truth" and fit.m > spec.m:
        raise ValueError(
            f"init.mode: 'truth' with fitted_adapters = {fit.m} > the truth's {spec.m} would "
            "start the split copies identical; use near_truth or multistart"
        )
    cfg["model"] = {
        "radius": None if radius is None else float(radius),
        "adapters": spec.m,
        "fitted_adapters": fit.m,
    }
    gamma = float(np.asarray(truth.gamma))
    cfg["truth"] = {
        "regime": "homogeneous" if spec.homogeneous else "heterogeneous",
        "gamma": gamma,
    }
    return Problem(spec, truth, bounds, cfg, fit)


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
        Xb, yb, lf0 = sample_block_planes(k_data, b, spec, tp, DATA_BLOCK, B, radius)
    else:
        # The draws come out of a cond (block b is active), so they are materialised once:
        # handed straight to their many consumers, XLA computes the normal sampler again in
        # each of them (measured: a streamed pass 9-21x a held one).
        zeros = lambda _: (jnp.zeros((spec.d, B)), jnp.zeros((B,)))
        draw = lambda b: draw_planes(k_data, b, spec, DATA_BLOCK, B, radius)
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


def held_source(n: jax.Array, B: int, X1: jax.Array, y: jax.Array, lf0: jax.Array):
    """``source(b)`` of one lane's held blocks (X1 (N / B, d+1, B), y and lf0 (N / B, B))."""
    return lambda b: (X1[b], (y[b], lf0[b]), block_weights(n, b, B))


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
    cfg = problem.cfg
    spec, fspec, bounds = problem.spec, problem.fit_spec, problem.bounds  # truth's, fitted
    e, ini, run = cfg["estimator"], cfg["init"], cfg["run"]
    radius = cfg["model"]["radius"]
    solver = e["solver"]
    if solver == "newton":  # the loop's lane chunk (moejax.estimation.lanes)
        cap = e["max_iter"] if e["method"] == "direct" else e["inner_max_iter"]
        solver = ProjectedNewton(max_iter=cap, lane_chunk=run["lane_chunk"])
    fit_kw = dict(
        method=e["method"],
        solver=solver,
        bounds=bounds,
        max_iter=e["max_iter"],
        tol=e["tol"],
        inner_max_iter=e["inner_max_iter"],
        em_accel=e["em_accel"],
        switch_tol=e["switch_tol"],
    )
    data = FitData(None, None, None, jnp.asarray(n, jnp.float64), None)
    if ini["mode"] == "multistart":
        starts = random_inits(keys.init, fspec, ini["n_starts"], bounds, ini["start_scale"])
        one = lambda p: fit_data(fspec, data, p, blocks=blocks, source=source, **fit_kw)
        every = jax.vmap(one)(starts)
        start = best_start(every)
        res = jax.tree_util.tree_map(lambda a: a[start], every)
        if every.passes is not None:  # the lane's passes are every start's
            res = res._replace(passes=jnp.sum(every.passes), executed=jnp.sum(every.executed))
    else:
        init = (
            tp
            if ini["mode"] == "truth"
            else init_near_truth(
                keys.init, fspec, tp, n, ini["c_gate"], ini["c_expert"], ini["rho"]
            )
        )
        res = fit_data(fspec, data, init, blocks=blocks, source=source, **fit_kw)
        start = 0
    est = res.params
    err = voronoi_errors(est.beta, est.tau, est.eta, est.nu, tp.beta, tp.tau, tp.eta, tp.nu)
    m_dens = run["density_points"]
    if m_dens > 0 and not spec.regression:
        Xh = sample_covariates(keys.dens, spec.d, m_dens, radius)
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


def init_rule(problem: Problem) -> str:
    """The start rule of a problem's fits, in words (recorded in the manifest as
    ``init_rule``)."""
    ini, m, m_hat = problem.cfg["init"], problem.spec.m, problem.fit_spec.m
    mode = ini["mode"]
    if mode == "multistart":
        return (
            f"multistart: {ini['n_starts']} truth-free starts for all {m_hat} fitted adapters "
            f"(every coordinate of the flat parameter vector N(0, {ini['start_scale']:g}^2), "
            "clipped into the box); the best finite log-likelihood wins; fits.csv 'start' is "
            "the index of the winning start"
        )
    if mode == "truth":
        return "truth: every fit starts at the truth G*(n)"
    noise = (
        f"truth + N(0, (c n^-rho)^2) noise, c = {ini['c_gate']:g} on beta and tau, "
        f"{ini['c_expert']:g} on eta (nu: multiplicative), rho = {ini['rho']:g}"
    )
    if m_hat == m:
        return f"near_truth: {noise}"
    src = split_assignment(m, m_hat)
    return (
        f"near_truth, split ({m_hat} fitted adapters, {m} true): fitted adapter i < {m} starts "
        f"from true adapter i, each extra one i = {m}..{m_hat - 1} splits true adapter "
        f"(i - {m}) mod {m} (round robin; true adapter per fitted adapter: {list(src)}); the k "
        "copies of a true adapter s start at its atom (beta*, eta*, nu*) with tau*_s - log(k), "
        f"so that their gate weights sum to the truth's, each perturbed independently: {noise}"
    )


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
    cfg = problem.cfg
    spec = problem.spec
    radius = cfg["model"]["radius"]
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
        if lane_chunk(L, cfg["run"]["lane_chunk"]) < L:
            # Newton's loop gathers the lanes still iterating (moejax.estimation.lanes): each
            # lane reads its blocks from the whole buffers by its index, so a chunk gathers
            # lane indices, and each pass only the blocks it reads (gathering per-lane
            # buffers would copy every lane's N rows on every trip).
            def one_indexed(k: LaneKeys, lane):
                src = lambda b: (bufs.X1[lane, b], (bufs.y[lane, b], bufs.lf0[lane, b]))
                return fit_lane(
                    problem, n, tp, k, lambda b: (*src(b), block_weights(n, b, B)), blocks
                )

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
    W = spec.m * (1 + spec.R + (1 if spec.regression else 0))
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

    def _count_passes(self, cp: ClassPlan, got: list[dict[str, Any]], k: int) -> None:
        """Add a request's passes to ``passes_executed`` and ``passes_useful``: each device's
        G lanes of a call executed G x the largest share of a lane (the shares of a lane's
        batch are equal when its loop compacts, and lockstep trips when not); the useful
        passes are the real lanes' own (padding copies excluded). A fit that does not count
        its passes (``passes`` -1) makes both counts None for the rest of the engine's life."""
        if self.passes_useful is None:
            return
        passes = np.concatenate([np.asarray(o["passes"]) for o in got])[:k]
        if np.any(passes < 0):
            self.passes_executed = self.passes_useful = None
            return
        G = cp.lanes
        for o in got:
            share = np.asarray(o[EXECUTED], np.float64).reshape(-1, G)  # (devices, G)
            self.passes_executed += float(np.sum(G * share.max(axis=1)))
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
        self._count_passes(pending.plan, got, k)
        res = {
            key: np.concatenate([np.asarray(o[key]) for o in got])[:k]
            for key in got[0]
            if key != EXECUTED
        }
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


def resolve_problem(
    config: Any, sizes: Iterable[int] | None, replicates: int | None, seed: int | None
) -> Problem:
    """A `Problem` from a config path, a config dict (raw or resolved) or a `Problem`, with
    sizes / replicates / seed overridden when given."""
    if isinstance(config, Problem):
        if sizes is None and replicates is None and seed is None:
            return config
        cfg = config_mod.override_engine(
            config.cfg, sizes, replicates, seed, min_size=config.fit_spec.n_params
        )
        return dataclasses.replace(config, cfg=cfg)
    overrides: dict[str, Any] = {}
    if sizes is not None:
        overrides["sizes.list"] = [int(v) for v in sizes]
    if replicates is not None:
        overrides["replicates"] = replicates
    if seed is not None:
        overrides["seed"] = seed
    if isinstance(config, str | os.PathLike):
        cfg = config_mod.load(Path(config), overrides)
    elif isinstance(config, dict):
        cfg = config_mod.resolve(config_mod.apply_overrides(config, overrides))
    else:
        raise ValueError(
            "config: expected a config path, a config dict or a moejax Problem, got "
            f"{type(config).__name__}"
        )
    return build_problem(cfg)


def simulate(
    config: Any,
    sizes: Iterable[int] | None = None,
    replicates: int | None = None,
    seed: int | None = None,
    *,
    progress: bool | None = None,
    devices: list[Any] | None = None,
) -> dict[str, np.ndarray]:
    """Run every (sample size, replicate) lane of a study and return its fits as arrays.

    Args:
      config: a sweep config path (TOML), a config dict (as read from TOML, or resolved), or a
        `Problem` built in Python (`moejax.problem`).
      sizes, replicates, seed: override the config's.
      progress: a progress bar on stderr (None: only on a terminal).
      devices: the devices to shard calls over (default: every local device).

    Returns:
      {column: (len(sizes), replicates) array} for every column of fits.csv (``n``,
      ``replicate``, ``err_beta``, ``err_exp_tau``, ``err_eta``, ``err_density``, ``err_nu``,
      ``err_voronoi``, ``loglik``, ``n_iter``, ``inner_steps``, ``converged``, ``at_bound``,
      ``n_empty_cells``, ``n_shared_cells``, ``status`` (names), ``grad_norm``, ``start``,
      ``passes``), plus
      ``status_code``; row i is sizes[i] in increasing order. Beside them, every fit's
      evidence as `moejax.mix.MixParams` whose leaves have leading axes (sizes, replicates):
      ``estimate`` (the fitted adapters), ``se`` (standard errors from the observed
      information; NaN where not estimated, on a bound or not identified), ``on_bound`` (bool,
      the coordinate ended on its box bound); and ``truth``, the MixParams of G*(n) with a
      leading (sizes,) axis. Equal to the fits.csv and estimates.npz of ``moejax sweep`` on
      the same config and seed (same program, same lanes). And ``problem``: the `Problem`
      that was run (sizes, replicates and seed as run; its ``regime``, ``gamma`` and ``model``
      are what `moejax.slopes` reads for the theory columns, and ``simulate(out["problem"])``
      runs it again). Nothing is written to disk.
    """
    prob = resolve_problem(config, sizes, replicates, seed)
    cfg = prob.cfg
    grid, R = cfg["sizes"]["list"], cfg["replicates"]
    eng = Engine(prob, devices)
    bar = progress_bar(len(grid) * R, 0, progress, "moejax simulate")
    rows = []
    try:
        for n in grid:
            cp = eng.plan.class_of(n)
            step = max(cp.per_call, -(-DEFAULT_CHUNK_LANES // cp.per_call) * cp.per_call)
            parts = []
            for i in range(0, R, step):
                parts.append(eng.run(n, list(range(i, min(R, i + step)))))
                if bar is not None:
                    bar.update(len(parts[-1]["n"]))
            rows.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    finally:
        if bar is not None:
            bar.close()
    out = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    codes = out["status_code"]
    names = np.array(STATUS_NAMES + tuple(f"status_{i}" for i in range(len(STATUS_NAMES), 16)))
    out["status"] = names[np.clip(codes, 0, len(names) - 1)]
    out = group_kept(out, truth_axis=1)
    out["problem"] = prob
    return out


def group_kept(arrays: dict[str, np.ndarray], truth_axis: int | None = None) -> dict[str, Any]:
    """Fold the ``<group>.<leaf>`` arrays of `KEPT_GROUPS` into one MixParams per group (bound
    flags as bool). ``truth_axis``: the replicate axis, along which the truth is the same, is
    dropped from the truth's leaves (`simulate`: (sizes, replicates, ...) -> (sizes, ...)).
    Other keys are left as they are."""
    out = {k: v for k, v in arrays.items() if k.split(".")[0] not in KEPT_GROUPS}
    for group in KEPT_GROUPS:
        keys = [f"{group}.{leaf}" for leaf in MixParams._fields]
        if not all(k in arrays for k in keys):
            continue
        leaves = [np.asarray(arrays[k]) for k in keys]
        if group == "on_bound":
            leaves = [a.astype(bool) for a in leaves]
        if group == "truth" and truth_axis is not None:
            leaves = [np.take(a, 0, axis=truth_axis) for a in leaves]
        out[group] = MixParams(*leaves)
    return out


def progress_bar(total: int, initial: int, enabled: bool | None, desc: str):
    """A tqdm bar on stderr, or None when disabled (``enabled`` None: only on a terminal; the
    environment variable MOEJAX_NO_PROGRESS=1 turns it off)."""
    if enabled is False or os.environ.get("MOEJAX_NO_PROGRESS") == "1":
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="fit",
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None if enabled is None else False,
    )

"""The batched Monte Carlo engine: lanes (n, replicate) -> compiled, vmapped, sharded fits.

Data are generated inside the compiled function from a key folded from (seed, n, replicate), so a
fit's result depends on nothing else: not the chunk size, the device count or the order. One
program serves every sample size: data live in a buffer as long as the largest n and every pass
over them loops over the active row blocks only (rows beyond n carry weight 0). Lanes of one n
run in chunks, one compiled call each, sharded over the local devices; every finished chunk is
persisted atomically so that an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.estimation.bounds import Bounds
from moejax.estimation.estimators import FitData, best_fit, fit_data
from moejax.estimation.init import init_near_truth, random_inits
from moejax.estimation.objective import Blocks
from moejax.estimation.solvers import STATUS_NAMES
from moejax.losses import mean_hellinger
from moejax.mix.density import frozen_logpdf, gate_log_weights, log_class_probs, predictors
from moejax.mix.sampling import DATA_BLOCK, sample_block, sample_covariates
from moejax.mix.spec import MixSpec
from moejax.mix.truth import MixTruth, drifting_truth
from moejax.sweep import store
from moejax.sweep.config import config_hash
from moejax.voronoi import voronoi_errors


@dataclass(frozen=True)
class Problem:
    """What a resolved config describes: the model, the truth schedule and the box."""

    spec: MixSpec
    truth: MixTruth
    bounds: Bounds
    cfg: dict[str, Any]


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
    return Problem(spec, truth, bounds, cfg)


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


class LaneData(NamedTuple):
    """What every lane starts from: the truth at n, the active row blocks, the keys left for
    the initialisation and the density error, and either the data buffers (held) or the
    block source that draws them again on every pass (streamed); see `lane_data`."""

    tp: Any
    blocks: Blocks
    k_init: jax.Array
    k_dens: jax.Array
    X1: jax.Array | None
    y: jax.Array | None
    w: jax.Array | None
    lf0: jax.Array | None
    source: Callable[[jax.Array], tuple[jax.Array, Any, jax.Array]] | None


def block_drawer(
    spec: MixSpec, tp: Any, k_data: jax.Array, n: jax.Array, B: int, radius: float | None
) -> Callable[[jax.Array], tuple[jax.Array, Any, jax.Array]]:
    """``draw(b) -> (X1_b (B, d+1), (y_b (B,), lf0_b (B,)), w_b (B,))``: compute block b of a
    lane's data, rows b B .. (b+1) B - 1, from its DATA_BLOCK-row blocks
    `moejax.mix.sample_block(k_data, j, ...)`; rows past n are zeros of weight 0. The held
    buffers are exactly these blocks one after the other, so held and streamed data agree."""
    d, y_dtype = spec.d, spec.y_dtype

    def draw(b):
        sub = jnp.arange(B // DATA_BLOCK) + b * (B // DATA_BLOCK)
        one = lambda j: sample_block(k_data, j, spec, tp, DATA_BLOCK, radius)
        Xb, yb = jax.vmap(one)(sub)
        Xb, yb = Xb.reshape(B, d), yb.reshape(B)
        keep = (b * B + jnp.arange(B)) < n
        Xb = jnp.where(keep[:, None], Xb, 0.0)
        yb = jnp.where(keep, yb, 0).astype(y_dtype)
        X1b = jnp.concatenate([Xb, jnp.ones((B, 1), Xb.dtype)], axis=1)
        return X1b, (yb, frozen_logpdf(spec, Xb, yb)), keep.astype(jnp.float64)

    return draw


def lane_data(
    spec: MixSpec,
    truth: MixTruth,
    seed: jax.Array,
    n: jax.Array,
    r: jax.Array,
    N: int,
    B: int,
    radius: float | None,
    streamed: bool = False,
) -> LaneData:
    """Keys folded from (seed, n, r) alone, the truth at n, and the lane's data: drawn into
    buffers of N rows block by block over the ceil(n / B) active blocks only (held), or left
    to be drawn block by block on every pass over the data (streamed: nothing of size n is
    held). Buffers: X1 (N, d+1) with a ones column, y (N,) (int32 labels or float64
    responses), w (N,) (1 for the first n rows, else 0) and lf0 (N,), the frozen expert's
    log-density; rows past n hold zeros."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), n), r)
    k_data, k_init, k_dens = jax.random.split(key, 3)
    tp = truth.at(n)
    blocks = Blocks(B, (n + B - 1) // B)
    draw = block_drawer(spec, tp, k_data, n, B, radius)
    if streamed:
        return LaneData(tp, blocks, k_init, k_dens, None, None, None, None, draw)

    def fill(b, bufs):
        X1b, (yb, lf0b), wb = draw(b)
        put = lambda buf, v: jax.lax.dynamic_update_slice_in_dim(buf, v, b * B, axis=0)
        return tuple(put(buf, v) for buf, v in zip(bufs, (X1b, yb, wb, lf0b), strict=True))

    d = spec.d
    zeros = (
        jnp.zeros((N, d + 1)),
        jnp.zeros((N,), spec.y_dtype),
        jnp.zeros((N,)),
        jnp.zeros((N,)),
    )
    bufs = jax.lax.fori_loop(0, blocks.count, fill, zeros)
    return LaneData(tp, blocks, k_init, k_dens, *bufs, None)


def make_lane_fn(problem: Problem, N: int, streamed: bool = False) -> Callable[..., dict]:
    """The per-lane function ``lane(n, r, seed, truth)`` for a buffer of N rows (pure; vmap it
    over n and r). N must be a multiple of the block size (run.block_rows).

    The lane's data are generated in DATA_BLOCK-row blocks keyed by their index
    (`moejax.mix.sample_block`; `moejax.mix.sample` reproduces them) into the buffer, so they
    depend on (seed, n, replicate) only; every pass over the data (sampling, likelihood,
    derivatives) loops over the ceil(n / block) active blocks only, so one compiled program
    serves every sample size with work proportional to n. Seed and truth are arguments, not
    constants, so the program (and JAX's persistent cache) is shared by configs that differ
    only in them. Errors are the Voronoi blocks (`moejax.voronoi`), the plain block errors
    for one adapter. ``streamed``: no buffers; every pass draws its blocks again from their
    keys (same data, memory independent of n)."""
    cfg = problem.cfg
    spec, bounds = problem.spec, problem.bounds
    e, ini, run = cfg["estimator"], cfg["init"], cfg["run"]
    radius = cfg["model"]["radius"]
    B = choose_block(cfg["sizes"]["list"], run["block_rows"], run["max_padding"])
    if N % B:
        raise ValueError(f"N: buffer length {N} is not a multiple of the block size {B}")
    fit_kw = dict(
        method=e["method"],
        solver=e["solver"],
        bounds=bounds,
        max_iter=e["max_iter"],
        tol=e["tol"],
        inner_max_iter=e["inner_max_iter"],
    )
    m_dens = run["density_points"]
    many = spec.m > 1

    def lane(n, r, seed, truth):
        ld = lane_data(spec, truth, seed, n, r, N, B, radius, streamed)
        tp, blocks = ld.tp, ld.blocks
        data = FitData(ld.X1, ld.y, ld.w, jnp.asarray(n, jnp.float64), ld.lf0)

        if ini["mode"] == "multistart":
            starts = random_inits(ld.k_init, spec, ini["n_starts"], bounds, ini["start_scale"])
            res = best_fit(
                jax.vmap(
                    lambda p: fit_data(spec, data, p, blocks=blocks, source=ld.source, **fit_kw)
                )(starts)
            )
        else:
            init = (
                tp
                if ini["mode"] == "truth"
                else init_near_truth(
                    ld.k_init, spec, tp, n, ini["c_gate"], ini["c_expert"], ini["rho"]
                )
            )
            res = fit_data(spec, data, init, blocks=blocks, source=ld.source, **fit_kw)
        est = res.params
        err = voronoi_errors(est.beta, est.tau, est.eta, est.nu, tp.beta, tp.tau, tp.eta, tp.nu)
        if m_dens > 0 and not spec.regression:
            Xh = sample_covariates(ld.k_dens, spec.d, m_dens, radius)
            dens = mean_hellinger(log_class_probs(spec, est, Xh), log_class_probs(spec, tp, Xh))
        else:
            dens = jnp.nan  # off, or regression: no closed-form Hellinger distance
        return {
            "err_beta": err.beta if spec.has_beta else jnp.nan,
            "err_exp_tau": err.exp_tau,
            "err_eta": err.eta,
            "err_density": dens,
            "err_nu": err.nu if spec.regression else jnp.nan,
            "err_voronoi": err.total if many else jnp.nan,
            "n_empty_cells": err.n_empty.astype(jnp.int32) if many else jnp.int32(0),
            **fit_columns(res),
        }

    return lane


def fit_columns(res: Any) -> dict[str, jax.Array]:
    """The fits.csv columns that describe a fit's outcome (a `FitResult`)."""
    return {
        "loglik": res.loglik,
        "n_iter": res.n_iter,
        "inner_steps": res.inner_steps,
        "converged": res.converged.astype(jnp.int32),
        "at_bound": res.at_bound.astype(jnp.int32),
        "status_code": res.status,
        "grad_norm": res.grad_norm,
    }


class SweepPlanError(ValueError):
    """A sweep that cannot run within its memory budget (refused before anything is written)."""


def held_lane_bytes(problem: Problem, N: int) -> int:
    """Memory of one lane's held data in a buffer of N rows: X1, y, w and lf0 (d + 4 numbers
    a row) plus an EM posterior buffer (m + 1 numbers a row), counted twice for the buffers'
    copies."""
    d, m = problem.spec.d, problem.spec.m
    return 8 * 2 * (d + 4 + m) * N


def streamed_lane_bytes(problem: Problem, B: int) -> int:
    """Working memory of one streamed lane: a block's draws, predictors and row derivatives
    (B rows of about d + 6 + W + W^2 numbers, counted four times for temporaries)."""
    spec = problem.spec
    W = spec.m * (1 + spec.R + (1 if spec.regression else 0))
    return 8 * 4 * B * (spec.d + 6 + W + W * W)


def plan_chunk(problem: Problem, N: int, B: int, n_devices: int) -> tuple[int, bool]:
    """(lanes per compiled call, streamed) for a buffer class of N rows within
    run.memory_gb: a lane's data are held when they fit the budget, else streamed; the chunk
    is run.chunk, or as many lanes as fit (at most 256), a multiple of the device count.
    Raises SweepPlanError when not even one streamed lane fits."""
    cfg = problem.cfg
    budget = cfg["run"]["memory_gb"] * 2**30
    streamed = held_lane_bytes(problem, N) > budget
    one = streamed_lane_bytes(problem, B) if streamed else held_lane_bytes(problem, N)
    if one > budget:
        raise SweepPlanError(
            f"run.memory_gb = {cfg['run']['memory_gb']}: even one streamed lane needs about "
            f"{one / 2**20:.1f} MiB ({B}-row blocks); raise the budget or lower run.block_rows"
        )
    # Multi-start fits n_starts starts per lane on the same data: budget for their work too.
    starts = cfg["init"]["n_starts"] if cfg["init"]["mode"] == "multistart" else 1
    lanes = cfg["run"]["chunk"] or max(1, min(int(budget // (one * starts)), 256))
    return max(n_devices, -(-lanes // n_devices) * n_devices), streamed


def auto_chunk(problem: Problem, N: int, n_devices: int) -> int:
    """Lanes per compiled call for a buffer class of N rows (see `plan_chunk`)."""
    cfg = problem.cfg
    B = choose_block(cfg["sizes"]["list"], cfg["run"]["block_rows"], cfg["run"]["max_padding"])
    return plan_chunk(problem, N, B, n_devices)[0]


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("moejax", "jax", "jaxlib", "jaxopt", "optax", "numpy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class RunDirError(store.StoreError):
    """The results directory holds another config."""


def _prepare_dir(out: Path, cfg: dict, digest: str, force: bool) -> None:
    store.check_writable(out)
    man = out / "manifest.json"
    if man.exists():
        try:
            old = store.read_json(man).get("config_hash")
        except (OSError, ValueError):
            old = None
        if old != digest:
            if not force:
                raise RunDirError(
                    f"{out} holds results of a different config (hash {old} != {digest}); "
                    "use --force to overwrite it or choose another --out"
                )
            store.clear_run(out)
    elif any((out / "parts").glob("part-*.npz")):
        if not force:
            raise RunDirError(
                f"{out} holds result parts but no manifest; use --force to "
                "overwrite it or choose another --out"
            )
        store.clear_run(out)


def adapter_weight(problem: Problem, points: int = 200_000) -> float:
    """E_X[total gate weight of the adapters] at the truth, by Monte Carlo (gates do not
    drift with n)."""
    spec, truth = problem.spec, problem.truth
    X = sample_covariates(jax.random.key(20260101), spec.d, points, problem.cfg["model"]["radius"])
    g = predictors(spec, truth.at(1.0), X)[:, : spec.m]
    return float(jnp.mean(1.0 - jnp.exp(gate_log_weights(spec.gate, g)[:, 0])))


def _manifest(cfg, digest, status, extra) -> dict[str, Any]:
    return {
        "name": cfg["name"],
        "regime": cfg["truth"]["regime"],
        "gamma": cfg["truth"]["gamma"] if cfg["truth"]["regime"] == "homogeneous" else None,
        "status": status,
        "config_hash": digest,
        "config": cfg,
        "versions": versions(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        **extra,
    }


def run_sweep(
    cfg: dict[str, Any],
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a resolved sweep config into directory ``out``.

    Writes the parts, ``fits.csv`` and ``manifest.json`` only; the slope report is the caller's
    (``moejax.report.make_report(out)``, as ``moejax sweep`` does). Returns the final manifest
    (``{}`` on a process other than 0 of a multi-process run). Raises `store.StoreError` if
    ``out`` is unusable.
    """
    out = Path(out)
    digest = config_hash(cfg)
    problem = build_problem(cfg)
    sizes, R = cfg["sizes"]["list"], cfg["replicates"]
    devices = jax.local_devices()
    D = len(devices)
    B = choose_block(sizes, cfg["run"]["block_rows"], cfg["run"]["max_padding"])
    classes = buffer_classes(sizes, B, cfg["run"]["buffer_ratio"])
    # Plan every chunk's memory before anything is compiled or written.
    chunk_of, streamed_of = {}, {}
    for N, _ in classes:
        C, streamed_of[N] = plan_chunk(problem, N, B, D)
        chunk_of[N] = math.ceil(min(C, R) / D) * D
    _prepare_dir(out, cfg, digest, force)
    # Chunks never mix sample sizes, so a chunk's block loops run exactly ceil(n / B) times.
    plan = [
        (n, list(range(R))[i : i + chunk_of[N]], N)
        for N, group in classes
        for n in group
        for i in range(0, R, chunk_of[N])
    ]
    ratio = sum(chunk_of[N] * -(-n // B) * B for n, _, N in plan) / (R * sum(sizes))
    layout = {
        "adapter_weight": adapter_weight(problem),
        "buffer_rows": max(N for N, _ in classes),
        "block_rows": B,
        "chunk": max(chunk_of.values()),
        "padding_ratio": ratio,
        "buckets": [
            {"padded_size": N, "sizes": g, "chunk": chunk_of[N], "streamed": streamed_of[N]}
            for N, g in classes
        ],
    }
    t_start = time.time()
    store.write_json(
        out / "manifest.json",
        _manifest(
            cfg, digest, "running", {**layout, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ),
    )

    done, next_part = store.load_parts(out)
    pid, nproc = jax.process_index(), jax.process_count()
    if nproc > 1:
        # Every process must have listed the parts (so agree on next_part and on the lanes
        # done) before any process writes one; else a part index can be taken twice.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("moejax-sweep-start")
    done_set = set(zip(done.get("n", []), done.get("replicate", []), strict=True))
    mesh = jax.sharding.Mesh(np.array(devices), ("lanes",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("lanes"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    seed = jax.device_put(np.uint32(cfg["seed"]), replicated)
    truth = jax.device_put(problem.truth, replicated)

    total = len(sizes) * R
    todo = [(n, [r for r in rs if (n, r) not in done_set], N) for n, rs, N in plan]
    todo = [(i, n, rs, N) for i, (n, rs, N) in enumerate(todo) if rs and i % nproc == pid]
    compile_s = compute_s = 0.0
    programs: dict[int, Any] = {}

    def program(N: int):
        # n is shared by the lanes of a chunk (unbatched): the block loops then have one
        # trip count, plain slices and no per-lane select over the buffers.
        nonlocal compile_s
        if N not in programs:
            fn = jax.jit(
                jax.vmap(make_lane_fn(problem, N, streamed_of[N]), in_axes=(None, 0, None, None)),
                in_shardings=(replicated, sharding, replicated, replicated),
                out_shardings=sharding,
            )
            n_arg = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
            lanes_arg = jax.ShapeDtypeStruct((chunk_of[N],), jnp.int32, sharding=sharding)
            t0 = time.time()
            programs[N] = fn.lower(n_arg, lanes_arg, seed, truth).compile()
            compile_s += time.time() - t0
        return programs[N]

    bar = _progress(total, len(done_set), progress)
    try:
        for i, n, rs, N in todo:
            compiled = program(N)
            k = len(rs)
            rs_padded = rs + [rs[-1]] * (chunk_of[N] - k)
            n_vec = jax.device_put(np.int32(n), replicated)
            r_vec = jax.device_put(np.array(rs_padded, np.int32), sharding)
            t0 = time.time()
            res = jax.device_get(compiled(n_vec, r_vec, seed, truth))
            compute_s += time.time() - t0
            arrays = {key: np.asarray(v)[:k] for key, v in res.items()}
            arrays["n"] = np.full(k, n, np.int64)
            arrays["replicate"] = np.array(rs, np.int64)
            store.save_part(out, next_part + i, arrays)
            if bar is not None:
                bar.update(k)
    finally:
        if bar is not None:
            bar.close()

    if nproc > 1:
        multihost_utils.sync_global_devices("moejax-sweep-done")
    lanes, _ = store.load_parts(out)
    if pid != 0:
        return {}
    if nproc > 1:
        lanes = _other_processes_parts(out, lanes, total)
    store.write_fits_csv(out, lanes, STATUS_NAMES)
    codes = lanes["status_code"]
    counts = {
        "n_fits": len(codes),
        "n_converged": int(np.sum(lanes["converged"])),
        "n_failed": int(np.sum(lanes["converged"] == 0)),
        "n_at_bound": int(np.sum(lanes["at_bound"])),
        "status_counts": {
            name: int(np.sum(codes == i))
            for i, name in enumerate(STATUS_NAMES)
            if np.any(codes == i)
        },
    }
    manifest = _manifest(
        cfg,
        digest,
        "complete",
        {
            **layout,
            "timings": {
                "wall_s": time.time() - t_start,
                "compile_s": compile_s,
                "compute_s": compute_s,
                "lanes_this_run": total - len(done_set),
            },
            "counts": counts,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    store.write_json(out / "manifest.json", manifest)
    return manifest


#: How long process 0 waits, after the final barrier, for other hosts' parts to be listed.
PARTS_VISIBLE_S = 120.0


def _other_processes_parts(out: Path, lanes: dict, total: int) -> dict:
    """All ``total`` lanes, on process 0 of a multi-process run, once every part is listed.

    Every process wrote its parts before the final barrier, but a shared filesystem (NFS) may
    list another host's newest files only after its directory cache expires (up to a minute):
    re-list until all lanes are there, and never write an incomplete fits.csv."""
    deadline = time.monotonic() + PARTS_VISIBLE_S
    while len(lanes.get("n", ())) < total and time.monotonic() < deadline:
        time.sleep(1.0)
        lanes, _ = store.load_parts(out)
    missing = total - len(lanes.get("n", ()))
    if missing > 0:
        raise store.StoreError(
            f"{out / 'parts'}: {missing} of {total} fits missing {PARTS_VISIBLE_S:.0f} s after "
            "every process finished (is the directory shared by all hosts?); run again to "
            "compute them"
        )
    return lanes


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="fit",
        desc="moejax sweep",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=os.environ.get("MOEJAX_NO_PROGRESS") == "1",
    )

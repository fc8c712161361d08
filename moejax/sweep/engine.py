"""The batched Monte Carlo engine: lanes (n, replicate) -> compiled, vmapped, sharded fits.

Data are generated inside the compiled function from a key folded from (seed, n, replicate), so a
fit's result depends on nothing else: not the chunk size, the device count or the order. Sample
sizes are grouped into a few padded buckets (rows beyond n carry weight 0); each bucket compiles
once; its lanes run in chunks, one compiled call each, sharded over the local devices; every
finished chunk is persisted atomically so that an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.fit import Bounds, fit, fit_multistart, init_near_truth, random_inits
from moejax.fit.solvers import STATUS_NAMES
from moejax.losses import hellinger_distance, parameter_errors
from moejax.model import ModelSpec
from moejax.sampling import sample, sample_covariates
from moejax.sweep import store
from moejax.sweep.config import config_hash
from moejax.truth import Truth, heterogeneous_truth, homogeneous_truth


@dataclass(frozen=True)
class Problem:
    """What a resolved config describes: the model, the truth schedule and the estimator."""

    spec: ModelSpec
    truth: Truth
    bounds: Bounds
    cfg: dict[str, Any]


def build_problem(cfg: dict[str, Any]) -> Problem:
    m, t, b = cfg["model"], cfg["truth"], cfg["bounds"]
    spec = ModelSpec(
        d=m["d"],
        K=m["K"],
        frozen=m["frozen"],
        adapter=m["adapter"],
        eta0=m["eta0"],
        scale=m["scale"],
        frozen_scale=m["frozen_scale"],
        bias=m["bias"],
        frozen_bias=m["frozen_bias"],
    )
    if t["regime"] == "homogeneous":
        truth = homogeneous_truth(spec, t["beta"], t["tau"], t["delta"], t["gamma"])
    else:
        truth = heterogeneous_truth(spec, t["beta"], t["tau"], t["eta"])
    bounds = Bounds(tuple(b["beta"]), tuple(b["tau"]), tuple(b["eta"])).validate()
    return Problem(spec, truth, bounds, cfg)


def plan_buckets(sizes: list[int], max_padding: float) -> list[tuple[int, list[int]]]:
    """Group sorted sizes into buckets padded to their largest size, each with
    padded/real = len(bucket) * N / sum(bucket) <= max_padding. Returns [(N, sizes)]."""
    buckets: list[tuple[int, list[int]]] = []
    rest = sorted(sizes, reverse=True)
    while rest:
        N = rest[0]
        group = [N]
        for s in rest[1:]:
            if (len(group) + 1) * N / (sum(group) + s) <= max_padding:
                group.append(s)
            else:
                break
        buckets.append((N, sorted(group)))
        rest = rest[len(group) :]
    return sorted(buckets)


def padding_ratio(buckets: list[tuple[int, list[int]]]) -> float:
    """Padded rows over real rows, for equal replicates per size."""
    padded = sum(N * len(g) for N, g in buckets)
    real = sum(sum(g) for _, g in buckets)
    return padded / real


def make_lane_fn(problem: Problem, N: int) -> Callable[..., dict]:
    """The per-lane function ``lane(n, r, seed, truth)`` for bucket size N (pure; vmap it over
    n and r). Seed and truth are arguments, not constants, so the compiled program (and JAX's
    persistent cache) is shared by configs that differ only in them."""
    cfg = problem.cfg
    spec, bounds = problem.spec, problem.bounds
    e, ini, run = cfg["estimator"], cfg["init"], cfg["run"]
    radius = cfg["model"]["radius"]
    fit_kw = dict(
        method=e["method"],
        solver=e["solver"],
        bounds=bounds,
        max_iter=e["max_iter"],
        tol=e["tol"],
        inner_max_iter=e["inner_max_iter"],
    )
    m_dens = run["density_points"]

    def lane(n, r, seed, truth):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), n), r)
        k_data, k_init, k_dens = jax.random.split(key, 3)
        tp = truth.at(n)
        X, y = sample(k_data, spec, tp, N, radius)
        w = (jnp.arange(N) < n).astype(jnp.float64)
        if ini["mode"] == "multistart":
            starts = random_inits(k_init, spec, ini["n_starts"], bounds, ini["start_scale"])
            res = fit_multistart(spec, X, y, starts, w, **fit_kw)
        else:
            init = (
                tp
                if ini["mode"] == "truth"
                else init_near_truth(k_init, tp, n, ini["c_gate"], ini["c_expert"], ini["rho"])
            )
            res = fit(spec, X, y, init, w, **fit_kw)
        err = parameter_errors(res.params, tp)
        if m_dens > 0:
            Xh = sample_covariates(k_dens, spec.d, m_dens, radius)
            dens = hellinger_distance(spec, res.params, tp, Xh)
        else:
            dens = jnp.nan
        return {
            "err_beta": err.beta,
            "err_exp_tau": err.exp_tau,
            "err_eta": err.eta,
            "err_density": dens,
            "loglik": res.loglik,
            "n_iter": res.n_iter,
            "inner_steps": res.inner_steps,
            "converged": res.converged.astype(jnp.int32),
            "at_bound": res.at_bound.astype(jnp.int32),
            "status_code": res.status,
            "grad_norm": res.grad_norm,
        }

    return lane


def auto_chunk(problem: Problem, N: int, n_devices: int) -> int:
    """Lanes per compiled call that fit the memory budget (run.memory_gb) for bucket size N."""
    cfg = problem.cfg
    d, K = problem.spec.d, problem.spec.K
    bytes_per_row = 8 * (6 * (d + 1) + 12 * K * K + 16)
    lanes = int(cfg["run"]["memory_gb"] * 2**30 // (bytes_per_row * N))
    if cfg["init"]["mode"] == "multistart":
        lanes //= cfg["init"]["n_starts"]
    lanes = max(1, min(lanes, 256))
    return max(n_devices, (lanes // n_devices) * n_devices)


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
    report: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a resolved sweep config into directory ``out``.

    Returns the final manifest. Raises `store.StoreError` if ``out`` is unusable.
    """
    out = Path(out)
    digest = config_hash(cfg)
    _prepare_dir(out, cfg, digest, force)
    problem = build_problem(cfg)
    sizes, R = cfg["sizes"]["list"], cfg["replicates"]
    buckets = plan_buckets(sizes, cfg["run"]["max_padding"])
    ratio = padding_ratio(buckets)
    t_start = time.time()
    store.write_json(
        out / "manifest.json",
        _manifest(
            cfg,
            digest,
            "running",
            {
                "buckets": [{"padded_size": N, "sizes": g} for N, g in buckets],
                "padding_ratio": ratio,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        ),
    )

    done, next_part = store.load_parts(out)
    done_set = set(zip(done.get("n", []), done.get("replicate", []), strict=True))
    devices = jax.local_devices()
    D = len(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("lanes",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("lanes"))
    pid, nproc = jax.process_index(), jax.process_count()

    total = len(sizes) * R
    bar = _progress(total, len(done_set), progress)
    compile_s = 0.0
    compute_s = 0.0
    chunk_counter = 0
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    seed = jax.device_put(np.uint32(cfg["seed"]), replicated)
    truth = jax.device_put(problem.truth, replicated)
    plans = []
    for N, group in buckets:
        todo = [(n, r) for n in group for r in range(R) if (n, r) not in done_set]
        if todo:
            C = min(cfg["run"]["chunk"] or auto_chunk(problem, N, D), len(todo))
            plans.append((N, todo, math.ceil(C / D) * D))

    def compile_bucket(N: int, C: int):
        fn = jax.jit(
            jax.vmap(make_lane_fn(problem, N), in_axes=(0, 0, None, None)),
            in_shardings=(sharding, sharding, replicated, replicated),
            out_shardings=sharding,
        )
        lanes_arg = jax.ShapeDtypeStruct((C,), jnp.int32, sharding=sharding)
        t0 = time.time()
        compiled = fn.lower(lanes_arg, lanes_arg, seed, truth).compile()
        return compiled, time.time() - t0

    # Compile every bucket's program in background threads (XLA compiles on one core), so
    # later buckets compile while earlier ones run.
    pool = ThreadPoolExecutor(max_workers=2)
    futures = [pool.submit(compile_bucket, N, C) for N, _, C in plans]
    try:
        for (_, todo, C), fut in zip(plans, futures, strict=True):
            compiled, secs = fut.result()
            compile_s += secs
            for start in range(0, len(todo), C):
                chunk = todo[start : start + C]
                chunk_counter += 1
                if (chunk_counter - 1) % nproc != pid:
                    continue
                k = len(chunk)
                padded = chunk + [chunk[-1]] * (C - k)
                n_vec = jax.device_put(np.array([p[0] for p in padded], np.int32), sharding)
                r_vec = jax.device_put(np.array([p[1] for p in padded], np.int32), sharding)
                t0 = time.time()
                res = jax.device_get(compiled(n_vec, r_vec, seed, truth))
                compute_s += time.time() - t0
                arrays = {key: np.asarray(v)[:k] for key, v in res.items()}
                arrays["n"] = np.array([p[0] for p in chunk], np.int64)
                arrays["replicate"] = np.array([p[1] for p in chunk], np.int64)
                store.save_part(out, next_part + chunk_counter - 1, arrays)
                if bar is not None:
                    bar.update(k)
    finally:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()

    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("moejax-sweep-done")
    lanes, _ = store.load_parts(out)
    if pid != 0:
        return {}
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
            "buckets": [{"padded_size": N, "sizes": g} for N, g in buckets],
            "padding_ratio": ratio,
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
    if report:
        from moejax.report import make_report

        rep = make_report(out)
        manifest["report_terminal"] = rep["terminal"]
    return manifest


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

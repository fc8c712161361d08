"""Per-fit "peer code" baseline: one dataset per SciPy quasi-Newton fit, fits spread over a
process pool.

This is how the paper family's code runs a Monte Carlo study: a NumPy log-likelihood with a
hand-written gradient, ``scipy.optimize.minimize`` (BFGS, or L-BFGS-B when there is a box), one
dataset at a time, replicates farmed out to processes. The model and gradient come from the
independent reference ``tests/reference_numpy.py``; no jax, no moejax.

Each worker records its own CPU time (``time.process_time``) around the fit, so a caller can credit
the baseline with perfect parallelism on ``c`` cores:

    ideal_wall = sum(cpu_s) / c

BLAS in the workers is pinned to one thread (the arrays are small; more threads only oversubscribe
the cores), so per-fit CPU time is also the fit's single-core wall time.

Run ``python benchmarks/baseline_scipy.py`` for a small demo (``--quick`` or ``--smoke``: 2
replicates at n = 500, a few seconds). Unchanged by the engine rewrite of issue 13 (it uses no
moejax code).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(_REPO, "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import numpy as np  # noqa: E402
from reference_numpy import RefModel, fit_scipy, pack, sample_numpy, unpack  # noqa: E402

_THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def fit_one(args) -> dict[str, Any]:
    """Fit one dataset. ``args = (X, y, theta0, model, bounds)`` or
    ``(X, y, theta0, model, bounds, fit_kwargs)`` where ``fit_kwargs`` is passed on to
    ``reference_numpy.fit_scipy`` (e.g. ``weights``, ``gtol``, ``method``, ``polish``).

    Defaults for the baseline: ``gtol=1e-10`` and ``polish=False`` (plain SciPy, as peer code
    runs it). Returns ``fit_scipy``'s dict plus ``cpu_s`` and ``wall_s`` of this fit, ``pid``.
    """
    X, y, theta0, model, bounds, *rest = args
    kwargs = {"polish": False}
    if rest:
        kwargs.update(rest[0] or {})
    t_cpu = time.process_time()
    t_wall = time.perf_counter()
    res = fit_scipy(X, y, model, theta0, bounds=bounds, **kwargs)
    res["cpu_s"] = time.process_time() - t_cpu
    res["wall_s"] = time.perf_counter() - t_wall
    res["pid"] = os.getpid()
    return res


def run_pool(
    datasets: Sequence[tuple],
    theta0s: Sequence[np.ndarray],
    model: RefModel,
    bounds=None,
    processes: int | None = os.cpu_count(),
    *,
    fit_kwargs: dict[str, Any] | None = None,
    start_method: str = "spawn",
) -> tuple[list[dict[str, Any]], float, float]:
    """Fit every dataset in a process pool.

    ``datasets``: sequence of ``(X, y)`` or ``(X, y, weights)``; ``theta0s``: one flat start per
    dataset; ``bounds``: ``None`` (BFGS) or one ``(lo, hi)`` per flat coordinate (L-BFGS-B),
    shared by all fits. ``start_method`` defaults to ``"spawn"`` so the pool is safe to start from
    a process that has JAX (threads) loaded; the pool start-up is included in the wall time.

    Returns ``(results in input order, wall seconds of the whole pool, sum of per-fit CPU
    seconds)``.
    """
    if len(datasets) != len(theta0s):
        raise ValueError("need one start per dataset")
    jobs = []
    for ds, th in zip(datasets, theta0s, strict=True):
        kw = dict(fit_kwargs or {})
        if len(ds) == 3:
            kw["weights"] = ds[2]
        jobs.append((ds[0], ds[1], np.asarray(th, dtype=np.float64), model, bounds, kw))
    processes = max(1, min(processes or 1, len(jobs)))

    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update({k: "1" for k in _THREAD_ENV})  # inherited by the spawned workers
    try:
        t0 = time.perf_counter()
        ctx = mp.get_context(start_method)
        with ctx.Pool(processes=processes) as pool:
            results = pool.map(fit_one, jobs, chunksize=1)
        wall = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cpu = float(sum(r["cpu_s"] for r in results))
    return results, wall, cpu


# --------------------------------------------------------------------------- demo


def demo_design(d: int = 8, K: int = 3):
    """Heterogeneous demo design: linear frozen expert, tanh adapter, logit scale 3 for both.
    X ~ N(0, I_d), beta* = 1_d / sqrt(d), tau* = 1, eta0 = (e1, e2), eta* = (e3, e4)."""
    eta0 = np.zeros((K - 1, d))
    eta = np.zeros((K - 1, d))
    for k in range(K - 1):
        eta0[k, k] = 1.0
        eta[k, (K - 1 + k) % d] = 1.0
    model = RefModel(d, K, eta0, act="tanh", act0="linear", scale=3.0, scale0=3.0)
    beta = np.ones(d) / np.sqrt(d)
    tau = 1.0
    return model, beta, tau, eta


def _demo(processes: int | None = None, replicates: int = 8, ns=(2000, 4000), seed: int = 0):
    processes = processes or os.cpu_count() or 1
    model, beta, tau, eta = demo_design()
    truth = pack(beta, tau, eta)
    box = [(-10.0, 10.0)] * truth.size
    print(
        f"baseline_scipy demo: d={model.d} K={model.K} linear frozen / tanh adapter, scale 3, "
        f"{replicates} replicates per n, start at truth, {processes} processes, "
        f"{os.cpu_count()} cores"
    )
    for label, bounds in (("BFGS (no box)", None), ("L-BFGS-B (box [-10, 10])", box)):
        for n in ns:
            rng = np.random.default_rng([seed, n])
            datasets = [sample_numpy(rng, n, model, beta, tau, eta) for _ in range(replicates)]
            results, wall, cpu = run_pool(datasets, [truth] * replicates, model, bounds, processes)
            cpu_each = np.array([r["cpu_s"] for r in results])
            ideal_wall = cpu / processes
            errs = np.array(
                [
                    [
                        np.linalg.norm(b - beta),
                        abs(np.exp(t) - np.exp(tau)),
                        np.linalg.norm(e - eta),
                    ]
                    for b, t, e in (unpack(r["theta"], model.d, model.K) for r in results)
                ]
            )
            ok = sum(r["success"] for r in results)
            print(
                f"  {label:26s} n={n:6d}: {replicates / ideal_wall:8.2f} fits/s ideal-parallel "
                f"({replicates / wall:6.2f} fits/s measured incl. pool start), median CPU "
                f"{np.median(cpu_each):.4f} s/fit, median nit "
                f"{np.median([r['nit'] for r in results]):.0f}, success {ok}/{replicates}, "
                f"max grad {max(r['grad_norm'] for r in results):.1e}, median err "
                f"beta {np.median(errs[:, 0]):.3f} exp(tau) {np.median(errs[:, 1]):.3f} "
                f"eta {np.median(errs[:, 2]):.3f}"
            )


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Demo of the per-fit SciPy baseline.")
    ap.add_argument("--quick", action="store_true", help="2 replicates at n = 500")
    ap.add_argument("--smoke", action="store_true", help="same as --quick (script check)")
    ap.add_argument("--processes", type=int, help="pool size (default os.cpu_count())")
    a = ap.parse_args()
    if a.quick or a.smoke:
        _demo(a.processes, replicates=2, ns=(500,))
    else:
        _demo(a.processes)

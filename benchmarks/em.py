"""EM against direct MLE, per fit: accelerated EM (the default, em_accel "newton"), SQUAREM and
plain EM beside direct projected Newton, on the same data and starts, in one run.

    python benchmarks/em.py                       # 2 designs x 32 fits, 2 repeats
    python benchmarks/em.py --quick               # 8 fits, 1 repeat (a check)
    python benchmarks/em.py --switch 1e-4,1e-6    # also the hybrid at other switch_tol values
    python benchmarks/em.py --design sweeps/overfit.toml:m1-fit2@3000 --fits 64
    python benchmarks/em.py --only newton,squarem --fits 128   # convergence shares, no plain EM
    python benchmarks/em.py --write               # also replace RESULTS.md's "em.py" section

Designs (``FILE:POINT@n``; the model, truth, box, caps, tol and near-truth start constants come
from the configs, `moejax.sweep.config` / `moejax.sweep.simulate.build_problem`): by default the
two-adapter softmax design of sweeps/adapters.toml (point softmax) at n = 4000 and the
over-fitted point m2-fit3 of sweeps/overfit.toml (m* = 2 fitted with 3 adapters) at n = 3000.
For each design L datasets of n rows are drawn (`moejax.mix.sample`) and prepared
(`moejax.estimation.estimators.prepare_data`); near-truth starts as the sweep draws them
(`moejax.estimation.init.init_near_truth` on the fitted spec). Each variant is
``jax.jit(jax.vmap(fit_data))`` over the L lanes, compiled ahead of time, one warm-up call,
then the median of the repeated calls (``--repeats 0``: the warm-up call itself); time per fit
= call time / L (a vmapped while-loop runs every lane as long as its slowest one, as the sweep
engine does, so the time follows the slowest lane's iterations).

Columns: conv = lanes converged by their own rule / L; n_iter mean and max (EM iterations: EM
maps, three per SQUAREM cycle; solver iterations for direct); inner = mean total solver
iterations (M-steps, plus the final full-likelihood solve of em_accel "newton"); time ratio =
time per fit / direct's; log-lik gap = (loglik_direct - loglik_EM) / |loglik_direct| per lane:
its largest absolute value, the lanes within 1e-8 of direct, and the lanes where EM ends above
(EM>) or below (EM<) direct by more than 1e-8 (different stationary points); strict max =
lanes that converged with a positive definite observed information on their free coordinates
(a strict local maximum; a flat direction, as two fitted adapters sharing one true atom can
give, is not strict). The row "direct (other start)" is direct MLE again from a second
near-truth start on the same data: where it leaves the first start's optimum, the likelihood has
several maxima that near-truth starts reach, and "the same optimum as direct" is not defined by
the data alone. Times depend on the machine and its load (printed); compare ratios within one
run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

FULL_COMMAND = ".venv/bin/python benchmarks/em.py --write"
DESIGNS = ("sweeps/adapters.toml:softmax@4000", "sweeps/overfit.toml:m2-fit3@3000")
SEED = 20261125
GAP = 1e-8  # "the same optimum": relative log-likelihood gap to direct MLE


def load_point(path: str) -> dict:
    """A plain config file, or ``FILE:POINT``: one point of a grid config."""
    from moejax.sweep.config import load
    from moejax.sweep.grid import load_study

    file, _, point = path.partition(":")
    if not point:
        return load(file)
    return next(p.config for p in load_study(file).points if p.name == point)


def variants(switch: list[float], only: list[str]) -> list[tuple[str, str, dict]]:
    """(label, method, extra fit_data keywords) of every variant, direct first; with ``only``
    the EM variants whose em_accel is listed."""
    from moejax.estimation.estimators import DEFAULT_SWITCH_TOL

    out = [
        ("direct", "direct", {}),
        ("direct (other start)", "direct", {"other_start": True}),
        (f"em newton ({DEFAULT_SWITCH_TOL:g}, default)", "em", {"em_accel": "newton"}),
    ]
    out += [
        (f"em newton ({s:g})", "em", {"em_accel": "newton", "switch_tol": s})
        for s in switch
        if s != DEFAULT_SWITCH_TOL
    ]
    out += [("em squarem", "em", {"em_accel": "squarem"}), ("em none", "em", {"em_accel": "none"})]
    return [v for v in out if not only or v[1] == "direct" or v[2]["em_accel"] in only]


def strict_local_max(res, fspec, bounds):
    """(L,) bool: the fit converged and the observed information of its free coordinates is
    positive definite (its standard errors are finite), so it ends at a strict local maximum
    of the likelihood in the free coordinates (`moejax.estimation.information`)."""
    import jax
    import numpy as np

    from moejax.estimation.bounds import pack
    from moejax.estimation.information import standard_errors

    lower, upper = bounds.arrays(fspec)
    theta = jax.vmap(lambda p: pack(fspec, p))(res.params)
    se = jax.vmap(lambda i, t: standard_errors(i, t, lower, upper).se)(res.info, theta)
    return np.asarray(res.converged) & np.asarray(np.isfinite(se).any(axis=1))


def run_design(
    design: str, L: int, repeats: int, switch: list[float], only: list[str]
) -> list[dict]:
    import jax
    import numpy as np

    from moejax.estimation.estimators import fit_data, prepare_data
    from moejax.estimation.init import init_near_truth
    from moejax.mix.sampling import sample
    from moejax.sweep.simulate import build_problem

    path, _, n = design.partition("@")
    n = int(n or 4000)
    cfg = load_point(path)
    problem = build_problem(cfg)
    spec, fspec, bounds = problem.spec, problem.fit_spec, problem.bounds
    e, ini = cfg["estimator"], cfg["init"]
    truth = problem.truth.at(n)
    k_data, k_init = jax.random.split(jax.random.key(SEED))
    X, y = jax.jit(jax.vmap(lambda k: sample(k, spec, truth, n)))(jax.random.split(k_data, L))
    data = jax.jit(jax.vmap(lambda X, y: prepare_data(fspec, X, y)))(X, y)
    near = lambda k: init_near_truth(k, fspec, truth, n, ini["c_gate"], ini["c_expert"], ini["rho"])
    inits = jax.vmap(near)(jax.random.split(k_init, L))
    # a second near-truth start per data set: does direct MLE itself land on one optimum?
    inits_other = jax.vmap(near)(jax.random.split(jax.random.fold_in(k_init, 1), L))
    rows, base = [], None
    for label, method, kw in variants(switch, only):
        kw = dict(kw)
        starts = inits_other if kw.pop("other_start", False) else inits

        def fits(data, inits, method=method, kw=kw):
            one = lambda dt, p: fit_data(
                fspec,
                dt,
                p,
                method,
                e["solver"],
                bounds,
                e["max_iter"],
                e["tol"],
                e["inner_max_iter"],
                **kw,
            )
            return jax.vmap(one)(data, inits)

        t0 = time.perf_counter()
        fn = jax.jit(fits).lower(data, starts).compile()
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = jax.block_until_ready(fn(data, starts))
        ts = [time.perf_counter() - t0] if repeats == 0 else []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(data, starts))
            ts.append(time.perf_counter() - t0)
        per_fit = statistics.median(ts) / L
        ll = np.asarray(res.loglik)
        it = np.asarray(res.n_iter)
        row = {
            "design": f"{path} n={n}",
            "variant": label,
            "conv": f"{int(np.sum(np.asarray(res.converged)))}/{L}",
            "iter_mean": float(it.mean()),
            "iter_max": int(it.max()),
            "inner_mean": float(np.asarray(res.inner_steps).mean()),
            "per_fit_s": per_fit,
            "compile_s": t_compile,
            "ll": ll,
            "local_max": f"{int(np.sum(strict_local_max(res, fspec, bounds)))}/{L}",
        }
        if base is None:
            base = row
        gap = (base["ll"] - ll) / np.abs(base["ll"])
        row.update(
            ratio=per_fit / base["per_fit_s"],
            gap_max=float(np.max(np.abs(gap))),
            same=f"{int(np.sum(np.abs(gap) <= GAP))}/{L}",
            above=int(np.sum(gap < -GAP)),
            below=int(np.sum(gap > GAP)),
        )
        rows.append(row)
        print(
            f"  {row['design']} {label}: conv {row['conv']}, n_iter {row['iter_mean']:.1f} "
            f"(max {row['iter_max']}), {per_fit:.4f} s/fit ({row['ratio']:.1f}x direct)",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--design", action="append", help="FILE[:POINT]@n (repeatable)")
    ap.add_argument("--fits", type=int, default=None, help="lanes per design (default 32)")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls after the first (default 2; 0: time the first)",
    )
    ap.add_argument("--switch", default="", help="extra switch_tol values, comma separated")
    ap.add_argument("--only", default="", help="EM variants to run (em_accel names, comma sep.)")
    ap.add_argument("--quick", action="store_true", help="8 fits, 1 repeat")
    ap.add_argument("--write", action="store_true", help="replace RESULTS.md's em.py section")
    a = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    info = C.RunInfo(a.quick)
    L = a.fits or (8 if a.quick else 32)
    repeats = a.repeats if a.repeats is not None else (1 if a.quick else 2)
    switch = [float(s) for s in a.switch.split(",") if s.strip()]
    print(f"load average {C.fmt_load(info.load_start)} on {info.nproc} cores", flush=True)
    rows = []
    for d in a.design or DESIGNS:
        only = [v.strip() for v in a.only.split(",") if v.strip()]
        rows += run_design(d, L, repeats, switch, only)
    headers = [
        "design",
        "variant",
        "conv",
        "n_iter mean",
        "n_iter max",
        "inner mean",
        "s/fit",
        "x direct",
        "max |gap|",
        "gap <= 1e-8",
        "EM>",
        "EM<",
        "strict max",
    ]
    cells = [
        [
            r["design"],
            r["variant"],
            r["conv"],
            r["iter_mean"],
            r["iter_max"],
            r["inner_mean"],
            r["per_fit_s"],
            r["ratio"],
            r["gap_max"],
            r["same"],
            r["above"],
            r["below"],
            r["local_max"],
        ]
        for r in rows
    ]
    txt, md = C.table(headers, cells)
    print(txt)
    if a.write:
        lines = info.header_lines("em.py", FULL_COMMAND)
        lines += [f"- Fits per design: {L}, timed calls: {repeats} (median)", "", *md]
        print(f"wrote {C.write_section('em.py', lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

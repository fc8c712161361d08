"""Floating-point work of one fit, the flop rate moejax achieves, and the machine's dense rate.

    python benchmarks/ceiling.py            # 64 lanes at n = 2000
    python benchmarks/ceiling.py --quick    # 16 lanes at n = 2000 (~1 min)
    python benchmarks/ceiling.py --smoke    # 2 lanes at n = 500, 256^2 matmuls (script check;
                                            # does not write RESULTS.md)

Work is counted from compiled programs with XLA's ``compiled.cost_analysis()``. XLA counts the
body of a while-loop ONCE, whatever its trip count, so the engine's vmapped lane function
(``make_lane_fn`` of the config, L lanes at n, every lane real, n one scalar per call as in the
engine) gives a number (A) that is not the work of a fit: it holds the solver loop once (and
each row-block loop once). The work of one fit is therefore assembled from loop-free pieces,
each jitted with its data as arguments (nothing constant-folded):

- (B) one evaluation of the objective's value, gradient and Hessian on n rows
  (``moejax.estimation.estimators.objective(spec, data).value_grad_hess``: closed-form row
  derivatives from ``moejax.mix.rows.mixture_row_fns`` plus the weighted Gram sums). Every
  pass of the projected Newton loop evaluates exactly this once (accepted step or backtrack);
- (S) drawing the n rows (``moejax.mix.sample``, the engine's keyed blocks) and preparing
  them (``prepare_data``: the frozen expert's log-density);
- (H) the Hellinger error on ``run.density_points`` held-out covariates (categorical models
  only, as in the engine).

    flops per fit = E x (B) + (S) + (H),   E = mean of n_iter + 1 over the L lanes

(n_iter + 1 = accepted Newton steps plus the first evaluation; backtracks are not reported per
lane, so E and the count are lower bounds; the P x P eigendecomposition of each Newton step is
a LAPACK call that XLA counts as 0 flops and is negligible at this n). "Executed" uses the
slowest lane's evaluations instead of the mean: a vmapped while-loop runs every lane as long as
the slowest. Achieved rate = flops per fit x fits/s of the same compiled lane function.

Machine rates (each in a child process; "one core" = the child pinned to one core and BLAS
thread variables set to 1): float64 2048 x 2048 matmul with JAX (XLA CPU) and NumPy,
GFLOP/s = 2 * 2048^3 / best seconds; JAX exp/log1p/tanh on 2^22 float64 (transcendentals/s);
NumPy triad bandwidth for a roofline view with XLA's "bytes accessed".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CONFIG = "sweeps/heterogeneous.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/ceiling.py"
N = 2000
MATMUL = 2048

_DENSE_CHILD = r"""
import json, os, sys, time
kind, n, one = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if one:  # pin to one core before any thread pool exists
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numpy as np
rng = np.random.default_rng(0)
out = {}
if kind == "numpy":
    a = rng.standard_normal((n, n)); b = rng.standard_normal((n, n))
    f = lambda: a @ b
    work = 2 * n**3
else:
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    if kind == "jax":
        ja = jax.device_put(rng.standard_normal((n, n)))
        jb = jax.device_put(rng.standard_normal((n, n)))
        mm = jax.jit(jnp.matmul).lower(ja, jb).compile()
        f = lambda: mm(ja, jb).block_until_ready()
        work = 2 * n**3
    else:  # transcendentals: exp, log1p, tanh on 2^22 float64
        x = jax.device_put(rng.standard_normal(2**22))
        g = jax.jit(lambda x: jnp.exp(-x * x) + jnp.log1p(x * x) + jnp.tanh(x)).lower(x).compile()
        ca = g.cost_analysis(); ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        work = ca["transcendentals"]
        f = lambda: g(x).block_until_ready()
f()
ts = []
for _ in range(5):
    t0 = time.perf_counter()
    f()
    ts.append(time.perf_counter() - t0)
best = min(ts)
print(json.dumps({"rate": work / best / 1e9, "seconds": best, "work": work}))
"""


def dense_rate(kind: str, one_core: bool, size: int = MATMUL) -> dict:
    """G ops/s of a child process: kind "numpy"/"jax" (float64 matmul, flops) or "trans" (JAX
    exp/log1p/tanh, transcendentals). ``one_core`` pins the child to one core (affinity) and
    sets the BLAS thread variables to 1."""
    env = dict(os.environ)
    if one_core:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
            env[k] = "1"
    return C.run_json_subprocess(
        [sys.executable, "-c", _DENSE_CHILD, kind, str(size), "1" if one_core else "0"],
        env=env,
        timeout=600,
    )


def triad_bandwidth() -> float:
    """GB/s of a = b + s*c on 2^24 float64 (128 MiB) arrays, best of 5, counting 3 arrays."""
    import numpy as np

    m = 2**24
    b = np.random.default_rng(0).standard_normal(m)
    c = np.random.default_rng(1).standard_normal(m)
    a = np.empty_like(b)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - t0)
    # multiply then add: reads c, writes a, reads a, reads b, writes a = 5 array passes
    return 5 * 8 * m / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 lanes instead of 64")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="script check: 2 lanes at n = 500, 256^2 matmuls; implies --no-write",
    )
    ap.add_argument("--n", type=int, help=f"sample size per lane (default {N})")
    ap.add_argument("--lanes", type=int, help="lanes of the compiled lane function")
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument(
        "--no-cli-xla-flags",
        action="store_true",
        help="do not apply the XLA flags the moejax CLI sets (measure JAX's defaults)",
    )
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    if args.smoke:
        args.quick = args.no_write = True
    info = C.RunInfo(args.quick)
    L = args.lanes or (2 if args.smoke else 16 if args.quick else 64)
    n = args.n or (500 if args.smoke else N)
    matmul = 256 if args.smoke else MATMUL

    xla_flags = C.apply_cli_xla_flags(not args.no_cli_xla_flags)
    import jax
    import jax.numpy as jnp
    import numpy as np

    import moejax  # noqa: F401  (float64)
    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.losses import mean_hellinger
    from moejax.mix.density import log_class_probs
    from moejax.mix.sampling import sample, sample_covariates
    from moejax.sweep.config import load
    from moejax.sweep.engine import build_problem, make_lane_fn

    cfg = load(args.config)
    problem = build_problem(cfg)
    spec = problem.spec
    Nbuf = C.buffer_rows(cfg, n)
    radius = cfg["model"]["radius"]
    m_dens = cfg["run"]["density_points"]
    print(
        f"ceiling: {args.config}, {L} lanes at n = {n} (buffer {Nbuf}); "
        f"load {C.fmt_load(info.load_start)}; XLA_FLAGS={xla_flags!r}"
    )

    def cost(compiled):
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, list | tuple) else ca
        return (ca.get("flops", 0.0), ca.get("transcendentals", 0.0), ca.get("bytes accessed", 0.0))

    def timed(f, budget):
        jax.block_until_ready(f())
        ts = []
        while sum(ts) < budget and len(ts) < 2000:
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts), len(ts)

    # (A) the lane function, timed: fits/s and evaluations per fit; vmapped as the engine
    # does (n one scalar per call, one lane per replicate)
    fn = jax.jit(jax.vmap(make_lane_fn(problem, Nbuf), in_axes=(None, 0, None, None)))
    n_vec = jnp.int32(n)
    r_vec = jnp.arange(L, dtype=jnp.int32)
    seed = jnp.uint32(cfg["seed"])
    compiled = fn.lower(n_vec, r_vec, seed, problem.truth).compile()
    A = cost(compiled)
    A = tuple(v / L for v in A)
    out = jax.block_until_ready(compiled(n_vec, r_vec, seed, problem.truth))
    it = np.asarray(out["n_iter"])
    E_mean, E_max = float(it.mean() + 1), int(it.max() + 1)
    t_call, n_calls = timed(lambda: compiled(n_vec, r_vec, seed, problem.truth), 3.0)
    fps = L / t_call

    # (S) sampling + data preparation, (B) one value_grad_hess, (H) Hellinger
    tp = problem.truth.at(n)

    def draw(key, tp):
        # the engine's data: keyed DATA_BLOCK-row blocks (`moejax.mix.sample` reproduces them)
        X, y = sample(key, spec, tp, n, radius)
        return prepare_data(spec, X, y, None)

    key = jax.random.key(12345)
    S = cost(jax.jit(draw).lower(key, tp).compile())
    data = jax.jit(draw)(key, tp)
    theta = pack(spec, tp)
    vgh = jax.jit(lambda data, th: objective(spec, data).value_grad_hess(th))
    vgh_c = vgh.lower(data, theta).compile()
    Bc = cost(vgh_c)
    t_vgh, _ = timed(lambda: vgh_c(data, theta), 1.0)
    if m_dens > 0 and not spec.regression:

        def hel(k, a, b):
            Xh = sample_covariates(k, spec.d, m_dens, radius)
            return mean_hellinger(log_class_probs(spec, a, Xh), log_class_probs(spec, b, Xh))

        H = cost(jax.jit(hel).lower(key, tp, tp).compile())
    else:
        H = (0.0, 0.0, 0.0)

    per_fit = E_mean * Bc[0] + S[0] + H[0]
    per_fit_exec = E_max * Bc[0] + S[0] + H[0]
    per_fit_obj = E_mean * Bc[0]
    trans_fit = E_mean * Bc[1] + S[1] + H[1]
    bytes_fit = E_mean * Bc[2] + S[2] + H[2]
    rate = per_fit * fps
    rate_exec = per_fit_exec * fps
    rate_obj = per_fit_obj * fps

    print("  dense float64 matmul and memory bandwidth ...", flush=True)
    dense = {
        (k, one): dense_rate(k, one, matmul) for k in ("jax", "numpy", "trans") for one in (0, 1)
    }
    bw = triad_bandwidth()
    peak_all = max(dense[(k, 0)]["rate"] for k in ("jax", "numpy"))
    peak_one = max(dense[(k, 1)]["rate"] for k in ("jax", "numpy"))
    trans_one = dense[("trans", 1)]["rate"]

    work_rows = [
        ["(A) lane function / lane, as XLA counts it (loops once)", *A],
        [f"(B) value_grad_hess, one evaluation on n = {n} rows", *Bc],
        [f"(S) sampling + data preparation, n = {n}", *S],
        [f"(H) Hellinger error, {m_dens} points", *H],
        [f"per fit = E (B) + (S) + (H), E = {E_mean:.2f}", per_fit, trans_fit, bytes_fit],
        ["per fit, objective only = E (B)", per_fit_obj, E_mean * Bc[1], E_mean * Bc[2]],
        [f"executed per lane, E_max = {E_max}", per_fit_exec, float("nan"), float("nan")],
    ]
    t_work, md_work = C.table(["quantity", "flops", "transcendentals", "bytes accessed"], work_rows)
    rate_rows = [
        ["moejax lane function, flops per fit x fits/s", rate / 1e9],
        ["  same, objective-only flops", rate_obj / 1e9],
        ["  same, executed flops (slowest lane's evaluations)", rate_exec / 1e9],
        [
            f"objective value_grad_hess alone, unbatched ({t_vgh * 1e6:.0f} us per call)",
            Bc[0] / t_vgh / 1e9,
        ],
        [f"JAX (XLA CPU) matmul {matmul}^2 float64, all cores", dense[("jax", 0)]["rate"]],
        [f"JAX (XLA CPU) matmul {matmul}^2 float64, one core", dense[("jax", 1)]["rate"]],
        [f"NumPy matmul {matmul}^2 float64, all cores", dense[("numpy", 0)]["rate"]],
        [f"NumPy matmul {matmul}^2 float64, one core", dense[("numpy", 1)]["rate"]],
    ]
    trans_rows = [
        ["moejax lane function, transcendentals per fit x fits/s", trans_fit * fps / 1e9],
        ["JAX exp/log1p/tanh on 2^22 float64, all cores", dense[("trans", 0)]["rate"]],
        ["JAX exp/log1p/tanh on 2^22 float64, one core", trans_one],
    ]
    t_rate, md_rate = C.table(["rate", "GFLOP/s"], rate_rows)
    t_trans, md_trans = C.table(["transcendental rate", "G/s"], trans_rows)
    ai = per_fit / bytes_fit if bytes_fit else float("nan")
    notes = [
        f"Config `{args.config}`: {C.describe_config(cfg)}.",
        f"Lane function: {L} lanes at n = {n} (buffer {Nbuf} rows; P = {spec.n_params} "
        f"parameters): {t_call:.4f} s per call (median of {n_calls}), {fps:.1f} fits/s; "
        f"evaluations per fit E = n_iter + 1: mean {E_mean:.2f}, slowest lane {E_max}. "
        f"XLA_FLAGS = `{xla_flags or '(none)'}` (those the moejax CLI sets, unless "
        "--no-cli-xla-flags).",
        "XLA's cost analysis counts a while-loop body once, so (A) is not the work of a fit; "
        "the per-fit count is assembled from the loop-free pieces (B), (S), (H) (module "
        "docstring).",
        f"Distance to the hardware: achieved {rate / 1e9:.2f} GFLOP/s is "
        f"{peak_all * 1e9 / rate:.0f}x below the best all-core dense rate ({peak_all:.1f} "
        f"GFLOP/s) and {peak_one * 1e9 / rate:.0f}x below the best one-core dense rate "
        f"({peak_one:.1f} GFLOP/s; a sweep on the CPU runs its compute on about one core, see "
        "scaling.py `cores used`). One-core numbers come from a child pinned to one core.",
        f"Transcendentals (exp, log, tanh, ...; not in `flops`): {trans_fit:.3g} per fit, "
        f"{trans_fit / (n * E_mean):.1f} per row per evaluation; at the one-core JAX rate "
        f"({trans_one:.2f} G/s) they alone take {trans_fit * fps / (trans_one * 1e9):.0%} of "
        "the lane function's run time: the work is elementwise, transcendental-heavy, not "
        "matmul-shaped, so the dense rate is a ceiling it cannot approach.",
        f"Roofline view: XLA's bytes accessed per fit {bytes_fit:.3g} -> arithmetic intensity "
        f"{ai:.2f} flop/byte; NumPy triad bandwidth {bw:.1f} GB/s x {ai:.2f} = "
        f"{bw * ai:.1f} GFLOP/s attainable if memory-bound (XLA counts bytes per op, before "
        "cache reuse, so this bound is loose).",
    ]

    print()
    print(t_work)
    print()
    print(t_rate)
    print()
    print(t_trans)
    print()
    print("\n".join(notes))
    if args.no_write:
        return
    lines = info.header_lines("ceiling.py", FULL_COMMAND, ", ".join(str(d) for d in jax.devices()))
    lines += [
        "",
        "Work per fit (XLA cost analysis):",
        "",
        *md_work,
        "",
        "Rates:",
        "",
        *md_rate,
        "",
        *md_trans,
        "",
        *(f"- {s}" for s in notes),
    ]
    path = C.write_section("ceiling.py", lines)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

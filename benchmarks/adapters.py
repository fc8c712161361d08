"""Two adapters against one adapter: the price of m = 2 per fit, per Newton iteration and per row
(issue 12: "two adapters against one adapter, per fit at n = 4000 on the same design: floor 4x,
goal 3x; record the cost per row evaluation of every gate x likelihood pair").

    python benchmarks/adapters.py                        # 64 fits at n = 4000, 7 repeats
    python benchmarks/adapters.py --quick                # 8 fits at n = 500, 2 repeats (check)
    python benchmarks/adapters.py --smoke                # --quick, rows for 3 of the 9 pairs
    python benchmarks/adapters.py --out notes/adapters.md   # also append a Markdown block

Per fit. One adapter: the design of sweeps/heterogeneous.toml (d = 2, K = 3, logits 4 a(eta . x),
linear frozen expert with eta0 = I_2, tanh adapter, softmax gate; beta* = 1_2 / sqrt(2),
tau* = 0, eta* = 1.5 (e2, e1)). Two adapters: point softmax of sweeps/adapters.toml (same model with
m = 2; beta* = (e1, e2), tau* = 0, eta*_2 = -eta*_1 rotated). Model, truth, box, max_iter and
the near-truth start constants come from the configs themselves (`moejax.sweep.config.load`,
`moejax.sweep.simulate.build_problem`). For each m, L datasets of n rows are drawn beforehand
(`moejax.mix.sample`) and prepared (`moejax.estimation.estimators.prepare_data`: covariate planes
X1 (d+1, n) with a ones plane, rows last, the frozen expert's log-density); the timed function is
``jax.jit(jax.vmap(fit_data))``: L direct projected-Newton fits from near-truth starts
(`moejax.estimation.init.init_near_truth`), compiled once ahead of time, one warm-up call, then the
median of the repeated calls. Time per fit = call time / L. A vmapped while-loop runs every lane
as long as the slowest, so the table gives both the mean and the largest Newton iteration count
(n_iter) and the time per iteration on each: per mean iteration (time per fit / mean n_iter) and
per executed iteration (time per fit / max n_iter). ``--block B`` sums the rows in blocks of B
as the sweep engine does (rows padded with weight 0 to whole blocks); by default every pass
runs over the n rows at once, as `moejax.estimation.estimators.fit` does.

Per row. For every gate ("softmax", "input_free", "sigmoid") x likelihood ("categorical",
"gaussian", "laplace") at m = 1 and m = 2 (d = 2, K = 3 so R = 2 for categorical experts,
R = 1 for regression; linear frozen expert of the same likelihood, tanh adapters, scale 4,
nu0 = 1, nu* = 0.5; the truths above, regression using the first row of each eta*):

- rows: ``mixture_row_fns(spec).value_grad_hess(U, (y, lf0))`` (`moejax.mix.rows`, closed
  forms, rows last) on L x n rows at once, U (W, rows) = `moejax.mix.rows.predictor_planes` at
  the truth. The outputs (value, gradient and packed Hessian planes) are summed over the rows
  inside the jitted function, so the timing is the evaluation, not the writing of planes back
  to the host.
- objective: ``objective(spec, data).value_grad_hess(theta)`` (`moejax.estimation.estimators`): one
  full pass, i.e. the predictors, the row derivatives and the weighted Gram sums that make the
  P x P Hessian, vmapped over the L datasets of n rows.

Both are reported as nanoseconds per row (median call time / rows). Times depend on the
machine and on its load: the load average and core count are printed first; compare ratios.

Changed with the engine rewrite (issue 13): the data are rows last (X1 (d+1, n), planes) and
the row functions return planes; ``--smoke`` added. One JAX device (no forced host devices).
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

ONE = "sweeps/heterogeneous.toml"
TWO = "sweeps/adapters.toml:softmax"  # the grid point "softmax" of the adapters study


def load_point(path: str) -> dict:
    """A plain config file, or ``FILE:POINT``: one point of a grid config."""
    from moejax.sweep.config import load
    from moejax.sweep.grid import load_study

    file, _, point = path.partition(":")
    if not point:
        return load(file)
    return next(p.config for p in load_study(file).points if p.name == point)


FULL_COMMAND = ".venv/bin/python benchmarks/adapters.py"
FLOOR, GOAL = 4.0, 3.0  # issue 12: two adapters at most 4x (floor), ideally 3x (goal) one adapter
FULL = {"n": 4000, "fits": 64, "repeats": 7}
QUICK = {"n": 500, "fits": 8, "repeats": 2}
SEED = 20261125


def timed(f, args, repeats: int):
    """(median seconds of ``repeats`` calls after one warm-up call, the warm-up's output)."""
    import jax

    out = jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def compiled(fn, *args):
    """(AOT-compiled jax.jit(fn) for these arguments, compile seconds incl. tracing)."""
    import jax

    t0 = time.perf_counter()
    c = jax.jit(fn).lower(*args).compile()
    return c, time.perf_counter() - t0


def draw(spec, params, L: int, n: int, key):
    """L prepared datasets of n rows (FitData with a leading lane axis)."""
    import jax

    from moejax.estimation.estimators import prepare_data
    from moejax.mix.sampling import sample

    keys = jax.random.split(key, L)
    X, y = jax.jit(jax.vmap(lambda k: sample(k, spec, params, n)))(keys)
    return jax.jit(jax.vmap(lambda X, y: prepare_data(spec, X, y)))(X, y)


def pad_blocks(data, n: int, block: int):
    """Lane data padded with weight-0 rows to whole blocks, and the `Blocks` that sum them."""
    import jax
    import jax.numpy as jnp

    from moejax.estimation.objective import Blocks

    nb = -(-n // block)
    extra = nb * block - n
    pad = lambda a: jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)])  # rows last
    padded = data._replace(X1=pad(data.X1), y=pad(data.y), w=pad(data.w), lf0=pad(data.lf0))
    return jax.device_put(padded), Blocks(block, jnp.int32(nb))


def fit_case(path: str, L: int, n: int, repeats: int, block: int) -> dict:
    """Time L vmapped direct-Newton fits of the config's model at n (see module docstring)."""
    import jax
    import numpy as np

    from moejax.estimation.estimators import fit_data
    from moejax.estimation.init import init_near_truth
    from moejax.sweep.simulate import build_problem

    cfg = load_point(path)
    problem = build_problem(cfg)
    spec, bounds = problem.spec, problem.bounds
    e, ini = cfg["estimator"], cfg["init"]
    truth = problem.truth.at(n)
    k_data, k_init = jax.random.split(jax.random.key(SEED))
    data = draw(spec, truth, L, n, k_data)
    blocks = None
    if block:
        data, blocks = pad_blocks(data, n, block)
    inits = jax.vmap(
        lambda k: init_near_truth(k, spec, truth, n, ini["c_gate"], ini["c_expert"], ini["rho"])
    )(jax.random.split(k_init, L))
    max_iter = e["max_iter"]

    def fits(data, inits):
        one = lambda dt, p: fit_data(
            spec, dt, p, "direct", "newton", bounds, max_iter, blocks=blocks
        )
        return jax.vmap(one)(data, inits)

    fn, t_compile = compiled(fits, data, inits)
    t_call, res = timed(fn, (data, inits), repeats)
    it = np.asarray(res.n_iter)
    per_fit = t_call / L
    return {
        "config": path,
        "m": spec.m,
        "P": spec.n_params,
        "compile_s": t_compile,
        "call_s": t_call,
        "per_fit_s": per_fit,
        "iter_mean": float(it.mean()),
        "iter_max": int(it.max()),
        "per_iter_mean_s": per_fit / max(float(it.mean()), 1e-300),
        "per_iter_exec_s": per_fit / max(int(it.max()), 1),
        "converged": int(np.sum(np.asarray(res.converged))),
        "describe": C.describe_config(cfg),
    }


def row_spec(gate: str, lik: str, m: int):
    """(MixSpec, truth MixParams) of the per-row table: d = 2, K = 3, linear frozen expert,
    tanh adapters, scale 4; truths of sweeps/heterogeneous.toml (m = 1) and
    sweeps/adapters.toml:softmax (m = 2), regression experts on the first row of eta*."""
    import numpy as np

    from moejax.mix.spec import MixSpec

    s = 2**-0.5
    beta = [[s, s]] if m == 1 else [[1.0, 0.0], [0.0, 1.0]]
    eta1 = [[0.0, 1.5], [1.5, 0.0]]
    eta = [eta1] if m == 1 else [eta1, [[-1.5, 0.0], [0.0, -1.5]]]
    eta = np.asarray(eta)
    regression = lik != "categorical"
    spec = MixSpec(
        d=2,
        K=3,
        frozen="linear",
        adapter="tanh",
        eta0=np.eye(2)[:1] if regression else np.eye(2),
        adapters=m,
        gate=gate,
        likelihood=lik,
        nu0=1.0,
        scale=4.0,
    )
    p = spec.params(beta, np.zeros(m), eta[:, :1] if regression else eta, np.full(m, 0.5))
    return spec, p


def row_case(gate: str, lik: str, m: int, L: int, n: int, repeats: int) -> dict:
    """ns per row of the closed-form row derivatives and of one full objective pass."""
    import jax
    import jax.numpy as jnp

    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective
    from moejax.mix.rows import mixture_row_fns, predictor_planes

    spec, p = row_spec(gate, lik, m)
    data = draw(spec, p, L, n, jax.random.key(SEED + 1))
    rows = L * n
    d = spec.d
    X1 = jnp.moveaxis(data.X1, 0, 1).reshape(d + 1, rows)  # (L, d+1, n) -> planes (d+1, L n)
    U = jax.jit(lambda X1: predictor_planes(spec, p, X1[:d]))(X1)
    y, lf0 = data.y.reshape(rows), data.lf0.reshape(rows)
    vgh = mixture_row_fns(spec).value_grad_hess

    def row_pass(U, y, lf0):
        return jax.tree_util.tree_map(lambda a: jnp.sum(a, axis=-1), vgh(U, (y, lf0)))

    f_rows, c_rows = compiled(row_pass, U, y, lf0)
    t_rows, _ = timed(f_rows, (U, y, lf0), repeats)
    theta = pack(spec, p)

    def obj_pass(data, theta):
        return jax.vmap(lambda dt: objective(spec, dt).value_grad_hess(theta))(data)

    f_obj, c_obj = compiled(obj_pass, data, theta)
    t_obj, _ = timed(f_obj, (data, theta), repeats)
    return {
        "gate": gate,
        "likelihood": lik,
        "m": m,
        "W": U.shape[0],
        "P": spec.n_params,
        "rows_ns": 1e9 * t_rows / rows,
        "obj_ns": 1e9 * t_obj / rows,
        "compile_s": c_rows + c_obj,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 500, 8 fits, 2 repeats")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="--quick with per-row costs of 3 pairs (every gate and likelihood once)",
    )
    ap.add_argument("--n", type=int, help="rows per fit (default 4000)")
    ap.add_argument("--fits", type=int, help="vmapped fits per call, L (default 64)")
    ap.add_argument("--repeats", type=int, help="timed calls after the warm-up (default 7)")
    ap.add_argument(
        "--block",
        type=int,
        default=0,
        help="sum the fits' rows in blocks of this many rows, as the sweep engine does "
        "(default 0: all rows at once)",
    )
    ap.add_argument("--no-rows", action="store_true", help="skip the per-row table")
    ap.add_argument("--out", help="append a Markdown block with the results to this file")
    ap.add_argument(
        "--no-cli-xla-flags",
        action="store_true",
        help="do not apply the XLA flags the moejax CLI sets (measure JAX's defaults)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.quick = True
    info = C.RunInfo(args.quick)
    p = dict(QUICK if args.quick else FULL)
    for k in ("n", "fits", "repeats"):
        if getattr(args, k):
            p[k] = getattr(args, k)
    n, L, reps = p["n"], p["fits"], p["repeats"]
    if min(n, L, reps) < 1 or args.block < 0:
        sys.exit("adapters: --n, --fits and --repeats must be >= 1, --block >= 0")

    xla_flags = C.apply_cli_xla_flags(not args.no_cli_xla_flags, host_devices=1)
    la = info.load_start
    print(
        f"adapters: load average {C.fmt_load(la)} (1/5/15 min) on nproc {info.nproc} "
        f"(os.cpu_count() {os.cpu_count()}); {L} fits x n = {n}, median of {reps} calls"
        f"{'' if not args.block else f', rows in blocks of {args.block}'}; "
        f"XLA_FLAGS={xla_flags!r}",
        flush=True,
    )
    import jax

    import moejax  # noqa: F401  (float64)

    devices = ", ".join(str(d) for d in jax.devices())
    print(f"JAX devices: {devices}", flush=True)

    cases = []
    for path in (ONE, TWO):
        r = fit_case(path, L, n, reps, args.block)
        cases.append(r)
        print(
            f"  m = {r['m']}: {1e3 * r['per_fit_s']:.2f} ms per fit, mean n_iter "
            f"{r['iter_mean']:.2f} (max {r['iter_max']}), converged {r['converged']}/{L} "
            f"(compile {r['compile_s']:.1f} s)",
            flush=True,
        )
    one, two = cases
    ratio = two["per_fit_s"] / one["per_fit_s"]
    ratio_it = two["per_iter_mean_s"] / one["per_iter_mean_s"]
    ratio_exec = two["per_iter_exec_s"] / one["per_iter_exec_s"]
    verdict = (
        "meets the goal" if ratio <= GOAL else "meets the floor" if ratio <= FLOOR else "MISSES"
    )
    fit_rows = [
        [
            f"m = {r['m']} ({r['config']})",
            r["P"],
            1e3 * r["per_fit_s"],
            r["iter_mean"],
            r["iter_max"],
            1e3 * r["per_iter_mean_s"],
            1e3 * r["per_iter_exec_s"],
            f"{r['converged']}/{L}",
            r["compile_s"],
        ]
        for r in cases
    ]
    fit_rows.append(
        [
            "ratio m = 2 / m = 1",
            "",
            f"{ratio:.2f}",
            f"{two['iter_mean'] / one['iter_mean']:.2f}",
            f"{two['iter_max'] / one['iter_max']:.2f}",
            f"{ratio_it:.2f}",
            f"{ratio_exec:.2f}",
            "",
            "",
        ]
    )
    t_fit, md_fit = C.table(
        [
            "model",
            "P",
            "ms per fit",
            "mean n_iter",
            "max n_iter",
            "ms per mean iter",
            "ms per executed iter",
            "converged",
            "compile s",
        ],
        fit_rows,
    )
    fit_notes = [
        f"Per fit: {L} vmapped direct projected-Newton fits per call at n = {n} on pre-drawn, "
        f"prepared data, near-truth starts; median of {reps} calls after a warm-up; ms per "
        "fit = call time / fits; per mean iter = ms per fit / mean n_iter; per executed iter "
        "= ms per fit / max n_iter (a vmapped while-loop runs every lane as long as the "
        f"slowest). Rows {'in blocks of ' + str(args.block) if args.block else 'all at once'}.",
        f"Two adapters / one adapter per fit: {ratio:.2f}x (issue 12: floor {FLOOR:g}x, goal "
        f"{GOAL:g}x: {verdict}); per mean Newton iteration {ratio_it:.2f}x, per executed "
        f"iteration {ratio_exec:.2f}x.",
        f"One adapter: `{ONE}`: {one['describe']}.",
        f"Two adapters: `{TWO}`: {two['describe']}.",
    ]
    print()
    print(t_fit)
    print()
    print("\n".join(fit_notes))

    md_rows: list[str] = []
    row_notes: list[str] = []
    if not args.no_rows:
        from moejax.mix.spec import GATES, LIKELIHOODS

        print(f"\nper-row costs on {L} x {n} = {L * n} rows ...", flush=True)
        res = {}
        pairs = [(g, lk) for g in GATES for lk in LIKELIHOODS]
        if args.smoke:
            pairs = [
                ("softmax", "categorical"),
                ("sigmoid", "gaussian"),
                ("input_free", "laplace"),
            ]
        for gate, lik in pairs:
            for m in (1, 2):
                res[(gate, lik, m)] = row_case(gate, lik, m, L, n, reps)
            a, b = res[(gate, lik, 1)], res[(gate, lik, 2)]
            print(
                f"  {gate:>10} x {lik:<11}: rows {a['rows_ns']:.0f} / {b['rows_ns']:.0f} ns, "
                f"objective {a['obj_ns']:.0f} / {b['obj_ns']:.0f} ns (m = 1 / 2)",
                flush=True,
            )
        table_rows = []
        for gate, lik in pairs:
            a, b = res[(gate, lik, 1)], res[(gate, lik, 2)]
            table_rows.append(
                [
                    gate,
                    lik,
                    f"{a['W']} / {b['W']}",
                    f"{a['P']} / {b['P']}",
                    a["rows_ns"],
                    b["rows_ns"],
                    f"{b['rows_ns'] / a['rows_ns']:.2f}",
                    a["obj_ns"],
                    b["obj_ns"],
                    f"{b['obj_ns'] / a['obj_ns']:.2f}",
                ]
            )
        t_rows, md_rows = C.table(
            [
                "gate",
                "likelihood",
                "W (m=1/2)",
                "P (m=1/2)",
                "rows ns m=1",
                "rows ns m=2",
                "rows 2/1",
                "objective ns m=1",
                "objective ns m=2",
                "objective 2/1",
            ],
            table_rows,
        )
        row_notes = [
            f"Per row: ns per row on {L} x {n} = {L * n} rows, median of {reps} calls after a "
            "warm-up. `rows` = `mixture_row_fns(spec).value_grad_hess` (value, gradient and "
            "Hessian of -log p in the W linear predictors; outputs summed over the rows inside "
            "the jitted call); `objective` = one `objective(spec, data).value_grad_hess` pass "
            "(predictors, row derivatives and the weighted Gram sums of the P x P Hessian), "
            f"vmapped over {L} datasets of {n} rows. d = 2, K = 3 (R = 2 categorical, 1 "
            "regression), linear frozen expert of the same likelihood, tanh adapters, scale 4, "
            "nu0 = 1, nu* = 0.5; truths of the two configs above (regression: first row of "
            "eta*).",
        ]
        print()
        print(t_rows)
        print()
        print("\n".join(row_notes))

    if args.out:
        lines = [
            f"### adapters.py: two adapters vs one adapter ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            *info.header_lines("adapters.py", FULL_COMMAND, devices),
            f"- XLA_FLAGS: `{xla_flags or '(none)'}`",
            "",
            *md_fit,
            "",
            *(f"- {s}" for s in fit_notes),
        ]
        if md_rows:
            lines += ["", *md_rows, "", *(f"- {s}" for s in row_notes)]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(("\n" if out.exists() and out.stat().st_size else "") + "\n".join(lines))
            f.write("\n")
        print(f"\nappended to {out}")


if __name__ == "__main__":
    main()

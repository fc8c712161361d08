"""ns per row evaluation against the elementwise floor; work per fit, the rate achieved and the
machine's dense rates.

    python benchmarks/ceiling.py            # rows: n = 2048 x 1, 16, 64, 256 lanes; engine 64 lanes
    python benchmarks/ceiling.py --quick    # fewer repeats; engine 16 lanes (~1-2 min)
    python benchmarks/ceiling.py --smoke    # n = 1024 x 1, 2 lanes, engine 2 lanes at n = 500,
                                            # 256^2 matmuls (script check; no RESULTS.md)

1. ns per row evaluation (value + gradient + Hessian). ``jax.vmap`` over L lanes of
   ``objective(spec, data, Blocks(B, n / B)).value_grad_hess(theta)`` (the fused pass of
   `moejax.estimation.objective.linear_predictor_objective`, closed-form rows of
   `moejax.mix.rows.mixture_row_fns`, rows summed block by block as the engine does, B the
   engine's compute block) on data prepared by ``prepare_data`` (rows last, X1 (d+1, n)) of n
   rows per lane drawn by `moejax.mix.sample`, theta = the truth; d = 2, K = 3 from
   sweeps/heterogeneous.toml. In a child pinned to one core (``os.sched_setaffinity`` before
   JAX starts) with one JAX device; min over repeated calls; ns = seconds / (L n). Reported
   for L = 1, 16, 64, 256.

2. The elementwise floor of that row evaluation, printed next to it. Transcendentals per row
   = XLA's ``compiled.cost_analysis()["transcendentals"]`` of one unblocked ``value_grad_hess``
   on n rows (loop-free, so nothing is counted once for a loop), divided by n; times the
   seconds per float64 transcendental on one core (JAX exp/log1p/tanh on 2^22 elements in a
   child pinned to one core: best seconds / its transcendental count). That is the floor: the
   time the row evaluation's transcendental operations alone take. Also given: the floor plus
   the row's flops (same cost analysis) at the machine's one-core elementwise flop rate (8
   independent degree-8 Horner polynomials summed, on 2^22 float64, about 134 flops per
   element, one core). That second number is an estimate, not a strict floor: XLA counts
   every elementwise operation (selects, compares, broadcasts) as a flop, at one rate.

3. Work per fit and the rate achieved by the engine (`moejax.sweep.simulate.Engine` with
   run.lanes = L at n, pinned to one core, one device: `scaling.run_point`). XLA counts the
   body of a while loop ONCE, whatever its trip count, so the engine's compiled program
   (`make_chunk_fn`, cost (A)) does not give the work of a fit; it is assembled from
   loop-free pieces, each jitted with its data as arguments:

   - (B) one unblocked ``value_grad_hess`` on n rows (every Newton pass evaluates this once);
   - (S) the engine's data draw of one compute block (``sample_block_planes``: covariates,
     labels, frozen log-density, rows last) times ceil(n / B) blocks;
   - (H) the Hellinger error on ``run.density_points`` held-out covariates (class
     probabilities of the estimate and the truth, categorical models only), as `fit_lane`
     computes it (its ``density_error`` when the engine has one).

       flops per fit = E x (B) + (S) + (H),   E = mean of n_iter + 1 over the fits

   (n_iter + 1 = accepted Newton steps plus the first evaluation; backtracks are not reported
   per lane, so E and the count are lower bounds). "Executed" uses the slowest lane of each
   call instead of the mean (a vmapped while-loop runs every lane that long).

Machine rates (each in a child process; "one core" = pinned and BLAS thread variables set to
1): float64 matmul with JAX (XLA CPU) and NumPy; JAX exp/log1p/tanh; the elementwise
polynomial; NumPy triad bandwidth for a roofline view with XLA's "bytes accessed".

Removed with the engine rewrite (issue 13): the old hand-vmapped ``make_lane_fn`` (the lane
function is now the engine's own compiled program, run through `Engine`), and (S) as
``sample`` + ``prepare_data`` on rows-first data (the engine draws planes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import scaling

CONFIG = "sweeps/heterogeneous.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/ceiling.py"
N_ROWS = 2048  # rows per lane of the row-evaluation measure (two 1024-row blocks)
ROW_LANES = [1, 16, 64, 256]
N_ENGINE = 2000
MATMUL = 2048
ELEMENTS = 2**22

_DENSE_CHILD = r"""
import json, os, sys, time
kind, n, one = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if one:  # pin to one core before any thread pool exists
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numpy as np
rng = np.random.default_rng(0)
if kind == "numpy":
    a = rng.standard_normal((n, n)); b = rng.standard_normal((n, n))
    f = lambda: a @ b
    work = 2 * n**3
else:
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    def cost(c):
        ca = c.cost_analysis(); return ca[0] if isinstance(ca, (list, tuple)) else ca
    if kind == "jax":
        ja = jax.device_put(rng.standard_normal((n, n)))
        jb = jax.device_put(rng.standard_normal((n, n)))
        mm = jax.jit(jnp.matmul).lower(ja, jb).compile()
        f = lambda: mm(ja, jb).block_until_ready()
        work = 2 * n**3
    elif kind == "trans":  # transcendentals: exp, log1p, tanh on n float64
        x = jax.device_put(rng.standard_normal(n))
        g = jax.jit(lambda x: jnp.exp(-x * x) + jnp.log1p(x * x) + jnp.tanh(x)).lower(x).compile()
        work = cost(g)["transcendentals"]
        f = lambda: g(x).block_until_ready()
    else:  # "poly": elementwise flops, 8 independent degree-8 Horner chains on n float64
        x = jax.device_put(rng.uniform(-1, 1, n))
        def poly(x):
            out = 0.0
            for j in range(8):
                y = jnp.full_like(x, 1.0 / (j + 1))
                for k in range(8):
                    y = y * x + 1.0 / (j + k + 2)
                out = out + y
            return out
        g = jax.jit(poly).lower(x).compile()
        work = cost(g)["flops"] or 135 * n
        f = lambda: g(x).block_until_ready()
f()
ts = []
for _ in range(7):
    t0 = time.perf_counter()
    f()
    ts.append(time.perf_counter() - t0)
best = min(ts)
print(json.dumps({"rate": work / best / 1e9, "seconds": best, "work": work}))
"""


def dense_rate(kind: str, one_core: bool, size: int) -> dict:
    """G ops/s of a child process: kind "numpy"/"jax" (float64 size x size matmul, flops),
    "trans" (JAX exp/log1p/tanh on ``size`` float64, transcendentals) or "poly" (JAX
    elementwise polynomial on ``size`` float64, flops). ``one_core`` pins the child to one
    core and sets the BLAS thread variables to 1."""
    env = dict(os.environ)
    if one_core:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
            env[k] = "1"
    return C.run_json_subprocess(
        [sys.executable, "-c", _DENSE_CHILD, kind, str(size), "1" if one_core else "0"],
        env=env,
        timeout=600,
    )


def seconds_per_transcendental(elements: int = ELEMENTS) -> float:
    """Seconds per float64 transcendental (exp/log1p/tanh) on one core."""
    r = dense_rate("trans", True, elements)
    return r["seconds"] / r["work"]


def triad_bandwidth() -> float:
    """GB/s of a = b + s*c on 2^24 float64 (128 MiB) arrays, best of 5."""
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


def _cost(compiled) -> tuple[float, float, float]:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, list | tuple) else ca
    return (ca.get("flops", 0.0), ca.get("transcendentals", 0.0), ca.get("bytes accessed", 0.0))


def rows_point(config: str, n: int, lanes_list: list[int], repeats: int, budget: float) -> dict:
    """Item 1 of the module docstring, in this process, which it pins to one core first (call
    before JAX starts): ns per row evaluation at every L of ``lanes_list`` (min over at most
    ``repeats`` calls or ``budget`` seconds each), and the cost analysis per row of one
    unblocked value_grad_hess on n rows."""
    C.pin_one_core()
    xla_flags = C.apply_cli_xla_flags(True)
    import jax
    import jax.numpy as jnp

    import moejax  # noqa: F401  (float64)
    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.estimation.objective import Blocks
    from moejax.mix.sampling import sample
    from moejax.sweep.config import load
    from moejax.sweep.simulate import build_problem, choose_block, lane_block

    cfg = load(config, {"sizes.list": [n]})
    problem = build_problem(cfg)
    spec = problem.spec
    r = cfg["run"]
    B = choose_block([n], r["block_rows"], r["max_padding"])
    if n % B:
        raise SystemExit(f"ceiling: n = {n} must be a multiple of the compute block {B}")
    tp = problem.truth.at(n)
    theta = pack(spec, tp)
    radius = cfg["model"]["radius"]

    @jax.jit
    def draw(keys):
        def one(k):
            X, y = sample(k, spec, tp, n, radius)
            return prepare_data(spec, X, y)

        return jax.vmap(one)(keys)

    # cost analysis of one unblocked pass (loop-free) on n rows
    data1 = jax.tree_util.tree_map(lambda a: a[0], draw(jax.random.split(jax.random.key(7), 1)))
    flat = jax.jit(lambda dt, th: objective(spec, dt).value_grad_hess(th))
    flops, trans, nbytes = _cost(flat.lower(data1, theta).compile())
    out = {}
    for L in lanes_list:
        # the compute block the engine gives L lanes (lanes x rows per step <= 16384)
        BL = lane_block(B, L)
        blocks = Blocks(BL, jnp.int32(n // BL))

        def batched(data, th, blocks=blocks):
            return jax.vmap(lambda dt: objective(spec, dt, blocks).value_grad_hess(th))(data)

        data = jax.block_until_ready(draw(jax.random.split(jax.random.key(11), L)))
        t0 = time.perf_counter()
        fn = jax.jit(batched).lower(data, theta).compile()
        t_compile = time.perf_counter() - t0
        jax.block_until_ready(fn(data, theta))
        ts: list[float] = []
        while len(ts) < repeats and (sum(ts) < budget or len(ts) < 3):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(data, theta))
            ts.append(time.perf_counter() - t0)
        out[str(L)] = {
            "ns_per_row": 1e9 * min(ts) / (L * n),
            "ns_per_row_median": 1e9 * sorted(ts)[len(ts) // 2] / (L * n),
            "calls": len(ts),
            "compile_s": t_compile,
            "block": BL,
        }
        del data
    return {
        "n": n,
        "block": B,
        "P": spec.n_params,
        "lanes": out,
        "flops_per_row": flops / n,
        "trans_per_row": trans / n,
        "bytes_per_row": nbytes / n,
        "xla_flags": xla_flags,
        "devices": [str(d) for d in jax.devices()],
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def run_rows_point(
    config: str, n: int, lanes_list: list[int], repeats: int, budget: float, timeout=1800
) -> dict:
    """`rows_point` in a fresh subprocess pinned to one core."""
    env = dict(os.environ)
    env.pop("MOEJAX_HOST_DEVICES", None)
    argv = [sys.executable, str(Path(__file__).resolve()), "--config", config, "--rows-child"]
    argv += [str(n), ",".join(map(str, lanes_list)), str(repeats), str(budget)]
    return C.run_json_subprocess(argv, env=env, timeout=timeout)


def elementwise_floor(rows: dict, s_trans: float, poly_rate: float | None = None) -> dict:
    """The floor (ns per row) from a `rows_point` result: transcendentals alone, and
    transcendentals plus flops at the one-core elementwise rate (``poly_rate`` GFLOP/s)."""
    floor = 1e9 * rows["trans_per_row"] * s_trans
    out = {"floor_ns": floor, "s_per_trans": s_trans}
    if poly_rate:
        out["floor_flops_ns"] = floor + rows["flops_per_row"] / poly_rate
        out["poly_gflops"] = poly_rate
    return out


def work_pieces(config: str, n: int) -> dict:
    """(A) the engine program's cost as XLA counts it (per lane), (B), (S), (H) of the module
    docstring, each (flops, transcendentals, bytes), in this process (one device)."""
    import jax
    import jax.numpy as jnp

    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.losses import mean_hellinger_probs
    from moejax.mix.density import class_probs_planes
    from moejax.mix.sampling import DATA_BLOCK, sample, sample_block_planes, sample_covariates
    from moejax.sweep.config import load
    from moejax.sweep.simulate import Engine, build_problem

    cfg = load(config, {"sizes.list": [n], "run.lanes": 1})
    problem = build_problem(cfg)
    spec = problem.spec
    radius = cfg["model"]["radius"]
    m_dens = cfg["run"]["density_points"]
    eng = Engine(problem, jax.local_devices()[:1])
    cp = eng.plan.class_of(n)
    A = _cost(eng.program(cp)[0])
    B = cp.block
    tp = problem.truth.at(n)
    key = jax.random.key(12345)
    blk = jax.jit(lambda k, b, tp: sample_block_planes(k, b, spec, tp, DATA_BLOCK, B, radius))
    S1 = _cost(blk.lower(key, jnp.int32(0), tp).compile())
    S = tuple(v * -(-n // B) for v in S1)
    X, y = sample(key, spec, tp, n, radius)
    data = prepare_data(spec, X, y)
    theta = pack(spec, tp)
    Bc = _cost(
        jax.jit(lambda dt, th: objective(spec, dt).value_grad_hess(th)).lower(data, theta).compile()
    )
    if m_dens > 0 and not spec.regression:
        from moejax.sweep import simulate

        density_error = getattr(simulate, "density_error", None)  # the engine's own, if any

        # density_error scans over blocks of at most 256 points, and XLA counts a loop body
        # once: cost one block's worth of points (a one-step scan), times the blocks.
        nb = -(-m_dens // 256) if density_error is not None else 1
        pts = -(-m_dens // nb)

        def hel(k, a, b):
            if density_error is not None:
                return density_error(spec, a, b, sample_covariates(k, spec.d, pts, radius))
            Xh = sample_covariates(k, spec.d, pts, radius).T
            pa = jnp.stack(class_probs_planes(spec, a, Xh))
            pb = jnp.stack(class_probs_planes(spec, b, Xh))
            return mean_hellinger_probs(pa, pb)

        H = tuple(nb * v for v in _cost(jax.jit(hel).lower(key, tp, tp).compile()))
    else:
        H = (0.0, 0.0, 0.0)
    return {"A": A, "B": Bc, "S": S, "H": H, "block": B, "buffer": cp.N, "cfg": cfg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, engine 16 lanes")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="script check: n = 1024 x 1, 2 lanes; engine 2 lanes at n = 500; implies --no-write",
    )
    ap.add_argument("--n", type=int, help=f"rows per lane of the row measure (default {N_ROWS})")
    ap.add_argument("--row-lanes", help="comma-separated lanes of the row measure (1,16,64,256)")
    ap.add_argument("--engine-n", type=int, help=f"n of the engine measure (default {N_ENGINE})")
    ap.add_argument("--lanes", type=int, help="run.lanes of the engine measure (default 64)")
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument("--rows-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    if args.rows_child:
        n, lanes, reps, budget = args.rows_child
        res = rows_point(
            args.config, int(n), [int(v) for v in lanes.split(",")], int(reps), float(budget)
        )
        print(json.dumps(res))
        return
    if args.smoke:
        args.quick = args.no_write = True
    info = C.RunInfo(args.quick)
    xla_flags = C.apply_cli_xla_flags(True, host_devices=1)  # before JAX starts; children inherit
    n_rows = args.n or (1024 if args.smoke else N_ROWS)
    row_lanes = (
        [int(v) for v in args.row_lanes.split(",")]
        if args.row_lanes
        else [1, 2]
        if args.smoke
        else ROW_LANES
    )
    reps, budget = (3, 0.5) if args.smoke else (10, 2.0) if args.quick else (30, 5.0)
    L = args.lanes or (2 if args.smoke else 16 if args.quick else 64)
    n_eng = args.engine_n or (500 if args.smoke else N_ENGINE)
    matmul = 256 if args.smoke else MATMUL
    elements = 2**18 if args.smoke else ELEMENTS
    print(
        f"ceiling: {args.config}; rows n = {n_rows} x lanes {row_lanes}; engine {L} lanes at "
        f"n = {n_eng}; load {C.fmt_load(info.load_start)}; XLA_FLAGS {xla_flags!r}",
        flush=True,
    )

    # 1 + 2: ns per row evaluation, one core, and its elementwise floor
    rows = run_rows_point(args.config, n_rows, row_lanes, reps, budget)
    got = rows["lanes"].items()
    print("  rows: " + ", ".join(f"{k} lanes {v['ns_per_row']:.0f} ns" for k, v in got))
    print("  machine rates ...", flush=True)
    dense = {(k, one): dense_rate(k, one, matmul) for k in ("jax", "numpy") for one in (0, 1)}
    for one in (0, 1):
        dense[("trans", one)] = dense_rate("trans", one, elements)
        dense[("poly", one)] = dense_rate("poly", one, elements)
    s_trans = dense[("trans", 1)]["seconds"] / dense[("trans", 1)]["work"]
    fl = elementwise_floor(rows, s_trans, dense[("poly", 1)]["rate"])
    bw = triad_bandwidth()

    # 3: the engine, one core, one device
    print(f"  engine: {L} lanes at n = {n_eng}, one core ...", flush=True)
    eng = scaling.run_point(args.config, n_eng, L, L, one_core=True, repeats=int(args.smoke))
    fps = eng["fits"] / eng["compute_s"]
    import moejax  # noqa: F401  (float64; this process: one device, cost analysis only)

    wp = work_pieces(args.config, n_eng)
    cfg = wp["cfg"]
    A, Bc, S, H = wp["A"], wp["B"], wp["S"], wp["H"]
    E_mean = eng["evals_mean"]
    E_exec = eng["row_evals_executed"] / (eng["fits"] * eng["n"])  # per fit, counting padding
    per_fit = E_mean * Bc[0] + S[0] + H[0]
    per_fit_exec = E_exec * Bc[0] + S[0] + H[0]
    per_fit_obj = E_mean * Bc[0]
    trans_fit = E_mean * Bc[1] + S[1] + H[1]
    bytes_fit = E_mean * Bc[2] + S[2] + H[2]
    peak_all = max(dense[(k, 0)]["rate"] for k in ("jax", "numpy"))
    peak_one = max(dense[(k, 1)]["rate"] for k in ("jax", "numpy"))
    trans_one = dense[("trans", 1)]["rate"]

    row_rows = []
    for k, v in rows["lanes"].items():
        row_rows.append(
            [
                int(k),
                v["ns_per_row"],
                v["ns_per_row_median"],
                v["calls"],
                fl["floor_ns"],
                v["ns_per_row"] / fl["floor_ns"],
                fl["floor_flops_ns"],
                v["ns_per_row"] / fl["floor_flops_ns"],
            ]
        )
    t_rows, md_rows = C.table(
        [
            "lanes",
            "ns per row evaluation (min)",
            "median",
            "calls",
            "elementwise floor ns",
            "x floor",
            "floor incl. flops ns",
            "x floor incl. flops",
        ],
        row_rows,
    )
    row_notes = [
        "Row evaluation: `jax.vmap` over L lanes of `objective(spec, data, "
        "Blocks(B_L, n / B_L)).value_grad_hess(theta)` (B_L the engine's compute block of L "
        f"lanes, `lane_block({rows['block']}, L)`: "
        + ", ".join(f"{k} lanes {v['block']}" for k, v in rows["lanes"].items())
        + ") on "
        f"prepared data of n = {n_rows} rows per lane (P = {rows['P']}), one core (child "
        f"affinity {rows['affinity']}, JAX devices {', '.join(rows['devices'])}), min over "
        f"repeated calls (at most {reps}); ns = seconds / (L n). XLA_FLAGS "
        f"`{rows['xla_flags'] or '(none)'}`.",
        f"Elementwise floor: {rows['trans_per_row']:.2f} transcendentals per row (XLA cost "
        f"analysis of one unblocked value_grad_hess on {n_rows} rows / n) x "
        f"{1e9 * s_trans:.2f} ns per float64 transcendental on one core (exp/log1p/tanh on "
        f"{elements} elements, pinned child) = **{fl['floor_ns']:.1f} ns per row**. With the "
        f"row's {rows['flops_per_row']:.0f} flops at the one-core elementwise rate "
        f"({fl['poly_gflops']:.2f} GFLOP/s, 8 Horner chains; an estimate, not a strict floor): "
        f"{fl['floor_flops_ns']:.1f} ns per row. (XLA bytes accessed per row: "
        f"{rows['bytes_per_row']:.0f}.)",
    ]

    work_rows = [
        ["(A) engine program, 1 lane, as XLA counts it (loops once)", *A],
        [f"(B) value_grad_hess, one evaluation on n = {n_eng} rows", *Bc],
        [f"(S) data draw, {-(-n_eng // wp['block'])} blocks of {wp['block']} rows", *S],
        [f"(H) Hellinger error, {cfg['run']['density_points']} points", *H],
        [f"per fit = E (B) + (S) + (H), E = {E_mean:.2f}", per_fit, trans_fit, bytes_fit],
        ["per fit, objective only = E (B)", per_fit_obj, E_mean * Bc[1], E_mean * Bc[2]],
        [f"executed per fit, E_exec = {E_exec:.2f}", per_fit_exec, float("nan"), float("nan")],
    ]
    t_work, md_work = C.table(["quantity", "flops", "transcendentals", "bytes accessed"], work_rows)
    rate_rows = [
        ["moejax engine, flops per fit x fits/s", per_fit * fps / 1e9],
        ["  same, objective-only flops", per_fit_obj * fps / 1e9],
        ["  same, executed flops (slowest lane of each call)", per_fit_exec * fps / 1e9],
        [f"JAX (XLA CPU) matmul {matmul}^2 float64, all cores", dense[("jax", 0)]["rate"]],
        [f"JAX (XLA CPU) matmul {matmul}^2 float64, one core", dense[("jax", 1)]["rate"]],
        [f"NumPy matmul {matmul}^2 float64, all cores", dense[("numpy", 0)]["rate"]],
        [f"NumPy matmul {matmul}^2 float64, one core", dense[("numpy", 1)]["rate"]],
        [f"JAX elementwise polynomial, {elements} float64, all cores", dense[("poly", 0)]["rate"]],
        [f"JAX elementwise polynomial, {elements} float64, one core", dense[("poly", 1)]["rate"]],
    ]
    trans_rows = [
        ["moejax engine, transcendentals per fit x fits/s", trans_fit * fps / 1e9],
        [f"JAX exp/log1p/tanh on {elements} float64, all cores", dense[("trans", 0)]["rate"]],
        [f"JAX exp/log1p/tanh on {elements} float64, one core", trans_one],
    ]
    t_rate, md_rate = C.table(["rate", "GFLOP/s"], rate_rows)
    t_trans, md_trans = C.table(["transcendental rate", "G/s"], trans_rows)
    ai = per_fit / bytes_fit if bytes_fit else float("nan")
    notes = [
        f"Config `{args.config}`: {C.describe_config(cfg)}.",
        f"Engine: run.lanes = {L} at n = {n_eng} ({eng['fits']} fits, buffer {eng['buffer']} "
        f"rows, {eng['block']}-row blocks), one core, one device: compute "
        f"{eng['compute_s']:.4f} s per run (median `Engine.compute_s` of {eng['warm_runs']} warm "
        f"runs), {fps:.1f} fits/s; evaluations per fit E = n_iter + 1: mean {E_mean:.2f}, "
        f"slowest {eng['evals_max']}.",
        "XLA's cost analysis counts a while-loop body once, so (A) is not the work of a fit; "
        "the per-fit count is assembled from the loop-free pieces (B), (S), (H) (module "
        "docstring).",
        f"Distance to the hardware: achieved {per_fit * fps / 1e9:.2f} GFLOP/s on one core is "
        f"{peak_one * 1e9 / (per_fit * fps):.0f}x below the best one-core dense rate "
        f"({peak_one:.1f} GFLOP/s; all cores {peak_all:.1f}).",
        f"Transcendentals (exp, log, tanh, ...; not in `flops`): {trans_fit:.3g} per fit, "
        f"{trans_fit / (n_eng * E_mean):.1f} per row per evaluation; at the one-core JAX rate "
        f"({trans_one:.2f} G/s) they alone take {trans_fit * fps / (trans_one * 1e9):.0%} of "
        "the engine's run time.",
        f"Roofline view: XLA's bytes accessed per fit {bytes_fit:.3g} -> arithmetic intensity "
        f"{ai:.2f} flop/byte; NumPy triad bandwidth {bw:.1f} GB/s x {ai:.2f} = "
        f"{bw * ai:.1f} GFLOP/s attainable if memory-bound (XLA counts bytes per op, before "
        "cache reuse, so this bound is loose).",
    ]

    print()
    print(t_rows)
    print()
    print("\n".join(row_notes))
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
    lines = info.header_lines("ceiling.py", FULL_COMMAND, ", ".join(rows["devices"]))
    lines += [
        "",
        "ns per row evaluation (value + gradient + Hessian), one core, against the elementwise "
        "floor:",
        "",
        *md_rows,
        "",
        *(f"- {s}" for s in row_notes),
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

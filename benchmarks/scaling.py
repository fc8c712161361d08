"""Scaling of the compiled, vmapped lane function with lanes per call and with sample size n.

    python benchmarks/scaling.py            # lanes 1..4096 at n = 2000; n = 1e3..1e6
    python benchmarks/scaling.py --quick    # lanes 1..256 at n = 2000; n = 1e3..1e6, fewer lanes
    python benchmarks/scaling.py --smoke    # 1-2 lanes at n <= 3000 (script check; does not
                                            # write RESULTS.md)

The function measured is the engine's own: ``make_lane_fn(build_problem(load(CONFIG)), buffer)``
vmapped over the replicate with n one scalar per call (``in_axes=(None, 0, None, None)``, as
`moejax.sweep.engine.run_sweep` compiles it: its chunks never mix sizes), jitted and compiled
ahead of time (``.lower(...).compile()``), on sweeps/heterogeneous.toml (any member of the
model family: ``--config``). It draws the data, fits (the config's estimator and start) and
computes the errors, as in a sweep. The buffer is the smallest one that holds n (n rounded up
to whole row blocks), so every lane is real. A last group runs the grid's smallest size (and,
in the full version, its median size) in its own buffer and in the buffer of its buffer class
in the default sweep (`engine.buffer_classes`, ``run.buffer_ratio``: sizes within that factor
share one program and one buffer), and, as a what-if the engine does not do, the smallest size
in that buffer with n passed per lane (``in_axes=(0, 0, None, None)``).

Every point runs in its own subprocess: compile time is a cold compile (no persistent cache)
and the peak RSS (``ru_maxrss``) is that point's own. Reported per point: trace+lower and compile
seconds, run seconds (median over repeated calls for calls under 2 s, else one call), fits/s,
rows x fits/s, nanoseconds per row per fit and per row per objective evaluation (evaluations =
the slowest lane's n_iter + 1: a vmapped while-loop runs every lane that long), CPU seconds /
wall seconds of the calls (cores used), RSS after import and peak RSS. Also: the padded/real
work of the config's 20-size grid (`choose_block` + `block_padding`, max_padding 1.3, and the
rows the engine's calls execute). The XLA flags the moejax CLI sets for itself are
applied too (``--no-cli-xla-flags`` to measure JAX's defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CONFIG = "sweeps/heterogeneous.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/scaling.py"
LANES_FULL = [1, 4, 16, 64, 256, 1024, 4096]
LANES_QUICK = [1, 16, 64, 256]
N_LANES = 2000
NS_FULL = [(1000, 4), (10000, 4), (100000, 4), (1000000, 2)]
NS_QUICK = [(1000, 2), (10000, 2), (100000, 2), (1000000, 1)]
LANES_SMOKE = [1, 2]
NS_SMOKE = [(3000, 1)]
REPEAT_UNDER_S = 2.0  # calls shorter than this are repeated ...
REPEAT_BUDGET_S = 3.0  # ... until this much run time is collected (at most 20 calls)


def point(config: str, n: int, lanes: int, buf: int, cli_flags: bool, n_per_lane: bool) -> dict:
    """Measure one point in this process: ``lanes`` lanes of sample size n in a buffer of
    ``buf`` rows (0: the smallest buffer that holds n). The engine's vmap: over the replicate
    only, n one scalar per call (``in_axes=(None, 0, None, None)``); ``n_per_lane``: vmap over
    n too (``in_axes=(0, 0, None, None)``; NOT what the engine does, a what-if). Returns a
    JSON-able dict."""
    xla_flags = C.apply_cli_xla_flags(cli_flags)
    import jax
    import numpy as np

    import moejax  # noqa: F401  (float64)
    from moejax.sweep.config import load
    from moejax.sweep.engine import build_problem, make_lane_fn

    cfg = load(config)
    problem = build_problem(cfg)
    N = buf or C.buffer_rows(cfg, n)
    rss_import = C.rss_now_mib()
    n_axis = 0 if n_per_lane else None
    fn = jax.jit(jax.vmap(make_lane_fn(problem, N), in_axes=(n_axis, 0, None, None)))
    n_vec = jax.device_put(np.full(lanes, n, np.int32) if n_per_lane else np.int32(n))
    r_vec = jax.device_put(np.arange(lanes, dtype=np.int32))
    seed = jax.device_put(np.uint32(cfg["seed"]))
    truth = jax.device_put(problem.truth)
    t0 = time.perf_counter()
    lowered = fn.lower(n_vec, r_vec, seed, truth)
    t_lower = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t0

    walls, cpus = [], []
    out = None
    while True:
        c0, t0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(compiled(n_vec, r_vec, seed, truth))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if walls[0] >= REPEAT_UNDER_S or sum(walls[1:]) >= REPEAT_BUDGET_S or len(walls) >= 21:
            break
    timed_w = walls if len(walls) == 1 else walls[1:]  # first call of a short run = warm-up
    timed_c = cpus if len(cpus) == 1 else cpus[1:]
    it = np.asarray(out["n_iter"])
    return {
        "N": n,
        "buffer": N,
        "xla_flags": xla_flags,
        "n_per_lane": n_per_lane,
        "loglik_sum": float(np.sum(out["loglik"])),
        "lanes": lanes,
        "lower_s": t_lower,
        "compile_s": t_compile,
        "run_s": statistics.median(timed_w),
        "calls": len(timed_w),
        "cores_used": sum(timed_c) / sum(timed_w),
        "evals_mean": float(it.mean() + 1),
        "evals_max": int(it.max() + 1),
        "converged": int(np.sum(out["converged"])),
        "rss_import_mib": rss_import,
        "peak_rss_mib": C.peak_rss_mib(),
        "devices": [str(d) for d in jax.devices()],
    }


def run_point(
    config: str, n: int, lanes: int, buf: int, cli_flags: bool, n_per_lane: bool = False
) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--config",
        config,
        "--point",
        str(n),
        str(lanes),
        str(buf),
    ]
    if not cli_flags:
        argv.append("--no-cli-xla-flags")
    if n_per_lane:
        argv.append("--n-per-lane")
    return C.run_json_subprocess(argv, env=env, timeout=1800)


def grid_padding(config: str, R_values=(40, 1000)) -> tuple[list[str], list[list]]:
    """Padded/real work of the config's default size grid with max_padding 1.3: the compute
    block `choose_block` picks, `block_padding` (rows processed / real rows), and the rows the
    engine's calls execute including each size's padded last call (`_common.chunk_plan`, 1
    device, automatic chunk) for R replicates per size."""
    from moejax.sweep.config import load
    from moejax.sweep.engine import block_padding, buffer_classes, choose_block

    cfg = load(config, {"run.max_padding": 1.3})
    sizes = cfg["sizes"]["list"]
    B = choose_block(sizes, cfg["run"]["block_rows"], 1.3)
    classes = buffer_classes(sizes, B, cfg["run"]["buffer_ratio"])
    lines = [
        f"Default grid of `{config}` ({len(sizes)} sizes, {sizes[0]}..{sizes[-1]}), max_padding "
        f"1.3: `choose_block` picks {B}-row compute blocks (run.block_rows "
        f"{cfg['run']['block_rows']}), `block_padding` = {block_padding(sizes, B):.4f} (rows "
        f"processed / real rows); buffer classes (run.buffer_ratio "
        f"{cfg['run']['buffer_ratio']}): "
        + ", ".join(f"{N} rows for n = {g[0]}..{g[-1]}" for N, g in classes)
        + " (one compiled program each).",
    ]
    rows = []
    real = sum(sizes)
    for R in R_values:
        plan = C.chunk_plan(dict(cfg, replicates=R), 1)
        rows_exec = sum(Cc * rows for _, Cc, rows in plan)
        rows.append([R, block_padding(sizes, B), len(plan), plan[0][1], rows_exec / (real * R)])
    return lines, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small version (~1-2 min)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="script check: 1-2 lanes at n <= 3000, 2 lanes in the buffer group; "
        "implies --no-write",
    )
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument(
        "--no-cli-xla-flags",
        action="store_true",
        help="do not apply the XLA flags the moejax CLI sets (measure JAX's defaults)",
    )
    ap.add_argument("--point", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n-per-lane", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    cli_flags = not args.no_cli_xla_flags
    if args.point:
        print(json.dumps(point(args.config, *args.point, cli_flags, args.n_per_lane)))
        return

    if args.smoke:
        args.quick = args.no_write = True
    info = C.RunInfo(args.quick)
    lanes_list = LANES_SMOKE if args.smoke else LANES_QUICK if args.quick else LANES_FULL
    ns = NS_SMOKE if args.smoke else NS_QUICK if args.quick else NS_FULL
    n_lanes = 1000 if args.smoke else N_LANES
    avail = C.mem_available_gib() * 2**30
    print(
        f"scaling: {args.config}; load average {C.fmt_load(info.load_start)} on {info.nproc} cores"
    )
    from moejax.sweep.config import load

    cfg = load(args.config)
    results, skipped = [], []
    plan = [("lanes", n_lanes, L, 0, False) for L in lanes_list]
    plan += [("n", n, L, 0, False) for n, L in ns]
    # Small n in the buffer the default sweep compiles for its buffer class, with the lanes
    # per call the engine would pick for that buffer, against the smallest buffer.
    from moejax.sweep.engine import auto_chunk, buffer_classes, build_problem

    grid = cfg["sizes"]["list"]
    class_buf = {
        n: N
        for N, group in buffer_classes(grid, C.block_size(cfg), cfg["run"]["buffer_ratio"])
        for n in group
    }
    lb_cap = 2 if args.smoke else 64
    problem = build_problem(cfg)
    n_small = [min(grid)] if args.quick else [min(grid), grid[len(grid) // 2]]
    for nb in n_small:
        Lb = min(lb_cap, auto_chunk(problem, class_buf[nb], 1))
        plan += [("buffer", nb, Lb, 0, False), ("buffer", nb, Lb, class_buf[nb], False)]
    Lb = min(lb_cap, auto_chunk(problem, class_buf[min(grid)], 1))
    plan.append(("buffer", min(grid), Lb, class_buf[min(grid)], True))
    prev = None
    for kind, n, L, buf, n_per_lane in plan:
        # Skip a point whose peak RSS, extrapolated from the previous point by buffer x lanes,
        # would not fit in 60% of the available memory (the buffer points stay within the
        # engine's own memory budget).
        if prev is not None and kind != "buffer":
            grow = (buf or C.buffer_rows(cfg, n)) * L / (prev["buffer"] * prev["lanes"])
            est = (prev["peak_rss_mib"] - prev["rss_import_mib"]) * grow * 2**20
            if est > 0.6 * avail:
                msg = (
                    f"n={n} lanes={L}: skipped (peak memory extrapolated from the previous "
                    f"point {est / 2**30:.1f} GiB > 60% of available {avail / 2**30:.1f} GiB)"
                )
                print("  " + msg, flush=True)
                skipped.append(msg)
                continue
        r = run_point(args.config, n, L, buf, cli_flags, n_per_lane)
        r["kind"] = kind
        results.append(r)
        prev = r
        print(
            f"  n={n:>7} lanes={L:>5} buffer={r['buffer']:>7}: compile {r['compile_s']:.1f} s, "
            f"run {r['run_s']:.4f} s, {L / r['run_s']:.1f} fits/s, evals max {r['evals_max']}, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )

    head = [
        "n",
        "buffer rows",
        "lanes",
        "rows/call",
        "lower s",
        "compile s",
        "run s",
        "calls",
        "fits/s",
        "rows*fits/s",
        "ns/(row*fit)",
        "evals mean/max",
        "ns/(row*eval)",
        "cores used",
        "conv",
        "RSS import MiB",
        "peak RSS MiB",
    ]

    def row(r):
        fps = r["lanes"] / r["run_s"]
        return [
            r["N"],
            r["buffer"],
            r["lanes"],
            r["N"] * r["lanes"],
            r["lower_s"],
            r["compile_s"],
            r["run_s"],
            r["calls"],
            fps,
            fps * r["N"],
            1e9 * r["run_s"] / (r["lanes"] * r["N"]),
            f"{r['evals_mean']:.2f}/{r['evals_max']}",
            1e9 * r["run_s"] / (r["lanes"] * r["N"] * r["evals_max"]),
            r["cores_used"],
            f"{r['converged']}/{r['lanes']}",
            r["rss_import_mib"],
            r["peak_rss_mib"],
        ]

    groups = {k: [r for r in results if r["kind"] == k] for k in ("lanes", "n", "buffer")}
    for r in groups["buffer"]:
        r["label"] = "n per lane (what-if)" if r["n_per_lane"] else "n per call (engine)"
    tabs = {k: C.table(head, [row(r) for r in v]) for k, v in groups.items() if v}
    if groups["buffer"]:
        tabs["buffer"] = C.table(
            ["n axis", *head], [[r["label"], *row(r)] for r in groups["buffer"]]
        )

    def ns_eval(r):
        return 1e9 * r["run_s"] / (r["lanes"] * r["N"] * r["evals_max"])

    comment = []
    npts = groups["n"]
    if len(npts) >= 2:
        per_row = [1e9 * r["run_s"] / (r["lanes"] * r["N"]) for r in npts]
        comment.append(
            "Linearity in n: time per fit per row "
            + ", ".join(f"{v:.0f}" for v in per_row)
            + f" ns at n = {', '.join(str(r['N']) for r in npts)} "
            f"({max(per_row) / min(per_row):.2f}x spread); per row per objective evaluation "
            "(slowest lane's evaluations) "
            + ", ".join(f"{ns_eval(r):.0f}" for r in npts)
            + " ns. Constant per-row-evaluation cost = linear in n; a higher value at the "
            "smallest n is the fixed per-fit cost (sampling set-up, Newton steps on the P x P "
            "system, Hellinger on run.density_points points), a higher value at large n is "
            "memory traffic (rows per call beyond the caches)."
        )
    lpts = groups["lanes"]
    if len(lpts) >= 2:
        best = max(lpts, key=lambda r: r["lanes"] / r["run_s"])
        comment.append(
            f"Lanes per call at n = {n_lanes}: fits/s "
            + ", ".join(f"{r['lanes'] / r['run_s']:.0f} ({r['lanes']})" for r in lpts)
            + f"; best at {best['lanes']} lanes. ns per row-evaluation "
            + ", ".join(f"{ns_eval(r):.0f}" for r in lpts)
            + f". Cores used during the calls: {min(r['cores_used'] for r in lpts):.2f}.."
            f"{max(r['cores_used'] for r in lpts):.2f} of {info.nproc}."
        )
    bpts = groups["buffer"]
    for r in bpts:
        if r["n_per_lane"]:
            continue
        own = [q for q in bpts if q["N"] == r["N"] and q["buffer"] < r["buffer"]]
        if own:
            o = own[0]
            comment.append(
                f"Buffer length: n = {r['N']} x {r['lanes']} lanes takes "
                f"{o['run_s']:.3f} s in its own {o['buffer']}-row buffer (peak RSS "
                f"{o['peak_rss_mib']:.0f} MiB) and {r['run_s']:.3f} s "
                f"({r['run_s'] / o['run_s']:.2f}x; peak RSS {r['peak_rss_mib']:.0f} MiB) in the "
                f"{r['buffer']}-row buffer that the default sweep compiles for its buffer class "
                f"(lanes = the engine's automatic chunk for that buffer, capped at {lb_cap})."
            )
    per_lane = [r for r in bpts if r["n_per_lane"]]
    base = [r for r in bpts if per_lane and not r["n_per_lane"] and r["N"] == per_lane[0]["N"]]
    if per_lane and len(base) == 2:
        b0, b1 = sorted(base, key=lambda r: r["buffer"])
        b2 = per_lane[0]
        same = "equal" if b1["loglik_sum"] == b2["loglik_sum"] else "DIFFERENT"
        comment.append(
            "What-if, not the engine: with n passed per lane (`in_axes=(0, 0, None, None)`) "
            "instead of one scalar per call (the engine's chunks never mix sizes), "
            f"n = {b2['N']} in the {b2['buffer']}-row buffer takes {b2['run_s']:.3f} s "
            f"({b2['run_s'] / b0['run_s']:.2f}x its own-buffer time instead of "
            f"{b1['run_s'] / b0['run_s']:.2f}x; fit log-likelihoods {same}). With a batched n "
            "the row-block loops become batched while-loops, and every iteration of the data "
            "fill loop selects between old and new values of the whole (lanes x buffer) carry."
        )
    comment.append(
        "Compile time per shape: "
        + ", ".join(
            f"n={r['N']} (buffer {r['buffer']}) x {r['lanes']}: {r['compile_s']:.1f} s"
            for r in results
        )
        + " (trace+lower in column `lower s`)."
    )
    xla = results[0]["xla_flags"] if results else ""
    comment.append(
        f"XLA_FLAGS = `{xla or '(none)'}` (what the moejax CLI sets, unless --no-cli-xla-flags)."
    )
    pad_lines, pad_rows = grid_padding(args.config)
    t_p, md_p = C.table(
        [
            "replicates",
            "block_padding",
            "calls",
            "lanes per call",
            "rows executed / real",
        ],
        pad_rows,
    )
    titles = {
        "lanes": f"Against lanes per call (n = {n_lanes}):",
        "n": "Against n:",
        "buffer": "Buffer length:",
    }
    print()
    for k, (t, _) in tabs.items():
        print(titles[k])
        print(t)
        print()
    for s in skipped + comment + pad_lines:
        print(s)
    print(t_p)

    if args.no_write:
        return
    devices = results[0]["devices"] if results else []
    lines = info.header_lines("scaling.py", FULL_COMMAND, ", ".join(devices))
    lines += [
        "",
        f"Config `{args.config}`: {C.describe_config(cfg)}.",
        "",
        "Compiled lane function (engine internals: `make_lane_fn(build_problem(load(cfg)), "
        "buffer)`, vmapped with in_axes (None, 0, None, None) as the engine does, jitted, AOT "
        "lower + compile), each "
        "point in its own process (cold compile, own peak RSS). `evals` = n_iter + 1 per lane "
        "(mean / slowest lane; the vmapped loop runs every lane as long as the slowest); "
        "`ns/(row*eval)` uses the slowest lane's evaluations; `cores used` = CPU s / wall s "
        "of the timed calls; `rows/call` = n x lanes.",
    ]
    for k, (_, md) in tabs.items():
        lines += ["", titles[k], "", *md]
    lines += ["", *(f"- {s}" for s in skipped + comment + pad_lines), "", *md_p]
    path = C.write_section("scaling.py", lines)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

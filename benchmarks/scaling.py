"""Scaling of the sweep engine with lanes per call (``run.lanes``, G) and with sample size n.

    python benchmarks/scaling.py            # G = 1..1024 at n = 2000; n = 1e3..1e6 (G = 4)
    python benchmarks/scaling.py --quick    # G = 1, 16, 64, 256 at n = 2000; n = 1e3..1e6 (G = 2)
    python benchmarks/scaling.py --smoke    # G = 1, 2 at n = 1000, n = 3000 (script check;
                                            # does not write RESULTS.md)

What is measured is the engine itself, `moejax.sweep.simulate.Engine`, on sweeps/heterogeneous.toml
(any member of the model family: ``--config``) with ``run.lanes`` = G: every compiled call runs
exactly G lanes per device of one sample size (the program of `make_chunk_fn`: the lanes'
data drawn into donated block-major buffers, then G vmapped fits reading them block by block,
then their errors), so G is the "lanes per call" of the engine, fixed by the config and never
by the chunk size or the device count. Each point runs in its own subprocess (cold compile, no
persistent cache, its own peak RSS), by default pinned to one core with one JAX device
(``--all-cores``: unpinned, one host device per core as the moejax CLI sets up, lanes sharded
over them). In the child: ``Engine(problem)``, ``compile_all()`` (compile s), one
``run(n, replicates)`` (warm-up: first-call allocations), then repeated warm runs
(``Engine.compute_s`` of each; the median is reported, and the runs must equal the first
bit for bit). Reported per point: compile s, compute s, fits/s, ns per row per fit, ns per
row-evaluation (executed: every call runs G x devices lanes for as many evaluations as its
slowest lane, evaluations = n_iter + 1; useful: each real lane's own n x evaluations), CPU s /
wall s of the warm `run` calls (cores used), RSS after import and peak RSS.

Groups: (1) G at n = 2000 with max(G x devices, 128) fits (a 1-lane engine runs 128 calls of
one lane); (2) n = 1e3 .. 1e6 at small G; (3) the grid's smallest size (and, in the full
version, its median size) in its own buffer against the buffer of its class in the default
sweep (`buffer_classes`, ``run.buffer_ratio`` 1000: one class, 300032 rows, for the default
grid): every pass loops over the active blocks only and the data fill writes only those, so
the buffer's length should cost memory, not time. Also: the padded/real work of the config's
default grid (`choose_block` + `block_padding`, and the lanes the engine's calls execute,
`_common.call_plan`).

Removed with the engine rewrite (issue 13): the old ``make_lane_fn`` vmapped by hand (the
engine's program is now `make_chunk_fn` run through `Engine`), and the "n per lane" what-if
(the engine passes n as one scalar per call by construction; there is nothing to compare).
The XLA flags the moejax CLI sets for itself are applied (``--no-cli-xla-flags`` to measure
JAX's default optimisation level).
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
LANES_FULL = [1, 4, 16, 64, 256, 1024]
LANES_QUICK = [1, 16, 64, 256]
LANES_SMOKE = [1, 2]
N_LANES = 2000
MIN_FITS = 128  # fits per point of the lanes group (the "128 fits at n = 2000")
NS_FULL = [(1000, 4), (10000, 4), (100000, 4), (1000000, 4)]
NS_QUICK = [(1000, 2), (10000, 2), (100000, 2), (1000000, 2)]
NS_SMOKE = [(3000, 1)]
REPEAT_BUDGET_S = 3.0  # warm runs are repeated until this much compute time is collected ...
MAX_REPEATS = 7  # ... or this many warm runs


def point(
    config: str,
    n: int,
    lanes: int,
    fits: int,
    grid: bool = False,
    one_core: bool = True,
    cli_flags: bool = True,
    repeats: int = 0,
) -> dict:
    """Measure one point in this process (see the module docstring): the engine with
    ``run.lanes`` = ``lanes`` fitting replicates 0 .. fits-1 at n. ``grid``: the config's own
    size grid (n must be in it; n then runs in its class's buffer) instead of sizes [n].
    ``repeats``: warm runs after the warm-up (0: until REPEAT_BUDGET_S). Returns a JSON-able
    dict. Must be called before JAX starts (it pins the process and sets XLA flags)."""
    if one_core:
        C.pin_one_core()
    xla_flags = C.apply_cli_xla_flags(cli_flags)
    import jax
    import numpy as np

    import moejax  # noqa: F401  (float64)
    from moejax.sweep.config import load
    from moejax.sweep.simulate import Engine, build_problem

    over = {"replicates": fits, "run.lanes": lanes}
    if not grid:
        over["sizes.list"] = [n]
    cfg = load(config, over)
    if n not in cfg["sizes"]["list"]:
        raise SystemExit(f"scaling: n = {n} is not a size of the grid of {config}")
    rss_import = C.rss_now_mib()
    eng = Engine(build_problem(cfg))
    cp = eng.plan.class_of(n)
    B = cp.block
    eng.compile_all()
    rs = list(range(fits))
    first = eng.run(n, rs)
    walls, cpus, whole = [], [], []
    same = True
    while True:
        c0, t0, w0 = time.process_time(), time.perf_counter(), eng.compute_s
        out = eng.run(n, rs)
        whole.append(time.perf_counter() - t0)
        walls.append(eng.compute_s - w0)
        cpus.append(time.process_time() - c0)
        same &= all(np.array_equal(first[k], out[k], equal_nan=True) for k in first)
        if repeats and len(walls) >= repeats:
            break
        if not repeats and (sum(walls) >= REPEAT_BUDGET_S or len(walls) >= MAX_REPEATS):
            break
    it = np.asarray(first["n_iter"]) + 1
    P = cp.per_call
    padded = np.concatenate([it, np.full(-len(it) % P, it[-1])])
    rows = -(-n // B) * B
    executed = float(sum(P * rows * padded[i : i + P].max() for i in range(0, len(padded), P)))
    return {
        "n": n,
        "lanes": lanes,
        "fits": fits,
        "buffer": cp.N,
        "block": B,
        "devices": cp.devices,
        "per_call": P,
        "calls": -(-fits // P),
        "streamed": cp.streamed,
        "grid": grid,
        "one_core": one_core,
        "xla_flags": xla_flags,
        "compile_s": eng.compile_s,
        "compute_s": statistics.median(walls),
        "compute_min_s": min(walls),
        "warm_runs": len(walls),
        "same_every_run": bool(same),
        "cores_used": sum(cpus) / sum(whole),
        "evals_mean": float(it.mean()),
        "evals_max": int(it.max()),
        "row_evals_useful": float(n * it.sum()),
        "row_evals_executed": executed,
        "loglik_sum": float(np.sum(first["loglik"])),
        "converged": int(np.sum(first["converged"])),
        "rss_import_mib": rss_import,
        "peak_rss_mib": C.peak_rss_mib(),
        "jax_devices": [str(d) for d in jax.devices()],
    }


def run_point(
    config: str,
    n: int,
    lanes: int,
    fits: int,
    grid: bool = False,
    one_core: bool = True,
    cli_flags: bool = True,
    repeats: int = 0,
    timeout: float = 1800,
) -> dict:
    """`point` in a fresh subprocess (no persistent compilation cache)."""
    env = dict(os.environ)
    for k in ("JAX_COMPILATION_CACHE_DIR", "MOEJAX_HOST_DEVICES"):
        env.pop(k, None)
    argv = [sys.executable, str(Path(__file__).resolve()), "--config", config]
    argv += ["--point", str(n), str(lanes), str(fits), str(repeats)]
    if grid:
        argv.append("--grid")
    if not one_core:
        argv.append("--all-cores")
    if not cli_flags:
        argv.append("--no-cli-xla-flags")
    return C.run_json_subprocess(argv, env=env, timeout=timeout)


def grid_padding(config: str, n_devices: int, R_values=(40, 1000)) -> tuple[list[str], list[list]]:
    """Padded/real work of the config's default size grid: the compute block `choose_block`
    picks, `block_padding` (rows processed / real rows), the buffer classes, and the lanes
    and rows the engine's calls execute (`_common.call_plan`, ``n_devices`` devices, the
    default run.lanes) for R replicates per size."""
    from moejax.sweep.config import load
    from moejax.sweep.simulate import block_padding, buffer_classes, choose_block

    cfg = load(config)
    sizes = cfg["sizes"]["list"]
    r = cfg["run"]
    B = choose_block(sizes, r["block_rows"], r["max_padding"])
    classes = buffer_classes(sizes, B, r["buffer_ratio"])
    lines = [
        f"Default grid of `{config}` ({len(sizes)} sizes, {sizes[0]}..{sizes[-1]}), max_padding "
        f"{r['max_padding']}: `choose_block` picks {B}-row compute blocks (run.block_rows "
        f"{r['block_rows']}), `block_padding` = {block_padding(sizes, B):.4f} (rows processed "
        f"/ real rows); buffer classes (run.buffer_ratio {r['buffer_ratio']:g}): "
        + ", ".join(f"{N} rows for n = {g[0]}..{g[-1]}" for N, g in classes)
        + f" (one compiled program each). Calls below: {n_devices} device(s), run.lanes "
        f"{r['lanes']} (0 = automatic).",
    ]
    rows = []
    real = sum(sizes)
    for R in R_values:
        calls = C.call_plan(dict(cfg, replicates=R), n_devices)
        lanes_exec = sum(P for _, P, _ in calls)
        rows_exec = sum(P * rows_ for _, P, rows_ in calls)
        rows.append(
            [
                R,
                block_padding(sizes, B),
                len(calls),
                calls[0][1],
                f"{lanes_exec}/{R * len(sizes)}",
                rows_exec / (real * R),
            ]
        )
    return lines, rows


HEAD = [
    "n",
    "G",
    "devices",
    "fits",
    "buffer rows",
    "calls",
    "compile s",
    "compute s",
    "fits/s",
    "ns/(row*fit)",
    "evals mean/max",
    "ns/exec row-eval",
    "ns/useful row-eval",
    "cores used",
    "conv",
    "same runs",
    "peak RSS MiB",
]


def row(r: dict) -> list:
    t = r["compute_s"]
    return [
        r["n"],
        r["lanes"],
        r["devices"],
        r["fits"],
        r["buffer"],
        r["calls"],
        r["compile_s"],
        t,
        r["fits"] / t,
        1e9 * t / (r["fits"] * r["n"]),
        f"{r['evals_mean']:.2f}/{r['evals_max']}",
        1e9 * t / r["row_evals_executed"],
        1e9 * t / r["row_evals_useful"],
        r["cores_used"],
        f"{r['converged']}/{r['fits']}",
        "yes" if r["same_every_run"] else "NO",
        r["peak_rss_mib"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller version (a few minutes)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="script check: G = 1, 2 at n = 1000, n = 3000; implies --no-write",
    )
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument(
        "--all-cores",
        action="store_true",
        help="unpinned, one host device per core (as the CLI) instead of one core, one device",
    )
    ap.add_argument(
        "--no-cli-xla-flags",
        action="store_true",
        help="do not apply the XLA optimisation level the moejax CLI sets (JAX's default)",
    )
    ap.add_argument("--point", nargs=4, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grid", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    cli_flags = not args.no_cli_xla_flags
    one_core = not args.all_cores
    if args.point:
        n, lanes, fits, repeats = args.point
        res = point(args.config, n, lanes, fits, args.grid, one_core, cli_flags, repeats)
        print(json.dumps(res))
        return

    if args.smoke:
        args.quick = args.no_write = True
    info = C.RunInfo(args.quick)
    lanes_list = LANES_SMOKE if args.smoke else LANES_QUICK if args.quick else LANES_FULL
    ns = NS_SMOKE if args.smoke else NS_QUICK if args.quick else NS_FULL
    n_lanes = 1000 if args.smoke else N_LANES
    min_fits = 4 if args.smoke else MIN_FITS
    D = 1 if one_core else info.nproc
    print(
        f"scaling: {args.config}; load average {C.fmt_load(info.load_start)} on {info.nproc} "
        f"cores; {'one core, one device' if one_core else f'{D} host devices'}",
        flush=True,
    )
    from moejax.sweep.config import load

    cfg = load(args.config)
    grid = cfg["sizes"]["list"]
    avail = C.mem_available_gib() * 2**30
    todo = [("lanes", n_lanes, G, max(G * D, min_fits), False) for G in lanes_list]
    todo += [("n", n, G, G * D, False) for n, G in ns]
    G_buf = 2 if args.smoke else 16
    n_small = [min(grid)] if args.quick else [min(grid), grid[len(grid) // 2]]
    for nb in n_small:
        todo += [("buffer", nb, G_buf, G_buf * D, False), ("buffer", nb, G_buf, G_buf * D, True)]

    results, skipped = [], []
    prev = None
    for kind, n, G, fits, in_grid in todo:
        # Skip a point whose peak RSS, extrapolated from the previous one by rows x lanes per
        # call, would not fit in 60% of the available memory.
        if prev is not None and kind != "buffer":
            grow = C.active_rows(cfg, n) * G / (prev["buffer"] * prev["lanes"])
            est = (prev["peak_rss_mib"] - prev["rss_import_mib"]) * grow * 2**20
            if est > 0.6 * avail:
                msg = (
                    f"n={n} G={G}: skipped (peak memory extrapolated from the previous point "
                    f"{est / 2**30:.1f} GiB > 60% of available {avail / 2**30:.1f} GiB)"
                )
                print("  " + msg, flush=True)
                skipped.append(msg)
                continue
        r = run_point(args.config, n, G, fits, in_grid, one_core, cli_flags)
        r["kind"] = kind
        results.append(r)
        if kind != "buffer":
            prev = r
        print(
            f"  n={n:>7} G={G:>5} x {r['devices']} dev, buffer {r['buffer']:>7}, {fits} fits: "
            f"compile {r['compile_s']:.1f} s, compute {r['compute_s']:.4f} s, "
            f"{fits / r['compute_s']:.1f} fits/s, "
            f"{1e9 * r['compute_s'] / r['row_evals_executed']:.0f} ns/exec row-eval, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )

    groups = {k: [r for r in results if r["kind"] == k] for k in ("lanes", "n", "buffer")}
    tabs = {k: C.table(HEAD, [row(r) for r in v]) for k, v in groups.items() if v}
    if groups["buffer"]:
        tabs["buffer"] = C.table(
            ["buffer", *HEAD],
            [
                ["class of the default grid" if r["grid"] else "own (sizes [n])", *row(r)]
                for r in groups["buffer"]
            ],
        )

    comment = []
    npts = groups["n"]
    if len(npts) >= 2:
        per_row = [1e9 * r["compute_s"] / (r["fits"] * r["n"]) for r in npts]
        per_eval = [1e9 * r["compute_s"] / r["row_evals_executed"] for r in npts]
        comment.append(
            "Linearity in n: time per fit per row "
            + ", ".join(f"{v:.0f}" for v in per_row)
            + f" ns at n = {', '.join(str(r['n']) for r in npts)} "
            f"({max(per_row) / min(per_row):.2f}x spread); per executed row-evaluation "
            + ", ".join(f"{v:.0f}" for v in per_eval)
            + " ns. A constant cost per row-evaluation is linear in n; more at the smallest n "
            "is the fixed per-fit cost (Newton steps on the P x P system, the Hellinger error "
            "on run.density_points points, per-call overheads), more at large n is memory "
            "traffic (a call's rows beyond the caches)."
        )
    lpts = groups["lanes"]
    if len(lpts) >= 2:
        best = min(lpts, key=lambda r: r["compute_s"] / r["fits"])
        one = [r for r in lpts if r["lanes"] == 1]
        ratios = ""
        if one:
            t1 = one[0]["compute_s"] / one[0]["fits"]
            ratios = (
                " Time per fit at G = 1 over time per fit at G: "
                + ", ".join(
                    f"{t1 / (r['compute_s'] / r['fits']):.2f}x (G = {r['lanes']})"
                    for r in lpts
                    if r["lanes"] != 1
                )
                + " (> 1: batching lanes pays)."
            )
        comment.append(
            f"Lanes per call at n = {n_lanes}: fits/s "
            + ", ".join(f"{r['fits'] / r['compute_s']:.0f} (G = {r['lanes']})" for r in lpts)
            + f"; best at G = {best['lanes']}.{ratios} Cores used during the warm runs: "
            f"{min(r['cores_used'] for r in lpts):.2f}..{max(r['cores_used'] for r in lpts):.2f}"
            f" of {info.nproc}."
        )
    bpts = groups["buffer"]
    for r in bpts:
        if not r["grid"]:
            continue
        own = [q for q in bpts if q["n"] == r["n"] and not q["grid"]]
        if own:
            o = own[0]
            same = "equal" if o["loglik_sum"] == r["loglik_sum"] else "different"
            comment.append(
                f"Buffer length: n = {r['n']} x {r['fits']} fits (G = {r['lanes']}) computes in "
                f"{o['compute_s']:.3f} s in its own {o['buffer']}-row buffer (peak RSS "
                f"{o['peak_rss_mib']:.0f} MiB) and {r['compute_s']:.3f} s "
                f"({r['compute_s'] / o['compute_s']:.2f}x; peak RSS {r['peak_rss_mib']:.0f} MiB) "
                f"in the {r['buffer']}-row buffer of its class in the default sweep; fit "
                f"log-likelihood sums {same} (the compute block is the same, "
                f"{o['block']} vs {r['block']} rows)."
            )
    if results:
        comment.append(
            "Compile time per program: "
            + ", ".join(
                f"n={r['n']} (buffer {r['buffer']}) x G={r['lanes']}: {r['compile_s']:.1f} s"
                for r in results
            )
            + " (lowering included)."
        )
        if not all(r["same_every_run"] for r in results):
            comment.append("**Some warm runs differed from the first run** (column `same runs`).")
        xla = results[0]["xla_flags"]
        comment.append(
            f"XLA_FLAGS = `{xla or '(none)'}` (the moejax CLI's, unless --no-cli-xla-flags); "
            f"JAX devices in the children: {', '.join(results[0]['jax_devices'])}."
        )
    pad_lines, pad_rows = grid_padding(args.config, info.nproc)
    t_p, md_p = C.table(
        [
            "replicates",
            "block_padding",
            "calls",
            "lanes per call",
            "lanes executed/real",
            "rows executed / real",
        ],
        pad_rows,
    )
    titles = {
        "lanes": f"Against lanes per call G (run.lanes) at n = {n_lanes}:",
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
    devices = results[0]["jax_devices"] if results else []
    lines = info.header_lines("scaling.py", FULL_COMMAND, ", ".join(devices))
    lines += [
        "",
        f"Config `{args.config}`: {C.describe_config(cfg)}.",
        "",
        "`Engine` with run.lanes = G (module docstring), each point in its own process (cold "
        "compile, own peak RSS), "
        + ("pinned to one core, one JAX device" if one_core else f"{D} host devices")
        + "; compute s = median `Engine.compute_s` of warm runs (after a warm-up run); "
        "`evals` = n_iter + 1 per lane (mean / slowest); `ns/exec row-eval` counts every "
        "lane of every call (padding lanes included) for its call's slowest lane's evaluations "
        "(a vmapped while-loop runs that long); `ns/useful row-eval` counts each real lane's "
        "own evaluations; `cores used` = CPU s / wall s of the warm runs.",
    ]
    for k, (_, md) in tabs.items():
        lines += ["", titles[k], "", *md]
    lines += ["", *(f"- {s}" for s in skipped + comment + pad_lines), "", *md_p]
    path = C.write_section("scaling.py", lines)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""The engine rewrite's targets (issue 13), measured side by side in one run.

    python benchmarks/targets.py            # full: the issue's sizes (a few minutes, quiet machine)
    python benchmarks/targets.py --quick    # smaller (PRELIMINARY section)
    python benchmarks/targets.py --smoke    # tiny sizes, under ~2 minutes, writes nothing

The five rows of the issue's table, each with its measured value and pass/fail against the
floor and the goal:

1. Whole `moejax sweep sweeps/heterogeneous.toml --sizes 2000,4000,8000,16000 --replicates
   1024` (a subprocess with the CLI's default settings: one host device per core, automatic
   lanes) against the per-fit SciPy baseline on the same data, credited with perfect
   parallelism over the machine's cores (`throughput.run_sweep`, `throughput.baseline`: the
   baseline's per-size CPU seconds per fit from 16 of the sweep's own datasets per size,
   regenerated from their keys, extrapolated to the sweep's 4096 fits). Judged on the cold
   run (fresh, empty MOEJAX_CACHE_DIR: the whole command as a first run pays it); the warm
   run (same cache, new --out) is shown beside it. Floor 15x, goal 30x.
2. Compute time of 128 fits (replicates 0..127) at n = 2000 with 1 lane per call against 64
   (and 16) lanes per call: `Engine` with run.lanes = G, one device, the process pinned to one
   core (`scaling.run_point`), compute time = `Engine.compute_s` of a warm `run` after a first
   one (compile excluded; the min of 3 warm runs). Ratio = 1-lane time / G-lane time (> 1:
   batching pays). Floor 2x, goal 5x.
3. ns per row evaluation (value + gradient + Hessian), d = 2, K = 3, 256 lanes, one core:
   `ceiling.run_rows_point` (``jax.vmap`` over 256 lanes of ``objective(spec, data, Blocks(B,
   count)).value_grad_hess(theta)`` on prepared data of 2048 rows per lane, pinned to one
   core, min over calls), next to the elementwise floor of `ceiling.elementwise_floor`
   (transcendentals per row from XLA's cost analysis x seconds per float64 transcendental on
   one core). Floor 100 ns, goal 2x the elementwise floor.
4. Cold compile of the default sweep: `moejax sweep sweeps/heterogeneous.toml --replicates 1
   --no-report --no-progress --force --out <tmp>` with MOEJAX_CACHE_DIR = a fresh empty dir;
   ``timings.compile_s`` of its manifest (and the process's wall time). Floor 5 s, goal 2 s.
5. Cores used on a multi-core CPU with default settings: CPU seconds (user + sys of the child,
   ``getrusage(RUSAGE_CHILDREN)``) over wall seconds of the whole sweep command of row 1, and
   the device count of its manifest. "All" is met when the sweep runs one device per core,
   its calls span all of them, and CPU s / wall s of the warm command is at least 0.75 x the
   cores (compilation, start-up and writing fits.csv run on one core; the cold run's figure is
   shown beside it).

Writes the section ``targets.py`` of benchmarks/RESULTS.md (command, date, machine, load
average at the start and the end, commit) unless --smoke or --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import ceiling
import scaling
import throughput

CONFIG = "sweeps/heterogeneous.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/targets.py"
FULL = {
    "sizes": [2000, 4000, 8000, 16000],
    "replicates": 1024,
    "baseline": 16,
    "n_lanes": 2000,
    "fits": 128,
    "lanes": [1, 16, 64],
    "row_n": 2048,
    "row_lanes": [1, 16, 64, 256],
    "row_repeats": (30, 5.0),
    "compile_sizes": None,
}
QUICK = {
    **FULL,
    "sizes": [2000, 4000],
    "replicates": 128,
    "baseline": 4,
    "row_repeats": (10, 2.0),
}
SMOKE = {
    "sizes": [500, 1000],
    "replicates": 8,
    "baseline": 2,
    "n_lanes": 1000,
    "fits": 8,
    "lanes": [1, 2, 4],
    "row_n": 1024,
    "row_lanes": [1, 4],
    "row_repeats": (3, 0.5),
    "compile_sizes": [500, 1000],
}
CORES_FRACTION = 0.75  # row 5: CPU s / wall s >= this x cores counts as "all cores"


def cold_compile(config: str, tmp: Path, sizes: list[int] | None) -> dict:
    """Row 4: the default sweep with one replicate, fresh compilation cache."""
    cache = tmp / "compile-cache"
    cache.mkdir()
    out = tmp / "compile-run"
    argv = [*C.moejax_argv(), "sweep", config, "--replicates", "1"]
    if sizes:
        argv += ["--sizes", ",".join(map(str, sizes))]
    argv += ["--no-report", "--no-progress", "--force", "--out", str(out)]
    env = dict(os.environ, MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=C.REPO, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    man = json.loads((out / "manifest.json").read_text())
    shown = [a if not a.startswith(str(tmp)) else "<tmp>" for a in argv[len(C.moejax_argv()) :]]
    return {
        "wall": wall,
        "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "compile_s": man["timings"]["compile_s"],
        "compute_s": man["timings"]["compute_s"],
        "programs": len(man["buckets"]),
        "sizes": man["config"]["sizes"]["list"],
        "command": "moejax " + " ".join(shown),
    }


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (PRELIMINARY section)")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes (script check); implies --no-write"
    )
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run/cache dirs")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    if args.smoke:
        args.quick = args.no_write = True
    info = C.RunInfo(args.quick)
    p = SMOKE if args.smoke else QUICK if args.quick else FULL
    sizes, R = p["sizes"], p["replicates"]
    cores = info.nproc
    G_big = max(p["lanes"])
    G_mid = sorted(p["lanes"])[-2]
    tmp = Path(tempfile.mkdtemp(prefix="moejax-targets-"))
    print(
        f"targets: {args.config}; load average {C.fmt_load(info.load_start)} on {cores} cores; "
        f"tmp {tmp}",
        flush=True,
    )
    t_all = time.perf_counter()
    try:
        # ------------------------------------------------------------ 1 + 5: whole sweep
        print(f"[1/4] moejax sweep, sizes {sizes} x {R} replicates, cold then warm", flush=True)
        cache = tmp / "cache"
        cache.mkdir()
        runs = {}
        for kind in ("cold", "warm"):
            runs[kind] = throughput.run_sweep(args.config, sizes, R, tmp / f"run-{kind}", cache)
            r = runs[kind]
            print(
                f"  {kind}: {r['wall']:.1f} s wall, {r['cpu'] / r['wall']:.2f} cores used "
                f"({r['summary']})",
                flush=True,
            )
        bl = throughput.baseline(args.config, sizes, R, p["baseline"], 0, runs["cold"]["fits"])
        # ------------------------------------------------------------ 2: lanes per call
        print(
            f"[2/4] Engine, {p['fits']} fits at n = {p['n_lanes']}, G = {p['lanes']}, one core",
            flush=True,
        )
        lanes = {}
        for G in p["lanes"]:
            lanes[G] = scaling.run_point(
                args.config, p["n_lanes"], G, p["fits"], one_core=True, repeats=3
            )
            r = lanes[G]
            print(
                f"  G = {G}: compute {r['compute_min_s']:.4f} s (min of {r['warm_runs']}), "
                f"compile {r['compile_s']:.1f} s",
                flush=True,
            )
        # ------------------------------------------------------------ 3: ns per row
        print(f"[3/4] row evaluation, n = {p['row_n']} x lanes {p['row_lanes']}", flush=True)
        reps, budget = p["row_repeats"]
        rows = ceiling.run_rows_point(args.config, p["row_n"], p["row_lanes"], reps, budget)
        elements = 2**18 if args.smoke else ceiling.ELEMENTS
        s_trans = ceiling.seconds_per_transcendental(elements)
        poly = ceiling.dense_rate("poly", True, elements)["rate"]
        fl = ceiling.elementwise_floor(rows, s_trans, poly)
        print(
            "  "
            + ", ".join(f"{k} lanes {v['ns_per_row']:.0f} ns" for k, v in rows["lanes"].items())
            + f"; floor {fl['floor_ns']:.1f} ns",
            flush=True,
        )
        # ------------------------------------------------------------ 4: cold compile
        print("[4/4] cold compile of the default sweep", flush=True)
        cc = cold_compile(args.config, tmp, p["compile_sizes"])
        print(f"  compile {cc['compile_s']:.2f} s, process wall {cc['wall']:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t_all

    # ---------------------------------------------------------------- the table
    cold, warm = runs["cold"], runs["warm"]
    n_fits = cold["n_fits"]
    ratio_cold = (n_fits / cold["wall"]) / bl["fps"]
    ratio_warm = (warm["n_fits"] / warm["wall"]) / bl["fps"]
    t1 = lanes[1]["compute_min_s"]
    sp_big = t1 / lanes[G_big]["compute_min_s"]
    sp_mid = t1 / lanes[G_mid]["compute_min_s"]
    big_rows = str(max(p["row_lanes"]))
    ns = rows["lanes"][big_rows]["ns_per_row"]
    goal_ns = 2 * fl["floor_ns"]
    man = warm["manifest"]
    n_dev = len(man["devices"])
    call_dev = min(b["devices"] for b in man["buckets"])
    cu_cold = cold["cpu"] / cold["wall"]
    cu_warm = warm["cpu"] / warm["wall"]
    all_cores = n_dev == cores and call_dev == cores and cu_warm >= CORES_FRACTION * cores
    size_txt = ",".join(map(str, sizes))
    table_rows = [
        [
            f"whole `moejax sweep` ({size_txt} x {R}) vs per-fit SciPy ({cores}-core credit)",
            "2.2-5.5x",
            "15x",
            "30x",
            f"{ratio_cold:.2f}x cold ({ratio_warm:.2f}x warm)",
            verdict(ratio_cold >= 15),
            verdict(ratio_cold >= 30),
        ],
        [
            f"compute, {G_big} lanes per call vs 1, {p['fits']} fits at n = {p['n_lanes']}",
            "0.76-0.86x",
            "2x",
            "5x",
            f"{sp_big:.2f}x ({G_mid} lanes: {sp_mid:.2f}x)",
            verdict(sp_big >= 2),
            verdict(sp_big >= 5),
        ],
        [
            f"ns per row evaluation, d = 2, K = 3, {big_rows} lanes, one core",
            "430-790",
            "100",
            f"2x floor = {goal_ns:.0f}",
            f"{ns:.0f} (floor {fl['floor_ns']:.1f}, {ns / fl['floor_ns']:.2f}x)",
            verdict(ns <= 100),
            verdict(ns <= goal_ns),
        ],
        [
            "cold compile of the default sweep"
            + (f" (sizes {p['compile_sizes']})" if p["compile_sizes"] else ""),
            "5-7 s",
            "5 s",
            "2 s",
            f"{cc['compile_s']:.2f} s (process {cc['wall']:.1f} s)",
            verdict(cc["compile_s"] <= 5),
            verdict(cc["compile_s"] <= 2),
        ],
        [
            "cores used, default settings",
            "1",
            "all",
            "all",
            f"{cu_warm:.2f} of {cores} warm ({cu_cold:.2f} cold); {n_dev} devices, calls on "
            f"{call_dev}",
            verdict(all_cores),
            verdict(all_cores),
        ],
    ]
    t_main, md_main = C.table(
        ["measure", "before", "floor", "goal", "measured", "floor met", "goal met"], table_rows
    )
    lane_rows = [
        [
            G,
            r["per_call"],
            r["calls"],
            r["compile_s"],
            r["compute_min_s"],
            r["compute_s"],
            t1 / r["compute_min_s"],
            1e9 * r["compute_min_s"] / r["row_evals_executed"],
            f"{r['converged']}/{r['fits']}",
            "yes" if r["same_every_run"] else "NO",
        ]
        for G, r in lanes.items()
    ]
    t_lanes, md_lanes = C.table(
        [
            "G",
            "lanes per call",
            "calls",
            "compile s",
            "compute s (min)",
            "compute s (median)",
            "1-lane time / this",
            "ns/exec row-eval",
            "converged",
            "same runs",
        ],
        lane_rows,
    )
    row_rows = [
        [int(k), v["ns_per_row"], v["ns_per_row"] / fl["floor_ns"]]
        for k, v in rows["lanes"].items()
    ]
    t_rows, md_rows = C.table(["lanes", "ns per row evaluation", "x elementwise floor"], row_rows)
    buckets = "; ".join(
        f"buffer {b['padded_size']} rows: {b['lanes_per_device']} lanes per device x "
        f"{b['devices']} devices per call"
        for b in man["buckets"]
    )
    notes = [
        f"Row 1: `MOEJAX_CACHE_DIR=<fresh dir> moejax "
        f"{' '.join(throughput.sweep_args(args.config, sizes, R, '<tmp>'))}` ({n_fits} fits): "
        f"cold {cold['wall']:.1f} s wall (compile {cold['manifest']['timings']['compile_s']:.1f}"
        f" s, compute {cold['manifest']['timings']['compute_s']:.1f} s), "
        f"{n_fits / cold['wall']:.1f} fits/s; warm {warm['wall']:.1f} s, "
        f"{warm['n_fits'] / warm['wall']:.1f} fits/s. Baseline: {bl['n_baseline']} SciPy "
        f"L-BFGS-B fits ({p['baseline']} per size) of the sweep's own datasets and starts, "
        f"{bl['cpu_full']:.1f} CPU s extrapolated to {bl['n_total']} fits, credited with "
        f"{bl['cores']} cores: {bl['fps']:.1f} fits/s. Regeneration check: `fit` on those "
        f"datasets reproduces fits.csv to {bl['regen_rel_max']:.1e} (relative loglik), n_iter "
        f"equal in {bl['regen_iter_equal']}/{bl['n_baseline']}. Converged: moejax "
        f"{cold['converged']}/{n_fits}, SciPy {bl['success']}/{bl['n_baseline']}. Plan: "
        f"{buckets}.",
        f"Row 2: `Engine` with run.lanes = G, one device, pinned to one core, replicates "
        f"0..{p['fits'] - 1} at n = {p['n_lanes']}; compute s = `Engine.compute_s` of a warm "
        "`run` after a first one (min and median of 3); each G in its own process (cold "
        "compile, no persistent cache).",
        "Row 3: `jax.vmap` over L lanes of `objective(spec, data, Blocks(B_L, n / B_L))"
        ".value_grad_hess(theta)` with the engine's compute block B_L of L lanes ("
        + ", ".join(f"{k} lanes: {v['block']} rows" for k, v in rows["lanes"].items())
        + f"), {p['row_n']} rows per lane, "
        f"one core, min over calls. Elementwise floor = {rows['trans_per_row']:.2f} "
        f"transcendentals per row (XLA cost analysis of one unblocked pass / n) x "
        f"{1e9 * s_trans:.2f} ns per float64 transcendental on one core = "
        f"{fl['floor_ns']:.1f} ns; with the row's {rows['flops_per_row']:.0f} XLA flops at the "
        f"one-core elementwise rate ({poly:.1f} GFLOP/s) {fl['floor_flops_ns']:.1f} ns (an "
        "estimate, see ceiling.py).",
        f"Row 4: `MOEJAX_CACHE_DIR=<fresh empty dir> {cc['command']}`: compile "
        f"{cc['compile_s']:.2f} s ({cc['programs']} program(s) for {len(cc['sizes'])} sizes), "
        f"compute {cc['compute_s']:.1f} s, whole process {cc['wall']:.1f} s wall.",
        f"Row 5: CPU s / wall s of the whole row-1 command: cold {cold['cpu']:.1f} / "
        f"{cold['wall']:.1f} = {cu_cold:.2f}, warm {warm['cpu']:.1f} / {warm['wall']:.1f} = "
        f"{cu_warm:.2f} on {cores} cores; JAX devices {', '.join(man['devices'])}; 'all' = one "
        f"device per core, calls on all of them, and warm CPU/wall >= {CORES_FRACTION} x cores.",
        f"Elapsed {elapsed:.0f} s for the measurements.",
    ]
    print()
    print(t_main)
    print()
    print(t_lanes)
    print()
    print(t_rows)
    print()
    print("\n".join(notes))
    if args.no_write:
        return
    lines = info.header_lines("targets.py", FULL_COMMAND, ", ".join(man["devices"]))
    lines += ["", *md_main, "", *(f"- {s}" for s in notes), "", "Row 2, every G:", "", *md_lanes]
    lines += ["", "Row 3, every lane count:", "", *md_rows]
    path = C.write_section("targets.py", lines)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

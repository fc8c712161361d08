"""Whole-command throughput of `moejax sweep` against the per-fit SciPy peer-code baseline.

    python benchmarks/throughput.py            # full: sizes 2000,4000,8000,16000 x 1024 replicates
    python benchmarks/throughput.py --quick    # sizes 2000,4000 x 64 (~1-2 min)
    python benchmarks/throughput.py --smoke    # sizes 500,1000 x 4 (script check; does not
                                               # write RESULTS.md)

moejax side: the `moejax sweep` command as a separate process on sweeps/heterogeneous.toml
(`--sizes ... --replicates ... --no-report --no-progress --force --out <tmp>`), with its
default settings (one JAX host device per core, run.lanes automatic), wall time measured
around the subprocess (interpreter start-up, JAX import, compilation, data generation, fits,
Hellinger errors and writing fits.csv included), CPU time = the child's user + sys time
(``resource.getrusage(RUSAGE_CHILDREN)``). It runs twice with the same MOEJAX_CACHE_DIR: first
with a fresh, empty cache dir (cold compile), then again into a new output directory (warm:
compiled programs come from the persistent cache).

Baseline: `benchmarks/baseline_scipy.py` (NumPy likelihood with analytic gradient, SciPy
L-BFGS-B on the same box, one dataset per fit, a spawn process pool), on a small subsample of
the sweep's own (n, replicate) datasets regenerated exactly as the engine draws them
(`regenerate`: ``moejax.mix.sample(lane_keys(seed, n, r).data, spec, truth.at(n), n)``),
started from the sweep's own near-truth points (``init_near_truth(lane_keys(...).init, ...)``).
It is credited with perfect parallelism over os.cpu_count() cores: fits/s = fits / (sum of
per-fit CPU seconds / cores), with the per-size mean CPU seconds per fit extrapolated to the
full sizes x replicates composition. Data generation is not charged to the baseline.

The baseline is the paper's model only (one adapter, softmax gate, categorical experts): the
config must describe that member of the family.

Same optimum: the estimator ``moejax.estimation.estimators.fit`` (same start and settings as
the sweep, rows all at once instead of the engine's blocks) must reproduce the sweep's
fits.csv log-likelihood on the regenerated datasets (this checks the regeneration), and SciPy
from the truth (polished with Newton steps, the tests' tight reference) must land on the same
maximiser.

Also reported: the work the compiled sweep actually executes relative to the useful work
(rounding of n up to whole row blocks, padding of each chunk's last call to the full G x
devices lanes, and the vmapped while-loop's lockstep: every lane of a call runs as many
objective evaluations as the slowest lane of the call), from the engine's plan
(`_common.call_plan`).

Changed with the engine rewrite (issue 13): the full default is 1024 replicates (the issue's
measure); the work accounting follows the new plan (fixed G lanes per device per call, calls
sharded over the host devices) instead of the removed ``auto_chunk``.
"""

from __future__ import annotations

import argparse
import csv
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
import baseline_scipy

CONFIG = "sweeps/heterogeneous.toml"
FULL = {"sizes": [2000, 4000, 8000, 16000], "replicates": 1024, "baseline": 16, "check": 2}
QUICK = {"sizes": [2000, 4000], "replicates": 64, "baseline": 4, "check": 1}
SMOKE = {"sizes": [500, 1000], "replicates": 4, "baseline": 2, "check": 1}
FULL_COMMAND = ".venv/bin/python benchmarks/throughput.py"


def sweep_args(config: str, sizes: list[int], R: int, out: str) -> list[str]:
    return [
        "sweep",
        config,
        "--sizes",
        ",".join(map(str, sizes)),
        "--replicates",
        str(R),
        "--no-report",
        "--no-progress",
        "--force",
        "--out",
        out,
    ]


def read_fits(path: Path) -> dict[str, list]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list] = {k: [] for k in rows[0]}
    for row in rows:
        for k, v in row.items():
            out[k].append(v)
    return out


def run_sweep(
    config, sizes, R, out: Path, cache: Path, extra_args=(), extra_env=None, timeout=3600
) -> dict:
    argv = C.moejax_argv() + sweep_args(config, sizes, R, str(out)) + list(extra_args)
    env = dict(os.environ, MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1")
    env.update(extra_env or {})
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=C.REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    man = json.loads((out / "manifest.json").read_text())
    fits = read_fits(out / "fits.csv")
    n_fits = len(fits["n"])
    conv = sum(int(v) for v in fits["converged"])
    return {
        "wall": wall,
        "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "peak_rss_mib": r1.ru_maxrss / 1024,
        "manifest": man,
        "fits": fits,
        "n_fits": n_fits,
        "converged": conv,
        "summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
    }


def work_accounting(cfg: dict, fits: dict, n_devices: int) -> dict:
    """Row-evaluations the compiled sweep executes vs the useful ones (see module docstring),
    over the calls of `_common.call_plan` (``n_devices`` devices). Evaluations per lane are
    n_iter + 1 (accepted Newton steps plus the first evaluation; line search backtracks are not
    reported per lane, so this is a lower bound). The lanes of a call, sharded over devices,
    run in lockstep: the vmapped while-loop's condition is reduced over all of them."""
    evals = {
        (int(n), int(r)): int(it) + 1
        for n, r, it in zip(fits["n"], fits["replicate"], fits["n_iter"], strict=True)
    }
    w_real = w_sizepad = w_tail = w_exec = 0
    lanes_real = lanes_exec = 0
    per_size: dict[int, dict] = {}
    for real, P, rows in C.call_plan(cfg, n_devices):
        padded = real + [real[-1]] * (P - len(real))
        e = [evals[q] for q in padded]
        w_real += sum(n * evals[(n, r)] for n, r in real)
        w_sizepad += sum(rows * evals[q] for q in real)
        w_tail += rows * sum(e)
        w_exec += P * rows * max(e)
        lanes_real += len(real)
        lanes_exec += P
        n = real[0][0]
        s = per_size.setdefault(
            n, {"rows": rows, "P": P, "calls": 0, "real": 0, "max": 0, "sum": 0, "exec": 0}
        )
        s["calls"] += 1
        s["real"] += len(real)
        s["max"] = max(s["max"], max(e))
        s["sum"] += sum(e[: len(real)])
        s["exec"] += max(e)
    sizes = [
        (
            n,
            s["rows"],
            s["P"],
            s["calls"],
            s["real"],
            s["max"],
            s["exec"] / s["calls"],
            s["sum"] / s["real"],
        )
        for n, s in sorted(per_size.items())
    ]
    return {
        "size_padding": w_sizepad / w_real,
        "tail_padding": w_tail / w_sizepad,
        "lockstep": w_exec / w_tail,
        "total": w_exec / w_real,
        "lanes_real": lanes_real,
        "lanes_exec": lanes_exec,
        "sizes": sizes,
    }


def regenerate(cfg: dict, problem, pairs):
    """(X, y, start, truth) per (n, r), exactly as the engine draws them: the lane's keys
    ``lane_keys(seed, n, r)`` (folded from (seed, n, r) alone), the data ``moejax.mix.sample``
    of the data key (the engine's DATA_BLOCK-row keyed blocks), the start ``init_near_truth``
    of the init key (or the truth). Starts and truths are MixParams (one adapter)."""
    import jax.numpy as jnp
    import numpy as np

    from moejax.estimation.bounds import pack
    from moejax.estimation.init import init_near_truth
    from moejax.mix.sampling import sample
    from moejax.sweep.simulate import lane_keys

    ini = cfg["init"]
    spec = problem.spec
    if ini["mode"] not in ("near_truth", "truth"):
        raise SystemExit(f"init.mode {ini['mode']!r}: this benchmark handles near_truth/truth")
    out = []
    for n, r in pairs:
        keys = lane_keys(jnp.uint32(cfg["seed"]), jnp.int32(n), jnp.int32(r))
        tp = problem.truth.at(n)
        X, y = sample(keys.data, spec, tp, n, cfg["model"]["radius"])
        if ini["mode"] == "truth":
            init = tp
        else:
            init = init_near_truth(
                keys.init, spec, tp, jnp.int32(n), ini["c_gate"], ini["c_expert"], ini["rho"]
            )
        out.append((np.asarray(X), np.asarray(y), init, np.asarray(pack(spec, tp))))
    return out


def ref_model(cfg: dict):
    import numpy as np
    from reference_numpy import RefModel

    m = cfg["model"]
    if (m["adapters"], m["gate"], m["likelihood"]) != (1, "softmax", "categorical"):
        raise SystemExit(
            "throughput: the SciPy baseline fits the paper's model only (adapters = 1, gate "
            f"softmax, categorical); got {m['adapters']} adapters, gate {m['gate']}, "
            f"likelihood {m['likelihood']}"
        )
    model = RefModel(
        m["d"],
        m["K"],
        np.asarray(m["eta0"]),
        act=m["adapter"],
        act0=m["frozen"],
        scale=m["scale"],
        scale0=m["frozen_scale"],
        bias=m["bias"],
        bias0=m["frozen_bias"],
    )
    b = cfg["bounds"]
    d, K = m["d"], m["K"]
    box = [tuple(b["beta"])] * d + [tuple(b["tau"])] + [tuple(b["eta"])] * ((K - 1) * d)
    return model, box


def baseline(config: str, sizes: list[int], R: int, nb: int, nc: int, fits: dict) -> dict:
    """The SciPy baseline on nb replicates per size (r = 0..nb-1) of the sweep's own datasets,
    extrapolated to R x len(sizes) fits on os.cpu_count() cores with perfect parallelism, and
    the same-optimum checks against ``fits`` (a fits.csv read by `read_fits`): `fit` on the
    regenerated data, and polished SciPy from the truth on nc replicates per size."""
    import numpy as np

    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import fit
    from moejax.sweep.config import load
    from moejax.sweep.simulate import build_problem

    cores = os.cpu_count() or 1
    cfg = load(config, {"sizes.list": sizes, "replicates": R})
    problem = build_problem(cfg)
    model, box = ref_model(cfg)
    e = cfg["estimator"]
    pairs = [(n, r) for n in sizes for r in range(nb)]
    print(f"  regenerating {len(pairs)} datasets and fitting them one by one", flush=True)
    data = regenerate(cfg, problem, pairs)
    mj_fit = []
    for X, y, init, _ in data:
        res = fit(
            problem.spec,
            X,
            y,
            init,
            method=e["method"],
            solver=e["solver"],
            bounds=problem.bounds,
            max_iter=e["max_iter"],
            tol=e["tol"],
            inner_max_iter=e["inner_max_iter"],
        )
        theta = np.asarray(pack(problem.spec, res.params))
        mj_fit.append((theta, float(res.loglik), int(res.n_iter)))
    csv_ll = {
        (int(n), int(r)): (float(ll), int(it))
        for n, r, ll, it in zip(
            fits["n"], fits["replicate"], fits["loglik"], fits["n_iter"], strict=True
        )
    }
    regen_rel = [
        abs(f[1] - csv_ll[q][0]) / abs(csv_ll[q][0]) for q, f in zip(pairs, mj_fit, strict=True)
    ]
    regen_iter = sum(f[2] == csv_ll[q][1] for q, f in zip(pairs, mj_fit, strict=True))

    print(f"  baseline: {len(pairs)} SciPy fits on {cores} processes", flush=True)
    bl, bl_wall, _ = baseline_scipy.run_pool(
        [(X, y) for X, y, _, _ in data],
        [np.asarray(pack(problem.spec, init)) for _, _, init, _ in data],
        model,
        box,
        cores,
    )
    chk_idx = [i for i, (n, r) in enumerate(pairs) if r < nc]
    chk = []
    if chk_idx:
        print(f"  same optimum: {len(chk_idx)} polished SciPy fits from the truth", flush=True)
        chk, _, _ = baseline_scipy.run_pool(
            [data[i][:2] for i in chk_idx],
            [data[i][3] for i in chk_idx],
            model,
            box,
            cores,
            fit_kwargs={"polish": True},
        )
    n_total = R * len(sizes)
    per_size = []
    cpu_full = 0.0
    for n in sizes:
        idx = [i for i, q in enumerate(pairs) if q[0] == n]
        cpus = np.array([bl[i]["cpu_s"] for i in idx])
        cpu_full += R * cpus.mean()
        mj_n = [i for i, v in enumerate(fits["n"]) if int(v) == n]
        per_size.append(
            [
                n,
                len(idx),
                float(cpus.mean()),
                float(np.median([bl[i]["nit"] for i in idx])),
                f"{sum(bl[i]['success'] for i in idx)}/{len(idx)}",
                float(np.mean([int(fits["n_iter"][i]) for i in mj_n])),
                f"{sum(int(fits['converged'][i]) for i in mj_n)}/{len(mj_n)}",
            ]
        )
    chk_rows = []
    for j, i in enumerate(chk_idx):
        n, r = pairs[i]
        ll_csv = csv_ll[(n, r)][0]
        chk_rows.append(
            [
                n,
                r,
                ll_csv,
                float(abs(mj_fit[i][1] - ll_csv) / abs(ll_csv)),
                chk[j]["loglik"],
                float((ll_csv - chk[j]["loglik"]) / abs(chk[j]["loglik"])),
                float(np.max(np.abs(mj_fit[i][0] - chk[j]["theta"]))),
                float(chk[j]["grad_norm"]),
            ]
        )
    return {
        "cfg": cfg,
        "cores": cores,
        "pairs": pairs,
        "n_total": n_total,
        "cpu_full": cpu_full,
        "fps": n_total / (cpu_full / cores),
        "wall_subsample": bl_wall,
        "success": sum(r["success"] for r in bl),
        "n_baseline": len(bl),
        "per_size": per_size,
        "regen_rel_max": max(regen_rel),
        "regen_iter_equal": regen_iter,
        "d_theta": max(
            float(np.max(np.abs(bl[i]["theta"] - mj_fit[i][0]))) for i in range(len(bl))
        ),
        "d_ll": max(
            abs(mj_fit[i][1] - bl[i]["loglik"]) / abs(bl[i]["loglik"]) for i in range(len(bl))
        ),
        "chk_rows": chk_rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small version (sizes 2000,4000 x 64)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="script check: sizes 500,1000 x 4, 2 SciPy fits per size; implies --no-write",
    )
    ap.add_argument("--sizes", help="comma-separated sizes (default 2000,4000,8000,16000)")
    ap.add_argument("--replicates", type=int, help="moejax replicates per size (default 1024)")
    ap.add_argument("--baseline-reps", type=int, help="SciPy fits per size (default 16)")
    ap.add_argument("--check-reps", type=int, help="same-optimum datasets per size (default 2)")
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument(
        "--host-devices",
        type=int,
        default=0,
        help="also run the sweep (cold and warm, own cache) with MOEJAX_HOST_DEVICES=N "
        "(N JAX host devices instead of one per core)",
    )
    ap.add_argument(
        "--also-chunk",
        type=int,
        default=0,
        help="also run the sweep (cold and warm, own cache) with --chunk C (lanes per part)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary run/cache dirs")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    if args.smoke:
        args.quick = args.no_write = True
    info = C.RunInfo(args.quick)
    p = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    if args.sizes:
        p["sizes"] = [int(s) for s in args.sizes.split(",")]
    for k, a in (
        ("replicates", "replicates"),
        ("baseline", "baseline_reps"),
        ("check", "check_reps"),
    ):
        if getattr(args, a):
            p[k] = getattr(args, a)
    sizes, R = p["sizes"], p["replicates"]
    nb, nc = min(p["baseline"], R), min(p["check"], p["baseline"], R)
    tmp = Path(tempfile.mkdtemp(prefix="moejax-throughput-"))
    print(f"throughput: {args.config}, sizes {sizes} x {R} replicates; tmp {tmp}", flush=True)
    print(f"load average at start {C.fmt_load(info.load_start)} on {info.nproc} cores", flush=True)

    # ---------------------------------------------------------------- moejax, cold then warm
    runs = {}
    try:
        variants = [("", [], {})]
        if args.also_chunk:
            variants.append(
                (f" (--chunk {args.also_chunk})", ["--chunk", str(args.also_chunk)], {})
            )
        if args.host_devices:
            env = {"MOEJAX_HOST_DEVICES": str(args.host_devices)}
            variants.append((f" ({args.host_devices} host devices)", [], env))
        for v, (suffix, extra, env) in enumerate(variants):
            cache = tmp / f"cache-{v}"
            cache.mkdir()
            for kind in ("cold", "warm"):
                label = kind + suffix
                runs[label] = run_sweep(
                    args.config, sizes, R, tmp / f"run-{kind}-{v}", cache, extra, env
                )
                print(
                    f"  {label}: {runs[label]['wall']:.1f} s  ({runs[label]['summary']})",
                    flush=True,
                )
        fits = runs["cold"]["fits"]
        bl = baseline(args.config, sizes, R, nb, nc, fits)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---------------------------------------------------------------- numbers
    cfg, cores = bl["cfg"], bl["cores"]
    n_total, cpu_full, bl_fps = bl["n_total"], bl["cpu_full"], bl["fps"]
    mj_rows = []
    for label, run in runs.items():
        t = run["manifest"]["timings"]
        fps = run["n_fits"] / run["wall"]
        mj_rows.append(
            [
                label,
                run["wall"],
                t["compile_s"],
                t["compute_s"],
                run["cpu"],
                run["cpu"] / run["wall"],
                len(run["manifest"]["devices"]),
                fps,
                run["n_fits"] / run["cpu"],
                fps / bl_fps,
                f"{run['converged']}/{run['n_fits']}",
            ]
        )
    mj_rows.append(
        [
            "baseline (ideal)",
            cpu_full / cores,
            "-",
            "-",
            cpu_full,
            float(cores),
            "-",
            bl_fps,
            n_total / cpu_full,
            1.0,
            f"{bl['success']}/{bl['n_baseline']} (subsample)",
        ]
    )
    head = [
        "run",
        "wall s",
        "compile s",
        "compute s",
        "CPU s",
        "cores used",
        "devices",
        "fits/s",
        "fits/CPU-s",
        "vs baseline",
        "converged",
    ]
    t_main, md_main = C.table(head, mj_rows)
    t_size, md_size = C.table(
        [
            "n",
            "SciPy fits",
            "SciPy CPU s/fit",
            "SciPy nit (median)",
            "SciPy success",
            "moejax n_iter (mean)",
            "moejax converged",
        ],
        bl["per_size"],
    )
    t_chk, md_chk = C.table(
        [
            "n",
            "r",
            "loglik (fits.csv)",
            "|fit - csv| rel",
            "loglik SciPy@truth",
            "(csv - SciPy)/|SciPy|",
            "max |theta diff|",
            "SciPy grad",
        ],
        bl["chk_rows"],
    )
    man = runs["cold"]["manifest"]
    n_dev = len(man["devices"])
    wa = work_accounting(cfg, fits, n_dev)
    t_work, md_work = C.table(
        [
            "size padding",
            "last-call padding",
            "while-loop lockstep",
            "executed / useful",
            "lanes executed / real",
        ],
        [
            [
                wa["size_padding"],
                wa["tail_padding"],
                wa["lockstep"],
                wa["total"],
                f"{wa['lanes_exec']}/{wa['lanes_real']}",
            ]
        ],
    )
    t_sizes, md_sizes = C.table(
        [
            "n",
            "rows per lane",
            "lanes per call",
            "calls",
            "real lanes",
            "max evals",
            "mean of call max evals",
            "mean evals",
        ],
        [list(c) for c in wa["sizes"]],
    )
    buckets = "; ".join(
        f"buffer {b['padded_size']} rows for n = {b['sizes']}: {b['lanes_per_device']} lanes per "
        f"device x {b['devices']} devices per call, {b['chunk']} lanes per part"
        f"{', streamed' if b['streamed'] else ''}"
        for b in man["buckets"]
    )
    ratio_warm = mj_rows[1][7] / bl_fps
    cmd = " ".join(sweep_args(args.config, sizes, R, "<tmp>"))
    notes = [
        f"Config `{args.config}`: {C.describe_config(cfg)}.",
        f"moejax: `MOEJAX_CACHE_DIR=<fresh dir> moejax {cmd}` ({n_total} fits), wall time "
        "around the whole process; cold = fresh empty cache dir, warm = second run with the same "
        "cache dir (new --out). `compile s` and `compute s` are the manifest's timings; `CPU s` "
        "is the child's user+sys time, `cores used` = CPU s / wall s; `devices` = the JAX "
        f"devices of the run (manifest). Plan: {buckets}.",
        f"Baseline: `baseline_scipy.run_pool` (L-BFGS-B on the config's box, gtol 1e-10, no "
        f"polish, BLAS 1 thread) on {nb} replicates per size = {len(bl['pairs'])} fits (r = "
        f"0..{nb - 1} of each n: the sweep's own datasets, regenerated, started from the sweep's "
        "own near-truth points), per-size mean CPU s/fit extrapolated to "
        f"{R} x {len(sizes)} fits and credited with perfect parallelism over os.cpu_count() = "
        f"{cores} cores: fits/s = {n_total} / ({cpu_full:.2f} CPU s / {cores}). Measured pool "
        f"wall for the subsample: {bl['wall_subsample']:.2f} s "
        f"({len(bl['pairs']) / bl['wall_subsample']:.1f} fits/s incl. process spawn). Data "
        "generation is not charged to the baseline.",
        f"Ratio moejax / baseline fits/s: cold {mj_rows[0][7] / bl_fps:.2f}x, warm "
        f"{ratio_warm:.2f}x; per CPU-second (less sensitive to other load on the machine): warm "
        f"{mj_rows[1][8] / (n_total / cpu_full):.2f}x.",
        f"Converged: moejax {runs['cold']['converged']}/{runs['cold']['n_fits']} (fits.csv "
        f"`converged`); baseline {bl['success']}/{bl['n_baseline']} (`success`: projected "
        "gradient of the mean log-likelihood < 1e-6).",
    ]
    same = [
        f"Regeneration check: `fit` on the regenerated {len(bl['pairs'])} datasets (same start "
        "and settings as the sweep, rows all at once) reproduces fits.csv: max relative loglik "
        f"difference {bl['regen_rel_max']:.2e}, n_iter equal in "
        f"{bl['regen_iter_equal']}/{len(bl['pairs'])}.",
        f"Baseline fits vs `fit` on the same {len(bl['pairs'])} datasets and starts: max |theta "
        f"difference| {bl['d_theta']:.2e}, max relative loglik difference {bl['d_ll']:.2e}.",
        f"SciPy from the truth (polished: L-BFGS-B then Newton steps on a finite-difference "
        f"Hessian) on {len(bl['chk_rows'])} datasets vs the sweep (fits.csv loglik) and `fit` "
        "(estimate):",
    ]
    work = [
        "Executed vs useful work in the cold run, in row-evaluations (rows x objective "
        "evaluations; evaluations per lane = n_iter + 1, backtracks not counted): size padding = "
        "rows a lane works on (n rounded up to whole compute blocks) / n; last-call padding = "
        "a chunk's last call is filled to G x devices lanes with copies of its last lane; "
        "lockstep = every lane of a call runs as many evaluations as the call's slowest lane "
        f"(vmapped while_loop, {n_dev} device(s)).",
    ]

    print()
    print(t_main)
    print()
    print("\n".join(notes))
    print()
    print(t_size)
    print()
    print("\n".join(same))
    print(t_chk)
    print()
    print(work[0])
    print(t_work)
    print(t_sizes)

    if args.no_write:
        return
    lines = info.header_lines("throughput.py", FULL_COMMAND, ", ".join(man["devices"]))
    lines += ["", *md_main, "", *(f"- {s}" for s in notes), "", "Per size:", "", *md_size, ""]
    lines += [f"- {s}" for s in same] + ["", *md_chk, "", work[0], "", *md_work, "", *md_sizes]
    lines += ["", f"Peak RSS of the sweep processes: {runs['cold']['peak_rss_mib']:.0f} MiB."]
    path = C.write_section("throughput.py", lines)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

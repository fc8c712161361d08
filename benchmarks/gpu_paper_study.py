"""The paper-sized study on one GPU, timed as one command, beside the time its arithmetic and
memory traffic need.

    python benchmarks/gpu_paper_study.py                  # on a GPU machine: 800 000 fits
    python benchmarks/gpu_paper_study.py --estimate-only  # the estimate alone (any machine)
    python benchmarks/gpu_paper_study.py --smoke          # tiny, any device, writes nothing

The study (issue 13): the papers' grid, 20 log-spaced n in [1e3, 1e5] at d = 8
(`sweeps/gpu/paper-d8.toml`: the heterogeneous design of sweeps/heterogeneous.toml at d = 8,
K = 3), with 1000x the papers' 40 replicates: 40 000 replicates x 20 sizes = 800 000 fits, run
as one command

    MOEJAX_CACHE_DIR=<fresh dir> moejax sweep <config with run.memory_gb set> \\
        --replicates 40000 --no-progress --no-report --force --out <dir>

in a subprocess, wall time around it (interpreter start, JAX/CUDA initialisation, compilation,
all fits, writing fits.csv): first with an empty compilation cache (cold), then again with the
same cache (warm) unless --cold-only. run.memory_gb is set to 70% of the first device's memory
(the budget of one device's call: it decides the lanes per call, up to the GPU default 2048).
Target: under 60 s on one H100, and within 10x of the time the work needs.

The time the work needs, written down (`estimate`): the work per fit is assembled from
loop-free pieces whose flops, transcendentals and bytes accessed come from XLA's cost analysis
on the machine running this script (on a GPU: the GPU's own counts):

- one pass of the fused objective (value, gradient, Hessian) per row, times the rows and the
  passes each fit makes (n_iter + 1 evaluations; from the GPU run's fits.csv, or, for
  --estimate-only, from a small CPU simulation of the same design);
- drawing a lane's data (one block of B rows, per row, times n);
- the density error (run.density_points points, once per fit).

A piece needs max(flops / peak flop rate, bytes / memory bandwidth); float64 transcendentals
(exp, log, tanh: software on a GPU) are charged TRANSCENDENTAL_FLOPS flops each. Peak rates per
device model (float64 non-tensor FLOP/s and HBM bandwidth) are the vendor's data-sheet numbers
in PEAKS. The estimate counts the useful work (no padding, no lockstep); the GPU run's work
accounting (lanes of a call run as long as the slowest) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CONFIG = "sweeps/gpu/paper-d8.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/gpu_paper_study.py"
FULL = {"replicates": 40_000, "sizes": None, "sample": 16}
QUICK = {"replicates": 64, "sizes": [1000, 4000, 16000], "sample": 4}
SMOKE = {"replicates": 8, "sizes": [1000, 2000], "sample": 2}
TARGET_S = 60.0
TARGET_RATIO = 10.0
#: Flops charged per float64 transcendental (no float64 special-function units on a GPU:
#: exp / log / tanh are ~20-40 double-precision instructions in CUDA's libdevice).
TRANSCENDENTAL_FLOPS = 30.0
#: float64 (non-tensor-core) FLOP/s and memory bandwidth (bytes/s) by device kind (data
#: sheets); matched by substring of `device.device_kind`, first match wins.
PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 34e12, 4.8e12),
    ("H100 PCIe", 26e12, 2.0e12),
    ("H100 NVL", 30e12, 3.9e12),
    ("H100", 34e12, 3.35e12),
    ("A100", 9.7e12, 2.0e12),
    ("L40", 1.4e12, 0.86e12),
)
#: Used for --estimate-only on a machine without a GPU: the target's device.
DEFAULT_PEAK = ("H100 (SXM, data sheet; assumed)", 34e12, 3.35e12)

_DEVICES = (
    "import json, jax; d = jax.devices()[0]; m = d.memory_stats() or {}; "
    "print(json.dumps({'backend': jax.default_backend(), "
    "'devices': [f'{x} ({x.device_kind})' for x in jax.devices()], 'kind': d.device_kind, "
    "'bytes_limit': int(m.get('bytes_limit', 0))}))"
)


def peak_for(kind: str) -> tuple[str, float, float]:
    for key, flops, bw in PEAKS:
        if key.lower() in kind.lower():
            return kind, flops, bw
    return DEFAULT_PEAK


def _cost(compiled) -> tuple[float, float, float]:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, list | tuple) else ca
    return (
        float(ca.get("flops", 0.0)),
        float(ca.get("transcendentals", 0.0)),
        float(ca.get("bytes accessed", 0.0)),
    )


def pieces(cfg: dict, n_rows: int = 4096) -> dict:
    """Per-row cost of one objective pass and of the data draw, and per-fit cost of the density
    error, each (flops, transcendentals, bytes), from XLA's cost analysis on this backend."""
    import jax
    import jax.numpy as jnp

    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.mix import sample
    from moejax.mix.sampling import sample_covariates
    from moejax.sweep.simulate import (
        DATA_BLOCK,
        build_problem,
        choose_block,
        density_error,
        draw_block,
    )

    problem = build_problem(cfg)
    spec, r = problem.spec, cfg["run"]
    tp = problem.truth.at(float(n_rows))
    X, y = sample(jax.random.key(1), spec, tp, n_rows)
    data = prepare_data(spec, X, y)
    theta = pack(spec, tp)
    vgh = jax.jit(lambda dt, th: objective(spec, dt).value_grad_hess(th))
    p = _cost(vgh.lower(data, theta).compile())
    B = max(DATA_BLOCK, choose_block(cfg["sizes"]["list"], r["block_rows"], r["max_padding"]))
    draw = jax.jit(lambda k, b, t: draw_block(spec, t, k, jnp.int32(10**6), b, B, None))
    f = _cost(draw.lower(jax.random.key(2), jnp.int32(0), tp).compile())
    m = r["density_points"]
    dens = jax.jit(lambda k, t: density_error(spec, t, t, sample_covariates(k, spec.d, m, None)))
    h = _cost(dens.lower(jax.random.key(3), tp).compile()) if m > 0 else (0.0, 0.0, 0.0)
    return {
        "pass_row": [v / n_rows for v in p],
        "fill_row": [v / B for v in f],
        "density_fit": list(h),
        "P": spec.n_params,
        "block": B,
    }


def needed_seconds(cost: list[float], flops_s: float, bytes_s: float) -> tuple[float, float]:
    """(arithmetic seconds, memory seconds) of (flops, transcendentals, bytes)."""
    fl, tr, nb = cost
    return (fl + TRANSCENDENTAL_FLOPS * tr) / flops_s, nb / bytes_s


def estimate(pc: dict, evals: dict[int, float], R: int, peak: tuple[str, float, float]) -> dict:
    """The time the study's useful work needs at ``peak``: rows x evaluations of the pass,
    rows of the data draw, one density error per fit; each piece max(arithmetic, memory)."""
    _, fs, bs = peak
    rows_evals = sum(R * n * e for n, e in evals.items())
    rows = sum(R * n for n in evals)
    fits = R * len(evals)
    parts = {
        "passes": [rows_evals * v for v in pc["pass_row"]],
        "data draw": [rows * v for v in pc["fill_row"]],
        "density error": [fits * v for v in pc["density_fit"]],
    }
    out = {}
    for name, cost in parts.items():
        a, m = needed_seconds(cost, fs, bs)
        out[name] = {"flops": cost[0], "trans": cost[1], "bytes": cost[2], "arith_s": a, "mem_s": m}
    out["total_s"] = sum(max(v["arith_s"], v["mem_s"]) for v in out.values())
    out["rows_evals"] = rows_evals
    out["fits"] = fits
    return out


def sample_evals(config: str, sizes: list[int], reps: int) -> dict[int, float]:
    """Mean evaluations per fit (n_iter + 1) per size, from `moejax.simulate` of ``reps``
    replicates (this machine)."""
    import moejax as mj

    fits = mj.simulate(config, sizes=sizes, replicates=reps, progress=False)
    return {
        int(n): float(e) for n, e in zip(fits["n"][:, 0], (fits["n_iter"] + 1).mean(1), strict=True)
    }


def evals_of_run(fits_csv: Path) -> tuple[dict[int, float], int]:
    import numpy as np

    from moejax.report.table import read_fits_csv

    f = read_fits_csv(fits_csv)
    out = {int(n): float(np.mean(f["n_iter"][f["n"] == n] + 1)) for n in np.unique(f["n"])}
    return out, len(f["n"])


def lockstep(fits_csv: Path, per_call: int) -> float:
    """Executed / useful evaluations: every lane of a call (``per_call`` consecutive
    replicates of one n) runs as many evaluations as the call's slowest lane."""
    import numpy as np

    from moejax.report.table import read_fits_csv

    f = read_fits_csv(fits_csv)
    done = useful = 0.0
    for n in np.unique(f["n"]):
        sel = f["n"] == n
        ev = (f["n_iter"][sel] + 1)[np.argsort(f["replicate"][sel])]
        pad = -len(ev) % per_call
        ev = np.concatenate([ev, np.repeat(ev[-1:], pad)]).reshape(-1, per_call)
        done += float(ev.max(1).sum() * per_call)
        useful += float(ev.sum())
    return done / useful


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 sizes x 64 replicates")
    ap.add_argument("--smoke", action="store_true", help="tiny, any device, writes nothing")
    ap.add_argument("--estimate-only", action="store_true", help="the estimate, no GPU run")
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm (cached) run")
    ap.add_argument("--memory-gb", type=float, help="run.memory_gb (default: 70%% of the GPU's)")
    ap.add_argument("--allow-cpu", action="store_true", help="run the study without a GPU")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    if args.smoke:
        args.allow_cpu = args.no_write = True
    p = SMOKE if args.smoke else QUICK if args.quick else FULL
    info = C.RunInfo(args.quick or args.smoke)

    from moejax.sweep.config import load

    cfg0 = load(C.REPO / args.config)
    sizes = p["sizes"] or cfg0["sizes"]["list"]
    R = p["replicates"]
    dev = C.run_json_subprocess([sys.executable, "-c", _DEVICES], timeout=600)
    gpu = dev["backend"] == "gpu"
    print(f"backend {dev['backend']}; devices: {', '.join(dev['devices'])}", flush=True)
    peak = peak_for(dev["kind"]) if gpu else DEFAULT_PEAK
    runs, work = [], None
    if not args.estimate_only:
        if not gpu and not args.allow_cpu:
            sys.exit(
                f"gpu_paper_study: no GPU visible to JAX (backend {dev['backend']!r}); use "
                "--estimate-only for the estimate alone, or --allow-cpu to run anyway"
            )
        mem = args.memory_gb or (0.7 * dev["bytes_limit"] / 2**30 if dev["bytes_limit"] else 2.0)
        runs, work = run_study(args, sizes, R, mem)
    # the estimate: evaluations per fit from the run's fits.csv, or from a small simulation
    if work is not None:
        evals = work["evals"]
        source = f"the run's fits.csv ({work['n_fits']} fits)"
    else:
        print(f"sampling evaluations per fit: {p['sample']} replicates per size", flush=True)
        evals = sample_evals(str(C.REPO / args.config), sizes, p["sample"])
        source = f"`moejax.simulate` of {p['sample']} replicates per size on this machine"
    cfg = load(C.REPO / args.config, {"sizes.list": sizes})
    pc = pieces(cfg)
    est = estimate(pc, evals, R, peak)
    lock = work["lockstep"] if work else None
    print_and_record(args, info, dev, gpu, peak, sizes, R, runs, est, pc, source, lock)


def run_study(args, sizes: list[int], R: int, memory_gb: float):
    tmp = Path(tempfile.mkdtemp(prefix="moejax-paper-"))
    cfg_path = tmp / "study.toml"
    cfg_path.write_text(
        f'extends = "{(C.REPO / args.config).resolve()}"\n[run]\nmemory_gb = {memory_gb:.3f}\n'
        f"[sizes]\nlist = {sizes}\n"
    )
    cmd = ["sweep", str(cfg_path), "--replicates", str(R), "--no-progress", "--no-report"]
    cmd.append("--force")
    runs, work = [], None
    try:
        cache = tmp / "cache"
        cache.mkdir()
        env = dict(os.environ, MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1")
        for kind in ("cold",) if args.cold_only else ("cold", "warm"):
            out = tmp / f"paper-{kind}"
            argv = [*C.moejax_argv(), *cmd, "--out", str(out)]
            print(f"{kind}: {' '.join(argv)}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(argv, cwd=C.REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"moejax sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            man = json.loads((out / "manifest.json").read_text())
            t, c = man["timings"], man["counts"]
            lanes = ", ".join(f"{b['lanes_per_device']} x {b['devices']}" for b in man["buckets"])
            runs.append(
                [
                    kind,
                    wall,
                    t["compile_s"],
                    t["compute_s"],
                    c["n_fits"],
                    c["n_fits"] / wall,
                    f"{c['n_converged']}/{c['n_fits']}",
                    lanes,
                    man["padding_ratio"],
                ]
            )
            print(f"  {kind}: {wall:.1f} s wall ({c['n_fits'] / wall:.0f} fits/s)", flush=True)
            if work is None:
                evals, nf = evals_of_run(out / "fits.csv")
                b0 = man["buckets"][0]
                work = {
                    "evals": evals,
                    "n_fits": nf,
                    "lockstep": lockstep(out / "fits.csv", b0["lanes_per_device"] * b0["devices"]),
                }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return runs, work


def print_and_record(args, info, dev, gpu, peak, sizes, R, runs, est, pc, source, lock) -> None:
    rows = []
    for name in ("passes", "data draw", "density error"):
        v = est[name]
        rows.append(
            [
                name,
                v["flops"],
                v["trans"],
                v["bytes"],
                v["arith_s"],
                v["mem_s"],
                max(v["arith_s"], v["mem_s"]),
            ]
        )
    txt_e, md_e = C.table(
        ["piece", "flops", "transcendentals", "bytes", "arith s", "memory s", "needed s"], rows
    )
    print(txt_e)
    print(f"needed in total: {est['total_s']:.2f} s at {peak[0]}")
    verdict = []
    md_r: list[str] = []
    if runs:
        txt_r, md_r = C.table(
            [
                "run",
                "wall s",
                "compile s",
                "compute s",
                "fits",
                "fits/s",
                "converged",
                "lanes per call (G x devices)",
                "padded/real rows",
            ],
            runs,
        )
        print(txt_r)
        cold = runs[0]
        ratio = cold[3] / est["total_s"]
        verdict = [
            f"- Cold command {cold[1]:.1f} s wall: target under {TARGET_S:.0f} s "
            f"{'met' if cold[1] < TARGET_S else 'NOT met'} (on {dev['devices'][0]}).",
            f"- Compute {cold[3]:.1f} s = {ratio:.1f}x the {est['total_s']:.2f} s the useful work "
            f"needs: target within {TARGET_RATIO:.0f}x "
            f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}.",
            f"- Lockstep: the calls executed {lock:.2f}x the useful evaluations (every lane of "
            "a call runs as long as its slowest).",
        ]
        print("\n".join(verdict))
    if args.no_write:
        return
    lines = info.header_lines("gpu_paper_study.py", FULL_COMMAND, ", ".join(dev["devices"]))
    if not runs:
        lines += [
            "",
            "**ESTIMATE ONLY, NO GPU RUN**: this machine has no GPU, so the study itself is not "
            f"timed here (backend {dev['backend']}); run `{FULL_COMMAND}` on a GPU machine. The "
            "estimate below uses this machine's XLA cost analysis (CPU) and the data-sheet peak "
            f"rates of {peak[0]}.",
        ]
    elif not gpu:
        lines += ["", f"**NOT A GPU RUN** (backend {dev['backend']}): a script check only."]
    lines += [
        "",
        f"Study: `{args.config}` at {len(sizes)} sizes {sizes}, {R} replicates = {R * len(sizes)} "
        "fits.",
        "",
        f"Time the useful work needs at {peak[0]} ({peak[1] / 1e12:.1f} TFLOP/s float64, "
        f"{peak[2] / 1e12:.2f} TB/s; transcendentals at {TRANSCENDENTAL_FLOPS:.0f} flops): "
        f"**{est['total_s']:.2f} s** for {est['fits']} fits and {est['rows_evals']:.3g} row "
        f"evaluations (evaluations per fit from {source}; per row: pass "
        f"{pc['pass_row'][0]:.0f} flops, {pc['pass_row'][1]:.1f} transcendentals, "
        f"{pc['pass_row'][2]:.0f} bytes; data draw {pc['fill_row'][0]:.0f} flops, "
        f"{pc['fill_row'][1]:.1f} transcendentals, {pc['fill_row'][2]:.0f} bytes; P = "
        f"{pc['P']} parameters, {pc['block']}-row blocks).",
        "",
        *md_e,
    ]
    if runs:
        lines += ["", *md_r, "", *verdict]
    C.write_section("gpu_paper_study.py", lines)


if __name__ == "__main__":
    main()

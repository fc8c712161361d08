"""The paper-sized study on one GPU, timed as one command, every part of its time recorded
beside the time each part should need.

    python benchmarks/gpu_paper_study.py                  # on a GPU machine: 800 000 fits
    python benchmarks/gpu_paper_study.py --estimate-only  # the estimate alone (any machine)
    python benchmarks/gpu_paper_study.py --smoke          # tiny, any device, writes nothing

The study (issues 13 and 23): the papers' grid, 20 log-spaced n in [1e3, 1e5] at d = 8
(`sweeps/gpu/paper-d8.toml`: the heterogeneous design of sweeps/heterogeneous.toml at d = 8,
K = 3), with 1000x the papers' 40 replicates: 40 000 replicates x 20 sizes = 800 000 fits, run
as one command

    MOEJAX_CACHE_DIR=<fresh dir> moejax sweep <config with run.memory_gb set> \\
        --replicates 40000 --no-progress --no-report --force --out <dir>

in a subprocess (cold compilation cache, then warm unless --cold-only). run.memory_gb is 70% of
the first device's memory (one call's budget: it decides the lanes per call, up to the GPU
default 2048). Target (issue 23): the whole command under 60 s on one H100 or H200 (goal 30 s),
compile included.

Every part of the time is recorded (`parts`): start-up (a fresh interpreter's `import jax;
jax.devices()`, timed in a subprocess), compile and compute (the manifest's timings), host (the
command's wall time less those three), and within the host the writers of fits.csv and
estimates.npz (`moejax.sweep.store`, timed again here on the run's own lanes); the passes over
the data (the manifest's executed and useful passes, their ratio: lanes that wait for the
slowest of their batch, and chunk padding, `moejax.estimation.lanes`), backtracks (sum over fits
of passes - (n_iter + 1), from fits.csv) and a lockstep what-if (every lane of a call as long
as its slowest).

Beside them, the corrected estimate (`estimate`), per piece, at the data-sheet peaks of an H100
SXM and an H200 (`PEAKS`). Per-row and per-fit flops, transcendentals and bytes come from XLA's
cost analysis on the machine running the script (a CPU unless there is a GPU); float64
transcendentals are charged TRANSCENDENTAL_FLOPS flops each. Each piece has a low and a high
figure:

- passes: rows x the fits' own passes (fits.csv ``passes``, backtracks included; not n_iter +
  1), max(arithmetic, memory); executed beyond useful: the same x (ratio - 1), rows padded to
  whole blocks included. Memory low: the held data read once per pass (a GPU fuses the row function:
  intermediates stay in registers); high: the bytes XLA's CPU cost analysis counts (every
  unfused intermediate, the old estimate's basis).
- eigh: one P x P eigendecomposition per executed trip per lane (Newton computes its step on
  every pass), charged EIGH_FLOPS_P3 x P^3 flops (a standard Jacobi / QR figure: XLA's cost
  analysis counts the LAPACK / cuSOLVER custom call as zero flops) at peak; benchmarks/eigh.py
  measures batched eigh against Cholesky and a pass.
- chunk gather: the compaction (`moejax.estimation.lanes`) gathers the solver state of each
  chunk's lanes on every trip and scatters it back (~P^2 + 5P float64 per lane-trip, read and
  written). Held data are not gathered: a compacted lane reads its blocks from the whole
  buffers by its index inside the pass (an earlier version gathered every lane's whole buffer,
  N rows, per trip: 29 s on an H100 for the grid's 100 352-row buffer). --estimate-only checks
  it on this CPU (`_GATHER`: n = 1000 in its own buffer and in the grid's: the times should
  agree).
- loops and launches: the engine's loops (trips, chunks of a trip, blocks of a pass) run as
  device-side while loops; each block step launches its kernels. Low: one kernel per block
  step (everything fused) at LAUNCH_S; high: the fusions XLA's CPU back end makes of one block
  step (a stand-in for the GPU's kernel count) at LAUNCH_S plus SYNC_S per loop iteration (a
  GPU while loop copies its predicate to the host every iteration unless command buffers
  take the loop). These constants are assumptions, not measurements.
- data draw and density error: as before (max(arithmetic, memory); memory low: the data
  written once).
- compile: the measured compile time (on a CPU, the CPU compile, a stand-in) per program x the
  programs the GPU plan compiles (buffer classes).
- start-up: measured (on a CPU: no CUDA initialisation).
- host: the measured host time other than the writers, plus the writers' time per fit (as
  measured here, with the writers of this commit) x the study's fits. A vectorised fits.csv
  writer (issue 23: 800 000 rows in under 2 s) changes this line only.

On a GPU the study is run and every piece is measured; the estimate is computed from the run's
own passes and ratio. Without a GPU (--estimate-only), a calibration sweep on this machine
(n = 1000, 2048 replicates, G = 2048 lanes per call, one device: the GPU's default lanes)
gives the ratio, backtracks, compile, host and writers (under load these host timings vary by
~1.5x from run to run, and the estimate multiplies them by ~400), the chunk-gather check
measures the gather, and `moejax.simulate` of a few replicates per size gives the passes per
fit at every n. --smoke runs the CPU study path (a 2 x 8-fit sweep, cold only) and prints the
same tables without writing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
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
#: The calibration sweep of --estimate-only: one size, the GPU's default lanes per call.
CALIBRATION = {"n": 1000, "replicates": 2048, "lanes": 2048}
TARGET_S = 60.0
#: The vectorised fits.csv writer's target (issue 23): 800 000 rows in under 2 s.
CSV_TARGET_S = 2.0
CSV_TARGET_ROWS = 800_000
GOAL_S = 30.0
#: Flops charged per float64 transcendental (no float64 special-function units on a GPU:
#: exp / log / tanh are ~20-40 double-precision instructions in CUDA's libdevice).
TRANSCENDENTAL_FLOPS = 30.0
#: Flops per P x P symmetric eigendecomposition, in units of P^3 (tridiagonal QR ~ 9 P^3 with
#: vectors; a Jacobi sweep costs ~4 P^3 and batched syevj takes several).
EIGH_FLOPS_P3 = 9.0
#: Assumed: seconds per kernel launch (a kernel this small runs no longer than its launch), and
#: per device-side loop iteration when the predicate goes to the host (XLA GPU while loop
#: without command buffers).
LAUNCH_S = 3e-6
SYNC_S = 10e-6
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
#: Pieces of the estimate that are not device work (with every "host: ..." piece).
COMMAND_PARTS = ("compile", "start-up")
#: The targets' devices, estimated whatever this machine is.
TARGETS = (("H100 SXM", 34e12, 3.35e12), ("H200", 34e12, 4.8e12))

_DEVICES = (
    "import json, jax; d = jax.devices()[0]; m = d.memory_stats() or {}; "
    "print(json.dumps({'backend': jax.default_backend(), "
    "'devices': [f'{x} ({x.device_kind})' for x in jax.devices()], 'kind': d.device_kind, "
    "'bytes_limit': int(m.get('bytes_limit', 0))}))"
)


#: The chunk-gather check (--estimate-only): n = 1000 fits in a buffer of their own (1024
#: rows) and in the GPU plan's one buffer of the grid (100 352 rows), G = 128 lanes (chunks of
#: 64), one host device; compute of a second (warm) call each. Prints one JSON line.
_GATHER = """
import json, sys
sys.path.insert(0, "benchmarks")
import _common as C
C.apply_cli_xla_flags(host_devices=1)
from moejax.sweep.config import load
from moejax.sweep.simulate import build_problem, Engine
out = []
for sizes in ([1000], [1000, 100000]):
    cfg = load(sys.argv[1], {"sizes.list": sizes, "run.lanes": 128, "run.memory_gb": 8.0})
    eng = Engine(build_problem(cfg))
    eng.run(1000, list(range(128)))
    c0 = eng.compute_s
    eng.run(1000, list(range(128)))
    pc = eng.pass_counts()
    out.append({"N": eng.plan.class_of(1000).N, "compute_s": eng.compute_s - c0,
                "executed": pc["executed"] / 2, "useful": pc["useful"] / 2})
print(json.dumps(out))
"""


def peak_for(kind: str) -> tuple[str, float, float] | None:
    for key, flops, bw in PEAKS:
        if key.lower() in kind.lower():
            return kind, flops, bw
    return None


def _cost(compiled) -> tuple[float, float, float]:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, list | tuple) else ca
    return (
        float(ca.get("flops", 0.0)),
        float(ca.get("transcendentals", 0.0)),
        float(ca.get("bytes accessed", 0.0)),
    )


_TRIVIAL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "copy"}


def loop_body_kernels(hlo: str) -> int:
    """Kernels (fusions, custom calls and other non-trivial instructions) in the body of the
    first while loop of an optimised HLO module's text."""
    m = re.search(r"\swhile\(.*?body=(%?[\w.\-]+)", hlo)
    if not m:
        return 0
    name = m.group(1).lstrip("%")
    body = re.search(r"^%?" + re.escape(name) + r" \(.*?^\}", hlo, re.S | re.M)
    if not body:
        return 0
    ops = re.findall(r"^\s+%?[\w.\-]+ = \S+ ([a-z\-]+)\(", body.group(0), re.M)
    return sum(op not in _TRIVIAL for op in ops)


def pieces(cfg: dict, n_rows: int = 4096) -> dict:
    """Per-row cost of one objective pass and of the data draw, per-fit cost of the density
    error, each (flops, transcendentals, bytes) from XLA's cost analysis on this backend; the
    held data's bytes per row; the kernels of one block step of the pass (this backend's
    fusions); the GPU plan's block and programs."""
    import jax
    import jax.numpy as jnp

    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.estimation.objective import Blocks
    from moejax.mix import sample
    from moejax.mix.sampling import DATA_BLOCK, sample_covariates
    from moejax.sweep.simulate import (
        build_problem,
        choose_block,
        density_error,
        draw_block,
        plan,
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
    blocked = jax.jit(lambda dt, th, c: objective(spec, dt, Blocks(B, c)).value_grad_hess(th))
    kernels = loop_body_kernels(blocked.lower(data, theta, jnp.int32(1)).compile().as_text())
    draw = jax.jit(lambda k, b, t: draw_block(spec, t, k, jnp.int32(10**6), b, B, None))
    f = _cost(draw.lower(jax.random.key(2), jnp.int32(0), tp).compile())
    m = r["density_points"]
    dens = jax.jit(lambda k, t: density_error(spec, t, t, sample_covariates(k, spec.d, m, None)))
    h = _cost(dens.lower(jax.random.key(3), tp).compile()) if m > 0 else (0.0, 0.0, 0.0)
    row_bytes = sum(
        int(a.nbytes) for a in jax.tree_util.tree_leaves(data) if a.ndim and a.shape[-1] == n_rows
    )
    gpu_plan = plan(problem, 1, "gpu")
    buf_bytes = sum(int(getattr(data, k).nbytes) for k in ("X1", "y", "lf0"))
    return {
        "buffer_row_bytes": buf_bytes / n_rows,
        "buffer_of": {int(n): cp.N for cp in gpu_plan.classes for n in cp.sizes},
        "pass_row": [v / n_rows for v in p],
        "fill_row": [v / B for v in f],
        "density_fit": list(h),
        "data_row_bytes": row_bytes / n_rows,
        "block_kernels": kernels,
        "P": spec.n_params,
        "block": gpu_plan.block,
        "programs": len(gpu_plan.classes),
        "lanes": max(cp.lanes for cp in gpu_plan.classes),
        "backend": jax.default_backend(),
    }


def seconds(cost: list[float], flops_s: float, bytes_s: float, floor_bytes: float) -> tuple:
    """(low, high) seconds of a piece of (flops, transcendentals, bytes): max(arithmetic,
    memory) with the memory at ``floor_bytes`` (low) or at the counted bytes (high)."""
    fl, tr, nb = cost
    a = (fl + TRANSCENDENTAL_FLOPS * tr) / flops_s
    return max(a, floor_bytes / bytes_s), max(a, nb / bytes_s)


def estimate(pc: dict, per_size: dict, R: int, ratio: float, measured: dict, peak) -> dict:
    """The corrected estimate of the study (``R`` replicates at every n of ``per_size``,
    {n: {"passes": mean passes per fit, "evals0": mean n_iter + 1}}) at ``peak`` (name,
    FLOP/s, bytes/s): {piece: (low s, high s, what)}, totals, and the old method's figure."""
    from moejax.estimation.lanes import lane_chunk

    _, fs, bs = peak
    B, P, Db = pc["block"], pc["P"], pc["data_row_bytes"]
    Cc = lane_chunk(pc["lanes"])
    sizes = sorted(per_size)
    useful = sum(R * n * v["passes"] for n, v in per_size.items())  # row-passes
    active = sum(R * math.ceil(n / B) * B * v["passes"] for n, v in per_size.items())
    executed = active * ratio
    trips = sum(R * v["passes"] for v in per_size.values()) * ratio  # lane-trips
    chunk_trips = sum(R * v["passes"] * ratio / Cc for v in per_size.values())
    block_steps = sum(R * v["passes"] * ratio / Cc * math.ceil(n / B) for n, v in per_size.items())
    rows = R * sum(sizes)
    fits = R * len(sizes)
    pr, fr, dr = pc["pass_row"], pc["fill_row"], pc["density_fit"]
    parts: dict[str, tuple[float, float, str]] = {}
    lo, hi = seconds([useful * v for v in pr], fs, bs, useful * Db)
    parts["passes, useful"] = (lo, hi, f"{useful:.3g} row-passes (backtracks included)")
    extra = executed - useful
    lo, hi = seconds([extra * v for v in pr], fs, bs, extra * Db)
    parts["passes, executed beyond useful"] = (
        lo,
        hi,
        f"{extra:.3g} row-passes (ratio {ratio:.3f}, rows to {B}-row blocks)",
    )
    e = trips * EIGH_FLOPS_P3 * P**3 / fs
    parts["eigh"] = (
        e,
        e,
        f"{trips:.3g} lane-trips x {EIGH_FLOPS_P3:.0f} P^3 (P = {P}) at peak (at 1% of peak: "
        f"{100 * e:.2g} s)",
    )
    # the compaction's chunk gather: each chunk trip gathers its lanes' solver state (x, g,
    # H, step, candidate: ~P^2 + 5P float64) and scatters it back; the held data are read by
    # lane index block by block inside the pass (counted with the passes), never copied
    state = 8.0 * (P * P + 5 * P + 8)
    g = trips if Cc < pc["lanes"] else 0.0
    t = 2 * state * g / bs
    parts["chunk gather"] = (
        t,
        t,
        f"{g:.3g} lane-trips x the solver state ({state:.0f} B), read + written (the data are "
        "read by lane index inside the pass)",
    )
    iters = chunk_trips + block_steps
    parts["loops and launches"] = (
        block_steps * LAUNCH_S,
        block_steps * pc["block_kernels"] * LAUNCH_S + iters * SYNC_S,
        f"{block_steps:.3g} block steps in {chunk_trips:.3g} chunk trips of {Cc} lanes; "
        f"1 or {pc['block_kernels']} kernels per step",
    )
    lo, hi = seconds([rows * v for v in fr], fs, bs, rows * Db)
    parts["data draw"] = (lo, hi, f"{rows:.3g} rows")
    lo, hi = seconds([fits * v for v in dr], fs, bs, 0.0)
    parts["density error"] = (lo, hi, f"{fits} fits")
    comp = measured["compile_per_program"] * pc["programs"]
    parts["compile"] = (comp, comp, f"{pc['programs']} program(s) x {measured['compile_src']}")
    parts["start-up"] = (measured["startup_s"],) * 2 + (measured["startup_src"],)
    for key, what in (("csv", "fits.csv writer"), ("npz", "estimates.npz writer")):
        t = measured[f"{key}_per_fit_s"] * fits
        parts[f"host: {what}"] = (t, t, f"{measured[f'{key}_per_fit_s'] * 1e6:.1f} us/fit x {fits}")
    t = measured["host_other_s"] + measured["load_per_fit_s"] * fits
    parts["host: other"] = (
        t,
        t,
        f"{measured['host_other_s']:.1f} s (imports, plan, parts, manifest) + parts read "
        f"{measured['load_per_fit_s'] * 1e6:.1f} us/fit x {fits}",
    )
    old_a, old_m = (
        (
            sum(R * n * v["evals0"] for n, v in per_size.items())
            * (pr[0] + TRANSCENDENTAL_FLOPS * pr[1])
        )
        / fs,
        sum(R * n * v["evals0"] for n, v in per_size.items()) * pr[2] / bs,
    )
    old = max(old_a, old_m) + seconds([rows * v for v in fr], fs, bs, 0)[1]
    old += seconds([fits * v for v in dr], fs, bs, 0)[1]
    device = [k for k in parts if k not in COMMAND_PARTS and not k.startswith("host")]
    return {
        "parts": parts,
        "device": (sum(parts[k][0] for k in device), sum(parts[k][1] for k in device)),
        "low": sum(v[0] for v in parts.values()),
        "high": sum(v[1] for v in parts.values()),
        "old": old,
        "gather": parts["chunk gather"][0],
        "useful": useful,
        "fits": fits,
    }


def passes_per_size(n, passes, n_iter) -> dict:
    import numpy as np

    n, passes, n_iter = (np.asarray(a).ravel() for a in (n, passes, n_iter))
    return {
        int(s): {
            "passes": float(np.mean(passes[n == s])),
            "evals0": float(np.mean(n_iter[n == s] + 1)),
        }
        for s in np.unique(n)
    }


def sample_passes(config: str, sizes: list[int], reps: int) -> dict:
    """Mean passes (backtracks included) and n_iter + 1 per fit at each size, from
    `moejax.simulate` of ``reps`` replicates (this machine)."""
    import moejax as mj

    f = mj.simulate(config, sizes=sizes, replicates=reps, progress=False)
    return passes_per_size(f["n"], f["passes"], f["n_iter"])


def startup() -> tuple[dict, float]:
    """(device facts, seconds) of a fresh interpreter's `import jax; jax.devices()`."""
    t0 = time.perf_counter()
    dev = C.run_json_subprocess([sys.executable, "-c", _DEVICES], timeout=600)
    return dev, time.perf_counter() - t0


def sweep(cfg_text: str, R: int, tmp: Path, kind: str, env: dict) -> dict:
    """Run `moejax sweep` on ``cfg_text`` in a subprocess; its wall time, manifest and the
    measured facts of its output (`facts`)."""
    cfg_path = tmp / f"{kind}.toml"
    cfg_path.write_text(cfg_text)
    out = tmp / f"out-{kind}"
    argv = [*C.moejax_argv(), "sweep", str(cfg_path), "--replicates", str(R)]
    argv += ["--no-progress", "--no-report", "--force", "--out", str(out)]
    print(f"{kind}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=C.REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"moejax sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    man = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "manifest": man, **facts(out, man)}


def facts(out: Path, man: dict) -> dict:
    """From a finished sweep directory: passes per size, backtracks, a lockstep what-if, and
    the writers of fits.csv and estimates.npz timed again on its lanes."""
    import numpy as np

    from moejax.estimation.solvers import STATUS_NAMES
    from moejax.sweep import store

    t0 = time.perf_counter()
    lanes, _ = store.load_parts(out)
    t_load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        store.write_fits_csv(Path(d), lanes, STATUS_NAMES)
        t_csv = time.perf_counter() - t0
        # timed as the full study writes it (800 000 fits: stored plain, not compressed)
        t0 = time.perf_counter()
        store.write_estimates(Path(d), lanes, store.KEPT_GROUPS, compress=False)
        t_npz = time.perf_counter() - t0
    F = len(lanes["n"])
    passes, n_iter = lanes["passes"], lanes["n_iter"]
    lock = 0.0
    b0 = man["buckets"][0]
    per_call = b0["lanes_per_device"] * b0["devices"]
    for s in np.unique(lanes["n"]):
        ev = passes[lanes["n"] == s][np.argsort(lanes["replicate"][lanes["n"] == s])]
        ev = np.concatenate([ev, np.repeat(ev[-1:], -len(ev) % per_call)]).reshape(-1, per_call)
        lock += float(ev.max(1).sum() * per_call)
    return {
        "per_size": passes_per_size(lanes["n"], passes, n_iter),
        "fits": F,
        "useful": int(passes.sum()),
        "backtracks": int(np.sum(passes - (n_iter + 1))),
        "max_passes": int(passes.max()),
        "lockstep": lock / max(1, int(passes.sum())),
        "t_load": t_load,
        "t_csv": t_csv,
        "t_npz": t_npz,
    }


def measured_parts(run: dict, startup_s: float, programs: int, where: str) -> dict:
    """The parts of one sweep's time, and what the estimate takes from them."""
    man = run["manifest"]
    t = man["timings"]
    host = run["wall"] - startup_s - t["compile_s"] - t["compute_s"]
    writers = run["t_csv"] + run["t_npz"] + run["t_load"]
    return {
        "wall": run["wall"],
        "startup_s": startup_s,
        "compile_s": t["compile_s"],
        "compute_s": t["compute_s"],
        "host_s": host,
        "writers_s": writers,
        "host_other_s": max(0.0, host - writers),
        "csv_per_fit_s": run["t_csv"] / run["fits"],
        "npz_per_fit_s": run["t_npz"] / run["fits"],
        "load_per_fit_s": run["t_load"] / run["fits"],
        "compile_per_program": t["compile_s"] / programs,
        "compile_src": f"{t['compile_s'] / programs:.1f} s ({where})",
        "startup_src": f"`import jax; jax.devices()` ({where})",
    }


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
        args.allow_cpu = args.no_write = args.cold_only = True
    p = SMOKE if args.smoke else QUICK if args.quick else FULL
    info = C.RunInfo(args.quick or args.smoke)

    from moejax.sweep.config import load

    cfg0 = load(C.REPO / args.config)
    sizes = p["sizes"] or cfg0["sizes"]["list"]
    R = p["replicates"]
    dev, startup_s = startup()
    gpu = dev["backend"] == "gpu"
    print(f"backend {dev['backend']}; devices: {', '.join(dev['devices'])}", flush=True)
    print(f"start-up (interpreter + import jax + jax.devices()): {startup_s:.2f} s", flush=True)
    # the GPU plan of the study (one call's budget: 70% of an 80 GB H100's memory)
    pc = pieces(load(C.REPO / args.config, {"sizes.list": sizes, "run.memory_gb": 56.0}))
    where = "measured on this GPU" if gpu else "CPU stand-in"
    tmp = Path(tempfile.mkdtemp(prefix="moejax-paper-"))
    try:
        cache = tmp / "cache"
        cache.mkdir()
        env = dict(os.environ, MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1")
        runs = []
        if not args.estimate_only:
            if not gpu and not args.allow_cpu:
                sys.exit(
                    f"gpu_paper_study: no GPU visible to JAX (backend {dev['backend']!r}); use "
                    "--estimate-only for the estimate alone, or --allow-cpu to run anyway"
                )
            mem = args.memory_gb or (
                0.7 * dev["bytes_limit"] / 2**30 if dev["bytes_limit"] else 2.0
            )
            text = (
                f'extends = "{(C.REPO / args.config).resolve()}"\n[run]\n'
                f"memory_gb = {mem:.3f}\n[sizes]\nlist = {sizes}\n"
            )
            for kind in ("cold",) if args.cold_only else ("cold", "warm"):
                runs.append((kind, sweep(text, R, tmp, kind, env)))
                w = runs[-1][1]
                print(f"  {kind}: {w['wall']:.1f} s wall ({w['fits'] / w['wall']:.0f} fits/s)")
            calib, calib_src = runs[0][1], "the run (cold)"
            per_size, source = calib["per_size"], f"the run's fits.csv ({calib['fits']} fits)"
        else:
            c = CALIBRATION
            text = (
                f'extends = "{(C.REPO / args.config).resolve()}"\n[run]\nmemory_gb = 8.0\n'
                f"lanes = {c['lanes']}\n[sizes]\nlist = [{c['n']}]\n"
            )
            env1 = dict(env, MOEJAX_HOST_DEVICES="1")
            calib = sweep(text, c["replicates"], tmp, "calibration", env1)
            calib_src = (
                f"calibration sweep: n = {c['n']}, {c['replicates']} replicates, "
                f"G = {c['lanes']} lanes per call, one CPU device"
            )
            print("chunk-gather check: n = 1000 in its own buffer and in the grid's", flush=True)
            calib["gather"] = C.run_json_subprocess(
                [sys.executable, "-c", _GATHER, str(C.REPO / args.config)], timeout=900
            )
            print(f"sampling passes per fit: {p['sample']} replicates per size", flush=True)
            t0 = time.perf_counter()
            per_size = sample_passes(str(C.REPO / args.config), sizes, p["sample"])
            source = (
                f"`moejax.simulate` of {p['sample']} replicates per size on this machine "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            # the calibration's n: its 2048 fits (the sample misses the tail of the passes)
            for n, v in calib["per_size"].items():
                if n in per_size:
                    per_size[n] = v
                    source += f", at n = {n} the calibration sweep's {calib['fits']} fits"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = calib["manifest"]["passes"]["ratio"] or 1.0
    meas = measured_parts(calib, startup_s, len(calib["manifest"]["buckets"]), where)
    peaks = [peak_for(dev["kind"])] if gpu and peak_for(dev["kind"]) else []
    peaks += [t for t in TARGETS if not peaks or t[0] not in peaks[0][0]]
    ests = [(pk, estimate(pc, per_size, R, ratio, meas, pk)) for pk in peaks]
    source += "; mean passes (n_iter + 1) by n: " + ", ".join(
        f"{n}: {v['passes']:.1f} ({v['evals0']:.1f})" for n, v in sorted(per_size.items())
    )
    report(args, info, dev, sizes, R, runs, calib, calib_src, meas, pc, ests, source, ratio)


def report(args, info, dev, sizes, R, runs, calib, calib_src, meas, pc, ests, source, ratio):
    man = calib["manifest"]
    ps = man["passes"]
    useful = calib["useful"]
    ev0 = useful - calib["backtracks"]
    mrow = [
        ["start-up (interpreter, import jax, jax.devices())", meas["startup_s"]],
        ["compile (manifest)", meas["compile_s"]],
        ["compute (manifest)", meas["compute_s"]],
        ["host (wall - the above)", meas["host_s"]],
        [
            "  of which: load parts + write fits.csv + estimates.npz (timed again)",
            f"{calib['t_load']:.2f} + {calib['t_csv']:.2f} + {calib['t_npz']:.2f}",
        ],
        ["wall (the sweep command)", meas["wall"]],
    ]
    txt_m, md_m = C.table(["part", "seconds"], mrow)
    work = (
        f"{calib['fits']} fits; passes useful {useful} (mean {useful / calib['fits']:.2f}, max "
        f"{calib['max_passes']}), executed {ps['executed']:.0f}: ratio {ratio:.3f} (lockstep "
        f"what-if {calib['lockstep']:.3f}); backtracks (passes - (n_iter + 1)) "
        f"{calib['backtracks']} = +{100 * calib['backtracks'] / max(1, ev0):.0f}% over n_iter + 1"
    )
    if calib.get("gather"):
        a, b = calib["gather"]
        work += (
            f". Chunk gather (CPU, 128 lanes in chunks of 64, one device, {a['executed']:.0f} "
            f"executed passes each): 128 fits at n = 1000 compute in {a['compute_s']:.2f} s in "
            f"a {a['N']}-row buffer, {b['compute_s']:.2f} s in the grid's {b['N']}-row buffer "
            f"({b['compute_s'] / a['compute_s']:.2f}x; compacted lanes read their blocks by "
            "lane index, so the buffer's length should not matter)"
        )
    print(f"measured ({calib_src}):\n{txt_m}\n{work}")
    names = list(ests[0][1]["parts"])
    rows = []
    for name in names:
        row = [name, ests[0][1]["parts"][name][2]]
        for _, e in ests:
            lo, hi, _ = e["parts"][name]
            row.append(
                f"{lo:.3g}" if abs(hi - lo) <= 1e-9 * max(1.0, hi) else f"{lo:.3g} - {hi:.3g}"
            )
        rows.append(row)
    rows.append(
        ["subtotal: device work (the first seven rows)", ""]
        + [f"{e['device'][0]:.0f} - {e['device'][1]:.0f}" for _, e in ests]
    )
    rows.append(["**total**", ""] + [f"**{e['low']:.0f} - {e['high']:.0f}**" for _, e in ests])
    rows.append(
        ["old method (n_iter + 1, CPU bytes, no lockstep / eigh / loops / compile / host)", ""]
        + [f"{e['old']:.0f}" for _, e in ests]
    )
    heads = ["piece", "work"] + [f"{pk[0]} s" for pk, _ in ests]
    txt_e, md_e = C.table(heads, rows)
    print(txt_e)
    verdict = []
    for pk, e in ests:
        csv = CSV_TARGET_S * e["fits"] / CSV_TARGET_ROWS
        v = (
            "met at both ends"
            if e["high"] < TARGET_S
            else "NOT met at either end"
            if e["low"] >= TARGET_S
            else "met only at the low end"
        )
        verdict.append(
            f"- {pk[0]}: estimated {e['low']:.0f} - {e['high']:.0f} s for the whole command "
            f"(old method {e['old']:.0f} s): target {TARGET_S:.0f} s {v}; goal {GOAL_S:.0f} s "
            f"{'met at the low end' if e['low'] < GOAL_S else 'NOT met'}. With fits.csv at the "
            f"vectorised writer's target ({CSV_TARGET_S:.0f} s per {CSV_TARGET_ROWS} rows): "
            f"{e['low'] - e['parts']['host: fits.csv writer'][0] + csv:.0f} - "
            f"{e['high'] - e['parts']['host: fits.csv writer'][0] + csv:.0f} s; and without the "
            f"solver-state gather: "
            f"{e['low'] - e['parts']['host: fits.csv writer'][0] + csv - e['gather']:.0f} - "
            f"{e['high'] - e['parts']['host: fits.csv writer'][0] + csv - e['gather']:.0f} s."
        )
    pk0, e0 = ests[0]
    big = sorted(e0["parts"].items(), key=lambda kv: -kv[1][0])[:4]
    verdict.append(
        f"- Largest pieces at the low end ({pk0[0]}): "
        + ", ".join(f"{k} {v[0]:.0f} s" for k, v in big)
        + "; the spread between low and high is the memory traffic (fused or as counted on "
        "this back end) and the kernel launches (1 or the counted kernels per block step)."
    )
    print("\n".join(verdict))
    md_r: list[str] = []
    if runs:
        rr = []
        for kind, w in runs:
            t, c = w["manifest"]["timings"], w["manifest"]["counts"]
            rr.append(
                [
                    kind,
                    w["wall"],
                    t["compile_s"],
                    t["compute_s"],
                    c["n_fits"],
                    c["n_fits"] / w["wall"],
                    f"{c['n_converged']}/{c['n_fits']}",
                    w["manifest"]["passes"]["ratio"] or "-",
                ]
            )
        heads_r = ["run", "wall s", "compile s", "compute s", "fits", "fits/s", "converged"]
        txt_r, md_r = C.table([*heads_r, "executed/useful passes"], rr)
        print(txt_r)
        cold = runs[0][1]["wall"]
        print(
            f"- cold command {cold:.1f} s: target {TARGET_S:.0f} s "
            f"{'met' if cold < TARGET_S else 'NOT met'} (on {dev['devices'][0]})"
        )
    if args.no_write:
        return
    lines = info.header_lines("gpu_paper_study.py", FULL_COMMAND, ", ".join(dev["devices"]))
    if dev["backend"] != "gpu":
        lines += [
            "",
            "**NO GPU: THE GPU RUN HAS NEVER BEEN MADE.** No GPU was available to this project, "
            "so the 800 000-fit command has not been timed anywhere. What follows are the "
            "pieces verified on this CPU and the corrected estimate for an H100 / H200 built "
            f"from them; run `{FULL_COMMAND}` on a GPU machine to measure it. Only that run "
            "can settle the wide pieces: the kernels per block step and whether XLA's command "
            "buffers take the device-side loops (loops and launches), the traffic of a fused "
            "pass (low: the held data once; high: every intermediate XLA's CPU back end "
            "counts), and the GPU compile time (the CPU's stands in).",
        ]
    lines += [
        "",
        f"Study: `{args.config}` at {len(sizes)} sizes ({min(sizes)} to {max(sizes)}), "
        f"{R} replicates = {R * len(sizes)} fits.",
        "",
        f"Measured ({calib_src}):",
        "",
        *md_m,
        "",
        f"- {work}.",
        "",
        f"Corrected estimate (seconds; low - high where they differ). Passes per fit at each n "
        f"from {source}. Executed/useful ratio {ratio:.3f} from the {calib_src.split(':')[0]}"
        + (" (one n, applied at every n). " if not runs else ". ")
        + f"Per row ({pc['backend']} XLA cost analysis): pass {pc['pass_row'][0]:.0f} flops, "
        f"{pc['pass_row'][1]:.1f} transcendentals ({TRANSCENDENTAL_FLOPS:.0f} flops each), "
        f"{pc['pass_row'][2]:.0f} bytes counted, {pc['data_row_bytes']:.0f} bytes of held "
        f"data; P = {pc['P']}; GPU plan: {pc['block']}-row blocks, {pc['lanes']} lanes per "
        f"call, {pc['programs']} program(s); {pc['block_kernels']} kernels per block step "
        f"({pc['backend']} fusions); launch {LAUNCH_S * 1e6:.0f} us, loop sync "
        f"{SYNC_S * 1e6:.0f} us (assumed). Peaks: "
        + "; ".join(
            f"{pk[0]} {pk[1] / 1e12:.0f} TFLOP/s float64, {pk[2] / 1e12:.2f} TB/s" for pk, _ in ests
        )
        + ".",
        "",
        *md_e,
        "",
        *verdict,
    ]
    if runs:
        lines += ["", *md_r]
    C.write_section("gpu_paper_study.py", lines)


if __name__ == "__main__":
    main()

"""Held vs streamed data (issue 14): cost per row evaluation, and single fits at large n.

1. ns per row of one objective pass (value, gradient and Hessian) on the default heterogeneous
   design, held buffers against data streamed from their keys (every pass draws its blocks
   again), side by side in one run: 8 lanes x n rows, vmapped, median of repeats.
2. One `moejax sweep` per requested size in a fresh subprocess with run.memory_gb as given
   (streamed when one lane's data do not fit), reporting wall time, the fits' status and the
   process's peak resident memory (ru_maxrss).

Usage:
    .venv/bin/python benchmarks/streaming.py                     # per-row table only
    .venv/bin/python benchmarks/streaming.py --smoke             # script check (n = 8192 x 2,
        2 repeats, one streamed sweep at n = 20000 with memory_gb 0.001; under a minute)
    .venv/bin/python benchmarks/streaming.py --fit 20000000:2:0.5 --fit 100000000:1:0.5
        (size:replicates:memory_gb; each run in its own process)
    --out FILE appends a Markdown block.

Changed with the engine rewrite (issue 13): held data are the engine's donated block-major
buffers (`fill_buffers`, read through `held_source`), streamed data its `draw_block`, both
through the `source` of the fused objective, as `make_chunk_fn` reads them (the old
``lane_data(..., streamed)`` record is gone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _common as C  # noqa: E402


def per_row(n: int, lanes: int, repeats: int) -> list[tuple[str, float]]:
    """ns per row of one objective pass over ``lanes`` lanes of n rows, held (the engine's
    block-major buffers, filled beforehand, read through `held_source`) and streamed (every
    block drawn again from the lane's key by `draw_block`), as `make_chunk_fn` reads them."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import FitData, objective
    from moejax.estimation.objective import Blocks
    from moejax.sweep import load
    from moejax.sweep.simulate import (
        build_problem,
        choose_block,
        draw_block,
        empty_buffers,
        fill_buffers,
        held_source,
        lane_keys,
    )

    cfg = load(ROOT / "sweeps/heterogeneous.toml", {"sizes.list": [n]})
    p = build_problem(cfg)
    spec, radius = p.spec, cfg["model"]["radius"]
    B = choose_block([n], cfg["run"]["block_rows"], cfg["run"]["max_padding"])
    N = -(-n // B) * B
    nn = jnp.int32(n)
    tp = p.truth.at(nn)
    theta = pack(spec, tp)
    blocks = Blocks(B, jnp.int32(N // B))
    data = FitData(None, None, None, jnp.asarray(float(n)), None)
    seed = jnp.uint32(cfg["seed"])
    rs = jnp.arange(lanes, dtype=jnp.int32)
    keys = jax.vmap(lambda r: lane_keys(seed, nn, r))(rs)
    bufs = jax.jit(
        lambda k: fill_buffers(spec, tp, k, nn, B, radius, empty_buffers(spec, lanes, N, B))
    )(keys.data)

    def reduce(obj):
        f, g, H = obj.value_grad_hess(theta)
        return f + g.sum() + H.sum()

    @jax.jit
    def held(bufs):
        one = lambda X1, y, lf0: reduce(
            objective(spec, data, blocks, held_source(nn, B, X1, y, lf0))
        )
        return jax.vmap(one)(*bufs).sum()

    @jax.jit
    def streamed(k_data):
        one = lambda k: reduce(
            objective(spec, data, blocks, lambda b: draw_block(spec, tp, k, nn, b, B, radius))
        )
        return jax.vmap(one)(k_data).sum()

    out = []
    for name, fn, arg in (("held", held, bufs), ("streamed", streamed, keys.data)):
        jax.block_until_ready(fn(arg))  # compile + warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(arg))
            ts.append(time.perf_counter() - t0)
        out.append((name, float(np.median(ts)) / (n * lanes) * 1e9))
    return out


def fit_run(size: int, reps: int, mem: float) -> dict:
    """One sweep in a fresh process; returns wall time, peak RSS and the fits' statuses."""
    code = f"""
import json, resource, sys, time
from moejax.sweep import load, run_sweep
cfg = load({str(ROOT / "sweeps/heterogeneous.toml")!r},
           {{"sizes.list": [{size}], "replicates": {reps}, "run.memory_gb": {mem}}})
t0 = time.time()
man = run_sweep(cfg, sys.argv[1], force=True, progress=False)
import csv
rows = list(csv.DictReader(open(sys.argv[1] + "/fits.csv")))
print(json.dumps({{"wall_s": time.time() - t0,
    "compile_s": man["timings"]["compile_s"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "streamed": [b["streamed"] for b in man["buckets"]],
    "status": [r["status"] for r in rows], "n_iter": [r["n_iter"] for r in rows],
    "err_eta": [r["err_eta"] for r in rows]}}))
"""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, MOEJAX_NO_PROGRESS="1")
        proc = subprocess.run(
            [sys.executable, "-c", code, d + "/run"], capture_output=True, text=True, env=env
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fit", action="append", default=[], help="size:replicates:memory_gb")
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="script check (see the docstring)")
    a = ap.parse_args()
    if a.smoke:
        a.n, a.lanes, a.repeats = 8192, 2, 2
        a.fit = a.fit or ["20000:1:0.001"]
    # the XLA optimisation level the moejax CLI and the engine compile with; one device
    xla_flags = C.apply_cli_xla_flags(True, host_devices=1)
    load = os.getloadavg()
    lines = [
        f"### streaming.py ({time.strftime('%Y-%m-%d %H:%M')} UTC)",
        "",
        f"- Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- nproc {os.cpu_count()}; load average at the start {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f}; XLA_FLAGS `{xla_flags}`, one JAX device",
        "",
    ]
    rows = per_row(a.n, a.lanes, a.repeats)
    held = dict(rows)["held"]
    lines += [
        f"One objective pass (value, gradient, Hessian), default heterogeneous design, "
        f"{a.lanes} lanes x n = {a.n}, median of {a.repeats}:",
        "",
        "| data | ns per row evaluation | vs held |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v:.0f} | {v / held:.2f}x |" for k, v in rows]
    for spec in a.fit:
        size, reps, mem = spec.split(":")
        r = fit_run(int(size), int(reps), float(mem))
        lines += ["", f"`moejax sweep` at n = {size}, {reps} replicate(s), memory_gb = {mem}:"]
        lines += ["", "```", json.dumps(r, indent=1), "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

"""Lanes that stop when they converge (issue 23): Newton's loop compacted to the lanes still
iterating against the plain lockstep loop, side by side in one process, on the same lanes.

    python benchmarks/lanes.py            # G = 2048 lanes, n = 1000, 2048 fits (minutes)
    python benchmarks/lanes.py --quick    # G = 512, 512 fits (PRELIMINARY section)
    python benchmarks/lanes.py --smoke    # G = 128, n = 300, 128 fits; writes nothing

The design is the GPU paper study's (`sweeps/gpu/paper-d8.toml`: d = 8, K = 3, the
heterogeneous tanh adapter), at one small n where the passes per fit vary most. For each
`run.lane_chunk` (automatic, and G = lockstep) an `Engine` with run.lanes = G on one device
fits the same replicates: compute seconds (`Engine.compute_s`, compile excluded), the passes
the calls executed and those the fits needed (`Engine.pass_counts`; the manifest's
``passes``), their ratio (target: at most 1.15 at G = 2048), and whether every column of every
fit equals the lockstep run's bit for bit. Writes the section ``lanes.py`` of RESULTS.md unless
--smoke or --no-write.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CONFIG = "sweeps/gpu/paper-d8.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/lanes.py"
FULL = {"lanes": 2048, "n": 1000, "reps": 2048}
QUICK = {"lanes": 512, "n": 1000, "reps": 512}
SMOKE = {"lanes": 128, "n": 300, "reps": 128}
TARGET = 1.15


def measure(lanes: int, n: int, reps: int, chunk: int) -> dict:
    import jax
    import numpy as np

    from moejax.sweep import config as cf
    from moejax.sweep.simulate import Engine, build_problem

    cfg = cf.load(
        CONFIG,
        {
            "run.lanes": lanes,
            "run.lane_chunk": chunk,
            "sizes.list": [n],
            "replicates": reps,
            "run.memory_gb": 16.0,
        },
    )
    eng = Engine(build_problem(cfg), devices=jax.local_devices()[:1])
    eng.compile_all()
    t0 = time.perf_counter()
    out = eng.run(n, list(range(reps)))
    wall = time.perf_counter() - t0
    pc = eng.pass_counts()
    return {
        "chunk": chunk,
        "compile_s": eng.compile_s,
        "compute_s": eng.compute_s,
        "wall_s": wall,
        **pc,
        "passes_mean": float(np.mean(out["passes"])),
        "passes_max": int(np.max(out["passes"])),
        "out": out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    size = SMOKE if args.smoke else QUICK if args.quick else FULL
    info = C.RunInfo(args.quick or args.smoke)
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from moejax.estimation.lanes import lane_chunk

    G, n, R = size["lanes"], size["n"], size["reps"]
    runs = [measure(G, n, R, c) for c in (0, G)]
    ref = runs[-1]["out"]
    rows = []
    for r in runs:
        same = all(np.array_equal(r["out"][k], ref[k], equal_nan=True) for k in ref)
        name = "lockstep" if r["chunk"] == G else f"compacted (chunks of {lane_chunk(G)})"
        rows.append(
            [
                name,
                f"{r['compute_s']:.1f}",
                f"{r['executed']:.0f}",
                r["useful"],
                f"{r['ratio']:.3f}",
                f"{r['passes_mean']:.2f} / {r['passes_max']}",
                "yes" if same else "**no**",
                f"{r['compile_s']:.1f}",
            ]
        )
    speed = runs[1]["compute_s"] / runs[0]["compute_s"]
    head = [
        "Newton's loop",
        "compute s",
        "passes executed",
        "passes needed",
        "ratio",
        "passes per fit mean / max",
        "bit for bit = lockstep",
        "compile s",
    ]
    text, lines = C.table(head, rows)
    print(f"{R} fits at n = {n}, G = {G} lanes per call, one device ({CONFIG})")
    print(text)
    ok = runs[0]["ratio"] <= TARGET
    verdict = f"compacted ratio {runs[0]['ratio']:.3f} against the target {TARGET}: " + (
        "met" if ok else "**not met**"
    )
    print(verdict, f"; lockstep / compacted compute time {speed:.1f}x")
    if args.smoke or args.no_write:
        return
    body = info.header_lines("lanes.py", FULL_COMMAND, str(jax.devices()))
    body += [
        "",
        f"{R} fits at n = {n} of `{CONFIG}` (d = 8), run.lanes = G = {G}, one device; "
        "compute time excludes compilation.",
        "",
        *lines,
        "",
        f"- {verdict}; lockstep / compacted compute time: {speed:.1f}x.",
    ]
    C.write_section("lanes.py", body)


if __name__ == "__main__":
    main()

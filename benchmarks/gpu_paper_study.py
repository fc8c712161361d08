"""The paper-sized study on a GPU machine, timed as one command.

    python benchmarks/gpu_paper_study.py                       # on a machine with a GPU
    python benchmarks/gpu_paper_study.py --chunk 4096          # lanes per part (default: auto)
    python benchmarks/gpu_paper_study.py --quick --allow-cpu   # check the script, any device
    python benchmarks/gpu_paper_study.py --smoke               # = --quick --allow-cpu --no-write

The study: sweeps/heterogeneous.toml with 1000 replicates at 20 log-spaced sizes in [1e3, 1e5]
(20 000 fits), run as

    MOEJAX_CACHE_DIR=<fresh dir> moejax sweep sweeps/heterogeneous.toml \\
        --sizes <20 sizes> --replicates 1000 --no-progress --no-report --force --out <dir>

in a subprocess, wall time measured around it (interpreter start, JAX/CUDA initialisation,
compilation, all fits, writing fits.csv). First with a fresh, empty compilation cache (cold),
then again with the same cache into a new directory (warm), unless --cold-only. Prints the JAX
devices (and `nvidia-smi -L`), the wall times and the manifest's compile/compute split, and
writes its section of benchmarks/RESULTS.md. Without a GPU it refuses to run unless
--allow-cpu (then the section says it is not a GPU run).

With the engine of issue 13 the lanes per compiled call are G x devices (G = run.lanes, 2048
per device on a GPU by default; the manifest's ``buckets``), and ``--chunk`` sets the lanes per
part on disk (the resume granularity), not the lanes per call.
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

CONFIG = "sweeps/heterogeneous.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/gpu_paper_study.py"
FULL = {"lo": 1000, "hi": 100000, "count": 20, "replicates": 1000}
QUICK = {"lo": 1000, "hi": 10000, "count": 3, "replicates": 8}

_DEVICES = (
    "import json, jax; print(json.dumps({'backend': jax.default_backend(), "
    "'devices': [f'{d} ({d.device_kind})' for d in jax.devices()]}))"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 sizes x 8 replicates (script check)")
    ap.add_argument("--config", default=CONFIG, help=f"sweep config (default {CONFIG})")
    ap.add_argument("--chunk", type=int, help="lanes per part on disk (moejax sweep --chunk)")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm (cached) run")
    ap.add_argument("--report", action="store_true", help="also write the report (slopes, plots)")
    ap.add_argument("--out", help="run directory (default: a temporary one, removed)")
    ap.add_argument("--allow-cpu", action="store_true", help="run even without a GPU")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    ap.add_argument("--smoke", action="store_true", help="--quick --allow-cpu --no-write")
    args = ap.parse_args()
    if args.smoke:
        args.quick = args.allow_cpu = args.no_write = True
    info = C.RunInfo(args.quick)
    p = QUICK if args.quick else FULL

    dev = C.run_json_subprocess([sys.executable, "-c", _DEVICES], timeout=600)
    smi = ""
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    print(f"backend {dev['backend']}; devices: {', '.join(dev['devices'])}")
    if smi:
        print(smi)
    gpu = dev["backend"] == "gpu"
    if not gpu and not args.allow_cpu:
        sys.exit(
            "gpu_paper_study: no GPU visible to JAX (backend "
            f"{dev['backend']!r}); pass --allow-cpu to run anyway"
        )

    from moejax.sweep.config import log_spaced_sizes

    sizes = log_spaced_sizes(p["lo"], p["hi"], p["count"])
    R = p["replicates"]
    tmp = Path(tempfile.mkdtemp(prefix="moejax-paper-"))
    out_base = Path(args.out) if args.out else tmp
    moejax = C.moejax_argv()
    cmd_args = [
        "sweep",
        args.config,
        "--sizes",
        ",".join(map(str, sizes)),
        "--replicates",
        str(R),
        "--no-progress",
        "--force",
    ]
    if not args.report:
        cmd_args.append("--no-report")
    if args.chunk:
        cmd_args += ["--chunk", str(args.chunk)]
    runs = []
    try:
        cache = tmp / "cache"
        cache.mkdir()
        env = dict(os.environ, MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1")
        for kind in ("cold",) if args.cold_only else ("cold", "warm"):
            out = out_base / f"paper-{kind}"
            argv = [*moejax, *cmd_args, "--out", str(out)]
            print(f"{kind}: {' '.join(argv)}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(argv, cwd=C.REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"moejax sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            man = json.loads((out / "manifest.json").read_text())
            t, c = man["timings"], man["counts"]
            runs.append(
                [
                    kind,
                    wall,
                    t["compile_s"],
                    t["compute_s"],
                    c["n_fits"],
                    c["n_fits"] / wall,
                    f"{c['n_converged']}/{c['n_fits']}",
                    ", ".join(f"{b['lanes_per_device']} x {b['devices']}" for b in man["buckets"]),
                    man.get("chunk", "-"),
                    man.get("buffer_rows", "-"),
                ]
            )
            print(f"  {kind}: {wall:.1f} s wall ({c['n_fits'] / wall:.1f} fits/s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    txt, md = C.table(
        [
            "run",
            "wall s",
            "compile s",
            "compute s",
            "fits",
            "fits/s",
            "converged",
            "lanes per call (G x devices)",
            "lanes per part",
            "buffer rows",
        ],
        runs,
    )
    print()
    print(txt)
    if args.no_write:
        return
    lines = info.header_lines("gpu_paper_study.py", FULL_COMMAND, ", ".join(dev["devices"]))
    if not gpu:
        lines += [
            "",
            "**NOT A GPU RUN**: no GPU was visible to JAX on this machine, so these numbers only "
            f"show that the script works (backend {dev['backend']}). The GPU measurement is "
            f"pending: run `{FULL_COMMAND}` on a GPU machine.",
        ]
    lines += [
        "",
        f"Study: `{args.config}`, {R} replicates x {len(sizes)} sizes {sizes} "
        f"= {R * len(sizes)} fits; command `MOEJAX_CACHE_DIR=<fresh dir> moejax "
        f"{' '.join(cmd_args)} --out <dir>`, wall time around the whole process (cold: empty "
        "cache; warm: same cache, second run).",
    ]
    if smi:
        lines += ["", "nvidia-smi -L: " + smi.replace("\n", "; ")]
    lines += ["", *md]
    path = C.write_section("gpu_paper_study.py", lines)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

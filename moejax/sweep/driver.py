"""The sweep driver: a config -> chunks of lanes on disk, resumable, with progress.

The arithmetic is `moejax.sweep.engine.Engine` (compiled, vmapped, sharded lanes whose
results depend on (seed, n, replicate) alone, bitwise, whatever the chunk size or the device
count); this module adds the run directory: every finished chunk is persisted atomically to
``parts/`` so that an interrupted sweep resumes where it stopped, then fits.csv and the
manifest are written. Several processes (``--distributed``) split the chunks.
"""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

from moejax.estimation.solvers import STATUS_NAMES
from moejax.sweep import store
from moejax.sweep.config import config_hash
from moejax.sweep.engine import Engine
from moejax.sweep.plan import SweepPlanError, chunk_lanes
from moejax.sweep.problem import adapter_weight, build_problem, init_rule
from moejax.sweep.simulate import progress_bar

__all__ = ["RunDirError", "SweepPlanError", "adapter_weight", "run_sweep"]


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("moejax", "jax", "jaxlib", "jaxopt", "optax", "numpy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class RunDirError(store.StoreError):
    """The results directory holds another config."""


def _prepare_dir(out: Path, cfg: dict, digest: str, force: bool) -> None:
    store.check_writable(out)
    man = out / "manifest.json"
    if man.exists():
        try:
            old = store.read_json(man).get("config_hash")
        except (OSError, ValueError):
            old = None
        if old != digest:
            if not force:
                raise RunDirError(
                    f"{out} holds results of a different config (hash {old} != {digest}); "
                    "use --force to overwrite it or choose another --out"
                )
            store.clear_run(out)
    elif any((out / "parts").glob("part-*.npz")):
        if not force:
            raise RunDirError(
                f"{out} holds result parts but no manifest; use --force to "
                "overwrite it or choose another --out"
            )
        store.clear_run(out)


def _manifest(cfg, digest, status, extra) -> dict[str, Any]:
    return {
        "name": cfg["name"],
        "regime": cfg["truth"]["regime"],
        "gamma": cfg["truth"]["gamma"] if cfg["truth"]["regime"] == "homogeneous" else None,
        "status": status,
        "config_hash": digest,
        "config": cfg,
        "versions": versions(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        **extra,
    }


def run_sweep(
    cfg: dict[str, Any],
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    study: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a resolved sweep config into directory ``out``.

    ``study`` (a grid point's :meth:`moejax.sweep.grid.Study.manifest_entry`) is recorded in the
    manifest as ``"study"``; it is not part of the config hash.

    Writes the parts, ``fits.csv`` and ``manifest.json`` only; the slope report is the caller's
    (``moejax.report.make_report(out)``, as ``moejax sweep`` does). Returns the final manifest
    (``{}`` on a process other than 0 of a multi-process run). Raises `store.StoreError` if
    ``out`` is unusable and `SweepPlanError` (before anything is written) if the sweep cannot
    run within run.memory_gb.
    """
    out = Path(out)
    digest = config_hash(cfg)
    problem = build_problem(cfg)
    sizes, R = cfg["sizes"]["list"], cfg["replicates"]
    engine = Engine(problem)  # plans every buffer class's memory before anything is written
    _prepare_dir(out, cfg, digest, force)
    # Chunks (one part each) never mix sample sizes; each runs whole calls of G lanes/device.
    chunks = []
    for cp in engine.plan.classes:
        C = chunk_lanes(problem, cp)
        chunks += [(n, list(range(R))[i : i + C]) for n in cp.sizes for i in range(0, R, C)]
    executed = 0
    for n, rs in chunks:
        cp = engine.plan.class_of(n)
        executed += -(-len(rs) // cp.per_call) * cp.per_call * -(-n // cp.block) * cp.block
    layout = {
        **({"study": study} if study is not None else {}),
        "adapter_weight": adapter_weight(problem),
        "init_rule": init_rule(problem),
        "buffer_rows": max(cp.N for cp in engine.plan.classes),
        "block_rows": max(cp.block for cp in engine.plan.classes),
        "chunk": max(chunk_lanes(problem, cp) for cp in engine.plan.classes),
        "lanes_per_device": max(cp.lanes for cp in engine.plan.classes),
        "memory_gb": engine.plan.memory_gb,
        "padding_ratio": executed / (R * sum(sizes)),
        "buckets": [
            {
                "padded_size": cp.N,
                "sizes": list(cp.sizes),
                "chunk": chunk_lanes(problem, cp),
                "lanes_per_device": cp.lanes,
                "block_rows": cp.block,
                "devices": cp.devices,
                "streamed": cp.streamed,
            }
            for cp in engine.plan.classes
        ],
    }
    t_start = time.time()
    store.write_json(
        out / "manifest.json",
        _manifest(
            cfg, digest, "running", {**layout, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ),
    )

    done, next_part = store.load_parts(out)
    pid, nproc = jax.process_index(), jax.process_count()
    if nproc > 1:
        # Every process must have listed the parts (so agree on next_part and on the lanes
        # done) before any process writes one; else a part index can be taken twice.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("moejax-sweep-start")
    done_set = set(zip(done.get("n", []), done.get("replicate", []), strict=True))
    total = len(sizes) * R
    todo = [(n, [r for r in rs if (n, r) not in done_set]) for n, rs in chunks]
    todo = [(i, n, rs) for i, (n, rs) in enumerate(todo) if rs and i % nproc == pid]

    bar = progress_bar(total, len(done_set), progress, "moejax sweep")

    def finish(i: int, pending: Any) -> None:
        store.save_part(out, next_part + i, engine.collect(pending))
        if bar is not None:
            bar.update(len(pending.replicates))

    try:
        # One request in flight ahead: the next chunk's calls are dispatched before this
        # chunk's results are fetched and written, so the device never waits for the host.
        ahead = None
        for i, n, rs in todo:
            pending = engine.submit(n, rs)
            if ahead is not None:
                finish(*ahead)
            ahead = (i, pending)
        if ahead is not None:
            finish(*ahead)
    finally:
        if bar is not None:
            bar.close()

    if nproc > 1:
        multihost_utils.sync_global_devices("moejax-sweep-done")
    lanes, _ = store.load_parts(out)
    if pid != 0:
        return {}
    if nproc > 1:
        lanes = _other_processes_parts(out, lanes, total)
    store.write_fits_csv(out, lanes, STATUS_NAMES)
    store.write_estimates(out, lanes, store.KEPT_GROUPS)
    codes = lanes["status_code"]
    counts = {
        "n_fits": len(codes),
        "n_converged": int(np.sum(lanes["converged"])),
        "n_failed": int(np.sum(lanes["converged"] == 0)),
        "n_at_bound": int(np.sum(lanes["at_bound"])),
        "status_counts": {
            name: int(np.sum(codes == i))
            for i, name in enumerate(STATUS_NAMES)
            if np.any(codes == i)
        },
    }
    manifest = _manifest(
        cfg,
        digest,
        "complete",
        {
            **layout,
            "timings": {
                "wall_s": time.time() - t_start,
                "compile_s": engine.compile_s,
                "compute_s": engine.compute_s,
                "lanes_this_run": total - len(done_set),
            },
            "counts": counts,
            # Passes over the data of the fits this process ran in this run (a resumed run:
            # the lanes it ran; several processes: process 0's): executed by the compiled
            # calls (lanes that wait for the slowest of their batch included) over the fits'
            # own (`Engine.pass_counts`; None for estimators that do not count them).
            "passes": engine.pass_counts(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    store.write_json(out / "manifest.json", manifest)
    return manifest


#: How long process 0 waits, after the final barrier, for other hosts' parts to be listed.
PARTS_VISIBLE_S = 120.0


def _other_processes_parts(out: Path, lanes: dict, total: int) -> dict:
    """All ``total`` lanes, on process 0 of a multi-process run, once every part is listed.

    Every process wrote its parts before the final barrier, but a shared filesystem (NFS) may
    list another host's newest files only after its directory cache expires (up to a minute):
    re-list until all lanes are there, and never write an incomplete fits.csv."""
    deadline = time.monotonic() + PARTS_VISIBLE_S
    while len(lanes.get("n", ())) < total and time.monotonic() < deadline:
        time.sleep(1.0)
        lanes, _ = store.load_parts(out)
    missing = total - len(lanes.get("n", ()))
    if missing > 0:
        raise store.StoreError(
            f"{out / 'parts'}: {missing} of {total} fits missing {PARTS_VISIBLE_S:.0f} s after "
            "every process finished (is the directory shared by all hosts?); run again to "
            "compute them"
        )
    return lanes

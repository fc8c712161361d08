"""The pure core of the engine: a problem -> every (sample size, replicate) lane -> arrays.

``simulate(config)`` runs every lane of a study through compiled, vmapped fits and returns the
per-fit columns of fits.csv as arrays of shape (sizes, replicates), touching no disk. The sweep
driver (`moejax.sweep.driver.run_sweep`) adds chunks on disk, resume and progress around the
same `Engine`.

A lane's data are generated inside the compiled function from a key folded from (seed, n,
replicate), block by block, so they depend on nothing else. A lane's *arithmetic* depends on
nothing else either: every compiled call runs exactly ``lanes`` lanes per device (G, a static
part of the plan chosen from the config, never from the chunk size or the device count), so
the same kernels of the same shapes compute every lane, wherever it sits in a call and however
many devices share the call. A sweep's results are therefore bitwise identical whatever its
chunk size and device count (tests/test_sweep.py checks chunks 1, 4, 8, 64 and 1, 2, 4 host
devices).

One program serves every sample size of a buffer class (sizes within a factor
``run.buffer_ratio``): data live in a buffer as long as the class's largest n, and every pass
over them loops over the active row blocks only (rows beyond n carry weight 0).
"""

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from moejax.estimation.solvers import STATUS_NAMES
from moejax.mix.spec import MixParams
from moejax.sweep.engine import CPU_COMPILE_OPTIONS, Engine, Pending, compile_options
from moejax.sweep.lane import (
    EXECUTED,
    Block,
    Buffers,
    LaneKeys,
    block_padding,
    block_weights,
    buffer_classes,
    choose_block,
    density_error,
    draw_block,
    empty_buffers,
    fill_buffers,
    fit_columns,
    fit_lane,
    held_source,
    kept_columns,
    lane_data,
    lane_keys,
    make_chunk_fn,
)
from moejax.sweep.plan import (
    DEFAULT_CHUNK_LANES,
    DEFAULT_LANES,
    DEFAULT_MEMORY_GB,
    DEVICE_MEMORY_FRACTION,
    STEP_ELEMENTS,
    ClassPlan,
    Plan,
    SweepPlanError,
    chunk_lanes,
    held_lane_bytes,
    host_memory_bytes,
    lane_block,
    memory_budget_gb,
    plan,
    streamed_lane_bytes,
)
from moejax.sweep.problem import (
    Problem,
    build_problem,
    fitted_spec,
    init_rule,
    problem,
    resolve_problem,
)
from moejax.sweep.schema import KEPT_GROUPS


def simulate(
    config: Any,
    sizes: Iterable[int] | None = None,
    replicates: int | None = None,
    seed: int | None = None,
    *,
    progress: bool | None = None,
    devices: list[Any] | None = None,
) -> dict[str, np.ndarray]:
    """Run every (sample size, replicate) lane of a study and return its fits as arrays.

    Args:
      config: a sweep config path (TOML), a config dict (as read from TOML, or resolved), or a
        `Problem` built in Python (`moejax.problem`).
      sizes, replicates, seed: override the config's.
      progress: a progress bar on stderr (None: only on a terminal).
      devices: the devices to shard calls over (default: every local device).

    Returns:
      {column: (len(sizes), replicates) array} for every column of fits.csv (``n``,
      ``replicate``, ``err_beta``, ``err_exp_tau``, ``err_eta``, ``err_density``, ``err_nu``,
      ``err_voronoi``, ``loglik``, ``n_iter``, ``inner_steps``, ``converged``, ``at_bound``,
      ``n_empty_cells``, ``n_shared_cells``, ``status`` (names), ``grad_norm``, ``start``,
      ``passes``), plus
      ``status_code``; row i is sizes[i] in increasing order. Beside them, every fit's
      evidence as `moejax.mix.MixParams` whose leaves have leading axes (sizes, replicates):
      ``estimate`` (the fitted adapters), ``se`` (standard errors from the observed
      information; NaN where not estimated, on a bound or not identified), ``on_bound`` (bool,
      the coordinate ended on its box bound); and ``truth``, the MixParams of G*(n) with a
      leading (sizes,) axis. Equal to the fits.csv and estimates.npz of ``moejax sweep`` on
      the same config and seed (same program, same lanes). And ``problem``: the `Problem`
      that was run (sizes, replicates and seed as run; its ``regime``, ``gamma`` and ``model``
      are what `moejax.slopes` reads for the theory columns, and ``simulate(out["problem"])``
      runs it again). Nothing is written to disk.
    """
    prob = resolve_problem(config, sizes, replicates, seed)
    cfg = prob.cfg
    grid, R = cfg["sizes"]["list"], cfg["replicates"]
    eng = Engine(prob, devices)
    bar = progress_bar(len(grid) * R, 0, progress, "moejax simulate")
    rows = []
    try:
        for n in grid:
            cp = eng.plan.class_of(n)
            step = max(cp.per_call, -(-DEFAULT_CHUNK_LANES // cp.per_call) * cp.per_call)
            parts = []
            for i in range(0, R, step):
                parts.append(eng.run(n, list(range(i, min(R, i + step)))))
                if bar is not None:
                    bar.update(len(parts[-1]["n"]))
            rows.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    finally:
        if bar is not None:
            bar.close()
    out = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    codes = out["status_code"]
    names = np.array(STATUS_NAMES + tuple(f"status_{i}" for i in range(len(STATUS_NAMES), 16)))
    out["status"] = names[np.clip(codes, 0, len(names) - 1)]
    out = group_kept(out, truth_axis=1)
    out["problem"] = prob
    return out


def group_kept(arrays: dict[str, np.ndarray], truth_axis: int | None = None) -> dict[str, Any]:
    """Fold the ``<group>.<leaf>`` arrays of `KEPT_GROUPS` into one MixParams per group (bound
    flags as bool). ``truth_axis``: the replicate axis, along which the truth is the same, is
    dropped from the truth's leaves (`simulate`: (sizes, replicates, ...) -> (sizes, ...)).
    Other keys are left as they are."""
    out = {k: v for k, v in arrays.items() if k.split(".")[0] not in KEPT_GROUPS}
    for group in KEPT_GROUPS:
        keys = [f"{group}.{leaf}" for leaf in MixParams._fields]
        if not all(k in arrays for k in keys):
            continue
        leaves = [np.asarray(arrays[k]) for k in keys]
        if group == "on_bound":
            leaves = [a.astype(bool) for a in leaves]
        if group == "truth" and truth_axis is not None:
            leaves = [np.take(a, 0, axis=truth_axis) for a in leaves]
        out[group] = MixParams(*leaves)
    return out


def progress_bar(total: int, initial: int, enabled: bool | None, desc: str):
    """A tqdm bar on stderr, or None when disabled (``enabled`` None: only on a terminal; the
    environment variable MOEJAX_NO_PROGRESS=1 turns it off)."""
    if enabled is False or os.environ.get("MOEJAX_NO_PROGRESS") == "1":
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="fit",
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None if enabled is None else False,
    )


__all__ = [
    "CPU_COMPILE_OPTIONS",
    "DEFAULT_CHUNK_LANES",
    "DEFAULT_LANES",
    "DEFAULT_MEMORY_GB",
    "DEVICE_MEMORY_FRACTION",
    "EXECUTED",
    "STEP_ELEMENTS",
    "Block",
    "Buffers",
    "ClassPlan",
    "Engine",
    "LaneKeys",
    "Pending",
    "Plan",
    "Problem",
    "SweepPlanError",
    "block_padding",
    "block_weights",
    "buffer_classes",
    "build_problem",
    "choose_block",
    "chunk_lanes",
    "compile_options",
    "density_error",
    "draw_block",
    "empty_buffers",
    "fill_buffers",
    "fit_columns",
    "fit_lane",
    "fitted_spec",
    "group_kept",
    "held_lane_bytes",
    "held_source",
    "host_memory_bytes",
    "init_rule",
    "kept_columns",
    "lane_block",
    "lane_data",
    "lane_keys",
    "make_chunk_fn",
    "memory_budget_gb",
    "plan",
    "problem",
    "progress_bar",
    "resolve_problem",
    "simulate",
    "streamed_lane_bytes",
]

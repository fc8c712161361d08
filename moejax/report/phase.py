"""Rate phase diagram: empirical exponent of each block against the drift exponent gamma.

One homogeneous sweep per gamma; each contributes its log-median slope and bootstrap CI per block.
The figure draws them against gamma beside the two working hypotheses of MODEL.md section 2:
uniform (beta, eta: -1/2 + gamma; exp_tau: -1/2 + 2 gamma) and pointwise (beta, exp_tau:
-1/2 + gamma; eta: -1/2).

Blocks: beta, exp_tau, eta, and nu / voronoi when a run has them (a panel per block present in
some run; density rows go to the CSV only). A block with no finite error in a run (beta under an
input-free gate) contributes no row for that run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plots import BLOCK_COLORS, BLOCK_LABELS, _save
from .slopes import compute_slopes, main_rows
from .table import read_fits_csv, read_manifest, write_csv_atomic
from .theory import theory_or_nan

#: Blocks drawn in the phase figure, in panel order (those without any row are left out).
PHASE_BLOCKS = ("beta", "exp_tau", "eta", "nu", "voronoi")
#: Blocks always requested from every run (optional blocks are appended when present).
_REQUESTED = ("beta", "exp_tau", "eta")


def phase_rows(
    run_dirs: Sequence[str | os.PathLike[str]],
    aggregate: str = "log_median",
    n_boot: int = 500,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (run, block reported for that run): keys ``run, gamma, parameter, aggregate,
    slope, ci_low, ci_high, uniform, pointwise, n_fits, n_failed, n_at_bound``. ``gamma`` is the
    manifest's (0 when null); the theories are the homogeneous hypotheses at that gamma."""
    rows = []
    for d in run_dirs:
        d = Path(d)
        man = read_manifest(d / "manifest.json")
        gamma = man.get("gamma")
        if gamma is None:
            gamma = 0.0
        fits = read_fits_csv(d / "fits.csv")
        config = man.get("config")
        model = config.get("model") if isinstance(config, Mapping) else None
        slopes = main_rows(
            compute_slopes(
                fits,
                parameters=_REQUESTED,
                aggregates=(aggregate,),
                n_boot=n_boot,
                seed=seed,
                drop_smallest=(0,),
                model=model,
            )
        )
        for r in slopes:
            th = theory_or_nan(r["parameter"], "homogeneous", gamma)
            rows.append(
                {
                    "run": d.name,
                    "gamma": float(gamma),
                    "parameter": r["parameter"],
                    "aggregate": aggregate,
                    "slope": r["slope"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "uniform": th["uniform"],
                    "pointwise": th["pointwise"],
                    "n_fits": r["n_fits"],
                    "n_failed": r["n_failed"],
                    "n_at_bound": r["n_at_bound"],
                }
            )
    return rows


def plot_phase(
    rows: Sequence[dict[str, Any]], out_stem: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Exponent against gamma, one panel per block of :data:`PHASE_BLOCKS` that has a row, with
    the hypothesised lines (none where there is no hypothesis); writes ``.png`` and ``.pdf``."""
    blocks = [b for b in PHASE_BLOCKS if any(r["parameter"] == b for r in rows)]
    blocks = blocks or list(PHASE_BLOCKS[:3])
    fig = Figure(figsize=(4 * len(blocks), 4.2), constrained_layout=True)
    axes = fig.subplots(1, len(blocks), sharey=True, squeeze=False)[0]
    gammas = sorted({r["gamma"] for r in rows})
    g = np.linspace(0.0, max([*gammas, 0.25]) * 1.05, 50)
    for ax, block in zip(axes, blocks, strict=True):
        pts = sorted((r for r in rows if r["parameter"] == block), key=lambda r: r["gamma"])
        x = np.array([r["gamma"] for r in pts])
        y = np.array([r["slope"] for r in pts])
        lo = np.array([r["ci_low"] for r in pts])
        hi = np.array([r["ci_high"] for r in pts])
        ax.errorbar(
            x,
            y,
            yerr=[y - lo, hi - y],
            fmt="o",
            color=BLOCK_COLORS[block],
            capsize=3,
            label="empirical (log-median, 95% CI)",
        )
        uni = np.array([theory_or_nan(block, "homogeneous", v)["uniform"] for v in g])
        pw = np.array([theory_or_nan(block, "homogeneous", v)["pointwise"] for v in g])
        if np.isfinite(uni).any():
            ax.plot(g, uni, "--", color="black", label="uniform hypothesis")
            ax.plot(g, pw, ":", color="gray", label="pointwise hypothesis")
        else:
            ax.text(0.5, 0.95, "no hypothesis", transform=ax.transAxes, ha="center", va="top")
        ax.axhline(-0.5, color="lightgray", lw=0.8)
        for r in pts:
            if r["n_failed"] or r["n_at_bound"]:
                ax.annotate(
                    f"{r['n_at_bound']}/{r['n_fits'] + r['n_failed']} on bound",
                    (r["gamma"], r["slope"]),
                    textcoords="offset points",
                    xytext=(4, -12),
                    fontsize=7,
                )
        ax.set_title(BLOCK_LABELS[block])
        ax.set_xlabel(r"drift exponent $\gamma$  ($\eta^*(n)=\eta_0+\Delta n^{-\gamma}$)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("empirical rate exponent")
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda h: len(h[0]))
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("Homogeneous regime: rate exponent against gamma")
    return _save(fig, out_stem)


def write_phase(
    run_dirs: Sequence[str | os.PathLike[str]], out_stem: str | os.PathLike[str], n_boot: int = 500
) -> dict[str, Path]:
    """Compute the rows, write ``out_stem.csv`` and the figure; return the paths."""
    rows = phase_rows(run_dirs, n_boot=n_boot)
    stem = Path(out_stem)
    cols = list(rows[0]) if rows else ["run"]
    csv_path = write_csv_atomic(stem.with_name(stem.name + ".csv"), cols, rows)
    png, pdf = plot_phase(rows, stem)
    return {"csv": csv_path, "png": png, "pdf": pdf}

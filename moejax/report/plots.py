"""Rate figures (matplotlib object API on the Agg/PDF canvases; pyplot is never imported).

``plot_rates``: one log-log panel per parameter block of a run: every valid fit (faint dots), the
per-n median error, a 10%-90% band of the errors across replicates (quantiles of log error), the
fitted log-median line with its slope and bootstrap CI in the legend, and the theory lines anchored
at the fitted value at the smallest n (uniform dashed; pointwise dotted where it differs).

``plot_comparison``: one panel per run (e.g. heterogeneous vs homogeneous) with all blocks, each
block's median error divided by its median at the smallest n, so slopes compare directly against
a shared n^(-1/2) reference.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from moejax.atomic import write_bytes_atomic

from .slopes import block_data, compute_slopes, main_rows, valid_errors_by_size
from .table import read_fits_csv, read_manifest
from .theory import theory_or_nan

BLOCK_LABELS: dict[str, str] = {
    "beta": r"$\|\hat\beta-\beta^*\|_2$",
    "exp_tau": r"$|e^{\hat\tau}-e^{\tau^*}|$",
    "eta": r"$\|\hat\eta-\eta^*\|_F$",
    "density": "density distance",
    "nu": r"$|\hat\nu-\nu^*|$",
    "voronoi": "Voronoi loss",
}
BLOCK_COLORS: dict[str, str] = {
    "beta": "tab:blue",
    "exp_tau": "tab:red",
    "eta": "tab:green",
    "density": "tab:purple",
    "nu": "tab:orange",
    "voronoi": "tab:brown",
}
BAND_QUANTILES: tuple[float, float] = (0.1, 0.9)


def _save(fig: Figure, out_stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Save ``out_stem.png`` and ``out_stem.pdf`` atomically (`write_bytes_atomic`)."""
    stem = Path(out_stem)
    paths = []
    for ext, kwargs in (("png", {"dpi": 150}), ("pdf", {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, **kwargs)
        paths.append(write_bytes_atomic(stem.with_name(stem.name + "." + ext), buf.getvalue()))
    return paths[0], paths[1]


def _fmt_ci(row: Mapping[str, Any]) -> str:
    text = f"slope {row['slope']:.2f}"
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        text += f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return text


def _failure_text(data: Any) -> str:
    failed = int(np.sum(data.nonconverged | data.invalid_err))
    parts = []
    if failed:
        parts.append(f"{failed} failed")
    n_bound = int(np.sum(data.at_bound))
    if n_bound:
        parts.append(f"{n_bound} at bound")
    if np.any(data.excluded_at_bound):
        parts.append("bound fits excluded")
    return f" ({', '.join(parts)})" if parts else ""


def _per_size_stats(errors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median error, and the band quantiles of log error (exponentiated), each of shape (J,)."""
    med = np.array([np.median(e) for e in errors])
    lo = np.array([np.exp(np.quantile(np.log(e), BAND_QUANTILES[0])) for e in errors])
    hi = np.array([np.exp(np.quantile(np.log(e), BAND_QUANTILES[1])) for e in errors])
    return med, lo, hi


def plot_rates(
    fits: Mapping[str, np.ndarray],
    slope_rows: Sequence[Mapping[str, Any]],
    regime: str | None,
    gamma: float | None,
    out_stem: str | os.PathLike[str],
    title: str | None = None,
    exclude_at_bound: bool = False,
) -> tuple[Path, Path]:
    """Log-log error-vs-n figure, one panel per parameter block.

    Args:
        fits: column dict (arrays of shape ``(N,)``) from :func:`read_fits_csv`.
        slope_rows: rows of :func:`compute_slopes` (the ``drop_k == 0``, ``log_median`` row of
            each block gives the fitted line; blocks are taken in row order).
        regime, gamma: select the theory lines (none drawn if unknown).
        out_stem: output path without extension; writes ``out_stem.png`` and ``out_stem.pdf``.
        title: figure title (default: regime and gamma).
        exclude_at_bound: must match the value used for ``slope_rows``.

    Returns:
        ``(png_path, pdf_path)``.
    """
    fitted = {r["parameter"]: r for r in main_rows(slope_rows) if r["aggregate"] == "log_median"}
    params = list(dict.fromkeys(r["parameter"] for r in slope_rows))
    ncols = max(len(params), 1)
    fig = Figure(figsize=(4.3 * ncols, 4.1), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    failed_any = np.zeros(np.asarray(fits["n"]).shape, dtype=bool)  # failed in some block
    for ax, p in zip(axes, params, strict=False):
        data = block_data(fits, p, exclude_at_bound)
        failed_any |= data.nonconverged | data.invalid_err
        sizes, errors = valid_errors_by_size(fits, p, exclude_at_bound)
        color = BLOCK_COLORS.get(p, "tab:gray")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(BLOCK_LABELS.get(p, p) + _failure_text(data), fontsize=10)
        ax.set_xlabel("sample size n")
        ax.grid(True, which="major", alpha=0.3)
        if len(sizes) == 0:
            ax.text(0.5, 0.5, "no valid fits", transform=ax.transAxes, ha="center")
            continue
        xs = np.concatenate(
            [np.full(e.shape, s, dtype=float) for s, e in zip(sizes, errors, strict=True)]
        )
        ax.scatter(xs, np.concatenate(errors), s=3, color=color, alpha=0.12, linewidths=0)
        med, lo, hi = _per_size_stats(errors)
        q_lo, q_hi = (round(100 * q) for q in BAND_QUANTILES)
        ax.fill_between(sizes, lo, hi, color=color, alpha=0.2, label=f"{q_lo}%-{q_hi}% band")
        ax.plot(sizes, med, "o", color=color, ms=4, label="median error")
        row = fitted.get(p)
        if row is not None and math.isfinite(row["slope"]):
            grid = np.geomspace(sizes[0], sizes[-1], 50)
            line = np.exp(row["intercept"] + row["slope"] * np.log(grid))
            ax.plot(grid, line, "-", color="black", lw=1.3, label="log-median fit: " + _fmt_ci(row))
            th = theory_or_nan(p, regime, gamma)
            anchor = line[0]
            if math.isfinite(th["uniform"]):
                ax.plot(
                    grid,
                    anchor * (grid / grid[0]) ** th["uniform"],
                    "--",
                    color="dimgray",
                    lw=1.2,
                    label=f"uniform theory {th['uniform']:+.3g}",
                )
            if math.isfinite(th["pointwise"]) and abs(th["pointwise"] - th["uniform"]) > 1e-12:
                ax.plot(
                    grid,
                    anchor * (grid / grid[0]) ** th["pointwise"],
                    ":",
                    color="dimgray",
                    lw=1.6,
                    label=f"pointwise theory {th['pointwise']:+.3g}",
                )
        elif row is not None:
            ax.text(0.5, 0.05, "slope undefined", transform=ax.transAxes, ha="center")
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("error")
    head = (
        title
        if title is not None
        else f"{regime} regime" + (f", gamma = {gamma:g}" if gamma is not None else "")
    )
    if failed_any.any():
        head += f"  [{int(failed_any.sum())} of {failed_any.size} fits failed, excluded]"
    fig.suptitle(head)
    return _save(fig, out_stem)


def _load_run(run: Any) -> tuple[Mapping[str, np.ndarray], dict[str, Any]]:
    """A run dir, a fits dict, or ``{"fits": fits, "regime": ..., "gamma": ..., "name": ...}``."""
    if isinstance(run, str | os.PathLike):
        run_dir = Path(run)
        manifest_path = run_dir / "manifest.json"
        manifest = read_manifest(manifest_path) if manifest_path.exists() else {}
        return read_fits_csv(run_dir / "fits.csv"), manifest
    if isinstance(run, Mapping) and "fits" in run:
        return run["fits"], {k: v for k, v in run.items() if k != "fits"}
    if isinstance(run, Mapping):
        return run, {}
    raise TypeError(f"cannot interpret run {type(run).__name__}")


def plot_comparison(
    runs: Sequence[Any],
    labels: Sequence[str] | None,
    out_stem: str | os.PathLike[str],
    parameters: Sequence[str] = ("beta", "exp_tau", "eta", "nu", "voronoi"),
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Side-by-side rate figure, one panel per run (e.g. heterogeneous vs homogeneous).

    Each block's median error is divided by its value at that block's smallest usable n, so all
    curves start at 1 and their slopes compare directly with the grey n^(-1/2) reference; the
    y axis is shared across panels.

    Args:
        runs: ``R`` entries, each a run directory (with ``fits.csv`` and ``manifest.json``), a
            fits column dict, or ``{"fits": fits, "regime": str, "gamma": float | None}``.
        labels: ``R`` panel titles, or None for ``"<name>: <regime>, gamma=<gamma>"``.
        out_stem: output path without extension (writes ``.png`` and ``.pdf``).
        parameters: blocks to draw (those missing from a run, or NaN in every row of it, such
            as beta under an input-free gate, are skipped; see ``resolve_parameters``).
        n_boot, seed: bootstrap settings for the slope CIs shown in the legends.

    Returns:
        ``(png_path, pdf_path)``.
    """
    loaded = [_load_run(r) for r in runs]
    fig = Figure(figsize=(5.2 * max(len(loaded), 1), 4.6), layout="constrained")
    axes = fig.subplots(1, max(len(loaded), 1), squeeze=False, sharey=True)[0]
    for i, (ax, (fits, meta)) in enumerate(zip(axes, loaded, strict=False)):
        regime, gamma = meta.get("regime"), meta.get("gamma")
        config = meta.get("config")
        model = config.get("model") if isinstance(config, Mapping) else None
        params = [p for p in parameters if f"err_{p}" in fits]
        rows = compute_slopes(
            fits,
            parameters=params,
            aggregates=("log_median",),
            n_boot=n_boot,
            seed=seed,
            drop_smallest=(0,),
            model=model,
        )
        fitted = {r["parameter"]: r for r in rows if r["parameter"] in params}
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("sample size n")
        n_lo = n_hi = None
        for p in fitted:
            sizes, errors = valid_errors_by_size(fits, p)
            if len(sizes) == 0:
                continue
            n_lo = sizes[0] if n_lo is None else min(n_lo, sizes[0])
            n_hi = sizes[-1] if n_hi is None else max(n_hi, sizes[-1])
            med = np.array([np.median(e) for e in errors])
            color = BLOCK_COLORS.get(p, "tab:gray")
            row = fitted[p]
            th = theory_or_nan(p, regime, gamma)
            label = f"{BLOCK_LABELS.get(p, p)}: {_fmt_ci(row)}"
            if math.isfinite(th["uniform"]) and th["uniform"] != th["pointwise"]:
                label += f" (uniform {th['uniform']:+.3g}, pointwise {th['pointwise']:+.3g})"
            elif math.isfinite(th["uniform"]):
                label += f" (theory {th['uniform']:+.3g})"
            ax.plot(sizes, med / med[0], "o", color=color, ms=4)
            if math.isfinite(row["slope"]):
                grid = np.geomspace(sizes[0], sizes[-1], 50)
                line = np.exp(row["intercept"] + row["slope"] * np.log(grid)) / med[0]
                ax.plot(grid, line, "-", color=color, lw=1.4, label=label)
            else:
                ax.plot([], [], "o", color=color, label=label)
        if n_lo is not None:
            grid = np.geomspace(n_lo, n_hi, 50)
            ax.plot(grid, (grid / n_lo) ** -0.5, "--", color="gray", lw=1.2, label=r"$n^{-1/2}$")
        if labels is not None:
            ax.set_title(labels[i])
        else:
            g = f", gamma = {gamma:g}" if gamma is not None else ""
            ax.set_title(f"{meta.get('name', f'run {i}')}: {regime}{g}")
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("median error / median error at smallest n")
    return _save(fig, out_stem)

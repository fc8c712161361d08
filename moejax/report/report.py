"""One-call report of a sweep directory: slopes, tables, figure and a terminal summary."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cells import CELL_COLUMNS, cell_rows, is_overfitted, write_cells
from .coverage import write_coverage
from .plots import plot_rates
from .slopes import AGGREGATES, DEFAULT_PARAMETERS, compute_slopes, skipped_parameters
from .table import read_estimates, read_fits_csv, read_manifest
from .tables import (
    SENSITIVITY_COLUMNS,
    TERMINAL_COLUMNS,
    build_export_rows,
    build_sensitivity_rows,
    format_terminal,
    write_tables,
)
from .theory import theory_regime
from .weighted import write_weighted_voronoi


def _status_summary(fits: Mapping[str, np.ndarray]) -> str:
    n_total = int(np.asarray(fits["n"]).shape[0])
    parts = [f"{n_total} fits"]
    if "status" in fits:
        counts = Counter(str(s) for s in fits["status"])
        parts.append("status: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    elif "converged" in fits:
        n_conv = int(np.sum(np.asarray(fits["converged"]) == 1))
        parts.append(f"converged {n_conv}, not converged {n_total - n_conv}")
    if "at_bound" in fits:
        parts.append(f"at bound {int(np.sum(np.asarray(fits['at_bound']) == 1))}")
    return "; ".join(parts)


def _skipped_text(skipped: Sequence[str]) -> str:
    cols = ", ".join(f"err_{p}" for p in skipped)
    return f"not reported (no finite value in {cols}: not estimated in this model)"


def make_report(
    run_dir: str | os.PathLike[str],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    aggregates: Sequence[str] = AGGREGATES,
    drop_smallest: Sequence[int] = (0, 1, 2, 3),
    exclude_at_bound: bool = False,
) -> dict[str, Any]:
    """Read ``run_dir/fits.csv`` and ``run_dir/manifest.json``, write all tables and the figure.

    Writes into ``run_dir``: ``slopes.csv``, ``slopes.md``, ``slopes.tex``, ``slopes.json``,
    ``sensitivity.csv``, ``sensitivity.md``, ``rates.png``, ``rates.pdf``. A missing manifest is
    tolerated (theory columns are then NaN and the summary says so).

    Returns:
        ``{"rows": export rows, "slope_rows": raw compute_slopes rows, "sensitivity": drop-k rows,
        "terminal": printable summary str, "paths": {name: Path}, "manifest": dict}``.
    """
    run = Path(run_dir)
    fits = read_fits_csv(run / "fits.csv")
    manifest_path = run / "manifest.json"
    manifest = read_manifest(manifest_path) if manifest_path.exists() else {}
    regime, gamma = manifest.get("regime"), manifest.get("gamma")
    name = manifest.get("name", run.name)
    config = manifest.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    skipped = skipped_parameters(fits, DEFAULT_PARAMETERS, model)

    slope_rows = compute_slopes(
        fits,
        aggregates=aggregates,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        drop_smallest=drop_smallest,
        exclude_at_bound=exclude_at_bound,
        model=model,
    )
    hypotheses = theory_regime(regime, model)  # "overfitted" for m_hat > m* (heterogeneous)
    rows = build_export_rows(slope_rows, hypotheses, gamma)
    sensitivity = build_sensitivity_rows(slope_rows, hypotheses, gamma)
    metadata = {
        "name": name,
        "regime": regime,
        "gamma": gamma,
        "run_dir": str(run),
        "n_boot": n_boot,
        "ci": ci,
        "seed": seed,
        "exclude_at_bound": exclude_at_bound,
        "theory": "uniform (minimax) exponents of docs/theory.md section 3 (over-fitted runs: "
        "section 5); pointwise alternative in theory_pointwise; agree = yes if the CI contains "
        "the uniform exponent, else slope minus theory",
        "hypotheses": hypotheses,
        "fits_summary": _status_summary(fits),
        "skipped_blocks": skipped,
    }
    paths = write_tables(run, rows, sensitivity, metadata)
    g = f", gamma = {gamma:g}" if isinstance(gamma, int | float) else ""
    png, pdf = plot_rates(
        fits,
        slope_rows,
        hypotheses,
        gamma,
        run / "rates",
        title=f"{name}: {regime} regime{g}",
        exclude_at_bound=exclude_at_bound,
    )
    paths["rates_png"], paths["rates_pdf"] = png, pdf
    cells = cell_rows(fits) if is_overfitted(model) else None  # m_hat > m*: cells.{csv,md}
    if cells is not None:
        paths.update(write_cells(run, cells, model, name))
    evidence = run_evidence(run, fits)
    if cells is not None and evidence is not None:  # over-fitted: the weighted Voronoi loss
        paths.update(write_weighted_voronoi(run, fits, evidence, name, n_boot=n_boot, seed=seed))
    coverage_note = None
    if evidence is not None and not is_overfitted(model):
        paths.update(write_coverage(run, evidence, name))
    elif evidence is None:
        coverage_note = "no estimates.npz: no coverage table (run with a current moejax)"

    lines = [f"run {name} ({regime or 'regime unknown'}{g})", _status_summary(fits)]
    if not manifest:
        lines.append("WARNING: no manifest.json; theory columns are nan")
    if skipped:
        lines.append(_skipped_text(skipped))
    if coverage_note:
        lines.append(coverage_note)
    lines += [
        "",
        format_terminal(rows, TERMINAL_COLUMNS),
        "",
        "sensitivity of the log_median slope (drop the k smallest usable sizes; all "
        "aggregates in sensitivity.md):",
    ]
    lines.append(
        format_terminal(
            [r for r in sensitivity if r.get("aggregate") == "log_median"], SENSITIVITY_COLUMNS
        )
    )
    if cells is not None:
        lines += ["", "Voronoi cells per n (cells.md):", format_terminal(cells, CELL_COLUMNS)]
    return {
        "rows": rows,
        "slope_rows": slope_rows,
        "sensitivity": sensitivity,
        "terminal": "\n".join(lines),
        "paths": paths,
        "manifest": manifest,
        "cells": cells,
    }


def run_evidence(run: Path, fits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """A run's estimates.npz with fits.csv's ``converged`` beside it (rows checked to be
    fits.csv's, in its order), or None when the run has no estimates.npz."""
    path = Path(run) / "estimates.npz"
    if not path.is_file():
        return None
    ev = read_estimates(path)
    same = len(ev["n"]) == len(fits["n"]) and np.array_equal(ev["n"], fits["n"])
    if not (same and np.array_equal(ev["replicate"], fits["replicate"])):
        raise ValueError(f"{path}: its rows are not fits.csv's (rerun the sweep to rewrite both)")
    ev["converged"] = np.asarray(fits["converged"])
    return ev

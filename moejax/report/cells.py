"""The per-n cell table of an over-fitted run (more fitted adapters than true ones).

Each fitted adapter is assigned to its nearest true adapter (`moejax.voronoi`): a true
adapter's cell may be empty (``n_empty_cells`` in fits.csv counts those) or shared by two or
more fitted adapters (``n_shared_cells``). Per sample size the table gives how often either
happens:

    n                     sample size
    n_fits                fits at this n (every status)
    n_converged           converged fits: the statistics below are over these (the fits the
                          slopes use), with a count of MISSING_INT (an older fits.csv without
                          the column) left out
    mean_n_empty_cells    mean number of empty cells per fit
    mean_n_shared_cells   mean number of shared cells per fit
    frac_shared           fraction of fits with at least one shared cell
    frac_empty            fraction of fits with at least one empty cell

`write_cells` writes it as ``cells.csv`` and ``cells.md``; `moejax.report.make_report` does so
for every run whose manifest says ``model.fitted_adapters > model.adapters``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from moejax.atomic import write_text_atomic

from .table import MISSING_INT, write_csv_atomic
from .tables import to_markdown
from .theory import is_overfitted

CELL_COLUMNS: tuple[str, ...] = (
    "n",
    "n_fits",
    "n_converged",
    "mean_n_empty_cells",
    "mean_n_shared_cells",
    "frac_shared",
    "frac_empty",
)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


def cell_rows(fits: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per sample size (increasing) with the `CELL_COLUMNS` of the module docstring.

    Args:
      fits: fits.csv columns (`moejax.report.table.read_fits_csv`), each of shape (N,): ``n``,
        ``converged`` (or ``status``), ``n_empty_cells`` and ``n_shared_cells`` (a missing
        count column gives NaN statistics).

    Returns:
      list of dicts, ints for the counts, floats (NaN when no converged fit has the count) for
      the means and fractions.
    """
    n = np.asarray(fits["n"])
    if "converged" in fits:
        conv = np.asarray(fits["converged"]) == 1
    elif "status" in fits:
        conv = np.asarray(fits["status"]) == "converged"
    else:
        conv = np.ones(n.shape, bool)
    missing = np.full(n.shape, MISSING_INT)
    empty = np.asarray(fits.get("n_empty_cells", missing))
    shared = np.asarray(fits.get("n_shared_cells", missing))
    rows = []
    for size in np.unique(n):
        at = n == size
        e = empty[at & conv & (empty != MISSING_INT)]
        s = shared[at & conv & (shared != MISSING_INT)]
        rows.append(
            {
                "n": int(size),
                "n_fits": int(np.sum(at)),
                "n_converged": int(np.sum(at & conv)),
                "mean_n_empty_cells": _mean(e),
                "mean_n_shared_cells": _mean(s),
                "frac_shared": _mean((s >= 1).astype(float)),
                "frac_empty": _mean((e >= 1).astype(float)),
            }
        )
    return rows


def write_cells(
    run_dir: str | os.PathLike[str],
    rows: list[dict[str, Any]],
    model: Mapping[str, Any] | None = None,
    name: str = "run",
) -> dict[str, Path]:
    """Write ``cells.csv`` and ``cells.md`` (rows of `cell_rows`) into ``run_dir``
    (atomically). Returns {"cells_csv": path, "cells_md": path}."""
    run = Path(run_dir)
    m = ""
    if model:
        m = f"{model.get('fitted_adapters')} fitted adapters, {model.get('adapters')} true"
    head = (
        f"# Voronoi cells: {name}\n\n"
        + (f"{m}. " if m else "")
        + "Each fitted adapter belongs to the cell of its nearest true adapter; a cell is "
        "empty (no fitted adapter) or shared (two or more). Means and fractions over the "
        "converged fits at each n (`n_converged` of `n_fits`).\n\n"
    )
    return {
        "cells_csv": write_csv_atomic(run / "cells.csv", CELL_COLUMNS, rows),
        "cells_md": write_text_atomic(run / "cells.md", head + to_markdown(rows, CELL_COLUMNS)),
    }


__all__ = ["CELL_COLUMNS", "cell_rows", "is_overfitted", "write_cells"]

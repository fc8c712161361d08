"""Comparing fits.csv files (shared by the sweep, distributed and streaming tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from moejax.sweep.store import FIT_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, STR_COLUMNS


def read_fits(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def assert_fits_equal(
    a: Path, b: Path, only_replicates: int | None = None, only_n: int | None = None
) -> None:
    """fits.csv files agree: same header and (n, replicate) rows; integer and string columns
    equal; float columns equal to 1e-9 relative (nan == nan), grad_norm to 1e-9 absolute (the
    rounding noise of a converged fit below the solver's gtol: two programs compiled or batched
    differently may differ there). ``only_replicates`` / ``only_n`` restrict both tables to
    replicates < only_replicates / to n == only_n."""
    ha, ra = read_fits(a)
    hb, rb = read_fits(b)
    assert ha == hb == list(FIT_COLUMNS)
    if only_replicates is not None:
        ra = [r for r in ra if int(r["replicate"]) < only_replicates]
        rb = [r for r in rb if int(r["replicate"]) < only_replicates]
    if only_n is not None:
        ra = [r for r in ra if int(r["n"]) == only_n]
        rb = [r for r in rb if int(r["n"]) == only_n]
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb, strict=True):
        for c in (*INT_COLUMNS, *STR_COLUMNS):
            assert x[c] == y[c], (c, x, y)
    for c in FLOAT_COLUMNS:
        fa = np.array([float(r[c]) for r in ra])
        fb = np.array([float(r[c]) for r in rb])
        atol = 1e-9 if c == "grad_norm" else 1e-12
        np.testing.assert_allclose(fa, fb, rtol=1e-9, atol=atol, equal_nan=True, err_msg=c)

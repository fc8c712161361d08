"""Reading the sweep's results table; the report's CSV writer and Markdown table cells.

The sweep writes one row per fit to ``DIR/fits.csv`` (schema: `moejax.sweep.store`'s
``FIT_COLUMNS`` and its integer/float/text column lists). This module turns that file into a dict
of NumPy column arrays (all of length ``N``, the number of fits) and writes the report's CSV files
atomically (`moejax.atomic`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moejax.atomic import write_text_atomic
from moejax.sweep.schema import FLOAT_COLUMNS, INT_COLUMNS, LATER_INT_COLUMNS, STR_COLUMNS

#: ``n`` and ``replicate`` are required; a missing or unparseable value in an optional integer
#: column is stored as ``MISSING_INT`` (so ``converged == 1`` is then false). Empty float cells
#: become NaN.
REQUIRED_COLUMNS: tuple[str, ...] = ("n", "replicate")
MISSING_INT = -1

_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}


def _parse_float(text: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in {"none", "null", "na"}:
        return math.nan
    return float(text)  # accepts nan, inf, -inf, Infinity


def _parse_int(text: str, column: str, required: bool) -> int:
    text = text.strip()
    low = text.lower()
    if low in _TRUE:
        return 1
    if low in _FALSE:
        return 0
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text) if text else math.nan
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value.is_integer():
        return int(value)
    if required:
        raise ValueError(f"column {column!r}: cannot parse {text!r} as an integer")
    return MISSING_INT


def read_fits_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a sweep's ``fits.csv`` into column arrays.

    Args:
        path: CSV file with a header row, one row per fit.

    Returns:
        Dict mapping each known column present in the file to an array of shape ``(N,)``:
        the store's ``INT_COLUMNS`` (``n, replicate, n_iter, inner_steps, converged, at_bound,
        n_empty_cells, n_shared_cells, start``) as int64 (a missing optional integer is
        ``MISSING_INT = -1``; ``n_shared_cells`` and ``start``, absent from files written before
        they existed, are ``MISSING_INT`` in every row then); its
        ``FLOAT_COLUMNS`` (``err_beta, err_exp_tau, err_eta, err_density, err_nu, err_voronoi,
        loglik, grad_norm``) as float64 (``nan``/``inf`` kept as such, empty cells become NaN;
        ``err_beta`` is NaN in every row under an input-free gate, ``err_density`` under
        regression experts); ``status`` as a str array. Unknown columns are ignored. If
        ``converged`` is absent but ``status`` is present, ``converged`` is derived as
        ``status == "converged"``.

    Raises:
        ValueError: if a required column (``n``, ``replicate``) is missing or unparseable.
    """
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration as exc:
            raise ValueError(f"{path}: empty file, no header row") from exc
        records = [row for row in reader if row and any(cell.strip() for cell in row)]

    index = {name: i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c not in index]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}")

    def cells(name: str) -> list[str]:
        i = index[name]
        return [row[i] if i < len(row) else "" for row in records]

    out: dict[str, np.ndarray] = {}
    for name in INT_COLUMNS:
        if name in index:
            required = name in REQUIRED_COLUMNS
            out[name] = np.array(
                [_parse_int(c, name, required) for c in cells(name)], dtype=np.int64
            )
        elif name in LATER_INT_COLUMNS:
            out[name] = np.full(len(records), MISSING_INT, dtype=np.int64)
    for name in FLOAT_COLUMNS:
        if name in index:
            out[name] = np.array([_parse_float(c) for c in cells(name)], dtype=np.float64)
    for name in STR_COLUMNS:
        if name in index:
            out[name] = np.array([c.strip() for c in cells(name)], dtype=str)
    if "converged" not in out and "status" in out:
        out["converged"] = (out["status"] == "converged").astype(np.int64)
    return out


def read_estimates(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a run's estimates.npz (`moejax.sweep.store.write_estimates`): ``n`` and
    ``replicate`` (F,) and ``<group>.<leaf>`` (F, ...) for the groups estimate, se, on_bound
    and truth, rows in fits.csv's order."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``manifest.json`` (a JSON object) and return it as a dict."""
    with open(path) as handle:
        manifest = json.load(handle)
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: manifest must be a JSON object")
    return manifest


def _cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_csv_atomic(
    path: str | os.PathLike[str],
    header: Sequence[str],
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
) -> Path:
    """Write a CSV file atomically.

    Args:
        path: destination file.
        header: column names, length ``C``.
        rows: each either a sequence of ``C`` values or a mapping from column name to value
            (extra keys ignored, missing keys written empty). Floats are written with Python's
            shortest round-trip repr, so ``nan``/``inf`` appear as ``nan``/``inf``.

    Returns:
        The path written.
    """
    lines: list[list[Any]] = []
    for row in rows:
        if isinstance(row, Mapping):
            values = [row.get(name, "") for name in header]
        else:
            values = list(row)
            if len(values) != len(header):
                raise ValueError(f"row has {len(values)} values, header has {len(header)}")
        lines.append([_cell(v) for v in values])

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    writer.writerows(lines)
    return write_text_atomic(path, buffer.getvalue())


_UNESCAPED_PIPE = re.compile(r"(?<!\\)((?:\\\\)*)\|")


def md_cell(value: Any) -> str:
    """A value as the text of one Markdown table cell: every ``|`` not already escaped becomes
    ``\\|`` (so that ``$|e^{\\hat\\tau}-e^{\\tau^*}|$`` stays one cell), line breaks become
    spaces. Every Markdown table writer of the report builds its rows with `md_row`."""
    text = " ".join(str(value).splitlines())
    return _UNESCAPED_PIPE.sub(lambda m: m.group(1) + "\\|", text)


def md_row(cells: Iterable[Any]) -> str:
    """One Markdown table row ``| a | b |`` of `md_cell` texts."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"

"""Export tables: slope rows + theory -> CSV, Markdown, LaTeX, JSON and a terminal view.

The main export table has the columns :data:`EXPORT_COLUMNS` (``theory`` is the *uniform*
hypothesis of docs/theory.md section 3, ``theory_pointwise`` the pointwise one, ``agree``
compares the slope with the uniform exponent, see :func:`moejax.report.theory.agreement`). The
sensitivity table (:data:`SENSITIVITY_COLUMNS`) lists the slope after dropping the ``drop_k``
smallest usable sizes. All files are written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moejax.atomic import write_text_atomic

from .table import md_row, write_csv_atomic
from .theory import agreement, theory_or_nan

EXPORT_COLUMNS: tuple[str, ...] = (
    "parameter",
    "aggregate",
    "slope",
    "ci_low",
    "ci_high",
    "theory",
    "n_fits",
    "n_failed",
    "theory_pointwise",
    "agree",
    "n_at_bound",
    "slope_interior",
    "ci_low_interior",
    "ci_high_interior",
    "n_interior",
    "agree_interior",
)
#: The columns of the terminal summary (the export table less its counts and detail).
TERMINAL_COLUMNS: tuple[str, ...] = (
    "parameter",
    "aggregate",
    "slope",
    "ci_low",
    "ci_high",
    "theory",
    "theory_pointwise",
    "agree",
    "n_fits",
    "n_at_bound",
    "slope_interior",
    "ci_low_interior",
    "ci_high_interior",
    "agree_interior",
)
#: Extra per-row details kept in slopes.json (not in the CSV/Markdown/LaTeX tables).
DETAIL_KEYS: tuple[str, ...] = (
    "intercept",
    "n_sizes",
    "n_sizes_skipped",
    "n_min",
    "n_max",
    "n_nonconverged",
    "n_invalid_err",
    "n_excluded_at_bound",
    "n_outliers",
    "note",
)
SENSITIVITY_COLUMNS: tuple[str, ...] = (
    "parameter",
    "aggregate",
    "drop_k",
    "n_min",
    "n_sizes",
    "slope",
    "ci_low",
    "ci_high",
    "theory",
    "n_fits",
    "n_failed",
)
_FLOAT_DIGITS = 3


def build_export_rows(
    slope_rows: Sequence[Mapping[str, Any]], regime: str | None, gamma: float | None
) -> list[dict[str, Any]]:
    """Main export table from :func:`compute_slopes` rows (only ``drop_k == 0`` rows are used).

    Returns:
        One dict per (parameter, aggregate) with keys ``EXPORT_COLUMNS + DETAIL_KEYS``. Theory
        values are NaN (and ``agree`` is ``"n/a"``) when the regime or gamma is unknown.
    """
    out = []
    for r in slope_rows:
        if r["drop_k"] != 0:
            continue
        th = theory_or_nan(r["parameter"], regime, gamma)
        row = {
            "parameter": r["parameter"],
            "aggregate": r["aggregate"],
            "slope": r["slope"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "theory": th["uniform"],
            "n_fits": r["n_fits"],
            "n_failed": r["n_failed"],
            "theory_pointwise": th["pointwise"],
            "agree": agreement(r["slope"], r["ci_low"], r["ci_high"], th["uniform"]),
            "n_at_bound": r["n_at_bound"],
            "slope_interior": r["slope_interior"],
            "ci_low_interior": r["ci_low_interior"],
            "ci_high_interior": r["ci_high_interior"],
            "n_interior": r["n_interior"],
            "agree_interior": agreement(
                r["slope_interior"], r["ci_low_interior"], r["ci_high_interior"], th["uniform"]
            ),
        }
        row.update({k: r[k] for k in DETAIL_KEYS})
        out.append(row)
    return out


def build_sensitivity_rows(
    slope_rows: Sequence[Mapping[str, Any]], regime: str | None, gamma: float | None
) -> list[dict[str, Any]]:
    """Drop-k table: the rows of :func:`compute_slopes` that keep at least one usable size,
    keys :data:`SENSITIVITY_COLUMNS`, ordered by (parameter, aggregate, drop_k). A drop_k that
    leaves no usable size (dropping as many sizes as there are, or a block without a valid fit:
    ``n_sizes`` 0, ``n_min`` -1) says nothing and has no row; the main table reports such a
    block with its note."""
    order_p = {p: i for i, p in enumerate(dict.fromkeys(r["parameter"] for r in slope_rows))}
    order_a = {a: i for i, a in enumerate(dict.fromkeys(r["aggregate"] for r in slope_rows))}
    rows = sorted(
        (r for r in slope_rows if r["n_sizes"] > 0),
        key=lambda r: (order_p[r["parameter"]], order_a[r["aggregate"]], r["drop_k"]),
    )
    out = []
    for r in rows:
        row = {k: r[k] for k in SENSITIVITY_COLUMNS if k != "theory"}
        row["theory"] = theory_or_nan(r["parameter"], regime, gamma)["uniform"]
        out.append({k: row[k] for k in SENSITIVITY_COLUMNS})
    return out


def _fmt(value: Any, digits: int = _FLOAT_DIGITS) -> str:
    """Human format: floats with fixed decimals (``nan``/``inf`` spelled out), ints as is."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def format_terminal(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = EXPORT_COLUMNS
) -> str:
    """Aligned plain-text table (strings left-aligned, numbers right-aligned).

    Args:
        rows: export (or sensitivity) rows; ``columns`` selects and orders the shown keys.

    Returns:
        The table as one string; rows carrying a non-empty ``note`` get it listed below.
    """
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), int | float) for r in rows) and bool(rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    notes = [f"{r['parameter']}/{r['aggregate']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        out.append("")
        out += [f"note: {n}" for n in dict.fromkeys(notes)]
    return "\n".join(out)


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = EXPORT_COLUMNS) -> str:
    """GitHub-flavoured Markdown table of ``rows`` restricted to ``columns``."""
    head = md_row(columns)
    align = (
        "|"
        + "|".join(
            "---:" if rows and all(isinstance(r.get(c), int | float) for r in rows) else "---"
            for c in columns
        )
        + "|"
    )
    body = [md_row(_fmt(r.get(c, "")) for c in columns) for r in rows]
    return "\n".join([head, align, *body]) + "\n"


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_cell(value: Any) -> str:
    if isinstance(value, float):
        return "--" if not math.isfinite(value) else f"${value:.{_FLOAT_DIGITS}f}$"
    if isinstance(value, int):
        return f"${value}$"
    text = str(value)
    if text == "n/a":
        return "--"
    if text[:1] in "+-" and text[1:2].isdigit():
        return f"${text}$"
    return _tex_escape(text)


def to_latex(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = EXPORT_COLUMNS) -> str:
    """booktabs-style LaTeX ``tabular`` (needs ``\\usepackage{booktabs}``); underscores escaped."""
    spec = "".join(
        "r" if rows and all(isinstance(r.get(c), int | float) for r in rows) else "l"
        for c in columns
    )
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(_tex_escape(c) for c in columns) + r" \\",
        "\\midrule",
    ]
    lines += [" & ".join(_tex_cell(r.get(c, "")) for c in columns) + r" \\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _json_safe(value.item())
    return value


def _markdown_header(metadata: Mapping[str, Any]) -> str:
    name = metadata.get("name", "run")
    regime = metadata.get("regime")
    gamma = metadata.get("gamma")
    return (
        f"# Rate slopes: {name}\n\n"
        f"regime: {regime}, gamma: {gamma}. Slope of log(error aggregate) on log(n), "
        f"percentile bootstrap CI over replicates (level {metadata.get('ci', 0.95)}). "
        "`theory` is the uniform (minimax) exponent, `theory_pointwise` the pointwise one; "
        "`agree` is `yes` when the CI contains the uniform exponent, else slope minus theory. "
        "The `_interior` columns repeat the slope on the fits that end inside the box "
        "(`n_interior` of them; `n_at_bound` fits touch a bound): the box is part of the "
        "estimator, so a reading that holds in one of the two only is stated as such. "
        "`n_failed` counts non-converged fits and fits with nan/inf/non-positive error; "
        "they are excluded, never averaged.\n\n" + _skipped_markdown(metadata)
    )


def _skipped_markdown(metadata: Mapping[str, Any]) -> str:
    skipped = metadata.get("skipped_blocks") or []
    if not skipped:
        return ""
    cols = ", ".join(f"`err_{p}`" for p in skipped)
    return f"Not reported: {cols} (no finite value: the block is not estimated in this model).\n\n"


def _sensitivity_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Wide Markdown view: one line per (parameter, aggregate), one column per drop_k."""
    ks = sorted({r["drop_k"] for r in rows})
    groups: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["parameter"], r["aggregate"]), {})[r["drop_k"]] = r
    head = md_row(["parameter", "aggregate", "theory", *(f"drop {k}" for k in ks)])
    align = "|---|---|---:|" + "---:|" * len(ks)
    body = []
    for (p, a), by_k in groups.items():
        theory = next(iter(by_k.values()))["theory"]
        cells = []
        for k in ks:
            r = by_k.get(k)
            if r is None:
                cells.append("")
                continue
            cell = _fmt(r["slope"])
            if math.isfinite(r["ci_low"]):
                cell += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
            cells.append(cell + f" (n>={r['n_min']})" if r["n_min"] > 0 else cell)
        body.append(md_row([p, a, _fmt(theory), *cells]))
    return "\n".join([head, align, *body]) + "\n"


def write_tables(
    out_dir: str | os.PathLike[str],
    export_rows: Sequence[Mapping[str, Any]],
    sensitivity: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write slopes.{csv,md,tex,json} and sensitivity.{csv,md} into ``out_dir`` (atomically).

    Args:
        out_dir: destination directory (created if needed).
        export_rows: rows from :func:`build_export_rows`.
        sensitivity: rows from :func:`build_sensitivity_rows`.
        metadata: run information stored in slopes.json and shown in the Markdown heading
            (e.g. name, regime, gamma, n_boot, ci, seed).

    Returns:
        ``{"slopes_csv", "slopes_md", "slopes_tex", "slopes_json", "sensitivity_csv",
        "sensitivity_md"}`` -> path written.
    """
    out = Path(out_dir)
    meta = dict(metadata or {})
    paths = {
        "slopes_csv": write_csv_atomic(out / "slopes.csv", EXPORT_COLUMNS, export_rows),
        "slopes_md": write_text_atomic(
            out / "slopes.md", _markdown_header(meta) + to_markdown(export_rows)
        ),
        "slopes_tex": write_text_atomic(out / "slopes.tex", to_latex(export_rows)),
        "sensitivity_csv": write_csv_atomic(
            out / "sensitivity.csv", SENSITIVITY_COLUMNS, sensitivity
        ),
        "sensitivity_md": write_text_atomic(
            out / "sensitivity.md",
            "# Slope sensitivity to dropping the smallest sample sizes\n\n"
            "Cells: slope [bootstrap CI] (smallest n kept).\n\n"
            + _sensitivity_markdown(sensitivity),
        ),
    }
    record = {
        "metadata": meta,
        "columns": list(EXPORT_COLUMNS),
        "records": [dict(r) for r in export_rows],
        "sensitivity": [dict(r) for r in sensitivity],
    }
    paths["slopes_json"] = write_text_atomic(
        out / "slopes.json", json.dumps(_json_safe(record), indent=2, allow_nan=False) + "\n"
    )
    return paths

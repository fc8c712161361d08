"""Reporting layer: rate slopes, theory comparison, tables and figures from a sweep's fits table.

Pure NumPy + matplotlib (no JAX). Typical use::

    from moejax.report import make_report
    result = make_report("runs/hetero")  # writes slopes.*, sensitivity.*, rates.png/pdf
    print(result["terminal"])

Also: ``write_study`` (the study report of a grid: a statistic per point and block against one
quantity, with theory lines and published references; see :mod:`moejax.report.study`).
"""

from moejax.atomic import write_text_atomic

from .plots import plot_comparison, plot_rates
from .report import make_report
from .slopes import (
    AGGREGATES,
    DEFAULT_PARAMETERS,
    OPTIONAL_PARAMETERS,
    block_data,
    compute_slopes,
    main_rows,
    ols_slope,
    resolve_parameters,
    skipped_parameters,
    valid_errors_by_size,
)
from .study import load_study, study_rows, write_study
from .table import read_fits_csv, read_manifest, write_csv_atomic
from .tables import (
    EXPORT_COLUMNS,
    SENSITIVITY_COLUMNS,
    TERMINAL_COLUMNS,
    build_export_rows,
    build_sensitivity_rows,
    format_terminal,
    to_latex,
    to_markdown,
    write_tables,
)
from .theory import agreement, theory_slope

__all__ = [
    "AGGREGATES",
    "DEFAULT_PARAMETERS",
    "EXPORT_COLUMNS",
    "OPTIONAL_PARAMETERS",
    "SENSITIVITY_COLUMNS",
    "TERMINAL_COLUMNS",
    "agreement",
    "block_data",
    "build_export_rows",
    "build_sensitivity_rows",
    "compute_slopes",
    "format_terminal",
    "load_study",
    "main_rows",
    "make_report",
    "ols_slope",
    "plot_comparison",
    "plot_rates",
    "read_fits_csv",
    "read_manifest",
    "resolve_parameters",
    "skipped_parameters",
    "study_rows",
    "theory_slope",
    "to_latex",
    "to_markdown",
    "valid_errors_by_size",
    "write_csv_atomic",
    "write_study",
    "write_tables",
    "write_text_atomic",
]

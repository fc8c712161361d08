"""Reporting layer: rate slopes, theory comparison, tables and figures from a sweep's fits table.

Pure NumPy + matplotlib (no JAX). Typical use::

    from moejax.report import make_report
    result = make_report("runs/hetero")  # writes slopes.*, sensitivity.*, rates.png/pdf
    print(result["terminal"])

Also: ``write_predecessor`` (our slopes beside the regression predecessor's published ones) and
``write_gates`` (input-free vs softmax gate: error against the adapter weight).
"""

from moejax.atomic import write_text_atomic

from .gates import GateRun, adapter_weight, gate_rows, load_gate_run, write_gates
from .plots import plot_comparison, plot_rates
from .predecessor import PUBLISHED_SLOPES, predecessor_rows, write_predecessor
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
from .table import read_fits_csv, read_manifest, write_csv_atomic
from .tables import (
    EXPORT_COLUMNS,
    SENSITIVITY_COLUMNS,
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
    "PUBLISHED_SLOPES",
    "SENSITIVITY_COLUMNS",
    "GateRun",
    "adapter_weight",
    "agreement",
    "block_data",
    "build_export_rows",
    "build_sensitivity_rows",
    "compute_slopes",
    "format_terminal",
    "gate_rows",
    "load_gate_run",
    "main_rows",
    "make_report",
    "ols_slope",
    "plot_comparison",
    "plot_rates",
    "predecessor_rows",
    "read_fits_csv",
    "read_manifest",
    "resolve_parameters",
    "skipped_parameters",
    "theory_slope",
    "to_latex",
    "to_markdown",
    "valid_errors_by_size",
    "write_csv_atomic",
    "write_gates",
    "write_predecessor",
    "write_tables",
    "write_text_atomic",
]

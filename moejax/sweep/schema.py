"""The per-fit result schema: every column of fits.csv once, with its kind and meaning.

The store writes the columns in this order and by these kinds, the report's reader parses them
by kind, the configs reference lists them (docs/configs.md, generated), and a lane's results
(`moejax.sweep.simulate.fit_lane`) must hold every one of them but ``n``, ``replicate`` (the
engine adds those) and ``status`` (written from ``status_code`` by `STATUS_NAMES`): adding a
column is one line here plus the lane code that computes it.

Kinds: ``int`` (written as an integer), ``float`` (shortest repr, ``nan`` / ``inf`` as such),
``status`` (the name of a status code). A column marked ``later`` was added after fits.csv
files were first written without it: the reader gives ``MISSING_INT`` in every row of an older
file.
"""

from __future__ import annotations

from typing import NamedTuple

from moejax.estimation.solvers import STATUS_NAMES

KINDS = ("int", "float", "status")


class Column(NamedTuple):
    """One fits.csv column: its name, kind (`KINDS`), meaning, and whether older files lack it."""

    name: str
    kind: str
    meaning: str
    later: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("n", "int", "sample size"),
    Column("replicate", "int", "replicate index (the lane's keys fold in seed, n, replicate)"),
    Column("err_beta", "float", "error of the gate slopes beta (empty: no beta in the model)"),
    Column("err_exp_tau", "float", "error of exp(tau), the gate intercept's scale"),
    Column("err_eta", "float", "error of the adapter's weights eta"),
    Column("err_density", "float", "mean Hellinger distance of the fitted class distributions"),
    Column("err_nu", "float", "error of the adapters' variances nu (regression experts)"),
    Column("err_voronoi", "float", "Voronoi loss (more than one fitted adapter)"),
    Column("loglik", "float", "log-likelihood at the estimate"),
    Column("n_iter", "int", "solver iterations (direct) or EM maps (EM)"),
    Column("inner_steps", "int", "solver iterations in total (EM: M-steps and polishing)"),
    Column("converged", "int", "1 when the fit converged by its own rule"),
    Column("at_bound", "int", "1 when a coordinate of the estimate lies on its box bound"),
    Column("n_empty_cells", "int", "Voronoi cells with no fitted adapter"),
    Column("n_shared_cells", "int", "Voronoi cells with more than one fitted adapter", True),
    Column("status", "status", f"how the fit ended: {', '.join(STATUS_NAMES)}"),
    Column("grad_norm", "float", "projected-gradient inf-norm at the estimate"),
    Column("start", "int", "the winning start of a multi-start fit (0 otherwise)", True),
    Column(
        "passes",
        "int",
        "passes over the data the fit needed, backtracks included (-1: EM, not counted)",
        True,
    ),
)

#: The columns in file order.
FIT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
#: Integer columns (the flags ``converged`` and ``at_bound`` are 0/1).
INT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind == "int")
#: Text columns (status names).
STR_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind == "status")
#: Float columns.
FLOAT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind == "float")
#: Integer columns older files lack (read as ``MISSING_INT``).
LATER_INT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.later and c.kind == "int")
#: Columns a lane's results hold (the engine adds n and replicate; status comes from the code).
LANE_COLUMNS: tuple[str, ...] = (
    *(c.name for c in COLUMNS if c.name not in ("n", "replicate") and c.kind != "status"),
    "status_code",
)
#: The groups of kept arrays beside fits.csv's columns (``<group>.<leaf>`` keys of a lane's
#: results, of the parts and of estimates.npz, one per MixParams leaf; ``moejax.simulate``
#: returns each group as one MixParams): the estimate, its standard errors, its coordinates
#: on a box bound (int8), the truth G*(n).
KEPT_GROUPS: tuple[str, ...] = ("estimate", "se", "on_bound", "truth")

if any(c.kind not in KINDS for c in COLUMNS) or len(set(FIT_COLUMNS)) != len(FIT_COLUMNS):
    raise RuntimeError("schema: a column of unknown kind, or a column listed twice")

__all__ = [
    "COLUMNS",
    "FIT_COLUMNS",
    "FLOAT_COLUMNS",
    "INT_COLUMNS",
    "KEPT_GROUPS",
    "KINDS",
    "LANE_COLUMNS",
    "LATER_INT_COLUMNS",
    "STATUS_NAMES",
    "STR_COLUMNS",
    "Column",
]

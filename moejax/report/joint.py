"""The joint rate fit of a drift study: log error = a log n + c log delta_n + const.

Every point of a drift study has a truth eta*(n) = eta0 + Delta n^(-gamma), so at sample size n
its distance to the frozen expert is delta_n = ||Delta||_F n^(-gamma)
(:func:`moejax.sweep.grid.drift_size`, read from the run's manifest config; only eta's drift
counts, a regression model's ``truth.nu_delta`` is left out). Both hypotheses of docs/theory.md
(section 3.6) say error ~ n^a delta_n^c with a = -1/2 and a block-dependent c; along one point,
delta_n = ||Delta|| n^(-gamma) turns that into the per-point exponent a - c gamma. Across points
with several gammas, or several ||Delta|| at one gamma, n and delta_n are no longer tied and a
and c are separately identified.

The fit, per block: a *cell* is one (point, n) with at least one valid fit (the rule of
:func:`moejax.report.slopes.valid_errors_by_size`: converged, finite positive error; fits on a
bound of the box kept); its response is the log of the median of its valid errors; a, c and the
constant are the least-squares coefficients of the responses on ``[log n, log delta_n, 1]``.
Points with delta_n = 0 (no drift: Delta = 0, or a heterogeneous truth) cannot enter and are
named; points with gamma = 0 and Delta != 0 enter with a delta_n constant in n. The *interior*
fit is the same fit on the fits inside the box only (``at_bound == 0``).

Bootstrap: percentile CI from ``n_boot`` draws (1000 by default). Replicates are resampled with
replacement within each cell, independently across cells, and the fit is recomputed. Seed rule
(the convention of :mod:`moejax.report.slopes`): the draws of one block come from one Generator
``numpy.random.default_rng([seed, crc32(block)])``, which draws one ``(n_boot, m)`` index array
per cell in cell order (points in study order, then sizes ascending); the interior fit uses a
fresh Generator with the same seed. The cells are treated as independent; note that the points
of one sweep share their seed, so replicate r at size n of two points reuses the same random
keys, which correlates their errors (a caveat for the CIs, not a bias of the point estimates).

A design that cannot separate a from c is refused: from the runs' planned cells with a
ValueError naming ``study.joint`` (:func:`moejax.sweep.grid.check_joint_design`); from the valid
cells (too few, or tied after failures) the row has NaN coefficients and a note.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from moejax.sweep.grid import check_joint_design, drift_size, joint_design_rank

from .slopes import _bootstrap_aggregates, block_data, valid_errors_by_size
from .theory import theory_regime, theory_slope

#: Columns of ``study-joint.csv`` (one row per block).
JOINT_COLUMNS: tuple[str, ...] = (
    "block",
    "a",
    "a_ci_low",
    "a_ci_high",
    "c",
    "c_ci_low",
    "c_ci_high",
    "const",
    "resid_sd",
    "uniform_a",
    "uniform_c",
    "pointwise_a",
    "pointwise_c",
    "a_theory_in_ci",
    "uniform_c_in_ci",
    "pointwise_c_in_ci",
    "verdict",
    "a_interior",
    "a_interior_ci_low",
    "a_interior_ci_high",
    "c_interior",
    "c_interior_ci_low",
    "c_interior_ci_high",
    "a_theory_in_ci_interior",
    "uniform_c_in_ci_interior",
    "pointwise_c_in_ci_interior",
    "verdict_interior",
    "n_points",
    "n_cells",
    "n_cells_interior",
    "n_fits",
    "n_fits_interior",
    "n_at_bound",
    "n_failed",
    "n_min",
    "n_max",
    "delta_min",
    "delta_max",
    "points_left_out",
    "note",
)
NOTE_SINGULAR = "the valid cells' design [log n, log delta_n, 1] is singular: a, c undefined"


class RunLike(Protocol):
    """What the joint fit reads of a study's run (:class:`moejax.report.study.StudyRun`)."""

    point: str
    manifest: dict[str, Any]
    fits: Mapping[str, np.ndarray]


def joint_theory(block: str) -> dict[str, tuple[float, float]]:
    """Each hypothesis' ``(a, c)`` for one block, derived from
    :func:`moejax.report.theory.theory_slope`: its homogeneous exponent is a - c gamma, linear in
    gamma, so a = exponent(0) and c = exponent(0) - exponent(1).

    Returns:
        ``{"uniform": (a, c), "pointwise": (a, c)}``; NaNs where no hypothesis is stated.
    """
    at0 = theory_slope(block, "homogeneous", 0.0)
    at1 = theory_slope(block, "homogeneous", 1.0)
    return {h: (at0[h], at0[h] - at1[h]) for h in ("uniform", "pointwise")}


def _in(value: float, low: float, high: float) -> str:
    if not all(math.isfinite(v) for v in (value, low, high)):
        return "n/a"
    return "yes" if low <= value <= high else "no"


def verdict(low: float, high: float, c_uniform: float, c_pointwise: float) -> str:
    """Which hypothesis' c lies in the CI ``[low, high]``: ``"uniform"``, ``"pointwise"``,
    ``"both"`` (the CI holds both), ``"both (same c)"`` (they predict one c and it is inside),
    ``"neither"``, or ``"n/a"`` (no CI or no prediction)."""
    u, p = _in(c_uniform, low, high), _in(c_pointwise, low, high)
    if "n/a" in (u, p):
        return "n/a"
    if c_uniform == c_pointwise:
        return "both (same c)" if u == "yes" else "neither"
    return {("yes", "yes"): "both", ("yes", "no"): "uniform", ("no", "yes"): "pointwise"}.get(
        (u, p), "neither"
    )


def ols_joint(log_n: np.ndarray, log_delta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``y`` on ``[log n, log delta_n, 1]``.

    Args:
        log_n, log_delta: shape ``(C,)``, a design of rank 3.
        y: shape ``(C,)`` or ``(C, B)`` (B right-hand sides, e.g. bootstrap draws).

    Returns:
        ``(a, c, const)`` stacked: shape ``(3,)`` or ``(3, B)``.
    """
    x = np.column_stack([log_n, log_delta, np.ones(len(log_n))]).astype(np.float64)
    return np.linalg.lstsq(x, np.asarray(y, dtype=np.float64), rcond=None)[0]


def _cells(
    runs: Sequence[tuple[RunLike, float, float]], block: str, exclude_at_bound: bool
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(log_n (C,), log_delta (C,), errors: C arrays of the cells' valid errors)``."""
    log_n, log_delta, errors = [], [], []
    for run, norm, gamma in runs:
        sizes, errs = valid_errors_by_size(run.fits, block, exclude_at_bound)
        for n, e in zip(sizes, errs, strict=True):
            log_n.append(math.log(n))
            log_delta.append(math.log(norm) - gamma * math.log(n))
            errors.append(e)
    return np.array(log_n), np.array(log_delta), errors


def _fit(
    runs: Sequence[tuple[RunLike, float, float]],
    block: str,
    exclude_at_bound: bool,
    n_boot: int,
    q: tuple[float, float],
    seed: int,
) -> dict[str, Any]:
    log_n, log_delta, errors = _cells(runs, block, exclude_at_bound)
    out: dict[str, Any] = {
        "n_cells": len(errors),
        "n_fits": int(sum(len(e) for e in errors)),
        "coef": np.full(3, math.nan),
        "ci": np.full((2, 3), math.nan),
        "resid_sd": math.nan,
        "log_n": log_n,
        "log_delta": log_delta,
        "note": "",
    }
    if joint_design_rank(log_n, log_delta) < 3:
        out["note"] = NOTE_SINGULAR
        return out
    y = np.log([np.median(e) for e in errors])  # (C,)
    coef = ols_joint(log_n, log_delta, y)
    out["coef"] = coef
    resid = y - np.column_stack([log_n, log_delta, np.ones(len(y))]) @ coef
    out["resid_sd"] = float(np.sqrt(resid @ resid / max(len(y) - 3, 1)))
    if n_boot > 0:
        rng = np.random.default_rng([int(seed), zlib.crc32(block.encode())])
        boot = _bootstrap_aggregates(errors, ("log_median",), n_boot, rng)["log_median"]
        coefs = ols_joint(log_n, log_delta, boot.T)  # (3, n_boot)
        out["ci"] = np.quantile(coefs, q, axis=1)  # (2, 3)
    return out


def joint_rows(
    runs: Sequence[RunLike],
    blocks: Sequence[str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The joint fit of a drift study, one row per block.

    Args:
        runs: the study's runs in point order (each with ``point``, ``manifest`` holding the
            resolved ``config`` and ``regime``, and the ``fits`` columns of shape ``(N,)``).
        blocks: the blocks to fit (those of the study's table); a run without a block's column
            is left out of that block.
        n_boot: bootstrap draws (0: no CI); ci: the percentile interval's level; seed: the
            bootstrap seed (see the module docstring for the rule).

    Returns:
        One dict per block with keys :data:`JOINT_COLUMNS`.

    Raises:
        ValueError: the runs' planned cells give a singular design (one line naming
            ``study.joint``; see :func:`moejax.sweep.grid.check_joint_design`).
    """
    check_joint_design([run.manifest.get("config", {}) for run in runs])
    q = ((1.0 - ci) / 2.0, (1.0 + ci) / 2.0)
    drifting: list[tuple[RunLike, float, float]] = []
    left_out: list[str] = []
    regimes = set()
    for run in runs:
        config = run.manifest.get("config", {})
        norm, gamma = drift_size(config)
        if norm > 0:
            drifting.append((run, norm, gamma))
            regimes.add(theory_regime(run.manifest.get("regime"), config.get("model")))
        else:
            left_out.append(run.point)
    rows = []
    for block in blocks:
        use = [t for t in drifting if f"err_{block}" in t[0].fits]
        theory = joint_theory(block)
        if regimes != {"homogeneous"}:  # an over-fitted drift has no hypothesis
            theory = {h: (math.nan, math.nan) for h in theory}
        all_fit = _fit(use, block, False, n_boot, q, seed)
        interior = _fit(use, block, True, n_boot, q, seed)
        row: dict[str, Any] = {"block": block}
        for key, res in (("", all_fit), ("_interior", interior)):
            (a, c, const), (lo, hi) = res["coef"], res["ci"]
            row[f"a{key}"], row[f"a{key}_ci_low"], row[f"a{key}_ci_high"] = (
                float(a),
                float(lo[0]),
                float(hi[0]),
            )
            row[f"c{key}"], row[f"c{key}_ci_low"], row[f"c{key}_ci_high"] = (
                float(c),
                float(lo[1]),
                float(hi[1]),
            )
            row[f"a_theory_in_ci{key}"] = _in(theory["uniform"][0], float(lo[0]), float(hi[0]))
            for h in ("uniform", "pointwise"):
                row[f"{h}_c_in_ci{key}"] = _in(theory[h][1], float(lo[1]), float(hi[1]))
            row[f"verdict{key}"] = verdict(
                float(lo[1]), float(hi[1]), theory["uniform"][1], theory["pointwise"][1]
            )
            if not key:
                row["const"], row["resid_sd"] = float(const), res["resid_sd"]
        sizes = np.exp(all_fit["log_n"]) if all_fit["n_cells"] else np.array([math.nan])
        deltas = np.exp(all_fit["log_delta"]) if all_fit["n_cells"] else np.array([math.nan])
        notes = [f"all fits: {all_fit['note']}"] if all_fit["note"] else []
        if interior["note"]:
            notes.append(f"interior fits: {interior['note']}")
        counts = [block_data(run.fits, block) for run, _, _ in use]
        row.update(
            uniform_a=theory["uniform"][0],
            uniform_c=theory["uniform"][1],
            pointwise_a=theory["pointwise"][0],
            pointwise_c=theory["pointwise"][1],
            n_points=len(use),
            n_cells=all_fit["n_cells"],
            n_cells_interior=interior["n_cells"],
            n_fits=all_fit["n_fits"],
            n_fits_interior=interior["n_fits"],
            n_at_bound=int(sum(int(d.at_bound.sum()) for d in counts)),
            n_failed=int(sum(int((d.nonconverged | d.invalid_err).sum()) for d in counts)),
            n_min=round(float(np.min(sizes))) if all_fit["n_cells"] else -1,
            n_max=round(float(np.max(sizes))) if all_fit["n_cells"] else -1,
            delta_min=float(np.min(deltas)),
            delta_max=float(np.max(deltas)),
            points_left_out=" ".join(left_out),
            note="; ".join(notes),
        )
        rows.append({k: row[k] for k in JOINT_COLUMNS})
    return rows


def _f(value: float, fmt: str = "+.3f") -> str:
    return format(value, fmt) if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def _est(row: Mapping[str, Any], name: str) -> str:
    lo, hi = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
    ci = f" [{_f(lo)}, {_f(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return _f(row[name]) + ci


def joint_markdown(rows: Sequence[Mapping[str, Any]], n_boot: int, ci: float) -> list[str]:
    """The joint fit as Markdown lines (a heading, what is fitted, one table row per block,
    the points left out and any notes); empty without rows."""
    if not rows:
        return []
    level = round(100 * ci)
    lines = [
        "",
        "## Joint fit in (n, delta_n)",
        "",
        "log(median error) of each cell (point, n) = a log n + c log delta_n + const, least "
        "squares over the cells of every drifting point (delta_n = ||truth.delta||_F "
        f"n^(-gamma) > 0); {level}% percentile bootstrap CI ({n_boot} draws, replicates "
        "resampled within each cell). Hypotheses (docs/theory.md section 3.6): error ~ "
        "n^(-1/2) delta_n^c, with the (a, c) below. 'c in CI' names the hypotheses whose c "
        "lies in the CI of c; 'a = -1/2' says whether their common a lies in the CI of a. "
        "Interior: the same fit on the fits inside the box only.",
        "",
        f"| block | a [{level}% CI] | c [{level}% CI] | uniform (a, c) | pointwise (a, c) | "
        "a = -1/2 | c in CI | interior a | interior c | interior c in CI | cells | fits | "
        "on a bound | residual sd |",
        "|---|---|---|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['block']} | {_est(r, 'a')} | {_est(r, 'c')} | "
            f"({_f(r['uniform_a'], '+g')}, {_f(r['uniform_c'], '+g')}) | "
            f"({_f(r['pointwise_a'], '+g')}, {_f(r['pointwise_c'], '+g')}) | "
            f"{r['a_theory_in_ci']} | {r['verdict']} | {_est(r, 'a_interior')} | "
            f"{_est(r, 'c_interior')} | {r['verdict_interior']} | {r['n_cells']} | "
            f"{r['n_fits']} | {r['n_at_bound']} | {_f(r['resid_sd'], '.3f')} |"
        )
    r0 = rows[0]
    lines += [
        "",
        f"Cells: {r0['n_points']} points, n {r0['n_min']} to {r0['n_max']}, delta_n "
        f"{_f(r0['delta_min'], '.3g')} to {_f(r0['delta_max'], '.3g')}."
        + (
            f" Left out (no drift, delta_n = 0): {r0['points_left_out']}."
            if r0["points_left_out"]
            else ""
        ),
    ]
    for r in rows:
        if r["note"]:
            lines.append(f"\nnote: {r['block']}: {r['note']}")
    return lines

"""Empirical rate exponents: log-log least-squares slopes with a replicate bootstrap.

For one parameter block, the fits table gives an error per (n, replicate). A fit is *valid* when
``converged == 1`` and its error is finite and > 0 (and, with ``exclude_at_bound``, it is not on a
box bound). Per sample size the valid errors are aggregated (``log_mean = log(mean(err))``,
``mean_log = mean(log(err))``, ``log_median = log(median(err))``) and the slope is the ordinary
least-squares slope of the aggregate on ``log(n)``. Sizes without any valid fit are skipped and
counted; fewer than two usable sizes gives ``slope = nan`` with a note.

The confidence interval is a percentile bootstrap: replicates are resampled with replacement
within each sample size, independently across sizes, the aggregates and the slope recomputed.
All aggregates share the same resampling indices, the draws of one block come from a Generator
seeded by ``(seed, crc32(block name))`` (so a block's numbers do not depend on which other blocks
are computed), and the draws are vectorised: one ``(n_boot, m_j)`` index array per size.

Sensitivity: ``drop_k = k`` drops the k smallest *usable* sample sizes (sizes with at least one
valid fit) and refits, reusing the same bootstrap draws. The failure counts of a ``drop_k > 0`` row
cover the fits above the largest dropped size; those of the ``drop_k = 0`` row cover the whole
table.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_PARAMETERS: tuple[str, ...] = ("beta", "exp_tau", "eta")
#: Blocks appended automatically when their column holds at least one finite value.
OPTIONAL_PARAMETERS: tuple[str, ...] = ("nu", "voronoi", "density")
#: Blocks every model estimates: reported whenever their column exists, even if no error in it
#: is finite (then every fit counts as failed and the slope is NaN with a note).
CORE_PARAMETERS: tuple[str, ...] = ("exp_tau", "eta")
#: Every block name the report knows (an unknown requested block without a column is an error).
KNOWN_PARAMETERS: tuple[str, ...] = ("beta", "exp_tau", "eta", "nu", "voronoi", "density")
AGGREGATES: tuple[str, ...] = ("log_mean", "mean_log", "log_median")
#: A valid fit is counted as an outlier (reported, never excluded) when its log error is more than
#: OUTLIER_Z robust standard deviations (1.4826 * MAD of the log errors at that n) from the median.
OUTLIER_Z = 5.0
NOTE_TOO_FEW = "fewer than 2 sample sizes with valid fits: slope undefined"

ROW_KEYS: tuple[str, ...] = (
    "parameter",
    "aggregate",
    "drop_k",
    "slope",
    "intercept",
    "ci_low",
    "ci_high",
    "n_sizes",
    "n_sizes_skipped",
    "n_min",
    "n_max",
    "n_fits",
    "n_failed",
    "n_nonconverged",
    "n_invalid_err",
    "n_at_bound",
    "n_excluded_at_bound",
    "n_outliers",
    "note",
    "slope_interior",
    "ci_low_interior",
    "ci_high_interior",
    "n_interior",
)
#: The columns of the same slope on the fits that end inside the box (``at_bound == 0``).
INTERIOR_KEYS: tuple[str, ...] = ("slope_interior", "ci_low_interior", "ci_high_interior")


@dataclass(frozen=True)
class BlockData:
    """Per-fit classification of one parameter block (all arrays have shape ``(N,)``)."""

    n: np.ndarray  # int64 sample size per fit
    err: np.ndarray  # float64 error per fit
    valid: np.ndarray  # bool, used in the fit
    nonconverged: np.ndarray  # bool, converged != 1
    invalid_err: np.ndarray  # bool, converged but error nan/inf/<= 0
    at_bound: np.ndarray  # bool, at_bound == 1
    excluded_at_bound: np.ndarray  # bool, otherwise valid but excluded for being on a bound


def block_data(
    fits: Mapping[str, np.ndarray], parameter: str, exclude_at_bound: bool = False
) -> BlockData:
    """Classify every fit of one parameter block as valid / failed / on a bound.

    Args:
        fits: column dict from :func:`moejax.report.read_fits_csv`; needs ``n`` and
            ``err_<parameter>`` (shape ``(N,)``); ``converged`` and ``at_bound`` are optional
            (absent ``converged`` means all converged, absent ``at_bound`` means none).
        parameter: block name, e.g. ``"beta"``.
        exclude_at_bound: also drop fits flagged ``at_bound == 1``.
    """
    column = f"err_{parameter}"
    if column not in fits:
        raise KeyError(f"fits table has no column {column!r}")
    n = np.asarray(fits["n"], dtype=np.int64)
    err = np.asarray(fits[column], dtype=np.float64)
    size = n.shape[0]
    converged = np.asarray(fits.get("converged", np.ones(size, np.int64))) == 1
    at_bound = np.asarray(fits.get("at_bound", np.zeros(size, np.int64))) == 1
    with np.errstate(invalid="ignore"):
        good_err = np.isfinite(err) & (err > 0)
    ok = converged & good_err
    excluded = ok & at_bound if exclude_at_bound else np.zeros(size, dtype=bool)
    return BlockData(
        n=n,
        err=err,
        valid=ok & ~excluded,
        nonconverged=~converged,
        invalid_err=converged & ~good_err,
        at_bound=at_bound,
        excluded_at_bound=excluded,
    )


def valid_errors_by_size(
    fits: Mapping[str, np.ndarray], parameter: str, exclude_at_bound: bool = False
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Valid errors grouped by sample size.

    Returns:
        ``(sizes, errors)``: ``sizes`` int64 of shape ``(J,)``, sorted, only sizes with at least
        one valid fit; ``errors[j]`` float64 of shape ``(m_j,)``, the valid errors at ``sizes[j]``.
    """
    data = block_data(fits, parameter, exclude_at_bound)
    sizes = np.unique(data.n[data.valid])
    return sizes, [data.err[data.valid & (data.n == s)] for s in sizes]


def aggregate(samples: np.ndarray, name: str) -> np.ndarray:
    """Aggregate positive errors along the last axis: ``(..., m) -> (...)`` in log space."""
    if name == "log_mean":
        return np.log(samples.mean(axis=-1))
    if name == "mean_log":
        return np.log(samples).mean(axis=-1)
    if name == "log_median":
        return np.log(np.median(samples, axis=-1))
    raise ValueError(f"unknown aggregate {name!r}; expected one of {AGGREGATES}")


def ols_slope(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line of ``y`` on ``x``, batched over leading axes.

    Args:
        x: shape ``(J,)``, J >= 2 distinct values.
        y: shape ``(..., J)``.

    Returns:
        ``(slope, intercept)``, each of shape ``y.shape[:-1]``.
    """
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean()
    slope = (y * xc).sum(axis=-1) / float(xc @ xc)
    intercept = y.mean(axis=-1) - slope * x.mean()
    return slope, intercept


def _count_outliers(errors: Sequence[np.ndarray]) -> np.ndarray:
    counts = np.zeros(len(errors), dtype=np.int64)
    for j, e in enumerate(errors):
        logs = np.log(e)
        med = np.median(logs)
        scale = 1.4826 * np.median(np.abs(logs - med))
        if scale > 0:
            counts[j] = int(np.sum(np.abs(logs - med) > OUTLIER_Z * scale))
    return counts


def _bootstrap_aggregates(
    errors: Sequence[np.ndarray], aggregates: Sequence[str], n_boot: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Bootstrap aggregates: ``{aggregate: array (n_boot, J)}``; same indices for all aggregates.

    Per size j one index array of shape ``(n_boot, m_j)`` is drawn. The errors are sorted first,
    so the median of a resample is read off the partitioned indices (cheaper than ``np.median``
    on the gathered floats; identical values).
    """
    out = {a: np.empty((n_boot, len(errors))) for a in aggregates}
    for j, e in enumerate(errors):
        e_sorted = np.sort(e)
        m = e_sorted.shape[0]
        idx = rng.integers(0, m, size=(n_boot, m))  # (n_boot, m_j)
        if "log_mean" in out:
            out["log_mean"][:, j] = np.log(e_sorted[idx].mean(axis=1))
        if "mean_log" in out:
            out["mean_log"][:, j] = np.log(e_sorted)[idx].mean(axis=1)
        if "log_median" in out:
            h = m // 2
            if m % 2:
                mid = np.partition(idx, h, axis=1)[:, h]
                med = e_sorted[mid]
            else:
                part = np.partition(idx, (h - 1, h), axis=1)
                med = 0.5 * (e_sorted[part[:, h - 1]] + e_sorted[part[:, h]])
            out["log_median"][:, j] = np.log(med)
    return out


def _rng_for(seed: int, parameter: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(parameter.encode())])


def model_has_beta(model: Mapping[str, Any] | None) -> bool | None:
    """Whether the model config (``manifest["config"]["model"]``) has a gate slope beta.

    Asks the gate object (`moejax.mix.gates.get_gate`): ``False`` for ``gate = "input_free"``,
    ``True`` for the other gates (a config without a ``gate`` key is the original softmax
    gate), ``None`` when there is no model config.
    """
    if not isinstance(model, Mapping):
        return None
    from moejax.mix.gates import GATES, get_gate  # the report reads tables; jax only here

    name = model.get("gate", "softmax")
    return get_gate(name).has_beta if name in GATES else True


def _has_finite(fits: Mapping[str, np.ndarray], parameter: str) -> bool:
    column = fits.get(f"err_{parameter}")
    return column is not None and bool(np.isfinite(np.asarray(column, dtype=np.float64)).any())


def _keep_block(
    fits: Mapping[str, np.ndarray], parameter: str, model: Mapping[str, Any] | None
) -> bool:
    if f"err_{parameter}" not in fits:
        if parameter not in KNOWN_PARAMETERS:
            raise KeyError(f"fits table has no column 'err_{parameter}'")
        return False
    if parameter in CORE_PARAMETERS or _has_finite(fits, parameter):
        return True
    # A column without any finite value: the block is not estimated in this model (beta under an
    # input-free gate, nu for classification experts), unless the config says it is (then the
    # block is kept so that its failures show).
    return parameter == "beta" and bool(model_has_beta(model))


def resolve_parameters(
    fits: Mapping[str, np.ndarray],
    parameters: Sequence[str] = DEFAULT_PARAMETERS,
    model: Mapping[str, Any] | None = None,
) -> list[str]:
    """The blocks to report, in order: the requested ones, then :data:`OPTIONAL_PARAMETERS`.

    A requested block is dropped when its column is absent, or when no value in it is finite and
    the block is not in :data:`CORE_PARAMETERS` (``beta`` under an input-free gate is NaN in every
    row); ``beta`` is kept anyway when ``model`` (the manifest's ``config["model"]``) says the gate
    has a slope, so that a dead beta block is reported as failed rather than hidden. Optional
    blocks (``nu``, ``voronoi``, ``density``) are appended when their column has a finite value.

    Raises:
        KeyError: a requested block that is not a known block name has no column.
    """
    out = [p for p in parameters if _keep_block(fits, p, model)]
    out += [p for p in OPTIONAL_PARAMETERS if p not in out and _has_finite(fits, p)]
    return out


def skipped_parameters(
    fits: Mapping[str, np.ndarray],
    parameters: Sequence[str] = DEFAULT_PARAMETERS,
    model: Mapping[str, Any] | None = None,
) -> list[str]:
    """Blocks whose ``err_<block>`` column exists but is left out by :func:`resolve_parameters`
    (no finite value in it), in the order requested blocks, then optional blocks."""
    kept = set(resolve_parameters(fits, parameters, model))
    names = dict.fromkeys([*parameters, *OPTIONAL_PARAMETERS])
    return [p for p in names if f"err_{p}" in fits and p not in kept]


def _row(parameter: str, agg: str, k: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"parameter": parameter, "aggregate": agg, "drop_k": k}
    row.update(values)
    return {key: row.get(key, math.nan) for key in ROW_KEYS}


def _block_rows(
    data: BlockData,
    parameter: str,
    aggregates: Sequence[str],
    n_boot: int,
    ci: float,
    seed: int,
    drop_smallest: Sequence[int],
) -> list[dict[str, Any]]:
    sizes = np.unique(data.n[data.valid])
    errors = [data.err[data.valid & (data.n == s)] for s in sizes]
    logn = np.log(sizes.astype(np.float64))
    points = {a: np.array([aggregate(e, a) for e in errors]) for a in aggregates}
    outliers = _count_outliers(errors)
    boot = (
        _bootstrap_aggregates(errors, aggregates, n_boot, _rng_for(seed, parameter))
        if n_boot > 0 and len(sizes) >= 2
        else None
    )
    q = ((1.0 - ci) / 2.0, (1.0 + ci) / 2.0)

    skipped = np.setdiff1d(np.unique(data.n), sizes)  # sizes without any valid fit
    rows = []
    for k in drop_smallest:
        if k == 0 or len(sizes) == 0:
            threshold = -np.inf  # whole table
        else:
            threshold = float(sizes[min(k, len(sizes)) - 1])  # drop sizes up to the k-th usable
        window = data.n > threshold
        kept = slice(k, None)
        n_used = max(len(sizes) - k, 0)
        counts = {
            "n_sizes": n_used,
            "n_sizes_skipped": int(np.sum(skipped > threshold)),
            "n_min": int(sizes[k]) if n_used > 0 else -1,
            "n_max": int(sizes[-1]) if n_used > 0 else -1,
            "n_fits": int(np.sum(data.valid & window)),
            "n_failed": int(np.sum((data.nonconverged | data.invalid_err) & window)),
            "n_nonconverged": int(np.sum(data.nonconverged & window)),
            "n_invalid_err": int(np.sum(data.invalid_err & window)),
            "n_at_bound": int(np.sum(data.at_bound & window)),
            "n_excluded_at_bound": int(np.sum(data.excluded_at_bound & window)),
            "n_outliers": int(outliers[kept].sum()),
        }
        for a in aggregates:
            slope = intercept = lo = hi = math.nan
            note = ""
            if n_used >= 2:
                s, c = ols_slope(logn[kept], points[a][kept])
                slope, intercept = float(s), float(c)
                if boot is not None:
                    bs, _ = ols_slope(logn[kept], boot[a][:, kept])
                    lo, hi = (float(v) for v in np.nanquantile(bs, q))
            else:
                note = NOTE_TOO_FEW
            rows.append(
                _row(
                    parameter,
                    a,
                    int(k),
                    slope=slope,
                    intercept=intercept,
                    ci_low=lo,
                    ci_high=hi,
                    note=note,
                    **counts,
                )
            )
    return rows


def compute_slopes(
    fits: Mapping[str, np.ndarray],
    parameters: Sequence[str] = DEFAULT_PARAMETERS,
    aggregates: Sequence[str] = AGGREGATES,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    drop_smallest: Sequence[int] = (0, 1, 2, 3),
    exclude_at_bound: bool = False,
    model: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Log-log rate slopes with bootstrap CIs, per parameter block, aggregate and drop_k.

    Args:
        fits: column dict (arrays of shape ``(N,)``) from :func:`read_fits_csv`; needs ``n`` and
            ``err_<p>`` for every requested block ``p``.
        parameters: blocks to fit; ``"nu"``, ``"voronoi"`` and ``"density"`` are appended
            automatically when the table has that ``err_`` column with at least one finite value;
            a block whose column is absent or NaN in every row is left out (no row), except
            ``exp_tau``/``eta``, and ``beta`` when ``model`` has a gate slope (see
            :func:`resolve_parameters`).
        aggregates: subset of ``("log_mean", "mean_log", "log_median")``.
        n_boot: bootstrap draws; 0 disables the CI (``ci_low = ci_high = nan``).
        ci: confidence level of the percentile interval, in (0, 1).
        seed: seed of the bootstrap Generator (results are reproducible).
        drop_smallest: values of ``drop_k`` to report; 0 (the main table) is always included.
        exclude_at_bound: also exclude fits flagged ``at_bound == 1``.
        model: the run's model config (``manifest["config"]["model"]``) or None; only used to
            decide whether an all-NaN ``err_beta`` is a missing block or a dead one.

    Returns:
        One dict per (parameter, drop_k, aggregate), keys :data:`ROW_KEYS`: ``slope``,
        ``intercept`` (of ``log(aggregate) = intercept + slope * log(n)``), ``ci_low``,
        ``ci_high``, ``n_sizes`` (sizes used), ``n_sizes_skipped`` (sizes with no valid fit),
        ``n_min``/``n_max`` (smallest/largest size used, -1 if none), ``n_fits`` (valid fits
        used), ``n_failed = n_nonconverged + n_invalid_err`` (not converged; converged with
        nan/inf/non-positive error), ``n_at_bound`` (flagged on a bound, used or not),
        ``n_excluded_at_bound``, ``n_outliers`` (valid fits > OUTLIER_Z robust SDs from their
        size's median log error; kept in the fit), ``note`` (non-empty when slope is nan), and
        the same slope on the fits inside the box (``at_bound == 0``): ``slope_interior``,
        ``ci_low_interior``, ``ci_high_interior`` (same bootstrap seed rule) and ``n_interior``
        (valid fits inside the box). The box is part of the estimator, not of the truth: a
        reading that holds on one of the two slopes only is not a reading of the rate.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    for a in aggregates:
        if a not in AGGREGATES:
            raise ValueError(f"unknown aggregate {a!r}; expected one of {AGGREGATES}")
    drops = sorted({0, *(int(k) for k in drop_smallest)})
    if drops[0] < 0:
        raise ValueError("drop_smallest values must be >= 0")
    rows: list[dict[str, Any]] = []
    for p in resolve_parameters(fits, parameters, model):
        data = block_data(fits, p, exclude_at_bound)
        block = _block_rows(data, p, aggregates, int(n_boot), ci, seed, drops)
        inner = block_data(fits, p, exclude_at_bound=True)
        if np.array_equal(inner.valid, data.valid):  # no valid fit on the box: same numbers
            interior = block
        else:
            interior = _block_rows(inner, p, aggregates, int(n_boot), ci, seed, drops)
        for r, ri in zip(block, interior, strict=True):
            r["slope_interior"] = ri["slope"]
            r["ci_low_interior"] = ri["ci_low"]
            r["ci_high_interior"] = ri["ci_high"]
            r["n_interior"] = ri["n_fits"]
        rows.extend(block)
    return rows


def main_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The main table: the rows with ``drop_k == 0``, in input order."""
    return [dict(r) for r in rows if r["drop_k"] == 0]

"""Start rules compared on the same data: a study whose points differ only in the start.

A sweep's data depend on its seed, n and replicate only, so the points of a study that varies
``init.*`` alone fit the same data sets. For such a study (``[study] starts = true``) this module
reads every point's fits.csv and gives:

- per n and point, the share of fits that reach the best log-likelihood found by any point on
  that data set (relative gap ``(best - loglik) / |best|`` at most ``gap`` = 1e-8, and
  converged): `reach_rows`;
- per point and block, the log-median slope of the error against n and its difference with the
  reference point (the first), each with a *paired* percentile bootstrap CI: the replicates are
  resampled within each n once per draw and the same draw is used for every point, so the
  difference's CI is that of a paired comparison on the same data: `difference_rows`.

A fit counts in a block's slope if it converged with a finite positive error (failed fits are
left out and counted, as in the slope tables); the medians are over those fits per n.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GAP = 1e-8
REACH_COLUMNS: tuple[str, ...] = ("point", "n", "fits", "reached", "share")
DIFF_COLUMNS: tuple[str, ...] = (
    "point",
    "block",
    "slope",
    "ci_low",
    "ci_high",
    "difference",
    "diff_ci_low",
    "diff_ci_high",
    "n_fits",
    "n_failed",
)


def _keys(run: Any) -> list[tuple[int, int]]:
    """A run's (n, replicate) per fits.csv row."""
    n, rep = np.asarray(run.fits["n"]).tolist(), np.asarray(run.fits["replicate"]).tolist()
    return list(zip(n, rep, strict=True))


def _aligned(runs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(n, replicate) keys common to every run, sorted, and each run's row index for them."""
    keys = None
    for r in runs:
        k = set(_keys(r))
        keys = k if keys is None else keys & k
    common = sorted(keys or ())
    if not common:
        raise ValueError("starts: the points share no (n, replicate) data set")
    n = np.array([c[0] for c in common], np.int64)
    rep = np.array([c[1] for c in common], np.int64)
    index = []
    for r in runs:
        pos = {k: i for i, k in enumerate(_keys(r))}
        index.append(np.array([pos[c] for c in common], np.int64))
    return n, rep, index


def reach_rows(runs: Sequence[Any], gap: float = GAP) -> list[dict[str, Any]]:
    """Per point and n: fits, fits that reached the best log-likelihood of any point on their
    data set (converged, relative gap <= ``gap``), and that share."""
    n, _, index = _aligned(runs)
    ll = np.stack(
        [np.asarray(r.fits["loglik"], np.float64)[i] for r, i in zip(runs, index, strict=True)]
    )
    conv = np.stack(
        [np.asarray(r.fits["converged"])[i] == 1 for r, i in zip(runs, index, strict=True)]
    )
    finite = np.where(np.isfinite(ll), ll, -np.inf)
    best = finite.max(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (best[None] - ll) / np.abs(best)[None]
    reached = conv & np.isfinite(rel) & (rel <= gap)
    rows = []
    for p, r in enumerate(runs):
        for size in np.unique(n):
            s = n == size
            k = int(reached[p, s].sum())
            rows.append(
                {
                    "point": r.point,
                    "n": int(size),
                    "fits": int(s.sum()),
                    "reached": k,
                    "share": k / int(s.sum()),
                }
            )
    return rows


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where nothing is left, without numpy's
    all-NaN warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=-1)


def _slopes(logn: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Least-squares slope of med[..., k] on logn[k] over the finite entries, per leading
    index (NaN with fewer than 2)."""
    ok = np.isfinite(med)
    x = np.where(ok, logn, 0.0)
    y = np.where(ok, med, 0.0)
    c = ok.sum(-1)
    with np.errstate(all="ignore"):
        xm = x.sum(-1) / c
        ym = y.sum(-1) / c
        sxy = (ok * (x - xm[..., None]) * (y - ym[..., None])).sum(-1)
        sxx = (ok * (x - xm[..., None]) ** 2).sum(-1)
        return np.where(c >= 2, sxy / sxx, np.nan)


def difference_rows(
    runs: Sequence[Any],
    blocks: Sequence[str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per point and block: the log-median slope with its CI, and its difference with the
    first point's slope with the paired bootstrap CI (see the module docstring)."""
    n, _, index = _aligned(runs)
    sizes = np.unique(n)
    groups = [np.flatnonzero(n == s) for s in sizes]
    logn = np.log(sizes.astype(np.float64))
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(g), (n_boot, len(g))) for g in groups]
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    rows = []
    for block in blocks:
        col = f"err_{block}"
        if not all(col in r.fits for r in runs):
            continue
        logs, failed = [], []
        for r, i in zip(runs, index, strict=True):
            err = np.asarray(r.fits[col], np.float64)[i]
            ok = (np.asarray(r.fits["converged"])[i] == 1) & np.isfinite(err) & (err > 0)
            logs.append(np.where(ok, err, np.nan))
            failed.append(int((~ok).sum()))
        if all(np.isnan(v).all() for v in logs):
            continue

        V = np.stack(logs)  # (points, fits): the error, NaN where the fit failed
        point = _slopes(logn, np.log(np.stack([_nanmedian(V[:, g]) for g in groups], axis=-1)))
        if n_boot:
            # (points, draws) medians per n from the same resampled replicates for every point
            med = np.stack(
                [_nanmedian(V[:, g][:, d]) for g, d in zip(groups, draws, strict=True)], axis=-1
            )
            boot = _slopes(logn, np.log(med)).T  # (draws, points)
        else:
            boot = np.empty((0, len(runs)))
        for p, r in enumerate(runs):
            diff = boot[:, p] - boot[:, 0]
            has = n_boot > 0 and np.isfinite(boot[:, p]).all()
            rows.append(
                {
                    "point": r.point,
                    "block": block,
                    "slope": float(point[p]),
                    "ci_low": float(np.percentile(boot[:, p], lo_q)) if has else np.nan,
                    "ci_high": float(np.percentile(boot[:, p], hi_q)) if has else np.nan,
                    "difference": float(point[p] - point[0]),
                    "diff_ci_low": float(np.percentile(diff, lo_q)) if has and p else np.nan,
                    "diff_ci_high": float(np.percentile(diff, hi_q)) if has and p else np.nan,
                    "n_fits": len(n),
                    "n_failed": failed[p],
                }
            )
    return rows


def starts_markdown(
    reach: Sequence[Mapping[str, Any]], diffs: Sequence[Mapping[str, Any]], reference: str
) -> list[str]:
    """The study.md section: the share reaching the best optimum (n x point) and the slopes
    with their paired differences to ``reference``."""
    from .table import md_row

    points = list(dict.fromkeys(r["point"] for r in reach))
    sizes = sorted({int(r["n"]) for r in reach})
    by = {(r["point"], int(r["n"])): r for r in reach}
    lines = [
        "## Start rules on the same data",
        "",
        "Share of fits (converged) that reach the best log-likelihood found by any point on "
        f"the same data set (relative gap <= {GAP:g}), per n:",
        "",
        md_row(["n", *points]),
        "|" + "|".join(["---:"] * (len(points) + 1)) + "|",
    ]
    for s in sizes:
        cells = [f"{by[(p, s)]['reached']}/{by[(p, s)]['fits']}" for p in points]
        lines.append(md_row([str(s), *cells]))
    total = {
        p: (
            sum(r["reached"] for r in reach if r["point"] == p),
            sum(r["fits"] for r in reach if r["point"] == p),
        )
        for p in points
    }
    lines.append(md_row(["all", *(f"{a}/{b}" for a, b in total.values())]))
    lines += [
        "",
        f"Log-median slope per point with its 95% bootstrap CI, and its difference with "
        f"{reference!r} (paired: the same replicates drawn for every point):",
        "",
        md_row(["point", "block", "slope", "95% CI", f"minus {reference}", "95% CI", "failed"]),
        "|---|---|---:|---|---:|---|---:|",
    ]

    def f(x: float) -> str:
        return f"{x:+.3f}" if np.isfinite(x) else ""

    for r in diffs:
        ci_s = f"[{f(r['ci_low'])}, {f(r['ci_high'])}]" if np.isfinite(r["ci_low"]) else ""
        ci_d = (
            f"[{f(r['diff_ci_low'])}, {f(r['diff_ci_high'])}]"
            if np.isfinite(r["diff_ci_low"])
            else ""
        )
        lines.append(
            md_row(
                [
                    r["point"],
                    r["block"],
                    f(r["slope"]),
                    ci_s,
                    f(r["difference"]),
                    ci_d,
                    str(r["n_failed"]),
                ]
            )
        )
    return [*lines, ""]


__all__ = [
    "DIFF_COLUMNS",
    "GAP",
    "REACH_COLUMNS",
    "difference_rows",
    "reach_rows",
    "starts_markdown",
]

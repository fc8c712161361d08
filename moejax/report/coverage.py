"""Standard errors checked against the Monte Carlo: bias, spread, SE calibration and the
coverage of Wald intervals, per sample size and scalar parameter.

Input: the kept evidence of every fit (`moejax.simulate`'s ``estimate`` / ``se`` /
``on_bound`` / ``truth``, or a run's estimates.npz) and its convergence flag. For each sample
size n and each scalar coordinate theta of the fitted model (beta[i], tau, eta[k, i], nu; one
set per adapter when m > 1), over the converged fits whose coordinate is inside the box and has
a finite standard error:

- ``bias``      mean(theta_hat - theta*)
- ``sd``        Monte Carlo standard deviation of theta_hat (ddof 1)
- ``mean_se``   mean standard error; ``se_ratio`` = mean_se / sd (1 when the observed
                information measures the estimator's spread)
- ``coverage``  share of fits with |theta_hat - theta*| <= z SE (z = 1.96 for 95%), with the
                Wilson score interval ``cov_low``, ``cov_high`` (binomial, level 95%)
- ``n_used``, ``n_no_se`` (converged fits left out: the coordinate on a bound, or no finite SE)

Coverage is defined only when the fitted coordinates are the truth's (exactly fitted,
m_hat = m*); over-fitted runs get no coverage table. ``z_scores`` gives the standardised errors
(theta_hat - theta*) / SE of every used fit at one n, for the normal QQ plot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from moejax.atomic import write_text_atomic

from .table import md_row, write_csv_atomic

COVERAGE_COLUMNS: tuple[str, ...] = (
    "n",
    "parameter",
    "truth",
    "n_used",
    "n_no_se",
    "bias",
    "sd",
    "mean_se",
    "se_ratio",
    "coverage",
    "cov_low",
    "cov_high",
)
LEAVES: tuple[str, ...] = ("beta", "tau", "eta", "nu")


def _leaf(evidence: Mapping[str, Any], group: str, leaf: str) -> np.ndarray | None:
    """``evidence[group].<leaf>`` (a MixParams) or ``evidence["group.leaf"]`` (npz keys)."""
    g = evidence.get(group)
    if g is not None:
        return np.asarray(getattr(g, leaf))
    key = f"{group}.{leaf}"
    return np.asarray(evidence[key]) if key in evidence else None


def flat_evidence(evidence: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The kept evidence as flat per-fit arrays: {"n", "converged" (if given), "<group>.<leaf>"
    (F, ...)}; the truth broadcast to every fit. Accepts `simulate`'s output ((sizes,
    replicates) leading axes, truth (sizes, ...)) or estimates.npz's arrays (F rows)."""
    n = np.asarray(evidence["n"])
    shape = n.shape
    F = n.size
    out: dict[str, np.ndarray] = {"n": n.reshape(F)}
    if "converged" in evidence:
        out["converged"] = np.asarray(evidence["converged"]).reshape(F)
    for group in ("estimate", "se", "on_bound", "truth"):
        for leaf in LEAVES:
            a = _leaf(evidence, group, leaf)
            if a is None:
                continue
            if a.shape[: len(shape)] != shape:  # the truth without its replicate axis
                a = np.broadcast_to(np.expand_dims(a, 1), shape + a.shape[1:])
            out[f"{group}.{leaf}"] = a.reshape((F, *a.shape[len(shape) :]))
    return out


def _coordinates(flat: Mapping[str, np.ndarray]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, leaf, index) of every estimated scalar coordinate: a leaf whose standard errors
    are not NaN in every fit (beta under the input-free gate and nu of categorical experts are
    never estimated)."""
    out = []
    m = flat["estimate.tau"].shape[1]
    for leaf in LEAVES:
        se = flat.get(f"se.{leaf}")
        if se is None or not np.isfinite(se).any():
            continue
        for idx in np.ndindex(*se.shape[1:]):
            j, rest = idx[0], idx[1:]
            base = leaf if m == 1 else f"{leaf}_{j + 1}"
            name = base + (f"[{','.join(str(i + 1) for i in rest)}]" if rest else "")
            out.append((name, leaf, idx))
    return out


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (NaN, NaN when n = 0)."""
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _used(flat: Mapping[str, np.ndarray], leaf: str, idx: tuple[int, ...]) -> tuple:
    """(estimate, truth, se, usable mask) of one coordinate over every fit."""
    sl = (slice(None), *idx)
    est = flat[f"estimate.{leaf}"][sl]
    tru = flat[f"truth.{leaf}"][sl]
    se = flat[f"se.{leaf}"][sl]
    conv = flat.get("converged", np.ones_like(est, dtype=np.int64)) == 1
    bound = flat.get(f"on_bound.{leaf}")
    inside = ~bound[sl].astype(bool) if bound is not None else np.ones_like(conv)
    ok = conv & inside & np.isfinite(se) & (se > 0) & np.isfinite(est)
    return est, tru, se, ok, conv


def coverage_rows(evidence: Mapping[str, Any], level: float = 0.95) -> list[dict[str, Any]]:
    """One row per (n, scalar coordinate) with the keys `COVERAGE_COLUMNS` (see the module
    docstring). ``evidence``: `simulate`'s output or estimates.npz's arrays (with
    ``converged`` taken from fits.csv when given). Raises ValueError when the estimate and the
    truth have different numbers of adapters (over-fitted: coverage undefined)."""
    if not 0 < level < 1:
        raise ValueError(f"level: must lie in (0, 1), got {level}")
    flat = flat_evidence(evidence)
    if "estimate.tau" not in flat or "se.tau" not in flat or "truth.tau" not in flat:
        raise ValueError("evidence: expected the kept estimate, se and truth arrays")
    if flat["estimate.tau"].shape[1] != flat["truth.tau"].shape[1]:
        raise ValueError(
            "evidence: the fit has more adapters than the truth (over-fitted): the coordinates "
            "have no true value to cover"
        )
    z = NormalDist().inv_cdf(0.5 + level / 2)
    rows = []
    for n in np.unique(flat["n"]):
        at = flat["n"] == n
        for name, leaf, idx in _coordinates(flat):
            est, tru, se, ok, conv = (a[at] for a in _used(flat, leaf, idx))
            e, t, s = est[ok], tru[ok], se[ok]
            k = len(e)
            hits = int(np.sum(np.abs(e - t) <= z * s))
            lo, hi = wilson(hits, k, 0.95)
            sd = float(np.std(e, ddof=1)) if k >= 2 else math.nan
            mean_se = float(np.mean(s)) if k else math.nan
            rows.append(
                {
                    "n": int(n),
                    "parameter": name,
                    "truth": float(t[0]) if k else float(tru[0]),
                    "n_used": k,
                    "n_no_se": int(np.sum(conv & ~ok)),
                    "bias": float(np.mean(e - t)) if k else math.nan,
                    "sd": sd,
                    "mean_se": mean_se,
                    "se_ratio": mean_se / sd if k >= 2 and sd > 0 else math.nan,
                    "coverage": hits / k if k else math.nan,
                    "cov_low": lo,
                    "cov_high": hi,
                }
            )
    return rows


def z_scores(evidence: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    """{coordinate name: (k,) standardised errors (theta_hat - theta*) / SE} of the used fits
    at sample size ``n``."""
    flat = flat_evidence(evidence)
    at = flat["n"] == n
    out = {}
    for name, leaf, idx in _coordinates(flat):
        est, tru, se, ok, _ = (a[at] for a in _used(flat, leaf, idx))
        out[name] = (est[ok] - tru[ok]) / se[ok]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def to_markdown(rows: Sequence[Mapping[str, Any]], name: str, level: float = 0.95) -> str:
    """coverage.md: a short explanation, a summary per parameter (all n pooled) and the full
    table per (n, parameter)."""
    head = (
        f"# Standard errors and coverage: {name}\n\n"
        f"Per sample size and scalar parameter, over the converged fits whose coordinate ended "
        f"inside the box with a finite standard error (from the observed information): bias, "
        f"Monte Carlo sd, mean SE / sd, and the coverage of the {level:.0%} Wald interval "
        f"estimate +- z SE with its 95% Wilson interval. `n_no_se`: converged fits left out "
        f"(coordinate on a bound, or information not positive definite).\n\n"
    )
    params = list(dict.fromkeys(r["parameter"] for r in rows))
    summary = [
        "## Pooled over n\n",
        md_row(["parameter", "fits", "coverage", "95% CI", "mean SE / sd (range over n)"]),
        "|---|---:|---:|---|---|",
    ]
    for p in params:
        rs = [r for r in rows if r["parameter"] == p]
        k = sum(r["n_used"] for r in rs)
        hits = sum(round(r["coverage"] * r["n_used"]) for r in rs if r["n_used"])
        lo, hi = wilson(hits, k)
        ratios = [r["se_ratio"] for r in rs if math.isfinite(r["se_ratio"])]
        rng = f"{min(ratios):.3f} .. {max(ratios):.3f}" if ratios else "nan"
        cov = hits / k if k else math.nan
        summary.append(md_row([p, k, _fmt(cov), f"[{_fmt(lo)}, {_fmt(hi)}]", rng]))
    table = ["", "## Per sample size\n", md_row(COVERAGE_COLUMNS)]
    table.append("|---|---|" + "---:|" * (len(COVERAGE_COLUMNS) - 2))
    table += [md_row(_fmt(r[c]) for c in COVERAGE_COLUMNS) for r in rows]
    return head + "\n".join(summary) + "\n" + "\n".join(table) + "\n"


def _math_label(name: str) -> str:
    """ "beta[1]" -> "$\\beta_{1}$", "eta_2[1,2]" -> "$\\eta^{(2)}_{1,2}$", "tau" -> "$\\tau$"."""
    base, _, idx = name.partition("[")
    leaf, _, adapter = base.partition("_")
    sup = f"^{{({adapter})}}" if adapter else ""
    sub = f"_{{{idx.rstrip(']')}}}" if idx else ""
    return f"$\\{leaf}{sup}{sub}$"


def coverage_figure(evidence: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], title: str):
    """Three panels: the coverage of each coordinate's Wald interval against n, mean SE / Monte
    Carlo sd against n, and the normal QQ plot of the standardised errors at the largest n. The
    grey bands are where 95% of the values of a *correct* interval fall at the run's replicate
    count (binomial for the coverage; the sampling sd of a sample sd, 1 / sqrt(2 (k - 1)), for
    the ratio), so points outside them, not wiggles inside, are the signal. Returns a
    matplotlib Figure (7 x 2.5 in)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    params = list(dict.fromkeys(r["parameter"] for r in rows))
    sizes = sorted({r["n"] for r in rows})
    fig = Figure(figsize=(7.0, 2.5), layout="constrained")
    axes = fig.subplots(1, 3)
    cmap = colormaps["tab10"]
    k = int(np.median([r["n_used"] for r in rows])) if rows else 0
    nominal = 0.95
    if k >= 2:
        half = 1.96 * math.sqrt(nominal * (1 - nominal) / k)
        axes[0].axhspan(nominal - half, nominal + half, color="0.88", lw=0)
        half = 1.96 / math.sqrt(2 * (k - 1))
        axes[1].axhspan(1 - half, 1 + half, color="0.88", lw=0)
    for i, p in enumerate(params):
        rs = sorted((r for r in rows if r["parameter"] == p), key=lambda r: r["n"])
        n = np.array([r["n"] for r in rs], float)
        style = dict(ms=2.5, lw=0.7, color=cmap(i % 10), label=_math_label(p))
        for ax, key in ((axes[0], "coverage"), (axes[1], "se_ratio")):
            v = np.array([r[key] for r in rs], float)
            ok = np.isfinite(v)
            ax.plot(n[ok], v[ok], "o-", **style)
    axes[0].axhline(nominal, color="k", ls="--", lw=0.8)
    axes[0].set(xscale="log", xlabel="sample size n", ylabel="coverage of the 95% Wald interval")
    axes[1].axhline(1.0, color="k", ls="--", lw=0.8)
    axes[1].set(xscale="log", xlabel="sample size n", ylabel="mean SE / Monte Carlo sd")
    z = z_scores(evidence, sizes[-1])
    for i, p in enumerate(params):
        v = np.sort(z.get(p, np.array([])))
        v = v[np.isfinite(v)]
        if len(v) == 0:
            continue
        q = np.array([NormalDist().inv_cdf((j + 0.5) / len(v)) for j in range(len(v))])
        axes[2].plot(q, v, ".", ms=2.0, color=cmap(i % 10))
    lim = 3.5
    axes[2].plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    axes[2].set(
        xlabel="standard normal quantile",
        ylabel=f"(estimate - truth) / SE, n = {sizes[-1]:,}",
        xlim=(-lim, lim),
        ylim=(-lim - 1, lim + 1),
    )
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside right center",
        fontsize=7,
        frameon=False,
        handlelength=1.2,
    )
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_size(7)
        ax.yaxis.label.set_size(7)
    fig.suptitle(title, fontsize=8)
    return fig


def write_coverage(
    out_dir: str | os.PathLike[str], evidence: Mapping[str, Any], name: str
) -> dict[str, Path]:
    """Write coverage.{csv,md,png,pdf} into ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    rows = coverage_rows(evidence)
    drawable = any(r["n_used"] >= 2 for r in rows)
    md = to_markdown(rows, name)
    if not drawable:
        md += "\nNo figure: no (n, parameter) has two usable fits.\n"
    paths = {
        "coverage_csv": write_csv_atomic(out / "coverage.csv", COVERAGE_COLUMNS, rows),
        "coverage_md": write_text_atomic(out / "coverage.md", md),
    }
    for ext in ("png", "pdf"):  # a figure of an earlier report would contradict the table
        stale = out / f"coverage.{ext}"
        if not drawable and stale.exists():
            stale.unlink()
    if drawable:
        from .plots import _save

        fig = coverage_figure(evidence, rows, f"{name}: standard errors and coverage")
        paths["coverage_png"], paths["coverage_pdf"] = _save(fig, out / "coverage")
    return paths

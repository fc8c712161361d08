"""Our slopes beside the regression predecessor's published slopes (arXiv 2505.18455).

The predecessor reported one empirical slope per block and setting (MODEL.md section 2: 40
replicates, 20 sizes in [1e3, 1e5], d = 8, tanh experts, EM). :func:`write_predecessor` takes one
run directory per setting, computes our log-median slope with its percentile bootstrap CI through
:func:`moejax.report.slopes.compute_slopes` (the same call, bootstrap and seed as ``make_report``,
so the numbers equal the ``log_median`` rows of that run's ``slopes.csv``), and marks whether the
published value lies inside our CI.

The published distinguishable ``tau`` slope is for tau itself; it is compared with our
``exp_tau`` block: with tau* = 1, exp is smooth with a non-zero derivative there, so
|exp(tau_hat) - exp(tau*)| and |tau_hat - tau*| have the same rate (delta method).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from moejax.atomic import write_text_atomic

from .plots import BLOCK_COLORS, _load_run, _save
from .slopes import compute_slopes, main_rows
from .table import write_csv_atomic
from .theory import theory_or_nan

#: Settings of the predecessor's table, in order.
#: The ``_weak`` settings are our variants with a 10x smaller drift, compared with the same
#: published row (the published drift size is not known to us).
SETTINGS: tuple[str, ...] = (
    "distinguishable",
    "collapse_eta",
    "collapse_nu",
    "collapse_eta_weak",
    "collapse_nu_weak",
)
SETTING_LABELS: dict[str, str] = {
    "distinguishable": "distinguishable",
    "collapse_eta": "collapse eta* -> eta0 at n^(-1/8)",
    "collapse_nu": "collapse nu* -> nu0 at n^(-1/8)",
    "collapse_eta_weak": "collapse eta*, drift / 10",
    "collapse_nu_weak": "collapse nu*, drift / 10",
}
#: Blocks with a published slope, in table order.
PREDECESSOR_BLOCKS: tuple[str, ...] = ("beta", "exp_tau", "eta", "nu")
#: The predecessor's published empirical slopes (MODEL.md section 2), per setting and block.
#: ``("distinguishable", "exp_tau")`` holds the published slope of tau itself (see module doc).
PUBLISHED_SLOPES: dict[str, dict[str, float]] = {
    "distinguishable": {"beta": -0.45, "exp_tau": -0.52, "eta": -0.50, "nu": -0.54},
    "collapse_eta": {"beta": -0.37, "exp_tau": -0.23, "eta": -0.39, "nu": -0.35},
    "collapse_nu": {"beta": -0.39, "exp_tau": -0.22, "eta": -0.37, "nu": -0.39},
}
PUBLISHED_SLOPES["collapse_eta_weak"] = PUBLISHED_SLOPES["collapse_eta"]
PUBLISHED_SLOPES["collapse_nu_weak"] = PUBLISHED_SLOPES["collapse_nu"]
#: (setting, block) pairs whose published value is for tau, not exp(tau).
PUBLISHED_FOR_TAU: frozenset[tuple[str, str]] = frozenset({("distinguishable", "exp_tau")})
#: Regime and gamma used for the hypotheses when a run's manifest does not give them.
DEFAULT_THEORY: dict[str, tuple[str, float | None]] = {
    "distinguishable": ("heterogeneous", None),
    "collapse_eta": ("homogeneous", 0.125),
    "collapse_nu": ("homogeneous", 0.125),
    "collapse_eta_weak": ("homogeneous", 0.125),
    "collapse_nu_weak": ("homogeneous", 0.125),
}
COLUMNS: tuple[str, ...] = (
    "setting",
    "block",
    "published",
    "slope",
    "ci_low",
    "ci_high",
    "published_in_ci",
    "uniform",
    "pointwise",
    "n_fits",
    "n_failed",
    "n_at_bound",
    "regime",
    "gamma",
    "run",
)


def inside(value: float, low: float, high: float) -> str:
    """``"yes"`` if ``low <= value <= high``, ``"no"`` if not, ``"n/a"`` if any is NaN."""
    if not all(math.isfinite(v) for v in (value, low, high)):
        return "n/a"
    return "yes" if low <= value <= high else "no"


def predecessor_rows(
    runs: Mapping[str, str | os.PathLike[str] | Mapping[str, Any]],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[dict[str, Any]]:
    """The comparison table: one row per (setting given, block of :data:`PREDECESSOR_BLOCKS`).

    Args:
        runs: setting name (a key of :data:`SETTINGS`) -> a run directory (``fits.csv``, and
            optionally ``manifest.json`` for regime and gamma), a fits column dict, or
            ``{"fits": fits, "regime": ..., "gamma": ..., "config": ...}``.
        n_boot, seed, ci: the bootstrap of :func:`compute_slopes` (defaults = ``make_report``'s).

    Returns:
        Dicts with keys :data:`COLUMNS`, settings in :data:`SETTINGS` order: ``published`` (float),
        ``slope``/``ci_low``/``ci_high`` (our log-median slope and CI; NaN when the run has no
        usable errors of that block, e.g. no ``err_nu`` in a classification run),
        ``published_in_ci`` (``"yes"``/``"no"``/``"n/a"``), ``uniform``/``pointwise`` (the
        hypotheses of :mod:`moejax.report.theory` at the run's regime and gamma), ``n_fits``,
        ``n_failed``, ``n_at_bound`` (ints), ``regime``, ``gamma``, ``run`` (the run's name).

    Raises:
        ValueError: no run given, or a key that is not a setting.
    """
    unknown = [k for k in runs if k not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown predecessor setting(s) {unknown}; expected some of {SETTINGS}")
    if not runs:
        raise ValueError(f"no run given; expected some of {SETTINGS}")
    rows = []
    for setting in SETTINGS:
        if setting not in runs:
            continue
        run = runs[setting]
        fits, meta = _load_run(run)
        # the manifest's regime and gamma; the setting's design when the manifest has none
        regime, gamma = DEFAULT_THEORY[setting]
        if meta.get("regime"):
            regime, gamma = meta["regime"], meta.get("gamma")
        config = meta.get("config")
        model = config.get("model") if isinstance(config, Mapping) else None
        name = meta.get("name") or (Path(run).name if isinstance(run, str | os.PathLike) else "")
        slope_rows = main_rows(
            compute_slopes(
                fits,
                parameters=PREDECESSOR_BLOCKS,
                aggregates=("log_median",),
                n_boot=n_boot,
                ci=ci,
                seed=seed,
                drop_smallest=(0,),
                model=model,
            )
        )
        ours = {r["parameter"]: r for r in slope_rows}
        for block in PREDECESSOR_BLOCKS:
            r = ours.get(block)
            slope, lo, hi = (
                (r["slope"], r["ci_low"], r["ci_high"]) if r else (math.nan, math.nan, math.nan)
            )
            published = PUBLISHED_SLOPES[setting][block]
            th = theory_or_nan(block, regime, gamma)
            rows.append(
                {
                    "setting": setting,
                    "block": block,
                    "published": published,
                    "slope": slope,
                    "ci_low": lo,
                    "ci_high": hi,
                    "published_in_ci": inside(published, lo, hi),
                    "uniform": th["uniform"],
                    "pointwise": th["pointwise"],
                    "n_fits": int(r["n_fits"]) if r else 0,
                    "n_failed": int(r["n_failed"]) if r else 0,
                    "n_at_bound": int(r["n_at_bound"]) if r else 0,
                    "regime": regime,
                    "gamma": gamma,
                    "run": name,
                }
            )
    return rows


def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _hyp(value: float) -> str:
    return f"{value:+.3g}" if math.isfinite(value) else "n/a"


def to_markdown(rows: list[dict[str, Any]], ci: float = 0.95) -> str:
    """Markdown table of :func:`predecessor_rows` with the footnotes (tau vs exp(tau), method)."""
    level = round(100 * ci)
    lines = [
        "# Our slopes beside the regression predecessor's (arXiv 2505.18455)",
        "",
        f"Our slope: least squares of log(median error) on log(n), {level}% percentile bootstrap "
        "CI over replicates (the `log_median` row of `moejax report`). Published: the "
        "predecessor's empirical slopes (MODEL.md section 2; 40 replicates, 20 sizes in "
        "[1e3, 1e5], d = 8, EM). Hypotheses: uniform / pointwise exponents of MODEL.md "
        "section 2 at the run's regime and gamma. Failed fits are excluded and counted.",
        "",
        f"| setting | block | published | ours (log-median) [{level}% CI] "
        "| published inside our CI? | uniform | pointwise | n_failed/n_at_bound |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    has_tau_note = False
    for r in rows:
        block = r["block"]
        if (r["setting"], block) in PUBLISHED_FOR_TAU:
            block += " (published: tau) [1]"
            has_tau_note = True
        ours = _f(r["slope"], 3)
        if math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"]):
            ours += f" [{_f(r['ci_low'], 3)}, {_f(r['ci_high'], 3)}]"
        lines.append(
            f"| {SETTING_LABELS[r['setting']]} | {block} | {_f(r['published'])} | {ours} | "
            f"{r['published_in_ci']} | {_hyp(r['uniform'])} | {_hyp(r['pointwise'])} | "
            f"{r['n_failed']}/{r['n_at_bound']} |"
        )
    lines.append("")
    if has_tau_note:
        lines.append(
            "[1] The predecessor's distinguishable slope is for tau itself; it is compared with "
            "our exp(tau) block. At tau* = 1 the exponential is smooth with a non-zero derivative, "
            "so |exp(tau_hat) - exp(tau*)| and |tau_hat - tau*| share the rate (delta method)."
        )
    if any(r["setting"] == "collapse_nu" for r in rows):
        lines.append("")
        lines.append(
            "For the nu collapse the hypotheses are the eta-drift exponents at the run's gamma; "
            "MODEL.md states no separate hypothesis for a drifting variance."
        )
    if any(r["n_fits"] == 0 for r in rows):
        lines.append("")
        lines.append("n/a: the run has no usable errors of that block (absent or failed).")
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_predecessor(
    rows: list[dict[str, Any]], out_stem: str | os.PathLike[str], ci: float = 0.95
) -> tuple[Path, Path]:
    """One panel per setting in ``rows``: our per-block slope with its CI bar (colour of the
    block) and the published slope as a black cross beside it; writes ``.png`` and ``.pdf``."""
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rows)] or [SETTINGS[0]]
    fig = Figure(figsize=(4.2 * len(settings), 4.2), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False, sharey=True)[0]
    x = np.arange(len(PREDECESSOR_BLOCKS), dtype=float)
    for ax, setting in zip(axes, settings, strict=True):
        by_block = {r["block"]: r for r in rows if r["setting"] == setting}
        for i, block in enumerate(PREDECESSOR_BLOCKS):
            r = by_block.get(block)
            if r is None:
                continue
            color = BLOCK_COLORS.get(block, "tab:gray")
            if math.isfinite(r["slope"]):
                lo = r["slope"] - r["ci_low"] if math.isfinite(r["ci_low"]) else 0.0
                hi = r["ci_high"] - r["slope"] if math.isfinite(r["ci_high"]) else 0.0
                ax.errorbar(
                    [x[i] - 0.12], [r["slope"]], yerr=[[lo], [hi]], fmt="o", color=color, capsize=3
                )
            else:
                ax.text(x[i] - 0.12, -0.5, "n/a", ha="center", va="center", fontsize=8)
            ax.plot([x[i] + 0.12], [r["published"]], "x", color="black", ms=8, mew=2)
        ax.axhline(-0.5, color="lightgray", lw=0.8, zorder=0)
        labels = [
            ("exp_tau\n(pub.: tau)" if setting == "distinguishable" and b == "exp_tau" else b)
            for b in PREDECESSOR_BLOCKS
        ]
        ax.set_xticks(x, labels)
        ax.set_xlim(-0.6, len(PREDECESSOR_BLOCKS) - 0.4)
        ax.set_title(SETTING_LABELS[setting], fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            color="dimgray",
            ls="-",
            label=f"ours: log-median slope, {round(100 * ci)}% bootstrap CI (colour: block)",
        ),
        Line2D([], [], marker="x", color="black", ls="", mew=2, label="published (predecessor)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    axes[0].set_ylabel("rate exponent (slope of log error on log n)")
    fig.suptitle("Empirical rate exponents: ours vs the regression predecessor's published ones")
    return _save(fig, out_stem)


def write_predecessor(
    runs: dict[str, Path],
    out_stem: Path,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Compare runs with the predecessor's published slopes and write the table and figure.

    Args:
        runs: setting -> run directory, keys among ``("distinguishable", "collapse_eta",
            "collapse_nu")`` (missing settings are left out); also accepts what
            :func:`predecessor_rows` accepts as values.
        out_stem: output path without extension.
        n_boot, seed, ci: bootstrap settings (defaults are ``make_report``'s).

    Writes:
        ``<stem>.csv`` (columns :data:`COLUMNS`), ``<stem>.md`` (table and footnotes),
        ``<stem>.png`` and ``<stem>.pdf`` (one panel per setting).

    Returns:
        ``{"rows": list of row dicts (see :func:`predecessor_rows`), "paths": {"csv", "md",
        "png", "pdf"} -> Path}``.
    """
    rows = predecessor_rows(runs, n_boot=n_boot, seed=seed, ci=ci)
    stem = Path(out_stem)
    paths: dict[str, Path] = {
        "csv": write_csv_atomic(stem.with_name(stem.name + ".csv"), COLUMNS, rows),
        "md": write_text_atomic(stem.with_name(stem.name + ".md"), to_markdown(rows, ci)),
    }
    paths["png"], paths["pdf"] = plot_predecessor(rows, stem, ci)
    return {"rows": rows, "paths": paths}

"""One study report: a statistic per grid point and block, against one quantity, with theory
lines and published reference values.

A study is the directory that ``moejax sweep GRID.toml --out DIR`` fills: one run per grid
point in ``DIR/<point>/``, each manifest recording the point (``manifest["study"]``: name, index,
grid keys and values, the ``[study]`` options of :mod:`moejax.sweep.grid`). From the runs alone,
:func:`write_study` writes ``DIR/study.csv`` (one row per point and block), ``study.md`` and
``study.png``/``.pdf``, plus ``study-rates.png`` (every point's error against n, side by side).

Statistics (per run and block, over the fits of :func:`moejax.report.slopes.block_data`: converged
with a finite positive error; failed fits are excluded and counted, fits on the box kept and
counted):

``slope``
    the log-log slope of the aggregated error (default ``log_median``) against n with its
    percentile bootstrap CI: exactly the main rows of the run's ``slopes.csv`` (same bootstrap,
    seed and draws when ``n_boot`` agrees), with the uniform and pointwise hypotheses of
    docs/theory.md at the run's regime and gamma.

``sqrt_n_median``
    ``S`` = the geometric mean over the run's n of sqrt(n) x the median error, with a
    bootstrap CI (replicates resampled within each n; point ``i``'s block ``p`` draws from
    ``default_rng([seed, crc32(p), i])``). With ``fit``, the exponent ``b`` of
    ``S ~ x^b``: least squares of log S on log x over the points of one series, CI from the
    same bootstrap draws.

Reference values (``[study.reference]``: published slopes per point and block) get a column
saying whether they lie inside our CI.

With ``joint = true`` (or ``statistic = "joint"``), a drift study also gets the joint fit of
:mod:`moejax.report.joint` (log error = a log n + c log delta_n + const over every point and
size, per block, beside both hypotheses' (a, c)): ``study-joint.csv`` and a section of
``study.md``.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from moejax.atomic import write_text_atomic

from .joint import JOINT_COLUMNS, joint_markdown, joint_rows
from .plots import (
    BLOCK_COLORS,
    BLOCK_LABELS,
    FONT,
    _save,
    axis_label,
    panel_grid,
    paper_figure,
    paper_style,
    plot_comparison,
)
from .slopes import (
    _bootstrap_aggregates,
    block_data,
    compute_slopes,
    main_rows,
    ols_slope,
    resolve_parameters,
    valid_errors_by_size,
)
from .starts import DIFF_COLUMNS, REACH_COLUMNS, difference_rows, reach_rows, starts_markdown
from .table import md_row, read_fits_csv, read_manifest, write_csv_atomic
from .theory import theory_or_nan, theory_regime

#: Blocks requested from every run (nu, voronoi, density are added when a run has them).
REQUESTED = ("beta", "exp_tau", "eta")
NOTE_TOO_FEW = "fewer than 2 distinct x values: exponent undefined"
ROW_COLUMNS: tuple[str, ...] = (
    "point",
    "block",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "x",
    "group",
    "uniform",
    "pointwise",
    "reference",
    "reference_in_ci",
    "exponent",
    "exponent_ci_low",
    "exponent_ci_high",
    "n_sizes",
    "n_min",
    "n_max",
    "n_fits",
    "n_failed",
    "n_at_bound",
    "n_total",
    "value_interior",
    "ci_low_interior",
    "ci_high_interior",
    "n_interior",
    "regime",
    "gamma",
    "run",
)
FIT_COLUMNS: tuple[str, ...] = (
    "group",
    "block",
    "exponent",
    "ci_low",
    "ci_high",
    "n_points",
    "x_min",
    "x_max",
    "n_fits",
    "n_failed",
    "n_at_bound",
    "note",
)


class StudyRun(NamedTuple):
    """One point's run: its name, index, grid values, manifest and fits columns."""

    point: str
    index: int
    values: dict[str, Any]
    manifest: dict[str, Any]
    fits: Mapping[str, np.ndarray]
    path: Path


class StudyRuns(NamedTuple):
    """A study read back from its directory: name, grid keys, options, runs in point order, and
    the points that have no complete run (so are missing from the report)."""

    name: str
    keys: tuple[str, ...]
    options: dict[str, Any]
    runs: tuple[StudyRun, ...]
    missing: tuple[str, ...]


def inside(value: float, low: float, high: float) -> str:
    """``"yes"`` if ``low <= value <= high``, ``"no"`` if not, ``"n/a"`` if any is NaN."""
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (value, low, high)):
        return "n/a"
    return "yes" if low <= value <= high else "no"


def load_study(study_dir: str | os.PathLike[str]) -> StudyRuns:
    """Read every run of a study directory (subdirectories whose manifest has ``"study"``).

    Raises:
        ValueError: no study run here, runs of different studies, or an unreadable table.
    """
    d = Path(study_dir)
    entries = []
    for m in sorted(d.glob("*/manifest.json")):
        man = read_manifest(m)
        if isinstance(man.get("study"), Mapping):
            entries.append((m.parent, man))
    if not entries:
        raise ValueError(f"{d}: no study runs here (run `moejax sweep GRID.toml --out {d}`)")
    names = {man["study"]["name"] for _, man in entries}
    if len(names) > 1:
        raise ValueError(f"{d}: runs of several studies here ({', '.join(sorted(names))})")
    first = max(entries, key=lambda e: e[1]["study"].get("n_points", 0))[1]["study"]
    runs = []
    for path, man in entries:
        s = man["study"]
        if man.get("status") != "complete" or not (path / "fits.csv").is_file():
            continue
        fits = read_fits_csv(path / "fits.csv")
        runs.append(StudyRun(s["point"], int(s["index"]), s["values"], man, fits, path))
    runs.sort(key=lambda r: r.index)
    done = {r.index for r in runs}
    missing = tuple(str(i) for i in range(int(first.get("n_points", len(runs)))) if i not in done)
    return StudyRuns(
        str(first["name"]), tuple(first["keys"]), dict(first["options"]), tuple(runs), missing
    )


def _x_value(run: StudyRun, x: str | None) -> float:
    if x is None:
        return math.nan
    if x in run.values:
        return float(run.values[x])
    v = run.manifest.get(x)
    if x == "gamma" and v is None:
        v = 0.0
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def _blocks(run: StudyRun, options: Mapping[str, Any]) -> list[str]:
    model = run.manifest.get("config", {}).get("model")
    found = resolve_parameters(run.fits, REQUESTED, model)
    if options.get("blocks"):
        return [b for b in options["blocks"] if b in found]
    return found


def _counts(run: StudyRun, block: str) -> dict[str, Any]:
    data = block_data(run.fits, block)
    sizes = np.unique(data.n[data.valid])
    return {
        "n_sizes": len(sizes),
        "n_min": int(sizes[0]) if len(sizes) else -1,
        "n_max": int(sizes[-1]) if len(sizes) else -1,
        "n_fits": int(data.valid.sum()),
        "n_failed": int((data.nonconverged | data.invalid_err).sum()),
        "n_at_bound": int(data.at_bound.sum()),
        "n_total": int(data.n.shape[0]),
    }


def sqrt_n_median(
    run: StudyRun,
    block: str,
    n_boot: int,
    rng: np.random.Generator,
    exclude_at_bound: bool = False,
) -> tuple[float, np.ndarray]:
    """``(log S, bootstrap log S of shape (n_boot,))`` of one run and block, where ``S`` is the
    geometric mean over n of sqrt(n) x the median valid error (NaN without a valid fit);
    ``exclude_at_bound``: over the fits inside the box only."""
    sizes, errors = valid_errors_by_size(run.fits, block, exclude_at_bound)
    if len(sizes) == 0:
        return math.nan, np.full(n_boot, math.nan)
    half_logn = 0.5 * np.log(sizes.astype(np.float64))  # (J,)
    point = float(np.mean(np.log([np.median(e) for e in errors]) + half_logn))
    if n_boot <= 0:
        return point, np.empty(0)
    boot = _bootstrap_aggregates(errors, ("log_median",), n_boot, rng)["log_median"]
    return point, (boot + half_logn).mean(axis=1)


def study_rows(study: StudyRuns) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The study's table and fitted exponents.

    Returns:
        ``(rows, fits)``: ``rows`` one dict per (point, block), keys :data:`ROW_COLUMNS` plus
        one column per grid key (its value; lists as JSON); ``fits`` one dict per (series,
        block) when the study fits an exponent (keys :data:`FIT_COLUMNS`), else empty.
    """
    o = study.options
    level = float(o.get("ci", 0.95))
    q = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    n_boot, seed, stat = int(o.get("n_boot", 1000)), int(o.get("seed", 0)), o["statistic"]
    ref = (o.get("reference") or {}).get("values", {})
    rows: list[dict[str, Any]] = []
    boots: list[np.ndarray] = []
    for i, run in enumerate(study.runs):
        regime = run.manifest.get("regime")
        gamma = run.manifest.get("gamma")
        base = {
            "point": run.point,
            "statistic": stat,
            "x": _x_value(run, o.get("x")),
            "group": _label(run.values[o["group"]]) if o.get("group") else "",
            "regime": regime,
            "gamma": gamma,
            "run": run.path.name,
            **{k: _label(run.values[k]) if k in run.values else "" for k in study.keys},
        }
        blocks = _blocks(run, o)
        model = run.manifest.get("config", {}).get("model")
        hypotheses = theory_regime(regime, model)  # "overfitted" when m_hat > m*
        if stat == "slope":
            slopes = {
                r["parameter"]: r
                for r in main_rows(
                    compute_slopes(
                        run.fits,
                        parameters=blocks,
                        aggregates=(o.get("aggregate", "log_median"),),
                        n_boot=n_boot,
                        ci=level,
                        seed=seed,
                        drop_smallest=(0,),
                        model=model,
                    )
                )
            }
        for block in blocks:
            row = {**base, "block": block, **_counts(run, block)}
            if stat == "slope":
                s = slopes[block]
                row.update(value=s["slope"], ci_low=s["ci_low"], ci_high=s["ci_high"])
                row.update(
                    value_interior=s["slope_interior"],
                    ci_low_interior=s["ci_low_interior"],
                    ci_high_interior=s["ci_high_interior"],
                    n_interior=s["n_interior"],
                )
                boots.append(np.empty(0))
            else:
                for suffix, inner in (("", False), ("_interior", True)):
                    rng = np.random.default_rng([seed, zlib.crc32(block.encode()), i])
                    log_s, boot = sqrt_n_median(run, block, n_boot, rng, inner)
                    lo = hi = math.nan
                    if boot.size and np.isfinite(boot).all():
                        lo, hi = (float(np.exp(v)) for v in np.quantile(boot, q))
                    value = math.exp(log_s) if math.isfinite(log_s) else math.nan
                    row.update({f"value{suffix}": value, f"ci_low{suffix}": lo})
                    row[f"ci_high{suffix}"] = hi
                    if not inner:
                        boots.append(boot)
                data = block_data(run.fits, block, exclude_at_bound=True)
                row["n_interior"] = int(data.valid.sum())
            th = (
                theory_or_nan(block, hypotheses, gamma)
                if stat == "slope" and o.get("theory", True)
                else {"uniform": math.nan, "pointwise": math.nan}
            )
            r_val = ref.get(run.point, {}).get(block, math.nan)
            row.update(
                uniform=th["uniform"],
                pointwise=th["pointwise"],
                reference=r_val,
                reference_in_ci=inside(r_val, row["ci_low"], row["ci_high"])
                if math.isfinite(r_val)
                else "",
                exponent=math.nan,
                exponent_ci_low=math.nan,
                exponent_ci_high=math.nan,
            )
            rows.append(row)
    fits = _fit_exponents(rows, boots, n_boot, q) if o.get("fit") else []
    return rows, fits


def _fit_exponents(
    rows: list[dict[str, Any]], boots: list[np.ndarray], n_boot: int, q: tuple[float, float]
) -> list[dict[str, Any]]:
    out = []
    groups = list(dict.fromkeys(r["group"] for r in rows))
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    for group in groups:
        for block in blocks:
            idx = [i for i, r in enumerate(rows) if r["group"] == group and r["block"] == block]
            if not idx:
                continue
            use = [
                i
                for i in idx
                if math.isfinite(rows[i]["value"]) and rows[i]["value"] > 0 and rows[i]["x"] > 0
            ]
            logx = np.log([rows[i]["x"] for i in use])
            b = lo = hi = math.nan
            note = ""
            if len(np.unique(logx)) >= 2:
                logs = np.log([rows[i]["value"] for i in use])
                b = float(ols_slope(logx, logs)[0])
                if n_boot > 0:
                    mat = np.stack([boots[i] for i in use], axis=1)  # (n_boot, points)
                    lo, hi = (float(v) for v in np.quantile(ols_slope(logx, mat)[0], q))
            else:
                note = NOTE_TOO_FEW
            xs = [rows[i]["x"] for i in idx]
            out.append(
                {
                    "group": group,
                    "block": block,
                    "exponent": b,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_points": len(use),
                    "x_min": min(xs),
                    "x_max": max(xs),
                    "n_fits": sum(rows[i]["n_fits"] for i in idx),
                    "n_failed": sum(rows[i]["n_failed"] for i in idx),
                    "n_at_bound": sum(rows[i]["n_at_bound"] for i in idx),
                    "note": note,
                }
            )
            for i in idx:
                rows[i].update(exponent=b, exponent_ci_low=lo, exponent_ci_high=hi)
    return out


def _f(value: Any, fmt: str) -> str:
    ok = isinstance(value, int | float) and math.isfinite(value)
    return format(value, fmt) if ok else "n/a"


def _ci(lo: float, hi: float, fmt: str) -> str:
    return f"[{_f(lo, fmt)}, {_f(hi, fmt)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def _what(o: Mapping[str, Any]) -> str:
    level = round(100 * float(o.get("ci", 0.95)))
    if o["statistic"] == "slope":
        what = (
            f"Statistic: the log-log slope of the {o.get('aggregate', 'log_median')} error "
            f"against n, {level}% percentile bootstrap CI over replicates ({o.get('n_boot')} "
            "draws); the uniform and pointwise hypotheses are those of docs/theory.md at the "
            "run's regime and gamma."
        )
    else:
        what = (
            "Statistic: S = geometric mean over n of sqrt(n) x the median error over replicates, "
            f"{level}% percentile bootstrap CI (replicates resampled within each n)."
        )
        if o.get("fit"):
            what += (
                f" Exponent b: least squares of log S on log {o.get('x')} over a series' points, "
                "CI from the same draws."
            )
    return (
        what + " Failed fits (not converged, or a nan/inf/non-positive error) are excluded and "
        "counted; fits on a bound of the box are kept and counted, and where a point has any, "
        "its statistic on the fits inside the box stands beside it (the box is part of the "
        "estimator: a reading that holds in one of the two only is not a reading of the rate)."
    )


def to_markdown(
    study: StudyRuns,
    rows: Sequence[Mapping[str, Any]],
    fits: Sequence,
    joint: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The study as Markdown: what is measured, the fitted exponents (if any), the joint fit
    (``joint``: rows of :func:`moejax.report.joint.joint_rows`, if any), a point x block summary
    and the full table."""
    o = study.options
    stat = o["statistic"]
    fmt = "+.3f" if stat == "slope" else ".4g"
    level = round(100 * float(o.get("ci", 0.95)))
    lines = [f"# {o.get('title') or 'Study ' + study.name}", "", _what(o)]
    if o.get("note"):
        lines += ["", o["note"]]
    if study.missing:
        lines += ["", f"Points without a complete run (left out): {', '.join(study.missing)}."]
    if fits:
        lines += [
            "",
            md_row(
                [
                    "series",
                    "block",
                    "exponent b",
                    f"{level}% CI",
                    "points",
                    "x range",
                    "fits",
                    "failed",
                    "on a bound",
                ]
            ),
            "|---|---|---:|---|---:|---|---:|---:|---:|",
        ]
        for e in fits:
            lines.append(
                md_row(
                    [
                        e["group"] or "-",
                        e["block"],
                        _f(e["exponent"], "+.3f"),
                        _ci(e["ci_low"], e["ci_high"], "+.3f"),
                        e["n_points"],
                        f"{e['x_min']:.3g} to {e['x_max']:.3g}",
                        e["n_fits"],
                        e["n_failed"],
                        e["n_at_bound"],
                    ]
                )
            )
        for e in fits:
            if e["note"]:
                lines.append(f"\nnote: {e['group']}/{e['block']}: {e['note']}")
    lines += joint_markdown(joint, int(o.get("n_boot", 1000)), float(o.get("ci", 0.95)))
    points = list(dict.fromkeys(r["point"] for r in rows))
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    ref_label = (o.get("reference") or {}).get("label")
    lines += [
        "",
        f"Summary: {stat} [{level}% CI]"
        + (f"; in parentheses {ref_label}, 'in CI' when inside ours" if ref_label else "")
        + ".",
        "",
        md_row(["point", *(BLOCK_LABELS.get(b, b) for b in blocks), "on a bound"]),
        "|---|" + "---|" * len(blocks) + "---:|",
    ]
    for p in points:
        cells, at_bound = [], ""
        for b in blocks:
            r = next((r for r in rows if r["point"] == p and r["block"] == b), None)
            if r is None:
                cells.append("")
                continue
            cell = f"{_f(r['value'], fmt)} {_ci(r['ci_low'], r['ci_high'], fmt)}".strip()
            if r["n_at_bound"]:
                inner = _ci(r["ci_low_interior"], r["ci_high_interior"], fmt)
                cell += f"; inside the box {_f(r['value_interior'], fmt)} {inner}".rstrip()
            if math.isfinite(r["reference"]):
                cell += f" ({r['reference']:+.2f}" + (
                    ", in CI)" if r["reference_in_ci"] == "yes" else ")"
                )
            cells.append(cell)
            at_bound = f"{r['n_at_bound']}/{r['n_total']}"
        lines.append(md_row([p, *cells, at_bound]))
    keys = list(study.keys)
    head = ["point", *keys, "block", stat, f"{level}% CI"]
    if stat == "slope" and o.get("theory", True):
        head += ["uniform", "pointwise"]
    if ref_label:
        head += [ref_label, "in CI"]
    head += ["n range", "fits", "failed", "on a bound", "inside the box", f"{level}% CI"]
    lines += ["", md_row(head), "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["point"], *(str(r[k]) for k in keys), r["block"], _f(r["value"], fmt)]
        cells.append(_ci(r["ci_low"], r["ci_high"], fmt))
        if stat == "slope" and o.get("theory", True):
            cells += [_f(r["uniform"], "+.3f"), _f(r["pointwise"], "+.3f")]
        if ref_label:
            cells += [_f(r["reference"], "+.2f"), r["reference_in_ci"]]
        cells += [
            f"{r['n_min']}-{r['n_max']}",
            str(r["n_fits"]),
            str(r["n_failed"]),
            f"{r['n_at_bound']}/{r['n_total']}",
            _f(r["value_interior"], fmt),
            _ci(r["ci_low_interior"], r["ci_high_interior"], fmt),
        ]
        lines.append(md_row(cells))
    return "\n".join(lines) + "\n"


SERIES_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")
SERIES_MARKERS = ("o", "s", "^", "D", "v", "P")
BOX_NOTE = "k/N beside a point: fits on the box of all fits"


def study_figure(
    study: StudyRuns,
    rows: Sequence[Mapping[str, Any]],
    fits: Sequence,
    width: str | float = "page",
) -> Figure:
    """One panel per block, wrapped into a grid (:func:`moejax.report.plots.paper_figure`).
    With an x: the statistic against x, one series per group (log-log for ``sqrt_n_median``,
    with x^(-1/2) and x^(-1) guides; the hypotheses' lines for slopes); without: one dot with
    its CI per point (never a bar from 0), the hypotheses' marks beside it and reference values.
    A fitted exponent b is given in its own panel's legend; the figure legend holds only what
    every panel shares (series, hypotheses, guides). ``width``: ``"page"`` (7 in, default),
    ``"column"`` (3.5 in) or inches."""
    o = study.options
    blocks = list(dict.fromkeys(r["block"] for r in rows)) or list(REQUESTED)
    fitted = {(e["group"], e["block"]): e for e in fits}
    groups = list(dict.fromkeys(r["group"] for r in rows))
    ylabel = (
        "rate exponent (log-log slope)"
        if o["statistic"] == "slope"
        else r"$\sqrt{n}\,\times$ median error"
    )
    xkey = o.get("x") or (study.keys[0] if len(study.keys) == 1 else "point")
    with paper_style():
        fig, axes = paper_figure(
            len(blocks), width, extra_height=0.7, sharey=o["statistic"] == "slope"
        )
        cols = panel_grid(len(axes), fig.get_figwidth())[1]
        bound_marked = False
        for i, (ax, block) in enumerate(zip(axes, blocks, strict=True)):
            pts = [r for r in rows if r["block"] == block]
            ax.set_title(BLOCK_LABELS.get(block, block))
            ax.grid(alpha=0.3, which="both")
            if o.get("x"):
                bound_marked |= _panel_against_x(ax, o, pts, groups, block, fitted)
            else:
                bound_marked |= _panel_bars(ax, o, pts, block)
            ax.set_xlabel(axis_label(xkey))
            if i % cols == 0:
                ax.set_ylabel(ylabel)
        shared: dict[str, Any] = {}
        for ax in axes:  # the union of every panel's labelled artists, first one wins
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                shared.setdefault(lab, h)
        if shared:
            leg = fig.legend(
                list(shared.values()),
                list(shared),
                loc="outside lower center",
                ncols=min(len(shared), 4),
                title=BOX_NOTE if bound_marked else None,
            )
            if leg.get_title() is not None:
                leg.get_title().set_fontsize(FONT["note"])
        fig.suptitle(o.get("title") or f"Study {study.name}")
    return fig


def _box_note(ax: Axes, r: Mapping[str, Any], x: float) -> bool:
    """Write ``k/N`` (fits on the box of all fits) beside a point that has any; True if so."""
    if not (r["n_at_bound"] or r["n_failed"]):
        return False
    text = f"{r['n_at_bound']}/{r['n_total']}"
    if r["n_failed"]:
        text += f", {r['n_failed']} failed"
    ax.annotate(
        text,
        (x, r["value"]),
        textcoords="offset points",
        xytext=(3, -8),
        fontsize=FONT["note"] - 0.5,
        color="dimgray",
    )
    return True


def _panel_against_x(
    ax: Axes,
    o: Mapping[str, Any],
    pts: Sequence[Mapping[str, Any]],
    groups: Sequence[str],
    block: str,
    fitted: Mapping[tuple[str, str], Mapping[str, Any]],
) -> bool:
    """The statistic against x, one series per group; returns whether a box count was written.

    The series' legend labels are their group names (shared by every panel); a fitted
    exponent b goes to this panel's own legend."""
    logx = o["statistic"] == "sqrt_n_median"
    marked = False
    own: list[tuple[Any, str]] = []
    for k, group in enumerate(groups):
        ser = sorted((r for r in pts if r["group"] == group), key=lambda r: r["x"])
        ser = [r for r in ser if math.isfinite(r["value"]) and math.isfinite(r["x"])]
        if not ser:
            continue
        x = np.array([r["x"] for r in ser])
        y = np.array([r["value"] for r in ser])
        lo = np.array([r["ci_low"] for r in ser])
        hi = np.array([r["ci_high"] for r in ser])
        yerr = np.where(np.isfinite([lo, hi]), np.abs(np.array([y - lo, hi - y])), 0.0)
        level = round(100 * float(o.get("ci", 0.95)))
        label = group or (
            f"empirical, {level}% CI" if o["statistic"] == "slope" else f"S, {level}% CI"
        )
        handle = ax.errorbar(
            x,
            y,
            yerr=yerr,
            fmt=("-" if logx else "") + SERIES_MARKERS[k % len(SERIES_MARKERS)],
            color=SERIES_COLORS[k % len(SERIES_COLORS)]
            if groups != [""]
            else BLOCK_COLORS.get(block, "tab:blue"),
            capsize=2,
            ms=3.5,
            lw=1.0,
            label=label,
        )
        e = fitted.get((group, block))
        if e is not None and math.isfinite(e["exponent"]):
            text = f"b = {e['exponent']:+.3f} {_ci(e['ci_low'], e['ci_high'], '+.3f')}".strip()
            own.append((handle, f"{group}: {text}" if group else text))
        for r in ser:
            marked |= _box_note(ax, r, r["x"])
    if o["statistic"] == "slope":
        th = sorted((r for r in pts if math.isfinite(r["uniform"])), key=lambda r: r["x"])
        if th:
            xs = [r["x"] for r in th]
            ax.plot(xs, [r["uniform"] for r in th], "--", color="black", lw=1.0,
                    label="uniform hypothesis")  # fmt: skip
            ax.plot(xs, [r["pointwise"] for r in th], ":", color="dimgray", lw=1.4,
                    label="pointwise hypothesis")  # fmt: skip
        ref = sorted((r for r in pts if math.isfinite(r["reference"])), key=lambda r: r["x"])
        if ref:
            label = (o.get("reference") or {}).get("label", "reference")
            ax.plot([r["x"] for r in ref], [r["reference"] for r in ref], "x", color="k",
                    label=label)  # fmt: skip
        ax.axhline(-0.5, color="lightgray", lw=0.8, zorder=0)
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ok = [r for r in pts if math.isfinite(r["value"]) and r["value"] > 0 and r["x"] > 0]
        if ok:
            fmt = FuncFormatter(lambda v, _: f"{v:g}")
            for axis in (ax.xaxis, ax.yaxis):  # plain decades, minor ticks labelled at 2 and 5
                axis.set_major_formatter(fmt)
                axis.set_minor_formatter(FuncFormatter(_minor_label))
            top = max(r["x"] for r in ok)
            anchor = math.exp(float(np.mean([math.log(r["value"]) for r in ok if r["x"] == top])))
            grid = np.geomspace(min(r["x"] for r in ok), top, 50)
            for slope, color, text in (
                (-0.5, "gray", r"guide $x^{-1/2}$"),
                (-1.0, "black", r"guide $x^{-1}$"),
            ):
                ax.plot(grid, anchor * (grid / top) ** slope, "--", color=color, lw=0.8,
                        label=text)  # fmt: skip
    if own:
        ax.add_artist(
            ax.legend(
                [h for h, _ in own],
                [t for _, t in own],
                loc="best",
                fontsize=FONT["legend"],
                title="exponent b [CI]",
                title_fontsize=FONT["legend"],
            )
        )
    return marked


def _minor_label(value: float, _pos: Any = None) -> str:
    """Label a minor log tick only at 2 and 5 times a power of ten (the others stay blank)."""
    if value <= 0:
        return ""
    lead = value / 10.0 ** math.floor(math.log10(value) + 1e-12)
    return f"{value:g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def _panel_bars(
    ax: Axes, o: Mapping[str, Any], pts: Sequence[Mapping[str, Any]], block: str
) -> bool:
    """One dot with its CI per point (categorical x; never a bar from 0), the hypotheses as
    short horizontal marks across it, references as crosses beside it; returns whether a box
    count was written."""
    x = np.arange(len(pts), dtype=float)
    y = np.array([r["value"] for r in pts], dtype=float)
    lo = np.array([r["ci_low"] for r in pts], dtype=float)
    hi = np.array([r["ci_high"] for r in pts], dtype=float)
    yerr = np.where(np.isfinite([lo, hi]), np.abs(np.array([y - lo, hi - y])), 0.0)
    level = round(100 * float(o.get("ci", 0.95)))
    ax.errorbar(x, y, yerr=yerr, fmt="o", color=BLOCK_COLORS.get(block, "tab:blue"), ms=4,
                capsize=2.5, lw=1.1, label=f"empirical, {level}% CI", zorder=3)  # fmt: skip
    if o["statistic"] == "slope":
        uni = np.array([r["uniform"] for r in pts], dtype=float)
        pw = np.array([r["pointwise"] for r in pts], dtype=float)
        if np.isfinite(uni).any():
            ax.hlines(uni, x - 0.32, x + 0.32, colors="black", linestyles="--", lw=1.0,
                      label="uniform hypothesis")  # fmt: skip
            differ = np.isfinite(pw) & (np.abs(pw - uni) > 1e-12)
            if differ.any():
                ax.hlines(pw[differ], x[differ] - 0.32, x[differ] + 0.32, colors="dimgray",
                          linestyles=":", lw=1.4, label="pointwise hypothesis")  # fmt: skip
        ax.axhline(-0.5, color="lightgray", lw=0.8, zorder=0)
    ref = np.array([r["reference"] for r in pts], dtype=float)
    if np.isfinite(ref).any():
        label = (o.get("reference") or {}).get("label", "reference")
        ax.plot(x + 0.22, ref, "x", color="tab:red", ms=5, mew=1.2, label=label)
    marked = False
    for xi, r in zip(x, pts, strict=True):
        if math.isfinite(r["value"]):
            marked |= _box_note(ax, r, float(xi))
    ax.set_xlim(-0.6, len(pts) - 0.4)
    ax.set_xticks(x, [r["point"] for r in pts], rotation=30, ha="right")
    return marked


def write_study(study_dir: str | os.PathLike[str], *, rates_figure: bool = True) -> dict[str, Any]:
    """Read a study directory and write ``study.csv``, ``study.md``, ``study.png``/``.pdf``,
    (``rates_figure``) ``study-rates.png``/``.pdf`` and (``joint`` option) ``study-joint.csv`` in
    it.

    Returns:
        ``{"study": StudyRuns, "rows": ..., "fits": ... (see :func:`study_rows`), "joint": the
        joint fit's rows (empty unless the study asks for it), "markdown": str, "paths":
        {name: Path}}``.

    Raises:
        ValueError: see :func:`load_study`; OSError: a file cannot be written.
    """
    d = Path(study_dir)
    study = load_study(d)
    rows, fits = study_rows(study)
    joint = _joint(study, rows)
    cols = [*ROW_COLUMNS[:2], *study.keys, *ROW_COLUMNS[2:]]
    md = to_markdown(study, rows, fits, joint)
    starts = _starts(study, rows)
    if starts:
        md = md.rstrip("\n") + "\n\n" + "\n".join(starts["markdown"])
    paths: dict[str, Path] = {
        "csv": write_csv_atomic(d / "study.csv", cols, rows),
        "md": write_text_atomic(d / "study.md", md),
    }
    if fits:
        paths["fit_csv"] = write_csv_atomic(d / "study-fit.csv", FIT_COLUMNS, fits)
    if joint:
        paths["joint_csv"] = write_csv_atomic(d / "study-joint.csv", JOINT_COLUMNS, joint)
    if starts:
        paths["starts_csv"] = write_csv_atomic(
            d / "study-starts.csv", REACH_COLUMNS, starts["reach"]
        )
        paths["starts_slopes_csv"] = write_csv_atomic(
            d / "study-starts-slopes.csv", DIFF_COLUMNS, starts["diffs"]
        )
    with paper_style():
        paths["png"], paths["pdf"] = _save(study_figure(study, rows, fits), d / "study")
    if rates_figure and study.runs:
        o = study.options  # the study tables' bootstrap, so the legends show study.md's CIs
        png, _ = plot_comparison(
            [r.path for r in study.runs],
            [r.point for r in study.runs],
            d / "study-rates",
            n_boot=int(o.get("n_boot", 1000)),
            seed=int(o.get("seed", 0)),
            ci=float(o.get("ci", 0.95)),
            aggregate=o.get("aggregate", "log_median"),
        )
        paths["rates_png"] = png
    return {
        "study": study,
        "rows": rows,
        "fits": fits,
        "joint": joint,
        "markdown": md,
        "paths": paths,
    }


def _starts(study: StudyRuns, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The start comparison (``starts`` option; `moejax.report.starts`), else empty."""
    o = study.options
    if not o.get("starts") or not study.runs:
        return {}
    reach = reach_rows(study.runs)
    diffs = difference_rows(study.runs, *_blocks_and_bootstrap(study, rows))
    md = starts_markdown(reach, diffs, study.runs[0].point)
    return {"reach": reach, "diffs": diffs, "markdown": md}


def _joint(study: StudyRuns, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The joint fit's rows when the study asks for it (``joint`` option), else empty."""
    o = study.options
    if not o.get("joint"):
        return []
    return joint_rows(study.runs, *_blocks_and_bootstrap(study, rows))


def _blocks_and_bootstrap(
    study: StudyRuns, rows: Sequence[Mapping[str, Any]]
) -> tuple[list[str], int, float, int]:
    """The study's blocks (in the rows' order) and its bootstrap options (n_boot, ci, seed),
    as the whole-study analyses (joint fit, start comparison) take them."""
    o = study.options
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    return blocks, int(o.get("n_boot", 1000)), float(o.get("ci", 0.95)), int(o.get("seed", 0))

"""Rate figures (matplotlib object API on the Agg/PDF canvases; pyplot is never imported).

Figures are sized for a paper: ``width="page"`` (7 in, a two-column paper's full width; the
default) or ``"column"`` (3.5 in), or a width in inches. Panels wrap into a grid of at most
``floor(width / 2.3)`` columns (3 at 7 in, 1 at 3.5 in) and every font is set in points for the
printed size, so the PDF stays legible when placed at that width.

``rates_figure`` / ``plot_rates``: one log-log panel per parameter block of a run: the error of
every valid fit (faint dots), fits that ended on the box (``at_bound == 1``) as hollow black
circles, the per-n median error with the interquartile range of the valid errors as a band, the
fitted log-median line and the theory lines (uniform dashed, pointwise dotted where it differs)
through the fitted line's centre. Each panel's legend gives its own slope and bootstrap CI, taken
from the rows it is given (:func:`moejax.report.slopes.compute_slopes`, the table's numbers).

``comparison_figure`` / ``plot_comparison``: one panel per run (e.g. heterogeneous vs
homogeneous) with every block's raw median error (no normalisation; y shared across panels), its
interquartile band, its fitted line and both hypotheses' lines; the slopes and CIs in the legends
are those of the runs' slope tables (same bootstrap draws and seed).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from moejax.atomic import write_bytes_atomic

from .slopes import block_data, compute_slopes, main_rows, valid_errors_by_size
from .table import read_fits_csv, read_manifest
from .theory import theory_or_nan, theory_regime

BLOCK_LABELS: dict[str, str] = {
    "beta": r"$\|\hat\beta-\beta^*\|_2$",
    "exp_tau": r"$|e^{\hat\tau}-e^{\tau^*}|$",
    "eta": r"$\|\hat\eta-\eta^*\|_F$",
    "density": "density distance",
    "nu": r"$|\hat\nu-\nu^*|$",
    "voronoi": "Voronoi loss",
}
#: Short math names of the blocks (legends, table headers of figures).
BLOCK_NAMES: dict[str, str] = {
    "beta": r"$\beta$",
    "exp_tau": r"$\exp(\tau)$",
    "eta": r"$\eta$",
    "density": "density",
    "nu": r"$\nu$",
    "voronoi": "Voronoi",
}
BLOCK_COLORS: dict[str, str] = {
    "beta": "tab:blue",
    "exp_tau": "tab:red",
    "eta": "tab:green",
    "density": "tab:purple",
    "nu": "tab:orange",
    "voronoi": "tab:brown",
}
#: Axis labels in words for config keys and manifest quantities (the key itself otherwise).
AXIS_LABELS: dict[str, str] = {
    "n": "sample size n",
    "gamma": r"drift exponent $\gamma$",
    "truth.gamma": r"drift exponent $\gamma$",
    "adapter_weight": r"adapter weight $\lambda^*$",
    "truth.tau": r"gate intercept $\tau^*$",
    "truth.beta": r"gate slope $\beta^*$",
    "truth.delta": r"drift direction $\Delta$",
    "truth.regime": "regime",
    "model.d": "covariate dimension d",
    "model.K": "number of classes K",
    "model.scale": "expert logit scale s",
    "model.adapters": "true adapters m*",
    "model.fitted_adapters": r"fitted adapters $\hat m$",
    "model.gate": "gate",
    "model.adapter": "adapter activation",
    "model.frozen": "frozen expert activation",
    "model.likelihood": "likelihood",
    "init.mode": "initialisation",
    "estimator.method": "estimator",
    "replicates": "replicates per sample size",
    "point": "grid point",
}
#: Named figure widths in inches: a two-column paper's column and page.
WIDTHS: dict[str, float] = {"column": 3.5, "page": 7.0}
#: Fonts in points at the printed size (legible at 3.5 in and 7 in).
FONT: dict[str, float] = {"title": 8.0, "label": 8.0, "tick": 7.0, "legend": 6.5, "note": 6.0}
PAPER_RC: dict[str, Any] = {
    "font.size": FONT["label"],
    "axes.titlesize": FONT["title"],
    "axes.labelsize": FONT["label"],
    "xtick.labelsize": FONT["tick"],
    "ytick.labelsize": FONT["tick"],
    "legend.fontsize": FONT["legend"],
    "figure.titlesize": FONT["title"] + 1,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "legend.framealpha": 0.85,
    "legend.handlelength": 1.8,
    "errorbar.capsize": 2.0,
}
#: Per-n spread band: quantiles of the valid errors (the interquartile range).
BAND_QUANTILES: tuple[float, float] = (0.25, 0.75)
BAND_LABEL = "interquartile range"
PANEL_MIN_WIDTH = 2.3  # inches: at most floor(width / PANEL_MIN_WIDTH) panels per row


def axis_label(key: str | None) -> str:
    """The words for a config key or manifest quantity (``"truth.gamma"`` -> "drift exponent
    gamma"); the key itself when it has none."""
    if key is None:
        return ""
    return AXIS_LABELS.get(key, key)


def block_name(block: str) -> str:
    """The math name of a block (``"exp_tau"`` -> ``$\\exp(\\tau)$``; unknown: the name)."""
    return BLOCK_NAMES.get(block, block)


def figure_width(width: str | float) -> float:
    """Inches of a named width (``"column"`` 3.5, ``"page"`` 7) or a positive number.

    Raises:
        ValueError: unknown name or a non-positive width.
    """
    if isinstance(width, str):
        if width not in WIDTHS:
            raise ValueError(f"unknown width {width!r}; expected one of {tuple(WIDTHS)} or inches")
        return WIDTHS[width]
    w = float(width)
    if not (math.isfinite(w) and w > 0):
        raise ValueError(f"figure width must be a positive number of inches, got {width!r}")
    return w


def panel_grid(n_panels: int, width_in: float) -> tuple[int, int]:
    """``(rows, cols)`` for ``n_panels`` at a width: at most ``floor(width / 2.3)`` columns
    (at least 1), rows balanced (4 panels at 7 in are 2 x 2, 5 are 2 x 3)."""
    n = max(int(n_panels), 1)
    max_cols = max(1, int(width_in // PANEL_MIN_WIDTH))
    rows = math.ceil(n / min(n, max_cols))
    return rows, math.ceil(n / rows)


@contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib rc settings of :data:`PAPER_RC` (fonts in points at the printed size)."""
    with matplotlib.rc_context(PAPER_RC):
        yield


def paper_figure(
    n_panels: int,
    width: str | float = "page",
    *,
    aspect: float = 0.78,
    extra_height: float = 0.45,
    sharey: bool = False,
    legend_lines: int = 0,
) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n_panels`` axes in a :func:`panel_grid` grid.

    Args:
        n_panels: axes wanted (unused grid cells are removed, so ``fig.axes`` has exactly these).
        width: ``"page"`` (7 in), ``"column"`` (3.5 in) or inches.
        aspect: panel height / panel width.
        extra_height: inches added for the title and a figure legend.
        sharey: share the y axis between all panels.
        legend_lines: with ``k > 0``, an empty cell of ``k`` legend lines' height under each
            panel, for that panel's legend (``panel.legend_cell``; axis off).

    Returns:
        ``(fig, axes)`` with ``len(axes) == n_panels`` in row-major order (legend cells are
        not in ``axes``). Call inside :func:`paper_style` so that the artists get the paper
        fonts.
    """
    w = figure_width(width)
    rows, cols = panel_grid(n_panels, w)
    panel_h = aspect * w / cols
    key_h = (legend_lines * 1.3 * FONT["legend"] + 8.0) / 72.0 if legend_lines > 0 else 0.0
    fig = Figure(figsize=(w, rows * (panel_h + key_h) + extra_height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.03, hspace=0.03)
    if key_h:
        ratios = [panel_h, key_h] * rows
        grid = fig.subplots(2 * rows, cols, squeeze=False, height_ratios=ratios)
        cells = list(grid[1::2].ravel())
        grid = grid[0::2]
    else:
        grid = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
        cells = []
    axes = list(grid.ravel())
    n = max(n_panels, 1)
    for ax in axes[n:] + cells[n:]:
        fig.delaxes(ax)
    axes = axes[:n]
    for i, (ax, cell) in enumerate(zip(axes, cells, strict=False)):
        cell.axis("off")
        ax.legend_cell = cell  # type: ignore[attr-defined]
        if sharey and i:
            ax.sharey(axes[0])
            ax.tick_params(labelleft=i % cols == 0)
    for ax in axes:
        ax.tick_params(labelsize=FONT["tick"], which="both")
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def _save(fig: Figure, out_stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Save ``out_stem.png`` and ``out_stem.pdf`` atomically (`write_bytes_atomic`)."""
    stem = Path(out_stem)
    paths = []
    for ext, kwargs in (("png", {"dpi": 150}), ("pdf", {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, **kwargs)
        paths.append(write_bytes_atomic(stem.with_name(stem.name + "." + ext), buf.getvalue()))
    return paths[0], paths[1]


def _num(value: float) -> str:
    """A slope or CI end as the tables print it (3 decimals; ``nan`` spelled out)."""
    return f"{value:.3f}" if math.isfinite(value) else "nan"


def ci_text(row: Mapping[str, Any]) -> str:
    """``"slope -0.479 [-0.546, -0.427]"``: a slope row's numbers as the slope tables print
    them (the CI is left out when it is NaN, i.e. without a bootstrap)."""
    text = f"slope {_num(row['slope'])}"
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        text += f" [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
    return text


def _theory_text(th: Mapping[str, float]) -> str:
    """``"uniform -0.25, pointwise -0.375"``, or ``"theory -0.5"`` when the two agree."""
    u, p = th["uniform"], th["pointwise"]
    if not math.isfinite(u):
        return ""
    if math.isfinite(p) and abs(u - p) > 1e-12:
        return f"uniform {u:+.3g}, pointwise {p:+.3g}"
    return f"theory {u:+.3g}"


def _failure_text(data: Any) -> str:
    failed = int(np.sum(data.nonconverged | data.invalid_err))
    return f" ({failed} failed)" if failed else ""


def _per_size_stats(errors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median error and the :data:`BAND_QUANTILES` of the errors, each of shape (J,)."""
    med = np.array([np.median(e) for e in errors])
    lo = np.array([np.quantile(e, BAND_QUANTILES[0]) for e in errors])
    hi = np.array([np.quantile(e, BAND_QUANTILES[1]) for e in errors])
    return med, lo, hi


def _theory_lines(
    ax: Axes, row: Mapping[str, Any], th: Mapping[str, float], grid: np.ndarray, color: str
) -> list[Line2D]:
    """Draw the hypotheses' lines through the fitted line's centre (mean log n); returns them."""
    centre = float(np.mean(np.log(grid[[0, -1]])))
    level = row["intercept"] + row["slope"] * centre
    out = []
    u, p = th["uniform"], th["pointwise"]
    same = math.isfinite(p) and abs(p - u) <= 1e-12
    for a, style, name in ((u, "--", "theory" if same else "uniform"), (p, ":", "pointwise")):
        if not math.isfinite(a) or (name == "pointwise" and same):
            continue
        (line,) = ax.plot(
            grid,
            np.exp(level + a * (np.log(grid) - centre)),
            style,
            color=color,
            lw=1.0 if style == "--" else 1.3,
            label=f"{name} {a:+.3g}",
        )
        out.append(line)
    return out


def _log_axes(ax: Axes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label("n"))


def rates_figure(
    fits: Mapping[str, np.ndarray],
    slope_rows: Sequence[Mapping[str, Any]],
    regime: str | None,
    gamma: float | None,
    title: str | None = None,
    exclude_at_bound: bool = False,
    width: str | float = "page",
) -> Figure:
    """Log-log error-vs-n figure of one run, one panel per parameter block (see the module doc).

    Args:
        fits: column dict (arrays of shape ``(N,)``) from :func:`read_fits_csv`.
        slope_rows: rows of :func:`compute_slopes`, the very rows of the run's slope table (the
            ``drop_k == 0``, ``log_median`` row of each block gives the fitted line and the
            legend's slope and CI; blocks are taken in row order).
        regime, gamma: select the theory lines (none drawn if unknown).
        title: figure title (default: regime and gamma).
        exclude_at_bound: must match the value used for ``slope_rows``; box fits are drawn
            either way (hollow circles), and said to be excluded.
        width: ``"page"`` (7 in), ``"column"`` (3.5 in) or inches.

    Returns:
        The figure (panel ``i`` is ``fig.axes[i]``; its legend gives that block's slope).
    """
    fitted = {r["parameter"]: r for r in main_rows(slope_rows) if r["aggregate"] == "log_median"}
    params = list(dict.fromkeys(r["parameter"] for r in slope_rows))
    n = np.asarray(fits["n"], dtype=np.float64)
    at_bound = np.asarray(fits.get("at_bound", np.zeros(n.shape, np.int64))) == 1
    with paper_style():
        fig, axes = paper_figure(len(params), width, extra_height=0.55)
        failed_any = np.zeros(n.shape, dtype=bool)  # failed in some block
        for ax, p in zip(axes, params, strict=False):
            data = block_data(fits, p, exclude_at_bound)
            failed_any |= data.nonconverged | data.invalid_err
            sizes, errors = valid_errors_by_size(fits, p, exclude_at_bound)
            color = BLOCK_COLORS.get(p, "tab:gray")
            _log_axes(ax)
            ax.set_title(BLOCK_LABELS.get(p, p) + _failure_text(data))
            usable = np.isfinite(data.err) & (data.err > 0)
            box = at_bound & usable & ~(data.nonconverged)
            inside = data.valid & ~box
            ax.scatter(n[inside], data.err[inside], s=1.5, color=color, alpha=0.15, lw=0)
            if box.any():
                ax.scatter(
                    n[box],
                    data.err[box],
                    s=9,
                    facecolors="none",
                    edgecolors="black",
                    linewidths=0.5,
                    alpha=0.8,
                    label="box",
                    gid="at_bound",
                )
            if len(sizes) == 0:
                ax.text(0.5, 0.5, "no valid fits", transform=ax.transAxes, ha="center")
                continue
            med, lo, hi = _per_size_stats(errors)
            ax.fill_between(sizes, lo, hi, color=color, alpha=0.25, lw=0)
            ax.plot(sizes, med, "o", color=color, ms=3)
            row = fitted.get(p)
            handles: list[Any] = []
            if row is not None and math.isfinite(row["slope"]):
                grid = np.geomspace(sizes[0], sizes[-1], 50)
                line = np.exp(row["intercept"] + row["slope"] * np.log(grid))
                handles += ax.plot(grid, line, "-", color="black", lw=1.1, label=ci_text(row))
                th = theory_or_nan(p, regime, gamma)
                handles += _theory_lines(ax, row, th, grid, "dimgray")
            elif row is not None:
                ax.text(0.5, 0.05, "slope undefined", transform=ax.transAxes, ha="center")
            if handles:
                ax.legend(handles=handles, loc="lower left", fontsize=FONT["legend"])
        for i, ax in enumerate(axes):
            if i % panel_grid(len(axes), fig.get_figwidth())[1] == 0:
                ax.set_ylabel("error")
        key = [
            Line2D([], [], ls="", marker="o", ms=2, color="gray", alpha=0.5, label="one fit"),
            Line2D([], [], ls="", marker="o", ms=3, color="gray", label="median over replicates"),
            Patch(color="gray", alpha=0.25, label=BAND_LABEL),
        ]
        n_box = int(at_bound.sum())
        if n_box:
            note = " (excluded from the slopes)" if exclude_at_bound else ""
            key.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker="o",
                    ms=3.5,
                    mfc="none",
                    mec="black",
                    mew=0.6,
                    label=f"fit on the box: {n_box} of {n.size}{note}",
                )
            )
        key += [
            Line2D([], [], ls="-", color="black", label="log-median fit"),
            Line2D([], [], ls="--", color="dimgray", label="uniform hypothesis (or both)"),
            Line2D([], [], ls=":", color="dimgray", lw=1.3, label="pointwise hypothesis"),
        ]
        fig.legend(handles=key, loc="outside lower center", ncols=min(len(key), 4))
        head = (
            title
            if title is not None
            else f"{regime} regime" + (f", gamma = {gamma:g}" if gamma is not None else "")
        )
        if failed_any.any():
            head += f"  [{int(failed_any.sum())} of {failed_any.size} fits failed, excluded]"
        fig.suptitle(head)
    return fig


def plot_rates(
    fits: Mapping[str, np.ndarray],
    slope_rows: Sequence[Mapping[str, Any]],
    regime: str | None,
    gamma: float | None,
    out_stem: str | os.PathLike[str],
    title: str | None = None,
    exclude_at_bound: bool = False,
    width: str | float = "page",
) -> tuple[Path, Path]:
    """Write :func:`rates_figure` to ``out_stem.png`` and ``out_stem.pdf``.

    Returns:
        ``(png_path, pdf_path)``.
    """
    fig = rates_figure(fits, slope_rows, regime, gamma, title, exclude_at_bound, width)
    with paper_style():
        return _save(fig, out_stem)


def _load_run(run: Any) -> tuple[Mapping[str, np.ndarray], dict[str, Any]]:
    """A run dir, a fits dict, or ``{"fits": fits, "regime": ..., "gamma": ..., "name": ...}``.

    A run directory's ``slopes.json`` metadata (the report's ``n_boot``, ``seed``, ``ci`` and
    ``exclude_at_bound``) is returned under ``"report"`` when present."""
    if isinstance(run, str | os.PathLike):
        run_dir = Path(run)
        manifest_path = run_dir / "manifest.json"
        manifest = read_manifest(manifest_path) if manifest_path.exists() else {}
        slopes_json = run_dir / "slopes.json"
        if slopes_json.is_file():
            try:
                meta = json.loads(slopes_json.read_text()).get("metadata", {})
            except (OSError, ValueError, AttributeError):
                meta = {}
            manifest = {**manifest, "report": meta if isinstance(meta, Mapping) else {}}
        return read_fits_csv(run_dir / "fits.csv"), manifest
    if isinstance(run, Mapping) and "fits" in run:
        return run["fits"], {k: v for k, v in run.items() if k != "fits"}
    if isinstance(run, Mapping):
        return run, {}
    raise TypeError(f"cannot interpret run {type(run).__name__}")


def _setting(given: Any, meta: Mapping[str, Any], key: str, default: Any) -> Any:
    """An explicit setting, else the run's report's (``slopes.json``), else the table default."""
    if given is not None:
        return given
    value = (meta.get("report") or {}).get(key)
    return default if value is None else value


def comparison_rows(
    fits: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    parameters: Sequence[str],
    n_boot: int | None = None,
    seed: int | None = None,
    ci: float | None = None,
    aggregate: str = "log_median",
) -> list[dict[str, Any]]:
    """The main slope rows of one run as its slope table computes them: the bootstrap settings
    given, else those its ``slopes.json`` records, else the report's defaults (1000 draws, seed
    0, 95%), with the fits on the box excluded when the table excluded them."""
    config = meta.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    params = [p for p in parameters if f"err_{p}" in fits]
    return [
        r
        for r in compute_slopes(
            fits,
            parameters=params,
            aggregates=(aggregate,),
            n_boot=int(_setting(n_boot, meta, "n_boot", 1000)),
            ci=float(_setting(ci, meta, "ci", 0.95)),
            seed=int(_setting(seed, meta, "seed", 0)),
            drop_smallest=(0,),
            exclude_at_bound=bool(_setting(None, meta, "exclude_at_bound", False)),
            model=model,
        )
        if r["parameter"] in params
    ]


def comparison_figure(
    runs: Sequence[Any],
    labels: Sequence[str] | None,
    parameters: Sequence[str] = ("beta", "exp_tau", "eta", "nu", "voronoi"),
    n_boot: int | None = None,
    seed: int | None = None,
    ci: float | None = None,
    aggregate: str = "log_median",
    width: str | float = "page",
) -> Figure:
    """Side-by-side rate figure, one panel per run (e.g. heterogeneous vs homogeneous).

    Each block: raw median error per n (dots; no normalisation), the interquartile range of its
    valid errors (band), the fitted line (solid) and the hypotheses' lines through its centre
    (uniform dashed, pointwise dotted where they differ); the y axis is shared, so error levels
    compare across runs. Each panel's legend gives every block's slope and CI, exactly the
    run's slope table (:func:`comparison_rows`), and the hypotheses' exponents.

    Args:
        runs: ``R`` entries, each a run directory (with ``fits.csv`` and ``manifest.json``), a
            fits column dict, or ``{"fits": fits, "regime": str, "gamma": float | None}``.
        labels: ``R`` panel titles, or None for ``"<name>: <regime>, gamma=<gamma>"``.
        parameters: blocks to draw (those missing from a run, or NaN in every row of it, such
            as beta under an input-free gate, are skipped; see ``resolve_parameters``).
        n_boot, seed, ci: bootstrap settings of the CIs; None takes the run's ``slopes.json``
            settings, else the report's defaults (1000, 0, 0.95).
        aggregate: the slope's aggregate (the tables' main one by default).
        width: ``"page"`` (7 in), ``"column"`` (3.5 in) or inches.

    Returns:
        The figure; panel ``i`` (``fig.axes[i]``) is run ``i``.
    """
    loaded = [_load_run(r) for r in runs]
    tables = [comparison_rows(f, m, parameters, n_boot, seed, ci, aggregate) for f, m in loaded]
    lines = max((2 * len(t) for t in tables), default=2)
    with paper_style():
        fig, axes = paper_figure(
            len(loaded), width, aspect=0.72, extra_height=0.45, sharey=True, legend_lines=lines
        )
        hypotheses_shown = set()
        for i, (ax, (fits, meta), rows) in enumerate(zip(axes, loaded, tables, strict=False)):
            regime, gamma = meta.get("regime"), meta.get("gamma")
            config = meta.get("config")
            model = config.get("model") if isinstance(config, Mapping) else None
            hypotheses = theory_regime(regime, model)
            _log_axes(ax)
            handles: list[Any] = []
            for row in rows:
                p = row["parameter"]
                sizes, errors = valid_errors_by_size(fits, p, bool(row["n_excluded_at_bound"]))
                if len(sizes) == 0:
                    continue
                med, lo, hi = _per_size_stats(errors)
                color = BLOCK_COLORS.get(p, "tab:gray")
                th = theory_or_nan(p, hypotheses, gamma)
                label = f"{block_name(p)}: {ci_text(row)}"
                if _theory_text(th):
                    label += "\n" + _theory_text(th)
                ax.fill_between(sizes, lo, hi, color=color, alpha=0.13, lw=0)
                ax.plot(sizes, med, "o", color=color, ms=2.5)
                if math.isfinite(row["slope"]):
                    grid = np.geomspace(sizes[0], sizes[-1], 50)
                    fit = np.exp(row["intercept"] + row["slope"] * np.log(grid))
                    handles += ax.plot(grid, fit, "-", color=color, lw=1.2, label=label)
                    for line in _theory_lines(ax, row, th, grid, color):
                        line.set_alpha(0.8)
                        hypotheses_shown.add(line.get_linestyle())
                else:
                    handles += ax.plot([], [], "o", color=color, label=label)
            n_box = int(np.sum(np.asarray(fits.get("at_bound", [])) == 1))
            n_all = int(np.asarray(fits["n"]).shape[0])
            if labels is not None:
                head = labels[i]
            else:
                g = f", gamma = {gamma:g}" if gamma is not None else ""
                head = f"{meta.get('name', f'run {i}')}: {regime}{g}"
            ax.set_title(head + f"\n{n_box} of {n_all} fits on the box")
            if handles:  # in the cell under the panel: the data would hide a legend inside
                ax.legend_cell.legend(
                    handles=handles, loc="upper center", fontsize=FONT["legend"], frameon=False
                )
        cols = panel_grid(len(axes), fig.get_figwidth())[1]
        for i, ax in enumerate(axes):
            if i % cols == 0:
                ax.set_ylabel("median error")
        key = [
            Line2D([], [], ls="-", marker="o", ms=2.5, color="gray", label="median and fit"),
            Patch(color="gray", alpha=0.25, label=BAND_LABEL),
            Line2D([], [], ls="--", color="gray", label="uniform hypothesis (or both)"),
        ]
        if ":" in hypotheses_shown:
            key.append(Line2D([], [], ls=":", lw=1.3, color="gray", label="pointwise hypothesis"))
        fig.legend(handles=key, loc="outside lower center", ncols=len(key))
    return fig


def plot_comparison(
    runs: Sequence[Any],
    labels: Sequence[str] | None,
    out_stem: str | os.PathLike[str],
    parameters: Sequence[str] = ("beta", "exp_tau", "eta", "nu", "voronoi"),
    n_boot: int | None = None,
    seed: int | None = None,
    ci: float | None = None,
    aggregate: str = "log_median",
    width: str | float = "page",
) -> tuple[Path, Path]:
    """Write :func:`comparison_figure` to ``out_stem.png`` and ``out_stem.pdf``.

    Returns:
        ``(png_path, pdf_path)``.
    """
    fig = comparison_figure(runs, labels, parameters, n_boot, seed, ci, aggregate, width)
    with paper_style():
        return _save(fig, out_stem)

"""Input-free vs softmax gate: how the estimation error scales with the adapter's weight.

Input: several run directories, each a sweep at one gate type (``manifest["config"]["model"]
["gate"]``, ``"softmax"`` when absent) and one truth tau*, hence one adapter weight

    lambda* = E_X[total gate weight of the adapters at the truth]

(``manifest["adapter_weight"]`` when present, else :func:`adapter_weight` from the config), with a
few sample sizes each. Per run and block the statistic is

    S = geometric mean over n of  median over replicates of  sqrt(n) * err,

i.e. ``log S = mean_n [log median(err_n) + log(n) / 2]``; it removes the n^(-1/2) rate so that
runs with different size grids compare, and the median makes it robust to the odd bad fit. Valid
fits are those of :func:`moejax.report.slopes.block_data` (``converged == 1``, finite positive
error); failed ones are excluded and counted.

Per gate and block, the exponent ``b`` of ``S ~ lambda*^b`` is the least-squares slope of log S
on log lambda* over that gate's runs, with a percentile bootstrap CI: replicates are resampled
with replacement within each (run, n) cell (the same vectorised resampling as the slope CIs),
``n_boot`` draws from Generators seeded by ``(seed, crc32(block), run index)``.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from moejax.atomic import write_text_atomic

from .plots import BLOCK_LABELS, _save
from .slopes import _bootstrap_aggregates, block_data, ols_slope, resolve_parameters
from .table import read_fits_csv, read_manifest, write_csv_atomic

GATES: tuple[str, ...] = ("softmax", "input_free", "sigmoid")
GATE_COLORS: dict[str, str] = {
    "softmax": "tab:blue",
    "input_free": "tab:red",
    "sigmoid": "tab:green",
}
GATE_MARKERS: dict[str, str] = {"softmax": "o", "input_free": "s", "sigmoid": "^"}
#: Blocks requested from every run; nu, voronoi and density are added when a run has them.
GATE_BLOCKS: tuple[str, ...] = ("beta", "exp_tau", "eta")
#: Monte Carlo size and seed of the adapter weight when the manifest does not carry it.
WEIGHT_DRAWS, WEIGHT_SEED = 200_000, 0
NOTE_TOO_FEW = "fewer than 2 distinct adapter weights: exponent undefined"

POINT_COLUMNS: tuple[str, ...] = (
    "gate",
    "block",
    "run",
    "adapter_weight",
    "tau_star",
    "sqrt_n_median_err",
    "ci_low",
    "ci_high",
    "n_sizes",
    "n_min",
    "n_max",
    "n_fits",
    "n_failed",
    "n_at_bound",
    "exponent",
    "exponent_ci_low",
    "exponent_ci_high",
)
EXPONENT_COLUMNS: tuple[str, ...] = (
    "gate",
    "block",
    "exponent",
    "ci_low",
    "ci_high",
    "n_runs",
    "weight_min",
    "weight_max",
    "n_fits",
    "n_failed",
    "n_at_bound",
    "note",
)


@dataclass(frozen=True)
class GateRun:
    """One sweep at one gate type and one adapter weight."""

    name: str
    gate: str
    adapter_weight: float  # lambda* in (0, 1)
    tau_star: float  # NaN when not a scalar in the config (several adapters)
    fits: Mapping[str, np.ndarray]  # column dict of read_fits_csv, arrays of shape (N,)
    model: Mapping[str, Any] | None  # manifest["config"]["model"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def adapter_weight(config: Mapping[str, Any]) -> float:
    """E_X[total gate weight of the adapters at the truth] from a resolved sweep config.

    X ~ N(0, I_d) (conditioned on ``||x|| <= model.radius`` when a radius is set). With ``m``
    adapters, truth ``tau`` of shape ``()`` or ``(m,)`` and ``beta`` of shape ``(d,)`` or
    ``(m, d)``:

    - ``input_free``: ``sigmoid(logsumexp(tau))`` (``sigmoid(tau*)`` for one adapter);
    - ``softmax`` (the frozen expert's logit fixed at 0): the mean of
      ``sigmoid(logsumexp_j(beta_j . x + tau_j))``;
    - ``sigmoid`` (independent sigmoid gates, the frozen expert's weight proportional to
      ``sigmoid(0) = 1/2``, as in ``moejax.mix.density.gate_log_weights``): the mean of
      ``S / (1/2 + S)`` with ``S = sum_j sigmoid(beta_j . x + tau_j)``;

    means over ``WEIGHT_DRAWS = 200000`` draws of ``numpy.random.default_rng(0)``. The engine's
    own value (``manifest["adapter_weight"]``, other draws) is preferred by :func:`load_gate_run`.

    Raises:
        ValueError: missing or mis-shaped truth, or an unknown gate.
    """
    try:
        model, truth = config["model"], config["truth"]
        tau = np.atleast_1d(np.asarray(truth["tau"], dtype=np.float64)).ravel()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"config has no usable truth.tau / model ({exc})") from None
    gate = model.get("gate", "softmax")
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; expected one of {GATES}")
    m = tau.shape[0]
    if gate == "input_free":
        return float(_sigmoid(np.logaddexp.reduce(tau)))
    d = int(model["d"])
    try:
        beta = np.asarray(truth["beta"], dtype=np.float64).reshape(m, d)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"truth.beta must hold {m} x {d} numbers ({exc})") from None
    x = np.random.default_rng(WEIGHT_SEED).standard_normal((WEIGHT_DRAWS, d))
    radius = model.get("radius")
    if radius is not None:
        x = x[np.linalg.norm(x, axis=1) <= float(radius)]
        if x.shape[0] < 1000:
            raise ValueError(f"model.radius = {radius}: too few covariate draws inside the ball")
    logits = x @ beta.T + tau  # (N, m)
    if gate == "sigmoid":
        total = _sigmoid(logits).sum(axis=1)
        return float(np.mean(total / (0.5 + total)))
    return float(np.mean(_sigmoid(np.logaddexp.reduce(logits, axis=1))))


def load_gate_run(run_dir: str | os.PathLike[str]) -> GateRun:
    """Read ``fits.csv`` and ``manifest.json`` of one gate run.

    Raises:
        ValueError: unreadable table, unknown gate, or an adapter weight outside (0, 1).
        OSError: a file cannot be read.
    """
    d = Path(run_dir)
    manifest = read_manifest(d / "manifest.json")
    fits = read_fits_csv(d / "fits.csv")
    config = manifest.get("config") if isinstance(manifest.get("config"), Mapping) else {}
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    gate = model.get("gate", "softmax")
    if gate not in GATES:
        raise ValueError(f"{d}: unknown gate {gate!r}; expected one of {GATES}")
    weight = manifest.get("adapter_weight")
    if weight is None:
        try:
            weight = adapter_weight(config)
        except ValueError as exc:
            raise ValueError(f"{d}: no adapter_weight in the manifest and {exc}") from None
    weight = float(weight)
    if not 0.0 < weight < 1.0:
        raise ValueError(f"{d}: adapter weight {weight} is not in (0, 1)")
    truth = config.get("truth") if isinstance(config.get("truth"), Mapping) else {}
    tau = truth.get("tau")
    tau_star = float(tau) if isinstance(tau, int | float) else math.nan
    return GateRun(
        name=str(manifest.get("name") or d.name),
        gate=gate,
        adapter_weight=weight,
        tau_star=tau_star,
        fits=fits,
        model=model or None,
    )


def _run_statistic(
    run: GateRun, block: str, n_boot: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, dict[str, Any]]:
    """``(log S, bootstrap log S of shape (n_boot,), counts)`` of one run and block."""
    data = block_data(run.fits, block)
    sizes = np.unique(data.n[data.valid])
    counts = {
        "n_sizes": len(sizes),
        "n_min": int(sizes[0]) if len(sizes) else -1,
        "n_max": int(sizes[-1]) if len(sizes) else -1,
        "n_fits": int(data.valid.sum()),
        "n_failed": int((data.nonconverged | data.invalid_err).sum()),
        "n_at_bound": int(data.at_bound.sum()),
    }
    if len(sizes) == 0:
        return math.nan, np.full(n_boot, math.nan), counts
    errors = [data.err[data.valid & (data.n == s)] for s in sizes]
    half_logn = 0.5 * np.log(sizes.astype(np.float64))  # (J,)
    log_medians = np.array([np.log(np.median(e)) for e in errors])  # (J,)
    point = float(np.mean(log_medians + half_logn))
    if n_boot > 0:
        boot = _bootstrap_aggregates(errors, ("log_median",), n_boot, rng)["log_median"]
        boot_point = (boot + half_logn).mean(axis=1)  # (n_boot,)
    else:
        boot_point = np.empty(0)
    return point, boot_point, counts


def gate_rows(
    runs: Sequence[GateRun], n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-run statistics and per-gate exponents.

    Args:
        runs: ``R`` runs (see :func:`load_gate_run`), any mix of gates and weights.
        n_boot: bootstrap draws (0: no CIs).
        seed: bootstrap seed; run ``i``'s block ``p`` draws from ``default_rng([seed,
            crc32(p), i])``, so results depend on the order of ``runs`` only through ``i``.
        ci: level of the percentile intervals.

    Returns:
        ``(points, exponents)``. ``points``: one dict per (run, block reported for it), keys
        :data:`POINT_COLUMNS`, ``sqrt_n_median_err = S`` with its bootstrap CI and the gate's
        exponent repeated. ``exponents``: one dict per (gate, block), keys
        :data:`EXPONENT_COLUMNS`: ``exponent = b`` of ``S ~ lambda*^b`` with its CI (NaN and a
        note with fewer than two distinct weights), ``n_runs`` used, the weight range and the fit
        counts summed over the gate's runs. Gates in :data:`GATES` order, blocks in order of
        first appearance.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    q = ((1.0 - ci) / 2.0, (1.0 + ci) / 2.0)
    points: list[dict[str, Any]] = []
    boots: list[np.ndarray] = []
    for i, run in enumerate(runs):
        for block in resolve_parameters(run.fits, GATE_BLOCKS, run.model):
            rng = np.random.default_rng([int(seed), zlib.crc32(block.encode()), i])
            log_s, boot, counts = _run_statistic(run, block, int(n_boot), rng)
            lo = hi = math.nan
            if boot.size and np.isfinite(boot).all():
                lo, hi = (float(np.exp(v)) for v in np.quantile(boot, q))
            points.append(
                {
                    "gate": run.gate,
                    "block": block,
                    "run": run.name,
                    "adapter_weight": run.adapter_weight,
                    "tau_star": run.tau_star,
                    "sqrt_n_median_err": math.exp(log_s) if math.isfinite(log_s) else math.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                    **counts,
                }
            )
            boots.append(boot)

    blocks = list(dict.fromkeys(p["block"] for p in points))
    gates = [g for g in GATES if any(p["gate"] == g for p in points)]
    exponents = []
    for gate in gates:
        for block in blocks:
            idx = [i for i, p in enumerate(points) if p["gate"] == gate and p["block"] == block]
            if not idx:
                continue
            group = [points[i] for i in idx]
            use = [i for i in idx if math.isfinite(points[i]["sqrt_n_median_err"])]
            logw = np.log([points[i]["adapter_weight"] for i in use])
            b = lo = hi = math.nan
            note = ""
            if len(np.unique(logw)) >= 2:
                logs = np.log([points[i]["sqrt_n_median_err"] for i in use])
                b = float(ols_slope(logw, logs)[0])
                if n_boot > 0:
                    mat = np.stack([boots[i] for i in use], axis=1)  # (n_boot, R_g)
                    lo, hi = (float(v) for v in np.quantile(ols_slope(logw, mat)[0], q))
            else:
                note = NOTE_TOO_FEW
            weights = [p["adapter_weight"] for p in group]
            exponents.append(
                {
                    "gate": gate,
                    "block": block,
                    "exponent": b,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_runs": len(use),
                    "weight_min": min(weights),
                    "weight_max": max(weights),
                    "n_fits": sum(p["n_fits"] for p in group),
                    "n_failed": sum(p["n_failed"] for p in group),
                    "n_at_bound": sum(p["n_at_bound"] for p in group),
                    "note": note,
                }
            )
            for p in group:
                p.update(exponent=b, exponent_ci_low=lo, exponent_ci_high=hi)
    order = {g: k for k, g in enumerate(GATES)}
    points.sort(key=lambda p: (order[p["gate"]], blocks.index(p["block"]), p["adapter_weight"]))
    return points, exponents


def _f(value: float, fmt: str = ".3f") -> str:
    return format(value, fmt) if math.isfinite(value) else "n/a"


def _ci(lo: float, hi: float, fmt: str = "+.2f") -> str:
    return f"[{_f(lo, fmt)}, {_f(hi, fmt)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def to_markdown(
    points: Sequence[Mapping[str, Any]], exponents: Sequence[Mapping[str, Any]], ci: float = 0.95
) -> str:
    """Markdown: what is measured, the exponent table, then the per-run table."""
    level = round(100 * ci)
    lines = [
        "# Input-free vs softmax gate: error against the adapter weight",
        "",
        "lambda* = E_X[total gate weight of the adapters at the truth]. Per run and block, "
        "S = geometric mean over n of the median over replicates of sqrt(n) * error. Exponent b: "
        f"least squares of log S on log lambda* over a gate's runs, {level}% percentile bootstrap "
        "CI (replicates resampled within each run and n). Failed fits (not converged, or a "
        "nan/inf/non-positive error) are excluded and counted; fits on a bound are kept and "
        "counted. Note: exp_tau is the absolute error |exp(tau_hat) - exp(tau*)| and exp(tau*) "
        "itself moves with lambda* (for one adapter under an input-free gate exp(tau*) = "
        "lambda* / (1 - lambda*)), so its b includes that scale.",
        "",
        f"| gate | block | exponent b | {level}% CI | runs | lambda* range | fits | failed |"
        " on a bound |",
        "|---|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for e in exponents:
        lines.append(
            f"| {e['gate']} | {e['block']} | {_f(e['exponent'], '+.3f')} | "
            f"{_ci(e['ci_low'], e['ci_high'], '+.3f')} | {e['n_runs']} | "
            f"{e['weight_min']:.3g} to {e['weight_max']:.3g} | {e['n_fits']} | {e['n_failed']} | "
            f"{e['n_at_bound']} |"
        )
    notes = [f"{e['gate']}/{e['block']}: {e['note']}" for e in exponents if e["note"]]
    if notes:
        lines += ["", *(f"note: {n}" for n in notes)]
    lines += [
        "",
        f"| gate | block | run | lambda* | tau* | sqrt(n) x median error [{level}% CI] | n range |"
        " fits | failed | on a bound |",
        "|---|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p['gate']} | {p['block']} | {p['run']} | {p['adapter_weight']:.4g} | "
            f"{_f(p['tau_star'], '.3g')} | {_f(p['sqrt_n_median_err'], '.4g')} "
            f"{_ci(p['ci_low'], p['ci_high'], '.4g')} | {p['n_min']}-{p['n_max']} | "
            f"{p['n_fits']} | {p['n_failed']} | {p['n_at_bound']} |"
        )
    return "\n".join(lines) + "\n"


def _minor_label(value: float, _pos: Any = None) -> str:
    """Label minor log ticks at 2 and 5 times a power of ten only (the others stay blank)."""
    if value <= 0:
        return ""
    lead = value / 10.0 ** math.floor(math.log10(value) + 1e-12)
    return f"{value:g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def plot_gates(
    points: Sequence[Mapping[str, Any]],
    exponents: Sequence[Mapping[str, Any]],
    out_stem: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """One log-log panel per block: x = lambda*, y = S with its CI, one line per gate (exponent
    in the legend), dashed lambda^(-1/2) and lambda^(-1) references through the panel's value at
    its largest lambda* (geometric mean over gates there). Writes ``.png`` and ``.pdf``."""
    blocks = list(dict.fromkeys(p["block"] for p in points)) or list(GATE_BLOCKS)
    fig = Figure(figsize=(4.4 * len(blocks), 4.4), layout="constrained")
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    fitted = {(e["gate"], e["block"]): e for e in exponents}
    for ax, block in zip(axes, blocks, strict=True):
        ok = [p for p in points if p["block"] == block and math.isfinite(p["sqrt_n_median_err"])]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.25)
        ax.set_title(BLOCK_LABELS.get(block, block), fontsize=10)
        ax.set_xlabel(r"adapter weight $\lambda^*$")
        if not ok:
            ax.text(0.5, 0.5, "no valid fits", transform=ax.transAxes, ha="center")
            continue
        for gate in GATES:
            pts = sorted((p for p in ok if p["gate"] == gate), key=lambda p: p["adapter_weight"])
            if not pts:
                continue
            x = np.array([p["adapter_weight"] for p in pts])
            y = np.array([p["sqrt_n_median_err"] for p in pts])
            lo = np.array([p["ci_low"] for p in pts])
            hi = np.array([p["ci_high"] for p in pts])
            yerr = np.where(np.isfinite([lo, hi]), np.abs(np.array([y - lo, hi - y])), 0.0)
            e = fitted.get((gate, block))
            label = gate
            if e is not None and math.isfinite(e["exponent"]):
                label += f": b = {e['exponent']:+.2f} {_ci(e['ci_low'], e['ci_high'])}"
            ax.errorbar(
                x,
                y,
                yerr=yerr,
                fmt="-" + GATE_MARKERS.get(gate, "o"),
                color=GATE_COLORS.get(gate, "tab:gray"),
                capsize=3,
                ms=5,
                label=label,
            )
        xs = np.array([p["adapter_weight"] for p in ok])
        # Log ticks at 1, 2, 5 x 10^k: the runs' own weights (e.g. 0.25 and 0.286) would overlap.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        top = xs.max()
        anchor = math.exp(
            float(
                np.mean(
                    [math.log(p["sqrt_n_median_err"]) for p in ok if p["adapter_weight"] == top]
                )
            )
        )
        grid = np.geomspace(xs.min(), top, 50)
        for slope, color, text in (
            (-0.5, "gray", r"$\lambda^{-1/2}$"),
            (-1.0, "black", r"$\lambda^{-1}$"),
        ):
            ax.plot(grid, anchor * (grid / top) ** slope, "--", color=color, lw=1.0, label=text)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel(r"$\sqrt{n}\ \times$ median error (geometric mean over n)")
    fig.suptitle(
        r"$\sqrt{n}\,\times$ median error against the adapter weight $\lambda^*$ "
        "(median over replicates, geometric mean over n; failed fits excluded)"
    )
    return _save(fig, out_stem)


def write_gates(
    run_dirs: Sequence[str | os.PathLike[str] | GateRun],
    out_stem: str | os.PathLike[str],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Gate comparison of several run directories (or already loaded :class:`GateRun` s);
    writes ``<stem>.csv`` (one row per run and block, columns :data:`POINT_COLUMNS`),
    ``<stem>.md`` (exponent and per-run tables) and ``<stem>.png``/``.pdf``.

    Returns:
        ``{"points": ..., "exponents": ... (see :func:`gate_rows`), "paths": {"csv", "md",
        "png", "pdf"} -> Path}``.

    Raises:
        ValueError: no run, or a run that :func:`load_gate_run` rejects.
    """
    if not run_dirs:
        raise ValueError("no run directory given")
    runs = [d if isinstance(d, GateRun) else load_gate_run(d) for d in run_dirs]
    points, exponents = gate_rows(runs, n_boot=n_boot, seed=seed, ci=ci)
    stem = Path(out_stem)
    paths: dict[str, Path] = {
        "csv": write_csv_atomic(stem.with_name(stem.name + ".csv"), POINT_COLUMNS, points),
        "md": write_text_atomic(
            stem.with_name(stem.name + ".md"), to_markdown(points, exponents, ci)
        ),
    }
    paths["png"], paths["pdf"] = plot_gates(points, exponents, stem)
    return {"points": points, "exponents": exponents, "paths": paths}

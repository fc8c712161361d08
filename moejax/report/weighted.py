"""The weighted Voronoi loss of an over-fitted run and what the box does to it.

Over-fitted runs (more fitted adapters than true ones) are measured in the Gaussian-MoE rate
papers by the weighted Voronoi loss D (`moejax.weighted_voronoi_loss`, exponent 1 on a cell
holding one fitted adapter, 2 on a shared cell; docs/theory.md 5.1), not by the unweighted
blocks. A fitted adapter whose weight drains may end with a coordinate on the box; its term
exp(tau_i) ||theta_i - theta*||^r then measures the distance to the box edge as much as the
estimator. `weighted_voronoi_rows` gives, per n, the median D, the fits with such an adapter,
the median and largest share of D that those adapters carry, and the largest weight of an
adapter on the box; `write_weighted_voronoi` writes them with the slope of D (all fits, and the
fits with no coordinate on the box) as ``voronoi_w.{csv,md}``. The kept estimates come from the
run's estimates.npz (`moejax.report.report.run_evidence`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from moejax.atomic import write_text_atomic

from .table import write_csv_atomic
from .tables import to_markdown

WEIGHTED_COLUMNS: tuple[str, ...] = (
    "n",
    "n_fits",
    "median_loss",
    "fits_with_adapter_on_box",
    "median_share_on_box",
    "max_share_on_box",
    "max_weight_on_box",
)
SLOPE_COLUMNS: tuple[str, ...] = ("fits", "slope", "ci_low", "ci_high", "n_fits", "n_sizes")


def weighted_voronoi_parts(
    evidence: Mapping[str, Any], exponents: tuple[float, ...] = (1.0, 2.0)
) -> dict[str, np.ndarray]:
    """Per fit (flat rows of ``evidence``, estimates.npz's order): ``loss`` (F,) the weighted
    Voronoi loss, ``share_on_box`` (F,) the share of it carried by fitted adapters with a
    coordinate on the box, ``weight_on_box`` (F,) the largest weight exp(tau_i) of such an
    adapter (0 when none), ``on_box`` (F,) bool some fitted adapter is on the box."""
    import jax

    from moejax.sweep.simulate import group_kept
    from moejax.voronoi import weighted_voronoi_terms

    from .coverage import flat_evidence

    kept = group_kept(flat_evidence(evidence))
    est, tru, ob = kept["estimate"], kept["truth"], kept["on_bound"]
    terms = jax.jit(jax.vmap(lambda e, t: weighted_voronoi_terms(e, t, exponents)))
    mass, atoms = (np.asarray(a, np.float64) for a in terms(est, tru))
    F, m_hat = atoms.shape
    flags = [np.asarray(getattr(ob, f)).reshape(F, m_hat, -1) for f in ("beta", "tau", "eta")]
    adapter_on_box = np.concatenate(flags, axis=2).astype(bool).any(axis=2)  # (F, m_hat)
    loss = mass + atoms.sum(axis=1)
    carried = np.where(adapter_on_box, atoms, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(loss > 0, carried / loss, 0.0)
    weights = np.exp(np.asarray(est.tau, np.float64))
    return {
        "loss": loss,
        "share_on_box": share,
        "weight_on_box": np.where(adapter_on_box, weights, 0.0).max(axis=1),
        "on_box": adapter_on_box.any(axis=1),
    }


def weighted_voronoi_rows(
    evidence: Mapping[str, Any],
    exponents: tuple[float, ...] = (1.0, 2.0),
    parts: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One row per n (WEIGHTED_COLUMNS) over the converged fits of ``evidence``; ``parts``:
    `weighted_voronoi_parts` of the same evidence when already computed."""
    if parts is None:
        parts = weighted_voronoi_parts(evidence, exponents)
    n = np.asarray(evidence["n"])
    ok = np.asarray(evidence.get("converged", np.ones_like(n)), bool)
    rows = []
    for size in np.unique(n):
        s = (n == size) & ok & np.isfinite(parts["loss"])
        if not s.any():
            continue
        rows.append(
            {
                "n": int(size),
                "n_fits": int(s.sum()),
                "median_loss": float(np.median(parts["loss"][s])),
                "fits_with_adapter_on_box": int(parts["on_box"][s].sum()),
                "median_share_on_box": float(np.median(parts["share_on_box"][s])),
                "max_share_on_box": float(parts["share_on_box"][s].max()),
                "max_weight_on_box": float(parts["weight_on_box"][s].max()),
            }
        )
    return rows


def write_weighted_voronoi(
    run_dir: str | os.PathLike[str],
    fits: Mapping[str, np.ndarray],
    evidence: Mapping[str, Any],
    name: str = "run",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``voronoi_w.csv`` (the per-n rows) and ``voronoi_w.md`` (those rows and the
    log-median slope of D with its bootstrap CI on all fits and on the fits inside the box)
    into an over-fitted run's directory, from its fits.csv columns ``fits`` and its kept
    ``evidence`` (`moejax.report.report.run_evidence`, rows in fits.csv's order).
    Returns {"voronoi_w_csv": path, "voronoi_w_md": path}."""
    from .slopes import compute_slopes

    run = Path(run_dir)
    parts = weighted_voronoi_parts(evidence)
    rows = weighted_voronoi_rows(evidence, parts=parts)
    cols = {**fits, "err_voronoi_w": parts["loss"]}  # D computed once, for both slopes
    slope_rows = []
    for label, inside in (("all", False), ("inside the box", True)):
        r = compute_slopes(
            cols,
            parameters=("voronoi_w",),
            aggregates=("log_median",),
            n_boot=n_boot,
            seed=seed,
            drop_smallest=(0,),
            exclude_at_bound=inside,
        )
        r = next(x for x in r if x["parameter"] == "voronoi_w")
        slope_rows.append(
            {"fits": label, **{k: r[k] for k in SLOPE_COLUMNS[1:5]}, "n_sizes": r["n_sizes"]}
        )
    head = (
        f"# Weighted Voronoi loss: {name}\n\n"
        "D = sum_j |sum_{i in A_j} exp(tau_i) - exp(tau*_j)| + sum_j sum_{i in A_j} exp(tau_i) "
        "(||dbeta||^r + ||deta||_F^r), r = 1 on a cell of one fitted adapter, 2 on a shared "
        "cell (`moejax.weighted_voronoi_loss`). Log-median slope against n with its 95% "
        "bootstrap CI, on all converged fits and on the fits with no coordinate on the box:\n\n"
    )
    body = (
        to_markdown(slope_rows, SLOPE_COLUMNS)
        + "\n\nPer n: the fits with a fitted adapter on the box (some coordinate on a bound), "
        "the share of D those adapters carry (median, largest) and the largest weight "
        "exp(tau_i) of such an adapter.\n\n" + to_markdown(rows, WEIGHTED_COLUMNS)
    )
    return {
        "voronoi_w_csv": write_csv_atomic(run / "voronoi_w.csv", WEIGHTED_COLUMNS, rows),
        "voronoi_w_md": write_text_atomic(run / "voronoi_w.md", head + body),
    }


__all__ = [
    "WEIGHTED_COLUMNS",
    "weighted_voronoi_parts",
    "weighted_voronoi_rows",
    "write_weighted_voronoi",
]

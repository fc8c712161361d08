"""`moejax.slopes`: the slope table of a study, as a pure function of its fits.

From the arrays `moejax.simulate` returns (or any mapping of fits.csv columns, any shape), a
fits.csv file or a run directory, to one row per (block, aggregate): the log-log least-squares
slope, its bootstrap CI and, when the regime is known, the theory exponents beside it
(`moejax.report.theory`). Nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moejax.sweep.store import KEPT_GROUPS

from .coverage import flat_evidence
from .report import run_evidence
from .slopes import AGGREGATES, DEFAULT_PARAMETERS, KNOWN_PARAMETERS, compute_slopes
from .table import read_fits_csv, read_manifest
from .tables import build_export_rows


def _columns(fits: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flat (N,) numeric columns of a mapping of fits.csv columns ((S, R) arrays welcome);
    the kept evidence (MixParams groups, ``<group>.<leaf>`` arrays) is left out."""
    if "n" not in fits:
        raise ValueError("fits: expected the fits.csv columns, at least 'n' and 'err_<block>'")
    out = {}
    size = np.asarray(fits["n"]).size
    for k, v in fits.items():
        if isinstance(v, tuple) or k.split(".")[0] in KEPT_GROUPS:
            continue
        a = np.asarray(v)
        if a.size != size:
            raise ValueError(f"fits.{k}: {a.size} values, but 'n' has {size}")
        if a.dtype.kind in "biuf":
            out[k] = a.reshape(-1)
    return out


def slopes(
    fits: Mapping[str, Any] | str | os.PathLike[str],
    *,
    parameters: Sequence[str] = DEFAULT_PARAMETERS,
    aggregates: Sequence[str] = AGGREGATES,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    exclude_at_bound: bool = False,
    regime: str | None = None,
    gamma: float | None = None,
    losses: Mapping[str, Callable[[Any, Any], Any]] | None = None,
) -> list[dict[str, Any]]:
    """The slope table of a study (what ``moejax report`` writes to slopes.csv).

    Args:
      fits: {column: array} as returned by `moejax.simulate` ((sizes, replicates) arrays) or
        read from fits.csv (flat), a path to a fits.csv, or a run directory (its manifest then
        gives the regime and gamma unless they are passed).
      parameters: blocks to fit (nu, voronoi and density are added when their column has a
        finite value); aggregates: of ("log_mean", "mean_log", "log_median").
      n_boot, ci, seed: the replicate bootstrap (reproducible for a seed; n_boot 0: no CI).
      exclude_at_bound: also leave out fits flagged on a box bound.
      regime, gamma: "heterogeneous" / "homogeneous" and the drift exponent, for the theory
        columns (NaN when unknown).
      losses: {name: loss(estimate, truth) -> ()} user losses of one fit (MixParams of the
        fitted and of the true model), vmapped over every fit's kept estimate (`simulate`'s
        ``estimate`` / ``truth``, or the run's estimates.npz); each becomes a block
        ``name`` with the same slope table as a built-in one (theory NaN). For example
        ``{"voronoi_w": moejax.weighted_voronoi_loss}``.

    Returns:
      One dict per (block, aggregate) with keys parameter, aggregate, slope, ci_low, ci_high,
      theory (uniform), theory_pointwise, agree, n_fits, n_failed, n_at_bound, intercept,
      n_sizes, n_sizes_skipped, n_min, n_max, n_nonconverged, n_invalid_err,
      n_excluded_at_bound, n_outliers, note. Failed fits are counted, never averaged.
    """
    model = None
    if isinstance(fits, str | os.PathLike):
        p = Path(fits)
        run = p if p.is_dir() else p.parent
        csv_path = p / "fits.csv" if p.is_dir() else p
        if not csv_path.is_file():
            raise ValueError(f"fits: no fits.csv at {csv_path}")
        cols = read_fits_csv(csv_path)
        man_path = run / "manifest.json"
        if man_path.is_file():
            man = read_manifest(man_path)
            regime = man.get("regime") if regime is None else regime
            gamma = man.get("gamma") if gamma is None else gamma
            cfg = man.get("config")
            model = cfg.get("model") if isinstance(cfg, Mapping) else None
        evidence = run_evidence(run, cols) if losses else None
        if losses and evidence is None:
            raise ValueError(f"losses: {run} has no estimates.npz to compute them from")
    else:
        cols = _columns(fits)
        evidence = fits
    if losses:
        cols.update(loss_columns(evidence, losses))
        parameters = (*parameters, *(k for k in losses if k not in parameters))
    rows = compute_slopes(
        cols,
        parameters=parameters,
        aggregates=aggregates,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        drop_smallest=(0,),
        exclude_at_bound=exclude_at_bound,
        model=model,
    )
    return build_export_rows(rows, regime, gamma)


def loss_columns(
    evidence: Mapping[str, Any], losses: Mapping[str, Callable[[Any, Any], Any]]
) -> dict[str, np.ndarray]:
    """{"err_<name>": (F,) loss of every fit} for each user loss (see `slopes`), in the flat
    row order of `moejax.report.coverage.flat_evidence`."""
    import jax
    import jax.numpy as jnp

    from moejax.mix.spec import MixParams

    flat = flat_evidence(evidence)
    if "estimate.tau" not in flat or "truth.tau" not in flat:
        raise ValueError("losses: the fits hold no kept estimate and truth to compute them from")
    est = MixParams(*(jnp.asarray(flat[f"estimate.{leaf}"]) for leaf in MixParams._fields))
    tru = MixParams(*(jnp.asarray(flat[f"truth.{leaf}"]) for leaf in MixParams._fields))
    out = {}
    for name, fn in losses.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"losses: a loss name must be an identifier, got {name!r}")
        if name in KNOWN_PARAMETERS:
            raise ValueError(f"losses: {name!r} is a built-in block; name the loss otherwise")
        if not callable(fn):
            raise ValueError(f"losses.{name}: expected a function (estimate, truth) -> ()")
        values = np.asarray(jax.jit(jax.vmap(fn))(est, tru), np.float64)
        if values.shape != flat["n"].shape:
            raise ValueError(
                f"losses.{name}: expected one number per fit, got shape {values.shape[1:]} each"
            )
        out[f"err_{name}"] = values
    return out

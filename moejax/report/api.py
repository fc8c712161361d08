"""`moejax.slopes`: the slope table of a study, as a pure function of its fits.

From the arrays `moejax.simulate` returns (or any mapping of fits.csv columns, any shape), a
fits.csv file or a run directory, to one row per (block, aggregate): the log-log least-squares
slope, its bootstrap CI and, when the regime is known, the theory exponents beside it
(`moejax.report.theory`). Nothing is written.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moejax.sweep.schema import KEPT_GROUPS

from .coverage import flat_evidence
from .report import run_evidence
from .slopes import AGGREGATES, DEFAULT_PARAMETERS, KNOWN_PARAMETERS, compute_slopes
from .table import read_fits_csv, read_manifest
from .tables import build_export_rows
from .theory import REGIMES, is_overfitted, theory_regime

#: Keys of `moejax.simulate`'s output that are not per-fit columns.
METADATA_KEYS = ("problem",)


def _columns(fits: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flat (N,) numeric columns of a mapping of fits.csv columns ((S, R) arrays welcome);
    the kept evidence (MixParams groups, ``<group>.<leaf>`` arrays) and `simulate`'s
    ``problem`` are left out."""
    if "n" not in fits:
        raise ValueError("fits: expected the fits.csv columns, at least 'n' and 'err_<block>'")
    out = {}
    size = np.asarray(fits["n"]).size
    for k, v in fits.items():
        if k in METADATA_KEYS or isinstance(v, tuple) or k.split(".")[0] in KEPT_GROUPS:
            continue
        a = np.asarray(v)
        if a.size != size:
            raise ValueError(f"fits.{k}: {a.size} values, but 'n' has {size}")
        if a.dtype.kind in "biuf":
            out[k] = a.reshape(-1)
    return out


def _check_options(
    aggregates: Sequence[str], n_boot: Any, ci: Any, seed: Any, regime: Any, gamma: Any
) -> None:
    """Refuse options that cannot work, one ValueError line naming the argument."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer):
        raise ValueError(f"n_boot: expected an integer (0: no CI), got {n_boot!r}")
    if n_boot < 0:
        raise ValueError(f"n_boot: must be >= 0 (bootstrap draws; 0: no CI), got {n_boot}")
    if isinstance(ci, bool) or not isinstance(ci, int | float) or not 0.0 < ci < 1.0:
        raise ValueError(f"ci: the CI level must lie in (0, 1), got {ci!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    if isinstance(aggregates, str):
        raise ValueError(f"aggregates: expected a sequence of names, got {aggregates!r}")
    for a in aggregates:
        if a not in AGGREGATES:
            raise ValueError(f"aggregates: unknown aggregate {a!r}; choose from {AGGREGATES}")
    if regime is not None and regime not in REGIMES:
        near = difflib.get_close_matches(str(regime), REGIMES, n=1, cutoff=0.5)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"regime: unknown regime {regime!r}{hint}; choose from {REGIMES}")
    if gamma is not None and (
        isinstance(gamma, bool)
        or not isinstance(gamma, int | float | np.floating | np.integer)
        or not (math.isfinite(float(gamma)) and gamma >= 0)
    ):
        raise ValueError(f"gamma: expected a finite number >= 0, got {gamma!r}")


def hypotheses_of(
    regime: str | None, gamma: float | None, model: Mapping[str, Any] | None
) -> str | None:
    """The regime whose theory exponents a slope table shows, as the command line's report
    picks it: "overfitted" for a heterogeneous truth fitted with more adapters than it has
    (`moejax.report.theory.theory_regime`), a given "overfitted" as is, else ``regime``.
    Raises ValueError naming ``gamma`` for a homogeneous regime without one."""
    if regime == "overfitted":
        return regime
    if regime == "homogeneous" and gamma is None and not is_overfitted(model):
        raise ValueError("gamma: the homogeneous regime needs its drift exponent gamma")
    return theory_regime(regime, model)


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
      fits: {column: array} as returned by `moejax.simulate` ((sizes, replicates) arrays; its
        ``problem`` gives the regime, gamma and model) or read from fits.csv (flat), a path to
        a fits.csv, or a run directory (its manifest then gives them).
      parameters: blocks to fit (nu, voronoi and density are added when their column has a
        finite value); aggregates: of ("log_mean", "mean_log", "log_median").
      n_boot, ci, seed: the replicate bootstrap: n_boot >= 0 draws (0: no CI, ci_low and
        ci_high NaN), level ci in (0, 1), an integer seed >= 0 (reproducible for a seed).
      exclude_at_bound: also leave out fits flagged on a box bound.
      regime, gamma: override what ``fits`` records (or give it for a mapping that records
        nothing): "heterogeneous", "homogeneous" or "overfitted", and the drift exponent
        (needed by "homogeneous"). The theory columns use the hypotheses of the command
        line's report: an over-fitted heterogeneous run (more fitted adapters than true ones)
        gets the "overfitted" exponents (`moejax.report.theory.theory_regime`). Without a
        regime (a plain mapping, a fits.csv without a manifest) the theory columns are NaN.
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

    Raises:
      ValueError: naming the argument: n_boot negative or not an integer, ci outside (0, 1), a
        bad seed, an unknown aggregate or regime (e.g. "hetero"), gamma negative or not finite,
        a homogeneous regime without gamma, fits without the fits.csv columns.
    """
    _check_options(aggregates, n_boot, ci, seed, regime, gamma)
    model = None
    known_regime: str | None = None
    known_gamma: float | None = None
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
            known_regime, known_gamma = man.get("regime"), man.get("gamma")
            cfg = man.get("config")
            model = cfg.get("model") if isinstance(cfg, Mapping) else None
        evidence = run_evidence(run, cols) if losses else None
        if losses and evidence is None:
            raise ValueError(f"losses: {run} has no estimates.npz to compute them from")
    elif isinstance(fits, Mapping):
        cols = _columns(fits)
        evidence = fits
        problem = fits.get("problem")
        if problem is not None:
            if not all(hasattr(problem, a) for a in ("regime", "gamma", "model")):
                raise ValueError(
                    f"fits['problem']: expected the moejax Problem that simulate returns, got "
                    f"{type(problem).__name__}"
                )
            known_regime, known_gamma, model = problem.regime, problem.gamma, problem.model
    else:
        raise ValueError(
            "fits: expected simulate's output (a mapping of columns), a fits.csv path or a run "
            f"directory, got {type(fits).__name__}"
        )
    regime = known_regime if regime is None else regime
    gamma = known_gamma if gamma is None else gamma
    hypotheses = hypotheses_of(regime, gamma, model)
    if losses:
        cols.update(loss_columns(evidence, losses))
        parameters = (*parameters, *(k for k in losses if k not in parameters))
    rows = compute_slopes(
        cols,
        parameters=parameters,
        aggregates=aggregates,
        n_boot=int(n_boot),
        ci=float(ci),
        seed=int(seed),
        drop_smallest=(0,),
        exclude_at_bound=exclude_at_bound,
        model=model,
    )
    return build_export_rows(rows, hypotheses, gamma)


def loss_columns(
    evidence: Mapping[str, Any], losses: Mapping[str, Callable[[Any, Any], Any]]
) -> dict[str, np.ndarray]:
    """{"err_<name>": (F,) loss of every fit} for each user loss (see `slopes`), in the flat
    row order of `moejax.report.coverage.flat_evidence`."""
    import jax

    from moejax.sweep.simulate import group_kept

    flat = flat_evidence(evidence)
    kept = group_kept(flat)  # one MixParams per group, (F, ...) leaves
    if "estimate" not in kept or "truth" not in kept:
        raise ValueError("losses: the fits hold no kept estimate and truth to compute them from")
    est, tru = kept["estimate"], kept["truth"]
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

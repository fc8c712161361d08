"""Theoretical rate exponents (docs/theory.md section 3) and the agreement mark.

Two working hypotheses for the exponent ``a`` in ``error ~ n^a``:

``uniform`` (minimax, worst case over the class; the papers' rates)
    heterogeneous: -1/2 for every block;
    homogeneous with ``||Delta eta*|| ~ n^(-gamma)``: exp_tau ``-1/2 + 2 gamma``,
    beta ``-1/2 + gamma``, eta ``-1/2 + gamma``.

``pointwise`` (local Fisher information along one fixed drifting sequence)
    heterogeneous: -1/2 for every block;
    homogeneous: beta and exp_tau ``-1/2 + gamma``, eta ``-1/2``.

Density estimation (Hellinger / total variation) is ``-1/2`` in both regimes under both hypotheses.
At ``gamma = 1/4`` the uniform exp_tau exponent is 0: no convergence.

Blocks of the generalised models (regression experts, several adapters):

``nu`` (``|nu_hat - nu*|``, expert variance of regression experts)
    heterogeneous -1/2; homogeneous: uniform ``-1/2 + gamma`` (like eta), pointwise ``-1/2``.

``voronoi`` (Voronoi loss of ``m > 1`` adapters)
    heterogeneous -1/2; homogeneous: no hypothesis (NaN for both, so ``agree`` is ``n/a``).

The derivations, and where the two hypotheses disagree, are in docs/theory.md sections 3.1-3.5.
``overfitted`` (a heterogeneous truth fitted with more adapters than it has, docs/theory.md
section 5; :func:`theory_regime` picks it from a run's model config), both hypotheses:
    exp_tau and density -1/2 (a cell's summed weight, the mixture); beta, eta, nu and voronoi
    -1/4 (the atoms of a cell shared by several fitted adapters, tanh-type experts). An
    over-fitted homogeneous run has no hypothesis (NaN).
``overfitted-r4``, ``overfitted-r6`` (the same with linear Gaussian experts, whose largest
shared cell holds c = 2 or 3 fitted experts, r = rbar(c)): exp_tau and density -1/2; beta, eta
(its intercept b dominates) and voronoi -1/(2 r); nu -1/r (arXiv 2305.03288's D2 exponents).

docs/theory.md must agree with this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

PARAMETERS: tuple[str, ...] = ("beta", "exp_tau", "eta", "density", "nu", "voronoi")
#: Over-fitted linear Gaussian experts (the Gaussian-MoE papers' case): "overfitted-r<r>" for a
#: shared cell of c = 2 or 3 fitted experts, r = rbar(c) = 4 or 6 (docs/theory.md section 5).
RBAR: dict[int, int] = {2: 4, 3: 6}
REGIMES: tuple[str, ...] = (
    "heterogeneous",
    "homogeneous",
    "overfitted",
    *(f"overfitted-r{r}" for r in RBAR.values()),
)
_ALIASES = {"tau": "exp_tau", "exptau": "exp_tau"}


def _canonical(parameter: str) -> str:
    name = _ALIASES.get(parameter, parameter)
    if name not in PARAMETERS:
        raise ValueError(f"unknown parameter block {parameter!r}; expected one of {PARAMETERS}")
    return name


def theory_slope(parameter: str, regime: str, gamma: float | None) -> dict[str, float]:
    """Predicted log-log slope of the error of one parameter block.

    Args:
        parameter: ``"beta"``, ``"exp_tau"`` (alias ``"tau"``), ``"eta"``, ``"density"``,
            ``"nu"`` or ``"voronoi"``.
        regime: ``"heterogeneous"``, ``"homogeneous"`` or ``"overfitted"`` (a heterogeneous
            truth fitted with more adapters than it has; see :func:`theory_regime`).
        gamma: drift exponent of ``eta*(n) = eta0 + Delta n^(-gamma)``; ignored in the
            heterogeneous regime, required in the homogeneous one.

    Returns:
        ``{"uniform": a_u, "pointwise": a_p}``, both floats; both NaN for ``voronoi`` in the
        homogeneous regime (no hypothesis is stated there).

    Raises:
        ValueError: unknown parameter or regime, or homogeneous regime without a finite gamma.
    """
    name = _canonical(parameter)
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; expected one of {REGIMES}")
    if regime == "overfitted":  # docs/theory.md section 5: a cell shared by fitted adapters
        a = -0.5 if name in ("exp_tau", "density") else -0.25
        return {"uniform": a, "pointwise": a}
    if regime.startswith("overfitted-r"):  # linear Gaussian experts, a cell of rbar = r
        r = float(regime[len("overfitted-r") :])
        a = {"exp_tau": -0.5, "density": -0.5, "nu": -1.0 / r}.get(name, -0.5 / r)
        return {"uniform": a, "pointwise": a}
    if regime == "heterogeneous" or name == "density":
        return {"uniform": -0.5, "pointwise": -0.5}
    if name == "voronoi":
        return {"uniform": math.nan, "pointwise": math.nan}
    if gamma is None or not math.isfinite(float(gamma)):
        raise ValueError("the homogeneous regime needs a finite gamma")
    g = float(gamma)
    uniform = {"exp_tau": -0.5 + 2.0 * g, "beta": -0.5 + g, "eta": -0.5 + g, "nu": -0.5 + g}[name]
    pointwise = {"exp_tau": -0.5 + g, "beta": -0.5 + g, "eta": -0.5, "nu": -0.5}[name]
    return {"uniform": uniform, "pointwise": pointwise}


def is_overfitted(model: Mapping[str, Any] | None) -> bool:
    """Whether a run's model config (``manifest["config"]["model"]``) fits more adapters than
    the truth has (``fitted_adapters > adapters``; False without a model config or the key)."""
    if not isinstance(model, Mapping):
        return False
    m, fitted = model.get("adapters"), model.get("fitted_adapters")
    return isinstance(m, int) and isinstance(fitted, int) and fitted > m


def theory_regime(regime: str | None, model: Mapping[str, Any] | None) -> str | None:
    """The regime whose hypotheses apply to a run: ``"overfitted"`` for a heterogeneous truth
    fitted with ``model.fitted_adapters`` > ``model.adapters`` (docs/theory.md section 5), None
    (no hypothesis) for an over-fitted homogeneous one, else ``regime`` itself."""
    if is_overfitted(model):
        if regime != "heterogeneous":
            return None
        if model.get("adapter") == "linear" and model.get("likelihood") == "gaussian":
            r = RBAR.get(largest_shared_cell(model))
            return None if r is None else f"overfitted-r{r}"
        return "overfitted"
    return regime


def largest_shared_cell(model: Mapping[str, Any]) -> int:
    """The largest number of fitted adapters that start in one true adapter's cell under the
    split rule (`moejax.estimation.init.split_assignment`; the plain MoE never splits its
    reference expert)."""
    from moejax.estimation.init import split_assignment

    m, m_hat = int(model["adapters"]), int(model["fitted_adapters"])
    first = 1 if model.get("frozen") == "none" and m > 1 else 0
    src = split_assignment(m, m_hat, first)
    return max(src.count(j) for j in range(m))


def theory_or_nan(parameter: str, regime: str | None, gamma: float | None) -> dict[str, float]:
    """Like :func:`theory_slope` but returns NaNs instead of raising (unknown regime/gamma)."""
    try:
        return theory_slope(parameter, regime or "", gamma)
    except ValueError:
        return {"uniform": math.nan, "pointwise": math.nan}


def agreement(slope: float, ci_low: float, ci_high: float, theory: float) -> str:
    """Agreement mark between an empirical slope and a theoretical exponent.

    Returns:
        ``"yes"`` if ``ci_low <= theory <= ci_high``; otherwise the signed difference
        ``slope - theory`` (slope minus theory, NOT the distance to the nearest CI end) formatted
        with a sign and two decimals, e.g. ``"+0.12"``; ``"n/a"`` if slope or theory is NaN.
        If the CI is NaN (no bootstrap) but the slope is finite, the signed difference is given.
    """
    if not (math.isfinite(slope) and math.isfinite(theory)):
        return "n/a"
    if math.isfinite(ci_low) and math.isfinite(ci_high) and ci_low <= theory <= ci_high:
        return "yes"
    return f"{slope - theory:+.2f}"

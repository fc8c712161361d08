"""Estimation for the paper's model (the face of `moejax.estimation`'s estimators for `ModelSpec`
and `Params`): the same compiled estimators as every model of the family, with `Params` in
and out."""

from __future__ import annotations

from typing import Any

import jax

from moejax.estimation import estimators as _est
from moejax.estimation import init as _init
from moejax.estimation.bounds import Bounds
from moejax.estimation.estimators import FitResult
from moejax.mix.spec import MixSpec
from moejax.model import Params, check_params, from_mix, to_mix


def _face(res: FitResult) -> FitResult:
    return res._replace(params=from_mix(res.params))


def fit(
    spec: MixSpec,
    X: jax.Array,
    y: jax.Array,
    init: Params,
    weights: jax.Array | None = None,
    *,
    method: str = "direct",
    solver: Any = "newton",
    bounds: Bounds | None = None,
    max_iter: int | None = None,
    tol: float = 1e-12,
    inner_max_iter: int | None = None,
    em_accel: str = _est.DEFAULT_EM_ACCEL,
    switch_tol: float = _est.DEFAULT_SWITCH_TOL,
) -> FitResult:
    """Maximum-likelihood estimate of G = (beta, tau, eta) on a box.

    Args:
      spec: the model (`ModelSpec`).
      X: (n, d) covariates. y: (n,) integer labels in 0..K-1 (lists and NumPy arrays alike).
      init: starting Params (clipped into the box).
      weights: optional (n,) non-negative row weights; weight-0 rows are padding.
      method: "direct" (the solver on the full log-likelihood) or "em" (EM: E-step
        responsibilities, M-step = weighted logistic gate problem + weighted multinomial
        adapter problem, each solved by the solver, warm-started; accelerated as ``em_accel``
        says).
      solver: "newton" (projected Newton, default), "optax_lbfgs", "jaxopt_bfgs", or a solver
        object (see `moejax.estimation.solvers`); its ``max_iter`` caps each solve.
      bounds: the compact parameter set (default `Bounds()`).
      max_iter: cap on EM iterations ("em", default 500) or on solver iterations ("direct",
        default 500 or the solver object's).
      tol: EM ("none", "squarem") stops when the relative change of the log-likelihood
        falls below tol.
      inner_max_iter: cap on each M-step solve (EM only; default 50 or the solver object's).
      em_accel: "newton" (default: EM until the relative change falls below switch_tol, then
        the solver on the full likelihood), "squarem" (SQUAREM-accelerated EM) or "none"
        (plain EM); see `moejax.estimation.estimators.fit`.
      switch_tol: em_accel "newton": where EM hands over to the solver (default 1e-5).

    Returns:
      FitResult with `Params`. NaN/inf anywhere gives converged=False and status nonfinite.

    Raises:
      ValueError: naming the argument, before anything is compiled, as
        `moejax.estimation.estimators.fit` does: bad data, fewer rows than the model's free
        parameters (``spec.n_params``), ``max_iter`` / ``inner_max_iter`` not an integer >= 1,
        ``tol`` negative or not finite, an unknown method or solver.

    Passing a default explicitly, ``init`` by keyword, or another ``tol``/``max_iter`` reuses the
    compiled fit. It can be called under `jax.jit`/`jax.vmap`; it is not differentiable.
    """
    check_params(spec, init)
    res = _est.fit(
        spec,
        X,
        y,
        to_mix(init),
        weights,
        method=method,
        solver=solver,
        bounds=bounds,
        max_iter=max_iter,
        tol=tol,
        inner_max_iter=inner_max_iter,
        em_accel=em_accel,
        switch_tol=switch_tol,
    )
    return _face(res)


def fit_multistart(
    spec: MixSpec,
    X: jax.Array,
    y: jax.Array,
    inits: Params,
    weights: jax.Array | None = None,
    **fit_kwargs: Any,
) -> FitResult:
    """Fit from every start in ``inits`` (Params whose leaves have a leading axis S) and keep
    the best finite log-likelihood. ``fit_kwargs`` as in `fit`; bad input is refused as there."""
    starts = jax.vmap(to_mix)(inits)
    return _face(_est.fit_multistart(spec, X, y, starts, weights, **fit_kwargs))


def init_near_truth(
    key: jax.Array,
    truth: Params,
    n: jax.Array | float,
    c_gate: float = 0.005,
    c_expert: float = 0.05,
    rho: float = 0.083,
) -> Params:
    """Truth plus Gaussian noise of scale c * n^(-rho) (gate blocks c_gate, expert c_expert).

    The defaults are the regression predecessor's (c = 0.005 gate, 0.05 experts, rho = 0.083).
    """
    p = _init.perturb(key, to_mix(truth), n, c_gate, c_expert, rho, with_nu=False)
    return from_mix(p)


def random_inits(
    key: jax.Array, spec: MixSpec, n_starts: int, bounds: Bounds = Bounds(), scale: float = 1.0
) -> Params:
    """Truth-free starts: N(0, scale^2) entries clipped into the box; leaves gain axis (S,)."""
    return jax.vmap(from_mix)(_init.random_inits(key, spec, n_starts, bounds, scale))


__all__ = ["fit", "fit_multistart", "init_near_truth", "random_inits"]

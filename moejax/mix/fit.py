"""Direct maximum likelihood for the general mixture on a box, by any moejax solver.

The flat parameter vector follows the predictor layout of `moejax.mix.density`: the m gate
predictors ([beta_j, tau_j], or [tau_j] under the input-free gate), then the m R expert
predictors eta_{j,r}, then (regression) the m log-variances. The mean negative log-likelihood is
a `linear_predictor_objective` whose row function is `row_loglik` (derivatives by per-row
autodiff), so value, gradient and exact Hessian cost one pass over the data each.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.fit.estimators import FitResult, direct_result
from moejax.fit.objective import Blocks, Objective, linear_predictor_objective
from moejax.fit.solvers import get_solver
from moejax.mix.density import frozen_logpdf, row_loglik
from moejax.mix.spec import MixParams, MixSpec


class MixBounds(NamedTuple):
    """Box bounds per block; ``nu`` is on the variance itself (both ends > 0)."""

    beta: tuple[float, float] = (-5.0, 5.0)
    tau: tuple[float, float] = (-8.0, 8.0)
    eta: tuple[float, float] = (-5.0, 5.0)
    nu: tuple[float, float] = (1e-5, 100.0)

    def validate(self) -> MixBounds:
        for name in self._fields:
            lo, hi = (float(v) for v in getattr(self, name))
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds.{name}: need finite lower < upper, got ({lo}, {hi})")
        if self.nu[0] <= 0:
            raise ValueError(f"bounds.nu: the lower bound must be > 0, got {self.nu[0]}")
        return MixBounds(*(tuple(float(v) for v in getattr(self, f)) for f in self._fields))


def layout(spec: MixSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, starts) of the predictors in X1 = [x, 1] (see `linear_predictor_objective`)."""
    d, m, R = spec.d, spec.m, spec.R
    gate = (d + 1, 0) if spec.has_beta else (1, d)
    preds = [gate] * m + [(d, 0)] * (m * R) + ([(1, d)] * m if spec.regression else [])
    return tuple(w for w, _ in preds), tuple(s for _, s in preds)


def pack(spec: MixSpec, p: MixParams) -> jax.Array:
    """MixParams -> flat (P,) in the predictor layout (log nu for regression)."""
    m = spec.m
    gates = jnp.concatenate([p.beta, p.tau[:, None]], axis=1) if spec.has_beta else p.tau[:, None]
    parts = [gates.reshape(-1), p.eta.reshape(-1)]
    if spec.regression:
        parts.append(jnp.log(p.nu).reshape(m))
    return jnp.concatenate(parts)


def unpack(spec: MixSpec, theta: jax.Array) -> MixParams:
    """Flat (P,) -> MixParams (entries not estimated are 0)."""
    d, m, R = spec.d, spec.m, spec.R
    gw = d + 1 if spec.has_beta else 1
    gates = theta[: m * gw].reshape(m, gw)
    beta = gates[:, :d] if spec.has_beta else jnp.zeros((m, d), theta.dtype)
    tau = gates[:, -1]
    o = m * gw
    eta = theta[o : o + m * R * d].reshape(m, R, d)
    nu = jnp.exp(theta[o + m * R * d :]) if spec.regression else jnp.zeros((m,), theta.dtype)
    return MixParams(beta, tau, eta, nu)


def box(spec: MixSpec, bounds: MixBounds) -> tuple[jax.Array, jax.Array]:
    """Flat (lower, upper) in the layout of `pack`."""
    b = MixBounds(*bounds).validate()
    d, m, R = spec.d, spec.m, spec.R
    gate = [b.beta] * d + [b.tau] if spec.has_beta else [b.tau]
    per = gate * m + [b.eta] * (m * R * d)
    if spec.regression:
        per += [(math.log(b.nu[0]), math.log(b.nu[1]))] * m
    return jnp.asarray([lo for lo, _ in per]), jnp.asarray([hi for _, hi in per])


class MixData(NamedTuple):
    """X1 (n, d+1) with a ones column, y (n,) float64, w (n,) weights, total (), lf0 (n,)
    the frozen expert's log-density of each observation."""

    X1: jax.Array
    y: jax.Array
    w: jax.Array
    total: jax.Array
    lf0: jax.Array


def prepare(spec: MixSpec, X: jax.Array, y: jax.Array, weights: jax.Array | None = None) -> MixData:
    """Validate and prepare (X (n, d), y (n,), weights (n,)) for `fit_data`."""
    X = jnp.asarray(X, jnp.float64)
    if X.ndim != 2 or X.shape[1] != spec.d:
        raise ValueError(f"X: expected shape (n, {spec.d}), got {X.shape}")
    y = jnp.asarray(y, jnp.float64)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y: expected shape ({X.shape[0]},), got {y.shape}")
    w = jnp.ones_like(y) if weights is None else jnp.asarray(weights, jnp.float64)
    if w.shape != y.shape:
        raise ValueError(f"weights: expected shape {y.shape}, got {w.shape}")
    keep = w != 0
    X = jnp.where(keep[:, None], X, 0.0)
    y = jnp.where(keep, y, 0.0)
    return MixData(
        jnp.concatenate([X, jnp.ones_like(X[:, :1])], axis=1),
        y,
        w,
        jnp.maximum(jnp.sum(jnp.where(keep, w, 0.0)), 1e-300),
        frozen_logpdf(spec, X, y),
    )


def objective(spec: MixSpec, data: MixData, blocks: Blocks | None = None) -> Objective:
    """Mean negative log-likelihood of the flat parameter vector."""
    widths, starts = layout(spec)

    def phi(u, aux):
        y, lf0 = aux
        return -row_loglik(spec, u, y, lf0)

    return linear_predictor_objective(
        phi, data.X1, (data.y, data.lf0), data.w, data.total, widths, blocks, starts
    )


def fit_data(
    spec: MixSpec,
    data: MixData,
    init: MixParams,
    solver="newton",
    bounds: MixBounds = MixBounds(),
    max_iter: int = 100,
    blocks: Blocks | None = None,
) -> FitResult:
    """Direct MLE on prepared data (vmap-regular; see `fit`)."""
    spec.check_params(init)
    lo, hi = box(spec, bounds)
    s = get_solver(solver, max_iter=max_iter) if isinstance(solver, str) else solver
    res = s.minimize(objective(spec, data, blocks), pack(spec, init), lo, hi)
    return direct_result(unpack(spec, res.x), data.total, res, lo, hi)


@partial(jax.jit, static_argnames=("spec", "solver", "bounds", "max_iter"))
def fit(
    spec: MixSpec,
    X: jax.Array,
    y: jax.Array,
    init: MixParams,
    weights: jax.Array | None = None,
    solver="newton",
    bounds: MixBounds = MixBounds(),
    max_iter: int = 100,
) -> FitResult:
    """Maximum-likelihood estimate of every adapter's (beta, tau, eta, nu) on a box.

    Args:
      spec: the model. X: (n, d). y: (n,) labels 0..K-1 or real responses.
      init: starting MixParams (clipped into the box).
      weights: optional (n,) row weights; weight-0 rows are padding and change nothing.
      solver: "newton" (default), "optax_lbfgs", "jaxopt_bfgs" or a solver object.
      bounds: the compact parameter set (`MixBounds`). max_iter: solver iteration cap.

    Returns:
      `FitResult` with MixParams; status nonfinite if NaN/inf appeared.
    """
    return fit_data(spec, prepare(spec, X, y, weights), init, solver, bounds, max_iter)


def init_near_truth(
    key: jax.Array,
    truth: MixParams,
    n: jax.Array | float,
    c_gate: float = 0.005,
    c_expert: float = 0.05,
    rho: float = 0.083,
) -> MixParams:
    """Truth plus Gaussian noise of scale c n^(-rho): c_gate on beta and tau, c_expert on eta,
    and a multiplicative factor exp(c_expert n^(-rho) N(0, 1)) on nu (it stays positive)."""
    kb, kt, ke, kn = jax.random.split(key, 4)
    s = jnp.asarray(n, jnp.float64) ** (-rho)
    nrm = lambda k, a: jax.random.normal(k, jnp.shape(a), jnp.float64)
    return MixParams(
        truth.beta + c_gate * s * nrm(kb, truth.beta),
        truth.tau + c_gate * s * nrm(kt, truth.tau),
        truth.eta + c_expert * s * nrm(ke, truth.eta),
        truth.nu * jnp.exp(c_expert * s * nrm(kn, truth.nu)),
    )

"""Maximum-likelihood estimators: EM with numerical M-steps, and direct MLE.

Both minimise the mean negative log-likelihood over the compact parameter set (`Bounds`), with
weights (weight-0 rows are padding and change nothing). Both are pure and vmap-regular: every
loop is a `lax.while_loop` with an explicit cap, and per-lane counts are returned.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.fit.bounds import Bounds, at_bound, pack, unpack
from moejax.fit.objective import Blocks, Objective, linear_predictor_objective, map_rows
from moejax.fit.rows import mixture_rows
from moejax.fit.solvers import (
    CONVERGED,
    MAX_ITER,
    NONFINITE,
    get_solver,
    projected_grad_norm,
)
from moejax.model import ModelSpec, Params, _take, mask_padding

METHODS = ("direct", "em")


class FitResult(NamedTuple):
    """Per-fit outcome (a pytree; under vmap every leaf gains a leading batch axis).

    Attributes:
      params: the estimate (Params).
      loglik: () sum_i w_i log p(y_i | x_i) at the estimate.
      converged: () bool.
      status: () int32, 0 converged, 1 max_iter, 2 nonfinite (see STATUS_NAMES).
      n_iter: () int32, EM iterations (method "em") or solver iterations (method "direct").
      inner_steps: () int32, total inner-solver iterations (EM M-steps; equals n_iter for direct).
      at_bound: () bool, some coordinate of the estimate lies on its box bound.
      grad_norm: () projected-gradient inf-norm of the mean negative log-likelihood at the
        estimate (0 at an exact box-KKT point).
    """

    params: Params
    loglik: jax.Array
    converged: jax.Array
    status: jax.Array
    n_iter: jax.Array
    inner_steps: jax.Array
    at_bound: jax.Array
    grad_norm: jax.Array


def _weights(X: jax.Array, weights: jax.Array | None) -> jax.Array:
    n = X.shape[0]
    if weights is None:
        return jnp.ones((n,), jnp.float64)
    w = jnp.asarray(weights, jnp.float64)
    if w.shape != (n,):
        raise ValueError(f"weights: expected shape ({n},), got {w.shape}")
    return w


def _wmean(w: jax.Array, v: jax.Array, total: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(w != 0, w * v, 0.0)) / total


def _lsm_at(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.take(jax.nn.log_softmax(logits), y)


class FitData(NamedTuple):
    """A dataset prepared for the estimators (row-aligned arrays, padding rows masked).

    Attributes:
      X1: (n, d+1) covariates with a trailing column of ones.
      y: (n,) int32 labels.
      w: (n,) row weights, 0 for padding.
      total: () sum of the weights (the log-likelihood is normalised by it).
      lp0y: (n,) the frozen expert's log-probability of each observed label.
    """

    X1: jax.Array
    y: jax.Array
    w: jax.Array
    total: jax.Array
    lp0y: jax.Array


def frozen_log_prob(spec: ModelSpec, X: jax.Array, y: jax.Array) -> jax.Array:
    """log softmax(h0(x_i; eta0))_{y_i}, (n,): the frozen expert never changes during a fit."""
    return _take(spec.frozen.log_probs(spec.eta0_array(), X), y)


def _full_objective(spec: ModelSpec, data: FitData, blocks: Blocks | None = None) -> Objective:
    """Mean negative log-likelihood as a function of the flat parameter vector."""
    widths = (spec.d + 1,) + (spec.d,) * (spec.K - 1)
    return linear_predictor_objective(
        mixture_rows(spec.adapter),
        data.X1,
        (data.y, data.lp0y),
        data.w,
        data.total,
        widths,
        blocks,
    )


def _gate_objective(
    spec: ModelSpec, data: FitData, r: jax.Array, blocks: Blocks | None = None
) -> Objective:
    """EM M-step for the gate: weighted logistic regression with soft targets r."""

    def phi(u, ri):
        return -(ri * jax.nn.log_sigmoid(u[0]) + (1 - ri) * jax.nn.log_sigmoid(-u[0]))

    return linear_predictor_objective(phi, data.X1, r, data.w, data.total, (spec.d + 1,), blocks)


def _expert_objective(
    spec: ModelSpec, data: FitData, r: jax.Array, blocks: Blocks | None = None
) -> Objective:
    """EM M-step for the adapter: multinomial logistic regression weighted by r."""
    adapter = spec.adapter

    def phi(u, a):
        y, ri = a
        return -ri * _lsm_at(adapter.logits_from_z(u), y)

    return linear_predictor_objective(
        phi, data.X1, (data.y, r), data.w, data.total, (spec.d,) * (spec.K - 1), blocks
    )


def fit_result(params, total, theta, f, g, lo, hi, converged, status, n_iter, inner) -> FitResult:
    """The `FitResult` of a solve that ended at ``theta`` (P,) with mean objective f and gradient
    g, ``params`` being theta unpacked and ``total`` the sum of the weights: NaN/inf anywhere
    gives status nonfinite and converged False; at_bound and the KKT residual are taken on the box
    (lo, hi). Shared by the core and the general model's estimators."""
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(theta))
    status = jnp.where(finite, status, NONFINITE).astype(jnp.int32)
    return FitResult(
        params=params,
        loglik=-f * total,
        converged=converged & finite,
        status=status,
        n_iter=n_iter.astype(jnp.int32),
        inner_steps=inner.astype(jnp.int32),
        at_bound=at_bound(theta, lo, hi),
        grad_norm=projected_grad_norm(theta, g, lo, hi),
    )


def direct_result(params, total, res, lo, hi) -> FitResult:
    """`fit_result` of one direct solve (a solver's SolveResult ``res``; ``params`` = res.x
    unpacked): its iterations are also its inner steps."""
    return fit_result(
        params,
        total,
        res.x,
        res.value,
        res.grad,
        lo,
        hi,
        res.converged,
        res.status,
        res.n_iter,
        res.n_iter,
    )


def _fit_direct(spec, data, theta0, lo, hi, solver, blocks):
    res = solver.minimize(_full_objective(spec, data, blocks), theta0, lo, hi)
    return direct_result(unpack(spec, res.x), data.total, res, lo, hi)


def _fit_em(spec, data, theta0, lo, hi, solver, max_iter, tol, blocks):
    d = spec.d
    full = _full_objective(spec, data, blocks)

    def posterior(theta):
        p = unpack(spec, theta)

        def rows(X1, y, lp0y):
            X = X1[:, :d]
            g = X @ p.beta + p.tau
            l1 = jax.nn.log_sigmoid(g) + _take(spec.adapter.log_probs(p.eta, X), y)
            return jax.nn.sigmoid(l1 - (jax.nn.log_sigmoid(-g) + lp0y))

        return map_rows(rows, (data.X1, data.y, data.lp0y), blocks)

    def m_step(theta, r):
        gate = _gate_objective(spec, data, r, blocks)
        expert = _expert_objective(spec, data, r, blocks)
        gt0, et0 = theta[: d + 1], theta[d + 1 :]
        rg = solver.minimize(gate, gt0, lo[: d + 1], hi[: d + 1])
        re = solver.minimize(expert, et0, lo[d + 1 :], hi[d + 1 :])
        # Generalised EM: keep the old block if its solver did not improve Q.
        gt = jnp.where(jnp.isfinite(rg.value) & (rg.value <= gate.value(gt0)), rg.x, gt0)
        et = jnp.where(jnp.isfinite(re.value) & (re.value <= expert.value(et0)), re.x, et0)
        return jnp.concatenate([gt, et]), rg.n_iter + re.n_iter

    def cond(c):
        theta, f, it, inner, done = c
        return (~done) & (it < max_iter)

    def body(c):
        theta, f, it, inner, _ = c
        new, steps = m_step(theta, posterior(theta))
        fn = full.value(new)
        ok = jnp.isfinite(fn)
        rel = jnp.abs(f - fn) / jnp.maximum(jnp.abs(f), 1e-300)
        done = (rel <= tol) | ~ok
        new = jnp.where(ok, new, theta)
        fn = jnp.where(ok, fn, f)
        return new, fn, it + 1, inner + steps, done

    theta0 = jnp.clip(theta0, lo, hi)
    f0 = full.value(theta0)
    theta, f, it, inner, done = jax.lax.while_loop(
        cond, body, (theta0, f0, jnp.int32(0), jnp.int32(0), ~jnp.isfinite(f0))
    )
    finite = jnp.isfinite(f)
    converged = done & finite
    status = jnp.where(~finite, NONFINITE, jnp.where(converged, CONVERGED, MAX_ITER))
    f, g = full.value_and_grad(theta)
    return fit_result(
        unpack(spec, theta), data.total, theta, f, g, lo, hi, converged, status, it, inner
    )


def prepare_data(
    spec: ModelSpec, X: jax.Array, y: jax.Array, weights: jax.Array | None = None
) -> FitData:
    """Validate and prepare (X (n, d), y (n,), weights (n,)) for `fit_data`."""
    spec.check_data(X, y)
    X = jnp.asarray(X, jnp.float64)
    y = jnp.asarray(y, jnp.int32)
    w = _weights(X, weights)
    X, y = mask_padding(X, y, w)
    return FitData(
        X1=jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1),
        y=y,
        w=w,
        total=jnp.maximum(jnp.sum(jnp.where(w != 0, w, 0.0)), 1e-300),
        lp0y=frozen_log_prob(spec, X, y),
    )


def fit_data(
    spec: ModelSpec,
    data: FitData,
    init: Params,
    method: str = "direct",
    solver="newton",
    bounds: Bounds = Bounds(),
    max_iter: int = 500,
    tol: float = 1e-12,
    inner_max_iter: int = 50,
    blocks: Blocks | None = None,
) -> FitResult:
    """`fit` on a prepared dataset, optionally summing rows blockwise (`Blocks`), so that the
    work follows the active rows of a long padded buffer. Arguments as in `fit`."""
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    spec.check_params(init)
    bounds = Bounds(*bounds).validate()
    lo, hi = bounds.arrays(spec)
    theta0 = jnp.asarray(pack(init), jnp.float64)
    if method == "direct":
        s = get_solver(solver, max_iter=max_iter) if isinstance(solver, str) else solver
        return _fit_direct(spec, data, theta0, lo, hi, get_solver(s), blocks)
    s = get_solver(solver, max_iter=inner_max_iter) if isinstance(solver, str) else solver
    return _fit_em(spec, data, theta0, lo, hi, get_solver(s), max_iter, tol, blocks)


@partial(
    jax.jit,
    static_argnames=("spec", "method", "solver", "bounds", "max_iter", "tol", "inner_max_iter"),
)
def fit(
    spec: ModelSpec,
    X: jax.Array,
    y: jax.Array,
    init: Params,
    weights: jax.Array | None = None,
    method: str = "direct",
    solver="newton",
    bounds: Bounds = Bounds(),
    max_iter: int = 500,
    tol: float = 1e-12,
    inner_max_iter: int = 50,
) -> FitResult:
    """Maximum-likelihood estimate of G = (beta, tau, eta) on a box.

    Args:
      spec: the model.
      X: (n, d) covariates. y: (n,) integer labels in 0..K-1.
      init: starting Params (clipped into the box).
      weights: optional (n,) non-negative row weights; weight-0 rows are padding.
      method: "direct" (the solver on the full log-likelihood) or "em" (EM: E-step
        responsibilities, M-step = weighted logistic gate problem + weighted multinomial
        adapter problem, each solved by the solver, warm-started).
      solver: "newton" (projected Newton, default), "optax_lbfgs", "jaxopt_bfgs", or a solver
        object (see `moejax.fit.solvers`).
      bounds: the compact parameter set.
      max_iter: cap on EM iterations ("em") or on solver iterations ("direct").
      tol: EM stops when the relative change of the log-likelihood falls below tol.
      inner_max_iter: cap on each M-step solve (EM only).

    Returns:
      FitResult. NaN/inf anywhere gives converged=False and status 2 (nonfinite).
    """
    return fit_data(
        spec,
        prepare_data(spec, X, y, weights),
        init,
        method,
        solver,
        bounds,
        max_iter,
        tol,
        inner_max_iter,
    )


def status_name(code: int) -> str:
    """Human name of a status code."""
    from moejax.fit.solvers import STATUS_NAMES

    return STATUS_NAMES[int(code)] if 0 <= int(code) < len(STATUS_NAMES) else f"status_{code}"


__all__ = [
    "CONVERGED",
    "MAX_ITER",
    "METHODS",
    "NONFINITE",
    "FitData",
    "FitResult",
    "fit",
    "fit_data",
    "frozen_log_prob",
    "prepare_data",
    "status_name",
]

"""Initialisation: truth (diagnostic), near-truth noise c n^(-rho), truth-free multi-start."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from moejax.fit.bounds import Bounds, pack, unpack
from moejax.fit.estimators import FitResult, fit
from moejax.model import ModelSpec, Params

INIT_MODES = ("truth", "near_truth", "multistart")


def init_truth(truth: Params) -> Params:
    """Start at the truth (a diagnostic: it measures the estimator, not the search)."""
    return truth


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
    kb, kt, ke = jax.random.split(key, 3)
    s = jnp.asarray(n, jnp.float64) ** (-rho)
    return Params._unchecked(
        truth.beta + c_gate * s * jax.random.normal(kb, jnp.shape(truth.beta), jnp.float64),
        truth.tau + c_gate * s * jax.random.normal(kt, (), jnp.float64),
        truth.eta + c_expert * s * jax.random.normal(ke, jnp.shape(truth.eta), jnp.float64),
    )


def random_inits(
    key: jax.Array, spec: ModelSpec, n_starts: int, bounds: Bounds = Bounds(), scale: float = 1.0
) -> Params:
    """Truth-free starts: N(0, scale^2) entries clipped into the box; leaves gain axis (S,)."""
    lo, hi = Bounds(*bounds).validate().arrays(spec)
    z = scale * jax.random.normal(key, (n_starts, spec.n_params), jnp.float64)
    return jax.vmap(lambda t: unpack(spec, t))(jnp.clip(z, lo, hi))


@partial(jax.jit, static_argnames=("spec", "fit_kwargs_items"))
def _multistart(spec, X, y, inits, weights, fit_kwargs_items):
    kw = dict(fit_kwargs_items)
    return best_fit(jax.vmap(lambda p: fit(spec, X, y, p, weights, **kw))(inits))


def best_fit(results: FitResult) -> FitResult:
    """The fit with the highest finite log-likelihood among stacked results (leading axis S)."""
    score = jnp.where(jnp.isfinite(results.loglik), results.loglik, -jnp.inf)
    best = jnp.argmax(score)
    return jax.tree_util.tree_map(lambda a: a[best], results)


def fit_multistart(
    spec: ModelSpec,
    X: jax.Array,
    y: jax.Array,
    inits: Params,
    weights: jax.Array | None = None,
    **fit_kwargs,
) -> FitResult:
    """Fit from every start in ``inits`` (leaves with a leading axis S) and keep the best
    finite log-likelihood. ``fit_kwargs`` are passed to `fit` (method, solver, bounds, ...)."""
    return _multistart(spec, X, y, inits, weights, tuple(sorted(fit_kwargs.items())))


__all__ = [
    "INIT_MODES",
    "best_fit",
    "fit_multistart",
    "init_near_truth",
    "init_truth",
    "pack",
    "random_inits",
]

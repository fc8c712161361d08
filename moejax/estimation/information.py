"""Observed information and standard errors of a fit.

The observed information of a fit is the negative Hessian of the log-likelihood at the
estimate, I = total x H, where H (P, P) is the Hessian of the mean negative log-likelihood in
the flat parameter vector of `moejax.estimation.bounds.pack` (gate coefficients, expert
weights, and log nu for regression experts). Standard errors are the square roots of the
diagonal of the inverse information *of the free coordinates*: a coordinate on its box bound
(within ``rtol`` of the box width: `moejax.estimation.bounds.coordinates_on_bound`, the rule
of `at_bound`) is held fixed, its
standard error is NaN, and it is marked. A free block that is not positive definite (a saddle
or a flat direction: the estimate is not a strict local maximum in the free coordinates) gives
NaN standard errors for every coordinate; nothing is ever imputed.

Everything is pure, static-shape and vmap-regular; the inverse comes from
`moejax.estimation.solvers.symmetric_eigh` (one matrix at a time on a CPU, as Newton's steps).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.estimation.bounds import coordinates_on_bound, n_gate_params
from moejax.estimation.solvers import symmetric_eigh
from moejax.mix.spec import MixParams, MixSpec


class StandardErrors(NamedTuple):
    """Per-coordinate standard errors of one fit, in the flat layout of `pack`.

    Attributes:
      se: (P,) standard errors of the free coordinates (NaN on a bound, or everywhere when the
        free information is not positive definite).
      on_bound: (P,) bool, the coordinate lies on its box bound.
    """

    se: jax.Array
    on_bound: jax.Array


def standard_errors(
    info: jax.Array, theta: jax.Array, lower: jax.Array, upper: jax.Array
) -> StandardErrors:
    """Standard errors from the observed information ``info`` (P, P) at ``theta`` (P,) on the
    box (lower, upper) (each (P,)). See the module docstring for the rules."""
    on_bound = coordinates_on_bound(theta, lower, upper)
    free = ~on_bound
    info = 0.5 * (info + info.T)
    both = free[:, None] & free[None, :]
    masked = jnp.where(both, info, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
    lam, V = symmetric_eigh(masked)
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
    definite = jnp.all(jnp.isfinite(lam)) & (jnp.min(lam) > 1e-12 * scale)
    var = (V * V) @ (1.0 / jnp.where(definite, lam, 1.0))
    se = jnp.where(free & definite & (var > 0), jnp.sqrt(jnp.abs(var)), jnp.nan)
    return StandardErrors(se, on_bound)


def unflatten(spec: MixSpec, flat: jax.Array, fill: float = jnp.nan) -> MixParams:
    """A flat (P,) per-coordinate quantity in the layout of `pack` as MixParams of ``spec``'s
    shapes (beta (m, d), tau (m,), eta (m, R, d), nu (m,)); entries the model does not estimate
    (beta under the input-free gate, nu for categorical experts, the plain MoE's expert 0 gate)
    are ``fill``. Unlike
    `moejax.estimation.bounds.unpack`, nothing is transformed (nu's slot holds the log-nu
    coordinate's value)."""
    d, m, R = spec.d, spec.m, spec.R
    ng = n_gate_params(spec)
    gates = flat[:ng].reshape(spec.n_gates, ng // spec.n_gates)
    beta = gates[:, :d] if spec.has_beta else jnp.full((spec.n_gates, d), fill, flat.dtype)
    tau = gates[:, -1]
    if spec.plain:  # expert 0's gate (the reference) is not estimated
        beta = jnp.concatenate([jnp.full((1, d), fill, flat.dtype), beta])
        tau = jnp.concatenate([jnp.full((1,), fill, flat.dtype), tau])
    de = spec.de
    eta = flat[ng : ng + m * R * de].reshape(m, R, de)
    nu = flat[ng + m * R * de :] if spec.regression else jnp.full((m,), fill, flat.dtype)
    return MixParams(beta, tau, eta, nu)


def params_standard_errors(spec: MixSpec, est: MixParams, se: jax.Array) -> MixParams:
    """Standard errors of the MixParams leaves from the flat ones ``se`` (P,): nu's by the
    delta method from log nu's (se(nu) = nu x se(log nu)); entries not estimated are NaN."""
    out = unflatten(spec, se)
    if spec.regression:
        out = out._replace(nu=est.nu * out.nu)
    return out


def bound_mask(spec: MixSpec, on_bound: jax.Array) -> MixParams:
    """The per-coordinate bound flags (P,) as MixParams of bools (entries not estimated:
    False)."""
    m = unflatten(spec, on_bound.astype(jnp.float64), fill=0.0)
    return jax.tree_util.tree_map(lambda a: a > 0.5, m)

"""Parameter errors per block (docs/theory.md section 2) and the Hellinger density error."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from moejax.mix.spec import MixSpec
from moejax.model import Params, log_class_probs, to_mix
from moejax.voronoi import voronoi_errors


class Errors(NamedTuple):
    """||beta_hat - beta*||_2, |exp(tau_hat) - exp(tau*)|, ||eta_hat - eta*||_F (each ())."""

    beta: jax.Array
    exp_tau: jax.Array
    eta: jax.Array


def parameter_errors(est: Params, truth: Params) -> Errors:
    """Block errors of an estimate against the truth (the Voronoi loss of one adapter, which
    reduces to the plain block errors)."""
    e, t = to_mix(est), to_mix(truth)
    v = voronoi_errors(e.beta, e.tau, e.eta, e.nu, t.beta, t.tau, t.eta, t.nu)
    return Errors(beta=v.beta, exp_tau=v.exp_tau, eta=v.eta)


def hellinger_distance(spec: MixSpec, est: Params, truth: Params, X: jax.Array) -> jax.Array:
    """Mean over rows of X (m, d) of the Hellinger distance between p_est(.|x) and p_true(.|x)."""
    return mean_hellinger(log_class_probs(spec, est, X), log_class_probs(spec, truth, X))


def mean_hellinger(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """Mean over rows of the Hellinger distance between class distributions given as log
    probabilities (m, K) each (any categorical model of the family)."""
    return mean_hellinger_planes(jnp.asarray(log_p).T, jnp.asarray(log_q).T)


def mean_hellinger_planes(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """`mean_hellinger` of log probabilities given as planes (K, m) (rows last)."""
    return mean_hellinger_probs(jnp.exp(log_p), jnp.exp(log_q))


def mean_hellinger_probs(p: Any, q: Any) -> jax.Array:
    """Mean over points of the Hellinger distance between class distributions given as
    probability planes p, q (K planes (m,) or (K, m) arrays): H = sqrt(sum_k (sqrt p_k -
    sqrt q_k)^2 / 2), exactly 0 for equal laws, no cancellation."""
    sq = (jnp.sqrt(p[0]) - jnp.sqrt(q[0])) ** 2
    for k in range(1, len(p)):
        sq = sq + (jnp.sqrt(p[k]) - jnp.sqrt(q[k])) ** 2
    return jnp.mean(jnp.sqrt(0.5 * sq))

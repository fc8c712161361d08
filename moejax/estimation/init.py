"""Initialisation for every model: truth (diagnostic), near-truth noise c n^(-rho), and
truth-free random starts for multi-start."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from moejax.estimation.bounds import Bounds, unpack
from moejax.mix.spec import MixParams, MixSpec

INIT_MODES = ("truth", "near_truth", "multistart")


def init_near_truth(
    key: jax.Array,
    spec: MixSpec,
    truth: MixParams,
    n: jax.Array | float,
    c_gate: float = 0.005,
    c_expert: float = 0.05,
    rho: float = 0.083,
) -> MixParams:
    """Truth plus Gaussian noise of scale c n^(-rho): c_gate on beta and tau, c_expert on eta,
    and (regression) a multiplicative factor exp(c_expert n^(-rho) N(0, 1)) on nu, which keeps
    it positive. The defaults are the regression predecessor's (c = 0.005 gate, 0.05 experts,
    rho = 0.083)."""
    return perturb(key, truth, n, c_gate, c_expert, rho, spec.regression)


def perturb(
    key: jax.Array,
    truth: MixParams,
    n: jax.Array | float,
    c_gate: float,
    c_expert: float,
    rho: float,
    with_nu: bool,
) -> MixParams:
    """`init_near_truth`'s noise; the key is split in 3 subkeys (beta, tau, eta), or 4 when
    the variances nu are estimated too (``with_nu``)."""
    keys = jax.random.split(key, 4 if with_nu else 3)
    s = jnp.asarray(n, jnp.float64) ** (-rho)
    nrm = lambda k, a: jax.random.normal(k, jnp.shape(a), jnp.float64)
    nu = truth.nu * jnp.exp(c_expert * s * nrm(keys[3], truth.nu)) if with_nu else truth.nu
    return MixParams(
        truth.beta + c_gate * s * nrm(keys[0], truth.beta),
        truth.tau + c_gate * s * nrm(keys[1], truth.tau),
        truth.eta + c_expert * s * nrm(keys[2], truth.eta),
        nu,
    )


def random_inits(
    key: jax.Array,
    spec: MixSpec,
    n_starts: int,
    bounds: Bounds = Bounds(),
    scale: float = 1.0,
) -> MixParams:
    """Truth-free starts: every coordinate of the flat vector (log nu for variances) drawn
    N(0, scale^2) and clipped into the box; leaves gain a leading axis (n_starts,)."""
    lo, hi = Bounds(*bounds).arrays(spec)
    z = scale * jax.random.normal(key, (n_starts, spec.n_params), jnp.float64)
    return jax.vmap(lambda t: unpack(spec, t))(jnp.clip(z, lo, hi))


__all__ = ["INIT_MODES", "init_near_truth", "perturb", "random_inits"]

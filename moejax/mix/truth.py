"""Ground-truth schedules of the general mixture: a fixed truth, or a drift toward the frozen
expert, eta*(n) = eta + delta n^(-gamma) and nu*(n) = nu + nu_delta n^(-gamma)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.mix.spec import MixParams


class MixTruth(NamedTuple):
    """beta (m, d), tau (m,), eta (m, R, d), delta (m, R, d), nu (m,), nu_delta (m,), gamma ()."""

    beta: jax.Array
    tau: jax.Array
    eta: jax.Array
    delta: jax.Array
    nu: jax.Array
    nu_delta: jax.Array
    gamma: jax.Array

    def at(self, n: jax.Array | float) -> MixParams:
        """G*(n) as MixParams; n may be traced."""
        s = jnp.asarray(n, jnp.float64) ** (-self.gamma)
        return MixParams(
            self.beta, self.tau, self.eta + self.delta * s, self.nu + self.nu_delta * s
        )


def fixed_truth(p: MixParams) -> MixTruth:
    """A truth that does not move with n."""
    z = jnp.zeros_like
    return MixTruth(p.beta, p.tau, p.eta, z(p.eta), p.nu, z(p.nu), jnp.asarray(0.0))


def drifting_truth(p: MixParams, delta: jax.Array, nu_delta: jax.Array, gamma: float) -> MixTruth:
    """eta*(n) = p.eta + delta n^(-gamma), nu*(n) = p.nu + nu_delta n^(-gamma)."""
    if not gamma >= 0:
        raise ValueError(f"gamma: must be >= 0, got {gamma!r}")
    return MixTruth(
        p.beta,
        p.tau,
        p.eta,
        jnp.asarray(delta, jnp.float64).reshape(p.eta.shape),
        p.nu,
        jnp.asarray(nu_delta, jnp.float64).reshape(p.nu.shape),
        jnp.asarray(float(gamma)),
    )

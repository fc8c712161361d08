"""Ground-truth schedules G*(n): a fixed truth, or a drift toward the frozen expert,
eta*(n) = eta + delta n^(-gamma) and nu*(n) = nu + nu_delta n^(-gamma); beta and tau fixed."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.mix.spec import MixParams


def check_size(n: object) -> None:
    """Refuse a concrete sample size n <= 0 (G*(n) needs n^(-gamma)); tracers pass."""
    if isinstance(n, jax.core.Tracer):
        return
    try:
        v = np.asarray(n, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"n: expected a number, got {n!r}") from None
    if v.ndim == 0 and not (np.isfinite(v) and v > 0):
        raise ValueError(f"n: the truth is defined for sample sizes n > 0, got {n!r}")


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
        """G*(n) as MixParams; n > 0 (a concrete n <= 0 is refused; n may be traced)."""
        check_size(n)
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
    if not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma: must be a finite number >= 0, got {gamma!r}")
    return MixTruth(
        p.beta,
        p.tau,
        p.eta,
        jnp.asarray(delta, jnp.float64).reshape(p.eta.shape),
        p.nu,
        jnp.asarray(nu_delta, jnp.float64).reshape(p.nu.shape),
        jnp.asarray(float(gamma)),
    )

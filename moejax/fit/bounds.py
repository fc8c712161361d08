"""The compact parameter set: box bounds on beta, tau and eta, and flat packing of Params."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.model import ModelSpec, Params


class Bounds(NamedTuple):
    """Box bounds (lower, upper) applied to every coordinate of each block.

    Defaults: beta in [-5, 5]^d, tau in [-8, 8], eta in [-5, 5]^{(K-1) x d}. They hold every
    shipped design's truth with a wide margin, and keep the homogeneous regime's likelihood
    (maximised at infinity by a saturating gate) on a compact set.
    """

    beta: tuple[float, float] = (-5.0, 5.0)
    tau: tuple[float, float] = (-8.0, 8.0)
    eta: tuple[float, float] = (-5.0, 5.0)

    def validate(self) -> Bounds:
        for name in self._fields:
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"bounds.{name}: must be finite, got ({lo}, {hi})")
            if not lo < hi:
                raise ValueError(f"bounds.{name}: lower {lo} must be below upper {hi}")
        return Bounds(*(tuple(float(v) for v in getattr(self, f)) for f in self._fields))

    def arrays(self, spec: ModelSpec) -> tuple[jax.Array, jax.Array]:
        """Flat (lower, upper), each (P,) in the packing order of `pack`."""
        sizes = (spec.d, 1, (spec.K - 1) * spec.d)
        lo = jnp.concatenate([jnp.full(s, b[0]) for s, b in zip(sizes, self, strict=True)])
        hi = jnp.concatenate([jnp.full(s, b[1]) for s, b in zip(sizes, self, strict=True)])
        return lo, hi

    def contains(self, spec: ModelSpec, params: Params) -> jax.Array:
        lo, hi = self.arrays(spec)
        x = pack(params)
        return jnp.all((x >= lo) & (x <= hi))


def pack(params: Params) -> jax.Array:
    """Params -> flat vector (P,) = [beta (d), tau (1), eta row-major ((K-1) d)]."""
    return jnp.concatenate(
        [jnp.ravel(params.beta), jnp.reshape(params.tau, (1,)), jnp.ravel(params.eta)]
    )


def unpack(spec: ModelSpec, theta: jax.Array) -> Params:
    """Flat vector (P,) -> Params with shapes (d,), (), (K-1, d)."""
    d, K = spec.d, spec.K
    return Params._unchecked(theta[:d], theta[d], theta[d + 1 :].reshape(K - 1, d))


def at_bound(theta: jax.Array, lower: jax.Array, upper: jax.Array, rtol: float = 1e-6) -> jax.Array:
    """True if any coordinate lies within rtol * (upper - lower) of its bound."""
    tol = rtol * (upper - lower)
    return jnp.any((theta <= lower + tol) | (theta >= upper - tol))

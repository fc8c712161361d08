"""Covariates and labels from an explicit key.

Rows are prefix-stable: with JAX's (default) partitionable Threefry, ``sample(key, ..., N)[:n]``
equals ``sample(key, ..., n)``, so a padded dataset holds the unpadded one in its first n rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc

from moejax.model import ModelSpec, Params, class_probs


def _truncated_chi(u: jax.Array, d: int, radius: float, iters: int = 60) -> jax.Array:
    """Inverse CDF of the chi_d law truncated to [0, radius], by bisection. u: (n,) in (0, 1)."""
    a = 0.5 * d
    target = u * gammainc(a, 0.5 * radius**2)

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        below = gammainc(a, 0.5 * mid**2) < target
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(u), jnp.full_like(u, radius)))
    return 0.5 * (lo + hi)


def sample_covariates(key: jax.Array, d: int, n: int, radius: float | None = None) -> jax.Array:
    """X ~ N(0, I_d), shape (n, d); with ``radius``, N(0, I_d) conditioned on ||x|| <= radius."""
    z = jax.random.normal(key, (n, d), dtype=jnp.float64)
    if radius is None:
        return z
    if radius <= 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    kr = jax.random.fold_in(key, 1)
    u = jax.random.uniform(kr, (n,), dtype=jnp.float64, minval=1e-300)
    norm = jnp.linalg.norm(z, axis=1)
    r = _truncated_chi(u, d, float(radius))
    return z * (r / jnp.where(norm > 0, norm, 1.0))[:, None]


def sample_labels(key: jax.Array, probs: jax.Array) -> jax.Array:
    """y_i by inverse CDF of one uniform per row; probs (n, K) -> y (n,) int32 in 0..K-1."""
    u = jax.random.uniform(key, probs.shape[:1], dtype=probs.dtype)
    cdf = jnp.cumsum(probs, axis=-1)
    y = jnp.sum(cdf < u[:, None], axis=-1)
    return jnp.minimum(y, probs.shape[-1] - 1).astype(jnp.int32)


def sample(
    key: jax.Array, spec: ModelSpec, params: Params, n: int, radius: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """Draw (X, y): X (n, d) ~ N(0, I_d) (optionally truncated to a ball), y (n,) ~ p_G(. | x)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    n = int(n)
    kx, ky = jax.random.split(key)
    X = sample_covariates(kx, spec.d, n, radius)
    y = sample_labels(ky, class_probs(spec, params, X))
    return X, y


DATA_BLOCK = 64  # rows per independently keyed block of a blocked dataset


def sample_block(
    key: jax.Array,
    b: jax.Array | int,
    spec: ModelSpec,
    params: Params,
    block: int,
    radius: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Block ``b`` of a blocked dataset: (X (block, d), y (block,)) drawn from fold_in(key, b).

    A blocked dataset of n rows is the first n rows of blocks 0, 1, ..., so its rows do not
    depend on how long a padded buffer holding it is, nor on the other blocks."""
    kx, ky = jax.random.split(jax.random.fold_in(key, b))
    X = sample_covariates(kx, spec.d, block, radius)
    return X, sample_labels(ky, class_probs(spec, params, X))


def sample_blocked(
    key: jax.Array,
    spec: ModelSpec,
    params: Params,
    n: int,
    block: int = DATA_BLOCK,
    radius: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(X (n, d), y (n,)) generated block by block (see `sample_block`): exactly the data the
    sweep engine fits for a lane with this key and sample size."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    nb = -(-int(n) // block)
    X, y = jax.vmap(lambda b: sample_block(key, b, spec, params, block, radius))(jnp.arange(nb))
    return X.reshape(-1, spec.d)[:n], y.reshape(-1)[:n]

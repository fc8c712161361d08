"""Data from the mixture, from an explicit key: covariates, then responses, block by block.

Categorical labels are drawn by inverse CDF of one uniform per row against the mixture's class
probabilities p_G(. | x); regression responses by drawing a component from the gate, then the
response from that component. Rows are prefix-stable: with JAX's (default) partitionable
Threefry, a blocked dataset of n rows is the first n rows of any longer one with the same key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc

from moejax.mix.density import (
    class_probs_planes,
    expert_mean,
    frozen_logpdf_planes,
    gate_log_weights,
    predictors,
    split_predictors,
)
from moejax.mix.design import Design, grid_rows
from moejax.mix.likelihoods import get_likelihood
from moejax.mix.spec import MixParams, MixSpec

DATA_BLOCK = 64  # rows per independently keyed block of a blocked dataset


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


def sample_covariates(
    key: jax.Array,
    d: int,
    n: int,
    radius: float | Design | None = None,
    first: Any = 0,
    total: Any = None,
) -> jax.Array:
    """X ~ N(0, I_d), shape (n, d); with ``radius``, N(0, I_d) conditioned on ||x|| <= radius.
    ``radius`` may be a `moejax.mix.design.Design`: uniform on its box, or rows first ..
    first + n - 1 of its grid of ``total`` rows (default n; the key is then unused)."""
    if isinstance(radius, Design):
        design = radius
        design.check_dim(d)
        if design.kind == "uniform":
            lo, hi = float(design.low), float(design.high)
            return jax.random.uniform(key, (n, d), jnp.float64, minval=lo, maxval=hi)
        if design.kind == "grid":
            tot = n if total is None else total
            return grid_rows(first, n, tot, float(design.low), float(design.high))[:, None]
        radius = design.radius
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
    return labels_from_uniforms(probs.T, u)


def labels_from_uniforms(probs: Any, u: jax.Array) -> jax.Array:
    """Inverse CDF from class-probability planes (K planes (n,) or a (K, n) array) and
    uniforms u (n,): y_i = the number of running sums p_0 + .. + p_k below u_i, capped at
    K - 1; (n,) int32."""
    K = len(probs)
    cdf = probs[0]
    y = (cdf < u).astype(jnp.int32)
    for k in range(1, K):
        cdf = cdf + probs[k]
        y = y + (cdf < u).astype(jnp.int32)
    return jnp.minimum(y, K - 1)


def _noise(key: jax.Array, lik: str, shape: tuple[int, ...]) -> jax.Array:
    """Unit-variance noise of the likelihood's family (its object's ``noise``)."""
    return get_likelihood(lik).noise(key, shape)


def sample_responses(key: jax.Array, spec: MixSpec, params: MixParams, X: jax.Array) -> jax.Array:
    """y (n,) ~ p_G(. | x_i) for X (n, d): int32 labels 0..K-1 by inverse CDF (categorical), or
    float64 responses drawn component first (regression)."""
    if not spec.regression:
        u = jax.random.uniform(key, (X.shape[0],), dtype=jnp.float64)
        return labels_from_uniforms(class_probs_planes(spec, params, X.T), u)
    kc, ky = jax.random.split(key)
    U = predictors(spec, params, X)
    g, Z, log_nu = split_predictors(spec, U)
    comp = jax.random.categorical(kc, gate_log_weights(spec.gate, g), axis=-1)  # (n,)
    means = expert_mean(spec.adapter, Z[..., 0])  # (n, m)
    sds = jnp.exp(0.5 * log_nu)
    k0, k1 = jax.random.split(ky)
    e1 = _noise(k1, spec.likelihood, (X.shape[0],))
    pick = lambda a: jnp.take_along_axis(a, comp[:, None], axis=-1)[:, 0]
    if spec.plain:  # components are the experts (the frozen expert's key k0 stays unused)
        return pick(means) + pick(sds) * e1
    z0 = X @ spec.eta0_array().T  # (n, R)
    means = jnp.concatenate([expert_mean(spec.frozen, z0[:, :1]), means], axis=-1)
    sds = jnp.concatenate([jnp.full((X.shape[0], 1), jnp.sqrt(spec.nu0)), sds], axis=-1)
    e0 = _noise(k0, spec.frozen_likelihood, (X.shape[0],))
    return pick(means) + pick(sds) * jnp.where(comp == 0, e0, e1)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    return int(n)


def sample_rows(
    key: jax.Array,
    spec: MixSpec,
    params: MixParams,
    n: int,
    radius: float | Design | None = None,
    first: Any = 0,
    total: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """(X (n, d), y (n,)) from one key: X from the key's first half, y from its second
    (``first``, ``total``: the rows' place in a grid design, `sample_covariates`)."""
    kx, ky = jax.random.split(key)
    X = sample_covariates(kx, spec.d, n, radius, first, total)
    return X, sample_responses(ky, spec, params, X)


def sample_block_planes(
    key: jax.Array,
    b: jax.Array,
    spec: MixSpec,
    params: MixParams,
    block: int,
    rows: int,
    radius: float | Design | None = None,
    total: Any = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rows b rows .. (b + 1) rows - 1 of a blocked dataset as planes: X (d, rows), y (rows,)
    and the frozen expert's log-density of them, lf0 (rows,). They are the DATA_BLOCK-row
    blocks b rows / block, ... of `sample_block` one after the other (the same draws, the
    labels from the same class probabilities); the sweep engine's data path. ``rows`` must be
    a multiple of ``block``. (`draw_planes` then `respond_planes`, in one go.)"""
    if spec.regression:  # component first, then the response: the rows path
        nb = rows // block
        ids = jnp.arange(nb) + b * nb
        X, y = jax.vmap(lambda j: sample_block(key, j, spec, params, block, radius, total))(ids)
        Xp, y = X.reshape(rows, spec.d).T, y.reshape(rows)
        return Xp, y, frozen_logpdf_planes(spec, Xp, y)
    Xp, u = draw_planes(key, b, spec, block, rows, radius, total)
    return (Xp, *respond_planes(spec, params, Xp, u))


def draw_planes(
    key: jax.Array,
    b: jax.Array,
    spec: MixSpec,
    block: int,
    rows: int,
    radius: float | Design | None,
    total: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """The random draws of `sample_block_planes` for categorical experts: covariate planes
    X (d, rows) and the labels' uniforms u (rows,) (`sample_rows`' two keys per block)."""
    nb = rows // block
    ids = jnp.arange(nb) + b * nb

    def draws(j):
        kx, ky = jax.random.split(jax.random.fold_in(key, j))
        u = jax.random.uniform(ky, (block,), dtype=jnp.float64)
        return sample_covariates(kx, spec.d, block, radius, j * block, total), u

    X, u = jax.vmap(draws)(ids)  # (nb, block, d), (nb, block)
    return X.reshape(rows, spec.d).T, u.reshape(rows)


def respond_planes(
    spec: MixSpec, params: MixParams, X: jax.Array, u: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Labels by inverse CDF of the uniforms u (n,) at covariate planes X (d, n), and the
    frozen expert's log-density of them: (y (n,) int32, lf0 (n,)); categorical experts."""
    y = labels_from_uniforms(class_probs_planes(spec, params, X), u)
    return y, frozen_logpdf_planes(spec, X, y)


def sample_block(
    key: jax.Array,
    b: jax.Array | int,
    spec: MixSpec,
    params: MixParams,
    block: int = DATA_BLOCK,
    radius: float | Design | None = None,
    total: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Block ``b`` of a blocked dataset, drawn from fold_in(key, b): X (block, d), y (block,).

    A blocked dataset of n rows is the first n rows of blocks 0, 1, ..., so its rows do not
    depend on how long a padded buffer holding it is, nor on the other blocks (under a grid
    design, ``total`` = n places the block's rows on the grid of n rows)."""
    key = jax.random.fold_in(key, b)
    return sample_rows(key, spec, params, block, radius, b * block, total)


def sample(
    key: jax.Array,
    spec: MixSpec,
    params: MixParams,
    n: int,
    radius: float | Design | None = None,
    block: int = DATA_BLOCK,
) -> tuple[jax.Array, jax.Array]:
    """(X (n, d), y (n,)) block by block: exactly the data the sweep engine fits for a lane
    with this key and sample size."""
    n = _check_n(n)
    spec.check_params(params)
    nb = -(-n // block)
    X, y = jax.vmap(lambda b: sample_block(key, b, spec, params, block, radius, n))(jnp.arange(nb))
    return X.reshape(-1, spec.d)[:n], y.reshape(-1)[:n]

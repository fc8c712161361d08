"""Data from the general mixture, from an explicit key, block by block (as in the core)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from moejax.mix.density import expert_mean, gate_log_weights, predictors, split_predictors
from moejax.mix.spec import MixParams, MixSpec
from moejax.sampling import DATA_BLOCK, sample_covariates


def _noise(key: jax.Array, lik: str, shape: tuple[int, ...]) -> jax.Array:
    """Unit-variance noise of the likelihood's family."""
    if lik == "gaussian":
        return jax.random.normal(key, shape, jnp.float64)
    return jax.random.laplace(key, shape, jnp.float64) / jnp.sqrt(2.0)


def sample_responses(key: jax.Array, spec: MixSpec, params: MixParams, X: jax.Array) -> jax.Array:
    """y (n,) ~ p_G(. | x_i) for X (n, d): a component is drawn from the gate, then y from it.
    Categorical labels are returned as float64 integers 0..K-1."""
    kc, ky = jax.random.split(key)
    U = predictors(spec, params, X)
    g, Z, log_nu = split_predictors(spec, U)
    comp = jax.random.categorical(kc, gate_log_weights(spec.gate, g), axis=-1)  # (n,)
    z0 = X @ spec.eta0_array().T  # (n, R)
    if spec.regression:
        means = jnp.concatenate(
            [expert_mean(spec.frozen, z0[:, :1]), expert_mean(spec.adapter, Z[..., 0])], axis=-1
        )
        sds = jnp.concatenate(
            [jnp.full((X.shape[0], 1), jnp.sqrt(spec.nu0)), jnp.exp(0.5 * log_nu)], axis=-1
        )
        k0, k1 = jax.random.split(ky)
        e0 = _noise(k0, spec.frozen_likelihood, (X.shape[0],))
        e1 = _noise(k1, spec.likelihood, (X.shape[0],))
        pick = lambda a: jnp.take_along_axis(a, comp[:, None], axis=-1)[:, 0]
        return pick(means) + pick(sds) * jnp.where(comp == 0, e0, e1)
    logits = jnp.concatenate(
        [spec.frozen.logits_from_z(z0)[:, None, :], spec.adapter.logits_from_z(Z)], axis=1
    )  # (n, m+1, K)
    chosen = jnp.take_along_axis(logits, comp[:, None, None], axis=1)[:, 0, :]
    return jax.random.categorical(ky, chosen, axis=-1).astype(jnp.float64)


def sample_block(
    key: jax.Array,
    b: jax.Array | int,
    spec: MixSpec,
    params: MixParams,
    block: int = DATA_BLOCK,
    radius: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Block ``b`` of a blocked dataset, drawn from fold_in(key, b): X (block, d), y (block,)."""
    kx, ky = jax.random.split(jax.random.fold_in(key, b))
    X = sample_covariates(kx, spec.d, block, radius)
    return X, sample_responses(ky, spec, params, X)


def sample(
    key: jax.Array,
    spec: MixSpec,
    params: MixParams,
    n: int,
    radius: float | None = None,
    block: int = DATA_BLOCK,
) -> tuple[jax.Array, jax.Array]:
    """(X (n, d), y (n,)): exactly the data the sweep engine fits for this key and n."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    nb = -(-int(n) // block)
    X, y = jax.vmap(lambda b: sample_block(key, b, spec, params, block, radius))(jnp.arange(nb))
    return X.reshape(-1, spec.d)[:n], y.reshape(-1)[:n]

"""Covariates and labels of the paper's model from an explicit key (the face of
`moejax.mix.sampling` for `ModelSpec` and `Params`).

Rows are prefix-stable: with JAX's (default) partitionable Threefry, ``sample(key, ..., N)[:n]``
equals ``sample(key, ..., n)``, so a padded dataset holds the unpadded one in its first n rows.
"""

from __future__ import annotations

import jax

from moejax.mix import sampling as _sampling
from moejax.mix.sampling import DATA_BLOCK, _check_n, sample_covariates, sample_labels
from moejax.mix.spec import MixSpec
from moejax.model import Params, check_params, to_mix


def sample(
    key: jax.Array, spec: MixSpec, params: Params, n: int, radius: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """Draw (X, y): X (n, d) ~ N(0, I_d) (optionally truncated to a ball), y (n,) int32 ~
    p_G(. | x) by inverse CDF."""
    n = _check_n(n)
    check_params(spec, params)
    return _sampling.sample_rows(key, spec, to_mix(params), n, radius)


def sample_block(
    key: jax.Array,
    b: jax.Array | int,
    spec: MixSpec,
    params: Params,
    block: int,
    radius: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Block ``b`` of a blocked dataset: (X (block, d), y (block,)) drawn from fold_in(key, b)."""
    return _sampling.sample_block(key, b, spec, to_mix(params), block, radius)


def sample_blocked(
    key: jax.Array,
    spec: MixSpec,
    params: Params,
    n: int,
    block: int = DATA_BLOCK,
    radius: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(X (n, d), y (n,)) generated block by block (see `sample_block`): exactly the data the
    sweep engine fits for a lane with this key and sample size."""
    check_params(spec, params)
    return _sampling.sample(key, spec, to_mix(params), n, radius, block)


__all__ = [
    "DATA_BLOCK",
    "sample",
    "sample_block",
    "sample_blocked",
    "sample_covariates",
    "sample_labels",
]

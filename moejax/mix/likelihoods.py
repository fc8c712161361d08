"""Expert likelihoods of the family as registered objects: each owns whether it is a regression
likelihood, its predictors per expert, and (regression) its log-density, its sampler's noise
and the pieces of the closed-form rows in its predictors (z, rho = log nu). Density, rows,
sampling, the spec and config validation ask the object (`get_likelihood`), never the name.

Adding a regression likelihood with a location z-mean and a variance nu is one class here
(`Regression`: `logpdf`, `noise`, `rows`) plus its tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)
_SQRT_2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Likelihood:
    """An expert likelihood: ``name`` and whether it is a regression likelihood (one predictor
    and a variance per expert) or categorical (K - 1 logits, class K - 1 the reference)."""

    name: str
    regression: bool

    def predictors(self, K: int) -> int:
        """Linear predictors per expert (R): K - 1 logits, or one mean predictor."""
        return 1 if self.regression else K - 1


@dataclass(frozen=True)
class Regression(Likelihood):
    """A regression likelihood with mean ``mean`` and variance nu = exp(rho)."""

    regression: bool = True

    def logpdf(self, y: jax.Array, mean: jax.Array, log_nu: jax.Array) -> jax.Array:
        """log f(y; mean, nu), elementwise."""
        raise NotImplementedError

    def noise(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Unit-variance noise of the family (a response is mean + sqrt(nu) noise)."""
        raise NotImplementedError

    def rows(self, e: jax.Array, rho: jax.Array, s: float, a1, a2, need: int):
        """Row pieces at residuals e = y - mean and rho = log nu, for mean = s a(z) + b with
        a' = a1, a'' = a2: (log f, score (., 2, .) in (z, rho) when need >= 1, and when
        need = 2 the Hessian entries (h_zz, h_zrho, h_rhorho))."""
        raise NotImplementedError


@dataclass(frozen=True)
class Gaussian(Regression):
    def logpdf(self, y, mean, log_nu):
        r = y - mean
        return -0.5 * (_LOG_2PI + log_nu + r * r * jnp.exp(-log_nu))

    def noise(self, key, shape):
        return jax.random.normal(key, shape, jnp.float64)

    def rows(self, e, rho, s, a1, a2, need):
        k = jnp.exp(-rho)
        e2k = e * e * k
        lf = -0.5 * (_LOG_2PI + rho + e2k)
        if need == 0:
            return lf, None, None
        sz = k * e * s * a1
        score = jnp.stack([sz, 0.5 * (e2k - 1.0)], axis=1)
        if need == 1:
            return lf, score, None
        hzz = k * s * (e * a2 - s * a1 * a1)
        return lf, score, (hzz, -sz, -0.5 * e2k)


@dataclass(frozen=True)
class Laplace(Regression):
    """Laplace with mean ``mean`` and variance nu (scale sqrt(nu / 2))."""

    def logpdf(self, y, mean, log_nu):
        r = y - mean
        log_b = 0.5 * (log_nu - math.log(2.0))
        return -(math.log(2.0) + log_b) - jnp.abs(r) * jnp.exp(-log_b)

    def noise(self, key, shape):
        return jax.random.laplace(key, shape, jnp.float64) / jnp.sqrt(2.0)

    def rows(self, e, rho, s, a1, a2, need):
        c = _SQRT_2 * jnp.exp(-0.5 * rho)  # 1 / Laplace scale
        ac = jnp.abs(e) * c
        lf = -0.5 * (_LOG_2 + rho) - ac
        if need == 0:
            return lf, None, None
        csg = jnp.where(e >= 0, c, -c) * s
        sz = csg * a1
        score = jnp.stack([sz, 0.5 * (ac - 1.0)], axis=1)
        if need == 1:
            return lf, score, None
        return lf, score, (csg * a2, -0.5 * sz, -0.25 * ac)


#: The registered likelihoods, by name (``model.likelihood``, `MixSpec.likelihood`).
_REGISTRY: dict[str, Likelihood] = {
    "categorical": Likelihood("categorical", regression=False),
    "gaussian": Gaussian("gaussian"),
    "laplace": Laplace("laplace"),
}
#: Their names: the one list of likelihoods.
LIKELIHOODS: tuple[str, ...] = tuple(_REGISTRY)
#: The regression likelihoods among them.
REGRESSION: tuple[str, ...] = tuple(n for n, lik in _REGISTRY.items() if lik.regression)


def get_likelihood(name: str) -> Likelihood:
    """The likelihood object of a name, or ValueError naming the choices."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"likelihood: unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}"
        ) from None

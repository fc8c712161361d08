"""Ground-truth schedules G*(n) for the two regimes.

A `Truth` is a pytree: ``eta*(n) = eta + delta * n ** (-gamma)``, with ``beta`` and ``tau``
fixed. Heterogeneous truths have ``delta = 0`` (the truth does not move); homogeneous truths start
at the frozen expert's ``eta0`` and drift toward it as n grows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.model import ModelSpec, Params


class Truth(NamedTuple):
    """Ground-truth schedule; ``at(n)`` gives G*(n).

    Attributes:
      beta: (d,) gate slope.
      tau: () gate intercept.
      eta: (K-1, d) limit of the adapter's weights as n -> infinity.
      delta: (K-1, d) drift direction (zeros for a fixed truth).
      gamma: () drift exponent.
    """

    beta: jax.Array
    tau: jax.Array
    eta: jax.Array
    delta: jax.Array
    gamma: jax.Array

    def at(self, n: jax.Array | float) -> Params:
        """G*(n) as `Params`; ``n`` may be a traced scalar."""
        return truth_at(self, n)


def truth_at(truth: Truth, n: jax.Array | float) -> Params:
    """G*(n): eta*(n) = eta + delta * n^(-gamma); beta and tau fixed."""
    n = jnp.asarray(n, jnp.float64)
    eta = truth.eta + truth.delta * n ** (-truth.gamma)
    return Params._unchecked(truth.beta, truth.tau, eta)


def _arr(name: str, v: Any, shape: tuple[int, ...]) -> jax.Array:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: must be finite")
    return jnp.asarray(a)


def heterogeneous_truth(spec: ModelSpec, beta: Any, tau: Any, eta: Any) -> Truth:
    """A fixed truth G* = (beta, tau, eta) for every n."""
    K1, d = spec.K - 1, spec.d
    return Truth(
        _arr("beta", beta, (d,)),
        _arr("tau", tau, ()),
        _arr("eta", eta, (K1, d)),
        jnp.zeros((K1, d)),
        jnp.asarray(0.0),
    )


def homogeneous_truth(spec: ModelSpec, beta: Any, tau: Any, delta: Any, gamma: float) -> Truth:
    """eta*(n) = eta0 + delta * n^(-gamma): the adapter drifts toward the frozen expert."""
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma: must be a finite number >= 0, got {gamma!r}")
    K1, d = spec.K - 1, spec.d
    return Truth(
        _arr("beta", beta, (d,)),
        _arr("tau", tau, ()),
        spec.eta0_array(),
        _arr("delta", delta, (K1, d)),
        jnp.asarray(float(gamma)),
    )

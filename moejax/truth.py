"""Ground-truth schedules G*(n) of the paper's model (the face of `moejax.mix.truth`).

``eta*(n) = eta + delta * n ** (-gamma)`` with ``beta`` and ``tau`` fixed. Heterogeneous truths
have ``delta = 0`` (the truth does not move); homogeneous truths start at the frozen expert's
``eta0`` and drift toward it as n grows. A `Truth` is the general `MixTruth` (leaves with the
adapter axis: beta (1, d), tau (1,), eta and delta (1, K-1, d)) whose ``at(n)`` gives `Params`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.mix.spec import MixSpec
from moejax.mix.truth import MixTruth, drifting_truth
from moejax.model import Params, from_mix, to_mix


class Truth(MixTruth):
    """A `MixTruth` of one categorical adapter; ``at(n)`` gives G*(n) as `Params`."""

    def at(self, n: jax.Array | float) -> Params:
        """G*(n) as `Params`; n > 0 (a concrete n <= 0 is refused; n may be traced)."""
        return from_mix(MixTruth.at(self, n))


def truth_at(truth: MixTruth, n: jax.Array | float) -> Params:
    """G*(n) of a paper-model truth as `Params`."""
    return from_mix(MixTruth.at(truth, n))


def _arr(name: str, v: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a numeric array, got {v!r}") from None
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: must be finite")
    return a


def _truth(spec: MixSpec, beta, tau, eta, delta, gamma) -> Truth:
    K1, d = spec.K - 1, spec.d
    p = to_mix(Params(_arr("beta", beta, (d,)), _arr("tau", tau, ()), _arr("eta", eta, (K1, d))))
    t = drifting_truth(p, jnp.asarray(_arr("delta", delta, (K1, d)))[None], jnp.zeros(1), gamma)
    return Truth(*t)


def heterogeneous_truth(spec: MixSpec, beta: Any, tau: Any, eta: Any) -> Truth:
    """A fixed truth G* = (beta, tau, eta) for every n."""
    return _truth(spec, beta, tau, eta, np.zeros((spec.K - 1, spec.d)), 0.0)


def homogeneous_truth(spec: MixSpec, beta: Any, tau: Any, delta: Any, gamma: float) -> Truth:
    """eta*(n) = eta0 + delta * n^(-gamma): the adapter drifts toward the frozen expert."""
    return _truth(spec, beta, tau, np.asarray(spec.eta0_array()), delta, gamma)


__all__ = ["Truth", "heterogeneous_truth", "homogeneous_truth", "truth_at"]

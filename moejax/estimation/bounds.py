"""The compact parameter set and the flat parameter vector of every model of the family.

The flat vector follows the predictor layout of `moejax.mix.density`: the gate predictors
([beta_j, tau_j], or [tau_j] under the input-free gate; one per adapter, or per expert 1..m-1 in
the plain MoE, whose expert 0 is the reference), then the m R expert predictors
eta_{j,r} (adapter-major, row-major), then (regression only) the m log-variances log nu_j. For
the paper's model (m = 1, softmax, categorical) that is [beta (d), tau, eta ((K-1) d)].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.mix.density import gate_params
from moejax.mix.gates import get_gate
from moejax.mix.spec import MixParams, MixSpec


class Bounds(NamedTuple):
    """Box bounds (lower, upper) applied to every coordinate of each block.

    Defaults: beta in [-5, 5]^d, tau in [-8, 8], eta in [-5, 5]^{R x d}, nu in [1e-5, 100]
    (regression variances, estimated on the log scale; both ends > 0). They hold every shipped
    design's truth with a wide margin, and keep the homogeneous regime's likelihood (maximised
    at infinity by a saturating gate) on a compact set.
    """

    beta: tuple[float, float] = (-5.0, 5.0)
    tau: tuple[float, float] = (-8.0, 8.0)
    eta: tuple[float, float] = (-5.0, 5.0)
    nu: tuple[float, float] = (1e-5, 100.0)

    def validate(self) -> Bounds:
        """The bounds as floats; ValueError naming the block if an interval is not finite and
        increasing (or nu's lower end is not > 0)."""
        out = []
        for name in self._fields:
            try:
                lo, hi = (float(v) for v in getattr(self, name))
            except (TypeError, ValueError):
                raise ValueError(
                    f"bounds.{name}: expected (lower, upper), got {getattr(self, name)!r}"
                ) from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"bounds.{name}: must be finite, got ({lo}, {hi})")
            if not lo < hi:
                raise ValueError(f"bounds.{name}: lower {lo} must be below upper {hi}")
            out.append((lo, hi))
        if out[3][0] <= 0:
            raise ValueError(f"bounds.nu: the lower bound must be > 0, got {out[3][0]}")
        return Bounds(*out)

    def arrays(self, spec: MixSpec) -> tuple[jax.Array, jax.Array]:
        """Flat (lower, upper), each (P,), in the layout of `pack`."""
        b = self.validate()
        d, m, R = spec.d, spec.m, spec.R
        gate = [b.beta] * d + [b.tau] if spec.has_beta else [b.tau]
        per = gate * spec.n_gates + [b.eta] * (m * R * spec.de)
        if spec.regression:
            per += [(math.log(b.nu[0]), math.log(b.nu[1]))] * m
        return jnp.asarray([lo for lo, _ in per]), jnp.asarray([hi for _, hi in per])


def layout(spec: MixSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, starts) of the predictors in X1 = [x, 1] (see `linear_predictor_objective`):
    the coefficient slice of each predictor in the flat vector, in the order of `pack`."""
    d, m, R = spec.d, spec.m, spec.R
    gate = get_gate(spec.gate)
    off = 1 if gate.sq_norm else 0  # X1 = [||x||^2, x, 1] for a gate that needs ||x||^2
    preds = [wl for wl in gate.lin_layout(d) for _ in range(spec.n_gates)]
    preds += [(spec.de, off)] * (m * R) + ([(1, d + off)] * m if spec.regression else [])
    return tuple(w for w, _ in preds), tuple(s for _, s in preds)


def lin_map(spec: MixSpec):
    """None when the objective's linear predictors take the flat vector of `pack` as it is
    (every gate but the Laplace gate); else theta (P,) -> the predictors' coefficient vector
    (in the layout of `layout`), whose derivatives the estimators carry back to theta."""
    gate = get_gate(spec.gate)
    if gate.n_pred == 1:
        return None
    ng, gw = spec.n_gates, gate.width(spec.d)

    def to_lin(theta):
        g = theta[: ng * gw].reshape(ng, gw)
        coefs = gate.lin_coefs(g[:, :-1], g[:, -1])
        return jnp.concatenate([c.reshape(-1) for c in coefs] + [theta[ng * gw :]])

    return to_lin


def n_gate_params(spec: MixSpec) -> int:
    """Length of the gate part of the flat vector (its first coordinates)."""
    return spec.n_gates * get_gate(spec.gate).width(spec.d)


def pack(spec: MixSpec, p: MixParams) -> jax.Array:
    """MixParams -> the flat vector of the model's free parameters, (P,) with
    P = ``spec.n_params``, in the predictor layout (log nu for regression experts).

    This is the way to flatten parameters for your own derivatives: entries a model does not
    estimate (nu of categorical experts, beta under the input-free gate) are left out, so, e.g.,
    ``jax.hessian(lambda t: log_likelihood(spec, unpack(spec, t), X, y))(pack(spec, p))`` is the
    (P, P) matrix in the coordinates of `FitResult.info`. Inverse: `unpack`."""
    beta, tau = gate_params(spec, p)
    gates = jnp.concatenate([beta, tau[:, None]], axis=1) if spec.has_beta else tau[:, None]
    parts = [gates.reshape(-1), p.eta.reshape(-1)]
    if spec.regression:
        parts.append(jnp.log(p.nu).reshape(spec.m))
    return jnp.concatenate(parts)


def unpack(spec: MixSpec, theta: jax.Array) -> MixParams:
    """The flat vector of `pack`, (P,) -> MixParams (entries a model does not estimate are
    0)."""
    d, m, R, ng = spec.d, spec.m, spec.R, spec.n_gates
    gw = d + 1 if spec.has_beta else 1
    gates = theta[: ng * gw].reshape(ng, gw)
    beta = gates[:, :d] if spec.has_beta else jnp.zeros((ng, d), theta.dtype)
    tau = gates[:, -1]
    if spec.plain:  # expert 0, the reference: gate logit 0
        beta = jnp.concatenate([jnp.zeros((1, d), theta.dtype), beta])
        tau = jnp.concatenate([jnp.zeros((1,), theta.dtype), tau])
    o = ng * gw
    de = spec.de
    eta = theta[o : o + m * R * de].reshape(m, R, de)
    nu = jnp.exp(theta[o + m * R * de :]) if spec.regression else jnp.zeros((m,), theta.dtype)
    return MixParams(beta, tau, eta, nu)


def coordinates_on_bound(
    theta: jax.Array, lower: jax.Array, upper: jax.Array, rtol: float = 1e-6
) -> jax.Array:
    """(P,) bool: coordinate within rtol * (upper - lower) of a bound."""
    tol = rtol * (upper - lower)
    return (theta <= lower + tol) | (theta >= upper - tol)


def at_bound(theta: jax.Array, lower: jax.Array, upper: jax.Array, rtol: float = 1e-6) -> jax.Array:
    """True if any coordinate lies within rtol * (upper - lower) of its bound."""
    return jnp.any(coordinates_on_bound(theta, lower, upper, rtol))

"""Gates of the family as registered objects: each owns its parameters per adapter, its log
weights and the pieces of the closed-form rows and EM M-step (`Gate`). Density, rows, EM rows,
packing, config validation and the report ask the object (`get_gate`), never the name.

Adding a gate is one class here (registered in `_REGISTRY`) plus its tests: the row functions
(`moejax.mix.rows`, `moejax.mix.emrows`) are written in the pieces of `Gate.pieces`, so a gate
whose log weights are log w = lv - logsumexp(lv) with d lv_k / d g_k = t_k (and d t_k / d g_k
= -t_k (1 - t_k) or 0) needs no other change.

Gate logits g_j = beta_j . x + tau_j (j = 1..m); the frozen expert's logit is fixed at 0.

A gate whose logit is not one linear predictor (the Laplace gate, g_j = tau_j - ||x - W_j||)
says so with ``n_pred`` predictors per logit, each linear in covariate planes (`lin_layout`,
with ||x||^2 when ``sq_norm``) with coefficients that are functions of its parameters
(`lin_coefs`); `logits` and `chain` give the logits and their derivatives in the predictors.
The rows (`moejax.mix.rows.gate_chain`) and the estimators (`moejax.estimation.bounds.lin_map`,
`moejax.estimation.objective.mapped_objective`) carry the softmax's closed forms through them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import jax
import jax.numpy as jnp


def _sum0(a: jax.Array) -> jax.Array:
    """Sum over the (small, static) leading axis as explicit additions of planes."""
    return reduce(jnp.add, [a[i] for i in range(a.shape[0])])


def _max0(a: jax.Array) -> jax.Array:
    return reduce(jnp.maximum, [a[i] for i in range(a.shape[0])])


def _logaddexp(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(log(e^a + e^b), e^a / (e^a + e^b), e^b / (e^a + e^b)) from one exp and one log1p."""
    D = b - a
    E = jnp.exp(-jnp.abs(D))
    inv = 1.0 / (1.0 + E)
    pos = D >= 0
    return (
        jnp.maximum(a, b) + jnp.log1p(E),
        jnp.where(pos, E * inv, inv),
        jnp.where(pos, inv, E * inv),
    )


@dataclass(frozen=True)
class Gate:
    """A gate: ``name``, whether its logits depend on x (``has_beta``; else only tau is
    estimated), and its log weights and row pieces. Static and hashable."""

    name: str
    has_beta: bool = True
    #: predictors per gate logit (1: the logit is the linear predictor beta . x + tau)
    n_pred: int = 1
    #: whether its predictors need the covariate plane ||x||^2 (before x in the objective)
    sq_norm: bool = False

    def width(self, d: int) -> int:
        """Gate parameters per adapter: beta (d) and tau, or tau alone."""
        return d + 1 if self.has_beta else 1

    def predictor_block(self, beta: jax.Array, tau: jax.Array, X: jax.Array) -> jax.Array:
        """The gate's predictors (n_pred m, *S) from its parameters beta (m, d), tau (m,) and
        covariate planes X (d, *S): here the logits beta . x + tau (beta is 0 without slopes)."""
        beta = beta if self.has_beta else jnp.zeros_like(beta)
        return jnp.einsum("md,d...->m...", beta, X) + tau.reshape((-1,) + (1,) * (X.ndim - 1))

    def logits(self, P: jax.Array) -> jax.Array:
        """Gate logits g (m, *S) from its predictors P (n_pred m, *S): P itself here."""
        return P

    def chain(self, P: jax.Array):
        """(dg / dP_p for each predictor p (n_pred planes (m, *S)), d2 g / dq2 (m, *S) of the
        first predictor, the others entering linearly), or None: the identity here."""
        return None

    def lin_coefs(self, beta: jax.Array, tau: jax.Array) -> list[jax.Array]:
        """The linear-predictor coefficients of each of its predictors (n_pred arrays
        (m, width)), in the covariates of `lin_layout`: [beta, tau] over [x, 1] here."""
        return [jnp.concatenate([beta, tau[:, None]], axis=1) if self.has_beta else tau[:, None]]

    def lin_layout(self, d: int) -> list[tuple[int, int]]:
        """(width, start) of each predictor in the objective's covariate planes ([x, 1], or
        [||x||^2, x, 1] with ``sq_norm``)."""
        return [(d + 1, 0) if self.has_beta else (1, d)]

    def log_weights(self, g: jax.Array) -> jax.Array:
        """log w (..., m+1) from gate logits g (..., m): column 0 is the frozen expert."""
        zero = jnp.zeros((*g.shape[:-1], 1), g.dtype)
        return jax.nn.log_softmax(jnp.concatenate([zero, g], axis=-1), axis=-1)

    def pieces(self, g: jax.Array):
        """Row pieces from logits g (m, *S), rows last: log w_0 (*S), log w_1..m (m, *S),
        w_1..m (m, *S), and q (m, *S) with d log v_k / d g_k = q_k for a gate whose
        unnormalised log weight log v_k is not linear in g_k (None when it is: softmax)."""
        if g.shape[0] == 1:  # softmax over (0, g): log w_1 = log sigmoid(g)
            lse, _, w1 = _logaddexp(jnp.zeros_like(g[0]), g[0])
            return -lse, g - lse, w1[None], None
        M = jnp.maximum(_max0(g), 0.0)  # softmax over (0, g_1, .., g_m)
        eg = jnp.exp(g - M)
        S = jnp.exp(-M) + _sum0(eg)
        lS = M + jnp.log(S)
        return -lS, g - lS, eg / S, None


@dataclass(frozen=True)
class SigmoidGate(Gate):
    """Independent sigmoid switches, normalised: w_j proportional to sigmoid(g_j), w_0 to
    sigmoid(0) = 1/2."""

    def log_weights(self, g: jax.Array) -> jax.Array:
        zero = jnp.zeros((*g.shape[:-1], 1), g.dtype)
        lv = jnp.concatenate([zero + math.log(0.5), jax.nn.log_sigmoid(g)], axis=-1)
        return lv - jax.nn.logsumexp(lv, axis=-1, keepdims=True)

    def pieces(self, g: jax.Array):
        E = jnp.exp(-jnp.abs(g))
        inv = 1.0 / (1.0 + E)
        pos = g >= 0
        sg = jnp.where(pos, inv, E * inv)  # sigmoid(g)
        q = jnp.where(pos, E * inv, inv)  # sigmoid(-g)
        lv = -(jnp.maximum(-g, 0.0) + jnp.log1p(E))  # log sigmoid(g)
        S = 0.5 + _sum0(sg)  # in [1/2, m + 1/2]: no overflow or underflow
        logS = jnp.log(S)
        return math.log(0.5) - logS, lv - logS, sg / S, q


@dataclass(frozen=True)
class LaplaceGate(Gate):
    """The Laplace (distance-based) gate of the MoE-rate literature: logit
    g_j = tau_j - ||x - W_j|| (``beta`` holds the locations W_j), softmax over (0, g_1..g_m).

    Its logit is not one linear predictor, but a function of two: q_j = ||x - W_j||^2 =
    ||x||^2 - 2 W_j . x + ||W_j||^2, linear in the covariates [||x||^2, x, 1] with coefficients
    (1, -2 W_j, ||W_j||^2) (`lin_coefs`: the parameter map the estimators differentiate
    through), and t_j = tau_j; g = t - sqrt(q) (`logits`, with its derivatives in `chain`).
    The rows are the softmax's, carried to (q, t) by the chain rule."""

    n_pred: int = 2
    sq_norm: bool = True

    def predictor_block(self, beta: jax.Array, tau: jax.Array, X: jax.Array) -> jax.Array:
        X = jnp.asarray(X)
        sq = _sum0(X * X) if X.shape[0] > 0 else jnp.zeros(X.shape[1:])
        lin = jnp.einsum("md,d...->m...", beta, X)
        q = sq[None] - 2.0 * lin + jnp.sum(beta * beta, axis=1).reshape((-1,) + (1,) * sq.ndim)
        t = jnp.broadcast_to(tau.reshape((-1,) + (1,) * sq.ndim), q.shape)
        return jnp.concatenate([q, t], axis=0)

    def logits(self, P: jax.Array) -> jax.Array:
        m = P.shape[0] // 2
        return P[m:] - jnp.sqrt(jnp.maximum(P[:m], _Q_FLOOR))

    def chain(self, P: jax.Array):
        m = P.shape[0] // 2
        r = jnp.sqrt(jnp.maximum(P[:m], _Q_FLOOR))
        dq = -0.5 / r
        return (dq, jnp.ones_like(dq)), 0.25 / (r * r * r)

    def lin_coefs(self, beta: jax.Array, tau: jax.Array) -> list[jax.Array]:
        one = jnp.ones_like(tau)[:, None]
        q = jnp.concatenate([one, -2.0 * beta, jnp.sum(beta * beta, axis=1)[:, None]], axis=1)
        return [q, tau[:, None]]

    def lin_layout(self, d: int) -> list[tuple[int, int]]:
        return [(d + 2, 0), (1, d + 1)]


#: q is floored before its square root (rows at x = W_j exactly, or q < 0 by rounding).
_Q_FLOOR = 1e-30

#: The registered gates, by name (the config's ``model.gate``, `MixSpec.gate`).
_REGISTRY: dict[str, Gate] = {
    "softmax": Gate("softmax"),
    "input_free": Gate("input_free", has_beta=False),  # softmax(0, tau): no beta
    "sigmoid": SigmoidGate("sigmoid"),
    "laplace": LaplaceGate("laplace"),
}
#: Their names: the one list of gates (config validation and the docs ask it).
GATES: tuple[str, ...] = tuple(_REGISTRY)


def get_gate(name: str) -> Gate:
    """The gate object of a name, or ValueError naming the choices."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"gate: unknown gate {name!r}; choose one of {', '.join(GATES)}") from None

"""Gates of the family as registered objects: each owns its parameters per adapter, its log
weights and the pieces of the closed-form rows and EM M-step (`Gate`). Density, rows, EM rows,
packing, config validation and the report ask the object (`get_gate`), never the name.

Adding a gate is one class here (registered in `_REGISTRY`) plus its tests: the row functions
(`moejax.mix.rows`, `moejax.mix.emrows`) are written in the pieces of `Gate.pieces`, so a gate
whose log weights are log w = lv - logsumexp(lv) with d lv_k / d g_k = t_k (and d t_k / d g_k
= -t_k (1 - t_k) or 0) needs no other change.

Gate logits g_j = beta_j . x + tau_j (j = 1..m); the frozen expert's logit is fixed at 0.
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

    def width(self, d: int) -> int:
        """Gate parameters per adapter: beta (d) and tau, or tau alone."""
        return d + 1 if self.has_beta else 1

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


#: The registered gates, by name (the config's ``model.gate``, `MixSpec.gate`).
_REGISTRY: dict[str, Gate] = {
    "softmax": Gate("softmax"),
    "input_free": Gate("input_free", has_beta=False),  # softmax(0, tau): no beta
    "sigmoid": SigmoidGate("sigmoid"),
}
#: Their names: the one list of gates (config validation and the docs ask it).
GATES: tuple[str, ...] = tuple(_REGISTRY)


def get_gate(name: str) -> Gate:
    """The gate object of a name, or ValueError naming the choices."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"gate: unknown gate {name!r}; choose one of {', '.join(GATES)}") from None

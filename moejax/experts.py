"""Expert logit functions.

An *expert* maps covariates ``X`` (n, d) and a weight matrix ``eta`` (K-1, d) to class logits
(n, K): ``h_k(x) = scale * a(eta_k . x) + bias_k`` for k < K-1 and ``h_{K-1} = 0`` (the reference
class). ``a`` is a built-in activation name or any pure, elementwise JAX function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def _gelu(z: jax.Array) -> jax.Array:
    """Exact (erf) GELU."""
    return jax.nn.gelu(z, approximate=False)


BUILTIN_ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda z: z,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": _gelu,
    "relu": jax.nn.relu,
}


SOFTPLUS_PREFIX = "softplus-"


def softplus_width(name: str) -> float | None:
    """The width w of a smoothed-ReLU name ``"softplus-W"`` (W a positive number, e.g.
    ``"softplus-0.1"``: a(z) = w log(1 + exp(z / w)), which tends to relu(z) uniformly, within
    w log 2, as w -> 0), or None for any other name. A bad width raises ValueError."""
    if not name.startswith(SOFTPLUS_PREFIX):
        return None
    try:
        w = float(name[len(SOFTPLUS_PREFIX) :])
    except ValueError:
        w = math.nan
    if not (math.isfinite(w) and w > 0):
        raise ValueError(f"{name!r}: a smoothed ReLU is softplus-W with a width W > 0")
    return w


def is_activation_name(name: str) -> bool:
    """A built-in activation name or a smoothed ReLU ``"softplus-W"`` with W > 0."""
    try:
        return name in BUILTIN_ACTIVATIONS or softplus_width(name) is not None
    except ValueError:
        return False


def _softplus(w: float) -> Activation:
    def a(z: jax.Array) -> jax.Array:
        return w * jax.nn.softplus(z / w)

    return a


def resolve_activation(a: str | Activation, argname: str = "activation") -> Activation:
    """Return the activation function for a built-in name (or ``"softplus-W"``, a ReLU
    smoothed to width W) or a user callable."""
    if isinstance(a, str):
        try:
            w = softplus_width(a)
        except ValueError as exc:
            raise ValueError(f"{argname}: {exc}") from None
        if w is not None:
            return _softplus(w)
        try:
            return BUILTIN_ACTIVATIONS[a]
        except KeyError:
            names = ", ".join([*sorted(BUILTIN_ACTIVATIONS), "softplus-W (W > 0)"])
            raise ValueError(f"{argname}: unknown expert {a!r}; choose one of {names}") from None
    if callable(a):
        return a
    raise ValueError(f"{argname}: expected an expert name or a callable, got {type(a).__name__}")


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _closed_form_derivs(name: str, Z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array] | None:
    """(a, a', a'') of a built-in activation without nested autodiff, or None. ``a`` is the
    same expression as `BUILTIN_ACTIVATIONS` (bit for bit)."""
    if name == "linear":
        return Z, jnp.ones_like(Z), jnp.zeros_like(Z)
    if name == "tanh":
        t = jnp.tanh(Z)
        a1 = 1.0 - t * t
        return t, a1, -2.0 * t * a1
    if name == "sigmoid":
        sg = jax.nn.sigmoid(Z)
        a1 = sg * (1.0 - sg)
        return sg, a1, a1 * (1.0 - 2.0 * sg)
    if name == "gelu":
        # a = z Phi(z), a' = Phi(z) + z phi(z), a'' = phi(z) (2 - z^2); Phi via erfc (accurate
        # in the lower tail, and the same expression as jax.nn.gelu(approximate=False)).
        cdf = 0.5 * jax.lax.erfc(-Z * _SQRT_HALF)
        pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * Z * Z)
        return _gelu(Z), cdf + Z * pdf, pdf * (2.0 - Z * Z)
    if name == "relu":
        return jax.nn.relu(Z), (Z > 0).astype(Z.dtype), jnp.zeros_like(Z)
    w = softplus_width(name)
    if w is not None:  # a = w softplus(z / w), a' = sigmoid(z / w), a'' = a' (1 - a') / w
        sg = jax.nn.sigmoid(Z / w)
        return _softplus(w)(Z), sg, sg * (1.0 - sg) / w
    return None


def activation_derivs(expert: Expert, Z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(a(Z), a'(Z), a''(Z)) elementwise: closed forms for the built-in activations, nested
    forward-mode autodiff for user callables (which must be elementwise)."""
    if isinstance(expert.activation, str):
        closed = _closed_form_derivs(expert.activation, Z)
        if closed is not None:
            return closed
    act = resolve_activation(expert.activation)
    ones = jnp.ones_like(Z)

    def first(z):
        return jax.jvp(act, (z,), (ones,))

    (a, a1), (_, a2) = jax.jvp(first, (Z,), (ones,))
    return a, a1, a2


@dataclass(frozen=True)
class Expert:
    """A multinomial logistic expert: logits ``scale * a(eta_k . x) + bias_k``, reference 0.

    Attributes:
      activation: built-in name ("linear", "tanh", "sigmoid", "gelu", "relu") or a pure JAX
        elementwise function ``a(z)``.
      scale: fixed output scale ``s`` (not estimated).
      bias: fixed per-class bias, a tuple of K-1 floats, or None for zeros (not estimated).
    """

    activation: str | Activation
    scale: float = 1.0
    bias: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        a = self.activation
        return a if isinstance(a, str) else getattr(a, "__name__", repr(a))

    def logits_from_activation(self, a: jax.Array) -> jax.Array:
        """Class logits (..., K) from activations ``a(eta_k . x)`` of shape (..., K-1)."""
        h = self.scale * a
        if self.bias is not None:
            h = h + jnp.asarray(self.bias, dtype=h.dtype)
        return jnp.concatenate([h, jnp.zeros((*h.shape[:-1], 1), h.dtype)], axis=-1)

    def logits_from_z(self, z: jax.Array) -> jax.Array:
        """Class logits (..., K) from linear predictors ``z = eta_k . x`` of shape (..., K-1)."""
        return self.logits_from_activation(resolve_activation(self.activation)(z))

    def logits(self, eta: jax.Array, X: jax.Array) -> jax.Array:
        """Class logits (n, K) for ``eta`` (K-1, d) and ``X`` (n, d); the last column is 0."""
        return self.logits_from_z(X @ eta.T)

    def log_probs(self, eta: jax.Array, X: jax.Array) -> jax.Array:
        """Log class probabilities (n, K), via log-softmax."""
        return jax.nn.log_softmax(self.logits(eta, X), axis=-1)

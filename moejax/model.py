"""The paper's model: the contaminated mixture of multinomial logistic experts.

    p_G(y = k | x) = (1 - w(x)) softmax(h0(x; eta0))_k + w(x) softmax(h(x; eta))_k,
    w(x) = sigmoid(beta . x + tau).

This is the face of the one model family (`moejax.mix`) for its m = 1, softmax-gate,
categorical member: `ModelSpec` *is* a `MixSpec` with those settings, `Params` (beta (d,),
tau (), eta (K-1, d)) is `MixParams` without the adapter axis, and every function here converts
at the boundary and calls the same code as the general model. `ModelSpec` is static and hashable
(a pytree with no leaves); `Params` is a pytree of float64 arrays. Labels are int32 in 0..K-1;
class K-1 is the reference class whose logit is 0 in both experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.experts import Activation
from moejax.mix import density as _density
from moejax.mix.spec import MixParams, MixSpec
from moejax.mix.validate import check_data

GATES = ("softmax",)


@dataclass(frozen=True, init=False)
class ModelSpec(MixSpec):
    """The paper's model: one adapter, softmax gate, categorical experts (a `MixSpec`).

    Args:
      d: covariate dimension (>= 1).
      K: number of classes (>= 2).
      frozen: frozen expert's activation: a built-in name ("linear", "tanh", "sigmoid", "gelu",
        "relu", "softplus-W"), a pure JAX elementwise function ``a0(z)`` or its import path
        ``"package.module:function"`` (checked here: see `moejax.experts.check_activation`),
        or an `Expert`.
      adapter: adapter expert's activation (same forms as ``frozen``).
      eta0: frozen expert's known weights, array-like of shape (K-1, d).
      scale: fixed logit scale ``s`` of the adapter (logit = s a(eta_k . x) + b_k).
      frozen_scale: fixed logit scale of the frozen expert (defaults to ``scale``).
      bias: optional fixed per-class bias of the adapter, shape (K-1,).
      frozen_bias: optional fixed per-class bias of the frozen expert, shape (K-1,).
      gate: "softmax" (frozen gate logit 0, hence a sigmoid); other gates and several
        adapters are `moejax.mix.MixSpec`'s.
    """

    def __init__(
        self,
        d: int,
        K: int,
        frozen: Any,
        adapter: Any,
        eta0: Any,
        scale: float = 1.0,
        frozen_scale: float | None = None,
        bias: Any = None,
        frozen_bias: Any = None,
        gate: str = "softmax",
    ) -> None:
        if gate not in GATES:
            raise ValueError(
                f"gate: unknown gate {gate!r} for ModelSpec (the paper's softmax-gated model); "
                "use moejax.mix.MixSpec for the input_free and sigmoid gates"
            )
        MixSpec.__init__(
            self,
            d=d,
            frozen=frozen,
            adapter=adapter,
            eta0=eta0,
            K=K,
            adapters=1,
            gate=gate,
            likelihood="categorical",
            scale=scale,
            frozen_scale=frozen_scale,
            bias=bias,
            frozen_bias=frozen_bias,
        )


jax.tree_util.register_static(ModelSpec)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer) and isinstance(
        x, np.ndarray | np.generic | jax.Array | float | int | list | tuple | str
    )


@jax.tree_util.register_pytree_node_class
class Params:
    """Estimated parameters G = (beta, tau, eta): shapes (d,), (), (K-1, d).

    Built by the user, the values are converted to float64 and checked: non-finite values and
    wrong ranks raise ValueError. Inside transformations (tracers) no check is made.
    """

    __slots__ = ("beta", "eta", "tau")

    def __init__(self, beta: Any, tau: Any, eta: Any) -> None:
        vals = {}
        for name, v, ndim in (("beta", beta, 1), ("tau", tau, 0), ("eta", eta, 2)):
            if _is_concrete(v):
                try:
                    if isinstance(v, str):
                        raise TypeError
                    arr = np.asarray(v, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ValueError(f"{name}: expected a numeric array, got {v!r}") from None
                if arr.ndim != ndim:
                    raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"{name}: must be finite, got {arr.tolist()}")
                v = jnp.asarray(arr)
            vals[name] = v
        object.__setattr__(self, "beta", vals["beta"])
        object.__setattr__(self, "tau", vals["tau"])
        object.__setattr__(self, "eta", vals["eta"])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Params is immutable; use params.replace(...)")

    def replace(self, **kw: Any) -> Params:
        d = {"beta": self.beta, "tau": self.tau, "eta": self.eta}
        d.update(kw)
        return Params._unchecked(d["beta"], d["tau"], d["eta"])

    @classmethod
    def _unchecked(cls, beta: Any, tau: Any, eta: Any) -> Params:
        obj = object.__new__(cls)
        object.__setattr__(obj, "beta", beta)
        object.__setattr__(obj, "tau", tau)
        object.__setattr__(obj, "eta", eta)
        return obj

    def tree_flatten(self) -> tuple[tuple[Any, Any, Any], None]:
        return (self.beta, self.tau, self.eta), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: tuple[Any, Any, Any]) -> Params:
        return cls._unchecked(*children)

    def __iter__(self):
        return iter((self.beta, self.tau, self.eta))

    def __repr__(self) -> str:
        return f"Params(beta={self.beta!r}, tau={self.tau!r}, eta={self.eta!r})"


def check_params(spec: MixSpec, params: Params) -> None:
    """Raise ValueError if ``params`` shapes do not match the paper model ``spec`` (works on
    tracers)."""
    if not isinstance(params, Params):
        raise ValueError(f"params: expected moejax.Params, got {type(params).__name__}")
    if spec.m != 1 or spec.regression:
        raise ValueError("spec: Params describe one categorical adapter; use moejax.mix here")
    expected = {"beta": (spec.d,), "tau": (), "eta": (spec.K - 1, spec.d)}
    for name, shape in expected.items():
        got = jnp.shape(getattr(params, name))
        if got != shape:
            raise ValueError(
                f"params.{name}: expected shape {shape} for d={spec.d}, K={spec.K}, got {got}"
            )


def to_mix(params: Params) -> MixParams:
    """Params -> MixParams with the adapter axis (m = 1; nu = 0, not estimated)."""
    beta = jnp.asarray(params.beta, jnp.float64)
    return MixParams(
        beta[None],
        jnp.reshape(jnp.asarray(params.tau, jnp.float64), (1,)),
        jnp.asarray(params.eta, jnp.float64)[None],
        jnp.zeros((1,), beta.dtype),
    )


def from_mix(p: MixParams) -> Params:
    """MixParams of one adapter -> Params (the adapter axis dropped)."""
    return Params._unchecked(p.beta[0], p.tau[0], p.eta[0])


def gate_logit(spec: MixSpec, params: Params, X: jax.Array) -> jax.Array:
    """Gate logit beta . x + tau, shape (n,); the adapter's weight is sigmoid of it."""
    check_params(spec, params)
    check_data(spec, X)
    return _density.predictors(spec, to_mix(params), X)[:, 0]


def log_class_probs(spec: MixSpec, params: Params, X: jax.Array) -> jax.Array:
    """log p_G(y = k | x_i), shape (n, K), computed in log space."""
    check_params(spec, params)
    return _density.log_class_probs(spec, to_mix(params), X)


def class_probs(spec: MixSpec, params: Params, X: jax.Array) -> jax.Array:
    """p_G(y = k | x_i), shape (n, K); rows sum to 1. (A log-probability that rounds above 0,
    by an ulp of the log-sum-exp, is taken as 0: every entry lies in [0, 1].)"""
    return jnp.exp(jnp.minimum(log_class_probs(spec, params, X), 0.0))


def log_density(spec: MixSpec, params: Params, X: jax.Array, y: jax.Array) -> jax.Array:
    """log p_G(y_i | x_i), shape (n,)."""
    check_params(spec, params)
    return _density.log_density(spec, to_mix(params), X, y)


def log_likelihood(
    spec: MixSpec, params: Params, X: jax.Array, y: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Scalar sum_i w_i log p_G(y_i | x_i); rows with weight 0 change nothing (neither the value
    nor any derivative, whatever those rows hold)."""
    check_params(spec, params)
    return _density.log_likelihood(spec, to_mix(params), X, y, weights)


def adapter_posterior(spec: MixSpec, params: Params, X: jax.Array, y: jax.Array) -> jax.Array:
    """E-step responsibilities r_i = P(observation i came from the adapter | x_i, y_i), (n,)."""
    check_params(spec, params)
    return _density.responsibilities(spec, to_mix(params), X, y)[:, 1]


__all__ = [
    "Activation",
    "ModelSpec",
    "Params",
    "adapter_posterior",
    "check_params",
    "class_probs",
    "from_mix",
    "gate_logit",
    "log_class_probs",
    "log_density",
    "log_likelihood",
    "to_mix",
]

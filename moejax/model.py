"""The contaminated mixture of multinomial logistic experts.

    p_G(y = k | x) = (1 - w(x)) softmax(h0(x; eta0))_k + w(x) softmax(h(x; eta))_k,
    w(x) = sigmoid(beta . x + tau).

`ModelSpec` is static and hashable (it is a pytree with no leaves, so it can be passed straight
through `jax.jit` and `jax.vmap`); `Params` is a pytree of float64 arrays. Every function here is
pure and works under `jit`, `vmap` and `grad`. Labels are integers 0..K-1; class K-1 is the
reference class whose logit is 0 in both experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.experts import Activation, Expert, resolve_activation

GATES = ("softmax",)


def _as_expert(e: Any, argname: str, scale: float, bias: Any, K: int) -> Expert:
    if isinstance(e, Expert):
        resolve_activation(e.activation, argname)
        return Expert(
            activation=e.activation,
            scale=_check_finite_scalar(f"{argname}.scale", e.scale),
            bias=_check_bias(f"{argname}.bias", e.bias, K),
        )
    resolve_activation(e, argname)
    return Expert(activation=e, scale=scale, bias=bias)


def _check_int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {v}")
    return int(v)


def _check_finite_scalar(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name}: must be finite, got {v!r}")
    return f


def _check_bias(name: str, bias: Any, K: int) -> tuple[float, ...] | None:
    if bias is None:
        return None
    b = np.asarray(bias, dtype=np.float64)
    if b.shape != (K - 1,):
        raise ValueError(
            f"{name}: expected shape ({K - 1},) (one bias per non-reference class), got {b.shape}"
        )
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name}: must be finite, got {b.tolist()}")
    return tuple(float(x) for x in b)


@dataclass(frozen=True)
class ModelSpec:
    """Static description of the model (hashable; safe as a `jit` static argument).

    Args:
      d: covariate dimension (>= 1).
      K: number of classes (>= 2).
      frozen: frozen expert's activation: a built-in name ("linear", "tanh", "sigmoid", "gelu",
        "relu"), a pure JAX elementwise function ``a0(z)``, or an `Expert`.
      adapter: adapter expert's activation (same forms as ``frozen``).
      eta0: frozen expert's known weights, array-like of shape (K-1, d).
      scale: fixed logit scale ``s`` of the adapter (logit = s a(eta_k . x) + b_k).
      frozen_scale: fixed logit scale of the frozen expert (defaults to ``scale``).
      bias: optional fixed per-class bias of the adapter, shape (K-1,).
      frozen_bias: optional fixed per-class bias of the frozen expert, shape (K-1,).
      gate: gate family; only "softmax" (frozen gate logit 0, hence a sigmoid) for now.
    """

    d: int
    K: int
    frozen: Any
    adapter: Any
    eta0: Any
    scale: float = 1.0
    frozen_scale: float | None = None
    bias: Any = None
    frozen_bias: Any = None
    gate: str = "softmax"
    _eta0: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = _check_int("d", self.d, 1)
        K = _check_int("K", self.K, 2)
        scale = _check_finite_scalar("scale", self.scale)
        fscale = (
            scale
            if self.frozen_scale is None
            else _check_finite_scalar("frozen_scale", self.frozen_scale)
        )
        bias = _check_bias("bias", self.bias, K)
        fbias = _check_bias("frozen_bias", self.frozen_bias, K)
        try:
            eta0 = np.asarray(self.eta0, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"eta0: expected a numeric array, got {self.eta0!r}") from None
        if eta0.shape != (K - 1, d):
            raise ValueError(f"eta0: expected shape (K-1, d) = ({K - 1}, {d}), got {eta0.shape}")
        if not np.all(np.isfinite(eta0)):
            raise ValueError("eta0: must be finite")
        if self.gate not in GATES:
            raise ValueError(f"gate: unknown gate {self.gate!r}; choose one of {', '.join(GATES)}")
        frozen = _as_expert(self.frozen, "frozen", fscale, fbias, K)
        adapter = _as_expert(self.adapter, "adapter", scale, bias, K)
        eta0_t = tuple(tuple(float(v) for v in row) for row in eta0)
        for name, value in (
            ("d", d),
            ("K", K),
            ("scale", scale),
            ("frozen_scale", fscale),
            ("bias", bias),
            ("frozen_bias", fbias),
            ("frozen", frozen),
            ("adapter", adapter),
            ("eta0", eta0_t),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_eta0", eta0_t)

    @property
    def n_params(self) -> int:
        """Number of estimated scalars: d + 1 + (K-1) d."""
        return self.d + 1 + (self.K - 1) * self.d

    @property
    def frozen_expert(self) -> Expert:
        return self.frozen

    @property
    def adapter_expert(self) -> Expert:
        return self.adapter

    def eta0_array(self) -> jax.Array:
        """The frozen expert's weights as a float64 array (K-1, d)."""
        return jnp.asarray(self._eta0, dtype=jnp.float64)

    @property
    def homogeneous(self) -> bool:
        """True when adapter and frozen expert share the activation and output map."""
        return self.frozen == self.adapter

    def check_params(self, params: Params) -> None:
        """Raise ValueError if ``params`` shapes do not match this spec (works on tracers)."""
        expected = {"beta": (self.d,), "tau": (), "eta": (self.K - 1, self.d)}
        for name, shape in expected.items():
            got = jnp.shape(getattr(params, name))
            if got != shape:
                raise ValueError(
                    f"params.{name}: expected shape {shape} for d={self.d}, K={self.K}, got {got}"
                )

    def check_data(self, X: Any, y: Any | None = None) -> None:
        """Raise ValueError if X (n, d) or y (n,) do not match this spec."""
        xs = jnp.shape(X)
        if len(xs) != 2 or xs[1] != self.d:
            raise ValueError(f"X: expected shape (n, {self.d}), got {xs}")
        if y is not None and jnp.shape(y) != (xs[0],):
            raise ValueError(f"y: expected shape ({xs[0]},) to match X, got {jnp.shape(y)}")


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


def _f64(x: Any) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.float64)


def gate_logit(spec: ModelSpec, params: Params, X: jax.Array) -> jax.Array:
    """Gate logit beta . x + tau, shape (n,); the adapter's weight is sigmoid of it."""
    return _f64(X) @ params.beta + params.tau


def log_class_probs(spec: ModelSpec, params: Params, X: jax.Array) -> jax.Array:
    """log p_G(y = k | x_i), shape (n, K), computed in log space (log-sigmoid, logaddexp)."""
    spec.check_params(params)
    spec.check_data(X)
    X = _f64(X)
    g = gate_logit(spec, params, X)[:, None]
    lp0 = spec.frozen.log_probs(spec.eta0_array(), X)
    lp1 = spec.adapter.log_probs(_f64(params.eta), X)
    return jnp.logaddexp(jax.nn.log_sigmoid(-g) + lp0, jax.nn.log_sigmoid(g) + lp1)


def class_probs(spec: ModelSpec, params: Params, X: jax.Array) -> jax.Array:
    """p_G(y = k | x_i), shape (n, K); rows sum to 1."""
    return jnp.exp(log_class_probs(spec, params, X))


def _take(lp: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.take_along_axis(lp, jnp.asarray(y, jnp.int32)[:, None], axis=-1)[:, 0]


def log_density(spec: ModelSpec, params: Params, X: jax.Array, y: jax.Array) -> jax.Array:
    """log p_G(y_i | x_i), shape (n,)."""
    spec.check_data(X, y)
    return _take(log_class_probs(spec, params, X), y)


def _weighted_sum(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.sum(values)
    w = _f64(weights)
    if w.shape != values.shape:
        raise ValueError(f"weights: expected shape {values.shape}, got {w.shape}")
    # A weight-0 row contributes exactly 0, even if its value is not finite.
    return jnp.sum(jnp.where(w != 0, w * values, 0.0))


def mask_padding(
    X: jax.Array, y: jax.Array, weights: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Replace rows of weight 0 by (0, label 0), so that whatever they held (NaN, inf, a label
    out of range) cannot reach a value or a gradient. X (n, d), y (n,)."""
    if weights is None:
        return X, y
    keep = jnp.asarray(weights) != 0
    return jnp.where(keep[:, None], X, 0.0), jnp.where(keep, y, 0)


def log_likelihood(
    spec: ModelSpec, params: Params, X: jax.Array, y: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Scalar sum_i w_i log p_G(y_i | x_i); rows with weight 0 change nothing (neither the value
    nor any derivative, whatever those rows hold)."""
    spec.check_data(X, y)
    if weights is not None and jnp.shape(weights) != (jnp.shape(X)[0],):
        raise ValueError(f"weights: expected shape ({jnp.shape(X)[0]},), got {jnp.shape(weights)}")
    X, y = mask_padding(_f64(X), jnp.asarray(y), weights)
    return _weighted_sum(log_density(spec, params, X, y), weights)


def adapter_posterior(spec: ModelSpec, params: Params, X: jax.Array, y: jax.Array) -> jax.Array:
    """E-step responsibilities r_i = P(observation i came from the adapter | x_i, y_i), (n,)."""
    spec.check_params(params)
    spec.check_data(X, y)
    X = _f64(X)
    g = gate_logit(spec, params, X)
    l0 = jax.nn.log_sigmoid(-g) + _take(spec.frozen.log_probs(spec.eta0_array(), X), y)
    l1 = jax.nn.log_sigmoid(g) + _take(spec.adapter.log_probs(_f64(params.eta), X), y)
    return jax.nn.sigmoid(l1 - l0)


__all__ = [
    "Activation",
    "ModelSpec",
    "Params",
    "adapter_posterior",
    "class_probs",
    "gate_logit",
    "log_class_probs",
    "log_density",
    "log_likelihood",
]

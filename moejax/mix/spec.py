"""The general contaminated mixture: a frozen expert, m >= 1 adapters, four gates, three
expert likelihoods.

    p_G(y | x) = w_0(x) f_0(y | x) + sum_{j=1..m} w_j(x) f_j(y | x; eta_j, nu_j)

Gates (the frozen expert's gate logit is fixed at 0; g_j = beta_j . x + tau_j):
  "softmax"     w = softmax(0, g_1, ..., g_m)             (m = 1: the sigmoid gate of the core)
  "input_free"  w = softmax(0, tau_1, ..., tau_m)         (m = 1: lambda = sigmoid(tau); no beta)
  "sigmoid"     w_j proportional to sigmoid(g_j), w_0 to sigmoid(0) = 1/2 (independent sigmoid
                switches, normalised so that p_G is a density)
  "laplace"     w = softmax(0, g_1, ..., g_m) with g_j = tau_j - ||x - beta_j|| (beta_j: the
                location W_j)
Likelihoods of an expert with linear predictors z_r = eta_r . x (r < R):
  "categorical" multinomial logistic, K classes, R = K - 1, logits s a(z_r) + b_r, class K-1 = 0
  "gaussian"    N(y; s a(z) + b, nu), R = 1
  "laplace"     Laplace with mean s a(z) + b and variance nu (scale sqrt(nu / 2)), R = 1
The frozen expert has known (eta0, nu0) and may use another likelihood of the same kind
(categorical with categorical, regression with regression).

The plain MoE (``frozen=None``; "none" in a config): no frozen expert, m >= 2 trainable experts
of the adapter's form. Expert 0 is the gate's reference (its logit is fixed at 0, so beta[0] and
tau[0] are held at 0 and not estimated; the softmax's translation invariance removed), and the
gate acts on the logits of experts 1..m-1 exactly as it acts on the adapters' logits above:

    p_G(y | x) = sum_{j=0..m-1} w_j(x) f_j(y | x; eta_j, nu_j),  w = gate(g_1, ..., g_{m-1})

`MixSpec` is static and hashable (no pytree leaves); `MixParams` is a NamedTuple of float64
arrays with a leading adapter axis: beta (m, d), tau (m,), eta (m, R, d), nu (m,). Entries that a
model does not estimate (beta under the input-free gate, nu for categorical experts) are held at
0 and ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.experts import Expert, resolve_activation
from moejax.mix.gates import GATES, get_gate
from moejax.mix.likelihoods import LIKELIHOODS, get_likelihood


class MixParams(NamedTuple):
    """Adapter parameters, leading axis m: beta (m, d), tau (m,), eta (m, R, d), nu (m,).

    Every model of the family has these four leaves, so that estimates, standard errors and
    bound flags of any model stack, vmap and store alike (estimates.npz, `moejax.simulate`'s
    ``estimate`` / ``se`` / ``on_bound``). Some entries are not estimated: nu of categorical
    experts (held at 0) and beta under the input-free gate (0). Flatten the free parameters
    with `moejax.estimation.pack` (length ``spec.n_params``, the coordinates of a fit's
    ``info`` matrix; log nu for regression experts) and back with
    `moejax.estimation.unpack`, not with ``jax.flatten_util.ravel_pytree`` (whose vector
    carries the fixed entries: its Hessian is singular).
    """

    beta: jax.Array
    tau: jax.Array
    eta: jax.Array
    nu: jax.Array


def count_params(
    d: int,
    K: int,
    m: int,
    gate: str,
    likelihood: str,
    plain: bool = False,
    intercept: bool = False,
) -> int:
    """Estimated scalars of a model (`MixSpec.n_params`; the config's check of the sample sizes
    asks it too): per gate logit (one per adapter, or m - 1 in the plain MoE) the gate's width
    (d + 1, or 1 without beta), per expert its R d weights (R (d + 1) with an intercept) and,
    for regression, its variance."""
    lik = get_likelihood(likelihood)
    per_expert = lik.predictors(K) * (d + 1 if intercept else d) + (1 if lik.regression else 0)
    return (m - 1 if plain else m) * get_gate(gate).width(d) + m * per_expert


def check_int(name: str, v: Any, minimum: int) -> int:
    """``v`` as an int >= minimum, or ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {v}")
    return int(v)


def check_finite_scalar(name: str, v: Any) -> float:
    """``v`` as a finite float, or ValueError naming ``name``."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name}: must be finite, got {v!r}")
    return f


def _check_bias(name: str, bias: Any, R: int) -> tuple[float, ...] | None:
    """A fixed per-predictor bias: R finite numbers (one per non-reference class), or None."""
    if bias is None:
        return None
    try:
        b = np.atleast_1d(np.asarray(bias, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {R} numbers, got {bias!r}") from None
    if b.shape != (R,):
        raise ValueError(
            f"{name}: expected shape ({R},) (one bias per non-reference class), got {b.shape}"
        )
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name}: must be finite, got {b.tolist()}")
    return tuple(float(v) for v in b)


def _as_expert(e: Any, argname: str, scale: float, bias: Any, R: int) -> Expert:
    """An `Expert` from an activation (name or callable) with the spec's scale and bias, or
    an `Expert` given whole (its own scale and bias are validated)."""
    if isinstance(e, Expert):
        resolve_activation(e.activation, argname)
        return Expert(
            activation=e.activation,
            scale=check_finite_scalar(f"{argname}.scale", e.scale),
            bias=_check_bias(f"{argname}.bias", e.bias, R),
        )
    resolve_activation(e, argname)
    return Expert(
        activation=e,
        scale=scale,
        bias=_check_bias("bias" if argname == "adapter" else "frozen_bias", bias, R),
    )


@dataclass(frozen=True)
class MixSpec:
    """Static description of the general model (hashable; pass it straight through jit/vmap).

    Args:
      d: covariate dimension. K: classes (categorical only; ignored for regression, R = 1).
      frozen: None for the plain MoE (no frozen expert; ``eta0`` is ignored), else as adapter.
      frozen, adapter: activation names ("linear", "tanh", "sigmoid", "gelu", "relu",
        "softplus-W"), pure elementwise JAX functions a(z), or such a function's import path
        "package.module:function" (kept as the string, so equal strings give equal specs). A
        user function is checked here (`moejax.experts.check_activation`): one ValueError line
        naming the field if it does not trace, keep shapes, return float64 or act elementwise.
      eta0: frozen weights (R, d). nu0: frozen variance (regression only, > 0).
      adapters: m >= 1 (m >= 2 experts in the plain MoE). gate: one of GATES. likelihood: the
        adapters' likelihood (LIKELIHOODS);
        frozen_likelihood: the frozen expert's (defaults to ``likelihood``).
      scale, frozen_scale, bias, frozen_bias: fixed output maps s a(z) + b (not estimated).
      expert_intercept: each trainable expert's predictors get an estimated intercept,
        z_r = eta_r . (x, 1): eta (m, R, d + 1), its last column the intercept (the rate
        papers' experts a . x + b); the frozen expert keeps eta0 (R, d).
    """

    d: int
    frozen: Any
    adapter: Any
    eta0: Any = None
    K: int = 2
    adapters: int = 1
    gate: str = "softmax"
    likelihood: str = "categorical"
    frozen_likelihood: str | None = None
    nu0: float = 1.0
    scale: float = 1.0
    frozen_scale: float | None = None
    bias: Any = None
    frozen_bias: Any = None
    expert_intercept: bool = False
    _eta0: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = check_int("d", self.d, 1)
        K = check_int("K", self.K, 2)
        plain = self.frozen is None
        m = check_int("adapters", self.adapters, 2 if plain else 1)
        if self.gate not in GATES:
            raise ValueError(f"gate: unknown gate {self.gate!r}; choose one of {', '.join(GATES)}")
        lik = self.likelihood
        flik = lik if self.frozen_likelihood is None else self.frozen_likelihood
        for name, v in (("likelihood", lik), ("frozen_likelihood", flik)):
            if v not in LIKELIHOODS:
                raise ValueError(f"{name}: unknown {v!r}; choose one of {', '.join(LIKELIHOODS)}")
        if get_likelihood(lik).regression != get_likelihood(flik).regression:
            raise ValueError(
                f"likelihood: adapter ({lik}) and frozen expert ({flik}) must both be "
                "categorical or both be regression likelihoods"
            )
        R = get_likelihood(lik).predictors(K)
        nu0 = check_finite_scalar("nu0", self.nu0)
        if nu0 <= 0:
            raise ValueError(f"nu0: must be > 0, got {nu0}")
        scale = check_finite_scalar("scale", self.scale)
        fscale = scale if self.frozen_scale is None else self.frozen_scale
        fscale = check_finite_scalar("frozen_scale", fscale)
        # the plain MoE has no frozen expert: eta0 is unused (zeros unless given)
        raw = np.zeros((R, d)) if plain and self.eta0 is None else self.eta0
        try:
            eta0 = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"eta0: expected a numeric array, got {self.eta0!r}") from None
        if eta0.shape != (R, d):
            raise ValueError(f"eta0: expected shape (R, d) = ({R}, {d}), got {eta0.shape}")
        if not np.all(np.isfinite(eta0)):
            raise ValueError("eta0: must be finite")
        frozen = None if plain else _as_expert(self.frozen, "frozen", fscale, self.frozen_bias, R)
        adapter = _as_expert(self.adapter, "adapter", scale, self.bias, R)
        eta0_t = tuple(tuple(float(v) for v in row) for row in eta0)
        for name, value in (
            ("d", d),
            ("K", K),
            ("adapters", m),
            ("frozen_likelihood", flik),
            ("nu0", nu0),
            ("scale", scale),
            ("frozen_scale", fscale),
            ("bias", adapter.bias),
            ("frozen_bias", None if plain else frozen.bias),
            ("frozen", frozen),
            ("adapter", adapter),
            ("eta0", eta0_t),
            ("_eta0", eta0_t),
            ("expert_intercept", bool(self.expert_intercept)),
        ):
            object.__setattr__(self, name, value)

    @property
    def m(self) -> int:
        return self.adapters

    @property
    def plain(self) -> bool:
        """True for the plain MoE: no frozen expert, expert 0 the gate's reference."""
        return self.frozen is None

    @property
    def n_gates(self) -> int:
        """Gate logits: one per adapter, or m - 1 in the plain MoE (expert 0 has logit 0)."""
        return self.m - 1 if self.plain else self.m

    @property
    def components(self) -> int:
        """Mixture components: the frozen expert and m adapters, or the plain MoE's m."""
        return self.m if self.plain else self.m + 1

    @property
    def R(self) -> int:
        """Linear predictors per expert: K - 1 (categorical) or 1 (regression)."""
        return get_likelihood(self.likelihood).predictors(self.K)

    @property
    def regression(self) -> bool:
        return get_likelihood(self.likelihood).regression

    @property
    def has_beta(self) -> bool:
        return get_gate(self.gate).has_beta

    @property
    def n_params(self) -> int:
        """Number of estimated scalars: per adapter, the gate (d + 1, or 1 without beta), the
        expert's R d weights and, for regression, its variance."""
        return count_params(
            self.d, self.K, self.m, self.gate, self.likelihood, self.plain, self.expert_intercept
        )

    @property
    def de(self) -> int:
        """Weights per expert predictor: d, or d + 1 with ``expert_intercept``."""
        return self.d + 1 if self.expert_intercept else self.d

    @property
    def homogeneous(self) -> bool:
        """True when the adapters and the frozen expert share activation, output map and
        likelihood (the regime where the mixture can collapse)."""
        if self.plain:
            return False
        return self.frozen == self.adapter and self.frozen_likelihood == self.likelihood

    def check_data(self, X: Any, y: Any | None = None) -> None:
        """Raise ValueError if X (n, d) or y (n,) do not match this spec (shapes only; works
        on tracers)."""
        xs = jnp.shape(X)
        if len(xs) != 2 or xs[1] != self.d:
            raise ValueError(f"X: expected shape (n, {self.d}), got {xs}")
        if y is not None and jnp.shape(y) != (xs[0],):
            raise ValueError(f"y: expected shape ({xs[0]},) to match X, got {jnp.shape(y)}")

    @property
    def y_dtype(self) -> Any:
        """Labels are int32 (categorical); responses float64 (regression)."""
        return jnp.float64 if self.regression else jnp.int32

    def eta0_array(self) -> jax.Array:
        return jnp.asarray(self._eta0, dtype=jnp.float64)

    def check_params(self, p: MixParams) -> None:
        """Raise ValueError if the shapes of ``p`` do not match this spec."""
        m, R, d = self.m, self.R, self.d
        want = {"beta": (m, d), "tau": (m,), "eta": (m, R, self.de), "nu": (m,)}
        for name, shape in want.items():
            got = jnp.shape(getattr(p, name))
            if got != shape:
                raise ValueError(f"params.{name}: expected shape {shape}, got {got}")

    def params(self, beta: Any, tau: Any, eta: Any, nu: Any = None) -> MixParams:
        """MixParams from array-likes, broadcast/validated to this spec's shapes (float64).
        ``nu`` defaults to nu0 for regression and is 0 for categorical experts; ``beta`` may be
        None under the input-free gate."""
        m, R, d = self.m, self.R, self.d
        if beta is None or not self.has_beta:
            beta = np.zeros((m, d))
        if nu is None or not self.regression:
            nu = np.full((m,), self.nu0 if self.regression else 0.0)
        out = []
        for name, v, shape in (
            ("beta", beta, (m, d)),
            ("tau", tau, (m,)),
            ("eta", eta, (m, R, self.de)),
            ("nu", nu, (m,)),
        ):
            a = np.asarray(v, dtype=np.float64)
            if a.size == int(np.prod(shape)):
                a = a.reshape(shape)
            if a.shape != shape or not np.all(np.isfinite(a)):
                raise ValueError(f"{name}: expected finite values of shape {shape}, got {a.shape}")
            out.append(jnp.asarray(a))
        if self.regression and np.any(np.asarray(out[3]) <= 0):
            raise ValueError("nu: variances must be > 0")
        if self.plain:
            check_reference(out[0], out[1])
        return MixParams(*out)


def check_reference(beta: Any, tau: Any) -> None:
    """The plain MoE's reference expert 0 has gate logit 0: ValueError unless beta[0] and tau[0]
    are 0 (concrete values only)."""
    b0, t0 = np.asarray(beta)[0], float(np.asarray(tau)[0])
    if np.any(b0 != 0) or t0 != 0:
        raise ValueError(
            "beta, tau: in the plain MoE expert 0 is the gate's reference, its gate "
            f"(beta[0], tau[0]) must be 0, got ({b0.tolist()}, {t0}); under the softmax gate "
            "subtract it from every expert's gate (the same gate weights)"
        )


jax.tree_util.register_static(MixSpec)

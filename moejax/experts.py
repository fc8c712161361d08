"""Expert logit functions.

An *expert* maps covariates ``X`` (n, d) and a weight matrix ``eta`` (K-1, d) to class logits
(n, K): ``h_k(x) = scale * a(eta_k . x) + bias_k`` for k < K-1 and ``h_{K-1} = 0`` (the reference
class). ``a`` is a built-in activation name, any pure, elementwise JAX function, or such a
function named by an import path ``"package.module:function"`` (a config can only hold a
string). A user function, given either way, is checked once (`check_activation`): it must trace
under JAX, keep the shape of its argument, return float64 for float64, and be elementwise;
otherwise ValueError with one line naming it.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


IMPORT_SEP = ":"


def is_import_path(name: str) -> bool:
    """True for a user activation named by its import path ``"package.module:function"``."""
    return IMPORT_SEP in name


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def import_activation(path: str, argname: str = "activation") -> Activation:
    """The object that ``"package.module:function"`` names (``module:attr.attr`` reaches into a
    class or namespace), imported with importlib; it must be callable. Every failure (a module
    that does not import, a missing attribute, a non-callable) is one ValueError line naming
    ``argname`` and ``path``. Not checked for JAX (see `check_activation`)."""
    module, _, attr = path.partition(IMPORT_SEP)
    if not module or not attr or IMPORT_SEP in attr:
        raise ValueError(
            f"{argname}: {path!r}: write an imported activation as 'package.module:function'"
        )
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:  # ImportError, or whatever the module raises on import
        raise ValueError(
            f"{argname}: {path!r}: cannot import {module!r} ({_first_line(exc)})"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{argname}: {path!r}: {module!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{argname}: {path!r} is not callable (a {type(obj).__name__})")
    return obj


def activation_label(a: Any) -> str:
    """How messages name an activation: the string quoted, or ``module.qualname``."""
    if isinstance(a, str):
        return repr(a)
    name = getattr(a, "__qualname__", None) or getattr(a, "__name__", None)
    if name is None:
        return repr(a)
    module = getattr(a, "__module__", None)
    return f"{module}.{name}" if module else name


# Probe points of the check: distinct, both signs, not symmetric, away from 0 and from kinks.
_PROBE = np.array([-1.3, -0.45, 0.2, 0.85, 1.7])
_PROBE_2D = np.array([[-0.9, 0.35, 1.2], [-0.15, 0.6, -1.75]])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True))


class _Refusal(Exception):
    """Why a user activation is refused (the words after its name)."""


def _probe(f: Callable[..., Any]) -> None:
    """Raise `_Refusal` unless ``f`` is a pure, elementwise float64 JAX function. Runs on
    concrete values, even when an activation is first used inside a user's jit."""
    with jax.ensure_compile_time_eval():
        _probe_concrete(f)


def _probe_concrete(f: Callable[..., Any]) -> None:
    x = jnp.asarray(_PROBE, dtype=jnp.float64)
    x2 = jnp.asarray(_PROBE_2D, dtype=jnp.float64)
    for arg in (x, x2):
        try:  # a lambda around f: jit wants a weak reference, which numpy ufuncs refuse
            out = jax.eval_shape(lambda z: f(z), arg)
        except Exception as exc:  # np.sin: TracerArrayConversionError; anything else alike
            raise _Refusal(f"is not JAX-traceable: {_first_line(exc)}") from None
        shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
        if shape != arg.shape:
            got = shape if shape is not None else type(out).__name__
            raise _Refusal(f"is not elementwise: it maps shape {arg.shape} to {got}")
        if dtype != jnp.float64:
            raise _Refusal(f"must return float64 for float64 input, got {dtype}")
    ones = jnp.ones_like(x)

    def derivs(z: jax.Array) -> tuple[jax.Array, jax.Array]:  # as `activation_derivs`
        return jax.jvp(lambda u: jax.jvp(f, (u,), (ones,)), (z,), (ones,))

    try:
        jax.eval_shape(derivs, x)
    except Exception as exc:
        raise _Refusal(f"is not twice differentiable by jax.jvp: {_first_line(exc)}") from None
    try:
        y = np.asarray(f(x))
        singles = np.concatenate([np.asarray(f(x[i : i + 1])) for i in range(x.shape[0])])
        y2 = np.asarray(f(x2))
        flat = np.asarray(f(x2.reshape(-1)))
        jac = np.asarray(jax.jacfwd(lambda z: f(z))(x))
    except Exception as exc:  # e.g. a function that fails on concrete values only
        raise _Refusal(f"fails on float64 arrays: {_first_line(exc)}") from None
    off = jac - np.diag(np.diag(jac))
    scale = 1.0 + float(np.nanmax(np.abs(jac), initial=0.0))
    if not (
        _same(y, singles)
        and _same(y2.reshape(-1), flat)
        and float(np.nanmax(np.abs(off), initial=0.0)) <= 1e-12 * scale
    ):
        raise _Refusal("is not elementwise (a(z)[i] must depend on z[i] alone)")


@functools.lru_cache(maxsize=256)
def _probed(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` once it has passed `_probe`, cached per function object (refusals are not)."""
    _probe(f)
    return f


def check_activation(f: Any, argname: str = "activation", label: str | None = None) -> Activation:
    """``f`` if it is a pure JAX function that is elementwise (a(z)[i] depends on z[i] alone,
    for a vector and a matrix z alike), keeps the shape of its argument, returns float64 for
    float64 and is twice differentiable by forward-mode autodiff (where a user activation's
    a' and a'' come from); else one ValueError line naming ``argname`` and the function
    (``label``, default its module and name). Probed on a few fixed float64 values; a passing
    function is remembered (per function object), so a spec built twice is checked once."""
    try:
        try:
            return _probed(f)
        except TypeError:  # not hashable: probe it every time
            _probe(f)
            return f
    except _Refusal as why:
        label = activation_label(f) if label is None else label
        raise ValueError(f"{argname}: {label} {why}") from None


def resolve_activation(a: str | Activation, argname: str = "activation") -> Activation:
    """Return the activation function for a built-in name (or ``"softplus-W"``, a ReLU
    smoothed to width W), an import path ``"package.module:function"`` (imported, then
    checked) or a user callable (checked: see `check_activation`)."""
    if isinstance(a, str):
        if is_import_path(a):
            return check_activation(import_activation(a, argname), argname, label=repr(a))
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
            module, dot, attr = a.rpartition(".")
            hint = f" (did you mean {module + IMPORT_SEP + attr!r}?)" if dot and module else ""
            raise ValueError(
                f"{argname}: unknown expert {a!r}; choose one of {names}, or a JAX function "
                f"as 'package.module:function'{hint}"
            ) from None
    if callable(a):
        return check_activation(a, argname)
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
      activation: built-in name ("linear", "tanh", "sigmoid", "gelu", "relu", "softplus-W"),
        a pure JAX elementwise function ``a(z)``, or its import path
        ``"package.module:function"`` (checked on first use; specs check it when built).
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

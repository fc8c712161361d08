"""Data checks at the public boundary, for every model of the family.

`check_data` refuses bad data with a ValueError naming the argument, before anything is
compiled: X not a finite (n, d) array, n = 0, y with another number of rows, labels that are
not integers in 0..K-1 (categorical) or responses that are not finite (regression), weights
that are negative, non-finite, of the wrong shape or all zero. Lists and NumPy arrays are
accepted alike (`as_arrays` converts them). Inside a user's own `jit`, values are traced and only
shapes can be checked here; `data_ok` then gives the same verdict as a traced boolean, which the
estimators turn into the status "bad_data" (never "converged"), and `rows_ok` the verdict of each
row, which the densities turn into NaN (never a plausible number).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.mix.spec import MixSpec


def _traced(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def as_arrays(X: Any, y: Any = None, weights: Any = None) -> tuple[Any, Any, Any]:
    """Python lists (and other array-likes) as arrays; arrays and tracers pass unchanged."""

    def conv(name: str, v: Any) -> Any:
        if v is None or isinstance(v, jax.Array | np.ndarray | jax.core.Tracer):
            return v
        try:
            return np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a numeric array, got {type(v).__name__}") from None

    return conv("X", X), conv("y", y), conv("weights", weights)


def check_data(spec: MixSpec, X: Any, y: Any = None, weights: Any = None) -> None:
    """Raise ValueError naming the argument if (X (n, d), y (n,), weights (n,)) are not data of
    ``spec``'s model. Shapes are always checked; values only when they are concrete."""
    X, y, weights = as_arrays(X, y, weights)
    xs = jnp.shape(X)
    if len(xs) != 2 or xs[1] != spec.d:
        raise ValueError(f"X: expected shape (n, {spec.d}), got {xs}")
    n = xs[0]
    if n == 0:
        raise ValueError("X: no rows (n = 0); a likelihood or a fit needs at least one row")
    if y is not None and jnp.shape(y) != (n,):
        raise ValueError(f"y: expected shape ({n},) to match the {n} rows of X, got {jnp.shape(y)}")
    if weights is not None and jnp.shape(weights) != (n,):
        raise ValueError(f"weights: expected shape ({n},) to match X, got {jnp.shape(weights)}")
    keep = None  # rows that count: weight != 0 (padding rows may hold anything)
    if weights is not None and not _traced(weights):
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            i = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
            raise ValueError(f"weights: must be finite and >= 0; row {i} holds {w[i]}")
        if not np.any(w > 0):
            raise ValueError("weights: all zero; a likelihood or a fit needs a weighted row")
        keep = w != 0
    if not _traced(X):
        Xa = np.asarray(X, dtype=np.float64)
        bad = ~np.all(np.isfinite(Xa), axis=1)
        if keep is not None:
            bad &= keep
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"X: must be finite; row {i} holds {Xa[i].tolist()}")
    if y is not None and not _traced(y):
        _check_y(spec, np.asarray(y), keep)


def _check_y(spec: MixSpec, y: np.ndarray, keep: np.ndarray | None) -> None:
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y: expected numbers, got dtype {y.dtype}")
    yf = y.astype(np.float64)
    if spec.regression:
        ok = np.isfinite(yf) | (False if keep is None else ~keep)
        if not np.all(ok):
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"y: responses must be finite; row {i} holds {yf[i]}")
        return
    ok = np.isfinite(yf) & (yf == np.round(yf)) & (yf >= 0) & (yf <= spec.K - 1)
    if keep is not None:
        ok |= ~keep
    if not np.all(ok):
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"y: labels must be integers in 0..{spec.K - 1} (K = {spec.K}); row {i} holds {yf[i]}"
        )


def rows_ok(spec: MixSpec, X: jax.Array, y: jax.Array) -> jax.Array:
    """(n,) bool: the row-wise traced counterpart of `check_data`'s value checks (X (n, d)
    finite; y (n,) as given, before any conversion to labels: an integer in 0..K-1 for
    categorical experts, a finite response for regression ones). The densities give NaN where
    it is False, so that a bad row traced through a user's `jit` never becomes a number."""
    yf = jnp.asarray(y, jnp.float64)
    ok = jnp.all(jnp.isfinite(jnp.asarray(X, jnp.float64)), axis=1) & jnp.isfinite(yf)
    if not spec.regression:
        ok = ok & (yf == jnp.round(yf)) & (yf >= 0) & (yf <= spec.K - 1)
    return ok


def data_ok(spec: MixSpec, X: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """() bool: the traced counterpart of `check_data` for rows of weight != 0 (X (n, d),
    y (n,) as given, before any conversion to labels, w (n,))."""
    keep = w != 0
    w_ok = jnp.all(jnp.isfinite(w) & (w >= 0)) & jnp.any(w > 0)
    return jnp.all(jnp.where(keep, rows_ok(spec, X, y), True)) & w_ok

"""The row-function interface of the model family: every likelihood (and EM M-step objective)
is a weighted sum over rows of a function phi of a few linear predictors per row, given by its
value, gradient and packed Hessian in the predictors (`RowFns`, closed forms in
`moejax.mix.rows` and `moejax.mix.emrows`, or `autodiff_rows` of a per-row phi). The
estimators' fused pass (`moejax.estimation.objective`) consumes them; the model defines them,
so it lives with the model and the model imports nothing from the estimators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class RowFns(NamedTuple):
    """Derivatives of phi in the linear predictors, *rows last*: U (W, *S) with the rows as the
    trailing axes S ((B,) for one lane's block, (G, B) under a vmap over G lanes), aux a pytree
    of arrays whose trailing axes are S. value(U, aux) -> (*S); value_grad -> ((*S), W planes);
    value_grad_hess -> (.., .., W (W + 1) / 2 planes), the Hessian packed as its upper
    triangle in row-major order (`packed_index`). "Planes" are a (k, *S) array or a sequence
    of k arrays (*S) (the closed forms return lists: the fused pass stacks them once)."""

    value: Callable[[jax.Array, Any], jax.Array]
    value_grad: Callable[[jax.Array, Any], tuple[jax.Array, jax.Array]]
    value_grad_hess: Callable[[jax.Array, Any], tuple[jax.Array, jax.Array, jax.Array]]


def packed_index(W: int) -> np.ndarray:
    """(W, W) int array: the position of entry (a, b) (either order) in a packed symmetric
    matrix, whose entries are the upper triangle a <= b in row-major order."""
    idx = np.zeros((W, W), np.int64)
    a, b = np.triu_indices(W)
    idx[a, b] = idx[b, a] = np.arange(a.size)
    return idx


def _triu(W: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(W)


def autodiff_rows(phi: Callable[[jax.Array, Any], jax.Array]) -> RowFns:
    """RowFns of a per-row function phi(u (W,), aux_row) -> () by autodiff, vmapped over the
    trailing row axes (the test oracle and the path for a user's own row function)."""

    def over_rows(fn):
        def batched(U, aux):
            S = U.shape[1:]
            flat = lambda a: jnp.reshape(a, (*a.shape[: a.ndim - len(S)], -1))
            out = jax.vmap(fn, in_axes=-1, out_axes=-1)(flat(U), jax.tree_util.tree_map(flat, aux))
            return jax.tree_util.tree_map(lambda o: jnp.reshape(o, o.shape[:-1] + S), out)

        return batched

    def row_vg(u, a):
        return jax.value_and_grad(phi)(u, a)

    def row_vgh(u, a):
        def g_with_aux(uu):
            v, g = jax.value_and_grad(phi)(uu, a)
            return g, (v, g)

        H, (v, g) = jax.jacfwd(g_with_aux, has_aux=True)(u)
        iu = _triu(u.shape[0])
        return v, g, H[iu]

    return RowFns(over_rows(phi), over_rows(row_vg), over_rows(row_vgh))

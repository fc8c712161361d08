"""Objectives for the solvers: value, gradient and Hessian of a function of a flat vector.

`linear_predictor_objective` exploits the structure of every problem moejax solves: the
log-likelihood (and each EM M-step objective) is a weighted sum over rows of a function
``phi(u_i, aux_i)`` of a few *linear predictors* ``u_ij = x~_i . theta_j`` (the gate logit
beta . x + tau, and the adapter's eta_k . x). With G_i = dphi/du and A_i = d2phi/du2 (m and m x m
per row, by autodiff of phi, so user activations work), the gradient is one matmul
``X~^T (w G)`` and the Hessian is m(m+1)/2 weighted Gram matrices ``X~^T diag(w A_jk) X~``. That
is far cheaper in time and memory than `jax.hessian` of the whole likelihood, and it is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Objective(NamedTuple):
    """A scalar objective of x (P,): value(x) -> (), value_and_grad(x) -> ((), (P,)),
    value_grad_hess(x) -> ((), (P,), (P, P))."""

    value: Callable[[jax.Array], jax.Array]
    value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
    value_grad_hess: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def generic_objective(fun: Callable[[jax.Array], jax.Array]) -> Objective:
    """Objective of any scalar function, derivatives by autodiff."""
    vg = jax.value_and_grad(fun)

    def vgh(x):
        f, g = vg(x)
        return f, g, jax.hessian(fun)(x)

    return Objective(fun, vg, vgh)


def as_objective(fun: Objective | Callable[[jax.Array], jax.Array]) -> Objective:
    return fun if isinstance(fun, Objective) else generic_objective(fun)


class RowFns(NamedTuple):
    """Row-vectorised derivatives of phi in the linear predictors U (n, m):
    value(U, aux) -> (n,); value_grad -> ((n,), (n, m)); value_grad_hess -> (.., (n, m, m))."""

    value: Callable[[jax.Array, Any], jax.Array]
    value_grad: Callable[[jax.Array, Any], tuple[jax.Array, jax.Array]]
    value_grad_hess: Callable[[jax.Array, Any], tuple[jax.Array, jax.Array, jax.Array]]


def autodiff_rows(phi: Callable[[jax.Array, Any], jax.Array]) -> RowFns:
    """RowFns of a per-row function phi(u (m,), aux_row) by autodiff, vmapped over rows."""

    def row_vg(u, a):
        return jax.value_and_grad(phi)(u, a)

    def row_vgh(u, a):
        def g_with_aux(uu):
            v, g = jax.value_and_grad(phi)(uu, a)
            return g, (v, g)

        H, (v, g) = jax.jacfwd(g_with_aux, has_aux=True)(u)
        return v, g, H

    return RowFns(jax.vmap(phi), jax.vmap(row_vg), jax.vmap(row_vgh))


def linear_predictor_objective(
    rows: RowFns | Callable[[jax.Array, Any], jax.Array],
    X1: jax.Array,
    aux: Any,
    w: jax.Array,
    total: jax.Array,
    widths: tuple[int, ...],
) -> Objective:
    """f(x) = sum_i w_i phi(u_i, aux_i) / total, with u_ij = X1[i, :widths[j]] . x_j.

    Args:
      rows: `RowFns` (row-vectorised value and derivatives), or a per-row function
        phi(u (m,), aux_row) -> scalar whose derivatives then come from autodiff.
      X1: (n, d+1) covariates with a trailing column of ones (the intercept); a predictor of
        width d+1 has an intercept, one of width d does not.
      aux: pytree of per-row arrays with leading axis n (labels, responsibilities, ...).
      w: (n,) row weights (0 = padding). total: () normaliser (sum of weights).
      widths: static, the length of each predictor's coefficient slice; x is their concatenation.
    """
    if not isinstance(rows, RowFns):
        rows = autodiff_rows(rows)
    m = len(widths)
    offsets = [sum(widths[:j]) for j in range(m)]
    P = sum(widths)
    wmask = w != 0
    # Padding rows (weight 0) may hold anything; zero their contribution exactly.
    ww = jnp.where(wmask, w, 0.0) / total

    def predictors(x):
        return jnp.stack(
            [X1[:, :wj] @ x[o : o + wj] for o, wj in zip(offsets, widths, strict=True)], axis=-1
        )

    def row_sum(v):
        return jnp.sum(jnp.where(wmask, ww * v, 0.0))

    def grad_from(G):
        full = X1.T @ jnp.where(wmask[:, None], ww[:, None] * G, 0.0)  # (d+1, m)
        return jnp.concatenate([full[:wj, j] for j, wj in enumerate(widths)])

    def value(x):
        return row_sum(rows.value(predictors(x), aux))

    def value_and_grad(x):
        v, G = rows.value_grad(predictors(x), aux)
        return row_sum(v), grad_from(G)

    def value_grad_hess(x):
        v, G, A = rows.value_grad_hess(predictors(x), aux)
        Aw = jnp.where(wmask[:, None, None], ww[:, None, None] * A, 0.0)  # (n, m, m)
        H = jnp.zeros((P, P), X1.dtype)
        for j in range(m):
            for k in range(j, m):
                B = (X1[:, : widths[j]] * Aw[:, j, k][:, None]).T @ X1[:, : widths[k]]
                sj = slice(offsets[j], offsets[j] + widths[j])
                sk = slice(offsets[k], offsets[k] + widths[k])
                H = H.at[sj, sk].set(B)
                if k != j:
                    H = H.at[sk, sj].set(B.T)
        return row_sum(v), grad_from(G), H

    return Objective(value, value_and_grad, value_grad_hess)

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


class Blocks(NamedTuple):
    """Row blocking: rows are processed in ``count`` (traced) blocks of ``size`` (static) rows,
    so the work follows the active rows, not the (padded) array length."""

    size: int
    count: jax.Array


def linear_predictor_objective(
    rows: RowFns | Callable[[jax.Array, Any], jax.Array],
    X1: jax.Array,
    aux: Any,
    w: jax.Array,
    total: jax.Array,
    widths: tuple[int, ...],
    blocks: Blocks | None = None,
    starts: tuple[int, ...] | None = None,
    source: Callable[[jax.Array], tuple[jax.Array, Any, jax.Array]] | None = None,
) -> Objective:
    """f(x) = sum_i w_i phi(u_i, aux_i) / total, with u_ij = X1[i, s_j : s_j + widths[j]] . x_j.

    Args:
      rows: `RowFns` (row-vectorised value and derivatives), or a per-row function
        phi(u (m,), aux_row) -> scalar whose derivatives then come from autodiff.
      X1: (n, d+1) covariates with a trailing column of ones (the intercept); a predictor of
        width d+1 has an intercept, one of width d does not.
      aux: pytree of per-row arrays with leading axis n (labels, responsibilities, ...).
      w: (n,) row weights (0 = padding). total: () normaliser (sum of weights).
      widths: static, the length of each predictor's coefficient slice; x is their concatenation.
      blocks: optional `Blocks`: sum only the first ``count * size`` rows, one block of ``size``
        rows at a time (n must be a multiple of ``size``; rows past the last block must carry
        weight 0). The value is the same as without blocking, up to summation order.
      starts: static first column s_j of each predictor in X1 (default 0 for every predictor);
        e.g. an intercept-only predictor of X1 = [x, 1] has start d and width 1.
      source: optional ``source(b) -> (X1_b (size, d+1), aux_b, w_b (size,))``, block b's
        rows, used instead of slicing X1, aux and w (which may then be None): data streamed
        from keys, never held. Needs ``blocks``.
    """
    if source is not None and blocks is None:
        raise ValueError("source: a streamed objective needs blocks")
    if not isinstance(rows, RowFns):
        rows = autodiff_rows(rows)
    m = len(widths)
    offsets = [sum(widths[:j]) for j in range(m)]
    cols = [slice(s0, s0 + wj) for s0, wj in zip(starts or (0,) * m, widths, strict=True)]
    P = sum(widths)

    def contrib(Xb, auxb, wb, x, order):
        """Sums over one set of rows: value, and gradient / Hessian when order >= 1 / 2."""
        wmask = wb != 0
        ww = jnp.where(wmask, wb, 0.0) / total  # padding rows may hold anything
        U = jnp.stack(
            [Xb[:, c] @ x[o : o + wj] for o, wj, c in zip(offsets, widths, cols, strict=True)],
            axis=-1,
        )
        if order == 0:
            return (jnp.sum(jnp.where(wmask, ww * rows.value(U, auxb), 0.0)),)
        if order == 1:
            v, G = rows.value_grad(U, auxb)
        else:
            v, G, A = rows.value_grad_hess(U, auxb)
        val = jnp.sum(jnp.where(wmask, ww * v, 0.0))
        full = Xb.T @ jnp.where(wmask[:, None], ww[:, None] * G, 0.0)  # (d+1, m)
        grad = jnp.concatenate([full[c, j] for j, c in enumerate(cols)])
        if order == 1:
            return val, grad
        Aw = jnp.where(wmask[:, None, None], ww[:, None, None] * A, 0.0)  # (rows, m, m)
        H = jnp.zeros((P, P), Xb.dtype)
        for j in range(m):
            for k in range(j, m):
                B = (Xb[:, cols[j]] * Aw[:, j, k][:, None]).T @ Xb[:, cols[k]]
                sj = slice(offsets[j], offsets[j] + widths[j])
                sk = slice(offsets[k], offsets[k] + widths[k])
                H = H.at[sj, sk].set(B)
                if k != j:
                    H = H.at[sk, sj].set(B.T)
        return val, grad, H

    def total_of(x, order):
        if blocks is None:
            return contrib(X1, aux, w, x, order)
        size = blocks.size
        dt = jnp.float64
        zero = (jnp.zeros((), dt), jnp.zeros((P,), dt), jnp.zeros((P, P), dt))

        def body(b, acc):
            if source is not None:
                c = contrib(*source(b), x, order)
            else:
                sl = lambda a: jax.lax.dynamic_slice_in_dim(a, b * size, size, axis=0)
                c = contrib(sl(X1), jax.tree_util.tree_map(sl, aux), sl(w), x, order)
            return tuple(a + ci for a, ci in zip(acc, c, strict=False))

        return jax.lax.fori_loop(0, blocks.count, body, zero[: order + 1])

    def value(x):
        return total_of(x, 0)[0]

    def value_and_grad(x):
        return total_of(x, 1)

    def value_grad_hess(x):
        return total_of(x, 2)

    return Objective(value, value_and_grad, value_grad_hess)


def map_rows(
    fn: Callable[..., jax.Array],
    arrays: tuple[jax.Array, ...],
    blocks: Blocks | None = None,
    tail: tuple[int, ...] = (),
) -> jax.Array:
    """fn applied to row-aligned arrays (leading axis n) -> (n, *tail), blockwise when
    ``blocks`` is given (rows past the last active block are left 0)."""
    if blocks is None:
        return fn(*arrays)
    size = blocks.size
    n = arrays[0].shape[0]

    def body(b, out):
        sl = lambda a: jax.lax.dynamic_slice_in_dim(a, b * size, size, axis=0)
        return jax.lax.dynamic_update_slice_in_dim(out, fn(*map(sl, arrays)), b * size, axis=0)

    zeros = jnp.zeros((n, *tail), arrays[0].dtype)
    return jax.lax.fori_loop(0, blocks.count, body, zeros)

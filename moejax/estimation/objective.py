"""Objectives for the solvers: value, gradient and Hessian of a function of a flat vector.

`linear_predictor_objective` exploits the structure of every problem moejax solves: the
log-likelihood (and each EM M-step objective) is a weighted sum over rows of a function
``phi(u_i, aux_i)`` of a few *linear predictors* ``u_ij = x~_i . theta_j`` (the gate logit
beta . x + tau, the adapter's eta_k . x, a log-variance). With G_i = dphi/du and
A_i = d2phi/du2 per row (closed forms, `RowFns`, or autodiff of phi), the gradient entries are
sums over rows of G_ij x_ic and the Hessian entries sums of A_ijk x_ic x_ic'. The fused pass
computes all of them at once, rows last: the row function's value, gradient and packed Hessian
planes F (one plane per entry, one element per row), weighted, times the planes of covariate
products Q (x_c x_c'), contracted over the rows: M = (w F) Q^T. That is exact, far cheaper in
time and memory than `jax.hessian` of the whole likelihood, and elementwise work plus one
reduction whatever the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The row-function interface is the model's (moejax.mix.rowfns); re-exported here.
from moejax.mix.rowfns import RowFns, autodiff_rows, packed_index


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


def mapped_objective(obj: Objective, to_lin: Callable[[jax.Array], jax.Array]) -> Objective:
    """``obj`` (of u) as an objective of theta with u = to_lin(theta): gradient J^T g and
    Hessian J^T H J + sum_i g_i Hess(u_i), J = d u / d theta (autodiff of the small map; the
    rows' sums stay one pass over the data)."""

    def value(t):
        return obj.value(to_lin(t))

    def value_and_grad(t):
        u, vjp = jax.vjp(to_lin, t)
        f, g = obj.value_and_grad(u)
        return f, vjp(g)[0]

    def value_grad_hess(t):
        f, g, H = obj.value_grad_hess(to_lin(t))
        J = jax.jacfwd(to_lin)(t)
        gs = jax.lax.stop_gradient(g)
        curv = jax.hessian(lambda s: jnp.dot(gs, to_lin(s)))(t)
        return f, J.T @ g, J.T @ H @ J + curv

    return Objective(value, value_and_grad, value_grad_hess)


def as_objective(fun: Objective | Callable[[jax.Array], jax.Array]) -> Objective:
    return fun if isinstance(fun, Objective) else generic_objective(fun)


#: The passes `linear_predictor_objective` can use for its gradient and Hessian sums.
FUSED_MODES = ("auto", "off", "on", "interpret")


class Blocks(NamedTuple):
    """Row blocking: rows are processed in ``count`` (traced) blocks of ``size`` (static) rows,
    so the work follows the active rows, not the (padded) array length."""

    size: int
    count: jax.Array


class _Plan(NamedTuple):
    """Static tables of one fused pass: which column products it needs and where each entry of
    the value, gradient and Hessian is read from the accumulated product matrix M."""

    pairs: tuple[tuple[int, int], ...]  # the column products X_c X_c' (c <= c') summed against
    grad_idx: np.ndarray  # (P,) flat indices into M (order >= 1)
    hess_idx: np.ndarray  # (P, P) flat indices into M (order 2)
    value_idx: int


def _plan(cols: list[range], ones: int, order: int) -> _Plan:
    """The products a pass of ``order`` needs. M[f, q] = sum_rows F_f X_c X_c' for plane f of
    F = [value, gradient (W), packed Hessian (W (W+1) / 2)] and pair q = (c, c')."""
    W = len(cols)
    coef = [(j, c) for j, cj in enumerate(cols) for c in cj]
    key = lambda c, c2: (min(c, c2), max(c, c2))
    need = {(ones, ones)} | {key(c, ones) for _, c in coef}
    if order >= 2:
        need |= {key(c, c2) for _, c in coef for _, c2 in coef}
    pairs = tuple(sorted(need))
    at = {p: i for i, p in enumerate(pairs)}
    nq = len(pairs)
    grad_idx = np.array([(1 + j) * nq + at[key(c, ones)] for j, c in coef], np.int64)
    hess_idx = np.zeros((len(coef), len(coef)), np.int64)
    if order >= 2:
        pk = packed_index(W)
        for a, (j, c) in enumerate(coef):
            for b, (k, c2) in enumerate(coef):
                hess_idx[a, b] = (1 + W + pk[j, k]) * nq + at[key(c, c2)]
    return _Plan(pairs, grad_idx, hess_idx, at[(ones, ones)])


def _product_planes(Xb: jax.Array, pairs: tuple[tuple[int, int], ...], ones: int) -> jax.Array:
    """(len(pairs), *S): the planes X_c X_c' of block Xb (C, *S), the ones column taken as 1."""
    one = jnp.ones_like(Xb[0])
    out = []
    for c, c2 in pairs:
        a = one if c == ones else Xb[c]
        out.append(a if c2 == ones else a * Xb[c2])
    return jnp.stack(out)


def linear_predictor_objective(
    rows: RowFns | Callable[[jax.Array, Any], jax.Array],
    X1: jax.Array | None,
    aux: Any,
    w: jax.Array | None,
    total: jax.Array,
    widths: tuple[int, ...],
    blocks: Blocks | None = None,
    starts: tuple[int, ...] | None = None,
    source: Callable[[jax.Array], tuple[jax.Array, Any, jax.Array]] | None = None,
    fused: str = "auto",
    sq_norm: bool = False,
) -> Objective:
    """f(x) = sum_i w_i phi(u_i, aux_i) / total, with u_ij = X1[s_j : s_j + widths[j], i] . x_j,
    and its gradient and Hessian in one fused pass over the rows.

    The pass works on planes of rows (rows last): the predictors U (W, rows) are formed from the
    covariate planes, the row function gives the value, gradient and packed Hessian planes F in
    U, and one product with the planes of covariate products Q = [X_c X_c'] gives every sum the
    parameter-level value, gradient and Hessian need: M = (w F) Q^T, contracted over the rows.
    Nothing per row is a matrix and no small matmul runs per row, so the pass is elementwise
    work plus one reduction, batched lanes (vmap) share it, and it is exact.

    Args:
      rows: `RowFns` (rows-last value and derivatives), or a per-row function
        phi(u (W,), aux_row) -> scalar whose derivatives then come from autodiff.
      X1: (d+1, n) covariates as planes (one row of X1 per covariate, the rows of the data as
        its columns), the last plane all ones (the intercept); a predictor of width d+1 has an
        intercept, one of width d does not. None with ``source``.
      aux: pytree of per-row arrays whose last axis is the rows (labels, posteriors (k, n), ...).
      w: (n,) row weights (0 = padding: such rows may hold anything). total: () normaliser.
      widths: static, the length of each predictor's coefficient slice; x is their concatenation.
      blocks: optional `Blocks`: sum only the first ``count * size`` rows, one block of ``size``
        rows at a time (n must be a multiple of ``size``; rows past the last block must carry
        weight 0). The value is the same as without blocking, up to summation order.
      starts: static first plane s_j of each predictor in X1 (default 0 for every predictor);
        e.g. an intercept-only predictor of X1 = [x; 1] has start d and width 1.
      source: optional ``source(b) -> (X1_b (d+1, size), aux_b, w_b (size,))``, block b's rows,
        used instead of slicing X1, aux and w (which may then be None): data streamed from
        keys, never held. Needs ``blocks``.
      fused: which pass computes the gradient and Hessian sums (`FUSED_MODES`): "auto" (the
        fused Pallas-Triton kernel of `moejax.estimation.fused` when lowered for CUDA, this
        XLA pass everywhere else, chosen by `jax.lax.platform_dependent`; the XLA pass alone
        when the row function cannot run in the kernel), "off" (the XLA pass), "on" (the
        kernel, CUDA only) or "interpret" (the kernel in Pallas interpret mode, any platform:
        the CPU tests). The value alone is always the XLA pass (no covariate products).
      sq_norm: the covariate planes are [||x||^2, X1] (the plane computed per block from x;
        a gate's predictors that need it: the Laplace gate). The XLA pass only.
    """
    if source is not None and blocks is None:
        raise ValueError("source: a streamed objective needs blocks")
    if fused not in FUSED_MODES:
        raise ValueError(f"fused: expected one of {FUSED_MODES}, got {fused!r}")
    if not isinstance(rows, RowFns):
        rows = autodiff_rows(rows)
    m = len(widths)
    starts = starts or (0,) * m
    offsets = [sum(widths[:j]) for j in range(m)]
    cols = [range(s0, s0 + wj) for s0, wj in zip(starts, widths, strict=True)]
    if source is None:
        C = X1.shape[0]
    else:
        C = jax.eval_shape(source, jnp.int32(0))[0].shape[0]
    if sq_norm:
        C, fused = C + 1, "off"
    ones = C - 1
    plans = {order: _plan(cols, ones, order) for order in (1, 2)}
    # Coefficients as a (W, C) matrix: U = coef @ X1_b, written as C broadcast products.
    rows_of = np.array([j for j, cj in enumerate(cols) for _ in cj], np.int64)
    cols_of = np.array([c for cj in cols for c in cj], np.int64)
    flat_of = np.array([offsets[j] + i for j, cj in enumerate(cols) for i in range(len(cj))])

    def predictors_of(Xb, x):
        coef = jnp.zeros((m, C), x.dtype).at[rows_of, cols_of].set(x[flat_of])
        used = sorted(set(cols_of.tolist()))
        U = None
        for c in used:
            term = coef[:, c : c + 1] if c == ones else coef[:, c : c + 1] * Xb[c][None]
            U = term if U is None else U + term
        return jnp.broadcast_to(U, (m, *Xb.shape[1:]))

    def contrib(Xb, auxb, wb, x, order):
        """Block sums: the value (order 0), or the product matrix M (order 1 or 2)."""
        wmask = wb != 0
        ww = jnp.where(wmask, wb, 0.0) / total  # padding rows may hold anything
        U = predictors_of(Xb, x)
        if order == 0:
            return jnp.sum(jnp.where(wmask, ww * rows.value(U, auxb), 0.0), axis=-1)
        if order == 1:
            v, G = rows.value_grad(U, auxb)
            planes = [v, *G]
        else:
            v, G, Hp = rows.value_grad_hess(U, auxb)
            planes = [v, *G, *Hp]
        # Mask (padding rows may hold anything) and weight each plane, stack them once, then
        # one product with the covariate-product planes, contracted over the rows.
        F = jnp.stack([jnp.where(wmask, ww * f, 0.0) for f in planes])
        return jnp.einsum("fb,qb->fq", F, _product_planes(Xb, plans[order].pairs, ones))

    kernels: dict[int, Callable] = {}

    def kernel(order):
        if order not in kernels:
            from moejax.estimation.fused import make_fused_contrib

            kernels[order] = make_fused_contrib(
                rows.value_grad if order == 1 else rows.value_grad_hess,
                order,
                m=m,
                C=C,
                ones=ones,
                rows_of=rows_of,
                cols_of=cols_of,
                flat_of=flat_of,
                pairs=plans[order].pairs,
                interpret=fused == "interpret",
            )
        return kernels[order]

    def block_sums(Xb, auxb, wb, x, order):
        """`contrib`, or the fused kernel's same sums (order >= 1, by ``fused``)."""
        if sq_norm:
            x_ = Xb[:-1]
            Xb = jnp.concatenate([jnp.sum(x_ * x_, axis=0)[None], Xb], axis=0)
        if order == 0 or fused == "off":
            return contrib(Xb, auxb, wb, x, order)
        if fused in ("on", "interpret"):
            return kernel(order)(Xb, auxb, wb, x, total)
        from moejax.estimation.fused import FusedUnsupported

        try:  # the CUDA branch is traced on every platform: anything it refuses keeps XLA
            kernel(order).check(Xb, auxb)
            return jax.lax.platform_dependent(
                Xb,
                auxb,
                wb,
                x,
                cuda=lambda *a: kernel(order)(*a, total),
                default=lambda *a: contrib(*a, order),
            )
        except FusedUnsupported:
            return contrib(Xb, auxb, wb, x, order)
        except Exception as e:  # a bug of the kernel's path must not cost the XLA pass
            warnings.warn(f"fused pass unavailable, XLA pass used: {e!r}", stacklevel=2)
            return contrib(Xb, auxb, wb, x, order)

    def total_of(x, order):
        if blocks is None:
            return block_sums(X1, aux, w, x, order)
        size = blocks.size
        if order == 0:
            zero = jnp.zeros((), jnp.float64)
        else:
            Fq = 1 + m + (m * (m + 1) // 2 if order == 2 else 0)
            zero = jnp.zeros((Fq, len(plans[order].pairs)), jnp.float64)

        def body(b, acc):
            if source is not None:
                return acc + block_sums(*source(b), x, order)
            sl = lambda a: jax.lax.dynamic_slice_in_dim(a, b * size, size, axis=a.ndim - 1)
            return acc + block_sums(sl(X1), jax.tree_util.tree_map(sl, aux), sl(w), x, order)

        return jax.lax.fori_loop(0, blocks.count, body, zero)

    def value(x):
        return total_of(x, 0)

    def value_and_grad(x):
        M = total_of(x, 1).reshape(-1)
        p = plans[1]
        return M[p.value_idx], M[p.grad_idx]

    def value_grad_hess(x):
        M = total_of(x, 2).reshape(-1)
        p = plans[2]
        return M[p.value_idx], M[p.grad_idx], M[p.hess_idx]

    return Objective(value, value_and_grad, value_grad_hess)


def map_rows(
    fn: Callable[..., jax.Array],
    arrays: tuple[jax.Array, ...],
    blocks: Blocks | None = None,
    tail: tuple[int, ...] = (),
) -> jax.Array:
    """fn applied to rows-last arrays (last axis n) -> (*tail, n), blockwise when ``blocks`` is
    given (rows past the last active block are left 0)."""
    if blocks is None:
        return fn(*arrays)
    size = blocks.size
    n = arrays[0].shape[-1]

    def body(b, out):
        sl = lambda a: jax.lax.dynamic_slice_in_dim(a, b * size, size, axis=a.ndim - 1)
        upd = fn(*map(sl, arrays))
        return jax.lax.dynamic_update_slice_in_dim(out, upd, b * size, axis=out.ndim - 1)

    zeros = jnp.zeros((*tail, n), arrays[0].dtype)
    return jax.lax.fori_loop(0, blocks.count, body, zeros)

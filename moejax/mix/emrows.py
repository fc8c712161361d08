"""Closed-form rows of the EM M-step objectives (the Q-function's two parts), for every gate,
likelihood and m, with posteriors r (n, m+1) held fixed (column 0 the frozen expert):

    gate:    phi(g; r)        = -sum_{j=0..m} r_j log w_j(g)           on g (n, m)
    experts: phi(z, rho; y, r) = -sum_{j=1..m} r_j log f_j(y | z_j, rho_j) on [z (m R) | rho (m)]

With the gate pieces of `moejax.mix.rows` (t = 1 for the softmax and input-free gates,
t_k = sigmoid(-g_k) for the sigmoid gate; w the gate weights):

    gate gradient     t_k (w_k - r_k)
    gate Hessian      t_k t_l (1{k=l} w_k - w_k w_l) + 1{k=l} t_k (1 - t_k) (r_k - w_k)  (sigmoid)
    expert gradient   -r_j score_j,   expert Hessian  -r_j hess log f_j   (block-diagonal)

(sum_j r_j = 1 is used.) The experts' problem separates over adapters; one solve serves all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from moejax.estimation.objective import RowFns
from moejax.mix.rows import _categorical, _gate, _regression
from moejax.mix.spec import MixSpec


def _gate_core(spec: MixSpec, g: jax.Array, r: jax.Array, need: int):
    lw0, lw, w, q = _gate(spec.gate, g)
    value = -(r[:, 0] * lw0 + jnp.sum(r[:, 1:] * lw, axis=-1))
    if need == 0:
        return value, None, None
    rk = r[:, 1:]
    t = jnp.ones_like(g) if q is None else q
    tw = t * w
    grad = tw - t * rk
    if need == 1:
        return value, grad, None
    eye = jnp.eye(spec.m, dtype=g.dtype)
    H = eye * tw[:, :, None] * t[:, None, :] - tw[:, :, None] * tw[:, None, :]
    if q is not None:
        H = H + eye * (q * (1.0 - q) * (rk - w))[:, :, None]
    return value, grad, H


def _expert_core(spec: MixSpec, U: jax.Array, aux, need: int):
    y, r = aux
    n, m, R = U.shape[0], spec.m, spec.R
    Z = U[:, : m * R].reshape(n, m, R)
    rk = r[:, 1:]
    if spec.regression:
        lf, score, Hl = _regression(spec, Z, U[:, m * R :], y, need)
    else:
        lf, score, Hl = _categorical(spec, Z, y, need)
    value = -jnp.sum(rk * lf, axis=-1)
    if need == 0:
        return value, None, None
    rs = rk[..., None] * score  # (n, m, Q): Q = R (categorical) or 2 (z, rho)
    grad = -(
        rs.reshape(n, -1)
        if not spec.regression
        else jnp.concatenate([rs[..., 0], rs[..., 1]], axis=-1)
    )
    if need == 1:
        return value, grad, None
    B = -rk[..., None, None] * Hl  # (n, m, Q, Q)
    segs = [(0, R)] + ([(R, R + 1)] if spec.regression else [])
    return value, grad, _blockdiag(B, segs)


def _blockdiag(B: jax.Array, segs: list[tuple[int, int]]) -> jax.Array:
    """(n, W, W) from per-adapter blocks B (n, m, Q, Q) whose local coordinates split into
    ``segs``, each laid out adapter-major one after the other."""
    n, m = B.shape[0], B.shape[1]
    if m == 1:
        return B[:, 0]
    eye = jnp.eye(m, dtype=B.dtype)[:, None, :, None]
    rows = []
    for i0, i1 in segs:
        row = []
        for j0, j1 in segs:
            blk = B[:, :, i0:i1, None, j0:j1] * eye  # (n, m, |i|, m, |j|)
            row.append(blk.reshape(n, m * (i1 - i0), m * (j1 - j0)))
        rows.append(jnp.concatenate(row, axis=-1))
    return jnp.concatenate(rows, axis=-2)


def _fns(core, spec: MixSpec) -> RowFns:
    return RowFns(
        value=lambda U, aux: core(spec, U, aux, 0)[0],
        value_grad=lambda U, aux: core(spec, U, aux, 1)[:2],
        value_grad_hess=lambda U, aux: core(spec, U, aux, 2),
    )


def em_row_fns(spec: MixSpec) -> tuple[RowFns, RowFns]:
    """(gate rows on g (n, m) with aux r (n, m+1), expert rows on [z (n, m R) | rho (n, m)]
    with aux (y (n,), r (n, m+1))), each value (n,), gradient (n, W), Hessian (n, W, W)."""
    return _fns(_gate_core, spec), _fns(_expert_core, spec)

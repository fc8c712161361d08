"""Closed-form rows of the EM M-step objectives (the Q-function's two parts), for every gate,
likelihood and m, in the rows-last layout of `moejax.mix.rows`, with posteriors r (m + 1, *S)
held fixed (row 0 the frozen expert; in the plain MoE r (m, *S) are its experts', row 0 the
gate's reference expert, whose log-density enters the experts' part like any other):

    gate:    phi(g; r)        = -sum_{j=0..m} r_j log w_j(g)           on g (m, *S)
    experts: phi(z, rho; y, r) = -sum_{j=1..m} r_j log f_j(y | z_j, rho_j) on [z (m R) | rho (m)]

With the gate pieces of `moejax.mix.rows` (t = 1 for the softmax and input-free gates,
t_k = sigmoid(-g_k) for the sigmoid gate; w the gate weights):

    gate gradient     t_k (w_k - r_k)
    gate Hessian      t_k t_l (1{k=l} w_k - w_k w_l) + 1{k=l} t_k (1 - t_k) (r_k - w_k)  (sigmoid)
    expert gradient   -r_j score_j,   expert Hessian  -r_j hess log f_j   (block-diagonal)

(sum_j r_j = 1 is used.) The experts' problem separates over adapters; one solve serves all.
Hessians are packed (upper triangle, row-major; `moejax.mix.rows.packed_index`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from moejax.mix.density import n_gate_preds
from moejax.mix.rowfns import RowFns
from moejax.mix.rows import _categorical, _gate, _regression, gate_chain
from moejax.mix.spec import MixSpec


def _gate_core(spec: MixSpec, g: jax.Array, r: jax.Array, need: int):
    lw0, lw, w, q = _gate(spec.gate, g)
    m = spec.n_gates
    value = -(r[0] * lw0)
    for j in range(m):
        value = value - r[1 + j] * lw[j]
    if need == 0:
        return value, None, None
    rk = r[1:]
    t = jnp.ones_like(g) if q is None else q
    tw = t * w
    grad = tw - t * rk
    if need == 1:
        return value, grad, None
    H = []
    for k in range(m):
        for j in range(k, m):
            h = -tw[k] * tw[j]
            if j == k:
                h = h + tw[k] * t[k]
                if q is not None:
                    h = h + q[k] * (1.0 - q[k]) * (rk[k] - w[k])
            H.append(h)
    return value, [grad[j] for j in range(m)], H


def _expert_core(spec: MixSpec, U: jax.Array, aux, need: int):
    y, r = aux
    m, R = spec.m, spec.R
    Z = U[: m * R].reshape((m, R, *U.shape[1:]))
    rk = r if spec.plain else r[1:]  # the experts' posteriors
    if spec.regression:
        lf, score, Hl = _regression(spec, Z, U[m * R :], y, need)
    else:
        lf, score, Hl = _categorical(spec, Z, y, need)
    value = -rk[0] * lf[0]
    for j in range(1, m):
        value = value - rk[j] * lf[j]
    if need == 0:
        return value, None, None
    # Coordinates of U: z (adapter-major, R each), then rho (one per adapter, regression).
    coords = [(j, i) for j in range(m) for i in range(R)]
    if spec.regression:
        coords += [(j, R) for j in range(m)]
    grad = [-rk[j] * score[j, i] for j, i in coords]
    if need == 1:
        return value, grad, None
    zero = jnp.zeros_like(value)
    H = []
    for a, (ja, ia) in enumerate(coords):
        for jb, ib in coords[a:]:
            H.append(-rk[ja] * Hl[ja, ia, ib] if ja == jb else zero)
    return value, grad, H


def _fns(core, spec: MixSpec) -> RowFns:
    return RowFns(
        value=lambda U, aux: core(spec, U, aux, 0)[0],
        value_grad=lambda U, aux: core(spec, U, aux, 1)[:2],
        value_grad_hess=lambda U, aux: core(spec, U, aux, 2),
    )


def em_row_fns(spec: MixSpec) -> tuple[RowFns, RowFns]:
    """(gate rows on g (m_g, *S) with aux r (C, *S), expert rows on [z (m R) | rho (m)]
    (W, *S) with aux (y (*S), r (C, *S))): value (*S), gradient (W, *S), packed Hessian
    (W (W + 1) / 2, *S). C = ``spec.components`` (m + 1, or the plain MoE's m)."""
    gate_core = _gate_core
    G = n_gate_preds(spec)
    if G != spec.n_gates:  # the gate's rows carried to its predictors (the Laplace gate)
        chained = gate_chain(spec, lambda U, aux, need: _gate_core(spec, U, aux, need), G)
        gate_core = lambda _spec, U, aux, need: chained(U, aux, need)
    return _fns(gate_core, spec), _fns(_expert_core, spec)

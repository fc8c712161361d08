"""Closed-form row derivatives of the general mixture's negative log-likelihood in its linear
predictors (the layout U of `moejax.mix.density`), for every gate, likelihood and m.

Per row, with components j = 0 (frozen) .. m, l_j = log w_j(g) + log f_j, r = softmax(l) and
v_j = grad_u l_j:

    log p = logsumexp(l),  grad log p = sum_j r_j v_j,
    hess log p = sum_j r_j hess(l_j) + sum_j r_j v_j v_j^T - vbar vbar^T    (vbar = sum_j r_j v_j)

and phi = -log p. The gate Jacobian is d log w_j / d g_k = t_k (1{j=k} - w_k), with t = 1 for
the softmax and input-free gates and t_k = q_k = sigmoid(-g_k) for the sigmoid gate (log w =
lv - logsumexp(lv), lv_0 = log 1/2, lv_k = log sigmoid(g_k), d lv_k / d g_k = q_k). Its weighted
second derivative is

    sum_j r_j d2 log w_j / dg_k dg_l = -t_k t_l (1{k=l} w_k - w_k w_l)
                                       - 1{k=l} q_k (1 - q_k) (r_k - w_k)    (sigmoid gate only).

Since every v_j (j >= 1) lives on adapter j's own coordinates (g_j, z_j, rho_j), as
L_j = [t_j, score_j] (the constant -t w of every v_j drops out of the covariance), the Hessian
of log p is block-diagonal-by-adapter plus two rank-one terms:

    blockdiag_j( r_j (L_j L_j^T + [[0, 0], [0, hess log f_j]]) + d_j e_g e_g^T )
      - vbar vbar^T + (t w)(t w)^T on the gate block,

with vbar = [r t | r score] and d_j = -t_j^2 w_j - (sigmoid gate) q_j (1 - q_j) (r_j - w_j);
the gradient is [t (r - w) | r score]. Scores and Hessians of log f in an adapter's predictors
(a = a(z), mean = s a + b, e = y - mean):

  categorical (z_r, reference class logit 0, pi = softmax of the logits, Y = one-hot(y)):
    d/dz_r = (Y_r - pi_r) s a'_r
    d2/dz_r dz_q = -s^2 a'_r a'_q pi_r (1{r=q} - pi_q) + 1{r=q} (Y_r - pi_r) s a''_r
  gaussian (z, rho = log nu, k = exp(-rho)):
    d/dz = k e s a',  d/drho = (k e^2 - 1) / 2
    d2/dz2 = k s (e a'' - s a'^2),  d2/dz drho = -k e s a',  d2/drho2 = -k e^2 / 2
  laplace (variance nu, c = 1 / scale = sqrt(2) exp(-rho / 2), sg = sign(e), +1 at 0 as JAX's
  derivative of |.| gives it):
    d/dz = c sg s a',  d/drho = (c |e| - 1) / 2
    d2/dz2 = c sg s a'',  d2/dz drho = -c sg s a' / 2,  d2/drho2 = -c |e| / 4

Everything is row-vectorised broadcasting in log space (log-sigmoid, max-shifted exponentials
shared between values and probabilities); no per-row autodiff. a, a', a'' come from
`moejax.experts.activation_derivs`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from moejax.estimation.objective import RowFns
from moejax.experts import activation_derivs, resolve_activation
from moejax.mix.density import _LOG_2PI, split_predictors
from moejax.mix.spec import MixSpec

_LOG_HALF = math.log(0.5)
_LOG_2 = math.log(2.0)
_SQRT_2 = math.sqrt(2.0)


def _logaddexp(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(log(e^a + e^b), e^a / (e^a + e^b), e^b / (e^a + e^b)) from one exp and one log1p."""
    D = b - a
    E = jnp.exp(-jnp.abs(D))
    inv = 1.0 / (1.0 + E)
    pos = D >= 0
    return (
        jnp.maximum(a, b) + jnp.log1p(E),
        jnp.where(pos, E * inv, inv),
        jnp.where(pos, inv, E * inv),
    )


def _gate(gate: str, g: jax.Array):
    """Gate pieces from logits g (n, m): log w_0 (n,), log w_1..m (n, m), w_1..m (n, m),
    and q = sigmoid(-g) (n, m) for the sigmoid gate (None otherwise)."""
    if gate == "sigmoid":
        E = jnp.exp(-jnp.abs(g))
        inv = 1.0 / (1.0 + E)
        pos = g >= 0
        sg = jnp.where(pos, inv, E * inv)  # sigmoid(g)
        q = jnp.where(pos, E * inv, inv)  # sigmoid(-g)
        lv = -(jnp.maximum(-g, 0.0) + jnp.log1p(E))  # log sigmoid(g)
        S = 0.5 + jnp.sum(sg, axis=-1)  # in [1/2, m + 1/2]: no overflow or underflow
        logS = jnp.log(S)
        return _LOG_HALF - logS, lv - logS[:, None], sg / S[:, None], q
    if g.shape[-1] == 1:  # softmax over (0, g): log w_1 = log sigmoid(g)
        lse, _, w1 = _logaddexp(jnp.zeros_like(g[:, 0]), g[:, 0])
        return -lse, g - lse[:, None], w1[:, None], None
    M = jnp.maximum(jnp.max(g, axis=-1), 0.0)  # softmax over (0, g_1, .., g_m)
    eg = jnp.exp(g - M[:, None])
    S = jnp.exp(-M) + jnp.sum(eg, axis=-1)
    lS = M + jnp.log(S)
    return -lS, g - lS[:, None], eg / S[:, None], None


def _categorical(spec: MixSpec, Z: jax.Array, y: jax.Array, need: int):
    """log f (n, m) and, when need >= 1, score (n, m, R) and (need 2) Hessian (n, m, R, R)."""
    ex_ = spec.adapter
    n, m, R = Z.shape
    if m == 1:
        Z = Z[:, 0]  # (n, R): XLA's CPU code is faster on 2-D rows than on (n, 1, R)
    if need == 0:
        a = resolve_activation(ex_.activation)(Z)
    else:
        a, a1, a2 = activation_derivs(ex_, Z)
    h = ex_.logits_from_activation(a)  # (n, [m,] K)
    hm = jnp.max(h, axis=-1, keepdims=True)
    ex = jnp.exp(h - hm)
    den = jnp.sum(ex, axis=-1)
    Y = jax.nn.one_hot(y.astype(jnp.int32), h.shape[-1], dtype=h.dtype)
    if m > 1:
        Y = Y[:, None, :]
    lf = (jnp.sum(Y * (h - hm), axis=-1) - jnp.log(den)).reshape(n, m)
    if need == 0:
        return lf, None, None
    pi = ex[..., :R] / den[..., None]
    D = Y[..., :R] - pi
    sa1 = ex_.scale * a1
    score = D * sa1
    if need == 1:
        return lf, score.reshape(n, m, R), None
    eye = jnp.eye(R, dtype=Z.dtype)
    pa = pi * sa1
    H = -(pa[..., :, None] * (eye * sa1[..., None, :] - pa[..., None, :]))
    H = H + eye * (D * ex_.scale * a2)[..., :, None]
    return lf, score.reshape(n, m, R), H.reshape(n, m, R, R)


def _regression(spec: MixSpec, Z: jax.Array, rho: jax.Array, y: jax.Array, need: int):
    """log f (n, m) and, when need >= 1, score (n, m, 2) in (z, rho) and (need 2) the Hessian
    (n, m, 2, 2)."""
    ex_ = spec.adapter
    z = Z[..., 0]
    if need == 0:
        a = resolve_activation(ex_.activation)(z)
    else:
        a, a1, a2 = activation_derivs(ex_, z)
    s = ex_.scale
    mean = s * a if ex_.bias is None else s * a + ex_.bias[0]
    e = y[:, None] - mean
    if spec.likelihood == "gaussian":
        k = jnp.exp(-rho)
        e2k = e * e * k
        lf = -0.5 * (_LOG_2PI + rho + e2k)
        if need == 0:
            return lf, None, None
        sz = k * e * s * a1
        score = jnp.stack([sz, 0.5 * (e2k - 1.0)], axis=-1)
        if need == 1:
            return lf, score, None
        hzz = k * s * (e * a2 - s * a1 * a1)
        hzr, hrr = -sz, -0.5 * e2k
    else:
        c = _SQRT_2 * jnp.exp(-0.5 * rho)  # 1 / Laplace scale
        ac = jnp.abs(e) * c
        lf = -0.5 * (_LOG_2 + rho) - ac
        if need == 0:
            return lf, None, None
        csg = jnp.where(e >= 0, c, -c) * s
        sz = csg * a1
        score = jnp.stack([sz, 0.5 * (ac - 1.0)], axis=-1)
        if need == 1:
            return lf, score, None
        hzz, hzr, hrr = csg * a2, -0.5 * sz, -0.25 * ac
    H = jnp.stack([jnp.stack([hzz, hzr], -1), jnp.stack([hzr, hrr], -1)], -2)
    return lf, score, H


def _core(spec: MixSpec, U: jax.Array, aux, need: int):
    """(value, gradient, Hessian, posteriors) of phi, up to order ``need`` (gradient and Hessian
    None above it); need = -1: only the posteriors."""
    y, lf0 = aux
    n, m = U.shape[0], spec.m
    g, Z, rho = split_predictors(spec, U)
    lw0, lw, w, q = _gate(spec.gate, g)
    order = max(need, 0)
    if spec.regression:
        lf, score, Hl = _regression(spec, Z, rho, y, order)
    else:
        lf, score, Hl = _categorical(spec, Z, y, order)
    lj0 = lw0 + lf0
    lj = lw + lf  # (n, m)
    if m == 1:  # (the unused outputs are dropped under jit)
        lse, r0, r1 = _logaddexp(lj0, lj[:, 0])
        value, r = -lse, r1[:, None]
    else:
        M = jnp.maximum(lj0, jnp.max(lj, axis=-1))
        el = jnp.exp(lj - M[:, None])
        e0 = jnp.exp(lj0 - M)
        S = e0 + jnp.sum(el, axis=-1)
        value, r = -(M + jnp.log(S)), el / S[:, None]  # r: the adapters' posteriors
        r0 = e0 / S
    if need == 0:
        return value, None, None, None
    if need < 0:
        return None, None, None, jnp.concatenate([r0[:, None], r], axis=-1)
    t = jnp.ones_like(g) if q is None else q
    tr, tw = t * r, t * w
    rs = r[..., None] * score  # (n, m, P): r_j score_j
    # Segments of U (each adapter-major): gate, z (R per adapter), rho (regression).
    R = spec.R
    sz = [slice(0, R)] + ([slice(R, R + 1)] if spec.regression else [])
    vbar = [tr[..., None]] + [rs[..., sl] for sl in sz]  # sum_j r_j v_j (+ t w on the gate)
    grad = jnp.concatenate([tw - tr] + [-v.reshape(n, -1) for v in vbar[1:]], axis=-1)
    if need == 1:
        return value, grad, None, None
    # Hessian of log p = blockdiag_j(B_j) - vbar vbar^T + (t w)(t w)^T on the gate block, with
    # B_j = r_j (L_j L_j^T + hess log f_j) + d_j on (g_j, g_j), L_j = [t_j, score_j].
    d = tr * t - t * tw
    if q is not None:
        d = d - q * (1.0 - q) * (r - w)
    rsh = rs[..., :, None] * score[..., None, :] + r[..., None, None] * Hl  # (n, m, P, P)
    local = [[d[..., None, None]] + [(rs[..., sl] * t[..., None])[..., None, :] for sl in sz]]
    for si in sz:
        local.append([rs[..., si, None] * t[..., None, None]] + [rsh[..., si, sj] for sj in sz])
    eye = None if m == 1 else jnp.eye(m, dtype=U.dtype)[:, None, :, None]
    rows = []
    for i, vi in enumerate(vbar):
        row = []
        for j, vj in enumerate(vbar):
            Bij = local[i][j]  # (n, m, k_i, k_j)
            ki, kj = Bij.shape[-2], Bij.shape[-1]
            if eye is None:
                blk = Bij[:, 0] - vi[:, 0, :, None] * vj[:, 0, None, :]
            else:
                blk = Bij[:, :, :, None, :] * eye - vi[:, :, :, None, None] * vj[:, None, None]
                blk = blk.reshape(n, m * ki, m * kj)
            if i == 0 and j == 0:
                blk = blk + tw[:, :, None] * tw[:, None, :]
            row.append(blk)
        rows.append(jnp.concatenate(row, axis=-1))
    return value, grad, -jnp.concatenate(rows, axis=-2), None


def mixture_row_fns(spec: MixSpec) -> RowFns:
    """RowFns of phi(U, aux) = -row_loglik(spec, U, y, lf0) per row, aux = (y (n,), lf0 (n,)):
    y holds labels (any integer-valued dtype) for categorical experts or real responses, lf0 the
    frozen expert's log-density of each row. Shapes (n,), (n, W), (n, W, W)."""
    return RowFns(
        value=lambda U, aux: _core(spec, U, aux, 0)[0],
        value_grad=lambda U, aux: _core(spec, U, aux, 1)[:2],
        value_grad_hess=lambda U, aux: _core(spec, U, aux, 2)[:3],
    )


def posteriors(spec: MixSpec, U: jax.Array, y: jax.Array, lf0: jax.Array) -> jax.Array:
    """Component posteriors r_j = softmax_j(log w_j + log f_j), (n, m+1), column 0 the frozen
    expert (max-shifted log space; same as `moejax.mix.responsibilities` on predictors U)."""
    return _core(spec, U, (y, lf0), -1)[3]

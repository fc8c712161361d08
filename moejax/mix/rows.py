"""Closed-form row derivatives of the general mixture's negative log-likelihood in its linear
predictors, for every gate, likelihood and m, in the *rows-last* layout of the fused pass.

Layout. Every per-row quantity is an array whose leading axes are small and static (predictor,
adapter, class) and whose trailing axes ``S`` are the rows (``(B,)`` for one lane's block of B
rows, ``(G, B)`` once a kernel is vmapped over G lanes): U is (W, *S) with the predictor order of
`moejax.mix.density` (gate logits, adapter-major expert predictors, log-variances). The value is
(*S,), the gradient (W, *S) and the Hessian is *packed*: its W (W + 1) / 2 upper-triangle
entries (a <= b, row-major; `packed_index`) as (W (W + 1) / 2, *S). All arithmetic is elementwise
on planes of rows, so XLA vectorises along the rows (the minor axis), never along a tiny axis,
and nothing per row is a small matrix.

Per row, with components j = 0 (frozen) .. m, l_j = log w_j(g) + log f_j, r = softmax(l) and
v_j = grad_u l_j:

    log p = logsumexp(l),  grad log p = sum_j r_j v_j,
    hess log p = sum_j r_j hess(l_j) + sum_j r_j v_j v_j^T - vbar vbar^T    (vbar = sum_j r_j v_j)

and phi = -log p. The gate Jacobian is d log w_j / d g_k = t_k (1{j=k} - w_k), with t = 1 for
the softmax and input-free gates and t_k = q_k = sigmoid(-g_k) for the sigmoid gate (log w =
lv - logsumexp(lv), lv_0 = log 1/2, lv_k = log sigmoid(g_k), d lv_k / d g_k = q_k). Since every
v_j (j >= 1) lives on adapter j's own coordinates (g_j, z_j, rho_j) as L_j = [t_j, score_j]
(the constant -t w of every v_j drops out of the covariance), the Hessian of log p is

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

Sums over the small axes are written as explicit additions of planes (`_sum0`, `_max0`), so that
no reduction over a tiny axis splits XLA's elementwise fusions. a, a', a'' come from
`moejax.experts.activation_derivs`.
"""

from __future__ import annotations

import math
from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np

from moejax.experts import activation_derivs, resolve_activation
from moejax.mix.density import _gate, gate_params, n_gate_preds
from moejax.mix.gates import _logaddexp, _max0, _sum0, get_gate
from moejax.mix.likelihoods import get_likelihood
from moejax.mix.rowfns import RowFns, packed_index
from moejax.mix.spec import MixSpec

_LOG_HALF = math.log(0.5)


def unpack_symmetric(packed: jax.Array, W: int) -> jax.Array:
    """(W (W + 1) / 2, *S) packed entries -> the full (W, W, *S) symmetric matrices."""
    return jnp.asarray(packed)[packed_index(W)]


def _lead(v: jax.Array, ndim: int) -> jax.Array:
    """A (k,) constant shaped (k, 1, ..., 1) to broadcast against (k, *S) with len(S) = ndim."""
    return jnp.reshape(jnp.asarray(v), (-1,) + (1,) * ndim)


def _categorical(spec: MixSpec, Z: jax.Array, y: jax.Array, need: int):
    """log f (m, *S) and, when need >= 1, score (m, R, *S) and (need 2) the Hessian
    (m, R, R, *S), for predictors Z (m, R, *S) and labels y (*S)."""
    ex_ = spec.adapter
    R = Z.shape[1]
    nd = Z.ndim - 2
    if need == 0:
        a = resolve_activation(ex_.activation)(Z)
    else:
        a, a1, a2 = activation_derivs(ex_, Z)
    h = ex_.scale * a
    if ex_.bias is not None:
        h = h + _lead(np.asarray(ex_.bias), nd)
    hm = jnp.maximum(reduce(jnp.maximum, [h[:, k] for k in range(R)]), 0.0)  # (m, *S)
    ex = jnp.exp(h - hm[:, None])  # (the reference logit is 0)
    den = jnp.exp(-hm) + reduce(jnp.add, [ex[:, k] for k in range(R)])
    yi = y.astype(jnp.int32)
    Y = jnp.stack([yi == k for k in range(R)])  # (R, *S) bool; y = K - 1 is the reference
    hy = reduce(jnp.add, [jnp.where(Y[k], h[:, k], 0.0) for k in range(R)])  # (m, *S): h_y
    lf = hy - hm - jnp.log(den)
    if need == 0:
        return lf, None, None
    pi = ex / den[:, None]
    D = jnp.where(Y, 1.0, 0.0) - pi
    sa1 = ex_.scale * a1
    score = D * sa1
    if need == 1:
        return lf, score, None
    pa = pi * sa1
    eye = jnp.asarray(np.eye(R).reshape((R, R) + (1,) * nd))
    H = -(pa[:, :, None] * (eye * sa1[:, None, :] - pa[:, None, :]))
    H = H + eye * (D * ex_.scale * a2)[:, :, None]
    return lf, score, H


def _regression(spec: MixSpec, Z: jax.Array, rho: jax.Array, y: jax.Array, need: int):
    """log f (m, *S) and, when need >= 1, score (m, 2, *S) in (z, rho) and (need 2) the Hessian
    (m, 2, 2, *S), for predictors Z (m, 1, *S), log-variances rho (m, *S), responses y (*S)."""
    ex_ = spec.adapter
    z = Z[:, 0]
    if need == 0:
        a = resolve_activation(ex_.activation)(z)
    else:
        a, a1, a2 = activation_derivs(ex_, z)
    s = ex_.scale
    mean = s * a if ex_.bias is None else s * a + ex_.bias[0]
    e = y - mean
    lf, score, hp = get_likelihood(spec.likelihood).rows(
        e, rho, s, None if need == 0 else a1, None if need == 0 else a2, need
    )
    if hp is None:
        return lf, score, None
    hzz, hzr, hrr = hp
    H = jnp.stack([jnp.stack([hzz, hzr], 1), jnp.stack([hzr, hrr], 1)], 1)
    return lf, score, H


def split_rows(spec: MixSpec, U: jax.Array, G: int | None = None):
    """U (W, *S) -> (g (m_g, *S), Z (m, R, *S), log_nu (m, *S) or None); m_g =
    ``spec.n_gates`` (m, or m - 1 in the plain MoE)."""
    m, R = spec.m, spec.R
    ng = n_gate_preds(spec) if G is None else G  # G = n_gates: U's gate block is the logits
    g = U[:ng]
    if ng != spec.n_gates:  # predictors -> logits (the Laplace gate)
        g = get_gate(spec.gate).logits(g)
    Z = U[ng : ng + m * R].reshape((m, R, *U.shape[1:]))
    rho = U[ng + m * R :] if spec.regression else None
    return g, Z, rho


def predictor_planes(spec: MixSpec, params, X: jax.Array) -> jax.Array:
    """U (W, n) for covariate planes X (d, n): `moejax.mix.density.predictors`, rows last."""
    beta, tau = gate_params(spec, params)
    gate = get_gate(spec.gate)
    g = gate.predictor_block(beta, tau, X) if gate.n_pred > 1 else beta @ X + tau[:, None]
    Z = jnp.einsum("mrd,dn->mrn", params.eta[..., : spec.d], X)
    if spec.expert_intercept:
        Z = Z + params.eta[..., spec.d, None]
    Z = Z.reshape(spec.m * spec.R, X.shape[-1])
    parts = [g, Z]
    if spec.regression:
        parts.append(jnp.broadcast_to(jnp.log(params.nu)[:, None], (spec.m, X.shape[-1])))
    return jnp.concatenate(parts, axis=0)


def adapter_logpdfs_rows(
    spec: MixSpec, U: jax.Array, y: jax.Array, need: int, G: int | None = None
):
    """(log f (m, *S), score (m, Q, *S), Hessian (m, Q, Q, *S)) of every adapter, up to order
    ``need`` (Q = R for categorical experts, 2 = (z, rho) for regression)."""
    _, Z, rho = split_rows(spec, U, G)
    if spec.regression:
        return _regression(spec, Z, rho, y, need)
    return _categorical(spec, Z, y, need)


def _coords(spec: MixSpec) -> list[tuple[int, int]]:
    """For each coordinate of U: (component c, local index l) in L_c = [gate, score_1 ..
    score_Q]. Components: c = 0 the gate's reference (the frozen expert, which has no
    coordinates, or the plain MoE's expert 0, which has no gate coordinate), c >= 1 the gated
    ones; the gate logit of c is g_{c-1}, its expert `_expert(spec, c)`."""
    m, R, ng = spec.m, spec.R, spec.n_gates
    first = 0 if spec.plain else 1  # the component of expert 0
    out = [(k + 1, 0) for k in range(ng)]
    out += [(e + first, 1 + r) for e in range(m) for r in range(R)]
    if spec.regression:
        out += [(e + first, 1 + R) for e in range(m)]
    return out


def _expert(spec: MixSpec, c: int) -> int:
    """The expert (row of the parameters) of component c."""
    return c if spec.plain else c - 1


def _core(spec: MixSpec, U: jax.Array, aux, need: int):
    """(value, gradient, packed Hessian, posteriors) of phi, up to order ``need`` (gradient and
    Hessian None above it); need = -1: only the posteriors (m + 1, *S)."""
    y, lf0 = aux
    ng = spec.n_gates
    g = U[:ng]
    lw0, lw, w, q = _gate(spec.gate, g)
    lf, score, Hl = adapter_logpdfs_rows(spec, U, y, max(need, 0), ng)
    if spec.plain:  # expert 0 is the reference component
        lj0, lj = lw0 + lf[0], lw + lf[1:]
    else:
        lj0, lj = lw0 + lf0, lw + lf  # (m, *S)
    if ng == 1:
        lse, r0, r1 = _logaddexp(lj0, lj[0])
        value, r = -lse, r1[None]
    else:
        M = jnp.maximum(lj0, _max0(lj))
        el = jnp.exp(lj - M)
        e0 = jnp.exp(lj0 - M)
        S = e0 + _sum0(el)
        value, r = -(M + jnp.log(S)), el / S  # r: the gated components' posteriors
        r0 = e0 / S
    if need == 0:
        return value, None, None, None
    if need < 0:
        return None, None, None, jnp.concatenate([r0[None], r], axis=0)
    t = jnp.ones_like(g) if q is None else q
    tr, tw = t * r, t * w
    rx = jnp.concatenate([r0[None], r], axis=0) if spec.plain else r  # the experts' posteriors
    rs = rx[:, None] * score  # (m, Q, *S): r_j score_j
    coords = _coords(spec)
    ex = lambda c: _expert(spec, c)

    def vbar(c, k):  # sum_c r_c v_c on coordinate (c, local index k)
        return tr[c - 1] if k == 0 else rs[ex(c), k - 1]

    grad = [tw[c - 1] - tr[c - 1] if k == 0 else -rs[ex(c), k - 1] for c, k in coords]
    if need == 1:
        return value, grad, None, None
    d = tr * t - t * tw
    if q is not None:
        d = d - q * (1.0 - q) * (r - w)
    H = []
    W = len(coords)
    for a in range(W):
        ja, la = coords[a]
        for b in range(a, W):
            jb, lb = coords[b]
            h = -vbar(ja, la) * vbar(jb, lb)
            if la == 0 and lb == 0:
                h = h + tw[ja - 1] * tw[jb - 1]
            if ja == jb:  # component j's own block B_j
                e = ex(ja)
                if la == 0 and lb == 0:
                    h = h + d[ja - 1]
                elif la == 0 or lb == 0:
                    h = h + rs[e, max(la, lb) - 1] * t[ja - 1]
                else:
                    ia, ib = la - 1, lb - 1
                    h = h + rs[e, ia] * score[e, ib] + rx[e] * Hl[e, ia, ib]
            H.append(-h)
    return value, grad, H, None


def mixture_row_fns(spec: MixSpec) -> RowFns:
    """RowFns of phi(U, aux) = -row_loglik(spec, U, y, lf0) per row in the rows-last layout:
    U (W, *S), aux = (y (*S), lf0 (*S)) with y labels (any integer-valued dtype) for categorical
    experts or real responses, lf0 the frozen expert's log-density of each row. Outputs: value
    (*S), gradient (W, *S), packed Hessian (W (W + 1) / 2, *S) (see `packed_index`). A gate
    whose logits are functions of several predictors (the Laplace gate) gets the logits' rows
    carried to its predictors by the chain rule (`gate_chain`)."""
    core = lambda U, aux, need: _core(spec, U, aux, need)
    if n_gate_preds(spec) != spec.n_gates:
        core = gate_chain(spec, core, n_gate_preds(spec))
    return RowFns(
        value=lambda U, aux: core(U, aux, 0)[0],
        value_grad=lambda U, aux: core(U, aux, 1)[:2],
        value_grad_hess=lambda U, aux: core(U, aux, 2)[:3],
    )  # (gradient and Hessian as lists of planes: the fused pass stacks them once)


def gate_chain(spec: MixSpec, core, G: int):
    """``core(U, aux, need)`` of rows written in the gate logits g (the first m_g coordinates
    of U) carried to the gate's predictors P (the first G = n_pred m_g coordinates, predictor
    major), g_k = logits(P)_k: grad_P = grad_g dg/dP, and the Hessian
    H_P = dg/dP^T H_g dg/dP + grad_g d2g/dq2 on the first predictor's diagonal (the gate's
    `chain`: the other predictors enter linearly)."""
    gate, ng = get_gate(spec.gate), spec.n_gates

    def wrapped(U, aux, need):
        P = U[:G]
        Ug = jnp.concatenate([gate.logits(P), U[G:]], axis=0)
        out = core(Ug, aux, need)
        if need <= 0:
            return out
        value, grad, H = out[0], out[1], out[2]
        dg, d2 = gate.chain(P)
        W = U.shape[0]
        shift = G - ng

        def src(a):  # (coordinate of Ug, factor or None for 1, curvature flag)
            if a < G:
                p, k = divmod(a, ng)
                return k, dg[p][k], p == 0
            return a - shift, None, False

        gmap = [src(a) for a in range(W)]
        mul = lambda x, f: x if f is None else x * f
        new_grad = [mul(grad[ga], fa) for ga, fa, _ in gmap]
        if need == 1:
            return (value, new_grad, *out[2:])
        pg = packed_index(W - shift)
        new_H = []
        for a in range(W):
            ga, fa, ca = gmap[a]
            for b in range(a, W):
                gb, fb, _ = gmap[b]
                h = mul(mul(H[pg[ga, gb]], fa), fb)
                if a == b and ca:
                    h = h + grad[ga] * d2[ga]
                new_H.append(h)
        return (value, new_grad, new_H, *out[3:])

    return wrapped


def posteriors(spec: MixSpec, U: jax.Array, y: jax.Array, lf0: jax.Array) -> jax.Array:
    """Component posteriors r_j = softmax_j(log w_j + log f_j), (m + 1, *S), row 0 the frozen
    expert (the plain MoE: (m, *S), its experts), from predictors U (W, *S) (max-shifted log
    space; the same as `moejax.mix.responsibilities`, transposed)."""
    G = n_gate_preds(spec)
    if G != spec.n_gates:  # the gate's predictors -> its logits
        U = jnp.concatenate([get_gate(spec.gate).logits(U[:G]), U[G:]], axis=0)
    return _core(spec, U, (y, lf0), -1)[3]


__all__ = [
    "adapter_logpdfs_rows",
    "mixture_row_fns",
    "packed_index",
    "posteriors",
    "predictor_planes",
    "split_rows",
    "unpack_symmetric",
]

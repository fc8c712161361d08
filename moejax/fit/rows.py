"""Closed-form row derivatives of the mixture's negative log-likelihood in its linear predictors.

Per row, with gate logit g = beta . x + tau and adapter predictors z_k = eta_k . x (k < K-1):

    phi(g, z) = -log[(1 - sigma(g)) p0_y + sigma(g) softmax(h(z))_y],   h_k = s a(z_k) + b_k.

With r = posterior weight of the adapter, pi = softmax(h), D_k = 1{y = k} - pi_k and
e_k = D_k s a'(z_k):

    dphi/dg   = sigma(g) - r              dphi/dz_k = -r e_k
    d2phi/dg2 = sigma(g) sigma(-g) - r (1 - r)
    d2phi/dg dz_k = -r (1 - r) e_k
    d2phi/dz_j dz_k = -r (1 - r) e_j e_k + r s^2 a'_j a'_k pi_j (1{j=k} - pi_k)
                      - 1{j=k} r D_j s a''(z_j)

All arrays are row-vectorised (no per-row autodiff), in log space where it matters. a' and a''
come from `moejax.experts.activation_derivs` (closed forms for the built-ins, forward-mode
autodiff for user activations).
Tests check these against autodiff of the same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from moejax.experts import Expert, activation_derivs, resolve_activation
from moejax.fit.objective import RowFns


def mixture_rows(adapter: Expert) -> RowFns:
    """RowFns for U (n, K) = [g, z_1..z_{K-1}] and aux = (y (n,) integer labels, lp0y (n,)
    the frozen expert's log-probability of each observed label)."""
    s = adapter.scale

    def core(U, aux, need):
        y, lp0y = aux
        Y1 = jax.nn.one_hot(y, U.shape[1], dtype=U.dtype)
        g, Z = U[:, 0], U[:, 1:]
        if need == 0:
            a = resolve_activation(adapter.activation)(Z)
            a1 = a2 = None
        else:
            a, a1, a2 = activation_derivs(adapter, Z)
        # Shared exponentials (11 transcendentals a row for K = 3 instead of ~18): one softmax
        # pass gives log-probabilities and probabilities; one softplus gives log sigma(+-g);
        # one exp(-|D|) gives both the log-likelihood and the posterior r.
        h = adapter.logits_from_activation(a)
        hm = jnp.max(h, axis=-1, keepdims=True)
        ex = jnp.exp(h - hm)
        den = jnp.sum(ex, axis=-1, keepdims=True)
        lsm_y = jnp.sum(Y1 * (h - hm), axis=-1) - jnp.log(den[:, 0])
        ls_pos = -(jnp.maximum(-g, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(g))))  # log sigma(g)
        A0 = ls_pos - g + lp0y  # log sigma(-g) = log sigma(g) - g
        A1 = ls_pos + lsm_y
        Dl = A1 - A0
        el = jnp.exp(-jnp.abs(Dl))
        v = -(jnp.maximum(A0, A1) + jnp.log1p(el))
        if need == 0:
            return v, None, None
        r = jnp.where(Dl >= 0, 1.0 / (1.0 + el), el / (1.0 + el))  # sigma(A1 - A0)
        pi = ex[:, :-1] / den
        D = Y1[:, :-1] - pi
        sa1 = s * a1
        e = D * sa1
        sg = jnp.exp(ls_pos)
        G = jnp.concatenate([(sg - r)[:, None], -r[:, None] * e], axis=1)
        if need == 1:
            return v, G, None
        rr = r * (1 - r)
        hgg = sg * (1.0 - sg) - rr
        hgz = -rr[:, None] * e
        outer = sa1[:, :, None] * sa1[:, None, :] * pi[:, :, None]
        eye = jnp.eye(Z.shape[1], dtype=U.dtype)
        hzz = (
            -rr[:, None, None] * e[:, :, None] * e[:, None, :]
            + r[:, None, None] * outer * (eye - pi[:, None, :])
            - eye * (r[:, None] * D * s * a2)[:, :, None]
        )
        top = jnp.concatenate([hgg[:, None, None], hgz[:, None, :]], axis=2)
        bottom = jnp.concatenate([hgz[:, :, None], hzz], axis=2)
        return v, G, jnp.concatenate([top, bottom], axis=1)

    return RowFns(
        value=lambda U, aux: core(U, aux, 0)[0],
        value_grad=lambda U, aux: core(U, aux, 1)[:2],
        value_grad_hess=lambda U, aux: core(U, aux, 2),
    )

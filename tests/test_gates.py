"""The gate objects (`moejax.mix.gates`): one registry, and each gate's row pieces agree with
its log weights (the rows and the EM M-step are written in the pieces)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moejax.mix import MixSpec
from moejax.mix.gates import GATES, get_gate

jax.config.update("jax_enable_x64", True)


def test_every_gate_is_registered_once_and_unknown_names_are_refused() -> None:
    assert GATES == ("softmax", "input_free", "sigmoid", "laplace")
    assert [get_gate(g).name for g in GATES] == list(GATES)
    with pytest.raises(ValueError, match="gate: unknown gate 'cosine'; choose one of"):
        get_gate("cosine")
    with pytest.raises(ValueError, match="gate: unknown gate"):
        MixSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), gate="cosine")


@pytest.mark.parametrize("name", GATES)
@pytest.mark.parametrize("m", [1, 3])
def test_pieces_agree_with_the_log_weights(name: str, m: int) -> None:
    """log w_0, log w_1..m and w_1..m of `pieces` (rows last) are the columns of
    `log_weights` (rows first) to rounding, the weights sum to 1, and q is the derivative of
    the unnormalised log weight (sigmoid: sigmoid(-g); softmax: none)."""
    gate = get_gate(name)
    g = jnp.asarray(np.random.default_rng(m).normal(scale=6.0, size=(50, m)))
    lw = np.asarray(gate.log_weights(g))
    lw0, lwa, w, q = gate.pieces(g.T)
    np.testing.assert_allclose(np.exp(lw).sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(lw0), lw[:, 0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(lwa).T, lw[:, 1:], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(w).T, np.exp(lw[:, 1:]), rtol=1e-13, atol=1e-300)
    if name == "sigmoid":
        np.testing.assert_allclose(np.asarray(q).T, 1.0 / (1.0 + np.exp(g)), rtol=1e-13)
    else:
        assert q is None
    assert gate.width(4) == (5 if gate.has_beta else 1)
    assert gate.has_beta == (name != "input_free")
    if name != "laplace":  # a gate of one linear predictor per logit: the logits themselves
        assert gate.n_pred == 1 and gate.logits(g) is g and gate.chain(g) is None


def test_laplace_gate_predictors_logits_and_chain() -> None:
    """The Laplace gate's two predictors per logit: q = ||x - W||^2 and t = tau from
    `predictor_block` (rows last), the logits tau - ||x - W|| against NumPy, q as the linear
    predictor of `lin_coefs` over [||x||^2, x, 1], and `chain` against autodiff of `logits`."""
    gate = get_gate("laplace")
    rng = np.random.default_rng(3)
    W, tau, X = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=(25, 4))
    P = gate.predictor_block(jnp.asarray(W), jnp.asarray(tau), jnp.asarray(X.T))
    want = tau - np.linalg.norm(X[:, None, :] - W[None], axis=-1)
    np.testing.assert_allclose(np.asarray(gate.logits(P)).T, want, rtol=1e-12)
    planes = np.concatenate([np.sum(X * X, 1)[:, None], X, np.ones((25, 1))], axis=1)
    q, t = gate.lin_coefs(jnp.asarray(W), jnp.asarray(tau))
    np.testing.assert_allclose(planes @ np.asarray(q).T, np.asarray(P[:3]).T, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(t)[:, 0], tau)
    assert gate.lin_layout(4) == [(6, 0), (1, 5)] and gate.n_pred == 2 and gate.sq_norm
    (dq, dt), d2 = gate.chain(P)
    one = lambda qq, tt: gate.logits(jnp.stack([qq, tt]))[0]
    for i in range(3):
        gq = jax.grad(one)(P[i, 0], P[3 + i, 0])
        hq = jax.grad(jax.grad(one))(P[i, 0], P[3 + i, 0])
        np.testing.assert_allclose([dq[i, 0], dt[i, 0], d2[i, 0]], [gq, 1.0, hq], rtol=1e-12)


def test_every_likelihood_is_registered_once_and_unknown_names_are_refused() -> None:
    from moejax.mix.likelihoods import LIKELIHOODS, REGRESSION, get_likelihood

    assert LIKELIHOODS == ("categorical", "gaussian", "laplace")
    assert REGRESSION == ("gaussian", "laplace")
    assert [get_likelihood(n).predictors(4) for n in LIKELIHOODS] == [3, 1, 1]
    with pytest.raises(ValueError, match="likelihood: unknown likelihood 'poisson'; choose"):
        get_likelihood("poisson")


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_regression_rows_are_the_derivatives_of_the_log_density(name: str) -> None:
    """The likelihood object's row pieces against autodiff of its own log-density, for mean =
    s a(z) with a = tanh: score and Hessian in (z, rho), and the noise has unit variance."""
    from moejax.mix.likelihoods import get_likelihood

    lik, s = get_likelihood(name), 1.7
    rng = np.random.default_rng(0)
    z, rho, y = (jnp.asarray(rng.normal(size=7)) for _ in range(3))

    def lf(z, rho, y):
        return lik.logpdf(y, s * jnp.tanh(z), rho)

    a = jnp.tanh(z)
    a1, a2 = 1 - a**2, -2 * a * (1 - a**2)
    val, score, (hzz, hzr, hrr) = lik.rows(y - s * a, rho, s, a1, a2, 2)
    one = lambda z, rho, y: lf(z, rho, y)
    g = jax.vmap(jax.grad(one, argnums=(0, 1)))(z, rho, y)
    H = jax.vmap(jax.hessian(one, argnums=(0, 1)))(z, rho, y)
    np.testing.assert_allclose(val, lf(z, rho, y), rtol=1e-13)
    np.testing.assert_allclose(jnp.stack([g[0], g[1]], axis=1), score, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hzz, H[0][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hzr, H[0][1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hrr, H[1][1], rtol=1e-12, atol=1e-14)
    noise = lik.noise(jax.random.key(1), (200_000,))
    assert abs(float(jnp.var(noise)) - 1.0) < 0.02  # sd of the variance estimate ~0.003-0.006

"""The closed-form row derivatives (moejax/fit/rows.py) against autodiff of the likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moejax as mj
from moejax.fit import pack, unpack
from moejax.fit.objective import generic_objective, linear_predictor_objective
from moejax.fit.rows import mixture_rows
from moejax.model import _take

# Every built-in activation with a non-zero second derivative, plus a user callable; K = 2..4.
CASES = [
    ("linear", "tanh", 2, 2),
    ("tanh", "gelu", 3, 4),
    ("sigmoid", jnp.sin, 2, 3),
]


@pytest.mark.parametrize(("frozen", "adapter", "d", "K"), CASES)
def test_mixture_rows_match_autodiff(frozen, adapter, d, K):
    rng = np.random.default_rng(d * 10 + K)
    spec = mj.ModelSpec(
        d=d,
        K=K,
        frozen=frozen,
        adapter=adapter,
        eta0=rng.normal(size=(K - 1, d)),
        scale=2.0,
        bias=rng.normal(size=K - 1) * 0.3,
    )
    p = mj.Params(rng.normal(size=d), 0.3, rng.normal(size=(K - 1, d)))
    n = 60
    X, y = mj.sample(jax.random.key(K), spec, p, n)
    w = jnp.asarray(rng.uniform(size=n)).at[:5].set(0.0)  # a few padding rows
    X1 = jnp.concatenate([X, jnp.ones((n, 1))], axis=1)
    lp0y = _take(spec.frozen.log_probs(spec.eta0_array(), X), y)
    widths = (d + 1,) + (d,) * (K - 1)
    obj = linear_predictor_objective(
        mixture_rows(spec.adapter), X1, (jax.nn.one_hot(y, K), lp0y), w, w.sum(), widths
    )
    ref = generic_objective(
        lambda th: -mj.log_likelihood(spec, unpack(spec, th), X, y, w) / w.sum()
    )
    theta = pack(p) + 0.1 * rng.normal(size=spec.n_params)
    # Same function, two derivations, float64: agreement to rounding (1e-12 absolute on
    # quantities of order 1).
    for a, b in zip(obj.value_grad_hess(theta), ref.value_grad_hess(theta), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    v, g = obj.value_and_grad(theta)
    np.testing.assert_allclose(v, ref.value(theta), rtol=1e-12)
    np.testing.assert_allclose(g, ref.value_and_grad(theta)[1], rtol=1e-10, atol=1e-12)

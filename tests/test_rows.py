"""Blocked row sums and blocked sampling (the sweep engine's data path).

The closed-form row derivatives themselves are checked against autodiff in test_rows_mix.py
(every gate x likelihood x m) and test_fit.py (test_linear_predictor_objective_matches_autodiff)."""

import jax
import jax.numpy as jnp
import numpy as np

import moejax as mj
from moejax.estimation import pack
from moejax.model import to_mix


def test_blocked_objective_equals_unblocked():
    """Summing rows block by block over a long padded buffer gives the same value, gradient and
    Hessian as the plain sum over the real rows (only the summation order differs)."""
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.estimation.objective import Blocks

    rng = np.random.default_rng(5)
    spec = mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), scale=3.0)
    p = mj.Params(rng.normal(size=2), 0.2, rng.normal(size=(2, 2)))
    n, size, buffer = 300, 64, 640  # 5 active blocks of 64 in a 10-block buffer
    X, y = mj.sample_blocked(jax.random.key(1), spec, p, n)
    plain = objective(spec, prepare_data(spec, X, y))
    Xp = jnp.zeros((buffer, 2)).at[:n].set(X)
    yp = jnp.zeros((buffer,), jnp.int32).at[:n].set(y)
    wp = (jnp.arange(buffer) < n).astype(jnp.float64)
    blocked = objective(spec, prepare_data(spec, Xp, yp, wp), Blocks(size, jnp.int32(5)))
    theta = pack(spec, to_mix(p))
    for a, b in zip(plain.value_grad_hess(theta), blocked.value_grad_hess(theta), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_sample_blocked_is_prefix_stable():
    spec = mj.ModelSpec(d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]])
    p = mj.Params([0.5, 0.5], 0.0, [[0.0, 1.0]])
    X1, y1 = mj.sample_blocked(jax.random.key(3), spec, p, 100, block=32)
    X2, y2 = mj.sample_blocked(jax.random.key(3), spec, p, 200, block=32)
    np.testing.assert_array_equal(X1, X2[:100])
    np.testing.assert_array_equal(y1, y2[:100])

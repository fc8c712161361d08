"""Bad data are refused at the public boundary, for every model, with a ValueError naming the
argument and before anything is compiled; inside a user's own jit (traced values) a fit on bad
data ends with the named status "bad_data", never "converged"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moejax as mj
from moejax import mix

FACE = mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), scale=3.0)
FACE_P = mj.Params([0.5, 0.5], 0.0, [[0.0, 1.5], [1.5, 0.0]])
TWO = mix.MixSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), adapters=2)
TWO_P = TWO.params(np.eye(2), [0.0, 0.0], [[[0.0, 1.5], [1.5, 0.0]], [[-1.5, 0.0], [0.0, -1.5]]])
REG = mix.MixSpec(d=2, frozen="tanh", adapter="tanh", eta0=[[1.0, 0.0]], likelihood="gaussian")
REG_P = REG.params([[1.0, 0.0]], [0.0], [[[0.0, 1.0]]], [0.5])

N = 40
X0 = np.random.default_rng(0).standard_normal((N, 2))
Y0 = np.arange(N) % 3


def _bad_cases(regression: bool):
    """(name, X, y, weights, the argument the error must name)."""
    y = np.random.default_rng(1).standard_normal(N) if regression else Y0
    Xnan = X0.copy()
    Xnan[3, 1] = np.nan
    cases = [
        ("nan_X", Xnan, y, None, "X"),
        ("n_zero", np.zeros((0, 2)), np.zeros(0), None, "X"),
        ("rows_differ", X0, y[:-1], None, "y"),
        ("wrong_d", np.zeros((N, 3)), y, None, "X"),
        ("negative_weight", X0, y, np.r_[-1.0, np.ones(N - 1)], "weights"),
        ("nan_weight", X0, y, np.r_[np.nan, np.ones(N - 1)], "weights"),
        ("zero_weights", X0, y, np.zeros(N), "weights"),
    ]
    if regression:
        cases.append(("inf_response", X0, np.r_[np.inf, y[1:]], None, "y"))
    else:
        cases += [
            ("label_K", X0, np.r_[3, Y0[1:]], None, "y"),
            ("label_minus_1", X0, np.r_[-1, Y0[1:]], None, "y"),
            ("fractional_label", X0, np.r_[0.5, Y0[1:]], None, "y"),
        ]
    return cases


MODELS = {
    "paper_face": (FACE, FACE_P, mj.fit, mj.log_likelihood),
    "two_adapters": (TWO, TWO_P, mix.fit, mix.log_likelihood),
    "regression": (REG, REG_P, mix.fit, mix.log_likelihood),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_bad_data_raise_a_value_error_naming_the_argument(model: str):
    spec, p, fit, loglik = MODELS[model]
    for name, X, y, w, arg in _bad_cases(spec.regression):
        for fn in (fit, loglik):
            with pytest.raises(ValueError) as exc:
                fn(spec, X, y, p, w) if fn is fit else fn(spec, p, X, y, w)
            msg = str(exc.value)
            assert msg.startswith(f"{arg}:") and "\n" not in msg, (model, name, fn, msg)


@pytest.mark.parametrize("model", list(MODELS))
def test_lists_and_numpy_arrays_are_accepted_alike(model: str):
    spec, p, fit, loglik = MODELS[model]
    y = np.random.default_rng(1).standard_normal(N) if spec.regression else Y0
    a = loglik(spec, p, X0, y)
    b = loglik(spec, p, X0.tolist(), y.tolist())
    assert float(a) == float(b) and np.isfinite(float(a))
    r = fit(spec, X0.tolist(), y.tolist(), p, max_iter=2)
    assert int(r.status) in (mj.CONVERGED, mj.MAX_ITER, mj.STALLED)


def test_padding_rows_may_hold_anything():
    """Rows of weight 0 are padding: NaN covariates and out-of-range labels there are fine."""
    X, y = X0.copy(), Y0.copy()
    X[5] = np.nan
    y[6] = 99
    w = np.ones(N)
    w[[5, 6]] = 0.0
    assert np.isfinite(float(mj.log_likelihood(FACE, FACE_P, X, y, w)))


def test_traced_bad_data_end_with_the_bad_data_status():
    """Inside a user's jit the values are unknown at trace time: the fit runs and says so."""
    y_bad = np.r_[-1, Y0[1:]]

    @jax.jit
    def go(X, y):
        return mj.fit(FACE, X, y, FACE_P)

    bad = go(jnp.asarray(X0), jnp.asarray(y_bad))
    good = go(jnp.asarray(X0), jnp.asarray(Y0))
    assert int(bad.status) == mj.BAD_DATA and not bool(bad.converged)
    assert mj.STATUS_NAMES[int(bad.status)] == "bad_data"
    assert int(good.status) != mj.BAD_DATA

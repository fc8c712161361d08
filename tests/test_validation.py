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


# --- one contract for bad options: the Python face refuses what the command line refuses ---

SMALL_X = np.random.default_rng(2).standard_normal((2, 2))
SMALL_Y = np.array([0, 1])


@pytest.mark.parametrize("model", ["paper_face", "two_adapters", "regression"])
def test_fit_refuses_fewer_rows_than_free_parameters(model: str):
    """n = 2 rows for 7 (14, 6) free parameters: refused naming X, as the CLI refuses the size
    (before: status converged with beta on the box)."""
    spec, p, fit, _ = MODELS[model]
    y = SMALL_Y.astype(float) if spec.regression else SMALL_Y
    with pytest.raises(ValueError, match=rf"^X: 2 rows, below the model's {spec.n_params} free"):
        fit(spec, SMALL_X, y, p)
    # rows of weight 0 are padding: they do not count
    w = np.zeros(N)
    w[:2] = 1.0
    yy = np.random.default_rng(1).standard_normal(N) if spec.regression else Y0
    with pytest.raises(ValueError, match=r"^weights: 2 rows of weight > 0, below"):
        fit(spec, X0, yy, p, w)


def test_fit_multistart_refuses_fewer_rows_than_free_parameters():
    starts = mj.random_inits(jax.random.key(0), FACE, 2)
    with pytest.raises(ValueError, match=r"^X: 2 rows, below the model's 7 free parameters"):
        mj.fit_multistart(FACE, SMALL_X, SMALL_Y, starts)


def test_fit_refuses_too_few_rows_under_jit():
    """The row count is a static shape: refused at trace time inside a user's jit too."""
    with pytest.raises(ValueError, match=r"^X: 2 rows"):
        jax.jit(lambda X, y: mj.fit(FACE, X, y, FACE_P))(jnp.asarray(SMALL_X), SMALL_Y)


BAD_OPTIONS = [
    ({"max_iter": 0}, "max_iter"),
    ({"max_iter": -3}, "max_iter"),
    ({"max_iter": 2.5}, "max_iter"),
    ({"max_iter": True}, "max_iter"),
    ({"method": "em", "inner_max_iter": 0}, "inner_max_iter"),
    ({"inner_max_iter": -1}, "inner_max_iter"),
    ({"tol": -1e-6}, "tol"),
    ({"tol": float("nan")}, "tol"),
    ({"tol": float("inf")}, "tol"),
    ({"tol": "small"}, "tol"),
    ({"solver": mj.estimation.solvers.ProjectedNewton(max_iter=0)}, "max_iter"),
]


@pytest.mark.parametrize(("options", "arg"), BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
@pytest.mark.parametrize("fn", ["fit", "fit_multistart"])
def test_fit_refuses_caps_and_tolerances_that_cannot_work(options, arg, fn):
    """(before: max_iter = 0 returned status nonfinite with loglik -inf)"""
    with pytest.raises(ValueError) as exc:
        if fn == "fit":
            mj.fit(FACE, X0, Y0, FACE_P, **options)
        else:
            mj.fit_multistart(FACE, X0, Y0, mj.random_inits(jax.random.key(0), FACE, 2), **options)
    msg = str(exc.value)
    assert msg.startswith(f"{arg}") and "\n" not in msg, msg


def test_fit_takes_tol_zero_and_one_iteration():
    """The edge of the contract: tol = 0 (EM to its cap) and max_iter = 1 are fine."""
    r = mj.fit(FACE, X0, Y0, FACE_P, method="em", tol=0.0, max_iter=1)
    assert int(r.n_iter) == 1 and np.isfinite(float(r.loglik))


@pytest.mark.parametrize(
    ("estimator", "field"),
    [
        ({"max_iter": 0}, "estimator.max_iter"),
        ({"inner_max_iter": 0}, "estimator.inner_max_iter"),
        ({"tol": -1.0}, "estimator.tol"),
        ({"tol": float("nan")}, "estimator.tol"),
        ({"max_iter": 2.5}, "estimator.max_iter"),
    ],
)
def test_problem_and_simulate_refuse_the_same_options(estimator, field, tmp_path):
    """`problem`, `simulate` (on a config dict) and the config file refuse one field, one line."""
    from moejax.sweep.config import ConfigError

    truth = mj.heterogeneous_truth(FACE, beta=[0.5, 0.5], tau=0.0, eta=FACE_P.eta)
    with pytest.raises(ConfigError, match=rf"^{field} = "):
        mj.problem(FACE, truth, estimator=estimator, sizes=[100])
    raw = {"model": {"d": 2}, "sizes": {"list": [100]}, "estimator": estimator}
    with pytest.raises(ConfigError, match=rf"^{field} = "):
        mj.simulate(raw, progress=False)


def test_problem_and_simulate_refuse_sizes_below_the_free_parameters():
    from moejax.sweep.config import ConfigError

    truth = mj.heterogeneous_truth(FACE, beta=[0.5, 0.5], tau=0.0, eta=FACE_P.eta)
    with pytest.raises(ConfigError, match=r"^sizes = 2: a sample size below the model's 7 free"):
        mj.problem(FACE, truth, sizes=[2, 100])
    prob = mj.problem(FACE, truth, sizes=[100])
    with pytest.raises(ConfigError, match=r"^sizes = 6: a sample size below the model's 7 free"):
        mj.simulate(prob, sizes=[6], progress=False)
    with pytest.raises(ConfigError, match=r"^sizes = 2: a sample size below the model's"):
        mj.simulate({"model": {"d": 2}, "sizes": {"list": [2]}}, progress=False)


# --- labels outside 0..K-1 traced through a user's jit: NaN, never a plausible number ---


def test_traced_bad_labels_give_nan_rows_and_a_nan_total():
    """README: inside a user's jit the densities of a bad row are NaN (before: labels 4, 7, -1,
    100 each gave a row log-density of 0.0, and a label of 7 a finite total)."""
    ld = jax.jit(lambda X, y: mj.log_density(FACE, FACE_P, X, y))
    ll = jax.jit(lambda X, y: mj.log_likelihood(FACE, FACE_P, X, y))
    clean = np.asarray(ld(jnp.asarray(X0), jnp.asarray(Y0)))
    assert np.isfinite(clean).all()
    for bad in (3, 4, 7, -1, 100):
        y = np.r_[bad, Y0[1:]].astype(np.int32)
        rows = np.asarray(ld(jnp.asarray(X0), jnp.asarray(y)))
        assert np.isnan(rows[0]), bad
        np.testing.assert_array_equal(rows[1:], clean[1:])
        assert np.isnan(float(ll(jnp.asarray(X0), jnp.asarray(y)))), bad
    y = np.r_[0.5, Y0[1:]]  # a fractional label (as a float array)
    assert np.isnan(np.asarray(ld(jnp.asarray(X0), jnp.asarray(y)))[0])
    # the mix face, weighted: a bad row of weight > 0 gives NaN, padding rows do not
    two = jax.jit(lambda X, y, w: mix.log_likelihood(TWO, TWO_P, X, y, w))
    y = np.r_[7, Y0[1:]].astype(np.int32)
    w = np.ones(N)
    assert np.isnan(float(two(jnp.asarray(X0), jnp.asarray(y), jnp.asarray(w))))
    w[0] = 0.0
    assert np.isfinite(float(two(jnp.asarray(X0), jnp.asarray(y), jnp.asarray(w))))
    # responsibilities too
    post = jax.jit(lambda X, y: mj.adapter_posterior(FACE, FACE_P, X, y))
    assert np.isnan(np.asarray(post(jnp.asarray(X0), jnp.asarray(np.r_[4, Y0[1:]])))[0])


def test_traced_bad_responses_give_nan_rows():
    ld = jax.jit(lambda X, y: mix.log_density(REG, REG_P, X, y))
    y = np.random.default_rng(1).standard_normal(N)
    y[0] = np.inf
    rows = np.asarray(ld(jnp.asarray(X0), jnp.asarray(y)))
    assert np.isnan(rows[0]) and np.isfinite(rows[1:]).all()

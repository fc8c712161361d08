"""Self-checks of the independent NumPy/SciPy reference (tests/reference_numpy.py)."""

import numpy as np
import pytest
from reference_numpy import (
    ACTIVATIONS,
    RefModel,
    class_probs,
    fit_scipy,
    log_density,
    loglik,
    loglik_and_grad,
    pack,
    sample_numpy,
    unpack,
)
from scipy.special import expit, softmax

ACT_NAMES = ["linear", "tanh", "sigmoid", "gelu", "relu"]


def _random_problem(rng, d, K, n, act, act0, with_bias=True):
    eta0 = rng.standard_normal((K - 1, d))
    model = RefModel(
        d=d,
        K=K,
        eta0=eta0,
        act=act,
        act0=act0,
        scale=1.7,
        scale0=0.8,
        bias=rng.standard_normal(K - 1) if with_bias else None,
        bias0=rng.standard_normal(K - 1) if with_bias else None,
    )
    X = rng.standard_normal((n, d))
    y = rng.integers(0, K, size=n)
    weights = rng.uniform(0.5, 2.0, size=n)
    theta = rng.standard_normal(model.n_params)
    return model, X, y, weights, theta


def _fd_grad(theta, X, y, weights, model, h=1e-6):
    g = np.zeros_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        g[j] = (
            loglik(theta + e, X, y, weights, model) - loglik(theta - e, X, y, weights, model)
        ) / (2 * h)
    return g


def _naive_log_density(X, y, beta, tau, eta, model):
    """log of the explicit mixture sum, straight from the definition."""
    a, _ = ACTIVATIONS[model.act]
    a0, _ = ACTIVATIONS[model.act0]
    n = X.shape[0]
    b = np.zeros(model.K - 1) if model.bias is None else model.bias
    b0 = np.zeros(model.K - 1) if model.bias0 is None else model.bias0
    out = np.empty(n)
    for i in range(n):
        w = 1.0 / (1.0 + np.exp(-(beta @ X[i] + tau)))
        h = np.append(model.scale * a(eta @ X[i]) + b, 0.0)
        h0 = np.append(model.scale0 * a0(model.eta0 @ X[i]) + b0, 0.0)
        p = np.exp(h) / np.exp(h).sum()
        p0 = np.exp(h0) / np.exp(h0).sum()
        out[i] = np.log((1 - w) * p0[y[i]] + w * p[y[i]])
    return out


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_derivatives(name):
    a, da = ACTIVATIONS[name]
    z = np.linspace(-4.3, 4.1, 41)  # avoids the ReLU kink at 0
    h = 1e-6
    np.testing.assert_allclose(da(z), (a(z + h) - a(z - h)) / (2 * h), rtol=1e-7, atol=1e-9)


def test_gelu_is_exact_erf_form():
    from scipy.special import erf

    a, _ = ACTIVATIONS["gelu"]
    z = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(a(z), z * 0.5 * (1 + erf(z / np.sqrt(2))), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("act", ACT_NAMES)
def test_analytic_gradient_matches_finite_differences(act, K):
    rng = np.random.default_rng(100 + 7 * K + ACT_NAMES.index(act))
    act0 = ACT_NAMES[(ACT_NAMES.index(act) + 1) % len(ACT_NAMES)]
    model, X, y, weights, theta = _random_problem(rng, d=3, K=K, n=60, act=act, act0=act0)
    ll, g = loglik_and_grad(theta, X, y, weights, model)
    assert ll == pytest.approx(loglik(theta, X, y, weights, model), rel=1e-13)
    g_fd = _fd_grad(theta, X, y, weights, model)
    np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(g).max()))


def test_gradient_with_callable_activation():
    """A bare callable: its derivative comes from a central difference inside ``grad``."""
    rng = np.random.default_rng(5)
    model, X, y, weights, theta = _random_problem(rng, d=3, K=3, n=50, act=np.sin, act0="tanh")
    _, g = loglik_and_grad(theta, X, y, weights, model)
    np.testing.assert_allclose(g, _fd_grad(theta, X, y, weights, model), rtol=1e-6, atol=1e-6)
    # the (a, a') pair form gives the same value with an exact derivative
    model2 = RefModel(**{**model.__dict__, "act": (np.sin, np.cos)})
    _, g2 = loglik_and_grad(theta, X, y, weights, model2)
    np.testing.assert_allclose(g, g2, rtol=1e-8, atol=1e-8)


def test_gradient_without_weights_equals_unit_weights():
    rng = np.random.default_rng(11)
    model, X, y, _, theta = _random_problem(rng, d=3, K=3, n=40, act="tanh", act0="linear")
    ll1, g1 = loglik_and_grad(theta, X, y, None, model)
    ll2, g2 = loglik_and_grad(theta, X, y, np.ones(40), model)
    assert ll1 == pytest.approx(ll2, rel=1e-14)
    np.testing.assert_allclose(g1, g2, rtol=1e-13)


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(12)
    model, X, y, _, theta = _random_problem(rng, d=3, K=3, n=30, act="gelu", act0="linear")
    reps = rng.integers(0, 4, size=30)
    ll_w, g_w = loglik_and_grad(theta, X, y, reps.astype(float), model)
    ll_r, g_r = loglik_and_grad(theta, np.repeat(X, reps, axis=0), np.repeat(y, reps), None, model)
    assert ll_w == pytest.approx(ll_r, rel=1e-12)
    np.testing.assert_allclose(g_w, g_r, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("K", [2, 3, 5])
@pytest.mark.parametrize("act", ACT_NAMES)
def test_class_probs_rows_sum_to_one(act, K):
    rng = np.random.default_rng(200 + K)
    model, X, _, _, theta = _random_problem(rng, d=3, K=K, n=100, act=act, act0="linear")
    beta, tau, eta = unpack(theta, 3, K)
    # include extreme gate and logit values
    X = np.concatenate([X, 200.0 * X[:5]])
    p = class_probs(X, beta, tau, eta, **model.kwargs())
    assert p.shape == (105, K)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-13)


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("act", ACT_NAMES)
def test_log_density_equals_naive_mixture(act, K):
    rng = np.random.default_rng(300 + K)
    model, X, y, _, theta = _random_problem(rng, d=3, K=K, n=80, act=act, act0="sigmoid")
    beta, tau, eta = unpack(theta, 3, K)
    lp = log_density(X, y, beta, tau, eta, **model.kwargs())
    np.testing.assert_allclose(lp, _naive_log_density(X, y, beta, tau, eta, model), rtol=1e-12)
    p = class_probs(X, beta, tau, eta, **model.kwargs())
    np.testing.assert_allclose(np.log(p[np.arange(80), y]), lp, rtol=1e-12)


def test_log_density_is_finite_at_extreme_logits():
    rng = np.random.default_rng(4)
    model, X, y, _, theta = _random_problem(rng, d=3, K=3, n=50, act="linear", act0="linear")
    beta, tau, eta = unpack(theta, 3, 3)
    lp = log_density(1e3 * X, y, beta, tau, eta, **model.kwargs())
    assert np.all(np.isfinite(lp)) and np.all(lp <= 0)
    _, g = loglik_and_grad(theta, 1e3 * X, y, None, model)
    assert np.all(np.isfinite(g))


def test_conventions_reference_class_and_gate():
    """Gate weight goes to the ADAPTER; class K-1 has logit 0 in both experts."""
    d, K = 2, 3
    eta0 = np.array([[1.0, 0.0], [0.0, 1.0]])
    eta = np.array([[-2.0, 0.5], [0.3, -1.0]])
    model = RefModel(d, K, eta0, act="tanh", act0="linear", scale=2.0, bias=[0.1, -0.2])
    X = np.array([[0.3, -0.7], [1.1, 0.4]])
    beta, tau = np.array([0.4, -0.3]), 0.2
    w = expit(X @ beta + tau)
    h = np.column_stack([2.0 * np.tanh(X @ eta.T) + [0.1, -0.2], np.zeros(2)])
    h0 = np.column_stack([X @ eta0.T, np.zeros(2)])
    expected = (1 - w)[:, None] * softmax(h0, axis=1) + w[:, None] * softmax(h, axis=1)
    np.testing.assert_allclose(class_probs(X, beta, tau, eta, **model.kwargs()), expected)
    theta = pack(beta, tau, eta)
    np.testing.assert_array_equal(theta, np.r_[beta, tau, eta.ravel()])
    b2, t2, e2 = unpack(theta, d, K)
    np.testing.assert_array_equal(b2, beta)
    assert t2 == tau
    np.testing.assert_array_equal(e2, eta)


def test_sample_numpy_matches_class_probs():
    d, K = 2, 3
    model = RefModel(d, K, np.eye(2), act="tanh", act0="linear", scale=3.0, scale0=3.0)
    beta, tau, eta = np.array([0.5, -0.5]), 0.3, np.array([[0.0, 1.0], [1.0, 1.0]])
    X, y = sample_numpy(np.random.default_rng(0), 40000, model, beta, tau, eta)
    assert X.shape == (40000, d) and y.shape == (40000,) and y.min() >= 0 and y.max() <= K - 1
    # E[1{y=k}] = E[p_k(X)]: compare the empirical class frequencies to the mean probabilities
    p = class_probs(X, beta, tau, eta, **model.kwargs())
    np.testing.assert_allclose(np.bincount(y, minlength=K) / 40000, p.mean(axis=0), atol=0.01)


# --------------------------------------------------------------------------- fitting


def _heterogeneous_setup():
    d, K = 4, 3
    eta0 = np.zeros((K - 1, d))
    eta0[0, 0] = eta0[1, 1] = 1.0
    model = RefModel(d, K, eta0, act="tanh", act0="linear", scale=3.0, scale0=3.0)
    beta = np.array([0.5, -0.5, 0.5, 0.0])
    tau = 0.5
    eta = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, -1.0]]) / np.sqrt(2)
    return model, beta, tau, eta


def test_fit_scipy_recovers_heterogeneous_truth():
    model, beta, tau, eta = _heterogeneous_setup()
    X, y = sample_numpy(np.random.default_rng(0), 4000, model, beta, tau, eta)
    truth = pack(beta, tau, eta)
    rng = np.random.default_rng(1)
    start = truth + 0.2 * rng.standard_normal(truth.size)

    res = fit_scipy(X, y, model, start)
    assert res["success"], res["message"]
    assert res["method"] == "BFGS"
    assert res["grad_norm"] < 1e-10
    _, g = loglik_and_grad(res["theta"], X, y, None, model)
    assert np.max(np.abs(g)) / 4000 < 1e-10
    b, t, e = unpack(res["theta"], model.d, model.K)
    # errors of order n^(-1/2) ~ 0.016 times O(1..10) constants
    assert np.linalg.norm(b - beta) < 0.3
    assert abs(np.exp(t) - np.exp(tau)) < 0.5
    assert np.linalg.norm(e - eta) < 0.3
    assert res["loglik"] >= loglik(truth, X, y, None, model)

    # a different start lands on the same maximiser (tight optimum)
    res2 = fit_scipy(X, y, model, truth)
    assert abs(res2["loglik"] - res["loglik"]) <= 1e-10 * abs(res["loglik"])
    np.testing.assert_allclose(res2["theta"], res["theta"], atol=1e-6)

    # a box that does not bind: L-BFGS-B gives the same maximiser, nothing on a bound
    res3 = fit_scipy(X, y, model, start, bounds=[(-10.0, 10.0)] * truth.size)
    assert res3["method"] == "L-BFGS-B" and res3["success"]
    assert not res3["any_on_bound"]
    assert abs(res3["loglik"] - res["loglik"]) <= 1e-10 * abs(res["loglik"])
    np.testing.assert_allclose(res3["theta"], res["theta"], atol=1e-6)


def test_fit_scipy_active_bound_is_flagged_and_kkt_holds():
    model, beta, tau, eta = _heterogeneous_setup()
    X, y = sample_numpy(np.random.default_rng(3), 2000, model, beta, tau, eta)
    truth = pack(beta, tau, eta)
    bounds = [(-10.0, 10.0)] * truth.size
    bounds[model.d] = (-1.0, -0.5)  # tau boxed away from its truth 0.5: binds at -0.5
    res = fit_scipy(X, y, model, truth, bounds=bounds)
    assert res["success"]
    assert res["on_bound"][model.d] and res["on_bound"].sum() == 1
    assert res["theta"][model.d] == pytest.approx(-0.5)
    assert res["grad"][model.d] > 0  # the likelihood wants tau larger
    assert res["grad_norm"] < 1e-9  # projected (KKT) gradient

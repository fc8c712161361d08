"""The plain MoE (``MixSpec(frozen=None)``, ``model.frozen = "none"``): m >= 2 trainable experts,
no frozen expert, expert 0 the gate's reference (logit 0).

Ground truth is an independent NumPy/SciPy transcription of the model written here from its
definition (`_np_log_joint`): per component log w_j(x) + log f_j(y | x), with the gate computed
over all m logits (expert 0's fixed at 0) and the experts' densities from scipy.stats. It shares
no code with moejax. Tolerances: 1e-12 relative for log-densities (float64, a few dozen
operations); statistical checks state their standard errors where they are used."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import moejax  # (float64)
from moejax.estimation.bounds import Bounds, pack, unpack
from moejax.estimation.init import init_near_truth, to_reference
from moejax.mix import (
    MixSpec,
    fit,
    log_class_probs,
    log_density,
    responsibilities,
    sample,
)
from moejax.mix.design import Design
from moejax.sweep.config import ConfigError, resolve
from moejax.sweep.plan import held_lane_bytes

ACT = {"linear": lambda z: z, "tanh": np.tanh}


def _spec(gate="softmax", lik="gaussian", m=2, K=3, act="linear", d=2):
    return MixSpec(
        d=d, frozen=None, adapter=act, K=K, adapters=m, gate=gate, likelihood=lik, scale=1.3,
        bias=[0.2] * (K - 1 if lik == "categorical" else 1),
    )  # fmt: skip


def _params(spec, seed):
    rng = np.random.default_rng(seed)
    m, d, R = spec.m, spec.d, spec.R
    beta = rng.standard_normal((m, d))
    tau = 0.5 * rng.standard_normal(m)
    beta[0], tau[0] = 0.0, 0.0
    eta = rng.standard_normal((m, R, d))
    nu = rng.uniform(0.3, 1.5, m)
    return spec.params(beta, tau, eta, nu)


def _np_log_joint(spec, act, p, X, y):
    """(n, m): log w_j(x) + log f_j(y | x), independently of moejax."""
    beta, tau, eta, nu = (np.asarray(a) for a in p)
    g = X @ beta.T + tau  # (n, m); column 0 is 0 (the reference)
    if spec.gate == "input_free":
        g = np.broadcast_to(tau, g.shape)
    if spec.gate == "laplace":  # tau_j - ||x - W_j||, expert 0's logit 0
        g = tau - np.linalg.norm(X[:, None, :] - beta[None], axis=-1)
        g[:, 0] = 0.0
    if spec.gate == "sigmoid":
        lv = np.log(special.expit(g))
    else:
        lv = g
    lw = lv - special.logsumexp(lv, axis=1, keepdims=True)
    d = X.shape[1]
    z = np.einsum("nd,mrd->nmr", X, eta[..., :d])
    if eta.shape[-1] == d + 1:  # expert intercepts
        z = z + eta[..., d]
    ex = spec.adapter  # the fixed output map s a(z) + b
    h = ex.scale * ACT[act](z) + (0.0 if ex.bias is None else np.asarray(ex.bias))
    if spec.likelihood == "categorical":
        logits = np.concatenate([h, np.zeros((*h.shape[:2], 1))], axis=2)
        lp = logits - special.logsumexp(logits, axis=2, keepdims=True)
        lf = np.take_along_axis(lp, np.asarray(y)[:, None, None].repeat(spec.m, 1), 2)[..., 0]
    elif spec.likelihood == "gaussian":
        lf = stats.norm.logpdf(np.asarray(y)[:, None], h[..., 0], np.sqrt(nu))
    else:
        lf = stats.laplace.logpdf(np.asarray(y)[:, None], h[..., 0], np.sqrt(nu / 2))
    return lw + lf


CASES = [  # every gate x likelihood: categorical with m = 3 tanh experts, regression m = 2 linear
    (gate, lik, 3 if lik == "categorical" else 2, "tanh" if lik == "categorical" else "linear")
    for gate, lik in itertools.product(
        ("softmax", "input_free", "sigmoid", "laplace"), ("categorical", "gaussian", "laplace")
    )
]


@pytest.mark.parametrize("gate,lik,m,act", CASES)
def test_density_and_posteriors_match_numpy(gate, lik, m, act):
    spec = _spec(gate, lik, m, act=act)
    p = _params(spec, seed=m)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, spec.d))
    y = rng.integers(0, 3, 40) if lik == "categorical" else 2.0 * rng.standard_normal(40)
    lj = _np_log_joint(spec, act, p, X, y)
    want = special.logsumexp(lj, axis=1)
    np.testing.assert_allclose(log_density(spec, p, X, y), want, rtol=1e-12)
    r = np.asarray(responsibilities(spec, p, X, y))
    assert r.shape == (40, m)
    np.testing.assert_allclose(r, np.exp(lj - want[:, None]), rtol=1e-10, atol=1e-14)
    if lik == "categorical":
        lp = np.stack(
            [
                special.logsumexp(_np_log_joint(spec, act, p, X, np.full(40, k)), 1)
                for k in range(3)
            ],
            1,
        )
        np.testing.assert_allclose(log_class_probs(spec, p, X), lp, rtol=1e-12)


def test_layout_counts_and_reference():
    spec = _spec("softmax", "gaussian", 3)
    # (m - 1) gates of d + 1, m experts of d weights and a variance
    assert spec.n_params == 2 * 3 + 3 * (2 + 1) and spec.n_gates == 2 and spec.components == 3
    assert not spec.homogeneous and spec.plain
    p = _params(spec, seed=4)
    theta = pack(spec, p)
    assert theta.shape == (spec.n_params,)
    for a, b in zip(unpack(spec, theta), p, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-15)
    with pytest.raises(ValueError, match="reference"):
        spec.params(np.ones((3, 2)), np.zeros(3), np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match="adapters"):
        _spec("softmax", "gaussian", 1)
    # the reference form keeps the softmax's weights
    q = p._replace(beta=p.beta + 0.7, tau=p.tau - 1.1)
    X = np.random.default_rng(0).standard_normal((5, 2))
    y = np.zeros(5)
    np.testing.assert_allclose(
        _np_log_joint(spec, "linear", to_reference(q), X, y),
        _np_log_joint(spec, "linear", p, X, y),
        rtol=1e-13,
    )


def test_sampler_moments_match_numpy():
    """E[y] and E[y^2] of 200 000 draws (regression; component first) against the model's
    moments computed in NumPy at the same X; the tolerance is 5 Monte Carlo standard errors."""
    spec = _spec("sigmoid", "gaussian", 3)
    p = _params(spec, seed=7)
    X, y = sample(jax.random.key(3), spec, p, 200_000)
    X, y = np.asarray(X), np.asarray(y)
    beta, tau, eta, nu = (np.asarray(a) for a in p)
    lv = np.log(special.expit(X @ beta.T + tau))
    w = np.exp(lv - special.logsumexp(lv, axis=1, keepdims=True))
    mu = 1.3 * np.einsum("nd,md->nm", X, eta[:, 0]) + 0.2
    m1 = np.sum(w * mu, 1)
    m2 = np.sum(w * (mu**2 + nu), 1)
    for emp, mod in ((y, m1), (y**2, m2)):
        se = np.std(emp) / math.sqrt(y.size)
        assert abs(np.mean(emp) - np.mean(mod)) < 5 * se


@pytest.fixture(scope="module")
def gaussian_data():
    """n = 6000 draws of a two-expert Gaussian plain MoE (linear experts, d = 2)."""
    spec = _spec("softmax", "gaussian", 2)
    truth = spec.params(
        [[0.0, 0.0], [1.5, -1.0]], [0.0, 0.3], [[[1.0, 0.0]], [[-1.0, 0.8]]], [0.3, 0.5]
    )
    X, y = sample(jax.random.key(11), spec, truth, 6000)
    return spec, truth, X, y


@pytest.mark.parametrize("method", ["direct"])  # (EM: the Laplace-gate test and simulate's)
def test_fit_is_a_stationary_point_of_the_numpy_likelihood(gaussian_data, method):
    """Direct MLE from a near-truth start: converged; the NumPy reference likelihood's
    finite-difference gradient at the estimate is ~0, its finite-difference Hessian matches the
    fit's information, and the estimate is within 4 standard errors of the truth."""
    spec, truth, X, y = gaussian_data
    init = init_near_truth(jax.random.key(2), spec, truth, 6000.0)
    res = fit(spec, X, y, init, method=method, em_accel="newton")
    assert bool(res.converged), int(res.status)
    theta, H = _check_stationary(spec, "linear", res, np.asarray(X), np.asarray(y))
    se = np.sqrt(np.diag(np.linalg.inv(H)))
    assert np.all(np.abs(theta - np.asarray(pack(spec, truth))) < 4 * se)


def test_grid_design_with_expert_intercepts():
    """The rate papers' design: x = linspace(0, 1, n) (d = 1) and experts a x + b with b
    estimated. The grid rows are exactly NumPy's linspace (each n its own grid); a direct fit
    is a stationary point of the NumPy likelihood, its information the finite-difference
    Hessian."""
    spec = MixSpec(d=1, frozen=None, adapter="linear", likelihood="gaussian", adapters=2,
                   expert_intercept=True)  # fmt: skip
    assert spec.de == 2 and spec.n_params == 2 + 2 * 3
    truth = spec.params([[0.0], [25.0]], [0.0, -8.0], [[[20.0, -5.0]], [[-20.0, 15.0]]],
                        [0.16, 0.09])  # fmt: skip
    grid = Design("grid", 0.0, 1.0)
    for n in (7, 130):
        X, _ = sample(jax.random.key(0), spec, truth, n, grid)
        np.testing.assert_array_equal(np.asarray(X)[:, 0], np.linspace(0.0, 1.0, n))
    X, y = sample(jax.random.key(5), spec, truth, 800, grid)
    bounds = Bounds(beta=(-60.0, 60.0), tau=(-30.0, 30.0), eta=(-60.0, 60.0))
    init = init_near_truth(jax.random.key(1), spec, truth, 800.0)
    res = fit(spec, X, y, init, bounds=bounds)
    assert bool(res.converged), int(res.status)
    _check_stationary(spec, "linear", res, np.asarray(X), np.asarray(y), h=1e-5)
    with pytest.raises(ValueError, match="d = 1"):
        sample(jax.random.key(0), _spec(), _params(_spec(), 0), 10, grid)
    U, _ = sample(jax.random.key(0), _spec(), _params(_spec(), 0), 20000, Design("uniform", -1, 2))
    U = np.asarray(U)
    assert U.min() >= -1 and U.max() <= 2 and abs(U.mean() - 0.5) < 5 * 3 / math.sqrt(12 * 40000)


def _check_stationary(spec, act, res, Xn, yn, h=1e-4):
    theta = np.asarray(pack(spec, res.params))

    def nll(t):
        p = unpack(spec, jnp.asarray(t))
        return -np.sum(special.logsumexp(_np_log_joint(spec, act, p, Xn, yn), axis=1))

    P = theta.size
    E = np.eye(P) * h
    grad = np.array([(nll(theta + E[i]) - nll(theta - E[i])) / (2 * h) for i in range(P)])
    H = np.empty((P, P))
    for i in range(P):
        for j in range(i, P):
            H[i, j] = H[j, i] = (
                nll(theta + E[i] + E[j])
                - nll(theta + E[i] - E[j])
                - nll(theta - E[i] + E[j])
                + nll(theta - E[i] - E[j])
            ) / (4 * h * h)
    assert np.max(np.abs(grad)) < 1e-3 * max(1.0, np.max(np.abs(H)) * h)  # |score| ~ 0
    np.testing.assert_allclose(np.asarray(res.info), H, rtol=1e-4, atol=1e-3 * np.max(np.abs(H)))
    return theta, H


@pytest.mark.parametrize("method", ["direct", "em"])
def test_laplace_gate_fit_is_a_stationary_point_of_the_numpy_likelihood(method):
    """The new gate through the seam: a plain MoE under the Laplace gate (logits
    tau_j - ||x - W_j||, W_j stored in beta; expert 0's logit 0) fitted by both estimators is a
    stationary point of the NumPy likelihood, with the fit's information its
    finite-difference Hessian."""
    spec = _spec("laplace", "gaussian", 2)
    truth = spec.params([[0.0, 0.0], [1.5, -1.0]], [0.0, 0.8], [[[1.0, 0.0]], [[-1.0, 0.8]]],
                        [0.3, 0.5])  # fmt: skip
    X, y = sample(jax.random.key(4), spec, truth, 3000)
    res = fit(spec, X, y, init_near_truth(jax.random.key(2), spec, truth, 3000.0), method=method)
    assert bool(res.converged), int(res.status)
    _check_stationary(spec, "linear", res, np.asarray(X), np.asarray(y))


def test_config_plain_rules():
    base = {
        "model": {"frozen": "none", "adapter": "linear", "likelihood": "gaussian", "d": 2},
        "truth": {"beta": [[1.0, 0.0], [2.0, -1.0]], "tau": [0.5, 1.0]},
        "sizes": {"list": [200, 400]},
    }
    with pytest.raises(ConfigError, match="needs >= 2 experts"):
        resolve({**base, "model": {**base["model"], "adapters": 1}, "truth": {}})
    c = resolve({**base, "model": {**base["model"], "adapters": 2}})
    # reference form: expert 0's gate subtracted (softmax: the same weights)
    assert c["truth"]["beta"] == [[0.0, 0.0], [1.0, -1.0]] and c["truth"]["tau"] == [0.0, 0.5]
    with pytest.raises(ConfigError, match="no frozen expert"):
        resolve(
            {**base, "model": {**base["model"], "adapters": 2}, "truth": {"regime": "homogeneous"}}
        )
    with pytest.raises(ConfigError, match="reference"):
        resolve({**base, "model": {**base["model"], "adapters": 2, "gate": "sigmoid"}})
    d = resolve({"model": {"frozen": "none", "adapters": 3, "K": 3}, "sizes": {"list": [500]}})
    eta = np.asarray(d["truth"]["eta"])  # default: the basis shifted per expert (distinct)
    assert eta.shape == (3, 2, 4) and len({e.tobytes() for e in eta}) == 3
    assert np.all(np.asarray(d["truth"]["beta"])[0] == 0)


def test_plain_runs_through_simulate_and_streamed_em():
    """A plain-MoE config through `simulate`: direct (held) and EM on streamed data (a
    run.memory_gb below one held lane forces streaming) converge on the same data to maxima
    within 0.5% of each other; the Voronoi loss and the density error are reported.
    (Multi-start is the same lane program over `random_inits`, whose plain layout is
    `unpack`'s, tested above.)"""
    cfg = {
        "model": {"frozen": "none", "adapters": 2, "d": 2, "K": 3, "scale": 4.0},
        "truth": {"beta": [[0.0, 0.0], [0.7071, -0.7071]], "tau": [0.0, 0.5]},
        "sizes": {"list": [2500]},
        "replicates": 2,
        "run": {"density_points": 200},
    }
    direct = moejax.simulate(cfg, progress=False)
    assert direct["problem"].spec.plain
    assert np.all(direct["converged"]) and np.all(np.isfinite(direct["err_voronoi"]))
    assert np.all(np.isfinite(direct["err_density"]))
    held = held_lane_bytes(direct["problem"], 2560)  # below one held lane: streamed lanes
    run = {"block_rows": 64, "memory_gb": 0.5 * held / 2**30}
    em = moejax.simulate({**cfg, "estimator": {"method": "em"}, "run": run}, progress=False)
    assert em["problem"].cfg["run"]["memory_gb"] < held / 2**30
    assert np.all(em["converged"])
    # the plain MoE's likelihood has several maxima: from the same start EM and Newton may end
    # at different ones (measured at n = 3000, 6000: 1 of 4 lanes, EM higher by 1.3 of 1371)
    np.testing.assert_allclose(em["loglik"], direct["loglik"], rtol=5e-3)


def test_fused_gpu_pass_runs_the_plain_rows():
    """The fused Pallas pass (interpret mode on this CPU) holds the plain MoE's closed-form
    rows: value, gradient and Hessian equal the XLA pass's to 1e-13 relative."""
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.estimation.objective import Blocks

    spec = _spec("softmax", "categorical", 3, act="tanh")
    p = _params(spec, seed=9)
    X, y = sample(jax.random.key(0), spec, p, 256)
    data, blocks, theta = prepare_data(spec, X, y), Blocks(128, jnp.int32(2)), pack(spec, p)
    xla = objective(spec, data, blocks, fused="off").value_grad_hess(theta)
    fused = objective(spec, data, blocks, fused="interpret").value_grad_hess(theta)
    for a, b in zip(xla, fused, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13 * float(jnp.max(jnp.abs(a))))

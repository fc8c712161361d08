"""One model family: the paper's model is the general mixture's m = 1, softmax, categorical
member, and every estimator (direct MLE, EM, multi-start) runs on every model.

Ground truth for the estimators is an independent SciPy fit (L-BFGS-B with 3-point
finite-difference gradients) of the NumPy reference likelihood in ``reference_mix_numpy.py``,
on the same box, with the flat layout written out here (not moejax's ``unpack``). Models are
chosen so that every gate (softmax, input-free, sigmoid), every likelihood (categorical,
Gaussian, Laplace) and m in {1, 2} appear, at sample sizes where the maximiser is interior and
well determined.

Cost: one jitted program per model runs the three estimators and the Hessian together,
compiled at XLA's backend optimisation level 0 (compile time dominates at these sizes).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_mix_numpy as ref
from scipy.optimize import minimize

import moejax as mj
from moejax import mix
from moejax.estimation import Bounds, estimators, init, pack
from moejax.estimation.bounds import unpack
from moejax.model import from_mix, to_mix

# --------------------------------------------------------------------------- the face


def test_model_spec_is_the_one_adapter_softmax_categorical_member():
    spec = mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), scale=3.0)
    assert isinstance(spec, mix.MixSpec)
    assert (spec.m, spec.gate, spec.likelihood, spec.R) == (1, "softmax", "categorical", 2)
    assert spec.n_params == 2 + 1 + 2 * 2
    with pytest.raises(ValueError, match="gate"):
        mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), gate="sigmoid")


def test_face_and_general_model_are_the_same_code():
    """Same key, same truth: the paper face and the general model draw the same X and the same
    integer labels (one inverse-CDF sampler), and give the same likelihood, probabilities and
    fit, bit for bit."""
    spec = mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), scale=3.0)
    p = mj.Params([0.5, -0.3], 0.2, [[0.0, 1.5], [1.5, 0.0]])
    q = to_mix(p)
    key = jax.random.key(11)
    X1, y1 = mj.sample_blocked(key, spec, p, 700)
    X2, y2 = mix.sample(key, spec, q, 700)
    assert y1.dtype == y2.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(X1), np.asarray(X2))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert float(mj.log_likelihood(spec, p, X1, y1)) == float(mix.log_likelihood(spec, q, X1, y1))
    np.testing.assert_array_equal(
        np.asarray(mj.class_probs(spec, p, X1)),
        np.asarray(jnp.exp(mix.log_class_probs(spec, q, X1))),
    )
    a = mj.fit(spec, X1, y1, p)
    b = mix.fit(spec, X1, y1, q)
    np.testing.assert_array_equal(
        np.asarray(pack(spec, to_mix(a.params))), np.asarray(pack(spec, b.params))
    )
    assert int(a.n_iter) == int(b.n_iter) and bool(a.converged)


def test_labels_are_integers_and_responses_real():
    cat = mix.MixSpec(d=2, frozen="linear", adapter="tanh", eta0=np.eye(2), K=3, adapters=2)
    reg = mix.MixSpec(d=2, frozen="tanh", adapter="tanh", eta0=[[1.0, 0.0]], likelihood="laplace")
    pc = cat.params(np.ones((2, 2)), [0.0, 0.0], np.ones((2, 2, 2)))
    pr = reg.params([1.0, 0.0], 0.0, [[0.0, 1.0]], 0.5)
    assert mix.sample(jax.random.key(0), cat, pc, 100)[1].dtype == jnp.int32
    assert mix.sample(jax.random.key(0), reg, pr, 100)[1].dtype == jnp.float64


# --------------------------------------------------------------------------- every estimator

# name -> (MixSpec keyword arguments, truth (beta, tau, eta, nu), n)
MODELS: dict[str, tuple[dict[str, Any], tuple, int]] = {
    "softmax-categorical-m2": (
        dict(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), scale=4.0, adapters=2),
        (
            [[1.0, 0.0], [0.0, 1.0]],
            [0.0, 0.0],
            [[[0.0, 1.5], [1.5, 0.0]], [[-1.5, 0.0], [0.0, -1.5]]],
            None,
        ),
        4000,
    ),
    "sigmoid-categorical-m1-K2": (
        dict(
            d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]], scale=3.0, gate="sigmoid"
        ),
        ([[0.8, -0.6]], [0.3], [[[0.0, 1.5]]], None),
        3000,
    ),
    "input_free-gaussian-m1": (
        dict(
            d=2,
            frozen="tanh",
            adapter="tanh",
            eta0=[[1.0, 0.0]],
            likelihood="gaussian",
            gate="input_free",
            nu0=0.05,
        ),
        (None, [0.0], [[[0.0, 1.0]]], [0.1]),
        2000,
    ),
    "softmax-gaussian-laplace-m1": (
        dict(
            d=2,
            frozen="tanh",
            adapter="tanh",
            eta0=[[1.0, 0.0]],
            likelihood="gaussian",
            frozen_likelihood="laplace",
            nu0=0.05,
        ),
        ([[0.7, 0.7]], [0.5], [[[0.0, 1.0]]], [0.2]),
        2000,
    ),
    "sigmoid-gaussian-m2": (
        dict(
            d=2,
            frozen="linear",
            adapter="tanh",
            eta0=[[1.0, 0.0]],
            likelihood="gaussian",
            gate="sigmoid",
            adapters=2,
            nu0=0.05,
        ),
        ([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [[[0.0, 1.5]], [[-1.5, 0.0]]], [0.1, 0.2]),
        4000,
    ),
}
# Laplace adapters: log f = -c |y - mean| is not differentiable where a residual is 0, so no
# gradient vanishes at the maximiser, and the exact Hessian in z (c sign(e) s a'') carries no
# curvature of the kinks: Newton ends "stalled" near the optimum (measured: mean NLL 3.3e-5
# relative above SciPy's on this design; a known limitation, see the README). Checked on the
# objective value and on honest statuses only.
NONSMOOTH: dict[str, tuple[dict[str, Any], tuple, int]] = {
    "softmax-laplace-m1": (
        dict(
            d=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]], likelihood="laplace", nu0=0.05
        ),
        ([[0.7, 0.7]], [0.0], [[[0.0, 1.5]]], [0.1]),
        3000,
    ),
}
BOX = Bounds()


def _ref_unpack(kw: dict[str, Any], theta: np.ndarray) -> dict[str, Any]:
    """The flat layout, written independently: per adapter the gate (beta_j, tau_j) (tau_j
    alone under the input-free gate), then eta (m, R, d) row-major, then log nu (m)."""
    d, m = kw["d"], kw.get("adapters", 1)
    lik = kw.get("likelihood", "categorical")
    R = kw.get("K", 2) - 1 if lik == "categorical" else 1
    gw = 1 if kw.get("gate") == "input_free" else d + 1
    g = theta[: m * gw].reshape(m, gw)
    beta = np.zeros((m, d)) if gw == 1 else g[:, :d]
    o = m * gw
    eta = theta[o : o + m * R * d].reshape(m, R, d)
    nu = np.exp(theta[o + m * R * d :]) if lik != "categorical" else None
    return dict(beta=beta, tau=g[:, -1], eta=eta, nu=nu)


def _ref_nll(kw: dict[str, Any], X: np.ndarray, y: np.ndarray):
    model = {k: v for k, v in kw.items() if k not in ("d", "adapters")}
    model.setdefault("gate", "softmax")
    model.setdefault("likelihood", "categorical")
    return lambda t: -float(np.mean(ref.log_density(X, y, **model, **_ref_unpack(kw, t))))


def _run_all(spec: mix.MixSpec, X, y, start: mix.MixParams, starts: mix.MixParams):
    """direct, EM and multi-start fits plus the objective's Hessian at the direct optimum,
    in one compiled program."""

    def go(X, y, start, starts):
        data = estimators.prepare_data(spec, X, y)
        direct = estimators.fit_data(spec, data, start, "direct", "newton", BOX, 200)
        em = estimators.fit_data(spec, data, start, "em", "newton", BOX, 3000, 1e-14, 50)
        multi = estimators.best_fit(
            jax.vmap(lambda p: estimators.fit_data(spec, data, p, "direct", "newton", BOX, 200))(
                starts
            )
        )
        H = estimators.objective(spec, data).value_grad_hess(pack(spec, direct.params))[2]
        return direct, em, multi, H

    lowered = jax.jit(go).lower(X, y, start, starts)
    try:
        compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # an XLA without that option
        compiled = lowered.compile()
    return compiled(X, y, start, starts)


def _scipy(kw, spec, X, y, start):
    lo, hi = (np.asarray(a) for a in BOX.arrays(spec))
    nll = _ref_nll(kw, np.asarray(X), np.asarray(y))
    sp = minimize(
        nll,
        np.asarray(pack(spec, start)),
        method="L-BFGS-B",
        jac="3-point",
        bounds=list(zip(lo, hi, strict=True)),
        options=dict(maxiter=5000, ftol=1e-15, gtol=1e-10),
    )
    return nll, sp, lo, hi


@pytest.mark.parametrize("name", list(NONSMOOTH))
def test_laplace_adapters_reach_the_scipy_objective(name: str):
    kw, (beta, tau, eta, nu), n = NONSMOOTH[name]
    spec = mix.MixSpec(**kw)
    truth = spec.params(beta, tau, eta, nu)
    X, y = mix.sample(jax.random.key(3), spec, truth, n)
    start = init.init_near_truth(jax.random.key(4), spec, truth, n, 0.05, 0.1, 0.0)
    rand = init.random_inits(jax.random.key(5), spec, 2, BOX, 0.5)
    starts = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), start, rand)
    fits = _run_all(spec, X, y, start, starts)[:3]
    nll, sp, _, _ = _scipy(kw, spec, X, y, start)
    for label, res in zip(("direct", "em", "multistart"), fits, strict=True):
        # a named status, never a silent "converged" at a non-stationary point
        assert int(res.status) in (mj.CONVERGED, mj.STALLED, mj.MAX_ITER), label
        if bool(res.converged) and label != "em":  # EM's rule is the log-likelihood change
            assert float(res.grad_norm) <= 1e-8
        f = nll(np.asarray(pack(spec, res.params)))
        assert f <= sp.fun + 1e-4 * abs(sp.fun), (label, f, sp.fun)


def _relabel(spec, theta: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """theta with its adapters permuted to the labelling closest to ``ref``: the mixture is
    exchangeable in its adapters, so a multi-start may end at a label-switched copy of the
    same maximiser (same likelihood, adapters in another order)."""
    p = unpack(spec, jnp.asarray(theta))
    best = theta
    for perm in itertools.permutations(range(spec.m)):
        idx = np.array(perm)
        q = np.asarray(pack(spec, jax.tree.map(lambda a, i=idx: a[i], p)))
        if np.max(np.abs(q - ref)) < np.max(np.abs(best - ref)):
            best = q
    return best


@pytest.mark.parametrize("name", list(MODELS))
def test_every_estimator_reaches_the_scipy_optimum(name: str):
    kw, (beta, tau, eta, nu), n = MODELS[name]
    spec = mix.MixSpec(**kw)
    truth = spec.params(beta, tau, eta, nu)
    X, y = mix.sample(jax.random.key(3), spec, truth, n)
    start = init.init_near_truth(jax.random.key(4), spec, truth, n, 0.05, 0.1, 0.0)
    # multi-start: the near-truth start among two random ones (the best must win)
    rand = init.random_inits(jax.random.key(5), spec, 2, BOX, 0.5)
    starts = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), start, rand)
    direct, em, multi, H = _run_all(spec, X, y, start, starts)

    nll, sp, lo, hi = _scipy(kw, spec, X, y, start)
    theta_ref = sp.x
    assert not np.any(np.isclose(theta_ref, lo) | np.isclose(theta_ref, hi)), "not interior"
    f_ref = sp.fun
    for label, res in (("direct", direct), ("em", em), ("multistart", multi)):
        assert bool(res.converged), (label, int(res.status))
        theta = np.asarray(pack(spec, res.params))
        # the same maximiser: moejax's mean NLL is at least as low as SciPy's (up to rounding),
        # and the estimates agree to what finite-difference gradients resolve (~1e-5)
        f = nll(theta)
        assert f <= f_ref + 1e-12 * abs(f_ref), (label, f, f_ref)
        theta = _relabel(spec, theta, theta_ref) if label == "multistart" else theta
        np.testing.assert_allclose(theta, theta_ref, atol=2e-4, err_msg=label)
        assert float(res.loglik) == pytest.approx(-f * n, rel=1e-11)
    # EM converges linearly and stops on a relative log-likelihood change of 1e-14: on the
    # two-adapter design that leaves it ~5e-6 from the maximiser in the parameters (measured),
    # while its log-likelihood is within rounding of the direct optimum's
    np.testing.assert_allclose(
        np.asarray(pack(spec, em.params)), np.asarray(pack(spec, direct.params)), atol=2e-5
    )
    assert float(em.loglik) == pytest.approx(float(direct.loglik), rel=1e-12)
    # no unused parameters: the Hessian at the interior optimum is positive definite, full rank
    eig = np.linalg.eigvalsh(np.asarray(H))
    assert eig.shape == (spec.n_params,) and eig.min() > 1e-8 * eig.max(), eig


# --------------------------------------------------------------------------- API hygiene


def _face_problem():
    spec = mj.ModelSpec(d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]], scale=3.0)
    p = mj.Params([0.5, 0.5], 0.0, [[0.0, 1.5]])
    X, y = mj.sample(jax.random.key(1), spec, p, 500)
    return spec, p, X, y


def test_fit_does_not_recompile_for_defaults_keywords_tol_or_max_iter():
    spec, p, X, y = _face_problem()
    fitjit = estimators._fit_jit
    mj.fit(spec, X, y, p)
    before = fitjit._cache_size()
    a = mj.fit(spec, X, y, init=p)
    mj.fit(spec, X, y, p, None, method="direct", solver="newton", bounds=Bounds())
    mj.fit(spec, X, y, p, max_iter=3)
    mj.fit(spec, X, y, p, tol=1e-6, max_iter=7)
    assert fitjit._cache_size() == before
    b = mj.fit(spec, X, y, p, max_iter=2)
    assert int(b.n_iter) == 2 and int(b.status) == mj.MAX_ITER and int(a.n_iter) > 2


def test_solver_max_iter_and_fit_max_iter_cannot_disagree():
    spec, p, X, y = _face_problem()
    solver = mj.estimation.ProjectedNewton(max_iter=5)
    res = mj.fit(spec, X, y, p, solver=solver)  # the object's cap is used
    assert int(res.n_iter) <= 5
    mj.fit(spec, X, y, p, solver=solver, max_iter=5)  # agreeing is fine
    with pytest.raises(ValueError, match="max_iter"):
        mj.fit(spec, X, y, p, solver=solver, max_iter=50)
    with pytest.raises(ValueError, match="inner_max_iter"):
        mj.fit(spec, X, y, p, method="em", solver=solver, inner_max_iter=9)


def test_public_names():
    import moejax.estimation.solvers as solvers

    assert callable(mj.fit) and solvers.STATUS_NAMES == mj.STATUS_NAMES
    assert mj.STATUS_NAMES[mj.CONVERGED] == "converged"
    assert mj.STATUS_NAMES[mj.MAX_ITER] == "max_iter" and mj.status_name(mj.STALLED) == "stalled"
    assert math.isfinite(float(from_mix(to_mix(mj.Params([1.0], 0.5, [[2.0]]))).tau))

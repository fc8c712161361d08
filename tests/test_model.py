"""Tests of the model core of moejax: model, experts, sampling, truth schedules and losses.

Ground truth is the independent NumPy float64 reference in ``tests/reference_numpy.py``. Every
random draw uses a fixed seed, so the statistical tests are deterministic; their tolerances are
chosen so that they would also pass for (almost) any other seed, and are justified where used.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_numpy as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import moejax as mj

ACTS = ("linear", "tanh", "sigmoid", "gelu", "relu")


def _sin(z):
    return jnp.sin(z)


def _rational(z):
    return z**3 / (1.0 + z * z)


def _np_rational(z):
    return z**3 / (1.0 + z * z)


def _np_rational_d(z):
    return (3 * z**2 + z**4) / (1.0 + z * z) ** 2


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    """One model configuration, built both as a moejax spec and as a reference model."""

    name: str
    d: int
    K: int
    frozen: Any  # moejax activation (name or JAX callable)
    adapter: Any
    ref_act0: Any  # reference activation (name, callable or (a, a') pair)
    ref_act: Any
    scale: float = 1.0
    frozen_scale: float | None = None
    bias: tuple[float, ...] | None = None
    frozen_bias: tuple[float, ...] | None = None
    param_scale: float = 1.0  # std of the random params and of eta0
    x_scale: float = 1.0  # std of the random covariates
    seed: int = 0

    def spec(self) -> mj.ModelSpec:
        return mj.ModelSpec(
            d=self.d,
            K=self.K,
            frozen=self.frozen,
            adapter=self.adapter,
            eta0=self.eta0(),
            scale=self.scale,
            frozen_scale=self.frozen_scale,
            bias=self.bias,
            frozen_bias=self.frozen_bias,
        )

    def eta0(self) -> np.ndarray:
        rng = np.random.default_rng(1000 + self.seed)
        return self.param_scale * rng.standard_normal((self.K - 1, self.d))

    def ref_model(self) -> ref.RefModel:
        return ref.RefModel(
            d=self.d,
            K=self.K,
            eta0=self.eta0(),
            act=self.ref_act,
            act0=self.ref_act0,
            scale=self.scale,
            scale0=self.scale if self.frozen_scale is None else self.frozen_scale,
            bias=None if self.bias is None else np.array(self.bias),
            bias0=None if self.frozen_bias is None else np.array(self.frozen_bias),
        )

    def params_np(self, seed: int = 0) -> tuple[np.ndarray, float, np.ndarray]:
        rng = np.random.default_rng(2000 + 10 * self.seed + seed)
        s = self.param_scale
        beta = s * rng.standard_normal(self.d)
        tau = float(s * rng.standard_normal())
        eta = s * rng.standard_normal((self.K - 1, self.d))
        return beta, tau, eta

    def params(self, seed: int = 0) -> mj.Params:
        return mj.Params(*self.params_np(seed))

    def data(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """X (n, d), labels uniform over the K classes (unlikely labels included), weights."""
        rng = np.random.default_rng(3000 + 10 * self.seed + seed)
        X = self.x_scale * rng.standard_normal((n, self.d))
        y = rng.integers(0, self.K, size=n)
        w = rng.uniform(0.2, 2.0, size=n)
        return X, y, w


CASES = [
    Case("lin-tanh-K2", 3, 2, "linear", "tanh", "linear", "tanh", seed=1),
    Case(
        "tanh-tanh-K4-bias",
        4,
        4,
        "tanh",
        "tanh",
        "tanh",
        "tanh",
        scale=2.5,
        bias=(0.3, -0.7, 1.1),
        frozen_bias=(-0.2, 0.5, 0.0),
        seed=2,
    ),
    Case(
        "gelu-sigmoid-K4",
        2,
        4,
        "gelu",
        "sigmoid",
        "gelu",
        "sigmoid",
        scale=3.0,
        frozen_scale=0.5,
        bias=(1.0, -1.0, 0.25),
        seed=3,
    ),
    Case("relu-gelu-K3", 3, 3, "relu", "gelu", "relu", "gelu", scale=1.7, seed=4),
    # user-defined adapter: lambda z: jnp.sin(z) against np.sin (with its exact derivative)
    Case(
        "lin-usersin-K2",
        2,
        2,
        "linear",
        lambda z: jnp.sin(z),
        "linear",
        (np.sin, np.cos),
        scale=1.5,
        seed=5,
    ),
    # user-defined frozen expert and adapter (named functions), K = 4 with a bias
    Case(
        "userrat-sigmoid-K4",
        3,
        4,
        _rational,
        "sigmoid",
        _np_rational,
        "sigmoid",
        scale=0.8,
        frozen_bias=(0.1, 0.2, 0.3),
        seed=6,
    ),
    Case("user-user-K3", 1, 3, _sin, _rational, np.sin, (_np_rational, _np_rational_d), seed=7),
]
CASE_IDS = [c.name for c in CASES]

# Extreme logits: scale 50 and large weights/covariates push logit gaps (or the gate logit) to
# many hundreds, so some probabilities are far below the float64 underflow threshold exp(-745).
EXTREME_CASES = [
    Case(
        "extreme-lin-lin-K2",
        3,
        2,
        "linear",
        "linear",
        "linear",
        "linear",
        scale=50.0,
        param_scale=2.0,
        x_scale=3.0,
        seed=8,
    ),
    # bounded (tanh) adapter: extreme through a saturated gate (|beta . x| in the hundreds)
    Case(
        "extreme-lin-tanh-K4",
        3,
        4,
        "linear",
        "tanh",
        "linear",
        "tanh",
        scale=50.0,
        bias=(40.0, -40.0, 0.0),
        param_scale=60.0,
        x_scale=3.0,
        seed=9,
    ),
    Case(
        "extreme-gelu-relu-K4",
        2,
        4,
        "gelu",
        "relu",
        "gelu",
        "relu",
        scale=50.0,
        param_scale=2.0,
        x_scale=3.0,
        seed=10,
    ),
]
EXTREME_IDS = [c.name for c in EXTREME_CASES]


def _ref_kwargs(case: Case) -> dict[str, Any]:
    return case.ref_model().kwargs()


# Compiled once and reused across tests. The spec is a static pytree, so one jitted function
# serves every spec (each new spec or shape adds one trace). All small datasets have N_DATA rows
# and always come with a weight vector, so that traces and eager-op caches are shared across tests.
_vg = jax.jit(jax.value_and_grad(mj.log_likelihood, argnums=1))
_ll = jax.jit(mj.log_likelihood)  # only traced (bad-input tests), never compiled
N_DATA = 64

# Agreement with the reference. Both sides evaluate the same closed-form expressions in float64
# with log-sigmoid / log-softmax / logaddexp, so they differ only by rounding: a few ulp of the
# largest intermediate (|logit| up to ~1e4 in the extreme cases: observed abs. differences
# <= 2e-13), i.e. well below 1e-12 absolute. RTOL = 1e-9 is the requested relative tolerance;
# ATOL guards entries that are exactly or nearly 0 (log p of a near-certain class), where a
# relative comparison is meaningless.
RTOL = 1e-9
ATOL = 1e-12


# --------------------------------------------------------------------------- 1. reference values


@pytest.mark.parametrize("case", CASES + EXTREME_CASES, ids=CASE_IDS + EXTREME_IDS)
def test_density_and_probs_match_reference(case: Case):
    spec = case.spec()
    beta, tau, eta = case.params_np()
    params = mj.Params(beta, tau, eta)
    X, y, w = case.data(N_DATA)
    kw = _ref_kwargs(case)

    lcp_ref = ref.log_class_probs(X, beta, tau, eta, **kw)
    lcp = np.asarray(mj.log_class_probs(spec, params, X))
    assert lcp.shape == (N_DATA, case.K)
    np.testing.assert_allclose(lcp, lcp_ref, rtol=RTOL, atol=ATOL)

    cp_ref = ref.class_probs(X, beta, tau, eta, **kw)
    cp = np.asarray(mj.class_probs(spec, params, X))
    assert cp.shape == (N_DATA, case.K)
    np.testing.assert_allclose(cp, cp_ref, rtol=RTOL, atol=1e-300)
    np.testing.assert_allclose(cp.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    ld_ref = ref.log_density(X, y, beta, tau, eta, **kw)
    ld = np.asarray(mj.log_density(spec, params, X, y))
    assert ld.shape == (N_DATA,)
    np.testing.assert_allclose(ld, ld_ref, rtol=RTOL, atol=ATOL)

    ll = mj.log_likelihood(spec, params, X, y)
    assert ll.shape == () and ll.dtype == jnp.float64
    assert float(ll) == pytest.approx(float(np.sum(ld_ref)), rel=RTOL)
    ll_w_ref = float(np.dot(w, ld_ref))
    assert float(mj.log_likelihood(spec, params, X, y, w)) == pytest.approx(ll_w_ref, rel=RTOL)


@pytest.mark.parametrize("case", EXTREME_CASES, ids=EXTREME_IDS)
def test_extreme_logits_stay_finite_in_log_space(case: Case):
    """Labels chosen as the least likely class make log p(y|x) fall below log(tiny) ~ -745: a
    naive log(sum(exp)) gives -inf there; the log-space implementation must stay finite and match
    the reference."""
    spec = case.spec()
    beta, tau, eta = case.params_np()
    params = mj.Params(beta, tau, eta)
    X, _, w = case.data(N_DATA)
    kw = _ref_kwargs(case)
    lcp_ref = ref.log_class_probs(X, beta, tau, eta, **kw)
    y = np.argmin(lcp_ref, axis=1)  # the least likely label of every row
    ld_ref = lcp_ref[np.arange(N_DATA), y]
    assert np.all(np.isfinite(ld_ref))
    assert ld_ref.min() < -745.0, "case is not extreme enough to test log-space stability"

    ld = np.asarray(mj.log_density(spec, params, X, y))
    assert np.all(np.isfinite(ld))
    np.testing.assert_allclose(ld, ld_ref, rtol=RTOL, atol=ATOL)
    ll, g = _vg(spec, params, X, y, w)
    assert float(ll) == pytest.approx(float(np.dot(w, ld_ref)), rel=RTOL)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
    lcp = np.asarray(mj.log_class_probs(spec, params, X))
    assert np.all(np.isfinite(lcp))
    # log p <= 0 up to rounding: logaddexp of two log-probabilities can round up by an ulp
    assert np.all(lcp <= 1e-12)


# --------------------------------------------------------------------------- 2. gradients


def _flat(p: mj.Params) -> np.ndarray:
    return ref.pack(np.asarray(p.beta), np.asarray(p.tau), np.asarray(p.eta))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences_and_reference(case: Case):
    spec = case.spec()
    params = case.params()
    X, y, w = case.data(N_DATA)
    theta = _flat(params)

    ll, g = _vg(spec, params, X, y, w)
    assert isinstance(g, mj.Params)
    g_flat = _flat(g)

    # Central differences with relative step h = 1e-6. Truncation error h^2/6 |f'''| ~ 1e-10 and
    # rounding error eps |f| / h ~ 2e-16 * 100 / 1e-6 = 2e-8, so a tolerance of 1e-6 (relative to
    # the gradient's size) has a wide margin and still catches any wrong derivative term.
    def f(t: np.ndarray) -> float:
        b, ta, e = ref.unpack(t, case.d, case.K)
        return float(_vg(spec, mj.Params(b, ta, e), X, y, w)[0])

    fd = np.empty_like(theta)
    for j in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[j]))
        tp, tm = theta.copy(), theta.copy()
        tp[j] += h
        tm[j] -= h
        fd[j] = (f(tp) - f(tm)) / (tp[j] - tm[j])
    gscale = max(1.0, float(np.max(np.abs(g_flat))))
    np.testing.assert_allclose(g_flat, fd, rtol=1e-6, atol=1e-6 * gscale)

    # The reference's hand-written analytic gradient: the same quantity up to rounding.
    ll_ref, g_ref = ref.loglik_and_grad(theta, X, y, w, case.ref_model())
    np.testing.assert_allclose(g_flat, g_ref, rtol=1e-9, atol=1e-11 * gscale)
    assert float(ll) == pytest.approx(ll_ref, rel=RTOL)


# --------------------------------------------------------------------------- 3. sampling
# Compiling JAX's float64 Threefry normal / uniform and the truncated-chi bisection costs seconds
# per new shape on CPU, so the sampling tests share a few shapes: (N_BIG, 3), (N_RADIUS, 3) and
# (N_SMALL, 3).

SAMPLE_CASE = Case(
    "sample", 3, 4, "linear", "tanh", "linear", "tanh", scale=2.0, bias=(0.5, -0.5, 0.0), seed=11
)
N_BIG = 200_000
N_RADIUS = 20_000
N_SMALL = 2_000
RADIUS = 1.5


@pytest.fixture(scope="module")
def big_sample():
    spec = SAMPLE_CASE.spec()
    params = SAMPLE_CASE.params()
    X, y = mj.sample(jax.random.key(2024), spec, params, N_BIG)
    return spec, params, np.asarray(X), np.asarray(y)


@pytest.fixture(scope="module")
def radius_sample():
    spec = SAMPLE_CASE.spec()
    params = SAMPLE_CASE.params()
    X, y = mj.sample(jax.random.key(77), spec, params, N_RADIUS, radius=RADIUS)
    return np.asarray(X), np.asarray(y)


def test_sample_shapes_and_dtypes(big_sample):
    spec, _, X, y = big_sample
    assert X.shape == (N_BIG, spec.d) and X.dtype == np.float64
    assert y.shape == (N_BIG,) and y.dtype == np.int32
    assert y.min() >= 0 and y.max() <= spec.K - 1


def test_sample_class_frequencies_match_model(big_sample):
    """Given X, count_k - sum_i p_k(x_i) has mean 0 and variance sum_i p_k(1 - p_k) exactly, so
    z is ~N(0, 1) per class; |z| < 4.5 (two-sided p ~ 7e-6 per class) is a generous bound."""
    spec, params, X, y = big_sample
    p = np.asarray(mj.class_probs(spec, params, X))
    counts = np.bincount(y, minlength=spec.K)
    expected = p.sum(axis=0)
    sd = np.sqrt((p * (1.0 - p)).sum(axis=0))
    z = (counts - expected) / sd
    assert np.all(np.abs(z) < 4.5), z
    # the design is not degenerate: every class is reasonably frequent
    assert np.all(counts > 0.02 * N_BIG)


def test_sample_covariates_standard_normal(big_sample):
    """Mean: sqrt(n) * mean ~ N(0, 1). Covariance entries: Var(x_i x_j) = 1 (i != j) or 2 (i == j)
    for a standard normal, so (C_ij - delta_ij) / sqrt(v / n) is ~N(0, 1). Bound 4.5 per entry."""
    _, _, X, _ = big_sample
    n, d = X.shape
    z_mean = X.mean(axis=0) * np.sqrt(n)
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    C = X.T @ X / n
    v = np.where(np.eye(d, dtype=bool), 2.0, 1.0)
    z_cov = (C - np.eye(d)) / np.sqrt(v / n)
    assert np.all(np.abs(z_cov) < 4.5), z_cov


def _truncated_chi_moments(d: int, radius: float) -> tuple[float, float]:
    mass = stats.chi.cdf(radius, d)
    m1 = integrate.quad(lambda r: r * stats.chi.pdf(r, d), 0.0, radius, epsabs=1e-13)[0] / mass
    m2 = integrate.quad(lambda r: r * r * stats.chi.pdf(r, d), 0.0, radius, epsabs=1e-13)[0] / mass
    return m1, m2 - m1 * m1


def test_sample_radius_truncated_chi(radius_sample):
    """With radius, ||x|| follows chi_d truncated to [0, radius] and directions stay uniform.
    Truncation at 1.5 keeps only ~48% of the chi_3 mass, so an untruncated law, a rescaled one or
    a uniform-in-ball radius would all fail the KS test by a wide margin."""
    X, y = radius_sample
    d = SAMPLE_CASE.d
    n = X.shape[0]
    norms = np.linalg.norm(X, axis=1)
    assert np.all(norms <= RADIUS)
    assert np.all(norms > 0)
    assert y.shape == (n,) and y.min() >= 0 and y.max() <= SAMPLE_CASE.K - 1

    mass = stats.chi.cdf(RADIUS, d)
    ks = stats.kstest(norms, lambda r: stats.chi.cdf(np.minimum(r, RADIUS), d) / mass)
    assert ks.pvalue > 1e-3, ks

    # Mean norm against the numerically integrated truncated-chi mean: CLT z-score < 4.5.
    m1, var = _truncated_chi_moments(d, RADIUS)
    z = (norms.mean() - m1) / np.sqrt(var / n)
    assert abs(z) < 4.5, (norms.mean(), m1, z)

    # Directions: each coordinate of u = x/||x|| has mean 0 and variance 1/d.
    u = X / norms[:, None]
    z_dir = u.mean(axis=0) / np.sqrt(1.0 / (d * n))
    assert np.all(np.abs(z_dir) < 4.5), z_dir


def test_sample_prefix_stable_and_keyed(big_sample, radius_sample):
    spec, params, X_big, y_big = big_sample
    # prefix stability: sample(key, N)[:n] == sample(key, n), with and without a radius
    X_s, y_s = mj.sample(jax.random.key(2024), spec, params, N_SMALL)
    np.testing.assert_array_equal(np.asarray(X_s), X_big[:N_SMALL])
    np.testing.assert_array_equal(np.asarray(y_s), y_big[:N_SMALL])
    X_r, y_r = radius_sample
    X_rs, y_rs = mj.sample(jax.random.key(77), spec, params, N_SMALL, radius=RADIUS)
    np.testing.assert_array_equal(np.asarray(X_rs), X_r[:N_SMALL])
    np.testing.assert_array_equal(np.asarray(y_rs), y_r[:N_SMALL])
    # same key, same data
    X_again, y_again = mj.sample(jax.random.key(2024), spec, params, N_SMALL)
    np.testing.assert_array_equal(np.asarray(X_again), np.asarray(X_s))
    np.testing.assert_array_equal(np.asarray(y_again), np.asarray(y_s))
    # different key, different data (labels agree only by chance: sum_k p_k^2 < 0.9 per row)
    X_o, y_o = mj.sample(jax.random.key(2025), spec, params, N_SMALL)
    assert not np.any(np.asarray(X_o) == np.asarray(X_s))
    assert np.mean(np.asarray(y_o) == np.asarray(y_s)) < 0.9


def test_sample_rejects_bad_arguments():
    spec, params = SAMPLE_CASE.spec(), SAMPLE_CASE.params()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="radius"):
        mj.sample(key, spec, params, 10, radius=0.0)
    with pytest.raises(ValueError, match="radius"):
        mj.sample(key, spec, params, 10, radius=-1.0)
    for bad_n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"^n\b"):
            mj.sample(key, spec, params, bad_n)


# --------------------------------------------------------------------------- 4. composability


def test_spec_is_static_pytree_and_hashable():
    case = CASES[1]
    spec = case.spec()
    assert jax.tree.leaves(spec) == []
    twin = case.spec()
    assert spec == twin and hash(spec) == hash(twin)
    assert spec != dataclasses.replace(case, scale=2.0).spec()
    assert spec != dataclasses.replace(case, bias=(0.3, -0.7, 1.2)).spec()
    # eta0 is stored by value (floats) and returned as float64
    np.testing.assert_array_equal(np.asarray(spec.eta0_array()), case.eta0())
    assert spec.eta0_array().dtype == jnp.float64
    assert spec.n_params == case.d + 1 + (case.K - 1) * case.d


def test_jit_with_spec_as_ordinary_argument():
    """The spec goes through jit as a normal (static) argument: equal specs share one trace,
    different specs retrace and give their own (not stale) results."""
    traces = []

    def ll(spec, params, X, y):
        traces.append(spec)
        return mj.log_likelihood(spec, params, X, y)

    jll = jax.jit(ll)
    case = CASES[0]
    params = case.params()
    X, y, _ = case.data(N_DATA)
    spec_a = case.spec()
    spec_a2 = case.spec()  # equal, distinct object
    eta0_b = case.eta0() + 0.5
    spec_b = mj.ModelSpec(d=case.d, K=case.K, frozen="linear", adapter="tanh", eta0=eta0_b)

    va = float(jll(spec_a, params, X, y))
    va2 = float(jll(spec_a2, params, X, y))
    vb = float(jll(spec_b, params, X, y))
    assert len(traces) == 2
    assert va == va2 == pytest.approx(float(mj.log_likelihood(spec_a, params, X, y)), rel=1e-13)
    assert vb == pytest.approx(float(mj.log_likelihood(spec_b, params, X, y)), rel=1e-13)
    assert va != vb


def test_jit_matches_eager():
    case = CASES[2]
    spec, params = case.spec(), case.params()
    X, y, w = case.data(N_DATA)
    ll_j, g_j = _vg(spec, params, X, y, w)
    assert float(ll_j) == pytest.approx(float(mj.log_likelihood(spec, params, X, y, w)), rel=1e-13)
    # jit(grad) against the reference's analytic gradient (eager grad is slow to trace op by op)
    _, g_ref = ref.loglik_and_grad(_flat(params), X, y, w, case.ref_model())
    np.testing.assert_allclose(_flat(g_j), g_ref, rtol=1e-9, atol=1e-10)
    for fn in (mj.class_probs, mj.adapter_posterior):
        args = (spec, params, X) if fn is mj.class_probs else (spec, params, X, y)
        np.testing.assert_allclose(
            np.asarray(jax.jit(fn)(*args)), np.asarray(fn(*args)), rtol=1e-13, atol=1e-15
        )


def test_vmap_over_datasets():
    case = CASES[1]
    spec, params = case.spec(), case.params()
    data = [case.data(N_DATA, seed=s) for s in range(3)]
    Xb = np.stack([d[0] for d in data])
    yb = np.stack([d[1] for d in data])
    wb = np.stack([d[2] for d in data])
    vg_b = jax.jit(
        jax.vmap(jax.value_and_grad(mj.log_likelihood, argnums=1), in_axes=(None, None, 0, 0, 0))
    )
    lls, grads = vg_b(spec, params, Xb, yb, wb)
    assert lls.shape == (3,) and grads.eta.shape == (3, case.K - 1, case.d)
    lds = jax.vmap(mj.log_density, in_axes=(None, None, 0, 0))(spec, params, Xb, yb)
    assert lds.shape == (3, N_DATA)
    for i in range(3):
        lr, gr = ref.loglik_and_grad(_flat(params), Xb[i], yb[i], wb[i], case.ref_model())
        assert float(lls[i]) == pytest.approx(lr, rel=RTOL)
        gi = ref.pack(grads.beta[i], grads.tau[i], grads.eta[i])
        np.testing.assert_allclose(gi, gr, rtol=1e-9, atol=1e-10)
        ldr = ref.log_density(Xb[i], yb[i], *case.params_np(), **_ref_kwargs(case))
        np.testing.assert_allclose(np.asarray(lds[i]), ldr, rtol=RTOL, atol=ATOL)


def test_vmap_over_params_batch():
    case = CASES[3]
    spec = case.spec()
    plist = [case.params(seed=s) for s in range(4)]
    pbatch = jax.tree.map(lambda *xs: jnp.stack(xs), *plist)
    assert isinstance(pbatch, mj.Params)
    assert pbatch.beta.shape == (4, case.d) and pbatch.eta.shape == (4, case.K - 1, case.d)
    X, y, w = case.data(N_DATA)

    vg_p = jax.jit(
        jax.vmap(
            jax.value_and_grad(mj.log_likelihood, argnums=1), in_axes=(None, 0, None, None, None)
        )
    )
    lls, grads = vg_p(spec, pbatch, X, y, w)
    probs = jax.vmap(mj.class_probs, in_axes=(None, 0, None))(spec, pbatch, X)
    assert isinstance(grads, mj.Params)
    assert probs.shape == (4, N_DATA, case.K)
    for i, p in enumerate(plist):
        lr, gr = ref.loglik_and_grad(_flat(p), X, y, w, case.ref_model())
        assert float(lls[i]) == pytest.approx(lr, rel=RTOL)
        gi = ref.pack(grads.beta[i], grads.tau[i], grads.eta[i])
        np.testing.assert_allclose(gi, gr, rtol=1e-9, atol=1e-10)
        cpr = ref.class_probs(X, *case.params_np(seed=i), **_ref_kwargs(case))
        np.testing.assert_allclose(np.asarray(probs[i]), cpr, rtol=RTOL, atol=1e-300)


# --------------------------------------------------------------------------- 5. zero-weight padding

_N_PAD = 4


def _padded(X, y, w, X_pad, y_pad):
    Xp = np.concatenate([X, X_pad])
    yp = np.concatenate([y, y_pad])
    wp = np.concatenate([w, np.zeros(len(y_pad))])
    return Xp, yp, wp


def test_zero_weight_padding_invariance():
    """Rows with weight 0 (huge covariates 1e300, labels out of range) change neither the
    log-likelihood nor its gradient. The only possible difference is the summation order of the
    longer array, hence rtol 1e-12."""
    case = CASES[1]
    spec, params = case.spec(), case.params()
    X, y, w = case.data(N_DATA)
    X_pad = np.array([[1e300] * case.d, [-1e300] * case.d, [1e300, -1e300, 3.0, 0.0], [0.0] * 4])
    y_pad = np.array([1, 10**9, -3, 2])
    assert len(y_pad) == _N_PAD
    Xp, yp, wp = _padded(X, y, w, X_pad, y_pad)

    ll0, g0 = _vg(spec, params, X, y, w)
    ll1, g1 = _vg(spec, params, Xp, yp, wp)
    assert float(ll1) == pytest.approx(float(ll0), rel=1e-12)
    assert float(mj.log_likelihood(spec, params, Xp, yp, wp)) == pytest.approx(
        float(ll0), rel=1e-12
    )
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        assert bool(jnp.all(jnp.isfinite(b)))
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)

    # weights of ones == no weights
    ones = np.ones(len(y))
    assert float(mj.log_likelihood(spec, params, X, y, ones)) == pytest.approx(
        float(mj.log_likelihood(spec, params, X, y)), rel=1e-14
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_zero_weight_padding_nonfinite_covariates_gradient(bad):
    case = CASES[1]
    spec, params = case.spec(), case.params()
    X, y, w = case.data(N_DATA)
    Xp, yp, wp = _padded(X, y, w, np.full((_N_PAD, case.d), bad), np.zeros(_N_PAD, np.int64))
    ll0, g0 = _vg(spec, params, X, y, w)
    ll1, g1 = _vg(spec, params, Xp, yp, wp)
    assert float(ll1) == pytest.approx(float(ll0), rel=1e-12)  # the value is protected ...
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):  # ... the gradient not
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- 6. bad input

_GOOD_SPEC = dict(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2))


@pytest.mark.parametrize(
    ("kwargs", "argname"),
    [
        (dict(K=1, eta0=np.zeros((0, 2))), "K"),
        (dict(K=0), "K"),
        (dict(d=0, eta0=np.zeros((2, 0))), "d"),
        (dict(d=2.0), "d"),
        (dict(d="2"), "d"),
        (dict(d=True), "d"),
        (dict(K=3.0), "K"),
        (dict(adapter="swish"), "adapter"),
        (dict(frozen="softplus"), "frozen"),
        (dict(adapter=3), "adapter"),
        (dict(eta0=np.eye(3)), "eta0"),
        (dict(eta0=np.ones(2)), "eta0"),
        (dict(eta0=[[1.0, np.nan], [0.0, 1.0]]), "eta0"),
        (dict(eta0=[[1.0, np.inf], [0.0, 1.0]]), "eta0"),
        (dict(eta0=[[1.0, 0.0], [1.0]]), "eta0"),
        (dict(bias=[1.0, 2.0, 3.0]), "bias"),
        (dict(bias=[1.0]), "bias"),
        (dict(bias=[1.0, np.nan]), "bias"),
        (dict(frozen_bias=[[1.0, 2.0]]), "frozen_bias"),
        (dict(scale=np.inf), "scale"),
        (dict(scale="big"), "scale"),
        (dict(frozen_scale=np.nan), "frozen_scale"),
        (dict(gate="softmax2"), "gate"),
    ],
)
def test_modelspec_rejects_bad_input(kwargs, argname):
    with pytest.raises(ValueError, match=rf"^{argname}\b"):
        mj.ModelSpec(**{**_GOOD_SPEC, **kwargs})


def test_modelspec_accepts_numpy_integers_and_callables():
    spec = mj.ModelSpec(**{**_GOOD_SPEC, "d": np.int64(2), "K": np.int32(3)})
    assert spec.d == 2 and spec.K == 3 and type(spec.d) is int
    mj.ModelSpec(**{**_GOOD_SPEC, "adapter": lambda z: jnp.sin(z)})


def test_modelspec_validates_expert_objects():
    with pytest.raises(ValueError, match="frozen"):
        mj.ModelSpec(**{**_GOOD_SPEC, "frozen": mj.Expert("tanh", bias=(1.0, 2.0, 3.0))})


_B, _T, _E = np.zeros(2), 0.5, np.zeros((2, 2))


@pytest.mark.parametrize(
    ("args", "argname"),
    [
        ((np.array([0.0, np.nan]), _T, _E), "beta"),
        ((_B, np.inf, _E), "tau"),
        ((_B, np.float64(np.nan), _E), "tau"),
        ((_B, jnp.array(jnp.nan), _E), "tau"),
        ((_B, _T, np.array([[0.0, 0.0], [-np.inf, 0.0]])), "eta"),
        ((np.zeros((2, 1)), _T, _E), "beta"),
        ((np.float64(1.0), _T, _E), "beta"),
        ((_B, [0.5], _E), "tau"),
        ((_B, _T, np.zeros(2)), "eta"),
        ((_B, _T, np.zeros((1, 2, 2))), "eta"),
        ((_B, _T, [[1.0, 2.0], [3.0]]), "eta"),
    ],
)
def test_params_rejects_bad_values(args, argname):
    with pytest.raises(ValueError, match=rf"^{argname}\b"):
        mj.Params(*args)


def test_params_converts_to_float64_and_is_immutable():
    p = mj.Params([1, 2], 3, [[1, 2], [3, 4]])
    assert p.beta.dtype == jnp.float64 and p.tau.dtype == jnp.float64
    assert p.eta.dtype == jnp.float64 and p.tau.shape == ()
    with pytest.raises(AttributeError):
        p.tau = 1.0
    q = p.replace(tau=jnp.asarray(0.0))
    assert float(q.tau) == 0.0 and float(p.tau) == 3.0


@pytest.mark.parametrize(
    ("args", "argname"),
    [
        ((_B, np.float32(np.nan), _E), "tau"),
        ((np.float32(1.0), _T, _E), "beta"),
        ((_B, _T, "ab"), "eta"),
    ],
)
def test_params_rejects_numpy_scalars_and_strings(args, argname):
    with pytest.raises(ValueError, match=rf"^{argname}\b"):
        mj.Params(*args)


_BAD_CALLS = {
    "params.beta": lambda s, X, y: (mj.Params(np.zeros(3), 0.0, np.zeros((2, 2))), X, y, None),
    "params.eta": lambda s, X, y: (mj.Params(np.zeros(2), 0.0, np.zeros((1, 2))), X, y, None),
    "X": lambda s, X, y: (s[1], np.ones((5, 3)), y, None),
    "X ": lambda s, X, y: (s[1], np.ones(5), y, None),
    "y": lambda s, X, y: (s[1], X, np.zeros(4, np.int32), None),
    "y ": lambda s, X, y: (s[1], X, np.zeros((5, 1), np.int32), None),
    "weights": lambda s, X, y: (s[1], X, y, np.ones(6)),
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("argname", list(_BAD_CALLS))
def test_log_likelihood_rejects_mismatched_shapes(argname, jit):
    spec = mj.ModelSpec(**_GOOD_SPEC)
    good = (spec, mj.Params(np.zeros(2), 0.0, np.zeros((2, 2))))
    X, y = np.ones((5, 2)), np.zeros(5, np.int32)
    params, Xb, yb, wb = _BAD_CALLS[argname](good, X, y)
    fn = _ll if jit else mj.log_likelihood
    with pytest.raises(ValueError, match=rf"^{argname.strip()}\b"):
        fn(spec, params, Xb, yb, wb)


def test_other_entry_points_reject_mismatched_shapes():
    spec = mj.ModelSpec(**_GOOD_SPEC)
    params = mj.Params(np.zeros(2), 0.0, np.zeros((2, 2)))
    bad_params = mj.Params(np.zeros(2), 0.0, np.zeros((1, 2)))
    X, y = np.ones((5, 2)), np.zeros(5, np.int32)
    for fn in (mj.class_probs, mj.log_class_probs):
        with pytest.raises(ValueError, match=r"^X\b"):
            fn(spec, params, np.ones((5, 3)))
        with pytest.raises(ValueError, match=r"^params\.eta"):
            fn(spec, bad_params, X)
    for fn in (mj.log_density, mj.adapter_posterior):
        with pytest.raises(ValueError, match=r"^y\b"):
            fn(spec, params, X, np.zeros(4, np.int32))
        with pytest.raises(ValueError, match=r"^params\.eta"):
            fn(spec, bad_params, X, y)
    with pytest.raises(ValueError, match=r"^params\.eta"):
        mj.hellinger_distance(spec, params, bad_params, X)


# --------------------------------------------------------------------------- 7. truth schedules


def test_homogeneous_truth_schedule():
    case = CASES[1]
    spec = case.spec()
    beta, tau, _ = case.params_np()
    delta = np.random.default_rng(12).standard_normal((case.K - 1, case.d))
    gamma = 0.125
    truth = mj.homogeneous_truth(spec, beta, tau, delta, gamma)
    # A Truth is the family's schedule: leaves carry the adapter axis (m = 1).
    np.testing.assert_array_equal(np.asarray(truth.eta), case.eta0()[None])
    with pytest.raises(ValueError, match="n > 0"):
        truth.at(0)
    with pytest.raises(ValueError, match="n > 0"):
        truth.at(-5.0)

    ns = np.array([1e3, 1e4, 1e5, 1e8, 1e16])
    dists = []
    for n in ns:
        p = truth.at(n)
        assert isinstance(p, mj.Params)
        expected = case.eta0() + delta * n ** (-gamma)
        np.testing.assert_allclose(np.asarray(p.eta), expected, rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(np.asarray(p.beta), beta)
        assert float(p.tau) == tau
        q = mj.truth_at(truth, n)
        np.testing.assert_array_equal(np.asarray(q.eta), np.asarray(p.eta))
        dists.append(float(jnp.linalg.norm(p.eta - spec.eta0_array())))
    dists = np.array(dists)
    # ||eta*(n) - eta0||_F = ||delta||_F n^(-gamma) exactly: the log-log slope is -gamma
    np.testing.assert_allclose(dists * ns**gamma, np.linalg.norm(delta), rtol=1e-12)
    slope = np.polyfit(np.log(ns), np.log(dists), 1)[0]
    assert slope == pytest.approx(-gamma, abs=1e-10)
    assert dists[-1] < 0.1 * dists[0]  # eta*(n) -> eta0

    # n may be traced: jit and vmap over n
    batch = jax.jit(jax.vmap(truth.at))(jnp.asarray(ns))
    for i, n in enumerate(ns):
        np.testing.assert_allclose(
            np.asarray(batch.eta[i]), np.asarray(truth.at(n).eta), rtol=1e-14, atol=1e-15
        )

    # gamma = 0: a constant offset eta0 + delta
    t0 = mj.homogeneous_truth(spec, beta, tau, delta, 0.0)
    np.testing.assert_allclose(np.asarray(t0.at(1e6).eta), case.eta0() + delta, rtol=1e-14)


def test_heterogeneous_truth_is_constant():
    case = CASES[0]
    spec = case.spec()
    beta, tau, eta = case.params_np()
    truth = mj.heterogeneous_truth(spec, beta, tau, eta)
    np.testing.assert_array_equal(np.asarray(truth.delta), np.zeros_like(eta)[None])
    for n in (1, 1e3, 1e5, 1e12):
        p = truth.at(n)
        np.testing.assert_array_equal(np.asarray(p.eta), eta)
        np.testing.assert_array_equal(np.asarray(p.beta), beta)
        assert float(p.tau) == tau


@pytest.mark.parametrize("gamma", [-0.1, -1e-12, np.nan, np.inf])
def test_homogeneous_truth_rejects_bad_gamma(gamma):
    spec = mj.ModelSpec(**_GOOD_SPEC)
    with pytest.raises(ValueError, match="gamma"):
        mj.homogeneous_truth(spec, np.zeros(2), 0.0, np.ones((2, 2)), gamma)


def test_truth_constructors_reject_bad_shapes():
    spec = mj.ModelSpec(**_GOOD_SPEC)
    with pytest.raises(ValueError, match="delta"):
        mj.homogeneous_truth(spec, np.zeros(2), 0.0, np.ones((1, 2)), 0.1)
    with pytest.raises(ValueError, match="beta"):
        mj.homogeneous_truth(spec, np.zeros(3), 0.0, np.ones((2, 2)), 0.1)
    with pytest.raises(ValueError, match="eta"):
        mj.heterogeneous_truth(spec, np.zeros(2), 0.0, np.ones((2, 3)))
    with pytest.raises(ValueError, match="tau"):
        mj.heterogeneous_truth(spec, np.zeros(2), np.nan, np.ones((2, 2)))


# --------------------------------------------------------------------------- 8. posterior, losses


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[2], CASES[4], EXTREME_CASES[1]], ids=lambda c: c.name
)
def test_adapter_posterior_matches_bayes_rule(case: Case):
    spec = case.spec()
    beta, tau, eta = case.params_np()
    params = mj.Params(beta, tau, eta)
    X, y, w = case.data(N_DATA)
    kw = _ref_kwargs(case)
    rows = np.arange(N_DATA)
    # reference ingredients: the pure experts (gate forced to one side: tau = -inf / +inf)
    # and the gate weight w = sigmoid(beta . x + tau)
    with np.errstate(invalid="ignore"):
        lp0 = ref.log_class_probs(X, np.zeros(case.d), -np.inf, eta, **kw)[rows, y]
        lp1 = ref.log_class_probs(X, np.zeros(case.d), np.inf, eta, **kw)[rows, y]
    u = X @ beta + tau
    log_w, log_1mw = -np.logaddexp(0.0, -u), -np.logaddexp(0.0, u)
    r_ref = np.exp(log_w + lp1 - np.logaddexp(log_w + lp1, log_1mw + lp0))
    if case.scale < 10:  # the plain formula w p1 / (w p1 + (1-w) p0), where nothing underflows
        w, p0, p1 = np.exp(log_w), np.exp(lp0), np.exp(lp1)
        np.testing.assert_allclose(r_ref, w * p1 / (w * p1 + (1 - w) * p0), rtol=1e-12)

    r = np.asarray(mj.adapter_posterior(spec, params, X, y))
    assert r.shape == (N_DATA,)
    assert np.all((r >= 0) & (r <= 1))
    np.testing.assert_allclose(r, r_ref, rtol=1e-9, atol=1e-14)
    # consistency with the score: d loglik / d tau = sum_i weight_i (r_i - w(x_i))
    _, g = _vg(spec, params, X, y, w)
    expected = float(np.sum(w * (r_ref - np.exp(log_w))))
    assert float(g.tau) == pytest.approx(expected, rel=1e-9, abs=1e-10)


def test_parameter_errors_hand_made():
    truth = mj.Params([0.0, 0.0, 0.0], 0.0, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    est = mj.Params([1.0, 2.0, 2.0], math.log(3.0), [[1.0, 4.0, 5.0], [0.0, 0.0, 0.0]])
    err = mj.parameter_errors(est, truth)
    assert isinstance(err, mj.Errors)
    assert float(err.beta) == pytest.approx(3.0, rel=1e-15)  # ||(1, 2, 2)||
    assert float(err.exp_tau) == pytest.approx(2.0, rel=1e-15)  # |3 - 1|
    assert float(err.eta) == pytest.approx(5.0, rel=1e-15)  # ||(3, 4)||_F
    zero = mj.parameter_errors(truth, truth)
    assert float(zero.beta) == float(zero.exp_tau) == float(zero.eta) == 0.0
    # exp(tau) error is not |tau_hat - tau*|
    e2 = mj.parameter_errors(truth.replace(tau=jnp.asarray(2.0)), truth.replace(tau=1.0))
    assert float(e2.exp_tau) == pytest.approx(math.e**2 - math.e, rel=1e-14)


def _ref_hellinger(case: Case, est: tuple, truth: tuple, X: np.ndarray) -> float:
    """Stable form: H^2(p, q) = 1/2 sum_k (sqrt p_k - sqrt q_k)^2, averaged H over rows."""
    kw = _ref_kwargs(case)
    pa = ref.class_probs(X, *est, **kw)
    pb = ref.class_probs(X, *truth, **kw)
    return float(np.mean(np.sqrt(0.5 * np.sum((np.sqrt(pa) - np.sqrt(pb)) ** 2, axis=1))))


def test_hellinger_distance_values():
    case = CASES[1]
    spec = case.spec()
    X, _, _ = case.data(N_DATA)
    t = case.params_np(0)
    truth = mj.Params(*t)
    for seed in (1, 2):
        e = case.params_np(seed)
        est = mj.Params(*e)
        h = float(mj.hellinger_distance(spec, est, truth, X))
        assert 0.0 < h <= 1.0
        assert h == pytest.approx(_ref_hellinger(case, e, t, X), rel=1e-9)
        assert h == pytest.approx(float(mj.hellinger_distance(spec, truth, est, X)), rel=1e-12)
    # near-disjoint class distributions: H close to, but not above, 1
    ext = EXTREME_CASES[0]
    sx = ext.spec()
    Xe, _, _ = ext.data(N_DATA)
    pa = mj.Params(np.zeros(ext.d), 30.0, 5.0 * ext.eta0())
    pb = mj.Params(np.zeros(ext.d), 30.0, -5.0 * ext.eta0())
    h = float(mj.hellinger_distance(sx, pa, pb, Xe))
    assert 0.9 < h <= 1.0
    # identical params: 0 up to the sqrt(1 - BC) cancellation floor (~sqrt(eps), see below)
    assert float(mj.hellinger_distance(spec, truth, truth, X)) < 1e-7


def test_hellinger_distance_zero_for_identical_params():
    case = CASES[1]
    spec = case.spec()
    X, _, _ = case.data(N_DATA)
    truth = case.params(0)
    assert float(mj.hellinger_distance(spec, truth, truth, X)) <= 1e-12


# --------------------------------------------------------------------------- 9. property test


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    d=st.integers(1, 3),
    K=st.integers(2, 4),
    frozen=st.sampled_from(ACTS),
    adapter=st.sampled_from(ACTS),
    scale=st.floats(0.1, 60.0),
    pscale=st.floats(0.0, 5.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_class_probs_rows_are_distributions(d, K, frozen, adapter, scale, pscale, seed):
    rng = np.random.default_rng(seed)
    spec = mj.ModelSpec(
        d=d,
        K=K,
        frozen=frozen,
        adapter=adapter,
        scale=scale,
        eta0=pscale * rng.standard_normal((K - 1, d)),
    )
    params = mj.Params(
        pscale * rng.standard_normal(d),
        pscale * rng.standard_normal(),
        pscale * rng.standard_normal((K - 1, d)),
    )
    X = 2.0 * rng.standard_normal((16, d))
    p = np.asarray(mj.class_probs(spec, params, X))
    assert p.shape == (16, K)
    assert np.all(np.isfinite(p))
    assert np.all((p >= 0.0) & (p <= 1.0))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)

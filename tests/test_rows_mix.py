"""Closed-form row derivatives of the general mixture (`moejax.mix.rows`, rows-last planes with a
packed Hessian) and the activation derivatives (`moejax.experts.activation_derivs`) against
autodiff of the same functions (rows first, full Hessians).

Every case is small (16 rows); the cases of a test share one compilation."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moejax  # noqa: F401  (float64)
from moejax.experts import Expert, activation_derivs, resolve_activation
from moejax.mix import MixSpec
from moejax.mix.density import component_logjoint, n_predictors, row_loglik
from moejax.mix.rows import mixture_row_fns, posteriors, unpack_symmetric

GATES = ("softmax", "input_free", "sigmoid")
PAIRS = (  # (adapter likelihood, frozen likelihood, K)
    ("categorical", "categorical", 3),
    ("categorical", "categorical", 2),  # (m = 2 only)
    ("gaussian", "gaussian", 2),
    ("laplace", "laplace", 2),
    ("gaussian", "laplace", 2),
)
N = 16


def _spec(gate, lik, flik, K, m, adapter="tanh", frozen="linear"):
    R = K - 1 if lik == "categorical" else 1
    eta0 = np.random.default_rng(0).standard_normal((R, 2))
    bias = [0.3, -0.2][:R]
    return MixSpec(
        d=2,
        frozen=frozen,
        adapter=adapter,
        eta0=eta0,
        K=K,
        adapters=m,
        gate=gate,
        likelihood=lik,
        frozen_likelihood=flik,
        scale=1.7,
        bias=bias,
    )


def _data(spec, seed, gscale=2.0, big=30.0):
    """Random U, y, lf0; the last rows carry large gate logits (+-big) and residuals."""
    rng = np.random.default_rng(seed)
    W, m, M = n_predictors(spec), spec.n_gates, spec.m
    U = rng.standard_normal((N, W))
    U[:, :m] *= gscale
    U[-4:, :m] = big * rng.choice([-1.0, 1.0], size=(4, m))
    U[-2, :m] = big  # every adapter far on one side
    U[-1, :m] = -big
    if spec.regression:
        U[:, -M:] = 0.5 * rng.standard_normal((N, M))  # log-variances
        y = 2.0 * rng.standard_normal(N)
        y[-3:] *= 20.0
        lf0 = -0.5 * (np.log(2 * np.pi) + (y - 0.4) ** 2)
    else:
        y = rng.integers(0, spec.K, size=N).astype(np.int32)
        lf0 = np.log(rng.dirichlet(np.ones(spec.K), size=N)[np.arange(N), y])
    lf0[-5] = -40.0  # frozen expert nearly impossible on one row
    return jnp.asarray(U), jnp.asarray(y), jnp.asarray(lf0)


def _reference(spec, U, y, lf0):
    """Per-row autodiff of -row_loglik (value, gradient, Hessian) and the responsibilities."""

    def phi(u, y, lf0):
        return -row_loglik(spec, u, y, lf0)

    def row(u, y, lf0):
        v, g = jax.value_and_grad(phi)(u, y, lf0)
        return v, g, jax.hessian(phi)(u, y, lf0)

    lj = component_logjoint(spec, U, y, lf0)
    return (*jax.vmap(row)(U, y, lf0), jnp.exp(lj - jax.nn.logsumexp(lj, axis=-1, keepdims=True)))


def _closed(spec, U, y, lf0):
    """The closed forms in their rows-last layout (U (W, rows), packed Hessian planes),
    brought back to rows first (and the Hessian unpacked) to compare with the reference."""
    rows, W, Ut = mixture_row_fns(spec), n_predictors(spec), U.T
    v1, g1 = rows.value_grad(Ut, (y, lf0))
    v2, g2, hp = rows.value_grad_hess(Ut, (y, lf0))
    g1, g2, hp = (jnp.stack(list(p)) for p in (g1, g2, hp))  # lists of planes -> arrays
    h2 = jnp.moveaxis(unpack_symmetric(hp, W), -1, 0)
    assert hp.shape == (W * (W + 1) // 2, U.shape[0])
    return (
        rows.value(Ut, (y, lf0)),
        (v1, g1.T),
        (v2, g2.T, h2),
        posteriors(spec, Ut, y, lf0).T,
    )


def _run(specs, datas):
    """[(closed form, reference)] for every case, from one compilation (XLA's backend
    optimisations off: these graphs run once, compiling them is the cost)."""
    f = jax.jit(
        lambda ds: [(_closed(s, *d), _reference(s, *d)) for s, d in zip(specs, ds, strict=True)]
    )
    lowered = f.lower(datas)
    try:
        compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # an XLA without that option
        compiled = lowered.compile()
    return compiled(datas)


def _close(got, want, rtol=1e-10):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    atol = 1e-12 * max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _check(spec, got, want):
    (v0, (v1, g1), (v2, g2, h2), r), (v, g, h, r_ref) = got, want
    W = n_predictors(spec)
    assert g2.shape == (N, W) and h2.shape == (N, W, W) and r.shape == (N, spec.components)
    for a in (v0, v1, v2):
        _close(a, v)
    for a in (g1, g2):
        _close(a, g)
    _close(h2, h)
    _close(r, r_ref, rtol=1e-12)


@pytest.mark.parametrize("gate", GATES)
def test_row_fns_match_autodiff(gate):
    """Every likelihood pair and m = 1, 2, 3 under one gate, including rows with |g| = 30."""
    cases = [(p, m) for p, m in itertools.product(PAIRS, (1, 2, 3)) if p[2] == 3 or m == 2]
    specs = [_spec(gate, lik, flik, K, m) for (lik, flik, K), m in cases]
    datas = [_data(s, seed=10 * s.m + s.K) for s in specs]
    for spec, (got, want) in zip(specs, _run(specs, datas), strict=True):
        _check(spec, got, want)


@pytest.mark.parametrize("gate", GATES)
def test_plain_row_fns_match_autodiff(gate):
    """The plain MoE (no frozen expert, expert 0 the gate's reference, every expert's
    predictors estimated): every likelihood, m = 2 and 3 experts, rows with |g| = 30."""
    cases = [(("categorical", 3), 2), (("categorical", 3), 3), (("gaussian", 2), 2)]
    cases += [(("laplace", 2), 3)]
    specs = [_spec(gate, lik, lik, K, m, frozen=None) for (lik, K), m in cases]
    datas = [_data(s, seed=10 * s.m + s.K + 1) for s in specs]
    for spec, (got, want) in zip(specs, _run(specs, datas), strict=True):
        assert spec.plain and n_predictors(spec) == spec.m - 1 + spec.m * (spec.R + spec.regression)
        _check(spec, got, want)


def test_laplace_gate_row_fns_match_autodiff():
    """The Laplace gate (logit tau - ||x - W||, a function of two predictors per logit,
    q = ||x - W||^2 and t = tau): the softmax's closed forms carried to (q, t) by the chain
    rule (`moejax.mix.rows.gate_chain`), against autodiff of the density through the same
    logits; contaminated (m = 1, 2) and plain (m = 2, 3), categorical and Gaussian experts,
    rows with q from 0.05 to 900 (q > 0: a distance)."""
    cases = [("categorical", 3, 1, "linear"), ("gaussian", 2, 2, "linear")]
    cases += [("categorical", 3, 2, None), ("laplace", 2, 3, None)]
    specs, datas = [], []
    for lik, K, m, frozen in cases:
        spec = _spec("laplace", lik, lik, K, m, frozen=frozen)
        U, y, lf0 = _data(spec, seed=5 + m)
        ng = spec.n_gates
        U = U.at[:, :ng].set(jnp.abs(U[:, :ng]) ** 2 + 0.05)
        specs.append(spec)
        datas.append((U, y, lf0))
    for spec, (got, want) in zip(specs, _run(specs, datas), strict=True):
        assert n_predictors(spec) == 2 * spec.n_gates + spec.m * (spec.R + spec.regression)
        _check(spec, got, want)


def test_row_fns_other_activations():
    """The activation's curvature a'' enters the z-Hessian: other activations, a user one."""
    specs = [
        _spec(gate, lik, flik, K, 2, adapter=act)
        for act, gate in (("sigmoid", "softmax"), ("gelu", "sigmoid"), (jnp.sin, "input_free"))
        for lik, flik, K in (("categorical", "categorical", 3), ("laplace", "gaussian", 2))
    ]
    datas = [_data(s, seed=3) for s in specs]
    for spec, (got, want) in zip(specs, _run(specs, datas), strict=True):
        _check(spec, got, want)


def test_float_labels_accepted():
    """Categorical labels stored as float64 give the derivatives of int32 labels."""
    spec = _spec("sigmoid", "categorical", "categorical", 3, 2)
    U, y, lf0 = _data(spec, seed=4)
    f = jax.jit(mixture_row_fns(spec).value_grad_hess)
    for a, b in zip(f(U.T, (y, lf0)), f(U.T, (y.astype(jnp.float64), lf0)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_extreme_predictors_are_finite():
    """|g| = 50 on every row, residuals up to ~1e5 and log-variances +-8: all finite."""
    specs, datas = [], []
    for gate, lik in itertools.product(GATES, ("categorical", "gaussian", "laplace")):
        spec = _spec(gate, lik, lik, 3, 2)
        U, y, lf0 = _data(spec, seed=7, gscale=50.0, big=50.0)
        if spec.regression:
            y = y * 1e3
            U = U.at[:, -2:].set(jnp.array([-8.0, 8.0]))
        specs.append(spec)
        datas.append((U, y, lf0))
    f = jax.jit(lambda ds: [_closed(s, *d) for s, d in zip(specs, ds, strict=True)])
    for out in f(datas):
        for a in jax.tree.leaves(out):
            assert np.all(np.isfinite(np.asarray(a)))


@pytest.mark.parametrize(
    "name", ["linear", "tanh", "sigmoid", "gelu", "relu", "softplus-0.1", "softplus-2", "sin"]
)
def test_activation_derivs_match_forward_autodiff(name):
    act = jnp.sin if name == "sin" else name
    Z = jnp.asarray(np.random.default_rng(1).uniform(-4.0, 4.0, size=(5, 7)))
    if name == "relu":
        Z = jnp.where(jnp.abs(Z) < 0.1, 0.5, Z)  # away from the kink
    f = resolve_activation(act)
    ones = jnp.ones_like(Z)
    first = lambda z: jax.jvp(f, (z,), (ones,))[1]
    want = (f(Z), first(Z), jax.jvp(first, (Z,), (ones,))[1])
    got = activation_derivs(Expert(act), Z)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-11)
    np.testing.assert_array_equal(got[0], f(Z))  # same values as the density uses


def test_softplus_width_is_checked_and_tends_to_relu():
    """softplus-W is a ReLU smoothed to width W: within W log 2 of relu everywhere; a width
    that is not a positive number is refused in one line naming the argument and the rule."""
    Z = jnp.linspace(-4.0, 4.0, 81)
    for w in (1.0, 0.1, 0.01):
        gap = np.max(np.abs(np.asarray(resolve_activation(f"softplus-{w}")(Z) - jax.nn.relu(Z))))
        assert gap == pytest.approx(w * np.log(2.0), rel=1e-12)  # the largest gap is at z = 0
    for bad in ("softplus-0", "softplus--1", "softplus-x", "softplus-inf"):
        with pytest.raises(ValueError, match=r"^adapter: .* width W > 0") as exc:
            resolve_activation(bad, "adapter")
        assert "\n" not in str(exc.value)

"""Accelerated EM (em_accel "newton", the default, and "squarem") against plain EM and direct
MLE on a small two-adapter problem, vmapped over replicates; the em_accel option's checks.

The problem: the two-adapter softmax design of sweeps/adapters.toml (d = 2, K = 3, linear
frozen expert, tanh adapters, beta* = (e1, e2), tau* = 0, eta*_1 = 1.5 (e2, e1), eta*_2 =
-eta*_1 rotated) at n = 1500, LANES replicates from near-truth starts drawn as the sweep draws
them, fitted under one cap CAP = 60 EM iterations (below the sweep default of 100). Plain EM
converges linearly here and at this cap converges in none of the lanes (at n = 4000 it takes
82-100 or more iterations): that is what makes the assertions on the accelerated EM able to
fail (with the accelerator disabled the convergence test below fails).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from moejax.estimation.estimators import EM_ACCELS, fit, fit_data, prepare_data
from moejax.estimation.init import init_near_truth
from moejax.mix.sampling import sample
from moejax.sweep import ConfigError, config_hash, resolve
from moejax.sweep.grid import load_study
from moejax.sweep.simulate import build_problem

N = 1500
LANES = 4
CAP = 60
GAP = 1e-8  # relative log-likelihood gap to direct MLE: "the same optimum"


@functools.cache
def problem():
    cfg = next(p.config for p in load_study("sweeps/adapters.toml").points if p.name == "softmax")
    return cfg, build_problem(cfg)


@functools.cache
def lanes():
    """(prepared data, near-truth starts), each with a leading axis of LANES replicates."""
    cfg, pb = problem()
    spec, ini = pb.fit_spec, cfg["init"]
    truth = pb.truth.at(N)
    kd, ki = jax.random.split(jax.random.key(7))
    X, y = jax.vmap(lambda k: sample(k, spec, truth, N))(jax.random.split(kd, LANES))
    data = jax.vmap(lambda X, y: prepare_data(spec, X, y))(X, y)
    inits = jax.vmap(
        lambda k: init_near_truth(k, spec, truth, N, ini["c_gate"], ini["c_expert"], ini["rho"])
    )(jax.random.split(ki, LANES))
    return data, inits


@functools.cache
def fits(method: str, em_accel: str = "newton"):
    """LANES vmapped fits (numpy leaves) of one method / EM variant under the cap CAP."""
    cfg, pb = problem()
    data, inits = lanes()
    e = cfg["estimator"]

    def one(dt, p):
        return fit_data(
            pb.fit_spec,
            dt,
            p,
            method,
            "newton",
            pb.bounds,
            CAP,
            e["tol"],
            e["inner_max_iter"],
            em_accel=em_accel,
        )

    res = jax.jit(jax.vmap(one))(data, inits)
    return jax.tree.map(np.asarray, res)


def gap(res) -> np.ndarray:
    """(loglik_direct - loglik) / |loglik_direct| per lane."""
    d = fits("direct").loglik
    return (d - res.loglik) / np.abs(d)


def test_default_em_converges_in_every_lane_at_the_direct_optimum():
    """The default EM (em_accel "newton": EM, then Newton on the full likelihood once the
    relative log-likelihood change is below switch_tol = 1e-5) converges by its own rule in
    every lane within CAP EM iterations, at a box-KKT point like a direct fit, and ends at
    direct MLE's log-likelihood to 1e-8 relative (measured: 12-27 EM iterations, gap <= 2e-15).
    """
    direct = fits("direct")
    assert direct.converged.all()
    res = fits("em")
    assert res.converged.all(), (res.n_iter, res.status)
    assert (res.status == 0).all()
    assert (res.n_iter <= CAP).all() and (res.n_iter >= 1).all()
    # inner_steps holds the M-step solves and the final Newton solve
    assert (res.inner_steps > res.n_iter).all()
    assert np.max(np.abs(gap(res))) <= GAP, gap(res)
    assert np.max(res.grad_norm) <= 1e-8
    # the observed information is kept (the Hessian at the estimate, symmetric)
    assert res.info.shape[1:] == (14, 14)
    np.testing.assert_allclose(res.info, np.swapaxes(res.info, 1, 2), atol=1e-8)


def test_plain_em_does_not_converge_at_the_same_cap():
    """Plain EM (em_accel "none") still exists, is the slow one, and at the cap that the
    default meets it runs out in every lane here (status max_iter; its log-likelihood still
    1e-7 to 2e-4 short of direct's): the convergence assertion above fails with the
    accelerator disabled."""
    plain = fits("em", "none")
    assert not plain.converged.any()
    assert (plain.status == 1).all() and (plain.n_iter == CAP).all()
    assert fits("em").n_iter.max() < plain.n_iter.min()


def test_squarem_gets_closer_than_plain_em_in_the_same_em_iterations():
    """SQUAREM (em_accel "squarem", pure EM maps) at the same cap: every lane within 1e-8 of
    direct MLE's log-likelihood (measured <= 2e-11; it stops on the relative change 1e-12 in
    2 lanes of 4 before the cap), plain EM in none of them (measured 1e-7 to 2e-4)."""
    sq, plain = fits("em", "squarem"), fits("em", "none")
    assert np.max(np.abs(gap(sq))) <= GAP, gap(sq)
    assert (np.abs(gap(plain)) > GAP).all(), gap(plain)
    assert sq.converged.any()
    assert (sq.status[~sq.converged] == 1).all()


def test_squarem_cycles_stay_under_the_cap():
    """SQUAREM runs whole cycles of three EM maps and never more than max_iter maps."""
    res = fits("em", "squarem")
    assert (res.n_iter % 3 == 0).all() and (res.n_iter <= CAP).all()


def test_em_accel_is_checked_with_one_line_naming_it():
    """A bad em_accel or switch_tol is refused before anything compiles: fit's ValueError and
    the sweep config's ConfigError each name the field in one line."""
    cfg, pb = problem()
    data, inits = lanes()
    p = jax.tree.map(lambda a: a[0], inits)
    X = np.zeros((5, 2))
    y = np.zeros(5, np.int32)
    with pytest.raises(ValueError, match=r"^em_accel: unknown EM variant 'fast'") as exc:
        fit(pb.fit_spec, X, y, p, method="em", em_accel="fast")
    assert "\n" not in str(exc.value) and all(a in str(exc.value) for a in EM_ACCELS)
    with pytest.raises(ValueError, match=r"^switch_tol: must be >= 0"):
        fit(pb.fit_spec, X, y, p, method="em", switch_tol=-1.0)
    raw = {"model": {"d": 2}, "estimator": {"method": "em", "em_accel": "squarm"}}
    with pytest.raises(ConfigError, match=r"^estimator\.em_accel = 'squarm'") as exc:
        resolve(raw)
    assert "\n" not in str(exc.value) and "squarem" in str(exc.value)
    raw["estimator"] = {"method": "em", "switch_tol": -1e-3}
    with pytest.raises(ConfigError, match=r"^estimator\.switch_tol = -0\.001"):
        resolve(raw)


def test_em_options_enter_the_config_hash_of_em_runs_only():
    """The EM options change an EM run's results (its hash), never a direct run's: a direct
    config hashes as it did before the options existed, so its run directories resume."""
    base = {"model": {"d": 2}}
    direct = config_hash(resolve(base))
    before = resolve(base)
    del before["estimator"]["em_accel"], before["estimator"]["switch_tol"]
    assert config_hash(before) == direct
    assert config_hash(resolve({**base, "estimator": {"em_accel": "squarem"}})) == direct
    em = {**base, "estimator": {"method": "em"}}
    h = {
        a: config_hash(resolve({**em, "estimator": {"method": "em", "em_accel": a}}))
        for a in EM_ACCELS
    }
    assert len(set(h.values())) == len(EM_ACCELS)
    assert resolve(em)["estimator"]["em_accel"] == "newton"


def test_switch_tol_is_traced_and_em_accel_static():
    """Changing switch_tol (a number) reuses the compiled fit; em_accel selects the code."""
    from moejax.estimation import estimators

    cfg, pb = problem()
    data, inits = lanes()
    p = jax.tree.map(lambda a: a[0], inits)
    X, y = sample(jax.random.key(3), pb.fit_spec, pb.truth.at(400), 400)
    fitjit = estimators._fit_jit
    a = fit(pb.fit_spec, X, y, p, method="em", bounds=pb.bounds, max_iter=3)
    before = fitjit._cache_size()
    b = fit(pb.fit_spec, X, y, p, method="em", bounds=pb.bounds, max_iter=3, switch_tol=1e-2)
    assert fitjit._cache_size() == before
    assert int(b.n_iter) <= int(a.n_iter) <= 3
    fit(pb.fit_spec, X, y, p, method="em", bounds=pb.bounds, max_iter=3, em_accel="none")
    assert fitjit._cache_size() == before + 1

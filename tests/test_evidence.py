"""What a fit leaves behind: the estimate, its standard errors, its bound flags and the truth.

- `moejax.simulate` returns them for every member of the family (one adapter, two adapters,
  the input-free gate, Gaussian regression, over-fitted adapters, streamed data), and every
  error column of fits.csv is recomputed from them to 1e-12 relative (density too, from the
  lane's density points).
- A sweep's estimates.npz equals simulate's arrays bit for bit, in fits.csv's row order, also
  across chunk sizes; an older run's parts without them are read with a warning.
- The observed information equals minus the Hessian of the log-likelihood by central finite
  differences; standard errors follow the rules of `moejax.estimation.information`.
- Coverage and SE calibration recover known values on synthetic estimates; the weighted
  Voronoi loss equals an explicit-loop NumPy reference; a user loss gets a slope table equal to
  the built-in block's; the interior slope columns equal the slopes without the box fits.

Tiny problems: d = 2, sizes [200, 300], 4 replicates, each model compiled once per module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moejax as mj
from moejax import mix
from moejax.estimation.information import standard_errors
from moejax.mix.sampling import sample_covariates
from moejax.report.coverage import coverage_rows, wilson
from moejax.report.slopes import compute_slopes
from moejax.sweep import resolve, run_sweep
from moejax.sweep.simulate import (
    build_problem,
    density_error,
    lane_keys,
)
from moejax.sweep.store import load_parts
from moejax.voronoi import voronoi_errors, weighted_voronoi_loss

BASE = {
    "name": "tiny",
    "seed": 3,
    "replicates": 4,
    "model": {"d": 2, "K": 3, "frozen": "linear", "adapter": "tanh", "scale": 3.0},
    "truth": {"beta": [0.5, 0.5], "tau": 0.2, "eta": [[0.0, 1.5], [1.5, 0.0]]},
    "sizes": {"list": [200, 300]},
    "run": {"lanes": 2, "density_points": 20},
}


def _with(base: dict, **sections) -> dict:
    out = json.loads(json.dumps(base))
    for sec, vals in sections.items():
        if isinstance(vals, dict):
            out.setdefault(sec, {}).update(vals)
        else:
            out[sec] = vals
    return out


MODELS = {
    "paper": BASE,
    "input_free": _with(
        BASE, model={"gate": "input_free"}, truth={"beta": None, "tau": -0.5}, init={}
    ),
    "two": _with(
        BASE,
        model={"adapters": 2},
        truth={
            "beta": [[1.0, 0.0], [0.0, 1.0]],
            "tau": [0.0, 0.0],
            "eta": [[[0.0, 1.5], [1.5, 0.0]], [[-1.5, 0.0], [0.0, -1.5]]],
        },
        init={"mode": "truth"},
    ),
    "gaussian": {
        "name": "tiny-gauss",
        "seed": 3,
        "replicates": 4,
        "model": {
            "d": 2,
            "frozen": "tanh",
            "adapter": "tanh",
            "likelihood": "gaussian",
            "nu0": 0.01,
            "eta0": [[1.0, 0.0]],
        },
        "truth": {"tau": 0.5, "eta": [[0.0, 1.0]], "nu": 0.04},
        "sizes": {"list": [200, 300]},
        "init": {"mode": "truth"},
        "run": {"lanes": 2},
    },
    "overfit": _with(BASE, model={"fitted_adapters": 2}),
    # 2 held lanes of 3072 rows need ~0.7 MB, 2 streamed lanes of 64-row blocks ~0.1 MB.
    "streamed": _with(
        BASE, sizes={"list": [2000, 3000]}, run={"memory_gb": 2e-4, "block_rows": 64}
    ),
}
for cfg in MODELS.values():
    if cfg["truth"].get("beta", 0) is None:
        del cfg["truth"]["beta"]


@pytest.fixture(scope="module", params=sorted(MODELS))
def run(request) -> tuple[str, object, dict]:
    cfg = resolve(MODELS[request.param])
    return request.param, build_problem(cfg), mj.simulate(cfg, progress=False)


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = np.isnan(a) & np.isnan(b)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    return float(np.max(np.where(both, 0.0, np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))


def test_arrays_exist_with_their_shapes(run) -> None:
    name, prob, out = run
    S, R = out["n"].shape
    fs, ts = prob.fit_spec, prob.spec
    est, se, bnd, tru = out["estimate"], out["se"], out["on_bound"], out["truth"]
    assert est.beta.shape == (S, R, fs.m, fs.d) and est.eta.shape == (S, R, fs.m, fs.R, fs.d)
    assert se.tau.shape == (S, R, fs.m) and bnd.eta.dtype == bool
    assert tru.tau.shape == (S, ts.m) and tru.eta.shape == (S, ts.m, ts.R, ts.d)
    sizes = prob.cfg["sizes"]["list"]
    np.testing.assert_array_equal(tru.eta, np.stack([prob.truth.at(n).eta for n in sizes]))
    # Standard errors are finite and positive on every free coordinate of a converged exact
    # fit, NaN on a bound and where the model estimates nothing.
    ok = out["converged"].astype(bool)
    if name != "overfit":
        free = ok[..., None] & ~bnd.tau
        assert np.all(np.isfinite(se.tau[free])) and np.all(se.tau[free] > 0)
    assert np.all(np.isnan(se.tau[bnd.tau]))
    if not fs.has_beta:
        assert np.all(np.isnan(se.beta))
    if not fs.regression:
        assert np.all(np.isnan(se.nu))


def test_error_columns_recomputed_from_the_arrays(run) -> None:
    name, prob, out = run
    est, tru = out["estimate"], out["truth"]
    S, R = out["n"].shape
    cfg = prob.cfg
    for i in range(S):
        for r in range(R):
            e = mix.MixParams(*(a[i, r] for a in est))
            t = mix.MixParams(*(a[i] for a in tru))
            v = voronoi_errors(*e, *t)
            if prob.spec.has_beta:
                assert _rel(v.beta, out["err_beta"][i, r]) <= 1e-12
            assert _rel(v.exp_tau, out["err_exp_tau"][i, r]) <= 1e-12
            assert _rel(v.eta, out["err_eta"][i, r]) <= 1e-12
            if prob.spec.regression:
                assert _rel(v.nu, out["err_nu"][i, r]) <= 1e-12
            if prob.fit_spec.m > 1:
                assert _rel(v.total, out["err_voronoi"][i, r]) <= 1e-12
            if not prob.spec.regression:
                n = int(out["n"][i, r])
                keys = lane_keys(jnp.uint32(cfg["seed"]), jnp.int32(n), jnp.int32(r))
                Xh = sample_covariates(
                    keys.dens, prob.spec.d, cfg["run"]["density_points"], cfg["model"]["radius"]
                )
                dens = density_error(prob.fit_spec, e, t, Xh, true_spec=prob.spec)
                assert _rel(dens, out["err_density"][i, r]) <= 1e-12


def test_estimates_npz_equals_simulate_across_chunks(tmp_path: Path) -> None:
    cfg = resolve(MODELS["paper"])
    out = mj.simulate(cfg, progress=False)
    for chunk in (1, 3):
        d = tmp_path / f"c{chunk}"
        run_sweep(resolve(_with(MODELS["paper"], run={"chunk": chunk})), d, progress=False)
        with np.load(d / "estimates.npz") as z:
            ev = {k: z[k] for k in z.files}
        np.testing.assert_array_equal(ev["n"], out["n"].reshape(-1))
        np.testing.assert_array_equal(ev["replicate"], out["replicate"].reshape(-1))
        for group in ("estimate", "se", "on_bound"):
            for leaf in mix.MixParams._fields:
                a = np.asarray(getattr(out[group], leaf))
                np.testing.assert_array_equal(
                    ev[f"{group}.{leaf}"].astype(a.dtype), a.reshape(-1, *a.shape[2:])
                )
        t = np.repeat(np.asarray(out["truth"].eta), 4, axis=0)
        np.testing.assert_array_equal(ev["truth.eta"], t)


def test_old_parts_without_estimates_are_read_with_a_warning(tmp_path: Path, capsys) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    a = {"n": np.array([10]), "replicate": np.array([0]), "estimate.tau": np.zeros((1, 1))}
    np.savez(parts / "part-000000.npz", **a)
    np.savez(parts / "part-000001.npz", n=np.array([10]), replicate=np.array([1]))
    lanes, nxt = load_parts(tmp_path)
    assert "lack estimate.tau" in capsys.readouterr().err
    assert nxt == 2 and sorted(lanes) == ["n", "replicate"]
    np.testing.assert_array_equal(lanes["replicate"], [0, 1])


def test_information_is_minus_the_finite_difference_hessian() -> None:
    spec = mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), scale=3.0)
    truth = mj.Params(
        beta=np.array([0.5, 0.5]), tau=np.array(0.2), eta=np.array([[0, 1.5], [1.5, 0]])
    )
    X, y = mj.sample(jax.random.key(0), spec, truth, 400)
    res = mj.fit(spec, X, y, truth)
    assert bool(res.converged)
    theta0 = jnp.concatenate([res.params.beta, res.params.tau[None], res.params.eta.reshape(-1)])

    def ll(theta):
        p = mj.Params(beta=theta[:2], tau=theta[2], eta=theta[3:].reshape(2, 2))
        return mj.log_likelihood(spec, p, X, y)

    h = 1e-4
    P = theta0.shape[0]
    H = np.zeros((P, P))
    E = np.eye(P) * h
    for i in range(P):
        for j in range(P):
            H[i, j] = (
                ll(theta0 + E[i] + E[j])
                - ll(theta0 + E[i] - E[j])
                - ll(theta0 - E[i] + E[j])
                + ll(theta0 - E[i] - E[j])
            ) / (4 * h * h)
    info = np.asarray(res.info)
    # Central differences of a sum of 400 rows: truncation O(h^2) ~ 1e-8 x the third
    # derivatives, rounding ~ eps |ll| / h^2 ~ 1e-5; relative to entries of order 10-100.
    np.testing.assert_allclose(info, -H, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(info, info.T, rtol=0, atol=1e-9)


def test_standard_error_rules() -> None:
    A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    lo, hi = -np.ones(3) * 5, np.ones(3) * 5
    se, on = standard_errors(jnp.asarray(A), jnp.zeros(3), jnp.asarray(lo), jnp.asarray(hi))
    np.testing.assert_allclose(se, np.sqrt(np.diag(np.linalg.inv(A))), rtol=1e-12)
    assert not np.any(on)
    # Coordinate 1 on its upper bound: held fixed, the others from the free block's inverse.
    th = jnp.asarray([0.0, 5.0, 0.0])
    se, on = standard_errors(jnp.asarray(A), th, jnp.asarray(lo), jnp.asarray(hi))
    free = np.linalg.inv(A[np.ix_([0, 2], [0, 2])])
    np.testing.assert_allclose(np.asarray(se)[[0, 2]], np.sqrt(np.diag(free)), rtol=1e-12)
    assert math.isnan(se[1]) and list(np.asarray(on)) == [False, True, False]
    # Not positive definite: no standard error anywhere.
    B = A.copy()
    B[2, 2] = -1.0
    se, _ = standard_errors(jnp.asarray(B), jnp.zeros(3), jnp.asarray(lo), jnp.asarray(hi))
    assert np.all(np.isnan(se))


def _synthetic_evidence(rng, se_scale: float, reps: int = 2000) -> dict:
    sizes = np.array([100, 1000])
    truth = mix.MixParams(
        np.array([[[0.3, -0.2]]] * 2),
        np.array([[0.1]] * 2),
        np.zeros((2, 1, 1, 2)),
        np.zeros((2, 1)),
    )
    sd = 1.0 / np.sqrt(sizes)[:, None, None]
    est = mix.MixParams(
        truth.beta[:, None] + rng.normal(size=(2, reps, 1, 2)) * sd[..., None],
        truth.tau[:, None] + rng.normal(size=(2, reps, 1)) * sd,
        np.zeros((2, reps, 1, 1, 2)),
        np.zeros((2, reps, 1)),
    )
    se = mix.MixParams(
        np.broadcast_to(se_scale * sd[..., None], est.beta.shape),
        np.broadcast_to(se_scale * sd, est.tau.shape),
        np.full(est.eta.shape, np.nan),
        np.full(est.nu.shape, np.nan),
    )
    on = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, bool), est)
    n = np.repeat(sizes[:, None], reps, axis=1)
    return {
        "n": n,
        "converged": np.ones_like(n),
        "estimate": est,
        "se": se,
        "on_bound": on,
        "truth": truth,
    }


def test_coverage_recovers_known_calibration() -> None:
    rng = np.random.default_rng(0)
    good = coverage_rows(_synthetic_evidence(rng, 1.0))
    assert {r["parameter"] for r in good} == {"beta[1]", "beta[2]", "tau"}
    for r in good:
        # 2000 draws: the Wilson interval holds 0.95, SE / sd is 1 to ~3% (sd of a sample sd).
        assert r["cov_low"] <= 0.95 <= r["cov_high"], r
        assert abs(r["se_ratio"] - 1) < 0.06 and abs(r["bias"]) < 4 * r["sd"] / math.sqrt(2000)
    wide = coverage_rows(_synthetic_evidence(rng, 2.0))
    for r in wide:  # SEs twice too large: coverage P(|Z| < 3.92) ~ 0.9999, ratio ~ 2
        assert r["coverage"] > 0.995 and abs(r["se_ratio"] - 2) < 0.12
    lo, hi = wilson(95, 100)
    assert lo < 0.95 < hi and hi < 1


def _voronoi_reference(est, tru, exponents) -> float:
    """Explicit loops over cells (NumPy)."""
    atoms = lambda p: np.concatenate([p.beta, p.eta.reshape(len(p.tau), -1), p.nu[:, None]], 1)
    ea, ta = atoms(est), atoms(tru)
    cell = [int(np.argmin(((ta - a) ** 2).sum(1))) for a in ea]
    total = 0.0
    for j in range(len(tru.tau)):
        members = [i for i, c in enumerate(cell) if c == j]
        total += abs(sum(math.exp(est.tau[i]) for i in members) - math.exp(tru.tau[j]))
        r = exponents[min(len(members), len(exponents)) - 1] if members else 1.0
        for i in members:
            db = np.linalg.norm(est.beta[i] - tru.beta[j])
            de = np.linalg.norm(est.eta[i] - tru.eta[j])
            dn = abs(est.nu[i] - tru.nu[j])
            total += math.exp(est.tau[i]) * (db**r + de**r + dn**r)
    return total


def test_weighted_voronoi_loss_against_reference() -> None:
    rng = np.random.default_rng(1)
    tru = mix.MixParams(
        rng.normal(size=(2, 2)), rng.normal(size=2), rng.normal(size=(2, 2, 2)), np.zeros(2)
    )
    for m_hat, exps in ((2, (1.0, 2.0)), (3, (1.0, 2.0)), (3, (1.0, 4.0, 6.0)), (1, (1.0,))):
        near = rng.integers(0, 2, size=m_hat)
        est = mix.MixParams(
            tru.beta[near] + 0.1 * rng.normal(size=(m_hat, 2)),
            tru.tau[near] - 0.5 + 0.1 * rng.normal(size=m_hat),
            tru.eta[near] + 0.1 * rng.normal(size=(m_hat, 2, 2)),
            np.zeros(m_hat),
        )
        got = float(weighted_voronoi_loss(est, tru, exps))
        assert got == pytest.approx(_voronoi_reference(est, tru, exps), rel=1e-12)


def test_weighted_voronoi_share_on_the_box_against_reference() -> None:
    """weighted_voronoi_parts: the loss of every fit equals weighted_voronoi_loss, and the share
    of it carried by fitted adapters with a coordinate on the box, and their largest weight,
    equal an explicit per-adapter loop (a fit with no adapter on the box: share 0, weight 0)."""
    from moejax.report.weighted import weighted_voronoi_parts, weighted_voronoi_rows

    rng = np.random.default_rng(2)
    F, m_hat, exps = 4, 3, (1.0, 2.0)
    tru = mix.MixParams(
        rng.normal(size=(2, 2)), rng.normal(size=2), rng.normal(size=(2, 2, 2)), np.zeros(2)
    )
    near = rng.integers(0, 2, size=(F, m_hat))
    est = mix.MixParams(
        tru.beta[near] + 0.1 * rng.normal(size=(F, m_hat, 2)),
        tru.tau[near] - 0.5 + 0.1 * rng.normal(size=(F, m_hat)),
        tru.eta[near] + 0.1 * rng.normal(size=(F, m_hat, 2, 2)),
        np.zeros((F, m_hat)),
    )
    on = mix.MixParams(
        np.zeros((F, m_hat, 2), bool),
        np.zeros((F, m_hat), bool),
        np.zeros((F, m_hat, 2, 2), bool),
        np.zeros((F, m_hat), bool),
    )
    on.eta[0, 2, 1, 0] = True  # fit 0: adapter 2 on the box through one eta coordinate
    on.tau[1, 0] = on.beta[1, 1, 1] = True  # fit 1: adapters 0 and 1
    ev = {
        f"{g}.{leaf}": np.asarray(getattr(p, leaf))
        for g, p in (("estimate", est), ("on_bound", on))
        for leaf in ("beta", "tau", "eta", "nu")
    }
    ev.update(
        {
            f"truth.{leaf}": np.broadcast_to(getattr(tru, leaf), (F, *np.shape(getattr(tru, leaf))))
            for leaf in ("beta", "tau", "eta", "nu")
        }
    )
    ev.update(n=np.array([10, 10, 20, 20]), replicate=np.arange(F))
    parts = weighted_voronoi_parts(ev, exps)
    for f in range(F):
        e = mix.MixParams(*(np.asarray(getattr(est, k))[f] for k in ("beta", "tau", "eta", "nu")))
        total = _voronoi_reference(e, tru, exps)
        assert parts["loss"][f] == pytest.approx(total, rel=1e-12)
        boxed = [
            i
            for i in range(m_hat)
            if any(np.any(getattr(on, k)[f, i]) for k in ("beta", "tau", "eta"))
        ]
        # the loss without the boxed adapters' atom terms: drop them from a copy of the fit
        # (their weight exp(-inf) = 0 removes their atom term; their mass is added back)
        carried = 0.0
        for i in boxed:
            keep = mix.MixParams(e.beta[[i]], e.tau[[i]], e.eta[[i]], e.nu[[i]])
            cell = int(
                np.argmin(
                    [
                        np.sum(
                            (
                                np.r_[e.beta[i], e.eta[i].ravel()]
                                - np.r_[tru.beta[j], tru.eta[j].ravel()]
                            )
                            ** 2
                        )
                        for j in range(2)
                    ]
                )
            )
            size = int(
                np.sum(
                    [
                        np.argmin(
                            [
                                np.sum(
                                    (
                                        np.r_[e.beta[a], e.eta[a].ravel()]
                                        - np.r_[tru.beta[j], tru.eta[j].ravel()]
                                    )
                                    ** 2
                                )
                                for j in range(2)
                            ]
                        )
                        == cell
                        for a in range(m_hat)
                    ]
                )
            )
            r = exps[min(size, len(exps)) - 1]
            carried += math.exp(keep.tau[0]) * (
                np.linalg.norm(keep.beta[0] - tru.beta[cell]) ** r
                + np.linalg.norm(keep.eta[0] - tru.eta[cell]) ** r
            )
        assert parts["share_on_box"][f] == pytest.approx(carried / total, rel=1e-10, abs=0)
        w = max((math.exp(e.tau[i]) for i in boxed), default=0.0)
        assert parts["weight_on_box"][f] == pytest.approx(w, rel=1e-12)
        assert parts["on_box"][f] == bool(boxed)
    assert parts["share_on_box"][2] == 0 and parts["on_box"].tolist() == [1, 1, 0, 0]
    rows = weighted_voronoi_rows(ev)
    assert [r["n"] for r in rows] == [10, 20] and [r["fits_with_adapter_on_box"] for r in rows] == [
        2,
        0,
    ]


def test_user_loss_slope_table_equals_the_builtin_block(run) -> None:
    name, prob, out = run
    if name != "paper":
        pytest.skip("one model is enough")
    eta_loss = lambda e, t: jnp.linalg.norm(e.eta - t.eta)
    rows = mj.slopes(out, losses={"my_eta": eta_loss}, n_boot=50)
    by = {(r["parameter"], r["aggregate"]): r for r in rows}
    for agg in ("log_mean", "mean_log", "log_median"):
        a, b = by[("my_eta", agg)], by[("eta", agg)]
        assert a["slope"] == pytest.approx(b["slope"], rel=1e-10)
    with pytest.raises(ValueError, match="built-in"):
        mj.slopes(out, losses={"eta": eta_loss})


def test_interior_columns_are_the_slopes_without_the_box_fits() -> None:
    rng = np.random.default_rng(2)
    sizes = np.repeat([1000, 4000, 16000, 64000], 30)
    err = sizes**-0.5 * np.exp(0.3 * rng.normal(size=sizes.size))
    at_bound = (rng.random(sizes.size) < 0.3) & (sizes < 10000)
    err = np.where(at_bound, err * 20, err)  # box fits: large errors at small n
    fits = {
        "n": sizes,
        "err_eta": err,
        "err_exp_tau": err,
        "converged": np.ones_like(sizes),
        "at_bound": at_bound.astype(int),
    }
    rows = compute_slopes(fits, parameters=("eta",), n_boot=200, drop_smallest=(0,))
    inner = compute_slopes(
        fits, parameters=("eta",), n_boot=200, drop_smallest=(0,), exclude_at_bound=True
    )
    for r, ri in zip(rows, inner, strict=True):
        assert r["slope_interior"] == ri["slope"] and r["ci_low_interior"] == ri["ci_low"]
        assert r["n_interior"] == int(np.sum(~at_bound))
    mean = next(r for r in rows if r["aggregate"] == "log_mean")
    assert mean["slope"] < -0.8 and abs(mean["slope_interior"] + 0.5) < 0.1


def test_coverage_report_without_usable_fits_writes_tables_only(tmp_path: Path) -> None:
    """Every fit failed (e.g. max_iter = 1): the coverage table says so, no figure is drawn
    (and none is left from an earlier report)."""
    from moejax.report.coverage import write_coverage

    ev = _synthetic_evidence(np.random.default_rng(3), 1.0, reps=5)
    ev["converged"] = np.zeros_like(ev["converged"])
    (tmp_path / "coverage.png").write_bytes(b"old")
    paths = write_coverage(tmp_path, ev, "failed")
    assert "coverage_png" not in paths and not (tmp_path / "coverage.png").exists()
    assert "No figure" in (tmp_path / "coverage.md").read_text()
    rows = coverage_rows(ev)
    assert all(r["n_used"] == 0 and r["n_no_se"] == 0 for r in rows)  # none converged

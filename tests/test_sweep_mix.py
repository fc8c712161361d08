"""Sweeps of the general model (`moejax.mix` through `moejax.sweep`): config validation of the
new fields, and small real runs (regression, two adapters, input-free gate).

Each run compiles one program (~5-20 s here), so the runs are module-scoped and tiny: d = 2,
sizes [200, 300], 3 replicates. The engine's data are checked to be exactly `moejax.mix.sample`
with the lane's key (so chunking and devices cannot matter: the driver is the core model's, whose
determinism tests in test_sweep.py cover it).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moejax import mix
from moejax.sweep import ConfigError, resolve, run_sweep
from moejax.sweep.simulate import build_problem

REGRESSION = {
    "name": "tiny-regression",
    "replicates": 3,
    "model": {
        "d": 2,
        "frozen": "tanh",
        "adapter": "tanh",
        "likelihood": "gaussian",
        "frozen_likelihood": "laplace",
        "nu0": 0.01,
        "eta0": [[1.0, 0.0]],
    },
    "truth": {"tau": 0.5, "eta": [[0.0, 1.0]], "nu": 0.04},
    "sizes": {"list": [200, 300]},
    "init": {"mode": "truth"},
    "run": {"chunk": 2, "density_points": 20},
}
TWO = {
    "name": "tiny-two",
    "replicates": 3,
    "model": {"d": 2, "K": 3, "frozen": "linear", "adapter": "tanh", "scale": 4.0, "adapters": 2},
    "truth": {
        "beta": [[1.0, 0.0], [0.0, 1.0]],
        "tau": [0.0, 0.0],
        "eta": [[[0.0, 1.5], [1.5, 0.0]], [[-1.5, 0.0], [0.0, -1.5]]],
    },
    "sizes": {"list": [200, 300]},
    "init": {"mode": "truth"},
    "run": {"chunk": 3, "density_points": 20},
}
INPUT_FREE = {
    "name": "tiny-input-free",
    "replicates": 3,
    "model": {"d": 2, "K": 3, "frozen": "linear", "adapter": "tanh", "gate": "input_free"},
    "truth": {"tau": -1.0},
    "sizes": {"list": [200, 300]},
    "init": {"mode": "truth"},
    "run": {"chunk": 3, "density_points": 20},
}


def _with(base: dict, **sections) -> dict:
    out = json.loads(json.dumps(base))
    for sec, vals in sections.items():
        out.setdefault(sec, {}).update(vals)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------
# config


def test_resolved_shapes_and_defaults():
    c = resolve(TWO)
    assert np.shape(c["truth"]["eta"]) == (2, 2, 2) and np.shape(c["truth"]["beta"]) == (2, 2)
    assert c["truth"]["nu"] is None  # categorical experts have no variance
    r = resolve(REGRESSION)
    assert r["model"]["frozen_likelihood"] == "laplace" and r["truth"]["nu"] == 0.04
    hom = resolve(
        _with(
            REGRESSION,
            model={"frozen_likelihood": "gaussian"},
            truth={"regime": "homogeneous", "delta": [[0.0, 0.0]], "nu_delta": 0.1},
        )
    )
    assert hom["truth"]["nu"] == 0.01 and hom["truth"]["eta"] == [[1.0, 0.0]]


@pytest.mark.parametrize(
    "base, sections, needle",
    [
        (REGRESSION, {"model": {"adapters": 0}}, "model.adapters"),
        (REGRESSION, {"model": {"gate": "softmx"}}, "'softmax'"),
        (REGRESSION, {"model": {"likelihood": "poisson"}}, "model.likelihood"),
        (REGRESSION, {"model": {"frozen_likelihood": "categorical"}}, "model.frozen_likelihood"),
        (REGRESSION, {"model": {"nu0": 0.0}}, "model.nu0"),
        (REGRESSION, {"truth": {"nu": -1.0}}, "truth.nu"),
        (REGRESSION, {"truth": {"nu": [0.1, 0.2]}}, "truth.nu"),
        (REGRESSION, {"bounds": {"nu": [0.0, 1.0]}}, "bounds.nu"),
        (REGRESSION, {"bounds": {"nu": [0.05, 1.0]}}, "bounds.nu"),  # truth nu 0.04 outside
        (REGRESSION, {"truth": {"regime": "homogeneous"}}, "model.likelihood"),
        (TWO, {"truth": {"beta": [1.0, 0.0]}}, "truth.beta"),
        (TWO, {"truth": {"tau": [0.0, 0.0, 0.0]}}, "truth.tau"),
        (TWO, {"truth": {"eta": [[0.0, 1.5], [1.5, 0.0]]}}, "truth.eta"),
    ],
)
def test_bad_general_configs_name_the_field(base, sections, needle):
    with pytest.raises(ConfigError) as exc:
        resolve(_with(base, **sections))
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


# ----------------------------------------------------------------------------------------------
# runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix-runs")
    out = {}
    for name, cfg in (
        ("regression", REGRESSION),
        ("two", TWO),
        ("input_free", INPUT_FREE),
        ("regression_multistart", _with(REGRESSION, init={"mode": "multistart", "n_starts": 3})),
        ("regression_em", _with(REGRESSION, estimator={"method": "em", "max_iter": 300})),
    ):
        c = resolve(cfg)
        run_sweep(c, root / name, progress=False)
        out[name] = (c, root / name)
    return out


def test_em_on_two_adapters_converges_from_the_sweep_command(tmp_path, capsys):
    """The paper family's own estimator (EM, numerical M-steps) on the two-adapter design,
    from near-truth starts, through `moejax sweep`: every fit converges, and each lane's
    estimate is the maximiser that direct MLE finds on the same data."""
    from moejax.cli import main

    cfg = _with(
        {**TWO, "name": "tiny-two-em", "replicates": 2},
        estimator={"method": "em", "max_iter": 400, "tol": 1e-13},
        init={"mode": "near_truth"},
        sizes={"list": [1500, 2500]},
    )
    path = tmp_path / "two-em.toml"
    path.write_text(_toml(cfg))
    rc = main(["sweep", str(path), "--out", str(tmp_path / "em"), "--no-report"])
    assert rc == 0, capsys.readouterr().err
    rows = _rows(tmp_path / "em" / "fits.csv")
    assert len(rows) == 4 and all(r["status"] == "converged" for r in rows)
    assert all(r["at_bound"] == "0" for r in rows)  # a well-posed design at these sizes
    assert all(int(r["inner_steps"]) >= int(r["n_iter"]) > 1 for r in rows)
    direct = resolve(_with(cfg, estimator={"method": "direct"}))
    run_sweep(direct, tmp_path / "direct", progress=False)
    for a, b in zip(rows, _rows(tmp_path / "direct" / "fits.csv"), strict=True):
        assert b["status"] == "converged"
        # Same data, same maximiser: EM's linear convergence stops within ~1e-9 of it.
        assert float(a["loglik"]) == pytest.approx(float(b["loglik"]), rel=1e-10, abs=1e-7)
        assert float(a["err_voronoi"]) == pytest.approx(float(b["err_voronoi"]), rel=1e-4)


def test_multistart_and_em_run_on_regression(runs):
    base = {(r["n"], r["replicate"]): r for r in _rows(runs["regression"][1] / "fits.csv")}
    for name in ("regression_multistart", "regression_em"):
        rows = _rows(runs[name][1] / "fits.csv")
        assert len(rows) == 6 and all(r["status"] == "converged" for r in rows), name
        for r in rows:
            b = base[(r["n"], r["replicate"])]
            assert float(r["loglik"]) >= float(b["loglik"]) - 1e-6 * abs(float(b["loglik"]))


def _toml(cfg: dict) -> str:
    """A minimal TOML writer for these test configs (tables of scalars and nested lists)."""

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {val(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _lane_key(seed: int, n: int, r: int):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), n), r)
    return jax.random.split(key, 3)[0]


def test_regression_run_columns_and_engine_data(runs):
    cfg, out = runs["regression"]
    rows = _rows(out / "fits.csv")
    assert len(rows) == 6 and all(r["status"] == "converged" for r in rows)
    assert all(math.isfinite(float(r["err_nu"])) for r in rows)
    assert all(math.isnan(float(r["err_density"])) for r in rows)  # no closed-form Hellinger
    assert all(math.isnan(float(r["err_voronoi"])) for r in rows)  # one adapter
    # The engine fits exactly mix.sample's data for the lane key: refit one lane here.
    p = build_problem(cfg)
    spec, truth, bounds = p.spec, p.truth, p.bounds
    n, r = 300, 2
    X, y = mix.sample(_lane_key(cfg["seed"], n, r), spec, truth.at(n), n)
    res = mix.fit(spec, X, y, truth.at(n), bounds=bounds, max_iter=cfg["estimator"]["max_iter"])
    row = next(x for x in rows if int(x["n"]) == n and int(x["replicate"]) == r)
    assert float(row["loglik"]) == pytest.approx(float(res.loglik), rel=1e-9)
    nu_err = abs(float(res.params.nu[0]) - float(truth.at(n).nu[0]))
    assert float(row["err_nu"]) == pytest.approx(nu_err, rel=1e-6, abs=1e-12)


def test_two_adapter_run_reports_voronoi(runs):
    cfg, out = runs["two"]
    rows = _rows(out / "fits.csv")
    assert len(rows) == 6
    conv = [r for r in rows if r["status"] == "converged"]
    assert len(conv) >= 5
    for r in conv:
        v, t = float(r["err_voronoi"]), float(r["err_exp_tau"])
        assert math.isfinite(v) and v >= t >= 0
        assert int(r["n_empty_cells"]) == 0  # started at the truth, well separated
        assert math.isfinite(float(r["err_density"]))
    man = json.loads((out / "manifest.json").read_text())
    assert 0.5 < man["adapter_weight"] < 0.9  # two adapters at tau = 0 hold 2/3 on average


def test_input_free_run_has_no_beta_and_its_weight(runs):
    cfg, out = runs["input_free"]
    rows = _rows(out / "fits.csv")
    assert all(math.isnan(float(r["err_beta"])) for r in rows)
    assert all(math.isfinite(float(r["err_exp_tau"])) for r in rows)
    man = json.loads((out / "manifest.json").read_text())
    assert man["adapter_weight"] == pytest.approx(float(jax.nn.sigmoid(-1.0)), abs=1e-12)


def test_adapter_weight_of_softmax_gate_matches_a_numpy_estimate():
    cfg = resolve(_with(INPUT_FREE, model={"gate": "softmax"}))
    from moejax.sweep.problem import adapter_weight
    from moejax.sweep.simulate import build_problem

    w = adapter_weight(build_problem(cfg))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400_000, 2))
    beta = np.asarray(cfg["truth"]["beta"])
    ref = np.mean(1.0 / (1.0 + np.exp(-(X @ beta - 1.0))))
    # Two independent Monte Carlo means of a [0, 1] variable: sd < 0.5 / sqrt(2e5) each.
    assert w == pytest.approx(ref, abs=6 * 0.5 * math.sqrt(1 / 2e5 + 1 / 4e5))
    assert float(jnp.asarray(w)) < float(jax.nn.sigmoid(0.0))

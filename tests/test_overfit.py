"""Over-fitted adapters (``model.fitted_adapters`` = m_hat > m* = ``model.adapters``): config
validation, the split start rule, the engine's Voronoi columns, the CLI run and its cell table.

Programs compiled here (each a few seconds on 2 cores): OVER (the heterogeneous default design,
m* = 1 fitted with m_hat = 2, near-truth split starts; shared by `moejax.simulate` and
`moejax sweep` through a module-scoped persistent cache), TINY (an exact-fitted tiny model, run
with and without the key) and TINY_MS (the tiny model over-fitted, multi-start).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_cache import persistent_cache

import moejax as mj
from moejax.estimation.init import (
    init_near_truth,
    perturb,
    split_assignment,
    split_truth,
)
from moejax.mix import MixSpec
from moejax.mix.density import gate_log_weights, predictors
from moejax.report.cells import CELL_COLUMNS, cell_rows
from moejax.report.table import MISSING_INT, read_fits_csv
from moejax.sweep import ConfigError, config_hash, resolve
from moejax.sweep.simulate import build_problem

OVER = {
    "name": "overfit-tiny",
    "seed": 3,
    "replicates": 4,
    "model": {
        "d": 2,
        "K": 3,
        "frozen": "linear",
        "adapter": "tanh",
        "scale": 4.0,
        "eta0": [[1.0, 0.0], [0.0, 1.0]],
        "fitted_adapters": 2,
    },
    "truth": {"beta": [0.7071067811865476, 0.7071067811865476], "eta": [[0.0, 1.5], [1.5, 0.0]]},
    "sizes": {"list": [1500, 3000]},
    "run": {"lanes": 4, "density_points": 50},
}
TINY = {
    "name": "tiny",
    "seed": 1,
    "replicates": 4,
    "model": {"d": 2, "K": 2, "scale": 2.0, "eta0": [[1.0, 0.0]]},
    "truth": {"beta": [0.5, 0.5], "tau": 0.2, "eta": [[0.0, 1.0]]},
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


def _toml(cfg: dict) -> str:
    def val(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {val(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory: pytest.TempPathFactory):
    """A persistent compilation cache for this module: the CLI run reuses simulate's program."""
    with persistent_cache(tmp_path_factory.mktemp("jax-cache"), MOEJAX_NO_PROGRESS="1") as d:
        yield d


@pytest.fixture(scope="module")
def over(jax_cache) -> dict[str, np.ndarray]:
    return mj.simulate(OVER, progress=False)


# ----------------------------------------------------------------------------------------------
# config and problem


def test_fitted_adapters_defaults_to_adapters_and_is_hashed() -> None:
    c = resolve(TINY)
    assert c["model"]["fitted_adapters"] == c["model"]["adapters"] == 1
    two = resolve(_with(TINY, model={"fitted_adapters": 2}))
    assert two["model"]["fitted_adapters"] == 2 and two["model"]["adapters"] == 1
    assert np.shape(two["truth"]["eta"]) == (1, 2)  # the truth keeps its m* = 1 adapter
    assert config_hash(two) != config_hash(c)
    assert config_hash(resolve(_with(TINY, model={"fitted_adapters": 1}))) == config_hash(c)
    p = build_problem(two)
    assert (p.spec.m, p.fit_spec.m) == (1, 2)
    assert p.fit_spec.n_params == 2 * p.spec.n_params


@pytest.mark.parametrize(
    "model, init",
    [
        ({"fitted_adapters": 0}, {}),
        ({"adapters": 2, "fitted_adapters": 1}, {}),
        ({"fitted_adapters": 2.0}, {}),
        ({"fitted_adapters": True}, {}),
        ({"fitted_adapters": 2}, {"mode": "truth"}),
    ],
)
def test_bad_fitted_adapters_are_refused_naming_the_field(model, init) -> None:
    cfg = _with(TINY, model=model, init=init)
    if model.get("adapters") == 2:
        cfg = _with(
            cfg,
            truth={
                "beta": [[0.5, 0.5], [0.5, -0.5]],
                "tau": [0.2, 0.2],
                "eta": [[[0.0, 1.0]], [[1.0, 1.0]]],
            },
        )
    with pytest.raises(ConfigError) as exc:
        resolve(cfg)
    msg = str(exc.value)
    field = "init.mode" if init else "model.fitted_adapters"
    assert msg.startswith(field) and "\n" not in msg, msg


def test_problem_takes_the_fitted_count_and_refuses_bad_ones() -> None:
    spec = mj.ModelSpec(d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]])
    truth = mj.heterogeneous_truth(spec, beta=[0.5, 0.5], tau=0.2, eta=[[0.0, 1.0]])
    prob = mj.problem(spec, truth, sizes=[300], fitted_adapters=3)
    assert (prob.spec.m, prob.fit_spec.m) == (1, 3)
    assert prob.cfg["model"]["fitted_adapters"] == 3
    assert mj.problem(spec, truth, sizes=[300]).fit_spec is spec
    for bad in (0, 2.5, "2"):
        with pytest.raises(ValueError, match=r"^fitted_adapters"):
            mj.problem(spec, truth, fitted_adapters=bad)
    with pytest.raises(ValueError, match=r"^init\.mode"):
        mj.problem(spec, truth, fitted_adapters=2, init={"mode": "truth"})
    mj.problem(spec, truth, sizes=[8])  # the truth's model has 5 free parameters ...
    with pytest.raises(ValueError, match=r"^sizes"):  # ... the fitted one 10
        mj.problem(spec, truth, sizes=[8], fitted_adapters=2)


# ----------------------------------------------------------------------------------------------
# the split start rule


def test_split_assignment_is_round_robin() -> None:
    assert split_assignment(1, 3) == (0, 0, 0)
    assert split_assignment(2, 5) == (0, 1, 0, 1, 0)
    assert split_assignment(3, 3) == (0, 1, 2)
    with pytest.raises(ValueError, match="m_hat"):
        split_assignment(2, 1)


@pytest.mark.parametrize("gate", ["softmax", "input_free"])
def test_split_copies_weights_sum_to_the_truths(gate: str) -> None:
    d, m, m_hat = 3, 2, 5
    spec = MixSpec(d=d, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2, d), adapters=m)
    rng = np.random.default_rng(0)
    truth = spec.params(rng.normal(size=(m, d)), [0.3, -0.4], rng.normal(size=(m, 2, d)))
    split = split_truth(truth, m_hat)
    src = np.array(split_assignment(m, m_hat))
    k = np.bincount(src)
    np.testing.assert_allclose(np.asarray(split.tau), np.asarray(truth.tau)[src] - np.log(k[src]))
    np.testing.assert_array_equal(np.asarray(split.eta), np.asarray(truth.eta)[src])
    X = jnp.asarray(rng.normal(size=(50, d)))
    fit = MixSpec(d=d, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2, d), adapters=m_hat)
    if gate != "softmax":
        spec, fit = (dataclasses.replace(s, gate=gate) for s in (spec, fit))
    w_true = jnp.exp(gate_log_weights(gate, predictors(spec, truth, X)[:, :m]))
    w_split = jnp.exp(gate_log_weights(gate, predictors(fit, split, X)[:, :m_hat]))
    np.testing.assert_allclose(w_split[:, 0], w_true[:, 0], rtol=1e-13)  # frozen weight kept
    summed = np.stack([w_split[:, 1:][:, src == s].sum(1) for s in range(m)], 1)
    np.testing.assert_allclose(summed, w_true[:, 1:], rtol=1e-13)


def test_split_start_copies_differ_and_the_exact_fit_is_unchanged() -> None:
    d, m = 2, 1
    spec = MixSpec(d=d, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), adapters=m)
    truth = spec.params([0.7, 0.7], 0.0, [[0.0, 1.5], [1.5, 0.0]])
    key, n = jax.random.key(5), 3000.0
    same = init_near_truth(key, spec, truth, n)
    ref = perturb(key, truth, n, 0.005, 0.05, 0.083, spec.regression)  # the exact fit's noise
    for a, b in zip(same, ref, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # m_hat = m*: bit for bit
    fit = MixSpec(d=d, K=3, frozen="linear", adapter="tanh", eta0=np.eye(2), adapters=3)
    start = init_near_truth(key, fit, truth, n)
    assert start.eta.shape == (3, 2, 2) and start.tau.shape == (3,)
    # the first fitted adapter takes the exact-fitted start's noise, around tau* - log 3
    np.testing.assert_allclose(start.beta[0], ref.beta[0], rtol=0, atol=0)
    np.testing.assert_allclose(start.tau[0], ref.tau[0] - np.log(3.0), rtol=0, atol=1e-15)
    # every copy is perturbed independently: no two copies coincide, all near the truth
    for a in (start.beta, start.eta, start.tau):
        flat = np.asarray(a).reshape(3, -1)
        assert len({tuple(r) for r in flat}) == 3
    assert np.max(np.abs(np.asarray(start.eta) - np.asarray(truth.eta)[[0, 0, 0]])) < 0.5
    np.testing.assert_allclose(
        np.sum(np.exp(np.asarray(start.tau))), np.exp(float(truth.tau[0])), rtol=0.05
    )


# ----------------------------------------------------------------------------------------------
# runs


def _check_over(cols: dict[str, np.ndarray]) -> None:
    assert (cols["status"] == "converged").all(), cols["status"]
    for c in ("err_voronoi", "err_beta", "err_exp_tau", "err_eta", "err_density"):
        assert np.isfinite(cols[c]).all() and (cols[c] > 0).all(), c
    assert (cols["err_voronoi"] >= cols["err_exp_tau"]).all()
    # m* = 1: both fitted adapters lie in the one true adapter's cell
    assert ((0 <= cols["n_empty_cells"]) & (cols["n_empty_cells"] <= 1)).all()
    assert ((0 <= cols["n_shared_cells"]) & (cols["n_shared_cells"] <= 1)).all()
    assert (cols["n_empty_cells"] == 0).all() and (cols["n_shared_cells"] == 1).all()
    assert (cols["start"] == 0).all()


def test_simulate_fits_two_adapters_to_one(over) -> None:
    assert over["err_voronoi"].shape == (2, 4)
    _check_over(over)


def test_exact_fitted_key_changes_nothing(jax_cache) -> None:
    a = mj.simulate(TINY, progress=False)
    b = mj.simulate(_with(TINY, model={"fitted_adapters": 1}), progress=False)
    assert set(a) == set(b)
    for c in a:
        if c == "problem":  # the Problem run (its config spells fitted_adapters either way)
            assert a[c].model["fitted_adapters"] == b[c].model["fitted_adapters"] == 1
            continue
        leaves = zip(*((v,) if isinstance(v, np.ndarray) else v for v in (a[c], b[c])), strict=True)
        for x, y in leaves:  # an array, or the leaves of the kept MixParams evidence
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), c
    assert (a["n_shared_cells"] == 0).all() and np.isnan(a["err_voronoi"]).all()


def test_multistart_starts_every_fitted_adapter(jax_cache) -> None:
    cfg = _with(
        TINY,
        model={"fitted_adapters": 2},
        init={"mode": "multistart", "n_starts": 3},
        sizes={"list": [400]},
    )
    got = mj.simulate(cfg, progress=False)
    assert np.isfinite(got["err_voronoi"]).all() and np.isfinite(got["loglik"]).all()
    assert ((0 <= got["start"]) & (got["start"] < 3)).all()
    assert ((got["n_shared_cells"] == 1) & (got["n_empty_cells"] == 0)).all()


def test_sweep_command_writes_the_cell_table(over, jax_cache, tmp_path, monkeypatch) -> None:
    """`moejax sweep` on the over-fitted config: the fits of `moejax.simulate` (the CLI's
    program, to rounding), the manifest's fitted count and start rule, and cells.{csv,md}
    equal to a recount from fits.csv."""
    import os

    from moejax.cli import main

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main sets host devices
    path = tmp_path / "over.toml"
    path.write_text(_toml(OVER))
    out = tmp_path / "run"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["model"]["fitted_adapters"] == 2
    assert man["config"]["model"]["adapters"] == 1
    assert "split" in man["init_rule"] and "log(k)" in man["init_rule"]
    fits = read_fits_csv(out / "fits.csv")
    _check_over({**fits, "status": fits["status"]})
    for c in ("err_voronoi", "loglik", "n_iter", "n_shared_cells"):
        np.testing.assert_allclose(fits[c], over[c].ravel(), rtol=1e-12, err_msg=c)
    with open(out / "cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CELL_COLUMNS)
    assert [int(r["n"]) for r in rows] == OVER["sizes"]["list"]
    for r in rows:
        at = (fits["n"] == int(r["n"])) & (fits["converged"] == 1)
        assert int(r["n_fits"]) == np.sum(fits["n"] == int(r["n"])) == 4
        assert int(r["n_converged"]) == np.sum(at)
        assert float(r["mean_n_empty_cells"]) == pytest.approx(np.mean(fits["n_empty_cells"][at]))
        assert float(r["frac_shared"]) == pytest.approx(np.mean(fits["n_shared_cells"][at] >= 1))
        assert float(r["frac_empty"]) == pytest.approx(np.mean(fits["n_empty_cells"][at] >= 1))
    assert "frac_shared" in (out / "cells.md").read_text()
    # the weighted Voronoi loss and the share of it on the box, per n (voronoi_w.{csv,md})
    with open(out / "voronoi_w.csv", newline="") as f:
        wrows = list(csv.DictReader(f))
    assert [int(r["n"]) for r in wrows] == OVER["sizes"]["list"]
    assert all(0 <= float(r["median_share_on_box"]) <= 1 for r in wrows)
    assert "inside the box" in (out / "voronoi_w.md").read_text()
    # moejax.slopes gives the report's over-fitted exponents, from the run directory and from
    # simulate's output alike (before: the heterogeneous -0.5 for beta and eta)
    with open(out / "slopes.csv", newline="") as f:
        report = {(r["parameter"], r["aggregate"]): float(r["theory"]) for r in csv.DictReader(f)}
    assert report[("beta", "log_median")] == report[("eta", "log_median")] == -0.25
    for source in (out, over):
        got = {(r["parameter"], r["aggregate"]): r["theory"] for r in mj.slopes(source, n_boot=0)}
        assert got == report


def test_cell_table_recounts_and_reads_old_files(tmp_path: Path) -> None:
    """cell_rows on two true adapters' counts, and on an older fits.csv without the new
    columns (n_shared_cells, start read as MISSING_INT: NaN shared statistics)."""
    fits = {
        "n": np.array([100, 100, 100, 200, 200]),
        "converged": np.array([1, 1, 0, 1, 1]),
        "n_empty_cells": np.array([0, 1, 1, 0, 0]),
        "n_shared_cells": np.array([1, 1, 2, 0, 2]),
    }
    rows = cell_rows(fits)
    assert [r["n"] for r in rows] == [100, 200]
    assert rows[0]["n_fits"] == 3 and rows[0]["n_converged"] == 2
    assert rows[0]["mean_n_empty_cells"] == 0.5 and rows[0]["frac_empty"] == 0.5
    assert rows[0]["frac_shared"] == 1.0 and rows[1]["frac_shared"] == 0.5
    assert rows[1]["mean_n_shared_cells"] == 1.0
    old = tmp_path / "fits.csv"
    old.write_text(
        "n,replicate,err_voronoi,converged,n_empty_cells,status\n"
        "100,0,0.5,1,0,converged\n100,1,0.7,1,1,converged\n"
    )
    back = read_fits_csv(old)
    assert back["n_shared_cells"].tolist() == [MISSING_INT] * 2
    assert back["start"].tolist() == [MISSING_INT] * 2
    (row,) = cell_rows(back)
    assert row["frac_empty"] == 0.5 and math.isnan(row["frac_shared"])

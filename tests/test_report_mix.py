"""Reporting for the generalised models: nu / voronoi blocks, blocks absent from a model (err_beta
NaN under an input-free gate), the predecessor comparison and the gate comparison.

Synthetic tables as in tests/test_report.py: err = C * n^a * exp(sigma * Z), Z ~ N(0, 1), so the
slope of every aggregate is unbiased for a. Tolerances (derived where used):

- log-median slope over 10 log-spaced sizes in [1e3, 1e5] x 40 replicates, sigma = 0.5: SE =
  sqrt(pi/2) * sigma / sqrt(R * Sxx) = 0.021 (Sxx = 21.6); we allow 5 SE.
- gate exponent: log S = mean over J sizes of log median(err * sqrt(n)) has variance
  (pi/2) sigma^2 / (R J), so b (OLS of log S on log lambda over the runs) has SE
  sqrt((pi/2) sigma^2 / (R J Sxx_lambda)); we allow 5 SE.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moejax.report import (
    GateRun,
    adapter_weight,
    compute_slopes,
    gate_rows,
    make_report,
    plot_comparison,
    predecessor_rows,
    read_fits_csv,
    resolve_parameters,
    skipped_parameters,
    theory_slope,
    write_csv_atomic,
    write_gates,
    write_predecessor,
)
from moejax.report.phase import write_phase
from moejax.report.predecessor import PUBLISHED_SLOPES
from moejax.sweep.store import FIT_COLUMNS, INT_COLUMNS

SIZES = np.round(np.logspace(3, 5, 10)).astype(np.int64)
REPS = 40
SIGMA = 0.5


def slope_se(sizes: np.ndarray = SIZES, reps: int = REPS, sigma: float = SIGMA) -> float:
    """Asymptotic SE of the log-median slope (sqrt(pi/2) times that of the mean-log slope)."""
    x = np.log(sizes.astype(float))
    return math.sqrt(math.pi / 2) * sigma / math.sqrt(reps * float(np.sum((x - x.mean()) ** 2)))


def synthetic(
    exponents: dict[str, float],
    seed: int = 0,
    sizes: np.ndarray = SIZES,
    reps: int = REPS,
    sigma: float = SIGMA,
    nan_blocks: tuple[str, ...] = (),
    same_noise: bool = False,
    scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Fits table (columns of shape (len(sizes) * reps,)): err_p = 2 scale n^a_p exp(sigma Z).

    ``nan_blocks``: columns written NaN in every row. ``same_noise``: the same Z vector at every
    size (then the per-size median is exactly proportional to n^a, the slope exactly a).
    """
    rng = np.random.default_rng(seed)
    n = np.repeat(sizes, reps)
    fits: dict[str, np.ndarray] = {
        "n": n,
        "replicate": np.tile(np.arange(reps), len(sizes)),
        "converged": np.ones(n.shape, np.int64),
        "at_bound": np.zeros(n.shape, np.int64),
        "status": np.full(n.shape, "converged"),
    }
    for p, a in exponents.items():
        z = (
            np.tile(rng.standard_normal(reps), len(sizes))
            if same_noise
            else rng.standard_normal(n.shape)
        )
        fits[f"err_{p}"] = 2.0 * scale * n.astype(float) ** a * np.exp(sigma * z)
    for p in nan_blocks:
        fits[f"err_{p}"] = np.full(n.shape, np.nan)
    return fits


def write_run(run_dir: Path, fits: dict[str, np.ndarray], manifest: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    header = list(fits)
    write_csv_atomic(
        run_dir / "fits.csv", header, zip(*(fits[c].tolist() for c in header), strict=True)
    )
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def manifest_for(
    regime: str = "heterogeneous",
    gamma: float | None = None,
    gate: str = "softmax",
    likelihood: str = "gaussian",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": extra.pop("name", "toy"),
        "regime": regime,
        "gamma": gamma,
        "config": {
            "model": {"d": 2, "K": 1, "gate": gate, "adapters": 1, "likelihood": likelihood},
            "truth": {"beta": [0.0, 0.0], "tau": 0.0},
        },
        **extra,
    }


REGRESSION_INPUT_FREE = {"exp_tau": -0.5, "eta": -0.5, "nu": -0.5, "voronoi": -0.5}


# --------------------------------------------------------------------------- blocks


def test_columns_known_to_store_and_reader(tmp_path: Path) -> None:
    for c in ("err_nu", "err_voronoi", "n_empty_cells"):
        assert c in FIT_COLUMNS
    assert "n_empty_cells" in INT_COLUMNS
    path = tmp_path / "fits.csv"
    path.write_text(
        "n,replicate,err_beta,err_nu,err_voronoi,n_empty_cells,converged\n"
        "100,0,nan,0.1,0.2,1,1\n100,1,,0.3,inf,0,1\n"
    )
    fits = read_fits_csv(path)
    assert fits["n_empty_cells"].dtype == np.int64 and fits["n_empty_cells"].tolist() == [1, 0]
    assert fits["err_nu"].tolist() == [0.1, 0.3] and fits["err_voronoi"][1] == math.inf
    assert np.isnan(fits["err_beta"]).all()


def test_nu_and_voronoi_slopes_recovered_and_nan_blocks_skipped() -> None:
    exps = {"exp_tau": -0.5, "eta": -0.375, "nu": -0.25, "voronoi": -0.5}
    fits = synthetic(exps, seed=1, nan_blocks=("beta", "density"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from an all-NaN column
        rows = compute_slopes(fits, n_boot=200, drop_smallest=(0,))
    assert [r["parameter"] for r in rows if r["aggregate"] == "log_median"] == [
        "exp_tau",
        "eta",
        "nu",
        "voronoi",
    ]
    tol = 5 * slope_se()
    for r in rows:
        assert math.isfinite(r["slope"]) and math.isfinite(r["ci_low"])
        assert abs(r["slope"] - exps[r["parameter"]]) < tol, r
    assert skipped_parameters(fits) == ["beta", "density"]
    # the configured model only matters for beta: a gate with a slope keeps a dead beta visible
    assert resolve_parameters(fits, model={"gate": "input_free"})[0] == "exp_tau"
    assert resolve_parameters(fits, model={"gate": "softmax"})[0] == "beta"
    assert resolve_parameters(fits, model={})[0] == "beta"  # no gate key: the original softmax


def test_theory_of_new_blocks() -> None:
    assert theory_slope("nu", "heterogeneous", None) == {"uniform": -0.5, "pointwise": -0.5}
    assert theory_slope("voronoi", "heterogeneous", None) == {"uniform": -0.5, "pointwise": -0.5}
    assert theory_slope("nu", "homogeneous", 0.125) == {"uniform": -0.375, "pointwise": -0.5}
    v = theory_slope("voronoi", "homogeneous", 0.125)
    assert math.isnan(v["uniform"]) and math.isnan(v["pointwise"])


def test_make_report_input_free_regression_run(tmp_path: Path) -> None:
    fits = synthetic(REGRESSION_INPUT_FREE, seed=2, nan_blocks=("beta", "density"))
    run = write_run(tmp_path / "run", fits, manifest_for(gate="input_free"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = make_report(run, n_boot=100)
    table = list(csv.DictReader(open(run / "slopes.csv")))
    assert {r["parameter"] for r in table} == {"exp_tau", "eta", "nu", "voronoi"}
    assert all(r["slope"] != "nan" and r["ci_low"] != "nan" for r in table)
    nu = next(r for r in table if r["parameter"] == "nu" and r["aggregate"] == "log_median")
    assert float(nu["theory"]) == -0.5 and nu["n_fits"] == str(len(SIZES) * REPS)
    term = result["terminal"]
    assert term.count("err_beta") == 1 and "nan" not in term.split("\n\n")[1]
    assert "`err_beta`" in (run / "slopes.md").read_text()
    assert json.loads((run / "slopes.json").read_text())["metadata"]["skipped_blocks"] == [
        "beta",
        "density",
    ]
    assert (run / "rates.png").stat().st_size > 10_000


def test_dead_beta_block_still_reported_under_a_softmax_gate(tmp_path: Path) -> None:
    fits = synthetic({"exp_tau": -0.5, "eta": -0.5}, 3, SIZES[:4], 10, nan_blocks=("beta",))
    run = write_run(tmp_path / "run", fits, manifest_for(gate="softmax", likelihood="categorical"))
    rows = make_report(run, n_boot=20)["rows"]
    beta = [r for r in rows if r["parameter"] == "beta"]
    assert len(beta) == 3 and all(r["n_failed"] == 40 and math.isnan(r["slope"]) for r in beta)


def test_compare_and_phase_with_an_input_free_run(tmp_path: Path) -> None:
    free = write_run(
        tmp_path / "free",
        synthetic(REGRESSION_INPUT_FREE, seed=4, nan_blocks=("beta", "density")),
        manifest_for("homogeneous", 0.125, gate="input_free", name="free"),
    )
    soft = write_run(
        tmp_path / "soft",
        synthetic({"beta": -0.5, "exp_tau": -0.375, "eta": -0.5}, seed=5),
        manifest_for("homogeneous", 0.0, likelihood="categorical", name="soft"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png, _ = plot_comparison([free, soft], None, tmp_path / "cmp", n_boot=20)
        paths = write_phase([free, soft], tmp_path / "phase", n_boot=50)
    assert png.stat().st_size > 10_000 and paths["png"].stat().st_size > 10_000
    rows = list(csv.DictReader(open(paths["csv"])))
    got = {(r["run"], r["parameter"]): r for r in rows}
    assert ("free", "beta") not in got and ("soft", "beta") in got
    assert ("free", "nu") in got and ("free", "voronoi") in got
    assert all(r["slope"] != "nan" for r in rows)
    assert float(got[("free", "nu")]["uniform"]) == -0.375
    assert got[("free", "voronoi")]["uniform"] == "nan"  # no hypothesis in the homogeneous regime
    tol = 5 * math.sqrt(math.pi / 2) * SIGMA / math.sqrt(REPS * 21.6)
    assert abs(float(got[("free", "nu")]["slope"]) + 0.5) < tol


# --------------------------------------------------------------------------- predecessor


def test_predecessor_marks_yes_and_no(tmp_path: Path) -> None:
    # "yes": a run whose every block decays at exactly the published exponent. The same noise
    # vector at every size makes the per-size median exactly C n^a, so our point slope equals the
    # published value to rounding and sits inside the bootstrap CI (whose half-width is ~2 SE).
    dist = synthetic(PUBLISHED_SLOPES["distinguishable"], seed=6, same_noise=True)
    # "no": every block at n^(-1/2), against published collapse slopes -0.23 ... -0.39. With
    # sigma = 0.25 the slope's SE is 0.0105 and the CI half-width ~0.02; the nearest published
    # value (eta, -0.39) lies 0.11 from the truth, so it is inside the CI only if the slope errs
    # by more than 0.09 = 8 SE.
    coll = synthetic(
        {"beta": -0.5, "exp_tau": -0.5, "eta": -0.5},
        seed=7,
        sigma=0.25,
        nan_blocks=("nu", "density"),
    )
    coll["at_bound"][:5] = 1
    coll["converged"][5:8] = 0
    runs = {
        "distinguishable": write_run(tmp_path / "d", dist, manifest_for()),
        "collapse_eta": write_run(tmp_path / "c", coll, manifest_for("homogeneous", 0.125)),
    }
    res = write_predecessor(runs, tmp_path / "out" / "pred", n_boot=400)
    rows = {(r["setting"], r["block"]): r for r in res["rows"]}
    assert len(res["rows"]) == 8
    for block, published in PUBLISHED_SLOPES["distinguishable"].items():
        r = rows[("distinguishable", block)]
        assert r["published"] == published
        assert r["slope"] == pytest.approx(published, abs=1e-9)
        assert r["published_in_ci"] == "yes"
        assert r["uniform"] == -0.5 and r["pointwise"] == -0.5
    for block in ("beta", "exp_tau", "eta"):
        r = rows[("collapse_eta", block)]
        assert abs(r["slope"] + 0.5) < 5 * slope_se(sigma=0.25)
        assert r["published_in_ci"] == "no"
        assert r["n_failed"] == 3 and r["n_at_bound"] == 5
    assert rows[("collapse_eta", "nu")]["published_in_ci"] == "n/a"  # no err_nu in that run
    assert rows[("collapse_eta", "exp_tau")]["uniform"] == -0.25

    # the same machinery as make_report: identical log-median slope and CI
    make_report(runs["collapse_eta"], n_boot=400, seed=0)
    ref = {
        r["parameter"]: r
        for r in csv.DictReader(open(runs["collapse_eta"] / "slopes.csv"))
        if r["aggregate"] == "log_median"
    }
    for block in ("beta", "exp_tau", "eta"):
        r = rows[("collapse_eta", block)]
        assert r["ci_low"] == float(ref[block]["ci_low"])
        assert r["ci_high"] == float(ref[block]["ci_high"])

    md = res["paths"]["md"].read_text()
    assert "published inside our CI?" in md and "| yes |" in md and "| no |" in md
    assert "tau itself" in md and "(published: tau) [1]" in md
    table = list(csv.DictReader(open(res["paths"]["csv"])))
    assert len(table) == 8 and table[0]["setting"] == "distinguishable"
    assert res["paths"]["png"].stat().st_size > 10_000
    assert res["paths"]["pdf"].read_bytes()[:4] == b"%PDF"


def test_predecessor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="setting"):
        predecessor_rows({"distinguishabel": {"n": np.array([1])}})
    with pytest.raises(ValueError, match="no run"):
        predecessor_rows({})


# --------------------------------------------------------------------------- gates

GATE_SIZES = np.array([1000, 4000, 16000])
WEIGHTS = np.geomspace(0.05, 0.6, 5)


def gate_fits(weight: float, b: float, seed: int, beta: bool = True) -> dict[str, np.ndarray]:
    """err = n^(-1/2) * weight^b * lognormal for exp_tau, eta and (if beta) beta; density flat."""
    fits = synthetic(
        {"exp_tau": -0.5, "eta": -0.5, **({"beta": -0.5} if beta else {})},
        seed=seed,
        sizes=GATE_SIZES,
        scale=weight**b / 2.0,
        nan_blocks=() if beta else ("beta",),
    )
    fits["err_eta"] = fits["err_eta"] / weight**b  # eta does not depend on the weight here
    return fits


def gate_se(weights: np.ndarray = WEIGHTS, reps: int = REPS, sigma: float = SIGMA) -> float:
    x = np.log(weights)
    var_point = math.pi / 2 * sigma**2 / (reps * len(GATE_SIZES))
    return math.sqrt(var_point / float(np.sum((x - x.mean()) ** 2)))


def gate_runs(seed: int, b: float = -1.0, gate: str = "input_free") -> list[GateRun]:
    return [
        GateRun(f"{gate}-{i}", gate, float(w), math.nan, gate_fits(w, b, 100 * seed + i), None)
        for i, w in enumerate(WEIGHTS)
    ]


def test_gate_exponent_recovered_per_gate_and_block() -> None:
    runs = gate_runs(0, b=-1.0) + gate_runs(1, b=-0.5, gate="softmax")
    points, exponents = gate_rows(runs, n_boot=1000, seed=0)
    got = {(e["gate"], e["block"]): e for e in exponents}
    se = gate_se()  # 0.029
    truth = {"input_free": -1.0, "softmax": -0.5}
    for gate, b in truth.items():
        e = got[(gate, "exp_tau")]
        assert abs(e["exponent"] - b) < 5 * se, e
        # percentile CI width ~ 2 * 1.96 * SE (bootstrap median variance is a bit conservative)
        assert 0.6 < (e["ci_high"] - e["ci_low"]) / (2 * 1.96 * se) < 1.6, e
        assert abs(got[(gate, "eta")]["exponent"]) < 5 * se
        assert e["n_runs"] == 5 and e["n_fits"] == 5 * 3 * REPS and e["n_failed"] == 0
    # the level: sqrt(n) * median(err) = median(2 * (w^b / 2) * exp(sigma Z)) ~ w^b
    for p in points:
        if p["block"] == "exp_tau":
            w, b = p["adapter_weight"], truth[p["gate"]]
            assert abs(math.log(p["sqrt_n_median_err"] / w**b)) < 5 * gate_se() * 2
            assert p["ci_low"] < p["sqrt_n_median_err"] < p["ci_high"]


def test_gate_ci_coverage() -> None:
    # 80 datasets, 95% intervals; measured coverage over 300 datasets: 0.977 (the bootstrap of a
    # median of 40 is slightly conservative). 80 draws at p = 0.95 have SD 1.95 hits; >= 71 hits
    # (0.88) fails by chance with probability ~0.2% even at p = 0.95.
    hits = 0
    for s in range(80):
        _, exponents = gate_rows(gate_runs(1000 + s), n_boot=300, seed=s)
        e = next(x for x in exponents if x["block"] == "exp_tau")
        hits += e["ci_low"] <= -1.0 <= e["ci_high"]
    assert hits >= 71, hits


def test_gate_failed_fits_excluded_and_counted() -> None:
    runs = gate_runs(2)
    clean_points, clean_exp = gate_rows(runs, n_boot=100, seed=3)
    dirty = []
    for run in runs:
        fits = {k: np.concatenate([v, v[:6]]) for k, v in run.fits.items()}
        fits["converged"][-6:] = 0
        fits["err_exp_tau"][-6:] = 1e6  # would dominate if averaged
        fits["err_eta"][-6:] = np.nan
        fits["replicate"][-6:] += REPS
        dirty.append(GateRun(run.name, run.gate, run.adapter_weight, run.tau_star, fits, None))
    points, exponents = gate_rows(dirty, n_boot=100, seed=3)
    for a, b in zip(clean_points, points, strict=True):
        assert a["sqrt_n_median_err"] == b["sqrt_n_median_err"]
        assert b["n_failed"] == 6 and a["n_failed"] == 0
    for a, b in zip(clean_exp, exponents, strict=True):
        assert a["exponent"] == b["exponent"] and b["n_failed"] == 30


def test_gate_too_few_weights_and_all_nan_beta() -> None:
    run = GateRun("one", "input_free", 0.3, math.nan, gate_fits(0.3, -1.0, 0, beta=False), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points, exponents = gate_rows([run], n_boot=50)
    assert {p["block"] for p in points} == {"exp_tau", "eta"}
    assert all(math.isnan(e["exponent"]) and "fewer than 2" in e["note"] for e in exponents)


def test_adapter_weight_from_config() -> None:
    free = {"model": {"d": 2, "gate": "input_free"}, "truth": {"tau": 0.7, "beta": None}}
    assert adapter_weight(free) == pytest.approx(1 / (1 + math.exp(-0.7)), rel=1e-15)
    flat = {"model": {"d": 3, "gate": "softmax"}, "truth": {"tau": -1.0, "beta": [0, 0, 0]}}
    assert adapter_weight(flat) == pytest.approx(1 / (1 + math.e), rel=1e-12)
    # beta . x ~ N(0, |beta|^2): compare the Monte Carlo mean with Gauss-Hermite quadrature.
    beta, tau = np.array([1.0, 1.0]) / math.sqrt(2.0), 0.5
    cfg = {"model": {"d": 2}, "truth": {"tau": tau, "beta": beta.tolist()}}
    nodes, wts = np.polynomial.hermite_e.hermegauss(80)
    exact = float(np.sum(wts / (1 + np.exp(-(np.linalg.norm(beta) * nodes + tau))))) / math.sqrt(
        2 * math.pi
    )
    # sd of sigmoid(Z + 0.5) is < 0.25; 200000 draws: SE < 5.6e-4; allow 5 SE.
    assert adapter_weight(cfg) == pytest.approx(exact, abs=2.8e-3)
    assert adapter_weight(cfg) == adapter_weight(cfg)  # fixed draws
    # sigmoid gate: frozen weight proportional to 1/2, adapter j to sigmoid(g_j); beta = 0 makes
    # it exact: S = sigmoid(0) + sigmoid(1), total = S / (1/2 + S)
    two = {"model": {"d": 2, "gate": "sigmoid"}, "truth": {"tau": [0, 1], "beta": [[0, 0]] * 2}}
    s = 0.5 + 1 / (1 + math.exp(-1.0))
    assert adapter_weight(two) == pytest.approx(s / (0.5 + s), rel=1e-12)
    with pytest.raises(ValueError, match="gate"):
        adapter_weight({"model": {"d": 2, "gate": "moe"}, "truth": {"tau": 0.0}})
    with pytest.raises(ValueError, match="beta"):
        adapter_weight({"model": {"d": 2}, "truth": {"tau": [0.0, 1.0], "beta": [1.0, 2.0]}})


def test_write_gates_from_directories(tmp_path: Path) -> None:
    dirs = []
    for i, w in enumerate(WEIGHTS[[0, 2, 4]]):
        tau = math.log(w / (1 - w))  # input-free: lambda* = sigmoid(tau*), computed from config
        man = manifest_for(gate="input_free", name=f"free-{i}")
        man["config"]["truth"]["tau"] = tau
        dirs.append(write_run(tmp_path / f"free{i}", gate_fits(w, -1.0, i, beta=False), man))
        man = manifest_for(gate="softmax", name=f"soft-{i}", adapter_weight=float(w))
        dirs.append(write_run(tmp_path / f"soft{i}", gate_fits(w, -0.5, 10 + i), man))
    res = write_gates(dirs, tmp_path / "gates", n_boot=200)
    got = {(e["gate"], e["block"]): e for e in res["exponents"]}
    assert set(got) == {
        ("softmax", "beta"),
        ("softmax", "exp_tau"),
        ("softmax", "eta"),
        ("input_free", "exp_tau"),
        ("input_free", "eta"),
    }
    se = gate_se(WEIGHTS[[0, 2, 4]])
    assert abs(got[("input_free", "exp_tau")]["exponent"] + 1.0) < 5 * se
    assert abs(got[("softmax", "exp_tau")]["exponent"] + 0.5) < 5 * se
    free_w = sorted(p["adapter_weight"] for p in res["points"] if p["run"].startswith("free"))
    assert free_w[::2] == pytest.approx(sorted(WEIGHTS[[0, 2, 4]]), rel=1e-12)
    table = list(csv.DictReader(open(res["paths"]["csv"])))
    assert len(table) == 3 * 2 + 3 * 3
    md = res["paths"]["md"].read_text()
    assert "| input_free | exp_tau |" in md and "exponent b" in md
    assert res["paths"]["png"].stat().st_size > 10_000
    assert res["paths"]["pdf"].read_bytes()[:4] == b"%PDF"

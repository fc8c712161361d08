"""Studies as data: `[grid]` expansion and validation, the study report on synthetic runs with
known exponents (slope and sqrt(n) x median statistics, fitted exponents, references, the
figure's data), and one tiny grid through `moejax sweep` / `moejax study`.

Synthetic errors are ``c * n^a * exp(SIGMA Z)``: 40 replicates at 8 sizes in [1e3, 1e5], so a
log-median slope has a standard error of about sqrt(pi/2) SIGMA / sqrt(REPS * Sxx) = 0.011
(Sxx = sum of squared deviations of log n); the tolerances below are 5 of those.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.container import BarContainer

from moejax.cli import main
from moejax.report.study import (
    StudyRun,
    StudyRuns,
    load_study,
    study_figure,
    study_rows,
    write_study,
)
from moejax.report.table import write_csv_atomic
from moejax.sweep.config import ConfigError, config_hash, load, resolve
from moejax.sweep.grid import expand, is_grid, read_raw, resolve_options, study_from_raw
from moejax.sweep.grid import load_study as load_grid

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
SIZES = np.geomspace(1e3, 1e5, 8).astype(int)
REPS, SIGMA = 40, 0.3
SLOPE_SE = (
    math.sqrt(math.pi / 2)
    * SIGMA
    / math.sqrt(REPS * np.sum((np.log(SIZES) - np.log(SIZES).mean()) ** 2))
)


def synthetic(rates: dict[str, float], seed: int, sizes=SIZES, scale: float = 1.0, at_bound=0):
    """Fits columns with err_<block> = scale * n^rate * exp(SIGMA Z); the first ``at_bound``
    replicates of each size flagged on a bound."""
    rng = np.random.default_rng(seed)
    n = np.repeat(sizes, REPS)
    rep = np.tile(np.arange(REPS), len(sizes))
    out: dict[str, Any] = {
        "n": n.astype(np.int64),
        "replicate": rep.astype(np.int64),
        "converged": np.ones(n.shape, np.int64),
        "at_bound": (rep < at_bound).astype(np.int64),
    }
    for b, a in rates.items():
        out[f"err_{b}"] = (
            scale * n.astype(float) ** a * np.exp(SIGMA * rng.standard_normal(n.shape))
        )
    return out


def make_study(points, options: dict[str, Any], keys=None) -> StudyRuns:
    """In-memory study: points = [(name, values, manifest extras, fits)]."""
    keys = tuple(keys or dict.fromkeys(k for _, v, _, _ in points for k in v))
    opts = resolve_options(options, keys, [v for _, v, _, _ in points])
    runs = tuple(
        StudyRun(name, i, values, {"config": {"model": {}}} | man, fits, Path(name))
        for i, (name, values, man, fits) in enumerate(points)
    )
    return StudyRuns("s", keys, opts, runs, ())


# ---------------------------------------------------------------------------------- the grid


def test_product_zip_names_and_named_points() -> None:
    pts = expand({"truth.gamma": [0.0, 0.25], "model.gate": ["softmax", "input_free"]})
    assert [n for n, _ in pts] == [
        "gamma-0_gate-softmax",
        "gamma-0_gate-input_free",
        "gamma-0.25_gate-softmax",
        "gamma-0.25_gate-input_free",
    ]
    assert pts[1][1] == {"truth.gamma": 0.0, "model.gate": "input_free"}
    z = expand({"zip": True, "model.d": [2, 3], "model.K": [3, 4], "names": ["a", "b"]})
    assert z == [("a", {"model.d": 2, "model.K": 3}), ("b", {"model.d": 3, "model.K": 4})]
    named = expand({"points": {"p": {"truth.gamma": 0.1, "truth.regime": "homogeneous"}}})
    assert named == [("p", {"truth.gamma": 0.1, "truth.regime": "homogeneous"})]


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        ({"truth.gama": [0.1]}, "not a config field"),
        ({"truth.gamma": 0.1}, "non-empty list"),
        ({"truth.gamma": []}, "non-empty list"),
        ({"zip": True, "model.d": [2, 3], "model.K": [3]}, "one length"),
        ({"model.d": [2, 3], "names": ["a"]}, "2 names"),
        ({"model.d": [2, 3], "names": ["a", "a"]}, "two points"),
        ({"model.d": [2], "names": ["a/b"]}, "directory name"),
        ({}, "no keys"),
        ({"points": {"p": {"truth.gamma": 0.1}}, "model.d": [2]}, "not both"),
    ],
)
def test_bad_grids_raise_one_line(grid: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        expand(grid)
    assert "\n" not in str(info.value)


def test_overrides_apply_to_every_point_and_bad_points_are_named() -> None:
    raw = {
        "name": "st",
        "model": {"d": 2, "K": 2},
        "sizes": {"list": [200, 300]},
        "grid": {"model.adapter": ["tanh", "relu"]},
    }
    s = study_from_raw(raw, {"replicates": 3})
    assert [p.config["name"] for p in s.points] == ["st-adapter-tanh", "st-adapter-relu"]
    assert [p.config["model"]["adapter"] for p in s.points] == ["tanh", "relu"]
    assert all(p.config["replicates"] == 3 for p in s.points)
    # a point is the same config as writing it by hand (the name is not part of the hash)
    by_hand = resolve({**{k: v for k, v in raw.items() if k != "grid"}, "replicates": 3,
                       "model": {"d": 2, "K": 2, "adapter": "relu"}})  # fmt: skip
    assert config_hash(s.points[1].config) == config_hash(by_hand)
    bad = {**raw, "grid": {"model.adapter": ["tanh", "swish"]}}
    with pytest.raises(ConfigError, match=r"grid point 'adapter-swish': model\.adapter"):
        study_from_raw(bad)
    with pytest.raises(ConfigError, match="is a study"):
        resolve(raw)


@pytest.mark.parametrize(
    ("study", "needle"),
    [
        ({"statistic": "mean"}, "study.statistic"),
        ({"x": "truth.tau"}, "study.x"),
        ({"group": "model.gate"}, "study.group"),
        ({"blocks": ["bta"]}, "study.blocks"),
        ({"fit": True}, "sqrt_n_median"),
        ({"reference": {"values": {"nope": {"beta": -0.5}}}}, "not a grid point"),
        ({"reference": {"values": {"gamma-0": {"beta": "x"}}}}, "expected a block name"),
        ({"colour": "red"}, "unknown key"),
        ({"n_boot": -1}, "n_boot"),
    ],
)
def test_bad_study_tables_raise(study: dict, needle: str) -> None:
    raw = {"model": {"d": 2, "K": 2}, "sizes": {"list": [200, 300]}}
    raw |= {"grid": {"truth.gamma": [0.0, 0.1]}, "truth": {"regime": "homogeneous"}}
    with pytest.raises(ConfigError, match=needle):
        study_from_raw({**raw, "study": study})


def _shipped() -> list[Path]:
    return sorted(p for p in SWEEPS.rglob("*.toml"))


def _configs(path: Path) -> list[dict]:
    if not is_grid(read_raw(path)):  # the merged file: a study may extend another study
        return [load(path)]
    return [p.config for p in load_grid(path).points]


def test_shipped_config_names_are_unique() -> None:
    # runs/<name> is the default output directory: two configs with one name would share it
    names = [c["name"] for p in _shipped() for c in _configs(p)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: str(p.relative_to(SWEEPS)))
def test_shipped_configs_are_the_designs_they_claim(path: Path) -> None:
    """What resolve() does not enforce: a heterogeneous design has an adapter that differs from
    the frozen expert in activation, likelihood or logit scale; every config has at least two
    sample sizes; a grid's points are each what its keys say and differ from each other only
    through those keys (and their name)."""
    for cfg in _configs(path):
        m = cfg["model"]
        if cfg["truth"]["regime"] == "heterogeneous":
            frozen = (m["frozen"], m["frozen_likelihood"], m["frozen_scale"])
            assert frozen != (m["adapter"], m["likelihood"], m["scale"]), cfg["name"]
        assert len(set(cfg["sizes"]["list"])) >= 2, cfg["name"]
    if not is_grid(read_raw(path)):
        return
    study = load_grid(path)
    assert len(study.points) >= 2
    for p in study.points:
        for key, value in p.values.items():
            section, _, field = key.rpartition(".")
            got = p.config[section][field] if section else p.config[field]
            assert got == value or np.allclose(got, value), (p.name, key)

    def strip(cfg: dict) -> dict:
        c = json.loads(json.dumps(cfg))
        c.pop("name")
        for key in study.keys:
            section, _, field = key.rpartition(".")
            (c[section] if section else c).pop(field, None)
        c["truth"].pop("eta", None)  # derived from eta0 and delta in the homogeneous regime
        if {"model.adapters", "model.likelihood"} & set(study.keys):
            # per-adapter and per-likelihood defaults follow the adapter count and kind
            for f in ("delta", "nu", "nu_delta"):
                c["truth"].pop(f, None)
        if "model.likelihood" in study.keys:  # eta0's rows and the frozen likelihood follow it
            for f in ("eta0", "frozen_likelihood"):
                c["model"].pop(f, None)
        if "model.scale" in study.keys and c["model"].get("frozen") == "none":
            c["model"].pop("frozen_scale", None)  # (no frozen expert: its default follows)
        return c

    stripped = [strip(p.config) for p in study.points]
    assert all(c == stripped[0] for c in stripped[1:])
    hashes = [config_hash(p.config) for p in study.points]
    assert len(set(hashes)) == len(hashes)  # no point repeats another


def test_overfitted_runs_get_the_overfitted_hypothesis() -> None:
    from moejax.report.theory import theory_regime, theory_slope

    over = {"adapters": 1, "fitted_adapters": 2}
    assert theory_regime("heterogeneous", over) == "overfitted"
    assert theory_regime("homogeneous", over) is None
    assert theory_regime("heterogeneous", {"adapters": 2, "fitted_adapters": 2}) == "heterogeneous"
    assert theory_regime("homogeneous", {}) == "homogeneous"
    for block, a in {"beta": -0.25, "eta": -0.25, "voronoi": -0.25, "exp_tau": -0.5}.items():
        assert theory_slope(block, "overfitted", None) == {"uniform": a, "pointwise": a}
    man = {"regime": "heterogeneous", "config": {"model": over}}
    fits = synthetic({"beta": -0.25, "exp_tau": -0.5, "eta": -0.25}, seed=3)
    study = make_study([("m1-fit2", {"model.fitted_adapters": 2}, man, fits)], {"n_boot": 50})
    got = {r["block"]: r for r in study_rows(study)[0]}
    assert got["eta"]["uniform"] == -0.25 and got["exp_tau"]["pointwise"] == -0.5


# --------------------------------------------------------------------- slope statistic


def phase_points(gammas=(0.0, 0.25), at_bound=1):
    pts = []
    for i, g in enumerate(gammas):
        fits = synthetic(
            {"beta": -0.5, "exp_tau": -0.5 + g, "eta": -0.5}, seed=i, at_bound=at_bound
        )
        man = {"regime": "homogeneous", "gamma": g}
        pts.append((f"gamma-{g:g}", {"truth.gamma": g}, man, fits))
    return pts


def test_slope_study_recovers_exponents_theory_and_counts() -> None:
    study = make_study(phase_points(), {})
    assert study.options["x"] == "truth.gamma" and study.options["fit"] is False
    rows, fits = study_rows(study)
    assert fits == []
    got = {(r["x"], r["block"]): r for r in rows}
    assert abs(got[(0.25, "exp_tau")]["value"] + 0.25) < 5 * SLOPE_SE
    assert abs(got[(0.0, "exp_tau")]["value"] + 0.5) < 5 * SLOPE_SE
    assert abs(got[(0.25, "eta")]["value"] + 0.5) < 5 * SLOPE_SE
    for r in rows:
        assert r["ci_low"] < r["value"] < r["ci_high"]
        assert 0.5 < (r["ci_high"] - r["ci_low"]) / (2 * 1.96 * SLOPE_SE) < 2.0
        assert r["n_at_bound"] == len(SIZES) and r["n_total"] == len(SIZES) * REPS
    assert got[(0.25, "exp_tau")]["uniform"] == 0.0
    assert got[(0.25, "exp_tau")]["pointwise"] == -0.25
    assert got[(0.25, "eta")]["uniform"] == -0.25 and got[(0.25, "eta")]["pointwise"] == -0.5


def test_slope_rows_equal_the_runs_own_slope_table() -> None:
    from moejax.report.slopes import compute_slopes, main_rows

    study = make_study(phase_points(), {"n_boot": 300, "seed": 4})
    rows, _ = study_rows(study)
    for run in study.runs:
        ref = main_rows(compute_slopes(run.fits, aggregates=("log_median",), n_boot=300, seed=4))
        for r in ref:
            row = next(x for x in rows if x["point"] == run.point and x["block"] == r["parameter"])
            assert (row["value"], row["ci_low"], row["ci_high"]) == (
                r["slope"],
                r["ci_low"],
                r["ci_high"],
            )


def test_failed_fits_are_excluded_and_counted() -> None:
    clean = make_study(phase_points(), {"n_boot": 100})
    pts = []
    for name, values, man, fits in phase_points():
        f = {k: np.concatenate([v, v[:6]]) for k, v in fits.items()}
        f["converged"][-6:] = 0
        f["err_exp_tau"][-6:] = 1e6  # would dominate a mean if it were used
        pts.append((name, values, man, f))
    dirty = make_study(pts, {"n_boot": 100})
    for a, b in zip(study_rows(clean)[0], study_rows(dirty)[0], strict=True):
        assert a["value"] == b["value"] and (a["n_failed"], b["n_failed"]) == (0, 6)


def test_references_are_marked_inside_or_outside_the_ci() -> None:
    ref = {"label": "published", "values": {"gamma-0": {"exp_tau": -0.5, "eta": -0.3}}}
    study = make_study(phase_points(), {"reference": ref})
    rows, _ = study_rows(study)
    got = {(r["point"], r["block"]): r for r in rows}
    assert got[("gamma-0", "exp_tau")]["reference_in_ci"] == "yes"  # the true exponent
    assert got[("gamma-0", "eta")]["reference_in_ci"] == "no"  # 18 SE away
    assert got[("gamma-0.25", "eta")]["reference_in_ci"] == ""
    assert math.isnan(got[("gamma-0.25", "eta")]["reference"])


def test_figure_draws_the_rows() -> None:
    study = make_study(phase_points((0.0, 0.125, 0.25)), {"n_boot": 50})
    rows, fits = study_rows(study)
    fig = study_figure(study, rows, fits)
    axes = fig.axes
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    assert len(axes) == len(blocks)
    for ax, block in zip(axes, blocks, strict=True):
        want = sorted((r["x"], r["value"]) for r in rows if r["block"] == block)
        data = ax.containers[0].lines[0]  # the errorbar's data line
        assert np.allclose(np.c_[data.get_xdata(), data.get_ydata()], want)
        lines = ax.get_lines()
        uniform = next(x for x in lines if x.get_label() == "uniform hypothesis")
        want_u = sorted((r["x"], r["uniform"]) for r in rows if r["block"] == block)
        assert np.allclose(np.c_[uniform.get_xdata(), uniform.get_ydata()], want_u)


def test_categorical_study_draws_bars_per_point() -> None:
    pts = []
    for k, (a, r) in enumerate([("tanh", -0.5), ("relu", -0.3)]):
        fits = synthetic({"beta": -0.5, "exp_tau": -0.5, "eta": r}, seed=k)
        pts.append((a, {"model.adapter": a}, {"regime": "heterogeneous"}, fits))
    study = make_study(pts, {"n_boot": 50})
    assert study.options["x"] is None
    numeric = [(n, {**v, "model.d": 2}, m, f) for n, v, m, f in pts]
    assert make_study(numeric, {}).options["x"] == "model.d"
    assert make_study(numeric, {"x": "point"}).options["x"] is None
    rows, fits = study_rows(study)
    fig = study_figure(study, rows, fits)
    eta = fig.axes[[r["block"] for r in rows if r["point"] == "tanh"].index("eta")]
    dots = eta.containers[0].lines[0]  # a dot per point with its CI, never a bar from 0
    assert np.allclose(dots.get_ydata(), [r["value"] for r in rows if r["block"] == "eta"])
    assert [t.get_text() for t in eta.get_xticklabels()] == ["tanh", "relu"]
    assert eta.get_xlabel() == "adapter activation"  # "model.adapter" in words


# ------------------------------------------------------------ sqrt(n) x median statistic

GATE_SIZES = np.array([1000, 4000, 16000])
WEIGHTS = np.geomspace(0.05, 0.6, 5)


def gate_points(b_by_gate: dict[str, float], seed: int = 0):
    pts = []
    for gate, b in b_by_gate.items():
        for i, w in enumerate(WEIGHTS):
            fits = synthetic(
                {"exp_tau": -0.5, "eta": -0.5},
                seed=seed + 10 * i + len(pts),
                sizes=GATE_SIZES,
                scale=float(w) ** b,
            )
            fits["err_eta"] /= float(w) ** b  # eta does not depend on the weight
            man = {"regime": "heterogeneous", "adapter_weight": float(w)}
            pts.append((f"{gate}-{i}", {"model.gate": gate, "truth.tau": float(i)}, man, fits))
    return pts


def gate_se() -> float:
    x = np.log(WEIGHTS)
    var_point = math.pi / 2 * SIGMA**2 / (REPS * len(GATE_SIZES))
    return math.sqrt(var_point / float(np.sum((x - x.mean()) ** 2)))


GATE_OPTIONS = {"statistic": "sqrt_n_median", "x": "adapter_weight", "group": "model.gate"}


def test_sqrt_n_median_exponent_per_series() -> None:
    study = make_study(gate_points({"input_free": -1.0, "softmax": -0.5}), GATE_OPTIONS)
    assert study.options["fit"] is True
    rows, fits = study_rows(study)
    got = {(e["group"], e["block"]): e for e in fits}
    se = gate_se()  # 0.029
    for gate, b in {"input_free": -1.0, "softmax": -0.5}.items():
        e = got[(gate, "exp_tau")]
        assert abs(e["exponent"] - b) < 5 * se, e
        assert 0.6 < (e["ci_high"] - e["ci_low"]) / (2 * 1.96 * se) < 1.6, e
        assert abs(got[(gate, "eta")]["exponent"]) < 5 * se
        assert e["n_points"] == 5 and e["n_fits"] == 5 * 3 * REPS and e["n_failed"] == 0
    for r in rows:  # the level: sqrt(n) * median(w^b n^(-1/2) exp(sigma Z)) ~ w^b
        if r["block"] == "exp_tau":
            b = {"input_free": -1.0, "softmax": -0.5}[r["group"]]
            assert abs(math.log(r["value"] / r["x"] ** b)) < 10 * se
            assert r["ci_low"] < r["value"] < r["ci_high"]
            assert r["exponent"] == got[(r["group"], "exp_tau")]["exponent"]


def test_sqrt_n_median_ci_coverage() -> None:
    # 60 datasets, 95% intervals (measured coverage of this bootstrap: ~0.97). 60 draws at
    # p = 0.95 have SD 1.7 hits; >= 52 hits (0.87) fails by chance with probability < 0.5%.
    hits = 0
    for s in range(60):
        pts = gate_points({"input_free": -1.0}, seed=1000 + 50 * s)
        study = make_study(pts, {**GATE_OPTIONS, "n_boot": 200, "seed": s})
        e = next(x for x in study_rows(study)[1] if x["block"] == "exp_tau")
        hits += e["ci_low"] <= -1.0 <= e["ci_high"]
    assert hits >= 52, hits


def test_one_x_value_gives_no_exponent() -> None:
    pts = gate_points({"input_free": -1.0})[:1]
    rows, fits = study_rows(make_study(pts, GATE_OPTIONS))
    assert fits and all(math.isnan(e["exponent"]) and "fewer than 2" in e["note"] for e in fits)


# ---------------------------------------------------------------------- end to end (CLI)

TINY_GRID = """\
name = "tg"
seed = 0
replicates = 3
[model]
d = 2
K = 2
[sizes]
list = [200, 300]
[run]
lanes = 4
density_points = 20
[grid]
"truth.tau" = [0.0, -1.0]
names = ["w50", "w27"]
[study]
statistic = "sqrt_n_median"
x = "adapter_weight"
n_boot = 50
"""


def test_grid_sweep_then_study_from_the_runs_alone(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "tg.toml"
    cfg.write_text(TINY_GRID)
    out = tmp_path / "study"
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for p in ("w50", "w27"):
        man = json.loads((out / p / "manifest.json").read_text())
        assert man["study"]["point"] == p and man["name"] == f"tg-{p}"
        assert (out / p / "slopes.csv").is_file()
    rows = list(csv.DictReader(open(out / "study.csv")))
    assert {r["point"] for r in rows} == {"w50", "w27"}
    assert all(int(r["n_total"]) == 6 for r in rows)
    md = (out / "study.md").read_text()
    assert md in printed
    weights = {r["point"]: float(r["x"]) for r in rows}
    assert weights["w27"] < weights["w50"]  # tau* = -1 gives the adapter less weight
    # the report again, from the directory alone: the same bytes
    first = (out / "study.csv").read_bytes()
    (out / "study.csv").unlink()
    assert main(["study", str(out)]) == 0
    assert (out / "study.csv").read_bytes() == first
    assert (out / "study.png").stat().st_size > 0 and (out / "study-fit.csv").is_file()
    # a rerun resumes: every point is complete, nothing is recomputed
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert "0 fits" not in capsys.readouterr().out
    # an incomplete point is left out and named
    man = json.loads((out / "w27" / "manifest.json").read_text())
    (out / "w27" / "manifest.json").write_text(json.dumps({**man, "status": "running"}))
    res = write_study(out)
    assert {r["point"] for r in res["rows"]} == {"w50"} and res["study"].missing == ("1",)
    assert load_study(out).runs[0].point == "w50"


def test_study_cli_errors(tmp_path: Path, capsys) -> None:
    assert main(["study", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["study", str(tmp_path)]) == 2
    assert "no study runs here" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_GRID.replace('"truth.tau"', '"truth.tua"'))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truth.tua" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ the figures

B_TEXT = re.compile(r"^(\S+): b = (\S+) \[(\S+), (\S+)\]$")


def test_gate_figure_prints_each_panels_own_exponent() -> None:
    study = make_study(gate_points({"input_free": -1.0, "softmax": -0.5}), GATE_OPTIONS)
    rows, fits = study_rows(study)
    fig = study_figure(study, rows, fits)
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    want = {(e["group"], e["block"]): e for e in fits}
    for ax, block in zip(fig.axes, blocks, strict=True):
        got = [B_TEXT.match(t.get_text()) for t in ax.get_legend().get_texts()]
        assert all(got) and {m.group(1) for m in got} == {"input_free", "softmax"}
        for m in got:
            e = want[(m.group(1), block)]
            assert [float(v) for v in m.groups()[1:]] == [
                round(e[k], 3) for k in ("exponent", "ci_low", "ci_high")
            ]
        assert ax.get_xlabel() == r"adapter weight $\lambda^*$"
    shared = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("b =" in t for t in shared)  # no panel's exponent in the shared legend


def test_exponent_panels_draw_dots_not_bars() -> None:
    study = make_study(phase_points((0.0, 0.125, 0.25)), {"n_boot": 50})
    rows, fits = study_rows(study)
    fig = study_figure(study, rows, fits, width="column")
    assert fig.get_figwidth() == pytest.approx(3.5)
    for ax in fig.axes:
        assert not any(isinstance(c, BarContainer) for c in ax.containers)
        assert not ax.patches
        assert ax.get_xlabel() == r"drift exponent $\gamma$"
        labels = ax.get_legend_handles_labels()[1]
        assert "uniform hypothesis" in labels
    eta = fig.axes[[r["block"] for r in rows if r["point"] == "gamma-0"].index("eta")]
    assert "pointwise hypothesis" in eta.get_legend_handles_labels()[1]  # differs at gamma > 0
    assert study_figure(study, rows, fits).get_figwidth() == pytest.approx(7.0)


def rows_of(fits: dict[str, Any]) -> Any:
    return zip(*(fits[c].tolist() for c in fits), strict=True)


def test_study_rates_figure_uses_the_study_tables_bootstrap(tmp_path: Path, monkeypatch) -> None:
    from moejax.report import plots
    from moejax.report import study as study_mod

    for i, (name, values, man, fits) in enumerate(phase_points((0.0, 0.25))):
        run = tmp_path / name
        run.mkdir()
        write_csv_atomic(run / "fits.csv", list(fits), rows_of(fits))
        entry = {"name": "s", "point": name, "index": i, "n_points": 2, "values": values,
                 "keys": ["truth.gamma"], "options": {"statistic": "slope", "x": "truth.gamma",
                 "n_boot": 1000, "seed": 3}}  # fmt: skip
        (run / "manifest.json").write_text(
            json.dumps({**man, "status": "complete", "study": entry, "config": {"model": {}}})
        )
    figs = []

    def capture(runs, labels, out_stem, **kw):
        figs.append(plots.comparison_figure(runs, labels, **kw))
        return plots.plot_comparison(runs, labels, out_stem, **kw)

    monkeypatch.setattr(study_mod, "plot_comparison", capture)
    res = write_study(tmp_path)
    (fig,) = figs
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    for ax, point in zip(panels, ("gamma-0", "gamma-0.25"), strict=True):
        want = [
            tuple(round(r[k], 3) for k in ("value", "ci_low", "ci_high"))
            for r in res["rows"]
            if r["point"] == point
        ]
        got = [
            tuple(float(v) for v in m.groups())
            for t in ax.legend_cell.get_legend().get_texts()
            if (m := re.search(r"slope (\S+) \[(\S+), (\S+)\]", t.get_text()))
        ]
        assert got == want  # study.md's numbers: 1000 draws, seed 3


# ------------------------------------------------------------------ Markdown cells, frozen scale


def _md_cell_counts(text: str) -> list[list[int]]:
    """Cells per row of every Markdown table in ``text`` (GFM: ``\\|`` is not a boundary)."""
    tables: list[list[int]] = []
    previous = False
    for line in text.splitlines():
        row = line.strip().startswith("|")
        if row:
            if not previous:
                tables.append([])
            tables[-1].append(len(re.split(r"(?<!\\)\|", line.strip())[1:-1]))
        previous = row
    return tables


def test_study_markdown_tables_keep_their_columns() -> None:
    """The summary's header names the blocks with their math labels, `|` included
    (``$|e^{\\hat\\tau}-e^{\\tau^*}|$``): escaped, the header has as many cells as the separator
    (before: 8 cells over 6 separators). The fitted-exponent table too."""
    from moejax.report.study import to_markdown

    for study in (
        make_study(phase_points(), {}),
        make_study(gate_points({"input_free": -1.0, "softmax": -0.5}), GATE_OPTIONS),
    ):
        rows, fits = study_rows(study)
        tables = _md_cell_counts(to_markdown(study, rows, fits))
        assert len(tables) == (3 if fits else 2)
        for counts in tables:
            assert len(set(counts)) == 1, counts


@pytest.mark.parametrize(
    "path",
    sorted((SWEEPS.parent / "docs" / "results").glob("*/study.md")),
    ids=lambda p: p.parent.name,
)
def test_shipped_study_markdown_tables_keep_their_columns(path: Path) -> None:
    for counts in _md_cell_counts(path.read_text()):
        assert len(set(counts)) == 1, counts


def test_shipped_grids_do_not_warn() -> None:
    """No shipped study moves the frozen expert by surprise (the base configs that set
    model.scale set model.frozen_scale too)."""
    import warnings

    from moejax.sweep.config import ConfigWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        for path in _shipped():
            _configs(path)


SCALE_GRID = {
    "name": "sc",
    "model": {"d": 2, "K": 2},
    "sizes": {"list": [200, 300]},
    "grid": {"model.scale": [1.0, 4.0]},
}


def test_a_grid_over_scale_alone_warns_that_the_frozen_expert_moves() -> None:
    from moejax.sweep.config import ConfigWarning

    with pytest.warns(ConfigWarning, match=r"^grid: model\.scale changes .*frozen_scale"):
        study = study_from_raw(SCALE_GRID)
    assert [p.config["model"]["frozen_scale"] for p in study.points] == [1.0, 4.0]
    import warnings

    with warnings.catch_warnings():  # frozen_scale set in the base or by the grid: no warning
        warnings.simplefilter("error", ConfigWarning)
        pinned = study_from_raw({**SCALE_GRID, "model": {"d": 2, "K": 2, "frozen_scale": 1.0}})
        assert [p.config["model"]["frozen_scale"] for p in pinned.points] == [1.0, 1.0]
        study_from_raw(
            {
                **SCALE_GRID,
                "grid": {"zip": True, **SCALE_GRID["grid"], "model.frozen_scale": [1.0, 4.0]},
            }
        )
        study_from_raw({**SCALE_GRID, "grid": {"truth.gamma": [0.0, 0.1]}})


def test_sweep_prints_the_frozen_scale_warning_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    import moejax.sweep.driver as engine

    monkeypatch.setattr(engine, "run_sweep", lambda *a, **k: {})  # nothing is computed
    text = (
        'name = "sc"\n[model]\nd = 2\nK = 2\n[sizes]\nlist = [200, 300]\n'
        '[grid]\n"model.scale" = [1.0, 4.0]\n'
    )
    (tmp_path / "sc.toml").write_text(text)
    assert main(["sweep", str(tmp_path / "sc.toml"), "--out", str(tmp_path / "o")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and err[0].startswith("moejax: warning: grid: model.scale changes")

"""The joint fit of a drift study (moejax/report/joint.py): log error = a log n + c log delta_n
+ const over every point and size, on synthetic runs whose errors are exactly
``n^a delta_n^c exp(SIGMA Z)`` with known (a, c).

The log median of a cell of REPS lognormal errors has a standard deviation of about
sqrt(pi / 2) SIGMA / sqrt(REPS); the coefficients' standard errors follow from the design
(``CELL_SD^2 (X^T X)^-1``), and the tolerances below are 5 of those.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_study import REPS, SIGMA, SIZES, make_study

from moejax.cli import main
from moejax.report.joint import JOINT_COLUMNS, joint_rows, joint_theory, verdict
from moejax.report.study import load_study, to_markdown, write_study
from moejax.report.table import write_csv_atomic
from moejax.report.theory import theory_slope
from moejax.sweep.config import ConfigError
from moejax.sweep.grid import check_joint_design, resolve_options, study_from_raw

CELL_SD = math.sqrt(math.pi / 2) * SIGMA / math.sqrt(REPS)
#: (a, c) per block: distinct values, so that a mix-up of columns or blocks shows.
TRUE = {"beta": (-0.5, -1.0), "exp_tau": (-0.45, -1.6), "eta": (-0.55, 0.3)}
#: (gamma, ||Delta||_F) of the synthetic drift study: three amplitudes at gamma = 1/8 and two
#: fixed distances at gamma = 0.
POINTS = ((0.125, 1.0), (0.125, 2.0), (0.125, 4.0), (0.0, 0.5), (0.0, 1.0))


def delta_matrix(norm: float) -> list[list[float]]:
    """A 2 x 2 drift with Frobenius norm ``norm``."""
    return (norm / math.sqrt(2.0) * np.eye(2)).tolist()


def drift_fits(norm: float, gamma: float, seed: int, sizes=SIZES, box=None) -> dict[str, Any]:
    """Fits columns with err_<block> = n^a delta_n^c exp(SIGMA Z) (TRUE), delta_n = norm
    n^-gamma. ``box = (fraction, factor)`` flags the first fraction of each size's replicates
    on a bound and multiplies their errors by factor."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.asarray(sizes), REPS)
    rep = np.tile(np.arange(REPS), len(sizes))
    on_box = rep < (round(box[0] * REPS) if box else 0)
    with np.errstate(divide="ignore"):  # norm = 0: no drift, the errors are never read
        delta = norm * n.astype(float) ** -gamma
    out: dict[str, Any] = {
        "n": n.astype(np.int64),
        "replicate": rep.astype(np.int64),
        "converged": np.ones(n.shape, np.int64),
        "at_bound": on_box.astype(np.int64),
    }
    for b, (a, c) in TRUE.items():
        with np.errstate(divide="ignore"):
            err = n.astype(float) ** a * delta**c * np.exp(SIGMA * rng.standard_normal(n.shape))
        out[f"err_{b}"] = np.where(on_box, err * (box[1] if box else 1.0), err)
    return out


def manifest(gamma: float, norm: float, sizes=SIZES, regime: str = "homogeneous") -> dict:
    return {
        "regime": regime,
        "gamma": gamma,
        "config": {
            "model": {},
            "truth": {"regime": regime, "delta": delta_matrix(norm), "gamma": gamma},
            "sizes": {"list": [int(s) for s in sizes]},
        },
    }


def drift_points(points=POINTS, box_at=None):
    """In-memory points [(name, values, manifest, fits)]; ``box_at = (index, (fraction,
    factor))`` puts box fits in one point."""
    out = []
    for i, (g, norm) in enumerate(points):
        box = box_at[1] if box_at and box_at[0] == i else None
        out.append(
            (
                f"g{g:g}-d{norm:g}",
                {"truth.gamma": g, "delta": norm},
                manifest(g, norm),
                drift_fits(norm, g, seed=10 + i, box=box),
            )
        )
    return out


def standard_errors(points=POINTS, sizes=SIZES) -> np.ndarray:
    """Standard errors of (a, c, const) for one cell per (point, size)."""
    x = np.array(
        [[math.log(n), math.log(d) - g * math.log(n), 1.0] for g, d in points for n in sizes]
    )
    return CELL_SD * np.sqrt(np.diag(np.linalg.inv(x.T @ x)))


def rows_by_block(rows) -> dict[str, dict]:
    return {r["block"]: r for r in rows}


# ------------------------------------------------------------------------------ hypotheses


def test_each_hypothesis_gives_a_and_c_that_reproduce_its_per_gamma_exponents() -> None:
    expected = {
        "beta": ((-0.5, -1.0), (-0.5, -1.0)),
        "exp_tau": ((-0.5, -2.0), (-0.5, -1.0)),
        "eta": ((-0.5, -1.0), (-0.5, 0.0)),
        "density": ((-0.5, 0.0), (-0.5, 0.0)),
        "nu": ((-0.5, -1.0), (-0.5, 0.0)),
    }
    for block, (uni, pw) in expected.items():
        got = joint_theory(block)
        assert got == {"uniform": uni, "pointwise": pw}, block
        for gamma in (0.0, 1 / 16, 0.125, 0.25):
            th = theory_slope(block, "homogeneous", gamma)
            for h, (a, c) in got.items():  # delta_n = n^-gamma: n^a delta_n^c = n^(a - c gamma)
                assert a - c * gamma == pytest.approx(th[h]), (block, h, gamma)
    assert all(math.isnan(v) for ac in joint_theory("voronoi").values() for v in ac)


def test_verdict_names_the_hypotheses_inside_the_ci() -> None:
    assert verdict(-1.3, -0.9, -2.0, -1.0) == "pointwise"
    assert verdict(-2.2, -1.8, -2.0, -1.0) == "uniform"
    assert verdict(-2.2, -0.8, -2.0, -1.0) == "both"
    assert verdict(-1.4, -1.2, -2.0, -1.0) == "neither"
    assert verdict(-1.1, -0.9, -1.0, -1.0) == "both (same c)"
    assert verdict(-0.9, -0.8, -1.0, -1.0) == "neither"
    assert verdict(math.nan, -0.8, -1.0, -1.0) == "n/a"


# ------------------------------------------------------------------------------- the fit


def test_recovers_known_a_and_c_with_covering_cis() -> None:
    study = make_study(drift_points(), {"statistic": "joint", "x": "point"})
    assert study.options["joint"] is True and study.options["statistic"] == "slope"
    rows = rows_by_block(joint_rows(study.runs, list(TRUE), n_boot=400))
    se = standard_errors()
    for block, (a, c) in TRUE.items():
        r = rows[block]
        assert abs(r["a"] - a) < 5 * se[0] and abs(r["c"] - c) < 5 * se[1], (block, r)
        width = r["c_ci_high"] - r["c_ci_low"]
        assert 0.5 < width / (2 * 1.96 * se[1]) < 2.0, (block, width, se[1])
        assert r["n_cells"] == len(POINTS) * len(SIZES) == r["n_cells_interior"]
        assert r["n_fits"] == r["n_fits_interior"] == len(POINTS) * len(SIZES) * REPS
        assert r["n_at_bound"] == 0 and r["points_left_out"] == "" and r["note"] == ""
        assert r["resid_sd"] < 3 * CELL_SD
        assert list(r) == list(JOINT_COLUMNS)
    # the predictions beside them, and which c is inside: eta's 0.3 is far from 0 and -1
    for r in rows.values():
        inside = r["c_ci_low"] <= r["uniform_c"] <= r["c_ci_high"]
        assert r["uniform_c_in_ci"] == ("yes" if inside else "no")
        assert r["verdict"] == verdict(r["c_ci_low"], r["c_ci_high"], r["uniform_c"], -1.0)
    assert (rows["exp_tau"]["uniform_c"], rows["exp_tau"]["pointwise_c"]) == (-2.0, -1.0)
    assert rows["eta"]["verdict"] == "neither" and rows["eta"]["pointwise_c_in_ci"] == "no"


def test_the_cis_cover_the_truth_at_about_their_level() -> None:
    # 60 synthetic studies (eta only): the 95% intervals of a and c each cover the truth in
    # at least 51 of them (binomial sd at 95% is 1.7 studies)
    a, c = TRUE["eta"]
    cover_a = cover_c = 0
    for k in range(60):
        pts = [
            (f"p{i}", {"i": i}, manifest(g, d), drift_fits(d, g, seed=1000 * k + i))
            for i, (g, d) in enumerate(POINTS)
        ]
        r = joint_rows(make_study(pts, {"joint": True}).runs, ["eta"], n_boot=200)[0]
        cover_a += r["a_ci_low"] <= a <= r["a_ci_high"]
        cover_c += r["c_ci_low"] <= c <= r["c_ci_high"]
    assert cover_a >= 51 and cover_c >= 51, (cover_a, cover_c)


def test_a_block_draws_do_not_depend_on_the_other_blocks() -> None:
    runs = make_study(drift_points(), {"joint": True}).runs
    alone = joint_rows(runs, ["eta"], n_boot=200, seed=3)[0]
    together = rows_by_block(joint_rows(runs, list(TRUE), n_boot=200, seed=3))["eta"]
    assert alone == together
    other = joint_rows(runs, ["eta"], n_boot=200, seed=4)[0]
    assert other["c_ci_low"] != alone["c_ci_low"] and other["c"] == alone["c"]


def test_interior_columns_exclude_the_box_fits() -> None:
    # 45% of the smallest drift's fits on the box with 30x errors: its medians rise, the
    # all-fit c is pulled down (more error at small delta); the interior fit is not.
    pts = drift_points(box_at=(0, (0.45, 30.0)))
    rows = rows_by_block(joint_rows(make_study(pts, {"joint": True}).runs, list(TRUE), 300))
    se = standard_errors()
    for block, (a, c) in TRUE.items():
        r = rows[block]
        assert r["n_at_bound"] == round(0.45 * REPS) * len(SIZES)
        assert r["n_fits_interior"] == r["n_fits"] - r["n_at_bound"]
        assert abs(r["c_interior"] - c) < 5 * se[1] and abs(r["a_interior"] - a) < 5 * se[0]
        assert r["c_interior_ci_low"] < c < r["c_interior_ci_high"]
        assert r["c"] < c - 5 * se[1], (block, r["c"], c)


def test_points_without_drift_are_left_out_and_named() -> None:
    pts = drift_points()
    het = manifest(0.0, 0.0, regime="heterogeneous")
    pts.append(("het", {"truth.gamma": 0.0, "delta": 0.0}, het, drift_fits(1.0, 0.0, seed=99)))
    rows = joint_rows(make_study(pts, {"joint": True}).runs, ["eta"], n_boot=50)
    assert rows[0]["points_left_out"] == "het" and rows[0]["n_points"] == len(POINTS)
    md = "\n".join(to_markdown(make_study(pts, {"joint": True}), [], [], rows).splitlines())
    assert "Left out (no drift, delta_n = 0): het." in md


# ------------------------------------------------------------------- singular designs


@pytest.mark.parametrize(
    "points",
    [
        ((0.125, 2.0), (0.125, 2.0)),  # one gamma, one Delta: log delta_n = log D - g log n
        ((0.0, 1.0), (0.0, 1.0)),  # no drift in n, one distance: log delta_n is a constant
        ((0.0, 0.0), (0.125, 0.0)),  # nothing drifts
    ],
)
def test_a_singular_planned_design_is_refused(points) -> None:
    runs = make_study(drift_points(points), {"joint": True}).runs
    with pytest.raises(ValueError, match=r"study\.joint") as info:
        joint_rows(runs, ["eta"], n_boot=10)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"study\.joint"):
        check_joint_design([r.manifest["config"] for r in runs])


def test_a_singular_grid_config_is_refused_before_running() -> None:
    raw = {
        "model": {"d": 2, "K": 3, "frozen": "tanh", "adapter": "tanh", "scale": 4.0},
        "truth": {"regime": "homogeneous", "gamma": 0.125},
        "sizes": {"list": [1000, 2000]},
        "grid": {"replicates": [10, 20]},  # two points, one (gamma, Delta): tied
        "study": {"statistic": "joint"},
    }
    with pytest.raises(ConfigError, match=r"study\.joint: the points' cells") as info:
        study_from_raw(raw)
    assert "\n" not in str(info.value)
    ok = {**raw, "grid": {"truth.gamma": [0.0, 0.125]}}
    assert study_from_raw(ok).options["joint"] is True
    assert study_from_raw({**ok, "study": {}}).options["joint"] is False
    with pytest.raises(ConfigError, match=r"study\.joint"):
        resolve_options({"joint": "yes"}, ("truth.gamma",), [{"truth.gamma": 0.0}])


def test_a_singular_design_from_the_data_is_said_not_printed() -> None:
    # the plan has two gammas, but every fit of the gamma = 0 point failed: the valid cells are
    # one drifting point, and a cannot be told from c
    pts = drift_points(((0.125, 2.0), (0.0, 1.0)))
    pts[1][3]["converged"][:] = 0
    study = make_study(pts, {"joint": True})
    rows = joint_rows(study.runs, list(TRUE), n_boot=20)
    for r in rows:
        assert math.isnan(r["a"]) and math.isnan(r["c_ci_low"]) and r["verdict"] == "n/a"
        assert "singular" in r["note"] and r["n_failed"] == len(SIZES) * REPS
    md = to_markdown(study, [], [], rows)
    assert "note: eta: all fits: the valid cells' design" in md and "| eta | n/a |" in md


# --------------------------------------------------------------------- on disk, CLI


def write_drift_study(root: Path, points=POINTS, options: dict | None = None) -> Path:
    """A study directory of synthetic runs (fits.csv + manifest.json per point)."""
    opts = options or {"statistic": "joint", "x": "point", "n_boot": 200}
    names = [f"g{g:g}-d{d:g}" for g, d in points]
    values = [{"truth.gamma": g, "delta": d} for g, d in points]
    resolved = resolve_options(opts, ("truth.gamma", "delta"), values)
    for i, (g, d) in enumerate(points):
        run = root / names[i]
        run.mkdir(parents=True)
        fits = drift_fits(d, g, seed=20 + i)
        cols = list(fits)
        write_csv_atomic(
            run / "fits.csv", cols, ({c: fits[c][j] for c in cols} for j in range(len(fits["n"])))
        )
        man = manifest(g, d) | {
            "name": f"drift-{names[i]}",
            "status": "complete",
            "study": {
                "name": "drift",
                "point": names[i],
                "index": i,
                "n_points": len(points),
                "keys": ["truth.gamma", "delta"],
                "values": values[i],
                "options": resolved,
            },
        }
        (run / "manifest.json").write_text(json.dumps(man))
    return root


def test_study_writes_the_joint_table_and_regenerates_it_byte_for_byte(
    tmp_path: Path, capsys
) -> None:
    d = write_drift_study(tmp_path / "drift")
    res = write_study(d, rates_figure=False)
    joint_csv, md = (d / "study-joint.csv").read_bytes(), (d / "study.md").read_bytes()
    assert [r["block"] for r in res["joint"]] == list(TRUE)
    text = md.decode()
    assert "## Joint fit in (n, delta_n)" in text
    for block in TRUE:
        assert f"\n| {block} | " in text
    header = joint_csv.decode().splitlines()[0].split(",")
    assert header == list(JOINT_COLUMNS)
    (d / "study-joint.csv").unlink()
    (d / "study.md").unlink()
    assert main(["study", str(d)]) == 0
    assert text in capsys.readouterr().out
    assert (d / "study-joint.csv").read_bytes() == joint_csv
    assert (d / "study.md").read_bytes() == md
    # a study without the option writes no joint table
    plain = write_drift_study(tmp_path / "plain", options={"x": "point", "n_boot": 20})
    assert not write_study(plain, rates_figure=False)["joint"]
    assert not (plain / "study-joint.csv").exists()
    assert "Joint fit" not in (plain / "study.md").read_text()
    assert load_study(plain).options["joint"] is False

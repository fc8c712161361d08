"""Start rules compared on the same data (`moejax.report.starts`, ``[study] starts = true``).

Synthetic runs check the arithmetic against hand-made answers: the share reaching the best
log-likelihood, and the *paired* bootstrap of slope differences (errors that differ by an exact
factor n^-0.1 give a difference of exactly -0.1 in every draw, so a paired CI collapses to the
point while the slopes' own CIs stay wide). An end-to-end run checks that the points of a start
study fit the same data sets: two near-truth rules reach the same maximum on every data set.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from moejax.cli import main
from moejax.report.starts import difference_rows, reach_rows
from moejax.sweep import ConfigError, config_path
from moejax.sweep.grid import load_study


def _run(point: str, n, rep, loglik, err, converged=None):
    n = np.asarray(n)
    fits = {
        "n": n,
        "replicate": np.asarray(rep),
        "loglik": np.asarray(loglik, float),
        "converged": np.ones(n.shape, int) if converged is None else np.asarray(converged),
        "err_beta": np.asarray(err, float),
    }
    return SimpleNamespace(point=point, fits=fits)


def test_reach_counts_fits_at_the_best_loglik_of_their_data_set() -> None:
    n, rep = [10, 10, 20, 20], [0, 1, 0, 1]
    a = _run("a", n, rep, [-100.0, -50.0, -80.0, -70.0], [1, 1, 1, 1])
    # b: better on (10, 0) by 1e-6 relative, 1e-10 below on (10, 1), equal on (20, *) but not
    # converged on (20, 1); its rows are in another order (aligned on (n, replicate))
    b = _run(
        "b",
        [20, 20, 10, 10],
        [1, 0, 1, 0],
        [-70.0, -80.0, -50.0 * (1 + 1e-10), -100.0 * (1 - 1e-6)],
        [1, 1, 1, 1],
        converged=[0, 1, 1, 1],
    )
    rows = {(r["point"], r["n"]): r["reached"] for r in reach_rows([a, b])}
    assert rows == {("a", 10): 1, ("a", 20): 2, ("b", 10): 2, ("b", 20): 1}


def test_paired_difference_is_exact_for_a_pure_rate_shift() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([1000, 2000, 4000, 8000, 16000])
    n = np.repeat(sizes, 30)
    rep = np.tile(np.arange(30), len(sizes))
    err = np.exp(rng.normal(size=n.size)) * n**-0.5
    ll = -np.ones(n.size)
    base = _run("base", n, rep, ll, err)
    faster = _run("faster", n, rep, ll, err * n**-0.1)
    rows = difference_rows([base, faster], ["beta"], n_boot=200, seed=1)
    by = {r["point"]: r for r in rows}
    assert by["faster"]["difference"] == pytest.approx(-0.1, abs=1e-12)
    assert by["faster"]["diff_ci_low"] == pytest.approx(-0.1, abs=1e-12)
    assert by["faster"]["diff_ci_high"] == pytest.approx(-0.1, abs=1e-12)
    # the slopes themselves are uncertain (sd of the log error 1 over 30 replicates)
    assert by["base"]["ci_high"] - by["base"]["ci_low"] > 0.05
    assert by["base"]["ci_low"] < -0.5 < by["base"]["ci_high"]
    assert np.isnan(by["base"]["diff_ci_low"]) and by["base"]["difference"] == 0
    # a failed fit is left out of its point's medians and counted
    conv = np.ones(n.size, int)
    conv[0] = 0
    broken = _run("broken", n, rep, ll, err, converged=conv)
    r = {x["point"]: x for x in difference_rows([base, broken], ["beta"], n_boot=0)}
    assert r["broken"]["n_failed"] == 1 and r["base"]["n_failed"] == 0


def test_a_start_study_may_change_only_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'extends = "{HET}"\nname = "b"\n[grid]\n"truth.tau" = [0.0, 1.0]\n[study]\nstarts = true\n'
    )
    with pytest.raises(ConfigError, match=r"^study\.starts = true: grid point .* truth\.tau"):
        load_study(bad)


HET = config_path("heterogeneous").as_posix()
STARTS = f"""\
extends = "{HET}"
name = "st"
replicates = 3
[sizes]
list = [1500, 3000]
[run]
density_points = 20
[grid.points.near-a]
"init.c_gate" = 0.01
"init.c_expert" = 0.01
"init.rho" = 0.0
[grid.points.near-b]
"init.c_gate" = 0.1
"init.c_expert" = 0.1
"init.rho" = 0.0
[study]
starts = true
n_boot = 50
"""


def test_start_study_fits_the_same_data_from_every_start(tmp_path: Path) -> None:
    """Both near-truth rules reach the same maximum on every data set (the heterogeneous MLE
    is unique near the truth): only possible if every point fits the same data."""
    cfg = tmp_path / "st.toml"
    cfg.write_text(STARTS)
    out = tmp_path / "st"
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 0
    reach = list(csv.DictReader(open(out / "study-starts.csv")))
    assert {(r["point"], r["reached"], r["fits"]) for r in reach} == {
        ("near-a", "3", "3"),
        ("near-b", "3", "3"),
    }
    a, b = (list(csv.DictReader(open(out / p / "fits.csv"))) for p in ("near-a", "near-b"))
    la = np.array([float(r["loglik"]) for r in a])
    lb = np.array([float(r["loglik"]) for r in b])
    np.testing.assert_allclose(la, lb, rtol=1e-10)
    md = (out / "study.md").read_text()
    assert "Start rules on the same data" in md and "minus near-a" in md
    diffs = list(csv.DictReader(open(out / "study-starts-slopes.csv")))
    assert {r["point"] for r in diffs} == {"near-a", "near-b"}

"""Tests of the reporting layer on synthetic fits tables with a known rate exponent.

Synthetic errors: err = C * n^a * exp(sigma * Z), Z ~ N(0, 1), 10 log-spaced sizes in [1e3, 1e5]
and 40 replicates per size. Then log(err) = log C + a log n + sigma Z exactly, so every aggregate is
an affine function of log n plus noise and its OLS slope is unbiased for a.

Tolerance used below: the mean_log slope has standard error SE = sigma / sqrt(R * Sxx), with
Sxx = sum_j (log n_j - mean)^2 (= 21.6 here, SE = 0.017 for sigma = 0.5). The log_median slope has
asymptotic SE sqrt(pi/2) = 1.25 times larger; log_mean about 1.07 times (delta method,
sqrt(exp(sigma^2) - 1) / sigma). We allow 5 * 1.26 * SE: a false failure has probability < 1e-6.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.container import BarContainer

from moejax.report import (
    AGGREGATES,
    EXPORT_COLUMNS,
    SENSITIVITY_COLUMNS,
    TERMINAL_COLUMNS,
    agreement,
    compute_slopes,
    format_terminal,
    main_rows,
    make_report,
    plot_comparison,
    plot_rates,
    read_fits_csv,
    theory_slope,
    write_csv_atomic,
)
from moejax.report.plots import comparison_figure, panel_grid, rates_figure
from moejax.report.slopes import NOTE_TOO_FEW, _bootstrap_aggregates

SIZES = np.round(np.logspace(3, 5, 10)).astype(np.int64)
REPS = 40
SIGMA = 0.5
EXPONENTS = {"beta": -0.5, "exp_tau": -0.25, "eta": -0.375}


def synthetic(
    seed: int = 0,
    exponents: dict[str, float] = EXPONENTS,
    sigma: float = SIGMA,
    sizes: np.ndarray = SIZES,
    reps: int = REPS,
    const: float = 2.0,
) -> dict[str, np.ndarray]:
    """Fits table (columns of shape (len(sizes) * reps,)) with err_p = C n^a_p exp(sigma Z)."""
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
        fits[f"err_{p}"] = const * n**a * np.exp(sigma * rng.standard_normal(n.shape))
    return fits


def slope_se(sigma: float = SIGMA, sizes: np.ndarray = SIZES, reps: int = REPS) -> float:
    x = np.log(sizes.astype(float))
    return sigma / math.sqrt(reps * float(np.sum((x - x.mean()) ** 2)))


def row_of(rows, parameter, aggregate, drop_k=0):
    (row,) = [
        r
        for r in rows
        if r["parameter"] == parameter and r["aggregate"] == aggregate and r["drop_k"] == drop_k
    ]
    return row


def write_run(run_dir: Path, fits: dict[str, np.ndarray], manifest: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    header = list(fits)
    rows = zip(*(fits[c].tolist() for c in header), strict=True)
    write_csv_atomic(run_dir / "fits.csv", header, rows)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


# --------------------------------------------------------------------------- slopes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_aggregate_recovers_exponent(seed):
    rows = compute_slopes(synthetic(seed), n_boot=100, drop_smallest=(0,))
    tol = 5 * 1.26 * slope_se()
    assert len(rows) == 3 * 3
    for p, a in EXPONENTS.items():
        for agg in AGGREGATES:
            r = row_of(rows, p, agg)
            assert abs(r["slope"] - a) < tol, (p, agg, r["slope"])
            assert r["ci_low"] < r["slope"] < r["ci_high"]
            assert r["n_sizes"] == 10 and r["n_fits"] == 400 and r["n_failed"] == 0
            assert r["note"] == ""


@settings(max_examples=30, deadline=None)
@given(
    a=st.floats(-1.0, 0.5),
    log_c=st.floats(-5.0, 5.0),
    sizes=st.lists(st.integers(10, 10**6), min_size=2, max_size=8, unique=True),
)
def test_noise_free_slope_is_exact(a, log_c, sizes):
    fits = synthetic(exponents={"beta": a}, sigma=0.0, sizes=np.array(sizes), reps=3)
    fits["err_beta"] = np.exp(log_c) * fits["n"] ** a
    rows = compute_slopes(fits, parameters=("beta",), n_boot=20, drop_smallest=(0,))
    for r in rows:
        assert r["slope"] == pytest.approx(a, abs=1e-9)
        assert r["intercept"] == pytest.approx(log_c, abs=1e-7)
        assert r["ci_low"] == pytest.approx(a, abs=1e-9)
        assert r["ci_high"] == pytest.approx(a, abs=1e-9)


def test_outliers_move_robust_aggregates_little():
    clean = synthetic(3)
    dirty = {k: v.copy() for k, v in clean.items()}
    factor = 1e4
    # one huge error at each of the 3 largest sizes: the positions of largest leverage
    hit = [np.flatnonzero(clean["n"] == s)[0] for s in SIZES[-3:]]
    dirty["err_beta"][hit] *= factor
    kw = {"parameters": ("beta",), "n_boot": 0, "drop_smallest": (0,)}
    before = {r["aggregate"]: r for r in compute_slopes(clean, **kw)}
    after = {r["aggregate"]: r for r in compute_slopes(dirty, **kw)}
    shift = {a: abs(after[a]["slope"] - before[a]["slope"]) for a in AGGREGATES}
    # mean_log: each outlier moves its size's mean by log(factor)/REPS, slope by that times
    # (x_j - xbar)/Sxx; the sum over the three sizes is the exact shift.
    x = np.log(SIZES.astype(float))
    bound = math.log(factor) / REPS * float(np.sum(x[-3:] - x.mean())) / np.sum((x - x.mean()) ** 2)
    assert shift["mean_log"] == pytest.approx(bound, rel=1e-9)
    assert shift["mean_log"] < 0.08
    assert shift["log_median"] < 0.02  # a median moves by at most one order-statistic gap
    assert shift["log_mean"] > 0.5  # the mean is not robust: this is why all three are shown
    assert after["log_median"]["n_outliers"] == 3
    assert before["log_median"]["n_outliers"] == 0
    assert after["log_median"]["n_failed"] == 0


def test_failed_fits_excluded_and_counted_exactly():
    fits = synthetic(4)
    rng = np.random.default_rng(0)
    small = np.flatnonzero(fits["n"] == SIZES[0])
    rest = rng.permutation(np.flatnonzero(fits["n"] != SIZES[0]))
    nonfinite, maxiter, inf_err, nan_err, zero_err, bound = (
        rest[:5],
        rest[5:9],
        rest[9:11],
        rest[11:12],
        rest[12:13],
        rest[13:19],
    )
    fits["converged"][small] = 0  # a whole size fails -> skipped
    fits["status"][small] = "max_iter"
    fits["converged"][nonfinite] = 0
    fits["status"][nonfinite] = "nonfinite"
    for p in EXPONENTS:
        fits[f"err_{p}"][nonfinite] = np.nan
    fits["converged"][maxiter] = 0
    fits["status"][maxiter] = "max_iter"
    fits["err_beta"][inf_err] = np.inf
    fits["err_beta"][nan_err] = np.nan
    fits["err_beta"][zero_err] = 0.0
    fits["at_bound"][bound] = 1

    rows = compute_slopes(fits, n_boot=50)
    beta = row_of(rows, "beta", "mean_log")
    assert beta["n_nonconverged"] == 40 + 5 + 4
    assert beta["n_invalid_err"] == 2 + 1 + 1
    assert beta["n_failed"] == 49 + 4
    assert beta["n_fits"] == 400 - 53
    assert beta["n_sizes"] == 9 and beta["n_sizes_skipped"] == 1
    assert beta["n_min"] == SIZES[1]
    assert beta["n_at_bound"] == 6 and beta["n_excluded_at_bound"] == 0
    tau = row_of(rows, "exp_tau", "mean_log")
    assert tau["n_failed"] == 49 and tau["n_invalid_err"] == 0 and tau["n_fits"] == 351
    for r in rows:
        assert math.isfinite(r["slope"]) and math.isfinite(r["ci_low"])

    # the slope is exactly the slope of the clean subset: failures are dropped, not averaged
    keep = (fits["converged"] == 1) & np.isfinite(fits["err_beta"]) & (fits["err_beta"] > 0)
    clean = {k: v[keep] for k, v in fits.items()}
    ref = compute_slopes(clean, parameters=("beta",), n_boot=0, drop_smallest=(0,))
    for agg in AGGREGATES:
        assert row_of(rows, "beta", agg)["slope"] == pytest.approx(
            row_of(ref, "beta", agg)["slope"], abs=1e-12
        )

    excl = compute_slopes(fits, parameters=("beta",), n_boot=0, exclude_at_bound=True)
    r = row_of(excl, "beta", "mean_log")
    assert r["n_fits"] == 400 - 53 - 6 and r["n_excluded_at_bound"] == 6 and r["n_failed"] == 53

    # drop_k counts the k smallest *usable* sizes; counts cover the sizes kept
    d1 = row_of(rows, "beta", "mean_log", drop_k=1)
    assert d1["n_sizes"] == 8 and d1["n_min"] == SIZES[2] and d1["n_sizes_skipped"] == 0
    kept = fits["n"] >= SIZES[2]
    assert d1["n_fits"] == int(np.sum(keep & kept))


def test_sensitivity_rows_and_too_few_sizes():
    fits = synthetic(5)
    rows = compute_slopes(fits, n_boot=50)
    for k in (0, 1, 2, 3):
        r = row_of(rows, "eta", "log_median", drop_k=k)
        assert r["n_sizes"] == 10 - k and r["n_min"] == SIZES[k]
        assert abs(r["slope"] - EXPONENTS["eta"]) < 0.15
        assert r["ci_low"] <= r["slope"] <= r["ci_high"]

    two = synthetic(6, sizes=SIZES[:2])
    rows = compute_slopes(two, parameters=("beta",), n_boot=50, drop_smallest=(0, 1))
    assert math.isfinite(row_of(rows, "beta", "mean_log")["slope"])
    r1 = row_of(rows, "beta", "mean_log", drop_k=1)
    assert math.isnan(r1["slope"]) and math.isnan(r1["ci_low"]) and r1["note"] == NOTE_TOO_FEW

    one = synthetic(7, sizes=SIZES[:1])
    r = row_of(compute_slopes(one, parameters=("beta",), n_boot=50), "beta", "log_mean")
    assert math.isnan(r["slope"]) and r["note"] == NOTE_TOO_FEW and r["n_fits"] == REPS


def test_bootstrap_is_reproducible_and_seeded():
    fits = synthetic(8)
    a = compute_slopes(fits, n_boot=100, seed=11)
    b = compute_slopes(fits, n_boot=100, seed=11)
    c = compute_slopes(fits, n_boot=100, seed=12)
    assert a == b
    assert [r["slope"] for r in a] == [r["slope"] for r in c]
    assert [r["ci_low"] for r in a] != [r["ci_low"] for r in c]
    # a block's interval does not depend on which other blocks are computed
    only = compute_slopes(fits, parameters=("eta",), n_boot=100, seed=11)
    assert main_rows(only) == [r for r in main_rows(a) if r["parameter"] == "eta"]


@pytest.mark.parametrize("m", [7, 8])
def test_vectorised_bootstrap_matches_direct_resampling(m):
    e = np.exp(np.random.default_rng(1).standard_normal(m))
    out = _bootstrap_aggregates([e], AGGREGATES, 300, np.random.default_rng(5))
    idx = np.random.default_rng(5).integers(0, m, size=(300, m))
    sample = np.sort(e)[idx]
    np.testing.assert_allclose(out["log_mean"][:, 0], np.log(sample.mean(1)), rtol=1e-12)
    np.testing.assert_allclose(out["mean_log"][:, 0], np.log(sample).mean(1), rtol=1e-12)
    np.testing.assert_allclose(out["log_median"][:, 0], np.log(np.median(sample, 1)), rtol=1e-12)


def test_bootstrap_ci_coverage_near_nominal():
    # 200 datasets x 95% percentile CI: binomial SD of the coverage is 0.015; [0.88, 0.99] is the
    # accepted band (percentile intervals with 40 replicates undercover slightly).
    n_data, a = 200, EXPONENTS["beta"]
    hits = dict.fromkeys(AGGREGATES, 0)
    for seed in range(n_data):
        fits = synthetic(1000 + seed, exponents={"beta": a})
        for r in compute_slopes(
            fits, parameters=("beta",), n_boot=200, seed=seed, drop_smallest=(0,)
        ):
            hits[r["aggregate"]] += r["ci_low"] <= a <= r["ci_high"]
    coverage = {k: v / n_data for k, v in hits.items()}
    for agg, cov in coverage.items():
        assert 0.88 <= cov <= 0.99, (agg, coverage)


def test_large_table_is_fast():
    sizes = np.round(np.logspace(3, 5, 20)).astype(np.int64)
    fits = synthetic(9, exponents={"beta": -0.5}, sizes=sizes, reps=1000)
    start = time.perf_counter()
    rows = compute_slopes(fits, parameters=("beta",), n_boot=1000, drop_smallest=(0,))
    assert time.perf_counter() - start < 15.0  # about 0.6 s on one core
    assert abs(row_of(rows, "beta", "mean_log")["slope"] + 0.5) < 0.02


def test_density_block_added_when_present():
    fits = synthetic(10)
    fits["err_density"] = np.full(fits["n"].shape, np.nan)
    assert {r["parameter"] for r in compute_slopes(fits, n_boot=0)} == set(EXPONENTS)
    fits["err_density"] = 0.3 * fits["n"] ** -0.5
    params = [r["parameter"] for r in compute_slopes(fits, n_boot=0, drop_smallest=(0,))]
    assert params[-1] == "density" and len(params) == 12


# --------------------------------------------------------------------------- theory


def test_theory_values():
    for p in ("beta", "exp_tau", "eta", "density"):
        assert theory_slope(p, "heterogeneous", None) == {"uniform": -0.5, "pointwise": -0.5}
    g = 1 / 8
    assert theory_slope("exp_tau", "homogeneous", g) == {"uniform": -0.25, "pointwise": -0.375}
    assert theory_slope("beta", "homogeneous", g) == {"uniform": -0.375, "pointwise": -0.375}
    assert theory_slope("eta", "homogeneous", g) == {"uniform": -0.375, "pointwise": -0.5}
    assert theory_slope("density", "homogeneous", g) == {"uniform": -0.5, "pointwise": -0.5}
    g = 1 / 4
    assert theory_slope("exp_tau", "homogeneous", g) == {"uniform": 0.0, "pointwise": -0.25}
    assert theory_slope("beta", "homogeneous", g) == {"uniform": -0.25, "pointwise": -0.25}
    assert theory_slope("eta", "homogeneous", g) == {"uniform": -0.25, "pointwise": -0.5}
    with pytest.raises(ValueError):
        theory_slope("eta", "homogeneous", None)
    with pytest.raises(ValueError):
        theory_slope("xi", "heterogeneous", None)  # "nu" is a known block since err_nu exists
    with pytest.raises(ValueError):
        theory_slope("beta", "collapsed", 0.1)


def test_agreement_mark():
    assert agreement(-0.49, -0.53, -0.45, -0.5) == "yes"
    assert agreement(-0.38, -0.42, -0.34, -0.5) == "+0.12"
    assert agreement(-0.62, -0.66, -0.58, -0.5) == "-0.12"
    assert agreement(math.nan, math.nan, math.nan, -0.5) == "n/a"
    assert agreement(-0.4, math.nan, math.nan, -0.5) == "+0.10"


# --------------------------------------------------------------------------- I/O


def test_read_fits_csv_types_and_unknown_columns(tmp_path):
    path = tmp_path / "fits.csv"
    path.write_text(
        "n,replicate,err_beta,err_exp_tau,err_eta,loglik,n_iter,converged,at_bound,status,junk\n"
        "1000,0,0.1,nan,inf,-5.5,12,1,0,converged,x\n"
        "1000,1,,0.2,0.3,-6.0,,0,1,max_iter,y\n"
        "2000.0,0,0.05,0.1,-inf,-4.0,3,True,False,converged,z\n"
    )
    fits = read_fits_csv(path)
    assert "junk" not in fits
    assert fits["n"].dtype == np.int64 and fits["n"].tolist() == [1000, 1000, 2000]
    assert fits["err_beta"].dtype == np.float64 and math.isnan(fits["err_beta"][1])
    assert math.isnan(fits["err_exp_tau"][0]) and fits["err_eta"][0] == math.inf
    assert fits["err_eta"][2] == -math.inf
    assert fits["n_iter"].tolist() == [12, -1, 3]
    assert fits["converged"].tolist() == [1, 0, 1] and fits["at_bound"].tolist() == [0, 1, 0]
    assert fits["status"].tolist() == ["converged", "max_iter", "converged"]

    path.write_text("n,replicate,err_beta,status\n10,0,0.1,converged\n10,1,0.2,nonfinite\n")
    assert read_fits_csv(path)["converged"].tolist() == [1, 0]
    path.write_text("replicate,err_beta\n0,0.1\n")
    with pytest.raises(ValueError):
        read_fits_csv(path)


def test_write_csv_atomic_leaves_no_temp_files(tmp_path):
    out = write_csv_atomic(tmp_path / "x.csv", ["a", "b"], [[1, math.nan], {"a": 2, "b": 0.5}])
    assert out.read_text() == "a,b\n1,nan\n2,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_make_report_writes_parseable_tables_and_figures(tmp_path):
    fits = synthetic(11)
    fits["err_density"] = (
        0.3 * fits["n"] ** -0.5 * np.exp(0.2 * np.random.default_rng(0).random(400))
    )
    fits["converged"][:3] = 0
    fits["err_beta"][:3] = np.nan
    fits["status"][:3] = "nonfinite"
    fits["at_bound"][5] = 1
    manifest = {"name": "toy", "regime": "homogeneous", "gamma": 0.125, "other": [1, 2]}
    run = write_run(tmp_path / "run", fits, manifest)

    result = make_report(run, n_boot=200, seed=0)
    names = {p.name for p in run.iterdir()}
    expected = {"slopes.csv", "slopes.md", "slopes.tex", "slopes.json", "sensitivity.csv"}
    assert expected | {"sensitivity.md", "rates.png", "rates.pdf"} <= names
    assert not [n for n in names if n.endswith(".tmp")]

    with open(run / "slopes.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(EXPORT_COLUMNS)
        table = list(reader)
    assert len(table) == 4 * 3
    by_key = {(r["parameter"], r["aggregate"]): r for r in table}
    tau = by_key[("exp_tau", "log_median")]
    assert float(tau["theory"]) == -0.25 and float(tau["theory_pointwise"]) == -0.375
    assert by_key[("beta", "mean_log")]["n_failed"] == "3"
    assert by_key[("beta", "mean_log")]["n_fits"] == "397"
    assert by_key[("eta", "mean_log")]["n_at_bound"] == "1"
    # agree, recomputed from the row's own numbers (theory.agreement's contract: "yes" iff
    # ci_low <= theory <= ci_high, else slope - theory signed to 2 decimals, "n/a" for NaN).
    # Here beta (-0.5 drawn, -0.375 predicted) lies far outside its CI (SE ~0.02) and exp_tau
    # and eta sit on their theory, so both branches are exercised.
    for r in table:
        slope, lo, hi, th = (float(r[c]) for c in ("slope", "ci_low", "ci_high", "theory"))
        if not (math.isfinite(slope) and math.isfinite(th)):
            want = "n/a"
        elif lo <= th <= hi:
            want = "yes"
        else:
            want = f"{slope - th:+.2f}"
        assert r["agree"] == want, r
    marks = {r["agree"] for r in table}
    assert "yes" in marks and marks - {"yes", "n/a"}, marks
    assert by_key[("beta", "log_median")]["agree"].startswith("-0.1")

    def no_nan(token):
        raise AssertionError(f"non-standard JSON token {token}")

    doc = json.loads((run / "slopes.json").read_text(), parse_constant=no_nan)
    assert doc["metadata"]["regime"] == "homogeneous" and doc["metadata"]["gamma"] == 0.125
    assert doc["columns"] == list(EXPORT_COLUMNS) and len(doc["records"]) == 12
    assert set(EXPORT_COLUMNS) <= set(doc["records"][0])

    with open(run / "sensitivity.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(SENSITIVITY_COLUMNS)
        assert len(list(reader)) == 12 * 4

    tex = (run / "slopes.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "exp\\_tau" in tex
    assert "exp_tau" not in tex.replace("exp\\_tau", "")
    md = (run / "slopes.md").read_text()
    assert "| parameter | aggregate | slope |" in md
    assert "drop 3" in (run / "sensitivity.md").read_text()

    assert (run / "rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "rates.pdf").read_bytes()[:5] == b"%PDF-"
    assert (run / "rates.png").stat().st_size > 10_000
    # The terminal summary shows what was written: its tables, cell by cell, are slopes.csv and
    # the log_median rows of sensitivity.csv (floats to 3 decimals), and its counts are the input's.
    lines = result["terminal"].splitlines()
    assert lines[0] == "run toy (homogeneous, gamma = 0.125)"
    assert lines[1] == "400 fits; status: converged 397, nonfinite 3; at bound 1"
    with open(run / "sensitivity.csv", newline="") as handle:
        sens = [r for r in csv.DictReader(handle) if r["aggregate"] == "log_median"]
    floats = {"slope", "ci_low", "ci_high", "theory", "theory_pointwise"}
    floats |= {"slope_interior", "ci_low_interior", "ci_high_interior"}

    def shown(row, columns):
        return [f"{float(row[c]):.3f}" if c in floats else row[c] for c in columns]

    for columns, want in ((TERMINAL_COLUMNS, table), (SENSITIVITY_COLUMNS, sens)):
        head = [line.split() for line in lines].index(list(columns))
        assert set(lines[head + 1]) == {"-", " "}
        got = [line.split() for line in lines[head + 2 : head + 2 + len(want)]]
        assert got == [shown(r, columns) for r in want], columns
    assert len(table) == 12 and len(sens) == 16 and len(result["rows"]) == 12


def test_make_report_without_manifest_and_with_a_dead_block(tmp_path):
    fits = synthetic(15)
    fits["err_eta"][:] = np.nan  # every eta error unusable
    run = write_run(tmp_path / "run", fits, {})
    (run / "manifest.json").unlink()
    result = make_report(run, n_boot=50)
    eta = [r for r in result["rows"] if r["parameter"] == "eta"]
    assert all(math.isnan(r["slope"]) and r["n_failed"] == 400 and r["n_fits"] == 0 for r in eta)
    assert all(math.isnan(r["theory"]) and r["agree"] == "n/a" for r in result["rows"])
    assert "no manifest.json" in result["terminal"] and NOTE_TOO_FEW in result["terminal"]
    assert (run / "rates.png").stat().st_size > 0


def test_format_terminal_aligns_columns():
    rows = compute_slopes(synthetic(12), n_boot=0, drop_smallest=(0,))
    from moejax.report import build_export_rows

    text = format_terminal(build_export_rows(rows, "heterogeneous", None))
    lines = text.splitlines()
    assert lines[0].split() == list(EXPORT_COLUMNS)
    assert len(lines) == 2 + 9
    assert len({len(line) for line in lines[2:]}) <= 2  # aligned (agree column may be ragged)


def test_plots_write_png_and_pdf(tmp_path):
    het = synthetic(13, exponents={"beta": -0.5, "exp_tau": -0.5, "eta": -0.5})
    hom = synthetic(14)
    het["converged"][:2] = 0
    rows = compute_slopes(hom, n_boot=100, drop_smallest=(0,))
    png, pdf = plot_rates(hom, rows, "homogeneous", 0.125, tmp_path / "rates", title="toy")
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 1_000
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"

    run = write_run(
        tmp_path / "het", het, {"name": "het", "regime": "heterogeneous", "gamma": None}
    )
    png, pdf = plot_comparison(
        [run, {"fits": hom, "regime": "homogeneous", "gamma": 0.125, "name": "hom"}],
        None,
        tmp_path / "compare",
        n_boot=50,
    )
    assert png.stat().st_size > 10_000 and pdf.read_bytes()[:4] == b"%PDF"


# --------------------------------------------------------------------------- figures

SLOPE_TEXT = re.compile(r"slope (\S+) \[(\S+), (\S+)\]")


def legend_slopes(legend) -> list[tuple[float, float, float]]:
    """Every ``slope a [lo, hi]`` of a matplotlib legend, as floats."""
    out = []
    for t in legend.get_texts():
        m = SLOPE_TEXT.search(t.get_text())
        if m:
            out.append(tuple(float(v) for v in m.groups()))
    return out


def table_slopes(run: Path) -> dict[str, tuple[float, float, float]]:
    """The log-median rows of a run's slopes.csv, rounded as the tables print them."""
    with open(run / "slopes.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["aggregate"] == "log_median"]
    return {
        r["parameter"]: tuple(round(float(r[k]), 3) for k in ("slope", "ci_low", "ci_high"))
        for r in rows
    }


def boxed_run(path: Path, regime: str = "homogeneous", gamma: float | None = 0.125) -> Path:
    fits = synthetic(21)
    fits["at_bound"][::13] = 1  # some fits on the box
    fits["err_exp_tau"][fits["at_bound"] == 1] *= 30.0  # and far off, as box fits are
    return write_run(path, fits, {"name": path.name, "regime": regime, "gamma": gamma})


def test_rates_figure_shows_the_tables_slopes_and_the_box_fits(tmp_path):
    run = boxed_run(tmp_path / "run")
    result = make_report(run)  # the tables' 1000 draws
    fits = read_fits_csv(run / "fits.csv")
    fig = rates_figure(fits, result["slope_rows"], "homogeneous", 0.125)
    table = table_slopes(run)
    assert list(table) == ["beta", "exp_tau", "eta"] and len(fig.axes) == 3
    box = fits["at_bound"] == 1
    for ax, p in zip(fig.axes, table, strict=True):
        assert legend_slopes(ax.get_legend()) == [table[p]]  # the panel's own numbers
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        th = theory_slope(p, "homogeneous", 0.125)
        assert any(f"{th['uniform']:+.3g}" in t for t in labels)
        if th["pointwise"] != th["uniform"]:
            assert any(t.startswith("pointwise") for t in labels)
        (hollow,) = [c for c in ax.collections if c.get_gid() == "at_bound"]
        want = np.c_[fits["n"][box], fits[f"err_{p}"][box]]
        assert np.allclose(hollow.get_offsets(), want)
        assert hollow.get_facecolors().size == 0  # hollow
        assert ax.get_xlabel() == "sample size n"
        assert not any(isinstance(c, BarContainer) for c in ax.containers)
    # fewer bootstrap draws would print other CIs: the legend follows the rows it is given
    few = compute_slopes(fits, n_boot=200, drop_smallest=(0,))
    other = rates_figure(fits, few, "homogeneous", 0.125)
    assert legend_slopes(other.axes[1].get_legend()) != [table["exp_tau"]]


def test_figure_widths_and_grids():
    assert panel_grid(4, 7.0) == (2, 2) and panel_grid(5, 7.0) == (2, 3)
    assert panel_grid(2, 7.0) == (1, 2) and panel_grid(3, 3.5) == (3, 1)
    fits = synthetic(22, exponents={**EXPONENTS, "density": -0.5})
    rows = compute_slopes(fits, n_boot=20, drop_smallest=(0,))
    for width, inches, max_cols in (("page", 7.0, 3), ("column", 3.5, 1), (5.0, 5.0, 2)):
        fig = rates_figure(fits, rows, "homogeneous", 0.125, width=width)
        assert fig.get_figwidth() == pytest.approx(inches) and len(fig.axes) == 4
        lefts = {round(ax.get_position().x0, 3) for ax in fig.axes}
        assert len(lefts) <= max_cols
    with pytest.raises(ValueError, match="width"):
        rates_figure(fits, rows, "homogeneous", 0.125, width="poster")


def test_comparison_figure_raw_levels_both_hypotheses_and_the_tables_cis(tmp_path):
    het = write_run(
        tmp_path / "het",
        synthetic(23, exponents={"beta": -0.5, "exp_tau": -0.5, "eta": -0.5}),
        {"name": "het", "regime": "heterogeneous", "gamma": None},
    )
    hom = boxed_run(tmp_path / "hom")
    make_report(het)
    make_report(hom, n_boot=300, seed=4)  # comparison_figure takes these from slopes.json
    fig = comparison_figure([het, hom], ["heterogeneous", "homogeneous"])
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(panels) == 2
    for ax, run in zip(panels, (het, hom), strict=True):
        table = table_slopes(run)
        assert legend_slopes(ax.legend_cell.get_legend()) == list(table.values())
        fits = read_fits_csv(run / "fits.csv")
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        medians = [np.median(fits["err_beta"][fits["n"] == s]) for s in SIZES]
        assert np.allclose(dots[0].get_ydata(), medians)  # raw levels, not normalised
        assert len(ax.collections) == len(table)  # one spread band per block
    styles = {line.get_linestyle() for line in panels[1].get_lines()}
    assert {"--", ":"} <= styles  # uniform and pointwise lines of the homogeneous run
    assert ":" not in {line.get_linestyle() for line in panels[0].get_lines()}
    assert panels[0].get_ylim() == panels[1].get_ylim()  # levels compare across panels


# --------------------------------------------------------------------------- small defects


def md_tables(text: str) -> list[list[int]]:
    """The number of cells of every row of every Markdown table in ``text`` (GFM: a ``|``
    preceded by a backslash is text, not a cell boundary)."""
    tables: list[list[int]] = []
    previous = False
    for line in text.splitlines():
        row = line.strip().startswith("|")
        if row:
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            if not previous:
                tables.append([])
            tables[-1].append(len(cells))
        previous = row
    return tables


def assert_md_tables_consistent(text: str) -> None:
    tables = md_tables(text)
    assert tables, "no Markdown table"
    for counts in tables:
        assert len(set(counts)) == 1, counts  # header, separator and body alike


def test_markdown_cells_escape_pipes():
    from moejax.report.plots import BLOCK_LABELS
    from moejax.report.table import md_cell, md_row

    assert md_cell(r"$|e^{\hat\tau}-e^{\tau^*}|$") == r"$\|e^{\hat\tau}-e^{\tau^*}\|$"
    assert md_cell(r"$\|\hat\beta\|_2$") == r"$\|\hat\beta\|_2$"  # escaped already: kept
    assert md_cell("a\\\\|b") == "a\\\\\\|b"  # an escaped backslash, then a bare pipe
    assert md_cell("two\nlines") == "two lines"
    for label in BLOCK_LABELS.values():
        assert md_tables(md_row(["point", label, "x"])) == [[3]], label


def test_markdown_writers_escape_pipes_in_cells(tmp_path):
    """slopes.md, sensitivity.md, cells.md (tables.to_markdown) and coverage.md: a cell text with
    a `|` stays one cell."""
    from moejax.report import coverage
    from moejax.report.tables import to_markdown

    rows = [{"parameter": "a|b", "aggregate": "log_median", "slope": -0.5}]
    assert_md_tables_consistent(to_markdown(rows))
    cov = [{c: 1.0 for c in coverage.COVERAGE_COLUMNS} | {"parameter": "x|y", "n_used": 3}]
    assert_md_tables_consistent(coverage.to_markdown(cov, "toy"))
    run = write_run(
        tmp_path / "run", synthetic(21), {"name": "t|oy", "regime": "heterogeneous", "gamma": None}
    )
    make_report(run, n_boot=20)
    for name in ("slopes.md", "sensitivity.md"):
        assert_md_tables_consistent((run / name).read_text())


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_are_written_with_the_users_umask(tmp_path, umask):
    """(before: every report and store file was 0600, mkstemp's mode, whatever the umask)"""
    import os
    import stat

    from moejax.atomic import write_text_atomic

    old = os.umask(umask)
    try:
        p = write_text_atomic(tmp_path / "x.txt", "hello\n")
        q = write_csv_atomic(tmp_path / "y.csv", ["a"], [[1]])
    finally:
        os.umask(old)
    for f in (p, q):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, oct(f.stat().st_mode)


def test_sensitivity_table_has_no_rows_without_usable_sizes(tmp_path):
    """Two sizes: dropping 2 or 3 of them leaves none; those drop_k rows (n_min -1) are left out
    of sensitivity.csv/.md/.json and the terminal view (drop 1 keeps one size: its row stays,
    slope NaN with its note)."""
    fits = synthetic(22, sizes=SIZES[:2])
    run = write_run(tmp_path / "run", fits, {"name": "two", "regime": "heterogeneous"})
    res = make_report(run, n_boot=20)
    assert res["sensitivity"] and all(r["n_min"] > 0 for r in res["sensitivity"])
    assert {r["drop_k"] for r in res["sensitivity"]} == {0, 1}
    with open(run / "sensitivity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(int(r["n_min"]) > 0 and int(r["n_sizes"]) >= 1 for r in rows)
    assert all(r["n_min"] > 0 for r in json.loads((run / "slopes.json").read_text())["sensitivity"])
    md = (run / "sensitivity.md").read_text()
    assert "drop 2" not in md and "n>=-1" not in md
    assert_md_tables_consistent(md)
    sens = res["terminal"].split("sensitivity of the log_median slope")[1]
    assert " -1 " not in sens


def test_compare_out_is_a_directory(tmp_path, capsys):
    """`moejax compare RUN... --out DIR` writes DIR/compare.png and .pdf, as `sweep --out DIR`
    names a directory (before: a file prefix, DIR.png); a file in the way is refused."""
    from moejax.cli import main

    het = write_run(
        tmp_path / "het",
        synthetic(23, exponents={"beta": -0.5, "exp_tau": -0.5, "eta": -0.5}),
        {"name": "het", "regime": "heterogeneous", "gamma": None},
    )
    hom = write_run(
        tmp_path / "hom", synthetic(24), {"name": "hom", "regime": "homogeneous", "gamma": 0.125}
    )
    out = tmp_path / "het-vs-hom"
    assert main(["compare", str(het), str(hom), "--out", str(out)]) == 0
    assert out.is_dir()
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "compare.pdf").read_bytes()[:4] == b"%PDF"
    assert not (tmp_path / "het-vs-hom.png").exists()
    assert str(out / "compare.png") in capsys.readouterr().out
    (tmp_path / "afile").write_text("x")
    assert main(["compare", str(het), "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("moejax: error: --out")

"""Reporting for the generalised models: nu / voronoi blocks, blocks absent from a model (err_beta
NaN under an input-free gate), and the side-by-side figure with such runs (the study report of
grids, which replaced the predecessor, gate and phase reports, is tested in tests/test_study.py).

Synthetic tables as in tests/test_report.py: err = C * n^a * exp(sigma * Z), Z ~ N(0, 1), so the
slope of every aggregate is unbiased for a. Tolerances (derived where used):

- log-median slope over 10 log-spaced sizes in [1e3, 1e5] x 40 replicates, sigma = 0.5: SE =
  sqrt(pi/2) * sigma / sqrt(R * Sxx) = 0.021 (Sxx = 21.6); we allow 5 SE.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from moejax.report import (
    compute_slopes,
    make_report,
    plot_comparison,
    read_fits_csv,
    resolve_parameters,
    skipped_parameters,
    theory_slope,
    write_csv_atomic,
)
from moejax.sweep.store import (
    FIT_COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    STR_COLUMNS,
    write_fits_csv,
)

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
    """The store's fits.csv schema and the report's reader agree on every column.

    A round trip through the store's writer (`write_fits_csv`) and `read_fits_csv` of lanes
    that carry every column of FIT_COLUMNS: the file's header is FIT_COLUMNS in order; the
    reader returns exactly those columns (a column the store writes but the reader drops, or
    one the reader makes up, fails); integer columns come back int64 and bit-equal (values up
    to 2^53 + 1, which a float parse would round), float columns float64 and bit-equal
    (non-integral values, so an integer parse fails; nan and +-inf kept), the status names as
    text. A column the store does not know is not read."""
    assert not set(INT_COLUMNS) & set(FLOAT_COLUMNS) | set(INT_COLUMNS) & set(STR_COLUMNS)
    assert not set(FLOAT_COLUMNS) & set(STR_COLUMNS)
    assert set(INT_COLUMNS) | set(FLOAT_COLUMNS) | set(STR_COLUMNS) == set(FIT_COLUMNS)
    for c in ("err_nu", "err_voronoi", "n_empty_cells"):
        assert c in FIT_COLUMNS
    assert "n_empty_cells" in INT_COLUMNS

    rows = 6
    rng = np.random.default_rng(5)
    lanes: dict[str, np.ndarray] = {
        "n": np.array([100, 100, 200, 200, 300, 300], np.int64),
        "replicate": np.array([0, 1, 0, 1, 0, 1], np.int64),
        "status_code": np.array([0, 1, 2, 0, 1, 7], np.int32),  # 7: no name, written as "7"
    }
    for j, c in enumerate(FIT_COLUMNS):
        if c in lanes or c == "status":
            continue
        if c in INT_COLUMNS:
            lanes[c] = np.arange(rows, dtype=np.int64) * 3 + j
            lanes[c][j % rows] = 2**53 + 1
        elif c in FLOAT_COLUMNS:
            lanes[c] = (rng.standard_normal(rows) + 0.1) * 10.0 ** (j - 8)
            lanes[c][[j % rows, (j + 1) % rows, (j + 2) % rows]] = (math.nan, math.inf, -math.inf)
        else:
            lanes[c] = np.array([f"{c}-{i}" for i in range(rows)])
    names = ("converged", "max_iter", "nonfinite")
    path = write_fits_csv(tmp_path, lanes, names)
    assert path.read_text().splitlines()[0] == ",".join(FIT_COLUMNS)

    fits = read_fits_csv(path)
    assert set(fits) == set(FIT_COLUMNS)
    for c in INT_COLUMNS:
        assert fits[c].dtype == np.int64, c
        np.testing.assert_array_equal(fits[c], lanes[c], err_msg=c)
    for c in FLOAT_COLUMNS:
        assert fits[c].dtype == np.float64, c
        np.testing.assert_array_equal(fits[c], lanes[c], err_msg=c)  # nan == nan here
    assert fits["status"].tolist() == [*names, "converged", "max_iter", "7"]
    for c in set(STR_COLUMNS) - {"status"}:
        assert fits[c].tolist() == lanes[c].tolist(), c

    # The reader's own parsing: empty cells, nan/inf spellings; columns it does not know.
    path.write_text(
        "n,replicate,err_beta,err_nu,err_voronoi,n_empty_cells,converged,err_future\n"
        "100,0,nan,0.1,0.2,1,1,5\n100,1,,0.3,inf,0,1,6\n"
    )
    fits = read_fits_csv(path)
    assert "err_future" not in fits
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


def test_compare_with_an_input_free_run(tmp_path: Path) -> None:
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
        warnings.simplefilter("error")  # no RuntimeWarning from the all-NaN beta block
        png, _ = plot_comparison([free, soft], None, tmp_path / "cmp", n_boot=20)
    assert png.stat().st_size > 10_000

"""fits.csv's vectorised writer against the row-by-row writer it replaced (kept here as the
reference): byte for byte, on random data with every kind of float and every status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moejax.sweep import store
from moejax.sweep.store import FIT_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, write_fits_csv

STATUS_NAMES = ("converged", "max_iter", "nonfinite", "line_search", "at_bound")


def reference_fits_csv(lanes: dict[str, np.ndarray], status_names: tuple[str, ...]) -> str:
    """The writer before the vectorised one: one Python call per cell."""

    def fmt(col: str, v: Any) -> str:
        if col == "status":
            return str(v)
        if col in INT_COLUMNS:
            return str(int(v))
        return repr(float(v))

    order = np.lexsort((lanes["replicate"], lanes["n"]))
    cols = [c for c in FIT_COLUMNS if c in lanes or c == "status"]
    lines = [",".join(cols)]
    for i in order:
        row = []
        for c in cols:
            if c == "status":
                code = int(lanes["status_code"][i])
                row.append(status_names[code] if 0 <= code < len(status_names) else str(code))
            else:
                row.append(fmt(c, lanes[c][i]))
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def hard_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Floats of every kind ``repr`` distinguishes, shuffled."""
    k = n // 10
    parts = [
        np.array(
            [
                np.nan,
                -np.nan,
                np.inf,
                -np.inf,
                0.0,
                -0.0,
                5e-324,
                -5e-324,
                2.2250738585072014e-308,
                1.7976931348623157e308,
                1e16,
                9999999999999998.0,
                1e15,
                1e-4,
                1e-5,
                0.0001000001,
                np.nextafter(1e-4, 0),
                0.1,
                1 / 3,
                2.5,
                1.0,
                -1.0,
                0.5,
                123456789012345.6,
                1e22,
                1e23,
                9.5,
                0.95,
                99.5,
                5e-5,
                1e-300,
                1e300,
                1e-281,
                1e281,
                1e100,
                1.5e-7,
            ]
        ),
        rng.standard_normal(k) * 10.0 ** rng.integers(-14, 8, k),  # typical errors, loglik
        rng.standard_normal(k) * 10.0 ** rng.integers(-300, 300, k),  # any exponent
        np.rint(rng.standard_normal(k) * 10.0 ** rng.integers(0, 9, k))
        / 10.0 ** rng.integers(0, 9, k),  # few digits
        rng.integers(-(10**6), 10**6, k) * 10.0 ** rng.integers(-20, 20, k),
        np.ldexp(1.0, rng.integers(-1074, 1024, k)),  # powers of two
        10.0 ** rng.integers(-30, 30, k) * rng.choice([1.0, -1.0], k),  # powers of ten
        np.nextafter(10.0 ** rng.integers(-30, 30, k), rng.choice([0.0, np.inf], k)),
        rng.integers(0, 2**63, k).view(np.float64),  # any bit pattern (nan payloads too)
        np.nextafter(rng.integers(1, 10**4, k) / 10.0 ** rng.integers(0, 6, k), np.inf),
    ]
    with np.errstate(over="ignore"):
        x = np.concatenate(parts)
    return rng.permutation(np.resize(x, n))


def random_lanes(rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    lanes: dict[str, np.ndarray] = {
        "n": rng.choice([1000, 31623, 100000, 5], n_rows).astype(np.int64),
        "replicate": rng.permutation(n_rows).astype(np.int64),
        "n_iter": rng.integers(0, 101, n_rows).astype(np.int32),
        "inner_steps": rng.integers(0, 5000, n_rows).astype(np.int32),
        "converged": rng.integers(0, 2, n_rows).astype(np.int32),
        "at_bound": rng.integers(0, 2, n_rows).astype(np.int32),
        "n_empty_cells": rng.integers(0, 3, n_rows),
        "n_shared_cells": rng.integers(-1, 3, n_rows),
        "start": rng.integers(0, 8, n_rows).astype(np.int16),
        # every status, and codes outside the names (written as numbers)
        "status_code": rng.integers(-2, len(STATUS_NAMES) + 2, n_rows).astype(np.int32),
    }
    for c in FLOAT_COLUMNS:
        lanes[c] = hard_floats(rng, n_rows)
    lanes["err_nu"] = np.full(n_rows, np.nan)  # a column of one value
    with np.errstate(over="ignore", invalid="ignore"):
        lanes["grad_norm"] = lanes["grad_norm"].astype(np.float32)  # float(v) of a float32
    return lanes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fits_csv_matches_the_per_cell_writer(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lanes = random_lanes(rng, 30000)
    path = write_fits_csv(tmp_path, lanes, STATUS_NAMES)
    assert path.read_bytes() == reference_fits_csv(lanes, STATUS_NAMES).encode()


def test_fits_csv_blocks_and_column_subsets(tmp_path: Path, monkeypatch) -> None:
    """Rows split over several formatting blocks, a missing column, ints held as floats and
    bools, an empty table."""
    monkeypatch.setattr(store, "CSV_ROWS_PER_BLOCK", 7)
    rng = np.random.default_rng(3)
    lanes = random_lanes(rng, 50)
    del lanes["err_voronoi"], lanes["start"]
    lanes["n_iter"] = lanes["n_iter"].astype(np.float64) + 0.75  # int(v) truncates
    lanes["at_bound"] = lanes["at_bound"].astype(bool)
    lanes["replicate"] = rng.integers(-(2**62), 2**62, 50)  # a wide range (no offset table)
    lanes["err_beta"] = rng.integers(-5, 5, 50)  # ints in a float column
    expect = reference_fits_csv(lanes, STATUS_NAMES).encode()
    assert write_fits_csv(tmp_path, lanes, STATUS_NAMES).read_bytes() == expect
    empty = {k: v[:0] for k, v in lanes.items()}
    assert (
        store.fits_csv_bytes(empty, STATUS_NAMES)
        == reference_fits_csv(empty, STATUS_NAMES).encode()
    )


def test_float_cells_are_repr() -> None:
    """Every float cell is ``repr(float(v))``, over many more values than the table tests."""
    rng = np.random.default_rng(4)
    x = hard_floats(rng, 400000)
    chars, lens = store._float_cells(x)
    buf = chars.tobytes()
    W = chars.shape[1]
    got = [buf[i * W : i * W + int(lens[i])].decode() for i in range(x.size)]
    want = [repr(float(v)) for v in x]
    bad = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
    assert bad == []

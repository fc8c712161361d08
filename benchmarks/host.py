"""The host's share of a large sweep: writing fits.csv and estimates.npz for 800 000 fits (the
paper-sized GPU study, `sweeps/gpu/paper-d8.toml` at 40 000 replicates x 20 sizes).

    python benchmarks/host.py                 # 800 000 rows: per-cell vs vectorised fits.csv
    python benchmarks/host.py --rows 100000   # fewer rows
    python benchmarks/host.py --no-old        # skip the per-cell writer (~15 s at 800 000)
    python benchmarks/host.py --write         # also replace RESULTS.md's "host.py" section

The lanes are synthetic but shaped and valued like a sweep's (`moejax.sweep.driver` hands the
store the same dict): the fits.csv columns (errors and gradient norms with 16-17 significant
digits, log-likelihoods around -n, two all-NaN columns as for a categorical one-adapter model,
small integer counts, statuses) and the kept arrays of estimates.npz (estimate, se, on_bound,
truth: `moejax.mix.MixParams` leaves of the config's spec; random estimates and standard
errors, a truth that depends on n only). Timed: the old per-cell writer (one ``repr`` /
``str`` per cell, as `moejax.sweep.store.write_fits_csv` was before issue 23), the vectorised
`moejax.sweep.store.fits_csv_bytes` (the same bytes; checked here), the write of the file
itself (atomic, fsync) and `moejax.sweep.store.write_estimates` (compressed below
store.COMPRESS_BELOW fits, plain np.savez from there), beside np.savez_compressed of the same
arrays. Each is timed once (best of ``--repeats`` for the fast ones).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from moejax.sweep import store

CONFIG = "sweeps/gpu/paper-d8.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/host.py --write"
STATUS_NAMES = ("converged", "max_iter", "nonfinite", "line_search")


def per_cell_fits_csv(lanes: dict[str, np.ndarray], status_names: tuple[str, ...]) -> str:
    """fits.csv's text as the store wrote it before issue 23: one Python call per cell."""

    def fmt(col: str, v: Any) -> str:
        if col in store.INT_COLUMNS:
            return str(int(v))
        return repr(float(v))

    order = np.lexsort((lanes["replicate"], lanes["n"]))
    cols = [c for c in store.FIT_COLUMNS if c in lanes or c == "status"]
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


def leaf_shapes() -> dict[str, tuple[int, ...]]:
    """MixParams leaf shapes (without the fit axis) of the config's spec."""
    from moejax.sweep import config
    from moejax.sweep.simulate import build_problem

    problem = build_problem(config.load(C.REPO / CONFIG))
    tp = problem.truth.at(1000.0)
    return {k: tuple(np.shape(v)) for k, v in tp._asdict().items()}


def sweep_lanes(rows: int, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sizes = np.unique(np.round(np.logspace(3, 5, 20)).astype(np.int64))
    per = -(-rows // sizes.size)
    n = np.repeat(sizes, per)[:rows]
    rep = np.tile(np.arange(per, dtype=np.int64), sizes.size)[:rows]
    perm = rng.permutation(rows)  # parts arrive in chunk order, not sorted
    n, rep = n[perm], rep[perm]
    sq = np.sqrt(n)
    lanes: dict[str, np.ndarray] = {"n": n, "replicate": rep}
    for c, scale in (("err_beta", 2.0), ("err_exp_tau", 1.0), ("err_eta", 3.0)):
        lanes[c] = np.abs(rng.standard_normal(rows)) * scale / sq
    lanes["err_density"] = np.abs(rng.standard_normal(rows)) * 0.3 / sq
    lanes["err_nu"] = np.full(rows, np.nan)
    lanes["err_voronoi"] = np.full(rows, np.nan)
    lanes["loglik"] = -0.77 * n + rng.standard_normal(rows) * sq
    lanes["n_iter"] = rng.integers(3, 9, rows).astype(np.int32)
    lanes["inner_steps"] = lanes["n_iter"].copy()
    lanes["converged"] = (rng.random(rows) < 0.999).astype(np.int32)
    lanes["at_bound"] = (rng.random(rows) < 0.01).astype(np.int32)
    lanes["n_empty_cells"] = np.zeros(rows, np.int32)
    lanes["n_shared_cells"] = np.zeros(rows, np.int32)
    lanes["status_code"] = np.where(lanes["converged"] == 1, 0, 1).astype(np.int32)
    lanes["grad_norm"] = np.abs(rng.standard_normal(rows)) * 10.0 ** rng.uniform(-13, -9, rows)
    lanes["start"] = np.zeros(rows, np.int32)
    for k, shp in shapes.items():
        lanes[f"estimate.{k}"] = rng.standard_normal((rows, *shp))
        lanes[f"se.{k}"] = np.abs(rng.standard_normal((rows, *shp))) / sq.reshape(
            -1, *[1] * len(shp)
        )
        lanes[f"on_bound.{k}"] = (rng.random((rows, *shp)) < 0.001).astype(np.int8)
        lanes[f"truth.{k}"] = np.broadcast_to(
            np.arange(int(np.prod(shp)), dtype=np.float64).reshape(shp) * 0.1, (rows, *shp)
        ) + 0.0 * n.reshape(-1, *[1] * len(shp))
    return lanes


def best_of(fn, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=800_000, help="fits (default 800000)")
    ap.add_argument("--no-old", action="store_true", help="skip the per-cell writer")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of the fast writers")
    ap.add_argument("--write", action="store_true", help="replace RESULTS.md's host.py section")
    a = ap.parse_args(argv)
    info = C.RunInfo(a.rows < 800_000)
    print(f"load average {C.fmt_load(info.load_start)} on {info.nproc} cores", flush=True)
    shapes = leaf_shapes()
    lanes = sweep_lanes(a.rows, shapes)
    rows = []
    t_new, data = best_of(lambda: store.fits_csv_bytes(lanes, STATUS_NAMES), a.repeats)
    mb = len(data) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t_file, _ = best_of(lambda: store.write_fits_csv(out, lanes, STATUS_NAMES), a.repeats)
        t_disk = t_file - t_new
        same = "not checked"
        if not a.no_old:
            t_old, text = best_of(lambda: per_cell_fits_csv(lanes, STATUS_NAMES), 1)
            same = "yes" if text.encode() == data else "NO"
            rows.append(["fits.csv text, per-cell writer (before)", t_old, 1.0, mb])
        t_est, _ = best_of(lambda: store.write_estimates(out, lanes, store.KEPT_GROUPS), 1)
        est_mb = (out / "estimates.npz").stat().st_size / 1e6
        arrays = {
            k: np.asarray(v) for k, v in lanes.items() if k.split(".")[0] in store.KEPT_GROUPS
        }
        t_zip, _ = best_of(lambda: np.savez_compressed(out / "z.npz", **arrays), 1)
        zip_mb = (out / "z.npz").stat().st_size / 1e6
        raw_mb = (
            sum(
                np.asarray(v).nbytes
                for k, v in lanes.items()
                if k.split(".")[0] in store.KEPT_GROUPS
            )
            / 1e6
        )
    base = rows[0][1] if rows else float("nan")
    rows.append(["fits.csv text, vectorised (fits_csv_bytes)", t_new, base / t_new, mb])
    rows.append(["write_fits_csv (text + atomic write, fsync)", t_file, base / t_file, mb])
    how = "compressed" if a.rows < store.COMPRESS_BELOW else "plain np.savez"
    rows.append([f"write_estimates ({how}, atomic)", t_est, float("nan"), est_mb])
    rows.append(["np.savez_compressed of the same arrays", t_zip, float("nan"), zip_mb])
    for r in rows:
        r[2] = "-" if r[2] != r[2] else f"{r[2]:.1f}x"
    txt, md = C.table(["step", "s", "speed-up vs per-cell", "MB written"], rows)
    print(txt)
    notes = [
        f"- {a.rows} fits (20 sizes of `{CONFIG}`, shuffled as chunks arrive); MixParams leaves "
        f"{', '.join(f'{k} {s}' for k, s in shapes.items())} per group of "
        f"{', '.join(store.KEPT_GROUPS)} ({raw_mb:.0f} MB in memory). Fast steps: best of "
        f"{a.repeats}; per-cell writer and write_estimates: one call.",
        f"- Same bytes as the per-cell writer: {same}. Writing the file (atomic, fsync) adds "
        f"{t_disk:.2f} s to the text.",
        f"- estimates.npz: {est_mb:.0f} MB ({how}) from {raw_mb:.0f} MB in {t_est:.1f} s; "
        f"compressed it would be {zip_mb:.0f} MB in {t_zip:.1f} s (zlib of random float64 "
        "estimates gains little; the truth and on_bound arrays compress).",
    ]
    print("\n".join(notes))
    if a.write:
        lines = info.header_lines("host.py", FULL_COMMAND)
        lines += ["", *md, "", *notes]
        print(f"wrote {C.write_section('host.py', lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

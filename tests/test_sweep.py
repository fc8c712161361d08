"""Tests of the sweep engine (moejax.sweep) and of `moejax sweep` / `moejax report` on real runs.

Cost: every distinct compiled program costs a few seconds on this 2-core CPU, so tests share a few:
  P1  tiny config (d = 2, K = 2, sizes [200, 300] = one bucket of N = 320), 4 lanes per device
      per call, in process;  P1' the same through the CLI (its XLA flags);  P2, P4 the same on 2
      and 4 forced CPU devices (CLI);  P5 estimator.max_iter = 1;  P6 sizes [200] alone.
The chunk size, the sample sizes and the number of replicates are not part of the compiled
program, so runs that differ only in those reuse it (in process, or through JAX's persistent
cache, which a session fixture points at a temporary directory: in this process via jax.config,
in subprocesses via MOEJAX_CACHE_DIR).

Determinism is bit for bit: every call runs run.lanes lanes per device whatever the chunk size
and the device count, so the same kernels compute every lane (chunks 1, 2, 4, 8, 64 and 1, 2, 4
devices give identical fits.csv bytes). Comparisons across *different programs* (another
buffer, another block size, the CLI's XLA flags against the in-process default) use
`assert_fits_equal`'s tolerances.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fits_compare import assert_fits_equal, read_fits
from hypothesis import given, settings
from hypothesis import strategies as st
from jax_cache import persistent_cache

from moejax.estimation.estimators import fit
from moejax.estimation.init import random_inits
from moejax.mix import sample
from moejax.sampling import DATA_BLOCK
from moejax.sweep import (
    FIT_COLUMNS,
    StoreError,
    block_padding,
    choose_block,
    config_hash,
    load,
    log_spaced_sizes,
    resolve,
    run_sweep,
)
from moejax.sweep.config import SCHEMA
from moejax.sweep.schema import KEPT_GROUPS, LANE_COLUMNS
from moejax.sweep.simulate import buffer_classes, build_problem, lane_keys
from moejax.sweep.store import FLOAT_COLUMNS, load_parts
from moejax.voronoi import voronoi_errors

BASE_TOML = """\
name = "tiny"
seed = 0
replicates = 4
[model]
d = 2
K = 2
[sizes]
list = [200, 300]
[run]
chunk = 2
lanes = 4
density_points = 20
"""
BASE_SIZES = [200, 300]
BASE_REPS = 4
RESUME_REPS = 100  # 200 lanes in 100 chunks of 2: a wide window to kill the run mid-way


# ----------------------------------------------------------------------------------------------
# helpers


def n_parts(out: Path) -> int:
    return len(list((out / "parts").glob("part-*.npz")))


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1", **extra)


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moejax.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, rc: int, *needles: str) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("moejax: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory: pytest.TempPathFactory):
    """A persistent compilation cache shared by this session's in-process runs and CLI runs."""
    with persistent_cache(tmp_path_factory.mktemp("jax-cache")) as d:
        yield d


@pytest.fixture(scope="session")
def base_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("configs") / "tiny.toml"
    p.write_text(BASE_TOML)
    return p


@pytest.fixture(scope="session")
def base_run(tmp_path_factory: pytest.TempPathFactory, jax_cache: Path, base_toml: Path):
    """The tiny config run in-process (program P1). Read-only: copy it before changing it."""
    out = tmp_path_factory.mktemp("base") / "run"
    man = run_sweep(load(base_toml), out, progress=False)
    return out, man


# ----------------------------------------------------------------------------------------------
# bucket planning (pure)


def test_buffer_classes_cover_sizes_within_ratio() -> None:
    sizes = log_spaced_sizes(3000, 300_000, 20)
    classes = buffer_classes(sizes, 1024, 16.0)
    assert [n for _, g in classes for n in g] == sizes  # each size once, in order
    for N, g in classes:
        assert N % 1024 == 0 and max(g) <= N < max(g) + 1024 and max(g) <= 16 * min(g)
    assert len(buffer_classes(sizes, 1024, 1e9)) == 1  # a huge ratio: one program


def test_log_spaced_sizes_block_plan() -> None:
    sizes = log_spaced_sizes(1000, 100_000, 20)
    assert len(sizes) == 20 and sizes[0] == 1000 and sizes[-1] == 100_000
    assert sizes == sorted(set(sizes))
    B = choose_block(sizes, 1024, 1.3)
    assert B == 1024  # the default grid keeps the largest block
    assert 1.0 <= block_padding(sizes, B) <= 1.03


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.sets(st.integers(1, 10**7), min_size=1, max_size=40),
    block_rows=st.integers(64, 4096),
    max_padding=st.floats(1.0, 2.0),
)
def test_choose_block_properties(sizes: set[int], block_rows: int, max_padding: float) -> None:
    sizes = sorted(sizes)
    B = choose_block(sizes, block_rows, max_padding)
    assert B % DATA_BLOCK == 0 and DATA_BLOCK <= B <= max(DATA_BLOCK, block_rows)
    ratio = block_padding(sizes, B)
    assert ratio >= 1.0
    # the padding bound holds unless the block is already the smallest one
    assert ratio <= max_padding * (1 + 1e-12) or B == DATA_BLOCK


# ----------------------------------------------------------------------------------------------
# config resolution (pure)


def test_resolve_fills_every_default() -> None:
    cfg = resolve({})
    for section, fields in SCHEMA.items():
        table = cfg if section == "" else cfg[section]
        if section == "sizes":  # resolved to the explicit list
            assert set(table) == {"list"}
            continue
        assert set(fields) <= set(table), (section, set(fields) - set(table))
    assert cfg["run"]["max_padding"] == 1.3
    assert cfg["run"]["chunk"] == 0 and cfg["replicates"] == 40
    assert cfg["sizes"]["list"] == log_spaced_sizes(1000, 100_000, 20)
    assert cfg["model"]["frozen_scale"] == cfg["model"]["scale"]
    assert cfg["model"]["eta0"] == [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    json.dumps(cfg)  # plain JSON types only


def test_config_hash_ignores_run_only_fields() -> None:
    base = resolve({"model": {"d": 2, "K": 2}, "sizes": {"list": [200, 300]}})
    h = config_hash(base)
    assert len(h) == 16
    same = [
        {"run": {"chunk": 7}},
        {"run": {"memory_gb": 9.0}},
        {"name": "other-name"},
    ]
    for extra in same:
        raw = {"model": {"d": 2, "K": 2}, "sizes": {"list": [200, 300]}}
        for k, v in extra.items():
            raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
        assert config_hash(resolve(raw)) == h, extra
    different = [
        {"seed": 1},
        {"replicates": 41},
        {"run": {"max_padding": 1.5}},
        {"run": {"density_points": 10}},
        {"estimator": {"max_iter": 5}},
    ]
    for extra in different:
        raw = {"model": {"d": 2, "K": 2}, "sizes": {"list": [200, 300]}}
        for k, v in extra.items():
            raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
        assert config_hash(resolve(raw)) != h, extra
    # Key order of the TOML does not matter.
    assert config_hash(resolve({"sizes": {"list": [300, 200]}, "model": {"K": 2, "d": 2}})) == h


# ----------------------------------------------------------------------------------------------
# results are data


def test_manifest_records_config_versions_devices_timings(base_run, base_toml: Path) -> None:
    out, returned = base_run
    man = manifest(out)
    cfg = load(base_toml)
    assert man["status"] == "complete"
    assert man["config"] == cfg  # the fully resolved config, defaults included
    assert man["config"]["run"]["max_padding"] == 1.3
    assert man["config"]["init"]["mode"] == "near_truth"
    assert man["config_hash"] == config_hash(cfg)
    for pkg in ("jax", "jaxlib", "numpy", "moejax", "python"):
        assert man["versions"][pkg] not in ("", None, "not installed"), pkg
    assert man["versions"]["jax"] == jax.__version__
    assert man["versions"]["numpy"] == np.__version__
    assert man["devices"] == [str(d) for d in jax.devices()] and len(man["devices"]) >= 1
    t = man["timings"]
    assert t["compile_s"] > 0 and t["wall_s"] >= t["compile_s"] and t["compute_s"] >= 0
    assert t["lanes_this_run"] == len(BASE_SIZES) * BASE_REPS
    # One buffer for all sizes, rounded up to whole blocks; each n is processed in
    # ceil(n / block) blocks (chunks never mix sizes), and each chunk of 2 lanes runs one call
    # of 4 lanes: the work ratio is the block rounding times the lane padding (4 / 2).
    B, N = man["block_rows"], man["buffer_rows"]
    assert N % B == 0 and N >= max(BASE_SIZES)
    expected = 2 * sum(-(-n // B) * B for n in BASE_SIZES) / sum(BASE_SIZES)
    assert man["padding_ratio"] == pytest.approx(expected)
    assert [(b["padded_size"], b["sizes"]) for b in man["buckets"]] == [(N, BASE_SIZES)]
    assert [(b["lanes_per_device"], b["devices"]) for b in man["buckets"]] == [(4, 1)]
    c = man["counts"]
    assert c["n_fits"] == len(BASE_SIZES) * BASE_REPS
    assert c["n_converged"] + c["n_failed"] == c["n_fits"]
    assert sum(c["status_counts"].values()) == c["n_fits"]
    assert returned["config_hash"] == man["config_hash"]
    # Passes: the fits' own (fits.csv) and what the calls executed, counted independently
    # here: chunks of 2 replicates, each one call of 4 lockstep lanes (the chunk's 2 and two
    # copies of its last) that runs 4 x its slowest lane's passes.
    _, rows = read_fits(out / "fits.csv")
    passes = {(int(r["n"]), int(r["replicate"])): int(r["passes"]) for r in rows}
    assert min(passes.values()) >= 2
    executed = sum(
        4 * max(passes[n, r], passes[n, r + 1]) for n in BASE_SIZES for r in range(0, BASE_REPS, 2)
    )
    p = man["passes"]
    assert p["useful"] == sum(passes.values()) and p["executed"] == executed
    assert p["ratio"] == pytest.approx(executed / sum(passes.values())) and p["ratio"] >= 1


def test_fits_csv_layout(base_run) -> None:
    out, man = base_run
    header, rows = read_fits(out / "fits.csv")
    assert header == list(FIT_COLUMNS)
    keys = [(int(r["n"]), int(r["replicate"])) for r in rows]
    assert keys == [(n, r) for n in BASE_SIZES for r in range(BASE_REPS)]  # all lanes, sorted
    for r in rows:
        assert r["status"] in ("converged", "max_iter", "nonfinite")
        assert r["converged"] in ("0", "1") and r["at_bound"] in ("0", "1")
        assert (r["status"] == "converged") == (r["converged"] == "1")
        assert int(r["n_iter"]) >= 1
        for c in ("err_beta", "err_exp_tau", "err_eta", "err_density"):
            assert math.isfinite(float(r[c])) and float(r[c]) >= 0
        assert math.isfinite(float(r["loglik"])) and float(r["loglik"]) < 0
    assert sum(r["converged"] == "0" for r in rows) == man["counts"]["n_failed"]
    assert n_parts(out) == len(rows) // 2  # chunk 2
    # one schema: every lane result is a column of it (or kept evidence), and every column
    # but the engine's (n, replicate) and the status name comes from the lanes
    lanes, _ = load_parts(out)
    kept = {k for k in lanes if k.split(".")[0] in KEPT_GROUPS}
    assert set(lanes) - kept == set(LANE_COLUMNS) | {"n", "replicate"}
    assert not list(out.glob("slopes.*")) and not list(out.glob("rates.*"))  # report: the CLI's


# ----------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("chunk", [1, 4, 8, 64])
def test_chunk_size_does_not_change_results(base_run, base_toml, tmp_path, chunk) -> None:
    """Bit for bit: the same program runs every lane, wherever it sits in a call."""
    out, _ = base_run
    man = run_sweep(load(base_toml, {"run.chunk": chunk}), tmp_path / "c", progress=False)
    assert man["config_hash"] == manifest(out)["config_hash"]  # chunk is run-only
    assert n_parts(tmp_path / "c") == len(BASE_SIZES) * -(-BASE_REPS // chunk)
    assert (tmp_path / "c" / "fits.csv").read_bytes() == (out / "fits.csv").read_bytes()


def test_simulate_equals_the_sweep(base_run, base_toml) -> None:
    """`moejax.simulate` returns fits.csv's columns as (sizes, replicates) arrays, bit for bit."""
    import moejax as mj

    out, _ = base_run
    got = mj.simulate(base_toml, progress=False)
    _, rows = read_fits(out / "fits.csv")
    assert got["n"].shape == (len(BASE_SIZES), BASE_REPS)
    for c in FIT_COLUMNS:
        want = np.array([r[c] for r in rows]).reshape(len(BASE_SIZES), BASE_REPS)
        if c == "status":
            np.testing.assert_array_equal(got[c], want)
        else:
            have = np.array(
                [repr(float(v)) if c in FLOAT_COLUMNS else str(int(v)) for v in got[c].ravel()]
            )
            np.testing.assert_array_equal(have.reshape(want.shape), want, err_msg=c)


def test_device_count_does_not_change_results(base_toml, jax_cache, tmp_path) -> None:
    """1 and 4 forced CPU devices (each call: 4 lanes per device), same CLI program otherwise:
    identical fits.csv bytes (4 devices shard each call, 1 does not)."""
    if jax.default_backend() != "cpu":
        pytest.skip("forced CPU devices")
    got = {}
    for dev in (1, 4):
        env = cli_env(
            jax_cache,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={dev}",
            JAX_PLATFORMS="cpu",
            MOEJAX_HOST_DEVICES=str(dev),
        )
        out = tmp_path / f"dev{dev}"
        proc = cli(["sweep", str(base_toml), "--out", str(out), "--no-report"], env)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        man = manifest(out)
        assert len(man["devices"]) == dev, man["devices"]
        assert [b["devices"] for b in man["buckets"]] == [dev]
        assert n_parts(out) == 4  # chunk 2: parts do not depend on the devices
        got[dev] = (out / "fits.csv").read_bytes()
    assert got[1] == got[4]


def test_result_does_not_depend_on_bucket_padding(base_run, base_toml, tmp_path) -> None:
    """n = 200 in a buffer sized for 300 equals n = 200 run alone (a shorter buffer and another
    compute block): padded rows carry weight 0 and the data do not depend on the buffer."""
    out, _ = base_run
    alone = tmp_path / "alone"
    man = run_sweep(load(base_toml, {"sizes.list": [200]}), alone, progress=False)
    assert man["buckets"][0]["sizes"] == [200]
    assert man["buffer_rows"] < manifest(out)["buffer_rows"]
    # different buffer length and compute block, same data and same fits
    assert_fits_equal(out / "fits.csv", alone / "fits.csv", only_n=200)


# ----------------------------------------------------------------------------------------------
# resume, refusal, --force


def _start_and_kill(cmd: list[str], env: dict[str, str], out: Path, total: int) -> int | None:
    """Start the CLI, SIGKILL it as soon as a part exists; return the parts then on disk, or
    None if the run had finished (all parts written) before the kill."""
    with open(out.parent / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            parts = out / "parts"
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                if parts.is_dir() and any(p.startswith("part-") for p in os.listdir(parts)):
                    break
                time.sleep(0.002)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL or proc.returncode == 0, proc.returncode
    k = n_parts(out)
    assert k >= 1, (out.parent / "killed.log").read_text()
    return None if k >= total else k


def test_resume_after_sigkill(base_run, base_toml: Path, jax_cache: Path, tmp_path: Path) -> None:
    env = cli_env(jax_cache)
    total_chunks = len(BASE_SIZES) * RESUME_REPS // 2
    killed = None
    for attempt in range(2):
        out = tmp_path / f"attempt{attempt}" / "run"
        out.parent.mkdir()
        cmd = [sys.executable, "-m", "moejax.cli", "sweep", str(base_toml), "--out", str(out)]
        cmd += ["--replicates", str(RESUME_REPS), "--no-report", "--no-progress"]
        killed = _start_and_kill(cmd, env, out, total_chunks)
        if killed is not None:
            break
    if killed is None:
        pytest.skip("the sweep finished before it could be killed, twice")
    assert 1 <= killed < total_chunks
    print(f"killed with {killed} of {total_chunks} chunks on disk (attempt {attempt})")
    assert not (out / "fits.csv").exists()
    assert manifest(out)["status"] == "running"

    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    man = manifest(out)
    assert man["status"] == "complete"
    # Only the lanes that were missing were computed again.
    assert man["timings"]["lanes_this_run"] == len(BASE_SIZES) * RESUME_REPS - 2 * killed
    assert man["counts"]["n_fits"] == len(BASE_SIZES) * RESUME_REPS
    assert n_parts(out) == total_chunks

    # The uninterrupted reference runs the same compiled program (the CLI's): identical bytes.
    ref = tmp_path / "uninterrupted"
    ref_cmd = [str(ref) if a == str(out) else a for a in cmd]
    proc = subprocess.run(ref_cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (ref / "fits.csv").read_bytes() == (out / "fits.csv").read_bytes()
    # A lane's data depend on (seed, n, replicate) only, not on how many replicates there are.
    assert_fits_equal(base_run[0] / "fits.csv", out / "fits.csv", only_replicates=BASE_REPS)


def test_other_config_is_refused_unless_force(base_run, base_toml, jax_cache, tmp_path) -> None:
    src, _ = base_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = (out / "fits.csv").read_bytes()
    env = cli_env(jax_cache)
    args = ["sweep", str(base_toml), "--out", str(out), "--no-report", "--replicates", "3"]

    proc = cli(args, env)
    assert_one_line_error(proc, 1, "--force", str(out))
    assert (out / "fits.csv").read_bytes() == before and n_parts(out) == 4

    proc = cli([*args, "--force"], env)
    assert proc.returncode == 0, proc.stderr
    man = manifest(out)
    assert man["config"]["replicates"] == 3 and man["counts"]["n_fits"] == 6
    # the old parts were removed; chunks never mix sizes: 2 sizes x ceil(3 reps / chunk 2)
    assert n_parts(out) == 4
    assert_fits_equal(src / "fits.csv", out / "fits.csv", only_replicates=3)


def test_same_config_rerun_is_a_noop_resume(base_run, base_toml: Path, tmp_path: Path) -> None:
    src, _ = base_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    parts_before = sorted(p.name for p in (out / "parts").iterdir())
    # chunk is a run-only field: a different chunk is still the same config.
    man = run_sweep(load(base_toml, {"run.chunk": 4}), out, progress=False)
    assert man["timings"]["lanes_this_run"] == 0
    assert man["timings"]["compile_s"] == 0  # nothing left to compile
    assert sorted(p.name for p in (out / "parts").iterdir()) == parts_before
    assert (out / "fits.csv").read_bytes() == (src / "fits.csv").read_bytes()


def test_parts_without_manifest_are_refused(base_run, base_toml: Path, tmp_path: Path) -> None:
    src, _ = base_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    (out / "manifest.json").unlink()
    with pytest.raises(StoreError, match="--force"):
        run_sweep(load(base_toml), out, progress=False)
    assert n_parts(out) == 4


def test_unwritable_out_dir(base_toml: Path, jax_cache: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory\n")
    proc = cli(
        ["sweep", str(base_toml), "--out", str(blocker / "out"), "--no-report"], cli_env(jax_cache)
    )
    assert_one_line_error(proc, 1, str(blocker / "out"))
    assert blocker.read_text() == "not a directory\n"


# ----------------------------------------------------------------------------------------------
# failing lanes and the report


def test_failing_lanes_are_recorded(jax_cache: Path, tmp_path: Path) -> None:
    # Through the CLI: `moejax sweep` (no --no-report) runs the sweep, then the report.
    toml = tmp_path / "fail.toml"
    toml.write_text(BASE_TOML + "[estimator]\nmax_iter = 1\n")
    out = tmp_path / "fail"
    proc = cli(["sweep", str(toml), "--out", str(out)], cli_env(jax_cache))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary, *report = proc.stdout.splitlines()
    assert summary.startswith(f"{len(BASE_SIZES) * BASE_REPS} fits (") and str(out) in summary
    assert report and report[0].startswith("run tiny")  # make_report's table follows
    assert manifest(out)["status"] == "complete"
    _, rows = read_fits(out / "fits.csv")
    failed = [r for r in rows if r["converged"] == "0"]
    assert len(rows) == len(BASE_SIZES) * BASE_REPS
    assert failed, "max_iter = 1 should leave fits unconverged"
    assert all(r["status"] == "max_iter" for r in failed)
    assert all(int(r["n_iter"]) <= 1 for r in rows)
    c = manifest(out)["counts"]
    assert c["n_failed"] == len(failed) > 0
    assert c["status_counts"].get("max_iter", 0) == len(failed)
    with open(out / "slopes.csv", newline="") as f:
        slopes = list(csv.DictReader(f))
    assert slopes and max(int(r["n_failed"]) for r in slopes) > 0
    assert (out / "rates.png").is_file()


def test_report_regenerates_from_fits_csv(base_run, jax_cache: Path, tmp_path: Path) -> None:
    from moejax.report import make_report

    src, _ = base_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    make_report(out, n_boot=50)
    first = (out / "slopes.csv").read_text()
    # Results are data: fits.csv (+ manifest for the theory columns) is all the report needs.
    for p in out.glob("slopes.*"):
        p.unlink()
    shutil.rmtree(out / "parts")
    proc = cli(["report", str(out), "--n-boot", "50"], cli_env(jax_cache))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "slopes.csv").read_text() == first
    assert (out / "rates.png").is_file()
    assert "beta" in proc.stdout and "eta" in proc.stdout  # the printed table
    # Without the manifest too (theory columns then unknown): still a table from fits.csv.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "fits.csv", bare / "fits.csv")
    res = make_report(bare, n_boot=50)
    assert (bare / "slopes.csv").is_file() and res["terminal"]


def test_multistart_keeps_the_best_start(base_toml, tmp_path):
    """Truth-free multi-start keeps the best of its starts. The tiny model (d = 2, K = 2, logit
    scale 1, n = 300) is multimodal: from a lane's 4 starts Newton converges to different local
    maxima (measured: in every lane the worst start ends 0.45 to 5.5 log-likelihood units below
    the best; the best is start 1 in lanes 0-2 and start 0 (tied with 2) in lane 3), so keeping
    the first, the last or the worst start fails. Every start is refitted here on its own,
    outside the engine, with the same solver and options: the lane's data (`moejax.mix.sample`
    of its data key, the engine's keyed blocks) and its starts (`random_inits` of its init key).
    The sweep's fit must be the best of them: log-likelihood to 1e-9 relative and the errors to
    1e-6 (the engine sums the objective block by block; observed ~1e-15)."""
    cfg = load(base_toml, {"init.mode": "multistart", "init.n_starts": 4, "sizes.list": [300]})
    man = run_sweep(cfg, tmp_path / "ms", progress=False)
    assert man["config"]["init"]["n_starts"] == 4
    _, rows = read_fits(tmp_path / "ms" / "fits.csv")
    assert len(rows) == BASE_REPS
    prob = build_problem(cfg)
    spec, e, ini = prob.spec, cfg["estimator"], cfg["init"]
    opts = {k: e[k] for k in ("method", "solver", "max_iter", "tol", "inner_max_iter")}
    winners = []
    for row in rows:
        n, r = int(row["n"]), int(row["replicate"])
        keys = lane_keys(jnp.uint32(cfg["seed"]), jnp.int32(n), jnp.int32(r))
        tp = prob.truth.at(n)
        X, y = sample(keys.data, spec, tp, n, cfg["model"]["radius"])
        starts = random_inits(keys.init, spec, ini["n_starts"], prob.bounds, ini["start_scale"])
        singles = [
            fit(spec, X, y, jax.tree.map(lambda a, s=s: a[s], starts), bounds=prob.bounds, **opts)
            for s in range(ini["n_starts"])
        ]
        lls = np.array([float(f.loglik) for f in singles])
        assert all(int(f.status) == 0 for f in singles), lls  # every start converged ...
        assert lls.max() - lls.min() > 0.3, lls  # ... and not all to the same maximum
        best = int(np.argmax(lls))
        winners.append(best)
        assert row["status"] == "converged"
        assert float(row["loglik"]) == pytest.approx(lls[best], rel=1e-9), (row, lls)
        q = singles[best].params
        err = voronoi_errors(q.beta, q.tau, q.eta, q.nu, tp.beta, tp.tau, tp.eta, tp.nu)
        for c, v in (("err_beta", err.beta), ("err_exp_tau", err.exp_tau), ("err_eta", err.eta)):
            assert float(row[c]) == pytest.approx(float(v), rel=1e-6), c
    assert len(set(winners)) > 1, winners  # the winner is not one fixed start index

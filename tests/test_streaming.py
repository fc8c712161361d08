"""Any n within run.memory_gb: each chunk's memory is planned before anything is compiled or
written; a lane whose data do not fit the budget is streamed (every pass draws its row blocks
again from their keys) and gives the same data, hence the same fits, as a held lane.

Small sizes with 64-row blocks and budgets of a fraction of a MiB make the planner stream here
what it would stream at n = 1e7 or more with the default 2 GiB.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from moejax.sweep import load, run_sweep
from moejax.sweep.simulate import (
    SweepPlanError,
    build_problem,
    held_lane_bytes,
    lane_data,
    plan,
    streamed_lane_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"replicates": 3, "sizes.list": [1500, 2600], "run.block_rows": 64, "run.chunk": 0}


def _cfg(path: str = "sweeps/heterogeneous.toml", **over):
    return load(ROOT / path, {**SMALL, **over})


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "fits.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_plan_holds_what_fits_and_streams_what_does_not():
    """G lanes per device: held when G lanes' data fit run.memory_gb (G lowered automatically
    to what fits), streamed when not even one lane's data fit, refused when not even one
    streamed lane fits; never a function of the device count."""
    p = build_problem(_cfg())
    N, B = 2624, 64
    held = held_lane_bytes(p, N)
    (cp,) = plan(p, 1, "cpu").classes
    assert (cp.N, cp.streamed, cp.lanes) == (N, False, 4)  # 2 GiB: the default 4 held lanes
    fewer = build_problem(_cfg(**{"run.memory_gb": 3.5 * held / 2**30}))
    assert [(c.lanes, c.streamed) for c in plan(fewer, 1, "cpu").classes] == [(3, False)]
    gpu = plan(p, 1, "gpu").classes[0]
    assert gpu.lanes == min(2048, int(2 * 2**30 // held)) and not gpu.streamed
    small = build_problem(_cfg(**{"run.memory_gb": 0.9 * held / 2**30}))
    (cs,) = plan(small, 1, "cpu").classes
    assert cs.streamed and cs.lanes >= 1
    assert plan(small, 4, "cpu").classes[0].lanes == cs.lanes  # not the device count
    tiny = build_problem(_cfg(**{"run.memory_gb": 0.5 * streamed_lane_bytes(p, B) / 2**30}))
    with pytest.raises(SweepPlanError, match=r"run\.memory_gb"):
        plan(tiny, 1, "cpu")


def test_streamed_blocks_are_the_held_buffers():
    """The keyed data are the same either way: the held buffers are the streamed blocks."""
    p = build_problem(_cfg())
    n, N, B = 1500, 1536, 64
    bufs, source = lane_data(p.spec, p.truth, jnp.uint32(0), jnp.int32(n), jnp.int32(2), N, B, None)
    count = math.ceil(n / B)
    blocks = [source(jnp.int32(b)) for b in range(count)]
    np.testing.assert_array_equal(np.stack([b[0] for b in blocks]), bufs.X1[0, :count])
    np.testing.assert_array_equal(np.stack([b[1][0] for b in blocks]), bufs.y[0, :count])
    np.testing.assert_array_equal(np.stack([b[1][1] for b in blocks]), bufs.lf0[0, :count])
    w = np.concatenate([np.asarray(b[2]) for b in blocks])
    assert w.sum() == n and np.all(w[:n] == 1)
    # and they are the sampler's rows: moejax.mix.sample with the lane's data key
    from moejax.mix import sample
    from moejax.sweep.simulate import lane_keys

    X, y = sample(
        lane_keys(jnp.uint32(0), jnp.int32(n), jnp.int32(2)).data, p.spec, p.truth.at(n), n
    )
    X1 = np.concatenate([np.asarray(b[0]) for b in blocks], axis=1)
    np.testing.assert_array_equal(X1[:-1, :n], np.asarray(X).T)
    np.testing.assert_array_equal(np.concatenate([np.asarray(b[1][0]) for b in blocks])[:n], y)


@pytest.mark.parametrize(
    ("path", "method"),
    [("sweeps/heterogeneous.toml", "direct"), ("sweeps/heterogeneous.toml", "em")],
)
def test_streamed_sweep_equals_held_sweep(tmp_path, path, method):
    """Same fits either way, to rounding: XLA fuses the draws into the objective's block loop
    and rounds the row sums differently (~1e-14 relative, measured). Direct MLE keeps that:
    errors and log-likelihoods agree to 1e-12 relative. EM's inner M-step solves stop at the
    solver's gtol (1e-9), so the rounding can move where each lands within it (measured: bit
    for bit here, 2e-9 relative on the two-adapter design, same iteration counts): 1e-7 there.
    grad_norm, the rounding noise of a converged fit, is compared below gtol."""
    over = {"estimator.method": method, "estimator.max_iter": 200}
    held = run_sweep(_cfg(path, **over), tmp_path / "held", progress=False)
    budget = 0.5 * held_lane_bytes(build_problem(_cfg(path)), 2624) / 2**30
    stream = run_sweep(
        _cfg(path, **over, **{"run.memory_gb": budget}), tmp_path / "stream", progress=False
    )
    assert [b["streamed"] for b in held["buckets"]] == [False]
    assert [b["streamed"] for b in stream["buckets"]] == [True]
    a, b = _rows(tmp_path / "held"), _rows(tmp_path / "stream")
    assert len(a) == len(b) == 6
    for x, y in zip(a, b, strict=True):
        assert x["status"] == y["status"]  # EM may end at max_iter: both paths alike
        assert method == "em" or x["status"] == "converged"
        for c in ("n", "replicate", "n_iter", "inner_steps", "at_bound"):
            assert x[c] == y[c], c
        rel = 1e-12 if method == "direct" else 1e-7
        for c in ("err_beta", "err_exp_tau", "err_eta", "err_density", "err_voronoi", "loglik"):
            assert float(x[c]) == pytest.approx(float(y[c]), rel=rel, nan_ok=True), c
        assert abs(float(x["grad_norm"]) - float(y["grad_norm"])) <= 1e-9


def test_a_sweep_that_cannot_run_is_refused_before_anything_is_written(tmp_path, capsys):
    from moejax.cli import main

    out = tmp_path / "never"
    rc = main(["sweep", str(_toml(tmp_path, 1e-6)), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "run.memory_gb" in err and "\n" not in err
    assert not out.exists()


def _toml(tmp_path: Path, memory_gb: float) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(
        f'extends = "{ROOT / "sweeps/heterogeneous.toml"}"\n'
        f"[sizes]\nlist = [2000]\n[run]\nmemory_gb = {memory_gb}\n"
    )
    return p

"""`moejax.simulate`, `moejax.problem` and `moejax.slopes`: the pure face of the engine.

One tiny model (d = 2, K = 2, sizes [200, 300], 4 replicates, 2 lanes per call) compiled once per
module through JAX's in-process cache of the engine's program shapes; every comparison between
two ways of building the same study is bit for bit (same compiled program)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import moejax as mj
from moejax.sweep import load, run_sweep
from moejax.sweep.config import ConfigError

TOML = """\
name = "tiny"
seed = 1
replicates = 4
[model]
d = 2
K = 2
frozen = "linear"
adapter = "tanh"
scale = 2.0
eta0 = [[1.0, 0.0]]
[truth]
beta = [0.5, 0.5]
tau = 0.2
eta = [[0.0, 1.0]]
[sizes]
list = [200, 300]
[run]
lanes = 2
density_points = 20
"""


@pytest.fixture(scope="module")
def toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    p.write_text(TOML)
    return p


@pytest.fixture(scope="module")
def from_toml(toml: Path) -> dict[str, np.ndarray]:
    return mj.simulate(toml, progress=False)


def test_shapes_and_columns(from_toml) -> None:
    from moejax.sweep.store import FIT_COLUMNS

    for c in FIT_COLUMNS:
        assert from_toml[c].shape == (2, 4), c
    np.testing.assert_array_equal(from_toml["n"], [[200] * 4, [300] * 4])
    np.testing.assert_array_equal(from_toml["replicate"], [list(range(4))] * 2)
    assert from_toml["converged"].all() and (from_toml["status"] == "converged").all()
    assert np.isfinite(from_toml["err_eta"]).all() and (from_toml["err_eta"] > 0).all()


def test_problem_built_in_python_equals_the_config(toml, from_toml) -> None:
    """The same study as a Python problem (face spec and truth) gives the same fits, bit for
    bit: build_problem(config) and problem(...) describe one compiled program."""
    spec = mj.ModelSpec(d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]], scale=2.0)
    truth = mj.heterogeneous_truth(spec, beta=[0.5, 0.5], tau=0.2, eta=[[0.0, 1.0]])
    prob = mj.problem(
        spec, truth, sizes=[300, 200], replicates=4, seed=1, run={"lanes": 2, "density_points": 20}
    )
    got = mj.simulate(prob, progress=False)
    assert got["problem"] is prob and from_toml["problem"].regime == "heterogeneous"
    for c, v in _results(from_toml).items():  # the kept evidence too, leaf by leaf
        for a, b in zip(_leaves(got[c]), _leaves(v), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=c)


def _results(out):
    """simulate's arrays and kept evidence, without its ``problem``."""
    return {c: v for c, v in out.items() if c != "problem"}


def _leaves(v):
    """An array, or the leaves of a MixParams (the kept evidence)."""
    return list(v) if isinstance(v, tuple) else [v]


def test_overrides_select_the_same_lanes(toml, from_toml) -> None:
    """sizes / replicates / seed override the config; a lane's fit depends on (seed, n, r)
    only, so a subset of replicates is the same subset of the arrays."""
    got = mj.simulate(toml, sizes=[300], replicates=2, progress=False)
    assert got["problem"].cfg["sizes"]["list"] == [300] and got["problem"].cfg["replicates"] == 2
    for c, v in _results(from_toml).items():
        for a, b in zip(_leaves(got[c]), _leaves(v), strict=True):
            np.testing.assert_array_equal(a, b[1:] if c == "truth" else b[1:, :2], err_msg=c)
    other = mj.simulate(toml, sizes=[300], replicates=2, seed=2, progress=False)
    assert not np.array_equal(other["err_eta"], got["err_eta"])


def test_slopes_of_arrays_equal_slopes_of_the_run(toml, from_toml, tmp_path) -> None:
    """moejax.slopes on simulate's arrays is the slope table of the sweep's run directory."""
    run_sweep(load(toml), tmp_path / "run", progress=False)
    a = mj.slopes(from_toml, n_boot=100, regime="heterogeneous", gamma=None)
    b = mj.slopes(tmp_path / "run", n_boot=100)
    assert [r["parameter"] for r in a] == [r["parameter"] for r in b]
    assert {r["parameter"] for r in a} >= {"beta", "exp_tau", "eta", "density"}
    for x, y in zip(a, b, strict=True):
        for k in ("slope", "ci_low", "ci_high", "theory", "n_fits", "n_failed"):
            assert x[k] == pytest.approx(y[k], nan_ok=True), k
        assert x["theory"] == -0.5 and x["n_fits"] == 8
    # a fits.csv path works too, and an error column that does not exist is refused
    assert mj.slopes(tmp_path / "run" / "fits.csv", n_boot=0)[0]["ci_low"] != 0
    with pytest.raises(ValueError, match="fits"):
        mj.slopes({"err_eta": np.ones(3)})


def _tiny_spec_truth(gamma: float | None = None):
    spec = mj.ModelSpec(d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]], scale=2.0)
    if gamma is None:
        return spec, mj.heterogeneous_truth(spec, beta=[0.5, 0.5], tau=0.2, eta=[[0.0, 1.0]])
    hom = mj.ModelSpec(d=2, K=2, frozen="tanh", adapter="tanh", eta0=[[1.0, 0.0]], scale=2.0)
    truth = mj.homogeneous_truth(hom, beta=[0.5, 0.5], tau=0.2, delta=[[0.0, 1.0]], gamma=gamma)
    return hom, truth


def test_slopes_read_regime_gamma_and_fitting_from_simulate(from_toml) -> None:
    """simulate's output carries its problem: slopes' theory columns need no regime= or gamma=
    (before: NaN), and an over-fitted problem gets the report's over-fitted exponents (before:
    the heterogeneous -0.5 where the CLI report says -0.25)."""
    rows = mj.slopes(from_toml, n_boot=0, aggregates=("log_median",))
    assert {r["parameter"]: r["theory"] for r in rows}["beta"] == -0.5
    assert all(r["theory"] == -0.5 for r in rows)
    # a homogeneous problem (gamma = 0.125): exp_tau -1/2 + 2 gamma, beta and eta -1/2 + gamma
    spec, truth = _tiny_spec_truth(gamma=0.125)
    hom = mj.problem(spec, truth, sizes=[200, 300])
    th = {
        r["parameter"]: (r["theory"], r["theory_pointwise"])
        for r in mj.slopes({**from_toml, "problem": hom}, n_boot=0, aggregates=("log_median",))
    }
    assert th["exp_tau"] == (-0.25, -0.375) and th["beta"] == (-0.375, -0.375)
    assert th["eta"] == (-0.375, -0.5) and th["density"] == (-0.5, -0.5)
    # over-fitted: m_hat = 2 adapters for m* = 1 (docs/theory.md section 5)
    spec, truth = _tiny_spec_truth()
    over = mj.problem(spec, truth, sizes=[200, 300], fitted_adapters=2)
    th = {
        r["parameter"]: r["theory"]
        for r in mj.slopes({**from_toml, "problem": over}, n_boot=0, aggregates=("log_median",))
    }
    assert th["beta"] == th["eta"] == -0.25 and th["exp_tau"] == th["density"] == -0.5
    # an explicit regime still wins; without a problem nothing is known: theory NaN
    rows = mj.slopes({**from_toml, "problem": over}, n_boot=0, regime="heterogeneous")
    assert {r["theory"] for r in rows if r["parameter"] == "beta"} == {-0.25}
    plain = {k: v for k, v in from_toml.items() if k != "problem"}
    assert all(np.isnan(r["theory"]) for r in mj.slopes(plain, n_boot=0))


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"regime": "hetero"}, "regime"),
        ({"regime": "homogenous"}, "regime"),
        ({"n_boot": -1}, "n_boot"),
        ({"n_boot": 2.5}, "n_boot"),
        ({"n_boot": True}, "n_boot"),
        ({"gamma": -0.1}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"ci": 1.5}, "ci"),
        ({"seed": -1}, "seed"),
        ({"aggregates": ("median",)}, "aggregates"),
    ],
)
def test_slopes_refuse_bad_options_naming_the_argument(from_toml, kwargs, arg) -> None:
    """(before: regime="hetero" and n_boot = -1 gave NaNs, no error)"""
    with pytest.raises(ValueError) as exc:
        mj.slopes(from_toml, **kwargs)
    msg = str(exc.value)
    assert msg.startswith(f"{arg}:") and "\n" not in msg, msg


def test_slopes_refuse_a_homogeneous_regime_without_gamma(from_toml) -> None:
    plain = {k: v for k, v in from_toml.items() if k != "problem"}
    with pytest.raises(ValueError, match=r"^gamma: the homogeneous regime needs"):
        mj.slopes(plain, regime="homogeneous", n_boot=0)
    rows = mj.slopes(plain, regime="homogeneous", gamma=0.0, n_boot=0)
    assert all(r["theory"] == -0.5 for r in rows)


def test_bad_problems_are_refused_naming_the_field() -> None:
    spec = mj.ModelSpec(d=2, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0]])
    truth = mj.heterogeneous_truth(spec, beta=[0.5, 0.5], tau=0.2, eta=[[0.0, 1.0]])
    with pytest.raises(ConfigError, match=r"^init\.mode"):
        mj.problem(spec, truth, init={"mode": "nearest"})
    with pytest.raises(ConfigError, match=r"^estimator\.maxiter: unknown key"):
        mj.problem(spec, truth, estimator={"maxiter": 3})
    with pytest.raises(ConfigError, match=r"^sizes"):
        mj.problem(spec, truth, sizes=[2, 300])  # below the 6 free parameters
    with pytest.raises(ConfigError, match=r"^replicates"):
        mj.problem(spec, truth, replicates=0)
    other = mj.ModelSpec(d=3, K=2, frozen="linear", adapter="tanh", eta0=[[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"^truth: does not fit"):
        mj.problem(other, truth)
    with pytest.raises(ValueError, match=r"^config: expected"):
        mj.simulate(42)


def test_use_all_cores_after_the_backend_started_says_how(monkeypatch) -> None:
    import jax

    # (an in-process `moejax.cli.main` of another test may have set a device count in
    # XLA_FLAGS, which use_all_cores then respects and returns: not what is tested here)
    monkeypatch.setenv("XLA_FLAGS", "")
    jax.devices()  # the backend is up (this test module has computed already)
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        mj.use_all_cores(3)


def test_several_host_devices_do_not_deadlock_on_a_larger_model(tmp_path) -> None:
    """d = 8 (25 parameters) on 2 host devices: each device runs its own program (shard_map)
    and the Newton step's eigendecompositions run one matrix at a time on a CPU; before, the
    batched LAPACK kernel of both devices waited on one shared thread pool forever. A
    subprocess (the device count is fixed at start-up) with a timeout."""
    import os
    import subprocess
    import sys

    code = (
        "import moejax as mj, numpy as np\n"
        "spec = mj.ModelSpec(d=8, K=3, frozen='linear', adapter='tanh', eta0=np.eye(2, 8), "
        "scale=4.0)\n"
        "truth = mj.heterogeneous_truth(spec, beta=np.full(8, 8 ** -0.5), tau=0.0, "
        "eta=np.eye(2, 8)[::-1] * 1.5)\n"
        "out = mj.simulate(mj.problem(spec, truth, sizes=[1000], replicates=8, "
        "run={'lanes': 4, 'density_points': 10}), progress=False)\n"
        "import jax; print(len(jax.devices()), int(out['converged'].sum()))\n"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("MOEJAX_HOST_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "8"], proc.stdout

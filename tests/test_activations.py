"""User activations: a JAX function given as a callable or named by ``"package.module:function"``
(the only form a config can hold) is imported and checked once, at spec construction and at
config validation: it must trace under JAX, keep its argument's shape, return float64 and be
elementwise; anything else is refused with one line naming the argument and the function, not
a 54-line traceback inside `fit` (np.sin) or a silent number (jax.nn.softmax)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moejax as mj
from moejax import mix
from moejax.experts import Expert, activation_derivs, check_activation, resolve_activation
from moejax.sweep import ConfigError
from moejax.sweep.config import resolve
from moejax.sweep.grid import expand
from moejax.sweep.simulate import build_problem

SPEC = {"d": 2, "K": 3, "frozen": "linear", "eta0": np.eye(2), "scale": 2.0}


def _one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for s in needles:
        assert s in msg, (s, msg)
    return msg


def _mix_spec(**kw):
    base = {"d": 2, "frozen": "linear", "adapter": "tanh", "eta0": [[1.0, 0.0]]}
    return mix.MixSpec(**{**base, **kw})


# ----------------------------------------------------------------------- refused callables


@pytest.mark.parametrize("make", [mj.ModelSpec, _mix_spec], ids=["ModelSpec", "MixSpec"])
@pytest.mark.parametrize("field", ["adapter", "frozen"])
def test_numpy_function_is_refused_in_one_line(make, field):
    """np.sin used to pass ModelSpec and log_likelihood and die in `fit` with a 54-line
    TracerArrayConversionError; now the spec refuses it, naming the field and the function."""
    kw = {**SPEC, field: np.sin} if make is mj.ModelSpec else {field: np.sin}
    if make is mj.ModelSpec:
        kw.setdefault("adapter", "tanh")
    with pytest.raises(ValueError) as exc:
        make(**kw)
    msg = _one_line(exc, f"{field}: ", "numpy.sin", "not JAX-traceable")
    assert msg.startswith(f"{field}: numpy.sin is not JAX-traceable: TracerArrayConversionError")


@pytest.mark.parametrize(
    "act",
    [
        jax.nn.softmax,
        "jax.nn:softmax",
        lambda z: z - jnp.mean(z),
        jnp.cumsum,
        lambda z: jnp.sin(z) + jnp.sum(z) - jax.lax.stop_gradient(jnp.sum(z)),  # coupled a'
        lambda z: z * z.shape[-1],
    ],
    ids=["softmax", "softmax-string", "centred", "cumsum", "coupled-derivative", "size"],
)
def test_non_elementwise_function_is_refused(act):
    """jax.nn.softmax used to give a number silently (a softmax over the K-1 predictors)."""
    with pytest.raises(ValueError) as exc:
        mj.ModelSpec(**{**SPEC, "adapter": act})
    _one_line(exc, "adapter: ", "is not elementwise")
    if act is jax.nn.softmax:
        assert "softmax" in str(exc.value)


@pytest.mark.parametrize(
    ("act", "needle"),
    [
        (lambda z: z > 0, "must return float64 for float64 input, got bool"),
        (lambda z: jnp.sin(z).astype(jnp.float32), "got float32"),
        (jnp.linalg.norm, "is not elementwise: it maps shape (5,) to ()"),
        (lambda z: (z, z), "is not elementwise: it maps shape (5,) to tuple"),
        ("math:sin", "'math:sin' is not JAX-traceable"),
        (lambda z: jax.pure_callback(np.sin, jax.ShapeDtypeStruct(z.shape, z.dtype), z), "jvp"),
    ],
    ids=["bool", "float32", "norm", "tuple", "math.sin", "no-jvp"],
)
def test_other_bad_functions_are_refused(act, needle):
    with pytest.raises(ValueError) as exc:
        resolve_activation(act, "adapter")
    _one_line(exc, "adapter: ", needle)


# ------------------------------------------------------------------------- import strings


@pytest.mark.parametrize(
    ("path", "needles"),
    [
        ("no_such_pkg_xyz.acts:sin", ["cannot import 'no_such_pkg_xyz.acts'", "ModuleNotFound"]),
        ("jax.numpy:no_such_fn", ["'jax.numpy' has no attribute 'no_such_fn'"]),
        ("jax.numpy:pi", ["'jax.numpy:pi' is not callable (a float)"]),
        ("jax.numpy:", ["'package.module:function'"]),
        (":sin", ["'package.module:function'"]),
        ("a:b:c", ["'package.module:function'"]),
        ("jax.numpy.sin", ["unknown expert", "did you mean 'jax.numpy:sin'"]),
    ],
    ids=["module", "attribute", "not-callable", "no-function", "no-module", "two-colons", "dots"],
)
def test_bad_import_strings_are_refused_in_one_line(path, needles):
    for make in (mj.ModelSpec, _mix_spec):
        kw = {**SPEC, "adapter": path} if make is mj.ModelSpec else {"frozen": path}
        field = "adapter" if make is mj.ModelSpec else "frozen"
        with pytest.raises(ValueError) as exc:
            make(**kw)
        _one_line(exc, f"{field}: ", path if path != "jax.numpy.sin" else "'jax.numpy.sin'")
        _one_line(exc, *needles)


def test_import_string_gives_the_same_model_as_the_callable():
    """ "jax.numpy:sin" is jnp.sin: the same log-likelihood (bit for bit), gradient and row
    derivatives, and it fits; the spec keeps the string, so specs built from it are equal, hash
    alike and compile once."""
    by_name = mj.ModelSpec(**{**SPEC, "adapter": "jax.numpy:sin"})
    by_fn = mj.ModelSpec(**{**SPEC, "adapter": jnp.sin})
    again = mj.ModelSpec(**{**SPEC, "adapter": "jax.numpy:sin"})
    assert by_name == again and hash(by_name) == hash(again)
    assert by_name.adapter.activation == "jax.numpy:sin" and by_name.adapter.name == "jax.numpy:sin"
    assert by_name != by_fn  # another static key (another compile), the same numbers
    assert mj.ModelSpec(**{**SPEC, "adapter": "jax:numpy.sin"}).adapter.activation  # attr path

    truth = mj.Params(beta=[1.0, -0.5], tau=0.2, eta=[[0.8, -0.3], [0.1, 0.9]])
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((300, 2)))
    y = jnp.asarray(rng.integers(0, 3, 300), dtype=jnp.int32)
    value_and_grad = jax.jit(jax.value_and_grad(mj.log_likelihood, argnums=1), static_argnums=0)
    (ll, g), (ll_fn, g_fn) = (value_and_grad(s, truth, X, y) for s in (by_name, by_fn))
    assert float(ll) == float(ll_fn)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_fn), strict=True):
        np.testing.assert_array_equal(a, b)
    before = value_and_grad._cache_size()
    value_and_grad(again, truth, X, y)
    assert value_and_grad._cache_size() == before  # an equal spec: no new compile
    Z = jnp.linspace(-3.0, 3.0, 13).reshape(13, 1)
    for a, b in zip(
        activation_derivs(by_name.adapter, Z), activation_derivs(by_fn.adapter, Z), strict=True
    ):
        np.testing.assert_array_equal(a, b)

    fitted = mj.fit(by_name, X, y, truth)  # where np.sin used to fail, 54 lines long
    assert bool(fitted.converged)
    assert float(fitted.loglik) >= float(ll)


def test_user_callables_still_work_and_are_checked_once():
    """A callable in Python works as before (lambdas, named functions, jax.nn's custom_jvp
    functions), in ModelSpec, MixSpec (regression too) and Expert; a function that passed is
    not probed again."""
    user = lambda z: jnp.sin(z) + 0.5 * z
    for act in (user, jnp.sin, jax.nn.relu, jax.nn.gelu, jax.nn.softplus):
        spec = mj.ModelSpec(**{**SPEC, "adapter": act, "frozen": act})
        assert spec.adapter.activation is act and spec.homogeneous
    reg = _mix_spec(adapter=user, likelihood="gaussian", adapters=2)
    assert reg.adapter.activation is user
    t0 = time.perf_counter()
    for _ in range(20):
        check_activation(user)
    assert time.perf_counter() - t0 < 0.05
    p = mj.Params(beta=[0.5, 0.5], tau=0.0, eta=[[1.0, 0.0], [0.0, 1.0]])
    X = np.random.default_rng(1).standard_normal((20, 2))
    spec = mj.ModelSpec(**{**SPEC, "adapter": user})
    probs = np.asarray(mj.class_probs(spec, p, X))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-13)


def test_first_use_inside_a_users_jit_is_checked_on_concrete_values():
    """An `Expert` built inside a user's jit (no spec checked it first) is probed on concrete
    values all the same: a good function works, a bad one is refused in one line."""
    eta, X = jnp.ones((2, 3)), jnp.ones((4, 3))

    def logits(act):
        return jax.jit(lambda X: Expert(act).logits(eta, X))(X)

    assert logits(lambda z: 2.0 * jnp.sin(z)).shape == (4, 3)
    for bad, needle in ((np.sin, "not JAX-traceable"), (lambda z: z - z.mean(), "elementwise")):
        with pytest.raises(ValueError) as exc:
            logits(bad)
        _one_line(exc, "activation: ", needle)


# ------------------------------------------------------------------------------- configs


def test_config_accepts_an_import_string_and_builds_the_spec():
    raw = {"model": {"d": 2, "K": 2, "adapter": "jax.numpy:sin"}}
    cfg = resolve(raw)
    assert cfg["model"]["adapter"] == "jax.numpy:sin"  # the config keeps the string
    spec = build_problem(cfg).spec
    assert spec.adapter.activation == "jax.numpy:sin"
    assert build_problem(resolve(raw)).spec == spec
    homo = {
        "model": {"d": 2, "K": 2, "adapter": "jax.numpy:sin", "frozen": "jax.numpy:sin"},
        "truth": {"regime": "homogeneous"},
    }
    assert build_problem(resolve(homo)).spec.homogeneous


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("no_such_pkg_xyz:f", ["cannot import"]),
        ("jax.numpy:no_such_fn", ["has no attribute"]),
        ("jax.numpy:pi", ["is not callable"]),
        ("jax.nn:softmax", ["is not elementwise"]),
        ("numpy:sin", ["'numpy:sin' is not JAX-traceable"]),
        ("tanhh", ["unknown value", "did you mean 'tanh'"]),
    ],
)
def test_config_refuses_bad_activation_strings(value, needles):
    for field in ("adapter", "frozen"):
        with pytest.raises(ConfigError) as exc:
            resolve({"model": {"d": 2, "K": 2, field: value}})
        _one_line(exc, f"model.{field}", value, *needles)


def test_grid_names_an_import_string_point():
    points = expand({"model.adapter": ["tanh", "jax.numpy:sin"]})
    assert [n for n, _ in points] == ["adapter-tanh", "adapter-jax.numpy.sin"]
    assert points[1][1] == {"model.adapter": "jax.numpy:sin"}


def test_sweep_cli_runs_with_an_import_string(tmp_path: Path) -> None:
    """`moejax sweep` on a tiny config whose adapter is "jax.numpy:sin"."""
    from moejax.cli import main

    cfg = tmp_path / "sin.toml"
    cfg.write_text(
        'name = "sin"\nreplicates = 2\n[model]\nd = 2\nK = 2\nadapter = "jax.numpy:sin"\n'
        "[sizes]\nlist = [200, 300]\n[run]\ndensity_points = 10\n"
    )
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress", "--no-report"]) == 0
    rows = list(csv.DictReader(open(out / "fits.csv")))
    assert len(rows) == 4
    assert all(np.isfinite(float(r["loglik"])) for r in rows)

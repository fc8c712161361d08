"""Config files: `extends` merges tables and refuses cycles (shipped configs: test_study.py)."""

import pytest

from moejax.sweep import ConfigError, load

# The shipped configs (plain and grid) are checked in tests/test_study.py.


def test_extends_merges_tables(tmp_path):
    (tmp_path / "base.toml").write_text(
        'name = "base"\nreplicates = 7\n[model]\nd = 3\nK = 4\nadapter = "gelu"\n'
    )
    (tmp_path / "child.toml").write_text('extends = "base.toml"\nname = "child"\n[model]\nK = 2\n')
    cfg = load(tmp_path / "child.toml")
    assert (cfg["name"], cfg["replicates"]) == ("child", 7)
    assert (cfg["model"]["d"], cfg["model"]["K"], cfg["model"]["adapter"]) == (3, 2, "gelu")


def test_extends_cycle_and_missing_base(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="extends"):
        load(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "nope.toml"\n')
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "c.toml")


@pytest.mark.parametrize(
    "model",
    [
        {"d": 2},
        {"d": 3, "K": 4, "adapters": 2},
        {"d": 2, "gate": "input_free", "adapters": 3},
        {"d": 2, "likelihood": "gaussian", "eta0": [[1.0, 0.0]], "adapters": 2, "gate": "sigmoid"},
    ],
)
def test_sizes_below_the_free_parameters_are_refused(model):
    """The config's parameter count is the estimator's (spec.n_params); a smaller n is refused
    with one line naming the size and the count, and n = P itself is accepted."""
    from moejax.sweep.config import free_parameters, resolve
    from moejax.sweep.simulate import build_problem

    raw = {"model": model}
    if model.get("likelihood") == "gaussian":
        raw["truth"] = {"eta": [[[0.0, 1.0]]] * 2, "beta": [[1.0, 0.0], [0.0, 1.0]]}
    P = free_parameters(resolve(raw)["model"])
    assert P == build_problem(resolve(raw)).spec.n_params
    resolve({**raw, "sizes": {"list": [P, 1000]}})
    with pytest.raises(ConfigError) as exc:
        resolve({**raw, "sizes": {"list": [P - 1, 1000]}})
    msg = str(exc.value)
    assert f"sizes = {P - 1}" in msg and f"{P} free parameters" in msg and "\n" not in msg

"""Config files: every shipped sweep resolves; `extends` merges tables and refuses cycles."""

from pathlib import Path

import pytest

from moejax.sweep import ConfigError, load

SWEEPS = sorted(Path(__file__).resolve().parents[1].joinpath("sweeps").rglob("*.toml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_sweeps_resolve(path):
    cfg = load(path)
    assert cfg["sizes"]["list"] == sorted(cfg["sizes"]["list"])
    if cfg["truth"]["regime"] == "homogeneous":
        assert cfg["model"]["frozen"] == cfg["model"]["adapter"]


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

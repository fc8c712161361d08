"""Shipped configs by name: `moejax.sweep.config_path` and every reader of a config accept
``"heterogeneous"`` in place of ``sweeps/heterogeneous.toml``, from any working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from moejax.sweep import ConfigError, config_path, load, shipped_configs
from moejax.sweep.grid import load_study, read_raw

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def test_shipped_names_cover_every_toml():
    names = shipped_configs()
    assert names == sorted(
        str(f.relative_to(SWEEPS).with_suffix("")) for f in SWEEPS.rglob("*.toml")
    )
    assert "heterogeneous" in names and "gpu/paper-d8" in names


@pytest.mark.parametrize("name", ["heterogeneous", "heterogeneous.toml"])
def test_name_resolves_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path(name) == SWEEPS / "heterogeneous.toml"
    assert load(name) == load(SWEEPS / "heterogeneous.toml")
    assert load_study("phase").points[0].name == "gamma-0"
    assert "grid" in read_raw("phase")


def test_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heterogeneous.toml").write_text('name = "mine"\n')
    assert config_path("heterogeneous.toml") == Path("heterogeneous.toml")
    assert load("heterogeneous.toml")["name"] == "mine"
    assert load("heterogeneous")["name"] == "heterogeneous"  # no file of that exact name here


def test_unknown_name_is_one_line_listing_the_shipped_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"file not found: nosuch \(nor a shipped config: ") as e:
        load("nosuch")
    assert "\n" not in str(e.value) and "heterogeneous" in str(e.value)
    with pytest.raises(ConfigError, match="file not found"):
        config_path(tmp_path / "absent.toml")


def test_extends_is_not_looked_up_among_shipped_configs(tmp_path):
    # only the named config falls back to sweeps/; a missing `extends` target is an error
    (tmp_path / "mine.toml").write_text('extends = "homogeneous.toml"\n')
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "mine.toml")

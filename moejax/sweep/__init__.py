"""Sweeps: TOML configs, the pure engine (`simulate`), the driver on disk (`run_sweep`), results."""

from moejax.sweep.config import (
    ConfigError,
    ConfigWarning,
    config_hash,
    config_path,
    load,
    log_spaced_sizes,
    resolve,
    shipped_configs,
)
from moejax.sweep.driver import run_sweep
from moejax.sweep.simulate import (
    Engine,
    Problem,
    block_padding,
    build_problem,
    choose_block,
    problem,
    simulate,
)
from moejax.sweep.store import FIT_COLUMNS, StoreError

__all__ = [
    "FIT_COLUMNS",
    "ConfigError",
    "ConfigWarning",
    "Engine",
    "Problem",
    "StoreError",
    "block_padding",
    "build_problem",
    "choose_block",
    "config_hash",
    "config_path",
    "load",
    "log_spaced_sizes",
    "problem",
    "resolve",
    "run_sweep",
    "shipped_configs",
    "simulate",
]

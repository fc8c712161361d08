"""Sweeps: TOML configs, the batched engine, and results on disk."""

from moejax.sweep.config import ConfigError, config_hash, load, log_spaced_sizes, resolve
from moejax.sweep.engine import block_padding, build_problem, choose_block, run_sweep
from moejax.sweep.store import FIT_COLUMNS, StoreError

__all__ = [
    "FIT_COLUMNS",
    "ConfigError",
    "StoreError",
    "block_padding",
    "build_problem",
    "choose_block",
    "config_hash",
    "load",
    "log_spaced_sizes",
    "resolve",
    "run_sweep",
]

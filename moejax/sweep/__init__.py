"""Sweeps: TOML configs, the batched engine, and results on disk."""

from moejax.sweep.config import ConfigError, config_hash, load, log_spaced_sizes, resolve
from moejax.sweep.engine import build_problem, padding_ratio, plan_buckets, run_sweep
from moejax.sweep.store import FIT_COLUMNS, StoreError

__all__ = [
    "FIT_COLUMNS",
    "ConfigError",
    "StoreError",
    "build_problem",
    "config_hash",
    "load",
    "log_spaced_sizes",
    "padding_ratio",
    "plan_buckets",
    "resolve",
    "run_sweep",
]

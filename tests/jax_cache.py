"""A persistent JAX compilation cache for a test module's in-process runs and the CLI processes
it starts (MOEJAX_CACHE_DIR), restored to the previous settings afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import jax
import pytest


@contextlib.contextmanager
def persistent_cache(directory: Path, **env: str) -> Iterator[Path]:
    """Point JAX's compilation cache (and MOEJAX_CACHE_DIR, plus ``env``) at ``directory``."""
    from jax.experimental.compilation_cache import compilation_cache

    old_dir = jax.config.jax_compilation_cache_dir
    old_min = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    mp = pytest.MonkeyPatch()
    mp.setenv("MOEJAX_CACHE_DIR", str(directory))
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        yield directory
    finally:
        mp.undo()
        jax.config.update("jax_compilation_cache_dir", old_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
        compilation_cache.reset_cache()

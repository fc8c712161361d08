"""Covariate designs: how the rows' x are drawn (a static, hashable object).

- ``Design("normal")``: X ~ N(0, I_d) (the default); with ``radius``, conditioned on
  ||x|| <= radius.
- ``Design("uniform", low, high)``: X uniform on the box [low, high]^d.
- ``Design("grid", low, high)``: the fixed design x_i = low + (high - low) i / (n - 1),
  i = 0..n-1 (d = 1; the rate papers' ``linspace(low, high, n)``). It is not random: row i of a
  dataset of n rows depends on i and n only, so a grid dataset is *not* a prefix of a longer one
  (each sample size has its own grid). Its density-error points are uniform on [low, high].

A plain float (or None) where a design is expected means ``Design("normal", radius=that)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

#: The designs, by name (the config's ``model.covariates``).
DESIGNS: tuple[str, ...] = ("normal", "uniform", "grid")


@dataclass(frozen=True)
class Design:
    """A covariate design: ``kind`` (one of DESIGNS), the box [low, high] (uniform, grid) and
    the normal design's truncation ``radius`` (None: none)."""

    kind: str = "normal"
    low: float = 0.0
    high: float = 1.0
    radius: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in DESIGNS:
            raise ValueError(f"covariates: unknown design {self.kind!r}; choose one of {DESIGNS}")
        if self.kind != "normal" and not float(self.low) < float(self.high):
            raise ValueError(f"box: lower {self.low} must be below upper {self.high}")
        if self.radius is not None and (self.kind != "normal" or not self.radius > 0):
            raise ValueError(f"radius: must be > 0 and only with the normal design, got {self}")

    def check_dim(self, d: int) -> None:
        """The grid is one-dimensional: ValueError for d > 1."""
        if self.kind == "grid" and d != 1:
            raise ValueError(f"covariates: the grid design needs d = 1, got d = {d}")

    @property
    def for_points(self) -> Design:
        """The design of points that average over x (density error, adapter weight): the
        grid's limit, uniform on its box; else itself."""
        return Design("uniform", self.low, self.high) if self.kind == "grid" else self


def grid_rows(first: Any, count: int, total: Any, low: float, high: float) -> jax.Array:
    """Rows first .. first + count - 1 of linspace(low, high, total), (count,) (total may be
    traced; total = 1 gives low)."""
    i = jnp.asarray(first) + jnp.arange(count)
    step = (high - low) / jnp.maximum(jnp.asarray(total, jnp.float64) - 1.0, 1.0)
    return low + step * i.astype(jnp.float64)


__all__ = ["DESIGNS", "Design", "grid_rows"]

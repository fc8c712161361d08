"""One data-source type for every estimator: a lane's rows, held in arrays or read block by
block, behind the same three operations (an objective over the rows, rows computed from the
rows, a view of the rows' inputs).

An estimator (`moejax.estimation.estimators`) never asks which kind it has: the array kind sums
its arrays (blockwise over the active blocks when ``blocks`` is given); the blockwise kind reads
block b from ``read(b) -> (X1_b, aux_b, w_b)`` on every pass: the sweep engine's lanes, whose
blocks come from their buffers (held) or are drawn again from their keys (streamed, nothing of
size n kept). Quantities an estimator derives per row (EM's posteriors) are computed once into
an array for the array kind and recomputed block by block for the blockwise kind
(`DataSource.with_rows`), the same operations on the same rows either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from moejax.estimation.objective import Blocks, Objective, linear_predictor_objective, map_rows
from moejax.mix.rowfns import RowFns

#: ``read(b) -> (X1_b (d+1, B), aux_b (pytree, rows last), w_b (B,))``: block b of a lane.
Read = Callable[[Any], tuple[jax.Array, Any, jax.Array]]


class DataSource(NamedTuple):
    """A lane's rows for the estimators.

    Attributes:
      total: () sum of the row weights (objectives are means over it).
      ok: () bool, the data passed the value checks (`moejax.mix.validate.data_ok`).
      blocks: `Blocks` over which passes loop (None: the held arrays at once).
      held: (X1 (d+1, n), aux (pytree of (.., n) arrays), w (n,)) for arrays, else None.
      read: `Read` for rows read block by block on every pass, else None.
    """

    total: jax.Array
    ok: Any
    blocks: Blocks | None
    held: tuple[jax.Array, Any, jax.Array] | None = None
    read: Read | None = None

    @classmethod
    def from_arrays(
        cls, X1: jax.Array, aux: Any, w: jax.Array, total: jax.Array, ok: Any, blocks=None
    ) -> DataSource:
        """Held rows: covariate planes X1 (d+1, n), row inputs aux, weights w (n,)."""
        return cls(total, ok, blocks, held=(X1, aux, w))

    @classmethod
    def blockwise(cls, total: jax.Array, ok: Any, read: Read, blocks: Blocks) -> DataSource:
        """Rows read block by block by ``read`` (``blocks.count`` active blocks)."""
        return cls(total, ok, blocks, read=read)

    def objective(
        self,
        rows: RowFns,
        widths: tuple[int, ...],
        starts: tuple[int, ...],
        fused: str = "auto",
        sq_norm: bool = False,
    ) -> Objective:
        """The mean over the rows of ``rows`` at the linear predictors (`widths`, `starts` in
        X1 = [x, 1], or [||x||^2, x, 1] with ``sq_norm``) of the flat parameter vector
        (`linear_predictor_objective`)."""
        X1, aux, w = self.held if self.held is not None else (None, None, None)
        return linear_predictor_objective(
            rows, X1, aux, w, self.total, widths, self.blocks, starts, self.read, fused, sq_norm
        )

    def with_rows(self, fn: Callable[[jax.Array, Any], jax.Array], tail: tuple[int, ...]):
        """The same rows with aux replaced by (aux, fn(X1, aux)), fn giving (*tail, rows):
        arrays compute it once (blockwise over the active blocks), blockwise rows per block on
        every pass."""
        if self.held is not None:
            X1, aux, w = self.held
            leaves, tree = jax.tree_util.tree_flatten(aux)
            per_row = lambda X1b, *lv: fn(X1b, jax.tree_util.tree_unflatten(tree, lv))
            new = map_rows(per_row, (X1, *leaves), self.blocks, tail)
            return self._replace(held=(X1, (aux, new), w))
        read = self.read

        def read_with(b):
            X1b, auxb, wb = read(b)
            return X1b, (auxb, fn(X1b, auxb)), wb

        return self._replace(read=read_with)

    def map_aux(self, g: Callable[[Any], Any]) -> DataSource:
        """The same rows with aux replaced by g(aux) (a view: no computation over rows)."""
        if self.held is not None:
            X1, aux, w = self.held
            return self._replace(held=(X1, g(aux), w))
        read = self.read

        def read_view(b):
            X1b, auxb, wb = read(b)
            return X1b, g(auxb), wb

        return self._replace(read=read_view)


__all__ = ["DataSource", "Read"]

"""A while-loop whose vmap runs only the lanes that are still going.

``jax.vmap`` of ``lax.while_loop`` runs the body of every lane on every trip until the slowest
lane stops (finished lanes compute and throw the result away): with G lanes a call costs G x
the slowest lane's trips. `lane_while_loop` has the semantics of ``lax.while_loop`` for one
lane; under ``vmap`` each trip gathers the lanes whose ``cond`` still holds into chunks of C
lanes, runs the body on those chunks only (a loop over ceil(active / C) chunks) and scatters
the results back. A finished lane costs nothing more; a trip wastes at most C - 1 padding slots
of its last chunk.

A lane's arithmetic is the body's, on the same values, whichever chunk it lands in, so results
do not depend on C or on the other lanes (tests/test_lanes.py checks them bit for bit against
the lockstep loop).

Besides the final state, the loop returns the *executed* trips: one lane's trip count when run
alone; under vmap each lane's share of the lane-trips the batch executed (chunks x C, padding
included, divided by the batch size), so that summing it over the lanes gives the batch's total
(the engine reports executed over useful trips per run: the executed-to-useful pass ratio).

Closed-over arrays of ``cond`` and ``body`` (a lane's data, its bounds) are made explicit
arguments (the functions are traced once to a jaxpr), so that lanes can be gathered with their
data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

#: Below this many lanes the loop runs in lockstep (one chunk of every lane): a small batch
#: loses more to smaller chunks than to lanes that wait.
LOCKSTEP_BELOW = 128


def lane_chunk(lanes: int, chunk: int = 0) -> int:
    """Lanes per chunk of a batch of ``lanes``: ``chunk`` when > 0 (at most ``lanes``), else
    ``lanes`` below `LOCKSTEP_BELOW` (lockstep) and ``max(64, lanes // 32)`` from it (a trip
    wastes at most 1/32 of the batch)."""
    if chunk > 0:
        return min(chunk, lanes)
    if lanes < LOCKSTEP_BELOW:
        return lanes
    return max(64, lanes // 32)


def _closure_convert(fun: Callable[[Any], Any], example: Any) -> tuple[Callable, list]:
    """(``f(state, *consts)``, consts): ``fun`` with every array it closes over (a lane's
    data, traced or not, integer or float) made an explicit argument. (``jax.closure_convert``
    hoists only float tracers; gathering lanes needs their integer data and keys too.)"""
    leaves, tree = jax.tree_util.tree_flatten(example)
    closed, shape = jax.make_jaxpr(
        lambda *ls: fun(jax.tree_util.tree_unflatten(tree, ls)), return_shape=True
    )(*leaves)
    out_tree = jax.tree_util.tree_structure(shape)

    def converted(state: Any, *consts: Any) -> Any:
        outs = jax.core.eval_jaxpr(closed.jaxpr, consts, *jax.tree_util.tree_leaves(state))
        return jax.tree_util.tree_unflatten(out_tree, outs)

    return converted, list(closed.consts)


def _all_batched(tree: Any) -> Any:
    """Batched flags of a pytree whose every leaf has the lane axis."""
    return jax.tree_util.tree_map(lambda _: True, tree)


def _axes(flags: Any) -> Any:
    """vmap in_axes of a pytree from its batched flags (0 or None per leaf)."""
    return jax.tree_util.tree_map(lambda f: 0 if f else None, flags)


def lane_while_loop(
    cond_fun: Callable[[Any], jax.Array],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    chunk: int = 0,
) -> tuple[Any, jax.Array]:
    """``lax.while_loop(cond_fun, body_fun, init_val)`` and its executed trips (float64 ()).

    Under ``vmap`` only lanes whose ``cond_fun`` holds run the body, in chunks of
    `lane_chunk` (lanes, ``chunk``) lanes; the executed trips of each lane are then its share
    of the batch's lane-trips. ``chunk`` is static."""
    cond_c, cond_consts = _closure_convert(cond_fun, init_val)
    body_c, body_consts = _closure_convert(body_fun, init_val)

    @jax.custom_batching.custom_vmap
    def loop(state, cconsts, bconsts):
        def c(sk):
            return cond_c(sk[0], *cconsts)

        def b(sk):
            return body_c(sk[0], *bconsts), sk[1] + 1

        s, k = jax.lax.while_loop(c, b, (state, jnp.int32(0)))
        return s, k.astype(jnp.float64)

    @loop.def_vmap
    def _loop_vmap(axis_size, in_batched, state, cconsts, bconsts):
        s_b, cc_b, bc_b = in_batched
        G = axis_size
        C = lane_chunk(G, chunk)
        if C >= G:  # lockstep: the plain batched while-loop (every lane until the slowest)
            s, k = jax.vmap(loop.fun, in_axes=(_axes(s_b), _axes(cc_b), _axes(bc_b)))(
                state, cconsts, bconsts
            )
            return (s, jnp.full((G,), jnp.max(k))), (_all_batched(s), True)
        bcast = lambda a, isb: a if isb else jnp.broadcast_to(a, (G, *jnp.shape(a)))
        state = jax.tree_util.tree_map(bcast, state, s_b)
        active_of = jax.vmap(lambda s, cc: cond_c(s, *cc), in_axes=(0, _axes(cc_b)))
        run = jax.vmap(lambda s, bc: body_c(s, *bc), in_axes=(0, _axes(bc_b)))
        slots = -(-G // C) * C  # the lane order padded to whole chunks

        def take(tree, flags, idx):
            return jax.tree_util.tree_map(
                lambda a, f: jnp.take(a, idx, axis=0, mode="clip") if f else a, tree, flags
            )

        def trip(carry):
            s, executed = carry
            act = active_of(s, cconsts)
            n_act = jnp.sum(act, dtype=jnp.int32)
            order = jnp.argsort(~act, stable=True).astype(jnp.int32)  # active lanes first
            order = jnp.concatenate([order, jnp.full((slots - G,), G, jnp.int32)])
            n_chunks = (n_act + C - 1) // C

            def one_chunk(c, s):
                pos = c * C + jnp.arange(C, dtype=jnp.int32)
                idx = jax.lax.dynamic_slice(order, (c * C,), (C,))
                idx = jnp.where(pos < n_act, idx, G)  # padding slots: dropped on the way back
                sc = take(s, _all_batched(s), idx)
                new = run(sc, take(bconsts, bc_b, idx))
                return jax.tree_util.tree_map(lambda a, v: a.at[idx].set(v, mode="drop"), s, new)

            s = jax.lax.fori_loop(0, n_chunks, one_chunk, s)
            return s, executed + n_chunks * C

        def more(carry):
            return jnp.any(active_of(carry[0], cconsts))

        s, executed = jax.lax.while_loop(more, trip, (state, jnp.int32(0)))
        share = jnp.full((G,), executed.astype(jnp.float64) / G)
        return (s, share), (_all_batched(s), True)

    return loop(init_val, cond_consts, body_consts)

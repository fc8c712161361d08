"""The fused GPU pass: row functions and the contraction with the covariates in one kernel.

`moejax.estimation.objective.linear_predictor_objective` computes, per block of rows, the
weighted planes F (value, gradient and packed Hessian of the row function in the linear
predictors, one element per row) and contracts them with the planes of covariate products Q
(x_c x_c') over the rows: M = (w F) Q^T. Under XLA that contraction is a float64 dot, which the
GPU backend does not fuse: both operands are written to memory (at G = 2048 lanes and B = 1024
rows, d = 8: ~170 MB of F and ~750 MB of Q per block step). Here one Pallas kernel (Triton
backend; float64 exp, log, log1p, tanh and dot lower for CUDA) does, per lane and block, on chip
(registers, and shared memory for the dot's operands): load the covariate planes, form the
predictors, evaluate the row function, weight and mask its planes, form the covariate products
and accumulate M with an f64 dot, row chunk after row chunk. Only the lane's block of data is
read and only M ((1 + W + W (W + 1) / 2) x pairs, a few kB) is written.

The row function is the same `RowFns` as the XLA pass (e.g. `moejax.mix.rows`): its jaxpr,
traced on planes of ``chunk`` rows, is re-evaluated *plane by plane* (`planify`): every value
whose last axis is the rows becomes a small NumPy object array of (chunk,) planes, structural
operations (slice, reshape, broadcast, stack, squeeze, transpose) act on those object arrays,
elementwise primitives on the planes, sums over small axes in a fixed order. So the kernel
holds only (chunk,) vectors (Triton wants power-of-two tensors) and the closed forms live in one
place. A row function with anything else (a dot, a reduction over the rows) is refused
(`FusedUnsupported`) and the objective keeps the XLA pass.

Order of summation: per lane, the kernel walks the block's row chunks in order and adds each
chunk's dot to one accumulator; the blocks are added in order by the objective's loop. No
atomics: a lane's result depends on its data and the static (B, chunk) only, never on the
number of lanes in the program or on which lanes share it.

Tested on a CPU only (`tests/test_fused.py`: interpret mode against the XLA pass, and the
lowering for CUDA); compiled for sm_90a without a GPU by `benchmarks/fused_ptx_check.py`;
never run on a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.extend import core as jex_core

#: Rows per chunk of the kernel's inner loop (a power of two, >= 16 for the f64 dot).
CHUNK = 128
#: Triton warps per program.
NUM_WARPS = 4
#: Triton software-pipelining stages. 1: compiled for sm_90a (PTX by the CUDA plugin's Triton,
#: then ptxas; no GPU), d = 8 and W = 6 take 98 kB of shared memory a program with 1 stage and
#: 121 kB with 3 (two programs an SM against one), the same 168 registers, no spills. Chosen
#: on that count alone: never timed on a GPU.
NUM_STAGES = 1


class FusedUnsupported(Exception):
    """The row function (or the layout) cannot run in the fused kernel."""


# --------------------------------------------------------------------------- planify

#: Elementwise primitives the kernel evaluates plane by plane: those the Pallas Triton lowering
#: has a rule for (no erf, lgamma, digamma, round: a row function using them keeps the XLA pass).
_ELEMENTWISE = frozenset(
    """add sub mul div neg max min exp exp2 log log1p expm1 tanh logistic abs sign sqrt rsqrt
    cbrt pow integer_pow square sin cos tan atan2 atan asin acos sinh cosh asinh acosh atanh
    erf_inv ge gt le lt eq ne and or not xor select_n convert_element_type floor ceil is_finite
    nextafter clamp rem""".split()
)


class _V:
    """A value of the row function's jaxpr, split into planes. ``rows``: the value's last axis
    is the rows; ``a`` is then an object array over the leading axes whose elements are (chunk,)
    planes (or scalars: a plane constant along the rows). Otherwise ``a`` is an object array of
    the whole (row-free) value's scalars."""

    __slots__ = ("a", "rows")

    def __init__(self, a: np.ndarray, rows: bool):
        self.a = a
        self.rows = rows


def _obj(shape: tuple[int, ...], items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, it in enumerate(items):
        out[i] = it
    return out.reshape(shape)


def _const(val: Any, chunk: int, dtype: Any = None) -> _V:
    """A literal or a closed-over constant of the jaxpr (as NumPy, of the jaxpr's dtype)."""
    v = np.asarray(val, dtype=dtype)
    if v.ndim and v.shape[-1] == chunk:
        raise FusedUnsupported("a constant as long as the row chunk")
    return _V(_obj(v.shape, [v[i] for i in np.ndindex(v.shape)]), False)


def _is_plane(e: Any) -> bool:
    return getattr(e, "ndim", 0) == 1


def _bind(prim, elems: list, params: dict, chunk: int):
    """prim on planes and scalars: scalars are broadcast to planes when any input is a plane;
    all-constant inputs are folded here (NumPy scalars, never a captured array)."""
    if any(_is_plane(e) for e in elems):
        elems = [e if _is_plane(e) else jnp.broadcast_to(e, (chunk,)) for e in elems]
        return prim.bind(*elems, **params)
    if all(isinstance(e, np.generic | np.ndarray | int | float | bool) for e in elems):
        with jax.ensure_compile_time_eval():
            return np.asarray(prim.bind(*elems, **params))[()]
    return prim.bind(*elems, **params)


def _elementwise(prim, ins: list[_V], shapes: list, out_shape: tuple, params, chunk: int) -> _V:
    """An elementwise primitive, its operands broadcast as lax does (scalars, size-1 axes)."""
    rows = bool(out_shape) and out_shape[-1] == chunk
    lead = out_shape[:-1] if rows else out_shape
    arrs = []
    for v, sh in zip(ins, shapes, strict=True):
        full = (1,) * (len(out_shape) - len(sh)) + tuple(sh)
        if v.rows:
            a = v.a.reshape(full[:-1])
        elif rows:  # a row-free operand: its last axis (size 1) broadcast along the rows
            a = v.a.reshape(full)[..., 0]
        else:
            a = v.a.reshape(full)
        arrs.append(np.broadcast_to(a, lead))
    items = [_bind(prim, [a[i] for a in arrs], params, chunk) for i in np.ndindex(lead)]
    return _V(_obj(lead, items), rows)


def _broadcast(x: _V, in_shape: tuple, shape: tuple, bdims: tuple, chunk: int) -> _V:
    out_rows = bool(shape) and shape[-1] == chunk
    a, in_shape, bdims = x.a, tuple(in_shape), tuple(bdims)
    if x.rows:
        if not out_rows or bdims[-1] != len(shape) - 1:
            raise FusedUnsupported("broadcast moves the rows axis")
        in_shape, bdims = in_shape[:-1], bdims[:-1]
    elif out_rows and bdims and bdims[-1] == len(shape) - 1:  # a size-1 axis onto the rows
        a = a.reshape(in_shape[:-1])
        in_shape, bdims = in_shape[:-1], bdims[:-1]
    lead = shape[:-1] if out_rows else shape
    tmp = [1] * len(lead)
    for i, dd in enumerate(bdims):
        tmp[dd] = in_shape[i]
    return _V(np.broadcast_to(a.reshape(tmp), lead).copy(), out_rows)


def _reduce(prim, x: _V, axes: tuple, in_ndim: int, chunk: int) -> _V:
    if x.rows and in_ndim - 1 in axes:
        raise FusedUnsupported("a reduction over the rows")
    a = np.moveaxis(x.a, axes, tuple(range(len(axes))))
    k = int(np.prod([a.shape[i] for i in range(len(axes))]))
    flat = a.reshape((k, *a.shape[len(axes) :]))
    items = []
    for i in np.ndindex(flat.shape[1:]):
        acc = flat[(0, *i)]
        for j in range(1, k):  # in index order: a fixed order of summation
            acc = _bind(prim, [acc, flat[(j, *i)]], {}, chunk)
        items.append(acc)
    return _V(_obj(flat.shape[1:], items), x.rows)


def _eval(jaxpr, consts: list, args: list[_V], chunk: int) -> list[_V]:
    env: dict = {}

    def read(v):
        if isinstance(v, jex_core.Literal):
            return _const(v.val, chunk, v.aval.dtype)
        return env[v]

    for var, c in zip(jaxpr.constvars, consts, strict=True):
        env[var] = c if isinstance(c, _V) else _const(c, chunk, var.aval.dtype)
    for var, a in zip(jaxpr.invars, args, strict=True):
        env[var] = a
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        in_shapes = [tuple(v.aval.shape) for v in eqn.invars]
        out_shape = tuple(eqn.outvars[0].aval.shape) if eqn.outvars else ()
        name, p = eqn.primitive.name, eqn.params
        if any(
            s and s[-1] == chunk and i.rows is False for s, i in zip(in_shapes, ins, strict=True)
        ):
            raise FusedUnsupported(f"{name}: a row-free operand as long as the row chunk")
        if any(chunk in s[:-1] for s in [*in_shapes, out_shape]):
            raise FusedUnsupported(f"{name}: a small axis as long as the row chunk ({chunk})")
        rows = bool(out_shape) and out_shape[-1] == chunk
        if name in _ELEMENTWISE:
            outs = [_elementwise(eqn.primitive, ins, in_shapes, out_shape, p, chunk)]
        elif name in ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"):
            cj = p["jaxpr"] if "jaxpr" in p else p["call_jaxpr"]
            cj = cj if hasattr(cj, "consts") else jex_core.ClosedJaxpr(cj, ())
            outs = _eval(cj.jaxpr, list(cj.consts), ins, chunk)
        elif name in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
            cj = p["call_jaxpr"] if "call_jaxpr" in p else p["fun_jaxpr"]
            outs = _eval(cj.jaxpr, list(cj.consts), ins, chunk)
        elif name == "squeeze":
            (x,) = ins
            dims = tuple(d % len(in_shapes[0]) for d in p["dimensions"])
            if x.rows and len(in_shapes[0]) - 1 in dims:
                raise FusedUnsupported("squeeze of the rows axis")
            outs = [_V(x.a.reshape(out_shape[:-1] if rows else out_shape), rows)]
        elif name == "reshape":
            (x,) = ins
            if p.get("dimensions") is not None or x.rows != rows:
                raise FusedUnsupported("a reshape that mixes the rows with another axis")
            outs = [_V(x.a.reshape(out_shape[:-1] if rows else out_shape), rows)]
        elif name == "broadcast_in_dim":
            (x,) = ins
            outs = [_broadcast(x, in_shapes[0], out_shape, p["broadcast_dimensions"], chunk)]
        elif name == "slice":
            (x,) = ins
            st, lim = p["start_indices"], p["limit_indices"]
            strides = p["strides"] or (1,) * len(st)
            sl = tuple(slice(s, e, k) for s, e, k in zip(st, lim, strides, strict=True))
            if x.rows:
                if (st[-1], lim[-1], strides[-1]) != (0, chunk, 1):
                    raise FusedUnsupported("a slice along the rows")
                sl = sl[:-1]
            outs = [_V(x.a[sl].copy(), x.rows)]
        elif name in ("concatenate", "stack"):
            axis = p["dimension"] if name == "concatenate" else p["axis"]
            nd = len(out_shape)
            if rows and axis >= nd - 1:
                raise FusedUnsupported(f"{name} along the rows")
            if any(i.rows != rows for i in ins):
                raise FusedUnsupported(f"{name} of rows and row-free values")
            fn = np.concatenate if name == "concatenate" else np.stack
            outs = [_V(fn([i.a for i in ins], axis=axis), rows)]
        elif name == "transpose":
            (x,) = ins
            perm = tuple(p["permutation"])
            if x.rows:
                if perm[-1] != len(perm) - 1:
                    raise FusedUnsupported("a transpose of the rows axis")
                perm = perm[:-1]
            outs = [_V(np.transpose(x.a, perm).copy(), x.rows)]
        elif name in ("reduce_sum", "reduce_max", "reduce_min"):
            (x,) = ins
            prim = {"reduce_sum": lax.add_p, "reduce_max": lax.max_p, "reduce_min": lax.min_p}
            outs = [_reduce(prim[name], x, tuple(p["axes"]), len(in_shapes[0]), chunk)]
        else:
            raise FusedUnsupported(f"primitive {name!r} in the row function")
        for var, o in zip(eqn.outvars, outs, strict=True):
            sh = tuple(var.aval.shape)
            want = sh[:-1] if (sh and sh[-1] == chunk) else sh
            if o.a.shape != want or o.rows != (sh != want):  # (a bug here: refuse, never guess)
                raise FusedUnsupported(f"{name}: planes {o.a.shape} for a value of shape {sh}")
            env[var] = o
    return [read(v) for v in jaxpr.outvars]


def planify(fn: Callable, chunk: int, *specs: Any) -> Callable:
    """``fn`` (rows-last arrays -> pytree of rows-last arrays) as a function of planes:
    ``planes_fn(*objarrays) -> list of (chunk,) planes`` (every output leaf's planes in C order).
    ``specs``: the argument pytrees as ShapeDtypeStructs of rows-last arrays with ``chunk``
    rows; each argument leaf is given as an object array of its planes (leading shape)."""
    closed = jax.make_jaxpr(fn)(*specs)
    leaves_spec = jax.tree_util.tree_leaves(specs)
    for s in leaves_spec:
        if not s.shape or s.shape[-1] != chunk:
            raise FusedUnsupported(f"an argument of shape {s.shape} without the rows last")

    def planes_fn(*leaves: np.ndarray) -> list:
        args = [_V(a, True) for a in leaves]
        outs = _eval(closed.jaxpr, list(closed.consts), args, chunk)
        planes = []
        for o in outs:
            if not o.rows:
                raise FusedUnsupported("an output without the rows axis")
            planes.extend(o.a.reshape(-1).tolist())
        return planes

    # One abstract evaluation, so that an unsupported primitive fails here, not in a kernel.
    def dry(*vecs):
        objs = []
        for s, v in zip(leaves_spec, vecs, strict=True):
            objs.append(_obj(s.shape[:-1], [v[i] for i in np.ndindex(s.shape[:-1])]))
        return planes_fn(*objs)

    jax.eval_shape(dry, *leaves_spec)
    return planes_fn


# --------------------------------------------------------------------------- the kernel


def _join_width(n: int, minimum: int) -> int:
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def _join_order(n: int, minimum: int) -> list[int]:
    """The plane each column of `_join`'s tile holds (-1: a zero plane)."""
    order = [[i] if i < n else [-1] for i in range(_join_width(n, minimum))]
    while len(order) > 1:
        order = [
            [x for p in zip(a, b, strict=True) for x in p]
            for a, b in zip(order[::2], order[1::2], strict=True)
        ]
    return order[0]


def _join(planes: list, chunk: int, minimum: int) -> jax.Array:
    """Planes (chunk,) -> a (chunk, k) tile, k the next power of two >= len(planes) (and >=
    ``minimum``), by a tree of two-way stacks along a new last axis (Triton's join; a general
    stack or concatenate does not lower); column order `_join_order`."""
    k = _join_width(len(planes), minimum)
    cur = [jnp.broadcast_to(jnp.asarray(p, jnp.float64), (chunk,)) for p in planes]
    cur += [jnp.zeros((chunk,), jnp.float64)] * (k - len(planes))
    while len(cur) > 1:
        cur = [
            jnp.stack([a, b], axis=-1).reshape(chunk, -1)
            for a, b in zip(cur[::2], cur[1::2], strict=True)
        ]
    return cur[0]


def _pow2_divisor(B: int, cap: int) -> int:
    c = 1
    while c * 2 <= cap and B % (c * 2) == 0:
        c *= 2
    return c


def make_fused_contrib(
    rows_fn: Callable,
    order: int,
    *,
    m: int,
    C: int,
    ones: int,
    rows_of: np.ndarray,
    cols_of: np.ndarray,
    flat_of: np.ndarray,
    pairs: tuple[tuple[int, int], ...],
    interpret: bool = False,
    chunk: int = CHUNK,
) -> Callable:
    """``contrib(Xb (C, B), auxb, wb (B,), x (P,), total ()) -> M (Fq, nq)``: the fused
    kernel's block sums, the same matrix as the XLA pass's ``contrib`` for ``order`` 1 or 2
    (``rows_fn``: the row function's value_grad or value_grad_hess). The arguments are one
    lane's; vmap adds the lanes to the kernel's grid. The layout tables are those of
    `linear_predictor_objective` (coefficient j, column c of each entry of x)."""
    if order not in (1, 2):
        raise ValueError(f"order: the fused kernel computes order 1 or 2, not {order}")
    nq = len(pairs)
    coef_at: dict[tuple[int, int], int] = {
        (int(j), int(c)): int(f) for j, c, f in zip(rows_of, cols_of, flat_of, strict=True)
    }
    used = sorted(set(int(c) for c in cols_of))
    need_x = sorted({c for pr in pairs for c in pr if c != ones} | {c for c in used if c != ones})

    @functools.cache
    def build(B: int, aux_sig: tuple):
        ch = _pow2_divisor(B, chunk)  # >= 16: B is a multiple of 16
        spec_U = jax.ShapeDtypeStruct((m, ch), jnp.float64)
        aux_tree, aux_shapes = aux_sig
        aux_specs = jax.tree_util.tree_unflatten(
            aux_tree, [jax.ShapeDtypeStruct((*s[:-1], ch), dt) for s, dt in aux_shapes]
        )
        planes_fn = planify(rows_fn, ch, spec_U, aux_specs)
        n_aux = [int(np.prod(s[:-1], dtype=np.int64)) for s, _ in aux_shapes]
        nF = 1 + m + (m * (m + 1) // 2 if order == 2 else 0)
        n_steps = B // ch

        def kernel(x_ref, tot_ref, w_ref, X_ref, *refs):
            aux_refs, o_ref = refs[:-1], refs[-1]
            total = tot_ref[0]
            xs = [x_ref[k] for k in range(x_ref.shape[0])]

            def step(i, acc):
                start = pl.multiple_of(i * ch, ch)
                sl = pl.ds(start, ch)
                X = {c: X_ref[c, sl] for c in need_x}
                wb = w_ref[sl]
                wmask = wb != 0
                ww = jnp.where(wmask, wb, 0.0) / total
                U = []  # the predictors, as `linear_predictor_objective.predictors_of`
                for j in range(m):
                    u = None
                    for c in used:
                        f = coef_at.get((j, c))
                        if f is None:
                            continue
                        term = xs[f] if c == ones else xs[f] * X[c]
                        u = term if u is None else u + term
                    U.append(jnp.broadcast_to(u, (ch,)))
                aux_planes = []
                for r, (s, _), k in zip(aux_refs, aux_shapes, n_aux, strict=True):
                    aux_planes.append(_obj(tuple(s[:-1]), [r[q, sl] for q in range(k)]))
                planes = planes_fn(_obj((m,), U), *aux_planes)
                if len(planes) != nF:
                    raise FusedUnsupported(f"{len(planes)} planes from the row function, not {nF}")
                F = [jnp.where(wmask, ww * f, 0.0) for f in planes]
                Q = []
                for c, c2 in pairs:
                    a = None if c == ones else X[c]
                    q = a if c2 == ones else (X[c2] if a is None else a * X[c2])
                    Q.append(jnp.ones((ch,), jnp.float64) if q is None else q)
                dims = (((0,), (0,)), ((), ()))  # F Q^T, contracted over the chunk's rows
                FT, QT = _join(F, ch, 16), _join(Q, ch, 16)
                return acc + jax.lax.dot_general(FT, QT, dims, preferred_element_type=jnp.float64)

            acc0 = jnp.zeros(o_ref.shape, jnp.float64)
            o_ref[...] = jax.lax.fori_loop(0, n_steps, step, acc0)

        orderF, orderQ = _join_order(nF, 16), _join_order(nq, 16)
        out_shape = jax.ShapeDtypeStruct((len(orderF), len(orderQ)), jnp.float64)
        kw: dict[str, Any] = {"interpret": True} if interpret else {}
        if not interpret:
            from jax.experimental.pallas import triton as plgpu

            kw["compiler_params"] = plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=NUM_STAGES)
        call = pl.pallas_call(kernel, out_shape=out_shape, name="moejax_fused_pass", **kw)
        rowF = np.argsort(np.where(np.asarray(orderF) < 0, 1 << 30, orderF))[:nF]
        colQ = np.argsort(np.where(np.asarray(orderQ) < 0, 1 << 30, orderQ))[:nq]
        return call, rowF, colQ, n_aux

    def contrib(Xb, auxb, wb, x, total):
        pad = -Xb.shape[-1] % 16  # rows of weight 0 up to a multiple of 16 (rarely needed)
        if pad:
            widths = lambda a: [(0, 0)] * (a.ndim - 1) + [(0, pad)]
            Xb, wb = jnp.pad(Xb, widths(Xb)), jnp.pad(wb, widths(wb))
            auxb = jax.tree_util.tree_map(lambda a: jnp.pad(a, widths(a)), auxb)
        leaves, tree = jax.tree_util.tree_flatten(auxb)
        sig = (tree, tuple((tuple(a.shape), a.dtype) for a in leaves))
        call, rowF, colQ, n_aux = build(int(Xb.shape[-1]), sig)
        B = Xb.shape[-1]
        aux2 = [jnp.reshape(a, (k, B)) for a, k in zip(leaves, n_aux, strict=True)]
        tot = jnp.reshape(jnp.asarray(total, jnp.float64), (1,))
        out = call(x, tot, wb, Xb, *aux2)
        return out[rowF][:, colQ]

    def check(Xb, auxb) -> None:
        """Raise `FusedUnsupported` when the kernel cannot take this block (shapes only)."""
        leaves, tree = jax.tree_util.tree_flatten(auxb)
        B = Xb.shape[-1] + (-Xb.shape[-1] % 16)
        shapes = tuple(((*a.shape[:-1], B), a.dtype) for a in leaves)
        build(B, (tree, shapes))

    contrib.check = check
    return contrib

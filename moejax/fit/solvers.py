"""Box-constrained minimisers behind one small interface.

A solver is a static, hashable object with a method

    minimize(fun, x0, lower, upper) -> SolveResult

where ``fun`` is an `Objective` (value, gradient, Hessian; see `moejax.fit.objective`) or any
function mapping a flat float64 vector (P,) to a scalar (derivatives then come from autodiff), ``x0`` (P,) is the start and ``lower``,
``upper`` (P,) are box bounds. Every solver is a pure function of its inputs, jit- and
vmap-compatible, caps its iterations and reports its own step count, convergence and status, so
that lanes of a vmapped batch each say how they ended.

- `ProjectedNewton` (maintained, default): projected Newton (Bertsekas 1982) with the exact
  Hessian from `jax.hessian`, eigenvalue-modified to stay a descent direction, and an Armijo
  backtracking search along the projection arc. Bounds are honoured exactly; an estimate that
  ends on a bound sits exactly on it.
- `OptaxLBFGS` (maintained): optax L-BFGS with zoom line search on the unconstrained variable u,
  with x = lower + (upper - lower) * sigmoid(u).
- `JaxoptBFGS` (jaxopt, unmaintained, kept for the user's card): jaxopt BFGS on the same
  reparametrisation. Always run with jaxopt's defaults ``implicit_diff=True`` and ``jit="auto"``:
  with either turned off jaxopt unrolls every iteration for every vmapped lane.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.fit.objective import Objective, as_objective

ObjectiveLike = Objective | Callable[[jax.Array], jax.Array]

# Status codes carried per lane (also used by the estimators).
CONVERGED = 0
MAX_ITER = 1
NONFINITE = 2
STATUS_NAMES = ("converged", "max_iter", "nonfinite")


class SolveResult(NamedTuple):
    """Outcome of one box-constrained minimisation. Shapes: x (P,), others ()."""

    x: jax.Array
    value: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array


def projected_grad_norm(x: jax.Array, g: jax.Array, lower: jax.Array,
                        upper: jax.Array) -> jax.Array:
    """inf-norm of x - clip(x - g): zero exactly at a KKT point of the box problem."""
    return jnp.max(jnp.abs(x - jnp.clip(x - g, lower, upper)))


def _finish(x, f, g, it, lower, upper, gtol, ok_flag) -> SolveResult:
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(x))
    pg = projected_grad_norm(x, g, lower, upper)
    converged = finite & (ok_flag | (pg <= gtol))
    status = jnp.where(~finite, NONFINITE, jnp.where(converged, CONVERGED, MAX_ITER))
    return SolveResult(x, f, it, converged, status.astype(jnp.int32))


@dataclass(frozen=True)
class ProjectedNewton:
    """Projected Newton with exact Hessian and Armijo backtracking.

    Attributes:
      max_iter: iteration cap.
      gtol: stop when the projected gradient inf-norm falls below it.
      ftol: also stop when a step lowers f by less than ftol * (1 + |f|) and the Newton
        decrement is that small too (the optimum is resolved to rounding).
      max_backtrack: cap on step halvings per iteration.
    """

    max_iter: int = 50
    gtol: float = 1e-9
    ftol: float = 1e-15
    max_backtrack: int = 30
    name: str = "newton"

    def minimize(self, fun: ObjectiveLike, x0: jax.Array, lower: jax.Array,
                 upper: jax.Array) -> SolveResult:
        obj = as_objective(fun)
        value = obj.value
        x0 = jnp.clip(x0, lower, upper)
        f0, g0, H0 = obj.value_grad_hess(x0)

        def cond(c):
            x, f, g, H, it, done = c
            return (~done) & (it < self.max_iter)

        def body(c):
            x, f, g, H, it, _ = c
            H = 0.5 * (H + H.T)
            pg = x - jnp.clip(x - g, lower, upper)
            eps = jnp.minimum(1e-6, jnp.max(jnp.abs(pg)))
            active = ((x <= lower + eps) & (g > 0)) | ((x >= upper - eps) & (g < 0))
            free = ~active
            both = free[:, None] & free[None, :]
            Hf = jnp.where(both, H, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
            lam, V = jnp.linalg.eigh(Hf)
            scale = jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
            lam = jnp.maximum(jnp.abs(lam), 1e-10 * scale)
            gf = jnp.where(free, g, 0.0)
            step = -(V @ ((V.T @ gf) / lam))
            step = jnp.where(free, step, -g)
            step = jnp.where(jnp.isfinite(step), step, -g)

            def ls_cond(s):
                t, xn, fn, k = s
                dec = g @ (xn - x)
                ok = jnp.isfinite(fn) & (fn <= f + 1e-4 * dec)
                return (~ok) & (k < self.max_backtrack)

            def ls_body(s):
                t, _, _, k = s
                t = 0.5 * t
                xn = jnp.clip(x + t * step, lower, upper)
                return t, xn, value(xn), k + 1

            x1 = jnp.clip(x + step, lower, upper)
            _, xn, fn, k = jax.lax.while_loop(ls_cond, ls_body, (1.0, x1, value(x1), 0))
            accepted = jnp.isfinite(fn) & (fn <= f)
            xn = jnp.where(accepted, xn, x)
            fn_, gn, Hn = obj.value_grad_hess(xn)
            small = (f - fn_) <= self.ftol * (1.0 + jnp.abs(f))
            decrement = jnp.abs(gf @ jnp.where(free, step, 0.0))
            done = (projected_grad_norm(xn, gn, lower, upper) <= self.gtol) | (
                small & (decrement <= 1e3 * self.ftol * (1.0 + jnp.abs(f)))) | ~accepted
            done = done | ~jnp.isfinite(fn_)
            return xn, fn_, gn, Hn, it + 1, done

        init_done = (projected_grad_norm(x0, g0, lower, upper) <= self.gtol) | ~jnp.isfinite(f0)
        x, f, g, _, it, done = jax.lax.while_loop(
            cond, body, (x0, f0, g0, H0, jnp.int32(0), init_done))
        resolved = done & jnp.isfinite(f)
        return _finish(x, f, g, it, lower, upper, self.gtol, resolved)


def _to_box(u: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    return lower + (upper - lower) * jax.nn.sigmoid(u)


def _from_box(x: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    p = jnp.clip((x - lower) / (upper - lower), 1e-12, 1 - 1e-12)
    return jnp.log(p) - jnp.log1p(-p)


@dataclass(frozen=True)
class OptaxLBFGS:
    """optax L-BFGS (zoom line search) on the sigmoid reparametrisation of the box."""

    max_iter: int = 500
    gtol: float = 1e-9
    history: int = 10
    name: str = "optax_lbfgs"

    def minimize(self, fun: ObjectiveLike, x0: jax.Array, lower: jax.Array,
                 upper: jax.Array) -> SolveResult:
        import optax

        obj = as_objective(fun)
        fu = lambda u: obj.value(_to_box(u, lower, upper))
        opt = optax.lbfgs(memory_size=self.history)
        vg = optax.value_and_grad_from_state(fu)
        u0 = _from_box(x0, lower, upper)

        def grad_x(u, gu):
            # chain rule back to x: dx/du = (upper - lower) s (1 - s)
            s = jax.nn.sigmoid(u)
            return gu / jnp.maximum((upper - lower) * s * (1 - s), 1e-300)

        def cond(c):
            u, st, it, done = c
            return (~done) & (it < self.max_iter)

        def body(c):
            u, st, it, _ = c
            v, gu = vg(u, state=st)
            upd, st = opt.update(gu, st, u, value=v, grad=gu, value_fn=fu)
            u = optax.apply_updates(u, upd)
            gu_new = optax.tree.get(st, "grad")
            x = _to_box(u, lower, upper)
            pg = projected_grad_norm(x, grad_x(u, gu_new), lower, upper)
            done = (jnp.max(jnp.abs(gu_new)) <= self.gtol) | (pg <= self.gtol)
            done = done | ~jnp.isfinite(optax.tree.get(st, "value"))
            return u, st, it + 1, done

        st0 = opt.init(u0)
        u, st, it, done = jax.lax.while_loop(cond, body, (u0, st0, jnp.int32(0), False))
        x = _to_box(u, lower, upper)
        f, g = obj.value_and_grad(x)
        gu = jax.grad(fu)(u)
        ok = done & (jnp.max(jnp.abs(gu)) <= 10 * self.gtol)
        return _finish(x, f, g, it, lower, upper, self.gtol, ok)


@dataclass(frozen=True)
class JaxoptBFGS:
    """jaxopt BFGS on the sigmoid reparametrisation (jaxopt defaults: implicit_diff, jit)."""

    max_iter: int = 500
    gtol: float = 1e-9
    name: str = "jaxopt_bfgs"

    def minimize(self, fun: ObjectiveLike, x0: jax.Array, lower: jax.Array,
                 upper: jax.Array) -> SolveResult:
        import jaxopt

        obj = as_objective(fun)

        def fu(u):
            s = jax.nn.sigmoid(u)
            f, gx = obj.value_and_grad(lower + (upper - lower) * s)
            return f, gx * (upper - lower) * s * (1 - s)

        solver = jaxopt.BFGS(fun=fu, value_and_grad=True, maxiter=self.max_iter, tol=self.gtol)
        u, state = solver.run(_from_box(x0, lower, upper))
        x = _to_box(u, lower, upper)
        f, g = obj.value_and_grad(x)
        ok = state.error <= self.gtol
        return _finish(x, f, g, state.iter_num.astype(jnp.int32), lower, upper, self.gtol, ok)


SOLVERS: dict[str, type] = {
    "newton": ProjectedNewton,
    "optax_lbfgs": OptaxLBFGS,
    "jaxopt_bfgs": JaxoptBFGS,
}


def get_solver(solver: str | ProjectedNewton | OptaxLBFGS | JaxoptBFGS, **kw):
    """A solver object from a name (keyword overrides passed to its constructor) or as given."""
    if isinstance(solver, str):
        try:
            cls = SOLVERS[solver]
        except KeyError:
            raise ValueError(f"solver: unknown solver {solver!r}; choose one of "
                             f"{', '.join(SOLVERS)}") from None
        return cls(**kw)
    if not hasattr(solver, "minimize"):
        raise ValueError(f"solver: expected a name or an object with .minimize, got {solver!r}")
    return solver

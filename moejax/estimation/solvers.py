"""Box-constrained minimisers behind one small interface.

A solver is a static, hashable object with a method

    minimize(fun, x0, lower, upper, max_iter=None) -> SolveResult

where ``fun`` is an `Objective` (value, gradient, Hessian; see `moejax.estimation.objective`) or any
function mapping a flat float64 vector (P,) to a scalar (derivatives then come from autodiff),
``x0`` (P,) is the start and ``lower``, ``upper`` (P,) are box bounds; ``max_iter``, when
given, overrides the object's cap and may be a traced integer (changing it never recompiles).
Every solver is a pure function of its inputs, jit- and vmap-compatible, caps its iterations
and reports its own step count, convergence and status, so that lanes of a vmapped batch each
say how they ended.

- `ProjectedNewton` (maintained, default): projected Newton (Bertsekas 1982) with the exact
  Hessian from `jax.hessian`, eigenvalue-modified to stay a descent direction, and an Armijo
  backtracking search along the projection arc. Bounds are honoured exactly; an estimate that
  ends on a bound sits exactly on it.
- `OptaxLBFGS` (maintained): optax L-BFGS with zoom line search on the unconstrained variable u,
  with x = lower + (upper - lower) * sigmoid(u). Its verdict is taken in x, not u: converged
  means a box-KKT point (projected gradient below kkt_tol), after snapping coordinates that
  saturate against a bound onto it.
- `JaxoptBFGS` (jaxopt, unmaintained, kept to compare with earlier work): jaxopt BFGS on the same
  reparametrisation. Always run with jaxopt's defaults ``implicit_diff=True`` and ``jit="auto"``:
  with either turned off jaxopt unrolls every iteration for every vmapped lane.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moejax.estimation.lanes import lane_while_loop
from moejax.estimation.objective import Objective, as_objective

ObjectiveLike = Objective | Callable[[jax.Array], jax.Array]

# Status codes carried per lane (also used by the estimators).
CONVERGED = 0
MAX_ITER = 1
NONFINITE = 2
STALLED = 3
BAD_DATA = 4  # set by the estimators: the data failed the checks of moejax.mix.validate
STATUS_NAMES = ("converged", "max_iter", "nonfinite", "stalled", "bad_data")


class SolveResult(NamedTuple):
    """Outcome of one box-constrained minimisation. Shapes: x and grad (P,), hess (P, P) or
    None (the Hessian at x when the solver has it: Newton's, so that the observed information
    costs no extra pass), others (). ``passes`` (int32) and ``executed`` (float64), when the
    solver counts them (Newton): the passes over the data this solve needed (backtracks
    included) and the passes its batch executed for it (`lane_while_loop`: its share of a
    vmapped batch's lane-trips; equal to ``passes`` when run alone)."""

    x: jax.Array
    value: jax.Array
    grad: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array
    hess: jax.Array | None = None
    passes: jax.Array | None = None
    executed: jax.Array | None = None


def projected_grad_norm(
    x: jax.Array, g: jax.Array, lower: jax.Array, upper: jax.Array
) -> jax.Array:
    """inf-norm of x - clip(x - g): zero exactly at a KKT point of the box problem."""
    return jnp.max(jnp.abs(x - jnp.clip(x - g, lower, upper)))


@jax.custom_batching.custom_vmap
def _eigh_one_at_a_time(H: jax.Array) -> tuple[jax.Array, jax.Array]:
    lam, V = jnp.linalg.eigh(H)
    return lam, V


@_eigh_one_at_a_time.def_vmap
def _eigh_one_at_a_time_vmap(axis_size, in_batched, H):
    del axis_size, in_batched
    return jax.lax.map(_eigh_one_at_a_time, H), (True, True)


def symmetric_eigh(H: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(eigenvalues, eigenvectors) of a symmetric H (P, P). On a CPU a vmapped call runs one
    matrix at a time: XLA's batched LAPACK kernel splits a batch over the intra-op thread pool
    and waits for it, which deadlocks when several host devices run their programs on that
    same pool at once (measured: P = 25 on 2 devices, every time). Elsewhere: the batched
    kernel."""
    return jax.lax.platform_dependent(
        H, cpu=_eigh_one_at_a_time, default=lambda H: tuple(jnp.linalg.eigh(H))
    )


def _finish(x, f, g, it, lower, upper, gtol, ok_flag) -> SolveResult:
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(x))
    pg = projected_grad_norm(x, g, lower, upper)
    converged = finite & (ok_flag | (pg <= gtol))
    status = jnp.where(~finite, NONFINITE, jnp.where(converged, CONVERGED, MAX_ITER))
    return SolveResult(x, f, g, it, converged, status.astype(jnp.int32))


@dataclass(frozen=True)
class ProjectedNewton:
    """Projected Newton with exact Hessian and Armijo backtracking.

    One pass over the data per iteration in the common case: value, gradient and Hessian are
    computed together at the trial point, and only a rejected full step costs extra value-only
    passes (backtracking) plus one pass to refresh the derivatives.

    Attributes:
      max_iter: iteration cap.
      gtol: converged when the projected gradient inf-norm falls below it.
      ftol: also converged when a step lowers f by less than ftol * (1 + |f|) and the Newton
        decrement is that small too (the optimum is resolved to rounding).
      max_backtrack: cap on step halvings per iteration. A search that cannot lower f away
        from a stationary point ends the solve with status "stalled".
      lane_chunk: under vmap, lanes per chunk of the loop (`moejax.estimation.lanes`): only
        lanes still iterating run a trip; 0 (default) picks `lane_chunk` of the batch size
        (lockstep below 128 lanes, as a plain vmapped while-loop).
    """

    max_iter: int = 50
    gtol: float = 1e-9
    ftol: float = 1e-15
    max_backtrack: int = 30
    name: str = "newton"
    lane_chunk: int = 0

    def minimize(
        self,
        fun: ObjectiveLike,
        x0: jax.Array,
        lower: jax.Array,
        upper: jax.Array,
        max_iter: jax.Array | int | None = None,
    ) -> SolveResult:
        obj = as_objective(fun)
        cap = self.max_iter if max_iter is None else max_iter
        x0 = jnp.clip(x0, lower, upper)
        P = x0.shape[0]
        dt = x0.dtype

        def newton_step(x, g, H):
            H = 0.5 * (H + H.T)
            pg = x - jnp.clip(x - g, lower, upper)
            eps = jnp.minimum(1e-6, jnp.max(jnp.abs(pg)))
            active = ((x <= lower + eps) & (g > 0)) | ((x >= upper - eps) & (g < 0))
            free = ~active
            Hf = jnp.where(free[:, None] & free[None, :], H, 0.0) + jnp.diag(
                jnp.where(free, 0.0, 1.0)
            )
            lam, V = symmetric_eigh(Hf)
            lam = jnp.abs(lam)
            lam = jnp.maximum(lam, 1e-10 * jnp.maximum(1.0, jnp.max(lam)))
            gf = jnp.where(free, g, 0.0)
            step = jnp.where(free, -(V @ ((V.T @ gf) / lam)), -g)
            step = jnp.where(jnp.isfinite(step), step, -g)
            return step, jnp.abs(gf @ jnp.where(free, step, 0.0))

        # One loop, one evaluation site: every pass evaluates value, gradient and Hessian at the
        # candidate point `xc`. A candidate that passes the Armijo test becomes the iterate and
        # the next Newton candidate is formed; a failing one is halved toward the iterate.
        # (Keeping a single call site keeps the compiled program small.)
        class S(NamedTuple):
            x: jax.Array  # accepted iterate (P,)
            f: jax.Array
            g: jax.Array
            H: jax.Array
            step: jax.Array  # Newton step from x
            dec: jax.Array  # Newton decrement at x
            t: jax.Array  # current step length
            xc: jax.Array  # candidate to evaluate
            it: jax.Array  # accepted Newton iterations
            k: jax.Array  # halvings in the current search
            evals: jax.Array
            done: jax.Array
            ok: jax.Array

        def cond(s):
            return (~s.done) & (s.it < cap)

        def body(s):
            fc, gc, Hc = obj.value_grad_hess(s.xc)
            first = s.evals == 0
            armijo = jnp.isfinite(fc) & (fc <= s.f + 1e-4 * (s.g @ (s.xc - s.x)))
            accept = first | armijo
            x = jnp.where(accept, s.xc, s.x)
            f = jnp.where(accept, fc, s.f)
            g = jnp.where(accept, gc, s.g)
            H = jnp.where(accept, Hc, s.H)
            step, dec = newton_step(x, g, H)
            kkt = projected_grad_norm(x, g, lower, upper) <= self.gtol
            small = (
                (~first)
                & ((s.f - f) <= self.ftol * (1.0 + jnp.abs(s.f)))
                & (s.dec <= 1e3 * self.ftol * (1.0 + jnp.abs(s.f)))
            )
            ok = jnp.isfinite(f) & (kkt | (accept & small))
            stalled = (~accept) & (s.k + 1 >= self.max_backtrack)
            done = ok | stalled | ~jnp.isfinite(f)
            t = jnp.where(accept, 1.0, 0.5 * s.t)
            step = jnp.where(accept, step, s.step)
            dec = jnp.where(accept, dec, s.dec)
            xc = jnp.clip(x + t * step, lower, upper)
            return S(
                x,
                f,
                g,
                H,
                step,
                dec,
                t,
                xc,
                s.it + jnp.where(accept & ~first, 1, 0),
                jnp.where(accept, 0, s.k + 1),
                s.evals + 1,
                done,
                ok,
            )

        inf = jnp.asarray(jnp.inf, dt)
        s0 = S(
            x0,
            inf,
            jnp.zeros(P, dt),
            jnp.eye(P, dtype=dt),
            jnp.zeros(P, dt),
            inf,
            jnp.asarray(1.0, dt),
            x0,
            jnp.int32(0),
            jnp.int32(0),
            jnp.int32(0),
            jnp.asarray(False),
            jnp.asarray(False),
        )
        s, executed = lane_while_loop(cond, body, s0, self.lane_chunk)
        res = _finish(s.x, s.f, s.g, s.it, lower, upper, self.gtol, s.ok)
        stalled = s.done & ~s.ok & jnp.isfinite(s.f)
        status = jnp.where(stalled, STALLED, res.status).astype(jnp.int32)
        return res._replace(
            status=status, hess=0.5 * (s.H + s.H.T), passes=s.evals, executed=executed
        )


def _finish_reparam(
    obj: Objective,
    x: jax.Array,
    it: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    kkt_tol: float,
    max_iter: jax.Array | int,
    snap_rtol: float = 1e-6,
) -> SolveResult:
    """Verdict of a solver that ran on x = lower + (upper - lower) sigmoid(u).

    The gradient in u vanishes as a coordinate's sigmoid saturates, so it says nothing about
    optimality there. Coordinates within snap_rtol of the box width of a bound, whose gradient
    pushes outward, are put exactly on the bound; then the fit is converged only if the
    projected gradient in x is below kkt_tol (a box-KKT point), whatever u's gradient said.
    """
    f, g = obj.value_and_grad(x)
    tol = snap_rtol * (upper - lower)
    snap_lo = (x <= lower + tol) & (g > 0)
    snap_hi = (x >= upper - tol) & (g < 0)
    xs = jnp.where(snap_lo, lower, jnp.where(snap_hi, upper, x))
    fs, gs = obj.value_and_grad(xs)
    better = jnp.isfinite(fs) & (fs <= f)
    x = jnp.where(better, xs, x)
    f = jnp.where(better, fs, f)
    g = jnp.where(better, gs, g)
    res = _finish(x, f, g, it, lower, upper, kkt_tol, jnp.asarray(False))
    # Stopped before the cap without reaching a KKT point: the search stalled.
    stalled = (res.status == MAX_ITER) & (it < max_iter)
    return res._replace(status=jnp.where(stalled, STALLED, res.status).astype(jnp.int32))


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
    kkt_tol: float = 1e-8
    history: int = 10
    name: str = "optax_lbfgs"

    def minimize(
        self,
        fun: ObjectiveLike,
        x0: jax.Array,
        lower: jax.Array,
        upper: jax.Array,
        max_iter: jax.Array | int | None = None,
    ) -> SolveResult:
        import optax

        obj = as_objective(fun)
        cap = self.max_iter if max_iter is None else max_iter
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
            return (~done) & (it < cap)

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
        return _finish_reparam(obj, _to_box(u, lower, upper), it, lower, upper, self.kkt_tol, cap)


@dataclass(frozen=True)
class JaxoptBFGS:
    """jaxopt BFGS on the sigmoid reparametrisation (jaxopt defaults: implicit_diff, jit)."""

    max_iter: int = 500
    gtol: float = 1e-9
    kkt_tol: float = 1e-8
    name: str = "jaxopt_bfgs"

    def minimize(
        self,
        fun: ObjectiveLike,
        x0: jax.Array,
        lower: jax.Array,
        upper: jax.Array,
        max_iter: jax.Array | int | None = None,
    ) -> SolveResult:
        import jaxopt

        obj = as_objective(fun)
        cap = self.max_iter if max_iter is None else max_iter

        def fu(u):
            s = jax.nn.sigmoid(u)
            f, gx = obj.value_and_grad(lower + (upper - lower) * s)
            return f, gx * (upper - lower) * s * (1 - s)

        solver = jaxopt.BFGS(fun=fu, value_and_grad=True, maxiter=cap, tol=self.gtol)
        u, state = solver.run(_from_box(x0, lower, upper))
        return _finish_reparam(
            obj,
            _to_box(u, lower, upper),
            state.iter_num.astype(jnp.int32),
            lower,
            upper,
            self.kkt_tol,
            cap,
        )


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
            raise ValueError(
                f"solver: unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}"
            ) from None
        return cls(**kw)
    if not hasattr(solver, "minimize"):
        raise ValueError(f"solver: expected a name or an object with .minimize, got {solver!r}")
    return solver

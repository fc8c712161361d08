"""Maximum-likelihood estimators for every model of the family: direct MLE, EM with numerical
M-steps (plain, SQUAREM-accelerated, or handing over to Newton), and multi-start.

All minimise the mean negative log-likelihood over the compact parameter set (`Bounds`), with
row weights (weight-0 rows are padding and change nothing). Everything under `fit_data` is pure
and vmap-regular: every loop is a `lax.while_loop` with an explicit cap, and per-lane counts are
returned. The public `fit` is a thin Python wrapper that normalises its arguments before one
jitted call, so that passing a default explicitly, giving ``init`` by keyword, or changing
``tol`` / ``max_iter`` never recompiles (caps and tolerances are traced arrays).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from moejax.estimation.bounds import (
    Bounds,
    at_bound,
    layout,
    lin_map,
    n_gate_params,
    pack,
    unpack,
)
from moejax.estimation.data import DataSource
from moejax.estimation.objective import Blocks, Objective, mapped_objective
from moejax.estimation.solvers import (
    BAD_DATA,
    CONVERGED,
    MAX_ITER,
    NONFINITE,
    STALLED,
    STATUS_NAMES,
    get_solver,
    projected_grad_norm,
)
from moejax.mix.density import as_labels, frozen_logpdf, n_gate_preds
from moejax.mix.emrows import em_row_fns
from moejax.mix.gates import get_gate
from moejax.mix.rows import mixture_row_fns, posteriors, predictor_planes
from moejax.mix.spec import MixParams, MixSpec
from moejax.mix.validate import as_arrays, check_data, data_ok

#: EM variants (``em_accel``; ``estimator.em_accel``): "newton" EM until the relative
#: log-likelihood change falls below ``switch_tol``, then the solver on the full likelihood from
#: there (default); "squarem" SQUAREM (Varadhan & Roland 2008, S3) cycles of three EM maps;
#: "none" plain EM.
EM_ACCELS = ("newton", "squarem", "none")
DEFAULT_EM_ACCEL = "newton"
DEFAULT_SWITCH_TOL = 1e-5  # em_accel "newton": hand over to the solver below this change
DEFAULT_MAX_ITER = 500  # solver iterations (direct) or EM iterations (em)
DEFAULT_INNER_MAX_ITER = 50  # cap on each EM M-step solve


class FitResult(NamedTuple):
    """Per-fit outcome (a pytree; under vmap every leaf gains a leading batch axis).

    Attributes:
      params: the estimate (MixParams; `Params` from the paper-model face `moejax.fit`).
      loglik: () sum_i w_i log p(y_i | x_i) at the estimate.
      converged: () bool.
      status: () int32 code, see `STATUS_NAMES` (0 converged, 1 max_iter, 2 nonfinite,
        3 stalled).
      n_iter: () int32, EM iterations (method "em": E-step + M-step maps, three per SQUAREM
        cycle) or solver iterations (method "direct").
      inner_steps: () int32, total solver iterations: equals n_iter for direct; for EM the
        M-step solves' iterations plus, with em_accel "newton", the iterations of the final
        solve on the full likelihood (the polishing steps).
      at_bound: () bool, some coordinate of the estimate lies on its box bound.
      grad_norm: () projected-gradient inf-norm of the mean negative log-likelihood at the
        estimate (0 at an exact box-KKT point).
      info: (P, P) observed information at the estimate: the negative Hessian of the
        log-likelihood (sum over rows, weights applied) in the flat parameter vector of
        `moejax.estimation.bounds.pack` (log nu for regression experts); standard errors from
        it: `moejax.estimation.information.standard_errors`.
      passes: () int32, passes over the data the fit needed (value, gradient and Hessian;
        backtracks included), or None where the estimator does not count them (EM, solvers
        other than Newton).
      executed: () float64, the passes executed for this fit: its share of its vmapped
        batch's lane-trips (`moejax.estimation.lanes`; equals ``passes`` when fitted alone),
        or None with ``passes``.
    """

    params: Any
    loglik: jax.Array
    converged: jax.Array
    status: jax.Array
    n_iter: jax.Array
    inner_steps: jax.Array
    at_bound: jax.Array
    grad_norm: jax.Array
    info: jax.Array | None = None
    passes: jax.Array | None = None
    executed: jax.Array | None = None


class FitData(NamedTuple):
    """A dataset prepared for the estimators (row-aligned arrays, padding rows masked).

    Attributes:
      X1: (d+1, n) covariates as planes (rows of the data last), the last plane all ones.
      y: (n,) int32 labels (categorical) or float64 responses (regression).
      w: (n,) row weights, 0 for padding.
      total: () sum of the weights (the log-likelihood is normalised by it).
      lf0: (n,) the frozen expert's log-density of each observation (it never changes).
      ok: () bool, the data passed `moejax.mix.validate.data_ok` (finite X, labels in
        0..K-1 or finite responses, weights finite, >= 0 and not all 0); a fit on data that
        did not ends with status "bad_data".
    """

    X1: jax.Array
    y: jax.Array
    w: jax.Array
    total: jax.Array
    lf0: jax.Array
    ok: Any = True


def prepare_data(
    spec: MixSpec, X: jax.Array, y: jax.Array, weights: jax.Array | None = None
) -> FitData:
    """Check shapes and prepare (X (n, d), y (n,), weights (n,)) for `fit_data`. Values are
    checked as traced arrays (``ok``); `fit` checks concrete data before compiling."""
    X, y, weights = as_arrays(X, y, weights)
    spec.check_data(X, y)
    X = jnp.asarray(X, jnp.float64)
    if weights is None:
        w = jnp.ones((X.shape[0],), jnp.float64)
    else:
        w = jnp.asarray(weights, jnp.float64)
        if w.shape != (X.shape[0],):
            raise ValueError(f"weights: expected shape ({X.shape[0]},), got {w.shape}")
    ok = data_ok(spec, X, y, w)
    y = as_labels(spec, y)
    keep = w != 0
    X = jnp.where(keep[:, None], X, 0.0)
    y = jnp.where(keep, y, jnp.zeros((), y.dtype))
    return FitData(
        X1=jnp.concatenate([X.T, jnp.ones((1, X.shape[0]), X.dtype)], axis=0),
        y=y,
        w=w,
        total=jnp.maximum(jnp.sum(jnp.where(keep, w, 0.0)), 1e-300),
        lf0=frozen_logpdf(spec, X, y),
        ok=ok,
    )


def data_source(
    data: FitData | DataSource, blocks: Blocks | None = None, source: Any = None
) -> DataSource:
    """The `DataSource` of a prepared dataset (held: its arrays, summed over ``blocks`` when
    given) or, with ``source`` (``source(b) -> (X1_b, (y_b, lf0_b), w_b)``), of rows streamed
    block by block (only ``data.total`` and ``data.ok`` are read); a DataSource as is."""
    if isinstance(data, DataSource):
        return data
    if source is not None:
        return DataSource.blockwise(data.total, data.ok, source, blocks)
    return DataSource.from_arrays(data.X1, (data.y, data.lf0), data.w, data.total, data.ok, blocks)


def objective(
    spec: MixSpec,
    data: FitData | DataSource,
    blocks: Blocks | None = None,
    source: Any = None,
    fused: str = "auto",
) -> Objective:
    """Mean negative log-likelihood of the flat parameter vector (closed-form row
    derivatives, one pass over the data for value, gradient and Hessian), over the rows of
    `data_source` (held or streamed alike). ``fused``: which pass sums the gradient and
    Hessian (`linear_predictor_objective`; "auto": the fused kernel on CUDA, the XLA pass
    elsewhere)."""
    widths, starts = layout(spec)
    sq = get_gate(spec.gate).sq_norm
    obj = data_source(data, blocks, source).objective(
        mixture_row_fns(spec), widths, starts, fused, sq
    )
    to_lin = lin_map(spec)  # a gate whose predictors are not linear in its parameters
    return obj if to_lin is None else mapped_objective(obj, to_lin)


def fit_result(
    params, total, theta, f, g, lo, hi, converged, status, n_iter, inner, ok=True, hess=None
) -> FitResult:
    """The `FitResult` of a solve that ended at ``theta`` (P,) with mean objective f, gradient
    g and Hessian ``hess`` (P, P; the information is total x hess): data that failed the
    checks (``ok`` False) give status bad_data, NaN/inf anywhere status
    nonfinite, both with converged False; at_bound and the KKT residual are taken on the box
    (lo, hi)."""
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(g))
    status = jnp.where(finite, status, NONFINITE)
    status = jnp.where(ok, status, BAD_DATA).astype(jnp.int32)
    return FitResult(
        params=params,
        loglik=-f * total,
        converged=converged & finite & ok,
        status=status,
        n_iter=jnp.asarray(n_iter).astype(jnp.int32),
        inner_steps=jnp.asarray(inner).astype(jnp.int32),
        at_bound=at_bound(theta, lo, hi),
        grad_norm=projected_grad_norm(theta, g, lo, hi),
        info=None if hess is None else total * hess,
    )


class FitOptions(NamedTuple):
    """What an estimator is told besides the data and the start: the solver (an object),
    ``max_iter`` (the direct solve's cap, or EM's iterations), ``inner_max_iter`` (each EM
    M-step solve's cap), ``tol`` (EM's relative change), ``em_accel`` (static) and
    ``switch_tol``. Caps and tolerances may be traced."""

    solver: Any
    max_iter: Any
    inner_max_iter: Any = None
    tol: Any = 1e-12
    em_accel: str = DEFAULT_EM_ACCEL
    switch_tol: Any = DEFAULT_SWITCH_TOL


class Estimator:
    """An estimator of the family's parameters: ``name`` (`fit`'s ``method``) and
    ``fit(spec, src, theta0, lo, hi, opts, key) -> FitResult`` on a `DataSource` (held or
    streamed: the estimator does not ask which), from the flat start ``theta0`` (P,) on the
    box (lo, hi), with `FitOptions` and an optional key (for estimators that draw; the two
    built in do not). ``solve_cap``: which of `FitOptions`' caps bounds each solver call
    ("max_iter" or "inner_max_iter"). Register a new one in `ESTIMATORS`."""

    name: str = ""
    solve_cap: str = "max_iter"

    def fit(
        self,
        spec: MixSpec,
        src: DataSource,
        theta0: jax.Array,
        lo: jax.Array,
        hi: jax.Array,
        opts: FitOptions,
        key: jax.Array | None = None,
    ) -> FitResult:
        raise NotImplementedError


class DirectMLE(Estimator):
    """The solver on the full log-likelihood (``opts.max_iter`` caps it)."""

    name = "direct"

    def fit(self, spec, src, theta0, lo, hi, opts, key=None) -> FitResult:
        return _fit_direct(spec, src, theta0, lo, hi, opts.solver, opts.max_iter)


class EM(Estimator):
    """EM with numerical M-steps (`_fit_em`; each M-step solve capped by
    ``opts.inner_max_iter``, ``opts.max_iter`` EM iterations, accelerated by
    ``opts.em_accel``)."""

    name = "em"
    solve_cap = "inner_max_iter"

    def fit(self, spec, src, theta0, lo, hi, opts, key=None) -> FitResult:
        return _fit_em(
            spec,
            src,
            theta0,
            lo,
            hi,
            opts.solver,
            opts.max_iter,
            opts.inner_max_iter,
            opts.tol,
            opts.em_accel,
            jnp.asarray(opts.switch_tol, jnp.float64),
        )


def _fit_direct(spec, src, theta0, lo, hi, solver, max_iter) -> FitResult:
    obj = objective(spec, src)
    res = solver.minimize(obj, theta0, lo, hi, max_iter=max_iter)
    # Newton ends with the Hessian at its estimate; other solvers cost one more pass.
    hess = res.hess if res.hess is not None else obj.value_grad_hess(res.x)[2]
    out = fit_result(
        unpack(spec, res.x),
        src.total,
        res.x,
        res.value,
        res.grad,
        lo,
        hi,
        res.converged,
        res.status,
        res.n_iter,
        res.n_iter,
        src.ok,
        hess,
    )
    return out._replace(passes=res.passes, executed=res.executed)


def _fit_em(
    spec: MixSpec,
    src: DataSource,
    theta0: jax.Array,
    lo: jax.Array,
    hi: jax.Array,
    solver: Any,
    max_iter: Any,
    inner_max_iter: Any,
    tol: Any,
    accel: str,
    switch_tol: Any,
) -> FitResult:
    """EM: E-step posteriors r (n, m+1); M-step: the gate problem (a weighted multinomial /
    sigmoid-switch regression with soft targets r) and the experts' problem (each adapter's
    likelihood weighted by its r_j), each solved by ``solver`` warm-started and capped by
    ``inner_max_iter``. The posteriors are rows of the data source (`DataSource.with_rows`):
    held data keep them in an (m+1, n) buffer, streamed data recompute them block by block
    from the E-step's parameters on every M-step pass, so nothing of size n is added.

    ``accel`` (static, one of `EM_ACCELS`) chooses the iteration and the stopping rule:

    - "none": plain EM; stop when the relative change of the log-likelihood between two EM
      iterations falls below ``tol`` (converged), or after ``max_iter`` iterations (max_iter).
    - "squarem": SQUAREM cycles (scheme S3 of Varadhan & Roland 2008): two EM maps
      theta1 = M(theta0), theta2 = M(theta1), r = theta1 - theta0, v = theta2 - 2 theta1 +
      theta0, steplength alpha = min(-|r| / |v|, -1), the extrapolated point theta0 - 2 alpha
      r + alpha^2 v projected into the box (lo, hi), one stabilising EM map from there; when
      that point's log-likelihood is not above theta2's, theta2 is kept (monotone). Stop when
      the relative change over a cycle falls below ``tol``; whole cycles run while they fit
      under ``max_iter`` EM maps.
    - "newton": plain EM until the relative change falls below max(tol, switch_tol) (or
      ``max_iter`` EM iterations), then ``solver`` on the full log-likelihood from the EM point
      (the direct estimator's solve, capped by ``max_iter``); its verdict (a box-KKT point) is
      the fit's, and its iterations are added to inner_steps.

    n_iter counts EM maps (E-step + M-step); inner_steps the solvers' iterations."""
    d, m, C = spec.d, n_gate_preds(spec), spec.components  # gate predictors, components
    sq = get_gate(spec.gate).sq_norm
    to_lin = lin_map(spec)
    full = objective(spec, src)
    widths, starts = layout(spec)
    ng = n_gate_params(spec)
    gate_rows, expert_rows = em_row_fns(spec)

    def m_objectives(theta):
        """The gate's and the experts' M-step objectives at E-step parameters theta."""
        p = unpack(spec, theta)
        post = lambda X1, aux: posteriors(spec, predictor_planes(spec, p, X1[:d]), *aux)
        with_r = src.with_rows(post, (C,))  # rows: ((y, lf0), r)
        gate = with_r.map_aux(lambda a: a[1]).objective(
            gate_rows, widths[:m], starts[:m], "auto", sq
        )
        if to_lin is not None:  # the gate's parameters -> its predictors' coefficients
            lin_gate = lambda t: to_lin(jnp.concatenate([t, theta[ng:]]))[: sum(widths[:m])]
            gate = mapped_objective(gate, lin_gate)
        expert = with_r.map_aux(lambda a: (a[0][0], a[1]))
        return gate, expert.objective(expert_rows, widths[m:], starts[m:], "auto", sq)

    def m_step(theta):
        gate, expert = m_objectives(theta)
        gt0, et0 = theta[:ng], theta[ng:]
        rg = solver.minimize(gate, gt0, lo[:ng], hi[:ng], max_iter=inner_max_iter)
        re = solver.minimize(expert, et0, lo[ng:], hi[ng:], max_iter=inner_max_iter)
        # Generalised EM: keep the old block if its solver did not improve Q.
        gt = jnp.where(jnp.isfinite(rg.value) & (rg.value <= gate.value(gt0)), rg.x, gt0)
        et = jnp.where(jnp.isfinite(re.value) & (re.value <= expert.value(et0)), re.x, et0)
        return jnp.concatenate([gt, et]), rg.n_iter + re.n_iter

    def em_map(theta, f):
        """One EM iteration from theta (mean objective f there): (theta', f', M-step steps).
        A non-finite f' keeps theta (and f)."""
        new, steps = m_step(theta)
        fn = full.value(new)
        ok = jnp.isfinite(fn)
        return jnp.where(ok, new, theta), jnp.where(ok, fn, f), steps

    def rel_change(f, fn):
        return jnp.abs(f - fn) / jnp.maximum(jnp.abs(f), 1e-300)

    def plain(c):
        theta, f, it, inner, _, smax = c
        new, fn, steps = em_map(theta, f)
        done = (rel_change(f, fn) <= em_tol) | ~jnp.isfinite(fn)
        return new, fn, it + 1, inner + steps, done, smax

    def squarem(c):
        """One SQUAREM cycle (Varadhan & Roland 2008, scheme S3, with the adaptive step bound
        of their `SQUAREM` package): two EM maps, alpha = -|r| / |v| clamped to [-smax, -1],
        the extrapolated point projected into the box, one stabilising EM map from there;
        when that point's objective is above the cycle start's, the plain two-map point is
        kept (monotone). smax (from 1) grows 4x when the clamp binds and an extrapolation is
        accepted, and shrinks 4x (not below 1) when one is refused."""
        theta, f, it, inner, _, smax = c
        t1, s1 = m_step(theta)
        t2, s2 = m_step(t1)
        f2 = full.value(t2)
        ok2 = jnp.isfinite(f2)
        r = t1 - theta
        v = t2 - 2.0 * t1 + theta
        nr, nv = jnp.linalg.norm(r), jnp.linalg.norm(v)
        alpha = jnp.where(nv > 0, -nr / jnp.maximum(nv, 1e-300), -1.0)
        alpha = jnp.clip(alpha, -smax, -1.0)
        tp = jnp.clip(theta - 2.0 * alpha * r + alpha**2 * v, lo, hi)
        t3, s3 = m_step(tp)
        f3 = full.value(t3)
        use3 = jnp.isfinite(f3) & (f3 <= f)
        new = jnp.where(use3, t3, jnp.where(ok2, t2, theta))
        fn = jnp.where(use3, f3, jnp.where(ok2, f2, f))
        smax = jnp.where(
            use3, jnp.where(alpha <= -smax, 4.0 * smax, smax), jnp.maximum(1.0, 0.25 * smax)
        )
        done = (rel_change(f, fn) <= em_tol) | ~(ok2 | use3)
        return new, fn, it + 3, inner + s1 + s2 + s3, done, smax

    polish = accel == "newton"
    em_tol = jnp.maximum(tol, switch_tol) if polish else tol
    body = squarem if accel == "squarem" else plain

    per = 3 if accel == "squarem" else 1  # EM maps per loop iteration

    def cond(c):
        theta, f, it, inner, done, _ = c
        return (~done) & (it + per <= max_iter)

    theta0 = jnp.clip(theta0, lo, hi)
    f0 = full.value(theta0)
    c0 = (theta0, f0, jnp.int32(0), jnp.int32(0), ~jnp.isfinite(f0), jnp.ones((), f0.dtype))
    theta, f, it, inner, done, _ = jax.lax.while_loop(cond, body, c0)
    finite = jnp.isfinite(f)
    converged = done & finite
    status = jnp.where(~finite, NONFINITE, jnp.where(converged, CONVERGED, MAX_ITER))
    if polish:
        # the solver on the full log-likelihood from the EM point, capped as a direct fit;
        # its verdict is the fit's
        res = solver.minimize(full, theta, lo, hi, max_iter=max_iter)
        keep = jnp.isfinite(res.value) & (res.value <= f)
        theta = jnp.where(keep, res.x, theta)
        converged = keep & res.converged
        status = jnp.where(keep, res.status, jnp.where(finite, STALLED, NONFINITE))
        inner = inner + res.n_iter
    f, g, H = full.value_grad_hess(theta)
    return fit_result(
        unpack(spec, theta),
        src.total,
        theta,
        f,
        g,
        lo,
        hi,
        converged,
        status,
        it,
        inner,
        src.ok,
        0.5 * (H + H.T),
    )


def fit_data(
    spec: MixSpec,
    data: FitData,
    init: MixParams,
    method: str = "direct",
    solver: Any = "newton",
    bounds: Bounds = Bounds(),
    max_iter: jax.Array | int | None = None,
    tol: jax.Array | float = 1e-12,
    inner_max_iter: jax.Array | int | None = None,
    blocks: Blocks | None = None,
    source: Any = None,
    em_accel: str = DEFAULT_EM_ACCEL,
    switch_tol: jax.Array | float = DEFAULT_SWITCH_TOL,
    key: jax.Array | None = None,
) -> FitResult:
    """`fit` on a prepared dataset or a `DataSource`, optionally summing rows blockwise
    (`Blocks`), so that the work follows the active rows of a long padded buffer, or on data
    streamed block by block from ``source(b) -> (X1_b, (y_b, lf0_b), w_b)`` (then ``data``
    needs only ``total`` and ``ok``, and nothing of size n is held). ``method`` names an
    estimator of `ESTIMATORS`; ``key`` is handed to it (estimators that draw; the built-in
    ones do not). Pure: use it inside your own jit/vmap. ``max_iter``, ``inner_max_iter``,
    ``tol`` and ``switch_tol`` may be traced. Arguments as in `fit`."""
    spec.check_params(init)
    s, max_iter, inner_max_iter = resolve_solver(solver, method, max_iter, inner_max_iter)
    check_em_accel(em_accel)
    lo, hi = Bounds(*bounds).arrays(spec)
    theta0 = jnp.asarray(pack(spec, init), jnp.float64)
    opts = FitOptions(s, max_iter, inner_max_iter, tol, em_accel, switch_tol)
    src = data_source(data, blocks, source)
    return get_estimator(method).fit(spec, src, theta0, lo, hi, opts, key)


def check_em_accel(em_accel: Any) -> None:
    """Refuse an ``em_accel`` outside `EM_ACCELS` (one line naming the argument)."""
    if not isinstance(em_accel, str) or em_accel not in EM_ACCELS:
        raise ValueError(
            f"em_accel: unknown EM variant {em_accel!r}; choose one of {', '.join(EM_ACCELS)}"
        )


def resolve_solver(
    solver: Any, method: str, max_iter: Any, inner_max_iter: Any
) -> tuple[Any, Any, Any]:
    """(solver object, max_iter, inner_max_iter) with the defaults filled in.

    The solver's own ``max_iter`` is the cap of each solve it runs: the whole fit (direct) or
    each M-step (EM). A solver object whose ``max_iter`` disagrees with an explicit
    ``max_iter`` (direct) or ``inner_max_iter`` (EM) is refused rather than silently
    overridden."""
    per_solve = get_estimator(method).solve_cap == "max_iter"  # max_iter caps each solve
    given = not isinstance(solver, str)
    s = get_solver(solver)
    own = getattr(s, "max_iter", None) if given else None
    solve_cap = max_iter if per_solve else inner_max_iter
    arg = "max_iter" if per_solve else "inner_max_iter"
    traced = isinstance(solve_cap, jax.core.Tracer)
    if own is not None and solve_cap is not None and not traced and _concrete(solve_cap) != own:
        raise ValueError(
            f"{arg}: fit({arg}={_concrete(solve_cap)}) disagrees with the solver object's "
            f"max_iter={own}; set one of them"
        )
    default_solve = DEFAULT_MAX_ITER if per_solve else DEFAULT_INNER_MAX_ITER
    if solve_cap is None:
        solve_cap = own if own is not None else default_solve
    if per_solve:
        return s, solve_cap, None
    return s, (DEFAULT_MAX_ITER if max_iter is None else max_iter), solve_cap


def _concrete(v: Any) -> Any:
    if isinstance(v, jax.core.Tracer):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def _static_solver(s: Any) -> Any:
    """The solver with its cap stripped to the class default, so that the compiled fit does
    not depend on it (the cap is passed as a traced argument)."""
    if dataclasses.is_dataclass(s) and hasattr(s, "max_iter"):
        default = {f.name: f.default for f in dataclasses.fields(s)}.get("max_iter")
        return dataclasses.replace(s, max_iter=default)
    return s


def _check_solver_interface(s: Any) -> None:
    try:
        params = inspect.signature(s.minimize).parameters
    except (TypeError, ValueError):
        return
    if "max_iter" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise ValueError(
            "solver: its minimize(fun, x0, lower, upper, max_iter=None) must take max_iter"
        )


@partial(jax.jit, static_argnums=(0, 5, 6, 7, 11))
def _fit_jit(
    spec, X, y, init, weights, method, solver, bounds, max_iter, tol, inner_max_iter, accel, sw
):
    return fit_data(
        spec,
        prepare_data(spec, X, y, weights),
        init,
        method,
        solver,
        bounds,
        max_iter,
        tol,
        inner_max_iter,
        em_accel=accel,
        switch_tol=sw,
    )


def _concrete_number(v: Any) -> Any:
    """A concrete scalar as a Python number (None for a tracer or a non-scalar)."""
    if isinstance(v, jax.core.Tracer):
        return None
    if isinstance(v, bool | int | float):
        return v
    try:
        a = np.asarray(v)  # NumPy and (concrete) JAX scalars; never a tracer under a jit
    except (TypeError, ValueError):
        return v
    if a.ndim != 0 or a.dtype.kind not in "biuf":
        return v
    return a.item()


def check_cap(name: str, value: Any) -> None:
    """Refuse an iteration cap that cannot work: not an integer, or below 1 (None: the default,
    and a traced cap, pass). Raises ValueError naming ``name``."""
    if value is None or isinstance(value, jax.core.Tracer):
        return
    v = _concrete_number(value)
    integral = isinstance(v, int) or (isinstance(v, float) and v.is_integer())
    if isinstance(v, bool) or not integral:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if v < 1:
        raise ValueError(f"{name}: must be >= 1 (a fit needs at least one iteration), got {v}")


def check_tol(tol: Any) -> None:
    """Refuse a tolerance that cannot work: not a number, negative or not finite (a traced tol
    passes). Raises ValueError naming ``tol``."""
    if isinstance(tol, jax.core.Tracer):
        return
    v = _concrete_number(tol)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"tol: expected a number, got {tol!r}")
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"tol: must be finite and >= 0, got {v}")


def check_sample_size(spec: MixSpec, X: Any, weights: Any = None) -> None:
    """Refuse fewer rows than the model's free parameters (``spec.n_params``): such data cannot
    identify them (the command line refuses the same sizes, ``sizes``). The rows counted are
    X's (a static shape, checked under a user's jit too) and, for concrete weights, those of
    weight > 0 (weight-0 rows are padding). Raises ValueError naming X or weights."""
    P = spec.n_params
    n = jnp.shape(X)[0]
    if n < P:
        raise ValueError(
            f"X: {n} rows, below the model's {P} free parameters (spec.n_params): they cannot "
            "be identified"
        )
    if weights is not None and not isinstance(weights, jax.core.Tracer):
        used = int(np.count_nonzero(np.asarray(weights, np.float64) > 0))
        if used < P:
            raise ValueError(
                f"weights: {used} rows of weight > 0, below the model's {P} free parameters "
                "(spec.n_params): they cannot be identified"
            )


def normalize_fit_args(
    spec: MixSpec,
    method: str,
    solver: Any,
    bounds: Any,
    max_iter: Any,
    tol: Any,
    inner_max_iter: Any,
    em_accel: Any = DEFAULT_EM_ACCEL,
    switch_tol: Any = DEFAULT_SWITCH_TOL,
) -> tuple[str, Any, Bounds, jax.Array, jax.Array, jax.Array, str, jax.Array]:
    """Validate `fit`'s options before anything is compiled: (method, static solver, bounds,
    max_iter, tol, inner_max_iter, em_accel, switch_tol), the numbers as arrays (traced
    inside, so changing them never recompiles)."""
    if not isinstance(spec, MixSpec):
        raise ValueError(f"spec: expected a MixSpec or ModelSpec, got {type(spec).__name__}")
    check_cap("max_iter", max_iter)
    check_cap("inner_max_iter", inner_max_iter)
    check_tol(tol)
    s, mi, imi = resolve_solver(solver, method, max_iter, inner_max_iter)
    _check_solver_interface(s)
    for name, v in (("max_iter", mi), ("inner_max_iter", imi)):
        check_cap(f"{name} (the solver object's max_iter)", v)
    check_em_accel(em_accel)
    if not isinstance(switch_tol, jax.core.Tracer) and not float(switch_tol) >= 0:
        raise ValueError(f"switch_tol: must be >= 0, got {switch_tol!r}")
    b = Bounds(*(Bounds() if bounds is None else bounds)).validate()
    imi = DEFAULT_INNER_MAX_ITER if imi is None else imi
    return (
        method,
        _static_solver(s),
        b,
        jnp.asarray(mi, jnp.int32),
        jnp.asarray(tol, jnp.float64),
        jnp.asarray(imi, jnp.int32),
        em_accel,
        jnp.asarray(switch_tol, jnp.float64),
    )


def fit(
    spec: MixSpec,
    X: jax.Array,
    y: jax.Array,
    init: MixParams,
    weights: jax.Array | None = None,
    *,
    method: str = "direct",
    solver: Any = "newton",
    bounds: Bounds | None = None,
    max_iter: int | None = None,
    tol: float = 1e-12,
    inner_max_iter: int | None = None,
    em_accel: str = DEFAULT_EM_ACCEL,
    switch_tol: float = DEFAULT_SWITCH_TOL,
) -> FitResult:
    """Maximum-likelihood estimate of every adapter's (beta, tau, eta, nu) on a box.

    Args:
      spec: the model (`MixSpec`).
      X: (n, d) covariates. y: (n,) integer labels 0..K-1 (categorical) or real responses.
      init: starting MixParams (clipped into the box).
      weights: optional (n,) non-negative row weights; weight-0 rows are padding.
      method: "direct" (the solver on the full log-likelihood) or "em" (E-step posteriors,
        then the gate and the experts' M-steps, each solved by the solver, warm-started;
        accelerated as ``em_accel`` says).
      solver: "newton" (projected Newton, default), "optax_lbfgs", "jaxopt_bfgs", or a solver
        object (`moejax.estimation.solvers`); its ``max_iter`` caps each solve.
      bounds: the compact parameter set (`Bounds`; default `Bounds()`).
      max_iter: cap on solver iterations ("direct", default 500 or the solver object's cap)
        or on EM iterations ("em", default 500).
      tol: EM ("none", "squarem") stops when the relative change of the log-likelihood
        (per EM iteration; per SQUAREM cycle) falls below tol.
      inner_max_iter: cap on each M-step solve (EM only; default 50 or the solver object's).
      em_accel: the EM variant (EM only), one of `EM_ACCELS`: "newton" (default) runs EM
        until the relative change falls below max(tol, switch_tol), then the solver on the full
        log-likelihood from there (capped by max_iter; converged means its box-KKT test, and
        its iterations count in inner_steps); "squarem" SQUAREM cycles (Varadhan & Roland
        2008, scheme S3, monotone safeguard; three EM iterations per cycle, stop on tol);
        "none" plain EM (stop on tol).
      switch_tol: em_accel "newton": the relative log-likelihood change at which EM hands
        over to the solver (default 1e-5).

    Returns:
      `FitResult` with MixParams. NaN/inf anywhere gives converged=False and status nonfinite.

    Raises:
      ValueError: naming the argument, before anything is compiled, for bad data (see
        `moejax.mix.validate`: X not finite (n, d), n = 0, rows of X and y that differ, labels
        not integers in 0..K-1, non-finite responses, weights negative, non-finite or all 0),
        shapes that do not match the spec, fewer rows (of weight > 0) than the model's free
        parameters ``spec.n_params`` (`check_sample_size`; the command line's ``sizes`` rule),
        and bad options: an unknown method or solver, ``max_iter`` or ``inner_max_iter`` not an
        integer >= 1 (`check_cap`), ``tol`` negative or not finite (`check_tol`), a bad box.

    jit and vmap: `fit` can be called inside a user's `jax.jit`/`jax.vmap` (caps and tol may
    then be traced). There only shapes can be checked; data that fail the value checks end
    with status "bad_data" and converged False. It is not differentiable (a while-loop solver;
    no implicit differentiation at the optimum).
    """
    X, y, weights = as_arrays(X, y, weights)
    spec.check_params(init)
    check_data(spec, X, y, weights)
    args = normalize_fit_args(
        spec, method, solver, bounds, max_iter, tol, inner_max_iter, em_accel, switch_tol
    )
    check_sample_size(spec, X, weights)
    return _fit_jit(spec, X, y, init, weights, *args)


def best_start(results: FitResult) -> jax.Array:
    """Index () of the fit with the highest finite log-likelihood among stacked results
    (leading axis S; the first such on ties)."""
    return jnp.argmax(jnp.where(jnp.isfinite(results.loglik), results.loglik, -jnp.inf))


def best_fit(results: FitResult) -> FitResult:
    """The fit with the highest finite log-likelihood among stacked results (leading axis S)."""
    best = best_start(results)
    return jax.tree_util.tree_map(lambda a: a[best], results)


@partial(jax.jit, static_argnums=(0, 5, 6, 7, 11))
def _multistart_jit(
    spec, X, y, inits, weights, method, solver, bounds, max_iter, tol, imi, accel, sw
):
    data = prepare_data(spec, X, y, weights)
    one = lambda p: fit_data(
        spec, data, p, method, solver, bounds, max_iter, tol, imi, em_accel=accel, switch_tol=sw
    )
    return best_fit(jax.vmap(one)(inits))


def fit_multistart(
    spec: MixSpec,
    X: jax.Array,
    y: jax.Array,
    inits: MixParams,
    weights: jax.Array | None = None,
    *,
    method: str = "direct",
    solver: Any = "newton",
    bounds: Bounds | None = None,
    max_iter: int | None = None,
    tol: float = 1e-12,
    inner_max_iter: int | None = None,
    em_accel: str = DEFAULT_EM_ACCEL,
    switch_tol: float = DEFAULT_SWITCH_TOL,
) -> FitResult:
    """Fit from every start in ``inits`` (MixParams whose leaves have a leading axis S) and
    keep the best finite log-likelihood. Options and checks as in `fit`."""
    X, y, weights = as_arrays(X, y, weights)
    check_data(spec, X, y, weights)
    if jnp.ndim(inits.tau) != 2:
        raise ValueError("inits: expected MixParams with a leading start axis (S, m, ...)")
    spec.check_params(jax.tree_util.tree_map(lambda a: a[0], inits))
    args = normalize_fit_args(
        spec, method, solver, bounds, max_iter, tol, inner_max_iter, em_accel, switch_tol
    )
    check_sample_size(spec, X, weights)
    return _multistart_jit(spec, X, y, inits, weights, *args)


#: The registered estimators, by name (`fit`'s ``method``).
ESTIMATORS: dict[str, Estimator] = {"direct": DirectMLE(), "em": EM()}
assert all(k == e.name for k, e in ESTIMATORS.items())
#: Their names (`fit`'s ``method``; the sweep config's ``estimator.method`` asks this list).
METHODS: tuple[str, ...] = tuple(ESTIMATORS)


def get_estimator(method: str) -> Estimator:
    """The estimator of a name, or ValueError naming the choices."""
    try:
        return ESTIMATORS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"method: unknown method {method!r}; choose one of {', '.join(ESTIMATORS)}"
        ) from None


def status_name(code: int) -> str:
    """Human name of a status code."""
    c = int(code)
    return STATUS_NAMES[c] if 0 <= c < len(STATUS_NAMES) else f"status_{c}"


__all__ = [
    "BAD_DATA",
    "CONVERGED",
    "EM",
    "EM_ACCELS",
    "ESTIMATORS",
    "MAX_ITER",
    "METHODS",
    "NONFINITE",
    "STALLED",
    "STATUS_NAMES",
    "DataSource",
    "DirectMLE",
    "Estimator",
    "FitData",
    "FitOptions",
    "FitResult",
    "best_fit",
    "fit",
    "fit_data",
    "fit_multistart",
    "get_estimator",
    "objective",
    "prepare_data",
    "status_name",
]

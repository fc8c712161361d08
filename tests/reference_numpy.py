"""Independent NumPy/SciPy float64 reference for the contaminated mixture of logistic experts.

This module deliberately imports neither ``jax`` nor ``moejax``. It is used

1. by the tests, as ground truth for the JAX engine's log-density, gradient and maximiser;
2. by ``benchmarks/baseline_scipy.py``, as the per-fit "peer code" baseline (SciPy quasi-Newton
   with a hand-written analytic gradient, one dataset per call).

Conventions (see docs/theory.md sections 1-2):

- ``X`` is ``(n, d)``, ``y`` holds integers in ``0..K-1``; class ``K-1`` is the reference class,
  whose logit is 0 in both experts.
- Parameters: ``beta (d,)``, ``tau ()``, ``eta (K-1, d)``. Flat vector order:
  ``[beta (d), tau (1), eta row-major ((K-1)*d)]``.
- Gate ``w(x) = sigmoid(beta . x + tau)`` is the weight of the ADAPTER; the frozen expert has
  weight ``1 - w(x)``.
- Expert logits ``h_k(x) = s * a(eta_k . x) + b_k`` for ``k = 0..K-2`` and ``h_{K-1} = 0``;
  the frozen expert uses ``(a0, eta0, s0, b0)``.
- ``p(y=k|x) = (1-w) softmax(h0)_k + w softmax(h)_k``; all log-densities are computed through
  log-sigmoid (``-logaddexp(0, -u)``), log-softmax and ``logaddexp``.
- Log-likelihood ``= sum_i weight_i * log p(y_i | x_i)``.

Activations can be given by name (a key of ``ACTIVATIONS``), as a pair ``(a, a_prime)`` of
vectorised NumPy callables, or as a single vectorised callable ``a``. For a bare callable the
log-density is exact but the gradient (``loglik_and_grad``) uses a central finite difference
for ``a'`` (relative step ``eps**(1/3)``, error about 1e-10); pass the pair to avoid that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import erfc, expit, log_softmax

__all__ = [
    "ACTIVATIONS",
    "RefModel",
    "class_probs",
    "fit_scipy",
    "log_class_probs",
    "log_density",
    "loglik",
    "loglik_and_grad",
    "n_params",
    "pack",
    "projected_grad",
    "sample_numpy",
    "unpack",
]

_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


# --------------------------------------------------------------------------- activations


def _linear(z):
    return np.asarray(z, dtype=np.float64) * 1.0


def _linear_d(z):
    return np.ones_like(np.asarray(z, dtype=np.float64))


def _tanh_d(z):
    t = np.tanh(z)
    return 1.0 - t * t


def _sigmoid(z):
    return expit(z)


def _sigmoid_d(z):
    # sigma(z) * (1 - sigma(z)) written as sigma(z) * sigma(-z): no cancellation for large |z|.
    return expit(z) * expit(-z)


def _gelu(z):
    # Exact GELU, z * Phi(z) = z * 0.5 * (1 + erf(z / sqrt 2)); 0.5 * erfc(-z / sqrt 2) is the same
    # function without the cancellation of 1 + erf(.) for negative z.
    z = np.asarray(z, dtype=np.float64)
    return z * (0.5 * erfc(-z / _SQRT2))


def _gelu_d(z):
    # d/dz [z Phi(z)] = Phi(z) + z phi(z)
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * erfc(-z / _SQRT2) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _relu(z):
    return np.maximum(z, 0.0)


def _relu_d(z):
    # Derivative 0 at the kink (same convention as jax.nn.relu).
    return (np.asarray(z) > 0.0).astype(np.float64)


ACTIVATIONS: dict[
    str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
]
ACTIVATIONS = {
    "linear": (_linear, _linear_d),
    "tanh": (np.tanh, _tanh_d),
    "sigmoid": (_sigmoid, _sigmoid_d),
    "gelu": (_gelu, _gelu_d),
    "relu": (_relu, _relu_d),
}

_FD_REL_STEP = np.finfo(np.float64).eps ** (1.0 / 3.0)


def _central_difference(
    fn: Callable[[np.ndarray], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    def d(z):
        z = np.asarray(z, dtype=np.float64)
        h = _FD_REL_STEP * np.maximum(1.0, np.abs(z))
        zp = z + h
        zm = z - h
        return (fn(zp) - fn(zm)) / (zp - zm)

    return d


def _resolve_act(act: Any) -> tuple[Callable, Callable]:
    """Return ``(a, a_prime)`` for a name, a pair of callables or a bare callable."""
    if isinstance(act, str):
        try:
            return ACTIVATIONS[act.lower()]
        except KeyError:
            raise ValueError(f"unknown activation {act!r}; known: {sorted(ACTIVATIONS)}") from None
    if isinstance(act, tuple) and len(act) == 2 and all(callable(f) for f in act):
        return act
    if callable(act):
        return act, _central_difference(act)
    raise TypeError(f"activation must be a name, a callable or an (a, a') pair, got {act!r}")


# --------------------------------------------------------------------------- model spec


@dataclasses.dataclass(frozen=True, eq=False)
class RefModel:
    """Everything about the model that is not estimated.

    ``eta0`` is the frozen expert's ``(K-1, d)`` matrix; ``act``/``act0`` the adapter's / frozen
    expert's activations (names, callables or ``(a, a')`` pairs; names keep the model picklable for
    process pools); ``scale``/``scale0`` the fixed logit scales; ``bias``/``bias0`` optional fixed
    per-class biases of length ``K-1`` (the reference class has no bias).
    """

    d: int
    K: int
    eta0: np.ndarray
    act: Any = "tanh"
    act0: Any = "linear"
    scale: float = 1.0
    scale0: float = 1.0
    bias: np.ndarray | None = None
    bias0: np.ndarray | None = None

    def __post_init__(self):
        eta0 = np.asarray(self.eta0, dtype=np.float64)
        if eta0.shape != (self.K - 1, self.d):
            raise ValueError(f"eta0 must have shape {(self.K - 1, self.d)}, got {eta0.shape}")
        object.__setattr__(self, "eta0", eta0)
        for name in ("bias", "bias0"):
            b = getattr(self, name)
            if b is not None:
                b = np.asarray(b, dtype=np.float64).reshape(-1)
                if b.shape != (self.K - 1,):
                    raise ValueError(f"{name} must have length K-1={self.K - 1}, got {b.shape}")
                object.__setattr__(self, name, b)

    @property
    def n_params(self) -> int:
        return n_params(self.d, self.K)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``log_density`` / ``class_probs``."""
        return dict(
            eta0=self.eta0,
            act=self.act,
            act0=self.act0,
            scale=self.scale,
            scale0=self.scale0,
            bias=self.bias,
            bias0=self.bias0,
        )


def n_params(d: int, K: int) -> int:
    return d + 1 + (K - 1) * d


def pack(beta, tau, eta) -> np.ndarray:
    """Flat vector ``[beta (d), tau (1), eta row-major ((K-1)*d)]``."""
    return np.concatenate(
        [
            np.asarray(beta, dtype=np.float64).reshape(-1),
            np.asarray(tau, dtype=np.float64).reshape(1),
            np.asarray(eta, dtype=np.float64).reshape(-1),
        ]
    )


def unpack(theta, d: int, K: int) -> tuple[np.ndarray, float, np.ndarray]:
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (n_params(d, K),):
        raise ValueError(f"theta must have shape {(n_params(d, K),)}, got {theta.shape}")
    return theta[:d].copy(), float(theta[d]), theta[d + 1 :].reshape(K - 1, d).copy()


# --------------------------------------------------------------------------- densities


def _expert_logits(X, eta, act, scale, bias):
    """Full ``(n, K)`` logits (reference column 0) plus the pre-activations ``z (n, K-1)``."""
    a, _ = _resolve_act(act)
    z = X @ np.asarray(eta, dtype=np.float64).T
    h = scale * a(z)
    if bias is not None:
        h = h + np.asarray(bias, dtype=np.float64).reshape(1, -1)
    n = X.shape[0]
    return np.concatenate([h, np.zeros((n, 1))], axis=1), z


def _log_gate(X, beta, tau):
    u = X @ np.asarray(beta, dtype=np.float64) + float(tau)
    log_w = -np.logaddexp(0.0, -u)  # log sigmoid(u)
    log_1mw = -np.logaddexp(0.0, u)  # log sigmoid(-u) = log(1 - w)
    return u, log_w, log_1mw


def log_class_probs(
    X, beta, tau, eta, *, eta0, act, act0, scale=1.0, scale0=1.0, bias=None, bias0=None
) -> np.ndarray:
    """``log p(y = k | x_i)`` for every class: ``(n, K)``."""
    X = np.asarray(X, dtype=np.float64)
    _, log_w, log_1mw = _log_gate(X, beta, tau)
    h0, _ = _expert_logits(X, eta0, act0, scale0, bias0)
    h, _ = _expert_logits(X, eta, act, scale, bias)
    return np.logaddexp(
        log_1mw[:, None] + log_softmax(h0, axis=1), log_w[:, None] + log_softmax(h, axis=1)
    )


def log_density(
    X, y, beta, tau, eta, *, eta0, act, act0, scale=1.0, scale0=1.0, bias=None, bias0=None
) -> np.ndarray:
    """``log p(y_i | x_i)``: ``(n,)``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    _, log_w, log_1mw = _log_gate(X, beta, tau)
    h0, _ = _expert_logits(X, eta0, act0, scale0, bias0)
    h, _ = _expert_logits(X, eta, act, scale, bias)
    rows = np.arange(X.shape[0])
    l0 = log_softmax(h0, axis=1)[rows, y]
    l1 = log_softmax(h, axis=1)[rows, y]
    return np.logaddexp(log_1mw + l0, log_w + l1)


def class_probs(
    X, beta, tau, eta, *, eta0, act, act0, scale=1.0, scale0=1.0, bias=None, bias0=None
) -> np.ndarray:
    """``p(y = k | x_i)``: ``(n, K)``, rows sum to 1."""
    return np.exp(
        log_class_probs(
            X, beta, tau, eta, eta0=eta0, act=act, act0=act0, scale=scale, scale0=scale0,
            bias=bias, bias0=bias0,
        )
    )  # fmt: skip


# --------------------------------------------------------------------------- likelihood + gradient


def loglik_and_grad(theta_flat, X, y, weights, model: RefModel) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood and its hand-written analytic gradient w.r.t. the flat vector.

    With ``u = beta . x + tau``, ``w = sigmoid(u)``, ``pi0 = softmax(h0)``, ``pi = softmax(h)`` and
    the adapter posterior ``r = w pi_y / ((1-w) pi0_y + w pi_y)``:

    - ``d log p / d u = r - w``  (so beta gets ``(r - w) x`` and tau ``r - w``);
    - ``d log p / d h_k = r (1[y=k] - pi_k)`` for ``k < K-1``;
    - ``d h_k / d eta_k = s a'(eta_k . x) x``.

    ``weights=None`` means all ones.
    """
    d, K = model.d, model.K
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    n = X.shape[0]
    beta, tau, eta = unpack(theta_flat, d, K)
    wts = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)

    _, log_w, log_1mw = _log_gate(X, beta, tau)
    h0, _ = _expert_logits(X, model.eta0, model.act0, model.scale0, model.bias0)
    h, z = _expert_logits(X, eta, model.act, model.scale, model.bias)
    rows = np.arange(n)
    logpi0 = log_softmax(h0, axis=1)
    logpi = log_softmax(h, axis=1)
    A = log_1mw + logpi0[rows, y]
    B = log_w + logpi[rows, y]
    lp = np.logaddexp(A, B)
    ll = float(np.dot(wts, lp))

    r = np.exp(B - lp)  # posterior probability of the adapter
    w = np.exp(log_w)
    g_u = wts * (r - w)
    g_beta = X.T @ g_u
    g_tau = g_u.sum()

    pi = np.exp(logpi[:, : K - 1])  # (n, K-1)
    onehot = (y[:, None] == np.arange(K - 1)[None, :]).astype(np.float64)
    _, a_prime = _resolve_act(model.act)
    g_z = (wts * r)[:, None] * (onehot - pi) * (model.scale * a_prime(z))  # (n, K-1)
    g_eta = g_z.T @ X  # (K-1, d)

    return ll, np.concatenate([g_beta, [g_tau], g_eta.reshape(-1)])


def loglik(theta_flat, X, y, weights, model: RefModel) -> float:
    beta, tau, eta = unpack(theta_flat, model.d, model.K)
    lp = log_density(X, y, beta, tau, eta, **model.kwargs())
    return float(lp.sum() if weights is None else np.dot(np.asarray(weights, np.float64), lp))


# --------------------------------------------------------------------------- fitting


def _bounds_arrays(bounds, P):
    lo = np.full(P, -np.inf)
    hi = np.full(P, np.inf)
    if bounds is None:
        return lo, hi
    if len(bounds) != P:
        raise ValueError(
            f"bounds must have one (lo, hi) per flat coordinate ({P}), got {len(bounds)}"
        )
    for j, (a, b) in enumerate(bounds):
        lo[j] = -np.inf if a is None else float(a)
        hi[j] = np.inf if b is None else float(b)
    return lo, hi


def projected_grad(theta, grad, lo, hi, atol=0.0) -> np.ndarray:
    """Gradient of the log-likelihood (ascent direction) with components that point out of the
    box at an active bound set to 0: the KKT residual of the bound-constrained maximisation."""
    g = np.array(grad, dtype=np.float64)
    at_lo = theta <= lo + atol
    at_hi = theta >= hi - atol
    g[at_lo & (g < 0)] = 0.0
    g[at_hi & (g > 0)] = 0.0
    return g


def fit_scipy(
    X,
    y,
    model: RefModel,
    theta0,
    bounds: Sequence[tuple[float | None, float | None]] | None = None,
    weights=None,
    method: str | None = None,
    gtol: float = 1e-10,
    maxiter: int = 10000,
    *,
    ftol: float = 1e-15,
    polish: bool = True,
    success_gtol: float = 1e-6,
) -> dict[str, Any]:
    """Maximum likelihood by ``scipy.optimize.minimize`` on ``-loglik / sum(weights)``.

    ``method`` defaults to ``"L-BFGS-B"`` when ``bounds`` is given, else ``"BFGS"``. ``gtol`` is
    the stopping tolerance on the (projected) gradient of the *mean* log-likelihood; ``ftol``
    (L-BFGS-B only) the relative objective change, set tiny so that the gradient test decides.

    The quasi-Newton run typically stops on "precision loss" at a gradient of 1e-9..1e-11. With
    ``polish=True`` it is followed by at most a few Newton steps on the coordinates not on a bound,
    with the Hessian taken as the central difference of the analytic gradient, each accepted only
    if it raises the log-likelihood. This makes the result a tight ground truth.

    ``success`` is True when the projected gradient of the mean log-likelihood has infinity norm
    below ``success_gtol`` (SciPy's own flag is reported as ``scipy_success`` / ``message``).

    Returns a dict with ``theta, loglik, success, nit`` plus ``nfev, grad (of the total
    log-likelihood), grad_norm (inf-norm of the projected mean gradient), on_bound (bool per flat
    coordinate), any_on_bound, method, message, scipy_success, polish_steps``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    P = model.n_params
    theta0 = np.asarray(theta0, dtype=np.float64).reshape(-1)
    if theta0.shape != (P,):
        raise ValueError(f"theta0 must have shape {(P,)}, got {theta0.shape}")
    lo, hi = _bounds_arrays(bounds, P)
    if method is None:
        method = "L-BFGS-B" if bounds is not None else "BFGS"
    wsum = float(X.shape[0] if weights is None else np.sum(weights))
    theta0 = np.clip(theta0, lo, hi)

    def fun(theta):
        ll, g = loglik_and_grad(theta, X, y, weights, model)
        return -ll / wsum, -g / wsum

    if method.upper() == "L-BFGS-B":
        options = {"gtol": gtol, "ftol": ftol, "maxiter": maxiter, "maxcor": 20, "maxls": 50}
        sp_bounds = list(zip(lo, hi, strict=True))
    elif method.upper() == "BFGS":
        if bounds is not None:
            raise ValueError("BFGS does not take bounds; use L-BFGS-B")
        options = {"gtol": gtol, "maxiter": maxiter, "norm": np.inf}
        sp_bounds = None
    else:
        options = {"gtol": gtol, "maxiter": maxiter}
        sp_bounds = None if bounds is None else list(zip(lo, hi, strict=True))
    res = optimize.minimize(fun, theta0, jac=True, method=method, bounds=sp_bounds, options=options)
    theta = np.clip(np.asarray(res.x, dtype=np.float64), lo, hi)
    ll, g = loglik_and_grad(theta, X, y, weights, model)
    nfev = int(getattr(res, "nfev", 0))

    bound_tol = 1e-10 * (1.0 + np.abs(theta))
    polish_steps = 0
    if polish:
        for _ in range(5):
            pg = projected_grad(theta, g, lo, hi, bound_tol)
            if np.max(np.abs(pg)) / wsum < 1e-13:
                break
            free = ~((theta <= lo + bound_tol) | (theta >= hi - bound_tol))
            if not free.any():
                break
            H = _fd_hessian(theta, X, y, weights, model, free)
            Hf = H[np.ix_(free, free)]
            try:
                # Newton for a maximum needs -H positive definite.
                c = np.linalg.cholesky(-Hf)
            except np.linalg.LinAlgError:
                break
            step = np.zeros(P)
            step[free] = np.linalg.solve(c.T, np.linalg.solve(c, g[free]))
            cand = np.clip(theta + step, lo, hi)
            ll_c, g_c = loglik_and_grad(cand, X, y, weights, model)
            nfev += 1 + 2 * int(free.sum())
            pg_c = projected_grad(cand, g_c, lo, hi, bound_tol)
            # Near the optimum the log-likelihood change is at rounding level, so also accept a
            # step that leaves it unchanged to within rounding but shrinks the gradient.
            ll_tol = 64.0 * np.finfo(np.float64).eps * max(1.0, abs(ll))
            if ll_c >= ll - ll_tol and np.max(np.abs(pg_c)) < np.max(np.abs(pg)):
                theta, ll, g = cand, ll_c, g_c
                polish_steps += 1
            else:
                break

    on_bound = (theta <= lo + bound_tol) | (theta >= hi - bound_tol)
    pg = projected_grad(theta, g, lo, hi, bound_tol)
    grad_norm = float(np.max(np.abs(pg)) / wsum)
    return {
        "theta": theta,
        "loglik": float(ll),
        "success": bool(np.isfinite(ll) and grad_norm < success_gtol),
        "nit": int(getattr(res, "nit", 0)),
        "nfev": nfev,
        "grad": g,
        "grad_norm": grad_norm,
        "on_bound": on_bound,
        "any_on_bound": bool(on_bound.any()),
        "method": method,
        "message": str(res.message),
        "scipy_success": bool(res.success),
        "polish_steps": polish_steps,
    }


def _fd_hessian(theta, X, y, weights, model, free) -> np.ndarray:
    """Hessian of the log-likelihood: central differences of the analytic gradient, symmetrised.
    Only the columns of ``free`` coordinates are computed (others stay 0)."""
    P = theta.size
    H = np.zeros((P, P))
    for j in np.flatnonzero(free):
        h = 1e-5 * max(1.0, abs(theta[j]))
        tp = theta.copy()
        tm = theta.copy()
        tp[j] += h
        tm[j] -= h
        _, gp = loglik_and_grad(tp, X, y, weights, model)
        _, gm = loglik_and_grad(tm, X, y, weights, model)
        H[:, j] = (gp - gm) / (2.0 * h)
    return 0.5 * (H + H.T)


# --------------------------------------------------------------------------- simulation


def sample_numpy(rng: np.random.Generator, n: int, model: RefModel, beta, tau, eta):
    """Draw ``X ~ N(0, I_d)`` and ``y | X`` from the model by inverse CDF. Returns ``(X, y)``."""
    X = rng.standard_normal((n, model.d))
    probs = class_probs(X, beta, tau, eta, **model.kwargs())
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(n)[:, None]
    y = np.minimum((cdf < u).sum(axis=1), model.K - 1).astype(np.int64)
    return X, y

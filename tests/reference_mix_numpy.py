"""Independent NumPy/SciPy float64 reference for the general contaminated mixture (``moejax.mix``).

This module deliberately imports neither ``jax`` nor ``moejax``: it takes plain arguments (not a
``MixSpec``) and is the ground truth of ``tests/test_mix.py``.

Model (see ``moejax/mix/spec.py`` and docs/theory.md section 1):

    p_G(y | x) = w_0(x) f_0(y | x) + sum_{j=1..m} w_j(x) f_j(y | x; eta_j, nu_j)

Gates, with g_j = beta_j . x + tau_j (the frozen expert is component 0):

- ``"softmax"``:    w = softmax(0, g_1, ..., g_m)
- ``"input_free"``: w = softmax(0, tau_1, ..., tau_m)  (beta ignored)
- ``"sigmoid"``:    w_j proportional to sigmoid(g_j), w_0 proportional to sigmoid(0) = 1/2
- ``"laplace"``:    w = softmax(0, tau_1 - ||x - beta_1||, ..., tau_m - ||x - beta_m||)

Expert likelihoods, with linear predictors z_r = eta_r . x (r < R) and output map s a(z) + b:

- ``"categorical"``: K classes, logits s a(z_r) + b_r for r < K-1, the last class has logit 0
- ``"gaussian"``:    N(y; s a(z) + b, nu)
- ``"laplace"``:     Laplace with mean s a(z) + b and variance nu (scale sqrt(nu / 2))

The frozen expert uses (frozen activation, eta0, nu0, frozen_scale, frozen_bias,
frozen_likelihood). Shapes: X (n, d), y (n,), beta (m, d), tau (m,), eta (m, R, d), nu (m,),
eta0 (R, d). Everything is computed per component in log space (scipy's ``norm.logpdf``,
``laplace.logpdf``, ``log_softmax`` and ``logsumexp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import erfc, expit, log_softmax, logsumexp

__all__ = [
    "ACTIVATIONS",
    "class_log_probs",
    "component_log_joint",
    "expert_log_pdf",
    "gate_log_weights",
    "log_density",
    "responsibilities",
    "sample_responses",
]

_SQRT2 = np.sqrt(2.0)


def _gelu(z: np.ndarray) -> np.ndarray:
    # Exact GELU z Phi(z), Phi(z) = erfc(-z / sqrt 2) / 2 (erfc keeps the left tail accurate).
    return 0.5 * z * erfc(-z / _SQRT2)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: np.asarray(z, dtype=np.float64),
    "tanh": np.tanh,
    "sigmoid": expit,
    "gelu": _gelu,
    "relu": lambda z: np.maximum(z, 0.0),
}


def _act(a: str | Callable) -> Callable[[np.ndarray], np.ndarray]:
    return ACTIVATIONS[a] if isinstance(a, str) else a


def _log_sigmoid(u: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -u)


def gate_log_weights(gate: str, X: np.ndarray, beta: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """log w (n, m+1); column 0 is the frozen expert."""
    X = np.asarray(X, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    n, m = X.shape[0], tau.shape[0]
    logits = np.zeros((n, m + 1))
    for j in range(m):
        if gate == "input_free":
            logits[:, j + 1] = tau[j]
        elif gate == "laplace":  # tau_j - ||x - W_j||, W_j = beta_j
            logits[:, j + 1] = tau[j] - np.sqrt(np.sum((X - beta[j]) ** 2, axis=1))
        else:
            logits[:, j + 1] = X @ beta[j] + tau[j]
    if gate in ("softmax", "input_free", "laplace"):
        return log_softmax(logits, axis=1)
    if gate == "sigmoid":
        lv = np.empty_like(logits)
        lv[:, 0] = np.log(0.5)
        for j in range(m):
            lv[:, j + 1] = _log_sigmoid(logits[:, j + 1])
        return lv - logsumexp(lv, axis=1, keepdims=True)
    raise ValueError(f"unknown gate {gate!r}")


def expert_log_pdf(
    likelihood: str,
    activation: str | Callable,
    eta: np.ndarray,
    nu: float,
    X: np.ndarray,
    y: np.ndarray,
    K: int,
    scale: float = 1.0,
    bias: Any = None,
) -> np.ndarray:
    """log f(y_i | x_i) (n,) of one expert with weights eta (R, d) and variance nu."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    eta = np.atleast_2d(np.asarray(eta, dtype=np.float64))
    a = _act(activation)
    R = eta.shape[0]
    b = np.zeros(R) if bias is None else np.atleast_1d(np.asarray(bias, dtype=np.float64))
    if likelihood == "categorical":
        n = X.shape[0]
        logits = np.zeros((n, K))
        for r in range(K - 1):
            logits[:, r] = scale * a(X @ eta[r]) + b[r]
        lp = log_softmax(logits, axis=1)
        return lp[np.arange(n), y.astype(np.int64)]
    mean = scale * a(X @ eta[0]) + b[0]
    if likelihood == "gaussian":
        return stats.norm.logpdf(y, loc=mean, scale=np.sqrt(nu))
    if likelihood == "laplace":
        return stats.laplace.logpdf(y, loc=mean, scale=np.sqrt(nu / 2.0))
    raise ValueError(f"unknown likelihood {likelihood!r}")


def component_log_joint(
    X: np.ndarray,
    y: np.ndarray,
    *,
    gate: str,
    likelihood: str,
    frozen: str | Callable,
    adapter: str | Callable,
    eta0: np.ndarray,
    beta: np.ndarray,
    tau: np.ndarray,
    eta: np.ndarray,
    nu: np.ndarray | None = None,
    nu0: float = 1.0,
    K: int = 2,
    frozen_likelihood: str | None = None,
    scale: float = 1.0,
    frozen_scale: float | None = None,
    bias: Any = None,
    frozen_bias: Any = None,
) -> np.ndarray:
    """log w_j(x_i) + log f_j(y_i | x_i), (n, m+1); column 0 is the frozen expert."""
    flik = likelihood if frozen_likelihood is None else frozen_likelihood
    fscale = scale if frozen_scale is None else frozen_scale
    tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
    m = tau.shape[0]
    eta = np.asarray(eta, dtype=np.float64)
    nu = np.ones(m) if nu is None else np.atleast_1d(np.asarray(nu, dtype=np.float64))
    lw = gate_log_weights(gate, X, beta, tau)
    out = np.empty_like(lw)
    out[:, 0] = lw[:, 0] + expert_log_pdf(flik, frozen, eta0, nu0, X, y, K, fscale, frozen_bias)
    for j in range(m):
        lf = expert_log_pdf(likelihood, adapter, eta[j], nu[j], X, y, K, scale, bias)
        out[:, j + 1] = lw[:, j + 1] + lf
    return out


def log_density(X: np.ndarray, y: np.ndarray, **model: Any) -> np.ndarray:
    """log p_G(y_i | x_i), (n,). Keyword arguments as in `component_log_joint`."""
    return logsumexp(component_log_joint(X, y, **model), axis=1)


def responsibilities(X: np.ndarray, y: np.ndarray, **model: Any) -> np.ndarray:
    """Posterior probability of each component given (x_i, y_i), (n, m+1)."""
    lj = component_log_joint(X, y, **model)
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def class_log_probs(X: np.ndarray, **model: Any) -> np.ndarray:
    """log p_G(y = k | x_i), (n, K), categorical experts."""
    X = np.asarray(X, dtype=np.float64)
    K = int(model.get("K", 2))
    cols = [log_density(X, np.full(X.shape[0], k), **model) for k in range(K)]
    return np.stack(cols, axis=1)


def sample_responses(rng: np.random.Generator, X: np.ndarray, **model: Any) -> np.ndarray:
    """y (n,) ~ p_G(. | x_i): a component from the gate, then y from that expert (categorical
    labels as float64 0..K-1). Keyword arguments as in `component_log_joint`."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    lw = gate_log_weights(model["gate"], X, model["beta"], model["tau"])
    w = np.exp(lw)
    comp = (rng.random(n)[:, None] > np.cumsum(w, axis=1)).sum(axis=1)
    comp = np.minimum(comp, w.shape[1] - 1)
    lik = model["likelihood"]
    flik = model.get("frozen_likelihood") or lik
    scale = model.get("scale", 1.0)
    fscale = model.get("frozen_scale")
    fscale = scale if fscale is None else fscale
    K = int(model.get("K", 2))
    eta = np.asarray(model["eta"], dtype=np.float64)
    m = eta.shape[0]
    experts = [
        (flik, model["frozen"], np.atleast_2d(model["eta0"]), fscale, model.get("frozen_bias"))
    ]
    experts += [(lik, model["adapter"], eta[j], scale, model.get("bias")) for j in range(m)]
    nu = model.get("nu")
    nus = [model.get("nu0", 1.0)] + ([1.0] * m if nu is None else list(np.atleast_1d(nu)))
    y = np.empty(n)
    for c, (lk, act, e, s, b) in enumerate(experts):
        rows = comp == c
        Xc = X[rows]
        bb = np.zeros(e.shape[0]) if b is None else np.atleast_1d(np.asarray(b, dtype=np.float64))
        if lk == "categorical":
            logits = np.zeros((Xc.shape[0], K))
            for r in range(K - 1):
                logits[:, r] = s * _act(act)(Xc @ e[r]) + bb[r]
            p = np.exp(log_softmax(logits, axis=1))
            u = rng.random(Xc.shape[0])[:, None]
            y[rows] = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), K - 1)
        else:
            mean = s * _act(act)(Xc @ e[0]) + bb[0]
            if lk == "gaussian":
                y[rows] = mean + np.sqrt(nus[c]) * rng.standard_normal(Xc.shape[0])
            else:
                y[rows] = rng.laplace(mean, np.sqrt(nus[c] / 2.0))
    return y

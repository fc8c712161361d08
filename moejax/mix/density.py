"""Log-densities of the general mixture, written once in terms of per-row linear predictors.

Every row of the model depends on x only through its linear predictors (the layout of `U`):

    U = [g_1 .. g_m | z_{1,1} .. z_{1,R}, ..., z_{m,1} .. z_{m,R} | log nu_1 .. log nu_m]

(gate logits, expert predictors eta_{j,r} . x, and, for regression, the log-variances; the last
block is absent for categorical experts). `row_loglik` maps U, the observation y and the frozen
expert's log-density of y to log p_G(y | x); the density functions and the estimator's objective
both use it. All arithmetic is in log space (log-softmax, log-sigmoid, logsumexp).
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import jax
import jax.numpy as jnp

from moejax.experts import Expert, resolve_activation
from moejax.mix.gates import get_gate
from moejax.mix.likelihoods import get_likelihood
from moejax.mix.spec import MixParams, MixSpec
from moejax.mix.validate import check_data, rows_ok


def n_predictors(spec: MixSpec) -> int:
    """Width of U: the gate logits (m, or m - 1 in the plain MoE) + m R expert predictors
    (+ m log-variances for regression)."""
    return n_gate_preds(spec) + spec.m * (spec.R + (1 if spec.regression else 0))


def n_gate_preds(spec: MixSpec) -> int:
    """Width of U's gate block: the gate's predictors per logit times its logits (the logits
    themselves for every gate but the Laplace gate, whose logit is a function of two)."""
    return spec.n_gates * get_gate(spec.gate).n_pred


def expert_mean(expert: Expert, z: jax.Array) -> jax.Array:
    """Regression mean s a(z) + b for predictors z (...,)."""
    mu = expert.scale * resolve_activation(expert.activation)(z)
    return mu if expert.bias is None else mu + expert.bias[0]


def regression_logpdf(lik: str, y: jax.Array, mean: jax.Array, log_nu: jax.Array) -> jax.Array:
    """log N(y; mean, nu) or log Laplace(y; mean, variance nu), elementwise (the likelihood
    object's `moejax.mix.likelihoods.Regression.logpdf`)."""
    return get_likelihood(lik).logpdf(y, mean, log_nu)


def categorical_logpmf(expert: Expert, z: jax.Array, y: jax.Array) -> jax.Array:
    """log softmax(h(z))_y for predictors z (..., R) and integer labels y (...,)."""
    lsm = jax.nn.log_softmax(expert.logits_from_z(z), axis=-1)
    labels = jnp.asarray(y).astype(jnp.int32)
    onehot = jax.nn.one_hot(labels, lsm.shape[-1], dtype=lsm.dtype)
    return jnp.sum(onehot * lsm, axis=-1)


def gate_log_weights(gate: str, g: jax.Array) -> jax.Array:
    """log w (..., m+1) from gate logits g (..., m): column 0 is the frozen expert (the gate
    object's `moejax.mix.gates.Gate.log_weights`)."""
    return get_gate(gate).log_weights(g)


def _gate(gate: str, g: jax.Array):
    """The gate object's row pieces (`moejax.mix.gates.Gate.pieces`)."""
    return get_gate(gate).pieces(g)


def split_predictors(spec: MixSpec, U: jax.Array):
    """U (..., W) -> (g (..., m_g), Z (..., m, R), log_nu (..., m) or None); m_g =
    ``spec.n_gates`` (m, or m - 1 in the plain MoE)."""
    m, R, ng = spec.m, spec.R, n_gate_preds(spec)
    g = U[..., :ng]
    if ng != spec.n_gates:  # predictors -> logits (the Laplace gate)
        g = jnp.moveaxis(get_gate(spec.gate).logits(jnp.moveaxis(g, -1, 0)), 0, -1)
    Z = U[..., ng : ng + m * R].reshape(*U.shape[:-1], m, R)
    log_nu = U[..., ng + m * R :] if spec.regression else None
    return g, Z, log_nu


def adapter_logpdfs(spec: MixSpec, U: jax.Array, y: jax.Array) -> jax.Array:
    """log f_j(y | x) of each adapter, (..., m)."""
    _, Z, log_nu = split_predictors(spec, U)
    if spec.regression:
        return regression_logpdf(
            spec.likelihood, y[..., None], expert_mean(spec.adapter, Z[..., 0]), log_nu
        )
    return categorical_logpmf(spec.adapter, Z, y[..., None])


def component_logjoint(spec: MixSpec, U: jax.Array, y: jax.Array, lf0: jax.Array) -> jax.Array:
    """log w_j(x) + log f_j(y | x) for the frozen expert (column 0) and each adapter, (..., m+1);
    the plain MoE's m experts (..., m) (``lf0`` unused)."""
    g, _, _ = split_predictors(spec, U)
    if spec.plain:
        return gate_log_weights(spec.gate, g) + adapter_logpdfs(spec, U, y)
    lf = jnp.concatenate([lf0[..., None], adapter_logpdfs(spec, U, y)], axis=-1)
    return gate_log_weights(spec.gate, g) + lf


def row_loglik(spec: MixSpec, U: jax.Array, y: jax.Array, lf0: jax.Array) -> jax.Array:
    """log p_G(y | x) from the predictors U (..., W), y (...,) and log f_0(y | x) (...,)."""
    return jax.nn.logsumexp(component_logjoint(spec, U, y, lf0), axis=-1)


def predictors(spec: MixSpec, params: MixParams, X: jax.Array) -> jax.Array:
    """U (n, W) for covariates X (n, d)."""
    X = jnp.asarray(X, jnp.float64)
    beta, tau = gate_params(spec, params)
    gate = get_gate(spec.gate)
    g = gate.predictor_block(beta, tau, X.T).T if gate.n_pred > 1 else X @ beta.T + tau
    eta = params.eta
    Z = jnp.einsum("nd,mrd->nmr", X, eta[..., : spec.d])
    if spec.expert_intercept:
        Z = Z + eta[..., spec.d]
    Z = Z.reshape(X.shape[0], -1)
    parts = [g, Z]
    if spec.regression:
        parts.append(jnp.broadcast_to(jnp.log(params.nu), (X.shape[0], spec.m)))
    return jnp.concatenate(parts, axis=-1)


def gate_params(spec: MixSpec, params: MixParams) -> tuple[jax.Array, jax.Array]:
    """(beta (m_g, d), tau (m_g,)) of the gate logits: the adapters', or experts 1..m-1's in
    the plain MoE (expert 0 is the reference); beta is 0 under a gate without slopes."""
    beta = params.beta if spec.has_beta else jnp.zeros_like(params.beta)
    if spec.plain:
        return beta[1:], params.tau[1:]
    return beta, params.tau


def frozen_logpdf(spec: MixSpec, X: jax.Array, y: jax.Array) -> jax.Array:
    """log f_0(y_i | x_i), (n,): the frozen expert with known eta0 (and nu0)."""
    return frozen_logpdf_planes(spec, jnp.asarray(X, jnp.float64).T, y)


def frozen_logpdf_planes(spec: MixSpec, X: jax.Array, y: jax.Array) -> jax.Array:
    """`frozen_logpdf` from covariate planes X (d, n) (rows last), (n,); zeros in the plain MoE
    (no frozen expert: the row functions ignore it)."""
    if spec.plain:
        return jnp.zeros(jnp.shape(y), jnp.float64)
    if spec.regression:
        mean = expert_mean(spec.frozen, linear_planes(spec.eta0_array(), X)[0])
        return regression_logpdf(spec.frozen_likelihood, y, mean, jnp.log(spec.nu0))
    return pick_class(frozen_log_probs_planes(spec, X), y)


def as_labels(spec: MixSpec, y: Any) -> jax.Array:
    """y as the model's label type: int32 classes (categorical) or float64 responses."""
    return jnp.asarray(y, spec.y_dtype)


def _check(spec: MixSpec, params: MixParams, X, y=None, weights=None) -> None:
    """Shapes of params; shapes and (concrete) values of the data (`moejax.mix.validate`)."""
    spec.check_params(params)
    check_data(spec, X, y, weights)


def log_density(spec: MixSpec, params: MixParams, X: jax.Array, y: jax.Array) -> jax.Array:
    """log p_G(y_i | x_i), (n,). y: labels 0..K-1 (categorical) or real responses.

    Bad data (non-finite X, n = 0, rows of X and y that differ, labels not integers in 0..K-1,
    non-finite responses) raise ValueError naming the argument; inside a user's `jit` only the
    shapes can be checked (see `moejax.mix.validate`), and such a row's log-density is NaN
    (so is any sum over it)."""
    _check(spec, params, X, y)
    return _log_density(spec, params, X, y)


def _log_density(spec: MixSpec, params: MixParams, X: jax.Array, y: jax.Array) -> jax.Array:
    """log p_G(y_i | x_i), (n,), NaN on a row that fails `rows_ok` (y as given)."""
    ok = rows_ok(spec, X, y)
    y = as_labels(spec, y)
    ld = row_loglik(spec, predictors(spec, params, X), y, frozen_logpdf(spec, X, y))
    return jnp.where(ok, ld, jnp.nan)


def log_likelihood(
    spec: MixSpec, params: MixParams, X: jax.Array, y: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """sum_i w_i log p_G(y_i | x_i) (scalar); weight-0 rows change nothing, neither the value
    nor any derivative, whatever they hold (they are replaced by zeros before use). Data are
    checked as in `log_density`, on the rows of weight != 0."""
    if weights is None:
        return jnp.sum(log_density(spec, params, X, y))
    _check(spec, params, X, y, weights)
    w = jnp.asarray(weights, jnp.float64)
    keep = w != 0
    X = jnp.where(keep[:, None], jnp.asarray(X, jnp.float64), 0.0)
    y = jnp.where(keep, jnp.asarray(y), 0)  # as given: `_log_density` checks the labels
    return jnp.sum(jnp.where(keep, w * _log_density(spec, params, X, y), 0.0))


def log_class_probs(spec: MixSpec, params: MixParams, X: jax.Array) -> jax.Array:
    """log p_G(y = k | x_i), (n, K), categorical experts only:
    logsumexp_j [log w_j(x) + log softmax(h_j(x))_k] over the frozen expert and the adapters."""
    if spec.regression:
        raise ValueError("log_class_probs: only for categorical experts")
    _check(spec, params, X)
    return class_log_probs_planes(spec, params, jnp.asarray(X, jnp.float64).T).T


def linear_planes(W: jax.Array, X: jax.Array) -> list[jax.Array]:
    """[W_k . x for each row k of W (k, d)] as planes (n,), from covariate planes X (d, n):
    explicit multiply-adds for small d (no tiny matmul splits the elementwise fusions)."""
    d = X.shape[0]
    if d > 16:
        return list(W @ X)
    out = []
    for k in range(W.shape[0]):
        z = W[k, 0] * X[0]
        for c in range(1, d):
            z = z + W[k, c] * X[c]
        out.append(z)
    return out


def expert_planes(spec: MixSpec, eta_j: jax.Array, X: jax.Array) -> list[jax.Array]:
    """An expert's predictor planes eta_{j,r} . x (R planes (n,)) from its weights (R, de) and
    covariate planes X (d, n); with ``spec.expert_intercept`` the last column is added."""
    z = linear_planes(eta_j[:, : spec.d], X)
    if spec.expert_intercept:
        z = [zr + eta_j[r, spec.d] for r, zr in enumerate(z)]
    return z


def _log_softmax_planes(h: list[jax.Array]) -> list[jax.Array]:
    """log softmax of the logits h (R planes) with a reference logit 0 appended: R + 1 planes,
    the last one the reference class. Explicit plane arithmetic (rows last)."""
    hm = reduce(jnp.maximum, h)
    hm = jnp.maximum(hm, 0.0)
    den = jnp.exp(-hm)
    for hk in h:
        den = den + jnp.exp(hk - hm)
    lse = hm + jnp.log(den)
    return [hk - lse for hk in h] + [-lse]


def _logits_planes(expert: Expert, z: list[jax.Array]) -> list[jax.Array]:
    """Non-reference logits s a(z_r) + b_r (R planes) from predictor planes z (R planes)."""
    act = resolve_activation(expert.activation)
    h = [expert.scale * act(zr) for zr in z]
    if expert.bias is not None:
        h = [hr + b for hr, b in zip(h, expert.bias, strict=True)]
    return h


def class_log_probs_planes(spec: MixSpec, params: MixParams, X: jax.Array) -> jax.Array:
    """log p_G(y = k | x), (K, n), from covariate planes X (d, n) (rows last): the engine's
    layout of `log_class_probs` (same code). Categorical experts only."""
    return jnp.stack(class_log_probs_and_frozen(spec, params, X)[0])


def frozen_log_probs_planes(spec: MixSpec, X: jax.Array) -> list[jax.Array]:
    """log softmax(h0(x))_k of the frozen expert (K planes) from covariate planes X (d, n)."""
    return _log_softmax_planes(_logits_planes(spec.frozen, linear_planes(spec.eta0_array(), X)))


def _gate_log_weight_planes(spec: MixSpec, params: MixParams, X: jax.Array):
    """(log w, w) of every component, ``spec.components`` planes (n,) each, from covariate
    planes X (d, n): the frozen expert (or the plain MoE's reference expert 0) first."""
    beta, tau = gate_params(spec, params)
    gate = get_gate(spec.gate)
    if gate.n_pred > 1:
        g = gate.logits(gate.predictor_block(beta, tau, X))
    else:
        g = jnp.stack([gj + tj for gj, tj in zip(linear_planes(beta, X), tau, strict=True)])
    lw0, lwa, w, _ = _gate(spec.gate, g)
    ng = spec.n_gates
    return [lw0] + [lwa[j] for j in range(ng)], [jnp.exp(lw0)] + [w[j] for j in range(ng)]


def class_log_probs_and_frozen(
    spec: MixSpec, params: MixParams, X: jax.Array
) -> tuple[list[jax.Array], list[jax.Array]]:
    """(log p_G(y = k | x), the frozen expert's log softmax), K planes (n,) each, from
    covariate planes X (d, n): the sampler needs both (labels, and the frozen expert's
    log-density of them), computed once. The plain MoE has no frozen expert: zero planes."""
    m = spec.m
    lw, _ = _gate_log_weight_planes(spec, params, X)
    lps = [] if spec.plain else [frozen_log_probs_planes(spec, X)]
    for j in range(m):
        lps.append(
            _log_softmax_planes(_logits_planes(spec.adapter, expert_planes(spec, params.eta[j], X)))
        )
    K = len(lps[0])
    lp0 = [jnp.zeros_like(lps[0][0])] * K if spec.plain else lps[0]
    if len(lps) == 2:
        return [jnp.logaddexp(lw[0] + lps[0][k], lw[1] + lps[1][k]) for k in range(K)], lp0
    out = []
    for k in range(K):
        terms = [lwj + lp[k] for lwj, lp in zip(lw, lps, strict=True)]
        M = reduce(jnp.maximum, terms)
        S = reduce(jnp.add, [jnp.exp(t - M) for t in terms])
        out.append(M + jnp.log(S))
    return out, lp0


def _softmax_planes(h: list[jax.Array]) -> list[jax.Array]:
    """softmax of the logits h (R planes) with a reference logit 0 appended: R + 1 planes of
    probabilities (max-shifted: no overflow), the reference class last."""
    hm = jnp.maximum(reduce(jnp.maximum, h), 0.0)
    ex = [jnp.exp(hk - hm) for hk in h] + [jnp.exp(-hm)]
    inv = 1.0 / reduce(jnp.add, ex)
    return [e * inv for e in ex]


def class_probs_planes(spec: MixSpec, params: MixParams, X: jax.Array) -> list[jax.Array]:
    """p_G(y = k | x), K planes (n,), from covariate planes X (d, n), in probability space:
    sum_j w_j(x) softmax(h_j(x))_k (the sampler's inverse CDF needs probabilities only, to
    absolute accuracy; a third of the transcendentals of `class_log_probs_planes`)."""
    _, weights = _gate_log_weight_planes(spec, params, X)
    pis = []
    if not spec.plain:
        frozen_z = linear_planes(spec.eta0_array(), X)
        pis.append(_softmax_planes(_logits_planes(spec.frozen, frozen_z)))
    for j in range(spec.m):
        z = expert_planes(spec, params.eta[j], X)
        pis.append(_softmax_planes(_logits_planes(spec.adapter, z)))
    return [
        reduce(jnp.add, [wj * pi[k] for wj, pi in zip(weights, pis, strict=True)])
        for k in range(len(pis[0]))
    ]


def pick_class(lp: Any, y: jax.Array) -> jax.Array:
    """lp[y_i, i] for planes lp (K planes (n,), or a (K, n) array) and labels y (n,)."""
    yi = jnp.asarray(y).astype(jnp.int32)
    out = jnp.where(yi == 0, lp[0], 0.0)
    for k in range(1, len(lp)):
        out = jnp.where(yi == k, lp[k], out)
    return out


def responsibilities(spec: MixSpec, params: MixParams, X: jax.Array, y: jax.Array) -> jax.Array:
    """Posterior probability of each component given (x_i, y_i), (n, m+1); column 0 frozen
    (the plain MoE: (n, m), its experts).
    Data are checked as in `log_density` (a bad row traced through a user's `jit`: NaN)."""
    _check(spec, params, X, y)
    ok = rows_ok(spec, X, y)
    y = as_labels(spec, y)
    lj = component_logjoint(spec, predictors(spec, params, X), y, frozen_logpdf(spec, X, y))
    r = jnp.exp(lj - jax.nn.logsumexp(lj, axis=-1, keepdims=True))
    return jnp.where(ok[:, None], r, jnp.nan)

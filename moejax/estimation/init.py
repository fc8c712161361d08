"""Initialisation for every model: truth (diagnostic), near-truth noise c n^(-rho), the split
rule for over-fitted near-truth starts, and truth-free random starts for multi-start."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from moejax.estimation.bounds import Bounds, unpack
from moejax.mix.spec import MixParams, MixSpec

INIT_MODES = ("truth", "near_truth", "multistart")


def init_near_truth(
    key: jax.Array,
    spec: MixSpec,
    truth: MixParams,
    n: jax.Array | float,
    c_gate: float = 0.005,
    c_expert: float = 0.05,
    rho: float = 0.083,
) -> MixParams:
    """Truth plus Gaussian noise of scale c n^(-rho): c_gate on beta and tau, c_expert on eta,
    and (regression) a multiplicative factor exp(c_expert n^(-rho) N(0, 1)) on nu, which keeps
    it positive. The defaults are the regression predecessor's (c = 0.005 gate, 0.05 experts,
    rho = 0.083).

    When ``spec`` fits m_hat = ``spec.m`` adapters to a truth of m < m_hat (over-fitting), the
    start splits true adapters (`split_truth`) and perturbs every copy independently: the first
    m fitted adapters take the noise of ``key`` exactly as an exact fit draws it, the extra
    m_hat - m the noise of ``fold_in(key, 1)``. Returns MixParams with leading axis m_hat."""
    m = int(np.shape(truth.tau)[0])
    if spec.m == m:
        return perturb(key, truth, n, c_gate, c_expert, rho, spec.regression)
    # the plain MoE's reference expert 0 (gate fixed at 0) is never split: its logit stays 0
    centers = split_truth(truth, spec.m, first=1 if spec.plain else 0)
    head = jax.tree_util.tree_map(lambda a: a[:m], centers)
    tail = jax.tree_util.tree_map(lambda a: a[m:], centers)
    noisy = (
        perturb(key, head, n, c_gate, c_expert, rho, spec.regression),
        perturb(jax.random.fold_in(key, 1), tail, n, c_gate, c_expert, rho, spec.regression),
    )
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), *noisy)


def perturb(
    key: jax.Array,
    truth: MixParams,
    n: jax.Array | float,
    c_gate: float,
    c_expert: float,
    rho: float,
    with_nu: bool,
) -> MixParams:
    """`init_near_truth`'s noise; the key is split in 3 subkeys (beta, tau, eta), or 4 when
    the variances nu are estimated too (``with_nu``)."""
    keys = jax.random.split(key, 4 if with_nu else 3)
    s = jnp.asarray(n, jnp.float64) ** (-rho)
    nrm = lambda k, a: jax.random.normal(k, jnp.shape(a), jnp.float64)
    nu = truth.nu * jnp.exp(c_expert * s * nrm(keys[3], truth.nu)) if with_nu else truth.nu
    return MixParams(
        truth.beta + c_gate * s * nrm(keys[0], truth.beta),
        truth.tau + c_gate * s * nrm(keys[1], truth.tau),
        truth.eta + c_expert * s * nrm(keys[2], truth.eta),
        nu,
    )


def split_assignment(m: int, m_hat: int, first: int = 0) -> tuple[int, ...]:
    """The true adapter each of ``m_hat`` fitted adapters starts from (the split rule): fitted
    adapter i < m starts from true adapter i, and each extra one i = m, ..., m_hat - 1 splits
    true adapter first + (i - m) mod (m - first) (round robin over first..m-1; the plain MoE
    passes first = 1, so that its reference expert 0, whose gate is fixed, is never split).
    Returns (m_hat,) indices in 0..m-1."""
    if not 1 <= m <= m_hat or not 0 <= first < m:
        raise ValueError(
            f"m_hat: expected m_hat >= m >= 1 and first < m, got m = {m}, m_hat = {m_hat}, "
            f"first = {first}"
        )
    return tuple(i if i < m else first + (i - m) % (m - first) for i in range(m_hat))


def split_truth(truth: MixParams, m_hat: int, first: int = 0) -> MixParams:
    """The truth's m adapters (leaves with leading axis m) split into ``m_hat`` >= m by
    `split_assignment`: each fitted adapter copies its true atom (beta, eta, nu), and the k
    copies of true adapter s (the original and its extra copies) get tau*_s - log(k), so that
    their gate weights exp(beta . x + tau) sum to the truth's (exactly under the softmax and
    input-free gates; under the sigmoid gate only where sigmoid ~ exp, i.e. small weights).
    Returns MixParams with leading axis m_hat (m_hat = m: the truth itself)."""
    m = int(np.shape(truth.tau)[0])
    src = np.asarray(split_assignment(m, m_hat, first))
    if m_hat == m:
        return truth
    k = np.bincount(src, minlength=m)[src]  # (m_hat,) copies of each one's true atom
    take = lambda a: jnp.asarray(a)[src]
    return MixParams(
        take(truth.beta),
        take(truth.tau) - jnp.asarray([math.log(v) for v in k], jnp.float64),
        take(truth.eta),
        take(truth.nu),
    )


def to_reference(p: MixParams) -> MixParams:
    """The plain MoE's gate in its reference form: expert 0's gate (beta[0], tau[0]) subtracted
    from every expert's, so that expert 0's logit is 0 (any array type; the config puts a
    truth in this form with it). Under the softmax and input-free gates
    the gate weights are unchanged (translation invariance); under the sigmoid gate they move."""
    return p._replace(beta=p.beta - p.beta[:1], tau=p.tau - p.tau[:1])


def random_inits(
    key: jax.Array,
    spec: MixSpec,
    n_starts: int,
    bounds: Bounds = Bounds(),
    scale: float = 1.0,
) -> MixParams:
    """Truth-free starts: every coordinate of the flat vector (log nu for variances) drawn
    N(0, scale^2) and clipped into the box; leaves gain a leading axis (n_starts,)."""
    lo, hi = Bounds(*bounds).arrays(spec)
    z = scale * jax.random.normal(key, (n_starts, spec.n_params), jnp.float64)
    return jax.vmap(lambda t: unpack(spec, t))(jnp.clip(z, lo, hi))


__all__ = [
    "INIT_MODES",
    "init_near_truth",
    "perturb",
    "random_inits",
    "split_assignment",
    "split_truth",
    "to_reference",
]

"""Voronoi losses D1 (exact-fitted) and D2 (over-fitted) of Nguyen, Nguyen & Ho (2023),
"Demystifying Softmax Gating Function in Gaussian Mixture of Experts" (arXiv 2305.03288,
NeurIPS 2023), as coded in their repository (github.com/Trung-TinNGUYEN/CRPE-SGaME,
``discrepancies.py``: ``loss_SGaME_exact`` and ``gauss_dist_SGaME``).

Model: softmax-gated Gaussian mixture of K experts with linear experts,

    p(y | x) = sum_k softmax_k(tau + beta x) N(y; eta_k . x + b_k, nu_k),

expert k having gate intercept tau_k (their beta_{0k}), gate slope beta_k (d,) (their
beta_{1k}), expert slope eta_k (d,) (their a_k), expert intercept b_k and variance nu_k (their
sigma_k^2; a variance, not a standard deviation). Fitted: K experts; truth: K* experts.

Definitions (one fit against the truth):

- atom of an expert: (beta_k, b_k, eta_k, nu_k); the gate intercept tau_k is not part of it;
- cell A_j (j = 1..K*): the fitted atoms whose nearest true atom is j. ``metric="euclidean"``
  (default; the paper's ||.||) uses `moejax.voronoi.voronoi_cells` on concat(beta, b, eta, nu);
  ``metric="blocksum"`` uses their code's distance
  ``||dbeta|| + |db| + ||deta|| + |dnu|``. Ties go to the first index (their code appends
  every tied index, which breaks its bookkeeping; ties never occur on real estimates, and the
  two metrics give the same cells on all 24,000 of their stored estimates);
- mass = sum_j | sum_{i in A_j} exp(tau_i) - exp(tau*_j) |  (an empty cell gives exp(tau*_j));
- for a fitted atom i in cell j with |A_j| = c, with block distances
  dbeta = ||beta_i - beta*_j||_2, db = |b_i - b*_j|, deta = ||eta_i - eta*_j||_2,
  dnu = |nu_i - nu*_j|:

      D1:  term_i = exp(tau_i) (dbeta + db + deta + dnu)   if c == 1,
           term_i = 0                                       if c >= 2
           (their exact-fitted branch adds nothing for a shared cell: only its mass term);
      D2:  term_i = exp(tau_i) (dbeta + db + deta + dnu)   if c == 1,
           term_i = exp(tau_i) (dbeta^r + db^r + deta^(r/2) + dnu^(r/2)),  r = rbar[c],
                                                            if c >= 2,
           with rbar = (0, 1, 4, 6) (their Lemma 1: rbar(2) = 4, rbar(3) = 6); a cell larger
           than len(rbar) - 1 has no exponent in their code (IndexError): D2 is NaN then;

- D = mass + sum_i term_i.

With every cell a singleton D1 = D2. Their scripts call the exact-fitted branch when K = K*
and the over-fitted one when K > K*; `sgmoe_d1` and `sgmoe_d2` apply the formula asked for
whatever K is.

Gate convention (the losses are NOT invariant to translating the gates): the mass term and
the weights use exp(tau) as given, so tau and beta must be in the anchored parametrisation of
their code: the LAST expert's gate is 0 (tau_K = 0, beta_K = 0) in the fit (meteorits' alpha
is (d+1, K-1), the K-th column implied 0) and in the truth (their tau* = (-8, 0),
beta* = (25, 0)). `anchor_last_gate` maps any gate to that convention. Under it, an
over-fitted fit that puts two experts in the true anchored expert's cell has a mass term
close to |exp(0) + exp(~0) - 1| = 1 however large n is (see benchmarks/crpe_sgame.md).

Everything is static-shape (one-hot (K, K*) assignment): jit- and vmap-able, float64 with
``jax_enable_x64`` (importing moejax turns it on).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from moejax.voronoi import voronoi_cells

#: rbar(c) of their Lemma 1 for a cell of c fitted atoms, c = 0..3 (their ``rbar``).
RBAR: tuple[float, ...] = (0.0, 1.0, 4.0, 6.0)

Metric = Literal["euclidean", "blocksum"]


def anchor_last_gate(tau: jax.Array, beta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Translate the gates so that the last expert's is 0 (the convention of D1/D2).

    tau (K,), beta (K, d) -> (tau - tau[-1], beta - beta[-1]) of the same shapes; the softmax
    gate, hence the model, is unchanged."""
    return tau - tau[-1], beta - beta[-1]


def sgmoe_cells(
    beta_hat: jax.Array,
    eta_hat: jax.Array,
    b_hat: jax.Array,
    nu_hat: jax.Array,
    beta: jax.Array,
    eta: jax.Array,
    b: jax.Array,
    nu: jax.Array,
    metric: Metric = "euclidean",
) -> jax.Array:
    """Voronoi cell of each fitted atom.

    Fitted beta_hat (K, d), eta_hat (K, d), b_hat (K,), nu_hat (K,); truth beta (K*, d),
    eta (K*, d), b (K*,), nu (K*,) -> (K,) int32 index of the nearest true atom (first index on
    ties). ``metric``: "euclidean" (`moejax.voronoi.voronoi_cells` on
    concat(beta, b, eta, nu)) or "blocksum" (their ||dbeta|| + |db| + ||deta|| + |dnu|)."""
    if metric == "euclidean":
        atoms = lambda be, et, bb, nn: jnp.concatenate([be, bb[:, None], et, nn[:, None]], axis=1)
        return voronoi_cells(atoms(beta_hat, eta_hat, b_hat, nu_hat), atoms(beta, eta, b, nu))
    if metric == "blocksum":
        d_beta, d_b, d_eta, d_nu = _block_distances(
            beta_hat, eta_hat, b_hat, nu_hat, beta, eta, b, nu
        )
        return jnp.argmin(d_beta + d_b + d_eta + d_nu, axis=1).astype(jnp.int32)
    raise ValueError(f"metric must be 'euclidean' or 'blocksum', not {metric!r}")


def _block_distances(
    beta_hat: jax.Array,
    eta_hat: jax.Array,
    b_hat: jax.Array,
    nu_hat: jax.Array,
    beta: jax.Array,
    eta: jax.Array,
    b: jax.Array,
    nu: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(K, K*) distances ||dbeta||_2, |db|, ||deta||_2, |dnu| of every fitted to every true atom."""
    return (
        jnp.linalg.norm(beta_hat[:, None] - beta[None], axis=-1),
        jnp.abs(b_hat[:, None] - b[None]),
        jnp.linalg.norm(eta_hat[:, None] - eta[None], axis=-1),
        jnp.abs(nu_hat[:, None] - nu[None]),
    )


def sgmoe_voronoi_loss(
    tau_hat: jax.Array,
    beta_hat: jax.Array,
    eta_hat: jax.Array,
    b_hat: jax.Array,
    nu_hat: jax.Array,
    tau: jax.Array,
    beta: jax.Array,
    eta: jax.Array,
    b: jax.Array,
    nu: jax.Array,
    *,
    exact: bool,
    rbar: tuple[float, ...] = RBAR,
    metric: Metric = "euclidean",
) -> jax.Array:
    """D1 (``exact=True``) or D2 (``exact=False``) of a fit against the truth (module docstring).

    Fitted: tau_hat (K,), beta_hat (K, d), eta_hat (K, d), b_hat (K,), nu_hat (K,); truth:
    tau (K*,), beta (K*, d), eta (K*, d), b (K*,), nu (K*,), both with the last expert's gate
    at 0 (`anchor_last_gate`). ``exact``, ``rbar`` and ``metric`` are static. Returns a ()
    array (NaN for D2 when a cell holds len(rbar) or more fitted atoms)."""
    cells = sgmoe_cells(beta_hat, eta_hat, b_hat, nu_hat, beta, eta, b, nu, metric)
    m = tau.shape[0]
    onehot = jax.nn.one_hot(cells, m, dtype=tau_hat.dtype)  # (K, K*)
    sizes = jnp.sum(onehot, axis=0)  # (K*,)
    c = onehot @ sizes  # (K,): size of each fitted atom's cell
    w_hat = jnp.exp(tau_hat)
    mass = jnp.sum(jnp.abs(onehot.T @ w_hat - jnp.exp(tau)))
    dists = _block_distances(beta_hat, eta_hat, b_hat, nu_hat, beta, eta, b, nu)
    own = [jnp.sum(onehot * dd, axis=1) for dd in dists]  # (K,) each, own cell's true atom
    first = own[0] + own[1] + own[2] + own[3]
    if exact:
        terms = jnp.where(c == 1, first, 0.0)
        return mass + jnp.sum(w_hat * terms)
    table = jnp.asarray(rbar, tau_hat.dtype)
    r = table[jnp.clip(c.astype(jnp.int32), 0, table.shape[0] - 1)]  # (K,)
    # 0 ** r is 0 for r > 0; the where keeps gradients finite at exact atoms.
    pw = lambda a, e: jnp.where(a > 0, a ** jnp.where(a > 0, e, 1.0), 0.0)
    shared = pw(own[0], r) + pw(own[1], r) + pw(own[2], r / 2) + pw(own[3], r / 2)
    terms = jnp.where(c == 1, first, shared)
    loss = mass + jnp.sum(w_hat * terms)
    return jnp.where(jnp.max(sizes) >= table.shape[0], jnp.nan, loss)


def sgmoe_d1(
    tau_hat: jax.Array,
    beta_hat: jax.Array,
    eta_hat: jax.Array,
    b_hat: jax.Array,
    nu_hat: jax.Array,
    tau: jax.Array,
    beta: jax.Array,
    eta: jax.Array,
    b: jax.Array,
    nu: jax.Array,
    metric: Metric = "euclidean",
) -> jax.Array:
    """Exact-fitted loss D1 (all exponents 1; a shared cell contributes its mass term only).

    Fitted tau_hat (K,), beta_hat (K, d), eta_hat (K, d), b_hat (K,), nu_hat (K,); truth tau
    (K*,), beta (K*, d), eta (K*, d), b (K*,), nu (K*,); last gate 0 in both. Returns ()."""
    return sgmoe_voronoi_loss(
        tau_hat, beta_hat, eta_hat, b_hat, nu_hat, tau, beta, eta, b, nu, exact=True, metric=metric
    )


def sgmoe_d2(
    tau_hat: jax.Array,
    beta_hat: jax.Array,
    eta_hat: jax.Array,
    b_hat: jax.Array,
    nu_hat: jax.Array,
    tau: jax.Array,
    beta: jax.Array,
    eta: jax.Array,
    b: jax.Array,
    nu: jax.Array,
    metric: Metric = "euclidean",
    rbar: tuple[float, ...] = RBAR,
) -> jax.Array:
    """Over-fitted loss D2 (exponents rbar(c) on dbeta, db and rbar(c)/2 on deta, dnu in a cell
    of c >= 2 fitted atoms, 1 in a singleton cell).

    Fitted tau_hat (K,), beta_hat (K, d), eta_hat (K, d), b_hat (K,), nu_hat (K,); truth tau
    (K*,), beta (K*, d), eta (K*, d), b (K*,), nu (K*,); last gate 0 in both. Returns ()
    (NaN when a cell holds len(rbar) or more fitted atoms)."""
    return sgmoe_voronoi_loss(
        tau_hat,
        beta_hat,
        eta_hat,
        b_hat,
        nu_hat,
        tau,
        beta,
        eta,
        b,
        nu,
        exact=False,
        rbar=rbar,
        metric=metric,
    )


def _from_plain(p: Any) -> tuple[jax.Array, ...]:
    """(tau, beta, eta, b, nu) in the convention of D1/D2 from MixParams of moejax's plain
    Gaussian MoE with expert intercepts (``MixSpec(frozen=None, expert_intercept=True)``,
    R = 1: eta (K, 1, d + 1), the last column the intercept b): moejax's reference expert 0
    (gate 0) becomes the last expert, whose gate D1/D2 take as 0."""
    order = jnp.roll(jnp.arange(p.tau.shape[0]), -1)  # (1, 2, .., K - 1, 0)
    w = p.eta[:, 0, :]
    return (p.tau[order], p.beta[order], w[order, :-1], w[order, -1], p.nu[order])


def plain_d1(est: Any, truth: Any) -> jax.Array:
    """D1 of a moejax plain-MoE fit (MixParams, see `_from_plain`) against its truth; a user
    loss for `moejax.slopes` (``losses={"D1": plain_d1}``). Returns ()."""
    return sgmoe_d1(*_from_plain(est), *_from_plain(truth))


def plain_d2(est: Any, truth: Any) -> jax.Array:
    """D2 of a moejax plain-MoE fit against its truth (as `plain_d1`). Returns ()."""
    return sgmoe_d2(*_from_plain(est), *_from_plain(truth))

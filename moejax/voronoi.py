"""Voronoi-type parameter loss for m_hat fitted adapters against m true adapters.

Adapter j has gate slope beta_j (d,), gate intercept tau_j (), expert weights eta_j (R, d) and
expert variance nu_j () (0 and unused for classification experts).

Definitions:

- atom of an adapter: omega = concat(beta, eta.ravel(), nu) (tau is NOT part of the atom);
- cell A_j = {i : voronoi_cells(omega_hat, omega)[i] == j}: each fitted atom goes to its nearest
  true atom (Euclidean), the first such index on ties, so no fitted atom lies in two cells;
- exp_tau = sum_j | sum_{i in A_j} exp(tau_hat_i) - exp(tau_j) |  (an empty cell gives exp(tau_j));
- beta = sum_j sum_{i in A_j} ||beta_hat_i - beta_j||_2;
- eta = sum_j sum_{i in A_j} ||eta_hat_i - eta_j||_F;
- nu = sum_j sum_{i in A_j} |nu_hat_i - nu_j|;
- total (first-order Voronoi loss) = exp_tau
  + sum_j sum_{i in A_j} exp(tau_hat_i) * (||dbeta||_2 + ||deta||_F + |dnu|);
- n_empty = number of true adapters with an empty cell; max_cell = largest cell size;
  n_shared = number of true adapters whose cell holds two or more fitted adapters.

With m_hat = m = 1 the blocks are the plain errors ||beta_hat - beta||, |exp(tau_hat) - exp(tau)|,
||eta_hat - eta||_F, |nu_hat - nu|. Everything is static-shape (one-hot (m_hat, m) assignment),
so it works under jax.jit and jax.vmap.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class VoronoiErrors(NamedTuple):
    """Voronoi block errors (each ()); n_empty, max_cell and n_shared are int32."""

    beta: jax.Array
    exp_tau: jax.Array
    eta: jax.Array
    nu: jax.Array
    total: jax.Array
    n_empty: jax.Array
    max_cell: jax.Array
    n_shared: jax.Array


def voronoi_cells(est_atoms: jax.Array, true_atoms: jax.Array) -> jax.Array:
    """Nearest true atom of each fitted atom.

    est_atoms (m_hat, p), true_atoms (m, p) -> (m_hat,) int32 index of the nearest true atom
    (Euclidean), the first such index on ties (jnp.argmin semantics).
    """
    diff = est_atoms[:, None, :] - true_atoms[None, :, :]
    return jnp.argmin(jnp.sum(diff * diff, axis=-1), axis=1).astype(jnp.int32)


def _atoms(beta: jax.Array, eta: jax.Array, nu: jax.Array) -> jax.Array:
    """(k, d), (k, R, d), (k,) -> (k, d + R * d + 1) atoms concat(beta, eta.ravel(), nu)."""
    return jnp.concatenate([beta, eta.reshape(eta.shape[0], -1), nu[:, None]], axis=1)


def voronoi_errors(
    beta_hat: jax.Array,
    tau_hat: jax.Array,
    eta_hat: jax.Array,
    nu_hat: jax.Array,
    beta: jax.Array,
    tau: jax.Array,
    eta: jax.Array,
    nu: jax.Array,
) -> VoronoiErrors:
    """Voronoi loss of a fit against the truth.

    Fitted: beta_hat (m_hat, d), tau_hat (m_hat,), eta_hat (m_hat, R, d), nu_hat (m_hat,).
    Truth: beta (m, d), tau (m,), eta (m, R, d), nu (m,). Returns VoronoiErrors of () arrays.
    """
    cells = voronoi_cells(_atoms(beta_hat, eta_hat, nu_hat), _atoms(beta, eta, nu))
    onehot = jax.nn.one_hot(cells, beta.shape[0], dtype=beta_hat.dtype)  # (m_hat, m)
    # Distances of every fitted adapter to every true adapter, (m_hat, m); keep own cell only.
    d_beta = jnp.linalg.norm(beta_hat[:, None] - beta[None], axis=-1)
    d_eta = jnp.linalg.norm(eta_hat[:, None] - eta[None], axis=(-2, -1))
    d_nu = jnp.abs(nu_hat[:, None] - nu[None])
    w_hat = jnp.exp(tau_hat)
    mass = jnp.abs(onehot.T @ w_hat - jnp.exp(tau))  # (m,)
    exp_tau = jnp.sum(mass)
    first_order = jnp.sum(onehot * w_hat[:, None] * (d_beta + d_eta + d_nu))
    sizes = jnp.sum(onehot, axis=0).astype(jnp.int32)  # (m,)
    return VoronoiErrors(
        beta=jnp.sum(onehot * d_beta),
        exp_tau=exp_tau,
        eta=jnp.sum(onehot * d_eta),
        nu=jnp.sum(onehot * d_nu),
        total=exp_tau + first_order,
        n_empty=jnp.sum(sizes == 0).astype(jnp.int32),
        max_cell=jnp.max(sizes),
        n_shared=jnp.sum(sizes >= 2).astype(jnp.int32),
    )


def weighted_voronoi_loss(est: Any, truth: Any, exponents: tuple[float, ...] = (1.0, 2.0)) -> Any:
    """The weighted Voronoi loss of the Gaussian-MoE rate papers, for one fit (a user loss for
    `moejax.slopes`: ``losses={"voronoi_w": weighted_voronoi_loss}``).

    With the cells A_j of `voronoi_cells` (each fitted atom (beta, eta, nu) to its nearest
    true atom) and r(k) = ``exponents[min(k, len) - 1]`` the exponent of a cell of k fitted
    adapters (default r(1) = 1, r(k >= 2) = 2: exactly fitted cells at first order, shared
    cells squared, the strongly identifiable case; docs/theory.md):

        D(G, G*) = sum_j | sum_{i in A_j} exp(tau_i) - exp(tau*_j) |
                 + sum_j sum_{i in A_j} exp(tau_i) (||dbeta_ij||^r + ||deta_ij||_F^r
                                                     + |dnu_ij|^r),   r = r(|A_j|).

    ``est`` and ``truth`` are MixParams (m_hat and m* adapters: beta (m, d), tau (m,),
    eta (m, R, d), nu (m,)); returns a () array. m_hat = m* = 1 gives
    |exp(tau_hat) - exp(tau*)| + exp(tau_hat) (||dbeta|| + ||deta||_F + |dnu|).
    Static-shape: works under jit and vmap."""
    mass, atoms = weighted_voronoi_terms(est, truth, exponents)
    return mass + jnp.sum(atoms)


def weighted_voronoi_terms(
    est: Any, truth: Any, exponents: tuple[float, ...] = (1.0, 2.0)
) -> tuple[Any, Any]:
    """`weighted_voronoi_loss` in its parts: (mass, atoms), mass () the summed weight term
    sum_j |sum_{i in A_j} exp(tau_i) - exp(tau*_j)| and atoms (m_hat,) each fitted adapter's
    term exp(tau_i) (||dbeta_ij||^r + ||deta_ij||_F^r + |dnu_ij|^r) against its cell's true
    atom; the loss is mass + atoms.sum(). Lets a report say how much of the loss comes from
    which fitted adapter (for example the ones on a bound of the box)."""
    cells = voronoi_cells(
        _atoms(est.beta, est.eta, est.nu), _atoms(truth.beta, truth.eta, truth.nu)
    )
    m = truth.beta.shape[0]
    onehot = jax.nn.one_hot(cells, m, dtype=est.beta.dtype)  # (m_hat, m)
    sizes = jnp.sum(onehot, axis=0)  # (m,)
    table = jnp.asarray(exponents, est.beta.dtype)
    r_true = table[jnp.clip(sizes.astype(jnp.int32), 1, table.shape[0]) - 1]  # (m,)
    r = onehot @ r_true  # (m_hat,): the exponent of each fitted atom's cell
    d_beta = jnp.linalg.norm(est.beta[:, None] - truth.beta[None], axis=-1)
    d_eta = jnp.linalg.norm(est.eta[:, None] - truth.eta[None], axis=(-2, -1))
    d_nu = jnp.abs(est.nu[:, None] - truth.nu[None])
    # 0 ** r with r >= 1 is 0; the where keeps the gradient finite at exact atoms.
    pw = lambda a: jnp.where(a > 0, jnp.abs(a) ** r[:, None], 0.0)
    w_hat = jnp.exp(est.tau)
    mass = jnp.sum(jnp.abs(onehot.T @ w_hat - jnp.exp(truth.tau)))
    atoms = jnp.sum(onehot * w_hat[:, None] * (pw(d_beta) + pw(d_eta) + pw(d_nu)), axis=1)
    return mass, atoms

"""Tests for the Voronoi-type loss (moejax.voronoi)."""

import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from moejax.voronoi import VoronoiErrors, voronoi_cells, voronoi_errors  # noqa: E402

FIELDS = ("beta", "exp_tau", "eta", "nu", "total", "n_empty", "max_cell")
# XLA compiles cost ~0.3 s per shape on CPU and eager dispatch far more: call jitted versions.
errors = jax.jit(voronoi_errors)


def reference(beta_hat, tau_hat, eta_hat, nu_hat, beta, tau, eta, nu):
    """Plain python-loop Voronoi loss; returns (dict of the VoronoiErrors fields, cells)."""
    m_hat, m = len(tau_hat), len(tau)
    atom = lambda b, e, n: [*map(float, b), *map(float, np.ravel(e)), float(n)]
    est = [atom(beta_hat[i], eta_hat[i], nu_hat[i]) for i in range(m_hat)]
    tru = [atom(beta[j], eta[j], nu[j]) for j in range(m)]
    cells = []
    for a in est:
        dists = [sum((x - y) ** 2 for x, y in zip(a, t, strict=True)) for t in tru]
        best = 0
        for j in range(1, m):
            if dists[j] < dists[best]:  # strict: first index wins ties
                best = j
        cells.append(best)
    out = dict.fromkeys(("beta", "exp_tau", "eta", "nu", "total"), 0.0)
    sizes = [0] * m
    for j in range(m):
        mass = 0.0
        for i in range(m_hat):
            if cells[i] != j:
                continue
            sizes[j] += 1
            w = math.exp(tau_hat[i])
            mass += w
            db = float(np.sqrt(np.sum((np.asarray(beta_hat[i]) - beta[j]) ** 2)))
            de = float(np.sqrt(np.sum((np.asarray(eta_hat[i]) - eta[j]) ** 2)))
            dn = abs(float(nu_hat[i]) - float(nu[j]))
            out["beta"] += db
            out["eta"] += de
            out["nu"] += dn
            out["total"] += w * (db + de + dn)
        out["exp_tau"] += abs(mass - math.exp(tau[j]))
    out["total"] += out["exp_tau"]
    out["n_empty"] = sum(s == 0 for s in sizes)
    out["max_cell"] = max(sizes)
    return out, cells


def atoms(beta, eta, nu):
    beta, eta, nu = map(jnp.asarray, (beta, eta, nu))
    return jnp.concatenate([beta, eta.reshape(len(beta), -1), nu[:, None]], axis=1)


@jax.jit
def cells_of(beta_hat, eta_hat, nu_hat, beta, eta, nu):
    return voronoi_cells(atoms(beta_hat, eta_hat, nu_hat), atoms(beta, eta, nu))


@jax.jit
def errors_and_cells(bh, th, eh, nh, b, t, e, n):
    """One compile per shape for both public functions."""
    return voronoi_errors(bh, th, eh, nh, b, t, e, n), cells_of(bh, eh, nh, b, e, n)


def as_jnp(*xs):
    return [jnp.asarray(x, dtype=jnp.float64) for x in xs]


def assert_matches_reference(args, jax_args=None, rtol=1e-10):
    """Compare jax (on ``jax_args``, default ``args``) with the python reference on ``args``."""
    jax_args = as_jnp(*(args if jax_args is None else jax_args))
    got, cells_jax = errors_and_cells(*jax_args)
    ref, cells = reference(*[np.asarray(a, dtype=np.float64) for a in args])
    for name in FIELDS:
        np.testing.assert_allclose(float(getattr(got, name)), ref[name], rtol=rtol, atol=1e-12)
    cells_jax = np.asarray(cells_jax)
    assert cells_jax.tolist() == cells
    return got, cells_jax


def random_fit(rng, m_hat, m, d, r):
    shapes = [(m_hat, d), (m_hat,), (m_hat, r, d), (m_hat,), (m, d), (m,), (m, r, d), (m,)]
    return [rng.normal(size=s) for s in shapes]


def test_single_adapter_equals_plain_errors():
    rng = np.random.default_rng(0)
    bh, th, eh, nh, b, t, e, n = random_fit(rng, 1, 1, 3, 2)
    got = errors(*as_jnp(bh, th, eh, nh, b, t, e, n))
    assert isinstance(got, VoronoiErrors)
    plain = {
        "beta": np.linalg.norm(bh[0] - b[0]),
        "exp_tau": abs(np.exp(th[0]) - np.exp(t[0])),
        "eta": np.linalg.norm(eh[0] - e[0]),
        "nu": abs(nh[0] - n[0]),
    }
    for name, value in plain.items():
        assert abs(float(getattr(got, name)) - value) < 1e-12
    first = np.exp(th[0]) * (plain["beta"] + plain["eta"] + plain["nu"])
    assert abs(float(got.total) - (plain["exp_tau"] + first)) < 1e-12
    assert int(got.n_empty) == 0 and int(got.max_cell) == 1
    assert got.n_empty.dtype == jnp.int32 and got.max_cell.dtype == jnp.int32


def test_label_switching_hand_computed():
    # Truth: two well separated adapters, d = 2, R = 1.
    beta = [[1.0, 0.0], [-1.0, 0.0]]
    tau = [0.0, 0.0]
    eta = [[[1.0, 2.0]], [[-3.0, 0.0]]]
    nu = [0.5, 2.0]
    # Fit of adapter 0: dbeta = (0.3, 0.4) -> 0.5, deta = 0, dnu = 0.25, exp(tau_hat) = 1.
    # Fit of adapter 1: dbeta = 0, deta = (0.6, 0.8) -> 1.0, dnu = -0.5, exp(tau_hat) = 2.
    fit0 = ([1.3, 0.4], 0.0, [[1.0, 2.0]], 0.75)
    fit1 = ([-1.0, 0.0], math.log(2.0), [[-2.4, 0.8]], 1.5)
    expected = {
        "beta": 0.5,
        "exp_tau": 1.0,  # |1 - 1| + |2 - 1|
        "eta": 1.0,
        "nu": 0.75,
        "total": 1.0 + 1.0 * (0.5 + 0.25) + 2.0 * (1.0 + 0.5),
        "n_empty": 0,
        "max_cell": 1,
    }
    for order in ((fit0, fit1), (fit1, fit0)):
        hats = [[f[k] for f in order] for k in range(4)]
        got, cells = assert_matches_reference((*hats, beta, tau, eta, nu))
        assert cells.tolist() == ([0, 1] if order[0] is fit0 else [1, 0])
        for name, value in expected.items():
            assert abs(float(getattr(got, name)) - value) < 1e-12, name


def test_empty_cell_hand_computed():
    beta, tau, eta, nu = [[0.0], [10.0]], [0.0, 0.0], [[[0.0]], [[0.0]]], [1.0, 1.0]
    # Both fitted atoms are nearest true atom 0; true atom 1 has an empty cell.
    bh, th, eh, nh = [[0.5], [-0.5]], [0.0, 0.0], [[[0.0]], [[0.0]]], [1.0, 1.0]
    got = errors(*as_jnp(bh, th, eh, nh, beta, tau, eta, nu))
    assert int(got.n_empty) == 1 and int(got.max_cell) == 2
    # |e^0 + e^0 - e^0| + e^0 = 2 exactly; beta = 0.5 + 0.5; total = 2 + 1 * 0.5 + 1 * 0.5.
    assert float(got.exp_tau) == 2.0
    assert float(got.beta) == 1.0 and float(got.eta) == 0.0 and float(got.nu) == 0.0
    assert float(got.total) == 3.0
    # Non-trivial intercepts: |e^{t1} + e^{t2} - e^{tau_0}| + e^{tau_1}.
    th2, tau2 = [0.3, -1.2], [0.7, -0.4]
    got2 = errors(*as_jnp(bh, th2, eh, nh, beta, tau2, eta, nu))
    want = abs(math.exp(0.3) + math.exp(-1.2) - math.exp(0.7)) + math.exp(-0.4)
    assert abs(float(got2.exp_tau) - want) < 1e-12


def test_multi_atom_cell_matches_loop_reference():
    rng = np.random.default_rng(1)
    beta = np.array([[2.0, 0.0], [-2.0, 0.0]])
    tau = np.array([0.2, -0.3])
    eta = np.array([[[1.0, -1.0], [0.5, 0.0]], [[-1.0, 1.0], [0.0, -0.5]]])
    nu = np.array([0.4, 1.3])
    pick = np.array([0, 0, 1])  # two fitted adapters split true adapter 0
    bh = beta[pick] + 0.1 * rng.normal(size=(3, 2))
    eh = eta[pick] + 0.1 * rng.normal(size=(3, 2, 2))
    nh = nu[pick] + 0.1 * rng.normal(size=3)
    th = np.log(np.exp(tau[pick]) * np.array([0.4, 0.5, 1.1]))
    got, cells = assert_matches_reference((bh, th, eh, nh, beta, tau, eta, nu))
    assert cells.tolist() == [0, 0, 1]
    assert int(got.n_empty) == 0 and int(got.max_cell) == 2
    assert float(got.exp_tau) > 0.0 and float(got.total) > float(got.exp_tau)


def test_tie_goes_to_first_cell_only():
    beta, tau, eta, nu = [[-1.0], [1.0]], [0.0, 0.0], [[[0.0]], [[0.0]]], [0.0, 0.0]
    bh, th, eh, nh = [[0.0]], [0.0], [[[0.0]]], [0.0]  # exactly equidistant
    got, cells = errors_and_cells(*as_jnp(bh, th, eh, nh, beta, tau, eta, nu))
    assert cells.dtype == jnp.int32
    assert cells.tolist() == [0]
    # Counted once: |1 - 1| + 1 = 1 (counting it in both cells would give 0).
    assert float(got.exp_tau) == 1.0
    assert float(got.beta) == 1.0 and int(got.n_empty) == 1 and int(got.max_cell) == 1
    # Several fitted atoms, some tied (also a three-way tie): cell sizes still sum to m_hat.
    many = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [-0.5, 0.0], [0.0, 3.0]])
    true = jnp.array([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    cells = np.asarray(jax.jit(voronoi_cells)(many, true))
    assert cells.tolist() == [0, 0, 2, 1, 0]
    assert np.bincount(cells, minlength=4).sum() == 5


def test_jit_and_vmap_match_unbatched():
    rng = np.random.default_rng(2)
    fits = [random_fit(rng, 3, 2, 2, 2) for _ in range(5)]
    batched = [jnp.asarray(np.stack(parts)) for parts in zip(*fits, strict=True)]
    out = jax.jit(jax.vmap(voronoi_errors))(*batched)
    cells = jax.vmap(cells_of)(*[batched[k] for k in (0, 2, 3, 4, 6, 7)])
    assert cells.shape == (5, 3) and cells.dtype == jnp.int32
    for k, fit in enumerate(fits):
        single, single_cells = assert_matches_reference(fit)  # jitted, unbatched
        assert cells[k].tolist() == single_cells.tolist()
        for name in FIELDS:
            want = float(getattr(single, name))
            np.testing.assert_allclose(float(getattr(out, name)[k]), want, rtol=1e-13)
    assert out.n_empty.dtype == jnp.int32 and out.max_cell.dtype == jnp.int32


# Atom entries on a small dyadic grid: distances are exact in float64, so ties (which the grid
# makes frequent) resolve identically in the jax code and the python reference.
grid = st.integers(-2, 2).map(lambda k: k / 2)
taus = st.floats(-3.0, 3.0, allow_nan=False)


@st.composite
def problems(draw):
    m_hat, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    d, r = draw(st.integers(1, 3)), draw(st.integers(1, 2))

    def arr(shape, elems):
        n = math.prod(shape)
        return np.array(draw(st.lists(elems, min_size=n, max_size=n)), dtype=float).reshape(shape)

    shapes = [(m_hat, d), (m_hat,), (m_hat, r, d), (m_hat,), (m, d), (m,), (m, r, d), (m,)]
    return [arr(s, taus if k in (1, 5) else grid) for k, s in enumerate(shapes)]


def pad(args, d=3, r=2):
    """Zero-pad beta to d columns and eta to (r, d): every distance and norm is unchanged."""
    bh, th, eh, nh, b, t, e, n = args
    pb = lambda x: np.pad(x, [(0, 0), (0, d - x.shape[1])])
    pe = lambda x: np.pad(x, [(0, 0), (0, r - x.shape[1]), (0, d - x.shape[2])])
    return [pb(bh), th, pe(eh), nh, pb(b), t, pe(e), n]


@settings(max_examples=30, deadline=None)
@given(problems())
def test_property_matches_loop_reference(args):
    # The reference sees the drawn (d, R); jax sees them zero-padded to (3, 2), so at most 9
    # shapes are compiled (d and R shapes themselves are covered by the tests above).
    got, cells = assert_matches_reference(args, jax_args=pad(args))
    m_hat, m = len(args[1]), len(args[5])
    assert float(got.total) >= float(got.exp_tau) >= 0.0
    assert cells.shape == (m_hat,) and np.all((cells >= 0) & (cells < m))
    assert np.bincount(cells, minlength=m).sum() == m_hat
    assert 0 <= int(got.n_empty) <= m - 1
    assert 1 <= int(got.max_cell) <= m_hat


@pytest.mark.parametrize(("m_hat", "m"), [(1, 3), (3, 1)])
def test_extreme_counts(m_hat, m):
    rng = np.random.default_rng(3)
    got, _ = assert_matches_reference(random_fit(rng, m_hat, m, 2, 1))
    assert int(got.n_empty) == max(m - m_hat, 0)
    assert int(got.max_cell) == max(m_hat // m, 1)

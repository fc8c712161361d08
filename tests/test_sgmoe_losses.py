"""Tests for the D1/D2 Voronoi losses of arXiv 2305.03288 (moejax.sgmoe_losses).

- against an independent plain-Python implementation of the definitions (random inputs);
- zero at the truth (exact-fitted, and an over-fitted split of a true expert);
- invariance to permuting the fitted experts; NaN for D2 beyond their rbar table;
- against their own code on 36 of their stored estimates (tests/data/crpe_sgame_subset.npz:
  12 fits per K = 2, 3, 4 of the runs of their execute.sh, picked from the smallest, quartile
  and largest losses plus 4 at random; keys K{K}_beta (12, 2, K-1), K{K}_A (12, 2, K),
  K{K}_Sigma (12, 1, K) in their layout, K{K}_loss (12,) their stored _loss.npy values,
  K{K}_index (12, 2) the (n index, replicate) of each fit). Their stored losses are the
  output of their discrepancies.py (benchmarks/crpe_sgame.py checks that on all 24,000
  fits), and the literal transcription of their code in benchmarks/crpe_sgame.py is checked
  here on the subset too.
"""

import importlib.util
import itertools
import math
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from moejax.sgmoe_losses import (  # noqa: E402
    RBAR,
    anchor_last_gate,
    sgmoe_cells,
    sgmoe_d1,
    sgmoe_d2,
)

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT / "tests" / "data" / "crpe_sgame_subset.npz"
D1 = jax.jit(sgmoe_d1, static_argnames="metric")
D2 = jax.jit(sgmoe_d2, static_argnames=("metric", "rbar"))
# One compile per shape for both losses (XLA compiles dominate the run time).
BOTH = jax.jit(
    lambda *a, metric: (sgmoe_d1(*a, metric=metric), sgmoe_d2(*a, metric=metric)),
    static_argnames="metric",
)
TRUTH = {  # their model 1, last gate anchored at 0
    "tau": [-8.0, 0.0],
    "beta": [[25.0], [0.0]],
    "eta": [[-20.0], [20.0]],
    "b": [15.0, -5.0],
    "nu": [0.09, 0.16],
}
NAMES = ("tau", "beta", "eta", "b", "nu")


def reference(est, truth, exact, metric="euclidean", rbar=RBAR):
    """Plain-Python D1 / D2 from the definitions (module docstring of moejax.sgmoe_losses).

    est, truth: dicts of tau (K,), beta (K, d), eta (K, d), b (K,), nu (K,) (lists / arrays)."""
    K, Ks = len(est["tau"]), len(truth["tau"])
    norm = lambda v: math.sqrt(sum(float(x) ** 2 for x in np.ravel(v)))

    def blocks(i, j):
        return (
            norm(np.subtract(est["beta"][i], truth["beta"][j])),
            abs(float(est["b"][i]) - float(truth["b"][j])),
            norm(np.subtract(est["eta"][i], truth["eta"][j])),
            abs(float(est["nu"][i]) - float(truth["nu"][j])),
        )

    def dist(i, j):
        if metric == "blocksum":
            return sum(blocks(i, j))
        diffs = [
            *np.subtract(est["beta"][i], truth["beta"][j]),
            float(est["b"][i]) - float(truth["b"][j]),
            *np.subtract(est["eta"][i], truth["eta"][j]),
            float(est["nu"][i]) - float(truth["nu"][j]),
        ]
        return sum(float(x) ** 2 for x in diffs)

    cells = []
    for i in range(K):
        best = 0
        for j in range(1, Ks):
            if dist(i, j) < dist(i, best):
                best = j
        cells.append(best)
    sizes = [cells.count(j) for j in range(Ks)]
    total = 0.0
    for j in range(Ks):
        total += abs(
            sum(math.exp(est["tau"][i]) for i in range(K) if cells[i] == j)
            - math.exp(truth["tau"][j])
        )
    for i in range(K):
        j, c = cells[i], sizes[cells[i]]
        db, dbb, de, dn = blocks(i, j)
        if c == 1:
            term = db + dbb + de + dn
        elif exact:
            term = 0.0
        else:
            if c >= len(rbar):
                return math.nan
            r = rbar[c]
            term = db**r + dbb**r + de ** (r / 2) + dn ** (r / 2)
        total += math.exp(est["tau"][i]) * term
    return total


def args(est, truth):
    return [jnp.asarray(np.asarray(est[k], float)) for k in NAMES] + [
        jnp.asarray(np.asarray(truth[k], float)) for k in NAMES
    ]


def random_params(rng, K, d):
    return {
        "tau": rng.normal(size=K),
        "beta": rng.normal(size=(K, d)),
        "eta": rng.normal(size=(K, d)),
        "b": rng.normal(size=K),
        "nu": rng.uniform(0.1, 1.0, size=K),
    }


def near_truth(rng, truth, K, scale):
    """K fitted experts, each a perturbed copy of a true one (so cells can be shared)."""
    Ks = len(truth["tau"])
    s = np.concatenate([np.arange(Ks), rng.integers(0, Ks, size=K - Ks)])
    rng.shuffle(s)
    out = {}
    for k in NAMES:
        base = np.asarray(truth[k], float)[s]
        noise = scale * rng.normal(size=base.shape)
        out[k] = base + (np.abs(noise) if k == "nu" else noise)
    return out


@pytest.mark.parametrize("metric", ["euclidean", "blocksum"])
def test_against_reference_random(metric):
    rng = np.random.default_rng(0)
    for K, Ks, d in [(2, 2, 1), (4, 2, 2), (5, 3, 1)]:
        for _ in range(6):
            truth = random_params(rng, Ks, d)
            for est in (random_params(rng, K, d), near_truth(rng, truth, K, 0.3)):
                both = BOTH(*args(est, truth), metric=metric)
                for exact, got in zip((True, False), map(float, both), strict=True):
                    want = reference(est, truth, exact, metric)
                    if math.isnan(want):
                        assert math.isnan(got)
                    else:
                        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (K, Ks, exact)


def test_zero_at_truth():
    t = args(TRUTH, TRUTH)
    assert [float(x) for x in BOTH(*t, metric="euclidean")] == [0.0, 0.0]
    # Over-fitted: true expert 2 split in two copies whose weights sum to exp(tau*_2).
    split = {k: [*TRUTH[k], TRUTH[k][1]] for k in NAMES}
    split["tau"] = [-8.0, math.log(0.25), math.log(0.75)]
    # (D1 of the same split is also 0: a shared cell only adds its mass term.)
    d1, d2 = BOTH(*args(split, TRUTH), metric="euclidean")
    assert float(d2) == pytest.approx(0.0, abs=1e-15)
    assert float(d1) == pytest.approx(0.0, abs=1e-15)


def test_permutation_invariance():
    rng = np.random.default_rng(1)
    truth = random_params(rng, 2, 2)
    est = near_truth(rng, truth, 4, 0.2)
    base = [float(x) for x in BOTH(*args(est, truth), metric="euclidean")]
    for perm in itertools.permutations(range(4)):
        p = {k: np.asarray(v)[list(perm)] for k, v in est.items()}
        got = [float(x) for x in BOTH(*args(p, truth), metric="euclidean")]
        np.testing.assert_allclose(got, base, rtol=1e-13)


def test_d2_nan_beyond_rbar_and_vmap():
    four = {k: [TRUTH[k][0]] + [TRUTH[k][1]] * 4 for k in NAMES}  # a cell of 4 fitted atoms
    assert math.isnan(float(D2(*args(four, TRUTH))))
    assert not math.isnan(float(D1(*args(four, TRUTH))))
    assert float(D2(*args(four, TRUTH), rbar=(*RBAR, 8.0))) >= 0.0
    # vmap over a batch of fits, cells of every fit.
    rng = np.random.default_rng(2)
    ests = [near_truth(rng, TRUTH, 3, 0.1) for _ in range(5)]
    batch = [jnp.stack([args(e, TRUTH)[i] for e in ests]) for i in range(5)]
    got = jax.jit(jax.vmap(lambda *e: sgmoe_d2(*e, *args(TRUTH, TRUTH)[5:])))(*batch)
    want = [reference(e, TRUTH, exact=False) for e in ests]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    t = args(TRUTH, TRUTH)[5:]
    cells = jax.jit(jax.vmap(lambda be, et, bb, nn: sgmoe_cells(be, et, bb, nn, *t[1:])))(
        *batch[1:]
    )
    assert cells.shape == (5, 3) and cells.dtype == jnp.int32


def test_anchor_last_gate():
    tau, beta = jnp.array([1.0, -2.0, 0.5]), jnp.array([[3.0], [1.0], [2.0]])
    t, b = anchor_last_gate(tau, beta)
    np.testing.assert_allclose(t, [0.5, -2.5, 0.0])
    np.testing.assert_allclose(b, [[1.0], [-1.0], [0.0]])


def _their_fits(K):
    z = np.load(SUBSET)
    g = z[f"K{K}_beta"]
    g = np.concatenate([g, np.zeros((*g.shape[:2], 1))], axis=-1)  # last gate 0
    return g, z[f"K{K}_A"], z[f"K{K}_Sigma"], z[f"K{K}_loss"]


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("metric", ["euclidean", "blocksum"])
def test_their_stored_estimates(K, metric):
    """moejax on 12 of their stored fits per K equals their stored (their-code) losses."""
    g, A, S, loss = _their_fits(K)
    truth = args(TRUTH, TRUTH)[5:]
    for i in range(len(loss)):
        est = [g[i, 0], g[i, 1][:, None], A[i, 1][:, None], A[i, 0], S[i, 0]]
        d1, d2 = BOTH(*map(jnp.asarray, est), *truth, metric=metric)
        got = float(d1 if K == 2 else d2)
        assert got == pytest.approx(loss[i], rel=1e-12), (K, i)


def test_transcription_of_their_code():
    """The NumPy transcription of their loss in benchmarks/crpe_sgame.py gives their stored
    losses on the subset."""
    spec = importlib.util.spec_from_file_location(
        "crpe_sgame", ROOT / "benchmarks" / "crpe_sgame.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for K in (2, 3, 4):
        g, A, S, loss = _their_fits(K)
        for i in range(len(loss)):
            got = mod.theirs_loss_SGaME_exact(
                mod.THEIR_BETAS, mod.THEIR_AS, mod.THEIR_SIGMAS**2, g[i], A[i], S[i]
            )
            assert got == pytest.approx(loss[i], rel=1e-13)

"""Sweep lanes for the general model (`moejax.mix`): same protocol as the core lanes.

A lane's data are drawn block by block from fold_in(key(seed, n, replicate), block) into a
buffer; every pass loops over the active blocks only. Errors per block come from the Voronoi
loss (`moejax.voronoi`), which reduces to the plain block errors for one adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.losses import mean_hellinger
from moejax.mix.density import frozen_logpdf, gate_log_weights, log_class_probs, predictors
from moejax.mix.fit import MixBounds, MixData, fit_data, init_near_truth
from moejax.mix.sampling import sample_block
from moejax.mix.spec import MixSpec
from moejax.mix.truth import MixTruth, drifting_truth
from moejax.sampling import sample_covariates
from moejax.sweep.engine import fit_columns, lane_data
from moejax.voronoi import voronoi_errors


def build_mix(cfg: dict[str, Any]) -> tuple[MixSpec, MixTruth, MixBounds]:
    """The general model, its truth schedule and its box from a resolved config."""
    m, t, b = cfg["model"], cfg["truth"], cfg["bounds"]
    spec = MixSpec(
        d=m["d"],
        K=m["K"],
        frozen=m["frozen"],
        adapter=m["adapter"],
        eta0=m["eta0"],
        adapters=m["adapters"],
        gate=m["gate"],
        likelihood=m["likelihood"],
        frozen_likelihood=m["frozen_likelihood"],
        nu0=m["nu0"],
        scale=m["scale"],
        frozen_scale=m["frozen_scale"],
        bias=m["bias"],
        frozen_bias=m["frozen_bias"],
    )
    p = spec.params(t["beta"], t["tau"], t["eta"], t["nu"])
    nu_delta = t["nu_delta"] if spec.regression else np.zeros(spec.m)
    truth = drifting_truth(p, np.asarray(t["delta"]), np.asarray(nu_delta), t["gamma"])
    bounds = MixBounds(*(tuple(b[f]) for f in MixBounds._fields)).validate()
    return spec, truth, bounds


def adapter_weight(spec: MixSpec, truth: MixTruth, radius: float | None, points: int = 200_000):
    """E_X[total gate weight of the adapters] at the truth (gates do not drift with n)."""
    X = sample_covariates(jax.random.key(20260101), spec.d, points, radius)
    g = predictors(spec, truth.at(1.0), X)[:, : spec.m]
    return float(jnp.mean(1.0 - jnp.exp(gate_log_weights(spec.gate, g)[:, 0])))


def make_mix_lane_fn(
    cfg: dict[str, Any], spec: MixSpec, bounds: MixBounds, B: int, N: int
) -> Callable[..., dict]:
    """``lane(n, r, seed, truth)`` for a buffer of N rows and compute blocks of B rows."""
    e, ini, run = cfg["estimator"], cfg["init"], cfg["run"]
    radius = cfg["model"]["radius"]
    d, m_dens = spec.d, run["density_points"]

    def lane(n, r, seed, truth):
        ld = lane_data(
            sample_block, frozen_logpdf, spec, truth, seed, n, r, N, B, radius, jnp.float64
        )
        tp, blocks, k_init, k_dens = ld.tp, ld.blocks, ld.k_init, ld.k_dens
        data = MixData(ld.X1, ld.y, ld.w, jnp.asarray(n, jnp.float64), ld.lf0)
        init = (
            tp
            if ini["mode"] == "truth"
            else init_near_truth(k_init, tp, n, ini["c_gate"], ini["c_expert"], ini["rho"])
        )
        res = fit_data(spec, data, init, e["solver"], bounds, e["max_iter"], blocks)
        est = res.params
        err = voronoi_errors(est.beta, est.tau, est.eta, est.nu, tp.beta, tp.tau, tp.eta, tp.nu)
        if m_dens > 0 and not spec.regression:
            Xh = sample_covariates(k_dens, d, m_dens, radius)
            dens = mean_hellinger(log_class_probs(spec, est, Xh), log_class_probs(spec, tp, Xh))
        else:
            dens = jnp.nan  # regression: no closed-form Hellinger distance (not reported)
        many = spec.m > 1
        return {
            "err_beta": err.beta if spec.has_beta else jnp.nan,
            "err_exp_tau": err.exp_tau,
            "err_eta": err.eta,
            "err_nu": err.nu if spec.regression else jnp.nan,
            "err_voronoi": err.total if many else jnp.nan,
            "n_empty_cells": err.n_empty.astype(jnp.int32) if many else jnp.int32(0),
            "err_density": dens,
            **fit_columns(res),
        }

    return lane

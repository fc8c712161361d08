"""A sweep's problem: the resolved config as the model, truth schedule, box, estimator and start
rule the lanes need (`Problem`, from a config or built in Python with `problem`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.estimation.bounds import Bounds
from moejax.estimation.init import split_assignment
from moejax.mix.density import gate_log_weights, predictors, split_predictors
from moejax.mix.design import Design
from moejax.mix.sampling import (
    sample_covariates,
)
from moejax.mix.spec import MixSpec
from moejax.mix.truth import MixTruth, drifting_truth
from moejax.sweep import config as config_mod


def design_of(model: dict[str, Any]) -> Design:
    """The covariate design of a resolved [model] table (``covariates``, ``box``, ``radius``;
    a table without them: the normal design)."""
    low, high = model.get("box") or (0.0, 1.0)
    return Design(model.get("covariates") or "normal", float(low), float(high), model["radius"])


@dataclass(frozen=True)
class LaneOptions:
    """The options a lane's compiled program reads, typed and hashable (a static argument):
    the estimator (``method``, ``solver``, caps and tolerances, EM variant), the start rule
    (``init_mode`` and its constants), what a lane computes beside its fit
    (``density_points``), Newton's lane chunk, and the covariate design. Built once from the
    resolved config (`from_config`), so that no config dict reaches traced code."""

    method: str
    solver: str
    max_iter: int
    tol: float
    inner_max_iter: int
    em_accel: str
    switch_tol: float
    init_mode: str
    c_gate: float
    c_expert: float
    rho: float
    n_starts: int
    start_scale: float
    density_points: int
    lane_chunk: int
    design: Design

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LaneOptions:
        e, i, r = cfg["estimator"], cfg["init"], cfg["run"]
        return cls(
            method=e["method"],
            solver=e["solver"],
            max_iter=int(e["max_iter"]),
            tol=float(e["tol"]),
            inner_max_iter=int(e["inner_max_iter"]),
            em_accel=e["em_accel"],
            switch_tol=float(e["switch_tol"]),
            init_mode=i["mode"],
            c_gate=float(i["c_gate"]),
            c_expert=float(i["c_expert"]),
            rho=float(i["rho"]),
            n_starts=int(i["n_starts"]),
            start_scale=float(i["start_scale"]),
            density_points=int(r["density_points"]),
            lane_chunk=int(r["lane_chunk"]),
            design=design_of(cfg["model"]),
        )


@dataclass(frozen=True)
class Problem:
    """What a study needs: the model, its truth schedule, its box, and the resolved config
    sections the engine reads (``estimator``, ``init``, ``run``, ``sizes``, ``replicates``,
    ``seed``, ``model.radius``, ``truth.regime`` / ``gamma`` and ``name``).

    ``spec`` is the truth's model (m* adapters: the data are drawn from it); ``fit_spec`` the
    fitted model (m_hat >= m* adapters, otherwise the same gate, likelihood, experts and box;
    None: ``spec``, the exact-fitted case)."""

    spec: MixSpec
    truth: MixTruth
    bounds: Bounds
    cfg: dict[str, Any]
    fit_spec: MixSpec | None = None

    @property
    def regime(self) -> str:
        """The truth's regime, "heterogeneous" or "homogeneous" (``truth.regime``)."""
        return self.cfg["truth"]["regime"]

    @property
    def gamma(self) -> float | None:
        """The drift exponent of a homogeneous truth (None for a heterogeneous one, as in a
        run's manifest)."""
        return float(self.cfg["truth"]["gamma"]) if self.regime == "homogeneous" else None

    @property
    def model(self) -> dict[str, Any]:
        """The model config as a run's manifest records it (``config["model"]``), with at least
        ``gate``, ``adapters`` (m*) and ``fitted_adapters`` (m_hat): what the report reads to
        pick its hypotheses (`moejax.report.theory.theory_regime`)."""
        fit = self.fit_spec if self.fit_spec is not None else self.spec
        return {
            **self.cfg.get("model", {}),
            "gate": self.spec.gate,
            "adapters": self.spec.m,
            "fitted_adapters": fit.m,
        }

    @property
    def options(self) -> LaneOptions:
        """The typed options the lane program reads (`LaneOptions`)."""
        return LaneOptions.from_config(self.cfg)

    def __post_init__(self) -> None:
        if self.fit_spec is None:
            object.__setattr__(self, "fit_spec", self.spec)
        elif self.fit_spec != fitted_spec(self.spec, self.fit_spec.m):
            raise ValueError(
                "fit_spec: must be the truth's spec with adapters >= "
                f"{self.spec.m} (only the number of adapters may differ)"
            )


def fitted_spec(spec: MixSpec, fitted_adapters: int) -> MixSpec:
    """The fitted model of a truth ``spec`` (m* adapters) with ``fitted_adapters`` = m_hat >= m*
    adapters: the same gate, likelihood, experts and output maps (``spec`` itself when
    m_hat = m*). Raises ValueError naming ``fitted_adapters`` otherwise."""
    if isinstance(fitted_adapters, bool) or not isinstance(fitted_adapters, int | np.integer):
        raise ValueError(f"fitted_adapters: expected an integer, got {fitted_adapters!r}")
    if fitted_adapters < spec.m:
        raise ValueError(
            f"fitted_adapters: must be >= the truth's {spec.m} adapter(s) (spec.adapters), "
            f"got {fitted_adapters}"
        )
    if fitted_adapters == spec.m:
        return spec
    # A MixSpec of the same fields (the paper face's ModelSpec has no adapters argument).
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(MixSpec) if f.init}
    return MixSpec(**{**fields, "adapters": int(fitted_adapters)})


def build_problem(cfg: dict[str, Any]) -> Problem:
    """The model (any member of the family), its truth schedule and its box from a resolved
    config."""
    m, t, b = cfg["model"], cfg["truth"], cfg["bounds"]
    spec = MixSpec(
        d=m["d"],
        K=m["K"],
        frozen=None if m["frozen"] == config_mod.PLAIN else m["frozen"],
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
        expert_intercept=m["expert_intercept"],
    )
    p = spec.params(t["beta"], t["tau"], t["eta"], t["nu"])
    nu_delta = t["nu_delta"] if spec.regression else np.zeros(spec.m)
    truth = drifting_truth(p, np.asarray(t["delta"]), np.asarray(nu_delta), t["gamma"])
    bounds = Bounds(*(tuple(b[f]) for f in Bounds._fields)).validate()
    fit = fitted_spec(spec, m.get("fitted_adapters") or m["adapters"])
    return Problem(spec, truth, bounds, cfg, fit)


def problem(
    spec: MixSpec,
    truth: MixTruth,
    *,
    bounds: Bounds | None = None,
    estimator: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    sizes: Iterable[int] | None = None,
    replicates: int = 40,
    seed: int = 0,
    radius: float | None = None,
    name: str = "problem",
    fitted_adapters: int | None = None,
) -> Problem:
    """A study built in Python: any model of the family (a `moejax.ModelSpec` or a
    `moejax.mix.MixSpec`, user activations included), a truth schedule (`moejax.Truth`,
    `moejax.mix.fixed_truth` / `drifting_truth`), the box, and the estimator / init / run
    options of a sweep config as dicts (keys and defaults of the ``[estimator]``, ``[init]``
    and ``[run]`` tables). ``sizes`` defaults to the config default (20 log-spaced sizes in
    [1e3, 1e5]). ``fitted_adapters`` (m_hat, default the spec's m*): fit m_hat >= m* adapters
    to data from the m*-adapter truth (`fitted_spec`; the config's ``model.fitted_adapters``).
    Bad options raise ValueError naming the field."""
    if not isinstance(spec, MixSpec):
        raise ValueError(f"spec: expected a ModelSpec or MixSpec, got {type(spec).__name__}")
    if not isinstance(truth, MixTruth):
        raise ValueError(
            "truth: expected a truth schedule (moejax.Truth, moejax.mix.fixed_truth or "
            f"drifting_truth), got {type(truth).__name__}"
        )
    truth = MixTruth(*truth)  # the paper face's Truth gives Params: the engine needs MixParams
    try:
        spec.check_params(truth.at(1.0))
    except ValueError as err:
        raise ValueError(f"truth: does not fit the spec ({err})") from None
    fit = fitted_spec(spec, spec.m if fitted_adapters is None else fitted_adapters)
    bounds = (Bounds() if bounds is None else Bounds(*bounds)).validate()
    raw = {
        "name": name,
        "seed": seed,
        "replicates": replicates,
        "estimator": dict(estimator or {}),
        "init": dict(init or {}),
        "run": dict(run or {}),
        "sizes": {"list": [int(v) for v in sizes]} if sizes is not None else {},
    }
    if radius is not None and not radius > 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    cfg = config_mod.resolve_engine(raw, min_size=fit.n_params)
    if cfg["init"]["mode"] == "truth" and fit.m > spec.m:
        raise ValueError(
            f"init.mode: 'truth' with fitted_adapters = {fit.m} > the truth's {spec.m} would "
            "start the split copies identical; use near_truth or multistart"
        )
    cfg["model"] = {
        "radius": None if radius is None else float(radius),
        "adapters": spec.m,
        "fitted_adapters": fit.m,
    }
    gamma = float(np.asarray(truth.gamma))
    cfg["truth"] = {
        "regime": "homogeneous" if spec.homogeneous else "heterogeneous",
        "gamma": gamma,
    }
    return Problem(spec, truth, bounds, cfg, fit)


def init_rule(problem: Problem) -> str:
    """The start rule of a problem's fits, in words (recorded in the manifest as
    ``init_rule``)."""
    ini, m, m_hat = problem.cfg["init"], problem.spec.m, problem.fit_spec.m
    mode = ini["mode"]
    if mode == "multistart":
        return (
            f"multistart: {ini['n_starts']} truth-free starts for all {m_hat} fitted adapters "
            f"(every coordinate of the flat parameter vector N(0, {ini['start_scale']:g}^2), "
            "clipped into the box); the best finite log-likelihood wins; fits.csv 'start' is "
            "the index of the winning start"
        )
    if mode == "truth":
        return "truth: every fit starts at the truth G*(n)"
    noise = (
        f"truth + N(0, (c n^-rho)^2) noise, c = {ini['c_gate']:g} on beta and tau, "
        f"{ini['c_expert']:g} on eta (nu: multiplicative), rho = {ini['rho']:g}"
    )
    if m_hat == m:
        return f"near_truth: {noise}"
    ref = (
        " (the plain MoE: round robin over experts 1..m*-1; its reference expert 0, whose gate "
        "logit is fixed at 0, is never split)"
        if problem.spec.plain
        else ""
    )
    first = 1 if problem.spec.plain else 0
    src = split_assignment(m, m_hat, first)
    return (
        f"near_truth, split ({m_hat} fitted adapters, {m} true): fitted adapter i < {m} starts "
        f"from true adapter i, each extra one i = {m}..{m_hat - 1} splits true adapter "
        f"(i - {m}) mod {m}{ref} (round robin; true adapter per fitted adapter: {list(src)}); "
        "the k copies of a true adapter s start at its atom (beta*, eta*, nu*) with "
        "tau*_s - log(k), so that their gate weights sum to the truth's, each perturbed "
        f"independently: {noise}"
    )


def resolve_problem(
    config: Any, sizes: Iterable[int] | None, replicates: int | None, seed: int | None
) -> Problem:
    """A `Problem` from a config path, a config dict (raw or resolved) or a `Problem`, with
    sizes / replicates / seed overridden when given."""
    if isinstance(config, Problem):
        if sizes is None and replicates is None and seed is None:
            return config
        cfg = config_mod.override_engine(
            config.cfg, sizes, replicates, seed, min_size=config.fit_spec.n_params
        )
        return dataclasses.replace(config, cfg=cfg)
    overrides: dict[str, Any] = {}
    if sizes is not None:
        overrides["sizes.list"] = [int(v) for v in sizes]
    if replicates is not None:
        overrides["replicates"] = replicates
    if seed is not None:
        overrides["seed"] = seed
    if isinstance(config, str | os.PathLike):
        cfg = config_mod.load(Path(config), overrides)
    elif isinstance(config, dict):
        cfg = config_mod.resolve(config_mod.apply_overrides(config, overrides))
    else:
        raise ValueError(
            "config: expected a config path, a config dict or a moejax Problem, got "
            f"{type(config).__name__}"
        )
    return build_problem(cfg)


def adapter_weight(problem: Problem, points: int = 200_000) -> float:
    """E_X[total gate weight of the adapters] at the truth, by Monte Carlo (gates do not
    drift with n); the plain MoE: of its experts 1..m-1 (all but the gate's reference)."""
    spec, design = problem.spec, design_of(problem.cfg["model"]).for_points

    @jax.jit  # one small program (op by op, its ~30 operations cost ~1 s of compilation)
    def weight(truth):
        X = sample_covariates(jax.random.key(20260101), spec.d, points, design)
        g = split_predictors(spec, predictors(spec, truth.at(1.0), X))[0]
        return jnp.mean(1.0 - jnp.exp(gate_log_weights(spec.gate, g)[:, 0]))

    return float(weight(problem.truth))

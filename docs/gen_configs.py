"""Generate docs/configs.md, the configs reference, from the config schema.

The fields, their types and defaults, and the allowed values of every choice come from the code
(`moejax.sweep.config.SCHEMA` and its option lists, `moejax.sweep.grid.STUDY_SCHEMA`); only the
one-line meanings below are written here, and every schema field must have one (and no other
field may), so a field added to the schema without a meaning fails the docs build and the tests.

    python docs/gen_configs.py          # rewrite docs/configs.md (`make docs` does this)
    python docs/gen_configs.py --check  # exit 1 when docs/configs.md is out of date

Also an MkDocs hook (mkdocs.yml ``hooks:``): the build fails when docs/configs.md is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script or as a hook from any directory
    sys.path.insert(0, str(ROOT))

from moejax.experts import BUILTIN_ACTIVATIONS  # noqa: E402
from moejax.sweep import config as C  # noqa: E402
from moejax.sweep import grid as G  # noqa: E402
from moejax.sweep import schema as S  # noqa: E402

OUT = ROOT / "docs" / "configs.md"

# What each field means; the values each choice allows are appended from the code's lists.
HELP: dict[str, dict[str, str]] = {
    "": {
        "name": "run directory name under `runs/` (and the study's name for a grid config)",
        "seed": "keys are folded from (seed, n, replicate) only",
        "replicates": "Monte Carlo replicates per sample size",
    },
    "model": {
        "d": "covariate dimension",
        "K": "classes; class K-1 (0-based) is the reference, logit 0",
        "frozen": "the frozen expert's activation a0, or `none` for the plain MoE (no frozen "
        "expert; see [the model](model.md#the-plain-moe-covariate-designs-and-expert-intercepts)) "
        "(`softplus-W`: a ReLU smoothed to width "
        "W > 0, W log(1 + exp(z / W)), e.g. `softplus-0.1`; `package.module:function`: a JAX "
        "function imported from an installed module, e.g. `jax.numpy:sin`, checked to be "
        "elementwise, see [user activations](model.md#user-activations))",
        "adapter": "the adapter's activation a (names as for `frozen`)",
        "scale": "adapter logit scale s (not estimated)",
        "frozen_scale": "the frozen expert's logit scale (default: `scale`)",
        "eta0": 'the frozen expert\'s weights: a (K-1) x d matrix (1 x d for regression), or "basis" = rows e_1..e_{K-1}',
        "bias": "optional fixed per-class biases b (K-1 numbers; 1 for regression)",
        "frozen_bias": "optional fixed biases of the frozen expert",
        "radius": "optional: X ~ N(0, I_d) conditioned on ||x|| <= radius",
        "covariates": "the covariate design: normal (X ~ N(0, I_d)), uniform (on the box "
        "[low, high]^d) or grid (d = 1: the fixed design x = linspace(low, high, n))",
        "box": "[low, high] of the uniform and grid designs",
        "expert_intercept": "true: every trainable expert's predictor eta . (x, 1) gets an "
        "estimated intercept (eta has d + 1 columns, the intercept last)",
        "adapters": "m* true adapters (m > 1: Voronoi errors, see [the model](model.md#voronoi-loss-m-1))",
        "fitted_adapters": "m_hat >= m* adapters fitted (default m*; more: over-fitting, see below)",
        "gate": "softmax (m = 1: the paper's sigmoid gate), input_free (constant weights softmax(0, tau)), sigmoid (independent switches) or laplace (logits tau_j - ||x - W_j||, W_j in truth.beta)",
        "likelihood": "the adapters' likelihood",
        "frozen_likelihood": "the frozen expert's likelihood (default: `likelihood`; categorical with categorical only)",
        "nu0": "regression: the frozen expert's variance",
    },
    "truth": {
        "regime": "heterogeneous, or homogeneous (then `adapter` must equal `frozen`)",
        "beta": 'list of d numbers (m > 1: m rows); "default" = 1_d / sqrt(d)',
        "tau": "a number (m > 1: m numbers or one)",
        "eta": 'heterogeneous truth: a (K-1) x d matrix (m > 1: m of them), "basis", "basis_shifted" or "eta0"',
        "delta": 'homogeneous: eta*(n) = eta0 + delta n^(-gamma); shaped like eta, or "eta0"',
        "gamma": "homogeneous: the drift exponent",
        "nu": "regression: the adapters' variance (default nu0; one per adapter or one)",
        "nu_delta": "homogeneous regression: nu*(n) = nu0 + nu_delta n^(-gamma)",
    },
    "sizes": {
        "list": "explicit sample sizes (distinct positive integers); when given, min/max/count are ignored",
        "min": "smallest of `count` log-spaced sizes in [min, max]",
        "max": "largest of the log-spaced sizes",
        "count": "how many log-spaced sizes",
    },
    "estimator": {
        "method": "direct MLE, or em (EM with numerical M-steps)",
        "solver": "the box-constrained minimiser",
        "max_iter": "solver iterations (direct) or EM iterations (em)",
        "tol": "EM: relative log-likelihood change at which it stops",
        "inner_max_iter": "EM: cap per M-step solve",
        "em_accel": "EM: newton (EM, then the solver on the full likelihood; default), "
        "squarem, or none (plain EM) ([estimators](estimators.md#accelerated-em-em_accel))",
        "switch_tol": "EM with em_accel = newton: the relative log-likelihood change at which "
        "EM hands over to the solver",
    },
    "bounds": {
        "beta": "[lower, upper] of every gate slope",
        "tau": "[lower, upper] of every gate intercept",
        "eta": "[lower, upper] of every expert weight",
        "nu": "[lower, upper] of regression variances (estimated on the log scale; lower > 0)",
    },
    "init": {
        "mode": "truth, near_truth (truth + N(0, (c n^-rho)^2) noise) or multistart (random starts, best log-likelihood)",
        "c_gate": "near_truth: noise constant c of the gate parameters (the group's constants)",
        "c_expert": "near_truth: noise constant c of the expert weights",
        "rho": "near_truth: the noise shrinks as n^-rho",
        "n_starts": "multistart: number of random N(0, start_scale^2) starts",
        "start_scale": "multistart: sd of the random starts",
    },
    "run": {
        "lanes": "G, lanes per device in each compiled call; 0 = automatic (4 on a CPU, 2048 on a GPU, lowered to fit memory_gb). Part of the compiled program: results are bit for bit the same for every chunk size and device count, and may differ in rounding (~1e-14) for another G",
        "lane_chunk": "lanes per chunk of Newton's loop: each trip runs only the lanes still iterating, gathered into chunks of this many (a finished lane costs nothing more; the executed-to-useful pass ratio is in the manifest's passes); 0 = automatic (lockstep below 128 lanes, else max(64, G / 32)); G or more = lockstep. Part of the compiled program: the compacted loop may differ from lockstep in rounding (~1e-16 relative), never with the chunk",
        "chunk": "lanes per part on disk (the resume granularity); 0 = 64 rounded up to whole calls. A chunk that is not a multiple of lanes x devices pads its last call with copies of its last lane",
        "block_rows": "rows per block of the compiled row loops (largest allowed)",
        "buffer_ratio": "sizes within this factor share one held-data buffer (one compiled program; a lane only ever touches its own ceil(n / B) blocks)",
        "max_padding": "rows processed / real rows allowed (the block size halves until so)",
        "density_points": "held-out covariates for the Hellinger error; 0 turns it off",
        "memory_gb": "memory budget (GB) of one device's call: G, and held or streamed data. "
        "Left out: 2 on a CPU; on a GPU or TPU half the device's memory limit "
        '(`memory_stats()["bytes_limit"]`; 2 where the device reports none). The manifest '
        "records the budget used (`memory_gb`)",
    },
}

STUDY_HELP: dict[str, str] = {
    "statistic": "slope: log-log slope across n with its bootstrap CI (the run's slopes.csv numbers); sqrt_n_median: the geometric mean over n of sqrt(n) x the median error, with its CI",
    "x": 'the figure\'s x-axis: a numeric grid key (default: the first) or a manifest quantity; "point" (or no numeric key): one bar per point',
    "group": "series: a text-valued grid key (default: the first, when there is an x)",
    "blocks": "error blocks to compare (default: every block the runs have)",
    "aggregate": "the slope's aggregate over replicates",
    "n_boot": "bootstrap draws",
    "seed": "the bootstrap's seed",
    "ci": "confidence level of the intervals",
    "fit": "sqrt_n_median: fit b in statistic ~ x^b per series (default: true for sqrt_n_median with an x)",
    "theory": "show the uniform and pointwise hypotheses beside slopes ([theory](theory.md))",
    "joint": "drift studies: also fit log error = a log n + c log delta_n + const over every "
    "point and size, per block, beside each hypothesis' (a, c) (`study-joint.csv`; "
    '`statistic = "joint"` is `"slope"` with `joint = true`)',
    "starts": "start-rule studies (the points change only `init.*`, so they fit the same data): "
    "per n the share of fits reaching the best log-likelihood found on each data set, and the "
    "slopes' paired differences to the first point (`study-starts.csv`, "
    "`study-starts-slopes.csv`)",
    "title": "title of study.md",
    "note": "a note printed under the title in study.md",
    "reference": 'published values: label = "...", values.<point> = { block = number, ... }; a column says whether each is inside our CI',
}

# Allowed values, from the lists where the options are defined.
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "frozen"): (*BUILTIN_ACTIVATIONS, "softplus-W", "package.module:function"),
    ("model", "adapter"): (*BUILTIN_ACTIVATIONS, "softplus-W", "package.module:function"),
    ("model", "gate"): C.GATES,
    ("model", "likelihood"): C.LIKELIHOODS,
    ("model", "frozen_likelihood"): C.LIKELIHOODS,
    ("truth", "regime"): C.REGIMES,
    ("estimator", "method"): C.METHODS,
    ("estimator", "solver"): C.SOLVER_NAMES,
    ("init", "mode"): C.INIT_MODES,
}
STUDY_CHOICES: dict[str, tuple[str, ...]] = {
    "statistic": G.STATISTICS,
    "aggregate": ("log_median", "mean_log", "log_mean"),
    "blocks": G.STUDY_BLOCKS,
    "x": G.MANIFEST_QUANTITIES,
}

_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list"}
_TYPES.update(
    {
        dict: "table",
        "matrix": "matrix or name",
        "vector": "list of numbers",
        "sizes": "list of integers",
        "array": "number, (nested) list or name",
    }
)

PREAMBLE = """\
<!-- Generated by docs/gen_configs.py from moejax/sweep/config.py and moejax/sweep/grid.py:
     do not edit; run `make docs` (or `python docs/gen_configs.py`). -->
# Configs reference

A sweep is a TOML file; the shipped ones are in `sweeps/` and can be named without their path
(`moejax sweep heterogeneous`, `moejax.simulate("heterogeneous")`; see
`moejax.sweep.config_path`). Everything left out takes the default below, and the resolved
config is written to the run's manifest. Bad input (unknown key, with the nearest valid name;
wrong type; bad value; TOML error; missing file) exits with status 2 and one line naming the
field, before anything is compiled or written.

This page is generated from the config schema (`moejax.sweep.config.SCHEMA`, the option lists
beside it, and `moejax.sweep.grid.STUDY_SCHEMA`), so its fields, types, defaults and allowed
values are those the code accepts.

A config can start from another one: `extends = "homogeneous.toml"` (relative to the file)
merges the other file's tables underneath; every study config in `sweeps/` is written that way.

Every sample size must be at least the model's number of free parameters (per adapter: the
gate's d + 1, or 1 under the input-free gate, R d expert weights and, for regression, a
variance); a smaller one is refused with exit 2 and one line naming the size and the count,
from the config and from `--sizes` alike.

R is the number of expert weight rows: K-1 classes (categorical) or 1 (regression: mean
s a(eta . x) + b, variance nu). With m > 1 adapters the truth takes beta (m, d), tau (m numbers
or one), eta and delta (m, R, d).
"""

MIDDLE = """\
## Several adapters, over-fitting

Every config runs on the one model family (`moejax.mix`, see [the model](model.md)): any number
of adapters, any gate, any likelihood, with any estimator (`direct` or `em`) and any
initialisation (`truth`, `near_truth`, `multistart`), and may fit more adapters than the truth
has (`model.fitted_adapters` = m_hat > m* = `model.adapters`; the data come from the m*-adapter
truth, the fit has m_hat adapters). Near-truth starts then *split* true adapters: fitted
adapter i < m* starts near true adapter i, each extra one i >= m* near true adapter
(i - m*) mod m* (round robin), every copy with its own near-truth noise and tau*_s - log k for
the k copies of adapter s, so the copies' weights sum to the truth's (the first m* adapters
take exactly the noise an exact fit would; the manifest's `init_rule` says this in words).
Multi-start draws random starts for all m_hat adapters; `truth` starts are refused (identical
copies would give a singular Hessian that Newton's steps keep singular). The fits.csv columns
are the same for every model: `err_nu` (|nu_hat - nu*|) is filled for regression experts,
`err_voronoi`, `n_empty_cells` and `n_shared_cells` whenever m or m_hat exceeds 1;
`err_beta` is empty under the input-free gate and `err_density` under regression experts (no
closed-form Hellinger distance; not reported).

## Studies: `[grid]` and `[study]`

A config with a `[grid]` table is a *study*, a family of sweeps (see [studies](studies.md)).

`[grid]`: keys are dotted config paths (`"truth.gamma"`, `"model.gate"`, `"replicates"`: any
field above), values are non-empty lists. Several keys give their product (the first key
varying slowest); `zip = true` pairs them instead (lists of one length); `names = [...]` names
the points (one per point; default: `<last part of the key>-<value>`, joined by `_` over keys,
e.g. `gamma-0.125`). Or named points, each its own overrides (points that differ in several
keys): one `[grid.points.<name>]` table of dotted-key overrides per point. Point names are
letters, digits and `._+-` (a directory name).

`[study]` (all optional) says how the points are compared:
"""


def _fmt_default(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return f'`"{v}"`'
    return f"`{v!r}`".replace("'", '"')


def _row(key: str, kind: Any, default: Any, text: str, choices: tuple[str, ...] | None) -> str:
    if choices:
        text += ". One of: " + ", ".join(f"`{c}`" for c in choices)
    text = text.replace("|", "\\|")
    return f"| `{key}` | {_TYPES[kind]} | {_fmt_default(default)} | {text} |"


def check_help() -> None:
    """Every schema field has a meaning here, and every meaning a field (else ValueError)."""
    problems = []
    for section, fields in C.SCHEMA.items():
        have = HELP.get(section, {})
        problems += [
            f"{C._where(section, k)}: no meaning in docs/gen_configs.py"
            for k in fields
            if k not in have
        ]
        problems += [
            f"{C._where(section, k)}: documented but not in the schema"
            for k in have
            if k not in fields
        ]
    problems += [f"[{s}]: not a schema section" for s in HELP if s not in C.SCHEMA]
    problems += [f"study.{k}: no meaning" for k in G.STUDY_SCHEMA if k not in STUDY_HELP]
    problems += [f"study.{k}: not in STUDY_SCHEMA" for k in STUDY_HELP if k not in G.STUDY_SCHEMA]
    if problems:
        raise ValueError("configs reference out of step with the schema: " + "; ".join(problems))


def render() -> str:
    """The text of docs/configs.md."""
    check_help()
    out = [PREAMBLE]
    head = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for section, fields in C.SCHEMA.items():
        out.append(f"## `[{section}]`\n" if section else "## Top level\n")
        rows = [
            _row(k, kind, default, HELP[section][k], CHOICES.get((section, k)))
            for k, (kind, default) in fields.items()
        ]
        out.append("\n".join([*head, *rows]) + "\n")
    out.append(MIDDLE)
    rows = [
        _row(k, kind, default, STUDY_HELP[k], STUDY_CHOICES.get(k))
        for k, (kind, default) in G.STUDY_SCHEMA.items()
    ]
    out.append("\n".join([*head, *rows]) + "\n")
    run_only = ", ".join(f"`{C._where(s, k)}`" for s, k in sorted(C.RUN_ONLY))
    out.append(
        "## What a run's hash covers\n\n"
        "The manifest records the config's hash (`moejax.sweep.config_hash`); a run directory "
        "that holds another config is refused unless `--force`. The hash leaves out the name and "
        f"the fields that change how a run executes, not what it computes: {run_only}.\n"
    )
    out.append(
        "## What a run writes: fits.csv\n\n"
        "One row per (n, replicate), sorted, with these columns in this order "
        "(`moejax.sweep.schema.COLUMNS`; a column marked *later* reads as missing from older "
        "files). The evidence of every fit (estimate, standard errors, bound flags, truth) is "
        "in estimates.npz beside it.\n\n| column | kind | meaning |\n|---|---|---|"
    )
    out.append(
        "\n".join(
            f"| `{c.name}` | {c.kind} | {c.meaning}{' (*later*)' if c.later else ''} |"
            for c in S.COLUMNS
        )
        + "\n"
    )
    return "\n".join(out)


def on_pre_build(config: Any) -> None:
    """MkDocs hook: fail the build when docs/configs.md is not what the schema gives."""
    if not OUT.is_file() or OUT.read_text() != render():
        from mkdocs.exceptions import PluginError

        raise PluginError(
            "docs/configs.md is out of date with the config schema: run `make docs` "
            "(or `python docs/gen_configs.py`)"
        )


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        ok = OUT.is_file() and OUT.read_text() == text
        print("docs/configs.md is up to date" if ok else "docs/configs.md is out of date")
        return 0 if ok else 1
    if not OUT.is_file() or OUT.read_text() != text:
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Sweep configuration: TOML schema, defaults, validation, and the objects it resolves to.

Every field has a default; what the user leaves out is filled in and written to the manifest.
Validation happens before anything is compiled: unknown keys (with the nearest valid name), wrong
types, bad values and inconsistent shapes raise `ConfigError`, whose message is one line naming
the field and the value.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from moejax.estimation.estimators import (
    DEFAULT_EM_ACCEL,
    DEFAULT_SWITCH_TOL,
    EM_ACCELS,
    METHODS,
)
from moejax.estimation.init import INIT_MODES, to_reference
from moejax.estimation.solvers import SOLVERS
from moejax.experts import (
    BUILTIN_ACTIVATIONS,
    is_activation_name,
    is_import_path,
    resolve_activation,
)
from moejax.mix.design import DESIGNS
from moejax.mix.gates import GATES, get_gate
from moejax.mix.likelihoods import LIKELIHOODS, get_likelihood
from moejax.mix.spec import MixParams, count_params


class ConfigError(ValueError):
    """A bad sweep configuration or command-line value; the message is one line."""


class ConfigWarning(UserWarning):
    """A valid configuration that probably does not mean what it says; the message is one
    line (``moejax sweep`` prints it as ``moejax: warning: ...`` on stderr)."""


# (type, default) per field; type is one of int, float, str, bool, "matrix", "vector", "sizes".
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "": {
        "name": (str, "sweep"),
        "seed": (int, 0),
        "replicates": (int, 40),
    },
    "model": {
        "d": (int, 4),
        "K": (int, 3),
        "frozen": (str, "linear"),
        "adapter": (str, "tanh"),
        "scale": (float, 1.0),
        "frozen_scale": (float, None),
        "eta0": ("matrix", "basis"),
        "bias": ("vector", None),
        "frozen_bias": ("vector", None),
        "radius": (float, None),
        "covariates": (str, "normal"),
        "box": ("vector", [0.0, 1.0]),
        "expert_intercept": (bool, False),
        "adapters": (int, 1),
        "fitted_adapters": (int, None),
        "gate": (str, "softmax"),
        "likelihood": (str, "categorical"),
        "frozen_likelihood": (str, None),
        "nu0": (float, 1.0),
    },
    "truth": {
        "regime": (str, "heterogeneous"),
        "beta": ("array", "default"),
        "tau": ("array", 0.0),
        "eta": ("array", "basis"),
        "delta": ("array", "eta0"),
        "gamma": (float, 0.125),
        "nu": ("array", None),
        "nu_delta": ("array", None),
    },
    "sizes": {
        "list": ("sizes", None),
        "min": (int, 1000),
        "max": (int, 100000),
        "count": (int, 20),
    },
    "estimator": {
        "method": (str, "direct"),
        "solver": (str, "newton"),
        "max_iter": (int, 100),
        "tol": (float, 1e-12),
        "inner_max_iter": (int, 50),
        "em_accel": (str, DEFAULT_EM_ACCEL),
        "switch_tol": (float, DEFAULT_SWITCH_TOL),
    },
    "bounds": {
        "beta": ("vector", [-5.0, 5.0]),
        "tau": ("vector", [-8.0, 8.0]),
        "eta": ("vector", [-5.0, 5.0]),
        "nu": ("vector", [1e-5, 100.0]),
    },
    "init": {
        "mode": (str, "near_truth"),
        "c_gate": (float, 0.005),
        "c_expert": (float, 0.05),
        "rho": (float, 0.083),
        "n_starts": (int, 8),
        "start_scale": (float, 1.0),
    },
    "run": {
        "chunk": (int, 0),
        "max_padding": (float, 1.3),
        "block_rows": (int, 1024),
        "buffer_ratio": (float, 1000.0),
        "density_points": (int, 1000),
        "memory_gb": (float, None),
        "lanes": (int, 0),
        "lane_chunk": (int, 0),
    },
}

REGIMES = ("heterogeneous", "homogeneous")
#: ``model.frozen`` of the plain MoE: no frozen expert (`moejax.mix.MixSpec` frozen=None).
PLAIN = "none"
# The option lists are those of the modules that define the options (one copy each; the
# configs reference and config validation ask them).
SOLVER_NAMES = tuple(SOLVERS)
# Fields that change how a run is executed but not its results; excluded from the config hash.
# (block_rows, lanes and memory_gb may change rounding, never the data: see README "Scaling out".)
RUN_ONLY = {
    ("run", "chunk"),
    ("run", "memory_gb"),
    ("run", "buffer_ratio"),
    ("run", "block_rows"),
    ("run", "lanes"),
    ("run", "lane_chunk"),
}


def _where(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _err(field: str, value: Any, msg: str) -> ConfigError:
    return ConfigError(f"{field} = {value!r}: {msg}")


def _suggest(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(valid)})"


def _coerce(field: str, kind: Any, v: Any) -> Any:
    if v is None:
        return None
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _err(field, v, "expected an integer")
        return v
    if kind is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _err(field, v, "expected a number")
        if not math.isfinite(v):
            raise _err(field, v, "must be finite")
        return float(v)
    if kind is str:
        if not isinstance(v, str):
            raise _err(field, v, "expected a string")
        return v
    if kind is bool:
        if not isinstance(v, bool):
            raise _err(field, v, "expected true or false")
        return v
    if kind == "array":
        if isinstance(v, str):
            return v
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise _err(field, v, "expected a number or a (nested) list of numbers") from None
        if not np.all(np.isfinite(a)):
            raise _err(field, v, "must be finite")
        return a.tolist()
    if kind in ("matrix", "vector", "sizes"):
        if isinstance(v, str):
            return v
        if kind == "sizes" and isinstance(v, list) and any(isinstance(x, bool) for x in v):
            raise _err(field, v, "expected a list of integers")
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise _err(field, v, "expected a list of numbers") from None
        want = {"matrix": 2, "vector": 1, "sizes": 1}[kind]
        if a.ndim != want:
            raise _err(field, v, f"expected a {'list of lists' if want == 2 else 'list'}")
        if not np.all(np.isfinite(a)):
            raise _err(field, v, "must be finite")
        return a.tolist()
    raise AssertionError(kind)


def merge_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """Check keys and types of a raw TOML dict and fill in defaults (nested dict out)."""
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a table at the top level")
    sections = [s for s in SCHEMA if s]
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SCHEMA[""]:
            continue
        if key in ("grid", "study"):
            raise ConfigError(
                f"{key}: this config is a study (a [grid] of sweeps): run it with `moejax sweep` "
                "or load it with moejax.sweep.grid.load_study"
            )
        if key not in SCHEMA:
            raise ConfigError(f"{key}: unknown key{_suggest(key, list(SCHEMA['']) + sections)}")
        if not isinstance(value, dict):
            raise _err(key, value, "expected a table ([section])")
    for section, fields in SCHEMA.items():
        table = raw if section == "" else raw.get(section, {})
        if section:
            for key in table:
                if key not in fields:
                    raise ConfigError(
                        f"{_where(section, key)}: unknown key{_suggest(key, list(fields))}"
                    )
        resolved = {}
        for key, (kind, default) in fields.items():
            v = table.get(key, default)
            resolved[key] = _coerce(_where(section, key), kind, v)
        if section == "":
            out.update(resolved)
        else:
            out[section] = resolved
    return out


def _basis(rows: int, d: int, start: int = 0) -> list[list[float]]:
    m = np.zeros((rows, d))
    for k in range(rows):
        m[k, (start + k) % d] = 1.0
    return m.tolist()


def _array(
    field: str, v: Any, shape: tuple[int, ...], what: str, named: dict[str, Any] | None = None
) -> Any:
    """An array of exactly ``shape`` (as nested lists), or one of the ``named`` ones."""
    if isinstance(v, str):
        if not named or v not in named:
            raise _err(field, v, f"expected {what} or one of {', '.join(named or {})}")
        return named[v]
    a = np.asarray(v, dtype=np.float64)
    if a.shape != shape:
        raise _err(field, v, f"expected {what}, shape {shape}, got shape {a.shape}")
    return a.tolist()


def log_spaced_sizes(lo: int, hi: int, count: int) -> list[int]:
    """``count`` log-spaced integer sample sizes from lo to hi (distinct, increasing)."""
    if count == 1:
        return [int(lo)]
    s = np.unique(np.round(np.geomspace(lo, hi, count)).astype(np.int64))
    return [int(v) for v in s]


def _check_choice(field: str, v: str, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise _err(field, v, f"unknown value{_suggest(v, list(choices))}")


def free_parameters(model: dict[str, Any]) -> int:
    """Estimated scalars of a resolved [model] table (the length of the flat parameter vector):
    per fitted adapter (``fitted_adapters``, default ``adapters``) the gate (d + 1, or 1 under
    the input-free gate), R d expert weights and, for regression experts, a variance."""
    m = model.get("fitted_adapters") or model["adapters"]
    plain = model.get("frozen") == PLAIN
    intercept = bool(model.get("expert_intercept"))
    return count_params(
        model["d"], model["K"], m, model["gate"], model["likelihood"], plain, intercept
    )


def _per_adapter(field: str, v: Any, M: int, default: float) -> Any:
    """A scalar per adapter: a number (broadcast) or a list of M numbers; a float when M = 1."""
    a = np.asarray(default if v is None else v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full((M,), float(a))
    if a.shape != (M,):
        raise _err(field, v, f"expected a number or {M} numbers (one per adapter)")
    return float(a[0]) if M == 1 else a.tolist()


def _resolve_truth(m: dict[str, Any], t: dict[str, Any], R: int, M: int) -> None:
    """Shapes of the truth: beta (d,), tau, eta (R, d) for one adapter; (M, d), (M,),
    (M, R, d) for M adapters; nu per adapter (regression)."""
    d = m["d"]
    categorical = not get_likelihood(m["likelihood"]).regression
    _check_choice("truth.regime", t["regime"], REGIMES)
    if t["gamma"] < 0:
        raise _err("truth.gamma", t["gamma"], "must be >= 0")
    one = [1.0 / math.sqrt(d)] * d
    defaults = (t["beta"] == "default", t["eta"] == "basis")
    if isinstance(t["beta"], str):
        if t["beta"] != "default":
            raise _err("truth.beta", t["beta"], "expected a list of d numbers or 'default'")
        t["beta"] = one if M == 1 else [one] * M
    elif M == 1:
        if np.ndim(t["beta"]) != 1 or len(t["beta"]) != d:
            raise _err("truth.beta", t["beta"], f"expected {d} numbers (d = {d})")
    else:
        t["beta"] = _array("truth.beta", t["beta"], (M, d), "one row of d numbers per adapter")
    if isinstance(t["tau"], str):
        raise _err("truth.tau", t["tau"], "expected a number")
    t["tau"] = _per_adapter("truth.tau", t["tau"], M, 0.0)
    de = d + 1 if m["expert_intercept"] else d  # expert weights per predictor
    eshape = (R, de) if M == 1 else (M, R, de)
    stack = (lambda a: a) if M == 1 else (lambda a: [a] * M)
    pad = lambda a: [list(row) + [0.0] * (de - d) for row in a]  # a zero intercept
    named = {
        "basis": stack(pad(_basis(R, d))),
        "eta0": stack(pad(m["eta0"])),
        "basis_shifted": stack(pad(_basis(R, d, start=R))),
    }
    what = "R rows of d numbers" + ("" if M == 1 else " per adapter")
    for f in ("eta", "delta"):
        t[f] = _array(f"truth.{f}", t[f], eshape, what, named)
    if categorical:
        t["nu"] = t["nu_delta"] = None
    else:
        t["nu"] = _per_adapter("truth.nu", t["nu"], M, m["nu0"])
        t["nu_delta"] = _per_adapter("truth.nu_delta", t["nu_delta"], M, 0.0)
        if np.any(np.asarray(t["nu"]) <= 0):
            raise _err("truth.nu", t["nu"], "variances must be > 0")
    if m["frozen"] == PLAIN:
        _plain_truth(m, t, R, M, *defaults)
    if t["regime"] == "homogeneous":
        t["eta"] = named["eta0"]
        if not categorical:
            t["nu"] = _per_adapter("truth.nu", None, M, m["nu0"])
        if m["frozen"] != m["adapter"]:
            raise _err(
                "model.adapter",
                m["adapter"],
                f"homogeneous regime needs adapter == frozen (frozen is {m['frozen']!r})",
            )
        if m["likelihood"] != m["frozen_likelihood"]:
            raise _err(
                "model.likelihood",
                m["likelihood"],
                "homogeneous regime needs likelihood == frozen_likelihood "
                f"(frozen is {m['frozen_likelihood']!r})",
            )
    else:
        t["delta"] = np.zeros(eshape).tolist()
        if not categorical:
            t["nu_delta"] = _per_adapter("truth.nu_delta", None, M, 0.0)
        t["gamma"] = 0.0


def _plain_truth(
    m: dict[str, Any], t: dict[str, Any], R: int, M: int, beta_default: bool, eta_default: bool
) -> None:
    """The plain MoE's truth: no homogeneous regime (no frozen expert to drift to). The
    defaults give expert j >= 1 the gate slope e_{(j-1) mod d} / sqrt(d) (expert 0 none) and
    the basis rows shifted by j R, scaled by 1 + floor(j R / d) once they wrap (distinct).
    The gate is put in its reference form: expert 0's gate is subtracted from every row (the
    softmax's and the input-free gate's weights do not change); under the sigmoid gate expert
    0's gate must be 0 already."""
    d = m["d"]
    if t["regime"] != "heterogeneous":
        raise _err(
            "truth.regime",
            t["regime"],
            "the plain MoE (model.frozen = 'none') has no frozen expert to drift toward; "
            "use 'heterogeneous' (a fixed truth)",
        )
    if beta_default:
        t["beta"] = [[0.0] * d] + [
            [1.0 / math.sqrt(d) if c == (j - 1) % d else 0.0 for c in range(d)] for j in range(1, M)
        ]
    if eta_default:
        de = d + 1 if m["expert_intercept"] else d
        t["eta"] = [
            np.pad(
                np.asarray(_basis(R, d, start=j * R)) * (1 + j * R // d), ((0, 0), (0, de - d))
            ).tolist()
            for j in range(M)
        ]
    beta, tau = np.asarray(t["beta"], float), np.asarray(t["tau"], float)
    if m["gate"] == "sigmoid":
        if np.any(beta[0] != 0) or tau[0] != 0:
            raise _err(
                "truth.beta",
                t["beta"],
                "in the plain MoE expert 0 is the gate's reference: under the sigmoid gate "
                "its gate (truth.beta[0], truth.tau[0]) must be 0",
            )
    ref = to_reference(MixParams(beta, tau, None, None))
    t["beta"], t["tau"] = ref.beta.tolist(), ref.tau.tolist()


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a raw config dict and return the fully resolved config (plain JSON types)."""
    c = merge_defaults(raw)
    m, t, s, e, b, i, r = (
        c[k] for k in ("model", "truth", "sizes", "estimator", "bounds", "init", "run")
    )
    _check_counts(c)
    if m["d"] < 1:
        raise _err("model.d", m["d"], "must be >= 1")
    if m["K"] < 2:
        raise _err("model.K", m["K"], "must be >= 2")
    d, K = m["d"], m["K"]
    plain = m["frozen"] == PLAIN
    for f in ("adapter",) if plain else ("frozen", "adapter"):
        if isinstance(m[f], str) and is_import_path(m[f]):
            # A user JAX function "package.module:function": imported and checked here (the
            # config keeps the string; the spec holds it and resolves it the same way).
            try:
                resolve_activation(m[f], f"model.{f}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        elif not (isinstance(m[f], str) and is_activation_name(m[f])):
            choices = (*BUILTIN_ACTIVATIONS, "softplus-W", "package.module:function")
            _check_choice(f"model.{f}", m[f], (*choices, PLAIN) if f == "frozen" else choices)
    if m["scale"] == 0:
        raise _err("model.scale", 0.0, "must be non-zero")
    if m["frozen_scale"] is None:
        m["frozen_scale"] = m["scale"]
    if m["adapters"] < 1:
        raise _err("model.adapters", m["adapters"], "must be a positive integer")
    if plain and m["adapters"] < 2:
        raise _err(
            "model.adapters",
            m["adapters"],
            "the plain MoE (model.frozen = 'none') needs >= 2 experts",
        )
    if m["fitted_adapters"] is None:
        m["fitted_adapters"] = m["adapters"]
    if m["fitted_adapters"] < max(1, m["adapters"]):
        raise _err(
            "model.fitted_adapters",
            m["fitted_adapters"],
            f"must be >= model.adapters = {m['adapters']} (the true adapters; fit as many or more)",
        )
    _check_choice("model.gate", m["gate"], GATES)
    _check_choice("model.likelihood", m["likelihood"], LIKELIHOODS)
    if m["frozen_likelihood"] is None:
        m["frozen_likelihood"] = m["likelihood"]
    _check_choice("model.frozen_likelihood", m["frozen_likelihood"], LIKELIHOODS)
    categorical = not get_likelihood(m["likelihood"]).regression
    if categorical == get_likelihood(m["frozen_likelihood"]).regression:
        raise _err(
            "model.frozen_likelihood",
            m["frozen_likelihood"],
            f"must be categorical exactly when model.likelihood ({m['likelihood']!r}) is",
        )
    if m["nu0"] <= 0:
        raise _err("model.nu0", m["nu0"], "must be > 0")
    R = K - 1 if categorical else 1
    M = m["adapters"]
    for f in ("bias", "frozen_bias"):
        if m[f] is not None and len(m[f]) != R:
            what = "one per class but the last" if categorical else "regression experts"
            raise _err(f"model.{f}", m[f], f"expected {R} numbers ({what})")
    if m["radius"] is not None and m["radius"] <= 0:
        raise _err("model.radius", m["radius"], "must be > 0")
    _check_choice("model.covariates", m["covariates"], DESIGNS)
    if len(m["box"]) != 2 or not m["box"][0] < m["box"][1]:
        raise _err("model.box", m["box"], "expected [lower, upper] with lower < upper")
    if m["radius"] is not None and m["covariates"] != "normal":
        raise _err("model.radius", m["radius"], "only with model.covariates = 'normal'")
    if m["covariates"] == "grid" and d != 1:
        raise _err("model.covariates", "grid", f"the grid design needs model.d = 1 (d = {d})")
    rows = "K-1 rows" if categorical else "1 row"
    m["eta0"] = _array(
        "model.eta0", m["eta0"], (R, d), f"{rows} of d numbers", {"basis": _basis(R, d)}
    )
    _resolve_truth(m, t, R, M)
    sizes = _resolve_sizes(s, free_parameters(m))
    _check_estimator(e)
    for f, v in b.items():
        if isinstance(v, str) or len(v) != 2:
            raise _err(f"bounds.{f}", v, "expected [lower, upper]")
        if not v[0] < v[1]:
            raise _err(f"bounds.{f}", v, "lower bound must be below upper bound")
    lo_hi = {k: tuple(v) for k, v in b.items()}
    if lo_hi["nu"][0] <= 0:
        raise _err("bounds.nu", list(lo_hi["nu"]), "the lower bound must be > 0 (a variance)")
    smallest = min(sizes)
    drift = smallest ** (-t["gamma"])
    truth_blocks = {
        "beta": np.ravel(t["beta"]).tolist() if get_gate(m["gate"]).has_beta else [],
        "tau": np.ravel(t["tau"]).tolist(),
        "eta": (np.ravel(t["eta"]) + np.ravel(t["delta"]) * drift).tolist(),
        "nu": (np.ravel(t["nu"]) + np.ravel(t["nu_delta"]) * drift).tolist()
        if not categorical
        else [],
    }
    for f, vals in truth_blocks.items():
        lo, hi = lo_hi[f]
        if any(not lo <= v <= hi for v in vals):
            raise _err(
                f"bounds.{f}",
                list(lo_hi[f]),
                f"the truth's {f} ({vals}) must lie inside the bounds",
            )
    _check_init(i)
    if i["mode"] == "truth" and m["fitted_adapters"] > M:
        raise _err(
            "init.mode",
            "truth",
            f"with model.fitted_adapters = {m['fitted_adapters']} > model.adapters = {M} the "
            "split copies of a true adapter would start identical (a singular Hessian, and "
            "Newton's steps keep them equal); use near_truth (split with noise) or multistart",
        )
    _check_run(r)
    return c


def _resolve_sizes(s: dict[str, Any], n_params: int) -> list[int]:
    """The sorted sample sizes of a [sizes] table (sets s to {"list": sizes})."""
    if s["list"] is not None:
        if isinstance(s["list"], str):
            raise _err("sizes.list", s["list"], "expected a list of integers")
        sizes = s["list"]
        for v in sizes:
            if v != int(v) or v < 1:
                raise _err("sizes.list", v, "sample sizes must be positive integers")
        if len(set(sizes)) != len(sizes):
            raise _err("sizes.list", sizes, "sample sizes must be distinct")
        sizes = sorted(int(v) for v in sizes)
    else:
        for f in ("min", "max", "count"):
            if s[f] < 1:
                raise _err(f"sizes.{f}", s[f], "must be a positive integer")
        if s["min"] > s["max"]:
            raise _err("sizes.min", s["min"], f"must not exceed sizes.max = {s['max']}")
        sizes = log_spaced_sizes(s["min"], s["max"], s["count"])
    if not sizes:
        raise _err("sizes.list", sizes, "expected at least one sample size")
    if max(sizes) >= 2**31:
        raise _err("sizes", max(sizes), "sample sizes must be below 2^31")
    if min(sizes) < n_params:
        raise _err(
            "sizes",
            min(sizes),
            f"a sample size below the model's {n_params} free parameters cannot identify them",
        )
    s.clear()
    s["list"] = sizes
    return sizes


def _check_estimator(e: dict[str, Any]) -> None:
    _check_choice("estimator.method", e["method"], METHODS)
    _check_choice("estimator.solver", e["solver"], SOLVER_NAMES)
    for f in ("max_iter", "inner_max_iter"):
        if e[f] < 1:
            raise _err(f"estimator.{f}", e[f], "must be a positive integer")
    if e["tol"] < 0:  # 0: EM runs to its cap unless the log-likelihood stops changing
        raise _err("estimator.tol", e["tol"], "must be >= 0")
    _check_choice("estimator.em_accel", e["em_accel"], EM_ACCELS)
    if not e["switch_tol"] >= 0:
        raise _err("estimator.switch_tol", e["switch_tol"], "must be >= 0")


def _check_init(i: dict[str, Any]) -> None:
    _check_choice("init.mode", i["mode"], INIT_MODES)
    for f in ("c_gate", "c_expert", "start_scale", "rho"):
        if i[f] < 0:
            raise _err(f"init.{f}", i[f], "must be >= 0")
    if i["n_starts"] < 1:
        raise _err("init.n_starts", i["n_starts"], "must be a positive integer")


def _check_run(r: dict[str, Any]) -> None:
    if r["chunk"] < 0:
        raise _err("run.chunk", r["chunk"], "must be a positive integer (or 0 for automatic)")
    if r["max_padding"] < 1:
        raise _err("run.max_padding", r["max_padding"], "must be >= 1")
    if r["buffer_ratio"] < 1:
        raise _err("run.buffer_ratio", r["buffer_ratio"], "must be >= 1")
    if r["block_rows"] < 1:
        raise _err("run.block_rows", r["block_rows"], "must be a positive integer")
    if r["density_points"] < 0:
        raise _err("run.density_points", r["density_points"], "must be >= 0 (0 turns it off)")
    if r["memory_gb"] is not None and r["memory_gb"] <= 0:
        raise _err("run.memory_gb", r["memory_gb"], "must be > 0")
    if r["lanes"] < 0:
        raise _err("run.lanes", r["lanes"], "must be a positive integer (or 0 for automatic)")
    if r["lane_chunk"] < 0:
        raise _err(
            "run.lane_chunk", r["lane_chunk"], "must be a positive integer (or 0 for automatic)"
        )


def resolve_engine(raw: dict[str, Any], min_size: int = 1) -> dict[str, Any]:
    """The sections of a config that the engine reads besides the model (name, seed,
    replicates, sizes, estimator, init, run), validated as `resolve` does, for a problem whose
    model is built in Python (its free parameters: ``min_size``)."""
    c = merge_defaults(raw)
    _check_counts(c)
    out = {k: c[k] for k in ("name", "seed", "replicates", "estimator", "init", "run")}
    out["sizes"] = dict(c["sizes"])
    _resolve_sizes(out["sizes"], min_size)
    _check_estimator(out["estimator"])
    _check_init(out["init"])
    _check_run(out["run"])
    return out


def override_engine(
    cfg: dict[str, Any],
    sizes: Any = None,
    replicates: Any = None,
    seed: Any = None,
    min_size: int = 1,
) -> dict[str, Any]:
    """A copy of a resolved config with sizes, replicates and seed replaced (validated)."""
    out = json.loads(json.dumps(cfg))
    if sizes is not None:
        out["sizes"] = {"list": _resolve_sizes({"list": [int(v) for v in sizes]}, min_size)}
    if replicates is not None:
        out["replicates"] = replicates
    if seed is not None:
        out["seed"] = seed
    _check_counts(out)
    return out


def _check_counts(c: dict[str, Any]) -> None:
    for f, lo in (("replicates", 1), ("seed", 0)):
        v = c[f]
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise _err(f, v, "expected an integer")
        if v < lo:
            raise _err(f, v, "must be a positive integer" if lo else "must be >= 0")


#: The shipped configs: the repository's ``sweeps/`` folder beside the package (present in a
#: source checkout and in an editable install).
SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``sweeps/*.toml`` without the suffix, e.g.
    ``"heterogeneous"``, ``"gpu/paper-d8"``), sorted; empty when ``sweeps/`` is not there."""
    if not SWEEPS_DIR.is_dir():
        return []
    return sorted(
        str(f.relative_to(SWEEPS_DIR).with_suffix("")) for f in SWEEPS_DIR.rglob("*.toml")
    )


def config_path(name: str | Path) -> Path:
    """The file of a config: ``name`` itself when it is a file, else the shipped config of that
    name, so that examples run from any directory.

    ``config_path("heterogeneous")`` and ``config_path("heterogeneous.toml")`` both give
    ``<repository>/sweeps/heterogeneous.toml``. Every function and command that reads a config
    (`load`, `moejax.simulate`, `moejax.sweep.grid.load_study`, ``moejax sweep``) accepts such a
    name in place of a path.

    Raises:
        ConfigError: neither a file nor a shipped config (the message lists the shipped ones).
    """
    p = Path(name)
    if p.is_file():
        return p
    if p.name and not p.is_absolute():
        for q in (SWEEPS_DIR / p, SWEEPS_DIR / p.with_name(p.name + ".toml")):
            if q.is_file():
                return q
    names = shipped_configs()
    shipped = f" (nor a shipped config: {', '.join(names)})" if names else ""
    raise ConfigError(f"config: file not found: {p}{shipped}")


def _read_toml(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not seen:  # the config named by the user: a path or a shipped config's name
        p = config_path(p)
    if not p.is_file():
        raise ConfigError(f"config: file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: TOML syntax error in {p}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not UTF-8 text") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise _err("extends", base, "expected a path to another TOML file")
    bp = (p.parent / base).resolve()
    if bp in seen:
        raise _err("extends", base, "config files extend each other in a cycle")
    return _deep_merge(_read_toml(bp, (*seen, p.resolve())), raw)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a TOML file, or a shipped config by name (see `config_path`), apply overrides
    ({"section.key": value}) and resolve it. ``extends = "other.toml"`` (relative to the file)
    merges the other file's tables underneath."""
    return resolve(apply_overrides(_read_toml(Path(path)), overrides or {}))


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set (e.g. {"sizes.list": [...]})."""
    raw = json.loads(json.dumps(raw))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return raw


def config_hash(cfg: dict[str, Any]) -> str:
    """Stable hash of everything that determines the results (run-only fields excluded)."""
    c = json.loads(json.dumps(cfg))
    for section, key in RUN_ONLY:
        c.get(section, {}).pop(key, None)
    c.pop("name", None)
    est = c.get("estimator", {})
    if est.get("method") == "direct":
        # the EM options change nothing in a direct fit: hashed as before they existed, so
        # that run directories written before them resume
        est.pop("em_accel", None)
        est.pop("switch_tol", None)
    model = c.get("model", {})
    if model.get("covariates", "normal") == "normal" and not model.get("expert_intercept"):
        # the defaults (normal design, no intercepts): hashed as before the keys existed
        for key in ("covariates", "box", "expert_intercept"):
            model.pop(key, None)
    if model.get("fitted_adapters") == model.get("adapters"):
        # the default (exact fitting): hashed as before the key existed, so that run
        # directories written before it resume
        model.pop("fitted_adapters", None)
    blob = json.dumps(c, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

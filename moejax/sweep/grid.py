"""Studies as data: a sweep config with a ``[grid]`` table is a family of sweeps.

A grid config is an ordinary sweep config (``extends`` included) plus two tables:

``[grid]``
    Keys are dotted config paths (``"truth.gamma"``, ``"model.gate"``, ``"replicates"``), values
    are non-empty lists. Several keys give their product, the first key varying slowest;
    ``zip = true`` pairs them instead (equal lengths). ``names = [...]`` names the points (one
    per point; default: ``<last part of the key>-<value>`` joined by ``_``). Alternatively,
    ``[grid.points.<name>]`` tables each give one named point as dotted-key overrides, for
    points that differ in several keys at once (the predecessor's settings).

``[study]`` (optional) says how the points are compared (:data:`STUDY_SCHEMA`): the statistic
    (``"slope"`` across n, or ``"sqrt_n_median"``: the geometric mean over n of sqrt(n) x the
    median error), the x-axis (a numeric grid key, or a quantity recorded in every run's
    manifest such as ``adapter_weight``), the series (``group``, a categorical key), whether to
    fit the statistic's exponent against x, the theory lines and published reference values.
    ``joint = true`` adds the joint fit of a drift study (:mod:`moejax.report.joint`: log error
    = a log n + c log delta_n + const over every point and size) beside the per-point slopes;
    ``statistic = "joint"`` is shorthand for ``statistic = "slope"`` with ``joint = true`` (the
    joint fit is read beside the per-point slopes). A joint study whose planned cells
    (n, delta_n) cannot separate a from c is refused before anything runs
    (:func:`check_joint_design`).

Every point is resolved (and so validated) before anything runs; each runs as a normal,
resumable sweep into ``DIR/<point>/`` whose manifest records the point (``manifest["study"]``),
so that ``moejax study DIR`` rebuilds the comparison from the runs alone.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import SCHEMA, ConfigError, ConfigWarning, _read_toml, apply_overrides, resolve

STATISTICS = ("slope", "sqrt_n_median", "joint")
#: Error blocks a study may name (the report's parameter blocks).
STUDY_BLOCKS = ("beta", "exp_tau", "eta", "density", "nu", "voronoi")
#: Quantities read from every run's manifest that may serve as a study's x-axis.
MANIFEST_QUANTITIES = ("adapter_weight", "gamma")
#: ``[study]`` fields: (type, default). ``fit`` defaults to true for ``sqrt_n_median``.
STUDY_SCHEMA: dict[str, tuple[Any, Any]] = {
    "statistic": (str, "slope"),
    "x": (str, None),
    "group": (str, None),
    "blocks": (list, None),
    "aggregate": (str, "log_median"),
    "n_boot": (int, 1000),
    "seed": (int, 0),
    "ci": (float, 0.95),
    "fit": (bool, None),
    "theory": (bool, True),
    "title": (str, None),
    "note": (str, None),
    "reference": (dict, None),
    "joint": (bool, False),
    "starts": (bool, False),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class GridPoint(NamedTuple):
    """One point of a study: its directory name, the overridden values, the resolved config."""

    name: str
    values: dict[str, Any]
    config: dict[str, Any]


class Study(NamedTuple):
    """A resolved grid config: its name, grid keys (in order), points and ``[study]`` options."""

    name: str
    keys: tuple[str, ...]
    points: tuple[GridPoint, ...]
    options: dict[str, Any]

    def manifest_entry(self, i: int) -> dict[str, Any]:
        """What point ``i``'s manifest records under ``"study"`` (JSON types)."""
        p = self.points[i]
        return json.loads(
            json.dumps(
                {
                    "name": self.name,
                    "point": p.name,
                    "index": i,
                    "n_points": len(self.points),
                    "keys": list(self.keys),
                    "values": p.values,
                    "options": self.options,
                }
            )
        )


def is_grid(raw: dict[str, Any]) -> bool:
    """Whether a raw (unresolved) config dict is a study (has a ``[grid]`` table)."""
    return isinstance(raw, dict) and "grid" in raw


def _check_key(key: str) -> None:
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in SCHEMA[""]:
        return
    if len(parts) == 2 and parts[0] in SCHEMA and parts[0] and parts[1] in SCHEMA[parts[0]]:
        return
    raise ConfigError(
        f"grid: {key!r} is not a config field (expected a dotted path such as 'truth.gamma')"
    )


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):  # "package.module:function" (a user activation) -> a file name
        return value.replace(":", ".")
    if isinstance(value, int):
        return str(value)
    return "x".join(str(v) for v in json.loads(json.dumps(value))) if value else "empty"


def expand(grid: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The points of a ``[grid]`` table: ``[(name, {dotted key: value})]`` in run order.

    Raises:
        ConfigError: an unknown key, a value that is not a non-empty list, zip lists of unequal
            length, a wrong number of names, or a name unfit for a directory or repeated.
    """
    if not isinstance(grid, dict):
        raise ConfigError("grid: expected a table ([grid])")
    grid = dict(grid)
    zipped = grid.pop("zip", False)
    names = grid.pop("names", None)
    named = grid.pop("points", None)
    if not isinstance(zipped, bool):
        raise ConfigError(f"grid.zip = {zipped!r}: expected true or false")
    if named is not None:
        if grid or zipped or names is not None:
            raise ConfigError("grid.points: give named points or keys with lists, not both")
        if not isinstance(named, dict) or not named:
            raise ConfigError("grid.points: expected one [grid.points.<name>] table per point")
        points = []
        for name, over in named.items():
            if not isinstance(over, dict) or not over:
                raise ConfigError(f"grid.points.{name}: expected a table of dotted-key overrides")
            for k in over:
                _check_key(k)
            points.append((name, dict(over)))
    else:
        if not grid:
            raise ConfigError('grid: no keys (give e.g. "truth.gamma" = [0.0, 0.125])')
        for k, v in grid.items():
            _check_key(k)
            if not isinstance(v, list) or not v:
                raise ConfigError(f"grid.{k!r} = {v!r}: expected a non-empty list of values")
        keys = list(grid)
        if zipped:
            lengths = {len(v) for v in grid.values()}
            if len(lengths) > 1:
                raise ConfigError(
                    f"grid: zip = true needs lists of one length, got "
                    f"{', '.join(f'{k}: {len(v)}' for k, v in grid.items())}"
                )
            combos = list(zip(*grid.values(), strict=True))
        else:
            combos = list(itertools.product(*grid.values()))
        values = [dict(zip(keys, c, strict=True)) for c in combos]
        if names is None:
            names = [
                "_".join(f"{k.rpartition('.')[2]}-{_label(v)}" for k, v in vals.items())
                for vals in values
            ]
        elif not isinstance(names, list) or len(names) != len(values):
            raise ConfigError(
                f"grid.names: expected a list of {len(values)} names (one per point), got {names!r}"
            )
        points = list(zip(names, values, strict=True))
    seen: set[str] = set()
    for name, _ in points:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"grid: point name {name!r} must be letters, digits and ._+- (a directory name)"
            )
        if name in seen:
            raise ConfigError(f"grid: two points are named {name!r} (give grid.names)")
        seen.add(name)
    return points


def resolve_options(
    raw: Any, keys: tuple[str, ...], values: list[dict[str, Any]]
) -> dict[str, Any]:
    """Validate a ``[study]`` table and fill in its defaults, given the grid keys and the points'
    values (``x`` defaults to the first numeric key, ``group`` to the first other categorical
    (text-valued) one when there is an x). Raises ConfigError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("study: expected a table ([study])")
    out: dict[str, Any] = {}
    for k in raw:
        if k not in STUDY_SCHEMA:
            raise ConfigError(f"study.{k}: unknown key (valid: {', '.join(STUDY_SCHEMA)})")
    for k, (kind, default) in STUDY_SCHEMA.items():
        v = raw.get(k, default)
        if v is not None:
            ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
            if kind is float and isinstance(v, int) and not isinstance(v, bool):
                v, ok = float(v), True
            if not ok:
                raise ConfigError(f"study.{k} = {v!r}: expected a {kind.__name__}")
        out[k] = v
    if out["statistic"] not in STATISTICS:
        raise ConfigError(
            f"study.statistic = {out['statistic']!r}: expected one of {', '.join(STATISTICS)}"
        )
    if out["statistic"] == "joint":  # the joint fit beside the per-point slopes
        out["statistic"], out["joint"] = "slope", True
    if out["aggregate"] not in ("log_mean", "mean_log", "log_median"):
        raise ConfigError(
            f"study.aggregate = {out['aggregate']!r}: expected log_median, mean_log or log_mean"
        )
    if out["n_boot"] < 0:
        raise ConfigError(f"study.n_boot = {out['n_boot']}: must be >= 0")
    if not 0.0 < out["ci"] < 1.0:
        raise ConfigError(f"study.ci = {out['ci']}: must lie in (0, 1)")
    if out["blocks"] is not None:
        bad = [b for b in out["blocks"] if b not in STUDY_BLOCKS]
        if bad or not out["blocks"]:
            raise ConfigError(
                f"study.blocks = {out['blocks']!r}: expected names among {', '.join(STUDY_BLOCKS)}"
            )

    def numeric(k: str) -> bool:
        return all(
            isinstance(v.get(k), int | float) and not isinstance(v.get(k), bool) for v in values
        )

    x = out["x"]
    if x is None:
        x = next((k for k in keys if numeric(k)), None)
    elif x == "point":  # one bar per point, even when a key is numeric
        x = None
    elif x not in MANIFEST_QUANTITIES and not (x in keys and numeric(x)):
        raise ConfigError(
            f"study.x = {x!r}: expected a numeric grid key ({', '.join(keys)}), a manifest "
            f"quantity ({', '.join(MANIFEST_QUANTITIES)}) or 'point' (one bar per point)"
        )
    group = out["group"]
    if group is None:
        categorical = [k for k in keys if all(isinstance(v.get(k), str) for v in values)]
        group = next((k for k in categorical if k != x), None) if x else None
    elif group not in keys:
        raise ConfigError(f"study.group = {group!r}: expected a grid key ({', '.join(keys)})")
    out["x"], out["group"] = x, group
    if out["fit"] is None:
        out["fit"] = out["statistic"] == "sqrt_n_median" and x is not None
    if out["fit"] and (x is None or out["statistic"] != "sqrt_n_median"):
        raise ConfigError(
            "study.fit = true needs statistic = 'sqrt_n_median' and an x (study.x, or a "
            "numeric grid key)"
        )
    ref = out["reference"]
    if ref is not None:
        label = ref.get("label", "reference")
        vals = ref.get("values", {})
        if not isinstance(label, str) or not isinstance(vals, dict):
            raise ConfigError(
                "study.reference: expected label = '...' and [study.reference.values]"
            )
        clean: dict[str, dict[str, float]] = {}
        for point, blocks in vals.items():
            if not isinstance(blocks, dict):
                raise ConfigError(f"study.reference.values.{point}: expected block = number")
            for b, v in blocks.items():
                if b not in STUDY_BLOCKS or isinstance(v, bool) or not isinstance(v, int | float):
                    raise ConfigError(
                        f"study.reference.values.{point}.{b} = {v!r}: expected a block name "
                        f"({', '.join(STUDY_BLOCKS)}) and a number"
                    )
            clean[point] = {b: float(v) for b, v in blocks.items()}
        out["reference"] = {"label": label, "values": clean}
    return out


def study_from_raw(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> Study:
    """Resolve a raw grid config (``[grid]`` and ``[study]`` tables) into a :class:`Study`.

    ``overrides`` (dotted keys, as :func:`moejax.sweep.config.load`) apply to every point,
    after the point's own values (so ``--sizes`` wins over a grid of sizes). Every point's
    config is resolved here, so a bad point raises before anything runs. Points that change
    ``model.scale`` without ``model.frozen_scale`` set anywhere warn (`ConfigWarning`): the
    frozen expert's scale defaults to ``model.scale`` and moves with it.

    Raises:
        ConfigError: a bad grid, study table or point config (the message names the point).
    """
    raw = json.loads(json.dumps(raw))
    grid = raw.pop("grid", None)
    if grid is None:
        raise ConfigError("config has no [grid] table: it is a single sweep, not a study")
    options_raw = raw.pop("study", None)
    points = expand(grid)
    keys = tuple(dict.fromkeys(k for _, vals in points for k in vals))
    options = resolve_options(options_raw, keys, [v for _, v in points])
    if options["reference"]:
        unknown = set(options["reference"]["values"]) - {n for n, _ in points}
        if unknown:
            raise ConfigError(
                f"study.reference.values: {', '.join(sorted(unknown))} is not a grid point"
            )
    _warn_frozen_scale(raw, points)
    base = _study_name(raw)
    out = []
    for name, values in points:
        over = {**values, **(overrides or {}), "name": f"{base}-{name}"}
        try:
            cfg = resolve(apply_overrides(raw, over))
        except ConfigError as exc:
            raise ConfigError(f"grid point {name!r}: {exc}") from None
        out.append(GridPoint(name, values, cfg))
    if options["joint"]:
        check_joint_design([p.config for p in out])
    if options["starts"]:
        _check_starts_design(points)
    return Study(base, keys, tuple(out), options)


def _check_starts_design(points: list[tuple[str, dict[str, Any]]]) -> None:
    """``starts = true`` compares start rules on the same data: every point may change
    ``init.*`` (and ``estimator.max_iter``) only, so that the data sets are the same."""
    for name, values in points:
        other = [k for k in values if not (k.startswith("init.") or k == "estimator.max_iter")]
        if other:
            raise ConfigError(
                f"study.starts = true: grid point {name!r} changes {', '.join(other)}; a start "
                "comparison may change only init.* so that every point fits the same data"
            )


def _warn_frozen_scale(raw: dict[str, Any], points: list[tuple[str, dict[str, Any]]]) -> None:
    """Warn (`ConfigWarning`, one line) when the points change ``model.scale`` while
    ``model.frozen_scale`` is set neither by a point nor by the base config: it defaults to
    ``model.scale``, so the frozen expert moves with every point too."""
    varies = any("model.scale" in values for _, values in points)
    pinned = any("model.frozen_scale" in values for _, values in points)
    model = raw.get("model")
    plain = isinstance(model, dict) and model.get("frozen") == "none"  # no frozen expert
    if (
        varies
        and not pinned
        and not plain
        and not (isinstance(model, dict) and "frozen_scale" in model)
    ):
        warnings.warn(
            "grid: model.scale changes across the points but model.frozen_scale is not set, so "
            "the frozen expert's scale (default: model.scale) moves with it; set "
            "model.frozen_scale to keep the frozen expert fixed",
            ConfigWarning,
            stacklevel=3,
        )


def drift_size(config: Mapping[str, Any]) -> tuple[float, float]:
    """``(||truth.delta||_F, gamma)`` of a resolved point config, so that the truth's distance
    to the frozen expert at sample size n is delta_n = ||truth.delta||_F n^(-gamma).

    Only eta's drift counts (a regression model's ``truth.nu_delta`` is left out); with several
    adapters the norm is over all their drifts together. ``(0.0, 0.0)`` outside the homogeneous
    regime (no drift: delta_n is undefined there and the point cannot enter a joint fit).
    """
    truth = config.get("truth", {})
    if truth.get("regime") != "homogeneous" or truth.get("delta") is None:
        return 0.0, 0.0
    norm = float(np.linalg.norm(np.asarray(truth["delta"], dtype=np.float64).ravel()))
    return norm, float(truth.get("gamma") or 0.0)


def joint_design_rank(log_n: np.ndarray, log_delta: np.ndarray) -> int:
    """Rank of the joint fit's design ``[log n, log delta_n, 1]`` (shape ``(C, 3)``, one row
    per cell; ``log_n`` and ``log_delta`` of shape ``(C,)``), with a relative tolerance of 1e-9
    on its singular values so that a delta_n tied to n up to rounding counts as tied."""
    x = np.column_stack([log_n, log_delta, np.ones(len(log_n))]).astype(np.float64)
    if x.shape[0] == 0:
        return 0
    s = np.linalg.svd(x, compute_uv=False)
    return int(np.sum(s > 1e-9 * s[0]))


def check_joint_design(configs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a joint study whose planned cells (point, n) with delta_n > 0 give a singular
    design (fewer than 3 cells, or delta_n tied to n in one way across every point: a single
    gamma and a single ||Delta||, or every point at gamma = 0 with one ||Delta||).

    Raises:
        ConfigError: one line naming ``study.joint``.
    """
    log_n, log_delta = [], []
    for cfg in configs:
        norm, gamma = drift_size(cfg)
        if norm > 0:
            for n in cfg["sizes"]["list"]:
                log_n.append(float(np.log(n)))
                log_delta.append(float(np.log(norm) - gamma * np.log(n)))
    if not log_n:
        raise ConfigError(
            "study.joint: no point drifts (delta_n = ||truth.delta||_F n^-gamma is 0, or the "
            "regime is not homogeneous, at every point)"
        )
    rank = joint_design_rank(np.array(log_n), np.array(log_delta))
    if rank < 3:
        raise ConfigError(
            f"study.joint: the points' cells (n, delta_n) give a singular design (rank {rank} of "
            "3: delta_n is tied to n in one way at every point); add points with another gamma "
            "or another ||truth.delta||"
        )


def _study_name(raw: dict[str, Any]) -> str:
    name = raw.get("name", SCHEMA[""]["name"][1])
    if not isinstance(name, str):
        raise ConfigError(f"name = {name!r}: expected a string")
    return name


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> Study:
    """Read a grid config file (``extends`` followed) and resolve it; see
    :func:`study_from_raw`."""
    return study_from_raw(_read_toml(Path(path)), overrides)


def read_raw(path: str | Path) -> dict[str, Any]:
    """The raw (merged, unresolved) TOML of a config file, ``extends`` followed."""
    return _read_toml(Path(path))

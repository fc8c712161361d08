"""Layering of the package, and the one contract between its layers on disk (fits.csv).

Layers, lowest first: the model and estimators (no sweep, no report), the sweep and its results
store (no report), the report (reads what the store writes), the CLI (calls both). The imports
are read with `ast` from the source, so a module is checked without being imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from moejax.report.table import read_fits_csv
from moejax.sweep.store import FIT_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, STR_COLUMNS, write_fits_csv

PACKAGE = Path(__file__).resolve().parents[1] / "moejax"

#: Not the model layer: the sweep, the report, the CLI, the package face, the atomic writers.
#: Every other module of the package is the model and its estimators (new modules included).
NOT_MODEL = ("sweep", "report", "cli.py", "__init__.py", "atomic.py")
#: Model modules that must exist (paths relative to the package; a directory: all below it).
NAMED_MODEL = (
    "model.py",
    "mix",
    "experts.py",
    "estimation",
    "losses.py",
    "voronoi.py",
    "estimate.py",
)
NAMED_MODEL += ("sampling.py", "truth.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module named by an import anywhere in ``source`` (function bodies included), as an
    absolute dotted name; ``from a import b`` yields both ``a`` and ``a.b``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")


def modules_under(*rel: str) -> list[Path]:
    out: list[Path] = []
    for r in rel:
        p = PACKAGE / r
        if p.is_dir():
            out += sorted(p.rglob("*.py"))
        elif p.is_file():
            out.append(p)
    return out


def offenders(paths: list[Path], *forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in paths
        for name in sorted(imports_of(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_import_reader_resolves_relative_and_nested_imports() -> None:
    src = (
        "import os\n"
        "from . import table\n"
        "from ..report import make_report\n"
        "def f():\n"
        "    import moejax.sweep.store as s\n"
        "    from moejax import report\n"
    )
    found = imported_modules(src, "moejax.sweep.engine")
    assert {"os", "moejax.sweep.table", "moejax.report.make_report", "moejax.sweep.store"} <= found
    assert "moejax.report" in found
    in_init = imported_modules("from .gates import x\n", "moejax.report", is_package=True)
    assert "moejax.report.gates" in in_init


def model_modules() -> list[Path]:
    skip = {PACKAGE / rel for rel in NOT_MODEL}
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if p not in skip and not any(parent in skip for parent in p.parents)
    ]


def test_model_layer_holds_the_named_modules() -> None:
    # Each named module exists (model.py may become a package model/) and is checked below.
    for rel in NAMED_MODEL:
        alt = "model" if rel == "model.py" else rel
        assert modules_under(rel) or modules_under(alt), f"moejax/{rel} is gone: update the list"
    assert set(modules_under(*NAMED_MODEL, "model")) <= set(model_modules())
    assert not set(model_modules()) & set(modules_under("sweep", "report", "cli.py"))


def test_sweep_does_not_import_the_report() -> None:
    paths = modules_under("sweep")
    assert paths
    assert offenders(paths, "moejax.report") == []


def test_model_imports_neither_sweep_nor_report() -> None:
    assert offenders(model_modules(), "moejax.sweep", "moejax.report", "moejax.cli") == []


def test_atomic_writers_depend_on_no_layer() -> None:
    assert [n for n in imports_of(PACKAGE / "atomic.py") if n.startswith("moejax")] == []


# ----------------------------------------------------------------------------------------------
# fits.csv: written by the store, read by the report


def test_fits_csv_schema_partitions_the_columns() -> None:
    assert sorted(INT_COLUMNS + FLOAT_COLUMNS + STR_COLUMNS) == sorted(FIT_COLUMNS)
    assert "grad_norm" in FLOAT_COLUMNS


def test_fits_csv_round_trip_store_to_report(tmp_path: Path) -> None:
    """Every column the store writes comes back from the report's reader with its value and
    type: integers as int64, floats bit-exact (nan, +-inf, subnormal and tiny values included,
    grad_norm like every other float), status by name; rows sorted by (n, replicate)."""
    rng = np.random.default_rng(0)
    n_rows = 12
    status_names = ("converged", "max_iter", "nonfinite")
    n = np.repeat([300, 100, 200], 4).astype(np.int64)
    replicate = np.tile([3, 1, 0, 2], 3).astype(np.int64)
    lanes: dict[str, np.ndarray] = {"n": n, "replicate": replicate}
    for c in INT_COLUMNS:
        if c not in lanes:
            lanes[c] = rng.integers(0, 2 if c in ("converged", "at_bound") else 50, n_rows)
    specials = [np.nan, np.inf, -np.inf, 5e-324, 1e-300, -0.0, 1.0 / 3.0]
    for j, c in enumerate(FLOAT_COLUMNS):
        v = rng.standard_normal(n_rows) * 10.0 ** rng.integers(-12, 6, n_rows)
        v[j % n_rows] = specials[j % len(specials)]
        lanes[c] = v
    lanes["grad_norm"] = np.abs(lanes["grad_norm"])
    lanes["grad_norm"][-1] = np.nan
    lanes["status_code"] = rng.integers(0, len(status_names), n_rows).astype(np.int32)

    path = write_fits_csv(tmp_path, lanes, status_names)
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(FIT_COLUMNS)
    back = read_fits_csv(path)

    assert set(back) == set(FIT_COLUMNS)
    order = np.lexsort((replicate, n))
    for c in INT_COLUMNS:
        assert back[c].dtype == np.int64, c
        np.testing.assert_array_equal(back[c], lanes[c][order], err_msg=c)
    for c in FLOAT_COLUMNS:
        assert back[c].dtype == np.float64, c
        want = lanes[c][order].astype(np.float64)
        assert back[c].tobytes() == want.tobytes(), c  # bit-exact, -0.0 and nan included
    assert back["status"].tolist() == [status_names[k] for k in lanes["status_code"][order]]


@pytest.mark.parametrize("column", ["grad_norm", "loglik"])
def test_reader_reads_a_float_column_with_empty_cells(tmp_path: Path, column: str) -> None:
    path = tmp_path / "fits.csv"
    path.write_text(f"n,replicate,{column}\n100,0,1.5e-07\n100,1,\n100,2,inf\n")
    got = read_fits_csv(path)[column]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.5e-07, np.nan, np.inf])


def unit_of(module: str) -> str | None:
    """The unit a moejax module belongs to: its subpackage (``moejax.mix``) or, for a module
    at the top, the module itself; None for the package face ``moejax``."""
    parts = module.split(".")
    if parts[0] != "moejax" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def test_no_import_cycle_between_packages() -> None:
    """The units of the package (subpackages and top-level modules) import one another without
    a cycle: nothing imports, anywhere in its code, a unit that imports it back (directly or
    through others). The package face (moejax/__init__.py) re-exports everything and is left
    out; so are mix's lazy re-exports of the estimators (attribute lookups by name)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = unit_of(module_name(path))
        if src is None:
            continue
        for name in imports_of(path):
            dst = unit_of(name)
            where = PACKAGE.parent / (dst or "").replace(".", "/")
            if dst not in (None, src) and (where.is_dir() or where.with_suffix(".py").exists()):
                edges.setdefault(src, set()).add(dst)
    assert "moejax.estimation" in edges.get("moejax.sweep", set())  # the reader sees imports

    def reach(a: str) -> set[str]:
        seen, todo = set(), [a]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in reach(a) if a < b and a in reach(b))
    assert cycles == []


def test_every_option_list_is_written_once() -> None:
    """The option lists (gates, likelihoods, methods, EM variants, solvers, init rules, status
    names) are tuple literals in the module that defines the options and nowhere else: config
    validation, the store and the report import them (a second copy drifts)."""
    from moejax.estimation.estimators import EM_ACCELS, METHODS
    from moejax.estimation.init import INIT_MODES
    from moejax.estimation.solvers import SOLVERS, STATUS_NAMES
    from moejax.mix.spec import GATES, LIKELIHOODS

    lists = {
        "GATES": GATES,
        "LIKELIHOODS": LIKELIHOODS,
        "METHODS": METHODS,
        "EM_ACCELS": EM_ACCELS,
        "SOLVERS": tuple(SOLVERS),
        "INIT_MODES": INIT_MODES,
        "STATUS_NAMES": STATUS_NAMES,
    }
    copies: dict[str, list[str]] = {name: [] for name in lists}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Tuple | ast.List | ast.Dict):
                continue
            elts = node.keys if isinstance(node, ast.Dict) else node.elts
            words = [e.value for e in elts if isinstance(e, ast.Constant)]
            if len(words) != len(elts) or not all(isinstance(w, str) for w in words):
                continue
            for name, values in lists.items():
                if sorted(words) == sorted(values):
                    copies[name].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert {name: len(where) for name, where in copies.items()} == dict.fromkeys(lists, 1), copies


def test_no_config_dict_inside_the_traced_lane_program() -> None:
    """The lane's fit (`fit_lane`) and the compiled chunk read typed options
    (`moejax.sweep.problem.LaneOptions`), never the config dict."""
    tree = ast.parse((PACKAGE / "sweep" / "lane.py").read_text())
    traced = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("fit_lane", "chunk")
    ]
    assert {f.name for f in traced} == {"fit_lane", "chunk"}
    reads = [
        f"{f.name}:{n.lineno}"
        for f in traced
        for n in ast.walk(f)
        if (isinstance(n, ast.Attribute) and n.attr == "cfg")
        or (isinstance(n, ast.Name) and n.id == "cfg")
    ]
    assert reads == []

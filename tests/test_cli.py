"""Tests of the `moejax` command line on bad input, as a new user would meet it.

Contract (moejax/cli.py): bad input exits with status 2 and exactly one line on stderr,
``moejax: error: ...``, naming the offending field and its value; no traceback; nothing is
computed or written (the --out directory is not even created, so there is no fits.csv).

Every case runs in-process through ``moejax.cli.main`` (the console script's entry point), and one
case per distinct error path also runs in a fresh interpreter (``python -m moejax.cli``), started
four at a time by a module fixture: each of those pays the ~2 s JAX import, which on this 2-core
machine is what limits how many are affordable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from moejax.cli import main
from moejax.sweep.config import ConfigError, load

# A small valid config; every TOML case below is this with one thing wrong.
VALID: dict[str, Any] = {
    "name": "cli-test",
    "replicates": 2,
    "model": {"d": 2, "K": 2},
    "sizes": {"list": [200, 300]},
    "run": {"density_points": 10},
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(cfg: dict[str, Any]) -> str:
    """Serialize a config dict (scalars/lists at the top, one level of tables) as TOML."""
    top = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    lines = top
    for section, table in cfg.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def with_changes(changes: dict[str, Any]) -> str:
    """TOML text of VALID with ``changes`` deep-merged in (one level of tables)."""
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    for k, v in changes.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return to_toml(cfg)


# (id, config text or None for "use VALID", extra CLI args, substrings the error line must contain)
SWEEP_CASES: list[tuple[str, str | None, list[str], list[str]]] = [
    ("typo-top-level-key", with_changes({"replicats": 4}), [], ["replicats", "'replicates'"]),
    (
        "typo-model-key",
        with_changes({"model": {"adpater": "tanh"}}),
        [],
        ["model.adpater", "'adapter'"],
    ),
    ("typo-section", with_changes({"modle": {"d": 2}}), [], ["modle", "'model'"]),
    ("d-is-a-string", with_changes({"model": {"d": "four"}}), [], ["model.d", "four"]),
    ("d-is-a-float", with_changes({"model": {"d": 2.5}}), [], ["model.d", "2.5"]),
    ("replicates-is-bool", with_changes({"replicates": True}), [], ["replicates", "True"]),
    ("negative-size", with_changes({"sizes": {"list": [100, -5]}}), [], ["sizes.list", "-5"]),
    (
        "non-integer-size",
        with_changes({"sizes": {"list": [100, 2.5]}}),
        [],
        ["sizes.list", "2.5"],
    ),
    (
        "duplicate-sizes",
        with_changes({"sizes": {"list": [100, 100]}}),
        [],
        ["sizes.list", "distinct"],
    ),
    ("sizes-min-above-max", to_toml({"sizes": {"min": 500, "max": 100}}), [], ["sizes.min", "500"]),
    ("replicates-zero", with_changes({"replicates": 0}), [], ["replicates", "0"]),
    ("chunk-zero-flag", None, ["--chunk", "0"], ["--chunk", "'0'"]),
    ("replicates-negative-flag", None, ["--replicates", "-1"], ["--replicates", "'-1'"]),
    ("sizes-not-integer-flag", None, ["--sizes", "10,abc"], ["--sizes", "'abc'"]),
    ("sizes-zero-flag", None, ["--sizes", "100,0"], ["--sizes", "0"]),
    ("sizes-below-parameters-flag", None, ["--sizes", "4"], ["sizes = 4", "5 free parameters"]),
    ("seed-negative-flag", None, ["--seed", "-3"], ["--seed", "'-3'"]),
    ("chunk-negative-in-file", with_changes({"run": {"chunk": -2}}), [], ["run.chunk", "-2"]),
    (
        "inverted-bounds",
        with_changes({"bounds": {"tau": [2, -2]}}),
        [],
        ["bounds.tau", "[2.0, -2.0]"],
    ),
    (
        "negative-gamma",
        with_changes(
            {"model": {"adapter": "linear"}, "truth": {"regime": "homogeneous", "gamma": -0.5}}
        ),
        [],
        ["truth.gamma", "-0.5"],
    ),
    (
        "eta0-wrong-shape",
        with_changes({"model": {"K": 3, "eta0": [[1.0, 0.0, 0.0]]}}),
        [],
        ["model.eta0", "shape"],
    ),
    (
        "beta-wrong-length",
        with_changes({"truth": {"beta": [1.0, 2.0, 3.0]}}),
        [],
        ["truth.beta", "[1.0, 2.0, 3.0]"],
    ),
    (
        "unknown-expert",
        with_changes({"model": {"adapter": "tanhh"}}),
        [],
        ["model.adapter", "tanhh", "'tanh'"],
    ),
    (
        "unknown-solver",
        with_changes({"estimator": {"solver": "lbfgs"}}),
        [],
        ["estimator.solver", "lbfgs"],
    ),
    (
        "unknown-regime",
        with_changes({"truth": {"regime": "heterogenous"}}),
        [],
        ["truth.regime", "heterogenous", "'heterogeneous'"],
    ),
    ("toml-syntax-error", "[model\nd = 2\n", [], ["config", "TOML syntax error"]),
    ("not-utf8", 'name = "\xff"\n', [], ["config", "UTF-8"]),
]


# Cases that are also run in a fresh interpreter (one per distinct error path: unknown key, wrong
# type, bad value, argparse flag check, TOML parse, missing file); all run in-process below.
SUBPROCESS_CASES = (
    "typo-top-level-key",
    "typo-model-key",
    "d-is-a-string",
    "negative-size",
    "inverted-bounds",
    "chunk-zero-flag",
    "sizes-not-integer-flag",
    "toml-syntax-error",
    "missing-config",
    "report-without-fits",
    "no-command",
)


def _jobs(root: Path) -> dict[str, tuple[list[str], Path | None, list[str]]]:
    """{case id: (argv, --out dir that must not appear or None, needles)}; writes the configs."""
    jobs: dict[str, tuple[list[str], Path | None, list[str]]] = {}
    for case_id, text, extra, needles in SWEEP_CASES:
        d = root / case_id
        d.mkdir(parents=True)
        cfg = d / "config.toml"
        if case_id == "not-utf8":
            cfg.write_bytes(b'name = "\xff"\n')
        else:
            cfg.write_text(text if text is not None else to_toml(VALID))
        out = d / "out"
        jobs[case_id] = (["sweep", str(cfg), "--out", str(out), *extra], out, needles)
    d = root / "missing-config"
    d.mkdir(parents=True)
    jobs["missing-config"] = (
        ["sweep", str(d / "nope.toml"), "--out", str(d / "out")],
        d / "out",
        ["config", "not found", "nope.toml"],
    )
    d = root / "report-without-fits"
    (d / "run").mkdir(parents=True)
    jobs["report-without-fits"] = (["report", str(d / "run")], None, ["fits.csv", str(d / "run")])
    d = root / "compare-without-fits"
    (d / "run").mkdir(parents=True)
    jobs["compare-without-fits"] = (
        ["compare", str(d / "run"), "--out", str(d / "cmp")],
        d / "cmp",
        ["fits.csv"],
    )
    jobs["no-command"] = ([], None, ["required", "command"])
    jobs["unknown-command"] = (["swep", "x.toml"], None, ["swep"])
    jobs["sweep-without-config"] = (["sweep"], None, ["config"])
    return jobs


ALL_IDS = [c[0] for c in SWEEP_CASES] + [
    "missing-config",
    "report-without-fits",
    "compare-without-fits",
    "no-command",
    "unknown-command",
    "sweep-without-config",
]


def _check_one_line_error(rc: int | None, stdout: str, stderr: str, needles: list[str]) -> None:
    assert rc == 2, (rc, stdout, stderr)
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("moejax: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert stdout == ""


def _run_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MOEJAX_NO_PROGRESS="1", MOEJAX_CACHE_DIR=str(cwd / "jax-cache"))
    return subprocess.run(
        [sys.executable, "-m", "moejax.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


@pytest.fixture(scope="module")
def subprocess_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run SUBPROCESS_CASES, 4 at a time: {id: (CompletedProcess, out path, needles)}."""
    root = tmp_path_factory.mktemp("cli-subprocess")
    jobs = {k: v for k, v in _jobs(root).items() if k in SUBPROCESS_CASES}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {k: pool.submit(_run_subprocess, job[0], root) for k, job in jobs.items()}
        return {k: (f.result(), jobs[k][1], jobs[k][2]) for k, f in futures.items()}


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_fresh_interpreter(subprocess_outcomes: dict[str, Any], case_id: str) -> None:
    """`python -m moejax.cli ...`: exit 2, one stderr line naming field and value, no traceback,
    and nothing written (the --out directory does not exist, so in particular no fits.csv)."""
    proc, out, needles = subprocess_outcomes[case_id]
    _check_one_line_error(proc.returncode, proc.stdout, proc.stderr, needles)
    if out is not None:
        assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


@pytest.mark.parametrize("case_id", ALL_IDS)
def test_bad_input_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case_id: str
) -> None:
    """Every case through `moejax.cli.main` (the console script's entry point): same contract."""
    argv, out, needles = _jobs(tmp_path)[case_id]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = exc.code
    captured = capsys.readouterr()
    _check_one_line_error(rc, captured.out, captured.err, needles)
    if out is not None:
        assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


def test_valid_base_config_loads(tmp_path: Path) -> None:
    """Control: the unmodified base of the TOML cases is valid, so each case fails for its one
    change. Its defaults are filled in."""
    p = tmp_path / "ok.toml"
    p.write_text(to_toml(VALID))
    cfg = load(p)
    assert cfg["replicates"] == 2 and cfg["model"]["d"] == 2 and cfg["sizes"]["list"] == [200, 300]
    assert cfg["run"]["max_padding"] == 1.3 and cfg["estimator"]["solver"] == "newton"


@pytest.mark.parametrize(
    ("case_id", "text", "needles"),
    [(c[0], c[1], c[3]) for c in SWEEP_CASES if c[1] is not None and c[0] != "not-utf8"],
    ids=[c[0] for c in SWEEP_CASES if c[1] is not None and c[0] != "not-utf8"],
)
def test_config_error_in_process(
    tmp_path: Path, case_id: str, text: str, needles: list[str]
) -> None:
    """The same bad configs raise ConfigError (one line, naming the field) through the API."""
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(p)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


# ----------------------------------------------------------------------------------------------
# Regressions: bugs found while writing these tests.


def test_empty_sizes_list_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(with_changes({"sizes": {"list": []}}))
    out = tmp_path / "out"
    rc = main(["sweep", str(cfg), "--out", str(out)])
    captured = capsys.readouterr()
    _check_one_line_error(rc, captured.out, captured.err, ["sizes.list", "[]"])
    assert not out.exists()


def test_boolean_sample_size_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(with_changes({"sizes": {"list": [True, 100]}}))
    with pytest.raises(ConfigError, match=r"sizes\.list"):
        load(p)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty-file"),
        pytest.param("a,b\n1,2\n", id="no-n-column"),
    ],
)
def test_report_on_malformed_fits_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    (tmp_path / "fits.csv").write_text(content)
    rc = main(["report", str(tmp_path)])
    captured = capsys.readouterr()
    _check_one_line_error(rc, captured.out, captured.err, ["fits.csv"])

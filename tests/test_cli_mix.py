"""`moejax predecessor` and `moejax gates`: exit codes and one-line errors, and a working run each.

Contract (as for the other subcommands): bad input exits with status 2 and one stderr line
``moejax: error: ...`` before anything is written; an output location that cannot be written
exits with status 1; success exits 0 and names the files written.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_report_mix import GATE_SIZES, gate_fits, manifest_for, synthetic, write_run

from moejax.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def check_error(rc: int, out: str, err: str, code: int, needles: list[str]) -> None:
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("moejax: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    small = np.round(np.logspace(3, 4, 4)).astype(np.int64)
    het = synthetic({"beta": -0.5, "exp_tau": -0.5, "eta": -0.5, "nu": -0.5}, sizes=small, reps=12)
    out = {"het": write_run(root / "het", het, manifest_for())}
    for i, w in enumerate((0.1, 0.4)):
        man = manifest_for(gate="input_free", name=f"free{i}")
        man["config"]["truth"]["tau"] = math.log(w / (1 - w))
        out[f"free{i}"] = write_run(root / f"free{i}", gate_fits(w, -1.0, i, beta=False), man)
    bad = manifest_for(gate="moe", name="bad")
    out["bad_gate"] = write_run(root / "bad", gate_fits(0.2, -1.0, 9), bad)
    (root / "empty").mkdir()
    out["empty"] = root / "empty"
    assert GATE_SIZES.size == 3
    return out


def test_predecessor_bad_input(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = tmp_path / "out" / "pred"
    rc, out, err = run_cli(["predecessor", "--out", str(stem)], capsys)
    check_error(rc, out, err, 2, ["--distinguishable", "--collapse-nu"])
    rc, out, err = run_cli(
        ["predecessor", "--collapse-eta", str(runs["empty"]), "--out", str(stem)], capsys
    )
    check_error(rc, out, err, 2, ["--collapse-eta", "fits.csv"])
    rc, out, err = run_cli(
        ["predecessor", "--collapse-nu", str(tmp_path / "nope"), "--out", str(stem)], capsys
    )
    check_error(rc, out, err, 2, ["--collapse-nu", "nope"])
    rc, out, err = run_cli(["predecessor", "--distinguishable", str(runs["het"])], capsys)
    check_error(rc, out, err, 2, ["--out"])
    rc, out, err = run_cli(
        ["predecessor", "--distinguishable", str(runs["het"]), "--out", str(stem), "--n-boot", "0"],
        capsys,
    )
    check_error(rc, out, err, 2, ["--n-boot", "'0'"])
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_unwritable_output_exits_1(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output directory should be
    stem = str(blocker / "sub" / "out")
    rc, out, err = run_cli(
        ["predecessor", "--distinguishable", str(runs["het"]), "--out", stem], capsys
    )
    check_error(rc, out, err, 1, ["cannot write", str(blocker)])
    rc, out, err = run_cli(["gates", str(runs["free0"]), str(runs["free1"]), "--out", stem], capsys)
    check_error(rc, out, err, 1, ["cannot write", str(blocker)])


def test_gates_bad_input(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = str(tmp_path / "out" / "gates")
    rc, out, err = run_cli(["gates", "--out", stem], capsys)
    check_error(rc, out, err, 2, ["dirs"])
    rc, out, err = run_cli(["gates", str(runs["free0"]), str(runs["empty"]), "--out", stem], capsys)
    check_error(rc, out, err, 2, [str(runs["empty"]), "manifest.json"])
    (runs["empty"] / "fits.csv").write_text((runs["free0"] / "fits.csv").read_text())
    try:  # a fits.csv without a manifest is not enough: the gate and weight come from there
        rc, out, err = run_cli(["gates", str(runs["empty"]), "--out", stem], capsys)
        check_error(rc, out, err, 2, ["manifest.json"])
    finally:
        (runs["empty"] / "fits.csv").unlink()
    rc, out, err = run_cli(["gates", str(runs["bad_gate"]), "--out", stem], capsys)
    check_error(rc, out, err, 2, ["gate", "'moe'"])
    rc, out, err = run_cli(["gates", str(runs["free0"]), "--out", stem, "--n-boot", "x"], capsys)
    check_error(rc, out, err, 2, ["--n-boot"])
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_predecessor_and_gates_succeed(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = tmp_path / "res" / "pred"
    argv = ["predecessor", "--distinguishable", str(runs["het"]), "--out", str(stem)]
    rc, out, err = run_cli([*argv, "--n-boot", "50"], capsys)
    assert rc == 0, err
    assert "published inside our CI?" in out and "wrote" in out
    for ext in ("csv", "md", "png", "pdf"):
        assert (tmp_path / "res" / f"pred.{ext}").stat().st_size > 0

    stem = tmp_path / "res" / "gates"
    argv = ["gates", str(runs["free0"]), str(runs["free1"]), "--out", str(stem), "--n-boot", "50"]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "input_free exp_tau" in out and "(2 runs)" in out
    for ext in ("csv", "md", "png", "pdf"):
        assert (tmp_path / "res" / f"gates.{ext}").stat().st_size > 0

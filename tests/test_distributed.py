"""`moejax sweep --distributed` with two processes on this host (127.0.0.1, JAX's gloo CPU
collectives), started by the command-line flags alone.

Cost: the single-process reference compiles the tiny program once (into a temporary persistent
cache); process 0 of every two-process run reads it from there, but process 1 compiles it again
each time (on CPU the cache key holds the device assignment, and only process 0 writes to the
cache), so a two-process run costs ~10-15 s here. Every subprocess has a timeout and none is left
running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fits_compare import assert_fits_equal

from moejax import cli

# tests/test_sweep.py's tiny config (d = 2, K = 2, sizes [200, 300], chunk 2) with 24 replicates:
# 24 chunks, 12 a process, a window to kill a process between its first part and its last.
TOML = """\
name = "tiny-distributed"
seed = 0
replicates = 24
[model]
d = 2
K = 2
[sizes]
list = [200, 300]
[run]
chunk = 2
density_points = 20
"""
N_CHUNKS = 24
RUN_TIMEOUT = 240  # seconds, any one process


# ----------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "moejax.cli", "sweep", str(config), "--out", str(out)]
    return [*cmd, "--no-report", "--no-progress", *extra]


def dist_flags(port: int, pid: int, n: int = 2) -> list[str]:
    where = ["--coordinator", f"127.0.0.1:{port}"]
    return ["--distributed", *where, "--num-processes", str(n), "--process-id", str(pid)]


@contextmanager
def processes(cmds: list[list[str]], env: dict[str, str], logs: Path):
    """Start one process per command (output to logs/proc<i>.log); SIGKILL any still running
    on the way out."""
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for i, cmd in enumerate(cmds):
            with open(logs / f"proc{i}.log", "w") as log:
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait(timeout=30)


def run_distributed(config: Path, out: Path, env: dict[str, str]) -> None:
    """Both processes of a two-process sweep into ``out``; both must exit 0."""
    port = free_port()
    cmds = [sweep_cmd(config, out, *dist_flags(port, i)) for i in range(2)]
    logs = out.parent / f"logs-{out.name}-{port}"
    with processes(cmds, env, logs) as procs:
        deadline = time.monotonic() + RUN_TIMEOUT
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    for i, p in enumerate(procs):
        assert p.returncode == 0, (i, (logs / f"proc{i}.log").read_text())


def part_ids(out: Path) -> list[int]:
    d = out / "parts"
    if not d.is_dir():
        return []
    return [int(f[5:11]) for f in os.listdir(d) if f.startswith("part-") and f.endswith(".npz")]


def one_line_error(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("moejax: error: "), text
    return lines[0]


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment: a fresh persistent compilation cache, no progress bar, no proxy
    variables (JAX warns about them at initialisation)."""
    cache = tmp_path_factory.mktemp("jax-cache")
    e = {k: v for k, v in os.environ.items() if "_proxy" not in k.lower()}
    e.update(MOEJAX_CACHE_DIR=str(cache), MOEJAX_NO_PROGRESS="1")
    return e


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("config") / "tiny.toml"
    p.write_text(TOML)
    return p


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, config: Path, env: dict[str, str]) -> Path:
    """The config run by one process (`moejax sweep` without --distributed)."""
    out = tmp_path_factory.mktemp("single") / "run"
    proc = subprocess.run(
        sweep_cmd(config, out), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, config: Path, env: dict[str, str], single_run) -> Path:
    """The config run by two processes on 127.0.0.1, uninterrupted."""
    out = tmp_path_factory.mktemp("dist") / "run"
    run_distributed(config, out, env)
    return out


# ----------------------------------------------------------------------------------------------
# tests


def test_two_processes_write_the_single_process_fits(two_process_run: Path, single_run) -> None:
    out = two_process_run
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete"
    assert man["process_count"] == 2
    assert man["counts"]["n_fits"] == 2 * 24
    # Each process wrote its own chunks (plan index i -> process i % 2), every chunk once.
    assert sorted(part_ids(out)) == list(range(N_CHUNKS))
    assert_fits_equal(single_run / "fits.csv", out / "fits.csv")


def test_killed_process_then_rerun_of_both_ends_with_the_same_fits(
    config: Path, env: dict[str, str], two_process_run: Path, single_run, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    port = free_port()
    cmds = [sweep_cmd(config, out, *dist_flags(port, i)) for i in range(2)]
    logs = tmp_path / "killed-logs"
    with processes(cmds, env, logs) as procs:
        # Process 0 (the coordinator) writes the even parts (chunk i -> part i on process
        # i % 2): SIGKILL it as soon as one exists, then process 1 (it cannot finish without the
        # coordinator; so a job scheduler ends a job after a host failure).
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and procs[0].poll() is None:
            if any(i % 2 == 0 for i in part_ids(out)):
                break
            time.sleep(0.002)
        os.kill(procs[0].pid, signal.SIGKILL)  # a zombie if it had exited: no error
        procs[0].wait(timeout=30)
        procs[1].kill()
    before = part_ids(out)
    even = [i for i in before if i % 2 == 0]
    print(f"killed with {len(before)} of {N_CHUNKS} parts, {len(even)} of process 0's")
    if len(even) == N_CHUNKS // 2:
        pytest.skip("process 0 wrote all its parts before it could be killed")
    assert 1 <= len(even) < N_CHUNKS // 2, (logs / "proc0.log").read_text()
    assert not (out / "fits.csv").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    run_distributed(config, out, env)  # the same two commands again, on a new port
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete"
    assert man["counts"]["n_fits"] == 2 * 24
    # Only the missing lanes were computed (2 lanes a part).
    assert man["timings"]["lanes_this_run"] == 2 * 24 - 2 * len(before)
    assert len(part_ids(out)) == N_CHUNKS  # new parts numbered after the old ones
    # The same programs computed every lane as in the uninterrupted run: identical bytes.
    assert (out / "fits.csv").read_bytes() == (two_process_run / "fits.csv").read_bytes()
    assert_fits_equal(single_run / "fits.csv", out / "fits.csv")


def test_unreachable_coordinator_is_one_line_and_status_2(
    config: Path, env: dict[str, str], tmp_path: Path
) -> None:
    # Process 1 of 2, and nothing listens on the coordinator's port.
    out = tmp_path / "run"
    cmd = sweep_cmd(config, out, *dist_flags(free_port(), 1), "--coordinator-timeout", "2")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - t0
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = one_line_error(proc.stderr)
    assert "within 2 s" in line and "127.0.0.1" in line, line
    assert wall < 30, wall
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--coordinator", "127.0.0.1:1234"], "--coordinator needs --distributed"),
        (["--num-processes", "2"], "--num-processes needs --distributed"),
        (["--process-id", "0"], "--process-id needs --distributed"),
        (["--coordinator-timeout", "5"], "--coordinator-timeout needs --distributed"),
        (["--distributed", "--coordinator", "h:1", "--num-processes", "2"], "--process-id missing"),
        (["--distributed", "--process-id", "0"], "--coordinator and --num-processes missing"),
        (
            ["--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id = 2: expected an integer < --num-processes = 2",
        ),
        (["--distributed", "--coordinator", "h"], "expected HOST:PORT"),
        (["--distributed", "--coordinator", "h:0"], "expected HOST:PORT"),
        (["--distributed", "--num-processes", "0"], "--num-processes = '0'"),
        (["--distributed", "--process-id", "-1"], "--process-id = '-1'"),
        (["--distributed", "--coordinator-timeout", "0"], "--coordinator-timeout = '0'"),
    ],
)
def test_bad_distributed_flags_are_one_line_and_status_2(
    flags: list[str], needle: str, config: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main() may extend it
    out = tmp_path / "run"
    try:
        rc = cli.main(["sweep", str(config), "--out", str(out), *flags])
    except SystemExit as exc:  # argparse's refusals
        rc = exc.code
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in one_line_error(captured.err)
    assert not out.exists()


def test_no_flags_and_no_cluster_is_one_line_and_status_2(
    config: Path, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    clean = {
        k: v
        for k, v in env.items()
        if not k.startswith(("SLURM_", "OMPI_", "KUBERNETES_", "JAX_COORDINATOR"))
    }
    proc = subprocess.run(
        sweep_cmd(config, out, "--distributed", "--coordinator-timeout", "5"),
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "JAX detected no cluster" in one_line_error(proc.stderr)
    assert not out.exists()

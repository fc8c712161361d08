"""Shared helpers of the benchmark scripts: machine description, tables, RESULTS.md sections,
the moejax CLI's XLA flags, pinning to one core, and the engine's call plan.

Not a benchmark itself. The scripts print their tables; throughput, scaling, ceiling,
gpu_paper_study and targets also replace their own section of ``benchmarks/RESULTS.md``
(between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``), leaving the other sections as
they are.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "RESULTS.md"

# A run counts as "quiet" when the 1-minute load average at its start is below this fraction of
# the core count; otherwise (or with --quick) its numbers are marked preliminary.
QUIET_LOAD_FRACTION = 0.25

_HEADER = """# moejax benchmark results

Latest results of the scripts in `benchmarks/` (run by hand, never in CI). Each of
`targets.py`, `throughput.py`, `scaling.py`, `ceiling.py` and `gpu_paper_study.py` replaces its
own section below; the command, date, machine and load average are recorded with the numbers.
Sections marked **PRELIMINARY** come from `--quick` runs or from a machine that was busy with
other work (see the load average); rerun the command given in the section on a quiet machine
for numbers to quote. `adapters.py` and `streaming.py` print their tables and append them to
the file given by `--out`.
"""


def nproc() -> int:
    """Cores this process may use (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def mem_available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def rss_now_mib() -> float:
    """Current resident set size of this process (VmRSS), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib(who: int | None = None) -> float:
    """Peak resident set size (ru_maxrss, KiB on Linux) of this process or of its waited-for
    children (``who=resource.RUSAGE_CHILDREN``), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF if who is None else who).ru_maxrss / 1024


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return (float("nan"),) * 3


def fmt_load(la: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in la)


def code_state() -> str:
    """The moejax commit measured, and whether moejax/ or sweeps/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "moejax", "sweeps"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    files = [line[3:] for line in dirty.splitlines() if line.strip()]
    if not files:
        return f"commit {head or '?'} (clean)"
    import hashlib

    diff = subprocess.run(
        ["git", "diff", "HEAD", "--", "moejax", "sweeps"], cwd=REPO, capture_output=True, timeout=30
    ).stdout
    digest = hashlib.sha1(diff).hexdigest()[:8]
    return f"commit {head or '?'} + uncommitted changes (diff {digest}) in {', '.join(files)}"


def versions() -> str:
    from importlib import metadata

    out = [f"Python {platform.python_version()}"]
    for pkg in ("jax", "jaxlib", "numpy", "scipy"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def command_line() -> str:
    """The command that ran this script, with the interpreter relative to the repo if it is
    inside it (e.g. ``.venv/bin/python benchmarks/throughput.py --quick``)."""
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(REPO))
    except ValueError:
        exe_s = str(exe)
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(REPO))
    except ValueError:
        script_s = str(script)
    return " ".join(shlex.quote(a) for a in [exe_s, script_s, *sys.argv[1:]])


class RunInfo:
    """Start-of-run facts: date, load average, machine."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.load_start = loadavg()
        self.t0 = time.perf_counter()
        self.nproc = nproc()
        self.code_start = code_state()

    def code_line(self) -> str:
        end = code_state()
        if end == self.code_start:
            return end
        return (
            f"{self.code_start} at the start, {end} at the end: **the code changed during the "
            "run**, so its numbers may mix versions (a cold/warm pair may not share its cache)"
        )

    @property
    def busy(self) -> bool:
        return self.load_start[0] > QUIET_LOAD_FRACTION * self.nproc

    @property
    def preliminary(self) -> bool:
        return self.quick or self.busy

    def header_lines(self, script: str, full_command: str, devices: str | None = None) -> list[str]:
        la_end = loadavg()
        lines = []
        if self.preliminary:
            why = []
            if self.quick:
                why.append("a `--quick` run (small sizes)")
            if self.busy:
                why.append(
                    f"the machine was busy (1-min load average {self.load_start[0]:.2f} on "
                    f"{self.nproc} cores at the start)"
                )
            lines.append(
                f"**PRELIMINARY**: {' and '.join(why)}. For numbers to quote, rerun "
                f"`{full_command}` on a quiet machine."
            )
            lines.append("")
        lines += [
            f"- Command: `{command_line()}`",
            f"- Date: {self.date}; elapsed {time.perf_counter() - self.t0:.0f} s",
            f"- Machine: nproc {self.nproc} (os.cpu_count() {os.cpu_count()}), CPU "
            f'"{cpu_model()}", {mem_total_gib():.1f} GiB RAM, {platform.machine()} '
            f"{platform.system()} {platform.release()}",
            f"- Software: {versions()}" + (f"; JAX devices: {devices}" if devices else ""),
            f"- moejax code: {self.code_line()}",
            f"- Load average (1/5/15 min): {fmt_load(self.load_start)} at the start, "
            f"{fmt_load(la_end)} at the end",
        ]
        return lines


def write_section(name: str, lines: Sequence[str]) -> Path:
    """Replace (or append) the section ``name`` of RESULTS.md with ``## name`` + ``lines``."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = "\n".join([begin, f"## {name}", "", *lines, end])
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pat.search(text):
        text = pat.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, RESULTS)
    return RESULTS


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3g}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[str]]:
    """(plain-text table for the terminal, Markdown table lines)."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    txt = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    txt += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    esc = lambda c: c.replace("|", "\\|")  # a literal | would split a Markdown cell
    md = ["| " + " | ".join(map(esc, headers)) + " |"]
    md += ["|" + "|".join("---:" for _ in headers) + "|"]
    md += ["| " + " | ".join(map(esc, r)) + " |" for r in cells]
    return "\n".join(txt), md


def run_json_subprocess(argv: list[str], env: dict[str, str] | None = None, timeout=None) -> Any:
    """Run a child python that prints one JSON line last; return it parsed (or raise)."""
    import json

    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO)
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"child {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pin_one_core() -> int:
    """Pin this process to one core (its lowest allowed CPU) and ask the moejax CLI flags for
    one host device. Must run before JAX starts its backend (its thread pools are sized
    then). Returns the core."""
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    os.environ["MOEJAX_HOST_DEVICES"] = "1"
    return core


def apply_cli_xla_flags(enabled: bool = True, host_devices: int | None = None) -> str:
    """Set the XLA flags that the `moejax` command line sets for itself
    (`moejax.cli._cpu_compile_flags`: ``--xla_backend_optimization_level=1`` and one host
    device per core), so that in-process measurements compile and shard the way `moejax
    sweep` does. ``host_devices`` overrides the device count (MOEJAX_HOST_DEVICES; 1 = one
    device, what a process pinned to one core gets anyway); ``enabled`` False keeps JAX's
    default optimisation level (the device count is still applied). Must run before JAX's
    backend starts. Returns XLA_FLAGS."""
    if host_devices is not None:
        os.environ["MOEJAX_HOST_DEVICES"] = str(int(host_devices))
    if enabled:
        from moejax import cli

        cli._cpu_compile_flags()
    else:
        n = int(os.environ.get("MOEJAX_HOST_DEVICES", "0") or 0) or nproc()
        flags = os.environ.get("XLA_FLAGS", "")
        if n > 1 and "xla_force_host_platform_device_count" not in flags:
            flags = f"{flags} --xla_force_host_platform_device_count={n}".strip()
            os.environ["XLA_FLAGS"] = flags
    return os.environ.get("XLA_FLAGS", "")


def moejax_argv() -> list[str]:
    """The `moejax` command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "moejax"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "moejax.cli"]


def block_size(cfg: dict) -> int:
    """Rows per compute block the engine uses for this config (`choose_block` of the config's
    sizes, ``run.block_rows`` and ``run.max_padding``)."""
    from moejax.sweep.simulate import choose_block

    r = cfg["run"]
    return choose_block(cfg["sizes"]["list"], r["block_rows"], r["max_padding"])


def active_rows(cfg: dict, n: int) -> int:
    """Rows a lane of size n works on: n rounded up to whole compute blocks (every pass loops
    over the active blocks only, whatever the class's buffer length)."""
    B = block_size(cfg)
    return -(-n // B) * B


def describe_config(cfg: dict) -> str:
    m, t, e, i = cfg["model"], cfg["truth"], cfg["estimator"], cfg["init"]
    return (
        f"d={m['d']}, K={m['K']}, frozen {m['frozen']} / adapter {m['adapter']}, scale "
        f"{m['scale']} (frozen {m['frozen_scale']}), eta0={m['eta0']}; truth {t['regime']}: "
        f"beta*={t['beta']}, tau*={t['tau']}, eta*={t['eta']}; {e['method']} MLE, solver "
        f"{e['solver']} (max_iter {e['max_iter']}), init {i['mode']}; run {cfg['run']}"
    )


def call_plan(
    cfg: dict, n_devices: int = 1, platform: str = "cpu"
) -> list[tuple[list[tuple[int, int]], int, int]]:
    """The compiled calls a sweep of ``cfg`` makes, mirroring `moejax.sweep.driver.run_sweep`
    and `Engine.run`: a list of (real lanes [(n, r)], lanes per call, rows per lane). The
    plan (`moejax.sweep.simulate.plan`) gives every buffer class G lanes per device and the
    devices a call uses; chunks (parts on disk, `chunk_lanes`) never mix sizes and each runs
    whole calls of G x devices lanes, its last call padded with copies of its last lane; a
    lane of size n works on ceil(n / B) * B rows (`active_rows`)."""
    from moejax.sweep.simulate import build_problem, chunk_lanes, plan

    problem = build_problem(cfg)
    R = cfg["replicates"]
    pl = plan(problem, n_devices, platform)
    out = []
    for cp in pl.classes:
        Cc = chunk_lanes(problem, cp)
        P = cp.per_call
        for n in cp.sizes:
            rows = -(-n // pl.block) * pl.block
            for i in range(0, R, Cc):
                chunk = list(range(i, min(i + Cc, R)))
                for j in range(0, len(chunk), P):
                    out.append(([(n, r) for r in chunk[j : j + P]], P, rows))
    return out

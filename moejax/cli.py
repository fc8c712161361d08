"""Command line: `moejax sweep CONFIG --out DIR`, `moejax report DIR`, `moejax compare ...`,
`moejax study DIR` (a CONFIG with a [grid] table is a study: one run per grid point),
`moejax realdata [--quick] [--out DIR]` (the digits study, moejax/realdata.py); every
--out names a directory (`moejax compare RUN... --out DIR` writes DIR/compare.png and .pdf).

Bad input exits with status 2 and one line on stderr; a results directory that cannot be used
exits with status 1 and one line; nothing is computed or written before the input is valid.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Any

# --quick: 6 log-spaced sizes from the config's smallest n to 8x it, 24 replicates: the same
# design (so the same regime of identifiability), a fraction of the work.
QUICK_SIZES, QUICK_SPAN, QUICK_REPLICATES = 6, 8, 24
# compare --out DIR writes DIR/compare.png and DIR/compare.pdf (a directory, as sweep's --out).
COMPARE_STEM = "compare"
# sweep --distributed: default --coordinator-timeout (JAX's own default initialization timeout).
COORDINATOR_TIMEOUT_S = 300
DISTRIBUTED_FLAGS = {
    "--coordinator": "coordinator",
    "--num-processes": "num_processes",
    "--process-id": "process_id",
    "--coordinator-timeout": "coordinator_timeout",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"moejax: error: {message}\n")


def _int_at_least(name: str, minimum: int):
    """argparse type: an integer >= minimum, else one clear line naming the flag."""
    want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} = {s!r}: expected {want}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} = {s!r}: expected {want}")
        return v

    return parse


def _positive_int(name: str):
    return _int_at_least(name, 1)


def _nonneg_int(name: str):
    return _int_at_least(name, 0)


def _sizes(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        try:
            v = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: {part!r} is not an integer") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"--sizes: {v} is not a positive sample size")
        out.append(v)
    return out


def _host_port(s: str) -> str:
    """argparse type for --coordinator: HOST:PORT (an IPv6 host in brackets), port 1..65535."""
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"--coordinator = {s!r}: expected HOST:PORT with a port in 1..65535"
        )
    return s


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="moejax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("sweep", help="run (or resume) a Monte Carlo rate study")
    s.add_argument(
        "config",
        help="sweep config: a TOML file, or the name of a shipped config (e.g. heterogeneous)",
    )
    s.add_argument("--out", help="results directory (default runs/<name>)")
    s.add_argument("--replicates", type=_positive_int("--replicates"))
    s.add_argument("--sizes", type=_sizes, help="comma-separated sample sizes")
    s.add_argument(
        "--chunk",
        type=_positive_int("--chunk"),
        help="lanes per part on disk (the resume granularity)",
    )
    s.add_argument("--seed", type=_nonneg_int("--seed"))
    s.add_argument(
        "--quick",
        action="store_true",
        help="small fast preset: 6 sizes from the config's smallest n to 8x it, 24 reps",
    )
    s.add_argument("--force", action="store_true", help="overwrite a directory of another config")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--no-report", action="store_true", help="skip slope tables and figures")
    s.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run (jax.distributed): the three flags below, or a cluster "
        "JAX detects by itself (SLURM, Open MPI, ...) when they are absent",
    )
    s.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        type=_host_port,
        help="with --distributed: address of process 0, reachable from every process",
    )
    s.add_argument(
        "--num-processes",
        metavar="N",
        type=_positive_int("--num-processes"),
        help="with --distributed: how many processes take part",
    )
    s.add_argument(
        "--process-id",
        metavar="I",
        type=_nonneg_int("--process-id"),
        help="with --distributed: this process's id, 0 .. N-1 (0 is the coordinator)",
    )
    s.add_argument(
        "--coordinator-timeout",
        metavar="SECONDS",
        type=_positive_int("--coordinator-timeout"),
        help=f"with --distributed: give up (exit 2) when not every process has joined within "
        f"this time (default {COORDINATOR_TIMEOUT_S})",
    )
    r = sub.add_parser("report", help="slope tables and figures from DIR/fits.csv")
    r.add_argument("dir")
    r.add_argument("--n-boot", type=_positive_int("--n-boot"), default=1000)
    c = sub.add_parser("compare", help="side-by-side rate figure of several run directories")
    c.add_argument("dirs", nargs="+")
    c.add_argument(
        "--out",
        required=True,
        help="results directory, like sweep's (writes DIR/compare.png and DIR/compare.pdf)",
    )
    st = sub.add_parser(
        "study", help="the study report (study.csv/.md/.png) of DIR from its grid points' runs"
    )
    st.add_argument("dir", help="a study directory, filled by `moejax sweep GRID.toml --out DIR`")
    rd = sub.add_parser(
        "realdata",
        help="real-data study: digits, a frozen expert pre-trained on rotated digits, adapters "
        "fitted on target samples of growing n (needs the optional extra moejax[data])",
    )
    rd.add_argument("--quick", action="store_true", help="tiny preset (d = 3, 2 sizes, 3 reps)")
    rd.add_argument("--out", default="runs/realdata", help="results directory")
    rd.add_argument("--replicates", type=_positive_int("--replicates"))
    rd.add_argument("--seed", type=_nonneg_int("--seed"))
    return p


def _die(msg: str, code: int) -> int:
    print(f"moejax: error: {msg}", file=sys.stderr)
    return code


def _setup_jax_cache() -> None:
    import jax

    cache = os.environ.get("MOEJAX_CACHE_DIR", str(Path.home() / ".cache" / "moejax" / "jax"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _distributed_flags_error(args: argparse.Namespace) -> str | None:
    """The multi-process flags are used together, with --distributed, consistently."""
    given = [f for f, v in DISTRIBUTED_FLAGS.items() if getattr(args, v) is not None]
    if not args.distributed:
        return f"{given[0]} needs --distributed" if given else None
    trio = [f for f in given if f != "--coordinator-timeout"]
    if trio and len(trio) < 3:
        missing = [f for f in list(DISTRIBUTED_FLAGS)[:3] if f not in given]
        return (
            f"--distributed: {' and '.join(missing)} missing (give --coordinator, "
            "--num-processes and --process-id together, or none of them)"
        )
    if trio and args.process_id >= args.num_processes:
        return (
            f"--process-id = {args.process_id}: expected an integer < --num-processes "
            f"= {args.num_processes}"
        )
    return None


def _init_distributed(args: argparse.Namespace) -> str | None:
    """Join the multi-process run (before JAX starts a backend); an error line, or None.

    On CPU, cross-process collectives (the engine's barrier) need an implementation: gloo
    (JAX_CPU_COLLECTIVES_IMPLEMENTATION, if set, wins). JAX's client aborts the process with a
    stack trace when it cannot connect in time, so a watchdog thread ends it first, with one
    line and status 2; JAX's own timeout is kept later as a backstop.
    """
    import threading

    import jax

    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = args.coordinator_timeout or COORDINATOR_TIMEOUT_S
    explicit = args.coordinator is not None
    where = f"coordinator {args.coordinator}" if explicit else "the coordinator JAX detected"
    joined = threading.Event()

    def watchdog() -> None:
        if not joined.wait(timeout):
            sys.stderr.write(
                f"moejax: error: --distributed: not every process joined through {where} "
                f"within {timeout} s (is each process started, and the coordinator reachable "
                "from this host?)\n"
            )
            sys.stderr.flush()
            os._exit(2)

    threading.Thread(target=watchdog, name="moejax-distributed-watchdog", daemon=True).start()
    try:
        if explicit:
            # All given: no cluster detection (which could, e.g. under SLURM, also restrict
            # this process to one local device).
            jax.distributed.initialize(
                coordinator_address=args.coordinator,
                num_processes=args.num_processes,
                process_id=args.process_id,
                cluster_detection_method="deactivate",
                initialization_timeout=timeout + 60,
            )
        else:
            jax.distributed.initialize(initialization_timeout=timeout + 60)
    except (ValueError, TypeError, RuntimeError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if explicit:
            return (
                f"--distributed (coordinator {args.coordinator}, process {args.process_id} of "
                f"{args.num_processes}): {msg}"
            )
        return (
            f"--distributed: JAX detected no cluster ({msg}); give --coordinator HOST:PORT, "
            "--num-processes N and --process-id I"
        )
    finally:
        joined.set()
    return None


def _sweep_overrides(args: argparse.Namespace, n0: int | None) -> dict[str, Any]:
    """Dotted-key overrides from the flags (``n0``: the smallest configured n, for --quick)."""
    from moejax.sweep.config import log_spaced_sizes

    overrides: dict[str, Any] = {}
    if args.quick and n0 is not None:
        overrides["sizes.list"] = log_spaced_sizes(n0, QUICK_SPAN * n0, QUICK_SIZES)
        overrides["replicates"] = QUICK_REPLICATES
    if args.replicates is not None:
        overrides["replicates"] = args.replicates
    if args.sizes is not None:
        overrides["sizes.list"] = args.sizes
    if args.chunk is not None:
        overrides["run.chunk"] = args.chunk
    if args.seed is not None:
        overrides["seed"] = args.seed
    return overrides


def _resolve_sweeps(args: argparse.Namespace) -> tuple[str, list[tuple[str, dict, Any]], bool]:
    """``(name, [(point or "", resolved config, manifest study entry or None)], is_study)``.

    Raises ConfigError."""
    from moejax.sweep.config import load
    from moejax.sweep.grid import is_grid, read_raw, study_from_raw

    raw = read_raw(args.config)
    if not is_grid(raw):
        n0 = min(load(args.config)["sizes"]["list"]) if args.quick else None
        cfg = load(args.config, _sweep_overrides(args, n0))
        return cfg["name"], [("", cfg, None)], False
    n0 = None
    if args.quick:
        n0 = min(min(p.config["sizes"]["list"]) for p in study_from_raw(raw).points)
    study = study_from_raw(raw, _sweep_overrides(args, n0))
    runs = [(p.name, p.config, study.manifest_entry(i)) for i, p in enumerate(study.points)]
    return study.name, runs, True


def cmd_sweep(args: argparse.Namespace) -> int:
    from moejax.sweep.config import ConfigError, ConfigWarning

    err = _distributed_flags_error(args)
    if err:
        return _die(err, 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigWarning)
            name, sweeps, is_study = _resolve_sweeps(args)
    except ConfigError as exc:
        return _die(str(exc), 2)
    for w in caught:
        if issubclass(w.category, ConfigWarning):
            print(f"moejax: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    out = Path(args.out) if args.out else Path("runs") / name

    if args.distributed:
        err = _init_distributed(args)
        if err:
            return _die(err, 2)
    _setup_jax_cache()
    from moejax.sweep.driver import SweepPlanError, run_sweep
    from moejax.sweep.store import StoreError

    complete = True
    for k, (point, cfg, entry) in enumerate(sweeps):
        where = out / point if point else out
        if is_study:
            print(f"[{k + 1}/{len(sweeps)}] {point} -> {where}", flush=True)
        try:
            man = run_sweep(
                cfg, where, force=args.force, progress=not args.no_progress, study=entry
            )
            rep = None
            if man and not args.no_report:
                from moejax.report import make_report

                rep = make_report(where)
        except SweepPlanError as exc:
            return _die(f"{point}: {exc}" if point else str(exc), 2)
        except StoreError as exc:
            return _die(str(exc), 1)
        except OSError as exc:
            return _die(f"cannot write results to {where}: {exc.strerror or exc}", 1)
        if not man:
            complete = False
            continue
        c, t = man["counts"], man["timings"]
        print(
            f"{c['n_fits']} fits ({c['n_failed']} failed, {c['n_at_bound']} on a bound) in "
            f"{t['wall_s']:.1f} s (compile {t['compile_s']:.1f} s); padded/real work "
            f"{man['padding_ratio']:.2f}; results in {where}"
        )
        if rep is not None:
            print(rep["terminal"])
    if is_study and complete and not args.no_report:
        from moejax.report.study import write_study

        try:
            res = write_study(out)
        except (ValueError, OSError) as exc:
            return _die(f"cannot write the study report in {out}: {exc}", 1)
        print(res["markdown"], end="")
        print("wrote " + ", ".join(str(p) for p in res["paths"].values()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    if not (d / "fits.csv").is_file():
        return _die(f"{d}: no fits.csv here (run `moejax sweep` first)", 2)
    from moejax.report import make_report

    try:
        res = make_report(d, n_boot=args.n_boot)
    except (ValueError, OSError) as exc:
        return _die(f"{d}: cannot read results: {exc}", 2)
    print(res["terminal"])
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    dirs = [Path(x) for x in args.dirs]
    for d in dirs:
        if not (d / "fits.csv").is_file():
            return _die(f"{d}: no fits.csv here", 2)
    from moejax.report import plot_comparison, read_manifest

    labels = []
    for d in dirs:
        try:
            labels.append(read_manifest(d / "manifest.json").get("name", d.name))
        except OSError:
            labels.append(d.name)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _die(f"--out = {args.out!r}: a file; expected a directory (DIR/compare.png)", 2)
    try:
        png, pdf = plot_comparison(dirs, labels, out / COMPARE_STEM)
    except (ValueError, OSError) as exc:
        return _die(f"cannot compare {', '.join(map(str, dirs))}: {exc}", 2)
    print(f"wrote {png} and {pdf}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    if not d.is_dir():
        return _die(f"{d}: no such directory", 2)
    from moejax.report.study import write_study

    try:
        res = write_study(d)
    except ValueError as exc:
        return _die(str(exc), 2)
    except OSError as exc:
        return _die(f"cannot write the study report in {d}: {exc.strerror or exc}", 1)
    print(res["markdown"], end="")
    print("wrote " + ", ".join(str(p) for p in res["paths"].values()))
    return 0


ACCELERATOR_PLUGINS = (
    "jax_cuda12_plugin",
    "jax_cuda13_plugin",
    "jax_rocm60_plugin",
    "jax_rocm7_plugin",
    "libtpu",
)


def _cpu_compile_flags() -> None:
    """CPU-only installs: compile with XLA's LLVM optimisation level 1 (measured: ~60% of the
    default level's compile time, no slower to run), and expose one host device per core, so
    that a sweep's calls are sharded over every core (XLA runs one program on about one core).
    MOEJAX_HOST_DEVICES=N asks for N devices instead. The device count never changes a result:
    every call runs run.lanes lanes per device (see `moejax.sweep.simulate`). Either flag given
    in XLA_FLAGS wins. Must run before JAX starts its backend; GPU/TPU installs are left alone.
    """
    if any(importlib.util.find_spec(m) is not None for m in ACCELERATOR_PLUGINS):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = []
    if "xla_backend_optimization_level" not in flags:
        extra.append("--xla_backend_optimization_level=1")
    if "xla_force_host_platform_device_count" not in flags:
        n = os.environ.get("MOEJAX_HOST_DEVICES", "")
        from moejax.devices import cpu_cores

        count = int(n) if n.isdigit() and int(n) >= 1 else cpu_cores()
        if count > 1:
            extra.append(f"--xla_force_host_platform_device_count={count}")
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def cmd_realdata(args: argparse.Namespace) -> int:
    """`moejax realdata`: run the digits study (moejax.realdata) and write its outputs."""
    import dataclasses

    from moejax import realdata

    cfg = realdata.QUICK if args.quick else realdata.RealDataConfig()
    if args.replicates is not None:
        cfg = dataclasses.replace(cfg, replicates=args.replicates)
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    try:
        out = Path(args.out)
        summary = realdata.main(cfg, out)
    except ImportError as e:
        return _die(str(e), 2)
    print(f"realdata: {len(summary)} (method, n) cells -> {out}/realdata.{{csv,md,png}}")
    return 0


def main(argv: list[str] | None = None) -> int:
    _cpu_compile_flags()
    args = build_parser().parse_args(argv)
    commands = {
        "sweep": cmd_sweep,
        "report": cmd_report,
        "compare": cmd_compare,
        "study": cmd_study,
        "realdata": cmd_realdata,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

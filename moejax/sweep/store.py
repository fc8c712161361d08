"""Results on disk: chunk parts, the per-fit table (fits.csv and its schema), the manifest.

Layout of a run directory:
    manifest.json     resolved config, its hash, versions, devices, timings, counts
    parts/part-*.npz  one file per finished chunk (written atomically; the resume state)
    fits.csv          one row per (n, replicate), sorted; regenerated from the parts
    estimates.npz     every fit's evidence in fits.csv's row order (`write_estimates`)
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from moejax.atomic import write_bytes_atomic, write_text_atomic

#: The fits.csv schema: its columns in file order. The report's reader
#: (`moejax.report.table.read_fits_csv`) parses them by the three type lists below.
FIT_COLUMNS: tuple[str, ...] = (
    "n",
    "replicate",
    "err_beta",
    "err_exp_tau",
    "err_eta",
    "err_density",
    "err_nu",
    "err_voronoi",
    "loglik",
    "n_iter",
    "inner_steps",
    "converged",
    "at_bound",
    "n_empty_cells",
    "n_shared_cells",
    "status",
    "grad_norm",
    "start",
    "passes",
)
#: Integer columns (written as ints; the flags ``converged`` and ``at_bound`` are 0/1).
INT_COLUMNS: tuple[str, ...] = (
    "n",
    "replicate",
    "n_iter",
    "inner_steps",
    "converged",
    "at_bound",
    "n_empty_cells",
    "n_shared_cells",
    "start",
    "passes",
)
#: Integer columns added after fits.csv files were first written without them (over-fitted
#: adapters): the reader gives ``MISSING_INT`` in every row of an older file.
LATER_INT_COLUMNS: tuple[str, ...] = ("n_shared_cells", "start", "passes")
#: The groups of kept arrays beside fits.csv's columns (``<group>.<leaf>`` keys of a lane's
#: results, of the parts and of estimates.npz, one per MixParams leaf; ``moejax.simulate``
#: returns each group as one MixParams): the estimate, its standard errors, its coordinates
#: on a box bound (int8), the truth G*(n).
KEPT_GROUPS: tuple[str, ...] = ("estimate", "se", "on_bound", "truth")
#: Text columns.
STR_COLUMNS: tuple[str, ...] = ("status",)
#: Float columns (written with repr: ``nan``/``inf`` as such): every other column.
FLOAT_COLUMNS: tuple[str, ...] = tuple(
    c for c in FIT_COLUMNS if c not in INT_COLUMNS and c not in STR_COLUMNS
)


class StoreError(RuntimeError):
    """The run directory cannot be used (unwritable, full, or holds another config)."""


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def check_writable(out: Path) -> None:
    """Create ``out`` (and parts/) and prove a file can be written there, or raise StoreError."""
    try:
        (out / "parts").mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out / ".write-test", b"ok")
        (out / ".write-test").unlink()
    except OSError as exc:
        raise StoreError(
            f"cannot write to results directory {out}: {exc.strerror or exc}"
        ) from None


def save_part(out: Path, index: int, arrays: dict[str, np.ndarray]) -> Path:
    """Persist one finished chunk atomically as parts/part-<index>.npz."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = out / "parts" / f"part-{index:06d}.npz"
    write_bytes_atomic(path, buf.getvalue())
    return path


def load_parts(out: Path) -> tuple[dict[str, np.ndarray], int]:
    """All finished lanes (concatenated arrays; duplicates of (n, replicate) dropped) and the
    next free part index."""
    files = sorted((out / "parts").glob("part-*.npz"))
    chunks = []
    for f in files:
        try:
            with np.load(f) as z:
                chunks.append({k: z[k] for k in z.files})
        except (OSError, ValueError, EOFError) as exc:
            # Parts are written atomically, so this is outside damage; recompute those lanes.
            print(f"moejax: warning: ignoring unreadable part {f.name} ({exc})", file=sys.stderr)
    next_index = 1 + max((int(f.stem.split("-")[1]) for f in files), default=-1)
    if not chunks:
        return {}, next_index
    keys = [k for k in chunks[0] if all(k in c for c in chunks)]
    dropped = sorted(set().union(*(c.keys() for c in chunks)) - set(keys))
    if dropped:
        # Parts written before a column existed (e.g. the kept estimates): keep what all have.
        print(
            f"moejax: warning: {out / 'parts'}: some parts lack {', '.join(dropped[:4])}"
            f"{' ...' if len(dropped) > 4 else ''}; those arrays are left out (rerun with "
            "--force to compute them for every fit)",
            file=sys.stderr,
        )
    cat = {k: np.concatenate([c[k] for c in chunks]) for k in keys}
    _, first = np.unique(np.stack([cat["n"], cat["replicate"]], 1), axis=0, return_index=True)
    return {k: v[np.sort(first)] for k, v in cat.items()}, next_index


def clear_run(out: Path) -> None:
    """Remove a previous run's parts and derived files (used by --force)."""
    for f in (out / "parts").glob("part-*.npz"):
        f.unlink()
    for name in ("fits.csv", "estimates.npz", "manifest.json"):
        p = out / name
        if p.exists():
            p.unlink()


def _fmt(col: str, v: Any) -> str:
    if col == "status":
        return str(v)
    if col in INT_COLUMNS:
        return str(int(v))
    return repr(float(v))


def write_fits_csv(out: Path, lanes: dict[str, np.ndarray], status_names: tuple[str, ...]) -> Path:
    """Write fits.csv (sorted by n, replicate) atomically from the lanes' arrays."""
    order = np.lexsort((lanes["replicate"], lanes["n"]))
    cols = [c for c in FIT_COLUMNS if c in lanes or c == "status"]
    lines = [",".join(cols)]
    for i in order:
        row = []
        for c in cols:
            if c == "status":
                code = int(lanes["status_code"][i])
                row.append(status_names[code] if 0 <= code < len(status_names) else str(code))
            else:
                row.append(_fmt(c, lanes[c][i]))
        lines.append(",".join(row))
    path = out / "fits.csv"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def write_estimates(
    out: Path, lanes: dict[str, np.ndarray], groups: tuple[str, ...]
) -> Path | None:
    """Write estimates.npz (compressed, atomically): ``n`` and ``replicate`` (F,) and every
    ``<group>.<leaf>`` array of ``lanes`` (F, ...) for ``group`` in ``groups``, rows in fits.csv's
    order (sorted by n, replicate). None (nothing written) when the lanes hold no such array."""
    keys = [k for k in lanes if k.split(".")[0] in groups]
    if not keys:
        return None
    order = np.lexsort((lanes["replicate"], lanes["n"]))
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        n=lanes["n"][order],
        replicate=lanes["replicate"][order],
        **{k: np.asarray(lanes[k])[order] for k in keys},
    )
    path = out / "estimates.npz"
    write_bytes_atomic(path, buf.getvalue())
    return path

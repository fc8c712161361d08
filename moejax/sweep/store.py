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
from typing import Any, NamedTuple

import numpy as np

from moejax.atomic import write_bytes_atomic, write_text_atomic

# The fits.csv schema lives in moejax.sweep.schema (one list of columns); re-exported here.
from moejax.sweep.schema import FIT_COLUMNS as FIT_COLUMNS
from moejax.sweep.schema import FLOAT_COLUMNS as FLOAT_COLUMNS
from moejax.sweep.schema import INT_COLUMNS as INT_COLUMNS
from moejax.sweep.schema import KEPT_GROUPS as KEPT_GROUPS
from moejax.sweep.schema import LATER_INT_COLUMNS as LATER_INT_COLUMNS
from moejax.sweep.schema import STR_COLUMNS as STR_COLUMNS


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


# ----------------------------------------------------------------------------------------------
# fits.csv text, built column by column with NumPy (no Python loop over rows or cells).
#
# Every cell is exactly what the row-by-row writer wrote (`tests/test_store.py` compares the
# two): ``str(int(v))`` for the integer columns, the status name (or ``str(code)`` outside the
# names), and ``repr(float(v))`` for the floats: Python's shortest round-tripping digits (among
# the shortest strings that read back as v, the nearest to v), fixed notation for decimal
# exponents -4..15 and ``d.ddde+XX`` outside, ``nan``/``inf``/``-inf``/``-0.0`` as such. The
# floats' digits come from a binary search over the digit count p = 1..17 in 80-bit long double
# arithmetic, which decides a candidate only when it is farther from every rounding boundary
# than its error bound; the rest (powers of two, zeros, non-finite, |v| outside 1e-300..1e300,
# and the ~2% near a boundary) are formatted by ``repr`` itself, once per distinct value.

#: Rows formatted at a time (bounds the working memory of the character matrices).
CSV_ROWS_PER_BLOCK = 131072
#: Widest ``repr`` of a float64 (``-2.2250738585072014e-308``).
_FLOAT_WIDTH = 24
#: |v| outside this range (and powers of two, whose rounding interval is lopsided) are
#: formatted by ``repr``: the double-double products below stay finite and normal inside it.
_FAST_RANGE = (1e-280, 1e280)


def _pow10_double_double(lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """10**k for k = lo..hi as double-doubles (hi part correctly rounded, lo part the rounded
    rest) and the hi part's Dekker halves (hh + hl = hi, each 26 bits)."""
    from fractions import Fraction

    ph, pl = [], []
    for k in range(lo, hi + 1):
        exact = Fraction(10) ** k
        h = float(exact)
        ph.append(h)
        pl.append(float(exact - Fraction(h)))
    ph_a = np.array(ph)
    c = 134217729.0 * ph_a
    hh = c - (c - ph_a)
    return ph_a, np.array(pl), hh, ph_a - hh


_K0 = -300
_P10_HI, _P10_LO, _P10_HH, _P10_HL = _pow10_double_double(_K0, 300)
_POW10 = 10 ** np.arange(18, dtype=np.int64)


class _Keyed(NamedTuple):
    """Cells drawn from a table of distinct texts: row i is ``table[index[i], :lens[index[i]]]``."""

    table: np.ndarray  # (U, W) uint8
    lens: np.ndarray  # (U,)
    index: np.ndarray  # (N,)

    def cells(self, rows: slice | np.ndarray = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        i = self.index[rows]
        return self.table[i], self.lens[i]


def _keyed(values: np.ndarray, fmt: Any) -> _Keyed:
    """``fmt(v)`` of every element, ``fmt`` called once per distinct value (an offset table
    for integers in a short range)."""
    values = np.asarray(values).reshape(-1)
    small_int = values.dtype.kind in "ib" or (values.dtype.kind == "u" and values.itemsize < 8)
    keys: list[Any] | range
    if (
        values.size
        and small_int
        and int(values.max()) - int(values.min()) <= max(1024, values.size // 16)
    ):
        lo = int(values.min())
        index = values.astype(np.int64) - lo
        keys = range(lo, int(values.max()) + 1)
    else:
        uniq, index = np.unique(values, return_inverse=True)
        keys = uniq.tolist()
    enc = [fmt(k).encode("utf-8") for k in keys]
    W = max([1, *map(len, enc)])
    table = np.frombuffer(b"".join(e.ljust(W, b" ") for e in enc) or b" " * W, dtype=np.uint8)
    lens = np.array([len(e) for e in enc] or [0], dtype=np.int64)
    return _Keyed(table.reshape(-1, W), lens, index.reshape(-1))


def _int_cells(values: np.ndarray) -> _Keyed:
    return _keyed(values, lambda v: str(int(v)))


def _status_cells(codes: np.ndarray, names: tuple[str, ...]) -> _Keyed:
    def name(v: Any) -> str:
        code = int(v)
        return names[code] if 0 <= code < len(names) else str(code)

    return _keyed(codes, name)


def _shortest_digits(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For positive floats ``a``: (D, p, e10, ok): D (int64) the p-digit significand of
    ``repr(a)`` (the fewest digits that read back as a; among those the nearest to a) and e10
    the decimal exponent of a's first digit: a reads back from D 10**(e10 - p + 1). ``ok`` is
    False where a is outside `_FAST_RANGE`, a power of two, or a decision fell within 1e-9
    (in units of the last digit) of a tie; the caller formats those with ``repr``.

    a 10**(16 - e10) = S is formed as a double-double (error ~1e-14 in units of the 17th
    digit); D17 = round(S), fr = S - D17. A rounding to 17 - k digits reads back iff its
    distance to S is below H, the half-gap to a's neighbours in the same units; that is
    monotone in k, so k grows until it fails."""
    bits = a.view(np.int64)
    ok = (a >= _FAST_RANGE[0]) & (a <= _FAST_RANGE[1]) & ((bits & ((1 << 52) - 1)) != 0)
    a = np.where(ok, a, 1.5)
    e10 = np.floor(np.log10(a)).astype(np.int64)
    for _ in range(2):  # exact: a >= 10**e iff a > hi, or a == hi and lo <= 0
        i = e10 - _K0
        e10 -= (a < _P10_HI[i]) | ((a == _P10_HI[i]) & (_P10_LO[i] > 0))
        i = e10 + 1 - _K0
        e10 += (a > _P10_HI[i]) | ((a == _P10_HI[i]) & (_P10_LO[i] <= 0))
    i = 16 - e10 - _K0
    ph, pl, phh, phl = _P10_HI[i], _P10_LO[i], _P10_HH[i], _P10_HL[i]
    c = 134217729.0 * a
    ah = c - (c - a)
    al = a - ah
    s_hi = a * ph
    s_lo = (((ah * phh - s_hi) + ah * phl + al * phh) + al * phl) + a * pl
    s = s_hi + s_lo
    s_lo -= s - s_hi
    s_hi = s  # an integer: 1e16 <= S < 1e17 > 2**53
    r = np.rint(s_lo)
    D = s_hi.astype(np.int64) + r.astype(np.int64)
    fr = s_lo - r
    ok &= (np.abs(np.abs(fr) - 0.5) > 1e-9) & (D >= _POW10[16]) & (D <= _POW10[17])
    _, ex = np.frexp(a)
    H = np.ldexp(ph, ex - 54)  # half of a's ulp (a is no power of two), times 10**(16 - e10)
    p = np.full(a.shape, 17, np.int64)
    best = D.copy()
    live = np.flatnonzero(ok)
    for k in range(1, 17):
        if not live.size:
            break
        pw = _POW10[k]
        d, f = D[live], fr[live]
        q, rem = np.divmod(d, pw)
        tie = (2 * rem == pw) & (np.abs(f) < 1e-9)
        m = q + ((2 * rem > pw) | ((2 * rem == pw) & (f > 0)))
        dist = np.abs((m * pw - d).astype(np.float64) - f)
        h = H[live]
        passes = dist < h - 1e-9
        sure = ~tie & (passes | (dist > h + 1e-9))
        ok[live[~sure]] = False
        win = live[passes & sure]
        best[win] = m[passes & sure] * pw  # still 17 digits, k of them zeros
        p[win] = 17 - k
        live = win
    return best // _POW10[17 - p], p, e10, ok


def _ascii8(v: np.ndarray) -> np.ndarray:
    """(N, 8) uint8: the 8 decimal digits (ASCII, most significant first) of v < 10**8."""
    v = v.astype(np.uint64)
    a = v // np.uint64(10000)
    x = a | ((v - a * np.uint64(10000)) << np.uint64(32))  # 32-bit lanes: [v // 1e4, v % 1e4]
    h = ((x * np.uint64(5243)) >> np.uint64(19)) & np.uint64(0x0000007F0000007F)  # lane // 100
    y = h | ((x - h * np.uint64(100)) << np.uint64(16))  # 16-bit lanes of two digits
    h = ((y * np.uint64(103)) >> np.uint64(10)) & np.uint64(0x000F000F000F000F)  # lane // 10
    z = h | ((y - h * np.uint64(10)) << np.uint64(8))
    z += np.uint64(0x3030303030303030)
    return z.astype("<u8").view(np.uint8).reshape(-1, 8)


def _digit_cells(
    neg: np.ndarray, D: np.ndarray, p: np.ndarray, e10: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(characters (N, 24) uint8, lengths) of ``repr`` of the floats -**neg D 10**(e10-p+1),
    D having p digits (or being 10**p: rounded up to the next power of ten).

    The 17 digits (D's, then zeros) are made at once; each group of rows with one layout
    (sign, notation, point position; in exponent notation also the digit count) is then
    assembled from slices of them."""
    top = D == _POW10[p]
    D = np.where(top, D // 10, D)
    e10 = e10 + top
    M = D * _POW10[17 - p]  # 17 digits
    digits = np.empty((D.size, 17), np.uint8)
    hi, lo = np.divmod(M, _POW10[8])
    digits[:, 0] = hi // _POW10[8] + 48
    digits[:, 1:9] = _ascii8(hi % _POW10[8])
    digits[:, 9:] = _ascii8(lo)
    nz = digits[:, ::-1] != 48
    nd = 17 - np.argmax(nz, axis=1)  # digits without trailing zeros
    use_exp = (e10 < -4) | (e10 >= 16)
    # layout key: sign and e10 (the notation and the point's place); in exponent notation also
    # nd, as the exponent follows the digits (in fixed notation the length cuts them). int16,
    # which NumPy's stable argsort radix-sorts.
    key = ((neg * 700 + e10 + 350) * 18 + np.where(use_exp, nd, 0)).astype(np.int16)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    ends = np.r_[starts[1:], skey.size]
    chars = np.empty((D.size, _FLOAT_WIDTH), np.uint8)
    lens = np.empty(D.size, np.int64)
    for s0, s1 in zip(starts, ends, strict=True):
        rows = order[s0:s1]
        r0 = rows[0]
        sign = b"-" if neg[r0] else b""
        e = int(e10[r0])
        dg = digits[rows]
        if use_exp[r0]:
            n = int(nd[r0])
            tail = f"e{'-' if e < 0 else '+'}{abs(e):02d}".encode()
            parts = [sign, dg[:, :1]] + ([b".", dg[:, 1:n]] if n > 1 else []) + [tail]
            width = None
        else:
            dp = e + 1  # digits before the point
            if dp <= 0:
                parts = [sign + b"0." + b"0" * -dp, dg]
                width = len(sign) + 2 - dp + nd[rows]
            else:
                parts = [sign, dg[:, :dp], b".", dg[:, dp:]]
                width = len(sign) + 1 + np.maximum(nd[rows], dp + 1)
        cols = [
            np.broadcast_to(np.frombuffer(q, np.uint8), (rows.size, len(q)))
            if isinstance(q, bytes)
            else q
            for q in parts
            if (len(q) if isinstance(q, bytes) else q.shape[1])
        ]
        cell = np.concatenate(cols, axis=1)
        chars[rows, : cell.shape[1]] = cell
        lens[rows] = cell.shape[1] if width is None else width
    return chars, lens


def _float_cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells ``repr(float(v))`` of every element."""
    x = np.asarray(values).reshape(-1).astype(np.float64)
    chars = np.empty((x.size, _FLOAT_WIDTH), np.uint8)
    lens = np.zeros(x.size, np.int64)
    ok = np.zeros(x.size, bool)
    idx = np.flatnonzero(np.isfinite(x) & (x != 0))
    if idx.size:
        D, p, e10, sure = _shortest_digits(np.abs(x[idx]))
        idx, D, p, e10 = idx[sure], D[sure], p[sure], e10[sure]
        if idx.size:
            chars[idx], lens[idx] = _digit_cells(x[idx] < 0, D, p, e10)
            ok[idx] = True
    rest = np.flatnonzero(~ok)
    if rest.size:
        c, n = _keyed(
            x[rest].view(np.int64), lambda b: repr(float(np.int64(b).view(np.float64)))
        ).cells()
        chars[rest, : c.shape[1]], lens[rest] = c, n
    return chars, lens


def _csv_block(cells: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The lines (comma-separated, newline-terminated) of rows of cells."""
    N = cells[0][1].size
    widths = [int(lens.max(initial=0)) for _, lens in cells]
    total = sum(widths) + len(cells)
    out = np.empty((N, total), np.uint8)
    keep = np.ones((N, total), bool)
    o = 0
    for k, ((chars, lens), w) in enumerate(zip(cells, widths, strict=True)):
        out[:, o : o + w] = chars[:, :w]
        if N and int(lens.min()) < w:  # cells of one width keep every character
            np.less(np.arange(w), lens[:, None], out=keep[:, o : o + w])
        out[:, o + w] = ord("\n") if k == len(cells) - 1 else ord(",")
        o += w + 1
    return out[keep].tobytes()


def fits_csv_bytes(lanes: dict[str, np.ndarray], status_names: tuple[str, ...]) -> bytes:
    """fits.csv's content (header and rows sorted by n, replicate) from the lanes' arrays."""
    order = np.lexsort((lanes["replicate"], lanes["n"]))
    cols = [c for c in FIT_COLUMNS if c in lanes or c == "status"]
    keyed = {  # integer and status cells: a table of distinct texts for the whole column
        c: _status_cells(np.asarray(lanes["status_code"])[order], status_names)
        if c == "status"
        else _int_cells(np.asarray(lanes[c])[order])
        for c in cols
        if c == "status" or c in INT_COLUMNS
    }
    blocks = [(",".join(cols) + "\n").encode("utf-8")]
    for start in range(0, order.size, CSV_ROWS_PER_BLOCK):
        part = slice(start, start + CSV_ROWS_PER_BLOCK)
        rows = order[part]
        cells = [
            keyed[c].cells(part) if c in keyed else _float_cells(np.asarray(lanes[c])[rows])
            for c in cols
        ]
        blocks.append(_csv_block(cells))
    return b"".join(blocks)


def write_fits_csv(out: Path, lanes: dict[str, np.ndarray], status_names: tuple[str, ...]) -> Path:
    """Write fits.csv (sorted by n, replicate) atomically from the lanes' arrays."""
    path = out / "fits.csv"
    write_bytes_atomic(path, fits_csv_bytes(lanes, status_names))
    return path


#: estimates.npz is compressed below this many fits and stored plain from there.
COMPRESS_BELOW = 100_000


def write_estimates(
    out: Path, lanes: dict[str, np.ndarray], groups: tuple[str, ...], compress: bool | None = None
) -> Path | None:
    """Write estimates.npz (atomically): ``n`` and ``replicate`` (F,) and every
    ``<group>.<leaf>`` array of ``lanes`` (F, ...) for ``group`` in ``groups``, rows in fits.csv's
    order (sorted by n, replicate). Compressed below `COMPRESS_BELOW` fits (small files to keep
    in a repository); stored plain from there (zlib gains ~40% on random float64 estimates at
    ~30 s for 800 000 fits, the host's largest cost: benchmarks/host.py); ``compress`` True or
    False overrides the choice. ``np.load`` reads both. None (nothing written) when the lanes
    hold no such array."""
    keys = [k for k in lanes if k.split(".")[0] in groups]
    if not keys:
        return None
    order = np.lexsort((lanes["replicate"], lanes["n"]))
    buf = io.BytesIO()
    if compress is None:
        compress = len(order) < COMPRESS_BELOW
    save = np.savez_compressed if compress else np.savez
    save(
        buf,
        n=lanes["n"][order],
        replicate=lanes["replicate"][order],
        **{k: np.asarray(lanes[k])[order] for k in keys},
    )
    path = out / "estimates.npz"
    write_bytes_atomic(path, buf.getvalue())
    return path

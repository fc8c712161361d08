"""arXiv 2305.03288's experiment run through moejax, scored with their losses.

Reads the study of ``sweeps/crpe-sgame.toml`` (``moejax sweep sweeps/crpe-sgame.toml --out
runs/crpe-sgame``: points k2, k3, k4), computes their D1 (K = 2) and D2 (K = 3, 4) of every
kept estimate with `moejax.sgmoe_losses.plain_d1` / `plain_d2` (their code's losses, reproduced
to 3e-14 on their stored estimates by benchmarks/crpe_sgame.py), and prints, per K:

- the slope of log(per-n mean loss) on log n (their plots' statistic, ordinary least squares)
  and of log(per-n median loss);
- moejax's own slope table for the loss (`moejax.slopes` with a user loss: log-median slope
  and its replicate-bootstrap 95% CI);
- the share of fits whose reference (anchored) expert's cell holds another fitted expert;
- moejax's first-order Voronoi loss (``err_voronoi``) log-median slope.

``--write`` writes benchmarks/crpe_moejax.md (the README's table comes from it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import jax
import numpy as np

import moejax
from moejax.sgmoe_losses import _from_plain, plain_d1, plain_d2, sgmoe_cells

REPO = Path(__file__).resolve().parent.parent
OUT_MD = REPO / "benchmarks" / "crpe_moejax.md"
#: Their slopes (plot legends, all n; benchmarks/crpe_sgame.md) and ours from their estimates.
THEIRS = {2: ("D1", -0.63788, -0.637), 3: ("D2", -1.18098, 0.078), 4: ("D2", -2.47512, -0.127)}


def _ols(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def analyse(run: Path, K: int) -> dict:
    est = np.load(run / "estimates.npz")
    n = est["n"]
    names = ("beta", "tau", "eta", "nu")
    leaves = lambda g: moejax.mix.MixParams(*(est[f"{g}.{k}"] for k in names))
    fit, truth = leaves("estimate"), leaves("truth")
    loss_fn = plain_d1 if K == 2 else plain_d2
    loss = np.asarray(jax.vmap(loss_fn)(fit, truth))

    def shared_ref(e, t):  # the anchored (last, in their order) true expert's cell size
        f, tr = _from_plain(e), _from_plain(t)
        cells = sgmoe_cells(*f[1:], *tr[1:])
        return np.sum(cells == tr[0].shape[0] - 1)

    cells = np.asarray(jax.vmap(shared_ref)(fit, truth))
    sizes = np.unique(n)
    mean = np.array([np.mean(loss[n == s]) for s in sizes])
    med = np.array([np.median(loss[n == s]) for s in sizes])
    name = THEIRS[K][0]
    table = moejax.slopes(run, losses={name: loss_fn}, parameters=("voronoi",), n_boot=1000)
    row = next(r for r in table if r["parameter"] == name and r["aggregate"] == "log_median")
    vor = next(r for r in table if r["parameter"] == "voronoi" and r["aggregate"] == "log_median")
    return {
        "K": K,
        "loss": name,
        "fits": int(loss.size),
        "n": f"{int(sizes.min())}..{int(sizes.max())} ({sizes.size} sizes)",
        "mean_slope": _ols(sizes, mean),
        "median_slope": _ols(sizes, med),
        "lm": (row["slope"], row["ci_low"], row["ci_high"]),
        "voronoi": (vor["slope"], vor["ci_low"], vor["ci_high"], vor["theory"]),
        "shared": float(np.mean(cells >= 2)),
        "nan": int(np.sum(~np.isfinite(loss))),
    }


def tables(root: Path) -> list[str]:
    out = [
        "| K | loss | n (sizes) | slope of mean (their statistic) | theirs, from their "
        "estimates | slope of median | theirs, median | moejax log-median slope [95% CI] | "
        "reference cell shared | moejax Voronoi loss: log-median slope [CI] (hypothesis) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for K in (2, 3, 4):
        r = analyse(root / f"k{K}", K)
        _, their_mean, their_med = THEIRS[K]
        s, lo, hi = r["lm"]
        vs, vlo, vhi, vth = r["voronoi"]
        out.append(
            f"| {K} | {r['loss']} | {r['n']} | {r['mean_slope']:.3f} | {their_mean:.3f} | "
            f"{r['median_slope']:.3f} | {their_med:.3f} | {s:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{100 * r['shared']:.0f}% | {vs:.3f} [{vlo:.3f}, {vhi:.3f}] ({vth:.3f}) |"
        )
        if r["nan"]:
            out.append(f"|  | ({r['nan']} fits without a D2 exponent: a cell of 4 or more) |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, nargs="?", default=REPO / "runs" / "crpe-sgame")
    ap.add_argument("--write", action="store_true", help=f"write {OUT_MD.relative_to(REPO)}")
    args = ap.parse_args(argv)
    if not (args.run / "k2" / "estimates.npz").is_file():
        sys.exit(f"{args.run}: run `moejax sweep sweeps/crpe-sgame.toml --out {args.run}` first")
    rows = tables(args.run)
    print("\n".join(rows))
    if args.write:
        cmd = "python benchmarks/crpe_moejax.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        OUT_MD.write_text(
            "# arXiv 2305.03288's experiment through moejax, scored with their losses\n\n"
            f"Produced by `{cmd.strip()}` from `moejax sweep sweeps/crpe-sgame.toml --out "
            "runs/crpe-sgame` (40 replicates per size).\n\n" + "\n".join(rows) + "\n"
        )
        print(f"wrote {OUT_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

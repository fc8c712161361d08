"""Real data: a frozen digits classifier pre-trained on a shifted domain, adapted on target data.

The data are scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1797
8x8 images, 10 classes; shipped inside the package, nothing is downloaded). scikit-learn is the
optional extra ``moejax[data]``, imported only inside the functions that need it.

Design (argued in docs/real-data.md):

- A fixed, seeded split of the images into a *source* set (``n_source`` images) and a *target*
  set (the rest). The source domain is the source images rotated by ``angle`` degrees
  (`scipy.ndimage.rotate`, bilinear, same frame); the target domain is the unrotated images.
- Features: PCA to ``d`` components and standardisation, both fitted on the source covariates
  only (the pre-trained pipeline's feature map), applied unchanged to the target.
- Frozen expert: a multinomial logistic regression (scikit-learn, lbfgs, its default L2 penalty
  C = 1) fitted on the source; eta0 = coefficients relative to the reference class K-1 and
  frozen_bias = intercepts relative to it, so that softmax(eta0 x + b0, 0) is the classifier's
  predict_proba exactly.
- Adapters (MLE, no penalty, on moejax's default box): homogeneous ``"linear"`` (the frozen
  expert's structure), heterogeneous ``scale * tanh``; both keep the frozen expert's per-class
  biases (the model family estimates no expert intercept). Mixtures under the softmax gate
  (and the input-free gate), started at the frozen expert (adapter eta = eta0, or eta0 / scale
  for tanh; beta = 0, tau = 0). An adapter alone is the same family with the input-free gate
  pinned at w = sigmoid(30) (tau in [30 - 1e-6, 30]), fitted by the same `moejax.mix.fit`.
- Per replicate r, the target set is split at random into a test set (``n_test`` images) and a
  training pool; the first n pool images are the training sample for every n of the grid. All
  fits of one model run as one vmapped, compiled program (rows padded with weight 0 to the
  largest n).

`run` returns the per-fit rows; `summarise` the per-(n, method) means with 95% t intervals over
replicates; `write_outputs` realdata.csv, realdata.md and realdata.png; the command is
``moejax realdata [--quick] [--out DIR]``.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from moejax.mix import MixParams, MixSpec, log_class_probs, predictors

SKLEARN_MISSING = (
    "moejax realdata needs scikit-learn (the optional extra): pip install 'moejax[data]'"
)

ETA_EDGE, BETA_EDGE, TAU_EDGE = 5.0 - 1e-5, 5.0 - 1e-5, 8.0 - 1e-5
"""A coordinate this close to moejax's default box (eta, beta in [-5, 5], tau in [-8, 8]) is
counted as on the bound (the pinned adapters' tau is not counted)."""

PIN_TAU = 30.0
"""Input-free gate logit that pins a mixture to one expert: w = sigmoid(30) = 1 - 9.4e-14."""

METHODS = (
    "frozen",
    "adapter_linear",
    "adapter_tanh",
    "mix_linear_softmax",
    "mix_tanh_softmax",
    "mix_linear_input_free",
    "mix_tanh_input_free",
)
"""Every method of the study, in table order: the frozen expert alone, each adapter alone, and
the homogeneous (linear) and heterogeneous (tanh) mixtures under the two gates."""

LABELS = {
    "frozen": "frozen expert alone",
    "adapter_linear": "adapter alone, linear",
    "adapter_tanh": "adapter alone, tanh",
    "mix_linear_softmax": "mixture, linear adapter (homogeneous), softmax gate",
    "mix_tanh_softmax": "mixture, tanh adapter (heterogeneous), softmax gate",
    "mix_linear_input_free": "mixture, linear adapter (homogeneous), input-free gate",
    "mix_tanh_input_free": "mixture, tanh adapter (heterogeneous), input-free gate",
}


@dataclass(frozen=True)
class RealDataConfig:
    """The study's settings.

    Args:
      d: PCA components (covariate dimension). angle: source-domain rotation in degrees.
      n_source: images in the source set. n_test: target images held out per replicate.
      sizes: target training sizes n (each <= the pool, 1797 - n_source - n_test).
      replicates: random target splits per n. scale: tanh adapter's output scale s.
      seed: the source split and every target split derive from it.
      gates: the mixtures' gates ("softmax", "input_free").
      max_iter: Newton iteration cap per fit (a capped fit is recorded as ``max_iter``).
    """

    d: int = 4
    angle: float = 15.0
    n_source: int = 600
    n_test: int = 397
    sizes: tuple[int, ...] = (100, 200, 400, 800)
    replicates: int = 20
    scale: float = 4.0
    seed: int = 0
    gates: tuple[str, ...] = ("softmax", "input_free")
    max_iter: int = 100


QUICK = RealDataConfig(
    d=3, n_source=600, n_test=200, sizes=(60, 120), replicates=3, gates=("softmax",)
)
"""The ``--quick`` preset the tests run: d = 3, two sizes, three replicates, softmax gate only."""


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise ImportError(SKLEARN_MISSING) from None
    return sklearn


@dataclass(frozen=True)
class Task:
    """The prepared data: source features/labels, target features/labels, frozen expert.

    Zs (n_source, d), ys (n_source,), Zt (n_target, d), yt (n_target,); eta0 (K-1, d) and b0
    (K-1,) the frozen expert; ``classifier`` the fitted scikit-learn model (for checks);
    ``explained`` the fraction of source pixel variance the d components keep.
    """

    Zs: np.ndarray
    ys: np.ndarray
    Zt: np.ndarray
    yt: np.ndarray
    eta0: np.ndarray
    b0: np.ndarray
    classifier: Any
    explained: float


def load_task(cfg: RealDataConfig) -> Task:
    """Load digits, rotate the source images, fit PCA + scaling on the source, fit the frozen
    expert on the source. Deterministic in ``cfg.seed``."""
    _sklearn()
    from scipy import ndimage
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64)
    labels = np.asarray(digits.target, dtype=np.int32)
    n_all = len(labels)
    if not 0 < cfg.n_source < n_all - cfg.n_test - max(cfg.sizes) + 1:
        raise ValueError(
            f"n_source = {cfg.n_source}, n_test = {cfg.n_test}, max size = {max(cfg.sizes)}: "
            f"they must fit in the {n_all} images"
        )
    perm = np.random.default_rng([cfg.seed, 0]).permutation(n_all)
    src, tgt = perm[: cfg.n_source], perm[cfg.n_source :]
    rotated = np.stack(
        [
            ndimage.rotate(im, cfg.angle, reshape=False, order=1, mode="constant")
            for im in images[src]
        ]
    )
    Xs = rotated.reshape(len(src), -1)
    Xt = images[tgt].reshape(len(tgt), -1)
    pca = PCA(n_components=cfg.d, random_state=0).fit(Xs)
    Ps = pca.transform(Xs)
    mu, sd = Ps.mean(axis=0), Ps.std(axis=0)
    Zs = (Ps - mu) / sd
    Zt = (pca.transform(Xt) - mu) / sd
    clf = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10).fit(Zs, labels[src])
    W, c = np.asarray(clf.coef_), np.asarray(clf.intercept_)
    return Task(
        Zs=Zs,
        ys=labels[src],
        Zt=Zt,
        yt=labels[tgt],
        eta0=W[:-1] - W[-1],
        b0=c[:-1] - c[-1],
        classifier=clf,
        explained=float(np.sum(pca.explained_variance_ratio_)),
    )


def frozen_log_probs(task: Task, Z: np.ndarray) -> np.ndarray:
    """The frozen expert's log class probabilities (n, K): log softmax(eta0 z + b0, 0)."""
    logits = np.concatenate([Z @ task.eta0.T + task.b0, np.zeros((len(Z), 1))], axis=1)
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=1))


def specs(task: Task, cfg: RealDataConfig) -> dict[str, tuple[MixSpec, MixParams, Any]]:
    """Each fitted method's (spec, start, bounds)."""
    from moejax.estimation.bounds import Bounds

    d, K = task.eta0.shape[1], task.eta0.shape[0] + 1
    common = dict(d=d, K=K, frozen="linear", eta0=task.eta0, frozen_bias=task.b0, bias=task.b0)
    eta_start = {"linear": task.eta0, "tanh": task.eta0 / cfg.scale}
    pinned = Bounds(tau=(PIN_TAU - 1e-6, PIN_TAU))
    out: dict[str, tuple[MixSpec, MixParams, Any]] = {}
    for act in ("linear", "tanh"):
        scale = cfg.scale if act == "tanh" else 1.0
        for gate in cfg.gates:
            spec = MixSpec(adapter=act, gate=gate, scale=scale, frozen_scale=1.0, **common)
            start = spec.params(beta=np.zeros(d), tau=0.0, eta=eta_start[act][None])
            out[f"mix_{act}_{gate}"] = (spec, start, None)
        spec = MixSpec(adapter=act, gate="input_free", scale=scale, frozen_scale=1.0, **common)
        start = spec.params(beta=np.zeros(d), tau=PIN_TAU, eta=eta_start[act][None])
        out[f"adapter_{act}"] = (spec, start, pinned)
    return out


def _splits(cfg: RealDataConfig, n_target: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per replicate: (test indices, training-pool indices) into the target set."""
    out = []
    for r in range(cfg.replicates):
        perm = np.random.default_rng([cfg.seed, 1, r]).permutation(n_target)
        out.append((perm[: cfg.n_test], perm[cfg.n_test :]))
    return out


def _metrics(spec: MixSpec, p: MixParams, X: jax.Array, y: jax.Array) -> tuple[Any, Any, Any]:
    """Held-out mean log-likelihood, accuracy and mean gate weight E_x[w(x)] of one fit."""
    lp = log_class_probs(spec, p, X)
    ll = jnp.mean(jnp.take_along_axis(lp, y[:, None], axis=1))
    acc = jnp.mean(jnp.argmax(lp, axis=1) == y)
    w = jnp.mean(jax.nn.sigmoid(predictors(spec, p, X)[:, 0]))
    return ll, acc, w


def run(
    cfg: RealDataConfig, task: Task | None = None, verbose: bool = False
) -> list[dict[str, Any]]:
    """Every fit of the study: one row per (method, n, replicate), with the held-out mean
    log-likelihood ``ll``, accuracy ``acc``, mean gate weight ``w`` (mixtures; NaN otherwise),
    the fit's ``status``, ``converged``, ``n_iter``, ``at_bound`` (any coordinate), the
    training log-likelihood per row ``train_ll``, and ``tau`` (the gate intercept)."""
    from moejax.estimation.estimators import fit

    task = load_task(cfg) if task is None else task
    splits = _splits(cfg, len(task.yt))
    n_max = max(cfg.sizes)
    lanes = [(n, r) for n in cfg.sizes for r in range(cfg.replicates)]
    Xtr = np.zeros((len(lanes), n_max, task.Zt.shape[1]))
    ytr = np.zeros((len(lanes), n_max), dtype=np.int32)
    wtr = np.zeros((len(lanes), n_max))
    Xte = np.stack([task.Zt[te] for te, _ in splits])
    yte = np.stack([task.yt[te] for te, _ in splits]).astype(np.int32)
    for i, (n, r) in enumerate(lanes):
        pool = splits[r][1][:n]
        Xtr[i, :n], ytr[i, :n], wtr[i, :n] = task.Zt[pool], task.yt[pool], 1.0
    lane_r = np.array([r for _, r in lanes])

    rows: list[dict[str, Any]] = []
    for r in range(cfg.replicates):
        lp = frozen_log_probs(task, Xte[r])
        ll = float(np.mean(lp[np.arange(cfg.n_test), yte[r]]))
        acc = float(np.mean(np.argmax(lp, axis=1) == yte[r]))
        for n in cfg.sizes:
            rows.append(
                dict(method="frozen", n=n, replicate=r, ll=ll, acc=acc, w=math.nan, status="",
                     converged=True, n_iter=0, eta_at_bound=False,
                     gate_at_bound=False, train_ll=math.nan, tau=math.nan)
            )  # fmt: skip

    from moejax import STATUS_NAMES

    for name, (spec, start, bounds) in specs(task, cfg).items():

        def one(X, y, w, Xt, yt, spec=spec, start=start, bounds=bounds):
            res = fit(spec, X, y, start, weights=w, bounds=bounds, max_iter=cfg.max_iter)
            ll, acc, gw = _metrics(spec, res.params, Xt, yt)
            q = res.params
            eta_bound = jnp.any(jnp.abs(q.eta) >= ETA_EDGE)
            gate_bound = jnp.any(jnp.abs(q.beta) >= BETA_EDGE) | jnp.any(jnp.abs(q.tau) >= TAU_EDGE)
            out = (ll, acc, gw, res.status, res.converged, res.n_iter, eta_bound, gate_bound)
            return (*out, res.loglik, q.tau[0])

        t0 = time.perf_counter()
        out = jax.jit(jax.vmap(one))(Xtr, ytr, wtr, Xte[lane_r], yte[lane_r])
        out = [np.asarray(o) for o in jax.block_until_ready(out)]
        seconds = time.perf_counter() - t0
        if verbose:
            print(f"realdata: {name}: {len(lanes)} fits in {seconds:.1f} s", file=sys.stderr)
        for i, (n, r) in enumerate(lanes):
            rows.append(
                dict(
                    method=name,
                    n=n,
                    replicate=r,
                    ll=float(out[0][i]),
                    acc=float(out[1][i]),
                    w=float(out[2][i]) if name.startswith("mix") else math.nan,
                    status=STATUS_NAMES[int(out[3][i])],
                    converged=bool(out[4][i]),
                    n_iter=int(out[5][i]),
                    eta_at_bound=bool(out[6][i]),
                    gate_at_bound=bool(out[7][i]) and name.startswith("mix"),
                    train_ll=float(out[8][i]) / n,
                    tau=float(out[9][i]),
                    seconds=seconds,
                )
            )
    return rows


def _t975(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) if df > 0 else math.nan


def mean_ci(v: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t interval (lo, hi) over replicates; NaN interval for one value."""
    v = np.asarray(v, dtype=np.float64)
    m = float(np.mean(v))
    if len(v) < 2:
        return m, math.nan, math.nan
    h = _t975(len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return m, m - h, m + h


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, n): mean and 95% t CI of ll, acc and w; converged and at-bound fractions;
    and the paired difference in ll against the better of the frozen expert and the matching
    adapter alone (per replicate), with its CI."""
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault((row["method"], row["n"]), []).append(row)
    sizes = sorted({row["n"] for row in rows})
    out = []
    for method in METHODS:
        for n in sizes:
            g = sorted(by.get((method, n), []), key=lambda r: r["replicate"])
            if not g:
                continue
            s: dict[str, Any] = {"method": method, "n": n, "replicates": len(g)}
            for k in ("ll", "acc", "w"):
                s[k], s[k + "_lo"], s[k + "_hi"] = mean_ci(np.array([r[k] for r in g]))
            s["converged"] = float(np.mean([r["converged"] for r in g]))
            s["eta_at_bound"] = float(np.mean([r["eta_at_bound"] for r in g]))
            s["gate_at_bound"] = float(np.mean([r["gate_at_bound"] for r in g]))
            if method.startswith("mix"):
                act = method.split("_")[1]
                fz = np.array([r["ll"] for r in sorted(by[("frozen", n)], key=_rep)])
                ad = np.array([r["ll"] for r in sorted(by[(f"adapter_{act}", n)], key=_rep)])
                diff = np.array([r["ll"] for r in g]) - np.maximum(fz, ad)
                s["gain"], s["gain_lo"], s["gain_hi"] = mean_ci(diff)
            else:
                s["gain"] = s["gain_lo"] = s["gain_hi"] = math.nan
            out.append(s)
    return out


def _rep(r: dict[str, Any]) -> int:
    return int(r["replicate"])


def _fmt(m: float, lo: float, hi: float, digits: int = 3) -> str:
    if math.isnan(m):
        return ""
    if math.isnan(lo):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(summary: list[dict[str, Any]], cfg: RealDataConfig, meta: dict[str, Any]) -> str:
    """realdata.md: the settings and one table per measure."""
    lines = [
        "# Real data: digits, frozen expert pre-trained on rotated digits",
        "",
        f"d = {cfg.d} PCA components ({100 * meta['explained']:.1f}% of the source pixel "
        f"variance), source = {cfg.n_source} images rotated {cfg.angle:g} degrees, "
        f"target test = {cfg.n_test} images, {cfg.replicates} replicates (random target "
        f"splits), tanh scale {cfg.scale:g}, seed {cfg.seed}. Frozen expert on the source: "
        f"accuracy {meta['source_acc']:.3f} (source training set). Mean [95% t interval] "
        "over replicates. Run time "
        f"{meta['seconds']:.0f} s.",
        "",
    ]
    sizes = sorted({s["n"] for s in summary})
    for key, title in (
        ("ll", "Held-out mean log-likelihood"),
        ("acc", "Held-out accuracy"),
        ("w", "Mean gate weight E_x[w(x)] on the test set"),
        ("gain", "Mixture minus the better of frozen / adapter alone (per replicate), log-lik"),
    ):
        lines += [f"## {title}", "", "| method | " + " | ".join(f"n = {n}" for n in sizes) + " |"]
        lines.append("|---" * (len(sizes) + 1) + "|")
        for method in METHODS:
            cells = []
            for n in sizes:
                s = next((x for x in summary if x["method"] == method and x["n"] == n), None)
                cells.append("" if s is None else _fmt(s[key], s[key + "_lo"], s[key + "_hi"]))
            if any(cells):
                lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Fits: fraction converged / adapter eta on the box / gate on the box",
        "",
    ]
    lines.append("| method | " + " | ".join(f"n = {n}" for n in sizes) + " |")
    lines.append("|---" * (len(sizes) + 1) + "|")
    for method in METHODS[1:]:
        cells = [
            f"{s['converged']:.2f} / {s['eta_at_bound']:.2f} / {s['gate_at_bound']:.2f}"
            for n in sizes
            for s in summary
            if s["method"] == method and s["n"] == n
        ]
        if cells:
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """realdata.png: held-out log-likelihood, accuracy and gate weight against n, with 95% CI
    bands. The log-likelihood axis is cut below at the frozen expert's value minus 1.5 (an
    adapter alone is far below it at small n); realdata.md has every number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    style = {
        "frozen": ("k", "-"),
        "adapter_linear": ("tab:blue", ":"),
        "adapter_tanh": ("tab:red", ":"),
        "mix_linear_softmax": ("tab:blue", "-"),
        "mix_tanh_softmax": ("tab:red", "-"),
        "mix_linear_input_free": ("tab:blue", "--"),
        "mix_tanh_input_free": ("tab:red", "--"),
    }
    for ax, key, title in (
        (axes[0], "ll", "held-out mean log-likelihood"),
        (axes[1], "acc", "held-out accuracy"),
        (axes[2], "w", "mean gate weight E[w(x)] (test set)"),
    ):
        for method in METHODS:
            g = [s for s in summary if s["method"] == method]
            if key == "w" and not method.startswith("mix"):
                continue
            n = np.array([s["n"] for s in g])
            c, ls = style[method]
            ax.plot(n, [s[key] for s in g], color=c, ls=ls, marker="o", ms=3, label=LABELS[method])
            ax.fill_between(n, [s[key + "_lo"] for s in g], [s[key + "_hi"] for s in g],
                            color=c, alpha=0.12)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("target training size n")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fz = min(s["ll"] for s in summary if s["method"] == "frozen")
    top = max(s["ll_hi"] for s in summary if not math.isnan(s["ll_hi"]))
    axes[0].set_ylim(fz - 1.5, top + 0.1)
    axes[2].set_ylim(0, 1)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    out: Path, rows: list[dict[str, Any]], cfg: RealDataConfig, meta: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write realdata.csv (one row per fit), realdata_summary.csv, realdata.md, realdata.png."""
    out.mkdir(parents=True, exist_ok=True)
    keys = ["method", "n", "replicate", "ll", "acc", "w", "status", "converged", "n_iter",
            "eta_at_bound", "gate_at_bound", "train_ll", "tau"]  # fmt: skip
    with open(out / "realdata.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    summary = summarise(rows)
    with open(out / "realdata_summary.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(summary[0]))
        wr.writeheader()
        wr.writerows(summary)
    (out / "realdata.md").write_text(markdown(summary, cfg, meta))
    plot(summary, out / "realdata.png")
    return summary


def main(cfg: RealDataConfig, out: Path) -> list[dict[str, Any]]:
    """Run the study and write its outputs to ``out``; returns the summary rows."""
    t0 = time.perf_counter()
    task = load_task(cfg)
    rows = run(cfg, task, verbose=True)
    meta = {
        "explained": task.explained,
        "source_acc": float(task.classifier.score(task.Zs, task.ys)),
        "seconds": time.perf_counter() - t0,
        "config": asdict(cfg),
    }
    return write_outputs(out, rows, cfg, meta)


__all__ = [
    "METHODS",
    "QUICK",
    "RealDataConfig",
    "Task",
    "frozen_log_probs",
    "load_task",
    "main",
    "mean_ci",
    "run",
    "specs",
    "summarise",
]

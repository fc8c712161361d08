"""The fused GPU pass (issue 23) on a GPU: one prepared check, never run yet (no GPU was lent).

For a few designs (d = 8 by default), one objective pass (value, gradient and Hessian) vmapped
over G lanes of ``blocks`` blocks of B rows, with the fused kernel (``fused="on"``) and with the
XLA pass (``fused="off"``), in two compiled programs:

- agreement: the largest difference relative to the largest entry, per output (value, gradient,
  Hessian); the script exits 1 above 1e-10;
- lane independence: lane 0 computed alone (G = 1) and inside the G-lane program, bit for bit
  (the kernel's fixed summation order; expected identical);
- time: median of ``--repeats`` passes of each program (after one warm-up), and ns per row.

Usage:
    .venv/bin/python benchmarks/fused_gpu_check.py                 # on a GPU: G 2048, B 1024
    .venv/bin/python benchmarks/fused_gpu_check.py --smoke         # anywhere: the kernel in
        Pallas interpret mode, G 2, B 128, d 2 (a script check, under a minute on a CPU)
    --lanes G --rows B --blocks K --d D --repeats R
"""

from __future__ import annotations

import argparse
import sys
import time

DESIGNS = (  # (gate, likelihood, adapters)
    ("softmax", "categorical", 1),
    ("sigmoid", "gaussian", 2),
    ("input_free", "laplace", 2),
)


def _spec(gate: str, lik: str, m: int, d: int):
    import numpy as np

    from moejax.mix import MixSpec

    K = 3 if lik == "categorical" else 2
    R = K - 1 if lik == "categorical" else 1
    return MixSpec(
        d=d,
        frozen="linear",
        adapter="tanh",
        eta0=np.random.default_rng(0).standard_normal((R, d)),
        K=K,
        adapters=m,
        gate=gate,
        likelihood=lik,
        frozen_likelihood=lik,
        scale=1.7,
    )


def check(design, G: int, B: int, blocks: int, d: int, repeats: int, kernel: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from moejax.estimation.estimators import FitData, objective
    from moejax.estimation.objective import Blocks

    spec = _spec(*design, d)
    n = B * blocks
    rng = np.random.default_rng(1)
    X1 = np.concatenate([rng.standard_normal((G, d, n)), np.ones((G, 1, n))], axis=1)
    if spec.regression:
        y = 2.0 * rng.standard_normal((G, n))
    else:
        y = rng.integers(0, spec.K, (G, n)).astype(np.int32)
    lf0 = -np.abs(rng.standard_normal((G, n))) - 0.5
    w = np.ones((G, n))
    w[:, n - B // 3 :] = 0.0  # a padded tail
    data = FitData(*map(jnp.asarray, (X1, y, w, w.sum(axis=1), lf0, np.ones(G, bool))))
    theta = jnp.asarray(0.3 * rng.standard_normal((G, spec.n_params)))

    def program(mode):
        def one(data, th):
            return objective(spec, data, Blocks(B, jnp.int32(blocks)), fused=mode).value_grad_hess(
                th
            )

        return jax.jit(jax.vmap(one))

    out, times = {}, {}
    for mode in ("off", kernel):
        f = program(mode)
        res = jax.block_until_ready(f(data, theta))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(data, theta))
            ts.append(time.perf_counter() - t0)
        out[mode], times[mode] = [np.asarray(r) for r in res], float(np.median(ts)) if ts else 0.0
    err = [
        float(np.abs(b - a).max() / max(np.abs(a).max(), 1e-300))
        for a, b in zip(out["off"], out[kernel], strict=True)
    ]
    first = jax.tree_util.tree_map(lambda a: a[:1], (data, theta))
    alone = [np.asarray(r)[0] for r in program(kernel)(*first)]
    same = all(a.tobytes() == b[0].tobytes() for a, b in zip(alone, out[kernel], strict=True))
    rows = G * n
    return {
        "design": "-".join(map(str, design)),
        "err": err,
        "lane_independent": same,
        "ns_row_xla": 1e9 * times["off"] / rows,
        "ns_row_fused": 1e9 * times[kernel] / rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lanes", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="script check (see the docstring)")
    a = ap.parse_args()
    import jax

    import moejax  # noqa: F401  (float64)

    kernel = "on"
    if a.smoke:
        a.lanes, a.rows, a.blocks, a.d, a.repeats, kernel = 2, 128, 2, 2, 1, "interpret"
    dev = jax.devices()[0].device_kind
    print(f"# fused pass check: {dev}, G {a.lanes}, B {a.rows} x {a.blocks} blocks, d {a.d}, ")
    print(f"# kernel {kernel!r} (the times of --smoke mean nothing)")
    print("| design | rel. err value / grad / Hessian | lane 0 alone = in G | ns/row XLA | fused |")
    print("|---|---|---|---:|---:|")
    bad = False
    for design in DESIGNS:
        r = check(design, a.lanes, a.rows, a.blocks, a.d, a.repeats, kernel)
        bad |= max(r["err"]) > 1e-10
        errs = " / ".join(f"{e:.1e}" for e in r["err"])
        print(
            f"| {r['design']} | {errs} | {r['lane_independent']} | {r['ns_row_xla']:.2f} "
            f"| {r['ns_row_fused']:.2f} |",
            flush=True,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

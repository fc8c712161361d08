"""The general model's price: `moejax.mix.fit` (per-row autodiff derivatives) against the core
`moejax.fit` (closed-form row derivatives) on the same fits, plus the general model's own cases.

    python benchmarks/mix_vs_core.py            # 64 lanes at n = 4000, 5 timed repeats
    python benchmarks/mix_vs_core.py --quick    # 16 lanes at n = 2000, 3 repeats

Both estimators are jitted and vmapped over L datasets of the default heterogeneous design
(d = 2, K = 3, logits 4 a(.), linear frozen, tanh adapter, softmax gate, one adapter), started at
the truth; the model is the same, so both reach the same optimum (checked) in the same number of
Newton iterations. Reported: best-of-repeats seconds per call after compilation, and the ratio.
The general model's other cases (Gaussian adapter with a Laplace frozen expert at d = 8, the
predecessor's design; two adapters; the input-free gate) are timed the same way, per fit and per
row-pass (seconds / (L n (mean n_iter + 1))). Ratios are the result; absolute times on this CPU
are indicative only.
"""

from __future__ import annotations

import argparse
import time

import _common as C
import jax
import jax.numpy as jnp
import numpy as np

import moejax as mj
from moejax import mix


def best_time(fn, args, repeats):
    out = jax.block_until_ready(fn(*args))  # compile
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def datasets(key, spec, params, L, n):
    keys = jax.random.split(key, L)
    return jax.vmap(lambda k: mix.sample(k, spec, params, n))(keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    L, n, reps = (16, 2000, 3) if args.quick else (64, 4000, 5)
    info = C.RunInfo(args.quick)
    eta0 = np.eye(2)
    core = mj.ModelSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=eta0, scale=4.0)
    gen = mix.MixSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=eta0, scale=4.0)
    p = mj.Params(np.full(2, 2**-0.5), 0.0, [[0.0, 1.5], [1.5, 0.0]])
    gp = gen.params(p.beta, p.tau, p.eta)
    Xs, ys = datasets(jax.random.key(0), gen, gp, L, n)

    core_fit = jax.jit(jax.vmap(lambda X, y: mj.fit(core, X, y, p)))
    gen_fit = jax.jit(jax.vmap(lambda X, y: mix.fit(gen, X, y, gp)))
    t_core, r_core = best_time(core_fit, (Xs, ys.astype(jnp.int32)), reps)
    t_gen, r_gen = best_time(gen_fit, (Xs, ys), reps)
    dpar = float(jnp.max(jnp.abs(r_core.params.eta - r_gen.params.eta[:, 0])))
    same_iter = bool(jnp.all(r_core.n_iter == r_gen.n_iter))

    rows = [
        ["core (closed-form rows)", f"{t_core:.3f}", "1.00", float(jnp.mean(r_core.n_iter))],
        [
            "mix (autodiff rows)",
            f"{t_gen:.3f}",
            f"{t_gen / t_core:.2f}",
            float(jnp.mean(r_gen.n_iter)),
        ],
    ]
    # The general model's own cases.
    reg = mix.MixSpec(
        d=8,
        frozen="tanh",
        adapter="tanh",
        eta0=np.eye(8)[:1],
        likelihood="gaussian",
        frozen_likelihood="laplace",
        nu0=1e-3,
    )
    rp = reg.params(np.full(8, 8**-0.5), 1.0, np.eye(8)[1:2], 5e-3)
    two = mix.MixSpec(d=2, K=3, frozen="linear", adapter="tanh", eta0=eta0, scale=4.0, adapters=2)
    tp = two.params(
        [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [[[0, 1.5], [1.5, 0]], [[-1.5, 0], [0, -1.5]]]
    )
    inf = mix.MixSpec(
        d=2, K=3, frozen="linear", adapter="tanh", eta0=eta0, scale=4.0, gate="input_free"
    )
    ip = inf.params(None, -1.0, p.eta)
    per_pass = []
    for label, spec, params in (
        ("mix, softmax, 1 adapter (d=2, K=3)", gen, gp),
        ("mix, Gaussian/Laplace regression (d=8)", reg, rp),
        ("mix, softmax, 2 adapters (d=2, K=3)", two, tp),
        ("mix, input-free gate (d=2, K=3)", inf, ip),
    ):
        Xc, yc = datasets(jax.random.key(1), spec, params, L, n)
        f = jax.jit(jax.vmap(lambda X, y, s=spec, q=params: mix.fit(s, X, y, q)))
        t, r = best_time(f, (Xc, yc), reps)
        passes = float(jnp.mean(r.n_iter)) + 1
        per_pass.append(
            [
                label,
                f"{t:.3f}",
                f"{t / L * 1e3:.1f}",
                f"{passes:.1f}",
                f"{t / (L * n * passes) * 1e9:.0f}",
                int(jnp.sum(r.converged)),
            ]
        )

    h1, t1 = C.table(["estimator", "s per call", "ratio", "mean n_iter"], rows)
    h2, t2 = C.table(
        ["case", "s per call", "ms per fit", "passes", "ns per row-pass", "converged"], per_pass
    )
    print(h1)
    print(f"same optimum: max |eta_core - eta_mix| = {dpar:.1e}; same n_iter: {same_iter}")
    print(h2)
    lines = info.header_lines("mix_vs_core.py", ".venv/bin/python benchmarks/mix_vs_core.py")
    lines += [
        f"- {L} vmapped fits per call at n = {n}, started at the truth; best of {reps} calls",
        "",
        *t1,
        "",
        f"Same optimum: max |eta_core - eta_mix| = {dpar:.1e}; same n_iter in every lane: "
        f"{same_iter}.",
        "",
        *t2,
    ]
    print("wrote", C.write_section("mix_vs_core.py", lines))


if __name__ == "__main__":
    main()

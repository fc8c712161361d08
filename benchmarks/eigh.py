"""Newton's linear algebra against one pass over the data, for G lanes at once: should projected
Newton try a Cholesky solve before its eigendecomposition? (issue 23, part 4: measure.)

    python benchmarks/eigh.py                          # G = 2048 lanes, P = 25 (d = 8), 45, 90
    python benchmarks/eigh.py --lanes 256 --P 45       # other sizes
    python benchmarks/eigh.py --write                  # also replace RESULTS.md's "eigh.py"

Runs on any JAX device (the default backend). For a batch of G random symmetric positive
definite P x P matrices (a Hessian's shape; P = 25 is `spec.n_params` of
`sweeps/gpu/paper-d8.toml`, the paper-sized study at d = 8) it times, each jitted, after a
warm-up call, median of ``--repeats`` calls:

  (a) batched ``jnp.linalg.eigh`` (one call on the (G, P, P) batch);
  (b) ``jax.vmap(moejax.estimation.solvers.symmetric_eigh)``, what the Newton step calls: the
      batched kernel off the CPU, one matrix at a time on a CPU (see its docstring);
  (c) batched Cholesky and a triangular solve (``jax.scipy.linalg.cho_factor`` /
      ``cho_solve`` with one right-hand side per matrix);
  (d) one value-gradient-Hessian pass of the objective for the G lanes,
      ``jax.vmap(objective(spec, data).value_grad_hess)`` of `sweeps/gpu/paper-d8.toml` at the
      truth, on data drawn with `moejax.mix.sampling.sample` (n = 1000 rows per lane by
      default, one 1024-row block as the engine's GPU plan has it).

Ratios (a)/(d), (b)/(d) and (c)/(d) say what one Newton iteration's linear algebra costs beside
its pass (an iteration is one pass plus one decomposition in the common case). The pass is the
d = 8 model's (P = 25) for every P: for P = 45 and 90 it says how a larger model's
decomposition would compare with a pass of this size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CONFIG = "sweeps/gpu/paper-d8.toml"
FULL_COMMAND = ".venv/bin/python benchmarks/eigh.py --write"


def timed(fn, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile and warm up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", type=int, default=2048, help="G, matrices per batch")
    ap.add_argument("--P", type=int, action="append", help="matrix size (repeatable)")
    ap.add_argument("--n", type=int, default=1000, help="rows per lane of the pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="G = 128, 2 repeats")
    ap.add_argument("--write", action="store_true", help="replace RESULTS.md's eigh.py section")
    a = ap.parse_args(argv)
    info = C.RunInfo(a.quick)
    G = 128 if a.quick else a.lanes
    repeats = 2 if a.quick else a.repeats
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    import moejax  # noqa: F401  (float64)
    from moejax.estimation.bounds import pack
    from moejax.estimation.estimators import objective, prepare_data
    from moejax.estimation.solvers import symmetric_eigh
    from moejax.mix.sampling import sample
    from moejax.sweep.config import load
    from moejax.sweep.simulate import build_problem

    dev = jax.devices()[0]
    devices = f"{dev.platform}:{dev.id} ({getattr(dev, 'device_kind', '?')})"
    print(f"load average {C.fmt_load(info.load_start)} on {info.nproc} cores; {devices}")
    cfg = load(C.REPO / CONFIG, {"sizes.list": [a.n]})
    problem = build_problem(cfg)
    spec = problem.spec
    tp = problem.truth.at(a.n)
    theta = pack(spec, tp)
    radius = cfg["model"]["radius"]

    @jax.jit
    def draw(keys):
        return jax.vmap(lambda k: prepare_data(spec, *sample(k, spec, tp, a.n, radius)))(keys)

    data = jax.block_until_ready(draw(jax.random.split(jax.random.key(0), G)))
    pass_fn = jax.jit(lambda d, th: jax.vmap(lambda x: objective(spec, x).value_grad_hess(th))(d))
    t_pass = timed(pass_fn, (data, theta), repeats)
    print(f"(d) pass: G = {G}, n = {a.n}, P = {spec.n_params}: {t_pass * 1e3:.3f} ms")

    eigh_batched = jax.jit(lambda H: jnp.linalg.eigh(H))
    eigh_moejax = jax.jit(jax.vmap(symmetric_eigh))

    def chol(H, b):
        return jsl.cho_solve(jsl.cho_factor(H, lower=True), b)

    chol_fn = jax.jit(chol)
    rows = []
    for P in a.P or [spec.n_params, 45, 90]:
        k1, k2 = jax.random.split(jax.random.key(P))
        R = jax.random.normal(k1, (G, P, P))
        H = R @ jnp.swapaxes(R, -1, -2) / P + 0.1 * jnp.eye(P)
        b = jax.random.normal(k2, (G, P, 1))
        t_a = timed(eigh_batched, (H,), repeats)
        t_b = timed(eigh_moejax, (H,), repeats)
        t_c = timed(chol_fn, (H, b), repeats)
        rows.append(
            [
                P,
                t_a * 1e3,
                t_b * 1e3,
                t_c * 1e3,
                t_pass * 1e3,
                t_a / t_pass,
                t_b / t_pass,
                t_c / t_pass,
                t_b / t_c,
            ]
        )
        print(
            f"P = {P}: eigh {t_a * 1e3:.3f} ms, symmetric_eigh {t_b * 1e3:.3f} ms, "
            f"cholesky {t_c * 1e3:.3f} ms",
            flush=True,
        )
    headers = [
        "P",
        "(a) eigh ms",
        "(b) symmetric_eigh ms",
        "(c) cholesky+solve ms",
        "(d) pass ms",
        "eigh/pass",
        "symmetric_eigh/pass",
        "cholesky/pass",
        "symmetric_eigh/cholesky",
    ]
    txt, md = C.table(headers, rows)
    print(txt)
    notes = [
        f"- G = {G} matrices per batch (lanes), median of {repeats} calls after a warm-up; "
        f"pass: `{CONFIG}` (P = {spec.n_params}) at the truth, n = {a.n} rows per lane.",
        "- (b) is what projected Newton calls (`moejax.estimation.solvers.symmetric_eigh`): one "
        "matrix at a time on a CPU, the batched kernel elsewhere.",
    ]
    if dev.platform == "cpu":
        notes.append(
            "- **CPU only**: this decides nothing for the GPU. Rerun on a GPU "
            "(`python benchmarks/eigh.py --write` there) to decide whether Newton should try a "
            "Cholesky solve before its eigendecomposition: the question is the batched eigh's "
            "cost beside the pass there."
        )
    print("\n".join(notes))
    if a.write:
        lines = info.header_lines("eigh.py", FULL_COMMAND, devices)
        lines += ["", *md, "", *notes]
        print(f"wrote {C.write_section('eigh.py', lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fused GPU pass (`moejax.estimation.fused`) on a CPU: its kernel run in Pallas interpret
mode against the XLA pass, for every gate x likelihood x m in {1, 2}, and the engine's program
lowered for CUDA (no GPU needed to lower): the Triton kernel is there, the XLA contraction is
not. Nothing here runs the kernel on a GPU.

Sizes are tiny (d = 2, 512 active rows in two blocks of 256, each two kernel chunks of 128;
padding rows of weight 0), and each case compiles one program holding both passes, at a low XLA
optimisation level (compile time dominates; the arithmetic is the same IEEE float64)."""

from __future__ import annotations

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moejax as mj  # noqa: F401  (float64)
from moejax.estimation.bounds import layout, n_gate_params
from moejax.estimation.estimators import FitData, objective
from moejax.estimation.fused import FusedUnsupported, planify
from moejax.estimation.objective import Blocks, linear_predictor_objective
from moejax.mix import MixSpec
from moejax.mix.emrows import em_row_fns

GATES = ("softmax", "input_free", "sigmoid")
LIKS = ("categorical", "gaussian", "laplace")
B, COUNT, N = 256, 2, 640  # blocks of B rows (2 kernel chunks), COUNT active, rows past never read
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TOL = 1e-12


def _spec(gate: str, lik: str, m: int) -> MixSpec:
    K = 3 if lik == "categorical" else 2
    R = K - 1 if lik == "categorical" else 1
    return MixSpec(
        d=2,
        frozen="linear",
        adapter="tanh",
        eta0=np.random.default_rng(0).standard_normal((R, 2)),
        K=K,
        adapters=m,
        gate=gate,
        likelihood=lik,
        frozen_likelihood=lik,
        scale=1.7,
        bias=[0.3, -0.2][:R],
    )


def _data(spec: MixSpec, seed: int = 1) -> tuple[FitData, jax.Array]:
    """Rows as planes (X1 (3, N) with its ones plane), the last 30 active rows padding of
    weight 0 holding junk, rows past the active blocks NaN (never read); and a parameter."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, N))
    if spec.regression:
        y = 2.0 * rng.standard_normal(N)
    else:
        y = rng.integers(0, spec.K, N).astype(np.int32)
    lf0 = -np.abs(rng.standard_normal(N)) - 0.5
    w = rng.uniform(0.5, 2.0, N)
    pad = slice(COUNT * B - 30, COUNT * B)
    w[pad], X[:, pad], lf0[pad] = 0.0, 40.0, 7.0
    X[:, COUNT * B :], lf0[COUNT * B :] = np.nan, np.nan
    X1 = np.concatenate([X, np.ones((1, N))])
    total = w[: COUNT * B].sum()
    theta = 0.4 * rng.standard_normal(spec.n_params)
    data = FitData(*map(jnp.asarray, (X1, y, w, total, lf0)))
    return data, jnp.asarray(theta)


def _compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST)


@pytest.mark.parametrize(("gate", "lik", "m"), list(itertools.product(GATES, LIKS, (1, 2))))
def test_interpret_kernel_equals_the_xla_pass(gate: str, lik: str, m: int) -> None:
    """value, gradient and Hessian (order 2: one Newton pass) of the kernel in interpret mode
    equal the XLA pass's to 1e-12 relative (to the largest entry), rows blocked and padded."""
    spec = _spec(gate, lik, m)
    data, theta = _data(spec)

    def both(data, theta):
        blocks = Blocks(B, jnp.int32(COUNT))
        return [
            objective(spec, data, blocks, fused=f).value_grad_hess(theta)
            for f in ("off", "interpret")
        ]

    xla, kern = _compiled(both, data, theta)(data, theta)
    for name, a, b in zip(("value", "gradient", "Hessian"), xla, kern, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(a)), name
        np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL * np.abs(a).max(), err_msg=name)


def _streamed(spec: MixSpec, data: FitData):
    """The engine's form: blocks read through ``source(b)``."""

    def source(b):
        sl = lambda a: jax.lax.dynamic_slice_in_dim(a, b * B, B, axis=a.ndim - 1)
        return sl(data.X1), (sl(data.y), sl(data.lf0)), sl(data.w)

    return source


def test_interpret_kernel_over_lanes_streamed_value_and_grad() -> None:
    """Order 1 (value and gradient) through a streamed source, vmapped over 3 lanes (the
    kernel's grid gains the lanes), equals the XLA pass lane by lane."""
    spec = _spec("sigmoid", "gaussian", 2)
    lanes = [_data(spec, seed) for seed in (3, 4, 5)]
    data = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[d for d, _ in lanes])
    theta = jnp.stack([t for _, t in lanes])

    def both(data, theta):
        blocks = Blocks(B, jnp.int32(COUNT))
        src = _streamed(spec, data)
        return [
            objective(spec, data, blocks, src, fused=f).value_and_grad(theta)
            for f in ("off", "interpret")
        ]

    xla, kern = _compiled(jax.vmap(both), data, theta)(data, theta)
    for a, b in zip(xla, kern, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape[0] == 3 and np.all(np.isfinite(a))
        np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL * np.abs(a).max())


@pytest.mark.parametrize("lik", ["categorical", "gaussian"])
def test_interpret_kernel_em_m_step_objectives(lik: str) -> None:
    """EM's M-step objectives (gate rows with posteriors r (m + 1, n) as aux, expert rows with
    (y, r)), as `_fit_em` builds them: the kernel in interpret mode equals the XLA pass."""
    spec = _spec("sigmoid", lik, 2)
    data, theta = _data(spec, seed=6)
    r = np.random.default_rng(7).dirichlet(np.ones(spec.m + 1), size=N).T
    widths, starts = layout(spec)
    gate_rows, expert_rows = em_row_fns(spec)
    ng, m = n_gate_params(spec), spec.m

    def both(data, r, theta):
        blocks = Blocks(B, jnp.int32(COUNT))
        out = []
        for f in ("off", "interpret"):
            lpo = functools.partial(linear_predictor_objective, blocks=blocks, fused=f)
            gate = lpo(gate_rows, data.X1, r, data.w, data.total, widths[:m], starts=starts[:m])
            expert = lpo(
                expert_rows, data.X1, (data.y, r), data.w, data.total, widths[m:],
                starts=starts[m:],
            )  # fmt: skip
            out.append((gate.value_grad_hess(theta[:ng]), expert.value_grad_hess(theta[ng:])))
        return out

    r = jnp.asarray(r)
    xla, kern = _compiled(both, data, r, theta)(data, r, theta)
    for a, b in zip(jax.tree_util.tree_leaves(xla), jax.tree_util.tree_leaves(kern), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL * np.abs(a).max())


def test_planify_evaluates_plane_by_plane_and_refuses_the_rest() -> None:
    """planify on concrete planes equals the function (sums over a small axis, size-1
    broadcasts, stacks, slices); a sum over the rows, a dot or erf is refused by name (the
    objective then keeps the XLA pass)."""
    ch = 16
    spec = jax.ShapeDtypeStruct((3, ch), jnp.float64)
    bias = np.array([[0.5], [-1.0]])

    def fn(U):
        a = jnp.tanh(U[:2]) * 1.5 + bias  # (2, ch) + (2, 1)
        s = jnp.sum(jnp.exp(a), axis=0)  # a sum over a small axis
        return s, jnp.stack([a[1], jnp.log1p(s)]), jnp.where(U[2] > 0, U[2], -U[2])

    U = np.random.default_rng(0).standard_normal((3, ch))
    U_planes = np.empty(3, dtype=object)
    for i in range(3):
        U_planes[i] = jnp.asarray(U[i])
    got = planify(fn, ch, spec)(U_planes)
    want = [
        p for leaf in jax.tree_util.tree_leaves(fn(jnp.asarray(U))) for p in np.atleast_2d(leaf)
    ]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-15, atol=0)
    with pytest.raises(FusedUnsupported, match="over the rows"):
        planify(lambda U: U - jnp.sum(U, axis=-1, keepdims=True), ch, spec)
    with pytest.raises(FusedUnsupported, match="dot_general"):
        planify(lambda U: jnp.asarray(np.ones((2, 3))) @ U, ch, spec)
    with pytest.raises(FusedUnsupported, match="erf"):
        planify(lambda U: jax.lax.erf(U), ch, spec)


def test_a_row_function_the_kernel_refuses_keeps_the_xla_pass_on_cuda() -> None:
    """An autodiff row function (refused by planify) under fused="auto": lowered for CUDA, no
    kernel and the XLA contraction; "on" refuses it by name."""
    phi = lambda u, a: jnp.log1p(jnp.exp(u[0] - a)) + 0.5 * u[1] ** 2
    X1 = jnp.ones((3, B))
    args = (X1, jnp.zeros(B), jnp.ones(B), jnp.asarray(float(B)), (3, 2))

    def vgh(theta, fused):
        obj = linear_predictor_objective(phi, *args, starts=(0, 1), fused=fused)
        return obj.value_grad_hess(theta)

    theta = jnp.zeros(5)
    text = jax.jit(lambda t: vgh(t, "auto")).trace(theta).lower(lowering_platforms=("cuda",))
    assert "triton" not in text.as_text() and "stablehlo.dot_general" in text.as_text()
    with pytest.raises(FusedUnsupported):
        jax.jit(lambda t: vgh(t, "on")).trace(theta)


# --------------------------------------------------------------------------- CUDA lowering

TOML = """\
name = "tiny"
seed = 1
replicates = 4
[model]
d = 2
K = 3
frozen = "linear"
adapter = "tanh"
scale = 2.0
eta0 = [[1.0, 0.0], [0.0, 1.0]]
[truth]
beta = [0.5, 0.5]
tau = 0.2
eta = [[0.0, 1.0], [1.0, 0.0]]
[sizes]
list = [200, 300]
[run]
lanes = 2
density_points = 20
"""


def test_engine_program_lowered_for_cuda_uses_the_fused_kernel(tmp_path) -> None:
    """The engine's held program (G = 4 lanes, blocks of 256 rows) lowered for CUDA on this
    CPU machine: the fused pass is one Triton custom call with one program per lane, its
    Triton module verifies, and no dot_general over the rows of a block remains (the XLA
    pass's contraction, (G, F, B) x (G, Q, B), is gone); lowered for the CPU, the same
    program has that contraction and no Triton call."""
    from jax._src.lib.mlir import ir
    from jax._src.pallas.triton import lowering as triton_lowering

    from moejax.sweep import load
    from moejax.sweep.simulate import build_problem, empty_buffers, make_chunk_fn

    (tmp_path / "tiny.toml").write_text(TOML)
    prob = build_problem(load(tmp_path / "tiny.toml"))
    G, N_buf, Bk = 4, 512, 256
    sds = lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.asarray(a).dtype)
    args = [
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((G,), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.uint32),
        jax.tree_util.tree_map(sds, prob.truth),
        jax.tree_util.tree_map(sds, empty_buffers(prob.spec, G, N_buf, Bk)),
    ]
    traced = jax.jit(make_chunk_fn(prob, N_buf, False, Bk)).trace(*args)
    cuda = traced.lower(lowering_platforms=("cuda",))
    text = cuda.as_text()
    calls = re.findall(r"stablehlo\.custom_call @__gpu\$xla\.gpu\.triton\(.*", text)
    assert len(calls) >= 1
    assert all(f"grid_x = {G} : i32" in c for c in calls)
    assert 'name = "moejax_fused_pass"' in text

    def row_dots(t: str) -> list[str]:
        dots = [ln for ln in t.splitlines() if "stablehlo.dot_general" in ln]
        return [ln for ln in dots if re.search(rf"tensor<[0-9x]*x{Bk}xf64>", ln)]

    assert row_dots(text) == []
    # The kernel's own Triton module: it parses and verifies, and holds the f64 dot.
    found = []

    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for o in block.operations:
                    op = o.operation
                    if op.name == "stablehlo.custom_call" and "triton" in str(
                        op.attributes["call_target_name"]
                    ):
                        found.append(op)
                    walk(o.operation)

    walk(cuda.compiler_ir("stablehlo").operation)
    assert len(found) == len(calls)
    for op in found:
        blob = ir.StringAttr(op.attributes["mhlo.backend_config"]["ir"]).value_bytes
        with triton_lowering._new_ir_context():
            module = ir.Module.parse(blob)
            assert module.operation.verify()
            ttir = str(module)
        assert re.search(r"tt\.dot .*tensor<\d+x\d+xf64>", ttir)
        assert "__nv_tanh" in ttir and "__nv_log1p" in ttir
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "__gpu$xla.gpu.triton" not in cpu
    assert row_dots(cpu)

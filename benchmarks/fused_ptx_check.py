"""Compile the fused pass's Triton kernels for a GPU on a machine without one (issue 23).

For three designs (every gate x likelihood x m in {1, 2} with --all), the objective pass (value,
gradient and Hessian) vmapped over lanes is lowered for CUDA; each Triton kernel in it is
compiled to PTX by the CUDA plugin's Triton pipeline (the one XLA runs on a GPU) for ``--arch``,
and the PTX to a cubin by ptxas when it is found, which reports registers and spills. Prints
one table row a kernel: shared memory, registers, spill bytes; exits 1 when a compilation
fails. Nothing runs on a GPU; the kernel's results and speed stay untested.

Needs, beside the project's environment, the CUDA plugin of the installed jaxlib's version and,
for ptxas, nvidia-cuda-nvcc-cu12, e.g. in a folder of their own (not the project's venv):

    pip install --no-deps --target /tmp/cuda-plugin \\
        jax-cuda12-plugin==<jaxlib version> jax-cuda12-pjrt==<jaxlib version> nvidia-cuda-nvcc-cu12
    JAX_PLATFORMS=cpu PYTHONPATH=.:/tmp/cuda-plugin python benchmarks/fused_ptx_check.py --d 8

Measured with jax 0.10.2 (jax-cuda12-plugin 0.10.2), ptxas of CUDA 12.9, sm_90a (H100/H200),
B = 1024 rows in chunks of 128, 4 warps, 1 stage, all 18 designs x orders 1 and 2, on the 2-core
CPU machine (2026-12-03): every kernel compiles to a cubin. d = 2: 69-128 registers, 32-48 kB
of shared memory, spills 0 but two of 8 and 24 bytes; d = 8: 80-222 registers, 32-96 kB, spills
0 but one of 8 bytes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _cuda_compiler():
    """The Triton compiler of the CUDA plugin, which JAX's plugin discovery registers (on import
    of the plugin's package, GPU or not) when the backends start."""
    import jax
    from jax._src.lib import triton

    jax.devices()
    if not triton.has_compilation_handler("CUDA"):
        raise SystemExit("no CUDA Triton compiler: install jax-cuda12-plugin (see the docstring)")
    return triton.compile


def _int(cfg, key: str, default: int) -> int:
    return int(str(cfg[key]).split(":")[0]) if key in cfg else default


def _triton_modules(lowered) -> list[tuple[bytes, int, int]]:
    """(Triton module bytecode, num_warps, num_stages) of every Triton custom call."""
    from jax._src.lib.mlir import ir

    out = []

    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for o in block.operations:
                    op2 = o.operation
                    target = "call_target_name" in op2.attributes and str(
                        op2.attributes["call_target_name"]
                    )
                    if op2.name == "stablehlo.custom_call" and "triton" in (target or ""):
                        cfg = op2.attributes["mhlo.backend_config"]
                        blob = ir.StringAttr(cfg["ir"]).value_bytes
                        out.append((blob, _int(cfg, "num_warps", 4), _int(cfg, "num_stages", 3)))
                    walk(op2)

    walk(lowered.compiler_ir("stablehlo").operation)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1024, help="block size B")
    ap.add_argument("--arch", default="9.0", help="compute capability (9.0: H100/H200)")
    ap.add_argument("--all", action="store_true", help="all 18 designs (default: three)")
    a = ap.parse_args()
    import jax
    import jax.numpy as jnp
    from fused_gpu_check import DESIGNS, _spec

    import moejax  # noqa: F401  (float64)
    from moejax.estimation.estimators import FitData, objective
    from moejax.estimation.objective import Blocks

    compile_ptx = _cuda_compiler()
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        import nvidia.cuda_nvcc as nvcc  # from nvidia-cuda-nvcc-cu12, when installed

        cand = Path(next(iter(nvcc.__path__))) / "bin" / "ptxas"
        if cand.exists():
            os.chmod(cand, 0o755)
            ptxas = str(cand)
    designs = (
        list(
            itertools.product(
                ("softmax", "input_free", "sigmoid"), ("categorical", "gaussian", "laplace"), (1, 2)
            )
        )
        if a.all
        else list(DESIGNS)
    )
    G, B, d = 4, a.rows, a.d
    print(f"# fused kernels compiled for sm_{a.arch.replace('.', '')} without a GPU: d {d}, B {B}")
    print("| design | order | shared memory (B) | registers | spill stores (B) |")
    print("|---|---:|---:|---:|---:|")
    failed = False
    for design in designs:
        spec = _spec(*design, d)
        S = lambda shape, dt=jnp.float64: jax.ShapeDtypeStruct(shape, dt)
        n = 2 * B
        data = FitData(
            S((G, d + 1, n)), S((G, n), spec.y_dtype), S((G, n)), S((G,)), S((G, n)),
            S((G,), jnp.bool_),
        )  # fmt: skip
        theta = S((G, spec.n_params))
        for order in (1, 2):

            def one(data, th, order=order, spec=spec):
                o = objective(spec, data, Blocks(B, jnp.int32(2)), fused="on")
                return o.value_and_grad(th) if order == 1 else o.value_grad_hess(th)

            lowered = jax.jit(jax.vmap(one)).trace(data, theta).lower(lowering_platforms=("cuda",))
            for blob, warps, stages in _triton_modules(lowered):
                name = "-".join(map(str, design))
                try:
                    res = compile_ptx(
                        "CUDA", blob, a.arch, num_warps=warps, num_ctas=1, num_stages=stages
                    )
                except Exception as e:  # (report and go on)
                    failed = True
                    print(f"| {name} | {order} | FAILED: {str(e).splitlines()[0][:200]} | | |")
                    continue
                regs = spill = "(no ptxas)"
                if ptxas:
                    with tempfile.TemporaryDirectory() as tmp:
                        ptx = Path(tmp) / "k.ptx"
                        ptx.write_text(res.asm)
                        target = re.search(r"\.target (\S+)", res.asm).group(1)
                        p = subprocess.run(
                            [ptxas, f"-arch={target}", "-v", str(ptx), "-o", str(ptx) + ".cubin"],
                            capture_output=True,
                            text=True,
                        )
                    log = p.stdout + p.stderr
                    if p.returncode:
                        failed = True
                        regs, spill = "ptxas FAILED", log.strip().splitlines()[-1][:120]
                    else:
                        regs = re.search(r"Used (\d+) registers", log).group(1)
                        spill = re.search(r"(\d+) bytes spill stores", log).group(1)
                print(f"| {name} | {order} | {res.smem_bytes} | {regs} | {spill} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

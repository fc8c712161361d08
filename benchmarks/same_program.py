"""Write the optimised CPU program of the sweep engine's lane chunk for a config, with the
source locations stripped, so that two commits' programs can be compared line by line: equal
programs cost the same, so a change that leaves them equal needs no new timing.

    PYTHONPATH=<checkout> python benchmarks/same_program.py OUT.txt CONFIG METHOD
    diff OUT_old.txt OUT_new.txt      # run once per checkout (a git worktree for the old one)
"""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp

import moejax.sweep.config as C
from moejax.sweep.lane import make_chunk_fn
from moejax.sweep.problem import resolve_problem


def program_text(config: str, method: str) -> str:
    """The compiled chunk program (streamed lanes, 4 lanes, 512-row blocks) as text, with
    instruction names, metadata and source-location tables removed."""
    cfg = C.load(config, {"estimator.method": method, "sizes.list": [1000, 2000]})
    pr = resolve_problem(cfg, None, None, None)
    fn = make_chunk_fn(pr, 2048, streamed=True, B=512)
    args = (jnp.asarray(1000), jnp.arange(4), jnp.asarray(0), pr.truth, None)
    txt = jax.jit(fn).lower(*args).compile().as_text()
    txt = re.sub(r"metadata=\{[^}]*\}", "", txt)
    txt = re.sub(r"%[\w.\-]+", "%x", txt)
    txt = re.sub(r"\b[\w.\-]+(\.\d+)\b", "N", txt)
    txt = re.sub(r", ?stack_frame_id=[0-9]+", "", txt)
    return "\n".join(ln for ln in txt.splitlines() if not re.match(r'^\d+ (\{|")', ln))


if __name__ == "__main__":
    out, config, method = sys.argv[1:4]
    with open(out, "w") as f:
        f.write(program_text(config, method))

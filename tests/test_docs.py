"""The README and the documentation site say what is true: every snippet runs.

Pages: README.md and every page in mkdocs.yml's ``nav``. In each page:

- every fenced ```python block runs; the blocks of one page run in order in one fresh Python
  process (like a session: a later block may use an earlier one's names), in an empty temporary
  working directory, so no snippet may rely on the repository root as its working directory (a
  page whose blocks repeat another page's exactly runs once);
- every fenced ```sh block runs with bash (``set -euo pipefail``), in its own empty temporary
  working directory, with this interpreter's ``moejax`` on the PATH;
- every ```toml block parses.

A snippet is shown as a user would type it. The line right above its fence may carry one marker
comment, invisible in the rendered page and plain in its source, that says how the test changes
it:

- ``<!-- snippet: skip: REASON -->``: not run (the reason is required);
- ``<!-- snippet: replace "OLD" => "NEW"; "OLD2" => "NEW2" -->``: literal substitutions made
  before running (each OLD must occur), to shrink sizes or replicates;
- ``<!-- snippet: dry-run: REASON -->`` (sh only): each ``make TARGET`` line runs as
  ``make -n -C <repository> TARGET`` (the Makefile parses and has the target; nothing runs).

The checked-in configs reference (docs/configs.md) must equal what its generator writes from the
config schema (docs/gen_configs.py), so that it cannot drift from moejax/sweep/config.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->\s*$")
_REPLACE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*=>\s*"((?:[^"\\]|\\.)*)"')


class Snippet(NamedTuple):
    page: str  # path relative to the repository
    line: int  # line of the opening fence (1-based)
    lang: str
    code: str  # as shown on the page
    marker: str  # the marker comment's text, "" when none

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def skipped(self) -> bool:
        return self.marker.startswith("skip")

    def runnable(self) -> str:
        """The code the test runs: the page's code with the marker's substitutions made."""
        code = self.code
        if self.marker.startswith("replace"):
            pairs = _REPLACE.findall(self.marker)
            assert pairs, f'{self.label}: replace marker without any "OLD" => "NEW" pair'
            for old, new in pairs:
                old, new = json.loads(f'"{old}"'), json.loads(f'"{new}"')
                assert old in code, f"{self.label}: replace marker: {old!r} is not in the snippet"
                code = code.replace(old, new)
        if self.marker.startswith("dry-run"):
            assert self.lang == "sh", f"{self.label}: dry-run is for sh blocks"
            code = re.sub(r"^make ", f"make -n -C {ROOT} ", code, flags=re.M)
            assert "moejax " not in code, f"{self.label}: a dry-run block may only call make"
        return code


def pages() -> list[Path]:
    """README.md and the pages of mkdocs.yml's nav, in nav order."""
    nav = re.findall(
        r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M
    )
    return [ROOT / "README.md", *(ROOT / "docs" / p for p in nav)]


def snippets(path: Path) -> list[Snippet]:
    text = path.read_text()
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mk = _MARKER.search(before)
        marker = mk.group(1) if mk else ""
        if marker:
            kind = marker.split(":")[0].split()[0]
            assert kind in ("skip", "replace", "dry-run"), f"{path}: unknown marker {marker!r}"
            if kind in ("skip", "dry-run"):
                reason = marker.partition(":")[2].strip()
                assert reason, f"{path}: marker {marker!r} needs a reason after the colon"
        line = text.count("\n", 0, m.start()) + 1
        rel = str(path.relative_to(ROOT))
        out.append(Snippet(rel, line, m.group(1), m.group(2), marker))
    return out


ALL = [s for p in pages() for s in snippets(p)]


def _python_sessions() -> dict[str, list[Snippet]]:
    """The Python blocks to run per page; a page whose blocks are exactly another page's (the
    README's example repeated in Getting started) runs once, under the first page's name."""
    seen: dict[tuple[str, ...], str] = {}
    out: dict[str, list[Snippet]] = {}
    for page in dict.fromkeys(s.page for s in ALL):
        blocks = [s for s in ALL if s.page == page and s.lang == "python" and not s.skipped]
        key = tuple(b.runnable() for b in blocks)
        if blocks and key not in seen:
            seen[key] = page
            out[page] = blocks
    return out


PY_SESSIONS = _python_sessions()
SH = [s for s in ALL if s.lang in ("sh", "console", "bash", "shell")]
TOML = [s for s in ALL if s.lang == "toml"]


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> Path:
    """One compilation cache for every snippet process of this module (a test-harness
    speed-up: the snippets compute the same either way)."""
    return tmp_path_factory.mktemp("jax-cache")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MOEJAX_NO_PROGRESS"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["MOEJAX_CACHE_DIR"] = str(cache)
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


def _run(cmd: list[str], cwd: Path, cache: Path, what: str) -> None:
    r = subprocess.run(
        cmd, cwd=cwd, env=_env(cache), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if r.returncode:
        pytest.fail(f"{what} failed (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")


def test_the_strict_docs_build_is_not_quiet():
    """`make test` builds the site with --strict, and without --quiet: mkdocs counts the
    warnings that --strict makes fatal only when they are logged, so a quiet strict build
    passes a broken link (it did, once)."""
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ndocs-strict:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in recipe and "--quiet" not in recipe and "-q" not in recipe
    assert "docs-strict" in make.split("\ntest:", 1)[1].split("\n", 1)[0]


def test_every_page_is_found_and_has_its_snippets():
    assert len(pages()) >= 10
    assert PY_SESSIONS and SH and TOML
    for s in ALL:
        if s.lang in ("python", "sh", "toml"):
            s.runnable()  # markers are well-formed and their substitutions apply


@pytest.mark.parametrize("page", list(PY_SESSIONS))
def test_python_snippets_run(page, tmp_path, jax_cache):
    blocks = PY_SESSIONS[page]
    prog = ["import sys"]
    for s in blocks:
        prog.append(f"print('--', {s.label!r}, flush=True)")
        prog.append(f"exec(compile({s.runnable()!r}, {s.label!r}, 'exec'))")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "snippets.py").write_text("\n".join(prog) + "\n")
    _run([sys.executable, str(tmp_path / "snippets.py")], work, jax_cache, f"Python of {page}")


@pytest.mark.parametrize("snippet", [s for s in SH if not s.skipped], ids=lambda s: s.label)
def test_shell_snippets_run(snippet, tmp_path, jax_cache):
    cmd = ["bash", "-euo", "pipefail", "-c", snippet.runnable()]
    _run(cmd, tmp_path, jax_cache, snippet.label)


@pytest.mark.parametrize("snippet", TOML, ids=lambda s: s.label)
def test_toml_snippets_parse(snippet):
    tomllib.loads(snippet.code)


def test_configs_reference_is_generated_from_the_schema():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_configs
    finally:
        sys.path.remove(str(ROOT / "docs"))
    assert (ROOT / "docs" / "configs.md").read_text() == gen_configs.render(), (
        "docs/configs.md differs from the config schema: run `make docs` (or "
        "`python docs/gen_configs.py`) and commit the result"
    )

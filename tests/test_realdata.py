"""Tests of the real-data study (moejax/realdata.py, `moejax realdata`).

They need scikit-learn (the optional extra ``moejax[data]``, installed by the Makefile); without
it the module is skipped with that message. The end-to-end run is the ``--quick`` preset (d = 3,
two sizes, three replicates, softmax gate only), run once per module.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn (the optional extra moejax[data]) is absent")

from moejax import mix, realdata
from moejax.cli import main
from moejax.estimation.bounds import Bounds


@pytest.fixture(scope="module")
def task() -> realdata.Task:
    return realdata.load_task(realdata.QUICK)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("realdata")
    assert main(["realdata", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_writes_its_files(quick_run: Path) -> None:
    for name in ("realdata.csv", "realdata_summary.csv", "realdata.md", "realdata.png"):
        assert (quick_run / name).stat().st_size > 0, name
    with open(quick_run / "realdata.csv") as f:
        rows = list(csv.DictReader(f))
    cfg = realdata.QUICK
    methods = {r["method"] for r in rows}
    # frozen, two adapters alone, two mixtures (softmax gate only in the quick preset)
    assert methods == {
        "frozen",
        "adapter_linear",
        "adapter_tanh",
        "mix_linear_softmax",
        "mix_tanh_softmax",
    }
    assert len(rows) == len(methods) * len(cfg.sizes) * cfg.replicates
    for r in rows:
        assert np.isfinite(float(r["ll"])) and float(r["ll"]) < 0
        assert 0.0 <= float(r["acc"]) <= 1.0
        if r["method"].startswith("mix"):
            assert 0.0 < float(r["w"]) < 1.0
    md = (quick_run / "realdata.md").read_text()
    assert "Held-out mean log-likelihood" in md and "n = 60" in md


def test_frozen_expert_reproduces_the_source_classifier(task: realdata.Task) -> None:
    """eta0 and frozen_bias (relative to the reference class K-1) give predict_proba exactly,
    on source and target covariates; and the moejax frozen log-density agrees."""
    for Z in (task.Zs, task.Zt):
        ours = realdata.frozen_log_probs(task, Z)
        theirs = np.log(task.classifier.predict_proba(Z))
        np.testing.assert_allclose(ours, theirs, atol=1e-10)
        np.testing.assert_array_equal(np.argmax(ours, axis=1), task.classifier.predict(Z))
    spec, _, _ = realdata.specs(task, realdata.QUICK)["mix_linear_softmax"]
    y = task.yt.astype(np.int32)
    f0 = np.asarray(mix.frozen_logpdf(spec, task.Zt, y))
    ref = np.log(task.classifier.predict_proba(task.Zt))[np.arange(len(y)), y]
    np.testing.assert_allclose(f0, ref, atol=1e-10)


def test_gate_pinned_near_zero_is_the_frozen_expert(task: realdata.Task) -> None:
    """A mixture fitted with the input-free gate pinned at w = sigmoid(-30) has the frozen
    expert's held-out log-likelihood (the adapter is fitted, but carries weight 9e-14)."""
    cfg = dataclasses.replace(realdata.QUICK, gates=("input_free",))
    spec, start, _ = realdata.specs(task, cfg)["mix_tanh_input_free"]
    start = start._replace(tau=start.tau - realdata.PIN_TAU)
    bounds = Bounds(tau=(-realdata.PIN_TAU, -realdata.PIN_TAU + 1e-6))
    n, n_test = 120, 300
    Xtr, ytr = task.Zt[:n], task.yt[:n].astype(np.int32)
    Xte, yte = task.Zt[-n_test:], task.yt[-n_test:].astype(np.int32)
    res = mix.fit(spec, Xtr, ytr, start, bounds=bounds)
    held = float(mix.log_likelihood(spec, res.params, Xte, yte)) / n_test
    frozen = float(np.mean(np.log(task.classifier.predict_proba(Xte))[np.arange(n_test), yte]))
    assert abs(held - frozen) < 1e-10
    # not vacuous: the same adapter at gate weight 1/2 gives another held-out log-likelihood
    half = res.params._replace(tau=res.params.tau * 0.0)
    assert abs(float(mix.log_likelihood(spec, half, Xte, yte)) / n_test - frozen) > 1e-3


def test_missing_sklearn_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"moejax\[data\]"):
        realdata.load_task(realdata.QUICK)
    assert main(["realdata", "--quick", "--out", "/nonexistent/realdata"]) == 2


def test_mean_ci() -> None:
    m, lo, hi = realdata.mean_ci(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and lo < 2.0 < hi
    # t(0.975, 2) = 4.3027; sd = 1
    assert abs((hi - lo) / 2 - 4.302652729911275 / np.sqrt(3)) < 1e-9

"""The rate phase diagram on synthetic homogeneous runs with a known exponent per gamma."""

import csv
import json

import numpy as np

from moejax.report.phase import write_phase


def _fake_run(path, gamma, rng):
    path.mkdir()
    sizes = np.geomspace(1e3, 1e5, 8).astype(int)
    rows = []
    for n in sizes:
        for r in range(40):
            # exp_tau decays at -1/2 + gamma, beta and eta at -1/2; lognormal noise
            z = rng.normal(size=3) * 0.3
            rows.append(
                {
                    "n": n,
                    "replicate": r,
                    "err_beta": n**-0.5 * np.exp(z[0]),
                    "err_exp_tau": n ** (-0.5 + gamma) * np.exp(z[1]),
                    "err_eta": n**-0.5 * np.exp(z[2]),
                    "loglik": -1.0,
                    "n_iter": 3,
                    "inner_steps": 3,
                    "converged": 1,
                    "at_bound": int(r == 0),
                    "status": "converged",
                    "grad_norm": 0.0,
                }
            )
    with open(path / "fits.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (path / "manifest.json").write_text(
        json.dumps({"name": path.name, "regime": "homogeneous", "gamma": gamma})
    )


def test_phase_diagram_recovers_exponents(tmp_path):
    rng = np.random.default_rng(0)
    dirs = []
    for g in (0.0, 0.25):
        d = tmp_path / f"g{g}"
        _fake_run(d, g, rng)
        dirs.append(d)
    paths = write_phase(dirs, tmp_path / "phase", n_boot=200)
    assert paths["png"].stat().st_size > 0 and paths["pdf"].stat().st_size > 0
    rows = list(csv.DictReader(open(paths["csv"])))
    got = {(float(r["gamma"]), r["parameter"]): r for r in rows}
    # 8 sizes x 40 replicates, noise sd 0.3: the slope's standard error is ~0.01 (0.3 /
    # sqrt(40 * Sxx)); 0.05 is five of them.
    assert abs(float(got[(0.25, "exp_tau")]["slope"]) - (-0.25)) < 0.05
    assert abs(float(got[(0.0, "exp_tau")]["slope"]) - (-0.5)) < 0.05
    assert abs(float(got[(0.25, "eta")]["slope"]) - (-0.5)) < 0.05
    assert float(got[(0.25, "exp_tau")]["uniform"]) == 0.0
    assert float(got[(0.25, "exp_tau")]["pointwise"]) == -0.25
    assert int(got[(0.0, "beta")]["n_at_bound"]) == 8  # replicate 0 of each size

"""Batched refits and the parametric bootstrap: against single fits, lme4, and the chibar2(01) null law."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import jaxhlm
from conftest import MODELS

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    """200 groups of 20 with a random intercept and no random slope: the null of the slope-variance test."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(200), 20)
    x = rng.normal(size=g.size)
    y = 1.0 + 0.5 * x + rng.normal(scale=0.8, size=200)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_simulate_is_reproducible_and_follows_the_model(log_models):
    m = log_models["M3 (noslope)"]
    a, b = jaxhlm.simulate(m, 200, seed=3), jaxhlm.simulate(m, 200, seed=3)
    assert a.shape == (200, m.nobs) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(jaxhlm.simulate(m, 200, seed=4)))
    resid = np.asarray(a) - m.design.rows().X @ m.fe_params.to_numpy()
    assert abs(resid.mean()) < 0.05
    total = float(m.cov_re.iloc[0, 0]) + m.scale  # var(_cons) + var(Residual)
    assert resid.var() == pytest.approx(total, rel=0.02)


def test_refit_batch_equals_single_fits(hsb, log_models):
    m = log_models["M6 (final)"]
    Y = np.asarray(jaxhlm.simulate(m, 200, seed=11)).T
    batch = jaxhlm.refit_batch(m, Y, progress=False)
    frame = batch.to_frame()
    assert frame.shape[0] == 200 and {"llf", "converged", "singular", "_cons", "var(_cons)"} <= set(frame.columns)
    assert batch.converged.all()
    for j in range(200):
        r = jaxhlm.mixed(MODELS["M6 (final)"], hsb.assign(mathach=Y[:, j]))
        assert batch.llf[j] == pytest.approx(r.llf, abs=1e-6)
        np.testing.assert_allclose(batch.beta[j], r.fe_params.to_numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(batch.varcomp[j], r.random_effects.estimate, rtol=1e-5)


@pytest.fixture(scope="module")
def ses_bootstrap(log_models):
    small, big = log_models["M3 (noslope)"], log_models["M2 (sesrandom)"]
    reference = json.loads((FIXTURES / "lme4_bootstrap.json").read_text())
    return reference, jaxhlm.bootstrap_lrtest(small, big, B=reference["B"], seed=1, progress=False)


def test_bootstrap_agrees_with_lme4(ses_bootstrap):
    reference, boot = ses_bootstrap
    assert boot.statistic == pytest.approx(reference["observed_lr"], abs=2e-4)  # lme4 stops slightly short
    p = reference["pvalue"]
    mc = np.sqrt(2 * p * (1 - p) / reference["B"])  # SE of the difference of two independent estimates
    assert abs(boot.pvalue - p) < 3 * mc
    assert boot.failed == 0  # none needed (a count is reported, never hidden, when some do)
    assert np.nanmin(boot.replicates) >= 0.0
    assert boot.asymptotic_pvalue == pytest.approx(0.05637, abs=5e-5) and boot.df == 2
    assert "Bootstrap Prob >= LR" in str(boot) and "extension" in str(boot)


def test_bootstrap_replicates_equal_single_fits(hsb, ses_bootstrap):
    _, boot = ses_bootstrap
    small = jaxhlm.mixed(MODELS["M3 (noslope)"], hsb)
    Y = np.asarray(jaxhlm.simulate(small, 6, seed=1)).T  # the same draws as replicates 0..5
    for r in range(6):
        data = hsb.assign(mathach=Y[:, r])
        a, b = jaxhlm.mixed(MODELS["M3 (noslope)"], data), jaxhlm.mixed(MODELS["M2 (sesrandom)"], data)
        assert boot.small_fits.llf[r] == pytest.approx(a.llf, abs=1e-6)
        assert boot.big_fits.llf[r] == pytest.approx(max(b.llf, a.llf), abs=1e-6)
        assert boot.replicates[r] == pytest.approx(2 * (max(b.llf, a.llf) - a.llf), abs=2e-6)


def test_null_distribution_is_chibar2(synthetic):
    small = jaxhlm.mixed("y x || g:", synthetic)
    big = jaxhlm.mixed("y x || g: x", synthetic)  # cov(independent): one more variance parameter
    boot = jaxhlm.bootstrap_lrtest(small, big, B=1000, seed=5, progress=False)
    assert boot.df == 1 and boot.chibar_pvalue is not None and boot.failed == 0
    lr = boot.replicates
    zero = lr < 1e-6
    # Asymptotically half the replicates sit on the boundary (LR = 0) and the rest follow chi2(1). The mass at
    # zero approaches 1/2 from above, slowly (Crainiceanu & Ruppert 2004): 0.54 here at 200 groups of 20.
    assert 0.45 < zero.mean() < 0.60
    assert sps.kstest(lr[~zero], sps.chi2(1).cdf).pvalue > 0.001


_INVARIANCE = """
import json, pickle, sys, numpy as np, jax, jaxhlm
with open(sys.argv[1], "rb") as fh:
    small, big = pickle.load(fh)  # the fits themselves: fitting here would compile them again for two devices
out = {}
for chunk in (16,):  # 40 = 16 + 16 + 8: the last chunk is padded to the compiled shape
    b = jaxhlm.bootstrap_lrtest(small, big, B=40, seed=2, chunk=chunk, progress=False)
    out[chunk] = [None if np.isnan(v) else float(v) for v in b.replicates]
print(json.dumps({"devices": jax.local_device_count(), "lr": out}))
"""


def test_results_do_not_depend_on_chunks_or_devices(synthetic, tmp_path):
    small, big = jaxhlm.mixed("y x || g:", synthetic), jaxhlm.mixed("y x || g: x", synthetic)
    path = tmp_path / "fits.pickle"
    path.write_bytes(pickle.dumps((small, big)))
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip())
    proc = subprocess.run([sys.executable, "-c", _INVARIANCE, str(path)], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["devices"] == 2
    here = jaxhlm.bootstrap_lrtest(small, big, B=40, seed=2, progress=False).replicates  # one device
    for lr in doc["lr"].values():
        np.testing.assert_allclose(np.asarray(lr, dtype=float), here, rtol=1e-9, atol=1e-9)


def test_bootstrap_needs_nested_models(log_models):
    with pytest.raises(jaxhlm.ComparisonError, match="nested"):
        jaxhlm.bootstrap_lrtest(log_models["M4 (femalerandom)"], log_models["M2 (sesrandom)"], B=10)


def test_dofile_and_cli_bootstrap(synthetic, tmp_path, capsys):
    from jaxhlm.cli import main
    from jaxhlm.dofile import DoFileError, run_do

    log = run_do("mixed y x || g:\nest store a\nmixed y x || g: x\nlrtest a ., bootstrap(40) seed(3)\n", synthetic)
    assert "Parametric bootstrap likelihood-ratio test (jaxhlm extension of lrtest)" in log
    assert "Assumption: a nested within ." in log and "(40 replicates; seed 3)" in log
    with pytest.raises(DoFileError, match="line 2: option bootstrap not allowed"):
        run_do("mixed y x || g:\nlrtest . ., bootstrap(x)\n", synthetic)
    path = tmp_path / "s.csv"
    synthetic.to_csv(path, index=False)
    assert main(["bootstrap", "y x || g:", "y ~ x + (x || g)", "--B", "40", "--seed", "3", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Bootstrap Prob >= LR" in out and "Assumption: small nested within big" in out
    assert main(["bootstrap", "y x || g:", "y x || g: x", "--B", "0", "--data", str(path)]) == 2

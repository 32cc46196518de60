"""AR(1) residuals in batched refits: draws from a fit (the AR(1) recursion), refit_batch, bootstrap intervals and
the parametric-bootstrap LR test, two and three levels. The fits and references are tests/test_ar1.py's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import JaxhlmError
from ar1_cases import FIXTURES, FORMULAS, fit_all
from ar1_cases import data as _data


@pytest.fixture(scope="module")
def fits():
    return fit_all()


def test_simulated_responses_have_the_fitted_covariance(fits):
    """Draws from the fit: each subject's responses have mean Xβ̂ and covariance V = ZΣ̂Zᵀ + σ̂²ρ̂^|s−t| (gaps
    included), to Monte-Carlo error; rows in the estimation sample's order; the same seed, the same draws."""
    d = _data()
    m = fits["slope_ml"]
    n = 20_000
    Y = np.asarray(jaxhlm.simulate(m, n, seed=3))
    assert Y.shape == (n, len(d)) and np.array_equal(Y[:5], np.asarray(jaxhlm.simulate(m, 5, seed=3)))
    rho, s2 = m.params["rho(Residual)"], m.scale
    for g in (1, 2, 40):
        rows = np.flatnonzero(d["id"].to_numpy() == g)
        t = d["time"].to_numpy()[rows]
        Z = np.column_stack([t, np.ones(len(rows))])  # Stata's order: the slope, then _cons
        V = Z @ m.cov_re.to_numpy() @ Z.T + s2 * rho ** np.abs(t[:, None] - t[None, :])
        X = np.column_stack([np.ones(len(rows)), t, d["x"].to_numpy()[rows]])
        np.testing.assert_allclose(Y[:, rows].mean(axis=0), X @ m.fe_params.to_numpy(), atol=4 * np.sqrt(
            np.diag(V).max() / n))
        # Each entry of a sample covariance has SD about √((V_aa V_bb + V_ab²)/n): 4 SDs.
        tol = 4 * np.sqrt((np.outer(np.diag(V), np.diag(V)) + V**2) / n)
        assert np.all(np.abs(np.cov(Y[:, rows].T) - V) < tol), g


def test_refit_batch_equals_single_fits(fits):
    d = _data()
    m = fits["slope_reml"]
    Y = np.asarray(jaxhlm.simulate(m, 12, seed=5)).T
    batch = jaxhlm.refit_batch(m, np.column_stack([d["y"].to_numpy(), Y]), progress=False)
    assert batch.converged.all()
    assert list(batch.re_labels[-2:]) == ["rho(Residual)", "var(Residual)"]
    assert batch.llf[0] == pytest.approx(m.llf, abs=1e-8)
    for k in (1, 6, 12):
        one = jaxhlm.fit(FORMULAS["slope_reml"], d.assign(y=Y[:, k - 1]), reml=True, residuals="ar1", time="time")
        assert batch.llf[k] == pytest.approx(one.llf, abs=1e-6)
        np.testing.assert_allclose(batch.beta[k], one.fe_params, rtol=1e-6)
        np.testing.assert_allclose(batch.varcomp[k], one.random_effects.estimate, rtol=1e-5, atol=1e-8)
    # Bootstrap intervals: ρ's percentiles stay inside (−1, 1), around the estimate.
    ci = m.conf_int(method="bootstrap", B=40, seed=1)
    lo, hi = ci.loc["rho(Residual)"]
    assert -1 < lo < m.params["rho(Residual)"] < hi < 1


def test_bootstrap_lrtest_of_a_random_slope_under_ar1_residuals(fits):
    """The random slope's LR test with AR(1) residuals in both models: no replicate's LR is negative, each
    replicate's two fits are those of one-at-a-time fits of its response, the answer does not depend on the
    chunk size; independent residuals nested in AR(1) ones are bootstrapped too, the reverse is refused."""
    d = _data()
    small = fits["intercept_ml"]
    big = jaxhlm.fit(FORMULAS["slope_ml"], d, residuals="ar1", time="time")
    boot = jaxhlm.bootstrap_lrtest(small, big, B=24, seed=2, progress=False)
    assert boot.failed == 0 and np.all(boot.replicates >= 0)
    assert boot.statistic == pytest.approx(2 * (big.llf - small.llf), rel=1e-9)
    Y = np.asarray(jaxhlm.simulate(small, 24, seed=2))
    for r in (0, 13):
        y = d.assign(y=Y[r])
        lr = 2 * (jaxhlm.fit(FORMULAS["slope_ml"], y, residuals="ar1", time="time").llf
                  - jaxhlm.fit(FORMULAS["intercept_ml"], y, residuals="ar1", time="time").llf)
        assert boot.replicates[r] == pytest.approx(max(lr, 0.0), abs=1e-6)
    again = jaxhlm.bootstrap_lrtest(small, big, B=24, seed=2, chunk=4, progress=False)
    np.testing.assert_allclose(again.replicates, boot.replicates, rtol=1e-9, atol=1e-9)
    independent = jaxhlm.fit(FORMULAS["intercept_ml"], d)
    rho = jaxhlm.bootstrap_lrtest(independent, small, B=16, seed=0, progress=False)
    assert rho.failed == 0 and rho.df == 1 and np.all(rho.replicates >= 0)
    assert rho.pvalue == pytest.approx(1 / 17)  # ρ̂ = 0.78 on 643 rows: no replicate of ρ = 0 comes near
    # AR(1) residuals are not nested in independent ones, even where the likelihoods are ordered as if they were
    # (strong random slopes, no serial correlation).
    rng = np.random.default_rng(0)
    t = np.tile(np.arange(8), 50)
    slopes = np.repeat(rng.normal(0, 1, 50), 8)
    panel = pd.DataFrame({"id": np.repeat(np.arange(50), 8), "time": t, "x": rng.normal(size=400),
                          "y": slopes * t + rng.normal(size=400)})
    ar1 = jaxhlm.fit(FORMULAS["intercept_ml"], panel, residuals="ar1", time="time")
    slope_independent = jaxhlm.fit(FORMULAS["slope_ml"], panel)
    assert slope_independent.llf > ar1.llf
    with pytest.raises(JaxhlmError, match="residual structure must be the bigger model's"):
        jaxhlm.bootstrap_lrtest(ar1, slope_independent, B=4, progress=False)


def test_three_level_draws_refits_and_bootstrap():
    """Draws from a three-level fit have each school's marginal covariance (schools' and students' intercepts,
    AR(1) within students; :meth:`marginal_cov`) to Monte-Carlo error; batched refits and the bootstrap of a
    students' random slope equal one-at-a-time fits of the same responses."""
    d = pd.read_csv(FIXTURES / "ar1_three.csv")
    small = jaxhlm.fit("y ~ time + x + (1 | school/student)", d, residuals="ar1", time="time")
    n = 20_000
    Y = np.asarray(jaxhlm.simulate(small, n, seed=4))
    V = small.marginal_cov(1)
    at = d.index.get_indexer(V.index)
    tol = 4 * np.sqrt((np.outer(np.diag(V), np.diag(V)) + V.to_numpy() ** 2) / n)
    assert np.all(np.abs(np.cov(Y[:, at].T) - V.to_numpy()) < tol)
    batch = jaxhlm.refit_batch(small, Y[:2].T, progress=False)
    one = jaxhlm.fit("y ~ time + x + (1 | school/student)", d.assign(y=Y[1]), residuals="ar1", time="time")
    assert batch.llf[1] == pytest.approx(one.llf, abs=1e-6)
    np.testing.assert_allclose(batch.varcomp[1], one.random_effects.estimate, rtol=1e-5)
    big_formula = "y ~ time + x + (1 | school) + (1 + time | school:student)"
    big = jaxhlm.fit(big_formula, d, residuals="ar1", time="time")
    boot = jaxhlm.bootstrap_lrtest(small, big, B=8, seed=1, progress=False)
    assert boot.failed == 0 and np.all(boot.replicates >= 0)
    y = d.assign(y=np.asarray(jaxhlm.simulate(small, 8, seed=1))[5])
    lr = 2 * (jaxhlm.fit(big_formula, y, residuals="ar1", time="time").llf
              - jaxhlm.fit("y ~ time + x + (1 | school/student)", y, residuals="ar1", time="time").llf)
    assert boot.replicates[5] == pytest.approx(max(lr, 0.0), abs=1e-6)

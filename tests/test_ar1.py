"""First-order autoregressive residuals within groups: Stata's ``residuals(ar 1, t(time))``, ``fit(..., residuals="ar1", time=)``.

Reference values: tests/fixtures/ar1_reference.json, written with the data tests/fixtures/ar1.csv by
tests/fixtures/ar1_reference.R (``Rscript tests/fixtures/ar1_reference.R``; nlme's version in the JSON): ``nlme::lme``
with ``correlation = corAR1(form = ~ time | id)`` (80 subjects, times 0..9 with gaps, rows shuffled): a random
intercept by ML, a random intercept and time slope by ML and REML; the linear model with the same residuals
(``gls``), BLUPs; and a three-level panel (tests/fixtures/ar1_three.csv: students numbered within schools, AR(1)
within students), ``random = ~ 1 | school/student`` by ML. The variance parameters' information, Satterthwaite's degrees of freedom and the profile intervals
are checked against finite differences and maximisations of a dense likelihood written here, V per subject and all.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError, JaxhlmError
from jaxhlm.dofile import Session
from ar1_cases import FIXTURES, FORMULAS, REF, THREE, fit_all
from ar1_cases import data as _data
from finite_differences import differences, gls_loglik, lr_vs_ols


@pytest.fixture(scope="module")
def fits():
    return fit_all()


@pytest.mark.parametrize("name", list(REF))
def test_matches_nlme(fits, name):
    ref, m = REF[name], fits[name]
    assert m.converged and not m.singular
    # Never below nlme's beyond rounding (1e-11 of 1,200), above it by at most 1.5e-10 where nlme stops short.
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-9) and m.llf >= ref["loglik"] - 1e-10
    np.testing.assert_allclose(m.fe_params, ref["beta"], rtol=1e-7)
    np.testing.assert_allclose(m.bse_fe, ref["se"], rtol=2e-6)
    q = len(m.design.re_names)
    first = [q - 1] + list(range(q - 1))  # R puts the intercept first
    # nlme's stop leaves var(_cons) of the random-intercept model 4e-6 (relative) from the optimum.
    np.testing.assert_allclose(m.cov_re.to_numpy()[np.ix_(first, first)], ref["cov_re"], rtol=1e-5)
    assert list(m.params.index[-2:]) == ["rho(Residual)", "var(Residual)"]
    assert m.params["rho(Residual)"] == pytest.approx(ref["rho"], abs=2e-6)
    assert m.scale == pytest.approx(ref["sigma2"], rel=5e-6)
    # Stata's LR test vs. linear model: against the linear regression, on the random effects' and ρ's parameters
    assert m.lr_linear.statistic == pytest.approx(lr_vs_ols(m), abs=1e-6)
    assert m.lr_linear.df == m.random_effects.estimate.size - 1 and not m.lr_linear.chibar
    assert m.df_modelwc == len(ref["beta"]) + m.random_effects.estimate.size
    blups = m.ranef()
    np.testing.assert_allclose(blups.loc[[int(g) for g in ref["groups"]]].to_numpy()[:, first], ref["blups"],
                               rtol=2e-5, atol=1e-5)
    if name != "intercept_ml":  # performance's R² of the random-slope fits (its residual variance: σ²)
        np.testing.assert_allclose(m.r2()[["marginal", "conditional"]], ref["r2"], rtol=2e-6)


def _dense(d: pd.DataFrame, phi: np.ndarray) -> tuple[float, np.ndarray]:
    """The ML log likelihood (β by GLS) and (XᵀV⁻¹X)⁻¹ of ``y ~ time + x + (1 | id)`` with AR(1) residuals at
    φ = (ln sd, atanh ρ, ln σ), written with each subject's V = σ_b²11ᵀ + σ²ρ^|tₛ − tₜ|, rows and all: no whitening,
    no sufficient statistics, no autodiff."""
    X = np.column_stack([np.ones(len(d)), d["time"], d["x"]])
    y, t = d["y"].to_numpy(), d["time"].to_numpy()
    subjects = [np.flatnonzero(d["id"].to_numpy() == g) for g in np.unique(d["id"])]
    rho, s2 = np.tanh(phi[1]), np.exp(2 * phi[2])
    V = [np.exp(2 * phi[0]) + s2 * rho ** np.abs(t[i][:, None] - t[i][None, :]) for i in subjects]
    return gls_loglik(X, y, subjects, V)


def test_information_and_satterthwaite_match_finite_differences_of_a_dense_likelihood(fits):
    """The variance parameters' covariance (inverse information in φ = (ln sd, atanh ρ, ln σ)) against central second
    differences of the dense log likelihood; the reported SEs by the delta method from it; Satterthwaite's degrees
    of freedom 2 Var(β̂ₖ)² / (gᵀ Cov(φ̂) g) with g the central differences of the dense Var(β̂ₖ) in φ."""
    d = _data()
    m = fits["intercept_ml"]
    re = m.random_effects
    H, dC = differences(lambda phi: _dense(d, phi), re.phi)
    ll, cov_beta = _dense(d, re.phi)
    assert ll == pytest.approx(m.llf, abs=1e-8)
    np.testing.assert_allclose(cov_beta, m.cov_params(), rtol=1e-9)
    V = np.linalg.inv(-H)
    np.testing.assert_allclose(re.phi_cov, V, rtol=1e-4)
    var_b, rho, s2 = re.estimate
    se_phi = np.sqrt(np.diag(V))
    np.testing.assert_allclose(re.se, [2 * var_b * se_phi[0], (1 - rho**2) * se_phi[1], 2 * s2 * se_phi[2]],
                               rtol=1e-4)
    # ρ's interval is symmetric in atanh ρ, as a correlation's.
    lo, hi = m.conf_int().loc["rho(Residual)"]
    assert np.arctanh(hi) - np.arctanh(rho) == pytest.approx(np.arctanh(rho) - np.arctanh(lo), rel=1e-12)
    assert np.arctanh(hi) - np.arctanh(rho) == pytest.approx(1.959964 * re.se[1] / (1 - rho**2), rel=1e-6)
    want = 2 * np.diag(cov_beta) ** 2 / np.einsum("ka,ab,kb->k", dC, re.phi_cov, dC)
    np.testing.assert_allclose(m.satterthwaite()["df"], want, rtol=1e-4)
    with pytest.raises(JaxhlmError, match="one residual variance"):
        jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time)) reml dfmethod(kroger)", d)


def test_profile_interval_of_rho_ends_where_the_dense_profile_crosses_the_cut(fits):
    """Each endpoint of ρ's profile interval: the dense likelihood maximised over (ln sd, ln σ) (β by GLS) with
    ρ held there lies χ²₁(0.95)/2 below the maximum."""
    from scipy import optimize, stats

    d = _data()
    m = fits["intercept_ml"]
    ci = m.conf_int(method="profile")
    lsd, z, ls = m.random_effects.phi
    ll_hat = _dense(d, m.random_effects.phi)[0]
    lo, hi = ci.loc["rho(Residual)"]
    assert lo < m.params["rho(Residual)"] < hi
    for c in (lo, hi):
        best = optimize.minimize(lambda x: -_dense(d, np.array([x[0], np.arctanh(c), x[1]]))[0], [lsd, ls],
                                 method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9})
        assert 2 * (ll_hat + best.fun) == pytest.approx(stats.chi2.ppf(0.95, 1), abs=1e-6)
    sd = m.varcorr(method="profile")
    assert sd.loc["rho(Residual)", "ci_lower"] == pytest.approx(lo, rel=1e-12)


def test_stata_syntax_report_and_do_file(fits):
    d = _data()
    m = jaxhlm.mixed("y time x || id: time, covariance(unstructured) residuals(ar 1, t(time))", d)
    ref = fits["slope_ml"]
    assert m.llf == pytest.approx(ref.llf, abs=1e-9)
    text = str(m)
    assert ("-----------------------------+------------------------------------------------\n"
            "Residual: AR(1)              |\n"
            "                         rho |   .4764564   .0753607      .3160998    .6103456\n"
            "                      var(e) |   2.066655   .2951791      1.562037     2.73429\n") in text
    assert f"LR test vs. linear model: chi2(4) = {lr_vs_ols(m):.2f}" in text  # 3 random-effects parameters and ρ
    assert "Note: LR test is conservative and provided only for reference." in text
    assert "                       sd(e) |   1.437587" in str(jaxhlm.mixed(
        "y time x || id: time, cov(unstr) res(ar 1, t(time)) stddeviations", d))
    assert jaxhlm.mixed("y time x || id:, residuals(ar, t(time))", d).llf == pytest.approx(
        fits["intercept_ml"].llf, abs=1e-9)
    # A do-file: AR(1) against independent residuals (ρ = 0: one parameter), and residuals standardized by σ.
    session = Session(d)
    out = [session.run(*line.partition(" ")[::2]) for line in [
        "mixed y time x || id:", "estimates store ind",
        "mixed y time x || id:, residuals(ar 1, t(time))", "lrtest ind .",
        "predict r, rstandard", "predict e, residuals"]]
    assert "LR chi2(1) =" in out[3]
    np.testing.assert_allclose(session.data["r"], session.data["e"] / np.sqrt(fits["intercept_ml"].scale), rtol=1e-6)


def test_order_chunks_missing_times_and_comparisons(fits):
    d = _data()
    ref = fits["intercept_ml"]
    # The rows' order does not matter (the fixture's rows are shuffled), nor reading them in chunks.
    ordered = jaxhlm.fit(FORMULAS["intercept_ml"], d.sort_values(["id", "time"]), residuals="ar1", time="time")
    np.testing.assert_allclose(ordered.params, ref.params, rtol=1e-9)
    chunked = jaxhlm.fit(FORMULAS["intercept_ml"], iter([d.iloc[:300], d.iloc[300:]]), residuals="ar1", time="time")
    np.testing.assert_allclose(chunked.params, ref.params, rtol=1e-9)
    # A row with no time is dropped, and counted; the time may be given as an array.
    gappy = d.assign(time2=d["time"].where(d.index % 7 != 0))
    m = jaxhlm.fit(FORMULAS["intercept_ml"], gappy, residuals="ar1", time="time2")
    assert m.nobs == len(d) - len(d.index[::7]) and "dropped because of missing values" in " ".join(m.design.notes)
    as_array = jaxhlm.fit(FORMULAS["intercept_ml"], d, residuals="ar1", time=d["time"].to_numpy())
    assert as_array.llf == pytest.approx(ref.llf, abs=1e-10)
    # ranova's linear model keeps the AR(1) residuals: its row is the fit's LR test vs. linear model.
    ra = jaxhlm.ranova(ref).table
    assert ra.loc["(1 | id)", "npar"] == 3 + 2
    assert ra.loc["(1 | id)", "logLik"] == pytest.approx(REF["intercept_ml"]["loglik_linear"], abs=1e-8)
    assert fits["slope_reml"].refit_ml().llf == pytest.approx(fits["slope_ml"].llf, abs=1e-9)


def test_bad_input_and_refusals(fits):
    d = _data()
    m = fits["intercept_ml"]
    with pytest.raises(JaxhlmError, match="AR\\(1\\) residuals") as info:
        m.icc()
    assert "intraclass" in str(info.value)
    with pytest.raises(DataError, match="repeats a value within a id group"):
        jaxhlm.fit(FORMULAS["intercept_ml"], d.assign(t=d["time"] // 2), residuals="ar1", time="t")
    with pytest.raises(DataError, match="whole numbers"):
        jaxhlm.fit(FORMULAS["intercept_ml"], d.assign(t=d["time"] + 0.5 * (d.index % 2)), residuals="ar1", time="t")
    with pytest.raises(DataError, match="this model has weights"):
        jaxhlm.fit(FORMULAS["intercept_ml"], d.assign(w=1.0), residuals="ar1", time="time", weights="w")
    with pytest.raises(DataError, match="this model has crossed grouping factors"):
        jaxhlm.fit("y ~ x + (1 | id) + (1 | time)", d, residuals="ar1", time="time")
    with pytest.raises(FormulaError, match="time variable 'nosuch' not found"):
        jaxhlm.fit(FORMULAS["intercept_ml"], d, residuals="ar1", time="nosuch")
    with pytest.raises(DataError, match="ar residuals need a time variable"):
        jaxhlm.mixed("y time || id:, residuals(ar 1)", d)
    with pytest.raises(DataError, match="ar residuals need a time variable: .* time= in fit"):
        jaxhlm.fit(FORMULAS["intercept_ml"], d, residuals="ar1")
    with pytest.raises(DataError, match="the residuals' by.. variable 'x' changes within a id group"):
        jaxhlm.mixed("y time || id:, residuals(ar 1, t(time) by(x))", d)
    with pytest.raises(FormulaError, match="the options are by.varname. and t.varname."):
        jaxhlm.mixed("y time || id:, residuals(ar 1, t(time) foo(x))", d)


def test_command_line(fits, capsys):
    from jaxhlm.cli import main

    path = str(FIXTURES / "ar1.csv")
    assert main(["fit", FORMULAS["intercept_ml"], "--data", path, "--residuals", "ar1", "--time", "time", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["llf"] == pytest.approx(fits["intercept_ml"].llf, abs=1e-9)
    assert out["random"]["rho(Residual)"]["estimate"] == pytest.approx(fits["intercept_ml"].params["rho(Residual)"])


def test_three_levels_match_nlme():
    """AR(1) within the inner level's clusters (students measured repeatedly, within schools): the series are the
    clusters, whose whitened rows give the nested statistics. Stata's reading (students numbered within schools)
    and the lme4 formula fit the same model."""
    d = pd.read_csv(FIXTURES / "ar1_three.csv")
    m = jaxhlm.fit("y ~ time + x + (1 | school/student)", d, residuals="ar1", time="time")
    assert m.converged and m.llf == pytest.approx(THREE["loglik"], abs=1e-9)
    np.testing.assert_allclose(m.fe_params, THREE["beta"], rtol=1e-8)
    np.testing.assert_allclose(m.bse_fe, THREE["se"], rtol=1e-7)
    np.testing.assert_allclose(m.random_effects.estimate, [*THREE["variances"], THREE["rho"], THREE["sigma2"]],
                               rtol=1e-6)
    assert m.lr_linear.statistic == pytest.approx(lr_vs_ols(m), abs=1e-8)
    stata = jaxhlm.mixed("y time x || school: || student:, residuals(ar 1, t(time))", d)
    assert stata.llf == pytest.approx(m.llf, abs=1e-9)
    np.testing.assert_allclose(stata.random_effects.se, m.random_effects.se, rtol=1e-7)
    assert "Residual: AR(1)" in str(stata)


def test_marginal_covariance_matches_nlme(fits):
    """V = ZΣ̂Zᵀ + σ̂²ρ̂^|s−t| for subject 1 (nlme's getVarCov(type = "marginal"), to nlme's own stop), and its
    correlations (Stata's estat wcorrelation)."""
    d = _data()
    ref, m = REF["slope_ml"], fits["slope_ml"]
    V = m.marginal_cov(1)
    assert list(d.loc[V.index, "time"]) == ref["marginal_1_time"]
    np.testing.assert_allclose(V.to_numpy(), ref["marginal_1"], rtol=2e-6)
    corr = m.wcorrelation(1).to_numpy()
    np.testing.assert_allclose(corr, V.to_numpy() / np.sqrt(np.outer(np.diag(V), np.diag(V))), rtol=1e-12)
    assert m.marginal_cov().equals(V)  # the first group by default
    with pytest.raises(JaxhlmError, match="is not a group of id"):
        m.marginal_cov(999)
    # Three levels: students' series are correlated within a student only; the school's intercept spans them all.
    three = jaxhlm.fit("y ~ time + x + (1 | school/student)", pd.read_csv(FIXTURES / "ar1_three.csv"),
                       residuals="ar1", time="time")
    V3 = three.marginal_cov(1)
    rows = pd.read_csv(FIXTURES / "ar1_three.csv").loc[V3.index]
    school, student, rho, s2 = *three.random_effects.estimate[:2], *three.random_effects.estimate[2:]
    same = rows["student"].to_numpy()[:, None] == rows["student"].to_numpy()[None, :]
    t = rows["time"].to_numpy()
    np.testing.assert_allclose(V3.to_numpy(), school + same * (student + s2 * rho ** np.abs(t[:, None] - t[None, :])),
                               rtol=1e-12)

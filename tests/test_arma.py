"""Autoregressive residuals of order p ≥ 2 and moving-average residuals: Stata's ``residuals(ar p, t())`` and
``residuals(ma q, t())``.

Reference values: tests/fixtures/arma_reference.json, written by tests/fixtures/arma_reference.R (``Rscript
tests/fixtures/arma_reference.R``; nlme's version in the JSON): nlme's ``corARMA`` over the integer time (gaps
included) on the AR(1) fixture's data (tests/fixtures/ar1.csv: 80 subjects, times 0..9 with gaps, rows shuffled)
beside random effects (``lme``) and without them (``gls``), and within students in schools
(tests/fixtures/ar1_three.csv). Beside them, a dense likelihood written here (each subject's V, rows and all, its
autocorrelations from the Yule–Walker equations solved as a linear system) must equal jaxhlm's log likelihood at its
estimates, be flat there, and give the reported covariance of the coefficients by second differences.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError
from ar1_cases import FIXTURES
from ar1_cases import data as _data
from finite_differences import differences, gls_loglik

REF = {f["name"]: f for f in json.loads((FIXTURES / "arma_reference.json").read_text())["fits"]}
#: each reference's model, as Stata writes it
COMMANDS = {
    "ar2_intercept_ml": "y time x || id:, residuals(ar 2, t(time))",
    "ar3_reml": "y time x || id:, noconstant reml residuals(ar 3, t(time))",
    "ma1_intercept_ml": "y time x || id:, residuals(ma 1, t(time))",
    "ma2_slope_reml": "y time x || id: time, covariance(unstructured) reml residuals(ma 2, t(time))",
    "school_ar2_ml": "y time x || school: || student:, noconstant residuals(ar 2, t(time))",
}


def _three() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "ar1_three.csv")


@pytest.fixture(scope="module")
def fits() -> dict[str, jaxhlm.MixedResult]:
    return {name: jaxhlm.mixed(command, _three() if name.startswith("school") else _data())
            for name, command in COMMANDS.items()}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_matches_nlme(fits, name):
    m, ref = fits[name], REF[name]
    assert m.converged
    assert m.llf == pytest.approx(ref["loglik"], abs=2e-8)
    order = [m.design.constant, "time", "x"]  # nlme's
    np.testing.assert_allclose(m.fe_params[order].to_numpy(), ref["beta"], rtol=2e-6)
    np.testing.assert_allclose(m.bse_fe[order].to_numpy(), ref["se"], rtol=2e-5)
    coef = np.atleast_1d(ref["coef"])
    name_ = "phi" if name.startswith(("ar", "school")) else "theta"
    rows = [f"{name_}{k}(Residual)" for k in range(1, len(coef) + 1)]
    np.testing.assert_allclose(m.params[rows].to_numpy(), coef, rtol=2e-5, atol=2e-6)
    assert m.params["var(Residual)"] == pytest.approx(ref["sigma2"], rel=2e-5)
    if "re_cov" in ref:
        effects = list(m.cov_re.index[::-1])  # nlme's order: the intercept first
        np.testing.assert_allclose(m.cov_re.loc[effects, effects].to_numpy(), np.asarray(ref["re_cov"]), rtol=2e-4,
                                   atol=1e-6)


def _ar_acf(phi: np.ndarray, lags: int) -> np.ndarray:
    """ρ(0…lags) of the AR(p) with coefficients φ: ρ(1…p) by the Yule–Walker equations ρ(k) = Σᵢ φᵢ ρ(|k − i|)
    solved as one linear system, then the recursion."""
    p = len(phi)
    A, b = np.eye(p), np.zeros(p)
    for k in range(1, p + 1):
        for i in range(1, p + 1):
            if k == i:
                b[k - 1] += phi[i - 1]
            else:
                A[k - 1, abs(k - i) - 1] -= phi[i - 1]
    rho = [1.0] + list(np.linalg.solve(A, b))
    while len(rho) <= lags:
        rho.append(sum(phi[i] * rho[-1 - i] for i in range(p)))
    return np.asarray(rho)


def _ma_acf(theta: np.ndarray, lags: int) -> np.ndarray:
    t = np.r_[1.0, theta]
    gamma = [t[:len(t) - k] @ t[k:] if k < len(t) else 0.0 for k in range(lags + 1)]
    return np.asarray(gamma) / gamma[0]


def _dense(u: np.ndarray, acf) -> tuple[float, np.ndarray]:
    """The ML log likelihood (β by GLS) and (XᵀV⁻¹X)⁻¹ of ``y ~ time + x`` with a random intercept and residuals of
    autocorrelation ``acf(coefficients, lags)`` at coordinates u = (ln sd(_cons), the coefficients, ln σ)."""
    d = _data()
    X = np.column_stack([np.ones(len(d)), d["time"], d["x"]])
    y, t = d["y"].to_numpy(), d["time"].to_numpy().astype(int)
    rho = acf(u[1:-1], 9)
    subjects = [np.flatnonzero(d["id"].to_numpy() == g) for g in np.unique(d["id"])]
    V = [np.exp(2 * u[0]) + np.exp(2 * u[-1]) * rho[np.abs(t[i][:, None] - t[i][None, :])] for i in subjects]
    return gls_loglik(X, y, subjects, V)


@pytest.mark.parametrize("name, acf", [("ar2_intercept_ml", _ar_acf), ("ma1_intercept_ml", _ma_acf)])
def test_dense_likelihood_is_at_its_maximum_with_the_reported_information(fits, name, acf):
    """The coefficients are their own coordinates: the dense likelihood at φ̂ is the log likelihood, flat there,
    and the inverse of its negated second differences is the covariance of φ̂, whose coefficient rows are the
    coefficients' reported SEs (and their Wald interval symmetric)."""
    m = fits[name]
    phi = m.random_effects.phi
    ll, cov_beta = _dense(phi, acf)
    assert ll == pytest.approx(m.llf, abs=1e-8)
    order = [m.design.constant, "time", "x"]
    np.testing.assert_allclose(cov_beta, m.cov_params().loc[order, order], rtol=1e-8)
    H, _ = differences(lambda u: _dense(u, acf), phi)
    grad = [(_dense(phi + 1e-5 * e, acf)[0] - _dense(phi - 1e-5 * e, acf)[0]) / 2e-5 for e in np.eye(len(phi))]
    np.testing.assert_allclose(grad, 0.0, atol=1e-4)
    V = np.linalg.inv(-H)
    np.testing.assert_allclose(m.random_effects.phi_cov, V, rtol=1e-4, atol=1e-8)
    coefs = [label for label in m.params.index if label.startswith(("phi", "theta"))]
    np.testing.assert_allclose(m.bse[coefs].to_numpy(), np.sqrt(np.diag(V)[1:-1]), rtol=1e-4)
    ci = m.conf_int().loc[coefs].to_numpy()
    np.testing.assert_allclose(ci.mean(axis=1), m.params[coefs].to_numpy(), rtol=1e-12)


def test_stata_report(fits):
    out = str(fits["ar2_intercept_ml"])
    for line in ["Residual: AR(2)              |", "                        phi1 |", "                        phi2 |",
                 "                      var(e) |", "LR test vs. linear model: chi2(3)"]:
        assert line in out
    out = str(fits["ma2_slope_reml"])
    assert "Residual: MA(2)              |" in out and "                      theta2 |" in out
    assert "student:             (empty) |" in str(fits["school_ar2_ml"])
    # estat sd: a coefficient stays as it is, var(e) becomes sd(e)
    m = fits["ma1_intercept_ml"]
    table = m.varcorr()
    assert table.loc["theta1(Residual)", "estimate"] == pytest.approx(m.params["theta1(Residual)"], rel=1e-12)
    assert table.loc["theta1(Residual)", "std_err"] == pytest.approx(m.bse["theta1(Residual)"], rel=1e-10)
    assert table.loc["sd(Residual)", "estimate"] == pytest.approx(np.sqrt(m.params["var(Residual)"]), rel=1e-12)


def test_autocorrelations_and_marginal_covariance(fits):
    """wcorrelation's within-subject correlations are σ²ρ(|s − t|) plus the intercept's variance, ρ the AR(2)'s."""
    m = fits["ar2_intercept_ml"]
    V = m.marginal_cov(3)
    t = _data().loc[V.index, "time"].to_numpy().astype(int)
    phi = m.params[["phi1(Residual)", "phi2(Residual)"]].to_numpy()
    want = m.params["var(_cons)"] + m.params["var(Residual)"] * _ar_acf(phi, 9)[np.abs(t[:, None] - t[None, :])]
    np.testing.assert_allclose(V.to_numpy(), want, rtol=1e-10)


def test_profile_interval_of_a_coefficient_ends_where_the_dense_profile_crosses_the_cut():
    """θ₁ of MA(1) residuals without random effects: at the lower endpoint the dense likelihood maximised over σ
    (β by GLS) lies χ²₁(0.95)/2 below the maximum; above, it stays over that cut up to θ₁ = 1, where the invertible
    coefficients end (beyond, 1/θ₁ gives the same correlations), and the interval ends there."""
    from scipy import optimize, stats

    d = _data()
    m = jaxhlm.mixed("y time x || id:, noconstant residuals(ma 1, t(time))", d)
    ends = m.conf_int(method="profile").loc["theta1(Residual)"].to_numpy()
    assert ends[0] < m.params["theta1(Residual)"] < ends[1]
    cut = m.llf - 0.5 * stats.chi2.ppf(0.95, 1)

    def dense(theta: float, log_sigma: float) -> float:
        return _dense(np.array([-40.0, theta, log_sigma]), _ma_acf)[0]  # var(_cons) e⁻⁸⁰: none

    def profile(theta: float) -> float:
        return -optimize.minimize_scalar(lambda ls: -dense(theta, ls), bounds=(-2.0, 3.0), method="bounded",
                                         options={"xatol": 1e-10}).fun

    assert profile(ends[0]) == pytest.approx(cut, abs=1e-6)
    assert ends[1] == pytest.approx(1.0, abs=1e-8) and profile(1.0) > cut + 0.5


def test_simulation_and_batched_refits(fits):
    m = fits["ar2_intercept_ml"]
    d = _data()
    Y = np.asarray(jaxhlm.simulate(m, 20000, seed=5))
    rows = d.index.get_indexer(m.marginal_cov(5).index)
    np.testing.assert_allclose(np.cov(Y[:, rows], rowvar=False), m.marginal_cov(5).to_numpy(), atol=0.35)
    batch = jaxhlm.refit_batch(m, Y[:2].T)
    for k in range(2):
        one = jaxhlm.mixed(COMMANDS["ar2_intercept_ml"], d.assign(y=Y[k]))
        assert batch.llf[k] == pytest.approx(one.llf, abs=1e-6)
        np.testing.assert_allclose(batch.varcomp[k], one.random_effects.estimate, rtol=1e-4, atol=1e-6)


def test_by_arm_with_their_own_fixed_effects_fit_as_separate_models():
    """``residuals(ar 2, t(time) by(arm))`` with every fixed effect by arm and no random effects: the arms share no
    parameter, so the log likelihood is the sum of the arms' fitted alone, and each arm's rows are its own fit's."""
    d = _data().assign(arm=lambda f: f["id"] % 2)
    both = jaxhlm.mixed("y i.arm##c.time i.arm##c.x || id:, noconstant residuals(ar 2, t(time) by(arm))", d)
    alone = [jaxhlm.fit("y ~ time + x + (0 | id)", d[d["arm"] == a], residuals="ar 2", time="time") for a in (0, 1)]
    assert both.converged
    assert both.llf == pytest.approx(sum(m.llf for m in alone), abs=1e-8)
    for a, m in enumerate(alone):
        mine = both.params[[f"{label[:-1]}[arm={a}])" for label in m.random_effects.labels]]
        np.testing.assert_allclose(mine, m.random_effects.estimate, rtol=1e-6)
    out = str(both)
    assert "Residual: AR(2),             |" in out and "                     1: phi2 |" in out


def test_bootstrap_of_the_autoregressive_order():
    """AR(1) within AR(2) beside a random intercept: the bigger model starts from the smaller one's optimum (its
    second partial autocorrelation 0), so no replicate's LR is negative, and each replicate is the single fits of
    its response. MA(1) is not nested in AR(2): refused."""
    d = _data()
    small = jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time))", d)
    big = jaxhlm.mixed(COMMANDS["ar2_intercept_ml"], d)
    test = jaxhlm.bootstrap_lrtest(small, big, B=12, seed=2, progress=False)
    assert test.failed == 0 and np.all(test.replicates >= -1e-8)
    Y = np.asarray(jaxhlm.simulate(small, 12, seed=2))  # the bootstrap's own draws
    lr = 2 * (jaxhlm.mixed(COMMANDS["ar2_intercept_ml"], d.assign(y=Y[4])).llf
              - jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time))", d.assign(y=Y[4])).llf)
    assert test.replicates[4] == pytest.approx(lr, abs=1e-6)
    with pytest.raises(jaxhlm.JaxhlmError, match="nested models: .* a process of lower order"):
        jaxhlm.bootstrap_lrtest(jaxhlm.mixed(COMMANDS["ma1_intercept_ml"], d), big, B=12, progress=False)


def test_refusals():
    d = _data()
    with pytest.raises(FormulaError, match=r"residuals\(ar 0\): the order of ar residuals must be at least 1"):
        jaxhlm.fit("y ~ time + (0 | id)", d, residuals="ar 0", time="time")
    with pytest.raises(DataError, match="ma 10 residuals estimate 10 coefficients, which need every lag up to 10, "
                                        "but no series has observations 10 apart .* \\(the longest lag is 9\\)"):
        jaxhlm.mixed("y time x || id:, nocons residuals(ma 10, t(time))", d)
    with pytest.raises(DataError, match="ar 9 residuals give every pair .* drop the random intercept"):
        jaxhlm.mixed("y time x || id:, residuals(ar 9, t(time))", d)
    with pytest.raises(DataError, match="the time variable 'rt' of ma residuals must hold whole numbers"):
        jaxhlm.fit("y ~ time + (1 | id)", d.assign(rt=d["time"] + 0.5), residuals="ma 1", time="rt")
    with pytest.raises(DataError, match="ma residuals need a time variable"):
        jaxhlm.fit("y ~ time + (1 | id)", d, residuals="ma 1")

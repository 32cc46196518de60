"""Residuals correlated within subjects beyond AR(1): Stata's ``residuals(exchangeable)``, ``residuals(exponential,
t())``, ``residuals(toeplitz q, t())``, ``residuals(banded q, t())`` and ``residuals(unstructured, t())``, and
models whose only level names the subjects (``|| id:, noconstant``; ``(0 | id)``).

Reference values: tests/fixtures/serial_reference.json, written by tests/fixtures/serial_reference.R (``Rscript
tests/fixtures/serial_reference.R``; nlme's version in the JSON) on the AR(1) fixture's data (tests/fixtures/ar1.csv:
80 subjects, times 0..9 with gaps, rows shuffled): exchangeable residuals (``gls`` with ``corCompSymm``, and ``lme``
with a random slope), unstructured residuals on the rows with time <= 4 (``gls`` with ``corSymm`` and ``varIdent``,
ML and REML) and exponential residuals over a real time beside a random intercept (``lme`` with ``corExp``). nlme has
no Toeplitz or banded structure: those fits are held to a dense likelihood written here (each subject's V, rows and
all), which must equal jaxhlm's log likelihood at its estimates and be flat there, and whose second differences give
the variance parameters' covariance.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError, JaxhlmError
from ar1_cases import FIXTURES
from ar1_cases import data as _data
from finite_differences import differences, gls_loglik, lr_vs_ols

REF = {f["name"]: f for f in json.loads((FIXTURES / "serial_reference.json").read_text())["fits"]}


def _early() -> pd.DataFrame:
    d = _data()
    return d[d["time"] <= 4]


@pytest.fixture(scope="module")
def fits() -> dict[str, jaxhlm.MixedResult]:
    d, early = _data(), _early()
    return {
        "exchangeable_ml": jaxhlm.mixed("y time x || id:, noconstant residuals(exchangeable)", d),
        "exchangeable_slope_ml": jaxhlm.fit("y ~ time + x + (0 + time | id)", d, residuals="exchangeable"),
        "unstructured_reml": jaxhlm.mixed("y time x || id:, noconstant reml residuals(unstructured, t(time))", early),
        "unstructured_ml": jaxhlm.fit("y ~ time + x + (0 | id)", early, residuals="unstructured", time="time"),
        "exponential_ml": jaxhlm.fit("y ~ time + x + (1 | id)", d.assign(rt=np.sqrt(d["time"] + 1)),
                                     residuals="exponential", time="rt"),
        "toeplitz_ml": jaxhlm.mixed("y time x || id:, residuals(toeplitz 2, t(time))", d),
        "banded_ml": jaxhlm.mixed("y time x || id:, noconstant residuals(banded 1, t(time))", early),
    }


def _cov(m: jaxhlm.MixedResult, K: int = 5) -> np.ndarray:
    """The K×K residual covariance among the times 0…K−1 from an unstructured fit's reported rows."""
    C = np.zeros((K, K))
    for k in range(K):
        C[k, k] = m.params[f"var(e{k})"]
        for l in range(k + 1, K):
            C[k, l] = C[l, k] = m.params.get(f"cov(e{k},e{l})", 0.0)
    return C


@pytest.mark.parametrize("name", ["exchangeable_ml", "exchangeable_slope_ml", "unstructured_reml", "unstructured_ml",
                                  "exponential_ml"])
def test_matches_nlme(fits, name):
    ref, m = REF[name], fits[name]
    assert m.converged and not m.singular
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-7) and m.llf >= ref["loglik"] - 1e-9
    first = [m.design.constant, "time", "x"]  # R's order
    # With 15 variance parameters nlme stops 2-3e-8 short of the maximum (jaxhlm's gradient there: 1e-10), which
    # leaves its β̂ up to 3e-6 away.
    np.testing.assert_allclose(m.fe_params[first], ref["beta"], rtol=1e-6, atol=1e-5 if "unstr" in name else 0.0)
    # nlme's gls reports an ML fit's Cov(β̂) scaled by N/(N − p) (its σ² divides by N − p); lme does not.
    scale = np.sqrt(m.nobs / (m.nobs - 3)) if name in ("exchangeable_ml", "unstructured_ml") else 1.0
    np.testing.assert_allclose(m.bse_fe[first] * scale, ref["se"], rtol=1e-5)
    if name.startswith("exchangeable"):
        assert list(m.params.index[-2:]) == ["var(Residual)", "cov(Residual)"]
        assert m.params["var(Residual)"] == pytest.approx(ref["sigma2"], rel=1e-6)
        assert m.params["cov(Residual)"] == pytest.approx(ref["sigma2"] * ref["rho"], rel=1e-6)
    if name == "exchangeable_slope_ml":
        assert m.params["var(time)"] == pytest.approx(ref["var_slope"], rel=1e-4)
    if name.startswith("unstructured"):
        assert m.params.index[-1] == "cov(e3,e4)" and len(m.random_effects.labels) == 15
        np.testing.assert_allclose(_cov(m), ref["cov"], rtol=1e-4)  # nlme short of the maximum (above)
    if name == "exponential_ml":
        assert list(m.params.index[-2:]) == ["rho(Residual)", "var(Residual)"]
        # nlme stops 7e-9 short in log likelihood (jaxhlm's gradient there: 6e-12), 8e-6 away in ρ, 2e-5 in σ².
        assert m.params["rho(Residual)"] == pytest.approx(ref["rho"], abs=2e-5)
        assert m.params["var(Residual)"] == pytest.approx(ref["sigma2"], rel=5e-5)
        assert m.params["var(_cons)"] == pytest.approx(ref["var_intercept"], rel=1e-4)


def _dense(d: pd.DataFrame, residual, var_cons: float = 0.0) -> tuple[float, np.ndarray]:
    """The ML log likelihood (β by GLS) and (XᵀV⁻¹X)⁻¹ of ``y ~ time + x`` with a random intercept of variance
    ``var_cons`` and residual covariance ``residual(tₛ, tₜ)`` within subjects: each subject's V written out."""
    X = np.column_stack([np.ones(len(d)), d["time"], d["x"]])
    y, t = d["y"].to_numpy(), d["time"].to_numpy()
    subjects = [np.flatnonzero(d["id"].to_numpy() == g) for g in np.unique(d["id"])]
    V = [var_cons + residual(t[i][:, None], t[i][None, :]) for i in subjects]
    return gls_loglik(X, y, subjects, V)


def _toeplitz(d: pd.DataFrame, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Toeplitz(2) beside a random intercept at coordinates u = (ln sd(_cons), atanh ρ₁, atanh ρ₂, ln σ)."""
    rho = np.array([1.0, np.tanh(u[1]), np.tanh(u[2])] + [0.0] * 10)
    return _dense(d, lambda s, t: np.exp(2 * u[3]) * rho[np.abs(s - t).astype(int)], np.exp(2 * u[0]))


def _banded(d: pd.DataFrame, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Banded(1) over the times 0…4 at coordinates u = (ln sd₀…₄, atanh r₀₁, r₁₂, r₂₃, r₃₄)."""
    sd, r = np.exp(u[:5]), np.tanh(u[5:])
    C = np.diag(sd**2)
    for k in range(4):
        C[k, k + 1] = C[k + 1, k] = sd[k] * sd[k + 1] * r[k]
    return _dense(d, lambda s, t: C[s.astype(int), t.astype(int)])


def _at_dense_maximum(m: jaxhlm.MixedResult, d: pd.DataFrame, dense) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check that the dense likelihood at the fit's coordinates φ is its log likelihood, with its (XᵀV⁻¹X)⁻¹, and
    flat there (central differences); return φ, that covariance and the fixed effects' order in it."""
    assert m.converged
    phi = m.random_effects.phi
    ll, cov_beta = dense(d, phi)
    assert ll == pytest.approx(m.llf, abs=1e-8)
    order = [m.design.constant, "time", "x"]
    np.testing.assert_allclose(cov_beta, m.cov_params().loc[order, order], rtol=1e-8)
    h = 1e-5
    grad = [(dense(d, phi + h * e)[0] - dense(d, phi - h * e)[0]) / (2 * h) for e in np.eye(len(phi))]
    np.testing.assert_allclose(grad, 0.0, atol=1e-4)
    return phi, cov_beta, order


@pytest.mark.parametrize("name", ["toeplitz_ml", "banded_ml"])
def test_dense_likelihood_is_at_its_maximum_with_the_reported_information(fits, name):
    """The dense likelihood at the fit's coordinates φ equals its log likelihood, its gradient vanishes there, and
    the inverse of its negated second differences is the fit's covariance of φ (whence the reported SEs)."""
    m = fits[name]
    d, dense = (_data(), _toeplitz) if name == "toeplitz_ml" else (_early(), _banded)
    phi, cov_beta, order = _at_dense_maximum(m, d, dense)
    H, dC = differences(lambda p: dense(d, p), phi)
    V = np.linalg.inv(-H)
    np.testing.assert_allclose(m.random_effects.phi_cov, V, rtol=1e-4, atol=1e-8)
    # Satterthwaite's degrees of freedom 2 Var(β̂ₖ)² / (gᵀ Cov(φ̂) g), g the dense Var(β̂ₖ)'s differences in φ
    want = 2 * np.diag(cov_beta) ** 2 / np.einsum("ka,ab,kb->k", dC, V, dC)
    np.testing.assert_allclose(m.satterthwaite()["df"].loc[order], want, rtol=1e-4)
    if name == "banded_ml":  # the SEs of var(eₖ) = sdₖ² and cov(eₖ,eₗ) = sdₖsdₗrₖₗ by the delta method from V
        def values(u: np.ndarray) -> np.ndarray:
            sd, r = np.exp(u[:5]), np.tanh(u[5:])
            return np.concatenate([sd**2, sd[:4] * sd[1:] * r])

        J = np.column_stack([(values(phi + 1e-6 * e) - values(phi - 1e-6 * e)) / 2e-6 for e in np.eye(len(phi))])
        np.testing.assert_allclose(m.random_effects.se, np.sqrt(np.diag(J @ V @ J.T)), rtol=1e-4)
        assert list(m.params.index[-2:]) == ["cov(e2,e3)", "cov(e3,e4)"]
    if name == "toeplitz_ml":
        assert list(m.params.index[-3:]) == ["rho1(Residual)", "rho2(Residual)", "var(Residual)"]
        assert m.bse["rho1(Residual)"] == pytest.approx((1 - m.params["rho1(Residual)"] ** 2)
                                                       * np.sqrt(m.random_effects.phi_cov[1, 1]), rel=1e-10)


def test_stata_report(fits):
    out = str(fits["unstructured_reml"])
    for line in ["Mixed-effects REML regression", "Group variable: id", "id:                  (empty) |",
                 "Residual: Unstructured       |", "                     var(e0) |", "                  cov(e3,e4) |"]:
        assert line in out
    # without random effects, against the linear regression on the residual structure's parameters, with the
    # note Stata prints for it (its logs of residuals(un) models with || id:, noconstant)
    m = fits["unstructured_reml"]
    assert f"LR test vs. linear model: chi2({m.lr_linear.df}) = {lr_vs_ols(m):.2f}" in out
    assert m.lr_linear.df == m.random_effects.estimate.size - 1
    assert out.rstrip().endswith("Note: The reported degrees of freedom assumes the null hypothesis is not on the\n"
                                 "boundary of the parameter space. If this is not true, then the reported test is\n"
                                 "conservative.")
    out = str(fits["toeplitz_ml"])
    assert "Residual: Toeplitz(2)        |" in out and "                        rho2 |" in out
    assert "LR test vs. linear model: chi2(3)" in out  # the intercept's variance, rho1 and rho2
    assert "Residual: Banded(1)" in str(fits["banded_ml"])
    out = str(fits["exchangeable_ml"])
    assert "                      var(e) |" in out and "                      cov(e) |" in out
    sd = jaxhlm.mixed("y time x || id:, noconstant residuals(exchangeable) stddeviations", _data())
    m = fits["exchangeable_ml"]
    assert "                     corr(e) |" in str(sd)
    table = m.varcorr()
    assert table.loc["corr(Residual)", "estimate"] == pytest.approx(REF["exchangeable_ml"]["rho"], rel=1e-5)


def test_marginal_covariance_and_row_variances(fits):
    m = fits["unstructured_ml"]
    early = _early()
    V = m.marginal_cov(1)
    t = early.loc[V.index, "time"].to_numpy()
    np.testing.assert_allclose(V.to_numpy(), _cov(m)[np.ix_(t, t)], rtol=1e-12)
    np.testing.assert_allclose(m.residual_variance(early), np.diag(_cov(m))[early["time"]], rtol=1e-12)
    e = fits["exchangeable_slope_ml"]
    V = e.marginal_cov(3)
    t = _data().loc[V.index, "time"].to_numpy()
    expected = e.params["var(time)"] * np.outer(t, t) + e.params["cov(Residual)"]
    expected[np.diag_indices(len(t))] += e.params["var(Residual)"] - e.params["cov(Residual)"]
    np.testing.assert_allclose(V.to_numpy(), expected, rtol=1e-12)


def test_simulation_and_batched_refits(fits):
    m = fits["toeplitz_ml"]
    d = _data()
    Y = np.asarray(jaxhlm.simulate(m, 20000, seed=3))
    rows = d.index.get_indexer(m.marginal_cov(5).index)
    np.testing.assert_allclose(np.cov(Y[:, rows], rowvar=False), m.marginal_cov(5).to_numpy(), atol=0.25)
    batch = jaxhlm.refit_batch(m, Y[:3].T)
    for k in range(3):
        one = jaxhlm.mixed("y time x || id:, residuals(toeplitz 2, t(time))", d.assign(y=Y[k]))
        assert batch.llf[k] == pytest.approx(one.llf, abs=1e-6)
        np.testing.assert_allclose(batch.varcomp[k], one.random_effects.estimate, rtol=1e-4)


def test_bootstrap_of_the_exponential_correlation():
    """Independent residuals against exponential ones beside a random intercept: the bigger model starts from the
    smaller one's optimum (ρ = 0 to rounding), so no replicate's LR is negative, and each replicate is the single
    fit of its response."""
    d = _data().assign(rt=np.sqrt(_data()["time"] + 1))
    small = jaxhlm.fit("y ~ time + x + (1 | id)", d)
    big = jaxhlm.fit("y ~ time + x + (1 | id)", d, residuals="exponential", time="rt")
    test = jaxhlm.bootstrap_lrtest(small, big, B=12, seed=2, progress=False)
    assert test.failed == 0 and np.all(test.replicates >= -1e-8)
    Y = np.asarray(jaxhlm.simulate(small, 12, seed=2))  # the bootstrap's own draws
    lr = 2 * (jaxhlm.fit("y ~ time + x + (1 | id)", d.assign(y=Y[4]), residuals="exponential", time="rt").llf
              - jaxhlm.fit("y ~ time + x + (1 | id)", d.assign(y=Y[4])).llf)
    assert test.replicates[4] == pytest.approx(lr, abs=1e-6)


def test_refusals():
    d, early = _data(), _early()
    with pytest.raises(DataError, match="exchangeable residuals give every pair .* drop the random intercept"):
        jaxhlm.fit("y ~ time + x + (1 | id)", d, residuals="exchangeable")
    with pytest.raises(DataError, match="unstructured residuals give every pair"):
        jaxhlm.mixed("y time x || id:, residuals(unstructured, t(time))", early)
    with pytest.raises(DataError, match="toeplitz residuals give every pair"):
        jaxhlm.mixed("y time x || id:, residuals(toeplitz, t(time))", d)
    with pytest.raises(DataError, match="up to 12, but no series has observations 10 apart .* \\(the longest lag is 9\\)"):
        jaxhlm.mixed("y time x || id:, nocons residuals(toeplitz 12, t(time))", d)
    few = early[~((early["time"] == 0) & early["id"].isin(early.loc[early["time"] == 4, "id"]))]
    with pytest.raises(DataError, match="no series is observed at both time = 0 and 4"):
        jaxhlm.mixed("y time x || id:, nocons residuals(unstructured, t(time))", few)
    with pytest.raises(DataError, match="unstructured residuals need a time variable"):
        jaxhlm.fit("y ~ time + (0 | id)", d, residuals="unstructured")
    with pytest.raises(DataError, match="exchangeable residuals take no time variable"):
        jaxhlm.fit("y ~ time + (0 | id)", d, residuals="exchangeable", time="time")
    with pytest.raises(FormulaError, match="independent residuals take no time variable .'time'.; name the"):
        jaxhlm.fit("y ~ time + (1 | id)", d, time="time")
    with pytest.raises(FormulaError, match=r"the random part for id has no effects; .* residuals= in fit"):
        jaxhlm.fit("y ~ time + (0 | id)", d)
    with pytest.raises(FormulaError, match=r"residuals\(wiggly\) is not a residual structure"):
        jaxhlm.fit("y ~ time + (0 | id)", d, residuals="wiggly", time="time")
    m = jaxhlm.fit("y ~ time + x + (0 | id)", early, residuals="unstructured", time="time")
    with pytest.raises(JaxhlmError, match="R² .* Unstructured residuals"):
        m.r2()


def _arms(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(arm=d["id"] % 2)


def test_strata_with_their_own_fixed_effects_fit_as_separate_models():
    """``residuals(unstructured, t(time) by(arm))`` with every fixed effect by arm and no random effects: the arms
    share no parameter, so the restricted likelihood (XᵀV⁻¹X is block diagonal) is the sum of the arms' fitted
    alone, and each arm's rows are those of its own fit."""
    early = _arms(_early())
    both = jaxhlm.mixed("y i.arm##c.time i.arm##c.x || id:, noconstant reml residuals(unstructured, t(time) "
                        "by(arm))", early)
    alone = [jaxhlm.fit("y ~ time + x + (0 | id)", early[early["arm"] == a], reml=True, residuals="unstructured",
                        time="time") for a in (0, 1)]
    assert both.converged
    assert both.llf == pytest.approx(sum(m.llf for m in alone), abs=1e-8)
    for a, m in enumerate(alone):
        mine = both.params[[f"{label[:-1]}[arm={a}])" for label in m.random_effects.labels]]
        np.testing.assert_allclose(mine, m.random_effects.estimate, rtol=1e-6)
    assert list(both.params.index[-2:]) == ["cov(e2,e4[arm=1])", "cov(e3,e4[arm=1])"]


def _ar1_by_arm(d: pd.DataFrame, u: np.ndarray) -> tuple[float, np.ndarray]:
    """y ~ time + x + (1 | id) with AR(1) residuals by arm at coordinates u = (ln sd(_cons), then per arm atanh ρ,
    ln σ): each subject's V written out."""
    X = np.column_stack([np.ones(len(d)), d["time"], d["x"]])
    y, t, arm = d["y"].to_numpy(), d["time"].to_numpy(), d["arm"].to_numpy()
    subjects = [np.flatnonzero(d["id"].to_numpy() == g) for g in np.unique(d["id"])]
    V = []
    for i in subjects:
        a = arm[i[0]]
        rho, s2 = np.tanh(u[1 + 2 * a]), np.exp(2 * u[2 + 2 * a])
        V.append(np.exp(2 * u[0]) + s2 * rho ** np.abs(t[i][:, None] - t[i][None, :]))
    return gls_loglik(X, y, subjects, V)


def test_ar1_by_arm_beside_a_random_intercept():
    """AR(1) residuals with their own ρ and σ in each arm, a random intercept shared: the dense likelihood at the
    fit's coordinates is its log likelihood, flat there; the report and the marginal covariance per arm."""
    d = _arms(_data())
    m = jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time) by(arm))", d)
    _at_dense_maximum(m, d, _ar1_by_arm)
    assert list(m.params.index[-4:]) == ["rho(Residual[arm=0])", "var(Residual[arm=0])", "rho(Residual[arm=1])",
                                         "var(Residual[arm=1])"]
    out = str(m)
    for line in [f"{'Residual: AR(1),':<28} |", f"{'    by arm':<28} |", f"{'1: rho':>28} |", f"{'0: var(e)':>28} |"]:
        assert line in out
    for g in (2, 3):  # one subject of each arm
        V = m.marginal_cov(g)
        np.testing.assert_allclose(np.diag(V), m.params["var(_cons)"] + m.params[f"var(Residual[arm={g % 2}])"],
                                   rtol=1e-12)
    np.testing.assert_allclose(m.residual_variance(d), m.params["var(Residual[arm=0])"] * (d["arm"] == 0)
                               + m.params["var(Residual[arm=1])"] * (d["arm"] == 1), rtol=1e-12)
    Y = np.asarray(jaxhlm.simulate(m, 2, seed=1))
    batch = jaxhlm.refit_batch(m, Y.T)
    one = jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time) by(arm))", d.assign(y=Y[1]))
    assert batch.llf[1] == pytest.approx(one.llf, abs=1e-6)
    with pytest.raises(DataError, match="'x' changes within a id group"):
        jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time) by(x))", d)
    with pytest.raises(DataError, match="no id group with arm = 1 has two observations"):
        jaxhlm.mixed("y time x || id:, residuals(ar 1, t(time) by(arm))",
                     d[(d["arm"] == 0) | ~d.duplicated("id")])


def test_an_inner_level_without_random_effects_holds_the_series():
    """``|| school: || student:, noconstant``: schools' random intercepts, the residuals correlated within each
    student (AR(1) by ML, unstructured by REML), as nlme's ``random = ~ 1 | school`` with the correlation's groups
    ``school/student``; the report lists the students' level as (empty)."""
    d = pd.read_csv(FIXTURES / "ar1_three.csv")
    for name, rspec in [("school_ar1_ml", "ar 1"), ("school_unstructured_reml", "unstructured")]:
        ref = REF[name]
        m = jaxhlm.mixed(f"y time x || school: || student:, noconstant residuals({rspec}, t(time))"
                         + (" reml" if ref["reml"] else ""), d)
        assert m.converged and m.design.n_groups == 20 and m.design.n_clusters == 160
        assert m.llf == pytest.approx(ref["loglik"], abs=1e-7) and m.llf >= ref["loglik"] - 1e-9
        first = [m.design.constant, "time", "x"]
        np.testing.assert_allclose(m.fe_params[first], ref["beta"], rtol=1e-6)
        # nlme stops 4-9e-8 short in log likelihood (jaxhlm's gradient there: 1e-9), 6e-5 away in the 20 schools'
        # variance, which moves the constant's SE by 3e-5.
        np.testing.assert_allclose(m.bse_fe[first], ref["se"], rtol=5e-5)
        assert m.params["var(_cons)"] == pytest.approx(ref["var_intercept"], rel=1e-4)
        out = str(m)
        assert f"{'student:':<20}{'(empty)':>8} |" in out and "school: Identity" in out
        assert "        student |        160          2        4.8          6" in out  # Stata's group table
    V = m.marginal_cov(1)
    student = d.loc[V.index, "student"].to_numpy()
    np.testing.assert_allclose(V.to_numpy()[student[:, None] != student[None, :]], m.params["var(_cons)"], rtol=1e-12)
    # draws from it share the school's intercept across its students and the unstructured residuals within each
    Y = np.asarray(jaxhlm.simulate(m, 20000, seed=5))
    rows = d.index.get_indexer(V.index)
    np.testing.assert_allclose(np.cov(Y[:, rows], rowvar=False), V.to_numpy(), atol=0.2)
    one = jaxhlm.mixed("y time x || school: || student:, noconstant reml residuals(unstructured, t(time))",
                       d.assign(y=Y[0]))
    assert jaxhlm.refit_batch(m, Y[:1].T).llf[0] == pytest.approx(one.llf, abs=1e-6)


def test_profile_interval_of_a_residual_covariance_ends_where_the_dense_profile_crosses_the_cut(fits):
    """cov(e) of exchangeable residuals: at each endpoint c the dense likelihood maximised over var(e) (the
    correlation c/var(e) following; β by GLS) lies χ²₁(0.95)/2 below the maximum."""
    from scipy import optimize, stats

    m = fits["exchangeable_ml"]
    d = _data()
    ends = m.conf_int(method="profile").loc["cov(Residual)"].to_numpy()
    wald = m.conf_int().loc["cov(Residual)"].to_numpy()
    assert ends[0] < m.params["cov(Residual)"] < ends[1] and not np.allclose(ends, wald, rtol=1e-3)
    cut = m.llf - 0.5 * stats.chi2.ppf(0.95, 1)
    for c in ends:
        low = 0.5 * np.log(c) + 1e-6  # var(e) > cov(e)
        best = optimize.minimize_scalar(
            lambda ls: -_dense(d, lambda s, t: np.where(s == t, np.exp(2 * ls), c))[0], bounds=(low, low + 3),
            method="bounded", options={"xatol": 1e-10})
        assert -best.fun == pytest.approx(cut, abs=1e-6)

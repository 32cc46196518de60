"""A residual variance per stratum: Stata's ``residuals(independent, by(var))``, ``fit(..., residuals_by=)``.

Reference values: tests/fixtures/residuals_by_reference.json, written by tests/fixtures/residuals_by_reference.R
(``Rscript tests/fixtures/residuals_by_reference.R``; nlme and lme4 versions in the JSON): ``nlme::lme`` with
``weights = varIdent(form = ~ 1 | var)`` (HSB by sector, ML; sleepstudy in three periods, ML), and for HSB's random
slope by female (REML), where nlme stops 5.6e-4 short of the optimum, lme4 with precision weights on one stratum
and the ratio optimised; the linear model with the same residual variances (``gls``), BLUPs, and nlme's ``apVar``
(a numerical Hessian).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError, JaxhlmError
from jaxhlm.dofile import Session
from finite_differences import differences, gls_loglik, lr_vs_ols

FIXTURES = Path(__file__).parent / "fixtures"
REF = {f["name"]: f for f in json.loads((FIXTURES / "residuals_by_reference.json").read_text())["fits"]}
FORMULAS = {"hsb_intercept_ml": "mathach ~ ses + sector + (1 | id)",
            "hsb_slope_reml": "mathach ~ ses * sector + (1 + ses | id)",
            "sleep_three_strata_ml": "Reaction ~ Days + (1 | Subject)",
            "three_level_by_female_ml": "score ~ ses + (1 | school/class)"}


def _sleep() -> pd.DataFrame:
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    return sleep.assign(period=pd.cut(sleep["Days"], [-1, 2, 5, 9], labels=["a", "b", "c"]).astype(str))


DATA = {"hsb": jaxhlm.datasets.hsb, "sleepstudy": _sleep,
        "three_level": lambda: pd.read_csv(FIXTURES / "three_level.csv")}


@pytest.fixture(scope="module")
def fits():
    return {name: jaxhlm.fit(FORMULAS[name], DATA[ref["data"]](), reml=ref["reml"], residuals_by=ref["by"])
            for name, ref in REF.items()}


@pytest.mark.parametrize("name", list(REF))
def test_matches_nlme(fits, name):
    ref, m = REF[name], fits[name]
    assert m.converged
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-9)
    np.testing.assert_allclose(m.fe_params, ref["beta"], rtol=1e-7)
    np.testing.assert_allclose(m.bse_fe, ref["se"], rtol=1e-6)
    q = len(m.design.re_names)
    # One level: the intercept first, as R orders the effects (Stata: last); two nested levels: the outer first.
    first = [q - 1] + list(range(q - 1)) if m.design.inner is None else list(range(q))
    np.testing.assert_allclose(m.cov_re.to_numpy()[np.ix_(first, first)], ref["cov_re"], rtol=1e-5)
    k = len(ref["strata"])
    assert list(m.design.strata_labels.astype(str)) == ref["strata"]
    # Log likelihoods agree to 1e-10 (jaxhlm's the higher); sleepstudy's three residual variances, from 60
    # observations each, are pinned by so flat a likelihood that nlme's stop leaves them 2.4e-6 (relative) apart.
    np.testing.assert_allclose(m.random_effects.estimate[-k:], ref["residual_variance"], rtol=1e-5)
    assert list(m.params.index[-k:]) == [f"var(Residual[{ref['by']}={v}])" for v in m.design.strata_labels]
    # Stata's LR test vs. linear model: against the linear regression (one residual variance), on the random
    # effects' parameters and the strata's variances beyond the first (chi2(7) in a published Stata log of an
    # unstructured 3×3 with two strata)
    assert m.lr_linear.statistic == pytest.approx(lr_vs_ols(m), abs=2e-6)
    assert m.lr_linear.df == m.random_effects.estimate.size - 1
    assert m.df_modelwc == len(ref["beta"]) + m.random_effects.estimate.size
    if m.design.inner is not None:  # a three-level model's BLUPs: test_three_level_stata_syntax
        return
    blups = m.ranef()
    np.testing.assert_allclose(blups.loc[[type(blups.index[0])(g) for g in ref["groups"]]].to_numpy()[:, first],
                               ref["blups"], rtol=2e-5, atol=1e-6)


def _dense(hsb: pd.DataFrame, phi: np.ndarray) -> tuple[float, np.ndarray]:
    """The ML log likelihood (β by GLS) and (XᵀV⁻¹X)⁻¹ of ``mathach ~ ses + sector + (1 | id)`` with a residual
    variance per sector at φ = (ln sd, ln σ₁, ln σ₂), written with each school's V = σ_b²11ᵀ + diag(σₛ²), rows and
    all: no sufficient statistics, no autodiff."""
    X = np.column_stack([np.ones(len(hsb)), hsb["ses"], hsb["sector"]])
    y, sector = hsb["mathach"].to_numpy(), hsb["sector"].to_numpy()
    schools = [np.flatnonzero(hsb["id"].to_numpy() == g) for g in np.unique(hsb["id"])]
    s2 = np.exp(2 * np.where(sector == 1, phi[2], phi[1]))
    V = [np.exp(2 * phi[0]) + np.diag(s2[i]) for i in schools]
    return gls_loglik(X, y, schools, V)


def test_marginal_covariance(fits):
    """Each school's V = σ_b²11ᵀ + diag(σₛ²) at the estimates; crossed factors have no independent groups."""
    hsb = jaxhlm.datasets.hsb()
    m = fits["hsb_intercept_ml"]
    V = m.marginal_cov(hsb["id"].iloc[0])
    s2 = np.where(hsb.loc[V.index, "sector"] == 1, *m.random_effects.estimate[[2, 1]])
    np.testing.assert_allclose(V.to_numpy(), m.random_effects.estimate[0] + np.diag(s2), rtol=1e-12)
    crossed = jaxhlm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", jaxhlm.datasets.penicillin())
    with pytest.raises(JaxhlmError, match="no independent groups"):
        crossed.marginal_cov()


def test_information_and_satterthwaite_match_finite_differences_of_a_dense_likelihood(fits):
    """The variance parameters' covariance (inverse information in φ) against central second differences of the
    dense log likelihood, and Satterthwaite's degrees of freedom 2 Var(β̂ₖ)² / (gᵀ Cov(φ̂) g) with g the central
    differences of the dense Var(β̂ₖ) in φ."""
    hsb = jaxhlm.datasets.hsb()
    m = fits["hsb_intercept_ml"]
    re = m.random_effects
    H, dC = differences(lambda phi: _dense(hsb, phi), re.phi)
    ll, cov_beta = _dense(hsb, re.phi)
    assert ll == pytest.approx(m.llf, abs=1e-8)
    np.testing.assert_allclose(re.phi_cov, np.linalg.inv(-H), rtol=1e-4, atol=1e-10)
    want = 2 * np.diag(cov_beta) ** 2 / np.einsum("ka,ab,kb->k", dC, re.phi_cov, dC)
    np.testing.assert_allclose(m.satterthwaite()["df"], want, rtol=1e-4)
    # A model fitted with dfmethod(satterthwaite) reports the same, Kenward and Roger's is refused.
    stata = jaxhlm.mixed("mathach ses sector || id:, residuals(independent, by(sector)) reml dfmethod(satt)", hsb)
    assert stata.ddf is not None and np.all(stata.ddf > 100) and "DF method: Satterthwaite" in str(stata)
    with pytest.raises(JaxhlmError, match="one residual variance"):
        jaxhlm.mixed("mathach ses sector || id:, residuals(independent, by(sector)) reml dfmethod(kroger)", hsb)


def test_profile_intervals_end_where_the_dense_profile_crosses_the_cut(fits):
    """Each endpoint c of a variance's profile interval: the dense likelihood maximised over the other variance
    parameters (β by GLS) with that variance held at c lies χ²₁(0.95)/2 below the maximum. A REML fit's profile is
    of its ML likelihood (as lme4's), so it equals the ML refit's."""
    from scipy import optimize, stats

    hsb = jaxhlm.datasets.hsb()
    m = fits["hsb_intercept_ml"]
    ci = m.conf_int(method="profile")
    lsd, ls1, ls2 = m.random_effects.phi
    ll_hat = _dense(hsb, m.random_effects.phi)[0]
    for label, side, to_phi, x0 in [
        ("var(_cons)", "lower", lambda x, c: [0.5 * np.log(c), x[0], x[1]], [ls1, ls2]),
        ("var(Residual[sector=0])", "lower", lambda x, c: [x[0], 0.5 * np.log(c), x[1]], [lsd, ls2]),
        ("var(Residual[sector=1])", "upper", lambda x, c: [x[0], x[1], 0.5 * np.log(c)], [lsd, ls1]),
    ]:
        c = ci.loc[label, side]
        best = optimize.minimize(lambda x: -_dense(hsb, np.array(to_phi(x, c)))[0], x0, method="BFGS")
        assert 2 * (ll_hat + best.fun) == pytest.approx(stats.chi2.ppf(0.95, 1), abs=1e-6), label
    reml = fits["hsb_slope_reml"]
    np.testing.assert_allclose(reml.conf_int(method="profile"), reml.refit_ml().conf_int(method="profile"),
                               rtol=1e-7)
    sd = reml.varcorr(method="profile")  # corr(ses,_cons) is at +1 here: its own upper endpoint
    assert sd.loc["corr(ses,_cons)", "estimate"] == sd.loc["corr(ses,_cons)", "ci_upper"] == 1.0
    residual = sd.filter(like="Residual", axis=0)
    assert np.all(residual["ci_lower"] < residual["estimate"]) and np.all(residual["estimate"] < residual["ci_upper"])


def test_stata_syntax_report_and_do_file():
    hsb = jaxhlm.datasets.hsb()
    m = jaxhlm.mixed("mathach ses i.sector || id:, residuals(independent, by(sector))", hsb)
    ref = REF["hsb_intercept_ml"]
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-7)
    text = str(m)
    assert ("-----------------------------+------------------------------------------------\n"
            "Residual: Independent,       |\n"
            "    by sector                |\n"
            "                   0: var(e) |   40.29306   .9572108      38.45997    42.21353\n"
            "                   1: var(e) |   33.67795   .8120796      32.12333    35.30781\n") in text
    assert f"LR test vs. linear model: chi2(2) = {lr_vs_ols(m):.2f}" in text
    sd = str(jaxhlm.mixed("mathach ses i.sector || id:, res(ind, by(sector)) stddeviations", hsb))
    assert "                    0: sd(e) |   6.347682" in sd
    assert jaxhlm.mixed("mathach ses || id:, residuals(independent)", hsb).random_effects.n_residual == 1
    # A do-file: the fit, a comparison with one residual variance, and standardized residuals by stratum.
    session = Session(hsb)
    out = [session.run(*line.partition(" ")[::2]) for line in [
        "mixed mathach ses i.sector || id:", "estimates store one",
        "mixed mathach ses i.sector || id:, residuals(independent, by(sector))", "lrtest one .",
        "predict r, rstandard", "predict e, residuals"]]
    assert "LR chi2(1) =" in out[3]
    s2 = session.data["sector"].map({0: 40.293065, 1: 33.677952})
    np.testing.assert_allclose(session.data["r"], session.data["e"] / np.sqrt(s2), rtol=1e-5)


def test_three_level_stata_syntax(fits):
    """Stata's reading of nested levels (classes numbered within schools) fits the model nlme fits by school/class."""
    m = jaxhlm.mixed("score ses || school: || class:, residuals(independent, by(female))", DATA["three_level"]())
    ref = fits["three_level_by_female_ml"]
    assert m.llf == pytest.approx(REF["three_level_by_female_ml"]["loglik"], abs=1e-9)
    np.testing.assert_allclose(m.fe_params[["_cons", "ses"]], ref.fe_params[["Intercept", "ses"]], rtol=1e-8)
    np.testing.assert_allclose(m.random_effects.estimate, ref.random_effects.estimate, rtol=1e-7)
    np.testing.assert_allclose(m.random_effects.se, ref.random_effects.se, rtol=1e-7)
    np.testing.assert_allclose(m.ranef(1).to_numpy(), ref.ranef(1).to_numpy(), rtol=1e-7, atol=1e-9)
    assert "Residual: Independent,       |\n    by female" in str(m)


def test_comparisons_and_refits(fits):
    hsb = jaxhlm.datasets.hsb()
    one = jaxhlm.fit(FORMULAS["hsb_intercept_ml"], hsb)
    het = fits["hsb_intercept_ml"]
    lr = jaxhlm.lrtest(one, het)
    assert lr.df == 1 and lr.statistic == pytest.approx(2 * (het.llf - one.llf))
    assert 2 * (het.llf - one.llf) > 10  # the sectors' residual variances differ (40.3 vs 33.7)
    refit = fits["hsb_slope_reml"].refit_ml()
    assert not refit.reml and refit.random_effects.n_residual == 2
    # Leaving out the last random term leaves the linear model with the strata's two residual variances.
    ra = jaxhlm.ranova(het).table
    assert ra.loc["(1 | id)", "npar"] == 3 + 2 and ra.loc["(1 | id)", "Df"] == 1
    # ranova's model without the random effects keeps the strata's variances (nlme's gls)
    assert ra.loc["(1 | id)", "LRT"] == pytest.approx(2 * (het.llf - REF["hsb_intercept_ml"]["loglik_linear"]),
                                                      abs=2e-6)
    assert ra.loc["(1 | id)", "logLik"] == pytest.approx(REF["hsb_intercept_ml"]["loglik_linear"], abs=1e-8)
    drop = jaxhlm.drop1(het).table
    assert drop.loc["sector", "LRT"] == pytest.approx(
        2 * (het.llf - jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, residuals_by="sector").llf))


def test_data_in_chunks_and_weights(fits):
    hsb = jaxhlm.datasets.hsb()
    ref = fits["hsb_intercept_ml"]
    # Chunks that each lack one sector's rows of some schools: each stratum's statistics still line up.
    chunks = [hsb.iloc[:2500], hsb.iloc[2500:5000], hsb.iloc[5000:]]
    chunked = jaxhlm.fit(FORMULAS["hsb_intercept_ml"], iter(chunks), residuals_by="sector")
    assert chunked.llf == pytest.approx(ref.llf, abs=1e-8)
    np.testing.assert_allclose(chunked.params, ref.params, rtol=1e-8)
    # Precision weights divide each row's residual variance within its stratum (σₛ²/wᵢ): weights of 2 everywhere
    # double every stratum's σₛ² for the same data, leave the rest and the log likelihood as they were.
    weighted = jaxhlm.fit(FORMULAS["hsb_intercept_ml"], hsb.assign(w=2.0), residuals_by="sector", weights="w")
    np.testing.assert_allclose(weighted.random_effects.estimate[-2:], ref.random_effects.estimate[-2:] * 2, rtol=1e-7)
    np.testing.assert_allclose(weighted.fe_params, ref.fe_params, rtol=1e-8)
    assert weighted.llf == pytest.approx(ref.llf, abs=1e-7)
    # Frequency weights: the fit of the expanded rows.
    f = np.where(hsb.index % 3 == 0, 2, 1)
    expanded = jaxhlm.fit(FORMULAS["hsb_intercept_ml"], hsb.loc[hsb.index.repeat(f)], residuals_by="sector")
    counted = jaxhlm.fit(FORMULAS["hsb_intercept_ml"], hsb.assign(f=f), residuals_by="sector", freq_weights="f")
    assert counted.llf == pytest.approx(expanded.llf, abs=1e-7)
    np.testing.assert_allclose(counted.params, expanded.params, rtol=1e-7)


def test_listwise_deletion_and_refusals(fits):
    hsb = jaxhlm.datasets.hsb()
    gappy = hsb.assign(sector=hsb["sector"].where(hsb.index % 11 != 0))
    m = jaxhlm.fit("mathach ~ ses + (1 | id)", gappy, residuals_by="sector")
    assert m.nobs == len(hsb) - len(hsb.index[::11]) and "dropped because of missing values" in " ".join(m.design.notes)
    het = fits["hsb_intercept_ml"]
    for call, words in [(lambda: het.conf_int(method="bootstrap", B=10), "bootstrap intervals"),
                        (lambda: het.varcorr(method="bootstrap", B=10), "bootstrap intervals"),
                        (het.icc, "intraclass"), (het.r2, "R²")]:
        with pytest.raises(JaxhlmError, match=words):
            call()
    with pytest.raises(DataError, match="residual variance per stratum"):
        jaxhlm.simulate(het, 3)
    with pytest.raises(DataError, match="'sample' is crossed with 'plate'"):
        jaxhlm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", jaxhlm.datasets.penicillin(), residuals_by="plate")
    with pytest.raises(DataError, match="one value in the sample"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb[hsb["sector"] == 1], residuals_by="sector")
    with pytest.raises(DataError, match="the random intercept of id adds the same amount"):
        jaxhlm.mixed("mathach ses || id:, residuals(exchangeable)", hsb)
    with pytest.raises(FormulaError, match="nosuch"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, residuals_by="nosuch")
    with pytest.raises(FormulaError, match=r"residuals\(ind, by\(sector female\)\): the options are by"):
        jaxhlm.mixed("mathach ses || id:, residuals(ind, by(sector female))", hsb)
    # An array of strata, one per row, as weights may be given.
    as_array = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", hsb, residuals_by=hsb["sector"].to_numpy())
    assert as_array.llf == pytest.approx(het.llf, abs=1e-9)
    with pytest.raises(DataError, match="one value per row"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, residuals_by=np.zeros(3))


def test_command_line(fits, capsys):
    from jaxhlm.cli import main

    assert main(["fit", FORMULAS["hsb_intercept_ml"], "--residuals-by", "sector", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["llf"] == pytest.approx(fits["hsb_intercept_ml"].llf, abs=1e-9)
    assert out["random"]["var(Residual[sector=1])"]["estimate"] == pytest.approx(33.677952, rel=1e-6)

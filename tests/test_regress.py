"""Linear regression: Stata's ``regress`` (jaxhlm.regress, the do-file's regress), models without random effects
(``mixed y x``, ``y ~ x``) and ``dfmethod(residual)``.

References: tests/fixtures/regress_reference.json, from R's lm and the sandwich package's HC1 and CR1 covariances
(Stata's vce(robust) and vce(cluster) after regress); the command that wrote it heads
tests/fixtures/regress_reference.R.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import jaxhlm
from jaxhlm import ComparisonError, FormulaError, JaxhlmError
from jaxhlm.results import Regression

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "regress_reference.json").read_text())

#: the fixture's models in Stata syntax, and the order of R's coefficients in jaxhlm's
MODELS = {
    "ses_sector": ("mathach ses i.sector", ["ses", "1.sector", "_cons"], ["ses", "sector1", "(Intercept)"]),
    "interaction": ("mathach i.sector##c.ses female", ["1.sector", "ses", "1.sector#c.ses", "female", "_cons"],
                    ["sector1", "ses", "sector1:ses", "female", "(Intercept)"]),
    "noconstant": ("mathach ses i.sector, noconstant", ["ses", "1.sector"], ["ses", "sector1"]),
}


def _reference(name: str, key: str) -> np.ndarray:
    ref = REFERENCE[name]
    order = [ref["names"].index(n) for n in MODELS[name][2]]
    return np.asarray(ref[key])[order]


@pytest.fixture(scope="module")
def fits(hsb):
    return {name: jaxhlm.regress(command, hsb) for name, (command, _, _) in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_regress_matches_lm(fits, name):
    r, ref = fits[name], REFERENCE[name]
    assert isinstance(r, Regression)
    assert list(r.fe_params.index) == MODELS[name][1]
    np.testing.assert_allclose(r.fe_params, _reference(name, "coef"), rtol=1e-9)
    np.testing.assert_allclose(r.bse_fe, _reference(name, "se"), rtol=1e-8)
    np.testing.assert_allclose(r.tvalues, _reference(name, "t"), rtol=1e-8)
    assert r.df_r == ref["df_r"] and r.df_model == ref["df_m"]
    assert r.wald.statistic == pytest.approx(ref["F"], rel=1e-8)
    assert (r.wald.df, r.wald.ddf) == (ref["df_m"], ref["df_r"])
    assert math.sqrt(r.mse_resid) == pytest.approx(ref["sigma"], rel=1e-9)
    assert r.rsquared == pytest.approx(ref["r2"], rel=1e-9)
    assert r.rsquared_adj == pytest.approx(ref["r2_adj"], rel=1e-9)
    assert r.ssr == pytest.approx(ref["rss"], rel=1e-9)
    assert r.llf == pytest.approx(ref["ll"], abs=1e-6)  # Stata's e(ll): the ML log likelihood
    # e(rank) = k: regress counts no variance parameter in estat ic (R's AIC counts sigma, one more)
    k = len(MODELS[name][1])
    assert r.df_modelwc == k and r.aic == pytest.approx(-2 * ref["ll"] + 2 * k, abs=1e-5)
    if name != "noconstant":
        assert r.centered_tss == pytest.approx(ref["tss"], rel=1e-9)
        assert r.llf_null == pytest.approx(ref["ll_0"], abs=1e-6)
        e = r.e_scalars
        assert (e["N"], e["rank"], e["mss"]) == (7185.0, float(k), pytest.approx(ref["tss"] - ref["rss"], rel=1e-9))
    else:
        assert math.isnan(r.llf_null)


@pytest.mark.parametrize("name", ["ses_sector", "interaction"])
@pytest.mark.parametrize("vce, key, clusters", [("vce(robust)", "hc1", None), ("vce(cluster id)", "cl", 160)])
def test_regress_robust_matches_sandwich(hsb, name, vce, key, clusters):
    """HC1 and CR1: Stata's vce(robust) and vce(cluster id) after regress, t tests on N − k and G − 1."""
    command = MODELS[name][0] + ", " + vce
    r = jaxhlm.regress(command, hsb)
    np.testing.assert_allclose(r.bse_fe, _reference(name, f"{key}_se"), rtol=1e-7)
    assert r.wald.statistic == pytest.approx(REFERENCE[name][f"{key}_F"], rel=1e-7)
    df_r = REFERENCE[name]["df_r"] if clusters is None else clusters - 1
    assert r.df_r == df_r and r.wald.ddf == df_r
    assert r.lincom("ses").df == df_r
    # the fit itself is least squares whatever the standard errors
    np.testing.assert_allclose(r.fe_params, _reference(name, "coef"), rtol=1e-9)
    assert r.rsquared == pytest.approx(REFERENCE[name]["r2"], rel=1e-9)


def test_regress_layout(fits):
    """Stata's regress output: the analysis-of-variance table beside the fit statistics, each line 78 wide."""
    lines = str(fits["ses_sector"]).splitlines()
    assert lines[0] == "      Source |       SS           df       MS      Number of obs   =     7,185"
    assert lines[1] == "-------------+----------------------------------   F(2, 7182)      =    629.83"
    assert lines[2] == "       Model |   50715.916         2   25357.958   Prob > F        =    0.0000"
    assert lines[3] == "    Residual |  289161.019     7,182  40.2619074   R-squared       =    0.1492"
    assert lines[4] == "-------------+----------------------------------   Adj R-squared   =    0.1490"
    assert lines[5] == "       Total |  339876.935     7,184  47.3102637   Root MSE        =    6.3452"
    assert lines[6] == "" and lines[8] == "     mathach | Coefficient  Std. err.      t    P>|t|     [95% conf. interval]"
    assert lines[10] == "         ses |   2.948558   .0978306    30.14   0.000     2.756781    3.140334"


def test_regress_robust_layout(hsb):
    """With robust standard errors: the statistics alone under "Linear regression", and the clusters named."""
    lines = str(jaxhlm.regress("mathach ses i.sector, cluster(id)", hsb)).splitlines()
    assert lines[:5] == [
        "Linear regression                               Number of obs     =      7,185",
        "                                                F(2, 159)         =     354.53",
        "                                                Prob > F          =     0.0000",
        "                                                R-squared         =     0.1492",
        "                                                Root MSE          =     6.3452",
    ]
    assert lines[6] == "(Std. err. adjusted for 160 clusters in id)".rjust(78)
    assert lines[8] == "             |               Robust"
    robust = str(jaxhlm.regress("mathach ses i.sector, r", hsb)).splitlines()
    assert robust[1].endswith("F(2, 7182)        =     720.11") and "adjusted" not in robust[6]


def test_mixed_without_random_effects(hsb, fits):
    """``mixed y x`` and ``y ~ x``: the regression by ML (σ̂² = RSS/N) or REML (RSS/(N − k)), no groups."""
    ref = REFERENCE["ses_sector"]
    ml = jaxhlm.mixed("mathach ses i.sector", hsb)
    assert ml.spec.linear and ml.llf == pytest.approx(ref["ll"], abs=1e-6)
    np.testing.assert_allclose(ml.fe_params, _reference("ses_sector", "coef"), rtol=1e-9)
    assert ml.scale == pytest.approx(ref["rss"] / 7185, rel=1e-9)
    assert ml.df_modelwc == 4 and ml.lr_linear.df == 0  # the residual variance counts; nothing to test it against
    reml = jaxhlm.mixed("mathach ses i.sector, reml", hsb)
    assert reml.scale == pytest.approx(ref["sigma"] ** 2, rel=1e-9)
    np.testing.assert_allclose(reml.bse_fe, _reference("ses_sector", "se"), rtol=1e-8)
    formula = jaxhlm.fit("mathach ~ ses + C(sector)", hsb)
    assert formula.spec.linear and formula.llf == pytest.approx(ref["ll"], abs=1e-6)
    text = str(ml).splitlines()
    assert text[1:4] == ["Mixed-effects ML regression                     Number of obs     =      7,185",
                         "                                                Wald chi2(2)      =    1260.18",
                         "Log likelihood = -23469.318                     Prob > chi2       =     0.0000"]
    assert "(empty)" not in str(ml) and "LR test vs. linear" not in str(ml)
    # the random-intercept model against it: the LR test the mixed output prints, on the variance's one df
    ri = jaxhlm.mixed("mathach ses i.sector || id:", hsb)
    lr = jaxhlm.lrtest(ri, ml)
    assert lr.df == 1 and lr.statistic == pytest.approx(ri.lr_linear.statistic, abs=1e-6)
    assert jaxhlm.anova(formula, jaxhlm.fit("mathach ~ ses + C(sector) + (1 | id)", hsb)).table["Chisq"].iloc[1] == \
        pytest.approx(lr.statistic, abs=1e-6)
    # regress and mixed: different estimators, compared only with force, on regress's e(rank)
    with pytest.raises(ComparisonError, match="different estimators: mixed vs. regress; .* force"):
        jaxhlm.lrtest(ri, fits["ses_sector"])
    forced = jaxhlm.lrtest(ri, fits["ses_sector"], force=True)
    assert forced.df == 2 and forced.statistic == pytest.approx(lr.statistic, abs=1e-6)


def test_without_random_effects_refusals(hsb):
    ml = jaxhlm.mixed("mathach ses", hsb)
    for call, what in ((ml.icc, "the intraclass correlation"), (ml.group_info, "estat group"),
                       (ml.ranef, "predicted random effects"), (ml.recovariance, "estat recovariance")):
        with pytest.raises(JaxhlmError, match=f"^{what} needs random effects, and this model has none"):
            call()
    with pytest.raises(FormulaError, match="ar residuals are correlated within groups, and a model without random"):
        jaxhlm.mixed("mathach ses, residuals(ar 1, t(ses))", hsb)
    by = jaxhlm.mixed("mathach ses, residuals(independent, by(sector))", hsb)  # a variance per sector
    assert by.random_effects.n_residual == 2 and by.lr_linear.df == 1
    for command, words in (("mathach ses || id:", "regress fits no random effects"),
                           ("mathach ses [aw=size]", "frequency weights only"),
                           ("mathach ses, reml", "option reml not allowed; regress accepts noconstant")):
        with pytest.raises(FormulaError, match=words):
            jaxhlm.regress(command, hsb)
    for command, data in (("mathach ses mathach", hsb), ("y ses || id:", hsb.assign(y=2 * hsb["ses"] + 1))):
        with pytest.raises(jaxhlm.DataError, match="is an exact linear function of the fixed effects"):
            (jaxhlm.regress if "||" not in command else jaxhlm.mixed)(command, data)
    with pytest.raises(JaxhlmError, match="dfmethod 'satterthwaite' is for mixed models"):
        jaxhlm.regress("mathach ses", hsb).test("ses", dfmethod="satterthwaite")


def test_dfmethod_residual(hsb):
    """Stata's dfmethod(residual): every t and F test on N − rank(X) degrees of freedom."""
    r = jaxhlm.mixed("mathach i.sector##c.ses || id:, reml dfmethod(residual)", hsb)
    assert np.all(r.ddf == 7185 - 4)
    test = r.test(["1.sector = 0", "ses = 0"])
    W = r.test(["1.sector = 0", "ses = 0"], large_sample=True).statistic
    assert (test.df, test.ddf) == (2, 7181) and test.statistic == pytest.approx(W / 2, rel=1e-12)
    lc = r.lincom("ses + 1.sector#c.ses")
    assert lc.df == 7181 and lc.dfmethod == "residual"
    assert "DF method: Residual" in str(r)
    # the variance components play no part: a boundary fit has them too
    assert jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, reml=True, dfmethod="residual").ddf[0] == 7183


def test_regress_dofile(hsb):
    out = jaxhlm.run_do("\n".join([
        "regress mathach ses i.sector",
        "estimates store ols",
        "estat ic",
        "test 1.sector",
        "lincom ses + 1.sector",
        "margins sector",
        "predict yhat",
        "predict e, res",
        "capture noisily predict f, fitted",
        "capture noisily mixed",
        "regress",
        "mixed mathach ses i.sector || id:",
        "estimates store ri",
        "capture noisily lrtest ri ols",
        "lrtest ri ols, force",
        "estimates table ols ri",
        "summarize e",
    ]), data=hsb)
    assert "         ols |      7,185          .  -23469.32       3   46944.64   46965.28" in out
    assert " ( 1)  1.sector = 0\n\n       F(  1,  7182) =  161.01\n            Prob > F =    0.0000" in out
    assert " ( 1)  ses + 1.sector = 0" in out and "[mathach]" not in out.split(". margins")[0]
    assert "Model VCE: OLS\n\nExpression: Linear prediction, predict()" in out
    assert "predict, fitted is not available after regress here" in out
    assert "mixed replays its own results, and the active ones are regress's" in out
    assert out.count("      Source |       SS           df       MS") == 2
    assert "test involves different estimators: mixed vs. regress" in out
    assert " LR chi2(2) = 332.20" in out
    table = out.split(". estimates table ols ri")[1]
    assert "lnsig_e" in table and table.count("1.8059018") == 1  # ri's ln sigma; ols has no variance equation
    e = float(out.split("           e |      7,185")[1].split()[0])
    assert abs(e) < 1e-6  # least-squares residuals sum to zero


def test_capture_noisily(hsb):
    out = jaxhlm.run_do("capture noisily regress mathach nothere\nnoisily display 1 + 1\ncapture regress mathach nothere",
                        data=hsb)
    assert "nothere" in out.split(". noisily")[0] and out.count("nothere") == 3  # two echoes and one message
    assert ". noisily display 1 + 1\n2" in out


def test_regress_beta(hsb):
    """regress's beta: b·sd(x)/sd(y) in the intervals' place, the constant's missing (pandas' standard deviations
    of the indicator and product columns as the reference)."""
    r = jaxhlm.regress("mathach ses i.sector c.ses#i.sector, beta", hsb)
    columns = {"ses": hsb["ses"], "1.sector": hsb["sector"], "1.sector#c.ses": hsb["ses"] * hsb["sector"]}
    for name, x in columns.items():
        assert r.standardized[name] == pytest.approx(r.fe_params[name] * x.std() / hsb["mathach"].std(), rel=1e-10)
    assert math.isnan(r.standardized["_cons"])
    lines = str(r).splitlines()
    assert lines[8] == "     mathach | Coefficient  Std. err.      t    P>|t|                     Beta"
    assert lines[10] == "         ses |   3.459632   .1331325    25.99   0.000                 .3920014"
    assert lines[16] == "       _cons |   11.86764   .1066915   111.23   0.000                        ."


def test_bootstrap_of_the_random_intercept_against_the_linear_model(hsb):
    """The parametric bootstrap of the LR test vs. the linear model (the boundary test Stata's chibar2(01)
    approximates): the null is a model without random effects, whose groups (its rows) differ from the bigger
    model's. Each replicate equals single fits on the same draw; the closed-form ML regression is the small one."""
    lin, ri = jaxhlm.mixed("mathach ses", hsb), jaxhlm.mixed("mathach ses || id:", hsb)
    boot = jaxhlm.bootstrap_lrtest(lin, ri, B=200, seed=4, progress=False)
    assert boot.failed == 0 and boot.df == 1 and boot.chibar_pvalue is not None
    assert boot.statistic == pytest.approx(ri.lr_linear.statistic, abs=1e-6)
    assert np.all(boot.replicates >= 0) and 0.4 < np.mean(boot.replicates < 1e-6) < 0.75
    Y = np.asarray(jaxhlm.simulate(lin, 3, seed=4)).T  # the same draws as replicates 0..2
    X = np.column_stack([hsb["ses"], np.ones(len(hsb))])
    for r in range(3):
        resid = Y[:, r] - X @ np.linalg.lstsq(X, Y[:, r], rcond=None)[0]
        n = len(resid)
        assert boot.small_fits.llf[r] == pytest.approx(-0.5 * n * (1 + np.log(2 * np.pi * resid @ resid / n)), abs=1e-6)
        big = jaxhlm.mixed("mathach ses || id:", hsb.assign(mathach=Y[:, r]))
        assert boot.big_fits.llf[r] == pytest.approx(max(big.llf, boot.small_fits.llf[r]), abs=1e-6)


def test_regress_command_line(capsys):
    from jaxhlm.cli import main

    assert main(["regress", "mathach ses i.sector, vce(cluster id)"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Linear regression") and "(Std. err. adjusted for 160 clusters in id)" in out
    assert main(["regress", "mathach ses", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "regress" and doc["ngroups"] == 0 and doc["groups"] == {} and doc["clusters"] is None
    assert doc["e"]["df_r"] == 7183 and doc["e"]["rank"] == 2 and doc["fixed"]["ses"]["df"] == 7183
    assert main(["regress", "mathach ses || id:"]) == 2
    assert "regress fits no random effects" in capsys.readouterr().err


def test_regression_diagnostics(hsb):
    """estat vif, estat hettest and predict's leverage, rstandard, rstudent and cooksd after regress, against car,
    lmtest and R's influence measures (the fixture's diagnostics)."""
    ref = REFERENCE["diagnostics"]
    r = jaxhlm.regress("mathach ses meanses female", hsb)
    vif = r.vif()
    for name, value in ref["vif"].items():
        assert vif[name] == pytest.approx(value, rel=1e-9)
    for key, kwargs in (("bp", {}), ("bp_iid", {"iid": True}), ("bp_vars", {"variables": ["ses", "female"]}),
                        ("bp_rhs", {"rhs": True})):
        test = r.hettest(**kwargs)
        assert test.statistic == pytest.approx(ref[key]["chi2"], rel=1e-9) and test.df == ref[key]["df"]
        assert test.pvalue == pytest.approx(ref[key]["p"], rel=1e-7)
    diag = r.diagnostics()
    for ours, theirs in (("leverage", "hat"), ("rstandard", "rstandard"), ("rstudent", "rstudent"), ("cooksd", "cooksd")):
        np.testing.assert_allclose(diag[ours].to_numpy()[:20], ref[theirs]["head"], rtol=1e-8)
        assert diag[ours].sum() == pytest.approx(ref[theirs]["sum"], rel=1e-8, abs=1e-9)
        assert diag[ours].max() == pytest.approx(ref[theirs]["max"], rel=1e-8)
    # uncentred VIF: the diagonal of (XᵀX)⁻¹ times that of XᵀX, the constant's row included
    X = np.column_stack([hsb["ses"], hsb["meanses"], hsb["female"], np.ones(len(hsb))])
    cross = X.T @ X
    np.testing.assert_allclose(r.vif(uncentered=True), np.diag(np.linalg.inv(cross)) * np.diag(cross), rtol=1e-10)
    out = jaxhlm.run_do("regress mathach ses meanses female\nestat vif\nestat hettest\npredict d, cooksd\n"
                        "summarize d\nmixed mathach ses || id:\ncapture noisily estat vif", data=hsb)
    assert "    Variable |       VIF       1/VIF  \n-------------+----------------------\n" \
           "         ses |      1.39    0.717096\n     meanses |      1.39    0.717913" in out
    assert "    Mean VIF |      1.26" in out
    assert ("Breusch–Pagan/Cook–Weisberg test for heteroskedasticity \nAssumption: Normal error terms\n"
            "Variable: Fitted values of mathach\n\nH0: Constant variance\n\n    chi2(1) =   4.53\nProb > chi2 = 0.0333") in out
    assert "           d |      7,185    .0001373" in out
    assert "estat vif is for regress results; the active ones are mixed's" in out
    with pytest.raises(JaxhlmError, match="the centred VIF needs a constant"):
        jaxhlm.regress("mathach ses female, noconstant", hsb).vif()


def test_contrast_pwcompare_and_nlcom_after_regress(hsb):
    """After regress, Stata's single-equation layouts: contrast's F tests with one Denominator row, no equation row
    over pwcompare's terms, and nlcom's t tests on the residual df (each against its own computation here)."""
    from scipy import stats

    r = jaxhlm.regress("mathach i.sized##i.sector ses", hsb)
    c = r.contrast("sized sector")
    text = c.text().splitlines()
    assert text[4:7] == ["------------------------------------------------",
                         "             |         df           F        P>F",
                         "-------------+----------------------------------"]
    assert text[-3:-1] == ["             |", " Denominator |       7178"]
    assert "mathach" not in c.text()
    # sector's balanced effect: its effect averaged over the sizes (a scaled constraint tests the same)
    F = c.table.loc[("sector", ""), "F"]
    assert F == pytest.approx(r.test("3*1.sector + 2.sized#1.sector + 3.sized#1.sector = 0").statistic, rel=1e-9)
    pw = str(r.pwcompare("sized", mcompare="bonferroni"))
    assert "mathach" not in pw and "       sized |            3" in pw
    nl = r.nlcom("_b[ses]/_b[_cons]")
    assert nl.df == 7178
    est, se, t, p = nl.table[0, :4]
    assert t == pytest.approx(est / se) and p == pytest.approx(2 * stats.t.sf(abs(t), 7178), rel=1e-9)
    assert "      t    P>|t|" in str(nl)
    mixed = jaxhlm.mixed("mathach i.sized ses || id:", hsb)
    assert math.isinf(mixed.nlcom("_b[ses]/_b[_cons]").df) and "\nmathach      |" in mixed.contrast("sized").text()

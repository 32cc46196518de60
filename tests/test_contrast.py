"""Stata's ``contrast`` and ``pwcompare`` after ``mixed`` (:meth:`jaxhlm.MixedResult.contrast`, ``.pwcompare``):
ANOVA-style Wald tests of terms and pairwise differences of their cell margins, factors balanced; and the
multiple-comparison adjustments they and ``margins`` share.

References: tests/fixtures/pwcompare_reference.json (emmeans 1.8.4 on lme4 1.1-31 ML fits of HSB, z tests; written by
tests/fixtures/pwcompare_reference.R): emmeans' reference grid (other factors weighted equally, covariates at their
means) is Stata's asbalanced margins, its ``joint_tests`` are contrast's tests and its ``pairs(..., adjust=)`` are
pwcompare's, unadjusted and Bonferroni-, Sidak- and Scheffe-adjusted. For a model of factors (and a covariate that
interacts with none), the hypotheses are type III's too: lmerTest's type III F times its df (an ML fit: F is the Wald
statistic over its df); tests/fixtures/anova_type3_reference.json (lmerTest 3.1-3). The tables' layout is that of
published Stata 17-18 logs (``contrast agent_code``; ``pwcompare i.AgentType, effects``; ``margins agent_code,
pwcompare(effects) mcompare(bonferroni)``, whose numbers also check the Bonferroni intervals below).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jaxhlm
from jaxhlm import JaxhlmError

FIXTURES = Path(__file__).parent / "fixtures"
TYPE3 = {f["name"]: f for f in json.loads((FIXTURES / "anova_type3_reference.json").read_text())["fits"]}


def test_terms_of_factors_get_lmertests_type_iii_tests(hsb):
    ref = TYPE3["hsb_two_factors_ml"]  # mathach ~ ses + C(sized)*C(sector) + (ses | id), ML
    m = jaxhlm.mixed("mathach ses i.sized##i.sector || id: ses, cov(unstr)", hsb)
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-6)
    got = m.contrast("sized##sector", overall=True).table.droplevel("contrast")
    want = ref["satterthwaite"]
    assert list(got.index) == ["sized", "sector", "sized#sector", "Overall"]
    np.testing.assert_array_equal(got["df"], [*want["numdf"][1:], 5])
    np.testing.assert_allclose(got["chi2"].to_numpy()[:3], np.multiply(want["numdf"][1:], want["F"][1:]), rtol=1e-6)
    assert got["P>chi2"].iloc[0] == pytest.approx(0.016544, abs=5e-6)  # chi2(2) = 8.2036
    # the terms one at a time give the same rows; i. and a base level change nothing
    np.testing.assert_allclose(m.contrast("i.sector").table["chi2"], got.loc[["sector"], "chi2"], rtol=1e-10)
    assert m.contrast("sector").table.index.tolist() == [("sector", "")]  # a term's joint test has no contrast name
    recoded = jaxhlm.mixed("mathach ses ib3.sized##i.sector || id: ses, cov(unstr)", hsb)
    np.testing.assert_allclose(recoded.contrast("sector#sized").table["chi2"], got.loc[["sized#sector"], "chi2"],
                               rtol=1e-6)


def test_a_main_effect_is_tested_at_the_covariates_mean(hsb):
    data = hsb.assign(x=hsb["ses"] + 1)  # HSB's ses is centred already; x's mean is 1
    m = jaxhlm.mixed("mathach i.sector##c.x || id:", data)
    centred = jaxhlm.mixed("mathach i.sector##c.cx || id:", data.assign(cx=data["x"] - data["x"].mean()))
    assert centred.llf == pytest.approx(m.llf, abs=1e-7)
    got = m.contrast("sector sector#c.x").table.droplevel("contrast")["chi2"]
    # type III places the covariate at 0: the centred model's test is the one at the mean
    assert got["sector"] == pytest.approx(centred.anova(type=3).table.loc["sector", "F value"], rel=1e-7)
    assert got["sector"] != pytest.approx(m.anova(type=3).table.loc["sector", "F value"], rel=0.1)
    # the slopes' term: the interaction coefficient's own test
    assert got["sector#c.x"] == pytest.approx(m.testparm("i.sector#c.x").statistic, rel=1e-8)


def test_a_squared_covariates_term_tests_its_coefficients(hsb):
    m = jaxhlm.mixed("mathach i.sized##c.ses##c.ses || id:", hsb)
    got = m.contrast("sized#c.ses#c.ses").table
    want = m.testparm("i.sized#c.ses#c.ses")
    assert got["df"].iloc[0] == want.df == 2
    assert got["chi2"].iloc[0] == pytest.approx(want.statistic, rel=1e-6)


def test_asobserved_margins_are_those_of_margins(hsb):
    # sized and sector are unbalanced, so their interaction makes balanced and observed margins differ
    m = jaxhlm.mixed("mathach ses i.sized##i.sector || id:", hsb)
    z = m.margins("sector", pwcompare=True).table["z"].iloc[0]
    observed = m.contrast("sector", asobserved=True)
    assert observed.table["chi2"].iloc[0] == pytest.approx(z**2, rel=1e-8)
    assert m.contrast("sector").table["chi2"].iloc[0] != pytest.approx(z**2, rel=1e-3)
    assert "Margins: asobserved" in str(observed)


def test_do_file_prints_statas_table(hsb):
    log = jaxhlm.run_do("quietly mixed mathach ses i.sized##i.sector || id: ses, cov(unstr)\n"
                        "contrast sized\ncontrast sized##sector, overall noeffects", hsb)
    assert (". contrast sized\n\n"
            "Contrasts of marginal linear predictions\n\n"
            "Margins: asbalanced\n\n"
            "------------------------------------------------\n"
            "             |         df        chi2     P>chi2\n"
            "-------------+----------------------------------\n"
            "mathach      |\n"
            "       sized |          2        8.20     0.0165\n"
            "------------------------------------------------\n") in log
    assert ("sized#sector |          2        4.01     0.1344\n"
            "             |\n"
            "     Overall |          5       74.05     0.0000\n") in log
    with pytest.raises(jaxhlm.DoFileError, match="option sort not allowed; contrast accepts overall"):
        jaxhlm.run_do("quietly mixed mathach i.sector || id:\ncontrast sector, sort", hsb)


def test_refusals_name_the_problem(hsb):
    m = jaxhlm.mixed("mathach ses i.sector || id:", hsb)
    with pytest.raises(JaxhlmError, match="contrast sized: not a term of the model \\(its terms: ses, sector\\)"):
        m.contrast("sized")
    with pytest.raises(JaxhlmError, match="continuous variables only has no levels"):
        m.contrast("c.ses")
    with pytest.raises(JaxhlmError, match="pwcompare ses: ses enters the model as continuous"):
        m.pwcompare("ses")
    with pytest.raises(JaxhlmError, match="the p. operator is not supported; the operators here are r."):
        m.contrast("p.sector")
    with pytest.raises(JaxhlmError, match="sector has two contrast operators \\(r. and a.\\)"):
        m.contrast("r.sector a.sector")
    with pytest.raises(JaxhlmError, match="rb5.: 5 is not a level in the estimation sample"):
        m.contrast("rb5.sector")
    with pytest.raises(JaxhlmError, match="contrast operators and @ belong to contrast"):
        m.pwcompare("r.sector")
    with pytest.raises(JaxhlmError, match="contrast takes its terms as text, 'sized sector' or"):
        m.contrast(3)
    with pytest.raises(JaxhlmError, match="pwcompare needs a term: pwcompare sector"):
        m.pwcompare("")
    assert m.contrast(["sector"]).table.equals(m.contrast("sector").table)
    with pytest.raises(JaxhlmError, match="this model was written as a formula; its terms' tests are anova"):
        jaxhlm.fit("mathach ~ ses + C(sector) + (1 | id)", hsb).contrast("sector")
    # no small school in the Catholic sector: that cell of sized#sector is empty (its coefficient omitted), and
    # every margin of sized that sets Catholic schools small, balanced or as observed, needs it
    part = hsb[~((hsb["sized"] == 1) & (hsb["sector"] == 1))]
    empty = jaxhlm.mixed("mathach i.sized##i.sector || id:", part)
    for asobserved in (False, True):
        with pytest.raises(JaxhlmError, match="contrast sized: not estimable, for a cell its margins need"):
            empty.contrast("sized", asobserved=asobserved)
    # without the interaction, the same data's margins of sized are estimable
    additive = jaxhlm.mixed("mathach i.sized i.sector || id:", part)
    assert additive.contrast("sized").table["df"].iloc[0] == 2


PW = json.loads((FIXTURES / "pwcompare_reference.json").read_text())["fits"]
STATA = {"additive": "mathach ses i.sized##i.sector || id:",
         "slopes": "mathach i.sized##c.ses i.sector || id: ses, cov(unstr)"}


@pytest.fixture(scope="module")
def models(hsb):
    return {name: jaxhlm.mixed(command, hsb) for name, command in STATA.items()}


def _label(emmeans: str) -> str:
    """emmeans' "sized3 sector0 - sized1 sector0" as Stata's "(3 0) vs (1 0)" ("sized2 - sized1": "2 vs 1")."""
    cells = [[v.lstrip("abcdefghijklmnopqrstuvwxyz") for v in side.split()] for side in emmeans.split(" - ")]
    cell = [c[0] if len(c) == 1 else f"({' '.join(c)})" for c in cells]
    return f"{cell[0]} vs {cell[1]}"


@pytest.mark.parametrize("name", list(PW))
def test_contrast_matches_emmeans_joint_tests(models, name):
    ref, m = PW[name], models[name]
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-6)
    terms = {"sized": "sized", "sector": "sector", "sized:sector": "sized#sector", "sized:ses": "sized#c.ses"}
    want = {terms[t]: (df, chi2) for t, df, chi2 in zip(ref["joint"]["term"], ref["joint"]["df"], ref["joint"]["chi2"])
            if t in terms}
    got = m.contrast(" ".join(want)).table.droplevel("contrast")
    np.testing.assert_array_equal(got["df"], [df for df, _ in want.values()])
    np.testing.assert_allclose(got["chi2"], [chi2 for _, chi2 in want.values()], rtol=2e-6)


@pytest.mark.parametrize("name", list(PW))
@pytest.mark.parametrize("adjust", ["none", "bonferroni", "sidak", "scheffe"])
def test_pwcompare_matches_emmeans_pairs(models, name, adjust):
    ref = PW[name][f"sized_{adjust}"]
    pw = models[name].pwcompare("sized", mcompare="noadjust" if adjust == "none" else adjust)
    got = pw.tables[0]
    assert list(got.index) == [_label(c) for c in ref["contrast"]] == ["2 vs 1", "3 vs 1", "3 vs 2"]
    for column, key in (("contrast", "estimate"), ("std_err", "se"), ("z", "z"), ("ci_lower", "lower"),
                        ("ci_upper", "upper")):
        # lme4's optimum and this one differ in the coefficients' eighth digit (the contrast of ~0.002 below)
        np.testing.assert_allclose(got[column], ref[key], rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(got["p"], ref["p"], rtol=2e-5)


def test_pwcompare_of_cells_matches_emmeans(models):
    ref = PW["additive"]["cells_bonferroni"]
    got = models["additive"].pwcompare("sized#sector", mcompare="bonferroni").tables[0]
    assert len(got) == 15 and got.index[0] == "(1 1) vs (1 0)"  # Stata's order: the last factor varies fastest
    # emmeans orders the cells with sized fastest, so some of its "later minus earlier" pairs are Stata's reversed
    labels = [_label(c) for c in ref["contrast"]]
    flipped = [label not in got.index for label in labels]
    labels = [" vs ".join(label.split(" vs ")[::-1]) if f else label for label, f in zip(labels, flipped)]
    sign = np.where(flipped, -1.0, 1.0)
    got = got.loc[labels]
    assert sum(flipped) == 3
    np.testing.assert_allclose(sign * got["contrast"], ref["estimate"], rtol=2e-6)
    np.testing.assert_allclose(got["std_err"], ref["se"], rtol=2e-6)
    lower = np.where(flipped, -got["ci_upper"], got["ci_lower"])
    upper = np.where(flipped, -got["ci_lower"], got["ci_upper"])
    np.testing.assert_allclose(np.column_stack([lower, upper]), np.column_stack([ref["lower"], ref["upper"]]),
                               rtol=2e-6)
    np.testing.assert_allclose(got["p"], ref["p"], rtol=2e-5)


def test_bonferroni_intervals_reproduce_a_stata_log():
    # margins agent_code, pwcompare(effects) mcompare(bonferroni) after mixed (a published Stata 18 log): three
    # comparisons, each printed with its contrast and SE; their Bonferroni intervals and p-values follow from those.
    from jaxhlm.infer import coefficient_table

    b, se = np.array([-1.457746, -1.375, .0827465]), .1433917
    t = coefficient_table(b, np.eye(3) * se**2, mcompare="bonferroni")
    np.testing.assert_allclose(t[:, 4:], [[-1.801023, -1.11447], [-1.718277, -1.031723], [-.2605303, .4260232]],
                               atol=1e-6)
    np.testing.assert_allclose(t[:, 3], [0.0, 0.0, 1.0], atol=5e-4)  # printed 0.000, 0.000, 1.000


def test_margins_and_pwcompare_agree_as_observed(models):
    m = models["additive"]
    a = m.margins("sized", pwcompare=True, mcompare="sidak").table
    b = m.pwcompare("sized", mcompare="sidak", asobserved=True).tables[0]
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9)


def test_do_file_prints_pwcompare_and_adjusted_margins(hsb):
    log = jaxhlm.run_do("quietly mixed mathach ses i.sized##i.sector || id:, reml dfmethod(kroger)\n"
                        "margins sized, pwcompare(effects) mcompare(bonferroni)\n"
                        "pwcompare sized, effects mcompare(bon)\npwcompare sector", hsb)
    comparisons = ("---------------------------\n"
                   "             |    Number of\n"
                   "             |  comparisons\n"
                   "-------------+-------------\n"
                   "       sized |            3\n"
                   "---------------------------\n\n")
    margins, pw, default = log.split("\n. ")[1:]
    # as Stata's logs of margins after a dfmethod fit: no "Model VCE:" line
    assert margins.startswith("margins sized, pwcompare(effects) mcompare(bonferroni)\n\nPairwise comparisons of "
                              "predictive margins               Number of obs = 7,185\n\nExpression: Linear")
    assert comparisons + ("------------------------------------------------------------------------------\n"
                          "             |            Delta-method    Bonferroni           Bonferroni\n"
                          "             |   Contrast   std. err.      z    P>|z|     [95% conf. interval]\n"
                          "-------------+----------------------------------------------------------------\n"
                          "       sized |\n"
                          "     2 vs 1  |") in margins  # z tests after a dfmethod fit, as Stata's margins
    # pwcompare's table of comparisons has the equation's row, as Stata's logs show
    assert pw.startswith("pwcompare sized, effects mcompare(bon)\n\nPairwise comparisons of marginal linear "
                         "predictions\n\nMargins: asbalanced\n\n" + comparisons.replace(
                             "-------------+-------------\n", "-------------+-------------\nmathach      |\n"))
    assert ("             |                            Bonferroni           Bonferroni\n"
            "             |   Contrast   Std. err.      z    P>|z|     [95% conf. interval]\n"
            "-------------+----------------------------------------------------------------\n"
            "mathach      |\n"
            "       sized |\n"
            "     2 vs 1  |") in pw
    assert ("             |                                 Unadjusted\n"  # Stata's default: cieffects
            "             |   Contrast   Std. err.     [95% conf. interval]\n"
            "-------------+------------------------------------------------\n") in default
    for bad, message in (("pwcompare sized, mcompare(tukey)", "mcompare\\(tukey\\): the methods here are noadjust"),
                         ("pwcompare sized, sort", "option sort not allowed; pwcompare accepts"),
                         ("margins sized, mcompare(bon)", "mcompare adjusts pairwise comparisons: give pwcompare")):
        with pytest.raises(jaxhlm.DoFileError, match=message):
            jaxhlm.run_do("quietly mixed mathach i.sized || id:\n" + bad, hsb)


def test_adjustments_of_t_tests_and_refusals(hsb):
    m = jaxhlm.mixed("mathach i.sized i.sector || id:, reml dfmethod(satterthwaite)", hsb)
    plain = m.margins("sized", pwcompare=True).table  # t tests on the fit's Satterthwaite df
    t = m.margins("sized", pwcompare=True, mcompare="bonferroni").table
    np.testing.assert_allclose(t["p"], np.minimum(3 * plain["p"], 1.0), rtol=1e-12)
    from scipy import stats
    np.testing.assert_allclose(t["ci_upper"] - t["contrast"], stats.t.ppf(1 - 0.05 / 6, t["df"]) * t["std_err"],
                               rtol=1e-10)
    scheffe = m.margins("sized", pwcompare=True, mcompare="scheffe").table  # t²/2 against F(2, df)
    np.testing.assert_allclose(scheffe["p"], stats.f.sf(plain["t"] ** 2 / 2, 2, plain["df"]), rtol=1e-10)
    z = m.margins("sized", pwcompare=True, mcompare="bonferroni", large_sample=True).table
    assert "z" in z.columns and "df" not in z.columns
    with pytest.raises(JaxhlmError, match="mcompare\\(holm\\): the adjustments are noadjust, bonferroni"):
        m.pwcompare("sized", mcompare="holm")
    with pytest.raises(JaxhlmError, match="margins\\(pwcompare=True\\)"):
        jaxhlm.fit("mathach ~ C(sized) + (1 | id)", hsb).pwcompare("sized")
    one = jaxhlm.mixed("mathach i.sized || id:", hsb[hsb["sized"] == 1])
    with pytest.raises(JaxhlmError, match="pwcompare sized: one cell, nothing to compare"):
        one.pwcompare("sized")


def test_small_gives_the_fits_small_sample_tests(hsb):
    # Stata's small option (contrast i.AgentType, small: df, ddf, F, P>F; pwcompare ..., small: t): the F tests of
    # a factors-only model's terms are its type III tests by Kenward and Roger, which anova() checks against pbkrtest
    m = jaxhlm.mixed("mathach ses i.sized##i.sector || id:, reml dfmethod(kroger)", hsb)
    got = m.contrast("sized##sector", small=True).table.droplevel("contrast")
    want = m.anova("kroger", type=3).table.loc[["sized", "sector", "sized#sector"]]
    np.testing.assert_allclose(got["F"], want["F value"], rtol=1e-6)
    np.testing.assert_allclose(got["ddf"], want["DenDF"], rtol=1e-6)
    assert list(got.columns) == ["df", "ddf", "F", "P>F"]
    assert "             |         df        ddf           F        P>F\n" in str(m.contrast("sized", small=True))
    additive = jaxhlm.mixed("mathach ses i.sized i.sector || id:, reml dfmethod(kroger)", hsb)
    row = additive.pwcompare("sized", small=True, mcompare="bonferroni").tables[0].loc["3 vs 2"]
    one = additive.lincom("3.sized - 2.sized")  # the fit's Kenward-Roger t test
    assert row["contrast"] == pytest.approx(one.estimate, rel=1e-10) and row["df"] == pytest.approx(one.df, rel=1e-10)
    assert row["p"] == pytest.approx(min(1.0, 3 * one.pvalue), rel=1e-8)
    from scipy import stats
    half = stats.t.ppf(1 - 0.05 / 6, one.df) * one.se
    assert (row["ci_lower"], row["ci_upper"]) == pytest.approx((one.estimate - half, one.estimate + half), rel=1e-8)
    # without small, chi-squared on e(V) (Kenward and Roger's adjusted covariance for this fit)
    assert additive.contrast("sized").table["chi2"].iloc[0] == pytest.approx(
        additive.test(["2.sized = 0", "3.sized = 0"], large_sample=True).statistic, rel=1e-8)
    with pytest.raises(JaxhlmError, match=r"small needs a fit with a dfmethod\(\)"):
        jaxhlm.mixed("mathach i.sized || id:", hsb).contrast("sized", small=True)


def test_contrast_operators_name_their_contrasts(models):
    # Each named contrast is a combination of the term's balanced margins, whose differences pwcompare gives (checked
    # against emmeans above): m2 - m1, m3 - m1, m3 - m2
    m = models["additive"]
    pw = m.pwcompare("sized").tables[0]
    d21, d31, d32 = pw["contrast"]
    expected = {
        "r.sized": (["(2 vs 1)", "(3 vs 1)"], [d21, d31]),
        "rb3.sized": (["(1 vs 3)", "(2 vs 3)"], [-d31, -d32]),
        "a.sized": (["(1 vs 2)", "(2 vs 3)"], [-d21, -d32]),
        "ar.sized": (["(2 vs 1)", "(3 vs 2)"], [d21, d32]),
        "g.sized": (["(1 vs mean)", "(2 vs mean)", "(3 vs mean)"],
                    [-(d21 + d31) / 3, (2 * d21 - d31) / 3, (2 * d31 - d21) / 3]),
        "h.sized": (["(1 vs >1)", "(2 vs >2)"], [-(d21 + d31) / 2, -d32]),
        "j.sized": (["(2 vs <2)", "(3 vs <3)"], [d21, d31 - d21 / 2]),
    }
    joint = m.contrast("sized").table.loc[("sized", ""), "chi2"]
    for spec, (labels, values) in expected.items():
        c = m.contrast(spec)
        assert list(c.effects.index) == [("sized", label) for label in labels]
        np.testing.assert_allclose(c.effects["contrast"], values, rtol=1e-9)
        # every set of contrasts spans the same hypothesis: the term's joint test
        assert c.table.loc[("sized", "Joint"), "chi2"] == pytest.approx(joint, rel=1e-8)
        for label in labels:  # each contrast's own test is its z squared
            z = c.effects.loc[("sized", label), "z"]
            assert c.table.loc[("sized", label), "chi2"] == pytest.approx(z**2, rel=1e-8)
    np.testing.assert_allclose(m.contrast("r.sized").effects["std_err"], pw["std_err"][:2], rtol=1e-9)
    # a factor without an operator beside one with it is taken against its base: the interaction coefficients
    e = m.contrast("ar.sized#sector").effects
    b = m.fe_params
    assert list(e.index.get_level_values(1)) == ["(2 vs 1) (1 vs base)", "(3 vs 2) (1 vs base)"]
    np.testing.assert_allclose(e["contrast"], [b["2.sized#1.sector"], b["3.sized#1.sector"] - b["2.sized#1.sector"]],
                               rtol=1e-9)


def test_do_file_prints_named_contrasts(hsb):
    # the layouts of published logs: contrast r.incomecat (Wald rows and Joint, then the effects with intervals) and
    # contrast ar.month, nowald effects
    log = jaxhlm.run_do("quietly mixed mathach ses i.sized##i.sector || id:\ncontrast r.sized\n"
                        "contrast ar.sized, nowald effects", hsb)
    first, second = log.split(". contrast ")[1:]
    assert ("-------------+----------------------------------\n"
            "mathach      |\n"
            "       sized |\n"
            "   (2 vs 1)  |          1        3.08     0.0792\n"
            "   (3 vs 1)  |          1        7.20     0.0073\n"
            "      Joint  |          2        7.21     0.0271\n"
            "------------------------------------------------\n\n"
            "--------------------------------------------------------------\n"
            "             |   Contrast   Std. err.     [95% conf. interval]\n"
            "-------------+------------------------------------------------\n"
            "mathach      |\n"
            "       sized |\n"
            "   (2 vs 1)  |   .8067426   .4595849     -.0940271    1.707512\n") in first
    assert second.startswith("ar.sized, nowald effects\n\nContrasts of marginal linear predictions\n\n"
                             "Margins: asbalanced\n\n"
                             "------------------------------------------------------------------------------\n"
                             "             |   Contrast   Std. err.      z    P>|z|     [95% conf. interval]\n"
                             "-------------+----------------------------------------------------------------\n"
                             "mathach      |\n"
                             "       sized |\n"
                             "   (2 vs 1)  |   .8067426   .4595849     1.76   0.079")


def test_simple_effects_within_another_factor(models):
    # contrast sector@sized: sector's effect at each size (as Stata's treat@depstat; its Wald rows under the term's
    # header, then Joint, in a published log), the simple effects lincom gives from the coefficients
    m = models["additive"]  # mathach ses i.sized##i.sector || id:
    simple = ["1.sector", "1.sector + 2.sized#1.sector", "1.sector + 3.sized#1.sector"]
    c = m.contrast("sector@sized")
    got = c.table.loc["sector@sized"]
    assert list(got.index) == ["1", "2", "3", "Joint"] and c.effects is None
    np.testing.assert_allclose(got["chi2"].iloc[:3], [(m.lincom(e).estimate / m.lincom(e).se) ** 2 for e in simple],
                               rtol=1e-8)
    assert got.loc["Joint", "chi2"] == pytest.approx(m.test(["1.sector", "2.sized#1.sector", "3.sized#1.sector"])
                                                     .statistic, rel=1e-8)
    named = m.contrast("r.sector@sized").effects.loc["sector@sized"]
    assert list(named.index) == ["(1 vs 0) 1", "(1 vs 0) 2", "(1 vs 0) 3"]
    np.testing.assert_allclose(named["contrast"], [m.lincom(e).estimate for e in simple], rtol=1e-9)
    # a factor of several levels within another: its joint test at each level
    within = m.contrast("sized@sector").table.loc["sized@sector"]
    assert list(within["df"]) == [2, 2, 4]
    assert within.loc["1", "chi2"] == pytest.approx(m.test(["2.sized + 2.sized#1.sector = 0",
                                                            "3.sized + 3.sized#1.sector = 0"]).statistic, rel=1e-8)
    text = str(c)
    assert ("sector@sized |\n          1  |          1        5.31     0.0212\n" in text
            and "      Joint  |          3       44.83     0.0000\n" in text)
    with pytest.raises(JaxhlmError, match="the within operator takes one term on each side"):
        m.contrast("sector@sized@ses")
    with pytest.raises(JaxhlmError, match="contrast operators and @ belong to contrast"):
        m.pwcompare("sector@sized")

"""Stata's ``contrast`` after ``mixed`` (:meth:`jaxhlm.MixedResult.contrast`): ANOVA-style Wald tests of terms on
their cell margins, factors balanced.

References: for a model of factors (and a covariate that interacts with none), the hypotheses are type III's, so
the chi-squared statistics are lmerTest's type III F times its numerator df (an ML fit: F is the Wald statistic over
its df); fixture tests/fixtures/anova_type3_reference.json (lmerTest 3.1-3, written by
tests/fixtures/anova_type3_reference.R). With a covariate in an interaction, the main effect is at the covariate's
mean: the type III test of the model with the covariate centred. The table's layout is that of published Stata
17-18 logs (``contrast agent_code`` after ``mixed``: the response as the equation row, df, chi2, P>chi2).
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
    got = m.contrast("sized##sector", overall=True).table
    want = ref["satterthwaite"]
    assert list(got.index) == ["sized", "sector", "sized#sector", "Overall"]
    np.testing.assert_array_equal(got["df"], [*want["numdf"][1:], 5])
    np.testing.assert_allclose(got["chi2"].to_numpy()[:3], np.multiply(want["numdf"][1:], want["F"][1:]), rtol=1e-6)
    assert got["P>chi2"].iloc[0] == pytest.approx(0.016544, abs=5e-6)  # chi2(2) = 8.2036
    # the terms one at a time give the same rows; i. and a base level change nothing
    np.testing.assert_allclose(m.contrast("i.sector").table["chi2"], got.loc[["sector"], "chi2"], rtol=1e-10)
    recoded = jaxhlm.mixed("mathach ses ib3.sized##i.sector || id: ses, cov(unstr)", hsb)
    np.testing.assert_allclose(recoded.contrast("sector#sized").table["chi2"], got.loc[["sized#sector"], "chi2"],
                               rtol=1e-6)


def test_a_main_effect_is_tested_at_the_covariates_mean(hsb):
    data = hsb.assign(x=hsb["ses"] + 1)  # HSB's ses is centred already; x's mean is 1
    m = jaxhlm.mixed("mathach i.sector##c.x || id:", data)
    centred = jaxhlm.mixed("mathach i.sector##c.cx || id:", data.assign(cx=data["x"] - data["x"].mean()))
    assert centred.llf == pytest.approx(m.llf, abs=1e-7)
    got = m.contrast("sector sector#c.x").table["chi2"]
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
    with pytest.raises(jaxhlm.DoFileError, match="option level not allowed; contrast accepts overall"):
        jaxhlm.run_do("quietly mixed mathach i.sector || id:\ncontrast sector, level(90)", hsb)


def test_refusals_name_the_problem(hsb):
    m = jaxhlm.mixed("mathach ses i.sector || id:", hsb)
    with pytest.raises(JaxhlmError, match="contrast sized: not a term of the model \\(its terms: ses, sector\\)"):
        m.contrast("sized")
    with pytest.raises(JaxhlmError, match="continuous variables only has no levels"):
        m.contrast("c.ses")
    with pytest.raises(JaxhlmError, match="contrast operators \\(r., a., g., p., ...\\) are not supported"):
        m.contrast("r.sector")
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

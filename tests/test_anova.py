"""Comparing several models: lme4's ``anova(m1, m2, ...)`` (:func:`jaxhlm.anova`) and Stata's ``estimates stats``;
and testing one model's terms: lmerTest's ``anova(m)`` (:meth:`jaxhlm.MixedResult.anova`, F tests of types I-III).

Reference values: tests/fixtures/anova_reference.json, written by tests/fixtures/anova_reference.R
(``Rscript tests/fixtures/anova_reference.R``; lme4 version in the JSON): sleepstudy fitted by REML (anova refits
by ML first) and HSB by ML. tests/fixtures/anova_type3_reference.json, written by
tests/fixtures/anova_type3_reference.R (lmerTest 3.1-3, pbkrtest 0.5.2): HSB with factor-by-numeric and
factor-by-factor interactions (REML and ML) and Orthodont, types I, II and III. lmerTest differentiates numerically for Satterthwaite's
DenDF (its errors reach ~1e-5 relative; tests/test_postestimation.py), so DenDF and what depends on it are asked
to 2e-5; F, whose hypothesis L is exact, to 1e-6 (lmerTest rounds L to 7 digits); pbkrtest's Kenward-Roger is
analytic, its DenDF to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import ComparisonError

FIXTURES = Path(__file__).parent / "fixtures"
REF = {f["name"]: f for f in json.loads((FIXTURES / "anova_reference.json").read_text())["fits"]}
DATA = {"sleep_reml": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"), "hsb_ml": jaxhlm.datasets.hsb}


@pytest.mark.parametrize("name", list(REF))
def test_anova_matches_lme4(name):
    ref = REF[name]
    data = DATA[name]()
    models = [jaxhlm.fit(f, data, reml=ref["reml"]) for f in ref["formulas"].values()]
    out = jaxhlm.anova(*models, names=list(ref["formulas"]))
    t = out.table
    assert list(t.index) == ref["rows"] and list(t["npar"]) == ref["npar"]
    assert out.refitted == (tuple(ref["formulas"]) if ref["reml"] else ())
    # lme4's optimiser (bobyqa, tight tolerances) agrees to 1e-8 here, the singular HSB slope model included.
    for column in ("logLik", "AIC", "BIC", "deviance"):
        np.testing.assert_allclose(t[column], ref[column], rtol=0, atol=1e-6)
    np.testing.assert_allclose(t["Chisq"].to_numpy()[1:], ref["Chisq"][1:], atol=2e-6)
    np.testing.assert_array_equal(t["Df"].to_numpy()[1:], ref["Df"][1:])
    assert np.isnan(t["Chisq"].iloc[0]) and np.isnan(t["Df"].iloc[0]) and np.isnan(t["Pr(>Chisq)"].iloc[0])
    np.testing.assert_allclose(t["Pr(>Chisq)"].to_numpy()[1:], ref["p"][1:], rtol=1e-5)


def test_anova_printout_and_its_refusals():
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    m0 = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", sleep, reml=True)
    m1 = jaxhlm.fit("Reaction ~ Days + (1 + Days | Subject)", sleep, reml=True)
    text = str(jaxhlm.anova(m1, m0))
    assert text.startswith("refitting model(s) with ML (instead of REML): m1, m2")
    assert "m2    4  1802.1  1814.9  -897.04   1794.1" in text and " 42.1393  2  7.072e-10" in text
    with pytest.raises(ComparisonError, match="REML likelihoods of models with different fixed effects"):
        jaxhlm.anova(m0, jaxhlm.fit("Reaction ~ 1 + (1 | Subject)", sleep, reml=True), refit=False)
    with pytest.raises(ComparisonError, match="different observations"):
        jaxhlm.anova(m0, jaxhlm.fit("Reaction ~ Days + (1 | Subject)", sleep.iloc[:170], reml=True))
    with pytest.raises(ComparisonError, match="tests the terms of one fitted model, or compares two or more"):
        jaxhlm.anova()
    assert jaxhlm.anova(m0).table.equals(m0.anova().table)  # one model: its terms' F tests
    with pytest.raises(ComparisonError, match="one distinct name per model"):
        jaxhlm.anova(m0, m1, names=["a", "a"])
    with pytest.raises(ComparisonError, match="fitted models, got str"):
        jaxhlm.anova(m0, "m1")
    chunked = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", iter([sleep.iloc[:90], sleep.iloc[90:]]), reml=True)
    with pytest.raises(ComparisonError, match="fit it with reml=False"):
        jaxhlm.anova(chunked, m1)
    ml = m1.refit_ml()
    assert not ml.reml and ml.refit_ml() is ml and ml.llf == pytest.approx(-875.969672231601, abs=1e-6)


def test_estimates_stats_lists_stored_models_as_stata_does():
    log = jaxhlm.run_do("\n".join([
        "quietly mixed mathach ses || id:", "estimates store base",
        "quietly mixed mathach ses i.sector || id:", "estimates store sector",
        "quietly mixed mathach ses i.sector || id: ses", "estimates stats base sector .", "estimates stats s*",
    ]), jaxhlm.datasets.hsb())
    tables = log.split("Akaike's information criterion")[1:]
    assert len(tables) == 2
    rows = [line for line in tables[0].splitlines() if "|" in line][1:]
    assert [r.split("|")[0].strip() for r in rows] == ["base", "sector", "."]
    assert rows[0].split() == ["base", "|", "7,185", ".", "-23320.5", "4", "46649", "46676.52"]
    assert [r.split("|")[0].strip() for r in tables[1].splitlines() if "|" in r][1:] == ["sector"]
    with pytest.raises(jaxhlm.DoFileError, match="no stored estimation results match z"):
        jaxhlm.run_do("quietly mixed mathach ses || id:\nestimates stats z*", jaxhlm.datasets.hsb())


TYPE3 = {f["name"]: f for f in json.loads((FIXTURES / "anova_type3_reference.json").read_text())["fits"]}


def _term_key(label: str) -> frozenset[str]:
    """A term's variables whichever way the formula names them (R's factor(x) is formulaic's C(x))."""
    return frozenset(part.replace("factor(", "C(") for part in label.split(":"))


@pytest.mark.parametrize("name", list(TYPE3))
def test_tests_of_terms_match_lmertest(name):
    ref = TYPE3[name]
    data = jaxhlm.datasets.hsb() if ref["data"] == "hsb" else pd.read_csv(FIXTURES / ref["data"])
    m = jaxhlm.fit(ref["formula"], data, reml=ref["reml"])
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-6)
    for ddf, kind, key in (("satterthwaite", 3, "satterthwaite"), ("kroger", 3, "kenward_roger"),
                           ("satterthwaite", 1, "type1"), ("satterthwaite", 2, "type2")):
        want = ref[key]
        if not want:
            continue
        got = m.anova(ddf, type=kind).table
        order = {_term_key(t): t for t in got.index}
        got = got.loc[[order[_term_key(t)] for t in want["terms"]]]
        np.testing.assert_array_equal(got["NumDF"], want["numdf"])
        np.testing.assert_allclose(got["F value"], want["F"], rtol=1e-6)
        np.testing.assert_allclose(got["DenDF"], want["dendf"], rtol=2e-5 if ddf == "satterthwaite" else 1e-6)
        np.testing.assert_allclose(got["Pr(>F)"], want["p"], rtol=2e-4)
        np.testing.assert_allclose(got["Sum Sq"], want["sum_sq"], rtol=1e-6)
        np.testing.assert_allclose(got["Mean Sq"], want["mean_sq"], rtol=1e-6)


def test_type3_hypotheses_do_not_depend_on_the_base_level(hsb):
    # Recoding sized so that another level is the base changes every coefficient of C(sized) and its interactions,
    # not the type III tests; the test of a term's own coefficients (testparm's) would change.
    m = jaxhlm.fit("mathach ~ ses*C(sized) + (1 | id)", hsb, reml=True)
    flipped = jaxhlm.fit("mathach ~ ses*C(r) + (1 | id)", hsb.assign(r=4 - hsb["sized"]), reml=True)
    a, b = m.anova().table, flipped.anova().table
    np.testing.assert_allclose(a[["Sum Sq", "NumDF", "F value"]].to_numpy(float),
                               b[["Sum Sq", "NumDF", "F value"]].to_numpy(float), rtol=1e-6)
    # (Satterthwaite's DenDF of a multi-df test depends on the basis of the hypothesis' rows, as lmerTest's does:
    # it combines the df of L V Lᵀ's eigenvectors)
    np.testing.assert_allclose(a["DenDF"], b["DenDF"], rtol=1e-3)
    own = m.test(["ses"])  # the ses coefficient alone: the slope at the base level
    assert own.statistic != pytest.approx(a.loc["ses", "F value"], rel=1e-3)
    text = str(m.anova())
    assert text.startswith("Type III Analysis of Variance Table with Satterthwaite's method")
    assert "ses:C(sized)" in text


def test_stata_syntax_terms_get_the_same_tests(hsb):
    # One model in both syntaxes: Stata's factor variables are treatment-coded cells, and its duplicated ses (omitted
    # as collinear) changes nothing.
    formula = jaxhlm.fit("mathach ~ ses*sector + ses*C(sized) + female*C(sized) + (1 | id)", hsb, reml=True)
    stata = jaxhlm.mixed("mathach c.ses##c.sector c.ses##i.sized c.female##i.sized || id:, reml", hsb)
    names = {"ses": "ses", "sector": "sector", "C(sized)": "sized", "female": "female", "ses:sector": "c.ses#c.sector",
             "ses:C(sized)": "sized#c.ses", "female:C(sized)": "sized#c.female"}
    for kind in (1, 2, 3):
        a, b = formula.anova(type=kind).table, stata.anova(type=kind).table
        b = b.loc[[names[t] for t in a.index]]
        if kind == 1:  # sequential: both put main effects first as written, then interactions (Stata's written
            # order, c.ses#c.sector before sized#c.ses, is the formula's too)
            assert list(stata.anova(type=1).table.index[:4]) == ["ses", "sector", "sized", "female"]
        np.testing.assert_allclose(a[["NumDF", "F value"]].to_numpy(float), b[["NumDF", "F value"]].to_numpy(float),
                                   rtol=1e-7)
    with pytest.raises(jaxhlm.JaxhlmError, match="the types of tests of terms are 1, 2 and 3"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb).anova(type=4)
    with pytest.raises(jaxhlm.JaxhlmError, match="Kenward and Roger's method needs REML"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb).anova("kroger")


def test_command_line_prints_the_table(hsb, capsys):
    from jaxhlm.cli import main

    assert main(["anova", "mathach ~ ses*C(sized) + (1 | id)", "--reml", "--ddf", "kroger", "--type", "2"]) == 0
    want = jaxhlm.fit("mathach ~ ses*C(sized) + (1 | id)", hsb, reml=True).anova("kroger", type=2)
    assert capsys.readouterr().out.strip() == str(want).strip()
    assert str(want).startswith("Type II Analysis of Variance Table with Kenward-Roger's method")
    assert main(["anova", "mathach ses || id:", "--ddf", "kroger"]) == 2
    assert "Kenward and Roger's method needs REML" in capsys.readouterr().err

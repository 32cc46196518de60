"""Comparing several models: lme4's ``anova(m1, m2, ...)`` (:func:`jaxhlm.anova`) and Stata's ``estimates stats``.

Reference values: tests/fixtures/anova_reference.json, written by tests/fixtures/anova_reference.R
(``Rscript tests/fixtures/anova_reference.R``; lme4 version in the JSON): sleepstudy fitted by REML (anova refits
by ML first) and HSB by ML.
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
    with pytest.raises(ComparisonError, match="two or more"):
        jaxhlm.anova(m0)
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

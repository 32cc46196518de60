"""Margins of the fixed portion, Stata's ``margins`` after ``mixed`` (:meth:`MixedResult.margins`).

Reference: emmeans 1.8 on lme4 fits (``Rscript tests/fixtures/margins_reference.R``, which says why its reference
grid gives Stata's predictive margins for this model): margins, delta-method standard errors (model-based, robust,
and REML's with Satterthwaite's degrees of freedom).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jaxhlm
from jaxhlm.dofile import Session

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "margins_reference.json").read_text())
MODEL = "mathach c.ses##i.sector i.female || id: ses, cov(unstructured)"
#: reference name → margins() arguments (Stata: margins sector, margins sector#female, margins, at(ses=(-1 0 1)),
#: margins sector, at(ses=(-1 1)))
CASES = {"by_sector": {"over": "sector"}, "by_sector_female": {"over": ["sector", "female"]},
         "at_ses": {"at": {"ses": [-1, 0, 1]}}, "sector_at_ses": {"over": "sector", "at": {"ses": [-1, 1]}}}


@pytest.fixture(scope="module")
def ml(hsb) -> jaxhlm.MixedResult:
    return jaxhlm.mixed(MODEL, hsb)


@pytest.mark.parametrize("name", list(CASES))
def test_matches_emmeans(ml, name):
    ref, m = REF[name], ml.margins(**CASES[name])
    assert ml.llf == pytest.approx(REF["loglik"], abs=1e-6)
    # measured: margins to 4e-9, standard errors to 9e-8 (lme4's optimum, bobyqa to 1e-12)
    np.testing.assert_allclose(m.table["margin"], ref["margin"], rtol=2e-8)
    np.testing.assert_allclose(m.table["std_err"], ref["se"], rtol=5e-7)
    z = m.table["margin"] / m.table["std_err"]
    np.testing.assert_allclose(m.table["z"], z, rtol=1e-12)
    half = m.table["ci_upper"] - m.table["margin"]
    np.testing.assert_allclose(half, 1.959963984540054 * m.table["std_err"], rtol=1e-12)


@pytest.mark.parametrize("name, over", [("dydx_ses_by_sector", "sector"), ("dydx_ses", None)])
def test_average_marginal_effects_match_emtrends(ml, name, over):
    ref, m = REF[name], ml.margins(over, dydx="ses")
    np.testing.assert_allclose(m.table["dydx"], np.atleast_1d(ref["margin"]), rtol=1e-7)
    np.testing.assert_allclose(m.table["std_err"], np.atleast_1d(ref["se"]), rtol=5e-7)
    text = str(m)
    assert text.startswith("Average marginal effects") and "dy/dx wrt:  ses" in text


@pytest.mark.parametrize("name, kwargs", [("pw_sector", {"over": "sector"}),
                                          ("pw_sector_female", {"over": ["sector", "female"]}),
                                          ("pw_dydx_ses_by_sector", {"over": "sector", "dydx": "ses"})])
def test_pairwise_comparisons_match_emmeans_pairs(ml, name, kwargs):
    m = ml.margins(pwcompare=True, **kwargs)
    n = len(ml.margins(**kwargs).table)
    ours = [(i, j) for i in range(n) for j in range(i + 1, n)]  # j vs i, by i then j
    theirs = [(i, j) for j in range(n) for i in range(j)]  # emmeans' pairs(reverse = TRUE): by j then i
    at = [theirs.index(p) for p in ours]
    np.testing.assert_allclose(m.table["contrast"], np.atleast_1d(REF[name]["margin"])[at], rtol=1e-7)
    np.testing.assert_allclose(m.table["std_err"], np.atleast_1d(REF[name]["se"])[at], rtol=5e-7)
    assert m.table.index[0] == ("(0 1) vs (0 0)" if name == "pw_sector_female" else "1 vs 0")
    assert str(m).startswith("Pairwise comparisons of")


def test_dydx_of_a_quadratic_term_is_exact(hsb):
    """The slope of b1 ses + b2 ses² at ses = x is b1 + 2 b2 x, and central differences are exact for it."""
    m = jaxhlm.mixed("mathach c.ses##c.ses i.sector || id:", hsb)
    b = m.fe_params
    slopes = m.margins(at={"ses": [-1, 0, 1]}, dydx="ses").table["dydx"].to_numpy()
    np.testing.assert_allclose(slopes, b["ses"] + 2 * b["c.ses#c.ses"] * np.array([-1, 0, 1]), rtol=1e-9)


def test_robust_and_satterthwaite(hsb):
    robust = jaxhlm.mixed(MODEL + " vce(robust)", hsb).margins("sector")
    np.testing.assert_allclose(robust.table["std_err"], REF["by_sector_robust"]["se"], rtol=5e-7)
    assert "Model VCE: Robust" in str(robust)
    reml = jaxhlm.mixed(MODEL + " reml dfmethod(satterthwaite)", hsb).margins("sector")
    ref = REF["by_sector_reml_satterthwaite"]
    np.testing.assert_allclose(reml.table["margin"], ref["margin"], rtol=2e-8)
    np.testing.assert_allclose(reml.table["std_err"], ref["se"], rtol=5e-7)
    np.testing.assert_allclose(reml.table["df"], ref["df"], rtol=1e-6)  # measured: 2e-7
    assert "t" in reml.table.columns and "P>|t|" in str(reml)


def test_layout(ml):
    text = str(ml.margins("sector", at={"ses": [-1, 1]}))
    lines = text.splitlines()
    assert lines[0].startswith("Predictive margins") and lines[0].endswith("Number of obs = 7,185")
    # no "Model VCE:" line for model-based SEs, as Stata's logs of margins after mixed show
    assert lines[1] == "" and lines[2] == "Expression: Linear prediction, fixed portion, predict()"
    assert "1._at: ses = -1" in lines and "2._at: ses = 1" in lines
    assert any(line.strip() == "_at#sector |" for line in lines)
    row = next(line for line in lines if line.strip().startswith("2 1 "))
    assert "15.49762" in row and ".3080704" in row
    assert str(ml.margins(at={"ses": 0.5, "sector": 1, "female": 0})).startswith("Adjusted predictions")
    # every variable set, by at() or as a margin: Stata's title for margins month#group after mixed sleep
    # i.group##i.month in a published log
    assert str(ml.margins(["sector", "female"], at={"ses": 0})).startswith("Adjusted predictions")
    # nopvalues: the layout of a published Stata log (margins month#group, nopvalues)
    log = jaxhlm.run_do("quietly mixed mathach ses i.sector##i.female || id:\nmargins sector#female, nopvalues")
    assert ("---------------------------------------------------------------\n"
            "              |            Delta-method\n"
            "              |     Margin   std. err.     [95% conf. interval]\n"
            "--------------+------------------------------------------------\n"
            "sector#female |\n"
            "         0 0  |") in log


def test_frequency_weights_weight_the_mean(hsb):
    data = hsb.assign(n=1 + np.arange(len(hsb)) % 3)
    weighted = jaxhlm.mixed("mathach c.ses##i.sector [fw=n] || id:", data).margins("sector")
    expanded = jaxhlm.mixed("mathach c.ses##i.sector || id:", data.loc[data.index.repeat(data["n"])]).margins("sector")
    np.testing.assert_allclose(weighted.table.to_numpy(), expanded.table.to_numpy(), rtol=1e-7)


def test_dofile(hsb):
    session = Session(hsb)
    session.run("mixed", MODEL)
    text = session.run("margins", "sector#female")
    assert "sector#female" in text and "12.37" in text
    assert "1._at: ses = -1" in session.run("margins", "sector, at(ses=(-1 1))")
    assert session.run("margins", ", at(ses=(-1(1)1))").count("._at:") == 3
    assert "2.914303" in session.run("margins", "sector, dydx(ses)")
    assert "1 vs 0" in session.run("margins", "sector, pwcompare(effects)")


@pytest.mark.parametrize("call, words", [
    (lambda m: m.margins("bogus"), "'bogus' is not a variable of the model's fixed part"),
    (lambda m: m.margins("ses"), "takes 373 values"),
    (lambda m: m.margins("sector", at={"sector": 1}), "given both as a margin and in at()"),
    (lambda m: m.margins(alpha=1.5), "alpha"),
    (lambda m: m.margins("sector", dydx="sector"), "both a margin and the variable of dydx()"),
    (lambda m: m.margins(pwcompare=True), "pwcompare compares margins pairwise, and there is one"),
])
def test_refusals(ml, call, words):
    with pytest.raises(jaxhlm.JaxhlmError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call(ml)

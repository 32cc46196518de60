"""Single-term deletions: lme4's ``drop1(model, test = "Chisq")`` (:func:`jaxhlm.drop1`).

Reference values: tests/fixtures/drop1_reference.json, written by tests/fixtures/drop1_reference.R (``Rscript
tests/fixtures/drop1_reference.R``; lme4 version in the JSON): HSB by ML with interactions (a two-parameter term
among them), sleepstudy by REML (refitted by ML), and HSB with a predictor missing on every 7th row.
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
REF = {f["name"]: f for f in json.loads((FIXTURES / "drop1_reference.json").read_text())["fits"]}


def _hsb_missing() -> pd.DataFrame:
    hsb = jaxhlm.datasets.hsb()
    hsb.loc[hsb.index[::7], "female"] = np.nan
    return hsb


DATA = {"hsb_ml": jaxhlm.datasets.hsb, "sleep_reml": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"),
        "hsb_missing": _hsb_missing}


def _check(out: jaxhlm.results.TermDeletions, ref: dict, labels: list[str]) -> None:
    t = out.table
    assert list(t.index) == labels
    np.testing.assert_array_equal(t["npar"].to_numpy()[1:], ref["npar"][1:])
    assert np.isnan(t["npar"].iloc[0]) and np.isnan(t["LRT"].iloc[0]) and np.isnan(t["Pr(Chi)"].iloc[0])
    # lme4's optimiser (bobyqa, tight tolerances) reaches the same optima: AIC and LRT agree to 1e-10 here.
    np.testing.assert_allclose(t["AIC"], ref["AIC"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(t["LRT"].to_numpy()[1:], ref["LRT"][1:], rtol=0, atol=1e-8)
    np.testing.assert_allclose(t["Pr(Chi)"].to_numpy()[1:], ref["p"][1:], rtol=1e-5)


@pytest.mark.parametrize("name", list(REF))
def test_drop1_matches_lme4(name):
    ref = REF[name]
    model = jaxhlm.fit(ref["formula"].replace("factor(", "C("), DATA[name](), reml=ref["reml"])
    out = jaxhlm.drop1(model)
    _check(out, ref, [r.replace("factor(", "C(") for r in ref["rows"]])
    assert out.refitted == ref["reml"]
    if name == "hsb_missing":  # every refit on the model's own sample, which lacks the rows missing female
        assert model.nobs == 7185 - 1027


def test_stata_syntax_terms_and_the_printout():
    ref = REF["hsb_ml"]
    model = jaxhlm.mixed("mathach c.ses##i.sector i.female##i.sized || id: ses, cov(unstr)", jaxhlm.datasets.hsb())
    out = jaxhlm.drop1(model)
    _check(out, ref, ["<none>", "sector#c.ses", "female#sized"])
    text = str(out)
    assert text.startswith("Single term deletions (likelihood-ratio tests, models fitted by ML)\n")
    assert "sector#c.ses    1  46555.9  33.6453  6.613e-09\nfemale#sized    2  46527.5   7.2724    0.02635" in text


def test_drop1_refusals_are_explained():
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    with pytest.raises(ComparisonError, match="nothing to drop"):
        jaxhlm.drop1(jaxhlm.fit("Reaction ~ 1 + (1 | Subject)", sleep))
    chunked = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", iter([sleep.iloc[:90], sleep.iloc[90:]]))
    with pytest.raises(ComparisonError, match="read in chunks"):
        jaxhlm.drop1(chunked)
    with pytest.raises(ComparisonError, match="fitted models, got str"):
        jaxhlm.drop1("m1")
    with pytest.raises(jaxhlm.FormulaError, match="without fixed effects"):
        jaxhlm.drop1(jaxhlm.fit("Reaction ~ 0 + Days + (1 | Subject)", sleep))


def test_command_line(capsys):
    from jaxhlm.cli import main

    assert main(["drop1", "mathach c.ses##i.sector i.female##i.sized || id: ses, cov(unstr)"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Single term deletions") and "female#sized    2  46527.5   7.2724    0.02635" in out
    assert main(["drop1", "mathach ~ 1 + (1 | id)"]) == 2
    assert "nothing to drop" in capsys.readouterr().err

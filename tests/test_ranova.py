"""Likelihood-ratio tests of the random effects: lmerTest's ``ranova(model)`` (:func:`jaxhlm.ranova`).

Reference values: tests/fixtures/ranova_reference.json, written by tests/fixtures/ranova_reference.R (``Rscript
tests/fixtures/ranova_reference.R``; lme4 and lmerTest versions in the JSON): a slope left out of its term (REML and
ML), terms of one effect left out, the last random term left out (the linear model, REML), nested and crossed
factors.
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
REF = {f["name"]: f for f in json.loads((FIXTURES / "ranova_reference.json").read_text())["fits"]}
DATA = {"sleepstudy": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"), "hsb": jaxhlm.datasets.hsb,
        "pastes": jaxhlm.datasets.pastes, "penicillin": jaxhlm.datasets.penicillin}


def _check(table: pd.DataFrame, ref: dict, rows: list[str]) -> None:
    """``table`` against lmerTest's, whose rows are ``rows`` (the same reductions, possibly named otherwise) in
    lmerTest's order."""
    t = table.loc[rows]
    np.testing.assert_array_equal(t["npar"], ref["npar"])
    np.testing.assert_array_equal(t["Df"].to_numpy()[1:], ref["Df"][1:])
    # lme4's optimiser (bobyqa, tight tolerances) reaches the same optima here: log likelihoods agree to 4e-10.
    np.testing.assert_allclose(t["logLik"], ref["logLik"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(t["AIC"], ref["AIC"], rtol=0, atol=2e-8)
    np.testing.assert_allclose(t["LRT"].to_numpy()[1:], ref["LRT"][1:], rtol=0, atol=2e-8)
    np.testing.assert_allclose(t["Pr(>Chisq)"].to_numpy()[1:], ref["p"][1:], rtol=1e-5)
    assert np.isnan(t["LRT"].iloc[0]) and np.isnan(t["Df"].iloc[0])


@pytest.mark.parametrize("name", list(REF))
def test_ranova_matches_lmertest(name):
    ref = REF[name]
    out = jaxhlm.ranova(jaxhlm.fit(ref["formula"], DATA[ref["data"]](), reml=ref["reml"]))
    rows = [r.replace("cask:batch", "batch:cask") for r in ref["rows"]]
    assert sorted(out.table.index) == sorted(rows)
    _check(out.table, ref, rows)


def test_stata_syntax_levels_and_the_printout():
    ref = REF["pastes_nested_reml"]
    pastes = jaxhlm.datasets.pastes()
    # Stata numbers casks within batches: without the batch level they stay apart as batch:cask.
    out = jaxhlm.ranova(jaxhlm.mixed("strength || batch: || cask:, reml", pastes))
    _check(out.table, ref, ["<none>", "(1 | cask)", "(1 | batch)"])
    text = str(out)
    assert text.startswith("Likelihood-ratio tests of the random effects: single term deletions\n")
    assert "(1 | cask)     3  -150.80  307.6  54.6047  1  1.474e-13" in text
    hsb = jaxhlm.mixed("mathach c.ses##c.sector female || id: female, cov(unstr)", jaxhlm.datasets.hsb())
    _check(jaxhlm.ranova(hsb).table, REF["hsb_female_ml"], ["<none>", "female in (1 + female | id)"])


def test_ranova_on_the_estimation_sample_and_its_refusals():
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    gappy = sleep.assign(Days=sleep["Days"].where(sleep.index % 9 != 0))
    # Days is the random slope's variable alone: the model without it would keep the rows missing Days.
    model = jaxhlm.fit("Reaction ~ 1 + (1 + Days | Subject)", gappy, reml=True)
    complete = jaxhlm.fit("Reaction ~ 1 + (1 + Days | Subject)", gappy.dropna(), reml=True)
    np.testing.assert_allclose(jaxhlm.ranova(model).table, jaxhlm.ranova(complete).table, rtol=1e-9)
    chunked = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", iter([sleep.iloc[:90], sleep.iloc[90:]]))
    with pytest.raises(ComparisonError, match="read in chunks"):
        jaxhlm.ranova(chunked)
    with pytest.raises(ComparisonError, match="fitted models, got str"):
        jaxhlm.ranova("m1")


def test_command_line(tmp_path, capsys):
    from jaxhlm.cli import main

    ref = REF["sleep_slope_reml"]
    path = tmp_path / "sleep.csv"
    DATA["sleepstudy"]().to_csv(path, index=False)
    assert main(["ranova", ref["formula"], "--reml", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"Days in (1 + Days | Subject)    4  {ref['logLik'][1]:.2f}" in out and f"{ref['LRT'][1]:.4f}" in out

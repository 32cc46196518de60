"""Nakagawa and Schielzeth's R² (:meth:`jaxhlm.results.MixedResult.r2`).

Reference values: tests/fixtures/r2_reference.json, written by tests/fixtures/r2_reference.R (``Rscript
tests/fixtures/r2_reference.R``; lme4, performance and insight versions in the JSON): ``performance::r2_nakagawa``
and ``insight::get_variance`` on lme4 fits with a random slope (ML), a random intercept (REML), HSB with a random
slope, Pastes (nested) and Penicillin (crossed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import JaxhlmError

FIXTURES = Path(__file__).parent / "fixtures"
REF = {f["name"]: f for f in json.loads((FIXTURES / "r2_reference.json").read_text())["fits"]}
DATA = {"sleepstudy": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"), "hsb": jaxhlm.datasets.hsb,
        "pastes": jaxhlm.datasets.pastes, "penicillin": jaxhlm.datasets.penicillin}


@pytest.mark.parametrize("name", list(REF))
def test_r2_matches_performance(name):
    ref = REF[name]
    m = jaxhlm.fit(ref["formula"], DATA[ref["data"]](), reml=ref["reml"])
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-9)
    r = m.r2()
    # The variance components agree with lme4's to 2e-7 relative (both at the optimum of a flat likelihood),
    # and so do the variances made of them; the R² to 1e-8.
    for key in ("var_fixed", "var_random", "var_residual"):
        assert r[key] == pytest.approx(ref[key], rel=5e-7, abs=1e-12), key
    assert r["marginal"] == pytest.approx(ref["marginal"], abs=5e-8)
    assert r["conditional"] == pytest.approx(ref["conditional"], abs=5e-8)
    assert r["conditional"] > r["marginal"] >= 0


def test_frequency_weights_count_rows_as_the_expanded_data():
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    rng = np.random.default_rng(3)
    f = rng.integers(1, 4, len(sleep))
    expanded = sleep.loc[sleep.index.repeat(f)].reset_index(drop=True)
    formula = "Reaction ~ Days + (1 + Days | Subject)"
    weighted = jaxhlm.fit(formula, sleep.assign(n=f), freq_weights="n").r2()
    np.testing.assert_allclose(weighted, jaxhlm.fit(formula, expanded).r2(), rtol=1e-7)
    # Counting each row once instead would give another fixed-effect variance.
    assert weighted["var_fixed"] != pytest.approx(jaxhlm.fit(formula, sleep).r2()["var_fixed"], rel=1e-3)


def test_r2_refusals_are_explained():
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    weighted = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", sleep.assign(w=1.0 + sleep["Days"] % 2), weights="w")
    with pytest.raises(JaxhlmError, match="precision weights"):
        weighted.r2()
    chunked = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", iter([sleep.iloc[:90], sleep.iloc[90:]]))
    with pytest.raises(JaxhlmError, match="read in chunks"):
        chunked.r2()

"""ML and REML fits against lme4 on three data sets (sleepstudy, Orthodont, HSB).

Reference values: tests/fixtures/lme4_reference.json, written by tests/fixtures/lme4_reference.R
(``Rscript tests/fixtures/lme4_reference.R``; lme4 1.1-31, bobyqa, maxfun 1e5).
lme4's derivative-free optimiser stops within ~1e-6 of the optimum; jaxhlm's log likelihood must be at
least as high and agree to that tolerance, and the estimates to the accuracy that implies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import jaxhlm

FIXTURES = Path(__file__).parent / "fixtures"
FITS = json.loads((FIXTURES / "lme4_reference.json").read_text())["fits"]


def _data(name: str) -> pd.DataFrame:
    return jaxhlm.datasets.hsb() if name == "hsb" else pd.read_csv(FIXTURES / name)


def _fe_name(lme4_name: str) -> str:
    if lme4_name == "(Intercept)":
        return "Intercept"
    if lme4_name.startswith("sized"):
        return f"C(sized)[T.{lme4_name[5:]}]"
    return lme4_name


def _re_name(lme4_name: str) -> str:
    return "_cons" if lme4_name == "(Intercept)" else lme4_name


@pytest.mark.parametrize("ref", FITS, ids=[f"{f['name']}-{'reml' if f['reml'] else 'ml'}" for f in FITS])
def test_matches_lme4(ref):
    r = jaxhlm.fit(ref["formula"], _data(ref["data"]), reml=ref["reml"])
    assert r.converged
    assert r.reml == ref["reml"]
    assert r.llf >= ref["loglik"] - 1e-7
    assert r.llf - ref["loglik"] < 1e-5
    for name, b in ref["fixef"].items():
        assert r.fe_params[_fe_name(name)] == pytest.approx(b, rel=1e-4, abs=1e-6), name
        assert r.bse_fe[_fe_name(name)] == pytest.approx(ref["se"][name], rel=1e-3), name
    for vc in ref["varcorr"]:
        if vc["grp"] == "Residual":
            assert r.scale == pytest.approx(vc["vcov"], rel=1e-4)
            continue
        a, b = _re_name(vc["var1"]), _re_name(vc["var2"] or vc["var1"])
        assert r.cov_re.loc[a, b] == pytest.approx(vc["vcov"], rel=2e-3, abs=1e-6), (a, b)
    assert r.singular == ref["singular"]

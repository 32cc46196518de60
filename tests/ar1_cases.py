"""The AR(1) test cases shared by tests/test_ar1.py and tests/test_ar1_batch.py: the references written by
tests/fixtures/ar1_reference.R (``Rscript tests/fixtures/ar1_reference.R``), the data, and the fits."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

import jaxhlm

FIXTURES = Path(__file__).parent / "fixtures"
REF = {f["name"]: f for f in json.loads((FIXTURES / "ar1_reference.json").read_text())["fits"]}
THREE = REF.pop("three_level_ml")
FORMULAS = {"intercept_ml": "y ~ time + x + (1 | id)", "slope_reml": "y ~ time + x + (1 + time | id)",
            "slope_ml": "y ~ time + x + (1 + time | id)"}


def data() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "ar1.csv")


def fit_all() -> dict[str, jaxhlm.MixedResult]:
    """The two-level references' models, fitted as nlme fitted them."""
    d = data()
    return {name: jaxhlm.fit(FORMULAS[name], d, reml=ref["reml"], residuals="ar1", time="time") for name, ref in REF.items()}

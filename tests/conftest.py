"""Shared fixtures: the HSB data and the six models of the reference log, fitted once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("JAXHLM_CACHE_DIR", str(Path(__file__).parents[1] / ".jax_cache"))

import jaxhlm  # noqa: E402

BASE = "mathach ~ ses*sector + ses*C(sized) + female*sector + female*C(sized)"
#: The log's six models in lme4/formulaic syntax; keys as in the conventions (M1..M6).
MODELS = {
    "M1": BASE + " + (ses + female | id)",
    "M2 (sesrandom)": BASE + " + (ses | id)",
    "M3 (noslope)": BASE + " + (1 | id)",
    "M4 (femalerandom)": BASE + " + (female | id)",
    "M5": "mathach ~ ses*sector + female*C(sized) + (1 | id)",
    "M6 (final)": "mathach ~ ses*sector + female*sized_1 + (1 | id)",
}
#: The log prints M3 twice; printout k of the log is MODELS[PRINTOUT[k]].
PRINTOUT = ["M1", "M2 (sesrandom)", "M3 (noslope)", "M4 (femalerandom)", "M3 (noslope)", "M5", "M6 (final)"]

#: Stata coefficient names -> the names the formulas above produce.
STATA_NAMES = {
    "ses": "ses", "sector": "sector", "c.ses#c.sector": "ses:sector", "2.sized": "C(sized)[T.2]",
    "3.sized": "C(sized)[T.3]", "2.sized#c.ses": "ses:C(sized)[T.2]", "3.sized#c.ses": "ses:C(sized)[T.3]",
    "1.female": "female", "1.female#1.sector": "female:sector", "1.female#2.sized": "female:C(sized)[T.2]",
    "1.female#3.sized": "female:C(sized)[T.3]", "1.sized_1": "sized_1", "1.female#1.sized_1": "female:sized_1",
    "_cons": "Intercept",
}


@pytest.fixture(scope="session")
def hsb():
    df = jaxhlm.datasets.hsb()
    return df.assign(sized_1=(df["sized"] == 1).astype(int))


@pytest.fixture(scope="session")
def log_models(hsb):
    return {name: jaxhlm.fit(formula, hsb) for name, formula in MODELS.items()}

"""Shared fixtures: the HSB data and the six models of the reference log, fitted once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("JAXHLM_CACHE_DIR", str(Path(__file__).parents[1] / ".jax_cache"))

import jaxhlm  # noqa: E402

BASE = "mathach c.ses##c.sector c.ses##i.sized i.female##i.sector i.female##i.sized"
#: The log's six models in Stata syntax, as the log runs them; keys as in the conventions (M1..M6).
MODELS = {
    "M1": BASE + " || id: ses female, cov(unstr)",
    "M2 (sesrandom)": BASE + " || id: ses, cov(unstr)",
    "M3 (noslope)": BASE + " || id:",
    "M4 (femalerandom)": BASE + " || id: female, cov(unstr)",
    "M5": "mathach c.ses##c.sector i.female##i.sized || id:",
    "M6 (final)": "mathach c.ses##c.sector i.female##i.sized_1 || id:",
}
#: The log prints M3 twice; printout k of the log is MODELS[PRINTOUT[k]].
PRINTOUT = ["M1", "M2 (sesrandom)", "M3 (noslope)", "M4 (femalerandom)", "M3 (noslope)", "M5", "M6 (final)"]

#: The same models as lme4-style formulas, and the names formulaic gives Stata's coefficients.
FORMULA_BASE = "mathach ~ ses*sector + ses*C(sized) + female*sector + female*C(sized)"
FORMULAS = {
    "M1": FORMULA_BASE + " + (ses + female | id)",
    "M2 (sesrandom)": FORMULA_BASE + " + (ses | id)",
    "M3 (noslope)": FORMULA_BASE + " + (1 | id)",
    "M4 (femalerandom)": FORMULA_BASE + " + (female | id)",
    "M5": "mathach ~ ses*sector + female*C(sized) + (1 | id)",
    "M6 (final)": "mathach ~ ses*sector + female*sized_1 + (1 | id)",
}
FORMULAIC_NAMES = {
    "ses": "ses", "sector": "sector", "c.ses#c.sector": "ses:sector", "2.sized": "C(sized)[T.2]",
    "3.sized": "C(sized)[T.3]", "2.sized#c.ses": "ses:C(sized)[T.2]", "3.sized#c.ses": "ses:C(sized)[T.3]",
    "1.female": "female", "1.female#1.sector": "female:sector", "1.female#2.sized": "female:C(sized)[T.2]",
    "1.female#3.sized": "female:C(sized)[T.3]", "1.sized_1": "sized_1", "1.female#1.sized_1": "female:sized_1",
    "_cons": "Intercept",
}


@pytest.fixture(autouse=True)
def _bounded_memory_maps():
    """Between tests is a point where no compilation runs: the suite's array-level tests (gradient checks
    compile hundreds of small programs) never pass through the entry points that check (jaxhlm._config)."""
    jaxhlm._config.relieve_map_pressure()


@pytest.fixture(scope="session")
def hsb():
    df = jaxhlm.datasets.hsb()
    return df.assign(sized_1=(df["sized"] == 1).astype(int))


@pytest.fixture(scope="session")
def log_models(hsb):
    return {name: jaxhlm.mixed(command, hsb) for name, command in MODELS.items()}

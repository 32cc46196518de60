"""Profile-likelihood confidence intervals: ``conf_int(method="profile")`` and ``varcorr(method="profile")``.

Reference values: tests/fixtures/profile_reference.json, written by tests/fixtures/profile_reference.R
(``Rscript tests/fixtures/profile_reference.R``; lme4 version in the JSON). Two references per interval:
"exact", roots of the profile found in R from a dense ML likelihood maximised by Nelder-Mead and Newton steps
and solved by uniroot to 1e-10 (no jaxhlm code), which jaxhlm matches to about 1e-9 relative; and lme4's
``confint(method = "profile")``, which interpolates a spline through a grid of profile points and is off by up
to 5e-5 relative where the profile is smooth (2% at the HSB endpoint where the correlation reaches +1, see
``test_an_endpoint_with_another_parameter_at_its_boundary``).
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
REF = json.loads((FIXTURES / "profile_reference.json").read_text())
FITS = {f["name"]: f for f in REF["fits"]}


@pytest.fixture(scope="module")
def sleep_fit() -> jaxhlm.MixedResult:
    return jaxhlm.fit(FITS["sleepstudy"]["formula"], pd.read_csv(FIXTURES / "sleepstudy.csv"))


@pytest.fixture(scope="module")
def pastes_fit() -> jaxhlm.MixedResult:
    return jaxhlm.fit(FITS["pastes"]["formula"], jaxhlm.datasets.pastes())


def _intervals(result: jaxhlm.MixedResult) -> dict[str, np.ndarray]:
    """Every profile interval of a fit by its reference name: fixed effects and covariances from conf_int,
    standard deviations and correlations from varcorr."""
    out = {name: row.to_numpy() for name, row in result.conf_int(method="profile").iterrows()}
    out.update({name: row.to_numpy() for name, row in
                result.varcorr(method="profile")[["ci_lower", "ci_upper"]].iterrows()})
    return out


@pytest.mark.parametrize("name", ["sleepstudy", "pastes"])
def test_matches_the_exact_profile_and_lme4(name, sleep_fit, pastes_fit):
    ref = FITS[name]
    got = _intervals(sleep_fit if name == "sleepstudy" else pastes_fit)
    for label, exact in ref["exact"].items():
        np.testing.assert_allclose(got[label], exact, rtol=1e-7, atol=1e-12, err_msg=label)
    for label, lme4 in ref["lme4"].items():
        np.testing.assert_allclose(got[label], lme4, rtol=1e-4, err_msg=label)


def test_variances_are_the_squared_standard_deviation_intervals(sleep_fit):
    ci, sd = sleep_fit.conf_int(method="profile"), sleep_fit.varcorr(method="profile")
    for var, s in [("var(Days)", "sd(Days)"), ("var(_cons)", "sd(_cons)"), ("var(Residual)", "sd(Residual)")]:
        np.testing.assert_allclose(ci.loc[var].to_numpy(), sd.loc[s, ["ci_lower", "ci_upper"]].to_numpy() ** 2,
                                   rtol=1e-12)
    # Each interval holds its estimate; the profile's are asymmetric where the Wald ones are not.
    est = sleep_fit.params
    assert np.all((ci["lower"] < est) & (est < ci["upper"]))
    wald = sleep_fit.conf_int()
    assert not np.allclose(ci.loc["cov(Days,_cons)"], wald.loc["cov(Days,_cons)"], rtol=1e-2)


def test_an_interval_reaching_zero(pastes_fit):
    """The batch SD's profile stays above the cut-off down to 0, so the lower limit is exactly 0 (lme4: 0)."""
    sd = pastes_fit.varcorr(method="profile")
    assert sd.loc["sd(_cons[batch])", "ci_lower"] == 0.0
    assert pastes_fit.conf_int(method="profile").loc["var(_cons[batch])", "lower"] == 0.0


def test_an_endpoint_with_another_parameter_at_its_boundary(hsb):
    """At the lower limit of sd(ses) the correlation is +1: the nuisance maximum lies on the boundary, where
    lme4's spline misses the exact root by 2%; the correlation's own upper limit is 1."""
    ref = FITS["hsb_slope"]
    m = jaxhlm.fit(ref["formula"], hsb)
    sd = m.varcorr(method="profile")
    lower = sd.loc["sd(ses)", "ci_lower"]
    assert lower == pytest.approx(ref["exact"]["sd(ses)"][0], rel=1e-7)
    assert abs(lower - ref["lme4"]["sd(ses)"][0]) / lower > 0.02
    assert sd.loc["corr(ses,_cons)", "ci_upper"] == 1.0
    assert sd.loc["sd(ses)", "ci_upper"] == pytest.approx(ref["lme4"]["sd(ses)"][1], rel=1e-4)


def test_a_reml_fit_profiles_the_ml_likelihood(sleep_fit):
    """As lme4's: the REML criterion has no profile in β, so a REML fit's intervals are those of its ML refit."""
    reml = jaxhlm.fit(FITS["sleepstudy"]["formula"], pd.read_csv(FIXTURES / "sleepstudy.csv"), reml=True)
    np.testing.assert_allclose(reml.conf_int(method="profile").to_numpy(),
                               sleep_fit.conf_int(method="profile").to_numpy(), rtol=1e-7)
    assert reml.varcorr(method="profile")["estimate"].iloc[0] != sleep_fit.varcorr()["estimate"].iloc[0]


def test_other_levels(sleep_fit):
    """A 90% interval lies inside the 95% one, at χ²₁(0.9) below the maximum."""
    ci90, ci95 = sleep_fit.conf_int(0.10, method="profile"), sleep_fit.conf_int(method="profile")
    assert np.all((ci95["lower"] < ci90["lower"]) & (ci90["upper"] < ci95["upper"]))


def test_bad_input(sleep_fit, hsb):
    with pytest.raises(JaxhlmError, match="method must be 'wald' or 'profile'"):
        sleep_fit.conf_int(method="boot")
    singular = jaxhlm.mixed("mathach c.ses##i.sector || id: ses, cov(unstr)", hsb)
    assert singular.singular
    with pytest.raises(JaxhlmError, match="fit is singular"):
        singular.conf_int(method="profile")

"""Confidence intervals beyond Wald's: ``conf_int`` and ``varcorr`` with ``method="profile"`` or ``"bootstrap"``.

Profile-likelihood intervals.

Reference values: tests/fixtures/profile_reference.json, written by tests/fixtures/profile_reference.R
(``Rscript tests/fixtures/profile_reference.R``; lme4 version in the JSON). Two references per interval:
"exact", roots of the profile found in R from a dense ML likelihood maximised by Nelder-Mead and Newton steps
and solved by uniroot to 1e-10 (no jaxhlm code), which jaxhlm matches to about 1e-9 relative; and lme4's
``confint(method = "profile")``, which interpolates a spline through a grid of profile points and is off by up
to 5e-5 relative where the profile is smooth (2% at the HSB endpoint where the correlation reaches +1, see
``test_an_endpoint_with_another_parameter_at_its_boundary``).

Parametric-bootstrap percentile intervals: tests/fixtures/bootstrap_ci_reference.json, lme4's
``confint(method = "boot", boot.type = "perc")`` with 2,000 replicates (tests/fixtures/bootstrap_ci_reference.R).
Both are Monte-Carlo estimates, compared within their error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from conftest import MODELS
from jaxhlm import JaxhlmError

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "profile_reference.json").read_text())
BOOT = json.loads((FIXTURES / "bootstrap_ci_reference.json").read_text())
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


def test_bootstrap_intervals_are_the_percentiles_of_the_refits(sleep_fit):
    """The intervals are the quantiles of refit_batch's estimates on simulate's draws (same seed), by row."""
    fits = jaxhlm.refit_batch(sleep_fit, np.asarray(jaxhlm.simulate(sleep_fit, 200, seed=3)).T, progress=False)
    assert fits.converged.all()
    ci = sleep_fit.conf_int(0.1, method="bootstrap", B=200, seed=3)
    draws = np.column_stack([fits.beta, fits.varcomp])
    np.testing.assert_allclose(ci.to_numpy(), np.quantile(draws, [0.05, 0.95], axis=0).T, rtol=1e-10)
    sd = sleep_fit.varcorr(0.1, method="bootstrap", B=200, seed=3)
    s = np.sqrt(fits.varcomp[:, [0, 1, 3]])  # sd(Days), sd(_cons), σ
    corr = fits.varcomp[:, 2] / (s[:, 0] * s[:, 1])
    expect = np.column_stack([s[:, 0], s[:, 1], corr, s[:, 2]])
    np.testing.assert_allclose(sd[["ci_lower", "ci_upper"]].to_numpy(),
                               np.quantile(expect, [0.05, 0.95], axis=0).T, rtol=1e-10)
    assert not np.allclose(sleep_fit.conf_int(0.1, method="bootstrap", B=200, seed=4), ci)


def test_bootstrap_intervals_agree_with_lme4(sleep_fit):
    """Within Monte-Carlo error: a 2.5% quantile of B draws has a standard error of about 0.085 / √(B/1000)
    of the estimate's bootstrap SD, so jaxhlm's (B = 1,000) and lme4's (B = 2,000) differ by 0.10 SD or so;
    the test allows 0.45 SD (4.3 standard errors). The correlation's upper limit is 1 in both (a share of the
    refits is singular with r = +1)."""
    sd = sleep_fit.varcorr(method="bootstrap", B=1000, seed=1)
    ci = sleep_fit.conf_int(method="bootstrap", B=1000, seed=1)
    fits = jaxhlm.refit_batch(sleep_fit, np.asarray(jaxhlm.simulate(sleep_fit, 1000, seed=1)).T, progress=False)
    s = np.sqrt(fits.varcomp[:, [0, 1, 3]])
    spread = {"sd(Days)": s[:, 0].std(), "sd(_cons)": s[:, 1].std(), "sd(Residual)": s[:, 2].std(),
              "corr(Days,_cons)": np.nanstd(fits.varcomp[:, 2] / (s[:, 0] * s[:, 1])),
              "Intercept": fits.beta[:, 0].std(), "Days": fits.beta[:, 1].std()}
    for label, (lo, hi) in BOOT["intervals"].items():
        got = (ci.loc[label] if label in ci.index else sd.loc[label, ["ci_lower", "ci_upper"]]).to_numpy()
        assert np.all(np.abs(got - [lo, hi]) < 0.45 * spread[label]), (label, got, (lo, hi))
    assert sd.loc["corr(Days,_cons)", "ci_upper"] == pytest.approx(1.0, abs=1e-6)


def test_a_singular_fit(hsb):
    """The correlation is estimated at +1: the profile starts on the boundary. Its intervals are exact where
    lme4's are far off (sd(ses)'s upper limit 0.669, lme4 0.502: twice the drop in the log likelihood there is
    1.24, not 3.84). At both ends of the covariance's interval the correlation stays at +1."""
    ref = FITS["hsb_singular"]
    m = jaxhlm.fit(ref["formula"], hsb)
    assert m.singular
    got = _intervals(m)
    for label, exact in ref["exact"].items():  # R's maximiser leaves ~1e-7 absolute (cov's lower limit is 0.064)
        np.testing.assert_allclose(got[label], exact, rtol=1e-6, atol=1e-6 * np.ptp(exact), err_msg=label)
    for label in ("sd(Residual)", "Intercept", "ses", "sector", "ses:sector"):
        np.testing.assert_allclose(got[label], ref["lme4"][label], rtol=1e-4, err_msg=label)
    assert got["sd(ses)"][1] > 1.3 * ref["lme4"]["sd(ses)"][1]


def test_a_zero_variance_estimate():
    """Dyestuff2's batch variance is estimated at 0: the SD's interval starts at 0 and its upper limit is the
    exact root. At the intercept's endpoints the batch SD is about 0.48, inside: the maximisation over the other
    parameters has to leave the boundary (lme4's endpoints are 1.7e-4 too wide: twice the drop there is 3.845)."""
    ref = FITS["dyestuff2"]
    m = jaxhlm.fit(ref["formula"], pd.read_csv(FIXTURES / "dyestuff2.csv"))
    assert m.singular
    got = _intervals(m)
    assert got["sd(_cons)"][0] == 0.0
    for label, exact in ref["exact"].items():
        np.testing.assert_allclose(got[label], exact, rtol=1e-7, err_msg=label)
    np.testing.assert_allclose(got["sd(Residual)"], ref["lme4"]["sd(Residual)"], rtol=1e-4)


def test_a_rank_deficient_block_of_three_is_refused(hsb):
    """The log's M1: Σ of (ses, female, _cons) is rank-deficient; no profile can start there (Stata reports no
    variance-component SEs for it either). A 2x2 block at r = +1 is profiled (test_a_singular_fit)."""
    m1 = jaxhlm.mixed(MODELS["M1"], hsb)
    assert m1.singular
    with pytest.raises(JaxhlmError, match=r"3x3 unstructured covariance .* is singular"):
        m1.conf_int(method="profile")


def test_bad_input(sleep_fit):
    with pytest.raises(JaxhlmError, match="method must be 'wald', 'profile' or 'bootstrap'"):
        sleep_fit.conf_int(method="boot")
    with pytest.raises(JaxhlmError, match="B must be a whole number"):
        sleep_fit.conf_int(method="bootstrap", B=1)


def test_command_line(capsys, pastes_fit):
    from jaxhlm.cli import main

    data = str(Path(jaxhlm.__file__).parent / "datasets" / "pastes.csv")
    assert main(["confint", FITS["pastes"]["formula"], "--data", data]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Profile-likelihood 95% confidence intervals")
    upper = pastes_fit.varcorr(method="profile").loc["sd(_cons[batch:cask])", "ci_upper"]
    line = next(ln for ln in out.splitlines() if ln.startswith("sd(_cons[batch:cask])"))
    assert float(line.split()[-1]) == pytest.approx(upper, rel=1e-5)
    assert main(["confint", FITS["pastes"]["formula"], "--data", data, "--level", "100"]) == 2
    assert "--level must be a percentage" in capsys.readouterr().err


def test_estat_sd_in_a_do_file(pastes_fit):
    """``estat sd, profile`` and ``estat sd, bootstrap(#) seed(#)``: jaxhlm extensions, said so in the output."""
    log = jaxhlm.run_do("use jaxhlm/datasets/pastes.csv, clear\nquietly mixed strength || batch: || cask:\n"
                        "estat sd, profile\nestat sd, bootstrap(100) seed(3) level(90)",
                        base_dir=Path(jaxhlm.__file__).parents[1])
    profile, boot = log.split(". estat sd, bootstrap")
    assert "Profile-likelihood confidence intervals (jaxhlm extension of estat sd)" in profile
    cask = [ln for ln in profile.splitlines() if "sd(_cons)" in ln][1]  # batch's row, then cask's
    want = pastes_fit.varcorr(method="profile").loc["sd(_cons[batch:cask])", ["ci_lower", "ci_upper"]]
    np.testing.assert_allclose([float(v) for v in cask.split()[-2:]], want, rtol=1e-6)
    assert "B = 100, seed(3) (jaxhlm extension of estat sd)" in boot and "[90% conf. interval]" in boot
    want = pastes_fit.varcorr(0.1, method="bootstrap", B=100, seed=3).loc["sd(Residual)", ["ci_lower", "ci_upper"]]
    resid = next(ln for ln in boot.splitlines() if "sd(Residual)" in ln)
    np.testing.assert_allclose([float(v) for v in resid.split()[-2:]], want, rtol=1e-6)


@pytest.mark.parametrize("options, message", [
    ("seed(2)", r"seed\(\) goes with bootstrap"),
    ("profile bootstrap(10)", "profile or bootstrap"),
    ("variance", "estat sd accepts level"),
])
def test_estat_sd_bad_options(options, message):
    with pytest.raises(jaxhlm.DoFileError, match=message):
        jaxhlm.run_do(f"quietly mixed mathach ses || id:\nestat sd, {options}")

"""Every number of the reference Stata log, reproduced from the bundled data.

Expected values are parsed from tests/fixtures/stata_hsb_model_building.txt (the log) and
tests/fixtures/stata_conventions.md (the exact optimum of each model, from an independent float64 refit).
Where Stata stopped short of the optimum (M1, M2 on the boundary; M4 on a flat likelihood) its last digits
cannot be reproduced by an exact optimiser; those quantities are checked against the exact optimum, and
against the log at the precision the conventions document.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import jaxhlm
import stata_log
from conftest import FORMULAIC_NAMES, FORMULAS, MODELS, PRINTOUT

PRINTOUTS = stata_log.printouts()
EXACT_FE = ("M1", "M2 (sesrandom)", "M4 (femalerandom)")  # Stata's digits not reproducible (conventions §0)


def sig(a: float, b: float, digits: int = 5) -> bool:
    """a equals b to ``digits`` significant digits of b (half a unit in the last of them)."""
    if b == 0:
        return abs(a) < 10.0 ** -digits
    return abs(a - b) <= 0.5 * 10.0 ** (math.floor(math.log10(abs(b))) - digits + 1)


def printed(a: float, b: float, decimals: int) -> bool:
    """a, printed with ``decimals`` decimals, reads b."""
    return abs(a - b) <= 0.5 * 10.0**-decimals + 1e-12


@pytest.mark.parametrize("k", range(len(PRINTOUTS)))
def test_header_and_lr_line(log_models, k):
    p, r = PRINTOUTS[k], log_models[PRINTOUT[k]]
    assert printed(r.llf, p.llf, 3)
    assert (r.nobs, r.ngroups) == (p.nobs, p.ngroups) == (7185, 160)
    sizes = r.group_sizes
    assert (sizes["min"], round(sizes["avg"], 1), sizes["max"]) == (p.obs_min, p.obs_avg, p.obs_max)
    assert r.wald.df == p.wald_df
    if PRINTOUT[k] in ("M1", "M2 (sesrandom)"):
        # Stata's Wald here comes from its non-optimal point (conventions §5); ours is the value at the MLE.
        assert printed(r.wald.statistic, stata_log.wald_at_mle(PRINTOUT[k]), 4)
        assert abs(r.wald.statistic - p.wald) < 0.05
    else:
        assert printed(r.wald.statistic, p.wald, 2)
    assert r.wald.pvalue < 5e-5  # printed 0.0000
    assert printed(r.lr_linear.statistic, p.lr_stat, 2)
    assert (r.lr_linear.chibar, r.lr_linear.df) == (p.lr_chibar, p.lr_df)
    assert r.lr_linear.pvalue < 5e-5


def relative_cov(theta, blocks) -> np.ndarray:
    lam = np.tensordot(np.asarray(theta), jaxhlm.covariance.templates(blocks), 1)
    return lam @ lam.T


def conventions_relative_cov(ex: dict, r) -> np.ndarray:
    """ΛΛᵀ of the conventions' θ, which is lme4's Cholesky layout with the effects in Stata's order."""
    stata_order = tuple(jaxhlm.covariance.Block(b.kind, b.q) for b in r.design.blocks)
    return relative_cov(ex["theta"], stata_order)


@pytest.mark.parametrize("model", list(MODELS))
def test_exact_optimum(log_models, model):
    r, ex = log_models[model], stata_log.exact_optimum(model)
    assert abs(r.llf - ex["llf"]) < 1e-6
    assert r.converged
    # The conventions give θ as the Cholesky factor in Stata's effect order; jaxhlm's θ factors the intercept
    # first (covariance.Block.lead), so the comparison is of the relative covariance ΛΛᵀ both describe.
    np.testing.assert_allclose(relative_cov(r.theta, r.design.blocks), conventions_relative_cov(ex, r), atol=2e-6)
    assert r.scale == pytest.approx(ex["sigma2"], rel=1e-7)
    for stata, b in ex["beta"].items():
        assert r.fe_params[stata] == pytest.approx(b, rel=1e-6, abs=1e-8), stata
    assert r.singular == (model in ("M1", "M2 (sesrandom)"))


@pytest.mark.parametrize("k", range(len(PRINTOUTS)))
def test_fixed_effects(log_models, k):
    p, model = PRINTOUTS[k], PRINTOUT[k]
    r = log_models[model]
    table = r.to_frame()["fixed"]
    assert list(table.index) == list(p.coef)
    assert r.design.omitted == tuple(p.omitted)
    exact = stata_log.fixed_at_mle(model)
    for stata, (b, se, z, pz, lo, hi) in p.coef.items():
        row = table.loc[stata]
        assert printed(row.z, z, 2) and printed(row.p, pz, 3), stata
        if model in EXACT_FE:
            b_ex, se_ex = exact[stata]
            assert row.coef == pytest.approx(b_ex, rel=2e-7, abs=1e-8), stata
            assert row.std_err == pytest.approx(se_ex, rel=2e-7), stata
            assert sig(row.coef, b, 4) and sig(row.std_err, se, 3), stata  # what the log's digits allow
        else:
            ours_row = (row.coef, row.std_err, row.ci_lower, row.ci_upper)
            for ours, theirs in zip(ours_row, (b, se, lo, hi), strict=True):
                assert sig(ours, theirs), (stata, ours, theirs)


@pytest.mark.parametrize("k", range(len(PRINTOUTS)))
def test_random_effects(log_models, k):
    p, model = PRINTOUTS[k], PRINTOUT[k]
    r = log_models[model]
    re = r.to_frame()["random"]
    labels = [lab.replace("ses_m", "ses") for lab in p.random]  # the log's M1 label artefact (conventions §1)
    assert list(re.index) == labels
    if model == "M1":
        ex = stata_log.exact_optimum("M1")
        assert np.isnan(re.std_err).all() and p.se_failed
        assert "Standard-error calculation failed." in r.warnings
        assert "Warning: Standard-error calculation failed." in str(r.summary())
        np.testing.assert_allclose(r.cov_re.to_numpy(), ex["sigma2"] * conventions_relative_cov(ex, r), rtol=1e-6,
                                   atol=1e-9)
        for lab, (est, *_rest) in zip(labels, p.random.values(), strict=True):
            assert sig(re.loc[lab, "estimate"], est, 3)
        return
    assert not p.se_failed and not r.random_effects.warnings
    reference = {"M2 (sesrandom)": "boundary limit (corr fixed at 1) @MLE",
                 "M4 (femalerandom)": "profile-Hessian @MLE"}.get(model)
    if reference:
        for lab, vals in stata_log.random_at(model, reference).items():
            np.testing.assert_allclose(re.loc[lab].to_numpy(), vals, rtol=2e-7, err_msg=lab)
        if model == "M2 (sesrandom)":
            assert any("corr(ses,_cons)" in n for n in r.random_effects.notes)
        else:  # M4: Stata's printed values are good to ~4 significant digits (conventions §4)
            for lab, vals in p.random.items():
                assert all(sig(a, b, 3) for a, b in zip(re.loc[lab].to_numpy(), vals, strict=True)), lab
        return
    for lab, vals in p.random.items():
        for ours, theirs in zip(re.loc[lab].to_numpy(), vals, strict=True):
            assert sig(ours, theirs), (lab, ours, theirs)


def test_estat_ic(log_models):
    rows = stata_log.estat_ic()
    for (_, n, ll, df, aic, bic), model in zip(rows, ["M2 (sesrandom)", "M3 (noslope)", "M4 (femalerandom)",
                                                         "M6 (final)"], strict=True):
        ic = log_models[model].ic().iloc[0]
        assert (ic["N"], ic["df"]) == (n, df)
        assert printed(ic["ll(model)"], ll, 2) and printed(ic["AIC"], aic, 2) and printed(ic["BIC"], bic, 2)


def test_lrtest(log_models):
    m = log_models
    pairs = [("M2 (sesrandom)", "M3 (noslope)"), ("M3 (noslope)", "M4 (femalerandom)"),
             ("M6 (final)", "M4 (femalerandom)"), ("M6 (final)", "M2 (sesrandom)")]
    names = {"M2 (sesrandom)": "sesrandom", "M3 (noslope)": "noslope", "M4 (femalerandom)": "femalerandom",
             "M6 (final)": "."}
    for (a, b), (assumption, stat, df, pval) in zip(pairs, stata_log.lrtests(), strict=True):
        t = jaxhlm.lrtest(m[a], m[b], names=(names[a], names[b]))
        assert t.df == df and printed(t.statistic, stat, 2) and printed(t.pvalue, pval, 4)
        assert t.assumption == assumption and "conservative" in str(t)


def test_wald_tests_accumulate(log_models):
    expected = stata_log.tests()
    m3, m5 = log_models["M3 (noslope)"], log_models["M5"]
    t1 = m3.test("1.female#1.sector = 0")
    t2 = m3.test("2.sized#c.ses = 0", accumulate=t1)
    t3 = m3.test("[mathach]3.sized#c.ses", accumulate=t2)
    t4 = m5.test("2.sized = 3.sized")
    t5 = m5.test("_b[1.female#2.sized] = 1.female#3.sized", accumulate=t4)
    for t, (lines, df, chi2, p) in zip([t1, t2, t3, t4, t5], expected, strict=True):
        assert t.constraints == lines
        assert t.df == df and printed(t.statistic, chi2, 2) and printed(t.pvalue, p, 4)
    # A joint test given at once equals the accumulated one.
    joint = m3.test(["1.female#1.sector", "2.sized#c.ses", "3.sized#c.ses"])
    assert joint.statistic == pytest.approx(t3.statistic, rel=1e-12)


@pytest.mark.parametrize("model", list(MODELS))
def test_formula_front_end_agrees(hsb, log_models, model):
    """The lme4-style formula of each model builds the same design under formulaic's names: same fit."""
    r, s = jaxhlm.fit(FORMULAS[model], hsb), log_models[model]
    assert r.llf == pytest.approx(s.llf, abs=1e-8)
    assert sorted(r.design.fe_names) == sorted(FORMULAIC_NAMES[n] for n in s.design.fe_names)
    for name in s.design.fe_names:
        assert r.fe_params[FORMULAIC_NAMES[name]] == pytest.approx(s.fe_params[name], rel=1e-6, abs=1e-9), name
        assert r.bse_fe[FORMULAIC_NAMES[name]] == pytest.approx(s.bse_fe[name], rel=1e-6), name

"""Three-level models: clusters (classes) nested in groups (schools), in Stata's ``|| school: || class:`` and
lme4's ``(1 | school/class)`` syntax.

Reference values: tests/fixtures/nested_reference.json, written by tests/fixtures/nested_reference.R
(``Rscript tests/fixtures/nested_reference.R``; lme4 1.1-31, lmerTest, pbkrtest and numDeriv; versions in the
JSON) on tests/fixtures/three_level.csv (seeded synthetic data: ``python tests/fixtures/three_level.py``) and
lme4's Pastes data (jaxhlm/datasets/pastes.csv, ``jaxhlm.datasets.pastes()``). lme4 gives the log likelihoods, fixed effects and their SEs,
variance components, BLUPs and conditional variances; the variance components' standard errors (Stata's,
from the observed information in the reported parameters) and the ICCs come from the likelihood written out
in R with dense per-school matrices, polished by Newton steps and differentiated by numDeriv, so no jaxhlm
code is involved. jaxhlm agrees to about 1e-7 relative; the tests ask for 1e-5 of quantities that rest on a
numerical Hessian or on lme4's optimiser (bobyqa stops about 1e-8 short), 1e-6 elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError
from jaxhlm.formula import parse_formula

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "nested_reference.json").read_text())
FITS = {f["name"]: f for f in REF["fits"]}


@pytest.fixture(scope="module")
def three() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "three_level.csv")


def _data(ref: dict) -> pd.DataFrame:
    return pd.read_csv(FIXTURES.parent.parent / ref["data"])


@pytest.mark.parametrize("name", list(FITS))
@pytest.mark.parametrize("syntax", ["stata", "formula"])
def test_matches_lme4_and_stata_standard_errors(name, syntax):
    ref = FITS[name]
    data = _data(ref)
    r = (jaxhlm.mixed(ref["stata"], data) if syntax == "stata"
         else jaxhlm.fit(ref["formula"], data, reml=ref["reml"]))
    assert r.converged and not r.singular
    assert r.llf == pytest.approx(ref["loglik"], abs=1e-6)
    assert r.llf == pytest.approx(ref["loglik_lme4"], abs=1e-6)
    fixed = {k.replace("(Intercept)", "Intercept"): v for k, v in ref["fixed"].items()}
    fixed_se = {k.replace("(Intercept)", "Intercept"): v for k, v in ref["fixed_se"].items()}
    names = [n if syntax == "formula" else {"_cons": "Intercept"}.get(n, n) for n in r.fe_params.index]
    np.testing.assert_allclose(r.fe_params.to_numpy(), [fixed[n] for n in names], rtol=1e-6)
    np.testing.assert_allclose(r.bse_fe.to_numpy(), [fixed_se[n] for n in names], rtol=1e-5)
    np.testing.assert_allclose(r.random_effects.estimate, ref["varcomp"], rtol=1e-5)
    np.testing.assert_allclose(r.random_effects.se, ref["varcomp_se"], rtol=1e-5)


def test_icc_per_level_matches_reference():
    ref = FITS["intercepts_ml"]
    icc = jaxhlm.mixed(ref["stata"], _data(ref)).icc()
    assert [row.level for row in icc.rows] == ["school", "class|school"]
    for row, want in zip(icc.rows, ref["icc"]):
        assert row.icc == pytest.approx(want["icc"], rel=1e-5)
        assert row.se == pytest.approx(want["se"], rel=1e-5)
        assert [row.ci_lower, row.ci_upper] == pytest.approx(want["ci"], rel=1e-5)
    assert icc.icc == icc.rows[-1].icc  # the scalar attributes are the innermost level's (Stata's r(icc2))
    lines = str(icc).splitlines()
    assert lines[0] == "Residual intraclass correlation"
    assert lines[5].startswith("                      school |")
    assert lines[6].startswith("                class|school |")


@pytest.mark.parametrize("method, key", [("satterthwaite", "satterthwaite_df"), ("kroger", "kenward_roger_df")])
def test_small_sample_degrees_of_freedom_match_lmertest_and_pbkrtest(three, method, key):
    ref = FITS["slope_reml"]
    r = jaxhlm.fit(ref["formula"], three, reml=True, dfmethod=method)
    want = {k.replace("(Intercept)", "Intercept"): v for k, v in ref[key].items()}
    # lmerTest's Satterthwaite df rest on a numerical Hessian (see test_postestimation.py): 1e-5.
    np.testing.assert_allclose(r.ddf, [want[n] for n in r.fe_params.index], rtol=1e-5)
    if method == "kroger":
        se = {k.replace("(Intercept)", "Intercept"): v for k, v in ref["kenward_roger_se"].items()}
        np.testing.assert_allclose(r.bse_fe.to_numpy(), [se[n] for n in r.fe_params.index], rtol=1e-5)


@pytest.mark.parametrize("method", ["satterthwaite", "kroger"])
def test_balanced_nesting_gives_the_exact_degrees_of_freedom(method):
    # Pastes is balanced: the intercept's exact df are batches - 1 = 9 (lmerTest: 8.99999947, numerically).
    r = jaxhlm.fit("strength ~ 1 + (1 | batch/cask)", jaxhlm.datasets.pastes(), reml=True, dfmethod=method)
    assert r.ddf == pytest.approx([9.0], rel=1e-8)
    assert FITS["pastes_reml"]["satterthwaite_df"] == pytest.approx([9.0], rel=1e-6)


def test_blups_of_both_levels_match_lme4():
    ref = FITS["intercepts_ml"]
    r = jaxhlm.mixed(ref["stata"], _data(ref))
    outer, inner = r.ranef(), r.ranef("class")
    assert list(inner.index.names) == ["school", "class"] and list(inner.columns) == ["_cons"]
    np.testing.assert_allclose(outer["_cons"].to_numpy(), [ref["ranef_outer"][str(s)] for s in outer.index],
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(inner["_cons"].to_numpy(),
                               [ref["ranef_inner"][f"{s}.{c}"] for s, c in inner.index], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(r.ranef_cov()[:, 0, 0], ref["condvar_outer"], rtol=1e-5)
    assert r.ranef_cov(1).shape == (len(inner), 1, 1)
    with pytest.raises(jaxhlm.JaxhlmError, match="level 'room' is not a grouping level.*school, class"):
        r.ranef("room")


def test_every_syntax_for_the_same_nesting_gives_the_same_fit(three):
    ref = jaxhlm.fit("score ~ ses + (1 | school/class)", three)
    cls = three.assign(cls=three["school"] * 100 + three["class"])  # class ids unique across schools
    for r in (jaxhlm.fit("score ~ ses + (1 | school) + (1 | school:class)", three),
              jaxhlm.fit("score ~ ses + (1 | school:class) + (1 | school)", three),  # outer level found by name
              jaxhlm.fit("score ~ ses + (1 | school) + (1 | cls)", cls),  # nested in the data
              jaxhlm.mixed("score ses || school: || class:", three),
              jaxhlm.mixed("score ses || school: || cls:", cls)):
        assert r.llf == pytest.approx(ref.llf, abs=1e-8)
        np.testing.assert_allclose(r.random_effects.estimate, ref.random_effects.estimate, rtol=1e-7)
        assert r.group_info()["groups"].tolist() == [30, 106]


def test_header_and_random_table_follow_stata(three):
    r = jaxhlm.mixed("score ses || school: ses, cov(un) || class:", three)
    text = str(r).splitlines()
    sizes = [three.groupby("school").size(), three.groupby(["school", "class"]).size()]
    at = text.index(" Group variable |     groups    Minimum    Average    Maximum")
    for line, name, s in zip(text[at + 2:at + 4], ["school", "class"], sizes):
        assert line == f"{name:>15} | {len(s):>10} {s.min():>10} {s.mean():>10.1f} {s.max():>10}"
    assert text[at - 1] == "                |     No. of       Observations per group"
    assert text[at + 4] == "-" * 61
    school, klass = text.index("school: Unstructured         |"), text.index("class: Identity              |")
    assert klass == school + 5 and text[klass - 1] == "-" * 29 + "+" + "-" * 48
    assert "LR test vs. linear model: chi2(4)" in str(r)
    info = r.group_info()
    assert info.loc["class", "avg"] == pytest.approx(sizes[1].mean())


def test_lrtest_of_the_nested_level(three):
    two = jaxhlm.mixed("score ses || school:", three)
    nested = jaxhlm.mixed("score ses || school: || class:", three)
    lr = jaxhlm.lrtest(two, nested)
    assert lr.df == 1
    assert lr.statistic == pytest.approx(2 * (nested.llf - two.llf), rel=1e-12)
    assert lr.statistic > 0


def test_chunked_input_equals_one_shot(three):
    model = FITS["slope_ml"]["stata"]  # a structure other tests compile too
    ref = jaxhlm.mixed(model, three)
    shuffled = three.sample(frac=1.0, random_state=3)  # clusters spread over several chunks
    got = jaxhlm.mixed(model,
                       (shuffled.iloc[i:i + 100] for i in range(0, len(shuffled), 100)))
    assert got.llf == pytest.approx(ref.llf, abs=1e-8)
    np.testing.assert_allclose(got.fe_params.to_numpy(), ref.fe_params.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(got.random_effects.estimate, ref.random_effects.estimate, rtol=1e-7)
    np.testing.assert_allclose(got.ranef("class").to_numpy(), ref.ranef("class").to_numpy(), rtol=1e-6, atol=1e-9)


def test_estat_group_and_icc_in_a_do_file():
    log = jaxhlm.run_do(f"use {FIXTURES / 'three_level.csv'}\nquietly mixed score ses || school: || class:\n"
                        "estat group\nestat icc")
    lines = log.splitlines()
    at = lines.index(". estat group")
    assert lines[at + 2] == "-" * 61
    assert lines[at + 6].split() == ["school", "|", "30", "14", "30.5", "55"]
    assert lines[at + 7].split() == ["class", "|", "106", "3", "8.6", "14"]
    assert "class|school |" in log


@pytest.mark.parametrize("model, error, words", [
    ("score ses || school: || class: || female:", FormulaError, ["3 grouping levels"]),
    ("score ses || school: || class: || school:", FormulaError, ["together, the outer level first"]),
    ("score ses || school: || sector:", DataError, ["every school group holds a single sector cluster"]),
    ("score ses || school: || row:", DataError, ["every row cluster has a single observation"]),
])
def test_bad_nesting_is_explained(three, model, error, words):
    data = three.assign(row=np.arange(len(three)))
    with pytest.raises(error) as info:
        jaxhlm.mixed(model, data)
    for w in words:
        assert w in str(info.value)


def test_inner_level_of_slopes_only(three):
    r = jaxhlm.fit("score ~ ses + (1 | school) + (0 + ses | school:class)", three)
    assert r.converged and r.design.re_names == ("_cons", "ses")
    with pytest.raises(jaxhlm.JaxhlmError, match="random intercept at each level: school:class's"):
        r.icc()


def test_influence_of_schools(three):
    # A school's weight multiplies its classes' terms too: leaving it out (exact) equals refitting without its
    # rows, and the one-step derivative is close (here 6% and 4% of the largest |DFBETA|, the same top groups).
    model = "score ses || school: || class:"
    r = jaxhlm.mixed(model, three)
    exact, step = r.influence(exact=True), r.influence()
    assert exact.converged.all()
    for school in (6, 17):
        refit = jaxhlm.mixed(model, three[three["school"] != school])
        np.testing.assert_allclose(exact.dfbeta.loc[school], r.fe_params - refit.fe_params, atol=1e-6)
    error = (step.dfbeta - exact.dfbeta).abs().max() / exact.dfbeta.abs().max()
    assert (error < 0.1).all()
    top = lambda inf: set(inf.cooks_distance.sort_values().index[-4:])  # noqa: E731
    assert top(step) == top(exact)


@pytest.fixture(scope="module")
def class_bootstrap(three):
    small = jaxhlm.mixed("score ses || school:", three)
    big = jaxhlm.mixed("score ses || school: || class:", three)
    return small, big, jaxhlm.bootstrap_lrtest(small, big, B=1000, seed=2, progress=False)


def test_bootstrap_of_the_class_level_matches_lme4(class_bootstrap):
    # The LR for the class variance: its null distribution from 1,000 replicates each, jaxhlm's and lme4's
    # (tests/fixtures/lme4_nested_bootstrap.R), agree within Monte-Carlo error.
    ref = json.loads((FIXTURES / "lme4_nested_bootstrap.json").read_text())
    _, _, boot = class_bootstrap
    lr = boot.replicates
    assert boot.failed == 0 and np.nanmin(lr) >= 0.0
    for share, want in ((np.mean(lr < 1e-6), ref["boundary_share"]), (np.mean(lr >= 2.705543), ref["exceed_2.71"])):
        assert abs(share - want) < 3 * np.sqrt(2 * want * (1 - want) / ref["B"])
    assert boot.statistic == pytest.approx(33.27, abs=0.01) and boot.pvalue == pytest.approx(1 / 1001)
    assert boot.chibar_pvalue is not None


def test_bootstrap_replicates_and_batched_refits_equal_single_fits(three, class_bootstrap):
    small, big, boot = class_bootstrap
    Y = np.asarray(jaxhlm.simulate(small, 4, seed=2)).T  # replicates 0..3 of the bootstrap
    for r in range(4):
        data = three.assign(score=Y[:, r])
        a = jaxhlm.mixed("score ses || school:", data)
        b = jaxhlm.mixed("score ses || school: || class:", data)
        assert boot.small_fits.llf[r] == pytest.approx(a.llf, abs=1e-6)
        assert boot.big_fits.llf[r] == pytest.approx(max(b.llf, a.llf), abs=1e-6)
    Y = np.asarray(jaxhlm.simulate(big, 12, seed=5)).T  # drawn with class effects, refitted in one batch
    fits = jaxhlm.refit_batch(big, Y, chunk=4, progress=False)
    assert list(fits.to_frame().columns[-3:]) == ["var(_cons[school])", "var(_cons[school>class])", "var(Residual)"]
    for r in (0, 7, 11):
        single = jaxhlm.mixed("score ses || school: || class:", three.assign(score=Y[:, r]))
        assert fits.llf[r] == pytest.approx(single.llf, abs=1e-6)
        np.testing.assert_allclose(fits.varcomp[r], single.random_effects.estimate, rtol=1e-5)


def test_variance_parameters_are_named_by_level(three):
    r = jaxhlm.mixed("score ses || school: ses, cov(un) || class:", three)
    names = ["var(ses[school])", "var(_cons[school])", "cov(ses,_cons[school])", "var(_cons[school>class])",
             "var(Residual)"]
    assert list(r.params.index[2:]) == names
    assert list(r.bse.index) == list(r.params.index) == list(r.conf_int().index)
    assert list(r.to_frame()["random"].index) == names and list(r.to_dict()["random"]) == names
    assert r.to_dict()["groups"] == {"school": 30, "class": 106}
    assert list(r.varcorr().index) == [n.replace("var(", "sd(").replace("cov(", "corr(") if n != "var(Residual)"
                                       else "sd(Residual)" for n in names]
    assert r.params["var(_cons[school>class])"] == pytest.approx(r.random_effects.estimate[3])


def test_fitted_values_and_predictions_match_lme4(three):
    ref = FITS["intercepts_ml"]
    r = jaxhlm.mixed(ref["stata"], three)
    np.testing.assert_allclose(r.fittedvalues, ref["fitted"], rtol=1e-6)
    np.testing.assert_allclose(r.resid, three["score"] - np.asarray(ref["fitted"]), rtol=1e-5, atol=1e-6)
    new = pd.DataFrame(ref["new"])  # a known class, a new class of a known school, a new school
    np.testing.assert_allclose(r.predict(new), ref["predicted"], rtol=1e-6)
    assert r.predict(new)[2] == pytest.approx(r.predict(new, random=False)[2])


def test_slopes_at_both_levels_and_missing_values(three):
    spec = parse_formula("score ~ ses + (1 + ses | school/class)")
    assert [t.group for t in spec.random] == ["school", "school:class"]
    assert [b.kind for b in spec.blocks] == ["unstructured", "unstructured"]
    assert spec.re_names == ("ses", "_cons", "ses", "_cons") and spec.level_keys == (("school",), ("school", "class"))
    holes = three.assign(**{"class": three["class"].where(np.arange(len(three)) % 50 != 0)})
    r = jaxhlm.mixed("score ses || school: || class:", holes)
    assert r.design.n_dropped == 19 and r.nobs == len(three) - 19
    assert "19 observations dropped because of missing values" in str(r)

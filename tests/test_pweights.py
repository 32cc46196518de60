"""Sampling weights (Stata's pweights): the pseudo-likelihood weighted at every level, and its robust standard errors.

Two references (``Rscript tests/fixtures/pweights_reference.R``, which says how each was made):

* whole-number weights equal repeating an observation within its cluster, a cluster within its group, a group in
  the sample; lme4 ML fits of the repeated data give the estimates and the log likelihood;
* Stata's ``mixed`` with pweights at three levels of a sleepstudy design (the numbers the R package WeMix tests
  itself against): estimates, log pseudolikelihood and the robust standard errors, which only Stata computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.errors import JaxhlmError

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "pweights_reference.json").read_text())
FITS = {f["name"]: f for f in REF["fits"]}
SLEEP_GROUPS = {309: 2, 310: 2, 335: 2, 349: 2, 330: 3, 337: 3, 352: 3, 369: 3, 331: 4, 332: 4, 334: 4, 372: 4}


def _hsb() -> pd.DataFrame:
    """HSB with observation weights 2 on every third row and school weights 1, 2, 3 in turn (the fixture's)."""
    hsb = jaxhlm.datasets.hsb()
    rank = hsb["id"].rank(method="dense").astype(int) - 1
    return hsb.assign(w1=np.where(np.arange(len(hsb)) % 3 == 0, 2.0, 1.0), w2=1.0 + rank % 3)


def _three() -> pd.DataFrame:
    t = pd.read_csv(FIXTURES / "three_level.csv")
    return t.assign(w1=np.where(np.arange(len(t)) % 4 == 0, 2.0, 1.0), w2=1.0 + t["class"] % 2,
                    w3=1.0 + (t["school"] % 3 == 0))


def _sleep() -> pd.DataFrame:
    s = pd.read_csv(FIXTURES / "sleepstudy.csv")
    s["Group"] = s["Subject"].map(SLEEP_GROUPS).fillna(1).astype(int)
    return s.assign(c1=np.where(np.arange(len(s)) < 4, 2.0, 1.0), c2=np.where(s["Subject"] == 308, 2.0, 1.0),
                    c3=np.where(s["Group"] == 1, 2.0, 1.0))


SLEEP = "Reaction Days [pw=c1] || Group:{}, pweight(c3) || Subject:, pweight(c2)"
#: fixture name → (fit, the reference's variance components as this fit names them, in the fixture's order)
CASES = {
    "hsb_slope": (lambda: jaxhlm.fit("mathach ~ ses + sector + (1 + ses | id)", _hsb(), pweights="w1",
                                     group_pweights={"id": "w2"}),
                  ["var(_cons)", "var(ses)", "cov(ses,_cons)", "var(Residual)"]),
    "three_level": (lambda: jaxhlm.mixed("score ses [pw=w1] || school:, pweight(w3) || class:, pweight(w2)", _three()),
                    ["var(_cons[school>class])", "var(_cons[school])", "var(Residual)"]),
    "sleep_three": (lambda: jaxhlm.mixed(SLEEP.format(""), _sleep()),
                    ["var(_cons[Group>Subject])", "var(_cons[Group])", "var(Residual)"]),
    "sleep_three_slope": (lambda: jaxhlm.mixed(SLEEP.format(" Days"), _sleep()),
                          ["var(_cons[Group>Subject])", "var(Days[Group])", "var(_cons[Group])", "var(Residual)"]),
}


#: the Stata reference's variance components, as this fit names them
STATA_VARIANCES = {"sleep_three": ("var(_cons[Group])", "var(_cons[Group>Subject])", "var(Residual)"),
                   "sleep_three_slope": ("var(Days[Group])", "var(_cons[Group])", "var(_cons[Group>Subject])",
                                         "var(Residual)")}


@pytest.fixture(scope="module")
def fits() -> dict[str, jaxhlm.MixedResult]:
    return {name: make() for name, (make, _) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_equal_to_the_repeated_data(fits, name):
    ref, m = FITS[name], fits[name]
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-6)
    beta = m.fe_params.rename({"_cons": "(Intercept)", "Intercept": "(Intercept)", "Days": "Days"})
    np.testing.assert_allclose(beta[["(Intercept)", *ref["beta_names"][1:]]], ref["beta"], rtol=1e-6)
    # Both optima have the same log likelihood to 6e-11, which fixes an estimate to a small fraction of its standard
    # error, not to a relative precision where the likelihood is flat (the intercept variance of 4 groups: 1.3e-6
    # relative). Measured: 5.4e-6 standard errors at most (hsb_slope), 1.3e-6 relative.
    names = CASES[name][1]
    gap = np.abs(m.params[names].to_numpy() - ref["vcov"]) / m.bse[names].to_numpy()
    assert gap.max() < 1e-5, dict(zip(names, gap))
    assert m.nobs == len(_hsb() if name == "hsb_slope" else _three() if name == "three_level" else _sleep())


@pytest.mark.parametrize("name", ["sleep_three", "sleep_three_slope"])
def test_stata_mixed_with_pweights(fits, name):
    stata, m = REF["stata"][name], fits[name]
    assert m.llf == pytest.approx(stata["loglik"], abs=5e-5)  # as printed
    np.testing.assert_allclose(m.fe_params, stata["beta"], rtol=1e-6)
    # the robust standard errors: each group's score weighted by its weight, M/(M−1) over Stata's 4 clusters
    np.testing.assert_allclose(m.bse_fe, stata["bse"], rtol=2e-6)
    # Stata stops at its convergence tolerance, short of the optimum in the variance of 4 groups (756.5857 against
    # 756.5482, where the pseudo-likelihood is flat: the same -1389.0983 to the printed digits); lme4 on the
    # repeated data finds ours to 1e-7 (test_equal_to_the_repeated_data). Measured: 5.0e-5 at most.
    np.testing.assert_allclose(m.params[list(STATA_VARIANCES[name])], stata["vcov"], rtol=1e-4)
    text = str(m.summary())
    assert f"Log pseudolikelihood = {stata['loglik']:.4f}" in text
    assert "(Std. err. adjusted for 4 clusters in Group)" in text and "Robust" in text
    assert m.robust.count == 4 and m.to_dict()["vce"] == "robust"


BY_STRATUM = {r["name"]: r for r in REF["by_stratum"]}


@pytest.mark.parametrize("name, make", [
    ("hsb_by_sector", lambda: jaxhlm.fit("mathach ~ ses + sector + (1 | id)", _hsb(), pweights="w1",
                                         group_pweights={"id": "w2"}, residuals_by="sector")),
    ("three_level_by_female", lambda: jaxhlm.mixed("score ses [pw=w1] || school:, pweight(w3) || class:, pweight(w2) "
                                                   "residuals(independent, by(female))", _three())),
])
def test_residual_variance_by_stratum_equal_to_the_repeated_data(name, make):
    """nlme's ML fit of the repeated data with varIdent: never above ours in log likelihood, and on HSB short of it
    by 1.3e-8, so that its estimates are compared in units of their standard errors (measured: 8.4e-5 for the
    school variance of HSB, 1.3e-5 relative; 4e-7 relative on the three-level fit)."""
    ref, m = BY_STRATUM[name], make()
    assert 0 <= m.llf - ref["loglik"] < 1e-7
    re = [n for n in m.params.index if n.startswith("var(") and "Residual" not in n]
    residual = [f"var(Residual[{ref['by']}={v}])" for v in ref["residual_levels"]]
    fixed = sorted(m.fe_params.index, key=lambda n: n not in ("Intercept", "_cons"))  # nlme's: the intercept first
    names = fixed + re + residual
    gap = np.abs(m.params[names].to_numpy() - np.r_[ref["beta"], ref["re_vcov"], ref["residual_vcov"]])
    assert (gap / m.bse[names].to_numpy()).max() < 2e-4


def _ar1() -> pd.DataFrame:
    a = pd.read_csv(FIXTURES / "ar1.csv")
    return a.assign(v=1.0 + (a["id"].rank(method="dense").astype(int) - 1) % 3)


def test_ar1_residuals_with_weighted_groups():
    """With AR(1) residuals the groups may carry weights (a series' residuals are joint, so its observations may
    not): nlme on the data with each subject repeated as its weight says, and the sandwich of those repeated data
    clustered by the original subjects."""
    ref, a = REF["ar1_groups"], _ar1()
    m = jaxhlm.fit("y ~ time + x + (1 | id)", a, group_pweights={"id": "v"}, residuals="ar1", time="time")
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-7)
    np.testing.assert_allclose(m.fe_params, ref["beta"], rtol=1e-6)
    # both optima have the same log likelihood (5e-11): compared in standard errors, measured 3.8e-6 (7e-7 relative)
    names = ["var(_cons)", "rho(Residual)", "var(Residual)"]
    gap = np.abs(m.params[names].to_numpy() - [ref["re_vcov"], ref["rho"], ref["residual_vcov"]])
    assert (gap / m.bse[names].to_numpy()).max() < 1e-5
    repeated = pd.concat([a[a["v"] > k].assign(copy=k) for k in range(3)], ignore_index=True)
    repeated["series"] = repeated["id"].astype(str) + "_" + repeated["copy"].astype(str)
    by_copy = jaxhlm.fit("y ~ time + x + (1 | series)", repeated, residuals="ar1", time="time", vce="robust",
                         cluster="id")
    assert by_copy.llf == pytest.approx(m.llf, abs=1e-8)
    np.testing.assert_allclose(m.bse.to_numpy(), by_copy.bse.to_numpy(), rtol=1e-8)


def test_unit_weights_are_the_unweighted_robust_fit():
    s = _sleep().assign(one=1.0)
    weighted = jaxhlm.mixed("Reaction Days [pw=one] || Subject:, pweight(one)", s)
    robust = jaxhlm.mixed("Reaction Days || Subject:, vce(robust)", s)
    assert weighted.llf == pytest.approx(robust.llf, abs=1e-9)
    np.testing.assert_allclose(weighted.cov_params(), robust.cov_params(), rtol=1e-9)


def test_pwscale():
    """Stata's scalings of the observations' weights within each group: size (to sum to the group's rows),
    effective (to (Σw)²/Σw²), gk (to 1, the group's weight times the mean of its observations')."""
    hsb = _hsb().assign(w1=lambda d: 0.5 + (np.arange(len(d)) % 5) / 2)
    by = hsb.groupby("id")["w1"]
    manual = {"size": (hsb["w1"] * by.transform("size") / by.transform("sum"), hsb["w2"]),
              "effective": (hsb["w1"] * by.transform("sum") / hsb.assign(sq=hsb["w1"] ** 2).groupby("id")["sq"]
                            .transform("sum"), hsb["w2"]),
              "gk": (pd.Series(1.0, index=hsb.index), hsb["w2"] * by.transform("mean"))}
    fits = {}
    for scale, (rows, groups) in manual.items():
        scaled = jaxhlm.mixed(f"mathach ses [pw=w1] || id:, pweight(w2) pwscale({scale})", hsb)
        by_hand = jaxhlm.mixed("mathach ses [pw=a] || id:, pweight(b)", hsb.assign(a=rows, b=groups))
        assert scaled.llf == pytest.approx(by_hand.llf, rel=1e-10)
        np.testing.assert_allclose(scaled.params, by_hand.params, rtol=1e-8)
        np.testing.assert_allclose(scaled.bse, by_hand.bse, rtol=1e-8)
        fits[scale] = scaled.llf
    assert len({round(v, 3) for v in fits.values()}) == 3  # three different scalings


@pytest.mark.parametrize("data, cmd, group, label", [
    (_three, "score ses [pw=w1] || school:, pweight(w3) || class:, pweight(w2)", "school", 6),
    (_hsb, "mathach ses sector [pw=w1] || id:, pweight(w2)", "id", 1296),
])
def test_exact_influence_is_the_fit_without_the_group(data, cmd, group, label):
    """A group's sampling weight multiplies the weight that removes it: the exact DFBETA of a school (school 6 of
    the three-level data: weight 2, its classes 1 and 2; HSB's 1296: weight 3) is the change from refitting
    without it, and the one-step DFBETA is close to it."""
    df = data()
    m = jaxhlm.mixed(cmd, df)
    without = jaxhlm.mixed(cmd, df[df[group] != label])
    # measured: exact to 3e-13; one step within 5.9% (three levels) and 1.7% (HSB)
    np.testing.assert_allclose(m.influence(exact=True).dfbeta.loc[label], m.fe_params - without.fe_params, atol=1e-9)
    one_step = m.influence().dfbeta.loc[label]
    assert np.max(np.abs(one_step / (m.fe_params - without.fe_params) - 1)) < 0.1


def test_zero_weights_drop_rows():
    s = _sleep()
    s.loc[[0, 11], "c1"] = 0.0
    m = jaxhlm.mixed(SLEEP.format(""), s)
    assert m.nobs == 178 and m.design.n_dropped == 2


@pytest.mark.parametrize("make, words", [
    (lambda s: jaxhlm.mixed("Reaction Days [pw=c1] || Subject:, reml", s), "which REML does not restrict"),
    (lambda s: jaxhlm.mixed("Reaction Days [pw=c1] || Subject:, vce(oim)", s), "vce(oim) not allowed with pweights"),
    (lambda s: jaxhlm.fit("Reaction ~ Days + (1 | Subject)", s, pweights="c1", vce="oim"),
     "the model-based ones (vce='oim') are not available"),
    (lambda s: jaxhlm.fit("Reaction ~ Days + (1 | Subject)", s, pweights="c1", freq_weights="c2"),
     "cannot be combined with precision or frequency weights"),
    (lambda s: jaxhlm.mixed("Reaction Days || Subject:, pwscale(size)", s), "give them ([pw=varname]"),
    (lambda s: jaxhlm.mixed("Reaction Days [pw=c1] || Subject:, pwscale(sum)", s), "pwscale(sum) is not a scaling"),
    (lambda s: jaxhlm.mixed("Reaction Days [pw=c1] || Group: || Subject:, pwscale(size)", s),
     "pwscale() is for models with one grouping level"),
    (lambda s: jaxhlm.mixed("Reaction Days || Subject:, pweight(c1)", s), "varies within 1 of its groups (e.g. 308)"),
    (lambda s: jaxhlm.mixed("Reaction Days [pw=c1] || Subject:", s.assign(c1=-s["c1"])), "must be finite and not"),
    (lambda s: jaxhlm.fit("Reaction ~ Days + (1 | Subject)", s, group_pweights={"subject": "c2"}),
     "'subject', not a grouping level of the model; its levels are 'Subject'"),
    (lambda s: jaxhlm.fit("Reaction ~ Days + (1 | Subject) + (1 | Days)", s, pweights="c1"),
     "this model has crossed grouping factors"),
    (lambda s: jaxhlm.mixed("Reaction Days [pw=c1] || Subject:, residuals(ar 1, t(Days))", s),
     "with ar residuals only the outermost level's groups may carry sampling weights"),
    (lambda s: jaxhlm.fit("Reaction ~ Days + (1 | Subject)", iter([s[:90], s[90:]]), pweights="c1"),
     "pass the data as a DataFrame"),
    (lambda s: jaxhlm.simulate(jaxhlm.mixed(SLEEP.format(""), s), 2), "for fits without sampling weights"),
    (lambda s: jaxhlm.lrtest(jaxhlm.mixed(SLEEP.format(""), s), jaxhlm.mixed(SLEEP.format(" Days"), s)),
     "not valid for tests when the standard errors are robust"),
    (lambda s: jaxhlm.mixed(SLEEP.format(""), s).r2(), "R² is not computed for fits with sampling weights"),
])
def test_refusals(make, words):
    with pytest.raises(JaxhlmError) as info:
        make(_sleep())
    assert words in str(info.value)


def test_cli(tmp_path, capsys):
    from jaxhlm.cli import main

    path = tmp_path / "sleep.csv"
    _sleep().to_csv(path, index=False)
    assert main(["fit", "Reaction ~ Days + (1 | Group) + (1 | Group:Subject)", "--data", str(path), "--pweights", "c1",
                 "--group-pweights", "Group=c3", "Group:Subject=c2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["vce"] == "robust" and out["clusters"] == {"Group": 4}
    assert out["weights"]["sampling"] == {"observations": "c1", "pwscale": None, "Group": "c3", "Group:Subject": "c2"}
    assert out["llf"] == pytest.approx(FITS["sleep_three"]["loglik"], abs=1e-6)
    assert out["fixed"]["Days"]["se"] == pytest.approx(REF["stata"]["sleep_three"]["bse"][0], rel=2e-6)
    assert main(["fit", "Reaction ~ Days + (1 | Subject)", "--data", str(path), "--group-pweights", "Subject"]) == 2
    assert "takes LEVEL=VAR pairs" in capsys.readouterr().err


@pytest.mark.parametrize("random, options", [("1 + ses", {}), ("1", {"residuals_by": "sector"})])
def test_robust_errors_are_those_of_the_repeated_data_clustered_by_the_original_groups(random, options):
    """With whole-number weights a school repeated vⱼ times contributes vⱼ copies of its score to its cluster: the
    pweighted sandwich is the repeated data's robust one clustered by the original schools (bread and meat
    alike), both blocks; with a residual variance per sector too."""
    hsb = _hsb()
    rows = hsb.loc[hsb.index.repeat(hsb["w1"].astype(int))]
    repeated = pd.concat([rows[rows["w2"] > k].assign(copy=k) for k in range(3)], ignore_index=True)
    repeated["school"] = repeated["id"].astype(str) + "_" + repeated["copy"].astype(str)
    weighted = jaxhlm.fit(f"mathach ~ ses + sector + ({random} | id)", hsb, pweights="w1",
                          group_pweights={"id": "w2"}, **options)
    by_copy = jaxhlm.fit(f"mathach ~ ses + sector + ({random} | school)", repeated, vce="robust", cluster="id",
                         **options)
    assert by_copy.robust.count == weighted.robust.count == 160
    assert weighted.llf == pytest.approx(by_copy.llf, abs=1e-8)
    np.testing.assert_allclose(weighted.bse.to_numpy(), by_copy.bse.to_numpy(), rtol=1e-9)  # measured: 3e-13


def test_dofile():
    log = jaxhlm.run_do(f"mixed {SLEEP.format('')}\nlincom 2*Days", _sleep())
    assert "Log pseudolikelihood = -1389.0983" in log and "(Std. err. adjusted for 4 clusters in Group)" in log
    assert "4.936949" in log  # lincom's standard error: twice Days' robust one, Stata's 2.468474

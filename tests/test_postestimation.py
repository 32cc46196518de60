"""Postestimation: intraclass correlations (``MixedResult.icc``, ``estat icc``), standard deviations and
correlations (``MixedResult.varcorr``, ``estat sd``), linear combinations of
coefficients (``MixedResult.lincom``, ``lincom``), nonlinear ones (``MixedResult.nlcom``, ``nlcom``) and Satterthwaite's degrees of freedom
(``MixedResult.satterthwaite``, and ``dfmethod="satterthwaite"`` of ``lincom`` and ``test``) and Kenward and
Roger's (``dfmethod="kroger"``).

Satterthwaite and Kenward-Roger reference values: tests/fixtures/satterthwaite_reference.json, written by
tests/fixtures/satterthwaite_reference.R (``Rscript tests/fixtures/satterthwaite_reference.R``; lmerTest 3.1-3
and pbkrtest 0.5.2 on lme4 1.1-31). lmerTest differentiates numerically, so its Satterthwaite degrees of freedom carry errors: on
balanced data, where the exact values are integers, it gives 17.0000028 and 25.0000135; on the unbalanced
sleepstudy subset, central differences of a dense likelihood move the df by 3e-6 relative as the step goes from
1e-3 to 1e-4, and lmerTest's contrast df is 5.4e-6 above jaxhlm's. The tests ask for 1e-5 there, and 1e-8 for
the exact integers, which jaxhlm's exact derivatives (autodiff) give. pbkrtest's Kenward-Roger formulas are
analytic: those agree to 1e-6, the accuracy of lme4's optimum.

ICC and standard-deviation reference values: tests/fixtures/icc_reference.json, written by
tests/fixtures/icc_reference.R (``Rscript tests/fixtures/icc_reference.R``; lme4 1.1-31 and numDeriv). The script writes the (restricted) log
likelihood out in R with dense per-group matrices, polishes lme4's optimum with Newton steps, inverts the
numerical Hessian in the reported parameters and applies the delta method and the logit-scale interval, so no
jaxhlm code is involved. On this machine jaxhlm agrees to about 1e-8 relative; the tests ask for 1e-6, the
accuracy of a numerical Hessian.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

import jaxhlm
from jaxhlm import covariance as cov
from jaxhlm.render import stata_g

FIXTURES = Path(__file__).parent / "fixtures"
REFS = json.loads((FIXTURES / "icc_reference.json").read_text())["fits"]
CONDITIONAL = "Conditional intraclass correlation"
KIND = {"hsb_empty": "Intraclass correlation", "hsb_covariates": "Residual intraclass correlation",
        "sleep_slope": CONDITIONAL, "sleep_independent": CONDITIONAL}
CONDITIONAL_NOTE = "Note: ICC is conditional on zero values of random-effects covariates."


def _data(name: str) -> pd.DataFrame:
    return jaxhlm.datasets.hsb() if name == "hsb" else pd.read_csv(FIXTURES / name)


@pytest.mark.parametrize("ref", REFS, ids=[f"{f['name']}-{'reml' if f['reml'] else 'ml'}" for f in REFS])
def test_icc_matches_independent_reference(ref):
    r = jaxhlm.fit(ref["formula"], _data(ref["data"]), reml=ref["reml"])
    assert r.llf == pytest.approx(ref["loglik"], abs=1e-6)
    icc = r.icc()
    assert icc.icc == pytest.approx(ref["icc"], rel=1e-6)
    assert icc.se == pytest.approx(ref["se"], rel=1e-6)
    assert [icc.ci_lower, icc.ci_upper] == pytest.approx(ref["ci"], rel=1e-6)
    assert icc.kind == KIND[ref["name"]]
    assert (CONDITIONAL_NOTE in str(icc)) == icc.kind.startswith("Conditional")
    # estat sd: the standard deviations (random effects in Stata's order, then the residual) and correlations
    vc = r.varcorr()
    sds = vc[vc.index.str.startswith("sd(")]
    assert list(sds.index)[-1] == "sd(Residual)"
    assert sds["estimate"].to_numpy() == pytest.approx(ref["sd"], rel=1e-6)
    assert sds["std_err"].to_numpy() == pytest.approx(ref["sd_se"], rel=1e-6)
    assert sds["ci_lower"].to_numpy() == pytest.approx(ref["sd_ci_lower"], rel=1e-6)
    assert sds["ci_upper"].to_numpy() == pytest.approx(ref["sd_ci_upper"], rel=1e-6)
    if "corr" in ref:
        corr = vc.loc["corr(Days,_cons)"]
        assert corr["estimate"] == pytest.approx(ref["corr"], rel=1e-6)
        assert corr["std_err"] == pytest.approx(ref["corr_se"], rel=1e-6)
        assert [corr["ci_lower"], corr["ci_upper"]] == pytest.approx(ref["corr_ci"], rel=1e-6)


def test_interval_is_symmetric_on_the_logit_scale_at_any_level():
    r = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", jaxhlm.datasets.hsb())
    wide, narrow = r.icc(), r.icc(alpha=0.10)
    assert narrow.icc == wide.icc and narrow.se == wide.se
    assert wide.ci_lower < narrow.ci_lower < narrow.icc < narrow.ci_upper < wide.ci_upper
    logit = special.logit
    half = (logit(narrow.ci_upper) - logit(narrow.ci_lower)) / 2
    assert logit(narrow.ci_upper) - logit(narrow.icc) == pytest.approx(half, rel=1e-12)
    assert half == pytest.approx(special.ndtri(0.95) * narrow.se / (narrow.icc * (1 - narrow.icc)), rel=1e-12)
    with pytest.raises(jaxhlm.JaxhlmError, match="alpha must be between 0 and 1"):
        r.icc(alpha=1.5)


def test_variance_index_finds_shared_and_own_variances():
    blocks = (cov.Block("independent", 2), cov.Block("identity", 2), cov.Block("unstructured", 3, lead=2))
    names = ["a", "b", "c", "d", "e", "f", "_cons"]
    labels = cov.labels(blocks, names)
    assert [cov.variance_index(blocks, k) for k in range(7)] == [0, 1, 2, 2, 3, 4, 5]
    assert [labels[cov.variance_index(blocks, k)] for k in range(7)] == [
        "var(a)", "var(b)", "var(c d)", "var(c d)", "var(e)", "var(f)", "var(_cons)"]
    with pytest.raises(IndexError):
        cov.variance_index(blocks, 7)


def test_estat_icc_in_a_do_file():
    log = jaxhlm.run_do("mixed mathach || id:, reml\nestat icc\nestat icc, level(90)")
    lines = log.splitlines()
    # An empty model has no Wald test: Stata prints missing values.
    assert "                                                Wald chi2(0)      =          ." in lines
    assert any(line.endswith("Prob > chi2       =          .") for line in lines)
    at = lines.index(". estat icc")
    assert lines[at + 1:at + 9] == [
        "",
        "Intraclass correlation",
        "",
        "-" * 78,
        "                       Level |        ICC   Std. err.     [95% conf. interval]",
        "-----------------------------+------------------------------------------------",
        # icc_reference.json, hsb_empty REML: .18035179, .01872177, (.14651605, .21998736)
        "                          id |   .1803518   .0187218       .146516    .2199874",
        "-" * 78,
    ]
    at = lines.index(". estat icc, level(90)")
    assert lines[at + 5] == "                       Level |        ICC   Std. err.     [90% conf. interval]"


@pytest.mark.parametrize("command, message", [
    ("estat icc, level(5)", "between 10 and 99.99"),
    ("estat icc, level(abc)", "between 10 and 99.99"),
    ("estat icc, normal", "option normal not allowed; estat icc accepts level"),
    ("estat vce", "estat vce is not supported; estat ic, estat icc"),
])
def test_estat_bad_input(command, message):
    with pytest.raises(jaxhlm.DoFileError, match=message) as exc:
        jaxhlm.run_do(f"mixed mathach ses || id:\n{command}")
    assert exc.value.line == 2


def test_icc_needs_a_random_intercept():
    with pytest.raises(jaxhlm.DoFileError,
                       match=r"needs a random intercept at each level: id's random effects \(ses\)"):
        jaxhlm.run_do("mixed mathach ses || id: ses, noconstant\nestat icc")


def test_zero_intercept_variance_gives_zero_icc_without_a_standard_error():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 5), "x": rng.normal(size=150)})
    df["y"] = df["x"] + rng.normal(size=150)  # no group effect: the ML estimate of var(_cons) is 0
    r = jaxhlm.fit("y ~ x + (1 | g)", df)
    assert r.singular and r.cov_re.iloc[0, 0] == 0
    icc = r.icc()
    assert icc.icc == 0 and math.isnan(icc.se) and math.isnan(icc.ci_lower) and math.isnan(icc.ci_upper)
    row = "                           g |          0          .             .           ."
    assert row in str(icc).splitlines()


@pytest.fixture(scope="module")
def m0():
    return jaxhlm.mixed("mathach c.ses##i.sector || id:", jaxhlm.datasets.hsb())


def test_lincom_is_the_combination_of_coefficients_and_its_variance(m0):
    lc = m0.lincom("ses + 1.sector#c.ses")
    b, V = m0.fe_params, m0.cov_params()
    names = ["ses", "1.sector#c.ses"]
    assert lc.estimate == pytest.approx(b[names].sum(), rel=1e-12)
    assert lc.se == pytest.approx(math.sqrt(V.loc[names, names].to_numpy().sum()), rel=1e-12)
    assert lc.statistic == pytest.approx(lc.estimate / lc.se, rel=1e-12)
    # The z test is the one-constraint Wald test (a separate code path).
    wald = m0.test("ses + 1.sector#c.ses = 0")
    assert lc.statistic**2 == pytest.approx(wald.statistic, rel=1e-10)
    assert lc.pvalue == pytest.approx(wald.pvalue, rel=1e-8)
    assert lc.constraint == "[mathach]ses + [mathach]1.sector#c.ses = 0"
    scaled = m0.lincom("2*_b[ses] - _cons", alpha=0.10)
    assert scaled.estimate == pytest.approx(2 * b["ses"] - b["_cons"], rel=1e-12)
    assert scaled.ci_upper - scaled.estimate == pytest.approx(special.ndtri(0.95) * scaled.se, rel=1e-12)
    assert scaled.constraint == "2*[mathach]ses - [mathach]_cons = 0"


def test_lincom_in_a_do_file():
    log = jaxhlm.run_do("mixed mathach c.ses##i.sector || id:\nlincom ses + 1.sector#c.ses, level(90)")
    lines = log.splitlines()
    at = lines.index(". lincom ses + 1.sector#c.ses, level(90)")
    assert lines[at + 1:at + 9] == [
        "",
        " ( 1)  [mathach]ses + [mathach]1.sector#c.ses = 0",
        "",
        "-" * 78,
        "     mathach | Coefficient  Std. err.      z    P>|z|     [90% conf. interval]",
        "-------------+----------------------------------------------------------------",
        # 2.953382 - 1.312292 (the coefficients in the README's example); 1.64109 -+ 1.644854 * .1585644
        "         (1) |    1.64109   .1585644    10.35   0.000     1.380275    1.901905",
        "-" * 78,
    ]


@pytest.mark.parametrize("expr, message", [
    ("ses + 2", "leave out the constant term"),
    ("ses = 1", "give an expression, not an equation"),
    ("ses - ses", "involves no coefficient"),
    ("sector", "'sector' is not a coefficient of the model"),
])
def test_lincom_bad_input(m0, expr, message):
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        m0.lincom(expr)


def test_nlcom_is_the_delta_method_on_statas_coefficients(m0):
    p = m0.params
    nl = m0.nlcom({"var": "exp(2*_b[lns1_1_1:_cons])", "ratio": "_b[ses]/_b[1.sector#c.ses]",
                   "sum": "_b[ses] + _b[1.sector#c.ses]",
                   "icc": "exp(2*_b[lns1_1_1:_cons])/(exp(2*_b[lns1_1_1:_cons]) + exp(2*_b[lnsig_e:_cons]))"})
    frame = nl.frame()
    # var(_cons) = exp(2 lns): its delta-method SE is the random-effects table's (an exact identity at the optimum);
    # the central differences carry ~1e-9
    assert frame.loc["var", "estimate"] == pytest.approx(p["var(_cons)"], rel=1e-12)
    assert frame.loc["var", "std_err"] == pytest.approx(m0.bse["var(_cons)"], rel=1e-7)
    # a linear function is lincom
    lc = m0.lincom("ses + 1.sector#c.ses")
    assert frame.loc["sum", "estimate"] == pytest.approx(lc.estimate, rel=1e-12)
    assert frame.loc["sum", "std_err"] == pytest.approx(lc.se, rel=1e-7)
    # a ratio: gradient (1/d, -n/d²) against the coefficients' covariance
    n, d = p["ses"], p["1.sector#c.ses"]
    V = m0.cov_params().loc[["ses", "1.sector#c.ses"], ["ses", "1.sector#c.ses"]].to_numpy()
    g = np.array([1 / d, -n / d**2])
    assert frame.loc["ratio", "estimate"] == pytest.approx(n / d, rel=1e-12)
    assert frame.loc["ratio", "std_err"] == pytest.approx(math.sqrt(g @ V @ g), rel=1e-7)
    # the ICC from lns and lnsig_e: estat icc's estimate and delta-method SE (computed from the variances)
    icc = m0.icc()
    assert frame.loc["icc", "estimate"] == pytest.approx(icc.icc, rel=1e-12)
    assert frame.loc["icc", "std_err"] == pytest.approx(icc.se, rel=1e-7)
    assert frame.loc["icc", "z"] == pytest.approx(icc.icc / frame.loc["icc", "std_err"], rel=1e-12)


def test_nlcom_in_a_do_file(m0):
    log = jaxhlm.run_do("quietly mixed mathach c.ses##i.sector || id:\nnlcom exp(2*_b[lns1_1_1:_cons])\n"
                        "nlcom (ratio: _b[ses]/_b[1.sector#c.ses]) (_b[ses]^2), level(90)\nnlcom (_b[ses] + 1)/2")
    lines = log.splitlines()
    at = lines.index(". nlcom exp(2*_b[lns1_1_1:_cons])")
    var = m0.nlcom("exp(2*_b[lns1_1_1:_cons])").table[0]
    assert lines[at + 1:at + 9] == [
        "", "       _nl_1:  exp(2*_b[lns1_1_1:_cons])", "", "-" * 78,
        "     mathach | Coefficient  Std. err.      z    P>|z|     [95% conf. interval]",
        "-------------+----------------------------------------------------------------",
        f"       _nl_1 | {stata_g(var[0]):>10} {stata_g(var[1]):>10} {var[2]:>8.2f} {var[3]:>7.3f}    "
        f"{stata_g(var[4]):>9}   {stata_g(var[5]):>9}", "-" * 78]
    at = lines.index(". nlcom (ratio: _b[ses]/_b[1.sector#c.ses]) (_b[ses]^2), level(90)")
    assert lines[at + 2:at + 4] == ["       ratio:  _b[ses]/_b[1.sector#c.ses]", "       _nl_2:  _b[ses]^2"]
    assert lines[at + 6].endswith("[90% conf. interval]")
    two = m0.nlcom({"ratio": "_b[ses]/_b[1.sector#c.ses]", "_nl_2": "_b[ses]^2"}, alpha=0.10).table
    assert lines[at + 8].startswith(f"       ratio | {stata_g(two[0, 0]):>10} {stata_g(two[0, 1]):>10}")
    assert lines[at + 9].startswith(f"       _nl_2 | {stata_g(two[1, 0]):>10} {stata_g(two[1, 1]):>10}")
    # one expression that opens with a parenthesis is one function
    at = lines.index(". nlcom (_b[ses] + 1)/2")
    assert lines[at + 2] == "       _nl_1:  (_b[ses] + 1)/2"
    assert lines[at + 7].startswith(f"       _nl_1 | {stata_g((m0.fe_params['ses'] + 1) / 2):>10}")


@pytest.mark.parametrize("expr, message", [
    ("_b[nosuch]", r"\[nosuch\] not found; coefficients are _b\[ses\]"),
    ("_b[lns9_1_1:_cons]", r"equations _b\[lns1_1_1:_cons\], _b\[lnsig_e:_cons\]"),
    ("ses*2", "ses is not a coefficient; write coefficients as _b"),
    ("2 + 3", "involves no coefficient"),
    ("1/(_b[ses] - _b[ses])", "is not defined at the estimates"),
    ("", "nlcom needs an expression"),
])
def test_nlcom_bad_input(m0, expr, message):
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        m0.nlcom(expr)


SATTERTHWAITE = json.loads((FIXTURES / "satterthwaite_reference.json").read_text())["fits"]


def _fe_name(lme4_name: str) -> str:
    return "Intercept" if lme4_name == "(Intercept)" else lme4_name


@pytest.mark.parametrize("ref", SATTERTHWAITE,
                         ids=[f"{f['name']}-{'reml' if f['reml'] else 'ml'}" for f in SATTERTHWAITE])
def test_satterthwaite_matches_lmertest(ref):
    r = jaxhlm.fit(ref["formula"], _data(ref["data"]), reml=ref["reml"])
    table = r.satterthwaite()
    assert list(table.index) == [_fe_name(t) for t in ref["terms"]]
    assert table["df"].to_numpy() == pytest.approx(ref["df"], rel=1e-5)
    assert table["t"].to_numpy() == pytest.approx(ref["t"], rel=1e-6)
    assert table["std_err"].to_numpy() == pytest.approx(ref["se"], rel=1e-6)
    assert table["P>|t|"].to_numpy() == pytest.approx(2 * special.stdtr(table["df"], -table["t"].abs()), rel=1e-12)
    half = table["ci_upper"] - table["coef"]
    assert half.to_numpy() == pytest.approx(special.stdtrit(table["df"], 0.975) * table["std_err"], rel=1e-12)
    expr = " + ".join(f"{v}*{_fe_name(k)}" for k, v in ref["contrast"].items())
    lc = r.lincom(expr, dfmethod="satterthwaite")
    assert lc.estimate == pytest.approx(ref["contrast_estimate"], rel=1e-6)
    assert lc.df == pytest.approx(ref["contrast_df"], rel=1e-5)
    assert lc.pvalue == pytest.approx(2 * special.stdtr(lc.df, -abs(lc.statistic)), rel=1e-12)
    assert "t    P>|t|" in str(lc) and "(Satterthwaite)" in str(lc)
    joint = r.test([_fe_name(k) for k in ref["joint"]], dfmethod="satterthwaite")
    assert joint.df == ref["joint_numdf"]
    assert joint.statistic == pytest.approx(ref["joint_F"], rel=1e-6)
    assert joint.ddf == pytest.approx(ref["joint_dendf"], rel=1e-5)
    assert joint.pvalue == pytest.approx(special.fdtrc(joint.df, joint.ddf, joint.statistic), rel=1e-12)
    assert f"F({joint.df:>3}, {joint.ddf:>8.2f})" in str(joint)
    if not ref["reml"]:
        with pytest.raises(jaxhlm.JaxhlmError, match="Kenward and Roger's method needs REML estimation"):
            r.lincom(expr, dfmethod="kroger")
        return
    # Kenward and Roger (lmerTest's ddf="Kenward-Roger" and pbkrtest, whose formulas are analytic: agreement is
    # limited only by lme4's optimum, about 1e-7)
    kr, ref_kr = jaxhlm.fit(ref["formula"], _data(ref["data"]), reml=True, dfmethod="kroger"), ref["kr"]
    assert kr.cov_params().to_numpy() == pytest.approx(np.array(ref_kr["vcov_adj"]), rel=1e-6)
    assert kr.bse_fe.to_numpy() == pytest.approx(ref_kr["se"], rel=1e-6)
    assert kr.ddf == pytest.approx(ref_kr["df"], rel=1e-6)
    assert kr.tvalues.to_numpy() == pytest.approx(ref_kr["t"], rel=1e-6)
    lc = kr.lincom(expr)
    assert lc.se == pytest.approx(ref_kr["contrast_se"], rel=1e-6) and lc.df == pytest.approx(ref_kr["contrast_df"],
                                                                                                rel=1e-6)
    joint = kr.test([_fe_name(k) for k in ref["joint"]])
    assert joint.statistic == pytest.approx(ref_kr["joint_F"], rel=1e-6)
    assert joint.ddf == pytest.approx(ref_kr["joint_dendf"], rel=1e-6)
    assert "Kenward-Roger" in str(joint) and "(Kenward-Roger)" in str(lc)


@pytest.mark.parametrize("reml, groups", [(True, 17), (False, 18)])
def test_satterthwaite_is_exact_on_balanced_data(reml, groups):
    # 18 subjects, 10 days each, random intercept and slope: the slope's df is the number of subjects less
    # one under REML (the per-subject slopes' sample variance), and the number of subjects under ML.
    r = jaxhlm.fit("Reaction ~ Days + (Days | Subject)", _data("sleepstudy.csv"), reml=reml)
    assert r.satterthwaite()["df"].to_numpy() == pytest.approx([groups, groups], rel=1e-8)


def test_satterthwaite_needs_the_variance_components_information():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 5), "x": rng.normal(size=150)})
    df["y"] = df["x"] + rng.normal(size=150)
    r = jaxhlm.fit("y ~ x + (1 | g)", df)
    with pytest.raises(jaxhlm.JaxhlmError, match="boundary optimum"):
        r.satterthwaite()
    with pytest.raises(jaxhlm.JaxhlmError, match="boundary optimum"):
        r.test("x", dfmethod="satterthwaite")
    with pytest.raises(jaxhlm.JaxhlmError, match="dfmethod 'kr' is not available"):
        r.lincom("x", dfmethod="kr")


def test_estat_sd_in_a_do_file():
    log = jaxhlm.run_do("quietly mixed mathach ses || id: ses, cov(exch)\nestat icc\nestat sd")
    lines = log.splitlines()
    at = lines.index(". estat sd")
    assert lines[at + 2:at + 6] == [
        "-" * 78,
        "  Random-effects parameters  |   Estimate   Std. err.     [95% conf. interval]",
        "-----------------------------+------------------------------------------------",
        "id: Exchangeable             |",
    ]
    m = jaxhlm.mixed("mathach ses || id: ses, cov(exch)", jaxhlm.datasets.hsb())
    vc, re = m.varcorr(), m.random_effects
    assert list(vc.index) == ["sd(ses _cons)", "corr(ses _cons)", "sd(Residual)"]
    # The shared variance and covariance of an exchangeable block: sd = sqrt(var), corr = cov/var.
    assert vc["estimate"].to_numpy() == pytest.approx(
        [math.sqrt(re.estimate[0]), re.estimate[1] / re.estimate[0], math.sqrt(re.estimate[2])], rel=1e-12)
    # The delta method from the variance table: SE(sd) = SE(var) / (2 sd), and the log-scale intervals agree.
    assert vc["std_err"].iloc[[0, 2]].to_numpy() == pytest.approx(
        re.se[[0, 2]] / (2 * vc["estimate"].iloc[[0, 2]].to_numpy()), rel=1e-10)
    assert vc["ci_lower"].iloc[[0, 2]].to_numpy() == pytest.approx(np.sqrt(re.ci[[0, 2], 0]), rel=1e-10)
    row = lines[at + 7]
    assert row.startswith("             corr(ses _cons) |  -.0443377   .1271186")
    # The conditional ICC of an exchangeable block uses the shared variance.
    assert m.icc().icc == pytest.approx(re.estimate[0] / (re.estimate[0] + re.estimate[2]), rel=1e-12)


def test_estat_recovariance_in_a_do_file(hsb):
    log = jaxhlm.run_do("quietly mixed mathach ses female || id: ses female, cov(unstr)\nestat recovariance\n"
                        "estat recov, corr\nquietly mixed mathach ses || sector: || id: ses\n"
                        "estat recovariance, relevel(id)\ndisplay r(relevels)\nestat recovariance")
    lines = log.splitlines()
    m = jaxhlm.mixed("mathach ses female || id: ses female, cov(unstr)", hsb)
    p, vc = m.params, m.varcorr()["estimate"]
    at = lines.index(". estat recovariance")
    # matlist's lower triangle, %9.0g in columns 11 wide; each value is the fit's var() or cov() parameter.
    assert lines[at + 1:at + 9] == [
        "", "Random-effects covariance matrix for level id", "",
        "             |       ses     female      _cons",
        "-------------+---------------------------------",
        f"         ses | {stata_g(p['var(ses)']):>9}",
        f"      female | {stata_g(p['cov(ses,female)']):>9}  {stata_g(p['var(female)']):>9}",
        f"       _cons | {stata_g(p['cov(ses,_cons)']):>9}  {stata_g(p['cov(female,_cons)']):>9}  "
        f"{stata_g(p['var(_cons)']):>9}",
    ]
    assert lines[at + 8] == "       _cons | -.0728226    -1.0748   5.208132"
    at = lines.index(". estat recov, corr")
    assert lines[at + 2] == "Random-effects correlation matrix for level id"
    assert lines[at + 6:at + 9] == [
        "         ses |         1", f"      female | {stata_g(vc['corr(ses,female)']):>9}          1",
        f"       _cons | {stata_g(vc['corr(ses,_cons)']):>9}  {stata_g(vc['corr(female,_cons)']):>9}          1"]
    # A three-level model: one matrix per level, outermost first; relevel() picks one; r(relevels) counts them.
    nested = jaxhlm.mixed("mathach ses || sector: || id: ses", hsb)
    blocks = nested.recovariance()
    assert list(blocks) == ["sector", "id"]
    assert blocks["id"].to_numpy() == pytest.approx(np.diag([nested.params["var(ses[sector>id])"],
                                                             nested.params["var(_cons[sector>id])"]]), abs=0)
    at = lines.index(". estat recovariance, relevel(id)")
    assert lines[at + 2] == "Random-effects covariance matrix for level id"
    assert lines[at + 7] == f"       _cons |         0  {stata_g(nested.params['var(_cons[sector>id])']):>9}"
    assert lines[at + 9:at + 11] == [". display r(relevels)", "2"]
    at = lines.index(". estat recovariance", at)
    assert [line for line in lines[at:] if line.startswith("Random-effects")] == [
        "Random-effects covariance matrix for level sector", "Random-effects covariance matrix for level id"]
    assert f"       _cons | {stata_g(nested.params['var(_cons[sector])']):>9}" in lines[at:]


@pytest.mark.parametrize("command, message", [
    ("estat recovariance, relevel(school)", r"relevel\(school\): not a level of the model; its levels are id"),
    ("estat recovariance, level(90)", "option level not allowed; estat recovariance accepts relevel"),
])
def test_estat_recovariance_bad_input(command, message):
    with pytest.raises(jaxhlm.DoFileError, match=message):
        jaxhlm.run_do(f"quietly mixed mathach ses || id:\n{command}")


def test_estat_sd_holds_a_boundary_correlation():
    # The README's m1: corr(ses,_cons) = +1 at the optimum, held there; it has no SE or interval.
    m1 = jaxhlm.mixed("mathach c.ses##i.sector || id: ses, cov(unstr)", jaxhlm.datasets.hsb())
    corr = m1.varcorr().loc["corr(ses,_cons)"]
    assert corr["estimate"] == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(corr[["std_err", "ci_lower", "ci_upper"]].to_numpy(float)).all()
    assert np.isfinite(m1.varcorr().loc["sd(ses)"].to_numpy(float)).all()


def test_dfmethod_satterthwaite_fit_reports_t_and_f_tests():
    # lmerTest's values for this model (satterthwaite_reference.json, hsb_covariates): df 155.11, 6843.11, 148.01,
    # 6719.70 (average 3466.48), and F = 205.04 on (3, 422.65) for all coefficients but the intercept.
    log = jaxhlm.run_do("mixed mathach c.ses##c.sector || id:, reml dfmethod(satterthwaite)\nlincom ses, small\n"
                        "lincom ses\ntest ses\ntest ses, small")
    lines = log.splitlines()
    assert lines[8:13] == [
        "DF method: Satterthwaite                        DF:           min =     148.01",
        "                                                              avg =   3,466.48",
        "                                                              max =   6,843.11",
        "                                                F(3,   422.65)    =     205.04",
        "Log restricted-likelihood = -23287.082          Prob > F          =     0.0000",
    ]
    assert "       mathach | Coefficient  Std. err.      t    P>|t|     [95% conf. interval]" in lines
    assert "Note: t test on 6843.11 degrees of freedom (Satterthwaite)." in lines
    # without small, Stata's lincom and test after mixed are large-sample: z and chi-squared
    plain = log.split(". lincom ses\n")[1]
    assert "     mathach | Coefficient  Std. err.      z    P>|z|     [95% conf. interval]" in plain
    assert "           chi2(  1) =" in plain.split(". test ses, small")[0]
    assert "       F(  1,  6843.11) =" in plain.split(". test ses, small")[1]

    ref = next(f for f in SATTERTHWAITE if f["name"] == "hsb_covariates")
    r = jaxhlm.fit(ref["formula"], _data("hsb"), reml=True, dfmethod="satterthwaite")
    assert r.ddf == pytest.approx(ref["df"], rel=1e-5)
    t = r.tvalues.to_numpy()
    assert r.pvalues.to_numpy() == pytest.approx(2 * special.stdtr(r.ddf, -np.abs(t)), rel=1e-12)
    half = (r.conf_int().iloc[:4]["upper"] - r.fe_params).to_numpy()
    assert half == pytest.approx(special.stdtrit(r.ddf, 0.975) * r.bse_fe, rel=1e-12)
    assert r.wald.ddf == pytest.approx(ref["joint_dendf"], rel=1e-5)
    assert r.wald.statistic == pytest.approx(ref["joint_F"], rel=1e-6)
    # test() and lincom() follow the fit's dfmethod.
    assert math.isfinite(r.test("sector").ddf) and math.isfinite(r.lincom("sector").df)
    assert r.satterthwaite()["df"].to_numpy() == pytest.approx(r.ddf, rel=1e-12)


def test_kenward_roger_fit_in_stata_syntax():
    log = jaxhlm.run_do("mixed Reaction Days || Subject: Days, cov(unstr) reml dfmethod(kroger)",
                        pd.read_csv(FIXTURES / "sleepstudy_unbalanced.csv"))
    lines = log.splitlines()
    # pbkrtest's df for this model (satterthwaite_reference.json, sleep_unbalanced): 16.98363, 16.87183; the
    # model F is Days's t squared on its df.
    assert lines[8:13] == [
        "DF method: Kenward-Roger                        DF:           min =      16.87",
        "                                                              avg =      16.93",
        "                                                              max =      16.98",
        "                                                F(1,    16.87)    =      37.62",
        "Log restricted-likelihood = -822.49093          Prob > F          =     0.0000",
    ]
    assert "        Days |   10.56167   1.722026     6.13   0.000     6.926412    14.19693" in lines
    with pytest.raises(jaxhlm.FormulaError, match="needs REML estimation"):
        jaxhlm.fit("Reaction ~ Days + (Days | Subject)", pd.read_csv(FIXTURES / "sleepstudy.csv"), dfmethod="kroger")


def test_dfmethod_needs_the_variance_components_information():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 5), "x": rng.normal(size=150)})
    df["y"] = df["x"] + rng.normal(size=150)
    with pytest.raises(jaxhlm.JaxhlmError, match="use the large-sample tests"):
        jaxhlm.fit("y ~ x + (1 | g)", df, dfmethod="satterthwaite")
    with pytest.raises(jaxhlm.FormulaError, match="dfmethod 'kr' is not available"):
        jaxhlm.fit("y ~ x + (1 | g)", df, dfmethod="kr")

"""Models side by side: ``MixedResult.equations`` (Stata's e(b) with its equations, the variance parameters in
Stata's estimation metric), ``jaxhlm.estimates_table`` and the do-file's ``estimates table``.

The metric's values are checked against the reference log's M3 at the exact optimum that the conventions give
(θ = 0.30126493, σ² = 36.552467; the SE of var(_cons) there .4858006, Stata's printed .4858015 being 1.1e-6 off
with its estimate; var(Residual)'s SE the log's .6172766) through the conventions' transformations (var = exp(2
lns), SE(var) = 2 var SE(lns); cov = tanh(atr) sd_i sd_j). The layout is that of Stata's
``estimates table`` in published logs: a column of 13 characters per model for the default %10.0g (a space, the
value right-aligned in the format's width, two spaces), names centred over it, ``legend: b/se`` right-aligned under
the table, integer statistics without decimals."""

from __future__ import annotations

import math

import numpy as np
import pytest

import jaxhlm
from conftest import MODELS
from jaxhlm.render import stata_g


@pytest.fixture(scope="module")
def pair(hsb):
    small = jaxhlm.mixed(MODELS["M3 (noslope)"], hsb)
    slope = jaxhlm.mixed("mathach ses female || id: ses female, cov(unstr)", hsb)
    return small, slope


def test_equations_are_statas_metric(pair):
    small, slope = pair
    eq = small.equations()
    assert list(eq.index.get_level_values(0).unique()) == ["mathach", "lns1_1_1", "lnsig_e"]
    # the fixed part is the coefficient table, omitted and empty cells included with their status
    fixed = eq.loc["mathach"]
    # the log's M3 lists ses twice (c.ses##c.sector c.ses##i.sized), the second time omitted: e(b)'s o.ses
    assert list(fixed.index) == ["ses", "sector", "c.ses#c.sector", "o.ses", "2.sized", "3.sized", "2.sized#c.ses",
                                 "3.sized#c.ses", "1.female", "1o.sector", "1.female#1.sector", "1.female#2.sized",
                                 "1.female#3.sized", "_cons"]
    assert list(fixed["status"]) == [""] * 3 + ["omitted"] + [""] * 5 + ["omitted"] + [""] * 4
    estimated = fixed[fixed["status"] == ""]
    np.testing.assert_allclose(estimated["coef"], small.fe_params[estimated.index], rtol=1e-12)
    np.testing.assert_allclose(estimated["std_err"], small.bse_fe[estimated.index], rtol=1e-12)
    # M3 at the exact optimum (conventions: θ = 0.30126493, σ² = 36.552467; SE of var(_cons) .4858006 there, of
    # var(Residual) the log's .6172766)
    lns, lnsig = eq.loc[("lns1_1_1", "_cons")], eq.loc[("lnsig_e", "_cons")]
    var_u, var_e = math.exp(2 * lns["coef"]), math.exp(2 * lnsig["coef"])
    assert var_u == pytest.approx(0.30126493**2 * 36.552467, rel=1e-7)
    assert 2 * var_u * lns["std_err"] == pytest.approx(.4858006, abs=1.5e-7)
    assert var_e == pytest.approx(36.552467, rel=3e-8)
    assert 2 * var_e * lnsig["std_err"] == pytest.approx(.6172766, abs=1.5e-7)
    assert lns["statistic"] == pytest.approx(lns["coef"] / lns["std_err"], rel=1e-12)
    # an unstructured block: ln sds in the effects' order, then atanh r in row order (1,2), (1,3), (2,3)
    eq = slope.equations()
    names = ["lns1_1_1", "lns1_1_2", "lns1_1_3", "atr1_1_1_2", "atr1_1_1_3", "atr1_1_2_3"]
    assert list(eq.index.get_level_values(0).unique()) == ["mathach", *names, "lnsig_e"]
    coord = {n: eq.loc[(n, "_cons"), "coef"] for n in names}
    p = slope.params
    sd = [math.exp(coord[f"lns1_1_{k}"]) for k in (1, 2, 3)]
    assert [s * s for s in sd] == pytest.approx([p["var(ses)"], p["var(female)"], p["var(_cons)"]], rel=1e-10)
    assert math.tanh(coord["atr1_1_1_3"]) * sd[0] * sd[2] == pytest.approx(p["cov(ses,_cons)"], rel=1e-10)
    assert math.tanh(coord["atr1_1_2_3"]) * sd[1] * sd[2] == pytest.approx(p["cov(female,_cons)"], rel=1e-10)
    vc = slope.varcorr()
    # the delta method between the metrics: SE(sd) = sd SE(ln sd), SE(r) = (1 - r²) SE(atanh r)
    assert sd[0] * eq.loc[("lns1_1_1", "_cons"), "std_err"] == pytest.approx(vc.loc["sd(ses)", "std_err"], rel=1e-8)
    r = vc.loc["corr(ses,female)", "estimate"]
    assert (1 - r * r) * eq.loc[("atr1_1_1_2", "_cons"), "std_err"] == pytest.approx(
        vc.loc["corr(ses,female)", "std_err"], rel=1e-8)


def test_display_of_an_equations_coefficient(pair):
    small, _ = pair
    out = jaxhlm.run_do(f"quietly mixed {MODELS['M3 (noslope)']}\ndisplay exp(2*_b[lns1_1_1:_cons])\n"
                        "display _se[lnsig_e:_cons] \" \" _b[mathach:ses]").splitlines()
    eq = small.equations()
    assert out[2] == stata_g(math.exp(2 * eq.loc[("lns1_1_1", "_cons"), "coef"]), 8) == stata_g(small.params["var(_cons)"], 8)
    assert out[5] == stata_g(eq.loc[("lnsig_e", "_cons"), "std_err"], 8) + " " + stata_g(small.fe_params["ses"], 8)
    # Stata's other spellings of the same coefficients
    other = jaxhlm.run_do(f"quietly mixed {MODELS['M3 (noslope)']}\ndisplay exp(2*[lns1_1_1]_cons) \" \" "
                          "[lnsig_e]_se[_cons] \" \" [mathach]_b[ses] \" \" [mathach]ses").splitlines()
    assert other[2] == " ".join([out[2], out[5].split()[0], out[5].split()[1], out[5].split()[1]])
    assert small.nlcom("exp(2*[lns1_1_1]_cons)").table[0, 0] == pytest.approx(small.params["var(_cons)"], rel=1e-12)
    # quoted text is text, whatever it looks like
    quoted = jaxhlm.run_do(f"quietly mixed {MODELS['M3 (noslope)']}\ndisplay \"[a]b _b[ses] e(N)\" e(N)").splitlines()
    assert quoted[2] == "[a]b _b[ses] e(N)7185"
    with pytest.raises(jaxhlm.DoFileError, match=r"\[lns9:_cons\] not found: the equations are mathach, lns1_1_1, lnsig_e"):
        jaxhlm.run_do(f"quietly mixed {MODELS['M3 (noslope)']}\ndisplay _b[lns9:_cons]")


def test_equations_of_three_levels_and_exchangeable_blocks(hsb):
    nested = jaxhlm.mixed("mathach ses || sector: || id: ses", hsb)
    assert list(nested.equations().index.get_level_values(0))[-4:] == ["lns1_1_1", "lns2_1_1", "lns2_1_2", "lnsig_e"]
    exch = jaxhlm.mixed("mathach ses || id: ses female, cov(exch)", hsb)
    eq = exch.equations()
    assert list(eq.index.get_level_values(0))[-3:] == ["lns1_1_1", "atr1_1_1_1", "lnsig_e"]
    assert math.tanh(eq.loc[("atr1_1_1_1", "_cons"), "coef"]) == pytest.approx(
        exch.varcorr().loc["corr(ses female _cons)", "estimate"], rel=1e-10)
    # a residual variance per stratum: Stata's by() metric, ln σ₁ (lnsig_e) and ln(σₛ/σ₁) (r_lns{s}ose)
    by = jaxhlm.mixed("mathach ses || id:, residuals(independent, by(sized))", hsb)
    eq, p = by.equations(), by.params
    assert list(eq.index.get_level_values(0))[-4:] == ["lns1_1_1", "r_lns2ose", "r_lns3ose", "lnsig_e"]
    lnsig = eq.loc[("lnsig_e", "_cons")]
    assert math.exp(2 * lnsig["coef"]) == pytest.approx(p["var(Residual[sized=1])"], rel=1e-12)
    assert 2 * p["var(Residual[sized=1])"] * lnsig["std_err"] == pytest.approx(by.bse["var(Residual[sized=1])"],
                                                                               rel=1e-10)
    for s in (2, 3):
        ratio = eq.loc[(f"r_lns{s}ose", "_cons"), "coef"]
        assert math.exp(2 * (lnsig["coef"] + ratio)) == pytest.approx(p[f"var(Residual[sized={s}])"], rel=1e-12)
    # the SE of a difference of coordinates: the variance table's SEs and the covariance of the two coordinates
    u = by.random_effects.phi[-3:]
    C = by.random_effects.phi_cov[-3:, -3:]
    assert eq.loc[("r_lns2ose", "_cons"), "std_err"] == pytest.approx(math.sqrt(C[0, 0] + C[1, 1] - 2 * C[0, 1]),
                                                                       rel=1e-12)
    assert math.exp(2 * u[1]) == pytest.approx(p["var(Residual[sized=2])"], rel=1e-12)
    # residuals correlated within series keep their parameters out (Stata names them its own way)
    ar = jaxhlm.mixed("mathach ses || id:, residuals(ar 1, t(t))", hsb.assign(t=hsb.groupby("id").cumcount()))
    assert list(ar.equations().index.get_level_values(0).unique()) == ["mathach", "lns1_1_1"]


def test_equations_of_a_robust_fit_carry_the_sandwich(hsb):
    m = jaxhlm.mixed("mathach ses || id:, vce(robust)", hsb)
    eq = m.equations()
    assert eq.loc[("mathach", "ses"), "std_err"] == pytest.approx(m.bse["ses"], rel=1e-12)
    assert 2 * m.params["var(_cons)"] * eq.loc[("lns1_1_1", "_cons"), "std_err"] == pytest.approx(
        m.bse["var(_cons)"], rel=1e-10)


def test_estimates_table_layout(pair):
    small, slope = pair
    log = jaxhlm.run_do(f"quietly mixed {MODELS['M3 (noslope)']}\nestimates store noslope\n"
                        "quietly mixed mathach ses female || id: ses female, cov(unstr)\nestimates store slopes\n"
                        "estimates table noslope slopes, se stats(N ll aic)\n"
                        "estimates table noslope slopes, keep(ses lnsig_e:) star\n"
                        "estimates table noslope slopes, b(%9.3f) keep(female) t p(%5.3f)")
    lines = log.splitlines()
    a, b = small.equations(), slope.equations()

    def cells(x: float, y: float | None) -> str:
        return (f" {stata_g(x, 8):>10}  " + ("" if y is None else f" {stata_g(y, 8):>10}")).rstrip()

    at = lines.index(". estimates table noslope slopes, se stats(N ll aic)")
    assert lines[at + 1:at + 6] == ["", "-" * 40, "    Variable |  noslope       slopes", "-" * 13 + "+" + "-" * 26,
                                    "mathach      |"]
    assert lines[at + 6] == "         ses |" + cells(a.loc[("mathach", "ses"), "coef"], b.loc[("mathach", "ses"), "coef"])
    assert lines[at + 7] == "             |" + cells(a.loc[("mathach", "ses"), "std_err"],
                                                    b.loc[("mathach", "ses"), "std_err"])
    # a coefficient one model lacks: blank in its column; the union keeps each model's order
    assert "      female |" + " " * 13 + f" {stata_g(b.loc[('mathach', 'female'), 'coef'], 8):>10}" in lines[at:]
    # the variance equations, each headed and ruled off, then the statistics
    k = lines.index("lns1_1_1     |", at)
    assert lines[k - 1] == "-" * 13 + "+" + "-" * 26
    assert lines[k + 1] == "       _cons |" + cells(a.loc[("lns1_1_1", "_cons"), "coef"], b.loc[("lns1_1_1", "_cons"), "coef"])
    assert "atr1_1_2_3   |" in lines[at:]
    k = lines.index("           N |       7185         7185", at)
    assert lines[k + 1] == "          ll |" + cells(small.llf, slope.llf)
    assert lines[k + 2] == "         aic |" + cells(small.aic, slope.aic)
    assert lines[k + 3:k + 5] == ["-" * 40, " " * 28 + "legend: b/se"]
    # star: three columns more; marks by the z tests' p-values
    at = lines.index(". estimates table noslope slopes, keep(ses lnsig_e:) star")
    assert lines[at + 2:at + 6] == ["-" * 46, "    Variable |  noslope          slopes", "-" * 13 + "+" + "-" * 32,
                                    "mathach      |"]
    assert lines[at + 6] == (f"         ses | {stata_g(a.loc[('mathach', 'ses'), 'coef'], 8):>10}***  "
                             f" {stata_g(b.loc[('mathach', 'ses'), 'coef'], 8):>10}***")
    assert lines[at + 7:at + 9] == ["-" * 13 + "+" + "-" * 32, "lnsig_e      |"]
    assert lines[at + 11] == "      legend: * p<0.05; ** p<0.01; *** p<0.001"
    # a fixed format: the column is its width; t and p under the coefficient in their own formats
    at = lines.index(". estimates table noslope slopes, b(%9.3f) keep(female) t p(%5.3f)")
    row = b.loc[("mathach", "female")]
    assert lines[at + 2:at + 10] == [
        "-" * 38, "    Variable |  noslope     slopes", "-" * 13 + "+" + "-" * 24, "mathach      |",
        f"      female |{'':12} {row['coef']:>9.3f}", f"             |{'':12} {row['statistic']:>9.2f}",
        f"             |{'':12} {row['pvalue']:>9.3f}", "-" * 38]
    assert lines[at + 10] == " " * 25 + "legend: b/t/p"


def test_union_keeps_factor_levels_together(hsb):
    a = jaxhlm.mixed("mathach ses || id:", hsb)
    b = jaxhlm.mixed("mathach ses i.sized || id:", hsb)
    table = jaxhlm.estimates_table({"a": a, "b": b})
    assert list(table.equations[0].loc["mathach"].index) == ["ses", "2.sized", "3.sized", "_cons"]
    text = str(table).splitlines()
    k = text.index("       sized |")
    assert [line[:14] for line in text[k + 1:k + 3]] == ["          2  |", "          3  |"]
    assert text[k + 1].endswith(f"{stata_g(b.fe_params['2.sized'], 8):>10}") and text[k + 1][14:27].strip() == ""


@pytest.mark.parametrize("options, message", [
    ("se star", "star may not be combined with se, t or p"),
    ("stats(r2)", r"stats\(r2\): not a statistic of these models; choose from N, aic, bic, chi2"),
    ("keep(nosuch)", r"keep\(nosuch\): no such coefficient in the models"),
    ("b(%9.3e)", "format %9.3e is not one jaxhlm renders"),
    ("star(.01 .05 .001)", r"star\(\) takes three decreasing significance levels"),
    ("eform", "option eform not allowed; estimates table accepts b"),
    ("star(a b c)", r"star\(a b c\): give three significance levels"),
])
def test_estimates_table_bad_input(options, message):
    with pytest.raises(jaxhlm.DoFileError, match=message) as exc:
        jaxhlm.run_do(f"quietly mixed mathach ses || id:\nestimates table ., {options}")
    assert exc.value.line == 2

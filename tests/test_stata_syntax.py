"""Stata `mixed` syntax: factor-variable expansion, names, base levels, options and their errors.

Designs built from Stata syntax are checked against the same model written as an lme4/formulaic formula:
equal log likelihoods and equal coefficients under the two naming schemes.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import jaxhlm
from jaxhlm import FormulaError
from jaxhlm.stata import Columns, parse_mixed, parse_varlist

COLUMNS = Columns(["id", "mathach", "ses", "female", "minority", "sector", "size", "sized", "meanses"])


@pytest.mark.parametrize(
    "varlist, terms",
    [
        ("c.ses##c.sector", ["c.ses", "c.sector", "c.ses#c.sector"]),
        ("c.ses##i.sized", ["c.ses", "i.sized", "i.sized#c.ses"]),
        ("female#sector", ["i.female#i.sector"]),
        ("ses sector", ["c.ses", "c.sector"]),
        ("female##sector##sized", ["i.female", "i.sector", "i.sized", "i.female#i.sector", "i.female#i.sized",
                                   "i.sector#i.sized", "i.female#i.sector#i.sized"]),
        ("i.(female sector)", ["i.female", "i.sector"]),
        ("female##(sector c.ses)", ["i.female", "i.sector", "i.female#i.sector", "c.ses", "i.female#c.ses"]),
        ("ib3.sized ib(last).sized ib(freq).sized ib(first).sized ibn.sized",
         ["ib3.sized", "ib(last).sized", "ib(freq).sized", "ib(first).sized", "ibn.sized"]),
        ("math ses-sector", ["c.mathach", "c.ses", "c.female", "c.minority", "c.sector"]),  # abbreviation, range
        ("size*", ["c.size", "c.sized"]),
    ],
)
def test_varlist_expansion(varlist, terms):
    assert [str(t) for t in parse_varlist(varlist, COLUMNS)] == terms


@pytest.mark.parametrize(
    "varlist, words",
    [
        ("s", ["s ambiguous abbreviation", "ses", "sector"]),
        ("bogus", ["variable bogus not found"]),
        ("i.(ses", ["unbalanced parentheses"]),
        ("ses#", ["variable is missing"]),
        ("L.ses", ["invalid term", "i., ib#."]),
        ("i.c.ses", ["two operators"]),
    ],
)
def test_varlist_errors(varlist, words):
    with pytest.raises(jaxhlm.FormulaError) as info:
        parse_varlist(varlist, COLUMNS)
    for w in words:
        assert w in str(info.value)


def test_random_part_and_options():
    spec = parse_mixed("xtmixed mathach ses || id: ses female, cov(exch) reml", COLUMNS.names)
    assert spec.reml and spec.random[0].names == ("ses", "female", "_cons")
    assert spec.random[0].kind == "exchangeable"
    spec = parse_mixed("mixed mathach ses || id: ses, nocons", COLUMNS.names)
    assert not spec.reml and spec.random[0].names == ("ses",) and spec.random[0].kind == "identity"
    assert parse_mixed("mathach ses || id: ses female", COLUMNS.names).random[0].kind == "independent"  # default
    spec = parse_mixed("mathach ses, noconstant || id: || id: ses, noc cov(un) mle", COLUMNS.names)
    assert not spec.fixed.constant and [t.names for t in spec.random] == [("_cons",), ("ses",)]
    assert parse_mixed("mathach ses || id:, reml dfm(satt)", COLUMNS.names).dfmethod == "satterthwaite"
    assert parse_mixed("mathach ses || id:, reml dfmethod(kr)", COLUMNS.names).dfmethod == "kroger"
    assert parse_mixed("mathach ses || id:, reml", COLUMNS.names).dfmethod is None
    assert parse_mixed("mathach ses || id:, reml dfm(res)", COLUMNS.names).dfmethod == "residual"
    # no random-effects equation: a linear regression, each observation a group of its own without effects
    spec = parse_mixed("mathach ses, reml", COLUMNS.names)
    assert spec.linear and spec.levels == ("_n",) and spec.re_names == () and spec.reml
    assert not parse_mixed("mathach ses || id:", COLUMNS.names).linear


@pytest.mark.parametrize(
    "command, words",
    [
        ("mathach ses || id", ["needs a level variable and a colon"]),
        ("mathach ses || id: i.sector", ["factor-variable notation is not allowed in the random part"]),
        ("mathach ses || id:, cov(banded)", ["covariance(banded) is not a covariance structure"]),
        ("mathach ses || id:, vce(bootstrap)", ["vce(bootstrap) is not available", "vce(cluster clustvar)"]),
        ("mathach ses || id:, pwscale(size)", ["pwscale() scales the observations' sampling weights"]),
        ("mathach ses || id:, matlog", ["option matlog not allowed"]),
        ("mathach ses || id:, dfmethod(satterthwaite)", ["dfmethod(satterthwaite) requires REML", "reml"]),
        ("mathach ses || id:, reml dfm(anova)", ["dfmethod(anova) is not available"]),
        ("mathach ses || id:, dfm(kr)", ["dfmethod(kroger) requires REML"]),
        ("mathach ses || _all: ses", ["crossed random effects"]),
        ("i.mathach ses || id:", ["dependent variable i.mathach must be a plain variable name"]),
        ("mathach ses || id: ses, nocons || id: ses", ["ses appear in more than one random term"]),
    ],
)
def test_command_errors(command, words):
    with pytest.raises(jaxhlm.FormulaError) as info:
        parse_mixed(command, COLUMNS.names)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize(
    "command, formula, names",
    [
        # Base levels: explicit, last, most frequent (sized 2 has 2,984 of 7,185), none with noconstant.
        ("mathach ib3.sized || id:", "mathach ~ C(sized, Treatment(3)) + (1 | id)", ["1.sized", "2.sized", "_cons"]),
        ("mathach ib(last).sized || id:", "mathach ~ C(sized, Treatment(3)) + (1 | id)",
         ["1.sized", "2.sized", "_cons"]),
        ("mathach ib(freq).sized || id:", "mathach ~ C(sized, Treatment(2)) + (1 | id)",
         ["1.sized", "3.sized", "_cons"]),
        ("mathach ibn.sized, noconstant || id:", "mathach ~ 0 + C(sized) + (1 | id)",
         ["1.sized", "2.sized", "3.sized"]),
        # Without c.ses in the model every level gets its own slope; with it, level 1 is the base.
        ("mathach i.sized#c.ses || id:", "mathach ~ C(sized):ses + (1 | id)",
         ["1.sized#c.ses", "2.sized#c.ses", "3.sized#c.ses", "_cons"]),
        ("mathach c.ses i.sized#c.ses || id:", "mathach ~ ses + ses:C(sized) + (1 | id)",
         ["ses", "2.sized#c.ses", "3.sized#c.ses", "_cons"]),
        # A factor interaction alone keeps every cell but the all-base one.
        ("mathach female#sector || id:", "mathach ~ female*sector + (1 | id)",
         ["0.female#1.sector", "1.female#0.sector", "1.female#1.sector", "_cons"]),
    ],
)
def test_designs_match_formulas(hsb, command, formula, names):
    s, f = jaxhlm.mixed(command, hsb), jaxhlm.fit(formula, hsb)
    assert list(s.fe_params.index) == names
    assert s.llf == pytest.approx(f.llf, abs=1e-8)
    if "#" in command and "c." not in command:  # cell parameterisation vs main effects: only _cons is shared
        assert s.fe_params["_cons"] == pytest.approx(f.fe_params["Intercept"], rel=1e-7)
    else:  # the same parameters under other names
        np.testing.assert_allclose(np.sort(s.fe_params), np.sort(f.fe_params), rtol=1e-7)
        np.testing.assert_allclose(np.sort(s.bse_fe), np.sort(f.bse_fe), rtol=1e-7)


def test_duplicate_terms(hsb):
    with pytest.raises(jaxhlm.FormulaError, match="sized has two base levels"):
        jaxhlm.mixed("mathach ib3.sized i.sized#c.ses || id:", hsb)
    r = jaxhlm.mixed("mathach i.sized i.sized c.ses c.ses || id:", hsb)
    assert r.design.fe_names == ("2.sized", "3.sized", "ses", "_cons")  # the repeated i.sized vanishes
    assert r.design.omitted == ("ses",)  # the repeated c.ses is kept and omitted, with a note
    assert "note: ses omitted because of collinearity." in str(r)


def test_empty_cell_is_noted_and_shown(hsb):
    df = hsb[~((hsb["female"] == 1) & (hsb["sized"] == 3))]
    r = jaxhlm.mixed("mathach i.female##i.sized || id:", df)
    assert r.design.omitted == ("1.female#3.sized",)
    text = str(r)
    assert "note: 1.female#3.sized identifies no observations in the sample." in text
    assert [ln for ln in text.splitlines() if "(empty)" in ln] == ["        1 3  |          0  (empty)"]


def test_factor_values_must_be_nonnegative_integers(hsb):
    with pytest.raises(jaxhlm.DataError, match=r"'ses' has values that are not non-negative integers \(e.g. -1.528\)"):
        jaxhlm.mixed("mathach i.ses || id:", hsb)
    with pytest.raises(jaxhlm.DataError, match="factor variable 'kind' is not numeric"):
        jaxhlm.mixed("mathach i.kind || id:", hsb.assign(kind=np.where(hsb["sector"] == 1, "cath", "pub")))
    with pytest.raises(jaxhlm.DataError, match="base level 4 of 'sized' does not occur"):
        jaxhlm.mixed("mathach ib4.sized || id:", hsb)


def test_layout_groups_factor_levels(hsb):
    lines = str(jaxhlm.mixed("mathach c.ses##i.sized || id:", hsb)).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("mathach |"))
    rows = lines[start + 2:start + 13]
    assert [ln.split("|")[0].strip() for ln in rows] == ["ses", "", "sized", "2", "3", "", "sized#c.ses", "2", "3",
                                                         "", "_cons"]
    # Names right-aligned in the name column, levels one space in from it (Stata's layout).
    assert rows[0].startswith("         ses |") and rows[3].startswith("          2  |")
    assert rows[1] == rows[5] == "             |" and rows[2] == "       sized |"


def _rows(text: str, label: str) -> list[float]:
    """The numbers of the report's row labelled ``label``."""
    line = next(ln for ln in text.splitlines() if ln.split("|")[0].strip() == label)
    return [float(v) for v in line.split("|")[1].split()]


def test_display_options_level_and_stddeviations():
    hsb = jaxhlm.datasets.hsb()
    plain = jaxhlm.mixed("mathach ses || id: ses, cov(un)", hsb)
    shown = jaxhlm.mixed("mathach ses || id: ses, cov(un) level(90) stddeviations", hsb)
    assert shown.llf == plain.llf  # display options change the report only
    text = str(shown)
    assert text.count("[90% conf. interval]") == 2 and "var(" not in text
    ci = plain.conf_int(alpha=0.10)
    np.testing.assert_allclose(_rows(text, "ses")[-2:], ci.loc["ses"], rtol=1e-6)
    sd = plain.varcorr(alpha=0.10)
    for label in ("sd(ses)", "sd(_cons)", "corr(ses,_cons)", "sd(Residual)"):
        np.testing.assert_allclose(_rows(text, label), sd.loc[label], rtol=1e-6)
    variance = str(jaxhlm.mixed("mathach ses || id: ses, cov(un) level(80)", hsb))
    np.testing.assert_allclose(_rows(variance, "var(ses)")[-2:], plain.conf_int(alpha=0.2).loc["var(ses)"], rtol=1e-6)
    assert plain.conf_int().iloc[2:].to_numpy() == pytest.approx(plain.random_effects.ci, rel=1e-12)


def test_display_options_leave_out_parts_of_the_report():
    hsb = jaxhlm.datasets.hsb()
    full = str(jaxhlm.mixed("mathach ses || id:", hsb))
    rule = "-" * 78
    # a blank line between the fixed- and random-effects tables, as Stata's logs show them
    assert f"{rule}\n\n{rule}\n  Random-effects parameters  |" in full
    text = str(jaxhlm.mixed("mathach ses, noheader nofetable nolrtest || id:", hsb))
    assert text.lstrip("\n").startswith(f"{rule}\n  Random-effects parameters  |")
    assert not any(w in text for w in ("Number of obs", "Coefficient", "LR test"))
    text = str(jaxhlm.mixed("mathach ses || school: || id:, nogroup noretable", hsb.assign(school=hsb["id"] % 10)))
    assert "Number of obs" in text and "Coefficient" in text and "LR test" in text
    assert not any(w in text for w in ("Group variable", "No. of", "Random-effects parameters"))
    log = jaxhlm.run_do("mixed mathach ses || id:, stddev\nmixed", hsb)
    assert log.count("sd(_cons)") == 2  # the replay keeps the display options


@pytest.mark.parametrize("option, words", [("level(5)", "between 10 and 99.99"), ("level(ninety)", "level(ninety)"),
                                           ("stddevs", "option stddevs not allowed")])
def test_bad_display_options_are_explained(option, words):
    with pytest.raises(FormulaError, match=re.escape(words)):
        jaxhlm.mixed(f"mathach ses || id:, {option}", jaxhlm.datasets.hsb())

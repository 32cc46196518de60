"""Stata's ``if`` and ``in`` qualifiers on ``mixed``: the fit of the rows they select equals the fit of those rows
selected by hand in pandas (the reference), with Stata's treatment of missing values in the expression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    data = jaxhlm.datasets.hsb()
    data["region"] = np.where(data["id"].astype(int) % 3 == 0, "north", "south")
    data["score"] = np.where(np.arange(len(data)) % 7 == 0, np.nan, data["pracad"] * 10)  # not in the models
    return data


def _same(a: jaxhlm.MixedResult, b: jaxhlm.MixedResult) -> None:
    assert a.nobs == b.nobs and a.ngroups == b.ngroups
    assert a.llf == pytest.approx(b.llf, abs=1e-9)
    np.testing.assert_allclose(a.params.to_numpy(), b.params.to_numpy(), rtol=1e-8)


@pytest.mark.parametrize("qualifier, select", [
    ("if sector == 1", lambda d: d["sector"] == 1),
    ("if sector", lambda d: d["sector"] != 0),
    ("if !sector & size >= 1000", lambda d: (d["sector"] == 0) & (d["size"] >= 1000)),
    ("if inlist(sized, 1, 3) | minority == 1", lambda d: d["sized"].isin([1, 3]) | (d["minority"] == 1)),
    ("if inrange(ses, -1, 0.5) & region == \"north\"", lambda d: d["ses"].between(-1, 0.5) & (d["region"] == "north")),
    ("if abs(ses - meanses) < 0.5 * 2 ^ 0", lambda d: (d["ses"] - d["meanses"]).abs() < 0.5),
    ("if mod(id, 2) == 0", lambda d: d["id"] % 2 == 0),
    # Stata's missing values: larger than every number, true in & and |, tested with missing() or == .
    ("if score > 5", lambda d: (d["score"] > 5) | d["score"].isna()),
    ("if score < .", lambda d: d["score"].notna()),
    ("if !missing(score) & score <= 5", lambda d: d["score"] <= 5),
    ("if score == . | score > 6", lambda d: d["score"].isna() | (d["score"] > 6)),
    ("in 1/3000", lambda d: np.arange(len(d)) < 3000),
    ("in -4000/l", lambda d: np.arange(len(d)) >= len(d) - 4000),
    ("if sector == 0 in f/5000", lambda d: (np.arange(len(d)) < 5000) & (d["sector"] == 0)),
    ("in 2001/l if minority", lambda d: (np.arange(len(d)) >= 2000) & (d["minority"] == 1)),
])
def test_qualifiers_select_the_rows_stata_selects(hsb, qualifier, select):
    got = jaxhlm.mixed(f"mathach ses {qualifier} || id:", hsb)
    want = jaxhlm.mixed("mathach ses || id:", hsb[np.asarray(select(hsb))])
    _same(got, want)


def test_qualifiers_with_options_weights_and_listwise_deletion(hsb):
    data = hsb.assign(f=1 + np.arange(len(hsb)) % 2)
    data.loc[::50, "ses"] = np.nan
    got = jaxhlm.mixed("mathach ses if inlist(sized, 1, 3) [fw=f], reml || id: ses, cov(un)", data)
    part = data[data["sized"].isin([1, 3])]
    want = jaxhlm.mixed("mathach ses [fw=f], reml || id: ses, cov(un)", part)
    _same(got, want)
    assert got.design.n_dropped == want.design.n_dropped == int(part["ses"].isna().sum())  # only rows selected


def test_chunked_data_take_if_but_not_in(hsb):
    parts = lambda: (hsb.iloc[i:i + 1000] for i in range(0, len(hsb), 1000))  # noqa: E731
    _same(jaxhlm.mixed("mathach ses if sector == 1 || id:", parts()), jaxhlm.mixed("mathach ses if sector == 1 || id:", hsb))
    with pytest.raises(DataError, match="select the rows with if"):
        jaxhlm.mixed("mathach ses in 1/100 || id:", parts())


def test_do_files_and_lrtest_see_the_subset(hsb):
    log = jaxhlm.run_do("mixed mathach ses if sector == 1 || id:\nestat ic", hsb)
    assert "Number of obs     =      3,543" in log
    full, part = jaxhlm.mixed("mathach ses || id:", hsb), jaxhlm.mixed("mathach ses if sector == 1 || id:", hsb)
    assert part.nobs == 3543 and full.nobs == 7185  # a cached design is not reused for another subset
    with pytest.raises(jaxhlm.ComparisonError, match="different observations"):
        jaxhlm.lrtest(full, jaxhlm.mixed("mathach ses if sector == 1 || id: ses", hsb))
    simulated = jaxhlm.simulate(part, 2, seed=0)  # the rows are rebuilt through the same qualifiers
    assert simulated.shape == (2, 3543)


@pytest.mark.parametrize("command, error, words", [
    ("mathach ses if || id:", FormulaError, "if needs an expression"),
    ("mathach ses if sector = 1 || id:", FormulaError, "compares with '=='"),
    ("mathach ses if foo(ses) || id:", FormulaError, r"function foo\(\) is not supported"),
    ("mathach ses if inrange(ses, 1) || id:", FormulaError, r"inrange\(\) takes 3 arguments"),
    ("mathach ses if sector == || id:", FormulaError, "ends early"),
    ("mathach ses if inlist(sector 1) || id:", FormulaError, "expected ','"),
    ("mathach ses if nosuch == 1 || id:", FormulaError, "variable nosuch not found"),
    ("mathach ses if region == 1 || id:", DataError, "type mismatch"),
    ("mathach ses if region + 1 > 0 || id:", DataError, "type mismatch"),
    ("mathach ses if sector > 5 || id:", DataError, r"no row satisfies the qualifiers \(if sector > 5\)"),
    ("mathach ses in 0/5 || id:", FormulaError, "numbered from 1"),
    ("mathach ses in 1/99999 || id:", DataError, "outside the data's 7,185 rows"),
    ("mathach ses in 10/5 || id:", DataError, "outside the data"),
    ("mathach ses in lots || id:", FormulaError, "in takes a range of rows"),
    ("mathach ses if _n < 5 || id:", FormulaError, "_n is not supported"),
])
def test_bad_qualifiers_are_explained(hsb, command, error, words):
    with pytest.raises(error, match=words):
        jaxhlm.mixed(command, hsb)


def test_stata_functions_cond_logit_float_and_distributions():
    """cond() picks per row (its fourth argument where the condition is missing, else its second), the string
    form too; logit/invlogit, sign, float() (single precision) and the distribution functions as scipy's."""
    from scipy import special, stats

    from jaxhlm.expressions import evaluate, parse_expression

    frame = pd.DataFrame({"x": [-1.5, 0.0, np.nan, 2.0], "p": [0.1, 0.5, 0.9, np.nan]})

    def ev(text: str) -> np.ndarray:
        return evaluate(parse_expression(text, lambda n: n), frame)

    np.testing.assert_array_equal(ev("cond(x > 0, 1, 0)"), [0, 0, 1, 1])  # missing > 0 is true in Stata
    np.testing.assert_array_equal(ev("cond(x, 1, 2, 3)"), [1, 2, 3, 1])
    np.testing.assert_array_equal(ev("cond(x, 1, 2)"), [1, 2, 1, 1])
    assert list(ev('cond(x >= 0, "yes", "no")')) == ["no", "yes", "yes", "yes"]
    np.testing.assert_allclose(ev("invlogit(logit(p))"), frame["p"])
    np.testing.assert_array_equal(ev("sign(x)"), [-1, 0, np.nan, 1])
    assert ev("float(1/3)")[0] == float(np.float32(1 / 3)) != 1 / 3
    np.testing.assert_allclose(ev("chi2tail(2, x)")[[1, 3]], stats.chi2.sf([0.0, 2.0], 2))
    np.testing.assert_allclose(ev("invnormal(p)")[:3], special.ndtri([0.1, 0.5, 0.9]))
    with pytest.raises(FormulaError, match=r"cond\(\) takes at least 3 arguments, got 2"):
        ev("cond(x, 1)")
    with pytest.raises(DataError, match="type mismatch in cond"):
        ev('cond(x, 1, "a")')

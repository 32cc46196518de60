"""Bad input ends in a clear message (and exit status 2 on the command line), never a JAX traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.cli import main


@pytest.fixture
def small(hsb):
    return hsb[hsb["id"].isin(hsb["id"].unique()[:20])].copy()


@pytest.mark.parametrize(
    "formula, error, words",
    [
        ("mathach ~ bogus + (1 | id)", jaxhlm.FormulaError, ["'bogus'", "not found"]),
        ("nope ~ ses + (1 | id)", jaxhlm.FormulaError, ["response", "'nope'"]),
        ("mathach ~ ses + (1 + slope | id)", jaxhlm.FormulaError, ["random-effect variable", "'slope'"]),
        ("mathach ~ ses + (1 | school)", jaxhlm.FormulaError, ["grouping variable", "'school'"]),
        ("mathach ses (1 | id)", jaxhlm.FormulaError, ["'~'"]),
        ("mathach ~ ses + (1 | id) + (1 | sector) + (1 | minority)", jaxhlm.FormulaError,
         ["3 grouping levels", "or two (nested: a three-level model, or crossed)"]),
        ("mathach ~ 0 + (1 | id)", jaxhlm.DataError, ["fixed-effects design is empty"]),
    ],
)
def test_formula_errors(small, formula, error, words):
    with pytest.raises(error) as info:
        jaxhlm.fit(formula, small)
    for w in words:
        assert w in str(info.value)


def test_non_numeric_response(small):
    df = small.assign(grade=np.where(small["mathach"] > 12, "high", "low"))
    with pytest.raises(jaxhlm.DataError, match="response 'grade' is not numeric"):
        jaxhlm.fit("grade ~ ses + (1 | id)", df)


def test_non_numeric_random_slope(small):
    df = small.assign(kind=np.where(small["sector"] == 1, "catholic", "public"))
    with pytest.raises(jaxhlm.DataError, match="random-effect variable 'kind' is not numeric"):
        jaxhlm.fit("mathach ~ ses + (kind | id)", df)


def test_single_group(hsb):
    one = hsb[hsb["id"] == hsb["id"].iloc[0]]
    with pytest.raises(jaxhlm.DataError, match="has 1 level; a mixed model needs at least two groups"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", one)


def test_groups_of_one_observation(hsb):
    """One row per school: the schools' intercepts cannot be told from the residual (the likelihood is flat along
    var(_cons) + var(Residual) = const), so the fit is refused rather than split arbitrarily, as lme4 refuses it."""
    first = hsb.groupby("id").head(1)
    with pytest.raises(jaxhlm.DataError, match="every id group has a single observation"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", first)
    with pytest.raises(jaxhlm.DataError, match="every id group has a single observation"):
        jaxhlm.mixed("mathach ses || id:", first)


def test_singular_random_design(small):
    df = small.assign(ses2=2 * small["ses"])
    with pytest.raises(jaxhlm.DataError, match="random-effects design .* is singular"):
        jaxhlm.fit("mathach ~ ses + (ses + ses2 | id)", df)


def test_all_rows_missing(small):
    df = small.assign(ses=np.nan)
    with pytest.raises(jaxhlm.DataError, match="no observations left"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", df)


def test_constant_response(small):
    with pytest.raises(jaxhlm.DataError, match="constant"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", small.assign(mathach=1.0))


def test_missing_values_dropped_listwise(small):
    df = small.copy()
    df.loc[df.index[:3], "ses"] = np.nan
    df.loc[df.index[5], "mathach"] = np.nan
    df.loc[df.index[7], "minority"] = np.nan  # not used by the model: must not drop the row
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", df)
    full = jaxhlm.fit("mathach ~ ses + (1 | id)", df.dropna(subset=["ses", "mathach"]))
    assert r.nobs == len(small) - 4 and r.design.n_dropped == 4
    assert "4 observations dropped because of missing values" in str(r.summary())
    assert r.llf == pytest.approx(full.llf, abs=1e-9)


def test_collinear_column_dropped_with_note(small):
    df = small.assign(ses_copy=small["ses"] * 3.0 + 0.0)
    r = jaxhlm.fit("mathach ~ ses + sector + ses_copy + (1 | id)", df)
    ref = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", df)
    assert r.design.omitted == ("ses_copy",)
    assert "note: ses_copy omitted because of collinearity" in str(r.summary())
    assert r.df_modelwc == ref.df_modelwc and r.wald.df == ref.wald.df
    assert r.llf == pytest.approx(ref.llf, abs=1e-8)
    with pytest.raises(jaxhlm.JaxhlmError, match="omitted because of collinearity"):
        r.test("ses_copy = 0")


def test_unknown_coefficient_in_test(small):
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", small)
    with pytest.raises(jaxhlm.JaxhlmError, match="'sector' is not a coefficient"):
        r.test("sector = 0")


def test_lrtest_refuses_different_samples(hsb):
    a = jaxhlm.fit("mathach ~ ses + (1 | id)", hsb)
    b = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", hsb.iloc[:-10])
    with pytest.raises(jaxhlm.ComparisonError, match="different observations"):
        jaxhlm.lrtest(a, b)


def test_unknown_covariance(small):
    with pytest.raises(jaxhlm.FormulaError, match="unknown covariance structure 'banded'"):
        jaxhlm.fit("mathach ~ ses + (ses | id)", small, cov="banded")


# ---- command line -----------------------------------------------------------------------------------
def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args, words",
    [
        (["fit", "mathach ~ bogus + (1 | id)"], "'bogus'"),
        (["fit", "mathach ~ ses + (1 | id)", "--data", "/nonexistent/file.csv"], "not found"),
        (["fit", "mathach ~ ses + (1 + nope | id)"], "'nope'"),
    ],
)
def test_cli_errors_exit_2(capsys, args, words):
    code, out, err = _cli(args, capsys)
    assert code == 2 and out == ""
    assert err.startswith("jaxhlm: error:") and words in err and "Traceback" not in err


def test_cli_bad_csv(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    code, out, err = _cli(["fit", "y ~ x + (1 | g)", "--data", str(path)], capsys)
    assert code == 2 and "CSV" in err


def test_cli_csv_errors(tmp_path, capsys):
    df = pd.DataFrame({"y": ["a", "b", "c", "d"], "x": [1, 2, 3, 4], "g": [1, 1, 1, 1]})
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    code, _, err = _cli(["fit", "y ~ x + (1 | g)", "--data", str(path)], capsys)
    assert code == 2 and "not numeric" in err
    df.assign(y=[1.0, 2.5, 0.3, 4.0]).to_csv(path, index=False)
    code, _, err = _cli(["fit", "y ~ x + (1 | g)", "--data", str(path)], capsys)
    assert code == 2 and "at least two groups" in err


def test_cli_json_and_report(capsys):
    code, out, _ = _cli(["fit", "mathach ~ ses + (1 + ses | id)", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc) >= {"llf", "nobs", "ngroups", "converged", "singular", "fixed", "random", "aic", "bic"}
    assert doc["nobs"] == 7185 and doc["ngroups"] == 160 and doc["converged"] is True
    assert set(doc["random"]) == {"var(ses)", "var(_cons)", "cov(ses,_cons)", "var(Residual)"}
    assert set(doc["fixed"]) == {"Intercept", "ses"}
    r = jaxhlm.fit("mathach ~ ses + (1 + ses | id)", jaxhlm.datasets.hsb())
    assert doc["llf"] == pytest.approx(r.llf, abs=1e-9)
    assert doc["fixed"]["ses"]["se"] == pytest.approx(r.bse_fe["ses"], rel=1e-12)
    code, out, _ = _cli(["fit", "mathach ~ ses + (1 | id)", "--reml"], capsys)
    assert code == 0 and "Mixed-effects REML regression" in out and "Log restricted-likelihood" in out
    code, out, _ = _cli(["fit", "mathach ~ ses + (1 | id)", "--reml", "--dfmethod", "satterthwaite", "--json"], capsys)
    doc = json.loads(out)
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", jaxhlm.datasets.hsb(), reml=True, dfmethod="satterthwaite")
    assert code == 0 and [v["df"] for v in doc["fixed"].values()] == pytest.approx(list(r.ddf), rel=1e-12)


def test_cli_json_null_se_for_failed_fit(capsys):
    from conftest import FORMULAS

    code, out, _ = _cli(["fit", FORMULAS["M1"], "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["singular"] is True
    assert all(v["se"] is None for v in doc["random"].values())


def test_cli_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "jaxhlm", "fit", "mathach ~ nothing + (1 | id)"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "'nothing'" in proc.stderr and "Traceback" not in proc.stderr

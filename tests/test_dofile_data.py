"""Data management in do-files: generate, replace, egen (with by), drop and keep, as Stata runs them; the
reference is the same computation in pandas, with Stata's storage types (generate's default float rounds to
single precision)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DoFileError
from jaxhlm.dofile import Session


@pytest.fixture()
def session() -> Session:
    return Session(jaxhlm.datasets.hsb())


def _run(session: Session, *lines: str) -> list[str]:
    out = []
    for line in lines:
        cmd, _, args = line.partition(" ")
        out.append(session.run(cmd, args))
    return out


def test_group_mean_centring_fits_what_pandas_centring_fits(session):
    hsb = jaxhlm.datasets.hsb()
    notes = _run(session, "bysort id: egen mses = mean(ses)", "generate ses_c = ses - mses",
                 "generate double ses_d = ses - mses")
    assert notes == ["", "", ""]
    mean = hsb.groupby("id")["ses"].transform("mean")
    single = (hsb["ses"] - mean.astype(np.float32).astype(float)).astype(np.float32).astype(float)
    np.testing.assert_array_equal(session.data["mses"], mean.astype(np.float32).astype(float))
    np.testing.assert_array_equal(session.data["ses_c"], single)  # Stata's float
    np.testing.assert_allclose(session.data["ses_d"], hsb["ses"] - mean.astype(np.float32).astype(float), rtol=1e-15)
    log = jaxhlm.run_do("bysort id: egen mses = mean(ses)\ngen ses_c = ses - mses\nmixed mathach ses_c mses || id: ses_c")
    want = jaxhlm.mixed("mathach ses_c mses || id: ses_c", hsb.assign(mses=mean.astype(np.float32).astype(float),
                                                                       ses_c=single))
    assert f"Log likelihood = {want.llf:.3f}" in log
    assert f"ses_c |   {want.fe_params['ses_c']:.6f}" in log


def test_generate_replace_and_their_notes(session):
    hsb = jaxhlm.datasets.hsb()
    out = _run(session, "gen byte high = ses > 0 if sector == 1", "replace high = 2 if high == 0 & minority",
               "generate str5 where = \"north\" if mod(id, 2)", "g z = ln(size) - 7 in 1/100")
    high = np.where(hsb["sector"] == 1, (hsb["ses"] > 0).astype(float), np.nan)
    n_missing = int(np.isnan(high).sum())
    assert out[0] == f"({n_missing:,} missing values generated)"
    changed = (high == 0) & (hsb["minority"] == 1)
    assert out[1] == f"({int(changed.sum()):,} real changes made)"
    np.testing.assert_array_equal(session.data["high"], np.where(changed, 2.0, high))
    assert (session.data["where"] == np.where(hsb["id"] % 2 == 1, "north", "")).all()
    assert out[2] == f"({int((hsb['id'] % 2 == 0).sum()):,} missing values generated)"
    z = session.data["z"].to_numpy()
    np.testing.assert_array_equal(z[:100], (np.log(hsb["size"][:100]) - 7).astype(np.float32).astype(float))
    assert np.isnan(z[100:]).all()


@pytest.mark.parametrize("fcn, how", [("mean", "mean"), ("sd", "std"), ("total", "sum"), ("count", "count"),
                                      ("min", "min"), ("max", "max"), ("median", "median")])
def test_egen_statistics_by_group(session, fcn, how):
    hsb = jaxhlm.datasets.hsb()
    x = hsb["ses"].where(hsb.index % 5 != 0)  # missing values are left out
    session.data = session.data.assign(x=x)
    _run(session, f"egen double s = {fcn}(x * 2) if female, by(id sector)")
    sel = hsb["female"] == 1
    want = (2 * x)[sel].groupby([hsb["id"][sel], hsb["sector"][sel]]).transform(how).reindex(hsb.index)
    np.testing.assert_allclose(session.data["s"], want, rtol=1e-12)


def test_drop_and_keep_rows_and_variables(session):
    out = _run(session, "drop if sector == 1", "keep in 1/1000", "keep mathach ses id", "drop ses")
    assert out[0] == "(3,543 observations deleted)" and out[1] == "(2,642 observations deleted)"
    assert list(session.data.columns) == ["mathach", "id"] and len(session.data) == 1000
    with pytest.raises(jaxhlm.JaxhlmError, match="dataset in memory has changed"):
        session.run("use", "other.csv")


@pytest.mark.parametrize("line, words", [
    ("generate ses = 1", "variable ses already defined"),
    ("replace nosuch = 1", "variable nosuch not found"),
    ("replace double ses = 1", "replace takes no storage type"),
    ("generate x == 1", "needs [type] varname = exp"),
    ("generate _x = 1", "_x invalid name"),
    ("egen m = rank(ses)", "egen computes mean()"),
    ("egen m = mean(ses), over(id)", "option over not allowed"),
    ("by id: summarize ses", "prefixes egen, generate, replace, drop and keep"),
    ("by minority: generate m = _n", "not sorted: by minority: needs the data sorted by it; use bysort"),
    ("generate m = ses[_n - 1", "expected ']'"),
    ("generate str3 s = ses", "type mismatch"),
    ("generate s = nosuch + 1", "variable nosuch not found"),
    ("drop", "needs a varlist or if/in"),
    ("drop ses if sector", "not both"),
])
def test_bad_data_commands_are_explained(line, words):
    with pytest.raises(DoFileError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        jaxhlm.run_do(line)


def _single(values) -> np.ndarray:
    return np.asarray(values, dtype=float).astype(np.float32).astype(float)


def test_predict_after_mixed(session):
    out = _run(session, "mixed mathach ses i.sector || id: ses, cov(un)", "predict xb", "predict fit, fitted",
               "predict res, residuals", "predict rs, rstandard", "predict se, stdp", "predict u*, reffects",
               "predict f1 if sector == 1, fitted")
    assert out[1] == "(option xb assumed)" and out[2] == ""
    r, hsb = session.active, jaxhlm.datasets.hsb()
    d = session.data
    np.testing.assert_array_equal(d["xb"], _single(r.predict(hsb, random=False)))
    np.testing.assert_array_equal(d["fit"], _single(r.fittedvalues))
    np.testing.assert_array_equal(d["res"], _single(hsb["mathach"] - r.fittedvalues))
    np.testing.assert_array_equal(d["rs"], _single((hsb["mathach"] - r.fittedvalues) / np.sqrt(r.scale)))
    X = np.column_stack([hsb["ses"], hsb["sector"], np.ones(len(hsb))])
    np.testing.assert_allclose(d["se"], np.sqrt(np.einsum("ni,ij,nj->n", X, r.cov_params().to_numpy(), X)),
                               rtol=1e-6)
    blups = r.ranef().loc[hsb["id"]]
    np.testing.assert_array_equal(d["u1"], _single(blups["ses"]))  # Stata's order: ses, then _cons
    np.testing.assert_array_equal(d["u2"], _single(blups["_cons"]))
    np.testing.assert_array_equal(d["f1"], np.where(hsb["sector"] == 1, d["fit"], np.nan))
    assert out[-1] == f"({int((hsb['sector'] == 0).sum()):,} missing values generated)"


def test_predict_random_effects_of_one_level(session):
    session.data = session.data.assign(cls=session.data["minority"])
    _run(session, "mixed mathach ses || id: || cls:", "predict school, reffects relevel(id)",
         "predict a b, reffects")
    r = session.active
    np.testing.assert_array_equal(session.data["school"], _single(r.ranef(0).loc[session.data["id"], "_cons"]))
    np.testing.assert_array_equal(session.data["a"], session.data["school"])
    inner = r.ranef(1)["_cons"]
    want = [inner[(g, c)] for g, c in zip(session.data["id"], session.data["cls"])]
    np.testing.assert_array_equal(session.data["b"], _single(want))


@pytest.mark.parametrize("lines, words", [
    (["predict x"], "last estimates not found"),
    (["mixed mathach ses || id: ses", "predict u, reffects"], "needs 2 new variable names"),
    (["mixed mathach ses || id:", "predict ses"], "variable ses already defined"),
    (["mixed mathach ses || id:", "predict a, xb fitted"], "only one statistic"),
    (["mixed mathach ses || id:", "predict a, fitted relevel(id)"], "relevel() goes with reffects"),
    (["mixed mathach ses || id:", "predict a, reffects relevel(school)"], "the model's levels are id"),
    (["mixed mathach ses || id:", "predict a, scores"], "option scores not allowed"),
])
def test_bad_predict_is_explained(lines, words):
    with pytest.raises(DoFileError, match=words.replace("(", r"\(").replace(")", r"\)")):
        jaxhlm.run_do("\n".join(lines))


def test_predict_outside_the_estimation_sample_as_stata(session):
    # A school whose every response is missing has no BLUP: its fitted values and residuals are missing (its xb
    # is not); rows outside the estimation sample get no standardized residual.
    data = session.data.assign(mathach=session.data["mathach"].where(session.data["id"] != 1224))
    data.loc[data.index[100], "mathach"] = np.nan
    session.data = data
    _run(session, "mixed mathach ses || id:", "predict xb", "predict fit, fitted", "predict rs, rstandard")
    school = (data["id"] == 1224).to_numpy()
    assert np.isnan(session.data["fit"][school]).all() and not np.isnan(session.data["xb"][school]).any()
    assert not np.isnan(session.data["fit"][~school]).any()
    assert np.isnan(session.data["rs"].iloc[100]) and np.isnan(session.data["rs"][school]).all()
    assert np.isnan(session.data["rs"]).sum() == school.sum() + 1


def test_summarize_prints_statas_table():
    # Lines of Stata logs (Stata 17): x1 takes 1, 2 and 3 400 times each, a long name is abbreviated with ~ and
    # its last letter, a string variable shows no observations.
    data = pd.DataFrame({"x1": np.repeat([1.0, 2.0, 3.0], 400), "xanders_aggregate": np.arange(1200.0),
                         "make": ["a"] * 1200})
    log = jaxhlm.run_do("summarize\nsu x1 if x1 > 1", data)
    assert "    Variable |        Obs        Mean    Std. dev.       Min        Max" in log
    assert "          x1 |      1,200           2     .816837          1          3" in log
    assert "xanders_ag~e |      1,200       599.5    346.5545          0       1199" in log
    assert "        make |          0\n" in log
    assert "          x1 |        800         2.5    .5003128          2          3" in log
    hsb = jaxhlm.run_do("summarize mathach ses")
    assert "     mathach |      7,185    12.74785    6.878246     -2.832     24.993" in hsb
    assert "         ses |      7,185    .0001434    .7793552     -3.758      2.692" in hsb


def test_list_prints_statas_boxed_table():
    # The layout of Stata logs' list output: a 5-space margin, observation numbers, columns 3 apart and
    # right-aligned (strings too), a rule every 5 rows.
    log = jaxhlm.run_do("list id mathach ses in 1/6\nlist id sector if mathach > 24.98, noobs")
    assert ("     +-------------------------+\n"
            "     |   id   mathach      ses |\n"
            "     |-------------------------|\n"
            "  1. | 1224     5.876   -1.528 |\n"
            "  2. | 1224    19.708    -.588 |\n") in log
    assert ("  5. | 1224    17.898    -.158 |\n"
            "     |-------------------------|\n"
            "  6. | 1224     4.583     .022 |\n"
            "     +-------------------------+\n") in log
    hsb = jaxhlm.datasets.hsb()
    top = hsb[hsb["mathach"] > 24.98]
    assert ("  +---------------+\n  |   id   sector |\n  |---------------|\n"
                              f"  | {top['id'].iloc[0]}        {top['sector'].iloc[0]} |\n") in log
    data = pd.DataFrame({"make": ["AMC Concord", "Buick"], "price": [4099.0, np.nan], "long_variable_name": [1, 2]})
    out = jaxhlm.run_do("list\nlist price, clean\ncapture list, sort\nlist price, sep(1)", data)
    assert ("     +--------------------------------+\n"
            "     |        make   price   long_v~e |\n"
            "     |--------------------------------|\n"
            "  1. | AMC Concord    4099          1 |\n"
            "  2. |       Buick       .          2 |\n") in out
    assert "\n      price\n  1.   4099\n  2.      .\n" in out  # clean: the same columns, unframed
    assert "  1. |  4099 |\n     |-------|\n  2. |     . |\n" in out
    with pytest.raises(DoFileError, match="option sort not allowed; list accepts noobs, clean and separator"):
        jaxhlm.run_do("list, sort", data)


def test_value_labels_show_in_tables(tmp_path):
    # Stata shows a labelled factor's levels by their labels: tabulate, list, and the coefficient table (a one-level
    # factor under its header, as regress price i.foreign shows "foreign" over "Foreign"), margins and pwcompare rows
    # ("RL vs DMP" in a published log)
    log = jaxhlm.run_do("\n".join([
        'label define sec 0 "Public" 1 "Catholic"', "label values sector sec",
        'label define sz 1 "Small" 2 "Medium"', 'label define sz 3 "Large", add', "label values sized sz",
        "label list sz", "tab sector", "tab sized sector", "list sector sized in 1",
        "quietly mixed mathach ses i.sector##i.sized || id:", "mixed", "margins sized", "pwcompare sized, effects",
        "label values sector", "tab sector"]))
    assert "sz:\n           1 Small\n           2 Medium\n           3 Large\n" in log
    assert "     Public |      3,642       50.69       50.69\n" in log
    assert "     sized |    Public   Catholic |     Total\n" in log and "     Large |     2,012        665 |" in log
    assert "  1. | Public   Medium |\n" in log
    assert ("          sector |\n       Catholic  |   1.738945    .754332     2.31   0.021" in log
            and "           sized |\n         Medium  |   .5940173" in log
            and "    sector#sized |\nCatholic#Medium  |   .4254506" in log and " Catholic#Large  |     1.3715" in log)
    assert "      Small  |" in log.split(". margins sized")[1] and "Large vs Medium  |" in log
    assert "          0 |      3,642       50.69       50.69\n" in log.split(". label values sector\n")[1]
    for bad, message in (('label define sz 1 "S"', "label sz already defined; add, modify or replace it"),
                         ('label define sz 1 "S", add', "1 already labelled in sz; modify to change it"),
                         ("label list nope", "value label nope not found"),
                         ('label save sz using f', "label save is not supported")):
        with pytest.raises(DoFileError, match=message):
            jaxhlm.run_do('label define sz 1 "Small"\n' + bad)
    replaced = jaxhlm.run_do('label define sz 1 "Small"\nlabel define sz 1 "S", modify\nlabel list sz')
    assert "sz:\n           1 S\n" in replaced
    with pytest.raises(DoFileError, match="line 3: value label sz not found"):
        jaxhlm.run_do('label define sz 1 "Small"\nlabel drop _all\nlabel list sz')
    # a Stata dataset's labels come with it
    data = pd.DataFrame({"g": np.repeat(np.arange(20), 5), "female": np.tile([0, 1, 1, 0, 1], 20).astype("int8"),
                         "y": np.random.default_rng(1).normal(size=100)})
    data.to_stata(tmp_path / "d.dta", write_index=False, value_labels={"female": {0: "Male", 1: "Female"}},
                  variable_labels={"female": "Respondent sex"})
    out = jaxhlm.run_do(f'use "{tmp_path / "d.dta"}"\ntab female\nquietly mixed y i.female || g:\nmixed')
    assert "Respondent |" in out and "       Male |         40" in out
    assert "      female |\n     Female  |" in out
    # the same for a fit from Python or the command line on the data read from that file
    read = jaxhlm.datasets.read_dta(str(tmp_path / "d.dta"))
    assert read.attrs[jaxhlm.datasets.LABELS]["variables"] == {"female": "Respondent sex"}
    fitted = jaxhlm.mixed("y i.female || g:", read)
    assert fitted.value_labels == {"female": {0: "Male", 1: "Female"}} and "     Female  |" in str(fitted)
    # and save writes them: a round trip keeps the labels
    back = jaxhlm.run_do(f'use "{tmp_path / "d.dta"}"\nlabel define yes 1 "yes"\nlabel values female yes\n'
                         f'save "{tmp_path / "e.dta"}"\nuse "{tmp_path / "e.dta"}", clear\ntab female')
    assert "          0 |         40" in back and "        yes |         60" in back


def test_egen_group_tag_and_std(session):
    """group() numbers the distinct values in ascending order, tag() marks each's first row, std() standardises
    (within by() groups too); rows not selected are missing (group, std) or 0 (tag), as in Stata."""
    hsb = jaxhlm.datasets.hsb()
    out = _run(session, "egen cell = group(sector sized)", "egen first = tag(id)", "egen z = std(ses)",
               "bysort id: egen zid = std(ses)", "egen g = group(id) if female", "egen tf = tag(id) if female")
    assert out[:4] == ["", "", "", ""] and out[4] == f"({int((hsb['female'] == 0).sum()):,} missing values generated)"
    d = session.data
    want = (hsb["sector"] * 3 + hsb["sized"]).to_numpy()  # sector 0 sized 1..3 -> 1..3; sector 1 -> 4..6
    np.testing.assert_array_equal(d["cell"], want)
    np.testing.assert_array_equal(d["first"], (~hsb["id"].duplicated()).astype(float))
    np.testing.assert_allclose(d["z"], _single((hsb["ses"] - hsb["ses"].mean()) / hsb["ses"].std()), rtol=1e-6)
    by_school = hsb.groupby("id")["ses"]
    np.testing.assert_allclose(d["zid"], _single((hsb["ses"] - by_school.transform("mean"))
                                                 / by_school.transform("std")), rtol=1e-6, atol=1e-7)
    girls = hsb["female"] == 1
    ranks = hsb["id"].where(girls).rank(method="dense")
    np.testing.assert_array_equal(d["g"], ranks)
    np.testing.assert_array_equal(d["tf"], (girls & ~hsb["id"].where(girls).duplicated()).astype(float))
    with pytest.raises(jaxhlm.JaxhlmError, match=r"egen group\(\) takes a varlist, not by\(\)"):
        _run(session, "egen h = group(id), by(sector)")


def test_two_way_tabulate_counts_each_pair(session):
    hsb = jaxhlm.datasets.hsb()
    counts = pd.crosstab(hsb["sized"], hsb["female"])
    out = _run(session, "tabulate sized female", 'generate s = cond(female, "girl", "boy")', "tab s sector", "tab s")
    rule = "-" * 11 + "+" + "-" * 22 + "+" + "-" * 10
    assert out[0].splitlines() == [
        "           |        female",  # the column variable centred over its values
        "     sized |         0          1 |     Total",
        rule,
        *[f"{k:>10} |{counts.loc[k, 0]:>10,} {counts.loc[k, 1]:>10,} |{counts.loc[k].sum():>10,} " for k in (1, 2, 3)],
        rule,
        f"     Total |{counts[0].sum():>10,} {counts[1].sum():>10,} |{len(hsb):>10,} ",  # numbers end with a space
    ]
    by_sector = pd.crosstab(np.where(hsb["female"] == 1, "girl", "boy"), hsb["sector"])
    assert out[2].splitlines()[3] == f"       boy |{by_sector.loc['boy', 0]:>10,} {by_sector.loc['boy', 1]:>10,} |" \
                                     f"{by_sector.loc['boy'].sum():>10,} "
    # a string variable's values label the rows of a one-way table too
    assert out[3].splitlines()[2].startswith(f"        boy |{(hsb['female'] == 0).sum():>11,}")


def test_two_way_tabulate_percentages_and_tests_as_a_stata_log():
    # tab q6 agent_code, chi2 row in a published Stata 18 log (value labels aside): its counts give its percentages,
    # its Pearson chi2 and the likelihood-ratio chi2 the same log prints for the same table
    counts = [38, 70, 67, 83, 50, 51]
    data = pd.DataFrame({"q6": np.repeat([0, 0, 0, 1, 1, 1], counts), "agent_code": np.repeat([1, 2, 3] * 2, counts)})
    log = jaxhlm.run_do("tab q6 agent_code, chi2 row\ntab q6 agent_code, nofreq col cell lrchi2 chi2\n"
                        "display r(chi2_lr) \" \" r(p_lr) \" \" r(N)", data)
    rule = "-----------+---------------------------------+----------\n"
    assert ("+----------------+\n| Key            |\n|----------------|\n|   frequency    |\n| row percentage |\n"
            "+----------------+\n\n"
            "           |            agent_code\n"
            "        q6 |         1          2          3 |     Total\n" + rule +
            "         0 |        38         70         67 |       175 \n"
            "           |     21.71      40.00      38.29 |    100.00 \n" + rule +
            "         1 |        83         50         51 |       184 \n"
            "           |     45.11      27.17      27.72 |    100.00 \n" + rule +
            "     Total |       121        120        118 |       359 \n"
            "           |     33.70      33.43      32.87 |    100.00 \n\n"
            "          Pearson chi2(2) =  22.0266   Pr = 0.000\n") in log
    assert ("| column percentage |\n|  cell percentage  |\n" in log
            and "         0 |     31.40      58.33      56.78 |     48.75 \n"
                "           |     10.58      19.50      18.66 |     48.75 \n" in log
            and "     Total |    100.00     100.00     100.00 |    100.00 \n" in log
            and "          Pearson chi2(2) =  22.0266   Pr = 0.000\n"
                " likelihood-ratio chi2(2) =  22.4439   Pr = 0.000\n" in log)
    assert "22.443873 .00001338 359" in log  # chi2(2) tail: exp(-22.443873 / 2)


@pytest.mark.parametrize("line, message", [
    ("tabulate female id", "id takes 160 values, more columns than a two-way table here shows on one line"),
    ("tabulate female sector, exact", "option exact not allowed; a two-way tabulate here accepts row, column"),
    ("tabulate female sector, nofreq", "nofreq leaves nothing to show"),
    ("tabulate female sector sized", "tabulate makes one-way tables"),
])
def test_two_way_tabulate_refusals(session, line, message):
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        _run(session, line)


def test_correlate_prints_statas_table(session):
    """correlate: listwise over the variables (and if/in), the lower triangle as Stata's logs show it; r(rho) and
    r(N). The reference is pandas' corr and cov on the same rows."""
    hsb = jaxhlm.datasets.hsb()
    text = _run(session, "correlate mathach ses meanses")[0].splitlines()
    r = hsb[["mathach", "ses", "meanses"]].corr().to_numpy()
    assert text[:4] == ["(obs=7,185)", "", "             |  mathach      ses  meanses",
                        "-------------+---------------------------"]
    assert text[5] == f"         ses |{r[1, 0]:9.4f}   1.0000" and text[6] == f"     meanses |{r[2, 0]:9.4f}{r[2, 1]:9.4f}   1.0000"
    _run(session, "replace ses = . in 1/10", "corr mathach ses if sector == 1")
    kept = hsb.iloc[10:].query("sector == 1")
    assert session.returned["N"] == len(kept)
    assert session.returned["rho"] == pytest.approx(kept["mathach"].corr(kept["ses"]), rel=1e-12)
    cov = _run(session, "corr mathach ses, cov")[0].splitlines()
    assert cov[5] == f"         ses |{jaxhlm.render.stata_g(hsb.iloc[10:]['mathach'].cov(hsb.iloc[10:]['ses']), 6):>9}" \
        f"{jaxhlm.render.stata_g(hsb.iloc[10:]['ses'].var(), 6):>9}"
    with pytest.raises(jaxhlm.JaxhlmError, match="option spearman not allowed; correlate accepts covariance"):
        _run(session, "corr mathach ses, spearman")


def test_summarize_detail_meanonly_and_r(session):
    """summarize, detail: Stata's percentiles (R's quantile type 2, which averages where n·p/100 is whole: checked
    here on a sample of 8), the four smallest and largest values, moments as Stata's; r() of the last variable, which
    generate reads (grand-mean centring with r(mean)); meanonly shows nothing."""
    hsb = jaxhlm.datasets.hsb()
    text = _run(session, "summarize ses, detail")[0].splitlines()
    assert text[0] == " " * 29 + "ses" and text[1] == "-" * 61 and text[2] == "      Percentiles      Smallest"
    assert text[3] == " 1%       -1.848         -3.758"
    assert text[5] == "10%       -1.038         -2.508       Obs               7,185"
    assert text[8] == "50%         .002                      Mean           .0001434"
    assert text[9] == "                        Largest       Std. dev.      .7793552"
    assert text[13] == "99%        1.512          2.692       Kurtosis       2.620279"
    x = hsb["ses"].to_numpy()
    d = x - x.mean()
    r = session.returned
    assert r["skewness"] == pytest.approx(np.mean(d**3) / np.mean(d**2) ** 1.5, rel=1e-12)
    assert r["kurtosis"] == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2, rel=1e-12)
    assert (r["p50"], r["p99"], r["N"], r["sum_w"]) == (0.002, 1.512, 7185.0, 7185.0)
    assert r["Var"] == pytest.approx(x.var(ddof=1), rel=1e-12)
    # percentiles where n·p/100 is whole: the average of the two order statistics (R: quantile(1:8, type = 2))
    eight = Session(pd.DataFrame({"v": np.arange(1.0, 9.0)}))
    _run(eight, "summarize v, d")
    assert [eight.returned[f"p{p}"] for p in (1, 5, 10, 25, 50, 75, 90, 95, 99)] == [1, 1, 1, 2.5, 4.5, 6.5, 8, 8, 8]
    assert _run(session, "summarize mathach ses, meanonly") == [""]
    assert set(session.returned) == {"N", "sum_w", "mean", "min", "max", "sum"}
    assert session.returned["mean"] == pytest.approx(x.mean(), rel=1e-12)
    _run(session, "summarize ses", "generate ses_c = ses - r(mean)", "summarize ses_c")
    assert abs(session.returned["mean"]) < 1e-8
    np.testing.assert_allclose(session.data["ses_c"], (x - x.mean()).astype(np.float32), rtol=0, atol=0)
    with pytest.raises(jaxhlm.JaxhlmError, match="summarize takes detail or meanonly, not both"):
        _run(session, "summarize ses, detail meanonly")


def test_pwcorr_pairwise_with_significance(session):
    """pwcorr: each pair over its own complete rows (pandas' pairwise corr), t-test p-values (scipy's pearsonr), stars,
    and the layout of Stata's logs: %8.4f cells each followed by its star or a space, the p-values under them, an
    empty row closing each variable. correlate and pwcorr continue a matrix wider than 7 columns in a block below."""
    from scipy import stats

    _run(session, "replace ses = . in 1/5")
    data = session.data
    text = _run(session, "pwcorr mathach ses female, sig star(.05)")[0].splitlines()
    r = data[["mathach", "ses", "female"]].corr()
    both = data[["mathach", "ses"]].dropna()
    assert text[:4] == ["             |  mathach      ses   female", "-------------+---------------------------",
                        "     mathach |   1.0000 ", "             |"]
    assert text[5] == f"         ses |{r.loc['ses', 'mathach']:9.4f}*  1.0000 "
    assert text[6] == f"             |{stats.pearsonr(both['mathach'], both['ses'])[1]:9.4f} "
    assert session.returned == {} or "rho" not in session.returned  # three variables: no r(rho)
    _run(session, "pwcorr female size")
    pair = data[["female", "size"]].dropna()
    assert session.returned["rho"] == pytest.approx(stats.pearsonr(pair["female"], pair["size"])[0], rel=1e-12)
    shown = _run(session, "pwcorr female size, print(.001)")[0].splitlines()
    assert shown[3] == "        size |            1.0000 "  # p = 0.0010 is not below .001: blanked
    wide = _run(session, "corr mathach ses meanses female minority size sector pracad disclim")[0].splitlines()
    assert wide[2].endswith("   sector") and len(wide[4 + 8]) == 14 + 9 * 7  # disclim's row: seven columns
    assert wide[13] == "" and wide[14] == "             |   pracad  disclim" and wide[16] == "      pracad |   1.0000"


def test_by_groups_with_n_N_and_subscripts(session):
    """Stata's _n and _N within by-groups and explicit subscripts (``x[_n-1]``), in generate, replace, keep and if;
    the reference is the same computation in pandas (groupby cumcount, size and shift) on the same sorted rows."""
    _run(session, "bysort id: generate first = _n == 1", "by id: generate nst = _N", "generate k = _n")
    hsb = jaxhlm.datasets.hsb().sort_values("id", kind="stable")
    data = session.data
    assert list(data["id"]) == list(hsb["id"]) and data["first"].sum() == 160
    np.testing.assert_array_equal(data["nst"], hsb.groupby("id")["id"].transform("size"))
    np.testing.assert_array_equal(data["k"], np.arange(1, len(hsb) + 1))
    _run(session, "sort id ses", "by id: generate lag = ses[_n-1]", "by id: generate top = ses[_N]",
         "bysort id (ses): generate r = _n / _N")
    ordered = hsb.sort_values(["id", "ses"], kind="stable")
    lag = ordered.groupby("id")["ses"].shift(1)
    np.testing.assert_array_equal(session.data["lag"].isna(), lag.isna())
    np.testing.assert_allclose(session.data["lag"].dropna(), _single(lag.dropna()))
    np.testing.assert_allclose(session.data["top"], _single(ordered.groupby("id")["ses"].transform("max")))
    r = (ordered.groupby("id").cumcount() + 1) / ordered.groupby("id")["id"].transform("size")
    np.testing.assert_allclose(session.data["r"], _single(r))
    assert _run(session, "count if _n == 1")[0].strip() == "1"
    assert _run(session, "bysort id: keep if _n <= 2")[0] == "(6,865 observations deleted)"
    assert len(session.data) == 320 and session._value("k[3]") == session.data["k"].iloc[2]
    with pytest.raises(jaxhlm.FormulaError, match="_n is not supported in a model's if qualifier"):
        _run(session, "mixed mathach ses if _n < 100 || id:")


def test_egen_row_functions_recode_and_encode(session):
    """egen's row functions (pandas' row-wise statistics of the same columns as the reference), recode's rules in
    order with its notes and the value labels its texts define, and encode's sorted numbering with its labels."""
    _run(session, "replace ses = . in 1", "egen rm = rowmean(ses meanses pracad)", "egen rt = rowtotal(ses meanses)",
         "egen rs = rowsd(ses meanses pracad)", "egen nm = rowmiss(ses meanses)")
    cols = session.data[["ses", "meanses", "pracad"]]
    np.testing.assert_allclose(session.data["rm"], _single(cols.mean(axis=1)))
    np.testing.assert_allclose(session.data["rt"], _single(cols[["ses", "meanses"]].sum(axis=1)))
    np.testing.assert_allclose(session.data["rs"], _single(cols.std(axis=1)), rtol=1e-6)
    assert session.data["nm"].tolist()[:2] == [1.0, 0.0]
    sized = session.data["sized"].to_numpy()
    note = _run(session, 'recode sized (1 = 0 "small") (2/3 = 1 "large"), generate(big)')[0]
    assert note == f"({len(sized):,} differences between sized and big)"
    np.testing.assert_array_equal(session.data["big"], np.where(sized == 1, 0.0, 1.0))
    assert session.value_labels["big"] == {0: "small", 1: "large"} and session.label_values["big"] == "big"
    # the first matching rule wins; unmatched values stay; min/max ranges
    assert _run(session, "recode sized (3 = 1) (1/3 = 9)")[0] == f"(sized: {len(sized):,} changes made)"
    np.testing.assert_array_equal(session.data["sized"], np.where(sized == 3, 1.0, 9.0))
    _run(session, "recode ses (min/0 = 0) (0/max = 1) (missing = -1), gen(hi)")
    assert set(session.data["hi"]) == {-1.0, 0.0, 1.0} and session.data["hi"].iloc[0] == -1
    words = Session(pd.DataFrame({"school": ["b", "a", "c", "a", None], "y": range(5)}))
    _run(words, "encode school, generate(sch)")
    assert words.data["sch"].tolist()[:4] == [2.0, 1.0, 3.0, 1.0] and np.isnan(words.data["sch"].iloc[4])
    assert words.value_labels["sch"] == {1: "a", 2: "b", 3: "c"}
    for line, message in (("recode sized 1=0", "recode needs rules in parentheses"),
                          ("recode sized (1 = x)", "needs a number or . after '='"),
                          ("egen r = rowmean(ses), by(id)", "takes no by()"),
                          ("encode sized, gen(z)", "sized is numeric")):
        with pytest.raises(jaxhlm.JaxhlmError, match=re.escape(message)):
            _run(session, line)


def test_string_functions_and_tabulate_qualifiers(session):
    """Stata's string functions and + joining strings, in generate and display (quoted arguments inside an
    expression's parentheses); tabulate of the rows if/in select, its generated indicators missing elsewhere."""
    from jaxhlm.expressions import evaluate, parse_expression

    frame = pd.DataFrame({"s": ["  Ab-c ", "xyz", ""], "x": [1.0, 0.5, np.nan]})
    def value(text):
        return evaluate(parse_expression(text, lambda n: n), frame).tolist()
    assert value("strlen(s)") == [7.0, 3.0, 0.0] and value("upper(strtrim(s))") == ["AB-C", "XYZ", ""]
    assert value("substr(s, 3, 2)") == ["Ab", "z", ""] and value("substr(s, -2, .)") == ["c ", "yz", ""]
    assert value("strpos(s, \"b\")") == [4.0, 0.0, 0.0] and value("subinstr(s, \"-\", \"+\", .)")[0] == "  Ab+c "
    assert value("string(x)") == ["1", ".5", "."] and value("real(\"2.5\") + x")[:2] == [3.5, 3.0]
    assert value("s + \"!\"") == ["  Ab-c !", "xyz!", "!"]
    with pytest.raises(jaxhlm.DataError, match=r"type mismatch in strlen\(\)"):
        value("strlen(x)")
    _run(session, 'generate str8 school = "S" + string(id)')
    assert session.data["school"].iloc[0] == "S" + str(int(session.data["id"].iloc[0]))
    assert _run(session, 'display strpos("abc", "c") " " subinstr("a-b", "-", "", .)') == ["3 ab"]
    text = _run(session, "tabulate sector if female == 1, generate(sec)")[0]
    hsb = jaxhlm.datasets.hsb()
    assert f"{(hsb['female'] == 1).sum():,} " in text.splitlines()[-1]
    assert session.data.loc[hsb["female"] != 1, "sec1"].isna().all()
    assert session.data.loc[hsb["female"] == 1, "sec2"].sum() == ((hsb["female"] == 1) & (hsb["sector"] == 1)).sum()


def test_xtset_declares_panels(session):
    """xtset: the panels' balance as Stata words it (unbalanced HSB schools; strongly or weakly balanced with a time
    variable, gaps noted), xtset alone replaying it, clear forgetting it."""
    assert _run(session, "xtset id")[0] == "Panel variable: id (unbalanced)" and _run(session, "xtset")[0].startswith("Panel")
    _run(session, "keep if id == 1224 | id == 1288", "bysort id: generate t = _n", "keep if t <= 3")
    assert _run(session, "xtset id t")[0].splitlines() == [
        "Panel variable: id (strongly balanced)", " Time variable: t, 1 to 3", "         Delta: 1 unit"]
    _run(session, "replace t = 5 in 3")
    assert _run(session, "xtset id t")[0].splitlines()[:2] == [
        "Panel variable: id (weakly balanced)", " Time variable: t, 1 to 5, but with gaps"]
    _run(session, "replace t = 1 in 2")
    with pytest.raises(jaxhlm.JaxhlmError, match="repeated time values within panel"):
        _run(session, "xtset id t")
    _run(session, "xtset , clear")
    with pytest.raises(jaxhlm.JaxhlmError, match="panel variable not set"):
        _run(session, "xtset")

"""The demo do-file replays the reference Stata log: every number it prints, compared number by number.

Both texts go through the same parser (tests/stata_log.py). Log likelihoods, chi2 statistics, AIC/BIC and
p-values must agree at the log's printed precision; estimates, standard errors and confidence limits to 5
significant digits. Where the conventions document Stata's digits as not reproducible (M1 and M2 on the
boundary, M4 on a flat likelihood: Stata stopped short of the optimum), the printed numbers are compared with
the conventions' exact optimum instead, and with the log at the precision its digits allow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import stata_log
from conftest import PRINTOUT
from scipy import stats
from test_reference_log import EXACT_FE, printed, sig

import jaxhlm
from jaxhlm import render
from jaxhlm.cli import main
from jaxhlm.dofile import DoFileError, commands, run_do
from jaxhlm.render import stata_g

DEMO = Path(__file__).parents[1] / "examples" / "hsb_model_building.do"
Z = 1.959963984540054
REFERENCE_RE = {"M2 (sesrandom)": "boundary limit (corr fixed at 1) @MLE", "M4 (femalerandom)": "profile-Hessian @MLE"}


@pytest.fixture(scope="module")
def demo() -> str:
    return run_do(DEMO.read_text())


@pytest.fixture(scope="module")
def ours(demo):
    return stata_log.printouts(demo)


def test_same_commands_and_outputs(demo, ours):
    log = stata_log.LOG.read_text()
    assert len(ours) == len(stata_log.printouts()) == 7
    for parse in (stata_log.estat_ic, stata_log.lrtests, stata_log.tests, stata_log.tabulations):
        assert len(parse(demo)) == len(parse(log)) > 0, parse.__name__
    assert demo.count("\n. mixed ") + demo.startswith(". mixed ") == 7


@pytest.mark.parametrize("k", range(7))
def test_header_and_lr_line(ours, k):
    p, q, model = ours[k], stata_log.printouts()[k], PRINTOUT[k]
    assert (p.nobs, p.ngroups, p.obs_min, p.obs_avg, p.obs_max) == (q.nobs, q.ngroups, q.obs_min, q.obs_avg, q.obs_max)
    assert p.llf == q.llf  # both printed to 3 decimals
    assert p.wald_df == q.wald_df
    if model in ("M1", "M2 (sesrandom)"):  # Stata's Wald comes from where it stopped (conventions §5)
        assert printed(p.wald, stata_log.wald_at_mle(model), 2) and abs(p.wald - q.wald) <= 0.03
    else:
        assert p.wald == q.wald
    assert (p.lr_chibar, p.lr_df, p.lr_stat) == (q.lr_chibar, q.lr_df, q.lr_stat)
    assert p.notes == q.notes and p.se_failed == q.se_failed


@pytest.mark.parametrize("k", range(7))
def test_coefficient_table(ours, k):
    p, q, model = ours[k], stata_log.printouts()[k], PRINTOUT[k]
    assert list(p.coef) == list(q.coef) and p.omitted == q.omitted
    exact = stata_log.fixed_at_mle(model)
    for name, (b, se, z, pz, lo, hi) in p.coef.items():
        qb, qse, qz, qp, qlo, qhi = q.coef[name]
        assert (z, pz) == (qz, qp), name
        if model in EXACT_FE:
            b_ex, se_ex = exact[name]
            reference = (b_ex, se_ex, b_ex - Z * se_ex, b_ex + Z * se_ex)
            assert sig(b, qb, 3) and sig(se, qse, 3), name  # what the log's digits allow (conventions §3)
        else:
            reference = (qb, qse, qlo, qhi)
        for mine, theirs in zip((b, se, lo, hi), reference, strict=True):
            assert sig(mine, theirs), (name, mine, theirs)


@pytest.mark.parametrize("k", range(7))
def test_random_effects_table(ours, k):
    p, q, model = ours[k], stata_log.printouts()[k], PRINTOUT[k]
    log_rows = {label.replace("ses_m", "ses"): v for label, v in q.random.items()}  # M1's label artefact (§1)
    assert list(p.random) == list(log_rows)
    if model == "M1":
        ex = stata_log.exact_optimum("M1")
        reference = {**{lab: (v,) for lab, v in ex["sigma"].items()}, "var(Residual)": (ex["sigma2"],)}
        for lab, (est, *rest) in p.random.items():
            assert rest == [None, None, None] and sig(est, reference[lab][0]), lab  # printed "."
        return
    reference = stata_log.random_at(model, REFERENCE_RE[model]) if model in REFERENCE_RE else log_rows
    for lab, row in p.random.items():
        for mine, theirs in zip(row, reference[lab], strict=True):
            assert sig(mine, theirs), (lab, mine, theirs)


def test_estat_ic(demo):
    for mine, theirs in zip(stata_log.estat_ic(demo), stata_log.estat_ic(), strict=True):
        assert mine == theirs  # model name, N, ll, df, AIC, BIC at the printed precision


def test_lrtest(demo):
    for mine, theirs in zip(stata_log.lrtests(demo), stata_log.lrtests(), strict=True):
        assert mine == theirs  # assumption, LR chi2, df, p


def test_lrtest_stats_and_df(hsb):
    m0 = jaxhlm.mixed("mathach ses || id:", hsb)
    m1 = jaxhlm.mixed("mathach ses || id: ses, cov(unstr)", hsb)
    log = run_do("quietly mixed mathach ses || id:\nestimates store m0\nquietly mixed mathach ses || id: ses, "
                 "cov(unstr)\nestimates store m1\nlrtest m0 m1, stats\ndisplay r(df)\nlrtest m0 m1, df(1)\n"
                 "display r(df) \" \" r(p)", hsb)
    lr = jaxhlm.lrtest(m0, m1)
    first = log.split(". lrtest m0 m1, stats\n")[1].split(". display")[0]
    # the test, then the two models' estat ic table in the order named
    assert first.startswith("\n" + str(jaxhlm.lrtest(m0, m1, names=("m0", "m1"))) + "\n\n")
    assert first.rstrip("\n").endswith(render.ic_text([("m0", m0), ("m1", m1)]))
    assert f"          m0 |      7,185          . {stata_g(m0.llf):>10}       4" in first
    assert f"          m1 |      7,185          . {stata_g(m1.llf):>10}       6" in first
    one = jaxhlm.lrtest(m0, m1, df=1)
    assert one.df == 1 and one.statistic == lr.statistic and one.pvalue == pytest.approx(stats.chi2.sf(lr.statistic, 1))
    assert " LR chi2(1) = " in log.split(". lrtest m0 m1, df(1)")[1]
    assert f"\n1 {stata_g(one.pvalue, 8)}\n" in log
    for options, message in (("df(0)", r"df\(0.0\): the degrees of freedom"), ("df(1) bootstrap(10)", "df\\(\\) sets"),
                             ("dir", "option dir not allowed; lrtest accepts stats, df")):
        with pytest.raises(DoFileError, match=message):
            run_do(f"quietly mixed mathach ses || id:\nestimates store m0\nquietly mixed mathach ses || id: ses, "
                   f"cov(unstr)\nlrtest m0 ., {options}", hsb)


def test_lrtest_notes_as_statas_lrtest(hsb):
    # lrtest.ado's rules: the boundary note when the models' random-effects variances differ (e(k_rs)), not when
    # only fixed effects or a covariance differ; the REML note after REML fits (both in a published Stata 18 log of
    # lrtest ri . after REML fits)
    boundary = "Note: The reported degrees of freedom assumes the null hypothesis is not on the"
    reml_note = "Note: LR tests based on REML are valid only when the fixed-effects\nspecification is identical"
    ri, slope = jaxhlm.mixed("mathach ses || id:", hsb), jaxhlm.mixed("mathach ses || id: ses", hsb)
    text = str(jaxhlm.lrtest(ri, slope))
    assert boundary in text and "REML" not in text
    fixed = str(jaxhlm.lrtest(ri, jaxhlm.mixed("mathach ses female || id:", hsb)))
    assert fixed.endswith("Prob > chi2 = 0.0000") and "Note" not in fixed
    covariance = str(jaxhlm.lrtest(slope, jaxhlm.mixed("mathach ses || id: ses, cov(un)", hsb)))
    assert "Note" not in covariance
    reml = str(jaxhlm.lrtest(jaxhlm.mixed("mathach ses || id:, reml", hsb),
                             jaxhlm.mixed("mathach ses || id: ses, reml", hsb)))
    assert reml.endswith(boundary.split(" not on")[0] + " not on the\nboundary of the parameter space. If this is "
                         "not true, then the reported test is\nconservative.\n" + reml_note + " for both models.")


def test_replay_with_display_options(hsb):
    log = run_do("quietly mixed mathach ses || id: ses, cov(unstr)\nmixed, stddev level(90) noheader\nmixed,nogroup", hsb)
    want = jaxhlm.mixed("mathach ses || id: ses, cov(unstr) stddeviations level(90) noheader", hsb)
    replayed = log.split(". mixed, stddev level(90) noheader\n")[1].split(". mixed,nogroup")[0]
    assert replayed.strip("\n") == str(want).strip("\n") and "sd(ses)" in replayed and "[90% conf. interval]" in replayed
    plain = jaxhlm.mixed("mathach ses || id: ses, cov(unstr) nogroup", hsb)
    assert log.split(". mixed,nogroup\n")[1].strip("\n") == str(plain).strip("\n")
    assert "Group variable: id" in str(jaxhlm.mixed("mathach ses || id: ses, cov(unstr)", hsb)) and \
        "Group variable" not in str(plain)  # the options reach the report
    with pytest.raises(DoFileError, match="option reml not allowed when replaying results; replay takes level"):
        run_do("quietly mixed mathach ses || id:\nmixed, reml", hsb)


def test_test_commands(demo):
    for mine, theirs in zip(stata_log.tests(demo), stata_log.tests(), strict=True):
        assert mine == theirs  # constraint lines, df, chi2, p


def test_tabulate(demo):
    assert stata_log.tabulations(demo) == stata_log.tabulations()


# ---- the runner itself ---------------------------------------------------------------------------------
def test_commands_comments_and_continuation():
    text = ("* a comment\n"
            "mixed mathach ses /* inline\n"
            "   block */ || id: // trailing\n"
            "\n"
            "mixed mathach ses ///  continued\n"
            "    || id:\n"
            "est sto a\n")
    cmds = commands(text)
    assert [(c.line, c.text) for c in cmds] == [
        (1, ""), (2, "mixed mathach ses || id:"), (5, "mixed mathach ses || id:"), (7, "est sto a")]
    assert cmds[2].echo == ["mixed mathach ses ///  continued", "|| id:"]


def test_log_echoes_and_state(hsb, tmp_path):
    small = tmp_path / "small.csv"
    subset = hsb[hsb["id"].isin(hsb["id"].unique()[:30])]
    subset.to_csv(small, index=False)
    log = run_do(f'use "{small}", clear\n'
                 "quietly mixed mathach ses || id:\n"
                 "est store a\n"
                 "mixed mathach ses || id: ses, cov(un)\n"
                 "estimates restore a\n"
                 "estat ic\n"
                 "tab female, gen(fem)\n"
                 "mixed mathach fem2 || id:\n")
    assert f'. use "{small}", clear\n' in log and ". quietly mixed mathach ses || id:\n. est store a\n" in log
    assert ". estimates restore a\n(results a are active now)\n\n. estat ic" in log  # as Stata's logs show it
    ic = stata_log.estat_ic(log)
    assert [(row[0], row[1]) for row in ic] == [("a", len(subset))]  # the restored, named estimates, used data
    assert stata_log.printouts(log)[-1].coef.keys() == {"fem2", "_cons"}
    tab = stata_log.tabulations(log)[0]
    assert [r[0] for r in tab] == ["0", "1"] and sum(r[1] for r in tab) == len(subset)


def test_graph_commands_are_noted_and_passed_over(hsb):
    log = run_do("hist mathach, normal\ntw (scatter mathach ses) (lfit mathach ses)\nquietly mixed mathach ses || id:\n"
                 "marginsplot\ngraph export fig.png, replace\ncount\n", hsb)
    note = "(graph not drawn: jaxhlm draws no graphs; the run goes on)\n\n"
    assert log.startswith(". hist mathach, normal\n" + note + ". tw (scatter mathach ses) (lfit mathach ses)\n" + note)
    assert ". marginsplot\n" + note + ". graph export fig.png, replace\n" + note + ". count\n  7,185\n\n" in log


def test_tab_generate_labels_and_clash(hsb):
    log = run_do("tab sized, gen(s_)\ntab s_3\n", hsb)
    assert "sized==" in log and "3.0000" in log  # the generated variable's label, over two lines
    assert stata_log.tabulations(log)[1] == [("0", 4508, 62.74, 62.74), ("1", 2677, 37.26, 100.0)]
    with pytest.raises(DoFileError, match="line 2: variable s_1 already defined"):
        run_do("tab sized, gen(s_)\ntab sized, gen(s_)\n", hsb)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("mixed mathach ses || id:\nxtreg mathach ses\n", 2, ["command xtreg is not supported"]),
        ("mixed mathach ses || id:\nregress\n", 2, ["regress replays its own results, and the active ones are mixed's"]),
        ("estat ic\n", 1, ["last estimates not found"]),
        ("mixed mathach ses || id:\nlrtest nope .\n", 2, ["estimation result nope not found"]),
        ("mixed mathach ses || id:\n\ntest bogus = 0\n", 3, ["'bogus' is not a coefficient", "ses, _cons"]),
        ("mixed mathach ses || id:\ntest ses = 0, acc\n", 2, ["nothing to accumulate"]),
        ("mixed mathach bogus ///\n  || id:\n", 1, ["variable bogus not found"]),
        ("mixed mathach i.ses || id:\n", 1, ["not non-negative integers"]),
        ("use nothere.csv\n", 1, ["file nothere.csv not found"]),
        ("use data.dta\n", 1, ["file data.dta not found"]),
        ("use data.xlsx\n", 1, ["use reads Stata datasets (.dta) and CSV files; data.xlsx is neither"]),
        ("tab sized, gen(a_)\nuse other.csv\n", 2, ["dataset in memory has changed"]),
        ("mixed mathach ses || id:, matlog\n", 1, ["option matlog not allowed"]),
    ],
)
def test_errors_name_the_line(hsb, text, line, words):
    with pytest.raises(DoFileError) as info:
        run_do(text, hsb)
    assert info.value.line == line and str(info.value).startswith(f"line {line}: ")
    for w in words:
        assert w in str(info.value)


def test_error_keeps_the_log_so_far(hsb):
    with pytest.raises(DoFileError) as info:
        run_do("mixed mathach ses || id:\nxtreg mathach ses\n", hsb)
    assert "Mixed-effects ML regression" in info.value.output and ". xtreg" in info.value.output


def test_cli_run_and_mixed(tmp_path, capsys):
    do = tmp_path / "m.do"
    do.write_text("mixed mathach c.ses##i.sector || id:\ntest 1.sector 1.sector#c.ses\n")
    assert main(["run", str(do)]) == 0
    out = capsys.readouterr().out
    assert stata_log.tests(out)[0][0] == ["[mathach]1.sector = 0", "[mathach]1.sector#c.ses = 0"]
    do.write_text("mixed mathach ses || id:\n\nfoo bar\n")
    assert main(["run", str(do)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxhlm: error: {do}, line 3: command foo is not supported") and "Traceback" not in err
    assert main(["mixed", "mathach i.sector || id:", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["fixed"]) == {"1.sector", "_cons"}

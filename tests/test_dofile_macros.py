"""Do-file macros (``local``, ``global``), loops over them (``foreach``, ``forvalues``) and ``display`` with the
results' scalars (``_b[]``, ``_se[]``, ``e()``, ``r()``) and Stata's distribution functions: each value displayed is
the API's, printed as Stata prints it, in Stata's log layout."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

import jaxhlm
from jaxhlm.dofile import DoFileError, Session, run_do
from jaxhlm.render import stata_g


def _run(session: Session, *lines: str) -> list[str]:
    return [session.run(*session.expand(line).partition(" ")[::2]) for line in lines]


def test_macros_expand_before_each_command(hsb):
    session = Session(hsb.copy())
    _run(session, "local covars ses female", 'global level2 "i.sector"', 'local quoted `"say "hi""\'',
         "local i 2", "local x2 ses", "local n = 2*3", "local third = 1/3", "local half = -1/2", "local empty")
    assert session.macros == {"covars": "ses female", "quoted": 'say "hi"', "i": "2", "x2": "ses", "n": "6",
                              "third": ".3333333333333333", "half": "-.5", "empty": ""}
    assert session.globals == {"level2": "i.sector"}
    assert session.expand("mixed mathach `covars' $level2 || id: `x`i''") == "mixed mathach ses female i.sector || id: ses"
    assert session.expand("a${level2}b `nosuch'c $nosuch.") == "ai.sectorb c ."
    log = run_do("local covars ses female\nglobal g i.sector\nmixed mathach `covars' $g || id:")
    assert ". mixed mathach `covars' $g || id:" in log  # echoed as typed, as Stata's log does
    want = jaxhlm.mixed("mathach ses female i.sector || id:", hsb)
    assert f"Log likelihood = {stata_g(want.llf, 8)}" in log


def test_display_of_estimation_and_test_results(hsb):
    m0 = jaxhlm.mixed("mathach ses female || id:", hsb)
    m1 = jaxhlm.mixed("mathach ses female || id: ses, cov(unstr)", hsb)
    lr = jaxhlm.lrtest(m0, m1)
    session = Session(hsb.copy())
    out = _run(session, "mixed mathach ses female || id:", "estimates store m0", "local ll0 = e(ll)",
               'display "ll0 = " `ll0\'', 'di e(N) " " e(k) " " e(k_f) " " e(k_r) " " %9.3f e(ll)',
               'di e(chi2_c) "|" _b[ses]/_se[ses]', "mixed mathach ses female || id: ses, cov(unstr)",
               "lrtest m0 .", 'display "LR = " 2*(e(ll) - `ll0\') ", p = " %6.4f chi2tail(2, 2*(e(ll) - `ll0\'))',
               'di r(chi2) "," r(df) "," r(p)', "lincom ses + female", 'di r(estimate) "," r(se) "," r(lb) "," r(ub)',
               'di %-8.2f 1/3 "|" %8.0g _pi',
               'di normal(1.96) "," ttail(10, 2) "," Ftail(2, 30, 3) "," invchi2tail(1, .05) "," invnormal(.975)')
    assert out[3] == f"ll0 = {stata_g(m0.llf, 8)}"
    assert out[4] == f"7185 5 3 2 {m0.llf:9.3f}"  # β (3), var(_cons) and var(e)
    assert out[5] == stata_g(m0.lr_linear.statistic, 8) + "|" + stata_g(m0.fe_params["ses"] / m0.bse_fe["ses"], 8)
    assert out[8] == f"LR = {stata_g(lr.statistic, 8)}, p = {lr.pvalue:6.4f}"
    assert out[9] == f"{stata_g(lr.statistic, 8)},2,{stata_g(lr.pvalue, 8)}"
    c = m1.lincom("ses + female")
    assert out[11] == ",".join(stata_g(v, 8) for v in (c.estimate, c.se, c.ci_lower, c.ci_upper))
    assert out[12] == "0.33    |" + stata_g(np.pi, 6).rjust(8)  # %f keeps the leading zero, %g drops it
    assert out[13] == ",".join(stata_g(v, 8) for v in (special.ndtr(1.96), stats.t.sf(2, 10), stats.f.sf(3, 2, 30),
                                                      stats.chi2.isf(0.05, 1), stats.norm.ppf(0.975)))
    # display follows its echo directly in the log, as in Stata's
    assert ". di 1/3\n.33333333\n" in run_do("di 1/3")


def test_test_results_and_bad_references(hsb):
    session = Session(hsb.copy())
    _run(session, "mixed mathach ses female || id:")
    out = _run(session, "test ses female", "di r(chi2) \" \" r(df) \" \" r(p)")
    t = session.active.test(["ses", "female"])
    assert out[1] == f"{stata_g(t.statistic, 8)} 2 {stata_g(t.pvalue, 8)}"
    with pytest.raises(jaxhlm.JaxhlmError, match=r"\[sex\] not found: _b\[\] names a coefficient .* \(ses, female, _cons\)"):
        _run(session, "di _b[sex]")
    with pytest.raises(jaxhlm.JaxhlmError, match=r"e\(nosuch\) not found; e\(\) holds N, ll, k"):
        _run(session, "di e(nosuch)")
    with pytest.raises(jaxhlm.JaxhlmError, match=r"cannot evaluate '1 2'; .* separate expressions with quoted text"):
        _run(session, "di 1 2")
    with pytest.raises(jaxhlm.JaxhlmError, match=r"display: cannot read '%5d 3'"):
        _run(session, "di %5d 3")
    fresh = Session(hsb.copy())
    with pytest.raises(jaxhlm.JaxhlmError, match=r"r\(p\) not found; r\(\) holds nothing yet"):
        _run(fresh, "di r(p)")
    with pytest.raises(DoFileError, match="line 2: local needs a name"):
        run_do("local a 1\nlocal = 3")


LOOPS = """foreach v of varlist ses fem* {
    summarize `v'
}
forvalues k = 1/3 {
    quietly generate x`k' = `k' * ses
}
forvalues x = 0(.1).3 {
    di "`x'"
}
foreach c in "ses" "ses female" {
    quietly mixed mathach `c' || id:
    foreach s in ll N {
        di "`s' = " e(`s')
    }
}
local fits "m0 m1"
foreach m of local fits {
    di "`m'"
}
"""


def test_loops_run_their_body_with_the_macro_set(hsb):
    log = run_do(LOOPS)
    lines = log.splitlines()
    # the loop echoed once, its body's lines numbered (nested loops' too), then the output of every pass
    start = lines.index(". foreach c in \"ses\" \"ses female\" {")
    assert lines[start + 1:start + 6] == ["  2. quietly mixed mathach `c' || id:", "  3. foreach s in ll N {",
                                          "  4. di \"`s' = \" e(`s')", "  5. }", "  6. }"]
    fits = [jaxhlm.mixed(f"mathach {c} || id:", hsb) for c in ("ses", "ses female")]
    assert lines[start + 6:start + 11] == [line for m in fits for line in (f"ll = {stata_g(m.llf, 8)}", "N = 7185")] + [""]
    assert ". forvalues x = 0(.1).3 {\n  2. di \"`x'\"\n  3. }\n0\n.1\n.2\n.3\n\n" in log
    assert log.count("    Variable |        Obs") == 2 and "      female |      7,185" in log
    assert ". foreach m of local fits {\n  2. di \"`m'\"\n  3. }\nm0\nm1\n" in log
    session = Session(hsb.copy())
    assert session.loop("forvalues k = 3(-1)1 {") == ("k", ["3", "2", "1"])
    assert session.loop("foreach n of numlist 1/2 2.5 {") == ("n", ["1", "2", "2.5"])
    assert session.loop('foreach w in a "b c" d {') == ("w", ["a", "b c", "d"])


@pytest.mark.parametrize("text, line, words", [
    ("forvalues k = 1/2 {\n  di `k'\n", 1, "not closed: } missing"),
    ("di 1\n}\n", 2, "unexpected }: no loop or if block is open"),
    ("forvalues k = 1/2 {\n  foreach v in a b {\n    di nosuch`k'\n  }\n}\n", 3, "cannot evaluate 'nosuch1'"),
    ("forvalues k = a/b {\n}\n", 1, "forvalues needs: forvalues name = a/b"),
    ("foreach v at x y {\n}\n", 1, "foreach needs: foreach name in list"),
])
def test_loop_errors_name_their_line(text, line, words):
    with pytest.raises(DoFileError, match=f"line {line}: .*{words}"):
        run_do(text)


def test_scalars_by_name_and_by_scalar(hsb):
    m0 = jaxhlm.mixed("mathach ses || id:", hsb)
    m1 = jaxhlm.mixed("mathach ses female || id:", hsb)
    session = Session(hsb.copy())
    out = _run(session, "quietly mixed mathach ses || id:", "scalar ll0 = e(ll)", 'scalar define name = "m0"',
               "quietly mixed mathach ses female || id:", 'di name ": " 2*(e(ll) - ll0) "," scalar(ll0)',
               "gen ll0 = 1", 'di ll0 "," scalar(ll0)', "scalar drop ll0")
    assert out[4] == f"m0: {stata_g(2 * (m1.llf - m0.llf), 8)},{stata_g(m0.llf, 8)}"
    assert out[6] == f"1,{stata_g(m0.llf, 8)}"  # a variable of the same name comes first, as in Stata
    assert session.scalars == {"name": "m0"}
    with pytest.raises(jaxhlm.JaxhlmError, match="scalar ll0 not found"):
        _run(session, "di scalar(ll0)")
    with pytest.raises(jaxhlm.JaxhlmError, match="scalar needs: scalar .define. name = exp"):
        _run(session, "scalar ll0")


def test_count_and_its_r_n(hsb):
    log = run_do('count if sector == 1\ndi r(N)\ncount', hsb)
    n = int((hsb["sector"] == 1).sum())
    assert f". count if sector == 1\n  {n:,}\n" in log and f". di r(N)\n{n}\n" in log and "\n  7,185\n" in log


def test_if_else_blocks_run_the_branch_whose_condition_holds():
    log = run_do('local n = 3\nif `n\' > 2 {\n    display "big"\n    local m = `n\' * 2\n}\nelse {\n    bogus command\n}\n'
                 'display `m\'\nif `n\' == 1 {\n    di "one"\n}\nelse if `n\' == 3 {\n    di "three"\n}\n'
                 'else if `n\' > 0 {\n    di "positive"\n}\nelse {\n    di "other"\n}\n'
                 'if `n\' < 0 di "negative"\nif `n\' > 0 di "positive"\nelse di "not positive"\n'
                 'forvalues i = 1/3 {\n    if `i\' == 2 {\n        di "two"\n    }\n    else di "not two: `i\'"\n}\n')
    lines = log.splitlines()
    # the branch taken runs (its local is set, 6); the other is echoed, not run (its bogus command is never read)
    assert lines[:6] == [". local n = 3", ". if `n' > 2 {", '. display "big"', "big", "", ". local m = `n' * 2"]
    assert lines[6:12] == [". }", ". else {", ". bogus command", ". }", ". display `m'", "6"]
    # the first branch of a chain whose condition holds, and no other
    assert "three" in lines and "positive" in lines and "other" not in lines and "one" not in lines
    assert lines.count("positive") == 1 and "negative" not in lines and "not positive" not in lines
    # inside a loop, as the loop's numbered lines, then each pass's output
    at = lines.index(". forvalues i = 1/3 {")
    assert lines[at + 1:at + 9] == ["  2. if `i' == 2 {", '  3. di "two"', "  4. }", '  5. else di "not two: `i\'"',
                                    "  6. }", "not two: 1", "two", "not two: 3"]


def test_while_loops_until_the_condition_fails(monkeypatch):
    log = run_do("local i = 1\nwhile `i' <= 3 {\n    di \"pass `i'\"\n    local i = `i' + 1\n}\ndi `i'")
    assert log.splitlines()[:10] == [". local i = 1", ". while `i' <= 3 {", "  2. di \"pass `i'\"",
                                     "  3. local i = `i' + 1", "  4. }", "pass 1", "pass 2", "pass 3", "", ". di `i'"]
    assert log.splitlines()[10] == "4"
    monkeypatch.setattr(jaxhlm.dofile, "WHILE_PASSES", 50)
    with pytest.raises(DoFileError, match="while 1: still true after 50 passes") as exc:
        run_do("local k = 0\nwhile 1 {\n    local k = `k' + 1\n}")
    assert exc.value.line == 2


@pytest.mark.parametrize("text, line, message", [
    ('else {\n di "x"\n}', 1, "else without an if before it"),
    ('if "a" {\n di "x"\n}', 1, "type mismatch; the condition must be a number"),
    ('if 1 {\n di "x"', 1, "the block opened here is not closed"),
    ("if 1", 1, "if needs a condition and then a command"),
])
def test_if_else_bad_input(text, line, message):
    with pytest.raises(DoFileError, match=message) as exc:
        run_do(text)
    assert exc.value.line == line

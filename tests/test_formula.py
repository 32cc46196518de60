"""Formula front end and covariance structures."""

from __future__ import annotations

import numpy as np
import pytest

import jaxhlm
from jaxhlm.formula import RandomTerm, parse_formula


@pytest.mark.parametrize(
    "formula, fixed, terms",
    [
        ("y ~ x + (1 | g)", "x", [RandomTerm((), True, "g", "identity")]),
        ("y ~ x + (1 + x | g)", "x", [RandomTerm(("x",), True, "g", "unstructured")]),
        ("y ~ x + (x | g)", "x", [RandomTerm(("x",), True, "g", "unstructured")]),
        ("y ~ x + (0 + x | g)", "x", [RandomTerm(("x",), False, "g", "identity")]),
        ("y ~ x + (x - 1 | g)", "x", [RandomTerm(("x",), False, "g", "identity")]),
        ("y ~ x + (1 + x || g)", "x", [RandomTerm(("x",), True, "g", "independent")]),
        ("y ~ a*C(b) + (1 | g) - 1", "a*C(b) - 1", [RandomTerm((), True, "g", "identity")]),
        ("y ~ (1 | g) + (0 + x | g)", "1",
         [RandomTerm((), True, "g", "identity"), RandomTerm(("x",), False, "g", "identity")]),
    ],
)
def test_parse(formula, fixed, terms):
    spec = parse_formula(formula)
    assert spec.response == "y" and spec.fixed == fixed and list(spec.random) == terms


def test_stata_order_puts_cons_last():
    spec = parse_formula("y ~ x + (1 + x + z | g)")
    assert spec.re_names == ("x", "z", "_cons")


@pytest.mark.parametrize("name, kind", [("unstr", "unstructured"), ("ind", "independent"), ("exch", "exchangeable"),
                                        ("id", "identity"), ("Unstructured", "unstructured")])
def test_cov_argument_accepts_stata_names(name, kind):
    assert parse_formula("y ~ x + (1 + x | g)", cov=name).random[0].kind == kind


@pytest.fixture(scope="module")
def data(hsb):
    return hsb[hsb["id"].isin(hsb["id"].unique()[:60])]


def test_double_bar_equals_independent_and_separate_terms(data):
    a = jaxhlm.fit("mathach ~ ses + (1 + ses || id)", data)
    b = jaxhlm.fit("mathach ~ ses + (1 + ses | id)", data, cov="independent")
    c = jaxhlm.fit("mathach ~ ses + (1 | id) + (0 + ses | id)", data)
    assert a.llf == pytest.approx(b.llf, abs=1e-8) and a.llf == pytest.approx(c.llf, abs=1e-8)
    assert list(a.random_effects.labels) == ["var(ses)", "var(_cons)", "var(Residual)"]
    assert list(c.random_effects.labels) == ["var(_cons)", "var(ses)", "var(Residual)"]
    np.testing.assert_allclose(np.diag(a.cov_re), np.diag(c.cov_re)[::-1], rtol=1e-5)
    assert a.cov_re.loc["ses", "_cons"] == 0.0
    assert a.df_modelwc == 2 + 2 + 1


def test_structures_are_nested(data):
    """identity ⊂ exchangeable ⊂ unstructured and identity ⊂ independent ⊂ unstructured: the log likelihoods order."""
    ll = {k: jaxhlm.fit("mathach ~ ses + (1 + ses | id)", data, cov=k).llf
          for k in ("identity", "independent", "exchangeable", "unstructured")}
    tol = 1e-7
    assert ll["identity"] <= ll["independent"] + tol <= ll["unstructured"] + 2 * tol
    assert ll["identity"] <= ll["exchangeable"] + tol <= ll["unstructured"] + 2 * tol


def test_exchangeable_parameters(data):
    r = jaxhlm.fit("mathach ~ ses + (1 + ses | id)", data, cov="exchangeable")
    S = r.cov_re.to_numpy()
    assert S[0, 0] == pytest.approx(S[1, 1], rel=1e-12)
    assert list(r.random_effects.labels) == ["var(ses _cons)", "cov(ses _cons)", "var(Residual)"]
    np.testing.assert_allclose(r.random_effects.estimate[:2], [S[0, 0], S[0, 1]], rtol=1e-12)
    assert r.df_modelwc == 2 + 2 + 1


def test_identity_with_two_effects(data):
    r = jaxhlm.fit("mathach ~ ses + (1 + ses | id)", data, cov="identity")
    S = r.cov_re.to_numpy()
    assert S[0, 1] == 0 and S[0, 0] == pytest.approx(S[1, 1], rel=1e-12)
    assert r.lr_linear.chibar  # one variance component: Stata's chibar2(01)


def test_reml_differs_from_ml_and_is_reported(data):
    ml = jaxhlm.fit("mathach ~ ses + (1 | id)", data)
    reml = jaxhlm.fit("mathach ~ ses + (1 | id)", data, reml=True)
    assert reml.reml and not ml.reml
    assert reml.random_effects.estimate[0] > ml.random_effects.estimate[0]  # REML corrects ML's downward bias
    with pytest.raises(jaxhlm.ComparisonError, match="REML"):
        jaxhlm.lrtest(ml, reml)


def test_conf_int_and_params_align(data):
    r = jaxhlm.fit("mathach ~ ses + (1 + ses | id)", data)
    ci = r.conf_int()
    assert list(ci.index) == list(r.params.index)
    frame = r.to_frame()
    np.testing.assert_allclose(ci.loc["ses"].to_numpy(), frame["fixed"].loc["ses", ["ci_lower", "ci_upper"]].to_numpy())
    np.testing.assert_allclose(ci.iloc[-1].to_numpy(), frame["random"].iloc[-1][["ci_lower", "ci_upper"]].to_numpy(),
                               rtol=1e-12)


def test_docstring_examples():
    import doctest

    import jaxhlm.pipeline
    import jaxhlm.stata

    for module, examples in ((jaxhlm.pipeline, 3), (jaxhlm.stata, 6)):
        result = doctest.testmod(module, raise_on_error=True)
        assert result.failed == 0 and result.attempted == examples


def test_array_api_matches_formula_fit(hsb):
    """The array-level path (group_stats → fit_stats) gives the formula fit's optimum."""
    import pandas as pd

    from jaxhlm import covariance, fit_stats, group_stats, pad_groups

    X = np.column_stack([np.ones(len(hsb)), hsb["ses"]])
    Z = np.column_stack([hsb["ses"], np.ones(len(hsb))])
    codes, labels = pd.factorize(hsb["id"])
    stats = group_stats(pad_groups(X, Z, hsb["mathach"].to_numpy(), codes, len(labels)))
    fit = fit_stats(stats, (covariance.Block("unstructured", 2),))
    ref = jaxhlm.fit("mathach ~ ses + (1 + ses | id)", hsb)
    assert -0.5 * float(fit.deviance) == pytest.approx(ref.llf, abs=1e-8)
    np.testing.assert_allclose(np.asarray(fit.beta), ref.fe_params.to_numpy(), rtol=1e-7)


def test_a_fresh_process_replays_the_program_cache(tmp_path):
    """The second process fits from the programs the first one stored (jaxhlm.tracecache): same answer, no crash.

    jaxlib 0.9 loads its LAPACK kernels only while lowering a linear-algebra op, and a replayed program lowers
    nothing, so replaying crashed the process until tracecache loads them first.
    """
    import json
    import os
    import subprocess
    import sys

    script = ("import json, jaxhlm; r = jaxhlm.fit('mathach ~ ses + (1 + ses | id)', jaxhlm.datasets.hsb()); "
              "print(json.dumps([r.llf, r.converged]))")
    env = dict(os.environ, JAXHLM_CACHE_DIR=str(tmp_path / "xla"))
    env.pop("JAXHLM_NO_CACHE", None)  # this test is of the cache: on for its two processes whatever the suite's
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    assert runs[1].stderr == ""  # loading cached programs is silent (no XLA runtime warnings or false errors)
    assert any((tmp_path / "xla-programs").iterdir())
    first, second = (json.loads(r.stdout.splitlines()[-1]) for r in runs)
    assert second == first and first[1] is True

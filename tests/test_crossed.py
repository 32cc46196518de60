"""Crossed random effects: two grouping factors neither of which is nested in the other (subjects and items),
written as lme4 writes them, ``(1 + x | subj) + (1 | item)``.

Reference values: tests/fixtures/crossed_reference.json, written by tests/fixtures/crossed_reference.R
(``Rscript tests/fixtures/crossed_reference.R``; lme4, lmerTest, pbkrtest and numDeriv, versions in the JSON) on
tests/fixtures/crossed.csv (seeded synthetic data: ``python tests/fixtures/crossed.py``) and lme4's Penicillin
data (jaxhlm/datasets/penicillin.csv). lme4 gives the log likelihoods, fixed effects and their SEs, variance
components, BLUPs with their conditional variances, fitted values, predictions and profile intervals; the
variance components' standard errors (Stata's, from the observed information in the reported parameters)
come from the likelihood written out in R with the dense covariance matrix of all rows, polished by Newton
steps and differentiated by numDeriv, so no jaxhlm code is involved. The tests ask for 1e-6 where lme4's
optimiser decides (bobyqa stops about 1e-8 short) and 1e-5 of quantities that rest on a numerical Hessian.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError
from jaxhlm import covariance as cov
from jaxhlm import stats as stats_module
from jaxhlm.deviance import level_modes, profiled_deviance, relative_factor
from jaxhlm.formula import parse_formula
from jaxhlm.pipeline import prepare
from jaxhlm.render import stata_g

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "crossed_reference.json").read_text())
FITS = {f["name"]: f for f in REF["fits"]}
SLOPE = "y ~ x + cond + (1 + x | subj) + (1 | item)"
INTERCEPTS = "y ~ x + cond + (1 | subj) + (1 | item)"


@pytest.fixture(scope="module")
def crossed() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "crossed.csv")


def _data(ref: dict) -> pd.DataFrame:
    return pd.read_csv(FIXTURES.parent.parent / ref["data"])


def _named(values: dict) -> dict:
    return {k.replace("(Intercept)", "Intercept"): v for k, v in values.items()}


@pytest.fixture(scope="module")
def fits() -> dict[str, jaxhlm.MixedResult]:
    return {name: jaxhlm.fit(ref["formula"], _data(ref), reml=ref["reml"]) for name, ref in FITS.items()}


@pytest.mark.parametrize("name", list(FITS))
def test_matches_lme4_and_stata_standard_errors(fits, name):
    ref, r = FITS[name], fits[name]
    assert r.converged and not r.singular and r.design.crossed
    assert r.llf == pytest.approx(ref["loglik"], abs=1e-6)
    assert r.llf == pytest.approx(ref["loglik_lme4"], abs=1e-6)
    fixed, fixed_se = _named(ref["fixed"]), _named(ref["fixed_se"])
    np.testing.assert_allclose(r.fe_params.to_numpy(), [fixed[n] for n in r.fe_params.index], rtol=1e-6)
    np.testing.assert_allclose(r.bse_fe.to_numpy(), [fixed_se[n] for n in r.fe_params.index], rtol=1e-5)
    variance = r.params.drop(r.fe_params.index)
    assert sorted(variance.index) == sorted(ref["varcomp"])
    np.testing.assert_allclose(variance.to_numpy(), [ref["varcomp"][k] for k in variance.index], rtol=1e-5)
    np.testing.assert_allclose(r.bse.drop(r.fe_params.index).to_numpy(),
                               [ref["varcomp_se"][k] for k in variance.index], rtol=1e-5)


def test_the_factor_with_more_effects_comes_first(fits, crossed):
    # 24 subjects x (slope, intercept) = 48 effects against 40 items: subjects first, as written. With intercepts
    # only, the 40 items outnumber the 24 subjects and go first (lme4 orders its terms by levels too); the fit
    # does not depend on the order the terms are written in.
    assert fits["slope_ml"].design.level_names == ("subj", "item")
    assert fits["intercepts_ml"].design.level_names == ("item", "subj")
    swapped = jaxhlm.fit("y ~ x + cond + (1 | item) + (1 + x | subj)", crossed)
    assert swapped.design.level_names == ("subj", "item")
    assert swapped.llf == pytest.approx(fits["slope_ml"].llf, abs=1e-9)
    np.testing.assert_allclose(swapped.params.to_numpy(), fits["slope_ml"].params.to_numpy(), rtol=1e-7)


@pytest.mark.parametrize("name", ["slope_ml", "intercepts_ml"])
def test_blups_and_conditional_variances_of_both_factors_match_lme4(fits, name):
    ref, r = FITS[name], fits[name]
    for level, want in ref["ranef"].items():
        got = r.ranef(level)
        assert got.index.name == level and got.index.tolist() == want["levels"]
        np.testing.assert_allclose(got.to_numpy(), np.asarray(want["values"]).reshape(got.shape), rtol=1e-5,
                                   atol=1e-8)
        cov = np.asarray(want["condvar"], dtype=float).reshape(r.ranef_cov(level).shape)
        np.testing.assert_allclose(r.ranef_cov(level), cov, rtol=1e-5)


def test_fitted_values_and_predictions_for_new_levels_match_lme4(fits):
    ref, r = FITS["slope_ml"], fits["slope_ml"]
    np.testing.assert_allclose(r.fittedvalues, ref["fitted"], rtol=1e-6)
    new = pd.DataFrame(ref["new"])  # a new item, a new subject, both new: their effects are zero
    np.testing.assert_allclose(r.predict(new).to_numpy(), ref["predicted"], rtol=1e-6)


@pytest.mark.parametrize("method, key", [("satterthwaite", "satterthwaite_df"), ("kroger", "kenward_roger_df")])
@pytest.mark.parametrize("name", ["slope_reml", "penicillin_reml"])
def test_small_sample_degrees_of_freedom_match_lmertest_and_pbkrtest(name, method, key):
    ref = FITS[name]
    r = jaxhlm.fit(ref["formula"], _data(ref), reml=True, dfmethod=method)
    want = _named(ref[key])
    # lmerTest's Satterthwaite df rest on a numerical Hessian (see test_postestimation.py): 1e-5.
    np.testing.assert_allclose(r.ddf, [want[n] for n in r.fe_params.index], rtol=1e-5)
    if method == "kroger":
        se = _named(ref["kenward_roger_se"])
        np.testing.assert_allclose(r.bse_fe.to_numpy(), [se[n] for n in r.fe_params.index], rtol=1e-5)


@pytest.mark.parametrize("name", ["slope_ml", "intercepts_ml"])
def test_profile_intervals_agree_with_lme4(fits, name):
    # lme4 interpolates a spline through its profile (about 5e-5 relative on smooth profiles); jaxhlm solves
    # each endpoint. 2e-4 of the interval's width allows for lme4's interpolation only (measured: 4e-5).
    ref, r = FITS[name], fits[name]
    names = {"sd_x|subj": "sd(x[subj])", "sd_(Intercept)|subj": "sd(_cons[subj])",
             "cor_x.(Intercept)|subj": "corr(x,_cons[subj])", "sd_(Intercept)|item": "sd(_cons[item])",
             "sigma": "sd(Residual)", "(Intercept)": "Intercept", "x": "x", "cond": "cond"}
    got = pd.concat([r.conf_int(method="profile").loc[list(r.fe_params.index)],
                     r.varcorr(method="profile")[["ci_lower", "ci_upper"]].set_axis(["lower", "upper"], axis=1)])
    p = ref["profile"]
    for name, lower, upper in zip(p["names"], p["lower"], p["upper"]):
        row = got.loc[names[name]]
        width = upper - lower
        assert abs(row["lower"] - lower) < 2e-4 * width and abs(row["upper"] - upper) < 2e-4 * width, name


def test_lrtest_against_either_factor_alone(fits, crossed):
    both = fits["intercepts_ml"]
    for single in ("y ~ x + cond + (1 | subj)", "y ~ x + cond + (1 | item)"):
        one = jaxhlm.fit(single, crossed)
        lr = jaxhlm.lrtest(one, both)
        assert lr.df == 1 and lr.statistic == pytest.approx(2 * (both.llf - one.llf), rel=1e-12)
        assert lr.statistic > 10


def test_icc_has_one_row_per_factor(fits):
    r = fits["intercepts_ml"]
    icc = r.icc()
    v = r.params
    total = v["var(_cons[item])"] + v["var(_cons[subj])"] + v["var(Residual)"]
    assert [row.level for row in icc.rows] == ["item", "subj"]
    assert [row.icc for row in icc.rows] == pytest.approx([v["var(_cons[item])"] / total,
                                                           v["var(_cons[subj])"] / total], rel=1e-12)


def test_header_lists_both_factors(fits, crossed):
    r = fits["slope_ml"]
    text = str(r).splitlines()
    at = text.index(" Group variable |     groups    Minimum    Average    Maximum")
    for line, name in zip(text[at + 2:at + 4], ["subj", "item"]):
        s = crossed.groupby(name).size()
        assert line == f"{name:>15} | {len(s):>10} {s.min():>10} {s.mean():>10.1f} {s.max():>10}"
    assert "subj: Unstructured" in text[text.index("item: Identity               |") - 5]


def test_batched_refits_equal_single_fits_and_converge_on_the_boundary(fits, crossed):
    # Responses drawn without the random slope: the slope's variance is often estimated at 0, where a tiny
    # positive Λ diagonal once stopped the optimiser short (0.0003 in the log likelihood).
    small, big = fits["intercepts_ml"], fits["slope_ml"]
    Y = np.asarray(jaxhlm.simulate(small, 40, seed=3)).T
    batch = jaxhlm.refit_batch(big, Y, progress=False)
    assert batch.converged.all()
    assert batch.singular.sum() >= 5
    for j in (0, 1, *np.flatnonzero(batch.singular)[:3]):
        one = jaxhlm.fit(SLOPE, crossed.assign(y=Y[:, j]))
        assert one.converged
        assert batch.llf[j] == pytest.approx(one.llf, abs=1e-6)


def test_bootstrap_lrtest_of_the_random_slope(fits):
    test = jaxhlm.bootstrap_lrtest(fits["intercepts_ml"], fits["slope_ml"], B=100, seed=1, progress=False)
    assert test.failed == 0
    assert (test.replicates >= 0).all()
    assert test.pvalue == (1 + np.sum(test.replicates >= test.statistic)) / (test.B + 1)


def test_parquet_is_read_twice_and_an_iterator_is_refused(crossed, tmp_path, fits):
    with pytest.raises(DataError, match="'item' is crossed with 'subj'.*iterator of chunks"):
        jaxhlm.fit(SLOPE, (crossed.iloc[i:i + 100] for i in range(0, len(crossed), 100)))
    pytest.importorskip("pyarrow")
    path = tmp_path / "crossed.parquet"
    crossed.to_parquet(path)
    got = jaxhlm.fit(SLOPE, str(path))
    assert got.llf == pytest.approx(fits["slope_ml"].llf, abs=1e-9)


def test_influence_of_subjects_and_items(fits, crossed):
    # Leaving out a group of the first factor also takes its rows out of the second factor's sums: the exact
    # values equal refits without the group's rows, and the one-step derivative is close (here within 5% of the
    # largest |DFBETA|, the same three most influential subjects).
    r = fits["slope_ml"]
    exact, step = r.influence(exact=True), r.influence()
    assert exact.converged.all() and exact.dfbeta.index.name == "subj"
    for subject in ("s03", "s11"):
        without = jaxhlm.fit(SLOPE, crossed[crossed["subj"] != subject])
        np.testing.assert_allclose(exact.dfbeta.loc[subject].to_numpy(),
                                   (r.fe_params - without.fe_params).to_numpy(), rtol=1e-5, atol=1e-9)
    gap = np.abs(exact.dfbeta.to_numpy() - step.dfbeta.to_numpy()).max() / np.abs(exact.dfbeta.to_numpy()).max()
    assert gap < 0.05
    top = set(exact.cooks_distance.nlargest(3).index)
    assert top == set(step.cooks_distance.nlargest(3).index)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.assign(item="i01", y=d["y"] + np.arange(len(d)) % 3), "'item' has 1 level"),
    (lambda d: d.assign(subj=[f"r{k}" for k in range(len(d))]), "every subj group has a single observation"),
])
def test_bad_crossed_data_is_explained(crossed, change, words):
    with pytest.raises(DataError, match=words):
        jaxhlm.fit(INTERCEPTS, change(crossed))


def test_products_of_too_many_levels_are_refused(crossed, monkeypatch):
    monkeypatch.setattr(stats_module, "CROSSED_MAX_ENTRIES", 500)
    with pytest.raises(DataError, match="40 x 24 levels, up to 24 of the second in one group of the first: too many"):
        jaxhlm.fit(INTERCEPTS, crossed.assign(y=crossed["y"] + 1.0))  # not the prepared design of another test


def test_stata_all_r_syntax_fits_the_same_model(fits, crossed):
    # Stata writes crossed effects as random intercepts among the values of a factor within the one group of
    # all observations; the equation that follows is nested in _all only, so its values count alone.
    slope = jaxhlm.mixed("y x cond || _all: R.item || subj: x, cov(unstructured)", crossed)
    assert slope.design.crossed and slope.design.level_names == ("subj", "item")
    assert slope.llf == pytest.approx(fits["slope_ml"].llf, abs=1e-9)
    np.testing.assert_allclose(slope.params.drop(slope.fe_params.index).to_numpy(),
                               fits["slope_ml"].params.drop(fits["slope_ml"].fe_params.index).to_numpy(), rtol=1e-7)
    both = jaxhlm.mixed("y x cond || _all: R.item || _all: R.subj", crossed)
    assert both.llf == pytest.approx(fits["intercepts_ml"].llf, abs=1e-9)
    # Reported as Stata reports it (the layout of a published Stata log of "|| _all: R.sschool || _all: R.pschool",
    # UCLA's examples for Hox's Multilevel Analysis, chapter 7): the factors under "_all: Identity" as var(R.x),
    # in the order written; _all one group of every observation, in the header's group table or alone.
    log = jaxhlm.run_do(f"use {FIXTURES / 'crossed.csv'}\nmixed y x cond || _all: R.item || subj:\nestat group\n"
                        "estat recovariance")
    n, subjects = len(crossed), crossed.groupby("subj").size()
    table = (f"           _all |          1 {n:>10,} {n:>10.1f} {n:>10,}\n"
             f"           subj | {len(subjects):>10} {subjects.min():>10} {subjects.mean():>10.1f} {subjects.max():>10}")
    assert log.count(table) == 2  # the header and estat group
    assert ("_all: Identity               |\n                 var(R.item) |" in log
            and log.index("var(R.item)") < log.index("subj: Identity"))
    # estat recovariance: the factor's level _all first, as written, its variance named as in the table.
    fit = jaxhlm.mixed("y x cond || _all: R.item || subj:", crossed)
    assert log.split(". estat recovariance\n")[1].splitlines()[:6] == [
        "", "Random-effects covariance matrix for level _all", "", "             |    R.item",
        "-------------+-----------", f"      R.item | {stata_g(fit.params['var(_cons[item])']):>9}"]
    text = str(both)
    assert (f"Group variable: _all                            Number of groups  =          1\n"
            f"                                                Obs per group:\n"
            f"                                                              min = {n:>10,}") in text
    assert text.index("var(R.item)") < text.index("var(R.subj)")


@pytest.mark.parametrize("model, words", [
    ("y x || subj: || _all: R.item", "list the '_all: R.varname' equations first"),
    ("y x || _all: item", "'_all:' takes R.varname"),
    ("y x || _all: R.item, cov(un) || subj:", "R.item has one variance for all its values"),
    ("y x || _all: R.nosuch || subj:", "nosuch"),
])
def test_bad_stata_crossed_syntax_is_explained(crossed, model, words):
    with pytest.raises(jaxhlm.FormulaError, match=words):
        jaxhlm.mixed(model, crossed)


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    """A sparse crossing: 300 users each rating 3-9 of 80 items."""
    rng = np.random.default_rng(5)
    pairs = np.array([(u, i) for u in range(300) for i in rng.choice(80, size=rng.integers(3, 10), replace=False)])
    user, item = pairs.T
    x = rng.normal(size=len(user))
    y = (1 + 0.5 * x + rng.normal(size=300)[user] + 0.3 * rng.normal(size=300)[user] * x
         + 0.7 * rng.normal(size=80)[item] + rng.normal(size=len(user)))
    return pd.DataFrame({"y": y, "x": x, "user": user, "item": item})


def test_a_sparse_crossing_keeps_each_groups_levels_and_fits_the_same(ratings, monkeypatch):
    # Each user touches at most 9 of 80 items, so the products are kept for those only (slots), and the blocks
    # of the factorisation are added at each user's items. The same statistics laid out for every item give the
    # same deviance and the same BLUPs and conditional covariances of both factors at the fit.
    model = "y ~ x + (1 + x | user) + (1 | item)"
    sparse = jaxhlm.fit(model, ratings)
    inner = sparse.design.stats.inner
    assert inner.touched is not None and inner.ZtW.shape == (300, 2, 9, 1)
    assert sparse.converged
    # lme4 1.1-31 on these data: logLik -3009.938195196 (lmer(y ~ x + (1 + x | user) + (1 | item), REML = FALSE))
    assert sparse.llf == pytest.approx(-3009.938195196, abs=1e-6)
    monkeypatch.setattr(stats_module, "SPARSE_CROSSING", 0.0)
    jaxhlm.pipeline.clear_cache()  # the prepared design is the sparse one
    design, _ = prepare(parse_formula(model), ratings)
    assert design.stats.inner.touched is None and design.stats.inner.ZtW.shape == (300, 2, 80, 1)
    dense = stats_module.device_stats(design.stats, design.n_groups, len(design.fe_names))
    lam = relative_factor(jnp.asarray(sparse.theta), jnp.asarray(cov.templates(design.blocks)))
    assert float(profiled_deviance(jnp.asarray(sparse.theta), dense, jnp.asarray(cov.templates(design.blocks)))) \
        == pytest.approx(-2 * sparse.llf, abs=1e-9)
    modes = level_modes(lam, dense, jnp.asarray(sparse.fit.beta), jnp.asarray(sparse.scale))
    for level, (b, V) in enumerate(modes):
        np.testing.assert_allclose(sparse.ranef(level).to_numpy(), np.asarray(b), atol=1e-10)
        np.testing.assert_allclose(sparse.ranef_cov(level), np.asarray(V), atol=1e-12)

"""Weights: precision weights (lme4's ``weights``: row i's residual variance is σ²/aᵢ) and frequency weights
(Stata's ``fweight``: row i stands for fᵢ identical observations).

Reference values: tests/fixtures/weights_reference.json, written by tests/fixtures/weights_reference.R
(``Rscript tests/fixtures/weights_reference.R``; lme4, lmerTest and pbkrtest, versions in the JSON): weighted
two-level, three-level and crossed fits by ML and REML. pbkrtest ignores lmer's weights, so its Kenward-Roger
degrees of freedom are taken from the equivalent unweighted model of the rows scaled by √aᵢ. The script also writes the ML log likelihoods out with
the dense marginal covariance Z G Z' + σ² W⁻¹, which confirms lme4's convention (½ Σ log aᵢ included, n the
number of rows). Frequency weights have an exact reference without any other software: the same model fitted
to the data with each row repeated fᵢ times.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import DataError, FormulaError

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "weights_reference.json").read_text())
FITS = {f["name"]: f for f in REF["fits"]}
SLEEP = "Reaction ~ Days + (1 + Days | Subject)"


def _data(ref: dict) -> pd.DataFrame:
    """The reference's data with its weights, rebuilt from the rule the R script used (r: row number from 0)."""
    data = {"sleepstudy.csv": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"), "pastes": jaxhlm.datasets.pastes,
            "penicillin": jaxhlm.datasets.penicillin}[ref["data"]]()
    r = np.arange(len(data))
    data["w"] = eval(ref["weights"], {"__builtins__": {}}, {"r": r})  # e.g. "0.5 + (r % 7) / 4"
    return data


def _param(r: jaxhlm.MixedResult, entry: dict) -> str:
    """jaxhlm's name of a row of lme4's ``as.data.frame(VarCorr(m))``."""
    if entry["grp"] == "Residual":
        return "var(Residual)"
    effect = {"(Intercept)": "_cons"}
    a, b = (effect.get(v, v) for v in (entry["var1"], entry["var2"] or entry["var1"]))
    level = next(n for n in r.design.level_names if set(n.split(":")) == set(entry["grp"].split(":")))
    qualifier = "" if r.design.inner is None else f"[{level}]"
    names = [f"var({a}{qualifier})"] if a == b else [f"cov({a},{b}{qualifier})", f"cov({b},{a}{qualifier})"]
    return next(n for n in names if n in r.params.index)


@pytest.fixture(scope="module")
def fits() -> dict[str, jaxhlm.MixedResult]:
    return {name: jaxhlm.fit(ref["formula"], _data(ref), reml=ref["reml"], weights="w") for name, ref in FITS.items()}


@pytest.mark.parametrize("name", list(FITS))
def test_precision_weights_match_lme4(fits, name):
    ref, r = FITS[name], fits[name]
    assert r.converged and not r.singular
    assert r.nobs == ref["nobs"] == len(_data(ref))  # n counts rows, not the weights' sum
    assert r.llf == pytest.approx(ref["loglik"], abs=1e-7)
    if "dense_loglik" in ref:
        assert r.llf == pytest.approx(ref["dense_loglik"], abs=1e-7)
    np.testing.assert_allclose(r.fe_params.to_numpy(), np.atleast_1d(ref["beta"]), rtol=1e-6)
    np.testing.assert_allclose(r.bse_fe.to_numpy(), np.atleast_1d(ref["se"]), rtol=1e-5)
    assert r.scale == pytest.approx(ref["sigma2"], rel=1e-5)
    for entry in ref["varcorr"]:
        assert r.params[_param(r, entry)] == pytest.approx(entry["vcov"], rel=1e-5, abs=1e-8), entry
    np.testing.assert_allclose(r.fittedvalues, ref["fitted"], rtol=1e-6)


@pytest.mark.parametrize("name", ["sleep_ml", "penicillin_reml"])
def test_blups_of_a_weighted_fit_match_lme4(fits, name):
    ref, r = FITS[name], fits[name]
    for level, want in ref["ranef"].items():
        got = r.ranef(level)
        assert [str(g) for g in got.index] == want["levels"]
        # lme4 lists the intercept first; jaxhlm, as Stata, last
        values = np.asarray(want["values"], dtype=float).reshape(len(got), -1)[:, ::-1]
        np.testing.assert_allclose(got.to_numpy(), values, rtol=1e-5, atol=1e-7)


PROFILE_NAMES = {
    "sleep_ml": {"sd_zSubject1|Subject": "sd(_cons)", "sd_zSubjectDays|Subject": "sd(Days)",
                 "cor_zSubjectDays.zSubject1|Subject": "corr(Days,_cons)", "sigma": "sd(Residual)",
                 "x1": "Intercept", "x2": "Days"},
}


@pytest.mark.parametrize("name", list(PROFILE_NAMES))
def test_profile_intervals_with_weights(fits, name):
    # The reference profiles the equivalent unweighted model of the rows scaled by √w (lme4's profile of the
    # weighted model gets the variance components right, which the first check confirms, but not the fixed
    # effects). 2e-4 of the interval's width allows for lme4's spline (as in test_crossed.py).
    ref, r = FITS[name], fits[name]
    weighted, whitened = ref["profile_lme4_weighted"], ref["profile"]
    np.testing.assert_allclose(weighted["lower"][:-len(r.fe_params)], whitened["lower"][:-len(r.fe_params)],
                               rtol=1e-6)
    got = pd.concat([r.conf_int(method="profile").loc[list(r.fe_params.index)],
                     r.varcorr(method="profile")[["ci_lower", "ci_upper"]].set_axis(["lower", "upper"], axis=1)])
    for label, lower, upper in zip(whitened["names"], whitened["lower"], whitened["upper"]):
        row = got.loc[PROFILE_NAMES[name][label]]
        width = upper - lower
        assert abs(row["lower"] - lower) < 2e-4 * width and abs(row["upper"] - upper) < 2e-4 * width, label


@pytest.mark.parametrize("method, key", [("satterthwaite", "satterthwaite_df"), ("kroger", "kenward_roger_df")])
@pytest.mark.parametrize("name", ["sleep_reml", "penicillin_reml"])
def test_small_sample_degrees_of_freedom_with_weights(name, method, key):
    ref = FITS[name]
    r = jaxhlm.fit(ref["formula"], _data(ref), reml=True, dfmethod=method, weights="w")
    # pbkrtest ignores lmer's weights, so its KR df are of the equivalent unweighted model of the rows scaled by
    # √w (the R script; that model's fit is the weighted one, as its log likelihood shows).
    assert ref["whitened_loglik_plus_half_sum_log_w"] == pytest.approx(ref["loglik"], abs=1e-6)
    # lmerTest's Satterthwaite df rest on a numerical Hessian (see test_postestimation.py): 1e-5.
    np.testing.assert_allclose(r.ddf, np.atleast_1d(ref[key]), rtol=1e-5)


def test_weights_as_an_array_or_a_column_and_in_chunks_agree(fits):
    ref = FITS["sleep_ml"]
    data = _data(ref)
    by_array = jaxhlm.fit(SLEEP, data.drop(columns="w"), weights=data["w"].to_numpy())
    chunked = jaxhlm.fit(SLEEP, (data.iloc[i:i + 50] for i in range(0, len(data), 50)), weights="w")
    for other in (by_array, chunked):
        assert other.llf == pytest.approx(fits["sleep_ml"].llf, abs=1e-9)
        np.testing.assert_allclose(other.params.to_numpy(), fits["sleep_ml"].params.to_numpy(), rtol=1e-8)
    assert by_array.to_dict()["weights"] == {"precision": "(weights)", "frequency": None, "sampling": None}


def _expanded(data: pd.DataFrame, f: np.ndarray) -> pd.DataFrame:
    return data.loc[data.index.repeat(f)].reset_index(drop=True)


@pytest.mark.parametrize("formula, data, reml", [
    (SLEEP, "sleep", False),
    ("strength ~ 1 + (1 | batch/cask)", "pastes", True),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", False),
])
def test_frequency_weights_fit_the_expanded_data(formula, data, reml):
    frame = {"sleep": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"), "pastes": jaxhlm.datasets.pastes,
             "penicillin": jaxhlm.datasets.penicillin}[data]()
    frame["f"] = 1 + np.arange(len(frame)) % 3
    weighted = jaxhlm.fit(formula, frame, reml=reml, freq_weights="f", dfmethod="satterthwaite")
    expanded = jaxhlm.fit(formula, _expanded(frame, frame["f"]), reml=reml, dfmethod="satterthwaite")
    assert weighted.nobs == expanded.nobs == frame["f"].sum()
    assert weighted.llf == pytest.approx(expanded.llf, abs=1e-8)
    np.testing.assert_allclose(weighted.params.to_numpy(), expanded.params.to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(weighted.bse.to_numpy(), expanded.bse.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(weighted.ddf, expanded.ddf, rtol=1e-6)
    pd.testing.assert_frame_equal(weighted.group_info(), expanded.group_info())
    for level in range(len(weighted.design.level_names)):
        np.testing.assert_allclose(weighted.ranef(level).to_numpy(), expanded.ranef(level).to_numpy(), rtol=1e-6,
                                   atol=1e-9)


CROSSED_SLEEP = "Reaction ~ Days + (1 | Subject) + (1 | Days)"


@pytest.mark.parametrize("formula", [SLEEP, CROSSED_SLEEP])
def test_influence_with_frequency_weights_is_that_of_the_expanded_data(formula):
    # A subject's weight scales its repeated rows' terms either way, so the derivatives agree exactly.
    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    data["f"] = 1 + np.arange(len(data)) % 3
    weighted = jaxhlm.fit(formula, data, freq_weights="f").influence()
    expanded = jaxhlm.fit(formula, _expanded(data, data["f"])).influence()
    np.testing.assert_allclose(weighted.dfbeta.to_numpy(), expanded.dfbeta.to_numpy(), rtol=1e-6, atol=1e-9)
    pd.testing.assert_series_equal(weighted.group_sizes, expanded.group_sizes)


def test_exact_influence_with_precision_weights_is_a_refit():
    # A subject's rows also leave the crossed factor's sums, with their weights (stats.pair_totals).
    formula, data = CROSSED_SLEEP, pd.read_csv(FIXTURES / "sleepstudy.csv")
    data["w"] = 0.5 + (np.arange(len(data)) % 7) / 4
    precise = jaxhlm.fit(formula, data, weights="w")
    first = data["Subject"] == precise.design.group_labels[0]
    without = jaxhlm.fit(formula, data[~first], weights="w")
    dfbeta = precise.influence(exact=True).dfbeta.iloc[0].to_numpy()
    np.testing.assert_allclose(dfbeta, precise.fe_params.to_numpy() - without.fe_params.to_numpy(), rtol=1e-5,
                               atol=1e-7)


def test_stata_fweight_syntax_and_do_files():
    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    data["f"] = 1 + np.arange(len(data)) % 3
    stata = jaxhlm.mixed("Reaction Days [fw=f] || Subject: Days, cov(un)", data)
    lme4 = jaxhlm.fit(SLEEP, data, freq_weights="f")
    assert stata.llf == pytest.approx(lme4.llf, abs=1e-9) and stata.nobs == 360
    log = jaxhlm.run_do("mixed Reaction Days [fweight=f] || Subject: Days, cov(un)\nestat ic", data)
    assert "Number of obs     =        360" in log and "-1728.707" in log


@pytest.mark.parametrize("clause, words", [
    ("[aw=f]", "aweights not allowed"),
    ("[iweight=f]", "iweights not allowed"),
    ("[fw=f*2]", "must be a variable"),
    ("[fw=nosuch]", "variable nosuch not found"),
    ("[f]", "weights are written [fweight=varname] or [pweight=varname]"),
])
def test_other_stata_weights_are_refused(clause, words):
    data = pd.read_csv(FIXTURES / "sleepstudy.csv").assign(f=1)
    with pytest.raises(FormulaError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        jaxhlm.mixed(f"Reaction Days {clause} || Subject:", data)


def test_zero_and_missing_weights_drop_rows_with_a_note():
    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    data["w"] = 0.5 + (np.arange(len(data)) % 7) / 4
    data.loc[[0, 5], "w"] = 0.0
    data.loc[7, "w"] = np.nan
    r = jaxhlm.fit(SLEEP, data, weights="w")
    kept = jaxhlm.fit(SLEEP, data.drop(index=[0, 5, 7]), weights="w")
    assert r.nobs == 177 and r.llf == pytest.approx(kept.llf, abs=1e-9)
    assert "2 observations dropped because of zero weights" in r.design.notes
    assert "1 observation dropped because of missing values" in r.design.notes
    assert r.to_dict()["n_dropped"] == 3


@pytest.mark.parametrize("change, kind, words", [
    (lambda d: d.assign(w=-d["w"]), "weights", "must be finite and not negative"),
    (lambda d: d.assign(w=np.where(d.index == 3, np.inf, d["w"])), "weights", "must be finite"),
    (lambda d: d.assign(w=d["w"].astype(str)), "weights", "precision weight 'w' is not numeric"),
    (lambda d: d, "freq_weights", "must hold whole numbers"),
    (lambda d: d.assign(w=0.0), "weights", "no observations left"),
])
def test_bad_weights_are_explained(change, kind, words):
    data = change(pd.read_csv(FIXTURES / "sleepstudy.csv").assign(w=0.5 + np.arange(180) % 7 / 4))
    with pytest.raises(DataError, match=words):
        jaxhlm.fit(SLEEP, data, **{kind: "w"})


def test_weight_column_and_array_problems_are_explained():
    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    with pytest.raises(FormulaError, match="weight variable 'nosuch' not found"):
        jaxhlm.fit(SLEEP, data, weights="nosuch")
    with pytest.raises(DataError, match=r"one value per row of the data \(180\)"):
        jaxhlm.fit(SLEEP, data, weights=np.ones(10))
    with pytest.raises(DataError, match="need the data in memory"):
        jaxhlm.fit(SLEEP, iter([data]), freq_weights=np.ones(180))


def test_lrtest_refuses_a_weighted_against_an_unweighted_fit(fits):
    data = _data(FITS["sleep_ml"])
    plain = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", data)
    small = jaxhlm.fit("Reaction ~ Days + (1 | Subject)", data, weights="w")
    with pytest.raises(jaxhlm.ComparisonError):
        jaxhlm.lrtest(plain, fits["sleep_ml"])
    assert jaxhlm.lrtest(small, fits["sleep_ml"]).statistic > 0


def test_refits_and_simulation_with_precision_weights(fits):
    r = fits["sleep_ml"]
    data = _data(FITS["sleep_ml"])
    y = data["Reaction"].to_numpy()
    draws = np.asarray(jaxhlm.simulate(r, 4000, seed=3))
    # Refitting the fitted response, and a drawn one, gives what a fit of that response gives.
    refits = jaxhlm.refit_batch(r, np.column_stack([y, draws[0]]), progress=False)
    single = jaxhlm.fit(SLEEP, data.assign(Reaction=draws[0]), weights="w")
    np.testing.assert_allclose(refits.llf, [r.llf, single.llf], rtol=1e-9)
    np.testing.assert_allclose(refits.beta[1], single.fe_params.to_numpy(), rtol=1e-6)
    # A row's variance is σ²/aᵢ + its random effects' share zᵢᵀGzᵢ: heavier weights, less noise.
    z = np.column_stack([data["Days"], np.ones(len(data))])
    G = r.cov_re.to_numpy()
    want = np.einsum("ni,ij,nj->n", z, G, z) + r.scale / data["w"].to_numpy()
    np.testing.assert_allclose(draws.var(axis=0) / want, 1.0, atol=0.12)
    ratio = np.polyfit(1 / data["w"], draws.var(axis=0) - np.einsum("ni,ij,nj->n", z, G, z), 1)[0]
    assert ratio == pytest.approx(r.scale, rel=0.05)


def test_the_bootstrap_of_frequency_weights_draws_the_expanded_data():
    # A row with frequency f is drawn as the mean of f observations plus their spread about it (σ²χ² on f − 1
    # df in all); without the spread the refits' σ² would be about half the expanded data's here.
    data = pd.read_csv(FIXTURES / "sleepstudy.csv").assign(f=lambda d: 1 + np.arange(len(d)) % 3)
    expanded = _expanded(data, data["f"])
    small, big = "Reaction ~ Days + (1 | Subject)", SLEEP
    weighted = [jaxhlm.fit(m, data, freq_weights="f") for m in (small, big)]
    plain = [jaxhlm.fit(m, expanded) for m in (small, big)]
    w, e = (jaxhlm.bootstrap_lrtest(*fits, B=400, seed=5, progress=False) for fits in (weighted, plain))
    assert w.statistic == pytest.approx(e.statistic, abs=1e-6) and w.failed == e.failed == 0
    for stat in (lambda b: b.small_fits.sigma2, lambda b: b.replicates, lambda b: b.big_fits.beta[:, 1]):
        a, b = stat(w), stat(e)
        se = np.sqrt((a.var() + b.var()) / 400)
        assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)
    assert abs(w.pvalue - e.pvalue) < 0.06
    # conf_int(method="bootstrap") draws the same way: its σ² refits centre on the fit's σ̂² (ML: about 1% low).
    ci = weighted[0].conf_int(method="bootstrap", B=400, seed=2).loc["var(Residual)"]
    assert ci["lower"] < weighted[0].scale < ci["upper"]
    assert np.mean(weighted[0]._bootstrap(400, 2).sigma2) == pytest.approx(weighted[0].scale, rel=0.03)
    for call in (lambda: jaxhlm.simulate(weighted[0], 2), lambda: jaxhlm.refit_batch(weighted[0], np.zeros((360, 1)))):
        with pytest.raises(DataError, match=r"do not take frequency weights.*expand the rows"):
            call()


def test_command_line_weights(tmp_path, capsys):
    from jaxhlm.cli import main

    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    data["n"] = 1 + np.arange(len(data)) % 3
    data["w"] = 0.5 + (np.arange(len(data)) % 7) / 4
    path = tmp_path / "sleep.csv"
    data.to_csv(path, index=False)
    assert main(["fit", SLEEP, "--data", str(path), "--freq-weights", "n", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nobs"] == 360 and out["weights"] == {"precision": None, "frequency": "n", "sampling": None}
    assert out["llf"] == pytest.approx(jaxhlm.fit(SLEEP, data, freq_weights="n").llf, abs=1e-9)
    assert main(["fit", SLEEP, "--data", str(path), "--weights", "w", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["llf"] == pytest.approx(FITS["sleep_ml"]["loglik"], abs=1e-7)
    assert main(["fit", SLEEP, "--data", str(path), "--freq-weights", "w"]) == 2
    assert "must hold whole numbers" in capsys.readouterr().err

"""Predicted random effects (BLUPs), their conditional covariances and fitted values, against lme4.

Reference values: tests/fixtures/lme4_ranef.json, written by tests/fixtures/lme4_ranef.R
(``Rscript tests/fixtures/lme4_ranef.R``; lme4 1.1-31, bobyqa with tight tolerances): ``ranef(condVar=TRUE)``,
``fitted`` and ``predict(re.form=NA)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm

FIXTURES = Path(__file__).parent / "fixtures"
FITS = json.loads((FIXTURES / "lme4_ranef.json").read_text())["fits"]


@pytest.mark.parametrize("ref", FITS, ids=[f"{f['name']}-{'reml' if f['reml'] else 'ml'}" for f in FITS])
def test_ranef_condvar_and_fitted_match_lme4(ref):
    data = jaxhlm.datasets.hsb() if ref["data"] == "hsb" else pd.read_csv(FIXTURES / ref["data"])
    r = jaxhlm.fit(ref["formula"], data, reml=ref["reml"])
    assert r.llf == pytest.approx(ref["loglik"], abs=1e-6) and (ref["reml"] or r.llf >= ref["loglik"] - 1e-9)
    named = [ref["effects"]] if isinstance(ref["effects"], str) else ref["effects"]  # R unboxes length 1
    effects = ["_cons" if e == "(Intercept)" else e for e in named]
    got = r.ranef().loc[[int(g) for g in ref["groups"]], effects].to_numpy()
    want = np.asarray(ref["ranef"]).reshape(got.shape)
    scale = np.abs(want).max(axis=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale.max())
    order = [list(r.design.re_names).index(e) for e in effects]
    rows = [list(r.ranef().index).index(int(g)) for g in ref["groups"]]
    V = r.ranef_cov()[np.ix_(rows, order, order)]
    np.testing.assert_allclose(V, np.asarray(ref["condvar"]).reshape(V.shape), rtol=1e-5)
    np.testing.assert_allclose(r.fittedvalues, ref["fitted"], rtol=0, atol=1e-6 * np.abs(ref["fitted"]).max())
    rows = r.design.rows()
    np.testing.assert_allclose(rows.X @ r.fe_params.to_numpy(), ref["fitted_fixed"], rtol=1e-7)
    np.testing.assert_allclose(r.resid, rows.y - r.fittedvalues)


def test_blups_are_the_conditional_means_of_the_dense_model():
    """b̂ = ΣZᵀV⁻¹(y − Xβ̂) and Var(b | y) = Σ − ΣZᵀV⁻¹ZΣ per group, with V = ZΣZᵀ + σ²I formed densely."""
    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    r = jaxhlm.fit("Reaction ~ Days + (1 + Days | Subject)", data)
    rows = r.design.rows()
    Sigma, s2 = r.cov_re.to_numpy(), r.scale
    for j in (0, 7):
        at = rows.group == j
        Z, X, y = rows.Z[at], rows.X[at], rows.y[at]
        V = Z @ Sigma @ Z.T + s2 * np.eye(len(y))
        K = Sigma @ Z.T @ np.linalg.inv(V)
        np.testing.assert_allclose(r.ranef().to_numpy()[j], K @ (y - X @ r.fe_params.to_numpy()), rtol=1e-8)
        np.testing.assert_allclose(r.ranef_cov()[j], Sigma - K @ Z @ Sigma, rtol=1e-8, atol=1e-10)


def test_predictions_for_new_data_match_lme4():
    """lme4's predict(newdata, allow.new.levels = TRUE) and predict(newdata, re.form = NA): new Days for seen
    subjects, and subjects the fit has not seen (zero random effect)."""
    ref = json.loads((FIXTURES / "lme4_ranef.json").read_text())["prediction"]
    r = jaxhlm.fit(ref["formula"], pd.read_csv(FIXTURES / "sleepstudy.csv"))
    new = pd.DataFrame(ref["newdata"], index=[10, 11, 12, 13, 14])
    got = r.predict(new)
    assert got.name == "fitted" and list(got.index) == list(new.index)
    np.testing.assert_allclose(got, ref["fitted"], rtol=1e-7)
    np.testing.assert_allclose(r.predict(new, random=False), ref["fixed"], rtol=1e-7)
    # The group is not needed without random effects; a missing predictor gives NaN for its row only.
    new.loc[11, "Days"] = np.nan
    partial = r.predict(new.drop(columns="Subject"), random=False)
    assert np.isnan(partial[11]) and np.allclose(partial.drop(11), np.delete(ref["fixed"], 1), rtol=1e-7)


def test_predict_on_the_estimation_sample_and_bad_new_data():
    data = jaxhlm.datasets.hsb()
    data.loc[data.index[3], "ses"] = np.nan
    r = jaxhlm.mixed("mathach ses i.sector || id:", data)
    fitted = r.predict()
    assert 3 not in fitted.index and len(fitted) == r.nobs
    np.testing.assert_allclose(fitted, r.fittedvalues)
    np.testing.assert_allclose(r.predict(random=False), r.design.rows().X @ r.fe_params.to_numpy())
    np.testing.assert_allclose(r.predict(data.drop(columns="mathach")).dropna(), fitted)
    with pytest.raises(jaxhlm.DataError, match="level 3 of 'sector' does not occur"):
        r.predict(data.assign(sector=3))
    with pytest.raises(jaxhlm.DataError, match="lacks 'id'.*random=False"):
        r.predict(data.drop(columns="id"))
    formula = jaxhlm.fit("mathach ~ ses + C(sector) + (1 | id)", data)
    with pytest.raises(jaxhlm.DataError, match="new data has a level the fitted model does not know"):
        formula.predict(data.assign(sector=3))

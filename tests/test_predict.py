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

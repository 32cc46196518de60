"""Standard errors of the predicted random effects (Stata's ``predict, reses``; :meth:`MixedResult.ranef_se`).

Which variance Stata reports is pinned by a published pair of its numbers (stats.stackexchange.com question 48254,
"Standard error of random effects in R (lme4) vs Stata (xtmixed)"): on 12 subjects measured twice, ``xtmixed g ||
id:, reml`` gives reses 2.13 where lme4's condVar gives 1.32, and ``xtmixed g || id:, ml`` gives 1.32. So after ML the
conditional standard error (β at β̂), after REML the prediction error's, β̂'s uncertainty included. Both are checked
against the dense formulas, Σ − ΣZᵀV⁻¹ZΣ and Henderson's Σ − ΣZᵀPZΣ with P = V⁻¹ − V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹, over
every row of two-level, three-level and crossed models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.dofile import Session

FIXTURES = Path(__file__).parent / "fixtures"
#: the question's data: g for ids 1..12 at the first occasion, then the second
THREAD = pd.DataFrame({"id": list(range(1, 13)) * 2,
                       "g": [12, 8, 22, 10, 10, 6, 8, 4, 14, 6, 2, 22, 12, 7, 24, 14, 8, 4, 5, 6, 14, 5, 5, 16]})


@pytest.mark.parametrize("reml, stata", [(True, 2.13), (False, 1.32)])
def test_stata_reses(reml, stata):
    se = jaxhlm.fit("g ~ 1 + (1 | id)", THREAD, reml=reml).ranef_se()
    assert se.shape == (12, 1)
    np.testing.assert_allclose(se.to_numpy(), stata, atol=0.005)  # Stata's as published, to two decimals


def _dense(m: jaxhlm.MixedResult) -> tuple[np.ndarray, np.ndarray]:
    """(conditional, prediction-error) variances of every random effect, from the model's dense V over all rows,
    in the order of the levels, then the groups, then the effects."""
    d = m.design
    rows = d.rows()
    sigma, q = m.random_effects.sigma, [len(e) for e in d.level_effects]
    codes, sizes = rows.codes, [d.n_groups] + ([len(d.inner.labels)] if d.inner is not None else [])
    blocks, start = [], 0
    for k, (n, qk) in enumerate(zip(sizes, q)):
        Zk = np.zeros((len(rows.y), n * qk))
        for a in range(qk):
            Zk[np.arange(len(rows.y)), codes[k] * qk + a] = rows.Z[:, start + a]
        blocks.append((Zk, np.kron(np.eye(n), sigma[start:start + qk, start:start + qk])))
        start += qk
    Z = np.hstack([z for z, _ in blocks])
    G = np.zeros((Z.shape[1], Z.shape[1]))
    at = 0
    for _, g in blocks:
        G[at:at + len(g), at:at + len(g)] = g
        at += len(g)
    Vinv = np.linalg.inv(Z @ G @ Z.T + m.scale * np.eye(len(rows.y)))
    X = rows.X
    P = Vinv - Vinv @ X @ np.linalg.solve(X.T @ Vinv @ X, X.T @ Vinv)
    GZ = G @ Z.T
    return np.diag(G - GZ @ Vinv @ GZ.T), np.diag(G - GZ @ P @ GZ.T)


MODELS = {
    "sleepstudy slope": ("Reaction ~ Days + (1 + Days | Subject)", lambda: pd.read_csv(FIXTURES / "sleepstudy.csv")),
    "three levels": ("score ~ ses + (1 | school/class)", lambda: pd.read_csv(FIXTURES / "three_level.csv")),
    "crossed": ("y ~ x + cond + (1 | subj) + (1 | item)", lambda: pd.read_csv(FIXTURES / "crossed.csv")),
}


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_dense_formulas(name, reml):
    formula, data = MODELS[name]
    m = jaxhlm.fit(formula, data(), reml=reml)
    conditional, prediction = _dense(m)
    ours = np.concatenate([m.ranef_se(k).to_numpy().ravel() ** 2 for k in range(len(m.design.level_names))])
    np.testing.assert_allclose(ours, prediction if reml else conditional, rtol=1e-8)
    if reml:  # the difference is β̂'s uncertainty, not rounding
        assert np.max(prediction / conditional) > 1.01


def test_predict_in_a_dofile():
    """``predict u*, reffects reses(se*)`` and the older ``predict s*, reses``, stored as Stata's float."""
    hsb = jaxhlm.datasets.hsb()
    session = Session(hsb)
    out = [session.run(*line.split(" ", 1)) for line in (
        "mixed mathach ses || id: ses, cov(unstr) reml", "predict u*, reffects reses(se*)", "predict s*, reses")]
    assert out[1:] == ["", ""]
    se = session.active.ranef_se().loc[hsb["id"]]
    blups = session.active.ranef().loc[hsb["id"]]
    single = lambda v: np.asarray(v, dtype=float).astype(np.float32).astype(float)  # noqa: E731
    for j, name in enumerate(["ses", "_cons"]):  # Stata's order: ses, then _cons
        np.testing.assert_array_equal(session.data[f"u{j + 1}"], single(blups[name]))
        np.testing.assert_array_equal(session.data[f"se{j + 1}"], single(se[name]))
        np.testing.assert_array_equal(session.data[f"s{j + 1}"], session.data[f"se{j + 1}"])
    with pytest.raises(jaxhlm.DoFileError, match=r"reses\(\) goes with reffects"):
        jaxhlm.run_do("mixed mathach ses || id:\npredict x, xb reses(s)", hsb)

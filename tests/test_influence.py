"""Group influence (DFBETA, DFBETAS, Cook's distance): the one-step values from the implicit derivatives against
brute-force leave-one-group-out refits on HSB, and those refits against fits of the data without the group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.cli import main

MODEL = "mathach ses i.sector || id:"


@pytest.fixture(scope="module")
def hsb():
    return jaxhlm.datasets.hsb()


@pytest.fixture(scope="module")
def result(hsb):
    return jaxhlm.mixed(MODEL, hsb)


@pytest.fixture(scope="module")
def exact(result):
    return result.influence(exact=True)


def test_leave_one_out_refits_are_fits_without_the_group(hsb, result, exact):
    assert exact.method == "exact" and exact.converged.all()
    for label in (exact.cooks_distance.idxmax(), exact.cooks_distance.index[5]):
        without = jaxhlm.mixed(MODEL, hsb[hsb.id != label])
        np.testing.assert_allclose(exact.dfbeta.loc[label], result.fe_params - without.fe_params, rtol=1e-6,
                                   atol=1e-8)
    V = result.cov_params().to_numpy()
    d = exact.dfbeta.to_numpy()
    np.testing.assert_allclose(exact.cooks_distance, np.einsum("gi,ij,gj->g", d, np.linalg.inv(V), d) / 3,
                               rtol=1e-10)
    np.testing.assert_allclose(exact.dfbetas, d / result.bse_fe.to_numpy(), rtol=1e-12)


def test_one_step_influence_is_close_to_the_refits(result, exact):
    """Measured on this model: the one-step DFBETA is within 2.4% / 1.6% / 1.2% of the largest |DFBETA| of
    ses / 1.sector / _cons, Cook's distance within 3.9% (2.1% median), the same five most influential groups in
    the same order; the bounds leave room for rounding only."""
    approx = result.influence()
    assert approx.method == "one-step" and approx.converged is None
    err = (approx.dfbeta - exact.dfbeta).abs().max() / exact.dfbeta.abs().max()
    assert (err < 0.03).all(), err
    rel = (approx.cooks_distance - exact.cooks_distance).abs() / exact.cooks_distance
    assert rel.max() < 0.045 and rel.median() < 0.025
    top = exact.cooks_distance.nlargest(5).index
    assert list(approx.summary_frame().index[:5]) == list(top)
    assert list(approx.summary_frame().columns) == ["n", "cooks_d", "dfb_ses", "dfb_1.sector", "dfb__cons"]


def test_influence_cli(capsys, result):
    assert main(["influence", MODEL, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "Influence of each id on the fixed effects (one step from the implicit derivatives)" in out
    frame = result.influence().summary_frame()
    first = frame.index[0]
    row = [line.split() for line in out.splitlines() if line.split()[:1] == [str(first)]]
    assert row == [[str(first), str(frame.n.iloc[0])] + [f"{v:.4f}" for v in frame.iloc[0, 1:]]]
    assert "(3 of 160 groups shown)" in out
    assert main(["influence", MODEL, "--top", "0"]) == 2
    assert "--top must be a positive" in capsys.readouterr().err


def test_influence_needs_the_rows(hsb):
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", (hsb.iloc[i:i + 2000] for i in range(0, len(hsb), 2000)))
    with pytest.raises(jaxhlm.DataError, match="read in chunks"):
        r.influence()


@pytest.mark.parametrize("residuals", ["ar1", "by sector"])
def test_residual_structures(hsb, residuals):
    """With AR(1) residuals (tests/fixtures/ar1.csv) or a residual variance per sector: the refits are fits
    without the group, and the one-step values follow them (measured: within 3.4% of the largest |DFBETA| for
    AR(1), 2.3% by sector)."""
    if residuals == "ar1":
        data = pd.read_csv(Path(__file__).parent / "fixtures" / "ar1.csv")
        formula, options, group = "y ~ time + x + (1 | id)", {"residuals": "ar1", "time": "time"}, "id"
    else:
        data, formula, options, group = hsb, "mathach ~ ses + sector + (1 | id)", {"residuals_by": "sector"}, "id"
    m = jaxhlm.fit(formula, data, **options)
    exact, approx = m.influence(exact=True), m.influence()
    assert exact.converged.all()
    label = exact.cooks_distance.idxmax()
    without = jaxhlm.fit(formula, data[data[group] != label], **options)
    np.testing.assert_allclose(exact.dfbeta.loc[label], m.fe_params - without.fe_params, rtol=1e-6, atol=1e-8)
    err = (approx.dfbeta - exact.dfbeta).abs().max() / exact.dfbeta.abs().max()
    assert (err < 0.04).all(), err
    assert set(approx.summary_frame().index[:5]) == set(exact.cooks_distance.nlargest(5).index)

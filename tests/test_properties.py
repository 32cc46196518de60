"""Property tests: the sufficient-statistic likelihood equals the dense one (one grouping factor, or two
crossed ones), and the fit ignores row order and group labels."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

import jaxhlm
from jaxhlm import covariance as cov
from jaxhlm import stats as stats_module
from jaxhlm.deviance import LOG_2PI, profiled_deviance
from jaxhlm.formula import parse_formula
from jaxhlm.pipeline import prepare
from jaxhlm.stats import group_stats, pad_groups

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    """A small random two-level data set: 3-8 groups of 2-7 rows, two covariates, a q-effect random part."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    m = draw(st.integers(3, 8))
    sizes = rng.integers(2, 8, size=m)
    g = np.repeat(np.arange(m), sizes)
    n = len(g)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    kind = draw(st.sampled_from(["identity", "independent", "exchangeable", "unstructured"]))
    q = 1 if kind == "identity" else 2
    X = np.column_stack([np.ones(n), x1, x2])
    Z = np.column_stack([x1, np.ones(n)])[:, 2 - q:]
    lead = draw(st.sampled_from([None, 0, 1])) if kind == "unstructured" else None
    blocks = (cov.Block(kind, q, lead),)
    theta = rng.uniform(0.05, 1.5, size=blocks[0].n_theta)
    if kind == "unstructured":
        theta[1] = rng.normal()
    u = rng.normal(size=(m, q)) * 0.8
    y = X @ np.array([1.0, 0.5, -0.3]) + np.sum(Z * u[g], axis=1) + rng.normal(size=n)
    return X, Z, y, g, blocks, theta, seed


def dense_deviance(X, Z, y, g, blocks, theta, reml):
    """−2 log L with β and σ² profiled out, by brute force on V = ZΣZᵀ + σ²I (relative scale)."""
    lam = np.tensordot(theta, cov.templates(blocks), 1)
    return dense_profiled(X, _expanded(Z @ lam, g, g.max() + 1), y, reml)


def _expanded(Z, g, m):
    """The rows' random-effects design over all groups' effects: row i's Z in group g[i]'s block of columns."""
    q = Z.shape[1]
    Zfull = np.zeros((len(g), q * m))
    Zfull[np.arange(len(g))[:, None], g[:, None] * q + np.arange(q)] = Z
    return Zfull


def dense_profiled(X, Zfull, y, reml):
    """The profiled deviance of y = Xβ + Zfull u + e, u ~ N(0, σ²I), e ~ N(0, σ²I), from the dense V."""
    n, p = X.shape
    V = Zfull @ Zfull.T + np.eye(n)
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = r @ Vi @ r
    logdet = np.linalg.slogdet(V)[1]
    nu = n - p if reml else n
    d = logdet + nu * (1 + LOG_2PI + np.log(r2 / nu))
    return d + np.linalg.slogdet(XtViX)[1] if reml else d


@SETTINGS
@given(problems(), st.booleans())
def test_profiled_deviance_equals_dense(problem, reml):
    X, Z, y, g, blocks, theta, _ = problem
    stats = group_stats(pad_groups(X, Z, y, g, g.max() + 1))
    ours = float(profiled_deviance(jnp.asarray(theta), stats, jnp.asarray(cov.templates(blocks)), reml=reml))
    assert ours == pytest.approx(dense_deviance(X, Z, y, g, blocks, theta, reml), rel=1e-10, abs=1e-9)


@st.composite
def crossed_problems(draw):
    """Small random crossed data: 3-7 subjects × 2-6 items, each cell observed with probability 0.7 (once or
    twice), a random intercept or intercept and x slope by subject, and an intercept, slope or both by item."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    m, k = draw(st.integers(3, 7)), draw(st.integers(2, 6))
    cells = [(s, i) for s in range(m) for i in range(k) if rng.random() < 0.7 for _ in range(rng.integers(1, 3))]
    s, i = np.array(cells, dtype=np.int64).reshape(-1, 2).T
    x = rng.normal(size=len(s))
    y = 0.5 * x + rng.normal(size=m)[s] + rng.normal(size=k)[i] + rng.normal(size=len(s))
    terms = (draw(st.sampled_from(["(1 | subj)", "(1 + x | subj)"])),
             draw(st.sampled_from(["(1 | item)", "(1 + x | item)", "(0 + x | item)"])))
    return pd.DataFrame({"y": y, "x": x, "subj": s, "item": i}), "y ~ x + " + " + ".join(terms), seed


@SETTINGS
@given(crossed_problems(), st.booleans(), st.sampled_from([0.0, 1.0]))
def test_crossed_deviance_equals_dense(problem, reml, sparse_crossing):
    """The blocked factorisation of two crossed factors (either one put first; the products with the second
    factor kept for every level, or only for each group's levels as for a sparse crossing) equals the dense
    likelihood."""
    df, formula, seed = problem
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(stats_module, "SPARSE_CROSSING", sparse_crossing)
            jaxhlm.pipeline.clear_cache()
            design, stats = prepare(parse_formula(formula, reml=reml), df)
    except jaxhlm.DataError:  # too few rows or levels for the model: not this property's concern
        assume(False)
    assert (design.stats.inner.touched is None) == (sparse_crossing == 0.0)
    assume(design.crossed)
    rng = np.random.default_rng(seed)
    lower = cov.theta_lower(design.blocks)
    theta = np.where(np.isfinite(lower), rng.uniform(0.05, 1.5, len(lower)), rng.normal(size=len(lower)))
    T = cov.templates(design.blocks)
    lam = np.tensordot(theta, T, 1)
    rows, q1 = design.rows(), len(design.level_effects[0])
    Zfull = np.hstack([_expanded(rows.Z[:, :q1] @ lam[:q1, :q1], rows.group, design.n_groups),
                       _expanded(rows.Z[:, q1:] @ lam[q1:, q1:], rows.cluster, len(design.inner.labels))])
    ours = float(profiled_deviance(jnp.asarray(theta), stats, jnp.asarray(T), reml=reml))
    assert ours == pytest.approx(dense_profiled(rows.X, Zfull, rows.y, reml), rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("lead", [None, 0, 1, 2])
def test_theta_from_cov_factors_the_lead_effect_first(lead):
    block = cov.Block("unstructured", 3, lead)
    A = np.random.default_rng(lead or 0).normal(size=(3, 3))
    for sigma in (A @ A.T + 0.1 * np.eye(3), np.outer(A[0], A[0]) + np.outer(A[1], A[1])):  # full rank, rank 2
        theta = np.asarray(block.theta_from_cov(jnp.asarray(sigma)))
        lam = np.tensordot(theta, block.templates(), 1)
        np.testing.assert_allclose(lam @ lam.T, sigma, atol=1e-12)
        assert theta[0] == pytest.approx(np.sqrt(sigma[lead or 0, lead or 0]))
        assert np.all(theta[block.lower() == 0] >= 0)


def _frame(X, Z, y, g):
    return pd.DataFrame({"y": y, "x1": X[:, 1], "x2": X[:, 2], "g": g})


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.randoms(use_true_random=False))
def test_fit_invariant_to_row_order_and_labels(problem, rnd):
    X, Z, y, g, blocks, _, _ = problem
    df = _frame(X, Z, y, g)
    formula = "y ~ x1 + x2 + (1 + x1 | g)" if blocks[0].q == 2 else "y ~ x1 + x2 + (1 | g)"
    a = jaxhlm.fit(formula, df)
    order = list(range(len(df)))
    rnd.shuffle(order)
    m = int(g.max()) + 1
    labels = {k: f"school-{v}" for k, v in zip(range(m), rnd.sample(range(100, 200), m))}
    shuffled = df.iloc[order].assign(g=lambda d: d["g"].map(labels)).reset_index(drop=True)
    b = jaxhlm.fit(formula, shuffled)
    assert b.llf == pytest.approx(a.llf, abs=1e-7 * max(1.0, abs(a.llf)))
    np.testing.assert_allclose(b.fe_params.to_numpy(), a.fe_params.to_numpy(), rtol=1e-4, atol=1e-6)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fitted_llf_is_the_gaussian_likelihood(problem):
    """At the estimates, llf is Σ_j log N(y_j; X_j β̂, Z_j Σ̂ Z_jᵀ + σ̂² I)."""
    X, Z, y, g, blocks, _, _ = problem
    df = _frame(X, Z, y, g)
    formula = "y ~ x1 + x2 + (1 + x1 | g)" if blocks[0].q == 2 else "y ~ x1 + x2 + (1 | g)"
    r = jaxhlm.fit(formula, df)
    beta = r.fe_params.to_numpy()
    sigma = r.cov_re.to_numpy()
    Zr = np.column_stack([X[:, 1], np.ones(len(y))])[:, 2 - sigma.shape[0]:]
    total = 0.0
    for j in np.unique(g):
        rows = g == j
        V = Zr[rows] @ sigma @ Zr[rows].T + r.scale * np.eye(rows.sum())
        total += sps.multivariate_normal(X[rows] @ beta, V, allow_singular=True).logpdf(y[rows])
    assert total == pytest.approx(r.llf, abs=1e-6 * max(1.0, abs(r.llf)))

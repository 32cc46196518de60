"""The array-level API (jaxhlm.functional): values against the dense model and lme4, derivatives against finite
differences, implicit derivatives of the fit against finite differences of refits, jit and vmap.

lme4 reference (precision weights): tests/fixtures/lme4_ranef.json, "weighted", written by
tests/fixtures/lme4_ranef.R (``Rscript tests/fixtures/lme4_ranef.R``).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.test_util import check_grads
from scipy import stats as sps

import jaxhlm
from jaxhlm import functional as F

FIXTURES = Path(__file__).parent / "fixtures"


def _synthetic(seed: int = 0, m: int = 8):
    """A small two-level data set with a random intercept and slope (sizes 3..9)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 10, m)
    groups = np.repeat(np.arange(m) * 10 + 5, sizes)  # labels, not codes
    x = rng.normal(size=len(groups))
    X = np.column_stack([np.ones_like(x), x])
    b = rng.normal(size=(m, 2)) * [1.0, 0.5]
    y = X @ [1.0, 2.0] + np.einsum("nq,nq->n", X, b[np.repeat(np.arange(m), sizes)]) + rng.normal(size=len(x))
    return X, X.copy(), y, groups


@pytest.fixture(scope="module")
def sleep():
    data = pd.read_csv(FIXTURES / "sleepstudy.csv")
    X = np.column_stack([np.ones(len(data)), data.Days.to_numpy(float)])
    return data, X, data.Reaction.to_numpy(float), data.Subject.to_numpy()


def test_marginal_loglik_is_the_dense_gaussian_density():
    X, Z, y, groups = _synthetic()
    rng = np.random.default_rng(1)
    params = F.Params(jnp.asarray([0.7, 1.9]), jnp.asarray([[1.3, 0.2], [0.2, 0.4]]), jnp.asarray(0.8))
    w = rng.uniform(0.5, 2.0, len(y))
    dense = 0.0
    for g in np.unique(groups):
        at = groups == g
        V = Z[at] @ np.asarray(params.cov_re) @ Z[at].T + np.diag(float(params.sigma2) / w[at])
        dense += sps.multivariate_normal(X[at] @ np.asarray(params.beta), V).logpdf(y[at])
    # The precision-weighted density with n = Σw observations and without ½Σlog w (see marginal_loglik).
    ours = F.marginal_loglik(params, F.group_data(X, Z, y, groups, weights=w))
    shift = -0.5 * np.sum(np.log(w)) - 0.5 * (w.sum() - len(w)) * np.log(2 * np.pi * float(params.sigma2))
    assert float(ours) == pytest.approx(dense + shift, rel=1e-12)
    plain = F.marginal_loglik(params, F.group_data(X, Z, y, groups))
    unweighted = sum(sps.multivariate_normal(X[g == groups] @ np.asarray(params.beta),
                                             Z[g == groups] @ np.asarray(params.cov_re) @ Z[g == groups].T
                                             + float(params.sigma2) * np.eye(np.sum(g == groups))).logpdf(y[g == groups])
                     for g in np.unique(groups))
    assert float(plain) == pytest.approx(unweighted, rel=1e-12)
    # A zero variance (singular Σ) is allowed.
    singular = params._replace(cov_re=jnp.asarray([[1.3, 0.0], [0.0, 0.0]]))
    assert np.isfinite(float(F.marginal_loglik(singular, F.group_data(X, Z, y, groups))))


def test_marginal_loglik_at_the_estimates_is_the_fits_log_likelihood(sleep):
    data, X, y, groups = sleep
    r = jaxhlm.fit("Reaction ~ Days + (1 + Days | Subject)", data)
    order = [list(r.design.re_names).index(n) for n in ("_cons", "Days")]
    params = F.Params(jnp.asarray(r.fe_params[["Intercept", "Days"]].to_numpy()),
                      jnp.asarray(r.cov_re.to_numpy()[np.ix_(order, order)]), jnp.asarray(r.scale))
    gd = F.group_data(X, X, y, groups)
    assert float(F.marginal_loglik(params, gd)) == pytest.approx(r.llf, abs=1e-8)
    b, V = F.random_effects(params, gd)
    np.testing.assert_allclose(b, r.ranef()[["_cons", "Days"]].to_numpy(), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(V, r.ranef_cov()[:, order][:, :, order], rtol=1e-8)
    # Predictions: a seen group gets its BLUP, an unseen one (code -1) none.
    codes = F.group_codes(np.unique(groups), np.array([groups[0], -7]))
    assert codes.tolist() == [0, -1]
    pred = F.predict(params, b, X[:2], X[:2], codes)
    assert float(pred[0]) == pytest.approx(r.fittedvalues[0], rel=1e-10)
    assert float(pred[1]) == pytest.approx(float(X[1] @ params.beta), rel=1e-12)


def test_derivatives_match_finite_differences():
    """grad of marginal_loglik in the parameters and in X, y, Z, weights and group weights; of the profiled
    deviance in θ and in X and y (through group_stats), forward and reverse mode."""
    X, Z, y, groups = _synthetic()
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(y))
    v = np.linspace(0.5, 1.5, 8)
    params = F.Params(jnp.asarray([0.7, 1.9]), jnp.asarray([[1.3, 0.2], [0.2, 0.4]]), jnp.asarray(0.8))

    def ll(params, X, Z, y, w, v):
        return F.marginal_loglik(params, F.group_data(X, Z, y, groups, weights=w, group_weights=v))

    check_grads(ll, (params, X, Z, y, w, v), order=1, modes=("fwd", "rev"), eps=1e-5, atol=1e-6, rtol=1e-6)

    def blups(params, y):
        return F.random_effects(params, F.group_data(X, Z, y, groups))

    check_grads(blups, (params, y), order=1, modes=("fwd", "rev"), eps=1e-5, atol=1e-6, rtol=1e-6)
    b = blups(params, y)[0]
    codes = np.array([0, 3, -1, 7])
    check_grads(lambda p, b, X: F.predict(p, b, X, Z[:4], codes), (params, b, X[:4]), order=1,
                modes=("fwd", "rev"), eps=1e-5, atol=1e-6, rtol=1e-6)

    theta = jnp.asarray([1.1, 0.3, 0.6])
    dev = lambda th, X, y, reml: jaxhlm.profiled_deviance(  # noqa: E731
        th, F.group_stats(F.group_data(X, Z, y, groups)), None, reml)
    for reml in (False, True):
        check_grads(lambda th, X, y: dev(th, X, y, reml), (theta, X, y), order=1, modes=("fwd", "rev"),
                    eps=1e-5, atol=1e-6, rtol=1e-6)
    check_grads(lambda th: dev(th, X, y, False), (theta,), order=2, modes=("fwd", "rev"), eps=1e-4, rtol=1e-4)


def test_functions_jit_and_vmap():
    X, Z, y, groups = _synthetic()
    params = F.Params(jnp.asarray([0.7, 1.9]), jnp.asarray([[1.3, 0.2], [0.2, 0.4]]), jnp.asarray(0.8))
    Y = y + np.random.default_rng(3).normal(size=(3, len(y)))
    data = [F.group_data(X, Z, yk, groups) for yk in Y]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *data)

    looped = [float(F.marginal_loglik(params, d)) for d in data]
    np.testing.assert_allclose(jax.vmap(F.marginal_loglik, in_axes=(None, 0))(params, stacked), looped, rtol=1e-13)
    np.testing.assert_allclose(jax.jit(F.marginal_loglik)(params, data[0]), looped[0], rtol=1e-13)

    fits = [F.fit_arrays(d) for d in data]
    batched = jax.vmap(F.fit_arrays)(stacked)
    np.testing.assert_allclose(batched.beta, np.stack([f.beta for f in fits]), rtol=1e-8)
    np.testing.assert_allclose(batched.deviance, [f.deviance for f in fits], rtol=1e-12)
    np.testing.assert_allclose(jax.jit(F.fit_arrays)(data[0]).theta, fits[0].theta, rtol=1e-8)
    np.testing.assert_allclose(F.Params.from_fit(batched).cov_re[2], F.Params.from_fit(fits[2]).cov_re, rtol=1e-8)

    per_y = jax.vmap(lambda yk: F.group_data(X, Z, yk, groups))(jnp.asarray(Y))  # group_data vmaps over arrays
    np.testing.assert_array_equal(per_y.y, stacked.y)
    b, V = jax.vmap(F.random_effects, in_axes=(None, 0))(params, stacked)
    assert b.shape == (3, 8, 2) and V.shape == (3, 8, 2, 2)
    np.testing.assert_allclose(b[1], F.random_effects(params, data[1])[0], rtol=1e-12)

    # group_data inside jit: arrays may be traced, groups may not.
    traced = jax.jit(lambda y: F.marginal_loglik(params, F.group_data(X, Z, y, groups)))(y)
    assert float(traced) == pytest.approx(float(F.marginal_loglik(params, F.group_data(X, Z, y, groups))), rel=1e-13)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda g: F.group_data(X, Z, y, g))(groups)
    with pytest.raises(ValueError, match="X has 3 rows"):
        F.group_data(X[:3], Z, y, groups)
    with pytest.raises(ValueError, match="one entry per group"):
        F.group_data(X, Z, y, groups, group_weights=np.ones(3))


def test_fit_arrays_is_the_fit_and_matches_lme4_with_weights(sleep):
    data, X, y, groups = sleep
    r = jaxhlm.fit("Reaction ~ Days + (1 + Days | Subject)", data)
    f = F.fit_arrays(F.group_data(X, X, y, groups))
    assert -0.5 * float(f.deviance) == pytest.approx(r.llf, abs=1e-8)
    np.testing.assert_allclose(f.beta, r.fe_params[["Intercept", "Days"]], rtol=1e-8)
    assert bool(jaxhlm.optimize.converged(f.solution.result, f.solution.decrement))

    ref = json.loads((FIXTURES / "lme4_ranef.json").read_text())["weighted"]
    w = np.asarray(ref["weights"])
    fw = F.fit_arrays(F.group_data(X, X, y, groups, weights=w))
    P = F.Params.from_fit(fw)
    np.testing.assert_allclose(fw.beta, ref["beta"], rtol=1e-6)
    assert float(fw.sigma2) == pytest.approx(ref["sigma2"], rel=1e-5)
    np.testing.assert_allclose(P.cov_re, ref["cov_re"], rtol=1e-5, atol=1e-5 * np.abs(ref["cov_re"]).max())
    # lme4's log likelihood of precision-weighted data includes ½Σlog w; jaxhlm's weighted one leaves it out.
    assert -0.5 * float(fw.deviance) + 0.5 * np.sum(np.log(w)) == pytest.approx(ref["loglik"], abs=1e-6)


def test_group_weights_duplicate_or_remove_a_group():
    """Group weight 2 = the group twice (as two groups); group weight 0 = the group left out."""
    X, Z, y, groups = _synthetic(seed=4)
    v = np.ones(8)
    v[2], v[5] = 2.0, 0.0
    weighted = F.fit_arrays(F.group_data(X, Z, y, groups, group_weights=v))
    g2, g5 = np.unique(groups)[[2, 5]]
    twice = np.concatenate([np.flatnonzero(groups != g5), np.flatnonzero(groups == g2)])
    labels = np.where(np.arange(len(twice)) >= np.sum(groups != g5), -1, groups[twice])
    explicit = F.fit_arrays(F.group_data(X[twice], Z[twice], y[twice], labels))
    assert float(weighted.deviance) == pytest.approx(float(explicit.deviance), rel=1e-10)
    np.testing.assert_allclose(weighted.beta, explicit.beta, rtol=1e-7)
    np.testing.assert_allclose(weighted.sigma2, explicit.sigma2, rtol=1e-7)


def test_implicit_derivatives_match_finite_differences_of_refits():
    """d(θ̂, β̂, σ̂²) in directions of y, X, observation weights and group weights by jvp (ML; REML in y), and
    by vjp, against central differences of complete refits."""
    X, Z, y, groups = _synthetic(seed=5, m=12)
    rng = np.random.default_rng(6)
    w0, v0 = np.ones(len(y)), np.ones(12)

    def estimates(X, y, w, v, reml=False):
        f = F.fit_arrays(F.group_data(X, Z, y, groups, weights=w, group_weights=v), reml=reml)
        return jnp.concatenate([f.theta, f.beta, f.sigma2[None]])

    primal = (X, y, w0, v0)
    direction = tuple(rng.normal(size=np.shape(a)) for a in primal)
    h = 1e-4
    for k, reml in [(0, False), (1, False), (2, False), (3, False), (1, True)]:  # one argument at a time
        assert np.all(np.asarray(estimates(*primal, reml)[:3]) != 0)  # an interior optimum: every θ free
        d = tuple(direction[i] if i == k else np.zeros_like(a) for i, a in enumerate(primal))
        plus = estimates(*(a + h * da for a, da in zip(primal, d)), reml)
        minus = estimates(*(a - h * da for a, da in zip(primal, d)), reml)
        fd = (plus - minus) / (2 * h)
        _, jvp = jax.jvp(lambda *a: estimates(*a, reml), primal, tuple(jnp.asarray(x) for x in d))
        np.testing.assert_allclose(jvp, fd, rtol=2e-5, atol=2e-6 * float(jnp.max(jnp.abs(fd))))
    # Reverse mode agrees with forward mode: <u, J d> = <Jᵀu, d>.
    u = rng.normal(size=6)
    _, jvp = jax.jvp(estimates, primal, tuple(jnp.asarray(x) for x in direction))
    _, pullback = jax.vjp(estimates, *primal)
    back = pullback(jnp.asarray(u))
    assert float(u @ jvp) == pytest.approx(sum(float(jnp.vdot(b, d)) for b, d in zip(back, direction)), rel=1e-9)


def test_implicit_derivative_at_a_boundary_optimum_holds_the_zero_variance():
    """No group variation: the variance is 0 (a singular fit); its derivative is 0, and β̂'s is OLS's."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(10), 6)
    x = rng.normal(size=60)
    X = np.column_stack([np.ones(60), x])
    y = 1.0 + 0.5 * x + rng.normal(size=60)
    y = y - (np.bincount(groups, y) / 6)[groups] + y.mean()  # group means all equal: var(_cons) -> 0
    Z = np.ones((60, 1))

    def estimates(y):
        f = F.fit_arrays(F.group_data(X, Z, y, groups))
        return jnp.concatenate([f.theta, f.beta])

    at = estimates(y)
    assert float(at[0]) == 0.0
    J = jax.jacrev(estimates)(y)
    np.testing.assert_array_equal(J[0], 0.0)
    np.testing.assert_allclose(J[1:], np.linalg.pinv(X), rtol=1e-8, atol=1e-12)

"""Robust (sandwich) standard errors, Stata's ``vce(robust)`` and ``vce(cluster var)``.

The fixed effects' block against clubSandwich's ``vcovCR(type = "CR1")`` on lme4 and nlme ML fits
(``Rscript tests/fixtures/robust_reference.R``; versions in the JSON). The variance parameters' block, which no
package here computes, against the same sandwich built from each cluster's score of a dense log likelihood (each
cluster's V written out, rows and all) taken by central differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.errors import JaxhlmError

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "robust_reference.json").read_text())


def _hsb() -> pd.DataFrame:
    hsb = jaxhlm.datasets.hsb()
    return hsb.assign(cl=(hsb["id"].rank(method="dense").astype(int) - 1) // 10)


DATA = {"hsb": _hsb, "sleep": lambda: pd.read_csv(FIXTURES / "sleepstudy.csv"),
        "three": lambda: pd.read_csv(FIXTURES / "three_level.csv"), "ar1": lambda: pd.read_csv(FIXTURES / "ar1.csv")}
AR1 = {"residuals": "ar1", "time": "time"}
#: reference name → (data, formula, cluster column, the fit's other options)
MODELS = {"hsb_intercept_ml": ("hsb", "mathach ~ ses + sector + (1 | id)", None, {}),
          "hsb_slope_ml": ("hsb", "mathach ~ ses * sector + (1 + ses | id)", None, {}),
          "hsb_cluster_ml": ("hsb", "mathach ~ ses + sector + (1 | id)", "cl", {}),
          "sleep_slope_ml": ("sleep", "Reaction ~ Days + (1 + Days | Subject)", None, {}),
          "three_level_ml": ("three", "score ~ ses + (1 | school/class)", "school", {}),
          "ar1_intercept_ml": ("ar1", "y ~ time + x + (1 | id)", None, AR1),
          "exchangeable_slope_ml": ("ar1", "y ~ time + x + (0 + time | id)", None, {"residuals": "exchangeable"}),
          "hsb_by_sector_ml": ("hsb", "mathach ~ ses + sector + (1 | id)", None, {"residuals_by": "sector"}),
          "three_level_by_female_ml": ("three", "score ~ ses + (1 | school/class)", "school",
                                       {"residuals_by": "female"})}


def _fit(name: str, vce: str = "robust") -> jaxhlm.MixedResult:
    data, formula, cluster, options = MODELS[name]
    return jaxhlm.fit(formula, DATA[data](), vce=vce, cluster=cluster if vce == "robust" else None, **options)


@pytest.mark.parametrize("name", list(MODELS))
def test_fixed_effects_match_clubsandwich(name):
    ref = REF[name]
    m = _fit(name)
    assert m.llf == pytest.approx(ref["loglik"], abs=1e-6)
    np.testing.assert_allclose(m.fe_params, ref["beta"], rtol=1e-6)
    # measured: 2e-7 at most; 8e-7 on ar1_intercept_ml, where nlme stops 1.6e-10 below the optimum in log likelihood
    np.testing.assert_allclose(m.cov_params(), ref["vcov_robust"], rtol=1e-6)
    assert m.robust.count == ref["clusters"]
    # the model-based covariance is what the sandwich wraps, and the same as a fit without vce's
    np.testing.assert_allclose(_fit(name, vce="oim").cov_params(), ref["vcov_model"], rtol=1e-5)
    # every test of the fixed effects takes the robust covariance: the model's Wald test, test, lincom
    slopes = [c for c in m.fe_params.index if c != "Intercept"]
    b, V = m.fe_params[slopes].to_numpy(), m.cov_params().loc[slopes, slopes].to_numpy()
    assert m.wald.statistic == pytest.approx(b @ np.linalg.solve(V, b), rel=1e-10)
    assert m.test(slopes).statistic == pytest.approx(m.wald.statistic, rel=1e-10)
    assert m.lincom(slopes[0]).se == pytest.approx(np.sqrt(V[0, 0]), rel=1e-10)


def _dense_scores(m: jaxhlm.MixedResult, data: pd.DataFrame, clusters: np.ndarray, V_of, h: float = 1e-5
                  ) -> np.ndarray:
    """Each cluster's score in φ of its dense log likelihood at β̂ (central differences of
    −½(n log 2π + log|V| + rᵀV⁻¹r), V = ``V_of(rows, φ)`` the cluster's rows' covariance written out)."""
    X = np.column_stack([np.ones(len(data))] + [data[c].to_numpy() for c in m.fe_params.index[1:]])
    r = data[m.spec.response].to_numpy() - X @ m.fe_params.to_numpy()
    phi = m.random_effects.phi

    def loglik(rows: np.ndarray, p: np.ndarray) -> float:
        V = V_of(rows, p)
        return -0.5 * (len(rows) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r[rows] @ np.linalg.solve(V, r[rows]))

    G = []
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        step = np.eye(len(phi)) * h
        G.append([(loglik(rows, phi + e) - loglik(rows, phi - e)) / (2 * h) for e in step])
    return np.array(G)


def _sandwich(model: jaxhlm.MixedResult, G: np.ndarray) -> np.ndarray:
    M = len(G)
    V = model.random_effects.phi_cov
    return V @ (M / (M - 1) * G.T @ G) @ V


def test_variance_parameters_sandwich_of_dense_scores():
    """A random intercept and slope (φ = ln sd(Days), ln sd(_cons), atanh r, ln σ) and a three-level model (φ = ln
    sd of schools, of classes, ln σ): the robust covariance of φ̂ is the model-based one around the dense
    scores' meat, and the table's SEs follow from it by the delta method."""
    sleep = DATA["sleep"]()
    m, oim = _fit("sleep_slope_ml"), _fit("sleep_slope_ml", vce="oim")
    assert m.random_effects.labels[:3] == ("var(Days)", "var(_cons)", "cov(Days,_cons)")

    def sigma_sleep(p: np.ndarray) -> np.ndarray:
        sd = np.exp(p[:2])
        R = np.array([[1.0, np.tanh(p[2])], [np.tanh(p[2]), 1.0]])
        return sd[:, None] * R * sd[None, :]

    def v_sleep(rows: np.ndarray, p: np.ndarray) -> np.ndarray:
        Z = np.column_stack([sleep["Days"].to_numpy()[rows], np.ones(len(rows))])
        return Z @ sigma_sleep(p) @ Z.T + np.exp(2 * p[-1]) * np.eye(len(rows))

    G = _dense_scores(m, sleep, sleep["Subject"].to_numpy(), v_sleep)
    np.testing.assert_allclose(m.random_effects.phi_cov, _sandwich(oim, G), rtol=1e-6)
    var_days = m.random_effects.estimate[0]  # var = sd², so SE(var) = 2 var SE(ln sd)
    assert m.random_effects.se[0] == pytest.approx(2 * var_days * np.sqrt(m.random_effects.phi_cov[0, 0]), rel=1e-10)
    assert m.random_effects.se[0] != pytest.approx(oim.random_effects.se[0], rel=1e-2)

    three = DATA["three"]()
    m, oim = _fit("three_level_ml"), _fit("three_level_ml", vce="oim")
    school, klass = three["school"].to_numpy(), three["class"].to_numpy()

    def v_three(rows: np.ndarray, p: np.ndarray) -> np.ndarray:
        same_class = klass[rows][:, None] == klass[rows][None, :]
        return np.exp(2 * p[0]) + np.exp(2 * p[1]) * same_class + np.exp(2 * p[2]) * np.eye(len(rows))

    G = _dense_scores(m, three, school, v_three)
    np.testing.assert_allclose(m.random_effects.phi_cov, _sandwich(oim, G), rtol=1e-6)


def test_residual_structures_sandwich_of_dense_scores():
    """AR(1) residuals beside a random intercept, φ = (ln sd, atanh ρ, ln σ): each subject's V = sd²11ᵀ +
    σ²ρ^|s−t| written out; and a residual variance per sector, φ = (ln sd, ln σ₀, ln σ₁): each school's V =
    sd²11ᵀ + diag(σₛ²). The fixed effects' block is clubSandwich's (test above)."""
    d = DATA["ar1"]()
    m, oim = _fit("ar1_intercept_ml"), _fit("ar1_intercept_ml", vce="oim")
    assert m.random_effects.labels == ("var(_cons)", "rho(Residual)", "var(Residual)")
    time = d["time"].to_numpy()

    def v_ar1(rows: np.ndarray, p: np.ndarray) -> np.ndarray:
        lag = np.abs(time[rows][:, None] - time[rows][None, :])
        return np.exp(2 * p[0]) + np.exp(2 * p[2]) * np.tanh(p[1]) ** lag

    G = _dense_scores(m, d, d["id"].to_numpy(), v_ar1)
    np.testing.assert_allclose(m.random_effects.phi_cov, _sandwich(oim, G), rtol=1e-6)
    assert "Residual: AR(1)" in str(m) and "(Std. err. adjusted for 80 clusters in id)" in str(m)

    hsb = DATA["hsb"]()
    m, oim = _fit("hsb_by_sector_ml"), _fit("hsb_by_sector_ml", vce="oim")
    sector = hsb["sector"].to_numpy()

    def v_by(rows: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.exp(2 * p[0]) + np.diag(np.exp(2 * p[1 + sector[rows]]))

    G = _dense_scores(m, hsb, hsb["id"].to_numpy(), v_by)
    np.testing.assert_allclose(m.random_effects.phi_cov, _sandwich(oim, G), rtol=1e-6)


def test_a_singular_fit_has_the_ordinary_least_squares_sandwich():
    """With the groups' variance at 0, V = σ²I: the fixed effects' sandwich is least squares' clustered one,
    (XᵀX)⁻¹ Σ_c X_cᵀe_c e_cᵀX_c (XᵀX)⁻¹ M/(M − 1); the variance parameters have no information, so no SEs."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(30), 5)
    x = rng.normal(size=150)
    data = pd.DataFrame({"y": 1 + 2 * x + rng.normal(size=150), "x": x, "g": g})
    m = jaxhlm.fit("y ~ x + (1 | g)", data, vce="robust")
    assert m.singular and np.all(np.isnan(m.bse.iloc[2:]))
    X = np.column_stack([np.ones(150), x])
    e = data["y"].to_numpy() - X @ m.fe_params.to_numpy()
    scores = np.array([X[g == c].T @ e[g == c] for c in range(30)])
    bread = np.linalg.inv(X.T @ X)
    np.testing.assert_allclose(m.cov_params(), bread @ (30 / 29 * scores.T @ scores) @ bread, rtol=1e-8)


def test_stata_syntax_and_report():
    hsb = DATA["hsb"]()
    m = jaxhlm.mixed("mathach ses sector || id:, vce(robust)", hsb)
    ref = REF["hsb_intercept_ml"]
    np.testing.assert_allclose(m.cov_params().loc[["ses", "sector", "_cons"], ["ses", "sector", "_cons"]],
                               np.array(ref["vcov_robust"])[np.ix_([1, 2, 0], [1, 2, 0])], rtol=1e-5)
    text = str(m)
    # the title names no method with robust standard errors, as a Stata 17 log of mixed ..., vce(cluster) shows
    assert text.splitlines()[1].startswith("Mixed-effects regression                        Number of obs")
    assert "Log pseudolikelihood = -23303.218" in text
    assert ("                                   (Std. err. adjusted for 160 clusters in id)\n"
            "------------------------------------------------------------------------------\n"
            "             |               Robust\n"
            "     mathach | Coefficient  std. err.      z    P>|z|     [95% conf. interval]\n") in text
    assert "         ses |   2.377097   .1192652    19.93   0.000" in text
    assert "  Random-effects parameters  |   Estimate   std. err.     [95% conf. interval]" in text
    assert "LR test vs. linear model" not in text
    clustered = jaxhlm.mixed("mathach ses sector || id:, vce(cl cl)", hsb)
    np.testing.assert_allclose(clustered.bse_fe[["ses", "sector", "_cons"]],
                               np.sqrt(np.diag(REF["hsb_cluster_ml"]["vcov_robust"]))[[1, 2, 0]], rtol=1e-5)
    assert "(Std. err. adjusted for 16 clusters in cl)" in str(clustered)
    assert jaxhlm.mixed("mathach ses sector || id:, vce(oim)", hsb).robust is None
    doc = clustered.to_dict()
    assert doc["vce"] == "robust" and doc["clusters"] == {"cl": 16}
    assert doc["fixed"]["sector"]["se"] == pytest.approx(clustered.bse_fe["sector"], rel=1e-12)


def test_frequency_weights_give_the_expanded_datas_sandwich():
    """A row with frequency weight f stands for f identical rows of its group: the clusters and their scores are
    the expanded data's."""
    hsb = DATA["hsb"]().assign(f=lambda d: 1 + d.index % 3)
    weighted = jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, vce="robust", freq_weights="f")
    expanded = jaxhlm.fit("mathach ~ ses + (1 | id)", hsb.loc[hsb.index.repeat(hsb["f"])], vce="robust")
    np.testing.assert_allclose(weighted.bse, expanded.bse, rtol=1e-7)
    assert weighted.robust == expanded.robust


def test_command_line(tmp_path, capsys):
    from jaxhlm.cli import main

    path = tmp_path / "hsb.csv"
    DATA["hsb"]().to_csv(path, index=False)
    assert main(["fit", "mathach ~ ses + sector + (1 | id)", "--data", str(path), "--vce", "robust", "--cluster", "cl",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["clusters"] == {"cl": 16}
    assert doc["fixed"]["sector"]["se"] == pytest.approx(np.sqrt(REF["hsb_cluster_ml"]["vcov_robust"][2][2]), rel=1e-5)


def test_refusals():
    hsb = DATA["hsb"]()
    with pytest.raises(JaxhlmError, match="need ML estimation"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, reml=True, vce="robust")
    with pytest.raises(JaxhlmError, match="cannot be combined with robust"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, dfmethod="satterthwaite", vce="robust")
    with pytest.raises(JaxhlmError, match="vce='robust'"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, cluster="cl")
    with pytest.raises(JaxhlmError, match="vce\\(sandwich\\) is not available"):
        jaxhlm.mixed("mathach ses || id:, vce(sandwich)", hsb)
    with pytest.raises(JaxhlmError, match="more than one cluster of 'sector'"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb.assign(sector=np.arange(len(hsb)) % 2), vce="robust",
                   cluster="sector")
    with pytest.raises(JaxhlmError, match="one cluster of 'one'"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb.assign(one=1), vce="robust", cluster="one")
    with pytest.raises(JaxhlmError, match="cluster variable 'district' not found"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, vce="robust", cluster="district")
    with pytest.raises(JaxhlmError, match="crossed random effects leave none"):
        jaxhlm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", jaxhlm.datasets.penicillin(), vce="robust")
    robust = jaxhlm.fit("mathach ~ ses + (1 | id)", hsb, vce="robust")
    oim = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", hsb)
    with pytest.raises(JaxhlmError, match="not valid for tests when the standard errors are robust"):
        jaxhlm.lrtest(robust, oim)
    with pytest.raises(JaxhlmError, match="not valid for tests when the standard errors are robust"):
        jaxhlm.drop1(robust)
    with pytest.raises(JaxhlmError, match="cannot be combined with robust"):
        robust.satterthwaite()
    with pytest.raises(JaxhlmError, match="profile-likelihood intervals invert the likelihood-ratio test"):
        robust.conf_int(method="profile")
    with pytest.raises(JaxhlmError, match="parametric-bootstrap intervals draw from the fitted model"):
        robust.varcorr(method="bootstrap", B=10)
    # a cluster column with missing values: those rows leave the sample, counted, as any variable's
    holes = hsb.assign(cl=hsb["cl"].where(hsb.index % 100 != 0))
    m = jaxhlm.fit("mathach ~ ses + (1 | id)", holes, vce="robust", cluster="cl")
    assert m.nobs == len(hsb) - 72


@pytest.mark.parametrize("model", json.loads((FIXTURES / "gllamm_sleepstudy_robust.json").read_text())["models"],
                         ids=lambda m: m["mixed"])
def test_gllamm_robust_standard_errors(model):
    """Stata's gllamm with unit sampling weights gives robust standard errors of the variance components too (the
    clubSandwich reference above has the fixed effects' only). gllamm integrates by adaptive quadrature,
    differentiates numerically and stops at its convergence tolerance: its variances are 5.2e-6 from the optimum
    (lme4's and ours; the log likelihood the same to the printed digits). Measured: fixed effects to 3.9e-7
    relative (7 printed digits), variances to 5.2e-6, standard errors to 2.3e-6."""
    m = jaxhlm.mixed(model["mixed"], DATA["sleep"]())
    assert m.llf == pytest.approx(model["loglik"], abs=5e-6)
    for key, scale in (("beta", 1e-6), ("variances", 1e-5), ("bse", 5e-6), ("variances_se", 5e-6)):
        ours = (m.bse if key.endswith("se") else m.params)[list(model[key])]
        np.testing.assert_allclose(ours, list(model[key].values()), rtol=scale, err_msg=key)


def test_repeated_index_labels():
    """Rows are looked up by place: labels repeated by pd.concat give the same clustered sandwich."""
    hsb = _hsb()
    repeated = pd.concat([hsb.iloc[:3000], hsb.iloc[3000:].set_axis(np.arange(len(hsb) - 3000))])
    assert repeated.index.has_duplicates
    a = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", repeated, vce="robust", cluster="cl")
    b = jaxhlm.fit("mathach ~ ses + sector + (1 | id)", hsb, vce="robust", cluster="cl")
    np.testing.assert_allclose(a.cov_params(), b.cov_params(), rtol=1e-10)
    assert a.robust.count == 16

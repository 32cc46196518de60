"""Inference at the optimum, by the conventions of Stata's ``mixed`` (ML and REML).

* Fixed effects: SE from (XᵀV⁻¹X)⁻¹ with the variance parameters held fixed (not the inverse full Hessian,
  which inflates them), z = b/SE, normal p-values and CIs; or t and F tests on Satterthwaite's degrees of
  freedom (lmerTest's computation, with exact derivatives of (XᵀV⁻¹X)⁻¹ in φ).
* Variance components: V_φ = inverse observed information of the β-profiled log likelihood in
  φ = (ln sd, atanh r, ln σ); SEs by the delta method; CIs for variances on the log scale
  (est·exp(∓z·SE/est)) and for covariances symmetric (est ∓ z·SE).
* Where the optimum is singular the information of φ does not exist: a correlation at ±1 in a 2×2 block is
  held fixed at the boundary (the other SEs are conditional on it), any other singular Σ (a zero variance,
  a rank-deficient 3×3 Σ with interior correlations) leaves the SEs missing with a warning.
* Robust (sandwich) standard errors, Stata's ``vce(robust)`` and ``vce(cluster)``: the same two blocks, each
  D·B·D with D its model-based covariance above (the bread) and B = M/(M − 1) Σ_c g_c g_cᵀ (the meat), g_c cluster
  c's score in (β, φ) and M the clusters (:func:`cluster_meat`). The variance components' rows and everything
  derived from them follow by the same delta method.
* Derived quantities by the delta method from V_φ: the intraclass correlation (``estat icc``, interval on the
  logit scale) and the standard deviations and correlations (``estat sd``, intervals in φ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from scipy import special

from . import covariance as cov
from . import tracecache
from .errors import JaxhlmError
from .estimate import Fit, cov_beta_jacobian, kenward_roger_parts, phi_at, re_information
from .residual import INDEPENDENT, Structure
from .stats import GroupStats

Z975 = float(special.ndtri(0.975))
SE_FAILED = "Standard-error calculation failed."


@dataclass(frozen=True)
class ParameterTable:
    """Labelled estimates with SEs and CIs (the rows of a random-effects table)."""

    labels: tuple[str, ...]
    estimate: np.ndarray
    se: np.ndarray
    ci: np.ndarray  # (k, 2)


@dataclass(frozen=True)
class RandomEffects(ParameterTable):
    """The random-effects parameter table (SEs NaN where missing, 95% CIs), with what inference beyond it needs."""

    vcov: np.ndarray  # (k, k) covariance of the estimates by the delta method (NaN where SEs are missing)
    phi: np.ndarray  # Stata's metric (ln sd, atanh r, ln σ) at the optimum
    edge: np.ndarray  # ±1 where a correlation is held at ±1 (a boundary optimum), else 0
    phi_cov: np.ndarray  # inverse observed information of φ (zero rows for held coordinates; NaN where it fails)
    sigma: np.ndarray  # the q×q covariance matrix of the random effects
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    is_var: np.ndarray  # per row: a variance (coordinate ln sd; interval on the log scale)
    is_corr: np.ndarray  # per row: a correlation of the residual structure (coordinate and interval in atanh r)
    structure: Structure = INDEPENDENT  # the residual covariance structure, whose rows end the table

    @property
    def n_residual(self) -> int:
        """The rows of the residual structure (var(Residual) alone for independent residuals)."""
        return len(self.structure.kinds)


def wald_interval(estimate: np.ndarray, se: np.ndarray, is_var: np.ndarray, is_corr: np.ndarray, z: float
                  ) -> np.ndarray:
    """Stata's intervals for the random-effects table's rows: variances est·exp(∓z·SE/est) (symmetric in ln sd),
    correlations tanh(atanh r ∓ z·SE/(1 − r²)) (symmetric in atanh r), covariances est ∓ z·SE."""
    # A variance near 0 with a finite SE has an upper limit past float range: inf, without a warning.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(estimate > 0, se / estimate, np.nan)
        z_r = np.arctanh(np.where(is_corr, estimate, 0.0))
        se_r = se / (1.0 - estimate**2)
        lo = np.where(is_var, estimate * np.exp(-z * ratio), np.where(is_corr, np.tanh(z_r - z * se_r),
                                                                     estimate - z * se))
        hi = np.where(is_var, estimate * np.exp(z * ratio), np.where(is_corr, np.tanh(z_r + z * se_r),
                                                                    estimate + z * se))
    return np.column_stack([lo, hi])


def singular_blocks(blocks: cov.Structure, sigma: np.ndarray) -> list[cov.Block]:
    """The blocks whose part of Σ is singular (smallest eigenvalue at most 1e-10 of the largest)."""
    out, at = [], 0
    for b in blocks:
        w = np.linalg.eigvalsh(sigma[at:at + b.q, at:at + b.q])
        if w[0] <= 1e-10 * max(w[-1], 1e-300):
            out.append(b)
        at += b.q
    return out


def cluster_meat(scores: np.ndarray) -> np.ndarray:
    """The sandwich's meat M/(M − 1) Σ_c g_c g_cᵀ from the (M, k) scores of M independent clusters.

    M/(M − 1) is the finite-sample factor Stata applies to every clustered sandwich of a likelihood (clubSandwich
    calls the sandwich with it CR1); without it the estimator is biased down by (M − 1)/M.
    """
    M = scores.shape[0]
    return M / (M - 1) * scores.T @ scores


def random_effects(fit: Fit, data: GroupStats, blocks: cov.Structure, names: tuple[str, ...], reml: bool,
                   structure: Structure = INDEPENDENT, psi: np.ndarray | None = None,
                   residual_labels: tuple[str, ...] = ("var(Residual)",), meat: np.ndarray | None = None
                   ) -> RandomEffects:
    """The random-effects table at the optimum, its rows ending with those of the residual ``structure`` at ψ̂
    ``psi`` (``data`` what it whitens; ``residual_labels`` their names); φ, where the information is taken, ends
    with their coordinates (:class:`~jaxhlm.residual.Structure`). With the ``meat`` of a sandwich in φ
    (:func:`cluster_meat`) the covariance of φ̂ is the sandwich around the inverse information."""
    theta = np.asarray(fit.theta)
    sigma2 = float(fit.sigma2)
    sigma, phi, edge = phi_at(theta, sigma2, blocks)
    tail = np.asarray(structure.join(jnp.asarray(phi[-1]), jnp.zeros(0) if psi is None else jnp.asarray(psi)))
    phi = np.append(phi[:-1], tail)
    edge = np.append(edge[:-1], np.zeros(len(tail)))
    labels = tuple(cov.labels(blocks, names)) + tuple(residual_labels)
    warnings: list[str] = []
    notes: list[str] = []

    singular = singular_blocks(blocks, sigma)
    # A singular 2×2 unstructured block is a correlation of exactly ±1: SEs exist with it held there.
    failed = any(not (b.kind == "unstructured" and b.q == 2) for b in singular) or not np.all(np.isfinite(phi))
    if not failed and np.any(edge != 0):
        # φ coordinates and reported labels run in the same order (variances, then covariances).
        pairs = [lab for lab, e in zip(cov.labels(blocks, names), edge) if e != 0]
        notes.append(
            "Note: " + ", ".join(p.replace("cov(", "corr(") for p in pairs)
            + " estimated at the boundary (correlation ±1); the other standard errors hold it fixed there."
        )
    vcov = np.full((len(labels), len(labels)), np.nan)
    V = np.full((len(phi), len(phi)), np.nan)
    if not failed:
        info = tracecache.call(re_information, {"blocks": blocks, "reml": reml, "structure": structure},
                               jnp.asarray(phi), jnp.asarray(edge), data)
        free = edge == 0
        H = -np.asarray(info.hessian)[np.ix_(free, free)]
        w = np.linalg.eigvalsh(H) if np.all(np.isfinite(H)) else np.array([-1.0])
        if w[0] <= 1e-12 * max(abs(w[-1]), 1.0):
            failed = True
        else:
            V = np.zeros((len(phi), len(phi)))
            V[np.ix_(free, free)] = np.linalg.inv(H)
            if meat is not None:
                V = V @ meat @ V
            J = np.asarray(info.jacobian)
            vcov = J @ V @ J.T
    if failed:
        warnings.append(SE_FAILED)
    se = np.sqrt(np.clip(np.diag(vcov), 0.0, None))
    # Estimates come from θ̂ itself (exact even where φ is infinite).
    est = np.append(cov.pick(blocks, sigma), np.asarray(structure.values(jnp.asarray(tail))))
    is_var = np.append(cov.variance_mask(blocks), structure.is_var)
    is_corr = np.append(np.zeros(len(phi) - len(tail), bool), np.asarray(structure.kinds) == "corr")
    return RandomEffects(labels, est, se, wald_interval(est, se, is_var, is_corr, Z975), vcov, phi, edge, V, sigma,
                         tuple(warnings), tuple(notes), is_var, is_corr, structure)


def sd_corr(re: RandomEffects, blocks: cov.Structure, alpha: float = 0.05) -> ParameterTable:
    """The random-effects table in standard deviations and correlations (Stata's ``estat sd``).

    SEs and CIs come straight from φ = (ln sd, atanh r, ln σ), where the information matrix is taken: SE(sd) =
    sd·SE(ln sd) and SE(r) = (1 − r²)·SE(atanh r), intervals exp(ln sd ± z SE) and tanh(atanh r ± z SE). A
    correlation held at ±1 has none. A residual process' coefficient is its own coordinate: as in the variance
    table.
    """
    z = float(special.ndtri(1 - alpha / 2))
    k, is_sd = re.n_residual, re.is_var
    is_coef = np.append(np.zeros(len(re.phi) - k, bool), re.structure.is_coef)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = re.phi[-k:]  # the residual rows' coordinates: ln sd, atanh of a correlation (its own or a cov's), a coef
        est = np.append(cov.pick(blocks, cov.sd_corr_matrix(re.sigma)), np.asarray(re.structure.sd_values(tail)))
        se_phi = np.where(re.edge != 0, np.nan, np.sqrt(np.diag(re.phi_cov)))
        se = np.where(is_sd, est * se_phi, np.where(is_coef, se_phi, (1 - est**2) * se_phi))
        lo = np.where(is_sd, est * np.exp(-z * se_phi), np.where(is_coef, est - z * se_phi,
                                                                 np.tanh(np.arctanh(est) - z * se_phi)))
        hi = np.where(is_sd, est * np.exp(z * se_phi), np.where(is_coef, est + z * se_phi,
                                                                np.tanh(np.arctanh(est) + z * se_phi)))
    labels = tuple(lab.replace("var(", "sd(", 1).replace("cov(", "corr(", 1) for lab in re.labels)
    return ParameterTable(labels, est, se, np.column_stack([lo, hi]))


def intraclass(re: RandomEffects, ks: Sequence[int], shared: Sequence[int], alpha: float = 0.05
               ) -> tuple[float, float, float, float]:
    """(ICC, SE, CI low, CI high) for ICC = Σ_{k ∈ shared} v_k / (Σ_{k ∈ ks} v_k + σ²), v_k the reported
    estimates ``ks`` (the levels' intercept variances): the correlation of two responses that share the groups
    of the levels whose variances are ``shared`` (a subset of ``ks``).

    As Stata's ``estat icc``: the SE by the delta method from the estimates' covariance, and the interval on the
    logit scale (it stays inside (0, 1), where a symmetric one need not).
    """
    v, s2 = re.estimate[list(ks)], re.estimate[-1]
    num, den = re.estimate[list(shared)].sum(), v.sum() + s2
    icc = num / den
    g = np.zeros(len(re.estimate))
    g[list(ks)] = -num / den**2
    g[list(shared)] += 1.0 / den
    g[-1] = -num / den**2
    se = float(np.sqrt(max(g @ re.vcov @ g, 0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        logit, half = np.log(icc / (1 - icc)), float(special.ndtri(1 - alpha / 2)) * se / (icc * (1 - icc))
    return float(icc), se, float(special.expit(logit - half)), float(special.expit(logit + half))


class VarianceDecomposition(NamedTuple):
    """The response's variance split into what the fixed effects, the random effects and the residual explain
    (Nakagawa and Schielzeth 2013; Johnson 2014 for random slopes), and the R² made of it."""

    var_fixed: float  # the sample variance of the fixed-effect predictions Xβ̂
    var_random: float  # the random effects' variance, averaged over the rows: mean of zᵢᵀΣzᵢ
    var_residual: float  # σ̂²

    @property
    def marginal(self) -> float:
        """The share of the fixed effects: var_fixed / total."""
        return self.var_fixed / (self.var_fixed + self.var_random + self.var_residual)

    @property
    def conditional(self) -> float:
        """The share of the fixed and random effects together: (var_fixed + var_random) / total."""
        return (self.var_fixed + self.var_random) / (self.var_fixed + self.var_random + self.var_residual)


def variance_decomposition(X: np.ndarray, Z: np.ndarray, beta: np.ndarray, sigma: np.ndarray, sigma2: float,
                           freq: np.ndarray | None = None) -> VarianceDecomposition:
    """:class:`VarianceDecomposition` over the rows X (N, p), Z (N, q) (every level's random effects, Σ their
    block-diagonal covariance), each row counted ``freq`` times if given.

    Why the mean of zᵢᵀΣzᵢ: with random slopes the random effects' variance differs from row to row (it grows
    with the slope's variable), and its mean over the sample is Johnson's (2014) extension, the one R's
    ``performance::r2_nakagawa`` and ``MuMIn::r.squaredGLMM`` report. The fixed part's variance is the sample
    variance (denominator N − 1), as theirs.
    """
    f = np.ones(len(X)) if freq is None else np.asarray(freq, dtype=float)
    n = f.sum()
    xb = X @ beta
    mean = f @ xb / n
    var_fixed = float(f @ (xb - mean) ** 2 / (n - 1))
    var_random = float(f @ np.einsum("ia,ab,ib->i", Z, sigma, Z) / n)
    return VarianceDecomposition(var_fixed, var_random, float(sigma2))


def satterthwaite_df(L: np.ndarray, cov_beta: np.ndarray, re: RandomEffects, stats: GroupStats,
                     blocks: cov.Structure) -> np.ndarray:
    """Satterthwaite's degrees of freedom of each row l of ``L``: 2 (lᵀCl)² / (gᵀ A g), C = Cov(β̂),
    g = ∂(lᵀCl)/∂φ and A = Cov(φ̂), the inverse observed information.

    Why φ (Stata's metric) and not lmerTest's (θ, σ): at the optimum gᵀAg does not depend on the
    parameterisation (g and A transform with the same Jacobian), and φ's information is the one the
    variance-component SEs already use.
    """
    p = L.shape[1]  # the statistics may be padded to a shape bucket (exactly masked: the leading block is Cov(β̂))
    dC = np.asarray(tracecache.call(cov_beta_jacobian, {"blocks": blocks, "structure": re.structure},
                                    jnp.asarray(re.phi), jnp.asarray(re.edge), stats))[:p, :p]
    var = np.einsum("mi,ij,mj->m", L, cov_beta, L)
    g = np.einsum("mi,ijk,mj->mk", L, dC, L)
    return 2.0 * var**2 / np.einsum("mk,kl,ml->m", g, re.phi_cov, g)


@dataclass(frozen=True)
class KenwardRoger:
    """Kenward and Roger's small-sample adjustment (REML): the adjusted covariance of β̂ and what their degrees
    of freedom are computed from (pbkrtest's ``vcovAdj`` and its attributes P and W)."""

    cov_beta: np.ndarray  # Φ_A = Φ + 2Φ{Σ_kl W_kl (Q_kl − P_k Φ P_l)}Φ
    P: np.ndarray  # (k, p, p): P_k = ∂(XᵀV⁻¹X)/∂γ_k
    W: np.ndarray  # (k, k): twice the inverse expected information of γ


def kenward_roger(re: RandomEffects, cov_beta: np.ndarray, stats: GroupStats, blocks: cov.Structure
                  ) -> KenwardRoger:
    """The adjustment at the REML optimum, in γ = (the reported variances and covariances, σ²), in which V is
    linear (Kenward and Roger 1997; computed as pbkrtest computes it). Q_kl + Q_lk is ∂²(XᵀV⁻¹X)/∂γ_k∂γ_l and
    tr(V⁻¹G_kV⁻¹G_l) is −∂² log|V|/∂γ_k∂γ_l, so all of it comes from autodiff of the sufficient statistics."""
    p = cov_beta.shape[0]  # the statistics may be padded to a shape bucket (exactly masked)
    parts = tracecache.call(kenward_roger_parts, {"blocks": blocks}, jnp.asarray(re.estimate), stats)
    dM, d2M = np.asarray(parts.dM)[:p, :p], np.asarray(parts.d2M)[:p, :p]
    P = np.moveaxis(dM, 2, 0)
    Phi = cov_beta
    PPhi = P @ Phi  # (k, p, p)
    # Expected information (×2): tr(V⁻¹G_kV⁻¹G_l) − 2 tr(ΦQ_kl) + tr(ΦP_kΦP_l).
    IE2 = (-np.asarray(parts.d2logdet) - np.einsum("ij,jikl->kl", Phi, d2M)
           + np.einsum("kij,lji->kl", PPhi, PPhi))
    W = 2.0 * np.linalg.inv(IE2)
    U = np.einsum("kl,ijkl->ij", W, 0.5 * d2M) - np.einsum("kl,kij,ljm->im", W, PPhi, P)
    return KenwardRoger(Phi + 2.0 * Phi @ U @ Phi, P, W)


def _kenward_roger_df(L: np.ndarray, cov_beta: np.ndarray, kr: KenwardRoger) -> tuple[float, float]:
    """(denominator df, F scaling) of the F test of the full-rank rows L (pbkrtest's ``.KR_adjust``)."""
    q = L.shape[0]
    Theta = L.T @ np.linalg.solve(L @ cov_beta @ L.T, L)
    u = Theta @ cov_beta @ kr.P @ cov_beta  # (k, p, p)
    tr = np.trace(u, axis1=1, axis2=2)
    A1 = float(tr @ kr.W @ tr)
    A2 = float(np.einsum("kl,kij,lji->", kr.W, u, u))
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    d = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / d, (q - g) / d, (q + 2 - g) / d
    rho = ((1 - A2 / q) / (1 - c2 * B)) ** 2 * (1 + c1 * B) / (q * (1 - c3 * B))
    ddf = 4 + (q + 2) / (q * rho - 1)
    scale = 1.0 if abs(ddf - 2) < 0.01 else ddf * (1 - A2 / q) / (ddf - 2)
    return ddf, scale


def kenward_roger_df(L: np.ndarray, cov_beta: np.ndarray, kr: KenwardRoger) -> np.ndarray:
    """Kenward and Roger's degrees of freedom of each row of ``L`` as a t test (lmerTest's, via pbkrtest's
    ``Lb_ddf``); the t statistics use the adjusted covariance :attr:`KenwardRoger.cov_beta`."""
    return np.array([_kenward_roger_df(row[None], cov_beta, kr)[0] for row in L])


def kenward_roger_f(R: np.ndarray, r: np.ndarray, beta: np.ndarray, cov_beta: np.ndarray, kr: KenwardRoger
                    ) -> FTest:
    """Kenward and Roger's F test of Rβ = r (pbkrtest's ``KRmodcomp``): the Wald statistic in the adjusted
    covariance over rank R, scaled, on their denominator df. Dependent rows of R are dropped first."""
    U, _, _ = _principal(R, r, beta, cov_beta)
    L, rhs = U.T @ R, U.T @ r
    ddf, scale = _kenward_roger_df(L, cov_beta, kr)
    diff = L @ beta - rhs
    q = L.shape[0]
    F = scale * float(diff @ np.linalg.solve(L @ kr.cov_beta @ L.T, diff)) / q
    return FTest(F, q, ddf, float(special.fdtrc(q, ddf, F)), scale)


SMALL_SAMPLE_NEEDS = (
    "small-sample degrees of freedom need the covariance of the variance-component estimates, which does not "
    "exist at this fit's boundary optimum (a zero variance or a singular covariance matrix of the random "
    "effects); simplify the random part, or use the large-sample tests (no dfmethod)")


@dataclass(frozen=True)
class SmallSample:
    """t and F tests of the fixed effects on small-sample degrees of freedom, by one method, at one fit:
    ``"satterthwaite"`` (lmerTest's computation; covariance (XᵀV⁻¹X)⁻¹), ``"kroger"`` (Kenward and Roger:
    their adjusted covariance and degrees of freedom; REML) or ``"residual"`` (Stata's: N − rank(X) for every
    test, exact for a linear regression)."""

    method: str
    beta: np.ndarray
    cov_beta: np.ndarray  # (XᵀV⁻¹X)⁻¹
    re: RandomEffects
    stats: GroupStats  # what the residual structure whitens (:func:`~jaxhlm.estimate.fit_residual`)
    blocks: cov.Structure
    kr: KenwardRoger | None = None
    #: ``"residual"``'s degrees of freedom where they are not N − rank(X): a regression's with clustered standard
    #: errors have G − 1 (G clusters), as Stata's ``regress``
    ddf: float | None = None

    @property
    def vcov(self) -> np.ndarray:
        """The covariance of β̂ the tests use."""
        return self.cov_beta if self.kr is None else self.kr.cov_beta

    def df(self, L: np.ndarray) -> np.ndarray:
        """Degrees of freedom of the t test of each row of ``L``."""
        if self.method == "residual":
            return np.full(len(L), self.residual_df)
        if self.kr is None:
            return satterthwaite_df(L, self.cov_beta, self.re, self.stats, self.blocks)
        return kenward_roger_df(L, self.cov_beta, self.kr)

    @property
    def residual_df(self) -> float:
        """N − rank(X), unless :attr:`ddf` says otherwise."""
        return float(self.stats.n) - float(self.stats.p) if self.ddf is None else self.ddf

    def f_test(self, R: np.ndarray, r: np.ndarray) -> FTest:
        if self.method == "residual":
            _, w, proj = _principal(R, r, self.beta, self.cov_beta)
            F, ddf = float(np.sum(proj**2 / w)) / len(w), self.residual_df
            return FTest(F, len(w), ddf, float(special.fdtrc(len(w), ddf, F)))
        if self.kr is None:
            return satterthwaite_f(R, r, self.beta, self.cov_beta, self.re, self.stats, self.blocks)
        return kenward_roger_f(R, r, self.beta, self.cov_beta, self.kr)


def small_sample(method: str, beta: np.ndarray, cov_beta: np.ndarray, re: RandomEffects, stats: GroupStats,
                 blocks: cov.Structure) -> SmallSample:
    """:class:`SmallSample` for ``method`` (one of ``formula.DFMETHODS``); refuses a boundary optimum, where the
    variance components have no information matrix (but for ``"residual"``, which does not use it)."""
    if method != "residual" and not np.all(np.isfinite(re.phi_cov)):
        raise JaxhlmError(SMALL_SAMPLE_NEEDS)
    if method == "kroger" and re.structure != INDEPENDENT:
        raise JaxhlmError("Kenward and Roger's adjustment is computed here for independent residuals with one residual variance; "
                          "with this residual structure use dfmethod satterthwaite")
    kr = kenward_roger(re, cov_beta, stats, blocks) if method == "kroger" else None
    return SmallSample(method, beta, cov_beta, re, stats, blocks, kr)


@dataclass(frozen=True)
class ChiTest:
    """A chi-squared test: statistic, degrees of freedom, p-value (and whether it is Stata's chibar2(01))."""

    statistic: float
    df: int
    pvalue: float
    chibar: bool = False


@dataclass(frozen=True)
class FTest:
    """An F test on (df, ddf) degrees of freedom; ``scaling`` is Kenward and Roger's factor on the Wald F (1 for
    other tests)."""

    statistic: float
    df: int
    ddf: float
    pvalue: float
    scaling: float = 1.0


#: Stata's mcompare() adjustments for multiple comparisons (z tests), as its tables head their columns
MCOMPARE = {"noadjust": "Unadjusted", "bonferroni": "Bonferroni", "sidak": "Sidak", "scheffe": "Scheffe"}


def coefficient_table(beta: np.ndarray, cov_beta: np.ndarray, alpha: float = 0.05, df: np.ndarray | None = None,
                      mcompare: str = "noadjust") -> np.ndarray:
    """Columns: coef, SE, z, P>|z|, and the ``1 - alpha`` CI (low, high); with ``df`` (one per coefficient), t
    statistics with p-values and intervals from t(df) instead of the normal. ``mcompare`` adjusts the p-values and
    intervals for the k rows tested together: Bonferroni (p·k, the interval at α/k), Šidák (1 − (1 − p)ᵏ, at
    1 − (1 − α)^(1/k)) or Scheffé (simultaneous over every linear function of the rows: z² against χ²(r), or with
    ``df`` t²/r against F(r, df); r the rank of their covariance, the dimension they span)."""
    se = np.sqrt(np.diag(cov_beta))
    z = beta / se
    k = len(beta)
    if df is None:
        tail, quantile = (lambda x: 2.0 * special.ndtr(-np.abs(x))), (lambda a: special.ndtri(1 - a / 2))
    else:
        tail, quantile = (lambda x: 2.0 * special.stdtr(df, -np.abs(x))), (lambda a: special.stdtrit(df, 1 - a / 2))
    if mcompare == "scheffe":
        w = np.linalg.eigvalsh(cov_beta)
        r = int(np.sum(w > 1e-10 * w.max()))
        if df is None:
            p, q = special.chdtrc(r, z**2), np.sqrt(special.chdtri(r, alpha))
        else:
            p, q = special.fdtrc(r, df, z**2 / r), np.sqrt(r * special.fdtri(r, df, 1 - alpha))
    else:
        p, level = tail(z), alpha
        if mcompare == "bonferroni":
            p, level = np.minimum(p * k, 1.0), alpha / k
        elif mcompare == "sidak":
            p, level = -np.expm1(k * np.log1p(-p)), -np.expm1(np.log1p(-alpha) / k)
        q = quantile(level)
    return np.column_stack([beta, se, z, p, beta - q * se, beta + q * se])


def _principal(R: np.ndarray, r: np.ndarray, beta: np.ndarray, cov_beta: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R V Rᵀ's eigenvectors U with positive eigenvalues w (dependent rows of R drop out, as in Stata), and
    Uᵀ(Rβ − r): the constraints as independent directions, each with its own variance."""
    w, U = np.linalg.eigh(R @ cov_beta @ R.T)
    keep = w > 1e-12 * max(w.max(), 1e-300)
    return U[:, keep], w[keep], U[:, keep].T @ (R @ beta - r)


def linear_hypothesis(R: np.ndarray, r: np.ndarray, beta: np.ndarray, cov_beta: np.ndarray) -> ChiTest:
    """Wald test of Rβ = r: (Rβ−r)ᵀ(R V Rᵀ)⁻¹(Rβ−r) ~ χ²(rank R)."""
    _, w, proj = _principal(R, r, beta, cov_beta)
    stat = float(np.sum(proj**2 / w))
    return ChiTest(stat, len(w), float(special.chdtrc(len(w), stat)))


def satterthwaite_f(R: np.ndarray, r: np.ndarray, beta: np.ndarray, cov_beta: np.ndarray, re: RandomEffects,
                    stats: GroupStats, blocks: cov.Structure) -> FTest:
    """The F test of Rβ = r: F is the Wald statistic over rank R, and the denominator df combine Satterthwaite's
    df ν of each independent direction (Fai and Cornelius 1996, as lmerTest): E = Σ ν/(ν − 2), ddf = 2E/(E − q);
    one direction keeps its ν, equal ν their value, and any ν ≤ 2 gives 2."""
    U, w, proj = _principal(R, r, beta, cov_beta)
    q = len(w)
    F = float(np.sum(proj**2 / w)) / q
    nu = satterthwaite_df(U.T @ R, cov_beta, re, stats, blocks)
    if q == 1 or np.all(np.abs(np.diff(nu)) < 1e-8):
        ddf = float(np.mean(nu))
    elif np.any(nu <= 2):
        ddf = 2.0
    else:
        E = float(np.sum(nu / (nu - 2)))
        ddf = 2 * E / (E - q)
    return FTest(F, q, ddf, float(special.fdtrc(q, ddf, F)))


def model_wald(beta: np.ndarray, cov_beta: np.ndarray, intercept_index: int | None,
               small: "SmallSample | None" = None) -> ChiTest | FTest:
    """Joint test that every fixed effect but the intercept is zero (the header's Wald chi2), or its F test on
    small-sample degrees of freedom."""
    idx = [i for i in range(len(beta)) if i != intercept_index]
    if not idx:
        nan = float("nan")
        return ChiTest(nan, 0, nan) if small is None else FTest(nan, 0, nan, nan)
    R = np.eye(len(beta))[idx]
    if small is None:
        return linear_hypothesis(R, np.zeros(len(idx)), beta, cov_beta)
    return small.f_test(R, np.zeros(len(idx)))


def lr_vs_linear(deviance_ols: float, deviance: float, n_cov_params: int, n_residual: int = 0) -> ChiTest:
    """Stata's LR test against the linear model, the linear regression (no random effects, residuals σ²I): on the
    random effects' parameters and the residual structure's beyond σ² (Stata's chi2(7) for an unstructured 3×3 and a
    second stratum's variance); chibar2(01) for one random-effects variance alone, else chi2(k) (conservative where
    a variance is on the boundary under the null)."""
    stat = max(float(deviance_ols - deviance), 0.0)
    k = n_cov_params + n_residual
    if n_cov_params == 1 and n_residual == 0:
        return ChiTest(stat, 1, 0.5 * float(special.chdtrc(1, stat)) if stat > 0 else 1.0, chibar=True)
    return ChiTest(stat, k, float(special.chdtrc(k, stat)))

"""Fitted-model results with statsmodels-style attribute names and Stata-style reports."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import special

from . import covariance as cov
from . import _config, functional, influence, render
from .deviance import conditional_modes, level_modes, relative_factor
from .design import Design, Rows, fixed_variables, residual_data
from .errors import ComparisonError, DataError, JaxhlmError
from .factor import CONSTANT, Coef, FixedTerms, Term, term_key
from .estimate import Fit
from .formula import DFMETHOD_NAMES, DFMETHOD_PHRASES, OBSERVATIONS, ModelSpec, check_dfmethod, check_vce, droppable_terms, reducible_terms
from .infer import (ChiTest, FTest, RandomEffects, SmallSample, coefficient_table, intraclass,
                    MCOMPARE, linear_hypothesis, model_wald, sd_corr, small_sample, variance_decomposition, wald_interval)
from .optimize import RESULTS, converged
from .profile import ProfileIntervals, profile_intervals
from .residual import ByStratum, Serial, SerialRows, Strata, Unstructured
from .stats import CrossedStats, GroupStats, NestedStats, group_totals, pair_totals

if TYPE_CHECKING:
    from .batch import BatchFit

_BOUNDARY_NOTE = render.BOUNDARY_NOTE
#: Stata's lrtest after REML fits (wrapped as the boundary note is)
_REML_NOTE = ("Note: LR tests based on REML are valid only when the fixed-effects\n"
              "specification is identical for both models.")


@dataclass(frozen=True)
class Convergence:
    """The optimiser's certificate: why it stopped, how far from stationary, and the curvature there."""

    result: RESULTS
    steps: int
    grad_norm: float  # max |projected gradient of the deviance|
    decrement: float  # Newton decrement of the deviance at θ̂
    min_eig: float  # smallest Hessian eigenvalue on the free θ coordinates

    @property
    def message(self) -> str:
        return self.result.message


@dataclass(frozen=True)
class Clusters:
    """The independent clusters of robust standard errors: the variable whose values they are, and how many."""

    variable: str
    count: int


@dataclass(frozen=True, eq=False)
class MixedResult:
    """A fitted linear mixed model (two or three levels, or two crossed factors).

    Fixed effects: ``fe_params``, ``bse_fe``, ``tvalues``, ``pvalues`` (z tests; t tests on ``ddf`` for a fit
    with a ``dfmethod``), ``cov_params()``.
    All parameters (fixed, then the random-effects var/cov and ``var(Residual)``, or one residual variance per
    stratum with ``residuals_by``): ``params``, ``bse``, ``conf_int()`` (Wald, ``method="profile"`` or
    ``"bootstrap"``). Fit: ``llf``, ``aic``, ``bic``, ``nobs``, ``ngroups``, ``converged``, ``singular``.
    Postestimation: ``ic()``, ``icc()``, ``r2()``, ``varcorr()``, ``test()``, ``testparm()``, ``lincom()``,
    ``nlcom()``, ``margins()`` (predictive margins, marginal effects and their pairwise differences),
    ``contrast()`` (tests of terms, named contrasts) and ``pwcompare()`` (pairwise differences of a term's balanced
    margins), ``anova()``, ``satterthwaite()``;
    :func:`jaxhlm.drop1` and :func:`jaxhlm.ranova` refit it without each term.
    Groups: ``ranef()`` (BLUPs), ``ranef_cov()`` (their conditional covariances), ``ranef_se()`` (their standard
    errors, as Stata's reses), ``marginal_cov()`` and
    ``wcorrelation()`` (a group's response covariance and correlations), ``fittedvalues``, ``resid``,
    ``predict(data, random)`` (new data too), ``influence()`` (DFBETA, DFBETAS, Cook's distance per group).
    Fitted with ``vce="robust"`` (or with sampling weights, which imply it), every standard error and Wald test is
    the cluster-robust sandwich's and ``robust`` names the clusters (:mod:`jaxhlm.infer`).
    """

    spec: ModelSpec
    design: Design
    fit: Fit
    random_effects: RandomEffects
    wald: ChiTest | FTest  # an F test on small-sample df when the model was fitted with a dfmethod
    lr_linear: ChiTest
    convergence: Convergence
    small: SmallSample | None = None  # the fit's dfmethod, ready to test with
    #: with a residual structure beyond σ²I, its parameters ψ̂ (:class:`~jaxhlm.residual.Structure`): each
    #: stratum's ln(σₛ/σ₁) (``residuals_by``), in the strata's order, or those of residuals correlated within
    #: series (atanh ρ for AR(1); :mod:`jaxhlm.residual`)
    psi: np.ndarray | None = None
    #: with robust standard errors (``vce="robust"``), the clusters they are over; None for model-based ones
    robust: Clusters | None = None
    #: value labels of factor variables ({variable: {level: text}}): tables show those levels by them, as Stata's
    #: do (the do-file runner passes a dataset's labels on)
    value_labels: Mapping[str, Mapping[int, str]] = dataclasses.field(default_factory=dict)

    #: Stata's e(cmd): the command whose results these are (likelihood-ratio tests compare like with like)
    command: ClassVar[str] = "mixed"

    # ---- sizes ----------------------------------------------------------------------------------
    @property
    def reml(self) -> bool:
        return self.spec.reml

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def ngroups(self) -> int:
        """The outermost level's groups (none without random effects)."""
        return 0 if self.spec.linear else self.design.n_groups

    @property
    def group_sizes(self) -> dict[str, float]:
        s = self.design.group_sizes
        return {"min": int(s.min()), "avg": float(s.mean()), "max": int(s.max())}

    def group_info(self) -> pd.DataFrame:
        """Stata's ``estat group``: per grouping level, outermost first, the number of groups and the fewest,
        average and most observations in a group."""
        self._grouped("estat group")
        d = self.design
        sizes, names = list(d.level_sizes), list(d.level_names)
        if d.inner is None and d.n_clusters:  # an inner level without random effects: the series it names
            sizes.append(np.asarray(d.serial.live).sum(axis=1))
            names.append(self.spec.levels[1])
        return pd.DataFrame([(len(s), int(s.min()), float(s.mean()), int(s.max())) for s in sizes],
                            index=pd.Index(names, name="level"), columns=["groups", "min", "avg", "max"])

    # ---- fixed effects --------------------------------------------------------------------------
    @cached_property
    def ddf(self) -> np.ndarray | None:
        """Each fixed effect's small-sample degrees of freedom for a fit with a ``dfmethod``; else None (z tests)."""
        return None if self.small is None else self.small.df(np.eye(len(self.design.fe_names)))

    @cached_property
    def coef_table(self) -> np.ndarray:
        return coefficient_table(np.asarray(self.fit.beta), self._vcov_beta, df=self.ddf)

    @property
    def _vcov_beta(self) -> np.ndarray:
        """Cov(β̂) as reported: (XᵀV⁻¹X)⁻¹, or Kenward and Roger's adjustment of it for a ``kroger`` fit."""
        return np.asarray(self.fit.cov_beta) if self.small is None else self.small.vcov

    def _fixed_column(self, j: int, name: str) -> pd.Series:
        return pd.Series(self.coef_table[:, j], index=list(self.design.fe_names), name=name)

    @property
    def fe_params(self) -> pd.Series:
        return self._fixed_column(0, "coef")

    @property
    def bse_fe(self) -> pd.Series:
        return self._fixed_column(1, "se")

    @property
    def tvalues(self) -> pd.Series:
        """z statistics of the fixed effects (t statistics, with :attr:`ddf`, for a ``dfmethod`` fit)."""
        return self._fixed_column(2, "z")

    @property
    def pvalues(self) -> pd.Series:
        return self._fixed_column(3, "P>|z|")

    def cov_params(self) -> pd.DataFrame:
        """(XᵀV⁻¹X)⁻¹, the covariance of the fixed effects (Kenward and Roger's adjustment of it for a
        ``dfmethod="kroger"`` fit)."""
        names = list(self.design.fe_names)
        return pd.DataFrame(self._vcov_beta, index=names, columns=names)

    # ---- all parameters -------------------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        re = self.random_effects
        return pd.Series(np.concatenate([self.coef_table[:, 0], re.estimate]),
                         index=list(self.design.fe_names) + self.design.qualify(re.labels), name="coef")

    @property
    def bse(self) -> pd.Series:
        re = self.random_effects
        return pd.Series(np.concatenate([self.coef_table[:, 1], re.se]),
                         index=list(self.design.fe_names) + self.design.qualify(re.labels), name="se")

    def conf_int(self, alpha: float = 0.05, method: str = "wald", B: int = 1000, seed: int = 0) -> pd.DataFrame:
        """``1 - alpha`` intervals for :attr:`params`.

        ``method="wald"`` (Stata's): symmetric for fixed effects (on t(df) for a ``dfmethod`` fit) and
        covariances, log-scale for variances. ``method="profile"``: profile-likelihood intervals (lme4's default
        ``confint``), where twice the drop of the profile log likelihood reaches χ²₁(1 − alpha); they need no
        quadratic approximation, so they stay honest for variances estimated from few groups. A REML fit's
        profile is of its ML likelihood, as lme4's (see :mod:`jaxhlm.profile`). ``method="bootstrap"``:
        parametric-bootstrap percentile intervals (lme4's ``confint(method = "boot")``): ``B`` responses drawn
        from the fit (:func:`jaxhlm.simulate` with ``seed``), refitted in one batch (:func:`jaxhlm.refit_batch`),
        and the ``alpha/2`` and ``1 - alpha/2`` quantiles of each estimate over the refits that converged.
        """
        _check_alpha(alpha)
        method = _check_method(method)
        if method == "bootstrap":
            self.design.require_independent("bootstrap intervals", (Strata,))
        if method == "profile":
            pi = self._profile(alpha)
            return pd.DataFrame(np.concatenate([pi.fixed, pi.random]), columns=["lower", "upper"],
                                index=self.params.index)
        if method == "bootstrap":
            fits = self._bootstrap(B, seed)
            return pd.DataFrame(_percentiles(np.column_stack([fits.beta, fits.varcomp]), alpha),
                                columns=["lower", "upper"], index=self.params.index)
        z = float(special.ndtri(1 - alpha / 2))
        fixed = coefficient_table(np.asarray(self.fit.beta), self._vcov_beta, alpha, self.ddf)
        re = self.random_effects
        ci = wald_interval(re.estimate, re.se, re.is_var, re.is_corr, z)
        return pd.DataFrame({"lower": np.concatenate([fixed[:, 4], ci[:, 0]]),
                             "upper": np.concatenate([fixed[:, 5], ci[:, 1]])}, index=self.params.index)

    # ---- variance components --------------------------------------------------------------------
    @property
    def cov_re(self) -> pd.DataFrame:
        names = list(self.design.re_names)
        return pd.DataFrame(self.random_effects.sigma, index=names, columns=names)

    def recovariance(self, correlation: bool = False) -> dict[str, pd.DataFrame]:
        """The random effects' covariance matrix of each grouping level, outermost first (Stata's ``estat
        recovariance``): :attr:`cov_re` split by level, since a three-level model has a ``_cons`` at each. With
        ``correlation``, the correlations (missing where a variance is zero)."""
        self._grouped("estat recovariance")
        out, at = {}, 0
        for level, names in zip(self.design.level_names, self.design.level_effects):
            block = self.random_effects.sigma[at:at + len(names), at:at + len(names)]
            at += len(names)
            if correlation:
                sd = np.sqrt(np.diag(block))
                with np.errstate(invalid="ignore", divide="ignore"):
                    block = block / np.outer(sd, sd)
            out[level] = pd.DataFrame(block, index=list(names), columns=list(names))
        return out

    def varcorr(self, alpha: float = 0.05, method: str = "wald", B: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Standard deviations and correlations of the random effects and the residual (lme4's ``VarCorr``,
        Stata's ``estat sd``), with SEs and ``1 - alpha`` intervals: Wald intervals in Stata's conventions (see
        :func:`jaxhlm.infer.sd_corr`), or ``method="profile"`` or ``"bootstrap"``, lme4's ``confint`` methods
        (see :meth:`conf_int`)."""
        _check_alpha(alpha)
        t = sd_corr(self.random_effects, self.design.blocks, alpha)
        method = _check_method(method)
        if method == "bootstrap":
            self.design.require_independent("bootstrap intervals", (Strata,))
        ci = (self._profile(alpha).sd_corr if method == "profile"
              else _percentiles(self._bootstrap(B, seed).sd_corr, alpha) if method == "bootstrap" else t.ci)
        return pd.DataFrame({"estimate": t.estimate, "std_err": t.se, "ci_lower": ci[:, 0],
                             "ci_upper": ci[:, 1]}, index=self.design.qualify(t.labels))

    @cached_property
    def _profiles(self) -> dict[float, ProfileIntervals]:
        return {}

    @cached_property
    def _bootstraps(self) -> dict[tuple[int, int], BatchFit]:
        return {}

    def _bootstrap(self, B: int, seed: int) -> BatchFit:
        """Refits of ``B`` responses drawn from this fit, those that did not converge dropped (once per B, seed)."""
        from . import batch  # batch builds on results

        if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 2:
            raise JaxhlmError(f"B must be a whole number of bootstrap replicates, at least 2; got {B!r}")
        self._model_based("parametric-bootstrap intervals draw from the fitted model")
        if (B, seed) not in self._bootstraps:
            fits = batch.bootstrap_fits(self, B, seed)
            self._bootstraps[B, seed] = fits.select(fits.converged)
            failed = B - int(np.sum(fits.converged))
            if failed:
                warnings.warn(f"{failed} of {B} bootstrap refits did not converge; the intervals use the other "
                              f"{B - failed}", RuntimeWarning, stacklevel=3)
        return self._bootstraps[B, seed]

    def _profile(self, alpha: float) -> ProfileIntervals:
        """The profile intervals at ``alpha`` (solved once per result and level)."""
        self._model_based("profile-likelihood intervals invert the likelihood-ratio test")
        if alpha not in self._profiles:
            self._profiles[alpha] = profile_intervals(
                self._data, self.design.blocks, self.theta, self.scale, np.asarray(self.fit.beta), self.reml,
                tuple(self.params.index), alpha, self.design.residual, self.psi)
        pi = self._profiles[alpha]
        if pi.failed:
            warnings.warn("profile-likelihood interval not found (reported as NaN): " + ", ".join(pi.failed),
                          RuntimeWarning, stacklevel=3)
        return pi

    def _model_based(self, what: str) -> None:
        """Refuse, for a fit with robust standard errors, what holds only if the model is right: they were asked
        for because it may not be."""
        if self.robust is not None:
            raise JaxhlmError(f"{what}, which holds only if the model is right, and this fit has robust standard "
                              "errors because it may not be; use the Wald intervals (method='wald', the default), "
                              "which take the sandwich, or refit with model-based standard errors (vce='oim')")

    @property
    def scale(self) -> float:
        """σ², the residual variance (with a residual variance per stratum, the first stratum's; with unstructured
        or banded residuals, that at the first time; with the other correlated residuals, every row's)."""
        return float(self.fit.sigma2)

    def residual_variance(self, data: pd.DataFrame) -> np.ndarray | float:
        """The residual variance of each row of ``data``: σ², or with a residual variance per stratum, that of the
        row's value of the ``residuals_by`` variable, or with residuals correlated within series σ² times the
        diagonal of C(ψ̂) at the row (NaN for a row the fit has not seen)."""
        d = self.design
        if d.serial is not None:
            C = np.asarray(d.residual.correlation(d.serial, jnp.asarray(self.psi)))
            var = self.scale * np.diagonal(C, axis1=1, axis2=2)[d.serial_slots]
            return pd.Series(var, index=d.rows().index).reindex(data.index).to_numpy(dtype=float)
        if self.design.strata is None:
            return self.scale
        log_ratio = np.append(0.0, self.psi)
        by = dict(zip(self.design.strata_labels, self.scale * np.exp(2.0 * log_ratio)))
        return data[self.spec.residual_by].map(by).to_numpy(dtype=float)

    @property
    def theta(self) -> np.ndarray:
        """The relative covariance factor parameters θ̂ (lme4's metric; random-effect order as ``re_names``)."""
        return np.asarray(self.fit.theta)

    # ---- the groups' random effects -----------------------------------------------------------------
    @cached_property
    def _stats(self) -> GroupStats | NestedStats:
        """The fit's statistics in their exact shapes (no padded groups, clusters or columns), for the
        computations done after the fit."""
        if self.psi is None:
            return self._data
        # the rows whitened at ψ̂: residual covariance σ²I
        return self.design.residual.whiten(self._data, jnp.asarray(self.psi))[0]

    @cached_property
    def _data(self) -> GroupStats | NestedStats | SerialRows:
        """What the fit's residual structure whitens (its statistics for σ²I), in their exact shapes."""
        d = self.design
        return residual_data(d, d.n_groups, len(d.fe_names), d.n_clusters)

    def _modes_at(self, beta: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """Per grouping level (outermost first), the random effects' conditional means and covariances given the
        data at the fixed effects ``beta`` (the variance parameters at their estimates)."""
        d = self.design
        lam = relative_factor(jnp.asarray(self.theta), jnp.asarray(cov.templates(d.blocks)))
        s2 = jnp.asarray(self.scale)
        return (level_modes(lam, self._stats, beta, s2) if d.inner is not None
                else (conditional_modes(lam, self._stats, beta, s2),))

    @cached_property
    def _modes(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """:meth:`_modes_at` the estimates."""
        return tuple((np.asarray(b), np.asarray(V)) for b, V in self._modes_at(jnp.asarray(self.fit.beta)))

    def _grouped(self, what: str) -> None:
        """Refuse ``what``, which needs groups, for a model without random effects (a linear regression)."""
        if self.spec.linear:
            raise JaxhlmError(f"{what} needs random effects, and this model has none (a linear regression); fit a "
                              "model with a random-effects equation (|| id: in Stata syntax, (1 | id) in a formula)")

    def _level(self, level: int | str) -> int:
        self._grouped("predicted random effects")
        names = self.design.level_names
        if level in names:
            return names.index(level)
        if isinstance(level, (int, np.integer)) and 0 <= level < len(names):
            return int(level)
        raise JaxhlmError(f"level {level!r} is not a grouping level of this model; use one of {', '.join(names)} "
                          f"(or 0{', 1' if len(names) > 1 else ''}, outermost first)")

    def ranef(self, level: int | str = 0) -> pd.DataFrame:
        """Predicted random effects (BLUPs; lme4's ``ranef``): one row per group, one column per random effect.
        ``level`` picks a three-level model's inner level (its name or 1): one row per cluster, labelled by
        its group and its own value; or the second of two crossed factors: one row per level."""
        k = self._level(level)
        d = self.design
        if k == 0:
            index = pd.Index(d.group_labels, name=d.group_name)
        elif len(key := d.encoding.levels.second[1]) > 1:
            index = pd.MultiIndex.from_tuples(list(d.inner.labels), names=key)
        else:
            index = pd.Index(d.inner.labels, name=d.inner.name)
        return pd.DataFrame(self._modes[k][0], index=index, columns=list(d.level_effects[k]))

    def ranef_cov(self, level: int | str = 0) -> np.ndarray:
        """(groups, q, q): each group's conditional covariance of its random effects given the data and the
        estimates (lme4's ``condVar``), rows and columns as in :meth:`ranef`."""
        return self._modes[self._level(level)][1]

    def ranef_se(self, level: int | str = 0) -> pd.DataFrame:
        """Standard errors of the predicted random effects, as Stata's ``predict, reses`` computes them, laid out as
        :meth:`ranef`.

        After ML they are the conditional ones, √diag :meth:`ranef_cov` (β at β̂, as lme4's ``condVar``). After
        REML, whose likelihood integrates β out, they also carry β̂'s uncertainty: Var(b̂ − b) = the conditional
        covariance + K Cov(β̂) Kᵀ with K = ∂b̂/∂β (the BLUP is linear in β; K by automatic differentiation), which
        is Σ − ΣZᵀPZΣ with P = V⁻¹ − V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹ (Henderson's prediction error variance).
        """
        k = self._level(level)
        var = np.diagonal(self._modes[k][1], axis1=-2, axis2=-1)
        if self.reml:
            K = np.asarray(jax.jacfwd(lambda b: self._modes_at(b)[k][0])(jnp.asarray(self.fit.beta)))
            var = var + np.einsum("gap,pq,gaq->ga", K, np.asarray(self.fit.cov_beta), K)
        frame = self.ranef(k)
        return pd.DataFrame(np.sqrt(var), index=frame.index, columns=frame.columns)

    def marginal_cov(self, group: object = None) -> pd.DataFrame:
        """The estimated covariance of one group's responses, V = ZΣ̂Zᵀ + R̂ (nlme's ``getVarCov(type =
        "marginal")``; the covariance behind Stata's ``estat wcorrelation``): the random effects' part, a three-level
        model's inner clusters' within them, and the residuals' (σ̂²/aᵢ with precision weights, each stratum's
        variance with ``residuals_by``, σ̂²C(ψ̂) within a series with correlated residuals). ``group``: a value of the
        outermost grouping variable (default: the first group). Rows and columns are labelled by the data's index,
        in the estimation sample's order."""
        d = self.design
        if d.crossed:
            raise JaxhlmError("a model with crossed grouping factors has no independent groups: every response is "
                              "correlated with others through both factors")
        if self.spec.freq_weights:
            raise JaxhlmError("the marginal covariance is of single observations; with frequency weights a row stands "
                              "for several, so expand the rows (data.loc[data.index.repeat(data[w])]) first")
        found = np.flatnonzero(d.group_labels == (d.group_labels[0] if group is None else group))
        if not len(found):
            raise JaxhlmError(f"{group!r} is not a group of {d.group_name} in this fit")
        rows = d.rows()
        at = np.flatnonzero(rows.group == found[0])
        Z, sigma, q1 = rows.Z[at], self.random_effects.sigma, len(d.level_effects[0])
        V = Z[:, :q1] @ sigma[:q1, :q1] @ Z[:, :q1].T
        series = np.zeros(len(at)) if rows.cluster is None else rows.cluster[at]
        same = series[:, None] == series[None, :]
        V += same * (Z[:, q1:] @ sigma[q1:, q1:] @ Z[:, q1:].T)
        frame = d.source.iloc[rows.position[at]]
        if d.serial is not None:  # C(ψ̂) of the group's series, picked at its rows' places in their slabs
            series, slot = (a[at] for a in d.serial_slots)
            u, pos = np.unique(series, return_inverse=True)
            C = np.asarray(d.residual.correlation(d.serial.series(u), jnp.asarray(self.psi)))
            V += (pos[:, None] == pos[None, :]) * self.scale * C[pos[:, None], slot[:, None], slot[None, :]]
        else:
            var = np.broadcast_to(self.residual_variance(frame), (len(at),))
            V += np.diag(var if rows.weights is None else var / rows.weights[at])
        return pd.DataFrame(V, index=rows.index[at], columns=rows.index[at])

    def wcorrelation(self, group: object = None) -> pd.DataFrame:
        """The correlations of one group's responses (Stata's ``estat wcorrelation``), from :meth:`marginal_cov`."""
        V = self.marginal_cov(group)
        sd = np.sqrt(np.diag(V.to_numpy()))
        return V / np.outer(sd, sd)

    @property
    def fittedvalues(self) -> np.ndarray:
        """Xβ̂ + Zb̂ for the estimation sample, in its row order (rebuilt from the fitted data)."""
        rows = self.design.rows()
        return self._predict(rows.X, rows.Z, rows.codes)

    @property
    def resid(self) -> np.ndarray:
        """y − :attr:`fittedvalues` (conditional residuals)."""
        rows = self.design.rows()
        return rows.y - self._predict(rows.X, rows.Z, rows.codes)

    def predict(self, data: pd.DataFrame | None = None, random: bool = True) -> pd.Series:
        """Predictions Xβ̂ + Zb̂ (``random=False``: Xβ̂, the population level; Stata's ``predict, xb``).

        ``data`` None predicts the estimation sample (index: its rows). New data is encoded as the fitted data
        was; it needs no response. A group the fit has not seen gets a zero random effect (its prediction is
        Xβ̂, as lme4's ``allow.new.levels``), and so does a new cluster of a three-level model (its school's
        effect still applies); a row with a missing predictor gets NaN. The index is ``data``'s.
        """
        name = "fitted" if random else "xb"
        if data is None:
            rows = self.design.rows()
            codes = rows.codes if random else tuple(np.full(len(rows.y), -1) for _ in rows.codes)
            return pd.Series(self._predict(rows.X, rows.Z, codes), index=rows.index, name=name)
        if not isinstance(data, pd.DataFrame):
            raise JaxhlmError(f"predict needs a pandas DataFrame of new data, got {type(data).__name__}")
        complete, X, Z, codes = self.design.predictors(data, random)
        out = np.full(len(data), np.nan)
        out[complete] = self._predict(X, Z, codes)
        return pd.Series(out, index=data.index, name=name)

    def _predict(self, X: np.ndarray, Z: np.ndarray, codes: tuple[np.ndarray, ...]) -> np.ndarray:
        params = functional.Params(jnp.asarray(self.fit.beta), jnp.asarray(self.cov_re.to_numpy()),
                                   jnp.asarray(self.scale))
        b = tuple(jnp.asarray(modes) for modes, _ in self._modes)
        return np.asarray(functional.predict(params, b, X, Z, codes))

    # ---- influence --------------------------------------------------------------------------------
    def influence(self, exact: bool = False) -> "GroupInfluence":
        """Each group's influence on the fixed effects: DFBETA (β̂ − β̂ without the group), DFBETAS and Cook's
        distance (:mod:`jaxhlm.influence`).

        By default one step from the fit's implicit derivatives (the infinitesimal jackknife: the cost of a few
        fits whatever the number of groups); ``exact=True`` refits the model without each group (batched). On the
        HSB models the one-step values are within a few percent of the refits (README, "Influence").
        """
        _config.relieve_map_pressure()
        d = self.design
        data = self._pieces(d.rows())
        beta, cov_beta = np.asarray(self.fit.beta), np.asarray(self.fit.cov_beta)
        converged_all = None
        if exact:
            loo = influence.leave_one_out(data, d.blocks, self.reml, residual=d.residual)
            dfbeta = beta - np.asarray(loo.beta)
            converged_all = np.asarray(converged(loo.solution.result, loo.solution.decrement))
        else:
            dfbeta = np.asarray(influence.one_step(data, d.blocks, self.reml, d.residual))
        cooks = np.asarray(influence.cooks_distance(jnp.asarray(dfbeta), jnp.asarray(cov_beta)))
        index = pd.Index(d.group_labels, name=d.group_name)
        names = list(d.fe_names)
        frame = pd.DataFrame(dfbeta, index=index, columns=names)
        return GroupInfluence(
            dfbeta=frame, dfbetas=frame / np.sqrt(np.diag(cov_beta)), cooks_distance=pd.Series(cooks, index=index,
            name="cooks_d"), group_sizes=pd.Series(d.group_sizes, index=index, name="n"),
            method="exact" if exact else "one-step", converged=converged_all,
        )

    def _pieces(self, rows: Rows) -> influence.Pieces:
        """The statistics as functions of the groups' weights (:mod:`jaxhlm.influence`), from the fit's ``rows``
        (residuals correlated within series: the rows in time order, :attr:`_data`; a residual variance per
        stratum: each stratum's pieces)."""
        d = self.design
        if isinstance(d.residual, Serial):
            return self._data
        if isinstance(d.residual, Strata):
            stratum = pd.Index(d.strata_labels).get_indexer(d.source[self.spec.residual_by].iloc[rows.position])
            v = rows.group_weights(d.n_groups)  # every group's, those without rows in a stratum included
            return influence.StrataPieces(tuple(
                self._group_pieces(rows.subset(stratum == s), jax.tree.map(lambda a, s=s: a[s], self._data), v)
                for s in range(len(d.strata_labels))))
        return self._group_pieces(rows, self._stats)

    def _group_pieces(self, rows: Rows, stats: GroupStats | NestedStats | CrossedStats,
                      group_weights: np.ndarray | None = None) -> influence.Pieces:
        """:meth:`_pieces` of ``rows`` whose statistics (in their exact shapes) are ``stats``; a two-level model's
        groups weighted by ``group_weights`` (default: the rows' groups' sampling weights)."""
        d = self.design
        if d.inner is None:
            return rows.grouped(d.n_groups, group_weights)
        # exact shapes: one weight per group, no padded ones
        freq = rows.freq
        if rows.sampling is not None and rows.sampling.clusters is not None:  # a cluster's weight, on its rows
            freq = freq * rows.sampling.clusters
        totals = group_totals(rows.X, rows.y, rows.group, d.n_groups, rows.weights, freq)
        if d.crossed:
            q1 = len(d.re_names) - d.inner.n_effects
            pairs = pair_totals(rows.Z[:, q1:], rows.X, rows.y, rows.group, rows.cluster, d.n_groups,
                                len(d.inner.labels), rows.weights, rows.freq)
            return influence.CrossedPieces(stats, *map(jnp.asarray, totals + pairs))
        return influence.NestedPieces(stats, *map(jnp.asarray, totals))

    def cluster_scores(self, cluster: str | None = None) -> tuple[np.ndarray, "Clusters"]:
        """The (M, p + k) scores ∂ℓ_c/∂(β, φ) of M independent clusters at the estimates (φ in Stata's metric, as
        :attr:`random_effects` ``.phi``), and the clusters: the outermost level's groups, or the values of the
        column ``cluster``, each of which must hold its groups whole. What robust standard errors are made of."""
        d = self.design
        if d.crossed:
            raise DataError("robust standard errors need independent clusters, and crossed random effects leave "
                            "none (every group of one factor shares effects with groups of the other); use the "
                            "model-based standard errors, or the parametric bootstrap (conf_int(method='bootstrap'))")
        check_vce("robust", cluster, self.reml, None)
        _config.relieve_map_pressure()
        rows = d.rows()
        re = self.random_effects
        # A zero variance (ln sd = −∞) or a correlation held at ±1 leaves φ infinite: finite stand-ins give the
        # same Σ to rounding, so the fixed effects' scores exist; the variance parameters' then have no bread.
        phi = np.nan_to_num(re.phi, nan=0.0, neginf=-700.0, posinf=700.0)
        G = np.asarray(influence.scores(self._pieces(rows), jnp.asarray(self.fit.beta), jnp.asarray(phi),
                                        jnp.asarray(re.edge[:len(phi) - re.n_residual]), d.blocks, d.residual))
        if cluster is None:
            return G, Clusters(d.group_name, d.n_groups)
        values = d.source[cluster].iloc[rows.position].to_numpy()
        codes, labels = pd.factorize(values, sort=True)
        spans = pd.Series(codes).groupby(rows.group).nunique()
        split = int((spans > 1).sum())
        if split:
            raise DataError(f"{split:,} {d.group_name} group(s) have rows in more than one cluster of {cluster!r}; "
                            f"robust standard errors need each group within one cluster (as Stata requires): cluster "
                            f"by {d.group_name}, or by a variable whose values contain its groups whole")
        of_group = np.zeros(d.n_groups, np.int64)
        of_group[rows.group] = codes
        if len(labels) < 2:
            raise DataError(f"the sample has one cluster of {cluster!r}, and robust standard errors need two or more "
                            "independent clusters (many, to be reliable)")
        summed = np.zeros((len(labels), G.shape[1]))
        np.add.at(summed, of_group, G)
        return summed, Clusters(cluster, len(labels))

    # ---- fit ------------------------------------------------------------------------------------
    @property
    def llf(self) -> float:
        """Log likelihood (the restricted log likelihood for REML fits)."""
        return -0.5 * float(self.fit.deviance)

    @property
    def df_modelwc(self) -> int:
        """Estimated parameters: fixed effects, variance components and the residual variance."""
        return len(self.design.fe_names) + cov.n_cov_params(self.design.blocks) + self.random_effects.n_residual

    @property
    def aic(self) -> float:
        return -2.0 * self.llf + 2.0 * self.df_modelwc

    @property
    def bic(self) -> float:
        return -2.0 * self.llf + math.log(self.nobs) * self.df_modelwc

    @property
    def converged(self) -> bool:
        return bool(converged(self.convergence.result, self.convergence.decrement))

    @property
    def singular(self) -> bool:
        """The optimum lies on the boundary: a bounded θ is 0, so Σ is singular (lme4's isSingular)."""
        return bool(cov.on_boundary(self.design.blocks, self.theta))

    @property
    def warnings(self) -> tuple[str, ...]:
        out = list(self.random_effects.warnings)
        if not self.converged:
            c = self.convergence
            out.append(f"convergence not achieved ({c.message}; max |gradient| {c.grad_norm:.2g}, "
                       f"Newton decrement {c.decrement:.2g}).")
        if self.singular and not self.random_effects.warnings:
            out.append("the fit is singular: a variance component or correlation is on the boundary.")
        return tuple(out)

    def icc(self, alpha: float = 0.05) -> "IntraclassCorrelation":
        """Stata's ``estat icc``: the correlation of two responses in one group, var(_cons)/(var(_cons) + σ²).

        It is residual (given the fixed effects) when the model has covariates, and conditional on zero values
        of the random slopes' variables when it has random slopes (their variances do not enter). SE by the delta
        method; the ``1 - alpha`` interval is formed on the logit scale. A three-level model has one row per
        level: two responses in one school (var school / total), and in one class of that school (var school +
        var class) / total, labelled ``class|school`` as Stata labels it. Two crossed factors have one row each:
        two responses of one subject (on different items), var subject / total, and of one item.
        """
        self._grouped("the intraclass correlation")
        self.design.require_independent("intraclass correlations")
        d = self.design
        per_level = d.level_effects
        for name, effects in zip(d.level_names, per_level):
            if CONSTANT not in effects:
                raise JaxhlmError(f"the intraclass correlation needs a random intercept at each level: {name}'s "
                                  f"random effects ({', '.join(effects)}) have none; add one (drop noconstant, or "
                                  f"write 1 + … | {name})")
        _check_alpha(alpha)
        ks = [cov.variance_index(d.blocks, d.re_keys.index((name, CONSTANT))) for name in d.level_names]
        if len(d.re_names) > len(per_level):
            kind = "Conditional intraclass correlation"
        elif any(name != d.constant for name in d.fe_names):
            kind = "Residual intraclass correlation"
        else:
            kind = "Intraclass correlation"
        names = d.level_names
        if d.crossed:
            shared = [[k] for k in ks]
            labels = list(names)
        else:
            shared = [ks[:top] for top in range(1, len(ks) + 1)]
            labels = [names[0]] + ["|".join(reversed(names[:top])) for top in range(2, len(names) + 1)]
        rows = tuple(ICC(label, *intraclass(self.random_effects, ks, numerator, alpha))
                     for numerator, label in zip(shared, labels))
        return IntraclassCorrelation(kind, rows, 1 - alpha)

    def r2(self) -> pd.Series:
        """Nakagawa and Schielzeth's R² for mixed models: ``marginal`` (the share of the response's variance the
        fixed effects explain) and ``conditional`` (fixed and random effects together), with the three variances
        they are made of (``var_fixed``, ``var_random``, ``var_residual``); random slopes as Johnson (2014), as R's
        ``performance::r2_nakagawa`` computes them (:func:`~jaxhlm.infer.variance_decomposition`). Needs the
        fitted data in memory; rows with frequency weights count that many times."""
        self.design.require_independent("R² (which needs one residual variance)", (Strata, Unstructured, ByStratum))
        if self.spec.sampled:
            raise JaxhlmError("R² is not computed for fits with sampling weights: the variances it is made of would "
                              "have to be estimated for the population, which the rows' sample variances are not")
        rows = self.design.rows()
        if rows.weights is not None:
            raise JaxhlmError("R² needs one residual variance for every row; with precision weights (weights=) row "
                              "i's is σ²/aᵢ, so the share the residual takes is not defined")
        v = variance_decomposition(rows.X, rows.Z, np.asarray(self.fit.beta), self.random_effects.sigma, self.scale,
                                   rows.freq)
        return pd.Series({"marginal": v.marginal, "conditional": v.conditional, "var_fixed": v.var_fixed,
                          "var_random": v.var_random, "var_residual": v.var_residual}, name="R2")

    def refit_ml(self) -> "MixedResult":
        """This model refitted by maximum likelihood (lme4's ``refitML``): itself if it was fitted by ML. Needs
        the data it was fitted from in memory (not read in chunks)."""
        if not self.reml:
            return self
        if self.design.source is None:
            raise ComparisonError("this REML fit was read from data in chunks, so it cannot be refitted by ML here; "
                                  "fit it with reml=False")
        from .pipeline import fit_spec  # the pipeline builds results

        dfmethod = self.spec.dfmethod if self.spec.dfmethod != "kroger" else None  # Kenward-Roger needs REML
        return fit_spec(dataclasses.replace(self.spec, reml=False, dfmethod=dfmethod), self.design.source)

    @property
    def e_scalars(self) -> dict[str, float]:
        """Stata's e() scalars after ``mixed``: N, ll, k (parameters in all), k_f (fixed), k_r (variance parameters),
        the model's Wald test (chi2, or F with df_r, df_m, p) and the LR test vs. the linear model (ll_c, chi2_c,
        p_c)."""
        k_f = len(self.fe_params)
        wald = self.wald
        test = {"F": wald.statistic, "df_r": wald.ddf} if isinstance(wald, FTest) else {"chi2": wald.statistic}
        lr = self.lr_linear
        return {"N": float(self.nobs), "ll": self.llf, "k": float(self.df_modelwc), "k_f": float(k_f),
                "k_r": float(self.df_modelwc - k_f), **test, "df_m": float(wald.df), "p": wald.pvalue,
                "ll_c": self.llf - lr.statistic / 2, "chi2_c": lr.statistic, "p_c": lr.pvalue}

    def equations(self) -> pd.DataFrame:
        """The estimates as Stata's e(b) holds them, each with its standard error, z (t with a dfmethod) and p-value:
        the fixed effects in the response's equation, then a ``_cons`` equation per variance parameter in Stata's
        estimation metric, level by level as the model lists them — ``lns{level}_{eq}_{k}`` (ln sd of the k-th
        effect of the level's eq-th random-effects equation), ``atr{level}_{eq}_{i}_{j}`` (atanh of a correlation;
        ``_1_1`` the shared one of an exchangeable block), with a residual variance per stratum (``residuals_by``)
        ``r_lns{s}ose`` (ln of stratum s's σ over the first's), and ``lnsig_e`` (ln σ, the first stratum's). Their
        statistics are z tests of the coordinate: where they are what ``estimates table`` compares across models. A
        correlation held at ±1 has coordinate ±inf and no SE. Columns a coefficient table does not estimate
        (collinear, or empty interaction cells) are rows with their ``status`` and missing values. Residuals
        correlated within series have equations of their own in Stata that are not reproduced here: for such a fit
        only the fixed and random-effects equations are returned (see :attr:`random_effects` for its parameters)."""
        d = self.design
        table = dict(zip(d.fe_names, self.coef_table))
        rows = [(d.response, term, *(table[c.name][:4] if not c.status else (np.nan,) * 4), c.status)
                for term, c in _terms(d.coefs).items()]
        names, coord, V = self._variance_equations()
        se = np.sqrt(np.abs(np.diag(V)))
        for name, b, s in zip(names, coord, se):
            z = b / s
            rows.append((name, "_cons", b, s, z, 2.0 * special.ndtr(-abs(z)), ""))
        frame = pd.DataFrame(rows, columns=["equation", "term", "coef", "std_err", "statistic", "pvalue", "status"])
        return frame.set_index(["equation", "term"])

    @property
    def _k_rs(self) -> int:
        """Stata's e(k_rs): the random effects' variance parameters (ln sd's), covariances and residual ones apart."""
        return sum(b.n_variances for b in self.design.blocks)

    def _variance_equations(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Stata's names of the variance equations (:meth:`equations`), their coordinates and covariance: linear in
        φ — the random effects' coordinates themselves, and for residual variances per stratum ln σ₁ (``lnsig_e``)
        and each ln(σₛ/σ₁) (``r_lns{s}ose``, the ratio to the first stratum's). A correlation held at ±1 has
        coordinate ±inf and missing covariances."""
        d, re = self.design, self.random_effects
        starts = np.cumsum([0] + [b.n_theta for b in d.blocks])
        numbered = [self.spec.levels.index(d.level_names[lvl]) if self.spec.all_factors else lvl
                    for lvl in d.block_levels]
        names: list[str] = []
        rows: list[np.ndarray] = []
        unit = np.eye(len(re.phi))
        for k in sorted(range(len(d.blocks)), key=lambda k: numbered[k]):  # Stata's levels: as the model lists them
            b, level = d.blocks[k], numbered[k] + 1
            eq = 1 + sum(1 for j in range(k) if numbered[j] == numbered[k])
            block = [f"lns{level}_{eq}_{i + 1}" for i in range(b.n_variances)]
            block += ([f"atr{level}_{eq}_1_1"] if b.kind == "exchangeable" else
                      [f"atr{level}_{eq}_{i + 1}_{j + 1}" for i, j in b.pairs] if b.kind == "unstructured" else [])
            names += block
            rows += [unit[starts[k] + i] for i in range(len(block))]
        tail = len(re.phi) - re.n_residual
        if isinstance(d.residual, Strata):  # Stata's by(): each stratum's ln sd relative to the first's
            names += [f"r_lns{s + 1}ose" for s in range(1, re.n_residual)]
            rows += [unit[tail + s] - unit[tail] for s in range(1, re.n_residual)]
        if not isinstance(d.residual, Serial):
            names.append("lnsig_e")
            rows.append(unit[tail])
        W = np.array(rows).reshape(len(rows), len(re.phi))
        held = (np.abs(W) @ (re.edge != 0)) > 0
        coord = np.where(held, np.copysign(np.inf, W @ re.edge), W @ re.phi)
        V = W @ re.phi_cov @ W.T
        V[held, :] = np.nan
        V[:, held] = np.nan
        return names, coord, V

    def nlcom(self, expressions: str | Sequence[str] | Mapping[str, str], alpha: float = 0.05
              ) -> "NonlinearCombinations":
        """Stata's ``nlcom``: functions of the estimates with delta-method standard errors, z tests and ``1 - alpha``
        intervals. Coefficients are written as in Stata, ``_b[ses]``, ``_b[1.sector#c.ses]``, or an equation's
        ``_b[lns1_1_1:_cons]`` (:meth:`equations`), inside any expression ``display`` evaluates:
        ``"exp(2*_b[lns1_1_1:_cons])"`` is var(_cons), ``"_b[ses]/_b[female]"`` a ratio. Several expressions (a
        list, or a mapping from names to expressions) share one covariance, as Stata's ``nlcom (a: …) (b: …)``;
        unnamed ones are ``_nl_1``, ``_nl_2``, … The gradient is by central differences, as Stata's; e(V) is
        block-diagonal in the fixed effects (their covariance, robust for a robust fit) and the variance coordinates
        (the inverse information of φ)."""
        from .expressions import evaluate, parse_expression

        _check_alpha(alpha)
        named = (dict(expressions) if isinstance(expressions, Mapping) else
                 {f"_nl_{k + 1}": e for k, e in enumerate([expressions] if isinstance(expressions, str) else expressions)})
        if not named or any(not str(e).strip() for e in named.values()):
            raise JaxhlmError("nlcom needs an expression of the coefficients, e.g. nlcom _b[ses]/_b[female] or "
                              "nlcom exp(2*_b[lns1_1_1:_cons])")
        keys = [(self.design.response, n) for n in self.design.fe_names]
        names, coord, V_phi = self._variance_equations()
        keys += [(name, "_cons") for name in names]
        b = np.concatenate([np.asarray(self.fit.beta), coord])
        V = np.zeros((len(b), len(b)))
        p = len(self.design.fe_names)
        V[:p, :p] = self._vcov_beta
        V[p:, p:] = V_phi

        def place(token: str, text: str) -> int:
            eq, colon, name = token.partition(":")
            key = (eq.strip(), name.strip()) if colon else (self.design.response, token.strip())
            if key not in keys:
                raise JaxhlmError(f"nlcom {text!r}: [{token}] not found; coefficients are "
                                  + ", ".join(f"_b[{k[1]}]" for k in keys[:p]) + "; equations "
                                  + ", ".join(f"_b[{k[0]}:_cons]" for k in keys[p:]))
            return keys.index(key)

        rows = []
        for name, text in named.items():
            used: list[int] = []

            def slot(m: re.Match[str]) -> str:
                k = place(m.group(1), text)
                if k not in used:
                    used.append(k)
                return f"__b{k}"

            def known(word: str) -> str:
                if not re.fullmatch(r"__b\d+", word):
                    raise JaxhlmError(f"nlcom {text!r}: {word} is not a coefficient; write coefficients as _b[name]")
                return word

            node = parse_expression(re.sub(r"_b\[([^\]]*)\]", slot, coefficient_references(str(text))), known)
            if not used:
                raise JaxhlmError(f"nlcom {text!r} involves no coefficient")
            step = 1e-6 * np.maximum(np.abs(b[used]), 1.0)
            points = np.repeat(b[used][None, :], 1 + 2 * len(used), axis=0)
            points[1 + np.arange(len(used)), np.arange(len(used))] += step
            points[1 + len(used) + np.arange(len(used)), np.arange(len(used))] -= step
            values = evaluate(node, pd.DataFrame(points, columns=[f"__b{k}" for k in used]))
            if not np.all(np.isfinite(values)):
                raise JaxhlmError(f"nlcom {text!r} is not defined at the estimates (or next to them)")
            g = (values[1:1 + len(used)] - values[1 + len(used):]) / (2 * step)
            rows.append((name, str(text).strip(), values[0], math.sqrt(max(g @ V[np.ix_(used, used)] @ g, 0.0))))
        est = np.array([r[2] for r in rows])
        se = np.array([r[3] for r in rows])
        # Stata's nlcom: z tests after mixed, t tests on the residual degrees of freedom after regress
        df = None if self._stata_large(False, "nlcom") else self.small.df(np.ones((len(rows), 1)))
        table = coefficient_table(est, np.diag(se**2), alpha, df)
        return NonlinearCombinations(tuple(r[0] for r in rows), tuple(r[1] for r in rows), self.design.response,
                                     table, 1 - alpha, math.inf if df is None else float(df[0]))

    def ic(self) -> pd.DataFrame:
        """Stata's ``estat ic``: N is the number of observations."""
        return pd.DataFrame({"N": [self.nobs], "ll(null)": [np.nan], "ll(model)": [self.llf],
                             "df": [self.df_modelwc], "AIC": [self.aic], "BIC": [self.bic]})

    # ---- tests ----------------------------------------------------------------------------------
    def test(self, constraints: str | Sequence[str], accumulate: "WaldTest | None" = None,
             dfmethod: str | None = None, large_sample: bool = False) -> "WaldTest":
        """Wald test of linear constraints on the fixed effects, e.g. ``["2.sized = 3.sized"]``.

        Each constraint is ``expr = expr`` (or ``expr``, meaning ``= 0``) with terms ``[number*]name``; a name
        may be written ``[eq]name`` or ``_b[name]`` as in Stata, and ``_cons`` names the constant.
        ``accumulate`` stacks these rows under a previous test's rows, as Stata's ``test …, accumulate``.
        ``dfmethod``: ``"satterthwaite"`` (lmerTest's ``contest``) or ``"kroger"`` (pbkrtest's ``KRmodcomp``)
        for an F test on small-sample denominator degrees of freedom instead of the chi-squared test; by
        default, the fit's own ``dfmethod``. ``large_sample``: the chi-squared test on the reported Cov(β̂) whatever
        the fit's ``dfmethod``, as Stata's ``test`` without its ``small`` option.
        """
        if isinstance(constraints, str):
            constraints = [constraints]
        rows = [] if accumulate is None else list(accumulate.rows)
        return self._wald(rows + [_parse_constraint(c, self.design) for c in constraints],
                          self._small(dfmethod, large_sample))

    def testparm(self, varlist: str, equal: bool = False, dfmethod: str | None = None, large_sample: bool = False
                 ) -> "WaldTest":
        """Stata's ``testparm``: the Wald test that the coefficients of the terms in a factor-variable varlist are all
        0 (``"i.sized"``: 2.sized and 3.sized, not their interactions; ``"c.ses#c.sector"``, ``"x*"``), or with
        ``equal`` that they are equal to each other. Base and omitted coefficients take no part. For models
        written in Stata syntax (a formula's coefficients are tested by name with :meth:`test`). ``dfmethod`` and
        ``large_sample`` as :meth:`test`'s."""
        from .stata import Columns, parse_varlist  # the Stata front end builds on results

        fixed = self.spec.fixed
        if not isinstance(fixed, FixedTerms):
            raise JaxhlmError("testparm reads Stata factor-variable lists, and this model was written as a formula; "
                              "test its coefficients by name with test([...])")
        source = self.design.source
        columns = list(map(str, source.columns)) if source is not None else sorted(fixed.variables)
        keys = {t.key for t in parse_varlist(varlist, Columns(columns))}
        picked = [j for j, name in enumerate(self.design.fe_names) if _coefficient_key(name) in keys]
        if not picked or (equal and len(picked) < 2):
            raise JaxhlmError(f"testparm {varlist}: " + ("no coefficient of the model belongs to these terms"
                                                         if not picked else "equal needs two coefficients or more"))
        eye = np.eye(len(self.design.fe_names))
        rows = ([(eye[j] - eye[picked[0]], 0.0) for j in picked[1:]] if equal else [(eye[j], 0.0) for j in picked])
        return self._wald(rows, self._small(dfmethod, large_sample))

    def _small(self, dfmethod: str | None, large_sample: bool) -> SmallSample | None:
        """The small-sample inference a test of the fixed effects uses: that of ``dfmethod``, or by default the fit's
        own; none (z and chi-squared tests on the reported Cov(β̂), Stata's e(V)) with ``large_sample`` or when
        neither names a method."""
        check_dfmethod(dfmethod, self.reml)
        method = None if large_sample else dfmethod or self.spec.dfmethod
        return None if method is None else self._small_sample(method)

    def _stata_large(self, small: bool, command: str) -> bool:
        """Whether Stata's ``command`` (test, lincom, margins, ...) after this fit gives large-sample z and chi2 tests:
        after ``mixed`` it does unless its ``small`` option asks for the fit's small-sample ones, which it must have."""
        if small and self.spec.dfmethod is None:
            raise JaxhlmError(f"{command}: small needs a fit with a dfmethod() (and reml)")
        return not small

    def _stata_small(self, small: bool, command: str) -> SmallSample | None:
        """The small-sample inference of Stata's ``command`` with or without its ``small`` option (None: z tests)."""
        return self._small(None, self._stata_large(small, command))

    def _method_shown(self, small: SmallSample | None) -> str | None:
        """The name a test's output gives its degrees of freedom (None: exact ones, named by nothing)."""
        return None if small is None else small.method

    @property
    def _equation(self) -> str:
        """The equation that names the coefficients in Stata's constraints, ``[mathach]ses``."""
        return self.design.response

    @property
    def _margins_vce(self) -> str | None:
        """Stata's "Model VCE:" line of margins: none for model-based standard errors after mixed (as its logs show)."""
        return "Robust" if self.robust is not None else None

    #: what margins predict, as Stata's "Expression:" line names it
    _prediction: ClassVar[str] = "Linear prediction, fixed portion, predict()"

    def _wald(self, rows: list[tuple[np.ndarray, float]], small: SmallSample | None) -> "WaldTest":
        """The joint test of the constraints ``rows`` (R row, value): chi-squared, or F by ``small``'s method."""
        R = np.array([r for r, _ in rows])
        q = np.array([v for _, v in rows])
        if small is None:
            res = linear_hypothesis(R, q, np.asarray(self.fit.beta), self._vcov_beta)
            stat, df, ddf, p = res.statistic, res.df, math.inf, res.pvalue
        else:
            f = small.f_test(R, q)
            stat, df, ddf, p = f.statistic, f.df, f.ddf, f.pvalue
        return WaldTest(tuple(rows), self.design.fe_names, self._equation, stat, df, p, ddf, self._method_shown(small))

    def anova(self, ddf: str = "satterthwaite", type: int = 3) -> "TermTests":
        """lmerTest's ``anova(m)``: each fixed-effect term's F test, of type III by default (``type`` 1 or 2 for the
        sequential or type II hypotheses; :func:`~jaxhlm.design.term_contrasts`), on Satterthwaite's denominator
        degrees of freedom or, with ``ddf="kroger"`` (REML), Kenward and Roger's. Terms are labelled as the model
        writes them (``ses:C(sized)`` in a formula, ``sized#c.ses`` in Stata syntax).
        Sum Sq and Mean Sq are W·NumDF·σ̂² and W·σ̂², W the Wald F (Kenward and Roger's before their scaling), as
        lmerTest reports them."""
        from .design import term_contrasts

        check_dfmethod(ddf, self.reml)
        contrasts = term_contrasts(self.design, type)
        small = self._small_sample(ddf)
        rows = {}
        for term, L in contrasts.items():
            if not len(L):
                continue
            f = small.f_test(L, np.zeros(len(L)))
            wald = f.statistic / f.scaling
            rows[term] = (wald * f.df * self.scale, wald * self.scale, f.df, f.ddf, f.statistic, f.pvalue)
        table = pd.DataFrame.from_dict(rows, orient="index",
                                       columns=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"])
        return TermTests(table, DFMETHOD_NAMES[ddf], type)

    def satterthwaite(self, alpha: float = 0.05) -> pd.DataFrame:
        """The fixed effects with t tests on Satterthwaite's degrees of freedom, as lmerTest computes them (its
        default): coef, std_err, df, t, P>|t| and the ``1 - alpha`` interval from t(df).

        With few groups the z tests of the coefficient table are too liberal; these account for the
        uncertainty of the variance components (REML fits are the usual choice, as in Stata).
        """
        _check_alpha(alpha)
        cov_beta = np.asarray(self.fit.cov_beta)
        df = self._small_sample("satterthwaite").df(np.eye(len(self.design.fe_names)))
        t = coefficient_table(np.asarray(self.fit.beta), cov_beta, alpha, df)
        return pd.DataFrame({"coef": t[:, 0], "std_err": t[:, 1], "df": df, "t": t[:, 2], "P>|t|": t[:, 3],
                             "ci_lower": t[:, 4], "ci_upper": t[:, 5]}, index=list(self.design.fe_names))

    def _small_sample(self, method: str) -> SmallSample:
        """Tests by ``method``: the fit's own when it was fitted with it, else set up now."""
        check_vce(self.spec.vce, self.spec.cluster, self.reml, method)
        if self.small is not None and self.small.method == method:
            return self.small
        return small_sample(method, np.asarray(self.fit.beta), np.asarray(self.fit.cov_beta), self.random_effects,
                            self._data, self.design.blocks)

    def lincom(self, expr: str, alpha: float = 0.05, dfmethod: str | None = None, large_sample: bool = False
               ) -> "LinearCombination":
        """Stata's ``lincom``: a linear combination of the fixed effects with its SE, z test and ``1 - alpha``
        interval, e.g. ``"ses + 1.sector#c.ses"`` (the ses slope in sector 1). Terms as in :meth:`test`.
        ``dfmethod`` (``"satterthwaite"``, ``"kroger"``): a t test on small-sample degrees of freedom instead (see
        :meth:`satterthwaite`; Kenward and Roger's also adjusts the SE); by default, the fit's own ``dfmethod``.
        ``large_sample``: the z test whatever the fit's ``dfmethod``, as Stata's ``lincom`` without ``small``."""
        _check_alpha(alpha)
        small = self._small(dfmethod, large_sample)
        if "=" in expr:
            raise JaxhlmError(f"lincom {expr!r}: give an expression, not an equation (test compares with '=')")
        row, const = _linear(expr, self.design, expr)
        if const:
            raise JaxhlmError(f"lincom {expr!r}: leave out the constant term; lincom estimates a combination "
                              "of coefficients (add the constant to its estimate and interval)")
        if not np.any(row):
            raise JaxhlmError(f"lincom {expr!r} involves no coefficient")
        beta, V, df = self._tested(row[None], small)
        b, se, z, p, lo, hi = coefficient_table(np.array([row @ beta]), np.array([[row @ V @ row]]), alpha, df)[0]
        return LinearCombination(constraint_text(row, 0.0, self.design.fe_names, self._equation),
                                 self.design.response, b, se, z, p, lo, hi, 1 - alpha,
                                 math.inf if df is None else float(df[0]), self._method_shown(small))

    def _tested(self, L: np.ndarray, small: SmallSample | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(β̂, the Cov(β̂) tests of the rows ``L`` use, their t tests' df or None for z tests): ``small``'s, or the
        reported Cov(β̂) with normal tests."""
        if small is None:
            return np.asarray(self.fit.beta), self._vcov_beta, None
        return np.asarray(self.fit.beta), small.vcov, small.df(L)

    def margins(self, over: str | Sequence[str] | None = None, at: Mapping[str, float | Sequence[float]] | None = None,
                dydx: str | None = None, pwcompare: bool = False, alpha: float = 0.05, dfmethod: str | None = None,
                mcompare: str = "noadjust", large_sample: bool = False) -> "Margins":
        """Stata's ``margins`` of the linear prediction's fixed portion (xb): the mean over the estimation sample of
        Xβ̂ with each variable of ``over`` set to each of its values in the sample (``margins sector``; several
        variables: every combination, ``margins sector#female``) and each of ``at`` set to the given value or values
        (``at(ses=(-1 0 1))``), the others as observed. Each margin is a linear combination x̄ᵀβ̂, so its standard
        error is the delta method's, exact here: √(x̄ᵀ Cov(β̂) x̄), robust for a robust fit; z tests, or t tests on
        small-sample degrees of freedom with a ``dfmethod`` (the fit's by default), as :meth:`lincom`. Frequency
        weights weight the mean. Needs the fitted data in memory.

        ``dydx``: a continuous variable's average marginal effect instead, the mean of ∂(Xβ̂)/∂x (Stata's
        ``margins sector, dydx(ses)``: the slope of ses in each sector, its interactions included), by central
        differences of the design, exact for terms up to quadratic in x.

        ``pwcompare``: every pairwise difference of the margins instead (Stata's ``margins sector, pwcompare(effects)``;
        rows "1 vs 0", cells in parentheses when they have several values, the at() values by their ``_at`` number),
        unadjusted for multiple comparisons, as Stata's default; ``mcompare`` adjusts them (``bonferroni``,
        ``sidak``, ``scheffe``; :func:`~jaxhlm.infer.coefficient_table`), z or t tests alike.

        ``large_sample``: z tests on the reported Cov(β̂) whatever the fit's ``dfmethod``, as Stata's ``margins``
        after ``mixed`` (the do-file runner's)."""
        _check_alpha(alpha)
        small = self._small(dfmethod, large_sample)
        if mcompare not in MCOMPARE:
            raise JaxhlmError(f"mcompare({mcompare}): the adjustments are {', '.join(MCOMPARE)}")
        if mcompare != "noadjust" and not pwcompare:
            raise JaxhlmError("mcompare adjusts pairwise comparisons: give pwcompare too")
        d = self.design
        if self.spec.sampled:
            raise JaxhlmError("margins are not computed for fits with sampling weights: the population's mean needs "
                              "each observation's weight in the population, which the levels' weights do not give "
                              "under a pseudo-likelihood fit here")
        if d.source is None:
            raise DataError("margins average the predictions over the estimation sample, and this fit's data were read "
                            "in chunks; pass the data as a DataFrame")
        over = [over] if isinstance(over, str) else list(over or [])
        at = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in (at or {}).items()}
        known = fixed_variables(self.spec.fixed)
        for name in [*over, *at, *([dydx] if dydx else [])]:
            if name not in known:
                raise JaxhlmError(f"{name!r} is not a variable of the model's fixed part ({', '.join(sorted(known))})")
        if set(over) & set(at):
            raise JaxhlmError(f"{', '.join(sorted(set(over) & set(at)))} given both as a margin and in at()")
        if dydx in over:
            raise JaxhlmError(f"{dydx!r} is both a margin and the variable of dydx(); its slope is one number")
        rows = d.rows()
        frame = d.source.iloc[rows.position]
        levels = []
        for name in over:
            values = np.sort(frame[name].unique())
            if len(values) > MARGIN_LEVELS:
                raise JaxhlmError(f"{name!r} takes {len(values):,} values; margins over a variable are for a factor (at "
                                  f"most {MARGIN_LEVELS}): for a continuous one, fix it at values with at()")
            levels.append(values)
        names = [*at, *over]  # Stata's order: by _at, then by the over variables' values
        at_values = list(itertools.product(*at.values()))
        combos = list(itertools.product(*at.values(), *levels))
        L = _margin_rows(d, frame, np.ones(len(frame)) if rows.freq is None else rows.freq,
                         [dict(zip(names, combo)) for combo in combos], {dydx: 1} if dydx else None)[:, d.encoding.kept]
        index = pd.MultiIndex.from_tuples(combos, names=names) if names else pd.Index(["_cons"])
        # Stata's row labels: the _at number, then the over variables' values
        per_at = len(combos) // max(len(at_values), 1)
        cells = [[str(k // per_at + 1)] * bool(at) + [self._level_text(name, v) for name, v in zip(over, combo[len(at):])]
                 for k, combo in enumerate(combos)]
        joined = any(v in self.value_labels for v in over)
        labels = [_cell_text(c, joined) for c in cells] if names else ["_cons" if dydx is None else dydx]
        if pwcompare:
            if len(combos) < 2:
                raise JaxhlmError("pwcompare compares margins pairwise, and there is one; give margins over a "
                                  "factor, or several at() values")
            pairs = [(i, j) for i in range(len(combos)) for j in range(i + 1, len(combos))]
            L = np.stack([L[j] - L[i] for i, j in pairs])
            labels = [_pair_text(cells[j], cells[i], joined) for i, j in pairs]
            index = pd.Index(labels, name="#".join((["_at"] if at else []) + over))
        beta, V, df = self._tested(L, small)
        table = coefficient_table(L @ beta, L @ V @ L.T, alpha, df, mcompare)
        stat = "z" if df is None else "t"
        what = "contrast" if pwcompare else "margin" if dydx is None else "dydx"
        frame = pd.DataFrame(table, index=index, columns=[what, "std_err", stat, "p", "ci_lower", "ci_upper"])
        if df is not None:
            frame["df"] = df
        return Margins(frame, tuple(labels), tuple(over), tuple(at), tuple(at_values) if at else (), d.response,
                       self.nobs, self._margins_vce, 1 - alpha,
                       adjusted=bool(known) and set(at) | set(over) >= known, dydx=dydx, pwcompare=pwcompare,
                       mcompare=mcompare, expression=self._prediction)

    def _term_cells(self, terms: str | Sequence[str], asobserved: bool, command: str
                    ) -> list[tuple[Term, dict[str, str], tuple[str, ...], list[list[int]], np.ndarray, np.ndarray]]:
        """For each term of a Stata termlist (:func:`~jaxhlm.stata.contrast_terms`), its factors' levels and its
        cells' margins as rows over the estimated coefficients: per combination of the term's factors' levels, the
        mean design row with those set, every other factor of the model averaged over its levels with equal
        weights (Stata's ``asbalanced``; ``asobserved``: left as in the sample) and continuous variables as
        observed; with continuous variables in the term, the row's coefficient of their product instead (a slope,
        ``sector#c.ses``). Also the term's contrast operators ({variable: operator}), the factors its effects are
        taken within (``@``, the term's last factors), and each cell row's part
        outside the estimable functions (the row space of the full design, omitted columns included), for
        :func:`_estimable` to refuse what no data inform."""
        from .stata import contrast_terms  # the Stata front end builds on results

        fixed, d = self.spec.fixed, self.design
        if not isinstance(terms, str):
            if not (isinstance(terms, Sequence) and all(isinstance(t, str) for t in terms)):
                raise JaxhlmError(f"{command} takes its terms as text, 'sized sector' or ['sized', 'sector'], not "
                                  f"{type(terms).__name__}")
            terms = " ".join(terms)
        if not isinstance(fixed, FixedTerms):
            raise JaxhlmError(f"{command} reads Stata factor-variable terms, and this model was written as a formula; "
                              "its terms' tests are anova(), its margins' differences margins(pwcompare=True)")
        if self.spec.sampled:
            raise JaxhlmError(f"{command} averages predictions over the estimation sample, which is not computed for "
                              "fits with sampling weights (see margins)")
        if d.source is None:
            raise DataError(f"{command} averages the predictions over the estimation sample, and this fit's data "
                            "were read in chunks; pass the data as a DataFrame")
        factors = {v.name for t in fixed.terms for v in t.vars if v.factor}
        model_terms = {t.key for t in fixed.terms}
        rows = d.rows()
        frame = d.source.iloc[rows.position]
        w = np.ones(len(frame)) if rows.freq is None else rows.freq
        levels_of = d.encoding.encoder.levels
        X = d.encoding.full_columns(frame)
        ev, U = np.linalg.eigh(X.T @ X)
        space = U[:, ev > 1e-10 * ev.max()].T  # X's rows span the estimable functions: XᵀX's range
        out = []
        for t, operators, within in contrast_terms(terms, d.source.columns, command):
            if t.key not in model_terms:
                continuous = [v.name for v in t.vars if v.factor and v.name not in factors and
                              v.name in fixed.variables]
                if continuous:
                    raise JaxhlmError(f"{command} {t.header}: {', '.join(continuous)} enters the model as continuous "
                                      f"(c.); {command} compares the levels of factor variables (i.)")
                raise JaxhlmError(f"{command} {t.header}: not a term of the model (its terms: "
                                  f"{', '.join(mt.header for mt in fixed.terms)})")
            own = [v.name for v in t.vars if v.factor]
            if not own:
                raise JaxhlmError(f"{command} {t.header}: a term of continuous variables only has no levels to "
                                  "compare; test its coefficient with test")
            others = [] if asobserved else sorted(factors - set(own))
            levels = [[int(v) for v in levels_of[n]] for n in own]
            balance = list(itertools.product(*(levels_of[n] for n in others)))
            settings = [dict(zip(own + others, cell + rest)) for cell in itertools.product(*levels) for rest in balance]
            orders = {v.name: sum(u.name == v.name for u in t.vars) for v in t.vars if not v.factor}
            full = _margin_rows(d, frame, w, settings, orders)
            cells = full.reshape(-1, len(balance), full.shape[1]).mean(axis=1)
            out.append((t, operators, within, levels, cells, cells - cells @ space.T @ space))
        return out

    def contrast(self, terms: str | Sequence[str], overall: bool = False, asobserved: bool = False, small: bool = False,
                 alpha: float = 0.05) -> "Contrasts":
        """Stata's ``contrast termlist``: for each term (``sector``, ``sized#sector``, ``sized##sector`` for both
        main effects and their interaction, ``sector#c.ses`` for the slopes of ses across sectors), the joint Wald
        chi-squared test that the term's effect is nil, ANOVA-style. Its hypotheses are on the term's cell margins
        (:meth:`_term_cells`): every other factor balanced (``asobserved``: as in the sample), continuous variables
        as observed, so at their means (not at 0, where type III tests of :meth:`anova` place them). A main effect
        compares its levels' margins; an interaction, the differences of differences; with continuous variables in
        the term, their coefficient in each cell's margin takes the margin's place. Factor-only models thus get
        type III hypotheses. Stata reports chi-squared after ``mixed`` whatever its ``dfmethod`` (on e(V), the
        reported Cov(β̂)), and so does this; ``small`` gives F tests on the fit's small-sample denominator df
        instead (Stata's option of that name). ``overall`` adds the joint test of all the terms. A term's hypotheses
        must be estimable: a cell that no data inform (an empty cell of an interaction) is refused by name.

        Contrast operators name the contrasts of a factor's levels (:func:`_operator_rows`): ``r.sized`` (each
        level against the first; ``rb3.`` against level 3), ``a.``/``ar.`` (adjacent levels), ``g.`` (against the
        mean of the levels), ``h.``/``j.`` (Helmert, reverse Helmert); in an interaction, a factor without one is
        taken against its base (``(2 vs 1) (1 vs base)``). Each contrast is then tested on its own, with their joint
        test, and estimated (``effects``, with ``1 - alpha`` intervals). For models written in Stata syntax."""
        _check_alpha(alpha)
        method = self._stata_small(small, "contrast")
        # each term's rows, its tests by name (label, the rows tested together), and whether those are named contrasts
        rows: dict[str, tuple[np.ndarray, list[tuple[str, list[int]]], bool]] = {}
        for t, operators, within, levels, cells, outside in self._term_cells(terms, asobserved, "contrast"):
            own = [v for v in t.vars if v.factor]
            inner = len(own) - len(within)
            D, labels = np.ones((1, 1)), [""]
            for v, lv in zip(own[:inner], levels[:inner]):
                texts = [self._level_text(v.name, x) for x in lv]
                if operators:
                    C, names = _operator_rows(operators.get(v.name), lv, texts, v.base)
                else:  # a joint test: each level against the first, differences of differences across factors
                    C, names = np.hstack([-np.ones((len(lv) - 1, 1)), np.eye(len(lv) - 1)]), [""] * (len(lv) - 1)
                D, labels = np.kron(D, C), [" ".join(filter(None, (a, b))) for a in labels for b in names]
            header, groups = t.header, [(label, [k]) for k, label in enumerate(labels)] if operators else []
            if within:  # the contrasts at each cell of the within factors (theirs the cells' last, fastest)
                at = list(itertools.product(*levels[inner:]))
                names = [" ".join(self._level_text(n, x) for n, x in zip(within, cell)) for cell in at]
                D = np.vstack([np.kron(D, np.eye(len(at))[j]) for j in range(len(at))])
                r = len(labels)
                groups = ([(f"{label} {w}", [j * r + k]) for j, w in enumerate(names) for k, label in enumerate(labels)]
                          if operators else [(w, list(range(j * r, (j + 1) * r))) for j, w in enumerate(names)])
                header = f"{Term(tuple(own[:inner]) + tuple(v for v in t.vars if not v.factor)).header}@" \
                         f"{'#'.join(within)}"
            rows[header] = (_estimable(self.design, D @ cells, D @ outside, f"contrast {header}"), groups,
                            bool(operators))
        if overall and len(rows) > 1:
            rows["Overall"] = (np.vstack([C for C, _, _ in rows.values()]), [], False)
        beta = np.asarray(self.fit.beta)
        tests, effects = [], []
        for term, (C, groups, named) in rows.items():
            for label, at in groups:  # each named contrast (or each within cell's) on its own
                tests.append((term, label, self._wald([(C[k], 0.0) for k in at], method)))
            tests.append((term, "Joint" if groups else "", self._wald([(r, 0.0) for r in C], method)))
            if named:  # named contrasts: their estimates
                _, V, df = self._tested(C, method)
                table = coefficient_table(C @ beta, C @ V @ C.T, alpha, df)
                table = table if df is None else np.column_stack([table, df])
                effects += [(term, label, *table[at[0]]) for label, at in groups]
        columns = ["df", "chi2", "P>chi2"] if method is None else ["df", "ddf", "F", "P>F"]
        table = pd.DataFrame([(float(w.df), w.statistic, w.pvalue) if method is None else
                              (float(w.df), w.ddf, w.statistic, w.pvalue) for _, _, w in tests],
                             index=pd.MultiIndex.from_tuples([(t, c) for t, c, _ in tests], names=["term", "contrast"]),
                             columns=columns)
        frame = None
        if effects:
            stat = "z" if method is None else "t"
            frame = pd.DataFrame([e[2:] for e in effects], columns=["contrast", "std_err", stat, "p", "ci_lower",
                                                                    "ci_upper", *([] if method is None else ["df"])],
                                 index=pd.MultiIndex.from_tuples([e[:2] for e in effects], names=["term", "contrast"]))
        return Contrasts(table, self._equation, "asobserved" if asobserved else "asbalanced", frame, 1 - alpha)

    def pwcompare(self, terms: str | Sequence[str], mcompare: str = "noadjust", alpha: float = 0.05, asobserved: bool = False,
                  small: bool = False) -> "PairwiseComparisons":
        """Stata's ``pwcompare termlist``: every pairwise difference of each term's cell margins (as
        :meth:`contrast` forms them: other factors balanced, or ``asobserved``; ``sector#c.ses``: of the slopes),
        with z tests and intervals on e(V), as Stata after ``mixed``. Rows "1 vs 0", "2 vs 0", "2 vs 1" (cells of
        several factors in parentheses, "(1 2) vs (1 1)"). ``mcompare`` adjusts the p-values and intervals for the
        number of comparisons k within each term: ``noadjust`` (the default), ``bonferroni`` (p·k, the interval at
        α/k), ``sidak`` (1 − (1 − p)ᵏ, the interval at 1 − (1 − α)^(1/k)) or ``scheffe`` (z² against χ² on the
        rank of the term's comparisons, r = its cells less one: simultaneous over every contrast of the cells).
        ``small``: t tests on the fit's small-sample degrees of freedom instead (Stata's option of that name)."""
        _check_alpha(alpha)
        if mcompare not in MCOMPARE:
            raise JaxhlmError(f"mcompare({mcompare}): the adjustments are {', '.join(MCOMPARE)}")
        method = self._stata_small(small, "pwcompare")
        blocks = []
        for t, operators, within, levels, cells, outside in self._term_cells(terms, asobserved, "pwcompare"):
            if operators or within:
                raise JaxhlmError(f"pwcompare {t.header}: contrast operators and @ belong to contrast; pwcompare "
                                  "compares every pair of levels")
            combos = list(itertools.product(*levels))
            if len(combos) < 2:
                raise JaxhlmError(f"pwcompare {t.header}: one cell, nothing to compare")
            pairs = [(i, j) for i in range(len(combos)) for j in range(i + 1, len(combos))]
            D = np.zeros((len(pairs), len(combos)))
            for k, (i, j) in enumerate(pairs):
                D[k, i], D[k, j] = -1.0, 1.0
            L = _estimable(self.design, D @ cells, D @ outside, f"pwcompare {t.header}")
            beta, V, df = self._tested(L, method)
            table = coefficient_table(L @ beta, L @ V @ L.T, alpha, df, mcompare)
            own = [v.name for v in t.vars if v.factor]
            texts = [[self._level_text(n, v) for n, v in zip(own, c)] for c in combos]
            joined = any(n in self.value_labels for n in own)
            index = pd.Index([_pair_text(texts[j], texts[i], joined) for i, j in pairs], name=t.header)
            frame = pd.DataFrame(table, index=index, columns=["contrast", "std_err", "z" if df is None else "t", "p",
                                                              "ci_lower", "ci_upper"])
            if df is not None:
                frame["df"] = df
            blocks.append(frame)
        return PairwiseComparisons(tuple(blocks), self._equation, mcompare, 1 - alpha,
                                   "asobserved" if asobserved else "asbalanced")

    def _level_text(self, variable: str, value: float) -> str:
        """A variable's value as tables label it: its value label, else the number in %9.0g."""
        return render.level_text(value, self.value_labels.get(variable))

    # ---- output ---------------------------------------------------------------------------------
    def summary(self) -> "Summary":
        return Summary(render.summary_text(self))

    def __str__(self) -> str:
        return render.summary_text(self)

    def to_frame(self) -> dict[str, pd.DataFrame]:
        """The coefficient and random-effects tables as DataFrames."""
        t = self.coef_table
        fixed = pd.DataFrame(t, index=list(self.design.fe_names),
                             columns=["coef", "std_err", "z", "p", "ci_lower", "ci_upper"])
        re = self.random_effects
        random = pd.DataFrame({"estimate": re.estimate, "std_err": re.se, "ci_lower": re.ci[:, 0],
                               "ci_upper": re.ci[:, 1]}, index=self.design.qualify(re.labels))
        return {"fixed": fixed, "random": random}

    def to_dict(self) -> dict:
        """The JSON document of ``jaxhlm fit --json``."""
        fixed = {n: {"coef": float(b), "se": float(se)}
                 for n, b, se in zip(self.design.fe_names, self.coef_table[:, 0], self.coef_table[:, 1])}
        if self.ddf is not None:  # Satterthwaite's degrees of freedom
            for n, df in zip(self.design.fe_names, self.ddf):
                fixed[n]["df"] = float(df)
        nan_none = lambda v: None if not math.isfinite(v) else float(v)  # noqa: E731
        re = self.random_effects
        return {
            "command": self.command, "llf": self.llf, "nobs": self.nobs, "ngroups": self.ngroups,
            "groups": {} if self.spec.linear else {name: len(s) for name, s in zip(self.design.level_names,
                                                                                 self.design.level_sizes)},
            "converged": self.converged,
            "singular": self.singular, "reml": self.reml,
            "fixed": fixed,
            "random": {lab: {"estimate": float(e), "se": nan_none(s)}
                       for lab, e, s in zip(self.design.qualify(re.labels), re.estimate, re.se)},
            "aic": self.aic, "bic": self.bic,
            "omitted": list(self.design.omitted), "n_dropped": self.design.n_dropped,
            "weights": {"precision": self.spec.weights, "frequency": self.spec.freq_weights,
                        "sampling": None if not self.spec.sampled else {
                            "observations": self.spec.pweights, "pwscale": self.spec.pwscale,
                            **{level: w for level, w in zip(self.spec.levels, self.spec.level_pweights) if w}}},
            "vce": self.spec.vce,
            "clusters": None if self.robust is None or self.robust.variable == OBSERVATIONS
            else {self.robust.variable: self.robust.count},
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, eq=False)
class Regression(MixedResult):
    """Stata's ``regress``: least squares, reported as ``regress`` reports it, with every postestimation method of a
    :class:`MixedResult` (test, lincom, margins, contrast, predict, ...).

    It is a model without random effects fitted by ML, so ``llf`` is Stata's e(ll), the Gaussian log likelihood at
    σ̂² = RSS/N, and a likelihood-ratio test against a mixed model needs no conversion. What differs from that fit is
    what ``regress`` reports: Cov(β̂) = s²(XᵀX)⁻¹ with s² = RSS/(N − k), or the robust sandwich with Stata's factor
    (N − 1)/(N − k) · G/(G − 1) (HC1 over observations, G the clusters); t and F tests on e(df_r), N − k, or G − 1
    with clustered standard errors; and the parameters counted as e(rank) = k, the coefficients alone (Stata's
    ``estat ic`` and ``lrtest`` after ``regress``). Built by :meth:`of`."""

    command = "regress"

    @classmethod
    def of(cls, model: MixedResult) -> "Regression":
        """The regression of a fit without random effects (ML; ``vce`` model-based or robust)."""
        if not model.spec.linear or model.reml:
            raise JaxhlmError("a regression is an ML fit without random effects")
        n, k = float(model.design.stats.n), len(model.design.fe_names)
        if n <= k:
            raise DataError(f"{n:.0f} observations for {k} coefficients: a regression needs more observations than "
                            "coefficients to estimate its residual variance")
        scale = n / (n - k) if model.robust is None else (n - 1) / (n - k)
        f = model.fit._replace(cov_beta=np.asarray(model.fit.cov_beta) * scale)
        df_r = n - k if model.robust is None or model.robust.variable == OBSERVATIONS else model.robust.count - 1.0
        small = SmallSample("residual", np.asarray(f.beta), np.asarray(f.cov_beta), model.random_effects, model._data,
                            model.design.blocks, ddf=df_r)
        icpt = model.design.fe_names.index(model.design.constant) if model.design.constant else None
        return cls(**{**{field.name: getattr(model, field.name) for field in dataclasses.fields(model)},
                      "fit": f, "small": small, "wald": model_wald(np.asarray(f.beta), np.asarray(f.cov_beta), icpt, small)})

    # ---- what regress reports ----------------------------------------------------------------------
    @property
    def df_r(self) -> float:
        """Residual degrees of freedom of the t and F tests: N − k, or G − 1 with clustered standard errors."""
        return float(self.small.ddf)

    @property
    def ssr(self) -> float:
        """The residual sum of squares."""
        return float(self.fit.sigma2) * float(self.design.stats.n)

    @property
    def centered_tss(self) -> float:
        """The total sum of squares about the mean (uncentred, Σy², for a model without a constant, as Stata's)."""
        st = self.design.stats
        if self.design.constant is None:
            return float(st.yty)
        total = float(st.Xty[self.design.fe_names.index(self.design.constant)])
        return float(st.yty) - total**2 / float(st.n)

    @property
    def ess(self) -> float:
        """The model (explained) sum of squares: none for the constant alone (not its rounding error)."""
        return self.centered_tss - self.ssr if self.df_model else 0.0

    @property
    def df_model(self) -> float:
        """The coefficients less the constant."""
        return float(len(self.design.fe_names) - (self.design.constant is not None))

    @property
    def rsquared(self) -> float:
        return self.ess / self.centered_tss

    @property
    def rsquared_adj(self) -> float:
        n, k = float(self.design.stats.n), len(self.design.fe_names)
        return 1.0 - (1.0 - self.rsquared) * (n - (self.design.constant is not None)) / (n - k)

    @property
    def mse_resid(self) -> float:
        """s² = RSS/(N − k), the square of Stata's Root MSE."""
        return self.ssr / (float(self.design.stats.n) - len(self.design.fe_names))

    @property
    def llf_null(self) -> float:
        """e(ll_0): the log likelihood of the model with the constant alone (NaN without a constant)."""
        if self.design.constant is None:
            return math.nan
        n = float(self.design.stats.n)
        return -0.5 * n * (1.0 + math.log(2.0 * math.pi * self.centered_tss / n))

    @cached_property
    def standardized(self) -> pd.Series:
        """The standardized coefficients (regress's ``beta``): each b·sd(x)/sd(y) over the estimation sample (its
        frequency weights counted), NaN for the constant."""
        rows = self.design.rows()
        w = np.ones(len(rows.y)) if rows.freq is None else rows.freq

        def sd(x: np.ndarray) -> np.ndarray:
            mean = np.average(x, axis=0, weights=w)
            return np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))

        beta = np.asarray(self.fit.beta) * sd(rows.X) / sd(rows.y)
        names = list(self.design.fe_names)
        if self.design.constant is not None:
            beta[names.index(self.design.constant)] = np.nan
        return pd.Series(beta, index=names, name="beta")

    def vif(self, uncentered: bool = False) -> pd.Series:
        """Stata's ``estat vif``: each coefficient's variance inflation factor 1/(1 − R²ⱼ), R²ⱼ that of its column
        regressed on the others (the diagonal of the inverse correlation matrix of the columns), over the estimation
        sample with its frequency weights. ``uncentered``: R²ⱼ about zero, the constant's row included (the only
        form for a model without a constant)."""
        if self.design.constant is None and not uncentered:
            raise JaxhlmError("estat vif: the centred VIF needs a constant in the model; use estat vif, uncentered")
        rows = self.design.rows()
        w = np.ones(len(rows.y)) if rows.freq is None else rows.freq
        names = list(self.design.fe_names)
        keep = [j for j, n in enumerate(names) if uncentered or n != self.design.constant]
        X = rows.X[:, keep]
        if not uncentered:
            X = X - np.average(X, axis=0, weights=w)
        cross = (X * w[:, None]).T @ X
        return pd.Series(np.diag(np.linalg.inv(cross)) * np.diag(cross), index=[names[j] for j in keep], name="VIF")

    def hettest(self, variables: Sequence[str] | None = None, rhs: bool = False, iid: bool = False) -> ChiTest:
        """Stata's ``estat hettest``: the Breusch–Pagan/Cook–Weisberg score test that the residual variance does
        not change with the fitted values (or with the data's ``variables``, or with the model's own columns,
        ``rhs``): half the explained sum of squares of e²/σ̂² regressed on them, chi2 on their number; ``iid``
        (Koenker's studentized form, not assuming normal errors) N·R² of that regression."""
        rows = self.design.rows()
        if rows.freq is not None:
            raise JaxhlmError("estat hettest is computed here for regressions without weights")
        beta = np.asarray(self.fit.beta)
        fitted = rows.X @ beta
        if variables:
            Z = np.column_stack([self.design.source[v].iloc[rows.position].to_numpy(dtype=float) for v in variables])
        elif rhs:
            Z = rows.X[:, [j for j, n in enumerate(self.design.fe_names) if n != self.design.constant]]
        else:
            Z = fitted[:, None]
        if np.isnan(Z).any():
            raise DataError("estat hettest: a variable is missing in the estimation sample")
        e2 = (rows.y - fitted) ** 2
        u = e2 / e2.mean()
        A = np.column_stack([np.ones(len(u)), Z])
        coef, *_ = np.linalg.lstsq(A, u, rcond=None)
        explained = float(np.sum((A @ coef - u.mean()) ** 2))
        df = np.linalg.matrix_rank(Z - Z.mean(axis=0))
        stat = len(u) * explained / float(np.sum((u - u.mean()) ** 2)) if iid else explained / 2
        return ChiTest(stat, int(df), float(special.chdtrc(df, stat)))

    def diagnostics(self) -> pd.DataFrame:
        """Stata's ``predict`` statistics of the estimation sample's observations after ``regress``: leverage
        (the hat matrix's diagonal), rstandard (e/(s√(1 − h))), rstudent (the same with s of the fit without the
        observation) and cooksd (Cook's distance)."""
        rows = self.design.rows()
        if rows.freq is not None:
            raise JaxhlmError("leverage, rstandard, rstudent and cooksd are computed here for regressions without weights")
        Q, _ = np.linalg.qr(rows.X)
        h = np.sum(Q**2, axis=1)
        e = rows.y - rows.X @ np.asarray(self.fit.beta)
        n, k = len(e), rows.X.shape[1]
        s2 = float(e @ e) / (n - k)
        standard = e / np.sqrt(s2 * (1 - h))
        s2_without = ((n - k) * s2 - e**2 / (1 - h)) / (n - k - 1)
        return pd.DataFrame({"leverage": h, "rstandard": standard, "rstudent": e / np.sqrt(s2_without * (1 - h)),
                             "cooksd": standard**2 * h / ((1 - h) * k)}, index=rows.index)

    @property
    def df_modelwc(self) -> int:
        """e(rank): the coefficients (regress counts no variance parameter)."""
        return len(self.design.fe_names)

    @property
    def e_scalars(self) -> dict[str, float]:
        """Stata's e() scalars after ``regress``."""
        return {"N": float(self.nobs), "df_m": self.df_model, "df_r": self.df_r, "F": self.wald.statistic,
                "r2": self.rsquared, "rmse": math.sqrt(self.mse_resid), "mss": self.ess, "rss": self.ssr,
                "r2_a": self.rsquared_adj, "ll": self.llf, "ll_0": self.llf_null, "rank": float(self.df_modelwc)}

    # ---- tests: t and F on df_r, whatever Stata's small option says --------------------------------
    def _stata_large(self, small: bool, command: str) -> bool:
        return False

    def _small(self, dfmethod: str | None, large_sample: bool) -> SmallSample | None:
        """t and F tests on df_r, or with ``large_sample`` z and chi-squared ones."""
        return None if large_sample else self._small_sample(dfmethod or "residual")

    def _small_sample(self, method: str) -> SmallSample:
        if method != "residual":
            raise JaxhlmError(f"a regression's t and F tests have its residual degrees of freedom, N - k (G - 1 with "
                              f"clustered standard errors); dfmethod {method!r} is for mixed models")
        return self.small

    def _method_shown(self, small: SmallSample | None) -> str | None:
        return None

    @property
    def _equation(self) -> str:
        return ""

    @property
    def _margins_vce(self) -> str | None:
        return "Robust" if self.robust is not None else "OLS"

    _prediction = "Linear prediction, predict()"

    def _variance_equations(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """None: e(b) after ``regress`` holds the coefficients alone."""
        return [], np.zeros(0), np.zeros((0, 0))

    def to_dict(self) -> dict:
        """The JSON document of ``jaxhlm regress --json``: a mixed model's, and Stata's e() after regress."""
        return {**super().to_dict(), "e": self.e_scalars}

    def summary(self) -> "Summary":
        return Summary(render.regress_text(self))

    def __str__(self) -> str:
        return render.regress_text(self)


@dataclass(frozen=True)
class GroupInfluence:
    """Influence of each group on the fixed effects (:meth:`MixedResult.influence`).

    ``dfbeta``: β̂ − β̂₍₋ⱼ₎ (groups × coefficients); ``dfbetas``: the same over the full fit's standard errors;
    ``cooks_distance``: Dⱼ = DFBETAⱼᵀ Cov(β̂)⁻¹ DFBETAⱼ / p; ``method``: "one-step" (implicit derivatives) or
    "exact" (refits without each group, whose convergence flags are ``converged``).
    """

    dfbeta: pd.DataFrame
    dfbetas: pd.DataFrame
    cooks_distance: pd.Series
    group_sizes: pd.Series
    method: str
    converged: np.ndarray | None = None

    def summary_frame(self) -> pd.DataFrame:
        """One row per group: n, Cook's distance and DFBETAS (``dfb_<coefficient>``), most influential first."""
        frame = pd.concat([self.group_sizes, self.cooks_distance, self.dfbetas.add_prefix("dfb_")], axis=1)
        return frame.sort_values("cooks_d", ascending=False, kind="stable")

    def __str__(self) -> str:
        return render.influence_text(self)


class Summary(str):
    """The Stata-style report; prints as text."""

    def __repr__(self) -> str:
        return str(self)


def _check_method(method: str) -> str:
    if method not in ("wald", "profile", "bootstrap"):
        raise JaxhlmError(f"method must be 'wald', 'profile' or 'bootstrap', not {method!r}.")
    return method


def _percentiles(draws: np.ndarray, alpha: float) -> np.ndarray:
    """(k, 2) percentile intervals of the k columns of bootstrap estimates (a correlation beside a zero
    variance is NaN in its replicate and left out)."""
    return np.nanquantile(draws, [alpha / 2, 1 - alpha / 2], axis=0).T


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise JaxhlmError(f"alpha must be between 0 and 1, got {alpha}")


# ---- linear hypotheses ------------------------------------------------------------------------------
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_B = re.compile(r"^_b\[(?:(?P<eq>[^:\]]+):)?(?P<name>[^\]]+)\]$|^\[(?P<eq2>[^\]]+)\](?P<name2>.+)$")


#: Stata's other ways to name an equation's coefficient: [eq]name, [eq]_b[name] and [eq]_se[name] (quoted text
#: first, to be left as it is).
_EQUATION_REFERENCE = re.compile(r'"[^"]*"|(?<![\w\]])\[(\w+)\](?:_(b|se)\[([^\]]+)\]|([\w.#]+))')


def coefficient_references(text: str) -> str:
    """``text`` with Stata's ``[eq]name``, ``[eq]_b[name]`` and ``[eq]_se[name]`` written as ``_b[eq:name]``
    (``_se[eq:name]``), the one form expressions here read; quoted text is left alone."""
    return _EQUATION_REFERENCE.sub(lambda m: m[0] if m[1] is None else f"_{m[2] or 'b'}[{m[1]}:{m[3] or m[4]}]",
                                   text)


def _split_terms(expr: str) -> list[str]:
    """Split at top-level + and - (not inside brackets), keeping each sign with its term."""
    terms, depth, cur = [], 0, ""
    for c in expr:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if depth == 0 and c in "+-" and cur.strip() and not re.search(r"\d[eE]$", cur.strip()):
            terms.append(cur)
            cur = ""
        cur += c
    if cur.strip():
        terms.append(cur)
    return [t.replace(" ", "") for t in terms]


def _coefficient_key(name: str) -> frozenset[tuple]:
    """A Stata coefficient's variables, each as factor or continuous (``2.sized#c.ses`` → sized a factor, ses
    continuous): the identity of the term it belongs to (:attr:`jaxhlm.factor.Term.key`)."""
    levels = [re.fullmatch(r"\d+[bno]*\.(.+)", part) for part in name.split("#")]
    return term_key((level[1], True) if level else (part.removeprefix("c."), False)
                    for part, level in zip(name.split("#"), levels))


def _coefficient(token: str, design: Design, text: str) -> int:
    """Index of the fixed effect ``token`` names (``x``, ``[eq]x``, ``_b[x]``, ``_b[eq:x]``, ``_cons``)."""
    name = token
    if m := _B.match(token):
        eq, name = (m["eq"], m["name"]) if m["name"] else (m["eq2"], m["name2"])
        if eq is not None and eq != design.response:
            raise JaxhlmError(f"constraint {text!r}: equation [{eq}] not found; the model's equation is "
                              f"[{design.response}]")
    names = list(design.fe_names)
    if name == "_cons" and design.constant:
        name = design.constant
    if name not in names:
        why = " (omitted because of collinearity)" if name in design.omitted else ""
        raise JaxhlmError(f"constraint {text!r}: {name!r} is not a coefficient of the model{why}; coefficients: "
                          + ", ".join(names))
    return names.index(name)


def _linear(expr: str, design: Design, text: str) -> tuple[np.ndarray, float]:
    vec, const = np.zeros(len(design.fe_names)), 0.0
    for term in _split_terms(expr):
        sign = -1.0 if term.startswith("-") else 1.0
        term = term.lstrip("+-")
        if _NUMBER.match(term):
            const += sign * float(term)
            continue
        coef, name = 1.0, term
        if "*" in term:
            a, _, b = term.partition("*")
            coef, name = (float(a), b) if _NUMBER.match(a) else (float(b), a) if _NUMBER.match(b) else (None, term)
            if coef is None:
                raise JaxhlmError(f"constraint {text!r}: {term!r} is not linear in the coefficients")
        vec[_coefficient(name, design, text)] += sign * coef
    return vec, const


def _parse_constraint(text: str, design: Design) -> tuple[np.ndarray, float]:
    sides = text.split("=")
    if len(sides) > 2:
        raise JaxhlmError(f"constraint {text!r} has more than one '='")
    lhs, rhs = (sides[0], sides[1]) if len(sides) == 2 else (sides[0], "0")
    if not lhs.strip() or not rhs.strip():
        raise JaxhlmError(f"constraint {text!r} has an empty side")
    a, ca = _linear(lhs, design, text)
    b, cb = _linear(rhs, design, text)
    row = a - b
    if not np.any(row):
        raise JaxhlmError(f"constraint {text!r} involves no coefficient")
    return row, cb - ca


def constraint_text(row: np.ndarray, value: float, names: Sequence[str], response: str) -> str:
    """Stata's display of a constraint: ``[mathach]2.sized - [mathach]3.sized = 0``; ``2.sized - 3.sized = 0``
    where ``response`` is empty (a single-equation model's)."""
    parts = []
    for c, name in zip(row, names):
        if c == 0:
            continue
        mag = "" if abs(c) == 1 else f"{render.stata_g(abs(c))}*"
        sign = ("-" if c < 0 else "") if not parts else ("- " if c < 0 else "+ ")
        parts.append(f"{sign}{mag}{f'[{response}]' if response else ''}{name}")
    return f"{' '.join(parts)} = {render.stata_g(value)}"


@dataclass(frozen=True)
class WaldTest:
    """A joint Wald test of linear constraints (Stata's ``test``): chi-squared, or F on ``ddf`` denominator
    degrees of freedom (Satterthwaite) when ``ddf`` is finite."""

    rows: tuple[tuple[np.ndarray, float], ...]
    names: tuple[str, ...]
    response: str
    statistic: float  # chi2, or F when ddf is finite
    df: int
    pvalue: float
    ddf: float = math.inf
    dfmethod: str | None = None  # how ddf was computed

    @property
    def constraints(self) -> list[str]:
        return [constraint_text(r, v, self.names, self.response) for r, v in self.rows]

    def __str__(self) -> str:
        lines = [f" ({k + 1:>2})  {c}" for k, c in enumerate(self.constraints)]
        if math.isinf(self.ddf):
            return "\n".join(lines + ["", f"           chi2({self.df:>3}) ={self.statistic:>8.2f}",
                                      f"         Prob > chi2 ={self.pvalue:>10.4f}"])
        if self.dfmethod is None:  # exact degrees of freedom (a regression's), as Stata's test prints them
            return "\n".join(lines + ["", f"       F({self.df:>3},{self.ddf:>6.0f}) ={self.statistic:>8.2f}",
                                      f"{'Prob > F':>20} ={self.pvalue:>10.4f}"])
        return "\n".join(lines + ["", f"       F({self.df:>3}, {self.ddf:>8.2f}) ={self.statistic:>8.2f}",
                                  f"{'Prob > F':>20} ={self.pvalue:>10.4f}",
                                  f"Note: denominator degrees of freedom by {DFMETHOD_PHRASES[self.dfmethod]}."])


@dataclass(frozen=True)
class TermTests:
    """lmerTest's analysis-of-variance table of a model's terms (:meth:`MixedResult.anova`): a row per fixed-effect
    term."""

    table: pd.DataFrame  # Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)
    method: str  # of the denominator degrees of freedom
    type: int = 3  # of the hypotheses: 1 (sequential), 2 or 3

    def __str__(self) -> str:
        t = self.table
        shown = pd.DataFrame({
            **{c: t[c].map(lambda v: f"{v:.4g}") for c in ("Sum Sq", "Mean Sq")}, "NumDF": t["NumDF"].map(str),
            "DenDF": t["DenDF"].map(lambda v: f"{v:.2f}"), "F value": t["F value"].map(lambda v: f"{v:.4f}"),
            "Pr(>F)": t["Pr(>F)"].map(lambda v: f"{v:.4g}")}, index=t.index)
        kind = {1: "I", 2: "II", 3: "III"}[self.type]
        return f"Type {kind} Analysis of Variance Table with {self.method}'s method\n" + shown.to_string()


@dataclass(frozen=True)
class LinearCombination:
    """A linear combination of fixed effects (:meth:`MixedResult.lincom`) and its z test and interval."""

    constraint: str  # Stata's display of the combination, "[mathach]ses + [mathach]1.sector#c.ses = 0"
    response: str
    estimate: float
    se: float
    statistic: float  # z, or t when df is finite
    pvalue: float
    ci_lower: float
    ci_upper: float
    confidence: float  # of the interval, e.g. 0.95
    df: float = math.inf  # degrees of freedom of the t test; inf: the z test
    dfmethod: str | None = None  # how df was computed

    def __str__(self) -> str:
        return render.lincom_text(self)


@dataclass(frozen=True)
class NonlinearCombinations:
    """Functions of the estimates (:meth:`MixedResult.nlcom`): each one's name and expression, and a coefficient table
    row (estimate, SE, z, p, interval) per function."""

    names: tuple[str, ...]
    expressions: tuple[str, ...]
    response: str
    table: np.ndarray  # (k, 6): estimate, std. err., z (or t), p, lower, upper
    confidence: float
    df: float = math.inf  # of the t tests (a regression's residual df); inf: z tests

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.table, index=list(self.names),
                            columns=["estimate", "std_err", "z" if math.isinf(self.df) else "t", "pvalue",
                                     "ci_lower", "ci_upper"])

    def __str__(self) -> str:
        return render.nlcom_text(self)


#: The most values a variable of ``margins(over=...)`` may take (a factor's levels).
MARGIN_LEVELS = 50


def _margin_rows(d: Design, frame: pd.DataFrame, w: np.ndarray, settings: list[dict],
                 orders: Mapping[str, int] | None = None) -> np.ndarray:
    """(settings, p̃) over every column of the design (:meth:`~jaxhlm.design.Encoding.full_columns`, omitted ones
    included): per setting of some variables, the ``w``-weighted mean design row of ``frame`` with them set, x̄ (a
    margin is x̄ᵀβ). With ``orders`` ({continuous variable: k}), the mean row's coefficient of ∏ xᵏ as a polynomial in
    those variables instead (order 1: dydx's slope; ``c.age#c.age``: order 2), by k-th central differences divided
    by k!·hᵏ, exact for terms up to degree k + 1 in each: at a variable's set value or, unset, at each row's own."""
    orders = dict(orders or {})
    values = {v: pd.to_numeric(frame[v], errors="coerce").to_numpy(dtype=float) for v in orders}
    steps = {v: 1e-3 * (float(np.std(x)) or 1.0) for v, x in values.items()}

    def mean_row(setting: dict) -> np.ndarray:
        return w @ d.encoding.full_columns(frame.assign(**setting)) / w.sum()

    def row(setting: dict) -> np.ndarray:
        total = 0.0
        for offsets in itertools.product(*(range(k + 1) for k in orders.values())):
            shifted, weight = dict(setting), 1.0
            for (v, k), j in zip(orders.items(), offsets):
                shifted[v] = setting.get(v, values[v]) + (k / 2 - j) * steps[v]
                weight *= (-1) ** j * math.comb(k, j) / (math.factorial(k) * steps[v] ** k)
            total = total + weight * mean_row(shifted)
        return np.asarray(total)

    return np.stack([row(s) for s in settings])


def _operator_rows(op: str | None, levels: list[int], texts: list[str], base: object = None
                   ) -> tuple[np.ndarray, list[str]]:
    """A contrast operator's rows over a factor's levels and Stata's labels for them: ``r`` each level against the
    first (``rb#``: against level #), ``a`` each against the next, ``ar`` each against the previous, ``g`` each
    against the levels' mean, ``h`` each against the mean of the later ones, ``j`` each against the mean of the
    earlier ones; None (a factor without an operator in an interaction with one) each against its base level,
    labelled ``vs base``."""
    m, eye = len(levels), np.eye(len(levels))
    if op is None or op == "r" or op.startswith("rb"):
        wanted = int(op[2:]) if op and op.startswith("rb") else base if isinstance(base, int) else None
        if wanted is not None and wanted not in levels:
            raise JaxhlmError(f"{'rb' if op else 'ib'}{wanted}.: {wanted} is not a level in the estimation sample "
                              f"(levels: {', '.join(map(str, levels))})")
        b = levels.index(wanted) if wanted is not None else m - 1 if base == "last" else 0
        other = "base" if op is None else texts[b]
        return (np.stack([eye[j] - eye[b] for j in range(m) if j != b]),
                [f"({texts[j]} vs {other})" for j in range(m) if j != b])
    if op == "a":
        return np.stack([eye[j] - eye[j + 1] for j in range(m - 1)]), [f"({texts[j]} vs {texts[j + 1]})"
                                                                       for j in range(m - 1)]
    if op == "ar":
        return np.stack([eye[j] - eye[j - 1] for j in range(1, m)]), [f"({texts[j]} vs {texts[j - 1]})"
                                                                      for j in range(1, m)]
    if op == "g":
        return eye - 1 / m, [f"({t} vs mean)" for t in texts]
    if op == "h":
        return (np.stack([eye[j] - eye[j + 1:].mean(axis=0) for j in range(m - 1)]),
                [f"({texts[j]} vs >{texts[j]})" for j in range(m - 1)])
    return (np.stack([eye[j] - eye[:j].mean(axis=0) for j in range(1, m)]),  # j: reverse Helmert
            [f"({texts[j]} vs <{texts[j]})" for j in range(1, m)])


def _cell_text(values: Sequence[str], labelled: bool) -> str:
    """A cell of several variables' values as Stata's tables label it: numbers apart by spaces (``1 2``), value
    labels joined by ``#`` (``Catholic#Medium``), as in the coefficient table."""
    return ("#" if labelled else " ").join(values)


def _pair_text(a: Sequence[str], b: Sequence[str], labelled: bool) -> str:
    """A pairwise comparison's label, ``a vs b``, each cell of several values in parentheses."""
    def one(cell: Sequence[str]) -> str:
        return cell[0] if len(cell) == 1 else f"({_cell_text(cell, labelled)})"
    return f"{one(a)} vs {one(b)}"


def _estimable(d: Design, C: np.ndarray, outside: np.ndarray, what: str) -> np.ndarray:
    """Rows ``C`` of linear functions over the full design's columns, as rows over the estimated coefficients (the
    omitted columns, fixed at 0, dropped), when each is estimable: ``outside``, its part beyond the functions X's
    rows span, is nil. Otherwise a message: some cell they need has no observations."""
    scale = max(np.abs(C).max(), 1.0)
    if np.abs(outside).max() > 1e-8 * scale:
        raise JaxhlmError(f"{what}: not estimable, for a cell its margins need (of this term or of an interaction "
                          "with another factor) has no observations; test the coefficients the data do inform with "
                          "test or testparm")
    C = C[:, d.encoding.kept]
    C[np.abs(C) < 1e-10 * scale] = 0.0
    return C


@dataclass(frozen=True)
class Contrasts:
    """Stata's ``contrast`` tables (:meth:`MixedResult.contrast`): a row per term (and ``Overall``), with the df,
    chi-squared statistic and p-value of its joint Wald test (with ``small``: df, ddf, F and p-value), and for a
    term with contrast operators a row per named contrast and their joint test, with a table of their effects."""

    table: pd.DataFrame  # index (term, contrast): contrast "" for a term's joint test, "Joint" beside named ones
    response: str
    margins: str  # "asbalanced" or "asobserved", Stata's "Margins:" line
    effects: pd.DataFrame | None = None  # the named contrasts' estimates, SEs, tests and intervals, if any
    confidence: float = 0.95

    def text(self, wald: bool = True, show: str | None = "cieffects") -> str:
        """Stata's output: the table of Wald tests (``wald``) and, for named contrasts, that of their estimates
        with ``show``'s columns (:data:`~jaxhlm.render.EFFECTS`; None: left out), Stata's default both."""
        if show is not None and show not in render.EFFECTS:
            raise JaxhlmError(f"show={show!r}: one of {', '.join(render.EFFECTS)}, or None")
        return render.contrast_text(self, wald, show)

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class PairwiseComparisons:
    """Stata's ``pwcompare`` (:meth:`MixedResult.pwcompare`): a table per term (its name the index's), a row per
    pair of cells with the difference, its SE, z, p-value and interval, adjusted by ``mcompare``."""

    tables: tuple[pd.DataFrame, ...]
    response: str
    mcompare: str
    confidence: float
    margins: str  # "asbalanced" or "asobserved"

    def text(self, show: str = "effects") -> str:
        """The table as Stata prints it with ``show`` one of ``cieffects`` (Stata's default), ``pveffects`` and
        ``effects`` (every column, the printed form of this object)."""
        if show not in render.EFFECTS:
            raise JaxhlmError(f"show={show!r}: one of {', '.join(render.EFFECTS)}")
        return render.pwcompare_text(self, show)

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class Margins:
    """Stata's ``margins`` (:meth:`MixedResult.margins`): one row per combination of the ``over`` variables' values
    and the ``at`` values, with the margin (or with ``dydx`` the average marginal effect), its delta-method SE, z
    (or t, with ``df``) test and interval."""

    table: pd.DataFrame
    labels: tuple[str, ...]  # each row's, as Stata labels it: "1 0" (the _at number, then the values), "1 vs 0"
    over: tuple[str, ...]
    at: tuple[str, ...]
    at_values: tuple[tuple[float, ...], ...]  # the combinations of at() values, Stata's 1._at, 2._at, …
    response: str
    nobs: int
    vce: str | None  # Stata's "Model VCE:" line ("Robust", "OLS"); None for none (model-based SEs after mixed)
    confidence: float
    adjusted: bool  # every variable of the fixed part set, by at() or as a margin: Stata's "Adjusted predictions"
    dydx: str | None = None  # the variable of average marginal effects (Stata's dydx()), None for margins
    pwcompare: bool = False  # the rows are the pairwise differences of the margins ("1 vs 0")
    mcompare: str = "noadjust"  # their adjustment for multiple comparisons (infer.MCOMPARE)
    expression: str = "Linear prediction, fixed portion, predict()"  # Stata's "Expression:" line

    def __str__(self) -> str:
        return render.margins_text(self)


class ICC(NamedTuple):
    """One level's row of :class:`IntraclassCorrelation`."""

    level: str  # "school", or "class|school": responses sharing the class (and so the school)
    icc: float
    se: float
    ci_lower: float
    ci_upper: float


@dataclass(frozen=True)
class IntraclassCorrelation:
    """The intraclass correlations of a fit (:meth:`MixedResult.icc`): per level, estimate, SE and interval.
    ``icc``, ``se``, ``ci_lower`` and ``ci_upper`` are the innermost level's (a two-level model's only row;
    Stata's ``r(icc2)``)."""

    kind: str  # "Intraclass correlation", "Residual …" (given covariates) or "Conditional …" (random slopes at 0)
    rows: tuple[ICC, ...]  # outermost level first
    confidence: float  # of the interval, e.g. 0.95

    @property
    def group(self) -> str:
        return self.rows[-1].level

    @property
    def icc(self) -> float:
        return self.rows[-1].icc

    @property
    def se(self) -> float:
        return self.rows[-1].se

    @property
    def ci_lower(self) -> float:
        return self.rows[-1].ci_lower

    @property
    def ci_upper(self) -> float:
        return self.rows[-1].ci_upper

    def __str__(self) -> str:
        return render.icc_text(self)


@dataclass(frozen=True)
class LRTest:
    """Likelihood-ratio test of a nested pair of fitted models (Stata's ``lrtest``)."""

    statistic: float
    df: int
    pvalue: float
    assumption: str = ""  # "A nested within B" when the models were named
    conservative: bool = True  # the models' random-effects variances differ: the null may be on the boundary
    reml: bool = False  # REML fits: their criteria compare only under one fixed-effects specification

    def __str__(self) -> str:
        """As Stata's ``lrtest`` prints it: the boundary note when the random-effects variances differ (its
        ``e(k_rs)``), the REML note after REML fits."""
        head = ["Likelihood-ratio test"] + ([f"Assumption: {self.assumption}"] if self.assumption else [])
        notes = [_BOUNDARY_NOTE] * self.conservative + [_REML_NOTE] * self.reml
        return "\n".join(head + ["", f" LR chi2({self.df}) = {self.statistic:>6.2f}",
                                  f"Prob > chi2 = {self.pvalue:.4f}"] + [""] * bool(notes) + notes)


def _fitted(command: str, models: Sequence[MixedResult]) -> None:
    for m in models:
        if not isinstance(m, MixedResult):
            raise ComparisonError(f"{command} needs fitted models, got {type(m).__name__}")


def _likelihoods(command: str, models: Sequence[MixedResult]) -> None:
    """Refuse likelihood-ratio tests of models fitted with robust standard errors: the sandwich is asked for when
    the model may be misspecified, and then twice the log-likelihood difference is not chi-squared (Stata's lrtest
    refuses them too)."""
    if any(m.robust is not None for m in models):
        raise ComparisonError(f"{command} compares likelihoods, which are not valid for tests when the standard errors "
                              "are robust (the model may be misspecified); use Wald tests (test, testparm), or refit "
                              "with model-based standard errors (vce='oim'; in Stata syntax, without vce(robust))")


def _comparable(command: str, models: Sequence[MixedResult]) -> None:
    """Refuse models whose likelihoods cannot be compared: other observations, or REML beside ML, or REML with
    other fixed effects, or any with robust standard errors."""
    _fitted(command, models)
    _likelihoods(command, models)
    a = models[0]
    for b in models[1:]:
        if a.design.sample != b.design.sample:
            raise ComparisonError(
                f"the models were fitted on different observations ({a.nobs:,} vs {b.nobs:,} rows, or different "
                "rows, responses or weights); refit them on the same sample (drop missing values first)"
            )
        if a.reml != b.reml:
            raise ComparisonError("one model was fitted by REML and the other by ML; refit them the same way")
        if a.reml and a.design.fe_names != b.design.fe_names:
            raise ComparisonError("REML likelihoods of models with different fixed effects are not comparable; "
                                  "refit them with reml=False")


def _terms(coefs: Sequence[Coef]) -> dict[str, Coef]:
    """The fixed effects by their names in Stata's e(b): a column left out (collinear, or an empty cell) carries the
    omitted operator (``o.ses``, ``1o.sector``, ``co.ses#co.sector``). A column a term list repeats is one entry."""
    def omitted(part: str) -> str:
        level = re.fullmatch(r"(\d+)\.(.+)", part)
        return f"{level.group(1)}o.{level.group(2)}" if level else "co." + part[2:] if part.startswith("c.") else "o." + part

    out: dict[str, Coef] = {}
    for c in coefs:
        out.setdefault("#".join(map(omitted, c.name.split("#"))) if c.status else c.name, c)
    return out


#: Stata's default significance levels of ``estimates table, star``: *, ** and ***.
STARS = (0.05, 0.01, 0.001)


@dataclass(frozen=True)
class EstimatesTable:
    """Stata's ``estimates table``: several models' :meth:`MixedResult.equations` side by side, rows the union of
    their coefficients (each model's order kept), with the statistics asked for under them."""

    names: tuple[str, ...]
    equations: tuple[pd.DataFrame, ...]  # each model's, on the rows shown (missing where it lacks one)
    fixed: tuple[tuple[str, str, Coef], ...]  # the response equations' rows (equation, term, coef): their layout
    cells: tuple[str, ...]  # "b" and any of "se", "t", "p", in Stata's order
    formats: dict[str, str | None]  # Stata display formats of the cells and of the statistics ("stats")
    stats: pd.DataFrame  # one row per statistic, one column per model
    star: tuple[float, float, float] | None = None

    def __str__(self) -> str:
        return render.estimates_table_text(self)


def _merged(sequences: Sequence[Sequence[tuple[str, str]]]) -> list[tuple[str, str]]:
    """The union of ``sequences`` with each one's order kept: an item new to the union goes right after the item
    before it in its own sequence, so that factor levels and equations stay together."""
    union: list[tuple[str, str]] = []
    for seq in sequences:
        at = -1
        for item in seq:
            if item in union:
                at = union.index(item)
            else:
                at += 1
                union.insert(at, item)
    return _by_equation(union)


def _by_equation(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``keys`` with each equation's rows together, equations in order of first appearance (a stable sort)."""
    first = {eq: k for k, (eq, _) in reversed(list(enumerate(keys)))}
    return sorted(keys, key=lambda key: first[key[0]])


def _picked(keys: list[tuple[str, str]], tokens: str, option: str) -> list[tuple[str, str]]:
    """The rows a ``keep()`` or ``drop()`` coefficient list names, in its order: ``eq:`` (a whole equation),
    ``eq:name`` or ``name`` (in any equation)."""
    out: list[tuple[str, str]] = []
    for token in tokens.split():
        eq, colon, name = token.rpartition(":")
        hits = [k for k in keys if (k[0] == eq or not colon) and (k[1] == name or (colon and not name))]
        if not hits:
            raise JaxhlmError(f"{option}({token}): no such coefficient in the models; coefficients are named as "
                              "in the coefficient table (ses, 2.sized, 1.female#1.sector), equations with a colon "
                              "(lns1_1_1: or lnsig_e:_cons)")
        out += [k for k in hits if k not in out]
    return out


def estimates_table(models: Mapping[str, MixedResult], se: bool | str = False, t: bool | str = False,
                    p: bool | str = False, b: str | None = None, stats: Sequence[str] = (), stfmt: str | None = None,
                    star: bool | Sequence[float] = False, keep: str | None = None, drop: str | None = None
                    ) -> EstimatesTable:
    """Models side by side, as Stata's ``estimates table NAMES [, se t p b(%fmt) stats() star keep() drop()]``:
    the coefficients of :meth:`MixedResult.equations` (each variance parameter in Stata's estimation metric), and
    under each the standard error, t or z statistic and p-value when asked (``True``, or a Stata format such as
    ``"%9.3f"``). ``stats`` names rows of e() scalars (:attr:`MixedResult.e_scalars`) plus ``aic`` and ``bic``;
    ``star`` marks p below .05, .01 and .001 (or three levels given) and goes without the other cells, as in
    Stata. ``keep``/``drop``: coefficient lists (``ses 2.sized lns1_1_1: lnsig_e:_cons``), kept in keep's
    order."""
    if not models:
        raise JaxhlmError("estimates table needs at least one model")
    cells = ("b",) + tuple(c for c, on in (("se", se), ("t", t), ("p", p)) if on)
    if star is not False and len(cells) > 1:
        raise JaxhlmError("star may not be combined with se, t or p: show stars alone, or the statistics without them")
    levels = None if star is False else STARS if star is True else tuple(float(x) for x in star)
    if levels is not None and (len(levels) != 3 or not 1 > levels[0] > levels[1] > levels[2] > 0):
        raise JaxhlmError(f"star() takes three decreasing significance levels between 0 and 1, e.g. star(.05 .01 .001); "
                          f"got {' '.join(f'{x:g}' for x in levels)}")
    frames = {name: m.equations() for name, m in models.items()}
    keys = _merged([list(f.index) for f in frames.values()])
    if keep is not None:
        keys = _by_equation(_picked(keys, keep, "keep"))
    if drop is not None:
        gone = set(_picked(keys, drop, "drop"))
        keys = [k for k in keys if k not in gone]
    coefs = {(m.design.response, term): c for m in models.values() for term, c in _terms(m.design.coefs).items()}
    index = pd.MultiIndex.from_tuples(keys, names=["equation", "term"])
    values = {name: {**m.e_scalars, "aic": m.aic, "bic": m.bic} for name, m in models.items()}
    known = sorted(next(iter(values.values())))
    for stat in stats:
        if stat not in known:
            raise JaxhlmError(f"stats({stat}): not a statistic of these models; choose from {', '.join(known)}")
    for fmt in (b, se, t, p, stfmt):
        if isinstance(fmt, str):
            render.format_width(fmt)  # refuses a format it cannot render
    formats = {"b": b, "se": se if isinstance(se, str) else b, "t": t if isinstance(t, str) else "%7.2f",
               "p": p if isinstance(p, str) else "%7.4f", "stats": stfmt if stfmt is not None else b}
    return EstimatesTable(
        names=tuple(models), equations=tuple(f.reindex(index) for f in frames.values()),
        fixed=tuple((*k, coefs[k]) for k in keys if k in coefs), cells=cells, formats=formats,
        stats=pd.DataFrame({name: [v.get(s, np.nan) for s in stats] for name, v in values.items()}, index=list(stats)),
        star=levels)


def lrtest(a: MixedResult, b: MixedResult, names: tuple[str, str] | None = None, df: int | None = None,
           force: bool = False) -> LRTest:
    """LR test of two models fitted to the same observations; the one with fewer parameters is the null.

    df is the difference in estimated parameters (as ``estat ic`` counts them), or ``df`` where given (Stata's
    ``df(#)``). The test is conservative when the null puts a variance on the boundary: the printed note says so
    when the models' random-effects variances differ (Stata's rule: their ``e(k_rs)``, the variances' count, not
    the covariances'), and another note reminds that REML criteria compare only under one fixed part.
    ``names`` (of ``a`` and ``b``) add Stata's "Assumption: small nested within big" line. Results of two commands
    (a :class:`Regression` and a mixed model) are compared only with ``force``, as Stata's ``lrtest, force``; df
    then counts a regression's coefficients alone (its e(rank)), as Stata's does.
    """
    if df is not None and (not float(df).is_integer() or df < 1):
        raise JaxhlmError(f"df({df}): the degrees of freedom of an LR test are a positive whole number")
    if a.command != b.command and not force:
        raise ComparisonError(f"test involves different estimators: {a.command} vs. {b.command}; test them anyway "
                              "with force (lrtest A B, force), or fit the linear model with mixed (no random-effects "
                              "equation), whose parameters count its residual variance")
    _comparable("lrtest", (a, b))
    if a.df_modelwc == b.df_modelwc:
        raise ComparisonError("the models have the same number of parameters, so neither is nested in the other")
    (small, small_name), (big, big_name) = sorted(zip((a, b), names or ("", "")), key=lambda m: m[0].df_modelwc)
    stat = 2.0 * (big.llf - small.llf)
    if stat < -1e-6:
        raise ComparisonError(
            f"the larger model has the lower log likelihood ({big.llf:.3f} < {small.llf:.3f}): the models are "
            "not nested, or a fit did not converge"
        )
    stat = max(stat, 0.0)
    df = big.df_modelwc - small.df_modelwc if df is None else int(df)
    return LRTest(stat, df, float(special.chdtrc(df, stat)), f"{small_name} nested within {big_name}" if names else "",
                  conservative=small._k_rs != big._k_rs, reml=big.reml)


def _cells(column: pd.Series, fmt: str) -> pd.Series:
    """A comparison table's column as text, blank where NaN (the model the others are tested against)."""
    return column.map(lambda v: "" if np.isnan(v) else format(v, fmt))


@dataclass(frozen=True)
class ModelComparison:
    """lme4's ``anova(m1, m2, ...)``: the models ordered by their number of parameters, each tested against the
    one before it by a likelihood-ratio test (``table``), and the names of those refitted by ML first."""

    table: pd.DataFrame  # npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq); one row per model
    refitted: tuple[str, ...]

    def __str__(self) -> str:
        t = self.table
        shown = pd.DataFrame({
            "npar": t["npar"].map(str),
            **{c: t[c].map(lambda v: f"{v:.{d}f}") for c, d in (("AIC", 1), ("BIC", 1), ("logLik", 2), ("deviance", 1))},
            "Chisq": _cells(t["Chisq"], ".4f"), "Df": _cells(t["Df"], ".0f"), "Pr(>Chisq)": _cells(t["Pr(>Chisq)"], ".4g"),
        }, index=t.index)
        head = ["refitting model(s) with ML (instead of REML): " + ", ".join(self.refitted)] if self.refitted else []
        return "\n".join(head + [shown.to_string(), "", _BOUNDARY_NOTE])


def anova(*models: MixedResult, names: Sequence[str] | None = None, refit: bool = True,
          ddf: str = "satterthwaite") -> "ModelComparison | TermTests":
    """Likelihood-ratio tests of a sequence of models, as lme4's ``anova(m1, m2, ...)`` reports them; of one model,
    lmerTest's ``anova(m)``, the type III F test of each fixed-effect term (:meth:`MixedResult.anova`, on ``ddf``).

    The models are ordered by their number of parameters (``npar``, Stata's df) and each is tested against the
    one before it: Chisq = 2 (logLik − the previous logLik), floored at 0, on Df = the difference in npar. With
    ``refit`` (lme4's default) models fitted by REML are refitted by ML first, since REML likelihoods of models
    with different fixed effects cannot be compared; that needs the data they were fitted from in memory.
    ``names`` label the rows (default ``m1``, ``m2``, … in the order given).
    """
    if len(models) == 1 and isinstance(models[0], MixedResult):
        return models[0].anova(ddf)
    if len(models) < 2:
        raise ComparisonError("anova tests the terms of one fitted model, or compares two or more; got none")
    names = [f"m{k + 1}" for k in range(len(models))] if names is None else [str(n) for n in names]
    if len(names) != len(models) or len(set(names)) != len(names):
        raise ComparisonError(f"anova needs one distinct name per model; got {names} for {len(models)} models")
    _fitted("anova", models)  # before refit_ml
    refitted = tuple(n for n, m in zip(names, models) if refit and m.reml)
    models = tuple(m.refit_ml() if refit and m.reml else m for m in models)
    _comparable("anova", models)
    order = sorted(range(len(models)), key=lambda k: models[k].df_modelwc)
    npar = np.array([models[k].df_modelwc for k in order], dtype=float)
    llf = np.array([models[k].llf for k in order])
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(np.diff(llf), 0.0)])
    df = np.concatenate([[np.nan], np.diff(npar)])
    p = _chi2_pvalues(chisq, df)
    table = pd.DataFrame({"npar": npar.astype(int), "AIC": [models[k].aic for k in order],
                          "BIC": [models[k].bic for k in order], "logLik": llf, "deviance": -2.0 * llf,
                          "Chisq": chisq, "Df": df, "Pr(>Chisq)": p}, index=[names[k] for k in order])
    return ModelComparison(table, refitted)


def _chi2_pvalues(statistic: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Upper chi-squared tail probabilities, NaN where there are no degrees of freedom (no test)."""
    with np.errstate(invalid="ignore"):
        return np.where(df > 0, special.chdtrc(np.where(df > 0, df, 1.0), statistic), np.nan)


def _refits(command: str, model: MixedResult, specs: Sequence[ModelSpec | None], how: str
            ) -> list[MixedResult | None]:
    """``specs`` (None stays None) fitted on ``model``'s own estimation sample: its rows after listwise deletion and
    its if/in qualifiers, so that a variable a reduced model no longer uses cannot bring rows back."""
    _likelihoods(command, (model,))
    if model.design.source is None:
        raise ComparisonError(f"{command} refits the model {how}, which needs the data in memory; this model was "
                              "fitted from data read in chunks")
    from .pipeline import fit_spec  # the pipeline builds results

    sample = model.design.source.iloc[model.design.rows().position]
    return [None if spec is None else fit_spec(dataclasses.replace(spec, subset=None), sample) for spec in specs]


@dataclass(frozen=True)
class TermDeletions:
    """lme4's ``drop1(model, test = "Chisq")``: the model (``<none>``) and the model without each droppable term,
    fitted by ML, with the likelihood-ratio test of each term; ``refitted`` when the model was fitted by REML."""

    table: pd.DataFrame  # npar (parameters the term has), AIC, LRT, Pr(Chi); the model itself first
    refitted: bool

    def __str__(self) -> str:
        t = self.table
        shown = pd.DataFrame({
            "npar": _cells(t["npar"], ".0f"), "AIC": _cells(t["AIC"], ".1f"), "LRT": _cells(t["LRT"], ".4f"),
            "Pr(Chi)": _cells(t["Pr(Chi)"], ".4g"),
        }, index=t.index)
        head = ["Single term deletions (likelihood-ratio tests, models fitted by ML)"]
        head += ["refitting the model with ML (instead of REML)"] if self.refitted else []
        return "\n".join(head + ["", shown.to_string()])


def drop1(model: MixedResult) -> TermDeletions:
    """Likelihood-ratio tests of the fixed-effect terms, one at a time, as lme4's ``drop1(model, test = "Chisq")``.

    Each term that no other term contains (a main effect stays while an interaction includes it; the constant
    stays) is left out and the model refitted; LRT = 2 (logLik − logLik without the term) on the term's number of
    parameters. All fits are by ML (a REML fit is refitted first, as lme4 does, since REML likelihoods of models
    with different fixed effects cannot be compared) and on the model's own estimation sample, so a term whose
    variable has missing values is tested on the same rows. Needs the fitted data in memory.
    """
    _fitted("drop1", (model,))
    full = model.refit_ml()
    terms = droppable_terms(dataclasses.replace(full.spec, reml=False, dfmethod=None))
    if not terms:
        raise ComparisonError("the model has no fixed-effect terms besides the constant, so there is nothing to drop")
    fits = _refits("drop1", model, [reduced for _, reduced in terms], "without each term")
    _comparable("drop1", [full, *fits])
    llf = np.array([m.llf for m in fits])
    npar = np.array([full.df_modelwc - m.df_modelwc for m in fits], dtype=float)
    lrt = np.maximum(2.0 * (full.llf - llf), 0.0)
    p = _chi2_pvalues(lrt, npar)
    table = pd.DataFrame({"npar": np.concatenate([[np.nan], npar]), "AIC": [full.aic] + [m.aic for m in fits],
                          "LRT": np.concatenate([[np.nan], lrt]), "Pr(Chi)": np.concatenate([[np.nan], p])},
                         index=["<none>"] + [label for label, _ in terms])
    return TermDeletions(table, model.reml)


@dataclass(frozen=True)
class RandomTermDeletions:
    """lmerTest's ``ranova(model)``: the model (``<none>``) and each reduction of its random effects, fitted as the
    model was (ML or REML), with the likelihood-ratio test of each against the model."""

    table: pd.DataFrame  # npar, logLik, AIC, LRT, Df, Pr(>Chisq); the model itself first

    def __str__(self) -> str:
        t = self.table
        shown = pd.DataFrame({
            "npar": t["npar"].map(str), "logLik": _cells(t["logLik"], ".2f"), "AIC": _cells(t["AIC"], ".1f"),
            "LRT": _cells(t["LRT"], ".4f"), "Df": _cells(t["Df"], ".0f"), "Pr(>Chisq)": _cells(t["Pr(>Chisq)"], ".4g"),
        }, index=t.index)
        return "\n".join(["Likelihood-ratio tests of the random effects: single term deletions", "",
                          shown.to_string(), "", _BOUNDARY_NOTE])


def ranova(model: MixedResult) -> RandomTermDeletions:
    """Likelihood-ratio tests of the random effects, one reduction at a time, as lmerTest's ``ranova(model)``.

    Each random slope is left out of its term (``ses in (1 + ses | id)``: its variance and covariances go), and
    each term of a single effect is left out whole (``(1 | id)``); the model is refitted as it was fitted (REML
    likelihoods compare here, the fixed effects being the same) on its own estimation sample. Leaving out the last
    random term leaves the linear model, whose likelihood the fit already holds (the LR test vs. linear model's).
    LRT = 2 (logLik − logLik of the reduced model) on the parameters it lacks, referred to chi-squared as lmerTest
    does: conservative when the reduction puts a variance on its boundary (the note says so). Needs the fitted data
    in memory.
    """
    _fitted("ranova", (model,))
    reductions = reducible_terms(model.spec)
    fits = dict(zip([label for label, _ in reductions],
                    _refits("ranova", model, [spec for _, spec in reductions], "without each random term")))
    _comparable("ranova", [model, *(m for m in fits.values() if m is not None)])
    n_linear = len(model.design.fe_names) + model.random_effects.n_residual
    npar = np.array([model.df_modelwc] + [n_linear if m is None else m.df_modelwc for m in fits.values()])
    llf = np.array([model.llf] + [-0.5 * float(model.fit.deviance_linear) if m is None else m.llf
                                  for m in fits.values()])
    df = np.concatenate([[np.nan], npar[0] - npar[1:]])
    lrt = np.concatenate([[np.nan], np.maximum(2.0 * (llf[0] - llf[1:]), 0.0)])
    p = _chi2_pvalues(lrt, df)
    table = pd.DataFrame({"npar": npar, "logLik": llf, "AIC": -2.0 * llf + 2.0 * npar, "LRT": lrt, "Df": df,
                          "Pr(>Chisq)": p}, index=["<none>", *fits])
    return RandomTermDeletions(table)

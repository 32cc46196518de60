"""The user-facing fit: parse → design → sufficient statistics → optimise → infer → result."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping

import jax
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from . import covariance as cov
from . import tracecache
from .design import Data, Design, as_frame, build_design, fingerprint, read_columns, residual_data
from .errors import DataError, FormulaError
from .estimate import Fit, fit_residual, fit_stats
from .formula import ModelSpec, parse_formula
from .infer import cluster_meat, lr_vs_linear, model_wald, random_effects, small_sample
from .residual import INDEPENDENT, SerialRows
from .optimize import RESULTS
from .results import Convergence, MixedResult
from .stata import residual_structure
from .stats import GroupStats, bucket


#: Prepared (design, statistics) pairs of recent models, keyed by the model's data-relevant parts and a
#: content hash of the columns it reads. Model building refits many models on one data set (and the same
#: model by ML and REML); this skips rebuilding their designs. Content-keyed, so edited data never hits.
_PREPARED: OrderedDict[tuple, tuple[Design, GroupStats]] = OrderedDict()
PREPARED_CACHE_SIZE = 16


def prepare(spec: ModelSpec, data: Data) -> tuple[Design, GroupStats]:
    """Design and sufficient statistics for ``spec`` on ``data`` (DataFrames cached; see ``_PREPARED``)."""
    if not isinstance(data, pd.DataFrame):
        design = build_design(spec, data)
        return design, design_stats(design)
    key = (spec.response, spec.fixed, spec.random, spec.weights, spec.freq_weights, spec.subset, spec.residual_by,
           spec.residual_kind, spec.residual_order, spec.residual_time, spec.pweights, spec.level_pweights,
           spec.pwscale, fingerprint(data, read_columns(spec, data.columns)))
    hit = _PREPARED.get(key)
    if hit is not None:
        _PREPARED.move_to_end(key)
        # Equal content, possibly another frame: the rows are rebuilt from (and checked against) this one.
        return dataclasses.replace(hit[0], source=data), hit[1]
    design = build_design(spec, data)
    prepared = _PREPARED[key] = (design, design_stats(design))
    if len(_PREPARED) > PREPARED_CACHE_SIZE:
        _PREPARED.popitem(last=False)
    return prepared


def clear_cache() -> None:
    """Forget prepared designs (for timing the uncached path, or to free memory)."""
    _PREPARED.clear()


def design_stats(design: Design, packed: bool = False) -> GroupStats | SerialRows:
    """Sufficient statistics of a design, padded to shape buckets so similar models share compiled code
    (with ZtX2 if ``packed``: for batched refits, see :func:`~jaxhlm.stats.packed_products`); with a residual
    structure beyond σ²I, what it whitens (:func:`~jaxhlm.estimate.fit_residual`): each stratum's statistics,
    stacked, or the rows in time order."""
    n_groups, n_fixed = bucket(design.n_groups, 8), bucket(len(design.fe_names))
    n_clusters = bucket(design.n_clusters, 8) if design.n_clusters else 0
    return residual_data(design, n_groups, n_fixed, n_clusters, packed)


def fit(formula: str, data: Data, reml: bool = False, cov: str | None = None, dfmethod: str | None = None,
        weights: str | ArrayLike | None = None, freq_weights: str | ArrayLike | None = None,
        residuals_by: str | ArrayLike | None = None, residuals: str = "independent",
        time: str | ArrayLike | None = None, vce: str | None = None, cluster: str | ArrayLike | None = None,
        pweights: str | ArrayLike | None = None, group_pweights: Mapping[str, str | ArrayLike] | None = None,
        pwscale: str | None = None) -> MixedResult:
    """Fit a linear mixed model (two or three levels, or two crossed factors) by ML (default) or REML.

    Args:
      formula: lme4-style, e.g. ``"mathach ~ ses*sector + C(sized) + (1 + ses | id)"``. The fixed part is
        formulaic syntax; random terms are ``(1 | g)``, ``(1 + x | g)``, ``(0 + x | g)``, ``(1 + x || g)``.
        A second grouping factor nested in the first makes a three-level model: ``(1 | school/class)``,
        ``(1 | school) + (1 | school:class)``, or ``(1 | school) + (1 | class)`` when every class is in one school;
        two factors neither of which is nested in the other are crossed: ``(1 + x | subj) + (1 | item)``.
      data: a DataFrame, a dict of arrays, an iterable of DataFrame chunks (e.g. ``pandas.read_csv(path,
        chunksize=100_000)``; the statistics are summed chunk by chunk and the chunks are not kept) or the path
        of a Parquet file (read in batches; needs pyarrow). Rows with a missing value in any variable the model
        uses are dropped (and counted).
      reml: restricted maximum likelihood instead of ML.
      cov: covariance structure of every random term: ``"identity"``, ``"independent"``,
        ``"exchangeable"`` or ``"unstructured"`` (Stata's abbreviations accepted). Default: unstructured for
        ``|``, independent for ``||``.
      dfmethod: ``"satterthwaite"`` or ``"kroger"`` (Kenward and Roger; REML): t tests of the fixed effects,
        and F tests in the header and :meth:`~jaxhlm.results.MixedResult.test`, on small-sample degrees of
        freedom (as lmerTest and pbkrtest compute them); default: z and chi-squared tests.
      weights: the column (its name, or an array with one value per row of in-memory data) of precision weights aᵢ, lme4's ``weights``: row i's residual variance is σ²/aᵢ
        (e.g. a row that is the mean of aᵢ measurements). The log likelihood is lme4's, with ½ Σ log aᵢ.
      freq_weights: the column (as ``weights``) of frequency weights fᵢ, Stata's ``fweight``: row i stands for fᵢ identical
        observations, and the fit is that of the data with each row repeated fᵢ times (``nobs`` = Σ fᵢ).
        Rows with a zero weight of either kind are left out (and counted).
      residuals_by: the column (as ``weights``) whose values each get their own residual variance (Stata's ``residuals(independent,
        by(var))``; heteroskedastic level-1 variance): models with one grouping level or two nested ones.
      residuals: the residuals' correlation within each group (with two nested levels, each cluster of the inner
        one), Stata's ``residuals(rspec, t(var))`` structures: ``"independent"`` (the default),
        ``"exchangeable"`` (one correlation for every pair), ``"ar1"`` (corr(eₛ, eₜ) = ρ^|s−t| over an integer
        time, gaps allowed; nlme's ``corAR1``), ``"ar p"`` (a stationary autoregression of order p over an
        integer time; nlme's ``corARMA(p = p)``), ``"ma q"`` (an invertible moving average of order q; ``corARMA(q =
        q)``), ``"exponential"`` (ρ^|s−t| over a real time; nlme's
        ``corExp``), ``"toeplitz"`` / ``"toeplitz q"`` (a correlation per lag in an integer time, up to lag q),
        ``"unstructured"`` (a variance per value of the time and a covariance per pair; nlme's ``corSymm`` with
        ``varIdent``) and ``"banded q"`` (unstructured, covariances at most q values apart). Stata's
        abbreviations accepted. Unweighted rows (the outermost groups may carry sampling weights).
      time: the column (as ``weights``) of the time the structures other than independent and exchangeable
        need; one observation per time in a group.
      vce: ``"oim"`` (the default without sampling weights): standard errors from the observed information, as
        Stata's; ``"robust"`` (the default, and the only choice, with them):
        the cluster-robust sandwich (Stata's ``vce(robust)``), valid when the random effects' or residuals'
        distribution is misspecified, as long as the clusters are independent. ML fits of nested models, any
        residual structure; the log likelihood becomes a pseudo-likelihood for testing, so likelihood-ratio tests
        refuse it.
      cluster: the column (as ``weights``) whose values are the independent clusters of ``vce="robust"``
        (Stata's ``vce(cluster var)``): each must contain the outermost level's groups whole. Default: those
        groups.
      pweights: the column (as ``weights``) of the observations' sampling weights, Stata's ``[pw=var]``: each
        observation's weight given its group (in a three-level model, its cluster), the inverse of its probability
        of selection within it. The fit maximises the pseudo-likelihood in which each observation's, cluster's and
        group's contribution is raised to its weight (Stata's, and Rabe-Hesketh and Skrondal's), with robust
        standard errors; ML only, and no likelihood-ratio tests.
      group_pweights: the sampling weights of the grouping levels' groups, Stata's ``pweight(var)`` of a level: a
        mapping from a level (as the formula names it, e.g. ``"school"`` or ``"school:class"``) to its column (as
        ``weights``), constant within each of its groups; a level without one has weight 1.
      pwscale: how the observations' sampling weights are scaled within each group (Stata's ``pwscale()``, models
        with one grouping level): ``"size"`` (to sum to the group's number of observations), ``"effective"`` (to
        its effective size (Σw)²/Σw²) or ``"gk"`` (Graubard and Korn: to 1, each group's weight multiplied by the
        mean of its observations'); default: as given.

    Example:
      >>> import jaxhlm
      >>> r = jaxhlm.fit("mathach ~ ses + (1 | id)", jaxhlm.datasets.hsb())
      >>> round(r.llf, 3)
      -23320.502
    """
    spec = parse_formula(formula, cov=cov, reml=reml, dfmethod=dfmethod)
    data, weights = _column(data, weights, "(weights)")
    data, freq_weights = _column(data, freq_weights, "(freq_weights)")
    data, residuals_by = _column(data, residuals_by, "(residuals_by)")
    data, time = _column(data, time, "(time)")
    data, cluster = _column(data, cluster, "(cluster)")
    data, pweights = _column(data, pweights, "(pweights)")
    unknown = [k for k in (group_pweights or {}) if k not in spec.levels]
    if unknown:
        raise FormulaError(f"group_pweights names {', '.join(map(repr, unknown))}, not a grouping level of the model; "
                           f"its levels are {', '.join(map(repr, spec.levels))}")
    level_pweights = []
    for level in spec.levels:
        data, name = _column(data, (group_pweights or {}).get(level), f"({level} pweights)")
        level_pweights.append(name)
    sampled = pweights is not None or any(level_pweights)
    kind, order = residual_structure(residuals)
    return fit_spec(dataclasses.replace(spec, weights=weights, freq_weights=freq_weights, residual_by=residuals_by,
                                        residual_kind=kind, residual_order=order, residual_time=time,
                                        vce=vce or ("robust" if sampled else "oim"), cluster=cluster,
                                        pweights=pweights, level_pweights=tuple(level_pweights) if sampled else (),
                                        pwscale=pwscale), data)


def _column(data: Data, values: str | ArrayLike | None, name: str) -> tuple[Data, str | None]:
    """The data and the name of a column the model reads (weights, the residual strata): ``values`` itself when it
    names one, else ``name`` for the array ``values`` added to (a copy of) in-memory data, as lme4 adds ``(weights)``
    to its model frame."""
    if values is None or isinstance(values, str):
        return data, values
    frame = as_frame(data)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name[1:-1]} given as an array need the data in memory (a DataFrame or a dict of arrays); "
                        "with data read in chunks, name a column instead")
    w = np.asarray(values)
    if w.shape != (len(frame),):
        raise DataError(f"{name[1:-1]} must have one value per row of the data ({len(frame):,}); got shape {w.shape}")
    return frame.assign(**{name: w}), name


def fit_spec(spec: ModelSpec, data: Data) -> MixedResult:
    """Fit a parsed :class:`~jaxhlm.formula.ModelSpec` (the entry point every front end shares)."""
    design, stats = prepare(spec, data)
    structure, psi = design.residual, None
    if structure == INDEPENDENT:
        raw = jax.device_get(tracecache.call(fit_stats, {"blocks": design.blocks, "reml": spec.reml}, stats))
    else:
        both = jax.device_get(tracecache.call(fit_residual, {"structure": structure, "blocks": design.blocks,
                                                             "reml": spec.reml}, stats))
        raw, psi = both.fit, np.asarray(both.psi)
    p = len(design.fe_names)
    # The statistics are those of the rows scaled by √aᵢ (precision weights): their likelihood lacks ½ Σ fᵢ log aᵢ.
    ldw = design.stats.log_weights
    f = Fit(solution=raw.solution, theta=np.asarray(raw.theta), deviance=raw.deviance - ldw,
            deviance_linear=raw.deviance_linear - ldw, deviance_ols=raw.deviance_ols - ldw, beta=np.asarray(raw.beta)[:p],
            cov_beta=np.asarray(raw.cov_beta)[:p, :p], sigma2=raw.sigma2)
    sol = raw.solution
    conv = Convergence(RESULTS(int(sol.result)), int(sol.steps), float(np.max(np.abs(sol.grad), initial=0.0)),
                       float(sol.decrement), float(sol.min_eig))
    re = random_effects(f, stats, design.blocks, design.re_names, spec.reml, structure, psi, design.residual_labels)
    icpt = design.fe_names.index(design.constant) if design.constant else None
    small = small_sample(spec.dfmethod, f.beta, f.cov_beta, re, stats, design.blocks) if spec.dfmethod else None
    model = MixedResult(
        spec=spec, design=design, fit=f, random_effects=re, small=small,
        wald=model_wald(f.beta, f.cov_beta, icpt, small),
        lr_linear=lr_vs_linear(float(f.deviance_ols), float(f.deviance), cov.n_cov_params(design.blocks),
                               0 if psi is None else len(psi)),
        convergence=conv, psi=psi,
    )
    if spec.vce == "oim":
        return model
    # The sandwich: each block's model-based covariance around the clusters' scores (jaxhlm.infer).
    G, clusters = model.cluster_scores(spec.cluster)
    bread = np.asarray(f.cov_beta)
    f = f._replace(cov_beta=bread @ cluster_meat(G[:, :p]) @ bread)
    re = random_effects(f, stats, design.blocks, design.re_names, spec.reml, structure, psi, design.residual_labels,
                        meat=cluster_meat(G[:, p:]))
    return dataclasses.replace(model, fit=f, random_effects=re, wald=model_wald(f.beta, f.cov_beta, icpt, None),
                               robust=clusters)

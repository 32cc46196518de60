"""The user-facing fit: parse → design → sufficient statistics → optimise → infer → result."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from . import covariance as cov
from .design import Design, build_design
from .estimate import Fit, fit_stats
from .formula import ModelSpec, parse_formula
from .infer import lr_vs_linear, model_wald, random_effects
from .optimize import RESULTS
from .results import Convergence, MixedResult
from .stats import GroupStats, bucket, group_stats, pad_groups, pad_stats


def design_stats(design: Design) -> GroupStats:
    """Sufficient statistics of a design, padded to shape buckets so similar models share compiled code."""
    data = pad_groups(design.X, design.Z, design.y, design.group, design.n_groups)
    stats = group_stats(data)
    return pad_stats(stats, bucket(design.n_groups, 8), bucket(design.X.shape[1]))


def fit(formula: str, data: pd.DataFrame, reml: bool = False, cov: str | None = None) -> MixedResult:
    """Fit a two-level linear mixed model by ML (default) or REML.

    Args:
      formula: lme4-style, e.g. ``"mathach ~ ses*sector + C(sized) + (1 + ses | id)"``. The fixed part is
        formulaic syntax; random terms are ``(1 | g)``, ``(1 + x | g)``, ``(0 + x | g)``, ``(1 + x || g)``.
      data: a DataFrame. Rows with a missing value in any variable the model uses are dropped (and counted).
      reml: restricted maximum likelihood instead of ML.
      cov: covariance structure of every random term: ``"identity"``, ``"independent"``,
        ``"exchangeable"`` or ``"unstructured"`` (Stata's abbreviations accepted). Default: unstructured for
        ``|``, independent for ``||``.

    Example:
      >>> import jaxhlm
      >>> r = jaxhlm.fit("mathach ~ ses + (1 | id)", jaxhlm.datasets.hsb())
      >>> round(r.llf, 3)
      -23323.347
    """
    return fit_spec(parse_formula(formula, cov=cov, reml=reml), data)


def fit_spec(spec: ModelSpec, data: pd.DataFrame) -> MixedResult:
    """Fit a parsed :class:`~jaxhlm.formula.ModelSpec` (the entry point every front end shares)."""
    design = build_design(spec, data)
    stats = design_stats(design)
    raw = jax.device_get(fit_stats(stats, design.blocks, spec.reml))
    p = design.X.shape[1]
    f = Fit(solution=raw.solution, theta=np.asarray(raw.theta), deviance=raw.deviance,
            deviance_linear=raw.deviance_linear, beta=np.asarray(raw.beta)[:p],
            cov_beta=np.asarray(raw.cov_beta)[:p, :p], sigma2=raw.sigma2)
    sol = raw.solution
    conv = Convergence(RESULTS(int(sol.result)), int(sol.steps), float(np.max(np.abs(sol.grad), initial=0.0)),
                       float(sol.decrement), float(sol.min_eig))
    re = random_effects(f, stats, design.blocks, design.re_names, spec.reml)
    icpt = design.fe_names.index("Intercept") if design.intercept else None
    return MixedResult(
        spec=spec, design=design, fit=f, random_effects=re,
        wald=model_wald(f.beta, f.cov_beta, icpt),
        lr_linear=lr_vs_linear(float(f.deviance_linear), float(f.deviance), cov.n_cov_params(design.blocks)),
        convergence=conv,
    )

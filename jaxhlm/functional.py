r"""The array-level API: a linear mixed model as pure JAX functions of arrays, for use inside JAX programs.

No pandas and no formulas: X, Z, y, observation weights and group codes are NumPy or JAX arrays. Every
function here is pure and composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``; the derivatives are
exact in every array argument, X and y included, so the fixed part may be the output of a neural network::

    from jaxhlm import functional as F
    data = F.group_data(X, Z, y, groups)          # a pytree of per-group slabs
    ll = F.marginal_loglik(params, data)            # params = F.Params(beta, cov_re, sigma2)
    fit = F.fit_arrays(data)                        # θ̂, β̂, σ̂², Cov(β̂); derivatives by the implicit function theorem
    b, V = F.random_effects(F.Params.from_fit(fit), data)   # BLUPs and their conditional covariances
    yhat = F.predict(F.Params.from_fit(fit), b, X_new, Z_new, F.group_codes(labels, new_groups))

Groups are numbered by :func:`group_data` in the sorted order of their labels (``numpy.unique``); the same
order indexes the random effects, and :func:`group_codes` maps new data onto it (unseen groups → −1, which
:func:`predict` gives a zero random effect).

The model, with Σ the random effects' covariance and wᵢ the observation weights (default 1):

.. math::

    y_j = X_j\beta + Z_j b_j + \varepsilon_j,\qquad b_j \sim N(0, \Sigma),\qquad
    \varepsilon_{ji} \sim N(0, \sigma^2 / w_{ji}).

A weight counts toward n (σ̂² = r²/Σwᵢ), so a zero weight removes a row exactly (see
:class:`~jaxhlm.stats.GroupedData`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from . import covariance as cov
from .deviance import LOG_2PI, conditional_modes, profiled_deviance, relative_factor, shrinkage
from .estimate import Fit, fit_stats
from .stats import GroupedData, GroupStats, group_stats, slots

__all__ = ["GroupedData", "GroupStats", "Params", "fit_arrays", "group_codes", "group_data", "group_stats",
           "marginal_loglik", "predict", "profiled_deviance", "random_effects"]


class Params(NamedTuple):
    """Explicit model parameters (a pytree): fixed effects β (p,), random-effects covariance Σ (q, q) (positive
    semi-definite; a zero variance is allowed), residual variance σ² ()."""

    beta: Array
    cov_re: Array
    sigma2: Array

    @classmethod
    def from_fit(cls, fit: Fit, structure: Sequence[cov.Block] | None = None) -> "Params":
        """The estimates of a :func:`fit_arrays` fit (``structure`` as given to it), differentiably; a batch of
        fits (from ``vmap``) gives a batch of parameters."""
        T = jnp.asarray(cov.templates(_structure(structure, fit.theta, None)))
        lam = relative_factor(fit.theta, T)
        return cls(fit.beta, fit.sigma2[..., None, None] * lam @ jnp.swapaxes(lam, -1, -2), fit.sigma2)


def _structure(structure: Sequence[cov.Block] | None, theta: Array | None, q: int | None) -> cov.Structure:
    if structure is not None:
        return tuple(structure)
    if q is None:  # from θ's length: one unstructured block has q(q+1)/2 parameters
        q = int(round((np.sqrt(8 * theta.shape[-1] + 1) - 1) / 2))
    return cov.unstructured(q)


def group_data(X: Array, Z: Array, y: Array, groups: np.ndarray, weights: Array | None = None,
               group_weights: Array | None = None) -> GroupedData:
    """Pad rows into one slab per group: the pytree every other function takes.

    Args:
      X: (N, p) fixed-effects design. Z: (N, q) or (N,) random-effects design (a column of ones for a random
        intercept). y: (N,) response. weights: (N,) observation weights (default 1). group_weights: (m,)
        weights of the groups' log-likelihood contributions, in the sorted order of their labels (default 1).
      groups: (N,) group labels of any sortable type; must be concrete (NumPy), since the layout depends on them.

    X, Z, y and weights may be traced (inside ``jit``, ``grad``, ``vmap``): they are scattered with JAX
    operations, so derivatives flow back to them. Groups are numbered in the sorted order of their labels.
    """
    if isinstance(groups, jax.core.Tracer):
        raise TypeError("group_data: groups must be a concrete array (NumPy), not a traced value: the padded "
                        "layout depends on them. Build the grouped data outside jit and pass it in")
    labels, codes = np.unique(np.asarray(groups), return_inverse=True)
    X, Z, y = jnp.asarray(X), jnp.asarray(Z), jnp.asarray(y)
    Z = Z[:, None] if Z.ndim == 1 else Z
    n = y.shape[0]
    w = jnp.ones(n, y.dtype) if weights is None else jnp.asarray(weights)
    for name, a in (("X", X), ("Z", Z), ("weights", w), ("groups", codes)):
        if a.shape[0] != n:
            raise ValueError(f"group_data: {name} has {a.shape[0]} rows but y has {n}")
    if X.ndim != 2 or y.ndim != 1:
        raise ValueError(f"group_data: X must be (N, p) and y (N,); got X {X.shape}, y {y.shape}")
    g, slot, n_max = slots(codes.reshape(-1), len(labels))

    def pad(a: Array) -> Array:
        return jnp.zeros((len(labels), n_max) + a.shape[1:], a.dtype).at[g, slot].set(a)

    v = jnp.ones(len(labels), y.dtype) if group_weights is None else jnp.asarray(group_weights)
    if v.shape != (len(labels),):
        raise ValueError(f"group_data: group_weights must have one entry per group ({len(labels)}), got {v.shape}")
    return GroupedData(X=pad(X), Z=pad(Z), y=pad(y), weights=pad(w), group_weights=v)


def group_codes(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each of ``groups``' position in ``labels`` (the sorted labels of the fitted data), −1 where unseen."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    at = np.clip(np.searchsorted(labels, groups), 0, max(len(labels) - 1, 0))
    return np.where((len(labels) > 0) & (labels[at] == groups), at, -1)


def _stats(data: GroupedData | GroupStats) -> GroupStats:
    return data if isinstance(data, GroupStats) else group_stats(data)


def _relative_factor(params: Params) -> Array:
    """Λ with ΛΛᵀ = Σ/σ² (zero columns for zero variances)."""
    return cov.psd_cholesky(params.cov_re / params.sigma2)


@jax.jit
def marginal_loglik(params: Params, data: GroupedData | GroupStats) -> Array:
    r"""The marginal log likelihood log p(y | β, Σ, σ²), the random effects integrated out.

    Computed from the sufficient statistics, per group with Λ = chol(Σ/σ²):
    log|Vⱼ| = nⱼ log σ² + log|ΛᵀZⱼᵀZⱼΛ + I| and rⱼᵀVⱼ⁻¹rⱼ = (rⱼᵀrⱼ − (Zⱼᵀrⱼ)ᵀSⱼ(Zⱼᵀrⱼ))/σ², rⱼ = yⱼ − Xⱼβ.
    With weights it is the weighted log likelihood: each group's contribution times its group weight, and
    observation weights as precision weights (residual variance σ²/wᵢ) with n = Σwᵢ and without the constant
    ½Σ log wᵢ. Without random effects that is Σ wᵢ log φ(yᵢ; xᵢβ, σ²), the usual weighted log likelihood; a
    zero weight removes a row; at weights that sum to N its optimum is lme4's precision-weighted fit.
    """
    s = _stats(data)
    logdiag, S = shrinkage(_relative_factor(params), s.ZtZ)
    beta, s2 = params.beta, params.sigma2
    rtr = s.yty - 2.0 * beta @ s.Xty + beta @ s.XtX @ beta
    u = s.Zty - s.ZtX @ beta
    v = s.group_weights
    quad = rtr - jnp.einsum("g,ga,gab,gb->", v, u, S, u)
    return -0.5 * (s.n * (LOG_2PI + jnp.log(s2)) + 2.0 * jnp.sum(v * logdiag) + quad / s2)


def fit_arrays(data: GroupedData | GroupStats, structure: Sequence[cov.Block] | None = None,
               reml: bool = False) -> Fit:
    """Maximum-likelihood (or REML) estimates: θ̂, β̂, Cov(β̂), σ̂² and the deviance, as a :class:`Fit`.

    Differentiable with respect to every array of ``data`` (y, X, Z, weights) by the implicit function theorem
    at the optimum, not by unrolling the optimiser (:func:`jaxhlm.estimate.fit_stats`); vmappable over stacked
    data. ``structure`` is a sequence of :class:`~jaxhlm.covariance.Block`; default one unstructured block
    over the q random effects. ``fit.solution`` says whether the optimiser converged; a θ held at 0 (a zero
    variance: a singular fit) has derivative 0.
    """
    s = _stats(data)
    return fit_stats(s, _structure(structure, None, s.ZtZ.shape[-1]), reml)


@jax.jit
def random_effects(params: Params, data: GroupedData | GroupStats) -> tuple[Array, Array]:
    """(b̂ (m, q), Var(b | y) (m, q, q)): each group's predicted random effects (BLUPs, the conditional means
    E[bⱼ | y]) and their conditional covariances at ``params``, lme4's ``ranef(condVar = TRUE)``."""
    return conditional_modes(_relative_factor(params), _stats(data), params.beta, params.sigma2)


@jax.jit
def predict(params: Params, b: Array | Sequence[Array], X: Array, Z: Array | None = None,
            codes: Array | Sequence[Array] | None = None) -> Array:
    """Predictions Xβ + Zb_g for rows X (N, p), Z (N, q) in groups ``codes`` (from :func:`group_codes`).

    A row whose code is −1 (a group the fit has not seen) gets a zero random effect: the population-level
    prediction Xβ. Without Z and codes, the population-level prediction for every row. With several grouping
    levels (a three-level model), ``b`` and ``codes`` are sequences, one per level, and Z's columns are the
    levels' effects in that order.
    """
    fixed = jnp.asarray(X) @ params.beta
    if Z is None or codes is None:
        return fixed
    Z = jnp.asarray(Z)
    Z = Z[:, None] if Z.ndim == 1 else Z
    levels = (b, codes) if isinstance(b, (list, tuple)) else ((b,), (codes,))
    at = 0
    for b_l, codes_l in zip(*levels):
        codes_l = jnp.asarray(codes_l)
        q = b_l.shape[-1]
        effect = jnp.where((codes_l >= 0)[:, None], b_l[jnp.maximum(codes_l, 0)], 0.0)
        fixed = fixed + jnp.sum(Z[:, at:at + q] * effect, axis=-1)
        at += q
    return fixed

r"""Group influence on the fixed effects: what removing one group would do to β̂, from derivatives or refits.

Weighting group j's log-likelihood contribution by wⱼ (:class:`~jaxhlm.stats.GroupedData`) makes the fit a
smooth function of w, with w = 1 the fitted data and wⱼ = 0 the data without group j. To first order

.. math::

    \mathrm{DFBETA}_j = \hat\beta - \hat\beta_{(-j)} \approx \frac{\partial \hat\beta}{\partial w_j}\Big|_{w=1},

the infinitesimal jackknife. The derivative is exact, θ̂'s response included, because the fit is
differentiated by the implicit function theorem (:func:`jaxhlm.estimate.fit_stats`); all m of them cost p
reverse passes, so the one-step diagnostics of 10⁵ groups cost a few fits. :func:`leave_one_out` refits the
model without each group (m fits, batched) for the exact values, and to measure the approximation.

Cook's distance of a group is Dⱼ = DFBETAⱼᵀ Cov(β̂)⁻¹ DFBETAⱼ / p (Christensen, Pearson and Johnson 1992).

The same weights give each group's score, the derivative of its own log-likelihood contribution ℓⱼ in the
parameters (:func:`scores`): the log likelihood at explicit (β, φ) is linear in w, so ∂²ℓ/∂wⱼ∂(β, φ) is group
j's score. Robust (sandwich) standard errors are built from them (:func:`jaxhlm.infer.cluster_meat`).

A three-level model's groups (schools, with their classes) are weighted the same way: its statistics at
weights w are the per-group ones with ``group_weights`` = w (:func:`~jaxhlm.deviance.factorize` weights a
school's terms, its classes' included) and totals Σⱼ wⱼ XⱼᵀXⱼ, … (:class:`NestedPieces`). So are a crossed
model's groups of its first factor, whose rows also leave the second factor's sums (:class:`CrossedPieces`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from . import covariance as cov
from .estimate import Fit, fit_residual, fit_stats
from .profile import loglik
from .residual import INDEPENDENT, SerialRows, Structure
from .stats import CrossedStats, GroupedData, GroupStats, NestedStats, group_stats

#: Leave-one-group-out refits run this many at a time (each holds its own copy of the statistics).
LOO_BATCH = 64


class NestedPieces(NamedTuple):
    """A three-level model's statistics with each group's own totals (XᵀX (m, p, p), Xᵀy (m, p), yᵀy (m,),
    rows (m,), its clusters' sampling weights applied), from which its statistics at any group weights (times
    the groups' sampling weights) follow (:func:`weighted_stats`)."""

    stats: NestedStats
    XtX: Array
    Xty: Array
    yty: Array
    n: Array


class CrossedPieces(NamedTuple):
    """A crossed model's statistics with each group's own totals (as :class:`NestedPieces`) and the second
    factor's sums over each group's rows, per level: WᵀW (m, k, q2, q2), WᵀX (m, k, q2, p), Wᵀy (m, k, q2)
    (:func:`~jaxhlm.stats.pair_totals`). Leaving out a group of the first factor takes its rows out of the
    second factor's sums too."""

    stats: CrossedStats
    XtX: Array
    Xty: Array
    yty: Array
    n: Array
    WtW: Array
    WtX: Array
    Wty: Array


class StrataPieces(NamedTuple):
    """A model with a residual variance per stratum: each stratum's pieces (of its rows), whose statistics are
    stacked on a leading stratum axis, as :class:`~jaxhlm.residual.Strata` takes them."""

    parts: tuple[GroupedData | NestedPieces, ...]


#: The rows of residuals correlated within series weight each series by its group's weight themselves
#: (:attr:`~jaxhlm.residual.SerialRows.series_weights`), so they are their own pieces.
Pieces = GroupedData | NestedPieces | CrossedPieces | SerialRows | StrataPieces


def weighted_stats(data: Pieces, w: Array) -> GroupStats | NestedStats | CrossedStats | SerialRows:
    """The statistics (for rows correlated within series, the rows) with group j's log-likelihood contribution
    weighted by wⱼ, differentiably in w."""
    if isinstance(data, SerialRows):
        return data._replace(group_weights=data.group_weights * w)
    if isinstance(data, StrataPieces):
        return jax.tree.map(lambda *a: jnp.stack(a), *(weighted_stats(part, w) for part in data.parts))
    if isinstance(data, GroupedData):
        return group_stats(data._replace(group_weights=data.group_weights * w))
    w = data.stats.group_weights * w  # on the groups' own (sampling) weights
    stats = data.stats._replace(group_weights=w, XtX=jnp.einsum("g,gij->ij", w, data.XtX), Xty=w @ data.Xty,
                                yty=w @ data.yty, n=w @ data.n)
    if isinstance(data, CrossedPieces):
        stats = stats._replace(WtW=jnp.einsum("g,gkab->kab", w, data.WtW), WtX=jnp.einsum("g,gkab->kab", w, data.WtX),
                               Wty=jnp.einsum("g,gka->ka", w, data.Wty))
    return stats


def n_groups(data: Pieces) -> int:
    if isinstance(data, StrataPieces):
        return n_groups(data.parts[0])
    if isinstance(data, SerialRows):
        return data.group_weights.shape[0]
    return data.y.shape[0] if isinstance(data, GroupedData) else data.n.shape[0]


def _fit(data: Pieces, w: Array, structure: cov.Structure, residual: Structure, reml: bool) -> Fit:
    """The fit with group j's log-likelihood contribution weighted by wⱼ."""
    stats = weighted_stats(data, w)
    return fit_stats(stats, structure, reml) if residual == INDEPENDENT else fit_residual(
        stats, residual, structure, reml).fit


@partial(jax.jit, static_argnames=("structure", "reml", "residual"))
def one_step(data: Pieces, structure: cov.Structure, reml: bool = False, residual: Structure = INDEPENDENT
             ) -> Array:
    """(m, p) DFBETA by the infinitesimal jackknife: ∂β̂/∂wⱼ at w = 1 (module docstring). ``structure`` is a
    tuple of :class:`~jaxhlm.covariance.Block` (static), ``residual`` the residual structure."""
    beta = lambda w: _fit(data, w, structure, residual, reml).beta  # noqa: E731
    return jax.jacrev(beta)(jnp.ones(n_groups(data))).T


@partial(jax.jit, static_argnames=("structure", "reml", "batch_size", "residual"))
def leave_one_out(data: Pieces, structure: cov.Structure, reml: bool = False, batch_size: int = LOO_BATCH,
                  residual: Structure = INDEPENDENT) -> Fit:
    """The m fits without one group each (a :class:`Fit` with a leading group axis), batched ``batch_size``
    at a time."""
    m = n_groups(data)

    def without(j: Array) -> Fit:
        return _fit(data, jnp.ones(m).at[j].set(0.0), structure, residual, reml)

    return jax.lax.map(without, jnp.arange(m), batch_size=batch_size)


@partial(jax.jit, static_argnames=("structure", "residual"))
def scores(data: Pieces, beta: Array, phi: Array, edge: Array, structure: cov.Structure,
           residual: Structure = INDEPENDENT) -> Array:
    """(m, p + k) each group's score ∂ℓⱼ/∂(β, φ) of the ML log likelihood at β and φ = (ln sd…, atanh r…, then
    the ``residual`` structure's coordinates: ln σ for σ²I) in Stata's metric; ``edge`` ±1 holds a correlation of
    the random effects at ±1, as in :func:`~jaxhlm.estimate.re_information`. k forward passes over one reverse
    pass in the group weights (module docstring)."""
    def contributions(psi: Array) -> Array:
        return jax.grad(lambda w: loglik(psi, weighted_stats(data, w), structure, residual, edge))(
            jnp.ones(n_groups(data)))

    return jax.jacfwd(contributions)(jnp.concatenate([beta, phi]))


def cooks_distance(dfbeta: Array, cov_beta: Array) -> Array:
    """(m,) Dⱼ = DFBETAⱼᵀ Cov(β̂)⁻¹ DFBETAⱼ / p."""
    return jnp.einsum("gi,gi->g", dfbeta, jnp.linalg.solve(cov_beta, dfbeta.T).T) / dfbeta.shape[-1]

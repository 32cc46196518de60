"""From sufficient statistics to the maximum-likelihood estimates: one jitted, vmappable function.

``fit_stats(stats, blocks, reml)`` runs EM warm-up and projected Newton on θ (tiny variances snapped to
exactly 0), then evaluates β̂, σ̂², Cov(β̂) and the deviance of the linear model (θ = 0) at the same
statistics. It is the array-level entry point that :func:`jaxhlm.fit` wraps and that batched refits vmap over.
``fit_residual`` does the same over (θ, ψ) for a residual covariance structure beyond σ²I (:mod:`jaxhlm.residual`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from . import covariance as cov
from .deviance import (factorize, fixed_effects, fixed_effects_cov, loglik_at_sigma, objective,
                       relative_factor, residual_variance)
from .em import em_warmup
from .optimize import Solution, minimise
from .residual import INDEPENDENT, Structure
from .stats import GroupStats

#: A bounded θ this small (relative to the largest |θ|; lme4's singularity tolerance) is set to exactly 0
#: when that does not worsen the deviance beyond rounding.
SNAP_TOL = 1e-4


class Fit(NamedTuple):
    """Estimates at the optimum (a pytree; every field gains a leading axis when vmapped)."""

    solution: Solution  # the optimiser's answer, certified at θ̂ (after snapping; see minimise)
    theta: Array  # θ̂
    deviance: Array  # d(θ̂): -2 log L (ML) or the REML criterion
    deviance_linear: Array  # d(0): the same criterion for the linear model with the same X (and residual structure)
    #: the criterion of the linear regression, θ = 0 and residuals σ²I (ψ = 0): Stata's "LR test vs. linear model"
    deviance_ols: Array
    beta: Array  # (p,) fixed effects
    cov_beta: Array  # (p, p) (XᵀV⁻¹X)⁻¹
    sigma2: Array  # residual variance


@partial(jax.jit, static_argnames="reml")
def _deviance(theta: Array, stats: GroupStats, templates: Array, reml: bool) -> Array:
    # A nested jit: the optimiser evaluates the deviance (and its derivatives) at many call sites, and each
    # would otherwise be traced and lowered anew; as a jitted callee it is traced once per transformation.
    return objective(factorize(relative_factor(theta, templates), stats), stats, reml)


@partial(jax.jit, static_argnames=("blocks", "reml", "em_steps", "max_steps"))
def fit_stats(stats: GroupStats, blocks: cov.Structure, reml: bool = False, em_steps: int = 20,
              start: Array | None = None, max_steps: int = 200) -> Fit:
    """Maximum-likelihood (or REML) fit of an LMM (two or three levels, or two crossed factors) from its sufficient
    statistics.

    Differentiable in ``stats`` (hence in X, y and weights through :func:`~jaxhlm.stats.group_stats`): the
    optimiser's loop is not differentiated; θ̂'s derivatives come from the implicit function theorem at the
    optimum (:func:`_at_optimum`), and β̂, σ̂², Cov(β̂) and the deviance are smooth functions of θ̂ and ``stats``.

    Args:
      stats: :class:`~jaxhlm.stats.GroupStats` (padded or not).
      blocks: the covariance structure, a tuple of :class:`~jaxhlm.covariance.Block` (static).
      reml: fit by REML.
      em_steps: EM iterations before Newton.
      start: a θ, or several stacked (k, n_theta): Newton starts from the one among them and the EM warm
        start with the lowest finite deviance (EM's on a tie, then the first). Newton only descends, so the
        fit is then at least as good as every ``start`` — what a likelihood-ratio test of a
        nested pair needs (start the bigger model at the smaller model's optimum, and LR ≥ 0 is assured),
        and what lets a batch resume the few replicates a first round of ``max_steps`` left unconverged.
      max_steps: Newton steps at most (the result code says when they ran out).
    """
    T = jnp.asarray(cov.templates(blocks))
    lower = jnp.asarray(cov.theta_lower(blocks))
    fixed = jax.lax.stop_gradient(stats)
    dev = lambda th: _deviance(th, fixed, T, reml)  # noqa: E731
    theta0 = _best_start(dev, em_warmup(jnp.asarray(cov.theta_start(blocks)), fixed, T, blocks, em_steps), start)
    sol = minimise(dev, theta0, lower, even=jnp.asarray(cov.theta_even(blocks)), max_steps=max_steps,
                   snap=SNAP_TOL)
    theta = _at_optimum(partial(_deviance_of, reml=reml), lower, (stats, T), sol.x)
    f = factorize(relative_factor(theta, T), stats)
    s2 = residual_variance(f, stats, reml)
    linear = _deviance(jnp.zeros_like(theta), stats, T, reml)
    return Fit(
        solution=sol, theta=theta, deviance=objective(f, stats, reml), deviance_linear=linear, deviance_ols=linear,
        beta=fixed_effects(f), cov_beta=fixed_effects_cov(f, s2), sigma2=s2,
    )


def _best_start(dev: Callable[[Array], Array], x0: Array, start: Array | None) -> Array:
    """Of EM's warm start x0 and the given starts (one, or several stacked), the one with the lowest finite
    deviance (x0 on a tie)."""
    if start is None or x0.shape[0] == 0:  # a model without variance parameters starts where it ends
        return x0
    candidates = jnp.concatenate([x0[None], jnp.reshape(start, (-1, x0.shape[0]))])
    devs = jax.vmap(dev)(candidates)
    return candidates[jnp.argmin(jnp.where(jnp.isnan(devs), jnp.inf, devs))]


class ResidualFit(NamedTuple):
    """A fit with a residual covariance structure beyond σ²I (:mod:`jaxhlm.residual`)."""

    fit: Fit  # at the statistics of the rows whitened at ψ̂ (the structure's ``whiten``)
    psi: Array  # ψ̂, the structure's parameters beyond σ


def residual_loglik(Lam: Array, log_sigma: Array, data: GroupStats, reml: bool,
                    structure: Structure = INDEPENDENT, psi: Array | None = None, beta: Array | None = None) -> Array:
    """:func:`~jaxhlm.deviance.loglik_at_sigma` of the model with residual covariance σ²C(ψ) (``data`` what
    ``structure`` whitens): the whitened rows' less ½ log|C|, the log-determinant the whitening takes away."""
    stats, logdet = structure.whiten(data, jnp.zeros(0) if psi is None else psi)
    return loglik_at_sigma(Lam, log_sigma, stats, reml, beta) - 0.5 * logdet


def residual_deviance(x: Array, data: GroupStats, structure: Structure, templates: Array, reml: bool) -> Array:
    """The profiled deviance at x = (θ, ψ): the whitened rows', plus log|C(ψ)|."""
    n_theta = templates.shape[0]
    stats, logdet = structure.whiten(data, x[n_theta:])
    return _deviance(x[:n_theta], stats, templates, reml) + logdet


@partial(jax.jit, static_argnames=("structure", "blocks", "reml", "max_steps"))
def fit_residual(data: GroupStats, structure: Structure, blocks: cov.Structure, reml: bool = False,
                 start: Array | None = None, max_steps: int = 200) -> ResidualFit:
    """Maximum-likelihood (or REML) fit with residual covariance σ²C(ψ), from what ``structure`` whitens;
    ``start`` (θ, ψ), or several stacked, and ``max_steps`` as in :func:`fit_stats`.

    Why this way: ψ only changes the whitened rows' statistics, so the likelihood stays a function of (θ, ψ) and
    statistics of the size :func:`fit_stats` takes; projected Newton takes both together, from EM's warm start
    for θ at ψ = 0 (independent residuals of equal variance). The linear model's deviance (θ = 0) is minimised
    over ψ too: the LR test vs. linear model tests the random effects alone, as nlme's ``gls`` beside ``lme``.
    """
    T = jnp.asarray(cov.templates(blocks))
    n_theta, k = T.shape[0], structure.n_params
    fixed = jax.lax.stop_gradient(data)
    dev = lambda x: residual_deviance(x, fixed, structure, T, reml)  # noqa: E731
    em = em_warmup(jnp.asarray(cov.theta_start(blocks)), structure.whiten(fixed, jnp.zeros(k))[0], T, blocks, 20)
    x0 = _best_start(dev, jnp.concatenate([em, jnp.zeros(k)]), start)
    free = jnp.full(k, -jnp.inf)
    lower = jnp.concatenate([jnp.asarray(cov.theta_lower(blocks)), free])
    sol = minimise(dev, x0, lower,
                   even=jnp.concatenate([jnp.asarray(cov.theta_even(blocks)), jnp.zeros(k, bool)]),
                   max_steps=max_steps, snap=SNAP_TOL)
    linear = minimise(lambda e: dev(jnp.concatenate([jnp.zeros(n_theta), e])), jnp.zeros(k), free)
    x = _at_optimum(partial(_residual_deviance_of, structure=structure, reml=reml), lower, (data, T), sol.x)
    theta, psi = x[:n_theta], x[n_theta:]
    stats = structure.whiten(data, psi)[0]
    f = factorize(relative_factor(theta, T), stats)
    s2 = residual_variance(f, stats, reml)
    return ResidualFit(Fit(solution=sol, theta=theta, deviance=sol.value, deviance_linear=linear.value,
                           deviance_ols=dev(jnp.zeros(n_theta + k)),
                           beta=fixed_effects(f), cov_beta=fixed_effects_cov(f, s2), sigma2=s2), psi)


def _deviance_of(theta: Array, data: tuple[GroupStats, Array], reml: bool) -> Array:
    return _deviance(theta, *data, reml)


def _residual_deviance_of(x: Array, data: tuple[GroupStats, Array], structure: Structure, reml: bool) -> Array:
    stats, templates = data
    return residual_deviance(x, stats, structure, templates, reml)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _at_optimum(deviance: Callable[[Array, Any], Array], lower: Array, data: Any, x: Array) -> Array:
    """x̂ itself (θ̂, or (θ̂, ψ̂)), the minimiser of ``deviance(x, data)`` above ``lower``; its derivative with
    respect to ``data`` is that of the optimum (see the JVP rule). ``deviance`` closes over static values only:
    the arrays it needs (the statistics, the templates) come in ``data``."""
    return x


@_at_optimum.defjvp
def _at_optimum_jvp(deviance: Callable[[Array, Any], Array], primals: tuple, tangents: tuple
                    ) -> tuple[Array, Array]:
    """The implicit function theorem: x̂(s) solves ∇ₓ d(x, s) = 0 on the free coordinates, so
    dx̂ = −H⁻¹ ∂_s∇ₓ d · ds there, and coordinates held at their bound (a zero variance) stay put.

    Why not differentiate the optimiser: its loop has data-dependent length and a line search, and its
    derivative would be that of the iterates, not of the optimum; this costs one Hessian and one solve.
    """
    lower, data, x = primals
    ds = tangents[1]
    H = jax.hessian(deviance)(x, data)
    _, g_dot = jax.jvp(lambda s: jax.grad(deviance)(x, s), (data,), (ds,))
    free = x > lower
    both = free[:, None] & free[None, :]
    H = jnp.where(both, H, jnp.eye(x.shape[0]))
    return x, jnp.where(free, -jnp.linalg.solve(H, jnp.where(free, g_dot, 0.0)), 0.0)


class REInformation(NamedTuple):
    """Observed information of the variance parameters in Stata's metric, and the delta-method Jacobian."""

    hessian: Array  # ∂²ℓ/∂φ∂φᵀ of the β-profiled log likelihood, φ = (ln sd…, atanh r…, the residual rows')
    values: Array  # reported estimates: the blocks' var/cov entries, then the residual structure's rows
    jacobian: Array  # ∂values/∂φ


@partial(jax.jit, static_argnames=("blocks", "reml", "structure"))
def re_information(phi: Array, edge: Array, data: GroupStats, blocks: cov.Structure, reml: bool = False,
                   structure: Structure = INDEPENDENT) -> REInformation:
    """Hessian of ℓ(φ) = log L(β̂(φ), φ) at φ, with σ not profiled (Stata's VCE of the variance components).

    ``phi`` ends with the residual rows' coordinates (ln σ alone for σ²I; see :class:`~jaxhlm.residual.Structure`),
    ``data`` is what ``structure`` whitens; ``edge`` is ±1 for a correlation held at ±1 (a boundary optimum),
    else 0.
    """
    n_re = phi.shape[0] - len(structure.is_var)

    def loglik(p: Array) -> Array:
        root = cov.root_from_phi(blocks, p[:n_re], edge)
        log_sigma, psi = structure.split(p[n_re:])
        return residual_loglik(root / jnp.exp(log_sigma), log_sigma, data, reml, structure, psi)

    def values(p: Array) -> Array:
        return jnp.concatenate([cov.reported(blocks, p[:n_re], edge), structure.values(p[n_re:])])

    return REInformation(jax.hessian(loglik)(phi), values(phi), jax.jacfwd(values)(phi))


@partial(jax.jit, static_argnames=("blocks", "structure"))
def cov_beta_jacobian(phi: Array, edge: Array, data: GroupStats, blocks: cov.Structure,
                      structure: Structure = INDEPENDENT) -> Array:
    """∂Cov(β̂)/∂φ, (p, p, len φ): how the fixed effects' covariance (XᵀV⁻¹X)⁻¹ moves with the variance
    parameters (σ not profiled), the derivative Satterthwaite's degrees of freedom need. φ, ``edge``, ``data``
    and ``structure`` as in :func:`re_information`."""
    n_re = phi.shape[0] - len(structure.is_var)

    def cov_beta(p: Array) -> Array:
        root = cov.root_from_phi(blocks, p[:n_re], edge)
        log_sigma, psi = structure.split(p[n_re:])
        rows = structure.whiten(data, psi)[0]
        return fixed_effects_cov(factorize(root / jnp.exp(log_sigma), rows), jnp.exp(2.0 * log_sigma))

    return jax.jacfwd(cov_beta)(phi)


class KRParts(NamedTuple):
    """Derivatives in γ (the reported variances and covariances, then σ²) that Kenward and Roger's adjustment
    is built from; V = Σ_k γ_k G_k is linear in γ."""

    dM: Array  # (p, p, k): ∂(XᵀV⁻¹X)/∂γ_k = −XᵀV⁻¹G_kV⁻¹X
    d2M: Array  # (p, p, k, k): ∂²(XᵀV⁻¹X)/∂γ_k∂γ_l = XᵀV⁻¹(G_kV⁻¹G_l + G_lV⁻¹G_k)V⁻¹X
    d2logdet: Array  # (k, k): ∂² log|V|/∂γ_k∂γ_l = −tr(V⁻¹G_kV⁻¹G_l)


@partial(jax.jit, static_argnames="blocks")
def kenward_roger_parts(gamma: Array, stats: GroupStats, blocks: cov.Structure) -> KRParts:
    """:class:`KRParts` at γ, by automatic differentiation of XᵀV⁻¹X and log|V| written in the sufficient
    statistics: the N×N matrices V⁻¹G_kV⁻¹ of the textbook formulas are never formed. Needs Σ(γ) positive
    definite (an interior optimum)."""
    E = jnp.asarray(cov.covariance_templates(blocks))

    def parts(g: Array) -> tuple[Array, Array]:
        s2 = g[-1]
        f = factorize(jnp.linalg.cholesky(jnp.tensordot(g[:-1], E, axes=1) / s2), stats)
        return f.RX @ f.RX.T / s2, stats.n * jnp.log(s2) + f.logdet_L

    def dM(g: Array) -> tuple[Array, Array]:
        d = jax.jacfwd(lambda h: parts(h)[0])(g)
        return d, d

    d2M, dM_at = jax.jacfwd(dM, has_aux=True)(gamma)  # one pass gives the second derivative and the first
    return KRParts(dM_at, d2M, jax.hessian(lambda g: parts(g)[1])(gamma))


def phi_at(theta: np.ndarray, sigma2: float, blocks: cov.Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Σ, φ, edge) at θ̂: the random-effects covariance and its Stata-metric coordinates."""
    Lam = np.tensordot(theta, cov.templates(blocks), axes=1)
    sigma = sigma2 * Lam @ Lam.T
    phi, edge = cov.phi_from_cov(blocks, sigma)
    return sigma, np.append(phi, 0.5 * np.log(sigma2)), np.append(edge, 0.0)

"""EM iterations in sufficient-statistic space: the warm start that makes Newton find the global optimum.

Why: the ML surface of a model with several random slopes is multimodal on the boundary of the covariance
space. On the HSB three-effect model, Newton from lme4's default start (Λ = I) converges to a boundary
local optimum with var(ses) = 0, 2.7 log-likelihood units below the maximum. EM increases the likelihood
monotonically and moves through the interior, so a few EM steps followed by Newton (the strategy Stata's
``mixed`` uses) reach the global optimum from any of the starts tried; see ``tests/test_optimum.py``.

One EM step at θ (ML, β and σ² at their profiled values): with u = Λ⁻¹b the spherical random effects,

    E[u_j] = M_j⁻¹ Λᵀ Z_jᵀ (y_j − X_j β̂),   Var[u_j] = σ̂² M_j⁻¹,   M_j = ΛᵀZ_jᵀZ_jΛ + I,
    Σ_new = Λ · mean_j(E[u_j]E[u_j]ᵀ + Var[u_j]) · Λᵀ,

projected onto the covariance structure. It costs one factorisation, no derivatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from . import covariance as cov
from .deviance import chol_solve, factorize, fixed_effects, posterior, relative_factor, residual_variance
from .stats import CrossedStats, GroupStats, NestedStats


def em_step(theta: Array, stats: GroupStats, templates: Array, blocks: cov.Structure) -> Array:
    Lam = relative_factor(theta, templates)
    q = Lam.shape[0]
    f = factorize(Lam, stats)
    beta = fixed_effects(f)
    s2 = residual_variance(f, stats, reml=False)
    if isinstance(stats, (NestedStats, CrossedStats)):
        return cov.theta_from_cov(blocks, _level_moments(Lam, stats, beta, s2) / s2)
    M = jnp.einsum("ji,gjk,kl->gil", Lam, stats.ZtZ, Lam) + jnp.eye(q)
    # With W = L⁻¹Λᵀ and c = L⁻¹Λᵀ(Zᵀy − ZᵀXβ): Λ(E[u]E[u]ᵀ + Var u)Λᵀ = Wᵀ(ccᵀ + σ²I)W.
    rhs = jnp.einsum("ji,gj->gi", Lam, stats.Zty - stats.ZtX @ beta)
    B = jnp.concatenate([rhs[..., None], jnp.broadcast_to(Lam.T, M.shape)], axis=-1)
    _, sol = chol_solve(M, B)
    c, W = sol[..., 0], sol[..., 1:]
    Wc = jnp.einsum("gji,gj->gi", W, c)
    S = s2 * jnp.einsum("gji,gjk->gik", W, W) + Wc[:, :, None] * Wc[:, None, :]
    # Padded groups (ZᵀZ = 0) contribute nothing but would count in the mean: exclude them. Groups count
    # by their weights.
    real = jnp.any(stats.ZtZ != 0, axis=(1, 2)) * stats.group_weights
    return cov.theta_from_cov(blocks, jnp.einsum("g,gij->ij", real, S) / (jnp.sum(real) * s2))


def _level_moments(Lam: Array, stats: NestedStats | CrossedStats, beta: Array, s2: Array) -> Array:
    """E[bbᵀ | y] averaged over the groups (first block) and over the clusters, or the crossed factor's levels
    (second block), of a model with two grouping levels: the block-diagonal Σ of the next EM iterate."""
    q1 = stats.ZtZ.shape[-1]
    u1, V1, u2, V2 = posterior(Lam, stats, beta)

    def mean(L: Array, u: Array, V: Array, real: Array) -> Array:
        b = u @ L.T
        return jnp.einsum("g,gi,gj->ij", real, b, b) / jnp.sum(real) + s2 * jnp.einsum(
            "g,ia,gab,jb->ij", real, L, V, L) / jnp.sum(real)

    # Groups count by their weights (a left-out group not at all), and a nested cluster by its own and its group's.
    v = stats.group_weights
    outer = mean(Lam[:q1, :q1], u1, V1, jnp.any(stats.ZtZ != 0, axis=(1, 2)) * v)
    inner_weights = v[stats.parent] * stats.cluster_weights if isinstance(stats, NestedStats) else 1.0
    inner = mean(Lam[q1:, q1:], u2, V2, jnp.any(stats.WtW != 0, axis=(1, 2)) * inner_weights)
    return jax.scipy.linalg.block_diag(outer, inner)


def em_warmup(theta0: Array, stats: GroupStats, templates: Array, blocks: cov.Structure, steps: int = 20) -> Array:
    """``steps`` EM iterations from ``theta0`` (Stata's default ``emiterate`` is 20)."""
    return jax.lax.fori_loop(0, steps, lambda _, th: em_step(th, stats, templates, blocks), theta0)

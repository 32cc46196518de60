r"""The profiled deviance of a linear mixed model: a pure, jittable function of θ and the sufficient statistics.

This is jaxhlm's public numerical core. Everything takes arrays (a :class:`~jaxhlm.stats.GroupStats`
pytree and θ), never DataFrames, so it composes with ``jax.jit``, ``jax.grad``, ``jax.hessian``,
``jax.vmap`` and sharding.

With Σ = σ²ΛΛᵀ (Bates et al. 2015, lme4), per group

.. math::

    L_j L_j^\top = \Lambda^\top Z_j^\top Z_j \Lambda + I,\qquad
    S_j = \Lambda L_j^{-\top} L_j^{-1} \Lambda^\top = \Lambda (\Lambda^\top Z_j^\top Z_j \Lambda + I)^{-1}\Lambda^\top,

and over groups, with the blocked factorisation of the penalised least-squares system collapsed onto X,

.. math::

    R_X R_X^\top = X^\top X - \sum_j X_j^\top Z_j\, S_j\, Z_j^\top X_j,\qquad
    c_\beta = R_X^{-1}\big(X^\top y - \sum_j X_j^\top Z_j\, S_j\, Z_j^\top y_j\big),

    r^2 = y^\top y - \sum_j y_j^\top Z_j\, S_j\, Z_j^\top y_j - |c_\beta|^2

(the penalised residual sum of squares), and the deviance (−2 log likelihood with β and σ² profiled out) is

.. math::

    d_{ML}(\theta) = \sum_j \log|L_j|^2 + n\,(1 + \log(2\pi r^2/n)),\qquad
    d_{REML}(\theta) = \sum_j \log|L_j|^2 + \log|R_X|^2 + (n-p)(1 + \log(2\pi r^2/(n-p))).

θ enters only through the q×q matrices S_j. For batched refits the first sum is one product of the packed S_j
with the fixed products of ZⱼᵀXⱼ (:func:`jaxhlm.stats.zx_products`), so in a batch of one design it is a single
matrix multiplication. The q×q factorisations are tiny and batched over groups; a generic batched Cholesky
spends its time in dispatch, so for q <= 6 they are unrolled into elementwise arithmetic over the group axis.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.linalg import solve_triangular

from . import covariance as cov
from .stats import CrossedStats, GroupStats, NestedStats

_UNROLL_MAX_Q = 6
LOG_2PI = math.log(2.0 * math.pi)


class Factor(NamedTuple):
    """What one factorisation at a given Λ yields; every estimate is a cheap function of it."""

    logdet_L: Array  # Σ_j log|L_j|²
    logdet_RX: Array  # log|R_X|²
    RX: Array  # (p, p) lower-triangular
    cb: Array  # (p,)
    r2: Array  # penalised residual sum of squares


def relative_factor(theta: Array, templates: Array) -> Array:
    """Λ(θ) = Σ_k θ_k T_k (see :mod:`jaxhlm.covariance`)."""
    return jnp.tensordot(theta, templates, axes=1)


def _chol_solve_small(M: Array, B: Array) -> tuple[Array, Array]:
    """For a batch of SPD (…, q, q) M: (Σ log diag L, L⁻¹B) with L = chol(M), unrolled over q."""
    q = M.shape[-1]
    if q == 0:  # no random effects: nothing to factor or solve
        return jnp.zeros(M.shape[:-2]), B
    L: list[list[Array]] = [[None] * q for _ in range(q)]  # type: ignore[list-item]
    for j in range(q):
        s = M[..., j, j]
        for k in range(j):
            s = s - L[j][k] ** 2
        L[j][j] = jnp.sqrt(s)
        for i in range(j + 1, q):
            s = M[..., i, j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s / L[j][j]
    x: list[Array] = []
    for i in range(q):
        s = B[..., i, :]
        for k in range(i):
            s = s - L[i][k][..., None] * x[k]
        x.append(s / L[i][i][..., None])
    return sum(jnp.log(L[j][j]) for j in range(q)), jnp.stack(x, axis=-2)


def chol_solve(M: Array, B: Array) -> tuple[Array, Array]:
    """(Σ log diag L, L⁻¹B) for a batch of small SPD matrices M = LLᵀ."""
    if M.shape[-1] <= _UNROLL_MAX_Q:
        return _chol_solve_small(M, B)
    L = jnp.linalg.cholesky(M)
    logdiag = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    return logdiag, solve_triangular(L, B, lower=True)


def shrinkage(Lam: Array, ZtZ: Array) -> tuple[Array, Array]:
    """(Σ log diag Lⱼ per group, Sⱼ) with LⱼLⱼᵀ = ΛᵀZⱼᵀZⱼΛ + I and Sⱼ = Λ(LⱼLⱼᵀ)⁻¹Λᵀ (module docstring)."""
    M = jnp.einsum("ji,gjk,kl->gil", Lam, ZtZ, Lam) + jnp.eye(Lam.shape[0])
    logdiag, W = chol_solve(M, jnp.broadcast_to(Lam.T, M.shape))  # W = L⁻¹Λᵀ
    return logdiag, jnp.einsum("gia,gib->gab", W, W)


def factorize(Lam: Array, stats: GroupStats | NestedStats) -> Factor:
    """The factorisation of the penalised least-squares system at relative factor Λ (module docstring); each
    group's terms weighted by its ``group_weights`` (1 for an ordinary fit)."""
    if isinstance(stats, NestedStats):
        return _factorize_nested(Lam, stats)
    if isinstance(stats, CrossedStats):
        return _factorize_crossed(Lam, stats)
    q, p = Lam.shape[0], stats.XtX.shape[0]
    logdiag, S = shrinkage(Lam, stats.ZtZ)
    v = stats.group_weights
    S = v[:, None, None] * S
    a, b = np.triu_indices(q)
    u, w = np.triu_indices(p)
    if stats.ZtX2.shape[-1]:
        packed = stats.XtX[u, w] - jnp.einsum("gk,gkl->l", S[:, a, b], stats.ZtX2)
        A = jnp.zeros((p, p)).at[u, w].set(packed).at[w, u].set(packed)
    else:  # single fits, and batches whose ZtX2 would be too large (stats.packed_products)
        A = stats.XtX - jnp.einsum("gai,gab,gbj->ij", stats.ZtX, S, stats.ZtX)
    Sy = jnp.einsum("gab,gb->ga", S, stats.Zty)
    return _profile(A, stats.Xty - jnp.einsum("gqi,gq->i", stats.ZtX, Sy), stats.yty - jnp.sum(Sy * stats.Zty),
                    2.0 * jnp.sum(v * logdiag))


def _profile(A: Array, b: Array, c: Array, logdet_L: Array, n_dense: int = 0) -> Factor:
    """The :class:`Factor` from the block-diagonal random effects' Schur complement of [X y]ᵀ[X y]: A = XᵀV⁻¹X,
    b = XᵀV⁻¹y, c = yᵀV⁻¹y (all times σ² and V over those effects only), and Σⱼ log|Lⱼ|². With ``n_dense`` > 0
    the first ``n_dense`` rows of A and b are random effects that are not block-diagonal (a crossed factor's,
    scaled by Λ, with I added to their block): one Cholesky factor of A then holds the rest of log|L|² in its
    leading diagonal and R_X in its trailing block."""
    L = jnp.linalg.cholesky(A)
    z = solve_triangular(L, b, lower=True)
    logdiag = jnp.log(jnp.diagonal(L))
    return Factor(logdet_L=logdet_L + 2.0 * jnp.sum(logdiag[:n_dense]), logdet_RX=2.0 * jnp.sum(logdiag[n_dense:]),
                  RX=L[n_dense:, n_dense:], cb=z[n_dense:], r2=c - jnp.sum(z**2))


def _factorize_nested(Lam: Array, stats: NestedStats) -> Factor:
    r""":func:`factorize` for clusters nested in groups.

    Why this way: in group j the system ΛᵀZⱼᵀZⱼΛ + I over (the group's effects, its clusters' effects) is an
    arrow: the clusters' blocks are uncoupled from each other and coupled only to the group's block. Clusters
    are eliminated first, each by its own small factorisation L_kL_kᵀ = Λ₂ᵀW_kᵀW_kΛ₂ + I with
    C_k = L_k⁻¹Λ₂ᵀW_kᵀZ_kΛ₁; the group's block is then the Schur complement
    M_j = Λ₁ᵀZⱼᵀZⱼΛ₁ + I − Σ_{k∈j} C_kᵀC_k. So the cost is linear in the clusters, and no (effects of a group ×
    effects of a group) matrix is formed however many clusters a group holds. log|L|² = Σ_k log|L_k|² +
    Σⱼ log|M_j|, and [X y]ᵀV⁻¹[X y] (times σ²) is [X y]ᵀ[X y] less the squares of the forward-solved right-hand
    sides of both stages. Λ is block-diagonal over (Λ₁, Λ₂): the outer level's effects first. A group's weight
    (``group_weights``) multiplies all of its terms, its clusters' included; a cluster's (``cluster_weights``) its
    own terms and those it leaves in its group's block (as would as many copies of the cluster).
    """
    q1, p = stats.ZtZ.shape[-1], stats.XtX.shape[0]
    L1, L2 = Lam[:q1, :q1], Lam[q1:, q1:]
    M2 = jnp.einsum("ji,gjk,kl->gil", L2, stats.WtW, L2) + jnp.eye(L2.shape[0])
    B2 = jnp.concatenate([stats.WtZ @ L1, stats.WtX, stats.Wty[..., None]], axis=-1)
    logdiag2, K = chol_solve(M2, jnp.einsum("ji,gjk->gik", L2, B2))
    C, Kxy = K[..., :q1], K[..., q1:]
    m, c = stats.ZtZ.shape[0], stats.cluster_weights
    M1 = (jnp.einsum("ji,gjk,kl->gil", L1, stats.ZtZ, L1) + jnp.eye(q1)
          - jax.ops.segment_sum(jnp.einsum("g,gai,gaj->gij", c, C, C), stats.parent, num_segments=m))
    B1 = jnp.einsum("ji,gjk->gik", L1, jnp.concatenate([stats.ZtX, stats.Zty[..., None]], axis=-1))
    logdiag1, K1 = chol_solve(M1, B1 - jax.ops.segment_sum(jnp.einsum("g,gai,gaj->gij", c, C, Kxy), stats.parent,
                                                           num_segments=m))
    v1 = stats.group_weights
    v2 = v1[stats.parent] * c
    G = jnp.einsum("g,gai,gaj->ij", v2, Kxy, Kxy) + jnp.einsum("g,gai,gaj->ij", v1, K1, K1)
    return _profile(stats.XtX - G[:p, :p], stats.Xty - G[:p, p], stats.yty - G[p, p],
                    2.0 * (jnp.sum(v1 * logdiag1) + jnp.sum(v2 * logdiag2)))


def _crossed_dense(L2: Array, stats: CrossedStats) -> tuple[Array, Array]:
    """The second crossed factor's block of the penalised system, Λ₂ᵀWᵀWΛ₂ + I (D, D) with D = k q2, and its
    products with [X y], Λ₂ᵀWᵀ[X y] (D, p + 1), the factor's levels one after another."""
    k, q2 = stats.Wty.shape
    M2 = jnp.einsum("ji,gjk,kl->gil", L2, stats.WtW, L2) + jnp.eye(q2)
    dense = jnp.einsum("gab,gh->gahb", M2, jnp.eye(k)).reshape(k * q2, k * q2)
    Wxy = jnp.einsum("ji,gjk->gik", L2, jnp.concatenate([stats.WtX, stats.Wty[..., None]], axis=-1))
    return dense, Wxy.reshape(k * q2, -1)


class _Crossed(NamedTuple):
    """The pieces of a crossed model's penalised system at Λ that the factorisation and the posterior share."""

    L1: Array  # the first factor's Λ block
    M1: Array  # Λ₁ᵀZⱼᵀZⱼΛ₁ + I per group (m, q1, q1)
    C: Array  # Λ₁ᵀZⱼᵀWΛ₂ per group (m, q1, D), or over its level slots (m, q1, R q2) for a sparse crossing
    dense: Array  # the second factor's block (D, D), from :func:`_crossed_dense`
    Wxy: Array  # Λ₂ᵀWᵀ[X y] (D, p + 1)


def _crossed(Lam: Array, stats: CrossedStats) -> _Crossed:
    q1 = stats.ZtZ.shape[-1]
    L1, L2 = Lam[:q1, :q1], Lam[q1:, q1:]
    M1 = jnp.einsum("ji,gjk,kl->gil", L1, stats.ZtZ, L1) + jnp.eye(q1)
    C = jnp.einsum("ji,gjhb,bc->gihc", L1, stats.ZtW, L2).reshape(*stats.ZtZ.shape[:2], -1)
    return _Crossed(L1, M1, C, *_crossed_dense(L2, stats))


def _crossed_gram(v: Array, K: Array, stats: CrossedStats) -> Array:
    """Σⱼ vⱼ KⱼᵀKⱼ for K = [second factor's effects, other columns] per group (m, q1, D + c), as a (D + c)² matrix.

    Why two ways: for a dense crossing one product over the groups. For a sparse one (each group's slots, K
    (m, q1, R q2 + c)), each group's R q2 × R q2 block is added at its levels, so the cost is m (R q2)² rather
    than m D²: a user who rated 20 of 1,000 items adds a 20 × 20 block, not a 1,000 × 1,000 one."""
    if stats.touched.shape[1] == 0:
        return jnp.einsum("g,gai,gaj->ij", v, K, K)
    k, q2 = stats.Wty.shape
    m, R = stats.touched.shape
    Kw, Kc = K[..., :R * q2], K[..., R * q2:]
    at = stats.touched
    ww = jnp.einsum("g,gai,gaj->gij", v, Kw, Kw).reshape(m, R, q2, R, q2).transpose(0, 1, 3, 2, 4)
    ww = jnp.zeros((k, q2, k, q2)).at[at[:, :, None], :, at[:, None, :], :].add(ww).reshape(k * q2, k * q2)
    wc = jnp.einsum("g,gai,gaj->gij", v, Kw, Kc).reshape(m, R, q2, -1)
    wc = jnp.zeros((k, q2, Kc.shape[-1])).at[at].add(wc).reshape(k * q2, -1)
    return jnp.block([[ww, wc], [wc.T, jnp.einsum("g,gai,gaj->ij", v, Kc, Kc)]])


def _factorize_crossed(Lam: Array, stats: CrossedStats) -> Factor:
    r""":func:`factorize` for two crossed grouping factors (MixedModels.jl's blocked Cholesky factor).

    Why this way: the first factor's effects are block-diagonal over its groups, the second's are coupled to all
    of them. The groups are eliminated first, each by its small factorisation LⱼLⱼᵀ = Λ₁ᵀZⱼᵀZⱼΛ₁ + I, from the
    system over (the second factor's effects, X, y); what is left is one dense matrix of order D + p + 1 (D =
    the second factor's levels × effects), and one Cholesky factor of it (:func:`_profile`) gives the rest of
    log|L|², R_X, c_β and r². So the cost is linear in the first factor's groups and cubic in D, which is why
    the factor with fewer effects in all is put second (:mod:`jaxhlm.design`). Group weights multiply the
    first factor's terms; the second factor's sums are the caller's to weight (:mod:`jaxhlm.influence`).
    """
    c = _crossed(Lam, stats)
    Zxy = jnp.einsum("ji,gjk->gik", c.L1, jnp.concatenate([stats.ZtX, stats.Zty[..., None]], axis=-1))
    logdiag1, K = chol_solve(c.M1, jnp.concatenate([c.C, Zxy], axis=-1))
    v = stats.group_weights
    xy = jnp.block([[stats.XtX, stats.Xty[:, None]], [stats.Xty[None], stats.yty[None, None]]])
    A = jnp.block([[c.dense, c.Wxy], [c.Wxy.T, xy]]) - _crossed_gram(v, K, stats)
    return _profile(A[:-1, :-1], A[:-1, -1], A[-1, -1], 2.0 * jnp.sum(v * logdiag1), c.dense.shape[0])


def crossed_posterior(Lam: Array, stats: CrossedStats, beta: Array) -> tuple[Array, Array, Array, Array]:
    """:func:`nested_posterior` for two crossed factors: (û₁ (m, q1), its covariance blocks (m, q1, q1), û₂
    (k, q2), its blocks (k, q2, q2)), over σ², u = Λ⁻¹b.

    The elimination of :func:`_factorize_crossed` run through to the back-substitution: with Cⱼ = Λ₁ᵀZⱼᵀWΛ₂ and
    S the second factor's Schur complement, û₂ = S⁻¹(r₂ − Σⱼ CⱼᵀMⱼ⁻¹r₁ⱼ) and û₁ⱼ = Mⱼ⁻¹(r₁ⱼ − Cⱼû₂); the covariance
    blocks are those of S⁻¹ and Mⱼ⁻¹ + Mⱼ⁻¹CⱼS⁻¹CⱼᵀMⱼ⁻¹.
    """
    q1 = stats.ZtZ.shape[-1]
    k, q2 = stats.Wty.shape
    c = _crossed(Lam, stats)
    r1 = jnp.einsum("ji,gj->gi", c.L1, stats.Zty - stats.ZtX @ beta)
    eye = jnp.broadcast_to(jnp.eye(q1), c.M1.shape)
    _, K = chol_solve(c.M1, jnp.concatenate([c.C, r1[..., None], eye], axis=-1))
    Kc, k1, Linv = K[..., :-q1 - 1], K[..., -q1 - 1], K[..., -q1:]  # Lⱼ⁻¹Cⱼ, Lⱼ⁻¹r₁ⱼ, Lⱼ⁻¹
    G = _crossed_gram(stats.group_weights, jnp.concatenate([Kc, k1[..., None]], axis=-1), stats)  # as factorised
    S = c.dense - G[:-1, :-1]
    s = c.Wxy[:, -1] - c.Wxy[:, :-1] @ beta - G[:-1, -1]
    RS = jnp.linalg.cholesky(S)
    Sinv = jax.scipy.linalg.cho_solve((RS, True), jnp.eye(S.shape[0]))
    u2 = Sinv @ s
    blocks = Sinv.reshape(k, q2, k, q2)
    F = jnp.einsum("gab,gai->gbi", Linv, Kc)  # Mⱼ⁻¹Cⱼ
    if stats.touched.shape[1] == 0:
        Cu2, CSC = F @ u2, jnp.einsum("gia,ab,gjb->gij", F, Sinv, F)
    else:  # each group's slots: û₂ and S⁻¹ at its levels
        at = stats.touched
        m, R = at.shape
        u2_at = u2.reshape(k, q2)[at].reshape(m, R * q2)
        Sinv_at = blocks[at[:, :, None], :, at[:, None, :], :].transpose(0, 1, 3, 2, 4).reshape(m, R * q2, R * q2)
        Cu2, CSC = jnp.einsum("gbi,gi->gb", F, u2_at), jnp.einsum("gia,gab,gjb->gij", F, Sinv_at, F)
    u1 = jnp.einsum("gab,ga->gb", Linv, k1) - Cu2
    V1 = jnp.einsum("gai,gaj->gij", Linv, Linv) + CSC
    return u1, V1, u2.reshape(k, q2), blocks[jnp.arange(k), :, jnp.arange(k), :]


def conditional_modes(Lam: Array, stats: GroupStats, beta: Array, sigma2: Array) -> tuple[Array, Array]:
    """The random effects' conditional means b̂ⱼ = Sⱼ(Zⱼᵀyⱼ − ZⱼᵀXⱼβ) (the BLUPs at β = β̂) and conditional
    covariances σ²Sⱼ given y, θ and β — what lme4's ``ranef(condVar = TRUE)`` reports.

    Why Sⱼ: with Σ = σ²ΛΛᵀ, E[bⱼ | yⱼ] = ΣZⱼᵀVⱼ⁻¹(yⱼ − Xⱼβ) = Λ(ΛᵀZⱼᵀZⱼΛ + I)⁻¹ΛᵀZⱼᵀ(yⱼ − Xⱼβ), the statistics
    the fit already holds; no row is touched.
    """
    _, S = shrinkage(Lam, stats.ZtZ)
    return jnp.einsum("gab,gb->ga", S, stats.Zty - stats.ZtX @ beta), sigma2 * S


def nested_posterior(Lam: Array, stats: NestedStats, beta: Array) -> tuple[Array, Array, Array, Array]:
    """The spherical random effects' conditional means and covariances (over σ²) given y at β, both levels:
    (û₁ (m, q1), M₁⁻¹-block (m, q1, q1), û₂ (k, q2), its block (k, q2, q2)), with u = Λ⁻¹b.

    The arrow elimination of :func:`_factorize_nested` run through to the back-substitution: û₁ = S⁻¹(r₁ −
    Σ_k E_kᵀD_k⁻¹r_k) with S the groups' Schur complement, û_k = D_k⁻¹(r_k − E_kû₁); the covariance blocks
    are S⁻¹ and D_k⁻¹ + D_k⁻¹E_k S⁻¹ E_kᵀD_k⁻¹ (D_k the clusters' blocks, E_k their coupling to the group).
    """
    q1, q2, m = stats.ZtZ.shape[-1], stats.WtW.shape[-1], stats.ZtZ.shape[0]
    L1, L2 = Lam[:q1, :q1], Lam[q1:, q1:]
    D = jnp.einsum("ji,gjk,kl->gil", L2, stats.WtW, L2) + jnp.eye(q2)
    r2 = jnp.einsum("ji,gj->gi", L2, stats.Wty - stats.WtX @ beta)
    E = jnp.einsum("ji,gjk,kl->gil", L2, stats.WtZ, L1)
    _, K = chol_solve(D, jnp.concatenate([E, r2[..., None], jnp.broadcast_to(jnp.eye(q2), D.shape)], axis=-1))
    C, k2, Dinv_half = K[..., :q1], K[..., q1], K[..., q1 + 1:]  # L_k⁻¹E_k, L_k⁻¹r_k, L_k⁻¹
    c = stats.cluster_weights  # a cluster's weight multiplies what it leaves in its group's block
    S = (jnp.einsum("ji,gjk,kl->gil", L1, stats.ZtZ, L1) + jnp.eye(q1)
         - jax.ops.segment_sum(jnp.einsum("g,gai,gaj->gij", c, C, C), stats.parent, num_segments=m))
    r1 = (jnp.einsum("ji,gj->gi", L1, stats.Zty - stats.ZtX @ beta)
          - jax.ops.segment_sum(jnp.einsum("g,gai,ga->gi", c, C, k2), stats.parent, num_segments=m))
    _, K1 = chol_solve(S, jnp.concatenate([r1[..., None], jnp.broadcast_to(jnp.eye(q1), S.shape)], axis=-1))
    u1 = jnp.einsum("gai,ga->gi", K1[..., 1:], K1[..., 0])
    V1 = jnp.einsum("gai,gaj->gij", K1[..., 1:], K1[..., 1:])
    u2 = jnp.einsum("gai,ga->gi", Dinv_half, k2 - jnp.einsum("gai,gi->ga", C, u1[stats.parent]))
    F = jnp.einsum("gai,gaj->gij", Dinv_half, C)  # D_k⁻¹E_k
    V2 = jnp.einsum("gai,gaj->gij", Dinv_half, Dinv_half) + jnp.einsum("gia,gab,gjb->gij", F, V1[stats.parent], F)
    return u1, V1, u2, V2


def posterior(Lam: Array, stats: NestedStats | CrossedStats, beta: Array) -> tuple[Array, Array, Array, Array]:
    """Both levels' spherical conditional means and covariances: :func:`nested_posterior` or
    :func:`crossed_posterior`, as the statistics say."""
    return (crossed_posterior if isinstance(stats, CrossedStats) else nested_posterior)(Lam, stats, beta)


def level_modes(Lam: Array, stats: NestedStats | CrossedStats, beta: Array, sigma2: Array
                ) -> tuple[tuple[Array, Array], ...]:
    """:func:`conditional_modes` of a model with two grouping levels (nested or crossed), per level: ((b̂ (groups,
    q1), σ²-scaled covariances), (b̂ (clusters or levels, q2), covariances)), from :func:`posterior` (b = Λu)."""
    q1 = stats.ZtZ.shape[-1]
    u1, V1, u2, V2 = posterior(Lam, stats, beta)
    return tuple((u @ L.T, sigma2 * jnp.einsum("ia,gab,jb->gij", L, V, L))
                 for u, V, L in ((u1, V1, Lam[:q1, :q1]), (u2, V2, Lam[q1:, q1:])))


def _dof(stats: GroupStats, reml: bool) -> Array:
    return stats.n - stats.p if reml else stats.n


def objective(f: Factor, stats: GroupStats, reml: bool) -> Array:
    """Deviance from a factorisation (σ² profiled out)."""
    nu = _dof(stats, reml)
    d = f.logdet_L + nu * (1.0 + LOG_2PI + jnp.log(f.r2 / nu))
    return d + f.logdet_RX if reml else d


@partial(jax.jit, static_argnames="reml")
def profiled_deviance(theta: Array, stats: GroupStats, templates: Array | None = None, reml: bool = False
                      ) -> Array:
    r"""Profiled deviance d(θ) = −2 log L (ML) or the REML criterion, β and σ² profiled out.

    Args:
      theta: (n_theta,) relative covariance parameters; Λ(θ) = Σ_k θ_k T_k.
      stats: sufficient statistics from :func:`jaxhlm.stats.group_stats`.
      templates: (n_theta, q, q) θ templates from :func:`jaxhlm.covariance.templates`; by default one
        unstructured block over the q random effects (θ the lower triangle of Λ column by column, as lme4's).
      reml: REML criterion instead of the ML deviance.

    Returns:
      A float64 scalar. ``-profiled_deviance(...) / 2`` is the maximised log likelihood at θ.

    Pure and differentiable: ``jax.grad``/``jax.hessian`` give exact derivatives (in θ and in every array of
    ``stats``, hence in X, y and weights through :func:`~jaxhlm.stats.group_stats`), ``jax.vmap`` batches over
    θ or over stacked ``stats`` (bootstrap replicates, many outcomes).
    """
    if templates is None:
        templates = jnp.asarray(cov.templates(cov.unstructured(stats.ZtZ.shape[-1])))
    return objective(factorize(relative_factor(theta, templates), stats), stats, reml)


def fixed_effects(f: Factor) -> Array:
    """β̂(θ) = R_X⁻ᵀ c_β: the GLS estimate at the variance parameters of the factorisation."""
    return solve_triangular(f.RX.T, f.cb, lower=False)


def residual_variance(f: Factor, stats: GroupStats, reml: bool) -> Array:
    """σ̂²(θ) = r²/n (ML) or r²/(n−p) (REML)."""
    return f.r2 / _dof(stats, reml)


def fixed_effects_cov(f: Factor, sigma2: Array) -> Array:
    """(XᵀV⁻¹X)⁻¹ = σ² (R_X R_Xᵀ)⁻¹: the covariance of β̂ with the variance parameters held fixed."""
    RXinv = solve_triangular(f.RX, jnp.eye(f.RX.shape[0]), lower=True)
    return sigma2 * RXinv.T @ RXinv


def loglik_at_sigma(Lam: Array, log_sigma: Array, stats: GroupStats, reml: bool, beta: Array | None = None
                    ) -> Array:
    """Log likelihood with σ free and β profiled out (the function whose Hessian gives Stata's RE SEs), or, given
    ``beta`` (ML), at that β: the penalised residual sum of squares grows by |R_Xᵀβ − c_β|² = |R_Xᵀ(β − β̂)|²."""
    f = factorize(Lam, stats)
    s2 = jnp.exp(2.0 * log_sigma)
    nu = _dof(stats, reml)
    r2 = f.r2 if beta is None else f.r2 + jnp.sum((f.RX.T @ beta - f.cb) ** 2)
    ll = -0.5 * (nu * (LOG_2PI + 2.0 * log_sigma) + f.logdet_L + r2 / s2)
    return ll - 0.5 * f.logdet_RX if reml else ll

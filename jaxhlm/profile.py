"""Profile-likelihood confidence intervals (lme4's ``confint(method = "profile")``), solved for directly.

The 1 − α profile interval of a scalar g of the parameters ψ = (β, φ), φ = (ln sd…, atanh r…, ln σ) in
Stata's metric, is where the profile log likelihood ℓ_g(c) = max{ℓ(ψ) : g(ψ) = c} has fallen χ²₁(1 − α)/2
below its maximum ℓ̂. Each target g is a coordinate of ψ (a fixed effect, a ln sd, an atanh r, ln σ) or a
covariance, which is made one by writing its correlation as c / (sd·sd). An endpoint is a root of the signed
root ζ(c) = ±√(2(ℓ̂ − ℓ_g(c))) at ±√χ²₁(1 − α): Newton's method on ζ, which is close to linear in c, from the
Wald endpoint, each ℓ_g(c) a maximisation over the other coordinates by the fit's own optimiser
(:func:`~jaxhlm.optimize.minimise`, warm started), and ζ's slope from dℓ_g/dc = ∂ℓ/∂c at that maximum (no
derivative of the maximisation). Every target and both sides run as one vmapped program. lme4 evaluates each
profile on a grid and interpolates a spline; these roots are exact to the solver's tolerance, which matters
most where another parameter is at its boundary at the endpoint (a correlation of +1 at the smallest random-slope
SD the data allow): the profile has a kink there that a spline smooths over.

Why φ: ℓ is close to quadratic in (ln sd, atanh r, ln σ), so the Wald start is close. An interval that reaches
the boundary has no root: where the profile of a standard deviation stays above the cut-off all the way to 0 (a
correlation's, to ±1), the iterates run off along that coordinate, and the endpoint is the boundary, 0 (±1).

The likelihood profiled is the ML one, for a REML fit too: the REML criterion changes with the fixed-effects
design, so it has no profile in β. lme4 profiles a REML fit's ML likelihood as well.
"""

from __future__ import annotations

import enum
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from scipy import special

from . import covariance as cov
from . import tracecache
from .deviance import loglik_at_sigma
from .errors import JaxhlmError
from .estimate import fit_stats, phi_at
from .optimize import converged, minimise
from .stats import GroupStats, NestedStats

#: Values of the target tried at most per endpoint (each a maximisation over the other parameters).
MAX_STEPS = 60
#: Converged when the signed root of the likelihood-ratio statistic is this close to its cut-off (the
#: endpoint is then within about TOL Wald SEs).
TOL = 1e-9
#: How far a ln sd may fall below its estimate (e⁻¹⁰ ≈ 4.5e-5 of it), and how large an |atanh r| may grow
#: (|r| = tanh 5 ≈ 0.99991), before the path is taken to run to the boundary.
LNSD_RUN, ATANH_RUN = 10.0, 5.0


class Status(enum.IntEnum):
    RUNNING = -1
    CONVERGED = 0
    BOUNDARY = 1  # the interval reaches the boundary of the target's range (sd 0, correlation ±1)
    FAILED = 2  # no endpoint found in MAX_STEPS values, or a maximisation over the others failed


class Targets(NamedTuple):
    """One endpoint problem per row (arrays, so that one program solves them all)."""

    index: Array  # int: a coordinate of ψ
    reported: Array  # bool: the target is the covariance whose atanh r is that coordinate, not the coordinate
    side: Array  # ±1.0: the upper or the lower endpoint


class Endpoints(NamedTuple):
    value: Array  # g at the endpoint (±inf where it is the boundary, NaN where it failed)
    status: Array  # :class:`Status`
    steps: Array


tracecache.register(Targets, Endpoints)


def _n_phi(blocks: cov.Structure) -> int:
    return sum(b.n_theta for b in blocks) + 1


def loglik(psi: Array, stats: GroupStats | NestedStats, blocks: cov.Structure) -> Array:
    """The ML log likelihood at ψ = (β, φ) (nothing profiled out)."""
    p = psi.shape[0] - _n_phi(blocks)
    phi = psi[p:]
    root = cov.root_from_phi(blocks, phi[:-1], jnp.zeros(phi.shape[0] - 1))
    return loglik_at_sigma(root / jnp.exp(phi[-1]), phi[-1], stats, False, beta=psi[:p])


def _coordinate_kinds(blocks: cov.Structure, p: int) -> np.ndarray:
    """Per coordinate of ψ: 1 for a ln sd, 2 for an atanh r, 0 otherwise (β, ln σ)."""
    phi = [1 if is_var else 2 for is_var in cov.variance_mask(blocks)]
    return np.array([0] * p + phi + [0])


class _State(NamedTuple):
    c: Array  # the target's value being tried
    x: Array  # the nuisance optimum at the last value tried (ψ with the target's coordinate replaced by c)
    inside: Array  # the last value tried inside the interval (the estimate at first)
    outside: Array  # the nearest value tried beyond the endpoint (±inf until one is)
    steps: Array
    status: Array


@partial(jax.jit, static_argnames="blocks")
def endpoints(psi_hat: Array, cut: Array, targets: Targets, stats: GroupStats | NestedStats,
              blocks: cov.Structure) -> Endpoints:
    """Solve every target's endpoint (module docstring); ``cut`` = χ²₁(1 − α)/2, ψ̂ the ML estimate.

    A Newton step on ζ that leaves the bracket of values known to lie inside and outside the interval is
    replaced by bisection (or, with nothing outside yet, by doubling the distance from the estimate).
    """
    n, p = psi_hat.shape[0], psi_hat.shape[0] - _n_phi(blocks)
    V = jnp.linalg.inv(-jax.hessian(loglik)(psi_hat, stats, blocks))
    ll_hat = loglik(psi_hat, stats, blocks)
    kinds = jnp.asarray(_coordinate_kinds(blocks, p))
    z_cut = jnp.sqrt(2.0 * cut)
    no_edge = jnp.zeros(n - p - 1)
    half = jnp.arctanh(0.5)

    def one(index: Array, reported: Array, side: Array) -> Endpoints:
        def g(psi: Array) -> Array:
            """The target at ψ: its coordinate, or the covariance its atanh r coordinate stands for."""
            return jnp.where(reported, cov.reported(blocks, psi[p:-1], no_edge)[jnp.maximum(index - p, 0)],
                             psi[index])

        def from_primed(x: Array) -> Array:
            # A reported covariance is tanh(φ_k)·S with S the product of the two SDs (the value at r = 1).
            S = cov.reported(blocks, x[p:-1].at[index - p].set(half), no_edge)[jnp.maximum(index - p, 0)] / 0.5
            return jnp.where(reported, x.at[index].set(jnp.arctanh(x[index] / S)), x)

        def primed(psi: Array) -> Array:
            return psi.at[index].set(g(psi))

        ll = lambda x: loglik(from_primed(x), stats, blocks)  # noqa: E731
        fixed = jnp.arange(n) == index

        def profile_at(c: Array, x0: Array) -> tuple[Array, Array, Array]:
            """(ℓ_g(c), dℓ_g/dc, the maximiser); ℓ_g is NaN where the maximisation did not converge."""
            sol = minimise(lambda x: -ll(jnp.where(fixed, c, x)), jnp.where(fixed, c, x0),
                           jnp.full(n, -jnp.inf))
            x = jnp.where(fixed, c, sol.x)
            return jnp.where(converged(sol.result, sol.decrement), -sol.value, jnp.nan), jax.grad(ll)(x)[index], x

        dg = jax.grad(g)(psi_hat)
        se = jnp.sqrt(dg @ V @ dg)
        along = V @ dg / se**2  # how the other coordinates move with g, to first order
        c_hat = g(psi_hat)
        c0 = c_hat + side * z_cut * se
        x0 = primed(psi_hat + (c0 - c_hat) * along)
        can_run = ~reported & ((kinds[index] == 2) | ((kinds[index] == 1) & (side < 0)))

        def body(st: _State) -> _State:
            l_c, slope, x = profile_at(st.c, st.x)
            zeta = side * jnp.sqrt(jnp.maximum(2.0 * (ll_hat - l_c), 0.0))
            inside = jnp.abs(zeta) < z_cut
            inner, outer = jnp.where(inside, st.c, st.inside), jnp.where(inside, st.outside, st.c)
            c = st.c + (side * z_cut - zeta) / (-slope / zeta)
            within = ((c - inner) * side > 0) & (jnp.isinf(outer) | ((outer - c) * side > 0))
            c = jnp.where(within & jnp.isfinite(c), c,
                          jnp.where(jnp.isinf(outer), c_hat + 2.0 * (inner - c_hat), 0.5 * (inner + outer)))
            ran = can_run & inside & jnp.where(kinds[index] == 1, st.c < psi_hat[index] - LNSD_RUN,
                                               side * st.c > ATANH_RUN)
            status = jnp.where(~jnp.isfinite(l_c), Status.FAILED,
                               jnp.where(jnp.abs(zeta - side * z_cut) < TOL, Status.CONVERGED,
                                         jnp.where(ran, Status.BOUNDARY, Status.RUNNING)))
            c = jnp.where(status == Status.RUNNING, c, st.c)
            return _State(c, x + (c - st.c) * jnp.where(fixed, 0.0, along), inner, outer, st.steps + 1,
                          status.astype(jnp.int32))

        st = jax.lax.while_loop(
            lambda st: (st.status == Status.RUNNING) & (st.steps < MAX_STEPS), body,
            _State(c0, x0, c_hat, side * jnp.inf, jnp.zeros((), jnp.int32), jnp.asarray(Status.RUNNING, jnp.int32)))
        status = jnp.where(st.status == Status.RUNNING, Status.FAILED, st.status)
        value = jnp.where(status == Status.CONVERGED, st.c,
                          jnp.where(status == Status.BOUNDARY, side * jnp.inf, jnp.nan))
        return Endpoints(value, status, st.steps)

    return jax.vmap(one)(*targets)


class ProfileIntervals(NamedTuple):
    """Profile-likelihood intervals (lower, upper) in each reported metric; NaN where none was found."""

    fixed: np.ndarray  # (p, 2) the fixed effects
    random: np.ndarray  # (k, 2) the random-effects table's rows: variances, covariances, var(Residual)
    sd_corr: np.ndarray  # (k, 2) the same rows as standard deviations and correlations (estat sd, lme4)
    failed: tuple[str, ...]  # the intervals not found, "label (lower)" etc.


def profile_intervals(stats: GroupStats | NestedStats, blocks: cov.Structure, theta: np.ndarray, sigma2: float,
                      beta: np.ndarray, reml: bool, labels: tuple[str, ...], alpha: float) -> ProfileIntervals:
    """Profile intervals of every parameter of a fit (``labels``: fixed effects, then the random-effects table's
    rows); a REML fit is refitted by ML first (module docstring)."""
    if reml:
        ml = jax.device_get(tracecache.call(fit_stats, {"blocks": blocks, "reml": False}, stats))
        if not bool(converged(ml.solution.result, ml.solution.decrement)):
            raise JaxhlmError("profile-likelihood intervals: the ML refit of this REML model did not converge.")
        theta, sigma2, beta = np.asarray(ml.theta), float(ml.sigma2), np.asarray(ml.beta)
    _, phi, edge = phi_at(theta, sigma2, blocks)
    if np.any(edge != 0) or not np.all(np.isfinite(phi)):
        raise JaxhlmError(
            "profile-likelihood intervals need an optimum inside the parameter space, and this"
            + (" model's ML" if reml else "") + " fit is singular (a variance at 0 or a correlation at ±1); "
            "use the Wald intervals (method='wald') or simplify the random-effects structure.")
    psi_hat = np.concatenate([beta, phi])
    p, k = len(beta), len(phi)
    is_var = np.append(cov.variance_mask(blocks), True)
    covs = np.flatnonzero(~is_var)
    # Coordinates (β, then φ) for every row but the covariances, whose value is itself the target.
    index = np.concatenate([np.arange(p + k), p + covs])
    reported = np.concatenate([np.zeros(p + k, bool), np.ones(len(covs), bool)])
    both = lambda a: np.concatenate([a, a])  # noqa: E731
    targets = Targets(jnp.asarray(both(index)), jnp.asarray(both(reported)),
                      jnp.asarray(np.repeat([-1.0, 1.0], len(index))))
    cut = 0.5 * float(special.chdtri(1, alpha))
    out = jax.device_get(tracecache.call(endpoints, {"blocks": blocks}, jnp.asarray(psi_hat), jnp.asarray(cut),
                                         targets, stats))
    ends = np.asarray(out.value).reshape(2, -1).T  # (targets, [lower, upper])
    coord, cov_ends = ends[:p + k], ends[p + k:]
    phi_ends = coord[p:]
    sd_corr = np.where(is_var[:, None], np.exp(phi_ends), np.tanh(phi_ends))
    random = np.exp(2.0 * phi_ends)
    random[covs] = cov_ends
    status = np.asarray(out.status).reshape(2, -1).T
    # A coordinate target of a covariance row is its correlation.
    names = list(labels[:p]) + [lab if v else lab.replace("cov(", "corr(", 1) for lab, v in zip(labels[p:], is_var)]
    names += [labels[p + c] for c in covs]  # a covariance's own target
    failed = tuple(f"{names[i]} ({side})" for i in range(len(index)) for j, side in enumerate(("lower", "upper"))
                   if status[i, j] == Status.FAILED)
    return ProfileIntervals(coord[:p], random, sd_corr, failed)

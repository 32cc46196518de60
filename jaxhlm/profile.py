"""Profile-likelihood confidence intervals (lme4's ``confint(method = "profile")``), solved for directly.

The 1 − α profile interval of a scalar g of the parameters ψ = (β, φ), φ = (ln sd…, atanh r…, ln σ) in
Stata's metric, is where the profile log likelihood ℓ_g(c) = max{ℓ(ψ) : g(ψ) = c} has fallen χ²₁(1 − α)/2
below its maximum ℓ̂. Each target g is a coordinate of ψ (a fixed effect, a ln sd, an atanh r, ln σ) or a
covariance, which is made one by writing its correlation as c / (sd·sd). An endpoint is a root of the signed
root ζ(c) = ±√(2(ℓ̂ − ℓ_g(c))) at ±√χ²₁(1 − α): Newton's method on ζ, which is close to linear in c, from the
Wald endpoint, each ℓ_g(c) a maximisation over the other coordinates by the fit's own optimiser
(:func:`~jaxhlm.optimize.minimise`, warm started), and ζ's slope from dℓ_g/dc = ∂ℓ/∂c at that maximum (no
derivative of the maximisation). Every target and both sides run as one compiled program. lme4 evaluates each
profile on a grid and interpolates a spline; these roots are exact to the solver's tolerance, which matters
most where another parameter is at its boundary at the endpoint (a correlation of +1 at the smallest random-slope
SD the data allow): the profile has a kink there that a spline smooths over.

Why φ: ℓ is close to quadratic in (ln sd, atanh r, ln σ), so the Wald start is close. An interval that reaches
the boundary has no root: where the profile of a standard deviation stays above the cut-off all the way to 0 (a
correlation's, to ±1), the iterates run off along that coordinate, and the endpoint is the boundary, 0 (±1). A
residual process' coefficient (AR(p), MA(q)) ends where the process stops being stationary or invertible, the
likelihood undefined beyond: there bisection finds the edge.

A singular fit (a variance at 0, a correlation at ±1) starts just inside the boundary (SD_FLOOR, ATANH_EDGE):
its boundary estimate is its own endpoint on that side, the other endpoint is solved from an interior start, and
the other targets' Wald starts use the covariance of the coordinates not on the boundary. A covariance is solved
twice, replacing its atanh r and replacing one of its SDs (see :func:`profile_intervals`). A rank-deficient
unstructured block of three or more effects is refused: its correlations are not at ±1 one by one, so no
coordinate of φ holds the boundary.

With a residual structure beyond σ²I, φ ends with its rows' coordinates (:class:`~jaxhlm.residual.Structure`):
each stratum's ln σₛ (Stata's ``residuals(independent, by())``), so that each residual variance is a target of its
own, AR(1)'s atanh ρ and ln σ, or AR(p)'s coefficients themselves.

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
from .errors import JaxhlmError
from .estimate import fit_residual, fit_stats, phi_at, residual_loglik
from .infer import singular_blocks
from .optimize import converged, minimise
from .residual import INDEPENDENT, Structure
from .stats import GroupStats, NestedStats

#: Values of the target tried at most per endpoint (each a maximisation over the other parameters).
MAX_STEPS = 60
#: Converged when the signed root of the likelihood-ratio statistic is this close to its cut-off (the
#: endpoint is then within about TOL Wald SEs).
TOL = 1e-9
#: How far a ln sd may fall below its estimate (e⁻¹⁰ ≈ 4.5e-5 of it), and how large an |atanh r| may grow
#: (|r| = tanh 5 ≈ 0.99991), before the path is taken to run to the boundary.
LNSD_RUN, ATANH_RUN = 10.0, 5.0
#: A singular fit's boundary values in φ: a zero SD as SD_FLOOR·σ̂ (its variance, 1e-16 σ̂², changes the
#: likelihood by rounding only), a correlation of ±1 as atanh r = ±ATANH_EDGE (1 − |r| ≈ 8e-11).
SD_FLOOR, ATANH_EDGE = 1e-8, 12.0
#: How close bisection brings a residual process' coefficient to the edge of its region (where the likelihood ends)
#: before the interval is taken to reach it.
REGION_TOL = 1e-10


class Status(enum.IntEnum):
    RUNNING = -1
    CONVERGED = 0
    BOUNDARY = 1  # the interval reaches the boundary of the target's range (sd 0, correlation ±1, a process' edge)
    FAILED = 2  # no endpoint found in MAX_STEPS values, or a maximisation over the others failed


class Targets(NamedTuple):
    """One endpoint problem per row (arrays, so that one program solves them all)."""

    index: Array  # int: the coordinate of ψ that the target's value replaces
    row: Array  # int: for a covariance, its row of the random-effects table (index is then its atanh r or one of
    #             its SDs); −1 where the target is the coordinate itself
    side: Array  # ±1.0: the upper or the lower endpoint


class Endpoints(NamedTuple):
    value: Array  # g at the endpoint (±inf where it is the boundary, NaN where it failed)
    status: Array  # :class:`Status`


tracecache.register(Targets, Endpoints)


def _n_re(blocks: cov.Structure) -> int:
    return sum(b.n_theta for b in blocks)


def loglik(psi: Array, data: GroupStats | NestedStats, blocks: cov.Structure, structure: Structure = INDEPENDENT,
           edge: Array | None = None) -> Array:
    """The ML log likelihood at ψ = (β, φ) (nothing profiled out); φ ends with the residual structure's
    coordinates (``data`` what it whitens); ``edge`` ±1 holds a correlation at ±1 (as
    :func:`~jaxhlm.estimate.re_information`'s)."""
    n_re = _n_re(blocks)
    p = psi.shape[0] - n_re - len(structure.is_var)
    phi = psi[p:]
    root = cov.root_from_phi(blocks, phi[:n_re], jnp.zeros(n_re) if edge is None else edge)
    log_sigma, rest = structure.split(phi[n_re:])
    return residual_loglik(root / jnp.exp(log_sigma), log_sigma, data, False, structure, rest, beta=psi[:p])


def _covariance_sds(blocks: cov.Structure, structure: Structure = INDEPENDENT) -> dict[int, int]:
    """For each covariance row of the random-effects table (= its atanh r in φ), the φ index of an SD in it: the
    random effects' covariances, then the residual structure's."""
    out, at = {}, 0
    for b in blocks:
        if b.kind == "exchangeable":
            out[at + 1] = at
        elif b.kind == "unstructured":
            out.update({at + b.q + t: at + j for t, (_, j) in enumerate(b.pairs)})
        at += b.n_theta
    return out | {at + row: at + sd for row, sd in structure.covariance_sds.items()}


def _coordinate_kinds(blocks: cov.Structure, p: int, structure: Structure = INDEPENDENT) -> np.ndarray:
    """Per coordinate of ψ: 1 for a random effect's ln sd, 2 for an atanh r (a random-effects correlation, the
    residuals' ρ), 3 for a residual process' coefficient, 0 otherwise (β, the residual variances' ln σ)."""
    phi = [1 if is_var else 2 for is_var in cov.variance_mask(blocks)]
    return np.array([0] * p + phi + [{"var": 0, "coef": 3}.get(kind, 2) for kind in structure.kinds])


class _State(NamedTuple):
    c: Array  # the target's value being tried
    x: Array  # the nuisance optimum at the last value tried (ψ with the target's coordinate replaced by c)
    inside: Array  # the last value tried inside the interval (the estimate at first)
    outside: Array  # the nearest value tried beyond the endpoint (±inf until one is)
    steps: Array
    status: Array


@partial(jax.jit, static_argnames=("blocks", "structure"))
def endpoints(psi_hat: Array, cut: Array, targets: Targets, stats: GroupStats | NestedStats,
              blocks: cov.Structure, structure: Structure = INDEPENDENT) -> Endpoints:
    """Solve every target's endpoint (module docstring); ``cut`` = χ²₁(1 − α)/2, ψ̂ the ML estimate.

    A Newton step on ζ that leaves the bracket of values known to lie inside and outside the interval is
    replaced by bisection (or, with nothing outside yet, by doubling the distance from the estimate).
    """
    n_re = _n_re(blocks)
    n, p = psi_hat.shape[0], psi_hat.shape[0] - n_re - len(structure.is_var)
    log_sigma = structure.split(psi_hat[p + n_re:])[0]  # ln σ (the first stratum's): the SDs' boundary scale
    kinds = jnp.asarray(_coordinate_kinds(blocks, p, structure))
    # Coordinates at a singular fit's boundary (see SD_FLOOR): the likelihood is flat along them there, so the
    # Wald covariance is that of the others, and a target on the boundary starts from a point inside.
    on_edge = ((kinds == 1) & (psi_hat < jnp.log(SD_FLOOR) + log_sigma + 1.0)) | (
        (kinds == 2) & (jnp.abs(psi_hat) >= ATANH_EDGE))
    both = on_edge[:, None] | on_edge[None, :]
    H = jnp.where(both, -jnp.eye(n), jax.hessian(loglik)(psi_hat, stats, blocks, structure))
    V = jnp.where(both, 0.0, jnp.linalg.inv(-H))
    ll_hat = loglik(psi_hat, stats, blocks, structure)
    z_cut = jnp.sqrt(2.0 * cut)
    no_edge = jnp.zeros(n_re)
    half = jnp.arctanh(0.5)

    def table(phi: Array) -> Array:
        """The random-effects table's values at φ: the random effects', then the residual structure's."""
        return jnp.concatenate([cov.reported(blocks, phi[:n_re], no_edge), structure.values(phi[n_re:])])

    def one(index: Array, row: Array, side: Array) -> Endpoints:
        reported = row >= 0

        def covariance(x: Array, value: Array) -> Array:
            """The covariance at x with the replaced coordinate set to ``value``."""
            return table(x.at[index].set(value)[p:])[jnp.maximum(row, 0)]

        def g(psi: Array) -> Array:
            """The target at ψ: its coordinate, or the covariance."""
            return jnp.where(reported, table(psi[p:])[jnp.maximum(row, 0)], psi[index])

        def from_primed(x: Array) -> Array:
            """ψ from x, whose replaced coordinate holds the covariance c. A covariance is tanh(φ_r)·S with S the
            product of the two SDs: in its atanh r, c = tanh(φ_r)·S; in an SD's ln sd, c = C₀·e^(mφ) with m = 1
            (two effects) or 2 (an exchangeable block's one SD)."""
            # jnp.where evaluates every branch: those not taken get harmless arguments, so that no NaN enters a
            # derivative through them.
            c = x[index]
            in_r, in_sd = reported & (index == p + row), reported & (index != p + row)
            by_r = jnp.arctanh(jnp.where(in_r, c / (covariance(x, half) / 0.5), 0.0))
            c0 = jnp.where(in_sd, covariance(x, 0.0), 1.0)
            by_sd = jnp.log(jnp.where(in_sd, c / c0, 1.0)) / jnp.log(jnp.where(in_sd, covariance(x, 1.0) / c0, 2.0))
            return jnp.where(in_r, x.at[index].set(by_r), jnp.where(in_sd, x.at[index].set(by_sd), x))

        def primed(psi: Array) -> Array:
            return psi.at[index].set(g(psi))

        ll = lambda x: loglik(from_primed(x), stats, blocks, structure)  # noqa: E731
        fixed = jnp.arange(n) == index

        def profile_at(c: Array, x0: Array) -> tuple[Array, Array, Array]:
            """(ℓ_g(c), dℓ_g/dc, the maximiser); ℓ_g is NaN where the maximisation did not converge.

            Why two starts: near its boundary a coordinate is all but flat (the likelihood moves with sd², or
            with 1 − r²), so from the warm start a maximiser cannot leave the boundary even where the maximum
            has moved inside; the second start puts such coordinates inside (an SD of σ̂/10, r = ±0.76) and the
            better of the two maxima is taken. One batched call, so the maximiser is compiled once.
            """
            near = ~fixed & (((kinds == 1) & (x0 < log_sigma + jnp.log(SD_FLOOR) + 8.0))
                             | ((kinds == 2) & (jnp.abs(x0) > ATANH_RUN)))
            moved = jnp.where(near, jnp.where(kinds == 1, log_sigma - jnp.log(10.0), jnp.sign(x0)), x0)
            sols = jax.vmap(lambda s: minimise(lambda x: -ll(jnp.where(fixed, c, x)), jnp.where(fixed, c, s),
                                               jnp.full(n, -jnp.inf)))(jnp.stack([x0, moved]))
            value = jnp.where(converged(sols.result, sols.decrement), -sols.value, -jnp.inf)
            best = jnp.argmax(value)
            x = jnp.where(fixed, c, sols.x[best])
            return jnp.where(jnp.isfinite(value[best]), value[best], jnp.nan), jax.grad(ll)(x)[index], x

        dg = jax.grad(g)(psi_hat)
        se = jnp.sqrt(dg @ V @ dg)
        edge = ~reported & on_edge[index]
        along = jnp.where(edge, 0.0, V @ dg / jnp.where(edge, 1.0, se**2))  # how the others move with g
        c_hat = g(psi_hat)
        # The Wald endpoint; for a target on the boundary (no Wald SE), an SD of a tenth of σ̂ or r = 0.
        c0 = jnp.where(edge, jnp.where(kinds[index] == 1, log_sigma - jnp.log(10.0), 0.0),
                       c_hat + side * z_cut * se)
        x0 = primed(psi_hat + (c0 - c_hat) * along)
        can_run = ~reported & ((kinds[index] == 2) | ((kinds[index] == 1) & (side < 0)))
        # A process' coefficient ranges over the stationary (invertible) region only: past it the likelihood is
        # NaN, which bisection closes in on; an interval still open there ends at the region's edge.
        region = ~reported & (kinds[index] == 3)
        # A boundary estimate is its own endpoint on its side: SD 0 below, the correlation's sign beyond.
        at_edge = edge & jnp.where(kinds[index] == 1, side < 0, side * c_hat > 0)

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
            closed = region & (jnp.abs(outer - inner) < REGION_TOL)
            status = jnp.where(~jnp.isfinite(l_c) & ~region, Status.FAILED,
                               jnp.where(jnp.abs(zeta - side * z_cut) < TOL, Status.CONVERGED,
                                         jnp.where(ran | closed, Status.BOUNDARY, Status.RUNNING)))
            c = jnp.where(status == Status.RUNNING, c, st.c)
            return _State(c, x + (c - st.c) * jnp.where(fixed, 0.0, along), inner, outer, st.steps + 1,
                          status.astype(jnp.int32))

        start = jnp.where(at_edge, Status.BOUNDARY, Status.RUNNING).astype(jnp.int32)
        st = jax.lax.while_loop(
            lambda st: (st.status == Status.RUNNING) & (st.steps < MAX_STEPS), body,
            _State(c0, x0, c_hat, side * jnp.inf, jnp.zeros((), jnp.int32), start))
        status = jnp.where(st.status == Status.RUNNING, Status.FAILED, st.status)
        value = jnp.where(status == Status.CONVERGED, st.c,
                          jnp.where(status == Status.BOUNDARY, jnp.where(region, st.inside, side * jnp.inf), jnp.nan))
        return Endpoints(value, status)

    # One target after another: batched, every target would iterate as long as the slowest (a maximisation that
    # creeps to a boundary takes tens of steps where the others take a few), 7x the sum of their times on HSB.
    return jax.lax.map(lambda t: one(*t), targets)


class ProfileIntervals(NamedTuple):
    """Profile-likelihood intervals (lower, upper) in each reported metric; NaN where none was found."""

    fixed: np.ndarray  # (p, 2) the fixed effects
    random: np.ndarray  # (k, 2) the random-effects table's rows: variances, covariances, var(Residual)
    sd_corr: np.ndarray  # (k, 2) the same rows as standard deviations and correlations (estat sd, lme4)
    failed: tuple[str, ...]  # the intervals not found, "label (lower)" etc.


def profile_intervals(data: GroupStats | NestedStats, blocks: cov.Structure, theta: np.ndarray, sigma2: float,
                      beta: np.ndarray, reml: bool, labels: tuple[str, ...], alpha: float,
                      structure: Structure = INDEPENDENT, psi: np.ndarray | None = None) -> ProfileIntervals:
    """Profile intervals of every parameter of a fit (``labels``: fixed effects, then the random-effects table's
    rows); a REML fit is refitted by ML first (module docstring). With a residual ``structure`` beyond σ²I,
    ``psi`` holds its ψ̂ and ``data`` is what it whitens (:func:`~jaxhlm.estimate.fit_residual`)."""
    if reml:
        if structure == INDEPENDENT:
            ml = jax.device_get(tracecache.call(fit_stats, {"blocks": blocks, "reml": False}, data))
        else:
            ml = jax.device_get(tracecache.call(fit_residual, {"structure": structure, "blocks": blocks,
                                                               "reml": False}, data))
            ml, psi = ml.fit, np.asarray(ml.psi)
        if not bool(converged(ml.solution.result, ml.solution.decrement)):
            raise JaxhlmError("profile-likelihood intervals: the ML refit of this REML model did not converge.")
        theta, sigma2, beta = np.asarray(ml.theta), float(ml.sigma2), np.asarray(ml.beta)
    sigma, phi, edge = phi_at(theta, sigma2, blocks)
    k = len(structure.is_var)
    tail = np.asarray(structure.join(jnp.asarray(phi[-1]), jnp.zeros(0) if psi is None else jnp.asarray(psi)))
    phi, edge = np.append(phi[:-1], tail), np.append(edge[:-1], np.zeros(k))
    for b in singular_blocks(blocks, sigma):
        if b.kind == "unstructured" and b.q >= 3:
            raise JaxhlmError(
                f"profile-likelihood intervals: the {b.q}x{b.q} unstructured covariance of the random effects is "
                "singular (rank-deficient) at this" + (" model's ML" if reml else "") + " fit, and its profile "
                "cannot start from there; use method='bootstrap', or a smaller random-effects structure.")
    # A singular fit's boundary values, just inside (see SD_FLOOR); the profile starts there.
    phi = np.where(np.isfinite(phi), phi, np.log(SD_FLOOR) + float(structure.split(jnp.asarray(tail))[0]))
    phi = np.where(edge != 0, edge * ATANH_EDGE, phi)
    psi_hat = np.concatenate([beta, phi])
    p, k = len(beta), len(phi)
    is_var = np.append(cov.variance_mask(blocks), structure.is_var)
    sd_of = _covariance_sds(blocks, structure)
    covs = np.asarray(sorted(sd_of), dtype=int)  # the covariance rows of the random effects and of the residuals
    # Coordinates (β, then φ), then each covariance twice: replacing its atanh r, and replacing one of its SDs.
    # Either can fail where the other does not: at a fixed covariance the maximum may lie on the edge
    # |c / (sd·sd)| = 1 (a correlation at ±1), where the first parameterisation ends, or at a correlation of the
    # other sign, which the second cannot reach. Where both converge they solve the same equation.
    index = np.concatenate([np.arange(p + k), p + covs, [p + sd_of[j] for j in covs]]).astype(int)
    row = np.concatenate([np.full(p + k, -1), covs, covs])
    both = lambda a: np.concatenate([a, a])  # noqa: E731
    targets = Targets(jnp.asarray(both(index)), jnp.asarray(both(row)),
                      jnp.asarray(np.repeat([-1.0, 1.0], len(index))))
    cut = 0.5 * float(special.chdtri(1, alpha))
    out = jax.device_get(tracecache.call(endpoints, {"blocks": blocks, "structure": structure},
                                         jnp.asarray(psi_hat), jnp.asarray(cut), targets, data))
    ends = np.asarray(out.value).reshape(2, -1).T  # (targets, [lower, upper])
    status = np.asarray(out.status).reshape(2, -1).T
    m = len(covs)
    by_r, by_sd = slice(p + k, p + k + m), slice(p + k + m, None)
    cov_ends = np.where(status[by_r] == Status.FAILED, ends[by_sd], ends[by_r])
    cov_failed = (status[by_r] == Status.FAILED) & (status[by_sd] == Status.FAILED)
    coord = ends[:p + k]
    phi_ends = coord[p:]
    is_coef = np.append(np.zeros(k - len(structure.kinds), bool), structure.is_coef)[:, None]
    sd_corr = np.where(is_var[:, None], np.exp(phi_ends), np.where(is_coef, phi_ends, np.tanh(phi_ends)))
    random = np.where(is_var[:, None], np.exp(2.0 * phi_ends), sd_corr)
    random[covs] = cov_ends
    # A coordinate target of a covariance row is its correlation.
    names = list(labels[:p]) + [lab if v else lab.replace("cov(", "corr(", 1) for lab, v in zip(labels[p:], is_var)]
    names += [labels[p + c] for c in covs]  # a covariance's own target
    failed_at = np.concatenate([status[:p + k] == Status.FAILED, cov_failed])
    failed = tuple(f"{names[i]} ({side})" for i in range(len(names)) for j, side in enumerate(("lower", "upper"))
                   if failed_at[i, j])
    return ProfileIntervals(coord[:p], random, sd_corr, failed)

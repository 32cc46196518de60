"""Residual covariance structures: σ²C(ψ) in place of σ²I, each in one form the deviance already takes.

With C = LLᵀ, the rows L⁻¹[Z X y] have residual covariance σ²I: an ordinary linear mixed model, whose sufficient
statistics :mod:`jaxhlm.deviance` takes as they are. Its likelihood differs from the original's only by the
log-determinant log|C| the whitening takes away (ML and REML alike: XᵀV⁻¹X is unchanged). So a structure is
a function ψ ↦ (statistics of the whitened rows, log|C|), and fitting one is minimising the profiled deviance
over (θ, ψ) together (:func:`jaxhlm.estimate.fit_residual`).

Each structure also fixes how its parameters are reported: rows in Stata's order whose coordinates are ln sd
(a variance) or atanh r (a correlation), the metric where the information matrix is taken and where profile
intervals move (:meth:`Structure.join`, :meth:`Structure.split`).

- :class:`Independent`: C = I, the default.
- :class:`Strata`: a variance per stratum (Stata's ``residuals(independent, by(var))``): C is diagonal, so the
  whitening only reweights each stratum's statistics (:func:`~jaxhlm.stats.combine`) and costs O(groups).
- :class:`Serial`: residuals correlated within each series (a group, or an inner level's cluster), Stata's
  ``residuals(rspec, t(var))``. The rows are held as one slab per series in time order (padded to the longest
  series), and the statistics of the whitened slabs are batched matrix products. :class:`Toeplitz` and
  :class:`Unstructured` (banded too) whiten each series by the Cholesky factor of its block of C; the Markov
  ones, :class:`AR1` (integer time, gaps included) and :class:`Exponential` (real time), by the Prais–Winsten
  transform, and :class:`Exchangeable` in closed form, both O(rows) per evaluation. :class:`AR` (order 2 and
  up) and :class:`MA`, stationary linear processes, take the Cholesky route too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .stats import GroupStats, NestedStats, combine


class SerialRows(NamedTuple):
    """A model's rows in time order within each series, one zero-padded slab per series (a pytree; what the
    serial structures whiten). A series is a group, or in a three-level model a cluster of the inner level (a
    student measured repeatedly, within a school).

    X (s, T, p), Z (s, T, q) the outer level's random-effects design, W (s, T, q2) the inner level's (no columns
    for two levels), y (s, T); gap (s, T) the time since the series' previous row (0 on a series' first row and on
    padding, whose rows are zero and so add nothing); time (s, T) each row's time (0 on padding); live (s, T) 1 on
    real rows, 0 on padding; stratum (s,) each series' stratum with :class:`ByStratum` (else 0); parent (s,) each
    series' group when the series are an inner level's clusters (with random effects of their own or none), else
    (0,): the series are the groups; group_weights (m,) ones in a fit (see :attr:`series_weights`).
    """

    X: Array
    Z: Array
    W: Array
    y: Array
    gap: Array
    time: Array
    live: Array
    stratum: Array
    parent: Array
    group_weights: Array

    def series(self, index: np.ndarray | Array) -> "SerialRows":
        """The rows of the series ``index`` only (their slabs; parents and groups as they are)."""
        return self._replace(**{f: getattr(self, f)[index] for f in SLABS})

    @property
    def series_weights(self) -> Array:
        """(s,) each series' weight: its group's in ``group_weights``, which weights the group's log-likelihood
        contribution (1 in a fit; :mod:`jaxhlm.influence` differentiates in them). Every term of a series, its
        rows' cross-products and its log|C| alike, is multiplied by it."""
        return self.group_weights if self.parent.shape[0] == 0 else self.group_weights[self.parent]


#: the fields of :class:`SerialRows` that hold one slab (or one value) per series
SLABS = ("X", "Z", "W", "y", "gap", "time", "live", "stratum")


@dataclass(frozen=True)
class Structure:
    """A residual covariance structure (static: hashable, so jitted functions take it as a static argument)."""

    title = "Independent"  # Stata's name of the structure, in the report's ``Residual:`` line

    @property
    def kinds(self) -> tuple[str, ...]:
        """Per reported row: ``"var"`` a variance (coordinate ln sd), ``"corr"`` a correlation (coordinate
        atanh r), ``"cov"`` a covariance (coordinate atanh of its correlation; its value and interval are
        the covariance's) or ``"coef"`` a coefficient of a time-series process (its own coordinate, as a fixed
        effect)."""
        return ("var",)

    @property
    def is_var(self) -> tuple[bool, ...]:
        return tuple(k == "var" for k in self.kinds)

    @property
    def is_coef(self) -> tuple[bool, ...]:
        return tuple(k == "coef" for k in self.kinds)

    @property
    def n_params(self) -> int:
        """The length of ψ, the parameters beyond σ."""
        return len(self.kinds) - 1

    def split(self, u: Array) -> tuple[Array, Array]:
        """(ln σ, ψ) from the reported rows' coordinates u."""
        return u[0], u[1:]

    def join(self, log_sigma: Array, psi: Array) -> Array:
        """The reported rows' coordinates from (ln σ, ψ): the inverse of :meth:`split`."""
        return jnp.concatenate([jnp.reshape(log_sigma, (1,)), psi])

    def values(self, u: Array) -> Array:
        """The reported rows' values at coordinates u: variances exp(2u), correlations tanh(u), coefficients u."""
        return jnp.where(jnp.asarray(self.is_var), jnp.exp(2.0 * u), self.sd_values(u))

    def sd_values(self, u: Array) -> Array:
        """The rows in standard deviations and correlations (Stata's ``estat sd``) at coordinates u: sd exp(u),
        correlations (a covariance's too) tanh(u), coefficients u."""
        return jnp.where(jnp.asarray(self.is_var), jnp.exp(u), jnp.where(jnp.asarray(self.is_coef), u, jnp.tanh(u)))

    @property
    def independent(self) -> Array:
        """ψ where C(ψ) = I (to rounding): where a fit starts from a smaller model's with σ²I residuals."""
        return jnp.zeros(self.n_params)

    def embed(self, smaller: "Structure", psi: Array) -> Array | None:
        """ψ of this structure at which C equals ``smaller``'s at its ``psi``, or None where ``smaller`` is not
        nested in this one: where a bigger model starts from a smaller one's optimum (so that no bootstrap LR is
        negative). Nested: the structure itself, and independent residuals (C = I) in any."""
        if smaller == self:
            return psi
        return self.independent if smaller == INDEPENDENT else None

    @property
    def covariance_sds(self) -> dict[int, int]:
        """For each ``"cov"`` row, the row of a variance it is scaled by (cov = sd·sd·r): a profile interval of the
        covariance may move that SD in place of the correlation (:mod:`jaxhlm.profile`)."""
        return {}

    def whiten(self, data: GroupStats, psi: Array) -> tuple[GroupStats, Array]:
        """The statistics of the whitened rows, and log|C|."""
        return data, jnp.zeros(())


@dataclass(frozen=True)
class Independent(Structure):
    """σ²I: the data are the model's statistics themselves."""


@dataclass(frozen=True)
class Strata(Structure):
    """A residual variance per stratum: σ²C with C = diag((σₛ/σ₁)²) over the strata's rows; ψ = ln(σₛ/σ₁) for
    s = 2…S; data are the strata's statistics stacked on a leading axis (:func:`~jaxhlm.stats.stack_strata`).
    Each stratum's ln σₛ is a coordinate of its own."""

    n_strata: int

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("var",) * self.n_strata

    def split(self, u: Array) -> tuple[Array, Array]:
        return u[0], u[1:] - u[0]

    def join(self, log_sigma: Array, psi: Array) -> Array:
        return jnp.concatenate([jnp.reshape(log_sigma, (1,)), log_sigma + psi])

    def whiten(self, data: GroupStats, psi: Array) -> tuple[GroupStats, Array]:
        log_ratio = jnp.concatenate([jnp.zeros(1), psi])
        return combine(data, jnp.exp(-2.0 * log_ratio)), 2.0 * jnp.sum(data.n * log_ratio)


@dataclass(frozen=True)
class Serial(Structure):
    """Residuals correlated within each series, independent between series: data are :class:`SerialRows`, C is
    block diagonal with one block C(ψ)ₛ per series (:meth:`correlation`).

    The default whitening factors each series' block, C = LLᵀ, and solves L⁻¹[Z X y] on the slab: O(T³) per
    series of T rows, what repeated measures with a handful of occasions need, and the one route every structure
    with a dense block takes. :class:`Markov` and :class:`Exchangeable` override it with O(T) ones.
    """

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("corr", "var")

    def split(self, u: Array) -> tuple[Array, Array]:  # Stata's order: the correlations, then var(e)
        return u[-1], u[:-1]

    def join(self, log_sigma: Array, psi: Array) -> Array:
        return jnp.concatenate([psi, jnp.reshape(log_sigma, (1,))])

    def block(self, data: SerialRows, psi: Array) -> Array:
        """C(ψ) between the live rows of each series, (s, T, T); entries involving padding are arbitrary."""
        raise NotImplementedError

    def correlation(self, data: SerialRows, psi: Array) -> Array:
        """Each series' block of C(ψ), (s, T, T), with padding rows uncorrelated and of unit variance."""
        live = data.live > 0
        eye = jnp.eye(data.y.shape[1], dtype=bool)
        return jnp.where(live[:, :, None] & live[:, None, :], self.block(data, psi), jnp.where(eye, 1.0, 0.0))

    def whiten(self, data: SerialRows, psi: Array) -> tuple[GroupStats | NestedStats, Array]:
        L = jnp.linalg.cholesky(self.correlation(data, psi))
        rows = jax.lax.linalg.triangular_solve(L, _slab_rows(data), left_side=True, lower=True)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
        return _slab_stats(rows, data), data.series_weights @ logdet


@dataclass(frozen=True)
class Markov(Serial):
    """Residuals whose correlation is the product of those between consecutive rows, corr(eₛ, eₜ) = ∏ aᵢ over the
    steps from s to t: a Markov process, so L⁻¹ is the Prais–Winsten transform, each row less a times the series'
    previous row, scaled by 1/√(1 − a²): O(rows) per evaluation, no per-series matrices."""

    def step(self, data: SerialRows, psi: Array) -> Array:
        """a (s, T): each row's correlation with its series' previous row; 0 on a series' first row and padding."""
        raise NotImplementedError

    def whiten(self, data: SerialRows, psi: Array) -> tuple[GroupStats | NestedStats, Array]:
        a = self.step(data, psi)
        one_less = 1.0 - a * a
        rows = _slab_rows(data)
        previous = jnp.concatenate([jnp.zeros_like(rows[:, :1]), rows[:, :-1]], axis=1)
        white = (rows - a[..., None] * previous) / jnp.sqrt(one_less)[..., None]
        return _slab_stats(white, data), data.series_weights @ jnp.sum(jnp.log(one_less), axis=1)


@dataclass(frozen=True)
class AR1(Markov):
    """First-order autoregressive residuals within series over an integer time (Stata's ``residuals(ar 1,
    t(var))``): corr(eₛ, eₜ) = ρ^|s−t|, gaps in time included, so a = ρ^gap; ψ = atanh ρ. Reported as Stata
    reports them: ρ, then var(e) = σ².

    ``bits``: the binary digits of the longest gap in time. ρ^gap is a product over them (:func:`_power`), and
    with only as many as the data need (3 for gaps up to 7) a fit of 16,000 rows took 0.16 s, against 0.95 s
    with all 31: the Hessians differentiate every factor.
    """

    bits: int = 31
    title = "AR(1)"

    def block(self, data: SerialRows, psi: Array) -> Array:
        lag = jnp.abs(data.time[:, :, None] - data.time[:, None, :]).astype(jnp.int64)
        return jnp.tanh(psi[0]) ** lag

    def step(self, data: SerialRows, psi: Array) -> Array:
        return jnp.where(data.gap == 0, 0.0, _power(jnp.tanh(psi[0]), data.gap, self.bits))


@dataclass(frozen=True)
class Exponential(Markov):
    """Exponential correlation over a continuous time (Stata's ``residuals(exponential, t(var))``, nlme's
    ``corExp``): corr(eₛ, eₜ) = ρ^|s−t| with 0 < ρ < 1, any real times, so a = ρ^gap again (an Ornstein–Uhlenbeck
    process observed at the times). ψ = ln(−1/ln ρ), nlme's log range: every real ψ is a valid ρ, so the optimiser
    needs no bounds, and ψ = 0 (ρ = e⁻¹) is a start inside."""

    title = "Exponential"

    @property
    def independent(self) -> Array:  # ρ = exp(−e³⁰): 0 in float64 at any lag beyond 1e-13
        return jnp.full(1, -30.0)

    def split(self, u: Array) -> tuple[Array, Array]:
        return u[-1], -jnp.log(-jnp.log(jnp.tanh(u[:-1])))

    def join(self, log_sigma: Array, psi: Array) -> Array:
        return jnp.concatenate([jnp.arctanh(jnp.exp(-jnp.exp(-psi))), jnp.reshape(log_sigma, (1,))])

    def block(self, data: SerialRows, psi: Array) -> Array:
        return jnp.exp(-jnp.abs(data.time[:, :, None] - data.time[:, None, :]) * jnp.exp(-psi[0]))

    def step(self, data: SerialRows, psi: Array) -> Array:
        # a row continues its series when it and the row before it are real (a slab's rows come first)
        after = jnp.concatenate([jnp.zeros_like(data.live[:, :1]), data.live[:, :-1]], axis=1) * data.live > 0
        gap = data.time - jnp.concatenate([data.time[:, :1], data.time[:, :-1]], axis=1)
        return jnp.where(after, jnp.exp(-jnp.where(after, gap, 0.0) * jnp.exp(-psi[0])), 0.0)


@dataclass(frozen=True)
class Toeplitz(Serial):
    """Stata's ``residuals(toeplitz q, t(var))``: homoskedastic residuals whose correlation depends on the lag in
    an integer time alone, ρₖ for lags k = 1…q and 0 beyond; ψ = atanh ρₖ. Reported as ρ₁…ρ_q, then var(e).
    A Newton step out of the positive-definite region gives a NaN deviance, which the line search steps back
    from."""

    order: int = 1
    row_name = "rho"  # its rows: rho1, rho2, …

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"Toeplitz({self.order})"

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("corr",) * self.order + ("var",)

    def block(self, data: SerialRows, psi: Array) -> Array:
        lag = jnp.abs(data.time[:, :, None] - data.time[:, None, :]).astype(jnp.int64)
        rho = jnp.concatenate([jnp.ones(1), jnp.tanh(psi), jnp.zeros(1)])
        return rho[jnp.minimum(lag, self.order + 1)]


@dataclass(frozen=True)
class Linear(Serial):
    """Residuals of a stationary linear process over an integer time, Stata's ``residuals(ar p, t(var))`` (p ≥ 2;
    p = 1 is :class:`AR1`) and ``residuals(ma q, t(var))``: corr(eₛ, eₜ) = ρ(|s − t|), the process'
    autocorrelation at that lag, gaps in time included. Reported as its coefficients, then var(e) = σ² (the
    process' variance).

    The coefficients are the reported rows' coordinates themselves (kind ``"coef"``: a Wald interval symmetric in
    each, a profile interval of each as of a fixed effect); not every value is a process, so ψ is what the
    optimiser moves: atanh of the partial autocorrelations r ∈ (−1, 1)^order that map one to one onto the
    stationary (AR) or invertible (MA) coefficients (:func:`_durbin_levinson`). Every real ψ is then a valid
    process, ψ = 0 is C = I, and coefficients outside the region have no ψ (NaN), which the line search steps back
    from. Each series is whitened by the Cholesky factor of its block of C (a handful of occasions, as for
    :class:`Toeplitz`)."""

    order: int = 2
    row_name: ClassVar[str]  # Stata's name of the coefficients' rows: phi (phi1, phi2, …) or theta

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("coef",) * self.order + ("var",)

    def coefficients(self, r: Array) -> Array:
        """The process' coefficients with partial autocorrelations r."""
        raise NotImplementedError

    def partials(self, coefficients: Array) -> Array:
        """r of :meth:`coefficients`: its inverse (NaN outside the region)."""
        raise NotImplementedError

    def autocorrelation(self, r: Array) -> Array:
        """ρ(0), ρ(1), … up to a lag past which :meth:`block` repeats the last: the longest lag in the data (AR),
        or q + 1, where an MA's is 0 for good."""
        raise NotImplementedError

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"{type(self).__name__}({self.order})"  # Stata's AR(2), MA(1)

    def lower(self, smaller: Structure) -> bool:
        """Whether ``smaller`` is this process of a lower order."""
        return type(smaller) is type(self) and smaller.order < self.order  # type: ignore[attr-defined]

    def embed(self, smaller: Structure, psi: Array) -> Array | None:
        """A process of lower order is this one with its last partial autocorrelations 0."""
        if self.lower(smaller):
            return jnp.concatenate([psi, jnp.zeros(self.order - psi.shape[0])])
        return super().embed(smaller, psi)

    def split(self, u: Array) -> tuple[Array, Array]:
        return u[-1], jnp.arctanh(self.partials(u[:-1]))

    def join(self, log_sigma: Array, psi: Array) -> Array:
        return jnp.concatenate([self.coefficients(jnp.tanh(psi)), jnp.reshape(log_sigma, (1,))])

    def block(self, data: SerialRows, psi: Array) -> Array:
        rho = self.autocorrelation(jnp.tanh(psi))
        lag = jnp.abs(data.time[:, :, None] - data.time[:, None, :]).astype(jnp.int64)
        return rho[jnp.minimum(lag, rho.shape[0] - 1)]


@dataclass(frozen=True)
class AR(Linear):
    """Autoregressive residuals of order p ≥ 2, eₜ = φ₁eₜ₋₁ + … + φₚeₜ₋ₚ + uₜ; reported as φ₁…φₚ, then var(e).
    ``lags``: the longest lag within a series in the data, up to which the autocorrelations are carried by the
    Yule–Walker recursion ρ(k) = Σⱼ φⱼ ρ(k − j)."""

    lags: int = 2
    row_name = "phi"

    def lower(self, smaller: Structure) -> bool:  # AR(1)'s ψ = atanh ρ is an AR(p)'s first partial autocorrelation
        return isinstance(smaller, AR1) or super().lower(smaller)

    def coefficients(self, r: Array) -> Array:
        return _durbin_levinson(r)[0]

    def partials(self, coefficients: Array) -> Array:
        return _step_down(coefficients)

    def autocorrelation(self, r: Array) -> Array:
        phi, rho = _durbin_levinson(r)
        if self.lags <= self.order:
            return rho

        def step(recent: Array, _: None) -> tuple[Array, Array]:  # recent: ρ(k − 1), …, ρ(k − p)
            nxt = phi @ recent
            return jnp.concatenate([nxt[None], recent[:-1]]), nxt

        _, more = jax.lax.scan(step, rho[:0:-1], None, length=self.lags - self.order)
        return jnp.concatenate([rho, more])


@dataclass(frozen=True)
class MA(Linear):
    """Moving-average residuals of order q, eₜ = uₜ + θ₁uₜ₋₁ + … + θ_q uₜ₋q (the sign of Stata's and nlme's):
    correlated at lags up to q, 0 beyond; reported as θ₁…θ_q, then var(e). θ and its reciprocal roots give the
    same correlations; the invertible one (roots outside the unit circle) is the one reported."""

    row_name = "theta"

    def coefficients(self, r: Array) -> Array:
        return -_durbin_levinson(-r)[0]

    def partials(self, coefficients: Array) -> Array:
        return -_step_down(-coefficients)

    def autocorrelation(self, r: Array) -> Array:
        theta = jnp.concatenate([jnp.ones(1), self.coefficients(r)])
        q = self.order
        gamma = jnp.stack([theta[:q + 1 - k] @ theta[k:] for k in range(q + 1)])
        return jnp.concatenate([gamma / gamma[0], jnp.zeros(1)])


def _durbin_levinson(r: Array) -> tuple[Array, Array]:
    """(φ₁…φₚ, ρ(0)…ρ(p)) of the stationary AR(p) whose partial autocorrelations are r ∈ (−1, 1)^p, by the
    Durbin–Levinson recursion: a smooth one-to-one map of the cube onto the stationary region (Barndorff-Nielsen and
    Schou 1973; Jones 1980), whence the unbounded coordinates atanh r of :class:`Linear`."""
    phi, rho, v = jnp.zeros(0), [jnp.ones(())], jnp.ones(())
    for k in range(r.shape[0]):
        rho.append((phi @ jnp.stack(rho[k:0:-1]) if k else 0.0) + r[k] * v)
        phi = jnp.concatenate([phi - r[k] * phi[::-1], r[k:k + 1]])
        v = v * (1.0 - r[k] ** 2)
    return phi, jnp.stack(rho)


def _step_down(phi: Array) -> Array:
    """The partial autocorrelations of AR coefficients φ: :func:`_durbin_levinson` run backwards (|r| ≥ 1 for a
    φ outside the stationary region)."""
    r = []
    for _ in range(phi.shape[0]):
        last, head = phi[-1], phi[:-1]
        r.append(last)
        phi = (head + last * head[::-1]) / (1.0 - last**2)
    return jnp.stack(r[::-1])


@dataclass(frozen=True)
class Exchangeable(Serial):
    """Stata's ``residuals(exchangeable)``: every pair of residuals in a series has the same correlation ρ;
    ψ = atanh ρ. Reported as var(e) = σ², then cov(e) = σ²ρ."""

    title = "Exchangeable"

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("var", "cov")

    split, join = Structure.split, Structure.join  # Stata's order: var(e) first

    @property
    def covariance_sds(self) -> dict[int, int]:
        return {1: 0}

    def values(self, u: Array) -> Array:
        return jnp.exp(2.0 * u[0]) * jnp.stack([jnp.ones(()), jnp.tanh(u[1])])

    def block(self, data: SerialRows, psi: Array) -> Array:
        eye = jnp.eye(data.y.shape[1], dtype=bool)
        return jnp.where(eye, 1.0, jnp.tanh(psi[0]))[None]

    def whiten(self, data: SerialRows, psi: Array) -> tuple[GroupStats | NestedStats, Array]:
        """In closed form, O(rows): a series of n rows has C = (1 − ρ)I + ρ11ᵀ, whose eigenvalues are 1 − ρ off
        the constant vector and 1 + (n − 1)ρ on it, so C^(−1/2) takes the fraction 1 − √((1 − ρ)/(1 + (n − 1)ρ))
        of the series' mean from each row and divides by √(1 − ρ); log|C| = (n − 1) log(1 − ρ) + log(1 + (n − 1)ρ)."""
        rho = jnp.tanh(psi[0])
        n = jnp.sum(data.live, axis=1)
        rows = _slab_rows(data)
        mean = jnp.sum(rows, axis=1) / jnp.maximum(n, 1.0)[:, None]
        shrink = 1.0 - jnp.sqrt((1.0 - rho) / (1.0 + (n - 1.0) * rho))
        white = (rows - shrink[:, None, None] * mean[:, None, :]) * data.live[..., None] / jnp.sqrt(1.0 - rho)
        logdet = (n - 1.0) * jnp.log1p(-rho) + jnp.log1p((n - 1.0) * rho)
        return _slab_stats(white, data), data.series_weights @ logdet


@dataclass(frozen=True)
class Unstructured(Serial):
    """Stata's ``residuals(unstructured, t(var))``, and with ``order`` ``residuals(banded q, t(var))``: a
    variance for each of the K values of the time and a covariance for each pair of them (banded: each pair at
    most q values apart; the rest 0). Reported as var(e·) for each time, then cov(e·,e·) for each pair.

    Coordinates: ln sdₖ and the pairs' atanh rₖₗ; σ = sd₁ and ψ = (ln(sdₖ/sd₁) for k ≥ 2, atanh rₖₗ), so that
    C(0) = I. A step out of the positive-definite region gives a NaN deviance, which the line search steps back
    from.
    """

    times: tuple[float, ...] = (0.0, 1.0)
    order: int | None = None

    @property
    def title(self) -> str:  # type: ignore[override]
        return "Unstructured" if self.order is None else f"Banded({self.order})"

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The (k, l) index pairs of the times whose covariance is estimated, k < l, in Stata's order."""
        K, q = len(self.times), len(self.times) if self.order is None else self.order
        return tuple((k, l) for k in range(K) for l in range(k + 1, K) if l - k <= q)

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("var",) * len(self.times) + ("cov",) * len(self.pairs)

    @property
    def covariance_sds(self) -> dict[int, int]:
        return {len(self.times) + t: k for t, (k, _) in enumerate(self.pairs)}

    def split(self, u: Array) -> tuple[Array, Array]:
        K = len(self.times)
        return u[0], jnp.concatenate([u[1:K] - u[0], u[K:]])

    def join(self, log_sigma: Array, psi: Array) -> Array:
        K = len(self.times)
        return jnp.concatenate([jnp.reshape(log_sigma, (1,)), log_sigma + psi[:K - 1], psi[K - 1:]])

    def values(self, u: Array) -> Array:
        K = len(self.times)
        k, l = (jnp.asarray(i, dtype=int) for i in zip(*self.pairs)) if self.pairs else (jnp.zeros(0, int),) * 2
        return jnp.concatenate([jnp.exp(2.0 * u[:K]), jnp.exp(u[k] + u[l]) * jnp.tanh(u[K:])])

    def matrix(self, psi: Array) -> Array:
        """C(ψ) among the K times (K, K)."""
        K = len(self.times)
        sd = jnp.exp(jnp.concatenate([jnp.zeros(1), psi[:K - 1]]))
        R = jnp.eye(K)
        if self.pairs:
            k, l = (jnp.asarray(i, dtype=int) for i in zip(*self.pairs))
            r = jnp.tanh(psi[K - 1:])
            R = R.at[k, l].set(r).at[l, k].set(r)
        return sd[:, None] * R * sd[None, :]

    def block(self, data: SerialRows, psi: Array) -> Array:
        at = jnp.clip(jnp.searchsorted(jnp.asarray(self.times), data.time), 0, len(self.times) - 1)
        return self.matrix(psi)[at[:, :, None], at[:, None, :]]


@dataclass(frozen=True)
class ByStratum(Serial):
    """Stata's ``residuals(rspec, t(var) by(var))``: each stratum of series (a value of a variable constant within
    series: a treatment arm) has its own parameters of the ``inner`` structure, its own σ among them. Reported as
    the inner structure's rows for each stratum in turn.

    Coordinates: the strata's inner coordinates one after another; σ = the first stratum's, and ψ = (each stratum's
    inner ψ, then ln(σₛ/σ₁) for s ≥ 2). Each stratum's series are whitened by the inner structure at its ψ, its
    rows scaled by σ₁/σₛ, the others' masked out; the statistics add over the strata (each series is in one).
    """

    inner: Serial = AR1()
    n_strata: int = 2

    @property
    def title(self) -> str:  # type: ignore[override]
        return self.inner.title

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.inner.kinds * self.n_strata

    @property
    def independent(self) -> Array:
        return jnp.concatenate([jnp.tile(self.inner.independent, self.n_strata), jnp.zeros(self.n_strata - 1)])

    @property
    def covariance_sds(self) -> dict[int, int]:
        k = len(self.inner.kinds)
        return {s * k + row: s * k + sd for s in range(self.n_strata) for row, sd in self.inner.covariance_sds.items()}

    def _parts(self, u: Array) -> list[Array]:
        k = len(self.inner.kinds)
        return [u[s * k:(s + 1) * k] for s in range(self.n_strata)]

    def split(self, u: Array) -> tuple[Array, Array]:
        sides = [self.inner.split(part) for part in self._parts(u)]
        return sides[0][0], jnp.concatenate([psi for _, psi in sides] + [jnp.stack([ls - sides[0][0]
                                                                                    for ls, _ in sides[1:]])])

    def _psis(self, psi: Array) -> tuple[list[Array], Array]:
        """Each stratum's inner ψ, and ln(σₛ/σ₁) for every stratum (0 for the first)."""
        k = self.inner.n_params
        return ([psi[s * k:(s + 1) * k] for s in range(self.n_strata)],
                jnp.concatenate([jnp.zeros(1), psi[self.n_strata * k:]]))

    def join(self, log_sigma: Array, psi: Array) -> Array:
        psis, ratio = self._psis(psi)
        return jnp.concatenate([self.inner.join(log_sigma + r, p) for p, r in zip(psis, ratio)])

    def values(self, u: Array) -> Array:
        return jnp.concatenate([self.inner.values(part) for part in self._parts(u)])

    def _stratum(self, data: SerialRows, s: int, scale: Array) -> SerialRows:
        """``data`` with only stratum s's series, their rows times ``scale``."""
        keep = (data.stratum == s).astype(data.y.dtype)
        rows = keep[:, None] * scale
        return data._replace(X=data.X * rows[..., None], Z=data.Z * rows[..., None], W=data.W * rows[..., None],
                             y=data.y * rows, gap=data.gap * (data.stratum == s)[:, None],
                             live=data.live * keep[:, None])

    def correlation(self, data: SerialRows, psi: Array) -> Array:
        psis, ratio = self._psis(psi)
        C = self.inner.correlation(data._replace(live=jnp.zeros_like(data.live)), psis[0])  # the identity
        for s, (p, r) in enumerate(zip(psis, ratio)):
            C = jnp.where((data.stratum == s)[:, None, None] & (data.live > 0)[:, :, None],
                          jnp.exp(2.0 * r) * self.inner.correlation(self._stratum(data, s, 1.0), p), C)
        return C

    def whiten(self, data: SerialRows, psi: Array) -> tuple[GroupStats | NestedStats, Array]:
        psis, ratio = self._psis(psi)
        parts = [self.inner.whiten(self._stratum(data, s, jnp.exp(-r)), p) for s, (p, r) in
                 enumerate(zip(psis, ratio))]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *[stats for stats, _ in parts])
        # each stratum's statistics count its own (weighted) rows: together, the observations
        combined = combine(stacked, jnp.ones(self.n_strata))
        logdet = sum(logdet for _, logdet in parts) + 2.0 * stacked.n @ ratio
        return combined, logdet


def _slab_rows(data: SerialRows) -> Array:
    """[Z W X y] on each series' slab, (s, T, q + q2 + p + 1)."""
    return jnp.concatenate([data.Z, data.W, data.X, data.y[..., None]], axis=-1)


def _slab_stats(white: Array, data: SerialRows) -> GroupStats | NestedStats:
    """The sufficient statistics of whitened slab rows [Z W X y] (:func:`_slab_rows`'s layout): per group, the
    series' cross-products summed over each group's series."""
    q, q2, p = data.Z.shape[-1], data.W.shape[-1], data.X.shape[-1]
    Z, W, X, y = white[..., :q], white[..., q:q + q2], white[..., q + q2:-1], white[..., -1]
    m = data.group_weights.shape[0]
    v = data.series_weights  # the totals weight each series' rows; the per-group terms are weighted downstream

    def per_group(a_: Array) -> Array:  # two levels: the series are the groups (no parents)
        return a_ if data.parent.shape[0] == 0 else jax.ops.segment_sum(a_, data.parent, m)

    stats = GroupStats(
        ZtZ=per_group(jnp.einsum("gti,gtj->gij", Z, Z)), ZtX=per_group(jnp.einsum("gti,gtj->gij", Z, X)),
        ZtX2=jnp.zeros((m, 0, 0)), Zty=per_group(jnp.einsum("gti,gt->gi", Z, y)),
        XtX=jnp.einsum("g,gti,gtj->ij", v, X, X), Xty=jnp.einsum("g,gti,gt->i", v, X, y),
        yty=v @ jnp.sum(y * y, axis=1), n=v @ jnp.sum(data.live, axis=1),
        p=jnp.asarray(p, jnp.float64), group_weights=data.group_weights,
    )
    if q2:
        stats = NestedStats(*stats, WtW=jnp.einsum("gti,gtj->gij", W, W), WtZ=jnp.einsum("gti,gtj->gij", W, Z),
                            WtX=jnp.einsum("gti,gtj->gij", W, X), Wty=jnp.einsum("gti,gt->gi", W, y),
                            parent=data.parent, cluster_weights=jnp.ones(data.parent.shape[0]))
    return stats


def _power(x: Array, n: Array, bits: int) -> Array:
    """xⁿ for integers 0 <= n < 2^bits by binary powers: a polynomial in x, so every derivative is finite at x = 0,
    where lax.pow's second derivative is 0·x⁻¹ = NaN."""
    out, square = jnp.ones(n.shape), x
    for bit in range(bits):
        out = out * jnp.where((n >> bit) & 1 == 1, square, 1.0)
        square = square * square
    return out


INDEPENDENT = Independent()

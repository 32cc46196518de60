"""Covariance structures of the random effects, in the two metrics jaxhlm works in.

*Fitting metric* (lme4's θ): the relative covariance factor Λ is linear in θ, ``Λ = Σ_k θ_k T_k``, with
``Σ = σ² Λ Λᵀ``. Bounded coordinates (``θ_k >= 0``) sit on diagonals, so boundary optima such as a rank-
deficient Σ are reached exactly at finite θ (a log-Cholesky parameterisation reaches them only at
infinity).

*Reporting metric* (Stata's φ): ``ln sd`` for each standard deviation and ``atanh r`` for each correlation.
Stata's standard errors of the variance components come from the observed information in this metric and
the delta method, so jaxhlm evaluates the same quantity to reproduce them.

A structure is a tuple of :class:`Block`; several blocks on one grouping factor form a block-diagonal Σ.
Blocks are static (hashable) so that the jitted core compiles once per structure *shape*, not per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array

KINDS: tuple[str, ...] = ("identity", "independent", "exchangeable", "unstructured")

#: Stata's abbreviations of the covariance() option, and lme4-style aliases.
ALIASES: dict[str, str] = {
    "id": "identity", "ident": "identity", "identity": "identity",
    "ind": "independent", "indep": "independent", "independent": "independent", "diagonal": "independent",
    "ex": "exchangeable", "exc": "exchangeable", "exch": "exchangeable", "exchangeable": "exchangeable",
    "un": "unstructured", "uns": "unstructured", "unstr": "unstructured", "unstructured": "unstructured",
}

#: |correlation| this close to 1 is treated as on the boundary (atanh r infinite).
EDGE_TOL = 1e-9


def canonical_kind(name: str) -> str:
    """Map a user's covariance name (Stata abbreviations allowed) to one of :data:`KINDS`."""
    key = name.strip().lower()
    if key not in ALIASES:
        from .errors import FormulaError

        raise FormulaError(
            f"unknown covariance structure {name!r}; use one of identity, independent, exchangeable, "
            "unstructured (or Stata's id, ind, exch, unstr)"
        )
    return ALIASES[key]


def _safe_sqrt(x: Array) -> Array:
    """sqrt that is exactly 0 at 0 with finite derivatives of every order (boundary correlations)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def psd_cholesky(a: Array) -> Array:
    """Cholesky factor of a positive semi-definite matrix (a correlation matrix, Σ/σ²), unrolled; zero columns
    where it is singular, so a zero variance gives a zero column rather than NaN."""
    q = a.shape[-1]
    rows: list[list[Array]] = [[jnp.zeros(()) for _ in range(q)] for _ in range(q)]
    for j in range(q):
        d = _safe_sqrt(a[j, j] - sum((rows[j][k] ** 2 for k in range(j)), jnp.zeros(())))
        rows[j][j] = d
        for i in range(j + 1, q):
            off = a[i, j] - sum((rows[i][k] * rows[j][k] for k in range(j)), jnp.zeros(()))
            rows[i][j] = jnp.where(d > 0, off / jnp.where(d > 0, d, 1.0), 0.0)
    return jnp.stack([jnp.stack(r) for r in rows])


@dataclass(frozen=True)
class Block:
    """One random-effects covariance block: a structure ``kind`` over ``q`` effects.

    ``lead`` (unstructured blocks) is the effect whose row comes first in the Cholesky factor that θ holds,
    normally the intercept (lme4's layout). Why it matters: if an effect with almost no variance came first,
    every later row of the factor could rotate freely without changing Σ much, and Newton would crawl along
    that flat valley. On the HSB bootstrap, with ses ahead of _cons, a quarter of the refits under the null
    needed 16 to 40 steps for a 0.015 change in the deviance.
    """

    kind: str
    q: int
    lead: int | None = None

    @property
    def order(self) -> tuple[int, ...]:
        """The effects in the order of the factor's rows and columns."""
        if self.kind != "unstructured" or self.lead is None:
            return tuple(range(self.q))
        return (self.lead,) + tuple(i for i in range(self.q) if i != self.lead)

    # ---- fitting metric -------------------------------------------------------------------------
    @property
    def n_theta(self) -> int:
        """Parameters of the block: θ, Stata's φ and the reported var/cov table all have this many."""
        return {"identity": 1, "independent": self.q, "exchangeable": 2,
                "unstructured": self.q * (self.q + 1) // 2}[self.kind]

    def templates(self) -> np.ndarray:
        """T with Λ = Σ_k θ_k T_k. Unstructured θ is the lower triangle of the Cholesky factor of Σ with
        its effects in :attr:`order`, column-major (as lme4); Λ is that factor with rows and columns put
        back in the effects' own order (ΛΛᵀ is all the likelihood needs, so Λ need not be triangular)."""
        q = self.q
        if self.kind == "identity":
            return np.eye(q)[None]
        if self.kind == "independent":
            return np.stack([np.diag(np.eye(q)[k]) for k in range(q)])
        if self.kind == "exchangeable":
            # Λ = α P⊥ + β P1 is a symmetric square root of (α² P⊥ + β² P1): any Λ with ΛΛᵀ = Σ/σ² works.
            p1 = np.full((q, q), 1.0 / q)
            return np.stack([np.eye(q) - p1, p1])
        out, o = [], self.order
        for j in range(q):
            for i in range(j, q):
                t = np.zeros((q, q))
                t[o[i], o[j]] = 1.0
                out.append(t)
        return np.stack(out)

    def covariance_templates(self) -> np.ndarray:
        """E with Σ = Σ_k γ_k E_k, γ the reported estimates (:meth:`pick`): every structure here is linear in
        them, the parameterisation in which Kenward and Roger's adjustment needs no second-derivative term."""
        q = self.q
        if self.kind == "identity":
            return np.eye(q)[None]
        if self.kind == "exchangeable":
            return np.stack([np.eye(q), np.ones((q, q)) - np.eye(q)])
        out = []
        for i, j in zip(*self.entries):
            e = np.zeros((q, q))
            e[i, j] = e[j, i] = 1.0
            out.append(e)
        return np.stack(out)

    def lower(self) -> np.ndarray:
        if self.kind == "unstructured":
            return np.array([0.0 if i == j else -np.inf for j in range(self.q) for i in range(j, self.q)])
        return np.zeros(self.n_theta)

    def theta_start(self) -> np.ndarray:
        t = self.templates()
        return np.array([1.0 if np.trace(tk) > 0 else 0.0 for tk in t])

    def theta_from_cov(self, rel: Array) -> Array:
        """θ whose Λ(θ)Λ(θ)ᵀ is the projection of a relative covariance ``rel`` (= Σ/σ²) onto this structure."""
        q = self.q
        if self.kind == "identity":
            return jnp.sqrt(jnp.mean(jnp.diagonal(rel)))[None]
        if self.kind == "independent":
            return jnp.sqrt(jnp.diagonal(rel))
        if self.kind == "exchangeable":
            v = jnp.mean(jnp.diagonal(rel))
            c = (jnp.sum(rel) - jnp.trace(rel)) / (q * (q - 1))
            return jnp.sqrt(jnp.maximum(jnp.stack([v - c, v + (q - 1) * c]), 0.0))
        o = np.asarray(self.order)
        L = psd_cholesky(rel[o[:, None], o[None, :]])
        return jnp.concatenate([L[j:, j] for j in range(q)])

    # ---- reporting metric -----------------------------------------------------------------------
    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(combinations(range(self.q), 2))

    @property
    def entries(self) -> tuple[list[int], list[int]]:
        """(rows, columns) of the Σ entries Stata prints, in its order: variances, then covariances."""
        if self.kind == "identity":
            return [0], [0]
        if self.kind == "exchangeable":
            return [0, 0], [0, 1]
        cells = [(k, k) for k in range(self.q)] + (self.pairs if self.kind == "unstructured" else [])
        return [i for i, _ in cells], [j for _, j in cells]

    def phi_from_cov(self, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(φ, edge): Stata's (ln sd, atanh r) for this block's Σ; edge = ±1 where a correlation is ±1."""
        sd = np.sqrt(np.clip(np.diag(sigma), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            lns = np.log(sd)
            if self.kind == "identity":
                return lns[:1], np.zeros(1)
            if self.kind == "independent":
                return lns, np.zeros(self.q)
            if self.kind == "exchangeable":
                r = np.array([sigma[0, 1] / sigma[0, 0]])
            else:
                r = np.array([sigma[i, j] / (sd[i] * sd[j]) for i, j in self.pairs])
            r = np.nan_to_num(np.clip(r, -1.0, 1.0))
            edge = np.where(np.abs(r) >= 1 - EDGE_TOL, np.sign(r), 0.0)
            atr = np.where(edge != 0, 0.0, np.arctanh(np.where(edge != 0, 0.0, r)))
        lead = lns[:1] if self.kind == "exchangeable" else lns
        return np.concatenate([lead, atr]), np.concatenate([np.zeros(len(lead)), edge])

    def _sd_r(self, phi: Array, edge: Array) -> tuple[Array, Array]:
        n_sd = self.n_variances
        sd = jnp.exp(phi[:n_sd])
        r = jnp.where(edge[n_sd:] != 0, edge[n_sd:], jnp.tanh(phi[n_sd:]))
        return sd, r

    def root_from_phi(self, phi: Array, edge: Array) -> Array:
        """C with C Cᵀ = Σ(φ) (absolute scale)."""
        q = self.q
        sd, r = self._sd_r(phi, edge)
        if self.kind == "identity":
            return sd[0] * jnp.eye(q)
        if self.kind == "independent":
            return jnp.diag(sd)
        if self.kind == "exchangeable":
            p1 = jnp.full((q, q), 1.0 / q)
            return sd[0] * (_safe_sqrt(1.0 - r[0]) * (jnp.eye(q) - p1) + _safe_sqrt(1.0 + (q - 1) * r[0]) * p1)
        corr = jnp.eye(q)
        for k, (i, j) in enumerate(self.pairs):
            corr = corr.at[i, j].set(r[k]).at[j, i].set(r[k])
        return sd[:, None] * psd_cholesky(corr)

    def pick(self, sigma):  # noqa: ANN001, ANN201  (numpy in, numpy out; jax in, jax out)
        """The estimates Stata prints for this block's Σ (see :attr:`entries`; leading axes are kept)."""
        rows, cols = self.entries
        return sigma[..., rows, cols]

    def reported(self, phi: Array, edge: Array) -> Array:
        """:meth:`pick` of Σ(φ): the reported estimates as a function of φ (for the delta method)."""
        root = self.root_from_phi(phi, edge)
        return self.pick(root @ root.T)

    def labels(self, names: Sequence[str]) -> list[str]:
        if self.kind in ("identity", "exchangeable") and self.q > 1:
            joined = " ".join(names)
            return [f"var({joined})"] + ([f"cov({joined})"] if self.kind == "exchangeable" else [])
        out = [f"var({n})" for n in names]
        if self.kind == "unstructured":
            out += [f"cov({names[i]},{names[j]})" for i, j in self.pairs]
        return out

    @property
    def n_variances(self) -> int:
        """How many leading entries of :meth:`pick` are variances (the rest are covariances); also the
        number of ln sd coordinates leading φ."""
        return {"identity": 1, "independent": self.q, "exchangeable": 1, "unstructured": self.q}[self.kind]


Structure = tuple[Block, ...]


def unstructured(q: int) -> Structure:
    """One unstructured block over all q effects: lme4's ``(1 + x | g)``, and the array-level API's default."""
    return (Block("unstructured", q),)


def q_total(blocks: Structure) -> int:
    return sum(b.q for b in blocks)


def _embedded(blocks: Structure, per_block: Callable[[Block], np.ndarray]) -> np.ndarray:
    """Each block's (k, q_b, q_b) templates, embedded in the full q×q block-diagonal matrix."""
    q = q_total(blocks)
    out, at = [], 0
    for b in blocks:
        for t in per_block(b):
            full = np.zeros((q, q))
            full[at:at + b.q, at:at + b.q] = t
            out.append(full)
        at += b.q
    return np.stack(out) if out else np.zeros((0, q, q))  # no random effects: the series of correlated residuals


def templates(blocks: Structure) -> np.ndarray:
    """All θ templates of a structure (Λ = Σ θ_k T_k)."""
    return _embedded(blocks, Block.templates)


def covariance_templates(blocks: Structure) -> np.ndarray:
    """All Σ templates of a structure (Σ = Σ γ_k E_k, γ the reported estimates; :meth:`Block.covariance_templates`)."""
    return _embedded(blocks, Block.covariance_templates)


def theta_from_cov(blocks: Structure, rel: Array) -> Array:
    qs = _slices(blocks, lambda b: b.q)
    return jnp.concatenate([jnp.zeros(0)] + [b.theta_from_cov(rel[s, s]) for b, s in zip(blocks, qs)])


def theta_even(blocks: Structure) -> np.ndarray:
    """Coordinates in which ΛΛᵀ, hence the likelihood, is even: θ_k → −θ_k changes nothing.

    That holds when every cross term T_k T_lᵀ + T_l T_kᵀ (l ≠ k) of ΛΛᵀ = Σ θ_k θ_l T_k T_lᵀ vanishes: a
    column of Λ that holds θ_k alone (the last diagonal of an unstructured block, every independent or
    identity parameter, both exchangeable ones).
    """
    T = templates(blocks)
    cross = np.einsum("kij,lmj->klim", T, T)
    cross = np.abs(cross + cross.transpose(1, 0, 3, 2)).sum(axis=(2, 3))
    np.fill_diagonal(cross, 0.0)
    return (cross.max(axis=1, initial=0.0) < 1e-12) & (theta_lower(blocks) == 0)


def theta_lower(blocks: Structure) -> np.ndarray:
    return np.concatenate([np.zeros(0)] + [b.lower() for b in blocks])


def on_boundary(blocks: Structure, theta: Array) -> Array:
    """Whether a bounded θ is exactly 0, i.e. Σ is singular (lme4's isSingular); over the last axis."""
    return ((theta_lower(blocks) == 0) & (theta == 0)).any(axis=-1)


def theta_start(blocks: Structure) -> np.ndarray:
    return np.concatenate([np.zeros(0)] + [b.theta_start() for b in blocks])


def n_cov_params(blocks: Structure) -> int:
    """Variance/covariance parameters estimated (what LR tests and information criteria count)."""
    return sum(b.n_theta for b in blocks)


def _slices(blocks: Structure, size) -> list[slice]:
    out, at = [], 0
    for b in blocks:
        out.append(slice(at, at + size(b)))
        at += size(b)
    return out


def phi_from_cov(blocks: Structure, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qs = _slices(blocks, lambda b: b.q)
    parts = [(np.zeros(0), np.zeros(0))] + [b.phi_from_cov(sigma[s, s]) for b, s in zip(blocks, qs)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def root_from_phi(blocks: Structure, phi: Array, edge: Array) -> Array:
    ps = _slices(blocks, lambda b: b.n_theta)
    roots = [b.root_from_phi(phi[s], edge[s]) for b, s in zip(blocks, ps)]
    return jnp.asarray(roots[0]) if len(roots) == 1 else jax_block_diag(roots)  # none: a 0×0 root


def jax_block_diag(mats: Sequence[Array]) -> Array:
    q = sum(m.shape[0] for m in mats)
    out = jnp.zeros((q, q))
    at = 0
    for m in mats:
        out = out.at[at:at + m.shape[0], at:at + m.shape[0]].set(m)
        at += m.shape[0]
    return out


def reported(blocks: Structure, phi: Array, edge: Array) -> Array:
    ps = _slices(blocks, lambda b: b.n_theta)
    return jnp.concatenate([jnp.zeros(0)] + [b.reported(phi[s], edge[s]) for b, s in zip(blocks, ps)])


def pick(blocks: Structure, sigma: np.ndarray) -> np.ndarray:
    """The reported var/cov estimates of a full (block-diagonal) Σ, or of a stack of them (…, q, q)."""
    qs = _slices(blocks, lambda b: b.q)
    return np.concatenate([np.zeros(sigma.shape[:-2] + (0,))] + [b.pick(sigma[..., s, s]) for b, s in zip(blocks, qs)],
                          axis=-1)


def sd_corr_matrix(sigma: np.ndarray) -> np.ndarray:
    """Σ (…, q, q) with standard deviations on the diagonal and correlations off it (NaN beside a zero
    variance): :func:`pick` of it is what ``estat sd`` reports."""
    sd = np.sqrt(np.diagonal(sigma, axis1=-2, axis2=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = sigma / (sd[..., :, None] * sd[..., None, :])
    diag = np.arange(sd.shape[-1])
    out[..., diag, diag] = sd
    return out


def labels(blocks: Structure, names: Sequence[str]) -> list[str]:
    qs = _slices(blocks, lambda b: b.q)
    return [lab for b, s in zip(blocks, qs) for lab in b.labels(list(names[s]))]


def variance_mask(blocks: Structure) -> np.ndarray:
    """True for entries of :func:`reported` that are variances (CI on the log scale), False for covariances."""
    return np.concatenate([np.zeros(0, bool)] + [np.arange(b.n_theta) < b.n_variances for b in blocks])


def variance_index(blocks: Structure, effect: int) -> int:
    """Where the variance of random effect ``effect`` (its position in Σ) sits among the reported estimates:
    its own entry, or its block's one shared variance (identity, exchangeable)."""
    at_q = at_reported = 0
    for b in blocks:
        if effect < at_q + b.q:
            return at_reported + (0 if b.n_variances == 1 else effect - at_q)
        at_q += b.q
        at_reported += b.n_theta
    raise IndexError(f"random effect {effect} is not in the covariance structure")

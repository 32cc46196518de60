"""Sufficient statistics: everything the likelihood needs, reduced once from the data.

For a Gaussian two-level model the profiled deviance depends on the data only through the per-group
cross-products ZⱼᵀZⱼ, ZⱼᵀXⱼ, Zⱼᵀyⱼ and the totals XᵀX, Xᵀy, yᵀy. Computing them once makes each deviance
evaluation cost O(m q² p²), independent of the number of observations. A refit with a new response (a
bootstrap replicate, another outcome) changes only the y-dependent parts.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array


class GroupedData(NamedTuple):
    """Observations padded into one slab per group: rows past a group's size are all zero.

    X: (m, n_max, p) fixed-effects design; Z: (m, n_max, q) random-effects design; y: (m, n_max) response;
    mask: (m, n_max) 1.0 on real rows. Zero rows add nothing to any cross-product; the mask only counts n.
    """

    X: Array
    Z: Array
    y: Array
    mask: Array


class GroupStats(NamedTuple):
    """Per-group and total cross-products of [Z X y]. A pytree: jit, vmap and shard it freely.

    ZtZ (m, q, q), ZtX (m, q, p), Zty (m, q), XtX (p, p), Xty (p,), yty (), n () observations,
    p () the rank of X (columns added by :func:`pad_stats` are not counted), and ZtX2
    (m, q(q+1)/2, p(p+1)/2): the products of ZⱼᵀXⱼ's rows that XᵀV⁻¹X is made of (:func:`zx_products`).
    """

    ZtZ: Array
    ZtX: Array
    ZtX2: Array
    Zty: Array
    XtX: Array
    Xty: Array
    yty: Array
    n: Array
    p: Array


def slots(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Where each row goes in the padded layout: (group, slot within the group, largest group size)."""
    counts = np.bincount(group, minlength=n_groups)
    order = np.argsort(group, kind="stable")
    slot = np.empty(len(group), dtype=np.int64)
    slot[order] = np.arange(len(group)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[group[order]]
    return group, slot, int(counts.max()) if len(counts) else 0


def pad_rows(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Scatter row-wise values (rows first; any trailing shape) into (n_groups, n_max, …) slabs, zero-filled."""
    g, slot, n_max = slots(group, n_groups)
    out = np.zeros((n_groups, n_max) + values.shape[1:])
    out[g, slot] = values
    return out


def pad_groups(X: np.ndarray, Z: np.ndarray, y: np.ndarray, group: np.ndarray, n_groups: int) -> GroupedData:
    """Scatter row-wise arrays into per-group slabs. ``group`` holds codes 0..n_groups-1."""
    return GroupedData(*(jnp.asarray(pad_rows(a, group, n_groups)) for a in (X, Z, y, np.ones(len(y)))))


def zx_products(ZtX: Array) -> Array:
    """ZⱼᵀXⱼ[a]ᵀ ZⱼᵀXⱼ[b] (+ the transpose for a < b), packed over a <= b and over the upper triangle in p.

    Why: XᵀV⁻¹X = XᵀX − Σⱼ ZtXⱼᵀ Sⱼ ZtXⱼ with Sⱼ = Λ(ΛᵀZⱼᵀZⱼΛ + I)⁻¹Λᵀ, and with these products it is
    one matrix product of the packed Sⱼ (which depend on θ) with a fixed matrix. In a batch of refits of one
    design that product is a single GEMM over the whole batch, where contracting ZtXⱼ itself would build a
    (batch, m, q, p) intermediate at every evaluation (8x slower Hessians on the HSB bootstrap). Packed,
    the contraction costs q(q+1)/2 · p(p+1)/2 per group, fewer flops than the unpacked q²p + qp².
    """
    q, p = ZtX.shape[-2:]
    a, b = np.triu_indices(q)
    u, v = np.triu_indices(p)
    direct = ZtX[..., a, :][..., u] * ZtX[..., b, :][..., v]
    swapped = ZtX[..., b, :][..., u] * ZtX[..., a, :][..., v]
    return direct + jnp.where(jnp.asarray(a != b)[:, None], swapped, 0.0)


@jax.jit
def group_stats(data: GroupedData) -> GroupStats:
    """Reduce padded group slabs to the cross-products of [Z X y]."""
    X, Z, y, mask = data
    ZtX = jnp.einsum("gni,gnj->gij", Z, X)
    return GroupStats(
        ZtZ=jnp.einsum("gni,gnj->gij", Z, Z),
        ZtX=ZtX,
        ZtX2=zx_products(ZtX),
        Zty=jnp.einsum("gni,gn->gi", Z, y),
        XtX=jnp.einsum("gni,gnj->ij", X, X),
        Xty=jnp.einsum("gni,gn->i", X, y),
        yty=jnp.sum(y * y),
        n=jnp.sum(mask),
        p=jnp.asarray(X.shape[-1], jnp.float64),
    )


def bucket(size: int, floor: int = 4) -> int:
    """Round ``size`` up to one of 4 steps per doubling (…, 8, 10, 12, 14, 16, 20, …).

    Models whose shapes fall in one bucket share a compiled executable; at most 25% of padding is wasted.
    """
    if size <= floor:
        return floor
    top = 1 << (size - 1).bit_length()
    step = max(top // 8, 1)
    return -(-size // step) * step


def pad_stats(stats: GroupStats, n_groups: int, n_fixed: int) -> GroupStats:
    """Pad to ``n_groups`` groups and ``n_fixed`` fixed-effect columns without changing the likelihood.

    A padded group has ZⱼᵀZⱼ = 0, so its Lⱼ = I and it contributes nothing. A padded column has a unit
    diagonal in XᵀX and zeros elsewhere, so its coefficient is 0 and log|R_X| is unchanged; ``p`` keeps
    the true rank for REML.
    """
    m, q, p = stats.ZtX.shape
    dm, dp = n_groups - m, n_fixed - p
    if dm == 0 and dp == 0:
        return stats
    XtX = jnp.pad(stats.XtX, ((0, dp), (0, dp))) + jnp.diag(jnp.concatenate([jnp.zeros(p), jnp.ones(dp)]))
    ZtX = jnp.pad(stats.ZtX, ((0, dm), (0, 0), (0, dp)))
    return GroupStats(
        ZtZ=jnp.pad(stats.ZtZ, ((0, dm), (0, 0), (0, 0))),
        ZtX=ZtX,
        ZtX2=zx_products(ZtX),
        Zty=jnp.pad(stats.Zty, ((0, dm), (0, 0))),
        XtX=XtX,
        Xty=jnp.pad(stats.Xty, (0, dp)),
        yty=stats.yty,
        n=stats.n,
        p=stats.p,
    )

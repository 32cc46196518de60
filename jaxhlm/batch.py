"""Batched refits: one design, many responses — simulation, refits and parametric-bootstrap LR tests.

A response enters the likelihood only through Zⱼᵀy, Xᵀy and yᵀy; the rest of the sufficient statistics is
shared by every replicate. So each replicate is reduced to those three first, and only the small
θ-optimisation is batched (``vmap`` of :func:`~jaxhlm.estimate.fit_stats`): inside the batched while loop
each replicate's state freezes once it has converged, so none is stopped early or iterated blindly.
Batches run in chunks sized to the device's memory and are sharded across all local devices
(``jax.shard_map`` over a one-axis mesh); replicate r always draws from ``fold_in(key, r)``, so results do
not depend on the chunk size or the number of devices.

A two-level model's replicates are laid out in per-group slabs (:class:`~jaxhlm.stats.GroupedData`); a
three-level model's stay as flat rows (:class:`FlatRows`), reduced by segment sums over groups and clusters,
since slabs would have to be padded to the largest cluster within the largest group. A model whose residuals
are correlated within series (AR(1), Toeplitz, unstructured, …) keeps its rows in time order
(:class:`~jaxhlm.residual.SerialRows`): its statistics depend on ψ, so each replicate is refitted from its
whitened rows (:func:`~jaxhlm.estimate.fit_residual`), its residuals drawn as σLz with each series' Cholesky
factor C(ψ̂) = LLᵀ, taken once.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from scipy import sparse, special

from . import _config
from . import covariance as cov
from .design import Design, Rows
from .errors import ComparisonError, DataError
from .estimate import fit_residual, fit_stats
from .optimize import RESULTS, converged
from .pipeline import design_stats
from .residual import INDEPENDENT, SerialRows, Strata, Structure
from .results import MixedResult, lrtest
from .stats import GroupedData, GroupStats, NestedStats, row_scale, slots

#: Bytes of working memory one replicate needs, per padded observation (response, noise, products) and per
#: group-parameter entry (the fit's factorisations and derivatives); chunks are sized from these.
_BYTES_PER_ROW = 64
_BYTES_PER_GROUP_ENTRY = 2_000
#: ... and, for crossed factors, per entry of the dense part of the factorisation and per θ coordinate (its
#: primal, tangent and saved values in the Hessian; measured: 1,000 subjects x 200 items, 190 MB a replicate).
_BYTES_PER_DENSE_ENTRY = 64


# ---- pure JAX core ---------------------------------------------------------------------------------------
class FlatRows(NamedTuple):
    """A three-level model's rows, unpadded (a response is (N,)): X (N, p); Z (N, q1) and W (N, q2), the two
    levels' random-effects designs; group and cluster codes (N,); and the groups' and clusters' sizes (m,),
    (k,), whose lengths say how many random effects each level draws."""

    X: Array
    Z: Array
    W: Array
    group: Array
    cluster: Array
    group_sizes: Array
    cluster_sizes: Array


class Shared(NamedTuple):
    """What every replicate of one model shares: its design's rows and its bucket-padded statistics (with residuals
    correlated within series, the rows in time order, both; the response is replaced)."""

    data: GroupedData | FlatRows | SerialRows  # group slabs (X, Z, unit weights: 1 on real rows, 0 on padding)
    base: GroupStats | NestedStats | SerialRows  # statistics of the fitted response; the response parts are replaced


class Simulator(NamedTuple):
    """A fitted model to draw responses from: y = Xβ + Zb + e, b ~ N(0, σ²ΛΛᵀ), e ~ N(0, σ²), on whitened rows
    (:func:`_rows`). ``within`` = Σ(fᵢ − 1) over rows with frequency weights fᵢ: a row then stands for fᵢ
    observations, drawn as their mean (its whitened residual has variance σ²) and the sum of squares about it
    (:func:`within_ss`). None (an empty pytree, so static) compiles that draw out."""

    data: GroupedData | FlatRows
    beta: Array  # (p,)
    lam: Array  # (q, q) relative covariance factor Λ(θ̂), block-diagonal over the levels
    sigma: Array  # σ̂
    within: Array | None  # () the degrees of freedom of the residuals within rows; None without frequency weights
    #: with residuals correlated within series (:class:`SerialRows` data), each series' Cholesky factor of C(ψ̂)
    #: (s, T, T; identity on padding), taken once for every draw; None otherwise
    chol: Array | None


class Replicate(NamedTuple):
    """One refit, reduced to what batched callers report (every field gains a leading axis)."""

    deviance: Array
    theta: Array
    beta: Array
    sigma2: Array
    converged: Array
    singular: Array
    exhausted: Array  # stopped by the step limit of its round: to be resumed from its θ (and ψ)
    psi: Array  # ψ of the residual structure; empty for σ²I

    @property
    def start(self) -> Array:
        """Where a resumed round starts: (θ, ψ)."""
        return jnp.concatenate([self.theta, self.psi], axis=-1)


#: Newton steps per round of a batch. Most replicates converge within one round; the few that need more (an
#: optimum on a corr = ±1 ridge can take 50) are resumed in later rounds with only their kind, so that a
#: whole chunk does not iterate as long as its slowest replicate. After MAX_ROUNDS a replicate still
#: unconverged counts as failed (200 steps in all, the single-fit limit).
FIRST_ROUND_STEPS = 16
MAX_ROUNDS = 13
#: Replicates per device in a resumed round's chunk: the few unconverged replicates are not padded out to a
#: full first-round chunk (on the HSB bootstrap that padding was most of the cost).
RESUME_CHUNK = 8


def with_response(shared: Shared, y: Array) -> GroupStats | NestedStats | SerialRows:
    """The statistics of ``shared``'s design with the response ``y`` (laid out like ``shared.data``)."""
    if isinstance(shared.data, SerialRows):
        return shared.base._replace(y=y)
    if isinstance(shared.data, FlatRows):
        d, base = shared.data, shared.base
        return base._replace(Zty=jax.ops.segment_sum(d.Z * y[:, None], d.group, base.Zty.shape[0]),
                             Wty=jax.ops.segment_sum(d.W * y[:, None], d.cluster, base.Wty.shape[0]),
                             Xty=jnp.pad(y @ d.X, (0, base.Xty.shape[0] - d.X.shape[1])), yty=jnp.sum(y * y))
    X, Z = shared.data.X, shared.data.Z
    zty = jnp.einsum("gni,gn->gi", Z, y)
    xty = jnp.einsum("gni,gn->i", X, y)
    m, p = shared.base.Zty.shape[0], shared.base.Xty.shape[0]
    return shared.base._replace(Zty=jnp.pad(zty, ((0, m - zty.shape[0]), (0, 0))),
                                Xty=jnp.pad(xty, (0, p - xty.shape[0])), yty=jnp.sum(y * y))


def simulate_one(key: Array, sim: Simulator) -> Array:
    """One response drawn from the fitted model, in the layout of ``sim.data`` (zero on padding rows)."""
    k_re, k_e = jax.random.split(key)
    if isinstance(sim.data, SerialRows):  # e = σLz within each series, C(ψ̂) = LLᵀ
        d = sim.data
        q1 = d.Z.shape[2]
        if d.parent.shape[0]:  # two nested levels: the series are the clusters, each with its group's effects
            k1, k2 = jax.random.split(k_re)
            b1 = sim.sigma * jax.random.normal(k1, (d.group_weights.shape[0], q1)) @ sim.lam[:q1, :q1].T
            b2 = sim.sigma * jax.random.normal(k2, (d.W.shape[0], d.W.shape[2])) @ sim.lam[q1:, q1:].T
            effects = jnp.einsum("gnq,gq->gn", d.Z, b1[d.parent]) + jnp.einsum("gnq,gq->gn", d.W, b2)
        else:
            effects = jnp.einsum("gnq,gq->gn", d.Z, sim.sigma * jax.random.normal(k_re, (d.Z.shape[0], q1)) @ sim.lam.T)
        e = jnp.einsum("gij,gj->gi", sim.chol, jax.random.normal(k_e, d.y.shape))
        return (jnp.einsum("gnp,p->gn", d.X, sim.beta) + effects + sim.sigma * e) * d.live
    if isinstance(sim.data, FlatRows):
        d, q1 = sim.data, sim.data.Z.shape[1]
        k1, k2 = jax.random.split(k_re)
        b1 = sim.sigma * jax.random.normal(k1, (d.group_sizes.shape[0], q1)) @ sim.lam[:q1, :q1].T
        b2 = sim.sigma * jax.random.normal(k2, (d.cluster_sizes.shape[0], d.W.shape[1])) @ sim.lam[q1:, q1:].T
        return (d.X @ sim.beta + jnp.sum(d.Z * b1[d.group], axis=1) + jnp.sum(d.W * b2[d.cluster], axis=1)
                + sim.sigma * jax.random.normal(k_e, d.group.shape))
    X, Z, real = sim.data.X, sim.data.Z, sim.data.weights
    b = sim.sigma * jax.random.normal(k_re, (Z.shape[0], Z.shape[2])) @ sim.lam.T
    e = sim.sigma * jax.random.normal(k_e, real.shape)
    return (jnp.einsum("gnp,p->gn", X, sim.beta) + jnp.einsum("gnq,gq->gn", Z, b) + e) * real


#: The sums of squares within rows are drawn from their own stream of each replicate's key, so that every
#: other draw is the same whether a fit has frequency weights or not.
_WITHIN_STREAM = 0x7FFFFFFF


def within_ss(key: Array, sim: Simulator) -> Array:
    """A replicate's sum of squares of its observations about their rows' means (frequency weights): σ²χ² on
    Σ(fᵢ − 1) degrees of freedom, independent of the means. It enters the statistics only through yᵀy."""
    if sim.within is None:
        return jnp.zeros(())
    draw = 2.0 * jax.random.gamma(jax.random.fold_in(key, _WITHIN_STREAM), sim.within / 2.0)
    return sim.sigma**2 * draw


def _with_spread(stats: GroupStats | NestedStats | SerialRows, extra: Array) -> GroupStats | NestedStats | SerialRows:
    # Rows in time order have no frequency weights, so no spread within rows.
    return stats if isinstance(stats, SerialRows) else stats._replace(yty=stats.yty + extra)


def _fit(stats: GroupStats | NestedStats | SerialRows, structure: Structure, blocks: cov.Structure, reml: bool,
         start: Array, max_steps: int) -> Replicate:
    """One replicate's fit from its statistics (with a residual structure, from what it whitens), from the best
    of ``start`` ((θ, ψ), or several stacked) and EM's warm start, reduced to a :class:`Replicate`."""
    if structure == INDEPENDENT:
        fit, psi = fit_stats(stats, blocks, reml, start=start, max_steps=max_steps), jnp.zeros(0)
    else:
        both = fit_residual(stats, structure, blocks, reml, start=start, max_steps=max_steps)
        fit, psi = both.fit, both.psi
    sol = fit.solution
    return Replicate(fit.deviance, fit.theta, fit.beta, fit.sigma2,
                     converged(sol.result, sol.decrement) & jnp.isfinite(fit.deviance),
                     cov.on_boundary(blocks, fit.theta), sol.result == RESULTS.max_steps_reached, psi)


def _refit_one(x: tuple[dict[str, Array], Array], shared: Shared, blocks: cov.Structure, reml: bool,
               max_steps: int, structure: Structure = INDEPENDENT) -> Replicate:
    """One column of :func:`refit_batch`: x = (its response statistics by field name, (θ, ψ) start), padded like
    ``shared.base``."""
    response, start = x
    return _fit(shared.base._replace(**response), structure, blocks, reml, start, max_steps)


def _embed(theta: Array, small: cov.Structure, big: cov.Structure, index: tuple[int, ...]) -> Array:
    """The big model's θ whose covariance is the small model's (zero for effects the small one lacks)."""
    lam = jnp.tensordot(theta, jnp.asarray(cov.templates(small)), 1)
    q = cov.q_total(big)
    rel = jnp.zeros((q, q)).at[np.ix_(index, index)].set(lam @ lam.T)
    return cov.theta_from_cov(big, rel)


def _lr_one(x: tuple[Array, Array, Array], shared: tuple[Array, Simulator, Shared, Shared, Any],
            blocks_small: cov.Structure, blocks_big: cov.Structure, index: tuple[int, ...], reml: bool,
            max_steps: int, structure_small: Structure = INDEPENDENT, structure_big: Structure = INDEPENDENT
            ) -> tuple[Replicate, Replicate]:
    """Replicate r of the bootstrap: simulate under the small model, fit both. ``x`` = (r, (θ, ψ)_small start,
    (θ, ψ)_big start); the big model starts from the better of its start, the small optimum and its EM start.
    ``shared`` ends with where each row sits in the small model's layout and in the big model's, and the big
    layout's shape, when the two differ (a two-level null against a three-level model or one with AR(1)
    residuals, a linear regression against a random-intercept model), else None."""
    r, start_small, start_big = x
    key, sim, small, big, layouts = shared
    key_r = jax.random.fold_in(key, r)
    y, extra = simulate_one(key_r, sim), within_ss(key_r, sim)
    f_small = _fit(_with_spread(with_response(small, y), extra), structure_small, blocks_small, reml, start_small,
                   max_steps)
    embedded = _embed(f_small.theta, blocks_small, blocks_big, index)
    # The big structure at the small one's optimum (nested, as :func:`bootstrap_lrtest` checks).
    psi = structure_big.embed(structure_small, f_small.psi)
    y_big = y if layouts is None else jnp.zeros(layouts[2].shape).at[layouts[1]].set(y[layouts[0]])
    f_big = _fit(_with_spread(with_response(big, y_big), extra), structure_big, blocks_big, reml,
                 jnp.stack([jnp.concatenate([embedded, psi]), start_big]), max_steps)
    return f_small, f_big


def _rounds(fn: Callable[..., Any], inputs: tuple[np.ndarray, ...], shared: Any, resume: Callable[[Any, Any], Any],
            *, chunk: int | None, per_replicate_bytes: int, **kw: Any) -> Any:
    """Run ``fn`` over ``inputs`` in rounds of :data:`FIRST_ROUND_STEPS` Newton steps: after each, the replicates
    it left exhausted are resumed from where they stopped (``resume(inputs, outputs)`` gives their inputs),
    until none is left or :data:`MAX_ROUNDS` have run. Resumed rounds share one compiled program with a small
    chunk (:data:`RESUME_CHUNK` per device). Each replicate's answer depends only on its own inputs, never on
    who shares its chunk."""
    n = len(jax.tree.leaves(inputs)[0])
    size = _chunk_size(per_replicate_bytes, n, jax.local_device_count(), chunk)
    kw = dict(kw, chunk=size, per_replicate_bytes=per_replicate_bytes, max_steps=FIRST_ROUND_STEPS)
    out = map_batched(fn, inputs, shared, **kw)
    kw.update(progress=False, chunk=min(size, RESUME_CHUNK * jax.local_device_count()))
    for _ in range(MAX_ROUNDS - 1):
        exhausted = np.zeros(n, bool)
        for rep in jax.tree.leaves(out, is_leaf=lambda a: isinstance(a, Replicate)):
            exhausted |= np.asarray(rep.exhausted)
        if not exhausted.any():
            break
        again = jax.tree.map(lambda a, m=exhausted: a[m], resume(inputs, out))
        out = jax.tree.map(lambda a, b, m=exhausted: _put(a, m, b), out, map_batched(fn, again, shared, **kw))
    return out


def _put(a: np.ndarray, mask: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[mask] = b
    return a


# ---- chunked, sharded execution ------------------------------------------------------------------------
#: Replicates per device in one CPU chunk: throughput per replicate is nearly flat beyond it (the HSB bootstrap
#: cost 3.0 ms per replicate in chunks of 64, 2.8 in chunks of 128), and a smaller chunk wastes less on the
#: padding of the last one.
CPU_CHUNK = 64


def _chunk_size(per_replicate: int, n: int, n_devices: int, requested: int | None) -> int:
    """Replicates per chunk: what a quarter of the device memory holds (at most 8,192; on CPU
    :data:`CPU_CHUNK` per device), rounded to a power of two so that runs of different sizes share compiled
    programs, and to a multiple of the device count."""
    if requested is None:
        device = jax.local_devices()[0]
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        limit = (stats or {}).get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        fit = max(1, int(limit * n_devices // 4 // max(per_replicate, 1)))
        cap = CPU_CHUNK * n_devices if device.platform == "cpu" else 8192
        requested = min(1 << max(0, math.ceil(math.log2(max(n, 1)))), 1 << int(math.log2(fit)), cap)
    return max(n_devices, -(-int(requested) // n_devices) * n_devices)


class _Progress:
    """A one-line progress bar on stderr, shown only on a terminal."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total = label, total
        self.enabled = enabled and sys.stderr.isatty()

    def update(self, done: int) -> None:
        if self.enabled:
            filled = int(30 * done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{self.total:,}")
            sys.stderr.flush()
            if done >= self.total:
                sys.stderr.write("\n")


def map_batched(fn: Callable[..., Any], inputs: Any, shared: Any, *, chunk: int | None = None,
                per_replicate_bytes: int = 1 << 20, progress: bool = True, label: str = "replicates",
                **static: Any) -> Any:
    """``vmap(fn)`` over the leading axis of ``inputs`` (a pytree), in chunks sharded across the local devices.

    ``fn(x, shared, **static)`` maps one input to a pytree of arrays; ``shared`` (a pytree of arrays) is
    replicated to every device and ``static`` (hashable) is compiled in. Returns the stacked outputs as
    NumPy arrays.
    """
    _config.relieve_map_pressure()
    inputs = jax.tree.map(np.asarray, inputs)
    n = jax.tree.leaves(inputs)[0].shape[0]
    devices = jax.local_devices()
    size = _chunk_size(per_replicate_bytes, n, len(devices), chunk)
    mesh = Mesh(np.array(devices), ("replicates",))
    run = _sharded(fn, tuple(sorted(static.items())), mesh)
    bar = _Progress(label, n, progress)
    parts = []
    sharding = jax.sharding.NamedSharding(mesh, P("replicates"))
    shared = jax.device_put(shared, jax.sharding.NamedSharding(mesh, P()))  # a copy on every device
    for start in range(0, n, size):
        # The last chunk is padded (with copies of its last input) to the compiled shape.
        part = jax.tree.map(lambda a: np.concatenate([a[start:start + size],
                                                      np.repeat(a[min(start + size, n) - 1:][:1],
                                                                max(0, start + size - n), axis=0)]), inputs)
        out = run(jax.device_put(part, sharding), shared)
        parts.append(jax.tree.map(lambda a, k=min(size, n - start): np.asarray(a)[:k], out))
        bar.update(min(start + size, n))
    return jax.tree.map(lambda *a: np.concatenate(a), *parts)


@lru_cache(maxsize=32)
def _sharded(fn: Callable[..., Any], static: tuple[tuple[str, Any], ...], mesh: Mesh) -> Callable[..., Any]:
    """The jitted, sharded batch of ``fn``: each device vmaps over its own slice of the inputs."""
    local = jax.vmap(partial(fn, **dict(static)), in_axes=(0, None))
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("replicates"), P()), out_specs=P("replicates"),
                                 check_vma=False))


# ---- front ends --------------------------------------------------------------------------------------
def _rows(design: Design, frequencies: bool = False) -> tuple[Rows, np.ndarray | None]:
    """``design``'s rows for simulation and refits, scaled by √(aᵢfᵢ) (:func:`~jaxhlm.stats.row_scale`): a
    weighted model is then drawn from and refitted as an unweighted one, a response y as √(af)·y. Returns the
    rows and that scale (None without weights). Frequency weights only for the bootstrap (``frequencies``),
    which draws each row's spread within (:func:`within_ss`): a response given per row cannot hold it."""
    design.require_independent("simulate, refit_batch and the parametric bootstrap", (Strata,))
    if design.encoding is not None and design.encoding.spec.sampled:
        raise DataError("simulate, refit_batch and the parametric bootstrap are for fits without sampling weights: "
                        "a pseudo-likelihood has no model of the sample to draw from, and the batched refits carry "
                        "no level weights; fit each response with jaxhlm.fit")
    rows = design.rows()
    if rows.freq is not None and not frequencies:
        raise DataError("simulate and refit_batch do not take frequency weights: a row that stands for f "
                        "observations holds one response, not f; the parametric bootstrap (bootstrap_lrtest, "
                        "conf_int(method='bootstrap')) does, or expand the rows (data.loc[data.index.repeat(data[w])])")
    return rows.whitened(frequencies=True), row_scale(rows.weights, rows.freq)


def _shared(design: Design, rows: Rows) -> Shared:
    """``design``'s rows (``rows`` = :func:`_rows`, rebuilt once by the caller; padded slabs for two levels,
    flat for three) and its bucket-padded statistics (packed for two levels)."""
    if design.serial is not None:
        serial = design_stats(design)
        return Shared(serial, serial)
    if design.inner is None:
        return Shared(rows.grouped(design.n_groups), design_stats(design, packed=True))
    q1 = len(design.level_effects[0])
    flat = FlatRows(rows.X, rows.Z[:, :q1], rows.Z[:, q1:], rows.group, rows.cluster, design.stats.counts,
                    design.stats.inner.counts)
    return Shared(jax.tree.map(jnp.asarray, flat), design_stats(design))


def _per_replicate_bytes(*designs: Design) -> int:
    def size(d: Design) -> int:
        rows = d.nobs if d.inner is not None else d.n_groups * int(d.group_sizes.max())
        if d.serial is not None:  # the rows, whitened and differentiated at every evaluation of the fit
            rows *= 4 * (len(d.fe_names) + len(d.re_names) + 1) * (cov.n_cov_params(d.blocks) + 1)
        groups = d.n_groups + (0 if d.inner is None else len(d.stats.inner.counts))
        out = (_BYTES_PER_ROW * rows
               + _BYTES_PER_GROUP_ENTRY * groups * len(d.re_names) * (len(d.re_names) + len(d.fe_names)))
        if d.crossed:  # the groups' products with the dense block, and the block, per θ direction of the Hessian
            q2, inner, tail = d.inner.n_effects, d.stats.inner, len(d.fe_names) + 1
            slots = q2 * inner.ZtW.shape[2]  # every level, or a sparse crossing's slots
            entries = (d.n_groups * (len(d.re_names) - q2) * (slots + tail) + (q2 * len(d.inner.labels) + tail)**2
                       + (0 if inner.touched is None else d.n_groups * slots**2))
            out += _BYTES_PER_DENSE_ENTRY * cov.n_cov_params(d.blocks) * entries
        return out

    return sum(size(d) for d in designs)


def _simulator(result: MixedResult, data: GroupedData | FlatRows | SerialRows, rows: Rows) -> Simulator:
    """Draws from ``result``'s fit on its rows (``rows`` from :func:`_rows`, laid out as ``data``)."""
    lam = np.tensordot(result.theta, cov.templates(result.design.blocks), 1)
    within = result.nobs - len(rows.y)
    chol = None
    if isinstance(data, SerialRows):
        chol = jnp.linalg.cholesky(result.design.residual.correlation(data, jnp.asarray(result.psi)))
    return Simulator(data, jnp.asarray(result.fit.beta), jnp.asarray(lam), jnp.sqrt(jnp.asarray(result.scale)),
                     jnp.asarray(float(within)) if within else None, chol)


def _response_shape(data: GroupedData | FlatRows | SerialRows) -> tuple[int, ...]:
    """The shape of one response laid out like ``data``."""
    if isinstance(data, FlatRows):
        return data.group.shape
    return data.y.shape if isinstance(data, SerialRows) else data.weights.shape


def _layout(design: Design, rows: Rows, data: GroupedData | FlatRows | SerialRows) -> tuple[np.ndarray, ...]:
    """Where each estimation-sample row sits in ``data``'s layout of a response: (group, slot) in slabs (in time
    order within groups for :class:`SerialRows`), or its index among flat rows."""
    if isinstance(data, SerialRows):
        return design.serial_slots
    if isinstance(data, FlatRows):
        return (np.arange(len(rows.y)),)
    return slots(rows.group, design.n_groups)[:2]


def _key(seed: int | Array) -> Array:
    return jax.random.PRNGKey(seed) if isinstance(seed, (int, np.integer)) else jnp.asarray(seed)


@partial(jax.jit, static_argnames="n")
def _simulate(key: Array, sim: Simulator, n: int) -> tuple[Array, Array]:
    def one(r: Array) -> tuple[Array, Array]:
        key_r = jax.random.fold_in(key, r)
        return simulate_one(key_r, sim), within_ss(key_r, sim)

    return jax.vmap(one)(jnp.arange(n))


def _draws(result: MixedResult, rows: Rows, shared: Shared, n: int, seed: int | Array) -> tuple[Array, Array]:
    """``n`` whitened responses drawn from ``result`` (n, N), rows in the estimation sample's order, and their
    sums of squares within rows (n,) (:func:`within_ss`)."""
    draws, within = _simulate(_key(seed), _simulator(result, shared.data, rows), int(n))
    return draws[(slice(None), *_layout(result.design, rows, shared.data))], within


def simulate(result: MixedResult, n: int, seed: int | Array = 0) -> Array:
    """``n`` responses drawn from the fitted model (random effects and residuals), as an (n, N) array.

    Rows follow the estimation sample. Replicate r is drawn from ``fold_in(key(seed), r)``: the same seed
    gives the same draws, and :func:`bootstrap_lrtest` with that seed fits exactly these responses. With
    precision weights aᵢ, row i's residual has variance σ²/aᵢ.
    """
    d = result.design
    rows, scale = _rows(d)
    draws, _ = _draws(result, rows, _shared(d, rows), n, seed)
    return draws if scale is None else draws / jnp.asarray(scale)


@dataclass(frozen=True)
class BatchFit:
    """Refits of one model to many responses: arrays with one row per response, and :meth:`to_frame`."""

    llf: np.ndarray
    beta: np.ndarray  # (k, p), columns named by fe_names
    varcomp: np.ndarray  # (k, r): the random-effects var/cov entries, then var(Residual)
    sd_corr: np.ndarray  # (k, r): the same as standard deviations and correlations (estat sd), then σ
    sigma2: np.ndarray
    theta: np.ndarray
    converged: np.ndarray
    singular: np.ndarray
    fe_names: tuple[str, ...]
    re_labels: tuple[str, ...]

    def select(self, rows: np.ndarray) -> BatchFit:
        """These refits at ``rows`` (an index or a boolean mask over the responses)."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)
                                if isinstance(getattr(self, f.name), np.ndarray)})

    def to_frame(self) -> pd.DataFrame:
        cols = {"llf": self.llf, "converged": self.converged, "singular": self.singular}
        cols.update({name: self.beta[:, j] for j, name in enumerate(self.fe_names)})
        cols.update({label: self.varcomp[:, j] for j, label in enumerate(self.re_labels)})
        return pd.DataFrame(cols)


def _batch_fit(rep: Replicate, design: Design) -> BatchFit:
    p = len(design.fe_names)
    theta = np.asarray(rep.theta)
    lam = np.einsum("kt,tij->kij", theta, cov.templates(design.blocks))
    sigma2 = np.asarray(rep.sigma2)
    sigma = sigma2[:, None, None] * lam @ np.swapaxes(lam, 1, 2)
    structure = design.residual  # its rows (:attr:`~jaxhlm.design.Design.residual_labels`), at their coordinates
    u = np.asarray(jax.vmap(structure.join)(0.5 * jnp.log(jnp.asarray(sigma2)), jnp.asarray(rep.psi)))
    tail = np.asarray(jax.vmap(structure.values)(jnp.asarray(u)))
    return BatchFit(
        llf=-0.5 * (np.asarray(rep.deviance) - design.stats.log_weights), beta=np.asarray(rep.beta)[:, :p],
        varcomp=np.column_stack([cov.pick(design.blocks, sigma), tail]),
        sd_corr=np.column_stack([cov.pick(design.blocks, cov.sd_corr_matrix(sigma)),
                                 np.asarray(jax.vmap(structure.sd_values)(jnp.asarray(u)))]),
        sigma2=sigma2, theta=theta,
        converged=np.asarray(rep.converged), singular=np.asarray(rep.singular), fe_names=design.fe_names,
        re_labels=tuple(design.qualify(cov.labels(design.blocks, design.re_names) + list(design.residual_labels))),
    )


def _response_stats(design: Design, rows: Rows, Y: np.ndarray, base: GroupStats | NestedStats
                    ) -> dict[str, np.ndarray]:
    """The response parts of the statistics of the k columns of Y, by field: Zᵀy per group (k, m, q) (and a
    three-level model's Wᵀy per cluster), Xᵀy (k, p) and yᵀy (k,), zero-padded to ``base``'s shapes.

    Why here, on the host, rather than per replicate on the device: a column enters the fit only through these,
    which are a few hundred numbers, while its padded (groups × largest group) layout is tens of thousands;
    building and shipping that layout cost more than the refits themselves.
    """
    n = len(rows.y)
    at = np.arange(n)
    if isinstance(base, SerialRows):  # the responses themselves, in the rows' slabs
        out = np.zeros((Y.shape[1],) + base.y.shape)
        out[(slice(None), *design.serial_slots)] = Y.T
        return {"y": out}

    def per_group(design_cols: np.ndarray, codes: np.ndarray, m: int, padded: int) -> np.ndarray:
        # (k, padded, q): one sparse product per effect, no (n, k) temporaries
        out = np.stack([sparse.csr_array((design_cols[:, j], (codes, at)), shape=(m, n)) @ Y
                        for j in range(design_cols.shape[1])], axis=-1)
        return np.pad(np.moveaxis(out, 1, 0), ((0, 0), (0, padded - m), (0, 0)))

    q1 = len(design.level_effects[0])
    out = {"Zty": per_group(rows.Z[:, :q1], rows.group, design.n_groups, base.Zty.shape[0]),
           "Xty": np.pad((rows.X.T @ Y).T, ((0, 0), (0, base.Xty.shape[0] - rows.X.shape[1]))),
           "yty": np.einsum("nk,nk->k", Y, Y)}
    if design.inner is not None:
        out["Wty"] = per_group(rows.Z[:, q1:], rows.cluster, len(design.stats.inner.counts), base.Wty.shape[0])
    return out


def refit_batch(result: MixedResult, Y: Any, *, chunk: int | None = None, progress: bool = True) -> BatchFit:
    """Refit ``result``'s model (same design, same random-effects structure) to each column of ``Y``.

    ``Y`` is (N, k): one response per column, rows in the estimation sample's order (N = ``result.nobs``).
    """
    d = result.design
    rows, scale = _rows(d)
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or Y.shape[0] != d.nobs:
        raise DataError(f"Y must have one row per observation of the fit ({d.nobs:,}) and one column per "
                        f"response; got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise DataError("Y has missing or infinite values; refit_batch needs complete responses")
    return _refit(result, rows, _shared(d, rows), Y if scale is None else Y * scale[:, None], 0.0, chunk, progress)


def bootstrap_fits(result: MixedResult, B: int, seed: int = 0, *, chunk: int | None = None, progress: bool = False
                   ) -> BatchFit:
    """Refits of ``B`` responses drawn from ``result`` (:func:`simulate`'s draws for the same seed): the
    parametric bootstrap of its estimates. A fit with frequency weights is drawn as its expanded rows would be,
    each row's observations as their mean and their spread about it (:func:`within_ss`)."""
    d = result.design
    rows, _ = _rows(d, frequencies=True)
    shared = _shared(d, rows)
    draws, within = _draws(result, rows, shared, B, seed)
    return _refit(result, rows, shared, np.asarray(draws).T, np.asarray(within), chunk, progress)


def _refit(result: MixedResult, rows: Rows, shared: Shared, Y: np.ndarray, within: np.ndarray | float,
           chunk: int | None, progress: bool) -> BatchFit:
    """Refits of ``result``'s model to the whitened responses Y (N, k), with ``within`` added to each one's yᵀy."""
    d = result.design
    fitted = np.concatenate([result.theta, np.zeros(0) if result.psi is None else result.psi])
    start = np.tile(fitted, (Y.shape[1], 1))  # the fitted (θ̂, ψ̂), where lme4's refit starts too
    stats = _response_stats(d, rows, Y, shared.base)
    if "yty" in stats:  # rows in time order have no frequency weights, so no spread within rows
        stats["yty"] = stats["yty"] + within
    rep = _rounds(_refit_one, (stats, start), shared, lambda x, out: (x[0], out.start), chunk=chunk,
                  per_replicate_bytes=_per_replicate_bytes(d), progress=progress, label="refits",
                  blocks=d.blocks, reml=result.reml, structure=d.residual)
    return _batch_fit(rep, d)


@dataclass(frozen=True)
class BootstrapLRTest:
    """A parametric-bootstrap LR test of nested models, with the asymptotic test beside it."""

    statistic: float  # observed LR
    pvalue: float  # (1 + #{LR* >= LR}) / (B_ok + 1) over the replicates whose refits converged
    replicates: np.ndarray  # the B bootstrap LR statistics (NaN where a refit failed)
    failed: int  # replicates with a failed or non-converged refit (left out of the p-value)
    df: int
    asymptotic_pvalue: float  # chi2(df) upper tail, as lrtest prints
    chibar_pvalue: float | None  # chibar2(01) when the models differ by one variance parameter
    seed: int | None
    small_fits: BatchFit
    big_fits: BatchFit
    assumption: str = ""  # "A nested within B" when the models were named

    @property
    def B(self) -> int:
        return len(self.replicates)

    def __str__(self) -> str:
        ok = self.B - self.failed
        lines = [
            "Parametric bootstrap likelihood-ratio test (jaxhlm extension of lrtest)",
            *([f"Assumption: {self.assumption}"] if self.assumption else []),
            "",
            f" LR chi2({self.df}) = {self.statistic:>6.2f}",
            f"Prob > chi2 = {self.asymptotic_pvalue:.4f}   (asymptotic)",
        ]
        if self.chibar_pvalue is not None:
            lines.append(f"Prob >= chibar2 = {self.chibar_pvalue:.4f}   (asymptotic, 50:50 mixture)")
        lines += [f"Bootstrap Prob >= LR = {self.pvalue:.4f}   ({ok:,} replicates"
                  + (f"; seed {self.seed}" if self.seed is not None else "") + ")"]
        if self.failed:
            lines.append(f"Note: {self.failed:,} of {self.B:,} replicates had a refit that did not converge; "
                         "they are left out of the bootstrap p-value.")
        return "\n".join(lines)


def _nesting(ds: Design, db: Design, xs: np.ndarray, xb: np.ndarray) -> tuple[int, ...]:
    """Where the small model's random effects sit among the big model's; refuses models that are not nested
    (``xs``, ``xb``: their fixed-effects designs)."""
    if not set(ds.re_keys) <= set(db.re_keys):  # (level, effect) pairs: crossed factors may come in either order
        shown = [", ".join(f"{name} by {level}" for level, name in d.re_keys) for d in (ds, db)]
        raise ComparisonError("the bootstrap needs nested models: the smaller model's random effects "
                              f"({shown[0]}) must all be in the bigger model's ({shown[1]})")
    coef, *_ = np.linalg.lstsq(xb, xs, rcond=None)
    if np.linalg.norm(xb @ coef - xs) > 1e-8 * max(np.linalg.norm(xs), 1.0):
        raise ComparisonError("the bootstrap needs nested models: the smaller model's fixed effects must lie in "
                              "the span of the bigger model's")
    return tuple(db.re_keys.index(k) for k in ds.re_keys)


def bootstrap_lrtest(small: MixedResult, big: MixedResult, B: int = 1000, seed: int = 0, *,
                     names: tuple[str, str] | None = None, chunk: int | None = None, progress: bool = True
                     ) -> BootstrapLRTest:
    """Parametric bootstrap of the LR test of ``small`` nested in ``big`` (either order; ``names`` label them).

    Simulates ``B`` responses from ``small`` (the null), refits both models to each, and compares the observed
    LR with the B replicates: p = (1 + #{LR* ≥ LR}) / (B + 1). The bigger model starts from the smaller
    one's optimum whenever that beats its own warm start, so no replicate's LR is negative. Refits that did
    not converge are counted in ``failed`` and left out; the asymptotic p-values are reported beside.
    """
    observed = lrtest(small, big, names=names)  # same sample, same method, and which model is the smaller
    if small.df_modelwc > big.df_modelwc:
        small, big = big, small
    ds, db = small.design, big.design
    (rows_small, _), (rows_big, _) = _rows(ds, frequencies=True), _rows(db, frequencies=True)
    index = _nesting(ds, db, rows_small.X, rows_big.X)
    if db.residual.embed(ds.residual, jnp.zeros(ds.residual.n_params)) is None:
        raise ComparisonError("the bootstrap needs nested models: the smaller model's residual structure must be "
                              "the bigger model's, a process of lower order (ar 1 within ar 2, ma 1 within ma 2), "
                              "or independent residuals within correlated ones")
    shared_small, shared_big = _shared(ds, rows_small), _shared(db, rows_big)
    layouts = None
    # The layouts of a response differ with the kind of data, or with its groups (a linear null model's are its rows).
    if type(shared_big.data) is not type(shared_small.data) or ds.group_name != db.group_name:  # noqa: E721
        layouts = (tuple(map(jnp.asarray, _layout(ds, rows_small, shared_small.data))),
                   tuple(map(jnp.asarray, _layout(db, rows_big, shared_big.data))),
                   jnp.zeros(_response_shape(shared_big.data)))
    shared = (_key(seed), _simulator(small, shared_small.data, rows_small), shared_small, shared_big, layouts)
    B = int(B)
    n_small, n_big = (cov.n_cov_params(d.blocks) + d.residual.n_params for d in (ds, db))
    inputs = (np.arange(B), np.zeros((B, n_small)), np.zeros((B, n_big)))
    reps = _rounds(_lr_one, inputs, shared, lambda x, out: (x[0], out[0].start, out[1].start), chunk=chunk,
                   per_replicate_bytes=_per_replicate_bytes(ds, db), progress=progress, label="bootstrap",
                   blocks_small=ds.blocks, blocks_big=db.blocks, index=index, reml=small.reml,
                   structure_small=ds.residual, structure_big=db.residual)
    rs, rb = reps
    ok = np.asarray(rs.converged) & np.asarray(rb.converged)
    lr = np.asarray(rs.deviance) - np.asarray(rb.deviance)
    # The big model starts at the small one's optimum, so LR* >= 0 up to the rounding of two deviances of
    # about 10⁴ (1e-9 here); a larger negative value would mean a failed fit and is counted as one.
    rounding = 1e-10 * np.abs(np.asarray(rs.deviance))
    ok &= lr >= -rounding
    lr = np.where(ok, np.maximum(lr, 0.0), np.nan)
    hits = int(np.sum(lr[ok] >= observed.statistic - 1e-8 * max(1.0, observed.statistic)))
    df = observed.df
    extra_variance = df == 1 and cov.n_cov_params(db.blocks) - cov.n_cov_params(ds.blocks) == 1
    return BootstrapLRTest(
        statistic=observed.statistic, pvalue=(1 + hits) / (int(ok.sum()) + 1), replicates=lr,
        failed=int((~ok).sum()), df=df, asymptotic_pvalue=observed.pvalue,
        chibar_pvalue=0.5 * float(special.chdtrc(1, observed.statistic)) if extra_variance else None,
        seed=seed, small_fits=_batch_fit(rs, ds), big_fits=_batch_fit(rb, db), assumption=observed.assumption,
    )

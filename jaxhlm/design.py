"""Build a model's sufficient statistics from a :class:`ModelSpec` and data, chunk by chunk of rows.

This is one of the two places pandas lives (the other is rendering). It owns every data check: unknown
variables, listwise deletion of missing values, non-numeric columns, weights, too few groups, and exactly collinear
fixed-effect columns, which are dropped later-column-first (the constant kept first) with a note as Stata
does. The fixed part is either formulaic syntax (lme4-style formulas) or Stata factor-variable terms
(:mod:`jaxhlm.factor`); both yield the same :class:`~jaxhlm.factor.Coef` layout.

Data arrive as a DataFrame, a dict of arrays, an iterator of DataFrame chunks or a Parquet file, and every
kind goes through one loop: each chunk is encoded, its rows are reduced into a
:class:`~jaxhlm.stats.Accumulator`, and the rows are dropped. Whatever needs the whole sample (the levels of
factors, collinearity, the sorted group order) is decided at the end from the statistics, so a chunked fit
gives the one-shot fit's estimates. The design keeps no rows: :meth:`Design.rows` rebuilds them from an
in-memory source when batched refits need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, Union

import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import covariance as cov
from . import factor
from .errors import DataError, FormulaError
from .factor import CONSTANT, Coef, FixedTerms
from .formula import OBSERVATIONS, ModelSpec
from .residual import (AR, AR1, INDEPENDENT, MA, SLABS, ByStratum, Exchangeable, Exponential, Linear, Serial,
                       SerialRows, Strata, Structure, Toeplitz, Unstructured)
from .stats import (Accumulator, GroupedData, GroupStats, HostStats, Sampling, device_stats, inverse_permutation,
                    pad_groups, pad_host, pad_rows, row_scale, slots, stack_strata, total)

#: A column whose residual norm after projection on the kept columns is below this fraction of its own
#: norm is collinear (lme4's rank tolerance).
COLLINEARITY_TOL = 1e-7

#: Rows per chunk when a Parquet file is read.
PARQUET_BATCH_ROWS = 1 << 20

#: What :func:`build_design` reads: a DataFrame, a dict of equal-length arrays, an iterable of DataFrame
#: chunks (e.g. ``pandas.read_csv(path, chunksize=...)``) or the path of a Parquet file.
Data = Union[pd.DataFrame, Mapping[str, Any], Iterable[pd.DataFrame], str, os.PathLike]


@dataclass(frozen=True, eq=False)
class Rows:
    """The model's rows: y (N,), X (N, p), Z (N, q) and group codes (N,) in the estimation sample's order,
    with the row labels and places of the data they came from; a three-level model's cluster codes (N,) too; and the
    rows' precision and frequency weights when the model has them (:class:`~jaxhlm.stats.Accumulator`). With
    sampling weights, ``freq`` holds the rows' own (they count as frequencies do) and ``sampling`` all of them,
    their groups' and clusters' included."""

    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    group: np.ndarray
    index: pd.Index
    cluster: np.ndarray | None = None
    weights: np.ndarray | None = None
    freq: np.ndarray | None = None
    sampling: Sampling | None = None
    position: np.ndarray | None = None  # each row's place in the fitted data (its labels may repeat)

    @property
    def codes(self) -> tuple[np.ndarray, ...]:
        """Each row's group, and cluster, codes: one array per grouping level, outermost first."""
        return (self.group,) if self.cluster is None else (self.group, self.cluster)

    def subset(self, keep: np.ndarray) -> "Rows":
        """The rows where the mask ``keep`` is true."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return Rows(self.y[keep], self.X[keep], self.Z[keep], self.group[keep], self.index[keep], pick(self.cluster),
                    pick(self.weights), pick(self.freq),
                    None if self.sampling is None else Sampling(*map(pick, self.sampling)), pick(self.position))

    def group_weights(self, n_groups: int) -> np.ndarray:
        """The groups' (n_groups,) sampling weights, 1 without them (and for a group without rows here)."""
        v = np.ones(n_groups)
        if self.sampling is not None:
            v[self.group] = self.sampling.groups
        return v

    def whitened(self, frequencies: bool = False) -> "Rows":
        """The rows scaled by the square roots of their precision weights: an unweighted model (residual
        variance σ² on every row) with the same likelihood up to Σ fᵢ log aᵢ. Frequencies are kept, or with
        ``frequencies`` scaled in too (√(aᵢfᵢ): the cross-products of the expanded rows, one row each)."""
        scale = row_scale(self.weights, self.freq if frequencies else None)
        if scale is None:
            return self
        return dataclasses.replace(self, y=self.y * scale, X=self.X * scale[:, None], Z=self.Z * scale[:, None],
                                   weights=None, freq=None if frequencies else self.freq)

    def grouped(self, n_groups: int, group_weights: np.ndarray | None = None) -> GroupedData:
        """The rows, whitened, padded into one slab per group, their frequencies as observation weights, and the
        groups' sampling weights (``group_weights``, or those of the rows' groups): the array-level form."""
        r = self.whitened()
        v = self.group_weights(n_groups) if group_weights is None else group_weights
        return pad_groups(r.X, r.Z, r.y, r.group, n_groups, r.freq)._replace(group_weights=jnp.asarray(v))


@dataclass(frozen=True, eq=False)
class InnerLevel:
    """The inner grouping level of a three-level model: clusters (e.g. classes) nested in the groups (schools).
    Its statistics are ``Design.stats.inner``; its random effects are the last ``n_effects`` of the design's,
    and their covariance the last ``n_blocks`` blocks."""

    name: str  # as the model names it: Stata's level variable, lme4's grouping factor (a:b)
    labels: np.ndarray  # the clusters, each labelled by (group, cluster) values, in the statistics' order
    n_effects: int
    n_blocks: int
    crossed: bool = False  # a factor crossed with the groups, not nested in them: labelled by its own values


@dataclass(frozen=True, eq=False)
class Design:
    """The sufficient statistics of one model on one sample, plus the names and notes that describe them."""

    stats: HostStats  # fixed-effect columns as in fe_names, groups in group_labels order
    group_labels: np.ndarray
    coefs: tuple[Coef, ...]  # every fixed-effect column in display order, omitted and empty ones included
    re_names: tuple[str, ...]
    blocks: cov.Structure
    response: str
    group_name: str
    constant: str | None  # name of the constant column (excluded from the model Wald test), if any
    n_dropped: int = 0
    notes: tuple[str, ...] = field(default=())
    sample: str = ""  # fingerprint of the estimation sample's rows and response (lrtest compares them)
    encoding: "Encoding | None" = None  # how rows of data become rows of X and Z (for new data)
    source: pd.DataFrame | None = None  # the fitted data when it was in memory (for :meth:`rows`)
    inner: InnerLevel | None = None  # a three-level model's clusters
    #: Stata's residuals(independent, by()): each stratum's statistics (as ``stats``, whose rows they divide)
    #: and its value, in sorted order
    strata: tuple[HostStats, ...] | None = None
    strata_labels: np.ndarray | None = None
    residual: Structure = INDEPENDENT  # the residual covariance structure (:mod:`jaxhlm.residual`)
    #: with residuals correlated within series, the rows in time order within series (host arrays), which the
    #: structure whitens
    serial: SerialRows | None = None
    #: and each estimation-sample row's place in them: (group, position in the group's slab)
    serial_slots: tuple[np.ndarray, np.ndarray] | None = None

    def require_independent(self, what: str, refused: tuple[type, ...] = (Strata, Serial)) -> None:
        """Refuse ``what`` (plural) for a model whose residual structure is one of ``refused`` (by default any but
        σ²I), which it does not handle."""
        if not isinstance(self.residual, refused):
            return
        if isinstance(self.residual, Strata):
            by = self.encoding.spec.residual_by
            raise DataError(f"{what} are not available for a model with a residual variance per stratum (residuals "
                            f"by {by}); refit it without residuals_by to get them")
        if isinstance(self.residual, Serial):
            raise DataError(f"{what} are not available for a model with {self.residual.title} residuals; refit it "
                            "with independent residuals to get them")

    @property
    def residual_labels(self) -> tuple[str, ...]:
        """The names of the residual structure's parameters (:class:`~jaxhlm.residual.Structure`'s rows)."""
        by = self.encoding.spec.residual_by
        if isinstance(self.residual, Strata):
            return tuple(f"var(Residual[{by}={v}])" for v in self.strata_labels)
        if isinstance(self.residual, ByStratum):  # each stratum's rows, the stratum in brackets
            inner = _serial_labels(self.residual.inner)
            return tuple(f"{label[:-1]}[{by}={v}])" for v in self.strata_labels for label in inner)
        return _serial_labels(self.residual)

    @property
    def fe_names(self) -> tuple[str, ...]:
        """Names of the estimated fixed effects (the columns of X)."""
        return tuple(c.name for c in self.coefs if not c.status)

    @property
    def omitted(self) -> tuple[str, ...]:
        """Columns left out because they are collinear with others or identify no observations."""
        return tuple(c.name for c in self.coefs if c.status)

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)

    @property
    def n_clusters(self) -> int:
        """The inner level's clusters: a three-level model's, or the series of correlated residuals that an inner
        level without random effects names; 0 for none."""
        if self.serial is not None and len(self.serial.parent):
            return len(self.serial.y)
        return 0 if self.stats.inner is None else len(self.stats.inner.counts)

    @property
    def crossed(self) -> bool:
        """Whether the second grouping level is a factor crossed with the first (not nested in it)."""
        return self.inner is not None and self.inner.crossed

    @property
    def level_names(self) -> tuple[str, ...]:
        """The grouping levels' names, outermost first."""
        return (self.group_name,) if self.inner is None else (self.group_name, self.inner.name)

    @property
    def block_levels(self) -> tuple[int, ...]:
        """The grouping level (index into :attr:`level_names`) of each covariance block."""
        n_inner = 0 if self.inner is None else self.inner.n_blocks
        return (0,) * (len(self.blocks) - n_inner) + (1,) * n_inner

    @property
    def level_effects(self) -> tuple[tuple[str, ...], ...]:
        """The random effects of each grouping level, outermost first (``re_names`` holds them in this order)."""
        if self.inner is None:
            return (self.re_names,)
        q1 = len(self.re_names) - self.inner.n_effects
        return self.re_names[:q1], self.re_names[q1:]

    @property
    def re_keys(self) -> tuple[tuple[str, str], ...]:
        """Each random effect as (its grouping level, its name): a three-level model may have ``_cons`` twice."""
        return tuple((level, name) for level, names in zip(self.level_names, self.level_effects) for name in names)

    def qualify(self, labels: Sequence[str]) -> list[str]:
        """Names of the variance parameters (``labels`` as the random-effects table prints them, ``var(Residual)``
        last) for indexing: in a three-level model with the level in brackets, as Stata's multilevel commands
        name them (``var(_cons[school])``, ``var(_cons[school>class])``; a level named ``school:class`` already
        says where it is, and a crossed factor is named alone: ``var(_cons[item])``), since both levels may have a
        ``var(_cons)``."""
        if self.inner is None:
            return list(labels)
        names = self.level_names
        paths = [name if ":" in name or self.crossed else ">".join(names[:k + 1]) for k, name in enumerate(names)]
        levels = [level for b, level in zip(self.blocks, self.block_levels) for _ in range(b.n_theta)]
        return [f"{lab[:-1]}[{paths[level]}])" for lab, level in zip(labels, levels)] + list(labels[len(levels):])

    @property
    def level_sizes(self) -> tuple[np.ndarray, ...]:
        """Observations in each group of each level, outermost first."""
        return (self.stats.counts,) + (() if self.inner is None else (self.stats.inner.counts,))

    @property
    def group_sizes(self) -> np.ndarray:
        return self.stats.counts

    @property
    def nobs(self) -> int:
        return self.stats.n

    def rows(self) -> Rows:
        """The rows behind the statistics (for simulation, batched refits, fitted values and influence), rebuilt
        from the fitted data."""
        if self.source is None or self.encoding is None:
            raise DataError("this model was fitted from data read in chunks, so its rows are not at hand; fit it "
                            "from a DataFrame (or a dict of arrays) to simulate from it, refit it in batches or "
                            "compute its fitted values, influence or robust standard errors")
        rows, digest = self.encoding.sample_rows(self.source)
        if digest != self.encoding.digest:
            raise DataError("the data changed after the fit; refit the model before simulating from it")
        return rows

    def predictors(self, data: pd.DataFrame, random: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """(complete, X, Z, codes per level) for new rows, encoded as the fit encoded its data
        (:class:`Encoding`)."""
        if self.encoding is None:
            raise DataError("this model has no encoding of its variables to apply to new data")
        return self.encoding.predictors(data, random)


def _numeric(data: pd.DataFrame, name: str, role: str) -> np.ndarray:
    col = data[name]
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(col):
        raise DataError(
            f"the {role} {name!r} is not numeric (dtype {col.dtype}); recode it as numbers"
            + (" or use it in the fixed part as C(" + name + ")" if role == "random-effect variable" else "")
        )
    return col.to_numpy(dtype=float)


@lru_cache(maxsize=256)
def fixed_variables(fixed: str | FixedTerms) -> frozenset[str]:
    """The data's variables that the fixed part reads."""
    if isinstance(fixed, FixedTerms):
        return fixed.variables
    import formulaic

    try:
        return frozenset(formulaic.Formula(fixed).required_variables)
    except Exception as exc:  # formulaic's parser errors are of many types
        raise FormulaError(f"cannot parse the fixed part {fixed!r}: {exc}") from None


#: formulaic's name of the constant column
CONSTANT_FORMULA = "Intercept"


class _Formulaic:
    """Encodes chunks with formulaic: the first chunk fixes the encoding (levels, transform state)."""

    def __init__(self, fixed: str):
        self.fixed = fixed
        self.spec: Any = None
        self.names: list[str] = []
        self.frozen = False  # set by layout(): later data is new data for prediction, not another chunk

    def columns(self, frame: pd.DataFrame) -> np.ndarray:
        import formulaic
        from formulaic.errors import DataMismatchWarning

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DataMismatchWarning)
                if self.spec is None:
                    X = formulaic.model_matrix(self.fixed, frame, na_action="raise")
                    self.spec, self.names = X.model_spec, [str(c) for c in X.columns]
                else:
                    X = self.spec.get_model_matrix(frame, na_action="raise")
        except DataMismatchWarning as exc:
            if self.frozen:
                raise DataError(f"the new data has a level the fitted model does not know, so it has no estimated "
                                f"effect ({exc})") from None
            raise DataError(f"the data has a level its encoding does not know ({exc}). Formula syntax encodes "
                            "data read in chunks as it encoded the first chunk: give categorical columns all their "
                            "levels up front (a pandas CategoricalDtype, e.g. read_csv(..., dtype={...})), use "
                            "Stata syntax, or read the data at once") from None
        except Exception as exc:  # formulaic's errors are of many types
            raise FormulaError(f"cannot build the fixed-effects design from {self.fixed!r}: {exc}") from None
        return np.asarray(X, dtype=float)

    def check_chunked(self) -> None:
        """Called when a second chunk arrives: what formulaic learned from the first must hold for all."""
        if self.spec is not None and self.spec.transform_state:
            raise DataError(f"{', '.join(self.spec.transform_state)} depend on the whole sample, but data read in "
                            "chunks would compute them from the first chunk alone; compute the column beforehand")

    def layout(self) -> list[tuple[int | None, Coef]]:
        self.frozen = True
        return [(j, Coef(name, order=name.count(":") + 1)) for j, name in enumerate(self.names)]

    def constant(self) -> str | None:
        return CONSTANT_FORMULA if CONSTANT_FORMULA in self.names else None


class _Factors:
    """Encodes chunks of Stata factor-variable terms: one column per cell of the levels seen so far (base cells
    included), so a level first seen in a late chunk only adds columns; the layout is chosen at the end."""

    def __init__(self, fixed: FixedTerms):
        self.fixed = fixed
        self.factors = {v.name: v for t in fixed.terms for v in t.vars if v.factor}
        self.levels: dict[str, np.ndarray] = {name: np.zeros(0, np.int64) for name in self.factors}
        self.counts: dict[str, dict[int, int]] = {name: {} for name in self.factors}
        self.cells: list[factor.Cell] = []
        self.observed: dict[factor.Cell, bool] = {}
        self.frozen = False  # set by layout(): rows rebuilt later are encoded without learning from them

    def columns(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.frozen:
            self._learn(frame)
        # Column 0 is the constant (all ones; unused without one), then the cells in order of first
        # appearance: a later chunk only appends columns, as the Accumulator requires.
        X = np.empty((len(frame), 1 + len(self.cells)))
        X[:, 0] = 1.0
        for j, cell in enumerate(self.cells, start=1):
            X[:, j], seen = factor.cell_column(self.fixed, cell, frame)
            if not self.frozen:
                self.observed[cell] = self.observed.get(cell, False) or seen
        return X

    def _learn(self, frame: pd.DataFrame) -> None:
        for name, v in self.factors.items():
            self.levels[name] = np.union1d(self.levels[name], factor.levels(frame, v))
            for level, c in frame[name].astype(float).value_counts().items():
                self.counts[name][int(level)] = self.counts[name].get(int(level), 0) + int(c)
        known = set(self.cells)
        self.cells += [c for c in factor.cells(self.fixed, self.levels) if c not in known]

    def check_chunked(self) -> None:
        """Levels may grow from chunk to chunk (see the class docstring): nothing to check."""

    def check_known(self, frame: pd.DataFrame) -> None:
        """New data for prediction: every factor level must be one the fit estimated (or its base)."""
        for name, v in self.factors.items():
            new = np.setdiff1d(factor.levels(frame, v), self.levels[name])
            if new.size:
                raise DataError(f"level {new[0]} of {name!r} does not occur in the estimation sample, so the model "
                                f"has no effect for it (levels: {', '.join(map(str, self.levels[name]))})")

    def layout(self) -> list[tuple[int | None, Coef]]:
        self.frozen = True
        index = {cell: j for j, cell in enumerate(self.cells, start=1)}
        rows = []
        for cell, coef in factor.layout(self.fixed, self.levels, self.counts):
            if cell is None:
                rows.append((0, coef))
            elif self.observed.get(cell, False):
                rows.append((index[cell], coef))
            else:
                rows.append((None, Coef(coef.name, coef.group, coef.level, coef.order, "empty")))
        return rows

    def constant(self) -> str | None:
        return CONSTANT if self.fixed.constant else None


def _check_columns(spec: ModelSpec, columns: list[str], fixed_vars: frozenset[str]) -> None:
    present = set(columns)

    def missing(names, what: str) -> None:
        absent = sorted(n for n in names if n not in present)
        if absent:
            listing = ", ".join(columns[:20])
            raise FormulaError(
                f"{what} {', '.join(map(repr, absent))} not found in the data; available columns: {listing}"
            )

    missing([spec.response], "response")
    missing(list(dict.fromkeys(v for key in spec.level_keys for v in key if v != OBSERVATIONS)), "grouping variable")
    missing([n for t in spec.random for n in t.slopes], "random-effect variable")
    missing(fixed_vars, "variable")
    missing([n for n in (spec.weights, spec.freq_weights, spec.pweights, *spec.level_pweights) if n is not None],
            "weight variable")
    missing([spec.residual_by] if spec.residual_by is not None else [], "residual-variance variable")
    missing([spec.residual_time] if spec.residual_time is not None else [], "time variable")
    missing([spec.cluster] if spec.cluster is not None else [], "cluster variable")


def _independent(R: np.ndarray, order: list[int]) -> set[int]:
    """Columns kept when each, in ``order``, is dropped if it lies within tolerance of the span of those kept
    before it. ``R`` is X's triangular factor: the last diagonal entry of the factor of R[:, kept + [j]] is
    column j's distance from the span of the kept columns, exactly as on X."""
    norms = np.sqrt(np.sum(R * R, axis=0))
    keep: list[int] = []
    for j in order:
        resid = abs(np.linalg.qr(R[:, keep + [j]], mode="r")[-1, -1])
        if norms[j] > 0 and resid > COLLINEARITY_TOL * norms[j]:
            keep.append(j)
    return set(keep)


def used_columns(spec: ModelSpec, columns: Iterable[Any]) -> list[str]:
    """The columns the model reads, after checking that they exist (a :class:`FormulaError` names any absent)."""
    fixed_vars = fixed_variables(spec.fixed)
    _check_columns(spec, [str(c) for c in columns], fixed_vars)
    return list(dict.fromkeys([spec.response, *(v for key in spec.level_keys for v in key if v != OBSERVATIONS),
                               *[n for t in spec.random for n in t.slopes],
                               *sorted(fixed_vars),
                               *(n for n in (spec.weights, spec.freq_weights, spec.residual_by, spec.residual_time,
                                             spec.cluster, spec.pweights, *spec.level_pweights) if n)]))


def read_columns(spec: ModelSpec, columns: Iterable[Any]) -> list[str]:
    """Every column the model reads: :func:`used_columns` and the variables of its ``if`` qualifier (which select
    rows but are not required to be present in them)."""
    used = used_columns(spec, columns)
    return used + [v for v in (spec.subset.variables if spec.subset else []) if v not in used]


def fingerprint(data: pd.DataFrame, columns: list[str]) -> str:
    """A content hash of the given columns (names, dtypes, values) and the row index: equal data, equal design.

    Numeric columns are hashed from their raw bytes (no copy of the frame); others through pandas' hashing.
    """
    h = hashlib.blake2b(digest_size=16)
    index = data.index
    if isinstance(index, pd.RangeIndex):
        h.update(repr((index.start, index.stop, index.step)).encode())
    else:
        h.update(pd.util.hash_array(np.asarray(index, dtype=object)).tobytes())
    for name in columns:
        col = data[name]
        h.update(f"{name}:{col.dtype}".encode())
        values = col.to_numpy()
        if values.dtype.kind in "biufcmM":
            h.update(np.ascontiguousarray(values).tobytes())
        else:
            h.update(pd.util.hash_array(values.astype(object)).tobytes())
    return h.hexdigest()


class _Sample:
    """Fingerprints of the estimation sample that do not depend on how the rows were split into chunks: each
    part is hashed as one stream. :meth:`observations` (row labels, response and weights) is what lrtest
    compares, as Stata compares the estimation samples: a model and its reductions to fewer levels, or to one of
    two crossed factors, fit the same observations. :meth:`digest` adds the grouping variables, to tell that the
    fitted data are unchanged."""

    def __init__(self) -> None:
        # the row labels, the response, the precision and the frequency weights, the grouping variables
        self.parts = [hashlib.blake2b(digest_size=16) for _ in range(5)]

    def update(self, frame: pd.DataFrame, y: np.ndarray, groups: Iterable[str],
               weights: tuple[np.ndarray | None, np.ndarray | None]) -> None:
        index, rows, *kinds, levels = self.parts
        index.update(pd.util.hash_array(np.asarray(frame.index)).tobytes())
        rows.update(y.tobytes())
        for h, w in zip(kinds, weights):  # a weighted fit is of other observations than an unweighted one
            if w is not None:
                h.update(np.ascontiguousarray(w, dtype=float).tobytes())
        for name in groups:
            levels.update(pd.util.hash_array(frame[name].to_numpy()).tobytes())

    def observations(self) -> str:
        return hashlib.blake2b(b"".join(h.digest() for h in self.parts[:4]), digest_size=16).hexdigest()

    def digest(self) -> str:
        return hashlib.blake2b(b"".join(h.digest() for h in self.parts), digest_size=16).hexdigest()


def as_frame(data: Data) -> Data:
    if isinstance(data, Mapping) and not isinstance(data, pd.DataFrame):
        try:
            return pd.DataFrame(data, copy=False)
        except ValueError as exc:
            raise DataError(f"a dict of data must hold equal-length 1-d arrays: {exc}") from None
    return data


def with_columns(data: Data) -> tuple[list[str], Data]:
    """The data's column names, and the data to read from then (an iterator's first chunk put back)."""
    data = as_frame(data)
    if isinstance(data, pd.DataFrame):
        return [str(c) for c in data.columns], data
    if isinstance(data, (str, os.PathLike)):
        first = next(_parquet(os.fspath(data), rows=1), pd.DataFrame())
        return [str(c) for c in first.columns], data
    if isinstance(data, Iterable):
        it = iter(data)
        first = next(it, None)
        if first is None:
            raise DataError("the data has no chunks")
        return [str(c) for c in _frame(first, 0).columns], itertools.chain([first], it)
    return [], data  # chunks() names the problem


def chunks(data: Data) -> tuple[Iterator[pd.DataFrame], pd.DataFrame | None]:
    """The data as DataFrame chunks, and the DataFrame itself when it is in memory (for :meth:`Design.rows`)."""
    data = as_frame(data)
    if isinstance(data, pd.DataFrame):
        return iter([data]), data
    if isinstance(data, (str, os.PathLike)):
        return _parquet(os.fspath(data)), None
    if isinstance(data, Iterable):
        return (_frame(c, k) for k, c in enumerate(data)), None
    raise DataError(f"data must be a pandas DataFrame, a dict of arrays, an iterable of DataFrame chunks or a "
                    f"Parquet file path; got {type(data).__name__}")


def _frame(chunk: Any, k: int) -> pd.DataFrame:
    if not isinstance(chunk, pd.DataFrame):
        raise DataError(f"chunk {k} of the data is a {type(chunk).__name__}, not a DataFrame")
    return chunk


def _parquet(path: str, rows: int | None = None) -> Iterator[pd.DataFrame]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'jaxhlm[parquet]'") from None
    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path!r} as a Parquet file: {exc}") from None
    for batch in source.iter_batches(batch_size=rows or PARQUET_BATCH_ROWS):
        yield batch.to_pandas()


class _Groups:
    """Codes for group labels in order of first appearance, across chunks."""

    def __init__(self) -> None:
        self.labels: pd.Index | None = None

    def codes(self, values: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(values)
        if self.labels is None:
            self.labels = pd.Index(uniques)
            return local
        at = self.labels.get_indexer(uniques)
        new = at < 0
        at[new] = len(self.labels) + np.arange(int(new.sum()))
        self.labels = self.labels.append(pd.Index(uniques[new]))
        return at[local]


def _key(frame: pd.DataFrame, variables: tuple[str, ...]) -> pd.Series | pd.MultiIndex:
    """A level's group labels: a column's values, or for several variables (lme4's a:b, Stata's nested levels)
    their combinations."""
    if len(variables) == 1:
        return frame[variables[0]]
    return pd.MultiIndex.from_arrays([frame[v] for v in variables])


class _Levels:
    """Codes of each row's group and, in a three-level model, cluster, across chunks. A cluster's label holds
    its group's, so a cluster lies in one group. An inner level named by its own variables (lme4's ``(1 | a) +
    (1 | b)``) is also coded by them alone: it is nested in the groups only if that gives as many clusters, and
    crossed with them otherwise. Once known to be ``crossed``, the second level is coded by its own variables
    only."""

    def __init__(self, spec: ModelSpec, crossed: bool = False):
        self.keys = spec.level_keys
        self.groups = _Groups()
        two = len(self.keys) > 1
        self.crossed = crossed
        self.clusters = _Groups() if two and not crossed else None
        self.own = _Groups() if two and not set(self.keys[0]) <= set(self.keys[1]) else None

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for key in self.keys for v in key))

    @property
    def second(self) -> tuple[_Groups, tuple[str, ...]] | None:
        """The second level's labels and the variables that key them: a crossed factor's own, or a nested
        cluster's (its group's variables included)."""
        if len(self.keys) == 1:
            return None
        return (self.own, self.keys[1]) if self.crossed else (self.clusters, self.variables)

    @property
    def is_crossed(self) -> bool:
        """Whether a second level coded as nested turned out to be crossed with the first: its own values
        label fewer levels than the (group, value) pairs do."""
        return self.own is not None and self.clusters is not None and len(self.own.labels) < len(self.clusters.labels)

    def codes(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        groups = self.groups.codes(_key(frame, self.keys[0]))
        if len(self.keys) == 1:
            return groups, None
        own = None if self.own is None else self.own.codes(_key(frame, self.keys[1]))
        return groups, own if self.crossed else self.clusters.codes(_key(frame, self.variables))


def _complete(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return np.logical_and.reduce([frame[c].notna().to_numpy() for c in columns] + [np.ones(len(frame), bool)])


def _random_design(spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack([np.zeros((len(frame), 0))] + [
        np.ones(len(frame)) if n == CONSTANT else _numeric(frame, n, "random-effect variable")
        for t in spec.random for n in t.names
    ])


def _weights(spec: ModelSpec, frame: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The rows' precision and frequency weights (None where the model has none), checked: finite, not
    negative, frequencies whole numbers. A zero weight is allowed here; the row is then left out."""
    out = []
    for name, kind in ((spec.weights, "precision"), (spec.freq_weights, "frequency")):
        if name is None:
            out.append(None)
            continue
        w = _numeric(frame, name, f"{kind} weight")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            raise DataError(f"the {kind} weight {name!r} must be finite and not negative; row {frame.index[bad][0]!r} "
                            f"has {w[bad][0]}")
        if kind == "frequency" and np.any(w != np.round(w)):
            at = np.flatnonzero(w != np.round(w))[0]
            raise DataError(f"frequency weights count observations, so {name!r} must hold whole numbers; row "
                            f"{frame.index[at]!r} has {w[at]} (for weights that scale the residual variance, pass "
                            "them as precision weights: fit(..., weights=...))")
        out.append(w)
    return out[0], out[1]


def _pweights(spec: ModelSpec, frame: pd.DataFrame) -> list[np.ndarray | None]:
    """The sampling weights' columns, the observations' then each level's (None where the model has none),
    checked: finite and not negative (a zero weight leaves the row out, as other weights do)."""
    names = [spec.pweights, *spec.level_pweights]
    out = []
    for name in names:
        w = None if name is None else _numeric(frame, name, "sampling weight")
        if w is not None and (bad := ~np.isfinite(w) | (w < 0)).any():
            raise DataError(f"the sampling weight {name!r} must be finite and not negative; row "
                            f"{frame.index[bad][0]!r} has {w[bad][0]}")
        out.append(w)
    return out


def _sampling(spec: ModelSpec, frame: pd.DataFrame, pw: list[np.ndarray | None], groups: np.ndarray
              ) -> Sampling:
    """The rows' sampling weights by level (:class:`~jaxhlm.stats.Sampling`), 1 where a level has none; a level's
    weight must be constant within each of its groups. ``pwscale`` scales the observations' weights within each
    group (codes ``groups``), as Stata's: to sum to the group's size (size), to its effective size (Σw)²/Σw²
    (effective), or (gk, Graubard and Korn) to 1, the group's weight becoming the mean of the products of both."""
    n = len(frame)
    for k, (name, keys) in enumerate(zip(spec.level_pweights, spec.level_keys)):
        if name is not None:
            spread = frame.groupby(list(keys), sort=False)[name].nunique()
            if (spread > 1).any():
                raise DataError(f"the sampling weight {name!r} of level {spec.levels[k]} varies within "
                                f"{int((spread > 1).sum()):,} of its groups (e.g. {spread.index[spread > 1][0]}); "
                                "a level's weight is its groups', one value per group")
    rows, *levels = (np.ones(n) if w is None else w for w in pw + [None] * (1 + len(spec.levels) - len(pw)))
    if spec.pwscale is not None:
        total, size = np.bincount(groups, rows), np.bincount(groups)
        if spec.pwscale == "size":
            rows = rows * size[groups] / total[groups]
        elif spec.pwscale == "effective":
            rows = rows * total[groups] / np.bincount(groups, rows * rows)[groups]
        else:
            levels[0], rows = levels[0] * total[groups] / size[groups], np.ones(n)
    return Sampling(rows, levels[0], levels[1] if len(levels) > 1 else None)


class _Chunk(NamedTuple):
    """One chunk's rows in the estimation sample (``frame``) and what the model makes of them: y, X, Z, the
    provisional group and cluster codes, the weights; how many rows were left out, for a missing value or
    a zero weight; and the sampling weights (None without them)."""

    frame: pd.DataFrame
    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    codes: tuple[np.ndarray, np.ndarray | None]
    weights: tuple[np.ndarray | None, np.ndarray | None]
    missing: int
    zero: int
    sampling: Sampling | None = None

    @property
    def hashed(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The weights that tell the sample's observations apart (:class:`_Sample`): sampling weights, all levels'
        together, in the frequency weights' place."""
        if self.sampling is None:
            return self.weights
        return self.weights[0], np.concatenate([w for w in self.sampling if w is not None])


def _encode(spec: ModelSpec, frame: pd.DataFrame, encoder: _Formulaic | _Factors, levels: _Levels,
            offset: int = 0, total: int | None = None) -> _Chunk:
    """One chunk's rows in the estimation sample, encoded (possibly none): those ``spec.subset`` selects (the
    chunk's rows are ``offset``… of ``total``), less those with a missing value or a zero weight."""
    if spec.linear:  # each observation its own group (formula.OBSERVATIONS)
        frame = frame.assign(**{OBSERVATIONS: offset + np.arange(len(frame))})
    if spec.subset is not None:
        frame = frame.loc[spec.subset.mask(frame, offset, total)]
    complete = _complete(frame, used_columns(spec, frame.columns))
    missing = int((~complete).sum())
    if missing:
        frame = frame.loc[complete]
    weights, pw = _weights(spec, frame), _pweights(spec, frame)
    positive = np.logical_and.reduce([w > 0 for w in (*weights, *pw) if w is not None] + [np.ones(len(frame), bool)])
    zero = int((~positive).sum())
    if zero:
        frame = frame.loc[positive]
        weights = tuple(None if w is None else w[positive] for w in weights)
        pw = [None if w is None else w[positive] for w in pw]
    if len(frame) == 0:
        return _Chunk(frame, np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)), (np.zeros(0, int), None),
                      weights, missing, zero)
    y = _numeric(frame, spec.response, "response")
    codes = levels.codes(frame)
    sampling = _sampling(spec, frame, pw, codes[0]) if spec.sampled else None
    return _Chunk(frame, y, encoder.columns(frame), _random_design(spec, frame), codes, weights, missing, zero,
                  sampling)


def _doolittle(A: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The unit lower-triangular factor of A = LU without pivoting, entries below ``eps`` zeroed, as lmerTest's
    ``doolittle`` forms it (its type I and II hypotheses are rows of Lᵀ)."""
    n = len(A)
    L, U = np.eye(n), np.zeros((n, n))
    for i in range(n):
        U[i] = A[i] - L[i, :i] @ U[:i]
        for j in range(i + 1, n):
            L[j, i] = 0.0 if abs(U[i, i]) < eps else (A[j, i] - L[j, :i] @ U[:i, i]) / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def _sequential(X: np.ndarray, order: list[int], cols: list[int]) -> np.ndarray:
    """The sequential hypothesis of columns ``cols`` when X's columns enter in ``order``: their rows of Lᵀ, L the
    unit lower factor of the reordered XᵀX (:func:`_doolittle`), over X's columns in their own order."""
    L = _doolittle(X[:, order].T @ X[:, order]).T
    return L[[order.index(c) for c in cols]][:, np.argsort(order)]


def term_contrasts(d: "Design", kind: int = 3) -> dict[str, np.ndarray]:
    """Each fixed-effect term's hypothesis of type I, II or III: rows L over the estimated coefficients with Lβ = 0
    the term's null, as lmerTest's ``anova(m, type=)`` forms them.

    * I (sequential): the term's rows of Lᵀ, L the unit lower factor of XᵀX (:func:`_doolittle`), with the
      constant first and the terms by order (main effects, then interactions; as written within an order).
    * II: a term no other contains, its own coefficients; one that others contain, the type I rows with the
      columns reordered to put it after every other term except its containers.
    * III: the coefficients of the overparameterised design (the intercept and every cell of every term, base
      cells included) expressed in the estimated ones (L = (X⁺ X̃)ᵀ), each term's made orthogonal, over those cells,
      to the terms that contain it (higher-order terms first), read at the estimated columns: hypotheses that do
      not depend on which level is the base.

    A term contains another when it has all of its variables and more, with the same continuous ones. Formula
    models need treatment coding (formulaic's default); Stata's factor variables are coded so."""
    if kind not in (1, 2, 3):
        raise FormulaError(f"type {kind}: the types of tests of terms are 1, 2 and 3")
    rows = d.rows()
    X = rows.X
    columns, variables, full, at = _term_layout(d, rows)
    continuous = {t: {v for v, is_factor in vs if not is_factor} for t, vs in variables.items()}
    within = {t: [o for o in columns if variables[t] < variables[o] and continuous[t] == continuous[o]]
              for t in columns}
    p = X.shape[1]
    out: dict[str, np.ndarray] = {}
    if kind == 1:  # the constant first, then the terms by order (main effects, then interactions), as R's design
        termed = [c for cols in columns.values() for c in cols]
        sequence = [c for c in range(p) if c not in termed] + [
            c for t in sorted(columns, key=lambda t: len(variables[t])) for c in columns[t]]
        out = {t: _sequential(X, sequence, cols) for t, cols in columns.items()}
    elif kind == 2:
        for t, cols in columns.items():
            last = cols + [c for o in within[t] for c in columns[o]]
            out[t] = (_sequential(X, [c for c in range(p) if c not in last] + last, cols) if within[t]
                      else np.eye(p)[cols])
    else:
        L = (np.linalg.pinv(X) @ full).T  # rows: the overparameterised design's columns; columns: the estimated
        L[np.abs(L) < 1e-10 * np.abs(L).max()] = 0.0
        for t in sorted(columns, key=lambda k: -len(variables[k])):  # higher-order terms first
            cols = columns[t]
            if within[t] and cols:
                A = L[:, [c for o in within[t] for c in columns[o]]]
                L[:, cols] -= A @ np.linalg.lstsq(A, L[:, cols], rcond=None)[0]
        L = L[at]
        out = {t: L[:, cols].T for t, cols in columns.items()}
    ordered = sorted(columns, key=lambda t: len(variables[t]))  # main effects, then interactions, as R's table
    return {t: out[t][np.abs(out[t]).sum(axis=1) > 1e-8] for t in ordered if len(columns[t])}


def _term_layout(d: "Design", rows: Rows) -> tuple[dict[str, list[int]], dict[str, frozenset[tuple[str, bool]]],
                                                    np.ndarray, list[int]]:
    """The fixed part's terms, by label: each one's estimated columns (places in X) and variables (name, whether a
    factor); the overparameterised design (intercept, then every cell of every term) and the places of X's
    columns in it. (A term Stata syntax repeats is one label: its repeat's columns are omitted as collinear.)"""
    enc = d.encoding
    frame = d.source.iloc[rows.position]
    if isinstance(enc.encoder, _Formulaic):
        import formulaic

        spec = enc.encoder.spec
        if {type(c.contrasts).__name__ for c in spec.factor_contrasts.values()} - {"TreatmentContrasts"}:
            raise FormulaError("tests of terms here need treatment coding of the categorical variables (formulaic's "
                               "default); refit without explicit contrasts")
        terms = [t for t in spec.term_indices if str(t) != "1"]
        categorical = {str(f) for f in spec.factor_contrasts}
        columns = {str(t): [enc.kept.index(j) for j in spec.term_indices[t] if j in enc.kept] for t in terms}
        variables = {str(t): frozenset((str(f), str(f) in categorical) for f in t.factors) for t in terms}
        names = [enc.encoder.names[j] for j in enc.kept]
        parts, full_names = [], []
        if CONSTANT_FORMULA in names:
            parts.append(np.ones((len(frame), 1)))
            full_names.append(CONSTANT_FORMULA)
        for t in terms:
            M = formulaic.model_matrix(f"0 + {t}", frame)
            parts.append(np.asarray(M, dtype=float))
            full_names += [str(c) for c in M.columns]
        full = {name: k for k, name in enumerate(full_names)}
        missing = [n for n in names if re.sub(r"\[T\.", "[", n) not in full]
        if missing:
            raise FormulaError(f"type III tests need each column of the design among its terms' full sets of "
                               f"dummies, and {', '.join(missing)} is not; write the categorical variables as C(x)")
        at = [full[re.sub(r"\[T\.", "[", n)] for n in names]  # the treatment columns among the full ones
        return columns, variables, np.hstack(parts), at
    fixed: FixedTerms = enc.encoder.fixed
    every = enc.encoder.columns(frame)  # the constant, then every cell of every term, base cells included
    first = 0 if fixed.constant else 1
    cell_term = [None] + [cell[0] for cell in enc.encoder.cells]
    columns = {t.header: [] for t in fixed.terms}
    for place, c in enumerate(enc.kept):
        if c:
            columns[fixed.terms[cell_term[c]].header].append(place)
    variables = {t.header: frozenset((v.name, v.factor) for v in t.vars) for t in fixed.terms}
    return columns, variables, every[:, first:], [c - first for c in enc.kept]


@dataclass(frozen=True, eq=False)
class Encoding:
    """How the fit turned data into rows of X and Z, fixed once the whole sample was seen: the encoder (its
    levels frozen), the columns kept, and the groups' order. Applied to the fitted data it rebuilds the
    estimation sample; applied to new data it encodes rows for prediction."""

    spec: ModelSpec
    encoder: _Formulaic | _Factors
    levels: _Levels
    kept: list[int]
    #: per grouping level, outermost first: a group's (cluster's) code in order of first appearance → its
    #: position in the sorted order
    ranks: tuple[np.ndarray, ...]
    digest: str  # the estimation sample's fingerprint, grouping variables included (:class:`_Sample`)

    def sample_rows(self, data: pd.DataFrame) -> tuple[Rows, str]:
        """The estimation sample's rows from the fitted data, and their fingerprint (to check it is unchanged)."""
        # The rows are found by place (a shallow copy labelled 0, 1, …), so that repeated labels cannot confuse them.
        placed = data.copy(deep=False)
        placed.index = pd.RangeIndex(len(data))
        c = _encode(self.spec, placed, self.encoder, self.levels, 0, len(data))
        (codes, clusters), (precision, freq) = c.codes, c.weights
        position = c.frame.index.to_numpy()
        check = _Sample()
        check.update(c.frame.set_axis(data.index[position]), c.y, self.levels.variables, c.hashed)
        return Rows(y=c.y, X=c.X[:, self.kept], Z=c.Z, group=self.ranks[0][codes], index=data.index[position],
                    cluster=None if clusters is None or len(self.ranks) < 2 else self.ranks[1][clusters],
                    weights=precision, freq=freq if c.sampling is None else c.sampling.rows,
                    sampling=c.sampling, position=position), check.digest()

    def full_columns(self, frame: pd.DataFrame) -> np.ndarray:
        """Every column the encoder builds for rows without missing values, the collinear ones the fit omitted
        included (a Stata model's base cells too): the space in which a linear function of the coefficients is
        estimable or not. Levels of a factor the fit has not seen are refused."""
        if isinstance(self.encoder, _Factors):
            self.encoder.check_known(frame)
        return self.encoder.columns(frame)

    def predictors(self, data: pd.DataFrame, random: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """(complete, X, Z, codes per grouping level) for the rows of ``data`` with no missing predictor
        (``complete`` marks them): a group (cluster) the fit has not seen gets code −1. The response is not
        needed; the grouping variables only when ``random``. Levels of a factor the fit has not seen are refused:
        they have no estimated effect."""
        spec = self.spec
        random = random and not spec.linear  # without random effects, the prediction is Xβ̂ either way
        needed = sorted(fixed_variables(spec.fixed))
        if random:
            needed += [*self.levels.variables] + [n for t in spec.random for n in t.slopes]
        absent = [n for n in dict.fromkeys(needed) if n not in data.columns]
        if absent:
            raise DataError(f"the new data lacks {', '.join(map(repr, absent))}, which the model's predictions "
                            "need" + (" (random=False predicts without the random effects)" if random else ""))
        complete = _complete(data, needed)
        frame = data.loc[complete]
        X = self.full_columns(frame)[:, self.kept]
        if not random:
            unseen = np.full(len(frame), -1)
            return complete, X, np.zeros((len(frame), len(spec.re_names))), (unseen,) * len(self.ranks)
        codes = []
        for (groups, key), rank in zip(((self.levels.groups, self.levels.keys[0]), self.levels.second), self.ranks):
            at = groups.labels.get_indexer(_key(frame, key))
            codes.append(np.where(at >= 0, rank[np.maximum(at, 0)], -1))
        return complete, X, _random_design(spec, frame), tuple(codes)


@dataclass
class _Pass:
    """What one pass over the data yields: the statistics, the codes' labels, the encoder (its levels learnt),
    the sample's fingerprints, the rows left out (for a missing value, for a zero weight) and whether the
    response is constant."""

    stats: HostStats
    levels: _Levels
    encoder: _Formulaic | _Factors
    sample: str  # :meth:`_Sample.observations`
    digest: str  # :meth:`_Sample.digest`
    missing: int
    zero: int
    constant_response: bool
    source: pd.DataFrame | None
    strata: tuple[HostStats, ...] | None = None  # one per value of the residual-variance variable, as it
    strata_labels: pd.Index | None = None  # first appeared
    #: with serial residuals, every row's (X, Z, y, series code, time, stratum code); the strata's labels above
    serial: tuple[np.ndarray, ...] | None = None


def _reduce(spec: ModelSpec, data: Data, crossed: bool) -> _Pass:
    """One pass over the data, chunk by chunk, into an :class:`~jaxhlm.stats.Accumulator` (the second level
    nested in the first, or ``crossed`` with it)."""
    parts, source = chunks(data)
    encoder = _Formulaic(spec.fixed) if isinstance(spec.fixed, str) else _Factors(spec.fixed)
    q1 = spec.n_first
    levels, sample = _Levels(spec, crossed), _Sample()
    acc = Accumulator(q1, len(spec.re_names) - q1, crossed)
    if spec.sampled and crossed:
        raise DataError("sampling weights are fitted for models with one grouping level or two nested ones; this "
                        "model has crossed grouping factors")
    # With residual variances by a variable, each of its values has its own statistics (residuals' scales differ).
    strata, parts_by = (_Groups(), []) if spec.residual_by and spec.residual_kind == "independent" else (None, None)
    # With correlated residuals by a variable, each series' stratum (its value), for the structure to tell apart.
    serial_by = _Groups() if spec.residual_by and spec.residual_kind != "independent" else None
    if spec.residual_kind != "independent":
        _check_serial(spec, crossed)
    serial: list[tuple[np.ndarray, ...]] = []
    if spec.subset is not None and spec.subset.has_range and source is None:
        raise DataError("an in range counts rows from the end of the data, which data read in chunks does not know "
                        "in advance; pass a DataFrame, or select the rows with if")
    missing = zero = offset = 0
    low, high = np.inf, -np.inf
    for k, frame in enumerate(parts):
        if k == 1:
            encoder.check_chunked()
            if spec.sampled:
                raise DataError("sampling weights are scaled and checked within whole groups, and give robust "
                                "standard errors, which need the rows at hand: pass the data as a DataFrame")
        c = _encode(spec, frame, encoder, levels, offset, None if source is None else len(source))
        offset += len(frame)
        missing, zero = missing + c.missing, zero + c.zero
        if len(c.y) and strata is not None:
            where = strata.codes(c.frame[spec.residual_by])
            for stratum in np.unique(where):
                parts_by += [Accumulator(q1, len(spec.re_names) - q1, crossed)
                             for _ in range(stratum + 1 - len(parts_by))]
                rows = where == stratum
                precision, freq = (None if w is None else w[rows] for w in c.weights)
                sampling = None if c.sampling is None else Sampling(
                    *(None if w is None else w[rows] for w in c.sampling))
                parts_by[stratum].add(c.X[rows], c.Z[rows, :q1], c.y[rows], c.codes[0][rows], c.Z[rows, q1:],
                                      None if c.codes[1] is None else c.codes[1][rows], precision, freq, sampling)
        elif len(c.y):
            acc.add(c.X, c.Z[:, :q1], c.y, c.codes[0], c.Z[:, q1:], c.codes[1], *c.weights, sampling=c.sampling)
        if len(c.y) and spec.residual_kind != "independent":
            # a series: a group, or with two nested levels a cluster of the inner one
            series = c.codes[0] if c.codes[1] is None else c.codes[1]
            t = (np.zeros(len(c.y)) if spec.residual_time is None
                 else _numeric(c.frame, spec.residual_time, "time variable"))
            by = np.zeros(len(c.y), np.int64) if serial_by is None else serial_by.codes(c.frame[spec.residual_by])
            serial.append((c.X, c.Z, c.y, series, t, by, c.codes[0]))
        if len(c.y):
            sample.update(c.frame, c.y, levels.variables, c.hashed)
            low, high = min(low, c.y.min()), max(high, c.y.max())
    if not parts_by:
        rows = tuple(np.concatenate(a) for a in zip(*serial)) if serial else None
        return _Pass(acc.result(), levels, encoder, sample.observations(), sample.digest(), missing, zero,
                     low == high, source, serial=rows, strata_labels=None if serial_by is None else serial_by.labels)
    if crossed:
        raise DataError(f"residual variances by a variable are fitted for one grouping level or two nested ones; "
                        f"{spec.levels[1]!r} is crossed with {spec.levels[0]!r}")
    hosts = [a.result() for a in parts_by]
    k = max((len(h.inner.counts) for h in hosts if h.inner is not None), default=0)
    hosts = [pad_host(h, max(len(h.counts) for h in hosts), max(h.R.shape[1] for h in hosts), k) for h in hosts]
    whole, hosts = total(hosts)
    return _Pass(whole, levels, encoder, sample.observations(), sample.digest(), missing, zero, low == high, source,
                 hosts, strata.labels)


def _serial_labels(r: Structure) -> tuple[str, ...]:
    """The names of a residual structure's parameters, strata aside."""
    if isinstance(r, Unstructured):  # Stata's e1, e2, …: the residual at each value of the time
        e = [f"e{t:g}" for t in r.times]
        return tuple(f"var({x})" for x in e) + tuple(f"cov({e[k]},{e[l]})" for k, l in r.pairs)
    if isinstance(r, Exchangeable):
        return ("var(Residual)", "cov(Residual)")
    if isinstance(r, (Toeplitz, Linear)):  # Stata's rho1, …; phi1, …; theta1, …
        return tuple(f"{r.row_name}{k}(Residual)" for k in range(1, r.order + 1)) + ("var(Residual)",)
    if isinstance(r, Serial):
        return ("rho(Residual)", "var(Residual)")
    return ("var(Residual)",)


#: the residual structures that need a time (t()): their lags or occasions are counted in it
TIMED = ("ar", "ma", "exponential", "toeplitz", "banded", "unstructured")


def _check_serial(spec: ModelSpec, crossed: bool) -> None:
    """Residuals correlated within series are fitted for one grouping level or two nested ones, with unweighted
    rows (only the outermost groups may carry sampling weights) and, for the structures that count lags or
    occasions, a time."""
    kind = spec.residual_kind
    if (kind in TIMED) != (spec.residual_time is not None):
        raise DataError(f"{kind} residuals " + ("need a time variable: t(varname) in residuals(), time= in fit()"
                                                if kind in TIMED else "take no time variable"))
    why = "crossed grouping factors" if crossed else "weights" if spec.weights or spec.freq_weights else None
    if why:
        raise DataError(f"{kind} residuals are fitted for models with one grouping level or two nested ones and "
                        f"unweighted rows; this model has {why}")
    if spec.pweights or any(spec.level_pweights[1:]):
        raise DataError(f"with {kind} residuals only the outermost level's groups may carry sampling weights: the "
                        "residuals of a series are correlated, so an observation's (or an inner cluster's) share of "
                        "the likelihood cannot be weighted on its own")


def _serial_rows(spec: ModelSpec, rows: tuple[np.ndarray, ...], kept: list[int], rank: np.ndarray, n_series: int,
                 q1: int, n_groups: int, parent: np.ndarray | None, strata_labels: pd.Index | None,
                 group_rank: np.ndarray | None = None) -> tuple[SerialRows, tuple[np.ndarray, np.ndarray], Structure]:
    """The rows in time order within each series (a group, or with two nested levels a cluster of the inner one,
    whose group is its ``parent``; in the design's order), with the gaps in time between a series' consecutive
    rows: what a :class:`~jaxhlm.residual.Serial` structure whitens; each row's place in them (series, position in
    its slab), rows in the estimation sample's order; and the structure, checked to be identifiable (with by(), in
    every stratum: ``strata_labels`` the by() variable's values, in the order of the rows' stratum codes). With
    ``group_rank`` (the groups' places in the design) the series are the clusters of an inner level without random
    effects, each series' group read from its rows."""
    X, Z, y, codes, t, by, groups = rows
    if group_rank is not None:
        parent = np.zeros(n_series, np.int64)
        parent[rank[codes]] = group_rank[groups]
    kind, name, group = spec.residual_kind, spec.residual_time, spec.levels[-1]
    if not np.all(np.isfinite(t)):
        raise DataError(f"the time variable {name!r} must be finite")
    if kind in ("ar", "ma", "toeplitz") and np.any(t != np.round(t)):
        raise DataError(f"the time variable {name!r} of {kind} residuals must hold whole numbers (the lags are "
                        "counted in its units)")
    g_rows = rank[codes]
    order = np.lexsort((t, g_rows))
    g, t = g_rows[order], t[order]
    first = np.r_[True, g[1:] != g[:-1]]
    gap = np.where(first, 0, np.diff(t, prepend=t[:1]))
    if kind in TIMED and np.any(~first & (gap == 0)):
        raise DataError(f"the time variable {name!r} repeats a value within a {group} group; {kind} residuals need "
                        "one observation per time in each group")
    if first.all():
        raise DataError(f"every {group} group has a single observation, so {kind} residuals have no pairs to be "
                        "correlated")
    stratum = np.zeros(n_series, np.int64)
    if strata_labels is not None:  # codes in the order of the sorted labels, one per series
        by = inverse_permutation(np.asarray(strata_labels.argsort()))[by[order]]
        stratum[g] = by
        if np.any(stratum[g] != by):
            raise DataError(f"the residuals' by() variable {spec.residual_by!r} changes within a {group} group; "
                            f"{kind} residuals by a variable need it constant within each group (a treatment arm)")
    X, Z, W, y, gap, time, live = (pad_rows(a, g, n_series) for a in (
        X[order][:, kept], Z[order, :q1], Z[order, q1:], y[order], gap, t, np.ones(len(g))))
    slot = np.empty(len(g), dtype=np.int64)
    slot[order] = slots(g, n_series)[1]
    serial = SerialRows(X, Z, W, y, gap.astype(np.int64), time, live, stratum,
                        np.zeros(0, np.int64) if parent is None else parent.astype(np.int64), np.ones(n_groups))
    structure = _serial_structure(spec, serial)
    if strata_labels is None:
        return serial, (g_rows, slot), structure
    if len(strata_labels) < 2:
        raise DataError(f"the residuals are by {spec.residual_by!r}, which has one value in the sample; drop by()")
    for s, value in enumerate(np.asarray(strata_labels)[np.argsort(np.asarray(strata_labels))]):
        # each stratum's series must identify its own parameters of the same structure
        keep = (stratum == s).astype(float)
        own = serial._replace(live=live * keep[:, None], gap=serial.gap * (stratum == s)[:, None])
        if not np.any(own.live.sum(axis=1) > 1):
            raise DataError(f"no {group} group with {spec.residual_by} = {value} has two observations, so its "
                            f"{kind} residuals have no pairs to be correlated")
        mine = _serial_structure(dataclasses.replace(spec, residual_order=getattr(structure, "order", None)), own)
        if isinstance(structure, (Toeplitz, Unstructured)) and mine != structure:
            raise DataError(f"the {group} groups with {spec.residual_by} = {value} are not seen at every time the "
                            f"others are, so their {kind} residuals lack parameters the others have; use a structure "
                            "with fewer parameters, or drop by()")
    return serial, (g_rows, slot), ByStratum(structure, len(strata_labels))


def _serial_structure(spec: ModelSpec, serial: SerialRows) -> Structure:
    """The structure ``spec`` names, sized to the data (the lags, the occasions), once the parameters it has are
    known to be identifiable: every lag or pair of occasions it gives a correlation occurs in some series."""
    kind, q, name = spec.residual_kind, spec.residual_order, spec.residual_time
    if kind == "ar" and q in (None, 1):
        return AR1(max(int(serial.gap.max()), 1).bit_length())
    if kind == "exponential":
        return Exponential()
    intercept = any(t.intercept for t in spec.level_terms(len(spec.levels) - 1))
    if kind == "exchangeable":
        if intercept:
            raise _duplicated(spec, "exchangeable")
        return Exchangeable()
    live = serial.live > 0
    both = live[:, :, None] & live[:, None, :]
    if kind in ("toeplitz", "ar", "ma"):  # a parameter per lag up to q, each identified only where that lag occurs
        lags = np.abs(serial.time[:, :, None] - serial.time[:, None, :])[both]
        longest = int(lags.max())
        rspec = kind + ("" if q is None else f" {q}")
        absent = sorted(set(range(1, (longest if q is None else q) + 1)) - set(lags.astype(int).tolist()))
        if absent:
            raise DataError(f"{rspec} residuals estimate " + ("a correlation at each lag" if kind == "toeplitz" else
                                                              f"{q} coefficients, which need every lag") +
                            f" up to {longest if q is None else q}, but no series has observations {absent[0]} apart in "
                            f"{name!r}" + (f" (the longest lag is {longest})" if q is not None and q > longest else ""))
        if intercept and (q is None or q >= longest):  # as many parameters as lags, and the intercept one more
            raise _duplicated(spec, rspec)
        return Toeplitz(longest if q is None else q) if kind == "toeplitz" else AR(q, longest) if kind == "ar" else MA(q)
    times = tuple(float(v) for v in np.unique(serial.time[live]))
    if len(times) < 2:
        raise DataError(f"the time variable {name!r} has one value; {kind} residuals need at least two occasions")
    structure = Unstructured(times, q)
    if intercept and (q is None or q >= len(times) - 1):
        raise _duplicated(spec, kind if q is None else f"banded {q}")
    at = np.searchsorted(np.asarray(times), serial.time)
    seen = {(int(k), int(l)) for k, l in zip(np.broadcast_to(at[:, :, None], both.shape)[both],
                                             np.broadcast_to(at[:, None, :], both.shape)[both])}
    absent = [pair for pair in structure.pairs if pair not in seen]
    if absent:
        k, l = absent[0]
        raise DataError(f"{kind} residuals estimate the covariance of every pair of occasions"
                        + ("" if q is None else f" up to {q} apart") + f", but no series is observed at both "
                        f"{name} = {times[k]:g} and {times[l]:g}; use a structure with fewer parameters (toeplitz, "
                        "ar 1) or banded with a smaller q")
    return structure


def _duplicated(spec: ModelSpec, rspec: str) -> DataError:
    """The refusal of a residual structure that gives every pair of a series its own covariance beside a random
    intercept of the same series, which adds one to every pair: the likelihood is flat along their sum."""
    group = spec.levels[-1]
    return DataError(f"{rspec} residuals give every pair of observations in a {group} group a covariance of their "
                     f"own, and the random intercept of {group} adds the same amount to each, so the two cannot be "
                     f"told apart; drop the random intercept (|| {group}:, noconstant in Stata syntax, (0 | {group}) "
                     "in a formula)")


def _crossed_order(spec: ModelSpec, n_first: int, n_second: int) -> ModelSpec:
    """``spec`` with its crossed factors in the order the deviance wants: the one with more effects in all
    (levels × effects per level) first, block-diagonal, and the other second, dense (:mod:`jaxhlm.deviance`)."""
    if n_second * (len(spec.re_names) - spec.n_first) <= n_first * spec.n_first:
        return spec
    return dataclasses.replace(spec, random=spec.level_terms(1) + spec.level_terms(0))


#: The least-squares residual sum of squares, relative to Σy², at or below which the response counts as an exact
#: linear function of the fixed effects (a float-stored copy of a predictor leaves 1e-14).
PERFECT_FIT = 1e-12


def build_design(spec: ModelSpec, data: Data) -> Design:
    """Validate ``data`` against ``spec`` and reduce it to sufficient statistics; raise :class:`DataError`
    with a remedy for bad input.

    Whether a second grouping factor named by its own variables is nested in the first or crossed with it is
    known only once every row has been seen; crossed factors need other statistics, so the data are then read a
    second time (which an iterator of chunks cannot be)."""
    empty = [level for level in spec.levels if not any(t.names for t in spec.random if t.group == level)
             and level != OBSERVATIONS]
    if empty and spec.residual_kind == "independent":
        raise FormulaError(f"the random part for {empty[0]} has no effects; a level without random effects only names "
                           "the groups within which residuals are correlated (residuals(rspec, t()) in Stata syntax, "
                           "residuals= in fit()); add a random effect, or drop the level (a model without random effects "
                           "is written without a random part: mixed y x, or y ~ x)")
    if spec.linear and spec.residual_kind != "independent":
        raise FormulaError(f"{spec.residual_kind} residuals are correlated within groups, and a model without random "
                           "effects names none; name them by a level without random effects: mixed y x || id:, "
                           f"noconstant residuals({spec.residual_kind}, t(time)) in Stata syntax, y ~ x + (0 | id) "
                           "with residuals= in fit()")
    if spec.residual_kind == "independent" and spec.residual_time is not None:
        raise FormulaError(f"independent residuals take no time variable ({spec.residual_time!r}); name the "
                           "correlation structure over it: residuals(ar 1, t(var)) in Stata syntax, residuals= in fit()")
    if spec.levels[0] in empty and len(spec.levels) > 1:
        raise FormulaError(f"the random part for {empty[0]} has no effects; with two grouping levels the outer one "
                           "needs random effects (an inner level without them names the series of correlated "
                           "residuals)")
    reduced = _reduce(spec, data, False)
    if reduced.levels.is_crossed:
        if reduced.source is None and not isinstance(data, (str, os.PathLike)):
            raise DataError(f"{spec.levels[1]!r} is crossed with {spec.levels[0]!r} (some of its values occur in "
                            f"several {spec.levels[0]} groups), and crossed factors need a second pass over the data, "
                            "which an iterator of chunks cannot give; pass a DataFrame or a Parquet file path. If "
                            f"{spec.levels[1]!r} is numbered within each {spec.levels[0]}, write "
                            f"(… | {spec.levels[0]}/{spec.levels[1]})")
        spec = _crossed_order(spec, len(reduced.levels.groups.labels), len(reduced.levels.own.labels))
        reduced = _reduce(spec, data, True)
    stats, levels, encoder, source = reduced.stats, reduced.levels, reduced.encoder, reduced.source
    q1 = spec.n_first
    if stats.n == 0:
        raise DataError("no observations left: every row" + (" the if/in qualifiers select" if spec.subset else "")
                        + " has a missing value in a variable the model uses" + (" or a zero weight" if reduced.zero
                                                                                 else "")
                        if reduced.missing or reduced.zero or not spec.subset else
                        f"no observations: no row satisfies the qualifiers (if {spec.subset.text})")
    if reduced.constant_response:
        raise DataError(f"the response {spec.response!r} is constant; there is nothing to model")
    groups = levels.groups.labels
    for name, found in zip(spec.levels, (levels.groups, levels.own if levels.crossed else None)):
        if found is not None and len(found.labels) < 2:
            raise DataError(f"the grouping variable {name!r} has 1 level; a mixed model needs at least two groups "
                            "(use ordinary regression for one)")
    _check_nesting(spec, levels, stats.n)
    layout = encoder.layout()
    if not layout:
        raise DataError("the fixed-effects design is empty; include at least a constant")
    constant = encoder.constant()
    kept, coefs, notes = _mark_dependent(stats.R, layout, constant)
    p = len(kept)
    if p == 0:
        raise DataError("the fixed-effects design is singular: every column is zero")
    if stats.n <= p:
        raise DataError(f"{stats.n} observations cannot identify {p} fixed effects plus variance components")
    XtX = (stats.R.T @ stats.R)[np.ix_(kept, kept)]
    rss = stats.yty - float(stats.Xty[kept] @ np.linalg.solve(XtX, stats.Xty[kept]))
    if rss <= PERFECT_FIT * stats.yty:
        raise DataError(f"the response {spec.response!r} is an exact linear function of the fixed effects (every "
                        "residual is zero, to rounding), so no variance is left to estimate; check that the response "
                        "is not among the predictors or computed from them")
    inner_sums = () if stats.inner is None else (stats.inner.WtW.sum(axis=0),)
    for names, ZtZ in zip((spec.re_names[:q1], spec.re_names[q1:]), (stats.ZtZ.sum(axis=0), *inner_sums)):
        if names and np.linalg.matrix_rank(ZtZ, tol=COLLINEARITY_TOL**2 * np.max(np.abs(ZtZ))) < ZtZ.shape[0]:
            raise DataError(
                f"the random-effects design ({', '.join(names)}) is singular: its columns are collinear; "
                "drop a redundant random effect"
            )
    for count, why in ((reduced.missing, "missing values"), (reduced.zero, "zero weights")):
        if count:
            notes.append(f"{count:,} observation{'s' if count > 1 else ''} dropped because of {why}")
    order = np.asarray(groups.argsort())
    inner, cluster_order = None, None
    if levels.second is not None:
        second = levels.second[0].labels
        cluster_order = np.asarray(second.argsort())
        inner = InnerLevel(spec.levels[1], np.asarray(second[cluster_order]), len(spec.re_names) - q1,
                           sum(1 for t in spec.level_terms(1) if t.names), levels.crossed)
    # An inner level without random effects only names the series of correlated residuals: the model is one of
    # the outer level's, its series the inner level's clusters.
    series_only = inner is not None and inner.n_effects == 0
    strata, strata_labels, serial, serial_slots, structure = None, None, None, None, INDEPENDENT
    selected = stats.select(kept, order, None if series_only else cluster_order)
    if reduced.serial is not None:
        nested = cluster_order is not None
        serial, serial_slots, structure = _serial_rows(
            spec, reduced.serial, kept, inverse_permutation(cluster_order if nested else order),
            len(inner.labels) if nested else len(groups), q1, len(groups),
            None if series_only or not nested else selected.inner.parent, reduced.strata_labels,
            inverse_permutation(order) if series_only else None)
        if reduced.strata_labels is not None:
            strata_labels = np.asarray(reduced.strata_labels[np.asarray(reduced.strata_labels.argsort())])
    if series_only:
        inner, cluster_order = None, None
    if reduced.strata is not None:
        if len(reduced.strata) < 2:
            raise DataError(f"the residual variances are by {spec.residual_by!r}, which has one value in the sample; "
                            "drop residuals(independent, by()) to fit one residual variance")
        by = np.asarray(reduced.strata_labels.argsort())
        strata = tuple(reduced.strata[k].select(kept, order, cluster_order) for k in by)
        strata_labels = np.asarray(reduced.strata_labels[by])
        structure = Strata(len(strata))
    return Design(
        stats=selected, group_labels=np.asarray(groups[order]), coefs=tuple(coefs),
        re_names=spec.re_names, blocks=spec.blocks, response=spec.response, group_name=spec.group,
        constant=constant, n_dropped=reduced.missing + reduced.zero, notes=tuple(notes), sample=reduced.sample,
        encoding=Encoding(spec, encoder, levels, kept,
                          tuple(inverse_permutation(o) for o in (order, cluster_order) if o is not None),
                          reduced.digest),
        source=source, inner=inner, strata=strata, strata_labels=strata_labels, residual=structure, serial=serial,
        serial_slots=serial_slots,
    )


def residual_data(design: Design, n_groups: int, n_fixed: int, n_clusters: int = 0, packed: bool = False
                  ) -> GroupStats | SerialRows:
    """On the device, what the design's residual structure whitens, padded to ``n_groups`` groups, ``n_fixed``
    columns and ``n_clusters`` clusters (ZtX2 if ``packed``; :func:`~jaxhlm.stats.device_stats`): the statistics
    (σ²I), each stratum's stacked, or the rows in time order (whose columns are not padded)."""
    if design.serial is not None:  # the series padded to the groups, or (their parents given) to the clusters
        rows = design.serial
        nested = len(rows.parent) > 0
        more = (n_clusters if nested else n_groups) - len(rows.y)
        slabs = {f: jnp.pad(jnp.asarray(a), [(0, more)] + [(0, 0)] * (a.ndim - 1))
                 for f, a in ((f, getattr(rows, f)) for f in SLABS)}
        parent = jnp.pad(jnp.asarray(rows.parent), (0, more)) if nested else rows.parent
        v = np.ones(n_groups)  # the groups' sampling weights, padded groups 1
        if design.stats.group_weights is not None:
            v[:design.n_groups] = design.stats.group_weights
        return SerialRows(**slabs, parent=jnp.asarray(parent), group_weights=jnp.asarray(v))
    if design.strata is not None:
        return stack_strata(design.strata, n_groups, n_fixed, n_clusters)
    return device_stats(design.stats, n_groups, n_fixed, packed, n_clusters)


def _check_nesting(spec: ModelSpec, levels: _Levels, n: int) -> None:
    """Every level's random effects must be identifiable beside the residual, and a second level's beside the
    first's (a level without random effects, which only names the series of correlated residuals, has none)."""
    if not all(t.names for t in spec.random):
        return
    if levels.second is None:
        if len(levels.groups.labels) == n:
            raise DataError(f"every {spec.levels[0]} group has a single observation, so its random effects cannot be "
                            "told from the residual; a mixed model needs groups of several observations (use ordinary "
                            "regression here)")
        return
    outer, inner = spec.levels
    n_groups, n_clusters = len(levels.groups.labels), len(levels.second[0].labels)
    if levels.crossed:
        for name, count in ((outer, n_groups), (inner, n_clusters)):
            if count == n:
                raise DataError(f"every {name} group has a single observation, so its random effects cannot be told "
                                f"from the residual; drop the {name} term")
        return
    if n_clusters == n_groups:
        raise DataError(f"every {outer} group holds a single {inner} cluster, so the two levels' random effects "
                        f"cannot be told apart; drop the {inner} level")
    if n_clusters == n:
        raise DataError(f"every {inner} cluster has a single observation, so its random effects cannot be told from "
                        f"the residual; drop the {inner} level")


def _mark_dependent(R: np.ndarray, layout: list[tuple[int | None, Coef]], constant: str | None
                    ) -> tuple[list[int], list[Coef], list[str]]:
    """Columns to keep (indices into R), every coefficient with its status, and Stata's notes: empty cells and
    collinear columns; the constant is considered first, then the columns in order."""
    candidates = [(j, c) for j, c in layout if j is not None]
    order = sorted(candidates, key=lambda jc: jc[1].name != constant) if constant else candidates
    keep = _independent(R, [j for j, _ in order])
    coefs, notes, kept = [], [], []
    for j, c in layout:
        if c.status == "empty":
            notes.append(f"note: {c.name} identifies no observations in the sample.")
        elif j not in keep:
            c = Coef(c.name, c.group, c.level, c.order, "omitted")
            notes.append(f"note: {c.name} omitted because of collinearity.")
        else:
            kept.append(j)
        coefs.append(c)
    return kept, coefs, notes

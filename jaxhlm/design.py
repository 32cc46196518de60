"""Build the numeric design (y, X, Z, groups) from a :class:`ModelSpec` and a DataFrame.

This is one of the two places pandas lives (the other is rendering). It owns every data check: unknown
variables, listwise deletion of missing values, non-numeric columns, too few groups, and exactly collinear
fixed-effect columns, which are dropped later-column-first (the constant kept first) with a note as Stata
does. The fixed part is either formulaic syntax (lme4-style formulas) or Stata factor-variable terms
(:mod:`jaxhlm.factor`); both yield the same :class:`~jaxhlm.factor.Coef` layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from . import covariance as cov
from . import factor
from .errors import DataError, FormulaError
from .factor import CONSTANT, Coef, FixedTerms
from .formula import ModelSpec

#: A column whose residual norm after projection on the kept columns is below this fraction of its own
#: norm is collinear (lme4's rank tolerance).
COLLINEARITY_TOL = 1e-7


@dataclass(frozen=True, eq=False)
class Design:
    """Numeric arrays of one model plus the names and notes that describe them."""

    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    group: np.ndarray  # codes 0..n_groups-1
    group_labels: np.ndarray
    coefs: tuple[Coef, ...]  # every fixed-effect column in display order, omitted and empty ones included
    re_names: tuple[str, ...]
    blocks: cov.Structure
    response: str
    group_name: str
    constant: str | None  # name of the constant column (excluded from the model Wald test), if any
    n_dropped: int = 0
    notes: tuple[str, ...] = field(default=())
    sample: str = ""  # fingerprint of the estimation sample: rows, response, groups (lrtest compares them)

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
    def group_sizes(self) -> np.ndarray:
        return np.bincount(self.group, minlength=self.n_groups)


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
def _fixed_variables(fixed: str | FixedTerms) -> frozenset[str]:
    if isinstance(fixed, FixedTerms):
        return fixed.variables
    import formulaic

    try:
        return frozenset(formulaic.Formula(fixed).required_variables)
    except Exception as exc:  # formulaic's parser errors are of many types
        raise FormulaError(f"cannot parse the fixed part {fixed!r}: {exc}") from None


def _formulaic_columns(fixed: str, frame: pd.DataFrame) -> tuple[np.ndarray, list[Coef]]:
    import formulaic

    try:
        X_df = formulaic.model_matrix(fixed, frame, na_action="raise")
    except Exception as exc:
        raise FormulaError(f"cannot build the fixed-effects design from {fixed!r}: {exc}") from None
    return np.asarray(X_df, dtype=float), [Coef(str(c), order=str(c).count(":") + 1) for c in X_df.columns]


def _check_columns(spec: ModelSpec, data: pd.DataFrame, fixed_vars: frozenset[str]) -> None:
    columns = set(map(str, data.columns))

    def missing(names, what: str) -> None:
        absent = sorted(n for n in names if n not in columns)
        if absent:
            listing = ", ".join(map(str, list(data.columns)[:20]))
            raise FormulaError(
                f"{what} {', '.join(map(repr, absent))} not found in the data; available columns: {listing}"
            )

    missing([spec.response], "response")
    missing([spec.group], "grouping variable")
    missing([n for t in spec.random for n in t.slopes], "random-effect variable")
    missing(fixed_vars, "variable")


def _independent(X: np.ndarray, order: list[int]) -> set[int]:
    """Columns kept when each, in ``order``, is dropped if it lies in the span of those kept before it
    (Gram-Schmidt, twice)."""
    basis: list[np.ndarray] = []
    keep: set[int] = set()
    for j in order:
        v = X[:, j].astype(float)
        norm = np.linalg.norm(v)
        for _ in range(2):
            for b in basis:
                v = v - (b @ v) * b
        resid = np.linalg.norm(v)
        if norm > 0 and resid > COLLINEARITY_TOL * norm:
            basis.append(v / resid)
            keep.add(j)
    return keep


def _mark_dependent(X: np.ndarray, coefs: list[Coef], constant: str | None) -> tuple[np.ndarray, list[Coef], list[str]]:
    """Mark empty and collinear columns; the constant is considered first, then the columns in order."""
    names = [c.name for c in coefs]
    order = [j for j, c in enumerate(coefs) if not c.status]
    if constant in names:
        order.sort(key=lambda j: names[j] != constant)
    keep = _independent(X, order)
    notes = []
    for j, c in enumerate(coefs):
        if c.status == "empty":
            notes.append(f"note: {c.name} identifies no observations in the sample.")
        elif j not in keep:
            coefs[j] = Coef(c.name, c.group, c.level, c.order, "omitted")
            notes.append(f"note: {c.name} omitted because of collinearity.")
    kept = [j for j in range(len(coefs)) if j in keep]
    return X[:, kept], coefs, notes


def used_columns(spec: ModelSpec, data: pd.DataFrame) -> list[str]:
    """The columns the model reads, after checking that they exist (a :class:`FormulaError` names any absent)."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    fixed_vars = _fixed_variables(spec.fixed)
    _check_columns(spec, data, fixed_vars)
    return list(dict.fromkeys([spec.response, spec.group, *[n for t in spec.random for n in t.slopes],
                               *sorted(fixed_vars)]))


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


def build_design(spec: ModelSpec, data: pd.DataFrame, used: list[str] | None = None) -> Design:
    """Validate ``data`` against ``spec`` and build the arrays; raise :class:`DataError` with a remedy."""
    used = used_columns(spec, data) if used is None else used
    complete = data[used].notna().all(axis=1)
    n_dropped = int((~complete).sum())
    frame = data.loc[complete]
    if len(frame) == 0:
        raise DataError("no observations left: every row has a missing value in a variable the model uses")
    notes = []
    if n_dropped:
        notes.append(f"{n_dropped:,} observation{'s' if n_dropped > 1 else ''} dropped because of missing values")

    y = _numeric(frame, spec.response, "response")
    if np.ptp(y) == 0:
        raise DataError(f"the response {spec.response!r} is constant; there is nothing to model")
    codes, labels = pd.factorize(frame[spec.group], sort=True)
    if len(labels) < 2:
        raise DataError(
            f"the grouping variable {spec.group!r} has {len(labels)} level; a mixed model needs at least two "
            "groups (use ordinary regression for one)"
        )

    if isinstance(spec.fixed, FixedTerms):
        X, coefs = factor.expand(spec.fixed, frame)
        constant = CONSTANT if spec.fixed.constant else None
    else:
        X, coefs = _formulaic_columns(spec.fixed, frame)
        constant = "Intercept" if any(c.name == "Intercept" for c in coefs) else None
    if not coefs:
        raise DataError("the fixed-effects design is empty; include at least a constant")
    X, coefs, dependent = _mark_dependent(X, coefs, constant)
    notes = dependent + notes
    p = X.shape[1]
    if p == 0:
        raise DataError("the fixed-effects design is singular: every column is zero")
    if len(y) <= p:
        raise DataError(f"{len(y)} observations cannot identify {p} fixed effects plus variance components")

    Z = np.column_stack([
        np.ones(len(frame)) if n == CONSTANT else _numeric(frame, n, "random-effect variable")
        for t in spec.random for n in t.names
    ])
    ZtZ = Z.T @ Z
    if np.linalg.matrix_rank(ZtZ, tol=COLLINEARITY_TOL**2 * np.max(np.abs(ZtZ))) < Z.shape[1]:
        raise DataError(
            f"the random-effects design ({', '.join(spec.re_names)}) is singular: its columns are collinear; "
            "drop a redundant random effect"
        )
    return Design(
        y=y, X=X, Z=Z, group=codes.astype(np.int64), group_labels=np.asarray(labels),
        coefs=tuple(coefs), re_names=spec.re_names, blocks=spec.blocks, response=spec.response,
        group_name=spec.group, constant=constant, n_dropped=n_dropped,
        notes=tuple(notes), sample=fingerprint(frame, [spec.response, spec.group]),
    )

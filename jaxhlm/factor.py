"""Stata factor-variable terms (``i.``, ``ib#.``, ``c.``, ``#``) and their expansion into design columns.

The Stata front end (:mod:`jaxhlm.stata`) parses a varlist into :class:`FixedTerms`; this module turns them
into the columns of X with Stata's names, base levels and display layout, using the levels present in the
estimation sample. Columns are built per cell (:func:`cell_column`) for every cell, base cells included, and
the layout (:func:`layout`) is chosen once the whole sample's levels are known, so that data read in chunks,
where a level may first occur in a late chunk, is expanded as if read at once.

Base cells follow the model's hierarchy, as Stata's do. In a term, a cell whose factors are at their base
levels is left out when the lower-order term made of its remaining components is also in the model; for a
main effect that lower-order term is empty and the base level is always left out. So ``i.a##i.b`` keeps only
the non-base cells of ``a#b``, ``i.a#c.x`` without ``c.x`` keeps every level of ``a``, and ``i.a#i.b`` alone
keeps every cell but the one where both are at base.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import DataError, FormulaError

#: Base-level choices besides an explicit level: ``ib(first).``, ``ib(last).``, ``ib(freq).``, ``ibn.``.
BASE_RULES = ("first", "last", "freq", "none")


@dataclass(frozen=True)
class FVar:
    """One variable in a term: a factor (indicators of its levels) or a continuous variable."""

    name: str
    factor: bool
    base: int | str | None = None  # factor base level: None = lowest, a level, or one of BASE_RULES

    def __str__(self) -> str:
        if not self.factor:
            return f"c.{self.name}"
        if self.base is None:
            return f"i.{self.name}"
        if self.base == "none":
            return f"ibn.{self.name}"
        return f"ib{self.base}.{self.name}" if isinstance(self.base, int) else f"ib({self.base}).{self.name}"


@dataclass(frozen=True)
class Term:
    """A main effect or an interaction; factors come first, as Stata orders them (``sized#c.ses``)."""

    vars: tuple[FVar, ...]

    @property
    def key(self) -> frozenset[tuple]:
        """The term's identity for hierarchy checks (:func:`term_key`)."""
        return term_key((v.name, v.factor) for v in self.vars)

    @property
    def header(self) -> str:
        """The term's label: ``sized``, ``sized#c.ses``, ``female#sector``, ``c.ses#c.sector``, ``ses``."""
        if len(self.vars) == 1:
            return self.vars[0].name
        return "#".join(v.name if v.factor else f"c.{v.name}" for v in self.vars)

    def __str__(self) -> str:
        return "#".join(map(str, self.vars))


def term_key(variables: Iterable[tuple[str, bool]]) -> frozenset[tuple]:
    """A term's variables, each as factor or continuous, as a set in which a repeat counts (``c.ses#c.ses`` is
    {(ses, continuous), (ses, continuous, 2)}): set inclusion is then the terms' containment (``sized#c.ses`` within
    ``sized#c.ses#c.ses``) and set difference what is left of a term without some of its variables."""
    seen: dict[tuple[str, bool], int] = {}
    out = set()
    for v in variables:
        seen[v] = seen.get(v, 0) + 1
        out.add(v if seen[v] == 1 else (*v, seen[v]))
    return frozenset(out)


def term(*fvars: FVar) -> Term:
    """A term with Stata's component order: factors first, continuous after, each group as written."""
    return Term(tuple(v for v in fvars if v.factor) + tuple(v for v in fvars if not v.factor))


@dataclass(frozen=True)
class FixedTerms:
    """The fixed part of a Stata model: terms in expansion order, and whether there is a constant."""

    terms: tuple[Term, ...]
    constant: bool = True

    @classmethod
    def of(cls, terms: list[Term], constant: bool = True) -> "FixedTerms":
        """Repeated terms with a factor vanish, as in Stata's expansion; a repeated continuous term stays (and is
        later omitted because of collinearity, with a note)."""
        bases: dict[str, int | str | None] = {}
        for v in (v for t in terms for v in t.vars if v.factor):
            if bases.setdefault(v.name, v.base) != v.base:
                raise FormulaError(f"{v.name} has two base levels ({FVar(v.name, True, bases[v.name])} and {v}); "
                                   "give it the same one everywhere")
        kept: list[Term] = []
        for t in terms:
            if any(v.factor for v in t.vars) and t in kept:
                continue
            kept.append(t)
        return cls(tuple(kept), constant)

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(v.name for t in self.terms for v in t.vars)

    def __str__(self) -> str:
        return " ".join(map(str, self.terms)) + ("" if self.constant else ", noconstant")


@dataclass(frozen=True)
class Coef:
    """One fixed-effect column as the coefficient table shows it.

    ``group`` is the header of a factor-variable group (``sized#c.ses``) under which the row reads ``level``
    (``2``); inline rows have ``group=None``. ``order`` is the number of variables in the term (a separator
    goes between rows of different order). ``status`` is ``""``, ``"omitted"`` (collinear) or ``"empty"``.
    """

    name: str
    group: str | None = None
    level: str = ""
    order: int = 1
    status: str = ""


CONSTANT = "_cons"


def levels(frame: pd.DataFrame, v: FVar) -> np.ndarray:
    """The sorted integer levels of factor ``v`` present in ``frame`` (checked to be non-negative integers)."""
    col = frame[v.name]
    if pd.api.types.is_bool_dtype(col):
        col = col.astype(int)
    if not pd.api.types.is_numeric_dtype(col):
        raise DataError(f"factor variable {v.name!r} is not numeric (dtype {col.dtype}); i. needs non-negative "
                        "integer codes: recode it first")
    values = col.to_numpy(dtype=float)
    bad = values[(values != np.round(values)) | (values < 0)]
    if bad.size:
        raise DataError(f"factor variable {v.name!r} has values that are not non-negative integers (e.g. "
                        f"{bad[0]:g}); i. needs integer codes 0, 1, 2, …: recode it or use c.{v.name}")
    return np.unique(values).astype(np.int64)


def _base(v: FVar, levels: np.ndarray, counts: dict[int, int]) -> int | None:
    if v.base is None or v.base == "first":
        return int(levels[0])
    if v.base == "last":
        return int(levels[-1])
    if v.base == "none":
        return None
    if v.base == "freq":
        top = max(counts.values())
        return min(level for level, c in counts.items() if c == top)
    if v.base not in levels:
        raise DataError(f"base level {v.base} of {v.name!r} does not occur in the estimation sample; its levels "
                        f"are {' '.join(map(str, levels))}")
    return int(v.base)


#: One cell of a term: (index of the term in :attr:`FixedTerms.terms`, the levels of its factors in order).
Cell = tuple[int, tuple[int, ...]]


def cells(fixed: FixedTerms, levels: dict[str, np.ndarray]) -> list[Cell]:
    """Every cell of every term over ``levels`` (factor name → levels), base cells included."""
    return [(i, cell) for i, t in enumerate(fixed.terms)
            for cell in itertools.product(*(levels[v.name] for v in t.vars if v.factor))]


def cell_column(fixed: FixedTerms, cell: Cell, frame: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """The column of ``cell`` in ``frame`` (indicator of its levels times its continuous variables), and
    whether any row of ``frame`` is in the cell."""
    t = fixed.terms[cell[0]]
    column = np.ones(len(frame))
    indicator = np.ones(len(frame), dtype=bool)
    at = iter(cell[1])
    for v in t.vars:
        values = frame[v.name].to_numpy(dtype=float)
        if v.factor:
            indicator &= values == next(at)
        else:
            column = column * values
    return column * indicator, bool(indicator.any())


def layout(fixed: FixedTerms, levels: dict[str, np.ndarray], counts: dict[str, dict[int, int]]
           ) -> list[tuple[Cell | None, Coef]]:
    """The coefficient rows of X in Stata's order and names, each with its cell (``None`` for the constant, last).

    ``levels`` are the sample's levels of each factor and ``counts`` their frequencies (for ``ib(freq).``).
    Cells at base levels are left out by the rule in the module docstring.
    """
    keys = {t.key for t in fixed.terms}
    rows: list[tuple[Cell | None, Coef]] = []
    for i, t in enumerate(fixed.terms):
        factors = [v for v in t.vars if v.factor]
        bases = [_base(v, levels[v.name], counts[v.name]) for v in factors]
        kept = []
        for cell in itertools.product(*(levels[v.name] for v in factors)):
            at_base = {(v.name, True) for v, lv, b in zip(factors, cell, bases) if lv == b}
            rest = t.key - at_base
            if at_base and (not rest or rest in keys):
                continue
            kept.append(tuple(int(c) for c in cell))
        inline = not factors or (len(t.vars) == 1 and len(kept) == 1)
        for cell in kept:
            parts, lv = [], iter(cell)
            for v in t.vars:
                if v.factor:
                    parts.append(f"{next(lv)}.{v.name}")
                else:
                    parts.append(f"c.{v.name}" if len(t.vars) > 1 else v.name)
            rows.append(((i, cell), Coef("#".join(parts), None if inline else t.header, " ".join(map(str, cell)),
                                         len(t.vars))))
    if fixed.constant:
        rows.append((None, Coef(CONSTANT)))
    return rows

"""Stata expressions: the ``if`` and ``in`` qualifiers that select a command's rows, and the values that
``generate``, ``replace`` and ``egen`` compute in do-files.

``mixed mathach ses if sector == 1 & !missing(size) in 1/5000 || id:`` fits the rows where the expression is
true, among the rows in the range. An expression is parsed once, against the data's variable names (with
Stata's abbreviations), into a small tree (:class:`Subset` holds a qualifier's; hashable, so a parsed model
stays a cache key) and evaluated per chunk of rows with NumPy, with Stata's semantics:

- a numeric missing value (NaN) is larger than every number, so ``x > 5`` is true where x is missing and
  ``x == .`` tests for missing; arithmetic with a missing value is missing;
- ``&``, ``|`` and ``!`` treat any non-zero value, missing included, as true and return 0 or 1;
- operators, loosest first: ``|``; ``&``; relational (``==``, ``!=``/``~=``, ``<``, ``<=``, ``>``, ``>=``); ``+``
  ``-``; ``*`` ``/``; unary ``-``; ``^``; ``!``/``~``;
- functions: ``missing()``, ``inlist()``, ``inrange()``, ``abs()``, ``exp()``, ``ln()``/``log()``, ``log10()``,
  ``sqrt()``, ``int()``, ``floor()``, ``ceil()``, ``round()``, ``mod()``, ``min()``, ``max()``; string variables
  compare with string literals (``"..."``).

``in f/l`` takes Stata's ranges: ``in 5``, ``in 1/100``, ``in -10/l`` (``f`` first, ``l`` last, negative
counts from the end), 1-based and inclusive. Listwise deletion of missing values then applies only to the
rows selected, as Stata's ``marksample`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import pandas as pd
from scipy import special

from .errors import DataError, FormulaError

#: A parsed expression: ("num", value) | ("str", text) | ("var", name) | (operator, operand, ...) | ("call",
#: name, (argument, ...)).
Node = tuple[Any, ...]

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\.[a-z]?(?![\w]))
  | (?P<str>"[^"]*")
  | (?P<name>[A-Za-z_][\w]*)
  | (?P<op>==|!=|~=|<=|>=|[-+*/^<>&|!~(),\[\]]))""", re.X)

#: Hidden columns of a frame that give each row its place in its by-group (:func:`with_rows`): Stata's ``_n``,
#: ``_N``, and the group's first row, which explicit subscripts (``x[_n-1]``) count from
ROW_N, ROW_COUNT, ROW_START = "__n", "__N", "__start"


def with_rows(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``frame`` with each row's ``_n`` and ``_N`` within the runs of equal ``by`` values in the frame's order
    (Stata's by-groups of sorted data; the whole frame without ``by``), for row-wise expressions."""
    n = len(frame)
    start = np.zeros(n, int)
    if by and n:
        same = np.ones(n - 1, bool)  # a row continues its predecessor's group: equal in every by-variable
        for name in by:  # (missing values, NaN, form one group, as in Stata)
            s = frame[name].reset_index(drop=True)
            a, b = s.iloc[1:].reset_index(drop=True), s.iloc[:-1].reset_index(drop=True)
            same &= ((a == b) | (a.isna() & b.isna())).to_numpy()
        start = np.maximum.accumulate(np.where(np.concatenate([[True], ~same]), np.arange(n), 0))
    ends = np.append(np.flatnonzero(np.diff(start)) + 1, n) if n else np.zeros(0, int)
    sizes = np.diff(np.concatenate([[0], ends]))
    return frame.assign(**{ROW_N: np.arange(n) - start + 1.0, ROW_COUNT: np.repeat(sizes, sizes).astype(float),
                           ROW_START: start})


_RELATIONAL = {"==": np.equal, "!=": np.not_equal, "~=": np.not_equal, "<": np.less, "<=": np.less_equal,
               ">": np.greater, ">=": np.greater_equal}
_ARITHMETIC = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}
_MATH: dict[str, tuple[Callable[..., np.ndarray], int]] = {
    "abs": (np.abs, 1), "exp": (np.exp, 1), "ln": (np.log, 1), "log": (np.log, 1), "log10": (np.log10, 1),
    "sqrt": (np.sqrt, 1), "int": (np.trunc, 1), "floor": (np.floor, 1), "ceil": (np.ceil, 1),
    "mod": (lambda x, y: x - y * np.floor(x / y), 2),
    # Stata's distribution functions, for tests computed by hand (display chi2tail(1, 2*(ll1 - ll0)))
    "normal": (special.ndtr, 1), "invnormal": (special.ndtri, 1), "chi2tail": (special.chdtrc, 2),
    "invchi2tail": (special.chdtri, 2), "ttail": (lambda df, t: special.stdtr(df, -t), 2),
    "Ftail": (special.fdtrc, 3),
    "logit": (special.logit, 1), "invlogit": (special.expit, 1), "sign": (np.sign, 1),
    "float": (lambda x: np.asarray(x, dtype=np.float32).astype(float), 1),  # Stata's float(): single precision
}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if text[pos:].lstrip().startswith("=") and (m is None or m.group("op") != "=="):
            raise FormulaError("'=' assigns in Stata; an if expression compares with '==', e.g. if sector == 1")
        if m is None or m.end() == pos:
            raise FormulaError(f"cannot read the if expression at {text[pos:].strip()!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over Stata's precedence levels (module docstring)."""

    def __init__(self, text: str, resolve: Callable[[str], str], rows: bool = False):
        self.text, self.toks, self.i, self.resolve, self.rows = text, _tokens(text), 0, resolve, rows

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise FormulaError(f"the if expression {self.text.strip()!r} ends early"
                               + (f"; expected {expected!r}" if expected else ""))
        tok = self.toks[self.i]
        if expected is not None and tok[1] != expected:
            raise FormulaError(f"expected {expected!r} in the if expression, found {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.binary(0)
        if self.i < len(self.toks):
            raise FormulaError(f"unexpected {self.toks[self.i][1]!r} in the if expression {self.text.strip()!r}")
        return node

    _LEVELS: tuple[tuple[str, ...], ...] = (("|",), ("&",), tuple(_RELATIONAL), ("+", "-"), ("*", "/"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.negation()
        node = self.binary(level + 1)
        while self.peek() in self._LEVELS[level]:
            op = self.take()[1]
            node = (op, node, self.binary(level + 1))
        return node

    def negation(self) -> Node:
        if self.peek() == "-":
            self.take()
            return ("neg", self.negation())
        return self.power()

    def power(self) -> Node:
        node = self.logical_not()
        while self.peek() == "^":
            self.take()
            node = ("^", node, self.logical_not())
        return node

    def logical_not(self) -> Node:
        if self.peek() in ("!", "~"):
            self.take()
            return ("!", self.logical_not())
        return self.primary()

    def primary(self) -> Node:
        kind, text = self.take()
        if text == "(":
            node = self.binary(0)
            self.take(")")
            return node
        if kind == "num":
            return ("num", np.nan if text.startswith(".") and not text[1:2].isdigit() else float(text))
        if kind == "str":
            return ("str", text[1:-1])
        if kind == "name" and self.peek() == "(":
            if text not in _ARITY:
                raise FormulaError(f"function {text}() is not supported in if expressions; jaxhlm evaluates "
                                   f"{', '.join(f + '()' for f in _ARITY)}")
            self.take()
            args: list[Node] = []
            while self.peek() != ")":
                args.append(self.binary(0))
                if self.peek() != ")":
                    self.take(",")
            self.take(")")
            return _call(text, tuple(args))
        if kind == "name":
            if text in ("_n", "_N"):
                if not self.rows:
                    raise FormulaError(f"{text} is not supported in a model's if qualifier (its rows may be read in "
                                       "chunks); use in f/l for row ranges, or generate a variable from it first")
                return ("obs", text)
            if self.peek() == "[":  # an explicit subscript: the value at row [exp] of the (by-)group
                if not self.rows:
                    raise FormulaError(f"{text}[...]: explicit subscripts are not supported in a model's if "
                                       "qualifier; generate a variable from it first")
                self.take("[")
                index = self.binary(0)
                self.take("]")
                return ("sub", self.resolve(text), index)
            return ("var", self.resolve(text))
        raise FormulaError(f"unexpected {text!r} in the if expression {self.text.strip()!r}")


#: Stata's string functions: (each value's result, the arguments' kinds: "s" a string, "n" a number)
_STRING: dict[str, tuple[Callable[..., Any], str]] = {
    "strlen": (len, "s"), "upper": (str.upper, "s"), "lower": (str.lower, "s"), "strtrim": (str.strip, "s"),
    "trim": (str.strip, "s"), "ltrim": (str.lstrip, "s"), "rtrim": (str.rstrip, "s"),
    "substr": (lambda s, a, n: _substr(s, a, n), "snn"),
    "strpos": (lambda s, t: s.find(t) + 1, "ss"),
    "subinstr": (lambda s, a, b, n: s.replace(a, b) if np.isnan(n) else s.replace(a, b, int(n)), "sssn"),
    "real": (lambda s: _real(s), "s"), "string": (lambda x: _string(x), "n"),
}


def _substr(s: str, start: float, length: float) -> str:
    """Stata's substr(s, n1, n2): n2 characters from position n1 (1-based; negative counts from the end; n2
    missing: to the end); empty where n1 lies outside s."""
    if np.isnan(start) or start == 0 or abs(start) > len(s):
        return ""
    at = int(start) - 1 if start > 0 else len(s) + int(start)
    return s[at:] if np.isnan(length) else s[at:at + max(int(length), 0)]


def _real(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return np.nan


def _string(x: float) -> str:
    """Stata's string(n): a whole number's digits, else up to 8 significant digits without a leading zero
    (``.5``), and ``.`` for missing."""
    if np.isnan(x):
        return "."
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = f"{x:.8g}"
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) and "e" not in text else text


#: The functions an if expression may call, and how many arguments each takes (None: a variable number).
_ARITY: dict[str, int | None] = {"missing": None, "inlist": None, "inrange": 3, "min": None, "max": None,
                                 "round": None, "cond": None, **{f: n for f, (_, n) in _MATH.items()},
                                 **{f: len(kinds) for f, (_, kinds) in _STRING.items()}}


def _call(name: str, args: tuple[Node, ...]) -> Node:
    want = _ARITY[name]
    low = {"inlist": 2, "round": 1, "cond": 3}.get(name, 1)
    high = {"round": 2, "cond": 4}.get(name)
    if (want is not None and len(args) != want) or len(args) < low or (high is not None and len(args) > high):
        raise FormulaError(f"{name}() takes {want if want is not None else f'at least {low}'} arguments, got "
                           f"{len(args)}")
    return ("call", name, args)


def variables(node: Node) -> set[str]:
    """The data variables an expression reads."""
    if node[0] == "var":
        return {node[1]}
    if node[0] == "call":
        return set().union(*(variables(a) for a in node[2]))
    if node[0] == "obs":
        return set()
    if node[0] == "sub":
        return {node[1]} | variables(node[2])
    return set().union(*(variables(a) for a in node[1:] if isinstance(a, tuple)))


Value = Union[np.ndarray, float, str]


def _is_text(v: Value) -> bool:
    return isinstance(v, str) or (isinstance(v, np.ndarray) and v.dtype == object)


def _number(v: Value, what: str) -> np.ndarray | float:
    if _is_text(v):
        raise DataError(f"type mismatch in the if expression: {what} needs numbers, got a string")
    return v  # type: ignore[return-value]


def _ordered(v: Value) -> Value:
    """Stata's order for comparisons: a missing value above every number."""
    return v if _is_text(v) else np.where(np.isnan(v), np.inf, v)


def _truth(v: Value) -> np.ndarray:
    """Stata's truth: non-zero (missing included) is true."""
    return np.asarray(_number(v, "a logical operator")) != 0


def parse_expression(text: str, resolve: Callable[[str], str], rows: bool = False) -> Node:
    """An expression's tree; ``resolve`` maps a variable name (or Stata's abbreviation of one) to a column. With
    ``rows`` (a do-file's commands on the data in memory) it may read ``_n``, ``_N`` and explicit subscripts
    ``var[exp]``, evaluated within the frame's by-groups (:func:`with_rows`)."""
    return _Parser(text, resolve, rows).parse()


def evaluate(node: Node, frame: pd.DataFrame) -> np.ndarray:
    """An expression's value on each row of ``frame``: floats (NaN for missing) or, for a string expression,
    an object array of str."""
    value = _evaluate(node, frame)
    return np.broadcast_to(np.asarray(value, dtype=object if _is_text(value) else float), (len(frame),)).copy()


def _evaluate(node: Node, frame: pd.DataFrame) -> Value:
    op = node[0]
    if op in ("num", "str"):
        return node[1]
    if op == "var":
        col = frame[node[1]]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            return col.to_numpy(dtype=float)
        return col.fillna("").astype(str).to_numpy(dtype=object)
    if op == "call":
        return _function(node[1], [_evaluate(a, frame) for a in node[2]])
    if op in ("obs", "sub") and ROW_N not in frame.columns:
        frame = with_rows(frame)
    if op == "obs":
        return frame[ROW_N if node[1] == "_n" else ROW_COUNT].to_numpy(dtype=float)
    if op == "sub":  # the value at row [index] of the row's group, missing outside it
        index = np.trunc(np.broadcast_to(np.asarray(_number(_evaluate(node[2], frame), "a subscript"), float),
                                         (len(frame),)))
        inside = (index >= 1) & (index <= frame[ROW_COUNT].to_numpy())
        at = np.where(inside, frame[ROW_START].to_numpy() + np.nan_to_num(index) - 1, 0).astype(int)
        values = _evaluate(("var", node[1]), frame)
        return np.where(inside, values[at], "" if _is_text(values) else np.nan)
    args = [_evaluate(a, frame) for a in node[1:]]
    if op == "neg":
        return -np.asarray(_number(args[0], "'-'"))
    if op == "!":
        return (~_truth(args[0])).astype(float)
    if op in ("&", "|"):
        a, b = (_truth(x) for x in args)
        return (a & b if op == "&" else a | b).astype(float)
    if op in _RELATIONAL:
        a, b = args
        if _is_text(a) != _is_text(b):
            raise DataError("type mismatch in the if expression: a string is compared with a number")
        return _RELATIONAL[op](_ordered(a), _ordered(b)).astype(float)
    if op == "+" and _is_text(args[0]) and _is_text(args[1]):  # string concatenation
        return np.char.add(np.asarray(args[0], dtype=str), np.asarray(args[1], dtype=str)).astype(object)
    a, b = (_number(x, f"'{op}'") for x in args)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = _ARITHMETIC[op](a, b)
    return np.where(np.isfinite(out), out, np.nan)  # division by zero is missing


def _function(name: str, args: Sequence[Value]) -> Value:
    if name == "missing":
        return np.logical_or.reduce([(x == "") if _is_text(x) else np.isnan(x) for x in args]).astype(float)
    if name == "inlist":
        z = _ordered(args[0])
        return np.logical_or.reduce([np.equal(z, _ordered(a)) for a in args[1:]]).astype(float)
    if name == "cond":  # Stata's: a where x is true, b where false, c (or a) where x is missing
        x = np.asarray(_number(args[0], "cond()"), dtype=float)
        chosen = np.where(np.isnan(x), 0, np.where(x != 0, 1, 2))
        missing = args[3] if len(args) > 3 else args[1]
        if len({_is_text(a) for a in args[1:]}) > 1:
            raise DataError("type mismatch in cond(): its results must all be numbers or all strings")
        return np.choose(chosen, np.broadcast_arrays(*[np.asarray(a, dtype=object if _is_text(a) else float)
                                                       for a in (missing, args[1], args[2])]))
    if name in _STRING:  # value by value, strings and numbers as the function wants them
        fcn, kinds = _STRING[name]
        for a, kind in zip(args, kinds):
            if _is_text(a) != (kind == "s"):
                raise DataError(f"type mismatch in {name}(): an argument needs {'a string' if kind == 's' else 'a number'}")
        columns = np.broadcast_arrays(*[np.asarray(a, dtype=object if k == "s" else float) for a, k in zip(args, kinds)])
        if columns[0].ndim == 0:  # constants: one value
            value = fcn(*(c.item() for c in columns))
            return value if isinstance(value, str) else float(value)
        out = [fcn(*values) for values in zip(*columns)]
        text = isinstance(out[0], str) if out else kinds[0] == "s" and name not in ("strlen", "strpos", "real")
        return np.asarray(out, dtype=object if text else float)
    numbers = [np.asarray(_number(a, f"{name}()"), dtype=float) for a in args]
    if name == "inrange":  # Stata's rules: z missing gives 0; a missing bound is no bound
        z, a, b = numbers
        low, high = np.where(np.isnan(a), -np.inf, a), np.where(np.isnan(b), np.inf, b)
        return (~np.isnan(z) & (low <= z) & (z <= high)).astype(float)
    if name in ("min", "max"):  # missing values are ignored unless all are missing
        stacked = np.broadcast_arrays(*numbers)
        with np.errstate(all="ignore"):
            return (np.fmin if name == "min" else np.fmax).reduce(stacked)
    if name == "round":
        unit = numbers[1] if len(numbers) > 1 else 1.0
        return np.floor(numbers[0] / unit + 0.5) * unit
    with np.errstate(all="ignore"):
        out = _MATH[name][0](*numbers)
    return np.where(np.isfinite(out), out, np.nan)


_RANGE = re.compile(r"^\s*(-?\d+|[fl])\s*(?:/\s*(-?\d+|[fl])\s*)?$")


@dataclass(frozen=True)
class Subset:
    """A parsed ``if`` expression (None: every row) and ``in`` range (Stata's 1-based bounds, negative from the
    end; None: every row)."""

    condition: Node | None = None
    text: str = ""
    first: int | None = None
    last: int | None = None

    @property
    def variables(self) -> list[str]:
        return sorted(variables(self.condition)) if self.condition is not None else []

    @property
    def has_range(self) -> bool:
        return self.first is not None

    def mask(self, frame: pd.DataFrame, offset: int = 0, total: int | None = None) -> np.ndarray:
        """Which rows of ``frame`` (rows ``offset``… of data with ``total`` rows) the command uses."""
        keep = np.ones(len(frame), bool)
        if self.has_range:
            n = total if total is not None else offset + len(frame)
            first, last = (k + n + 1 if k < 0 else k for k in (self.first, self.last))
            if not 1 <= first <= last <= n:
                raise DataError(f"in {self.first}/{self.last}: the range is outside the data's {n:,} rows (Stata's "
                                "'Obs. nos. out of range')")
            at = offset + 1 + np.arange(len(frame))
            keep &= (at >= first) & (at <= last)
        if self.condition is not None:
            value = _evaluate(self.condition, frame)
            keep &= np.broadcast_to(_truth(value), keep.shape)
        return keep


def parse_subset(condition: str | None, in_range: str | None, resolve: Callable[[str], str], rows: bool = False
                 ) -> Subset | None:
    """The qualifiers of a command, or None without any. ``resolve`` maps a variable name (or Stata's
    abbreviation of one) to a column; ``rows`` as :func:`parse_expression`'s."""
    if condition is None and in_range is None:
        return None
    node = parse_expression(condition, resolve, rows) if condition is not None else None
    first = last = None
    if in_range is not None:
        m = _RANGE.match(in_range)
        if m is None:
            raise FormulaError(f"in {in_range.strip()}: a range is written in #, in #/#, in f/l or in -#/l")
        bound = {"f": 1, "l": -1}
        first = bound.get(m.group(1)) or int(m.group(1))
        last = bound.get(m.group(2) or m.group(1)) or int(m.group(2) or m.group(1))
        if first == 0 or last == 0:
            raise FormulaError(f"in {in_range.strip()}: rows are numbered from 1")
    return Subset(node, (condition or "").strip(), first, last)

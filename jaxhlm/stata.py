"""Stata's ``mixed`` syntax: a thin front end that turns a command into a :class:`~jaxhlm.formula.ModelSpec`.

``mixed depvar fe_varlist [fweight=varname | pweight=varname] [, noconstant] || group: [re_varlist] [,
covariance(...) noconstant pweight(varname)] [|| cluster: …] [, mle reml vce(...) pwscale(...)]``; a second level
variable (``|| school: || class:``) is a level nested in the first, its values counted within each group (as Stata
reads them). ``|| _all: R.item`` (Stata's device for crossed effects: a
random intercept per value of item within the one group of all observations) makes item a grouping factor of
its own, crossed with a level that follows (``|| _all: R.item || subj: x``) or with a second ``_all: R.``.

The fixed part is a Stata factor-variable varlist: ``i.x``, ``ib2.x``, ``ib(last).x``, ``ibn.x``, ``c.x``,
``a#b``, ``a##b``, parentheses (``i.(a b)``, ``a##(b c.x)``), and variable lists with Stata's name
abbreviations, wildcards (``x*``) and ranges (``x1-x3``), resolved against the data's columns as Stata does.
A bare variable is continuous unless it takes part in an interaction. Random effects default to
``covariance(independent)``, as in Stata.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
from dataclasses import replace
from typing import Sequence


from .design import Data
from .errors import FormulaError
from .factor import FixedTerms, FVar, Term, term
from .formula import OBSERVATIONS, Display, ModelSpec, RandomTerm, random_term
from .expressions import Subset, parse_subset
from .results import MixedResult, Regression

_TOKEN = re.compile(
    r"\s+|(?P<ff>##)|(?P<f>#)|(?P<open>\()|(?P<close>\))"
    r"|(?P<op>(?:ibn|ib\((?:first|last|freq|\d+)\)|ib\d+|b\d+|i|c)\.)"
    r"|(?P<name>[A-Za-z_*?~][\w*?~]*(?:-[A-Za-z_][\w]*)?)"
)
#: Options: (full name, length of the shortest abbreviation Stata accepts).
_COV = ("covariance", 3)
_NOCONS = ("noconstant", 3)
_GLOBAL = {"mle": ("mle", 2), "reml": ("reml", 4), "nolog": ("nolog", 4), "log": ("log", 3),
           "variance": ("variance", 3)}
_KINDS = {"identity": 2, "independent": 3, "exchangeable": 2, "unstructured": 2}


def abbreviates(word: str, full: str, shortest: int) -> bool:
    """Whether ``word`` is Stata's abbreviation of ``full``: a prefix at least ``shortest`` letters long."""
    return full.startswith(word) and len(word) >= shortest


class Columns:
    """The data's variable names, for resolving Stata varlists: exact names, unique abbreviations, wildcards
    (``*``, ``?``, ``~``) and ranges (``a-b`` in column order)."""

    def __init__(self, names: Sequence[str]):
        self.names = [str(n) for n in names]

    def resolve(self, token: str) -> list[str]:
        if token in self.names:
            return [token]
        if "-" in token:
            a, b = (self.resolve(t)[0] for t in token.split("-", 1))
            i, j = self.names.index(a), self.names.index(b)
            if i > j:
                raise FormulaError(f"variable range {token}: {a} comes after {b} in the data")
            return self.names[i:j + 1]
        if any(c in token for c in "*?~"):
            hits = [n for n in self.names if fnmatch.fnmatchcase(n, token.replace("~", "*"))]
            if not hits or ("~" in token and len(hits) > 1):
                raise FormulaError(f"variable {token} not found" if not hits else f"{token} ambiguous abbreviation")
            return hits
        hits = [n for n in self.names if n.startswith(token)]
        if len(hits) == 1:
            return hits
        if hits:
            raise FormulaError(f"{token} ambiguous abbreviation (matches {', '.join(hits[:6])})")
        raise FormulaError(f"variable {token} not found; the data have: {', '.join(self.names[:30])}")

    def one(self, token: str, role: str) -> str:
        hits = self.resolve(token)
        if len(hits) != 1:
            raise FormulaError(f"the {role} must be one variable; {token} means {' '.join(hits)}")
        return hits[0]


# ---- factor-variable varlists --------------------------------------------------------------------------
Leaf = tuple[str, object]  # (variable, operator): None (bare), "c", or ("i", base)


def _operator(text: str) -> object:
    op = text[:-1]
    if op == "c":
        return "c"
    if op == "i":
        return ("i", None)
    if op == "ibn":
        return ("i", "none")
    base = op[3:-1] if op.startswith("ib(") else op.lstrip("ib")
    return ("i", int(base) if base.isdigit() else base)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].split()[0]
            raise FormulaError(f"invalid term {bad!r} in {text.strip()!r}: use variable names with the "
                               "operators i., ib#., ib(first|last|freq)., ibn., c., # and ##")
        if m.lastgroup:
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


class _VarlistParser:
    """Recursive descent over the tokens of a factor-variable varlist."""

    def __init__(self, text: str, columns: Columns):
        self.text, self.columns, self.toks, self.i = text, columns, _tokens(text), 0

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def items(self, closing: bool = False) -> list[Term]:
        terms: list[Term] = []
        while self.peek() not in (None, "close"):
            terms += self.chain()
        if closing:
            if self.peek() != "close":
                raise FormulaError(f"unbalanced parentheses in {self.text.strip()!r}")
            self.take()
        elif self.peek() == "close":
            raise FormulaError(f"unbalanced parentheses in {self.text.strip()!r}")
        return terms

    def unit(self, op: object = None) -> list[tuple[Leaf, ...]]:
        kind, text = self.take() if self.peek() is not None else (None, "")
        if kind == "op":
            if op is not None:
                raise FormulaError(f"two operators in a row at {text!r} in {self.text.strip()!r}")
            return self.unit(_operator(text))
        if kind == "name":
            return [((name, op),) for name in self.columns.resolve(text)]
        if kind == "open":
            inner: list[tuple[Leaf, ...]] = []
            start = self.i
            while self.peek() not in (None, "close"):
                inner += [tuple((n, o if o is not None else op) for n, o in leaves) for leaves in self.chain_raw()]
            if self.peek() != "close":
                raise FormulaError(f"unbalanced parentheses in {self.text.strip()!r}")
            self.take()
            if self.i == start + 1:
                raise FormulaError(f"empty parentheses in {self.text.strip()!r}")
            return inner
        raise FormulaError(f"a variable is missing before or after {text or 'the end'!r} in {self.text.strip()!r}")

    def chain_raw(self) -> list[tuple[Leaf, ...]]:
        """One chain ``u1 # u2 ## u3 …`` as leaf tuples, bare leaves resolved by whether it interacts."""
        parts: list[list[tuple[Leaf, ...]]] = [self.unit()]
        seps: list[str] = []
        while self.peek() in ("f", "ff"):
            seps.append(self.take()[0])
            parts.append(self.unit())
        interacts = bool(seps)
        # '#' binds tighter than '##': multiply the '#' runs, then take the full factorial of the runs.
        runs, run = [], parts[0]
        for sep, part in zip(seps, parts[1:]):
            if sep == "f":
                run = [a + b for a, b in itertools.product(run, part)]
            else:
                runs.append(run)
                run = part
        runs.append(run)
        out: list[tuple[Leaf, ...]] = []
        for pick in itertools.product(*runs):
            for size in range(1, len(pick) + 1):
                for combo in itertools.combinations(pick, size):
                    leaves = tuple(leaf for part in combo for leaf in part)
                    leaves = tuple((n, o if o is not None else (("i", None) if interacts else None))
                                   for n, o in leaves)
                    if leaves not in out:
                        out.append(leaves)
        return out

    def chain(self) -> list[Term]:
        return [term(*(FVar(n, o not in (None, "c"), None if o in (None, "c") else o[1]) for n, o in leaves))
                for leaves in self.chain_raw()]


def parse_varlist(text: str, columns: Columns) -> list[Term]:
    """The terms of a factor-variable varlist, in Stata's expansion order."""
    return _VarlistParser(text, columns).items()


#: Stata's contrast operators (r.sector, ar.sector, ...): named contrasts, not ANOVA-style tests of terms
#: Stata's contrast operators this reads: reference (r., rb#. for level # as base), adjacent (a.), reverse
#: adjacent (ar.), grand mean (g.), Helmert (h.) and reverse Helmert (j.)
_CONTRAST_OPERATOR = re.compile(r"(?<![\w.])(r|rb\d+|a|ar|g|h|j)\.(?=[A-Za-z_(])", re.I)
#: those it does not (weighted and polynomial contrasts)
_OTHER_OPERATOR = re.compile(r"(?<![\w.])(gw|hw|jw|p|q|pw|qw)\.", re.I)


def contrast_terms(text: str, columns: Sequence[str], command: str = "contrast"
                   ) -> list[tuple[Term, dict[str, str], tuple[str, ...]]]:
    """The terms of contrast's termlist, each with its factors' contrast operators ({variable: "r", "rb2", "ar",
    ...}; a factor without one is tested jointly) and the factors its effects are taken within (Stata's ``@``:
    ``sector@sized`` is sector's effect at each size, the term being ``sector#sized``): a factor-variable varlist in
    which a variable without an operator is a factor (``contrast sector`` is ``contrast i.sector``) and ``c.``
    marks a continuous one."""
    if "@" in text:
        out = []
        for token in text.split():
            left, at, right = token.partition("@")
            if not at:
                out += contrast_terms(left, columns, command)
                continue
            if "@" in right or "##" in token or not right:
                raise FormulaError(f"{command} {token}: the within operator takes one term on each side, "
                                   "a@b or a#b@c (no ##)")
            inner = contrast_terms(left, columns, command)
            within = [t for t, _, _ in contrast_terms(right, columns, command)]
            if len(inner) != 1 or len(within) != 1 or not all(v.factor for v in within[0].vars):
                raise FormulaError(f"{command} {token}: the within operator takes one term on each side, and factors "
                                   "after the @")
            (t, operators, _), names = inner[0], tuple(v.name for v in within[0].vars)
            out.append((term(*t.vars, *within[0].vars), operators, names))
        return out
    other = _OTHER_OPERATOR.search(text)
    if other:
        raise FormulaError(f"{command} {text.strip()}: the {other.group(1)}. operator is not supported; the operators "
                           "here are r. (rb#.), a., ar., g., h. and j.")
    operators: dict[str, str] = {}
    for op, var in re.findall(r"(?<![\w.])(r|rb\d+|a|ar|g|h|j)\.([A-Za-z_]\w*)", text, flags=re.I):
        if operators.setdefault(var, op.lower()) != op.lower():
            raise FormulaError(f"{command} {text.strip()}: {var} has two contrast operators ({operators[var]}. and "
                               f"{op.lower()}.); give one per contrast command")
    plain = _CONTRAST_OPERATOR.sub("", text)
    continuous = set(re.findall(r"(?<![\w.])c\.(\w+)", plain))
    terms = parse_varlist(plain, Columns(list(map(str, columns))))
    if not terms:
        raise FormulaError(f"{command} needs a term: {command} sector, {command} sector#sized, {command} "
                           "sector#c.ses")
    out = []
    for t in terms:
        t = term(*(FVar(v.name, True, v.base) if not v.factor and v.name not in continuous else v for v in t.vars))
        out.append((t, {v.name: operators[v.name] for v in t.vars if v.factor and v.name in operators}, ()))
    return out


# ---- the command ----------------------------------------------------------------------------------------
def split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside parentheses."""
    parts, depth, cur, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth == 0 and text.startswith(sep, i):
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        cur += c
        i += 1
    return parts + [cur]


def options(text: str) -> list[tuple[str, str | None]]:
    """Stata options ``name`` or ``name(argument)`` (parentheses nested up to three deep, as in margins'
    ``at(x=(-1(1)1))``), lower-cased names."""
    out = []
    for m in re.finditer(r"([A-Za-z_]\w*)(?:\(((?:[^()]|\((?:[^()]|\([^()]*\))*\))*)\))?|(\S)", text):
        if m.group(3):
            raise FormulaError(f"invalid option text {text.strip()!r}")
        out.append((m.group(1).lower(), m.group(2)))
    return out


def _covariance(arg: str | None) -> str:
    word = (arg or "").strip().lower()
    for kind, shortest in _KINDS.items():
        if word and abbreviates(word, kind, shortest):
            return kind
    raise FormulaError(f"covariance({arg}) is not a covariance structure; use identity, independent, "
                       "exchangeable or unstructured (abbreviated id, ind, exch, unstr)")


def parse_mixed(command: str, columns: Sequence[str]) -> ModelSpec:
    """Parse a ``mixed`` command (the word ``mixed`` optional) against the data's variable names."""
    cols = Columns(columns)
    text = re.sub(r"^\s*(?:xt)?mixed\b", "", " ".join(command.split()))
    equations = split_top(text, "||")
    settings: dict = {"reml": False, "dfmethod": None, "display": {}, "residual_by": None,
                      "residual_kind": "independent", "residual_order": None, "residual_time": None,
                      "vce": None, "cluster": None, "pwscale": None}
    fixed_text, *rest = split_top(equations[0], ",")
    fixed_opts = ",".join(rest)
    fixed_text, (weight_kind, weight) = _weight_clause(fixed_text, cols)
    level_pweights: list[str | None] = []
    fixed_text, subset = split_qualifiers(fixed_text, cols)
    constant = True
    for name, arg in options(fixed_opts):
        if abbreviates(name, *_NOCONS) and arg is None:
            constant = False
        else:
            _global_option(name, arg, settings)
    words = fixed_text.split(None, 1)
    if not words:
        raise FormulaError("mixed needs a dependent variable: mixed depvar [indepvars] || group: [varlist]")
    if not re.fullmatch(r"[A-Za-z_][\w*?~]*", words[0]):
        raise FormulaError(f"the dependent variable {words[0]} must be a plain variable name")
    response = cols.one(words[0], "dependent variable")
    fixed = FixedTerms.of(parse_varlist(words[1] if len(words) > 1 else "", cols), constant)
    random: list[RandomTerm] = []
    crossed: list[str] = []  # factors given as _all: R.varname
    for eq in equations[1:]:
        body, _, opts = eq.partition(",")
        if ":" not in body:
            raise FormulaError(f"random-effects equation {eq.strip()!r} needs a level variable and a colon, "
                               "e.g. '|| id: ses'")
        level, _, varlist = body.partition(":")
        if level.strip() == "_all":
            if len(random) > len(crossed):
                raise FormulaError(f"list the '_all: R.varname' equations first, as Stata does: {eq.strip()!r} "
                                   "follows a level equation")
            random.append(_factor_term(varlist, opts, cols, settings))
            crossed.append(random[-1].group)
            level_pweights.append(None)
            continue
        group = cols.one(level.strip(), "level variable")
        kind, intercept = "independent", True
        if not random or random[-1].group != group:  # a level's first equation: its groups' sampling weight
            level_pweights.append(None)
        for name, arg in options(opts):
            if abbreviates(name, *_COV):
                kind = _covariance(arg)
            elif abbreviates(name, *_NOCONS) and arg is None:
                intercept = False
            elif name == "pweight" and arg is not None:
                level_pweights[-1] = cols.one(arg.strip(), "pweight()")
            else:
                _global_option(name, arg, settings)
        if any(k in ("op", "f", "ff", "open") for k, _ in _tokens(varlist)):
            raise FormulaError(f"factor-variable notation is not allowed in the random part ({varlist.strip()}); "
                               "create the variables first (tabulate x, generate(x_))")
        slopes = [n for tok in varlist.split() for n in cols.resolve(tok)]
        random.append(random_term(slopes, intercept, group, kind))
    if not random:  # no random-effects equation: a linear regression
        random.append(random_term([], False, OBSERVATIONS, "identity"))
        level_pweights.append(None)
    if settings["dfmethod"] and not settings["reml"]:
        raise FormulaError(f"dfmethod({settings['dfmethod']}) requires REML estimation, as in Stata: add the reml "
                           "option")
    pweight = weight if weight_kind == "pweight" else None
    sampled = pweight is not None or any(level_pweights)
    vce = settings["vce"] or ("robust" if sampled else "oim")
    if sampled and settings["vce"] == "oim":
        raise FormulaError("vce(oim) not allowed with pweights: sampling weights give robust standard errors, as in "
                           "Stata")
    # A level after _all: R.x is nested in _all (the whole sample), not in x: its values count alone.
    return ModelSpec(response, fixed, tuple(random), settings["reml"], settings["dfmethod"], relative=not crossed,
                     freq_weights=weight if weight_kind == "fweight" else None, subset=subset,
                     display=Display(**settings["display"]),
                     residual_by=None if settings["residual_by"] is None
                     else cols.one(settings["residual_by"], "residuals(independent, by())"),
                     residual_kind=settings["residual_kind"], residual_order=settings["residual_order"],
                     residual_time=None if settings["residual_time"] is None
                     else cols.one(settings["residual_time"], "residuals(rspec, t())"),
                     all_factors=tuple(crossed), vce=vce,
                     cluster=None if settings["cluster"] is None else cols.one(settings["cluster"], "vce(cluster)"),
                     pweights=pweight, level_pweights=tuple(level_pweights) if sampled else (),
                     pwscale=settings["pwscale"])


def split_qualifiers(text: str, cols: Columns, rows: bool = False) -> tuple[str, Subset | None]:
    """A command's text without its ``if exp`` and ``in range`` qualifiers (either order), and the
    :class:`~jaxhlm.expressions.Subset` they select (None without them); ``rows``: the if expression may read
    ``_n``, ``_N`` and subscripts (a do-file's data commands)."""
    found = re.search(r"\bin\s+((?:-?\d+|[fl])(?:\s*/\s*(?:-?\d+|[fl]))?)(?=\s|$)", text)
    in_range = None
    if found is not None:
        in_range, text = found.group(1), text[:found.start()] + " " + text[found.end():]
    cut = re.search(r"\bif\b", text)
    condition = None
    if cut is not None:
        condition, text = text[cut.end():], text[:cut.start()]
        if not condition.strip():
            raise FormulaError("if needs an expression, e.g. if sector == 1")
    if re.search(r"\bin\b", text):
        raise FormulaError("in takes a range of rows: in #, in #/#, in f/l or in -#/l")
    return text, parse_subset(condition, in_range, lambda name: cols.one(name, "variable"), rows)


def _weight_clause(text: str, cols: Columns) -> tuple[str, tuple[str | None, str | None]]:
    """The fixed-effects equation without its ``[fweight=varname]`` or ``[pweight=varname]`` clause, and (the kind,
    ``"fweight"`` or ``"pweight"``, and the weight variable), (None, None) without one. Stata's other weights for
    ``mixed`` are refused with the reason."""
    found = re.search(r"\[([^\]]*)\]", text)
    if found is None:
        return text, (None, None)
    kind, eq, exp = found.group(1).partition("=")
    kind = kind.strip().lower()
    if not eq or not kind:
        raise FormulaError(f"weights are written [fweight=varname] or [pweight=varname]; got [{found.group(1)}]")
    kind = {"fw": "fweight", "frequency": "fweight", "pw": "pweight"}.get(kind, kind)
    if kind in ("fweight", "pweight"):
        if not re.fullmatch(r"\s*[A-Za-z_][\w]*\s*", exp):
            raise FormulaError(f"the {kind} must be a variable, got {exp.strip()!r}; generate it first")
        rest = text[:found.start()] + " " + text[found.end():]
        return rest, (kind, cols.one(exp.strip(), "weight variable"))
    kind = {"aw": "aweight", "iw": "iweight"}.get(kind, kind)
    raise FormulaError(f"{kind}s not allowed: mixed takes frequency weights, [fweight=varname], and sampling weights, "
                       "[pweight=varname] (precision weights, lme4's weights, are jaxhlm.fit(..., weights=...))")


def _factor_term(varlist: str, opts: str, cols: Columns, settings: dict) -> RandomTerm:
    """Stata's ``_all: R.varname``: random effects among the values of a factor variable, one per value with a
    common variance. Stata's device for crossed effects (a factor within the one group of all observations);
    here it is that factor's random intercept, crossed with the model's other level or nested in it as the
    data say."""
    found = re.fullmatch(r"\s*[Rr]\.([A-Za-z_][\w*?~]*)\s*", varlist)
    if found is None:
        raise FormulaError("'_all:' takes R.varname (crossed random effects among the values of a factor "
                           f"variable), got {varlist.strip()!r}; e.g. '|| _all: R.item'")
    for name, arg in options(opts):
        if abbreviates(name, *_COV):
            if _covariance(arg) != "identity":
                raise FormulaError(f"R.{found.group(1)} has one variance for all its values (identity); drop "
                                   f"covariance({arg})")
        else:
            _global_option(name, arg, settings)
    return random_term([], True, cols.one(found.group(1), "factor variable"), "identity")


#: Stata's display options of mixed that leave out a part of the report: option → :class:`Display` field.
_OMIT = {"noheader": "header", "nogroup": "group", "nofetable": "fixed_table", "noretable": "random_table",
         "nolrtest": "lr_test"}


def confidence_level(arg: str) -> float:
    """The argument of Stata's ``level(#)`` option: a confidence level in percent, from 10 to 99.99."""
    try:
        level = float(arg)
    except ValueError:
        level = math.nan
    if not 10 <= level <= 99.99:
        raise FormulaError(f"level({arg}) invalid: the confidence level must be between 10 and 99.99")
    return level


#: Stata's residual structures (``residuals(rspec)``) and their shortest abbreviations
_RESIDUALS = {"independent": 3, "exchangeable": 3, "ar": 2, "ma": 2, "unstructured": 2, "banded": 2, "toeplitz": 3,
              "exponential": 3}
_RESIDUALS_AVAILABLE = ("independent, exchangeable, ar [p], ma [q], exponential, toeplitz [q], banded [q] and "
                        "unstructured (t(varname) with the last six; by(varname) with any)")


def residual_structure(text: str) -> tuple[str, int | None]:
    """(kind, order) of a residual structure written as Stata's rspec (``"ar 1"``, ``"toeplitz 2"``, ``"unstr"``;
    the number may be run on: ``"ar1"``); the order is None where the structure takes none or every lag."""
    m = re.fullmatch(r"\s*([A-Za-z]+)\s*(\d+)?\s*", text)
    word = m.group(1).lower() if m else ""
    kind = next((k for k, shortest in _RESIDUALS.items() if word and abbreviates(word, k, shortest)), None)
    order = int(m.group(2)) if m and m.group(2) is not None else None
    if kind is None:
        raise FormulaError(f"residuals({text.strip()}) is not a residual structure; jaxhlm fits {_RESIDUALS_AVAILABLE}")
    if kind in ("ar", "ma"):
        if order == 0:
            raise FormulaError(f"residuals({text.strip()}): the order of {kind} residuals must be at least 1")
        return kind, order or 1
    if order is not None and (kind not in ("toeplitz", "banded") or (kind == "toeplitz" and order < 1)):
        raise FormulaError(f"residuals({text.strip()}): only toeplitz (q >= 1) and banded (q >= 0) take a number")
    return kind, order


def _residuals(arg: str) -> tuple[str, int | None, str | None, str | None]:
    """(kind, order, by, t) of ``residuals(rspec[, by(varname) t(varname)])`` (variables as written; resolved
    against the data later)."""
    rspec, _, rest = arg.partition(",")
    kind, order = residual_structure(rspec)
    parts = options(rest)
    by = [a.strip() for n, a in parts if abbreviates(n, "by", 2) and a]
    t = [a.strip() for n, a in parts if n == "t" and a]
    if not (all(len(v.split()) == 1 for v in by + t) and len(by) + len(t) == len(parts) and len(by) <= 1
            and len(t) <= 1):
        raise FormulaError(f"residuals({arg}): the options are by(varname) and t(varname)")
    return kind, order, (by[0] if by else None), (t[0] if t else None)


def _vce(arg: str) -> tuple[str, str | None]:
    """(vce, cluster variable) of Stata's ``vce(oim)``, ``vce(robust)`` and ``vce(cluster clustvar)``."""
    words = arg.split()
    if len(words) == 1 and abbreviates(words[0].lower(), "oim", 3):
        return "oim", None
    if len(words) == 1 and abbreviates(words[0].lower(), "robust", 1):
        return "robust", None
    if len(words) == 2 and abbreviates(words[0].lower(), "cluster", 2):
        return "robust", words[1]
    raise FormulaError(f"vce({arg}) is not available; mixed takes vce(oim), vce(robust) and vce(cluster clustvar)")


def _global_option(name: str, arg: str | None, settings: dict) -> None:
    """Apply an estimation or display option to ``settings`` (``reml``, ``dfmethod``, ``display``)."""
    if abbreviates(name, "level", 1) and arg is not None:
        settings["display"]["level"] = confidence_level(arg)
        return
    if arg is None and abbreviates(name, "stddeviations", 6):
        settings["display"]["stddeviations"] = True
        return
    if arg is None and name in _OMIT:
        settings["display"][_OMIT[name]] = False
        return
    if arg is not None and abbreviates(name, "residuals", 3):
        (settings["residual_kind"], settings["residual_order"], settings["residual_by"],
         settings["residual_time"]) = _residuals(arg)
        return
    if arg is not None and name == "vce":
        settings["vce"], settings["cluster"] = _vce(arg)
        return
    if arg is not None and name == "pwscale":
        settings["pwscale"] = arg.strip().lower()
        return
    if arg is not None and abbreviates(name, "dfmethod", 3):
        word = arg.strip().lower()
        method = next((m for m, shortest in (("satterthwaite", 4), ("kroger", 2), ("residual", 3)) if abbreviates(word, m, shortest)),
                      None)
        if method is None:
            raise FormulaError(f"dfmethod({arg}) is not available; jaxhlm computes dfmethod(satterthwaite), "
                               "dfmethod(kroger) and dfmethod(residual)")
        settings["dfmethod"] = method
        return
    for key, (full, shortest) in _GLOBAL.items():
        if arg is None and abbreviates(name, full, shortest):
            if key in ("reml", "mle"):
                settings["reml"] = key == "reml"
            return
    shown = name + (f"({arg})" if arg is not None else "")
    raise FormulaError(f"option {shown} not allowed; mixed here accepts mle, reml, dfmethod(satterthwaite|kroger|residual), "
                       "vce(oim|robust|cluster clustvar), pwscale(size|effective|gk), "
                       f"residuals(rspec[, by(varname) t(varname)]) with rspec {_RESIDUALS_AVAILABLE}, "
                       "nolog, level(#), variance, stddeviations, noheader, nogroup, nofetable, noretable, nolrtest, "
                       "and per equation covariance(identity|independent|exchangeable|unstructured), noconstant and "
                       "pweight(varname)")


def replay_display(text: str) -> Display:
    """The display of a replay, ``mixed, stddeviations`` (Stata's replay options: level(#), variance,
    stddeviations, noheader, nogroup, nofetable, noretable, nolrtest), from the defaults up: estimation options
    need a new fit."""
    settings: dict = {"display": {}}
    for name, arg in options(text):
        display = ((abbreviates(name, "level", 1) and arg is not None) or (arg is None and (
            abbreviates(name, "stddeviations", 6) or name in _OMIT or abbreviates(name, "variance", 3)
            or abbreviates(name, "nolog", 4) or abbreviates(name, "log", 3))))
        if not display:
            shown = name + (f"({arg})" if arg is not None else "")
            raise FormulaError(f"option {shown} not allowed when replaying results; replay takes level(#), variance, "
                               "stddeviations, noheader, nogroup, nofetable, noretable and nolrtest (refit the model "
                               "to change how it is estimated)")
        _global_option(name, arg, settings)
    return Display(**settings["display"])


def mixed(command: str, data: Data) -> MixedResult:
    """Fit a model written in Stata's ``mixed`` syntax; the result reports with Stata's names and layout.

    ``data`` is anything :func:`jaxhlm.fit` reads (a DataFrame, a dict of arrays, DataFrame chunks, a Parquet
    path); factor levels first seen in a late chunk are handled as if the data were read at once.

    Example:
      >>> import jaxhlm
      >>> r = jaxhlm.mixed("mathach c.ses##i.sector || id: ses, cov(unstr)", jaxhlm.datasets.hsb())
      >>> list(r.fe_params.index)
      ['ses', '1.sector', '1.sector#c.ses', '_cons']
    """
    from .datasets import value_labels
    from .design import with_columns
    from .pipeline import fit_spec

    labels = value_labels(data)  # a Stata dataset's, which the tables show its factors' levels by
    columns, data = with_columns(data)
    result = fit_spec(parse_mixed(command, columns), data)
    return level_labels(result, labels)


def parse_regress(command: str, columns: Sequence[str]) -> ModelSpec:
    """Parse a ``regress`` command (the word optional): ``depvar [indepvars] [if] [in] [fweight=var] [, noconstant
    vce(robust | cluster clustvar) robust cluster(clustvar) level(#) beta]``, a model without random effects fitted by
    ML (which :class:`~jaxhlm.results.Regression` reports as ``regress`` does)."""
    text = re.sub(r"^\s*reg(?:r(?:e(?:ss?)?)?)?\b", "", " ".join(command.split()))
    body, *rest = split_top(text, ",")
    if "||" in body:
        raise FormulaError("regress fits no random effects; use mixed for a model with a random-effects equation")
    weight = re.search(r"\[\s*(\w+)\s*=", body)
    if weight and weight.group(1).lower() not in ("fw", "fweight", "frequency"):
        raise FormulaError(f"[{weight.group(1)}=...]: regress here takes frequency weights only ([fweight=var]); "
                           "analytic and sampling weights are not available")
    passed, beta = [], False
    for name, arg in options(",".join(rest)):
        if name == "beta" and arg is None:
            beta = True
        elif abbreviates(name, "robust", 1) and arg is None:
            passed.append("vce(robust)")
        elif abbreviates(name, "cluster", 2) and arg is not None:
            passed.append(f"vce(cluster {arg})")
        elif (abbreviates(name, *_NOCONS) and arg is None) or (name == "vce" and arg is not None) or (
                abbreviates(name, "level", 1) and arg is not None):
            passed.append(name if arg is None else f"{name}({arg})")
        else:
            raise FormulaError(f"option {name} not allowed; regress accepts noconstant, vce(robust), "
                               "vce(cluster clustvar) (or robust and cluster(clustvar)), level(#) and beta")
    spec = parse_mixed(body + ", " + " ".join(passed), columns)
    return replace(spec, display=replace(spec.display, beta=True)) if beta else spec


def regress(command: str, data: Data) -> Regression:
    """Fit a linear regression written in Stata's ``regress`` syntax (:func:`parse_regress`); the result reports as
    ``regress`` does, and compares with mixed models by likelihood-ratio tests (``lrtest(..., force=True)``, as
    Stata needs ``force`` for two commands' results).

    Example:
      >>> import jaxhlm
      >>> r = jaxhlm.regress("mathach ses i.sector", jaxhlm.datasets.hsb())
      >>> round(r.rsquared, 4)
      0.1492
    """
    from .datasets import value_labels
    from .design import with_columns
    from .pipeline import fit_spec

    labels = value_labels(data)
    columns, data = with_columns(data)
    return level_labels(Regression.of(fit_spec(parse_regress(command, columns), data)), labels)


def level_labels(result: MixedResult, labels: dict[str, dict[int, str]]) -> MixedResult:
    """``result`` with the value labels of its factor variables (:attr:`MixedResult.value_labels`)."""
    fixed = result.spec.fixed
    factors = {v.name for t in fixed.terms for v in t.vars if v.factor} if isinstance(fixed, FixedTerms) else set()
    shown = {v: labels[v] for v in sorted(factors) if labels.get(v)}
    return replace(result, value_labels=shown) if shown else result

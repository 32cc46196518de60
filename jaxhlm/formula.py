"""Parse lme4-style model formulas into a :class:`ModelSpec`.

``y ~ fixed + (1 + x | g)`` — the fixed part is handed to formulaic unchanged (``a*b``, ``C(f)``, ``a:b``,
``- 1``); each parenthesised term with a bar is a random-effects term: ``(1 | g)`` random intercept,
``(1 + x | g)`` or ``(x | g)`` correlated intercept and slope, ``(0 + x | g)`` slope only, ``(1 + x || g)``
uncorrelated. Terms on the same grouping factor form one block-diagonal covariance. Two grouping factors make a
three-level model if one is nested in the other: ``(1 | school/class)`` is ``(1 | school) + (1 | school:class)``
(classes numbered within schools), as is ``(1 | school) + (1 | class)`` when every class is in one school;
otherwise (subjects and items) the two factors are crossed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from . import covariance as cov
from .errors import FormulaError
from .factor import CONSTANT, FixedTerms
from .expressions import Subset

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")
_GROUP = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*(:[A-Za-z_.][A-Za-z0-9_.]*)*$")

#: Grouping levels above the observations that jaxhlm fits (a three-level model has two).
MAX_LEVELS = 2


@dataclass(frozen=True)
class RandomTerm:
    """Random effects of one term: slope variables (in order), whether there is an intercept, the group."""

    slopes: tuple[str, ...]
    intercept: bool
    group: str
    kind: str

    @property
    def names(self) -> tuple[str, ...]:
        """Effect names in Stata's order: slopes as listed, ``_cons`` last."""
        return self.slopes + ((CONSTANT,) if self.intercept else ())


#: The level of a model without random effects (Stata's ``mixed y x`` with no random-effects equation, and
#: ``regress``): each observation a group of its own with no effects, so that the fit, robust standard errors
#: (a cluster per observation) and every later stage need no case of their own. Stata's name for the
#: observation number.
OBSERVATIONS = "_n"


#: Small-sample degrees of freedom for tests of the fixed effects (Stata's ``dfmethod()`` names).
DFMETHODS = ("satterthwaite", "kroger", "residual")
DFMETHOD_NAMES = {"satterthwaite": "Satterthwaite", "kroger": "Kenward-Roger", "residual": "Residual"}
DFMETHOD_PHRASES = {"satterthwaite": "Satterthwaite's method", "kroger": "Kenward-Roger's method",
                    "residual": "the residual method, N - rank(X)"}


def check_dfmethod(dfmethod: str | None, reml: bool) -> None:
    """A known method, and Kenward and Roger's only with REML (their adjustment is derived for it)."""
    if dfmethod not in (None, *DFMETHODS):
        raise FormulaError(f"dfmethod {dfmethod!r} is not available; use None (large-sample z and chi2 tests), "
                           "'satterthwaite', 'kroger' (Kenward-Roger) or 'residual' (N − rank(X))")
    if dfmethod == "kroger" and not reml:
        raise FormulaError("Kenward and Roger's method needs REML estimation, as in Stata and pbkrtest: fit "
                           "with reml=True")


#: Variance estimators of the estimates (Stata's ``vce()``): the observed information matrix, or the sandwich
#: over independent clusters (:func:`jaxhlm.infer.cluster_meat`).
VCE_TYPES = ("oim", "robust")


def check_vce(vce: str, cluster: str | None, reml: bool, dfmethod: str | None) -> None:
    """A known estimator; a sandwich only with ML (the REML criterion is not a sum of the clusters'
    contributions) and without small-sample degrees of freedom (those of Satterthwaite and of Kenward and Roger
    are the model-based standard errors'; Stata's rule too)."""
    if vce not in VCE_TYPES:
        raise FormulaError(f"vce {vce!r} is not available; use 'oim' (the model's observed information, the default) "
                           "or 'robust' (cluster-robust sandwich, with cluster= a variable to cluster by)")
    if cluster is not None and vce != "robust":
        raise FormulaError("a cluster variable is for robust standard errors: fit with vce='robust'")
    if vce == "robust" and reml:
        raise FormulaError("robust standard errors need ML estimation: the REML criterion is not a sum of the "
                           "clusters' contributions; fit with reml=False")
    if vce == "robust" and dfmethod is not None:
        raise FormulaError(f"dfmethod {dfmethod!r} gives degrees of freedom for the model-based standard errors, so "
                           "it cannot be combined with robust ones (as in Stata); drop one of them")


#: Stata's pwscale(): how the observations' sampling weights are scaled within each group (two-level models)
PWSCALES = ("size", "effective", "gk")


def check_sampling(spec: "ModelSpec") -> None:
    """Sampling weights (Stata's pweights) make the fit a pseudo-likelihood: ML only, robust standard errors only
    (both Stata's rules), and no other kind of weight beside them."""
    levels = spec.levels
    if len(spec.level_pweights) > len(levels):
        raise FormulaError(f"sampling weights are given for {len(spec.level_pweights)} grouping levels; the model "
                           f"has {len(levels)}")
    if spec.pwscale is not None:
        if spec.pwscale not in PWSCALES:
            raise FormulaError(f"pwscale({spec.pwscale}) is not a scaling; use size, effective or gk")
        if spec.pweights is None:
            raise FormulaError("pwscale() scales the observations' sampling weights within their groups; give them "
                               "([pw=varname], or pweights= in fit())")
        if len(levels) > 1:
            raise FormulaError("pwscale() is for models with one grouping level (as in Stata); scale the weights "
                               "of a three-level model beforehand")
    if not spec.sampled:
        return
    if spec.reml:
        raise FormulaError("sampling weights make the fit a pseudo-likelihood, which REML does not restrict; fit by "
                           "ML (reml=False), as Stata requires")
    if spec.weights is not None or spec.freq_weights is not None:
        raise FormulaError("sampling weights cannot be combined with precision or frequency weights; fold them into "
                           "the sampling weights")
    if spec.vce != "robust":
        raise FormulaError("sampling weights give robust (sandwich) standard errors, clustered at the outermost "
                           "level unless a cluster variable is given; the model-based ones (vce='oim') are not "
                           "available with them, as in Stata")


@dataclass(frozen=True)
class Display:
    """How a fit is reported: Stata's display options of ``mixed``. ``level`` sets the confidence level of both
    tables; ``stddeviations`` shows the random effects as standard deviations and correlations; the rest leave
    out a part of the report (``noheader``, ``nogroup``, ``nofetable``, ``noretable``, ``nolrtest``); ``beta``
    (``regress``'s) shows the standardized coefficients in place of the intervals."""

    level: float = 95.0
    stddeviations: bool = False
    header: bool = True
    group: bool = True
    fixed_table: bool = True
    random_table: bool = True
    lr_test: bool = True
    beta: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model: what every front end (formula, Stata syntax, CLI) produces."""

    response: str
    fixed: str | FixedTerms  # formulaic right-hand side, or Stata factor-variable terms
    random: tuple[RandomTerm, ...]
    reml: bool = False
    dfmethod: str | None = None  # one of DFMETHODS: t and F tests of the fixed effects on small-sample df
    #: Stata's reading of nested levels: an inner level's values count within the outer level's groups (class 1
    #: of school A is not class 1 of school B). Otherwise (lme4) a level's variables name its clusters.
    relative: bool = False
    #: columns of weights: precision weights aᵢ (residual variance σ²/aᵢ; lme4's ``weights``) and frequency
    #: weights fᵢ (the row stands for fᵢ identical observations; Stata's ``fweight``)
    weights: str | None = None
    freq_weights: str | None = None
    #: Stata's ``if`` and ``in`` qualifiers: the rows the model uses (None: all)
    subset: Subset | None = None
    display: Display = Display()
    #: Stata's ``residuals(independent, by(var))``: a residual variance for each value of this column
    residual_by: str | None = None
    #: Stata's ``residuals(rspec, t(var))``: the residuals' correlation within each series (a group, or with two
    #: nested levels an inner cluster): ``"independent"`` (none), ``"exchangeable"``, ``"ar"``, ``"ma"``,
    #: ``"exponential"``, ``"toeplitz"``, ``"banded"`` or ``"unstructured"``; ``residual_order`` the p of ``ar p``,
    #: the q of ``ma q``, ``toeplitz q`` and ``banded q`` (None: every lag), and ``residual_time`` the column of
    #: the time ``t()``
    residual_kind: str = "independent"
    residual_order: int | None = None
    residual_time: str | None = None
    #: the grouping factors written as Stata's ``_all: R.varname`` (reported as Stata reports them)
    all_factors: tuple[str, ...] = ()
    #: Stata's ``vce()``: ``"oim"`` (model-based) or ``"robust"`` (the sandwich over independent clusters: the
    #: groups of the outermost level, or those of the column ``cluster``, which must contain them whole)
    vce: str = "oim"
    cluster: str | None = None
    #: Stata's sampling weights (pweights): the column of the observations' own weights (``[pw=var]``, each given
    #: its group, or in a three-level model its cluster), and per grouping level, outermost first, the column of
    #: its groups' weights (the level's ``pweight(var)``; None where it has none); ``pwscale`` one of
    #: :data:`PWSCALES`, how the observations' weights are scaled within each group
    pweights: str | None = None
    level_pweights: tuple[str | None, ...] = ()
    pwscale: str | None = None

    def __post_init__(self) -> None:
        check_dfmethod(self.dfmethod, self.reml)
        check_sampling(self)
        check_vce(self.vce, self.cluster, self.reml, self.dfmethod)
        if not self.random:
            raise FormulaError("the model has no random effects; add a random intercept for the grouping variable")
        levels = self.levels
        if len(levels) > MAX_LEVELS:
            raise FormulaError(f"random effects use {len(levels)} grouping levels ({', '.join(levels)}); jaxhlm fits "
                               "models with one grouping level, or two (nested: a three-level model, or crossed)")
        order = [levels.index(t.group) for t in self.random]
        if order != sorted(order):
            raise FormulaError("list the random terms of each grouping level together, the outer level first")
        for level in levels:
            dup = [n for t in self.random if t.group == level for n in t.names]
            repeated = sorted({n for n in dup if dup.count(n) > 1})
            if repeated:
                raise FormulaError(f"random effect(s) {', '.join(repeated)} appear in more than one random term "
                                   f"of {level}")

    @property
    def sampled(self) -> bool:
        """Whether the model has sampling weights at any level."""
        return self.pweights is not None or any(w is not None for w in self.level_pweights)

    @property
    def levels(self) -> tuple[str, ...]:
        """The grouping levels, outermost first."""
        return tuple(dict.fromkeys(t.group for t in self.random))

    @property
    def group(self) -> str:
        return self.levels[0]

    @property
    def linear(self) -> bool:
        """Whether the model has no random effects (its one level is :data:`OBSERVATIONS`)."""
        return self.levels == (OBSERVATIONS,)

    @property
    def level_keys(self) -> tuple[tuple[str, ...], ...]:
        """The variables whose values identify each level's groups: the level's own (``a:b`` is both a and b),
        and with :attr:`relative` those of the levels above too."""
        keys: list[tuple[str, ...]] = []
        for level in self.levels:
            own = tuple(level.split(":"))
            keys.append(tuple(dict.fromkeys((keys[-1] if keys and self.relative else ()) + own)))
        return tuple(keys)

    def level_terms(self, level: int) -> tuple[RandomTerm, ...]:
        return tuple(t for t in self.random if t.group == self.levels[level])

    @property
    def n_first(self) -> int:
        """The number of random effects of the first grouping level (the leading columns of Z)."""
        return sum(len(t.names) for t in self.level_terms(0))

    @property
    def blocks(self) -> cov.Structure:
        return tuple(cov.Block(t.kind, len(t.names), lead=len(t.names) - 1 if t.intercept and t.kind == "unstructured"
                               else None) for t in self.random if t.names)

    @property
    def re_names(self) -> tuple[str, ...]:
        return tuple(n for t in self.random for n in t.names)


def _top_level_split(text: str, sep: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _extract_random(rhs: str) -> tuple[str, list[str]]:
    """Split the right-hand side into the fixed part and the bodies of ``( … | … )`` terms."""
    fixed, bars, i = [], [], 0
    while i < len(rhs):
        if rhs[i] == "(":
            depth, j = 0, i
            while j < len(rhs):
                depth += {"(": 1, ")": -1}.get(rhs[j], 0)
                if depth == 0:
                    break
                j += 1
            if depth != 0:
                raise FormulaError(f"unbalanced parentheses in {rhs!r}")
            body = rhs[i + 1:j]
            if len(_top_level_split(body, "|")) > 1:
                bars.append(body)
                fixed.append(" ")
            else:
                fixed.append(rhs[i:j + 1])
            i = j + 1
        else:
            fixed.append(rhs[i])
            i += 1
    text = "".join(fixed)
    # Drop the '+' signs the removed terms leave dangling.
    terms = [t.strip() for t in _top_level_split(text, "+")]
    kept = [t for t in terms if t]
    return " + ".join(kept).replace("+ -", "-"), bars


def _parse_random(body: str, kind_override: str | None) -> list[RandomTerm]:
    """The terms of one ``( … | … )``: one, or two for ``(… | a/b)``, lme4's ``(… | a) + (… | a:b)``."""
    double = "||" in body
    lhs, _, group = body.partition("||" if double else "|")
    group = group.replace(" ", "")
    outer, slash, inner = group.partition("/")
    if not _GROUP.match(outer) or (slash and not _GROUP.match(inner)):
        raise FormulaError(f"grouping factor {group!r} in ({body}) must be a variable name, a:b (the combinations of "
                           "a and b) or a/b (b nested in a)")
    intercept, slopes = True, []
    for tok in (t.strip() for t in re.split(r"(?=[+-])", lhs.replace(" ", ""))):
        if tok in ("", "+"):
            continue
        sign, name = (tok[0], tok[1:]) if tok[0] in "+-" else ("+", tok)
        if name in ("0", "1"):
            intercept = (name == "1") == (sign == "+")
        elif sign == "-":
            raise FormulaError(f"cannot remove {name!r} in random term ({body}); list only the effects to include")
        elif not _NAME.match(name):
            raise FormulaError(
                f"random-effect term {name!r} in ({body}) must be a variable name; create the column first"
            )
        elif name not in slopes:
            slopes.append(name)
    kind = kind_override if kind_override is not None else "independent" if double else "unstructured"
    groups = [outer, outer + ":" + inner] if slash else [outer]
    return [random_term(slopes, intercept, g, kind) for g in groups]


def random_term(slopes: list[str], intercept: bool, group: str, kind: str) -> RandomTerm:
    """A random term with its structure's canonical name; one effect is always Identity (every structure
    coincides, and Stata labels it so)."""
    kind = cov.canonical_kind(kind)
    kind = "identity" if len(slopes) + int(intercept) == 1 else kind
    return RandomTerm(tuple(slopes), intercept, group, kind)


def parse_formula(formula: str, cov: str | None = None, reml: bool = False, dfmethod: str | None = None
                  ) -> ModelSpec:
    """Parse ``response ~ fixed + (effects | group)``; ``cov`` overrides every random term's structure."""
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise FormulaError(f"a formula needs exactly one '~' (response ~ predictors + (1 | group)); got {formula!r}")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not _NAME.match(lhs):
        raise FormulaError(f"the response {lhs!r} must be a single variable name")
    fixed, bodies = _extract_random(rhs)
    # without a random-effects term, a linear regression (as lm's; the baseline of a likelihood-ratio test)
    terms = [t for b in bodies for t in _parse_random(b, cov)] or [random_term([], False, OBSERVATIONS, "identity")]
    # The outer level first: of two grouping factors, the one whose variables are among the other's (a in a:b),
    # else as written.
    levels = list(dict.fromkeys(t.group for t in terms))
    variables = {g: set(g.split(":")) for g in levels}
    levels.sort(key=lambda g: sum(variables[h] < variables[g] for h in variables))
    terms.sort(key=lambda t: levels.index(t.group))
    return ModelSpec(lhs, fixed or "1", tuple(terms), reml, dfmethod)


def droppable_terms(spec: ModelSpec) -> list[tuple[str, ModelSpec]]:
    """The fixed-effect terms that can be left out one at a time, each with the model without it: those no other
    term contains (lme4's ``drop.scope``: a main effect stays while an interaction includes it), the constant
    not among them. Labels as the model writes its terms (``ses:sector`` in a formula, ``c.ses#c.sector`` in
    Stata syntax)."""
    if isinstance(spec.fixed, FixedTerms):
        terms = [(t.header, t.key, t) for t in spec.fixed.terms]
    else:
        import formulaic

        try:
            parsed = list(formulaic.Formula(spec.fixed))
        except Exception as exc:  # formulaic's errors are of many types
            raise FormulaError(f"cannot read the fixed-effects terms of {spec.fixed!r}: {exc}") from None
        terms = [(str(t), frozenset(str(f) for f in t.factors), t) for t in parsed if str(t) != "1"]
        constant = len(terms) < len(parsed)
    out = []
    for label, key, term in terms:
        if any(key < other for _, other, _ in terms):
            continue
        kept = [t for _, _, t in terms if t is not term]
        if isinstance(spec.fixed, FixedTerms):
            fixed: str | FixedTerms = dataclasses.replace(spec.fixed, terms=tuple(kept))
            empty = not kept and not spec.fixed.constant
        else:
            fixed = " + ".join(["1" if constant else "0"] + [str(t) for t in kept])
            empty = not kept and not constant
        if empty:
            raise FormulaError(f"leaving out {label} would leave the model without fixed effects; add a constant "
                               "to compare against")
        out.append((label, dataclasses.replace(spec, fixed=fixed)))
    return out


def term_text(term: RandomTerm) -> str:
    """A random term as an lme4 formula writes it (``(1 + ses | id)``, ``(0 + Days | Subject)``, ``(1 + x || g)``),
    with the covariance structure named where lme4's syntax has none (``(1 + x | g, exchangeable)``)."""
    effects = " + ".join((["1"] if term.intercept else ["0"]) + list(term.slopes))
    if len(term.names) == 1 or term.kind == "unstructured":
        return f"({effects} | {term.group})"
    if term.kind == "independent":
        return f"({effects} || {term.group})"
    return f"({effects} | {term.group}, {term.kind})"


def reducible_terms(spec: ModelSpec) -> list[tuple[str, ModelSpec | None]]:
    """The random-effects reductions lmerTest's ``ranova`` tests, each with the model after it (None: no random
    effects left, the linear model): a slope left out of a term that has other effects (``ses in (1 + ses | id)``),
    and a term of one effect left out whole (``(1 | id)``). Leaving out a level whose groups number the next level's
    (Stata's reading of nested levels) names the next level by both variables (``school:class``), so that its
    clusters stay apart."""
    out: list[tuple[str, ModelSpec | None]] = []
    for k, term in enumerate(spec.random):
        if len(term.names) == 1:
            label = f"{term.slopes[0]} in {term_text(term)}" if term.slopes else term_text(term)
            rest = spec.random[:k] + spec.random[k + 1:]
            if not rest:
                out.append((label, None))
                continue
            if spec.relative and term.group == spec.levels[0] and all(t.group != term.group for t in rest):
                joined = ":".join(spec.level_keys[1])
                rest = tuple(dataclasses.replace(t, group=joined) for t in rest)
            out.append((label, dataclasses.replace(spec, random=rest, dfmethod=None)))
            continue
        for slope in term.slopes:
            reduced = random_term([v for v in term.slopes if v != slope], term.intercept, term.group, term.kind)
            random = spec.random[:k] + (reduced,) + spec.random[k + 1:]
            out.append((f"{slope} in {term_text(term)}", dataclasses.replace(spec, random=random, dfmethod=None)))
    return out

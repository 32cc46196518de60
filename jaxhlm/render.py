"""Text rendering in the layout and number formats of Stata's ``mixed`` output.

The numerics never format strings; everything here reads finished numbers from a result.
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import JaxhlmError
from .formula import DFMETHOD_NAMES, OBSERVATIONS
from .infer import MCOMPARE, sd_corr
from .residual import ByStratum, Serial

if TYPE_CHECKING:
    from .factor import Coef
    from .infer import ParameterTable
    from .results import (Contrasts, EstimatesTable, GroupInfluence, IntraclassCorrelation, LinearCombination, Margins,
                          MixedResult, NonlinearCombinations, PairwiseComparisons, Regression)

WIDTH = 78
DASH = "-" * WIDTH
#: Stata's note on a chi-squared test whose null may put a parameter on its boundary, wrapped as its log wraps it
BOUNDARY_NOTE = ("Note: The reported degrees of freedom assumes the null hypothesis is not on the\n"
                 "boundary of the parameter space. If this is not true, then the reported test is\n"
                 "conservative.")


def stata_g(x: float, digits: int = 7) -> str:
    """Stata's ``%9.0g``: ``digits`` digits in all, trailing zeros trimmed, no leading zero (``.2823452``)."""
    if x is None or not math.isfinite(x):
        return "."
    if x == 0:
        return "0"
    ax = abs(x)
    sign = "-" if x < 0 else ""
    int_digits = len(str(int(ax))) if ax >= 1 else 0
    if int_digits > digits or ax < 10.0 ** -(digits - 3):
        return f"{x:.{max(digits - 5, 1)}e}"
    s = f"{ax:.{digits - int_digits}f}"
    if len(s.split(".")[0].lstrip("0")) > int_digits:  # rounding carried into a new integer digit
        s = f"{ax:.{max(digits - int_digits - 1, 0)}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s.startswith("0."):
        s = s[1:]
    return sign + s


#: The Stata display formats jaxhlm renders: %w.df (fixed) and %w.0g (general), optionally left-aligned (%-w).
FORMAT = re.compile(r"%(-?)(\d+)\.(\d+)([fg])")


def format_width(fmt: str | None) -> int:
    """The width of a Stata display format (None: %10.0g, Stata's default for results)."""
    if fmt is None:
        return 10
    found = FORMAT.fullmatch(fmt)
    if found is None or (found.group(4) == "g" and found.group(3) != "0"):
        raise JaxhlmError(f"format {fmt} is not one jaxhlm renders; use %w.df (fixed, e.g. %9.3f) or %w.0g "
                          "(general, e.g. %9.0g)")
    return int(found.group(2))


def stata_number(x: float, fmt: str | None) -> str:
    """``x`` in the Stata display format ``fmt``, unpadded: %w.df with d decimals (the leading zero kept), %w.0g
    in w − 2 significant digits (None: %10.0g's 8); missing values as Stata's ``.``."""
    width = format_width(fmt)
    found = FORMAT.fullmatch(fmt or "%10.0g")
    if found.group(4) == "g":
        return stata_g(x, max(width - 2, 1))
    return f"{x:.{found.group(3)}f}" if math.isfinite(x) else "."


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fixed(x: float, decimals: int) -> str:
    """``x`` to a fixed number of decimals, or Stata's missing value ``.`` (a model with no covariates has no
    Wald test)."""
    return f"{x:.{decimals}f}" if math.isfinite(x) else "."


def _header_right(label: str, value: str) -> str:
    return f"{label:<18}= {value:>10}"


def header(r: "MixedResult", groups: bool = True) -> list[str]:
    """The report's header; ``groups`` False leaves out the grouping levels' sizes (Stata's ``nogroup``)."""
    kind = "REML" if r.reml else "ML"
    # With robust standard errors the likelihood only gives the estimates (Stata's name for it then).
    ll_label = "Log restricted-likelihood" if r.reml else "Log pseudolikelihood" if r.robust else "Log likelihood"
    # With robust standard errors (or sampling weights, which imply them) Stata's title names no method (its logs).
    title = "Mixed-effects regression" if r.robust else f"Mixed-effects {kind} regression"
    first = (title, _header_right("Number of obs", _fmt_int(r.nobs)))
    if not groups or r.spec.linear:
        rows, lead = [first], []
    elif len(levels := stata_levels(r)) == 1:
        name, (n, low, avg, high) = levels.index[0], levels.iloc[0]
        rows = [first,
                (f"Group variable: {name}", _header_right("Number of groups", _fmt_int(int(n)))),
                ("", "Obs per group:"),
                ("", f"{'min':>17} = {_fmt_int(int(low)):>10}"),
                ("", f"{'avg':>17} = {avg:>10.1f}"),
                ("", f"{'max':>17} = {_fmt_int(int(high)):>10}")]
        lead = []
    else:  # several levels: Stata's table of the groups, then the tests
        rows, lead = [], [_pair(*first), ""] + group_table(r) + [""]
    if r.ddf is None:
        rows += [("", _header_right(f"Wald chi2({r.wald.df})", _fixed(r.wald.statistic, 2))),
                 (f"{ll_label} = {stata_g(r.llf, 8)}", _header_right("Prob > chi2", _fixed(r.wald.pvalue, 4)))]
    else:  # Stata's dfmethod() header: the coefficients' degrees of freedom, and the model test as an F
        df = r.ddf
        rows += [(f"DF method: {DFMETHOD_NAMES[r.spec.dfmethod]}", f"{'DF:':<14}min = {df.min():>10,.2f}"),
                 ("", f"{'avg':>17} = {df.mean():>10,.2f}"), ("", f"{'max':>17} = {df.max():>10,.2f}"),
                 ("", _header_right(f"F({r.wald.df},{_fixed(r.wald.ddf, 2):>9})", _fixed(r.wald.statistic, 2))),
                 (f"{ll_label} = {stata_g(r.llf, 8)}", _header_right("Prob > F", _fixed(r.wald.pvalue, 4)))]
    return lead + [_pair(left, right) for left, right in rows]


def _pair(left: str, right: str) -> str:
    return f"{left:<48}{right}".rstrip()


def group_table(r: "MixedResult") -> list[str]:
    """Stata's table of the grouping levels (the header of a multilevel fit, and ``estat group``)."""
    lines = ["-" * 61, f"{'':16}|     No. of       Observations per group",
             f"{'Group variable':>15} |     groups    Minimum    Average    Maximum", "-" * 16 + "+" + "-" * 44]
    for level, (n, low, avg, high) in stata_levels(r).iterrows():
        lines.append(f"{_abbrev(str(level), 15):>15} | {_fmt_int(int(n)):>10} {_fmt_int(int(low)):>10} {avg:>10.1f} "
                     f"{_fmt_int(int(high)):>10}")
    return lines + ["-" * 61]


def stata_levels(r: "MixedResult") -> pd.DataFrame:
    """:meth:`~jaxhlm.results.MixedResult.group_info` as Stata lists the levels: factors written ``_all: R.varname``
    lie within ``_all``, one group of every observation, listed first as written."""
    info = r.group_info()
    if not r.spec.all_factors:
        return info
    n = r.nobs
    rest = [level for level in r.spec.levels if level not in r.spec.all_factors]
    return pd.concat([pd.DataFrame([(1, n, float(n), n)], index=pd.Index(["_all"], name="level"), columns=info.columns),
                      info.loc[rest]])


def _name_width(names: Sequence[str], floor: int = 12, cap: int = 32) -> int:
    return min(max([floor, *map(len, names)]), cap)


def _abbrev(name: str, width: int) -> str:
    """Stata's ``abbrev()``: a name longer than ``width`` keeps its first width − 2 characters, ``~`` and its last
    (``xanders_aggregate`` → ``xanders_ag~e`` in 12)."""
    return name if len(name) <= width else name[: width - 2] + "~" + name[-1]


def _coef_rows(coefs: Sequence["Coef"]) -> list[tuple[str, "Coef | None"]]:
    """(label, coef) rows with Stata's factor-variable layout: a header row over each group's levels, and a
    blank separator around groups and between rows of different interaction order. Header and separator rows
    carry no coef."""
    rows: list[tuple[str, Coef | None]] = []
    prev: Coef | None = None
    for c in coefs:
        new_group = c.group is not None and (prev is None or prev.group != c.group)
        if prev is not None and (new_group or (c.group is None and (prev.group is not None or prev.order != c.order))):
            rows.append(("", None))
        if new_group:
            rows.append((c.group, None))
        rows.append((c.level if c.group is not None else c.name, c))
        prev = c
    return rows


def _level_title(confidence: float) -> str:
    return f"[{round(100 * confidence, 4):g}% conf. interval]"


def _coef_head(response: str, w: int, confidence: float = 0.95, stat: str = "z", robust: bool = False,
               beta: bool = False) -> list[str]:
    """The coefficient table's top rule, column titles and rule under them, for a first column ``w`` wide;
    ``stat`` is "z" or "t"; ``robust`` titles the standard errors as Stata titles sandwich ones; ``beta``: the
    standardized coefficients in the intervals' place (regress's ``beta``)."""
    head = (f"{_abbrev(response, w):>{w}} | Coefficient  {'std. err.' if robust else 'Std. err.'}      {stat}    "
            f"P>|{stat}|{'Beta' if beta else _level_title(confidence):>25}")
    over = [f"{'':{w}} |{'Robust':>21}"] if robust else []
    return ["-" * (w + 66)] + over + [head, "-" * (w + 1) + "+" + "-" * 64]


def _adjusted(r: "MixedResult", width: int) -> list[str]:
    """Stata's line over a table of robust standard errors, naming their clusters."""
    if r.robust is None or r.robust.variable == OBSERVATIONS:  # a sandwich over observations names no clusters
        return []
    return [f"(Std. err. adjusted for {_fmt_int(r.robust.count)} clusters in {r.robust.variable})".rjust(width)]


def _coef_line(text: str, b: float, se: float, z: float, p: float, lo: float, hi: float,
               beta: float | None = None) -> str:
    tail = f"{stata_g(beta):>25}" if beta is not None else f"    {stata_g(lo):>9}   {stata_g(hi):>9}"
    return f"{text} | {stata_g(b):>10} {stata_g(se):>10} {z:>8.2f} {p:>7.3f}" + tail


def _labelled(coefs: Sequence["Coef"], labels: "Mapping[str, Mapping[int, str]]") -> list["Coef"]:
    """The coefficients with their factor levels shown by the variables' value labels, as Stata's tables show
    them: a row of a factor group reads its cell's labels (joined by ``#``), and a factor with one level shown
    inline (``1.sector``) gets its group's header and the label instead (``sector`` over ``Catholic``)."""
    out = []
    for c in coefs:
        inline = re.fullmatch(r"(\d+)\.(\w+)", c.name) if c.group is None else None
        if inline and inline.group(2) in labels and int(inline.group(1)) in labels[inline.group(2)]:
            c = dataclasses.replace(c, group=inline.group(2), level=labels[inline.group(2)][int(inline.group(1))])
        elif c.group is not None:
            factors = [v for v in c.group.split("#") if not v.startswith("c.")]
            values = c.level.split()
            if len(factors) == len(values) and any(v in labels for v in factors):
                c = dataclasses.replace(c, level="#".join(level_text(int(x), labels.get(v)) for v, x in zip(factors, values)))
        out.append(c)
    return out


def coefficient_table(r: "MixedResult", level: float = 95.0, beta: "pd.Series | None" = None) -> list[str]:
    """The coefficient table, with ``level``% intervals, or the standardized coefficients ``beta`` in their place."""
    rows = _coef_rows(_labelled(r.design.coefs, r.value_labels))
    # a group's rows are indented by one
    w = _name_width([r.design.response, *(f"{label} " if c is not None and c.group else label for label, c in rows)])
    lines = _adjusted(r, w + 66) + _coef_head(r.design.response, w, level / 100, stat="z" if r.ddf is None else "t",
                                              robust=r.robust is not None, beta=beta is not None)
    coef = r.coef_table.copy()
    if level != 95.0:
        coef[:, 4:] = r.conf_int(1 - level / 100).to_numpy()[:len(coef)]
    table = dict(zip(r.design.fe_names, coef))
    for label, c in rows:
        text = f"{_abbrev(label, w - 1):>{w - 1}} " if c is not None and c.group is not None else f"{_abbrev(label, w):>{w}}"
        if c is None:
            lines.append(f"{text} |")
        elif c.status:
            lines.append(f"{text} | {'0':>10}  ({c.status})")
        else:
            lines.append(_coef_line(text, *table[c.name], beta=None if beta is None else beta[c.name]))
    lines.append("-" * (w + 66))
    return lines


def lincom_text(lc: "LinearCombination") -> str:
    """Stata's ``lincom`` output: the combination as a constraint line, then a one-row coefficient table."""
    w = _name_width([lc.response])
    head = _coef_head(lc.response, w, lc.confidence, "z" if math.isinf(lc.df) else "t")
    row = _coef_line(f"{'(1)':>{w}}", lc.estimate, lc.se, lc.statistic, lc.pvalue, lc.ci_lower, lc.ci_upper)
    note = [] if lc.dfmethod is None else [f"Note: t test on {stata_g(lc.df, 6)} degrees of freedom "
                                         f"({DFMETHOD_NAMES[lc.dfmethod]})."]
    return "\n".join([f" ( 1)  {lc.constraint}", ""] + head + [row, "-" * (w + 66)] + note)


def nlcom_text(nl: "NonlinearCombinations") -> str:
    """Stata's ``nlcom`` output: each function's name and expression, then a coefficient table of them."""
    w = _name_width([nl.response, *nl.names])
    head = _coef_head(nl.response, w, nl.confidence, "z" if math.isinf(nl.df) else "t")
    rows = [_coef_line(f"{_abbrev(name, w):>{w}}", *row) for name, row in zip(nl.names, nl.table)]
    return "\n".join([f"{_abbrev(name, w):>{w}}:  {text}" for name, text in zip(nl.names, nl.expressions)] + [""]
                     + head + rows + ["-" * (w + 66)])


def margins_text(m: "Margins", pvalues: bool = True) -> str:
    """Stata's ``margins`` output: the title and Number of obs, the VCE (robust only: Stata's logs of ``mixed``
    show none for model-based ones), the expression, each ``_at``'s values, and a table of margins (effects,
    contrasts) under "Delta-method" standard errors, rows labelled as ``m.labels``; without ``pvalues`` (Stata's
    ``nopvalues``) the statistics and p-values left out, as a published log shows."""
    t, stat = m.table, "z" if "z" in m.table.columns else "t"
    if m.dydx is None:
        title = "Adjusted predictions" if m.adjusted else "Predictive margins"
    else:
        title = "Conditional marginal effects" if m.adjusted else "Average marginal effects"
    if m.pwcompare:
        title = f"Pairwise comparisons of {title[0].lower()}{title[1:]}"
    lines = [f"{title}{'Number of obs = ' + _fmt_int(m.nobs):>{WIDTH - len(title)}}",
             *([f"Model VCE: {m.vce}"] if m.vce else []), "",
             f"Expression: {m.expression}"]
    if m.dydx is not None:
        lines.append(f"dy/dx wrt:  {m.dydx}")
    if m.at:
        width = max(len(a) for a in m.at)
        for k, values in enumerate(m.at_values, start=1):
            lead = f"{k}._at: "
            lines += [("" if j else lead).rjust(len(lead)) + f"{name:<{width}} = {stata_g(v, 7)}"
                      for j, (name, v) in enumerate(zip(m.at, values))]
    lines.append("")
    group, labels = "#".join((["_at"] if m.at else []) + list(m.over)), m.labels
    if m.mcompare != "noadjust":
        lines += comparisons_table([(group, len(labels))]) + [""]
    w = _name_width([group, *(f"{label} " for label in labels), m.dydx or ""])  # rows are indented by one
    first = "Contrast" if m.pwcompare else "Margin" if m.dydx is None else "dy/dx"
    show = "effects" if pvalues else "cieffects"
    width = 64 if pvalues else 48
    name = MCOMPARE[m.mcompare]
    adjustment = ({"effects": f"{name:>14}{name:>21}", "cieffects": f"{name:>19}"}[show] if m.pwcompare else "")
    tests = f"      {stat}    P>|{stat}|" if pvalues else ""
    head = [f"{'':{w}} |{'Delta-method':>24}{adjustment}",
            f"{'':{w}} | {first:>10}   std. err.{tests}{_level_title(m.confidence):>25}"]
    lines += ["-" * (w + 2 + width)] + head + ["-" * (w + 1) + "+" + "-" * width]
    if m.dydx is not None and group:
        lines.append(f"{_abbrev(m.dydx, w):<{w}} |")
    if group:
        lines.append(f"{_abbrev(group, w):>{w}} |")
    for label, row in zip(labels, t.itertuples(index=False)):
        text = f"{label:>{w - 1}} " if group else f"{label:>{w}}"
        lines.append(_effects_line(text, (row[0], row.std_err, getattr(row, stat), row.p, row.ci_lower, row.ci_upper),
                                   show))
    lines.append("-" * (w + 2 + width))
    return "\n".join(lines)


def _effects_line(text: str, row: Sequence[float], show: str) -> str:
    """A row of estimates with ``show``'s columns (:data:`EFFECTS`): every one (``effects``), no interval
    (``pveffects``), or no statistic and p-value (``cieffects``, margins' ``nopvalues``)."""
    line = _coef_line(text, *row)
    if show == "pveffects":
        return line[:len(line) - 25]
    if show == "cieffects":
        return line[:len(line) - 42] + f"     {stata_g(row[4]):>9}   {stata_g(row[5]):>9}"
    return line


def contrast_text(c: "Contrasts", wald: bool = True, show: str | None = "cieffects") -> str:
    """Stata's ``contrast`` output after ``mixed``: the table of Wald tests (``wald``), the response as the
    equation's header row, then a row per term (df, chi2, P>chi2; with ``small``, df, ddf, F, P>F) or, for a term
    with contrast operators, its header and a row per named contrast and ``Joint``; then, for named contrasts, the
    table of their estimates with ``show``'s columns (None: none). As published Stata 17-18 logs show them: the
    label column widened to the longest label, rows under a term indented by one; a blank row between terms is
    this layout's choice."""
    lines = ["Contrasts of marginal linear predictions", "", f"Margins: {c.margins}"]
    terms = list(dict.fromkeys(t for t, _ in c.table.index))
    if wald:
        t = c.table
        F = "F" in t.columns  # small: F tests, their denominator df beside the numerator's
        # After regress (no equation named) one denominator serves every test: Stata's "Denominator" row
        denominator = F and not c.response
        width = 45 if F and not denominator else 34
        head = (f"{'df':>11}{'F':>12}{'P>F':>11}" if denominator else f"{'df':>11}{'ddf':>11}{'F':>12}{'P>F':>11}" if F
                else f"{'df':>11}{'chi2':>12}{'P>chi2':>11}")
        named = [f"{row} " for _, row in t.index if row]
        w = _name_width([c.response, *terms, *named, *(["Denominator"] if denominator else [])])
        rule = "-" * (w + 1)
        lines += ["", rule + "-" * (width + 1), f"{'':{w}} |{head}", rule + "+" + "-" * width]
        lines += [f"{_abbrev(c.response, w):<{w}} |"] if c.response else []
        for k, term in enumerate(terms):
            block = t.loc[term]
            lines += [f"{'':{w}} |"] * bool(k)
            if list(block.index) != [""]:
                lines.append(f"{_abbrev(term, w):>{w}} |")
            for row, values in block.iterrows():
                label = f"{_abbrev(str(row), w - 1):>{w - 1}} " if row else f"{_abbrev(term, w):>{w}}"
                stat = (f"{values['F']:>12.2f}{values['P>F']:>11.4f}" if denominator else
                        f"{values['ddf']:>11.2f}{values['F']:>12.2f}{values['P>F']:>11.4f}" if F else
                        f"{values['chi2']:>12.2f}{values['P>chi2']:>11.4f}")
                lines.append(f"{label} |{int(values['df']):>11}{stat}")
        if denominator:
            lines += [f"{'':{w}} |", f"{'Denominator':>{w}} |{int(t['ddf'].iloc[0]):>11}"]
        lines.append(rule + "-" * (width + 1))
    if show is not None and c.effects is not None:
        e = c.effects
        blocks = [(term, list(zip(e.loc[term].index, e.loc[term].to_numpy()[:, :6])))
                  for term in dict.fromkeys(t for t, _ in e.index)]
        lines += [""] + _effects_table(c.response, blocks, show, c.confidence, "t" if "t" in e.columns else "z")
    return "\n".join(lines)


def _effects_table(response: str, blocks: Sequence[tuple[str, Sequence[tuple[str, Sequence[float]]]]], show: str,
                   confidence: float, stat: str, adjustment: str | None = None) -> list[str]:
    """A table of estimated contrasts as ``contrast`` and ``pwcompare`` print it: ``show``'s columns
    (:data:`EFFECTS`), pwcompare's ``adjustment`` named over its tests and interval, the response as the equation's
    row, then each term's header and its rows (label, (estimate, SE, statistic, p, lower, upper))."""
    labels = [str(label) for _, rows in blocks for label, _ in rows]
    w = _name_width([response, *(term for term, _ in blocks), *(f"{label} " for label in labels)])
    width = {"effects": 64, "pveffects": 39, "cieffects": 48}[show]
    title = {"effects": f"      {stat}    P>|{stat}|{_level_title(confidence):>25}",
             "pveffects": f"      {stat}    P>|{stat}|", "cieffects": f"{_level_title(confidence):>25}"}[show]
    lines = ["-" * (w + 2 + width)]
    if adjustment is not None:
        a = adjustment
        lines.append(f"{'':{w}} |" + {"effects": f"{a:>38}{a:>21}", "pveffects": f"{a:>38}", "cieffects": f"{a:>43}"}[show])
    lines += [f"{'':{w}} |   Contrast   Std. err.{title}", "-" * (w + 1) + "+" + "-" * width]
    lines += [f"{_abbrev(response, w):<{w}} |"] if response else []  # a single-equation model (regress) names none
    for k, (term, rows) in enumerate(blocks):
        lines += [f"{'':{w}} |"] * bool(k) + [f"{_abbrev(term, w):>{w}} |"]
        lines += [_effects_line(f"{_abbrev(str(label), w - 1):>{w - 1}} ", row, show) for label, row in rows]
    return lines + ["-" * (w + 2 + width)]


def comparisons_table(terms: Sequence[tuple[str, int]], equation: str | None = None) -> list[str]:
    """Stata's table of the number of comparisons per term, printed when they are adjusted for multiplicity; under
    the equation's row for ``pwcompare`` (not for ``margins``), as Stata's logs show it."""
    w = _name_width([t for t, _ in terms] + ([equation] if equation else []))
    rule = "-" * (w + 1)
    return ([rule + "-" * 14, f"{'':{w}} |{'Number of':>13}", f"{'':{w}} |{'comparisons':>13}", rule + "+" + "-" * 13]
            + ([f"{_abbrev(equation, w):<{w}} |"] if equation else [])
            + [f"{_abbrev(t, w):>{w}} |{k:>13}" for t, k in terms] + [rule + "-" * 14])


#: pwcompare's tables of effects: which columns each shows (Stata's cieffects, the default, pveffects and effects)
EFFECTS = ("cieffects", "pveffects", "effects")


def pwcompare_text(pw: "PairwiseComparisons", show: str = "effects") -> str:
    """Stata's ``pwcompare`` table after ``mixed``: the title, the margins' balancing, the number of comparisons when
    adjusted, then the response as the equation row and each term's rows ("1 vs 0") under the adjustment's name.
    ``show``: the columns, as Stata's ``effects`` (contrast, SE, z, p, interval: the layout of a published Stata 18
    log, one term), ``cieffects`` (no z or p) or ``pveffects`` (no interval); the last two, and blank rows between
    several terms, follow the same grid unverified."""
    terms = [str(t.index.name) for t in pw.tables]
    lines = ["Pairwise comparisons of marginal linear predictions", "", f"Margins: {pw.margins}", ""]
    if pw.mcompare != "noadjust":
        lines += comparisons_table([(t, len(table)) for t, table in zip(terms, pw.tables)], pw.response) + [""]
    blocks = [(term, list(zip(table.index, table.to_numpy()[:, :6]))) for term, table in zip(terms, pw.tables)]
    stat = "t" if "t" in pw.tables[0].columns else "z"  # t tests with small
    return "\n".join(lines + _effects_table(pw.response, blocks, show, pw.confidence, stat, MCOMPARE[pw.mcompare]))


def random_table(r: "MixedResult", re: "ParameterTable | None" = None, level: float = 95.0) -> list[str]:
    """The random-effects table: the fit's variances and covariances, or the rows of ``re`` (same layout) with
    ``level``% intervals."""
    re = r.random_effects if re is None else re
    se = "Std. err." if r.robust is None else "std. err."
    lines = [DASH] + ([f"{'':28} |{'Robust':>21}"] if r.robust else []) + [
        f"  Random-effects parameters  |   Estimate   {se}     [{level:g}% conf. interval]", "-" * 29 + "+" + "-" * 48]
    kinds = {"identity": "Identity", "independent": "Independent", "exchangeable": "Exchangeable",
             "unstructured": "Unstructured"}
    # an inner level without random effects, which only names the series of correlated residuals, last
    names = r.design.level_names + tuple(lvl for lvl in r.spec.levels[len(r.design.level_names):])
    starts = np.cumsum([0] + [b.n_theta for b in r.design.blocks])
    sections = list(zip(r.design.blocks, r.design.block_levels, starts))
    written = r.spec.all_factors  # Stata's _all: R.varname factors: listed first, as written
    if written:
        sections.sort(key=lambda s: r.spec.levels.index(names[s[1]]))
    # A level without random effects (it names the series of correlated residuals): Stata's "(empty)" row.
    sections += [(None, level, 0) for level in range(len(names))
                 if level not in r.design.block_levels and names[level] != OBSERVATIONS]
    if not written:
        sections.sort(key=lambda s: s[1])
    for i, (b, level, at) in enumerate(sections):
        if i and level != sections[i - 1][1]:
            lines.append("-" * 29 + "+" + "-" * 48)
        if b is None:
            lines.append(f"{names[level] + ':':<20}{'(empty)':>8} |")
            continue
        factor = names[level] in written
        lines.append(f"{('_all' if factor else names[level]) + ': ' + kinds[b.kind]:<28} |")
        for k in range(at, at + b.n_theta):
            label = re.labels[k].replace("_cons", f"R.{names[level]}") if factor else re.labels[k]
            lines.append(_re_row(label, re.estimate[k], re.se[k], re.ci[k]))
    k = r.random_effects.n_residual
    tail = range(len(re.labels) - k, len(re.labels))
    kind = "sd(e)" if re.labels[-1].startswith("sd(") else "var(e)"
    lines += ["-" * 29 + "+" + "-" * 48] if sections else []
    if isinstance(r.design.residual, ByStratum):  # residuals(rspec, t() by()): each value's rows in turn
        lines += [f"{'Residual: ' + r.design.residual.title + ',':<28} |", f"{'    by ' + r.spec.residual_by:<28} |"]
        per = len(r.design.residual.inner.kinds)
        lines += [_re_row(f"{r.design.strata_labels[(j - tail[0]) // per]}: "
                          f"{_residual_label(re.labels[j].split('[')[0] + ')')}", re.estimate[j], re.se[j], re.ci[j])
                  for j in tail]
    elif isinstance(r.design.residual, Serial):  # Stata's residuals(rspec, t()): the structure, then its rows
        lines.append(f"{'Residual: ' + r.design.residual.title:<28} |")
        lines += [_re_row(_residual_label(re.labels[j]), re.estimate[j], re.se[j], re.ci[j]) for j in tail]
    elif k == 1:
        lines.append(_re_row(re.labels[-1], re.estimate[-1], re.se[-1], re.ci[-1]))
    else:  # Stata's residuals(independent, by()): one row per value of the variable
        lines += [f"{'Residual: Independent,':<28} |", f"{'    by ' + r.spec.residual_by:<28} |"]
        lines += [_re_row(f"{value}: {kind}", re.estimate[j], re.se[j], re.ci[j])
                  for value, j in zip(r.design.strata_labels, tail)]
    return lines + [DASH]


def _residual_label(label: str) -> str:
    """Stata's name of a residual structure's row: var(e), cov(e), rho, rho1 (var(e1), cov(e1,e2) as they are)."""
    for name in ("var", "cov", "sd", "corr"):
        label = label.replace(f"{name}(Residual)", f"{name}(e)")
    return label.replace("(Residual)", "")


def _re_row(label: str, est: float, se: float, ci: Sequence[float]) -> str:
    return (f"{_abbrev(label, 28):>28} | {stata_g(est):>10} {stata_g(se):>10}    "
            f"{stata_g(ci[0]):>10}  {stata_g(ci[1]):>10}")


def lr_line(r: "MixedResult") -> list[str]:
    t = r.lr_linear
    if t.chibar:
        left = f"LR test vs. linear model: chibar2(01) = {t.statistic:.2f}"
        right = f"Prob >= chibar2 = {t.pvalue:.4f}"
    else:
        left = f"LR test vs. linear model: chi2({t.df}) = {t.statistic:.2f}"
        right = f"Prob > chi2 = {t.pvalue:.4f}"
    out = [left + right.rjust(max(WIDTH - len(left), len(right) + 1))]
    if not t.chibar:  # with random effects some variance is on its boundary under the null; without, Stata says
        # only that the df assume it is not (its logs of residual-structure models without random effects)
        out += ["", "Note: LR test is conservative and provided only for reference." if r.design.blocks
                else BOUNDARY_NOTE]
    return out


def _random_rows(r: "MixedResult", level: float, stddeviations: bool) -> "ParameterTable":
    """The random-effects table's rows: variances and covariances, or (``stddeviations``) standard deviations and
    correlations, with ``level``% intervals."""
    alpha = 1 - level / 100
    if stddeviations:
        return sd_corr(r.random_effects, r.design.blocks, alpha)
    if level == 95.0:
        return r.random_effects
    return dataclasses.replace(r.random_effects, ci=r.conf_int(alpha).to_numpy()[len(r.design.fe_names):])


def summary_text(r: "MixedResult") -> str:
    """The report, as ``r``'s display options (Stata's, :class:`~jaxhlm.formula.Display`) ask."""
    d = r.spec.display
    lines = [n for n in r.design.notes if n.startswith("note:")] + [""]
    lines += (header(r, d.group) + [""] if d.header else []) + (coefficient_table(r, d.level) if d.fixed_table else [])
    if d.random_table:  # a blank line between the two tables, as in Stata's logs
        lines += [""] * d.fixed_table + random_table(r, _random_rows(r, d.level, d.stddeviations), d.level)
    lines += lr_line(r) if d.lr_test and r.lr_linear.df and r.robust is None else []
    extra = [n for n in r.design.notes if not n.startswith("note:")] + list(r.random_effects.notes)
    extra += [f"Warning: {w}" for w in r.warnings]
    if extra:
        lines += [""] + [textwrap.fill(e, WIDTH, subsequent_indent=" " * (e.find(": ") + 2)) for e in extra]
    return "\n".join(lines)


def regress_text(r: "Regression") -> str:
    """Stata's ``regress`` output: the analysis-of-variance table beside the fit statistics (with robust standard
    errors, which make the sums of squares no basis for a test, the statistics alone under "Linear regression"),
    then the coefficient table with t tests."""
    F = f"F({r.df_model:.0f}, {r.df_r:.0f})"
    stats = [("Number of obs", _fmt_int(r.nobs)), (F, _fixed(r.wald.statistic, 2)),
             ("Prob > F", _fixed(r.wald.pvalue, 4)), ("R-squared", f"{r.rsquared:.4f}")]
    root = ("Root MSE", stata_g(math.sqrt(r.mse_resid), 5))
    if r.robust is None:
        n, k = float(r.design.stats.n), r.df_model
        rows = [("Model", r.ess, k), ("Residual", r.ssr, n - k - (r.design.constant is not None)),
                ("Total", r.centered_tss, n - (r.design.constant is not None))]
        cells = [f"{name:>12} |{stata_g(ss, 9):>12}{_fmt_int(int(df)):>10}{stata_g(ss / df, 9) if df else '.':>12}"
                 for name, ss, df in rows]
        rule = "-" * 13 + "+" + "-" * 34
        right = [f"   {label:<16}={value:>10}" for label, value in stats + [("Adj R-squared", f"{r.rsquared_adj:.4f}"), root]]
        head = [f"{'Source':>12} |       SS           df       MS   " + right[0], rule + right[1], cells[0] + right[2],
                cells[1] + right[3], rule + right[4], cells[2] + right[5]]
    else:
        head = [_pair("Linear regression" if i == 0 else "", _header_right(label, value))
                for i, (label, value) in enumerate(stats + [root])]
    d = r.spec.display
    return "\n".join(head + [""] + coefficient_table(r, d.level, r.standardized if d.beta else None))


def vif_text(r: "Regression", vif: pd.Series) -> str:
    """Stata's ``estat vif``: VIF and 1/VIF per coefficient, largest first, or with factor variables in the model's
    order under their groups' headers (as Stata's logs show both), then their mean."""
    coefs = [c for c in r.design.coefs if c.name in vif.index]
    factors = any(c.group is not None or "." in c.name for c in coefs)
    if not factors:
        coefs.sort(key=lambda c: -vif[c.name])
    lines = [f"{'Variable':>12} |       VIF       1/VIF  ", "-" * 13 + "+" + "-" * 22]
    for label, c in _coef_rows(_labelled(coefs, r.value_labels)):
        if c is None and label:  # a group's header; Stata's VIF table has no blank separators
            lines.append(f"{_abbrev(label, 12):>12} |")
        elif c is not None:
            text = f"{_abbrev(label, 11):>11} " if c.group is not None else f"{_abbrev(label, 12):>12}"
            lines.append(f"{text} |{vif[c.name]:>10.2f}{1 / vif[c.name]:>12.6f}")
    return "\n".join(lines + ["-" * 13 + "+" + "-" * 22, f"{'Mean VIF':>12} |{vif.mean():>10.2f}"])


def ic_text(models: Sequence[tuple[str, "MixedResult"]]) -> str:
    """Stata's ``estat ic`` (one model) and ``estimates stats`` (several): a row per (name, result)."""
    return "\n".join([
        "Akaike's information criterion and Bayesian information criterion",
        "",
        "-" * 77,
        "       Model |          N   ll(null)  ll(model)      df        AIC        BIC",
        "-------------+---------------------------------------------------------------",
    ] + [f"{_abbrev(name, 12):>12} | {_fmt_int(r.nobs):>10} {'.':>10} {stata_g(r.llf, 7):>10} {r.df_modelwc:>7} "
         f"{stata_g(r.aic, 7):>10} {stata_g(r.bic, 7):>10}" for name, r in models] + [
        "-" * 77,
        "Note: BIC uses N = number of observations. See [R] BIC note.",
    ])


def icc_text(icc: "IntraclassCorrelation") -> str:
    """Stata's ``estat icc`` table (its rows have the random-effects table's columns)."""
    return "\n".join([
        icc.kind, "", DASH, f"{'Level':>28} |{'ICC':>11}{'Std. err.':>12}{_level_title(icc.confidence):>25}",
        "-" * 29 + "+" + "-" * 48,
    ] + [_re_row(row.level, row.icc, row.se, (row.ci_lower, row.ci_upper)) for row in icc.rows] + [
        DASH,
    ] + (["Note: ICC is conditional on zero values of random-effects covariates."]
         if icc.kind.startswith("Conditional") else []))


def recovariance_text(r: "MixedResult", levels: Sequence[str], correlation: bool = False) -> str:
    """Stata's ``estat recovariance``: each level's lower triangle as ``matlist`` prints it (%9.0g in columns 11
    wide). A factor written ``_all: R.varname`` is level ``_all``, its effect ``R.varname`` (as in the
    random-effects table)."""
    kind = "correlation" if correlation else "covariance"
    matrices = r.recovariance(correlation)
    order = sorted(levels, key=r.spec.levels.index) if r.spec.all_factors else levels  # _all factors as written
    lines = []
    for level in order:
        matrix = matrices[level]
        factor = level in r.spec.all_factors
        names = [f"R.{level}" if factor and n == "_cons" else n for n in matrix.index]
        w = _name_width(names)
        lines += ["", f"Random-effects {kind} matrix for level {'_all' if factor else level}", "",
                  f"{'':{w}} |" + "".join(f" {_abbrev(n, 9):>9} " for n in names).rstrip(),
                  "-" * (w + 1) + "+" + "-" * (11 * len(names))]
        values = matrix.to_numpy()
        lines += [f"{_abbrev(n, w):>{w}} |" + "".join(f" {stata_g(values[i, j]):>9} " for j in range(i + 1)).rstrip()
                  for i, n in enumerate(names)]
    return "\n".join(lines[1:])


def estimates_table_text(t: "EstimatesTable") -> str:
    """Stata's ``estimates table``: a column per model (its values right-aligned in the coefficients' format width,
    a space before and two after; three more for stars), equations headed by name and ruled apart, the
    factor-variable rows of the coefficient table, then the statistics, and a legend of the cells shown."""
    w = max(format_width(t.formats[c]) for c in t.cells)
    marks = 3 if t.star else 0
    n, cw = len(t.names), 1 + w + marks + 2
    width = 14 + n * cw
    rule = "-" * 13 + "+" + "-" * (n * cw)

    def line(label: str, cells: Sequence[str], stars: Sequence[str] | None = None) -> str:
        stars = stars or [""] * len(cells)
        return (f"{label} |" + "".join(f" {c:>{w}}{m:<{marks}}  " for c, m in zip(cells, stars))).rstrip()

    def centred(name: str) -> str:
        pad = w - len(name)
        return " " * (pad // 2) + name + " " * (pad - pad // 2)

    lines = ["-" * width, line(f"{'Variable':>12}", [centred(_abbrev(m, w)) for m in t.names]), rule]
    shown = list(t.equations[0].index)
    for k, eq in enumerate(dict.fromkeys(e for e, _ in shown)):
        if k:
            lines.append(rule)
        lines.append(f"{_abbrev(eq, 12):<12} |")
        terms = {id(c): term for e, term, c in t.fixed if e == eq}
        fixed = [c for e, _, c in t.fixed if e == eq]
        rows = ([(label, c) for label, c in _coef_rows(fixed) if label] if fixed
                else [(term, None) for e, term in shown if e == eq])
        for label, c in rows:
            if fixed and c is None:  # a factor variable's header row
                lines.append(f"{_abbrev(label, 12):>12} |")
                continue
            term = terms[id(c)] if c is not None else label
            text = f"{_abbrev(label, 11):>11} " if c is not None and c.group is not None else f"{_abbrev(label, 12):>12}"
            got = [f.loc[(eq, term)] for f in t.equations]
            # a model without this row has no status (missing); one that did not estimate it says why
            estimated = [isinstance(g["status"], str) and not g["status"] for g in got]
            lines.append(line(text, [stata_number(g["coef"], t.formats["b"]) if est else
                                     f"({g['status']})" if isinstance(g["status"], str) else ""
                                     for g, est in zip(got, estimated)],
                              [_stars(g["pvalue"], t.star) if est else "" for g, est in zip(got, estimated)]))
            for cell, column in (("se", "std_err"), ("t", "statistic"), ("p", "pvalue")):
                if cell in t.cells:
                    lines.append(line(" " * 12, [stata_number(g[column], t.formats[cell]) if est else ""
                                                 for g, est in zip(got, estimated)]))
    if len(t.stats):
        lines.append(rule)
        for stat, row in t.stats.iterrows():
            lines.append(line(f"{_abbrev(str(stat), 12):>12}", [
                "" if not math.isfinite(v) else f"{v:.0f}" if v == int(v) and abs(v) < 1e15
                else stata_number(v, t.formats["stats"]) for v in row.to_numpy(float)]))
    lines.append("-" * width)
    if len(t.cells) > 1:
        lines.append(f"legend: {'/'.join(t.cells)}".rjust(width))
    if t.star:
        lines.append(("legend: " + "; ".join(f"{'*' * (k + 1)} p<{level:g}" for k, level in enumerate(t.star)))
                     .rjust(width))
    return "\n".join(lines)


def _stars(p: float, levels: tuple[float, float, float] | None) -> str:
    """Stata's significance stars: one per level that ``p`` is below."""
    return "*" * sum(p < level for level in levels) if levels and math.isfinite(p) else ""


def _wrap_label(label: str, width: int) -> list[str]:
    """Stata's tabulate header: the label over several lines, broken at spaces, or after '==' in a long word."""
    lines: list[str] = []
    for word in label.split():
        while len(word) > width:
            cut = word.find("==") + 2 if 0 < word.find("==") + 2 <= width else width
            lines.append(word[:cut])
            word = word[cut:]
        if lines and len(lines[-1]) + 1 + len(word) <= width and not lines[-1].endswith("=="):
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def summarize_detail_text(title: str, values: np.ndarray, stats: Mapping[str, float]) -> str:
    """Stata's ``summarize, detail`` block of one variable (its label, else its name, centred over the rule): the
    percentiles with the four smallest and largest values beside them, then N, the sum of weights, mean, standard
    deviation, variance, skewness and kurtosis."""
    if not len(values):
        return "\n".join([" " * ((61 - len(title)) // 2) + title, "-" * 61, "no observations"])
    side = {10: ("Obs", _fmt_int(int(stats["N"]))), 25: ("Sum of wgt.", _fmt_int(int(stats["sum_w"]))),
            50: ("Mean", stata_g(stats["mean"])), 90: ("Variance", stata_g(stats["Var"])),
            95: ("Skewness", stata_g(stats["skewness"])), 99: ("Kurtosis", stata_g(stats["kurtosis"]))}
    lines = [" " * ((61 - len(title)) // 2) + title, "-" * 61, "      Percentiles      Smallest"]
    for k, p in enumerate((1, 5, 10, 25, 50, 75, 90, 95, 99)):
        if p == 50:
            lines.append("")
        extreme = values[k] if k < 4 and k < len(values) else values[len(values) - 9 + k] if k >= 5 and 9 - k <= len(values) else None
        line = f"{f'{p}%':>3}{stata_g(stats[f'p{p}']):>13}{'' if extreme is None else stata_g(float(extreme)):>15}"
        if p in side:
            label, value = side[p]
            line = f"{line:<38}{label}{value:>{23 - len(label)}}"
        lines.append(line.rstrip())
        if p == 50:
            lines.append(f"{'Largest':>31}       Std. dev.{stata_g(stats['sd']):>14}")
    return "\n".join(lines)


#: the columns of a correlation matrix that fit Stata's line; wider ones continue in blocks below
MATRIX_COLUMNS = 7


def _lower_triangle(names: Sequence[str], rows: Callable[[int, int, int], list[str]]) -> list[str]:
    """A lower-triangular table as Stata's correlate and pwcorr print it, in blocks of :data:`MATRIX_COLUMNS`
    columns (a block's rows start at its first column's variable): names abbreviated to 8 over the columns and to 12
    beside the rows; ``rows(i, first, last)`` gives row i's lines for the block of columns first..last."""
    lines: list[str] = []
    for first in range(0, len(names), MATRIX_COLUMNS):
        last = min(first + MATRIX_COLUMNS, len(names)) - 1
        lines += [""] * bool(lines) + [f"{'':12} |" + "".join(f"{_abbrev(v, 8):>9}" for v in names[first:last + 1]),
                                       "-" * 13 + "+" + "-" * (9 * (last - first + 1))]
        for i in range(first, len(names)):
            lines += rows(i, first, min(i, last))
    return lines


def correlate_text(names: Sequence[str], matrix: np.ndarray, n: int, covariance: bool = False) -> str:
    """Stata's ``correlate``: the observation count, then the lower triangle (:func:`_lower_triangle`),
    correlations as %9.4f, covariances with 6 significant digits."""
    cell = (lambda v: f"{stata_g(v, 6):>9}") if covariance else (lambda v: f"{v:9.4f}")
    return "\n".join([f"(obs={_fmt_int(n)})", ""] + _lower_triangle(
        names, lambda i, a, b: [f"{_abbrev(names[i], 12):>12} |" + "".join(cell(matrix[i, j]) for j in range(a, b + 1))]))


def pwcorr_text(names: Sequence[str], rho: np.ndarray, p: np.ndarray, n: np.ndarray, sig: bool, obs: bool,
                star: float | None, shown: float | None) -> str:
    """Stata's ``pwcorr``: each pair's correlation over its own complete rows, as %8.4f cells each followed by its
    star (``star``: p below it) or a space; with ``sig`` the p-values under them and with ``obs`` the counts, each
    variable's block then closed by an empty row; ``shown`` (print()) blanks those with p not below it."""
    def cells(values: list[str]) -> str:
        return " " + "".join(values)

    def rows(i: int, a: int, b: int) -> list[str]:
        keep = [j for j in range(a, b + 1)]
        blank = [shown is not None and i != j and not p[i, j] < shown for j in keep]
        out = [f"{_abbrev(names[i], 12):>12} |" + cells([
            " " * 9 if hide else f"{rho[i, j]:8.4f}" + ("*" if star is not None and i != j and p[i, j] < star else " ")
            for j, hide in zip(keep, blank)])]
        if sig:  # nothing under the diagonal's 1.0000
            values = [" " * 9 if hide else f"{p[i, j]:8.4f} " for j, hide in zip(keep, blank) if j != i]
            out.append(f"{'':12} |" + (cells(values) if values else ""))
        if obs:
            out.append(f"{'':12} |" + cells([" " * 9 if hide else f"{int(n[i, j]):8d} " for j, hide in zip(keep, blank)]))
        return out + [f"{'':12} |"] * (sig or obs)

    return "\n".join(_lower_triangle(names, rows))


def summarize_text(rows: Sequence[tuple[str, int, float, float, float, float]]) -> str:
    """Stata's ``summarize`` table: per variable (name, Obs, Mean, Std. dev., Min, Max); a variable without
    observations (or a string variable) shows its Obs only."""
    lines = ["    Variable |        Obs        Mean    Std. dev.       Min        Max",
             "-------------+---------------------------------------------------------"]
    for name, n, mean, sd, low, high in rows:
        line = f"{_abbrev(name, 12):>12} | {_fmt_int(n):>10}"
        if n:
            line += f" {stata_g(mean):>11} {stata_g(sd):>11} {stata_g(low):>10} {stata_g(high):>10}"
        lines.append(line)
    return "\n".join(lines)


def level_text(value: object, labels: Mapping[int, str] | None = None) -> str:
    """A variable's value as Stata's tables show it: by its value label where ``labels`` has one, else a number
    in %9.0g (missing as ``.``, a boolean as 0 or 1) and a string as it is (a missing one empty)."""
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        x = float(value)
        return labels[int(x)] if labels and x.is_integer() and int(x) in labels else stata_g(x)
    return "" if value is None else str(value)


def list_text(names: Sequence[str], rows: Sequence[Sequence[str]], obs: Sequence[int], obs_numbers: bool = True,
              box: bool = True, separator: int = 5) -> str:
    """Stata's ``list``: a column per variable, right-aligned, as wide as its name (abbreviated past 8
    characters unless the values are wider) or its widest value, 3 spaces apart; each row numbered ``1.``; with
    ``box`` the rows framed and a rule every ``separator`` rows (0: none), else (``clean``) unframed. A table wider
    than Stata's line is printed on one line, not in Stata's wrapped form."""
    widths = [max([min(len(n), 8), *(len(r[j]) for r in rows)]) for j, n in enumerate(names)]
    heads = [n if len(n) <= w else _abbrev(n, w) for n, w in zip(names, widths)]
    digits = max([3, *(len(str(k)) for k in obs)]) if obs_numbers else 0
    lead = " " * (digits + 2)

    def line(cells: Sequence[str]) -> str:
        return "   ".join(f"{c:>{w}}" for c, w in zip(cells, widths))

    inner = len(line(heads)) + 2
    if not box:
        out = [lead + " " + line(heads)] + [(f"{k}.".rjust(digits + 1) + " " if obs_numbers else "") + " " + line(r)
                                           for k, r in zip(obs, rows)]
        return "\n".join(out)
    out = [lead + "+" + "-" * inner + "+", lead + "| " + line(heads) + " |", lead + "|" + "-" * inner + "|"]
    for i, (k, r) in enumerate(zip(obs, rows)):
        if i and separator and i % separator == 0:
            out.append(lead + "|" + "-" * inner + "|")
        out.append((f"{k}.".rjust(digits + 1) + " " if obs_numbers else lead) + "| " + line(r) + " |")
    return "\n".join(out + [lead + "+" + "-" * inner + "+"])


def tabulate_text(label: str, levels: Sequence[float], counts: Sequence[int]) -> str:
    """Stata's one-way ``tabulate``: frequency, percent and cumulative percent of each level."""
    total = int(sum(counts))
    head = _wrap_label(label, 10)
    lines = [f"{h:>11} |" for h in head[:-1]]
    lines += [f"{head[-1]:>11} |      Freq.     Percent        Cum.", "-" * 12 + "+" + "-" * 35]
    cum = 0
    for level, n in zip(levels, counts):
        cum += n
        lines.append(f"{_abbrev(level_text(level), 11):>11} |{_fmt_int(int(n)):>11}{100 * n / total:>12.2f}"
                     f"{100 * cum / total:>12.2f}")
    lines += ["-" * 12 + "+" + "-" * 35, f"{'Total':>11} |{_fmt_int(total):>11}{100:>12.2f}"]
    return "\n".join(lines)


#: The most columns of a two-way tabulate that fit Stata's 79-character line beside the labels and the totals.
TABULATE_COLUMNS = 5


#: two-way tabulate's cell contents besides the frequency, as its key names them
TABULATE_CELLS = {"row": "row percentage", "column": "column percentage", "cell": "cell percentage"}


def tabulate2_text(row_label: str, col_label: str, rows: Sequence[float], cols: Sequence[float],
                   counts: np.ndarray, shown: Sequence[str] = ("freq",),
                   tests: Sequence[tuple[str, float, float]] = ()) -> str:
    """Stata's two-way ``tabulate``: the column variable's name centred over its values, each cell's ``shown``
    contents (``freq`` and any of :data:`TABULATE_CELLS`, one line each, under a key when more than the frequency)
    in columns 11 wide, totals on the right and at the bottom, a rule between rows when cells have several lines;
    then each test's line (label, statistic, p-value). As a published Stata 18 log prints ``tab q6 agent_code,
    chi2 row``."""
    block = 11 * len(cols)
    rule = "-" * 11 + "+" + "-" * block + "+" + "-" * 10
    pad = max(block - len(col_label) + 1, 0) // 2
    grand, totals_c = counts.sum(), counts.sum(axis=0)

    def line(label: str, cells: Sequence[str], total: str, end: str = " ") -> str:
        return f"{_abbrev(label, 10):>10} |" + "".join(f"{c:>10} " for c in cells) + f"|{total:>10}{end}"

    def contents(label: str, cells: np.ndarray) -> list[str]:
        """A row's lines (the Total row's too): its cells and its total, as counts or percentages."""
        total, out = cells.sum(), []
        for k, what in enumerate(shown):
            if what == "freq":
                values, whole = [_fmt_int(int(n)) for n in cells], _fmt_int(int(total))
            else:
                base = {"row": (total, total), "column": (totals_c, grand), "cell": (grand, grand)}[what]
                values = [f"{x:.2f}" for x in 100 * cells / base[0]]
                whole = f"{100 * total / base[1]:.2f}"
            out.append(line(label if k == 0 else "", values, whole))
        return out

    lines = []
    if len(shown) > 1:
        names = ["frequency" if w == "freq" else TABULATE_CELLS[w] for w in shown]
        inner = max(len(n) for n in names) + 2
        lines += ["+" + "-" * inner + "+", "| " + f"{'Key':<{inner - 1}}" + "|", "|" + "-" * inner + "|"]
        lines += ["|" + f"{n:^{inner}}" + "|" for n in names] + ["+" + "-" * inner + "+", ""]
    lines += [f"{'':10} |{' ' * pad}{col_label}".rstrip(),
              line(row_label, [_abbrev(level_text(c), 10) for c in cols], "Total", ""), rule]
    for i, (r, row) in enumerate(zip(rows, counts)):
        lines += [rule] * bool(i and len(shown) > 1) + contents(level_text(r), row)
    lines += [rule] + contents("Total", totals_c)
    if tests:
        lines += [""] + [f"{label:>25} = {stat:8.4f}   Pr = {p:5.3f}" for label, stat, p in tests]
    return "\n".join(lines)


def influence_text(inf: "GroupInfluence", top: int | None = None) -> str:
    """The groups' influence on the fixed effects, most influential (largest Cook's distance) first."""
    frame = inf.summary_frame()
    shown = frame if top is None else frame.head(top)
    names = [c[len("dfb_"):] for c in frame.columns[2:]]
    group = inf.cooks_distance.index.name or "group"
    how = ("one step from the implicit derivatives" if inf.method == "one-step"
           else "refits without each group")
    head = [f"Influence of each {group} on the fixed effects ({how})",
            "Cook's D = DFBETA' inv(V) DFBETA / p; DFBETAS = DFBETA / se"]
    if inf.converged is not None and not inf.converged.all():
        head.append(f"Warning: {int((~inf.converged).sum())} refits did not converge")
    if top is not None and top < len(frame):
        head.append(f"({top} of {len(frame)} groups shown)")
    cols = [_abbrev(n, 10) for n in names]
    line = "-" * (12 + 8 + 11 + 11 * len(cols))
    out = head + ["", line, f"{_abbrev(group, 11):>11} {'n':>7} {'Cook D':>10}" + "".join(f"{c:>11}" for c in cols),
                  line]
    for label, row in shown.iterrows():
        out.append(f"{_abbrev(str(label), 11):>11} {int(row['n']):>7} {row['cooks_d']:>10.4f}"
                   + "".join(f"{v:>11.4f}" for v in row.iloc[2:]))
    return "\n".join(out + [line])


def confint_text(result: "MixedResult", method: str, level: float, B: int, seed: int) -> str:
    """The intervals of :meth:`~jaxhlm.results.MixedResult.conf_int` and ``varcorr`` as two tables."""
    alpha = 1 - level / 100
    ci = result.conf_int(alpha, method=method, B=B, seed=seed)
    sd = result.varcorr(alpha, method=method, B=B, seed=seed)
    name = {"profile": "Profile-likelihood", "bootstrap": f"Parametric-bootstrap (B = {B}, seed {seed}) percentile",
            "wald": "Wald"}[method]
    ci.insert(0, "estimate", result.params)
    tables = [ci, sd[["estimate", "ci_lower", "ci_upper"]].set_axis(["estimate", "lower", "upper"], axis=1)]
    body = "\n\n".join(t.to_string(float_format=lambda v: f"{v:.6g}") for t in tables)
    return f"{name} {level:g}% confidence intervals\n\n{body}"

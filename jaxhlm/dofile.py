"""Run Stata do-files: the subset of commands a ``mixed`` model-building session uses.

``use`` (a .dta or CSV file), ``clear``, ``capture``, ``log using``/``log close``, ``mixed``, ``estimates
store|restore|stats|table``, ``lrtest``, ``estat ic|icc|group|sd|recovariance``, ``test``, ``testparm``, ``lincom``, ``nlcom``, ``margins``,
``tabulate`` (with ``generate()``), ``generate``, ``replace``, ``egen`` (with ``by()`` or the ``by``/``bysort``
prefix), ``drop``, ``keep``, ``sort``, ``rename``, ``merge``, ``reshape``, ``collapse``, ``save``,
``tempfile``, ``preserve``/``restore``, ``label variable``, ``predict`` (after
``mixed``), ``count``, ``summarize``, ``local`` and ``global`` macros (expanded in every later command), ``foreach`` and
``forvalues`` and ``while`` loops, ``if``/``else`` blocks, ``scalar``, ``display`` (with ``_b[]``, ``_se[]``, ``e()``, ``r()``), the ``quietly`` prefix,
and ``version``/``set more`` (which change nothing here). Comments (``*``, ``//``, ``/* */``) and ``///``
continuation follow Stata's rules. Each command is echoed with ``. `` and its output follows, as in a Stata log. A
command outside the subset, or any error, stops the run with the line number.
"""

from __future__ import annotations

import fnmatch
import math
import re
import warnings
from collections.abc import Callable
from typing import Any, Sequence, TextIO
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from . import render
from .errors import DataError, FormulaError, JaxhlmError
from .datasets import LABELS
from .infer import sd_corr
from .results import MixedResult, Regression, WaldTest, coefficient_references, estimates_table, lrtest
from .expressions import Subset, evaluate, parse_expression, with_rows
from .stata import (Columns, abbreviates, confidence_level, level_labels, options, parse_mixed, parse_regress, replay_display,
                    split_qualifiers, split_top)


class DoFileError(JaxhlmError):
    """A do-file command failed; ``line`` is its first line and ``output`` what ran before it printed."""

    def __init__(self, message: str, line: int, output: str = ""):
        super().__init__(f"line {line}: {message}")
        self.line, self.output = line, output


@dataclass
class Command:
    text: str  # the command with comments removed and continuation lines joined
    echo: list[str]  # the lines as Stata echoes them
    line: int


def commands(text: str) -> list[Command]:
    """Split a do-file into commands, dropping comments and joining ``///`` continuations."""
    # A block comment that spans lines joins them, as in Stata: each of its line breaks becomes a continuation.
    text = re.sub(r"/\*.*?\*/", lambda m: " ///\n" * m.group().count("\n") or " ", text, flags=re.S)
    out: list[Command] = []
    pending: Command | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        code = re.sub(r"(^|\s)//.*$", "", raw) if "///" not in raw else raw
        cont = re.search(r"(^|\s)///.*$", code)
        if cont:
            code = code[: cont.start()]
        if pending is None:
            if not code.strip() or code.lstrip().startswith("*"):
                if raw.lstrip().startswith(("*", "//")):
                    out.append(Command("", [raw.strip()], number))  # a comment, echoed as Stata does
                continue
            pending = Command(code.strip(), [raw.rstrip() if cont else code.strip()], number)
        else:
            pending.text += " " + code.strip()
            pending.echo.append(raw.rstrip() if cont else code.strip())
        if not cont:
            out.append(pending)
            pending = None
    if pending is not None:
        out.append(pending)
    return out


@dataclass
class Block:
    """A braced block: a loop (``foreach``/``forvalues``/``while``) or a branch (``if exp``, ``else``, ``else if exp``), with
    its header, the commands (and blocks) of its body and its closing ``}``."""

    header: Command
    body: list["Command | Block"]
    close: Command

    @property
    def is_loop(self) -> bool:
        return _is_loop(self.header.text.split(" ", 1)[0])

    def lines(self) -> list[Command]:
        """The body's lines as Stata numbers them in a loop's echo (nested blocks' included), then the closing ``}``."""
        out: list[Command] = []
        for item in self.body:
            out += [item.header] + item.lines() if isinstance(item, Block) else [item]
        return out + [self.close]


def _is_loop(word: str) -> bool:
    return word in ("foreach", "while") or abbreviates(word, "forvalues", 4)


#: The most passes a ``while`` loop may make before the run stops with a message (a condition that never turns
#: false would otherwise hang it).
WHILE_PASSES = 100_000


def blocks(cmds: list[Command]) -> list[Command | Block]:
    """The commands with each block's body gathered under it: a ``foreach``, ``forvalues``, ``while``, ``if`` or
    ``else`` line ending in ``{`` opens one, a line holding only ``}`` closes the innermost."""
    out: list[Command | Block] = []
    open_: list[tuple[Command, list[Command | Block], list[Command | Block]]] = []
    current = out
    for c in cmds:
        word = c.text.split(" ", 1)[0]
        if c.text.endswith("{") and (_is_loop(word) or word in ("if", "else")):
            open_.append((c, current, []))
            current = open_[-1][2]
        elif c.text == "}":
            if not open_:
                raise DoFileError("unexpected }: no loop or if block is open", c.line)
            header, parent, body = open_.pop()
            parent.append(Block(header, body, c))
            current = parent
        else:
            current.append(c)
    if open_:
        raise DoFileError("the block opened here is not closed: } missing on a line of its own", open_[-1][0].line)
    return out


def _branch(text: str) -> tuple[str, str | None, str]:
    """An ``if``/``else`` line: (``if`` or ``else``, its condition or None, the command it carries on the line, or
    ``{`` for a block). ``else if exp`` is an else with a condition."""
    word, _, rest = text.partition(" ")
    rest = rest.strip()
    if word == "else":
        if rest.split(" ", 1)[0] != "if":
            return "else", None, rest
        rest = rest[2:].strip()
    if rest.endswith("{"):
        return word, rest[:-1].strip(), "{"
    if word == "else":
        raise JaxhlmError("else if needs a block here: else if exp {")
    # the single-line form, if exp command: the condition ends where a word that names a command begins
    for gap in re.finditer(r"\s+", rest):
        command = rest[gap.end():].split(" ", 1)[0]
        try:
            _handler(command)
        except JaxhlmError:
            continue
        return word, rest[:gap.start()], rest[gap.end():]
    raise JaxhlmError("if needs a condition and then a command (if exp command), or a block (if exp {)")


@dataclass
class Session:
    """The state a do-file builds up: the data, the active and stored estimates, the last test."""

    data: pd.DataFrame
    base_dir: Path = field(default_factory=Path.cwd)
    labels: dict[str, str] = field(default_factory=dict)
    #: value labels: the sets label define makes (name: {code: text}), and which set each variable shows
    value_labels: dict[str, dict[int, str]] = field(default_factory=dict)
    label_values: dict[str, str] = field(default_factory=dict)
    changed: bool = False
    active: MixedResult | None = None
    active_name: str = "."  # '.' until `estimates store` names the active results
    stored: dict[str, MixedResult] = field(default_factory=dict)
    last_test: tuple[MixedResult, WaldTest] | None = None
    macros: dict[str, str] = field(default_factory=dict)  # local macros (a do-file is one scope)
    globals: dict[str, str] = field(default_factory=dict)
    returned: dict[str, float] = field(default_factory=dict)  # r() of the last lrtest, test, lincom or count
    scalars: dict[str, float | str] = field(default_factory=dict)
    log_file: TextIO | None = None  # a log using file, open
    log_paused: bool = False  # log off
    #: preserve's copy: data, variable labels, value label sets and attachments, changed
    preserved: tuple[pd.DataFrame, dict[str, str], dict[str, dict[int, str]], dict[str, str], bool] | None = None
    scratch: Any = None  # tempfile's directory (a tempfile.TemporaryDirectory), made on first use
    #: the by-groups of the command a ``by varlist:`` prefix runs, within which its _n, _N and subscripts count
    by_groups: list[str] | None = None
    #: xtset's panel variable and time variable (None: not set)
    panel: tuple[str, str | None] | None = None

    def expand(self, text: str) -> str:
        """``text`` with its macros substituted, as Stata does before it runs a command: `name' (a local;
        innermost first, so `x`i'' works) and $name or ${name} (a global); an undefined macro is empty."""
        previous = None
        while previous != text:
            previous = text
            text = re.sub(r"`([A-Za-z_]\w*)'", lambda m: self.macros.get(m.group(1), ""), text)
        return re.sub(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))",
                      lambda m: self.globals.get(m.group(1) or m.group(2), ""), text)

    # ---- commands -------------------------------------------------------------------------------
    def run(self, cmd: str, args: str) -> str:
        return _handler(cmd)(self, args)

    def use(self, args: str) -> str:
        target, _, opts = args.partition(",")
        clear = any(abbreviates(o, "clear", 5) for o, _ in options(opts))
        path = target.strip().strip('"')
        if not path:
            raise JaxhlmError("use needs a file name: use FILE[.dta] or use FILE.csv [, clear]")
        if self.changed and not clear:
            raise JaxhlmError("no; dataset in memory has changed since last saved (add ', clear' to use)")
        self.data = self._read(path, "use")
        self._take_labels()
        self.changed = False
        self.active, self.active_name, self.stored, self.last_test = None, ".", {}, None
        return ""

    def mixed(self, args: str) -> str:
        if not args.strip():
            return str(self._replayed("mixed"))
        if args.strip().startswith(","):  # replay with display options: mixed, stddeviations
            model = self._replayed("mixed")
            return str(replace(model, spec=replace(model.spec, display=replay_display(args.strip()[1:]))))
        from .pipeline import fit_spec

        return self._estimated(fit_spec(parse_mixed(args, self.data.columns), self.data))

    def regress(self, args: str) -> str:
        """``regress depvar [indepvars] [if] [in] [fweight] [, noconstant vce(robust | cluster var) level(#)]``
        (:func:`~jaxhlm.stata.parse_regress`); ``regress`` alone replays."""
        if not args.strip():
            return str(self._replayed("regress"))
        from .pipeline import fit_spec

        return self._estimated(Regression.of(fit_spec(parse_regress(args, self.data.columns), self.data)))

    def _estimated(self, fitted: MixedResult) -> str:
        """Make a new fit the active results (unnamed), with the data's value labels; its output."""
        self.active = level_labels(fitted, {v: self._value_label(v) for v in self.label_values})
        self.active_name = "."
        return str(self.active)

    def _replayed(self, command: str) -> MixedResult:
        """The active results, which ``command`` alone replays: its own, as Stata's ``last estimates not found``
        otherwise."""
        model = self._active()
        if model.command != command:
            raise JaxhlmError(f"{command} replays its own results, and the active ones are {model.command}'s; type "
                              f"{model.command} to see them")
        return model

    def estimates(self, args: str) -> str:
        sub, _, rest = args.strip().partition(" ")
        name = rest.strip()
        if abbreviates(sub, "store", 3):
            if not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise JaxhlmError("estimates store needs a name: estimates store NAME")
            self.stored[name] = self._active()
            self.active_name = name
            return ""
        if abbreviates(sub, "restore", 1):
            self.active, self.active_name = self._stored(name), name
            return f"(results {name} are active now)"
        if abbreviates(sub, "stats", 4):
            return render.ic_text(self._named(name))
        if abbreviates(sub, "table", 3):
            return self._estimates_table(rest)
        raise JaxhlmError(f"estimates {sub} is not supported; use estimates store NAME, estimates restore NAME, "
                          "estimates stats [NAMES] or estimates table [NAMES] [, options]")

    def _estimates_table(self, args: str) -> str:
        """``estimates table [namelist] [, b(%fmt) se[(%fmt)] t[(%fmt)] p[(%fmt)] stats(scalarlist) stfmt(%fmt)
        star[(#1 #2 #3)] keep(coeflist) drop(coeflist)]`` (:func:`~jaxhlm.results.estimates_table`)."""
        names, _, opts = args.partition(",")
        given: dict[str, object] = {}
        for o, arg in options(opts):
            value = True if arg is None else arg.strip()
            if o in ("se", "t", "p"):
                given[o] = value
            elif o in ("b", "stfmt") and arg is not None:
                given[o] = value
            elif abbreviates(o, "stats", 2) and arg is not None:
                given["stats"] = tuple(str(value).split())
            elif o == "star":
                try:
                    given["star"] = True if arg is None else [float(x) for x in str(value).split()]
                except ValueError:
                    raise JaxhlmError(f"star({value}): give three significance levels, e.g. star(.05 .01 .001)") from None
            elif o in ("keep", "drop") and arg is not None:
                given[o] = value
            else:
                raise JaxhlmError(f"option {o} not allowed; estimates table accepts b(%fmt), se, t, p (each with an "
                                  "optional (%fmt)), stats(scalarlist), stfmt(%fmt), star[(#1 #2 #3)], keep() and drop()")
        return str(estimates_table(dict(self._named(names)), **given))

    def estat(self, args: str) -> str:
        body, comma, opts = args.partition(",")
        if body.split() == ["vif"]:
            return self._estat_vif(opts)
        if body.split()[:1] == ["hettest"]:
            return self._estat_hettest(body.split(None, 1)[1] if len(body.split()) > 1 else "", opts)
        if body.split() == ["ic"] and not comma:
            return render.ic_text([(self.active_name, self._active())])
        if body.split() == ["group"] and not comma:
            return "\n".join(render.group_table(self._active()))
        if body.split() == ["sd"]:
            return self._estat_sd(opts)
        if body.split() and abbreviates(body.split()[0], "recovariance", 5) and len(body.split()) == 1:
            return self._estat_recovariance(opts)
        if body.split() != ["icc"]:
            raise JaxhlmError(f"estat {args.strip()} is not supported; estat ic, estat icc [, level(#)], "
                              "estat group, estat sd and estat recovariance [, relevel(levelvar) correlation] are")
        return str(self._active().icc(alpha=_alpha(opts, "estat icc")))

    def _regression(self, command: str) -> Regression:
        model = self._active()
        if not isinstance(model, Regression):
            raise JaxhlmError(f"{command} is for regress results; the active ones are {model.command}'s")
        return model

    def _estat_hettest(self, varlist: str, opts: str) -> str:
        """``estat hettest [varlist] [, rhs iid]`` (or ``hettest``) after ``regress``; r(chi2), r(df), r(p)."""
        model = self._regression("estat hettest")
        given = _flags(opts, {"rhs": 3, "iid": 3}, "estat hettest")
        names = self._varlist(varlist) if varlist.strip() else None
        if names and "rhs" in given:
            raise JaxhlmError("estat hettest takes a varlist or rhs, not both")
        test = model.hettest(names, rhs="rhs" in given, iid="iid" in given)
        self.returned = {"chi2": test.statistic, "df": float(test.df), "p": test.pvalue}
        shown = (f"Variable: Fitted values of {model.design.response}" if not names and "rhs" not in given else
                 "Variables: All independent variables" if "rhs" in given else
                 f"Variable{'s' if len(names) > 1 else ''}: {' '.join(names)}")
        return "\n".join(["Breusch–Pagan/Cook–Weisberg test for heteroskedasticity ",
                          f"Assumption: {'i.i.d.' if 'iid' in given else 'Normal'} error terms", shown, "",
                          "H0: Constant variance", "", f"    chi2({test.df}) = {test.statistic:6.2f}",
                          f"Prob > chi2 = {test.pvalue:6.4f}"])

    def hettest(self, args: str) -> str:
        """``hettest``: Stata's older name of ``estat hettest``."""
        body, _, opts = args.partition(",")
        return self._estat_hettest(body, opts)

    def vif(self, args: str) -> str:
        """``vif``: Stata's older name of ``estat vif``."""
        return self._estat_vif(args.partition(",")[2])

    def _estat_vif(self, opts: str) -> str:
        """``estat vif [, uncentered]`` after ``regress``."""
        model = self._regression("estat vif")
        uncentered = False
        for o, arg in options(opts):
            if abbreviates(o, "uncentered", 5) and arg is None:
                uncentered = True
            else:
                raise JaxhlmError(f"option {o} not allowed; estat vif accepts uncentered")
        return render.vif_text(model, model.vif(uncentered))

    def _estat_recovariance(self, opts: str) -> str:
        """``estat recovariance [, relevel(levelvar) correlation]``; r(relevels) is the number of levels."""
        model = self._active()
        levels = list(model.design.level_names)
        shown, correlation = levels, False
        for o, arg in options(opts):
            if abbreviates(o, "correlation", 4) and arg is None:
                correlation = True
            elif abbreviates(o, "relevel", 5) and arg is not None:
                named = [lvl for lvl in levels
                         if arg.strip() == lvl or (arg.strip() == "_all" and lvl in model.spec.all_factors)]
                if not named:
                    raise JaxhlmError(f"relevel({arg.strip()}): not a level of the model; its levels are "
                                      + ", ".join(levels))
                shown = named
            else:
                raise JaxhlmError(f"option {o} not allowed; estat recovariance accepts relevel(levelvar) and correlation")
        self.returned = {"relevels": float(len(levels))}
        return render.recovariance_text(model, shown, correlation)

    def _estat_sd(self, opts: str) -> str:
        """``estat sd``; and, a jaxhlm extension, ``estat sd, profile`` or ``estat sd, bootstrap(#) [seed(#)]``
        (profile-likelihood or parametric-bootstrap percentile intervals), each with ``level(#)``."""
        model = self._active()
        given: dict[str, int | None] = {}
        level = []
        for o, arg in options(opts):
            if abbreviates(o, "profile", 4) and arg is None:
                given["profile"] = None
            elif o in ("bootstrap", "seed") and arg is not None and arg.strip().isdigit():
                given[o] = int(arg)
            elif abbreviates(o, "level", 1):
                level.append(f"{o}({arg})" if arg is not None else o)
            else:
                raise JaxhlmError(f"option {o} not allowed; estat sd accepts level(#), and (jaxhlm extensions) "
                                  "profile or bootstrap(#) seed(#)")
        if "seed" in given and "bootstrap" not in given:
            raise JaxhlmError("seed() goes with bootstrap(#)")
        if "profile" in given and "bootstrap" in given:
            raise JaxhlmError("estat sd takes profile or bootstrap(#), not both")
        alpha = _alpha(" ".join(level), "estat sd")
        table = sd_corr(model.random_effects, model.design.blocks, alpha)
        title = []
        if "profile" in given or "bootstrap" in given:
            method = "profile" if "profile" in given else "bootstrap"
            B, seed = given.get("bootstrap") or 0, given.get("seed") or 0
            ci = model.varcorr(alpha, method=method, B=B, seed=seed)[["ci_lower", "ci_upper"]].to_numpy()
            table = replace(table, ci=ci)
            title = ["Profile-likelihood confidence intervals (jaxhlm extension of estat sd)" if method == "profile"
                     else f"Parametric-bootstrap percentile intervals, B = {B:,}, seed({seed}) "
                          "(jaxhlm extension of estat sd)"]
        return "\n".join(title + render.random_table(model, table, level=100 * (1 - alpha)))

    def lincom(self, args: str) -> str:
        body, _, opts = args.partition(",")
        if not body.strip():
            raise JaxhlmError("lincom needs an expression: lincom EXP [, level(#)], e.g. "
                              "lincom ses + 1.sector#c.ses")
        small = any(abbreviates(o, "small", 5) and arg is None for o, arg in options(opts))
        rest = " ".join(o if arg is None else f"{o}({arg})" for o, arg in options(opts) if not abbreviates(o, "small", 5))
        model = self._active()
        result = model.lincom(body.strip(), alpha=_alpha(rest, "lincom (besides small)"),
                              **_small_sample(model, small, "lincom"))
        self.returned = {"estimate": result.estimate, "se": result.se, "z" if math.isinf(result.df) else "t":
                         result.statistic, "p": result.pvalue, "lb": result.ci_lower, "ub": result.ci_upper}
        if not math.isinf(result.df):
            self.returned["df"] = result.df
        return str(result)

    def nlcom(self, args: str) -> str:
        """``nlcom exp [, level(#)]`` or ``nlcom (name: exp) (exp) ... [, level(#)]`` (:meth:`MixedResult.nlcom`):
        the options follow the last comma outside parentheses."""
        parts = split_top(args, ",")
        body, opts = (",".join(parts[:-1]), parts[-1]) if len(parts) > 1 else (args, "")
        groups = _parenthesized(body)
        expressions: str | dict[str, str] = body.strip()
        if groups is not None:  # (name: exp) (exp) ...: a function each
            expressions = {}
            for k, group in enumerate(groups):
                head, colon, rest = group.partition(":")
                named = bool(colon) and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", head) is not None
                expressions[head.strip() if named else f"_nl_{k + 1}"] = rest if named else group
        return str(self._active().nlcom(expressions, alpha=_alpha(opts, "nlcom")))

    def margins(self, args: str) -> str:
        """``margins [marginlist] [, at(var=(numlist) ...) dydx(var) pwcompare[(effects)] mcompare(method) nopvalues
        level(#)]``: a table per term
        of the marginlist (a variable, or variables joined by ``#``; ``i.`` allowed), each over the at() values
        (:meth:`MixedResult.margins`); with dydx(), the average marginal effects of that variable; with pwcompare,
        their pairwise differences, shown with tests (as Stata's ``pwcompare(effects)``)."""
        body, _, opts = args.partition(",")
        at: dict[str, list[float]] = {}
        rest, dydx, pwcompare, mcompare, pvalues = [], None, False, "noadjust", True
        for o, arg in options(opts):
            if o == "at" and arg:
                for name, values in _at_values(arg):
                    at[self._resolve(name)] = values
            elif o == "dydx" and arg:
                dydx = self._resolve(re.sub(r"^c\.", "", arg.strip()))
            elif o == "pwcompare" and (arg is None or arg.strip() in ("effects", "eff")):
                pwcompare = True
            elif abbreviates(o, "mcompare", 3) and arg is not None:
                mcompare = _mcompare(arg)
            elif abbreviates(o, "nopvalues", 5) and arg is None:
                pvalues = False
            else:
                rest.append(o if arg is None else f"{o}({arg})")
        alpha = _alpha(" ".join(rest), "margins (besides at(), dydx(), pwcompare, mcompare() and nopvalues)")
        model = self._active()
        terms = [[self._resolve(re.sub(r"^i\.", "", v)) for v in term.split("#")] for term in body.split()]
        # after mixed, Stata's margins are z tests on e(V) whatever the fit's dfmethod (after regress, t tests)
        large = model._stata_large(False, "margins")
        return "\n\n".join(render.margins_text(model.margins(over, at, dydx, pwcompare, alpha, mcompare=mcompare,
                                                                 large_sample=large), pvalues)
                           for over in terms or [[]])

    def pwcompare(self, args: str) -> str:
        """``pwcompare termlist [, mcompare(method) cieffects pveffects effects asobserved level(#)]``: the pairwise
        differences of each term's cell margins (:meth:`MixedResult.pwcompare`), shown as Stata's default table
        (cieffects) or the one asked for."""
        body, _, opts = args.partition(",")
        given: dict = {}
        show, rest = "cieffects", []
        for o, arg in options(opts):
            if arg is None and o in render.EFFECTS:
                show = o
            elif arg is None and abbreviates(o, "asobserved", 5):
                given["asobserved"] = True
            elif abbreviates(o, "mcompare", 3) and arg is not None:
                given["mcompare"] = _mcompare(arg)
            elif arg is None and abbreviates(o, "small", 5):
                given["small"] = True
            elif abbreviates(o, "level", 1):
                rest.append(f"{o}({arg})" if arg is not None else o)
            else:
                raise JaxhlmError(f"option {o} not allowed; pwcompare accepts mcompare(noadjust|bonferroni|sidak|"
                                  "scheffe), cieffects, pveffects, effects, asobserved, small and level(#)")
        alpha = _alpha(" ".join(rest), "pwcompare")
        return self._active().pwcompare(body, alpha=alpha, **given).text(show)

    def contrast(self, args: str) -> str:
        """``contrast termlist [, overall asobserved small nowald noeffects effects pveffects cieffects level(#)]``:
        the ANOVA-style Wald tests of terms and, for terms with contrast operators (``r.sized``), the table of the
        named contrasts (:meth:`MixedResult.contrast`), shown as Stata shows them by default or as asked."""
        body, _, opts = args.partition(",")
        given, wald, show, level = {}, True, "cieffects", []
        for o, arg in options(opts):
            if arg is None and abbreviates(o, "overall", 4):
                given["overall"] = True
            elif arg is None and abbreviates(o, "asobserved", 5):
                given["asobserved"] = True
            elif arg is None and abbreviates(o, "small", 5):
                given["small"] = True
            elif arg is None and o == "nowald":
                wald = False
            elif arg is None and abbreviates(o, "noeffects", 5):
                show = None
            elif arg is None and (o in render.EFFECTS or abbreviates(o, "effects", 3)):
                show = o if o in render.EFFECTS else "effects"
            elif abbreviates(o, "level", 1):
                level.append(f"{o}({arg})" if arg is not None else o)
            else:
                raise JaxhlmError(f"option {o} not allowed; contrast accepts overall, asobserved, small, nowald, "
                                  "noeffects, effects, pveffects, cieffects and level(#)")
        result = self._active().contrast(body, alpha=_alpha(" ".join(level), "contrast"), **given)
        return result.text(wald, show)

    def lrtest(self, args: str) -> str:
        body, _, opts = args.partition(",")
        names = body.split()
        if len(names) == 1:
            names.append(".")
        if len(names) != 2:
            raise JaxhlmError("lrtest compares two models: lrtest A B (a '.' is the active model)")
        models = [self._active() if n == "." else self._stored(n) for n in names]
        boot: dict[str, int] = {}
        stats, df, force = False, None, False
        for o, arg in options(opts):
            if o in ("bootstrap", "seed") and arg is not None and arg.strip().isdigit():
                boot[o] = int(arg)
            elif o == "force" and arg is None:
                force = True
            elif abbreviates(o, "stats", 2) and arg is None:
                stats = True
            elif o == "df" and arg is not None:
                try:
                    df = float(arg)
                except ValueError:
                    raise JaxhlmError(f"df({arg}): the degrees of freedom of an LR test are a positive whole number") from None
            else:
                raise JaxhlmError(f"option {o} not allowed; lrtest accepts stats, df(#), force, and (a jaxhlm extension) "
                                  "bootstrap(#) with seed(#)")
        if "seed" in boot and "bootstrap" not in boot:
            raise JaxhlmError("seed() goes with bootstrap(#)")
        if boot and df is not None:
            raise JaxhlmError("df() sets the degrees of freedom of the asymptotic test; the bootstrap needs none")
        if boot:
            from .batch import bootstrap_lrtest

            result: object = bootstrap_lrtest(models[0], models[1], B=boot["bootstrap"], seed=boot.get("seed", 0),
                                              names=(names[0], names[1]))
        else:
            result = lrtest(models[0], models[1], names=(names[0], names[1]), df=df, force=force)
        self.active_name = "."  # Stata's lrtest leaves the active results unnamed
        self.returned = {"chi2": result.statistic, "df": float(result.df), "p": result.pvalue}  # type: ignore[attr-defined]
        # stats: the models' estat ic table under the test, in the order named
        return str(result) + ("\n\n" + render.ic_text(list(zip(names, models))) if stats else "")

    def test(self, args: str) -> str:
        body, _, opts = args.partition(",")
        given = _flags(opts, {"accumulate": 1, "small": 5}, "test")
        accumulate = "accumulate" in given
        model = self._active()
        previous = None
        if accumulate:
            if self.last_test is None or self.last_test[0] is not model:
                raise JaxhlmError("nothing to accumulate: no earlier test of the active estimates")
            previous = self.last_test[1]
        result = model.test(_constraints(body), accumulate=previous, **_small_sample(model, "small" in given, "test"))
        self.last_test = (model, result)
        self.returned = ({"chi2": result.statistic} if math.isinf(result.ddf) else
                         {"F": result.statistic, "df_r": result.ddf}) | {"df": float(result.df), "p": result.pvalue}
        return str(result)

    def testparm(self, args: str) -> str:
        """``testparm varlist [, equal small]``."""
        body, _, opts = args.partition(",")
        given, model = _flags(opts, {"equal": 2, "small": 5}, "testparm"), self._active()
        return str(model.testparm(body, equal="equal" in given, **_small_sample(model, "small" in given, "testparm")))

    def tabulate(self, args: str) -> str:
        """``tabulate var [if] [in] [, generate(stub)]`` and the two-way table (:meth:`_tabulate2`), of the rows the
        qualifiers select."""
        body, _, opts = args.partition(",")
        body, subset = self._qualifiers(body)
        names = self._varlist(body)
        keep = self._selected(subset)
        if len(names) == 2:
            return self._tabulate2(names, opts, keep)
        if len(names) != 1:
            raise JaxhlmError("tabulate makes one-way tables (tabulate VAR [, generate(STUB)]) and two-way ones "
                              "(tabulate ROWVAR COLVAR)")
        var = names[0]
        stub = None
        for o, arg in options(opts):
            if abbreviates(o, "generate", 3) and arg:
                stub = arg.strip()
            else:
                raise JaxhlmError(f"option {o} not allowed; tabulate accepts generate(STUB)")
        col = self.data[var]
        counts = col[keep].dropna().value_counts().sort_index()
        if counts.empty:
            raise JaxhlmError("no observations")
        if stub is not None:
            self._generate(var, stub, counts.index, keep)
        return render.tabulate_text(self.labels.get(var, var), self._shown(var, list(counts.index)),
                                    list(counts.to_numpy()))

    def _tabulate2(self, names: list[str], opts: str, keep: np.ndarray) -> str:
        """``tabulate ROWVAR COLVAR [, row column cell nofreq chi2 lrchi2]``: frequencies of each pair of values
        (observations missing either left out), the percentages asked for, and Pearson's and the likelihood-ratio
        chi-squared tests of independence."""
        shown, tests = ["freq"], []
        for o, arg in options(opts):
            full = next((w for w, k in (("row", 3), ("column", 3), ("cell", 4)) if abbreviates(o, w, k)), None)
            if arg is None and full is not None:
                shown.append(full)
            elif arg is None and abbreviates(o, "nofreq", 5):
                shown.remove("freq")
            elif arg is None and o in ("chi2", "lrchi2"):
                tests.append(o)
            else:
                raise JaxhlmError(f"option {o} not allowed; a two-way tabulate here accepts row, column, cell, nofreq, "
                                  "chi2 and lrchi2")
        if not shown:
            raise JaxhlmError("nofreq leaves nothing to show: give row, column or cell too")
        pairs = self.data.loc[keep, names].dropna()
        if pairs.empty:
            raise JaxhlmError("no observations")
        counts = pd.crosstab(pairs[names[0]], pairs[names[1]])
        if counts.shape[1] > render.TABULATE_COLUMNS:
            raise JaxhlmError(f"{names[1]} takes {counts.shape[1]} values, more columns than a two-way table here shows "
                              f"on one line ({render.TABULATE_COLUMNS}); put the variable with fewer values second")
        table = counts.to_numpy()
        kinds = [t for t in ("chi2", "lrchi2") if t in tests]  # Pearson's first, as Stata prints them
        lines = [_independence(table, kind) for kind in kinds]
        self.returned = {"N": float(table.sum()), "r": float(table.shape[0]), "c": float(table.shape[1])}
        for kind, (_, stat, p) in zip(kinds, lines):
            self.returned.update({"chi2": stat, "p": p} if kind == "chi2" else {"chi2_lr": stat, "p_lr": p})
        return render.tabulate2_text(self.labels.get(names[0], names[0]), self.labels.get(names[1], names[1]),
                                     self._shown(names[0], list(counts.index)), self._shown(names[1], list(counts.columns)),
                                     table, shown, lines)

    # ---- data management: generate, replace, egen, drop, keep -------------------------------------
    def generate(self, args: str) -> str:
        """``generate [type] newvar = exp [if] [in]``: rows not selected get a missing value."""
        kind, name, text = _assignment(args, "generate")
        if name in self.data.columns:
            raise JaxhlmError(f"variable {name} already defined")
        body, subset = self._qualifiers(text)
        value = self._rowwise(body)
        new = _stored(kind, value, name)
        new = np.where(self._selected(subset), new, _missing(new))
        self._set({name: new})
        return _missing_note(new)

    def replace(self, args: str) -> str:
        """``replace oldvar = exp [if] [in]``: the selected rows get the new value."""
        kind, name, text = _assignment(args, "replace")
        if kind is not None:
            raise JaxhlmError("replace takes no storage type; the variable keeps its own")
        if name not in self.data.columns:
            raise JaxhlmError(f"variable {name} not found")
        body, subset = self._qualifiers(text)
        old = self.data[name].to_numpy()
        text_var = not (pd.api.types.is_numeric_dtype(self.data[name]) or pd.api.types.is_bool_dtype(self.data[name]))
        value = self._rowwise(body)
        if (value.dtype == object) != text_var:
            raise JaxhlmError(f"type mismatch: {name} is a {'string' if text_var else 'numeric'} variable")
        new = np.where(self._selected(subset), value, old)
        changed = int(np.sum(~((new == old) | (pd.isna(new) & pd.isna(old)))))
        self._set({name: new})
        return f"({changed:,} real change{'s' if changed != 1 else ''} made)"

    def egen(self, args: str, by: list[str] | None = None) -> str:
        """``egen [type] newvar = fcn(exp) [if] [in] [, by(varlist)]``, fcn one of :data:`_EGEN`: the statistic of
        the selected rows' values within each group of ``by`` (missing values left out), on every selected row."""
        kind, name, text = _assignment(args, "egen")
        if name in self.data.columns:
            raise JaxhlmError(f"variable {name} already defined")
        text, *rest = split_top(text, ",")
        for o, arg in options(",".join(rest)):
            if o == "by" and arg and by is None:
                by = self._varlist(arg)
            else:
                raise JaxhlmError(f"option {o} not allowed; egen accepts by(varlist)")
        body, subset = self._qualifiers(text)
        found = re.fullmatch(r"\s*([a-z]+)\((.*)\)\s*", body, re.S)
        if found is None or found.group(1) not in (*_EGEN, *_EGEN_ROW, "group", "tag"):
            raise JaxhlmError(f"egen computes {', '.join(f + '()' for f in (*_EGEN, *_EGEN_ROW, 'group', 'tag'))}; "
                              f"got {body.strip()!r}")
        fcn = found.group(1)
        keep = self._selected(subset)
        if fcn in _EGEN_ROW:
            if by:
                raise JaxhlmError(f"egen {fcn}() works across a row's variables and takes no by()")
            names = self._varlist(found.group(2))
            text = [n for n in names if not pd.api.types.is_numeric_dtype(self.data[n])]
            if not names or text:
                raise JaxhlmError(f"egen {fcn}() needs numeric variables" + (f"; {text[0]} is a string" if text else ""))
            value = _EGEN_ROW[fcn](self.data[names].to_numpy(dtype=float))
            new = _stored(kind, np.where(keep, value, np.nan), name)
            self._set({name: new})
            return _missing_note(new)
        if fcn in ("group", "tag"):
            if by:
                raise JaxhlmError(f"egen {fcn}() takes a varlist, not by()")
            new = _stored(kind, _grouping(self.data[self._varlist(found.group(2))], keep, fcn), name)
            self._set({name: new})
            return _missing_note(new)
        value = pd.Series(evaluate(parse_expression(found.group(2), self._resolve), self.data), index=self.data.index)
        if value.dtype == object:
            raise JaxhlmError(f"egen {fcn}() needs a numeric expression")
        groups = [self.data[v] for v in by] if by else np.zeros(len(value))
        stat = value[keep].groupby([g[keep] for g in groups] if by else groups[keep], dropna=False).transform(_EGEN[fcn])
        new = _stored(kind, np.where(keep, stat.reindex(value.index).to_numpy(dtype=float), np.nan), name)
        self._set({name: new})
        return _missing_note(new)

    def by(self, args: str, sort: bool = False) -> str:
        """The ``by varlist [, sort]:`` prefix of egen, generate, replace, drop and keep, as Stata's: egen's statistics
        by group, and the others' _n, _N and explicit subscripts counted within each group (``bysort id: gen first = _n == 1``,
        ``by id: gen lag = y[_n-1]``). The data must be sorted by the varlist, unless ``sort`` (or ``bysort``) sorts
        them, by the varlist and then by the variables in parentheses after it (``bysort id (time):``), stably."""
        head, colon, rest = args.partition(":")
        cmd, _, cmd_args = rest.strip().partition(" ")
        head, *opts = split_top(head, ",")
        sort |= any(o == "sort" and a is None for o, a in options(",".join(opts)))
        within = re.search(r"\(([^)]*)\)", head)
        names = self._varlist(head[:within.start()] if within else head)
        then = self._varlist(within.group(1)) if within else []
        handler = _handler(cmd) if cmd else None
        if not colon or not names or handler not in (Session.egen, Session.generate, Session.replace, Session.drop,
                                                     Session.keep):
            raise JaxhlmError("by varlist: here prefixes egen, generate, replace, drop and keep, e.g. bysort id: "
                              "egen m = mean(ses), bysort id: gen first = _n == 1")
        if sort:
            self.data, self.changed = self.data.sort_values(names + then, kind="stable", na_position="last"), True
        elif not _sorted_by(self.data, names):
            raise JaxhlmError(f"not sorted: by {' '.join(names)}: needs the data sorted by it; use bysort (or sort "
                              "first)")
        if handler is Session.egen:
            return self.egen(cmd_args, names)
        self.by_groups = names
        try:
            return handler(self, cmd_args)
        finally:
            self.by_groups = None

    def bysort(self, args: str) -> str:
        """``bysort varlist [(varlist)]:``: ``by`` after sorting (:meth:`by`)."""
        return self.by(args, sort=True)

    def sort(self, args: str) -> str:
        """``sort varlist``: the rows in ascending order of the variables (stable, as Stata's ``sort, stable``;
        missing values last)."""
        names = self._varlist(args)
        if not names:
            raise JaxhlmError("sort needs a varlist")
        self.data, self.changed = self.data.sort_values(names, kind="stable", na_position="last"), True
        return ""

    def rename(self, args: str) -> str:
        """``rename old new``."""
        words = args.split()
        if len(words) != 2:
            raise JaxhlmError("rename needs: rename oldname newname")
        old, new = self._varlist(words[0]), words[1]
        if len(old) != 1:
            raise JaxhlmError(f"rename: {words[0]} names {len(old)} variables; name one")
        if new in self.data.columns:
            raise JaxhlmError(f"variable {new} already defined")
        if not re.fullmatch(r"[A-Za-z_]\w{0,31}", new):
            raise JaxhlmError(f"{new} invalid name")
        self.data, self.changed = self.data.rename(columns={old[0]: new}), True
        for attached in (self.labels, self.label_values):
            if old[0] in attached:
                attached[new] = attached.pop(old[0])
        return ""

    def recode(self, args: str) -> str:
        """``recode varlist (rule) [(rule) ...] [if] [in] [, generate(newvarlist) prefix(str)]``: each rule ``numlist =
        #`` maps values (``a/b`` a range, with ``min`` and ``max``; ``missing``, ``nonmissing`` and ``else`` or ``*``)
        to a number or ``.``, the first matching rule winning; a value no rule matches stays. A text after the new
        value (``(1 = 0 "No")``) defines a value label for the new variable, as Stata's. Stata's notes: "(x: 3 changes
        made)", or with generate "(3 differences between x and y)"."""
        body, *rest = split_top(args, ",")
        given = _arguments(",".join(rest), {"generate": 3, "prefix": 3}, "recode")
        gen, prefix = given["generate"].split() if "generate" in given else None, given.get("prefix")
        rules_at = body.find("(")
        if rules_at < 0:
            raise JaxhlmError("recode needs rules in parentheses: recode x (1 = 0) (2/3 = 1)")
        head, rule_text = body[:rules_at], body[rules_at:]
        rule_text, subset = self._qualifiers(rule_text)
        names = self._varlist(head)
        if not names:
            raise JaxhlmError("recode needs a varlist before its rules")
        targets = gen if gen is not None else [prefix + n for n in names] if prefix else names
        if len(targets) != len(names):
            raise JaxhlmError(f"generate() names {len(targets)} variables for {len(names)} recoded")
        rules, labels = _recode_rules(rule_text)
        keep = self._selected(subset)
        notes = []
        for name, target in zip(names, targets):
            if target != name and target in self.data.columns:
                raise JaxhlmError(f"variable {target} already defined")
            if not pd.api.types.is_numeric_dtype(self.data[name]):
                raise JaxhlmError(f"recode works on numeric variables; {name} is a string")
            old = self.data[name].to_numpy(dtype=float)
            new = old.copy()
            done = ~keep
            for test, value in rules:
                hit = ~done & test(old)
                new[hit], done = value, done | hit
            if target == name:
                changed = int(np.sum(~((new == old) | (np.isnan(new) & np.isnan(old)))))
                notes.append(f"({name}: {changed:,} change{'s' if changed != 1 else ''} made)")
            else:
                new = np.where(keep, new, np.nan)  # rows outside if/in: missing in the new variable
                changed = int(np.sum(~((new == old) | (np.isnan(new) & np.isnan(old)))))
                notes.append(f"({changed:,} difference{'s' if changed != 1 else ''} between {name} and {target})")
            self._set({target: new})
            if labels:
                self.value_labels[target] = dict(labels)
                self.label_values[target] = target
        return "\n".join(notes)

    def xtset(self, args: str) -> str:
        """``xtset panelvar [timevar] [, clear]``: declares the panels (``xtset`` alone shows them), as Stata's logs
        show it: "Panel variable: id (unbalanced)", and with a time variable its range, gaps and delta. jaxhlm's
        models name their groups themselves (``|| id:``); do-files set panels before ``mixed`` too."""
        body, *rest = split_top(args, ",")
        if _flags(",".join(rest), {"clear": 5}, "xtset"):
            self.panel = None
            return ""
        names = self._varlist(body) if body.strip() else []
        if not names and self.panel is None:
            raise JaxhlmError("panel variable not set; use xtset panelvar [timevar]")
        if len(names) > 2:
            raise JaxhlmError("xtset takes a panel variable and, optionally, a time variable")
        panel, time = (names[0], names[1] if len(names) > 1 else None) if names else self.panel
        frame = self.data[[panel] + ([time] if time else [])].dropna()
        if not pd.api.types.is_numeric_dtype(frame[panel]):
            raise JaxhlmError(f"xtset: the panel variable {panel} is a string; encode it first (encode {panel}, "
                              f"generate(newvar))")
        sizes = frame.groupby(panel).size()
        kind = "balanced" if sizes.nunique() == 1 else "unbalanced"
        lines = []
        if time:
            t = frame[time].to_numpy(dtype=float)
            if frame.duplicated([panel, time]).any():
                raise JaxhlmError(f"repeated time values within panel: {time} repeats within some {panel}")
            steps = np.diff(np.unique(t))
            delta = float(np.gcd.reduce(steps.astype(int))) if len(steps) and np.all(steps == np.round(steps)) else 1.0
            sets = frame.groupby(panel)[time].apply(lambda s: tuple(sorted(s)))
            if sizes.nunique() == 1:
                kind = "strongly balanced" if sets.nunique() == 1 else "weakly balanced"
            spans = frame.groupby(panel)[time].agg(["min", "max", "size"])
            gaps = bool(((spans["max"] - spans["min"]) / delta + 1 > spans["size"]).any())
            lines = [f" Time variable: {time}, {_int_text(t.min())} to {_int_text(t.max())}"
                     + (", but with gaps" if gaps else ""),
                     f"         Delta: {_int_text(delta)} unit" + ("s" if delta != 1 else "")]
        self.panel = (panel, time)
        self.returned = {"imin": float(sizes.index.min()), "imax": float(sizes.index.max())}
        return "\n".join([f"Panel variable: {panel} ({kind})"] + lines)

    def encode(self, args: str) -> str:
        """``encode strvar [if] [in], generate(newvar) [label(name)]``: the strings numbered 1, 2, … in sorted order,
        with a value label (named ``label()``, or as the new variable) giving each number its string back, as
        Stata's (a string grouping variable becomes a numeric one: ``encode school, gen(schid)``)."""
        body, *rest = split_top(args, ",")
        given = _arguments(",".join(rest), {"generate": 3, "label": 1}, "encode")
        gen, label = given.get("generate"), given.get("label")
        body, subset = self._qualifiers(body)
        names = self._varlist(body)
        if len(names) != 1 or gen is None:
            raise JaxhlmError("encode needs one string variable and generate(): encode school, generate(schid)")
        if gen in self.data.columns:
            raise JaxhlmError(f"variable {gen} already defined")
        col = self.data[names[0]]
        if pd.api.types.is_numeric_dtype(col):
            raise JaxhlmError(f"{names[0]} is numeric; encode numbers a string variable's values")
        text = col.fillna("").astype(str)
        keep = self._selected(subset) & (text != "").to_numpy()
        label = label or gen
        current = self.value_labels.get(label, {})
        codes = {t: c for c, t in current.items()}
        for value in sorted(set(text[keep])):
            if value not in codes:
                codes[value] = max(codes.values(), default=0) + 1
        self._set({gen: np.where(keep, text.map(codes).to_numpy(dtype=float), np.nan)})
        self.value_labels[label] = {c: t for t, c in codes.items()}
        self.label_values[gen] = label
        return ""

    def merge(self, args: str) -> str:
        """``merge 1:1|m:1|1:m varlist using FILE [, keep(match master using) nogenerate keepusing(varlist)]``: the
        using file's variables joined on the key (a school file onto its students, ``merge m:1 id using
        schools``); ``_merge`` is 1 (master only), 2 (using only) or 3 (matched); a variable in both keeps the
        master's values; the side of the key marked 1 must identify its rows. Prints Stata's table of results."""
        body, _, opts = args.partition(",")
        found = re.fullmatch(r"\s*([1m]):([1m])\s+(.+?)\s+using\s+(\S+)\s*", body)
        if found is None or found.group(1) + found.group(2) == "mm":
            raise JaxhlmError("merge needs: merge 1:1|m:1|1:m varlist using FILE")
        master_one, using_one = found.group(1) == "1", found.group(2) == "1"
        key = self._varlist(found.group(3))
        keep, generate, only = ("match", "master", "using"), True, None
        for o, arg in options(opts):
            if o == "keep" and arg:
                keep = tuple(next((k for k in ("match", "master", "using") if abbreviates(w, k, 3)), w)
                             for w in arg.split())
            elif abbreviates(o, "nogenerate", 5) and arg is None:
                generate = False
            elif o == "keepusing" and arg:
                only = arg.split()
            else:
                raise JaxhlmError(f"option {o} not allowed; merge accepts keep(), nogenerate and keepusing()")
        if "_merge" in self.data.columns and generate:
            raise JaxhlmError("variable _merge already defined; drop it (or add nogenerate)")
        name = found.group(4).strip('"')
        using = self._read(name, "merge")
        missing = [k for k in key if k not in using.columns]
        if missing:
            raise JaxhlmError(f"variable {missing[0]} not found in the using data {_named(name, '.dta').name}")
        for side, frame, one in (("master", self.data, master_one), ("using", using, using_one)):
            if one and frame.duplicated(key).any():
                raise _not_unique(key, f"observations in the {side} data")
        extra = [c for c in (only if only is not None else using.columns) if c not in key and c not in self.data]
        merged = self.data.merge(using[key + extra], on=key, how="outer", indicator="_merge", sort=False)
        merged["_merge"] = merged["_merge"].map({"left_only": 1, "right_only": 2, "both": 3}).astype(float)
        codes = {"master": 1.0, "using": 2.0, "match": 3.0}
        counts = {c: int((merged["_merge"] == v).sum()) for c, v in codes.items()}
        merged = merged[merged["_merge"].isin([codes[k] for k in keep if k in codes])].reset_index(drop=True)
        self.data, self.changed = merged if generate else merged.drop(columns="_merge"), True
        return _merge_table(counts)

    def reshape(self, args: str) -> str:
        """``reshape long stubs, i(varlist) j(var)``: each row of wide data (score1 score2 …, one per i) becomes a row
        per j value (the suffixes of the stubs' variables, numbers), the stubs' variables one each, the other
        variables repeated; ``reshape wide stubs, i(varlist) j(var)``, the reverse (the other variables constant
        within i). Prints Stata's summary of the change."""
        body, _, opts = args.partition(",")
        how, _, stubs_text = body.strip().partition(" ")
        if how not in ("long", "wide") or not stubs_text.split():
            raise JaxhlmError("reshape needs: reshape long|wide stubs, i(varlist) j(var)")
        stubs = stubs_text.split()
        ivars, jvar = None, None
        for o, arg in options(opts):
            if o == "i" and arg:
                ivars = self._varlist(arg)
            elif o == "j" and arg and len(arg.split()) == 1:
                jvar = arg.strip()
            else:
                raise JaxhlmError(f"option {o} not allowed; reshape accepts i(varlist) and j(var)")
        if ivars is None or jvar is None:
            raise JaxhlmError("reshape needs i(varlist) and j(var)")
        before = self.data
        if how == "long":
            xij = {stub: {c: float(c[len(stub):]) for c in before.columns
                          if c.startswith(stub) and re.fullmatch(r"\d+", c[len(stub):])} for stub in stubs}
            empty = [stub for stub, cols in xij.items() if not cols]
            if empty:
                raise JaxhlmError(f"variable {empty[0]}# not found: reshape long needs {empty[0]}1, {empty[0]}2, …")
            if jvar in before.columns:
                raise JaxhlmError(f"variable {jvar} already defined")
            if before.duplicated(ivars).any():
                raise _not_unique(ivars, "the observations")
            js = sorted({j for cols in xij.values() for j in cols.values()})
            wide_cols = [c for cols in xij.values() for c in cols]
            other = [c for c in before.columns if c not in wide_cols]
            parts = []
            for j in js:
                part = before[other].assign(**{jvar: j})
                for stub, cols in xij.items():
                    name = next((c for c, v in cols.items() if v == j), None)
                    part[stub] = before[name].to_numpy() if name is not None else np.nan
                parts.append(part)
            after = pd.concat(parts).sort_values(ivars + [jvar], kind="stable").reset_index(drop=True)
            after = after[ivars + [jvar] + stubs + [c for c in other if c not in ivars]]
            summary = [(" ".join(cols), stub) for stub, cols in xij.items()]
        else:
            if jvar not in before.columns:
                raise JaxhlmError(f"variable {jvar} not found")
            if before.duplicated(ivars + [jvar]).any():
                raise JaxhlmError(f"values of variable {jvar} not unique within {' '.join(ivars)}")
            stubs = [self._resolve(stub) for stub in stubs]
            other = [c for c in before.columns if c not in stubs + [jvar] + ivars]
            varying = [c for c in other if (before.groupby(ivars, dropna=False)[c].nunique(dropna=False) > 1).any()]
            if varying:
                raise JaxhlmError(f"variable {varying[0]} not constant within {' '.join(ivars)}; add it to the "
                                  "reshape's stubs or drop it")
            js = sorted(before[jvar].dropna().unique())
            after = before[ivars + other].drop_duplicates(ivars).reset_index(drop=True)
            for stub in stubs:
                table = before.pivot(index=ivars, columns=jvar, values=stub)
                for j in js:
                    column = table[j].rename(f"{stub}{_macro_number(float(j))}")
                    after = after.merge(column, left_on=ivars, right_index=True, how="left")
            summary = [(" ".join(f"{stub}{_macro_number(float(j))}" for j in js), stub) for stub in stubs]
        self.data, self.changed = after, True
        return _reshape_table(how, before.shape, after.shape, jvar, js, summary)

    def collapse(self, args: str) -> str:
        """``collapse [(stat)] [target=]var … [(stat) …] [if] [in] [, by(varlist)]``: the data replaced by one row per
        by() group (sorted by it) holding each statistic of the non-missing values: mean (the default), median,
        sd, sum, count, min, max, first, last (a school file of means: ``collapse (mean) mses=ses, by(id)``)."""
        body, _, opts = args.partition(",")
        by: list[str] = []
        for o, arg in options(opts):
            if o == "by" and arg:
                by = self._varlist(arg)
            else:
                raise JaxhlmError(f"option {o} not allowed; collapse accepts by(varlist)")
        body, subset = self._qualifiers(body)
        stat, targets = "mean", []
        for token in re.findall(r"\(\s*\w+\s*\)|\S+=\S+|\S+", body):
            if token.startswith("("):
                stat = token[1:-1].strip()
                if stat not in _COLLAPSE:
                    raise JaxhlmError(f"collapse computes {', '.join(_COLLAPSE)}; got ({stat})")
            elif "=" in token:
                new, _, source = token.partition("=")
                targets.append((new, self._resolve(source), stat))
            else:
                targets += [(name, name, stat) for name in self._varlist(token)]
        if not targets:
            raise JaxhlmError("collapse needs variables: collapse (mean) ses, by(id)")
        names = [t for t, _, _ in targets]
        clash = sorted({n for n in names if names.count(n) > 1} | set(names) & set(by))
        if clash:
            raise JaxhlmError(f"collapse would create {clash[0]} twice; name the results, e.g. (sd) sd_ses=ses")
        rows = self.data[self._selected(subset)]
        if rows.empty:
            raise JaxhlmError("no observations")
        grouped = rows.groupby(by, sort=True) if by else rows.groupby(np.zeros(len(rows)))
        out = pd.DataFrame({new: grouped[source].agg(_COLLAPSE[stat]) for new, source, stat in targets})
        self.data = out.reset_index(drop=not by)
        self.labels, self.label_values, self.changed = {}, {}, True
        return ""

    def save(self, args: str) -> str:
        """``save FILE [, replace]``: the data as a Stata dataset (.dta, added where FILE has no extension)."""
        target, _, opts = args.partition(",")
        flags = {o for o, _ in options(opts)}
        if flags - {"replace"} or not target.strip():
            raise JaxhlmError("save needs: save FILE [, replace]")
        name = target.strip().strip('"')
        file = _named(name, ".dta")
        if file.suffix.lower() != ".dta":
            raise JaxhlmError(f"save writes Stata datasets (.dta); {name} is not one")
        if file.exists() and "replace" not in flags:
            raise JaxhlmError(f"file {name} already exists; add replace")
        values = {var: dict(self._value_label(var)) for var in self.label_values if var in self.data.columns}
        try:  # the variables' labels and value labels go with the data, as Stata saves them
            self.data.to_stata(file, write_index=False, variable_labels={v: t[:80] for v, t in self.labels.items()
                                                                          if v in self.data.columns},
                               value_labels={v: m for v, m in values.items() if m} or None)
        except (ValueError, OSError) as exc:
            raise JaxhlmError(f"cannot save {name}: {exc}") from None
        self.changed = False
        return f"file {file} saved"

    def tempfile(self, args: str) -> str:
        """``tempfile name …``: each local macro names a new file in a directory removed when the run ends."""
        if not args.split():
            raise JaxhlmError("tempfile needs names: tempfile schools")
        if self.scratch is None:
            import tempfile

            self.scratch = tempfile.TemporaryDirectory(prefix="jaxhlm-do-")
        for name in args.split():
            self.macros[name] = str(Path(self.scratch.name) / f"{name}_{len(self.macros)}.dta")
        return ""

    def preserve(self, args: str) -> str:
        """``preserve``: a copy of the data that ``restore`` brings back (the analysis of a subset, then the whole
        data again)."""
        if args.strip():
            raise JaxhlmError("preserve takes no arguments")
        if self.preserved is not None:
            raise JaxhlmError("already preserved; restore first")
        self.preserved = (self.data.copy(), dict(self.labels), {k: dict(v) for k, v in self.value_labels.items()},
                          dict(self.label_values), self.changed)
        return ""

    def restore(self, args: str) -> str:
        if self.preserved is None:
            raise JaxhlmError("nothing to restore: run preserve first")
        (self.data, self.labels, self.value_labels, self.label_values, self.changed), self.preserved = \
            self.preserved, None
        return ""

    def label(self, args: str) -> str:
        """``label variable var "text"`` (tabulate's header); value labels: ``label define name # "text" [# "text"
        ...] [, add modify replace]``, ``label values varlist [name]`` (none: detached), ``label list [names]`` and
        ``label drop names|_all``. Tables show a labelled variable's values by their labels, as Stata's do."""
        sub, _, rest = args.strip().partition(" ")
        if abbreviates(sub, "variable", 3):
            found = re.fullmatch(r'\s*(\S+)(?:\s+"([^"]*)")?\s*', rest)
            if found is None:
                raise JaxhlmError('label variable needs a variable and its text: label variable var "text"')
            var = self._varlist(found.group(1))
            if len(var) != 1:
                raise JaxhlmError(f"label variable: {found.group(1)} names {len(var)} variables; name one")
            self.labels[var[0]] = found.group(2) or ""
            return ""
        if abbreviates(sub, "define", 3):
            return self._label_define(rest)
        if abbreviates(sub, "values", 3):
            words = rest.split()
            if not words:
                raise JaxhlmError("label values needs variables: label values varlist [lblname]")
            name = words[-1] if len(words) > 1 and words[-1] not in self.data.columns else None
            for var in self._varlist(" ".join(words[:-1] if name else words)):
                if name is None or name == ".":
                    self.label_values.pop(var, None)
                else:
                    self.label_values[var] = name
            return ""
        if abbreviates(sub, "list", 1):
            names = rest.split() or list(self.value_labels)
            missing = [n for n in names if n not in self.value_labels]
            if missing:
                raise JaxhlmError(f"value label {missing[0]} not found")
            return "\n".join(f"{n}:\n" + "\n".join(f"{c:>12} {t}" for c, t in
                                                    sorted(self.value_labels[n].items())) for n in names)
        if abbreviates(sub, "drop", 4):
            names = list(self.value_labels) if rest.split() == ["_all"] else rest.split()
            for n in names:
                if self.value_labels.pop(n, None) is None:
                    raise JaxhlmError(f"value label {n} not found")
            return ""
        raise JaxhlmError(f"label {sub} is not supported; label variable, label define, label values, label list and "
                          "label drop are")

    def _label_define(self, text: str) -> str:
        """``label define name # "text" [# "text" ...] [, add modify replace]``."""
        body, _, opts = text.partition(",")
        given = _flags(opts, {"add": 3, "modify": 6, "replace": 7}, "label define")
        found = re.fullmatch(r"\s*([A-Za-z_]\w*)((?:\s+-?\d+\s+(?:\"[^\"]*\"|\S+))*)\s*", body)
        if found is None:
            raise JaxhlmError('label define needs a name and code-text pairs: label define yesno 0 "No" 1 "Yes"')
        name = found.group(1)
        pairs = {int(c): t.strip('"') for c, t in re.findall(r'(-?\d+)\s+("[^"]*"|\S+)', found.group(2))}
        if name in self.value_labels and not given:
            raise JaxhlmError(f"label {name} already defined; add, modify or replace it")
        current = {} if "replace" in given or name not in self.value_labels else self.value_labels[name]
        clash = [c for c in pairs if c in current and "modify" not in given]
        if clash and "add" in given:
            raise JaxhlmError(f"{clash[0]} already labelled in {name}; modify to change it")
        self.value_labels[name] = {**current, **pairs}
        return ""

    def _value_label(self, var: str) -> dict[int, str]:
        """The value labels a variable shows (none: an empty mapping)."""
        return self.value_labels.get(self.label_values.get(var, ""), {})

    def _shown(self, var: str, values: Sequence[object]) -> list[str]:
        """Values as tables show them (:func:`~jaxhlm.render.level_text`): by the variable's value labels."""
        labels = self._value_label(var)
        return [render.level_text(v, labels) for v in values]

    def _take_labels(self) -> None:
        """The labels of data read from a Stata dataset (:data:`~jaxhlm.datasets.LABELS`); none for other data."""
        labels = self.data.attrs.get(LABELS, {})
        self.labels = dict(labels.get("variables", {}))
        self.value_labels = {k: dict(v) for k, v in labels.get("sets", {}).items()}
        self.label_values = dict(labels.get("values", {}))

    def drop(self, args: str) -> str:
        return self._drop_or_keep(args, drop=True)

    def keep(self, args: str) -> str:
        return self._drop_or_keep(args, drop=False)

    def _drop_or_keep(self, args: str, drop: bool) -> str:
        """``drop``/``keep`` a varlist, or the rows ``if exp`` / ``in range`` selects."""
        body, subset = self._qualifiers(args)
        word = "drop" if drop else "keep"
        if subset is not None:
            if body.strip():
                raise JaxhlmError(f"{word} takes a varlist or if/in, not both")
            selected = self._selected(subset)
            gone = selected if drop else ~selected
            self.data, self.changed = self.data.loc[~gone], True
            n = int(gone.sum())
            return f"({n:,} observation{'s' if n != 1 else ''} deleted)"
        names = self._varlist(body)
        if not names:
            raise JaxhlmError(f"{word} needs a varlist or if/in")
        self.data = self.data.drop(columns=names) if drop else self.data[names]
        self.changed = True
        return ""

    def predict(self, args: str) -> str:
        """``predict newvar [if] [in] [, xb | fitted | residuals | rstandard | stdp]`` and ``predict newvars, reffects
        [reses(newvars) relevel(levelvar)]`` (one variable per random effect, or ``stub*``; ``reses`` alone, the
        older syntax, predicts the standard errors only) after ``mixed``, on the data in memory: a row with a
        missing predictor, outside if/in, or (but for xb and stdp) in a group the fit has not seen gets a missing
        value, and rstandard is missing outside the estimation sample, as Stata has them. Stored as float,
        Stata's default type."""
        model = self._active()
        body, *rest = split_top(args, ",")
        body, subset = self._qualifiers(body)
        chosen, relevel, reses = [], None, None
        for o, arg in options(",".join(rest)):
            if o == "relevel" and arg:
                relevel = arg.strip()
            elif o == "reses" and arg:
                reses = arg
            elif arg is None and any(abbreviates(o, n, k) for n, k in _PREDICT.items()):
                chosen.append(next(n for n, k in _PREDICT.items() if abbreviates(o, n, k)))
            else:
                raise JaxhlmError(f"option {o} not allowed; predict accepts {', '.join(_PREDICT)}, relevel(levelvar) "
                                  "and reses(newvars)")
        if len(chosen) > 1:
            raise JaxhlmError(f"only one statistic may be predicted; got {', '.join(chosen)}")
        what = chosen[0] if chosen else "xb"
        regression = isinstance(model, Regression)
        if regression and what not in _REGRESS_PREDICT:
            raise JaxhlmError(f"predict, {what} is not available after regress here; it predicts "
                              + ", ".join(_REGRESS_PREDICT))
        if not regression and what in _DIAGNOSTICS and what != "rstandard":
            raise JaxhlmError(f"predict, {what} is a regression diagnostic, for regress results; after mixed, "
                              "influence() gives each group's Cook's distance and DFBETAS")
        if (relevel is not None or reses is not None) and what != "reffects":
            raise JaxhlmError(f"{'relevel()' if relevel is not None else 'reses()'} goes with reffects")
        d = model.design
        levels = list(range(len(d.level_names)))
        if what in ("reffects", "reses"):
            model._grouped(f"predict, {what}")
        if relevel is not None:
            if relevel not in d.level_names:
                raise JaxhlmError(f"relevel({relevel}): the model's levels are {', '.join(d.level_names)}")
            levels = [d.level_names.index(relevel)]
        by_level = what in ("reffects", "reses")
        n_new = sum(len(d.level_effects[k]) for k in levels) if by_level else 1
        names = _new_names(body, n_new, self.data.columns)
        if reses is not None:
            names += _new_names(reses, n_new, [*self.data.columns, *names])
        keep = self._selected(subset)
        complete, X, _, codes = d.predictors(self.data, random=what != "xb" and what != "stdp")
        columns = []
        if by_level:
            tables = ([model.ranef] if what == "reffects" else []) + ([model.ranef_se] if what == "reses" or reses
                                                                     else [])
            for table in tables:
                for k in levels:
                    values = table(k).to_numpy()
                    for j in range(values.shape[1]):
                        out = np.full(len(self.data), np.nan)
                        out[complete] = np.where(codes[k] >= 0, values[np.maximum(codes[k], 0), j], np.nan)
                        columns.append(out)
        elif regression and what in _DIAGNOSTICS:
            # the regression diagnostics, of the estimation sample's observations
            stat = "leverage" if what == "hat" else what
            columns.append(model.diagnostics()[stat].reindex(self.data.index).to_numpy(dtype=float))
        else:
            if what == "stdp":
                value = np.sqrt(np.einsum("ni,ij,nj->n", X, model.cov_params().to_numpy(), X))
                out = np.full(len(self.data), np.nan)
                out[complete] = value
            else:
                out = model.predict(self.data, random=what != "xb").to_numpy(copy=True)
            if what not in ("xb", "stdp") and not model.spec.linear:  # a group without a BLUP has no fitted value
                out[np.flatnonzero(complete)[np.any(np.stack(codes) < 0, axis=0)]] = np.nan
            if what in ("residuals", "rstandard"):
                out = self.data[d.response].to_numpy(dtype=float) - out
            if what == "rstandard":
                out = np.where(self.data.index.isin(d.rows().index), out / np.sqrt(model.residual_variance(self.data)), np.nan)
            columns.append(out)
        notes = [] if chosen else ["(option xb assumed)"]
        for name, values in zip(names, columns):
            new = np.where(keep, _stored(None, values, name), np.nan)
            self._set({name: new})
            notes.append(_missing_note(new))
        return "\n".join(n for n in notes if n)

    def graph(self, args: str) -> str:
        """A graph command (``histogram``, ``twoway``, ``marginsplot``, ...): jaxhlm draws no graphs, so the run
        notes that and goes on to the next command, as a do-file's analyses rarely depend on its graphs."""
        return "(graph not drawn: jaxhlm draws no graphs; the run goes on)"

    def count(self, args: str) -> str:
        """``count [if] [in]``: the number of rows selected, as Stata prints it; r(N) holds it."""
        body, subset = self._qualifiers(args)
        if body.strip():
            raise JaxhlmError("count takes only if and in: count [if] [in]")
        n = int(self._selected(subset).sum())
        self.returned = {"N": float(n)}
        return f"  {n:,}"

    def summarize(self, args: str) -> str:
        """``summarize [varlist] [if] [in] [, detail meanonly]``: each variable's non-missing count, mean, standard
        deviation, minimum and maximum over the rows selected (all variables without a varlist); with ``detail``
        also Stata's percentiles, the four smallest and largest values, variance, skewness and kurtosis; with
        ``meanonly`` nothing shown. r() holds the last variable's, as Stata's: N, sum_w, mean, Var, sd, min, max,
        sum (meanonly: N, sum_w, mean, min, max, sum; detail adds p1 … p99, skewness, kurtosis), so that ``gen
        ses_c = ses - r(mean)`` centres as in Stata."""
        body, *rest = split_top(args, ",")
        given = _flags(",".join(rest), {"detail": 1, "meanonly": 4}, "summarize")
        if len(given) > 1:
            raise JaxhlmError("summarize takes detail or meanonly, not both")
        body, subset = self._qualifiers(body)
        names = self._varlist(body) if body.strip() else [str(c) for c in self.data.columns]
        frame = self.data.loc[self._selected(subset)]
        rows, details = [], []
        for name in names:
            col = frame[name]
            numeric = pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
            x = col.to_numpy(dtype=float) if numeric else np.zeros(0)  # a string variable counts no observations
            stats = _summary(x[~np.isnan(x)], "detail" in given)
            self.returned = {k: v for k, v in stats.items() if "meanonly" not in given or k in _MEANONLY}
            rows.append((name, int(stats["N"]), stats.get("mean", np.nan), stats.get("sd", np.nan),
                         stats.get("min", np.nan), stats.get("max", np.nan)))
            if "detail" in given:
                details.append(render.summarize_detail_text(self.labels.get(name) or name, np.sort(x[~np.isnan(x)]),
                                                            stats))
        if "meanonly" in given:
            return ""
        return "\n\n".join(details) if "detail" in given else render.summarize_text(rows)

    def correlate(self, args: str) -> str:
        """``correlate [varlist] [if] [in] [, covariance]``: the correlations (or covariances) of the variables over the
        rows where none is missing (listwise, as Stata's); r(N), and r(rho) of two variables (r(cov_12), r(Var_1) and
        r(Var_2) with covariance)."""
        body, *rest = split_top(args, ",")
        covariance = False
        for o, arg in options(",".join(rest)):
            if abbreviates(o, "covariance", 3) and arg is None:
                covariance = True
            else:
                raise JaxhlmError(f"option {o} not allowed; correlate accepts covariance")
        body, subset = self._qualifiers(body)
        names = self._varlist(body) if body.strip() else [
            str(c) for c in self.data.columns if pd.api.types.is_numeric_dtype(self.data[c])]
        text = [n for n in names if not (pd.api.types.is_numeric_dtype(self.data[n])
                                         or pd.api.types.is_bool_dtype(self.data[n]))]
        if text:
            raise JaxhlmError(f"{text[0]} is a string variable; correlate needs numeric variables (encode it first)")
        x = self.data.loc[self._selected(subset), names].to_numpy(dtype=float)
        x = x[~np.isnan(x).any(axis=1)]
        if len(x) < 2:
            raise JaxhlmError("no observations: correlate needs two or more rows without a missing value")
        matrix = np.atleast_2d(np.cov(x, rowvar=False) if covariance else np.corrcoef(x, rowvar=False))
        self.returned = {"N": float(len(x))}
        if len(names) == 2:
            self.returned.update({"cov_12": matrix[0, 1], "Var_1": matrix[0, 0], "Var_2": matrix[1, 1]}
                                 if covariance else {"rho": matrix[0, 1]})
        return render.correlate_text(names, matrix, len(x), covariance)

    def pwcorr(self, args: str) -> str:
        """``pwcorr [varlist] [if] [in] [, obs sig star(#) print(#) listwise]``: the correlations of each pair over the
        rows where both are present (all the variables', with listwise), with their t tests' p-values; r(rho) and
        r(N) of two variables."""
        body, *rest = split_top(args, ",")
        flags, star, shown = set(), None, None
        for o, arg in options(",".join(rest)):
            if o in ("obs", "sig") and arg is None:
                flags.add(o)
            elif abbreviates(o, "listwise", 4) and arg is None:
                flags.add("listwise")
            elif o in ("star", "print") and arg is not None:
                try:
                    level = float(arg)
                except ValueError:
                    raise JaxhlmError(f"{o}({arg}): give a significance level, e.g. {o}(.05)") from None
                star, shown = (level, shown) if o == "star" else (star, level)
            else:
                raise JaxhlmError(f"option {o} not allowed; pwcorr accepts obs, sig, star(#), print(#) and listwise")
        body, subset = self._qualifiers(body)
        names = self._varlist(body) if body.strip() else [
            str(c) for c in self.data.columns if pd.api.types.is_numeric_dtype(self.data[c])]
        x = self.data.loc[self._selected(subset), names].to_numpy(dtype=float)
        if "listwise" in flags:
            x = x[~np.isnan(x).any(axis=1)]
        k = len(names)
        rho, p, n = np.eye(k), np.zeros((k, k)), np.zeros((k, k))
        for i in range(k):
            for j in range(i + 1):
                both = ~np.isnan(x[:, i]) & ~np.isnan(x[:, j])
                n[i, j] = n[j, i] = both.sum()
                if i != j and both.sum() > 2:
                    r = float(np.corrcoef(x[both, i], x[both, j])[0, 1])
                    t = r * math.sqrt((both.sum() - 2) / max(1 - r * r, 1e-300))
                    rho[i, j] = rho[j, i] = r
                    p[i, j] = p[j, i] = 2 * special.stdtr(both.sum() - 2, -abs(t))
                elif i != j:
                    rho[i, j] = rho[j, i] = p[i, j] = p[j, i] = np.nan
        if k == 2:
            self.returned = {"rho": rho[1, 0], "N": n[1, 0]}
        return render.pwcorr_text(names, rho, p, n, "sig" in flags, "obs" in flags, star, shown)

    def list_(self, args: str) -> str:
        """``list [varlist] [if] [in] [, noobs clean separator(#)]``: the selected rows of the variables (all without
        a varlist) in Stata's boxed table, observation numbers at the left, a rule every 5 rows."""
        body, *rest = split_top(args, ",")
        body, subset = self._qualifiers(body)
        names = self._varlist(body) if body.strip() else [str(c) for c in self.data.columns]
        given = {"obs_numbers": True, "box": True, "separator": 5}
        for o, arg in options(",".join(rest)):
            if arg is None and o == "noobs":
                given["obs_numbers"] = False
            elif arg is None and o == "clean":
                given["box"] = False
            elif abbreviates(o, "separator", 3) and arg is not None and arg.strip().isdigit():
                given["separator"] = int(arg)
            else:
                raise JaxhlmError(f"option {o} not allowed; list accepts noobs, clean and separator(#)")
        at = np.flatnonzero(self._selected(subset))
        frame = self.data.iloc[at][names]
        cells = list(zip(*(self._shown(n, frame[n].tolist()) for n in names)))
        return render.list_text(names, cells, (at + 1).tolist(), **given)

    def _columns(self) -> Columns:
        return Columns(self.data.columns)

    def _resolve(self, name: str) -> str:
        return self._columns().one(name, "variable")

    def _varlist(self, text: str) -> list[str]:
        return list(dict.fromkeys(n for tok in text.split() for n in self._columns().resolve(tok)))

    def _qualifiers(self, text: str) -> tuple[str, Subset | None]:
        """A data command's text and its if/in qualifiers, whose expression may read _n, _N and subscripts."""
        return split_qualifiers(text, self._columns(), rows=True)

    def _selected(self, subset: Subset | None) -> np.ndarray:
        """The rows the qualifiers select (_n and _N within the by-groups of a ``by`` prefix)."""
        if subset is None:
            return np.ones(len(self.data), bool)
        return subset.mask(with_rows(self.data, self.by_groups or ()), 0, len(self.data))

    def _rowwise(self, body: str) -> np.ndarray:
        """An expression's value on each row (generate, replace): with Stata's results and scalars written in, and
        _n, _N and subscripts counted within the by-groups of a ``by`` prefix."""
        node = parse_expression(self._substituted(body, rows=True), self._resolve, rows=True)
        return evaluate(node, with_rows(self.data, self.by_groups or ()))

    def _set(self, columns: dict[str, np.ndarray]) -> None:
        self.data = self.data.assign(**columns)
        self.changed = True

    def _generate(self, var: str, stub: str, levels: pd.Index, keep: np.ndarray) -> None:
        """tabulate's generate(): an indicator per level, missing where the variable is or the row was not
        tabulated."""
        new = [f"{stub}{k}" for k in range(1, len(levels) + 1)]
        clash = [n for n in new if n in self.data.columns]
        if clash:
            raise JaxhlmError(f"variable {clash[0]} already defined")
        col = self.data[var]
        fresh = {}
        for name, level in zip(new, levels):
            fresh[name] = np.where(col.isna() | ~keep, np.nan, (col == level).astype(float))
            shown = f"{level:.4f}" if isinstance(level, (int, float, np.number)) else str(level)
            self.labels[name] = f"{var}=={shown}"
        self._set(fresh)

    def local(self, args: str) -> str:
        return self._define(self.macros, args, "local")

    def global_(self, args: str) -> str:
        return self._define(self.globals, args, "global")

    def _define(self, table: dict[str, str], args: str, kind: str) -> str:
        """``local name [=] ...``: text as written (one pair of enclosing quotes, plain or compound, removed), or
        with ``=`` an expression's value as Stata writes it into a macro; nothing clears the macro."""
        found = re.fullmatch(r"\s*([A-Za-z_]\w*)(?:\s*(=)(.*)|\s+(.*)|\s*)", args, re.S)
        if found is None:
            raise JaxhlmError(f"{kind} needs a name: {kind} name text, or {kind} name = exp")
        name, assign, exp, text = found.groups()
        if len(name) > 31:
            raise JaxhlmError(f"{name} invalid name: a macro's name has at most 31 characters")
        if assign:
            value = self._value(exp)
            table[name] = value if isinstance(value, str) else _macro_number(value)
            return ""
        text = (text or "").strip()
        for opening, closing in (('`"', "\"'"), ('"', '"')):
            if len(text) >= len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
                text = text[len(opening):-len(closing)]
                break
        table[name] = text
        return ""

    def scalar(self, args: str) -> str:
        """``scalar [define] name = exp`` (a number or a string, by then usable in expressions by its name, or as
        ``scalar(name)`` where a variable has the same name), ``scalar drop names|_all``."""
        words = args.split()
        if words[:1] == ["drop"]:
            names = list(self.scalars) if words[1:] == ["_all"] else words[1:]
            missing = [n for n in names if n not in self.scalars]
            if not names or missing:
                raise JaxhlmError(f"scalar {missing[0]} not found" if missing else "scalar drop needs names or _all")
            for n in names:
                del self.scalars[n]
            return ""
        found = re.fullmatch(r"\s*(?:define\s+)?([A-Za-z_]\w*)\s*=(.*)", args, re.S)
        if found is None:
            raise JaxhlmError("scalar needs: scalar [define] name = exp, e.g. scalar ll0 = e(ll)")
        self.scalars[found.group(1)] = self._value(found.group(2))
        return ""

    def loop(self, header: str) -> tuple[str, list[str]]:
        """The macro a loop header sets and its values: ``foreach name in list``, ``foreach name of local|global
        macro``, ``of varlist varlist``, ``of newlist names``, ``of numlist numlist``, ``forvalues name = range``
        (``a/b``, ``a(d)b``)."""
        word, _, rest = header.rstrip("{").strip().partition(" ")
        if word == "foreach":
            found = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(?:(in)|of\s+(\w+))(?:\s+(.*?))?\s*", rest, re.S)
            if found is None:
                raise JaxhlmError("foreach needs: foreach name in list {, or foreach name of local|global|varlist|"
                                  "newlist|numlist list {")
            name, within, kind, items = found.group(1), found.group(2), found.group(3), found.group(4) or ""
            if within or kind == "newlist":
                return name, [w[1:-1] if w.startswith('"') else w for w in re.findall(r'"[^"]*"|\S+', items)]
            if kind in ("local", "global"):
                return name, (self.macros if kind == "local" else self.globals).get(items.strip(), "").split()
            if kind == "varlist":
                return name, self._varlist(items)
            if kind == "numlist":
                return name, [_loop_number(v) for v in _numlist(items)]
            raise JaxhlmError(f"foreach ... of {kind}: the lists are local, global, varlist, newlist and numlist")
        found = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=\s*(-?[\d.]+\s*(?:/|\(\s*-?[\d.]+\s*\))\s*-?[\d.]+)\s*", rest)
        if found is None:
            raise JaxhlmError("forvalues needs: forvalues name = a/b {, or forvalues name = a(d)b {")
        return found.group(1), [_loop_number(v) for v in _numlist(re.sub(r"\s+", "", found.group(2)))]

    def display(self, args: str) -> str:
        """``display [items]``: quoted text and expressions (with ``_b[coef]``, ``_se[coef]``, ``e()``, ``r()``
        and Stata's functions, chi2tail() among them), each expression in Stata's default %10.0g or after a
        ``%w.df`` / ``%w.0g`` format; the items are joined as written, without spaces."""
        out, fmt = [], None
        for kind, item in _display_items(args):
            if kind == "text":
                out.append(item)
            elif kind == "format":
                fmt = item
            elif item.strip():
                out.append(_formatted(self._value(item), fmt))
                fmt = None
        return "".join(out)

    def _value(self, text: str) -> float | str:
        """An expression's value in a scalar context (``display``, ``local name = exp``, ``scalar``)
        (:meth:`_substituted`); a variable stands for its first observation's value, as in Stata, and ``x[5]`` for
        its fifth's."""
        written = text.strip()
        try:
            substituted = self._substituted(text)
            node = parse_expression(substituted, self._resolve, rows=True)
            # subscripts (what is left in brackets once _b[] and _se[] are numbers) read other rows: the whole data
            # then, else its first row
            rows = (with_rows(self.data) if "[" in substituted else self.data.iloc[:1]) if len(self.data) else \
                pd.DataFrame(index=[0])
            value = evaluate(node, rows)[0]
        except (FormulaError, DataError, KeyError) as exc:
            raise JaxhlmError(f"cannot evaluate {written!r}; {exc} (one expression at a time: separate expressions "
                              'with quoted text, di e(ll) " " e(N))') from None
        return value if isinstance(value, str) else float(value)

    def _substituted(self, text: str, rows: bool = False) -> str:
        """An expression with the active results' ``_b[]``, ``_se[]`` and ``e()``, the last command's ``r()``, the
        scalars defined (where no variable has the name), ``_pi`` and ``_N`` written in as numbers: what Stata's
        expressions see in ``display`` and in ``generate`` (``gen ses_c = ses - r(mean)``) alike. With ``rows``
        (generate, replace) ``_N`` is left to count each by-group's rows."""
        def number(x: float) -> str:
            return "(.)" if not np.isfinite(x) else f"({float(x)!r})"

        def scalar(m: re.Match[str]) -> str:
            if m.group(1) is None and m.group(3) is None:  # quoted text: as it is
                return m.group()
            kind, key = m.group(1) or m.group(3), (m.group(2) or m.group(4)).strip()
            if kind in ("_b", "_se") and ":" in key:  # an equation's coefficient: _b[lns1_1_1:_cons]
                frame = self._active().equations()
                eq, _, name = key.partition(":")
                if (eq.strip(), name.strip()) not in frame.index:
                    raise JaxhlmError(f"[{key}] not found: the equations are "
                                      + ", ".join(dict.fromkeys(frame.index.get_level_values(0))))
                return number(float(frame.loc[(eq.strip(), name.strip()), "coef" if kind == "_b" else "std_err"]))
            if kind in ("_b", "_se"):
                model = self._active()
                table = model.fe_params if kind == "_b" else model.bse_fe
                if key not in table.index:
                    raise JaxhlmError(f"[{key}] not found: {kind}[] names a coefficient of the fixed part ("
                                      f"{', '.join(table.index)})")
                return number(float(table[key]))
            values = self._active().e_scalars if kind == "e" else self.returned
            if key not in values:
                raise JaxhlmError(f"{kind}({key}) not found; {kind}() holds "
                                  + (", ".join(values) if values else "nothing yet (run summarize, lrtest, test, lincom or count)"))
            return number(values[key])

        def named(m: re.Match[str]) -> str:  # a scalar by its name (a variable of that name comes first), or scalar()
            name = m.group(1) or m.group(2)
            if name is None or (m.group(2) and name in self.data.columns) or name not in self.scalars:
                if m.group(1):
                    raise JaxhlmError(f"scalar {name} not found")
                return m.group()
            value = self.scalars[name]
            return f'"{value}"' if isinstance(value, str) else number(value)

        text = re.sub(r'"[^"]*"|(_b|_se)\[([^\]]*)\]|\b([er])\(\s*(\w+)\s*\)', scalar, coefficient_references(text))
        text = re.sub(r"\b_pi\b", number(math.pi), text)
        if not rows:
            text = re.sub(r"\b_N\b", number(float(len(self.data))), text)
        return re.sub(r'"[^"]*"|\bscalar\(\s*([A-Za-z_]\w*)\s*\)|\b([A-Za-z_]\w*)\b(?!\s*\()', named, text)

    def quietly(self, args: str) -> str:
        self.run(*_command_word(args.strip().lstrip(":")))
        return ""

    def capture(self, args: str) -> str:
        """``capture command``: runs it without its output, and an error it raises stops nothing (``capture drop
        x``, ``capture log close``); ``capture noisily command`` shows its output, or the error's message."""
        word, rest = _command_word(args.strip().lstrip(":"))
        shown = abbreviates(word, "noisily", 1)
        try:
            return self.noisily(rest) if shown else self.quietly(args)
        except JaxhlmError as exc:
            return str(exc) if shown else ""

    def noisily(self, args: str) -> str:
        """``noisily command``: the command, its output shown."""
        return self.run(*_command_word(args.strip().lstrip(":")))

    def clear(self, args: str) -> str:
        """``clear``: no data in memory; ``clear all`` (or ``clear *``) forgets estimates and scalars too."""
        every = args.strip() in ("all", "*")
        if args.strip() and not every:
            raise JaxhlmError(f"clear {args.strip()} is not supported; use clear or clear all")
        self.data, self.labels, self.value_labels, self.label_values, self.changed = pd.DataFrame(), {}, {}, {}, False
        if every:
            self.active, self.active_name, self.stored, self.last_test = None, ".", {}, None
            self.scalars, self.returned = {}, {}
        return ""

    def log(self, args: str) -> str:
        """``log using FILE [, replace | append] [text]`` (a text log, FILE.log where FILE has no extension: what
        the run prints from there on), ``log close``, ``log off``, ``log on``."""
        word, _, rest = args.strip().partition(" ")
        if word in ("close", "off", "on"):
            if self.log_file is None:
                raise JaxhlmError("no log file open")
            if word == "close":
                footer = self._log_banner("closed")
                self.log_file.write(footer + "\n")
                self.log_file.close()
                self.log_file = None
                return footer
            self.log_paused = word == "off"
            return ""
        if word != "using":
            raise JaxhlmError("log needs: log using FILE [, replace | append] [text], or log close|off|on")
        target, _, opts = rest.partition(",")
        flags = {o for o, _ in options(opts)}
        unknown = flags - {"replace", "append", "text", "t"}
        if unknown or not target.strip():
            raise JaxhlmError(f"option {sorted(unknown)[0]} not allowed; jaxhlm writes text logs: log using FILE "
                              "[, replace | append] [text]" if unknown else "log using needs a file name")
        if self.log_file is not None:
            raise JaxhlmError("log file already open; log close it first")
        name = target.strip().strip('"')
        file = _named(name, ".log")  # as Stata's: from the working directory
        if file.exists() and not flags & {"replace", "append"}:
            raise JaxhlmError(f"file {file} already exists; add replace (or append)")
        self.log_file = file.open("a" if "append" in flags else "w", encoding="utf-8")
        self.log_paused = False
        return self._log_banner("opened")

    def _log_banner(self, event: str) -> str:
        """Stata's lines about the log: its name, file, type and when it was opened or closed."""
        import datetime

        assert self.log_file is not None
        when = datetime.datetime.now().strftime("%d %b %Y, %H:%M:%S")
        rows = [("name", "<unnamed>"), ("log", str(Path(self.log_file.name).resolve())), ("log type", "text"),
                (f"{event} on", when)]
        return "\n".join(f"{k:>10}:  {v}" for k, v in rows)

    def _file(self, name: str) -> Path:
        """The file a data file's name means: .dta added where it has no extension (as Stata adds it), as given or
        else under the do-file's directory."""
        file = _named(name, ".dta")
        return file if file.is_absolute() or file.exists() else self.base_dir / file

    def _read(self, name: str, command: str) -> pd.DataFrame:
        """The data file a command reads (``use``, ``merge … using``): a Stata dataset or a CSV file
        (:meth:`_file`)."""
        file = self._file(name)
        if file.suffix.lower() not in (".dta", ".csv"):
            raise JaxhlmError(f"{command} reads Stata datasets (.dta) and CSV files; {name} is neither")
        if not file.is_file():
            raise JaxhlmError(f"file {_named(name, '.dta')} not found")
        from .datasets import read_csv, read_dta

        return (read_dta if file.suffix.lower() == ".dta" else read_csv)(str(file))

    def version(self, args: str) -> str:
        return ""

    def set(self, args: str) -> str:
        if args.split()[:1] != ["more"]:
            raise JaxhlmError(f"set {args.strip()} is not supported; only set more (which changes nothing here)")
        return ""

    # ---- helpers --------------------------------------------------------------------------------
    def _active(self) -> MixedResult:
        if self.active is None:
            raise JaxhlmError("last estimates not found; fit a model first (mixed or regress)")
        return self.active

    def _named(self, names: str) -> list[tuple[str, MixedResult]]:
        """Estimates by Stata's namelist: stored names (with * and ? wildcards; ``_all`` is every stored one) and
        ``.`` for the active results; none given, the active results."""
        if not names.strip():
            return [(self.active_name, self._active())]
        out: list[tuple[str, MixedResult]] = []
        for token in names.split():
            if token == ".":
                out.append((self.active_name, self._active()))
                continue
            pattern = "*" if token == "_all" else token
            hits = [n for n in self.stored if fnmatch.fnmatchcase(n, pattern)] if set(pattern) & set("*?") else [token]
            if not hits:
                raise JaxhlmError(f"no stored estimation results match {token}")
            out += [(n, self._stored(n)) for n in hits]
        return out

    def _stored(self, name: str) -> MixedResult:
        if name not in self.stored:
            known = ", ".join(self.stored) or "none stored yet"
            raise JaxhlmError(f"estimation result {name} not found (stored: {known})")
        return self.stored[name]


#: Stata's graph commands (name, shortest abbreviation), which a run notes and passes over
GRAPH_COMMANDS = (("graph", 2), ("twoway", 2), ("scatter", 2), ("line", 4), ("histogram", 4), ("kdensity", 5),
                  ("qnorm", 5), ("pnorm", 5), ("marginsplot", 11), ("rvfplot", 7), ("lvr2plot", 8))

#: (command, shortest abbreviation, handler), as Stata abbreviates them.
_COMMANDS: list[tuple[str, int, Callable[[Session, str], str]]] = [
    ("use", 3, Session.use), ("mixed", 5, Session.mixed), ("xtmixed", 7, Session.mixed), ("regress", 3, Session.regress),
    ("hettest", 7, Session.hettest), ("vif", 3, Session.vif),
    ("estimates", 3, Session.estimates), ("estat", 5, Session.estat), ("lrtest", 6, Session.lrtest),
    ("test", 4, Session.test), ("testparm", 8, Session.testparm), ("lincom", 6, Session.lincom), ("nlcom", 5, Session.nlcom),
    ("contrast", 8, Session.contrast), ("pwcompare", 9, Session.pwcompare), ("tabulate", 2, Session.tabulate),
    ("quietly", 3, Session.quietly), ("noisily", 1, Session.noisily), ("version", 4, Session.version), ("set", 3, Session.set),
    ("generate", 1, Session.generate), ("replace", 7, Session.replace), ("egen", 4, Session.egen),
    ("bysort", 4, Session.bysort), ("by", 2, Session.by), ("drop", 4, Session.drop), ("keep", 4, Session.keep),
    ("predict", 4, Session.predict), ("summarize", 2, Session.summarize), ("margins", 7, Session.margins),
    ("local", 3, Session.local), ("global", 2, Session.global_), ("display", 2, Session.display),
    ("scalar", 6, Session.scalar), ("capture", 3, Session.capture), ("clear", 5, Session.clear),
    ("log", 3, Session.log), ("sort", 3, Session.sort), ("rename", 3, Session.rename),
    ("merge", 5, Session.merge), ("recode", 5, Session.recode), ("encode", 6, Session.encode), ("xtset", 5, Session.xtset), ("reshape", 7, Session.reshape), ("collapse", 8, Session.collapse),
    ("save", 4, Session.save), ("tempfile", 8, Session.tempfile), ("count", 3, Session.count), ("correlate", 3, Session.correlate), ("pwcorr", 6, Session.pwcorr), ("preserve", 8, Session.preserve), ("list", 1, Session.list_), ("restore", 7, Session.restore), ("label", 2, Session.label),
    *((name, shortest, Session.graph) for name, shortest in GRAPH_COMMANDS),
]


#: The commands whose output follows their echo directly in Stata's log (a note, display's text); the others'
#: tables start after a blank line.
_INLINE = (Session.display, Session.graph, Session.generate, Session.replace, Session.egen, Session.by, Session.bysort, Session.drop, Session.keep,
           Session.save, Session.count, Session.correlate, Session.recode)


def _independence(table: np.ndarray, kind: str) -> tuple[str, float, float]:
    """A two-way table's test of independence as tabulate prints it: Pearson's chi2 (``chi2``) or the
    likelihood-ratio one (``lrchi2``), on (rows − 1)(columns − 1) degrees of freedom."""
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    df = (table.shape[0] - 1) * (table.shape[1] - 1)
    if kind == "chi2":
        stat, label = float(((table - expected) ** 2 / expected).sum()), f"Pearson chi2({df})"
    else:
        seen = table > 0
        stat, label = float(2 * (table[seen] * np.log(table[seen] / expected[seen])).sum()), f"likelihood-ratio chi2({df})"
    return label, stat, float(special.chdtrc(df, stat))


def _mcompare(arg: str) -> str:
    """mcompare()'s method, as Stata abbreviates it (``bon``, ``sid``, ``sch``, ``noadj``)."""
    word = arg.strip().lower()
    for method, shortest in (("noadjust", 5), ("bonferroni", 3), ("sidak", 3), ("scheffe", 3)):
        if abbreviates(word, method, shortest):
            return method
    raise JaxhlmError(f"mcompare({arg.strip()}): the methods here are noadjust, bonferroni, sidak and scheffe")


def _true(value: float | str, condition: str) -> bool:
    """An ``if`` condition's truth: nonzero (a missing value, Stata's largest number, counts as true)."""
    if isinstance(value, str):
        raise JaxhlmError(f"if {condition}: type mismatch; the condition must be a number (nonzero is true)")
    return value != 0


def _parenthesized(text: str) -> list[str] | None:
    """The contents of ``(a) (b) ...`` when ``text`` is nothing but parenthesized groups (nlcom's list of
    functions); None for anything else, such as one expression that starts with a parenthesis."""
    groups: list[str] = []
    depth, start = 0, 0
    for i, c in enumerate(text):
        if depth == 0 and c.isspace():
            continue
        if depth == 0 and c != "(":
            return None
        if c == "(":
            start = i + 1 if depth == 0 else start
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                groups.append(text[start:i])
    return groups if groups and depth == 0 else None


def _command_word(text: str) -> tuple[str, str]:
    """A command line's first word and the rest: the word ends at a space or a comma (``mixed, stddeviations``)."""
    found = re.match(r"\s*([^\s,]*)\s*(.*)", text, re.S)
    assert found is not None  # the pattern matches any text
    return found.group(1), found.group(2)


def _inline(word: str, args: str) -> bool:
    """Whether a command's output follows its echo directly (:data:`_INLINE`): a prefix's (noisily, capture
    noisily) is its command's, and an unknown command's message stands apart."""
    try:
        handler = _handler(word)
    except JaxhlmError:
        return False
    if handler in (Session.noisily, Session.capture):
        inner, rest = _command_word(args.strip().lstrip(":"))
        if handler is Session.capture:  # only capture noisily shows anything
            inner, rest = _command_word(rest.strip().lstrip(":"))
        return bool(inner) and _inline(inner, rest)
    if handler is Session.estimates:  # estimates restore's note; its tables follow a blank line
        return abbreviates(args.split()[0], "restore", 1) if args.split() else False
    return handler in _INLINE


def _handler(cmd: str) -> Callable[[Session, str], str]:
    for name, shortest, method in _COMMANDS:
        if abbreviates(cmd, name, shortest):
            return method
    raise JaxhlmError(f"command {cmd} is not supported; jaxhlm runs " + ", ".join(n for n, _, _ in _COMMANDS))


#: collapse's statistics, of each group's non-missing values
_COLLAPSE: dict[str, str] = {"mean": "mean", "median": "median", "p50": "median", "sd": "std", "sum": "sum",
                             "count": "count", "min": "min", "max": "max", "first": "first", "last": "last"}


def _reshape_table(how: str, before: tuple[int, int], after: tuple[int, int], jvar: str, js: list[float],
                   xij: list[tuple[str, str]]) -> str:
    """Stata's summary of a reshape: the j values, then observations and variables before and after, the j
    variable, and which wide variables became which long one."""
    (n0, k0), (n1, k1) = before, after
    left, right = ("Wide", "Long") if how == "long" else ("Long", "Wide")
    rule = "-" * 77
    counts = [("Number of observations", n0, n1), ("Number of variables", k0, k1)]
    lines = [f"(j = {' '.join(_macro_number(float(j)) for j in js)})", "", f"{'Data':<35}{left:>4}   ->   {right}",
             rule] + [f"{label:<28}{a:>11,}   ->   {b:,}" for label, a, b in counts]
    j_line = f"j variable ({len(js)} values)"
    lines += [f"{j_line:<39}   ->   {jvar}" if how == "long" else f"{j_line:<28}{jvar:>11}   ->   (dropped)",
              "xij variables:"]
    lines += [f"{w:>39}   ->   {l}" if how == "long" else f"{l:>39}   ->   {w}" for w, l in xij]
    return "\n".join(lines + [rule])


def _named(name: str, extension: str) -> Path:
    """A file named in a command, ``extension`` added where it has none (Stata's .dta for datasets, .log for logs)."""
    return Path(name if Path(name).suffix else name + extension)


def _not_unique(key: list[str], what: str) -> JaxhlmError:
    """Stata's refusal of a key that should identify each row (merge's 1 side, reshape's i())."""
    plural = len(key) > 1
    return JaxhlmError(f"variable{'s' if plural else ''} {' '.join(key)} do{'' if plural else 'es'} not uniquely "
                       f"identify {what}")


def _merge_table(counts: dict[str, int]) -> str:
    """Stata's report of a merge: the rows not matched (from each side) and matched."""
    def row(label: str, n: int, code: int | None = None) -> str:
        return f"    {label:<28}{n:>13,}" + (f"  (_merge=={code})" if code is not None else "")

    rule = "    " + "-" * 41
    unmatched = counts["master"] + counts["using"]
    lines = [f"    {'Result':<28}{'Number of obs':>13}", rule, row("Not matched", unmatched)]
    if unmatched:
        lines += [row("    from master", counts["master"], 1), row("    from using", counts["using"], 2), ""]
    return "\n".join(lines + [row("Matched", counts["match"], 3), rule])


def _loop_number(x: float) -> str:
    """A loop's number as its macro holds it: 12 significant digits, so that 0(.1)1 runs .1, .2, .3, not
    .30000000000000004."""
    return _macro_number(float(f"{x:.12g}"))


def _macro_number(x: float) -> str:
    """A number as ``local name = exp`` stores it: every digit it has, Stata's way (.5, not 0.5; 6, not 6.0;
    missing as .)."""
    if not np.isfinite(x):
        return "."
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    text = repr(float(x))
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text


def _formatted(value: float | str, fmt: str | None) -> str:
    """``display``'s rendering of one expression: Stata's default %10.0g (8 digits, no padding), or ``fmt``
    (%w.df fixed, %w.0g general), right-aligned in w columns (left with %-w)."""
    if isinstance(value, str):
        return value
    text = render.stata_number(value, fmt)
    if fmt is None:
        return text
    width = render.format_width(fmt)
    return text.ljust(width) if fmt.startswith("%-") else text.rjust(width)

#: predict's statistics and their shortest abbreviations
_PREDICT = {"xb": 2, "fitted": 3, "residuals": 3, "rstandard": 4, "reffects": 3, "reses": 5, "stdp": 4,
            "rstudent": 4, "cooksd": 6, "leverage": 3, "hat": 3}
#: predict's regression diagnostics (rstandard after mixed is the residual over σ̂, after regress over s√(1 − h))
_DIAGNOSTICS = ("rstandard", "rstudent", "cooksd", "leverage", "hat")
#: predict's statistics after regress
_REGRESS_PREDICT = ("xb", "residuals", "stdp", *_DIAGNOSTICS)


def _new_names(text: str, count: int, existing: Any) -> list[str]:
    """``count`` new variable names from ``text``: as many names, or ``stub*`` (stub1, stub2, …)."""
    words = text.split()
    if len(words) == 1 and words[0].endswith("*"):
        words = [f"{words[0][:-1]}{k}" for k in range(1, count + 1)]
    if len(words) != count:
        raise JaxhlmError(f"predict needs {count} new variable name{'s' if count > 1 else ''} here (or stub*); got "
                          f"{len(words)}")
    for w in words:
        if not re.fullmatch(r"[A-Za-z][\w]*", w):
            raise JaxhlmError(f"{w} invalid name")
        if w in existing:
            raise JaxhlmError(f"variable {w} already defined")
    return words


#: egen's functions of an expression: each group's statistic of the non-missing values (Stata's total() is 0 for
#: none; std() the values standardised within the group); group() and tag() take a varlist (:func:`_grouping`).
_EGEN: dict[str, str | Callable[[pd.Series], pd.Series]] = {
    "mean": "mean", "sd": "std", "total": "sum", "count": "count", "min": "min", "max": "max", "median": "median",
    "std": lambda x: (x - x.mean()) / x.std(),
}

#: egen's row functions: a statistic across the variables of a varlist on each row, missing values left out (the
#: mean, sd, min and max of a row with none are missing; its total is 0, as Stata's)
_EGEN_ROW: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rowmean": lambda x: _rows_or_missing(x, np.nanmean), "rowtotal": lambda x: np.nansum(x, axis=1),
    "rowmin": lambda x: _rows_or_missing(x, np.nanmin), "rowmax": lambda x: _rows_or_missing(x, np.nanmax),
    "rowsd": lambda x: _rows_or_missing(x, lambda v, axis: np.nanstd(v, axis=axis, ddof=1)),
    "rownonmiss": lambda x: np.sum(~np.isnan(x), axis=1).astype(float),
    "rowmiss": lambda x: np.sum(np.isnan(x), axis=1).astype(float),
}


def _display_items(args: str) -> list[tuple[str, str]]:
    """display's items in order: ("text", quoted text), ("format", %w.df or %w.0g) and ("expression", text); a
    quoted string inside an expression's parentheses belongs to it (``strpos(s, "a")``)."""
    items: list[tuple[str, str]] = []
    current, depth, i = "", 0, 0
    while i < len(args):
        c = args[i]
        fmt = re.match(r"%-?\d+\.\d+[fg]", args[i:]) if depth == 0 and c == "%" else None
        if c == '"':
            end = args.find('"', i + 1)
            if end < 0:
                raise JaxhlmError(f"display: the quote at {args[i:].strip()!r} is not closed")
            if depth == 0:
                items, current = items + [("expression", current), ("text", args[i + 1:end])], ""
            else:
                current += args[i:end + 1]
            i = end + 1
        elif fmt is not None:
            items, current = items + [("expression", current), ("format", fmt.group())], ""
            i += fmt.end()
        elif c == "%":
            raise JaxhlmError(f"display: cannot read {args[i:].strip()!r}; display takes \"text\", expressions "
                              "and %w.df or %w.0g formats")
        else:
            depth += {"(": 1, ")": -1}.get(c, 0)
            current, i = current + c, i + 1
    return [(k, v) for k, v in items + [("expression", current)] if k != "expression" or v.strip()]


def _recode_rules(text: str) -> tuple[list[tuple[Callable[[np.ndarray], np.ndarray], float]], dict[int, str]]:
    """recode's rules, in order: (which values each matches, its new value), and the value labels the rules' texts
    define."""
    rules, labels = [], {}
    parts = re.findall(r"\(([^()]*)\)", text)
    if not parts or re.sub(r"\([^()]*\)", "", text).strip():
        raise JaxhlmError(f"recode: cannot read the rules {text.strip()!r}; write them (1 = 0) (2/3 = 1)")
    for part in parts:
        source, eq, target = part.partition("=")
        found = re.fullmatch(r'\s*(\.|-?\d*\.?\d+)\s*(?:"([^"]*)")?\s*', target)
        if not eq or found is None:
            raise JaxhlmError(f"recode: the rule ({part.strip()}) needs a number or . after '=': (1 = 0)")
        value = np.nan if found.group(1) == "." else float(found.group(1))
        if found.group(2) is not None and not np.isnan(value):
            labels[int(value)] = found.group(2)
        tests = []
        for word in source.split():
            if word in ("else", "*"):
                tests.append(lambda x: np.ones(len(x), bool))
            elif word in ("missing", "miss"):
                tests.append(lambda x: np.isnan(x))
            elif word in ("nonmissing", "nonmiss"):
                tests.append(lambda x: ~np.isnan(x))
            elif word == ".":
                tests.append(lambda x: np.isnan(x))
            elif "/" in word:
                low, _, high = word.partition("/")
                try:
                    a = -np.inf if low == "min" else float(low)
                    b = np.inf if high == "max" else float(high)
                except ValueError:
                    raise JaxhlmError(f"recode: {word} is not a range; write a/b, min/b or a/max") from None
                tests.append(lambda x, a=a, b=b: ~np.isnan(x) & (x >= a) & (x <= b))
            else:
                try:
                    v = float(word)
                except ValueError:
                    raise JaxhlmError(f"recode: {word} is not a value; rules map numbers, ranges a/b, missing, "
                                      "nonmissing and else") from None
                tests.append(lambda x, v=v: x == v)
        if not tests:
            raise JaxhlmError(f"recode: the rule ({part.strip()}) names no value to recode")
        rules.append((lambda x, tests=tuple(tests): np.logical_or.reduce([t(x) for t in tests]), value))
    return rules, labels


def _rows_or_missing(x: np.ndarray, fcn: Callable[..., np.ndarray]) -> np.ndarray:
    """``fcn`` across each row's non-missing values; missing where a row has none."""
    out = np.full(len(x), np.nan)
    some = ~np.all(np.isnan(x), axis=1)
    with warnings.catch_warnings():  # a row of one value has no sd: missing, as Stata's
        warnings.simplefilter("ignore", RuntimeWarning)
        out[some] = fcn(x[some], axis=1)
    return out


def _grouping(columns: pd.DataFrame, keep: np.ndarray, fcn: str) -> np.ndarray:
    """egen's ``group(varlist)``: 1, 2, … numbering the varlist's distinct values in ascending order (missing where
    a value is missing or the row not selected); ``tag(varlist)``: 1 on the first row of each distinct value, 0
    elsewhere (and on rows with a missing value or not selected), as Stata's."""
    complete = keep & columns.notna().all(axis=1).to_numpy()
    rows = columns[complete]
    if fcn == "tag":
        out = np.zeros(len(columns))
        out[np.flatnonzero(complete)[~rows.duplicated(keep="first").to_numpy()]] = 1.0
        return out
    out = np.full(len(columns), np.nan)
    out[complete] = rows.groupby(list(columns.columns), sort=True).ngroup().to_numpy() + 1.0
    return out

#: Stata's storage types: generate's default is float (single precision), as Stata's.
_TYPES = ("byte", "int", "long", "float", "double")


def _assignment(args: str, command: str) -> tuple[str | None, str, str]:
    """(storage type or None, variable, the rest after '=') of ``[type] name = ...``."""
    found = re.fullmatch(r"\s*(?:(byte|int|long|float|double|str\d+|strL)\s+)?([A-Za-z_]\w*)\s*=(?!=)(.*)", args,
                         re.S)
    if found is None:
        raise JaxhlmError(f"{command} needs [type] varname = exp, e.g. {command} "
                          + ("m = mean(ses), by(id)" if command == "egen" else "ses2 = ses^2"))
    if found.group(2).startswith("_") or found.group(2) in ("if", "in"):
        raise JaxhlmError(f"{found.group(2)} invalid name")
    return found.group(1), found.group(2), found.group(3)


def _stored(kind: str | None, value: np.ndarray, name: str) -> np.ndarray:
    """``value`` as Stata stores it in a variable of type ``kind``: float (the default) rounds to single
    precision, so a do-file's generated variables hold the values Stata's do; integer types truncate."""
    if value.dtype == object:
        if kind is not None and not kind.startswith("str"):
            raise JaxhlmError(f"type mismatch: {name} is {kind}, the expression a string")
        return value
    if kind is not None and kind.startswith("str"):
        raise JaxhlmError(f"type mismatch: {name} is {kind}, the expression numeric")
    if kind in ("byte", "int", "long"):
        return np.trunc(value)
    return value if kind == "double" else value.astype(np.float32).astype(float)


#: the r() results of summarize, meanonly
_MEANONLY = ("N", "sum_w", "mean", "min", "max", "sum")
#: summarize, detail's percentiles
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def _summary(x: np.ndarray, detail: bool) -> dict[str, float]:
    """summarize's r() of the values ``x`` (non-missing): with ``detail`` Stata's percentiles (the average of the two
    order statistics where n·p/100 is whole, else the next one up), skewness m₃/m₂^1.5 and kurtosis m₄/m₂²."""
    n = len(x)
    out = {"N": float(n), "sum_w": float(n)}
    if n == 0:
        return {**out, "sum": 0.0}
    mean = float(x.mean())
    out.update({"mean": mean, "Var": float(x.var(ddof=1)) if n > 1 else np.nan, "min": float(x.min()),
                "max": float(x.max()), "sum": float(x.sum())})
    out["sd"] = math.sqrt(out["Var"]) if n > 1 else np.nan
    if detail:
        s = np.sort(x)
        for p in PERCENTILES:
            P = n * p / 100
            i = int(math.floor(P))
            out[f"p{p}"] = float((s[i - 1] + s[i]) / 2) if P == i and 0 < i < n else float(s[min(i, n - 1)])
        d = x - mean
        m2 = float(np.mean(d**2))
        out["skewness"] = float(np.mean(d**3)) / m2**1.5 if m2 > 0 else np.nan
        out["kurtosis"] = float(np.mean(d**4)) / m2**2 if m2 > 0 else np.nan
    return out


def _missing(values: np.ndarray) -> Any:
    return "" if values.dtype == object else np.nan


def _missing_note(values: np.ndarray) -> str:
    n = int(np.sum(values == "")) if values.dtype == object else int(np.isnan(values).sum())
    return f"({n:,} missing value{'s' if n != 1 else ''} generated)" if n else ""


def _numlist(text: str) -> list[float]:
    """Stata's numlist: numbers, ``a(d)b`` (a to b by d) and ``a/b`` (a to b by 1)."""
    out: list[float] = []
    for tok in re.findall(r"-?[\d.]+\(-?[\d.]+\)-?[\d.]+|-?[\d.]+/-?[\d.]+|\S+", text):
        try:
            if (ranged := re.fullmatch(r"(-?[\d.]+)\((-?[\d.]+)\)(-?[\d.]+)", tok)) is not None:
                a, d, b = map(float, ranged.groups())
                out += list(np.arange(a, b + d / 2, d)) if d else []
            elif "/" in tok:
                a, b = map(float, tok.split("/"))
                out += list(np.arange(a, b + 0.5))
            else:
                out.append(float(tok))
        except ValueError:
            raise JaxhlmError(f"invalid numlist {text.strip()!r}: numbers, a(d)b or a/b") from None
    if not out:
        raise JaxhlmError(f"invalid numlist {text.strip()!r}: numbers, a(d)b or a/b")
    return out


#: One term of margins' at(): ``var=#`` or ``var=(numlist)``.
_AT_TERM = re.compile(r"([A-Za-z_]\w*)\s*=\s*(\((?:[^()]|\([^()]*\))*\)|[^\s()]+)")


def _at_values(text: str) -> list[tuple[str, list[float]]]:
    """margins' ``at(var=# var=(numlist) ...)``."""
    found = _AT_TERM.findall(text)
    if not found or _AT_TERM.sub("", text).strip():
        raise JaxhlmError(f"at({text}) is not var=# or var=(numlist) terms")
    return [(name, _numlist(values[1:-1] if values.startswith("(") else values)) for name, values in found]


def _alpha(opts: str, command: str) -> float:
    """The ``level(#)`` option (Stata's confidence level in percent) as the alpha of a ``1 - alpha`` interval."""
    level = 95.0
    for o, arg in options(opts):
        if not (abbreviates(o, "level", 1) and arg is not None):
            raise JaxhlmError(f"option {o} not allowed; {command} accepts level(#)")
        level = confidence_level(arg)
    return 1 - level / 100


def _flags(opts: str, names: dict[str, int], command: str) -> set[str]:
    """Which of ``command``'s options ``names`` (each with its shortest abbreviation) the options text gives; any
    other option is refused."""
    given = set()
    for o, arg in options(opts):
        found = next((n for n, k in names.items() if abbreviates(o, n, k)), None)
        if found is None or arg is not None:
            raise JaxhlmError(f"option {o} not allowed; {command} accepts " + " and ".join(names))
        given.add(found)
    return given


def _sorted_by(frame: pd.DataFrame, names: list[str]) -> bool:
    """Whether the rows are in the order a stable sort by ``names`` (missing values last, as bysort's) leaves them."""
    order = frame[names].reset_index(drop=True).sort_values(names, kind="stable", na_position="last").index
    return bool(np.array_equal(order.to_numpy(), np.arange(len(frame))))


def _int_text(x: float) -> str:
    """A number as Stata shows a whole one: without decimals."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _arguments(opts: str, names: dict[str, int], command: str) -> dict[str, str]:
    """The arguments of ``command``'s options ``names`` (each with its shortest abbreviation) that the options text
    gives; any other option, or one without its argument, is refused."""
    given = {}
    for o, arg in options(opts):
        found = next((n for n, k in names.items() if abbreviates(o, n, k)), None)
        if found is None or not arg or not arg.strip():
            raise JaxhlmError(f"option {o} not allowed; {command} accepts " + " and ".join(f"{n}()" for n in names))
        given[found] = arg.strip()
    return given


def _small_sample(model: MixedResult, small: bool, command: str) -> dict[str, object]:
    """Stata's ``small`` option of ``test``, ``testparm`` and ``lincom`` (:meth:`MixedResult._stata_large`)."""
    return {"large_sample": model._stata_large(small, command)}


def _constraints(body: str) -> list[str]:
    """``test``'s forms: ``(exp=exp) (exp=exp)``, ``exp=exp[=exp…]``, or a coefficient list (each = 0)."""
    body = body.strip()
    if not body:
        raise JaxhlmError("test needs a constraint: test EXP = EXP, or test COEF [COEF ...]")
    if body.startswith("("):
        groups = [g.strip() for g in split_top(body, " ") if g.strip()]
        if not all(g.startswith("(") and g.endswith(")") for g in groups):
            raise JaxhlmError(f"test {body}: write each constraint in parentheses, e.g. test (a = 0) (b = c)")
        return [c for g in groups for c in _constraints(g[1:-1])]
    if "=" in body:
        sides = body.split("=")
        return [f"{sides[0]} = {s}" for s in sides[1:]]
    return [f"{name} = 0" for name in body.split()]


def run_do(text: str, data: pd.DataFrame | None = None, *, base_dir: str | Path | None = None,
           write: Callable[[str], None] | None = None) -> str:
    """Run a do-file's commands on ``data`` (default: the bundled HSB data) and return the log.

    ``write`` receives the log as it is produced (the command line prints it). A failing command raises
    :class:`DoFileError` with its line number; the log up to it is in the error's ``output``.
    """
    if data is None:
        from . import datasets

        data = datasets.hsb()
    session = Session(data, Path(base_dir) if base_dir is not None else Path.cwd())
    session._take_labels()  # data read from a Stata dataset brings its labels
    log: list[str] = []

    def emit(chunk: str) -> None:
        log.append(chunk)
        if write is not None:
            write(chunk)
        if session.log_file is not None and not session.log_paused:
            session.log_file.write(chunk)

    def echo(cmd: Command, mark: str) -> str:
        return "\n".join([f"{mark}{cmd.echo[0]}"] + [f"> {e}" for e in cmd.echo[1:]]) + "\n"

    def run_line(cmd: Command, text: str, echoed: bool) -> bool:
        """Run one command line (``text``, its macros unexpanded) and print its output. Whether it printed."""
        word, args = _command_word(session.expand(text))
        output = session.run(word, args)
        if output:
            emit(("" if _inline(word, args) else "\n") + output.strip("\n") + ("\n\n" if echoed else "\n"))
        return bool(output)

    def execute(items: list[Command | Block], echoed: bool) -> bool:
        """Run ``items``; at the top level each is echoed first. A loop is echoed with its body's lines numbered as
        Stata's log numbers them, before the output of all its passes (one after another; a blank line ends them,
        as it ends each top-level command's output). An ``if``/``else`` runs its body when its condition holds
        (nonzero) and no earlier branch of its chain ran: at the top level its lines are echoed as they are read,
        those of a branch not taken without running (nor expanding their macros). Whether anything was printed."""
        printed = False
        chain: bool | None = None  # whether a branch of the current if/else chain ran; None outside a chain
        for item in items:
            cmd = item.header if isinstance(item, Block) else item
            branch = cmd.text.split(" ", 1)[0] in ("if", "else") and not (isinstance(item, Block) and item.is_loop)
            if echoed and not (isinstance(item, Block) and branch):
                emit(echo(cmd, ". ") + ("".join(echo(c, f"{k:>3}. ") for k, c in enumerate(item.lines(), start=2))
                                        if isinstance(item, Block) else ""))
            if not cmd.text:
                continue
            try:
                if branch:
                    kind, condition, carried = _branch(cmd.text)
                    if kind == "else" and chain is None:
                        raise JaxhlmError("else without an if before it")
                    done = kind == "else" and chain  # an earlier branch of the chain ran
                    taken = not done and (condition is None or
                                          _true(session._value(session.expand(condition)), condition))
                    chain = None if kind == "else" and condition is None else bool(done or taken)
                    if not isinstance(item, Block):
                        printed |= taken and run_line(cmd, carried, echoed)
                        continue
                    if echoed:
                        emit(echo(cmd, ". ") + ("" if taken else "".join(echo(c, ". ") for c in item.lines())))
                    if taken:
                        printed |= execute(item.body, echoed)
                        if echoed:
                            emit(echo(item.close, ". "))
                    continue
                chain = None
                if isinstance(item, Block) and cmd.text.startswith("while "):
                    condition = cmd.text[len("while "):].rstrip("{").strip()
                    passes, count = False, 0
                    while _true(session._value(session.expand(condition)), condition):
                        count += 1
                        if count > WHILE_PASSES:
                            raise JaxhlmError(f"while {condition}: still true after {WHILE_PASSES:,} passes; the "
                                              "body must change what the condition reads")
                        passes |= execute(item.body, False)
                    if passes and echoed:
                        emit("\n")
                    printed |= passes
                    continue
                if isinstance(item, Block):
                    name, values = session.loop(session.expand(cmd.text))
                    passes = False
                    for value in values:
                        session.macros[name] = value
                        passes |= execute(item.body, False)
                    if passes and echoed:
                        emit("\n")
                    printed |= passes
                    continue
                printed |= run_line(cmd, cmd.text, echoed)
            except DoFileError:
                raise
            except JaxhlmError as exc:
                raise DoFileError(str(exc), cmd.line, "".join(log)) from None
        return printed

    try:
        execute(blocks(commands(text)), True)
    finally:
        if session.log_file is not None:  # a log left open ends with the run
            session.log_file.close()
        if session.scratch is not None:
            session.scratch.cleanup()
    return "".join(log)

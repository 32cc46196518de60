"""Read the numbers of the reference Stata log (tests/fixtures/stata_hsb_model_building.txt).

The log is a copy of shared/reference/stata_hsb_model_building.txt (a Stata 17 session on the HSB data).
Parsing it, rather than typing its numbers, keeps every expected value traceable to the printed output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

LOG = Path(__file__).parent / "fixtures" / "stata_hsb_model_building.txt"

_NUM = r"(-?\d*\.?\d+(?:e[-+]\d+)?)"
_COEF = re.compile(rf"^\s*(.*?)\s*\|\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}\s*$")
_OMIT = re.compile(r"^\s*(\S+)\s*\|\s+0\s+\(omitted\)")
_RE = re.compile(rf"^\s*((?:var|cov)\(.*?\))\s*\|\s+{_NUM}\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
_HEAD = re.compile(r"^\s*(\S+)\s*\|\s*$")


@dataclass
class Printout:
    """One ``mixed`` printout: header numbers, coefficient rows (Stata names), random-effects rows."""

    command: str
    nobs: int = 0
    ngroups: int = 0
    obs_min: int = 0
    obs_avg: float = 0.0
    obs_max: int = 0
    wald: float = 0.0
    wald_df: int = 0
    llf: float = 0.0
    coef: dict[str, tuple[float, ...]] = field(default_factory=dict)
    omitted: list[str] = field(default_factory=list)
    random: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    lr_stat: float = 0.0
    lr_df: int = 0
    lr_chibar: bool = False
    notes: list[str] = field(default_factory=list)
    se_failed: bool = False


def _level_name(header: str, levels: str) -> str:
    parts, lv = header.split("#"), iter(levels.split())
    return "#".join(p if p.startswith("c.") else f"{next(lv)}.{p}" for p in parts)


def _maybe(x: str) -> float | None:
    return None if x == "." else float(x)


def printouts(text: str | None = None) -> list[Printout]:
    """Every ``mixed`` printout of ``text`` (default: the reference log)."""
    text = LOG.read_text() if text is None else text
    chunks = re.split(r"(?m)^\s*\.\s+mixed\s+", text)[1:]
    out = []
    for chunk in chunks:
        lines = chunk.splitlines()
        p = Printout(command="mixed " + " ".join(s.strip() for s in lines[:3] if not s.startswith("note")))
        header = None
        for line in lines:
            s = line.rstrip()
            if s.strip().startswith(". ") and p.lr_stat:
                break
            if m := re.search(r"Number of obs\s+=\s+([\d,]+)", s):
                p.nobs = int(m.group(1).replace(",", ""))
            elif m := re.search(r"Number of groups\s+=\s+([\d,]+)", s):
                p.ngroups = int(m.group(1).replace(",", ""))
            elif m := re.search(r"\bmin =\s+([\d,]+)", s):
                p.obs_min = int(m.group(1).replace(",", ""))
            elif m := re.search(r"\bavg =\s+([\d.]+)", s):
                p.obs_avg = float(m.group(1))
            elif m := re.search(r"\bmax =\s+([\d,]+)", s):
                p.obs_max = int(m.group(1).replace(",", ""))
            elif m := re.search(r"Wald chi2\((\d+)\)\s+=\s+([\d.]+)", s):
                p.wald_df, p.wald = int(m.group(1)), float(m.group(2))
            if m := re.search(r"Log likelihood = (-[\d.]+)", s):
                p.llf = float(m.group(1))
            if s.startswith("note:"):
                p.notes.append(s.strip())
            if "Standard-error calculation failed" in s:
                p.se_failed = True
            if m := re.search(r"LR test vs\. linear model: (chi2|chibar2)\((\d+)\) = ([\d.]+)", s):
                p.lr_chibar = m.group(1) == "chibar2"
                p.lr_df = 1 if p.lr_chibar else int(m.group(2))
                p.lr_stat = float(m.group(3))
            if m := _RE.match(s):
                p.random[m.group(1)] = tuple(_maybe(x) for x in m.group(2, 3, 4, 5))
                continue
            if m := _OMIT.match(s):
                p.omitted.append(m.group(1))
                continue
            if m := _COEF.match(s):
                name = m.group(1)
                if re.fullmatch(r"[\d ]+", name):
                    name = _level_name(header or "", name)
                p.coef[name] = tuple(float(x) for x in m.groups()[1:])
                continue
            if (m := _HEAD.match(s)) and m.group(1) not in ("mathach",):
                header = m.group(1)
        out.append(p)
    return out


def after(command_fragment: str) -> str:
    """The log text following the first line containing ``command_fragment``."""
    text = LOG.read_text()
    return text[text.index(command_fragment):]


def lrtests(text: str | None = None) -> list[tuple[str, float, int, float]]:
    """(assumption, LR chi2, df, p) of each ``lrtest`` in order."""
    text = LOG.read_text() if text is None else text
    return [(a.strip(), float(s), int(d), float(p)) for a, d, s, p in
            re.findall(r"Assumption: (.*?)\n\s*\n?\s*LR chi2\((\d+)\) =\s+([\d.]+)\s*\n\s*\n?Prob > chi2 = ([\d.]+)",
                       text)]


def estat_ic(text: str | None = None) -> list[tuple[str, int, float, int, float, float]]:
    """(model, N, ll(model), df, AIC, BIC) of each ``estat ic`` in order."""
    text = LOG.read_text() if text is None else text
    rows = re.findall(r"^\s*(\S+) \|\s+([\d,]+)\s+\.\s+(-[\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$", text, re.M)
    return [(m, int(n.replace(",", "")), float(ll), int(df), float(a), float(b)) for m, n, ll, df, a, b in rows]


def tests(text: str | None = None) -> list[tuple[list[str], int, float, float]]:
    """(constraint lines, df, chi2, p) of each ``test`` in order."""
    text = LOG.read_text() if text is None else text
    out = []
    for block in re.split(r"(?m)^\s*\.\s+test\s", text)[1:]:
        lines = re.findall(r"^\s*\(\s*\d+\)\s+(.*?)\s*$", block, re.M)
        d, c, p = re.search(r"^\s+chi2\(\s*(\d+)\) =\s+([\d.]+)\s*\n\s*(?:\d+\s*\n)?\s*\n?\s*Prob > chi2 =\s+([\d.]+)",
                            block, re.M).groups()
        out.append((lines, int(d), float(c), float(p)))
    return out


def tabulations(text: str | None = None) -> list[list[tuple[str, int, float, float]]]:
    """(level, Freq., Percent, Cum.) rows of each one-way ``tabulate`` in order."""
    text = LOG.read_text() if text is None else text
    out = []
    for block in re.split(r"(?m)^\s*\.\s+tab\w*\s", text)[1:]:
        rows = re.findall(r"^\s*(\S+) \|\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s*$", block, re.M)
        out.append([(lv, int(n.replace(",", "")), float(pc), float(cu)) for lv, n, pc, cu in rows])
    return out


# ---- the exact optimum and its inference, from the conventions that accompany the log --------------------
CONVENTIONS = Path(__file__).parent / "fixtures" / "stata_conventions.md"


def _section(title_regex: str) -> str:
    text = CONVENTIONS.read_text()
    m = re.search(title_regex, text, re.M)
    assert m, title_regex
    rest = text[m.end():]
    end = re.search(r"^#{2,4} ", rest, re.M)
    return rest[: end.start()] if end else rest


def _first(x: str) -> float:
    return float(x.strip().split()[0])


def exact_optimum(model: str) -> dict:
    """LL, θ, σ² and β of the exact ML optimum (conventions §2, "Reference optimum")."""
    sec = _section(rf"^#### {re.escape(model)}(?=\s|$).*$")
    beta_line = re.search(r"- beta: (.*)", sec).group(1)
    sigma_line = re.search(r"- Sigma: (.*)", sec).group(1)
    return {
        "sigma": {f"{k}": float(v) for k, v in re.findall(r"((?:var|cov)\([^)]*\)) = (-?[\d.e-]+)", sigma_line)},
        "llf": float(re.search(r"LL \(exact ML optimum\) = (-[\d.]+)", sec).group(1)),
        "theta": [float(t) for t in re.search(r"= \[([^\]]+)\]", sec).group(1).split(",")],
        "sigma2": float(re.search(r"sigma_e\^2 = ([\d.]+)", sec).group(1)),
        "beta": {k: float(v) for k, v in re.findall(r"(\S+) = (-?[\d.e-]+)(?:,|$)", beta_line)},
    }


def fixed_at_mle(model: str) -> dict[str, tuple[float, float]]:
    """{Stata term: (b, SE)} at the exact MLE (conventions appendix A)."""
    sec = _section(rf"^### {re.escape(model)}(?=\s|$).*$")
    out = {}
    for row in re.findall(r"^\| (\S+) \|(.*)\|\s*$", sec, re.M):
        cells = [c.strip() for c in row[1].split("|")]
        if row[0] != "term" and not row[0].startswith("-") and len(cells) >= 7:
            out[row[0]] = (_first(cells[1]), _first(cells[4]))
    return out


def random_at(model: str, source: str) -> dict[str, tuple[float, float, float, float]]:
    """{parameter: (estimate, SE, CI low, CI high)} of one ``source`` row kind (conventions appendix B)."""
    text = CONVENTIONS.read_text()
    start = text.index("## Appendix B")
    sec = text[start:]
    m = re.search(rf"^### {re.escape(model)}(?=\s|$).*$", sec, re.M)
    body = sec[m.end():]
    body = body[: body.find("\n### ")] if "\n### " in body else body
    out, current = {}, None
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6:
            continue
        if cells[0] and cells[0] not in ("parameter",) and not cells[0].startswith("-"):
            current = cells[0]
        if cells[1] == source:
            out[current] = tuple(_first(c) for c in cells[2:6])
    return out


def wald_at_mle(model: str) -> float:
    text = CONVENTIONS.read_text()
    return float(re.search(rf"\| {re.escape(model)} Wald chi2\(\d+\) @MLE \| [^|]+\| ([\d.]+) \|", text).group(1))

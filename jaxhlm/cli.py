"""Command line.

``jaxhlm fit FORMULA [--data FILE] [--chunksize N] [--reml] [--cov KIND] [--vce robust [--cluster VAR]]
[--pweights VAR] [--group-pweights LEVEL=VAR ...] [--pwscale size|effective|gk] [--json]``
— an lme4-style formula;
``jaxhlm mixed 'depvar indepvars || group: [varlist] [, options]' [--data FILE] [--chunksize N] [--json]`` —
Stata syntax; ``jaxhlm regress 'depvar indepvars [, options]' [--data FILE] [--json]`` — Stata's regress.
FILE is CSV, Parquet or a Stata dataset (.dta); with ``--chunksize`` a CSV file is read and reduced N rows at a time;
``jaxhlm run FILE.do [--data FILE]`` — a do-file, printed as a Stata log;
``jaxhlm bootstrap SMALL BIG [--B 1000] [--seed 0] [--data FILE]`` — parametric-bootstrap LR test of two
nested models, each a Stata ``mixed`` command or an lme4 formula;
``jaxhlm influence MODEL [--exact] [--top N] [--data FILE]`` — each group's influence on the fixed effects
(Cook's distance, DFBETAS), most influential first;
``jaxhlm anova MODEL [--type 1|2|3] [--ddf satterthwaite|kroger|residual] [--reml] [--data FILE]`` — F tests of the
fixed-effect terms (lmerTest's ``anova``);
``jaxhlm confint MODEL [--method profile|bootstrap|wald] [--level 95] [--B 1000] [--seed 0] [--data FILE]`` —
confidence intervals of every parameter, and of the standard deviations and correlations.

Errors in the input go to stderr as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxhlm", description="Hierarchical linear models in JAX.")
    sub = ap.add_subparsers(dest="command", required=True)
    data_help = "CSV, Parquet or Stata (.dta) file (default: the bundled High School and Beyond data)"
    chunk_help = "read a CSV file this many rows at a time (for data larger than memory comfortably holds)"
    f = sub.add_parser("fit", help="fit a linear mixed model (two or three levels, or crossed factors) and print a "
                                   "Stata-style report")
    f.add_argument("formula", help="lme4-style formula, e.g. 'mathach ~ ses + (1 + ses | id)'")
    f.add_argument("--data", help=data_help)
    f.add_argument("--chunksize", type=int, help=chunk_help)
    f.add_argument("--reml", action="store_true", help="fit by restricted maximum likelihood")
    f.add_argument("--cov", help="covariance structure: identity, independent, exchangeable, unstructured")
    f.add_argument("--dfmethod", choices=["satterthwaite", "kroger", "residual"],
                   help="t and F tests on Satterthwaite's, Kenward and Roger's or N - rank(X) degrees of freedom "
                        "(each with --reml) instead of z and chi2 tests")
    f.add_argument("--weights", help="column of precision weights (residual variance sigma^2/w; lme4's weights)")
    f.add_argument("--freq-weights", help="column of frequency weights (each row stands for that many observations)")
    f.add_argument("--residuals-by", help="column whose values each get their own residual variance (Stata's "
                                          "residuals(independent, by(var)))")
    f.add_argument("--residuals", default="independent",
                   help="residual correlation within groups: independent, exchangeable, ar1, 'ar p', 'ma q', "
                        "exponential, toeplitz [q], banded [q] or unstructured (Stata's residuals(rspec, t(var)))")
    f.add_argument("--time", help="column of the time the correlated residual structures (all but independent and "
                                  "exchangeable) need")
    f.add_argument("--vce", choices=["oim", "robust"],
                   help="standard errors: oim (observed information, the default) or robust (the cluster-robust "
                        "sandwich; Stata's vce(robust), the default with sampling weights)")
    f.add_argument("--cluster", help="column whose values are the clusters of --vce robust (Stata's vce(cluster "
                                     "var)); default: the outermost grouping level's groups")
    f.add_argument("--pweights", help="column of the observations' sampling weights (Stata's [pw=var])")
    f.add_argument("--group-pweights", nargs="+", metavar="LEVEL=VAR", default=[],
                   help="a grouping level's sampling weights (Stata's pweight(var) of the level), e.g. id=wschool")
    f.add_argument("--pwscale", choices=["size", "effective", "gk"],
                   help="scale the observations' sampling weights within each group (Stata's pwscale())")
    f.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    m = sub.add_parser("mixed", help="fit a model written in Stata's mixed syntax")
    m.add_argument("model", help="e.g. 'mathach c.ses##i.sector || id: ses, cov(unstr)'")
    m.add_argument("--data", help=data_help)
    m.add_argument("--chunksize", type=int, help=chunk_help)
    m.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    g = sub.add_parser("regress", help="fit a linear regression written in Stata's regress syntax")
    g.add_argument("model", help="e.g. 'mathach ses i.sector, vce(cluster id)'")
    g.add_argument("--data", help=data_help)
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    r = sub.add_parser("run", help="run a Stata do-file (mixed, regress, their postestimation commands and the "
                                   "data commands the README lists) and print its log")
    r.add_argument("dofile", help="the do-file")
    r.add_argument("--data", help=data_help + "; a 'use' in the do-file replaces it")
    b = sub.add_parser("bootstrap", help="parametric-bootstrap LR test of two nested models")
    b.add_argument("small", help="the null model: Stata syntax ('mathach ses || id:') or a formula (with '~')")
    b.add_argument("big", help="the alternative model, in the same syntax")
    b.add_argument("--B", type=int, default=1000, help="bootstrap replicates (default 1000)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b.add_argument("--data", help=data_help)
    i = sub.add_parser("influence", help="each group's influence on the fixed effects: Cook's distance, DFBETAS")
    i.add_argument("model", help="Stata syntax ('mathach ses || id:') or a formula (with '~')")
    i.add_argument("--exact", action="store_true",
                   help="refit without each group instead of the one-step approximation from the derivatives")
    i.add_argument("--top", type=int, help="show only the N most influential groups")
    i.add_argument("--data", help=data_help)
    for name, what in (("drop1", "likelihood-ratio tests of the fixed-effect terms, each left out in turn (lme4's "
                                 "drop1)"),
                       ("ranova", "likelihood-ratio tests of the random effects, each reduced in turn (lmerTest's "
                                  "ranova)")):
        t = sub.add_parser(name, help=what)
        t.add_argument("model", help="Stata syntax ('mathach ses || id: ses') or a formula (with '~')")
        t.add_argument("--reml", action="store_true", help="fit a formula by REML (ranova then compares REML fits)")
        t.add_argument("--data", help=data_help)
    a = sub.add_parser("anova", help="F tests of the fixed-effect terms (lmerTest's anova: type III by default)")
    a.add_argument("model", help="Stata syntax ('mathach i.sized##c.ses || id:') or a formula (with '~')")
    a.add_argument("--reml", action="store_true", help="fit a formula by REML (needed for --ddf kroger)")
    a.add_argument("--type", type=int, choices=[1, 2, 3], default=3, help="type of the hypotheses (default 3)")
    a.add_argument("--ddf", choices=["satterthwaite", "kroger", "residual"], default="satterthwaite",
                   help="denominator degrees of freedom: Satterthwaite's (default) or Kenward and Roger's (REML)")
    a.add_argument("--data", help=data_help)
    c = sub.add_parser("confint", help="confidence intervals of every parameter: profile likelihood (lme4's "
                                       "default), parametric bootstrap, or Wald (Stata's)")
    c.add_argument("model", help="Stata syntax ('mathach ses || id: ses, cov(un)') or a formula (with '~')")
    c.add_argument("--method", choices=["profile", "bootstrap", "wald"], default="profile",
                   help="how the intervals are formed (default: profile)")
    c.add_argument("--level", type=float, default=95.0, help="confidence level in percent (default 95)")
    c.add_argument("--B", type=int, default=1000, help="bootstrap replicates (default 1000)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default 0)")
    c.add_argument("--data", help=data_help)
    return ap


def _pairs(items: list[str], option: str) -> dict[str, str]:
    """``LEVEL=VAR`` arguments as a mapping."""
    from .errors import JaxhlmError

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise JaxhlmError(f"{option} takes LEVEL=VAR pairs, e.g. id=wschool; got {item!r}")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import bootstrap_lrtest, datasets, drop1, fit, mixed, ranova, regress
    from .dofile import DoFileError, run_do
    from .errors import JaxhlmError
    from .render import confint_text, influence_text

    def model(text: str):
        return fit(text, data) if "~" in text else mixed(text, data)

    try:
        streamed = args.command in ("fit", "mixed")  # one pass over the data: it may be read in chunks
        data = (datasets.read(args.data, args.chunksize if streamed else None, in_memory=not streamed)
                if args.data else datasets.hsb())
        if args.command == "run":
            path = Path(args.dofile)
            if not path.is_file():
                raise JaxhlmError(f"do-file {args.dofile!r} not found")
            try:
                run_do(path.read_text(), data, base_dir=path.parent, write=lambda s: print(s, end="", flush=True))
            except DoFileError as exc:
                raise JaxhlmError(f"{args.dofile}, {exc}") from None
            return 0
        if args.command in ("drop1", "ranova"):
            fitted = fit(args.model, data, reml=args.reml) if "~" in args.model else mixed(args.model, data)
            print((drop1 if args.command == "drop1" else ranova)(fitted))
            return 0
        if args.command == "anova":
            fitted = fit(args.model, data, reml=args.reml) if "~" in args.model else mixed(args.model, data)
            print(fitted.anova(args.ddf, type=args.type))
            return 0
        if args.command == "bootstrap":
            if args.B < 1:
                raise JaxhlmError(f"--B must be a positive number of replicates, got {args.B}")
            small, big = model(args.small), model(args.big)
            print(bootstrap_lrtest(small, big, B=args.B, seed=args.seed, names=("small", "big")))
            return 0
        if args.command == "confint":
            if not 0 < args.level < 100:
                raise JaxhlmError(f"--level must be a percentage between 0 and 100, got {args.level:g}")
            print(confint_text(model(args.model), args.method, args.level, args.B, args.seed))
            return 0
        if args.command == "influence":
            if args.top is not None and args.top < 1:
                raise JaxhlmError(f"--top must be a positive number of groups, got {args.top}")
            print(influence_text(model(args.model).influence(exact=args.exact), top=args.top))
            return 0
        result = (fit(args.formula, data, reml=args.reml, cov=args.cov, dfmethod=args.dfmethod, weights=args.weights,
                      freq_weights=args.freq_weights, residuals_by=args.residuals_by,
                      residuals=args.residuals, time=args.time, vce=args.vce, cluster=args.cluster,
                      pweights=args.pweights, group_pweights=_pairs(args.group_pweights, "--group-pweights"),
                      pwscale=args.pwscale)
                  if args.command == "fit" else regress(args.model, data) if args.command == "regress"
                  else mixed(args.model, data))
    except JaxhlmError as exc:
        print(f"jaxhlm: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

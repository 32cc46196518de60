"""Command line: ``jaxhlm fit FORMULA [--data FILE.csv] [--reml] [--cov KIND] [--json]``.

Errors in the input go to stderr as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

EXIT_INPUT = 2


def _read_csv(path: str) -> pd.DataFrame:
    from .errors import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {path!r} not found")
    try:
        frame = pd.read_csv(p)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"cannot read {path!r} as CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if frame.shape[1] < 2:
        raise DataError(f"{path!r} does not look like a CSV table (found {frame.shape[1]} column); "
                        "expected a header row and comma-separated columns")
    return frame


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxhlm", description="Hierarchical linear models in JAX.")
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a two-level linear mixed model and print a Stata-style report")
    f.add_argument("formula", help="lme4-style formula, e.g. 'mathach ~ ses + (1 + ses | id)'")
    f.add_argument("--data", help="CSV file (default: the bundled High School and Beyond data)")
    f.add_argument("--reml", action="store_true", help="fit by restricted maximum likelihood")
    f.add_argument("--cov", help="covariance structure: identity, independent, exchangeable, unstructured")
    f.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import datasets, fit
    from .errors import JaxhlmError

    try:
        data = _read_csv(args.data) if args.data else datasets.hsb()
        result = fit(args.formula, data, reml=args.reml, cov=args.cov)
    except JaxhlmError as exc:
        print(f"jaxhlm: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

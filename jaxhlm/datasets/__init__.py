"""Data sets shipped with jaxhlm, and reading a user's CSV with a clear message when it cannot be read."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from ..errors import DataError


def hsb() -> pd.DataFrame:
    """High School and Beyond (1982): 7,185 students in 160 schools (Raudenbush & Bryk).

    Columns: id (school), mathach, ses, female, minority, sector (1 = Catholic), size, sized (1: <= 500,
    2: 501-1200, 3: > 1200), meanses, pracad, disclim, himinty. Row order is the original order.
    """
    with resources.files(__package__).joinpath("hsb.csv").open("r") as fh:
        return pd.read_csv(fh)


def read_csv(path: str) -> pd.DataFrame:
    """A CSV file with a header row, or a :class:`DataError` saying why it cannot be read."""
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

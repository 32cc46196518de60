"""Data sets shipped with jaxhlm, and reading a user's CSV, Parquet or Stata (.dta) file with a clear message when it
cannot be read."""

from __future__ import annotations

import struct
from collections.abc import Iterator
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


def pastes() -> pd.DataFrame:
    """Strength of a chemical paste (Davies and Goldsmith 1972; lme4's ``Pastes``): 60 measurements, two per
    cask, of 3 casks from each of 10 batches, the classic nested design.

    Columns: strength, batch (A-J), cask (a-c, named within its batch), sample (batch:cask). A three-level
    model: ``jaxhlm.mixed("strength || batch: || cask:, reml", pastes())``.
    """
    with resources.files(__package__).joinpath("pastes.csv").open("r") as fh:
        return pd.read_csv(fh)


def penicillin() -> pd.DataFrame:
    """Diameters of the zones of growth inhibition of Penicillin samples (Davies and Goldsmith 1972; lme4's
    ``Penicillin``): each of 6 samples assayed on each of 24 plates, 144 measurements, the classic fully
    crossed design. Columns: diameter, plate (a-x), sample (A-F). Crossed random effects:
    ``jaxhlm.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin(), reml=True)``.
    """
    with resources.files(__package__).joinpath("penicillin.csv").open("r") as fh:
        return pd.read_csv(fh)


_CSV_ERRORS = (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError)


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {path!r} not found")
    return p


def _csv_error(path: str, exc: Exception) -> DataError:
    return DataError(f"cannot read {path!r} as CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})")


#: where a DataFrame read from a Stata dataset keeps its labels (``DataFrame.attrs``): {"variables": {var: text},
#: "sets": {set name: {code: text}}, "values": {var: set name}}; Stata-syntax fits and do-files show them
LABELS = "stata_labels"


def read_dta(path: str) -> pd.DataFrame:
    """A Stata dataset (.dta) as Stata's ``use`` loads it: value-labelled variables keep their numeric codes, and
    missing values (``.`` and ``.a``–``.z``) are NaN. Its variable and value labels are kept in the frame's
    ``attrs[LABELS]``, for tables to show levels by their labels as Stata's do."""
    p = _existing(path)
    try:
        with pd.io.stata.StataReader(p) as reader:
            frame = reader.read(convert_categoricals=False)
            variables = {k: v for k, v in reader.variable_labels().items() if v}
            sets = {name: {int(c): str(t) for c, t in codes.items()} for name, codes in reader.value_labels().items()}
            names = getattr(reader, "_lbllist", None) or []  # the set each variable shows, in the variables' order
    except (ValueError, OSError, UnicodeDecodeError, struct.error) as exc:  # what pandas' reader raises on a bad file
        raise DataError(f"cannot read {path!r} as a Stata dataset ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'not a .dta file'})") from None
    values = {col: name for col, name in zip(frame.columns, names) if name and name in sets}
    frame.attrs[LABELS] = {"variables": variables, "sets": sets, "values": values}
    return frame


def value_labels(data: object) -> dict[str, dict[int, str]]:
    """The value labels a DataFrame read from a Stata dataset shows ({variable: {code: text}}; none: empty)."""
    labels = getattr(data, "attrs", {}).get(LABELS, {}) if isinstance(data, pd.DataFrame) else {}
    return {var: dict(labels["sets"][name]) for var, name in labels.get("values", {}).items()}


def read(path: str, chunksize: int | None = None, in_memory: bool = False) -> pd.DataFrame | str | Iterator[pd.DataFrame]:
    """A data file as the fit reads it: a Parquet path is passed on (the fit reads it in batches) unless
    ``in_memory``; a Stata dataset (.dta) is read whole; a CSV file whole, or lazily in chunks of ``chunksize``
    rows."""
    p = _existing(path)
    if p.suffix.lower() == ".dta":
        return read_dta(path)
    if p.suffix.lower() == ".parquet":
        if not in_memory:
            return str(p)
        from ..design import chunks  # the fit's Parquet reader, and its messages

        return pd.concat(list(chunks(str(p))[0]), ignore_index=True)
    if chunksize is None:
        return read_csv(path)
    if chunksize < 1:
        raise DataError(f"the chunk size must be a positive number of rows, got {chunksize}")
    return _csv_chunks(path, chunksize)


def _csv_chunks(path: str, chunksize: int) -> Iterator[pd.DataFrame]:
    try:
        yield from pd.read_csv(path, chunksize=chunksize)
    except _CSV_ERRORS as exc:
        raise _csv_error(path, exc) from None


def read_csv(path: str) -> pd.DataFrame:
    """A CSV file with a header row, or a :class:`DataError` saying why it cannot be read."""
    p = _existing(path)
    try:
        frame = pd.read_csv(p)
    except _CSV_ERRORS as exc:
        raise _csv_error(path, exc) from None
    if frame.shape[1] < 2:
        raise DataError(f"{path!r} does not look like a CSV table (found {frame.shape[1]} column); "
                        "expected a header row and comma-separated columns")
    return frame

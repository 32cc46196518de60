"""Data sets shipped with jaxhlm."""

from __future__ import annotations

from importlib import resources

import pandas as pd


def hsb() -> pd.DataFrame:
    """High School and Beyond (1982): 7,185 students in 160 schools (Raudenbush & Bryk).

    Columns: id (school), mathach, ses, female, minority, sector (1 = Catholic), size, sized (1: <= 500,
    2: 501-1200, 3: > 1200), meanses, pracad, disclim, himinty. Row order is the original order.
    """
    with resources.files(__package__).joinpath("hsb.csv").open("r") as fh:
        return pd.read_csv(fh)

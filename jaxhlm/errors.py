"""Errors raised for bad input. Each message names the problem and what to do about it."""

from __future__ import annotations


class JaxhlmError(ValueError):
    """Base class: every input problem jaxhlm detects is one of these, never an error from inside JAX."""


class FormulaError(JaxhlmError):
    """The model formula cannot be parsed or names something that does not exist."""


class DataError(JaxhlmError):
    """The data cannot support the model (wrong types, too few groups, singular design, ...)."""


class ComparisonError(JaxhlmError):
    """Two fitted models cannot be compared (different samples, not nested, ...)."""

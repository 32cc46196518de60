"""jaxhlm: hierarchical linear (mixed-effects) models in JAX.

High level::

    import jaxhlm
    r = jaxhlm.mixed("mathach c.ses##i.sector || id: ses, cov(unstr)", jaxhlm.datasets.hsb())   # Stata syntax
    r = jaxhlm.fit("mathach ~ ses*sector + (1 + ses | id)", jaxhlm.datasets.hsb())             # lme4 formula
    ols = jaxhlm.regress("mathach ses i.sector", jaxhlm.datasets.hsb())                         # Stata's regress
    print(r.summary())
    print(jaxhlm.run_do(open("analysis.do").read()))                                           # a do-file

Array level (jit / grad / vmap), :mod:`jaxhlm.functional`::

    from jaxhlm import functional as F
    data = F.group_data(X, Z, y, groups)                    # NumPy / JAX arrays, no pandas
    F.marginal_loglik(F.Params(beta, cov_re, sigma2), data)  # a loss for any JAX model of the fixed part
    fit = F.fit_arrays(data)                                # differentiable in X, y and weights (implicit)
"""

from . import _config  # noqa: F401  (float64 and the compilation cache, before any array is made)
from . import datasets as datasets
from . import covariance as covariance
from . import functional as functional
from .batch import bootstrap_lrtest as bootstrap_lrtest
from .batch import refit_batch as refit_batch
from .batch import simulate as simulate
from .covariance import Block as Block
from .dofile import DoFileError as DoFileError
from .dofile import run_do as run_do
from .deviance import profiled_deviance as profiled_deviance
from .errors import ComparisonError as ComparisonError
from .errors import DataError as DataError
from .errors import FormulaError as FormulaError
from .errors import JaxhlmError as JaxhlmError
from .estimate import Fit as Fit
from .estimate import fit_stats as fit_stats
from .pipeline import fit as fit
from .formula import ModelSpec as ModelSpec
from .formula import parse_formula as parse_formula
from .optimize import RESULTS as RESULTS
from .optimize import Solution as Solution
from .results import MixedResult as MixedResult
from .results import Regression as Regression
from .results import anova as anova
from .results import drop1 as drop1
from .results import estimates_table as estimates_table
from .results import lrtest as lrtest
from .results import ranova as ranova
from .stata import mixed as mixed
from .stata import regress as regress
from .stats import GroupStats as GroupStats
from .stats import group_stats as group_stats
from .stats import pad_groups as pad_groups

__version__ = "0.1.0"

__all__ = [
    "Block", "ComparisonError", "functional", "DataError", "DoFileError", "Fit", "FormulaError", "GroupStats", "JaxhlmError", "MixedResult", "Regression",
    "ModelSpec", "RESULTS", "Solution", "datasets", "fit", "fit_stats", "group_stats", "anova", "drop1", "estimates_table", "lrtest", "ranova", "pad_groups",
    "mixed", "regress", "parse_formula", "profiled_deviance", "run_do", "bootstrap_lrtest", "refit_batch", "simulate",
]

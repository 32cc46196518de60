"""Profile-likelihood confidence intervals: jaxhlm and lme4's ``confint(method = "profile")`` side by side.

Three models, every parameter's 95% interval (ML fits): sleepstudy with a correlated random slope, lme4's
Pastes with nested random intercepts, and HSB with a correlated random slope (160 schools, 7,185 students).
lme4's time is ``confint`` alone (the fit excluded), measured in one R process. jaxhlm's "first" is its first
call in this process (compiling, or loading the compiled program from the caches on disk as after any earlier
use); "warm" is a refit of the same model followed by its intervals (intervals only: a new result of the same
shape, no compilation). The ratio uses the warm time. The largest relative difference between the two sets of
endpoints is printed beside it (lme4 interpolates a spline through a grid of profile points).

Run with ``make bench`` or ``python experiments/bench_profile.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxhlm  # noqa: E402

MODELS = {  # name: (data file, formula; the same in lme4 and jaxhlm)
    "sleepstudy": ("tests/fixtures/sleepstudy.csv", "Reaction ~ Days + (Days | Subject)"),
    "pastes": ("jaxhlm/datasets/pastes.csv", "strength ~ 1 + (1 | batch/cask)"),
    "hsb": ("jaxhlm/datasets/hsb.csv", "mathach ~ ses + sector + (1 + ses | id)"),
}

R_CONFINT = r"""
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
out <- list()
for (i in seq(1, length(args), by = 2)) {
  d <- read.csv(args[i]); f <- as.formula(args[i + 1])
  m <- lmer(f, d, REML = FALSE)
  t0 <- proc.time()[["elapsed"]]
  ci <- suppressWarnings(suppressMessages(confint(m, method = "profile", oldNames = FALSE)))
  out[[length(out) + 1]] <- list(seconds = proc.time()[["elapsed"]] - t0, rows = rownames(ci),
                                 lower = unname(ci[, 1]), upper = unname(ci[, 2]))
}
cat(toJSON(list(version = as.character(packageVersion("lme4")), fits = out), digits = NA, auto_unbox = TRUE))
"""


def jaxhlm_intervals(result: jaxhlm.MixedResult) -> np.ndarray:
    """All endpoints: the SDs, correlations and σ (varcorr), then the fixed effects (conf_int)."""
    sd = result.varcorr(method="profile")[["ci_lower", "ci_upper"]].to_numpy()
    fixed = result.conf_int(method="profile").to_numpy()[: len(result.fe_params)]
    return np.vstack([sd, fixed])


def main() -> None:
    args = [str(ROOT / f) if i % 2 == 0 else f for pair in MODELS.values() for i, f in enumerate(pair)]
    try:
        r = subprocess.run(["Rscript", "-e", R_CONFINT, *args], capture_output=True, text=True, check=True)
        ref = json.loads(r.stdout)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"lme4 not available ({e}); timing jaxhlm only")
        ref = None
    print(f"{'model':<12}{'lme4 s':>9}{'first s':>9}{'warm s':>9}{'lme4/warm':>11}{'max rel diff':>14}")
    for k, (name, (path, formula)) in enumerate(MODELS.items()):
        data = pd.read_csv(ROOT / path)
        m = jaxhlm.fit(formula, data)
        t = time.perf_counter()
        ends = jaxhlm_intervals(m)
        first = time.perf_counter() - t
        jaxhlm.pipeline.clear_cache()
        again = jaxhlm.fit(formula, data)
        t = time.perf_counter()
        jaxhlm_intervals(again)
        warm = time.perf_counter() - t
        if ref is None:
            print(f"{name:<12}{'':>9}{first:9.2f}{warm:9.3f}")
            continue
        fit = ref["fits"][k]
        theirs = np.column_stack([fit["lower"], fit["upper"]])
        # lme4 orders the SDs and correlations its own way ((Intercept) first) and names them differently:
        # the variance part's endpoints are compared sorted, the fixed effects' in order (tests/test_confint.py
        # compares every interval by name).
        n_fixed = len(m.fe_params)
        ours_re, theirs_re = np.sort(ends[:-n_fixed].ravel()), np.sort(theirs[:-n_fixed].ravel())
        both = np.concatenate([ours_re, ends[-n_fixed:].ravel()]), np.concatenate([theirs_re, theirs[-n_fixed:].ravel()])
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(both[1] != 0, np.abs(both[0] - both[1]) / np.abs(both[1]), np.abs(both[0]))
        print(f"{name:<12}{fit['seconds']:9.2f}{first:9.2f}{warm:9.3f}{fit['seconds'] / warm:10.0f}x"
              f"{np.nanmax(rel):14.1e}")
    if ref is not None:
        print(f"lme4 {ref['version']}")


if __name__ == "__main__":
    main()

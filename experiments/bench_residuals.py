"""Side-by-side benchmark of a residual variance per stratum (Stata's ``residuals(independent, by())``): jaxhlm
vs nlme's ``lme(..., weights = varIdent(form = ~ 1 | var))``, in one run on one machine.

For each model: the log likelihood reached and the warm wall time of one complete fit from a formula and a
DataFrame (median of repeats after a first untimed fit; jaxhlm with its prepared-design cache cleared, so the
design is rebuilt each time). nlme runs in one Rscript process and times itself the same way, with its default
optimiser and with ``opt = "optim"``. Ratios are nlme time / jaxhlm time (higher = jaxhlm faster).

Run: ``python experiments/bench_residuals.py`` (in ``make bench``). Options: ``--repeats N``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxhlm  # noqa: E402
from jaxhlm.pipeline import clear_cache  # noqa: E402

#: name: (fixed part, random part, the stratum variable, REML)
MODELS = {
    "intercept by sector, ML": ("mathach ~ ses + sector", "1", "sector", False),
    "slope by female, ML": ("mathach ~ ses * sector", "1 + ses", "female", False),
    "slope by female, REML": ("mathach ~ ses * sector", "1 + ses", "female", True),
}

R_SCRIPT = r"""
suppressMessages(library(nlme))
d <- read.csv("{csv}")
reps <- {repeats}
fit <- function(fixed, random, by, method, opt) lme(as.formula(fixed), random = as.formula(random), data = d,
  weights = varIdent(form = as.formula(paste("~ 1 |", by))), method = method,
  control = lmeControl(opt = opt, maxIter = 200, msMaxIter = 500))
models <- list({models})
for (nm in names(models)) for (opt in c("nlminb", "optim")) {{
  a <- models[[nm]]
  m <- tryCatch(fit(a[1], a[2], a[3], a[4], opt), error = function(e) NULL)
  if (is.null(m)) {{ cat(sprintf("%s|%s|NA|NA\n", nm, opt)); next }}
  ts <- numeric(reps)
  for (i in seq_len(reps)) ts[i] <- system.time(m <- fit(a[1], a[2], a[3], a[4], opt))[["elapsed"]]
  cat(sprintf("%s|%s|%.9f|%.6f\n", nm, opt, as.numeric(logLik(m)), median(ts)))
}}
"""


def bench_jaxhlm(df, repeats: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name, (fixed, random, by, reml) in MODELS.items():
        def fit(fixed=fixed, random=random, by=by, reml=reml):
            clear_cache()
            return jaxhlm.fit(f"{fixed} + ({random} | id)", df, reml=reml, residuals_by=by)

        r = fit()  # compilation
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = fit()
            times.append(time.perf_counter() - t)
        out[name] = (r.llf, statistics.median(times))
    return out


def bench_nlme(df, repeats: int) -> dict[tuple[str, str], tuple[float, float]]:
    if shutil.which("Rscript") is None:
        raise RuntimeError("Rscript not found")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "hsb.csv"
        df.to_csv(csv, index=False)
        models = ", ".join(f'"{k}" = c("{f}", "~ {r} | id", "{b}", "{"REML" if reml else "ML"}")'
                           for k, (f, r, b, reml) in MODELS.items())
        script = Path(tmp) / "bench.R"
        script.write_text(R_SCRIPT.format(csv=csv, repeats=repeats, models=models))
        out = subprocess.run(["Rscript", str(script)], capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        name, opt, ll, t = line.split("|")
        res[name, opt] = (float("nan"), float("nan")) if ll == "NA" else (float(ll), float(t))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    df = jaxhlm.datasets.hsb()
    ours = bench_jaxhlm(df, args.repeats)
    try:
        theirs = bench_nlme(df, args.repeats)
    except Exception as exc:  # without R the comparison is not possible; say so
        print(f"[nlme skipped: {type(exc).__name__}: {exc}]")
        theirs = {}
    print(f"\nResidual variance per stratum, HSB (n = 7,185, 160 schools); warm fit, median of {args.repeats}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'model':<24}{'jaxhlm ms':>10}{'jaxhlm LL':>16}   {'nlme opt':<8}{'nlme ms':>9}{'ratio':>8}{'LL gap':>11}")
    for name, (ll, t) in ours.items():
        for opt in ("nlminb", "optim"):
            ll2, t2 = theirs.get((name, opt), (float("nan"), float("nan")))
            print(f"{name:<24}{t * 1e3:>10.1f}{ll:>16.6f}   {opt:<8}{t2 * 1e3:>9.1f}{t2 / t:>7.1f}x{ll - ll2:>+11.2e}")
    print("\nratio: nlme time / jaxhlm time; LL gap: jaxhlm LL - nlme LL (NaN: nlme failed)")


if __name__ == "__main__":
    main()

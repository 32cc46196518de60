"""Side-by-side benchmark of residual structures, jaxhlm vs nlme's ``lme`` (``gls`` without random effects) in one
run on one machine: a residual variance per stratum (Stata's ``residuals(independent, by())``; nlme's
``weights = varIdent(form = ~ 1 | var)``) on HSB, and residuals correlated within subjects on
tests/fixtures/ar1.csv (80 subjects, 643 rows) and on a larger panel simulated here (seeded; 2,000 subjects at
times 0..9, a fifth missing, 16,000 rows): AR(1) (Stata's ``residuals(ar 1, t())``; nlme's ``corAR1``), AR(2)
and MA(1) (``residuals(ar 2, t())``, ``residuals(ma 1, t())``; nlme's ``corARMA``), exchangeable (``corCompSymm``) beside a random slope, exponential over a real time (``corExp``) beside a random
intercept, and unstructured over the visits 0..4 with no random effects (Stata's ``|| id:, noconstant
residuals(unstructured, t())``; nlme's ``gls`` with ``corSymm`` and ``varIdent``).

For each model: the log likelihood reached and the warm wall time of one complete fit from a formula and a
DataFrame (median of repeats after a first untimed fit; jaxhlm with its prepared-design cache cleared, so the
design is rebuilt each time). nlme runs in one Rscript process and times itself the same way, with its default
optimiser and with ``opt = "optim"``. Ratios are nlme time / jaxhlm time (higher = jaxhlm faster).

Then the parametric bootstrap LR test of the random time slope with AR(1) residuals in both models
(tests/fixtures/ar1.csv): jaxhlm's ``bootstrap_lrtest`` against an R loop that draws each replicate from the null
fit (random intercepts and the AR(1) recursion) and refits both models with nlme, per replicate (nlme has no
batched refit for correlated residuals).

Run: ``python experiments/bench_residuals.py`` (in ``make bench``). Options: ``--repeats N``, ``--B N`` (the
bootstrap's replicates, 500 by default; nlme runs a fifth of them).
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import jaxhlm  # noqa: E402
from jaxhlm.pipeline import clear_cache  # noqa: E402

#: name: (data set, fixed part, random part, jaxhlm's residual option, nlme's residual argument, REML)
MODELS = {
    "intercept by sector, ML": ("hsb", "mathach ~ ses + sector", "1", {"residuals_by": "sector"},
                                "weights = varIdent(form = ~ 1 | sector)", False),
    "slope by female, ML": ("hsb", "mathach ~ ses * sector", "1 + ses", {"residuals_by": "female"},
                            "weights = varIdent(form = ~ 1 | female)", False),
    "slope by female, REML": ("hsb", "mathach ~ ses * sector", "1 + ses", {"residuals_by": "female"},
                              "weights = varIdent(form = ~ 1 | female)", True),
    "AR(1) intercept, ML": ("ar1", "y ~ time + x", "1", {"residuals": "ar1", "time": "time"},
                            "correlation = corAR1(form = ~ time | id)", False),
    "AR(1) slope, REML": ("ar1", "y ~ time + x", "1 + time", {"residuals": "ar1", "time": "time"},
                          "correlation = corAR1(form = ~ time | id)", True),
    "AR(1) slope, REML, 16k": ("panel", "y ~ time + x", "1 + time", {"residuals": "ar1", "time": "time"},
                               "correlation = corAR1(form = ~ time | id)", True),
    "AR(2) intercept, ML": ("ar1", "y ~ time + x", "1", {"residuals": "ar 2", "time": "time"},
                            "correlation = corARMA(form = ~ time | id, p = 2)", False),
    "AR(2) slope, REML, 16k": ("panel", "y ~ time + x", "1 + time", {"residuals": "ar 2", "time": "time"},
                               "correlation = corARMA(form = ~ time | id, p = 2)", True),
    "MA(1) intercept, ML": ("ar1", "y ~ time + x", "1", {"residuals": "ma 1", "time": "time"},
                            "correlation = corARMA(form = ~ time | id, q = 1)", False),
    "exchangeable, slope, ML": ("ar1", "y ~ time + x", "0 + time", {"residuals": "exchangeable"},
                                "correlation = corCompSymm(form = ~ 1 | id)", False),
    "exponential, ML": ("ar1", "y ~ time + x", "1", {"residuals": "exponential", "time": "rt"},
                        "correlation = corExp(form = ~ rt | id)", False),
    # no random effects (nlme's gls): the repeated-measures model with an unstructured covariance over visits
    "unstructured, REML": ("ar1_early", "y ~ time + x", "0", {"residuals": "unstructured", "time": "time"},
                           "correlation = corSymm(form = ~ pos | id), weights = varIdent(form = ~ 1 | time)", True),
    "unstructured, REML, 8k": ("panel_early", "y ~ time + x", "0", {"residuals": "unstructured", "time": "time"},
                               "correlation = corSymm(form = ~ pos | id), weights = varIdent(form = ~ 1 | time)", True),
}


def panel(n: int = 2000, seed: int = 1) -> pd.DataFrame:
    """Subjects at times 0..9 (a fifth of the times missing): a random intercept and slope, AR(1) residuals."""
    rng = np.random.default_rng(seed)
    t = np.tile(np.arange(10), n)
    ids = np.repeat(np.arange(n), 10)
    e = np.zeros(n * 10)
    shocks = rng.normal(0, 1.5 * np.sqrt(0.75), n * 10)
    for k in range(n * 10):
        e[k] = shocks[k] + (0.5 * e[k - 1] if t[k] else rng.normal(0, 1.5) - shocks[k])
    u0, u1, x = rng.normal(0, 2, n)[ids], rng.normal(0, 0.4, n)[ids], rng.normal(size=n * 10)
    d = pd.DataFrame({"id": ids, "time": t, "x": x, "y": 10 + 0.5 * t + x + u0 + u1 * t + e})
    return d[rng.random(n * 10) > 0.2].reset_index(drop=True)


def _timed(d: pd.DataFrame, last: int | None = None) -> pd.DataFrame:
    """``d`` with the real time rt = √(time + 1) and nlme's visit position pos = time + 1 (rows up to ``last``)."""
    d = d if last is None else d[d["time"] <= last]
    return d.assign(rt=np.sqrt(d["time"] + 1), pos=d["time"] + 1)


def _ar1() -> pd.DataFrame:
    return pd.read_csv(ROOT / "tests" / "fixtures" / "ar1.csv")


DATA = {"hsb": jaxhlm.datasets.hsb, "ar1": lambda: _timed(_ar1()), "ar1_early": lambda: _timed(_ar1(), 4),
        "panel": panel, "panel_early": lambda: _timed(panel(), 4)}

R_SCRIPT = r"""
suppressMessages(library(nlme))
reps <- {repeats}
fit <- function(d, fixed, random, residual, method, opt) eval(parse(text = if (random == "0") paste0(
  "gls(", fixed, ", data = d, method = method, ", residual,
  ", control = glsControl(opt = opt, maxIter = 200, msMaxIter = 500))") else paste0(
  "lme(", fixed, ", random = ~ ", random, " | id, data = d, method = method, ", residual,
  ", control = lmeControl(opt = opt, maxIter = 200, msMaxIter = 500))")))
models <- list({models})
for (nm in names(models)) for (opt in c("nlminb", "optim")) {{
  a <- models[[nm]]
  d <- read.csv(a[1])
  m <- tryCatch(fit(d, a[2], a[3], a[4], a[5], opt), error = function(e) NULL)
  if (is.null(m)) {{ cat(sprintf("%s|%s|NA|NA\n", nm, opt)); next }}
  ts <- numeric(reps)
  for (i in seq_len(reps)) ts[i] <- system.time(m <- fit(d, a[2], a[3], a[4], a[5], opt))[["elapsed"]]
  cat(sprintf("%s|%s|%.9f|%.6f\n", nm, opt, as.numeric(logLik(m)), median(ts)))
}}
"""


def bench_jaxhlm(data: dict[str, pd.DataFrame], repeats: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name, (which, fixed, random, option, _, reml) in MODELS.items():
        def fit(df=data[which], fixed=fixed, random=random, option=option, reml=reml):
            clear_cache()
            return jaxhlm.fit(f"{fixed} + ({random} | id)", df, reml=reml, **option)

        r = fit()  # compilation
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = fit()
            times.append(time.perf_counter() - t)
        out[name] = (r.llf, statistics.median(times))
    return out


def run_r(data: dict[str, pd.DataFrame], script: Callable[[Path], str]) -> str:
    """The output of the R code ``script(directory)``, run where each of ``data`` is ``directory/<name>.csv``."""
    if shutil.which("Rscript") is None:
        raise RuntimeError("Rscript not found")
    with tempfile.TemporaryDirectory() as tmp:
        for which, df in data.items():
            df.to_csv(Path(tmp) / f"{which}.csv", index=False)
        path = Path(tmp) / "bench.R"
        path.write_text(script(Path(tmp)))
        return subprocess.run(["Rscript", str(path)], capture_output=True, text=True, check=True).stdout


def bench_nlme(data: dict[str, pd.DataFrame], repeats: int) -> dict[tuple[str, str], tuple[float, float]]:
    out = run_r(data, lambda tmp: R_SCRIPT.format(repeats=repeats, models=", ".join(
        f'"{k}" = c("{tmp / (w + ".csv")}", "{f}", "{r}", "{res}", "{"REML" if reml else "ML"}")'
        for k, (w, f, r, _, res, reml) in MODELS.items())))
    res = {}
    for line in out.splitlines():
        name, opt, ll, t = line.split("|")
        res[name, opt] = (float("nan"), float("nan")) if ll == "NA" else (float(ll), float(t))
    return res


BOOT_R = r"""
suppressMessages(library(nlme))
d <- read.csv("{csv}")
d <- d[order(d$id, d$time), ]
ctl <- lmeControl(maxIter = 200, msMaxIter = 500)
ar <- corAR1(form = ~ time | id)
small <- lme(y ~ time + x, random = ~ 1 | id, correlation = ar, data = d, method = "ML", control = ctl)
big <- lme(y ~ time + x, random = ~ time | id, correlation = ar, data = d, method = "ML", control = ctl)
rho <- coef(small$modelStruct$corStruct, unconstrained = FALSE); s <- small$sigma
tau <- sqrt(getVarCov(small)[1, 1]); mu <- fitted(small, level = 0)
set.seed(1)
B <- {B}; lr <- rep(NA_real_, B)
t <- system.time(for (b in seq_len(B)) {{
  e <- numeric(nrow(d)); u <- rnorm(max(d$id), 0, tau)
  for (i in seq_len(nrow(d))) {{
    first <- i == 1 || d$id[i] != d$id[i - 1]
    a <- if (first) 0 else rho^(d$time[i] - d$time[i - 1])
    e[i] <- (if (first) 0 else a * e[i - 1]) + sqrt(1 - a^2) * s * rnorm(1)
  }}
  d$ysim <- mu + u[d$id] + e
  f0 <- tryCatch(update(small, ysim ~ ., data = d), error = function(e) NULL)
  f1 <- tryCatch(update(big, ysim ~ ., data = d), error = function(e) NULL)
  if (!is.null(f0) && !is.null(f1)) lr[b] <- 2 * (logLik(f1) - logLik(f0))
}})[["elapsed"]]
cat(sprintf("%.6f|%d|%.6f\n", t / B, sum(is.na(lr)), mean(lr < 0, na.rm = TRUE)))
"""


def bench_bootstrap(B: int) -> None:
    """The AR(1) bootstrap LR test side by side: seconds per replicate, and failed or negative replicates."""
    d = DATA["ar1"]()
    small = jaxhlm.fit("y ~ time + x + (1 | id)", d, residuals="ar1", time="time")
    big = jaxhlm.fit("y ~ time + x + (1 + time | id)", d, residuals="ar1", time="time")
    jaxhlm.bootstrap_lrtest(small, big, B=B, seed=0, progress=False)  # compilation
    t = time.perf_counter()
    ours = jaxhlm.bootstrap_lrtest(small, big, B=B, seed=1, progress=False)
    per = (time.perf_counter() - t) / B
    line = (f"jaxhlm: {per * 1e3:.2f} ms per replicate (B = {B}), {ours.failed} failed, "
            f"{int(np.sum(ours.replicates < 0))} negative; bootstrap p = {ours.pvalue:.4f}")
    try:
        out = run_r({"ar1": d}, lambda tmp: BOOT_R.format(csv=tmp / "ar1.csv", B=max(B // 5, 10)))
        per_r, failed, negative = out.strip().split("|")
        line += (f"\nnlme loop: {float(per_r) * 1e3:.1f} ms per replicate (B = {max(B // 5, 10)}), {failed} failed, "
                 f"{float(negative):.1%} negative; ratio {float(per_r) / per:.1f}x")
    except Exception as exc:  # without R the comparison is not possible; say so
        line += f"\n[nlme skipped: {type(exc).__name__}: {exc}]"
    print("\nBootstrap LR test of the random time slope, AR(1) residuals in both models (643 rows)\n" + line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--B", type=int, default=500)
    args = ap.parse_args()
    data = {k: load() for k, load in DATA.items()}
    ours = bench_jaxhlm(data, args.repeats)
    try:
        theirs = bench_nlme(data, args.repeats)
    except Exception as exc:  # without R the comparison is not possible; say so
        print(f"[nlme skipped: {type(exc).__name__}: {exc}]")
        theirs = {}
    print(f"\nResidual structures: by stratum on HSB (n = 7,185, 160 schools), correlated within subjects on panels; "
          f"warm fit, median of {args.repeats}; {os.cpu_count()} CPUs")
    print(f"{'model':<26}{'jaxhlm ms':>10}{'jaxhlm LL':>16}   {'nlme opt':<8}{'nlme ms':>9}{'ratio':>8}{'LL gap':>11}")
    for name, (ll, t) in ours.items():
        for opt in ("nlminb", "optim"):
            ll2, t2 = theirs.get((name, opt), (float("nan"), float("nan")))
            print(f"{name:<26}{t * 1e3:>10.1f}{ll:>16.6f}   {opt:<8}{t2 * 1e3:>9.1f}{t2 / t:>7.1f}x{ll - ll2:>+11.2e}")
    print("\nratio: nlme time / jaxhlm time; LL gap: jaxhlm LL - nlme LL (NaN: nlme failed)")
    bench_bootstrap(args.B)


if __name__ == "__main__":
    main()

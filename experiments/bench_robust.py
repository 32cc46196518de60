"""Side-by-side benchmark of cluster-robust (sandwich) standard errors: jaxhlm's ``vce="robust"`` against an ML fit
and clubSandwich's ``vcovCR(type = "CR1")`` in R (lme4's ``lmer``; nlme's ``lme`` for AR(1) residuals), in one run
on one machine.

Models: HSB's random slope by school (7,185 rows, 160 clusters), HSB's random intercept clustered by groups of ten
schools (16 clusters), AR(1) residuals on tests/fixtures/ar1.csv (643 rows, 80 subjects), and a synthetic random
intercept and slope model (seeded; 2,000 schools of 50 students, 100,000 rows).

For each: the warm wall time of the whole robust fit from a formula and a DataFrame (median of repeats after a first
untimed fit; jaxhlm with its prepared-design cache cleared), and of the sandwich alone (jaxhlm: the robust fit less
the model-based one; R: ``vcovCR`` on the fitted model). R runs in one Rscript process and times itself the same way.
Ratios are R time / jaxhlm time (higher = jaxhlm faster); the largest relative difference of the robust standard
errors is printed beside them.

Sampling weights (Stata's pweights), second table: jaxhlm's pseudo-likelihood fit with weights at every level
against what R does without a survey-weights package, for whole-number weights: lmer on the data with each
observation, class and school repeated as often as its weight says, and vcovCR clustered by the original schools,
which gives the same estimates and robust standard errors (tests/test_pweights.py). HSB's random slope with
weights at both levels (7,185 rows; 19,222 repeated), and tests/fixtures/three_level.csv with weights at all three
(916 rows; 2,409 repeated); the weights are the tests'.

Run: ``python experiments/bench_robust.py`` (in ``make bench``). Options: ``--repeats N``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import jaxhlm  # noqa: E402
from bench_hsb import timed  # noqa: E402  (the same timing protocol: one untimed call, then the median)
from bench_residuals import run_r  # noqa: E402
from jaxhlm.pipeline import clear_cache  # noqa: E402


def synthetic(schools: int = 2000, size: int = 50, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(schools), size)
    x = rng.normal(size=schools * size)
    u0, u1 = rng.normal(0, 1.0, schools)[g], rng.normal(0, 0.3, schools)[g]
    # heavy-tailed residuals: the case for a sandwich
    return pd.DataFrame({"g": g, "x": x, "y": 1 + 0.5 * x + u0 + u1 * x + rng.standard_t(4, schools * size)})


def _hsb() -> pd.DataFrame:
    hsb = jaxhlm.datasets.hsb()
    return hsb.assign(cl=(hsb["id"].rank(method="dense").astype(int) - 1) // 10)


DATA = {"hsb": _hsb, "ar1": lambda: pd.read_csv(ROOT / "tests" / "fixtures" / "ar1.csv"), "synthetic": synthetic}
#: name: (data, lme4-style formula, cluster column (None: the groups), jaxhlm's options, R's fit)
MODELS = {
    "HSB slope, 160 schools": ("hsb", "mathach ~ ses * sector + (1 + ses | id)", None, {},
                               "lmer(mathach ~ ses * sector + (1 + ses | id), data = d, REML = FALSE)"),
    "HSB intercept, 16 clusters": ("hsb", "mathach ~ ses + sector + (1 | id)", "cl", {},
                                   "lmer(mathach ~ ses + sector + (1 | id), data = d, REML = FALSE)"),
    "AR(1) intercept, 80 subjects": ("ar1", "y ~ time + x + (1 | id)", None, {"residuals": "ar1", "time": "time"},
                                     "lme(y ~ time + x, random = ~ 1 | id, correlation = corAR1(form = ~ time | id), "
                                     "data = d, method = 'ML')"),
    "slope, 2,000 schools, 100k rows": ("synthetic", "y ~ x + (1 + x | g)", None, {},
                                        "lmer(y ~ x + (1 + x | g), data = d, REML = FALSE)"),
}

R_SCRIPT = r"""
suppressMessages({{library(lme4); library(nlme); library(clubSandwich)}})
reps <- {repeats}
models <- list({models})
for (nm in names(models)) {{
  a <- models[[nm]]
  d <- read.csv(a[1])
  whole <- function() {{
    m <- eval(parse(text = a[2]))
    if (a[3] == "") vcovCR(m, type = "CR1") else vcovCR(m, cluster = d[[a[3]]], type = "CR1")
  }}
  V <- whole()
  ts <- numeric(reps)
  for (i in seq_len(reps)) ts[i] <- system.time(V <- whole())[["elapsed"]]
  m <- eval(parse(text = a[2]))
  tv <- numeric(reps)
  for (i in seq_len(reps)) tv[i] <- system.time(
    if (a[3] == "") vcovCR(m, type = "CR1") else vcovCR(m, cluster = d[[a[3]]], type = "CR1"))[["elapsed"]]
  cat(sprintf("%s|%.6f|%.6f|%s\n", nm, median(ts), median(tv), paste(sqrt(diag(as.matrix(V))), collapse = ",")))
}}
"""


def repeated(df: pd.DataFrame, group: str, cluster: str | None = None) -> pd.DataFrame:
    """Each row repeated w1 times, each cluster (within its group) w2 times and each group w3 times (or, without
    clusters, w2 times), copies under new labels; ``orig`` keeps each row's original group."""
    out = df.loc[df.index.repeat(df["w1"].astype(int))].assign(orig=lambda d: d[group])
    for level, w in ([(cluster, "w2")] if cluster else []) + [(group, "w3" if cluster else "w2")]:
        out = pd.concat([out[out[w] > k].assign(**{level: lambda d, k=k: d[level].astype(str) + f"_{k}"})
                         for k in range(int(out[w].max()))], ignore_index=True)
    return out


def _weighted_three() -> pd.DataFrame:
    t = pd.read_csv(ROOT / "tests" / "fixtures" / "three_level.csv")
    return t.assign(w1=np.where(np.arange(len(t)) % 4 == 0, 2.0, 1.0), w2=1.0 + t["class"] % 2,
                    w3=1.0 + (t["school"] % 3 == 0))


def _weighted_hsb() -> pd.DataFrame:
    hsb = jaxhlm.datasets.hsb()
    rank = hsb["id"].rank(method="dense").astype(int) - 1
    return hsb.assign(w1=np.where(np.arange(len(hsb)) % 3 == 0, 2.0, 1.0), w2=1.0 + rank % 3)


#: name: (weighted data, jaxhlm's Stata command, the repeated data, R's fit of it)
SAMPLED = {
    "HSB slope, weights at 2 levels": (
        _weighted_hsb, "mathach ses sector [pw=w1] || id: ses, pweight(w2) cov(unstructured)",
        lambda: repeated(_weighted_hsb(), "id"),
        "lmer(mathach ~ ses + sector + (1 + ses | id), data = d, REML = FALSE)"),
    "three levels, weights at 3 levels": (
        _weighted_three, "score ses [pw=w1] || school:, pweight(w3) || class:, pweight(w2)",
        lambda: repeated(_weighted_three(), "school", "class"),
        "lmer(score ~ ses + (1 | school) + (1 | school:class), data = d, REML = FALSE)"),
}

R_SAMPLED = r"""
suppressMessages({{library(lme4); library(clubSandwich)}})
reps <- {repeats}
models <- list({models})
for (nm in names(models)) {{
  a <- models[[nm]]
  d <- read.csv(a[1])
  whole <- function() vcovCR(eval(parse(text = a[2])), cluster = d$orig, type = "CR1")
  V <- whole()
  ts <- numeric(reps)
  for (i in seq_len(reps)) ts[i] <- system.time(V <- whole())[["elapsed"]]
  cat(sprintf("%s|%.6f|%s\n", nm, median(ts), paste(sqrt(diag(as.matrix(V))), collapse = ",")))
}}
"""


def bench_sampled(repeats: int) -> None:
    """The second table: fits with sampling weights against R's fits of the repeated data."""
    ours = {}
    for name, (weighted, command, _, _) in SAMPLED.items():
        df = weighted()
        ours[name] = timed(lambda df=df, command=command: (clear_cache(), jaxhlm.mixed(command, df))[1], repeats)
    keys = {name: f"d{k}" for k, name in enumerate(SAMPLED)}
    try:
        out = run_r({keys[name]: make() for name, (_, _, make, _) in SAMPLED.items()},
                    lambda tmp: R_SAMPLED.format(repeats=repeats, models=", ".join(
                        f'"{name}" = c("{tmp / (keys[name] + ".csv")}", "{r}")'
                        for name, (_, _, _, r) in SAMPLED.items())))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"R (lme4, clubSandwich) not available: {exc}")
        out = ""
    theirs = {name: (float(t), np.array([float(v) for v in se.split(",")]))
              for name, t, se in (line.split("|") for line in out.splitlines())}
    print(f"\n{'sampling weights':34} {'jaxhlm fit':>11} {'R, repeated':>11} {'ratio':>6}   max rel. diff of robust SEs")
    for name, (r, t) in ours.items():
        if name not in theirs:
            print(f"{name:34} {t * 1e3:9.1f}ms")
            continue
        r_time, se = theirs[name]
        # R's intercept comes first
        mine = r.bse_fe.to_numpy()
        mine = np.r_[mine[-1], mine[:-1]]
        print(f"{name:34} {t * 1e3:9.1f}ms {r_time * 1e3:9.0f}ms {r_time / t:5.1f}x   "
              f"{np.max(np.abs(mine - se) / se):.1e}")


def bench_jaxhlm(data: dict[str, pd.DataFrame], repeats: int) -> dict[str, tuple[jaxhlm.MixedResult, float, float]]:
    out = {}
    for name, (which, formula, cluster, options, _) in MODELS.items():
        def fit(vce: str, df=data[which], formula=formula, cluster=cluster, options=options):
            clear_cache()
            return jaxhlm.fit(formula, df, vce=vce, cluster=cluster if vce == "robust" else None, **options)

        robust, t_robust = timed(lambda: fit("robust"), repeats)
        _, t_oim = timed(lambda: fit("oim"), repeats)
        out[name] = (robust, t_robust, t_robust - t_oim)
    return out


def bench_r(data: dict[str, pd.DataFrame], repeats: int) -> dict[str, tuple[float, float, np.ndarray]]:
    out = run_r(data, lambda tmp: R_SCRIPT.format(repeats=repeats, models=", ".join(
        f'"{k}" = c("{tmp / (w + ".csv")}", "{r}", "{c or ""}")' for k, (w, _, c, _, r) in MODELS.items())))
    res = {}
    for line in out.splitlines():
        name, whole, sandwich, se = line.split("|")
        res[name] = (float(whole), float(sandwich), np.array([float(v) for v in se.split(",")]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    data = {k: f() for k, f in DATA.items()}
    ours = bench_jaxhlm(data, args.repeats)
    try:
        theirs = bench_r(data, args.repeats)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"R (lme4, nlme, clubSandwich) not available: {exc}")
        theirs = {}
    print(f"{'model':34} {'jaxhlm fit':>11} {'R fit':>9} {'ratio':>6}   {'jaxhlm sandwich':>15} {'vcovCR':>8} "
          f"{'ratio':>6}   max rel. diff of robust SEs")
    for name, (r, t_fit, t_sandwich) in ours.items():
        if name not in theirs:
            print(f"{name:34} {t_fit * 1e3:9.1f}ms")
            continue
        r_fit, r_sandwich, se = theirs[name]
        diff = np.max(np.abs(r.bse_fe.to_numpy() - se) / se)
        print(f"{name:34} {t_fit * 1e3:9.1f}ms {r_fit * 1e3:7.0f}ms {r_fit / t_fit:5.1f}x   "
              f"{max(t_sandwich, 0.0) * 1e3:13.1f}ms {r_sandwich * 1e3:6.0f}ms {r_sandwich / max(t_sandwich, 1e-4):5.1f}x"
              f"   {diff:.1e}")
    bench_sampled(args.repeats)


if __name__ == "__main__":
    main()

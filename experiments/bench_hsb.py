"""Side-by-side benchmark on the six models of the reference log: jaxhlm vs lme4, statsmodels, mixedlm and
mixedlm-rs, in one run on one machine.

For each tool and model: the log likelihood reached and the warm wall time of one complete fit from a
formula and a DataFrame (median of repeats, after a first untimed fit). lme4 runs in one Rscript process and
times itself with the same protocol. Ratios are peer time / jaxhlm time (higher = jaxhlm faster). Also
timed: the first fit in a fresh Python process, with JAX's persistent compilation cache warm and cold.

Run: ``make bench`` (installs the Python peers; lme4 via apt when root). Options: ``--repeats N``,
``--skip statsmodels,...``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxhlm  # noqa: E402

FIXED = {
    "M1": ("ses*sector + ses*C(sized) + female*sector + female*C(sized)", ["ses", "female"]),
    "M2": ("ses*sector + ses*C(sized) + female*sector + female*C(sized)", ["ses"]),
    "M3": ("ses*sector + ses*C(sized) + female*sector + female*C(sized)", []),
    "M4": ("ses*sector + ses*C(sized) + female*sector + female*C(sized)", ["female"]),
    "M5": ("ses*sector + female*C(sized)", []),
    "M6": ("ses*sector + female*sized_1", []),
}


def lme4_formula(fixed: str, slopes: list[str]) -> str:
    return f"mathach ~ {fixed} + ({' + '.join(['1', *slopes])} | id)"


def timed(fn, repeats: int) -> tuple[object, float]:
    out = fn()  # warm-up: compilation, caches, imports
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def bench_jaxhlm(df, repeats):
    res = {}
    for name, (fixed, slopes) in FIXED.items():
        formula = lme4_formula(fixed, slopes)
        r, t = timed(lambda formula=formula: jaxhlm.fit(formula, df), repeats)
        res[name] = (r.llf, t)
    return res


def bench_jaxhlm_uncached(df, repeats):
    """jaxhlm with its prepared-design cache cleared before every fit: formula and design rebuilt each time."""
    from jaxhlm.pipeline import clear_cache

    def fit(formula):
        clear_cache()
        return jaxhlm.fit(formula, df)

    res = {}
    for name, (fixed, slopes) in FIXED.items():
        formula = lme4_formula(fixed, slopes)
        r, t = timed(lambda formula=formula: fit(formula), repeats)
        res[name] = (r.llf, t)
    return res


def bench_statsmodels(df, repeats):
    import statsmodels.formula.api as smf

    res = {}
    for name, (fixed, slopes) in FIXED.items():
        re = "~" + "+".join(slopes) if slopes else None
        fn = lambda: smf.mixedlm(f"mathach ~ {fixed}", df, groups=df["id"], re_formula=re).fit(reml=False)  # noqa
        r, t = timed(fn, max(1, repeats // 4))
        res[name] = (float(r.llf), t)
    return res


def bench_mixedlm_rs(df, repeats):
    import mixedlm_rs

    res = {}
    for name, (fixed, slopes) in FIXED.items():
        kw = {"re_formula": "~" + "+".join(slopes)} if slopes else {}
        fn = lambda: mixedlm_rs.MixedLM.from_formula(f"mathach ~ {fixed}", groups="id", data=df, **kw).fit(reml=False)  # noqa
        r, t = timed(fn, repeats)
        res[name] = (float(r.llf), t)
    return res


def bench_mixedlm(df, repeats):
    import mixedlm

    d = df.assign(sized=df["sized"].astype(str))
    res = {}
    for name, (fixed, slopes) in FIXED.items():
        f = lme4_formula(fixed.replace("C(sized)", "sized"), slopes)
        r, t = timed(lambda f=f: mixedlm.lmer(f, d, REML=False), max(1, repeats // 2))
        res[name] = (float(r.logLik().value), t)
    return res


R_SCRIPT = r"""
suppressMessages(library(lme4))
d <- read.csv("{csv}")
d$sized <- factor(d$sized)
reps <- {repeats}
models <- list({models})
for (nm in names(models)) {{
  f <- as.formula(models[[nm]])
  m <- suppressMessages(suppressWarnings(lmer(f, d, REML = FALSE)))
  ts <- numeric(reps)
  for (i in seq_len(reps)) ts[i] <- system.time(m <- suppressMessages(suppressWarnings(lmer(f, d, REML = FALSE))))[["elapsed"]]
  cat(sprintf("%s %.9f %.6f\n", nm, as.numeric(logLik(m)), median(ts)))
}}
"""


def bench_lme4(df, repeats):
    if shutil.which("Rscript") is None:
        raise RuntimeError("Rscript not found")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "hsb.csv"
        df.to_csv(csv, index=False)
        models = ", ".join(f'{k} = "{lme4_formula(f.replace("C(sized)", "sized"), s)}"' for k, (f, s) in FIXED.items())
        script = Path(tmp) / "bench.R"
        script.write_text(R_SCRIPT.format(csv=csv, repeats=max(3, repeats // 2), models=models))
        out = subprocess.run(["Rscript", str(script)], capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        name, ll, t = line.split()
        res[name] = (float(ll), float(t))
    return res


FRESH = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import jaxhlm
    t1 = time.perf_counter()
    df = jaxhlm.datasets.hsb()
    t2 = time.perf_counter()
    r = jaxhlm.fit("mathach ~ ses*sector + ses*C(sized) + female*sector + female*C(sized) + (1 + ses | id)", df)
    t3 = time.perf_counter()
    print(t1 - t0, t3 - t2)
""")


def fresh_process(cache_dir: str | None) -> tuple[float, float]:
    env = dict(os.environ)
    if cache_dir is None:
        env["JAXHLM_NO_CACHE"] = "1"
    else:
        env["JAXHLM_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True, env=env,
                         cwd=ROOT).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma-separated peers to skip")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    df = jaxhlm.datasets.hsb()
    df["sized_1"] = (df["sized"] == 1).astype(int)

    peers = {"jaxhlm-nocache": bench_jaxhlm_uncached, "lme4": bench_lme4, "mixedlm-rs": bench_mixedlm_rs, "mixedlm": bench_mixedlm,
             "statsmodels": bench_statsmodels}
    results = {"jaxhlm": bench_jaxhlm(df, args.repeats)}
    for name, fn in peers.items():
        if name in args.skip.split(","):
            continue
        try:
            results[name] = fn(df, args.repeats)
        except Exception as exc:  # a missing peer must not stop the comparison with the others
            print(f"[{name} skipped: {type(exc).__name__}: {exc}]")

    tools = list(results)
    print(f"\nWarm fit time (ms, median) and log likelihood, HSB data (n = 7,185, 160 schools); {os.cpu_count()} CPUs")
    print(f"{'model':<6}" + "".join(f"{t:>24}" for t in tools))
    for m in FIXED:
        cells = "".join(f"{results[t][m][1] * 1e3:>9.1f} {results[t][m][0]:>14.6f}" for t in tools)
        print(f"{m:<6}{cells}")
    print("\nRatios: peer time / jaxhlm time (higher = jaxhlm faster); LL gap = jaxhlm LL - peer LL")
    print(f"{'model':<6}" + "".join(f"{t:>24}" for t in tools[1:]))
    ok = True
    for m in FIXED:
        ll0, t0 = results["jaxhlm"][m]
        cells = []
        for t in tools[1:]:
            ll, tt = results[t][m]
            cells.append(f"{tt / t0:>9.1f}x {ll0 - ll:>+13.2e}")
            ok &= ll0 >= ll - 1e-6
        print(f"{m:<6}" + "".join(f"{c:>24}" for c in cells))
    print(f"\njaxhlm log likelihood >= every peer's (to 1e-6) on every model: {ok}")

    warm_cache = tempfile.mkdtemp(prefix="jaxhlm-cache-")
    cold = fresh_process(None)
    fresh_process(warm_cache)  # fills the cache
    warm = fresh_process(warm_cache)
    shutil.rmtree(warm_cache, ignore_errors=True)
    print("\nFirst fit in a fresh process (M2; seconds):")
    print(f"  import jaxhlm {warm[0]:.2f}; first fit with the compilation cache warm {warm[1]:.2f}, "
          f"with no cache {cold[1]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "fresh_warm": warm, "fresh_cold": cold}, indent=2))


if __name__ == "__main__":
    main()

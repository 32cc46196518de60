"""Three-level models: jaxhlm and lme4 side by side in one run on seeded synthetic data.

Students in classes in schools: N rows, N/1000 schools, N/20 classes (classes numbered within schools, sizes
random), a random intercept and ses slope by school (unstructured) and a random intercept by class, 4 fixed
effects; fitted by ML. lme4 (``lmer(y ~ x1 + x2 + x3 + (1 + x1 | school) + (1 | school:class))``) reads the
same numbers from binary files and times ``lmer`` alone. jaxhlm times its first fit in this process ("first",
with the program and compilation caches on disk as after any earlier use) and a repeat with its design cache
cleared ("warm": statistics rebuilt from the rows, no compilation); the ratios use the warm fit, and the log
likelihoods are compared.

Run with ``make bench`` or ``python experiments/bench_nested.py [--sizes 1e4 1e5 1e6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxhlm  # noqa: E402

FORMULA = "y ~ x1 + x2 + x3 + (1 + x1 | school) + (1 | school:class)"

# lme4 on the columns written by run_lme4: doubles as numbers, integers as factors; the formula is an argument.
R_FIT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]; n <- as.integer(args[2]); formula <- as.formula(args[3])
cols <- read.csv(file.path(dir, "columns.csv"), stringsAsFactors = FALSE)
d <- as.data.frame(setNames(lapply(seq_len(nrow(cols)), function(k) {
  v <- readBin(file.path(dir, paste0(cols$name[k], ".bin")), cols$type[k], n)
  if (cols$type[k] == "integer") factor(v) else v
}), cols$name))
t0 <- proc.time()[["elapsed"]]
m <- lmer(formula, d, REML = FALSE)
el <- proc.time()[["elapsed"]] - t0
cat(sprintf('{"seconds": %.3f, "llf": %.9f, "version": "%s"}\n', el, as.numeric(logLik(m)), packageVersion("lme4")))
"""


def generate(n: int, seed: int = 0) -> pd.DataFrame:
    """N rows in N/20 classes (numbered within their school) in N/1000 schools, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    n_schools, n_classes = max(n // 1000, 2), max(n // 20, 4)
    cls = rng.integers(0, n_classes, n)
    school = cls % n_schools
    x = rng.normal(size=(n, 3))
    u = rng.multivariate_normal([0, 0], [[1.0, 0.2], [0.2, 0.25]], n_schools)
    y = (1 + x @ [0.5, -0.3, 0.2] + u[school, 0] + u[school, 1] * x[:, 0] + rng.normal(0, 0.6, n_classes)[cls]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "school": school,
                         "class": cls // n_schools})


def run_lme4(frame: pd.DataFrame, formula: str, timeout: float) -> dict | None:
    """lme4's ML fit of ``formula`` (lme4's syntax) to ``frame``, timed in R; integer columns become factors."""
    with tempfile.TemporaryDirectory() as tmp:
        types = []
        for name in frame.columns:
            integer = pd.api.types.is_integer_dtype(frame[name])
            frame[name].to_numpy().astype(np.int32 if integer else np.float64).tofile(os.path.join(tmp, f"{name}.bin"))
            types.append((name, "integer" if integer else "double"))
        pd.DataFrame(types, columns=["name", "type"]).to_csv(os.path.join(tmp, "columns.csv"), index=False)
        Path(tmp, "fit.R").write_text(R_FIT)
        try:
            out = subprocess.run(["Rscript", str(Path(tmp, "fit.R")), tmp, str(len(frame)), formula],
                                 capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"[lme4 failed: {getattr(exc, 'stderr', exc)}]")
            return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_jaxhlm(frame: pd.DataFrame, formula: str) -> dict:
    t0 = time.perf_counter()
    r = jaxhlm.fit(formula, frame)
    first = time.perf_counter() - t0
    jaxhlm.pipeline.clear_cache()
    t0 = time.perf_counter()
    jaxhlm.fit(formula, frame)
    return {"first": first, "seconds": time.perf_counter() - t0, "llf": r.llf, "converged": bool(r.converged),
            "groups": r.group_info()["groups"].tolist()}


#: The columns :func:`side_by_side` prints.
COLUMNS = f"| {'jaxhlm first':>12} {'warm':>8} | {'lme4':>8} | {'lme4/warm':>9} {'LL jaxhlm - lme4':>17}"


def parser(sizes: list[str], **kw: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=sizes, **kw)
    ap.add_argument("--skip-lme4", action="store_true")
    ap.add_argument("--lme4-limit", type=float, default=1800.0)
    return ap


def side_by_side(frame: pd.DataFrame, formula: str, args: argparse.Namespace) -> tuple[dict, str]:
    """jaxhlm's fits of ``formula`` and lme4's, and the :data:`COLUMNS` of their comparison."""
    ours = run_jaxhlm(frame, formula)
    peer = None if args.skip_lme4 else run_lme4(frame, formula, args.lme4_limit)
    lme4_s = "—" if peer is None else (f">{peer['timeout']:.0f}" if "timeout" in peer else f"{peer['seconds']:.2f}")
    ratio = gap = "—"
    if peer is not None and "seconds" in peer:
        ratio, gap = f"{peer['seconds'] / ours['seconds']:.1f}x", f"{ours['llf'] - peer['llf']:+.2e}"
    return ours, (f"| {ours['first']:>12.2f} {ours['seconds']:>8.2f} | {lme4_s:>8} | {ratio:>9} {gap:>17}"
                  + ("" if ours["converged"] else "  (jaxhlm: not converged)"))


def main() -> None:
    args = parser(["1e4", "1e5", "1e6"]).parse_args()
    print(f"Three-level ML fits, {FORMULA}; {os.cpu_count()} CPUs")
    print(f"{'N':>10} {'schools':>8} {'classes':>8} {COLUMNS}")
    for size in args.sizes:
        frame = generate(int(float(size)))
        ours, columns = side_by_side(frame, FORMULA, args)
        schools, classes = ours["groups"]
        print(f"{len(frame):>10,} {schools:>8,} {classes:>8,} {columns}")


if __name__ == "__main__":
    main()

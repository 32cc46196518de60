"""Parametric bootstrap and batched refits: jaxhlm against lme4's simulate + refit loop, in one run.

The test is the reference log's ses random slope (sesrandom vs noslope, HSB). Prints jaxhlm's compile time,
its cost per replicate at several B (it should not grow with B), lme4's cost per replicate, and the ratios.
Run with ``make bench`` or ``python experiments/bench_bootstrap.py [--B 100 1000] [--lme4-B 200]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxhlm  # noqa: E402

BASE = "mathach c.ses##c.sector c.ses##i.sized i.female##i.sector i.female##i.sized"
R_REFIT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
hsb <- read.csv(args[1]); k <- as.integer(args[2]); hsb$sized <- factor(hsb$sized)
small <- lmer(mathach ~ ses * sector + ses * sized + female * sector + female * sized + (1 | id), hsb, REML = FALSE)
ys <- simulate(small, nsim = k, seed = 1)
t0 <- proc.time()[["elapsed"]]
ll <- vapply(seq_len(k), function(j) as.numeric(logLik(refit(small, ys[[j]]))), numeric(1))
cat(proc.time()[["elapsed"]] - t0, "\n")
"""


def lme4_bootstrap(B: int) -> float | None:
    """Seconds per replicate of lme4's simulate + two refits (tests/fixtures/lme4_bootstrap.R)."""
    try:
        out = subprocess.run(["Rscript", str(ROOT / "tests/fixtures/lme4_bootstrap.R"),
                              str(ROOT / "jaxhlm/datasets/hsb.csv"), str(B), "1"],
                             capture_output=True, text=True, check=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"[lme4 skipped: {exc}]")
        return None
    doc = json.loads(out.stdout)
    print(f"lme4 {doc['lme4']}: B = {B}, p = {doc['pvalue']:.4f}, {doc['seconds_per_replicate'] * 1e3:.1f} ms/replicate")
    return doc["seconds_per_replicate"]


def lme4_refits(k: int) -> float | None:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_REFIT)
    try:
        out = subprocess.run(["Rscript", fh.name, str(ROOT / "jaxhlm/datasets/hsb.csv"), str(k)],
                             capture_output=True, text=True, check=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"[lme4 refit skipped: {exc}]")
        return None
    return float(out.stdout.split()[-1]) / k


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--lme4-B", type=int, default=200)
    ap.add_argument("--columns", type=int, default=1000)
    args = ap.parse_args()
    hsb = jaxhlm.datasets.hsb()
    small, big = jaxhlm.mixed(BASE + " || id:", hsb), jaxhlm.mixed(BASE + " || id: ses, cov(unstr)", hsb)

    t0 = time.perf_counter()
    jaxhlm.bootstrap_lrtest(small, big, B=64, seed=99, progress=False)
    print(f"jaxhlm: first call (compile and 64 replicates) {time.perf_counter() - t0:.1f} s")
    per_rep = {}
    for B in args.B:
        t0 = time.perf_counter()
        res = jaxhlm.bootstrap_lrtest(small, big, B=B, seed=1, progress=False)
        el = time.perf_counter() - t0
        per_rep[B] = el / B
        print(f"jaxhlm bootstrap B = {B:>6}: {el:7.2f} s, {el / B * 1e3:6.2f} ms/replicate, p = {res.pvalue:.4f}, "
              f"failed {res.failed}")
    lme4 = lme4_bootstrap(args.lme4_B)
    if lme4:
        for B, t in per_rep.items():
            print(f"ratio lme4 / jaxhlm at B = {B}: {lme4 / t:.1f}x")

    Y = np.asarray(jaxhlm.simulate(small, args.columns, seed=2)).T
    jaxhlm.refit_batch(small, Y[:, :64], progress=False)  # compile
    t0 = time.perf_counter()
    jaxhlm.refit_batch(small, Y, progress=False)
    ours = (time.perf_counter() - t0) / args.columns
    print(f"jaxhlm refit_batch, {args.columns} columns: {ours * 1e3:.2f} ms/column")
    theirs = lme4_refits(min(args.columns, 200))
    if theirs:
        print(f"lme4 refit loop: {theirs * 1e3:.2f} ms/column; ratio {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()

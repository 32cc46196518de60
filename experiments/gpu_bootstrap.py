"""GPU check of the batched bootstrap: the log's ses-slope test (sesrandom vs noslope) at B = 10⁴ and 10⁵.

Reports the compile time (first call) separately from the timed runs, the bootstrap p-values (to compare with
the CPU's and lme4's, tests/fixtures/lme4_bootstrap.json), failed refits and the smallest LR*.
Usage: ``python experiments/gpu_bootstrap.py [--B 10000 100000] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import jaxhlm  # noqa: E402

BASE = "mathach c.ses##c.sector c.ses##i.sized i.female##i.sector i.female##i.sized"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out")
    args = ap.parse_args()
    hsb = jaxhlm.datasets.hsb()
    small, big = jaxhlm.mixed(BASE + " || id:", hsb), jaxhlm.mixed(BASE + " || id: ses, cov(unstr)", hsb)
    out = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "runs": []}
    t0 = time.perf_counter()
    res = jaxhlm.bootstrap_lrtest(small, big, B=1000, seed=1, progress=False)
    out["first_call_B1000_s"] = time.perf_counter() - t0
    out["B1000_pvalue"] = res.pvalue
    print(json.dumps(out), flush=True)
    for B in args.B:
        t0 = time.perf_counter()
        res = jaxhlm.bootstrap_lrtest(small, big, B=B, seed=1, progress=False)
        el = time.perf_counter() - t0
        run = {"B": B, "seconds": el, "ms_per_replicate": el / B * 1e3, "pvalue": res.pvalue, "failed": res.failed,
               "min_lr": float(np.nanmin(res.replicates))}
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

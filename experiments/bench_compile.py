"""XLA:CPU's code generators side by side: compile latency and run time of jaxhlm's programs with the loop emitters
that jaxhlm selects (``--xla_cpu_use_fusion_emitters=false``, see :mod:`jaxhlm._config`) and with XLA's default
fusion emitters (``JAXHLM_XLA_DEFAULTS=0``).

Each case runs in fresh processes with both disk caches off (``JAXHLM_NO_CACHE=1``), so the first call traces and
compiles; the two settings alternate, ``--rounds`` times each, and the medians are compared. "first" is the first
call (tracing, compiling, running), "warm" the median of later calls in the same process. The log likelihoods
(or LR statistics) of both settings are printed so that a change of numbers would show. Also run at XLA's backend
optimisation level 0, the test suite's setting (``make test``).

Run: ``python experiments/bench_compile.py [--rounds N]`` (in ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Each case: a snippet that defines ``run()`` (one call of the work timed) returning a number to compare.
CASES = {
    "HSB M1 fit": """
        df = jaxhlm.datasets.hsb()
        def run():
            return jaxhlm.mixed("mathach c.ses##c.sector c.ses##i.sized i.female##i.sector i.female##i.sized"
                                " || id: ses female, cov(unstr)", df).llf
    """,
    "AR(1) fit": """
        rng = np.random.default_rng(0)
        n, t = 80, 10
        df = pd.DataFrame({"g": np.repeat(np.arange(n), t), "time": np.tile(np.arange(t), n),
                           "x": rng.normal(size=n * t)})
        df["y"] = df.x + rng.normal(size=n)[df.g] + rng.normal(size=n * t)
        def run():
            return jaxhlm.mixed("y x || g:, residuals(ar 1, t(time))", df).llf
    """,
    "bootstrap B=1,000": """
        df = jaxhlm.datasets.hsb()
        m0 = jaxhlm.mixed("mathach ses || id:", df)
        m1 = jaxhlm.mixed("mathach ses || id: ses, cov(unstr)", df)
        def run():
            return jaxhlm.bootstrap_lrtest(m0, m1, B=1000, seed=1, progress=False).statistic
    """,
}

CHILD = """
import json, sys, time
import numpy as np, pandas as pd
import jaxhlm
{setup}
t = time.perf_counter(); value = run(); first = time.perf_counter() - t
warm = []
for _ in range(5):
    t = time.perf_counter(); run(); warm.append(time.perf_counter() - t)
print(json.dumps({{"first": first, "warm": sorted(warm)[2], "value": float(value)}}))
"""


def measure(setup: str, loop: bool, opt0: bool) -> dict:
    env = dict(os.environ, JAXHLM_NO_CACHE="1", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    if opt0:
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    if not loop:
        env["JAXHLM_XLA_DEFAULTS"] = "0"
    code = CHILD.format(setup=textwrap.dedent(setup))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| case | XLA backend level | first s, fusion | first s, loop | fusion / loop | warm ms, fusion "
          "| warm ms, loop | fusion / loop | value, fusion | value, loop |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, setup in CASES.items():
        for opt0 in (False, True):
            runs: dict[bool, list[dict]] = {True: [], False: []}
            for _ in range(args.rounds):
                for loop in (False, True):
                    runs[loop].append(measure(setup, loop, opt0))
            med = {loop: {k: statistics.median(r[k] for r in rs) for k in ("first", "warm")}
                   for loop, rs in runs.items()}
            fusion, loop = med[False], med[True]
            print(f"| {name} | {'0' if opt0 else 'default'} | {fusion['first']:.2f} | {loop['first']:.2f} | "
                  f"{fusion['first'] / loop['first']:.2f}× | {1e3 * fusion['warm']:.1f} | {1e3 * loop['warm']:.1f} | "
                  f"{fusion['warm'] / loop['warm']:.2f}× | {runs[False][0]['value']:.10g} | "
                  f"{runs[True][0]['value']:.10g} |", flush=True)


if __name__ == "__main__":
    main()

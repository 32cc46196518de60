"""Scale: jaxhlm, lme4 and statsmodels on synthetic data from 10⁴ to 10⁷ rows, side by side in one run.

Random intercept and slope (on x1), 10 fixed effects (constant and x1…x9), N/100 groups of random sizes,
plus a skewed case (one group of 10⁵ rows beside 5×10⁴ groups of 2). Every fit runs in its own process, so
each reports its own peak resident set: the peak is reset (``/proc/self/clear_refs``) once the data is in
memory and read after the fit, and printed beside the data's own size. jaxhlm runs twice: "cold" is the first
process (it compiles the model's shape unless an earlier run cached it), "jaxhlm" the first fit of a second
fresh process (program and compilation caches on disk, as after any earlier use; the ratios use this) and
"repeat" a second fit in that process with its design cache cleared ("warm" ratio). lme4 reads the same numbers from a binary file; statsmodels runs only where the previous size
suggests it finishes within ``--statsmodels-limit`` seconds.

Run with ``make bench`` or ``python experiments/bench_scale.py [--sizes 1e4 1e5 1e6 1e7] [--no-skewed]``.
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
FIXED = [f"x{i}" for i in range(1, 10)]
SKEWED = "skewed"

R_FIT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]; n <- as.integer(args[2]); k <- 9L
x <- matrix(readBin(file.path(dir, "x.bin"), "double", n * k), ncol = k)
colnames(x) <- paste0("x", 1:k)
d <- data.frame(x, y = readBin(file.path(dir, "y.bin"), "double", n),
                g = factor(readBin(file.path(dir, "g.bin"), "integer", n)))
rm(x); invisible(gc())
peak <- function() as.numeric(sub("kB", "", sub("VmHWM:", "", grep("VmHWM", readLines("/proc/self/status"), value = TRUE)))) * 1024
data_bytes <- as.numeric(object.size(d))
cat("5", file = "/proc/self/clear_refs")
t0 <- proc.time()[["elapsed"]]
m <- lmer(y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + (1 + x1 | g), d, REML = FALSE)
el <- proc.time()[["elapsed"]] - t0
cat(sprintf('{"seconds": %.3f, "llf": %.9f, "peak": %.0f, "data": %.0f, "version": "%s"}\n', el,
            as.numeric(logLik(m)), peak(), data_bytes, packageVersion("lme4")))
"""


def generate(case: str, seed: int = 0) -> pd.DataFrame:
    """The synthetic data of one case (``"1e6"`` or :data:`SKEWED`), reproducible from the seed."""
    rng = np.random.default_rng(seed)
    if case == SKEWED:
        g = np.concatenate([np.zeros(100_000, np.int64), 1 + np.repeat(np.arange(50_000), 2)])
    else:
        n = int(float(case))
        g = rng.integers(0, n // 100, n)
    n, m = len(g), int(g.max()) + 1
    frame = pd.DataFrame(rng.normal(size=(n, len(FIXED))), columns=FIXED, copy=False)
    b = rng.normal(size=(m, 2)) * [1.0, 0.5]
    x1 = frame["x1"].to_numpy()
    frame["y"] = 1.0 + frame.to_numpy() @ np.linspace(0.1, 0.9, len(FIXED)) + b[g, 0] + b[g, 1] * x1 \
        + 2.0 * rng.normal(size=n)
    frame["g"] = g
    return frame


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _peak() -> int:
    return _status("VmHWM")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(tool: str, case: str) -> dict:
    """One fit in this process (run by the parent as a subprocess)."""
    frame = generate(case)
    data_bytes = int(frame.memory_usage(deep=True).sum())
    formula = "y ~ " + " + ".join(FIXED)
    if tool == "jaxhlm":
        sys.path.insert(0, str(ROOT))
        import jaxhlm
        before = _status("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        r = jaxhlm.fit(formula + " + (1 + x1 | g)", frame)
        first = time.perf_counter() - t0
        peak = _peak()
        jaxhlm.pipeline.clear_cache()
        t0 = time.perf_counter()
        jaxhlm.fit(formula + " + (1 + x1 | g)", frame)
        return {"seconds": first, "repeat": time.perf_counter() - t0, "llf": r.llf, "peak": peak,
                "before": before, "data": data_bytes, "converged": bool(r.converged)}
    import statsmodels.formula.api as smf
    before = _status("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    r = smf.mixedlm(formula, frame, groups=frame["g"], re_formula="~x1").fit(reml=False)
    return {"seconds": time.perf_counter() - t0, "llf": float(r.llf), "peak": _peak(), "before": before,
            "data": data_bytes, "converged": bool(r.converged)}


def run_child(tool: str, case: str, timeout: float) -> dict | None:
    try:
        out = subprocess.run([sys.executable, __file__, "--child", tool, case], capture_output=True, text=True,
                             timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    except subprocess.CalledProcessError as exc:
        print(f"[{tool} {case} failed: {exc.stderr.strip().splitlines()[-1:]}]")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_lme4(case: str, timeout: float) -> dict | None:
    frame = generate(case)
    with tempfile.TemporaryDirectory() as tmp:
        np.ascontiguousarray(frame[FIXED].to_numpy().T).tofile(os.path.join(tmp, "x.bin"))  # column-major for R
        frame["y"].to_numpy().tofile(os.path.join(tmp, "y.bin"))
        frame["g"].to_numpy().astype(np.int32).tofile(os.path.join(tmp, "g.bin"))
        n = len(frame)
        del frame
        script = os.path.join(tmp, "fit.R")
        Path(script).write_text(R_FIT)
        try:
            out = subprocess.run(["Rscript", script, tmp, str(n)], capture_output=True, text=True,
                                 timeout=timeout, check=True)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"[lme4 {case} failed: {getattr(exc, 'stderr', exc)}]")
            return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(res: dict | None, key: str = "seconds") -> str:
    if res is None:
        return "-"
    if "timeout" in res:
        return f">{res['timeout']:.0f}"
    return f"{res[key]:.2f}"


def _gib(res: dict | None) -> str:
    return "-" if res is None or "timeout" in res else f"{res['peak'] / 2**30:.2f}"


def deviance_scaling(sizes: list[int], q: int = 2, p: int = 10, repeats: int = 20) -> None:
    """Time per evaluation of the deviance and its gradient against the number of groups (it should be linear)."""
    sys.path.insert(0, str(ROOT))
    import jaxhlm  # first: it sets XLA's log level before JAX loads
    from jaxhlm.stats import HostStats, device_stats

    import jax
    import jax.numpy as jnp

    blocks = jaxhlm.parse_formula("y ~ x + (1 + x | g)").blocks
    T = jnp.asarray(jaxhlm.covariance.templates(blocks))
    value_and_grad = jax.jit(jax.value_and_grad(lambda th, s: jaxhlm.profiled_deviance(th, s, T)))
    rng = np.random.default_rng(1)
    print(f"deviance + gradient, random intercept and slope, {p} fixed effects:")
    for m in sizes:
        k = 4  # rows per group: the statistics' shapes, not the rows, set the cost
        Zg, Xg, yg = rng.normal(size=(m, k, q)), rng.normal(size=(m, k, p)), rng.normal(size=(m, k))
        X = Xg.reshape(-1, p)
        host = HostStats(np.einsum("gni,gnj->gij", Zg, Zg), np.einsum("gni,gnj->gij", Zg, Xg),
                         np.einsum("gni,gn->gi", Zg, yg), np.linalg.qr(X, mode="r"), X.T @ yg.ravel(),
                         float(yg.ravel() @ yg.ravel()), np.full(m, k))
        stats = device_stats(host, m, p)
        theta = jnp.asarray([1.0, 0.1, 0.5])
        jax.block_until_ready(value_and_grad(theta, stats))
        t0 = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(value_and_grad(theta, stats))
        el = (time.perf_counter() - t0) / repeats
        print(f"  {m:>9,} groups: {el * 1e3:8.2f} ms per evaluation, {el / m * 1e9:6.1f} ns per group", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=["1e4", "1e5", "1e6", "1e7"])
    ap.add_argument("--no-skewed", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], help="peers to leave out: lme4, statsmodels")
    ap.add_argument("--lme4-limit", type=float, default=1800.0)
    ap.add_argument("--statsmodels-limit", type=float, default=600.0)
    ap.add_argument("--groups", type=int, nargs="*", default=[10**3, 10**4, 10**5, 10**6],
                    help="group counts for the deviance timing (none: skip it)")
    ap.add_argument("--child", nargs=2, metavar=("TOOL", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    cases = list(args.sizes) + ([] if args.no_skewed else [SKEWED])
    print(f"{'case':>8} {'rows':>10} {'groups':>7} | {'cold s':>7} {'jaxhlm s':>8} {'repeat':>7} {'GiB':>5} "
          f"{'data GiB':>8} | "
          f"{'lme4 s':>7} {'GiB':>5} {'ratio':>6} {'warm':>6} | {'sm s':>7} {'GiB':>5} {'ratio':>6} | "
          "LL jaxhlm - lme4, - sm")
    sm_rate = 0.0  # statsmodels seconds per group at the last size it ran
    results = {}
    for case in cases:
        frame = generate(case)
        n, m = len(frame), int(frame["g"].nunique())
        del frame
        cold = run_child("jaxhlm", case, 3600)  # compiles this shape unless an earlier run cached it
        jx = run_child("jaxhlm", case, 3600)
        lm = None if "lme4" in args.skip else run_lme4(case, args.lme4_limit)
        sm = None
        if "statsmodels" not in args.skip and sm_rate * m <= args.statsmodels_limit:
            sm = run_child("statsmodels", case, args.statsmodels_limit)
            sm_rate = float("inf") if sm is None or "timeout" in sm else sm["seconds"] / m
        results[case] = {"rows": n, "groups": m, "jaxhlm_cold": cold, "jaxhlm": jx, "lme4": lm, "statsmodels": sm}

        def ratio(peer: dict | None, key: str = "seconds") -> str:
            if jx is None or peer is None or "timeout" in jx:
                return "-"
            if "timeout" in peer:
                return f">{peer['timeout'] / jx[key]:.0f}x"
            return f"{peer['seconds'] / jx[key]:.1f}x"

        def dll(peer: dict | None) -> str:
            ok = jx is not None and peer is not None and "llf" in jx and "llf" in peer
            return f"{jx['llf'] - peer['llf']:+.4f}" if ok else "-"

        data = "-" if jx is None or "data" not in jx else f"{jx['data'] / 2**30:.2f}"
        print(f"{case:>8} {n:>10,} {m:>7,} | {_fmt(cold):>7} {_fmt(jx):>8} {_fmt(jx, 'repeat'):>7} {_gib(jx):>5} "
              f"{data:>8} | "
              f"{_fmt(lm):>7} {_gib(lm):>5} {ratio(lm):>6} {ratio(lm, 'repeat'):>6} | {_fmt(sm):>7} {_gib(sm):>5} "
              f"{ratio(sm):>6} | "
              f"{dll(lm)}, {dll(sm)}", flush=True)
    print(json.dumps(results))
    if args.groups:
        deviance_scaling(args.groups)


if __name__ == "__main__":
    main()

"""GPU check: the six models of the reference log on the accelerator, against the exact optimum, the
parametric bootstrap of the log's ses-slope test (sesrandom vs noslope) at B = 10⁴ and 10⁵, fits of
experiments/bench_scale.py's synthetic data at N = 10⁷ and 10⁸ rows, a three-level fit of
experiments/bench_nested.py's data (students in classes in schools) at N = 10⁶ and a crossed fit of
experiments/bench_crossed.py's (2,000 subjects x 500 items), with the same script on the same machine's CPU as
the timing baseline (bootstrap at B = 1,000 and N = 10⁷ only there).

The bootstrap part reports the compile time (first call) apart from the timed runs, the p-values (to compare
with lme4's at B = 1,000, tests/fixtures/lme4_bootstrap.json: 0.0270), failed refits and the smallest LR*.
Usage (on a machine with CUDA JAX): ``python experiments/gpu_check.py [--B 10000 100000] [--scale 1e7 1e8]
[--nested 1e6] [--crossed 2000x500] [--out results.json]``. At N = 10⁸ the data alone are 8.8 GB in memory; the statistics are summed on the host.
The script re-runs itself with ``JAX_PLATFORMS=cpu`` for the baseline (bootstrap at B = 1,000 only), so
every timing comes from one call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MODELS = {
    "M1": " + (ses + female | id)", "M2 (sesrandom)": " + (ses | id)", "M3 (noslope)": " + (1 | id)",
    "M4 (femalerandom)": " + (female | id)",
}
BASE = "mathach ~ ses*sector + ses*C(sized) + female*sector + female*C(sized)"
OTHER = {"M5": "mathach ~ ses*sector + female*C(sized) + (1 | id)",
         "M6 (final)": "mathach ~ ses*sector + female*sized_1 + (1 | id)"}


def bootstrap_here(Bs: list[int]) -> dict:
    import jax

    import jaxhlm

    hsb = jaxhlm.datasets.hsb()
    stata = "mathach c.ses##c.sector c.ses##i.sized i.female##i.sector i.female##i.sized || id:"
    small, big = jaxhlm.mixed(stata, hsb), jaxhlm.mixed(stata + " ses, cov(unstr)", hsb)
    t = time.perf_counter()
    jax.block_until_ready(jaxhlm.bootstrap_lrtest(small, big, B=1000, seed=99, progress=False).replicates)
    out = {"first_call_B1000_s": time.perf_counter() - t, "runs": []}
    for B in Bs:
        t = time.perf_counter()
        res = jaxhlm.bootstrap_lrtest(small, big, B=B, seed=1, progress=False)
        seconds = time.perf_counter() - t
        out["runs"].append({"B": B, "seconds": seconds, "ms_per_replicate": seconds / B * 1e3, "pvalue": res.pvalue,
                            "failed": res.failed, "min_lr": float(np.nanmin(res.replicates))})
    return out


def scale_here(sizes: list[str]) -> dict:
    """Fit the synthetic scale data (random intercept and slope, 10 fixed effects, N/100 groups) at each size."""
    import resource

    import jaxhlm
    from bench_scale import FIXED, generate

    formula = "y ~ " + " + ".join(FIXED) + " + (1 + x1 | g)"
    out = {}
    for case in sizes:
        frame = generate(case)
        t = time.perf_counter()
        r = jaxhlm.fit(formula, frame)
        out[case] = {"seconds": time.perf_counter() - t, "llf": r.llf, "converged": r.converged,
                     "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        print(json.dumps({"scale": {case: out[case]}}), flush=True)
        del frame
        jaxhlm.pipeline.clear_cache()
    return out


def two_factors_here(nested: list[str], crossed: list[str]) -> dict:
    """Three-level fits (bench_nested's model: school slope and intercept, class intercept; N rows) and crossed
    fits (bench_crossed's: subject slope and intercept, item intercept; subjects x items): the first fit, and a
    repeat with the design rebuilt (no compilation)."""
    import bench_crossed
    import bench_nested

    import jaxhlm

    cases = [(f"three-level N = {float(n):.0e}", bench_nested.FORMULA, lambda n=n: bench_nested.generate(int(float(n))))
             for n in nested]
    cases += [(f"crossed {size}", bench_crossed.FORMULA,
               lambda size=size: bench_crossed.generate(*map(int, size.split("x")))) for size in crossed]
    out = {}
    for case, formula, generate in cases:
        frame = generate()
        t = time.perf_counter()
        r = jaxhlm.fit(formula, frame)
        first = time.perf_counter() - t
        jaxhlm.pipeline.clear_cache()
        t = time.perf_counter()
        r = jaxhlm.fit(formula, frame)
        out[case] = {"first_s": first, "warm_s": time.perf_counter() - t, "llf": r.llf, "converged": r.converged}
        jaxhlm.pipeline.clear_cache()
    return out


def run_here(repeats: int) -> dict:
    import jax

    import jaxhlm
    import stata_log

    df = jaxhlm.datasets.hsb()
    df["sized_1"] = (df["sized"] == 1).astype(int)
    formulas = {k: BASE + v for k, v in MODELS.items()} | OTHER
    out = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "models": {}}
    for name, formula in formulas.items():
        t = time.perf_counter()
        r = jaxhlm.fit(formula, df)
        first = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = jaxhlm.fit(formula, df)
            times.append(time.perf_counter() - t)
        exact = stata_log.exact_optimum(name)["llf"]
        out["models"][name] = {"llf": r.llf, "exact_llf": exact, "gap": r.llf - exact, "converged": r.converged,
                               "singular": r.singular, "first_s": first, "warm_ms": statistics.median(times) * 1e3}
    # The array-level deviance, vmapped over a batch of θ, as an ML pipeline would call it.
    import jax.numpy as jnp

    from jaxhlm.pipeline import prepare

    design, stats = prepare(jaxhlm.parse_formula(BASE + MODELS["M2 (sesrandom)"]), df)
    T = jnp.asarray(jaxhlm.covariance.templates(design.blocks))
    thetas = jnp.abs(jax.random.normal(jax.random.PRNGKey(0), (4096, 3))) * 0.3
    batched = jax.jit(jax.vmap(lambda th: jaxhlm.profiled_deviance(th, stats, T)))
    batched(thetas).block_until_ready()
    t = time.perf_counter()
    for _ in range(10):
        batched(thetas).block_until_ready()
    out["vmap_deviance_4096_ms"] = (time.perf_counter() - t) / 10 * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--B", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--scale", nargs="*", default=["1e7", "1e8"], help="synthetic data sizes to fit")
    ap.add_argument("--nested", nargs="*", default=["1e6"], help="three-level data sizes to fit")
    ap.add_argument("--crossed", nargs="*", default=["2000x500"], help="crossed designs to fit: subjects x items")
    ap.add_argument("--out")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "experiments"))
    if args.inner:
        print(json.dumps(run_here(args.repeats) | {"bootstrap": bootstrap_here(args.B), "scale": scale_here(args.scale),
                                                   "levels": two_factors_here(args.nested, args.crossed)}))
        return
    accel = run_here(args.repeats) | {"bootstrap": bootstrap_here(args.B)}
    print(json.dumps(accel["bootstrap"]), flush=True)  # kept if the CPU baseline below runs out of time
    accel["scale"] = scale_here(args.scale)
    accel["levels"] = two_factors_here(args.nested, args.crossed)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cpu = json.loads(subprocess.run([sys.executable, __file__, "--inner", "--repeats", str(args.repeats), "--B", "1000",
                                     "--scale", *args.scale[:1], "--nested", *args.nested, "--crossed", *args.crossed],
                                    env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    print(f"accelerator: {accel['backend']} {accel['devices']}; baseline: {cpu['backend']} on the same machine")
    print(f"{'model':<20}{'LL - exact':>12}{'conv':>6}{'first s':>9}{'warm ms':>9}{'cpu ms':>9}{'cpu/acc':>9}")
    ok = True
    for name, a in accel["models"].items():
        c = cpu["models"][name]
        ok &= abs(a["gap"]) < 1e-6 and a["converged"] and abs(c["gap"]) < 1e-6
        print(f"{name:<20}{a['gap']:>12.2e}{str(a['converged']):>6}{a['first_s']:>9.2f}{a['warm_ms']:>9.1f}"
              f"{c['warm_ms']:>9.1f}{c['warm_ms'] / a['warm_ms']:>9.2f}")
    print(f"vmapped deviance over 4096 θ: accelerator {accel['vmap_deviance_4096_ms']:.2f} ms, "
          f"cpu {cpu['vmap_deviance_4096_ms']:.2f} ms")
    print(f"all log likelihoods within 1e-6 of the exact optimum on both: {ok}")
    for where, res in (("accelerator", accel), ("cpu", cpu)):
        boot = res["bootstrap"]
        print(f"bootstrap on the {where}: first call (compile + B = 1,000) {boot['first_call_B1000_s']:.1f} s")
        for run in boot["runs"]:
            print(f"  B = {run['B']:>7,}: {run['seconds']:7.2f} s, {run['ms_per_replicate']:.3f} ms/replicate, "
                  f"p = {run['pvalue']:.4f}, failed {run['failed']}, min LR* {run['min_lr']:.2e}")
    for where, res in (("accelerator", accel), ("cpu", cpu)):
        for case, run in res["scale"].items():
            print(f"scale on the {where}: N = {float(case):.0e}: {run['seconds']:.1f} s, LL {run['llf']:.4f}, "
                  f"converged {run['converged']}, max RSS {run['max_rss_gib']:.1f} GiB")
    for case, a in accel["levels"].items():
        c = cpu["levels"][case]
        print(f"{case}: accelerator first {a['first_s']:.1f} s, warm {a['warm_s']:.2f} s; "
              f"cpu warm {c['warm_s']:.2f} s (cpu/acc {c['warm_s'] / a['warm_s']:.2f}); LL {a['llf']:.4f} vs "
              f"{c['llf']:.4f}, converged {a['converged']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"accelerator": accel, "cpu": cpu}, indent=2))


if __name__ == "__main__":
    main()
